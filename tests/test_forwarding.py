"""The forwarding policy (coyote_mw/http/forwarding.py): framing, forwarded headers, Via and
loops, X-Request-ID, Host and the request-head limits - under ASGI and WSGI, with real
servers and raw sockets where the server's parser matters, and an upstream that
records the exact bytes it gets (tests/support/ledger.py).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from coyote_mw import Coyote
from tests.support.coyote_processes import AUTH, CoyoteProcesses
from tests.support.ledger import BEHAVIOURS, LedgerUpstream, parse_status, raw_exchange
from tests.support.processes import running
from tests.support.servers import uvicorn_server, werkzeug_server

# Every request under /up/ goes to the ledger, which echoes the body it got.
ROUTES = [("GET", "/up/{rest:path}"), ("POST", "/up/{rest:path}")]
PEER = "203.0.113.7"


@pytest.fixture
def ledger() -> Iterator[LedgerUpstream]:
    with LedgerUpstream(behaviours={"up": BEHAVIOURS["echo"]}) as up:
        yield up


def leader_for(up: LedgerUpstream, **settings: Any) -> Coyote:
    coyote = Coyote(timeout=10, **settings)
    coyote.register_remote(up.url, routes=ROUTES, service="up")
    return coyote


def client_of(coyote: Coyote, interface: str, peer: str = PEER) -> httpx.Client:
    transport: httpx.BaseTransport
    if interface == "asgi":
        transport = _SyncASGI(coyote.asgi(), peer)
    else:
        transport = httpx.WSGITransport(app=coyote.wsgi(), remote_addr=peer)
    return httpx.Client(transport=transport, base_url="http://saloon.test")


class _SyncASGI(httpx.BaseTransport):
    """httpx's ASGITransport, driven from sync code: one test body for ASGI and WSGI."""

    def __init__(self, app: Any, peer: str) -> None:
        self.transport = httpx.ASGITransport(app=app, client=(peer, 4321))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        async def go() -> httpx.Response:
            response = await self.transport.handle_async_request(request)
            body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return anyio.run(go)


def header_lines(received: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in received.headers]


# -- 1. framing: never the client's ------------------------------------------------------

