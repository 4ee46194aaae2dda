"""The servers of benchmarks/inprocess.py: one async handler, served several ways.

The ``*_routes`` apps serve it from a table of ``ROUTES`` routes, as an app of some size
has, the handler's in the middle of the host's list: a third static paths, a third
``/api/v{i}/items/{id:int}``, a third ``/users{i}/{name}/profile`` (as in
``benchmarks/router_lookup.py``)."""

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


ROUTES = 31  # the handler's and 30 others, 15 on either side of it (inprocess.py says 31)


def _others() -> list[str]:
    kinds = ("/static{i}", "/api/v{i}/items/{{id:int}}", "/users{i}/{{name}}/profile")
    return [kinds[i % 3].format(i=i) for i in range(ROUTES - 1)]


class Others(Client):
    """The other routes of the ``*_routes`` apps."""

    routes = [("GET", pattern) for pattern in _others()]

    async def call(self, request: Request) -> Response:
        return Response(b"another route", media_type="text/plain")


def _coyote(metrics: str = "token", others: bool = False) -> Coyote:
    access_log_from_env()
    coyote = Coyote(metrics=metrics)
    coyote.register(Hello())
    if others:
        coyote.register(Others())
    return coyote


def _native_routes() -> Starlette:
    others = [Route(pattern, other) for pattern in _others()]
    half = len(others) // 2
    return Starlette(routes=[*others[:half], Route("/hello/{name}", hello_native), *others[half:]])


def __getattr__(name: str) -> Any:
    builders = {
        "native_app": lambda: Starlette(routes=[Route("/hello/{name}", hello_native)]),
        "coyote_app": lambda: _coyote().asgi(),
        "coyote_app_metrics_off": lambda: _coyote(metrics="off").asgi(),
        "coyote_host_app": lambda: _coyote().asgi(Starlette(routes=[Route("/other", other)])),
        "native_app_routes": _native_routes,
        "coyote_app_routes": lambda: _coyote(others=True).asgi(),
    }
    if name in builders:
        app = builders[name]()
        globals()[name] = app
        return app
    raise AttributeError(name)
