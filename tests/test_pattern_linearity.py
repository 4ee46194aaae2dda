"""Route patterns match in one pass over the path, whatever their literals: proved on
the matcher's plan and on how it reads a segment, not by timing it; refused patterns
change nothing."""

from __future__ import annotations

import dataclasses
import itertools
import re
import re._parser as sre  # the stdlib's own regex parser: the regex as the engine sees it
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, InvalidRoute
from coyote_mw.routing.patterns import MixedSegment, parse_pattern
from tests.support.hostile_app import long_literal
from tests.support.ledger import parse_status, raw_exchange
from tests.support.processes import running
from tests.support.registration import AUTH, api, leader

__all__ = ["api", "leader"]  # the fixtures, shared


class Recorded(str):
    """A segment that records how the matcher reads it (read backwards, it still does)."""

    calls: list[tuple[Any, ...]]

    def __new__(cls, text: str, calls: list[tuple[Any, ...]] | None = None) -> Recorded:
        seg = super().__new__(cls, text)
        seg.calls = [] if calls is None else calls
        return seg

    def __getitem__(self, key: Any) -> Any:
        if key == slice(None, None, -1):
            self.calls.append(("reversed",))
            return Recorded(super().__getitem__(key), self.calls)
        return super().__getitem__(key)

    def startswith(self, prefix: Any, start: Any = None, end: Any = None) -> bool:
        self.calls.append(("startswith", prefix, start))
        return super().startswith(prefix, start, end)

    def endswith(self, suffix: Any, start: Any = None, end: Any = None) -> bool:
        self.calls.append(("endswith", suffix, start))
        return super().endswith(suffix, start, end)

    def __contains__(self, sub: object) -> bool:
        self.calls.append(("in", sub))
        return super().__contains__(sub)  # type: ignore[operator]


class RecordedPattern:
    """A step's pattern, its calls recorded in the segment's."""

    def __init__(self, pattern: re.Pattern[str], literal: str) -> None:
        self.pattern = pattern
        self.literal = literal

    def search(self, seg: Recorded, pos: int, end: int) -> re.Match[str] | None:
        found = self.pattern.search(seg, pos, end)
        seg.calls.append(("search", self.literal, pos, found.end() if found else -1))
        return found

    def match(self, seg: Recorded, pos: int) -> re.Match[str] | None:
        found = self.pattern.match(seg, pos)
        seg.calls.append(("span", self.literal, pos, found.end() if found else -1))
        return found


def a_literal_scan(finder: re.Pattern[str], literal: str) -> None:
    """The pattern is the literal alone, so the engine compiles it to its literal-prefix
    search (a Knuth-Morris-Pratt overlap table): linear in the text, whatever the
    literal."""
    assert list(sre.parse(finder.pattern)) == [(sre.LITERAL, ord(c)) for c in literal]
    assert finder.flags & re.IGNORECASE == 0


def a_span_then_its_literal(span: re.Pattern[str], literal: str) -> None:
    """The value in an atomic group (taken once, never given back), then the literal
    compared once.  Inside, no alternation, lookaround or backreference, and every
    repeat is of one character class, so the value itself is read once (the optional
    fraction of a float is the only choice, taken or not in one step)."""
    items = list(sre.parse(span.pattern))
    assert items[0][0] is sre.ATOMIC_GROUP, span.pattern
    (group,) = list(items[0][1])
    assert group[0] is sre.SUBPATTERN and group[1][0] == 1, span.pattern
    assert items[1:] == [(sre.LITERAL, ord(c)) for c in literal], span.pattern

    def walk(body: Any) -> None:
        for op, av in body:
            assert op in (sre.LITERAL, sre.IN, sre.MAX_REPEAT, sre.SUBPATTERN), span.pattern
            if op is sre.MAX_REPEAT:
                low, high, inner = av
                inner = list(inner)
                if len(inner) == 1 and inner[0][0] in (sre.IN, sre.LITERAL):
                    continue
                assert (low, high) == (0, 1), span.pattern  # an optional group
                walk(inner)
            elif op is sre.SUBPATTERN:
                walk(av[3])

    walk(group[1][3])


def reader(mixed: MixedSegment) -> Callable[[str], tuple[str, ...] | None]:
    """``mixed.match``, asserting how it reads each text: reversed once if ``mixed``
    reads backwards; the '/' test once; ``head`` and ``tail`` compared in place; then,
    for every parameter but the last, one search for the literal after it (a ``str``
    one) or one match of its value and literal (a typed one), each starting where the
    text before it ended, so no character is read twice."""
    steps = []
    for step in mixed.steps:
        if step.finder is not None:
            a_literal_scan(step.finder, step.literal)
            recorded = RecordedPattern(step.finder, step.literal)
            step = step._replace(finder=recorded)  # type: ignore[arg-type]
        else:
            assert step.span is not None
            a_span_then_its_literal(step.span, step.literal)
            recorded = RecordedPattern(step.span, step.literal)
            step = step._replace(span=recorded)  # type: ignore[arg-type]
        steps.append(step)
    plan = dataclasses.replace(mixed, steps=tuple(steps))

    def read(text: str) -> tuple[str, ...] | None:
        seg = Recorded(text)
        found = plan.match(seg)
        calls = seg.calls
        if mixed.reverse:
            assert calls[:1] == [("reversed",)], calls
            calls = calls[1:]
        assert calls[:1] == [("in", "/")], calls
        rest = calls[1:]
        for compare, literal in (("startswith", mixed.head), ("endswith", mixed.tail)):
            if literal and rest:  # an empty head or tail needs no comparison
                assert rest[0] == (compare, literal, None), calls
                rest = rest[1:]
        resume = len(mixed.head)  # where the next step may start, at the earliest
        for step, (kind, literal, start, stop) in enumerate(rest):
            assert step < len(mixed.steps) and literal == mixed.steps[step].literal, calls
            assert kind == ("search" if mixed.steps[step].finder else "span"), calls
            assert start >= resume, f"{calls}: read a character twice"
            resume = stop
        assert found == mixed.match(text)  # recording changed nothing
        return found

    return read


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


