"""``{prefix}/explain``: the verdict a request would get, from the decision the middleware
makes, without dispatching it - under ASGI and WSGI, behind Flask and Django hosts,
with a mount, a host app and topologies.  (``coyote explain`` against a real leader
process: tests/test_ops_processes.py.)"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from django.test import Client as DjangoClient
from django.test.utils import override_settings

from coyote_mw import Client, Coyote, Request, by_header, route
from coyote_mw.cli.explain import print_explanation
from sample_apps.flask_host import create_app
from tests.support import django_setup  # noqa: F401  (sets Django up)
from tests.support.ledger import LedgerUpstream
from tests.support.registration import AUTH, TOKEN, api, leader

__all__ = ["api", "leader"]  # the fixtures, shared

SALOON = "sample_apps.deadwood.saloon:Saloon"


def explain(client: Any, path: str, **params: Any) -> Any:
    r = client.get("/_coyote/explain", params={"path": path, **params}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def test_a_trailing_slash_is_a_404_explained_with_the_route_it_nearly_matched(api: Any) -> None:
    verdict = explain(api, "/drinks/")
    assert api.get("/drinks/").status_code == 404  # what the request itself gets
    assert verdict["verdict"] == "error"
    assert (verdict["status"], verdict["error"]) == (404, "No matching route")
    assert verdict["canonical"] == "/drinks/" and verdict["lookup"] == "/drinks/"
    assert verdict["topology"] == {
        "name": "default",
        "why": "default",
        "detail": "the middleware routes in the default topology",
    }
    closest, other = verdict["near"]
    assert closest == {
        "method": "GET",
        "path": "/drinks",
        "service": "deadwood.saloon",
        "topology": "default",
        "kind": "trailing-slash",
        "why": "the route has no trailing slash",
    }
    assert other["path"] == "/drinks/{id:int}" and other["kind"] == "convert"
    assert "closest: GET /drinks (the route has no trailing slash)" in verdict["detail"]
    assert verdict["route"] is None and verdict["next"] is None and verdict["allowed"] == []


@pytest.mark.parametrize(
    ("path", "kind", "why"),
    [
        ("/Drinks", "case", "'Drinks' is 'drinks' in the route: paths are case-sensitive"),
        ("/drinks/rum", "convert", "{id:int} does not take 'rum'"),
        ("/drink/3", "spelling", "'drink' is not 'drinks'"),
        ("/tab/", "trailing-slash", "the route has no trailing slash"),
    ],
)
def test_near_misses_say_what_differs(api: Any, path: str, kind: str, why: str) -> None:
    verdict = explain(api, path)
    assert verdict["status"] == 404
    assert (verdict["near"][0]["kind"], verdict["near"][0]["why"]) == (kind, why)


def test_a_match_is_explained_with_route_params_and_instance_and_not_dispatched(
    api: Any, leader: Coyote
) -> None:
    served: list[str] = []

    class Bar(Client):
        service = "bar"

        @route("POST", "/bar/{item}/{n:int}")
        def order(self, request: Request) -> str:
            served.append(request.params["item"])
            return "poured"

    leader.register(Bar())
    verdict = explain(api, "/bar/rye/2?neat=1", method="post")
    assert verdict["method"] == "POST" and verdict["verdict"] == "dispatch"
    assert verdict["status"] is None and verdict["error"] is None
    assert verdict["route"] == {
        "method": "POST",
        "path": "/bar/{item}/{n:int}",
        "service": "bar",
        "cast": False,
        "params": {"item": "rye", "n": 2},
    }
    assert verdict["next"] == {"instance": "main", "url": None, "kind": "function", "health": None}
    assert verdict["instances"] == [verdict["next"]]
    assert verdict["detail"] == "bar answers it (instance main)"
    assert served == []  # explained, not served
    assert api.post("/bar/rye/2").text == "poured" and served == ["rye"]


def test_a_cast_is_explained_as_202_and_a_wrong_method_as_405(api: Any) -> None:
    cast = explain(api, "/tab", method="POST")
    assert cast["verdict"] == "dispatch" and cast["status"] == 202
    assert cast["route"]["cast"] is True
    wrong = explain(api, "/tab", method="DELETE")
    assert (wrong["status"], wrong["error"]) == (405, "Method not allowed")
    assert wrong["allowed"] == ["GET", "HEAD", "POST"]
    assert api.request("DELETE", "/tab").headers["allow"] == "GET, HEAD, POST"  # the same


def test_the_next_instance_is_peeked_without_taking_a_round_robin_turn(
    api: Any, leader: Coyote
) -> None:
    with LedgerUpstream() as one, LedgerUpstream() as two:
        for name, up in (("u1", one), ("u2", two)):
            leader.register_remote(up.url, routes=[("GET", "/rr")], service="rr", instance=name)
        assert explain(api, "/rr")["next"]["instance"] == "u1"
        assert explain(api, "/rr")["next"]["instance"] == "u1"  # still: no turn was taken
        assert api.get("/rr").status_code == 200
        assert (len(one.requests), len(two.requests)) == (1, 0)  # the one explained
        following = explain(api, "/rr")
        assert following["next"] == {
            "instance": "u2",
            "url": two.url,
            "kind": "remote",
            "health": {
                "ejected": False,
                "consecutive_failures": 0,
                "ejected_until": None,
                "ejections": 0,
            },
        }
        assert [i["instance"] for i in following["instances"]] == ["u1", "u2"]
        assert api.get("/rr").status_code == 200 and len(two.requests) == 1


def test_ejected_instances_are_shown_and_none_left_is_503() -> None:
    coyote = Coyote(token=TOKEN, eject_after=1, base_ejection_time=60, max_ejection_percent=100)
    http = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
    try:
        with LedgerUpstream() as one, LedgerUpstream() as two:
            for name, up in (("u1", one), ("u2", two)):
                coyote.register_remote(
                    up.url, routes=[("GET", "/status/{code}")], service="up", instance=name
                )
            assert http.get("/status/503").status_code == 503  # u1 failed: ejected
            verdict = explain(http, "/status/200")
            assert verdict["next"]["instance"] == "u2"
            ejected = {i["instance"]: i["health"]["ejected"] for i in verdict["instances"]}
            assert ejected == {"u1": True, "u2": False}
            assert http.get("/status/503").status_code == 503  # u2 too
            verdict = explain(http, "/status/200")
            assert verdict["verdict"] == "dispatch" and verdict["next"] is None
            assert (verdict["status"], verdict["error"]) == (503, "No healthy instance")
            assert http.get("/status/200").status_code == 503  # what a request gets
            out = io.StringIO()
            print_explanation(verdict, out)
            assert out.getvalue().count("ejected until") == 2
    finally:
        http.close()
        coyote.close()


def test_a_target_over_max_target_is_414_and_a_bad_path_400(api: Any, leader: Coyote) -> None:
    leader.configure(max_target=64)  # after the middleware was built: it sees it
    long = explain(api, "/drinks/" + "1" * 60)
    assert (long["status"], long["error"]) == (414, "Request target too long")
    assert long["topology"] is None and long["lookup"] is None  # refused before any lookup
    assert api.get("/drinks/" + "1" * 60).status_code == 414
    bad = explain(api, "/a/../../b")
    assert (bad["status"], bad["error"]) == (400, "Bad request path")
    assert bad["canonical"] is None


def test_the_operator_prefix_is_explained_as_its_own(api: Any) -> None:
    verdict = explain(api, "/_coyote/routes")
    assert verdict["verdict"] == "operator" and verdict["status"] is None
    assert verdict["detail"] == "under /_coyote: the operator API answers it"


def test_explain_speaks_for_the_middleware_that_got_it_mount_host_and_precedence(
    serve: Any, host_app: Any
) -> None:
    coyote = Coyote(token=TOKEN)
    try:
        coyote.register(_saloon())
        mounted = serve(coyote, host_app, mount="/saloon")
        inside = explain(mounted, "/saloon/drinks/3")
        assert inside["mount"] == "/saloon" and inside["lookup"] == "/drinks/3"
        assert inside["verdict"] == "dispatch" and inside["route"]["params"] == {"id": 3}
        outside = explain(mounted, "/drinks/3")
        assert outside["verdict"] == "host" and outside["detail"].startswith("outside the mount")
        assert mounted.get("/drinks/3").text == "host 404"  # the host answered it

        standalone = serve(coyote, None, mount="/saloon", topology="blue")
        alone = explain(standalone, "/elsewhere")
        assert (alone["status"], alone["topology"]["name"]) == (404, "blue")
        assert standalone.get("/elsewhere").json()["topology"] == "blue"

        host_first = serve(coyote, host_app, precedence="host")
        missed = explain(host_first, "/drinks")
        assert missed["verdict"] == "dispatch" and missed["precedence"] == "host"
        assert missed["detail"].startswith("the host app answers first")
        nothing = explain(host_first, "/drink")
        assert nothing["verdict"] == "host" and nothing["near"][0]["path"] == "/drinks"
    finally:
        coyote.close()


def test_the_topology_is_explained_given_by_header_or_default(serve: Any) -> None:
    coyote = Coyote(token=TOKEN)
    try:
        coyote.register(_saloon(), topology="blue")
        coyote.register(_saloon())
        client = serve(coyote, topology=by_header(allowed={"blue"}))
        chosen = explain(client, "/drinks/1", header="X-Coyote-Topology: blue")
        assert chosen["topology"] == {
            "name": "blue",
            "why": "header",
            "detail": "x-coyote-topology: blue",
        }
        refused = explain(client, "/drinks/1", header="x-coyote-topology:red")
        assert refused["topology"]["name"] == "default"
        assert (
            refused["topology"]["why"] == "default"
            and "not allowed" in refused["topology"]["detail"]
        )
        absent = explain(client, "/drinks/1")
        assert absent["topology"]["why"] == "default"
        given = explain(client, "/drinks/1", topology="blue")
        assert given["topology"]["why"] == "given" and given["verdict"] == "dispatch"
        elsewhere = explain(client, "/drinks/1", topology="green")
        assert elsewhere["status"] == 404
        assert elsewhere["near"][0]["kind"] == "topology"
        assert elsewhere["near"][0]["topology"] in ("blue", "default")

        fixed = serve(coyote, topology="blue")
        assert explain(fixed, "/")["topology"]["why"] == "mount"

        def resolver(carrier: Any) -> str:
            return "blue"

        chooser = serve(coyote, topology=resolver)
        assert explain(chooser, "/")["topology"]["why"] == "resolver"
    finally:
        coyote.close()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({}, "path= is required"),
        ({"path": "/", "method": "G T"}, "not an HTTP method token"),
        ({"path": ["/", "/x"]}, "path= is given twice"),
        ({"path": "/", "header": "no-colon"}, "use header=name:value"),
        ({"path": "/", "pth": "/"}, "unknown parameter 'pth'"),
    ],
)
def test_a_malformed_explain_request_is_400_saying_what_is_wrong(
    api: Any, query: dict[str, Any], says: str
) -> None:
    r = api.get("/_coyote/explain", params=query, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid explain request" and says in r.json()["detail"]


def test_explain_needs_the_token_and_takes_get_and_head(api: Any) -> None:
    assert api.get("/_coyote/explain", params={"path": "/"}).status_code == 401
    wrong = {"authorization": "Bearer " + "x" * 32}
    assert api.get("/_coyote/explain", params={"path": "/"}, headers=wrong).status_code == 403
    r = api.post("/_coyote/explain", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_explain_under_a_flask_host() -> None:
    app = create_app(COYOTE_TOKEN=TOKEN)
    try:
        r = app.test_client().get("/_coyote/explain?path=/drinks/", headers=AUTH)
        assert r.status_code == 200
        assert r.get_json()["near"][0]["path"] == "/drinks"
    finally:
        app.extensions["coyote"].close()


@override_settings(COYOTE={"CLIENTS": [SALOON], "TOKEN": TOKEN})
def test_explain_under_a_django_host() -> None:
    r = DjangoClient().get(
        "/_coyote/explain", {"path": "/drinks/2"}, HTTP_AUTHORIZATION=AUTH["authorization"]
    )
    assert r.status_code == 200
    verdict = json.loads(r.content)
    assert verdict["route"]["params"] == {"id": 2}
    assert verdict["route"]["service"] == "deadwood.saloon"


def test_the_explanation_prints_as_lines(api: Any) -> None:
    out = io.StringIO()
    print_explanation(explain(api, "/drinks/"), out)
    head, *lines = out.getvalue().splitlines()
    assert head == "GET /drinks/ -> 404 No matching route"
    assert any(
        line.split()[:5] == ["near", "miss", "GET", "/drinks", "deadwood.saloon"] for line in lines
    )
    out = io.StringIO()
    print_explanation(explain(api, "/drinks/3"), out)
    head, *lines = out.getvalue().splitlines()
    assert head == "GET /drinks/3 -> deadwood.saloon (GET /drinks/{id:int})"
    assert ["params", "id=3"] in [line.split() for line in lines]
    with pytest.raises(ValueError, match="not an explanation"):
        print_explanation([], io.StringIO())


def _saloon() -> Any:
    from sample_apps.deadwood.saloon import Saloon

    return Saloon()


def test_near_misses_of_a_slash_or_a_path_route_and_the_closest_spelling_first() -> None:
    from coyote_mw.http.paths import canonicalize
    from coyote_mw.routing.near import near_misses
    from coyote_mw.routing.table import RouteTable

    table = RouteTable()
    routes = [("GET", "/dir/"), ("GET", "/static/{rest:path}"), ("GET", "/items13/{n:int}")]
    table.register("s", [*routes, ("GET", "/items3/{n:int}")], lambda r: None)

    def near(path: str) -> list[tuple[str, str, str]]:
        found = near_misses(table, "default", "GET", canonicalize(path))
        return [(n.path, n.kind, n.why) for n in found]

    assert near("/dir") == [("/dir/", "trailing-slash", "the route ends with a slash")]
    assert near("/static/") == [
        ("/static/{rest:path}", "convert", "{rest:path} needs a value: nothing is left of the path")
    ]
    assert [path for path, _, _ in near("/item3/1")] == ["/items3/{n:int}", "/items13/{n:int}"]
    assert near("/other/thing") == []
