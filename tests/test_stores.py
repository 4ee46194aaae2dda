"""The Redis store of remote registrations, against a real redis-server."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from coyote_mw.registry.redis_store import RedisStore, StoredRegistration
from tests.support.redis_server import RedisServer


def registration(
    ttl: int = 5, service: str = "svc", instance: str | None = None
) -> StoredRegistration:
    return StoredRegistration(
        lease=uuid.uuid4().hex,
        service=service,
        instance=instance or f"i{uuid.uuid4().hex[:8]}",  # one lease per instance
        url="http://127.0.0.1:9",
        topology="default",
        ttl=ttl,
        routes=(("GET", "/a", False), ("POST", "/b/{x:int}", True)),
    )


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    s = RedisStore(redis_server.url, namespace=f"t{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


def test_put_snapshot_renew_delete(store: Any) -> None:
    reg = registration()
    v1 = store.put(reg)
    version, regs = store.snapshot()
    assert version == v1 and regs == [reg]
    assert store.renew(reg.lease) is True
    assert store.delete(reg.lease) is True
    version, regs = store.snapshot()
    assert version > v1 and regs == []
    assert store.renew(reg.lease) is False
    assert store.delete(reg.lease) is False


def test_an_unrenewed_lease_expires(store: Any) -> None:
    keep, lapse = registration(ttl=5), registration(ttl=1)
    store.put(keep)
    store.put(lapse)
    time.sleep(1.1)
    assert store.expire() == [lapse.lease]
    assert [r.lease for r in store.snapshot()[1]] == [keep.lease]
    assert store.renew(lapse.lease) is False


def test_redis_lease_expires_in_redis_even_with_no_worker_left(
    redis_server: RedisServer,
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    worker_a = RedisStore(redis_server.url, namespace=ns)
    reg = registration(ttl=1)
    worker_a.put(reg)
    worker_a.close()  # the worker that registered it is gone
    time.sleep(1.1)
    worker_b = RedisStore(redis_server.url, namespace=ns)
    assert worker_b.snapshot()[1] == []  # the key itself expired in Redis
    assert worker_b.expire() == [reg.lease]  # and any worker tidies the index
    assert worker_b.expire() == []  # once
    worker_b.close()


def test_redis_changes_reach_every_watcher_with_their_version(
    redis_server: RedisServer,
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    writer = RedisStore(redis_server.url, namespace=ns)
    reader = RedisStore(redis_server.url, namespace=ns)
    seen: list[int] = []
    arrived = threading.Event()

    def on_change(version: int) -> None:
        seen.append(version)
        arrived.set()

    reader.watch(on_change)
    time.sleep(0.3)  # subscribed
    reg = registration()
    version = writer.put(reg)
    assert arrived.wait(5)
    assert seen == [version]
    assert reader.snapshot() == (version, [reg])
    writer.close()
    reader.close()


def test_redis_outage_is_survived_and_ends_in_a_full_reload(tmp_path: Any) -> None:
    server = RedisServer().start()
    store = RedisStore(server.url, namespace="outage")
    signals: list[int] = []
    store.watch(signals.append)
    time.sleep(0.3)
    store.put(registration())
    server.stop()  # Redis gone
    time.sleep(1.0)
    server.start()  # back, on the same port, empty (no persistence here)
    deadline = time.monotonic() + 10
    while -1 not in signals and time.monotonic() < deadline:
        time.sleep(0.05)
    assert -1 in signals  # the watcher asked for a full reload
    assert store.snapshot() == (0, [])
    store.close()
    server.cleanup()


def test_a_forked_worker_keeps_its_table_in_step(redis_server: RedisServer) -> None:
    """gunicorn --preload forks workers after the app (and its Coyote) exists."""
    import os

    from coyote_mw import Coyote

    token = "fork-test-token-0123456789"
    coyote = Coyote(token=token, store=redis_server.url)
    pid = os.fork()
    if pid == 0:  # the worker: its own threads, and it sees a registration made elsewhere
        ok = False
        try:
            names = {t.name for t in threading.enumerate()}
            writer = RedisStore(redis_server.url)
            reg = registration(ttl=30, service="forked")
            writer.put(reg)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not ok:
                ok = coyote.table.registration(reg.lease) is not None
                time.sleep(0.05)
            ok = ok and {"coyote-store-watch", "coyote-store-sweep"} <= names
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 15  # bounded: a child stuck on a lock is killed
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        done = os.waitpid(pid, 0)
    coyote.close()
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_route_is_claimed_atomically_across_workers(redis_server: RedisServer) -> None:
    from coyote_mw.registry.redis_store import StoreConflict

    ns = f"t{uuid.uuid4().hex[:8]}"
    worker_a = RedisStore(redis_server.url, namespace=ns)
    worker_b = RedisStore(redis_server.url, namespace=ns)
    first = registration(ttl=1, service="first")
    worker_a.put(first)
    rival = registration(service="rival")  # same routes, another service
    with pytest.raises(StoreConflict) as conflict:
        worker_b.put(rival)
    assert conflict.value.owner == "first"
    assert conflict.value.claim in ("default|GET|a", "default|POST|b/{:int}")
    assert [r.lease for r in worker_b.snapshot()[1]] == [first.lease]  # nothing of the rival
    worker_a.put(registration(service="first"))  # another instance of the same service: fine
    time.sleep(1.1)  # the first instance lapses; the second still holds the routes
    with pytest.raises(StoreConflict):
        worker_b.put(rival)
    for reg in worker_a.snapshot()[1]:
        worker_a.delete(reg.lease)
    worker_b.put(rival)  # released: now the rival may take them
    assert [r.service for r in worker_b.snapshot()[1]] == ["rival"]
    worker_a.close()
    worker_b.close()


def test_an_expired_owner_does_not_block_a_new_claim(redis_server: RedisServer) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, namespace=ns)
    store.put(registration(ttl=1, service="gone"))
    time.sleep(1.1)  # expired in Redis, not swept yet
    store.put(registration(service="next"))
    assert [r.service for r in store.snapshot()[1]] == ["next"]
    store.close()


def test_an_instance_registering_again_keeps_one_lease_in_the_store(
    redis_server: RedisServer,
) -> None:
    import httpx

    from coyote_mw import Coyote

    token = "reregister-token-0123456789"
    ns_url = redis_server.url
    coyote = Coyote(token=token, store=ns_url)
    body = {
        "service": "again",
        "instance": "host:1",
        "url": "http://127.0.0.1:9",
        "routes": [{"method": "GET", "path": "/again"}],
    }
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t") as c:
        first = c.post("/_coyote/registrations", json=body, headers=auth).json()["lease"]
        alike = c.post("/_coyote/registrations", json=body, headers=auth).json()["lease"]
        body["routes"] = [{"method": "GET", "path": "/again"}, {"method": "GET", "path": "/more"}]
        other = c.post("/_coyote/registrations", json=body, headers=auth).json()["lease"]
        table = c.get("/_coyote/routes", headers=auth).json()
        assert [r["instances"] for r in table if r["path"] == "/again"] == [["host:1"]]
    assert alike == first  # registered alike: the lease it holds, renewed
    assert other != first  # other routes: a new registration replaces the old one
    reader = RedisStore(ns_url)
    leases = [r.lease for r in reader.snapshot()[1] if r.service == "again"]
    reader.close()
    assert leases == [other]
    coyote.close()


def test_one_instance_registered_alike_through_two_workers_holds_one_lease(
    redis_server: RedisServer,
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    worker_a = RedisStore(redis_server.url, namespace=ns)
    worker_b = RedisStore(redis_server.url, namespace=ns)
    through_a = registration(instance="host:1")
    version, held = worker_a.claim(through_a)
    assert held == through_a.lease
    through_b = registration(instance="host:1")  # the same instance, its own new lease
    assert worker_b.claim(through_b) == (version, through_a.lease)  # no change announced
    assert worker_b.renew(through_a.lease)
    assert not worker_b.renew(through_b.lease)
    assert [r.lease for r in worker_b.snapshot()[1]] == [through_a.lease]
    moved = dataclasses.replace(through_b, url="http://127.0.0.1:10")  # it moved: replaced
    assert worker_b.claim(moved) == (version + 1, moved.lease)
    assert [r.lease for r in worker_a.snapshot()[1]] == [moved.lease]
    assert not worker_a.renew(through_a.lease)
    worker_a.close()
    worker_b.close()


def test_a_lease_expiry_is_said_even_when_the_announcements_reload_comes_first(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # the worker that expires a lease announces it, and its own watcher may reload the
    # table before the sweep reads what the lease was: the line must not depend on it
    import logging

    from coyote_mw import Coyote
    from coyote_mw.registry.leases import SharedLeases
    from coyote_mw.routing.table import RouteTable

    class Racing(RedisStore):
        leases: SharedLeases | None = None

        def expire(self) -> list[str]:
            gone = super().expire()
            if gone and self.leases is not None:
                self.leases.reload()  # the watcher's reload, winning the race
            return gone

    store = Racing(redis_server.url, namespace=f"t{uuid.uuid4().hex[:8]}")
    table = RouteTable()
    caplog.set_level(logging.WARNING, logger="coyote_mw.registration")
    leases = SharedLeases(table, Coyote()._remote, store, interval=0.1)
    store.leases = leases
    try:
        reg = registration(ttl=1, service="racing")
        store.put(reg)
        leases.reload()
        assert len(table) == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "expired" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
        said = [r.getMessage() for r in caplog.records if "expired" in r.getMessage()]
        assert len(table) == 0
        line = f"lease of racing/{reg.instance} in default expired: its routes are dropped"
        assert said == [line]
    finally:
        leases.close()
        store.close()
