"""Apps for the request-body tests, served by real server processes.

``wsgi`` and ``asgi`` are the same coyote leader (one per process) mounted both ways,
with routes whose handlers answer with what they received:

    POST /inproc/echo      a ``def`` handler: the body it read
    POST /inproc/aecho     an ``async def`` handler: the body it read
    POST /inproc/count     streams the body and answers its size and sha256
    GET  /peak             this process's peak RSS in KiB (ru_maxrss)
    POST /starlette/echo   a whole Starlette app: the body it read
    POST /starlette/count  the same app, streaming the body: its size and sha256
    POST /flask/echo       a whole Flask app: the body it read
    POST /echo, /digest    relayed to the instance at $COYOTE_TEST_UPSTREAM, when set

``python -m tests.support.body_apps werkzeug|wsgiref --port N`` serves ``wsgi`` with
Werkzeug's threaded server or wsgiref on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
from typing import Any

from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from coyote_mw import Client, Coyote, Request, route


class Bodies(Client):
    service = "bodies"

    @route("POST", "/inproc/echo")
    def echo(self, request: Request) -> bytes:
        return request.read()

    @route("POST", "/inproc/aecho")
    async def aecho(self, request: Request) -> bytes:
        return await request.aread()

    @route("POST", "/inproc/count")
    async def count(self, request: Request) -> dict[str, Any]:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.aiter_bytes():
            size += len(chunk)
            digest.update(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    @route("GET", "/peak")
    def peak(self, request: Request) -> dict[str, int]:
        return {"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


async def _starlette_echo(request: StarletteRequest) -> StarletteResponse:
    return StarletteResponse(await request.body(), media_type="application/octet-stream")


async def _starlette_count(request: StarletteRequest) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})


starlette_app = Starlette(
    routes=[
        Route("/starlette/echo", _starlette_echo, methods=["POST"]),
        Route("/starlette/count", _starlette_count, methods=["POST"]),
    ]
)

flask_app = Flask("body_apps")


@flask_app.post("/flask/echo")
def _flask_echo() -> Any:
    return flask_request.get_data(), 200, {"content-type": "application/octet-stream"}


def build() -> Coyote:
    coyote = Coyote(timeout=20, access_log=False)
    coyote.register(Bodies())
    coyote.register(
        starlette_app,
        routes=[("POST", "/starlette/echo"), ("POST", "/starlette/count")],
        service="starlette",
        interface="asgi",
    )
    coyote.register(flask_app, routes=[("POST", "/flask/echo")], service="flask", interface="wsgi")
    upstream = os.environ.get("COYOTE_TEST_UPSTREAM")
    if upstream:
        coyote.register_remote(
            upstream, routes=[("POST", "/echo"), ("POST", "/digest")], service="up"
        )
    return coyote


leader = build()
wsgi = leader.wsgi()
asgi = leader.asgi()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=["werkzeug", "wsgiref"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.server == "werkzeug":
        from werkzeug.serving import run_simple

        run_simple("127.0.0.1", args.port, wsgi, threaded=True)
    else:
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        make_server("127.0.0.1", args.port, wsgi, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main()
