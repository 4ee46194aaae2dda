"""When instances fail: retries, ejection and re-admission, deadlines, framing and size.

A real leader - uvicorn (ASGI) or Werkzeug's server (WSGI), in a thread, or a real
``coyote leader`` process - relays to ``LedgerUpstream`` instances that misbehave on
command and record the exact bytes they received.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from coyote_mw import Coyote
from tests.support.ledger import BAD_FRAMING, LedgerUpstream, Received
from tests.support.processes import BIN, free_port, running, stop, until
from tests.support.servers import uvicorn_server, werkzeug_server

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "LOCK"]
ALL_PATHS = [(m, "/{rest:path}") for m in METHODS]


@pytest.fixture(params=["asgi", "wsgi"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def leader_for(server: str, *urls: str, **settings: Any) -> Iterator[tuple[Coyote, str]]:
    """A leader relaying every path to ``urls`` (one service), served by a real server."""
    coyote = Coyote(**settings)
    for url in urls:
        coyote.register_remote(url, routes=ALL_PATHS, service="svc", instance=url)
    running: AbstractContextManager[int] = (
        uvicorn_server(coyote.asgi()) if server == "asgi" else werkzeug_server(coyote.wsgi())
    )
    try:
        with running as port:
            yield coyote, f"http://127.0.0.1:{port}"
    finally:
        coyote.close()


def sent(up: LedgerUpstream, method: str, path: str) -> list[Received]:
    return [r for r in up.requests if r.method == method.encode() and r.target == path.encode()]


# -- retries and duplicates -----------------------------------------------------------


def reset_on_a_reused_connection(
    up: LedgerUpstream, client: httpx.Client, url: str, method: str, body: bytes = b""
) -> tuple[httpx.Response, list[Received]]:
    """Send ``method`` until it goes out on a reused connection to ``/fresh-only`` (which
    resets it unanswered); return the answer and what the instance received for it."""
    for _ in range(10):  # a WSGI leader's pool may open a second connection: bounded
        client.get(url + "/fresh-only")  # leaves a pooled connection (or resets one)
        before = len(sent(up, method, "/fresh-only"))
        r = client.request(method, url + "/fresh-only", content=body)
        arrived = sent(up, method, "/fresh-only")[before:]
        if arrived and arrived[0].nth > 0:
            return r, arrived
    raise AssertionError(f"no {method} went out on a reused connection")


@pytest.mark.parametrize(
    ("method", "body"), [("POST", b""), ("POST", b"order=1"), ("PATCH", b"x"), ("LOCK", b"")]
)
def test_a_request_reset_on_a_reused_connection_is_sent_once_unless_idempotent(
    server: str, method: str, body: bytes
) -> None:
    # /fresh-only answers a connection's first request and resets any later one: the
    # pooled connection the leader reuses goes stale just as the request goes out.
    with LedgerUpstream() as up, leader_for(server, up.url) as (_, url), httpx.Client() as client:
        for _ in range(2):
            r, arrived = reset_on_a_reused_connection(up, client, url, method, body)
            assert r.status_code == 502 and r.json()["error"] == "Routing error"
            # the instance got it and may have acted on it: it is never sent again
            assert len(arrived) == 1
        assert up.errors == []


def test_an_idempotent_request_reset_on_a_reused_connection_is_replayed_once() -> None:
    with (
        LedgerUpstream() as up,
        leader_for("asgi", up.url) as (_, url),
        httpx.Client() as client,
    ):
        for method in ("GET", "PUT", "DELETE"):
            r, arrived = reset_on_a_reused_connection(up, client, url, method)
            assert r.status_code == 200 and r.text == "fresh"  # on a fresh connection
            assert [a.nth for a in arrived] == [1, 0]


# -- ejection and re-admission -----------------------------------------------------------


def _503(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 503 X\r\ncontent-length: 4\r\n\r\nbusy")
    return True


def _reset_work(conn: socket.socket, request: Received) -> bool:
    import struct

    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


def _hang_work(conn: socket.socket, request: Received) -> bool:
    time.sleep(1.5)  # longer than the leader's timeout
    return False


@pytest.mark.parametrize("failure", ["503", "reset", "timeout"])
def test_an_instance_that_fails_every_request_is_ejected_beside_a_healthy_one(
    server: str, failure: str
) -> None:
    bad = {"work": {"503": _503, "reset": _reset_work, "timeout": _hang_work}[failure]}
    with (
        LedgerUpstream(behaviours=bad) as sick,
        LedgerUpstream() as well,
        leader_for(server, sick.url, well.url, timeout=0.5) as (_, url),
        httpx.Client() as client,
    ):
        answers = [client.get(url + "/work").status_code for _ in range(20)]
        # three failures in a row eject it: every later request goes to the healthy one
        assert len(sick.requests) == 3
        assert answers.count(200) == 17 and len(well.requests) == 17
        assert answers.count({"503": 503, "reset": 502, "timeout": 504}[failure]) == 3


def test_a_client_that_uploads_too_slowly_is_not_held_against_the_instance() -> None:
    def slow_body() -> Iterator[bytes]:
        yield b"x"
        time.sleep(1.5)  # the relay's timeout passes while the body is still coming
        yield b"y"

    with (
        LedgerUpstream() as a,
        LedgerUpstream() as b,
        leader_for("asgi", a.url, b.url, timeout=0.5) as (_, url),
        httpx.Client(timeout=10) as client,
    ):
        for _ in range(6):  # three for each instance
            with contextlib.suppress(httpx.TransportError):
                assert client.post(url + "/echo", content=slow_body()).status_code == 504
        for _ in range(6):
            assert client.get(url + "/x").status_code == 200
        # neither was ejected: both still get requests
        assert len(sent(a, "GET", "/x")) == len(sent(b, "GET", "/x")) == 3


def test_a_busy_connection_pool_is_not_held_against_the_instance() -> None:
    with (
        LedgerUpstream() as up,
        leader_for("asgi", up.url, timeout=2) as (leader, url),
        httpx.Client(timeout=10) as client,
        ThreadPoolExecutor(1) as background,
    ):
        assert client.get(url + "/x").status_code == 200
        # the leader's loop's pool: one connection
        for pool in list(leader.upstreams._pools.values()):
            pool.max_per_host, pool.connect_timeout = 1, 0.3
        hanging = background.submit(client.get, url + "/hang")  # holds it for 2 s
        up.wait_for(2)
        # no free connection in time: 502, nothing sent - but the instance did nothing wrong
        assert [client.get(url + "/x").status_code for _ in range(4)] == [502] * 4
        assert hanging.result(10).status_code == 504
        assert client.get(url + "/x").status_code == 200  # not ejected


def test_gateway_failures_never_eject_the_last_answering_instances(server: str) -> None:
    with (
        LedgerUpstream(behaviours={"work": _503}) as a,
        LedgerUpstream(behaviours={"work": _503}) as b,
        leader_for(server, a.url) as (_, alone),
        leader_for(server, a.url, b.url) as (_, pair),
        httpx.Client() as client,
    ):
        # one instance: it answers (503), so it stays; the client sees its answers
        assert {client.get(alone + "/work").status_code for _ in range(8)} == {503}
        assert len(a.requests) == 8
        # two: at most half of them are ejected (max_ejection_percent 50)
        answers = [client.get(pair + "/work") for _ in range(12)]
        assert all(r.status_code == 503 and r.text == "busy" for r in answers)
        assert len(a.requests) + len(b.requests) == 8 + 12


def test_an_instance_that_cuts_every_body_after_its_head_is_ejected(server: str) -> None:
    """A 200 head and then a reset, every time: gateway failures in a row, under WSGI
    (where the body is relayed after the head was judged) as under ASGI."""
    with (
        LedgerUpstream() as a,
        LedgerUpstream() as b,
        leader_for(server, a.url, b.url, eject_after=3) as (coyote, leader),
        httpx.Client() as client,
    ):
        for _ in range(6):  # three cuts each, taking turns
            with contextlib.suppress(httpx.HTTPError):
                client.get(leader + "/cut/100", timeout=10)
        ejected = {
            h.url: h.ejected for reg in coyote.table.registrations() for h in reg.handlers.values()
        }
        # max_ejection_percent 50: one of the two is ejected, the other still serves
        assert sorted(ejected.values()) == [False, True], ejected


def test_a_static_instance_is_readmitted_after_an_ejection_time_that_grows(server: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = 2.0
    with leader_for(server, url, base_ejection_time=base) as (_, leader), httpx.Client() as client:
        # nothing listens: three connect failures eject it
        assert [client.get(leader + "/x").status_code for _ in range(3)] == [502] * 3
        ejected = time.monotonic()
        r = client.get(leader + "/x")
        assert r.status_code == 503 and r.json()["error"] == "No healthy instance"
        assert r.headers["retry-after"] == "2"  # when it is due back, in whole seconds
        with LedgerUpstream(port=port) as up:
            # back after base_ejection_time, without a heartbeat
            until(lambda: client.get(leader + "/x").status_code == 200, 10, "re-admitted")
            assert time.monotonic() - ejected >= base - 0.2  # the ejection came first
            assert len(up.requests) == 1
        # gone again: ejected again, now for twice as long
        assert [client.get(leader + "/x").status_code for _ in range(3)] == [502] * 3
        ejected = time.monotonic()
        with LedgerUpstream(port=port) as up:
            time.sleep(base / 2)
            assert client.get(leader + "/x").status_code == 503
            until(lambda: client.get(leader + "/x").status_code == 200, 15, "re-admitted")
            assert time.monotonic() - ejected >= 2 * base - 0.2
            assert len(up.requests) == 1


def test_a_leased_instance_is_readmitted_after_its_ejection_time_without_a_heartbeat() -> None:
    token = "k" * 32
    port = free_port()
    with (
        leader_for("asgi", token=token, base_ejection_time=0.5) as (_, leader),
        httpx.Client() as client,
    ):
        reg = {
            "service": "leased",
            "instance": "one",
            "url": f"http://127.0.0.1:{port}",
            "routes": [{"method": "GET", "path": "/x"}],
            "ttl": 60,
        }
        auth = {"authorization": f"Bearer {token}"}
        r = client.post(leader + "/_coyote/registrations", json=reg, headers=auth)
        assert r.status_code == 201, r.text
        assert [client.get(leader + "/x").status_code for _ in range(4)] == [502] * 3 + [503]
        with LedgerUpstream(port=port) as up:
            until(lambda: client.get(leader + "/x").status_code == 200, 5, "re-admitted")
            assert len(up.requests) == 1


def test_a_readmitted_instance_that_fails_again_is_ejected_at_its_first_failure(
    server: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        leader_for(server, url, base_ejection_time=0.5) as (_, leader),
        httpx.Client() as client,
    ):
        assert [client.get(leader + "/x").status_code for _ in range(4)] == [502] * 3 + [503]
        # re-admitted after 0.5 s on probation: one more failure ejects it (now for 1 s)
        until(lambda: client.get(leader + "/x").status_code == 502, 5, "re-admitted")
        assert client.get(leader + "/x").status_code == 503


def test_ejection_times_grow_no_longer_than_max_ejection_time() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = {"base_ejection_time": 0.5, "max_ejection_time": 0.5}
    with leader_for("asgi", url, **settings) as (_, leader), httpx.Client() as client:
        assert [client.get(leader + "/x").status_code for _ in range(4)] == [502] * 3 + [503]
        until(lambda: client.get(leader + "/x").status_code == 502, 5, "re-admitted")
        ejected = time.monotonic()  # again, after one failure on probation
        # a second ejection would last 1 s; capped, 0.5 s: re-admitted (and failing) by 0.8
        time.sleep(max(0.0, ejected + 0.8 - time.monotonic()))
        assert client.get(leader + "/x").status_code == 502


def test_an_instance_healthy_for_a_while_is_ejected_for_less_the_next_time() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with leader_for("asgi", url, base_ejection_time=1.0) as (_, leader), httpx.Client() as client:
        assert [client.get(leader + "/x").status_code for _ in range(3)] == [502] * 3
        with LedgerUpstream(port=port):
            until(lambda: client.get(leader + "/x").status_code == 200, 10, "re-admitted")
            healthy_until = time.monotonic() + 3.2  # three base_ejection_times and more
            while time.monotonic() < healthy_until:
                assert client.get(leader + "/x").status_code == 200
                time.sleep(0.2)
        assert [client.get(leader + "/x").status_code for _ in range(3)] == [502] * 3
        ejected = time.monotonic()
        with LedgerUpstream(port=port):
            # a second ejection in a row would last 2 s; healthy since, it counts as a first
            time.sleep(max(0.0, ejected + 1.5 - time.monotonic()))
            assert client.get(leader + "/x").status_code == 200


# -- deadlines ------------------------------------------------------------------------------


def test_a_dripping_body_is_cut_at_the_response_timeout(server: str) -> None:
    # 20 bytes, one every 200 ms: each pause is short, the whole takes 4 s
    with (
        LedgerUpstream() as up,
        leader_for(server, up.url, timeout=5, response_timeout=1.0) as (coyote, url),
    ):
        start = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):  # the client sees it incomplete
            httpx.get(url + "/drip/20/200", timeout=10)
        assert time.monotonic() - start < 3.5
        until(lambda: coyote.relay.active == 0, 5, "the relay slot freed")
        assert httpx.get(url + "/drip/3/10", timeout=10).text == "xxx"  # within it: whole


def test_a_body_that_pauses_longer_than_stream_idle_timeout_is_cut(server: str) -> None:
    with (
        LedgerUpstream() as up,
        leader_for(server, up.url, timeout=5, stream_idle_timeout=0.5) as (_, url),
    ):
        start = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):  # a byte, then 1.5 s of nothing
            httpx.get(url + "/pause/1500", timeout=10)
        assert time.monotonic() - start < 1.4
        assert httpx.get(url + "/pause/100", timeout=10).text == "xy"


def test_a_close_delimited_body_cut_by_a_reset_reaches_the_client_incomplete(
    server: str,
) -> None:
    with LedgerUpstream() as up, leader_for(server, up.url) as (_, url):
        # a clean close ends such a body: complete
        r = httpx.get(url + "/close-delimited/5000", timeout=10)
        assert r.status_code == 200 and r.content == b"x" * 5000
        # a reset does not (RFC 9112 8): the client's connection is cut too
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url + "/cut/5000", timeout=10)


def test_under_gunicorn_a_response_cut_upstream_reaches_the_client_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LedgerUpstream() as up:
        monkeypatch.setenv("COYOTE_TEST_UPSTREAM", up.url)
        monkeypatch.setenv("COYOTE_TEST_RESPONSE_TIMEOUT", "1")
        argv = ["gunicorn", "-w", "1", "--threads", "4", "tests.support.relay_leader:app"]
        with running(argv, ready_path="/ready") as url:
            r = httpx.get(url + "/close-delimited/5000", timeout=10)
            assert r.status_code == 200 and r.content == b"x" * 5000
            with pytest.raises(httpx.RemoteProtocolError):  # reset upstream
                httpx.get(url + "/cut/5000", timeout=10)
            with pytest.raises(httpx.RemoteProtocolError):  # past response_timeout
                httpx.get(url + "/drip/20/200", timeout=10)
            assert httpx.get(url + "/drip/3/10", timeout=10).text == "xxx"


# -- upstream framing and size ------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(c.decode() for c in BAD_FRAMING))
def test_bad_response_framing_is_502(server: str, case: str) -> None:
    with LedgerUpstream() as up, leader_for(server, up.url) as (_, url):
        r = httpx.get(f"{url}/framing/{case}", timeout=10)
        assert r.status_code == 502 and r.json()["error"] == "Routing error"


def test_a_status_past_599_is_502(server: str) -> None:
    # llhttp and h11 read any three digits; HTTP's statuses end at 599 (RFC 9110 15)
    with LedgerUpstream() as up, leader_for(server, up.url) as (_, url):
        r = httpx.get(f"{url}/status/600", timeout=10)
        assert r.status_code == 502 and r.json()["error"] == "Routing error"
        assert httpx.get(f"{url}/status/599", timeout=10).status_code == 599


@pytest.mark.parametrize("case", ["under-100", "interim-content"])
def test_a_status_under_100_or_a_1xx_with_content_is_502(server: str, case: str) -> None:
    # "099" is no status (RFC 9110 15), and a 1xx ends with its head (15.2): neither's
    # content is the final response's body (tests/support/ledger.py)
    with LedgerUpstream() as up, leader_for(server, up.url) as (_, url):
        r = httpx.get(f"{url}/{case}", timeout=10)
        assert r.status_code == 502 and r.json()["error"] == "Routing error"


def test_a_response_head_over_max_response_head_is_502(server: str) -> None:
    with LedgerUpstream() as up:
        with leader_for(server, up.url) as (_, url):
            r = httpx.get(url + "/big-head/200", timeout=10)
            assert r.status_code == 502 and r.json()["error"] == "Routing error"
            r = httpx.get(url + "/big-head/40", timeout=10)  # under the 60 KiB default
            assert r.status_code == 200 and len(r.headers["x-big"]) == 40 * 1024
        with leader_for(server, up.url, max_response_head=16 * 1024) as (_, url):
            assert httpx.get(url + "/big-head/20", timeout=10).status_code == 502
            assert httpx.get(url + "/big-head/8", timeout=10).status_code == 200


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@contextmanager
def leader_process(token: str) -> Iterator[tuple[str, int]]:
    """A real ``coyote leader`` process on a free port: its URL and PID."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "coyote"), "--log-level", "warning", "leader", "--port", str(port)],
        env={**os.environ, "COYOTE_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the leader exited"
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the leader did not start"
                time.sleep(0.1)
        yield url, proc.pid
    finally:
        stop(proc)


def test_a_64_mib_response_head_is_refused_without_being_read() -> None:
    token = "k" * 32
    with LedgerUpstream() as up, leader_process(token) as (url, pid):
        reg = {
            "service": "big",
            "instance": "one",
            "url": up.url,
            "routes": [{"method": "GET", "path": "/big-head/{kib}"}],
            "ttl": 600,
        }
        auth = {"authorization": f"Bearer {token}"}
        r = httpx.post(url + "/_coyote/registrations", json=reg, headers=auth, timeout=10)
        assert r.status_code == 201, r.text
        before = _vm_kib(pid, "VmHWM")
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: httpx.get(url + "/big-head/65536", timeout=30), range(4))
            )
        assert [a.status_code for a in answers] == [502] * 4
        grew = _vm_kib(pid, "VmHWM") - before
        assert grew < 16 * 1024, f"the leader's peak memory grew by {grew // 1024} MiB"


