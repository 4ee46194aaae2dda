"""The leader behind coyote's own server, relaying without ASGI where it can
(``coyote_mw.middleware.direct``), for tests/test_direct.py::

    python -m tests.support.h1_server tests.support.direct_apps:app PORT \
        shortcut=tests.support.direct_apps:shortcut

The instance at ``$UPSTREAM`` (a ledger upstream) takes ``GET``, ``HEAD`` and ``POST`` of
its behaviours' paths (``/echo/...``, ``/hang``...), ``/warm`` and ``/own/...`` (a
behaviour a test gives its ledger, ``LedgerUpstream(behaviours={"own": fn})``);
``POST /_trust`` sets the trusted proxies to its body (``Coyote.configure``); ``GET
/meddle`` adds a line to its scope's header list, in place;
``$TIMEOUT``, ``$CONCURRENCY``, ``$QUEUE``, ``$STREAM_IDLE``, ``$EJECT_AFTER`` set the
leader's; ``$UPSTREAM2``, when set, is a second instance of the same routes.  Every
request the shortcut takes is said on stderr as ``direct METHOD TARGET``, so a test
knows which path served it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from coyote_mw import Coyote
from tests.support.ledger import BEHAVIOURS

__all__ = ["app", "shortcut"]


def _leader() -> Any:
    idle = os.environ.get("STREAM_IDLE")
    coyote = Coyote(
        timeout=float(os.environ.get("TIMEOUT", "10")),
        concurrency=int(os.environ.get("CONCURRENCY", "50")),
        queue=int(os.environ.get("QUEUE", "100")),
        stream_idle_timeout=float(idle) if idle else None,
        eject_after=int(os.environ.get("EJECT_AFTER", "3")),
    )
    routes = [
        (method, f"/{name}{rest}")
        for name in (*BEHAVIOURS, "warm", "own")
        for rest in ("", "/{rest:path}")
        for method in ("GET", "HEAD", "POST")
    ]
    for url in (os.environ["UPSTREAM"], os.environ.get("UPSTREAM2")):
        if url:
            coyote.register_remote(url, routes=routes, service="ledger")

    async def trust(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # POST /_trust with the trusted proxies as its body: a setting changed while
        # clients' connections stay open
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        coyote.configure(trusted_proxies=body.decode())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    coyote.register(trust, routes=[("POST", "/_trust")], interface="asgi")

    async def meddle(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # GET /meddle: an app that changes its scope's header list in place (adds a Via
        # line naming this leader)
        scope["headers"].append((b"via", f"1.1 {coyote.forwarding.pseudonym}".encode()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"meddled"})

    coyote.register(meddle, routes=[("GET", "/meddle")], interface="asgi")
    return coyote.asgi()


app = _leader()


def shortcut() -> Any:
    direct = app.direct()
    assert direct is not None

    def take(conn: Any, method: str, version: str, raw: bytes, query: bytes, alive: bool) -> Any:
        taken = direct(conn, method, version, raw, query, alive)
        if taken is not None:
            target = raw + (b"?" + query if query else b"")
            print(f"direct {method} {target.decode('latin-1')}", file=sys.stderr, flush=True)
        return taken

    return take
