"""coyote's own server takes a request whose header lines repeat the connection's last
ones without llhttp (``coyote_mw.server.h1._Replay``): what it makes of it must be what
llhttp and the checks make of the same bytes.  In process, over a real socket pair, so
that the replays can be counted; each case is also sent on a connection of its own,
where llhttp reads it, and the two answers compared."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from typing import Any
from unittest import mock

from coyote_mw.server import Options, Server
from coyote_mw.server.h1 import H1Connection

LINES = b"Host: x.example\r\nUser-Agent: t/1\r\nAccept: */*\r\nX-Case: Kept  \r\n\r\n"
OPTIONS = {"max_head_bytes": 512, "max_target": 200, "max_headers": 20}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes what it was given (``/mutate``: after changing its header list)."""
    if scope["path"] == "/mutate":
        scope["headers"].append((b"x-added", b"by the app"))
        scope["headers"][0] = (b"host", b"changed")
    shown = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    body = json.dumps(shown).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Conn:
    """One client connection to an in-process server."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: H1Connection
    ) -> None:
        self.reader, self.writer = reader, writer
        self.conn = conn  # the server's side

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, header lines, body (by its length; HEAD: none)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if x)}
        return status, headers, head

    async def body(self, headers: dict[str, str]) -> dict[str, Any]:
        data = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), 10)
        return dict(json.loads(data))

    async def ask(self, request: bytes) -> tuple[int, dict[str, Any] | None]:
        await self.send(request)
        status, headers, _ = await self.answer()
        if status != 200 or request.startswith(b"HEAD "):
            if status != 200:
                await asyncio.wait_for(self.reader.read(), 10)  # the error, then the close
            return status, None
        return status, await self.body(headers)


def serve(
    test: Callable[[Callable[[], Coroutine[Any, Any, Conn]]], Coroutine[Any, Any, None]],
    shortcut: Any = None,
) -> int:
    """Run ``test`` with a way to open connections to a server in this process; the
    number of requests taken again without llhttp."""
    taken: list[bool] = []
    replayed = H1Connection._replayed

    def counted(conn: H1Connection, line: Any, replay: Any) -> bool:
        took = replayed(conn, line, replay)
        taken.append(took)
        return took

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(app, Options(**OPTIONS), shortcut=shortcut)
        server.loop = loop
        opened: list[asyncio.StreamWriter] = []

        async def connect() -> Conn:
            ours, theirs = socket.socketpair()
            _, conn = await loop.connect_accepted_socket(lambda: H1Connection(server), ours)
            reader, writer = await asyncio.open_connection(sock=theirs)
            opened.append(writer)
            return Conn(reader, writer, conn)

        try:
            await test(connect)
        finally:
            for writer in opened:
                writer.close()

    with mock.patch.object(H1Connection, "_replayed", counted):
        asyncio.run(main())
    return sum(taken)


async def alone(connect: Callable[[], Coroutine[Any, Any, Conn]], request: bytes) -> Any:
    """What a connection of its own (llhttp reading) answers ``request`` with."""
    conn = await connect()
    return await conn.ask(request)


def test_repeated_lines_with_other_targets_are_read_as_llhttp_reads_them() -> None:
    requests = [
        b"GET /sc%6fpe?a=%20b HTTP/1.1\r\n" + LINES,  # read by llhttp, its lines kept
        b"GET /other/path?x=1&y=2 HTTP/1.1\r\n" + LINES,
        b"GET / HTTP/1.1\r\n" + LINES,
        b"GET //double?q=a:b@c HTTP/1.1\r\n" + LINES,
        b"HEAD /scope HTTP/1.1\r\n" + LINES,
        b"GET /last HTTP/1.1\r\n" + LINES,
    ]
    seen: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        conn = await connect()
        for request in requests:
            seen.append((await conn.ask(request), await alone(connect, request)))

    replays = serve(test)
    for (kept, fresh), request in zip(seen, requests, strict=True):
        assert kept == fresh, request
        assert kept[0] == 200
    assert seen[1][0][1]["headers"] == [
        ["host", "x.example"],
        ["user-agent", "t/1"],
        ["accept", "*/*"],
        ["x-case", "Kept"],
    ]
    assert seen[1][0][1]["query"] == "x=1&y=2" and seen[0][0][1]["path"] == "/scope"
    # the first of each connection is llhttp's; HEAD's answer has no body to compare,
    # its replay counted all the same
    assert replays == len(requests) - 1


def test_a_change_an_app_makes_to_its_header_list_is_not_kept() -> None:
    seen: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        conn = await connect()
        for path in (b"/mutate", b"/mutate", b"/after"):
            seen.append(await conn.ask(b"GET " + path + b" HTTP/1.1\r\n" + LINES))

    assert serve(test) == 2
    assert seen[2][1]["headers"][0] == ["host", "x.example"]
    assert ["x-added", "by the app"] not in seen[2][1]["headers"]


def test_what_the_pattern_does_not_take_goes_to_llhttp() -> None:
    others = [
        b'GET /a"b HTTP/1.1\r\n' + LINES,  # a character outside RFC 3986's
        b"DELETE /gone HTTP/1.1\r\n" + LINES,  # another method
        b"GET /v HTTP/1.0\r\n" + LINES,  # another version: its keep-alive differs
        b"GET http://x.example/abs HTTP/1.1\r\n" + LINES,  # absolute-form
        b"GET /a#frag HTTP/1.1\r\n" + LINES,
        b"get /lower HTTP/1.1\r\n" + LINES,  # not a method llhttp knows
        b"GET /x HTTP/1.1 \r\n" + LINES,
        b"GET  /x HTTP/1.1\r\n" + LINES,  # (llhttp takes two spaces)
    ]
    seen: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        for other in others:
            conn = await connect()
            await conn.ask(b"GET /first HTTP/1.1\r\n" + LINES)
            seen.append((await conn.ask(other), await alone(connect, other)))

    assert serve(test) == 0
    for (kept, fresh), request in zip(seen, others, strict=True):
        assert kept == fresh, request
    assert [kept[0] for kept, _ in seen] == [200, 200, 200, 200, 200, 400, 400, 200]


def test_the_heads_bounds_hold_for_a_request_taken_again() -> None:
    # the kept lines take some 60 bytes of max_head_bytes (512): a target of 200
    # (max_target) fits, one of 201 is 414; with lines near the bound, 431
    long_lines = b"Host: x\r\nX-Pad: " + b"p" * 380 + b"\r\n\r\n"
    cases = [
        (LINES, b"/" + b"t" * 199, 200),
        (LINES, b"/" + b"t" * 200, 414),
        (long_lines, b"/" + b"t" * 100, 200),
        (long_lines, b"/" + b"t" * 140, 431),
    ]
    seen: list[int] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        for lines, target, _ in cases:
            conn = await connect()
            assert (await conn.ask(b"GET / HTTP/1.1\r\n" + lines))[0] == 200
            seen.append((await conn.ask(b"GET " + target + b" HTTP/1.1\r\n" + lines))[0])

    assert serve(test) == 2  # those past a bound are left to llhttp
    assert seen == [status for _, _, status in cases]


def test_pipelined_or_split_requests_are_llhttps() -> None:
    request = b"GET /p HTTP/1.1\r\n" + LINES
    seen: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        conn = await connect()
        await conn.ask(request)
        await conn.send(request + request)  # two in one read: not one request
        for _ in range(2):
            _, headers, _ = await conn.answer()
            seen.append((await conn.body(headers))["path"])
        await conn.send(request[:20])  # one in two reads
        await asyncio.sleep(0.05)
        seen.append((await conn.ask(request[20:]))[1]["path"])  # type: ignore[index]
        seen.append((await conn.ask(request))[1]["path"])  # type: ignore[index]

    assert serve(test) == 1  # the last alone
    assert seen == ["/p", "/p", "/p", "/p"]


def test_empty_lines_behind_a_head_are_not_kept() -> None:
    # llhttp skips empty lines between requests: a read of one request and many of them
    # would keep them all for the connection's life, past the head's bound
    kept: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        conn = await connect()
        await conn.send(b"GET /a HTTP/1.1\r\n" + LINES + b"\r\n" * 8000)
        _, headers, _ = await conn.answer()
        await conn.body(headers)
        kept.append(conn.conn.replay)
        assert (await conn.ask(b"GET /b HTTP/1.1\r\n" + LINES))[0] == 200  # llhttp's
        kept.append(conn.conn.replay)

    assert serve(test) == 0
    assert kept[0] is None and kept[1] is not None
    assert len(kept[1].block) == len(LINES) + 2


def test_a_shortcut_that_fails_on_a_request_taken_again_is_answered_as_by_llhttp() -> None:
    def shortcut(conn: Any, method: str, version: str, raw: bytes, query: bytes, ka: bool) -> Any:
        if raw == b"/boom":
            raise ValueError("a bug in the shortcut")
        return None

    seen: list[Any] = []

    async def test(connect: Callable[[], Coroutine[Any, Any, Conn]]) -> None:
        seen.append(await alone(connect, b"GET /boom HTTP/1.1\r\n" + LINES))
        conn = await connect()
        assert (await conn.ask(b"GET /ok HTTP/1.1\r\n" + LINES))[0] == 200
        seen.append(await conn.ask(b"GET /boom HTTP/1.1\r\n" + LINES))

    assert serve(test, shortcut) == 1
    assert seen[0] == seen[1] == (400, None)
