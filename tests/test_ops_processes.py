"""/health and /ready of real leader processes over a real redis-server that is stopped
and started again, and ``coyote routes`` against them.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import httpx

from tests.support.coyote_processes import AUTH, ENV, Proc, procs, routes_of
from tests.support.processes import BIN, ROOT, free_port, until
from tests.support.redis_server import RedisServer

__all__ = ["procs"]  # the fixture, shared: real processes, ended by PID


def _probe(leader: Proc, which: str) -> httpx.Response:
    return httpx.get(f"{leader.url}/_coyote/{which}", timeout=5)


def _ready(leader: Proc) -> int:
    return _probe(leader, "ready").status_code


def test_ready_is_503_while_redis_is_down_and_200_once_it_is_back_health_stays_200(
    procs: Callable[..., Proc],
) -> None:
    server = RedisServer().start()
    try:
        leader = procs("leader", "--store", server.url)
        until(lambda: _ready(leader) == 200, 20, "ready")
        assert _probe(leader, "ready").json()["status"] == "ready"
        server.stop()
        until(lambda: _ready(leader) == 503, 10, "not ready while Redis is down")
        r = _probe(leader, "ready")
        assert r.json() == {
            "error": "Not ready",
            "reason": "the shared store is unreachable: serving the last table",
        }
        assert r.headers["retry-after"] == "1"
        assert _probe(leader, "health").json() == {"status": "ok"}  # alive all along
        server.start()
        until(lambda: _ready(leader) == 200, 20, "ready again once Redis is back")
        assert _probe(leader, "health").status_code == 200
    finally:
        server.cleanup()


def test_ready_is_503_until_the_first_load_from_the_store_completes(
    procs: Callable[..., Proc],
) -> None:
    server = RedisServer(free_port())  # not started yet: the leader starts without it
    try:
        leader = procs("leader", "--store", server.url)
        r = _probe(leader, "ready")
        assert r.status_code == 503 and r.json() == {
            "error": "Not ready",
            "reason": "the first load from the shared store has not completed: "
            "the store is unreachable",
        }
        assert _probe(leader, "health").status_code == 200
        server.start()
        until(lambda: _ready(leader) == 200, 20, "ready after the first load")
    finally:
        server.cleanup()


def test_coyote_routes_prints_a_table_and_json_with_instances_health_and_leases(
    procs: Callable[..., Proc],
) -> None:
    server = RedisServer().start()
    try:
        leader = procs("leader", "--store", server.url)
        procs(
            "serve-client",
            "sample_apps.deadwood.saloon:Saloon",
            "--leader",
            leader.url,
            "--ttl",
            "30",
            "--instance",
            "s1",
        )
        until(lambda: routes_of(leader) != [], 20, "registered")

        def coyote(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(BIN / "coyote"), "routes", "--leader", leader.url, *args],
                cwd=ROOT,
                env=ENV,
                capture_output=True,
                text=True,
                timeout=30,
            )

        out = coyote("--json")
        assert out.returncode == 0, out.stderr
        table = json.loads(out.stdout)
        route = next(r for r in table if r["path"] == "/")
        assert route["instances"] == ["s1"]
        (up,) = route["upstreams"]
        assert up["url"].startswith("http://127.0.0.1:")
        assert up["health"]["ejected"] is False
        assert up["lease_expires"] and up["last_heartbeat"]  # from the shared store

        out = coyote()
        assert out.returncode == 0, out.stderr
        head, *rows = out.stdout.splitlines()
        assert head.split() == [
            "TOPOLOGY",
            "METHOD",
            "PATH",
            "SERVICE",
            "INSTANCE",
            "URL",
            "HEALTH",
            "FAILS",
            "EJECTIONS",
            "LEASE",
            "EXPIRES",
            "LAST",
            "HEARTBEAT",
        ]
        row = next(r for r in rows if r.split()[2] == "/")
        assert row.split()[3:7] == ["deadwood.saloon", "s1", up["url"], "ok"]
        assert row.index(up["url"]) == head.index("URL")  # aligned
        assert len(rows) == len(table)
    finally:
        server.cleanup()


def test_coyote_explain_says_why_a_request_misses_and_where_one_would_go(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader")
    procs(
        "serve-client",
        "sample_apps.deadwood.saloon:Saloon",
        "--leader",
        leader.url,
        "--ttl",
        "30",
        "--instance",
        "s1",
    )
    until(lambda: routes_of(leader) != [], 20, "registered")

    def explain(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "coyote"), "explain", *args, "--leader", leader.url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    out = explain("GET", "/drinks/")
    assert out.returncode == 0, out.stderr
    head, *lines = out.stdout.splitlines()
    assert head == "GET /drinks/ -> 404 No matching route"
    near = [line.split() for line in lines if line.split()[:2] == ["near", "miss"]]
    assert near[0][2:6] == ["GET", "/drinks", "deadwood.saloon", "trailing-slash"]

    out = explain("GET", "/drinks/", "--json")
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert (verdict["status"], verdict["near"][0]["path"]) == (404, "/drinks")

    out = explain("get", "/drinks/3")
    assert out.returncode == 0, out.stderr
    head, *lines = out.stdout.splitlines()
    assert head == "GET /drinks/3 -> deadwood.saloon (GET /drinks/{id:int})"
    (following,) = [line.split() for line in lines if line.split()[0] == "next"]
    assert following[1] == "s1" and following[2].startswith("http://127.0.0.1:")
    assert following[3] == "ok"
    assert httpx.get(leader.url + "/drinks/3", timeout=10).json()["drink"] == "coffee"

    # bad input: one line, exit 2 for the command line, 1 for the leader's refusal
    for args, code, says in [
        (["GET", "drinks"], 2, "a path starts with '/'"),
        (["GET", "/", "--header", "no-colon"], 2, "use NAME:VALUE"),
        (["G T", "/"], 1, "answered 400"),
    ]:
        out = explain(*args)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == code and len(lines) == 1, out.stderr
        assert says in lines[0] and "Traceback" not in out.stderr
    out = explain("GET", "/", env={**ENV, "COYOTE_TOKEN": "w" * 32})
    assert out.returncode == 1 and "answered 403" in out.stderr


def test_the_operators_story_metrics_explain_a_killed_client_and_one_log_line_each(
    procs: Callable[..., Proc],
) -> None:
    """A leader and a Saloon client: the Saloon's requests counted at /metrics, explain's
    answer on /drinks/, the client killed - ejected, its lease out, its routes gone - and
    one log line for each of these events.  (The same story on the dashboard, in a real
    Chromium: tests/test_dashboard_browser.py.)"""
    leader = procs("leader")
    saloon = procs(
        "serve-client", "sample_apps.deadwood.saloon:Saloon", "--leader", leader.url,
        "--ttl", "2", "--instance", "s1",
    )  # fmt: skip
    until(lambda: routes_of(leader) != [], 20, "registered")
    for _ in range(3):
        assert httpx.get(leader.url + "/", timeout=10).status_code == 200

    def served() -> float:
        text = httpx.get(leader.url + "/_coyote/metrics", headers=AUTH, timeout=5).text
        counted = [
            line for line in text.splitlines()
            if line.startswith("coyote_requests_total{") and 'route="/"' in line
            and 'service="deadwood.saloon"' in line and 'status="2xx"' in line
        ]  # fmt: skip
        return sum(float(line.rsplit(" ", 1)[1]) for line in counted)

    until(lambda: served() == 3, 10, "three requests counted")
    assert httpx.get(leader.url + "/_coyote/metrics", timeout=5).status_code == 401

    why = httpx.get(
        leader.url + "/_coyote/explain", params={"path": "/drinks/"}, headers=AUTH, timeout=5
    ).json()
    assert why["status"] == 404 and why["near"][0]["path"] == "/drinks"

    saloon.kill()  # SIGKILL: no deregistration, the instance just stops answering
    statuses = [httpx.get(leader.url + "/", timeout=10).status_code for _ in range(4)]
    assert statuses[0] == 502 and 503 in statuses  # connect failures, then ejected
    until(lambda: routes_of(leader) == [], 15, "its lease ran out and its routes went")
    assert httpx.get(leader.url + "/", timeout=10).status_code == 404

    log = leader.stderr()
    for event in (": registered ", " ejected for ", " expired: its routes are dropped"):
        assert log.count(event) == 1, (event, log)
