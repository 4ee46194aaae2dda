"""WebSockets under ASGI: relayed to a remote instance, or handed to an in-process app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from coyote_mw.adapters.starlette import CoyoteMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from coyote_mw import Client, Coyote, Request, route
from tests.support.servers import uvicorn_server
from tests.support.tls import tls_files


async def echo(ws: WebSocket) -> None:
    await ws.accept(subprotocol=(ws.scope.get("subprotocols") or [None])[0])
    await ws.send_text(f"path={ws.url.path} fwd={ws.headers.get('x-forwarded-for')}")
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await ws.send_text("echo " + message["text"])
        else:
            await ws.send_bytes(message["bytes"][::-1])


def echo_app() -> Starlette:
    return Starlette(routes=[WebSocketRoute("/ws/{room}", echo)])


@pytest.fixture
def leader() -> Iterator[tuple[Coyote, int]]:
    coyote = Coyote()
    with uvicorn_server(echo_app()) as upstream_port, uvicorn_server(coyote.asgi()) as port:
        coyote.register_remote(
            f"http://127.0.0.1:{upstream_port}", routes=[("GET", "/ws/{room}")], service="chat"
        )
        yield coyote, port
    coyote.close()


def test_websocket_is_relayed_to_the_remote_instance_both_ways(
    leader: tuple[Coyote, int],
) -> None:
    _, port = leader
    with connect(f"ws://127.0.0.1:{port}/ws/lobby", subprotocols=["chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=5) == "path=/ws/lobby fwd=127.0.0.1"
        ws.send("howdy")
        assert ws.recv(timeout=5) == "echo howdy"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=5) == b"\x03\x02\x01"


def test_relayed_websockets_are_bounded_by_max_websockets_not_by_relay_slots() -> None:
    # one relay slot and no queue: WebSockets take none of them, but at most
    # max_websockets are relayed at once; the next handshake is refused until one closes
    coyote = Coyote(concurrency=1, queue=0, max_websockets=2)
    with uvicorn_server(echo_app()) as upstream_port, uvicorn_server(coyote.asgi()) as port:
        coyote.register_remote(
            f"http://127.0.0.1:{upstream_port}", routes=[("GET", "/ws/{room}")], service="chat"
        )
        url = f"ws://127.0.0.1:{port}/ws/busy"
        with connect(url, open_timeout=5) as one, connect(url, open_timeout=5) as two:
            for ws in (one, two):
                assert ws.recv(timeout=5) == "path=/ws/busy fwd=127.0.0.1"
            with pytest.raises(InvalidStatus) as refused:
                connect(url, open_timeout=5)
            assert refused.value.response.status_code == 403
            assert coyote.websockets.open == 2
            assert coyote.relay.active == 0
        deadline = time.monotonic() + 5  # the leader sees the clients leave a moment later
        while coyote.websockets.open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert coyote.websockets.open == 0
        with connect(url, open_timeout=5) as again:
            assert again.recv(timeout=5) == "path=/ws/busy fwd=127.0.0.1"
    coyote.close()


def test_max_websockets_is_a_setting_of_its_own() -> None:
    coyote = Coyote()
    assert coyote.websockets.limit == 1000
    coyote.configure(max_websockets=5)
    assert coyote.websockets.limit == 5
    with pytest.raises(ValueError, match="max_websockets"):
        coyote.configure(max_websockets=-1)
    assert coyote.websockets.limit == 5
    coyote.close()


def test_websocket_to_an_unknown_path_is_refused_at_the_handshake(
    leader: tuple[Coyote, int],
) -> None:
    _, port = leader
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/nowhere", open_timeout=5)
    assert refused.value.response.status_code == 403


def test_websocket_to_an_in_process_asgi_app_goes_straight_to_it() -> None:
    coyote = Coyote()
    coyote.register(echo_app(), routes=[("GET", "/ws/{room}")], service="local-chat")
    with uvicorn_server(coyote.asgi()) as port, connect(f"ws://127.0.0.1:{port}/ws/saloon") as ws:
        assert ws.recv(timeout=5) == "path=/ws/saloon fwd=None"
        ws.send("whiskey")
        assert ws.recv(timeout=5) == "echo whiskey"
    coyote.close()


def test_websocket_to_an_https_instance_goes_over_wss(tmp_path: Any) -> None:
    tls = tls_files(tmp_path)
    coyote = Coyote(tls=tls.trusting())
    with (
        uvicorn_server(echo_app(), **tls.server()) as upstream_port,
        uvicorn_server(coyote.asgi()) as port,
    ):
        coyote.register_remote(
            f"https://127.0.0.1:{upstream_port}", routes=[("GET", "/ws/{room}")], service="chat"
        )
        with connect(f"ws://127.0.0.1:{port}/ws/vault") as ws:
            assert ws.recv(timeout=5) == "path=/ws/vault fwd=127.0.0.1"
            ws.send("gold")
            assert ws.recv(timeout=5) == "echo gold"
    coyote.close()


def test_a_host_websocket_is_not_taken_by_a_coyote_get_route_that_speaks_no_websocket() -> None:
    class Pages(Client):
        @route("GET", "/{page}")  # a catch-all page route, GraphiQL at /graphql
        def page(self, request: Request) -> str:
            return f"page {request.params['page']}"

    coyote = Coyote()
    coyote.register(Pages())
    host = Starlette(
        routes=[WebSocketRoute("/graphql", echo)],
        middleware=[Middleware(CoyoteMiddleware, coyote=coyote)],
    )
    with TestClient(host) as client:
        assert client.get("/graphql").text == "page graphql"  # the page is coyote's
        with client.websocket_connect("/graphql") as ws:  # the socket is the host's
            assert ws.receive_text() == "path=/graphql fwd=None"
            ws.send_text("subscription")
            assert ws.receive_text() == "echo subscription"
    coyote.close()


def test_a_handshake_with_a_target_over_max_target_is_refused_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.websockets import WebSocketDisconnect

    coyote = Coyote()
    coyote.configure(max_target=100)
    looked_up: list[str] = []
    match = coyote.table.match

    def spy(topology: str, method: str, path: str, *rest: Any) -> Any:
        looked_up.append(path)
        return match(topology, method, path, *rest)

    monkeypatch.setattr(coyote.table, "match", spy)
    with TestClient(coyote.asgi()) as client:
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws/" + "a" * 100),
        ):
            pass
        assert refused.value.code == 1008 and looked_up == []
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/short"):
            pass
    assert looked_up == ["/ws/short"]
