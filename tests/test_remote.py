"""Remote clients with real processes on 127.0.0.1: a leader and Saloons as services.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sample_apps.deadwood.saloon import STORY
from tests.support.coyote_processes import AUTH, ENV, Proc, get, procs, routes_of
from tests.support.processes import BIN, ROOT, free_port, until
from tests.support.redis_server import RedisServer, redis_url
from tests.support.tls import tls_files

__all__ = ["procs", "redis_url"]  # the fixtures, shared

SALOON = "sample_apps.deadwood.saloon:Saloon"
WHOAMI = "tests.support.remote_apps:Whoami"


def leader_and_two_whoamis(procs: Callable[..., Proc]) -> tuple[Proc, Proc]:
    """A leader and two instances of Whoami registered with it; the leader and the first."""
    leader = procs("leader")
    a = procs("serve-client", WHOAMI, "--leader", leader.url, "--ttl", "30")
    procs("serve-client", WHOAMI, "--leader", leader.url, "--ttl", "30")

    def both_registered() -> bool:
        routes = routes_of(leader)
        return len(routes) == 3 and all(len(r["instances"]) == 2 for r in routes)  # type: ignore[arg-type]

    until(both_registered, 20, "both instances registered")
    return leader, a


def test_remote_saloon_serves_through_the_leader_and_leaves_within_ttl_plus_one(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader")
    saloon = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "2")
    until(
        lambda: (r := get(leader.url + "/")) is not None and r.status_code == 200,
        20,
        "Saloon served through the leader",
    )
    r = httpx.get(leader.url + "/")
    assert r.text == STORY
    # the leader's server adds its own Date and Server: the Saloon's are not sent twice
    assert len(r.headers.get_list("date")) == 1
    assert len(r.headers.get_list("server")) == 1
    saloon.kill(signal.SIGKILL)
    took = until(lambda: routes_of(leader) == [], 5, "routes dropped after SIGKILL")
    assert took <= 2 + 1 + 0.2  # ttl + 1 s (+ polling)
    r = httpx.get(leader.url + "/")
    assert r.status_code == 404 and r.json()["error"] == "No matching route"


def test_a_saloon_served_over_https_is_relayed_by_a_leader_that_trusts_its_ca(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    tls = tls_files(tmp_path)
    leader = procs("leader", "--ca-file", str(tls.bundle))
    procs(
        "serve-client",
        SALOON,
        "--leader",
        leader.url,
        "--ssl-certfile",
        str(tls.chain),
        "--ssl-keyfile",
        str(tls.key),
    )
    until(lambda: routes_of(leader) != [], 20, "registered")
    r = httpx.get(leader.url + "/", timeout=5)
    assert r.status_code == 200 and r.text == STORY


def test_leader_restart_gets_the_routes_back_without_touching_the_client(
    procs: Callable[..., Proc],
) -> None:
    port = free_port()
    leader = procs("leader", port=port)
    until(lambda: get(leader.url + "/_coyote/routes") is not None, 20, "leader up")
    procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "1")
    until(lambda: routes_of(leader) != [], 20, "registered")
    leader.kill(signal.SIGKILL)
    again = procs("leader", port=port)  # answers before it returns
    until(
        lambda: (r := get(again.url + "/")) is not None and r.status_code == 200,
        15,
        "the client registered again with the restarted leader",
    )


def test_clean_shutdown_deregisters_at_once(procs: Callable[..., Proc]) -> None:
    leader = procs("leader")
    saloon = procs("serve-client", SALOON, "--leader", leader.url, "--ttl", "60")
    until(lambda: routes_of(leader) != [], 20, "registered")
    saloon.kill(signal.SIGTERM)
    # at once: well before its 60 s lease would end (20 s: a loaded machine, two test
    # runs on two cores, has taken more than 3 s to schedule the client's way out)
    until(lambda: routes_of(leader) == [], 20, "deregistered on SIGTERM (ttl is 60 s)")


def test_two_instances_share_load_and_one_dying_loses_no_retryable_request(
    procs: Callable[..., Proc],
) -> None:
    leader, a = leader_and_two_whoamis(procs)
    pids = {httpx.get(leader.url + "/whoami").json()["pid"] for _ in range(10)}
    assert len(pids) == 2, "round robin over both instances"
    assert httpx.get(leader.url + "/whoami").json()["forwarded_for"] == "127.0.0.1"
    a.kill(signal.SIGKILL)
    statuses = [httpx.get(leader.url + "/whoami").status_code for _ in range(30)]
    assert statuses == [200] * 30  # connect failures retried on the other instance
    big = os.urandom(3_000_000)
    assert httpx.post(leader.url + "/echo", content=big, timeout=30).content == big


def test_every_instance_ejected_is_503_no_healthy_instance(procs: Callable[..., Proc]) -> None:
    leader = procs("leader")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = httpx.post(
        leader.url + "/_coyote/registrations",
        headers=AUTH,
        json={
            "service": "ghost",
            "instance": "g1",
            "url": dead,
            "routes": [{"method": "GET", "path": "/ghost"}],
            "ttl": 60,
        },
    )
    assert r.status_code == 201
    statuses = [httpx.get(leader.url + "/ghost").status_code for _ in range(4)]
    assert statuses == [502, 502, 502, 503]
    r = httpx.get(leader.url + "/ghost")
    assert r.json()["error"] == "No healthy instance"
    # when it is due back: base_ejection_time (10 s) after its first ejection
    assert 9 <= int(r.headers["retry-after"]) <= 10


@pytest.mark.parametrize(
    ("target", "says"),
    [("os:getcwd", "is not a coyote_mw.Client"), ("nowhere:Thing", "cannot import 'nowhere'")],
)
def test_cli_refuses_a_target_that_is_not_a_client(target: str, says: str) -> None:
    out = subprocess.run(
        [str(BIN / "coyote"), "serve-client", target, "--leader", "http://127.0.0.1:1"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and says in out.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["leader", "--ca-file", "/no/such/ca.pem"], "is not a file"),
        (
            [
                "serve-client",
                SALOON,
                "--leader",
                "http://127.0.0.1:1",
                "--ssl-certfile",
                "cert.pem",
            ],
            "--ssl-certfile and --ssl-keyfile go together",
        ),
    ],
)
def test_cli_refuses_half_a_tls_setting(argv: list[str], says: str) -> None:
    out = subprocess.run(
        [str(BIN / "coyote"), *argv], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and says in out.stderr


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_100_mb_up_and_down_stream_through_the_leader_without_buffering(
    procs: Callable[..., Proc],
) -> None:
    leader = procs("leader")
    procs("serve-client", "tests.support.remote_apps:Bulk", "--leader", leader.url, "--ttl", "30")
    until(lambda: len(routes_of(leader)) == 2, 20, "registered")
    assert leader.proc is not None
    before = _rss_kib(leader.proc.pid, "VmRSS")
    mb = 100

    def upload() -> Iterator[bytes]:
        chunk = b"y" * 65536
        for _ in range(mb * 16):
            yield chunk

    r = httpx.post(leader.url + "/sink", content=upload(), timeout=60)
    assert r.json() == {"received": mb * 1024 * 1024}
    received = 0
    with httpx.stream("GET", f"{leader.url}/source/{mb}", timeout=60) as down:
        for chunk in down.iter_raw():
            received += len(chunk)
    assert received == mb * 1024 * 1024
    peak = _rss_kib(leader.proc.pid, "VmHWM")
    print(f"leader RSS {before // 1024} MiB before, peak {peak // 1024} MiB")
    assert peak - before < 30 * 1024, f"the leader grew by {(peak - before) // 1024} MiB"


def test_a_heartbeat_brings_an_ejected_instance_back(procs: Callable[..., Proc]) -> None:
    leader = procs("leader")
    port = free_port()
    r = httpx.post(
        leader.url + "/_coyote/registrations",
        headers=AUTH,
        json={
            "service": "late",
            "instance": "l1",
            "url": f"http://127.0.0.1:{port}",
            "routes": [{"method": "GET", "path": "/whoami"}],
            "ttl": 60,
        },
    )
    lease = r.json()["lease"]
    assert [httpx.get(leader.url + "/whoami").status_code for _ in range(4)] == [502] * 3 + [503]
    # the instance comes up (here: a Whoami served on that very port) and heart-beats
    procs("serve-client", WHOAMI, "--leader", "http://127.0.0.1:1", port=port)
    until(lambda: get(f"http://127.0.0.1:{port}/whoami") is not None, 20, "instance up")
    assert httpx.put(f"{leader.url}/_coyote/registrations/{lease}", headers=AUTH).status_code == 200
    assert httpx.get(leader.url + "/whoami").status_code == 200


def test_clean_shutdown_drains_in_flight_requests_and_sends_new_ones_elsewhere(
    procs: Callable[..., Proc],
) -> None:
    leader, a = leader_and_two_whoamis(procs)
    pid_a = None
    for _ in range(20):  # learn which pid is instance a (round robin: within two)
        who = httpx.get(leader.url + "/whoami").json()["pid"]
        if a.proc is not None and who == a.proc.pid:
            pid_a = who
            break
    assert pid_a is not None, "instance a never answered"
    results: list[httpx.Response] = []
    slow_calls = [
        threading.Thread(
            target=lambda: results.append(httpx.get(leader.url + "/slow?s=1.5", timeout=10))
        )
        for _ in range(2)  # round robin: one of them lands on a
    ]
    for t in slow_calls:
        t.start()
    time.sleep(0.3)
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)  # no wait: requests keep coming meanwhile
    time.sleep(0.2)
    others = {httpx.get(leader.url + "/whoami").json()["pid"] for _ in range(6)}
    for t in slow_calls:
        t.join(10)
    assert [r.status_code for r in results] == [200, 200]  # in flight on a: finished
    assert pid_a not in others  # new requests went to the other instance


# -- several leaders (workers) sharing one table in Redis ---------------------------------


def test_registered_through_one_worker_served_by_another(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    a = procs("leader", "--store", redis_url)
    b = procs("leader", "--store", redis_url)
    procs("serve-client", SALOON, "--leader", a.url, "--ttl", "2")
    took = until(
        lambda: (r := get(b.url + "/")) is not None and r.status_code == 200,
        20,
        "the Saloon, registered with a, served by b",
    )
    assert httpx.get(b.url + "/").text == STORY
    assert routes_of(a) == routes_of(b)
    print(f"visible on the other worker after {took:.2f} s (polled every 50 ms)")


def test_a_killed_client_leaves_every_worker_within_ttl_plus_one(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    a = procs("leader", "--store", redis_url)
    b = procs("leader", "--store", redis_url)
    saloon = procs("serve-client", SALOON, "--leader", a.url, "--ttl", "2")
    until(lambda: routes_of(a) != [] and routes_of(b) != [], 20, "registered on both")
    saloon.kill(signal.SIGKILL)
    took = until(lambda: routes_of(a) == [] and routes_of(b) == [], 6, "dropped everywhere")
    assert took <= 2 + 1 + 0.3
    assert httpx.get(b.url + "/").json()["error"] == "No matching route"


def test_redis_restart_during_traffic_fails_no_request(procs: Callable[..., Proc]) -> None:
    server = RedisServer(persistent=True).start()  # as production runs it: an append-only file
    try:
        a = procs("leader", "--store", server.url)
        b = procs("leader", "--store", server.url)
        procs("serve-client", SALOON, "--leader", a.url, "--ttl", "5")
        until(lambda: routes_of(a) != [] and routes_of(b) != [], 20, "registered on both")
        statuses: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set() and len(statuses) < 5000:  # bounded
                statuses.append(httpx.get(b.url + "/", timeout=5).status_code)

        sender = threading.Thread(target=traffic)
        sender.start()
        time.sleep(0.3)
        server.stop()
        time.sleep(0.5)
        refused = httpx.post(
            a.url + "/_coyote/registrations",
            headers=AUTH,
            json={
                "service": "new",
                "instance": "n1",
                "url": "http://127.0.0.1:9",
                "routes": [{"method": "GET", "path": "/new"}],
            },
        )
        time.sleep(0.5)
        server.start()
        time.sleep(1.5)  # the workers reconnect and reload
        stop.set()
        sender.join(10)
        assert refused.status_code == 503 and refused.json()["error"] == "Store unavailable"
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        assert routes_of(a) == routes_of(b) != []  # nothing registered before was lost
        assert httpx.get(a.url + "/new").status_code == 404  # the refused one left no trace
    finally:
        server.cleanup()


def test_a_lease_that_expires_during_a_redis_outage_does_not_come_back(
    procs: Callable[..., Proc],
) -> None:
    server = RedisServer(persistent=True).start()
    try:
        a = procs("leader", "--store", server.url)
        b = procs("leader", "--store", server.url)
        saloon = procs("serve-client", SALOON, "--leader", a.url, "--ttl", "1")
        until(lambda: routes_of(a) != [] and routes_of(b) != [], 20, "registered on both")
        saloon.kill(signal.SIGKILL)
        server.stop()  # the lease runs out while Redis is away
        time.sleep(1.5)
        assert routes_of(a) != []  # meanwhile the workers keep their last table
        server.start()
        until(lambda: routes_of(a) == [] and routes_of(b) == [], 10, "dropped once Redis is back")
    finally:
        server.cleanup()
