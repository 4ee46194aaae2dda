"""``Coyote``: the leader.  It owns the route table, the relay and the settings.

    coyote = Coyote()                       # embedded, in-memory table
    coyote.register(Saloon())               # topology "default"
    app = coyote.asgi(host_app)             # or coyote.wsgi(wsgi_app); None: standalone

Settings, each one keyword with a documented default:

=================  =========  ======================================================
concurrency        50         handlers running at once (Coyote's GenStage max_demand)
queue              100        requests waiting for a slot beyond that; more get 503
timeout            30.0       seconds a handler may take (504), and a request may wait
max_body           10 MiB     bytes a handler may read from a request body (413)
access_log         True       one INFO line per request on logger ``coyote_mw.access``
log_format         None       None: logging is the host's; "text" / "json": coyote's
                              loggers get a stderr handler of their own in that
                              format (``coyote_mw.logs``)
token              None       bearer token of the registration API (off while None)
prefix             /_coyote   where the registration API lives
store              None       Redis URL shared by every worker (or $COYOTE_STORE);
                              None: registrations live in this process
tls                None       how https:// instances are verified: an
                              ``ssl.SSLContext``, or the path of a CA bundle;
                              None: the system's trusted CAs
trusted_proxies    None       peers (IPs / CIDRs) whose Forwarded / X-Forwarded-*
                              headers are kept and extended; others' are dropped
max_headers        100        request header lines (431 above)
max_header_bytes   32 KiB     bytes of request header names and values (431 above)
max_target         8 KiB      bytes of the request target, path and query (414 above)
pseudonym          random     this leader's name in Via ("coyote-" + 8 hex digits);
                              a request that already carries it is a loop (508)
topologies         None       bounds of their own for some topologies, e.g.
                              ``{"blue": {"concurrency": 10, "queue": 20}}``
max_websockets     1000       relayed WebSockets open at once (every topology);
                              over it a handshake is closed with 1013
metrics            "token"    Prometheus metrics at {prefix}/metrics: "token" (the
                              API's bearer token), "open" (none), "off" (none kept);
                              they need prometheus-client (``coyote_mw.ops.metrics``)
=================  =========  ======================================================

Each topology has a relay of its own (``relay_for``): ``concurrency``, ``queue`` and
``timeout`` bound every topology separately, so one topology's flood never takes
another's slots; ``topologies`` / ``configure_topology`` set other bounds for one.
Remote instances (``coyote_mw.remote.health.UpstreamPolicy``; see ``coyote_mw.remote.health``):

=====================  ========  ==================================================
max_response_head      60 KiB    bytes an instance's response head may take (502)
response_timeout       300.0     seconds a whole response may take, body included;
                                 past it the response is cut (0: no total deadline)
stream_idle_timeout    None      seconds a response body may pause (None: timeout)
eject_after            3         failures in a row that eject an instance
base_ejection_time     10.0      seconds of the first ejection (x ejections)
max_ejection_time      300.0     the longest ejection
max_ejection_percent   50        most of a route's instances gateway failures eject
=====================  ========  ==================================================
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json as jsonlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec

from coyote_mw.client import Client
from coyote_mw.errors import DispatchError, RelaySaturated, RoutingError
from coyote_mw.handlers.apps import ASGIAppHandler, WSGIAppHandler
from coyote_mw.handlers.base import Dispatch, FunctionHandler, Handler
from coyote_mw.http.forwarding import Forwarding
from coyote_mw.http.paths import canonicalize
from coyote_mw.http.request import BytesBody, Request
from coyote_mw.http.responses import Response
from coyote_mw.logs import use_format
from coyote_mw.middleware.accesslog import AccessLog
from coyote_mw.middleware.asgi import CoyoteASGI
from coyote_mw.middleware.gateway import Gateway
from coyote_mw.middleware.wsgi import CoyoteWSGI
from coyote_mw.ops.api import OperatorAPI
from coyote_mw.ops.metrics import Metrics, check_mode
from coyote_mw.registry.api import RegistrationAPI
from coyote_mw.registry.remotes import register_remote
from coyote_mw.relay import Relay, Sockets
from coyote_mw.remote.health import UpstreamPolicy
from coyote_mw.remote.upstreams import Upstreams
from coyote_mw.routing.decision import Decision
from coyote_mw.routing.table import DEFAULT_TOPOLOGY, Match, Registration, RouteTable
from coyote_mw.routing.topology import TopologyResolver, TopologySpec

if TYPE_CHECKING:
    from coyote_mw.remote.handler import RemoteHandler

__all__ = ["Coyote"]

logger = logging.getLogger("coyote_mw")

P = ParamSpec("P")


def _then_wire(
    method: Callable[Concatenate[Coyote, P], None],
) -> Callable[Concatenate[Coyote, P], None]:
    """``Coyote.configure``, after which - even when it refused a setting half-way -
    the middlewares see what changed (``Coyote._wire``)."""

    @functools.wraps(method)
    def configure(self: Coyote, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        finally:
            self._wire()

    return configure


class Coyote:
    def __init__(
        self,
        *,
        concurrency: int = 50,
        queue: int = 100,
        timeout: float = 30.0,
        max_body: int = 10 * 1024 * 1024,
        access_log: bool = True,
        token: str | None = None,
        prefix: str = "/_coyote",
        store: str | None = None,
        tls: ssl.SSLContext | str | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        max_headers: int = 100,
        max_header_bytes: int = 32 * 1024,
        max_target: int = 8 * 1024,
        pseudonym: str | None = None,
        topologies: Mapping[str, Mapping[str, Any]] | None = None,
        max_response_head: int = UpstreamPolicy.max_response_head,
        response_timeout: float = UpstreamPolicy.response_timeout,
        stream_idle_timeout: float | None = None,
        eject_after: int = UpstreamPolicy.eject_after,
        base_ejection_time: float = UpstreamPolicy.base_ejection_time,
        max_ejection_time: float = UpstreamPolicy.max_ejection_time,
        max_ejection_percent: int = UpstreamPolicy.max_ejection_percent,
        max_websockets: int = 1000,
        log_format: str | None = None,
        metrics: str | bool = "token",
    ) -> None:
        if log_format is not None:
            use_format(log_format)
        self.upstreams = Upstreams(
            UpstreamPolicy(
                max_response_head=max_response_head,
                response_timeout=response_timeout,
                stream_idle_timeout=stream_idle_timeout,
                eject_after=eject_after,
                base_ejection_time=base_ejection_time,
                max_ejection_time=max_ejection_time,
                max_ejection_percent=max_ejection_percent,
            ),
            Forwarding(trusted_proxies, max_headers, max_header_bytes, max_target, pseudonym),
            Sockets(max_websockets),
            _tls_context(tls) if tls is not None else None,
            timeout=timeout,
            concurrency=concurrency,
        )
        """What remote instances share: settings and connection pools."""
        self.table = RouteTable()
        self.metrics = Metrics(
            metrics,
            lambda: self._relays,
            self.table,
            lambda: self.api.leases if self.api is not None else None,
        )
        """Prometheus metrics (``coyote_mw.ops.metrics``), at ``{prefix}/metrics``."""
        self.api: RegistrationAPI | None = None
        self.ops: OperatorAPI | None = None
        """What answers under the prefix: the operator's views and ``api``."""
        self._open_api(token, prefix, store)
        self._bounds: dict[str, Any] = {
            "concurrency": concurrency,
            "queue": queue,
            "timeout": timeout,
        }
        self._topology_bounds: dict[str, dict[str, Any]] = {}
        self._relays: dict[str, Relay] = {}
        self._relays_lock = threading.Lock()
        self.relay = Relay(concurrency=concurrency, queue=queue, timeout=timeout)
        """The relay of the default topology (every topology has its own: ``relay_for``)."""
        self._relays[DEFAULT_TOPOLOGY] = self.relay
        self.max_body = max_body
        self.log_access = AccessLog(access_log)
        self.log_access.metrics = self.metrics.recorder
        self._started = False
        self._direct = Decision.direct(self.table)  # call / cast
        self.gateway = Gateway(
            table=self.table,
            ops=self.ops,
            forwarding=self.forwarding,
            relay=self.relay,
            relay_for=self.relay_for,
            max_body=self.max_body,
            log_access=self.log_access,
            startup=self.startup,
            shutdown=self.shutdown,
        )
        """What the middlewares get of this leader (``coyote_mw.middleware.gateway``)."""
        if topologies:
            self.configure(topologies=topologies)

    def _wire(self) -> None:
        """The one place the middlewares' view of this leader changes: after a setting
        did (``configure``), the next request they serve sees it."""
        gw = self.gateway
        gw.ops, gw.forwarding, gw.relay, gw.max_body = (
            self.ops,
            self.forwarding,
            self.relay,
            self.max_body,
        )

    def _open_api(self, token: str | None, prefix: str, store: str | None) -> None:
        """The registration API, on when a token is set, over a shared store if given."""
        self.prefix = check_mount(prefix)
        if not self.prefix:
            raise ValueError("prefix must be a path such as '/_coyote'")
        if token is not None and len(token) < 16:
            raise ValueError("token must be at least 16 characters: it guards the route table")
        if token:
            store = store or os.environ.get("COYOTE_STORE") or None
        if store is not None and not store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"store {store!r}: use a Redis URL such as redis://127.0.0.1:6379/0")
        if store is not None and not token:
            raise ValueError("a shared store holds remote registrations: set a token too")
        old, self.api = self.api, None
        if token:
            self.api = RegistrationAPI(self.table, self._remote, token, self.prefix, store)
        self.ops = (
            OperatorAPI(self.api, self.table, self.relay_for, self.metrics)
            if self.api is not None
            else None
        )
        # the table refuses routes under the API's prefix while the API is on
        self.table.reserve(*([self.prefix] if token else []))
        self._token, self._store = token, store
        if old is not None:
            old.close()

    @_then_wire
    def configure(
        self,
        *,
        concurrency: int | None = None,
        queue: int | None = None,
        timeout: float | None = None,
        max_body: int | None = None,
        access_log: bool | None = None,
        token: str | None = None,
        prefix: str | None = None,
        store: str | None = None,
        tls: ssl.SSLContext | str | None = None,
        trusted_proxies: Iterable[str] | str | None = None,
        max_headers: int | None = None,
        max_header_bytes: int | None = None,
        max_target: int | None = None,
        pseudonym: str | None = None,
        topologies: Mapping[str, Mapping[str, Any]] | None = None,
        max_response_head: int | None = None,
        response_timeout: float | None = None,
        stream_idle_timeout: float | None = None,
        eject_after: int | None = None,
        base_ejection_time: float | None = None,
        max_ejection_time: float | None = None,
        max_ejection_percent: int | None = None,
        max_websockets: int | None = None,
        log_format: str | None = None,
        metrics: str | bool | None = None,
    ) -> None:
        """Change settings before serving (framework adapters read them from config)."""
        if log_format is not None:
            use_format(log_format)
        if metrics is not None:
            check_mode(metrics)  # refused here, before anything changes
        if max_websockets is not None:
            Sockets(max_websockets)  # refused here, before anything changes
        upstream: dict[str, Any] = {
            k: v
            for k, v in {
                "max_response_head": max_response_head,
                "response_timeout": response_timeout,
                "stream_idle_timeout": stream_idle_timeout,
                "eject_after": eject_after,
                "base_ejection_time": base_ejection_time,
                "max_ejection_time": max_ejection_time,
                "max_ejection_percent": max_ejection_percent,
            }.items()
            if v is not None
        }
        if upstream:
            self.upstreams.policy = dataclasses.replace(self.upstreams.policy, **upstream)
        if tls is not None:
            self.upstreams.configure(tls=_tls_context(tls))
        self._configure_forwarding(
            trusted_proxies, max_headers, max_header_bytes, max_target, pseudonym
        )
        if token is not None or prefix is not None or store is not None:
            self._open_api(token or self._token, prefix or self.prefix, store or self._store)
        if concurrency is not None or queue is not None or timeout is not None or topologies:
            bounds: dict[str, Any] = {
                "concurrency": self._bounds["concurrency"] if concurrency is None else concurrency,
                "queue": self._bounds["queue"] if queue is None else queue,
                "timeout": self._bounds["timeout"] if timeout is None else timeout,
            }
            overrides = {k: dict(v) for k, v in self._topology_bounds.items()}
            for name, limits in _topology_bounds(topologies):
                overrides[name] = {**overrides.get(name, {}), **limits}
            self._rebuild_relays(bounds, overrides)
        if max_body is not None:
            self.max_body = max_body
        if access_log is not None:
            self.log_access.enabled = access_log
        if max_websockets is not None:
            self.upstreams.websockets.limit = max_websockets
        if metrics is not None:
            self.metrics.configure(metrics)
            self.log_access.metrics = self.metrics.recorder

    def _configure_forwarding(
        self,
        trusted_proxies: Iterable[str] | str | None,
        max_headers: int | None,
        max_header_bytes: int | None,
        max_target: int | None,
        pseudonym: str | None,
    ) -> None:
        old = self.forwarding
        given = (trusted_proxies, max_headers, max_header_bytes, max_target, pseudonym)
        if all(value is None for value in given):
            return
        self.upstreams.forwarding = Forwarding(
            [str(n) for n in old.trusted_proxies] if trusted_proxies is None else trusted_proxies,
            old.max_headers if max_headers is None else max_headers,
            old.max_header_bytes if max_header_bytes is None else max_header_bytes,
            old.max_target if max_target is None else max_target,
            old.pseudonym if pseudonym is None else pseudonym,
        )

    def configure_topology(
        self,
        topology: str,
        *,
        concurrency: int | None = None,
        queue: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Give ``topology`` bounds of its own (the others are the leader's settings).

        Like ``configure``, before the relay serves requests.
        """
        limits = {
            key: value
            for key, value in (("concurrency", concurrency), ("queue", queue), ("timeout", timeout))
            if value is not None
        }
        self.configure(topologies={topology: limits})

    def _rebuild_relays(self, bounds: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> None:
        """New relays for new bounds; a bound out of range (ValueError) changes nothing."""
        for limits in [{}, *overrides.values()]:
            Relay(**{**bounds, **limits})  # refused here, before anything changes
        with self._relays_lock:
            old = list(self._relays.values())
            if any(relay.active or relay.waiting for relay in old):
                raise RuntimeError("configure() the relay before it serves requests")
            self._bounds, self._topology_bounds = dict(bounds), overrides
            self.relay = Relay(**{**bounds, **overrides.get(DEFAULT_TOPOLOGY, {})})
            self._relays = {DEFAULT_TOPOLOGY: self.relay}
            for name, limits in overrides.items():
                if name != DEFAULT_TOPOLOGY:
                    self._relays[name] = Relay(**{**bounds, **limits}, loop_of=self.relay)
        self.upstreams.configure(timeout=self.relay.timeout, concurrency=self.relay.concurrency)
        for relay in old:
            if relay.loop_of is not None:
                relay.close()
        for relay in old:
            if relay.loop_of is None:
                relay.close()  # the loop's owner last

    def relay_for(self, topology: str) -> Relay:
        """The relay of ``topology``: its own bounds, made on first use."""
        relay = self._relays.get(topology)
        if relay is None:
            with self._relays_lock:
                relay = self._relays.get(topology)
                if relay is None:
                    relay = Relay(**self._bounds, loop_of=self.relay)
                    self._relays = {**self._relays, topology: relay}  # readers never lock
        return relay

    def __repr__(self) -> str:
        return f"<Coyote routes={len(self.table)} topologies={self.table.topologies()}>"

    @property
    def tls(self) -> ssl.SSLContext:
        """The context https:// instances are verified with (the system's CAs by default)."""
        return self.upstreams.tls

    @property
    def upstream(self) -> UpstreamPolicy:
        """The settings for remote instances (``coyote_mw.remote.health``)."""
        return self.upstreams.policy

    @property
    def forwarding(self) -> Forwarding:
        """Request head checks and forwarded headers (``coyote_mw.http.forwarding``)."""
        return self.upstreams.forwarding

    @property
    def websockets(self) -> Sockets:
        """Relayed WebSockets open now, and their bound."""
        return self.upstreams.websockets

    # -- registration -------------------------------------------------------------

    def register(
        self,
        target: Any,
        *,
        topology: str = DEFAULT_TOPOLOGY,
        routes: Iterable[Any] | None = None,
        service: str | None = None,
        instance: str | None = None,
        interface: str | None = None,
    ) -> Registration:
        """Register a ``Client``, or a whole ASGI/WSGI app with the ``routes`` it serves.

        ``interface`` ("asgi" or "wsgi") says what an app speaks when it cannot be told
        from its signature.  Raises ``InvalidRoute`` (``ReservedRoute`` under the
        registration API's prefix) / ``RouteConflict``; the table is then unchanged.
        """
        if isinstance(target, Client):
            declared = target.declared_routes()
            if routes is not None:
                raise TypeError("a Client declares its own routes; do not pass routes=")
            handlers = {r: FunctionHandler(fn) for r, fn in declared.items()}
            return self.table.register(
                service or target.service_name(),
                list(declared),
                handlers,
                instance=instance,
                topology=topology,
            )
        if routes is None:
            raise TypeError(
                f"{target!r} is not a coyote_mw.Client: pass routes=[(method, pattern), ...] "
                "to register it as an ASGI or WSGI app"
            )
        handler = _app_handler(target, interface)
        name = service or getattr(target, "__name__", None) or type(target).__name__
        return self.table.register(
            name, list(routes), lambda r: handler, instance=instance, topology=topology
        )

    def register_remote(
        self,
        url: str,
        *,
        routes: Iterable[Any],
        service: str,
        instance: str | None = None,
        topology: str = DEFAULT_TOPOLOGY,
    ) -> Registration:
        """Register a service reached over HTTP at ``url`` (a static upstream, no lease).

        Instances that should come and go register themselves through the API instead.
        ``url`` is kept in its canonical form (``coyote_mw.http.urls``); one that cannot be
        relayed to raises ``InvalidInstanceURL`` (an ``InvalidRoute`` and a ``ValueError``).
        """
        return register_remote(
            self.table, self._remote, url, service, routes, instance=instance, topology=topology
        )

    def _remote(self, url: str) -> RemoteHandler:
        """The handler of the instance at ``url``: what registrations of URLs make."""
        from coyote_mw.remote.handler import RemoteHandler  # httpx: imported when used

        return RemoteHandler(url, self.upstreams)

    def deregister(self, **criteria: Any) -> list[Registration]:
        """``RouteTable.deregister``: by ``lease``, or ``service`` (+ instance, topology)."""
        return self.table.deregister(**criteria)

    # -- mounting -----------------------------------------------------------------

    def asgi(
        self,
        app: Any = None,
        *,
        mount: str = "",
        topology: TopologySpec = DEFAULT_TOPOLOGY,
        precedence: str = "coyote",
    ) -> CoyoteASGI:
        """ASGI middleware in front of ``app`` (None: coyote answers everything).

        ``precedence="host"`` lets the host app answer a matched request first and
        gives it to coyote only when the host answers 404.
        """
        return CoyoteASGI(
            self.gateway,
            app,
            mount=check_mount(mount),
            topology=TopologyResolver.of(topology),
            precedence=precedence,
        )

    def wsgi(
        self,
        app: Any = None,
        *,
        mount: str = "",
        topology: TopologySpec = DEFAULT_TOPOLOGY,
        precedence: str = "coyote",
    ) -> CoyoteWSGI:
        """WSGI middleware in front of ``app`` (None: coyote answers everything)."""
        return CoyoteWSGI(
            self.gateway,
            app,
            mount=check_mount(mount),
            topology=TopologyResolver.of(topology),
            precedence=precedence,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def startup(self) -> None:
        """Start in-process ASGI apps' lifespans (called from the host's lifespan)."""
        self._started = True
        for handler in self._app_handlers():
            await handler.startup()

    async def shutdown(self) -> None:
        """Let accepted casts finish, then stop sub-app lifespans."""
        for relay in list(self._relays.values()):
            await relay.drain()
        for handler in self._app_handlers():
            await handler.shutdown()
        self._started = False

    def close(self) -> None:
        """Stop sub-app lifespans still running and the relay's threads."""
        for handler in self._app_handlers():
            handler.close()
        if self.api is not None:
            self.api.close()
        relays = list(self._relays.values())
        for relay in relays:
            if relay is not self.relay:
                relay.close()
        self.relay.close()  # the owner of the loop the others share, last
        self.upstreams.close()

    def _app_handlers(self) -> list[Handler]:
        seen: dict[int, Handler] = {}
        for reg in self.table.registrations():
            for h in reg.handlers.values():
                if isinstance(h, ASGIAppHandler):
                    seen[id(h)] = h
        return list(seen.values())

    # -- dispatch without HTTP (Coyote.call / Coyote.cast) ------------------------------

    def _prepare(
        self,
        method: str,
        path: str,
        topology: str,
        body: bytes | str | None,
        json: Any,
        headers: Mapping[str, str] | None,
        query: str | Mapping[str, str] | None,
    ) -> tuple[Handler, Dispatch, Request]:
        method = method.upper()
        raw, _, qs = path.partition("?")
        canon = canonicalize(raw)
        # the decision a request gets (coyote_mw.routing.decision), without a mount, a
        # host app or a limit on the target: a Match, or the 404 / 405 to raise
        match, _, _ = self._direct.decide(method, canon, 0, 0, None, topology)
        if not isinstance(match, Match):
            assert isinstance(match, DispatchError)
            raise match
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        if json is not None:
            body = jsonlib.dumps(json).encode()
            hdrs.setdefault("content-type", "application/json")
        data = body.encode() if isinstance(body, str) else (body or b"")
        if data:
            hdrs["content-length"] = str(len(data))
        if query is not None:
            from urllib.parse import urlencode

            qs = query if isinstance(query, str) else urlencode(query, doseq=True)
        d = Dispatch(match, method, canon, topology, self.relay_for(topology), self.max_body)
        request = Request(
            method,
            canon.path,
            raw_path=canon.raw,
            params=match.params,
            query_string=qs.encode("latin-1"),
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs.items()],
            body=BytesBody(data, self.max_body),
            topology=topology,
            route=match.endpoint.pattern,
            service=match.endpoint.service,
        )
        return match.endpoint.pick(), d, request

    def call(
        self,
        method: str,
        path: str,
        *,
        topology: str = DEFAULT_TOPOLOGY,
        body: bytes | str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        query: str | Mapping[str, str] | None = None,
    ) -> Response:
        """Call the handler for ``method path`` and wait for its ``Response``.

        Raises the ``DispatchError`` a request would have been answered with:
        ``NoMatchingRoute``, ``MethodNotAllowed``, ``RoutingError``, ``RelaySaturated``,
        ``HandlerTimeout``.  From a coroutine, use ``await coyote.acall(...)``.
        """
        handler, d, request = self._prepare(method, path, topology, body, json, headers, query)
        return handler.call(d, request)

    async def acall(
        self,
        method: str,
        path: str,
        *,
        topology: str = DEFAULT_TOPOLOGY,
        body: bytes | str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        query: str | Mapping[str, str] | None = None,
    ) -> Response:
        handler, d, request = self._prepare(method, path, topology, body, json, headers, query)
        return await handler.acall(d, request)

    def cast(
        self,
        method: str,
        path: str,
        *,
        topology: str = DEFAULT_TOPOLOGY,
        body: bytes | str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        query: str | Mapping[str, str] | None = None,
    ) -> None:
        """Fire and forget: run the handler on the relay and return at once.

        Raises ``NoMatchingRoute`` / ``MethodNotAllowed`` at once, and
        ``RelaySaturated`` when the relay has no room; failures later are logged.
        """
        handler, d, request = self._prepare(method, path, topology, body, json, headers, query)
        if not d.relay.has_room():
            raise RelaySaturated(d.relay.retry_after)

        def done(future: Future[Response]) -> None:
            exc = None if future.cancelled() else future.exception()
            if isinstance(exc, RoutingError):
                return  # the handler's failure is logged where it happened, once
            if isinstance(exc, DispatchError):
                logger.warning("cast %s %s not run: %s", method, path, exc)
            elif exc is not None:
                logger.error("cast %s %s failed: %r", method, path, exc, exc_info=exc)

        self.relay.submit_coroutine(handler.acall(d, request)).add_done_callback(done)


def _topology_bounds(
    topologies: Mapping[str, Mapping[str, Any]] | None,
) -> list[tuple[str, dict[str, Any]]]:
    """``{"blue": {"concurrency": 10}}`` checked: a mapping of names to known bounds."""
    if topologies is None:
        return []
    if not isinstance(topologies, Mapping):
        raise ValueError(f"topologies: a mapping of topology names to bounds, not {topologies!r}")
    checked = []
    for name, bounds in topologies.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"topologies: {name!r} is not a topology name")
        if not isinstance(bounds, Mapping):
            raise ValueError(f"topology {name!r}: bounds are a mapping, not {bounds!r}")
        unknown = sorted(set(bounds) - {"concurrency", "queue", "timeout"})
        if unknown:
            raise ValueError(
                f"topology {name!r}: unknown bound(s) {unknown}; use concurrency, queue, timeout"
            )
        checked.append((name, dict(bounds)))
    return checked


def check_mount(mount: str) -> str:
    if mount and (not mount.startswith("/") or "//" in mount or "?" in mount):
        raise ValueError(f"mount {mount!r} must be a path such as '/saloon'")
    return mount.rstrip("/")


def _app_handler(app: Any, interface: str | None) -> Handler:
    if interface is None:
        call = getattr(app, "__call__", None)  # noqa: B004
        is_async = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)
        interface = "asgi" if is_async else "wsgi"
    if interface == "asgi":
        return ASGIAppHandler(app)
    if interface == "wsgi":
        return WSGIAppHandler(app)
    raise ValueError("interface must be 'asgi' or 'wsgi'")


def _tls_context(tls: ssl.SSLContext | str) -> ssl.SSLContext:
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not isinstance(tls, str):
        raise TypeError(f"tls must be an ssl.SSLContext or a CA bundle's path, not {tls!r}")
    if not os.path.isfile(tls):
        raise ValueError(f"tls: {tls!r} is not a file (a CA bundle, PEM) nor an ssl.SSLContext")
    return ssl.create_default_context(cafile=tls)
