"""Clients: sub-applications that declare routes and register them with leaders.

Two shapes, as in Coyote::

    class Saloon(Client):                    # decorated handlers
        @route("GET", "/")
        def story(self, request): ...

    class Saloon(Client):                    # the seed's shape
        routes = [("GET", "/")]
        def call(self, request): ...         # request.route says which pattern matched

``cast=True`` marks fire-and-forget routes: the caller gets 202 at once and the
handler runs on the relay afterwards.  Handlers may be ``def`` or ``async def``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from coyote_mw.routing.table import DEFAULT_TOPOLOGY, Registration, Route

if TYPE_CHECKING:
    from coyote_mw.http.request import Request

__all__ = ["Client", "RouteSpec", "route"]

F = TypeVar("F", bound=Callable[..., Any])


class Leader(Protocol):
    """What a client registers with: a ``coyote_mw.Coyote`` (which sits above clients)."""

    def register(
        self, target: Any, *, topology: str = ..., instance: str | None = ...
    ) -> Registration: ...


class RouteSpec:
    """What ``route(...)`` returns: a decorator, and a value a ``routes`` list accepts."""

    __slots__ = ("cast", "method", "pattern")

    def __init__(self, method: str, pattern: str, cast: bool) -> None:
        self.method, self.pattern, self.cast = method, pattern, cast

    def as_route(self) -> Route:
        return Route(self.method, self.pattern, self.cast)

    def __call__(self, fn: F) -> F:
        specs: list[RouteSpec] = fn.__dict__.setdefault("__coyote_routes__", [])
        specs.append(self)
        return fn

    def __repr__(self) -> str:
        return f"route({self.method!r}, {self.pattern!r}{', cast=True' if self.cast else ''})"


def route(method: str, pattern: str, *, cast: bool = False) -> RouteSpec:
    """Declare a route: ``@route("GET", "/items/{id:int}")`` on a ``Client`` method."""
    return RouteSpec(method, pattern, cast)


class Client:
    """Base class of in-process clients.

    ``service`` names the client in the table (default: the class name); ``routes``
    (optional) lists routes that go to ``call`` instead of a decorated method.
    """

    service: str | None = None
    routes: list[Any] = []

    def declared_routes(self) -> dict[Route, Callable[[Request], Any]]:
        """Every route of this client with the bound callable that serves it."""
        found: dict[Route, Callable[[Request], Any]] = {}
        for spec in self.routes:
            found[Route.coerce(spec)] = self.call
        for name, attr in inspect.getmembers(type(self)):
            for spec in getattr(attr, "__coyote_routes__", ()):
                found[spec.as_route()] = getattr(self, name)
        return found

    def service_name(self) -> str:
        return self.service or type(self).__name__

    def call(self, request: Request) -> Any:
        """Serve a route listed in ``routes``; override it (the seed's ``call/3``)."""
        raise NotImplementedError(
            f"{type(self).__name__} lists {request.method} {request.route} in `routes` "
            "but does not override call(request)"
        )

    def register_with(
        self, *leaders: Leader, topology: str = DEFAULT_TOPOLOGY, instance: str | None = None
    ) -> list[Registration]:
        """Register this client with each leader (Coyote's ``register_routes``)."""
        return [leader.register(self, topology=topology, instance=instance) for leader in leaders]