def hostile_texts(mixed: MixedSegment) -> Iterator[str]:
    """Segments that make a backtracking matcher work hard: runs of each literal's
    characters, of digits, of the literal itself, between the right head and tail."""
    pieces = ["", "0" * 40, "1.5" * 20, "a" * 40]
    for step in mixed.steps:
        after = step.literal
        pieces += [after * 30, after[:-1] * 30, (after + "x") * 20]
    texts = []
    for piece in pieces:
        texts += [piece, mixed.head + piece + mixed.tail, mixed.head + piece * 2 + mixed.tail]
    # and one that fits, read to its end
    sample = {"int": "7", "float": "1.5", "uuid": str(uuid.UUID(int=1)), "str": "Q" * 20}
    body = "".join(sample[step.convertor.name] + step.literal for step in mixed.steps)
    texts.append(mixed.head + body + sample[mixed.last.name] + mixed.tail)
    for text in texts:  # as the spec reads them: backwards for a backwards one
        yield text[::-1] if mixed.reverse else text


def test_every_accepted_mixed_segment_is_read_in_one_pass() -> None:
    accepted = refused = fits = 0
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
            if seg.kind != "complex":
                continue
            mixed = seg.mixed
            assert mixed is not None
            assert all(step.literal for step in mixed.steps), pattern  # never touching
            read = reader(mixed)
            for text in hostile_texts(mixed):
                fits += read(text) is not None
    assert accepted > 1000 and refused > 100  # the set covers both outcomes
    assert fits >= accepted  # and the reading was followed to the end


@pytest.mark.parametrize(
    "pattern",
    [
        "/p/{x}" + "a" * 1500 + "b{y:int}",  # str, long literal, typed: forwards
        "/p/{x}" + "a" * 1500 + "b{y}",  # str, str: backwards
        "/p/{x}" + "a" * 1500 + "b",  # one parameter, a long tail
        "/p/" + "a" * 1500 + "b{x}" + "a" * 1500 + "b.{y}",  # long head, from the end
        "/p/{n:int}-" + "a" * 1500 + "b{x}",  # typed, then a long literal
    ],
)
def test_a_long_literal_is_searched_for_once_not_at_every_character(pattern: str) -> None:
    mixed = parse_pattern(pattern).segments[1].mixed
    assert mixed is not None
    read = reader(mixed)
    for text in ("a" * 8192, "1-" + "a" * 8192, "a" * 4000 + "a" * 1500 + "b7"):
        read(text)


def test_mixed_segments_match_what_a_backtracking_regex_matches() -> None:
    # the one-pass reading gives the split the documented greedy regex gives
    cases = [
        ("/{a}.{b}", "x.tar.gz", ("x.tar", "gz")),
        ("/{a}.{n:int}.{b}", "x.y.1.z", None),
        ("/{a}.{n:int}.{b}", "x.1.y.z", ("x", "1", "y.z")),
        ("/{a}..{b}", "x...y", ("x.", "y")),
        ("/v{n:int}", "v", None),
        ("/ab{x}ba", "aba", None),  # head and tail overlap: nothing left for x
        ("/{n:int}.json", "12.json", ("12",)),
        ("/{a}-{b}", "-x", None),  # a would be empty
        ("/{a}-{n:int}", "x-1/2", None),  # a decoded '/' is in no mixed parameter
    ]
    for pattern, text, values in cases:
        mixed = parse_pattern(pattern).segments[0].mixed
        assert mixed is not None
        assert mixed.match(text) == values, (pattern, text)


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
    with running(["uvicorn", "tests.support.hostile_app:app"], ready_path="/ready") as url:
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


@pytest.fixture(scope="module")
def long_literal_server() -> Iterator[int]:
    with running(["uvicorn", "tests.support.hostile_app:long_app"], ready_path="/ready") as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/p/" + "a" * 60_000, 404),
        ("/q/" + "a" * 60_000, 404),
        ("/r/" + "a" * 60_000, 404),
        ("/p/" + "a" * 1000 + long_literal(99) + "7", 200),
        ("/q/" + "a" * 1000 + long_literal(42), 200),
        ("/r/" + "a" * 1000 + long_literal(99) + "z", 200),
    ],
)
def test_a_60_kb_segment_against_100_long_literals_is_answered_at_once(
    long_literal_server: int, path: str, status: int
) -> None:
    # Each literal searched for once: milliseconds in all.  Compared at every character,
    # it is over a minute of a held GIL; the timeout is generous for the first.
    head = f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(long_literal_server, head.encode(), timeout=30)
    assert parse_status(answer) == status


# -- refusals change nothing -----------------------------------------------------------


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
