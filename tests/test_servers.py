"""Real servers: uvicorn (ASGI) and Werkzeug's (WSGI) give the same verdict per raw request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from coyote_mw import Client, Coyote, Request, route
from sample_apps.deadwood.saloon import STORY, Saloon
from tests.support.servers import raw_request, uvicorn_server, werkzeug_server


class Files(Client):
    @route("GET", "/files/{rest:path}")
    def files(self, request: Request) -> dict[str, Any]:
        return {"rest": request.params["rest"], "raw": request.raw_path}

    @route("GET", "/one/{name}")
    def one(self, request: Request) -> dict[str, Any]:
        return {"name": request.params["name"]}


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    coyote = Coyote()
    coyote.register(Saloon())
    coyote.register(Files())
    with uvicorn_server(coyote.asgi()) as asgi_port, werkzeug_server(coyote.wsgi()) as wsgi_port:
        yield asgi_port, wsgi_port
    coyote.close()


CASES = [
    ("/", 200, None),
    ("/files/a%2Fb", 200, {"rest": "a/b", "raw": "/files/a%2Fb"}),
    ("/one/a%2Fb", 200, {"name": "a/b"}),
    ("/one/a/b", 404, None),
    ("/files/x/../y", 200, {"rest": "y", "raw": "/files/y"}),
    ("/files/%2e%2e/%2e%2e/etc/passwd", 400, None),
    ("/files//z", 200, {"rest": "z", "raw": "/files/z"}),
    ("/%66iles/q", 200, {"rest": "q", "raw": "/files/q"}),
    ("/files/caf%c3%a9", 200, {"rest": "café", "raw": "/files/caf%C3%A9"}),
    ("/files/%zz", 400, None),
    ("/files/%ff", 400, None),
    ("/files/a%00b", 400, None),
    ("/FILES/x", 404, None),
    ("/one/x?q=%zz", 200, {"name": "x"}),
]


@pytest.mark.parametrize(("target", "status", "body"), CASES)
def test_asgi_and_wsgi_servers_agree_on_raw_paths(
    ports: tuple[int, int], target: str, status: int, body: dict[str, Any] | None
) -> None:
    asgi = raw_request(ports[0], "GET", target)
    wsgi = raw_request(ports[1], "GET", target)
    assert asgi == wsgi, f"ASGI {asgi!r} != WSGI {wsgi!r}"
    assert asgi[0] == status, asgi
    if body is not None:
        assert json.loads(asgi[1]) == body
    if status == 400:
        assert json.loads(asgi[1])["error"] == "Bad request path"


def test_saloon_over_real_servers(ports: tuple[int, int]) -> None:
    for port in ports:
        assert raw_request(port, "GET", "/") == (200, STORY.encode())
