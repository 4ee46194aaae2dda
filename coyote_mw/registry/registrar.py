"""A client as its own service: served over HTTP, registered with every leader.

``serve_client`` runs a ``Client`` behind uvicorn and keeps it registered with each
leader URL given, as Coyote's client keeps pinging its leader nodes:

* it registers (``POST /_coyote/registrations``) and heart-beats every ttl/3;
* a heartbeat answered 404 means the leader forgot it (a restart): it registers again;
* an unreachable leader is retried with exponential backoff and full jitter (never a
  busy loop), and registered with as soon as it answers; so is one that answers 5xx
  (503 while its store is unavailable), 408 or 429;
* any other refusal (400 a bad payload, 401/403 a wrong token, 409 a route another
  service holds, 404 no registration API there) will not change by retrying: the
  registrar stops and ``serve_client`` raises ``RegistrationRefused``;
* on SIGTERM / SIGINT it deregisters first, so leaders send new requests elsewhere,
  then lets in-flight requests finish (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from coyote_mw.client import Client
from coyote_mw.errors import RegistrationRefused
from coyote_mw.leader import Coyote

__all__ = ["Backoff", "Registrar", "RegistrationRefused", "check_url", "serve_client"]

logger = logging.getLogger("coyote_mw.remote")


class Backoff:
    """Exponential backoff with full jitter: sleep a random time up to the cap."""

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return max(delay, self.base / 4)

    def reset(self) -> None:
        self.attempt = 0


# Answers worth trying again: the leader (or its store) is busy or restarting.
_TRANSIENT = frozenset({408, 429})


def check_url(url: str, what: str = "leader") -> str:
    """``url`` if it is an absolute http(s) URL with a host (and a valid port), else ValueError."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{what} {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{what} {url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} {url!r}: no query, fragment or credentials in the URL")
    return url


class _Transient(RegistrationRefused):
    """A refusal worth retrying (5xx, 408, 429)."""


def _refusal(leader: str, what: str, status: int, text: str) -> RegistrationRefused:
    detail = " ".join(text.split())[:300]
    if status >= 500 or status in _TRANSIENT:
        return _Transient(f"{what} answered {status}: {detail}")
    hint = {
        401: " (no token? set COYOTE_TOKEN)",
        403: " (a wrong token: the leader's COYOTE_TOKEN differs)",
        404: " (no registration API there: a leader with a token, and the right --prefix?)",
    }.get(status, "")
    return RegistrationRefused(
        f"leader {leader} refused the {what} with {status}{hint}: {detail}; "
        "not retrying, that will not change by itself"
    )


