"""The HTTP relay's time limits and response headers, under both interfaces.

A real uvicorn instance (in a thread, on 127.0.0.1) plays the remote service; the
leader is driven through httpx's ASGI and WSGI transports (the ``serve`` fixture).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from websockets.sync.client import connect

from coyote_mw import Coyote
from tests.support.ledger import LedgerUpstream
from tests.support.servers import uvicorn_server, werkzeug_server
from tests.support.tls import TLSFiles, tls_files

TIMEOUT = 0.5


async def instance(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/late-head":  # answers only after the relay's timeout
        await asyncio.sleep(TIMEOUT * 4)
    headers = [(b"content-type", b"text/plain"), (b"x-instance", b"yes")]
    if path == "/stalled-body":  # a head and half a body, then nothing
        headers.append((b"content-length", b"10"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await asyncio.sleep(TIMEOUT * 6)
        await send({"type": "http.response.body", "body": b"67890"})
        return
    if path == "/stalled-before-body":  # a head, then nothing
        headers.append((b"content-length", b"10"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(TIMEOUT * 6)
        await send({"type": "http.response.body", "body": b"1234567890"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"on time"})


@pytest.fixture(scope="module")
def instance_url() -> Iterator[str]:
    with uvicorn_server(instance) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def leader(instance_url: str) -> Iterator[Coyote]:
    coyote = Coyote(timeout=TIMEOUT)
    coyote.register_remote(
        instance_url,
        routes=[
            ("GET", "/on-time"),
            ("GET", "/late-head"),
            ("GET", "/stalled-body"),
            ("GET", "/stalled-before-body"),
        ],
        service="instance",
    )
    yield coyote
    coyote.close()


def test_an_instance_slower_than_the_timeout_is_504(leader: Coyote, serve: Any) -> None:
    client = serve(leader)
    start = time.monotonic()
    r = client.get("/late-head")
    took = time.monotonic() - start
    assert r.status_code == 504
    assert r.json()["error"] == "Handler timeout"
    assert took < TIMEOUT * 3
    # the relay is whole afterwards: the next request is served
    assert client.get("/on-time").text == "on time"


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_body_that_stalls_is_cut_off_after_the_timeout(leader: Coyote, server: str) -> None:
    # A real server in front of the leader: what a client sees of a cut-off response.
    running = (
        uvicorn_server(leader.asgi()) if server == "uvicorn" else werkzeug_server(leader.wsgi())
    )
    with running as port:
        start = time.monotonic()
        # The head went out already: too late for a 504, so the relay ends the response
        # short and the client sees a truncated body instead of waiting for ever.
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{port}/stalled-body", timeout=10)
        assert time.monotonic() - start < TIMEOUT * 4
        assert httpx.get(f"http://127.0.0.1:{port}/on-time", timeout=10).text == "on time"


def test_a_body_that_never_starts_is_504_under_wsgi_and_cut_off_under_asgi(
    leader: Coyote,
) -> None:
    # Under WSGI the head goes out with the first body bytes, so it is not sent yet: 504.
    # Under ASGI it was forwarded as soon as it came: the response can only end short.
    with werkzeug_server(leader.wsgi()) as port:
        r = httpx.get(f"http://127.0.0.1:{port}/stalled-before-body", timeout=10)
        assert r.status_code == 504 and r.json()["error"] == "Handler timeout"
    with uvicorn_server(leader.asgi()) as port, pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{port}/stalled-before-body", timeout=10)


def test_the_instances_date_and_server_are_not_forwarded(leader: Coyote, serve: Any) -> None:
    r = serve(leader).get("/on-time")
    assert r.headers["x-instance"] == "yes"
    assert "date" not in r.headers and "server" not in r.headers  # the host server's come instead


# -- https instances --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_instance(tls: TLSFiles) -> Iterator[str]:
    """The same instance behind TLS, its certificate for 127.0.0.1 signed by the test CA."""
    with uvicorn_server(instance, **tls.server()) as port:
        yield f"https://127.0.0.1:{port}"


def test_an_https_instance_is_relayed_verified_against_the_given_ca(
    https_instance: str, tls: TLSFiles, serve: Any
) -> None:
    leader = Coyote(timeout=5, tls=str(tls.bundle))  # a CA bundle's path, as `--ca-file` gives
    leader.register_remote(https_instance, routes=[("GET", "/on-time")], service="tls")
    client = serve(leader)
    for _ in range(3):  # and again over the pooled connection
        r = client.get("/on-time")
        assert r.status_code == 200 and r.text == "on time"
        assert r.headers["x-instance"] == "yes"
    leader.close()


def test_an_https_instance_the_leader_cannot_verify_is_502(
    https_instance: str, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    leader = Coyote(timeout=5)  # the system's CAs: this test CA is not among them
    leader.register_remote(https_instance, routes=[("GET", "/on-time")], service="tls")
    r = serve(leader).get("/on-time")
    assert r.status_code == 502 and r.json()["error"] == "Routing error"
    assert "certificate verify failed" in caplog.text.lower()
    leader.close()


def test_a_ca_configured_later_applies_to_instances_relayed_to_before(
    https_instance: str, tls: TLSFiles, serve: Any
) -> None:
    leader = Coyote(timeout=5)  # the system's CAs: this test CA is not among them
    leader.register_remote(https_instance, routes=[("GET", "/on-time")], service="tls")
    client = serve(leader)
    assert client.get("/on-time").status_code == 502
    leader.configure(tls=str(tls.bundle))
    r = client.get("/on-time")
    assert r.status_code == 200 and r.text == "on time"
    leader.close()


def test_closing_the_leader_closes_its_wsgi_connections_to_instances(leader: Coyote) -> None:
    client = httpx.Client(transport=httpx.WSGITransport(leader.wsgi()), base_url="http://t")
    assert client.get("/on-time").status_code == 200
    pool = leader.upstreams.sync_client()
    assert not pool.is_closed
    leader.close()
    assert pool.is_closed


def test_tls_setting_must_be_a_context_or_a_ca_file(tmp_path: Any) -> None:
    import ssl

    with pytest.raises(ValueError, match="CA bundle"):
        Coyote(tls=str(tmp_path / "missing.pem"))
    with pytest.raises(TypeError, match="SSLContext"):
        Coyote(tls=0)  # type: ignore[arg-type]
    context = ssl.create_default_context()
    assert Coyote(tls=context).tls is context
    assert isinstance(Coyote().tls, ssl.SSLContext)


# -- instance URLs and targets ------------------------------------------------------------


async def v6_instance(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An instance on [::1]: the path and Host it got, over HTTP and over a WebSocket."""
    said = f"{scope['path']} host={dict(scope['headers']).get(b'host', b'').decode()}"
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": said})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": said.encode()})


