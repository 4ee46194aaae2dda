"""The route table, its patterns and the canonical path, as units."""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coyote_mw import InvalidRoute, RouteConflict, RouteTable, TableChange
from coyote_mw.errors import BadRequestPath, ReservedRoute
from coyote_mw.http.paths import canonicalize
from coyote_mw.routing.patterns import parse_pattern


def handler(route: object) -> object:
    return route


def table_with(*routes: tuple[str, str], service: str = "svc") -> RouteTable:
    t = RouteTable()
    t.register(service, list(routes), handler)
    return t


def matched(t: RouteTable, method: str, raw: str, topology: str = "default") -> str | None:
    c = canonicalize(raw)
    m = t.match(topology, method, c.path, c.segments)
    return m.endpoint.pattern if m else None


# -- canonical paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "forwarded"),
    [
        ("/a/b", "/a/b", "/a/b"),
        ("/a//b///c", "/a/b/c", "/a/b/c"),
        ("/a/b/", "/a/b/", "/a/b/"),
        ("/a/./b/../c", "/a/c", "/a/c"),
        ("/a/b/..", "/a/", "/a/"),
        ("/a/%2e%2E/b", "/b", "/b"),
        ("/%7euser", "/~user", "/~user"),
        ("/a%3ab", "/a:b", "/a%3Ab"),
        ("/caf%c3%a9", "/café", "/caf%C3%A9"),
        ("/Case/Kept", "/Case/Kept", "/Case/Kept"),
    ],
)
def test_canonical_form(raw: str, path: str, forwarded: str) -> None:
    c = canonicalize(raw)
    assert (c.path, c.raw) == (path, forwarded)


def test_encoded_slash_is_data_not_a_separator() -> None:
    c = canonicalize("/files/a%2Fb/c")
    assert c.segments == ("files", "a/b", "c")
    assert c.raw == "/files/a%2Fb/c"


def test_raw_utf8_bytes_are_treated_as_escaped() -> None:
    assert canonicalize("/café".encode()).raw == "/caf%C3%A9"


@pytest.mark.parametrize(
    "raw", ["/a%zz", "/a%4", "/a%", "/%ff", "/a%00b", "/../x", "/a/../../x", "relative", ""]
)
def test_malformed_paths_are_bad_request_path(raw: str) -> None:
    with pytest.raises(BadRequestPath):
        canonicalize(raw)


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_canonicalize_only_ever_raises_bad_request_path(raw: str | bytes) -> None:
    try:
        c = canonicalize(raw)
    except BadRequestPath:
        return
    assert canonicalize(c.raw) == c  # and the canonical form is a fixed point


