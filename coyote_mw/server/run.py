"""The server: listening sockets, the lifespan, the connections' timers, the stop.

``Server(app, options).run([sock])`` serves an ASGI 3 app on sockets bound already (a
supervisor may hand the same one to several processes), on uvloop when it is
installed. SIGTERM or SIGINT stops it: it accepts no more connections, closes the
idle ones, lets requests under way finish within ``shutdown_timeout`` seconds
(then closes them), runs the lifespan shutdown and returns 0; a second signal
cuts the wait short. A lifespan startup that fails returns 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from coyote_mw.server.h1 import H1Connection, Shortcut
from coyote_mw.server.wire import LIFESPAN_SHUTDOWN, Options

__all__ = ["Server"]

log = logging.getLogger("coyote_mw.server")

_BACKLOG = 100  # connections the kernel holds before they are accepted (as create_server's)

_BUSY = 2  # a connection whose timer is off (coyote_mw.server.h1)


class Server:
    def __init__(
        self,
        app: Any,
        options: Options | None = None,
        ssl: ssl.SSLContext | None = None,
        ready: Callable[[], None] | None = None,
        shortcut: Shortcut | None = None,
    ) -> None:
        """``ready()`` is called once the server accepts connections (a supervisor's
        signal that this worker serves); ``shortcut`` may answer requests without ASGI
        (``coyote_mw.server.h1.Shortcut``)."""
        self.app = app
        self.shortcut = shortcut
        self.ready = ready
        self.options = options or Options()
        self.ssl = ssl
        self.asgi = {"version": "3.0", "spec_version": "2.3"}
        self.state: dict[str, Any] = {}
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        name = self.options.server_header
        self.extra = f"server: {name}\r\n".encode("latin-1") if name else b""
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.started = False
        self._stop: asyncio.Event | None = None
        self._force = False
        self._interrupted = False  # a SIGINT came

    def run(self, sockets: Sequence[socket.socket]) -> int:
        """Serve until a signal; the exit status (0, or 1 when the startup failed)."""
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # plain asyncio, slower
            pass
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self.serve(sockets))

    def stop(self, force: bool = False) -> None:
        """Begin the stop (as SIGTERM does); ``force``: stop waiting for the requests
        under way.  From the server's loop."""
        if self._stop is not None:
            if force and self._stop.is_set():
                self._force = True
            self._stop.set()

    def _signalled(self, sig: int) -> None:
        # a second Ctrl-C hurries the stop, as under uvicorn; a SIGTERM never does (a
        # supervisor sends one after the Ctrl-C its whole process group got)
        self.stop(force=sig == signal.SIGINT and self._interrupted)
        self._interrupted = self._interrupted or sig == signal.SIGINT

    async def serve(self, sockets: Sequence[socket.socket]) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # (not in the main thread: no signals, stop() instead)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._signalled, sig)
        lifespan = _Lifespan(self) if self.options.lifespan != "off" else None
        if lifespan is not None and not await lifespan.startup():
            return 1
        listeners: list[asyncio.Server | _TLSListener]
        if self.ssl is None:
            listeners = [
                await loop.create_server(lambda: H1Connection(self), sock=sock) for sock in sockets
            ]
        else:
            listeners = [_TLSListener(self, sock) for sock in sockets]
        ticker = loop.create_task(self._tick())
        self.started = True
        if self.ready is not None:
            self.ready()
        await self._stop.wait()
        self.stopping = True
        for listener in listeners:
            listener.close()
        await self._drain()
        ticker.cancel()
        if lifespan is not None:
            await lifespan.shutdown()
        return 0

    async def _drain(self) -> None:
        for conn in list(self.connections):
            conn.shutdown()
        deadline = self.loop.time() + self.options.shutdown_timeout
        while (self.connections or self.tasks) and not self._force:
            if self.loop.time() > deadline:
                log.warning(
                    "%d connection(s) still busy after %ss: closed",
                    len(self.connections),
                    self.options.shutdown_timeout,
                )
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.transport.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1)

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _tick(self) -> None:
        """Every connection's timer, checked a few times a second (one timer in all,
        not one per request)."""
        options = self.options
        timers = (options.header_timeout, options.keep_alive_timeout, options.send_timeout)
        period = min(0.5, *(t / 4 for t in timers))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for conn in list(self.connections):
                try:
                    if 0 < conn.write_deadline < now:  # first: a closed one may wait on it
                        conn.stalled()
                    elif conn.transport.is_closing():  # closed, and not gone yet
                        if conn.scheme == "https":
                            conn.unwinding()
                    elif conn.state != _BUSY and now > conn.deadline:
                        conn.expired()
                except Exception:  # one connection's failure: the others' timers go on
                    log.exception("a connection's timer failed: it is closed")
                    conn.transport.abort()


