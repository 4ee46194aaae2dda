"""Registering a remote instance: the one way an instance's URL becomes routes.

``Coyote.register_remote`` (a static upstream), the registration API (a leased
instance) and the store sync (an instance registered through another worker) all come
here.  What makes the instance's handler is the leader's (``RemoteFactory``); the
rules - names, patterns, conflicts, the registration API's reserved prefix - are the
table's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from coyote_mw.events import emit
from coyote_mw.routing.table import DEFAULT_TOPOLOGY, Registration, RouteTable

if TYPE_CHECKING:
    from coyote_mw.remote.handler import RemoteHandler

__all__ = ["MAX_TTL", "MIN_TTL", "RemoteFactory", "log_expired", "register_remote"]

logger = logging.getLogger("coyote_mw.registration")  # the name operators configure

MIN_TTL = 1
"""The shortest lease a registration may ask for, in seconds."""
MAX_TTL = 3600
"""The longest lease a registration may ask for, in seconds."""

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


def log_expired(service: str, instance: str, topology: str) -> None:
    """The line of a lease that ran out: the instance stopped heart-beating."""
    logger.warning(
        "lease of %s/%s in %s expired: its routes are dropped", service, instance, topology
    )
    emit("lease_expired", topology, service)
