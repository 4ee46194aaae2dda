"""One routing decision for ASGI, WSGI and ``Coyote.call``: its verdicts, and what the
middlewares are given instead of the leader.  (That routing knows no server and the
registry no operator view: the import contract, tests/test_layers.py.)"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest

from coyote_mw import Coyote, MethodNotAllowed, NoMatchingRoute
from coyote_mw.errors import HeadTooLarge
from coyote_mw.http.paths import canonicalize
from coyote_mw.routing.decision import HOST, OPERATOR, Decision
from coyote_mw.routing.table import Match, RouteTable
from sample_apps.deadwood.saloon import Saloon
from tests.support.registration import AUTH, TOKEN

PACKAGE = Path(__file__).resolve().parent.parent / "coyote_mw"


class Prefix:
    def owns(self, path: str) -> bool:
        return path.startswith("/_coyote")


def _table() -> RouteTable:
    table = RouteTable()
    table.register("saloon", [("GET", "/drinks/{id:int}"), ("POST", "/tab")], lambda r: "h")
    table.register("blue", [("GET", "/drinks/{id:int}")], lambda r: "b", topology="blue")
    return table


@pytest.mark.parametrize(
    ("mount", "owns_all", "method", "path", "size", "verdict", "below", "topology"),
    [
        # the operator API's prefix first, whatever the mount
        ("/m", False, "GET", "/_coyote/routes", 10, OPERATOR, "/_coyote/routes", ""),
        # outside the mount: the host's, or 404 where coyote answers everything
        ("/m", False, "GET", "/drinks/1", 10, HOST, None, ""),
        ("/m", True, "DELETE", "/tab", 10, NoMatchingRoute, None, "default"),
        # a target over max_target: 414 before any lookup
        ("", True, "GET", "/drinks/1", 101, HeadTooLarge, None, ""),
        ("/m", True, "GET", "/m/drinks/1", 10, Match, "/drinks/1", "default"),
        ("", False, "GET", "/drinks/x", 10, HOST, "/drinks/x", "default"),
        ("", True, "GET", "/drinks/x", 10, NoMatchingRoute, "/drinks/x", "default"),
        ("/m", False, "GET", "/m/tab/", 10, NoMatchingRoute, "/tab/", "default"),
        ("/m", False, "DELETE", "/m/tab", 10, MethodNotAllowed, "/tab", "default"),
    ],
)
def test_the_verdicts_of_the_decision(
    mount: str,
    owns_all: bool,
    method: str,
    path: str,
    size: int,
    verdict: Any,
    below: str | None,
    topology: str,
) -> None:
    decide = Decision(_table(), mount=mount, owns_all=owns_all).decide
    got, relative, chosen = decide(method, canonicalize(path), size, 100, Prefix(), {})
    if isinstance(verdict, type):
        assert isinstance(got, verdict)
    else:
        assert got is verdict
    assert (relative.path if relative is not None else None) == below
    assert chosen == topology


def test_the_topology_is_resolved_only_for_a_request_that_is_looked_up() -> None:
    asked: list[Any] = []

    def resolver(carrier: Any) -> str:
        asked.append(carrier)
        return "blue"

    decide = Decision(_table(), mount="/m", owns_all=False, topology=resolver).decide
    assert decide("GET", canonicalize("/_coyote/x"), 1, 100, Prefix(), "op")[0] is OPERATOR
    assert decide("GET", canonicalize("/drinks/1"), 1, 100, None, "outside")[0] is HOST
    assert isinstance(decide("GET", canonicalize("/m/x"), 101, 100, None, "long")[0], HeadTooLarge)
    assert asked == []
    match, _, topology = decide("GET", canonicalize("/m/drinks/1"), 1, 100, None, "scope")
    assert isinstance(match, Match) and match.endpoint.service == "blue"
    assert (topology, asked) == ("blue", ["scope"])


def test_outside_a_standalone_mount_is_404_in_the_middlewares_topology(serve: Any) -> None:
    coyote = Coyote()
    try:
        coyote.register(Saloon(), topology="blue")
        client = serve(coyote, None, mount="/saloon", topology="blue")
        assert client.get("/saloon/drinks/1").json()["drink"] == "whiskey"
        # not routed at all: 404 (never 405 for a route of the mount's), in topology blue
        r = client.request("DELETE", "/tab")
        assert r.status_code == 404 and r.json()["topology"] == "blue"
    finally:
        coyote.close()


def test_outside_a_standalone_mount_a_resolver_is_not_asked(serve: Any) -> None:
    """A resolver written for the mounted paths never sees the others: 404, not a 500."""

    def resolver(carrier: Any) -> str:
        path = carrier["PATH_INFO"] if "PATH_INFO" in carrier else carrier["path"]
        if not path.startswith("/saloon"):
            raise KeyError(f"this resolver only knows /saloon, not {path}")
        return "default"

    coyote = Coyote()
    try:
        coyote.register(Saloon())
        client = serve(coyote, None, mount="/saloon", topology=resolver)
        assert client.get("/saloon/drinks/1").status_code == 200
        r = client.get("/boom")
        assert r.status_code == 404 and r.json()["topology"] == "default"
    finally:
        coyote.close()


def test_call_answers_as_the_middleware_decides(serve: Any) -> None:
    coyote = Coyote()
    try:
        coyote.register(Saloon())
        with pytest.raises(MethodNotAllowed) as refused:
            coyote.call("DELETE", "/tab")
        assert refused.value.allowed == ["GET", "HEAD", "POST"]
        with pytest.raises(NoMatchingRoute):
            coyote.call("GET", "/drinks/")
        assert serve(coyote).request("DELETE", "/tab").json()["allowed"] == refused.value.allowed
    finally:
        coyote.close()


def test_a_middleware_built_before_configure_serves_with_the_new_settings(serve: Any) -> None:
    coyote = Coyote()
    try:
        coyote.register(Saloon())
        client = serve(coyote)  # built first, as adapters do
        assert client.get("/_coyote/health").status_code == 404  # no token: no API
        coyote.configure(token=TOKEN, max_target=20)
        assert client.get("/_coyote/health").json() == {"status": "ok"}
        assert client.get("/_coyote/routes", headers=AUTH).status_code == 200
        assert client.get("/drinks/1?" + "x" * 20).status_code == 414
        # a configure refused half-way: what it changed before the refusal is served
        with pytest.raises(ValueError):
            coyote.configure(prefix="/_ops", concurrency=-1)
        assert client.get("/_ops/health").json() == {"status": "ok"}
    finally:
        coyote.close()


def test_peek_takes_no_turn_and_readmits_nobody() -> None:
    class Instance:
        def __init__(self, ejected: bool = False, readmit_at: float = 0.0) -> None:
            self.ejected, self.readmit_at = ejected, readmit_at

        def readmit(self) -> bool:  # as coyote_mw.remote.health's
            if time.monotonic() < self.readmit_at:
                return False
            self.ejected = False
            return True

    a, b = Instance(), Instance(ejected=True, readmit_at=time.monotonic() + 60)
    table = RouteTable()
    table.register("s", [("GET", "/")], lambda r: a, instance="a")
    table.register("s", [("GET", "/")], lambda r: b, instance="b")
    match = table.match("default", "GET", "/")
    assert match is not None
    endpoint = match.endpoint
    peeked = endpoint.peek()
    assert peeked is not None and peeked.instance == "a"
    assert endpoint.peek() is peeked  # no turn taken
    assert endpoint.pick() is a and endpoint.pick() is a  # b is ejected: skipped
    b.readmit_at = time.monotonic() - 1  # its ejection time is over
    assert endpoint.pick() is a  # b's turn next
    peeked = endpoint.peek()
    assert peeked is not None and peeked.instance == "b" and b.ejected  # not re-admitted
    assert endpoint.pick() is b and not b.ejected  # a pick re-admits it
    a.ejected, a.readmit_at = True, time.monotonic() + 60
    b.ejected, b.readmit_at = True, time.monotonic() + 60
    assert endpoint.peek() is None


def test_the_middleware_is_given_a_gateway_and_never_names_the_leader() -> None:
    for path in sorted((PACKAGE / "middleware").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "Coyote" not in names and "coyote" not in names, path.name
        # nor imports it, even for types (the import contract: tests/test_layers.py)
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "coyote_mw.leader" not in imported, path.name
