"""Writing a route table's next snapshot: ``Builder`` starts from the published one and
copies only what a change touches (path copying), so one registration into a 10,000-route
table is visible to lookups well within a millisecond.

The trie nodes on the changed route's path are copied, every other node is shared with
the published snapshot; the dictionary of static paths and the index of literal
prefixes (matcher.py) are copied only when the change alters them.  A published
snapshot is never written to again.
"""

from __future__ import annotations

from coyote_mw.routing.endpoint import Endpoint, Match
from coyote_mw.routing.matcher import _NO_PARAMS, Snapshot, _edge, _Node
from coyote_mw.routing.patterns import Pattern, Segment

__all__ = ["Builder"]


def _static_matches(routes: dict[str, Endpoint]) -> dict[str, Match]:
    """A static path's ready-made matches by method, "HEAD" falling back to "GET"."""
    matches = {method: Match(endpoint, _NO_PARAMS) for method, endpoint in routes.items()}
    if "GET" in matches and "HEAD" not in matches:
        matches["HEAD"] = matches["GET"]
    return matches


class Builder:
    """Builds the next snapshot from the last one, copying only what it changes."""

    def __init__(self, base: Snapshot | None = None) -> None:
        self._fresh: set[int] = set()
        self._root = self._own(base._root.copy() if base is not None else _Node())
        # the base's dictionaries, each copied before its first change
        self._static: dict[str, dict[str, Match]] = base._static if base else {}
        self._tails: dict[str, _Node] = base._tails if base else {}
        self._mids: dict[str, _Node] = base._mids if base else {}
        self._ends: dict[str, int] = base._ends if base else {}
        self._copied = dict.fromkeys(("static", "tails", "mids", "ends"), base is None)
        self._size = base.size if base else 0

    def _static_to_change(self) -> dict[str, dict[str, Match]]:
        if not self._copied["static"]:
            self._static = dict(self._static)
            self._copied["static"] = True
        return self._static

    def _tails_to_change(self) -> dict[str, _Node]:
        if not self._copied["tails"]:
            self._tails = dict(self._tails)
            self._copied["tails"] = True
        return self._tails

    def _mids_to_change(self) -> dict[str, _Node]:
        if not self._copied["mids"]:
            self._mids = dict(self._mids)
            self._copied["mids"] = True
        return self._mids

    def _ends_to_change(self) -> dict[str, int]:
        if not self._copied["ends"]:
            self._ends = dict(self._ends)
            self._copied["ends"] = True
        return self._ends

    def _mid_end(self, pattern: Pattern) -> tuple[str, str] | None:
        """The pattern's (literal prefix, literal) around its first parameter when that
        parameter is followed by a literal, as the mids index sees them."""
        segments = pattern.segments
        for k, spec in enumerate(segments):
            if spec.kind != "literal":
                if k + 1 < len(segments) and segments[k + 1].kind == "literal":
                    return "".join("/" + s.text for s in segments[:k]), segments[k + 1].text
                return None
        return None

    def _ends_here(self, prefix: str, end: str) -> bool:
        """Whether a parameter below the node at ``prefix`` is followed by ``end``."""
        node = self._mids.get(prefix)
        return node is not None and any(end in child.static for _, _, child in node.dynamic)

    def _recount(self, pair: tuple[str, str] | None, before: bool) -> None:
        """Keep ``_ends`` counting, for each literal, the mids nodes it follows a
        parameter of (so a path ending in no such literal skips the mids index)."""
        if pair is None or self._ends_here(*pair) == before:
            return
        ends = self._ends_to_change()
        end = pair[1]
        if before:
            ends[end] -= 1
            if not ends[end]:
                del ends[end]
        else:
            ends[end] = ends.get(end, 0) + 1

    def _own(self, node: _Node) -> _Node:
        self._fresh.add(id(node))
        return node

    def _writable(self, node: _Node | None) -> _Node:
        if node is None:
            return self._own(_Node())
        if id(node) in self._fresh:
            return node
        return self._own(node.copy())

    def _descend(self, pattern: Pattern) -> list[tuple[_Node, Segment, str | None]]:
        """Writable nodes from the root to the pattern's end (created as needed), each
        with the segment to the next one and its text when only literals lead to it."""
        node = self._root
        prefix: str | None = ""
        trail: list[tuple[_Node, Segment, str | None]] = []
        for spec in pattern.segments:
            trail.append((node, spec, prefix))
            if spec.kind == "literal":
                child = self._writable(node.static.get(spec.text))
                node.static[spec.text] = child
                prefix = None if prefix is None else prefix + "/" + spec.text
            else:
                entries = list(node.dynamic)
                idx = next((k for k, e in enumerate(entries) if e[1].key == spec.key), -1)
                child = self._writable(entries[idx][2] if idx >= 0 else None)
                if idx >= 0:
                    entries[idx] = _edge(entries[idx][1], child)
                else:
                    entries.append(_edge(spec, child))
                    # stable: registration order among equal priorities
                    entries.sort(key=lambda e: e[1].priority)
                node.dynamic = tuple(entries)
                prefix = None
            node = child
        trail.append((node, pattern.segments[-1], prefix))
        return trail

    def _holds(self, method: str, pattern: Pattern) -> bool:
        node: _Node | None = self._root
        for spec in pattern.segments:
            assert node is not None
            if spec.kind == "literal":
                node = node.static.get(spec.text)
            else:
                node = next((e[2] for e in node.dynamic if e[1].key == spec.key), None)
            if node is None:
                return False
        assert node is not None
        return method in node.routes

    def _retail(self, trail: list[tuple[_Node, Segment, str | None]]) -> None:
        """Point the literal-prefix indexes at this builder's copies of the trail's nodes:
        the tails where a route ends one parameter below the node, the mids where a
        parameter below it is followed by a literal (elsewhere neither can help)."""
        for node, _, prefix in trail:
            if prefix is None:
                break
            if any(child.routes for _, _, child in node.dynamic):
                if self._tails.get(prefix) is not node:
                    self._tails_to_change()[prefix] = node
            elif prefix in self._tails:
                del self._tails_to_change()[prefix]
            if any(child.static for _, _, child in node.dynamic):
                if self._mids.get(prefix) is not node:
                    self._mids_to_change()[prefix] = node
            elif prefix in self._mids:
                del self._mids_to_change()[prefix]

    def put(self, method: str, pattern: Pattern, endpoint: Endpoint) -> None:
        """Add or replace the endpoint for ``method`` at ``pattern``."""
        pair = self._mid_end(pattern)
        before = pair is not None and self._ends_here(*pair)
        trail = self._descend(pattern)
        leaf = trail[-1][0]
        if method not in leaf.routes:
            self._size += 1
        leaf.routes[method] = endpoint
        if pattern.is_static:
            self._static_to_change()[pattern.text] = _static_matches(leaf.routes)
        self._retail(trail)
        self._recount(pair, before)

    def remove(self, method: str, pattern: Pattern) -> None:
        if not self._holds(method, pattern):
            return
        pair = self._mid_end(pattern)
        before = pair is not None and self._ends_here(*pair)
        trail = self._descend(pattern)
        leaf = trail[-1][0]
        del leaf.routes[method]
        self._size -= 1
        if pattern.is_static:
            if leaf.routes:
                self._static_to_change()[pattern.text] = _static_matches(leaf.routes)
            else:
                self._static_to_change().pop(pattern.text, None)
        # prune nodes left with nothing, from the leaf upwards
        for (parent, spec, _), (child, _, _) in zip(
            reversed(trail[:-1]), reversed(trail[1:]), strict=True
        ):
            if not child.empty():
                break
            if spec.kind == "literal":
                del parent.static[spec.text]
            else:
                parent.dynamic = tuple(e for e in parent.dynamic if e[2] is not child)
        self._retail(trail)
        self._recount(pair, before)

    def build(self) -> Snapshot:
        return Snapshot(self._root, self._static, self._tails, self._mids, self._ends, self._size)
