"""Starlette and FastAPI: coyote as one entry of the app's middleware list.

    from starlette.middleware import Middleware
    from coyote_mw.adapters.starlette import CoyoteMiddleware

    coyote = Coyote()
    coyote.register(Saloon())
    app = Starlette(routes=[...], middleware=[Middleware(CoyoteMiddleware, coyote=coyote)])
    # FastAPI: app.add_middleware(CoyoteMiddleware, coyote=coyote)

The relay and in-process ASGI apps start and stop in the host's lifespan: coyote's
startup runs before the host's, its shutdown after.

Starlette has no settings of its own for coyote, so this adapter reads none: the leader
is configured with ``coyote_mw.Coyote``'s keywords (``Coyote(concurrency=..., store=...,
token=...)``; without ``coyote``, a ``Coyote()`` with the defaults), and the middleware
takes the options of ``Coyote.asgi``: ``mount`` (a prefix coyote owns; "" the whole path
space), ``topology`` (a name, or ``by_header(...)``; "default") and ``precedence``
("coyote": matched requests go to coyote first; "host": to the app's routes first,
coyote after a 404).
"""

from __future__ import annotations

from typing import Any

from coyote_mw.leader import Coyote, check_mount
from coyote_mw.middleware.asgi import CoyoteASGI
from coyote_mw.routing.topology import TopologyResolver, TopologySpec

__all__ = ["CoyoteMiddleware"]


class CoyoteMiddleware(CoyoteASGI):
    def __init__(
        self,
        app: Any,
        coyote: Coyote | None = None,
        *,
        mount: str = "",
        topology: TopologySpec = "default",
        precedence: str = "coyote",
    ) -> None:
        self.coyote = coyote if coyote is not None else Coyote()
        super().__init__(
            self.coyote.gateway,
            app,
            mount=check_mount(mount),
            topology=TopologyResolver.of(topology),
            precedence=precedence,
        )
