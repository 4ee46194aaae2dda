"""The relay keeps no cookies: what an instance sets goes to the client that asked, and a
request carries only the cookies its own client sent (never another client's session)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from coyote_mw import Coyote
from tests.support.http_clients import ASGIClient, LoopThread
from tests.support.ledger import LedgerUpstream, Received


def _login(conn: socket.socket, request: Received) -> bool:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
        b"set-cookie: session=alice; Path=/\r\nset-cookie: theme=dark\r\n\r\nok"
    )
    return True


@pytest.fixture
def upstream() -> Iterator[LedgerUpstream]:
    with LedgerUpstream(behaviours={"login": _login}) as up:
        yield up


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_relay_never_sends_one_clients_cookies_with_another_clients_request(
    upstream: LedgerUpstream, interface: str
) -> None:
    coyote = Coyote(timeout=5)
    coyote.register_remote(upstream.url, routes=[("GET", "/{rest:path}")], service="up")
    app = coyote.wsgi() if interface == "wsgi" else coyote.asgi()
    loop = LoopThread()

    def get(path: str, headers: dict[str, str]) -> httpx.Response:
        # each person has a client of their own (its own cookie jar), as browsers do
        client: ASGIClient | httpx.Client
        if interface == "wsgi":
            client = httpx.Client(transport=httpx.WSGITransport(app), base_url="http://h")
        else:
            client = ASGIClient(app, loop)
        try:
            return client.get(path, headers=headers)
        finally:
            client.close()

    try:
        alice = get("/login", {"x-who": "alice"})
        assert alice.headers.get_list("set-cookie") == ["session=alice; Path=/", "theme=dark"]
        get("/account", {"x-who": "bob"})
        get("/account", {"x-who": "carol", "cookie": "session=carol"})
    finally:
        loop.close()
        coyote.close()
    bob, carol = upstream.wait_for(3)[1:]
    assert bob.header("x-who") == b"bob" and bob.header_values("cookie") == []
    assert carol.header("x-who") == b"carol"
    assert carol.header_values("cookie") == [b"session=carol"]
