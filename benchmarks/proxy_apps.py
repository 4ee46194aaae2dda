"""The servers of benchmarks/proxy.py: an upstream and three gateways in front of it.

Each gateway forwards ``GET /hello`` (13 bytes back) and ``GET /64k`` (64 KiB) to
``$UPSTREAM`` (http://127.0.0.1:port) with
``X-Forwarded-For`` / ``-Proto`` / ``-Host``, as coyote does and as production gateways
are configured to (nginx's config in proxy.py sets them too), except ``bare_gateway``:
the least a gateway on uvicorn can do, one ASGI function forwarding through coyote's
transport with no routing, headers or log - the ceiling for the others.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:9")
BODY = b"Hello, World!"  # 13 bytes
BIG = bytes(range(256)) * 256  # 64 KiB
PATHS = ("/hello", "/64k")  # what every gateway relays
_ANSWERS = {
    path: (
        [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))],
        body,
    )
    for path, body in (("/hello", BODY), ("/64k", BIG))
}


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The fastest upstream we can write in Python: a fixed answer, 13 bytes at
    ``/hello`` and 64 KiB at ``/64k``."""
    if scope["type"] != "http":
        return
    headers, body = _ANSWERS.get(scope["path"], _ANSWERS["/hello"])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _coyote() -> Any:
    from benchmarks.harness import access_log_from_env
    from coyote_mw import Coyote

    access_log_from_env()
    coyote = Coyote(concurrency=256, queue=1024)
    coyote.register_remote(UPSTREAM, routes=[("GET", p) for p in PATHS], service="upstream")
    return coyote.asgi()


def _forwarded(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    host = dict(scope["headers"]).get(b"host", b"")
    return [
        (b"x-forwarded-for", scope["client"][0].encode()),
        (b"x-forwarded-proto", scope["scheme"].encode()),
        (b"x-forwarded-host", host),
    ]


def _bare_gateway() -> Any:
    from urllib.parse import urlsplit

    from coyote_mw.remote.transport import Pool

    up = urlsplit(UPSTREAM)
    host, port = up.hostname or "127.0.0.1", up.port or 80
    pools: list[Pool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not pools:
            pools.append(Pool(read_timeout=None))
        r = await pools[0].request("GET", host, port, scope["raw_path"], [])
        body = r.take_whole()
        if body is None:  # the head came in a packet of its own
            body = await r.aread()
        await send({"type": "http.response.start", "status": r.status, "headers": r.headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _bare_rsgi_gateway() -> Any:
    """``bare_gateway`` on granian's RSGI interface (HTTP in Rust, no ASGI scope or
    messages: the request an object, the answer one ``response_bytes`` call)."""
    from urllib.parse import urlsplit

    from coyote_mw.remote.transport import Pool

    up = urlsplit(UPSTREAM)
    host, port = up.hostname or "127.0.0.1", up.port or 80
    pools: list[Pool] = []

    class App:
        async def __rsgi__(self, scope: Any, proto: Any) -> None:
            if not pools:
                pools.append(Pool(read_timeout=None))
            r = await pools[0].request("GET", host, port, scope.path.encode(), [])
            body = r.take_whole()
            if body is None:
                body = await r.aread()
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.headers]
            proto.response_bytes(r.status, headers, body)

    return App()


def _httpx_gateway() -> Any:
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=UPSTREAM, limits=httpx.Limits(max_connections=256))

    async def forward(request: Request) -> StreamingResponse:
        headers = [*request.headers.raw, *_forwarded(request.scope)]
        req = client.build_request(request.method, request.url.path, headers=headers)
        resp = await client.send(req, stream=True)
        return StreamingResponse(
            resp.aiter_raw(),
            resp.status_code,
            resp.headers,
            background=BackgroundTask(resp.aclose),
        )

    return Starlette(routes=[Route(p, forward) for p in PATHS])


def _aiohttp_gateway() -> Any:
    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        yield
        await state["session"].close()

    async def forward(request: Request) -> Response:
        headers = {k.decode(): v.decode() for k, v in _forwarded(request.scope)}
        async with state["session"].get(UPSTREAM + request.url.path, headers=headers) as resp:
            body = await resp.read()
            return Response(body, resp.status, {"content-type": resp.headers["content-type"]})

    return Starlette(routes=[Route(p, forward) for p in PATHS], lifespan=lifespan)


def __getattr__(name: str) -> Any:
    # build only the app the benchmark asks uvicorn for
    builders = {
        "coyote_gateway": _coyote,
        "bare_gateway": _bare_gateway,
        "bare_rsgi_gateway": _bare_rsgi_gateway,
        "httpx_gateway": _httpx_gateway,
        "aiohttp_gateway": _aiohttp_gateway,
    }
    if name in builders:
        app = builders[name]()
        globals()[name] = app
        return app
    raise AttributeError(name)


if __name__ == "__main__":
    # python -m benchmarks.proxy_apps APP PORT: APP on coyote's own HTTP/1.1 server
    # (coyote_mw.server), as `coyote leader --http coyote` runs the leader
    import socket
    import sys

    from coyote_mw.server import Server as H1Server

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[2])))
    app = __getattr__(sys.argv[1])
    # the leader relays without ASGI where it can, as `coyote leader --http coyote` does
    shortcut = app.direct() if hasattr(app, "direct") else None
    sys.exit(H1Server(app, shortcut=shortcut).run([sock]))
