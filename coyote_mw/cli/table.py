"""``coyote routes`` as a table: a row per route and instance, columns aligned.

    TOPOLOGY  METHOD  PATH     SERVICE          INSTANCE  URL                    HEALTH  ...
    default   GET     /        deadwood.saloon  s1        http://127.0.0.1:9001  ok      ...

HEALTH is ``ok``, ``ejected until <time>``, or ``-`` for an in-process handler;
FAILS the failures in a row; times are UTC, as the leader gives them.
"""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["health_state", "print_routes", "rows"]

COLUMNS = (
    "TOPOLOGY",
    "METHOD",
    "PATH",
    "SERVICE",
    "INSTANCE",
    "URL",
    "HEALTH",
    "FAILS",
    "EJECTIONS",
    "LEASE EXPIRES",
    "LAST HEARTBEAT",
)


def _time(value: Any) -> str:
    """``2026-12-01T17:40:03.125Z`` -> ``17:40:03`` (the date only when not today's
    would matter; the JSON has it all)."""
    if not isinstance(value, str) or "T" not in value:
        return "-"
    return value.split("T", 1)[1][:8]


def _str(value: Any) -> str:
    return "-" if value is None else str(value)


def health_state(health: Any) -> str:
    """``ok``, ``ejected until <time>``, or ``-`` (in process: no health)."""
    if not isinstance(health, dict):
        return "-"
    return f"ejected until {_time(health.get('ejected_until'))}" if health.get("ejected") else "ok"


def rows(table: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per route and instance; a route without instances gets one row."""
    out = []
    for route in table:
        head = tuple(_str(route.get(k)) for k in ("topology", "method", "path", "service"))
        upstreams = route.get("upstreams")
        if not isinstance(upstreams, list):  # a leader from before upstreams: names only
            upstreams = [{"instance": name} for name in route.get("instances") or []]
        if not upstreams:
            out.append(head + ("-",) * (len(COLUMNS) - len(head)))
        for up in upstreams:
            health = up.get("health")
            state = health_state(health)
            if not isinstance(health, dict):
                fails, ejections = "-", "-"
            else:
                fails = _str(health.get("consecutive_failures"))
                ejections = _str(health.get("ejections"))
            out.append(
                (
                    *head,
                    _str(up.get("instance")),
                    _str(up.get("url")),
                    state,
                    fails,
                    ejections,
                    _time(up.get("lease_expires")),
                    _time(up.get("last_heartbeat")),
                )
            )
    return out


def print_routes(table: Any, out: TextIO) -> None:
    """Print the table; ``ValueError`` when ``table`` is not a coyote route table."""
    if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
        raise ValueError("not a route table (a JSON list of routes)")
    lines = [COLUMNS, *rows(table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for line in lines:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")
    if len(lines) == 1:
        out.write("(no routes)\n")
