"""What the ASGI and WSGI middlewares share: their options, checked once, and the
``Decision`` they route with (``coyote_mw.routing.decision``)."""

from __future__ import annotations

from typing import Any

from coyote_mw.middleware.gateway import Gateway
from coyote_mw.routing.decision import Decision
from coyote_mw.routing.topology import TopologySpec

__all__ = ["Middleware"]


class Middleware:
    wsgi = False
    """What a request carries: an ASGI scope, or (True) a WSGI environ."""

    def __init__(
        self,
        gateway: Gateway,
        app: Any = None,
        *,
        mount: str = "",
        topology: TopologySpec = "default",
        precedence: str = "coyote",
    ) -> None:
        if precedence not in ("coyote", "host"):
            raise ValueError("precedence must be 'coyote' (the default) or 'host'")
        self.gateway = gateway
        self.app = app
        self.mount = mount.rstrip("/")
        # "host": a matched request goes to the host app first, and to coyote only
        # when the host answers 404 (with the body the host read, replayed).
        self.host_first = precedence == "host" and app is not None
        self.decision = Decision(
            gateway.table,
            mount=self.mount,
            owns_all=app is None,
            topology=topology,
            wsgi=self.wsgi,
            host_first=self.host_first,
        )
