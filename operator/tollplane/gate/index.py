"""Lookup structures built once per policy revision, so a request does dict hits, not scans.

Routes are grouped by host precedence (exact hostname, then ``*.suffix`` wildcards from the
longest suffix, then routes with no hostnames) and sorted by basePath length inside each group,
so the first prefix match is the most specific one.  Timestamps become epoch floats and
header values that depend only on the policy (Deprecation, Sunset, RateLimit-Policy) are
formatted here, once.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from urllib.parse import quote, urlsplit

from tollplane.api.apis import ErrorText, Stage
from tollplane.api.keys import hash_key
from tollplane.api.plans import Overage
from tollplane.api.policy import PlanPolicy, Policy, RoutePolicy
from tollplane.api.tenants import SubscriptionState
from tollplane.gate.limits import PERIOD_SECONDS

Headers = tuple[tuple[str, str], ...]


def http_date(epoch: float) -> str:
    """An IMF-fixdate (RFC 9110), as Sunset and Retry-After dates use."""
    return formatdate(epoch, usegmt=True)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass(frozen=True, slots=True)
class Route:
    """A RoutePolicy with everything a request needs precomputed."""

    api: str
    version: str
    base_path: str
    methods: frozenset[str]
    stage: Stage
    sunset: float | None
    successor_url: str | None
    docs_url: str | None
    upstream_origin: str  # scheme://host:port
    upstream_path: str  # path prefix on the upstream, no trailing slash ("" for the root)
    timeout_seconds: float
    credential_header: str  # lower case
    credential_scheme: str  # lower case, "" when the whole header value is the key
    www_authenticate: str  # challenge without error parameters
    log_headers: tuple[str, ...]
    log_query: bool
    errors: Mapping[str, ErrorText]
    # Deprecation/Sunset/Link on served calls of a Deprecated Api; successor Link on a 410.
    lifecycle_headers: Headers
    successor_headers: Headers

    def matches_path(self, path: str) -> bool:
        """Whether ``path`` is at or below basePath, on a segment boundary."""
        base = self.base_path
        if base == "/":
            return True
        return path.startswith(base) and (len(path) == len(base) or path[len(base)] == "/")

    def upstream_target(self, path: str, raw_path: str, query: str) -> str:
        """Upstream URL of a call: upstream path + what follows basePath, query kept.

        The raw (still percent-encoded) path is forwarded so the upstream sees what the
        client sent; ``path`` (decoded) is the fallback when basePath itself was encoded.
        """
        base = self.base_path
        if base == "/":
            rest = raw_path
        elif raw_path.startswith(base):
            rest = raw_path[len(base) :]
        else:
            rest = quote(path[len(base) :])
        target = self.upstream_path + rest or "/"
        return self.upstream_origin + target + ("?" + query if query else "")


@dataclass(frozen=True, slots=True)
class Plan:
    """A PlanPolicy plus its precomputed RateLimit-Policy header and grace in seconds."""

    policy: PlanPolicy
    grace_seconds: float
    ratelimit_policy: str  # "" when the plan has neither quota nor rate

    @property
    def name(self) -> str:
        """The plan's name."""
        return self.policy.name


@dataclass(frozen=True, slots=True)
class Tenant:
    """A TenantPolicy with its timestamps as epoch seconds."""

    name: str
    plan: str
    suspended: bool
    entitlements: Mapping[str, SubscriptionState]
    trial_ends: float | None
    paid_through: float | None
    credit_micros: int | None


@dataclass(frozen=True, slots=True)
class Key:
    """Who a key hash belongs to."""

    key_hash: str
    tenant: str
    id: str
    expires: float | None


@dataclass(slots=True)
class PolicyIndex:
    """A policy revision, ready to answer requests."""

    revision: str
    loaded_at: float
    exact: dict[str, list[Route]] = field(default_factory=dict)
    wildcard: dict[str, list[Route]] = field(default_factory=dict)  # ".example.com" -> routes
    any_host: list[Route] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    routes: int = 0

    def match(self, host: str, path: str) -> Route | None:
        """The most specific route for host and path: host precedence first, then basePath."""
        groups = self.exact.get(host)
        if groups is not None:
            for route in groups:
                if route.matches_path(path):
                    return route
        if self.wildcard:
            dot = host.find(".")
            while dot != -1:
                for route in self.wildcard.get(host[dot:], ()):
                    if route.matches_path(path):
                        return route
                dot = host.find(".", dot + 1)
        for route in self.any_host:
            if route.matches_path(path):
                return route
        return None

    def key(self, presented: str) -> Key | None:
        """The key whose hash matches the presented value, if any."""
        digest = hash_key(presented)
        found = self.keys.get(digest)
        # The dict lookup only reveals timing about a SHA-256 output; the final equality is
        # constant-time anyway so no byte-by-byte comparison of key material ever happens.
        if found is not None and hmac.compare_digest(found.key_hash, digest):
            return found
        return None


