"""What an operator asks a leader: is it alive, is it ready, and what does its table hold.

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
    from coyote_mw.registry.api import RegistrationAPI

__all__ = ["PROBES", "probe", "route_view"]

PROBES = ("/health", "/ready")


def probe(api: RegistrationAPI, method: str, rest: str) -> Response | None:
    """The answer to ``/health`` or ``/ready`` (``rest``: the path after the prefix);
    None for any other path."""
    if rest == "/health":
        if method != "GET" and method != "HEAD":
            return _not_allowed(method, rest)
        return json_response({"status": "ok"}, 200, [("cache-control", "no-store")])
    if rest == "/ready":
        if method != "GET" and method != "HEAD":
            return _not_allowed(method, rest)
        reason = api.leases.not_ready()
        if reason is not None:
            return json_response(
                {"error": "Not ready", "reason": reason},
                503,
                [("retry-after", "1"), ("cache-control", "no-store")],
            )
        return json_response(
            {"status": "ready", "routes": len(api.table)},
            200,
            [("cache-control", "no-store")],
        )
    return None


def _not_allowed(method: str, path: str) -> Response:
    return json_response(
        {"error": "Method not allowed", "method": method, "path": path, "allowed": ["GET", "HEAD"]},
        405,
        [("allow", "GET, HEAD")],
    )


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _health(handler: Any, now: float, wall: float) -> dict[str, Any] | None:
    """An instance's outlier-ejection state (coyote_mw.health), None for in-process."""
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


def route_view(api: RegistrationAPI) -> list[dict[str, Any]]:
    """``table.routes()`` (same keys, same order), each route with ``upstreams``: one
    object per instance with its URL, health, lease expiry and last heartbeat."""
    table = api.table
    leases = api.leases.deadlines()  # lease -> (expires, ttl), wall-clock seconds
    held = {reg.key: lease for lease, reg in table.leases().items()}
    now, wall = time.monotonic(), time.time()
    out = []
    for ep in table.endpoints():
        upstreams = []
        for inst in sorted(ep.instances, key=lambda i: i.instance):
            lease = held.get((ep.topology, ep.service, inst.instance))
            expires, ttl = leases.get(lease, (None, None)) if lease else (None, None)
            upstreams.append(
                {
                    "instance": inst.instance,
                    "url": getattr(inst.handler, "url", None),
                    "kind": getattr(inst.handler, "kind", None),
                    "health": _health(inst.handler, now, wall),
                    "lease_expires": _iso(expires),
                    # a heartbeat (or the registration) sets the expiry to now + ttl
                    "last_heartbeat": _iso(expires - ttl) if expires and ttl else None,
                }
            )
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
