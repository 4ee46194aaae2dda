"""One HTTP/1.1 connection: llhttp (httptools) parses, an ASGI app answers.

The parser keeps llhttp's strict defaults: a request with both ``Content-Length`` and
``Transfer-Encoding``, two ``Content-Length``, a bad chunk size, a control character
in a header, an obsolete line folding... is a parse error, answered 400 and closed
(RFC 9112 6.1, 6.3, 5.2). On top of it: the head's bounds (431, 414), one ``Host``
under HTTP/1.1 (400), HTTP/1.0 and 1.1 only (505), no transfer coding but a single
``chunked`` (501, RFC 9112 6.1), no ``CONNECT`` (501).

A request whose header lines are the very bytes of the connection's last request's,
after a plain ``GET`` or ``HEAD`` request line, in a read of its own between two
requests, is taken as llhttp and the checks took that one, without them (``_Replay``).

Requests of one connection are answered strictly in order: one pipelined behind the
one being served is parsed, then what follows it waits until the response before it
ends - held unparsed (at most ``body_buffer`` bytes; past that reading pauses) rather
than left unread, so that a FIN behind it is seen.
A response's head waits for its first body message, so a small answer is one write.

A client's FIN (it sends no more) ends the connection, as uvicorn and nginx
(``proxy_ignore_client_abort off``) take it: the request being answered is gone - its
``receive()`` answers ``http.disconnect`` at once, what the app sends after is dropped -
and so are the requests pipelined behind it, which never run; the connection closes
once what was already written has gone out. RFC 9112 9.6 notes that a half-close does
not of itself mean the client lost interest in the answer, but a server cannot tell it
from a client that left, and a long-poll or a queued request kept for one that left
holds its place for nothing: a client that half-closes and then waits (``nc -N``) gets
no answer, as from uvicorn. After the server's own error answer and its FIN (a
lingering close), the client's FIN just ends the wait.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

from coyote_mw.server.wire import Host, date_line, error_answer, status_line, unwind

__all__ = ["Exchange", "H1Connection", "Shortcut"]

log = logging.getLogger("coyote_mw.server")

_DISCONNECT = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CRLF = b"\r\n"
_SPECIAL = frozenset(
    (b"connection", b"expect", b"transfer-encoding", b"upgrade", b"host", b"content-length")
)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_OWS = (b" ", b"\t")
# The request line of a request whose header lines repeat the connection's last ones
# (``_Replay``): GET or HEAD, an origin-form target of RFC 3986's characters alone (each
# of which llhttp takes as it is), HTTP/1.0 or 1.1.  Any other line goes to llhttp.
_LINE = re.compile(rb"(GET|HEAD) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.([01])")
_VALID: set[tuple[bytes, bytes]] = set()  # response header lines found valid (bounded)
_VALID_MAX = 1024
_VALID_VALUE_MAX = 64  # bytes of a kept line's value, and of its name
# Response heads made before (``Exchange.start``), by status, the request's version and
# keep-alive, HEAD or not, the server's lines and the app's lines, when each of those
# could be kept in _VALID (no cookie, no long name or value): the head up to its Date line,
# the body's length, chunked or not, keep-alive, no body.  Bounded, as _VALID.
_HEADS: dict[tuple[Any, ...], tuple[bytes, int | None, bool, bool, bool]] = {}
_HEADS_MAX = 256
_HEAD_LINES_MAX = 16  # a head of more lines is made each time

# what the reading is paused for (a bit each): the body buffer is full, a pipelined
# request waits for the one before it, the parser will take no more, the client does
# not read what is written to it, the bytes held behind a pipelined request are at
# their bound; all but _PIPELINE stop the transport (behind a pipelined request, what
# comes is held, not parsed)
_BODY, _PIPELINE, _DONE, _WRITE, _HELD = 1, 2, 4, 8, 16
# what the connection's timer is waiting for
_IDLE, _HEAD, _BUSY, _DISCARD = 0, 1, 2, 3


class Shortcut(Protocol):
    """What may answer a request without ASGI (``Server(shortcut=...)``): called with
    a request that has no body, no ``Expect``, no ``Upgrade`` and an origin-form target,
    once its head is read (``conn.headers``: its header lines, names lowercase) and no
    other request of its connection is under way.  It returns the ``Exchange`` it
    answers the request with, or None to leave the request to the app.

    An exchange answers with ``start`` and ``write``, learns of a client gone with
    ``gone`` and of a client that does not read with ``writing_paused`` /
    ``writing_resumed``; one that has answered nothing yet may give the request to the
    app after all (``conn.hand_to_app``).  ``conn.memo`` is the shortcut's own, kept for
    the connection's life (None at first): what it learnt from the requests before."""

    def __call__(
        self,
        conn: H1Connection,
        method: str,
        version: str,
        raw_path: bytes,
        query: bytes,
        keep_alive: bool,
    ) -> Exchange | None: ...