# -- patterns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("items", "must be a string starting with '/'"),
        ("/a//b", "empty segment"),
        ("/a/../b", "dot-segment"),
        ("/caf%C3%A9", "write the decoded character"),
        ("/items/{id:integer}", "unknown convertor 'integer'; use one of"),
        ("/{a}/{a}", "appears twice"),
        ("/{1x}", "must be a Python identifier"),
        ("/{rest:path}/more", "must be a whole segment and the last one"),
        ("/{unclosed", "unbalanced"),
        ("/a?b", "may not contain"),
    ],
)
def test_bad_patterns_say_how_to_fix_them(pattern: str, message: str) -> None:
    with pytest.raises(InvalidRoute, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_pattern(pattern)


def test_parameters_are_converted() -> None:
    t = table_with(
        ("GET", "/i/{n:int}"),
        ("GET", "/f/{x:float}"),
        ("GET", "/u/{u:uuid}"),
        ("GET", "/p/{rest:path}"),
        ("GET", "/r/{name}.json"),
    )
    u = uuid.uuid4()

    def params(raw: str) -> dict[str, object]:
        m = t.match("default", "GET", raw)
        assert m is not None, raw
        return dict(m.params)

    assert params("/i/42") == {"n": 42}
    assert params("/f/1.5") == {"x": 1.5}
    assert params(f"/u/{u}") == {"u": u}
    assert params("/p/a/b/c") == {"rest": "a/b/c"}
    assert params("/r/report.json") == {"name": "report"}
    assert t.match("default", "GET", "/i/4x2") is None
    assert t.match("default", "GET", "/u/not-a-uuid") is None


def test_params_are_read_only_because_matches_are_shared() -> None:
    t = table_with(("GET", "/i/{n:int}"))
    m = t.match("default", "GET", "/i/1")
    assert m is not None
    with pytest.raises(TypeError):
        m.params["n"] = 2  # type: ignore[index]


# -- precedence, methods -----------------------------------------------------------------


def test_most_specific_segment_wins_and_the_search_backtracks() -> None:
    t = table_with(
        ("GET", "/items/new/edit"),
        ("GET", "/items/{id}/view"),
        ("GET", "/items/{id:int}"),
        ("GET", "/items/{name}"),
        ("GET", "/items/{name}.json"),
        ("GET", "/files/{rest:path}"),
        ("GET", "/files/readme"),
    )
    assert matched(t, "GET", "/items/new/edit") == "/items/new/edit"
    assert matched(t, "GET", "/items/new/view") == "/items/{id}/view"  # backtracked
    assert matched(t, "GET", "/items/7") == "/items/{id:int}"
    assert matched(t, "GET", "/items/x") == "/items/{name}"
    assert matched(t, "GET", "/items/x.json") == "/items/{name}.json"
    assert matched(t, "GET", "/files/readme") == "/files/readme"
    assert matched(t, "GET", "/files/docs/a") == "/files/{rest:path}"


def test_head_falls_back_to_get_unless_declared_and_allowed_lists_methods() -> None:
    t = table_with(("GET", "/a"), ("GET", "/b"), ("HEAD", "/b"), ("POST", "/c/{x}"))
    head_a = t.match("default", "HEAD", "/a")
    head_b = t.match("default", "HEAD", "/b")
    assert head_a is not None and head_a.endpoint.method == "GET"
    assert head_b is not None and head_b.endpoint.method == "HEAD"
    assert t.allowed_methods("default", "/a") == {"GET", "HEAD"}
    assert t.allowed_methods("default", "/c/1") == {"POST"}
    assert t.allowed_methods("default", "/nothing") == set()


def test_trailing_slash_is_significant() -> None:
    t = table_with(("GET", "/items"), ("GET", "/dir/"))
    assert matched(t, "GET", "/items") == "/items"
    assert matched(t, "GET", "/items/") is None
    assert matched(t, "GET", "/dir/") == "/dir/"
    assert matched(t, "GET", "/dir") is None


def test_a_path_that_starts_with_no_literal_of_the_root_is_a_miss_and_only_that() -> None:
    """With few literals at the root and no parameter there, a path starting with none
    of them ends the lookup early: a literal's prefix (``/ap``), a longer literal
    (``/apiv2``), the route ``/`` and a parameter added at the root later are still
    answered."""
    t = table_with(("GET", "/api/{id:int}"), ("GET", "/apiv2/x"), ("GET", "/"))
    assert matched(t, "GET", "/no/such/route") is None
    assert matched(t, "GET", "/ap") is None
    assert matched(t, "GET", "/api/5") == "/api/{id:int}"
    assert matched(t, "HEAD", "/apiv2/x") == "/apiv2/x"
    assert matched(t, "GET", "/") == "/"
    assert matched(t, "POST", "/") is None
    t.register("other", [("GET", "/{any}/deep/er")], handler)
    assert matched(t, "GET", "/no/deep/er") == "/{any}/deep/er"
    assert matched(t, "GET", "/no/such/route") is None
    many = table_with(*(("GET", f"/lit{i}/{{x}}") for i in range(40)))
    assert matched(many, "GET", "/lit39/y") == "/lit39/{x}"
    assert matched(many, "GET", "/no/such/route") is None


# -- registration ------------------------------------------------------------------------


def test_conflict_from_another_service_is_refused_and_the_table_unchanged() -> None:
    t = table_with(("GET", "/items/{id:int}"), service="shop")
    before = t.routes()
    for pattern in ("/items/{id:int}", "/items/{n:int}"):  # same shape, other name
        with pytest.raises(RouteConflict) as err:
            t.register("thief", [("GET", "/free"), ("GET", pattern)], handler)
        assert err.value.status == 409 and "shop" in str(err.value)
        assert t.routes() == before
        assert t.match("default", "GET", "/free") is None  # nothing half-registered


def test_instances_of_one_service_share_routes_round_robin() -> None:
    t = RouteTable()
    t.register("svc", [("GET", "/x")], lambda r: "a", instance="a")
    t.register("svc", [("GET", "/x")], lambda r: "b", instance="b")
    m = t.match("default", "GET", "/x")
    assert m is not None
    assert {m.endpoint.pick() for _ in range(4)} == {"a", "b"}
    t.deregister(service="svc", instance="a")
    m = t.match("default", "GET", "/x")
    assert m is not None and {m.endpoint.pick() for _ in range(3)} == {"b"}


def test_deregister_by_lease_route_and_service() -> None:
    t = RouteTable()
    reg = t.register("svc", [("GET", "/a"), ("GET", "/b")], handler)
    t.deregister(service="svc", route=("GET", "/a"))
    assert (matched(t, "GET", "/a"), matched(t, "GET", "/b")) == (None, "/b")
    t.deregister(lease=reg.lease)
    assert t.routes() == [] and len(t) == 0


def test_topologies_are_separate_tables() -> None:
    t = RouteTable()
    t.register("blue", [("GET", "/")], handler, topology="blue")
    t.register("green", [("GET", "/")], handler, topology="green")
    assert t.topologies() == ["blue", "green"]
    assert matched(t, "GET", "/", "default") is None


def test_subscribers_see_changes_after_they_are_visible_and_cannot_break_them() -> None:
    t = RouteTable()
    seen: list[tuple[str, str | None]] = []

    def watcher(change: TableChange) -> None:
        seen.append((change.action, matched(t, "GET", "/w")))

    def broken(change: TableChange) -> None:
        raise RuntimeError("subscriber bug")

    t.subscribe(broken)
    unsubscribe = t.subscribe(watcher)
    t.register("w", [("GET", "/w")], handler)
    t.deregister(service="w")
    assert seen == [("registered", "/w"), ("deregistered", None)]
    unsubscribe()
    t.register("w", [("GET", "/w")], handler)
    assert len(seen) == 2


def test_a_registration_copies_only_the_path_it_changes() -> None:
    t = RouteTable()
    t.register("big", [("GET", f"/r{i}/{{x}}") for i in range(10_000)], handler)
    before = t.match("default", "GET", "/r5/y")
    t.register("new", [("GET", "/fresh/{x}")], handler)
    after = t.match("default", "GET", "/r5/y")
    assert before is not None and after is not None
    assert after.endpoint is before.endpoint  # untouched endpoint, shared by both snapshots
    assert matched(t, "GET", "/fresh/1") == "/fresh/{x}"


def test_lookups_never_see_a_half_built_table_under_churn() -> None:
    t = table_with(("GET", "/stable/{id:int}"))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for i in range(50):
                    assert t.match("default", "GET", f"/stable/{i}") is not None
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    for i in range(300):  # bounded
        t.register(
            f"churn{i}", [("GET", f"/stable/{i}/x"), ("POST", "/stable/{id:int}/x")], handler
        )
        t.deregister(service=f"churn{i}")
    stop.set()
    for r in readers:
        r.join(10)
    assert errors == []


def test_the_lookup_cache_keeps_short_paths_only_so_its_memory_is_bounded() -> None:
    from coyote_mw.routing.table import CACHE_KEY_MAX, CACHE_SIZE

    t = table_with(("GET", "/files/{name:path}"))
    snapshot = t._snapshots["default"]
    long_paths = [f"/files/{i}/" + "a" * 8000 for i in range(50)]
    for path in long_paths:
        match = t.match("default", "GET", path)
        assert match is not None and match.params["name"] == path[len("/files/") :]
    assert t.match("default", "GET", "/files/short") is not None
    assert list(snapshot.cache) == [("GET", "/files/short")]
    for i in range(2 * CACHE_SIZE):  # full, it starts over: never more than the bound
        t.match("default", "GET", f"/files/{i}/" + "b" * (CACHE_KEY_MAX - 20))
        assert len(snapshot.cache) <= CACHE_SIZE
    assert sum(len(m) + len(p) for m, p in snapshot.cache) <= CACHE_SIZE * CACHE_KEY_MAX


# -- reserved prefixes -----------------------------------------------------------------


def test_a_table_refuses_routes_under_a_reserved_prefix_and_stays_as_it_was() -> None:
    t = table_with(("GET", "/a"))
    t.reserve("/_coyote")
    before = t.routes()
    for pattern in ("/_coyote", "/_coyote/registrations", "/_coyote/{rest:path}"):
        with pytest.raises(ReservedRoute) as refused:
            t.register("sneaky", [("GET", "/fine"), ("POST", pattern)], handler)
        assert refused.value.prefix == "/_coyote" and refused.value.patterns == [pattern]
        assert refused.value.status == 403 and isinstance(refused.value, InvalidRoute)
        assert "choose paths outside /_coyote" in str(refused.value)
    assert t.routes() == before
    # a path that only starts with the same letters is not under the prefix
    t.register("neighbour", [("GET", "/_coyotes"), ("GET", "/{x}")], handler)
    t.reserve()  # nothing reserved any more
    t.register("sneaky", [("GET", "/_coyote/x")], handler)
    assert matched(t, "GET", "/_coyote/x") == "/_coyote/x"
