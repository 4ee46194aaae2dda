"""The server matrix: the same cases against every server people deploy coyote on.

Each server is a real process (tests/support/processes.py), started once per server and
reused by every case; the apps it serves are in tests/support/matrix_apps.py. Clients are
raw sockets, so the framing on the wire is exactly what a case says. The remote instance is a
``LedgerUpstream`` in this process: relayed cases check the exact bytes it received.

Cells that fail today because of work under way elsewhere are marked
``xfail(strict=True)`` with the issue that covers them (``KNOWN``): each turns into a
failure as soon as its fix is merged, and its mark is removed then.

Run it alone: ``.venv/bin/python -m pytest tests/test_matrix.py``; one server:
``-k uvicorn-h11``; one case: ``-k relay_body_chunked``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from tests.support.ledger import LedgerUpstream, Received
from tests.support.matrix_apps import pattern
from tests.support.processes import running
from tests.support.servers import uvicorn_server

APP = "tests.support.matrix_apps"
# uvicorn and gunicorn trust X-Forwarded-* from 127.0.0.1 by default and hand coyote the
# client and scheme they name; the matrix's clients are on 127.0.0.1, and what it checks is
# coyote's own policy, so neither server trusts anyone here
UVICORN = "--no-proxy-headers --no-access-log --log-level warning"
GUNICORN = "--forwarded-allow-ips="

ASGI: dict[str, list[str]] = {
    name: command.replace("APP", f"{APP}:asgi_app").split()
    for name, command in {
        "uvicorn-httptools": f"uvicorn APP --http httptools {UVICORN}",
        "uvicorn-h11": f"uvicorn APP --http h11 {UVICORN}",
        "hypercorn": "hypercorn --bind 127.0.0.1:{port} APP",
        "granian-asgi": "granian --interface asgi --host 127.0.0.1 --port {port} APP",
        "daphne": "daphne -b 127.0.0.1 -p {port} APP",
        # coyote's own server (coyote_mw.server; `coyote leader --http coyote`)
        "coyote-h1": f"{sys.executable} -m tests.support.h1_server APP {{port}} "
        f"shortcut={APP}:asgi_shortcut",
    }.items()
}
WSGI: dict[str, list[str]] = {
    name: command.replace("APP", f"{APP}:wsgi_app").split()
    for name, command in {
        "gunicorn-sync": f"gunicorn -k sync -w 1 {GUNICORN} APP",
        "gunicorn-gthread": f"gunicorn -k gthread -w 1 --threads 4 {GUNICORN} APP",
        "waitress": "waitress-serve --listen=127.0.0.1:{port} APP",
        "granian-wsgi": "granian --interface wsgi --host 127.0.0.1 --port {port} APP",
    }.items()
}
WSGI["werkzeug"] = [sys.executable, "-m", APP, "{port}"]  # Werkzeug's threaded server
SERVERS = {**ASGI, **WSGI}

# (case, server) -> why it fails today; see the module docstring. One block per section
# of issue 9; a cell that fails for two sections is in the block of the first.
KNOWN: dict[tuple[str, str], str] = {}

BIG = 4 * 1024 * 1024  # streamed both ways
CLIENT_TIMEOUT = 20.0

# What the relay may add on its own (forwarding policy, DESIGN.md / README); everything
# else the instance receives must be a header the client sent, unchanged.
RELAY_ADDS = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"via",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-prefix",
    b"x-request-id",
}
# hop-by-hop (RFC 9110 §7.6.1) and what a proxy answers itself (Expect, RFC 9110 §10.1.1,
# as nginx and Envoy do): never passed on as the client sent them
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"transfer-encoding",
    b"upgrade",
    b"trailer",
    b"expect",
}


# -- the servers ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    ledger: LedgerUpstream
    log: Path
    serial: Iterator[int] = field(default_factory=itertools.count)

    def token(self, case: str) -> str:
        # ends in a letter, so that no token is a prefix of another
        return f"{case}-{self.name}-{next(self.serial)}z"


def _relay_behaviour(conn: socket.socket, request: Received) -> bool:
    """``/relay/echo/...``: the body back; ``/relay/big/{n}/...``: n bytes, chunked;
    ``/relay/status/{code}/...``: that status (204 and 304 without a body); HEAD: a
    Content-Length and no body."""
    parts = request.target.split(b"?")[0].split(b"/")
    if request.method == b"HEAD":  # the length a GET would have, and no body
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
        return True
    if parts[2] == b"status":
        code = int(parts[3])
        if code in (204, 304):
            conn.sendall(b'HTTP/1.1 %d X\r\netag: "v1"\r\n\r\n' % code)
        else:
            body = b"status %d" % code
            conn.sendall(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%b" % (code, len(body), body))
        return True
    if parts[2] == b"big":
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for block in pattern(int(parts[3])):
            conn.sendall(b"%x\r\n%b\r\n" % (len(block), block))
        conn.sendall(b"0\r\n\r\n")
        return True
    body = request.body
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n%b"
        % (len(body), body)
    )
    return True


@pytest.fixture(scope="module")
def ledger() -> Iterator[LedgerUpstream]:
    with LedgerUpstream(behaviours={"relay": _relay_behaviour}) as up:
        yield up


async def _remote_chat(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(f"remote {ws.url.path} fwd={ws.headers.get('x-forwarded-for')}")
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        await ws.send_text("echo " + (message.get("text") or ""))


@pytest.fixture(scope="module")
def ws_upstream() -> Iterator[str]:
    """A remote WebSocket instance (uvicorn in a thread) for the relayed WebSocket cells."""
    with uvicorn_server(Starlette(routes=[WebSocketRoute("/rws/{room}", _remote_chat)])) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A port held (bound, never listening) for the module: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=list(SERVERS))
def server(
    request: pytest.FixtureRequest,
    ledger: LedgerUpstream,
    ws_upstream: str,
    dead_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    name = str(request.param)
    log = tmp_path_factory.mktemp("matrix") / f"{name}.log"
    env = {
        "MATRIX_UPSTREAM": ledger.url,
        "MATRIX_WS_UPSTREAM": ws_upstream,
        "MATRIX_DEAD_UPSTREAM": f"http://127.0.0.1:{dead_port}",
    }
    with running(SERVERS[name], ready_path="/host/ready", env=env, log=log) as url:
        yield Server(name, int(url.rsplit(":", 1)[1]), ledger, log)


@pytest.fixture(autouse=True)
def known_failure(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or "server" not in callspec.params:
        return
    case = request.node.originalname.removeprefix("test_")
    reason = KNOWN.get((case, callspec.params["server"]))
    if reason:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


# -- a raw HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class _Responses:
    def __init__(self) -> None:
        self.current = Answer()
        self.body: list[bytes] = []
        self.interim: list[int] = []
        self.final: Answer | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.interim.append(status)
            self.current, self.body = Answer(), []
            return
        self.current.status = status
        self.current.body = b"".join(self.body)
        self.current.interim = self.interim
        self.final = self.current


class _Closed(Exception):
    """The server closed the connection before a complete answer."""


def _read_answer(conn: socket.socket, responses: _Responses, deadline: float) -> Answer:
    while responses.final is None:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no complete answer within {CLIENT_TIMEOUT}s") from None
        if not data:
            responses.parser.feed_data(b"")  # a body delimited by the close
            if responses.final is None:
                raise _Closed
            break
        responses.parser.feed_data(data)
    return responses.final


def exchange(
    port: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: Iterable[bytes] = (),
    *,
    chunked: bool = False,
    length: int | None = None,
    expect: bool = False,
    refused_by_close: bool = False,
) -> Answer:
    """One request on a fresh connection, framed exactly as asked; its final answer.

    ``chunked``: each part of ``body`` is one chunk; ``length``: a Content-Length header;
    neither: no framing header at all. ``expect``: ``Expect: 100-continue``, and the body
    goes after the server's 100 (or after 5 s without one; curl waits 1 s).
    """
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    if length is not None:
        head.append(f"Content-Length: {length}")
    if expect:
        head.append("Expect: 100-continue")
    responses = _Responses()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if expect:
            conn.settimeout(5)
            try:
                data = conn.recv(65536)
            except TimeoutError:
                data = b""
            if data:
                responses.parser.feed_data(data)
            if responses.final is not None:
                return responses.final
            conn.settimeout(CLIENT_TIMEOUT)
        try:
            for part in body:
                conn.sendall(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (or dropped) before the whole body was sent: see what came back
        try:
            return _read_answer(conn, responses, deadline)
        except ConnectionResetError:
            if refused_by_close and responses.final is None:
                return Answer()
            raise AssertionError("the server reset the connection without an answer") from None
        except _Closed:
            if refused_by_close:
                return Answer()
            raise AssertionError("the server closed the connection without an answer") from None


def digest(size: int) -> dict[str, Any]:
    sha = hashlib.sha256()
    for block in pattern(size):
        sha.update(block)
    return {"size": size, "sha256": sha.hexdigest()}


def parts(data: bytes, size: int = 7000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- what the instance received ------------------------------------------------------------


def count(ledger: LedgerUpstream, token: str, wait: float) -> int:
    """How many requests for ``token`` the instance got, after ``wait`` seconds."""
    time.sleep(wait)
    with ledger.lock:
        return sum(token.encode() in r.target for r in ledger.requests)


def arrived(ledger: LedgerUpstream, token: str) -> Received:
    """The one request the instance got for ``token`` (waits, bounded, for it)."""
    deadline = time.monotonic() + 5
    while True:
        with ledger.lock:
            found = [r for r in ledger.requests if token.encode() in r.target]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(found) == 1, f"the instance got {len(found)} requests for {token}"
    return found[0]


def check_relayed(got: Received, sent: list[tuple[str, str]], body: bytes) -> None:
    """The body exactly, framed once and consistently; the client's end-to-end headers
    unchanged; nothing else but what the forwarding policy adds."""
    assert got.body == body
    length, te = got.header_values("content-length"), got.header_values("transfer-encoding")
    if te:
        assert te == [b"chunked"] and not length, got.headers
    elif body or length:
        assert length == [str(len(body)).encode()], got.headers
    names = {k.lower() for k, _ in got.headers}
    extra = names - RELAY_ADDS - {k.lower().encode() for k, _ in sent}
    assert not extra, f"headers nobody sent: {sorted(extra)} in {got.headers}"
    for name, value in sent:
        key = name.lower().encode()
        if key in HOP_BY_HOP or name.lower() in _connection_listed(sent):
            assert value.encode() not in got.header_values(name), f"{name} passed on: {got.headers}"
        else:
            assert got.header_values(name) == [value.encode()], (name, got.headers)


def _connection_listed(sent: list[tuple[str, str]]) -> set[str]:
    return {t.strip().lower() for k, v in sent if k.lower() == "connection" for t in v.split(",")}


def relay_headers(token: str) -> list[tuple[str, str]]:
    return [
        ("Accept", "text/plain"),
        ("X-Matrix-Case", token),
        ("Connection", "close, X-Hop"),
        ("X-Hop", "only to the next hop"),
    ]


# -- the cases -----------------------------------------------------------------------------


def test_host_route_falls_through(server: Server) -> None:
    answer = exchange(server.port, "GET", "/host/ready", [("Connection", "close")])
    assert (answer.status, answer.body) == (200, b"host:")


def test_host_body_with_length(server: Server) -> None:
    data = b"to the host " * 100
    answer = exchange(server.port, "POST", "/host/echo", body=[data], length=len(data))
    assert (answer.status, answer.body) == (200, b"host:" + data)


def test_host_body_chunked(server: Server) -> None:
    data = b"to the host, chunked " * 100
    answer = exchange(server.port, "POST", "/host/echo", body=parts(data), chunked=True)
    assert (answer.status, answer.body) == (200, b"host:" + data)


def test_host_body_empty(server: Server) -> None:
    answer = exchange(server.port, "POST", "/host/echo", length=0)
    assert (answer.status, answer.body) == (200, b"host:")


def test_host_expect_continue(server: Server) -> None:
    data = b"to the host after the 100 " * 500
    answer = exchange(server.port, "POST", "/host/echo", body=[data], length=len(data), expect=True)
    assert (answer.status, answer.body) == (200, b"host:" + data)
    assert answer.interim and set(answer.interim) == {100}, "the body went without a 100"


def test_host_streamed_upload(server: Server) -> None:
    answer = exchange(server.port, "POST", "/host/upload", body=pattern(BIG), chunked=True)
    assert answer.status == 200, answer
    assert json.loads(answer.body) == digest(BIG)


def test_host_streamed_download(server: Server) -> None:
    answer = exchange(server.port, "GET", f"/host/download/{BIG}", [("Connection", "close")])
    assert answer.status == 200
    assert len(answer.body) == BIG
    assert hashlib.sha256(answer.body).hexdigest() == digest(BIG)["sha256"]


def test_coyote_route(server: Server) -> None:
    answer = exchange(server.port, "GET", "/coyote/hello", [("Connection", "close")])
    assert (answer.status, answer.body) == (200, b"howdy")


def test_coyote_body_with_length(server: Server) -> None:
    data = b"whiskey " * 1000
    answer = exchange(server.port, "POST", "/coyote/echo", body=[data], length=len(data))
    assert (answer.status, answer.body) == (200, data)


def test_coyote_body_chunked(server: Server) -> None:
    data = b"chunked whiskey " * 1000
    answer = exchange(server.port, "POST", "/coyote/echo", body=parts(data), chunked=True)
    assert (answer.status, answer.body) == (200, data)


def test_coyote_body_empty(server: Server) -> None:
    answer = exchange(server.port, "POST", "/coyote/echo", length=0)
    assert (answer.status, answer.body) == (200, b"")


def test_coyote_body_without_any_length(server: Server) -> None:
    # no Content-Length, no Transfer-Encoding: no body (RFC 9112 §6.3)
    answer = exchange(server.port, "POST", "/coyote/echo", [("Connection", "close")])
    assert (answer.status, answer.body) == (200, b"")


def test_coyote_expect_continue(server: Server) -> None:
    data = b"after the 100 " * 500
    answer = exchange(
        server.port, "POST", "/coyote/echo", body=[data], length=len(data), expect=True
    )
    assert (answer.status, answer.body) == (200, data)
    assert answer.interim and set(answer.interim) == {100}, "the body went without a 100"


def test_coyote_streamed_upload(server: Server) -> None:
    answer = exchange(server.port, "POST", "/coyote/upload", body=pattern(BIG), chunked=True)
    assert answer.status == 200, answer
    assert json.loads(answer.body) == digest(BIG)


def test_coyote_streamed_download(server: Server) -> None:
    answer = exchange(server.port, "GET", f"/coyote/download/{BIG}", [("Connection", "close")])
    assert answer.status == 200
    assert hashlib.sha256(answer.body).hexdigest() == digest(BIG)["sha256"]
    assert len(answer.body) == BIG


def test_relay_get(server: Server) -> None:
    token = server.token("relay_get")
    sent = relay_headers(token)
    target = f"/relay/echo/{token}?q=1&q=%20two&empty="
    answer = exchange(server.port, "GET", target, sent)
    assert (answer.status, answer.body) == (200, b"")
    cookies = [v for k, v in answer.headers if k.lower() == b"set-cookie"]
    assert cookies == [b"a=1", b"b=2"], answer.headers
    got = arrived(server.ledger, token)
    assert got.target == target.encode()
    check_relayed(got, sent, b"")


def test_relay_body_with_length(server: Server) -> None:
    token = server.token("relay_length")
    sent, data = relay_headers(token), b"relayed " * 2000
    answer = exchange(server.port, "POST", f"/relay/echo/{token}", sent, [data], length=len(data))
    assert (answer.status, answer.body) == (200, data)
    check_relayed(arrived(server.ledger, token), sent, data)


def test_relay_body_chunked(server: Server) -> None:
    token = server.token("relay_chunked")
    sent, data = relay_headers(token), b"relayed in chunks " * 2000
    answer = exchange(server.port, "POST", f"/relay/echo/{token}", sent, parts(data), chunked=True)
    assert (answer.status, answer.body) == (200, data)
    check_relayed(arrived(server.ledger, token), sent, data)


def test_relay_body_empty(server: Server) -> None:
    token = server.token("relay_empty")
    sent = relay_headers(token)
    answer = exchange(server.port, "POST", f"/relay/echo/{token}", sent, length=0)
    assert (answer.status, answer.body) == (200, b"")
    check_relayed(arrived(server.ledger, token), sent, b"")


def test_relay_expect_continue(server: Server) -> None:
    token = server.token("relay_expect")
    sent, data = relay_headers(token), b"relayed after the 100 " * 500
    answer = exchange(
        server.port, "POST", f"/relay/echo/{token}", sent, [data], length=len(data), expect=True
    )
    assert (answer.status, answer.body) == (200, data)
    assert answer.interim and set(answer.interim) == {100}, "the body went without a 100"
    check_relayed(arrived(server.ledger, token), sent, data)


def test_relay_streamed_upload(server: Server) -> None:
    token = server.token("relay_upload")
    sent = relay_headers(token)
    answer = exchange(server.port, "POST", f"/relay/echo/{token}", sent, pattern(BIG), chunked=True)
    expected = b"".join(pattern(BIG))
    assert answer.status == 200
    assert answer.body == expected
    check_relayed(arrived(server.ledger, token), sent, expected)


def test_relay_streamed_download(server: Server) -> None:
    token = server.token("relay_download")
    sent = relay_headers(token)
    answer = exchange(server.port, "GET", f"/relay/big/{BIG}/{token}", sent)
    assert answer.status == 200
    assert len(answer.body) == BIG
    assert hashlib.sha256(answer.body).hexdigest() == digest(BIG)["sha256"]
    check_relayed(arrived(server.ledger, token), sent, b"")


def test_coyote_async_body_with_length(server: Server) -> None:
    data = b"async whiskey " * 1000
    answer = exchange(server.port, "POST", "/coyote/async/echo", body=[data], length=len(data))
    assert (answer.status, answer.body) == (200, data)


def test_coyote_async_body_chunked(server: Server) -> None:
    data = b"async chunked whiskey " * 1000
    answer = exchange(server.port, "POST", "/coyote/async/echo", body=parts(data), chunked=True)
    assert (answer.status, answer.body) == (200, data)


def test_coyote_async_streamed_upload(server: Server) -> None:
    answer = exchange(server.port, "POST", "/coyote/async/upload", body=pattern(BIG), chunked=True)
    assert answer.status == 200, answer
    assert json.loads(answer.body) == digest(BIG)


def test_coyote_async_streamed_download(server: Server) -> None:
    target = f"/coyote/async/download/{BIG}"
    answer = exchange(server.port, "GET", target, [("Connection", "close")])
    assert answer.status == 200
    assert len(answer.body) == BIG
    assert hashlib.sha256(answer.body).hexdigest() == digest(BIG)["sha256"]


PATHS = [  # as tests/test_servers.py: one verdict for a raw path, whatever the server
    ("/coyote/files/a%2Fb", 200, {"rest": "a/b", "raw": "/coyote/files/a%2Fb"}),
    ("/coyote/one/a%2Fb", 200, {"name": "a/b"}),
    ("/coyote/one/a/b", 404, None),
    ("/coyote/files/x/../y", 200, {"rest": "y", "raw": "/coyote/files/y"}),
    ("/coyote/files/%2e%2e/%2e%2e/%2e%2e/etc", 400, None),
    ("/coyote/files//z", 200, {"rest": "z", "raw": "/coyote/files/z"}),
    ("/coyote/%66iles/q", 200, {"rest": "q", "raw": "/coyote/files/q"}),
    ("/coyote/files/caf%c3%a9", 200, {"rest": "café", "raw": "/coyote/files/caf%C3%A9"}),
    ("/coyote/files/%zz", 400, None),
    ("/coyote/files/%ff", 400, None),
    ("/coyote/files/a%00b", 400, None),
]


# granian's WSGI gives no raw request line (no REQUEST_URI / RAW_URI), only PATH_INFO as
# it decoded it: there an encoded slash is a separator and an undecodable escape is text
WITHOUT_RAW_LINE = {"granian-wsgi"}
DECODED_VERDICTS: dict[str, tuple[int, dict[str, Any] | None]] = {
    "/coyote/files/a%2Fb": (200, {"rest": "a/b", "raw": "/coyote/files/a/b"}),
    "/coyote/one/a%2Fb": (404, None),
    "/coyote/files/%zz": (200, {"rest": "%zz", "raw": "/coyote/files/%25zz"}),
}


@pytest.mark.parametrize(("target", "status", "body"), PATHS)
def test_raw_path(server: Server, target: str, status: int, body: dict[str, Any] | None) -> None:
    if server.name in WITHOUT_RAW_LINE:
        status, body = DECODED_VERDICTS.get(target, (status, body))
    answer = exchange(server.port, "GET", target, [("Connection", "close")])
    if body is not None:
        assert (answer.status, json.loads(answer.body)) == (status, body)
    elif status == 400:
        assert answer.status == 400
        assert json.loads(answer.body)["error"] == "Bad request path"
    else:  # no coyote route: the host's 404
        assert (answer.status, answer.body) == (status, b"host:")


def test_relay_forwards_the_canonical_path(server: Server) -> None:
    token = server.token("relay_path")
    answer = exchange(server.port, "GET", f"/relay/echo/{token}/a%2Fb//c/%7e/caf%c3%a9")
    assert answer.status == 200
    got = arrived(server.ledger, token)
    slash = "/" if server.name in WITHOUT_RAW_LINE else "%2F"
    assert got.target == f"/relay/echo/{token}/a{slash}b/c/~/caf%C3%A9".encode()


# what browsers send raw in a query (WHATWG's query percent-encode set leaves `{}|\^``
# alone; `"<>` some clients send raw), an escape that is not one, `+`, a key alone
RAW_QUERY = '"<>{}|\\^`%zz+%20=&b'


def test_relay_forwards_the_raw_query_byte_for_byte(server: Server) -> None:
    token = server.token("relay_query")
    answer = exchange(server.port, "GET", f"/relay/echo/{token}?{RAW_QUERY}")
    if answer.status == 400:  # the server refused the request line itself
        assert count(server.ledger, token, wait=0) == 0
        return
    assert answer.status == 200
    got = arrived(server.ledger, token)
    assert got.target == f"/relay/echo/{token}?{RAW_QUERY}".encode(), got.target


def then_hello(conn: socket.socket, first: Answer, deadline: float) -> None:
    """The next request on a kept-alive connection is answered as its own: nothing of the
    first exchange spilled over. A server may close the connection instead (RFC 9112 §9.6)."""
    if (first.header(b"connection") or b"").lower() == b"close":
        return
    conn.sendall(b"GET /coyote/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        answer = _read_answer(conn, _Responses(), deadline)
    except (_Closed, ConnectionResetError):
        return
    assert (answer.status, answer.body) == (200, b"howdy")


def test_keep_alive_after_an_unread_body(server: Server) -> None:
    # the handler never reads the body
    data = b"never read " * 1000
    head = f"POST /coyote/ignore HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n"
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(head.encode() + data)
        answer = _read_answer(conn, _Responses(), deadline)
        assert (answer.status, answer.body) == (200, b"ignored")
        then_hello(conn, answer, deadline)


@pytest.mark.parametrize("target", ["/coyote/hello", "/relay/echo/head", "/host/echo"])
def test_head_answers_a_head_only(server: Server, target: str) -> None:
    # a HEAD response's head says nothing about where it ends (RFC 9110 §9.3.2): read to the
    # blank line, then the next request's answer must follow at once, no body between
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(f"HEAD {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        if b"\r\nconnection: close" in head.lower():
            return
        conn.sendall(b"GET /coyote/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        responses = _Responses()
        responses.parser.feed_data(rest)
        try:
            answer = _read_answer(conn, responses, deadline)
        except (_Closed, ConnectionResetError):
            assert not rest, f"a body after the HEAD response: {rest[:80]!r}"
            return
        assert (answer.status, answer.body) == (200, b"howdy")


def test_coyote_no_content(server: Server) -> None:
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(b"GET /coyote/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _read_answer(conn, _Responses(), deadline)
        assert (answer.status, answer.body) == (204, b"")
        assert answer.header(b"transfer-encoding") is None, answer.headers
        assert answer.header(b"content-length") in (None, b"0"), answer.headers
        assert answer.header(b"content-type") is None, answer.headers
        then_hello(conn, answer, deadline)


@pytest.mark.parametrize("status", [204, 304, 404, 500])
def test_relay_passes_the_instance_status(server: Server, status: int) -> None:
    token = server.token(f"relay_status_{status}")
    head = f"GET /relay/status/{status}/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", server.port), timeout=CLIENT_TIMEOUT) as conn:
        conn.sendall(head.encode())
        answer = _read_answer(conn, _Responses(), deadline)
        assert answer.status == status
        if status in (204, 304):  # no body, and no framing that announces one
            assert answer.body == b""
            assert answer.header(b"transfer-encoding") is None, answer.headers
            assert answer.header(b"content-length") in (None, b"0"), answer.headers
        else:
            assert answer.body == b"status %d" % status
        then_hello(conn, answer, deadline)


def test_relay_to_a_dead_instance_is_a_502(server: Server) -> None:
    answer = exchange(server.port, "GET", "/dead/x", [("Connection", "close")])
    assert answer.status == 502
    assert json.loads(answer.body)["error"] == "Routing error"
    assert answer.header(b"content-type") == b"application/json"


def test_relay_frames_no_body_by_an_aliased_length(server: Server) -> None:
    # `Content_Length` / `Content_Type` become HTTP_CONTENT_LENGTH / HTTP_CONTENT_TYPE
    # under servers that keep underscore names (granian's WSGI): never the body's length
    # or type; the relay frames the body by the real Content-Length
    token = server.token("relay_alias_length")
    aliases = [("Content_Length", "60"), ("Content_Type", "text/evil")]
    answer = exchange(
        server.port,
        "POST",
        f"/relay/echo/{token}",
        [("Content-Type", "application/x-real"), *aliases, ("Connection", "close")],
        [b"hello"],
        length=5,
    )
    assert (answer.status, answer.body) == (200, b"hello")
    got = arrived(server.ledger, token)
    assert got.body == b"hello"
    assert got.header_values("content-length") == [b"5"], got.headers
    assert got.header_values("content-type") == [b"application/x-real"], got.headers
    assert got.header_values("transfer-encoding") == [], got.headers


def app_echo(server: Server, app: str, data: bytes, chunked: bool) -> None:
    if chunked:
        answer = exchange(server.port, "POST", f"/{app}/echo", body=parts(data), chunked=True)
    else:
        answer = exchange(server.port, "POST", f"/{app}/echo", body=[data], length=len(data))
    assert (answer.status, answer.body) == (200, f"{app}:".encode() + data)


def test_asgi_app_body_with_length(server: Server) -> None:
    app_echo(server, "asgi-app", b"to Starlette " * 500, chunked=False)


def test_asgi_app_body_chunked(server: Server) -> None:
    app_echo(server, "asgi-app", b"to Starlette, chunked " * 500, chunked=True)


def test_wsgi_app_body_with_length(server: Server) -> None:
    app_echo(server, "wsgi-app", b"to Flask " * 500, chunked=False)


def test_wsgi_app_body_chunked(server: Server) -> None:
    app_echo(server, "wsgi-app", b"to Flask, chunked " * 500, chunked=True)


@pytest.mark.parametrize("server", list(ASGI), indirect=True, scope="module")
def test_websocket_to_a_coyote_app(server: Server) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/ws/saloon", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "app /ws/saloon"
        ws.send("whiskey")
        assert ws.recv(timeout=10) == "echo whiskey"


@pytest.mark.parametrize("server", list(ASGI), indirect=True, scope="module")
def test_websocket_falls_through_to_the_host(server: Server) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/host/ws", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "host /host/ws"
        ws.send("sarsaparilla")
        assert ws.recv(timeout=10) == "echo sarsaparilla"


SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("X.Forwarded.Host", "evil.example"),
]


def test_relay_drops_client_forwarding_headers(server: Server) -> None:
    # the peer (127.0.0.1) is not a trusted proxy: its forwarding headers are dropped and
    # the leader says what it saw itself
    token = server.token("relay_spoofed")
    answer = exchange(server.port, "GET", f"/relay/echo/{token}", relay_headers(token) + SPOOFED)
    assert answer.status == 200
    got = arrived(server.ledger, token)
    assert b"6.6.6.6" not in got.raw and b"evil.example" not in got.raw, got.headers
    assert got.header_values("x-forwarded-for") == [b"127.0.0.1"], got.headers
    assert got.header_values("x-forwarded-proto") == [b"http"], got.headers


def test_relay_length_with_chunked_smuggles_nothing(server: Server) -> None:
    # RFC 9112 §6.1: refused with 400, or chunked wins and the relay frames the body itself;
    # never the client's Content-Length over the de-chunked body (a request hidden in it
    # would reach the instance on a pooled connection)
    token, hidden = server.token("relay_smuggle"), server.token("smuggled")
    smuggled = f"GET /relay/echo/{hidden} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    data = b"hello" + smuggled
    sent = relay_headers(token)
    answer = exchange(
        server.port,
        "POST",
        f"/relay/echo/{token}",
        sent,
        [data],
        chunked=True,
        length=5,
        refused_by_close=True,
    )
    assert count(server.ledger, hidden, wait=0.5) == 0, "a request was smuggled to the instance"
    if answer.status in (0, 400):  # daphne (Twisted) closes the connection without a 400
        assert count(server.ledger, token, wait=0) == 0
    else:
        assert (answer.status, answer.body) == (200, data)
        check_relayed(arrived(server.ledger, token), sent, data)


@pytest.mark.parametrize("server", list(ASGI), indirect=True, scope="module")
def test_websocket_relayed_to_an_instance(server: Server) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/rws/lobby", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "remote /rws/lobby fwd=127.0.0.1"
        ws.send("howdy")
        assert ws.recv(timeout=10) == "echo howdy"


@pytest.mark.parametrize("server", list(ASGI), indirect=True, scope="module")
def test_websocket_to_the_host_where_a_coyote_get_route_matches(server: Server) -> None:
    # coyote's GET /shared/{page} serves no WebSockets: the handshake is the host's
    with connect(f"ws://127.0.0.1:{server.port}/shared/ws", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "host /shared/ws"


def raw_answer(port: int, data: bytes) -> Answer:
    """The answer to raw request bytes; ``Answer()`` (status 0) when the server closed or
    reset the connection without one."""
    responses = _Responses()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as conn:
        try:
            conn.sendall(data)
            return _read_answer(conn, responses, deadline)
        except (_Closed, ConnectionResetError, BrokenPipeError):
            return Answer()


@pytest.mark.parametrize(
    "coding",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ],
    ids=["gzip-chunked", "two-lines"],
)
def test_relay_refuses_a_transfer_coding_it_does_not_implement(
    server: Server, coding: bytes
) -> None:
    # RFC 9112 §6.1: 501 from coyote (or the server refuses it before coyote sees it);
    # never the coded bytes re-chunked as if they were the body
    token = server.token("relay_coding")
    answer = raw_answer(
        server.port,
        b"POST /relay/echo/%b HTTP/1.1\r\nHost: 127.0.0.1\r\n%bConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" % (token.encode(), coding),
    )
    assert answer.status in (0, 400, 501), answer
    if answer.status == 501 and answer.header(b"content-type") == b"application/json":
        assert json.loads(answer.body)["error"] == "Not implemented"  # not the server's
    assert count(server.ledger, token, wait=0.3) == 0


def test_relay_takes_a_content_length_with_whitespace_around_it(server: Server) -> None:
    # RFC 9110 §5.5: the whitespace around a field value is not part of it
    token = server.token("relay_padded")
    answer = raw_answer(
        server.port,
        b"POST /relay/echo/%b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length:    5   \r\n"
        b"Connection: close\r\n\r\nhello" % token.encode(),
    )
    assert (answer.status, answer.body) == (200, b"hello")
    got = arrived(server.ledger, token)
    assert got.body == b"hello" and got.header_values("content-length") == [b"5"]


@pytest.mark.parametrize(
    "host",
    [b"", b"Host: a:99999\r\n", b"Host: [::::]\r\n", b"Host: [1::2::3]:80\r\n"],
    ids=["none", "port-over-65535", "ipv6-junk", "ipv6-two-gaps"],
)
def test_relay_refuses_an_http11_request_without_a_valid_host(server: Server, host: bytes) -> None:
    # RFC 9112 §3.2: 400 (from coyote, or the server's own refusal)
    token = server.token("relay_host")
    answer = raw_answer(
        server.port,
        b"GET /relay/echo/%b HTTP/1.1\r\n%bConnection: close\r\n\r\n" % (token.encode(), host),
    )
    assert answer.status in (0, 400), answer
    assert count(server.ledger, token, wait=0.3) == 0


def test_relay_names_an_absolute_form_targets_authority_as_the_forwarded_host(
    server: Server,
) -> None:
    # RFC 9112 §3.2.2: the target's authority, not the Host header
    token = server.token("relay_absolute")
    answer = raw_answer(
        server.port,
        b"GET http://target.example/relay/echo/%b HTTP/1.1\r\nHost: good.example\r\n"
        b"Connection: close\r\n\r\n" % token.encode(),
    )
    if server.name in AUTHORITY_UNSEEN:
        pytest.skip(AUTHORITY_UNSEEN[server.name])
    assert answer.status == 200, answer
    got = arrived(server.ledger, token)
    assert got.header_values("x-forwarded-host") == [b"target.example"], got.headers
    assert got.target == f"/relay/echo/{token}".encode()


# Servers that hand the app the path of an absolute-form target without its authority
AUTHORITY_UNSEEN = {
    name: "the server gives the app the path of an absolute-form target, not its authority"
    for name in ("uvicorn-httptools", "coyote-h1", "granian-asgi", "granian-wsgi")
}
