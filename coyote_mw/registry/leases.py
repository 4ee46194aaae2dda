"""Leases kept in a shared store, and every worker's table kept in step with it.

``SharedLeases`` is what the registration API uses when ``Coyote(store="redis://...")``:
a registration made through any worker is written to Redis and announced; every
worker applies it to its own compiled table (the hot path never talks to Redis).
Leases expire in Redis; any worker sweeps the expired ones and announces it.  A
worker that missed an announcement sees the version move and reloads; while Redis is
unreachable, workers serve their last table and refuse registrations (503).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from coyote_mw.errors import InvalidRoute, RouteConflict, StoreUnavailable
from coyote_mw.events import emit
from coyote_mw.registry.redis_store import RedisStore, StoredRegistration
from coyote_mw.registry.remotes import RemoteFactory, log_expired, register_remote
from coyote_mw.routing.table import Route

if TYPE_CHECKING:
    from coyote_mw.routing.table import Registration, RouteTable

__all__ = ["SharedLeases", "StoreUnavailable"]

logger = logging.getLogger("coyote_mw.storesync")


class SharedLeases:
    """The leases of ``table``'s remote instances, kept in ``store``; ``remote`` makes
    the handlers of instances registered through other workers."""

    def __init__(
        self, table: RouteTable, remote: RemoteFactory, store: RedisStore, interval: float = 0.2
    ) -> None:
        import redis

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.table = table
        self.remote = remote
        self.store = store
        self.applied: dict[str, StoredRegistration] = {}
        self.version = -1
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._down = False
        # /ready: False until a load from the store completed, and again from an outage
        # until the reload after it
        self._synced = False
        self._interval = interval
        self._guard(self.reload)
        self._start_threads()
        # A server that forks workers after loading the app (gunicorn --preload) leaves
        # them without these threads: each child starts its own.
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def _start_threads(self) -> None:
        self.store.watch(self._changed)
        self._thread = threading.Thread(
            target=self._sweep, args=(self._interval,), name="coyote-store-sweep", daemon=True
        )
        self._thread.start()

    def _after_fork(self) -> None:
        if self._stop.is_set():
            return  # closed before the fork
        self._lock = threading.RLock()
        self.store.after_fork()
        self._start_threads()

    def _guard(self, fn: Any) -> Any:
        try:
            result = fn()
        except self._errors as exc:
            if not self._down:
                logger.warning("shared store unreachable (%s): serving the last table", exc)
                emit("store_unreachable")
            self._down = True
            self._synced = False
            return None
        if self._down:
            logger.info("shared store is back: registrations are taken again")
            self._down = False
        return result

    # -- the API's lease operations -----------------------------------------------------

    def grant(self, registration: Registration, ttl: int, url: str) -> str:
        """Store the registration; the lease the store holds the instance under (an
        instance registered alike through another leader keeps its lease)."""
        record = StoredRegistration(
            lease=registration.lease,
            service=registration.service,
            instance=registration.instance,
            url=url,
            topology=registration.topology,
            ttl=ttl,
            routes=tuple((r.method, r.pattern, r.cast) for r in registration.routes),
        )
        with self._lock:
            try:
                # may raise StoreConflict: another worker's service
                _, held = self.store.claim(record)
            except self._errors as exc:
                raise StoreUnavailable(str(exc)) from exc
            if held != record.lease:
                record = dataclasses.replace(record, lease=held)
            self.applied[held] = record
            return held

    def renew(self, lease: str) -> int | None:
        try:
            renewed = self.store.renew(lease)
        except self._errors as exc:
            raise StoreUnavailable(str(exc)) from exc
        if not renewed:
            return None
        with self._lock:
            record = self.applied.get(lease)
        if record is None:  # registered through another worker, not applied here yet
            self._guard(self.reload)
            record = self.applied.get(lease)
        return record.ttl if record is not None else None

    def forget(self, lease: str) -> None:
        try:
            self.store.delete(lease)
        except self._errors as exc:
            raise StoreUnavailable(str(exc)) from exc
        with self._lock:
            self.applied.pop(lease, None)

    # -- keeping this worker's table in step --------------------------------------------

    def reload(self) -> None:
        # the snapshot is taken under the lock that grant() holds while it claims: one
        # taken before a claim and applied after it would drop the new registration
        # from the table until the next announcement
        with self._lock:
            version, records = self.store.snapshot()
            wanted = {r.lease: r for r in records}
            for lease in set(self.applied) - set(wanted):
                self.table.deregister(lease=lease)
                del self.applied[lease]
            for lease in set(wanted) - set(self.applied):
                if self._apply(wanted[lease]):
                    self.applied[lease] = wanted[lease]
            self.version = version
            self._synced = True

    def _apply(self, record: StoredRegistration) -> bool:
        """Put a registration made through another worker into this worker's table."""
        try:
            register_remote(
                self.table,
                self.remote,
                record.url,
                record.service,
                [Route(m, p, c) for m, p, c in record.routes],
                instance=record.instance,
                topology=record.topology,
                lease=record.lease,
            )
        except (InvalidRoute, RouteConflict) as exc:  # two workers raced: first one wins
            logger.warning("cannot apply shared registration %s: %s", record.lease, exc)
            return False
        return True

    def _changed(self, version: int) -> None:
        if version == -1 or version != self.version:
            self._guard(self.reload)

    def _sweep(self, interval: float) -> None:
        ticks = 0
        while not self._stop.wait(interval):
            ticks += 1
            # what each lease was, read before: the expiry is announced, and this
            # worker's own reload may take the lease out of ``applied`` before the
            # lines below are written
            before = self.applied.copy()
            gone = self._guard(self.store.expire)  # announced: every worker reloads
            if gone:  # this worker took them out: it says so, once for every worker
                for lease in gone:
                    record = before.get(lease)
                    if record is not None:
                        log_expired(record.service, record.instance, record.topology)
            if ticks % 5 == 0:  # a missed announcement shows as a version ahead of ours
                current = self._guard(self.store.version)
                if current is not None and (current != self.version or not self._synced):
                    self._guard(self.reload)

    @property
    def store_up(self) -> bool:
        """Whether the store answered the last time this worker asked (metrics)."""
        return not self._down

    def not_ready(self) -> str | None:
        """Why this worker's table is not ready (``/ready``), from the state the sync
        keeps: no Redis round trip."""
        if self.version == -1:
            why = "the first load from the shared store has not completed"
            return why + ": the store is unreachable" if self._down else why
        if self._down:
            return "the shared store is unreachable: serving the last table"
        if not self._synced:
            return "reloading the table from the shared store after an outage"
        return None

    def deadlines(self) -> dict[str, tuple[float, int]]:
        """Each applied lease's expiry (a Unix time, as the store holds it) and ttl; {}
        while the store is unreachable."""
        try:
            expiries = self.store.deadlines()
        except self._errors:
            return {}
        with self._lock:
            ttls = {lease: r.ttl for lease, r in self.applied.items()}
        return {lease: (at, ttls[lease]) for lease, at in expiries.items() if lease in ttls}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.store.close()


def _after_fork(ref: weakref.ref[SharedLeases]) -> None:
    leases = ref()
    if leases is not None:
        leases._after_fork()
