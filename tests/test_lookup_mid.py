"""Paths where a parameter sits between literals (``/users3/{name}/profile``): the lookup
finds them through an index of the literal prefix before the parameter, and must answer
exactly as the trie search does - a static route, a literal branch or an earlier-tried
parameter still wins, a route taken out is no longer found."""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coyote_mw import Match, RouteTable
from coyote_mw.routing.builder import Builder
from coyote_mw.routing.patterns import parse_pattern
from tests.support.lookup_oracle import METHODS, check, declared_patterns, fill, step_by_step


def table_with(*routes: tuple[str, str]) -> RouteTable:
    t = RouteTable()
    t.register("svc", list(routes), lambda route: route)
    return t


def cold(t: RouteTable, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The lookup with no cache in front of it."""
    snapshot = t._snapshots.get("default")  # none once the table is empty
    match = None if snapshot is None else snapshot.lookup(method, path)
    return None if match is None else (match.route, dict(match.params))


def test_a_static_route_wins_over_the_parameter_between_literals() -> None:
    t = table_with(("GET", "/users3/{name}/profile"), ("GET", "/users3/me/profile"))
    assert cold(t, "GET", "/users3/me/profile") == ("/users3/me/profile", {})
    assert cold(t, "GET", "/users3/bob/profile") == ("/users3/{name}/profile", {"name": "bob"})


def test_a_literal_branch_below_the_prefix_wins_and_its_misses_fall_back() -> None:
    """``/users3/me/{tab}`` is reached first for ``/users3/me/profile``; for a method it
    does not take, the search goes back up to the parameter."""
    t = table_with(("GET", "/users3/{name}/profile"), ("POST", "/users3/me/{tab}"))
    assert cold(t, "POST", "/users3/me/profile") == ("/users3/me/{tab}", {"tab": "profile"})
    assert cold(t, "GET", "/users3/me/profile") == ("/users3/{name}/profile", {"name": "me"})


def test_the_parameter_tried_first_wins_and_backtracks_when_it_fails_deeper() -> None:
    t = table_with(
        ("GET", "/users3/{id:int}/{tab}"),
        ("GET", "/users3/{name}/profile"),
        ("GET", "/users3/{id:int}/settings"),
    )
    # the int parameter comes first; below it no literal "profile", but {tab} takes it
    assert cold(t, "GET", "/users3/7/profile") == (
        "/users3/{id:int}/{tab}",
        {"id": 7, "tab": "profile"},
    )
    assert cold(t, "GET", "/users3/7/settings") == ("/users3/{id:int}/settings", {"id": 7})
    assert cold(t, "GET", "/users3/bob/profile") == ("/users3/{name}/profile", {"name": "bob"})
    assert cold(t, "GET", "/users3/bob/settings") is None


def test_methods_head_and_what_is_allowed() -> None:
    t = table_with(("GET", "/users3/{name}/profile"), ("PUT", "/users3/{name}/photo"))
    assert cold(t, "HEAD", "/users3/bob/profile") == ("/users3/{name}/profile", {"name": "bob"})
    assert cold(t, "POST", "/users3/bob/profile") is None
    assert cold(t, "GET", "/users3/bob/photo") is None
    assert cold(t, "PUT", "/users3/bob/photo") == ("/users3/{name}/photo", {"name": "bob"})
    assert t.allowed_methods("default", "/users3/bob/profile") == {"GET", "HEAD"}


def test_routes_taken_out_are_no_longer_found() -> None:
    t = RouteTable()
    t.register("a", [("GET", "/users3/{name}/profile")], lambda r: r)
    t.register(
        "b", [("GET", "/teams/{team}/profile"), ("GET", "/users4/{name}/profile")], lambda r: r
    )
    assert cold(t, "GET", "/users3/bob/profile") is not None
    t.deregister(service="a")
    assert cold(t, "GET", "/users3/bob/profile") is None
    assert cold(t, "GET", "/teams/red/profile") == ("/teams/{team}/profile", {"team": "red"})
    t.deregister(service="b")
    assert cold(t, "GET", "/teams/red/profile") is None
    assert cold(t, "GET", "/users4/bob/profile") is None
    t.register("c", [("GET", "/users3/{name}/profile/{tab}")], lambda r: r)
    assert cold(t, "GET", "/users3/bob/profile") is None  # "profile" ends no route now
    assert cold(t, "GET", "/users3/bob/profile/x") is not None


def test_params_are_made_when_read_converted_and_read_only() -> None:
    t = table_with(("GET", "/shelf/{n:int}/book"), ("GET", "/a/{x:float}/b/{rest:path}"))
    match = t._snapshots["default"].lookup("GET", "/shelf/42/book")
    assert match is not None
    params = match.params
    assert isinstance(params, MappingProxyType) and params == {"n": 42}
    assert match.params is params  # made once, then kept
    assert "params=mappingproxy({'n': 42})" in repr(match)
    match = t.match("default", "GET", "/a/1.5/b/c/d")
    assert match is not None and dict(match.params) == {"x": 1.5, "rest": "c/d"}


# Patterns built for the index: a literal, a parameter, a literal, sometimes more; few
# literals, so routes share prefixes and tails and compete for the same paths; static
# routes and catch-alls among them.
literal = st.sampled_from(["a", "b", "x.json", "1"])
param = st.sampled_from(["{}", "{:int}", "{:float}", "{:uuid}", "{}.json", "v{:int}", "{}-{}"])
mid_route = st.tuples(
    st.lists(literal, min_size=0, max_size=2),
    param,
    literal,
    st.lists(st.one_of(literal, param, st.just("{:path}")), max_size=1),
).map(lambda t: [*t[0], t[1], t[2], *t[3]])
other_route = st.one_of(
    st.lists(literal, min_size=1, max_size=4),  # static
    st.tuples(st.lists(literal, max_size=2), st.sampled_from(["{}", "{:int}", "{:path}"])).map(
        lambda t: [*t[0], t[1]]
    ),
)
routes = st.lists(
    st.tuples(st.one_of(mid_route, other_route), st.booleans(), st.sampled_from(METHODS)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(routes, st.lists(st.integers(0, 11), max_size=5), st.randoms(use_true_random=False))
def test_parameters_between_literals_answer_as_the_trie_search_does(
    declared: list[tuple[list[str], bool, str]], removals: list[int], rnd: random.Random
) -> None:
    patterns = declared_patterns(declared)
    snapshots = step_by_step(patterns, removals, 1)  # every step a snapshot
    paths = [fill(p, rnd) for _, p, _ in patterns for _ in range(4)]
    paths += [p.text for _, p, _ in patterns]
    for ours_then, theirs_then in snapshots:
        check(ours_then, theirs_then, paths)


def test_the_indexes_forget_what_was_taken_out() -> None:
    """What the index keeps for a route goes with it: a table that churns stays small."""
    t = table_with(("GET", "/users3/{name}/profile"), ("GET", "/users3/{id:int}/profile"))
    builder = Builder(t._snapshots["default"])
    for text in ("/users3/{id:int}/profile", "/users3/{name}/profile"):
        builder.remove("GET", parse_pattern(text))
    emptied = builder.build()
    assert (emptied._mids, emptied._ends, emptied._tails, emptied.size) == ({}, {}, {}, 0)


def test_a_match_keeps_one_parameter_s_value_as_itself_at_every_step() -> None:
    """A lookup keeps the value of a route's only parameter without a sequence around
    it, whichever step finds it (a path's last parameter, one between literals, the first
    path of the search, the full search); ``params`` still names it whole."""
    t = table_with(
        ("GET", "/a/{tail}"),  # the index of literal prefixes
        ("GET", "/b/{mid}/c"),  # the index of parameters between literals
        ("GET", "/d/{x}/e/f"),  # the first path of the search
        ("GET", "/g/{y}/h/i"),
        ("GET", "/g/{y:int}/h/j"),  # the int parameter comes first: the full search
        ("GET", "/k/{p}/{q}"),  # two parameters: a sequence
    )
    snapshot = t._snapshots["default"]
    for path, params in [
        ("/a/value", {"tail": "value"}),
        ("/b/value/c", {"mid": "value"}),
        ("/d/value/e/f", {"x": "value"}),
        ("/g/123/h/i", {"y": "123"}),
        ("/k/one/two", {"p": "one", "q": "two"}),
    ]:
        match = snapshot.lookup("GET", path)
        assert isinstance(match, Match), path
        assert dict(match.params) == params, path
    assert cold(t, "HEAD", "/b/value/c") == ("/b/{mid}/c", {"mid": "value"})
