"""``Gateway``: what a middleware needs of its leader, and nothing more.

Built by the leader (``Coyote.gateway``) and handed to every middleware it makes; the
middleware reads it on each request, so a setting the leader changes after the
middleware was built (``Coyote.configure``: the forwarding policy, max_body, the
operator API, the relays' bounds) is what the next request sees.  The leader is its
only writer, in one place (``Coyote._wire``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from coyote_mw.http.forwarding import Forwarding
from coyote_mw.middleware.accesslog import AccessLog
from coyote_mw.ops.api import OperatorAPI
from coyote_mw.relay import Relay
from coyote_mw.routing.table import RouteTable

__all__ = ["Gateway"]


class Gateway:
    __slots__ = (
        "forwarding",
        "log_access",
        "max_body",
        "ops",
        "relay",
        "relay_for",
        "shutdown",
        "startup",
        "table",
    )

    def __init__(
        self,
        *,
        table: RouteTable,
        ops: OperatorAPI | None,
        forwarding: Forwarding,
        relay: Relay,
        relay_for: Callable[[str], Relay],
        max_body: int,
        log_access: AccessLog,
        startup: Callable[[], Awaitable[None]],
        shutdown: Callable[[], Awaitable[None]],
    ) -> None:
        self.table = table
        """The route table (one for the leader's life)."""
        self.ops = ops
        """What answers under the prefix; None while the API is off (no token)."""
        self.forwarding = forwarding
        """The head checks and forwarded headers (``coyote_mw.http.forwarding``)."""
        self.relay = relay
        """The default topology's relay (its loop drains async bodies under WSGI)."""
        self.relay_for = relay_for
        """The relay of a topology."""
        self.max_body = max_body
        """Bytes a handler may read from a request body."""
        self.log_access = log_access
        """The access line (``coyote_mw.middleware.accesslog``)."""
        self.startup = startup
        """Coyote's part of the host's lifespan startup (sub-apps' lifespans)."""
        self.shutdown = shutdown
        """... and of its shutdown (accepted casts finish first)."""

    def __repr__(self) -> str:
        return f"<Gateway routes={len(self.table)} ops={self.ops is not None}>"
