"""Proxy mode: forward an allowed call to its upstream and stream the answer back.

One pooled transport serves every upstream (keep-alive connections are reused across
calls): the gate's own HTTP/1.1 transport for httpx (:mod:`tollplane.gate.upstream_http`),
called without an httpx client, so no cookie jar or default headers stand between callers
and upstreams.  Request and response bodies are streamed, never buffered.  Hop-by-hop
headers are dropped both ways (RFC 9110 section 7.6.1), the credential header never leaves the
gate, and headers that identify the caller to the upstream are set by the gate alone, so a
client cannot forge them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tollplane.api.reasons import Reason
from tollplane.gate.upstream_http import UpstreamTransport

log = logging.getLogger("tollplane.gate.proxy")

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Request headers the gate sets itself; a client's own values would be spoofing.
GATE_SET = frozenset(
    {b"host", b"x-request-id", b"x-tollplane-tenant", b"x-tollplane-key-id", b"x-tollplane-plan"}
)


@dataclass
class Forwarded:
    """What happened on the way to the upstream and back."""

    status: int  # status sent to the client (0: the gate must answer with ``error``)
    upstream_status: int | None = None
    error: Reason | None = None
    error_detail: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    upstream_seconds: float | None = None


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers named in Connection are hop-by-hop too."""
    tokens = [
        t.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for t in value.split(b",")
    ]
    return frozenset(tokens)


def request_headers(
    raw: RawHeaders,
    *,
    credential_header: bytes,
    client: str | None,
    scheme: str,
    host: str,
    add: Sequence[tuple[bytes, bytes]],
) -> RawHeaders:
    """Headers sent upstream: client headers minus hop-by-hop, credential and spoofable ones,
    plus X-Forwarded-* and the gate's own identity headers."""
    drop = HOP_BY_HOP | GATE_SET | _connection_tokens(raw) | {credential_header}
    out: RawHeaders = []
    forwarded_for = b""
    forwarded_proto = forwarded_host = None
    for name, value in raw:
        if name in drop:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        if name == b"x-forwarded-proto":
            forwarded_proto = value
        elif name == b"x-forwarded-host":
            forwarded_host = value
        out.append((name, value))
    if client:
        # Append the peer so the chain of proxies stays visible to the upstream.
        peer = client.encode()
        out.append((b"x-forwarded-for", forwarded_for + b", " + peer if forwarded_for else peer))
    elif forwarded_for:
        out.append((b"x-forwarded-for", forwarded_for))
    if forwarded_proto is None:
        out.append((b"x-forwarded-proto", scheme.encode()))
    if forwarded_host is None and host:
        out.append((b"x-forwarded-host", host.encode("latin-1")))
    out.extend(add)
    return out


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> RawHeaders:
    """Upstream response headers minus hop-by-hop ones (the server frames the body itself)."""
    drop = HOP_BY_HOP | _connection_tokens(raw)
    return [(n, v) for n, v in raw if n.lower() not in drop]


async def _body(receive: Receive, counter: Forwarded) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            counter.bytes_in += len(chunk)
            yield chunk
        if not message.get("more_body", False):
            return


class Upstreams:
    """The connection pools shared by every upstream.

    Calls go straight to :class:`UpstreamTransport` (httpx's transport API), not through an
    ``httpx.AsyncClient``: a client keeps a cookie jar, which would replay one caller's
    upstream session cookie on every other caller's request, and adds its default headers
    (``Accept-Encoding: gzip``, ``User-Agent``), which would change what the upstream answers.
    The gate also needs none of a client's redirects, auth or proxy settings. The transport
    replaces httpcore, which cost several times the CPU of the gate's decision per call and
    whose pool collapses under concurrency (encode/httpx#3215).
    """

    def __init__(self) -> None:
        self.transport = UpstreamTransport()  # its default limits are the gate's

    async def forward(
        self,
        *,
        method: str,
        url: str,
        headers: RawHeaders,
        has_body: bool,
        timeout_seconds: float,
        receive: Receive,
        send: Send,
        extra_response_headers: Sequence[tuple[bytes, bytes]],
    ) -> Forwarded:
        """Send the call upstream and stream the answer to ``send``.

        Connection failures and timeouts before the response starts come back as
        ``Forwarded(status=0, error=...)`` for the caller to answer 502/504; a failure
        while the body streams can only cut the response short.
        """
        result = Forwarded(status=0)
        request = httpx.Request(
            method,
            url,
            headers=headers,
            content=_body(receive, result) if has_body else None,
            extensions={"timeout": httpx.Timeout(timeout_seconds).as_dict()},
        )
        started = time.perf_counter()
        try:
            response = await self.transport.handle_async_request(request)
            response.request = request
        except httpx.TimeoutException as exc:
            result.error, result.error_detail = Reason.UPSTREAM_TIMEOUT, type(exc).__name__
            return result
        except httpx.HTTPError as exc:
            result.error, result.error_detail = Reason.UPSTREAM_UNAVAILABLE, type(exc).__name__
            return result
        result.upstream_seconds = time.perf_counter() - started
        result.status = result.upstream_status = response.status_code
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(response.headers.raw)
                    + list(extra_response_headers),
                }
            )
            async for chunk in response.aiter_raw():
                result.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Headers are gone already: all that is left is to cut the response short.
            log.warning("upstream %s failed mid-response: %s", url.partition("?")[0], exc)
            result.error_detail = type(exc).__name__
            raise
        finally:
            await response.aclose()
        return result

    async def close(self) -> None:
        """Close pooled connections."""
        await self.transport.aclose()