class Registrar:
    """Keeps one service instance registered with each leader until ``stop``."""

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        url: str,
        routes: list[dict[str, Any]],
        leaders: Sequence[str],
        token: str,
        topology: str = "default",
        ttl: int = 10,
        prefix: str = "/_coyote",
        verify: ssl.SSLContext | bool = True,
        on_refused: Callable[[RegistrationRefused], None] | None = None,
    ) -> None:
        for leader in leaders:
            check_url(leader)
        self.verify = verify  # for https:// leaders: True is the system's CAs
        self.on_refused = on_refused
        self.refused: RegistrationRefused | None = None
        """The permanent refusal that stopped the registrar, if one did."""
        self.payload = {
            "service": service,
            "instance": instance,
            "url": url,
            "routes": routes,
            "topology": topology,
            "ttl": ttl,
        }
        self.leaders = [leader.rstrip("/") for leader in leaders]
        self.prefix = prefix
        self.headers = {"authorization": f"Bearer {token}"}
        self.leases: dict[str, str] = {}
        self.registered: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(headers=self.headers, timeout=5.0, verify=self.verify)
        for leader in self.leaders:
            self.registered[leader] = asyncio.Event()
            self._tasks.append(asyncio.ensure_future(self._keep(leader)))

    async def _keep(self, leader: str) -> None:
        """Coyote's ``watch_leader``: register, heart-beat, and start over when needed."""
        assert self._http is not None
        backoff = Backoff()
        down = False
        while True:
            try:
                heartbeat = await self._register(leader)
                if down:
                    logger.info("leader %s is back: registered again", leader)
                down = False
                backoff.reset()
                while True:
                    await asyncio.sleep(heartbeat)
                    r = await self._http.put(
                        f"{leader}{self.prefix}/registrations/{self.leases[leader]}"
                    )
                    if r.status_code == 404:
                        logger.warning("leader %s forgot this instance: registering again", leader)
                        self.registered[leader].clear()
                        break
                    if r.status_code != 200:
                        raise _refusal(leader, "heartbeat", r.status_code, r.text)
                    logger.debug("heartbeat to %s", leader)
            except (httpx.TransportError, _Transient) as exc:
                self.registered[leader].clear()
                if not down:
                    logger.warning("leader %s unreachable or refusing (%s); retrying", leader, exc)
                down = True
                await asyncio.sleep(backoff.next())
            except RegistrationRefused as exc:
                self.registered[leader].clear()
                self.refused = exc
                if self.on_refused is not None:
                    self.on_refused(exc)
                return

    async def _register(self, leader: str) -> float:
        assert self._http is not None
        r = await self._http.post(f"{leader}{self.prefix}/registrations", json=self.payload)
        if r.status_code != 201:
            raise _refusal(leader, "registration", r.status_code, r.text)
        body = r.json()
        self.leases[leader] = body["lease"]
        self.registered[leader].set()
        logger.info(
            "registered %s/%s with %s (lease %s, ttl %ss)",
            self.payload["service"],
            self.payload["instance"],
            leader,
            body["lease"],
            body["ttl"],
        )
        return float(body["heartbeat"])

    async def stop(self) -> None:
        """Stop heart-beating and deregister from every leader (best effort)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._http is None:
            return
        for leader, lease in list(self.leases.items()):
            try:
                await self._http.delete(f"{leader}{self.prefix}/registrations/{lease}", timeout=2.0)
                logger.info("deregistered from %s", leader)
            except httpx.HTTPError as exc:
                logger.warning("could not deregister from %s: %r", leader, exc)
        self.leases.clear()
        await self._http.aclose()
        self._http = None


def client_routes(client: Client) -> list[dict[str, Any]]:
    return [
        {"method": r.method, "path": r.pattern, "cast": r.cast} for r in client.declared_routes()
    ]


def serve_client(
    client: Client,
    *,
    leaders: Sequence[str],
    token: str,
    host: str = "127.0.0.1",
    port: int = 9001,
    topology: str = "default",
    ttl: int = 10,
    instance: str | None = None,
    advertise: str | None = None,
    log_level: str = "info",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    ca_file: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``client`` on ``host:port`` and keep it registered with ``leaders``.

    ``ssl_certfile`` / ``ssl_keyfile``: serve HTTPS (and advertise an https:// URL);
    ``ca_file``: the CA bundle https:// leaders are verified with (default: the system's).
    ``sock``: a socket already bound to ``host:port`` to serve on.
    Raises ``RegistrationRefused`` (after a clean shutdown) when a leader refuses the
    registration for good; transient failures are retried for as long as it runs.
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("serving HTTPS takes both a certificate and its key")
    servers: list[Any] = []  # the one main() runs

    def refused(exc: RegistrationRefused) -> None:
        if servers:
            servers[0].should_exit = True

    local = Coyote()
    local.register(client, topology="default")
    scheme = "https" if ssl_certfile else "http"
    url = advertise or f"{scheme}://{host}:{port}"
    registrar = Registrar(
        service=client.service_name(),
        instance=instance or f"{host}:{port}",
        url=url,
        routes=client_routes(client),
        leaders=leaders,
        token=token,
        topology=topology,
        ttl=ttl,
        verify=ssl.create_default_context(cafile=ca_file) if ca_file else True,
        on_refused=refused,
    )
    app = local.asgi()
    loops: list[asyncio.AbstractEventLoop] = []  # the one main() runs on

    class Server(uvicorn.Server):
        """uvicorn's server, deregistering before it stops listening and drains."""

        leaving: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit or self.leaving is not None:
                return super().handle_exit(sig, frame)
            # A signal handler may interrupt the loop anywhere: hand over through the
            # thread-safe door, which also wakes a loop asleep in select().
            loops[0].call_soon_threadsafe(self._leave, sig, frame)

        def _leave(self, sig: int, frame: Any) -> None:
            if self.leaving is None:
                self.leaving = asyncio.ensure_future(self._deregister_then_exit(sig, frame))

        async def _deregister_then_exit(self, sig: int, frame: Any) -> None:
            try:
                await registrar.stop()
            finally:
                super().handle_exit(sig, frame)

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            # the client's Coyote writes the access line; a process whose logging is
            # configured (coyote serve-client) gets uvicorn's lines in its format
            access_log=False,
            log_config=None if logging.getLogger().handlers else LOGGING_CONFIG,
            lifespan="on",
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        server = Server(config)
        servers.append(server)

        async def register_once_listening() -> None:
            # Leaders must not send requests before the socket accepts them, nor may a
            # signal arrive before uvicorn's handlers (which deregister) are in place.
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            await registrar.start()

        starting = asyncio.ensure_future(register_once_listening())
        try:
            await server.serve(sockets=[sock] if sock is not None else None)
        finally:
            starting.cancel()
            await registrar.stop()
            local.close()

    asyncio.run(main())
    if registrar.refused is not None:
        raise registrar.refused
