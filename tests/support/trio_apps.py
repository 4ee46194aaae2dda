"""Apps for the trio tests, served by hypercorn on trio:

python tests/support/hypercorn_cli.py -k trio tests.support.trio_apps:app
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from coyote_mw.adapters.starlette import CoyoteMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from coyote_mw import Client, Coyote, Request, Response, route
from sample_apps.deadwood.saloon import Saloon
from sample_apps.starlette_host import host

casts: list[str] = []
cast_done = threading.Event()


class OnTrio(Client):
    @route("POST", "/sync/echo")
    def sync_echo(self, request: Request) -> bytes:
        return b"sync " + request.read()

    @route("POST", "/async/echo")
    async def async_echo(self, request: Request) -> bytes:
        await anyio.sleep(0.01)  # trio's own sleep, through anyio
        return b"async " + await request.aread()

    @route("GET", "/slow")
    async def slow(self, request: Request) -> str:
        await anyio.sleep(10)
        return "too late"

    @route("GET", "/slow-sync")
    def slow_sync(self, request: Request) -> str:
        time.sleep(3)
        return "too late"

    @route("GET", "/fail")
    def fail(self, request: Request) -> str:
        raise ValueError("kaput")

    @route("GET", "/stream/sync")
    def stream_sync(self, request: Request) -> Response:
        return Response(iter([b"one,", b"two"]), media_type="text/plain")

    @route("GET", "/stream/async")
    def stream_async(self, request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            yield b"three,"
            yield b"four"

        return Response(parts(), media_type="text/plain")

    @route("POST", "/cast", cast=True)
    def cast(self, request: Request) -> None:
        casts.append(request.read().decode())
        cast_done.set()

    @route("GET", "/active")
    async def active(self, request: Request) -> dict[str, int]:
        return {"active": coyote.relay.active}  # this request's slot included

    @route("GET", "/casts")
    def seen(self, request: Request) -> dict[str, Any]:
        cast_done.wait(5)
        return {"casts": casts}


async def sub_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"sub-app"})


TOKEN = "t" * 32
coyote = Coyote(timeout=1, token=TOKEN, metrics="open")
coyote.register(Saloon())
coyote.register(OnTrio())
coyote.register(sub_app, routes=[("GET", "/app")], service="sub-app", interface="asgi")
coyote.register_remote("http://127.0.0.1:9", routes=[("GET", "/remote")], service="remote")

# a Starlette host running on trio, coyote in its middleware list
app = Starlette(
    routes=[Route("/host", host)], middleware=[Middleware(CoyoteMiddleware, coyote=coyote)]
)

# Starlette sends no lifespan to a mounted app: coyote meets trio at its first request
mounted = Starlette(routes=[Route("/host", host), Mount("/saloon", app=coyote.asgi())])
