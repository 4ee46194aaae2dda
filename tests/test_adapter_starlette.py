"""Starlette: the middleware entry, through Starlette's TestClient and a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from coyote_mw.adapters.starlette import CoyoteMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from coyote_mw import Client, Coyote, Request, route
from sample_apps.deadwood.saloon import STORY
from sample_apps.starlette_host import create_app
from tests.support.processes import running


class Trouble(Client):
    @route("GET", "/fail")
    async def fail(self, request: Request) -> str:
        raise RuntimeError("kaput")

    @route("GET", "/hold")
    async def hold(self, request: Request) -> str:
        await asyncio.sleep(0.5)
        return "held"


def test_saloon_host_route_and_fall_through_with_the_test_client() -> None:
    with TestClient(create_app()) as client:
        assert client.get("/").text == STORY
        assert client.get("/host").status_code == 200
        r = client.get("/no/such/route")
        assert r.status_code == 404 and r.text == "Not Found"  # Starlette's own 404


def test_mounted_coyote_answers_its_errors_and_the_bounds() -> None:
    coyote = Coyote(concurrency=1, queue=0)
    coyote.register(Trouble())
    app = Starlette(middleware=[Middleware(CoyoteMiddleware, coyote=coyote, mount="/gw")])
    with TestClient(app) as client:
        assert client.get("/gw/nothing").json()["error"] == "No matching route"
        r = client.post("/gw/fail")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        assert client.get("/gw/fail").json() == {"error": "Routing error"}

        async def two_at_once() -> list[int]:
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(c.get("/gw/hold"), c.get("/gw/hold"))
            return sorted(r.status_code for r in rs)

        assert asyncio.run(two_at_once()) == [200, 503]
    coyote.close()


def test_relay_and_sub_apps_follow_the_host_lifespan() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def sub_lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("sub up")
        yield
        events.append("sub down")

    coyote = Coyote()
    coyote.register(Starlette(lifespan=sub_lifespan), routes=[("GET", "/sub")], service="sub")
    app = Starlette(middleware=[Middleware(CoyoteMiddleware, coyote=coyote)])
    with TestClient(app):
        assert events == ["sub up"]
    assert events == ["sub up", "sub down"]
    coyote.close()


def test_starlette_host_under_a_real_uvicorn() -> None:
    with running(["uvicorn", "sample_apps.starlette_host:app"]) as url:
        assert httpx.get(url + "/").text == STORY
        assert httpx.get(url + "/host").status_code == 200
        assert httpx.get(url + "/files/%zz").json()["error"] == "Bad request path"
        assert httpx.get(url + "/no/such/route").status_code == 404
