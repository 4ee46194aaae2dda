"""Django: a middleware configured from ``settings.COYOTE``, under WSGI and ASGI.

    INSTALLED_APPS = [..., "coyote_mw.adapters.django"]   # for `manage.py coyote_routes`
    MIDDLEWARE = ["coyote_mw.adapters.django.CoyoteMiddleware", ...]   # first is best
    COYOTE = {"CLIENTS": ["sample_apps.deadwood.saloon:Saloon"]}

``settings.COYOTE`` keys (all optional): the adapter's own ``CLIENTS`` ("module:Class"
strings), ``MOUNT``, ``TOPOLOGY``, ``PRECEDENCE`` ("coyote": matched requests go to coyote
before the URLconf; "host": to Django first, coyote after its 404); then each keyword of
``coyote_mw.Coyote`` in upper case, the settings of the leader: ``CONCURRENCY``,
``QUEUE``, ``TIMEOUT``, ``MAX_BODY``, ``ACCESS_LOG``, ``LOG_FORMAT``, ``TOKEN``,
``PREFIX``, ``STORE``, ``TLS``, ``TRUSTED_PROXIES``, ``MAX_HEADERS``, ``MAX_HEADER_BYTES``,
``MAX_TARGET``, ``PSEUDONYM``, ``TOPOLOGIES``, ``MAX_WEBSOCKETS``, ``METRICS``, and for
remote instances ``MAX_RESPONSE_HEAD``, ``RESPONSE_TIMEOUT``, ``STREAM_IDLE_TIMEOUT``,
``EJECT_AFTER``, ``BASE_EJECTION_TIME``, ``MAX_EJECTION_TIME``, ``MAX_EJECTION_PERCENT``.
Any other key is refused with ``ImproperlyConfigured`` naming the closest known one.

The middleware is sync and async capable, as Django documents: under WSGI it serves
through coyote's WSGI path with the request's environ; under ASGI through its ASGI path
with the request's scope, streaming the answer back.  ``get_coyote()`` returns the
process's leader, to register clients at run time (e.g. in ``AppConfig.ready``).  Put
the middleware before ``CsrfViewMiddleware``: coyote's clients are not Django views.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from http.cookies import Morsel
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from coyote_mw.errors import RoutingError
from coyote_mw.http.responses import error_response
from coyote_mw.http.types import Environ, Scope
from coyote_mw.leader import Coyote
from coyote_mw.settings import UnknownSetting, apply_settings, check_settings

__all__ = ["CoyoteMiddleware", "get_coyote"]

FELL_THROUGH = "coyote_mw.fell_through"

logger = logging.getLogger("coyote_mw.django")

_leader: Coyote | None = None
_lock = threading.Lock()


def _config() -> dict[str, Any]:
    config = dict(getattr(settings, "COYOTE", {}) or {})
    try:
        check_settings(config, "settings.COYOTE[{!r}]")
    except UnknownSetting as exc:
        raise ImproperlyConfigured(str(exc)) from exc
    return config


def get_coyote() -> Coyote:
    """The process's leader, built once from ``settings.COYOTE``."""
    global _leader
    with _lock:
        if _leader is None:
            leader = Coyote()
            apply_settings(leader, _config().get)
            _leader = leader
        return _leader


def _reset(setting: str, **kwargs: Any) -> None:
    """``override_settings(COYOTE=...)`` in tests gets a fresh leader."""
    global _leader
    if setting == "COYOTE":
        with _lock:
            old, _leader = _leader, None
        if old is not None:
            old.close()


setting_changed.connect(_reset)


def _fall_through_wsgi(environ: Environ, start_response: Any) -> list[bytes]:
    environ[FELL_THROUGH] = True
    return []


async def _fall_through_asgi(scope: Scope, receive: Any, send: Any) -> None:
    scope[FELL_THROUGH] = True


class CoyoteMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.coyote = get_coyote()
        cfg = _config()
        options = {
            "mount": cfg.get("MOUNT", ""),
            "topology": cfg.get("TOPOLOGY", "default"),
        }
        self.host_first = cfg.get("PRECEDENCE", "coyote") == "host"
        if cfg.get("PRECEDENCE", "coyote") not in ("coyote", "host"):
            raise ValueError("settings.COYOTE['PRECEDENCE'] must be 'coyote' or 'host'")
        self.wsgi = self.coyote.wsgi(_fall_through_wsgi, **options)
        self.asgi = self.coyote.asgi(_fall_through_asgi, **options)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if self.host_first:
            response = self.get_response(request)
            if response.status_code != 404:
                return response
            return self.serve(request) or response
        return self.serve(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.host_first:
            response: HttpResponseBase = await self.get_response(request)
            if response.status_code != 404:
                return response
            return await self.aserve(request) or response
        served = await self.aserve(request)
        if served is not None:
            return served
        return await self.get_response(request)  # type: ignore[no-any-return]

    # -- through coyote's WSGI path ----------------------------------------------------

    def serve(self, request: HttpRequest) -> HttpResponseBase | None:
        """Coyote's answer to ``request``, or None when no route of coyote's fits."""
        environ = _environ(request)
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [int(status[:3]), headers]
            return lambda data: None

        body = self.wsgi(environ, start_response)
        if environ.get(FELL_THROUGH):
            return None
        response: HttpResponseBase
        if isinstance(body, list):
            status, headers = started
            response = HttpResponse(b"".join(body), status=status)
        else:
            # PEP 3333: an app may call start_response as late as its first chunk (any
            # generator app, an ASGI app through the bridge): pull it before answering
            rest = iter(body)
            first: list[bytes] = []
            failure: Exception | None = None
            if not started:
                try:
                    first.append(next(rest, b""))
                except Exception as exc:
                    failure = exc
            if not started:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # gives the relay slot back
                logger.error(
                    "%s %s: the WSGI app sent no response",
                    request.method,
                    request.path,
                    exc_info=failure,
                )
                error = error_response(RoutingError("the WSGI app sent no response"))
                return _with_headers(
                    HttpResponse(error.content, status=error.status), error.headers
                )
            status, headers = started
            response = StreamingHttpResponse(_Resumed(first, rest, body), status=status)
        return _with_headers(response, headers)

    # -- through coyote's ASGI path ----------------------------------------------------

    async def aserve(self, request: HttpRequest) -> HttpResponseBase | None:
        scope = getattr(request, "scope", None)
        if scope is None:  # an async chain under a WSGI server
            return await sync_to_async(self.serve)(request)
        scope = dict(scope)
        query = scope.get("query_string", b"")
        if isinstance(query, str):  # Django's AsyncClient gives a str; Django takes either
            scope["query_string"] = query.encode("utf-8")
        # One message at a time between coyote and Django's response loop: the handler
        # produces only as fast as the server sends (backpressure), and is cancelled when
        # Django stops reading (the client left).
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1)

        async def receive() -> dict[str, Any]:
            chunk = await sync_to_async(request.read)(64 * 1024)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

        async def run() -> None:
            try:
                await self.asgi(scope, receive, outbox.put)
            except asyncio.CancelledError:
                raise  # the reader left: nobody to tell
            except BaseException:
                await outbox.put(None)
                raise
            await outbox.put(None)

        task = asyncio.ensure_future(run())
        try:
            start = await outbox.get()
        except BaseException:
            task.cancel()
            raise
        if start is None:
            await task  # raises what the app raised, if anything
            if scope.get(FELL_THROUGH):
                return None
            raise RuntimeError("coyote sent no response")

        async def content() -> AsyncIterator[bytes]:
            try:
                while (message := await outbox.get()) is not None:
                    if message.get("body"):
                        yield message["body"]
            except BaseException:  # closed or cancelled early: the client left
                task.cancel()
                raise
            await task  # raises what the app raised after it began answering, if anything

        stream = _Stream(content(), task)
        response = StreamingHttpResponse(stream, status=start["status"])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        return _with_headers(response, headers)


