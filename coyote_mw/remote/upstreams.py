"""``Upstreams``: what a leader's remote instances share, and their connections.

Each ``RemoteHandler`` is given its leader's ``Upstreams`` (not the leader): the
settings it relays by, which ``Coyote.configure`` changes in place so that instances
registered before a change follow it, and the pools it relays through, which
``Coyote.close`` closes:

* ``policy`` (``UpstreamPolicy``): what an instance may send, and when it is ejected;
* ``forwarding`` (``coyote_mw.http.forwarding.Forwarding``): head checks and the
  forwarded headers;
* ``tls``: the context ``https://`` instances are verified with;
* ``websockets`` (``coyote_mw.relay.Sockets``): the bound on relayed WebSockets;
* ``pool()``: the lean transport's pool of the running event loop (ASGI), one per loop;
  ``sync_client()``: the pooled ``httpx.Client`` of WSGI hosts, made with the leader's
  ``timeout`` and ``concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import weakref
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

from coyote_mw.http.forwarding import Forwarding
from coyote_mw.relay import Sockets
from coyote_mw.remote.health import UpstreamPolicy
from coyote_mw.remote.transport import Pool

if TYPE_CHECKING:
    import httpx

__all__ = ["Upstreams"]


class Upstreams:
    def __init__(
        self,
        policy: UpstreamPolicy,
        forwarding: Forwarding,
        websockets: Sockets,
        tls: ssl.SSLContext | None = None,
        *,
        timeout: float = 30.0,
        concurrency: int = 50,
    ) -> None:
        self.policy = policy
        self.forwarding = forwarding
        self.websockets = websockets
        self._tls = tls
        self._timeout = timeout
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = (
            weakref.WeakKeyDictionary()
        )
        # the last loop's pool, held weakly: a closed loop and its pool must be free to go
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[Pool]] | None = None

    @property
    def tls(self) -> ssl.SSLContext:
        """The context https:// instances are verified with (the system's CAs by default)."""
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def configure(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Change what connections are made with: the WSGI client is made anew for the
        next request (the lean transport reads ``tls`` on every request)."""
        with self._lock:
            if tls is not None:
                self._tls = tls
            if timeout is not None:
                self._timeout = timeout
            if concurrency is not None:
                self._concurrency = concurrency
            old, self._client = self._client, None
        if old is not None:
            old.close()

    def pool(self, loop: asyncio.AbstractEventLoop | None = None) -> Pool:
        """The lean transport's pool of the running event loop (``loop``, when the
        caller knows it already: asking is a system call under Python 3.11)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            pool = last[1]()
            if pool is not None:
                return pool
        pool = self._pools.get(loop)
        if pool is None:
            # no read timeout of its own: the relay's watchdog bounds the wait for a head
            pool = self._pools[loop] = Pool(read_timeout=None)
        self._last = (weakref.ref(loop), weakref.ref(pool))
        return pool

    def sync_client(self) -> httpx.Client:
        """The pooled ``httpx.Client`` WSGI hosts relay through."""
        client = self._client
        if client is not None:
            return client
        import httpx  # imported when used: WSGI hosts with remote instances only

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    # one client serves every person: a jar would hand one person's
                    # cookies (an instance's Set-Cookie) to the next person's requests
                    cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
                    verify=self.tls,
                    timeout=httpx.Timeout(self._timeout, connect=5.0),
                    limits=httpx.Limits(max_connections=self._concurrency * 2),
                    follow_redirects=False,
                )
                # httpx sends Accept, Accept-Encoding, Connection and User-Agent of its
                # own on every request: the instance gets the client's headers only
                for name in list(self._client.headers):
                    del self._client.headers[name]
            return self._client

    def close(self) -> None:
        """Close the WSGI client and the transport's pools (each on its own loop, if
        that still runs); a request after this opens new ones."""
        with self._lock:
            client, self._client = self._client, None
            pools, self._pools = list(self._pools.items()), weakref.WeakKeyDictionary()
            self._last = None
        if client is not None:
            client.close()
        for loop, pool in pools:
            with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to free
                loop.call_soon_threadsafe(pool.close)
