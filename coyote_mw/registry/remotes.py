"""Registering a remote instance: the one way an instance's URL becomes routes.

``Coyote.register_remote`` (a static upstream), the registration API (a leased
instance) and the store sync (an instance registered through another worker) all come
here.  What makes the instance's handler is the leader's (``RemoteFactory``); the
rules - names, patterns, conflicts, the registration API's reserved prefix - are the
table's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from coyote_mw.routing.table import DEFAULT_TOPOLOGY, Registration, RouteTable

if TYPE_CHECKING:
    from coyote_mw.remote.handler import RemoteHandler

__all__ = ["RemoteFactory", "register_remote"]

RemoteFactory = Callable[[str], "RemoteHandler"]
"""Makes the handler of the instance at a URL (``InvalidInstanceURL`` if it cannot be
relayed to)."""


def register_remote(
    table: RouteTable,
    remote: RemoteFactory,
    url: str,
    service: str,
    routes: Iterable[Any],
    *,
    instance: str | None = None,
    topology: str = DEFAULT_TOPOLOGY,
    lease: str | None = None,
) -> Registration:
    """Register the instance at ``url`` (by default named by its canonical URL) as
    serving ``routes`` of ``service``: one handler for all of them.

    Raises ``InvalidRoute`` (``InvalidInstanceURL``, ``ReservedRoute``) or
    ``RouteConflict``; the table is then unchanged.
    """
    handler = remote(url)
    return table.register(
        service,
        list(routes),
        lambda route: handler,
        instance=instance or handler.url,
        topology=topology,
        lease=lease,
    )
