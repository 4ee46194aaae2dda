"""Clients the in-process tests register."""

from __future__ import annotations

import asyncio
import threading

from coyote_mw import Client, Request, route


class Trouble(Client):
    """Routes that go wrong on purpose: one raises, two hold their relay slot (``/hold``
    until ``gate`` is set, ``/ahold`` for 0.3 s), and one echoes the body."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    @route("GET", "/fail")
    def fail(self, request: Request) -> str:
        raise RuntimeError("kaput")

    @route("GET", "/hold")
    def hold(self, request: Request) -> str:
        self.gate.wait(5)
        return "held"

    @route("GET", "/ahold")
    async def ahold(self, request: Request) -> str:
        await asyncio.sleep(0.3)
        return "held"

    @route("POST", "/echo")
    def echo(self, request: Request) -> bytes:
        return request.read()
