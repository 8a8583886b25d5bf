"""The Policy document: Apis, BillingPlans, Tenants and key hashes, resolved for the gate.

Every reference is followed here so the gate never has to: money becomes integer micros,
trials become an end timestamp, subscriptions become entitlements with a state, successors
become URLs. A Tenant whose plan is missing is left out (its keys answer 401) and reported in
its status; it never stops the others from being compiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from tollplane.api.apis import Api, Approval, Stage
from tollplane.api.plans import WINDOW_SECONDS, BillingPlan
from tollplane.api.policy import (
    KeyPolicy,
    PlanPolicy,
    Policy,
    QuotaPolicy,
    RatePolicy,
    RoutePolicy,
    TenantPolicy,
)
from tollplane.api.tenants import ApiRef, SubscriptionState, Tenant
from tollplane.compile.routes import Problem, api_namespace, public_url
from tollplane.compile.secrets import KeyMaterial
from tollplane.compile.snapshot import Settings

MICROS = Decimal(1_000_000)
SERVING = frozenset({Stage.PUBLISHED, Stage.DEPRECATED})


def micros(amount: str | None) -> int:
    """A decimal money string ("49.00", "0.0004") in integer millionths."""
    if not amount:
        return 0
    return int(Decimal(amount) * MICROS)


def requires_payment(plan: BillingPlan) -> bool:
    """A plan with a fee or a trial requires payment (a trial is a promise to pay later)."""
    return micros(plan.spec.price.monthly_fee) > 0 or plan.spec.trial_days > 0


def plan_policy(plan: BillingPlan) -> PlanPolicy:
    """A BillingPlan reduced to what the gate decides with."""
    spec = plan.spec
    rate = None
    if spec.rate_limit is not None:
        rate = RatePolicy(
            limit=spec.rate_limit.requests,
            window_seconds=WINDOW_SECONDS[spec.rate_limit.per],
            burst=spec.rate_limit.burst or spec.rate_limit.requests,
        )
    quota = None
    if spec.quota is not None:
        quota = QuotaPolicy(limit=spec.quota.requests, period=spec.quota.period)
    return PlanPolicy(
        name=plan.metadata.name,
        currency=spec.price.currency,
        quota=quota,
        rate=rate,
        overage=spec.overage,
        trial_days=spec.trial_days,
        grace_days=spec.grace_days,
        requires_payment=requires_payment(plan),
        prepaid=spec.prepaid,
        unit_price_micros=micros(spec.price.unit_price),
        payment_url=spec.payment_url,
        errors=dict(spec.errors),
    )


def trial_ends(tenant: Tenant, plan: BillingPlan) -> datetime | None:
    """billing.trialStart (or the Tenant's creation) + the plan's trial days."""
    if plan.spec.trial_days == 0:
        return None
    start = tenant.spec.billing.trial_start or tenant.metadata.creation_timestamp
    if start is None:
        return None
    return start + timedelta(days=plan.spec.trial_days)


def subscription_state(
    tenant: str, ref: ApiRef, apis: Mapping[str, Api], served: Mapping[str, Api]
) -> SubscriptionState:
    """Whether ``tenant`` may call the Api ``ref`` names (``apis``: all valid Apis by key,
    ``served``: those that answer).

    Access is the intersection of the Tenant's subscriptions and the Api's access rules.
    """
    api = apis.get(ref.key)
    if api is None:
        return SubscriptionState.API_NOT_FOUND
    if ref.key not in served or api.spec.lifecycle.stage not in SERVING:
        return SubscriptionState.NOT_SERVING
    if (
        api.spec.access.approval is Approval.MANUAL
        and tenant not in api.spec.access.approved_tenants
    ):
        return SubscriptionState.PENDING_APPROVAL
    return SubscriptionState.ACTIVE


@dataclass(frozen=True)
class Resolution:
    """Per-Api facts the policy and the statuses share."""

    deprecated_since: Mapping[str, datetime] = field(default_factory=dict)
    successor_urls: Mapping[str, str] = field(default_factory=dict)
    problems: Mapping[str, Problem] = field(default_factory=dict)


def resolve_apis(
    apis: Mapping[str, Api], served: Mapping[str, Api], settings: Settings, now: datetime
) -> Resolution:
    """Deprecation dates and successor URLs of the served Apis (apis: all valid, by key)."""
    since: dict[str, datetime] = {}
    successors: dict[str, str] = {}
    problems: dict[str, Problem] = {}
    for key, api in served.items():
        life = api.spec.lifecycle
        recorded = api.status.deprecated_since if api.status else None
        if life.deprecated_since or recorded:
            since[key] = life.deprecated_since or recorded  # type: ignore[assignment]
        elif life.stage is Stage.DEPRECATED:
            since[key] = now.replace(microsecond=0)
        if life.successor is None:
            continue
        if life.successor.url:
            successors[key] = life.successor.url
            continue
        target_key = f"{api_namespace(api)}/{life.successor.api}"
        target = apis.get(target_key)
        if target is None:
            problems[key] = Problem(
                "SuccessorNotFound",
                f"lifecycle.successor.api names Api {target_key}, which does not exist; "
                "callers get no successor link",
            )
        else:
            successors[key] = public_url(target, settings)
    return Resolution(since, successors, problems)


def route_policy(api: Api, key: str, resolution: Resolution) -> RoutePolicy:
    """One servable address of the policy."""
    spec = api.spec
    if spec.upstream.service is not None:
        svc = spec.upstream.service
        upstream = f"{svc.scheme}://{svc.name}.{api_namespace(api)}.svc:{svc.port}"
    else:
        upstream = (spec.upstream.url or "").rstrip("/")
    return RoutePolicy(
        api=key,
        version=spec.version,
        hostnames=list(spec.hostnames),
        base_path=spec.base_path,
        methods=list(spec.methods),
        stage=spec.lifecycle.stage,
        sunset=spec.lifecycle.sunset,
        deprecated_since=resolution.deprecated_since.get(key),
        successor_url=resolution.successor_urls.get(key),
        docs_url=spec.docs_url,
        upstream_url=upstream,
        timeout_seconds=spec.upstream.timeout_seconds,
        credential_header=spec.credential.header,
        credential_scheme=spec.credential.scheme,
        log_headers=list(spec.logging.headers),
        log_query=spec.logging.query,
        errors=dict(spec.errors),
    )


def tenant_policy(
    tenant: Tenant, plan: BillingPlan, apis: Mapping[str, Api], served: Mapping[str, Api]
) -> TenantPolicy:
    """A Tenant reduced to what the gate decides with."""
    name = tenant.metadata.name
    billing = tenant.spec.billing
    return TenantPolicy(
        name=name,
        plan=plan.metadata.name,
        suspended=tenant.spec.suspended,
        entitlements={
            ref.key: subscription_state(name, ref, apis, served)
            for ref in sorted(tenant.spec.subscriptions, key=lambda r: r.key)
        },
        trial_ends=trial_ends(tenant, plan),
        paid_through=billing.paid_through,
        credit_micros=micros(billing.credit) if billing.credit is not None else None,
    )


def build_policy(
    apis: Mapping[str, Api],
    served: Mapping[str, Api],
    *,
    plans: Mapping[str, BillingPlan],
    tenants: Mapping[str, Tenant],
    keys: Mapping[tuple[str, str], KeyMaterial],
    resolution: Resolution,
) -> Policy:
    """The sealed Policy (revision = content hash) of valid, resolvable resources.

    ``tenants`` holds only Tenants whose plan resolved; ``keys`` only keys with a value.
    Everything is sorted so the same input always yields the same revision.
    """
    routes = [route_policy(served[k], k, resolution) for k in sorted(served)]
    tenant_policies = {
        name: tenant_policy(tenants[name], plans[tenants[name].spec.plan], apis, served)
        for name in sorted(tenants)
    }
    key_policies = {
        m.key_hash: KeyPolicy(tenant=m.tenant, id=m.key_id, expires=m.expires)
        for m in sorted(keys.values(), key=lambda m: m.key_hash)
        if m.tenant in tenant_policies
    }
    return Policy(
        routes=routes,
        plans={name: plan_policy(plans[name]) for name in sorted(plans)},
        tenants=tenant_policies,
        keys=key_policies,
    ).sealed()
