"""``compile_all``: a Snapshot in, everything the operator should write out.

Two steps, both pure. :func:`compile_all` returns the desired objects (routes, grants, key
Secrets, policy ConfigMaps) and the Policy. After the operator has applied them it calls
:func:`statuses` with whatever failed, so a failed write shows up as a condition on the
resource that wanted it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tollplane.api.apis import Api, Stage
from tollplane.api.keys import fingerprint
from tollplane.api.plans import BillingPlan
from tollplane.api.policy import Policy
from tollplane.api.shards import configmaps
from tollplane.api.tenants import BillingState, SubscriptionState, Tenant
from tollplane.compile.objects import stamped
from tollplane.compile.policy import (
    Resolution,
    build_policy,
    requires_payment,
    resolve_apis,
    subscription_state,
    trial_ends,
)
from tollplane.compile.routes import (
    Problem,
    RoutePlan,
    api_key,
    api_namespace,
    plan_routes,
    public_url,
)
from tollplane.compile.secrets import KeyPlan, plan_keys
from tollplane.compile.snapshot import ANNOTATION_OWNER, Invalid, RouteKind, Snapshot
from tollplane.compile.status import Conditions, StatusUpdate, subscription_summary


def object_ref(manifest: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` of a manifest: how apply failures are reported back."""
    meta = manifest["metadata"]
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"{manifest['kind']} {where}"


@dataclass(frozen=True)
class Desired:
    """Everything the operator should make true, and what it needs to report on it."""

    policy: Policy
    # In apply order: key Secrets, policy shards, the policy index, then routes and grants.
    objects: list[dict[str, Any]]
    routes: RoutePlan
    keys: KeyPlan
    resolution: Resolution
    # Object ref -> "Kind key" of the resource that wants it (for failures and status).
    owners: Mapping[str, str] = field(default_factory=dict)
    # Resources whose owned objects must be left alone (they could not be read).
    frozen: frozenset[str] = frozenset()


def _now(snapshot: Snapshot) -> datetime:
    if snapshot.now is None:
        raise ValueError("snapshot.now is required: statuses and deprecation dates need a clock")
    return snapshot.now


def _valid_apis(snapshot: Snapshot) -> dict[str, Api]:
    return {api_key(a): a for a in snapshot.apis.values() if isinstance(a, Api)}


def _resolved_tenants(snapshot: Snapshot) -> dict[str, Tenant]:
    return {
        t.metadata.name: t
        for t in snapshot.tenants.values()
        if isinstance(t, Tenant) and isinstance(snapshot.plans.get(t.spec.plan), BillingPlan)
    }


def compile_all(snapshot: Snapshot, generated: Mapping[str, str] | None = None) -> Desired:
    """Desired objects and Policy for ``snapshot``.

    ``generated``: values for key Secrets that did not exist (see :func:`plan_keys`); keys
    still missing a value are simply absent from the policy until they have one.
    """
    settings = snapshot.settings
    apis = _valid_apis(snapshot)
    plans = {n: p for n, p in snapshot.plans.items() if isinstance(p, BillingPlan)}
    routes = plan_routes(snapshot.apis.values(), settings)
    resolution = resolve_apis(apis, routes.served, settings, _now(snapshot))
    keys = plan_keys(snapshot.tenants.values(), snapshot.secrets, settings.namespace, generated)
    policy = build_policy(
        apis,
        routes.served,
        plans=plans,
        tenants=_resolved_tenants(snapshot),
        keys=keys.materials,
        resolution=resolution,
    )
    index, shards = configmaps(policy, settings.namespace)
    index = stamped(index)
    owners: dict[str, str] = {}
    for manifest in keys.manifests:
        owners[object_ref(manifest)] = (
            f"Tenant {manifest['metadata']['annotations'][ANNOTATION_OWNER]}"
        )
    for key, manifests in routes.routes.items():
        for manifest in manifests:
            owners[object_ref(manifest)] = f"Api {key}"
    objects = [
        *keys.manifests,
        *shards,
        index,
        *(m for key in sorted(routes.routes) for m in routes.routes[key]),
        *routes.shared,
    ]
    frozen = frozenset(
        f"{r.kind} {r.key}"
        for r in (*snapshot.apis.values(), *snapshot.tenants.values())
        if isinstance(r, Invalid)
    )
    return Desired(policy, objects, routes, keys, resolution, owners, frozen)


