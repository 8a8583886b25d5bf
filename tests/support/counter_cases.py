"""Behaviour every counter store must show, run against MemoryCounters (unit) and
RedisCounters (tests/redis) so the Lua script and the Python code cannot drift apart."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from tollplane.gate.counters import Counters
from tollplane.gate.limits import CounterCheck, CounterResult


def clock() -> float:
    """Now, in whole seconds. Cases read it when they start, not at import: Redis expires
    keys (EXPIREAT) by its own clock, and a session may run a case minutes after import."""
    return float(int(time.time()))


def bucket(key: str, burst: int, per_unit: float, cost: int = 1) -> CounterCheck:
    """A token bucket of ``burst`` units, one unit back every ``per_unit`` seconds."""
    return CounterCheck("rate", key, "bucket", burst, cost, per_unit, window=1)


def fixed(
    key: str, limit: int, expires: float = 0.0, cost: int = 1, enforce: bool = True
) -> CounterCheck:
    """A plain sum up to ``limit``, forgotten at ``expires`` (0 never)."""
    return CounterCheck("quota", key, "fixed", limit, cost, expires, enforce=enforce)


async def _fits(store: Counters, checks: tuple[CounterCheck, ...], now: float) -> list[bool]:
    return [r.fits for r in await store.check(checks, now)]


async def burst_then_refill(store: Counters, p: str) -> None:
    """Burst units fit at once; then one per interval."""
    t0 = clock()
    b = bucket(p + "b", burst=3, per_unit=0.5)
    assert [await _fits(store, (b,), t0) for _ in range(4)] == [[True]] * 3 + [[False]]
    (r,) = await store.check((b,), t0)
    assert (r.remaining, r.retry_after, r.reset) == (0, 1, 2)  # ceil(0.5), ceil(1.5)
    assert await _fits(store, (b,), t0 + 0.5) == [True]
    assert await _fits(store, (b,), t0 + 0.5) == [False]


async def weighted_increments(store: Counters, p: str) -> None:
    """Costs above 1 draw several units at once; a call too big for what is left fails whole."""
    t0 = clock()
    f = fixed(p + "f", limit=10, cost=4)
    results: list[CounterResult] = []
    for _ in range(3):
        results += await store.check((f,), t0)
    assert [(r.fits, r.remaining) for r in results] == [(True, 6), (True, 2), (False, 2)]
    small = fixed(p + "f", limit=10, cost=2)
    assert [(r.fits, r.remaining) for r in await store.check((small,), t0)] == [(True, 0)]


async def all_or_nothing(store: Counters, p: str) -> None:
    """When one enforced counter is full, none of the others is incremented."""
    t0 = clock()
    roomy, tight = fixed(p + "roomy", 100), fixed(p + "tight", 1)
    assert await _fits(store, (roomy, tight), t0) == [True, True]
    assert await _fits(store, (roomy, tight), t0) == [True, False]
    (r,) = await store.check((roomy,), t0)
    assert r.remaining == 98  # 100 - the first call - this one; the denied call took nothing


async def unenforced_counts_past_limit(store: Counters, p: str) -> None:
    """A counter that is not enforced (overage Charge) keeps counting and reports overage."""
    t0 = clock()
    f = fixed(p + "charge", limit=1, enforce=False)
    assert [await _fits(store, (f,), t0) for _ in range(3)] == [[True], [False], [False]]


async def fixed_expires(store: Counters, p: str) -> None:
    """A fixed counter is forgotten at its expiry and reports seconds until then."""
    t0 = clock()
    f = fixed(p + "exp", limit=1, expires=t0 + 60)
    (r,) = await store.check((f,), t0)
    assert (r.fits, r.reset) == (True, 60)
    (r,) = await store.check((f,), t0 + 1)
    assert (r.fits, r.retry_after) == (False, 59)


CASES: list[Callable[[Counters, str], Awaitable[None]]] = [
    burst_then_refill,
    weighted_increments,
    all_or_nothing,
    unenforced_counts_past_limit,
    fixed_expires,
]
