"""Gate processes sharing Redis: one quota across replicas; Redis killed mid-run with the
gate failing open or closed; recovery once Redis is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from support.gate import Gate, Upstream, key_of, scenario_policy, write_policy

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def upstream():  # type: ignore[no-untyped-def]
    server = Upstream().start()
    yield server
    server.stop()


def _gates(tmp: Path, upstream: Upstream, *args: str, n: int = 1) -> list[Gate]:
    path = tmp / "policy.json"
    write_policy(path, scenario_policy(upstream.url, "http://127.0.0.1:9"))
    return [Gate(path, tmp / f"gate{i}.log", args).start() for i in range(n)]


def _get(gate: Gate, tenant: str, rid: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key_of(tenant)}"}
    if rid:
        headers["X-Request-Id"] = rid
    return httpx.get(gate.url + "/orders", headers=headers, timeout=5)


def test_quota_is_shared_by_replicas(tmp_path: Path, upstream: Upstream, redis_server) -> None:
    a, b = _gates(tmp_path, upstream, "--redis-url", redis_server.url, n=2)
    try:
        statuses = [_get(g, "metered").status_code for g in (a, b, a, b, a)]
        assert statuses == [200, 200, 200, 402, 402]
    finally:
        a.stop()
        b.stop()


def test_redis_killed_fail_open(tmp_path: Path, upstream: Upstream, redis_server) -> None:
    (gate,) = _gates(tmp_path, upstream, "--redis-url", redis_server.url)
    try:
        assert [_get(gate, "ratelimited").status_code for _ in range(3)] == [200, 200, 429]
        redis_server.kill()
        r = _get(gate, "ratelimited", "open-1")
        assert r.status_code == 200  # allowed, unmetered
        assert "ratelimit" not in r.headers
        assert gate.log_for("open-1")["counters"] == "unavailable"
        assert "redis counters unreachable" in gate.log_path.read_text()
        metrics = httpx.get(gate.admin_url + "/metrics").text
        assert 'tollplane_gate_counters_unavailable_total{action="allowed"}' in metrics
        redis_server.start()  # empty: the old counts died with the process
        deadline = time.monotonic() + 5
        while "ratelimit" not in (r := _get(gate, "ratelimited")).headers:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert r.headers["ratelimit"].startswith('"rate";r=1;')
    finally:
        gate.stop()


def test_redis_killed_fail_closed(tmp_path: Path, upstream: Upstream, redis_server) -> None:
    (gate,) = _gates(
        tmp_path, upstream, "--redis-url", redis_server.url, "--redis-failure", "closed"
    )
    try:
        assert _get(gate, "acme").status_code == 200
        redis_server.kill()
        r = _get(gate, "acme")
        assert r.status_code == 503
        assert r.json()["reason"] == "counters-unavailable"
        assert r.headers["retry-after"] == "1"
        # A call that needs no counters (auth failure) is still answered normally.
        assert _get(gate, "stranger").status_code == 401
        redis_server.start()
        deadline = time.monotonic() + 5
        while _get(gate, "acme").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        gate.stop()
