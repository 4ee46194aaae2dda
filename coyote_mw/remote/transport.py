"""A lean pooled HTTP/1.1 client on asyncio and httptools: the relay's hot path.

A shared ``httpx.AsyncClient`` spends about 1.6 ms of CPU per request in its pool.
This client does only what the relay needs - send one request over a kept-alive
connection and stream the answer back - with one ``asyncio.Protocol`` per connection
(callbacks, no streams, no task per request) and llhttp, through httptools, parsing
the response.  HTTP/1.1 in clear (``http://``) or over TLS (``https://``): given an
``ssl.SSLContext`` (``tls=``), a connection verifies the server with that context and
checks its host name; connections are pooled per host, port and context.

Exceptions (in ``coyote_mw.errors``' tree, under ``CoyoteError``; importable here)::

    TransportError                  base of everything this module raises
    ├── ConnectError                no connection (refused, unreachable, connect timeout,
    │                               no free slot in time): nothing was sent, so the
    │                               request may safely go to another instance
    ├── ReadTimeout                 the upstream was too slow: no response head, no body
    │                               progress, or no room for the request body within
    │                               ``read_timeout``
    └── RemoteProtocolError         a malformed response (bad framing, a head over
                                    ``max_head`` bytes), or the connection closed or
                                    was reset before the response was complete

Bodies stream both ways with backpressure: request chunks wait for the socket's
buffer to drain (``pause_writing`` / ``resume_writing``), and a response its reader
consumes slowly stops the socket being read (``pause_reading``) once ``HIGH_WATER``
bytes wait, until it is down to ``LOW_WATER``.

A connection goes back to the pool only when its response was read to the end, the
upstream and the parser agree on keep-alive, and the request body was sent whole.
A kept-alive connection the upstream closed while it sat idle fails before any
response byte arrives: such a request is sent once more on a fresh connection when
its method is idempotent (``IDEMPOTENT_METHODS``, RFC 9110 9.2.2) and its body is
``bytes`` (it can be replayed), and raises ``RemoteProtocolError`` otherwise - the
upstream may have acted on it before closing, so a POST is never sent twice.

What the response may be (RFC 9112, as nginx and HAProxy hold it): a head of at most
``max_head`` bytes (1xx heads included) - the parser is never fed more, so a huge head
costs no memory; ``Transfer-Encoding`` exactly ``chunked`` (once) or absent; a body
delimited by the connection's end only when that end is a clean close - a reset cuts
it, and the response is incomplete.  Anything else is ``RemoteProtocolError``.
A ``Pool`` belongs to one event loop; create one per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol, cast

import httptools

from coyote_mw.errors import (
    ConnectError,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
)

__all__ = [
    "HIGH_WATER",
    "IDEMPOTENT_METHODS",
    "LOW_WATER",
    "MAX_HEAD",
    "ConnectError",
    "Pool",
    "PoolTimeout",
    "ReadTimeout",
    "RemoteProtocolError",
    "Sink",
    "TransportError",
    "UpstreamResponse",
    "header_lines",
]

# Response bytes buffered for a slow reader before the socket stops being read, and
# the level at which reading starts again (hysteresis: no pause/resume per chunk).
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A bytes body up to this size goes out in one write with the head (one syscall);
# a larger one is written in slices of this size, each waiting for the buffer to drain,
# so the transport never holds a second copy of a large body.
_WRITE_SLICE = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# Methods a request may be sent again with (RFC 9110 9.2.2): the only ones ever replayed.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# The default bound on a response head's bytes (Envoy's max_response_headers_kb: 60).
MAX_HEAD = 60 * 1024
# RFC 9110: a user agent should send Content-Length: 0 when these carry no body.
_LENGTH_REQUIRED = frozenset({"POST", "PUT", "PATCH"})

_Key = tuple[str, int, "ssl.SSLContext | None"]  # host, port, TLS (None: plain)
# What a request waiting for a connection is woken with: a connection handed over by
# the request that finished with it, True for a free slot, False when time is up.
_Turn = asyncio.Future["_Connection | bool"]


class Sink(Protocol):
    """What reads a response sent with ``Pool.send_now``: ``flush()`` is called after
    every read and when the connection is lost; it finds on the connection the head
    (``head_done``, ``status``, ``headers``, ``te``), the body (``take_body()``), its
    end (``complete``) or failure (``error``), and ends the exchange with ``done()``."""

    def flush(self) -> None: ...


class _Kept:
    """The last response head of a connection that llhttp parsed whole from the start of
    a read, framed by a Content-Length, kept alive, and that passed every check
    (``_Connection.kept``; a later head that is not such a one leaves it as it is): its
    bytes, status, lines and length.  An instance answering the same request again
    usually sends the very same head (its Date line changes once a second): a read that
    begins with these bytes is that head, taken without llhttp and the per-line calls,
    and its body is counted out by the length.  ``derived`` is a reader's own, for what
    it makes of these lines (``coyote_mw.middleware.direct``)."""

    __slots__ = ("derived", "head", "headers", "length", "status")

    def __init__(
        self, head: bytes, status: int, headers: list[tuple[bytes, bytes]], length: int
    ) -> None:
        self.head = head
        self.status = status
        self.headers = headers  # (copied for each response: a reader may change its list)
        self.length = length
        self.derived: list[tuple[bytes, bytes]] | None = None


class _SecondResponse(Exception):
    """Raised inside the parser to stop it at bytes that follow a complete response."""


def _wake(waiter: asyncio.Future[Any] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(True)


def _expire(waiter: asyncio.Future[Any]) -> None:
    # a timer's callback: False tells the sleeper it was the clock, not the event
    if not waiter.done():
        waiter.set_result(False)


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one exchange at a time, with a parser per response.

    The protocol callbacks only record state and wake whoever sleeps on it (a single
    future per kind of wait), so an exchange needs no task and no queue of its own.
    """

    __slots__ = (
        "buffered",
        "chunks",
        "closed",
        "complete",
        "counted",
        "data_waiter",
        "error",
        "framed",
        "framing",
        "got_bytes",
        "head_done",
        "head_only",
        "head_room",
        "head_waiter",
        "headers",
        "idle",
        "idle_since",
        "interim",
        "keep_alive",
        "kept",
        "key",
        "left",
        "loop",
        "max_head",
        "parser",
        "pool",
        "reading_paused",
        "replayed",
        "sink",
        "spare",
        "status",
        "te",
        "transport",
        "until_close",
        "upload_cut",
        "write_waiter",
        "writing_paused",
    )

    def __init__(self, pool: Pool, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = True  # holds one of the pool's max_per_host slots
        self.idle = False  # sits in the pool's idle list
        self.idle_since = 0.0
        self.reading_paused = False
        self.writing_paused = False
        self.write_waiter: asyncio.Future[bool] | None = None
        self.data_waiter: asyncio.Future[bool] | None = None
        self.head_waiter: asyncio.Future[bool] | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.spare: httptools.HttpResponseParser | None = None  # for the next exchange
        self.sink: Sink | None = None  # told of every read (``Pool.send_now``)
        self.kept: _Kept | None = None  # the last response head, to take again
        self.begin(False, MAX_HEAD)
        # No exchange yet: no parser (bytes now would be unasked for), and "complete"
        # keeps connection_lost from inventing an error for a response nobody awaits;
        # the parser made waits for the first exchange.
        self.spare, self.parser = self.parser, None
        self.complete = True

    def begin(self, head_only: bool, max_head: int) -> None:
        """Start an exchange: a clean parser and an empty response."""
        # The parser of the last exchange when it ended cleanly (``Pool._release``): a
        # new one costs about 4,000 instructions.  Never after a HEAD response, whose
        # Content-Length llhttp would still be waiting for.
        parser = self.spare
        if parser is None:
            parser = httptools.HttpResponseParser(self)
        else:
            self.spare = None
        self.parser = parser
        self.head_only = head_only
        self.head_done = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.te: bytes | None = None  # the Transfer-Encoding, when there is one
        self.head_room = max_head  # head bytes the parser may still be fed
        self.max_head = max_head
        self.framing = 0  # chunked: bytes of the reads since the last body byte
        self.interim = False  # inside a 1xx response
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.until_close = False
        self.got_bytes = False
        self.upload_cut = False
        self.error: TransportError | None = None
        self.replayed: _Kept | None = None  # this response's head, taken again
        self.left = -1  # ... its body bytes still to come (-1: llhttp reads the body)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but behave as one
        self.transport = cast(asyncio.Transport, transport)
        if self.closed:  # the pool was closed while this connection was being made
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        parser = self.parser
        if parser is None:  # idle: bytes nobody asked for make the connection unusable
            self._fail(RemoteProtocolError("the upstream sent bytes nobody asked for"))
            return
        if self.left >= 0:  # the body of a head taken again
            self._counted_body(data)
            if self.sink is not None:
                self.sink.flush()
            return
        fresh = False
        if not self.head_done:
            room = self.head_room
            if room == self.max_head and not self.head_only:  # the response's first read
                kept = self.kept
                if kept is not None and len(kept.head) <= room and data.startswith(kept.head):
                    self._replay(kept, data)
                    if self.sink is not None:
                        self.sink.flush()
                    return
                fresh = True
            # Bounded memory: the parser (which keeps a header until it ends) never
            # gets more than max_head bytes of head; a head that does not end within
            # them is refused, whatever follows.
            if len(data) > room:
                self._past_room(parser, data, room)
                if fresh:
                    self._keep(data)
                if self.sink is not None:
                    self.sink.flush()
                return
            self.head_room = room - len(data)
            before = -1
        else:
            before = self.buffered if self.te is not None else -1
        try:  # _feed inlined: the usual read
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._malformed(exc)
        if fresh:
            self._keep(data)
        if before >= 0:  # chunked
            if self.buffered == before and not self.complete:
                self._framing_only(len(data))
            elif self.framing:
                self.framing = 0
        if self.sink is not None:
            self.sink.flush()

    def _keep(self, data: bytes) -> None:
        """``data``, the first read of a response, held its head whole: kept to be taken
        again (``_Kept``) when llhttp read it as one whose every line ends in CRLF,
        with a final status, a single Content-Length, and keep-alive."""
        status = self.status
        if (
            not self.head_done
            or self.te is not None
            or not self.framed
            or not self.keep_alive
            or self.head_only
            or self.error is not None
            or self.closed
            or status in _NO_BODY_STATUS
        ):
            return
        end = data.find(b"\r\n\r\n") + 4
        head = data[:end]
        lines = head.count(b"\r\n")
        length = [v for k, v in self.headers if k == b"content-length"]
        if (
            end < 4
            or lines != len(self.headers) + 2
            or head.count(b"\n") != lines
            or head[9:13] != b"%d " % status
            or len(length) != 1
            or not length[0].isdigit()
        ):
            return
        self.kept = _Kept(head, status, self.headers.copy(), int(length[0]))

    def _replay(self, kept: _Kept, data: bytes) -> None:
        """The response begins with ``kept``'s head: as llhttp and the checks took it."""
        self.replayed = kept
        self.status = kept.status
        self.headers = kept.headers.copy()
        self.framed = True
        self.keep_alive = True
        self.head_done = True
        if self.head_waiter is not None:
            _wake(self.head_waiter)
        if self.write_waiter is not None:
            _wake(self.write_waiter)  # an early answer may end a stalled upload
        self.left = kept.length
        self._counted_body(data[len(kept.head) :])

    def _counted_body(self, data: bytes) -> None:
        """Body bytes of a head taken again, counted out by its length; bytes past it
        go to llhttp, which reads them as it would have (``_malformed``: they spoil the
        connection, but for empty lines)."""
        left = self.left
        if len(data) < left:
            self.left = left - len(data)
            if data:
                self.on_body(data)
            return
        self.left = -1
        if data:
            self.on_body(data if len(data) == left else data[:left])
        self.on_message_complete()
        if len(data) > left:  # to llhttp, at the start of a message, as it would read them
            # (it skips empty lines; any other byte is a response nobody asked for)
            self._feed(self.parser, data[left:])  # type: ignore[arg-type]

    def _past_room(self, parser: httptools.HttpResponseParser, data: bytes, room: int) -> None:
        self._feed(parser, data[:room])
        if not self.head_done:
            self.head_room = 0
            self._fail(RemoteProtocolError("the upstream's response head is too large"))
        elif self.te is not None:
            self._feed_chunked(parser, data[room:])
        else:
            self._feed(parser, data[room:])

    def _feed_chunked(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        before = self.buffered
        self._feed(parser, data)
        if self.buffered == before and not self.complete:
            self._framing_only(len(data))
        else:
            self.framing = 0

    def _framing_only(self, size: int) -> None:
        # Chunk-size lines, extensions and trailers carry no body bytes, and the parser
        # keeps a trailer until it ends: reads that bring no body byte may add up to
        # max_head bytes, then the response is refused.
        self.framing += size
        if self.framing > self.max_head and self.error is None:
            self._fail(RemoteProtocolError("the upstream's chunk framing is too large"))

    def _feed(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        if self.closed and self.error is not None:
            return
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._malformed(exc)

    def _malformed(self, exc: Exception) -> None:
        if self.complete:
            # the response stands; whatever followed it spoils only the connection
            self.keep_alive = False
            self.close()
        else:
            self._fail(RemoteProtocolError(f"malformed response from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and self.until_close and exc is None:
                # the body was delimited by the connection's end - a clean one: a reset
                # (exc) cuts the body short, and RFC 9112 8 calls that incomplete
                self.complete = True
            else:
                where = "while sending its response" if self.head_done else "before answering"
                reason = f": {exc!r}" if exc is not None else ""
                self.error = RemoteProtocolError(
                    f"the upstream closed the connection {where}{reason}"
                )
        _wake(self.head_waiter)
        _wake(self.data_waiter)
        _wake(self.write_waiter)
        if self.sink is not None:
            self.sink.flush()
        if self.idle:  # closed by the upstream while pooled: give its slot back now
            self.pool._discard(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.write_waiter)

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # Nothing was asked for: raising makes llhttp stop right here, so these
            # bytes cannot touch the response already handed out.
            raise _SecondResponse

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer: not a header (RFC 9110 6.5.1), and not passed on
            return
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.framed = True
            if name == b"transfer-encoding":
                # two headers are one list (RFC 9110 5.3): "chunked, chunked" either way
                self.te = value if self.te is None else self.te + b"," + value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser: httptools.HttpResponseParser = self.parser  # type: ignore[assignment]
        status = parser.get_status_code()
        if status < 100 or status > 599:  # llhttp reads any three digits (RFC 9110 15)
            self._fail(RemoteProtocolError(f"the upstream sent status {status:03d}"))
            return
        if status < 200:
            if status == 101:  # the relay never asks to switch protocols
                self._fail(RemoteProtocolError("the upstream switched protocols (101)"))
                return
            # 100 Continue, 103 Early Hints...: an interim head; the real one follows
            self.interim = True
            self.headers = []
            self.framed = False
            self.te = None
            return
        te = self.te
        if te is not None and te.strip().lower() != b"chunked":
            # gzip, "chunked, chunked", "gzip, chunked"...: the relay would pass on bytes
            # it cannot frame or the client cannot decode (nginx refuses them too)
            self._fail(RemoteProtocolError(f"the upstream sent Transfer-Encoding {te!r}"))
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        if self.head_only or status in _NO_BODY_STATUS:
            self.complete = True
        elif not self.framed:
            self.until_close = True  # neither length nor chunks: the body ends with the TCP
        self.head_done = True
        # (_wake, its None check inlined: most of the time nobody waits)
        if self.head_waiter is not None:
            _wake(self.head_waiter)
        if self.write_waiter is not None:
            _wake(self.write_waiter)  # an early answer may end a stalled upload

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a HEAD response: llhttp expects the body it announced
            return
        if self.interim:  # a 1xx ends with its head (RFC 9110 15.2); llhttp reads the
            # content one announces (but a 100's, 102's, 103's): never the final body
            self._fail(RemoteProtocolError("the upstream sent content with a 1xx response"))
            raise _SecondResponse  # the parser stops here: nothing after it is read
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            cast(asyncio.Transport, self.transport).pause_reading()
            _wake(self.write_waiter)
        if self.data_waiter is not None:
            _wake(self.data_waiter)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        if self.data_waiter is not None:
            _wake(self.data_waiter)
        if self.write_waiter is not None:
            _wake(self.write_waiter)

    # -- used by the pool and the response ----------------------------------------------

    def _fail(self, error: TransportError) -> None:
        if self.error is None:
            self.error = error
        _wake(self.head_waiter)
        _wake(self.data_waiter)
        _wake(self.write_waiter)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def resume(self) -> None:
        self.reading_paused = False
        if not self.closed:
            cast(asyncio.Transport, self.transport).resume_reading()

    def start(self, head_only: bool, max_head: int) -> None:
        """Begin an exchange on this connection; raise if it closed in the meantime."""
        self.begin(head_only, max_head)
        if self.closed or self.transport.is_closing():  # type: ignore[union-attr]
            raise RemoteProtocolError("the connection closed before the request was sent")

    def head_arrived(self) -> None:
        """Raise why there is no response head, if there is none."""
        if not self.head_done:
            raise self.error or RemoteProtocolError("the connection failed before a response")

    def write(self, data: bytes) -> None:
        try:
            self.transport.write(data)  # type: ignore[union-attr]
        except RuntimeError as exc:  # uvloop refuses writes to a closed transport
            raise RemoteProtocolError("the connection closed while sending the request") from exc

    def _answered_early(self) -> bool:
        # The upstream answered before taking the whole body: when it has also said all
        # it will say, or its answer waits on us to read, more body would only deadlock.
        return self.head_done and (self.complete or self.reading_paused)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport wants more, unless a reason to stop comes first."""
        while self.writing_paused and not self.closed and not self._answered_early():
            waiter = self.write_waiter = self.loop.create_future()
            timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
            try:
                progressed = await waiter
            finally:
                self.write_waiter = None
                if timer is not None:
                    timer.cancel()
            if not progressed:
                raise ReadTimeout(f"the upstream took no request body for {timeout} s")

    async def send_bytes(self, body: bytes, timeout: float | None) -> None:
        cut = False
        for start in range(0, len(body), _WRITE_SLICE):
            if self.closed or self._answered_early():
                cut = True
                break
            self.write(body[start : start + _WRITE_SLICE])
            if self.writing_paused:
                await self.drain(timeout)
        self._after_upload(cut)

    async def send_stream(
        self, body: AsyncIterator[bytes], chunked: bool, timeout: float | None
    ) -> None:
        cut = False
        async for chunk in body:
            if self.closed or self._answered_early():
                cut = True
                break
            if not chunk:
                continue  # an empty chunk would end a chunked body early
            self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if self.writing_paused:
                await self.drain(timeout)
        if not cut and chunked and not self.closed:
            self.write(b"0\r\n\r\n")
        self._after_upload(cut)

    def _after_upload(self, cut: bool) -> None:
        if not (cut or self.closed):
            # The whole body went out. An upstream that answered early and keeps the
            # connection alive must read the rest (RFC 9112 9.3), so it is reusable -
            # unless the rest still sits in our buffer because the upstream stopped reading.
            if self.head_done and self.writing_paused:
                self.upload_cut = True
            return
        if self.head_done:
            # Answered before the body was all sent: hand that answer back, but the
            # upstream still expects the rest, so the connection carries nothing more.
            self.upload_cut = True
            return
        raise self.error or RemoteProtocolError(
            "the upstream closed the connection while the request was being sent"
        )

    async def wait_head(self, timeout: float | None) -> None:
        if not self.head_done and self.error is None:
            waiter = self.head_waiter = self.loop.create_future()
            timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
            try:
                arrived = await waiter
            finally:
                self.head_waiter = None
                if timer is not None:
                    timer.cancel()
            if not arrived:
                raise ReadTimeout(f"no response head from the upstream within {timeout} s")
        self.head_arrived()

    async def wait_data(self, timeout: float | None) -> None:
        waiter = self.data_waiter = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            arrived = await waiter
        finally:
            self.data_waiter = None
            if timer is not None:
                timer.cancel()
        if not arrived:
            raise ReadTimeout(f"no response body bytes from the upstream for {timeout} s")

    def take_body(self) -> bytes:
        """The body bytes arrived since the last call (a sink's read)."""
        chunks = self.chunks
        if not chunks:
            return b""
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return body

    def pause(self) -> None:
        """Stop reading the response for now (its reader cannot take more)."""
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            cast(asyncio.Transport, self.transport).pause_reading()

    def done(self, keep: bool = True) -> None:
        """A sink's exchange is over: the connection goes back to the pool if the
        response came whole and keep-alive holds (and ``keep``: its reader did not
        abandon it), else it closes."""
        self.sink = None
        if keep and self.reusable():
            self.pool._release(self)
        else:
            self.pool._discard(self)

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.until_close
            and not self.upload_cut
            and self.error is None
            and not self.closed
        )


class _Default:
    """The type of ``_DEFAULT``: an argument left out."""


_DEFAULT = _Default()


def header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header lines as the pool writes them (``Pool.send_now`` takes them so)."""
    return b"".join([b"%b: %b\r\n" % pair for pair in headers])


class UpstreamResponse:
    """A response head; the body streams from ``aiter_body``.

    Read the body to its end or call ``aclose``: either gives the connection back.
    """

    __slots__ = ("_conn", "_done", "headers", "status")

    status: int
    headers: list[tuple[bytes, bytes]]

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._done = False
        self.status = conn.status
        self.headers = conn.headers  # names lower-cased, values as received

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status}{' done' if self._done else ''}>"

    async def aiter_body(
        self, timeout: float | _Default | None = _DEFAULT, deadline: float | None = None
    ) -> AsyncIterator[bytes]:
        """The body as it arrives; at its end the connection goes back to the pool.

        ``timeout``: the longest wait for the next bytes (``ReadTimeout`` past it);
        by default the pool's ``read_timeout``.  ``deadline``: the loop's time by which
        the whole body must have come (``ReadTimeout`` past it, however it drips).
        """
        if self._done:
            return
        conn = self._conn
        if isinstance(timeout, _Default):
            timeout = conn.pool.read_timeout
        wait: float | None
        try:
            while True:
                if deadline is not None:
                    left = deadline - conn.loop.time()
                    if left <= 0:
                        raise ReadTimeout("the response did not end within its deadline")
                    wait = left if timeout is None or left < timeout else timeout
                else:
                    wait = timeout
                if conn.chunks:
                    chunk = conn.chunks.popleft()
                    conn.buffered -= len(chunk)
                    if conn.reading_paused and conn.buffered < LOW_WATER:
                        conn.resume()
                    yield chunk
                elif conn.error is not None:
                    raise conn.error
                elif conn.complete:
                    break
                else:
                    await conn.wait_data(wait)
        except BaseException:  # failed, timed out, or the reader stopped early
            self._finish(False)
            raise
        self._finish(True)

    def take_whole(self) -> bytes | None:
        """The whole body if it has all arrived already (the connection is released).

        None when more is to come: then read it with ``aiter_body``.
        """
        conn = self._conn
        if self._done or not conn.complete or conn.error is not None:
            return None
        body = conn.take_body()
        self._finish(True)
        return body

    async def aread(self) -> bytes:
        """The whole body (for small answers and tests)."""
        return b"".join([chunk async for chunk in self.aiter_body()])

    async def aclose(self) -> None:
        """Abandon the response: the connection closes unless the whole body had arrived."""
        self._finish(True)

    def _finish(self, reusable: bool) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if reusable and conn.reusable():
            conn.pool._release(conn)
        else:
            conn.pool._discard(conn)

    def __del__(self) -> None:
        # A response dropped unread would hold its slot of max_per_host for ever.
        if not self._done:
            # the loop may be closed already: then there is nothing left to free
            with contextlib.suppress(Exception):
                self._finish(False)


class Pool:
    """One per event loop. Keeps idle keep-alive connections per (host, port, TLS context)."""

    def __init__(
        self,
        *,
        max_per_host: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float | None = 30.0,
        idle_timeout: float = 30.0,
    ) -> None:
        """``read_timeout=None`` leaves the waits unbounded, for callers with a deadline."""
        if max_per_host < 1:
            raise ValueError("max_per_host must be at least 1")
        self.max_per_host = max_per_host
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[_Key, list[_Connection]] = {}  # oldest first, taken from the end
        self._open: dict[_Key, int] = {}  # connections holding a slot: idle, busy, connecting
        self._waiters: dict[_Key, deque[_Turn]] = {}  # first come, first served
        self._conns: set[_Connection] = set()
        self._host_lines: dict[_Key, bytes] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Pool open={sum(self._open.values())} idle={sum(map(len, self._idle.values()))}>"

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] = b"",
        tls: ssl.SSLContext | None = None,
        max_head: int = MAX_HEAD,
    ) -> UpstreamResponse:
        """Send one request; return once the response head has arrived.

        ``tls``: speak HTTPS, verifying the server against this context (its host name
        checked against ``host``); connections are pooled per host, port and context.
        ``max_head``: the most bytes the response head may take (1xx heads included).
        """
        key = (host, port, tls)
        head, chunked = self._head(method, key, target, headers, body)
        head_only = method == "HEAD"
        # an idle connection, without a coroutine, when the pool has one (the usual case)
        conn = None if self._closed else self._take_idle(key)
        if conn is not None:
            reused = True
        else:
            conn, reused = await self._acquire(key, fresh=False)
        try:
            if (
                self.read_timeout is None
                and isinstance(body, bytes)
                and len(body) <= _WRITE_SLICE
                and conn.parser is None  # idle, as expected
            ):
                # _exchange and wait_head(None) inlined for the usual small request on a
                # caller-bounded pool: two coroutine frames less between task and head
                conn.start(head_only, max_head)
                conn.write(head + body if body else head)
                if not conn.head_done and conn.error is None:
                    waiter = conn.head_waiter = conn.loop.create_future()
                    try:
                        await waiter
                    finally:
                        conn.head_waiter = None
                conn.head_arrived()
                return UpstreamResponse(conn)
            return await self._exchange(conn, head, body, chunked, head_only, max_head)
        except RemoteProtocolError as exc:
            self._discard(conn)
            # The upstream closed a pooled connection as the request went out: nothing
            # of an answer came back, so the request may go once more, on a new one -
            # if its method is idempotent: the upstream may have acted on it already.
            if not reused or conn.got_bytes:
                raise
            if method not in IDEMPOTENT_METHODS:
                raise RemoteProtocolError(
                    "a kept-alive connection closed before the upstream answered, and a "
                    f"{method} request is never sent twice"
                ) from exc
            if not isinstance(body, bytes):
                raise RemoteProtocolError(
                    "a kept-alive connection closed before the upstream answered, and a "
                    "streamed request body cannot be sent again"
                ) from exc
        except BaseException:
            self._discard(conn)
            raise
        conn, _ = await self._acquire(key, fresh=True)
        try:
            return await self._exchange(conn, head, body, chunked, head_only, max_head)
        except BaseException:
            self._discard(conn)
            raise

    def send_now(
        self,
        method: str,
        host: str,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]] | bytes,
        sink: Sink,
        tls: ssl.SSLContext | None = None,
        max_head: int = MAX_HEAD,
    ) -> _Connection | None:
        """Send a request without a body on an idle connection, now, without a
        coroutine: its response goes to ``sink`` as it arrives.  None when no idle
        connection is at hand (nothing was sent).

        ``headers`` may be header lines ready to send (``header_lines``: Host among
        them, and Content-Length: 0 for a method that needs a length), sent as they
        are."""
        if self._closed:
            return None
        key = (host, port, tls)
        conn = self._take_idle(key)
        if conn is None:
            return None
        if type(headers) is bytes:
            head = b"%b %b HTTP/1.1\r\n%b\r\n" % (method.encode("ascii"), target, headers)
        else:
            head, _ = self._head(method, key, target, headers, b"")  # type: ignore[arg-type]
        try:
            conn.start(method == "HEAD", max_head)
            conn.write(head)
        except RemoteProtocolError:
            self._discard(conn)
            return None
        conn.sink = sink
        return conn

    async def _exchange(
        self,
        conn: _Connection,
        head: bytes,
        body: bytes | AsyncIterator[bytes],
        chunked: bool,
        head_only: bool,
        max_head: int = MAX_HEAD,
    ) -> UpstreamResponse:
        conn.start(head_only, max_head)
        if isinstance(body, bytes):
            if len(body) <= _WRITE_SLICE:
                conn.write(head + body if body else head)
            else:
                conn.write(head)
                await conn.send_bytes(body, self.read_timeout)
        else:
            conn.write(head)
            await conn.send_stream(body, chunked, self.read_timeout)
        await conn.wait_head(self.read_timeout)
        return UpstreamResponse(conn)

    def _head(
        self,
        method: str,
        key: _Key,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> tuple[bytes, bool]:
        """The request head, and whether a streamed body must be chunk-encoded."""
        parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        has_host = has_length = False
        encoding: bytes | None = None
        for name, value in headers:
            # only three names matter here; their lengths spare a lower() for the rest
            if len(name) in (4, 14, 17):
                lower = name.lower()
                if lower == b"host":
                    has_host = True
                elif lower == b"content-length":
                    has_length = True
                elif lower == b"transfer-encoding":
                    encoding = value
            parts += (name, b": ", value, b"\r\n")
        if not has_host:
            line = self._host_lines.get(key)
            if line is None:
                host = key[0] if key[0].isascii() else key[0].encode("idna").decode("ascii")
                if ":" in host:  # an IPv6 literal
                    host = f"[{host}]"
                line = self._host_lines[key] = f"host: {host}:{key[1]}\r\n".encode("ascii")
            parts.append(line)
        chunked = False
        if isinstance(body, bytes):
            if not has_length and encoding is None and (body or method in _LENGTH_REQUIRED):
                parts += (b"content-length: ", b"%d" % len(body), b"\r\n")
        elif encoding is not None:  # the caller framed it: chunk it only if it said so
            chunked = encoding.rstrip().lower().endswith(b"chunked")
        elif not has_length:  # a known length is sent raw, as the caller declared it
            parts.append(b"transfer-encoding: chunked\r\n")
            chunked = True
        parts.append(b"\r\n")
        return b"".join(parts), chunked

    # -- connections and slots ------------------------------------------------------------

    async def _acquire(self, key: _Key, fresh: bool) -> tuple[_Connection, bool]:
        """A connection for one exchange, and whether it was reused from the pool."""
        self._refuse_if_closed()
        if not fresh:
            conn = self._take_idle(key)
            if conn is not None:
                return conn, True
        deadline: float | None = None
        while self._open.get(key, 0) >= self.max_per_host:
            idle = self._idle.get(key)
            if fresh and idle:  # a retry wants a new connection: make room for it
                self._discard(idle[0])
                continue
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.connect_timeout
            turn = await self._wait_for_turn(key, loop, deadline)
            self._refuse_if_closed(turn)
            if turn is False:
                raise PoolTimeout(
                    f"no free connection to {key[0]}:{key[1]} within "
                    f"{self.connect_timeout} s ({self.max_per_host} in use)"
                )
            if isinstance(turn, _Connection):
                if not fresh:
                    return turn, True
                self._discard(turn)  # frees its slot for the new connection
            elif not fresh:
                conn = self._take_idle(key)
                if conn is not None:
                    return conn, True
        return await self._connect(key), False

    def _refuse_if_closed(self, turn: _Connection | bool = False) -> None:
        if self._closed:
            if isinstance(turn, _Connection):
                self._discard(turn)
            raise TransportError("the pool is closed")

    def _take_idle(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            conn.idle = False
            transport: asyncio.Transport = conn.transport  # type: ignore[assignment]
            if conn.closed or transport.is_closing() or now - conn.idle_since > self.idle_timeout:
                self._discard(conn)
                continue
            return conn
        return None

    async def _wait_for_turn(
        self, key: _Key, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> _Connection | bool:
        waiter: _Turn = loop.create_future()
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = deque()
        waiters.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            turn = await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                _remove(waiters, waiter)
            else:  # given its turn and cancelled at once: pass it on, or it is lost
                turn = waiter.result()
                if isinstance(turn, _Connection):
                    self._release(turn)
                elif turn:
                    self._free_slot(key)
            raise
        finally:
            timer.cancel()
        if turn is False:
            _remove(waiters, waiter)
        return turn

    def _next_waiter(self, key: _Key) -> _Turn | None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _free_slot(self, key: _Key) -> None:
        waiter = self._next_waiter(key)
        if waiter is not None:
            waiter.set_result(True)

    async def _connect(self, key: _Key) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, key, loop)
        # The slot is taken before connecting, so connects in flight count too.
        self._open[key] = self._open.get(key, 0) + 1
        self._conns.add(conn)
        try:
            # asyncio.timeout, not wait_for: no extra task (Python 3.11+)
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    key[0],
                    key[1],
                    ssl=key[2],
                    server_hostname=key[0] if key[2] is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            self._discard(conn)
            reason = str(exc) or type(exc).__name__
            raise ConnectError(f"cannot connect to {key[0]}:{key[1]}: {reason}") from exc
        except BaseException:
            self._discard(conn)
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        """Back to the idle list: the response was read whole and keep-alive holds."""
        if self._closed or conn.closed:
            self._discard(conn)
            return
        if conn.reading_paused:
            conn.resume()
        # whole and kept alive: llhttp is back at the start of a message, ready for the
        # next response - unless this one answered a HEAD (its body never came)
        conn.spare = None if conn.head_only else conn.parser
        conn.parser = None
        if conn.buffered:  # body the caller chose not to read (aclose after it all came)
            conn.chunks.clear()
            conn.buffered = 0
        # Straight to the longest waiting request, if any: handing it over, rather than
        # waking it to look in the idle list, keeps a busy caller from jumping the queue.
        waiter = self._next_waiter(conn.key) if self._waiters else None
        if waiter is not None:
            waiter.set_result(conn)
            return
        conn.idle = True
        conn.idle_since = time.monotonic()
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        idle.append(conn)
        if self._sweeper is None:
            self._schedule_sweep(conn.loop)

    def _discard(self, conn: _Connection) -> None:
        """Close the connection and free its slot (idempotent)."""
        conn.close()
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(conn.key)
            if idle is not None and conn in idle:
                idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._open[conn.key] -= 1
            self._conns.discard(conn)
            self._free_slot(conn.key)

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer for the whole pool rather than one per idle connection.
        self._sweeper = loop.call_later(max(self.idle_timeout / 2, 0.05), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        oldest_allowed = time.monotonic() - self.idle_timeout
        left = False
        for idle in list(self._idle.values()):
            while idle and idle[0].idle_since < oldest_allowed:
                self._discard(idle[0])
            left = left or bool(idle)
        if left and not self._closed:
            self._schedule_sweep(loop)

    def close(self) -> None:
        """Close every connection, busy ones included; later requests raise.  Call it
        on the pool's loop (``aclose`` also lets the transports see their loss)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            self._discard(conn)
        for waiters in self._waiters.values():
            while waiters:
                _wake(waiters.popleft())

    async def aclose(self) -> None:
        """Close every connection, busy ones included; later requests raise."""
        self.close()
        await asyncio.sleep(0)  # let the transports call connection_lost


def _remove(waiters: deque[_Turn], waiter: _Turn) -> None:
    with contextlib.suppress(ValueError):
        waiters.remove(waiter)
