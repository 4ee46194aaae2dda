"""The written-out lookup gives exactly the trie search's answers: checked against the
search as it was (tests/support/reference_matcher.py) on random route sets, built and changed
step by step, and on paths made to fit them, nearly fit them or fit nothing."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coyote_mw.errors import InvalidRoute
from coyote_mw.routing.builder import Builder
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.matcher import Snapshot
from coyote_mw.routing.patterns import Pattern, parse_pattern
from coyote_mw.routing.table import RouteTable
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


# Mostly short patterns over the same two literals, so that routes share nodes and the
# lookup's shortcuts (a parameter after literals, a literal that fails deeper down) meet
# each other's edge cases.
segment = st.one_of(st.sampled_from(["a", "b", "{}", "{:int}"]), st.sampled_from(TEMPLATES))
routes = st.lists(
    st.tuples(
        st.lists(segment, min_size=1, max_size=3),
        st.booleans(),
        st.sampled_from(METHODS),
    ),
    min_size=1,
    max_size=14,
)


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


@settings(max_examples=500, deadline=None)
@given(routes, st.lists(st.integers(0, 13), max_size=6), st.randoms(use_true_random=False))
def test_the_lookup_answers_as_the_trie_search_does(
    declared: list[tuple[list[str], bool, str]], removals: list[int], rnd: random.Random
) -> None:
    """Registered in a few steps, then partly withdrawn; every snapshot on the way is
    checked again at the end (a later change must not reach an earlier snapshot)."""
    patterns = []
    for templates, slash, method in declared:
        pattern = make_pattern(templates, slash)
        if pattern is not None:
            patterns.append((method, pattern, Endpoint(method, pattern, "s", "t", False, ())))
    ours: Snapshot | None = None
    theirs: Any = None
    snapshots = []
    for start in range(0, len(patterns), 3):
        b, rb = Builder(ours), reference.Builder(theirs)
        for method, pattern, endpoint in patterns[start : start + 3]:
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
    paths = [fill(p, rnd) for _, p, _ in patterns for _ in range(3)]
    paths += [p.text for _, p, _ in patterns]
    paths += [
        "/" + "/".join(rnd.choice([*VALUES, "a", "b", "v1"]) for _ in range(rnd.randint(1, 4)))
        for _ in range(10)
    ]
    paths += ["/", "/a/", "/a//b"]
    for ours_then, theirs_then in snapshots:
        assert ours_then.size == theirs_then.size
        check(ours_then, theirs_then, paths)


def test_a_large_table_answers_as_the_trie_search_does() -> None:
    """The benchmark's shape of table (a third static, a third ``.../{id:int}``, a third
    ``/users{i}/{name}/profile``) with parameters mixed in near the root, seeded."""
    rnd = random.Random(7)
    texts = []
    for i in range(600):
        texts.append(
            [f"/static{i}/page", f"/api/v{i}/items/{{id:int}}", f"/users{i}/{{name}}/profile"][
                i % 3
            ]
        )
    texts += ["/api/{v}/items/{id}", "/{tenant}/items/{id:int}", "/api/v3/{rest:path}", "/{x}"]
    b, rb = Builder(), reference.Builder()
    parsed = []
    for i, text in enumerate(texts):
        pattern = parse_pattern(text)
        method = METHODS[i % 2]
        endpoint = Endpoint(method, pattern, "s", "t", False, ())
        b.put(method, pattern, endpoint)
        rb.put(method, pattern, endpoint)
        parsed.append(pattern)
    ours, theirs = b.build(), rb.build()
    paths = [fill(p, rnd) for p in parsed for _ in range(2)]
    paths += ["/api/v3/items/x", "/api/v3/a/b", "/users5/x/other", "/no/such/route", "/api"]
    check(ours, theirs, paths)


def test_an_endpoint_s_parameter_names_are_its_own_when_shapes_are_shared() -> None:
    """GET and POST at one shape may name the parameter differently."""
    t = RouteTable()
    t.register("svc", [("GET", "/items/{id:int}"), ("POST", "/items/{n:int}")], lambda r: r)
    get, post = t.match("default", "GET", "/items/3"), t.match("default", "POST", "/items/4")
    assert get is not None and dict(get.params) == {"id": 3}
    assert post is not None and dict(post.params) == {"n": 4}


def test_head_takes_get_at_the_first_route_the_search_reaches() -> None:
    """HEAD falls back to GET route by route, in the search's order: a GET route that
    comes first wins over a HEAD route that comes later."""
    t = RouteTable()
    t.register(
        "svc",
        [
            ("GET", "/a/{x:int}"),
            ("HEAD", "/a/{y}"),
            ("GET", "/b/{x:int}/c"),
            ("HEAD", "/b/{y}/c"),
        ],
        lambda r: r,
    )
    for path, route in (("/a/1", "/a/{x:int}"), ("/b/1/c", "/b/{x:int}/c")):
        match = t.match("default", "HEAD", path)
        assert match is not None and (match.route, match.endpoint.method) == (route, "GET")
    for path, route in (("/a/z", "/a/{y}"), ("/b/z/c", "/b/{y}/c")):
        match = t.match("default", "HEAD", path)
        assert match is not None and (match.route, match.endpoint.method) == (route, "HEAD")