def _failure(desired: Desired, owner: str, failures: Mapping[str, str]) -> str | None:
    for ref, message in failures.items():
        if desired.owners.get(ref) == owner:
            return f"{ref}: {message}"
    return None


def _invalid_status(resource: Invalid, now: datetime) -> StatusUpdate:
    conditions = Conditions((), resource.generation, now)
    conditions.set(
        "Ready",
        False,
        "InvalidSpec",
        f"the operator cannot read this {resource.kind}: {resource.message}; "
        "objects it produced earlier are left as they are",
    )
    return StatusUpdate(
        resource.kind,
        resource.name,
        resource.namespace,
        resource.uid,
        {"observedGeneration": resource.generation, "conditions": conditions.wire()},
    )


def _api_status(
    api: Api,
    snapshot: Snapshot,
    desired: Desired,
    *,
    subscribers: int,
    pending: list[str],
    failures: Mapping[str, str],
) -> StatusUpdate:
    key = api_key(api)
    stage = api.spec.lifecycle.stage
    generation = api.metadata.generation
    conditions = Conditions(api.status.conditions if api.status else (), generation, _now(snapshot))
    problem: Problem | None = desired.routes.problems.get(key)
    failure = _failure(desired, f"Api {key}", failures)
    served = key in desired.routes.served
    url = public_url(api, snapshot.settings) if served else None
    route = desired.routes.references.get(key)
    if stage is Stage.DRAFT:
        conditions.set(
            "Routed",
            False,
            "Draft",
            "Draft Apis are not routed; set spec.lifecycle.stage to Published to serve it",
        )
    elif problem is not None:
        conditions.set("Routed", False, problem.reason, problem.message)
    elif failure is not None:
        conditions.set("Routed", False, "RouteApplyFailed", failure)
    elif snapshot.settings.route_kind is RouteKind.NONE:
        conditions.set(
            "Routed",
            True,
            "RoutedExternally",
            f"the operator writes no routes (route kind None): send {url} to the gate yourself",
        )
    else:
        conditions.set("Routed", True, "RouteApplied", f"{route} sends {url} to the gate")
    successor = api.spec.lifecycle.successor
    if successor is not None and stage is not Stage.DRAFT:
        missing = desired.resolution.problems.get(key)
        if missing is not None:
            conditions.set("SuccessorResolved", False, missing.reason, missing.message)
        else:
            conditions.set(
                "SuccessorResolved",
                True,
                "SuccessorFound",
                f"callers are pointed to {desired.resolution.successor_urls.get(key)}",
            )
    routed_problem = problem or (
        Problem("RouteApplyFailed", failure) if failure and stage is not Stage.DRAFT else None
    )
    if stage is Stage.DRAFT:
        conditions.set("Ready", True, "Draft", "Draft: not served; callers get 404")
    elif routed_problem is not None:
        conditions.set("Ready", False, routed_problem.reason, routed_problem.message)
    elif stage is Stage.RETIRED:
        conditions.set("Ready", True, "Retired", f"retired: the gate answers 410 at {url}")
    elif stage is Stage.DEPRECATED:
        sunset = api.spec.lifecycle.sunset
        conditions.set(
            "Ready",
            True,
            "Deprecated",
            f"serving at {url} until {sunset.isoformat() if sunset else 'its sunset'}; callers "
            "see Deprecation and Sunset headers",
        )
    else:
        conditions.set("Ready", True, "Published", f"serving at {url}")
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "stage": stage.value,
        "deprecatedSince": desired.resolution.deprecated_since.get(key),
        "url": url,
        "route": route,
        "subscribers": subscribers,
        "pendingApprovals": sorted(pending)[:10000],
        "conditions": conditions.wire(),
    }
    return StatusUpdate(
        "Api", api.metadata.name, api_namespace(api), api.metadata.uid, _wire(status)
    )


