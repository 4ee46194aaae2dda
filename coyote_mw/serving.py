"""A client as its own service: served over HTTP, registered with every leader.

``serve_client`` runs a ``Client`` behind uvicorn, on a ``Coyote`` of its own, and
keeps it registered with each leader URL given (``coyote_mw.registry.registrar``):

* it registers (``POST /_coyote/registrations``) and heart-beats every ttl/3;
* a leader that forgot it (a restart) is registered with again, and an unreachable or
  busy one is retried with backoff;
* a refusal that will not change by retrying (a bad payload, a wrong token, a route
  another service holds) stops it: ``serve_client`` raises ``RegistrationRefused``;
* on SIGTERM / SIGINT it deregisters first, so leaders send new requests elsewhere,
  then lets in-flight requests finish (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from coyote_mw.client import Client
from coyote_mw.leader import Coyote
from coyote_mw.registry.registrar import Registrar, RegistrationRefused

__all__ = ["client_routes", "serve_client"]


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