class _TLSListener:
    """Accepts connections for TLS itself, so that one counts from its accept: a
    listener made with ``create_server(ssl=)`` hands a connection over only once its
    handshake is done, and gives the handshake 60 s, so clients that connect and never
    complete one would hold sockets beyond ``max_connections``.  Here a connection over
    the bound is closed before its handshake, and the handshake gets the head's
    ``header_timeout``."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.handshakes: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        sock.listen(_BACKLOG)
        self.task = server.loop.create_task(self._accept())

    async def _accept(self) -> None:
        server, loop = self.server, self.server.loop
        failures = 0  # accepts failed in a row: said once, not ten times a second
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except Exception as exc:  # (EMFILE...): the next accept may do; never stop
                if not failures:
                    log.warning("accept failed: %s (retrying every 0.1 s)", exc)
                failures += 1
                await asyncio.sleep(0.1)
                continue
            if failures:
                log.warning("accepting again, after %d failed accepts", failures)
                failures = 0
            if (
                len(server.connections) + len(self.handshakes) >= server.options.max_connections
                or server.stopping
            ):
                conn.close()
                continue
            task = loop.create_task(self._secure(conn))
            self.handshakes.add(task)
            task.add_done_callback(self.handshakes.discard)
            server.track(task)

    async def _secure(self, conn: socket.socket) -> None:
        try:
            await self.server.loop.connect_accepted_socket(
                lambda: H1Connection(self.server),
                conn,
                ssl=self.server.ssl,
                ssl_handshake_timeout=self.server.options.header_timeout,
            )
        except Exception as exc:  # this connection's alone: a handshake failed or timed out
            log.debug("TLS handshake failed: %r", exc)
            conn.close()

    def close(self) -> None:
        """The stop: no more accepts, and the listening socket closed once the accept
        under way is withdrawn (new connections are refused, as when an
        ``asyncio.Server`` closes); the handshakes under way are cut, as idle
        connections are (a connection made now would be closed at once)."""
        self.task.add_done_callback(lambda _: self.sock.close())
        self.task.cancel()
        for task in self.handshakes:
            task.cancel()


class _Lifespan:
    """ASGI lifespan: startup before the first connection, shutdown after the last."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.unsupported = False

    async def startup(self) -> bool:
        scope = {"type": "lifespan", "asgi": self.server.asgi, "state": self.server.state}
        self.task = asyncio.get_running_loop().create_task(self._main(scope))
        await self.queue.put({"type": "lifespan.startup"})
        answer = await self._answer()
        if answer is None:
            return True
        if answer["type"] == "lifespan.startup.failed":
            log.error("the app's startup failed: %s", answer.get("message") or "no reason given")
            return False
        return True

    async def shutdown(self) -> None:
        if self.unsupported or self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        bound = max(self.server.options.shutdown_timeout, LIFESPAN_SHUTDOWN)
        try:
            answer = await asyncio.wait_for(self._answer(), bound)
        except TimeoutError:
            log.error("the app's shutdown took over %ss", bound)
            self.task.cancel()
            return
        if answer is not None and answer["type"] == "lifespan.shutdown.failed":
            log.error("the app's shutdown failed: %s", answer.get("message") or "no reason given")

    async def _answer(self) -> dict[str, Any] | None:
        """The app's next lifespan message; None when it gave up on the lifespan."""
        assert self.task is not None
        get = asyncio.ensure_future(self.answers.get())
        await asyncio.wait([get, self.task], return_when=asyncio.FIRST_COMPLETED)
        if get.done():
            return get.result()
        get.cancel()
        if self.unsupported:
            return None
        return {"type": "lifespan.startup.failed", "message": "the lifespan ended"}

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.server.app(scope, self.queue.get, self.answers.put)
        except BaseException as exc:
            if (
                self.answers.empty()
                and self.server.options.lifespan == "auto"
                and (not self.server.started)
            ):
                log.debug("the app does no lifespan (%s)", exc)
                self.unsupported = True
                return
            if isinstance(exc, asyncio.CancelledError):
                raise
            await self.answers.put(
                {"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"}
            )
            log.error("the app's lifespan failed", exc_info=exc)
        else:
            if not self.server.started:
                self.unsupported = self.server.options.lifespan == "auto"
