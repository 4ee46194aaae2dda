"""Whole ASGI and WSGI apps registered in process, behind the handler interface.

* ``ASGIAppHandler`` - its lifespan starts with the host's (or before its first request
  when the host sends none); WebSockets go straight to it.
* ``WSGIAppHandler`` - called in the server's thread under a WSGI host.

Under an ASGI host a WSGI app runs through ``a2wsgi.WSGIMiddleware``, and under a WSGI
host an ASGI app through ``coyote_mw.handlers.bridge`` on the relay's loop, so each app keeps
its own interface and streams both ways, request bodies of any framing included.  An
app's timeout runs until it starts answering; its slot is held until its answer is
complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from coyote_mw.handlers.base import Dispatch, Handler, handler_failed
from coyote_mw.handlers.bridge import serve_asgi_under_wsgi
from coyote_mw.http.request import Request, wsgi_body_length
from coyote_mw.http.responses import Response
from coyote_mw.http.types import ASGIApp, Environ, Message, Scope, WSGIApp

__all__ = [
    "ASGIAppHandler",
    "Closing",
    "WSGIAppHandler",
    "call_asgi_app",
    "serve_app",
    "serve_wsgi_app",
]

logger = logging.getLogger("coyote_mw.apps")


class ASGIAppHandler(Handler):
    kind = "asgi"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lifespan: _Lifespan | None = None
        self._ready: asyncio.Future[None] | None = None
        self._started_for_wsgi = False

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

    def serve_wsgi(self, d: Dispatch, environ: Environ, start_response: Any) -> Any:
        if not self._started_for_wsgi:
            startup = asyncio.run_coroutine_threadsafe(self.startup(), d.relay.loop)
            startup.result(d.relay.timeout)
            self._started_for_wsgi = True
        return serve_asgi_under_wsgi(d, self.app, environ, start_response, serve_app)

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

            app = self.app

            def terminated(environ: Environ, start_response: Any) -> Iterable[bytes]:
                # a2wsgi's wsgi.input ends with the last http.request message: say so
                # (PEP 3333), or a body sent without Content-Length reads as empty
                environ["wsgi.input_terminated"] = True
                return app(environ, start_response)

            self._asgi = WSGIMiddleware(terminated, workers=d.relay.concurrency)  # type: ignore[arg-type]
        return self._asgi

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + d.root_path
        child["path"] = child["root_path"] + d.path.path

        # a2wsgi hands receive() to run_coroutine_threadsafe, which takes only a
        # coroutine; a server's receive may return another awaitable (granian's does)
        async def coroutine_receive() -> Any:
            return await receive()

        return await serve_app(d, self._as_asgi(d), child, coroutine_receive, send)

    def serve_wsgi(self, d: Dispatch, environ: Environ, start_response: Any) -> Any:
        wsgi_body_length(environ)  # 411 for a body the server cannot delimit, not an empty one
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
    """Run an ASGI app within a relay slot held until the app's task ends; the deadline
    (504) runs until it starts answering."""
    started = asyncio.Event()
    status = 0

    async def watched_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            started.set()
        await send(message)

    # queued, a client that leaves, leaves the queue
    async with d.relay.admit(receive) as slot:
        task = asyncio.ensure_future(app(scope, slot.receive, watched_send))
        release = slot.hand_over()
        task.add_done_callback(lambda _: release())
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            if slot.fired:
                task.cancel()
            raise
        finally:
            waiter.cancel()
        slot.unwatch()  # answering: the response goes at the app's pace
    try:
        await task
    except Exception as exc:
        if not started.is_set():
            raise handler_failed(d, exc) from exc
        handler_failed(d, exc)  # too late for a 502: log it, the server closes the stream
    if not started.is_set():
        raise handler_failed(d, RuntimeError("the app returned without sending a response"))
    return status


def serve_wsgi_app(d: Dispatch, app: WSGIApp, environ: Environ, start_response: Any) -> Any:
    """Run a WSGI app within a relay slot held until its response is closed."""
    child = dict(environ)
    script = environ.get("SCRIPT_NAME", "") + d.root_path
    child["SCRIPT_NAME"] = script
    child["PATH_INFO"] = d.path.path.encode("utf-8").decode("latin-1")
    # queued, a client that leaves, leaves the queue
    with d.relay.admit_sync(environ) as slot:
        try:
            result = app(child, start_response)
        except Exception as exc:
            raise handler_failed(d, exc) from exc
        return Closing(result, slot.hand_over())


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
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.supported = True
        self.loop = asyncio.get_running_loop()

    async def _run(self) -> None:
        # apps without lifespan support raise on the scope type: that is fine
        with contextlib.suppress(Exception):
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._inbox.get,
                self._outbox.put,
            )
        # Returned (or raised) without a word more: no lifespan, as uvicorn reads it; an
        # app that ignores the scope and returns would otherwise hang its first request.
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
