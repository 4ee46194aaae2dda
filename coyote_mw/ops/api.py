"""``OperatorAPI``: what answers under the leader's prefix (default ``/_coyote``).

The operator's views are answered here, each a function of the ``OperatorAPI`` and the
``OpsRequest``, listed by path in ``VIEWS``; every other path under the prefix
(``/registrations...``) goes to the ``RegistrationAPI`` it wraps.  Both middlewares
talk to this object only: ``owns`` (is the path under the prefix), ``probe`` (a view
open without a token that reads no body, answered before anything is read),
``refuse_early`` (401/403 and 413 before the body is read) and ``handle``.

A view is one line in ``VIEWS``:

    "/routes": View(views.routes),               # token needed, GET and HEAD
    "/health": View(views.health, token=False),  # open: answered by ``probe``
    "/dashboard": View(dashboard.serve, token=False, methods=None, below=True,
                       body=True, part=dashboard.Dashboard),
    "/metrics": View(metrics.serve, token=False, methods=None,  # checks its token
                     inline=False),                               # off the event loop

Its function gets the ``OperatorAPI`` (``.table``, ``.registration`` and its leases,
``.relay_for``, ``.metrics``, ``.part(...)``) and the ``OpsRequest`` (method, path,
query, lower-case headers, scheme, the body when the view reads one, and the
middleware's ``Decision`` and ``max_target``), and returns a ``Response``.  The options:

    token    the bearer token is checked before the view is called (False: the view is
             open, or checks who calls it itself, as the dashboard's sign-in does)
    methods  the methods it takes; another is answered 405 with ``Allow`` before it is
             called (None: the view answers every method itself)
    below    it answers the paths below its own too (``/dashboard/data``, ...)
    body     it reads the request body (up to the registration API's ``MAX_PAYLOAD``);
             without it an open view is answered before the body is read
    part     made once per ``OperatorAPI``, when it is built, with it: the view's own
             state (the dashboard's sessions), found again by ``ops.part(that)``
    inline   an open view that reads no body is answered by ``probe``, before its body
             is read (on the event loop under ASGI); False: in a thread under ASGI,
             for a view that can take long

The views' JSON shapes are in their modules (``coyote_mw.ops.views``, ``.explain``,
``.dashboard``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from coyote_mw.http.responses import Response, json_response
from coyote_mw.ops import dashboard, explain, metrics, views
from coyote_mw.ops.base import Operator, OpsRequest, View

if TYPE_CHECKING:
    from coyote_mw.ops.metrics import Metrics
    from coyote_mw.registry.api import RegistrationAPI
    from coyote_mw.relay import Relay
    from coyote_mw.routing.table import RouteTable

__all__ = ["VIEWS", "OperatorAPI", "OpsRequest", "View"]

T = TypeVar("T")

VIEWS: dict[str, View] = {
    "/health": View(views.health, token=False),
    "/ready": View(views.ready, token=False),
    "/routes": View(views.routes),
    "/explain": View(explain.explain),
    "/dashboard": View(
        dashboard.serve, token=False, methods=None, below=True, body=True, part=dashboard.Dashboard
    ),
    # its token: the mode's; not on the event loop (10,000 routes: some 0.3 s a scrape)
    "/metrics": View(metrics.serve, token=False, methods=None, inline=False),
}
"""The operator's views by path below the prefix."""


class OperatorAPI:
    """The prefix's owner: the operator's views, and the registration API it wraps."""

    def __init__(
        self,
        registration: RegistrationAPI,
        table: RouteTable,
        relay_for: Callable[[str], Relay],
        metrics: Metrics | None = None,
        views: Mapping[str, View] | None = None,
    ) -> None:
        self.registration = registration
        self.table = table
        self.relay_for = relay_for
        """The relay of a topology (its load, for the dashboard)."""
        self.metrics = metrics
        """The leader's Prometheus metrics (``/metrics``)."""
        self.prefix = registration.prefix
        self._below = self.prefix + "/"
        self.views: Mapping[str, View] = dict(VIEWS if views is None else views)
        self._parts: dict[Any, Any] = {}
        self._parts_lock = threading.Lock()
        for view in self.views.values():
            if view.part is not None:
                self.part(view.part)

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self._below)

    def part(self, make: Callable[[Operator], T]) -> T:
        """The one ``make(self)`` of this API (a view's own state), made on first use."""
        with self._parts_lock:
            held = self._parts.get(make)
            if held is None:
                held = self._parts[make] = make(self)
            return held

    def _view(self, path: str) -> View | None:
        rest = path[len(self.prefix) :]
        view = self.views.get(rest)
        if view is None and rest.count("/") > 1:  # a view that answers below its path
            view = self.views.get(rest[: rest.index("/", 1)])
            if view is not None and not view.below:
                return None
        return view

    def probe(self, request: OpsRequest, on_loop: bool = False) -> Response | None:
        """The answer to a view open without a token that reads no body (``/health``,
        ``/ready``, ``/metrics``), given before anything is read; None for every other
        path.  ``on_loop`` (an event loop calls): None for such a view that can take long
        too (``View.inline`` False), which ``unread`` names: ``probe`` it in a thread."""
        view = self._view(request.path)
        if view is None or not _open_unread(view) or (on_loop and not view.inline):
            return None
        return self._serve(view, request)

    def unread(self, request: OpsRequest) -> bool:
        """Whether ``probe`` answers ``request``: its body is never read."""
        view = self._view(request.path)
        return view is not None and _open_unread(view)

    def refuse_early(self, request: OpsRequest, close: bool = False) -> Response | None:
        """The answer to give before reading the body, if any: 401/403 without the right
        token (but for an open view), 413 for a declared length over the registration
        API's ``MAX_PAYLOAD`` (``RegistrationAPI.refuse_early``; ``close``: the
        connection is closed)."""
        view = self._view(request.path)
        token = view is None or view.token
        return self.registration.refuse_early(request.headers, close, token)

    def handle(self, request: OpsRequest, body: bytes | None) -> Response:
        """Answer one request under the prefix; ``body`` is None when it was over the
        registration API's ``MAX_PAYLOAD``."""
        view = self._view(request.path)
        if view is None:
            return self.registration.handle(request.method, request.path, request.headers, body)
        if view.token:
            refusal = self.registration.unauthorized(request.headers)
            if refusal is not None:
                return refusal
        if view.body:
            request = dataclasses.replace(request, body=body)
        return self._serve(view, request)

    def _serve(self, view: View, request: OpsRequest) -> Response:
        if view.methods is not None and request.method not in view.methods:
            allowed = list(view.methods)
            return json_response(
                {
                    "error": "Method not allowed",
                    "method": request.method,
                    "path": request.path[len(self.prefix) :],
                    "allowed": allowed,
                },
                405,
                [("allow", ", ".join(allowed))],
            )
        return view.serve(self, request)


def _open_unread(view: View) -> bool:
    """A view ``probe`` answers: open without a token, its body never read."""
    return not view.token and not view.body
