"""Clients served as remote services in the tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from coyote_mw import Client, Request, Response, route


class Whoami(Client):
    service = "whoami"

    @route("GET", "/whoami")
    def whoami(self, request: Request) -> dict[str, object]:
        return {"pid": os.getpid(), "forwarded_for": request.headers.get("x-forwarded-for")}

    @route("POST", "/echo")
    async def echo(self, request: Request) -> bytes:
        return await request.aread()

    @route("GET", "/slow")
    async def slow(self, request: Request) -> str:
        await asyncio.sleep(float(request.query.get("s", "2")))
        return "slow"


class Bulk(Client):
    """Streams bodies in and out without holding them."""

    service = "bulk"

    @route("POST", "/sink")
    async def sink(self, request: Request) -> dict[str, int]:
        received = 0
        async for chunk in request.aiter_bytes():
            received += len(chunk)
        return {"received": received}

    @route("GET", "/source/{mb:int}")
    async def source(self, request: Request) -> Response:
        chunk = b"x" * 65536
        count = request.params["mb"] * 16

        async def body() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield chunk

        return Response(body(), media_type="application/octet-stream")
