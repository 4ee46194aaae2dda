"""The exception tree of coyote_mw, drawn once: every error it raises on purpose is a
``CoyoteError``, defined here and importable too from the module that raises it.

    CoyoteError
    ├── UnknownSetting             a settings key no adapter reads (also a ValueError;
    │                              raised by coyote_mw.settings)
    ├── RegistrationError          refused at registration time; the table is unchanged
    │   ├── InvalidRoute           a pattern, method or converter that cannot be used (400)
    │   │   ├── InvalidInstanceURL an instance URL that cannot be relayed to (also a
    │   │   │                      ValueError)
    │   │   └── ReservedRoute      a route under the registration API's prefix (403)
    │   ├── RouteConflict          another service holds that method + pattern (409)
    │   └── StoreConflict          the same, found in the shared store: another worker's
    │                              registration took it a moment ago (409)
    ├── StoreUnavailable           the shared store (Redis) cannot be reached; what needs it
    │                              waits until it is back (503)
    ├── RegistrationRefused        a leader answered a remote client's registration with
    │                              an error status (coyote_mw.registry.registrar)
    ├── TransportError             the lean HTTP/1.1 client (coyote_mw.remote.transport)
    │   ├── ConnectError           no connection; nothing was sent
    │   │   └── PoolTimeout        every connection to the upstream stayed busy
    │   ├── ReadTimeout            the upstream was too slow
    │   └── RemoteProtocolError    a malformed or incomplete response
    ├── ResponseCut                a relayed WSGI response failed after its head went out
    │                              (also a ConnectionAbortedError, so servers close the
    │                              connection without ending the body)
    └── DispatchError              raised while serving a request; carries .status
        ├── BadRequest             a body the handler asked for is malformed (400)
        │   ├── BadRequestPath     malformed percent-encoding, bad UTF-8, NUL, ".." above root
        │   └── BadFraming         Content-Length with Transfer-Encoding, or two lengths
        │                          (400, and the connection is closed)
        ├── PayloadTooLarge        a body the handler read is over ``max_body`` (413)
        ├── LengthRequired         a chunked body the WSGI server cannot delimit (411)
        ├── UnsupportedCoding      a transfer coding other than one "chunked" (501, and
        │                          the connection is closed)
        ├── NoMatchingRoute        nothing fits (404)
        ├── MethodNotAllowed       the path fits, the method does not (405, .allowed)
        ├── RoutingError           the handler raised or failed (502); detail goes to the log only
        ├── RelaySaturated         the relay's queue is full (503, .retry_after)
        ├── NoHealthyInstance      the route exists but every instance is ejected (503)
        ├── HandlerTimeout         the handler took longer than the timeout (504)
        ├── UnsupportedEventLoop   under a trio server, a route that needs asyncio (500)
        ├── HeadTooLarge           too many header lines or bytes (431), a target too long (414)
        ├── LoopDetected           the request passed through this leader already (508)
        └── ClientDisconnected     the client left while its request waited for a slot
                                   (499, logged; nobody is left to answer)

The HTTP edge (``coyote_mw.middleware.asgi`` / ``coyote_mw.middleware.wsgi``) turns a
``DispatchError`` into a JSON body ``{"error": ...}`` in exactly one place,
``error_response``; the registration API answers the registration errors, the store's and
its own, with theirs.  The matcher never raises on the request path: it returns a
``Match`` or ``None``.  Errors of the libraries underneath (httpx, redis, a framework's)
are translated where they are met and chained ``from exc``; only a ``TransportError`` is
never a ``DispatchError``: the remote handler turns it into one (``RoutingError``,
``HandlerTimeout``) with the instance's name.  Two private signals stay outside the tree,
since they never leave the module that raises them: the registration API's refusal of a
JSON document, and the transport's stop of its parser at a second response.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class CoyoteError(Exception):
    """Base class of every error coyote_mw raises on purpose."""


class UnknownSetting(CoyoteError, ValueError):
    """A settings key no adapter reads: a typo, refused rather than ignored.

    A ``ValueError`` too, as a bad setting always was."""


class RegistrationError(CoyoteError):
    """A registration was refused; the route table was left exactly as it was."""

    status = 400


class InvalidRoute(RegistrationError):
    """A route cannot be used as declared: the message says how to fix it."""

    status = 400


class ReservedRoute(InvalidRoute):
    """Routes under a prefix the leader keeps for itself: its registration API's."""

    status = 403

    def __init__(self, prefix: str, patterns: list[str]) -> None:
        self.prefix = prefix
        self.patterns = patterns
        super().__init__(
            f"routes under {prefix} are the registration API's: {patterns}; "
            f"choose paths outside {prefix}, or another prefix for the API"
        )


