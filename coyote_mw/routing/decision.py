"""The routing decision: what becomes of a request, decided in one place.

Both middlewares (``coyote_mw.middleware.asgi`` and ``.wsgi``), ``Coyote.call`` /
``cast`` and ``{prefix}/explain`` ask a ``Decision``.  It knows the route table, the
middleware's mount and whether the middleware has a host app, and nothing of any
server: given the method, the canonical path, the size of the target as sent (path and
query), the ``max_target`` limit, the operator API (what owns the prefix) and what the
request carries (an ASGI scope, a WSGI environ: only the topology resolver reads it),
``decide`` answers ``(verdict, path, topology)``:

    verdict               what happens                                path
    a ``Match``           dispatch to the match's endpoint            below the mount
    ``OPERATOR``          the operator API answers (the prefix)       the path itself
    ``HOST``              the host app answers: no route, and         below the mount,
                          coyote does not own the path                None outside it
    a ``DispatchError``   coyote answers it: 404 ``NoMatchingRoute``, below the mount,
                          405 ``MethodNotAllowed`` (the path fits a   None when refused
                          route of another method), 414               before any lookup
                          ``HeadTooLarge`` (a target over max_target)

An error with a path is a lookup that missed: the middleware checks the request's head
(``coyote_mw.http.forwarding``) before answering it, as before a dispatch.  An error
without one was refused before any lookup: the target was too long (the lookup and its
cache never see such a path), or the path lies outside the mount of a middleware
without a host app.  ``topology`` is the one the request was looked up in (outside
the mount: the middleware's fixed topology, or "default" for a resolver); "" when
none was chosen (the prefix, a target too long, the host's path outside the mount).

The order: the operator API's prefix (whatever the mount), the mount, the target's
size, the topology, the lookup.  The topology is resolved only when it is needed, so a
resolver never sees a request that was not routed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from coyote_mw.errors import DispatchError, HeadTooLarge, MethodNotAllowed, NoMatchingRoute
from coyote_mw.http.paths import CanonicalPath
from coyote_mw.routing.table import DEFAULT_TOPOLOGY, Match, RouteTable
from coyote_mw.routing.topology import TopologyResolver, TopologySpec, mount_relative

__all__ = ["HOST", "OPERATOR", "Decision", "Handoff", "PrefixOwner", "Verdict", "no_match"]


class Handoff:
    """A verdict that gives the request to someone other than a route's handler."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


HOST = Handoff("host")
"""The host app answers."""
OPERATOR = Handoff("operator")
"""The operator API under the prefix answers (``coyote_mw.ops``)."""

Verdict = Match | DispatchError | Handoff


class PrefixOwner(Protocol):
    """What owns the API prefix (``coyote_mw.ops.OperatorAPI``)."""

    def owns(self, path: str) -> bool: ...


def _named(carrier: Any) -> str:
    """``Coyote.call``'s resolver: what it carries is the topology's name."""
    return str(carrier)


class Decision:
    """How one middleware routes: its table, its mount, whether it owns every path
    (no host app), its topology resolver; ``wsgi``: what it carries is an environ."""

    __slots__ = (
        "_fixed",
        "_resolve",
        "host_first",
        "mount",
        "owns_all",
        "resolver",
        "table",
        "wsgi",
    )

    def __init__(
        self,
        table: RouteTable,
        *,
        mount: str = "",
        owns_all: bool = True,
        topology: TopologySpec = DEFAULT_TOPOLOGY,
        wsgi: bool = False,
        host_first: bool = False,
    ) -> None:
        self.table = table
        self.mount = mount.rstrip("/")
        self.owns_all = owns_all
        self.resolver = TopologyResolver.of(topology)
        self.wsgi = wsgi
        self.host_first = host_first
        """The host app answers a matched request first (the middleware's business;
        ``/explain`` says so)."""
        # a fixed topology spares a call per request
        self._fixed = self.resolver.fixed
        self._resolve: Callable[[Any], str] = self.resolver.wsgi if wsgi else self.resolver

    @classmethod
    def direct(cls, table: RouteTable) -> Decision:
        """``Coyote.call``'s: no mount, no host app, and what a request carries is the
        name of its topology."""
        decision = cls(table)
        decision._fixed, decision._resolve = None, _named
        return decision

    def within(self, topology: str) -> Decision:
        """The same decision in ``topology``, whatever a request carries (``/explain``
        with its topology chosen already)."""
        decision = Decision(
            self.table,
            mount=self.mount,
            owns_all=self.owns_all,
            wsgi=self.wsgi,
            host_first=self.host_first,
        )
        decision.resolver = self.resolver
        # a fixed topology stays (it names a 404 outside the mount, as the middleware's)
        decision._resolve = lambda carrier: topology
        decision._fixed = topology if self._fixed is not None else None
        return decision

    def decide(
        self,
        method: str,
        path: CanonicalPath,
        size: int,
        max_target: int,
        operator: PrefixOwner | None,
        carrier: Any,
    ) -> tuple[Verdict, CanonicalPath | None, str]:
        """The verdict on ``method path`` (see the module docstring)."""
        if operator is not None and operator.owns(path.path):
            return OPERATOR, path, ""
        relative = path
        mount = self.mount
        if mount:
            below = mount_relative(path, mount)
            if below is None:
                if not self.owns_all:
                    return HOST, None, ""
                # outside the mount nothing was routed: the resolver is not asked (one
                # written for the mounted paths may not know this request)
                topology = self._fixed or DEFAULT_TOPOLOGY
                return NoMatchingRoute(method, path.raw, topology), None, topology
            relative = below
        if size > max_target:
            return HeadTooLarge("max_target", max_target, 414), None, ""
        topology = self._fixed or self._resolve(carrier)
        match = self.table.match(topology, method, relative.path, relative.segments)
        if match is not None:
            return match, relative, topology
        if not mount and not self.owns_all:
            return HOST, relative, topology
        return no_match(self.table, method, relative, topology), relative, topology


def no_match(
    table: RouteTable, method: str, path: CanonicalPath, topology: str
) -> NoMatchingRoute | MethodNotAllowed:
    """The one place a failed lookup becomes 404, or 405 when the path fits a route of
    another method."""
    allowed = table.allowed_methods(topology, path.path, path.segments)
    if allowed:
        return MethodNotAllowed(method, path.raw, allowed)
    return NoMatchingRoute(method, path.raw, topology)
