"""What the log says: one access line per request with its fields, one line per event.

The process tests read the stderr of a real ``coyote leader`` and ``coyote serve-client``
(started and ended by PID; every wait bounded); the others read real log output of a
leader in this process, or of a fresh interpreter where logging is left unconfigured.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, Request, route
from coyote_mw.logs import JSONFormatter
from tests.support.coyote_processes import AUTH, ENV, CoyoteProcesses, Proc, routes_of
from tests.support.ledger import LedgerUpstream
from tests.support.processes import ROOT, free_port, until
from tests.support.redis_server import RedisServer

SALOON = "sample_apps.deadwood.saloon:Saloon"


# -- a leader in this process --------------------------------------------------------


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "coyote_mw.access"]


def test_a_relayed_request_is_one_line_with_client_route_service_instance_and_request_id(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with LedgerUpstream() as up:
        coyote.register_remote(up.url, routes=[("GET", "/orders/{id:int}")], service="orders")
        client = serve(coyote)
        with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
            r = client.get("/orders/7", headers={"x-request-id": "trace-42"})
            made = client.get("/orders/8")
        assert r.status_code == made.status_code == 200
        (given, other) = access_records(caplog)
        message = given.getMessage()
        assert message.startswith("GET /orders/7 200 ")
        assert re.search(r" \d+\.\dms ", message)
        for part in (
            "route=/orders/{id:int}",
            "service=orders",
            f"instance={up.url}",
            "client=",
            "request_id=trace-42",
        ):
            assert part in message, (part, message)
        assert up.requests[0].header("x-request-id") == b"trace-42"
        # without one, the id made for the instance is the one in the line
        made_id = re.search(r"request_id=(\S+)", other.getMessage())
        assert made_id is not None and made_id.group(1) != "-"
        assert up.requests[1].header("x-request-id") == made_id.group(1).encode()


def test_a_request_retried_on_another_instance_names_the_one_that_answered(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with LedgerUpstream() as up:
        coyote.register_remote(dead, routes=[("GET", "/x")], service="svc", instance="dead")
        coyote.register_remote(up.url, routes=[("GET", "/x")], service="svc", instance="live")
        client = serve(coyote)
        with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
            # round robin: one of two requests at least is tried on the dead one first
            assert [client.get("/x").status_code for _ in range(2)] == [200, 200]
    lines = [r.getMessage() for r in access_records(caplog)]
    assert len(lines) == 2
    assert all(f"instance={up.url} " in line for line in lines), lines


class Shop(Client):
    service = "shop"

    @route("GET", "/items/{id:int}")
    def item(self, request: Request) -> str:
        return "item"

    @route("GET", "/whoami")
    def whoami(self, request: Request) -> str:
        return request.request_id or "none"


def test_an_in_process_handler_reads_the_request_id_the_line_shows(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    coyote.register(Shop())
    client = serve(coyote)
    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        assert client.get("/whoami", headers={"x-request-id": "abc.9"}).text == "abc.9"
        assert client.get("/whoami", headers={"x-request-id": "bad id"}).text == "none"
    lines = [r.getMessage() for r in access_records(caplog)]
    assert lines[0].endswith("request_id=abc.9") and lines[1].endswith("request_id=-")


def test_an_in_process_line_has_no_instance_and_the_clients_safe_request_id(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    coyote.register(Shop())
    client = serve(coyote)
    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        client.get("/items/1", headers={"x-request-id": "abc-1"})
        client.get("/items/2", headers={"x-request-id": "no spaces\tallowed"})
        client.get("/nowhere")
    lines = [r.getMessage() for r in access_records(caplog)]
    assert len(lines) == 3
    assert "service=shop instance=- client=" in lines[0]
    assert lines[0].endswith("request_id=abc-1")
    assert lines[1].endswith("request_id=-")  # an unsafe id is not written to the log
    assert lines[2].startswith("GET /nowhere 404 ")
    assert "route=- service=- instance=-" in lines[2]


def test_the_json_formatter_writes_the_access_fields_as_one_object(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    coyote.register(Shop())
    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        serve(coyote).get("/items/3", headers={"x-request-id": "j-1"})
    (record,) = access_records(caplog)
    line = JSONFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["logger"] == "coyote_mw.access" and fields["level"] == "INFO"
    assert {k: fields[k] for k in ("method", "path", "status", "route", "service")} == {
        "method": "GET",
        "path": "/items/3",
        "status": 200,
        "route": "/items/{id:int}",
        "service": "shop",
    }
    assert fields["instance"] is None and fields["request_id"] == "j-1"
    assert isinstance(fields["duration_ms"], float) and fields["client"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unconfigured_host_prints_no_bare_warning_and_builds_no_access_line() -> None:
    done = _python(
        "import logging, coyote_mw\n"
        "from coyote_mw.middleware import accesslog\n"
        "logging.getLogger('coyote_mw.storesync').warning('shared store unreachable')\n"
        "print(accesslog._destination())\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # logging's last resort would print the warning
    assert done.stdout.strip() == "False"


def test_log_format_json_gives_a_host_json_lines_on_stderr() -> None:
    done = _python(
        "import httpx\n"
        "from coyote_mw import Coyote\n"
        "from tests.test_logs import Shop\n"
        "c = Coyote(log_format='json')\n"
        "c.register(Shop())\n"
        "t = httpx.Client(transport=httpx.WSGITransport(c.wsgi()), base_url='http://t')\n"
        "print(t.get('/items/5').status_code)\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "200", done.stderr
    (line,) = done.stderr.splitlines()
    fields = json.loads(line)
    assert fields["path"] == "/items/5" and fields["service"] == "shop"


def test_flask_config_log_format_json_gives_json_lines() -> None:
    done = _python(
        "import flask\n"
        "from coyote_mw.adapters.flask import Coyote\n"
        "app = flask.Flask('host')\n"
        "app.config['COYOTE_LOG_FORMAT'] = 'json'\n"
        "app.config['COYOTE_CLIENTS'] = ['tests.test_logs:Shop']\n"
        "Coyote(app)\n"
        "print(app.test_client().get('/items/6').status_code)\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "200", done.stderr
    (line,) = done.stderr.splitlines()
    fields = json.loads(line)
    assert fields["path"] == "/items/6" and fields["route"] == "/items/{id:int}"


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format 'xml'"):
        Coyote(log_format="xml")


# -- real processes ------------------------------------------------------------------


@pytest.fixture
def procs() -> Iterator[CoyoteProcesses]:
    """Each command at its default log level: its lines are what these tests read."""
    with CoyoteProcesses() as started:
        yield started


def lines_of(p: Proc, logger: str) -> list[str]:
    """The text lines of one logger in a process's stderr."""
    return [line for line in p.stderr().splitlines() if f" {logger}: " in line]


