"""Helpers for the gate's tests: a real upstream on loopback, the gate as a real process,
and a policy that holds one tenant per situation the gate must answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tollplane.api.apis import ErrorText, Stage
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

REPO = Path(__file__).resolve().parents[2]
ACTIVE = SubscriptionState.ACTIVE


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def key_of(tenant: str) -> str:
    """The (test-only, predictable) API key of a scenario tenant."""
    return f"tp_test_key_{tenant}_0123456789abcdef"


# --- upstream -------------------------------------------------------------------------------


@dataclass
class Seen:
    """A request as the upstream received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """An HTTP server on loopback that echoes what it receives (and can be slow or stream)."""

    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the upstream."""
        return f"http://127.0.0.1:{self.port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI: /slow?s=N sleeps; /stream sends 5 chunks; /status/N answers N; else echo
        (with a session cookie for the caller under /login)."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        self.seen.append(Seen(scope["method"], scope["path"], query, headers, body))
        path: str = scope["path"]
        if path.endswith("/slow"):
            await asyncio.sleep(float(query.partition("=")[2] or "2"))
        if path.endswith("/stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            for i in range(5):
                await send(
                    {"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True}
                )
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b""})
            return
        status = int(path.rsplit("/", 1)[1]) if "/status/" in path else 200
        payload = json.dumps(
            {
                "method": scope["method"],
                "path": path,
                "rawPath": (scope.get("raw_path") or b"").decode(),
                "query": query,
                "headers": headers,
                "body": body.decode("latin-1"),
            }
        ).encode()
        session = []
        if path.endswith("/login"):
            cookie = f"session={headers.get('x-tollplane-tenant')}; Path=/"
            session.append((b"set-cookie", cookie.encode()))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"x-upstream", b"echo"),
                    (b"connection", b"keep-alive, x-upstream-hop"),
                    (b"x-upstream-hop", b"must-not-pass"),
                    *session,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def start(self) -> Upstream:
        """Serve in a background thread until :meth:`stop`."""
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)


# --- gate process ---------------------------------------------------------------------------


@dataclass
class Gate:
    """``tollplane gate`` running as a real process on loopback."""

    policy_path: Path
    log_path: Path
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the API port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the admin port."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, wait_ready: bool = True) -> Gate:
        """Start the process and wait until it answers /healthz (and /readyz if asked)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in list(env):
            if name.startswith("TOLLPLANE_"):
                del env[name]
        args = [
            sys.executable,
            "-m",
            "tollplane.cli",
            "gate",
            "--policy-source",
            str(self.policy_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            "--policy-poll-seconds",
            "0.05",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        path = "/readyz" if wait_ready else "/healthz"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gate exited: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.admin_url + path, timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"gate not up: {self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def revision(self) -> str | None:
        """The policy revision the gate serves (from /readyz)."""
        doc: dict[str, Any] = httpx.get(self.admin_url + "/readyz", timeout=2).json()
        return doc["revision"]

    def wait_revision(self, revision: str, timeout: float = 10) -> None:
        """Block until the gate serves ``revision``."""
        deadline = time.monotonic() + timeout
        while self.revision() != revision:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate still on {self.revision()}, wanted {revision}")
            time.sleep(0.02)

    def access_log(self) -> list[dict[str, Any]]:
        """Every access-log line written so far (JSON lines among the gate's own log)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def log_for(self, request_id: str, timeout: float = 5) -> dict[str, Any]:
        """The access-log line of one request (waits for it to be flushed)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log():
                if line.get("requestId") == request_id:
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no access-log line for {request_id}")
            time.sleep(0.02)


def write_policy(path: Path, policy: Policy) -> None:
    """Replace the policy file atomically (write, then rename), as the gate expects."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(policy.model_dump_json(by_alias=True))
    tmp.replace(path)


@contextlib.contextmanager
def running_gate(tmp: Path, policy: Policy, *args: str) -> Iterator[Gate]:
    """A gate process serving ``policy`` (from a file under ``tmp``) for the block."""
    policy_path = tmp / "policy.json"
    write_policy(policy_path, policy)
    gate = Gate(policy_path, tmp / "gate.log", tuple(args)).start()
    try:
        yield gate
    finally:
        gate.stop()


# --- the scenario policy --------------------------------------------------------------------

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def _route(api: str, base: str, upstream: str, **kw: Any) -> RoutePolicy:
    return RoutePolicy(
        api=f"shop/{api}",
        version="v1",
        base_path=base,
        stage=kw.pop("stage", Stage.PUBLISHED),
        upstream_url=upstream,
        **kw,
    )


PLANS = {
    "free": PlanPolicy(name="free", rate=RatePolicy(limit=1000, window_seconds=1, burst=1000)),
    "metered": PlanPolicy(
        name="metered",
        quota=QuotaPolicy(limit=3, period=Period.MONTH),
        overage=Overage.BLOCK,
        payment_url="https://billing.example.com/upgrade",
        errors={"quota-exhausted": ErrorText(title="Out of calls", detail="Plan text")},
    ),
    "throttled": PlanPolicy(
        name="throttled", quota=QuotaPolicy(limit=2, period=Period.DAY), overage=Overage.THROTTLE
    ),
    "charged": PlanPolicy(
        name="charged", quota=QuotaPolicy(limit=1, period=Period.DAY), overage=Overage.CHARGE
    ),
    "ratelimited": PlanPolicy(
        name="ratelimited", rate=RatePolicy(limit=2, window_seconds=60, burst=2)
    ),
    "paid": PlanPolicy(
        name="paid",
        requires_payment=True,
        grace_days=3,
        trial_days=14,
        payment_url="https://billing.example.com/pay",
    ),
    "prepaid": PlanPolicy(
        name="prepaid",
        prepaid=True,
        unit_price_micros=400_000,
        payment_url="https://billing.example.com/topup",
    ),
}


def scenario_tenants(now: datetime) -> dict[str, tuple[str, dict[str, Any]]]:
    """Tenant name -> (plan, extra TenantPolicy fields): one tenant per situation."""
    return {
        "acme": ("free", {}),
        "suspended": ("free", {"suspended": True}),
        "pending": ("free", {"entitlements": {"shop/orders": SubscriptionState.PENDING_APPROVAL}}),
        "unsubscribed": ("free", {"entitlements": {}}),
        "metered": ("metered", {}),
        "throttled": ("throttled", {}),
        "charged": ("charged", {}),
        "ratelimited": ("ratelimited", {}),
        "trial": ("paid", {"trial_ends": now + 7 * DAY}),
        "trialover": ("paid", {"trial_ends": now - DAY}),
        "grace": ("paid", {"paid_through": now - DAY}),
        "overdue": ("paid", {"paid_through": now - 5 * DAY}),
        "paidup": ("paid", {"paid_through": now + 20 * DAY}),
        "prepaid": ("prepaid", {"credit_micros": 1_000_000}),
        "neverpaid": ("paid", {}),
    }


def scenario_policy(
    upstream: str, dead: str, *, extra_tenants: int = 0, now: datetime = NOW
) -> Policy:
    """Routes for every lifecycle and credential setting, plans for every billing rule, and
    one tenant per situation (keys from :func:`key_of`); ``extra_tenants`` adds filler."""
    routes = [
        _route("orders", "/orders", upstream + "/svc"),
        _route("root", "/", upstream, hostnames=["api.example.com"]),
        _route("wild", "/", upstream + "/wild", hostnames=["*.example.com"]),
        _route(
            "legacy",
            "/legacy",
            upstream,
            stage=Stage.DEPRECATED,
            sunset=now + 30 * DAY,
            deprecated_since=datetime(2025, 1, 1, tzinfo=UTC),
            successor_url="https://api.example.com/orders",
            docs_url="https://docs.example.com/migrate",
        ),
        _route("old", "/old", upstream, stage=Stage.RETIRED, successor_url="https://new.example"),
        _route("draft", "/draft", upstream, stage=Stage.DRAFT),
        _route("readonly", "/readonly", upstream, methods=["GET"]),
        _route(
            "custom",
            "/custom",
            upstream,
            credential_header="X-Api-Key",
            credential_scheme="",
            errors={"invalid-credential": ErrorText(title="Bad key", detail="Ask Bob for a key")},
        ),
        _route("slow", "/slowapi", upstream, timeout_seconds=0.3),
        _route("down", "/down", dead),
    ]
    apis = [r.api for r in routes]
    tenants: dict[str, TenantPolicy] = {}
    keys: dict[str, KeyPolicy] = {}
    for name, (plan, extra) in scenario_tenants(now).items():
        extra = dict(extra)
        entitlements = extra.pop("entitlements", dict.fromkeys(apis, ACTIVE))
        tenants[name] = TenantPolicy(name=name, plan=plan, entitlements=entitlements, **extra)
        keys[hash_key(key_of(name))] = KeyPolicy(tenant=name, id="k1")
    keys[hash_key(key_of("expired"))] = KeyPolicy(tenant="acme", id="old", expires=now - DAY)
    for i in range(extra_tenants):
        name = f"filler-{i}"
        tenants[name] = TenantPolicy(
            name=name, plan="free", entitlements=dict.fromkeys(apis, ACTIVE)
        )
        keys[hash_key(key_of(name))] = KeyPolicy(tenant=name, id="k1")
    return Policy(routes=routes, plans=PLANS, tenants=tenants, keys=keys).sealed()
