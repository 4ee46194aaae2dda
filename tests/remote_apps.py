"""Clients served as remote services in the tests."""

from __future__ import annotations

import asyncio
import os

from coyote_mw import Client, Request, route


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
