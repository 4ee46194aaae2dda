"""coyote's own HTTP/1.1 server (coyote_mw.server), a real process, spoken to with raw
sockets: its bounds, timers, framing and order. The app is tests/support/h1_apps.py;
the server matrix (tests/test_matrix.py, ``-k coyote-h1``) runs the relay cases on it."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from tests.support.coyote_processes import AUTH, CoyoteProcesses, procs
from tests.support.ledger import LedgerUpstream, Received
from tests.support.processes import free_port, running, until
from tests.support.tls import tls_files

__all__ = ["procs"]  # the fixture: real processes, ended by PID

APP = "tests.support.h1_apps:app"
OPTIONS = [
    "max_head_bytes=4096",
    "max_headers=20",
    "max_target=1024",
    "header_timeout=1",
    "keep_alive_timeout=1",
    "max_discard=65536",
]
WAIT = 10.0  # the longest a client here waits for anything


class H1:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


def _command(*options: str) -> list[str]:
    return [sys.executable, "-m", "tests.support.h1_server", APP, "{port}", *OPTIONS, *options]


@pytest.fixture(scope="module")
def h1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H1]:
    log = tmp_path_factory.mktemp("h1") / "server.log"
    with running(_command(), ready_path="/hello", log=log) as url:
        yield H1(int(url.rsplit(":", 1)[1]), log)


def read_until(conn: socket.socket, marker: bytes) -> bytes:
    """What the server sent until ``marker`` came (it must come before a close)."""
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    return data


def read_all(conn: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def read_one(conn: socket.socket) -> tuple[bytes, bytes]:
    """One answer with a Content-Length (or none): its head and body."""
    data = read_until(conn, b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "closed before the whole body"
        body += chunk
    assert len(body) == length, f"more than the answer: {body!r}"
    return head, body


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def refused(h1: H1, raw: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; the server must answer once with JSON and close."""
    with h1.connect() as conn:
        conn.sendall(raw)
        data = read_all(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower(), head
    return status(head), json.loads(body)


GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


# -- the head's bounds ---------------------------------------------------------------------


def test_a_head_over_max_head_bytes_is_431_json(h1: H1) -> None:
    code, body = refused(
        h1, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    )
    assert (code, body["error"]) == (431, "Request header fields too large")


def test_an_unfinished_head_over_max_head_bytes_is_431_before_it_ends(h1: H1) -> None:
    # one header line that never ends: refused once the bytes pass the bound
    with h1.connect() as conn:
        conn.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(20):
                conn.sendall(b"a" * 1000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_all(conn)
    assert data.startswith(b"HTTP/1.1 431 "), data[:80]


def test_too_many_header_lines_is_431(h1: H1) -> None:
    lines = b"".join(b"X-%d: y\r\n" % i for i in range(30))
    code, body = refused(h1, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert (code, body["error"]) == (431, "Request header fields too large")


def test_the_heads_bounds_are_exact(h1: H1) -> None:
    # max_head_bytes=4096 counts the target and each line as name, value and 4 bytes
    # (": ", CRLF); max_headers=20 lines
    def head(size: int, lines: int = 0) -> bytes:
        extra = b"".join(b"X-%02d: y\r\n" % i for i in range(lines))
        big = b"X-Big: " + b"a" * (size - 6 - 9 - 9) + b"\r\n" if size else b""
        return b"GET /hello HTTP/1.1\r\nHost: x\r\n" + extra + big + b"\r\n"

    with h1.connect() as conn:
        conn.sendall(head(4096))
        assert status(read_one(conn)[0]) == 200
        conn.sendall(head(0, lines=19))  # 20 lines with Host
        assert status(read_one(conn)[0]) == 200
    assert refused(h1, head(4097))[0] == 431
    assert refused(h1, head(0, lines=20))[0] == 431


def test_a_target_over_max_target_is_414(h1: H1) -> None:
    code, body = refused(h1, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (code, body["error"]) == (414, "Request target too long")


# -- framing -------------------------------------------------------------------------------

BAD = {
    "length-and-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "two-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "bad-chunk-size": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "obs-fold": (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: b\r\n folded\r\n\r\n", 400),
    "control-char": (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
    "no-host": (b"GET /hello HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "gzip-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        501,
    ),
    "connect": (b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501),
    "http2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "http2-request-line": (b"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "http09": (b"GET /hello\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_framing_is_refused_with_json_and_closed(h1: H1, case: str) -> None:
    raw, expected = BAD[case]
    code, body = refused(h1, raw)
    assert code == expected, body
    assert set(body) <= {"error", "detail"}


CHUNKED = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
ENDLESS = {  # what llhttp keeps (a line not ended yet) or skips (trailers), bounded
    "trailer-line": (CHUNKED + b"0\r\nX-T: ", b"a" * 1000),
    "trailer-lines": (CHUNKED + b"0\r\n", b"X-T: a\r\n" * 100),
    "chunk-extension": (CHUNKED + b"5;e=", b"a" * 1000),
}


@pytest.mark.parametrize("case", list(ENDLESS))
def test_an_endless_chunk_line_or_trailer_is_refused(h1: H1, case: str) -> None:
    start, more = ENDLESS[case]
    with h1.connect() as conn:
        conn.sendall(start)
        try:
            for _ in range(1000):  # 1 MB, well over max_head_bytes
                conn.sendall(more)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_all(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert status(head) in (400, 431) and set(json.loads(body)) <= {"error", "detail"}, data


def test_a_body_in_tiny_chunks_is_buffered_within_bounds(h1: H1) -> None:
    # 2-byte chunks the app does not read yet: each a bytes object of its own, so the
    # buffer is bounded in pieces as well as in bytes
    def rss() -> int:
        with h1.connect() as conn:
            conn.sendall(b"GET /rss HTTP/1.1\r\nHost: x\r\n\r\n")
            return int(read_one(conn)[1])

    before = rss()
    held = []
    try:
        for _ in range(50):
            conn = h1.connect()
            held.append(conn)
            conn.settimeout(2)
            conn.sendall(b"POST /wait/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            with contextlib.suppress(TimeoutError):
                conn.sendall(b"2\r\nab\r\n" * 40000)  # 80 KB of body, over body_buffer
        grown = rss() - before
    finally:
        for conn in held:
            conn.close()
    assert grown < 25_000, f"{grown} kB for 50 bodies of 64 KiB buffered"


# -- timers --------------------------------------------------------------------------------


def test_a_head_that_never_ends_is_408_then_closed(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # and no blank line
        data = read_all(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert status(head) == 408
    assert json.loads(body)["error"] == "Request timeout"


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(h1: H1) -> None:
    with h1.connect() as conn:
        assert read_all(conn) == b""


def test_an_idle_kept_alive_connection_is_closed(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(GET)
        head, body = read_one(conn)
        assert (status(head), body) == (200, b"howdy")
        assert b"connection: close" not in head.lower()
        assert read_all(conn) == b""  # the keep-alive timeout closed it


# -- requests and answers ------------------------------------------------------------------


def test_a_small_answer_is_one_write(h1: H1) -> None:
    # the head waits for the body: the answer comes in one TCP segment with data
    # (tcp_info's tcpi_data_segs_in, Linux 4.6+, counted on the client's socket)
    with h1.connect() as conn:
        conn.sendall(GET)
        _, body = read_one(conn)
        assert body == b"howdy"
        time.sleep(0.2)  # anything written later would have arrived by now
        info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    (data_segs_in,) = struct.unpack_from("I", info, 152)
    assert data_segs_in == 1, f"the answer came in {data_segs_in} segments"


def test_the_answer_has_a_date_and_no_server_header(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(GET)
        head, _ = read_one(conn)
    names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
    assert b"date" in names and b"server" not in names


def test_the_scope(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /sc%6fpe?a=%20b HTTP/1.1\r\nHost: x.example\r\nX-Case: Kept  \r\n\r\n")
        _, body = read_one(conn)
    scope = ast.literal_eval(body.decode())
    assert scope["path"] == "/scope" and scope["raw_path"] == b"/sc%6fpe"
    assert scope["query_string"] == b"a=%20b"
    assert scope["headers"] == [["host", "x.example"], ["x-case", "Kept"]]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert (scope["http_version"], scope["method"], scope["scheme"]) == ("1.1", "GET", "http")
    assert scope["root_path"] == "" and scope["client"][0] == "127.0.0.1"
    assert scope["state"] == {"started": True}  # from the lifespan


@pytest.mark.parametrize("apart", [False, True])
def test_pipelined_requests_are_answered_in_order(h1: H1, apart: bool) -> None:
    # apart: what comes behind the first pipelined request is held, then parsed in turn
    parts = [
        b"GET /wait/0.3 HTTP/1.1\r\nHost: x\r\n\r\nGET /wait/0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhel",
        b"lo",
    ]
    with h1.connect() as conn:
        for part in parts if apart else [b"".join(parts)]:
            conn.sendall(part)
            time.sleep(0.05 if apart else 0)
        data = read_all(conn)
    bodies = re.findall(rb"\r\n\r\n(/wait/[0-9.]+|hello)", data)
    assert bodies == [b"/wait/0.3", b"/wait/0", b"hello"], data


def test_a_client_that_does_not_read_its_answers_is_not_read_either(h1: H1) -> None:
    # pipelined requests from a client that never reads: the server stops reading while
    # its answers wait to be written, rather than buffer answer after answer
    def served() -> int:
        return h1.log.read_text(errors="replace").count("big answer")

    before = served()
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with conn:
        conn.connect(("127.0.0.1", h1.port))
        for _ in range(50):  # 400 answers of 256 KiB, 8 asked at a time
            conn.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 8)
            time.sleep(0.02)
        seen = -1
        while seen != served():  # until the server serves no more
            seen = served()
            time.sleep(0.5)
    assert seen - before < 100, f"{seen - before} answers of 256 KiB buffered for the client"


def test_a_bad_request_behind_a_good_one_is_refused_after_its_answer(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /wait/0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
        data = read_all(conn)
    first, _, second = data.partition(b"/wait/0.2")
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 400 "), data


def test_an_answer_without_a_length_is_chunked(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


@pytest.mark.parametrize("path", ["/long", "/short"])
def test_a_body_other_than_the_declared_length_closes_the_connection(h1: H1, path: str) -> None:
    with h1.connect() as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() + GET)
        data = read_all(conn)  # closed: the GET behind it is never answered
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 10" in head.lower()
    assert body == (b"0123456789" if path == "/long" else b"01234")


def test_head_has_no_body(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until(conn, b"\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length: 5" in head.lower() and rest == b""
        conn.sendall(GET)  # the next answer follows at once
        head, body = read_one(conn)
    assert (status(head), body) == (200, b"howdy")


def test_http10_closes_unless_keep_alive_is_asked(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        head, _, body = read_all(conn).partition(b"\r\n\r\n")
        assert body == b"howdy" and b"connection: close" in head.lower()
    with h1.connect() as conn:
        conn.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, body = read_one(conn)
        assert b"connection: keep-alive" in head.lower()
        conn.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_one(conn)[1] == b"howdy"


def test_http10_with_a_transfer_coding_is_answered_then_closed(h1: H1) -> None:
    # RFC 9112 6.1: its framing is faulty (an HTTP/1.0 hop before may have read it
    # otherwise), so nothing after it on the connection is taken as a request
    with h1.connect() as conn:
        conn.sendall(
            b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\nGET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
        head, _, body = read_all(conn).partition(b"\r\n\r\n")
    assert body == b"hello" and b"connection: close" in head.lower()


def test_http10_without_a_length_is_close_delimited(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = read_all(conn).partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == b"one two three"


def test_a_204_goes_out_without_a_length(h1: H1) -> None:
    # RFC 9110 8.6: no Content-Length on a 204; a header value may be a bytearray
    with h1.connect() as conn:
        conn.sendall(b"GET /no-content HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until(conn, b"\r\n\r\n")
        head = data.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 204 ") and b"x-kind: none" in head
        assert b"content-length" not in head and b"transfer-encoding" not in head
        conn.sendall(GET)
        assert read_one(conn)[1] == b"howdy"


def test_an_answer_never_goes_out_with_both_framings(h1: H1) -> None:
    # RFC 9112 6.1: a sender must not send Content-Length with Transfer-Encoding; the
    # app's chunks are the body, so its (wrong) length goes
    with h1.connect() as conn:
        conn.sendall(b"GET /both-framings HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_until(conn, b"0\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"content-length" not in head.lower()
        assert body == b"4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n"
        conn.sendall(GET)
        assert read_one(conn)[1] == b"howdy"  # the connection is in step
    # and an HTTP/1.0 client, which reads no chunks, gets a body ended by the close
    with h1.connect() as conn:
        conn.sendall(b"GET /both-framings HTTP/1.0\r\n\r\n")
        head, _, body = read_all(conn).partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert body == b"one two"


def test_connection_close_is_honoured(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET)
        data = read_all(conn)
    assert data.count(b"HTTP/1.1 200") == 1 and b"connection: close" in data.lower()


def test_an_upgrade_to_another_protocol_is_plain_http_body_and_all(h1: H1) -> None:
    # curl --http2 on http:// asks for h2c on every request, a POST's too: not served,
    # so the request is an HTTP/1.1 one, its body the app's to read
    with h1.connect() as conn:
        conn.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\n"
            b"hello" + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = read_all(conn)
    assert re.findall(rb"\r\n\r\n(hello|howdy)", data) == [b"hello", b"howdy"], data


def test_100_continue_is_sent_when_the_app_reads_the_body(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"hello")
        head, body = read_one(conn)
    assert (status(head), body) == (200, b"hello")


def test_no_100_continue_when_the_app_answers_without_the_body(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        data = read_all(conn)  # the final answer, then closed (the body never came)
    assert data.startswith(b"HTTP/1.1 200 ") and b" 100 " not in data


def test_an_unread_body_is_discarded_and_the_connection_kept(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
        conn.sendall(b"x" * 3000 + b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(conn)
    assert re.findall(rb"\r\n\r\n(ignored|howdy)", data) == [b"ignored", b"howdy"], data


def test_an_unread_body_over_max_discard_closes_the_connection(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        head, _, body = read_all(conn).partition(b"\r\n\r\n")
    assert body == b"ignored" and b"connection: close" in head.lower()


def test_the_app_sees_the_client_leave(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"POST /until-gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nsome")
    until(lambda: h1.said("saw http.disconnect"), WAIT, "the app saw http.disconnect")


LONG_POLL = {  # a request whose head and body are whole, then the client's FIN
    "get": b"GET /long-poll?get HTTP/1.1\r\nHost: x\r\n\r\n",
    "post": b"POST /long-poll?post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
}


@pytest.mark.parametrize("case", list(LONG_POLL))
def test_a_client_that_half_closes_is_gone_for_the_app_waiting_in_receive(
    h1: H1, case: str
) -> None:
    # a FIN ends the connection, as uvicorn and nginx take it: the app waiting for the
    # client to leave sees http.disconnect, and what it sends after goes nowhere
    with h1.connect() as conn:
        conn.sendall(LONG_POLL[case])
        conn.shutdown(socket.SHUT_WR)
        assert read_all(conn) == b""  # closed, without an answer
    until(lambda: h1.said(f"the long poll {case} answered"), WAIT, "the long poll ended")
    assert h1.said(f"the long poll {case} saw http.disconnect")
    assert not h1.said("its answer to GET /long-poll") and not h1.said("to POST /long-poll")


def test_requests_pipelined_before_a_fin_are_dropped(h1: H1) -> None:
    # as uvicorn: the FIN is seen behind pipelined requests (what comes behind the first
    # is held, not left unread), the request answered is gone and none pipelined runs
    with h1.connect() as conn:
        conn.sendall(
            b"GET /long-poll?pipelined HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /note/pipelined-1 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        time.sleep(0.1)  # (most likely) read apart, so held
        conn.sendall(b"GET /note/pipelined-2 HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        assert read_all(conn) == b""
    until(lambda: h1.said("the long poll pipelined answered"), WAIT, "the long poll ended")
    with h1.connect() as conn:  # the server has gone on since
        conn.sendall(GET)
        read_one(conn)
    assert not h1.said("noted /note/pipelined-")


def test_a_client_gone_during_a_streamed_answer_is_no_app_error(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(conn, b"started")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
    until(lambda: h1.said("slow answered"), WAIT, "the app sent the rest")
    with h1.connect() as conn:  # the server has gone on since
        conn.sendall(GET)
        read_one(conn)
    assert not h1.said("the app returned before its answer to GET /slow was whole")


def test_every_task_waiting_in_receive_sees_the_client_leave(h1: H1) -> None:
    with h1.connect() as conn:
        conn.sendall(b"GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(conn, b"watching")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
    until(lambda: h1.said("the watcher saw http.disconnect"), WAIT, "the watcher woke")


@pytest.mark.parametrize("path", ["/boom", "/nothing"])
def test_an_app_that_fails_is_a_500_without_its_traceback(h1: H1, path: str) -> None:
    with h1.connect() as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = read_all(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert status(head) == 500 and json.loads(body) == {"error": "Internal Server Error"}
    assert b"secret" not in data and b"Traceback" not in data
    if path == "/boom":  # the traceback goes to the log
        until(lambda: h1.said("ValueError: a secret traceback detail"), WAIT, "logged")


# -- WebSockets ----------------------------------------------------------------------------


def _websocket(h1: H1, path: str, rcvbuf: int = 0) -> socket.socket:
    conn = socket.socket()
    if rcvbuf:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    conn.settimeout(WAIT)
    conn.connect(("127.0.0.1", h1.port))
    conn.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(1)
    assert data.startswith(b"HTTP/1.1 101 "), data
    return conn


def test_websocket_senders_waiting_together_for_a_slow_client_all_go_on(h1: H1) -> None:
    with _websocket(h1, "/ws-two-senders") as conn:
        time.sleep(0.5)  # both senders wait for the client to read
        data = b""
        while not data.endswith(b"\x88\x02\x03\xe8"):  # ... "done", then close 1000
            chunk = conn.recv(1 << 20)
            assert chunk, "closed"
            data += chunk
    assert b"\x81\x04done" in data and len(data) > 80 * 262144


def test_websocket_pings_from_a_client_that_does_not_read_are_not_all_read(h1: H1) -> None:
    # the pongs would pile up: reading pauses while the client does not read them
    ping = b"\x89\xfd\x00\x00\x00\x00" + b"p" * 125
    with _websocket(h1, "/ws", rcvbuf=4096) as conn:
        conn.settimeout(2)
        sent = 0
        with pytest.raises(TimeoutError):
            while sent < 80_000_000:  # well over what the kernel buffers hold
                conn.sendall(ping * 8000)
                sent += len(ping) * 8000
        conn.settimeout(WAIT)  # the pongs, once read
        data = b""
        while len(data) < 1_000_000:
            chunk = conn.recv(1 << 20)
            assert chunk, "closed"
            data += chunk
    assert data.startswith(b"\x8a\x7d" + b"p" * 125)


# -- processes of their own ----------------------------------------------------------------


def test_sigterm_lets_a_request_under_way_finish_and_exits_0(tmp_path: Path) -> None:
    from tests.support.processes import ROOT

    port = free_port()
    log = tmp_path / "server.log"
    argv = [a.replace("{port}", str(port)) for a in _command()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=out)
        try:
            until(lambda: _answers(port), 20, "the server answers")
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
                conn.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                data = read_until(conn, b"started")
                proc.send_signal(signal.SIGTERM)
                data += read_all(conn)
            assert data.endswith(b"8\r\nfinished\r\n0\r\n\r\n"), data
            assert b"connection: close" not in data.lower()  # the head went before the stop
            assert proc.wait(WAIT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "lifespan shutdown" in log.read_text()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(GET)
            return read_one(conn)[1] == b"howdy"
    except OSError:
        return False


def test_connections_over_max_connections_are_closed(tmp_path: Path) -> None:
    command = _command("max_connections=2")
    with running(command, ready_path="/hello", log=tmp_path / "server.log") as url:
        port = int(url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(2)]
        try:
            for conn in held:  # each has its place (kept alive)
                conn.sendall(GET)
                assert read_one(conn)[1] == b"howdy"
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as third:
                try:
                    third.sendall(GET)
                    assert read_all(third) == b""
                except ConnectionResetError:
                    pass
        finally:
            for conn in held:
                conn.close()


def _tls_get(port: int, context: Any) -> bytes:
    """``GET /hello`` over TLS on a connection of its own: the answer's body."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(GET)
        return read_one(conn)[1]


def _tls_served(port: int, context: Any) -> bool:
    """Whether ``_tls_get`` is answered, rather than refused (no place free)."""
    try:
        return _tls_get(port, context) == b"howdy"
    except (ssl.SSLError, ConnectionError):
        return False


@contextlib.contextmanager
def _tls_server(
    tmp_path: Path, *options: str, files: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], int, Any]]:
    """A TLS server process of its own, once it takes connections, ended (by its PID)
    at the end if it still runs; ``files``: its limit of open file descriptors."""
    import resource

    from tests.support.processes import ROOT

    def limit() -> None:
        if files:
            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    tls = tls_files(tmp_path)
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in _command(f"tls={tmp_path}", *options)]
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=out, preexec_fn=limit)

    def takes() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        until(takes, 20, "the server takes connections")
        yield proc, port, tls.trusting()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_over_tls_a_connection_holds_its_place_from_the_accept_and_its_handshake_is_timed(
    tmp_path: Path,
) -> None:
    # clients that connect and never send a ClientHello take places: over the bound a
    # new connection is closed before its handshake, and a stalled handshake ends with
    # the head's timer (header_timeout=1), which frees its place
    with _tls_server(tmp_path, "max_connections=2") as (_, port, context):
        assert _tls_get(port, context) == b"howdy"
        silent = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(2)]
        try:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                _tls_get(port, context)  # both places taken by handshakes that never began
            for conn in silent:  # each closed by its timer, in about a second
                with contextlib.suppress(ConnectionResetError):
                    assert conn.recv(1) == b""
            assert _tls_get(port, context) == b"howdy"  # the places are free again
        finally:
            for conn in silent:
                conn.close()


def test_over_tls_a_stop_does_not_wait_for_handshakes_that_never_began(tmp_path: Path) -> None:
    # a connection made after the stop is closed at once: a handshake under way at the
    # stop is cut, as an idle connection is, rather than waited for (header_timeout)
    with (
        _tls_server(tmp_path, "header_timeout=60", "shutdown_timeout=60") as (proc, port, _),
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as silent,
    ):
        silent.sendall(b"\x16\x03\x01")  # the start of a record, then nothing
        until(lambda: _accepted(proc.pid, port) == 1, WAIT, "the connection accepted")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0


def test_over_tls_a_stopping_server_refuses_new_connections(tmp_path: Path) -> None:
    # as over plain HTTP: once stopping, the listening socket is closed (a client is
    # refused at once and may try another server), not left to queue connections that
    # no one will ever accept while requests under way finish
    with _tls_server(tmp_path, "shutdown_timeout=60") as (proc, port, context):
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as busy:
            busy.sendall(b"POST /long-poll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            until(lambda: _accepted(proc.pid, port) == 1, WAIT, "the request accepted")
            proc.send_signal(signal.SIGTERM)

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return False
                except ConnectionRefusedError:
                    return True
                except OSError:  # (kept waiting in the kernel's queue)
                    return False

            until(refused, WAIT, "a new connection refused")
            assert proc.poll() is None  # still finishing the long poll
        assert proc.wait(WAIT) == 0


def test_over_tls_accepts_that_fail_for_want_of_descriptors_are_logged_once(
    tmp_path: Path,
) -> None:
    # the accept is retried every 0.1 s while the process is out of file descriptors:
    # that is said once (and the recovery), not ten lines a second
    log = tmp_path / "server.log"
    silent: list[socket.socket] = []
    with _tls_server(tmp_path, "header_timeout=60", files=64) as (proc, port, context):
        try:
            for _ in range(500):  # it has 64 descriptors: it runs out well before
                if "accept failed" in log.read_text():
                    break
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
                time.sleep(0.01)
            else:
                raise AssertionError("no failed accept in 500 connections")
            time.sleep(1)  # a few retries, all failing
        finally:
            for conn in silent:
                conn.close()
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(GET)
            assert read_one(conn)[1] == b"howdy"  # serving again
        said = log.read_text()
        assert said.count("accept failed") == 1, said
        assert "accepting again, after" in said
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0


def test_over_tls_a_closed_connection_does_not_wait_for_the_clients_close_notify(
    tmp_path: Path,
) -> None:
    # a client that got its answer, stays connected and never reads again (so it never
    # answers the server's close_notify): once the server has closed its side (keep-alive
    # expiry, 1 s here) and the client's TCP has taken every byte, the connection ends
    # and its place is free - asyncio alone would wait 30 s for a close_notify
    with _tls_server(tmp_path, "max_connections=1", "keep_alive_timeout=1") as (_, port, ctx):
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as idle:
            idle.sendall(GET)
            assert read_one(idle)[1] == b"howdy"

            # (while the idle one still holds the only place, a new one is refused)
            until(lambda: _tls_served(port, ctx), 6, "the idle connection's place freed")
            # and the server closed the connection itself: the client reads its end
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                assert idle.recv(1) == b""


def test_over_tls_a_slow_reader_still_gets_the_whole_answer_after_the_close(
    tmp_path: Path,
) -> None:
    # the other side of the close above: a client that reads slowly, its window full,
    # with the answer's tail still in the server's buffers (small kernel buffers both
    # sides: the rest waits in the server's transport) when the server closes
    # (Connection: close): the tail is not cut, the close waits for it
    with _tls_server(tmp_path, "keep_alive_timeout=1", "sndbuf=4096") as (_, port, context):
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(WAIT)
        raw.connect(("127.0.0.1", port))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as slow:
            sent = os.urandom(20_000).hex().encode()  # 40 KB back: less than the transport
            # holds before it pauses the writer, more than the kernel's buffers take
            head = b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            slow.sendall(head + b"Content-Length: %d\r\n\r\n" % len(sent) + sent)
            time.sleep(2)  # the server has written all it could and closed meanwhile
            got = b""
            while chunk := slow.recv(4096):
                got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == sent


def test_over_tls_a_refusal_lingers_while_the_client_still_sends(tmp_path: Path) -> None:
    # as over plain HTTP (a lingering close): after the server's own error answer, what
    # the client still sends for keep_alive_timeout is read and dropped, not reset - a
    # client that writes its whole request before it reads then gets the answer (on
    # uvloop, as served here: plain asyncio's TLS close itself ends at the next byte)
    with _tls_server(tmp_path, "keep_alive_timeout=5") as (_, port, context):
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b"zz\r\n")  # not a chunk size: refused (400) and closed
            for _ in range(15):  # the rest of the body, for 3 s
                time.sleep(0.2)
                conn.sendall(b"x" * 1000)
            data = read_all(conn)
    assert status(data) == 400, data


def test_over_tls_a_closed_websocket_does_not_wait_for_the_clients_close_notify(
    tmp_path: Path,
) -> None:
    # as an HTTP connection's: once the server has closed a WebSocket (here after the
    # client's close frame) and the client's TCP has taken every byte, the connection
    # ends and its place is free; and the server's timers go on for the others
    with _tls_server(tmp_path, "max_connections=1") as (_, port, context):
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as ws:
            ws.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert read_until(ws, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
            ws.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000; then no more
            until(lambda: _tls_served(port, context), 6, "the closed WebSocket's place freed")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) as silent,
            contextlib.suppress(ConnectionResetError),  # its handshake timed out
        ):
            assert silent.recv(1) == b""


def test_over_tls_a_stop_does_not_wait_for_idle_clients_that_never_answer_close_notify(
    tmp_path: Path,
) -> None:
    with _tls_server(tmp_path, "keep_alive_timeout=60", "shutdown_timeout=60") as (
        proc,
        port,
        context,
    ):
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as idle:
            idle.sendall(GET)
            assert read_one(idle)[1] == b"howdy"
            proc.send_signal(signal.SIGTERM)  # the idle connection is closed at once
            assert proc.wait(WAIT) == 0


def _accepted(pid: int, port: int) -> int:
    """The connections to ``port`` process ``pid`` has accepted (and not closed): its
    sockets among the established ones in /proc/net/tcp (one the kernel holds for an
    accept to come has no socket yet)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            inodes.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        count += state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes
    return count


def test_a_client_that_reads_nothing_of_a_streamed_answer_is_cut_off(tmp_path: Path) -> None:
    # the app waits while its answer cannot be written: send_timeout bounds the wait
    log = tmp_path / "server.log"
    with running(_command("send_timeout=1"), ready_path="/hello", log=log) as url:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with conn:
            conn.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            conn.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            until(lambda: "endless answered" in log.read_text(), WAIT, "the app let go")
        assert "read nothing of its answer in 1s: closed" in log.read_text()
        h1 = H1(int(url.rsplit(":", 1)[1]), log)
        with _websocket(h1, "/ws-two-senders", rcvbuf=4096):  # and a WebSocket's
            until(lambda: h1.said("a WebSocket client read nothing in 1s"), WAIT, "cut off")


def test_a_queued_relayed_request_whose_client_half_closes_leaves_the_queue(
    procs: CoyoteProcesses,
) -> None:
    # `coyote leader --http coyote`: one slot, held; one place in the queue, taken by a
    # client that then half-closes: the relay, listening on its receive(), takes it out
    # (HAProxy's abortonclose), so it never reaches the instance and its place is free
    gate = threading.Event()

    def held(conn: socket.socket, request: Received) -> bool:
        gate.wait(3 * WAIT)  # longer than any wait of the test's
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")
        return True

    with LedgerUpstream(behaviours={"gate": held}) as up:
        leader = procs("leader", "--http", "coyote", "--concurrency", "1", "--queue", "1")
        routes = [{"method": "GET", "path": p} for p in ("/gate", "/later/{n:int}")]
        registration = {"service": "ledger", "instance": "one", "url": up.url, "routes": routes}
        r = httpx.post(f"{leader.url}/_coyote/registrations", headers=AUTH, json=registration)
        assert r.status_code == 201, r.text

        def queued() -> float:
            r = httpx.get(f"{leader.url}/_coyote/metrics", headers=AUTH)
            depth = re.search(r"^coyote_relay_queue_depth\{[^}]*\} (\S+)$", r.text, re.M)
            return float(depth[1]) if depth else -1

        def ask(target: str) -> socket.socket:
            conn = socket.create_connection(("127.0.0.1", leader.port), timeout=WAIT)
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return conn

        with ask("/gate") as holder:
            try:
                up.wait_for(1)
                with ask("/later/1") as quitter:
                    until(lambda: queued() == 1, WAIT, "queued")
                    quitter.shutdown(socket.SHUT_WR)
                    until(lambda: queued() == 0, WAIT, "out of the queue")
                    assert read_all(quitter) == b""
                with ask("/later/2") as live:  # its place, not a 503
                    gate.set()
                    assert read_one(holder)[1] == b"held"
                    assert status(read_one(live)[0]) == 200
            finally:
                gate.set()
    assert [r.target for r in up.requests] == [b"/gate", b"/later/2"]
    until(lambda: "GET /later/1 499 " in leader.stderr(), WAIT, "logged as 499")


def test_a_failed_startup_exits_1_with_one_line() -> None:
    from tests.support.processes import ROOT

    argv = [sys.executable, "-m", "tests.support.h1_server"]
    argv += ["tests.support.h1_apps:failing_startup", str(free_port())]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "ERROR coyote_mw.server the app's startup failed: no database"
    ]


def test_cookies_and_long_values_are_not_kept_among_the_checked_header_lines() -> None:
    # the server checks a response's header lines once each and keeps the ones it
    # checked; a session cookie must not stay in the process's memory that way
    from types import SimpleNamespace

    from coyote_mw.server import h1

    conn = SimpleNamespace(
        options=SimpleNamespace(max_discard=1), server=SimpleNamespace(extra=b"")
    )
    exchange = h1.Exchange(conn, [], "1.1", True, False)  # type: ignore[arg-type]
    exchange.more_body = False
    h1._VALID.clear()
    h1._HEADS.clear()
    exchange.start(
        200,
        [
            (b"content-type", b"text/plain"),
            (b"Set-Cookie", b"session=s3cr3t"),
            (b"x-long", b"v" * 100),
            (b"x-" + b"n" * 100, b"v"),  # a long name: bounded too
        ],
    )
    assert b"Set-Cookie: session=s3cr3t" in exchange.head
    assert sorted(h1._VALID) == [(b"content-type", b"text/plain")]
    assert h1._HEADS == {}  # nor is a head with such a line kept whole
    h1._VALID.clear()


def _started(
    version: str,
    keep_alive: bool,
    headers: Any,
    head_only: bool = False,
    status: int = 200,
) -> tuple[bytes, int | None, bool, bool, bool]:
    from types import SimpleNamespace

    from coyote_mw.server import h1

    conn = SimpleNamespace(
        options=SimpleNamespace(max_discard=1),
        server=SimpleNamespace(extra=b"server: coyote\r\n"),
    )
    exchange = h1.Exchange(conn, [], version, keep_alive, False)  # type: ignore[arg-type]
    exchange.more_body = False
    exchange.head_only = head_only
    exchange.start(status, headers)
    head = b"".join(
        line for line in exchange.head.splitlines(keepends=True) if not line.startswith(b"date:")
    )
    return head, exchange.remaining, exchange.chunked, exchange.keep_alive, exchange.head_only


def test_a_head_made_from_one_kept_is_the_head_made_afresh() -> None:
    # most responses repeat their head: the server keeps each it made (but its Date)
    # and takes it whole the next time; what it gives must be what it would have made
    from coyote_mw.server import h1

    text = [(b"content-type", b"text/plain")]
    sized = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    both = [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]
    cases: list[tuple[str, bool, Any, bool, int]] = [
        ("1.1", True, text, False, 200),  # chunked
        ("1.0", True, text, False, 200),  # close-delimited: not kept alive
        ("1.0", True, sized, False, 200),  # kept alive, said so
        ("1.1", False, sized, False, 200),  # connection: close
        ("1.1", True, both, False, 200),  # the length dropped
        ("1.0", True, both, False, 200),  # neither
        ("1.1", True, sized, True, 200),  # HEAD
        ("1.1", True, sized, False, 204),  # neither with a 204
        ("1.1", True, [*sized, (b"connection", b"close")], False, 200),
        ("1.1", True, sized, False, 404),
    ]
    fresh = []
    for case in cases:
        h1._HEADS.clear()
        fresh.append(_started(*case))
    h1._HEADS.clear()
    for _ in range(2):  # made, then taken from the kept ones
        assert [_started(*case) for case in cases] == fresh
    assert len(h1._HEADS) == len(cases)
    assert fresh[0][0] == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
        b"transfer-encoding: chunked\r\nserver: coyote\r\n\r\n"
    )
    assert fresh[1][1:] == (None, False, False, False)
    # lines given as any iterable, or as lists, are read once and served alike
    made = _started("1.1", True, sized)
    assert _started("1.1", True, iter(sized)) == made  # kept: taken from what was kept
    assert _started("1.1", True, [list(line) for line in sized]) == made  # not kept
    assert _started("1.1", True, (line for line in sized)) == made
    h1._HEADS.clear()


@pytest.mark.parametrize("status", [103, 99, 600, "200", None])
def test_a_status_no_response_can_have_is_refused_even_with_a_kept_head(status: Any) -> None:
    from coyote_mw.server import h1

    sized = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    h1._HEADS.clear()
    _started("1.1", True, sized)  # a head kept for these lines
    with pytest.raises(RuntimeError, match="status"):
        _started("1.1", True, sized, status=status)
    h1._HEADS.clear()


def test_a_connection_whose_timer_fails_is_closed_and_the_others_timers_go_on() -> None:
    # fault injection in a server run here: the first connection's timer raises; it is
    # closed (and said), and the second connection's header timer still ends it
    from coyote_mw.server import H1Connection, Options, Server

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = Server(app, Options(header_timeout=0.5, lifespan="off"))
    started = threading.Event()
    server.ready = started.set
    original = H1Connection.expired
    failing: list[H1Connection] = []

    def expired(self: H1Connection) -> None:
        if not failing:
            failing.append(self)
        if self is failing[0]:
            raise RuntimeError("a defect in one connection's timer")
        original(self)

    runner = threading.Thread(target=server.run, args=([sock],), daemon=True)
    with mock.patch.object(H1Connection, "expired", expired):
        runner.start()
        assert started.wait(WAIT)
        first = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        first.sendall(b"GET / HTTP/1.1\r\n")  # a head begun, never ended: its timer
        until(lambda: failing, WAIT, "the first connection's timer")
        second = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        with first, second:
            assert first.recv(100) == b""  # closed (aborted) after its failure
            second.sendall(b"GET / HTTP/1.1\r\n")
            assert read_all(second).startswith(b"HTTP/1.1 408 ")  # its timer still ran
        server.loop.call_soon_threadsafe(server.stop, True)
        runner.join(WAIT)
