"""The decision chain, table by table: request facts in, status + reason + headers out.

Pure: a fixed clock, the scenario policy from support.gate, and in-memory counters driven
synchronously between the two pure steps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.gate import key_of, scenario_policy
from tollplane.api.reasons import Reason
from tollplane.gate.counters import MemoryCounters
from tollplane.gate.decide import Decision, Facts, Pending, conclude, evaluate, unavailable
from tollplane.gate.index import PolicyIndex, build

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
UP = "http://upstream.test:8080"


@pytest.fixture(scope="module")
def index() -> PolicyIndex:
    return build(scenario_policy(UP, "http://127.0.0.1:9", now=NOW), now=T)


def facts(
    path: str = "/orders",
    tenant: str | None = "acme",
    *,
    method: str = "GET",
    host: str = "gate.test",
    headers: dict[str, str] | None = None,
) -> Facts:
    h = dict(headers or {})
    if tenant is not None:
        h.setdefault("authorization", f"Bearer {key_of(tenant)}")
    return Facts(method, host, path, h, "req-1")


def decide(
    index: PolicyIndex | None, f: Facts, now: float = T, counters: MemoryCounters | None = None
) -> Decision:
    outcome = evaluate(index, f, now)
    if isinstance(outcome, Decision):
        return outcome
    results = (counters or MemoryCounters()).check_sync(outcome.checks, now)
    return conclude(outcome, results, f)


def problem(d: Decision) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(d.body)
    return body


# (id, facts, status, reason, headers that must be present (name -> value or None = any))
TABLE: list[tuple[str, Facts, int, Reason, dict[str, str | None]]] = [
    ("allowed", facts(), 200, Reason.ALLOWED, {"RateLimit": '"rate";r=999;t=1'}),
    ("below basePath", facts("/orders/42/items"), 200, Reason.ALLOWED, {}),
    ("no route", facts("/nothing"), 404, Reason.NO_ROUTE, {}),
    ("basePath segment boundary", facts("/ordersX"), 404, Reason.NO_ROUTE, {}),
    ("dot segments refused", facts("/orders/../admin"), 404, Reason.NO_ROUTE, {}),
    ("draft is invisible", facts("/draft"), 404, Reason.API_DRAFT, {}),
    (
        "retired",
        facts("/old"),
        410,
        Reason.API_RETIRED,
        {"Link": '<https://new.example>; rel="successor-version"'},
    ),
    (
        "deprecated serves with headers",
        facts("/legacy"),
        200,
        Reason.ALLOWED,
        {"Deprecation": "@1735689600", "Sunset": "Tue, 15 Jul 2025 12:00:00 GMT"},
    ),
    (
        "method not allowed",
        facts("/readonly", method="POST"),
        405,
        Reason.METHOD_NOT_ALLOWED,
        {"Allow": "GET"},
    ),
    ("method allowed", facts("/readonly"), 200, Reason.ALLOWED, {}),
    (
        "missing credential",
        facts(tenant=None),
        401,
        Reason.MISSING_CREDENTIAL,
        {"WWW-Authenticate": 'Bearer realm="tollplane"'},
    ),
    (
        "wrong scheme counts as missing",
        facts(tenant=None, headers={"authorization": f"Basic {key_of('acme')}"}),
        401,
        Reason.MISSING_CREDENTIAL,
        {},
    ),
    (
        "scheme is case-insensitive",
        facts(tenant=None, headers={"authorization": f"bearer {key_of('acme')}"}),
        200,
        Reason.ALLOWED,
        {},
    ),
    (
        "unknown key",
        facts(tenant="nobody"),
        401,
        Reason.INVALID_CREDENTIAL,
        {
            "WWW-Authenticate": 'Bearer realm="tollplane", error="invalid_token", '
            'error_description="unknown key"'
        },
    ),
    ("expired key", facts(tenant="expired"), 401, Reason.EXPIRED_CREDENTIAL, {}),
    (
        "custom header without scheme",
        facts("/custom", tenant=None, headers={"x-api-key": key_of("acme")}),
        200,
        Reason.ALLOWED,
        {},
    ),
    (
        "custom header missing",
        facts("/custom"),
        401,
        Reason.MISSING_CREDENTIAL,
        {"WWW-Authenticate": 'ApiKey realm="tollplane", header="X-Api-Key"'},
    ),
    ("suspended", facts(tenant="suspended"), 403, Reason.TENANT_SUSPENDED, {}),
    ("approval pending", facts(tenant="pending"), 403, Reason.APPROVAL_PENDING, {}),
    ("not subscribed", facts(tenant="unsubscribed"), 403, Reason.NOT_SUBSCRIBED, {}),
    ("in trial", facts(tenant="trial"), 200, Reason.ALLOWED, {"Tollplane-Trial-Ends": None}),
    ("trial ended", facts(tenant="trialover"), 402, Reason.TRIAL_ENDED, {}),
    ("never paid, no trial", facts(tenant="neverpaid"), 402, Reason.PAYMENT_OVERDUE, {}),
    (
        "within grace",
        facts(tenant="grace"),
        200,
        Reason.ALLOWED,
        {"Tollplane-Billing-Warning": "payment overdue; access ends Tue, 17 Jun 2025 12:00:00 GMT"},
    ),
    ("beyond grace", facts(tenant="overdue"), 402, Reason.PAYMENT_OVERDUE, {}),
    ("paid up", facts(tenant="paidup"), 200, Reason.ALLOWED, {}),
    ("exact host", facts("/x", host="api.example.com"), 200, Reason.ALLOWED, {}),
    ("wildcard host", facts("/x", host="eu.example.com"), 200, Reason.ALLOWED, {}),
]


@pytest.mark.parametrize(
    ("f", "status", "reason", "headers"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_chain(
    index: PolicyIndex, f: Facts, status: int, reason: Reason, headers: dict[str, str | None]
) -> None:
    d = decide(index, f)
    assert (d.status, d.reason) == (status, reason)
    got = dict(d.headers)
    for name, value in headers.items():
        assert name in got, f"{name} missing from {got}"
        if value is not None:
            assert got[name] == value
    if status != 200:
        body = problem(d)
        assert body["type"] == f"https://tollplane.io/problems/{reason.value}"
        assert body["status"] == status
        assert body["reason"] == reason.value
        assert body["instance"] == "req-1"
        assert got["Content-Type"] == "application/problem+json"


def test_no_policy_is_503() -> None:
    d = decide(None, facts())
    assert (d.status, d.reason) == (503, Reason.NO_POLICY)


def test_sunset_in_the_past_retires_on_time(index: PolicyIndex) -> None:
    later = (NOW + timedelta(days=31)).timestamp()
    assert decide(index, facts("/legacy"), now=later).reason is Reason.API_RETIRED


def test_trial_ends_at_its_timestamp(index: PolicyIndex) -> None:
    ends = (NOW + timedelta(days=7)).timestamp()
    assert decide(index, facts(tenant="trial"), now=ends - 1).reason is Reason.ALLOWED
    assert decide(index, facts(tenant="trial"), now=ends).reason is Reason.TRIAL_ENDED


def test_402_names_plan_and_payment_url(index: PolicyIndex) -> None:
    body = problem(decide(index, facts(tenant="trialover")))
    assert body["plan"] == "paid"
    assert body["tenant"] == "trialover"
    assert body["paymentUrl"] == "https://billing.example.com/pay"


def test_draft_body_does_not_name_the_api(index: PolicyIndex) -> None:
    assert "api" not in problem(decide(index, facts("/draft")))


def test_api_error_text_overrides_default(index: PolicyIndex) -> None:
    body = problem(decide(index, facts("/custom", tenant=None, headers={"x-api-key": "nope"})))
    assert (body["title"], body["detail"]) == ("Bad key", "Ask Bob for a key")


def test_quota_block_is_402_and_consumes_nothing(index: PolicyIndex) -> None:
    c = MemoryCounters()
    got = [decide(index, facts(tenant="metered"), counters=c).status for _ in range(5)]
    assert got == [200, 200, 200, 402, 402]
    d = decide(index, facts(tenant="metered"), counters=c)
    body = problem(d)
    assert body["paymentUrl"] == "https://billing.example.com/upgrade"
    assert body["title"] == "Out of calls"  # the plan's override
    assert dict(d.headers)["RateLimit"].startswith('"quota";r=0;')


def test_quota_throttle_is_429_until_the_period_resets(index: PolicyIndex) -> None:
    c = MemoryCounters()
    assert [decide(index, facts(tenant="throttled"), counters=c).status for _ in range(3)] == [
        200,
        200,
        429,
    ]
    d = decide(index, facts(tenant="throttled"), counters=c)
    assert d.reason is Reason.QUOTA_THROTTLED
    assert dict(d.headers)["Retry-After"] == str(12 * 3600)  # noon -> midnight UTC
    assert problem(d)["retryAfter"] == 12 * 3600
    tomorrow = (NOW + timedelta(days=1)).timestamp()
    assert decide(index, facts(tenant="throttled"), now=tomorrow, counters=c).status == 200


def test_quota_charge_allows_and_flags_overage(index: PolicyIndex) -> None:
    c = MemoryCounters()
    first = decide(index, facts(tenant="charged"), counters=c)
    second = decide(index, facts(tenant="charged"), counters=c)
    assert (first.status, first.overage) == (200, False)
    assert (second.status, second.overage) == (200, True)


def test_rate_limit_429_with_headers(index: PolicyIndex) -> None:
    c = MemoryCounters()
    ok = [decide(index, facts(tenant="ratelimited"), counters=c) for _ in range(2)]
    assert [dict(d.headers)["RateLimit"] for d in ok] == [
        '"rate";r=1;t=30',
        '"rate";r=0;t=60',
    ]
    d = decide(index, facts(tenant="ratelimited"), counters=c)
    h = dict(d.headers)
    assert (d.status, d.reason) == (429, Reason.RATE_LIMITED)
    assert h["Retry-After"] == "30"  # one token drips back every 30 s
    assert h["RateLimit-Policy"] == '"rate";q=2;w=60'
    assert h["RateLimit"] == '"rate";r=0;t=60'
    assert decide(index, facts(tenant="ratelimited"), now=T + 30, counters=c).status == 200


def test_prepaid_credit_draws_down_then_402(index: PolicyIndex) -> None:
    c = MemoryCounters()
    # 1.00 of credit at 0.40 per call: two calls fit, the third does not.
    got = [decide(index, facts(tenant="prepaid"), counters=c).reason for _ in range(3)]
    assert got == [Reason.ALLOWED, Reason.ALLOWED, Reason.CREDIT_EXHAUSTED]


def test_counters_down_fail_open_and_closed(index: PolicyIndex) -> None:
    f = facts(tenant="ratelimited")
    pending = evaluate(index, f, T)
    assert isinstance(pending, Pending)
    assert conclude(pending, None, f).reason is Reason.ALLOWED
    closed = unavailable(pending, f)
    assert (closed.status, closed.reason) == (503, Reason.COUNTERS_UNAVAILABLE)
