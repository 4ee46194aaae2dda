"""The servers of benchmarks/wsgi.py: one handler, served three ways under gunicorn."""

from __future__ import annotations

from typing import Any

from flask import Flask

from benchmarks.harness import access_log_from_env
from coyote_mw import Client, Coyote, Request, Response, route


def _flask(with_hello: bool) -> Flask:
    app = Flask("bench")

    if with_hello:

        @app.get("/hello/<name>")
        def hello(name: str) -> tuple[str, int, dict[str, str]]:
            return "hello " + name, 200, {"content-type": "text/plain"}

    @app.get("/other")
    def other() -> str:
        return "the host's own route"

    return app


class Hello(Client):
    @route("GET", "/hello/{name}")
    def hello(self, request: Request) -> Response:
        return Response(("hello " + request.params["name"]).encode(), media_type="text/plain")


class Elsewhere(Client):
    """Routes coyote has, none of them the benchmarked path: that one falls through."""

    @route("GET", "/coyote/{name}")
    def elsewhere(self, request: Request) -> Response:
        return Response(b"coyote", media_type="text/plain")


def _coyote(client: Client, host: Flask) -> Any:
    access_log_from_env()
    coyote = Coyote()
    coyote.register(client)
    return coyote.wsgi(host)


def __getattr__(name: str) -> Any:
    builders = {
        "native_app": lambda: _flask(with_hello=True),
        "coyote_app": lambda: _coyote(Hello(), _flask(with_hello=False)),
        "fallthrough_app": lambda: _coyote(Elsewhere(), _flask(with_hello=True)),
    }
    if name in builders:
        app = builders[name]()
        globals()[name] = app
        return app
    raise AttributeError(name)
