"""The written-out lookup gives exactly the trie search's answers: checked against the
search as it was (tests/support/reference_matcher.py) on random route sets, built and changed
step by step, and on paths made to fit them, nearly fit them or fit nothing."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from coyote_mw.routing.builder import Builder
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.patterns import parse_pattern
from coyote_mw.routing.table import RouteTable
from tests.support import reference_matcher as reference
from tests.support.lookup_oracle import (
    METHODS,
    TEMPLATES,
    VALUES,
    check,
    declared_patterns,
    fill,
    step_by_step,
)

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


@settings(max_examples=500, deadline=None)
@given(routes, st.lists(st.integers(0, 13), max_size=6), st.randoms(use_true_random=False))
def test_the_lookup_answers_as_the_trie_search_does(
    declared: list[tuple[list[str], bool, str]], removals: list[int], rnd: random.Random
) -> None:
    """Registered in a few steps, then partly withdrawn; every snapshot on the way is
    checked again at the end (a later change must not reach an earlier snapshot)."""
    patterns = declared_patterns(declared)
    snapshots = step_by_step(patterns, removals, 3)
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
