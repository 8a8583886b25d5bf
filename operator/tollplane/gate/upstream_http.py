"""A lean HTTP/1.1 client transport for httpx: asyncio Protocols and the httptools parser.

httpx's default transport (httpcore) costs several times the CPU of the gate's whole decision
chain per proxied call, and one of its pools collapses under concurrency (encode/httpx#3215).
This transport keeps httpx's API (requests, streamed responses, exceptions) and does the
HTTP/1.1 work itself: one keep-alive connection pool per (host, port), each connection an
``asyncio.Protocol`` feeding an ``httptools.HttpResponseParser``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

# Unread response bytes above which the socket stops being read (flow control).
HIGH_WATER = 256 * 1024
# A chunked request body (httpx sets Transfer-Encoding for streams without a length).
CHUNKED = -1
DEFAULT_LIMITS = httpx.Limits(
    max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30.0
)
Timeouts = dict[str, float | None]


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx transport speaking HTTP/1.1 over plain TCP with pooled keep-alive connections.

    Only ``http://`` URLs are served here; ``https://`` (and any other scheme) is delegated to
    a wrapped ``httpx.AsyncHTTPTransport`` with the same limits.  Per (host, port): at most
    ``max_connections`` requests in flight (a request waits up to the pool timeout for a slot,
    then raises ``httpx.PoolTimeout``), at most ``max_keepalive_connections`` idle connections,
    each dropped after ``keepalive_expiry`` seconds idle or when the server closes it.
    """

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._pools: dict[tuple[str, int], _Pool] = {}
        # trust_env=False: no certificate settings from the environment, as the gate's
        # httpx clients had.
        self._fallback = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response with its body still streaming."""
        url = request.url
        if url.scheme != "http":
            return await self._fallback.handle_async_request(request)
        key = (url.host, url.port or 80)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(*key, self._limits)
        return await pool.send(request)

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await self._fallback.aclose()


def _encode_head(request: httpx.Request) -> tuple[bytes, int | None]:
    """The request line and headers as they go on the wire, and how the body is framed:
    its Content-Length, ``CHUNKED``, or None when there is no body."""
    raw = request.headers.raw
    head = b"\r\n".join(
        [
            b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path),
            *[b"%s: %s" % header for header in raw],
            b"",
            b"",
        ]
    )
    # A CR or LF inside the target, a name or a value would let a caller inject headers or a
    # second request: there must be exactly one line break per line.
    if head.count(b"\n") != len(raw) + 2 or head.count(b"\r") != len(raw) + 2:
        raise httpx.LocalProtocolError(
            "line break in the request target or headers", request=request
        )
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is not None and chunked:
        # The upstream would frame by Transfer-Encoding, we by Content-Length: smuggling.
        raise httpx.LocalProtocolError("both Content-Length and Transfer-Encoding", request=request)
    if length is not None:
        if not length.isdigit():
            raise httpx.LocalProtocolError(f"bad Content-Length {length!r}", request=request)
        return head, int(length) or None
    return head, CHUNKED if chunked else None


class _Pool:
    """Connections to one (host, port)."""

    def __init__(self, host: str, port: int, limits: httpx.Limits) -> None:
        self._host, self._port = host, port
        self._slots = asyncio.Semaphore(limits.max_connections or sys.maxsize)
        self._max_idle = (
            sys.maxsize
            if limits.max_keepalive_connections is None
            else limits.max_keepalive_connections
        )
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 1e18
        self._idle: deque[_Connection] = deque()  # oldest first
        self._open: set[_Connection] = set()

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on an idle connection or a new one; hold a slot until the response
        is closed."""
        head, framing = _encode_head(request)
        timeouts: Timeouts = request.extensions.get("timeout", {})
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection in the pool", request=request) from exc
        try:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await conn.exchange(request, head, framing, timeouts, self)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # The server may close an idle connection just as we reuse it.  Retry once
                    # on a new connection, but only when nothing of the response arrived and
                    # the request has no body (a body stream cannot be replayed).
                    if framing is not None or not conn.pristine:
                        raise
            conn = await self._connect(request, timeouts.get("connect"))
            return await conn.exchange(request, head, framing, timeouts, self)
        except BaseException:
            self._slots.release()
            raise

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection still open, dropping expired ones."""
        deadline = time.monotonic() - self._expiry
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_since < deadline:
                # Every connection left of this one has been idle even longer.
                conn.close()
                while self._idle:
                    self._idle.pop().close()
                return None
            if conn.usable:
                return conn
        return None

    async def _connect(self, request: httpx.Request, seconds: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._open), self._host, self._port
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(
                f"connecting to {self._host}:{self._port} timed out", request=request
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return conn

    def release(self, conn: _Connection) -> None:
        """Give the slot back; keep ``conn`` for the next request if it is reusable."""
        self._slots.release()
        if not conn.reusable:
            conn.close()
            return
        conn.park()
        self._idle.append(conn)
        if len(self._idle) > self._max_idle:
            self._idle.popleft().close()

    def close(self) -> None:
        """Close every connection."""
        for conn in list(self._open):
            conn.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Connection(asyncio.Protocol):
    """One TCP connection: one request at a time, its response parsed as bytes arrive."""

    _transport: asyncio.Transport

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: set[_Connection]) -> None:
        self._loop = loop
        self._registry = registry
        self._waiter: asyncio.Future[bool] | None = None
        self._write_paused = False
        self._read_paused = False
        self.idle_since = 0.0
        # The exchange in progress; no parser means the connection is idle.
        self._parser: httptools.HttpResponseParser | None = None
        self._request: httpx.Request | None = None
        self._head_request = False
        self._status = 0
        self._reason = b""
        self._version = b"HTTP/1.1"
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._received = False
        self._error: httpx.TransportError | None = None

    # --- state seen by the pool -----------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Still open: the server did not close it while it was idle."""
        return not self._transport.is_closing()

    @property
    def pristine(self) -> bool:
        """No byte of the current response has arrived."""
        return not self._received

    @property
    def reusable(self) -> bool:
        """The whole response was read, the parser is at a message boundary and both sides
        want to keep the connection."""
        return (
            self._complete
            and not self._chunks
            and self._keep_alive
            and self._error is None
            and not self._transport.is_closing()
        )

    def park(self) -> None:
        """End the exchange: the connection is idle from now on."""
        self._parser = self._request = None
        self.idle_since = time.monotonic()

    def close(self) -> None:
        """Close the socket (buffered writes are flushed first)."""
        self._transport.close()

    # --- request --------------------------------------------------------------------------

    async def exchange(
        self,
        request: httpx.Request,
        head: bytes,
        framing: int | None,
        timeouts: Timeouts,
        pool: _Pool,
    ) -> httpx.Response:
        """Send ``request`` and wait for the final response's headers."""
        self._begin(request)
        read_timeout = timeouts.get("read")
        try:
            if self._transport.is_closing():
                raise httpx.RemoteProtocolError(
                    "connection closed before the request was sent", request=request
                )
            self._transport.write(head)
            if framing is not None:
                await self._send_body(request, framing, timeouts.get("write"))
            while not self._headers_done:
                if self._error is not None:
                    raise self._error
                if not await self._wait(read_timeout):
                    raise httpx.ReadTimeout("timed out waiting for the response", request=request)
        except BaseException:
            self.close()
            raise
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=_ResponseStream(pool, self, read_timeout),
            extensions={"http_version": self._version, "reason_phrase": self._reason},
        )

    def _begin(self, request: httpx.Request) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._request = request
        self._head_request = request.method == "HEAD"
        self._headers_done = self._complete = self._keep_alive = self._received = False
        self._chunks = []
        self._buffered = 0
        self._error = None

    async def _send_body(self, request: httpx.Request, framing: int, seconds: float | None) -> None:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        sent = 0
        async for chunk in request.stream:
            if not chunk:
                continue  # an empty chunk would end a chunked body
            if self._transport.is_closing():
                # The server answered early or hung up: what it said is read next.
                return
            if framing == CHUNKED:
                self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                sent += len(chunk)
                if sent > framing:
                    raise httpx.LocalProtocolError(
                        "request body longer than its Content-Length", request=request
                    )
                self._transport.write(chunk)
            while self._write_paused and not self._transport.is_closing():
                if not await self._wait(seconds):
                    raise httpx.WriteTimeout("timed out sending the request", request=request)
        if framing == CHUNKED:
            if not self._transport.is_closing():
                self._transport.write(b"0\r\n\r\n")
        elif sent != framing:
            # Sending less would leave the upstream waiting and the connection out of step.
            raise httpx.LocalProtocolError(
                "request body shorter than its Content-Length", request=request
            )

    # --- response -------------------------------------------------------------------------

    async def read(self, seconds: float | None) -> bytes:
        """The response body bytes that arrived since the last call; b"" at its end."""
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            if not await self._wait(seconds):
                raise httpx.ReadTimeout("timed out reading the response", request=self._request)
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _wait(self, seconds: float | None) -> bool:
        """Wait for the next event on the connection; False if ``seconds`` passed first."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        timer = None if seconds is None else self._loop.call_later(seconds, _expire, waiter)
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the new connection."""
        # A cast, not a check: uvloop's transports do not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; pause reading when the reader falls behind."""
        if self._parser is None:
            # Bytes nobody asked for: the server is out of step, never reuse this connection.
            self._transport.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._transport.close()
            if not self._complete:
                self._fail(httpx.RemoteProtocolError(f"bad response: {exc}", request=self._request))
        if self._buffered > HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        """End a body delimited by the connection's close, or fail the exchange."""
        self._registry.discard(self)
        if self._parser is not None and not self._complete:
            if exc is not None:
                self._fail(httpx.ReadError(str(exc) or type(exc).__name__, request=self._request))
            elif self._headers_done and not any(
                name.lower() in (b"content-length", b"transfer-encoding")
                for name, _ in self._headers
            ):
                self._complete = True  # neither length nor chunking: the close ends the body
            else:
                self._fail(
                    httpx.RemoteProtocolError(
                        "server closed the connection before a complete response",
                        request=self._request,
                    )
                )
        self._wake()

    def pause_writing(self) -> None:
        """The socket's send buffer is full: hold the request body."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The send buffer drained."""
        self._write_paused = False
        self._wake()

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A response starts (after an interim 1xx, the final one)."""
        if self._headers_done:
            # A second response to one request: stop parsing, the connection is done.
            raise httptools.HttpParserError("unexpected data after the response")
        self._reason = b""
        self._headers = []

    def on_status(self, reason: bytes) -> None:
        """Reason phrase (may come in pieces)."""
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """One response header, raw."""
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Final headers are in: the response can be handed over."""
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status < 200:
            return  # interim (100 Continue, 103 Early Hints): the final response follows
        self._status = status
        self._version = b"HTTP/" + self._parser.get_http_version().encode()
        self._headers_done = True
        if self._head_request:
            # No body whatever the headers announce; the parser does not know the method.
            self._finish()

    def on_body(self, body: bytes) -> None:
        """Body bytes, chunked transfer coding already removed."""
        if self._complete:
            raise httptools.HttpParserError("body in a response to HEAD")
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        """The final response ended (interim ones end here too: ignored)."""
        if self._headers_done and not self._complete:
            self._finish()

    def _finish(self) -> None:
        assert self._parser is not None
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()


class _ResponseStream(httpx.AsyncByteStream):
    """A response body as it arrives; closing it returns the connection to its pool."""

    def __init__(self, pool: _Pool, conn: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self._conn.read(self._timeout):
            yield chunk

    async def aclose(self) -> None:
        """Release the connection (closed unless the whole body was read)."""
        if not self._closed:
            self._closed = True
            self._pool.release(self._conn)
