"""Relaying without ASGI (``coyote_mw.middleware.direct``): what ``coyote leader --http
coyote`` does with a bodyless request when a relay slot is free and the instance's pool
has an idle connection.  Each test runs the leader on coyote's own server in a process
of its own, in front of a ledger upstream (tests/support/ledger.py: the exact bytes it
got, misbehaving on command), and speaks to it over raw sockets.  The server says on
stderr which requests the shortcut took (tests/support/direct_apps.py), so every test
checks that the path it means to test is the one that served.

The server matrix (tests/test_matrix.py, ``coyote-h1``) runs every relay case on the
same server with the shortcut on."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from tests.support.ledger import LedgerUpstream, Received, _answer, _reset
from tests.support.processes import running, until

SERVER = [
    sys.executable,
    "-m",
    "tests.support.h1_server",
    "tests.support.direct_apps:app",
    "{port}",
    "shortcut=tests.support.direct_apps:shortcut",
]


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    whole: bool = False  # the response ended as its framing says
    head: bytes = b""  # the raw bytes of the head

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class Client:
    """One kept-alive connection to the leader; a response is read to its end (or to the
    connection's), bounded in time."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, target: str, method: str = "GET", version: str = "1.1") -> Answer:
        self.send(f"{method} {target} HTTP/{version}\r\nHost: leader\r\n\r\n".encode())
        return self.read(head_only=method == "HEAD")

    def read(self, head_only: bool = False) -> Answer:
        """One response, read to its end (or the connection's); what came behind it (a
        pipelined request's answer) waits in ``buffer`` for the next read."""
        answer = Answer()
        state = {"done": False, "headed": False}

        class Reader:
            def on_header(self, name: bytes, value: bytes) -> None:
                answer.headers.append((name, value))

            def on_headers_complete(self) -> None:
                state["headed"] = True
                if head_only:  # no body follows (httptools cannot be told so)
                    state["done"] = True

            def on_body(self, body: bytes) -> None:
                answer.body += body

            def on_message_complete(self) -> None:
                state["done"] = True

        parser = httptools.HttpResponseParser(Reader())
        pending, self.buffer = self.buffer, b""
        while True:
            # fed no further than this response's end: a byte at a time through the
            # head (and a body of unknown length), its Content-Length's worth after it
            while pending and not state["done"]:
                step = 1
                length = answer.header(b"content-length")
                if state["headed"] and length is not None:
                    step = max(1, int(length) - len(answer.body))
                piece, pending = pending[:step], pending[step:]
                answer.head += piece
                with contextlib.suppress(httptools.HttpParserError):
                    parser.feed_data(piece)
            if state["done"]:
                self.buffer = pending
                end = answer.head.find(b"\r\n\r\n")
                answer.head = answer.head[: end + 4]
                answer.status = parser.get_status_code()
                answer.whole = True
                return answer
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                data = b""
            if not data:
                self.closed = True
                answer.whole = False
                with contextlib.suppress(httptools.HttpParserError):
                    answer.status = parser.get_status_code()
                return answer
            pending = data

    def close(self) -> None:
        self.sock.close()


@dataclass
class Leader:
    port: int
    upstream: LedgerUpstream
    log: Path

    def direct(self) -> list[str]:
        """What the shortcut took so far: ``METHOD TARGET`` each."""
        text = self.log.read_text(errors="replace")
        return [line[len("direct ") :] for line in text.splitlines() if line.startswith("direct ")]

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def warm(self) -> None:
        """A request that leaves an idle pooled connection to the instance behind."""
        client = Client(self.port)
        assert client.get("/warm").status == 200
        client.close()


@contextlib.contextmanager
def leader(tmp_path: Path, upstream: LedgerUpstream | None = None, **env: str) -> Iterator[Leader]:
    with contextlib.ExitStack() as stack:
        up = upstream or stack.enter_context(LedgerUpstream())
        log = tmp_path / "leader.log"
        url = stack.enter_context(
            running(SERVER, ready_path="/ready", env={"UPSTREAM": up.url, **env}, log=log)
        )
        yield Leader(int(url.rsplit(":", 1)[1]), up, log)


def _without_id(request: Received) -> bytes:
    return b"\r\n".join(
        line for line in request.raw.split(b"\r\n") if not line.lower().startswith(b"x-request-id")
    )


def test_a_request_on_a_warm_pool_goes_out_as_the_asgi_path_sends_it(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        client = Client(lead.port)
        first = client.get("/echo/a?q=1&x=%20")  # a cold pool: the ASGI path
        second = client.get("/echo/a?q=1&x=%20")  # the connection it left: direct
        assert (first.status, second.status) == (200, 200)
        assert lead.direct() == ["GET /echo/a?q=1&x=%20"]
        one, two = lead.upstream.wait_for(2)
        # byte for byte the same request, but for the request id each is given
        assert _without_id(one) == _without_id(two)
        assert one.header("x-request-id") != two.header("x-request-id")
        assert two.target == b"/echo/a?q=1&x=%20"
        assert two.header("via") is not None and two.header("x-forwarded-for") == b"127.0.0.1"

        # and the same answer but for its Date
        def plain(answer: Answer) -> list[tuple[bytes, bytes]]:
            return [(k, v) for k, v in answer.headers if k.lower() != b"date"]

        assert plain(first) == plain(second)
        assert second.header(b"content-length") == b"0"
        client.close()


def test_the_access_line_names_the_instance_and_the_request_id_sent(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        assert client.get("/status/201").status == 201
        assert lead.direct() == ["GET /status/201"]
        sent = lead.upstream.wait_for(2)[-1].header("x-request-id")
        assert sent is not None
        line = "GET /status/201 201 "
        until(lambda: lead.said(line), 5, "the access line")
        text = next(t for t in lead.log.read_text().splitlines() if line in t)
        assert "route=/status/{rest:path} service=ledger" in text
        assert f"instance={lead.upstream.url}" in text
        assert f"request_id={sent.decode()}" in text
        client.close()


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/status/204", 204, b""),
        ("/status/304", 304, b""),
        ("/status/404", 404, b"status 404"),
        ("/close-delimited/3000", 200, b"x" * 3000),  # re-framed: chunked
    ],
)
def test_statuses_and_framings_pass_through(
    tmp_path: Path, target: str, status: int, body: bytes
) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get(target)
        assert (answer.status, answer.body, answer.whole) == (status, body, True)
        assert lead.direct() == [f"GET {target}"]
        if target.startswith("/close"):
            assert answer.header(b"transfer-encoding") == b"chunked"
            assert answer.header(b"connection") is None  # the instance's close is its own
        # the connection carries the next request
        assert client.get("/status/200").status == 200
        client.close()


def test_head_gets_the_instances_length_and_no_body(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get("/status/200", method="HEAD")
        assert answer.status == 200 and answer.body == b""
        assert answer.header(b"content-length") == b"10"  # "status 200"
        assert lead.direct() == ["HEAD /status/200"]
        assert client.get("/status/202").status == 202  # nothing left on the wire
        client.close()


def test_an_http_1_0_client_gets_a_close_delimited_body(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get("/close-delimited/100", version="1.0")
        assert answer.status == 200 and answer.body == b"x" * 100
        assert answer.header(b"transfer-encoding") is None
        assert client.closed
        assert lead.direct() == ["GET /close-delimited/100"]


def test_a_pooled_connection_found_closed_sends_the_request_again(tmp_path: Path) -> None:
    # /fresh-only resets a kept-alive connection's second request unanswered: the
    # shortcut gives the request to the ASGI path, which sends it on a new connection
    with leader(tmp_path) as lead:
        client = Client(lead.port)
        assert client.get("/fresh-only").status == 200  # leaves its connection idle
        again = client.get("/fresh-only")
        assert (again.status, again.body) == (200, b"fresh")
        assert lead.direct() == ["GET /fresh-only"]
        got = [r for r in lead.upstream.wait_for(3) if r.target == b"/fresh-only"]
        assert [r.nth for r in got] == [0, 1, 0]
        assert client.get("/status/200").status == 200
        client.close()


def test_a_request_sent_again_after_a_closed_pooled_connection_goes_to_the_same_instance(
    tmp_path: Path,
) -> None:
    # the shortcut's turn of the round robin (each route has its own) is given back
    # when the ASGI path takes the request: it goes to the instance it was picked
    # for, on a new connection, as the transport's own retry does
    with LedgerUpstream() as other, leader(tmp_path, UPSTREAM2=other.url) as lead:
        for _ in range(2):  # an idle connection to each instance
            lead.warm()
        client = Client(lead.port)
        answer = client.get("/fresh-only")  # the first's idle connection resets it
        assert (answer.status, answer.body) == (200, b"fresh")
        assert lead.direct() == ["GET /fresh-only"]
        got = [r.nth for r in lead.upstream.wait_for(3) if r.target == b"/fresh-only"]
        assert got == [1, 0]
        client.close()
        assert [r.target for r in other.wait_for(1)] == [b"/warm"]
        assert not lead.said("failed")


def test_a_request_sent_again_keeps_to_its_instance_when_another_was_picked_meanwhile(
    tmp_path: Path,
) -> None:
    # the first instance holds the request its stale pooled connection carried, while a
    # second client's request to the same route is picked for the other instance; then
    # it resets the connection unanswered: the turn given back is no longer the one the
    # first request took, and giving it back would send that request to the other
    # instance (and the other instance two turns in a row)
    held = threading.Event()

    def first(conn: socket.socket, request: Received) -> bool:
        if request.nth == 0:
            _answer(conn, 200, b"first")
            return True
        held.wait(10)
        return _reset(conn, request)

    def second(conn: socket.socket, request: Received) -> bool:
        _answer(conn, 200, b"second")
        return True

    with (
        LedgerUpstream(behaviours={"own": first}) as one,
        LedgerUpstream(behaviours={"own": second}) as two,
        leader(tmp_path, one, UPSTREAM2=two.url) as lead,
    ):
        for _ in range(2):  # an idle connection to each instance
            lead.warm()
        early = Client(lead.port)
        early.send(b"GET /own/early HTTP/1.1\r\nHost: leader\r\n\r\n")
        assert [r.target for r in one.wait_for(2)] == [b"/warm", b"/own/early"]
        late = Client(lead.port)
        assert late.get("/own/late").body == b"second"
        held.set()
        answer = early.read()
        assert (answer.status, answer.body) == (200, b"first")
        assert lead.direct() == ["GET /own/early", "GET /own/late"]
        assert [r.target for r in two.wait_for(2)] == [b"/warm", b"/own/late"]
        early.close()
        late.close()


def test_no_head_within_the_timeout_is_504_and_frees_the_slot(tmp_path: Path) -> None:
    with leader(tmp_path, TIMEOUT="0.5", CONCURRENCY="1", QUEUE="0") as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get("/hang")
        assert answer.status == 504
        assert b'"error"' in answer.body and answer.whole
        assert lead.direct() == ["GET /hang"]
        # the only slot is free again, and the connection goes on
        assert client.get("/status/200").status == 200
        client.close()


def test_a_body_that_pauses_too_long_is_cut(tmp_path: Path) -> None:
    with leader(tmp_path, STREAM_IDLE="0.3") as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get("/pause/3000")  # one byte, then the other 3 s later
        assert answer.status == 200 and answer.body == b"x"
        assert not answer.whole and client.closed
        assert lead.direct() == ["GET /pause/3000"]
        until(lambda: lead.said("no response body bytes"), 5, "the cut said in the log")


def test_a_body_the_instance_resets_is_cut(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get("/cut/2000")
        assert answer.status == 200 and answer.body == b"x" * 2000
        assert not answer.whole and client.closed  # no last chunk: the client knows
        assert lead.direct() == ["GET /cut/2000"]


@pytest.mark.parametrize("case", ["gzip", "length-and-te", "two-lengths"])
def test_a_malformed_response_is_502(tmp_path: Path, case: str) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        answer = client.get(f"/framing/{case}")
        assert answer.status == 502 and b"Routing error" in answer.body
        assert lead.direct() == [f"GET /framing/{case}"]
        assert client.get("/status/200").status == 200
        client.close()


def test_a_response_head_over_the_bound_is_502(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        assert client.get("/big-head/100").status == 502  # max_response_head: 60 KiB
        assert lead.direct() == ["GET /big-head/100"]
        client.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_a_client_that_leaves_frees_its_slot_and_the_instances_connection(
    tmp_path: Path, how: str
) -> None:
    with leader(tmp_path, CONCURRENCY="1", QUEUE="0") as lead:
        lead.warm()
        client = Client(lead.port)
        client.send(b"GET /hang HTTP/1.1\r\nHost: leader\r\n\r\n")
        until(lambda: lead.direct() == ["GET /hang"], 5, "the request relayed")
        if how == "reset":  # SO_LINGER 0: close() sends RST
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        # the one slot comes back: without it every request would be refused 503
        until(lambda: Client(lead.port).get("/status/200").status == 200, 5, "a free slot")
        # and the instance saw its connection closed (its /hang thread ended)
        hung = next(r for r in lead.upstream.wait_for(3) if r.target == b"/hang")
        until(lambda: not _open(lead.upstream, hung.connection), 5, "the connection closed")


def _open(upstream: LedgerUpstream, index: int) -> bool:
    sock = upstream._socks[index]
    return sock.fileno() != -1


def test_a_request_pipelined_behind_a_relayed_one_is_answered_after_it(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        client.send(
            b"GET /drip/3/50 HTTP/1.1\r\nHost: leader\r\n\r\n"
            b"GET /status/202 HTTP/1.1\r\nHost: leader\r\n\r\n"
        )
        first, second = client.read(), client.read()
        assert (first.status, first.body, second.status) == (200, b"xxx", 202)
        assert lead.direct()[0] == "GET /drip/3/50"
        client.close()


def test_what_is_not_relayed_directly_takes_the_asgi_path(tmp_path: Path) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        client.send(b"POST /echo HTTP/1.1\r\nHost: leader\r\nContent-Length: 2\r\n\r\nhi")
        assert client.read().body == b"hi"
        assert client.get("/nowhere").status == 404
        client.send(b"GET /x HTTP/1.1\r\nHost: leader\r\nHost: other\r\n\r\n")
        assert client.read().status == 400  # refused by the server itself
        assert lead.direct() == []
        client.close()


def test_instances_take_turns_as_on_the_asgi_path(tmp_path: Path) -> None:
    # a request the shortcut declines (no idle connection to its instance yet) goes to
    # that same instance on the ASGI path: declining takes no turn of the round robin,
    # or the instance without an idle connection would never be given one
    with LedgerUpstream() as other, leader(tmp_path, UPSTREAM2=other.url) as lead:
        client = Client(lead.port)
        for _ in range(6):
            assert client.get("/status/200").status == 200
        client.close()
        assert len(lead.upstream.wait_for(3)) == 3
        assert len(other.wait_for(3)) == 3
        assert lead.direct()  # and the shortcut took some


def _big(conn: socket.socket, request: Received) -> bool:
    size = int(request.target.split(b"/")[2]) * 1024 * 1024
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
    block = b"b" * 65536
    for _ in range(size // len(block)):
        conn.sendall(block)
    return True


def test_a_client_that_reads_slowly_is_not_the_instances_pause(tmp_path: Path) -> None:
    # the client lets the body wait longer than stream_idle_timeout (not send_timeout):
    # only the instance's own pauses count, and the client gets the whole body, as on
    # the ASGI path (the first request: a cold pool)
    size = 32 * 1024 * 1024
    with (
        LedgerUpstream(behaviours={"own": _big}) as up,
        leader(tmp_path, up, STREAM_IDLE="0.5") as lead,
    ):
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", lead.port))
            sock.sendall(b"GET /own/32 HTTP/1.1\r\nHost: leader\r\n\r\n")
            time.sleep(2)  # reads nothing for a while
            got = b""
            while b"\r\n\r\n" not in got:
                got += sock.recv(65536)
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            count = len(body)
            while count < size:
                data = sock.recv(1 << 20)
                if not data:
                    break
                count += len(data)
            assert count == size
            sock.close()
        assert lead.direct() == ["GET /own/32"]
        assert not lead.said("no response body bytes")


def _unavailable_cut(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 503 X\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    time.sleep(0.3)  # the bytes are read and passed on before the reset
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


def test_a_503_whose_body_is_cut_is_a_failure_of_the_instance(tmp_path: Path) -> None:
    # as on the ASGI path: the body cut is the instance's gateway failure, whatever its
    # status (one ejects it here: EJECT_AFTER=1, one instance of two may be ejected)
    with (
        LedgerUpstream(behaviours={"own": _unavailable_cut}) as up,
        LedgerUpstream() as other,
        leader(tmp_path, up, UPSTREAM2=other.url, EJECT_AFTER="1") as lead,
    ):
        for _ in range(2):  # an idle connection to each instance
            lead.warm()
        client = Client(lead.port)
        answer = client.get("/own/x")
        assert answer.status == 503 and not answer.whole
        assert lead.direct() == ["GET /own/x"]
        until(lambda: lead.said(f"instance {up.url} ejected"), 5, "the instance ejected")


# -- a connection's repeated heads (Direct's memo) --------------------------------------


def _get(client: Client, target: str, *lines: str) -> Answer:
    extra = "".join(f"{line}\r\n" for line in lines)
    client.send(f"GET {target} HTTP/1.1\r\nHost: leader\r\n{extra}\r\n".encode())
    return client.read()


def test_a_repeated_head_gets_the_same_lines_and_a_new_request_id_each_time(
    tmp_path: Path,
) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        for _ in range(4):
            assert _get(client, "/status/200", "Accept: */*").status == 200
        # the client's own id is sent as it is, each time; one not valid is replaced
        for given in ("abc-1", "abc-1", "abc-2", "not valid!"):
            assert _get(client, "/status/200", f"X-Request-Id: {given}").status == 200
        client.close()
        assert len(lead.direct()) == 8
        sent = lead.upstream.wait_for(9)[1:]
        ids = [r.header("x-request-id") for r in sent]
        assert len(set(ids[:4])) == 4 and all(i and len(i) == 32 for i in ids[:4])
        assert len({_without_id(r) for r in sent[:4]}) == 1
        assert ids[4:7] == [b"abc-1", b"abc-1", b"abc-2"]
        assert ids[7] not in (b"not valid!", None) and len(ids[7] or b"") == 32
        assert [r.header_values("x-request-id") for r in sent[4:]] == [[i] for i in ids[4:]]


def test_a_head_that_changes_on_a_connection_is_checked_and_forwarded_anew(
    tmp_path: Path,
) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        assert _get(client, "/status/200", "X-Custom: a").status == 200
        assert _get(client, "/status/200", "X-Custom: b").status == 200
        client.send(b"GET /status/200 HTTP/1.1\r\nHost: not a host\r\n\r\n")
        refused = client.read()
        assert refused.status == 400 and b"Host" in refused.body
        assert _get(client, "/status/200", "X-Custom: b").status == 200
        client.close()
        assert lead.direct() == ["GET /status/200"] * 3
        sent = lead.upstream.wait_for(4)[1:]
        assert [r.header("x-custom") for r in sent] == [b"a", b"b", b"b"]


def test_a_head_an_app_changed_in_place_is_checked_when_a_client_sends_it(
    tmp_path: Path,
) -> None:
    # the server hands its header list to the app; an app that changes it must not change
    # what the shortcut remembers as checked: the same lines sent next are checked (here:
    # a Via naming this leader, a loop, 508)
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        assert _get(client, "/meddle").body == b"meddled"
        pseudonym = lead.upstream.wait_for(1)[0].header("via")
        assert pseudonym is not None
        looped = _get(client, "/status/200", f"Via: {pseudonym.decode()}")
        assert looped.status == 508, looped.head
        client.close()
        assert len(lead.upstream.wait_for(1)) == 1  # the warm-up's only


def test_each_instance_gets_its_own_host_line_on_one_connection(tmp_path: Path) -> None:
    with LedgerUpstream() as other, leader(tmp_path, UPSTREAM2=other.url) as lead:
        client = Client(lead.port)
        for _ in range(8):
            assert _get(client, "/status/200").status == 200
        client.close()
        assert len(lead.direct()) >= 4
        for ledger in (lead.upstream, other):
            netloc = ledger.url.split("://", 1)[1].encode()
            assert {r.header("host") for r in ledger.wait_for(4)} == {netloc}


def test_a_setting_changed_between_two_requests_of_a_connection_applies_to_the_second(
    tmp_path: Path,
) -> None:
    with leader(tmp_path) as lead:
        lead.warm()
        client = Client(lead.port)
        spoofed = "X-Forwarded-For: 10.0.0.9"
        assert _get(client, "/status/200", spoofed).status == 200
        assert _get(client, "/status/200", spoofed).status == 200
        other = Client(lead.port)
        other.send(b"POST /_trust HTTP/1.1\r\nHost: leader\r\nContent-Length: 9\r\n\r\n127.0.0.1")
        assert other.read().status == 204
        other.close()
        assert _get(client, "/status/200", spoofed).status == 200
        client.close()
        assert lead.direct() == ["GET /status/200"] * 3
        sent = [r for r in lead.upstream.wait_for(4) if r.target == b"/status/200"]
        assert [r.header("x-forwarded-for") for r in sent] == [
            b"127.0.0.1",
            b"127.0.0.1",
            b"10.0.0.9, 127.0.0.1",  # from a proxy it now trusts
        ]


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("/status/600", "the upstream sent status 600"),
        ("/under-100", "the upstream sent status 099"),
        ("/interim-content", "the upstream sent content with a 1xx response"),
    ],
)
def test_a_response_no_status_or_1xx_allows_is_502_on_either_path(
    tmp_path: Path, target: str, said: str
) -> None:
    # llhttp reads any three digits, and the content a 1xx other than 100-103 announces;
    # HTTP's statuses are 100-599 and a 1xx ends with its head (RFC 9110 15, 15.2): the
    # instance sent no valid response (nginx: "upstream sent invalid status"), whichever
    # path relayed the request, and nothing of it is passed on as the next one's body
    with leader(tmp_path) as lead:
        client = Client(lead.port)
        first = client.get(target)  # a cold pool: the ASGI path
        client.close()
        lead.warm()
        client = Client(lead.port)
        second = client.get(target)  # direct
        client.close()
        assert lead.direct().count(f"GET {target}") == 1  # the second
        assert [first.status, second.status] == [502, 502], (first.head, second.head)
        assert b"Routing error" in first.body and b"Routing error" in second.body
        until(lambda: lead.log.read_text().count(said) == 2, 5, "said, as the instance's failure")
