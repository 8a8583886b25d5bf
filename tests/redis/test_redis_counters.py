"""RedisCounters against a real redis-server: the same behaviour as memory, atomic across
replicas, and a fast, clear failure when Redis is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from support.counter_cases import CASES, bucket, clock, fixed
from tollplane.gate.counters import Counters, CountersUnavailable, RedisCounters

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_same_behaviour_as_memory(
    redis_server, case: Callable[[Counters, str], Awaitable[None]]
) -> None:
    async def run() -> None:
        store = RedisCounters(redis_server.url)
        try:
            await case(store, "t:{x}:")
        finally:
            await store.close()

    asyncio.run(run())


def test_atomic_across_replicas(redis_server) -> None:
    """Two gates, 400 concurrent calls on a quota of 150 and a bucket of 1000: exactly 150
    pass, and the denied calls consumed nothing in the bucket."""

    async def run() -> tuple[int, int]:
        t0 = clock()
        a, b = RedisCounters(redis_server.url), RedisCounters(redis_server.url)
        checks = (fixed("q:{t}", 150), bucket("r:{t}", 1000, 1000.0))
        results = await asyncio.gather(*(s.check(checks, t0) for s in [a, b] * 200))
        after = await a.check((bucket("r:{t}", 1000, 1000.0),), t0)
        await a.close()
        await b.close()
        return sum(all(r.fits for r in res) for res in results), after[0].remaining

    passed, bucket_left = asyncio.run(run())
    assert passed == 150
    assert bucket_left == 1000 - 150 - 1


def test_unreachable_fails_fast_then_recovers(redis_server) -> None:
    async def run() -> None:
        t0 = clock()
        store = RedisCounters(redis_server.url, retry_interval=0.3)
        check = (fixed("q:{t}", 10),)
        assert (await store.check(check, t0))[0].remaining == 9
        redis_server.kill()
        with pytest.raises(CountersUnavailable):
            await store.check(check, t0)
        started = time.monotonic()
        with pytest.raises(CountersUnavailable):  # within retry_interval: no network attempt
            await store.check(check, t0)
        assert time.monotonic() - started < 0.05
        redis_server.start()
        await asyncio.sleep(0.35)
        # Counters were lost with the process (no persistence): a fresh count.
        assert (await store.check(check, t0))[0].remaining == 9
        await store.close()

    asyncio.run(run())
