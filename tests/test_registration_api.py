"""The registration API: auth, strict payloads, leases, and refusals that change nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon
from tests.support.registration import AUTH, TOKEN, api, leader, payload

__all__ = ["api", "leader"]  # the fixtures


def test_an_https_instance_registers(api: Any, leader: Coyote) -> None:
    r = api.post("/_coyote/registrations", json=payload(url="https://127.0.0.1:9"), headers=AUTH)
    assert r.status_code == 201, r.text
    (reg,) = [x for x in leader.table.registrations() if x.service == "remote.saloon"]
    assert {h.url for h in reg.handlers.values()} == {"https://127.0.0.1:9"}  # type: ignore[attr-defined]


def test_register_heartbeat_list_and_deregister(api: Any, leader: Coyote) -> None:
    r = api.post("/_coyote/registrations", json=payload(), headers=AUTH)
    assert r.status_code == 201, r.text
    lease = r.json()["lease"]
    assert r.json()["ttl"] == 5
    routes = api.get("/_coyote/routes", headers=AUTH).json()
    assert {"method": "GET", "path": "/remote", "service": "remote.saloon"}.items() <= next(
        x for x in routes if x["path"] == "/remote"
    ).items()
    assert api.request("PUT", f"/_coyote/registrations/{lease}", headers=AUTH).json() == {
        "lease": lease,
        "ttl": 5,
    }
    assert api.request("DELETE", f"/_coyote/registrations/{lease}", headers=AUTH).status_code == 204
    assert api.request("PUT", f"/_coyote/registrations/{lease}", headers=AUTH).status_code == 404
    assert api.request("DELETE", f"/_coyote/registrations/{lease}", headers=AUTH).status_code == 404
    assert {x["service"] for x in leader.table.routes()} == {"deadwood.saloon"}


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "Authorization required"),
        ({"authorization": "Basic abc"}, 401, "Authorization required"),
        ({"authorization": "Bearer wrong-token-wrong-token"}, 403, "Invalid token"),
    ],
)
def test_without_the_right_token_nothing_happens(
    api: Any, leader: Coyote, headers: dict[str, str], status: int, error: str
) -> None:
    before = leader.table.routes()
    r = api.post("/_coyote/registrations", json=payload(), headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, error)
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/_coyote/routes", headers=headers).status_code == status
    assert leader.table.routes() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (payload(service=""), "service"),
        (payload(service=5), "service"),
        (payload(instance="a b"), "instance"),
        (payload(url="ftp://x"), "url"),
        (payload(url="https://user:secret@127.0.0.1:9"), "url"),
        (payload(url="http://127.0.0.1:99999"), "url"),
        (payload(url="http://127.0.0.1:9?x=1"), "url"),
        (payload(url="not a url"), "url"),
        (payload(routes=[]), "routes"),
        (payload(routes=[{"method": "G ET", "path": "/x"}]), "routes.0.method"),
        (payload(routes=[{"method": "GET", "path": "x"}]), "routes.0.path"),
        (payload(routes=[{"method": "GET", "path": "/{id:nope}"}]), "routes.0.path"),
        (payload(routes=[{"method": "GET", "path": "/x", "extra": 1}]), "routes.0.extra"),
        (payload(ttl=0), "ttl"),
        (payload(ttl=3601), "ttl"),
        (payload(ttl="10"), "ttl"),
        (payload(surprise=True), "surprise"),
        ({"service": "x"}, "instance"),
    ],
)
def test_malformed_payloads_are_400_naming_the_field(
    api: Any, leader: Coyote, body: dict[str, Any], field: str
) -> None:
    before = leader.table.routes()
    r = api.post("/_coyote/registrations", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Invalid registration"
    assert field in [d["field"] for d in r.json()["detail"]]
    assert leader.table.routes() == before


def test_body_that_is_not_json_or_too_large(api: Any, leader: Coyote) -> None:
    r = api.post("/_coyote/registrations", content=b"{nope", headers=AUTH)
    assert r.status_code == 400 and "not JSON" in r.json()["detail"][0]
    huge = json.dumps(payload(service="x" * 70_000)).encode()
    r = api.post("/_coyote/registrations", content=huge, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "Payload too large"
    assert {x["service"] for x in leader.table.routes()} == {"deadwood.saloon"}


def test_hijack_attempts_are_refused_and_change_nothing(api: Any, leader: Coyote) -> None:
    before = leader.table.routes()
    taken = payload(routes=[{"method": "GET", "path": "/"}])  # the Saloon's
    r = api.post("/_coyote/registrations", json=taken, headers=AUTH)
    assert r.status_code == 409
    assert r.json()["held_by"] == "deadwood.saloon"
    api_route = payload(routes=[{"method": "POST", "path": "/_coyote/registrations"}])
    r = api.post("/_coyote/registrations", json=api_route, headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (403, "Reserved path")
    mixed = payload(routes=[{"method": "GET", "path": "/fine"}, {"method": "GET", "path": "/"}])
    assert api.post("/_coyote/registrations", json=mixed, headers=AUTH).status_code == 409
    assert leader.table.routes() == before
    assert api.get("/").status_code == 200


def test_api_methods_and_unknown_endpoints(api: Any) -> None:
    r = api.get("/_coyote/registrations", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert api.get("/_coyote/nope", headers=AUTH).status_code == 404


def test_api_is_off_without_a_token() -> None:
    coyote = Coyote()
    with httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t") as c:
        r = c.post("/_coyote/registrations", json=payload(), headers=AUTH)
    assert r.json()["error"] == "No matching route"
    with pytest.raises(ValueError, match="at least 16"):
        Coyote(token="short")
    coyote.close()


def test_unrenewed_lease_expires_within_ttl_plus_one_second(leader: Coyote) -> None:
    with httpx.Client(transport=httpx.WSGITransport(leader.wsgi()), base_url="http://t") as c:
        r = c.post("/_coyote/registrations", json=payload(ttl=1), headers=AUTH)
        assert r.status_code == 201
        granted = time.monotonic()
        while any(x["path"] == "/remote" for x in leader.table.routes()):
            assert time.monotonic() - granted < 2.0, "lease outlived ttl + 1 s"
            time.sleep(0.05)
        assert time.monotonic() - granted >= 1.0
        lease = r.json()["lease"]
        assert c.put(f"/_coyote/registrations/{lease}", headers=AUTH).status_code == 404


def test_a_stalled_store_does_not_stall_requests_on_the_loop(loop_thread: Any) -> None:
    """Redis that accepts connections but never answers: registrations wait on it (in a
    thread), requests for the routes in hand go on being served."""
    import asyncio
    import socket
    import time

    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(100)  # never accepted, never answered
    url = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
    coyote = Coyote(token=TOKEN, store=url)
    coyote.register(Saloon())
    app = coyote.asgi()

    async def scenario() -> tuple[int, float, int]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            stalled = asyncio.ensure_future(
                c.post("/_coyote/registrations", json=payload(), headers=AUTH)
            )
            await asyncio.sleep(0.1)
            start = time.perf_counter()
            served = await c.get("/")
            took = time.perf_counter() - start
            refused = await stalled
        return served.status_code, took, refused.status_code

    served, took, refused = loop_thread.run(scenario())
    assert served == 200 and took < 0.5
    assert refused == 503  # once the store's timeout is up: "Store unavailable"
    coyote.close()
    blackhole.close()


def test_routes_under_the_api_prefix_are_refused_however_they_are_registered(
    leader: Coyote,
) -> None:
    from coyote_mw import Client, route
    from coyote_mw.errors import ReservedRoute

    class Hijack(Client):
        @route("GET", "/_coyote/routes")
        def listing(self, request: Any) -> str:
            return "hijacked"

    def app(environ: Any, start_response: Any) -> list[bytes]:
        return [b"hijacked"]

    before = leader.table.routes()
    attempts = [
        lambda: leader.register(Hijack()),
        lambda: leader.register(app, routes=[("GET", "/_coyote/ready")], interface="wsgi"),
        lambda: leader.register_remote(
            "http://127.0.0.1:9", routes=[("GET", "/_coyote/{x}")], service="s"
        ),
        lambda: leader.table.register("s", [("GET", "/_coyote/health")], lambda r: None),
    ]
    for attempt in attempts:
        with pytest.raises(ReservedRoute, match="registration API's"):
            attempt()
    assert leader.table.routes() == before
    # the reservation follows the prefix
    leader.configure(prefix="/_ops")
    leader.table.register("s", [("GET", "/_coyote/health")], lambda r: None)
    with pytest.raises(ReservedRoute):
        leader.table.register("s", [("GET", "/_ops/health")], lambda r: None)


def test_without_the_api_no_prefix_is_reserved() -> None:
    coyote = Coyote()
    coyote.table.register("s", [("GET", "/_coyote/x")], lambda r: None)
    assert [r["path"] for r in coyote.table.routes()] == ["/_coyote/x"]
    coyote.close()