# -- the settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("max_response_head", 10, "max_response_head"),
        ("response_timeout", -1, "response_timeout"),
        ("stream_idle_timeout", 0, "stream_idle_timeout"),
        ("eject_after", 0, "eject_after"),
        ("base_ejection_time", 0, "base_ejection_time"),
        ("max_ejection_time", 1, "max_ejection_time"),
        ("max_ejection_percent", 101, "max_ejection_percent"),
    ],
)
def test_a_bad_upstream_setting_is_refused_saying_which(
    setting: str, value: float, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        Coyote(**{setting: value})
    coyote = Coyote()
    with pytest.raises(ValueError, match=says):
        coyote.configure(**{setting: value})
    assert coyote.upstream == Coyote().upstream  # unchanged


def test_upstream_settings_come_from_keywords_configure_flask_config_and_the_cli() -> None:
    from coyote_mw.adapters.flask import Coyote as FlaskCoyote
    from flask import Flask

    coyote = Coyote(response_timeout=5, eject_after=2)
    coyote.configure(max_ejection_percent=30, stream_idle_timeout=2)
    p = coyote.upstream
    assert (p.response_timeout, p.eject_after, p.max_ejection_percent) == (5, 2, 30)
    assert (p.stream_idle_timeout, p.max_response_head) == (2, 60 * 1024)
    app = Flask(__name__)
    app.config.update(COYOTE_BASE_EJECTION_TIME=1.5, COYOTE_MAX_RESPONSE_HEAD=8192)
    p = FlaskCoyote(app).upstream
    assert (p.base_ejection_time, p.max_response_head) == (1.5, 8192)
    out = subprocess.run(
        [str(BIN / "coyote"), "leader", "--max-ejection-percent", "101"],
        env={**os.environ, "COYOTE_TOKEN": "k" * 32},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "max_ejection_percent must be a whole number from 0 to 100" in out.stderr
    assert len(out.stderr.strip().splitlines()[-1]) < 200
