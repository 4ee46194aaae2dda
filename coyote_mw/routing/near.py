"""The routes a path nearly matched, for ``{prefix}/explain`` of a 404.

A route is a near miss when exactly one thing keeps the path from fitting it:

    kind              example (request path -> route)
    trailing-slash    /drinks/ -> /drinks;  /tab -> /tab/
    case              /Drinks/3 -> /drinks/{id:int}   (paths are case-sensitive)
    convert           /drinks/rum -> /drinks/{id:int}; /drinks/ -> /drinks/{id:int}
    spelling          /drink/3 -> /drinks/{id:int}    (a literal segment nearly the same)
    topology          the path fits a route of another topology

Only for a request that missed: this walks every route of the topology (and looks the
path up in the others), so it is never on a request's path.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from coyote_mw.http.paths import CanonicalPath
from coyote_mw.routing.patterns import Pattern, Segment
from coyote_mw.routing.table import RouteTable

__all__ = ["NearMiss", "near_misses"]

KINDS = ("trailing-slash", "case", "convert", "spelling", "topology")
"""The kinds of near miss, the closest first."""

_SPELLING = 0.75  # difflib's ratio from which two literals are "nearly the same"


@dataclass(frozen=True, slots=True)
class NearMiss:
    method: str
    path: str
    """The route's pattern."""
    service: str
    topology: str
    kind: str
    why: str
    """What differs, in a sentence."""


def near_misses(
    table: RouteTable, topology: str, method: str, path: CanonicalPath, limit: int = 10
) -> list[NearMiss]:
    """The routes ``method path`` nearly fits, the closest first (at most ``limit``):
    those of ``topology`` one difference away, then the ones it fits in other
    topologies.  Routes of the request's method come before others of a kind."""
    segments = path.segments or tuple(path.path[1:].split("/"))
    found: list[NearMiss] = []
    for pattern, endpoint in table.patterns(topology):
        difference = _difference(pattern, segments)
        if difference is not None:
            kind, why = difference
            found.append(
                NearMiss(endpoint.method, pattern.text, endpoint.service, topology, kind, why)
            )
    for other in table.topologies():
        if other == topology:
            continue
        match = table.match(other, method, path.path, path.segments)
        if match is not None:
            ep = match.endpoint
            why = f"the route is in topology {other!r}, not {topology!r}"
            found.append(NearMiss(ep.method, ep.pattern, ep.service, other, "topology", why))
    found.sort(key=lambda n: (KINDS.index(n.kind), n.method != method, n.path, n.method))
    return found[:limit]


def _difference(pattern: Pattern, segments: tuple[str, ...]) -> tuple[str, str] | None:
    """(kind, why) when exactly one difference keeps ``segments`` from ``pattern``."""
    specs = pattern.segments
    parts = pattern.text[1:].split("/")
    if len(segments) > 1 and segments[-1] == "" and _differences(specs, parts, segments[:-1]) == []:
        return "trailing-slash", "the route has no trailing slash"
    if (
        specs[-1].kind == "literal"
        and specs[-1].text == ""
        and len(specs) > 1
        and segments[-1] != ""
        and _differences(specs, parts, (*segments, "")) == []
    ):
        return "trailing-slash", "the route ends with a slash"
    differences = _differences(specs, parts, segments)
    if differences is not None and len(differences) == 1:
        return differences[0]
    return None


def _differences(
    specs: tuple[Segment, ...], parts: list[str], segments: tuple[str, ...]
) -> list[tuple[str, str]] | None:
    """What differs segment by segment (at most two are collected); None when the path
    and the pattern are not alike at all (another length, an unrelated literal)."""
    out: list[tuple[str, str]] = []
    for i, spec in enumerate(specs):
        if spec.kind == "path":  # the rest of the path, if any
            if not "/".join(segments[i:]):
                out.append(("convert", f"{parts[i]} needs a value: nothing is left of the path"))
            return out
        if i >= len(segments):
            return None
        segment = segments[i]
        if spec.kind == "literal":
            literal = spec.text
            if segment == literal:
                continue
            if segment.lower() == literal.lower():
                why = f"{segment!r} is {literal!r} in the route: paths are case-sensitive"
                out.append(("case", why))
            elif segment and literal and _alike(segment, literal):
                out.append(("spelling", f"{segment!r} is not {literal!r}"))
            else:
                return None
        elif spec.kind == "param":
            if spec.convertors[0].check(segment):
                continue
            if segment == "":
                out.append(("convert", f"{parts[i]} needs a value: the segment is empty"))
            else:
                out.append(("convert", f"{parts[i]} does not take {segment!r}"))
        else:  # "complex": literals and parameters in one segment
            assert spec.mixed is not None
            if spec.mixed.match(segment) is not None:
                continue
            out.append(("convert", f"{segment!r} does not fit {parts[i]}"))
        if len(out) > 1:
            return out
    if len(segments) != len(specs):
        return None
    return out


def _alike(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a, b).ratio() >= _SPELLING