def test_a_leader_and_a_client_write_one_access_line_per_request_with_its_fields(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader")
    saloon = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "1")
    until(lambda: routes_of(leader) != [], 20, "registered")
    for n in range(3):
        r = httpx.get(leader.url + "/", headers={"x-request-id": f"req-{n}"}, timeout=10)
        assert r.status_code == 200
    time.sleep(1.5)  # a few heartbeats (ttl 1: one every 0.33 s)
    access = [x for x in lines_of(leader, "coyote_mw.access") if " GET / " in x]
    assert len(access) == 3, leader.stderr()
    assert "uvicorn.access" not in leader.stderr()
    assert '"GET / HTTP/1.1" 200' not in leader.stderr()  # uvicorn's own access line
    for n, line in enumerate(access):
        assert " INFO coyote_mw.access: GET / 200 " in line
        for part in (
            "route=/",
            "service=deadwood.saloon",
            f"instance=http://127.0.0.1:{saloon.port}",
            "client=127.0.0.1",
            f"request_id=req-{n}",
        ):
            assert part in line, (part, line)
    # the client's own line for each: the same request id, the leader as its client
    served = [x for x in lines_of(saloon, "coyote_mw.access") if " GET / " in x]
    assert [x.rsplit("request_id=", 1)[1] for x in served] == ["req-0", "req-1", "req-2"]
    assert '"GET / HTTP/1.1" 200' not in saloon.stderr()
    # one registration line, and no heartbeat at INFO (neither its own line nor an access
    # line for its PUT)
    registered = [x for x in lines_of(leader, "coyote_mw.registration") if ": registered " in x]
    assert len(registered) == 1 and "deadwood.saloon" in registered[0]
    assert "heartbeat" not in leader.stderr().lower()
    assert " PUT /_coyote/registrations/" not in leader.stderr()