@pytest.fixture(scope="module")
def v6_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"this machine has no IPv6 loopback to bind ([::1]: {exc})")
    with uvicorn_server(v6_instance, sock=sock, lifespan="off") as port:
        yield port


@pytest.fixture
def v6_leader(v6_port: int) -> Iterator[Coyote]:
    coyote = Coyote(timeout=5)
    coyote.register_remote(
        f"http://[::1]:{v6_port}", routes=[("GET", "/v6/{rest:path}")], service="v6"
    )
    yield coyote
    coyote.close()


def test_an_ipv6_instance_is_relayed_to_under_asgi_and_wsgi(
    v6_leader: Coyote, v6_port: int
) -> None:
    for server, app in ((uvicorn_server, v6_leader.asgi()), (werkzeug_server, v6_leader.wsgi())):
        with server(app) as port:
            response = httpx.get(f"http://127.0.0.1:{port}/v6/x?q=1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.text == f"/v6/x host=[::1]:{v6_port}"


def test_a_websocket_to_an_ipv6_instance_is_relayed(v6_leader: Coyote, v6_port: int) -> None:
    with (
        uvicorn_server(v6_leader.asgi()) as port,
        connect(f"ws://127.0.0.1:{port}/v6/socket", open_timeout=5) as ws,
    ):
        assert ws.recv(timeout=5) == f"/v6/socket host=[::1]:{v6_port}"


def test_wsgi_relay_escapes_only_the_query_bytes_a_request_line_cannot_carry() -> None:
    # PEP 3333: QUERY_STRING holds the raw bytes as latin-1; raw UTF-8 and a space (a
    # lenient server lets them through) go on percent-encoded, everything else as it came
    with LedgerUpstream() as up:
        coyote = Coyote(timeout=5)
        coyote.register_remote(up.url, routes=[("GET", "/q")], service="up")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/q",
            "QUERY_STRING": 'a=caf\xc3\xa9 x&b="<>%zz',
            "HTTP_HOST": "example.test",
        }
        setup_testing_defaults(environ)
        answered: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            answered.append(status)

        body = coyote.wsgi()(environ, start_response)
        try:
            assert b"".join(body) == b"ok"
        finally:
            body.close()
        assert answered == ["200 OK"]
        assert up.requests[-1].target == b'/q?a=caf%C3%A9%20x&b="<>%zz'
        coyote.close()
