"""The gate's upstream HTTP/1.1 transport against real servers on loopback.

The server speaks raw HTTP/1.1 from scripted answers (so it can misbehave on purpose), counts
the connections it accepts and records every request as it arrived on the wire.  Every test
runs on both event loops: asyncio and uvloop (production).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvloop

from support.gate import free_port
from tollplane.gate.upstream_http import UpstreamTransport

MiB = 1024 * 1024

# --- the server -----------------------------------------------------------------------------


@dataclass
class Seen:
    """A request as the server read it off the wire."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int


# Answers sent verbatim (to HEAD: only the part before the body).
CANNED = {
    "/cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Trace: a\r\n"
    b"set-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/204": b"HTTP/1.1 204 No Content\r\nX-Trace: b\r\n\r\n",
    "/304": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n',
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    "/http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/conn-close": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    "/garbage": b"HTTP/1.1 two hundred\r\n\r\n",
}
GZIPPED = gzip.compress(b"compressed " * 100)


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1 in its own thread and event loop."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.accepted = 0
        self.open = 0
        self.pushed = 0  # bytes of /firehose the server got rid of so far
        self.resume = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> Server:
        """Listen on a free port."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Drop every connection and stop the loop."""

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def url(self, path: str) -> str:
        """URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.open += 1
        connection, served = self.accepted, 0
        try:
            while line := await reader.readline():
                method, target, _ = line.decode().split(" ", 2)
                headers = []
                while (header := await reader.readline()) != b"\r\n":
                    name, _, value = header.rstrip(b"\r\n").partition(b":")
                    headers.append((name, value.strip()))
                path = target.partition("?")[0]
                if path == "/no-read":
                    await asyncio.sleep(30)  # never reads the body
                body = await _read_body(reader, {n.lower(): v for n, v in headers})
                self.seen.append(Seen(method, target, headers, body, connection))
                served += 1
                if not await self._answer(writer, method, path, served):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str, n: int) -> bool:
        """Answer one request; False to close the connection afterwards."""
        if path in CANNED:
            answer = CANNED[path]
            if method == "HEAD":
                answer = answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
            writer.write(answer)
            await writer.drain()
            # Even after an HTTP/1.0 or "Connection: close" answer the server keeps the
            # connection open: not reusing it is the client's own decision.
            return path != "/garbage"
        if path == "/echo":
            seen = self.seen[-1]
            framing = [
                v for k, v in seen.headers if k.lower() in (b"content-length", b"transfer-encoding")
            ]
            payload = b"%d %s" % (len(seen.body), b",".join(framing))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
        elif path == "/close-delimited":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"the end")
            await writer.drain()
            return False
        elif path == "/gzip":
            half = len(GZIPPED) // 2
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                % (half, GZIPPED[:half], len(GZIPPED) - half, GZIPPED[half:])
            )
        elif path == "/wait-for-client":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await asyncio.get_running_loop().run_in_executor(None, self.resume.wait, 5)
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        elif path == "/slow-head":
            await asyncio.sleep(1)
            writer.write(CANNED["/cl"])
        elif path == "/slow-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
            await writer.drain()
            await asyncio.sleep(1)
            writer.write(b"later")
        elif path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MiB + b"x" * MiB)
        elif path == "/firehose":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * MiB))
            block = b"f" * MiB
            for _ in range(64):
                writer.write(block)
                await writer.drain()
                self.pushed += MiB
        elif path == "/short":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
            await writer.drain()
            return False
        elif path == "/reset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
            await writer.drain()
            await asyncio.sleep(0.1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # linger 0: RST
            return False
        elif path == "/idle-close":
            writer.write(CANNED["/cl"])
            await writer.drain()
            await asyncio.sleep(0.05)
            return False  # closes the kept-alive connection quietly, like an idle timeout
        elif path == "/drop":
            return False  # closes without an answer
        elif path == "/drop-second":
            if n == 2:
                return False
            writer.write(CANNED["/cl"])
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    """The request body, framed strictly by Content-Length or chunked coding."""
    if b"content-length" in headers:
        return await reader.readexactly(int(headers[b"content-length"]))
    if headers.get(b"transfer-encoding") != b"chunked":
        return b""
    body = b""
    while size := int((await reader.readline()).rstrip(b"\r\n"), 16):
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"
    assert await reader.readexactly(2) == b"\r\n", "no CRLF after the last chunk"
    return body


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh scripted server."""
    s = Server().start()
    yield s
    s.stop()


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on the event loop under test."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as r:
            r.run(coro)

    return runner


# --- helpers ----------------------------------------------------------------------------------


