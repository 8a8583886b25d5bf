"""The gate's ASGI applications: gather facts from the request, decide, apply the decision.

No framework: a request is turned into :class:`~tollplane.gate.decide.Facts`, the pure chain
decides, the counters are consulted once, and the answer is either a problem body, a 200 for
a forward-auth check, or the upstream's streamed response.  Everything observable (access log
line, metrics) is recorded in one place at the end of each call.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tollplane.api.reasons import Reason
from tollplane.gate import accesslog
from tollplane.gate.counters import Counters, CountersUnavailable
from tollplane.gate.decide import (
    Decision,
    Facts,
    Pending,
    conclude,
    evaluate,
    not_found,
    unavailable,
    upstream_failed,
)
from tollplane.gate.forward_auth import is_check, original
from tollplane.gate.loader import PolicyHolder
from tollplane.gate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tollplane.gate.metrics import Metrics
from tollplane.gate.proxy import Forwarded, Upstreams, request_headers
from tollplane.gate.settings import Settings

log = logging.getLogger("tollplane.gate")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(given: str | None) -> str:
    """The caller's X-Request-Id when it is sane (log-safe), else a new random one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)


def _host(value: str) -> str:
    """Host header without port, lower case ("[::1]:8080" -> "[::1]")."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def _encode(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]


async def _answer(send: Send, decision: Decision, request_id: str) -> int:
    headers = _encode(decision.headers)
    headers += [
        (b"x-request-id", request_id.encode()),
        (b"content-length", str(len(decision.body)).encode()),
    ]
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": decision.body})
    return len(decision.body)


class GateApp:
    """API traffic: proxied calls (proxy mode) and the check endpoint (both modes)."""

    def __init__(
        self,
        settings: Settings,
        holder: PolicyHolder,
        *,
        counters: Counters,
        upstreams: Upstreams | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.counters = counters
        self.upstreams = upstreams
        self.metrics = metrics
        self.clock = clock

    async def _decide(self, facts: Facts, now: float) -> tuple[Decision, str | None]:
        """The decision, and a note when the counters could not be consulted."""
        outcome = evaluate(self.holder.index, facts, now)
        if not isinstance(outcome, Pending):
            return outcome, None
        if not outcome.checks:
            return conclude(outcome, (), facts), None
        try:
            results = await self.counters.check(outcome.checks, now)
        except CountersUnavailable:
            if self.settings.redis_failure == "closed":
                self.metrics.counters_unavailable.labels("denied").inc()
                return unavailable(outcome, facts), "unavailable"
            # Fail open: the call goes through unmetered; the store logged the outage.
            self.metrics.counters_unavailable.labels("allowed").inc()
            return conclude(outcome, None, facts), "unavailable"
        return conclude(outcome, results, facts), None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI HTTP request."""
        if scope["type"] != "http":
            return  # no lifespan, no websockets: the server is configured without them
        started = time.perf_counter()
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        request_id = _request_id(headers.get("x-request-id"))
        method: str = scope["method"]
        path: str = scope["path"]
        query = scope["query_string"].decode("latin-1")
        check = is_check(path)
        if check:
            call = original(method, path, query, headers)
            method, path, query = call.method, call.path, call.query
            host = _host(call.host)
        else:
            host = _host(headers.get("host", ""))
        facts = Facts(method, host, path, headers, request_id)
        now = self.clock()
        if not check and self.settings.mode == "forward-auth":
            decision, note = not_found(facts), None
        else:
            decision, note = await self._decide(facts, now)

        forwarded: Forwarded | None = None
        bytes_out = 0
        try:
            if not decision.allowed:
                bytes_out = await _answer(send, decision, request_id)
            elif check:
                decision = self._identify(decision, request_id)
                bytes_out = await _answer(send, decision, request_id)
            else:
                raw_path = scope.get("raw_path") or path.encode()
                forwarded = await self._forward(
                    scope,
                    receive,
                    send,
                    decision=decision,
                    facts=facts,
                    raw_path=raw_path.decode("latin-1"),
                    query=query,
                )
                if forwarded.error is not None:
                    decision = upstream_failed(decision, forwarded.error, facts)
                    bytes_out = await _answer(send, decision, request_id)
                else:
                    bytes_out = forwarded.bytes_out
        finally:
            self._record(
                decision,
                facts,
                query=query,
                check=check,
                note=note,
                forwarded=forwarded,
                bytes_out=bytes_out,
                started=started,
                scope=scope,
            )

    def _identify(self, decision: Decision, request_id: str) -> Decision:
        """An allowed check: 200 with who the caller is, for the proxy to pass upstream."""
        route = decision.route
        identity = (
            ("X-Tollplane-Tenant", decision.tenant or ""),
            ("X-Tollplane-Key-Id", decision.key_id or ""),
            ("X-Tollplane-Plan", decision.plan or ""),
            ("X-Tollplane-Api", route.api if route else ""),
        )
        return Decision(
            status=200,
            reason=Reason.ALLOWED,
            headers=decision.headers + identity,
            route=route,
            tenant=decision.tenant,
            plan=decision.plan,
            key_id=decision.key_id,
            overage=decision.overage,
        )

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        decision: Decision,
        facts: Facts,
        raw_path: str,
        query: str,
    ) -> Forwarded:
        route = decision.route
        # Allowed calls always have a route; proxy mode always has upstreams.
        assert route is not None
        assert self.upstreams is not None
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        upstream_headers = request_headers(
            raw,
            credential_header=route.credential_header.encode(),
            client=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            host=facts.headers.get("host", ""),
            add=[
                (b"x-request-id", facts.request_id.encode()),
                (b"x-tollplane-tenant", (decision.tenant or "").encode()),
                (b"x-tollplane-key-id", (decision.key_id or "").encode()),
                (b"x-tollplane-plan", (decision.plan or "").encode()),
            ],
        )
        has_body = "transfer-encoding" in facts.headers or facts.headers.get(
            "content-length", "0"
        ) not in ("", "0")
        return await self.upstreams.forward(
            method=facts.method,
            url=route.upstream_target(facts.path, raw_path, query),
            headers=upstream_headers,
            has_body=has_body,
            timeout_seconds=route.timeout_seconds,
            receive=receive,
            send=send,
            extra_response_headers=[
                *_encode(decision.headers),
                (b"x-request-id", facts.request_id.encode()),
            ],
        )

    def _record(
        self,
        decision: Decision,
        facts: Facts,
        *,
        query: str,
        check: bool,
        note: str | None,
        forwarded: Forwarded | None,
        bytes_out: int,
        started: float,
        scope: Scope,
    ) -> None:
        elapsed = time.perf_counter() - started
        route = decision.route
        api = route.api if route else ""
        status = forwarded.status if forwarded and forwarded.status else decision.status
        self.metrics.requests.labels(api, decision.tenant or "", str(status), decision.reason).inc()
        self.metrics.duration.labels(api).observe(elapsed)
        if forwarded and forwarded.upstream_seconds is not None:
            self.metrics.upstream.labels(api).observe(forwarded.upstream_seconds)
        if decision.overage:
            self.metrics.overage.labels(api, decision.tenant or "").inc()
        client = scope.get("client")
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "requestId": facts.request_id,
            "mode": "check" if check else "proxy",
            "api": api or None,
            "tenant": decision.tenant,
            "plan": decision.plan,
            "keyId": decision.key_id,
            "method": facts.method,
            "host": facts.host,
            "path": facts.path,
            "status": status,
            "reason": decision.reason.value,
            "upstreamStatus": forwarded.upstream_status if forwarded else None,
            "upstreamError": forwarded.error_detail
            if forwarded and forwarded.error_detail
            else None,
            "latencyMs": round(elapsed * 1000, 3),
            "bytesIn": forwarded.bytes_in if forwarded else 0,
            "bytesOut": bytes_out,
            "overage": True if decision.overage else None,
            "counters": note,
            "client": client[0] if client else None,
        }
        if route is not None:
            if route.log_query and query:
                record["query"] = query
            hidden = accesslog.SECRET_HEADERS | {route.credential_header}
            logged = {
                h: facts.headers[h]
                for h in route.log_headers
                if h not in hidden and h in facts.headers
            }
            if logged:
                record["headers"] = logged
        accesslog.write(record)


class AdminApp:
    """Liveness, readiness and metrics, on their own port."""

    def __init__(self, holder: PolicyHolder, metrics: Metrics) -> None:
        self.holder = holder
        self.metrics = metrics

    def _ready(self) -> tuple[int, bytes]:
        index = self.holder.index
        error = self.holder.last_error
        doc: dict[str, Any] = {
            "ready": index is not None,
            "revision": index.revision if index else None,
            "ageSeconds": round(time.time() - index.loaded_at, 3) if index else None,
            "loadErrors": self.holder.errors,
            "lastError": error.message if error else None,
        }
        return (200 if index is not None else 503), json.dumps(doc).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve /healthz, /readyz and /metrics."""
        if scope["type"] != "http":
            return
        path = scope["path"]
        content_type = b"application/json"
        if path == "/healthz":
            status, body = 200, b'{"status":"ok"}'
        elif path == "/readyz":
            status, body = self._ready()
        elif path == "/metrics":
            status, body, content_type = 200, self.metrics.render(), METRICS_CONTENT_TYPE.encode()
        else:
            status, body = 404, b'{"status":"not found"}'
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
