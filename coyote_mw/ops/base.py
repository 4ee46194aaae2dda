"""What an operator view is given and how it is declared: the ``OpsRequest``, the
``Operator`` serving it (``coyote_mw.ops.api.OperatorAPI``, as the views see it) and
``View`` (its options: ``coyote_mw.ops.api``).  Apart from ``api`` so that the views
and the API that lists them import no circle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from coyote_mw.http.responses import Response

if TYPE_CHECKING:
    from coyote_mw.registry.api import RegistrationAPI
    from coyote_mw.relay import Relay
    from coyote_mw.routing.decision import Decision
    from coyote_mw.routing.table import RouteTable

__all__ = ["Operator", "OpsRequest", "View"]

T = TypeVar("T")


class Operator(Protocol):
    """What a view may use of the API serving it."""

    prefix: str
    table: RouteTable
    registration: RegistrationAPI
    relay_for: Callable[[str], Relay]
    metrics: Any
    """The leader's ``coyote_mw.ops.metrics.Metrics`` (None: none)."""

    def owns(self, path: str) -> bool: ...

    def part(self, make: Callable[[Operator], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class OpsRequest:
    """A request under the prefix, as the middleware read it."""

    method: str
    path: str
    """The canonical path, decoded, prefix included."""
    query: str
    """The query string as sent (``a=1&b=2``), "" without one."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    scheme: str
    """``http`` or ``https``, as the server says."""
    decision: Decision
    """How the middleware that got the request routes (what ``/explain`` explains)."""
    max_target: int
    """The leader's limit on a request target (``/explain``: 414 above it)."""
    body: bytes | None = b""
    """The body, for a view that reads one; None when it was over ``MAX_PAYLOAD``."""
    root_path: str = ""
    """Where the app is mounted in its server (ASGI ``root_path``, WSGI ``SCRIPT_NAME``):
    what a URL given to a browser starts with."""


@dataclass(frozen=True, slots=True)
class View:
    """An operator view: its function and its options (``coyote_mw.ops.api``)."""

    serve: Callable[[Operator, OpsRequest], Response]
    token: bool = True
    methods: tuple[str, ...] | None = ("GET", "HEAD")
    below: bool = False
    body: bool = False
    part: Callable[[Operator], Any] | None = None
    inline: bool = True
    """An open view that reads no body is answered by ``probe`` before its body is read,
    on the server's event loop under ASGI; False for one that can take long to make (a
    scrape of a large table): the ASGI middleware runs its ``probe`` in a thread."""
