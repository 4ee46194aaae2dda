"""The compiled matcher: one immutable snapshot per topology, searched without locks.

A snapshot holds a segment trie for every route, searched segment by segment with
backtracking (``_search``: at each segment the literal first, then the parameters in
the order patterns.py gives), and two dictionaries in front of it, keyed by path text:
every fully static path, with a ready-made ``Match`` for each method, and every node
reached through literals alone below which a route ends one parameter further
(``/api/v7/items`` for ``/api/v7/items/{id:int}``).

``Snapshot.lookup`` gives the search's answer, reaching it sooner; each step answers
only where the search would (tests/test_lookup_oracle.py checks it against the search):

1. the whole path among the static paths (two dictionary probes);
2. the path up to its last segment among the literal prefixes, the last segment tried
   as each parameter there (the search's first stop after the static route);
3. when the root has no parameter, the first segment alone: most paths no route takes
   stop there, before the rest of the path is split (with at most 16 literals at the
   root, a path starting with none of them stops before it is split at all);
4. the first path of the search's order, without backtracking: if it ends at a route
   of the method, that is the answer; if it fails and nothing was passed by on the way,
   there is none; only else does the search run in full.

Written out for the interpreter (no call on the way to a match but the convertors', a
``Match`` made without ``__init__``), a lookup costs the same whatever the number of
routes.  No regex runs over the route list, and nothing raises: a convertor converts
only what its ``check`` passed, and ``check`` passes only what converts.

Snapshots are written by builder.py and never changed once published.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from coyote_mw.routing.endpoint import Endpoint, Match
from coyote_mw.routing.patterns import Segment

__all__ = ["Snapshot"]

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


class _Found(Match):
    """A match a lookup makes: called without arguments, the lookup setting its slots
    (a call to ``object.__new__``, or to a class whose ``__init__`` is in Python, costs
    some 300 instructions more)."""

    __slots__ = ()
    __init__ = object.__init__


_found: Callable[[], Match] = _Found  # (typed: mypy takes the class's call for Any)


def _matched(endpoint: Endpoint, values: list[Any]) -> Match:
    match = _found()
    match.endpoint = endpoint
    if values:  # as many as endpoint.names: the pattern gave both
        match._params = None  # made from _values when first read
        match._values = values[0] if len(values) == 1 else values
    else:
        match._params = _NO_PARAMS
    return match


# How an edge to a parameter is tried, by what the segment holds (Segment.kind and its
# convertor); the two commonest are tested inline on the lookup path.
_INT, _STR, _PARAM, _MIXED, _PATH = range(5)

_Edge = tuple[int, Segment, "_Node"]

# At most this many literals at the root are tried as a path's start before anything
# else (``Snapshot._heads``): one C loop over short prefixes, cheaper than the probes
# it saves a miss up to about this many.
_HEADS_MAX = 16


def _edge(spec: Segment, child: _Node) -> _Edge:
    if spec.kind == "param":
        name = spec.convertors[0].name
        return (_INT if name == "int" else _STR if name == "str" else _PARAM, spec, child)
    return (_MIXED if spec.kind == "complex" else _PATH, spec, child)


class _Node:
    __slots__ = ("dynamic", "routes", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        # edges to parameters, in the order they are tried: see patterns.py
        self.dynamic: tuple[_Edge, ...] = ()
        # method -> endpoint for patterns that end here ("HEAD" falls back to "GET")
        self.routes: dict[str, Endpoint] = {}

    def copy(self) -> _Node:
        n = _Node()
        n.static = dict(self.static)
        n.dynamic = self.dynamic
        n.routes = dict(self.routes)
        return n

    def empty(self) -> bool:
        return not (self.static or self.dynamic or self.routes)


class Snapshot:
    """One topology's routes, compiled.  Never mutated once published.

    ``cache`` belongs to its snapshot, so a table change, which publishes a new
    snapshot, drops it: no lookup can ever see a result from an older table.
    """

    __slots__ = ("_ends", "_heads", "_mids", "_root", "_static", "_tails", "cache", "size")

    def __init__(
        self,
        root: _Node,
        static: dict[str, dict[str, Match]],
        tails: dict[str, _Node],
        mids: dict[str, _Node],
        ends: dict[str, int],
        size: int,
    ) -> None:
        self._root = root
        self._static = static
        self._tails = tails
        self._mids = mids
        self._ends = ends
        # With no parameter at the root and few literals there, a path starting with
        # none of them is no route's (most misses): ``/literal`` for each literal, and
        # ``//`` for the empty one (the route ``/`` is static: only a longer path can
        # reach that node's children, and ``/`` itself is found before this is tried).
        self._heads: tuple[str, ...] | None = (
            None
            if root.dynamic or len(root.static) > _HEADS_MAX
            else tuple("/" + literal if literal else "//" for literal in root.static)
        )
        self.size = size
        self.cache: dict[tuple[str, str], Any] = {}

    def lookup(self, method: str, path: str, segments: Sequence[str] | None = None) -> Match | None:
        """The match for ``method`` at the canonical ``path``; ``segments`` are its
        decoded segments when one of them holds a '/' (then ``path`` does not split).

        Each step below gives the trie search's own answer (``_search``: the literal
        first at each segment, then the parameters in order, backtracking), only
        sooner; written out for speed, with no call on the way to a match but the
        convertors'."""
        if segments is None:
            methods = self._static.get(path)
            if methods is not None:
                match = methods.get(method)
                if match is not None:
                    return match
            # The search reaches the node of the literals before the last segment
            # first, and (the whole path being no static route of the method) tries
            # its parameters next: try them here, without splitting the path.
            prefix, _, last = path.rpartition("/")
            node = self._tails.get(prefix)
            if node is not None:
                for tag, spec, child in node.dynamic:
                    if tag == _STR:
                        if not last:
                            continue
                        value: Any = last
                    elif tag == _INT:
                        if not (last.isdigit() and last.isascii()):
                            continue
                        try:
                            value = int(last)
                        except ValueError:  # more digits than int() converts
                            continue
                    elif tag == _PATH:  # the rest of the path: here, its last segment
                        value = last
                    else:
                        taken = _take(tag, spec, last)
                        if taken is None:
                            continue
                        endpoint = _method(child.routes, method)
                        if endpoint is not None:
                            return _matched(endpoint, taken)
                        continue
                    routes = child.routes
                    endpoint = routes.get(method)
                    if endpoint is None:
                        if method != "HEAD":
                            continue
                        endpoint = routes.get("GET")  # HEAD falls back to GET
                        if endpoint is None:
                            continue
                    match = _found()
                    match.endpoint = endpoint
                    match._params = None  # made from _values when first read
                    match._values = value  # (one parameter: the value itself)
                    return match
            # The search reaches the node of the literals before the last two segments
            # next (the literal branch below it, for one segment more, being what the
            # two probes above found nothing in) and tries its parameters: if the first
            # takes the segment and is followed by the last segment as a literal ending
            # a route of the method, that is the answer; else the search goes on below.
            # Only paths ending in such a literal (``_ends``) look: a miss does not.
            if last in self._ends:
                head, _, value = prefix.rpartition("/")
                node = self._mids.get(head)
                if node is not None:
                    tag, spec, child = node.dynamic[0]
                    found: Any = None
                    if tag == _STR:
                        if value:
                            found = value
                    elif tag == _INT:
                        # (a numeral int() might refuse is left to the search)
                        if value.isdigit() and value.isascii() and len(value) <= 308:
                            found = int(value)
                    elif tag != _PATH:  # (the rest of the path: left to the search)
                        taken = _take(tag, spec, value)
                        if taken is not None:
                            found = taken[0] if len(taken) == 1 else taken
                    leaf = None if found is None else child.static.get(last)
                    if leaf is not None:
                        routes = leaf.routes
                        endpoint = routes.get(method)
                        if endpoint is None and method == "HEAD":
                            endpoint = routes.get("GET")
                        if endpoint is not None:
                            match = _found()
                            match.endpoint = endpoint
                            match._params = None
                            match._values = found
                            return match
        else:
            return self._first(method, path, segments, segments, 0, self._root)
        heads = self._heads
        if heads is not None and not path.startswith(heads):
            return None
        root = self._root
        if root.dynamic:
            return self._first(method, path, None, path.split("/"), 1, root)
        # Only a literal can come first: look at the first segment alone (most paths
        # no route takes end here), then split the rest.
        parts = path.split("/", 2)
        node = root.static.get(parts[1])
        if node is None:
            return None
        rest = parts[2].split("/") if len(parts) == 3 else ()
        return self._first(method, path, None, rest, 0, node)

    def _first(
        self,
        method: str,
        path: str,
        segments: Sequence[str] | None,
        segs: Sequence[str],
        i: int,
        node: _Node,
    ) -> Match | None:
        """The lookup of ``path`` (or of ``segments``) from ``node`` at ``segs[i]`` on,
        kept apart from ``lookup`` so that its frame stays small: the interpreter makes
        and clears every local of a function at each call (some 13 instructions each)."""
        # The first path in the search's order, without backtracking: at each node the
        # literal child, else the first parameter that takes the segment.  If it leads
        # to a route of the method, that is the search's answer; if not, and no other
        # option was passed by on the way, there is none; else the search runs in full.
        n = len(segs)
        values: list[Any] | None = None
        forked = False
        while True:
            # down literal children as far as they go (a short loop, kept apart from
            # the long one below so that the interpreter specialises its jumps)
            while i < n:
                static = node.static
                if not static:  # (a parameter's node often has no literal child)
                    break
                nxt = static.get(segs[i])
                if nxt is None:
                    break
                if node.dynamic:
                    forked = True
                node = nxt
                i += 1
            else:
                break  # the path ends here
            dynamic = node.dynamic
            if not dynamic:
                return self._full(method, path, segments) if forked else None
            seg = segs[i]
            i += 1
            for edge in dynamic:
                tag, spec, child = edge
                if tag == _STR:
                    if not seg:
                        continue
                    value: Any = seg
                elif tag == _INT:
                    if not (seg.isdigit() and seg.isascii()):
                        continue
                    try:
                        value = int(seg)
                    except ValueError:  # more digits than int() converts
                        continue
                elif tag == _PATH:  # the rest of the path, whatever it holds
                    endpoint = _method(child.routes, method)
                    if endpoint is None:
                        continue
                    rest = "/".join(segs[i - 1 :])
                    return _matched(endpoint, [rest] if values is None else [*values, rest])
                else:
                    taken = _take(tag, spec, seg)
                    if taken is None:
                        continue
                    values = taken if values is None else values + taken
                    if edge is not dynamic[-1]:
                        forked = True
                    node = child
                    break
                if values is None:
                    values = [value]
                else:
                    values.append(value)
                if edge is not dynamic[-1]:
                    forked = True
                node = child
                break
            else:  # nothing takes the segment
                return self._full(method, path, segments) if forked else None
        routes = node.routes
        endpoint = routes.get(method)
        if endpoint is None:
            if method == "HEAD":
                endpoint = routes.get("GET")  # HEAD falls back to GET
            if endpoint is None:
                return self._full(method, path, segments) if forked else None
        match = _found()
        match.endpoint = endpoint
        if values is None:
            match._params = _NO_PARAMS
        else:
            match._params = None
            match._values = values[0] if len(values) == 1 else values
        return match

    def _full(self, method: str, path: str, segments: Sequence[str] | None) -> Match | None:
        """The search in full, backtracking where a path fails below a fork."""
        segs = path[1:].split("/") if segments is None else segments
        values: list[Any] = []
        endpoint = _search(self._root, segs, 0, len(segs), method, values)
        return None if endpoint is None else _matched(endpoint, values)

    def allowed(self, path: str, segments: Sequence[str] | None = None) -> set[str]:
        """Every method some route accepts at ``path`` (empty: the path fits nothing)."""
        if segments is None:
            segments = path[1:].split("/")
        found: set[str] = set()
        _collect(self._root, segments, 0, len(segments), found)
        return found


