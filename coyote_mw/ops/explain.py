"""``GET {prefix}/explain``: what a request would get, without dispatching it.

    GET /_coyote/explain?method=GET&path=/drinks/&topology=blue&header=X-Tenant:a

``path`` is required (a query after ``?`` counts towards the target's size); ``method``
defaults to GET; ``topology`` names the topology instead of letting the middleware's
resolver choose one; ``header=name:value`` (repeatable) gives the headers a
``by_header`` or function resolver reads.  It needs the token, as ``/routes`` does.

The answer comes from the very decision the middleware makes for a request
(``coyote_mw.routing.decision``), taken by the middleware that received the
``/explain`` request, with its mount, topology resolver and precedence.  Nothing is
dispatched, and no round-robin turn is taken (``Endpoint.peek``).  200, always these
keys (null or [] where they do not apply):

    method       the method explained
    path         the target explained, as given
    canonical    its canonical path, as coyote forwards and logs it (null: a bad path)
    lookup       the path the table is searched with: decoded, below the mount (null:
                 no lookup)
    mount        the middleware's mount prefix (null without one)
    topology     {"name", "why", "detail"}: the topology the path is looked up in, and
                 why: "given" (topology=), "header" (by_header read it), "default"
                 (nothing chose another), "mount" (the middleware serves that one),
                 "resolver" (a function chose it); null when none is chosen
    verdict      "dispatch" (a route's handler answers), "error" (coyote answers with
                 an error), "host" (the host app answers), "operator" (the prefix)
    status       what coyote answers: 404, 405, 414, 400 (a bad path), 503 (every
                 instance ejected), 202 (a cast); null when a handler or the host does
    error        the error of that status ("No matching route", ...), else null
    detail       one sentence: what happens, and why
    route        {"method", "path", "service", "cast", "params"}: the matched route
                 and its converted parameters
    next         {"instance", "url", "kind", "health"}: the instance the next request
                 would go to (health as in /routes; null in process)
    instances    every instance of the route in that shape, ejected ones included
    allowed      405: the methods whose routes fit the path
    near         404, or a miss the host answers: the closest routes, each {"method",
                 "path", "service", "topology", "kind", "why"}; kind is
                 "trailing-slash", "case", "convert" (a parameter did not convert),
                 "spelling" or "topology" (``coyote_mw.routing.near``)
    precedence   "coyote", or "host": the host app answers a matched request first

A malformed ``/explain`` request (no path, a bad method, a parameter given twice or
unknown, a header without ``:``) is 400 ``{"error": "Invalid explain request",
"detail": ...}``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from coyote_mw.errors import (
    BadRequestPath,
    DispatchError,
    HeadTooLarge,
    InvalidRoute,
    MethodNotAllowed,
)
from coyote_mw.http.paths import canonicalize
from coyote_mw.http.responses import Response, json_response
from coyote_mw.ops.views import upstream
from coyote_mw.routing.decision import HOST, OPERATOR, Decision
from coyote_mw.routing.near import near_misses
from coyote_mw.routing.patterns import parse_method
from coyote_mw.routing.table import Match

if TYPE_CHECKING:
    from coyote_mw.ops.base import Operator, OpsRequest

__all__ = ["explain", "explanation"]

_FIELDS = ("method", "path", "topology")
_MAX_FIELDS = 100  # header= included


def explain(ops: Operator, request: OpsRequest) -> Response:
    """The view: the explanation as JSON, or 400 for a malformed request."""
    try:
        method, path, topology, headers = _asked(request.query)
    except ValueError as exc:
        return json_response({"error": "Invalid explain request", "detail": str(exc)}, 400)
    answer = explanation(ops, request.decision, request.max_target, method, path, topology, headers)
    return json_response(answer, 200, [("cache-control", "no-store")])


def _asked(query: str) -> tuple[str, str, str | None, dict[str, str]]:
    """``method``, ``path``, ``topology`` and the headers from the query string."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError as exc:  # too many fields, or not UTF-8 once unquoted
        raise ValueError(f"the query string: {exc}") from None
    given: dict[str, str] = {}
    headers: dict[str, str] = {}
    for key, value in pairs:
        if key == "header":
            name, colon, text = value.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise ValueError(f"header={value!r}: use header=name:value")
            headers[name] = text.strip()
        elif key in _FIELDS:
            if key in given:
                raise ValueError(f"{key}= is given twice")
            given[key] = value
        else:
            raise ValueError(f"unknown parameter {key!r}: use method, path, topology, header")
    path = given.get("path")
    if not path:
        raise ValueError("path= is required, e.g. ?method=GET&path=/drinks/3")
    try:
        method = parse_method(given.get("method") or "GET")
    except InvalidRoute as exc:
        raise ValueError(str(exc)) from None
    return method, path, given.get("topology") or None, headers