class _Stream:
    """Coyote's streamed answer under Django ASGI.  Django's handler calls ``close()`` (from
    a thread) when the response is done - also when the client left mid-stream and Django
    stopped iterating without closing the iterator: the producer is cancelled then."""

    def __init__(self, content: AsyncIterator[bytes], task: asyncio.Future[None]) -> None:
        self._content = content
        self._task = task
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._content

    def close(self) -> None:
        if not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)


class _Resumed:
    """A WSGI response with the chunk already pulled put back in front; closes it."""

    def __init__(self, first: list[bytes], rest: Iterator[bytes], body: Iterable[bytes]) -> None:
        self._first, self._rest, self._body = first, rest, body

    def __iter__(self) -> Iterator[bytes]:
        yield from self._first
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _environ(request: HttpRequest) -> dict[str, Any]:
    """A WSGI environ for ``request``; its body is read through the request itself."""
    environ = dict(getattr(request, "environ", None) or request.META)
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get("raw_path"):
        query = scope.get("query_string", b"")
        if isinstance(query, str):
            query = query.encode("utf-8")
        environ["REQUEST_URI"] = (scope["raw_path"] + (b"?" + query if query else b"")).decode(
            "latin-1"
        )
    environ.setdefault("wsgi.url_scheme", request.scheme or "http")
    chunked = "HTTP_TRANSFER_ENCODING" in environ and environ.get("wsgi.input_terminated")
    if not (scope is None and chunked):
        environ["wsgi.input"] = request  # HttpRequest.read works even after .body was read
    # else: Django reads a WSGI body only up to CONTENT_LENGTH, none of a chunked one;
    # the server's own wsgi.input ends where the body does, so coyote reads that.
    # HttpRequest.read ends with the body too (PEP 3333's wsgi.input_terminated).
    environ["wsgi.input_terminated"] = True
    return environ


def _with_headers(
    response: HttpResponseBase, headers: Iterable[tuple[str, str]]
) -> HttpResponseBase:
    """Coyote's headers on a Django response, none lost.

    Django's ``response.headers`` holds one value per name, and its handlers write
    ``Set-Cookie`` lines only from ``response.cookies``: each ``Set-Cookie`` goes there,
    exactly as the handler wrote it, and other repeated fields are joined with ", "
    (RFC 9110 section 5.3).
    """
    del response.headers["Content-Type"]  # only what coyote's handler said
    target = response.headers
    for name, value in headers:
        if name.lower() == "set-cookie":
            cookie = _SetCookie(value)
            # two lines for one cookie name (other paths or domains) both survive
            key = cookie.key if cookie.key not in response.cookies else f"{cookie.key}\0{value}"
            dict.__setitem__(response.cookies, key, cookie)
        elif name in target:
            target[name] = f"{target[name]}, {value}"
        else:
            target[name] = value
    return response


class _SetCookie(Morsel[str]):
    """One ``Set-Cookie`` line of coyote's answer: a ``Morsel`` (so Django's test client
    and middleware can read its name and value) that is written out exactly as given."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line
        pair = line.split(";", 1)[0]
        name, _, value = pair.partition("=")
        # set() would refuse names Python's cookie module finds illegal: take them as sent
        self._key, self._value, self._coded_value = name.strip(), value.strip(), value.strip()

    def OutputString(self, attrs: Any = None) -> str:
        return self.line

    # kept whole through a copy and a pickle (Django's cache middleware stores responses)
    def copy(self) -> _SetCookie:
        return _SetCookie(self.line)

    def __reduce__(self) -> tuple[type[_SetCookie], tuple[str]]:
        return _SetCookie, (self.line,)
