"""coyote_mw.remote.transport: the lean HTTP/1.1 client, against real servers on 127.0.0.1.

A uvicorn upstream (in a thread) for the ordinary cases, and small raw asyncio socket
servers, written here and run on the test's own loop, for the edge cases: they count
the connections they accept and say exactly the bytes each test needs.  Every test
runs its scenario under ``asyncio.run`` with a time limit; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from coyote_mw.remote import transport
from coyote_mw.remote.transport import (
    ConnectError,
    Pool,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
    UpstreamResponse,
)
from tests.support.processes import free_port
from tests.support.servers import answer_lifespan, uvicorn_server

T = TypeVar("T")

MB = 1024 * 1024
PIECE = bytes(range(256)) * 256  # 64 KiB
BIG = 20 * MB
HELLO = b"Hello, world!"


def run(scenario: Coroutine[Any, Any, T], limit: float = 30) -> T:
    """Run one scenario on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario, limit)

    return asyncio.run(bounded())


# -- a uvicorn upstream -----------------------------------------------------------------


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/hello":
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": HELLO})
    elif path == "/chunked":  # no length: uvicorn chunks it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(BIG // len(PIECE)):
            await send({"type": "http.response.body", "body": PIECE, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/upload":  # answers "<bytes> <sha256> <framing>"
        digest, count, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            count += len(chunk)
            more = message.get("more_body", False)
        names = {k for k, _ in scope["headers"]}
        framing = b"chunked" if b"transfer-encoding" in names else b"length"
        body = b"%d %s %s" % (count, digest.hexdigest().encode(), framing)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with uvicorn_server(upstream_app) as port:
        yield port


# -- raw asyncio servers for the edge cases ---------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A listening socket on 127.0.0.1 whose handler gets each connection and its number."""

    def __init__(self, handler: Handler, rcvbuf: int | None = None) -> None:
        self.handler = handler
        self.rcvbuf = rcvbuf
        self.accepted = 0
        self.active = 0
        self.max_active = 0
        self.eofs = 0  # connections the client closed (the handler read EOF)
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf is not None:  # accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._writers.append(writer)
        try:
            await self.handler(reader, writer, self.accepted)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            writer.close()

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)  # let the handlers see their connections end


async def read_request(
    reader: asyncio.StreamReader, server: RawServer | None = None
) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    """One request: head, headers (lower-cased names), body; None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        if server is not None:
            server.eofs += 1
        return None
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        for _ in range(100_000):
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append((await reader.readexactly(size + 2))[:size])
            if size == 0:
                break
        body = b"".join(parts)
    return head, headers, body


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def keep_alive_server(answer: bytes = ok()) -> Callable[[], RawServer]:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(10_000):
            if await read_request(r, server) is None:
                return
            w.write(answer)

    server = RawServer(handler)
    return lambda: server


def only_connection(pool: Pool) -> Any:
    (conn,) = pool._conns
    return conn


async def get(
    pool: Pool, port: int, target: bytes = b"/", method: str = "GET"
) -> tuple[UpstreamResponse, bytes]:
    response = await pool.request(method, "127.0.0.1", port, target, [])
    return response, await response.aread()


# -- against uvicorn ------------------------------------------------------------------------


def test_get_with_content_length_returns_status_headers_and_body(upstream: int) -> None:
    async def scenario() -> None:
        pool = Pool()
        response, body = await get(pool, upstream, b"/hello")
        assert response.status == 200
        assert (b"content-length", b"13") in response.headers
        assert (b"content-type", b"text/plain") in response.headers
        assert all(name == name.lower() for name, _ in response.headers)
        assert body == HELLO
        await pool.aclose()

    run(scenario())


def test_chunked_response_is_reassembled(upstream: int) -> None:
    async def scenario() -> None:
        pool = Pool()
        response, body = await get(pool, upstream, b"/chunked")
        assert (b"transfer-encoding", b"chunked") in response.headers
        assert body == b"one,two,three"
        response, body = await get(pool, upstream, b"/hello")  # the same connection after
        assert body == HELLO
        assert len(pool._conns) == 1
        await pool.aclose()

    run(scenario())


def test_head_and_204_from_uvicorn_have_no_body(upstream: int) -> None:
    async def scenario() -> None:
        pool = Pool()
        response, body = await get(pool, upstream, b"/hello", method="HEAD")
        assert (response.status, body) == (200, b"")
        assert (b"content-length", b"13") in response.headers
        response, body = await get(pool, upstream, b"/empty")
        assert (response.status, body) == (204, b"")
        response, body = await get(pool, upstream, b"/hello")
        assert body == HELLO
        assert len(pool._conns) == 1  # neither left the connection confused
        await pool.aclose()

    run(scenario())


def test_streaming_upload_from_async_generator_arrives_intact(upstream: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(BIG // len(PIECE)):
            yield PIECE[i % 256 :] + PIECE[: i % 256]  # every chunk different

    expected = hashlib.sha256()
    for i in range(BIG // len(PIECE)):
        expected.update(PIECE[i % 256 :] + PIECE[: i % 256])

    async def scenario() -> None:
        pool = Pool()
        response = await pool.request("POST", "127.0.0.1", upstream, b"/upload", [], body())
        count, digest, framing = (await response.aread()).split()
        assert int(count) == BIG
        assert digest.decode() == expected.hexdigest()
        assert framing == b"chunked"
        await pool.aclose()

    run(scenario())


def test_streaming_upload_with_callers_content_length_is_sent_raw(upstream: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield PIECE

    async def scenario() -> None:
        pool = Pool()
        headers = [(b"Content-Length", b"%d" % (16 * len(PIECE)))]
        response = await pool.request("PUT", "127.0.0.1", upstream, b"/upload", headers, body())
        count, digest, framing = (await response.aread()).split()
        assert int(count) == 16 * len(PIECE)
        assert digest.decode() == hashlib.sha256(PIECE * 16).hexdigest()
        assert framing == b"length"
        await pool.aclose()

    run(scenario())


def test_streaming_download_is_read_chunk_by_chunk_with_bounded_buffer(upstream: int) -> None:
    async def scenario() -> None:
        pool = Pool()
        response = await pool.request("GET", "127.0.0.1", upstream, b"/big", [])
        conn = only_connection(pool)
        total = max_buffered = chunks = 0
        paused_seen = False
        async for chunk in response.aiter_body():
            total += len(chunk)
            chunks += 1
            max_buffered = max(max_buffered, conn.buffered + len(chunk))
            paused_seen = paused_seen or conn.reading_paused
            if chunks % 8 == 0:
                await asyncio.sleep(0.005)  # a slow reader
        assert total == BIG
        assert chunks > 20
        assert paused_seen, "the socket was never paused for the slow reader"
        assert max_buffered < 2 * MB, f"{max_buffered} bytes buffered"
        assert len(pool._conns) == 1 and not conn.reading_paused  # pooled, reading again
        await pool.aclose()

    run(scenario(), limit=60)


# -- framing of the request ---------------------------------------------------------------


def test_request_head_has_host_callers_headers_in_order_and_content_length() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(100):
            request = await read_request(r)
            if request is None:
                return
            seen.append(request)
            w.write(ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            port = server.port
            headers = [(b"x-one", b"1"), (b"X-Two", b"2")]
            await (await pool.request("GET", "127.0.0.1", port, b"/a?b=c", headers)).aread()
            await (await pool.request("POST", "127.0.0.1", port, b"/p", [])).aread()
            await (await pool.request("POST", "127.0.0.1", port, b"/p", [], b"xyz")).aread()
            custom = [(b"Host", b"example.test")]
            await (await pool.request("DELETE", "127.0.0.1", port, b"/d", custom)).aread()
            await pool.aclose()
        get_head, post_empty, post_body, delete = seen
        assert get_head[0] == (
            b"GET /a?b=c HTTP/1.1\r\nx-one: 1\r\nX-Two: 2\r\nhost: 127.0.0.1:%d\r\n\r\n" % port
        )
        assert post_empty[1][b"content-length"] == b"0"
        assert (post_body[1][b"content-length"], post_body[2]) == (b"3", b"xyz")
        assert delete[1][b"host"] == b"example.test"
        assert b"content-length" not in delete[1]
        assert delete[0].lower().count(b"host:") == 1

    run(scenario())


# -- keep-alive -------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_for_many_requests() -> None:
    async def scenario() -> None:
        async with keep_alive_server()() as server:
            pool = Pool()
            for _ in range(50):
                response, body = await get(pool, server.port)
                assert (response.status, body) == (200, b"ok")
            assert server.accepted == 1
            await pool.aclose()

    run(scenario())


def test_connection_close_in_response_is_honoured() -> None:
    async def scenario() -> None:
        # the server says close but leaves the socket open: the client must drop it
        async with keep_alive_server(ok(extra=b"connection: close\r\n"))() as server:
            pool = Pool()
            for _ in range(3):
                _, body = await get(pool, server.port)
                assert body == b"ok"
            assert server.accepted == 3
            await asyncio.sleep(0.05)
            assert server.eofs >= 2  # the client closed the ones it was told to
            await pool.aclose()

    run(scenario())


def test_http10_response_without_keep_alive_is_not_reused() -> None:
    answer = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        async with keep_alive_server(answer)() as server:
            pool = Pool()
            for _ in range(2):
                assert (await get(pool, server.port))[1] == b"ok"
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


def test_body_read_until_close_when_neither_length_nor_chunks() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst part, ")
        await w.drain()
        await asyncio.sleep(0.02)
        w.write(b"second part")
        await w.drain()
        # RawServer closes the connection: that ends the body

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            response, body = await get(pool, server.port)
            assert (response.status, body) == (200, b"first part, second part")
            assert (await get(pool, server.port))[1] == b"first part, second part"
            assert server.accepted == 2  # such a connection is never reused
            await pool.aclose()

    run(scenario())


def test_idle_connections_older_than_idle_timeout_are_closed() -> None:
    async def scenario() -> None:
        async with keep_alive_server()() as server:
            pool = Pool(idle_timeout=0.2)
            await get(pool, server.port)
            await asyncio.sleep(0.6)
            assert server.eofs == 1  # the pool closed it on its own, nobody asking
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await get(pool, server.port)
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


def test_connection_closed_by_upstream_while_idle_frees_its_slot() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        w.write(ok())
        await w.drain()
        await asyncio.sleep(0.05)  # then close it, as an upstream's idle timeout would

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(max_per_host=1, connect_timeout=0.5)
            await get(pool, server.port)
            await asyncio.sleep(0.2)
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            assert (await get(pool, server.port))[1] == b"ok"
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


# -- a stale pooled connection ------------------------------------------------------------


def stale_server(answer_fresh: bool = True) -> RawServer:
    """Connection 1 answers once, then closes when the next request comes (as if its
    idle timeout hit just then); later connections answer, echoing the body length."""
    bodies: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        if index > 1 and not answer_fresh:
            await r.readuntil(b"\r\n\r\n")
            return
        for n in range(100):
            if index == 1 and n == 1:
                await r.readuntil(b"\r\n\r\n")
                return  # closed with the request unanswered
            request = await read_request(r)
            if request is None:
                return
            bodies.append(request[2])
            w.write(ok(b"%d" % len(request[2])))

    server = RawServer(handler)
    server.bodies = bodies  # type: ignore[attr-defined]
    return server


def test_stale_pooled_connection_is_retried_once_for_an_idempotent_bytes_body() -> None:
    async def scenario() -> None:
        async with stale_server() as server:
            pool = Pool()
            await get(pool, server.port)
            response = await pool.request("PUT", "127.0.0.1", server.port, b"/", [], b"x" * 5000)
            assert (response.status, await response.aread()) == (200, b"5000")
            assert server.accepted == 2
            assert server.bodies[-1] == b"x" * 5000  # type: ignore[attr-defined]
            await pool.aclose()

    run(scenario())


@pytest.mark.parametrize("method", ["POST", "PATCH", "LOCK"])
@pytest.mark.parametrize("body", [b"", b"x" * 5000])
def test_stale_pooled_connection_never_replays_a_non_idempotent_request(
    method: str, body: bytes
) -> None:
    # The upstream may have acted on it before closing: nginx (non_idempotent) and Go
    # (isReplayable) never send it again, with a body or without one.
    async def scenario() -> None:
        async with stale_server() as server:
            pool = Pool()
            await get(pool, server.port)
            with pytest.raises(RemoteProtocolError, match="never sent twice"):
                await pool.request(method, "127.0.0.1", server.port, b"/", [], body)
            assert server.accepted == 1  # no fresh connection for a replay
            await pool.aclose()

    run(scenario())


def test_stale_pooled_connection_with_streamed_body_raises_remote_protocol_error() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        yield b"y" * 1000

    async def scenario() -> None:
        async with stale_server() as server:
            pool = Pool()
            await get(pool, server.port)
            with pytest.raises(RemoteProtocolError):
                await pool.request("POST", "127.0.0.1", server.port, b"/", [], body())
            assert server.accepted == 1  # not replayed
            await pool.aclose()

    run(scenario())


def test_stale_retry_happens_only_once() -> None:
    async def scenario() -> None:
        async with stale_server(answer_fresh=False) as server:
            pool = Pool()
            await get(pool, server.port)
            with pytest.raises(RemoteProtocolError):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            assert server.accepted == 2
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


# -- failures --------------------------------------------------------------------------------


def test_connect_refused_raises_connect_error_quickly() -> None:
    async def scenario() -> None:
        pool = Pool()
        port = free_port()
        started = time.monotonic()
        with pytest.raises(ConnectError) as caught:
            await pool.request("GET", "127.0.0.1", port, b"/", [])
        assert time.monotonic() - started < 2
        assert isinstance(caught.value.__cause__, OSError)
        assert isinstance(caught.value, TransportError)
        assert pool._open[("127.0.0.1", port, None)] == 0  # the slot was given back
        await pool.aclose()

    run(scenario())


def test_silent_server_raises_read_timeout_after_read_timeout() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await r.read()  # reads, never answers, until the client goes

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(read_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(ReadTimeout):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            assert 0.25 < time.monotonic() - started < 2
            await asyncio.sleep(0.05)
            assert server.active == 0  # the client closed the connection
            await pool.aclose()

    run(scenario())


def test_stalled_body_raises_read_timeout_and_drops_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await r.read()

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(read_timeout=0.3)
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            received = b""
            with pytest.raises(ReadTimeout):
                async for chunk in response.aiter_body():
                    received += chunk
            assert received == b"0123456789"
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "bad-header", "length-and-chunked"],
)
def test_malformed_response_raises_remote_protocol_error(answer: bytes) -> None:
    async def scenario() -> None:
        async with keep_alive_server(answer)() as server:
            pool = Pool()
            with pytest.raises(RemoteProtocolError):
                await get(pool, server.port)
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
    ],
    ids=["bad-chunk-size", "truncated"],
)
def test_body_broken_after_the_head_raises_remote_protocol_error(answer: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        w.write(answer)
        await w.drain()
        # then RawServer closes the connection

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            assert response.status == 200
            with pytest.raises(RemoteProtocolError):
                await response.aread()
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


def test_bytes_after_a_complete_response_spoil_only_the_connection() -> None:
    async def scenario() -> None:
        async with keep_alive_server(ok() + b"HTTP/1.1 200 OK\r\n\r\n")() as server:
            pool = Pool()
            response, body = await get(pool, server.port)
            assert (response.status, body) == (200, b"ok")
            assert (await get(pool, server.port))[1] == b"ok"
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


def test_bytes_sent_to_an_idle_connection_drop_it() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(10):
            if await read_request(r) is None:
                return
            w.write(ok())
            if index == 1:
                await asyncio.sleep(0.05)
                w.write(b"HTTP/1.1 200 OK\r\n\r\n")  # an answer to nothing

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            assert (await get(pool, server.port))[1] == b"ok"
            await asyncio.sleep(0.15)
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            assert (await get(pool, server.port))[1] == b"ok"
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


# -- bodiless responses and interim heads -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),  # a stray body
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 13\r\n\r\n"),
    ],
    ids=["head", "head-with-stray-body", "204", "304"],
)
def test_head_204_and_304_have_no_body_and_keep_the_connection(method: str, answer: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(10):
            request = await read_request(r)
            if request is None:
                return
            w.write(answer if request[0].startswith(method.encode()) else ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(read_timeout=2)
            response = await pool.request(method, "127.0.0.1", server.port, b"/", [])
            assert await response.aread() == b""
            if method != "HEAD":
                assert response.status in (204, 304)
            response, body = await get(pool, server.port, method="POST")
            assert (response.status, body) == (200, b"ok")
            assert server.accepted == 1
            await pool.aclose()

    run(scenario())


def test_interim_1xx_responses_are_skipped() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n" + ok(b"final")
    )

    async def scenario() -> None:
        async with keep_alive_server(answer)() as server:
            pool = Pool()
            response, body = await get(pool, server.port)
            assert (response.status, body) == (200, b"final")
            assert [name for name, _ in response.headers] == [b"content-length"]
            assert (await get(pool, server.port))[1] == b"final"
            assert server.accepted == 1
            await pool.aclose()

    run(scenario())


# -- flow control --------------------------------------------------------------------------------


def test_streaming_upload_respects_write_flow_control(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses = 0
    pause_writing = transport._Connection.pause_writing

    def counting_pause(self: Any) -> None:
        nonlocal pauses
        pauses += 1
        pause_writing(self)

    monkeypatch.setattr(transport._Connection, "pause_writing", counting_pause)
    produced = received = 0
    produced_when_server_woke = -1

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        nonlocal received, produced_when_server_woke
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)  # a slow upstream: reads nothing for a while
        produced_when_server_woke = produced
        for _ in range(100_000):
            if received >= BIG:
                break
            chunk = await r.read(64 * 1024)
            if not chunk:
                return
            received += len(chunk)
        w.write(ok(b"%d" % received))

    async def scenario() -> None:
        nonlocal produced
        async with RawServer(handler, rcvbuf=64 * 1024) as server:
            pool = Pool()
            max_buffer = 0

            async def body() -> AsyncIterator[bytes]:
                nonlocal produced, max_buffer
                for _ in range(BIG // len(PIECE)):
                    if pool._conns:
                        size = only_connection(pool).transport.get_write_buffer_size()
                        max_buffer = max(max_buffer, size)
                    produced += len(PIECE)
                    yield PIECE

            headers = [(b"content-length", b"%d" % BIG)]
            response = await pool.request("PUT", "127.0.0.1", server.port, b"/", headers, body())
            assert await response.aread() == b"%d" % BIG
            assert pauses > 0
            assert max_buffer < MB, f"{max_buffer} bytes waited in the transport"
            # without flow control the generator would have run to its end at once
            assert 0 <= produced_when_server_woke < 12 * MB
            await pool.aclose()

    run(scenario(), limit=60)


def test_early_answer_to_a_stalled_upload_is_returned() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await r.readuntil(b"\r\n\r\n")
        # refuses the body: answers at once and reads no more of it
        w.write(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
        await w.drain()
        await asyncio.sleep(5)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // len(PIECE)):
            yield PIECE

    async def scenario() -> None:
        async with RawServer(handler, rcvbuf=64 * 1024) as server:
            pool = Pool(read_timeout=5)
            started = time.monotonic()
            response = await pool.request("POST", "127.0.0.1", server.port, b"/", [], body())
            assert (response.status, await response.aread()) == (413, b"too big!")
            assert time.monotonic() - started < 2
            assert pool._open[("127.0.0.1", server.port, None)] == 0  # the rest is owed: dropped
            await pool.aclose()

    run(scenario())


# -- limits and closing ----------------------------------------------------------------------


def test_many_concurrent_requests_never_open_more_than_max_per_host() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(1000):
            if await read_request(r) is None:
                return
            await asyncio.sleep(0.005)  # slow enough that requests pile up
            w.write(ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(max_per_host=10)
            results = await asyncio.gather(*(get(pool, server.port) for _ in range(200)))
            assert [(r.status, body) for r, body in results] == [(200, b"ok")] * 200
            assert server.accepted <= 10
            assert server.max_active <= 10
            assert pool._open[("127.0.0.1", server.port, None)] <= 10
            await pool.aclose()

    run(scenario())


def test_waiting_for_a_free_connection_is_bounded_by_connect_timeout() -> None:
    async def scenario() -> None:
        async with keep_alive_server()() as server:
            pool = Pool(max_per_host=1, connect_timeout=0.3)
            held = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            started = time.monotonic()
            with pytest.raises(ConnectError):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            assert 0.25 < time.monotonic() - started < 2
            # a waiter gets the connection as soon as it is given back
            waiting = asyncio.ensure_future(get(pool, server.port))
            await asyncio.sleep(0.05)
            assert await held.aread() == b"ok"
            _, body = await waiting
            assert body == b"ok"
            assert server.accepted == 1
            await pool.aclose()

    run(scenario())


def test_response_aclose_before_the_body_arrived_closes_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        if index > 1:
            w.write(ok())
            return
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")
        await r.read()
        server.eofs += 1

    server = RawServer(handler)

    async def scenario() -> None:
        async with server:
            pool = Pool(max_per_host=1)
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            # a request waiting for the only slot gets it when the connection is dropped
            waiting = asyncio.ensure_future(get(pool, server.port))
            await asyncio.sleep(0.05)
            await response.aclose()
            assert (await waiting)[1] == b"ok"
            await asyncio.sleep(0.05)
            assert server.eofs == 1
            assert server.accepted == 2
            await pool.aclose()

    run(scenario())


def test_pool_aclose_closes_connections_and_refuses_new_requests() -> None:
    async def scenario() -> None:
        async with keep_alive_server()() as server:
            pool = Pool(max_per_host=1)
            await get(pool, server.port)
            held = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            waiting = asyncio.ensure_future(get(pool, server.port))
            await asyncio.sleep(0.05)
            await pool.aclose()
            with pytest.raises(TransportError):  # the waiter is told, not left hanging
                await waiting
            assert await held.aread() == b"ok"  # it had all arrived: still readable
            await asyncio.sleep(0.05)
            assert server.eofs == 1
            with pytest.raises(TransportError):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])

    run(scenario())


def test_large_bytes_body_is_written_in_slices_and_arrives_whole() -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        request = await read_request(r)
        assert request is not None
        seen.append(request[2])
        w.write(ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            body = b"".join(PIECE[i:] + PIECE[:i] for i in range(64))  # 4 MiB
            response = await pool.request("POST", "127.0.0.1", server.port, b"/", [], body)
            assert (response.status, await response.aread()) == (200, b"ok")
            assert seen == [body]
            await pool.aclose()

    run(scenario())


def test_take_whole_returns_a_body_that_has_all_arrived_and_releases_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(10):
            request = await read_request(r)
            if request is None:
                return
            if request[0].startswith(b"GET /partial"):
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")
            else:
                w.write(ok(b"whole"))

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            for _ in range(100):  # the body may come a moment after the head
                if (body := response.take_whole()) is not None:
                    break
                await asyncio.sleep(0.01)
            assert body == b"whole"
            assert (await get(pool, server.port))[1] == b"whole"
            assert server.accepted == 1
            partial = await pool.request("GET", "127.0.0.1", server.port, b"/partial", [])
            await asyncio.sleep(0.05)
            assert partial.take_whole() is None
            await partial.aclose()
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


def test_upstream_that_never_reads_the_body_raises_read_timeout() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(3)  # neither reads nor answers

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // len(PIECE)):
            yield PIECE

    async def scenario() -> None:
        async with RawServer(handler, rcvbuf=64 * 1024) as server:
            pool = Pool(read_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(ReadTimeout):
                await pool.request("POST", "127.0.0.1", server.port, b"/", [], body())
            assert time.monotonic() - started < 2
            assert pool._open[("127.0.0.1", server.port, None)] == 0
            await pool.aclose()

    run(scenario())


def test_cancelled_requests_give_their_connection_slots_back() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(10):
            request = await read_request(r)
            if request is None:
                return
            if not request[0].startswith(b"GET /never"):
                w.write(ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            key = ("127.0.0.1", server.port, None)
            pool = Pool(max_per_host=1, read_timeout=None)  # the caller bounds the waits
            # cancelled while waiting for the head (as the relay's deadline does)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await pool.request("GET", "127.0.0.1", server.port, b"/never", [])
            assert pool._open[key] == 0
            # cancelled while waiting for a free connection
            held = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            waiting = asyncio.ensure_future(get(pool, server.port))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await held.aread() == b"ok"
            assert (await get(pool, server.port))[1] == b"ok"
            assert pool._open[key] == 1 and not pool._waiters[key]
            await pool.aclose()

    run(scenario())


def test_switching_protocols_is_a_remote_protocol_error() -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n"

    async def scenario() -> None:
        async with keep_alive_server(answer)() as server:
            pool = Pool()
            with pytest.raises(RemoteProtocolError):
                await get(pool, server.port)
            await pool.aclose()

    run(scenario())


def test_streamed_body_with_callers_transfer_encoding_is_chunked_once() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        request = await read_request(r)
        assert request is not None
        seen.append(request)
        w.write(ok())

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""  # skipped: an empty chunk would end the body
        yield b"def"

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            headers = [(b"Transfer-Encoding", b"chunked")]
            response = await pool.request("POST", "127.0.0.1", server.port, b"/", headers, body())
            assert await response.aread() == b"ok"
            await pool.aclose()
        ((head, _, received),) = seen
        assert received == b"abcdef"
        assert head.lower().count(b"transfer-encoding") == 1

    run(scenario())


def test_a_waiting_request_gets_the_next_free_connection_before_a_busy_caller() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(1000):
            if await read_request(r) is None:
                return
            await asyncio.sleep(0.01)
            w.write(ok())

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool(max_per_host=1, connect_timeout=0.3)
            finished: list[str] = []

            async def busy() -> None:  # back to back: 60 x 10 ms, far beyond 0.3 s
                for _ in range(60):
                    await get(pool, server.port)
                finished.append("busy")

            hog = asyncio.ensure_future(busy())
            await asyncio.sleep(0.03)
            assert (await get(pool, server.port))[1] == b"ok"  # no ConnectError: its turn came
            finished.append("waiter")
            await hog
            assert finished == ["waiter", "busy"]
            assert server.accepted == 1
            await pool.aclose()

    run(scenario())


# -- what a response may be: head size and framing ------------------------------------


def test_a_head_within_max_head_is_read_with_the_body_that_arrives_in_the_same_read() -> None:
    # one write of 150 KB: the head (about 50 KB) and the body come in the same reads
    head_extra = b"x-big: " + b"b" * 50_000 + b"\r\n"
    body = b"z" * 100_000

    async def scenario() -> None:
        async with keep_alive_server(ok(body, head_extra))() as server:
            pool = Pool()
            r = await pool.request("GET", "127.0.0.1", server.port, b"/", [], max_head=60 * 1024)
            assert dict(r.headers)[b"x-big"] == b"b" * 50_000
            assert await r.aread() == body
            with pytest.raises(RemoteProtocolError, match="head is too large"):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [], max_head=40 * 1024)
            await pool.aclose()

    run(scenario())


@pytest.mark.parametrize(
    "te",
    [
        b"gzip",
        b"chunked, chunked",
        b"gzip, chunked",
        b"identity",
        b"chunked\r\nTransfer-Encoding: chunked",
    ],
)
def test_a_transfer_encoding_other_than_one_chunked_is_refused(te: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %b\r\n\r\n2\r\nok\r\n0\r\n\r\n" % te

    async def scenario() -> None:
        async with keep_alive_server(answer)() as server:
            pool = Pool()
            with pytest.raises(RemoteProtocolError, match="Transfer-Encoding"):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            await pool.aclose()

    run(scenario())


def test_a_busy_pool_raises_pool_timeout_a_kind_of_connect_error() -> None:
    async def scenario() -> None:
        async with keep_alive_server()() as server:
            pool = Pool(max_per_host=1, connect_timeout=0.2)
            held = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            with pytest.raises(transport.PoolTimeout):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            assert issubclass(transport.PoolTimeout, ConnectError)
            await held.aclose()
            await pool.aclose()

    run(scenario())


def test_a_body_delimited_by_the_close_but_ended_by_a_reset_is_incomplete() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\n\r\nfirst part, ")
        await w.drain()
        await asyncio.sleep(0.05)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # RST, not FIN

    async def scenario() -> None:
        async with RawServer(handler) as server:
            pool = Pool()
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            with pytest.raises(RemoteProtocolError, match="closed the connection while sending"):
                await response.aread()
            await pool.aclose()

    run(scenario())


def test_trailers_are_not_headers_and_are_bounded() -> None:
    def answer(trailer: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n%b\r\n" % trailer
        )

    async def scenario() -> None:
        async with keep_alive_server(answer(b"x-trailer: 1\r\n"))() as server:
            pool = Pool()
            response, body = await get(pool, server.port)
            assert body == b"ok"
            assert b"x-trailer" not in dict(response.headers)
            await pool.aclose()
        huge = b"x-trailer: " + b"t" * 2_000_000 + b"\r\n"
        async with keep_alive_server(answer(huge))() as server:
            pool = Pool()
            response = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
            with pytest.raises(RemoteProtocolError, match="chunk framing is too large"):
                await response.aread()
            await pool.aclose()

    run(scenario())
