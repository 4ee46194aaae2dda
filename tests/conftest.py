"""Fixtures: one test body runs against both middlewares, driven through httpx.

``serve(coyote, host=None, **options)`` mounts ``coyote`` as ASGI (``httpx.ASGITransport``,
requests run on one event loop in a background thread) or as WSGI
(``httpx.WSGITransport``), and returns a client with httpx's sync API either way
(``tests.support.http_clients``).
``host_app`` is a small host app of the same interface with its own ``/host`` route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx

# Imported at collection, though no fixture here needs it: plugins would import it
# after the tests ran, where CPython 3.11.7 can raise "AST constructor recursion depth
# mismatch" while pytest compiles it (a CPython bug, fixed in 3.11.8).
import hypothesis  # noqa: F401
import pytest

from coyote_mw import Coyote
from tests.support.http_clients import BASE, ASGIClient, LoopThread, WSGIClient


@pytest.fixture(params=["asgi", "wsgi"])
def interface(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def serve(interface: str, loop_thread: LoopThread) -> Iterator[Callable[..., Any]]:
    clients: list[Any] = []

    def factory(coyote: Coyote, host: Any = None, **options: Any) -> Any:
        if interface == "asgi":
            client: Any = ASGIClient(coyote.asgi(host, **options), loop_thread)
        else:
            client = WSGIClient(
                transport=httpx.WSGITransport(coyote.wsgi(host, **options)), base_url=BASE
            )
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.close()


@pytest.fixture
def host_app(interface: str) -> Any:
    """A host app with one route of its own, ``/host``, and its own 404 text."""
    if interface == "asgi":

        async def asgi_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            found = scope["path"] == "/host"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200 if found else 404,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"host" if found else b"host 404"})

        return asgi_host

    def wsgi_host(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        found = environ["PATH_INFO"] == "/host"
        start_response("200 OK" if found else "404 Not Found", [("Content-Type", "text/plain")])
        return [b"host" if found else b"host 404"]

    return wsgi_host


@pytest.fixture
def coyote() -> Iterator[Coyote]:
    c = Coyote(timeout=5)
    yield c
    c.close()
