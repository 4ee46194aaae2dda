"""Handlers: what the relay calls for a matched route, behind one interface.

Every handler serves a matched request three ways, the sync and async twins of one
job: ``serve_asgi`` (under an ASGI host), ``serve_wsgi`` (under a WSGI host) and
``call`` (``Coyote.call`` without HTTP, from a thread or, as ``acall``, a loop).

* ``FunctionHandler`` - a client's ``def`` or ``async def`` method, given a ``Request``
  (here);
* ``ASGIAppHandler`` / ``WSGIAppHandler`` - a whole app in process (``coyote_mw.handlers.apps``);
* ``RemoteHandler`` - an instance reached over HTTP (``coyote_mw.remote.handler``).

This module also writes a ``Response`` to ASGI ``send`` or a WSGI ``start_response``.
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

from coyote_mw.errors import DispatchError, RoutingError
from coyote_mw.http.paths import CanonicalPath
from coyote_mw.http.request import ASGIBody, Body, Request, WSGIBody, wsgi_body_length
from coyote_mw.http.responses import Response, to_response
from coyote_mw.http.types import Environ, Scope
from coyote_mw.relay import Admission, Relay
from coyote_mw.routing.table import Match

__all__ = [
    "Dispatch",
    "FunctionHandler",
    "Handler",
    "handler_failed",
    "instance_failed",
    "send_response",
    "status_line",
    "wsgi_response",
]

logger = logging.getLogger("coyote_mw.handlers")


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
    request_id: str = ""
    """The X-Request-ID a relayed request went out with (the client's, or made)."""
    retried_on: str = ""
    """The instance a request went to after the picked one refused the connection."""


class Handler:
    """The interface; see the module docstring."""

    kind = "handler"
    ejected = False
    """A remote instance that failed repeatedly is skipped until it heart-beats."""

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        """Serve under an ASGI host; return the status sent."""
        raise NotImplementedError

    def serve_wsgi(self, d: Dispatch, environ: Environ, start_response: Any) -> Any:
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


def instance_failed(
    d: Dispatch, url: str, exc: BaseException, retrying_on: str | None = None
) -> RoutingError:
    """Log a remote instance's failure in one line; the client sees only "Routing error".

    A dead or misbehaving instance is an operational event, not a bug in this process:
    one line naming the instance, route, service and cause (a traceback would say only
    where in the transport it was noticed), with the traceback at DEBUG.  When the
    request is retried on another instance, the line says so, at WARNING.
    """
    ep = d.match.endpoint
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    retry = f"; retrying on {retrying_on}" if retrying_on else ""
    logger.log(
        logging.WARNING if retrying_on else logging.ERROR,
        "Routing error: %s %s -> instance %s (route %s %s, service %s, topology %s): %s%s",
        d.method,
        d.path.raw,
        url,
        ep.method,
        ep.pattern,
        ep.service,
        d.topology,
        cause,
        retry,
        exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
    )
    return RoutingError(f"{ep.service} at {url}: {cause}")


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

    def call(self, d: Dispatch, request: Request, environ: Any = None) -> Response:
        if d.match.endpoint.cast:
            request.read()
            return self._casting(d, request)
        try:
            return to_response(d.relay.run_sync(lambda: self.fn(request), self.is_async, environ))
        except DispatchError:
            raise
        except Exception as exc:
            raise handler_failed(d, exc) from exc

    async def serve_asgi(self, d: Dispatch, scope: Scope, receive: Any, send: Any) -> int:
        if d.match.endpoint.cast:
            response = await self.acall(d, self._asgi_request(d, scope, receive))
        else:  # the same request, built inline
            # acall, Relay.run and the admission's ``async with`` spelled out: three
            # coroutines less on every request
            slot = Admission(d.relay, receive)  # relay.admit(receive)
            if not slot.enter():
                await slot.wait()  # queued: a client that leaves, leaves the queue
            try:
                ep = d.match.endpoint
                path = d.path
                request = Request._of_asgi(
                    d.method,
                    path.path,
                    path.raw,
                    d.match.params,
                    # the running loop, as the admission found it (asking again is a
                    # system call under Python 3.11)
                    ASGIBody(slot.receive, slot.dog.loop, d.max_body),
                    d.topology,
                    ep.pattern,
                    ep.service,
                    scope,
                )
                if self.is_async:
                    response = to_response(await self.fn(request))
                else:
                    response = to_response(await slot.to_thread(lambda: self.fn(request)))
            except BaseException as exc:
                timeout = slot.leave(exc)  # the deadline passed: 504, whatever exc says
                if timeout is not None:
                    raise timeout from None
                if isinstance(exc, DispatchError) or not isinstance(exc, Exception):
                    raise
                raise handler_failed(d, exc) from exc
            slot.leave()
        await send_response(send, response, d.method == "HEAD")
        return response.status

    def _asgi_request(self, d: Dispatch, scope: Scope, receive: Any) -> Request:
        ep = d.match.endpoint
        path = d.path
        return Request._of_asgi(
            d.method,
            path.path,
            path.raw,
            d.match.params,
            ASGIBody(receive, asyncio.get_running_loop(), d.max_body),
            d.topology,
            ep.pattern,
            ep.service,
            scope,
        )

    def serve_wsgi(self, d: Dispatch, environ: Environ, start_response: Any) -> Any:
        request = self._request(
            d,
            WSGIBody(environ["wsgi.input"], wsgi_body_length(environ), d.max_body),
            query_string=environ.get("QUERY_STRING", "").encode("latin-1"),
            headers=EnvironHeaders(environ),
            scheme=environ.get("wsgi.url_scheme", "http"),
        )
        response = self.call(d, request, environ)
        return wsgi_response(d.relay, response, start_response, d.method == "HEAD")


def _cast_failed(d: Dispatch, exc: BaseException) -> None:
    if isinstance(exc, DispatchError):
        logger.warning("cast %s %s not run: %s", d.method, d.path.raw, exc)
    else:
        handler_failed(d, exc)


# -- writing responses -----------------------------------------------------------------


# Response headers as bytes, by (name, value): most responses repeat a few pairs
# (content-type, content-length), so each is encoded once; bounded, cleared when full.
# Long values and cookies (unique per response, and not to be kept) are not cached.
_encoded: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_ENCODED_MAX = 1024
_ENCODED_VALUE_MAX = 64


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    out = []
    for header in headers:
        try:
            encoded = _encoded.get(header)
        except TypeError:  # a list, not a tuple: unhashable
            name, value = header  # two items, as before
            header = (name, value)
            encoded = _encoded.get(header)
        if encoded is None:
            name, value = header
            try:
                encoded = (name.encode("latin-1"), value.encode("latin-1"))
            except UnicodeEncodeError as exc:
                raise RoutingError(f"response header is not latin-1: {exc}") from exc
            if len(value) <= _ENCODED_VALUE_MAX and name != "set-cookie":
                if len(_encoded) >= _ENCODED_MAX:
                    _encoded.clear()
                _encoded[header] = encoded
        out.append(encoded)
    return out


async def send_response(send: Any, response: Response, head: bool) -> None:
    headers = _encode_headers(response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    body = response.body
    if isinstance(body, bytes) or head:
        await send({"type": "http.response.body", "body": b"" if head else body})
        return
    if isinstance(body, AsyncIterable):
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            # cancelled (the client left) or failed: end the handler's generator now,
            # rather than whenever it is garbage-collected
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
    else:
        iterator = iter(body)
        try:
            while (chunk := await asyncio.to_thread(_next_or_none, iterator)) is not None:  # type: ignore[arg-type]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
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
