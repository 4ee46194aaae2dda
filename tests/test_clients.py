"""Clients in both shapes, whole ASGI/WSGI apps in process, and Coyote.call / cast."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route as StarletteRoute

# Imported here, at collection: importing in a test while relay threads run can trip
# CPython 3.11's "AST constructor recursion depth mismatch" in pytest's rewriting.
from starlette.testclient import TestClient

from coyote_mw import (
    Client,
    Coyote,
    InvalidRoute,
    MethodNotAllowed,
    NoMatchingRoute,
    Request,
    RouteConflict,
    RoutingError,
    route,
)
from sample_apps.deadwood.saloon import STORY, Saloon


class SeedSaloon(Client):
    """The seed's shape: a routes list and one ``call`` override."""

    service = "seed.saloon"
    routes = [("GET", "/"), ("GET", "/drinks/{name}"), route("POST", "/tab", cast=True)]

    def __init__(self) -> None:
        self.tab: list[str] = []
        self.tabbed = threading.Event()

    def call(self, request: Request) -> Any:
        match (request.method, request.route):
            case ("GET", "/"):
                return STORY
            case ("GET", "/drinks/{name}"):
                return {"drink": request.params["name"]}
            case ("POST", "/tab"):
                self.tab.append(request.read().decode())
                self.tabbed.set()
        return None


def test_seed_shape_client_routes_go_to_call(serve: Any, coyote: Coyote) -> None:
    seed = SeedSaloon()
    coyote.register(seed)
    client = serve(coyote)
    assert client.get("/").text == STORY
    assert client.get("/drinks/whiskey").json() == {"drink": "whiskey"}
    assert client.post("/tab", content=b"one whiskey").status_code == 202
    assert seed.tabbed.wait(5)
    assert seed.tab == ["one whiskey"]


def test_client_without_call_override_is_a_routing_error(serve: Any, coyote: Coyote) -> None:
    class Forgetful(Client):
        routes = [("GET", "/forgot")]

    coyote.register(Forgetful())
    assert serve(coyote).get("/forgot").status_code == 502


def test_client_registers_with_several_leaders_in_a_topology() -> None:
    leaders = [Coyote(), Coyote()]
    regs = Saloon().register_with(*leaders, topology="deadwood")
    assert [r.topology for r in regs] == ["deadwood", "deadwood"]
    for leader in leaders:
        assert leader.call("GET", "/", topology="deadwood").text == STORY
        with pytest.raises(NoMatchingRoute):
            leader.call("GET", "/")
        leader.close()


def test_call_and_acall_dispatch_without_http(coyote: Coyote, loop_thread: Any) -> None:
    coyote.register(SeedSaloon())
    assert coyote.call("GET", "/drinks/rye").json() == {"drink": "rye"}
    assert loop_thread.run(coyote.acall("GET", "/drinks/gin")).json() == {"drink": "gin"}
    with pytest.raises(NoMatchingRoute) as missing:
        coyote.call("GET", "/nope")
    assert missing.value.status == 404
    with pytest.raises(MethodNotAllowed) as wrong:
        coyote.call("DELETE", "/")
    assert wrong.value.allowed == ["GET", "HEAD"]


def test_call_raises_routing_error_when_the_handler_fails(coyote: Coyote) -> None:
    class Broken(Client):
        @route("GET", "/broken")
        def broken(self, request: Request) -> str:
            raise ValueError("nope")

    coyote.register(Broken())
    with pytest.raises(RoutingError) as err:
        coyote.call("GET", "/broken")
    assert err.value.status == 502
    assert isinstance(err.value.__cause__, ValueError)


def test_cast_runs_the_handler_in_the_background(coyote: Coyote) -> None:
    seed = SeedSaloon()
    coyote.register(seed)
    assert coyote.cast("POST", "/tab", body="a beer") is None
    assert seed.tabbed.wait(5)
    assert seed.tab == ["a beer"]


def test_conflicting_service_is_refused_and_table_unchanged(coyote: Coyote) -> None:
    coyote.register(Saloon())
    before = coyote.table.routes()
    with pytest.raises(RouteConflict) as conflict:
        coyote.register(SeedSaloon())
    assert conflict.value.status == 409
    assert "deadwood.saloon" in str(conflict.value)
    assert coyote.table.routes() == before
    assert coyote.call("GET", "/").text == STORY


