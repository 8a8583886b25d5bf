"""Policy life in a running gate: not ready without one, hot reload under traffic, bad input
never replaces the last good policy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from support.gate import Gate, Upstream, key_of, scenario_policy, write_policy
from tollplane.api.policy import Policy


def test_not_ready_until_a_policy_arrives(scratch: Path, policy: Policy) -> None:
    path = scratch / "policy.json"
    gate = Gate(path, scratch / "gate.log").start(wait_ready=False)
    try:
        assert httpx.get(gate.admin_url + "/readyz").status_code == 503
        r = httpx.get(gate.url + "/orders", headers={"Authorization": f"Bearer {key_of('acme')}"})
        assert r.status_code == 503
        assert r.json()["reason"] == "no-policy"
        assert r.headers["retry-after"] == "1"
        write_policy(path, policy)
        gate.wait_revision(policy.revision)
        assert httpx.get(gate.admin_url + "/readyz").status_code == 200
    finally:
        gate.stop()


def test_hot_reload_under_traffic_fails_no_request(
    scratch: Path, upstream: Upstream, policy: Policy
) -> None:
    path = scratch / "policy.json"
    write_policy(path, policy)
    gate = Gate(path, scratch / "gate.log").start()
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        headers = {"Authorization": f"Bearer {key_of('paidup')}"}
        with httpx.Client(base_url=gate.url, headers=headers, timeout=10) as c:
            while not stop.is_set():
                statuses.append(c.get("/orders/x").status_code)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        revisions = []
        for i in range(1, 9):
            # Each revision differs (more tenants), and every other write is garbage first.
            if i % 2:
                path.write_text('{"routes": "not a list"}')
                time.sleep(0.1)
            new = scenario_policy(upstream.url, "http://127.0.0.1:9", extra_tenants=i * 500)
            write_policy(path, new)
            gate.wait_revision(new.revision)
            revisions.append(new.revision)
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join()
        gate.stop()
    assert len(set(revisions)) == 8
    assert len(statuses) > 100
    assert set(statuses) == {200}


def test_bad_policy_keeps_the_old_one(scratch: Path, policy: Policy) -> None:
    path = scratch / "policy.json"
    write_policy(path, policy)
    gate = Gate(path, scratch / "gate.log").start()
    try:
        bad_upstream = policy.routes[0].model_copy(update={"upstream_url": "unix:/nope"})
        for text in (
            "{ not json",
            '{"routes": [{"api": "x"}]}',  # fails validation
            Policy(routes=[bad_upstream]).sealed().model_dump_json(),  # validates, cannot serve
        ):
            before = httpx.get(gate.admin_url + "/readyz").json()["loadErrors"]
            path.write_text(text)
            deadline = time.monotonic() + 5
            while httpx.get(gate.admin_url + "/readyz").json()["loadErrors"] == before:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        ready = httpx.get(gate.admin_url + "/readyz").json()
        assert ready["revision"] == policy.revision
        assert ready["loadErrors"] == 3
        assert "not http" in ready["lastError"]
        r = httpx.get(gate.url + "/orders", headers={"Authorization": f"Bearer {key_of('acme')}"})
        assert r.status_code == 200
        assert (
            "tollplane_gate_policy_load_errors_total 3.0"
            in httpx.get(gate.admin_url + "/metrics").text
        )
    finally:
        gate.stop()
