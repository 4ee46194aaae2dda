"""The route trie searched segment by segment, as coyote_mw.routing.matcher did before
its lookup was written out for speed: kept here, unchanged, as the oracle the lookup is
checked against (tests/test_lookup_oracle.py).  Not imported by the package."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from coyote_mw.routing.patterns import Pattern, Segment

__all__ = ["Builder", "Snapshot"]

E = TypeVar("E")


class _Node(Generic[E]):
    __slots__ = ("dynamic", "routes", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[E]] = {}
        # (segment spec, child) in the order they are tried: see patterns.py
        self.dynamic: tuple[tuple[Segment, _Node[E]], ...] = ()
        # method -> endpoint for patterns that end here ("HEAD" added for "GET")
        self.routes: dict[str, E] = {}

    def copy(self) -> _Node[E]:
        n: _Node[E] = _Node()
        n.static = dict(self.static)
        n.dynamic = self.dynamic
        n.routes = dict(self.routes)
        return n

    def empty(self) -> bool:
        return not (self.static or self.dynamic or self.routes)


class Snapshot(Generic[E]):
    """One topology's routes, compiled.  Never mutated once published.

    ``cache`` belongs to its snapshot, so a table change, which publishes a new
    snapshot, drops it: no lookup can ever see a result from an older table.
    """

    __slots__ = ("_root", "_static", "cache", "size")

    def __init__(self, root: _Node[E], static: dict[str, dict[str, E]], size: int) -> None:
        self._root = root
        self._static = static
        self.size = size
        self.cache: dict[tuple[str, str], Any] = {}

    def find(
        self, method: str, path: str, segments: tuple[str, ...] | None = None
    ) -> tuple[E, list[Any]] | None:
        """The endpoint for ``method`` at the canonical ``path``, with its values."""
        if segments is None:
            methods = self._static.get(path)
            if methods is not None:
                endpoint = _method(methods, method)
                if endpoint is not None:
                    return endpoint, []
            segments = tuple(path[1:].split("/"))
        values: list[Any] = []
        endpoint = _search(self._root, segments, 0, len(segments), method, values)
        if endpoint is None:
            return None
        return endpoint, values

    def allowed(self, path: str, segments: tuple[str, ...] | None = None) -> set[str]:
        """Every method some route accepts at ``path`` (empty: the path fits nothing)."""
        if segments is None:
            segments = tuple(path[1:].split("/"))
        found: set[str] = set()
        _collect(self._root, segments, 0, len(segments), found)
        return found


def _search(
    node: _Node[E], segs: tuple[str, ...], i: int, n: int, method: str, values: list[Any]
) -> E | None:
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
        for spec, child in dynamic:
            kind = spec.kind
            if kind == "param":
                conv = spec.convertors[0]
                if not conv.check(seg):
                    continue
                values.append(conv.convert(seg))
                found = _search(child, segs, i + 1, n, method, values)
                if found is not None:
                    return found
                values.pop()
            elif kind == "complex":
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
            else:  # "path": the rest of the path, whatever it holds
                endpoint = _method(child.routes, method)
                if endpoint is not None:
                    values.append("/".join(segs[i:]))
                    return endpoint
        return None
    return _method(node.routes, method)


def _method(routes: dict[str, E], method: str) -> E | None:
    endpoint = routes.get(method)
    if endpoint is None and method == "HEAD":
        return routes.get("GET")  # HEAD falls back to GET
    return endpoint


def _collect(node: _Node[E], segs: tuple[str, ...], i: int, n: int, found: set[str]) -> None:
    if i == n:
        _add_methods(node.routes, found)
        return
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        _collect(child, segs, i + 1, n, found)
    for spec, child in node.dynamic:
        if spec.kind == "param":
            if spec.convertors[0].check(seg):
                _collect(child, segs, i + 1, n, found)
        elif spec.kind == "complex":
            assert spec.mixed is not None
            if spec.mixed.match(seg) is not None:
                _collect(child, segs, i + 1, n, found)
        else:
            _add_methods(child.routes, found)


def _add_methods(routes: dict[str, Any], found: set[str]) -> None:
    found.update(routes)
    if "GET" in routes:
        found.add("HEAD")


class Builder(Generic[E]):
    """Builds the next snapshot from the last one, copying only what it changes."""

    def __init__(self, base: Snapshot[E] | None = None) -> None:
        self._fresh: set[int] = set()
        root: _Node[E] = base._root.copy() if base is not None else _Node()
        self._root = self._own(root)
        self._static: dict[str, dict[str, E]] = dict(base._static) if base else {}
        self._static_fresh: set[str] = set()
        self._size = base.size if base else 0

    def _own(self, node: _Node[E]) -> _Node[E]:
        self._fresh.add(id(node))
        return node

    def _writable(self, node: _Node[E] | None) -> _Node[E]:
        if node is None:
            return self._own(_Node())
        if id(node) in self._fresh:
            return node
        return self._own(node.copy())

    def _descend(self, pattern: Pattern, create: bool) -> list[tuple[_Node[E], Segment]] | None:
        """Writable nodes from the root to the pattern's end, each with its segment."""
        node = self._root
        trail: list[tuple[_Node[E], Segment]] = []
        for spec in pattern.segments:
            if spec.kind == "literal":
                existing = node.static.get(spec.text)
                if existing is None and not create:
                    return None
                child = self._writable(existing)
                node.static[spec.text] = child
            else:
                idx = next((k for k, (s, _) in enumerate(node.dynamic) if s.key == spec.key), -1)
                if idx < 0 and not create:
                    return None
                child = self._writable(node.dynamic[idx][1] if idx >= 0 else None)
                entries = list(node.dynamic)
                if idx >= 0:
                    entries[idx] = (entries[idx][0], child)
                else:
                    entries.append((spec, child))
                    # stable: registration order among equal priorities
                    entries.sort(key=lambda e: e[0].priority)
                node.dynamic = tuple(entries)
            trail.append((node, spec))
            node = child
        trail.append((node, pattern.segments[-1]))
        return trail

    def put(self, method: str, pattern: Pattern, endpoint: E) -> None:
        """Add or replace the endpoint for ``method`` at ``pattern``."""
        trail = self._descend(pattern, create=True)
        assert trail is not None
        leaf = trail[-1][0]
        if method not in leaf.routes:
            self._size += 1
        leaf.routes[method] = endpoint
        if pattern.is_static:
            self._static[pattern.text] = {**self._static.get(pattern.text, {}), method: endpoint}

    def remove(self, method: str, pattern: Pattern) -> None:
        trail = self._descend(pattern, create=False)
        if trail is None or method not in trail[-1][0].routes:
            return
        del trail[-1][0].routes[method]
        self._size -= 1
        if pattern.is_static:
            methods = dict(self._static.get(pattern.text, {}))
            methods.pop(method, None)
            if methods:
                self._static[pattern.text] = methods
            else:
                self._static.pop(pattern.text, None)
        # prune nodes left with nothing, from the leaf upwards
        for (parent, spec), (child, _) in zip(
            reversed(trail[:-1]), reversed(trail[1:]), strict=True
        ):
            if not child.empty():
                break
            if spec.kind == "literal":
                del parent.static[spec.text]
            else:
                parent.dynamic = tuple(e for e in parent.dynamic if e[1] is not child)

    def build(self) -> Snapshot[E]:
        return Snapshot(self._root, self._static, self._size)
