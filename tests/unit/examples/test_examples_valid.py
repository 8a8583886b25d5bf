"""examples/ is what a newcomer applies first: every manifest must be valid and coherent.

Each Tollplane document validates against the pydantic models (the same rules the CRDs
enforce), every reference points at something in examples/, and each Tenant's
``tollplane.io/expect-*`` annotations (which the cluster tests and README promise) follow
from its spec and the current date.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tollplane.api.apis import Api, Approval, Stage
from tollplane.api.base import Resource
from tollplane.api.keys import SECRET_KEY_FIELD
from tollplane.api.plans import BillingPlan
from tollplane.api.tenants import BillingState, SubscriptionState, Tenant
from tollplane.compile.compiler import billing_state as compiled_billing_state

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
OPERATOR_NAMESPACE = "tollplane-system"
EXPECT_STATE = "tollplane.io/expect-state"
EXPECT_SUBSCRIPTIONS = "tollplane.io/expect-subscriptions"
MODELS: dict[str, type[Resource]] = {"Api": Api, "BillingPlan": BillingPlan, "Tenant": Tenant}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    """(``file:Kind/name``, document) for every non-empty YAML document in examples/."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCS = _documents()
TOLLPLANE_DOCS = [(ref, doc) for ref, doc in DOCS if doc["kind"] in MODELS]


def _load(kind: type[Resource]) -> dict[str, Any]:
    """Every example of ``kind``, validated, keyed by namespace/name (or name)."""
    objects = [kind.model_validate(doc) for _, doc in DOCS if doc["kind"] == kind.kind_name]
    return {obj.key: obj for obj in objects}


APIS: dict[str, Api] = _load(Api)
PLANS: dict[str, BillingPlan] = _load(BillingPlan)
TENANTS: dict[str, Tenant] = _load(Tenant)


def _billing_state(tenant: Tenant, plan: BillingPlan, now: datetime) -> BillingState:
    """The state the architecture defines, as a test oracle independent of the gate's code.

    A tenant that never paid is on trial when its plan has a fee or a trial; the trial starts
    at ``trialStart`` or, unset, at creation (``now`` for a manifest not yet applied).
    """
    billing = tenant.spec.billing
    if tenant.spec.suspended:
        return BillingState.SUSPENDED
    if billing.paid_through is None:
        requires_payment = plan.spec.trial_days > 0 or float(plan.spec.price.monthly_fee) > 0
        if not requires_payment:
            return BillingState.ACTIVE
        trial_ends = (billing.trial_start or now) + timedelta(days=plan.spec.trial_days)
        return BillingState.TRIAL if now < trial_ends else BillingState.TRIAL_ENDED
    if now <= billing.paid_through:
        return BillingState.ACTIVE
    if now <= billing.paid_through + timedelta(days=plan.spec.grace_days):
        return BillingState.PAST_DUE
    return BillingState.PAYMENT_REQUIRED


def _subscription_state(tenant: Tenant, api_key: str) -> SubscriptionState:
    """Whether a subscription lets the tenant call the Api (same oracle role as above)."""
    api = APIS.get(api_key)
    if api is None:
        return SubscriptionState.API_NOT_FOUND
    if api.spec.lifecycle.stage not in (Stage.PUBLISHED, Stage.DEPRECATED):
        return SubscriptionState.NOT_SERVING
    access = api.spec.access
    if access.approval == Approval.MANUAL and tenant.metadata.name not in access.approved_tenants:
        return SubscriptionState.PENDING_APPROVAL
    return SubscriptionState.ACTIVE


def _expected_subscriptions(tenant: Tenant) -> dict[str, str]:
    raw = tenant.metadata.annotations.get(EXPECT_SUBSCRIPTIONS, "")
    return dict(item.strip().split("=", 1) for item in raw.split(",") if item.strip())


@pytest.mark.parametrize(("ref", "doc"), TOLLPLANE_DOCS, ids=[ref for ref, _ in TOLLPLANE_DOCS])
def test_every_tollplane_manifest_validates_against_the_models(
    ref: str, doc: dict[str, Any]
) -> None:
    model = MODELS[doc["kind"]]
    try:
        obj = model.model_validate(doc)
    except ValidationError as error:
        pytest.fail(f"{ref} does not validate:\n{error}")
    assert doc["apiVersion"] == "tollplane.io/v1alpha1"
    # Namespaced kinds must say where they live; cluster-scoped ones must not pretend to.
    assert bool(obj.metadata.namespace) == model.namespaced, ref


def test_every_manifest_is_a_complete_kubernetes_object() -> None:
    seen: set[tuple[str, str | None, str]] = set()
    for ref, doc in DOCS:
        assert doc.get("apiVersion"), ref
        assert doc.get("kind"), ref
        ident = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert ident not in seen, f"{ref} is declared twice"
        seen.add(ident)


def test_examples_cover_every_lifecycle_stage_that_serves_or_refuses_traffic() -> None:
    stages = {api.spec.lifecycle.stage for api in APIS.values()}
    assert {Stage.PUBLISHED, Stage.DEPRECATED, Stage.RETIRED} <= stages
    assert any(api.spec.access.approval == Approval.MANUAL for api in APIS.values())


