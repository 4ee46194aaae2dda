"""The ASGI middleware: ``coyote.asgi(app)``.

A pure ASGI class, as Starlette's middleware are: it takes the requests whose
method and path fit a route of its table and passes on untouched everything else
(other scope types, unmatched paths) to the host app.  Where coyote owns the path
- no host app, or under its ``mount`` prefix - an unmatched request is answered
404 "No matching route", or 405 with ``Allow`` when only the method is wrong.

What becomes of a request is decided in ``coyote_mw.routing.decision``, as under WSGI;
this module reads the scope, checks the head, answers, replays the body for
``precedence="host"`` and writes the access line.  It is given a ``Gateway`` (the
table, the relays, the operator API, the forwarding policy, the access log), not the
leader.

Lifespan: the host's lifespan messages pass through; coyote's own startup (sub-app
lifespans) runs before the host's and its shutdown after it.  The request body is
never read here: a handler reads it from ``receive`` when it asks for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from coyote_mw.errors import (
    BadRequestPath,
    ClientDisconnected,
    DispatchError,
    PayloadTooLarge,
    RoutingError,
)
from coyote_mw.handlers.base import Dispatch, Handler, send_response
from coyote_mw.handlers.eventloop import (
    in_thread,
    not_on_asyncio,
    serve_off_asyncio,
    startup_off_asyncio,
)
from coyote_mw.http.paths import CanonicalPath, canonical_raw, canonicalize, from_decoded
from coyote_mw.http.responses import Response, error_response
from coyote_mw.http.types import Scope
from coyote_mw.middleware.base import Middleware
from coyote_mw.middleware.replay import ASGIKeeper
from coyote_mw.ops.api import OperatorAPI, OpsRequest
from coyote_mw.registry.api import read_asgi_body
from coyote_mw.routing.decision import HOST, OPERATOR, Verdict
from coyote_mw.routing.table import Match

if TYPE_CHECKING:
    from coyote_mw.middleware.direct import Direct

__all__ = ["CoyoteASGI"]


_OVER = object()  # precedence="host": the host read more of the body than can be kept


class CoyoteASGI(Middleware):
    def direct(self) -> Direct | None:
        """What coyote's own server may relay this middleware's requests with, without
        ASGI (``coyote_mw.middleware.direct``); None when its requests need their scope
        (a topology resolver reads it; ``precedence="host"`` gives them to the host)."""
        if self.host_first or self.decision.resolver.fixed is None:
            return None
        from coyote_mw.middleware.direct import Direct

        return Direct(self)

    async def _other(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        """A WebSocket handshake is a GET: a GET route whose handler serves WebSockets
        (a remote instance, an ASGI app) takes it; anything else - no route, or a route
        of a handler that speaks no WebSocket - goes to the host app, or is refused (403
        at the handshake) where coyote owns the path."""
        try:
            path = _canonical(scope)
        except BadRequestPath:
            await send({"type": "websocket.close", "code": 1008})
            return
        gw = self.gateway
        # the operator API takes no WebSocket: its prefix is decided as any path
        verdict, relative, topology = self.decision.decide(
            "GET", path, _target_size(scope, path), gw.forwarding.max_target, None, scope
        )
        if isinstance(verdict, Match):
            assert relative is not None
            try:
                handler = verdict.endpoint.pick()
            except DispatchError:
                await send({"type": "websocket.close", "code": 1013})  # try again later
                return
            # a GET route whose handler speaks no WebSocket (a catch-all `GET /{page}`, a
            # page at the path of the host's socket) does not take the handshake
            if type(handler).serve_websocket is not Handler.serve_websocket:
                relay = gw.relay_for(topology)
                d = Dispatch(verdict, "GET", relative, topology, relay, gw.max_body, self.mount)
                await handler.serve_websocket(d, scope, receive, send)
                return
        elif isinstance(verdict, DispatchError) and verdict.status == 414:
            await send({"type": "websocket.close", "code": 1008})
            return
        # no route (or none that speaks WebSocket): the host's, unless under the mount
        if self.app is not None and not (self.mount and relative is not None):
            await self.app(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1000})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        # HTTP right here rather than in a method of its own: a coroutine frame less
        # between the server's task and whatever the handler awaits
        if scope["type"] != "http":
            await self._other(scope, receive, send)
            return
        start = time.perf_counter()
        method: str = scope["method"]
        gw = self.gateway
        try:
            path = _canonical(scope)
        except BadRequestPath as exc:
            origin = _origin_form(scope)
            if origin is not None:  # GET http://host/path: its path, and its authority
                await self(origin, receive, send)
                return
            await self._answer(send, scope, exc, start, method, scope.get("path", ""))
            return
        # the target's size as sent (_target_size, inlined): one over max_target is
        # refused before the lookup (and its cache) sees the path
        raw_path: bytes | None = scope.get("raw_path")
        size = len(path.raw) if raw_path is None else len(raw_path)
        query: bytes | None = scope.get("query_string")
        if query:
            size += len(query)
        forwarding = gw.forwarding
        verdict, relative, topology = self.decision.decide(
            method, path, size, forwarding.max_target, gw.ops, scope
        )
        if not isinstance(verdict, Match):
            await self._not_dispatched(verdict, relative, scope, receive, send, method, path, start)
            return
        assert relative is not None  # a match has its path below the mount
        # coyote answers this one: its head must pass coyote's checks (coyote_mw.http.forwarding)
        refused = forwarding.check_asgi(scope)
        if refused is not None:
            await self._answer(send, scope, refused, start, method, path.raw)
            return
        if self.host_first:
            # the headers as checked: reading the body, the host may have the server
            # append its trailer fields to scope["headers"] (uvicorn does)
            checked = list(scope["headers"])
            # None: the host answered; otherwise what replays the body it read
            receive = await self._host_missed(scope, receive, send)
            if receive is None:
                return
            if receive is _OVER:
                over = PayloadTooLarge(gw.max_body)
                await self._answer(send, scope, over, start, method, path.raw)
                return
            scope = {**scope, "headers": checked}
        endpoint = verdict.endpoint
        d = Dispatch(
            verdict, method, relative, topology, gw.relay_for(topology), gw.max_body, self.mount
        )
        handler = None  # pick() may refuse: every instance ejected (503)
        try:
            handler = endpoint.pick()
            status = await handler.serve_asgi(d, scope, receive, send)
        except DispatchError as exc:
            await self._answer(send, scope, exc, start, method, path.raw, endpoint, handler, d)
            return
        except RuntimeError:  # "no running event loop": a trio server (handlers.eventloop)
            if not_on_asyncio() is None:
                raise
            try:
                status = await serve_off_asyncio(d, scope, receive, send)
            except DispatchError as exc:
                await self._answer(send, scope, exc, start, method, path.raw, endpoint)
                return
        gw.log_access(method, path.raw, status, start, endpoint, scope, handler, d)

    async def _not_dispatched(
        self,
        verdict: Verdict,
        relative: CanonicalPath | None,
        scope: Scope,
        receive: Any,
        send: Any,
        method: str,
        path: CanonicalPath,
        start: float,
    ) -> None:
        """A request no route's handler takes: the operator API's, the host app's, or
        an error of coyote's (``coyote_mw.routing.decision``)."""
        if verdict is HOST:
            await self.app(scope, receive, send)
            return
        if verdict is OPERATOR:
            ops = self.gateway.ops
            assert ops is not None  # the decision saw it
            await self._operator(ops, scope, receive, send, method, path.path, start)
            return
        assert isinstance(verdict, DispatchError)
        if relative is not None:
            # a lookup missed: coyote answers, so the head must pass coyote's checks
            refused = self.gateway.forwarding.check_asgi(scope)
            if refused is not None:
                verdict = refused
        await self._answer(send, scope, verdict, start, method, path.raw)

    async def _operator(
        self,
        ops: OperatorAPI,
        scope: Scope,
        receive: Any,
        send: Any,
        method: str,
        path: str,
        start: float,
    ) -> None:
        gw = self.gateway
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query: bytes = scope.get("query_string") or b""
        request = OpsRequest(
            method,
            path,
            query.decode("latin-1"),
            headers,
            scope.get("scheme", "http"),
            self.decision,
            gw.forwarding.max_target,
            root_path=scope.get("root_path", ""),
        )
        # the token and a declared length first: an unauthorized or oversized body is
        # never read (and its connection is closed, under HTTP/1)
        response = ops.probe(request, on_loop=True)
        if response is None and ops.unread(request):
            # open to all, and long to make (/metrics): in a thread, its body unread too
            response = await in_thread(ops.probe, request)
        if response is None:
            response = ops.refuse_early(request, close=scope.get("http_version", "1.1") < "2")
        if response is None:
            body = await read_asgi_body(receive)
            if body is None:
                return  # the client left
            if isinstance(body, Response):
                response = body  # over MAX_PAYLOAD
            else:
                # off the event loop: with a shared store an API call waits on Redis, and
                # an unreachable Redis must not stall the requests this loop is serving
                response = await in_thread(ops.handle, request, body)
        await send_response(send, response, method == "HEAD")
        if method != "PUT" or response.status != 200:  # a heartbeat is a DEBUG line
            gw.log_access(method, path, response.status, start, None, scope)

    async def _host_missed(self, scope: Scope, receive: Any, send: Any) -> Any:
        """Run the host app.  When it answered 404 (its answer is then dropped): the
        ``receive`` that gives coyote's handler the body again (``_OVER`` when the host
        read more of it than ``max_body``); otherwise None."""
        keeper = ASGIKeeper(receive, self.gateway.max_body)
        missed = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal missed
            if message["type"] == "http.response.start" and message["status"] == 404:
                missed = True
            if not missed:
                await send(message)

        await self.app(scope, keeper.receive, guarded_send)
        if not missed:
            return None
        replay = keeper.replay()
        return _OVER if replay is None else replay

    async def _answer(
        self,
        send: Any,
        scope: Scope,
        exc: DispatchError,
        start: float,
        method: str,
        raw: str,
        endpoint: Any = None,
        handler: Any = None,
        d: Any = None,
    ) -> None:
        log_access = self.gateway.log_access
        if isinstance(exc, ClientDisconnected):  # nobody is left to answer
            log_access(method, raw, exc.status, start, endpoint, scope, handler, d)
            return
        response = error_response(exc)
        try:
            await send_response(send, response, method == "HEAD")
        except RuntimeError:
            # The handler had already started a response; nothing more can be sent.
            if not isinstance(exc, RoutingError):
                raise
        log_access(method, raw, exc.status, start, endpoint, scope, handler, d)

    async def _startup(self) -> None:
        refusal = not_on_asyncio()
        if refusal is None:
            await self.gateway.startup()
        else:  # trio: clients' own handlers only (coyote_mw.handlers.eventloop)
            startup_off_asyncio(refusal)

    async def _lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        gw = self.gateway
        if self.app is None:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self._startup()
                    except Exception as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await gw.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        async def wrapped_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "lifespan.startup":
                await self._startup()  # ours first, so host startup code can use it
            return message

        async def wrapped_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await gw.shutdown()  # ours last
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)