def _lifecycle_headers(rp: RoutePolicy) -> tuple[Headers, Headers]:
    successor: Headers = ()
    if rp.successor_url:
        successor = (("Link", f'<{rp.successor_url}>; rel="successor-version"'),)
    if rp.stage is not Stage.DEPRECATED:
        return (), successor
    out: list[tuple[str, str]] = []
    if rp.deprecated_since is not None:
        # RFC 9745: a Structured Field Date, "@" + epoch seconds.
        out.append(("Deprecation", f"@{int(rp.deprecated_since.timestamp())}"))
    if rp.sunset is not None:
        out.append(("Sunset", http_date(rp.sunset.timestamp())))
    out.extend(successor)
    if rp.docs_url:
        out.append(("Link", f'<{rp.docs_url}>; rel="deprecation"; type="text/html"'))
    return tuple(out), successor


def _challenge(rp: RoutePolicy) -> str:
    if rp.credential_scheme:
        return f'{rp.credential_scheme} realm="tollplane"'
    # No scheme: the key is a bare header value; name the header so clients know where it goes.
    return f'ApiKey realm="tollplane", header="{rp.credential_header}"'


def _route(rp: RoutePolicy) -> Route:
    parts = urlsplit(rp.upstream_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"route {rp.api}: upstream URL {rp.upstream_url!r} is not http(s)")
    if not rp.base_path.startswith("/"):
        raise ValueError(f"route {rp.api}: basePath {rp.base_path!r} must start with '/'")
    lifecycle, successor = _lifecycle_headers(rp)
    return Route(
        api=rp.api,
        version=rp.version,
        base_path=rp.base_path if rp.base_path == "/" else rp.base_path.rstrip("/"),
        methods=frozenset(m.upper() for m in rp.methods),
        stage=rp.stage,
        sunset=_epoch(rp.sunset),
        successor_url=rp.successor_url,
        docs_url=rp.docs_url,
        upstream_origin=f"{parts.scheme}://{parts.netloc}",
        upstream_path=parts.path.rstrip("/"),
        timeout_seconds=rp.timeout_seconds,
        credential_header=rp.credential_header.lower(),
        credential_scheme=rp.credential_scheme.lower(),
        www_authenticate=_challenge(rp),
        log_headers=tuple(h.lower() for h in rp.log_headers),
        log_query=rp.log_query,
        errors=rp.errors,
        lifecycle_headers=lifecycle,
        successor_headers=successor,
    )


def _plan(pp: PlanPolicy) -> Plan:
    parts = []
    if pp.quota is not None and pp.overage is not Overage.CHARGE:
        parts.append(f'"quota";q={pp.quota.limit};w={PERIOD_SECONDS[pp.quota.period]}')
    if pp.rate is not None:
        parts.append(f'"rate";q={pp.rate.limit};w={pp.rate.window_seconds}')
    return Plan(pp, pp.grace_days * 86400.0, ", ".join(parts))


def build(policy: Policy, now: float | None = None) -> PolicyIndex:
    """Index a policy. Raises ValueError when it cannot be served (the old one stays)."""
    index = PolicyIndex(revision=policy.revision, loaded_at=time.time() if now is None else now)
    for rp in policy.routes:
        route = _route(rp)
        index.routes += 1
        if not rp.hostnames:
            index.any_host.append(route)
        for hostname in rp.hostnames:
            host = hostname.lower()
            if host.startswith("*."):
                index.wildcard.setdefault(host[1:], []).append(route)
            else:
                index.exact.setdefault(host, []).append(route)
    for group in (*index.exact.values(), *index.wildcard.values(), index.any_host):
        # Longest basePath first; stable, so among equals the compiler's order decides.
        group.sort(key=lambda r: -len(r.base_path) if r.base_path != "/" else 0)
    index.plans = {name: _plan(pp) for name, pp in policy.plans.items()}
    index.tenants = {
        name: Tenant(
            name=tp.name,
            plan=tp.plan,
            suspended=tp.suspended,
            entitlements=tp.entitlements,
            trial_ends=_epoch(tp.trial_ends),
            paid_through=_epoch(tp.paid_through),
            credit_micros=tp.credit_micros,
        )
        for name, tp in policy.tenants.items()
    }
    index.keys = {
        digest: Key(digest, kp.tenant, kp.id, _epoch(kp.expires))
        for digest, kp in policy.keys.items()
    }
    return index
