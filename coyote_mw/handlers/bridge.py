"""An in-process ASGI app under a WSGI host, streaming both ways.

The WSGI server's thread drives the app, which runs on the relay's event loop: it
waits for what the app has to say (its ``send`` messages) and reads ``wsgi.input`` when
the app asks for more of the body (its ``receive``), one message at a time, so the
body is never held whole and ``wsgi.input`` is only ever read by the server's own
thread.  The body is what the request framed (``wsgi_body_length``): its length, or a
chunked body to its end where the server marks ``wsgi.input_terminated``.  a2wsgi's
``ASGIMiddleware`` passes on only ``CONTENT_LENGTH`` bytes, and answers an app's failure
with a plain 500 rather than coyote's JSON 502 / 504.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from coyote_mw.errors import BadRequest
from coyote_mw.handlers.base import Dispatch, handler_failed, status_line
from coyote_mw.http.request import BODY_CUT_SHORT, read_wsgi_input, wsgi_body_length
from coyote_mw.http.types import Environ

__all__ = ["ServeApp", "serve_asgi_under_wsgi"]

# how an ASGI app is run under the relay: (dispatch, app, scope, receive, send) -> status
ServeApp = Callable[[Dispatch, Any, dict[str, Any], Any, Any], Awaitable[int]]

CHUNK = 64 * 1024
_READ = object()  # from the loop to the WSGI thread: read the next chunk of the body
_END = object()  # the app's run is over


def serve_asgi_under_wsgi(
    d: Dispatch, app: Any, environ: Environ, start_response: Any, serve: ServeApp
) -> Iterable[bytes]:
    """Serve the ASGI ``app`` to a WSGI server's thread; ``serve`` runs it on the relay's
    loop under the relay's bounds (``coyote_mw.handlers.apps.serve_app``)."""
    from a2wsgi.asgi import build_scope  # imported when used: no web stack at import

    length = wsgi_body_length(environ)  # 411 / 400 before the app sees anything
    child = dict(environ)
    child["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + d.root_path
    child["PATH_INFO"] = d.path.path.encode("utf-8").decode("latin-1")
    scope: dict[str, Any] = dict(build_scope(child))  # type: ignore[arg-type]
    scope["raw_path"] = (scope["root_path"] + d.path.raw).encode("latin-1", "replace")
    exchange = _Exchange(d.relay.loop, environ["wsgi.input"], length)
    future = asyncio.run_coroutine_threadsafe(
        exchange.run(serve(d, app, scope, exchange.receive, exchange.send)), exchange.loop
    )
    try:
        start = exchange.next_message()
    except BaseException:
        exchange.abandon(future)
        raise
    if start is _END:
        future.result()  # the DispatchError (timeout, routing error) it ended with
        raise handler_failed(d, RuntimeError("the app returned without sending a response"))
    if start["type"] != "http.response.start":
        exchange.abandon(future)
        raise handler_failed(d, RuntimeError(f"the app sent {start['type']!r} first"))
    start_response(
        status_line(start["status"]),
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
    )
    return _Body(exchange, future)


class _Exchange:
    """What passes between the app's task and the WSGI thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: Any, length: int | None) -> None:
        self.loop = loop
        self.stream = stream
        self.remaining = length  # None: up to the end of wsgi.input
        self.body_done = length == 0
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.finished = asyncio.Event()  # the WSGI side is done: receive() -> disconnect
        self.gone = False  # ... before the response ended: what the app sends is dropped
        self.chunk: asyncio.Future[bytes] | None = None
        self.reading = asyncio.Lock()  # one read of wsgi.input asked for at a time

    # -- on the loop ---------------------------------------------------------------

    async def run(self, serving: Any) -> int:
        try:
            return await serving  # type: ignore[no-any-return]
        finally:
            self.outbox.put_nowait(_END)

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        self.outbox.put_nowait(message)
        await self.outbox.join()  # backpressure: until the WSGI thread took it

    async def receive(self) -> dict[str, Any]:
        async with self.reading:
            if not self.body_done:
                if self.gone:
                    raise ConnectionError("the WSGI server closed the response")
                self.chunk = self.loop.create_future()
                self.outbox.put_nowait(_READ)
                chunk = await self.chunk
                if not chunk:
                    self.body_done = True
                return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}
        await self.finished.wait()
        return {"type": "http.disconnect"}

    async def _get(self) -> Any:
        message = await self.outbox.get()
        self.outbox.task_done()
        return message

    def _gone(self) -> None:
        self.gone = True
        self.finished.set()
        _fail(self.chunk, ConnectionError("the WSGI server closed the response"))
        while not self.outbox.empty():  # wake every send() waiting for the WSGI side
            self.outbox.get_nowait()
            self.outbox.task_done()

    # -- in the WSGI thread --------------------------------------------------------

    def next_message(self) -> Any:
        """The app's next message (or ``_END``), reading the body whenever it asks."""
        while True:
            message = asyncio.run_coroutine_threadsafe(self._get(), self.loop).result()
            if message is not _READ:
                return message
            try:
                chunk = self._read()
            except BaseException as exc:
                self.loop.call_soon_threadsafe(_fail, self.chunk, exc)
                raise
            self.loop.call_soon_threadsafe(_resolve, self.chunk, chunk)

    def _read(self) -> bytes:
        if self.remaining is None:
            return read_wsgi_input(self.stream, CHUNK)
        if self.remaining <= 0:
            return b""
        chunk = read_wsgi_input(self.stream, min(CHUNK, self.remaining))
        if not chunk:
            raise BadRequest(BODY_CUT_SHORT)  # less than its Content-Length
        self.remaining -= len(chunk)
        return chunk

    def abandon(self, future: Future[int]) -> None:
        """The WSGI side is gone before the response ended: stop the app."""
        self.loop.call_soon_threadsafe(self._gone)
        future.cancel()


def _resolve(future: asyncio.Future[bytes] | None, chunk: bytes) -> None:
    if future is not None and not future.done():
        future.set_result(chunk)


def _fail(future: asyncio.Future[bytes] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


class _Body:
    """The response body as the WSGI server iterates it."""

    def __init__(self, exchange: _Exchange, future: Future[int]) -> None:
        self.exchange = exchange
        self.future = future
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        while not self.complete:
            message = self.exchange.next_message()
            if message is _END:
                # the app ended without finishing its body: it failed (logged) - cut
                # the response short so the server closes the connection
                raise RuntimeError("the app ended its response early")
            if message["type"] != "http.response.body":
                continue
            self.complete = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                yield chunk

    def close(self) -> None:
        exchange = self.exchange
        if self.complete:
            # let the app finish (background tasks run after the body)
            exchange.loop.call_soon_threadsafe(exchange.finished.set)
        else:
            exchange.abandon(self.future)
