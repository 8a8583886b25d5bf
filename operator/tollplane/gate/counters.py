"""Counter stores: check-and-increment of several counters at once, all or nothing.

A call must fit every enforced counter (rate, quota, credit); if one is full, none is
incremented, so a denied call never consumes anything.  The arithmetic lives in
:mod:`tollplane.gate.limits`; this module only keeps the numbers:

* :class:`MemoryCounters`: a dict, atomic because the event loop runs one check at a time.
  Right for one replica.
* :class:`RedisCounters`: one Lua script, one round trip per decision, shared by every replica.
  When Redis cannot be reached it raises :class:`CountersUnavailable` at once for
  ``retry_interval`` seconds instead of waiting on a dead socket for every call; the app
  then fails open or closed as configured.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tollplane.gate.limits import CounterCheck, CounterResult, describe, step

log = logging.getLogger("tollplane.gate.counters")


class CountersUnavailable(Exception):
    """The counter store cannot answer right now."""


class Counters(Protocol):
    """A counter store."""

    async def check(
        self, checks: tuple[CounterCheck, ...], now: float
    ) -> tuple[CounterResult, ...]:
        """Check every counter and, if the call fits all enforced ones, increment them all."""
        ...  # pragma: no cover

    async def close(self) -> None:
        """Release connections."""
        ...  # pragma: no cover


class MemoryCounters:
    """Counters in this process's memory (one replica; lost on restart)."""

    # Every this many checks, expired keys (past quota periods, idle buckets) are dropped.
    SWEEP_EVERY = 50_000

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires_at or 0)
        self._ops = 0

    def check_sync(self, checks: tuple[CounterCheck, ...], now: float) -> tuple[CounterResult, ...]:
        """:meth:`check` without the coroutine: there is no I/O to wait for."""
        olds: list[float | None] = []
        steps: list[tuple[float, bool]] = []
        for c in checks:
            entry = self._values.get(c.key)
            current = entry[0] if entry and (not entry[1] or entry[1] > now) else None
            olds.append(current)
            steps.append(step(c, current, now))
        fits_all = all(fits or not c.enforce for c, (_, fits) in zip(checks, steps, strict=True))
        if fits_all:
            for c, (new, _) in zip(checks, steps, strict=True):
                self._values[c.key] = (new, new if c.kind == "bucket" else c.param)
        self._ops += 1
        if self._ops % self.SWEEP_EVERY == 0:
            self._sweep(now)
        return tuple(
            describe(c, new if fits_all else old, fits, now)
            for c, old, (new, fits) in zip(checks, olds, steps, strict=True)
        )

    async def check(
        self, checks: tuple[CounterCheck, ...], now: float
    ) -> tuple[CounterResult, ...]:
        """Check and increment atomically (no await inside, so no interleaving)."""
        return self.check_sync(checks, now)

    def _sweep(self, now: float) -> None:
        expired = [k for k, (_, exp) in self._values.items() if exp and exp <= now]
        for k in expired:
            del self._values[k]

    async def close(self) -> None:
        """Nothing to release."""


# Twin of limits.step() for every key, then all-or-nothing writes. Values travel back as
# "%.6f" strings: Lua numbers are doubles and Redis would truncate them to integers.
LUA_CHECK = """
local now = tonumber(ARGV[1])
local olds, news, fits = {}, {}, {}
local applied = 1
for i = 1, #KEYS do
  local o = 1 + (i - 1) * 5
  local limit, cost, param = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  local cur = tonumber(redis.call('GET', KEYS[i]))
  olds[i] = cur
  if ARGV[o + 1] == 'bucket' then
    local tat = cur
    if tat == nil or tat < now then tat = now end
    news[i] = tat + cost * param
    fits[i] = news[i] - now <= limit * param + 1e-6
  else
    news[i] = (cur or 0) + cost
    fits[i] = news[i] <= limit
  end
  if ARGV[o + 5] == '1' and not fits[i] then applied = 0 end
end
local out = {applied}
for i = 1, #KEYS do
  local o = 1 + (i - 1) * 5
  local value = olds[i]
  if applied == 1 then
    value = news[i]
    if ARGV[o + 1] == 'bucket' then
      local ttl = math.ceil((value - now) * 1000) + 1000
      redis.call('SET', KEYS[i], string.format('%.6f', value), 'PX', ttl)
    else
      redis.call('INCRBY', KEYS[i], ARGV[o + 3])
      if ARGV[o + 4] ~= '0' then redis.call('EXPIREAT', KEYS[i], ARGV[o + 4]) end
    end
  end
  if value == nil then out[#out + 1] = '' else out[#out + 1] = string.format('%.6f', value) end
  if fits[i] then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
"""


class RedisCounters:
    """Counters in Redis, shared by all gate replicas."""

    MAX_CONNECTIONS = 64

    def __init__(self, url: str, *, timeout: float = 0.25, retry_interval: float = 1.0) -> None:
        # A bounded pool: calls queue for a connection (up to 2 s) instead of opening one
        # socket per concurrent request. One retry: after a Redis restart the first use of
        # each pooled connection fails.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=self.MAX_CONNECTIONS,
            timeout=2.0,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._script = self._client.register_script(LUA_CHECK)
        self._retry_interval = retry_interval
        self._down_until = 0.0
        self._down = False

    async def check(
        self, checks: tuple[CounterCheck, ...], now: float
    ) -> tuple[CounterResult, ...]:
        """Check and increment atomically in one round trip (EVALSHA of :data:`LUA_CHECK`)."""
        if not checks:
            return ()
        if self._down and time.monotonic() < self._down_until:
            raise CountersUnavailable("redis unreachable (waiting before the next attempt)")
        args: list[str | int | float] = [repr(now)]
        for c in checks:
            param = repr(c.param) if c.kind == "bucket" else str(int(c.param))
            args += [c.kind, c.limit, c.cost, param, 1 if c.enforce else 0]
        try:
            raw = await self._script(keys=[c.key for c in checks], args=args)
        except (RedisError, OSError) as exc:
            if not self._down:
                log.error("redis counters unreachable: %s", exc)
            self._down = True
            self._down_until = time.monotonic() + self._retry_interval
            raise CountersUnavailable(str(exc)) from exc
        if self._down:
            log.warning("redis counters reachable again")
            self._down = False
        values = raw[1:]
        out = []
        for i, c in enumerate(checks):
            text = values[2 * i]
            value = float(text) if text else None
            out.append(describe(c, value, bool(values[2 * i + 1]), now))
        return tuple(out)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
