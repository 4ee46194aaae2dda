"""``precedence="host"``: a host that reads the body and then answers 404 leaves coyote's
handler the same body, replayed (up to ``max_body``; past it, 413).  Real Flask,
FastAPI and Starlette hosts, driven by their own test clients; a real instance behind
the relay (``LedgerUpstream``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from flask import Flask, abort
from flask import request as flask_request
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from coyote_mw import Client, Coyote, Request, route
from tests.support.ledger import LedgerUpstream

BODY = json.dumps({"name": "whisky", "glasses": 2}).encode()
MAX_BODY = 1024


class Echo(Client):
    @route("POST", "/drinks/{name}")
    def echo(self, request: Request) -> bytes:
        return request.read()

    @route("POST", "/adrinks/{name}")
    async def aecho(self, request: Request) -> bytes:
        return await request.aread()


@pytest.fixture
def upstream() -> Iterator[LedgerUpstream]:
    with LedgerUpstream() as up:
        yield up


@pytest.fixture
def coyote(upstream: LedgerUpstream) -> Iterator[Coyote]:
    c = Coyote(timeout=3, max_body=MAX_BODY)
    c.register(Echo())
    c.register_remote(upstream.url, routes=[("POST", "/echo/{name}")], service="up")
    c.register(_starlette_echo_app(), routes=[("POST", "/app/{name}")], service="app")
    yield c
    c.close()


PATHS = ["/drinks/x", "/adrinks/x", "/echo/x", "/app/x"]


def _starlette_echo_app() -> Starlette:
    """A whole ASGI app in process (through coyote_mw.handlers.bridge under a WSGI host)."""

    async def echo(request: StarletteRequest) -> StarletteResponse:
        return StarletteResponse(await request.body())

    return Starlette(routes=[Route("/app/{name}", echo, methods=["POST"])])


# -- WSGI: Flask ------------------------------------------------------------------------


def _flask_host(coyote: Coyote, read: str) -> Any:
    app = Flask("host")

    @app.post("/<kind>/<name>")
    def reads_then_404(kind: str, name: str) -> Any:
        if read == "json":
            flask_request.get_json()
        elif read == "part":
            flask_request.stream.read(5)
        abort(404)

    app.wsgi_app = coyote.wsgi(app.wsgi_app, precedence="host")  # type: ignore[method-assign]
    return app


@pytest.mark.parametrize("read", ["json", "part", "nothing"])
@pytest.mark.parametrize("path", PATHS)
def test_flask_host_that_read_the_body_then_404_leaves_coyote_the_body(
    coyote: Coyote, upstream: LedgerUpstream, path: str, read: str
) -> None:
    client = _flask_host(coyote, read).test_client()
    response = client.post(path, data=BODY, content_type="application/json")
    assert response.status_code == 200, response.get_data()
    assert response.get_data() == BODY
    if path.startswith("/echo"):
        assert upstream.requests[-1].body == BODY


def test_flask_host_that_read_more_than_max_body_then_404_is_413(coyote: Coyote) -> None:
    client = _flask_host(coyote, "json").test_client()
    big = json.dumps({"pad": "x" * MAX_BODY}).encode()
    response = client.post("/drinks/x", data=big, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body too large", "max_body": MAX_BODY}


# -- ASGI: FastAPI and Starlette ------------------------------------------------------


class Drink(BaseModel):
    name: str
    glasses: int


def _fastapi_host(coyote: Coyote) -> Any:
    app = FastAPI()

    @app.post("/{kind}/{name}")
    async def validates_then_404(kind: str, name: str, drink: Drink) -> None:
        raise HTTPException(404)

    return coyote.asgi(app, precedence="host")


def _starlette_host(coyote: Coyote, read: str = "json") -> Any:
    async def reads_then_404(request: StarletteRequest) -> StarletteResponse:
        if read == "json":
            await request.json()
        elif read == "part":
            async for _chunk in request.stream():
                break
        return StarletteResponse("not here", status_code=404)

    app = Starlette(routes=[Route("/{kind}/{name}", reads_then_404, methods=["POST"])])
    return coyote.asgi(app, precedence="host")


@pytest.mark.parametrize("host", ["fastapi", "starlette", "starlette-part", "starlette-nothing"])
@pytest.mark.parametrize("path", PATHS)
def test_asgi_host_that_read_the_body_then_404_leaves_coyote_the_body(
    coyote: Coyote, upstream: LedgerUpstream, path: str, host: str
) -> None:
    if host == "fastapi":
        app = _fastapi_host(coyote)
    else:
        app = _starlette_host(coyote, host.partition("-")[2] or "json")
    with TestClient(app) as client:
        response = client.post(path, content=BODY, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.content == BODY
    if path.startswith("/echo"):
        assert upstream.requests[-1].body == BODY


def test_asgi_host_that_read_more_than_max_body_then_404_is_413(coyote: Coyote) -> None:
    big = json.dumps({"pad": "x" * MAX_BODY}).encode()
    with TestClient(_starlette_host(coyote)) as client:
        response = client.post("/drinks/x", content=big)
    assert response.status_code == 413
    assert response.json() == {"error": "Request body too large", "max_body": MAX_BODY}


# -- one body for both interfaces ------------------------------------------------------


def _reading_host(interface: str) -> Any:
    """A host app that reads the whole body, then answers 404."""
    if interface == "asgi":

        async def asgi_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"host 404"})

        return asgi_host

    def wsgi_host(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("404 Not Found", [])
        return [b"host 404"]

    return wsgi_host


@pytest.mark.parametrize("path", PATHS)
def test_host_that_read_the_body_then_404_leaves_coyote_the_body(
    serve: Any, interface: str, coyote: Coyote, path: str
) -> None:
    client = serve(coyote, _reading_host(interface), precedence="host")
    response = client.post(path, content=BODY)
    assert response.status_code == 200, response.text
    assert response.content == BODY


@pytest.mark.parametrize("path", ["/drinks/x", "/echo/x"])
def test_host_that_read_more_than_max_body_then_404_is_413(
    serve: Any, interface: str, coyote: Coyote, path: str
) -> None:
    client = serve(coyote, _reading_host(interface), precedence="host")
    response = client.post(path, content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "Request body too large"
