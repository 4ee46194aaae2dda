"""Route patterns match in time linear in the path: proved on the compiled regexes'
structure, not by timing them; refused patterns change nothing."""

from __future__ import annotations

import itertools
import re
import re._parser as sre  # the stdlib's own regex parser: the regex as the engine sees it
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, InvalidRoute
from coyote_mw.patterns import parse_pattern
from sample_apps.deadwood.saloon import Saloon
from tests.conftest import ASGIClient, WSGIClient
from tests.processes import running

TOKEN = "t" * 32
AUTH = {"authorization": f"Bearer {TOKEN}"}
SLASH = ord("/")


def one_end_per_parameter(regex: str) -> None:
    """Assert the structure that makes backtracking linear: literals before the first
    group; a literal between groups; every group but the last has exactly one possible
    end (an atomic group, or a run that cannot contain the start of the literal after
    it); after the last group, literals only.  Then a failed attempt never makes the
    engine retry an earlier group at another length with work behind it."""
    items = list(sre.parse(regex))
    groups = [i for i, (op, _) in enumerate(items) if op is sre.SUBPATTERN]
    assert groups, regex
    assert all(op is sre.LITERAL for op, _ in items[: groups[0]]), regex
    assert all(op is sre.LITERAL for op, _ in items[groups[-1] + 1 :]), regex
    for g, nxt in itertools.pairwise(groups):
        between = items[g + 1 : nxt]
        assert between, f"{regex}: two parameters touch"
        assert all(op is sre.LITERAL for op, _ in between), regex
        literal = [code for _, code in between]
        body = list(items[g][1][3])
        if len(body) == 1 and body[0][0] is sre.ATOMIC_GROUP:
            continue  # takes one length and never gives any back
        assert len(body) == 1 and body[0][0] is sre.MAX_REPEAT, regex
        inner = list(body[0][1][2])
        if len(inner) == 1 and inner[0][0] is sre.IN:
            members = inner[0][1]
            assert members[0] == (sre.NEGATE, None), regex
            assert (sre.LITERAL, SLASH) in members, regex
            assert (sre.LITERAL, literal[0]) in members, f"{regex}: may swallow the literal"
            continue
        assert [op for op, _ in inner] == [sre.ASSERT_NOT, sre.NOT_LITERAL], regex
        assert inner[1][1] == SLASH, regex
        lookahead = inner[0][1][1]
        assert [(op, code) for op, code in lookahead] == [(sre.LITERAL, c) for c in literal], (
            f"{regex}: the run may hold the literal after it"
        )


CONVERTORS = ["str", "int", "float", "uuid"]
SEPARATORS = ["", ".", "-", "-x", "0", "a", ".json", "~"]


def mixed_segments() -> Iterator[str]:
    names = "abc"
    for count in (1, 2, 3):
        for convs in itertools.product(CONVERTORS, repeat=count):
            for seps in itertools.product(SEPARATORS, repeat=count - 1):
                for prefix, suffix in (("", "x"), ("v", ""), ("v", ".json"), ("", "")):
                    text = prefix
                    for i, conv in enumerate(convs):
                        text += "{" + names[i] + ("" if conv == "str" else ":" + conv) + "}"
                        if i < count - 1:
                            text += seps[i]
                    text += suffix
                    if count == 1 and not prefix and not suffix:
                        continue  # a whole-segment parameter, not a mixed one
                    yield "/" + text


