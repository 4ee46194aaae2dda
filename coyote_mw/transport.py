"""A lean pooled HTTP/1.1 client on asyncio and httptools: the relay's hot path.

A shared ``httpx.AsyncClient`` spends about 1.6 ms of CPU per request in its pool;
this client does the one thing the relay needs - send a request over a kept-alive
connection and stream the answer back - with an ``asyncio.Protocol`` per connection
and llhttp (through httptools) parsing the response.

    TransportError
    ├── ConnectError         no connection: nothing was sent, safe to try elsewhere
    ├── ReadTimeout          no response head within ``read_timeout``
    └── RemoteProtocolError  a malformed response, or the connection died mid-way

Bodies stream both ways with backpressure: request chunks wait for the socket's
buffer to drain (``pause_writing``), and a response the caller reads slowly stops the
socket being read (``pause_reading``) once ``HIGH_WATER`` bytes wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools

__all__ = [
    "ConnectError",
    "Pool",
    "ReadTimeout",
    "RemoteProtocolError",
    "TransportError",
    "UpstreamResponse",
]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
NO_BODY_STATUS = frozenset({204, 304})


class TransportError(Exception):
    pass


class ConnectError(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class _Connection(asyncio.Protocol):
    """One TCP connection; one request at a time; a fresh parser per response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_ready: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser: Any = None
        self.head: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.head_only = False
        self.until_close = False
        self.error: TransportError | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.parser is None:  # bytes nobody asked for: the connection is unusable
            self._fail(RemoteProtocolError("unexpected data from the server"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        head_seen = self.parser is not None and self.head is not None and self.head.done()
        if head_seen and self.until_close and not self.complete:
            self.complete = True  # a body delimited by the connection's end
            self._wake()
            return
        if not self.complete:
            self._fail(RemoteProtocolError(f"connection closed mid-response ({exc!r})"))
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_exception(RemoteProtocolError("connection closed"))

    def pause_writing(self) -> None:
        self._write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # -- httptools callbacks --------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        names = {k for k, _ in self.headers}
        self.until_close = b"content-length" not in names and b"transfer-encoding" not in names
        if self.head_only or self.status in NO_BODY_STATUS or self.status < 200:
            self.until_close = False
            self.complete = True
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- used by the pool and the response --------------------------------------------

    def _wake(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: TransportError) -> None:
        if self.error is None:
            self.error = error
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def begin(self, head_only: bool) -> asyncio.Future[None]:
        self._reset()
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)
        self.head = self.loop.create_future()
        return self.head

    async def write_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        assert self.transport is not None
        async for chunk in body:
            if self.closed:
                raise RemoteProtocolError("connection closed while sending the body")
            if not chunk:
                continue
            if chunked:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                self.transport.write(chunk)
            if self._write_ready is not None:
                await self._write_ready
        if chunked:
            self.transport.write(b"0\r\n\r\n")

    async def next_chunk(self) -> bytes | None:
        """The next piece of body, or None at its end."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self._reading_paused and self.buffered < LOW_WATER and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            self._data_waiter = self.loop.create_future()
            await self._data_waiter
            self._data_waiter = None


class UpstreamResponse:
    """A response head; the body streams from ``aiter_body``."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "key", "status")

    def __init__(self, conn: _Connection, pool: Pool, key: tuple[str, int]) -> None:
        self._conn = conn
        self._pool = pool
        self.key = key
        self.status = conn.status
        self.headers = conn.headers
        self._done = False

    async def aiter_body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while (chunk := await conn.next_chunk()) is not None:
            yield chunk
        self._finish(reusable=conn.keep_alive and not conn.until_close)

    def take_whole(self) -> bytes | None:
        """The whole body if it has all arrived already (the connection is released)."""
        conn = self._conn
        if not conn.complete or conn.error is not None:
            return None
        body = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        conn.chunks.clear()
        conn.buffered = 0
        self._finish(reusable=conn.keep_alive and not conn.until_close)
        return body

    async def aread(self) -> bytes:
        return b"".join([c async for c in self.aiter_body()])

    def _finish(self, reusable: bool) -> None:
        if self._done:
            return
        self._done = True
        self._pool._release(self.key, self._conn, reusable and not self._conn.closed)

    async def aclose(self) -> None:
        """Give the connection back: to the pool if the body was read, else closed."""
        self._finish(reusable=False)


class Pool:
    """Keep-alive connections per (host, port); one pool per event loop."""

    def __init__(
        self,
        *,
        max_per_host: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float | None = 30.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.max_per_host = max_per_host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: dict[tuple[str, int], int] = {}
        self._waiters: dict[tuple[str, int], deque[asyncio.Future[None]]] = {}

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] = b"",
    ) -> UpstreamResponse:
        key = (host, port)
        head = _head(method, host, port, target, headers, body)
        for attempt in (0, 1):
            conn, reused = await self._acquire(key)
            try:
                return await self._exchange(conn, key, method, head, body)
            except RemoteProtocolError:
                self._release(key, conn, False)
                # A kept-alive connection the server closed while idle fails before
                # any byte comes back; a replayable request may try a fresh one.
                if attempt == 0 and reused and not conn.got_bytes and isinstance(body, bytes):
                    continue
                raise
            except BaseException:
                self._release(key, conn, False)
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        conn: _Connection,
        key: tuple[str, int],
        method: str,
        head: bytes,
        body: bytes | AsyncIterator[bytes],
    ) -> UpstreamResponse:
        assert conn.transport is not None
        ready = conn.begin(head_only=method == "HEAD")
        if isinstance(body, bytes):
            conn.transport.write(head + body)
        else:
            conn.transport.write(head)
            chunked = b"content-length" not in head.lower()
            await conn.write_body(body, chunked)
        if self.read_timeout is None:  # the caller bounds the wait itself
            await ready
        else:
            timer = conn.loop.call_later(self.read_timeout, _time_out, ready)
            try:
                await ready
            finally:
                timer.cancel()
        return UpstreamResponse(conn, self, key)

    async def _acquire(self, key: tuple[str, int]) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_timeout:
                return conn, True
            self._drop(key, conn)
        while self._open.get(key, 0) >= self.max_per_host:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            try:
                await asyncio.wait_for(waiter, self.connect_timeout)
            except TimeoutError:
                raise ConnectError(f"no free connection to {key[0]}:{key[1]}") from None
            idle = self._idle.get(key)
            if idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn, True
                self._drop(key, conn)
        self._open[key] = self._open.get(key, 0) + 1
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), key[0], key[1]),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._open[key] -= 1
            self._wake(key)
            raise ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc!r}") from exc
        return protocol, False

    def _release(self, key: tuple[str, int], conn: _Connection, reusable: bool) -> None:
        conn.parser = None
        if reusable:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
            self._open[key] = self._open.get(key, 1) - 1
        self._wake(key)

    def _drop(self, key: tuple[str, int], conn: _Connection) -> None:
        conn.close()
        self._open[key] = self._open.get(key, 1) - 1

    def _wake(self, key: tuple[str, int]) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for key, conns in self._idle.items():
            for conn in conns:
                self._drop(key, conn)
        self._idle.clear()


def _time_out(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_exception(ReadTimeout("no response head in time"))


def _head(
    method: str,
    host: str,
    port: int,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | AsyncIterator[bytes],
) -> bytes:
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    has_host = has_length = False
    for name, value in headers:  # names are lowercase, as ASGI gives them
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            has_length = True
        lines += [name, b": ", value, b"\r\n"]
    if not has_host:
        lines += [b"host: ", f"{host}:{port}".encode("ascii"), b"\r\n"]
    if isinstance(body, bytes):
        if not has_length and (body or method in ("POST", "PUT", "PATCH")):
            lines += [b"content-length: ", str(len(body)).encode("ascii"), b"\r\n"]
    elif not has_length:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
