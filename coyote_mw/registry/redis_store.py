"""Remote registrations in Redis, for every worker and host.

In-process clients hold Python objects and stay in each worker's own table; what the
store keeps is the *remote* registrations (service, instance, url, routes, lease), so
that a registration made through any worker reaches every worker.  (Without a store,
``registration.LeaseKeeper`` keeps leases in the process; ``storesync.SharedLeases``
is its twin over this store.)

``RedisStore`` layout, under a namespace (default ``coyote``):

    {ns}:reg:{lease}   the registration as JSON; its key TTL is the lease, so a lease
                       expires in Redis itself, whichever worker (if any) is alive
    {ns}:instance:{i}  the lease instance ``i`` (topology, service, instance) holds:
                       one lease per instance, whichever leader it registered through
    {ns}:deadlines     sorted set lease -> expiry (ms): lets any worker find expired
                       leases without keyspace notifications
    {ns}:version       incremented by every change
    {ns}:changes       pub/sub channel: the new version after each change

A worker that misses a message sees a version ahead of its own and reloads the whole
set (``snapshot``); compiled tables stay local, and the hot path never talks to Redis.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from coyote_mw.errors import StoreConflict
from coyote_mw.routing.patterns import parse_pattern

__all__ = ["RedisStore", "StoreConflict", "StoredRegistration"]


# Claim a registration's routes and store it, or name the route another service holds.
# An owner whose registrations have all expired does not count (its sweep may lag).
# One instance (topology, service, instance) holds one lease: registered alike again
# (through another leader of the store, say) it keeps the lease it has, renewed; with
# other routes, url or ttl, the new registration replaces the old one.
_CLAIM = """
local ns, service, lease = ARGV[1], ARGV[2], ARGV[3]
local ikey = ns .. ':instance:' .. ARGV[7]
local claims = {}
for i = 8, #ARGV do claims[#claims + 1] = ARGV[i] end
local held = redis.call('GET', ikey)
local old = nil
if held and held ~= lease then
  old = redis.call('GET', ns .. ':reg:' .. held)
end
if old then
  local was, now = cjson.decode(old), cjson.decode(ARGV[4])
  if was.url == now.url and was.ttl == now.ttl
      and cjson.encode(was.routes) == cjson.encode(now.routes) then
    redis.call('PEXPIRE', ns .. ':reg:' .. held, ARGV[5])
    redis.call('PEXPIRE', ikey, ARGV[5])
    redis.call('ZADD', ns .. ':deadlines', ARGV[6], held)
    return {'same', held, tostring(redis.call('GET', ns .. ':version') or 0)}
  end
end
for _, claim in ipairs(claims) do
  local owner = redis.call('HGET', ns .. ':owners', claim)
  if owner and owner ~= service then
    for _, holder in ipairs(redis.call('SMEMBERS', ns .. ':holders:' .. claim)) do
      if redis.call('EXISTS', ns .. ':reg:' .. holder) == 1 then
        return {'conflict', claim, owner}
      end
    end
    redis.call('DEL', ns .. ':holders:' .. claim)
  end
end
if old then  -- the instance's previous registration goes
  redis.call('DEL', ns .. ':reg:' .. held)
  redis.call('ZREM', ns .. ':deadlines', held)
  local taken = redis.call('HGET', ns .. ':claims', held)
  if taken then
    for _, claim in ipairs(cjson.decode(taken)) do
      redis.call('SREM', ns .. ':holders:' .. claim, held)
      if redis.call('SCARD', ns .. ':holders:' .. claim) == 0 then
        redis.call('HDEL', ns .. ':owners', claim)
      end
    end
    redis.call('HDEL', ns .. ':claims', held)
  end
end
for _, claim in ipairs(claims) do
  redis.call('HSET', ns .. ':owners', claim, service)
  redis.call('SADD', ns .. ':holders:' .. claim, lease)
end
redis.call('HSET', ns .. ':claims', lease, cjson.encode(claims))
redis.call('SET', ns .. ':reg:' .. lease, ARGV[4], 'PX', ARGV[5])
redis.call('SET', ikey, lease, 'PX', ARGV[5])
redis.call('ZADD', ns .. ':deadlines', ARGV[6], lease)
return {'ok', lease, tostring(redis.call('INCR', ns .. ':version'))}
"""

# Forget a registration (ARGV[3] = 1: delete its key too) and release its claims.
_RELEASE = """
local ns, lease = ARGV[1], ARGV[2]
local deleted = 0
if ARGV[3] == '1' then
  deleted = redis.call('DEL', ns .. ':reg:' .. lease)
  redis.call('ZREM', ns .. ':deadlines', lease)
end
local claims = redis.call('HGET', ns .. ':claims', lease)
if claims then
  for _, claim in ipairs(cjson.decode(claims)) do
    redis.call('SREM', ns .. ':holders:' .. claim, lease)
    if redis.call('SCARD', ns .. ':holders:' .. claim) == 0 then
      redis.call('HDEL', ns .. ':owners', claim)
    end
  end
  redis.call('HDEL', ns .. ':claims', lease)
