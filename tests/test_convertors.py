"""Convertors never fail on the request path: a value one cannot convert is no match
(404, or the host app's answer), never a 500, in a whole segment and a mixed one."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coyote_mw import Client, Coyote, RouteTable, route
from coyote_mw.routing.patterns import CONVERTORS
from tests.support.servers import raw_request, uvicorn_server, werkzeug_server

DIGITS = sys.get_int_max_str_digits()  # 4300 unless the interpreter was told otherwise


def handler(route: object) -> object:
    return route


def table() -> RouteTable:
    t = RouteTable()
    t.register(
        "svc",
        [
            ("GET", "/i/{n:int}"),
            ("GET", "/j/{n:int}.json"),
            ("GET", "/k/{n:int}-{rest}"),
            ("GET", "/f/{x:float}"),
            ("GET", "/g/v{x:float}.csv"),
            ("GET", "/u/{u:uuid}"),
            ("GET", "/w/{u:uuid}.json"),
        ],
        handler,
    )
    return t


@pytest.fixture
def int_digits() -> Iterator[None]:
    """Lets a test change the interpreter's int digit limit; restores it."""
    before = sys.get_int_max_str_digits()
    yield
    sys.set_int_max_str_digits(before)


@pytest.mark.parametrize("path", ["/i/{}", "/j/{}.json", "/k/{}-x"])
def test_an_int_with_more_digits_than_int_converts_is_no_match(path: str) -> None:
    t = table()
    fits = t.match("default", "GET", path.format("7" * DIGITS))
    assert fits is not None and fits.params["n"] == int("7" * DIGITS)
    too_long = path.format("7" * (DIGITS + 1))
    assert t.match("default", "GET", too_long) is None
    assert t.allowed_methods("default", too_long) == set()  # 404, not 405
    zeros = path.format("0" * (DIGITS + 1))  # leading zeros count, as int() counts them
    assert t.match("default", "GET", zeros) is None


@pytest.mark.usefixtures("int_digits")
def test_the_int_limit_is_the_interpreters_own_and_0_means_none() -> None:
    sys.set_int_max_str_digits(640)  # the lowest CPython allows
    assert table().match("default", "GET", "/i/" + "1" * 641) is None
    assert table().match("default", "GET", "/j/" + "1" * 640 + ".json") is not None
    sys.set_int_max_str_digits(0)  # no limit
    m = table().match("default", "GET", "/i/" + "1" * (DIGITS + 100))
    assert m is not None and m.params["n"] == int("1" * (DIGITS + 100))


def test_a_float_past_the_float_range_is_no_match_never_infinity() -> None:
    t = table()
    largest = "9" * 308  # below 1e308: finite
    m = t.match("default", "GET", "/f/" + largest)
    assert m is not None and m.params["x"] == float(largest)
    for overflow in ("9" * 309, "1" + "0" * 400 + ".5", "2" * 5000):
        assert t.match("default", "GET", "/f/" + overflow) is None
        assert t.match("default", "GET", "/g/v" + overflow + ".csv") is None
    m = t.match("default", "GET", "/g/v" + "0" * 5000 + "1.5.csv")  # long but small
    assert m is not None and m.params["x"] == 1.5


def test_every_convertor_passes_only_what_it_converts() -> None:
    samples = ["0", "7", "1.5", "9" * 309, "1" * (DIGITS + 1), str(uuid.UUID(int=7)), "x", ""]
    for conv in CONVERTORS.values():
        for value in samples:
            if conv.check(value):
                conv.convert(value)  # never raises


segments = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.text(alphabet="0123456789.-abcdefABCDEF", max_size=60),
    st.integers(0, 6000).map(lambda n: "9" * n),
    st.integers(0, 6000).map(lambda n: "1" * n + ".5"),
)


@settings(max_examples=300, deadline=None)
@given(segments)
def test_no_segment_makes_a_lookup_raise(segment: str) -> None:
    t = table()
    for prefix, suffix in (("/i/", ""), ("/j/", ".json"), ("/k/", "-x"), ("/f/", "")):
        path = prefix + segment + suffix
        t.match("default", "GET", path)
        t.allowed_methods("default", path)
    for prefix, suffix in (("/g/v", ".csv"), ("/u/", ""), ("/w/", ".json")):
        t.match("default", "GET", prefix + segment + suffix)


# -- through real servers ---------------------------------------------------------------


class Shop(Client):
    @route("GET", "/items/{id:int}")
    def item(self, request: Any) -> dict[str, Any]:
        return {"id": request.params["id"]}

    @route("GET", "/files/{id:int}.json")
    def file(self, request: Any) -> str:
        return "file"

    @route("GET", "/prices/{x:float}")
    def price(self, request: Any) -> str:
        return "price"


def host_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"host"]


async def host_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"host"})


TOO_BIG = [
    "/items/" + "1" * (DIGITS + 1),
    "/files/" + "1" * (DIGITS + 1) + ".json",
    "/prices/" + "9" * 400,
]


@pytest.fixture(params=["asgi-host", "asgi-standalone", "wsgi-host", "wsgi-standalone"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int, bytes]]:
    """(port, status, body) for a value no convertor takes: the host's answer, or 404."""
    coyote = Coyote()
    coyote.register(Shop())
    kind, mode = request.param.split("-")
    host = mode == "host"
    if kind == "asgi":
        ctx = uvicorn_server(coyote.asgi(host_asgi if host else None))
    else:
        ctx = werkzeug_server(coyote.wsgi(host_wsgi if host else None))
    with ctx as port:
        yield port, (200 if host else 404), (b"host" if host else b"No matching route")
    coyote.close()


@pytest.mark.parametrize("path", TOO_BIG)
def test_a_value_no_convertor_takes_falls_through_or_is_404_under_real_servers(
    server: tuple[int, int, bytes], path: str
) -> None:
    port, status, body = server
    got, answer = raw_request(port, "GET", path)
    assert (got, body in answer) == (status, True), answer[:200]
    got, answer = raw_request(port, "GET", "/items/12")
    assert (got, answer) == (200, b'{"id":12}')