def _target_size(scope: Scope, path: CanonicalPath) -> int:
    """The bytes of the request target as sent, path and query (``max_target``)."""
    raw_path: bytes | None = scope.get("raw_path")
    size = len(path.raw) if raw_path is None else len(raw_path)
    return size + len(scope.get("query_string") or b"")


def _canonical(scope: Scope) -> CanonicalPath:
    """The canonical path below ``root_path``, from ``raw_path`` when the server gives it."""
    raw: bytes | None = scope.get("raw_path")
    root: str = scope.get("root_path", "")
    if raw and not root and b"?" not in raw:  # the common case
        return canonical_raw(raw)
    path: str = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
        if raw is not None:
            # drop as many raw segments as root_path has
            parts = raw.split(b"?", 1)[0].split(b"/")
            raw = b"/".join([b"", *parts[root.count("/") + 1 :]])
    elif raw is not None:
        raw = raw.split(b"?", 1)[0]
    if raw is None or not raw:
        return canonicalize(from_decoded(path))
    return canonicalize(raw)


def _origin_form(scope: Scope) -> Scope | None:
    """The scope of an absolute-form target (``GET http://host/path``, as uvicorn's h11,
    hypercorn and daphne give it in ``raw_path``) in origin form, with the target's
    authority as its Host, which a server must use instead (RFC 9112 3.2.2); or None."""
    raw: bytes = scope.get("raw_path") or b""
    scheme, sep, rest = raw.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    authority, _, path = rest.partition(b"/")
    if not authority:
        return None
    raw_path = b"/" + path
    headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
    headers.append((b"host", authority))
    decoded = unquote(raw_path.decode("latin-1"))
    return {
        **scope,
        "raw_path": raw_path,
        "path": scope.get("root_path", "") + decoded,
        "headers": headers,
    }
