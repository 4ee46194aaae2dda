"""The pool takes a response head that repeats the connection's last one without llhttp
(``coyote_mw.remote.transport._Kept``): what it makes of it must be what llhttp and the
checks make of the same bytes.  Each script of answers is played to a pool twice, with
heads kept and without (``_Connection._keep`` off), and the two results compared."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from unittest import mock

import pytest

from coyote_mw.remote.transport import Pool, RemoteProtocolError, _Connection
from tests.test_transport import RawServer, read_request, run

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-kept: yes\r\ncontent-length: 5\r\n\r\n"
OTHER = HEAD.replace(b"x-kept: yes", b"x-kept: no")
CLOSE = b""  # in a script: the upstream closes the connection there


def scripted(answers: list[list[bytes]]) -> RawServer:
    """An upstream that answers the n-th request (on any connection) with the n-th
    answer's pieces, each written on its own (a read each), then closes if told."""
    answered = iter(answers)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, index: int) -> None:
        for _ in range(100):
            if await read_request(r) is None:
                return
            for piece in next(answered):
                if piece == CLOSE:
                    w.close()
                    return
                w.write(piece)
                await w.drain()
                await asyncio.sleep(0.01)  # the next piece in a read of its own

    return RawServer(handler)


def play(answers: list[list[bytes]], methods: list[str], keep: bool) -> tuple[list[Any], int, int]:
    """Each method's result (status, headers, body, or the error), the connections the
    upstream accepted, and the heads taken again."""
    replays: list[int] = []
    replay = _Connection._replay

    def counted(conn: _Connection, kept: Any, data: bytes) -> None:
        replays.append(1)
        replay(conn, kept, data)

    async def scenario() -> tuple[list[Any], int]:
        results: list[Any] = []
        async with scripted(answers) as server:
            pool = Pool()
            for method in methods:
                try:
                    r = await pool.request(method, "127.0.0.1", server.port, b"/", [])
                    results.append((r.status, r.headers, await r.aread()))
                except RemoteProtocolError as exc:
                    results.append(("error", str(exc)))
            await pool.aclose()
            return results, server.accepted

    with contextlib.ExitStack() as patched:
        patched.enter_context(mock.patch.object(_Connection, "_replay", counted))
        if not keep:
            patched.enter_context(mock.patch.object(_Connection, "_keep", lambda *_: None))
        results, accepted = run(scenario())
    return results, accepted, len(replays)


CASES: dict[str, tuple[list[list[bytes]], list[str], int]] = {
    # the same head again and again: each after the first taken again
    "repeated": ([[HEAD + b"hello"]] * 5, ["GET"] * 5, 4),
    # the body in reads of its own, counted out across them
    "body apart": ([[HEAD + b"he", b"llo"], [HEAD, b"h", b"ell", b"o"]] * 2, ["GET"] * 4, 3),
    # bytes behind the body: the response stands, the connection is not used again
    "bytes behind": (
        [[HEAD + b"hello"], [HEAD + b"helloHTTP/1.1 200 OK\r\n\r\n"], [HEAD + b"hello"]],
        ["GET"] * 3,
        1,
    ),
    # empty lines behind the body: llhttp skips them, and the connection goes on
    "crlf behind": (
        [[HEAD + b"hello\r\n"], [HEAD + b"hello\n"], [HEAD + b"hello\r\n"]],
        ["GET"] * 3,
        2,
    ),
    # closed in the body of a head taken again: an error, as llhttp's path says it
    "cut": ([[HEAD + b"hello"], [HEAD + b"he", CLOSE], [HEAD + b"hello"]], ["GET"] * 3, 1),
    # a HEAD's answer has the same head and no body: never taken again
    "head": ([[HEAD + b"hello"], [HEAD], [HEAD + b"hello"]], ["GET", "HEAD", "GET"], 1),
    # another head: llhttp's, and kept in the place of the one before
    "changed": (
        [[HEAD + b"hello"], [OTHER + b"hello"], [OTHER + b"hello"], [HEAD + b"hello"]],
        ["GET"] * 4,
        1,
    ),
    # a 64 KiB body, the first read over the head's bound
    "big": ([[HEAD.replace(b": 5", b": 65536") + b"z" * 65536]] * 3, ["GET"] * 3, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_head_taken_again_gives_what_llhttp_gives(case: str) -> None:
    answers, methods, replays = CASES[case]
    kept = play(answers, methods, keep=True)
    fresh = play(answers, methods, keep=False)
    assert fresh[2] == 0
    assert kept[:2] == fresh[:2]  # the results, and the connections used
    assert kept[2] == replays


def test_a_kept_head_over_a_later_requests_bound_is_refused() -> None:
    big = b"HTTP/1.1 200 OK\r\nx-big: " + b"b" * 50_000 + b"\r\ncontent-length: 2\r\n\r\nok"

    async def scenario() -> None:
        async with scripted([[big]] * 3) as server:
            pool = Pool()
            for _ in range(2):
                r = await pool.request("GET", "127.0.0.1", server.port, b"/", [])
                assert await r.aread() == b"ok"
            with pytest.raises(RemoteProtocolError, match="head is too large"):
                await pool.request("GET", "127.0.0.1", server.port, b"/", [], max_head=40 * 1024)
            await pool.aclose()

    run(scenario())
