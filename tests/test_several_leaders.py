"""Several leaders sharing one Redis store, with real processes on 127.0.0.1.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import redis

from tests.support.coyote_processes import AUTH, Proc, procs, routes_of
from tests.support.processes import until
from tests.support.redis_server import redis_url

__all__ = ["procs", "redis_url"]  # the fixtures, shared: real processes, a real redis-server


def test_a_client_registered_with_two_leaders_of_one_store_holds_one_lease_without_churn(
    procs: Callable[..., Proc], redis_url: str
) -> None:
    a = procs("leader", "--store", redis_url)
    b = procs("leader", "--store", redis_url)
    saloon = procs(
        "serve-client",
        "sample_apps.deadwood.saloon:Saloon",
        "--leader",
        a.url,
        "--leader",
        b.url,
        "--ttl",
        "3",  # a heartbeat every second, to each leader
    )
    until(lambda: routes_of(a) != [] and routes_of(b) != [], 20, "registered on both")
    store = redis.Redis.from_url(redis_url)
    try:
        time.sleep(1)  # let both registrations and their announcements settle
        version = store.get("coyote:version")
        leases = store.keys("coyote:reg:*")
        time.sleep(4)  # about four heartbeats to each leader
        assert "forgot this instance" not in saloon.stderr()  # never registered again
        assert store.get("coyote:version") == version  # no change, so no leader reloads
        assert store.keys("coyote:reg:*") == leases
        assert len(leases) == 1  # one instance, one lease, whichever leader it came through
        lease = leases[0].decode().rsplit(":", 1)[1]
        for leader in (a, b):  # a heartbeat through either leader renews it
            r = httpx.put(f"{leader.url}/_coyote/registrations/{lease}", headers=AUTH, timeout=5)
            assert r.status_code == 200
        assert httpx.get(b.url + "/", timeout=5).status_code == 200
    finally:
        store.close()
