"""The route table: named topologies of routes registered by services at run time.

Writes (register / deregister) take a lock, build each changed topology's next
compiled ``Snapshot`` from the last one and publish all of them with one assignment.
Reads (``match``) never lock: they see the old table or the new one, never a mix.

A *registration* is one instance of one service declaring its routes in a topology.
Several instances of one service share its routes (an ``Endpoint`` lists them); a
route that another service already holds in that topology is refused with
``RouteConflict``, a route under a reserved prefix (the registration API's, ``reserve``)
with ``ReservedRoute``, and the table is left exactly as it was.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coyote_mw.errors import InvalidRoute, ReservedRoute, RouteConflict
from coyote_mw.routing.builder import Builder
from coyote_mw.routing.endpoint import Endpoint, Instance, Match
from coyote_mw.routing.matcher import Snapshot
from coyote_mw.routing.patterns import Pattern, parse_method, parse_pattern

__all__ = [
    "Endpoint",
    "Instance",
    "Match",
    "Registration",
    "Route",
    "RouteTable",
    "TableChange",
]

logger = logging.getLogger("coyote_mw.table")

DEFAULT_TOPOLOGY = "default"


@dataclass(frozen=True, slots=True)
class Route:
    """A route as declared: method, pattern and whether it is a cast (202 at once)."""

    method: str
    pattern: str
    cast: bool = False

    @classmethod
    def coerce(cls, value: Any) -> Route:
        """Accept a ``Route``, a ``route(...)`` spec, ``(method, pattern)`` or a dict."""
        if isinstance(value, Route):
            return value
        as_route = getattr(value, "as_route", None)
        if callable(as_route):
            r = as_route()
            assert isinstance(r, Route)
            return r
        if isinstance(value, Mapping):
            try:
                return cls(value["method"], value["path"], bool(value.get("cast", False)))
            except KeyError as exc:
                raise InvalidRoute(f"route {value!r} needs 'method' and 'path'") from exc
        if isinstance(value, tuple | list) and len(value) in (2, 3):
            cast = bool(value[2].get("cast")) if len(value) == 3 else False
            return cls(value[0], value[1], cast)
        raise InvalidRoute(
            f"route {value!r} is not a (method, pattern) pair, a dict or a coyote_mw.route"
        )


# Recent lookups kept per snapshot (see matcher.Snapshot.cache): hits and misses,
# up to this many; when full it starts over, so a flood of distinct paths costs
# memory no more than this.
CACHE_SIZE = 4096
# Only lookups of keys (method and path) up to this many characters are kept, so the
# cache holds at most about CACHE_SIZE x CACHE_KEY_MAX characters of keys and params.
CACHE_KEY_MAX = 256
_UNCACHED = object()


@dataclass(frozen=True)
class Registration:
    """One instance of one service with its routes in one topology."""

    service: str
    instance: str
    topology: str
    routes: tuple[Route, ...]
    handlers: Mapping[Route, Any] = field(repr=False, compare=False)
    lease: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.topology, self.service, self.instance)


@dataclass(frozen=True)
class TableChange:
    """Sent to subscribers after a change is visible to lookups."""

    action: str  # "registered" | "deregistered"
    registration: Registration


_Key = tuple[str, str, str]  # (topology, method, shape) of one endpoint


class RouteTable:
    """Topologies of routes; ``match`` is lock-free, writes are serialised."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._registrations: dict[tuple[str, str, str], Registration] = {}
        self._by_lease: dict[str, Registration] = {}
        self._endpoints: dict[_Key, tuple[Pattern, Endpoint]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._subscribers: list[Callable[[TableChange], None]] = []
        self._reserved: tuple[str, ...] = ()
        self.version = 0
        """Counts the table's changes (every registration and withdrawal, a
        re-registration included): what was read of the table at one version is what
        it holds until this moves on.  Starts at 0 in each process."""

    # -- reads: lock-free ---------------------------------------------------------

    def match(
        self,
        topology: str,
        method: str,
        path: str,
        segments: tuple[str, ...] | None = None,
    ) -> Match | None:
        """Look ``method path`` up in ``topology``; ``path`` is canonical (coyote_mw.http.paths)."""
        snapshot = self._snapshots.get(topology)
        if snapshot is None:
            return None
        if segments is not None or len(path) + len(method) > CACHE_KEY_MAX:
            return snapshot.lookup(method, path, segments)  # rare: not cached
        cache = snapshot.cache
        key = (method, path)
        match = cache.get(key, _UNCACHED)
        if match is _UNCACHED:
            match = snapshot.lookup(method, path)
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[key] = match
        return match  # type: ignore[no-any-return]

    def allowed_methods(
        self, topology: str, path: str, segments: tuple[str, ...] | None = None
    ) -> set[str]:
        """Methods accepted at ``path``: empty when no route fits it at all."""
        snapshot = self._snapshots.get(topology)
        return snapshot.allowed(path, segments) if snapshot is not None else set()

    def registration(self, lease: str) -> Registration | None:
        return self._by_lease.get(lease)

    def registration_of(self, service: str, instance: str, topology: str) -> Registration | None:
        """The current registration of one instance of a service in a topology."""
        return self._registrations.get((topology, service, instance))

    def topologies(self) -> list[str]:
        return sorted(self._snapshots)

    def registrations(self) -> list[Registration]:
        return list(self._registrations.values())

    def routes(self, topology: str | None = None) -> list[dict[str, Any]]:
        """The table as plain data, sorted by topology, pattern and method."""
        out = []
        for (topo, _, _), (_, ep) in list(self._endpoints.items()):
            if topology is not None and topo != topology:
                continue
            out.append(
                {
                    "topology": topo,
                    "method": ep.method,
                    "path": ep.pattern,
                    "service": ep.service,
                    "cast": ep.cast,
                    "instances": sorted(i.instance for i in ep.instances),
                }
            )
        out.sort(key=lambda r: (r["topology"], r["path"], r["method"]))
        return out

    def patterns(self, topology: str | None = None) -> list[tuple[Pattern, Endpoint]]:
        """Every route's parsed pattern with its endpoint (of one topology), unordered."""
        held = list(self._endpoints.items())
        return [pe for (topo, _, _), pe in held if topology is None or topo == topology]

    def endpoints(self) -> list[Endpoint]:
        """Every route's endpoint (its instances and their handlers), unordered."""
        return [ep for _, ep in list(self._endpoints.values())]

    def leases(self) -> dict[str, Registration]:
        """Every registration, by its lease."""
        return dict(self._by_lease)

    def __len__(self) -> int:
        return sum(s.size for s in self._snapshots.values())

    # -- writes -------------------------------------------------------------------

    def reserve(self, *prefixes: str) -> None:
        """Keep routes from under ``prefixes`` (the registration API's): ``register``
        refuses them from now on.  Replaces what was reserved before; no prefix: none."""
        self._reserved = tuple(p.rstrip("/") for p in prefixes if p.rstrip("/"))

    def reserved(self, pattern: str) -> str | None:
        """The reserved prefix a path matching ``pattern`` may fall under, if any."""
        literal = pattern.split("{", 1)[0]  # what every path it matches starts with
        for prefix in self._reserved:
            if literal == prefix or literal.startswith(prefix + "/"):
                return prefix
        return None

    def subscribe(self, callback: Callable[[TableChange], None]) -> Callable[[], None]:
        """Call ``callback`` after every change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def register(
        self,
        service: str,
        routes: Iterable[Any],
        handlers: Mapping[Route, Any] | Callable[[Route], Any],
        *,
        instance: str | None = None,
        topology: str = DEFAULT_TOPOLOGY,
        lease: str | None = None,
    ) -> Registration:
        """Register (or re-register) one instance of ``service`` with ``routes``.

        ``handlers`` maps each route to what the relay calls for it, or is a function
        giving it.  Re-registering the same service instance replaces its routes.
        Raises ``InvalidRoute`` (``ReservedRoute``) or ``RouteConflict``; the table is
        then unchanged.
        """
        _check_name("service", service)
        _check_name("topology", topology)
        instance = instance if instance is not None else "main"
        _check_name("instance", instance)
        declared = [Route.coerce(r) for r in routes]
        if not declared:
            raise InvalidRoute(f"service {service!r} declares no routes")
        if self._reserved:
            under = [
                (p, r.pattern)
                for r in declared
                if isinstance(r.pattern, str) and (p := self.reserved(r.pattern))
            ]
            if under:
                raise ReservedRoute(under[0][0], [pattern for _, pattern in under])
        parsed: list[tuple[Route, str, Pattern]] = []
        seen: dict[tuple[str, tuple[str, ...]], str] = {}
        for r in declared:
            method, pattern = parse_method(r.method), parse_pattern(r.pattern)
            key = (method, pattern.shape)
            if key in seen:
                raise InvalidRoute(
                    f"service {service!r} declares {method} {r.pattern} twice "
                    f"(as {seen[key]!r} and {r.pattern!r})"
                )
            seen[key] = r.pattern
            parsed.append((Route(method, r.pattern, r.cast), method, pattern))
        lookup = handlers if callable(handlers) else handlers.__getitem__
        resolved = {r: lookup(orig) for (r, _, _), orig in zip(parsed, declared, strict=True)}
        reg = Registration(
            service,
            instance,
            topology,
            tuple(r for r, _, _ in parsed),
            resolved,
            **({"lease": lease} if lease else {}),
        )
        with self._lock:
            previous = self._registrations.get(reg.key)
            for r, method, pattern in parsed:
                held = self._endpoints.get((topology, method, "/".join(pattern.shape)))
                if held is None:
                    continue
                held_pattern, ep = held
                if ep.service != service:
                    raise RouteConflict(ep, _Declared(method, r.pattern, service, topology))
                if held_pattern.text != pattern.text and not _only(ep, instance):
                    raise InvalidRoute(
                        f"{method} {r.pattern}: instances of service {service!r} must declare "
                        f"the same pattern; another instance declared {held_pattern.text!r}"
                    )
            builder = self._builder(topology)
            if previous is not None:
                self._withdraw(builder, previous)
            for r, method, pattern in parsed:
                self._add(builder, reg, r, method, pattern)
            self._registrations[reg.key] = reg
            if previous is not None:
                self._by_lease.pop(previous.lease, None)
            self._by_lease[reg.lease] = reg
            self._publish(topology, builder)
        self._notify(TableChange("registered", reg))
        return reg

    def deregister(
        self,
        *,
        service: str | None = None,
        instance: str | None = None,
        lease: str | None = None,
        topology: str | None = None,
        route: tuple[str, str] | None = None,
    ) -> list[Registration]:
        """Remove registrations by lease, or by service (and instance, topology).

        With ``route=(method, pattern)`` only that route is withdrawn from the matching
        registrations.  Returns the registrations affected; unknown ones are ignored.
        """
        if lease is None and service is None:
            raise ValueError("deregister needs a lease or a service")
        with self._lock:
            if lease is not None:
                found = [self._by_lease[lease]] if lease in self._by_lease else []
            else:
                found = [
                    reg
                    for reg in self._registrations.values()
                    if reg.service == service
                    and (instance is None or reg.instance == instance)
                    and (topology is None or reg.topology == topology)
                ]
            changes: list[TableChange] = []
            for reg in found:
                builder = self._builder(reg.topology)
                self._withdraw(builder, reg)
                del self._registrations[reg.key]
                del self._by_lease[reg.lease]
                kept = tuple(
                    r for r in reg.routes if route is not None and (r.method, r.pattern) != route
                )
                if kept:
                    remaining = Registration(
                        reg.service,
                        reg.instance,
                        reg.topology,
                        kept,
                        reg.handlers,
                        reg.lease,
                    )
                    for r in kept:
                        self._add(builder, remaining, r, r.method, parse_pattern(r.pattern))
                    self._registrations[remaining.key] = remaining
                    self._by_lease[remaining.lease] = remaining
                self._publish(reg.topology, builder)
                changes.append(TableChange("deregistered", reg))
        for change in changes:
            self._notify(change)
        return found

    # -- internals (called with the lock held) --------------------------------------

    def _builder(self, topology: str) -> Builder:
        return Builder(self._snapshots.get(topology))

    def _add(self, builder: Builder, reg: Registration, r: Route, method: str, p: Pattern) -> None:
        key = (reg.topology, method, "/".join(p.shape))
        inst = Instance(reg.service, reg.instance, reg.handlers[r])
        held = self._endpoints.get(key)
        others = tuple(i for i in held[1].instances if i.instance != reg.instance) if held else ()
        ep = Endpoint(method, p, reg.service, reg.topology, r.cast, (*others, inst))
        self._endpoints[key] = (p, ep)
        builder.put(method, p, ep)

    def _withdraw(self, builder: Builder, reg: Registration) -> None:
        for r in reg.routes:
            p = parse_pattern(r.pattern)
            key = (reg.topology, r.method, "/".join(p.shape))
            held = self._endpoints.get(key)
            if held is None:
                continue
            pattern, ep = held
            rest = tuple(i for i in ep.instances if i.instance != reg.instance)
            if rest:
                ep = Endpoint(r.method, pattern, ep.service, ep.topology, ep.cast, rest)
                self._endpoints[key] = (pattern, ep)
                builder.put(r.method, pattern, ep)
            else:
                del self._endpoints[key]
                builder.remove(r.method, pattern)

    def _publish(self, topology: str, builder: Builder) -> None:
        snapshot = builder.build()
        snapshots = dict(self._snapshots)
        if snapshot.size:
            snapshots[topology] = snapshot
        else:
            snapshots.pop(topology, None)
        self._snapshots = snapshots  # the one assignment readers see
        self.version += 1

    def _notify(self, change: TableChange) -> None:
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                logger.exception("route table subscriber %r failed", callback)


@dataclass(frozen=True, slots=True)
class _Declared:
    method: str
    pattern: str
    service: str
    topology: str


def _only(ep: Endpoint, instance: str) -> bool:
    return all(i.instance == instance for i in ep.instances)


def _check_name(what: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > 200 or not value.isprintable():
        raise InvalidRoute(f"{what} must be a non-empty printable string of at most 200 chars")
