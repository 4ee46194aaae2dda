"""The apps the server matrix (tests/test_matrix.py) runs under each real server.

``asgi_app`` and ``wsgi_app`` are the same three things behind coyote's ASGI or WSGI
middleware:

- a host app of the same interface (``/host/...``: what falls through to the host)
  that echoes the request body it reads and accepts a WebSocket at ``/host/ws``;
- an in-process coyote client, ``Matrix`` (``/coyote/...``): echo a body, stream an
  upload through a digest, stream a download of any size, with ``def`` handlers and
  their ``async def`` twins (``/coyote/async/...``);
- whole apps in process, one of each interface, each echoing the body it reads:
  Starlette at ``/asgi-app/...`` and Flask at ``/wsgi-app/...`` (under each host, one of
  them crosses the ASGI<->WSGI bridge);
- a remote instance at ``$MATRIX_UPSTREAM`` (``/relay/...``; the test's
  ``LedgerUpstream``, which records the exact bytes it receives), and one at
  ``$MATRIX_DEAD_UPSTREAM`` where nothing listens (``/dead/...``);

and, under ASGI, WebSockets: an in-process Starlette app at ``/ws/{room}``, a remote one
at ``$MATRIX_WS_UPSTREAM`` relayed at ``/rws/{room}``, and the host's at ``/host/ws`` and
``/shared/ws`` (a path a coyote ``GET`` route matches too).

``python -m tests.support.matrix_apps PORT`` serves ``wsgi_app`` with Werkzeug's threaded
server.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from coyote_mw import Client, Coyote, Request, Response, route
from tests.support.servers import answer_lifespan

__all__ = ["asgi_app", "pattern", "wsgi_app"]

BLOCK = 64 * 1024


def pattern(size: int) -> Iterator[bytes]:
    """``size`` bytes of a fixed pattern, in blocks (the test computes the same)."""
    block = bytes(range(256)) * (BLOCK // 256)
    while size > 0:
        yield block[: min(size, BLOCK)]
        size -= BLOCK


class Matrix(Client):
    """In-process routes: each says what it received, so the test can check it."""

    @route("GET", "/coyote/hello")
    def hello(self, request: Request) -> str:
        return "howdy"

    @route("POST", "/coyote/echo")
    def echo(self, request: Request) -> Response:
        return Response(request.read(), media_type="application/octet-stream")

    @route("POST", "/coyote/upload")
    def upload(self, request: Request) -> dict[str, Any]:
        digest, size = hashlib.sha256(), 0
        for chunk in request.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    @route("POST", "/coyote/async/echo")
    async def async_echo(self, request: Request) -> Response:
        return Response(await request.aread(), media_type="application/octet-stream")

    @route("POST", "/coyote/async/upload")
    async def async_upload(self, request: Request) -> dict[str, Any]:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.aiter_bytes():
            digest.update(chunk)
            size += len(chunk)
        return {"size": size, "sha256": digest.hexdigest()}

    @route("GET", "/coyote/async/download/{size:int}")
    async def async_download(self, request: Request) -> Response:
        async def blocks() -> AsyncIterator[bytes]:
            for block in pattern(request.params["size"]):
                yield block

        return Response(blocks(), media_type="application/octet-stream")

    @route("GET", "/coyote/files/{rest:path}")
    def files(self, request: Request) -> dict[str, Any]:
        return {"rest": request.params["rest"], "raw": request.raw_path}

    @route("GET", "/coyote/one/{name}")
    def one(self, request: Request) -> dict[str, Any]:
        return {"name": request.params["name"]}

    @route("GET", "/coyote/nothing")
    def nothing(self, request: Request) -> None:
        return None  # 204

    @route("POST", "/coyote/ignore")
    def ignore(self, request: Request) -> str:
        return "ignored"  # never reads the body

    @route("GET", "/shared/{page}")
    def shared(self, request: Request) -> str:
        return "coyote page"

    @route("GET", "/coyote/download/{size:int}")
    def download(self, request: Request) -> Response:
        return Response(pattern(request.params["size"]), media_type="application/octet-stream")


async def ws_echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(f"app {ws.url.path}")
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        await ws.send_text("echo " + (message.get("text") or ""))


async def starlette_echo(request: StarletteRequest) -> StarletteResponse:
    return StarletteResponse(b"asgi-app:" + await request.body())


flask_echo = Flask("matrix")


@flask_echo.post("/wsgi-app/echo")
def _flask_echo() -> bytes:
    return b"wsgi-app:" + flask_request.get_data()


def leader() -> Coyote:
    coyote = Coyote(timeout=10)
    coyote.register(Matrix())
    coyote.register(
        Starlette(routes=[Route("/asgi-app/echo", starlette_echo, methods=["POST"])]),
        routes=[("POST", "/asgi-app/echo")],
        service="asgi-app",
    )
    coyote.register(flask_echo, routes=[("POST", "/wsgi-app/echo")], service="wsgi-app")
    upstream = os.environ.get("MATRIX_UPSTREAM")
    if upstream:
        coyote.register_remote(
            upstream,
            routes=[("GET", "/relay/{rest:path}"), ("POST", "/relay/{rest:path}")],
            service="ledger",
        )
    dead = os.environ.get("MATRIX_DEAD_UPSTREAM")
    if dead:
        coyote.register_remote(dead, routes=[("GET", "/dead/{rest:path}")], service="dead")
    return coyote


async def asgi_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        if scope["path"] not in ("/host/ws", "/shared/ws"):
            await send({"type": "websocket.close", "code": 1008})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "host " + scope["path"]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo " + (message.get("text") or "")})
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    status, body = host_answer(scope["path"], b"".join(chunks))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for block in body:
        await send({"type": "http.response.body", "body": block, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def wsgi_host(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        data = stream.read()
    else:
        data = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
    status, body = host_answer(environ["PATH_INFO"], data)
    start_response(f"{status} X", [("Content-Type", "application/octet-stream")])
    return body


def host_answer(path: str, data: bytes) -> tuple[int, Iterator[bytes]]:
    """The host's own routes: ``/host/download/{n}`` streams n bytes, ``/host/upload``
    answers the digest of the body, any other ``/host/...`` echoes it; else 404."""
    if path.startswith("/host/download/"):
        return 200, pattern(int(path.rsplit("/", 1)[1]))
    if path == "/host/upload":
        digest = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return 200, iter([json.dumps(digest).encode()])
    return (200 if path.startswith("/host/") else 404), iter([b"host:" + data])


_apps: dict[str, Any] = {}
_building = threading.Lock()


def _app(name: str) -> Any:
    # built on first use, so a server process builds only the one it serves
    with _building:
        if name not in _apps:
            coyote = leader()
            if name == "asgi":
                chat = Starlette(routes=[WebSocketRoute("/ws/{room}", ws_echo)])
                coyote.register(chat, routes=[("GET", "/ws/{room}")], service="chat")
                remote_chat = os.environ.get("MATRIX_WS_UPSTREAM")
                if remote_chat:
                    coyote.register_remote(
                        remote_chat, routes=[("GET", "/rws/{room}")], service="remote-chat"
                    )
                _apps[name] = coyote.asgi(asgi_host)
            else:
                _apps[name] = coyote.wsgi(wsgi_host)
        return _apps[name]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _app("asgi")(scope, receive, send)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    return _app("wsgi")(environ, start_response)


def asgi_shortcut() -> Any:
    """``asgi_app``'s requests relayed without ASGI by coyote's own server (what
    ``coyote leader --http coyote`` does: ``coyote_mw.middleware.direct``)."""
    return _app("asgi").direct()


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), wsgi_app, threaded=True)
