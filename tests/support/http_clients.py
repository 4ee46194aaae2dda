"""httpx's sync API over coyote mounted in this process, as ASGI or WSGI.

``ASGIClient`` drives an ASGI app through ``httpx.ASGITransport`` on an event loop in a
background thread (``LoopThread``); ``WSGIClient`` is ``httpx.Client`` over
``httpx.WSGITransport``.  Both can ``gather`` requests to send them concurrently.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

__all__ = ["BASE", "ASGIClient", "LoopThread", "WSGIClient"]

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
