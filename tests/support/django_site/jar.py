"""``Jar``: routes whose answers Django used to lose or hold."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from coyote_mw import Client, Request, Response, route

CHUNK = 64 * 1024


class Jar(Client):
    # what /jar/stream produced so far, read through /jar/progress: the producer runs in
    # the server process, the test reads it over HTTP
    progress: dict[str, Any] = {"chunks": 0, "closed": False}

    @route("GET", "/jar/cookies")
    def cookies(self, request: Request) -> Response:
        return Response(
            b"two cookies",
            headers=[
                ("set-cookie", "session=abc; Path=/; HttpOnly"),
                ("set-cookie", "theme=dark; Path=/; Max-Age=3600"),
                ("link", "</a.css>; rel=preload"),
                ("link", "</b.js>; rel=preload"),
            ],
        )

    @route("GET", "/jar/query")
    def query(self, request: Request) -> dict[str, list[str]]:
        return {k: request.query.getlist(k) for k in request.query}

    @route("GET", "/jar/stream/{mib:int}")
    async def stream(self, request: Request) -> Response:
        progress = self.progress
        progress.update(chunks=0, closed=False)
        chunks = request.params["mib"] * 16

        async def body() -> AsyncIterator[bytes]:
            try:
                for _ in range(chunks):
                    progress["chunks"] += 1
                    yield bytes(CHUNK)  # a new object each time, as real data is
            finally:
                progress["closed"] = True

        return Response(body(), headers={"content-type": "application/octet-stream"})

    @route("GET", "/jar/progress")
    def report(self, request: Request) -> dict[str, Any]:
        with open("/proc/self/statm") as statm:
            rss_pages = int(statm.read().split()[1])
        return {**self.progress, "rss": rss_pages * os.sysconf("SC_PAGE_SIZE")}
