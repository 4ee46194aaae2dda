"""Handlers: what the relay calls for a matched route, behind one interface.

Every handler serves a matched request three ways, the sync and async twins of one
job: ``serve_asgi`` (under an ASGI host), ``serve_wsgi`` (under a WSGI host) and
``call`` (``Coyote.call`` without HTTP, from a thread or, as ``acall``, a loop).

* ``FunctionHandler`` - a client's ``def`` or ``async def`` method, given a ``Request``.
* ``ASGIAppHandler``  - a whole ASGI app in process; its lifespan starts with the host's
  (or before its first request when the host sends none).
* ``WSGIAppHandler``  - a whole WSGI app in process.

Under an ASGI host a WSGI app runs through ``a2wsgi.WSGIMiddleware`` and under a WSGI
host an ASGI app through ``a2wsgi.ASGIMiddleware`` on the relay's loop, so each app
keeps its own interface and streams both ways.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.http import HTTP_STATUS_CODES

from coyote_mw.errors import DispatchError, HandlerTimeout, RoutingError
from coyote_mw.paths import CanonicalPath
from coyote_mw.relay import Relay
from coyote_mw.request import ASGIBody, Body, Request, WSGIBody
from coyote_mw.responses import Response, to_response
from coyote_mw.table import Match

__all__ = [
    "ASGIAppHandler",
    "Dispatch",
    "FunctionHandler",
    "Handler",
    "WSGIAppHandler",
    "send_response",
]

logger = logging.getLogger("coyote_mw.handlers")

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]
WSGIApp = Callable[..., Iterable[bytes]]


@dataclass(slots=True)
class Dispatch:
    """One matched request on its way to a handler."""

    match: Match
    method: str
    path: CanonicalPath
    topology: str
    relay: Relay
    max_body: int
    root_path: str = ""
    """The mount prefix the middleware stripped (sub-apps see it as root_path)."""


class Handler:
    """The interface; see the module docstring."""

    kind = "handler"
    ejected = False
    """A remote instance that failed repeatedly is skipped until it heart-beats."""

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        """Serve under an ASGI host; return the status sent."""
        raise NotImplementedError

    def serve_wsgi(self, d: Dispatch, environ: dict[str, Any], start_response: Any) -> Any:
        raise NotImplementedError

    def call(self, d: Dispatch, request: Request) -> Response:
        raise NotImplementedError

    async def acall(self, d: Dispatch, request: Request) -> Response:
        raise NotImplementedError

    async def serve_websocket(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> None:
        """Relay a WebSocket; handlers that cannot refuse the handshake (403)."""
        await send({"type": "websocket.close", "code": 1000})

    async def startup(self) -> None:
        """Called in the host's lifespan startup."""

    async def shutdown(self) -> None:
        """Called in the host's lifespan shutdown."""

    def close(self) -> None:
        """Best effort, from any thread: end what ``startup`` began if nobody did."""


def handler_failed(d: Dispatch, exc: BaseException) -> RoutingError:
    """Log a handler's failure with its detail; the client sees only "Routing error"."""
    ep = d.match.endpoint
    logger.error(
        "Routing error: %s %s (route %s %s, service %s, topology %s): %r",
        d.method,
        d.path.raw,
        ep.method,
        ep.pattern,
        ep.service,
        d.topology,
        exc,
        exc_info=exc,
    )
    return RoutingError(f"{ep.service}: {exc!r}")