class InvalidInstanceURL(InvalidRoute, ValueError):
    """An instance URL that cannot be relayed to: the message says how to fix it.

    A ``ValueError`` too, as a bad URL always was."""


class RouteConflict(RegistrationError):
    """Two services claim the same method and pattern in one topology."""

    status = 409

    def __init__(self, existing: Any, duplicate: Any) -> None:
        self.existing = existing
        self.duplicate = duplicate
        super().__init__(
            f"{duplicate.method} {duplicate.pattern} in topology {duplicate.topology!r} is "
            f"already served by service {existing.service!r} "
            f"({existing.method} {existing.pattern}); "
            f"service {duplicate.service!r} may not take it. Deregister the other service "
            "first, or register as another instance of the same service."
        )


class StoreConflict(RegistrationError):
    """Another service's live registration holds this route (checked in the shared store)."""

    status = 409

    def __init__(self, claim: str, owner: str) -> None:
        self.claim, self.owner = claim, owner
        super().__init__(f"{claim} is held by service {owner!r}")


class StoreUnavailable(CoyoteError):
    """The shared store cannot be reached: registrations wait until it is back."""


class RegistrationRefused(CoyoteError):
    """The leader answered the registration with an error status."""


class TransportError(CoyoteError):
    """Base of every error the lean HTTP/1.1 transport raises."""


class ConnectError(TransportError):
    """No connection could be had; nothing was sent."""


class PoolTimeout(ConnectError):
    """Every connection to the upstream stayed busy: nothing was sent, and nothing
    is known to be wrong with the upstream."""


class ReadTimeout(TransportError):
    """The upstream did not answer, or stopped making progress, within ``read_timeout``."""


class RemoteProtocolError(TransportError):
    """The upstream broke HTTP/1.1, or closed the connection before the response ended."""


class ResponseCut(CoyoteError, ConnectionAbortedError):
    """A relayed WSGI response that failed after its head went out: a connection error,
    so that servers close the client's connection without ending the body (Werkzeug's
    would otherwise append an error page to a chunked body and end it as complete)."""


class DispatchError(CoyoteError):
    """A request could not be served. ``status`` and ``error`` make its HTTP answer."""

    status = 500
    error = "Internal error"

    def fields(self) -> dict[str, Any]:
        """Extra JSON fields for the response body (never internal detail)."""
        return {}

    def headers(self) -> list[tuple[str, str]]:
        return []


class BadRequest(DispatchError):
    status = 400
    error = "Bad request"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)

    def fields(self) -> dict[str, Any]:
        return {"detail": self.detail}


class BadRequestPath(BadRequest):
    error = "Bad request path"


class BadFraming(BadRequest):
    """A body framed two ways (RFC 9112 6.1, 6.3): refused, and the connection closed,
    since the server and anything in front of it may disagree on where it ends."""

    error = "Bad request framing"

    def headers(self) -> list[tuple[str, str]]:
        return [("connection", "close")]


class PayloadTooLarge(DispatchError):
    status = 413
    error = "Request body too large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body over {limit} bytes")

    def fields(self) -> dict[str, Any]:
        return {"max_body": self.limit}


class LengthRequired(DispatchError):
    """A body sent without Content-Length under a WSGI server that does not mark where it
    ends (``wsgi.input_terminated``, PEP 3333): reading it could block or read past it."""

    status = 411
    error = "Length required"

    def __init__(self) -> None:
        super().__init__("this server cannot delimit a chunked request body")

    def fields(self) -> dict[str, Any]:
        return {"detail": "send the body with a Content-Length"}


