"""The decision chain: a pure function of (policy, request facts, counter results, now).

The chain runs in two pure steps around the only I/O it needs, the counters::

    evaluate(index, facts, now) -> Decision            # answered without counters
                                 | Pending             # passed; these counters must fit
    store.check(pending.checks, now) -> results        # I/O (memory or Redis)
    conclude(pending, results, facts) -> Decision      # interpret the counters

Order: route -> lifecycle -> method -> authenticate -> authorize -> billing -> credit/quota
(402) -> rate and quota under Throttle (429) -> allow.  Every denial carries an RFC 9457 body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tollplane.api.apis import Stage
from tollplane.api.plans import Overage
from tollplane.api.reasons import REASONS, Reason
from tollplane.api.tenants import SubscriptionState
from tollplane.gate import problems
from tollplane.gate.index import Headers, Key, Plan, PolicyIndex, Route, Tenant, http_date
from tollplane.gate.limits import CounterCheck, CounterResult, period_bounds

_PROBLEM = (("Content-Type", problems.CONTENT_TYPE),)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the gate knows about a call before deciding."""

    method: str  # upper case
    host: str  # lower case, port stripped
    path: str  # percent-decoded, no query
    headers: Mapping[str, str]  # lower-case names
    request_id: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: status, reason, headers to add, and a problem body for denials."""

    status: int
    reason: Reason
    headers: Headers = ()
    body: bytes = b""
    route: Route | None = None
    tenant: str | None = None
    plan: str | None = None
    key_id: str | None = None
    overage: bool = False  # allowed beyond quota under overage Charge

    @property
    def allowed(self) -> bool:
        """Whether the call goes through."""
        return self.reason is Reason.ALLOWED


@dataclass(frozen=True, slots=True)
class Pending:
    """A call that passed every check that needs no counters."""

    route: Route
    tenant: Tenant
    plan: Plan
    key: Key
    checks: tuple[CounterCheck, ...]
    headers: Headers  # lifecycle and billing headers for the eventual answer


def _deny(
    reason: Reason,
    facts: Facts,
    route: Route | None = None,
    *,
    tenant: Tenant | None = None,
    plan: Plan | None = None,
    key: Key | None = None,
    headers: Headers = (),
    extra: Mapping[str, Any] | None = None,
) -> Decision:
    body = problems.body(
        reason,
        request_id=facts.request_id,
        api=route.api if route is not None and reason is not Reason.API_DRAFT else None,
        tenant=tenant.name if tenant else None,
        plan=plan.name if plan else (tenant.plan if tenant else None),
        api_errors=route.errors if route is not None else None,
        plan_errors=plan.policy.errors if plan is not None else None,
        extra=extra,
    )
    return Decision(
        status=REASONS[reason].status,
        reason=reason,
        headers=_PROBLEM + headers,
        body=body,
        route=route,
        tenant=tenant.name if tenant else None,
        plan=plan.name if plan else (tenant.plan if tenant else None),
        key_id=key.id if key else None,
    )


def _has_dot_segment(path: str) -> bool:
    # "/a/../b" would match route /a and then reach /b on the upstream: refuse outright.
    return "/." in path and any(seg in (".", "..") for seg in path.split("/"))


def _credential(route: Route, facts: Facts) -> str | None:
    value = facts.headers.get(route.credential_header)
    if not value:
        return None
    if not route.credential_scheme:
        return value.strip() or None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != route.credential_scheme:
        return None
    return token.strip() or None


def _challenge(route: Route, reason: Reason) -> Headers:
    if reason is Reason.MISSING_CREDENTIAL:
        return (("WWW-Authenticate", route.www_authenticate),)
    description = "expired" if reason is Reason.EXPIRED_CREDENTIAL else "unknown key"
    return (
        (
            "WWW-Authenticate",
            f'{route.www_authenticate}, error="invalid_token", error_description="{description}"',
        ),
    )


def _checks(tenant: Tenant, plan: Plan, now: float) -> tuple[CounterCheck, ...]:
    """The counters a call of this tenant must fit into (hash tag {tenant}: one Redis slot)."""
    pp = plan.policy
    out: list[CounterCheck] = []
    tag = "{" + tenant.name + "}"
    if pp.prepaid and tenant.credit_micros is not None and pp.unit_price_micros > 0:
        # Keyed by the balance: a new balance written by billing starts a fresh draw-down.
        out.append(
            CounterCheck(
                "credit",
                f"tp:{tag}:credit:{tenant.credit_micros}",
                "fixed",
                tenant.credit_micros,
                pp.unit_price_micros,
                0.0,
            )
        )
    if pp.quota is not None:
        start, end = period_bounds(pp.quota.period, now)
        charge = pp.overage is Overage.CHARGE
        out.append(
            CounterCheck(
                "quota",
                f"tp:{tag}:quota:{start}",
                "fixed",
                pp.quota.limit,
                1,
                float(end),
                enforce=not charge,
                window=0 if charge else end - start,
            )
        )
    if pp.rate is not None:
        out.append(
            CounterCheck(
                "rate",
                f"tp:{tag}:rate",
                "bucket",
                pp.rate.burst,
                1,
                pp.rate.window_seconds / pp.rate.limit,
                window=pp.rate.window_seconds,
            )
        )
    return tuple(out)


def evaluate(index: PolicyIndex | None, facts: Facts, now: float) -> Decision | Pending:
    """Every step of the chain that needs no counters."""
    if index is None:
        return _deny(Reason.NO_POLICY, facts, headers=(("Retry-After", "1"),))
    if _has_dot_segment(facts.path):
        return _deny(Reason.NO_ROUTE, facts)
    route = index.match(facts.host, facts.path)
    if route is None:
        return _deny(Reason.NO_ROUTE, facts)
    # Lifecycle. A Draft is invisible; a sunset date in the past retires the Api on time.
    if route.stage is Stage.DRAFT:
        return _deny(Reason.API_DRAFT, facts, route)
    if route.stage is Stage.RETIRED or (route.sunset is not None and now >= route.sunset):
        return _deny(
            Reason.API_RETIRED,
            facts,
            route,
            headers=route.successor_headers,
            extra={"successor": route.successor_url, "docs": route.docs_url},
        )
    if route.methods and facts.method not in route.methods:
        allow = ", ".join(sorted(route.methods))
        return _deny(Reason.METHOD_NOT_ALLOWED, facts, route, headers=(("Allow", allow),))
    # Authenticate.
    presented = _credential(route, facts)
    if presented is None:
        reason = Reason.MISSING_CREDENTIAL
        return _deny(reason, facts, route, headers=_challenge(route, reason))
    key = index.key(presented)
    tenant = index.tenants.get(key.tenant) if key is not None else None
    if key is None or tenant is None:
        reason = Reason.INVALID_CREDENTIAL
        return _deny(reason, facts, route, headers=_challenge(route, reason))
    if key.expires is not None and key.expires <= now:
        reason = Reason.EXPIRED_CREDENTIAL
        return _deny(
            reason, facts, route, tenant=tenant, key=key, headers=_challenge(route, reason)
        )
    # Authorize.
    plan = index.plans.get(tenant.plan)
    if tenant.suspended:
        return _deny(Reason.TENANT_SUSPENDED, facts, route, tenant=tenant, plan=plan, key=key)
    state = tenant.entitlements.get(route.api)
    if state is SubscriptionState.PENDING_APPROVAL:
        return _deny(Reason.APPROVAL_PENDING, facts, route, tenant=tenant, plan=plan, key=key)
    if state is not SubscriptionState.ACTIVE or plan is None:
        return _deny(Reason.NOT_SUBSCRIBED, facts, route, tenant=tenant, plan=plan, key=key)
    # Billing: time-based facts against the clock, now.
    headers = route.lifecycle_headers
    pay = {"paymentUrl": plan.policy.payment_url}
    if plan.policy.requires_payment:
        if tenant.paid_through is None:
            if tenant.trial_ends is None:
                return _deny(
                    Reason.PAYMENT_OVERDUE,
                    facts,
                    route,
                    tenant=tenant,
                    plan=plan,
                    key=key,
                    extra=pay,
                )
            if now >= tenant.trial_ends:
                return _deny(
                    Reason.TRIAL_ENDED, facts, route, tenant=tenant, plan=plan, key=key, extra=pay
                )
            headers += (("Tollplane-Trial-Ends", http_date(tenant.trial_ends)),)
        elif now > tenant.paid_through:
            cutoff = tenant.paid_through + plan.grace_seconds
            if now > cutoff:
                return _deny(
                    Reason.PAYMENT_OVERDUE,
                    facts,
                    route,
                    tenant=tenant,
                    plan=plan,
                    key=key,
                    extra=pay,
                )
            warning = f"payment overdue; access ends {http_date(cutoff)}"
            headers += (("Tollplane-Billing-Warning", warning),)
    return Pending(route, tenant, plan, key, _checks(tenant, plan, now), headers)


def _ratelimit_headers(plan: Plan, results: tuple[CounterResult, ...]) -> Headers:
    shown = [r for r in results if r.check.window]
    if not shown:
        return ()
    value = ", ".join(f'"{r.check.name}";r={r.remaining};t={r.reset}' for r in shown)
    return (("RateLimit-Policy", plan.ratelimit_policy), ("RateLimit", value))


def conclude(pending: Pending, results: tuple[CounterResult, ...] | None, facts: Facts) -> Decision:
    """Interpret counter results; ``None`` means the store was down and the gate fails open."""
    route, tenant, plan, key = pending.route, pending.tenant, pending.plan, pending.key
    if results is None:
        results = ()
    headers = pending.headers + _ratelimit_headers(plan, results)
    denied = {r.check.name: r for r in results if r.check.enforce and not r.fits}
    pay = {"paymentUrl": plan.policy.payment_url}
    if "credit" in denied:
        return _deny(
            Reason.CREDIT_EXHAUSTED,
            facts,
            route,
            tenant=tenant,
            plan=plan,
            key=key,
            headers=headers,
            extra=pay,
        )
    quota = denied.get("quota")
    if quota is not None and plan.policy.overage is Overage.BLOCK:
        return _deny(
            Reason.QUOTA_EXHAUSTED,
            facts,
            route,
            tenant=tenant,
            plan=plan,
            key=key,
            headers=headers,
            extra=pay,
        )
    # Quota before rate: its Retry-After is the one after which a retry can succeed.
    throttled = quota or denied.get("rate")
    if throttled is not None:
        reason = Reason.QUOTA_THROTTLED if quota is not None else Reason.RATE_LIMITED
        retry = max(1, throttled.retry_after)
        return _deny(
            reason,
            facts,
            route,
            tenant=tenant,
            plan=plan,
            key=key,
            headers=(*headers, ("Retry-After", str(retry))),
            extra={"retryAfter": retry},
        )
    overage = any(r.check.name == "quota" and not r.fits for r in results)
    return Decision(
        status=200,
        reason=Reason.ALLOWED,
        headers=headers,
        route=route,
        tenant=tenant.name,
        plan=plan.name,
        key_id=key.id,
        overage=overage,
    )


def unavailable(pending: Pending, facts: Facts) -> Decision:
    """The answer when counters cannot be reached and the gate is set to fail closed."""
    return _deny(
        Reason.COUNTERS_UNAVAILABLE,
        facts,
        pending.route,
        tenant=pending.tenant,
        plan=pending.plan,
        key=pending.key,
        headers=(("Retry-After", "1"),),
    )


def not_found(facts: Facts) -> Decision:
    """404 for a path the gate does not serve (any non-check path in forward-auth mode)."""
    return _deny(Reason.NO_ROUTE, facts)


def upstream_failed(decision: Decision, reason: Reason, facts: Facts) -> Decision:
    """502/504 for an allowed call whose upstream could not answer; limits were consumed."""
    failed = _deny(reason, facts, decision.route)
    return Decision(
        status=failed.status,
        reason=reason,
        headers=failed.headers + decision.headers,
        body=failed.body,
        route=decision.route,
        tenant=decision.tenant,
        plan=decision.plan,
        key_id=decision.key_id,
        overage=decision.overage,
    )
