"""Gate benchmark (not in the default run: `make bench-gate`).

One run measures, with wrk at a fixed concurrency against a local nginx upstream that
answers a static 200: the upstream directly, nginx proxy_pass, the gate in proxy mode and
the gate's check endpoint; the gate with 1 and 10,000 tenants (wrk rotates through every
tenant's key) and with in-memory and Redis counters; and the gate's HTTP stack candidates
(uvicorn + uvloop + httptools, the default, vs uvicorn + asyncio + h11, and granian, the
Rust HTTP server, running the same ASGI app on uvloop).

Results are printed as a Markdown table and written to .bench/gate.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.gate import REPO, Gate, free_port, key_of, write_policy
from support.redis import RedisServer
from tollplane.api.apis import Stage
from tollplane.api.keys import hash_key
from tollplane.api.plans import Overage, Period
from tollplane.api.policy import (
    KeyPolicy,
    PlanPolicy,
    Policy,
    QuotaPolicy,
    RatePolicy,
    RoutePolicy,
    TenantPolicy,
)
from tollplane.api.tenants import SubscriptionState

pytestmark = pytest.mark.benchmark

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DURATION = os.environ.get("BENCH_DURATION", "8s")
THREADS = 1


def _need(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if path is None:
        pytest.fail(f"{tool} not found: apt-get install wrk nginx-light (make bench-gate does)")
    return path


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(name: str, url: str, script: Path) -> Result:
    """Run wrk once (after a short warm-up) and parse its latency distribution."""
    base = [_need("wrk"), f"-t{THREADS}", f"-c{CONNECTIONS}", "-s", str(script), "--latency"]
    subprocess.run([*base, "-d2s", url], check=True, capture_output=True)
    out = subprocess.run([*base, f"-d{DURATION}", url], check=True, capture_output=True, text=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return Result(name, rps, p50, p99, int(bad.group(1)) if bad else 0)


def key_script(path: Path, tenants: int) -> Path:
    """A wrk script that sends each request with the next tenant's key, round robin."""
    keys = ",".join(f'"{key_of(f"t{i}")}"' for i in range(tenants))
    path.write_text(
        f"local keys = {{{keys}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        '  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. keys[(i % #keys) + 1]})\n'
        "end\n"
    )
    return path


def bench_policy(upstream: str, tenants: int) -> Policy:
    """One route, a plan whose rate and quota are checked on every call but never bite."""
    route = RoutePolicy(
        api="bench/api", version="v1", base_path="/", stage=Stage.PUBLISHED, upstream_url=upstream
    )
    plan = PlanPolicy(
        name="bench",
        quota=QuotaPolicy(limit=10**12, period=Period.MONTH),
        rate=RatePolicy(limit=10**9, window_seconds=1, burst=10**9),
        overage=Overage.THROTTLE,
    )
    ent = {"bench/api": SubscriptionState.ACTIVE}
    return Policy(
        routes=[route],
        plans={"bench": plan},
        tenants={
            f"t{i}": TenantPolicy(name=f"t{i}", plan="bench", entitlements=ent)
            for i in range(tenants)
        },
        keys={hash_key(key_of(f"t{i}")): KeyPolicy(tenant=f"t{i}", id="k") for i in range(tenants)},
    ).sealed()


