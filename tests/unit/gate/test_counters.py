"""Counter arithmetic and the in-memory store; calendar periods in UTC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from support.counter_cases import CASES, fixed
from tollplane.api.plans import Period
from tollplane.gate.counters import Counters, MemoryCounters
from tollplane.gate.limits import period_bounds


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_memory_store(case: Callable[[Counters, str], Awaitable[None]]) -> None:
    asyncio.run(case(MemoryCounters(), "t:"))


def test_memory_store_drops_expired_keys() -> None:
    store = MemoryCounters()
    store.SWEEP_EVERY = 2
    store.check_sync((fixed("old", 5, expires=100.0),), 50.0)
    store.check_sync((fixed("new", 5, expires=1000.0),), 200.0)
    assert set(store._values) == {"new"}


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        (Period.DAY, "2025-06-15T23:59:59", "2025-06-15", "2025-06-16"),
        (Period.WEEK, "2025-06-15T12:00:00", "2025-06-09", "2025-06-16"),  # Sunday -> Monday
        (Period.WEEK, "2025-06-16T00:00:00", "2025-06-16", "2025-06-23"),  # Monday
        (Period.MONTH, "2025-02-28T10:00:00", "2025-02-01", "2025-03-01"),
        (Period.MONTH, "2025-12-31T23:00:00", "2025-12-01", "2026-01-01"),
    ],
)
def test_calendar_periods(period: Period, now: str, start: str, end: str) -> None:
    assert period_bounds(period, _utc(now)) == (_utc(start), _utc(end))