def explanation(
    ops: Operator,
    decision: Decision,
    max_target: int,
    method: str,
    path: str,
    topology: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What ``method path`` would get from the middleware that routes with
    ``decision`` (the keys: the module docstring)."""
    out: dict[str, Any] = {
        "method": method,
        "path": path,
        "canonical": None,
        "lookup": None,
        "mount": decision.mount or None,
        "topology": None,
        "verdict": "error",
        "status": None,
        "error": None,
        "detail": "",
        "route": None,
        "next": None,
        "instances": [],
        "allowed": [],
        "near": [],
        "precedence": "host" if decision.host_first else "coyote",
    }
    raw, _, query = path.partition("?")
    try:
        canon = canonicalize(raw)
    except BadRequestPath as exc:
        return {**out, "status": exc.status, "error": exc.error, "detail": exc.detail}
    out["canonical"] = canon.raw
    if topology is not None:
        name, why, said = topology, "given", "topology= in the request to /explain"
    else:
        try:
            name, why, said = decision.resolver.explain(
                method, canon.path, headers or {}, decision.wsgi
            )
        except Exception as exc:  # the request itself would fail as it does: 500
            detail = f"the topology resolver raised {exc!r}"
            return {**out, "status": 500, "error": "Internal error", "detail": detail}
    size = len(raw.encode("utf-8")) + len(query.encode("utf-8"))
    verdict, relative, chosen = decision.within(name).decide(
        method, canon, size, max_target, ops, None
    )
    if relative is not None and verdict is not OPERATOR:
        out["lookup"] = relative.path
    if chosen:
        out["topology"] = {"name": chosen, "why": why, "detail": said}
    mount = decision.mount
    if isinstance(verdict, Match):
        _dispatch(out, verdict, decision.host_first)
    elif verdict is OPERATOR:
        out["verdict"] = "operator"
        out["detail"] = f"under {ops.prefix}: the operator API answers it"
    elif verdict is HOST:
        out["verdict"] = "host"
        if relative is None:
            out["detail"] = f"outside the mount {mount}: the host app answers"
        else:
            out["detail"] = "no route fits, and coyote does not own the path: the host app answers"
            out["near"] = _near(ops, chosen, method, relative)
    elif isinstance(verdict, DispatchError):
        out["status"], out["error"] = verdict.status, verdict.error
        if isinstance(verdict, MethodNotAllowed):
            out["allowed"] = verdict.allowed
            where = relative.path if relative is not None else raw
            out["detail"] = f"the routes at {where} take {', '.join(verdict.allowed)} only"
        elif isinstance(verdict, HeadTooLarge):
            out["detail"] = f"the target is {size} bytes, over max_target ({max_target})"
        elif relative is None:
            out["detail"] = f"outside the mount {mount}, and this middleware has no host app"
        else:
            out["near"] = _near(ops, chosen, method, relative)
            out["detail"] = f"no route of topology {chosen!r} fits {relative.path}"
            if out["near"]:
                closest = out["near"][0]
                out["detail"] += f"; closest: {closest['method']} {closest['path']}"
                out["detail"] += f" ({closest['why']})"
    return out


def _dispatch(out: dict[str, Any], match: Match, host_first: bool) -> None:
    ep = match.endpoint
    now, wall = time.monotonic(), time.time()
    out["verdict"] = "dispatch"
    out["route"] = {
        "method": ep.method,
        "path": ep.pattern,
        "service": ep.service,
        "cast": ep.cast,
        "params": dict(match.params),
    }
    out["instances"] = [upstream(i, now, wall) for i in ep.instances]
    following = ep.peek()
    if following is None:
        out["status"], out["error"] = 503, "No healthy instance"
        out["detail"] = f"every instance of {ep.service} is ejected"
        return
    out["next"] = upstream(following, now, wall)
    out["detail"] = f"{ep.service} answers it (instance {following.instance})"
    if ep.cast:
        out["status"] = 202
        out["detail"] += ": a cast, accepted with 202 at once"
    if host_first:
        out["detail"] = "the host app answers first; when it answers 404, " + out["detail"]


def _near(ops: Operator, topology: str, method: str, path: Any) -> list[dict[str, Any]]:
    return [dataclasses.asdict(n) for n in near_misses(ops.table, topology, method, path)]
