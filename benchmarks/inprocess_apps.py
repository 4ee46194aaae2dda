"""The servers of benchmarks/inprocess.py: one async handler, served four ways."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks.harness import access_log_from_env
from coyote_mw import Client, Coyote, Request, Response, route


async def hello_native(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("hello " + request.path_params["name"])


class Hello(Client):
    @route("GET", "/hello/{name}")
    async def hello(self, request: Request) -> Response:
        return Response(("hello " + request.params["name"]).encode(), media_type="text/plain")


async def other(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("the host's own route")


def _coyote(metrics: str = "token") -> Coyote:
    access_log_from_env()
    coyote = Coyote(metrics=metrics)
    coyote.register(Hello())
    return coyote


def __getattr__(name: str) -> Any:
    builders = {
        "native_app": lambda: Starlette(routes=[Route("/hello/{name}", hello_native)]),
        "coyote_app": lambda: _coyote().asgi(),
        "coyote_app_metrics_off": lambda: _coyote(metrics="off").asgi(),
        "coyote_host_app": lambda: _coyote().asgi(Starlette(routes=[Route("/other", other)])),
    }
    if name in builders:
        app = builders[name]()
        globals()[name] = app
        return app
    raise AttributeError(name)