class _Replay:
    """The last request head of a connection that llhttp parsed whole in one read, a
    ``GET`` or ``HEAD`` whose request line ``_LINE`` reads as llhttp did, with no body,
    nothing before or behind it, and that passed every check (``H1Connection.replay``;
    a later head that is not such a one leaves it as it is):
    its header lines' bytes (from the request line's CRLF to the blank line's), the
    lines as they were read, and what the checks made of them.  A client on a kept-alive
    connection usually sends the same lines again, with another target: a read that is
    a plain request line (``_LINE``) and these bytes is that request, and is taken
    without llhttp or the per-line checks - the same bytes after the same kind of line,
    at the same point (between two requests), make the same head."""

    __slots__ = ("block", "cost", "headers", "keep_alive", "version")

    def __init__(
        self,
        block: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        cost: int,
    ) -> None:
        self.block = block
        self.version = version  # "1.0" or "1.1": the checks and keep-alive depend on it
        self.headers = headers  # (copied for each request: an app may change its list)
        self.keep_alive = keep_alive  # as the lines and the version make it
        self.cost = cost  # the head bytes the lines take (``room``)


class _Refuse(Exception):
    """A request the server answers itself (raised in a parser callback)."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        self.status, self.error, self.detail = status, error, detail


class H1Connection(asyncio.Protocol):
    def __init__(self, server: Host) -> None:
        self.server = server
        self.options = server.options
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.scheme = "http"
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.cycle: Exchange | None = None  # the one being answered (by the app or a shortcut)
        self.parsing: Exchange | None = None  # the one whose body the parser reads
        self.waiting: deque[_Cycle] = deque()  # pipelined behind self.cycle
        self.paused = 0
        self.held: list[bytes] = []  # what came behind a pipelined request, unparsed
        self.held_size = 0
        self.write_paused = False
        self.write_deadline = 0.0  # while writes wait for the client: when it is cut off
        self.drained: asyncio.Future[None] | None = None
        self.closing = False
        self.unwound = False  # over TLS, closed: found with nothing left to send once
        self.lingering = -1  # bytes dropped after the server's own answer, or -1
        self.refusal: _Refuse | None = None  # answered once the responses before it end
        self.memo: object = None  # the shortcut's (``Shortcut``)
        self.replay: _Replay | None = None  # the last head, to take again (``_Replay``)
        self.candidate: tuple[str, str, bool, int] | None = None  # ... one just parsed
        self.rebuilt = False  # parsing a head the server made (``_upgrade``)
        # the head being read
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.room = 0  # bytes the head (target and header lines) may still take
        self.max_headers = self.options.max_headers
        self.in_head = False
        self.began = 0  # messages begun in these data
        self.hosts = 0
        self.connection = b""
        self.expect = False
        self.codings: list[bytes] = []
        self.length = b""  # the Content-Length
        self.upgrade = b""
        self.upgrading: _Cycle | None = None
        self.head_seen = 0  # bytes received while a head is incomplete
        self.fed = 0  # bytes of these data the parser has called back with
        self.head_start = 0
        # the timer (the server's ticker checks it)
        self.state = _HEAD
        self.deadline = 0.0
        self.got_bytes = False

    # -- the transport's calls ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if len(server.connections) >= self.options.max_connections or server.stopping:
            self.closing = True
            transport.close()
            return
        server.connections.add(self)
        self.deadline = self.loop.time() + self.options.header_timeout
        info = transport.get_extra_info
        self.client = _address(info("peername"))
        self.local = _address(info("sockname"))
        if info("sslcontext") is not None:
            self.scheme = "https"

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._gone()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.options.send_timeout
        self._pause(_WRITE)  # no more requests while their answers cannot go
        if self.cycle is not None:
            self.cycle.writing_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        self._resume(_WRITE)
        if self.cycle is not None:
            self.cycle.writing_resumed()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and not self.closing:
            self.drained = self.loop.create_future()
            await self.drained

    def eof_received(self) -> bool | None:
        # the end of the connection (see the module docstring): its requests are gone
        # now, not once what is written has gone out (a client that does not read may
        # hold the close up to send_timeout)
        if self.lingering < 0:
            self._gone()
        return None  # closes the transport

    def _gone(self) -> None:
        """The client is gone, and every request it made on this connection with it."""
        self.closing = True
        for cycle in (self.cycle, *self.waiting):
            if cycle is not None:
                cycle.gone()
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        if self.lingering >= 0:
            self.lingering += len(data)
            if self.lingering > self.options.max_discard:
                self.transport.close()
            return
        if self.paused & _DONE:
            return  # the parser takes no more on this connection
        if self.paused & _PIPELINE:  # parsed once the requests before are answered
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size > self.options.body_buffer:
                self._pause(_HELD)
            return
        if self.held:
            data = b"".join((*self.held, data))
            self.held, self.held_size = [], 0
        between = not self.in_head and self.cycle is None and self.parsing is None
        if between:  # the parser waits for a request line
            replay = self.replay
            if replay is not None and data.endswith(replay.block):
                line = _LINE.fullmatch(data, 0, len(data) - len(replay.block))
                if line is not None and self._replayed(line, replay):
                    return
        self.got_bytes = True
        if self.state == _IDLE:
            self.state, self.deadline = _HEAD, self.loop.time() + self.options.header_timeout
        self.began = 0
        self.fed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            self._upgrade(data[up.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._failed(exc)
            return
        if self.candidate is not None:
            candidate, self.candidate = self.candidate, None
            if (
                between
                and self.began == 1
                and self.parsing is None
                and not (self.closing or self.rebuilt)
            ):
                self._remember(data, *candidate)
        if self.in_head:  # an unfinished head, bounded (llhttp keeps a partial line)
            if self.began:  # what came before it in these bytes, within a few bytes
                self.head_seen = len(data) - self.head_start
            else:
                self.head_seen += len(data)
            if self.head_seen > self.options.max_head_bytes:
                self._refuse(_Refuse(431, "Request header fields too large"))
        elif self.parsing is not None:  # in a body: a chunk line or a trailer line that
            # does not end (httptools keeps a trailer line whole) is bounded as a head
            pieces = self.parsing.body
            if len(pieces) > 64:  # tiny chunks: one bytes object, not one each
                self.parsing.body = [b"".join(pieces)]
            self.head_seen = 0 if self.fed else self.head_seen + len(data)
            if self.head_seen > self.options.max_head_bytes:
                self._refuse(_Refuse(400, "Bad request", "a chunk or trailer line too long"))

    # -- the parser's calls ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.began += 1
        self.in_head = True
        self.head_start = self.fed
        self.url, self.headers, self.head_seen = b"", [], 0
        self.room = self.options.max_head_bytes
        self.hosts, self.connection, self.expect, self.codings = 0, b"", False, []
        self.upgrade = self.length = b""
        if self.cycle is not None:  # pipelined: parse this head, then wait
            if len(self.waiting) >= self.options.max_pipeline:
                raise _Refuse(0, "too many pipelined requests")
            self._pause(_PIPELINE)

    def on_url(self, url: bytes) -> None:
        self.fed += len(url)
        self.room -= len(url)
        self.url += url
        if len(self.url) > self.options.max_target:
            raise _Refuse(414, "Request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # (on every line of every request: kept short)
        size = len(name) + len(value) + 4
        self.fed += size
        self.room -= size
        if not self.in_head:  # a chunked body's trailer: not passed on, bounded as the head
            if self.room < 0:
                raise _Refuse(431, "Request header fields too large", "the trailer section")
            return
        headers = self.headers
        if self.room < 0 or len(headers) >= self.max_headers:
            raise _Refuse(431, "Request header fields too large")
        name = name.lower()
        if value[-1:] in _OWS:  # whitespace around a value is not part of it
            value = value.rstrip(b" \t")
        if name in _SPECIAL:
            if name == b"host":
                self.hosts += 1
            elif name == b"connection":
                self.connection += b"," + value.lower()
            elif name == b"expect":
                self.expect = value.lower() == b"100-continue"
            elif name == b"transfer-encoding":
                self.codings += [t.strip().lower() for t in value.split(b",")]
            elif name == b"content-length":
                self.length = value
            else:
                self.upgrade = value.lower()
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_seen = 0
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            if version.startswith(("0.", "1.")):
                raise _Refuse(400, "Bad request", "HTTP/1.0 or HTTP/1.1 only")
            raise _Refuse(505, "HTTP version not supported", "HTTP/1.0 or HTTP/1.1 only")
        if self.hosts != 1 and (self.hosts or version == "1.1"):
            raise _Refuse(400, "Bad request", "an HTTP/1.1 request has one Host header")
        if self.codings and self.codings != [b"chunked"]:
            raise _Refuse(
                501, "Not implemented", "transfer coding: only a single 'chunked' is implemented"
            )
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise _Refuse(501, "Not implemented", "CONNECT")
        url = self.url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
            if b"#" in url:
                raw_path, query = raw_path.partition(b"#")[0], query.partition(b"#")[0]
        else:  # absolute-form (RFC 9112 3.2.2) or asterisk-form: its path and query
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _Refuse(400, "Bad request", "the request target") from None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        if version == "1.1":
            keep_alive = b"close" not in self.connection or not _has(self.connection, b"close")
        else:  # a transfer coding in HTTP/1.0: faulty framing, closed after (RFC 9112 6.1)
            keep_alive = not self.codings and (
                b"keep-alive" in self.connection and _has(self.connection, b"keep-alive")
            )
        expect = self.expect and version == "1.1"
        plain = (
            url[:1] == b"/"
            and not (self.codings or self.upgrade or expect)
            and (not self.length or self.length == b"0")
        )
        if plain and self.cycle is None and (method == "GET" or method == "HEAD"):
            # its lines may be taken again (data_received: once it is whole, alone)
            cost = self.options.max_head_bytes - self.room - len(url)
            self.candidate = (method, version, keep_alive, cost)
        self._dispatch(
            method,
            version,
            raw_path,
            query,
            keep_alive,
            expect,
            plain,
            self.upgrade != b"" and _has(self.connection, b"upgrade"),
        )

    def _dispatch(
        self,
        method: str,
        version: str,
        raw_path: bytes,
        query: bytes,
        keep_alive: bool,
        expect: bool,
        plain: bool,
        upgrading: bool,
    ) -> None:
        """A request's head is read and checked: to the shortcut, or to the app.
        ``plain``: no body, transfer coding, ``Upgrade`` or ``Expect``, and an
        origin-form target."""
        server = self.server
        keep_alive = keep_alive and not server.stopping
        shortcut = server.shortcut
        if shortcut is not None and plain and self.cycle is None and not self.options.root_path:
            # a request without a body, nothing before it: the shortcut may take it
            taken = shortcut(self, method, version, raw_path, query, keep_alive)
            if taken is not None:
                self.parsing = self.cycle = taken
                self.state = _BUSY
                return
        scope = self.scope(method, version, raw_path, query)
        cycle = _Cycle(self, scope, keep_alive, expect)
        if method == "HEAD":
            cycle.head_only = True
        self.parsing = cycle
        if upgrading:
            # llhttp pauses after this message: _upgrade takes it (a Connection without
            # "upgrade" makes no upgrade request, RFC 9110 7.8: plain HTTP then)
            self.upgrading = cycle
            return
        if self.cycle is None:
            self._run(cycle)
        else:
            self.waiting.append(cycle)

    def _remember(
        self, data: bytes, method: str, version: str, keep_alive: bool, cost: int
    ) -> None:
        """``data`` were one whole request with no body (``candidate``): its header lines
        are kept to be taken again, if its request line is one ``_LINE`` reads as llhttp
        did."""
        end = data.find(b"\r\n")
        line = _LINE.fullmatch(data, 0, end)
        if line is None or line[2] != self.url or line[1] != method.encode("ascii"):
            return
        block = data[end:]
        # the read ends with the head (llhttp skips empty lines between requests: they
        # are not kept), and is within the head's bound
        if block.find(b"\r\n\r\n") != len(block) - 4 or len(block) > self.options.max_head_bytes:
            return
        self.replay = _Replay(block, version, self.headers.copy(), keep_alive, cost)

    def _replayed(self, line: re.Match[bytes], replay: _Replay) -> bool:
        """The request of ``line`` and the kept header lines (``_Replay``), as llhttp and
        the checks would take it; False when it is not one to take so (its target too
        long, or the head with it), or comes in another HTTP version: llhttp reads it."""
        url = line[2]
        options = self.options
        version = "1.1" if line[3] == b"1" else "1.0"
        if (
            version != replay.version
            or len(url) > options.max_target
            or len(url) + replay.cost > options.max_head_bytes
        ):
            return False
        self.got_bytes = True
        self.url = url
        self.headers = replay.headers.copy()
        self.head_seen = 0
        raw_path, _, query = url.partition(b"?")
        method = "GET" if line[1] == b"GET" else "HEAD"
        try:  # (what raises in llhttp's callbacks is a parse error there: the same here)
            self._dispatch(method, version, raw_path, query, replay.keep_alive, False, True, False)
            self.on_message_complete()  # no body: it is whole
        except _Refuse as refusal:
            self._refuse(refusal)
        except Exception:
            self._refuse(_Refuse(400, "Bad request", "User callback error"))
        return True

    def on_body(self, body: bytes) -> None:
        self.fed += len(body)
        cycle = self.parsing
        assert cycle is not None
        if cycle.complete:  # the app answered without reading it: discard, bounded
            cycle.discarded += len(body)
            if cycle.discarded > self.options.max_discard:
                self.transport.close()
            return
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > self.options.body_buffer:
            self._pause(_BODY)
        waiter = cycle.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        cycle = self.parsing
        assert cycle is not None
        self.parsing = None
        cycle.more_body = False
        if cycle.complete:  # its unread body is all discarded now
            self._next()
            return
        waiter = cycle.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- requests in order -----------------------------------------------------------

    def _run(self, cycle: _Cycle) -> None:
        self.cycle = cycle
        self.state = _BUSY
        cycle.task = task = self.loop.create_task(cycle.run(self.server.app))
        self.server.track(task)

    def scope(self, method: str, version: str, raw_path: bytes, query: bytes) -> dict[str, Any]:
        """The ASGI scope of a request of this connection (its head just read)."""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        root = self.options.root_path
        server = self.server
        return {
            "type": "http",
            "asgi": server.asgi,
            "http_version": version,
            "server": self.local,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode() + raw_path if root else raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": server.state.copy(),
        }

    def hand_to_app(self, taken: Exchange, method: str, raw_path: bytes, query: bytes) -> None:
        """A request a shortcut took, and gives back before it answered anything: the
        app answers it after all (its whole head and no body were read)."""
        cycle = _Cycle(
            self,
            self.scope(method, taken.version, raw_path, query),
            taken.keep_alive,
            False,
        )
        cycle.headers = cycle.scope["headers"] = taken.headers
        cycle.more_body = taken.more_body
        if method == "HEAD":
            cycle.head_only = True
        if self.parsing is taken:
            self.parsing = cycle
        self._run(cycle)

    def finished(self, cycle: Exchange) -> None:
        """The response of ``cycle`` is whole: on to the next request, if any."""
        if not cycle.keep_alive or self.closing:
            self.closing = True
            self.transport.close()
            return
        if cycle.more_body:  # its body is still coming: discard it before the next one
            if cycle.expect or cycle.declared_over(self.options.max_discard):
                self.closing = True
                self.transport.close()
                return
            self.state, self.deadline = _DISCARD, self.loop.time() + self.options.keep_alive_timeout
            self._resume(_BODY)
            return
        self._next()

    def _next(self) -> None:
        self.cycle = None
        if self.closing:
            return
        if self.waiting:
            self._run(self.waiting.popleft())
        elif self.refusal is not None:
            self._answer(self.refusal)
            return
        elif self.in_head:
            self.state, self.deadline = _HEAD, self.loop.time() + self.options.header_timeout
        else:
            self.state, self.deadline = _IDLE, self.loop.time() + self.options.keep_alive_timeout
        if self.paused & _PIPELINE and not self.waiting:
            self._resume(_PIPELINE)

    def _pause(self, why: int) -> None:
        if why != _PIPELINE and not self.paused & ~_PIPELINE:
            self.transport.pause_reading()
        self.paused |= why

    def _resume(self, why: int) -> None:
        paused = self.paused
        if paused & why:
            if why == _PIPELINE:  # what is held goes to the parser
                why |= _HELD
            self.paused &= ~why
            if self.closing:
                return
            if paused & ~_PIPELINE and not self.paused & ~_PIPELINE:
                self.transport.resume_reading()
            if self.held and not self.paused:
                self.loop.call_soon(self._release)

    def _release(self) -> None:
        """What was held behind a pipelined request, parsed now that its turn came (any
        bytes read meanwhile come after it)."""
        if self.held and not self.paused and not self.closing and self.lingering < 0:
            self.data_received(b"")

    # -- what the server answers itself ------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        cause = exc.__context__
        if isinstance(cause, _Refuse):
            self._refuse(cause)
            return
        version = self._version()
        if version.startswith("2") or version.startswith("3"):
            self._refuse(_Refuse(505, "HTTP version not supported", "HTTP/1.0 or HTTP/1.1 only"))
        else:
            self._refuse(_Refuse(400, "Bad request", str(exc)))

    def _version(self) -> str:
        try:
            return str(self.parser.get_http_version())
        except Exception:
            return ""

    def _refuse(self, refusal: _Refuse) -> None:
        """The parser takes no more: answer ``refusal`` once the responses before it
        are whole, then close."""
        self._pause(_DONE)
        self.in_head = False
        if refusal.status:
            log.info(
                "refused a request from %s: %d %s",
                _peer(self.client),
                refusal.status,
                refusal.error,
            )
        parsing = self.parsing
        if parsing is not None and parsing is self.cycle:  # its body is broken
            parsing.gone()
            if parsing.started:
                self.transport.close()
                return
        self.waiting = deque(c for c in self.waiting if c is not parsing)
        if self.cycle is None or self.cycle is parsing:
            self.cycle = None
            self._answer(refusal)
        else:  # after the answers to the requests before it
            self.refusal = refusal

    def _answer(self, refusal: _Refuse) -> None:
        self.closing = True
        if not refusal.status:
            self.transport.close()
            return
        self.transport.write(
            error_answer(refusal.status, refusal.error, self.server.extra, refusal.detail)
        )
        if self.scheme == "https":  # the TLS close reads on and drops what still comes
            self.transport.close()  # (see unwinding): a lingering close of its own
            self.lingering = 0
            self.deadline = self.loop.time() + self.options.keep_alive_timeout
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # a lingering close, as nginx's: the answer, our side shut, then what the client
        # still sends read and dropped (bounded: max_discard bytes, keep_alive_timeout
        # seconds), so that its unread bytes do not reset the connection over the answer
        self.transport.write_eof()
        self.lingering = 0
        self.state, self.deadline = _DISCARD, self.loop.time() + self.options.keep_alive_timeout
        self.paused = 0
        self.transport.resume_reading()

    def _upgrade(self, rest: bytes) -> None:
        cycle, self.upgrading = self.upgrading, None
        if cycle is None or self.cycle is not None or self.waiting:
            self._refuse(_Refuse(400, "Bad request", "an upgrade behind another request"))
            return
        if b"websocket" in self.upgrade and cycle.scope["method"] == "GET":
            from coyote_mw.server.ws import WebSocketConnection

            self.server.connections.discard(self)
            self.closing = True
            ws = WebSocketConnection(self.server, self.transport, cycle.scope, self.url)
            self.transport.set_protocol(ws)
            ws.start(rest)
            return
        # another protocol (h2c...): not served, so the request is plain HTTP (RFC 9110
        # 7.8: a server may ignore Upgrade); llhttp took what follows its head for the
        # other protocol's bytes, so it is parsed again without Upgrade, body and all
        scope = cycle.scope
        head = [scope["method"].encode(), b" ", self.url, b" HTTP/"]
        head += (scope["http_version"].encode(), b"\r\n")
        for name, value in scope["headers"]:
            if name != b"upgrade":
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.parser = httptools.HttpRequestParser(self)
        self.rebuilt = True  # (its lines are not the client's: not kept)
        try:
            self.data_received(b"".join(head) + rest)
        finally:
            self.rebuilt = False

    def shutdown(self) -> None:
        """The server stops: an idle connection closes now, a busy one after its answer."""
        if self.cycle is None and not (self.in_head and self.got_bytes):
            self.closing = True
            self.transport.close()
            return
        for cycle in (self.cycle, *self.waiting):
            if cycle is not None:
                cycle.keep_alive = False

    def expired(self) -> None:
        """The connection's timer ran out (the server's ticker calls it)."""
        if self.state == _HEAD and self.cycle is None and self.head_started():
            log.info(
                "no whole request head from %s in %ss: 408",
                _peer(self.client),
                self.options.header_timeout,
            )
            self._answer(_Refuse(408, "Request timeout", "the request head took too long"))
        else:
            self.closing = True
            self.transport.close()

    def stalled(self) -> None:
        """Writes waited ``send_timeout`` for the client to read: cut off (a close would
        wait for ever for the buffer to go), and the app sees it gone."""
        log.info(
            "%s read nothing of its answer in %ss: closed",
            _peer(self.client),
            self.options.send_timeout,
        )
        self.closing = True
        self.write_deadline = 0.0
        self.transport.abort()

    def unwinding(self) -> None:
        """Over TLS the transport, once closed, waits for the client's close_notify
        (asyncio waits up to 30 s; a client that never reads again never sends it) and
        holds the connection's place meanwhile.  Once everything written has reached the
        client - nothing left in the TLS layer, nothing unacknowledged in the kernel, at
        two ticks in a row - there is nothing more to wait for: the socket is closed
        (the client gets the TCP close after the server's close_notify), as nginx does
        not wait for the client's either.  Where the kernel cannot say what is
        unacknowledged, asyncio's wait stands.  After the server's own error answer it
        waits as a lingering close does (``keep_alive_timeout``, not past a stop), so that
        what the client still sends meanwhile is dropped, not answered with a reset."""
        if self.lingering >= 0 and not self.server.stopping and self.loop.time() < self.deadline:
            return
        self.unwound = unwind(self.transport, self.unwound)

    def head_started(self) -> bool:
        return self.in_head and self.got_bytes


def _has(tokens: bytes, token: bytes) -> bool:
    return token in (t.strip() for t in tokens.split(b","))


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class Exchange:
    """One request and its response as the connection sees them: the request's framing
    state, and the response's head and body written to the client under the server's
    rules (``start``, ``write``).  ``_Cycle`` has an ASGI app answer it; a ``Shortcut``
    (``Server(shortcut=...)``) may answer a request itself, without ASGI."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "complete",
        "conn",
        "discarded",
        "disconnected",
        "expect",
        "final_sent",
        "head",
        "head_only",
        "headers",
        "keep_alive",
        "more_body",
        "remaining",
        "started",
        "version",
        "waiter",
    )

    def __init__(
        self,
        conn: H1Connection,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
        expect: bool,
    ) -> None:
        self.conn = conn
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.expect = expect
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.final_sent = False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.discarded = 0
        self.started = False
        self.complete = False
        self.head_only = False
        self.head = b""
        self.chunked = False
        self.remaining: int | None = None

    def gone(self) -> None:
        """The client is gone (or its request body will never end)."""
        self.disconnected = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def writing_paused(self) -> None:
        """The client does not read what is written for it: write no more for now."""

    def writing_resumed(self) -> None:
        """... it reads again."""

    def declared_over(self, limit: int) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return int(value) - self.buffered > limit
        return False

    def start(self, status: int, headers: Any) -> None:
        """The response's head, written with the first of its body (``write``)."""
        conn = self.conn
        if (
            self.keep_alive
            and self.more_body
            and (self.expect or self.declared_over(conn.options.max_discard))
        ):
            self.keep_alive = False  # a body nobody reads, too big to discard
        # Most heads repeat: one made before is taken whole, but for its Date line.
        extra = conn.server.extra
        if type(headers) is not list:  # any iterable (ASGI): read once
            headers = list(headers)
        key: tuple[Any, ...] | None
        try:
            made = _HEADS.get(
                key := (status, self.version, self.keep_alive, self.head_only, extra, *headers)
            )
        except TypeError:  # a bytearray or a list among the lines: made every time
            key = made = None
        if made is not None:
            self.head = b"%b%b\r\n" % (made[0], date_line())
            _, self.remaining, self.chunked, self.keep_alive, self.head_only = made
            self.started = True
            self.expect = False
            return  # (its status was checked when it was made)
        line = status_line(status)
        if status < 200:
            raise RuntimeError(f"status {status}: an ASGI response is a final one")
        # (afresh: a head refused halfway may be followed by an error answer's)
        self.remaining = None
        self.chunked = False
        parts = [line]
        framed = False
        close_said = False
        length_at = coding_at = 0  # where those lines are in parts
        kept = key is not None and len(headers) <= _HEAD_LINES_MAX
        for name, value in headers:
            try:
                known = (name, value) in _VALID
            except TypeError:  # a bytearray (unhashable): checked every time
                known = False
            if not known:
                if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                    raise RuntimeError(f"invalid response header {name!r}: {value!r}")
                # most lines repeat: each is checked once (as coyote_mw.handlers
                # encodes them: no long values, no cookies, which are not to be kept)
                if (
                    type(name) is bytes
                    and type(value) is bytes
                    and len(value) <= _VALID_VALUE_MAX
                    and len(name) <= _VALID_VALUE_MAX
                    and name.lower() != b"set-cookie"
                ):
                    if len(_VALID) >= _VALID_MAX:
                        _VALID.clear()
                    _VALID.add((name, value))
                else:
                    kept = False  # nor is a head that has such a line
            lower = name.lower()
            if lower == b"content-length":
                if self.remaining is not None or not value.strip().isdigit():
                    raise RuntimeError(f"invalid response Content-Length {value!r}")
                self.remaining = int(value)
                framed = True
                length_at = len(parts)
            elif lower == b"transfer-encoding":
                if value.strip().lower() != b"chunked" or self.chunked:
                    raise RuntimeError(f"response transfer coding {value!r}: chunked only")
                self.chunked = framed = True
                coding_at = len(parts)
            elif lower == b"connection" and _has(value.lower(), b"close"):
                self.keep_alive, close_said = False, True
            parts += (name, b": ", value, b"\r\n")
        if coding_at or (length_at and status == 204):
            drop = (length_at, coding_at) if status == 204 else ()
            if self.chunked and (length_at or self.version == "1.0"):
                # the chunks are the body (RFC 9112 6.3), and a length never goes with
                # them (6.1); an HTTP/1.0 client reads no chunks: its body ends with the
                # connection
                drop = (*drop, length_at)
                self.remaining = None
                if self.version == "1.0":
                    drop = (*drop, coding_at)
                    self.chunked = framed = False
            # (neither goes with a 204: RFC 9110 8.6, RFC 9112 6.1)
            for at in sorted({at for at in drop if at}, reverse=True):
                parts[at : at + 4] = ()
        if self.head_only or status in (204, 304):
            self.head_only = True
            self.remaining = None
            self.chunked = False
        elif not framed:
            if self.version == "1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not self.keep_alive:
            if not close_said:
                parts.append(b"connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(extra)
        if kept:
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.clear()
            _HEADS[key] = (  # type: ignore[index]
                b"".join(parts),
                self.remaining,
                self.chunked,
                self.keep_alive,
                self.head_only,
            )
        parts += (date_line(), b"\r\n")
        self.head = b"".join(parts)
        self.started = True
        self.expect = False

    def write(self, body: bytes, more: bool) -> None:
        """Body bytes of the response (after ``start``), framed as its head says; the
        last (``more`` false) ends the response, and the connection goes on to the next
        request.  A body longer or shorter than its Content-Length closes the connection
        (RuntimeError)."""
        conn = self.conn
        head = self.head
        self.head = b""
        overflow = False
        if self.head_only:
            out = head
        elif self.chunked:
            if len(body) >= 65536:
                conn.transport.writelines((b"%b%x\r\n" % (head, len(body)), body, _CRLF))
                out = b"" if more else b"0\r\n\r\n"
            elif body:
                out = b"%b%x\r\n%b\r\n" % (head, len(body), body)
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out = head + b"0\r\n\r\n" if not more else head
        elif self.remaining is not None:
            if len(body) > self.remaining:
                body, overflow = body[: self.remaining], True
            self.remaining -= len(body)
            out = head + body if len(body) < 65536 else b""
            if not out:
                conn.transport.writelines((head, body))
        else:  # close-delimited (HTTP/1.0 without a length)
            out = head + body
        if out:
            conn.transport.write(out)
        if overflow or (not more and self.remaining):
            self.complete = True
            conn.closing = True
            conn.transport.close()
            raise RuntimeError(
                f"the response body is {'longer' if overflow else 'shorter'} than its "
                "Content-Length: connection closed"
            )
        if not more:
            self.complete = True
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
            conn.finished(self)


class _Cycle(Exchange):
    """One request an ASGI app answers."""

    __slots__ = ("scope", "task")

    def __init__(
        self, conn: H1Connection, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        super().__init__(conn, scope["headers"], scope["http_version"], keep_alive, expect)
        self.scope = scope
        self.task: asyncio.Task[None] | None = None

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if not self.started:
                log.error(
                    "the app failed before it answered %s %s",
                    self.scope["method"],
                    self.scope["path"],
                    exc_info=exc,
                )
                self._internal_error()
            else:
                log.error(
                    "the app failed during its answer to %s %s",
                    self.scope["method"],
                    self.scope["path"],
                    exc_info=exc,
                )
                self.conn.transport.close()
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            if not self.started:
                if not self.disconnected:
                    log.error(
                        "the app returned without answering %s %s",
                        self.scope["method"],
                        self.scope["path"],
                    )
                    self._internal_error()
            elif not self.complete and not self.disconnected:  # (sends after: ignored)
                log.error(
                    "the app returned before its answer to %s %s was whole",
                    self.scope["method"],
                    self.scope["path"],
                )
                self.conn.transport.close()

    def _internal_error(self) -> None:
        conn = self.conn
        self.started = self.complete = True
        if not conn.closing and not self.disconnected:
            conn.transport.write(error_answer(500, "Internal Server Error", conn.server.extra))
        conn.closing = True
        conn.transport.close()

    # -- ASGI --------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.expect:
            self.expect = False
            if not self.started and self.more_body and not conn.closing:
                conn.transport.write(_CONTINUE)
        while not (self.disconnected or self.complete):
            if self.body or (not self.more_body and not self.final_sent):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.buffered = 0
                conn._resume(_BODY)
                self.final_sent = not self.more_body
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            # wait for more of the body; after all of it, until the client is gone (one
            # future for every task waiting, shielded: a waiter cancelled, as Starlette's
            # is_disconnected() cancels its own, leaves the others waiting on it)
            waiter = self.waiter
            if waiter is None or waiter.done():
                waiter = self.waiter = conn.loop.create_future()
            await asyncio.shield(waiter)
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
        if self.complete:
            raise RuntimeError("'http.response.body' after the response was whole")
        if self.disconnected:
            return
        more: bool = message.get("more_body", False)
        self.write(message.get("body", b""), more)
        if more and self.conn.write_paused:
            await self.conn.drain()
