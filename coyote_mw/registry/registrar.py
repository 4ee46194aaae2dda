"""Keeping a service instance registered with every leader (``Registrar``).

As Coyote's client keeps pinging its leader nodes (``coyote_mw.serving.serve_client``
runs a ``Client`` behind uvicorn with one):

* it registers (``POST /_coyote/registrations``) and heart-beats every ttl/3;
* a heartbeat answered 404 means the leader forgot it (a restart): it registers again;
* an unreachable leader is retried with exponential backoff and full jitter (never a
  busy loop), and registered with as soon as it answers; so is one that answers 5xx
  (503 while its store is unavailable), 408 or 429;
* any other refusal (400 a bad payload, 401/403 a wrong token, 409 a route another
  service holds, 404 no registration API there) will not change by retrying: the
  registrar stops (``refused``, ``on_refused``);
* ``stop()`` deregisters from every leader.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from coyote_mw.errors import RegistrationRefused

__all__ = ["Backoff", "Registrar", "RegistrationRefused", "check_url"]

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
