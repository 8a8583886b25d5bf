"""Counter arithmetic shared by every store: what a check is, how one step changes a counter.

A store (memory or Redis) keeps one number per key and applies :func:`step` to it; the Redis
Lua script is a line-by-line twin of :func:`step`, and :func:`describe` turns the numbers a
store read and wrote into what the caller reports (remaining units, seconds to reset).  Keeping
the arithmetic here, free of I/O, is what lets both stores be tested against the same tables.

Two kinds of counter exist:

* ``bucket``: a token bucket run as GCRA.  The stored number is the *theoretical arrival time*
  (TAT, epoch seconds); each unit of cost pushes it ``interval`` seconds further; a call fits
  while the TAT stays within ``limit * interval`` of now, so ``limit`` is the burst size.
* ``fixed``: a plain sum of costs that resets when its key expires (``expires_at``, epoch
  seconds; 0 means never).  Calendar quota periods put the period start in the key, so a new
  period starts from zero even before the old key expires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

from tollplane.api.plans import Period

Kind = Literal["bucket", "fixed"]

# GCRA compares float sums of intervals; without slack, 10 calls of 0.1 s would not fit 1.0 s.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class CounterCheck:
    """One counter a call must fit into, and what it costs there."""

    name: str  # "rate", "quota", "credit": the policy name in RateLimit headers
    key: str
    kind: Kind
    limit: int  # bucket: burst size; fixed: units per period
    cost: int
    # bucket: seconds one unit takes to drip back; fixed: epoch seconds the key expires (0 never).
    param: float
    # False: count but never deny (quota under overage Charge), so overage can be reported.
    enforce: bool = True
    # Advertised window in RateLimit-Policy (seconds); 0 keeps the counter out of the headers.
    window: int = 0


@dataclass(frozen=True, slots=True)
class CounterResult:
    """A counter after a check: whether the call fit, and what is left."""

    check: CounterCheck
    fits: bool
    remaining: int
    reset: int  # seconds until the counter is back to its full allowance (RateLimit ``t``)
    retry_after: int  # seconds until this call would fit (0 when it fits)


def step(check: CounterCheck, current: float | None, now: float) -> tuple[float, bool]:
    """The counter's value if this call is applied, and whether the call fits its limit."""
    if check.kind == "bucket":
        tat = now if current is None or current < now else current
        new = tat + check.cost * check.param
        return new, new - now <= check.limit * check.param + _EPSILON
    new = (current or 0) + check.cost
    return new, new <= check.limit


def describe(check: CounterCheck, value: float | None, fits: bool, now: float) -> CounterResult:
    """Report a counter whose stored value is now ``value`` (after the call, if applied)."""
    if check.kind == "bucket":
        backlog = 0.0 if value is None else max(0.0, value - now)
        free = check.limit * check.param - backlog
        remaining = max(0, math.floor(free / check.param + _EPSILON))
        retry = 0 if fits else math.ceil(check.cost * check.param - free - _EPSILON)
        return CounterResult(check, fits, remaining, math.ceil(backlog - _EPSILON), max(0, retry))
    used = value or 0
    remaining = max(0, check.limit - int(used))
    reset = max(0, math.ceil(check.param - now)) if check.param else 0
    return CounterResult(check, fits, remaining, reset, 0 if fits else reset)


def applied(results: tuple[CounterResult, ...]) -> bool:
    """True when the call fit every enforced counter, i.e. the store incremented them all."""
    return all(r.fits or not r.check.enforce for r in results)


@lru_cache(maxsize=64)
def _period_bounds(period: Period, day: int) -> tuple[int, int]:
    start_day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
    if period is Period.DAY:
        start = start_day
        end = start + timedelta(days=1)
    elif period is Period.WEEK:  # ISO weeks start on Monday
        start = start_day - timedelta(days=start_day.weekday())
        end = start + timedelta(days=7)
    else:
        start = start_day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp())


def period_bounds(period: Period, now: float) -> tuple[int, int]:
    """Start and end (epoch seconds, UTC) of the calendar period containing ``now``."""
    return _period_bounds(period, int(now // 86400))


PERIOD_SECONDS = {Period.DAY: 86400, Period.WEEK: 7 * 86400, Period.MONTH: 30 * 86400}
