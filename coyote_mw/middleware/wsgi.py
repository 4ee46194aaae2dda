"""The WSGI middleware: ``coyote.wsgi(app)``; the twin of ``coyote_mw.middleware.asgi``.

The same rules: matched requests go to the relay, everything else to the host app,
and 404 / 405 where coyote owns the path.  The path is taken from the raw request
line (``REQUEST_URI`` / ``RAW_URI``, set by gunicorn, Werkzeug and most servers) so an
encoded slash or dot-segment gets the same verdict as under ASGI; without it, from
``PATH_INFO``, which the server has already decoded.

The decision itself is ``coyote_mw.routing.decision``'s, the one the ASGI middleware
asks; this module reads the environ, checks the head, answers, replays the body for
``precedence="host"`` and writes the access line, with what its ``Gateway`` gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.datastructures import EnvironHeaders

from coyote_mw.errors import BadRequestPath, DispatchError, PayloadTooLarge
from coyote_mw.handlers.base import Dispatch, wsgi_response
from coyote_mw.http.paths import CanonicalPath, canonicalize, from_decoded
from coyote_mw.http.responses import Response, error_response
from coyote_mw.http.types import Environ
from coyote_mw.middleware.base import Middleware
from coyote_mw.middleware.replay import WSGIKeeper
from coyote_mw.ops.api import OperatorAPI, OpsRequest
from coyote_mw.registry.api import read_wsgi_body
from coyote_mw.routing.decision import HOST, OPERATOR
from coyote_mw.routing.table import Match

__all__ = ["CoyoteWSGI"]


class CoyoteWSGI(Middleware):
    wsgi = True

    def __call__(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        start = time.perf_counter()
        method: str = environ["REQUEST_METHOD"]
        gw = self.gateway
        try:
            path = _canonical(environ)
        except BadRequestPath as exc:
            return self._answer(
                start_response, exc, start, method, environ.get("PATH_INFO", ""), None, environ
            )
        # the target's size: one over max_target is refused before the lookup (and its
        # cache) sees the path.  Without the raw request line, the target the relay
        # would forward (the server decoded PATH_INFO: %61 was one byte already)
        target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        if target:
            size = len(target)
        else:
            size = len(environ.get("SCRIPT_NAME", "")) + len(path.raw) + 1
            size += len(environ.get("QUERY_STRING", ""))
        verdict, relative, topology = self.decision.decide(
            method, path, size, gw.forwarding.max_target, gw.ops, environ
        )
        if verdict is HOST:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if verdict is OPERATOR:
            assert gw.ops is not None  # the decision saw it
            return self._operator(gw.ops, environ, start_response, method, path.path, start)
        if relative is None:  # refused before any lookup: outside the mount, or 414
            assert isinstance(verdict, DispatchError)
            return self._answer(start_response, verdict, start, method, path.raw, None, environ)
        if target and target[:1] != "/" and "://" in target[:10]:
            # GET http://host/path: its authority is the Host (RFC 9112 3.2.2), checked
            # and forwarded as X-Forwarded-Host
            environ["HTTP_HOST"] = urlsplit(target).netloc
        # coyote answers this one: its head must pass coyote's checks (coyote_mw.http.forwarding)
        refused = gw.forwarding.check_wsgi(environ)
        if refused is not None:
            return self._refuse(environ, start_response, refused, start, method, path.raw)
        if not isinstance(verdict, Match):  # a lookup that missed: 404 or 405
            assert isinstance(verdict, DispatchError)
            return self._answer(start_response, verdict, start, method, path.raw, None, environ)
        if self.host_first:
            keeper = WSGIKeeper(environ, gw.max_body)
            host_answer = _host_answer(self.app, environ, start_response)
            if host_answer is not None:
                return host_answer
            if not keeper.replay(environ):  # the body the host read, for coyote's handler
                over = PayloadTooLarge(gw.max_body)
                return self._answer(start_response, over, start, method, path.raw, None, environ)
        endpoint = verdict.endpoint
        relay = gw.relay_for(topology)
        d = Dispatch(verdict, method, relative, topology, relay, gw.max_body, self.mount)
        status = 0

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        handler = None  # pick() may refuse: every instance ejected (503)
        try:
            handler = endpoint.pick()
            result = handler.serve_wsgi(d, environ, recording_start_response)
        except DispatchError as exc:
            return self._answer(
                start_response, exc, start, method, path.raw, endpoint, environ, handler, d
            )
        gw.log_access(method, path.raw, status, start, endpoint, environ, handler, d)
        return result  # type: ignore[no-any-return]

    def _operator(
        self,
        ops: OperatorAPI,
        environ: Environ,
        start_response: Any,
        method: str,
        path: str,
        start: float,
    ) -> Iterable[bytes]:
        gw = self.gateway
        headers = {k.lower(): v for k, v in EnvironHeaders(environ).items()}
        query = environ.get("QUERY_STRING", "")
        scheme = environ.get("wsgi.url_scheme", "http")
        max_target = gw.forwarding.max_target
        request = OpsRequest(
            method,
            path,
            query,
            headers,
            scheme,
            self.decision,
            max_target,
            root_path=environ.get("SCRIPT_NAME", ""),
        )
        # the token and a declared length first: a refused body is never read
        response = ops.probe(request) or ops.refuse_early(request)
        if response is None:
            body = read_wsgi_body(environ)  # or a 413 past MAX_PAYLOAD
            response = body if isinstance(body, Response) else ops.handle(request, body)
        if method != "PUT" or response.status != 200:  # a heartbeat is a DEBUG line
            gw.log_access(method, path, response.status, start, None, environ)
        return wsgi_response(gw.relay, response, start_response, method == "HEAD")

    def _answer(
        self,
        start_response: Any,
        exc: DispatchError,
        start: float,
        method: str,
        raw: str,
        endpoint: Any = None,
        environ: Environ | None = None,
        handler: Any = None,
        d: Any = None,
    ) -> Iterable[bytes]:
        gw = self.gateway
        gw.log_access(method, raw, exc.status, start, endpoint, environ, handler, d)
        return wsgi_response(gw.relay, error_response(exc), start_response, method == "HEAD")

    def _refuse(
        self,
        environ: Environ,
        start_response: Any,
        exc: DispatchError,
        start: float,
        method: str,
        raw: str,
    ) -> Iterable[bytes]:
        response = error_response(exc)
        if environ.get("SERVER_SOFTWARE", "").startswith("WSGIServer/"):
            # wsgiref asserts that an app sends no hop-by-hop header (PEP 3333) where
            # Werkzeug's server and waitress close the connection on Connection: close
            response.headers = [(k, v) for k, v in response.headers if k != "connection"]
        gw = self.gateway
        gw.log_access(method, raw, exc.status, start, None, environ)
        return wsgi_response(gw.relay, response, start_response, method == "HEAD")


def _host_answer(app: Any, environ: Environ, start_response: Any) -> Iterable[bytes] | None:
    """Run the host app; its answer, or None (answer dropped) when it was a 404."""
    held: list[Any] = []

    def holding_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        held[:] = [status, headers, exc_info]
        if status[:3] == "404":
            return lambda data: None
        return start_response(status, headers, exc_info)

    result: Iterable[bytes] = app(environ, holding_start_response)
    iterator = iter(result)
    first: list[bytes] = []
    if not held:  # a generator app calls start_response on its first chunk
        first = [next(iterator, b"")]
    if held and held[0][:3] == "404":
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return None
    return _Chain(first, iterator, result)


class _Chain:
    """The host's answer, with the chunk already pulled put back in front."""

    def __init__(self, first: list[bytes], rest: Any, result: Any) -> None:
        self._first, self._rest, self._result = first, rest, result

    def __iter__(self) -> Any:
        yield from self._first
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


def _canonical(environ: Environ) -> CanonicalPath:
    """The canonical path below ``SCRIPT_NAME``, from the raw request line if given."""
    path_info = _text(environ.get("PATH_INFO", "")) or "/"
    script = _text(environ.get("SCRIPT_NAME", ""))
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri:
        raw = urlsplit(uri).path if "://" in uri[:10] else uri.split("?", 1)[0]
        # Trust the raw line only when it is the request PATH_INFO describes: a
        # middleware before us may have rewritten PATH_INFO / SCRIPT_NAME.
        if unquote(raw) == script + path_info:
            if script:
                raw = "/" + "/".join(raw.split("/")[script.count("/") + 1 :])
            return canonicalize(raw)
    return canonicalize(from_decoded(path_info))


def _text(value: str) -> str:
    """PEP 3333 strings carry bytes as latin-1; paths are UTF-8."""
    return value.encode("latin-1").decode("utf-8", "surrogateescape")
