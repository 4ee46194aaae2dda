"""Relaying without ASGI: the shortcut coyote's own server takes for the usual request.

``coyote leader --http coyote`` serves the leader's ASGI middleware on coyote's own
HTTP/1.1 server (``coyote_mw.server``).  Before it builds a request's scope, the server
offers a request that has no body (nor ``Expect``, ``Upgrade``, an absolute-form
target) to ``Direct`` (a ``coyote_mw.server.Shortcut``).  ``Direct`` takes it only
when, for that request, all the ASGI path would do is relay it with nothing to wait
for:

* the route decision is a ``Match`` whose next instance is remote, the method is
  idempotent, and the head passes the forwarding policy's checks;
* a slot of the topology's relay is free now (nobody queued), and the instance's pool
  has an idle kept-alive connection.

It then writes the forwarded head (``coyote_mw.http.forwarding``: the same headers and
target as the ASGI path; for a ``GET`` or ``HEAD`` whose header lines repeat the
connection's last request, the lines forwarded then, with a new request id: ``_Memo``)
to that connection from the server's callback, and the
response's head and body back to the client as they arrive, framed by the server's own
rules (``Exchange.start`` / ``write``: hop-by-hop headers, ``Date`` and ``Server``
dropped as the relay drops them).  The relay's timeout bounds the wait for the head
(504), ``stream_idle_timeout`` and ``response_timeout`` the body (a response past them
is cut); instance health, the access line and the metrics are those of the ASGI path.

Everything else takes the ASGI path: bodies, a busy relay (its queue), a connection
to make, WebSockets, the operator API, what no route takes.  So does a request whose
pooled connection turns out closed before any byte of an answer came (the upstream
closed it while idle): the ASGI path sends it again on a new connection, as its
transport does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from coyote_mw.errors import BadRequestPath, DispatchError, HandlerTimeout, TransportError
from coyote_mw.handlers.base import Dispatch, _encode_headers, instance_failed
from coyote_mw.http.forwarding import Forwarding, new_request_id
from coyote_mw.http.paths import canonical_raw
from coyote_mw.http.responses import error_response
from coyote_mw.middleware.base import Middleware
from coyote_mw.remote.handler import RemoteHandler, strip_response_headers
from coyote_mw.remote.transport import IDEMPOTENT_METHODS, ReadTimeout, header_lines
from coyote_mw.routing.table import Match
from coyote_mw.server import Exchange, H1Connection

if TYPE_CHECKING:
    from coyote_mw.relay import Relay, Watchdog
    from coyote_mw.remote.transport import _Connection

__all__ = ["Direct"]

logger = logging.getLogger("coyote_mw.proxy")

_perf_counter = time.perf_counter
_MEMO_INSTANCES = 16  # the instances a connection's memo keeps forwarded lines for


class Direct:
    """The shortcut of one ASGI middleware (``CoyoteASGI.direct()``)."""

    def __init__(self, middleware: Middleware) -> None:
        self.gateway = middleware.gateway
        self.decision = middleware.decision
        self.mount = middleware.mount

    def __call__(
        self,
        conn: H1Connection,
        method: str,
        version: str,
        raw_path: bytes,
        query: bytes,
        keep_alive: bool,
    ) -> Exchange | None:
        if method not in IDEMPOTENT_METHODS:
            return None
        start = _perf_counter()
        try:
            path = canonical_raw(raw_path)
        except BadRequestPath:
            return None
        gw = self.gateway
        forwarding = gw.forwarding
        verdict, relative, topology = self.decision.decide(
            method, path, len(raw_path) + len(query), forwarding.max_target, gw.ops, None
        )
        if not isinstance(verdict, Match) or relative is None:
            return None
        headers = conn.headers
        memo = conn.memo
        if not (
            type(memo) is _Memo
            and memo.headers == headers
            and memo.version == version
            and memo.forwarding is forwarding
        ):
            if forwarding.check_head(headers, version) is not None:
                return None  # the ASGI path answers the refusal
            # (a copy: the list goes on to the app if the ASGI path takes the request,
            # and what the memo holds must be what was checked)
            memo = conn.memo = _Memo(headers.copy(), version, forwarding)
        endpoint = verdict.endpoint
        try:
            handler = endpoint.pick()
        except DispatchError:
            return None
        if type(handler) is not RemoteHandler:
            endpoint.unpick()  # the ASGI path picks the same instance
            return None
        relay = gw.relay_for(topology)
        if not relay.try_enter():
            endpoint.unpick()
            return None
        d = Dispatch(verdict, method, relative, topology, relay, gw.max_body, self.mount)
        out: list[tuple[bytes, bytes]] | bytes
        if method == "GET" or method == "HEAD":  # no length to add: lines kept
            lines = memo.lines.get(handler.netloc) or memo.learn(handler, conn, d)
            given = lines[1]
            if given is None:
                made = new_request_id()
                d.request_id = made.decode("ascii")
                out = b"%bx-request-id: %b\r\n%b" % (lines[0], made, lines[2])
            else:
                d.request_id = given
                out = lines[0]
        else:
            out, _, _ = handler.forward_headers(headers, conn.client, conn.scheme, d, version)
        upstreams = handler.upstreams
        exchange = _Relayed(conn, headers, version, keep_alive, d, handler, start, self)
        exchange.query, exchange.raw_path, exchange.logged = query, raw_path, path.raw
        upstream = upstreams.pool(conn.loop).send_now(
            method,
            handler.host,
            handler.port,
            handler.target(d, query),
            out,
            exchange,
            upstreams.tls if handler.https else None,
            upstreams.policy.max_response_head,
        )
        if upstream is None:
            relay.release()
            endpoint.unpick()
            return None
        exchange.go(upstream)
        return exchange


class _Memo:
    """What ``Direct`` keeps of a connection's last request head (``conn.memo``): that
    it passed the head checks, and the header lines forwarded for it to each instance.
    A client on a kept-alive connection usually sends the same header lines again;
    when it does, with the same forwarding policy, the checks and forwarded headers
    (``Forwarding.forward``: a function of the lines, the connection's peer and scheme,
    the version, the mount and the instance) are what they were, but for the request
    id made afresh for each request."""

    __slots__ = ("forwarding", "headers", "lines", "version")

    def __init__(
        self, headers: list[tuple[bytes, bytes]], version: str, forwarding: Forwarding
    ) -> None:
        self.headers = headers
        self.version = version
        self.forwarding = forwarding
        # by instance (its netloc is the Host line): the lines before the request id,
        # the client's id (None: made per request), the lines after
        self.lines: dict[bytes, tuple[bytes, str | None, bytes]] = {}

    def learn(
        self, handler: RemoteHandler, conn: H1Connection, d: Dispatch
    ) -> tuple[bytes, str | None, bytes]:
        out, _, _ = handler.forward_headers(
            self.headers, conn.client, conn.scheme, d, self.version, make_id=False
        )
        if d.request_id:  # the client's own: the same each time
            lines: tuple[bytes, str | None, bytes] = (header_lines(out), d.request_id, b"")
        else:
            at = len(out) - 1
            while out[at][0] != b"x-request-id":
                at -= 1
            lines = (header_lines(out[:at]), None, header_lines(out[at + 1 :]))
        if len(self.lines) >= _MEMO_INSTANCES:
            self.lines.clear()
        self.lines[handler.netloc] = lines
        return lines


class _Relayed(Exchange):
    """One request relayed by ``Direct``: the client's side is the server's exchange,
    the instance's side a pooled connection that tells it of every read (``flush``)."""

    __slots__ = (
        "d",
        "deadline",
        "direct",
        "dog",
        "fired",
        "idle",
        "instance",
        "last",
        "logged",
        "query",
        "raw_path",
        "status",
        "t0",
        "timer",
        "turn",
        "up",
        "when",
    )

    def __init__(
        self,
        conn: H1Connection,
        headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
        d: Dispatch,
        instance: RemoteHandler,
        t0: float,
        direct: Direct,
    ) -> None:
        super().__init__(conn, headers, version, keep_alive, False)
        self.head_only = d.method == "HEAD"
        self.d = d
        self.instance = instance
        self.turn = d.match.endpoint.turn  # as the pick left it (``_no_head``)
        self.t0 = t0
        self.direct = direct
        self.query = self.raw_path = b""  # the request's, should the app take it after all
        self.logged = ""  # its path in the access line
        self.up: _Connection | None = None  # None once the exchange is over
        self.status = 0
        self.dog: Watchdog | None = None  # watches the wait for the head
        self.deadline = 0.0  # ... until then (the loop's time)
        self.fired = False
        self.timer: asyncio.TimerHandle | None = None  # then the body's
        self.when = 0.0  # the whole response's deadline (0: none)
        self.idle = 0.0  # the longest pause in the body
        self.last = 0.0  # when the body's last bytes came

    def go(self, upstream: _Connection) -> None:
        self.up = upstream
        loop = self.conn.loop
        relay = self.d.relay
        self.deadline = loop.time() + relay.timeout
        dog = self.dog = relay.watchdog(loop)  # no timer of its own: a set's entry
        dog.add(self)

    def cancel(self) -> None:
        """The relay's timeout passed without a response head (``Watched``)."""
        self.dog = None
        self._expired()

    # -- the instance's side ---------------------------------------------------------

    def flush(self) -> None:
        """The upstream connection read bytes, ended or failed (``transport.Sink``)."""
        up = self.up
        if up is None:
            return
        if not self.started:
            if not up.head_done:
                if up.error is not None:
                    self._no_head(up, up.error)
                return
            if not self._head(up):
                return
        body = up.take_body()
        if up.error is not None:
            if body:
                self._write(body, True)
            self._cut(up.error)
        elif up.complete:
            self._finish(body)
        elif body:
            self.last = self.conn.loop.time()
            self._write(body, True)

    def _head(self, up: _Connection) -> bool:
        status = self.status = up.status
        kept = up.replayed
        if kept is not None and kept.derived is not None:  # the head of a response before
            headers = kept.derived
        else:
            headers = strip_response_headers(up.headers)
            if up.te is not None:  # de-chunked here: framed again by the server
                headers = [(k, v) for k, v in headers if k != b"content-length"]
            elif kept is not None:  # (read only, by Exchange.start)
                kept.derived = headers
        dog = self.dog
        if dog is not None:
            self.dog = None
            dog.running.discard(self)
        try:
            self.start(status, headers)
        except RuntimeError as exc:
            self._no_head(up, TransportError(f"a response head the relay cannot pass on: {exc}"))
            return False
        if not up.complete:  # the body streams: its own bounds from now on
            self._body_timer()
        return True

    def _write(self, body: bytes, more: bool) -> None:
        try:
            self.write(body, more)
        except RuntimeError as exc:  # a body at odds with its length: closed already
            self._end_upstream()
            logger.error("relayed response cut: %s", exc)

    def _finish(self, body: bytes) -> None:
        instance = self.instance
        status = self.status
        if instance.failures or instance.probation or 501 < status < 505:
            instance.answered(status, self.d)
        self._end_upstream()
        self._log(status)
        self._write(body, False)

    def _no_head(self, up: _Connection, exc: TransportError) -> None:
        """No response head: the request goes to the ASGI path (a pooled connection
        closed before any answer), or the client is answered the error."""
        if not up.got_bytes:
            if self._end_upstream():
                # not sent after all: the turn is given back, so that the ASGI path
                # sends it to the same instance (on a new connection), as the
                # transport's own retry of a stale pooled connection does - unless
                # another request has been picked for since (its turn is not ours)
                self.d.match.endpoint.unpick(self.turn)
                self.conn.hand_to_app(self, self.d.method, self.raw_path, self.query)
            return
        d = self.d
        self.instance.gateway_failed(exc, d)
        self._answer(instance_failed(d, self.instance.url, exc))

    def _cut(self, exc: BaseException) -> None:
        """The body failed after its head went out: the client's connection closes
        without the response's end."""
        d = self.d
        self.instance.gateway_failed(str(exc), d)
        instance_failed(d, self.instance.url, exc)
        self._end_upstream()
        self._log(self.status)
        self.complete = True
        conn = self.conn
        conn.closing = True
        conn.transport.close()

    def _answer(self, exc: DispatchError) -> None:
        if not self._end_upstream():
            return
        response = error_response(exc)
        headers = _encode_headers(response.headers)
        self._log(exc.status)
        body = response.body
        assert isinstance(body, bytes)
        self.start(exc.status, headers)
        self._write(body, False)

    # -- timers and the client's side -------------------------------------------------

    def _body_timer(self) -> None:
        """From the head on: ``stream_idle_timeout`` (else the relay's timeout) without
        a byte, or the whole response past ``response_timeout`` from the request's start,
        cuts the response.  One timer, moved only when it fires."""
        policy = self.instance.upstreams.policy
        timeout = self.d.relay.timeout
        idle = policy.stream_idle_timeout
        self.idle = timeout if idle is None else idle
        total = policy.response_timeout
        self.when = self.deadline - timeout + total if total else 0.0
        loop = self.conn.loop
        self.last = loop.time()
        if self.timer is not None:
            self.timer.cancel()
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        when = self.last + self.idle
        self.timer = loop.call_at(min(when, self.when) if self.when else when, self._expired)

    def _expired(self) -> None:
        self.timer = None
        up = self.up
        if up is None:
            return
        d = self.d
        if not self.started:
            self.instance.gateway_failed("no response head within the timeout", d)
            self._answer(HandlerTimeout(d.relay.timeout))
            return
        loop = self.conn.loop
        now = loop.time()
        if self.when and now >= self.when:
            self._cut(ReadTimeout("the response did not end within its deadline"))
            return
        if self.conn.write_paused:
            # the client reads nothing, so the instance's answer is not read either:
            # that pause is the client's (the server's send_timeout bounds it), not the
            # instance's, as on the ASGI path
            self.last = now
        elif now - self.last >= self.idle:
            self._cut(ReadTimeout(f"no response body bytes from the upstream for {self.idle} s"))
            return
        self._arm(loop)  # bytes came since the timer was set: wait on from the last

    def gone(self) -> None:
        super().gone()
        if self.up is not None and self._end_upstream(reusable=False):
            self._log(self.status or 499)

    def writing_paused(self) -> None:
        if self.up is not None:
            self.up.pause()

    def writing_resumed(self) -> None:
        if self.up is not None:
            self.last = self.conn.loop.time()  # the instance's pauses count from now
            self.up.resume()

    def _end_upstream(self, reusable: bool = True) -> bool:
        """End the instance's side once: the connection back (or closed), the relay's
        slot freed, the timer off.  False when it had ended already."""
        up = self.up
        if up is None:
            return False
        self.up = None
        dog = self.dog
        if dog is not None:
            self.dog = None
            dog.running.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        up.done(keep=reusable)
        relay: Relay = self.d.relay
        relay.release()
        return True

    def _log(self, status: int) -> None:
        d = self.d
        self.direct.gateway.log_access(
            d.method,
            self.logged,
            status,
            self.t0,
            d.match.endpoint,
            {"client": self.conn.client},
            self.instance,
            d,
        )