def test_log_format_json_makes_every_line_of_the_leader_one_json_object(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader", "--log-format", "json")
    procs("serve-client", SALOON, "--leader", leader.url, "--log-format", "json")
    until(lambda: routes_of(leader) != [], 20, "registered")
    assert httpx.get(leader.url + "/", headers={"x-request-id": "j-7"}, timeout=10).is_success
    # the access line is written once the response has gone: wait for it, bounded
    until(lambda: '"j-7"' in leader.stderr(), 10, "the access line")
    lines = leader.stderr().splitlines()
    assert len(lines) >= 3
    records = [json.loads(line) for line in lines]  # uvicorn's own lines included
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (access,) = [r for r in records if r["logger"] == "coyote_mw.access" and r["path"] == "/"]
    assert access["status"] == 200 and access["request_id"] == "j-7"
    assert access["route"] == "/" and access["service"] == "deadwood.saloon"
    assert access["instance"].startswith("http://127.0.0.1:")
    assert access["client"] == "127.0.0.1" and access["method"] == "GET"


def test_deregistration_and_lease_expiry_are_one_line_each(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader")
    polite = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "60")
    until(lambda: routes_of(leader) != [], 20, "registered")
    polite.kill(signal.SIGTERM)
    # deregistered on its way out, well before its 60 s lease would end (a loaded
    # machine may take the client some seconds to shut down)
    until(lambda: routes_of(leader) == [], 20, "deregistered")
    rude = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "1")
    until(lambda: routes_of(leader) != [], 20, "registered again")
    rude.kill(signal.SIGKILL)
    until(lambda: routes_of(leader) == [], 10, "expired")
    # the lease keeper's thread takes the routes out, then says so: the line may come a
    # moment after the table shows them gone
    until(
        lambda: any("expired" in x for x in lines_of(leader, "coyote_mw.registration")), 5, "said"
    )
    lines = lines_of(leader, "coyote_mw.registration")
    assert len([x for x in lines if " INFO " in x and ": registered deadwood" in x]) == 2
    (dereg,) = [x for x in lines if "deregistered" in x]
    assert " INFO " in dereg and "deadwood.saloon" in dereg
    (expired,) = [x for x in lines if "expired" in x]
    assert " WARNING " in expired and "deadwood.saloon" in expired


def test_an_ejection_is_one_warning_line_naming_the_instance(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader", "--eject-after", "2")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    registration = {
        "service": "gone",
        "instance": "gone-1",
        "url": dead,
        "routes": [{"method": "GET", "path": "/gone"}],
        "ttl": 60,
    }
    r = httpx.post(leader.url + "/_coyote/registrations", json=registration, headers=AUTH)
    assert r.status_code == 201, r.text
    statuses = [httpx.get(leader.url + "/gone", timeout=10).status_code for _ in range(4)]
    assert statuses[:2] == [502, 502]
    (ejected,) = [x for x in lines_of(leader, "coyote_mw.health") if "ejected" in x]
    assert " WARNING " in ejected and dead in ejected


def test_a_store_outage_and_its_recovery_are_one_line_each(
    procs: Callable[..., Proc],
) -> None:
    redis_server = RedisServer().start()
    try:
        leader = procs("leader", "--store", redis_server.url)
        redis_server.stop()
        until(
            lambda: any("unreachable" in x for x in lines_of(leader, "coyote_mw.storesync")),
            10,
            "the outage in the log",
        )
        time.sleep(1)  # more sweeps while it is down: still one line
        redis_server.start()
        until(
            lambda: any("is back" in x for x in lines_of(leader, "coyote_mw.storesync")),
            15,
            "the recovery in the log",
        )
        time.sleep(0.5)
        stored = [x for x in leader.stderr().splitlines() if "coyote_mw.stores" in x]
        (down,) = [x for x in stored if "unreachable" in x]
        (back,) = [x for x in stored if "is back" in x]
        assert " WARNING " in down and " INFO " in back
    finally:
        redis_server.cleanup()


def test_a_lease_expiry_in_a_shared_store_is_one_line(procs: Callable[..., Proc]) -> None:
    redis_server = RedisServer().start()
    try:
        leader = procs("leader", "--store", redis_server.url)
        saloon = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "1")
        until(lambda: routes_of(leader) != [], 20, "registered")
        saloon.kill(signal.SIGKILL)
        until(lambda: routes_of(leader) == [], 10, "expired")

        def expiries() -> list[str]:
            return [x for x in lines_of(leader, "coyote_mw.registration") if "expired" in x]

        # the routes can leave the table (store sync) a moment before the line is written
        until(lambda: expiries() != [], 10, "the expiry logged")
        time.sleep(0.5)  # and no second line for it
        (expired,) = expiries()
        assert " WARNING " in expired and "deadwood.saloon" in expired
    finally:
        redis_server.cleanup()
