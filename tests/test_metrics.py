"""Prometheus metrics at /_coyote/metrics: what real requests, registrations, ejections
and store outages count, under the ASGI and WSGI middlewares, with the token or open,
with bounded labels, under gunicorn with two workers, and without prometheus-client."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coyote_mw import Client, Coyote, Request, route
from coyote_mw.ops.metrics import (
    RETIRE_AFTER,
    SAMPLE_INTERVAL,
    _requests_text,
    requests_text_by_prometheus_client,
)
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.patterns import parse_pattern
from coyote_mw.settings import known_settings
from sample_apps.flask_host import create_app
from tests.support.coyote_processes import AUTH as LEADER_AUTH
from tests.support.coyote_processes import CoyoteProcesses, procs
from tests.support.http_clients import ASGIClient, WSGIClient
from tests.support.ledger import LedgerUpstream, Received
from tests.support.metrics_app import CONCURRENCY
from tests.support.processes import free_port, running, until
from tests.support.redis_server import RedisServer
from tests.support.registration import AUTH, TOKEN, payload
from tests.support.servers import uvicorn_server, werkzeug_server

__all__ = ["procs"]  # the fixture, shared

ROUTE = "/items/{id:int}"


def unique(prefix: str) -> str:
    """A service name of this test's own: the event counters are the process's."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Shop(Client):
    @route("GET", ROUTE)
    def item(self, request: Request) -> dict[str, Any]:
        return {"id": request.params["id"]}

    @route("POST", "/fail")
    def fail(self, request: Request) -> str:
        raise RuntimeError("kaput")