class FunctionHandler(Handler):
    kind = "function"

    def __init__(self, fn: Callable[[Request], Any]) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an async callable object
        )

    def __repr__(self) -> str:
        return f"<FunctionHandler {getattr(self.fn, '__qualname__', self.fn)!r}>"

    def _request(self, d: Dispatch, body: Body, **kw: Any) -> Request:
        ep = d.match.endpoint
        return Request(
            d.method,
            d.path.path,
            raw_path=d.path.raw,
            params=d.match.params,
            body=body,
            topology=d.topology,
            route=ep.pattern,
            service=ep.service,
            **kw,
        )

    def _casting(self, d: Dispatch, request: Request) -> Response:
        d.relay.cast(lambda: self.fn(request), self.is_async, lambda e: _cast_failed(d, e))
        return Response(b'{"status":"accepted"}', 202, [("content-type", "application/json")])

    async def acall(self, d: Dispatch, request: Request) -> Response:
        if d.match.endpoint.cast:
            await request.aread()  # the caller leaves at once: take the body first
            return self._casting(d, request)
        try:
            return to_response(await d.relay.run(lambda: self.fn(request), self.is_async))
        except DispatchError:
            raise
        except Exception as exc:
            raise handler_failed(d, exc) from exc

    def call(self, d: Dispatch, request: Request) -> Response:
        if d.match.endpoint.cast:
            request.read()
            return self._casting(d, request)
        try:
            return to_response(d.relay.run_sync(lambda: self.fn(request), self.is_async))
        except DispatchError:
            raise
        except Exception as exc:
            raise handler_failed(d, exc) from exc

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        ep = d.match.endpoint
        request = Request(
            d.method,
            d.path.path,
            raw_path=d.path.raw,
            params=d.match.params,
            body=ASGIBody(receive, asyncio.get_running_loop(), d.max_body),
            topology=d.topology,
            route=ep.pattern,
            service=ep.service,
            query_string=scope.get("query_string", b""),
            headers=scope.get("headers"),
            scheme=scope.get("scheme", "http"),
            client=scope.get("client"),
        )
        response = await self.acall(d, request)
        await send_response(send, response, d.method == "HEAD")
        return response.status

    def serve_wsgi(self, d: Dispatch, environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH")
        request = self._request(
            d,
            WSGIBody(environ["wsgi.input"], int(length) if length else None, d.max_body),
            query_string=environ.get("QUERY_STRING", "").encode("latin-1"),
            headers=EnvironHeaders(environ),
            scheme=environ.get("wsgi.url_scheme", "http"),
        )
        response = self.call(d, request)
        return wsgi_response(d.relay, response, start_response, d.method == "HEAD")


def _cast_failed(d: Dispatch, exc: BaseException) -> None:
    if isinstance(exc, DispatchError):
        logger.warning("cast %s %s not run: %s", d.method, d.path.raw, exc)
    else:
        handler_failed(d, exc)


class ASGIAppHandler(Handler):
    kind = "asgi"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lifespan: _Lifespan | None = None
        self._ready: asyncio.Future[None] | None = None
        self._wsgi: Any = None

    def __repr__(self) -> str:
        return f"<ASGIAppHandler {self.app!r}>"

    async def startup(self) -> None:
        # the first caller starts the lifespan; concurrent first requests wait for it
        if self._ready is None:
            self._lifespan = _Lifespan(self.app)
            self._ready = asyncio.ensure_future(self._lifespan.startup())
        await asyncio.shield(self._ready)

    def close(self) -> None:
        lifespan = self._lifespan
        if lifespan is not None and lifespan.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.shutdown(), lifespan.loop).result(10)
            except Exception:
                logger.warning("sub-app %r did not shut down cleanly", self.app, exc_info=True)

    async def shutdown(self) -> None:
        if self._lifespan is not None:
            lifespan, self._lifespan, self._ready = self._lifespan, None, None
            await lifespan.shutdown()

    async def serve_websocket(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> None:
        await self.startup()
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + d.root_path
        child["path"] = child["root_path"] + d.path.path
        await self.app(child, receive, send)

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        await self.startup()
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + d.root_path
        child["path"] = child["root_path"] + d.path.path
        child["raw_path"] = (child["root_path"] + d.path.raw).encode("latin-1", "replace")
        return await serve_app(d, self.app, child, receive, send)

    def serve_wsgi(self, d: Dispatch, environ: dict[str, Any], start_response: Any) -> Any:
        if self._wsgi is None:
            from a2wsgi import ASGIMiddleware

            loop = d.relay._ensure_loop()
            asyncio.run_coroutine_threadsafe(self.startup(), loop).result(d.relay.timeout)
            self._wsgi = ASGIMiddleware(self.app, loop=loop)
        return serve_wsgi_app(d, self._wsgi, environ, start_response)

    async def acall(self, d: Dispatch, request: Request) -> Response:
        return await call_asgi_app(self, d, request)

    def call(self, d: Dispatch, request: Request) -> Response:
        return d.relay.submit_coroutine(self.acall(d, request)).result()


class WSGIAppHandler(Handler):
    kind = "wsgi"

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._asgi: Any = None

    def __repr__(self) -> str:
        return f"<WSGIAppHandler {self.app!r}>"

    def _as_asgi(self, d: Dispatch) -> Any:
        if self._asgi is None:
            from a2wsgi import WSGIMiddleware

            self._asgi = WSGIMiddleware(self.app, workers=d.relay.concurrency)
        return self._asgi

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + d.root_path
        child["path"] = child["root_path"] + d.path.path
        return await serve_app(d, self._as_asgi(d), child, receive, send)

    def serve_wsgi(self, d: Dispatch, environ: dict[str, Any], start_response: Any) -> Any:
        return serve_wsgi_app(d, self.app, environ, start_response)

    async def acall(self, d: Dispatch, request: Request) -> Response:
        return await call_asgi_app(_Adapted(self._as_asgi(d)), d, request)

    def call(self, d: Dispatch, request: Request) -> Response:
        return d.relay.submit_coroutine(self.acall(d, request)).result()


class _Adapted(Handler):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        return await serve_app(d, self.app, scope, receive, send)


# -- running whole apps ---------------------------------------------------------------


async def serve_app(d: Dispatch, app: ASGIApp, scope: Scope, receive: Any, send: Any) -> int:
    """Run an ASGI app within a relay slot; the timeout runs until it starts answering."""
    relay = d.relay
    await relay._acquire()
    started = asyncio.Event()
    status = 0

    async def watched_send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            started.set()
        await send(message)

    task = asyncio.ensure_future(app(scope, receive, watched_send))
    task.add_done_callback(lambda _: relay.release())
    waiter = asyncio.ensure_future(started.wait())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=relay.timeout, return_when="FIRST_COMPLETED"
        )
    finally:
        waiter.cancel()
    if not done:
        task.cancel()
        raise HandlerTimeout(relay.timeout)
    try:
        await task
    except Exception as exc:
        if not started.is_set():
            raise handler_failed(d, exc) from exc
        handler_failed(d, exc)  # too late for a 502: log it, the server closes the stream
    if not started.is_set():
        raise handler_failed(d, RuntimeError("the app returned without sending a response"))
    return status


