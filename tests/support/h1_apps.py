"""The ASGI app tests/test_h1server.py serves with coyote's own server: each path
does one thing a server must cope with. What the app saw goes to the log
(``coyote_mw.test``), which the test reads."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("coyote_mw.test")


async def _answer(send: Any, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    head = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers or head})
    await send({"type": "http.response.body", "body": body})


async def _read(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            log.info("saw http.disconnect")
            raise ConnectionError("the client left")
        chunks.append(message["body"])
        more = message["more_body"]
    return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            scope["state"]["started"] = True
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                log.info("lifespan shutdown")
                return
    path = scope["path"]
    if scope["type"] == "websocket":
        await _websocket(path, receive, send)
    elif path == "/hello":
        await _answer(send, 200, b"howdy")
    elif path == "/scope":
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        shown["state"] = scope["state"]
        await _answer(send, 200, repr(shown).encode())
    elif path == "/echo":
        await _answer(send, 200, await _read(receive))
    elif path == "/ignore":
        await _answer(send, 200, b"ignored")
    elif path == "/stream":  # no length: chunked (HTTP/1.1) or close-delimited (1.0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/no-content":  # a 204 with what must not go with it
        headers = [(b"content-length", b"0"), (b"x-kind", bytearray(b"none"))]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/both-framings":  # Content-Length and chunked: the server picks one
        headers = [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in (b"one ", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path in ("/long", "/short"):
        declared = b"10"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", declared)],
            }
        )
        body = b"0123456789ABCDEF" if path == "/long" else b"01234"
        await send({"type": "http.response.body", "body": body})
    elif path == "/big":  # a 256 KiB answer, each logged
        log.info("big answer")
        await _answer(send, 200, b"x" * 262144)
    elif path == "/endless":  # 64 KiB parts for as long as the client is there
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(100_000):
            await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        log.info("endless answered")
    elif path == "/watch":  # a task waits for the client to leave while another peeks
        await _read(receive)
        watcher = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        peek = asyncio.ensure_future(receive())  # as Starlette's is_disconnected() does
        await asyncio.sleep(0)
        peek.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"watching", "more_body": True})
        log.info("the watcher saw %s", (await watcher)["type"])
    elif path == "/rss":  # the server's resident memory, in kB
        with open("/proc/self/status") as status:
            rss = next(line for line in status if line.startswith("VmRSS:")).split()[1]
        await _answer(send, 200, rss.encode())
    elif path == "/boom":
        raise ValueError("a secret traceback detail")
    elif path == "/nothing":
        return
    elif path.startswith("/wait/"):  # answer after a while (requests in order)
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        await _answer(send, 200, path.encode())
    elif path == "/slow":  # the head and a first chunk now, the rest a second later
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started ", "more_body": True})
        await asyncio.sleep(1)
        await send({"type": "http.response.body", "body": b"finished"})
        log.info("slow answered")
    elif path == "/long-poll":  # after the body, waits for the client to leave
        await _read(receive)
        message = await receive()
        token = scope["query_string"].decode()
        log.info("the long poll %s saw %s", token, message["type"])
        await _answer(send, 200, b"too late")  # nobody to send it to
        log.info("the long poll %s answered", token)
    elif path.startswith("/note/"):  # says it ran
        log.info("noted %s", path)
        await _answer(send, 200, b"noted")
    elif path == "/until-gone":  # reads the body until the client leaves
        try:
            await _read(receive)
        except ConnectionError:
            return
        await _answer(send, 200, b"whole body")
    else:
        await _answer(send, 404, b"")


async def _websocket(path: str, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if path == "/ws-two-senders":  # two tasks send at once, then "done"

        async def sender() -> None:
            for _ in range(40):
                await send({"type": "websocket.send", "bytes": b"y" * 262144})

        await asyncio.gather(sender(), sender())
        await send({"type": "websocket.send", "text": "done"})
        await send({"type": "websocket.close"})
        return
    while True:  # an echo
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose lifespan startup fails."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