def samples(text: str, name: str, **labels: str) -> list[Any]:
    """The samples called ``name`` whose labels include ``labels``."""
    found = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                found.append(s)
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum of those samples (0 when there is none)."""
    return sum(s.value for s in samples(text, name, **labels))


@pytest.fixture
def client_of(interface: str, loop_thread: Any) -> Iterator[Callable[[Coyote], Any]]:
    clients: list[Any] = []

    def make(coyote: Coyote) -> Any:
        if interface == "asgi":
            c: Any = ASGIClient(coyote.asgi(), loop_thread)
        else:
            c = WSGIClient(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def leader() -> Iterator[Coyote]:
    coyote = Coyote(token=TOKEN)
    yield coyote
    coyote.close()


def scrape(client: Any, headers: dict[str, str] | None = AUTH) -> str:
    r = client.get("/_coyote/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return str(r.text)


# -- requests ------------------------------------------------------------------------------


def test_requests_are_counted_by_route_pattern_and_status_class(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    service = unique("shop")
    leader.register(Shop(), service=service)
    client = client_of(leader)
    assert [client.get(f"/items/{i}").status_code for i in (1, 2, 3)] == [200] * 3
    assert client.post("/fail").status_code == 502
    assert client.get("/items/x").status_code == 404  # {id:int}: no route takes it
    text = scrape(client)
    route = {"topology": "default", "method": "GET", "route": ROUTE, "service": service}
    assert value(text, "coyote_requests_total", **route, status="2xx") == 3
    assert value(text, "coyote_request_duration_seconds_count", **route) == 3
    assert value(text, "coyote_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert value(text, "coyote_request_duration_seconds_sum", **route) > 0
    failed = {**route, "method": "POST", "route": "/fail", "status": "5xx"}
    assert value(text, "coyote_requests_total", **failed) == 1
    # no route: every label of the route empty, the status class kept
    assert value(text, "coyote_requests_total", route="", service="", status="4xx") == 1
    assert "/items/1" not in text and "/items/x" not in text  # never the raw path


def test_a_thousand_raw_paths_under_one_route_are_one_label_set(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    service = unique("many")
    leader.register(Shop(), service=service)
    client = client_of(leader)
    for i in range(1000):
        assert client.get(f"/items/{i}").status_code == 200
        assert client.get(f"/nothing/{i}").status_code == 404
    text = scrape(client)
    (counted,) = samples(text, "coyote_requests_total", service=service)
    assert counted.labels["route"] == ROUTE and counted.value == 1000
    assert len(samples(text, "coyote_request_duration_seconds_count", service=service)) == 1
    unmatched = samples(text, "coyote_requests_total", route="", status="4xx")
    assert len(unmatched) == 1 and unmatched[0].value == 1000
    assert "/nothing/" not in text and "/items/7" not in text


def test_the_series_of_a_route_that_left_the_table_are_dropped_after_a_grace(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    """Routes that come and go (instances with routes of their own, renamed services)
    must not grow /metrics for ever: a gone route's series stay RETIRE_AFTER seconds
    from the first scrape that finds it gone - so its last counts are scraped - then go.
    A route that is still there, and requests no route took, keep theirs."""
    gone, kept = unique("gone"), unique("kept")
    leader.register(Shop(), service=gone)
    client = client_of(leader)
    assert client.get("/items/1").status_code == 200
    assert client.get("/nowhere").status_code == 404
    leader.deregister(service=gone)
    leader.register(Shop(), service=kept)
    assert client.get("/items/2").status_code == 200
    text = scrape(client)  # the first scrape to find it gone: still shown
    assert value(text, "coyote_requests_total", service=gone, status="2xx") == 1
    metrics = leader.metrics
    metrics.retire(time.monotonic() + RETIRE_AFTER - 5)  # not yet
    assert value(scrape(client), "coyote_requests_total", service=gone) == 1
    metrics.retire(time.monotonic() + RETIRE_AFTER + 1)
    text = scrape(client)
    assert samples(text, "coyote_requests_total", service=gone) == []
    assert samples(text, "coyote_request_duration_seconds_count", service=gone) == []
    assert value(text, "coyote_requests_total", service=kept, status="2xx") == 1
    assert value(text, "coyote_requests_total", route="", status="4xx") == 1
    # the route back: counted afresh under the same labels
    leader.deregister(service=kept)
    leader.register(Shop(), service=gone)
    assert client.get("/items/3").status_code == 200
    metrics.retire(time.monotonic() + 2 * RETIRE_AFTER)
    text = scrape(client)
    assert value(text, "coyote_requests_total", service=gone, status="2xx") == 1


def test_a_route_back_and_gone_again_gets_its_grace_again(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    """Found gone, back and requested, gone again - all between two sweeps: the counts
    it took while back are kept RETIRE_AFTER from its second leaving, not dropped at
    once for its first."""
    service = unique("again")
    metrics = leader.metrics
    now = [1000.0]
    metrics.clock = lambda: now[0]
    client = client_of(leader)
    leader.register(Shop(), service=service)
    assert client.get("/items/1").status_code == 200
    leader.deregister(service=service)
    scrape(client)  # found gone at 1000 s
    now[0] += RETIRE_AFTER - 10
    leader.register(Shop(), service=service)
    assert client.get("/items/2").status_code == 200  # back, and counted
    leader.deregister(service=service)
    now[0] += 20  # past the first leaving's grace, not the second's
    text = scrape(client)
    assert value(text, "coyote_requests_total", service=service, status="2xx") == 2


def test_series_of_routes_that_left_are_dropped_without_scrapes_too(leader: Coyote) -> None:
    """A leader nobody scrapes: once its series have grown past twice what the last
    sweep left (and 64 more), a new route's first request sweeps, and the series of
    routes gone for RETIRE_AFTER seconds are dropped."""
    metrics = leader.metrics
    now = [1000.0]
    metrics.clock = lambda: now[0]
    services = [unique("churn") for _ in range(300)]
    for i, service in enumerate(services):
        if i == 100:
            now[0] += RETIRE_AFTER + 1
        leader.register(Shop(), service=service)
        for endpoint in leader.table.endpoints():
            metrics.record(endpoint, 200, 0.001)
        leader.deregister(service=service)
    with metrics._lock:  # as the requests left them: no scrape (snapshot() sweeps)
        labels = {labels[3] for labels in metrics._series}
    assert services[0] not in labels and services[63] not in labels  # gone at 1000 s
    assert services[-1] in labels  # gone just now: kept for RETIRE_AFTER
    assert len(labels) < 300 - 60


# -- who may scrape ------------------------------------------------------------------------


def test_metrics_need_the_token_by_default(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    client = client_of(leader)
    r = client.get("/_coyote/metrics")
    assert (r.status_code, r.json()["error"]) == (401, "Authorization required")
    assert r.headers["www-authenticate"] == "Bearer"
    wrong = {"authorization": "Bearer " + "w" * 32}
    assert client.get("/_coyote/metrics", headers=wrong).status_code == 403
    assert "coyote_requests_total" in scrape(client)
    assert client.head("/_coyote/metrics", headers=AUTH).status_code == 200
    r = client.post("/_coyote/metrics", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_metrics_are_open_when_configured(client_of: Callable[[Coyote], Any]) -> None:
    coyote = Coyote(token=TOKEN, metrics="open")
    try:
        client = client_of(coyote)
        assert "coyote_relay_in_flight" in scrape(client, headers=None)
        assert client.get("/_coyote/routes").status_code == 401  # only /metrics opens
        coyote.configure(metrics="token")
        assert client.get("/_coyote/metrics").status_code == 401
    finally:
        coyote.close()


def test_metrics_open_from_the_flask_config_under_its_test_client() -> None:
    app = create_app(COYOTE_TOKEN=TOKEN, COYOTE_METRICS="open")
    client = app.test_client()
    try:
        assert client.get("/").status_code == 200  # the Saloon, in process
        r = client.get("/_coyote/metrics")
        assert r.status_code == 200
        text = r.get_data(as_text=True)
        assert value(text, "coyote_requests_total", route="/", service="deadwood.saloon") >= 1
    finally:
        app.extensions["coyote"].close()
    assert "METRICS" in known_settings()  # Django: settings.COYOTE["METRICS"]


def test_metrics_off_records_nothing_and_answers_404(
    client_of: Callable[[Coyote], Any],
) -> None:
    off = Coyote(token=TOKEN, metrics="off")
    try:
        off.register(Shop(), service="shop")
        client = client_of(off)
        assert client.get("/items/1").status_code == 200
        r = client.get("/_coyote/metrics", headers=AUTH)
        assert (r.status_code, r.json()["error"]) == (404, "Metrics are off")
        off.configure(metrics="token")
        assert samples(scrape(client), "coyote_requests_total", service="shop") == []
        assert client.get("/items/2").status_code == 200  # counted from now on
        assert value(scrape(client), "coyote_requests_total", service="shop") == 1
    finally:
        off.close()
    with pytest.raises(ValueError, match="metrics must be one of token, open, off"):
        Coyote(metrics="public")


def first_head(port: int, head: str) -> bytes:
    """The first response head the server sends for ``head`` (a body it declares never
    follows): b"" when none came within 5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head.encode("latin-1"))
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out.partition(b"\r\n\r\n")[0]


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_scrape_is_answered_before_its_body_is_read(server: str) -> None:
    # as the other views open to all: no token, no read (a declared body that never
    # comes is not waited for, Expect: 100-continue gets no 100 Continue), and a scrape
    # with its token is answered whatever length it declares
    coyote = Coyote(token=TOKEN)
    coyote.register(Shop(), service="shop")
    serving = (
        uvicorn_server(coyote.asgi()) if server == "uvicorn" else werkzeug_server(coyote.wsgi())
    )
    metrics = "GET /_coyote/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    try:
        with serving as port:
            head = first_head(port, metrics + "Content-Length: 1000\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 401 "), head
            if server == "uvicorn":  # (Werkzeug's server says 100 before the app runs)
                expect = "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
                head = first_head(port, metrics + expect)
                assert head.startswith(b"HTTP/1.1 401 "), head
            auth = f"Authorization: Bearer {TOKEN}\r\n"
            head = first_head(port, metrics + auth + "Content-Length: 1000000\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        coyote.close()


# -- the relay -----------------------------------------------------------------------------


class Gate(Client):
    def __init__(self) -> None:
        self.gate = threading.Event()

    @route("GET", "/hold")
    def hold(self, request: Request) -> str:
        self.gate.wait(10)
        return "held"


def test_relay_slots_queue_and_503s_per_topology_under_a_real_uvicorn() -> None:
    coyote = Coyote(token=TOKEN, topologies={"blue": {"concurrency": 1, "queue": 2}})
    gate = Gate()
    coyote.register(gate, topology="blue")
    try:
        with (
            uvicorn_server(coyote.asgi(topology="blue")) as port,
            ThreadPoolExecutor(3) as pool,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client,
        ):

            def blue(name: str) -> float:
                return value(scrape(client), name, topology="blue")

            held = [pool.submit(client.get, "/hold") for _ in range(3)]
            until(lambda: blue("coyote_relay_queue_depth") == 2, 10, "two queued")
            assert blue("coyote_relay_in_flight") == 1
            full = client.get("/hold")
            assert (full.status_code, full.json()["error"]) == (503, "Relay saturated")
            text = scrape(client)
            assert value(text, "coyote_relay_saturated_total", topology="blue") == 1
            assert value(text, "coyote_relay_concurrency", topology="blue") == 1
            assert value(text, "coyote_relay_queue_capacity", topology="blue") == 2
            gate.gate.set()
            assert [f.result().status_code for f in held] == [200] * 3
            text = scrape(client)
            assert value(text, "coyote_relay_in_flight", topology="blue") == 0
            assert value(text, "coyote_relay_queue_depth", topology="blue") == 0
            status = {"topology": "blue", "route": "/hold"}
            assert value(text, "coyote_requests_total", **status, status="2xx") == 3
            assert value(text, "coyote_requests_total", **status, status="5xx") == 1
    finally:
        gate.gate.set()
        coyote.close()


def test_a_scrape_is_made_off_the_event_loop_which_serves_on_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a scrape of a large table takes a while (10,000 routes: some 0.3 s): made on the
    # server's event loop, every request of that worker would wait for it
    coyote = Coyote(token=TOKEN, metrics="open")
    metrics = coyote.metrics
    assert metrics is not None
    entered, release = threading.Event(), threading.Event()
    render = metrics.render

    def slow_render() -> tuple[bytes, str]:
        entered.set()
        release.wait(10)  # as long as the test needs: the event loop must not wait
        return render()

    monkeypatch.setattr(metrics, "render", slow_render)
    coyote.register(Shop(), service="shop")
    try:
        with (
            uvicorn_server(coyote.asgi()) as port,
            ThreadPoolExecutor(1) as pool,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
        ):
            scraping = pool.submit(client.get, "/_coyote/metrics")
            assert entered.wait(10)
            # while the scrape is being made: the probes and the routes are answered
            assert client.get("/_coyote/health").status_code == 200
            assert client.get("/items/7").status_code == 200
            release.set()
            r = scraping.result(10)
            assert r.status_code == 200 and "coyote_requests_total" in r.text
    finally:
        release.set()
        coyote.close()


# -- registrations, leases, ejections --------------------------------------------------------


def test_registrations_deregistrations_and_lease_expiries_are_counted(
    leader: Coyote, client_of: Callable[[Coyote], Any]
) -> None:
    service = unique("leased")
    client = client_of(leader)
    one = {"topology": "default", "service": service}
    r = client.post("/_coyote/registrations", json=payload(service=service), headers=AUTH)
    assert r.status_code == 201, r.text
    text = scrape(client)
    assert value(text, "coyote_registrations_total", **one) == 1
    assert value(text, "coyote_routes", topology="default") == 1
    lease = r.json()["lease"]
    gone = client.request("DELETE", f"/_coyote/registrations/{lease}", headers=AUTH)
    assert gone.status_code == 204
    assert value(scrape(client), "coyote_deregistrations_total", **one) == 1
    short = payload(service=service, instance="two", ttl=1)
    assert client.post("/_coyote/registrations", json=short, headers=AUTH).status_code == 201
    until(lambda: not leader.table.routes(), 10, "the lease expired")
    text = scrape(client)
    assert value(text, "coyote_lease_expiries_total", **one) == 1
    assert value(text, "coyote_registrations_total", **one) == 2
    assert value(text, "coyote_deregistrations_total", **one) == 1  # an expiry is not one


def _503(conn: Any, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 503 X\r\ncontent-length: 4\r\n\r\nbusy")
    return True


def test_ejections_and_readmissions_are_counted_by_cause(
    client_of: Callable[[Coyote], Any],
) -> None:
    coyote = Coyote(token=TOKEN, base_ejection_time=0.3)
    service = unique("flaky")
    client = client_of(coyote)

    def count(name: str, cause: str) -> float:
        return value(scrape(client), name, cause=cause)

    def ejected() -> float:
        return value(scrape(client), "coyote_instances_ejected", service=service)

    try:
        # a static instance nobody listens at: three connect failures eject it
        url = f"http://127.0.0.1:{free_port()}"
        coyote.register_remote(url, routes=[("GET", "/gone")], service=service)
        before = count("coyote_instance_ejections_total", "connect")
        timer = count("coyote_instance_readmissions_total", "timer")
        assert [client.get("/gone").status_code for _ in range(3)] == [502] * 3
        assert count("coyote_instance_ejections_total", "connect") == before + 1
        assert ejected() == 1
        # its ejection time over, the next request re-admits it (and fails it again)
        until(lambda: client.get("/gone").status_code == 502, 10, "re-admitted")
        assert count("coyote_instance_readmissions_total", "timer") == timer + 1
        # an instance answering 503 beside a healthy one: gateway failures eject it
        with LedgerUpstream(behaviours={"work": _503}) as sick, LedgerUpstream() as well:
            for up in (sick, well):
                routes = [("GET", "/work")]
                coyote.register_remote(up.url, routes=routes, service=service + "-two")
            before = count("coyote_instance_ejections_total", "gateway")
            answers = [client.get("/work").status_code for _ in range(8)]
            assert answers.count(503) == 3 and len(sick.requests) == 3
            assert count("coyote_instance_ejections_total", "gateway") == before + 1
        # a leased instance ejected, then a heartbeat brings it back at once
        leased = payload(
            service=service + "-leased", url=url, routes=[{"method": "GET", "path": "/leased"}]
        )
        r = client.post("/_coyote/registrations", json=leased, headers=AUTH)
        assert r.status_code == 201, r.text
        assert [client.get("/leased").status_code for _ in range(3)] == [502] * 3
        heartbeat = count("coyote_instance_readmissions_total", "heartbeat")
        lease = r.json()["lease"]
        assert (
            client.request("PUT", f"/_coyote/registrations/{lease}", headers=AUTH).status_code
            == 200
        )
        assert count("coyote_instance_readmissions_total", "heartbeat") == heartbeat + 1
    finally:
        coyote.close()


# -- real processes ------------------------------------------------------------------------


def test_store_reachability_and_outages_of_a_real_leader_with_open_metrics(
    procs: CoyoteProcesses,
) -> None:
    server = RedisServer().start()
    try:
        leader = procs("leader", "--store", server.url, "--metrics", "open")

        def metric(name: str) -> float:
            r = httpx.get(leader.url + "/_coyote/metrics", timeout=5)
            assert r.status_code == 200, r.text  # no token: --metrics open
            return value(r.text, name)

        until(lambda: metric("coyote_store_up") == 1, 20, "the store up")
        assert metric("coyote_store_outages_total") == 0
        server.stop()
        until(lambda: metric("coyote_store_up") == 0, 10, "the store down")
        assert metric("coyote_store_outages_total") == 1
        server.start()
        until(lambda: metric("coyote_store_up") == 1, 20, "the store back")
        assert metric("coyote_store_outages_total") == 1
    finally:
        server.cleanup()


def test_the_cli_takes_metrics_from_the_flag_and_the_toml_file(
    procs: CoyoteProcesses, tmp_path: Path
) -> None:
    config = tmp_path / "leader.toml"
    config.write_text('metrics = "off"\n')
    leader = procs("leader", "--config", str(config))
    r = httpx.get(leader.url + "/_coyote/metrics", headers=LEADER_AUTH, timeout=5)
    assert (r.status_code, r.json()["error"]) == (404, "Metrics are off")
    from coyote_mw.cli.main import parse

    assert parse(["leader", "--config", str(config)]).metrics == "off"
    assert parse(["leader", "--config", str(config), "--metrics", "open"]).metrics == "open"
    assert parse(["leader"]).metrics == "token"
    config.write_text('metrics = "public"\n')
    with pytest.raises(SystemExit) as refused:
        parse(["leader", "--config", str(config)])
    assert refused.value.code == 2


@pytest.mark.parametrize("preload", [[], ["--preload"]], ids=["imported-by-workers", "preload"])
def test_two_gunicorn_workers_sum_their_counts(tmp_path: Path, preload: list[str]) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    config = ["-c", "python:tests.support.metrics_gunicorn"]
    argv = ["gunicorn", "-w", "2", *config, *preload, "tests.support.metrics_app:app"]
    with running(argv, "/_coyote/health", env=env) as url:
        pids: list[str] = []
        # a connection of its own each: the kernel hands them to both workers
        while len(set(pids)) < 2:
            assert len(pids) < 2000, f"one worker took every request: {set(pids)}"
            r = httpx.get(url + "/pid", headers={"connection": "close"}, timeout=5)
            assert r.status_code == 200
            pids.append(r.text)
        for _ in range(20):
            pids.append(httpx.get(url + "/pid", timeout=5).text)
        pid_route = {"route": "/pid", "service": "worker", "status": "2xx"}

        def scraped() -> str:
            r = httpx.get(url + "/_coyote/metrics", headers={"connection": "close"}, timeout=5)
            assert r.status_code == 200, r.text
            return r.text

        # whichever worker answers, it sums both workers' files
        for _ in range(6):
            text = scraped()
            assert value(text, "coyote_requests_total", **pid_route) == len(pids)
            assert value(text, "coyote_request_duration_seconds_count", route="/pid") == len(pids)
        # each worker writes its relay's bounds within SAMPLE_INTERVAL: livesum adds them
        until(
            lambda: (
                value(scraped(), "coyote_relay_concurrency", topology="default") == 2 * CONCURRENCY
            ),
            10 * SAMPLE_INTERVAL,
            "both workers' relays",
        )
        text = scraped()
        assert value(text, "coyote_relay_in_flight", topology="default") == 0
        assert value(text, "coyote_routes", topology="default") == 1  # livemax, not summed
        assert samples(text, "coyote_store_up") == []  # no store
        assert any(f.name.startswith("gauge_live") for f in tmp_path.iterdir())


def test_gunicorn_workers_replaced_by_max_requests_leave_one_archive_and_every_count(
    tmp_path: Path,
) -> None:
    # gunicorn's max_requests replaces a worker every few requests (against leaks): the
    # README's child_exit folds each one's counts into the archive and removes its files
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    config = ["-c", "python:tests.support.metrics_gunicorn", "--max-requests", "8"]
    argv = ["gunicorn", "-w", "1", *config, "tests.support.metrics_app:app"]
    with running(argv, "/_coyote/health", env=env) as url:
        pids = [
            httpx.get(url + "/pid", headers={"connection": "close"}, timeout=10).text
            for _ in range(40)
        ]
        assert len(set(pids)) >= 5  # five workers at least have come and gone
        r = httpx.get(url + "/_coyote/metrics", headers={"connection": "close"}, timeout=10)
        assert r.status_code == 200, r.text
        assert value(r.text, "coyote_requests_total", route="/pid", status="2xx") == 40
        assert value(r.text, "coyote_request_duration_seconds_count", route="/pid") == 40
        # an event counter no worker counted is still shown, at 0
        assert value(r.text, "coyote_store_outages_total") == 0
        live = httpx.get(url + "/pid", headers={"connection": "close"}, timeout=10).text
        names = {p.name for p in tmp_path.iterdir()}
        # the archive, and the files of the worker serving now at most (none once it
        # too is replaced: gunicorn's arbiter runs child_exit before it starts the next):
        # no file of a worker gone, prometheus-client's included - a worker that counted
        # no event leaves none of them (its live gauges go with mark_process_dead)
        assert "coyote_requests_archive.json" in names
        owners = {m.group(1) for n in names if (m := re.search(r"_(\d+)[._]", n))}
        assert owners <= {live}, sorted(names)


def test_a_leader_without_prometheus_client_serves_and_answers_501_naming_the_extra() -> None:
    # prometheus-client is installed here: hide it from a real leader process, as if not
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from coyote_mw.cli import main\n"
        f"sys.exit(main(['leader', '--port', sys.argv[1], '--token', {TOKEN!r}]))\n"
    )
    with running([sys.executable, "-c", code, "{port}"], "/_coyote/health") as url:
        assert httpx.get(url + "/_coyote/ready", timeout=5).status_code == 200
        assert httpx.get(url + "/_coyote/metrics", timeout=5).status_code == 401
        r = httpx.get(url + "/_coyote/metrics", headers=AUTH, timeout=5)
        assert r.status_code == 501
        assert r.json() == {
            "error": "Metrics need prometheus-client",
            "detail": "pip install 'coyote-mw[metrics]'",
            "extra": "metrics",
        }
        assert httpx.get(url + "/nothing", timeout=5).status_code == 404  # serving still


def test_importing_coyote_mw_does_not_import_prometheus_client() -> None:
    import subprocess

    code = "import sys, coyote_mw; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_requests_families_are_written_as_prometheus_client_writes_them() -> None:
    # written by coyote (prometheus-client takes some 25 us a line, and a table of many
    # routes has some 19 lines each): label values that need escaping, counts past the
    # point where Go writes an exponent, sums of every size, the series of no route
    coyote = Coyote(metrics="token")
    metrics = coyote.metrics
    assert _requests_text(metrics) == requests_text_by_prometheus_client(metrics)  # empty
    odd = [
        Endpoint("GET", parse_pattern("/items/{id:int}"), "shop", "default", False, ()),
        Endpoint("POST", parse_pattern('/q"uote/back\\slash'), 'svc"\\\n', "t\n2", False, ()),
        Endpoint("PUT", parse_pattern("/caf\u00e9/{name}"), "caf\u00e9", "default", False, ()),
    ]
    for i, endpoint in enumerate([*odd, None]):
        for status, seconds in [(200, 0.0001), (404, 0.003), (503, 31.0), (99, 1e-9)]:
            metrics.record(endpoint, status + i, seconds * (i + 1))
    series = metrics._series[("default", "GET", "/items/{id:int}", "shop")]
    series.counts[2] += 1_234_567  # counts Go writes with an exponent
    series.buckets[3] += 999_999
    series.sums[0] += 12_345_678.9
    ours = _requests_text(metrics)
    assert ours == requests_text_by_prometheus_client(metrics)
    assert 'service="svc\\"\\\\\\n"' in ours and "1.234568e+06" in ours
    body, _ = metrics.render()
    assert body.decode("utf-8").startswith(ours)  # and the rest follows as it did
