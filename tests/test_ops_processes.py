"""/health and /ready of real leader processes over a real redis-server that is stopped
and started again, and ``coyote routes`` against them.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import httpx

from tests.support.coyote_processes import ENV, Proc, procs, routes_of
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
