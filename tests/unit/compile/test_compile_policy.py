"""Table tests of the compiler: snapshot in, routes, key Secrets, Policy and statuses out."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tollplane.api.keys import hash_key
from tollplane.api.shards import assemble, shard_bytes
from tollplane.api.tenants import BillingState, SubscriptionState
from tollplane.compile import (
    GateMode,
    IngressController,
    ParentRef,
    RouteKind,
    SecretView,
    ServiceRef,
    Settings,
    compile_all,
    snapshot_from_objects,
    statuses,
)
from tollplane.compile.policy import micros
from tollplane.compile.status import transitions

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CREATED = "2026-02-20T00:00:00Z"
GATEWAY = Settings(gateway=ParentRef.parse("gw/public"))


def api(name: str = "weather", ns: str = "team", **spec: Any) -> dict[str, Any]:
    body = {
        "basePath": f"/{name}",
        "upstream": {"service": {"name": name, "port": 80}},
        "lifecycle": {"stage": "Published"},
    }
    body.update(spec)
    return {
        "apiVersion": "tollplane.io/v1alpha1",
        "kind": "Api",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "generation": 2,
            "creationTimestamp": CREATED,
        },
        "spec": body,
    }


def plan(name: str = "pro", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tollplane.io/v1alpha1",
        "kind": "BillingPlan",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": CREATED,
        },
        "spec": spec,
    }


def tenant(name: str = "acme", plan_name: str = "pro", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "plan": plan_name,
        "keys": [{"id": "default"}],
        "subscriptions": [{"namespace": "team", "name": "weather"}],
    }
    body.update(spec)
    return {
        "apiVersion": "tollplane.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "generation": 3,
            "creationTimestamp": CREATED,
        },
        "spec": body,
    }


def secret(
    name: str,
    value: str | None,
    *,
    managed: bool = False,
    owner: str = "acme",
    key_id: str = "default",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "tollplane-system"}
    if managed:
        meta["labels"] = {"app.kubernetes.io/managed-by": "tollplane-operator"}
        meta["annotations"] = {"tollplane.io/owner": owner, "tollplane.io/key-id": key_id}
    data = {"api-key": base64.b64encode(value.encode()).decode()} if value else {}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}


def compiled(*objects: dict[str, Any], settings: Settings = GATEWAY, generate: bool = True):
    snap = snapshot_from_objects(list(objects), settings=settings, now=NOW)
    desired = compile_all(snap)
    if generate and desired.keys.missing:
        desired = compile_all(snap, {n: f"tp_value_{n}" for _, _, n in desired.keys.missing})
    return snap, desired, {s.key: s.status for s in statuses(snap, desired)}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def kinds(desired: Any) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in desired.objects]


# ---------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("stage", "routed", "in_policy"),
    [
        ("Draft", False, False),
        ("Published", True, True),
        ("Retired", True, True),  # the gate answers 410 rather than the Gateway 404
    ],
)
def test_stage_decides_route_and_policy(stage: str, routed: bool, in_policy: bool) -> None:
    _, desired, status = compiled(api(lifecycle={"stage": stage}), plan(), tenant())
    assert ("HTTPRoute/tollplane-weather" in kinds(desired)) is routed
    assert bool(desired.policy.routes) is in_policy
    assert condition(status["team/weather"], "Ready")["status"] == "True"


def test_deprecated_needs_sunset_and_gets_a_stable_deprecation_date() -> None:
    sunset = "2029-12-31T00:00:00Z"
    _, desired, status = compiled(api(lifecycle={"stage": "Deprecated", "sunset": sunset}))
    route = desired.policy.routes[0]
    assert route.deprecated_since == NOW.replace(microsecond=0)
    assert status["team/weather"]["deprecatedSince"] == "2026-03-01T12:00:00Z"
    assert condition(status["team/weather"], "Ready")["reason"] == "Deprecated"


def test_httproute_points_at_the_gate_with_a_reference_grant() -> None:
    settings = Settings(
        gateway=ParentRef.parse("infra/public/https"),
        gate_service=ServiceRef.parse("tollplane-system/gate:8080"),
    )
    _, desired, status = compiled(api(hostnames=["api.example.com"]), settings=settings)
    route = next(o for o in desired.objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"][0] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "infra",
        "name": "public",
        "sectionName": "https",
    }
    assert route["spec"]["hostnames"] == ["api.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"][0] == {
        "group": "",
        "kind": "Service",
        "name": "gate",
        "namespace": "tollplane-system",
        "port": 8080,
    }
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-weather"
    grant = next(o for o in desired.objects if o["kind"] == "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "tollplane-system"
    assert grant["spec"]["from"][0]["namespace"] == "team"
    assert status["team/weather"]["url"] == "https://api.example.com/weather"


def test_api_gateway_overrides_the_operator_setting() -> None:
    _, desired, _ = compiled(api(gateway={"name": "own"}), settings=Settings())
    route = next(o for o in desired.objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"][0]["namespace"] == "team"
    assert route["spec"]["parentRefs"][0]["name"] == "own"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (Settings(), "NoGateway"),
        (
            Settings(
                route_kind=RouteKind.INGRESS,
                gate_mode=GateMode.FORWARD_AUTH,
                ingress_controller=IngressController.NGINX,
            ),
            "UnsupportedGateMode",
        ),
    ],
)
def test_routing_problems_are_conditions(settings: Settings, reason: str) -> None:
    _, desired, status = compiled(api(), settings=settings)
    ready = condition(status["team/weather"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "HTTPRoute/tollplane-weather" not in kinds(desired)


def test_ingress_uses_a_local_alias_of_the_gate() -> None:
    settings = Settings(route_kind=RouteKind.INGRESS, ingress_class="nginx")
    _, desired, _ = compiled(api(hostnames=["a.example.com"]), settings=settings)
    ingress = next(o for o in desired.objects if o["kind"] == "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"]["name"] == "tollplane-gate"
    alias = next(o for o in desired.objects if o["kind"] == "Service")
    assert alias["spec"]["externalName"] == "tollplane-gate.tollplane-system.svc.cluster.local"


def test_route_kind_none_writes_no_routes_but_serves() -> None:
    _, desired, status = compiled(api(), settings=Settings(route_kind=RouteKind.NONE))
    assert not [k for k in kinds(desired) if k.startswith(("HTTPRoute", "ReferenceGrant"))]
    assert desired.policy.routes
    assert condition(status["team/weather"], "Routed")["reason"] == "RoutedExternally"


def test_older_api_keeps_a_contested_address() -> None:
    older = api("a", basePath="/same")
    newer = api("b", basePath="/same")
    newer["metadata"]["creationTimestamp"] = "2026-02-25T00:00:00Z"
    _, desired, status = compiled(newer, older)
    assert [r.api for r in desired.policy.routes] == ["team/a"]
    assert condition(status["team/b"], "Ready")["reason"] == "PathConflict"


def test_successor_api_resolves_to_its_url_or_a_condition() -> None:
    v1 = api(
        "v1",
        lifecycle={
            "stage": "Deprecated",
            "sunset": "2030-01-01T00:00:00Z",
            "successor": {"api": "v2"},
        },
    )
    v2 = api("v2", hostnames=["x.example.com"])
    _, desired, status = compiled(v1, v2)
    assert desired.policy.routes[0].successor_url == "https://x.example.com/v2"
    _, _, status = compiled(v1)
    assert condition(status["team/v1"], "SuccessorResolved")["reason"] == "SuccessorNotFound"


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("0", 0), ("49.00", 49_000_000), ("0.0004", 400), ("12.345678", 12_345_678), (None, 0)],
)
def test_money_is_integer_micros(amount: str | None, expected: int) -> None:
    assert micros(amount) == expected


@pytest.mark.parametrize(
    ("spec", "requires_payment", "trial_days"),
    [
        ({}, False, 0),
        ({"price": {"monthlyFee": "49.00"}}, True, 0),
        ({"trialDays": 30, "paymentUrl": "https://pay.example.com"}, True, 30),
    ],
)
def test_plan_policy(spec: dict[str, Any], requires_payment: bool, trial_days: int) -> None:
    _, desired, _ = compiled(
        plan(rateLimit={"requests": 5}, quota={"requests": 20, "period": "Day"}, **spec)
    )
    policy = desired.policy.plans["pro"]
    assert policy.requires_payment is requires_payment
    assert policy.trial_days == trial_days
    assert policy.rate is not None
    assert (policy.rate.limit, policy.rate.burst) == (5, 5)
    assert policy.quota is not None
    assert policy.quota.limit == 20


@pytest.mark.parametrize(
    ("access", "state"),
    [
        ({"approval": "Automatic"}, SubscriptionState.ACTIVE),
        ({"approval": "Manual"}, SubscriptionState.PENDING_APPROVAL),
        ({"approval": "Manual", "approvedTenants": ["acme"]}, SubscriptionState.ACTIVE),
    ],
)
def test_entitlement_is_the_intersection(access: dict[str, Any], state: SubscriptionState) -> None:
    _, desired, status = compiled(api(access=access), plan(), tenant())
    assert desired.policy.tenants["acme"].entitlements == {"team/weather": state}
    assert status["acme"]["subscriptions"][0]["state"] == state.value
    pending = status["team/weather"]["pendingApprovals"]
    assert pending == (["acme"] if state is SubscriptionState.PENDING_APPROVAL else [])


def test_missing_api_is_a_condition_and_does_not_block_others() -> None:
    _, desired, status = compiled(
        api(), plan(), tenant(), tenant("ghost", subscriptions=[{"namespace": "x", "name": "y"}])
    )
    assert desired.policy.tenants["ghost"].entitlements == {"x/y": SubscriptionState.API_NOT_FOUND}
    ready = condition(status["ghost"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApiNotFound")
    assert condition(status["acme"], "Ready")["status"] == "True"


def test_missing_plan_leaves_the_tenant_out_of_the_policy_only() -> None:
    _, desired, status = compiled(api(), plan(), tenant(), tenant("lost", plan_name="nope"))
    assert set(desired.policy.tenants) == {"acme"}
    assert {k.tenant for k in desired.policy.keys.values()} == {"acme"}
    ready = condition(status["lost"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PlanNotFound")
    assert "BillingPlan nope does not exist" in ready["message"]


@pytest.mark.parametrize(
    ("plan_spec", "billing", "suspended", "state"),
    [
        ({}, {}, False, BillingState.ACTIVE),
        ({"trialDays": 30, "paymentUrl": "https://p.example"}, {}, False, BillingState.TRIAL),
        ({"trialDays": 3, "paymentUrl": "https://p.example"}, {}, False, BillingState.TRIAL_ENDED),
        (
            {"price": {"monthlyFee": "9"}},
            {"paidThrough": "2026-04-01T00:00:00Z"},
            False,
            BillingState.ACTIVE,
        ),
        (
            {"price": {"monthlyFee": "9"}, "graceDays": 7},
            {"paidThrough": "2026-02-27T00:00:00Z"},
            False,
            BillingState.PAST_DUE,
        ),
        (
            {"price": {"monthlyFee": "9"}},
            {"paidThrough": "2026-01-01T00:00:00Z"},
            False,
            BillingState.PAYMENT_REQUIRED,
        ),
        ({"price": {"monthlyFee": "9"}}, {}, False, BillingState.PAYMENT_REQUIRED),
        ({}, {}, True, BillingState.SUSPENDED),
    ],
)
def test_billing_state(
    plan_spec: dict[str, Any], billing: dict[str, Any], suspended: bool, state: BillingState
) -> None:
    _, desired, status = compiled(plan(**plan_spec), tenant(billing=billing, suspended=suspended))
    assert status["acme"]["state"] == state.value
    trial = plan_spec.get("trialDays")
    expected = datetime(2026, 2, 20, tzinfo=UTC) + timedelta(days=trial) if trial else None
    assert desired.policy.tenants["acme"].trial_ends == expected


def test_policy_revision_is_deterministic_and_shards_round_trip() -> None:
    objects = [api(), plan(), tenant(), secret("tollplane-key-acme-default", "v", managed=True)]
    _, first, _ = compiled(*objects)
    _, second, _ = compiled(*reversed(objects))
    assert first.policy.revision == second.policy.revision
    index = next(o for o in first.objects if o["metadata"]["name"] == "tollplane-policy")
    shards = {
        o["metadata"]["name"]: shard_bytes(o)
        for o in first.objects
        if o["metadata"]["name"].startswith("tollplane-policy-")
    }
    assert assemble(index["data"], shards) == first.policy


# ---------------------------------------------------------------- keys


def test_missing_key_secret_is_generated_owned_by_the_tenant() -> None:
    snap = snapshot_from_objects([plan(), tenant()], settings=GATEWAY, now=NOW)
    desired = compile_all(snap)
    assert desired.keys.missing == [("acme", "default", "tollplane-key-acme-default")]
    assert not desired.policy.keys  # no value yet, no hash
    desired = compile_all(snap, {"tollplane-key-acme-default": "tp_x"})
    made = next(o for o in desired.objects if o["kind"] == "Secret")
    assert made["metadata"]["ownerReferences"][0]["kind"] == "Tenant"
    assert made["metadata"]["labels"]["tollplane.io/tenant"] == "acme"
    assert list(desired.policy.keys) == [hash_key("tp_x")]


def test_existing_secret_is_adopted_and_never_written() -> None:
    _, desired, status = compiled(plan(), tenant(), secret("tollplane-key-acme-default", "old"))
    assert list(desired.policy.keys) == [hash_key("old")]
    assert not [o for o in desired.objects if o["kind"] == "Secret"]
    assert status["acme"]["keys"][0]["adopted"] is True


@pytest.mark.parametrize(
    ("objects", "reason"),
    [
        ([secret("tollplane-key-acme-default", None)], "SecretMissingKey"),
        (
            [
                secret("tollplane-key-acme-default", "same"),
                secret("s2", "same"),
                tenant("b", keys=[{"id": "k", "secretName": "s2"}]),
            ],
            "DuplicateKey",
        ),
        (
            [secret("tollplane-key-acme-default", "v", managed=True, owner="other")],
            "SecretConflict",
        ),
    ],
)
def test_key_problems_are_conditions(objects: list[dict[str, Any]], reason: str) -> None:
    _, _, status = compiled(plan(), *objects, tenant())
    keys_ready = condition(status["acme"], "KeysReady")
    assert (keys_ready["status"], keys_ready["reason"]) == ("False", reason)


def test_rotation_keeps_both_keys_then_orphans_the_old_one() -> None:
    both = tenant(keys=[{"id": "old"}, {"id": "new"}])
    existing = [
        secret("tollplane-key-acme-old", "o", managed=True, key_id="old"),
        secret("tollplane-key-acme-new", "n", managed=True, key_id="new"),
    ]
    _, desired, _ = compiled(plan(), both, *existing)
    assert {k.id for k in desired.policy.keys.values()} == {"old", "new"}
    _, desired, _ = compiled(plan(), tenant(keys=[{"id": "new"}]), *existing)
    assert {k.id for k in desired.policy.keys.values()} == {"new"}
    assert desired.keys.orphans == ["tollplane-key-acme-old"]


def test_unreadable_tenant_keeps_its_secrets() -> None:
    broken = tenant()
    broken["spec"]["plan"] = "NOT A NAME"
    _, desired, status = compiled(
        plan(), broken, secret("tollplane-key-acme-default", "v", managed=True)
    )
    assert desired.keys.orphans == []
    assert condition(status["acme"], "Ready")["reason"] == "InvalidSpec"


# ---------------------------------------------------------------- status


def test_status_is_stable_and_carries_observed_generation() -> None:
    _snap, _desired, status = compiled(api(), plan(), tenant())
    ready = condition(status["acme"], "Ready")
    assert ready["observedGeneration"] == 3
    assert status["acme"]["observedGeneration"] == 3
    # Feed the status back as if read from the apiserver, an hour later: nothing changes.
    objects = [api(), plan(), tenant()]
    for obj in objects:
        meta = obj["metadata"]
        obj["status"] = status[
            f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        ]
    later = snapshot_from_objects(objects, settings=GATEWAY, now=NOW + timedelta(hours=1))
    again = compile_all(later, {n: f"tp_value_{n}" for _, _, n in compile_all(later).keys.missing})
    assert {s.key: s.status for s in statuses(later, again)} == status


@pytest.mark.parametrize(
    ("old", "new", "events"),
    [
        (
            [],
            [{"type": "Ready", "status": "True", "reason": "Published", "message": "m"}],
            [("Normal", "Published")],
        ),
        (
            [{"type": "Ready", "status": "True", "reason": "Published"}],
            [{"type": "Ready", "status": "True", "reason": "Published", "message": "m"}],
            [],
        ),
        ([], [{"type": "Routed", "status": "True", "reason": "RouteApplied", "message": "m"}], []),
        (
            [],
            [{"type": "KeysReady", "status": "False", "reason": "DuplicateKey", "message": "m"}],
            [("Warning", "DuplicateKey")],
        ),
    ],
)
def test_transitions_become_events(old: list[Any], new: list[Any], events: list[Any]) -> None:
    assert [(t.type, t.reason) for t in transitions(old, new)] == events


def test_apply_failure_shows_on_the_owner() -> None:
    snap, desired, _ = compiled(api())
    failures = {"HTTPRoute team/tollplane-weather": "forbidden"}
    status = {s.key: s.status for s in statuses(snap, desired, failures)}
    ready = condition(status["team/weather"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RouteApplyFailed")
    assert "forbidden" in ready["message"]


def test_settings_parse() -> None:
    assert ParentRef.parse("a/b") == ParentRef("a", "b")
    assert str(ServiceRef.parse("ns/gate:8080")) == "ns/gate:8080"
    for bad in ("a", "a/b/c/d"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            ParentRef.parse(bad)
    with pytest.raises(ValueError, match="PORT"):
        ServiceRef.parse("ns/gate")


def test_secret_view_reads_string_data() -> None:
    view = snapshot_from_objects(
        [
            {
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "tollplane-system"},
                "stringData": {"api-key": "v"},
            }
        ],
        now=NOW,
    ).secrets["s"]
    assert view == SecretView("s", "v")