class UnsupportedCoding(DispatchError):
    """A ``Transfer-Encoding`` other than a single ``chunked`` (``gzip, chunked``, two
    lines): the relay frames bodies itself and implements no other coding, so it cannot
    pass the body on as it is meant (RFC 9112 6.1: 501, and the connection closed)."""

    status = 501
    error = "Not implemented"

    def __init__(self, coding: str) -> None:
        self.detail = f"transfer coding {coding!r}: only a single 'chunked' is implemented"
        super().__init__(self.detail)

    def fields(self) -> dict[str, Any]:
        return {"detail": self.detail}

    def headers(self) -> list[tuple[str, str]]:
        return [("connection", "close")]


class NoMatchingRoute(DispatchError):
    status = 404
    error = "No matching route"

    def __init__(self, method: str, path: str, topology: str) -> None:
        self.method, self.path, self.topology = method, path, topology
        super().__init__(f"{method} {path} (topology {topology!r})")

    def fields(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "topology": self.topology}


class MethodNotAllowed(DispatchError):
    status = 405
    error = "Method not allowed"

    def __init__(self, method: str, path: str, allowed: Iterable[str]) -> None:
        self.method, self.path = method, path
        self.allowed = sorted(allowed)
        super().__init__(f"{method} {path}; allowed: {', '.join(self.allowed)}")

    def fields(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "allowed": self.allowed}

    def headers(self) -> list[tuple[str, str]]:
        return [("allow", ", ".join(self.allowed))]


class RoutingError(DispatchError):
    """The handler raised, returned an error, or the remote service failed.

    The message is for the log; the HTTP body says only "Routing error".
    """

    status = 502
    error = "Routing error"


class RelaySaturated(DispatchError):
    status = 503
    error = "Relay saturated"

    def __init__(self, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(f"relay queue full; retry after {retry_after}s")

    def fields(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}

    def headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class NoHealthyInstance(DispatchError):
    """The route exists, but every instance behind it is ejected or draining."""

    status = 503
    error = "No healthy instance"

    def __init__(self, service: str, retry_after: int = 1) -> None:
        self.service = service
        self.retry_after = retry_after
        super().__init__(f"every instance of {service!r} is ejected")

    def fields(self) -> dict[str, Any]:
        return {"service": self.service, "retry_after": self.retry_after}

    def headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class HandlerTimeout(DispatchError):
    status = 504
    error = "Handler timeout"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"handler took longer than {timeout}s")

    def fields(self) -> dict[str, Any]:
        return {"timeout": self.timeout}


class UnsupportedEventLoop(DispatchError):
    """A route that needs asyncio (a remote instance, an in-process app) under a server
    running another event loop (``hypercorn -k trio``)."""

    status = 500
    error = "Unsupported event loop"

    def __init__(self, library: str) -> None:
        self.library = library
        super().__init__(
            f"coyote_mw dispatches on asyncio, and this server runs {library}: only "
            "clients' own handlers are served here; for remote instances and in-process "
            "apps run it on asyncio (hypercorn -k asyncio or -k uvloop, uvicorn, granian)"
        )

    def fields(self) -> dict[str, Any]:
        return {"detail": str(self)}


class HeadTooLarge(DispatchError):
    """The request head is over one of coyote's own limits (``max_headers``,
    ``max_header_bytes``: 431; ``max_target``: 414)."""

    status = 431
    error = "Request header fields too large"

    def __init__(self, setting: str, limit: int, status: int = 431) -> None:
        self.setting, self.limit, self.status = setting, limit, status
        if status == 414:
            self.error = "Request target too long"
        super().__init__(f"request head over {setting}={limit}")

    def fields(self) -> dict[str, Any]:
        return {self.setting: self.limit}


class LoopDetected(DispatchError):
    """The request carries this leader's ``Via`` entry: it was relayed here already."""

    status = 508
    error = "Loop detected"

    def __init__(self, via: str) -> None:
        self.via = via
        super().__init__(f"the request passed through {via} already")

    def fields(self) -> dict[str, Any]:
        return {"via": self.via}


class ClientDisconnected(DispatchError):
    """The client closed its connection while its request waited in the relay's queue:
    the request left the queue and never reached a handler (HAProxy's abortonclose).
    Logged as 499, nginx's "client closed request"; nothing is sent."""

    status = 499
    error = "Client closed request"
