"""The lookup's oracle: random route sets checked against the trie search as it was
(``reference_matcher``), shared by the tests of the lookup (test_lookup_oracle.py,
test_lookup_mid.py)."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

from coyote_mw.errors import InvalidRoute
from coyote_mw.routing.builder import Builder
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.matcher import Snapshot
from coyote_mw.routing.patterns import Pattern, parse_pattern
from tests.support import reference_matcher as reference

# Segment templates: "{}" is a parameter (named when the pattern is made), literals are
# few and short so that patterns share prefixes and compete for the same paths.
TEMPLATES = [
    "a",
    "b",
    "ab",
    "1",
    "v1",
    "x.json",
    "{}",
    "{:int}",
    "{:float}",
    "{:uuid}",
    "{:path}",
    "{}.json",
    "v{:int}",
    "{}-{}",
    "{:int}.{}",
    "{}.{}",
]
UUID = str(uuid.UUID(int=7))
VALUES = [
    "1",
    "42",
    "007",
    "a",
    "b",
    "ab",
    "v1",
    "v7",
    "x.json",
    "1.5",
    "3.json",
    "a-b",
    "7-x",
    "a.b.c",
    "4.x",
    "",
    UUID,
    UUID + ".json",
    "\u0663",  # an Arabic-Indic digit: isdigit(), not ASCII, no int
    "1e5",
    "9" * 310,
]
METHODS = ["GET", "POST", "HEAD"]
_SLOT = re.compile(r"\{(:\w+)?\}")


def make_pattern(templates: list[str], trailing_slash: bool) -> Pattern | None:
    counter = iter(range(100))
    parts = [_SLOT.sub(lambda m: f"{{p{next(counter)}{m[1] or ''}}}", t) for t in templates]
    text = "/" + "/".join(parts) + ("/" if trailing_slash else "")
    try:
        return parse_pattern(text)
    except InvalidRoute:
        return None


def fill(pattern: Pattern, rnd: random.Random) -> str:
    """A path made from ``pattern``, its parameters given values that may not fit."""
    segments = []
    for spec in pattern.segments:
        if spec.kind == "literal":
            segments.append(spec.text)
        elif spec.kind == "path":
            segments.append("/".join(rnd.choice(VALUES) for _ in range(rnd.randint(1, 3))))
        else:
            segments.append(_SLOT.sub(lambda m: rnd.choice(VALUES), _template(spec.key)))
    return "/" + "/".join(segments)


def _template(key: str) -> str:
    return re.sub(r"\{:\w+\}", "{}", key)


def declared_patterns(
    declared: list[tuple[list[str], bool, str]],
) -> list[tuple[str, Pattern, Endpoint]]:
    """The routes hypothesis drew (segment templates, trailing slash, method) that parse."""
    patterns = []
    for templates, slash, method in declared:
        pattern = make_pattern(templates, slash)
        if pattern is not None:
            patterns.append((method, pattern, Endpoint(method, pattern, "s", "t", False, ())))
    return patterns


def step_by_step(
    patterns: list[tuple[str, Pattern, Endpoint]], removals: list[int], per_build: int
) -> list[tuple[Snapshot, Any]]:
    """Both tables built ``per_build`` routes at a time, then the routes ``removals``
    names taken out one by one: every snapshot on the way, ours beside the oracle's."""
    ours: Snapshot | None = None
    theirs: Any = None
    snapshots = []
    for start in range(0, len(patterns), per_build):
        b, rb = Builder(ours), reference.Builder(theirs)
        for method, pattern, endpoint in patterns[start : start + per_build]:
            b.put(method, pattern, endpoint)
            rb.put(method, pattern, endpoint)
        ours, theirs = b.build(), rb.build()
        snapshots.append((ours, theirs))
    for k in removals:
        if not patterns:
            break
        method, pattern, _ = patterns[k % len(patterns)]
        b, rb = Builder(ours), reference.Builder(theirs)
        b.remove(method, pattern)
        rb.remove(method, pattern)
        ours, theirs = b.build(), rb.build()
        snapshots.append((ours, theirs))
    return snapshots


def answer(snapshot: Snapshot, method: str, path: str, segments: Any = None) -> Any:
    match = snapshot.lookup(method, path, segments)
    return None if match is None else (match.endpoint, dict(match.params))


def oracle(snapshot: Any, method: str, path: str, segments: Any = None) -> Any:
    found = snapshot.find(method, path, None if segments is None else tuple(segments))
    if found is None:
        return None
    endpoint, values = found
    return endpoint, dict(zip(endpoint.names, values, strict=True))


def check(ours: Snapshot, theirs: Any, paths: list[str]) -> None:
    for path in paths:
        for method in METHODS:
            assert answer(ours, method, path) == oracle(theirs, method, path), (method, path)
        assert ours.allowed(path) == theirs.allowed(path), path
        segments = path[1:].split("/")
        if len(segments) > 1:  # two segments as one, as an encoded '/' makes them
            k = len(path) % (len(segments) - 1)
            joined = [*segments[:k], segments[k] + "/" + segments[k + 1], *segments[k + 2 :]]
            assert answer(ours, "GET", path, joined) == oracle(theirs, "GET", path, joined)
            assert ours.allowed(path, joined) == theirs.allowed(path, tuple(joined))