class Nginx:
    """An nginx master with one worker, from a config written into its own prefix."""

    def __init__(self, workdir: Path, server_block: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        (workdir / "nginx.conf").write_text(
            f"worker_processes 1;\npid {workdir}/nginx.pid;\ndaemon off;\n"
            f"error_log {workdir}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n"
            f"  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;\n"
            f"  fastcgi_temp_path {workdir}/fcgi; uwsgi_temp_path {workdir}/uwsgi;\n"
            f"  scgi_temp_path {workdir}/scgi;\n{server_block}\n}}\n"
        )
        self.process = subprocess.Popen(
            [
                _need("nginx"),
                "-p",
                str(workdir),
                "-c",
                str(workdir / "nginx.conf"),
                "-e",
                str(workdir / "error.log"),
            ],
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    block = f'  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}'
    nginx = Nginx(tmp_path_factory.mktemp("upstream"), block)
    url = f"http://127.0.0.1:{port}"
    _wait(url)
    yield url
    nginx.stop()


# The HTTP-stack candidate that is not the default: same gate, uvicorn on asyncio + h11.
H11_RUNNER = """
import asyncio, sys
import tollplane.gate.main as m
real = m._config
def h11(app, host, port):
    c = real(app, host, port); c.http = "h11"; return c
m._config = h11
import uvloop
uvloop.new_event_loop = asyncio.new_event_loop
from tollplane.cli import main
sys.exit(main(sys.argv[1:]))
"""

# The other candidate: the same GateApp served by granian (HTTP in Rust, the app on uvloop).
GRANIAN_APP = """
import os
from pathlib import Path
from tollplane.gate import accesslog
from tollplane.gate.app import GateApp
from tollplane.gate.counters import MemoryCounters
from tollplane.gate.loader import FileSource, PolicyHolder
from tollplane.gate.metrics import Metrics
from tollplane.gate.proxy import Upstreams
from tollplane.gate.settings import Settings

accesslog.setup()
gate = None

async def app(scope, receive, send):
    global gate
    if scope["type"] != "lifespan":
        return await gate(scope, receive, send)
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            settings, holder = Settings(policy_source=os.environ["BENCH_POLICY"]), PolicyHolder()
            FileSource(Path(settings.policy_source), holder).start()
            gate = GateApp(settings, holder, counters=MemoryCounters(), upstreams=Upstreams(),
                           metrics=Metrics(holder))
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return
"""


@contextlib.contextmanager
def _candidate(name: str, args: list[str], env: dict[str, str], ready: str) -> Iterator[None]:
    """Run a gate candidate process (stdout, the access log, to a file) until the block ends."""
    with (REPO / ".bench" / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, env={**os.environ, **env}, cwd=REPO)
        try:
            _wait(ready)
            yield
        finally:
            proc.terminate()
            proc.wait(10)


def test_gate_benchmark(tmp_path: Path, upstream: str) -> None:
    results: list[Result] = []
    one = key_script(tmp_path / "one.lua", 1)
    many = key_script(tmp_path / "many.lua", 10_000)
    results.append(wrk("direct to upstream", upstream + "/", one))

    px_port = free_port()
    block = (
        f"  upstream backend {{ server {upstream.removeprefix('http://')}; keepalive 64; }}\n"
        f"  server {{ listen 127.0.0.1:{px_port}; location / {{ proxy_pass http://backend;"
        ' proxy_http_version 1.1; proxy_set_header Connection ""; } }'
    )
    proxy = Nginx(tmp_path / "nginx-proxy", block)
    _wait(f"http://127.0.0.1:{px_port}/")
    results.append(wrk("nginx proxy_pass", f"http://127.0.0.1:{px_port}/", one))
    proxy.stop()

    redis = RedisServer(tmp_path).start()
    try:
        for tenants, script in ((1, one), (10_000, many)):
            policy_dir = tmp_path / f"p{tenants}"
            policy_dir.mkdir()
            write_policy(policy_dir / "policy.json", bench_policy(upstream, tenants))
            for store, args in (("memory", ()), ("redis", ("--redis-url", redis.url))):
                gate = Gate(policy_dir / "policy.json", policy_dir / f"{store}.log", args).start()
                try:
                    label = f"{tenants} tenant{'s' if tenants > 1 else ''}, {store}"
                    results.append(wrk(f"gate proxy ({label})", gate.url + "/", script))
                    results.append(
                        wrk(f"gate check ({label})", gate.url + "/_tollplane/check/", script)
                    )
                finally:
                    gate.stop()
    finally:
        redis.kill()

    # HTTP stack candidates, 1 tenant, memory: uvicorn + asyncio + h11, and granian.
    (REPO / ".bench").mkdir(exist_ok=True)
    runner = tmp_path / "h11_gate.py"
    runner.write_text(H11_RUNNER)
    port, admin = free_port(), free_port()
    h11_args = [sys.executable, str(runner), "gate", "--policy-source", str(tmp_path / "p1")]
    h11_args += ["--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin)]
    with _candidate("h11", h11_args, {}, f"http://127.0.0.1:{admin}/readyz"):
        name = "gate proxy (1 tenant, memory) on asyncio + h11"
        results.append(wrk(name, f"http://127.0.0.1:{port}/", one))
    (tmp_path / "granian_gate.py").write_text(GRANIAN_APP)
    port = free_port()
    granian = [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "asgi",
        "--loop",
        "uvloop",
        "--workers",
        "1",
    ]
    granian += ["--host", "127.0.0.1", "--port", str(port), "--no-ws", "--working-dir"]
    granian += [str(tmp_path), "granian_gate:app"]
    env = {"BENCH_POLICY": str(tmp_path / "p1")}
    with _candidate("granian", granian, env, f"http://127.0.0.1:{port}/_tollplane/check/"):
        for kind, path in (("proxy", "/"), ("check", "/_tollplane/check/")):
            name = f"gate {kind} (1 tenant, memory) on granian + uvloop"
            results.append(wrk(name, f"http://127.0.0.1:{port}{path}", one))

    direct = results[0]
    lines = [
        f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} --latency, {os.cpu_count()} CPUs, "
        "upstream: nginx `return 200`",
        "",
        "| target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.p50_ms - direct.p50_ms:.2f} | {r.p99_ms - direct.p99_ms:.2f} | {r.errors} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    out = REPO / ".bench"
    out.mkdir(exist_ok=True)
    (out / "gate.md").write_text(table + "\n")
    assert all(r.errors == 0 for r in results), table