def client(**limits: Any) -> httpx.AsyncClient:
    """A client on the transport under test."""
    transport = UpstreamTransport(limits=httpx.Limits(**{"keepalive_expiry": 30.0, **limits}))
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)


async def fetch(
    c: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, bytes]:
    """Send a request and read its raw body the way the proxy does."""
    response = await c.send(c.build_request(method, url, **kwargs), stream=True)
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response, body


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` for up to 5 s."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


# --- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "headers", "body", "reused"),
    [
        (
            "GET",
            "/cl",
            200,
            [
                (b"Content-Length", b"5"),
                (b"X-Trace", b"a"),
                (b"set-cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
            ],
            b"hello",
            True,
        ),
        (
            "GET",
            "/chunked",
            200,
            [(b"Transfer-Encoding", b"chunked")],
            b"hello world",  # the transfer coding is gone
            True,
        ),
        (
            "GET",
            "/close-delimited",
            200,
            [(b"Content-Type", b"text/plain")],
            b"until the end",
            False,
        ),
        ("GET", "/204", 204, [(b"X-Trace", b"b")], b"", True),
        ("GET", "/304", 304, [(b"ETag", b'"v1"'), (b"Content-Length", b"5")], b"", True),
        ("HEAD", "/cl", 200, [(b"Content-Length", b"5"), (b"X-Trace", b"a")], b"", True),
        ("HEAD", "/chunked", 200, [(b"Transfer-Encoding", b"chunked")], b"", True),
        ("GET", "/continue", 200, [(b"Content-Length", b"2")], b"ok", True),
        ("GET", "/hints", 201, [(b"Content-Length", b"0")], b"", True),
        ("GET", "/http10", 200, [(b"Content-Length", b"2")], b"ok", False),
        (
            "GET",
            "/conn-close",
            200,
            [(b"Content-Length", b"2"), (b"Connection", b"close")],
            b"ok",
            False,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_response_framing_and_reuse(
    run: Run,
    server: Server,
    method: str,
    path: str,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    reused: bool,
) -> None:
    async def main() -> None:
        async with client() as c:
            for _ in range(3):
                r, got = await fetch(c, method, server.url(path))
                assert r.status_code == status
                assert r.headers.raw[: len(headers)] == headers  # raw bytes, in order
                assert got == body
                # Whatever precedes it, the next request on the pool gets its own answer.
                r, got = await fetch(c, "GET", server.url("/cl"))
                assert (r.status_code, got) == (200, b"hello")
        assert server.accepted == (1 if reused else 4)

    run(main())


def test_response_extensions(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            r, _ = await fetch(c, "GET", server.url("/http10"))
            assert (r.http_version, r.reason_phrase) == ("HTTP/1.0", "OK")
            r, _ = await fetch(c, "GET", server.url("/204"))
            assert (r.http_version, r.reason_phrase) == ("HTTP/1.1", "No Content")

    run(main())


def test_content_coding_is_kept_in_raw_body(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            r, raw = await fetch(c, "GET", server.url("/gzip"))
            assert raw == GZIPPED  # chunking removed, gzip kept for the caller
            r = await c.get(server.url("/gzip"))
            assert r.content == b"compressed " * 100

    run(main())


def test_body_streams_as_it_arrives(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            request = c.build_request("GET", server.url("/wait-for-client"))
            response = await c.send(request, stream=True)
            parts = []
            started = time.monotonic()
            async for chunk in response.aiter_raw():
                parts.append(chunk)
                server.resume.set()  # the server sends the rest only once the first part is in
            await response.aclose()
            assert parts == [b"first", b"second"]
            assert time.monotonic() - started < 4

    run(main())


def test_slow_reader_pauses_the_socket(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            response = await c.send(c.build_request("GET", server.url("/firehose")), stream=True)
            await asyncio.sleep(0.5)
            # Unpaused, the client would have swallowed all 64 MiB by now.
            assert server.pushed < 32 * MiB
            total = 0
            async for chunk in response.aiter_raw():
                assert chunk == b"f" * len(chunk)
                total += len(chunk)
            await response.aclose()
            assert total == 64 * MiB
            _, got = await fetch(c, "GET", server.url("/cl"))
            assert got == b"hello"
        assert server.accepted == 1

    run(main())


@pytest.mark.parametrize("path", ["/cl", "/big"])
def test_response_closed_early_closes_its_connection(run: Run, server: Server, path: str) -> None:
    async def main() -> None:
        async with client() as c:
            response = await c.send(c.build_request("GET", server.url(path)), stream=True)
            if path == "/big":
                async for _ in response.aiter_raw():
                    break
            # else: the 5 bytes of /cl are in, but nobody read them
            await response.aclose()
            await fetch(c, "GET", server.url("/cl"))
            await wait_until(lambda: server.open == 1)
        assert server.accepted == 2

    run(main())


# --- requests ---------------------------------------------------------------------------------


def test_request_line_and_headers_as_given(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            headers = [(b"X-First", b"1"), (b"x-second", b"two words"), (b"X-First", b"3")]
            await fetch(c, "GET", server.url("/cl?a=1&b=%2F"), headers=headers)
        seen = server.seen[0]
        assert (seen.method, seen.target) == ("GET", "/cl?a=1&b=%2F")
        assert seen.headers[0] == (b"Host", f"127.0.0.1:{server.port}".encode())
        assert [h for h in seen.headers if h[0].lower().startswith(b"x-")] == headers

    run(main())


async def _pieces(total: int, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, total, size):
        yield bytes([65 + offset // size % 26]) * min(size, total - offset)
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("streamed", "size", "framing"),
    [
        (False, 3 * MiB, b"3145728"),
        (True, 3 * MiB + 7, b"chunked"),
        (False, 0, b"0"),
        (True, 0, b"chunked"),
    ],
    ids=["content-length", "chunked", "empty-length", "empty-chunked"],
)
def test_request_body_arrives_intact(
    run: Run, server: Server, streamed: bool, size: int, framing: bytes
) -> None:
    async def main() -> None:
        expected = b"".join([piece async for piece in _pieces(size, 65536)])
        async with client() as c:
            for _ in range(2):
                body = _pieces(size, 65536) if streamed else expected
                _, got = await fetch(c, "POST", server.url("/echo"), content=body)
                assert got == b"%d %s" % (size, framing)
                assert server.seen[-1].body == expected
        assert server.accepted == 1

    run(main())


def test_body_shorter_than_its_content_length_fails(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            with pytest.raises(httpx.LocalProtocolError):
                await fetch(
                    c,
                    "POST",
                    server.url("/echo"),
                    content=_pieces(10, 5),
                    headers={"Content-Length": "20"},
                )

    run(main())


def test_header_injection_is_refused(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            with pytest.raises(httpx.LocalProtocolError):
                await fetch(c, "GET", server.url("/cl"), headers={"X-A": "a\r\nX-Evil: 1"})
            await fetch(c, "GET", server.url("/cl"))
        assert [dict(s.headers).get(b"X-Evil") for s in server.seen] == [None]

    run(main())


def test_https_is_delegated_to_httpx(run: Run) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    first_bytes: list[bytes] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            first_bytes.append(conn.recv(5))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    async def main() -> None:
        async with client() as c:
            with pytest.raises(httpx.HTTPError):
                await c.get(f"https://127.0.0.1:{listener.getsockname()[1]}/", timeout=5)

    try:
        run(main())
        thread.join(5)
    finally:
        listener.close()
    assert first_bytes[0][:2] == b"\x16\x03"  # a TLS handshake, not "GET /"


# --- connection pool --------------------------------------------------------------------------


def test_connection_closed_by_server_while_idle_is_not_used(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            await fetch(c, "GET", server.url("/idle-close"))
            await wait_until(lambda: server.open == 0)
            await asyncio.sleep(0.05)
            # A body cannot be replayed: this only passes if the dead connection was skipped.
            _, got = await fetch(c, "POST", server.url("/echo"), content=b"abc")
            assert got == b"3 3"
        assert server.accepted == 2

    run(main())


@pytest.mark.parametrize(
    ("method", "content", "retried"),
    [("GET", None, True), ("POST", b"abc", False)],
)
def test_request_lost_on_reused_connection(
    run: Run, server: Server, method: str, content: bytes | None, retried: bool
) -> None:
    async def main() -> None:
        async with client() as c:
            await fetch(c, method, server.url("/drop-second"), content=content)
            # The server hangs up on the second request without a byte of answer.
            if retried:
                _, got = await fetch(c, method, server.url("/drop-second"), content=content)
                assert got == b"hello"
            else:
                with pytest.raises(httpx.RemoteProtocolError):
                    await fetch(c, method, server.url("/drop-second"), content=content)
        # Which connection each request arrived on: the retry went out on a new one.
        assert [s.connection for s in server.seen] == ([1, 1, 2] if retried else [1, 1])

    run(main())


def test_request_lost_on_new_connection_is_not_retried(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client() as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(c, "GET", server.url("/drop"))
        assert server.accepted == 1

    run(main())


def test_idle_connections_expire(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client(keepalive_expiry=0.1) as c:
            await fetch(c, "GET", server.url("/cl"))
            await fetch(c, "GET", server.url("/cl"))
            await asyncio.sleep(0.3)
            await fetch(c, "GET", server.url("/cl"))
            await wait_until(lambda: server.open == 1)  # the expired one was closed
        assert server.accepted == 2

    run(main())


def test_max_keepalive_connections(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client(max_connections=10, max_keepalive_connections=2) as c:
            responses = [
                await c.send(c.build_request("GET", server.url("/cl")), stream=True)
                for _ in range(5)
            ]
            for response in responses:
                await response.aread()
                await response.aclose()
            await wait_until(lambda: server.open == 2)
            for _ in range(4):
                await fetch(c, "GET", server.url("/cl"))
        assert server.accepted == 5

    run(main())


def test_max_connections_and_pool_timeout(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client(max_connections=1) as c:
            held = await c.send(c.build_request("GET", server.url("/cl")), stream=True)
            with pytest.raises(httpx.PoolTimeout):
                await fetch(c, "GET", server.url("/cl"), timeout=httpx.Timeout(5, pool=0.1))
            waiting = asyncio.create_task(fetch(c, "GET", server.url("/cl"), timeout=5))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await held.aread()
            await held.aclose()
            _, got = await waiting
            assert got == b"hello"
        assert server.accepted == 1

    run(main())


def test_concurrent_requests_share_the_pool(run: Run, server: Server) -> None:
    async def main() -> None:
        async with client(max_connections=4) as c:
            results = await asyncio.gather(*[fetch(c, "GET", server.url("/cl")) for _ in range(64)])
            assert [got for _, got in results] == [b"hello"] * 64
        assert server.accepted <= 4

    run(main())


def test_aclose_closes_every_connection(run: Run, server: Server) -> None:
    async def main() -> None:
        c = client()
        await c.send(c.build_request("GET", server.url("/cl")), stream=True)  # in use
        await fetch(c, "GET", server.url("/cl"))  # idle
        await wait_until(lambda: server.open == 2)
        await c.aclose()
        await wait_until(lambda: server.open == 0)

    run(main())


# --- failures ---------------------------------------------------------------------------------

Failure = Callable[[httpx.AsyncClient, Server], Awaitable[Any]]


def _refused(c: httpx.AsyncClient, server: Server) -> Awaitable[Any]:
    return fetch(c, "GET", f"http://127.0.0.1:{free_port()}/")


def _backlog_full(c: httpx.AsyncClient, server: Server) -> Awaitable[Any]:
    # listen(0) with one connection never accepted: further SYNs go unanswered.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    filler = socket.create_connection(listener.getsockname())

    async def attempt() -> None:
        try:
            await fetch(
                c,
                "GET",
                f"http://127.0.0.1:{listener.getsockname()[1]}/",
                timeout=httpx.Timeout(5, connect=0.2),
            )
        finally:
            filler.close()
            listener.close()

    return attempt()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (_refused, httpx.ConnectError),
        (_backlog_full, httpx.ConnectTimeout),
        (
            lambda c, s: fetch(c, "GET", s.url("/slow-head"), timeout=httpx.Timeout(5, read=0.2)),
            httpx.ReadTimeout,
        ),
        (
            lambda c, s: fetch(c, "GET", s.url("/slow-body"), timeout=httpx.Timeout(5, read=0.2)),
            httpx.ReadTimeout,
        ),
        (
            lambda c, s: fetch(
                c,
                "POST",
                s.url("/no-read"),
                content=_pieces(64 * MiB, MiB),
                timeout=httpx.Timeout(5, write=0.2),
            ),
            httpx.WriteTimeout,
        ),
        (lambda c, s: fetch(c, "GET", s.url("/reset")), httpx.ReadError),
        (lambda c, s: fetch(c, "GET", s.url("/short")), httpx.RemoteProtocolError),
        (lambda c, s: fetch(c, "GET", s.url("/garbage")), httpx.RemoteProtocolError),
    ],
    ids=[
        "refused",
        "connect-timeout",
        "read-timeout-head",
        "read-timeout-body",
        "write-timeout",
        "reset",
        "short-body",
        "garbage",
    ],
)
def test_failures_raise_httpx_errors(
    run: Run, server: Server, call: Failure, error: type[Exception]
) -> None:
    async def main() -> None:
        async with client() as c:
            started = time.monotonic()
            with pytest.raises(error) as caught:
                await call(c, server)
            assert time.monotonic() - started < 3
            assert caught.value.request.method in ("GET", "POST")
            # The pool is still usable afterwards.
            _, got = await fetch(c, "GET", server.url("/cl"))
            assert got == b"hello"

    run(main())