def test_bad_route_is_refused_with_a_message_saying_how_to_fix_it(coyote: Coyote) -> None:
    class Bad(Client):
        routes = [("GET", "/ok"), ("GET", "/items/{id:integer}")]

    with pytest.raises(InvalidRoute, match="unknown convertor 'integer'; use one of"):
        coyote.register(Bad())
    assert coyote.table.routes() == []


def test_registering_a_non_client_without_routes_explains_itself(coyote: Coyote) -> None:
    with pytest.raises(TypeError, match="pass routes="):
        coyote.register(object())


# -- whole apps in process -------------------------------------------------------------

lifespan_events: list[str] = []


@contextlib.asynccontextmanager
async def starlette_lifespan(app: Starlette) -> AsyncIterator[None]:
    lifespan_events.append("startup")
    yield
    lifespan_events.append("shutdown")


async def starlette_hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"starlette {request.path_params['name']} {request.url.path}")


async def starlette_upload(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def make_starlette() -> Starlette:
    return Starlette(
        routes=[
            StarletteRoute("/api/hello/{name}", starlette_hello),
            StarletteRoute("/api/upload", starlette_upload, methods=["POST"]),
        ],
        lifespan=starlette_lifespan,
    )


def make_flask() -> Flask:
    app = Flask("flask_sub")

    @app.get("/legacy/hello/<name>")
    def hello(name: str) -> str:
        return f"flask {name} {flask_request.path}"

    @app.post("/legacy/upload")
    def upload() -> dict[str, int]:
        return {"size": len(flask_request.get_data())}

    return app


@pytest.fixture
def apps(coyote: Coyote) -> Coyote:
    lifespan_events.clear()
    coyote.register(
        make_starlette(),
        routes=[("GET", "/api/hello/{name}"), ("POST", "/api/upload")],
        service="starlette-sub",
    )
    coyote.register(
        make_flask(),
        routes=[("GET", "/legacy/hello/{name}"), ("POST", "/legacy/upload")],
        service="flask-sub",
    )
    return coyote


def test_asgi_and_wsgi_apps_are_served_in_process_under_both_hosts(
    apps: Coyote, serve: Any
) -> None:
    client = serve(apps)
    assert client.get("/api/hello/bob").text == "starlette bob /api/hello/bob"
    assert client.get("/legacy/hello/ann").text == "flask ann /legacy/hello/ann"
    assert client.post("/api/upload", content=b"x" * 300_000).json() == {"size": 300_000}
    assert client.post("/legacy/upload", content=b"y" * 300_000).json() == {"size": 300_000}


def test_sub_apps_see_the_mount_as_root_path(apps: Coyote, serve: Any) -> None:
    client = serve(apps, mount="/gw")
    assert client.get("/gw/api/hello/bob").text == "starlette bob /gw/api/hello/bob"
    assert client.get("/gw/legacy/hello/ann").text == "flask ann /legacy/hello/ann"


def test_asgi_sub_app_lifespan_runs_with_the_host(apps: Coyote, loop_thread: Any) -> None:
    app = apps.asgi()
    sent: list[str] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, str]:
        return inbox.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    loop_thread.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert lifespan_events == ["startup", "shutdown"]


def test_call_reaches_whole_apps_too(apps: Coyote) -> None:
    assert apps.call("GET", "/api/hello/cy").text == "starlette cy /api/hello/cy"
    assert apps.call("POST", "/legacy/upload", body=b"abc").json() == {"size": 3}


def test_host_lifespan_passes_through_with_coyote_first_up_and_last_down(
    coyote: Coyote,
) -> None:
    @contextlib.asynccontextmanager
    async def host_lifespan(app: Starlette) -> AsyncIterator[None]:
        lifespan_events.append("host startup")
        yield
        lifespan_events.append("host shutdown")

    lifespan_events.clear()
    coyote.register(make_starlette(), routes=[("GET", "/api/hello/{name}")], service="sub")
    host = Starlette(lifespan=host_lifespan)
    with TestClient(coyote.asgi(host)) as client:
        lifespan_events.append("serving")
        assert client.get("/api/hello/x").status_code == 200
    # "startup"/"shutdown" are the sub-app's: up before the host, down after it
    assert lifespan_events == ["startup", "host startup", "serving", "host shutdown", "shutdown"]