def _plan_status(plan: BillingPlan, snapshot: Snapshot) -> StatusUpdate:
    name = plan.metadata.name
    users = sum(
        1 for t in snapshot.tenants.values() if isinstance(t, Tenant) and t.spec.plan == name
    )
    conditions = Conditions(
        plan.status.conditions if plan.status else (), plan.metadata.generation, _now(snapshot)
    )
    conditions.set("Ready", True, "Valid", f"in the policy; {users} tenant(s) on this plan")
    status = {
        "observedGeneration": plan.metadata.generation,
        "tenants": users,
        "conditions": conditions.wire(),
    }
    return StatusUpdate("BillingPlan", name, None, plan.metadata.uid, _wire(status))


def billing_state(tenant: Tenant, plan: BillingPlan, now: datetime) -> BillingState:
    """Where the tenant stands with payment right now (the gate decides the same at call time)."""
    billing = tenant.spec.billing
    if tenant.spec.suspended:
        return BillingState.SUSPENDED
    if not requires_payment(plan):
        return BillingState.ACTIVE
    if billing.paid_through is not None:
        if now <= billing.paid_through:
            return BillingState.ACTIVE
        if now <= billing.paid_through + timedelta(days=plan.spec.grace_days):
            return BillingState.PAST_DUE
        return BillingState.PAYMENT_REQUIRED
    ends = trial_ends(tenant, plan)
    if ends is not None:
        return BillingState.TRIAL if now < ends else BillingState.TRIAL_ENDED
    return BillingState.PAYMENT_REQUIRED


def _tenant_status(
    tenant: Tenant,
    snapshot: Snapshot,
    desired: Desired,
    *,
    apis: Mapping[str, Api],
    states: Mapping[str, SubscriptionState],
    failures: Mapping[str, str],
) -> StatusUpdate:
    name = tenant.metadata.name
    now = _now(snapshot)
    conditions = Conditions(
        tenant.status.conditions if tenant.status else (), tenant.metadata.generation, now
    )
    plan = snapshot.plans.get(tenant.spec.plan)
    status: dict[str, Any] = {"observedGeneration": tenant.metadata.generation}
    blocker: tuple[str, str] | None = None
    if isinstance(plan, BillingPlan):
        conditions.set("PlanResolved", True, "PlanFound", f"on BillingPlan {plan.metadata.name}")
        state = billing_state(tenant, plan, now)
        status.update(
            plan=plan.metadata.name, state=state.value, trialEnds=trial_ends(tenant, plan)
        )
    else:
        reason = "PlanInvalid" if isinstance(plan, Invalid) else "PlanNotFound"
        text = "cannot be read" if plan else "does not exist"
        blocker = (
            reason,
            f"BillingPlan {tenant.spec.plan} {text}; this tenant's keys are not accepted "
            "until it does",
        )
        conditions.set("PlanResolved", False, *blocker)
    ok, reason, message = subscription_summary(states)
    conditions.set("SubscriptionsResolved", ok, reason, message)
    if reason == "ApiNotFound" and blocker is None:
        blocker = (reason, message)
    key_problems = [
        (k.id, desired.keys.problems.get((name, k.id)))
        for k in tenant.spec.keys
        if (name, k.id) in desired.keys.problems
    ]
    failure = _failure(desired, f"Tenant {name}", failures)
    if key_problems:
        key_id, problem = key_problems[0]
        assert problem is not None
        conditions.set("KeysReady", False, problem.reason, f"key {key_id}: {problem.message}")
        blocker = blocker or (problem.reason, f"key {key_id}: {problem.message}")
    elif failure is not None:
        conditions.set("KeysReady", False, "KeyApplyFailed", failure)
        blocker = blocker or ("KeyApplyFailed", failure)
    elif not tenant.spec.keys:
        conditions.set("KeysReady", True, "NoKeys", "no keys; add spec.keys to call Apis")
    else:
        materials = [desired.keys.materials.get((name, k.id)) for k in tenant.spec.keys]
        if all(materials):
            conditions.set(
                "KeysReady", True, "KeysPublished", f"{len(materials)} key(s) in the policy"
            )
        else:
            conditions.set(
                "KeysReady", False, "KeysPending", "waiting for key Secrets to be created"
            )
            blocker = blocker or ("KeysPending", "waiting for key Secrets to be created")
    if blocker is not None:
        conditions.set("Ready", False, *blocker)
    else:
        state_text = status["state"]
        if tenant.spec.suspended:
            detail = tenant.spec.suspend_reason or "spec.suspended is true"
            conditions.set("Ready", True, "Suspended", f"suspended: {detail}; calls get 403")
        else:
            conditions.set(
                "Ready",
                True,
                str(state_text),
                f"{state_text} on plan {tenant.spec.plan}; {message}",
            )
    status["subscriptions"] = [
        {
            "api": ref.key,
            "state": states[ref.key].value,
            "url": public_url(apis[ref.key], snapshot.settings)
            if ref.key in desired.routes.served
            else None,
        }
        for ref in tenant.spec.subscriptions
    ]
    status["keys"] = [
        {
            "id": m.key_id,
            "secretName": m.secret_name,
            "fingerprint": fingerprint(m.key_hash),
            "expires": m.expires,
            "adopted": m.adopted,
        }
        for k in tenant.spec.keys
        if (m := desired.keys.materials.get((name, k.id))) is not None
    ]
    status["conditions"] = conditions.wire()
    return StatusUpdate("Tenant", name, None, tenant.metadata.uid, _wire(status))


