"""Django: a middleware configured from ``settings.COYOTE``, under WSGI and ASGI.

    INSTALLED_APPS = [..., "coyote_mw.adapters.django"]   # for `manage.py coyote_routes`
    MIDDLEWARE = ["coyote_mw.adapters.django.CoyoteMiddleware", ...]   # first is best
    COYOTE = {"CLIENTS": ["sample_apps.deadwood.saloon:Saloon"]}

``settings.COYOTE`` keys (all optional): ``CLIENTS`` ("module:Class" strings),
``MOUNT``, ``TOPOLOGY``, ``PRECEDENCE`` ("coyote": matched requests go to coyote before
the URLconf; "host": to Django first, coyote after its 404), ``CONCURRENCY``, ``QUEUE``,
``TIMEOUT``, ``MAX_BODY``, ``ACCESS_LOG`` - the settings of ``coyote_mw.Coyote``.

The middleware is sync and async capable, as Django documents: under WSGI it serves
through coyote's WSGI path with the request's environ; under ASGI through its ASGI path
with the request's scope, streaming the answer back.  ``get_coyote()`` returns the
process's leader, to register clients at run time (e.g. in ``AppConfig.ready``).  Put
the middleware before ``CsrfViewMiddleware``: coyote's clients are not Django views.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from coyote_mw.leader import Coyote
from coyote_mw.loading import apply_settings

__all__ = ["CoyoteMiddleware", "get_coyote"]

FELL_THROUGH = "coyote_mw.fell_through"

_leader: Coyote | None = None
_lock = threading.Lock()


def _config() -> dict[str, Any]:
    return dict(getattr(settings, "COYOTE", {}) or {})


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


def _fall_through_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ[FELL_THROUGH] = True
    return []


async def _fall_through_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        status, headers = started
        response: HttpResponseBase
        if isinstance(body, list):
            response = HttpResponse(b"".join(body), status=status)
        else:
            response = StreamingHttpResponse(body, status=status)
        return _with_headers(response, headers)

    # -- through coyote's ASGI path ----------------------------------------------------

    async def aserve(self, request: HttpRequest) -> HttpResponseBase | None:
        scope = getattr(request, "scope", None)
        if scope is None:  # an async chain under a WSGI server
            return await sync_to_async(self.serve)(request)
        scope = dict(scope)
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            chunk = await sync_to_async(request.read)(64 * 1024)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

        async def run() -> None:
            try:
                await self.asgi(scope, receive, outbox.put)
            finally:
                await outbox.put(None)

        task = asyncio.ensure_future(run())
        start = await outbox.get()
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
            finally:
                await task

        response = StreamingHttpResponse(content(), status=start["status"])
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        return _with_headers(response, headers)


def _environ(request: HttpRequest) -> dict[str, Any]:
    """A WSGI environ for ``request``; its body is read through the request itself."""
    environ = dict(getattr(request, "environ", None) or request.META)
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get("raw_path"):
        query = scope.get("query_string", b"")
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
    del response.headers["Content-Type"]  # only what coyote's handler said
    for name, value in headers:
        response.headers[name] = value
    return response
