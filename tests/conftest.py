"""Fixtures: one test body runs against both middlewares, driven through httpx.

``serve(coyote, host=None, **options)`` mounts ``coyote`` as ASGI (``httpx.ASGITransport``,
requests run on one event loop in a background thread) or as WSGI
(``httpx.WSGITransport``), and returns a client with httpx's sync API either way.
``host_app`` is a small host app of the same interface with its own ``/host`` route.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx

# Imported at collection, though no fixture here needs it: plugins would import it
# after the tests ran, where CPython 3.11.7 can raise "AST constructor recursion depth
# mismatch" while pytest compiles it (a CPython bug, fixed in 3.11.8).
import hypothesis  # noqa: F401
import pytest

from coyote_mw import Coyote

BASE = "http://testserver"


class LoopThread:
    """An event loop in a thread, so sync test bodies can drive ASGI apps."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:  # as asyncio.run does before closing a loop
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class ASGIClient:
    """httpx's sync API over an ``AsyncClient`` bound to an ASGI app."""

    def __init__(self, app: Any, loop: LoopThread) -> None:
        self.app = app
        self.loop = loop
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.loop.run(self.client.request(method, url, **kw))  # type: ignore[no-any-return]

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def head(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("HEAD", url, **kw)

    def gather(self, *requests: tuple[str, str]) -> list[httpx.Response]:
        """Send requests concurrently."""

        async def all_of() -> list[httpx.Response]:
            return list(await asyncio.gather(*(self.client.request(m, u) for m, u in requests)))

        return self.loop.run(all_of())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.loop.run(self.client.aclose())


class WSGIClient(httpx.Client):
    def gather(self, *requests: tuple[str, str]) -> list[httpx.Response]:
        """Send requests concurrently, one thread each (as a threaded server would)."""
        results: list[Any] = [None] * len(requests)

        def one(i: int, method: str, url: str) -> None:
            results[i] = self.request(method, url)

        threads = [
            threading.Thread(target=one, args=(i, m, u)) for i, (m, u) in enumerate(requests)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return results


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
