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
import functools
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
    found: list[tuple[float, NearMiss]] = []  # (how unlike, near miss)
    for pattern, endpoint in table.patterns(topology):
        difference = _difference(pattern, segments)
        if difference is not None:
            kind, why, unlike = difference
            near = NearMiss(endpoint.method, pattern.text, endpoint.service, topology, kind, why)
            found.append((unlike, near))
    for other in table.topologies():
        if other == topology:
            continue
        match = table.match(other, method, path.path, path.segments)
        if match is not None:
            ep = match.endpoint
            why = f"the route is in topology {other!r}, not {topology!r}"
            found.append((0.0, NearMiss(ep.method, ep.pattern, ep.service, other, "topology", why)))
    found.sort(
        key=lambda f: (KINDS.index(f[1].kind), f[0], f[1].method != method, f[1].path, f[1].method)
    )
    return [near for _, near in found[:limit]]


def _difference(pattern: Pattern, segments: tuple[str, ...]) -> tuple[str, str, float] | None:
    """(kind, why, how unlike) when exactly one difference keeps ``segments`` from
    ``pattern``; how unlike is 0 but for a spelling slip (1 - difflib's ratio)."""
    specs = pattern.segments
    parts = pattern.text[1:].split("/")
    rest = specs[-1].kind == "path"  # takes any number of segments
    if (
        len(segments) > 1
        and segments[-1] == ""
        and (rest or len(specs) == len(segments) - 1)
        and _differences(specs, parts, segments[:-1]) == []
    ):
        return "trailing-slash", "the route has no trailing slash", 0.0
    if (
        len(specs) == len(segments) + 1
        and specs[-1].kind == "literal"
        and specs[-1].text == ""
        and segments[-1] != ""
        and _differences(specs, parts, (*segments, "")) == []
    ):
        return "trailing-slash", "the route ends with a slash", 0.0
    if not rest and len(specs) != len(segments):
        return None
    differences = _differences(specs, parts, segments)
    if differences is not None and len(differences) == 1:
        return differences[0]
    return None


def _differences(
    specs: tuple[Segment, ...], parts: list[str], segments: tuple[str, ...]
) -> list[tuple[str, str, float]] | None:
    """What differs segment by segment (at most two are collected); None when the path
    and the pattern are not alike at all (another length, an unrelated literal)."""
    out: list[tuple[str, str, float]] = []
    for i, spec in enumerate(specs):
        if spec.kind == "path":  # the rest of the path, if any
            if not "/".join(segments[i:]):
                why = f"{parts[i]} needs a value: nothing is left of the path"
                out.append(("convert", why, 0.0))
            return out
        if i >= len(segments):
            return None
        segment = segments[i]
        if spec.kind == "literal":
            literal = spec.text
            if segment == literal:
                continue
            if out:  # a second difference: not a near miss
                return None
            if segment.lower() == literal.lower():
                why = f"{segment!r} is {literal!r} in the route: paths are case-sensitive"
                out.append(("case", why, 0.0))
            elif segment and literal and (alike := _alike(segment, literal)) >= _SPELLING:
                out.append(("spelling", f"{segment!r} is not {literal!r}", 1.0 - alike))
            else:
                return None
        elif spec.kind == "param":
            if spec.convertors[0].check(segment):
                continue
            if segment == "":
                out.append(("convert", f"{parts[i]} needs a value: the segment is empty", 0.0))
            else:
                out.append(("convert", f"{parts[i]} does not take {segment!r}", 0.0))
        else:  # "complex": literals and parameters in one segment
            assert spec.mixed is not None
            if spec.mixed.match(segment) is not None:
                continue
            out.append(("convert", f"{segment!r} does not fit {parts[i]}", 0.0))
        if len(out) > 1:
            return out
    if len(segments) != len(specs):
        return None
    return out


@functools.lru_cache(maxsize=1024)  # literals repeat across routes
def _alike(a: str, b: str) -> float:
    """How alike two literals are (difflib's ratio; 0 when their lengths alone say they
    are not alike enough: the ratio is at most 2 * min / the sum of lengths)."""
    if 2 * min(len(a), len(b)) < _SPELLING * (len(a) + len(b)):
        return 0.0
    return difflib.SequenceMatcher(None, a, b).ratio()