def test_examples_show_each_overage_behaviour_a_demo_needs() -> None:
    trial = PLANS["free-trial"].spec
    # Small numbers so a demo reaches 429 and then 402 within seconds.
    assert trial.overage == "Block"
    assert trial.quota is not None
    assert trial.quota.requests <= 20
    assert trial.quota.period == "Day"
    assert trial.rate_limit is not None
    assert trial.rate_limit.requests < trial.quota.requests
    assert PLANS["pro"].spec.overage == "Charge"
    assert PLANS["enterprise"].spec.rate_limit is not None
    assert PLANS["enterprise"].spec.rate_limit.requests >= 1000


def test_api_references_resolve_within_examples() -> None:
    services = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): {
            p["port"] for p in doc["spec"]["ports"]
        }
        for _, doc in DOCS
        if doc["kind"] == "Service"
    }
    namespaces = {doc["metadata"]["name"] for _, doc in DOCS if doc["kind"] == "Namespace"}
    for api in APIS.values():
        ns = api.metadata.namespace
        assert ns in namespaces, f"{api.key}: namespace {ns} is not in examples/"
        service = api.spec.upstream.service
        if service is not None:
            assert service.port in services.get((ns, service.name), set()), (
                f"{api.key}: upstream Service {service.name}:{service.port} is not in examples/"
            )
        successor = api.spec.lifecycle.successor
        if successor is not None and successor.api is not None:
            assert f"{ns}/{successor.api}" in APIS, f"{api.key}: successor {successor.api}"
        for tenant in api.spec.access.approved_tenants:
            assert tenant in TENANTS, f"{api.key}: approves unknown tenant {tenant}"


def test_tenant_references_resolve_within_examples() -> None:
    for tenant in TENANTS.values():
        assert tenant.spec.plan in PLANS, f"{tenant.key}: no plan {tenant.spec.plan}"
        for sub in tenant.spec.subscriptions:
            assert sub.key in APIS, f"{tenant.key}: subscribes to unknown Api {sub.key}"


def test_pre_provisioned_key_secret_is_where_the_operator_adopts_it() -> None:
    secrets = {
        doc["metadata"]["name"]: doc
        for _, doc in DOCS
        if doc["kind"] == "Secret" and doc["metadata"]["namespace"] == OPERATOR_NAMESPACE
    }
    adopted = [
        (tenant, key)
        for tenant in TENANTS.values()
        for key in tenant.spec.keys
        if (key.secret_name or f"tollplane-key-{tenant.metadata.name}-{key.id}") in secrets
    ]
    assert adopted, "examples/ should show one pre-provisioned key the operator adopts"
    for tenant, key in adopted:
        secret = secrets[key.secret_name or f"tollplane-key-{tenant.metadata.name}-{key.id}"]
        value = (secret.get("stringData") or {}).get(SECRET_KEY_FIELD) or base64.b64decode(
            (secret.get("data") or {}).get(SECRET_KEY_FIELD, "")
        ).decode()
        assert len(value) >= 16, f"{tenant.key}/{key.id}: the key value is missing or short"


def test_tenants_cover_every_billing_state() -> None:
    states = {t.metadata.annotations.get(EXPECT_STATE) for t in TENANTS.values()}
    assert states >= {s.value for s in BillingState}
    subscription_states = {
        state for t in TENANTS.values() for state in _expected_subscriptions(t).values()
    }
    assert {"Active", "PendingApproval", "NotServing"} <= subscription_states


@pytest.mark.parametrize("name", sorted(TENANTS))
def test_tenant_is_in_the_state_its_annotations_promise_today(name: str) -> None:
    """Billing facts are compared with the clock, so this can start failing one day.

    When it does, the dates in examples/40-tenants.yaml no longer produce the state the
    README promises: move them (see "Dates" in examples/README.md), do not loosen the test.
    """
    tenant = TENANTS[name]
    now = datetime.now(UTC)
    expected = tenant.metadata.annotations.get(EXPECT_STATE)
    actual = _billing_state(tenant, PLANS[tenant.spec.plan], now)
    assert actual == expected, (
        f"tenant {name} is {actual} on {now:%Y-%m-%d}, but examples promise {expected}: "
        "update its billing dates (examples/README.md, Dates)"
    )
    # And the compiler (what the operator reports and the gate enforces) agrees, for a Tenant
    # created just now as a fresh `kubectl apply` would be.
    applied = tenant.model_copy(
        update={"metadata": tenant.metadata.model_copy(update={"creation_timestamp": now})}
    )
    assert compiled_billing_state(applied, PLANS[tenant.spec.plan], now) == expected, name
    expected_subs = _expected_subscriptions(tenant)
    assert list(expected_subs) == [s.key for s in tenant.spec.subscriptions]
    for api_key, state in expected_subs.items():
        assert _subscription_state(tenant, api_key) == state, f"{name} -> {api_key}"


def test_readme_table_lists_every_resource_with_its_promised_state() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    for tenant in TENANTS.values():
        state = tenant.metadata.annotations[EXPECT_STATE]
        assert any(f"`{tenant.metadata.name}`" in row and state in row for row in rows), (
            f"examples/README.md has no table row for tenant {tenant.metadata.name} ({state})"
        )
    for obj in [*APIS.values(), *PLANS.values()]:
        assert any(f"`{obj.metadata.name}`" in row for row in rows), obj.key