def _take(tag: int, spec: Segment, seg: str) -> list[Any] | None:
    """The values of a float or uuid parameter or of a mixed segment in ``seg``, or
    None when it does not take ``seg``."""
    if tag == _PARAM:
        conv = spec.convertors[0]
        return [conv.convert(seg)] if conv.check(seg) else None
    assert spec.mixed is not None
    groups = spec.mixed.match(seg)  # one pass: patterns.MixedSegment
    if groups is None:
        return None
    return [conv.convert(g) for conv, g in zip(spec.convertors, groups, strict=True)]


def _search(
    node: _Node, segs: Sequence[str], i: int, n: int, method: str, values: list[Any]
) -> Endpoint | None:
    # A loop down static-only nodes (most of a path); recursion only where a segment
    # could also go to a parameter and the static branch may have to be backtracked.
    while i < n:
        seg = segs[i]
        child = node.static.get(seg)
        dynamic = node.dynamic
        if not dynamic:
            if child is None:
                return None
            node = child
            i += 1
            continue
        if child is not None:
            found = _search(child, segs, i + 1, n, method, values)
            if found is not None:
                return found
        for tag, spec, child in dynamic:
            if tag == _STR:
                if not seg:
                    continue
                values.append(seg)
            elif tag <= _PARAM:  # _INT or _PARAM
                conv = spec.convertors[0]
                if not conv.check(seg):
                    continue
                values.append(conv.convert(seg))
            elif tag == _MIXED:
                assert spec.mixed is not None
                groups = spec.mixed.match(seg)  # one pass: patterns.MixedSegment
                if groups is None:
                    continue
                for conv, g in zip(spec.convertors, groups, strict=True):
                    values.append(conv.convert(g))
                found = _search(child, segs, i + 1, n, method, values)
                if found is not None:
                    return found
                del values[len(values) - len(groups) :]
                continue
            else:  # _PATH: the rest of the path, whatever it holds
                endpoint = _method(child.routes, method)
                if endpoint is not None:
                    values.append("/".join(segs[i:]))
                    return endpoint
                continue
            found = _search(child, segs, i + 1, n, method, values)
            if found is not None:
                return found
            values.pop()
        return None
    return _method(node.routes, method)


def _method(routes: dict[str, Endpoint], method: str) -> Endpoint | None:
    endpoint = routes.get(method)
    if endpoint is None and method == "HEAD":
        return routes.get("GET")  # HEAD falls back to GET
    return endpoint


def _collect(node: _Node, segs: Sequence[str], i: int, n: int, found: set[str]) -> None:
    if i == n:
        _add_methods(node.routes, found)
        return
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        _collect(child, segs, i + 1, n, found)
    for tag, spec, child in node.dynamic:
        if tag == _MIXED:
            assert spec.mixed is not None
            if spec.mixed.match(seg) is not None:
                _collect(child, segs, i + 1, n, found)
        elif tag == _PATH:
            _add_methods(child.routes, found)
        elif spec.convertors[0].check(seg):
            _collect(child, segs, i + 1, n, found)


def _add_methods(routes: dict[str, Any], found: set[str]) -> None:
    found.update(routes)
    if "GET" in routes:
        found.add("HEAD")