def test_every_accepted_mixed_segment_has_one_end_per_parameter() -> None:
    accepted = refused = 0
    for pattern in mixed_segments():
        try:
            parsed = parse_pattern(pattern)
        except InvalidRoute as exc:
            refused += 1
            message = str(exc)
            assert "put a literal between them" in message or "starts with a digit" in message
            continue
        accepted += 1
        for seg in parsed.segments:
            if seg.kind == "complex":
                assert seg.regex is not None
                one_end_per_parameter(seg.regex.pattern)
    assert accepted > 1000 and refused > 100  # the set covers both outcomes


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("/{a}{b}{c}{d}{e}x", "put a literal between them, e.g. '{a}-{b}'"),
        ("/{a:int}{b}", "put a literal between them"),
        ("/files/v{major:int}{minor}.json", "put a literal between them"),
        ("/{n:int}0{rest}", "starts with a digit"),
        ("/{x:float}1.{y}", "starts with a digit"),
    ],
)
def test_ambiguous_mixed_segments_are_refused_saying_how_to_fix_them(
    pattern: str, says: str
) -> None:
    with pytest.raises(InvalidRoute, match=re.escape(says)):
        parse_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "path", "values"),
    [
        ("/{name}.json", "/a.b.json", ["a.b"]),
        # several str parameters: split as Starlette's greedy regex splits
        ("/{a}.{b}", "/x.tar.gz", ["x.tar", "gz"]),
        ("/{name}.{ext}", "/report.final.pdf", ["report.final", "pdf"]),
        ("/{a}-{b}.json", "/x-y-z.json", ["x-y", "z"]),
        ("/{a}-x{b}", "/p-y-x1-x2", ["p-y-x1", "2"]),
        ("/{a}.{b}.{c}", "/w.x.y.z", ["w.x", "y", "z"]),
        ("/{a}--{b}", "/x---y", ["x-", "y"]),
        ("/pre{a}.{b}post", "/prex.y.zpost", ["x.y", "z"]),
        ("/{id:int}-{slug}", "/12-my-first-post", [12, "my-first-post"]),
        ("/{v:float}.{ext}", "/1.5.json", [1.5, "json"]),
        ("/{lat:float},{lon:float}", "/1.5,2", [1.5, 2.0]),
        ("/v{major:int}.{minor:int}", "/v1.20", [1, 20]),
    ],
)
def test_mixed_segments_split_as_documented(pattern: str, path: str, values: list[Any]) -> None:
    coyote = Coyote()
    coyote.register_remote("http://127.0.0.1:9", routes=[("GET", pattern)], service="s")
    match = coyote.table.match("default", "GET", path)
    assert match is not None
    assert list(match.params.values()) == values
    coyote.close()


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    with running(["uvicorn", "tests.hostile_app:app"], ready_path="/ready") as url:
        yield url


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/h/" + "-" * 100, 404),
        ("/f/" + "." * 100, 404),
        ("/f/" + "a." * 50, 404),
        ("/h/" + "a" * 88 + "-b-c-d-e-f-gx", 200),
    ],
)
def test_a_hostile_100_character_path_is_answered_at_once(
    hostile_server: str, path: str, status: int
) -> None:
    # a real server process: a backtracking match holds its GIL for minutes, so the
    # test process must not be the one matching.  Generous: a linear match takes
    # microseconds; the backtracking one took far longer than this timeout.
    r = httpx.get(hostile_server + path, timeout=20)
    assert r.status_code == status


# -- refusals change nothing -----------------------------------------------------------


@pytest.fixture
def leader() -> Iterator[Coyote]:
    coyote = Coyote(token=TOKEN)
    coyote.register(Saloon())
    yield coyote
    coyote.close()


@pytest.fixture(params=["asgi", "wsgi"])
def api(request: pytest.FixtureRequest, leader: Coyote, loop_thread: Any) -> Iterator[Any]:
    if request.param == "asgi":
        client: Any = ASGIClient(leader.asgi(), loop_thread)
    else:
        client = WSGIClient(transport=httpx.WSGITransport(leader.wsgi()), base_url="http://t")
    yield client
    client.close()


REFUSED = ["/{a}{b}{c}{d}{e}x", "/ok/{n:int}0{rest}"]


@pytest.mark.parametrize("pattern", REFUSED)
def test_a_refused_pattern_over_the_api_is_400_and_changes_nothing(
    api: Any, leader: Coyote, pattern: str
) -> None:
    before = leader.table.routes()
    body = {
        "service": "remote.saloon",
        "instance": "one",
        "url": "http://127.0.0.1:9",
        "routes": [{"method": "GET", "path": "/fine"}, {"method": "GET", "path": pattern}],
    }
    r = api.post("/_coyote/registrations", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    (problem,) = r.json()["detail"]
    assert problem["field"] == "routes.1.path"
    assert leader.table.routes() == before


@pytest.mark.parametrize("pattern", REFUSED)
def test_a_refused_pattern_in_process_raises_and_changes_nothing(
    leader: Coyote, pattern: str
) -> None:
    before = leader.table.routes()

    class Bad(Client):
        routes = [("GET", "/fine"), ("GET", pattern)]

        def call(self, request: Any) -> str:
            return "x"

    with pytest.raises(InvalidRoute):
        leader.register(Bad())
    with pytest.raises(InvalidRoute):
        leader.register_remote(
            "http://127.0.0.1:9", routes=[("GET", "/fine"), ("GET", pattern)], service="s"
        )
    assert leader.table.routes() == before
