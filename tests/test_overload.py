"""More load than the relay admits: abandoned queued requests and per-topology bounds.

Real servers (a leader process, uvicorn and Werkzeug in threads), real sockets, and an
upstream that records what reaches it (``LedgerUpstream``).  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, Request, by_header, route
from coyote_mw.relay import PEEK_MESSAGES, Relay
from tests.support.coyote_processes import AUTH, TOKEN, Proc, procs
from tests.support.ledger import LedgerUpstream, Received, parse_status
from tests.support.processes import running
from tests.support.servers import uvicorn_server, werkzeug_server

__all__ = ["procs"]  # the fixture: real processes, ended by PID


def _gated(gate: threading.Event) -> Callable[[socket.socket, Received], bool]:
    def held(conn: socket.socket, request: Received) -> bool:
        gate.wait(20)  # holds the relay's one slot until the test opens the gate
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")
        return True

    return held


def _send(port: int, target: str, headers: str = "") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    return sock


def _answer(sock: socket.socket, timeout: float = 20) -> bytes:
    """Read one response (content-length framed) from ``sock``, bounded by ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def _targets(up: LedgerUpstream) -> list[bytes]:
    with up.lock:
        return [r.target for r in up.requests]


def _until(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


@contextlib.contextmanager
def _abandoning_scenario(
    port: int,
    up: LedgerUpstream,
    gate: threading.Event,
    waiting: Callable[[], int] | None = None,
) -> Iterator[None]:
    """One request holds the only slot; 20 clients queue behind it and close their
    sockets; a live client queues last.  Yields once the gate is open again.

    ``waiting`` (the relay's queue length, when the server runs in this process)
    replaces the pauses that give a server process time to queue and to notice."""
    holder = _send(port, "/gate")
    assert [r.target for r in up.wait_for(1)] == [b"/gate"]
    quitters = [_send(port, f"/later/{i}") for i in range(20)]
    if waiting is None:
        time.sleep(1)  # all of them queued behind the holder
    else:
        assert _until(lambda: waiting() == 20)
    for sock in quitters:
        sock.close()
    if waiting is None:
        time.sleep(1)  # the server notices the closed connections
    else:
        assert _until(lambda: waiting() == 0)
    live = _send(port, "/later/99")
    if waiting is None:
        time.sleep(0.2)
    else:
        assert _until(lambda: waiting() == 1)
    gate.set()
    try:
        assert parse_status(_answer(holder)) == 200
        answer = _answer(live)
        assert parse_status(answer) == 200
        assert answer.endswith(b"ok")
        yield
    finally:
        holder.close()
        live.close()


def test_clients_that_leave_while_queued_never_reach_the_instance_leader_process(
    procs: Callable[..., Proc],
) -> None:
    gate = threading.Event()
    with LedgerUpstream(behaviours={"gate": _gated(gate)}) as up:
        leader = procs("leader", "--concurrency", "1", "--queue", "40", "--timeout", "20")
        r = httpx.post(
            f"{leader.url}/_coyote/registrations",
            headers=AUTH,
            json={
                "service": "ledger",
                "instance": "one",
                "url": up.url,
                "routes": [
                    {"method": "GET", "path": "/gate"},
                    {"method": "GET", "path": "/later/{n:int}"},
                ],
                "ttl": 60,
            },
            timeout=5,
        )
        assert r.status_code == 201
        with _abandoning_scenario(leader.port, up, gate):
            up.wait_for(3, timeout=1)  # would any abandoned one still arrive?
            assert _targets(up) == [b"/gate", b"/later/99"]
        gate.set()


@pytest.mark.parametrize("server", ["werkzeug", "gunicorn"])
def test_clients_that_leave_while_queued_never_reach_the_instance_under_wsgi(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    routes = [("GET", "/gate"), ("GET", "/later/{n:int}")]
    with LedgerUpstream(behaviours={"gate": _gated(gate)}) as up:
        if server == "werkzeug":  # in a thread; it exposes werkzeug.socket
            coyote = Coyote(concurrency=1, queue=40, timeout=20, access_log=False)
            coyote.register_remote(up.url, routes=routes, service="ledger")
            with werkzeug_server(coyote.wsgi()) as port:
                with _abandoning_scenario(port, up, gate, lambda: coyote.relay.waiting):
                    up.wait_for(3, timeout=1)
                    assert _targets(up) == [b"/gate", b"/later/99"]
                gate.set()
            coyote.close()
            return
        # a gunicorn process with threads; it exposes gunicorn.socket
        monkeypatch.setenv("COYOTE_TOKEN", TOKEN)
        argv = ["gunicorn", "tests.support.overload_app:app", "-k", "gthread", "--threads", "40"]
        with running(argv) as url:
            r = httpx.post(
                f"{url}/_coyote/registrations",
                headers=AUTH,
                json={
                    "service": "ledger",
                    "instance": "one",
                    "url": up.url,
                    "routes": [{"method": m, "path": p} for m, p in routes],
                    "ttl": 60,
                },
                timeout=5,
            )
            assert r.status_code == 201
            port = int(url.rsplit(":", 1)[1])
            with _abandoning_scenario(port, up, gate):
                up.wait_for(3, timeout=1)
                assert _targets(up) == [b"/gate", b"/later/99"]
            gate.set()


def test_a_queued_request_keeps_its_body_while_the_relay_listens_for_the_client() -> None:
    # Under ASGI the relay reads the request while it waits: the handler still gets
    # every byte of the body, in order, and the instance the exact body.
    gate = threading.Event()
    with LedgerUpstream(behaviours={"gate": _gated(gate)}) as up:
        coyote = Coyote(concurrency=1, queue=5, timeout=20, access_log=False)
        coyote.register_remote(
            up.url, routes=[("GET", "/gate"), ("POST", "/echo")], service="ledger"
        )
        with uvicorn_server(coyote.asgi()) as port:
            holder = _send(port, "/gate")
            up.wait_for(1)
            body = bytes(range(256)) * 1024  # 256 KiB: more than the relay holds back
            result: list[httpx.Response] = []
            poster = threading.Thread(
                target=lambda: result.append(
                    httpx.post(f"http://127.0.0.1:{port}/echo", content=body, timeout=20)
                )
            )
            poster.start()
            time.sleep(0.5)  # queued, its body partly read by the relay
            gate.set()
            poster.join(20)
            holder.close()
            assert result[0].status_code == 200
            assert result[0].content == body
            assert up.wait_for(2)[1].body == body
        coyote.close()


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_topology_flooding_a_hanging_route_leaves_another_topology_served(server: str) -> None:
    coyote = Coyote(concurrency=2, queue=2, timeout=20, access_log=False)
    resolver = by_header("X-Coyote-Topology", allowed={"blue", "green"})
    if server == "uvicorn":
        serving: Any = uvicorn_server(coyote.asgi(topology=resolver))
    else:
        serving = werkzeug_server(coyote.wsgi(topology=resolver))
    # the upstreams stop first: the hanging requests end, then the server can stop
    with serving as port, LedgerUpstream() as hanging, LedgerUpstream() as fine:
        coyote.register_remote(
            hanging.url, routes=[("GET", "/hang")], service="slow", topology="blue"
        )
        coyote.register_remote(
            fine.url, routes=[("GET", "/fine")], service="fine", topology="green"
        )
        blue = "X-Coyote-Topology: blue\r\n"
        flood = [_send(port, "/hang", blue) for _ in range(2)]
        assert len(hanging.wait_for(2)) == 2  # both of blue's slots hang...
        flood += [_send(port, "/hang", blue) for _ in range(2)]
        deadline = time.monotonic() + 10  # ...and its queue fills
        while coyote.relay_for("blue").waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert coyote.relay_for("blue").waiting == 2
        shed = _send(port, "/hang", blue)
        assert parse_status(_answer(shed)) == 503  # blue is saturated
        shed.close()
        green = _send(port, "/fine", "X-Coyote-Topology: green\r\n")
        answer = _answer(green)
        green.close()
        assert parse_status(answer) == 200  # green is not
        assert answer.endswith(b"ok")
        for sock in flood:
            sock.close()
    coyote.close()


def test_each_topology_takes_its_own_bounds() -> None:
    coyote = Coyote(concurrency=3, queue=4, timeout=5, topologies={"blue": {"concurrency": 1}})
    coyote.configure_topology("green", queue=0, timeout=2)
    assert (coyote.relay.concurrency, coyote.relay.queue, coyote.relay.timeout) == (3, 4, 5)
    blue, green = coyote.relay_for("blue"), coyote.relay_for("green")
    assert (blue.concurrency, blue.queue, blue.timeout) == (1, 4, 5)
    assert (green.concurrency, green.queue, green.timeout) == (3, 0, 2)
    other = coyote.relay_for("other")  # any other topology: the leader's bounds, its own relay
    assert (other.concurrency, other.queue, other.timeout) == (3, 4, 5)
    assert other is not coyote.relay and coyote.relay_for("other") is other
    coyote.configure(concurrency=7)  # the leader's bounds change; blue keeps its own
    assert coyote.relay_for("blue").concurrency == 1
    assert coyote.relay_for("other").concurrency == 7
    with pytest.raises(ValueError, match="unknown bound"):
        coyote.configure(topologies={"blue": {"slots": 3}})
    with pytest.raises(ValueError):
        coyote.configure_topology("blue", concurrency=0)
    with pytest.raises(ValueError):
        coyote.configure(topologies={"red": {"queue": 1}, "blue": {"concurrency": 0}})
    assert coyote.relay_for("blue").concurrency == 1  # a refused change changes nothing
    assert coyote.relay_for("red").queue == 4
    coyote.close()


def test_topology_bounds_come_from_flask_config_and_the_leader_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coyote_mw.adapters.flask import Coyote as FlaskCoyote
    from flask import Flask

    from coyote_mw.cli.main import _parse_topology_bounds, main

    app = Flask(__name__)
    app.config["COYOTE_TOPOLOGIES"] = {"blue": {"concurrency": 4, "timeout": 2.5}}
    coyote = FlaskCoyote(app)
    assert (coyote.relay_for("blue").concurrency, coyote.relay_for("blue").timeout) == (4, 2.5)
    coyote.close()

    assert _parse_topology_bounds(["blue:concurrency=10,queue=20", "red:timeout=1.5"]) == {
        "blue": {"concurrency": 10, "queue": 20},
        "red": {"timeout": 1.5},
    }
    monkeypatch.setenv("COYOTE_TOKEN", "cli-test-token-0123456789")
    # main() sets the root logger up as the command does (a handler on this test's
    # captured stderr, closed after it): the tests after it get logging back as it was
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    for bad in ("blue", "blue:concurrency", "blue:concurrency=many", "blue:slots=3"):
        with pytest.raises(SystemExit) as exit_:
            main(["leader", "--topology-bounds", bad])
        assert exit_.value.code != 0
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("coyote leader: error:") and ("blue" in error), error


def test_while_queued_the_relay_reads_a_bounded_amount_from_any_receive() -> None:
    # Some hosts' receive (Django's request.read behind the adapter) repeats its last
    # message forever instead of waiting for a disconnect; another sends a large body.
    relay = Relay(concurrency=1, queue=2, timeout=5)

    async def scenario() -> tuple[int, list[dict[str, Any]], int, int]:
        calls = 0

        async def repeating() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            return {"type": "http.request", "body": b"" if calls > 1 else b"x", "more_body": False}

        chunks = 0

        async def endless_body() -> dict[str, Any]:
            nonlocal chunks
            chunks += 1
            await asyncio.sleep(0)
            return {"type": "http.request", "body": b"y" * 1000, "more_body": True}

        assert relay.try_enter()  # the only slot, held
        first = asyncio.ensure_future(relay.acquire(repeating))
        second = asyncio.ensure_future(relay.acquire(endless_body))
        await asyncio.sleep(0.3)
        relay.release()
        replay = await first
        got = [await replay(), await replay()]
        relay.release()
        await second
        relay.release()
        return calls, got, chunks, relay.active

    calls, got, chunks, active = asyncio.run(scenario())
    assert calls == 2  # the body's end, then one more: not a disconnect, so no more
    assert got[0] == {"type": "http.request", "body": b"x", "more_body": False}
    assert chunks == PEEK_MESSAGES  # held back for the handler, then the relay stops
    assert active == 0


class Counter(Client):
    """In-process handlers that record each call; /hold waits for the test's gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[str] = []

    @route("GET", "/hold")
    def hold(self, request: Request) -> str:
        self.seen.append(request.path)
        self.gate.wait(20)
        return "held"

    @route("GET", "/sync/{n:int}")
    def sync(self, request: Request) -> str:
        self.seen.append(request.path)
        return "ok"

    @route("GET", "/async/{n:int}")
    async def asynchronous(self, request: Request) -> str:
        self.seen.append(request.path)
        return "ok"


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_in_process_handlers_never_run_for_clients_that_left_the_queue(
    server: str, kind: str
) -> None:
    coyote = Coyote(concurrency=1, queue=20, timeout=20, access_log=False)
    counter = Counter()
    coyote.register(counter)
    if server == "uvicorn":
        serving: Any = uvicorn_server(coyote.asgi())
    else:
        serving = werkzeug_server(coyote.wsgi())
    with serving as port:
        holder = _send(port, "/hold")
        deadline = time.monotonic() + 10
        while not counter.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        quitters = [_send(port, f"/{kind}/{i}") for i in range(5)]
        while coyote.relay.waiting < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert coyote.relay.waiting == 5
        for sock in quitters:
            sock.close()
        while coyote.relay.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        assert coyote.relay.waiting == 0  # they left the queue: nobody is waiting
        live = _send(port, f"/{kind}/99")
        counter.gate.set()
        assert _answer(holder).endswith(b"held")
        assert _answer(live).endswith(b"ok")
        holder.close()
        live.close()
    assert counter.seen == ["/hold", f"/{kind}/99"]
    coyote.close()
