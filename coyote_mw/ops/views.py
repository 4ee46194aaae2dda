"""The operator's views: is the leader alive, is it ready, what does its table hold.

    GET {prefix}/health   no token: 200 {"status": "ok"} while the process serves
    GET {prefix}/ready    no token: 200 once the table is loaded; 503 with the reason
                          while the shared store is unreachable, its first load has not
                          completed, or the table is being reloaded after an outage
    GET {prefix}/routes   token: the table, each route's instances with their URL,
                          health and lease (``route_view``)

The probes are cheap: no Redis round trip, no body read, no lock; they read the state
the store sync already keeps (``SharedLeases.not_ready``).  ``/routes`` is for people
and tools, not probes: with a shared store it reads the lease deadlines from Redis
once per call.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from coyote_mw.http.responses import Response, json_response
from coyote_mw.remote.health import InstanceHealth

if TYPE_CHECKING:
    from coyote_mw.ops.base import Operator, OpsRequest
    from coyote_mw.routing.table import Instance

__all__ = ["Leased", "health", "ready", "route_view", "routes", "upstream"]

_NO_STORE = ("cache-control", "no-store")


def health(ops: Operator, request: OpsRequest) -> Response:
    """Liveness: 200 whenever the process answers at all."""
    return json_response({"status": "ok"}, 200, [_NO_STORE])


def ready(ops: Operator, request: OpsRequest) -> Response:
    """Readiness: 200 once this worker's table is loaded, 503 with the reason until."""
    reason = ops.registration.leases.not_ready()
    if reason is not None:
        return json_response(
            {"error": "Not ready", "reason": reason}, 503, [("retry-after", "1"), _NO_STORE]
        )
    return json_response({"status": "ready", "routes": len(ops.table)}, 200, [_NO_STORE])


def routes(ops: Operator, request: OpsRequest) -> Response:
    """The table as JSON (``route_view``)."""
    return json_response(route_view(ops))


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _health(handler: Any, now: float, wall: float) -> dict[str, Any] | None:
    """An instance's outlier-ejection state (coyote_mw.remote.health), None in process."""
    if not isinstance(handler, InstanceHealth):
        return None
    ejected = bool(handler.ejected)
    until = handler.readmit_at if ejected else 0.0
    return {
        "ejected": ejected,
        "consecutive_failures": int(handler.failures),
        "ejected_until": _iso(wall + (until - now)) if ejected else None,
        "ejections": int(handler.ejections),
    }


def upstream(inst: Instance, now: float, wall: float) -> dict[str, Any]:
    """One instance as ``/routes`` and ``/explain`` show it: its name, URL (None in
    process), kind and health (``now``: ``time.monotonic()``, ``wall``: ``time.time()``)."""
    return {
        "instance": inst.instance,
        "url": getattr(inst.handler, "url", None),
        "kind": getattr(inst.handler, "kind", None),
        "health": _health(inst.handler, now, wall),
    }


class Leased:
    """Instances as ``route_view`` shows them, with their lease: the leases and the
    clocks read once, then ``upstream(topology, instance)`` for each."""

    def __init__(self, ops: Operator) -> None:
        self.leases = ops.registration.leases.deadlines()  # lease -> (expires, ttl), wall s
        self.held = {reg.key: lease for lease, reg in ops.table.leases().items()}
        self.now, self.wall = time.monotonic(), time.time()

    def upstream(self, topology: str, inst: Instance) -> dict[str, Any]:
        lease = self.held.get((topology, inst.service, inst.instance))
        expires, ttl = self.leases.get(lease, (None, None)) if lease else (None, None)
        return {
            **upstream(inst, self.now, self.wall),
            "lease_expires": _iso(expires),
            # a heartbeat (or the registration) sets the expiry to now + ttl
            "last_heartbeat": _iso(expires - ttl) if expires and ttl else None,
        }


def route_view(ops: Operator) -> list[dict[str, Any]]:
    """``table.routes()`` (same keys, same order), each route with ``upstreams``: one
    object per instance with its URL, health, lease expiry and last heartbeat."""
    table = ops.table
    leased = Leased(ops)
    out = []
    for ep in table.endpoints():
        upstreams = [
            leased.upstream(ep.topology, inst)
            for inst in sorted(ep.instances, key=lambda i: i.instance)
        ]
        out.append(
            {
                "topology": ep.topology,
                "method": ep.method,
                "path": ep.pattern,
                "service": ep.service,
                "cast": ep.cast,
                "instances": [u["instance"] for u in upstreams],
                "upstreams": upstreams,
            }
        )
    out.sort(key=lambda r: (r["topology"], r["path"], r["method"]))
    return out