end
return deleted
"""

logger = logging.getLogger("coyote_mw.stores")


@dataclass(frozen=True)
class StoredRegistration:
    lease: str
    service: str
    instance: str
    url: str
    topology: str
    ttl: int
    routes: tuple[tuple[str, str, bool], ...]

    def claims(self) -> list[str]:
        """What this registration takes: ``topology|METHOD|shape`` for each route."""
        return [
            f"{self.topology}|{method}|{'/'.join(parse_pattern(path).shape)}"
            for method, path, _ in self.routes
        ]

    def instance_key(self) -> str:
        """The instance this registration is for: one lease per instance."""
        return json.dumps([self.topology, self.service, self.instance], separators=(",", ":"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> StoredRegistration:
        raw = json.loads(data)
        raw["routes"] = tuple((m, p, bool(c)) for m, p, c in raw["routes"])
        return cls(**raw)


class RedisStore:
    """Remote registrations in Redis, shared by every worker and host."""

    def __init__(self, url: str, *, namespace: str = "coyote") -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a dependency
            raise ImportError("RedisStore needs redis-py: pip install coyote-mw[redis]") from exc
        # typed Any: redis-py's own annotations cover its sync and async clients at once
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._url = url
        self.ns = namespace
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._channel = f"{namespace}:changes"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _key(self, lease: str) -> str:
        return f"{self.ns}:reg:{lease}"

    def put(self, reg: StoredRegistration) -> int:
        """Store ``reg`` (see ``claim``); the store's version after it."""
        return self.claim(reg)[0]

    def claim(self, reg: StoredRegistration) -> tuple[int, str]:
        """Store ``reg`` and claim its routes for its service, atomically: the store's
        version and the lease that now holds the instance.

        That lease is ``reg.lease``, or the one the instance already holds when it was
        registered alike before (through another leader: one instance, one lease); a
        registration with other routes, url or ttl replaces the instance's old one.
        Raises ``StoreConflict`` when a live registration of another service holds one
        of them: the check runs in Redis, so two workers cannot both win.
        """
        deadline = int((time.time() + reg.ttl) * 1000)
        answer = self._claim(
            args=[
                self.ns,
                reg.service,
                reg.lease,
                reg.to_json(),
                reg.ttl * 1000,
                deadline,
                reg.instance_key(),
                *reg.claims(),
            ],
        )
        if answer[0] == b"conflict":
            raise StoreConflict(answer[1].decode(), answer[2].decode())
        lease, version = answer[1].decode(), int(answer[2])
        if answer[0] == b"ok":  # "same": nothing changed, nobody needs to reload
            self._redis.publish(self._channel, version)
        return version, lease

    def renew(self, lease: str) -> bool:
        raw = self._redis.get(self._key(lease))
        if raw is None:
            return False
        record = StoredRegistration.from_json(raw)
        pipe = self._redis.pipeline(transaction=True)
        pipe.pexpire(self._key(lease), record.ttl * 1000)
        pipe.zadd(f"{self.ns}:deadlines", {lease: int((time.time() + record.ttl) * 1000)})
        pipe.pexpire(f"{self.ns}:instance:{record.instance_key()}", record.ttl * 1000)
        renewed, _, _ = pipe.execute()
        return bool(renewed)

    def delete(self, lease: str) -> bool:
        deleted = self._release(args=[self.ns, lease, 1])
        if deleted:
            self._changed()
        return bool(deleted)

    def expire(self) -> list[str]:
        """Drop leases whose key Redis has expired; any worker may call it."""
        due = self._redis.zrangebyscore(f"{self.ns}:deadlines", "-inf", int(time.time() * 1000))
        gone = []
        for raw in due:
            lease = raw.decode()
            if self._redis.exists(self._key(lease)):
                continue  # renewed in between
            if self._redis.zrem(f"{self.ns}:deadlines", lease):
                self._release(args=[self.ns, lease, 0])
                gone.append(lease)  # this worker won the removal: it announces it
        if gone:
            self._changed()
        return gone

    def deadlines(self) -> dict[str, float]:
        """Every lease's expiry, as a Unix time in seconds."""
        pairs = self._redis.zrange(f"{self.ns}:deadlines", 0, -1, withscores=True)
        return {raw.decode(): score / 1000 for raw, score in pairs}

    def _changed(self) -> None:
        version = int(self._redis.incr(f"{self.ns}:version"))
        self._redis.publish(self._channel, version)

    def version(self) -> int:
        return int(self._redis.get(f"{self.ns}:version") or 0)

    def snapshot(self) -> tuple[int, list[StoredRegistration]]:
        """The version and every live registration, read consistently."""
        while True:
            version = self.version()
            leases = [x.decode() for x in self._redis.zrange(f"{self.ns}:deadlines", 0, -1)]
            values = self._redis.mget([self._key(lease) for lease in leases]) if leases else []
            if self.version() == version:  # nothing changed while reading
                return version, [StoredRegistration.from_json(v) for v in values if v is not None]

    def watch(self, on_change: Callable[[int], None]) -> None:
        """Call ``on_change(version)`` on every change, from a thread; ``-1`` after an
        outage, when messages may have been missed and a full reload is due."""
        thread = threading.Thread(
            target=self._listen, args=(on_change,), name="coyote-store-watch", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _listen(self, on_change: Callable[[int], None]) -> None:
        import redis

        outage = False
        while not self._stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                if outage:
                    # the outage and the recovery are storesync's lines: one each
                    logger.debug("Redis is back: reloading the route table")
                    on_change(-1)
                    outage = False
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        on_change(int(message["data"]))
            except redis.RedisError as exc:
                if not outage:
                    logger.debug("Redis unreachable (%s): serving the last table", exc)
                outage = True
                self._stop.wait(0.5)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError):
                        pubsub.close()

    def after_fork(self) -> None:
        """In a forked child: the parent's threads did not come along."""
        self._threads = []
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._redis.close()