SMUGGLED = b"GET /up/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
BOTH_LENGTHS = (
    b"POST /up/echo HTTP/1.1\r\nHost: leader\r\nContent-Length: 0\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_content_length_with_chunked_is_refused_400_and_closed_under_uvicorn(
    ledger: LedgerUpstream, http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # h11 accepts both headers (TE wins); without a check of coyote's own the relay sent
    # the de-chunked body under the client's Content-Length: a request smuggled onward
    monkeypatch.setenv("COYOTE_TEST_UPSTREAM", ledger.url)
    argv = ["uvicorn", "--factory", "tests.support.forwarding_apps:leader_asgi", "--http", http]
    with running(argv) as url:
        answer = raw_exchange(int(url.rsplit(":", 1)[1]), BOTH_LENGTHS, timeout=10)
    assert parse_status(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert ledger.wait_for(1, timeout=0.5) == []
    assert b"smuggled" not in b"".join(ledger.connections)


def test_content_length_with_chunked_is_refused_400_and_closed_under_werkzeug(
    ledger: LedgerUpstream,
) -> None:
    coyote = leader_for(ledger)
    with werkzeug_server(coyote.wsgi()) as port:
        answer = raw_exchange(port, BOTH_LENGTHS, timeout=10)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert parse_status(answer) == 400 and b"connection: close" in head
    assert b'"Bad request framing"' in answer
    assert answer.count(b"HTTP/1.1 ") == 1
    assert ledger.wait_for(1, timeout=0.5) == []
    coyote.close()


def test_two_content_lengths_or_one_that_is_not_a_number_are_refused(
    ledger: LedgerUpstream,
) -> None:
    # (a WSGI environ has one CONTENT_LENGTH: the server chose, or joined them)
    coyote = leader_for(ledger)
    with client_of(coyote, "asgi") as client:
        r = client.post(
            "/up/echo", content=b"abc", headers=[("content-length", "3"), ("content-length", "3")]
        )
    assert r.status_code == 400 and r.json()["error"] == "Bad request framing"
    with client_of(coyote, "asgi") as client:
        for length in ("3, 3", "+3", "0x3"):
            r = client.post("/up/echo", content=b"abc", headers={"content-length": length})
            assert r.status_code == 400, length
    assert ledger.requests == []
    coyote.close()


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_the_relay_frames_bodies_itself_chunked_or_its_own_length(
    ledger: LedgerUpstream, http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COYOTE_TEST_UPSTREAM", ledger.url)
    argv = ["uvicorn", "--factory", "tests.support.forwarding_apps:leader_asgi", "--http", http]
    with running(argv) as url:
        port = int(url.rsplit(":", 1)[1])
        chunked = raw_exchange(
            port,
            b"POST /up/echo HTTP/1.1\r\nHost: leader\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )
        sized = raw_exchange(
            port,
            b"POST /up/echo HTTP/1.1\r\nHost: leader\r\nContent-Length: 005\r\n"
            b"Connection: close\r\n\r\nhello",
        )
    assert parse_status(chunked) == 200 and chunked.endswith(b"abcdefg")
    assert parse_status(sized) == 200 and sized.endswith(b"hello")
    first, second = ledger.wait_for(2)
    assert first.chunked and first.body == b"abcdefg"
    assert first.header_values("content-length") == []
    assert second.header_values("content-length") == [b"5"] and not second.chunked
    assert second.raw.endswith(b"\r\n\r\nhello")


def test_a_body_longer_than_its_length_never_reaches_the_instance(
    ledger: LedgerUpstream,
) -> None:
    # An ASGI server should never give more bytes than the length it framed by; if one
    # does, the relay fails the exchange rather than write them under that length.
    coyote = leader_for(ledger)
    app = coyote.asgi()
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/up/echo",
        "raw_path": b"/up/echo",
        "query_string": b"",
        "headers": [(b"host", b"leader"), (b"content-length", b"3")],
        "client": (PEER, 1),
        "scheme": "http",
        "http_version": "1.1",
    }
    messages = [{"type": "http.request", "body": b"abcGET /up/smuggled HTTP/1.1\r\n\r\n"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    import anyio

    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 502
    time.sleep(0.2)
    assert b"smuggled" not in b"".join(ledger.connections)
    assert ledger.requests == []
    coyote.close()


# -- 2. exactly the client's end-to-end headers --------------------------------------------


def test_the_wsgi_relay_forwards_exactly_the_clients_headers(ledger: LedgerUpstream) -> None:
    coyote = leader_for(ledger)
    with werkzeug_server(coyote.wsgi()) as port:
        answer = raw_exchange(
            port,
            b"GET /up/x HTTP/1.1\r\nHost: saloon.test\r\nX-Drink: whiskey\r\n"
            b"X-Request-ID: abc-123\r\nConnection: close\r\n\r\n",
        )
    assert parse_status(answer) == 200
    (got,) = ledger.wait_for(1)
    assert header_lines(got) == [
        (b"host", ledger.url.split("//")[1].encode()),  # httpx writes Host first
        (b"x-drink", b"whiskey"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"saloon.test"),
        (b"via", f"1.1 {coyote.forwarding.pseudonym}".encode()),
        (b"x-request-id", b"abc-123"),
    ]
    coyote.close()


def test_trailer_fields_read_while_a_request_waits_for_a_slot_never_become_its_headers() -> None:
    # uvicorn (httptools) appends a chunked body's trailer fields to scope["headers"]; a
    # request waiting in the relay's queue has its body read then, after the head checks
    release = threading.Event()

    def held_or_echo(conn: Any, request: Any) -> bool:
        if b"/held" in request.target:
            release.wait(10)
        return BEHAVIOURS["echo"](conn, request)  # type: ignore[no-any-return]

    scopes: list[Any] = []
    with LedgerUpstream(behaviours={"up": held_or_echo}) as up:
        coyote = leader_for(up, concurrency=1, queue=4)
        app = coyote.asgi()

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scopes.append(scope)
            await app(scope, receive, send)

        with uvicorn_server(recording) as port:
            held = threading.Thread(
                target=raw_exchange,
                args=(port, b"GET /up/held HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            )
            held.start()
            assert len(up.wait_for(1)) == 1
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(
                    b"POST /up/queued HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                )
                deadline = time.monotonic() + 10
                while coyote.relay.waiting < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert coyote.relay.waiting == 1
                conn.sendall(b"0\r\nHost: evil.test/x?y <script>\r\nX-Api-Key: t\r\n\r\n")
                while time.monotonic() < deadline and not any(
                    k == b"x-api-key" for k, _ in scopes[-1]["headers"]
                ):
                    time.sleep(0.01)  # until the server has appended the trailer
                release.set()
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            held.join(10)
        queued = [r for r in up.wait_for(2) if b"/queued" in r.target]
    assert parse_status(answer) == 200
    assert queued[0].header_values("x-forwarded-host") == [b"good.test"]
    assert queued[0].header("x-api-key") is None and b"evil" not in queued[0].raw
    coyote.close()


# -- 3. forwarded headers and trusted_proxies ----------------------------------------------

SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.test"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Port", "443"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X.Forwarded.For", "6.6.6.6"),
    ("x.real.ip", "6.6.6.6"),
]
ASGI_ONLY_ALIASES = [("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded_Proto", "https")]


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_an_untrusted_peers_forwarded_headers_are_dropped_and_the_leaders_set(
    ledger: LedgerUpstream, interface: str
) -> None:
    coyote = leader_for(ledger)
    spoofed = SPOOFED + (ASGI_ONLY_ALIASES if interface == "asgi" else [])
    with client_of(coyote, interface) as client:
        assert client.get("/up/x", headers=[*spoofed, ("x-drink", "rye")]).status_code == 200
    (got,) = ledger.wait_for(1)
    lines = header_lines(got)
    names = [k for k, _ in lines]
    assert b"6.6.6.6" not in got.raw and b"evil" not in got.raw and b"/admin" not in got.raw
    assert b"forwarded" not in names and b"x-real-ip" not in names
    assert not [n for n in names if b"_" in n or b"." in n]
    assert got.header_values("x-forwarded-for") == [PEER.encode()]
    assert got.header_values("x-forwarded-proto") == [b"http"]
    assert got.header_values("x-forwarded-host") == [b"saloon.test"]
    assert got.header_values("x-forwarded-prefix") == []
    assert got.header("x-drink") == b"rye"
    coyote.close()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_trusted_proxys_chain_is_extended(ledger: LedgerUpstream, interface: str) -> None:
    coyote = leader_for(ledger, trusted_proxies=["203.0.113.0/24"])
    headers = [
        ("X-Forwarded-For", "198.51.100.1, 10.0.0.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "www.saloon.test"),
        ("Forwarded", "for=198.51.100.1;proto=https"),
        ("X-Real-IP", "198.51.100.1"),
    ]
    with client_of(coyote, interface) as client:
        assert client.get("/up/x", headers=headers).status_code == 200
    with client_of(coyote, interface, peer="192.0.2.9") as client:  # not trusted
        assert client.get("/up/x", headers=headers).status_code == 200
    trusted, untrusted = ledger.wait_for(2)
    assert trusted.header_values("x-forwarded-for") == [b"198.51.100.1, 10.0.0.2, " + PEER.encode()]
    assert trusted.header_values("x-forwarded-proto") == [b"https"]
    assert trusted.header_values("x-forwarded-host") == [b"www.saloon.test"]
    assert trusted.header("forwarded") == b"for=198.51.100.1;proto=https"
    assert trusted.header("x-real-ip") == b"198.51.100.1"
    assert untrusted.header_values("x-forwarded-for") == [b"192.0.2.9"]
    assert untrusted.header_values("x-forwarded-proto") == [b"http"]
    assert untrusted.header("forwarded") is None and untrusted.header("x-real-ip") is None
    coyote.close()


# Who the client is, how it asked, what it asked for: every x-forwarded-* name and the
# client-IP and URL-override family, which applications and frameworks believe.
CLIENT_FACTS = [
    ("X-Forwarded-User", "admin"),
    ("X-Forwarded-Email", "admin@evil.test"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Forwarded-Method", "DELETE"),
    ("X-Forwarded-Client-Cert", "Hash=evil"),
    ("X-Forwarded-Groups", "admins"),
    ("X-FORWARDED-ANYTHING", "evil"),
    ("X-Forwarded", "for=6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("Forwarded-For", "6.6.6.6"),
    ("X-Original-Forwarded-For", "6.6.6.6"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
]
CLIENT_FACT_ALIASES = [("True_Client_IP", "6.6.6.6"), ("X.Original.URL", "/admin")]


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_every_x_forwarded_name_and_the_client_ip_family_are_dropped_from_untrusted_peers(
    ledger: LedgerUpstream, interface: str
) -> None:
    coyote = leader_for(ledger, trusted_proxies=["10.0.0.0/8"])
    aliases = CLIENT_FACT_ALIASES if interface == "asgi" else []
    with client_of(coyote, interface) as client:
        headers = [*CLIENT_FACTS, *aliases, ("x-drink", "rye")]
        assert client.get("/up/x", headers=headers).status_code == 200
    with client_of(coyote, interface, peer="10.1.2.3") as client:
        assert client.get("/up/x", headers=[*CLIENT_FACTS, *aliases]).status_code == 200
    untrusted, trusted = ledger.wait_for(2)
    assert b"6.6.6.6" not in untrusted.raw and b"admin" not in untrusted.raw
    assert b"evil" not in untrusted.raw
    assert untrusted.header("x-drink") == b"rye"
    assert untrusted.header_values("x-forwarded-for") == [PEER.encode()]
    for name, value in CLIENT_FACTS:  # a trusted proxy's pass as they are
        assert trusted.header_values(name.lower()) == [value.encode()], name
    assert trusted.header("true_client_ip") is None and trusted.header("x.original.url") is None
    coyote.close()


@pytest.mark.parametrize("written", ["::ffff:10.1.2.3", "::ffff:10.0.0.0/104", "::ffff:0:0/96"])
def test_trusted_proxies_written_as_ipv4_mapped_addresses_match_ipv4_peers(
    ledger: LedgerUpstream, written: str
) -> None:
    coyote = leader_for(ledger, trusted_proxies=[written])
    with client_of(coyote, "asgi", peer="10.1.2.3") as client:
        assert client.get("/up/x", headers={"x-real-ip": "198.51.100.1"}).status_code == 200
    with client_of(coyote, "asgi", peer="::ffff:10.1.2.3") as client:
        assert client.get("/up/x", headers={"x-real-ip": "198.51.100.1"}).status_code == 200
    assert [got.header("x-real-ip") for got in ledger.wait_for(2)] == [b"198.51.100.1"] * 2
    assert coyote.forwarding.trusts("10.1.2.3") and not coyote.forwarding.trusts("::1")
    coyote.close()


def test_forwarded_prefix_from_a_trusted_proxy_is_joined_with_the_mount(
    ledger: LedgerUpstream,
) -> None:
    coyote = leader_for(ledger, trusted_proxies=PEER)
    transport = _SyncASGI(coyote.asgi(mount="/saloon"), PEER)
    with httpx.Client(transport=transport, base_url="http://saloon.test") as client:
        client.get("/saloon/up/x", headers={"x-forwarded-prefix": "/edge/"})
        client.get("/saloon/up/x")
    with_proxy, without = ledger.wait_for(2)
    assert with_proxy.header_values("x-forwarded-prefix") == [b"/edge/saloon"]
    assert without.header_values("x-forwarded-prefix") == [b"/saloon"]
    coyote.close()


def test_the_setting_is_refused_when_it_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        Coyote(trusted_proxies=["proxy.internal"])
    coyote = Coyote()
    coyote.configure(trusted_proxies="10.0.0.0/8, 127.0.0.1")
    assert coyote.forwarding.trusts("10.1.2.3") and coyote.forwarding.trusts("127.0.0.1")
    assert not coyote.forwarding.trusts("192.0.2.1")
    assert coyote.forwarding.trusts("::ffff:10.0.0.1")  # a dual-stack socket's peer
    assert not coyote.forwarding.trusts("/run/gunicorn.sock")
    coyote.close()


async def _headers_back(ws: WebSocket) -> None:
    await ws.accept()
    wanted = ["x-forwarded-for", "x-forwarded-proto", "forwarded", "x-real-ip", "via"]
    await ws.send_text(json.dumps({k: ws.headers.get(k) for k in wanted}))
    await ws.close()


def test_websocket_forwarded_headers_follow_the_same_policy() -> None:
    upstream = Starlette(routes=[WebSocketRoute("/ws", _headers_back)])
    coyote = Coyote()
    leader = uvicorn_server(coyote.asgi(), proxy_headers=False)  # type: ignore[arg-type]
    with uvicorn_server(upstream) as up_port, leader as port:
        coyote.register_remote(f"http://127.0.0.1:{up_port}", routes=[("GET", "/ws")], service="w")
        spoofed = {"X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6"}
        with connect(f"ws://127.0.0.1:{port}/ws", additional_headers=spoofed) as ws:
            got = json.loads(ws.recv(timeout=5))
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "http"  # the handshake's scheme, not "ws"
    assert got["forwarded"] is None and got["x-real-ip"] is None
    assert got["via"] == f"1.1 {coyote.forwarding.pseudonym}"
    coyote.close()


# -- 4. X-Request-ID -------------------------------------------------------------------------


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_request_id_is_kept_when_safe_and_made_otherwise(
    ledger: LedgerUpstream, interface: str
) -> None:
    coyote = leader_for(ledger)
    with client_of(coyote, interface) as client:
        client.get("/up/x", headers={"x-request-id": "req-42.a:b/c+d="})
        client.get("/up/x", headers={"x-request-id": "bad id\x7f"})
        client.get("/up/x", headers={"x-request-id": "x" * 201})
        client.get("/up/x")
    kept, bad, long, none = ledger.wait_for(4)
    assert kept.header_values("x-request-id") == [b"req-42.a:b/c+d="]
    made = [r.header_values("x-request-id") for r in (bad, long, none)]
    for values in made:
        assert len(values) == 1 and len(values[0]) == 32 and int(values[0], 16) >= 0
    assert len({v[0] for v in made}) == 3
    coyote.close()


# -- 6. Host ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host_lines",
    [
        b"Host: a.test\r\nHost: b.test\r\n",
        b"Host: a.test/evil\r\n",
        b"Host: a.test b.test\r\n",
        b"Host: a.test:80:80\r\n",
        b"Host: a.test:port\r\n",
    ],
)
@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_two_hosts_or_an_invalid_host_is_400(
    ledger: LedgerUpstream, host_lines: bytes, server: str
) -> None:
    coyote = leader_for(ledger)
    serve = uvicorn_server(coyote.asgi()) if server == "uvicorn" else werkzeug_server(coyote.wsgi())
    with serve as port:
        answer = raw_exchange(
            port, b"GET /up/x HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n\r\n"
        )
        fine = raw_exchange(
            port, b"GET /up/x HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n"
        )
        owned = raw_exchange(
            port, b"GET /nowhere HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n\r\n"
        )
    assert parse_status(answer) == 400 and b"Host" in answer
    assert parse_status(owned) == 400
    assert parse_status(fine) == 200
    assert len(ledger.wait_for(1)) == 1
    coyote.close()


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([(b"transfer-encoding", b"chunked")], None),
        ([(b"transfer-encoding", b" Chunked ")], None),
        ([(b"transfer-encoding", b"gzip, chunked")], 501),
        ([(b"transfer-encoding", b"gzip"), (b"transfer-encoding", b"chunked")], 501),
        ([(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")], 501),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")], 400),
        ([(b"content-length", b"5 \t")], None),
        ([(b"content-length", b"5 5")], 400),
        ([(b"content-length", "\u00b2".encode("latin-1"))], 400),
    ],
)
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_framing_verdicts(
    lines: list[tuple[bytes, bytes]], status: int | None, interface: str
) -> None:
    forwarding = Coyote().forwarding
    headers = [(b"host", b"a.test"), *lines]
    if interface == "asgi":
        refused = forwarding.check_asgi({"http_version": "1.1", "headers": headers})
    else:
        environ: dict[str, str] = {"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "x"}
        for k, v in headers:
            key = "CONTENT_LENGTH" if k == b"content-length" else "HTTP_" + k.decode().upper()
            key = key.replace("-", "_")
            value = v.decode("latin-1")
            environ[key] = environ[key] + ", " + value if key in environ else value
        refused = forwarding.check_wsgi(environ)
    assert (refused and refused.status) == status


def test_an_http11_request_without_host_is_400_and_an_http10_one_is_not() -> None:
    forwarding = Coyote().forwarding
    refused = forwarding.check_asgi({"http_version": "1.1", "headers": []})
    assert refused is not None and refused.status == 400
    assert forwarding.check_asgi({"http_version": "1.0", "headers": []}) is None
    server = {"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "gunicorn"}
    assert getattr(forwarding.check_wsgi(server), "status", None) == 400
    # a test client's environ (Django's): no Host and no server; PEP 3333 uses SERVER_NAME
    assert forwarding.check_wsgi({"SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "t"}) is None


# -- 7. request-head limits -------------------------------------------------------------------


def test_head_limits_answer_431_and_414_under_uvicorn(ledger: LedgerUpstream) -> None:
    # uvicorn with httptools has no limits of its own on these
    coyote = leader_for(ledger)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    big = b"X-Big: " + b"a" * (64 * 1024) + b"\r\n"
    with uvicorn_server(coyote.asgi()) as port:
        answers = [
            raw_exchange(
                port, b"GET /up/x HTTP/1.1\r\nHost: h\r\n" + extra + b"Connection: close\r\n\r\n"
            )
            for extra in (many, big)
        ]
        target = raw_exchange(
            port, b"GET /up/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
    assert [parse_status(a) for a in answers] == [431, 431]
    assert b'"Request header fields too large"' in answers[0] and b'"max_headers":100' in answers[0]
    assert b'"max_header_bytes":32768' in answers[1]
    assert parse_status(target) == 414 and b'"max_target":8192' in target
    assert ledger.wait_for(1, timeout=0.5) == []
    coyote.close()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_head_limits_are_settings(ledger: LedgerUpstream, interface: str) -> None:
    coyote = leader_for(ledger)
    coyote.configure(max_headers=12, max_header_bytes=300, max_target=40)
    with client_of(coyote, interface) as client:
        assert client.get("/up/x").status_code == 200
        many = [(f"x-h{i}", "v") for i in range(13)]
        assert client.get("/up/x", headers=many).status_code == 431
        assert client.get("/up/x", headers={"x-big": "a" * 300}).status_code == 431
        assert client.get("/up/" + "a" * 40).status_code == 414
        assert client.get("/up/x", params={"q": "a" * 40}).status_code == 414
    assert len(ledger.wait_for(1)) == 1
    coyote.close()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_a_target_over_max_target_is_414_before_any_route_lookup(
    ledger: LedgerUpstream, interface: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    coyote = leader_for(ledger)
    looked_up: list[str] = []
    match = coyote.table.match

    def spy(topology: str, method: str, path: str, *rest: Any) -> Any:
        looked_up.append(path)
        return match(topology, method, path, *rest)

    monkeypatch.setattr(coyote.table, "match", spy)
    host = Starlette() if interface == "asgi" else (lambda environ, start_response: [])
    app = coyote.asgi(host) if interface == "asgi" else coyote.wsgi(host)
    if interface == "asgi":
        transport: httpx.BaseTransport = _SyncASGI(app, PEER)
    else:
        transport = httpx.WSGITransport(app=app, remote_addr=PEER)
    with httpx.Client(transport=transport, base_url="http://saloon.test") as client:
        for path in ("/up/" + "a" * 9000, "/elsewhere/" + "a" * 9000, "/up/x?q=" + "a" * 9000):
            answer = client.get(path)
            assert answer.status_code == 414 and answer.json()["max_target"] == 8192
        assert looked_up == []
        assert client.get("/up/x").status_code == 200
    assert looked_up == ["/up/x"]
    coyote.close()


def test_without_a_raw_target_the_wsgi_limit_measures_the_target_it_would_forward(
    ledger: LedgerUpstream,
) -> None:
    # httpx's WSGITransport, like granian, gives no REQUEST_URI: PATH_INFO is decoded
    coyote = leader_for(ledger)
    with client_of(coyote, "wsgi") as client:
        assert client.get("/up/" + "%20" * 3000).status_code == 414  # 3000 bytes decoded
        assert client.get("/up/" + "%20" * 2600).status_code == 200  # 7.8 KiB
    (got,) = ledger.wait_for(1)
    assert got.target == b"/up/" + b"%20" * 2600
    coyote.close()


# -- 8. Via and loops -------------------------------------------------------------------------


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_via_is_added_and_a_request_that_passed_here_is_508(
    ledger: LedgerUpstream, interface: str
) -> None:
    coyote = leader_for(ledger, pseudonym="leader-a")
    with client_of(coyote, interface) as client:
        assert client.get("/up/x", headers={"via": "1.1 edge"}).status_code == 200
        # another leader whose name merely starts with this one's is no loop
        assert (
            client.get("/up/x", headers={"via": "1.1 leader-ab, 1.1 x.leader-a"}).status_code == 200
        )
        looped = client.get("/up/x", headers={"via": "1.1 edge, 1.1 leader-a, 1.1 leader-b"})
    assert looped.status_code == 508
    assert looped.json() == {"error": "Loop detected", "via": "leader-a"}
    got, other = ledger.wait_for(2)
    assert got.header_values("via") == [b"1.1 edge, 1.1 leader-a"]
    assert other.header_values("via") == [b"1.1 leader-ab, 1.1 x.leader-a, 1.1 leader-a"]
    coyote.close()


def test_a_leader_whose_instance_is_itself_answers_508_at_once() -> None:
    with CoyoteProcesses() as procs:
        leader = procs("leader")
        registration = {
            "service": "self",
            "instance": "self",
            "url": leader.url,
            "routes": [{"method": "GET", "path": "/loop"}],
            "ttl": 60,
        }
        r = httpx.post(leader.url + "/_coyote/registrations", json=registration, headers=AUTH)
        assert r.status_code == 201, r.text
        # more loops than the relay's 50 slots, each answered within less than its 30 s
        # timeout: a loop holds no slot once it is answered
        answers = [httpx.get(leader.url + "/loop", timeout=20) for _ in range(60)]
        assert {a.status_code for a in answers} == {508}
        assert answers[0].json()["error"] == "Loop detected"


# -- 5. coyote leader and uvicorn's proxy_headers -----------------------------------------------


@pytest.mark.parametrize(
    ("flags", "forwarded_for"),
    [
        ([], b"127.0.0.1"),  # uvicorn's proxy_headers off, nobody trusted
        (["--trusted-proxy", "127.0.0.1"], b"6.6.6.6, 127.0.0.1"),  # the chain extended
        # uvicorn takes the client from the trusted proxy's header; coyote sends it on
        (["--trusted-proxy", "127.0.0.1", "--proxy-headers"], b"6.6.6.6"),
    ],
)
@pytest.mark.parametrize("http", ["uvicorn", "coyote"])
def test_coyote_leader_believes_x_forwarded_for_only_from_trusted_proxies(
    ledger: LedgerUpstream, flags: list[str], forwarded_for: bytes, http: str
) -> None:
    with CoyoteProcesses() as procs:
        leader = procs("leader", *flags, "--http", http)
        registration = {
            "service": "up",
            "instance": "ledger",
            "url": ledger.url,
            "routes": [{"method": "GET", "path": "/up/x"}],
            "ttl": 60,
        }
        r = httpx.post(leader.url + "/_coyote/registrations", json=registration, headers=AUTH)
        assert r.status_code == 201, r.text
        r = httpx.get(leader.url + "/up/x", headers={"x-forwarded-for": "6.6.6.6"}, timeout=10)
        assert r.status_code == 200
    (got,) = ledger.wait_for(1)
    assert got.header_values("x-forwarded-for") == [forwarded_for]


def test_coyote_leader_proxy_headers_needs_a_trusted_proxy() -> None:
    import subprocess

    from tests.support.processes import BIN

    done = subprocess.run(
        [str(BIN / "coyote"), "leader", "--proxy-headers", "--token", "t" * 20],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert done.returncode != 0
    assert "--proxy-headers needs --trusted-proxy" in done.stderr


def test_flask_config_sets_trusted_proxies_and_head_limits() -> None:
    from coyote_mw.adapters.flask import Coyote as FlaskCoyote
    from flask import Flask

    coyote = FlaskCoyote()
    app = Flask(__name__)
    app.config.update(COYOTE_TRUSTED_PROXIES="10.0.0.0/8", COYOTE_MAX_TARGET=64)
    coyote.init_app(app)
    assert coyote.forwarding.trusts("10.9.9.9") and coyote.forwarding.max_target == 64
    coyote.close()


def test_two_leaders_pointing_at_each_other_answer_508() -> None:
    a, b = Coyote(timeout=10, pseudonym="leader-a"), Coyote(timeout=10, pseudonym="leader-b")
    with uvicorn_server(a.asgi()) as port_a, uvicorn_server(b.asgi()) as port_b:
        a.register_remote(f"http://127.0.0.1:{port_b}", routes=[("GET", "/ping")], service="b")
        b.register_remote(f"http://127.0.0.1:{port_a}", routes=[("GET", "/ping")], service="a")
        r = httpx.get(f"http://127.0.0.1:{port_a}/ping", timeout=10)
    assert r.status_code == 508 and r.json() == {"error": "Loop detected", "via": "leader-a"}
    a.close()
    b.close()


def test_a_websocket_that_passed_here_is_refused_at_the_handshake() -> None:
    from websockets.exceptions import InvalidStatus

    upstream = Starlette(routes=[WebSocketRoute("/ws", _headers_back)])
    coyote = Coyote(pseudonym="leader-a")
    with uvicorn_server(upstream) as up_port, uvicorn_server(coyote.asgi()) as port:
        coyote.register_remote(f"http://127.0.0.1:{up_port}", routes=[("GET", "/ws")], service="w")
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"Via": "1.1 leader-a"})
        with connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"Via": "1.1 b"}) as ws:
            assert json.loads(ws.recv(timeout=5))["via"] == "1.1 b, 1.1 leader-a"
    assert refused.value.response.status_code == 403
    coyote.close()


def test_framing_refusal_under_wsgiref_is_400_without_a_hop_by_hop_header(
    ledger: LedgerUpstream,
) -> None:
    # wsgiref asserts that an app sends no Connection header (PEP 3333): a 400, not a 500
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    coyote = leader_for(ledger)
    server = make_server("127.0.0.1", 0, coyote.wsgi(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = raw_exchange(server.server_port, BOTH_LENGTHS, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert parse_status(answer) == 400 and b'"Bad request framing"' in answer
    assert ledger.requests == []
    coyote.close()