def serve_wsgi_app(d: Dispatch, app: WSGIApp, environ: dict[str, Any], start_response: Any) -> Any:
    """Run a WSGI app within a relay slot held until its response is closed."""
    d.relay._acquire_sync()
    child = dict(environ)
    script = environ.get("SCRIPT_NAME", "") + d.root_path
    child["SCRIPT_NAME"] = script
    child["PATH_INFO"] = d.path.path.encode("utf-8").decode("latin-1")
    try:
        result = app(child, start_response)
    except Exception as exc:
        d.relay.release()
        raise handler_failed(d, exc) from exc
    return Closing(result, d.relay.release)


class Closing:
    """A WSGI response iterable that releases the relay slot when closed."""

    def __init__(self, iterable: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._iterable = iterable
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


async def call_asgi_app(handler: Handler, d: Dispatch, request: Request) -> Response:
    """``Coyote.call`` into an ASGI app: one scope in, the whole response collected."""
    body = await request.aread()
    sent = False
    chunks: list[bytes] = []
    start: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # nothing more: wait to be cancelled
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": request.query_string,
        "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
        ],
        "client": None,
        "server": None,
        "state": {},
    }
    await handler.serve_asgi(d, scope, receive, send)
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
    return Response(b"".join(chunks), start.get("status", 500), headers)


class _Lifespan:
    """Drives one ASGI app's lifespan protocol as a background task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.supported = True
        self.loop = asyncio.get_running_loop()

    async def _run(self) -> None:
        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._inbox.get,
                self._outbox.put,
            )
        except Exception:
            # Apps without lifespan support raise on the scope type: that is fine.
            self.supported = False
            await self._outbox.put({"type": "lifespan.unsupported"})

    async def startup(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._outbox.get()
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"sub-app startup failed: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._outbox.get(), 10)
        except TimeoutError:
            logger.warning("sub-app %r did not finish its lifespan shutdown", self.app)


# -- writing responses -----------------------------------------------------------------


async def send_response(send: Any, response: Response, head: bool) -> None:
    try:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    except UnicodeEncodeError as exc:
        raise RoutingError(f"response header is not latin-1: {exc}") from exc
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    body = response.body
    if isinstance(body, bytes) or head:
        await send({"type": "http.response.body", "body": b"" if head else body})
        return
    if isinstance(body, AsyncIterable):
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    else:
        iterator = iter(body)
        while (chunk := await asyncio.to_thread(_next_or_none, iterator)) is not None:  # type: ignore[arg-type]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _next_or_none(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)


def status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}"


def wsgi_response(
    relay: Relay, response: Response, start_response: Any, head: bool
) -> Iterable[bytes]:
    start_response(status_line(response.status), response.headers)
    body = response.body
    if head:
        return [b""]
    if isinstance(body, bytes):
        return [body]
    if isinstance(body, AsyncIterable):
        return _drain_async(relay, body)
    return body


def _drain_async(relay: Relay, body: AsyncIterable[bytes]) -> Iterator[bytes]:
    iterator = aiter(body)
    while True:
        chunk = relay.submit_coroutine(_anext_or_none(iterator)).result()
        if chunk is None:
            return
        yield chunk


async def _anext_or_none(iterator: Any) -> bytes | None:
    try:
        return bytes(await anext(iterator))
    except StopAsyncIteration:
        return None
