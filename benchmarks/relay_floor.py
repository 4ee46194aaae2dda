"""The least a relay written in Python can cost: benchmarks/proxy.py's yardstick.

    UPSTREAM=http://127.0.0.1:9001 .venv/bin/python benchmarks/relay_floor.py 9000

One ``asyncio.Protocol`` per client connection and per upstream connection, on uvloop,
with httptools (llhttp) parsing both ways, driven by callbacks alone: no task, no
coroutine, no ASGI scope or message per request.  A request's head is written to an
idle pooled upstream connection with ``X-Forwarded-For`` / ``-Proto`` added; the
response's head is written back when it has arrived and its body as it arrives.

It is NOT a gateway: no routing, no limits, no timeouts, no hop-by-hop or forwarded
header policy, no health, no log - and it trusts everything either side sends.  It
answers one question: how close to nginx can a relay get when all that is left is
Python's own event-loop callbacks and the parsing?  Whatever coyote adds is on top.
Bodies are not sent upstream (the benchmark's requests are GETs).
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit

import httptools
import uvloop

UP = urlsplit(os.environ.get("UPSTREAM", "http://127.0.0.1:9"))
UP_HOST, UP_PORT = UP.hostname or "127.0.0.1", UP.port or 80
IDLE: list[Upstream] = []
CONNECTING: set[asyncio.Task[None]] = set()  # kept until done (the loop holds them weakly)
REASONS = {200: b"OK", 404: b"Not Found"}


class Upstream(asyncio.Protocol):
    """A pooled connection to the upstream: one exchange at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.transport: asyncio.Transport | None = None
        self.head: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def exchange(self, client: Client, request: bytes) -> None:
        self.client = client
        self.head = []
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        line = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))
        self.head[:0] = [line]
        self.head.append(b"\r\n")

    def on_body(self, body: bytes) -> None:
        client = self.client
        assert client is not None and client.transport is not None
        if client.transport.is_closing():  # wrk ended its run: nobody to answer
            self.head = []
            return
        if self.head:  # the head goes out with the first body bytes: one write
            self.head.append(body)
            client.transport.write(b"".join(self.head))
            self.head = []
        else:
            client.transport.write(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.transport is not None:
            if self.head and not client.transport.is_closing():
                client.transport.write(b"".join(self.head))
            if client.close:
                client.transport.close()
        self.head = []
        IDLE.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in IDLE:
            IDLE.remove(self)
        if self.client is not None and self.client.transport is not None:
            self.client.transport.close()  # its answer will not come: no stalled client


class Client(asyncio.Protocol):
    """A client connection: each request goes to an idle upstream connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.lines: list[bytes] = []
        self.url = b""
        self.peer = b""
        self.close = False  # the client asked for its connection to end with the answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")[0].encode("ascii")

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.lines = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() != b"connection":  # hop-by-hop: the upstream connection stays open
            self.lines += (name, b": ", value, b"\r\n")

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self.close = not self.parser.should_keep_alive()
        request = b"".join(
            [
                method,
                b" ",
                self.url,
                b" HTTP/1.1\r\n",
                *self.lines,
                b"x-forwarded-for: ",
                self.peer,
                b"\r\nx-forwarded-proto: http\r\n\r\n",
            ]
        )
        if IDLE:
            IDLE.pop().exchange(self, request)
        else:
            task = asyncio.ensure_future(self._connect(request))
            CONNECTING.add(task)
            task.add_done_callback(CONNECTING.discard)

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(Upstream, UP_HOST, UP_PORT)
        upstream.exchange(self, request)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