def _wire(value: Any) -> Any:
    """Drop None recursively and render datetimes as RFC 3339, like the apiserver returns them."""
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def statuses(
    snapshot: Snapshot, desired: Desired, failures: Mapping[str, str] | None = None
) -> list[StatusUpdate]:
    """The status of every resource in ``snapshot``; ``failures``: object ref -> error."""
    failures = failures or {}
    now = _now(snapshot)
    apis = _valid_apis(snapshot)
    served = desired.routes.served
    entitlements = {
        t.metadata.name: {
            ref.key: subscription_state(t.metadata.name, ref, apis, served)
            for ref in t.spec.subscriptions
        }
        for t in snapshot.tenants.values()
        if isinstance(t, Tenant)
    }
    # One pass over the tenants, not one per Api: 10,000 tenants x 1,000 Apis must stay cheap.
    active: dict[str, int] = {}
    pending: dict[str, list[str]] = {}
    for tenant_name, states in entitlements.items():
        for key, state in states.items():
            if state is SubscriptionState.ACTIVE:
                active[key] = active.get(key, 0) + 1
            elif state is SubscriptionState.PENDING_APPROVAL:
                pending.setdefault(key, []).append(tenant_name)
    out: list[StatusUpdate] = []
    for api in snapshot.apis.values():
        if isinstance(api, Invalid):
            out.append(_invalid_status(api, now))
        else:
            key = api_key(api)
            out.append(
                _api_status(
                    api,
                    snapshot,
                    desired,
                    subscribers=active.get(key, 0),
                    pending=pending.get(key, []),
                    failures=failures,
                )
            )
    for plan in snapshot.plans.values():
        out.append(
            _invalid_status(plan, now)
            if isinstance(plan, Invalid)
            else _plan_status(plan, snapshot)
        )
    for tenant in snapshot.tenants.values():
        if isinstance(tenant, Invalid):
            out.append(_invalid_status(tenant, now))
        else:
            states = entitlements[tenant.metadata.name]
            out.append(
                _tenant_status(
                    tenant, snapshot, desired, apis=apis, states=states, failures=failures
                )
            )
    return out
