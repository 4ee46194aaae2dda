"""Which event loop an ASGI server runs, and serving a client's functions on trio.

coyote_mw is asyncio code: the relay's waits and watchdog, the lean transport to remote
instances, the bridges to in-process ASGI/WSGI apps.  A host may run on trio through
anyio (Starlette under ``hypercorn -k trio``).  There, a client's own ``def`` and
``async def`` handlers are served through anyio instead (``serve_off_asyncio``), within
the same relay bounds: a slot (waited for in a worker thread when none is free), the
``timeout`` (504), ``def`` handlers in worker threads that keep their slot until they
return.  Casts run on the relay's own asyncio loop thread, as under WSGI.  Remote
instances and in-process apps need asyncio: a request for one is answered 500
"Unsupported event loop", and the lifespan startup logs so once.

The asyncio path never comes here: the ASGI middleware calls in only after a handler
found no running asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import sniffio

from coyote_mw.errors import DispatchError, HandlerTimeout, UnsupportedEventLoop
from coyote_mw.handlers.base import Dispatch, FunctionHandler, handler_failed, send_response
from coyote_mw.http.request import ASGIBody, Request, _next
from coyote_mw.http.responses import Response, to_response
from coyote_mw.http.types import Scope
from coyote_mw.relay import Relay

__all__ = ["in_thread", "not_on_asyncio", "serve_off_asyncio", "startup_off_asyncio"]

logger = logging.getLogger("coyote_mw.eventloop")

T = TypeVar("T")


def not_on_asyncio() -> UnsupportedEventLoop | None:
    """The error for what coyote cannot serve here when the running loop is not
    asyncio's, else None."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no known event loop"
    return None if library == "asyncio" else UnsupportedEventLoop(library)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, off the event loop: asyncio's, or anyio's under
    trio (where ``asyncio.to_thread`` finds no loop)."""
    if not_on_asyncio() is None:
        return await asyncio.to_thread(fn, *args)
    return await anyio.to_thread.run_sync(fn, *args)


def startup_off_asyncio(refusal: UnsupportedEventLoop) -> None:
    """The lifespan startup on trio: nothing of coyote's to start; say what will not run."""
    logger.warning(
        "%s: this server runs %s, so coyote serves clients' own handlers only; routes "
        "to remote instances and to in-process ASGI/WSGI apps answer 500 "
        "(run the server on asyncio for those)",
        refusal.error,
        refusal.library,
    )


async def serve_off_asyncio(d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
    """Serve a matched request on a loop that is not asyncio's; return the status sent."""
    handler = d.match.endpoint.pick()
    if not isinstance(handler, FunctionHandler):
        refusal = not_on_asyncio()
        assert refusal is not None
        raise refusal
    ep = d.match.endpoint
    request = Request._of_asgi(
        d.method,
        d.path.path,
        d.path.raw,
        d.match.params,
        _ThreadedBody(receive, d.max_body),
        d.topology,
        ep.pattern,
        ep.service,
        scope,
    )
    if ep.cast:  # takes the body, then runs on the relay's own loop thread
        response = await handler.acall(d, request)
    else:
        response = await _run(handler, d, request)
    if not isinstance(response.body, bytes | AsyncIterable):
        response.body = _from_threads(iter(response.body))
    await send_response(send, response, d.method == "HEAD")
    return response.status


async def _run(handler: FunctionHandler, d: Dispatch, request: Request) -> Response:
    relay = d.relay
    limiter = _limiter(relay)
    if not relay.try_enter():
        # waits at most relay.timeout (then RelaySaturated), as a WSGI request does
        await anyio.to_thread.run_sync(relay.acquire_sync, limiter=limiter)
    slot = _Slot(relay)
    try:
        with anyio.move_on_after(relay.timeout) as deadline:
            if handler.is_async:
                result = await handler.fn(request)
            else:
                result = await anyio.to_thread.run_sync(
                    slot.run_in_thread, handler.fn, request, abandon_on_cancel=True, limiter=limiter
                )
        if deadline.cancelled_caught:
            raise HandlerTimeout(relay.timeout)
        return to_response(result)
    except DispatchError:
        raise
    except Exception as exc:
        raise handler_failed(d, exc) from exc
    finally:
        slot.leave()


class _Slot:
    """A relay slot released exactly once: by a ``def`` handler's thread when it returns
    (a thread keeps its slot, even past the timeout), else by the request itself."""

    __slots__ = ("lock", "relay", "state")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.lock = threading.Lock()
        self.state = "held"  # -> "thread" (a thread took it) or "released"

    def run_in_thread(self, fn: Callable[[Request], Any], request: Request) -> Any:
        with self.lock:
            if self.state != "held":  # the request gave up before this thread started
                return None
            self.state = "thread"
        try:
            return fn(request)
        finally:
            self.relay.release()

    def leave(self) -> None:
        with self.lock:
            if self.state != "held":
                return
            self.state = "released"
        self.relay.release()


# One anyio thread limiter per relay, for its slot waits and def handlers: sized so that
# neither starves the other, nor the host's own use of anyio's default limiter.
_limiters: weakref.WeakKeyDictionary[Relay, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _limiter(relay: Relay) -> anyio.CapacityLimiter:
    limiter = _limiters.get(relay)
    if limiter is None:
        limiter = _limiters[relay] = anyio.CapacityLimiter(relay.concurrency + relay.queue)
    return limiter


class _ThreadedBody(ASGIBody):
    """``ASGIBody`` whose sync reads (a ``def`` handler in an anyio worker thread) hand
    the receiving back to the server's loop through anyio."""

    def __init__(self, receive: Any, max_body: int) -> None:
        self.max_body = max_body
        self._data = None
        self._receive = receive
        self._done = False

    def _iter_sync(self) -> Iterator[bytes]:
        agen = self._iter_async().__aiter__()
        while (chunk := anyio.from_thread.run(_next, agen)) is not None:
            yield chunk


async def _from_threads(iterator: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A sync body iterated in worker threads, closed however sending ends."""
    try:
        while (chunk := await anyio.to_thread.run_sync(next, iterator, None)) is not None:
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
