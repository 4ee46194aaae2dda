"""The relay: bounded concurrency and a bounded queue between requests and handlers.

Coyote's relay is a GenStage producer with ``max_demand`` 50: at most that many
requests are with handlers at once, the rest wait.  Here:

* ``concurrency`` slots (default 50).  A request takes a slot for as long as its
  handler runs; a ``def`` handler keeps its slot until its thread returns, even
  after its caller was answered 504, so the bound on threads holds.
* ``queue`` waiting requests beyond that (default 100).  One more is refused at
  once with ``RelaySaturated`` (503 + Retry-After).  A request that waits ``timeout``
  seconds without getting a slot is refused the same way.
* ``timeout`` seconds a handler may take (default 30) before ``HandlerTimeout`` (504).

A client that leaves while its request waits for a slot takes the request out of the
queue (HAProxy's ``abortonclose``): it never reaches a handler, and the requests behind
it move up (``ClientDisconnected``, logged as 499).  Under ASGI the relay listens on the
request's ``receive`` while it waits: what it reads meanwhile (at most ``PEEK_LIMIT``
bytes of body in ``PEEK_MESSAGES`` messages; past that it stops listening) is handed
to the handler unchanged.
Under WSGI the waiting thread looks at the client's socket, where the server exposes
it (``gunicorn.socket``, ``werkzeug.socket``), every ``POLL`` seconds: a socket that
reads as closed (end of stream, or reset) means the client left; unread request bytes
mean it may still be there.  A client that only half-closes counts as gone, as uvicorn
counts it.

Which thread runs user code: ``async def`` handlers run on the caller's event loop
(ASGI) or on the relay's own loop thread (WSGI and ``Coyote.call``); ``def``
handlers run in the relay's thread pool of ``concurrency`` threads.  A relay's slots
are one pool shared by ASGI, WSGI, calls and casts; each topology has a relay of its
own (``Coyote.relay_for``), and those share the default relay's loop thread.

Under WSGI one deadline decides: the waiting thread's (``run_sync``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from coyote_mw.errors import ClientDisconnected, HandlerTimeout, RelaySaturated
from coyote_mw.http.types import Message, Receive

__all__ = ["PEEK_LIMIT", "PEEK_MESSAGES", "POLL", "Relay", "Sockets"]

logger = logging.getLogger("coyote_mw.relay")

T = TypeVar("T")

PEEK_LIMIT = 64 * 1024
"""Bytes of request body the relay reads (and holds for the handler) while the request
waits for a slot under ASGI, listening for the client's leaving."""

PEEK_MESSAGES = 64
"""... and at most this many messages."""

POLL = 0.1
"""Seconds between two looks at a waiting WSGI request's client socket."""


class _Replay:
    """The request's ``receive`` for a handler: first what was read while it waited."""

    __slots__ = ("held", "pending", "receive")

    def __init__(
        self, receive: Receive, held: deque[Message], pending: asyncio.Task[Any] | None
    ) -> None:
        self.receive, self.held, self.pending = receive, held, pending

    async def __call__(self) -> Message:
        if self.held:
            return self.held.popleft()
        pending, self.pending = self.pending, None
        if pending is not None:
            return await pending  # type: ignore[no-any-return]
        return await self.receive()


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A listening ``receive()`` nobody awaited in the end: its outcome is not an error."""
    if not task.cancelled():
        task.exception()


def _client_gone(sock: Any) -> bool:
    """Whether a WSGI server's client socket reads as closed (without waiting)."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if not poller.poll(0):
            return False  # nothing to read: still connected, waiting for its answer
        return not sock.recv(1, socket.MSG_PEEK)  # end of stream; bytes: maybe alive
    except (BlockingIOError, InterruptedError, ValueError, AttributeError):
        return False  # a TLS socket (no peeking), or no socket at all: cannot tell
    except OSError:
        return True  # reset


class _Waiter:
    __slots__ = ("event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.event = None if loop else threading.Event()
        self.granted = False

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        else:
            assert self.event is not None
            self.event.set()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Watch:
    """One handler under a watchdog; ``end()`` it when the handler is done."""

    __slots__ = ("deadline", "dog", "fired", "task")

    def __init__(self, dog: _Watchdog, task: asyncio.Task[Any], deadline: float) -> None:
        self.dog = dog
        self.task = task
        self.deadline = deadline
        self.fired = False

    def end(self) -> None:
        self.dog.running.discard(self)


class _Watchdog:
    """Cancels handlers past their deadline: one timer per loop, not one per request.

    It holds only the handlers running on its loop (at most ``concurrency``), checks
    them every ``tick`` seconds while any run, and so cancels a handler at most ``tick``
    seconds after its deadline.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.running: set[_Watch] = set()
        self.armed = False

    def watch(self, task: asyncio.Task[Any], deadline: float) -> _Watch:
        w = _Watch(self, task, deadline)
        self.running.add(w)
        if not self.armed:
            self.armed = True
            self.loop.call_later(self.tick, self._check)
        return w

    def _check(self) -> None:
        now = self.loop.time()
        for w in [w for w in self.running if w.deadline <= now]:
            self.running.discard(w)
            w.fired = True
            w.task.cancel()
        if self.running:
            self.loop.call_later(self.tick, self._check)
        else:
            self.armed = False


class Sockets:
    """A bound on relayed WebSockets (``max_websockets``), one per leader.

    A WebSocket lives for hours, not a request's seconds: it takes no relay slot (a few
    would starve every request of a topology) but one of these; over the bound the
    handshake is refused, as HAProxy's ``maxconn`` and Envoy's circuit breakers refuse
    an upgraded connection.
    """

    __slots__ = ("_lock", "limit", "open")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("max_websockets must be 0 or more")
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One more, if the bound allows it (then ``give_back()`` it when it closes)."""
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


class Relay:
    def __init__(
        self,
        concurrency: int = 50,
        queue: int = 100,
        timeout: float = 30.0,
        *,
        loop_of: Relay | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if queue < 0:
            raise ValueError("queue must be 0 or more")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.concurrency = concurrency
        self.queue = queue
        self.timeout = timeout
        self.retry_after = 1  # seconds: a queue drains in about that under load
        self._lock = threading.Lock()
        self._active = 0
        self._waiting: deque[_Waiter] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
            weakref.WeakKeyDictionary()
        )
        self._last_watchdog: _Watchdog | None = None
        self.rejected = 0
        self.saturated = 0  # requests refused 503: the queue full, or no slot in time
        # a topology's relay runs async handlers called from threads on the default
        # relay's loop: one loop for every topology, so an app's lifespan and its
        # requests share it whichever topology serves them
        self.loop_of = loop_of

    # -- slots ------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def has_room(self) -> bool:
        """Whether one more request would be accepted now (a slot or a queue place)."""
        return self._active < self.concurrency or len(self._waiting) < self.queue

    def _enter(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """Take a slot now (None), join the queue (a waiter) or raise RelaySaturated."""
        with self._lock:
            if self._active < self.concurrency and not self._waiting:
                self._active += 1
                return None
            if len(self._waiting) >= self.queue:
                self.rejected += 1
                self.saturated += 1
                raise RelaySaturated(self.retry_after)
            waiter = _Waiter(loop)
            self._waiting.append(waiter)
            return waiter

    def _give_up(self, waiter: _Waiter, saturated: bool = False) -> None:
        """A waiter stops waiting (``saturated``: to be answered 503); a slot granted to
        it meanwhile is passed on."""
        with self._lock:
            if saturated:
                self.saturated += 1
            if not waiter.granted:
                self._waiting.remove(waiter)
                self.rejected += 1
                return
        self.release()

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                waiter = self._waiting.popleft()
                waiter.granted = True  # the slot passes straight to it
                waiter.wake()
                return
            self._active -= 1

    def try_enter(self) -> bool:
        """Take a free slot without waiting: True, or False when one must be awaited."""
        with self._lock:
            if self._active < self.concurrency and not self._waiting:
                self._active += 1
                return True
            return False

    async def _acquire(self, receive: Any = None) -> Any:
        """Take a slot, waiting in the queue if need be (``RelaySaturated``).

        Given the request's ``receive``, a client that leaves meanwhile takes its
        request out of the queue (``ClientDisconnected``); the ``receive`` to use from
        then on is returned (it replays what was read while waiting).
        """
        waiter = self._enter(asyncio.get_running_loop())
        if waiter is None:
            return receive
        assert waiter.future is not None
        if receive is not None:
            return await self._wait_listening(waiter, receive)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.timeout)
        except TimeoutError:
            self._give_up(waiter, saturated=True)
            raise RelaySaturated(self.retry_after) from None
        except asyncio.CancelledError:
            self._give_up(waiter)
            raise
        return None

    async def _wait_listening(self, waiter: _Waiter, receive: Receive) -> Any:
        assert waiter.future is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        held: deque[Message] = deque()
        size = 0
        ended = False  # the last body message was held
        listening: asyncio.Task[Any] | None = asyncio.ensure_future(receive())
        gave_up = False
        try:
            while True:
                waits: set[asyncio.Future[Any]] = {waiter.future}
                if listening is not None:
                    waits.add(listening)
                remaining = deadline - loop.time()
                done: set[asyncio.Future[Any]] = set()
                if remaining > 0:
                    done, _ = await asyncio.wait(
                        waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                if listening is not None and listening in done:
                    heard, listening = listening, None
                    message = heard.result()
                    if message["type"] == "http.disconnect":
                        gave_up = True
                        self._give_up(waiter)
                        raise ClientDisconnected("the client left while its request was queued")
                    held.append(message)
                    size += len(message.get("body", b""))
                    # After the whole body only a disconnect should come: anything else
                    # (a receive that repeats its last message) ends the listening, as
                    # does a body past PEEK_LIMIT bytes or PEEK_MESSAGES messages.
                    if ended:
                        pass
                    elif not message.get("more_body", False):
                        ended = True
                        listening = asyncio.ensure_future(receive())
                    elif size < PEEK_LIMIT and len(held) < PEEK_MESSAGES:
                        listening = asyncio.ensure_future(receive())
                    continue
                if waiter.future.done():
                    if listening is not None:
                        listening.add_done_callback(_retrieved)
                    return _Replay(receive, held, listening)
                if not done:
                    gave_up = True
                    self._give_up(waiter, saturated=True)
                    raise RelaySaturated(self.retry_after)
        except BaseException:
            if listening is not None:
                listening.cancel()
                listening.add_done_callback(_retrieved)
            if not gave_up:
                self._give_up(waiter)  # a slot granted meanwhile is passed on
            raise

    def _acquire_sync(self, environ: Mapping[str, Any] | None = None) -> None:
        """Take a slot, waiting in the queue if need be (``RelaySaturated``); given the
        WSGI environ, a client that leaves meanwhile takes its request out of the queue
        (``ClientDisconnected``) where the server exposes the client's socket."""
        waiter = self._enter(None)
        if waiter is None:
            return
        assert waiter.event is not None
        sock = None
        if environ is not None:
            sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        if sock is None:
            if not waiter.event.wait(self.timeout):
                self._give_up(waiter, saturated=True)
                raise RelaySaturated(self.retry_after)
            return
        deadline = time.monotonic() + self.timeout
        while not waiter.event.wait(max(0.0, min(POLL, deadline - time.monotonic()))):
            if _client_gone(sock):
                self._give_up(waiter)
                raise ClientDisconnected("the client left while its request was queued")
            if time.monotonic() >= deadline:
                self._give_up(waiter, saturated=True)
                raise RelaySaturated(self.retry_after)

    # -- running handlers ----------------------------------------------------------

    async def run(self, fn: Callable[[], Any], is_async: bool) -> Any:
        """Run a handler on the caller's event loop (ASGI) within the bounds."""
        if not is_async:
            await self._acquire()
            return await self._run_acquired(fn, False)
        if not self.try_enter():
            await self._acquire()
        watch = self.watch()
        try:
            return await fn()
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            raise self.timed_out(watch) from None
        except Exception:
            if watch.fired:  # the handler turned the watchdog's cancel into an error
                raise self.timed_out(watch) from None
            raise
        finally:
            watch.end()
            self.release()

    async def _run_acquired(self, fn: Callable[[], Any], is_async: bool) -> Any:
        watch = self.watch()
        future = None
        try:
            if is_async:
                return await fn()
            future = self._submit(fn)
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            if future is not None:
                future.cancel()  # only helps if it has not started yet
            raise self.timed_out(watch) from None
        finally:
            watch.end()
            if future is None:
                self.release()  # a thread releases its own slot when it returns

    def watch(self) -> _Watch:
        """Put the current task under the watchdog: cancelled past ``timeout``.

        A ``CancelledError`` with ``watch.fired`` set is the watchdog's: raise
        ``timed_out(watch)`` instead.  ``end()`` the watch when done.  Synchronous, so
        the hot paths need no context manager.
        """
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        dog = self._last_watchdog
        if dog is None or dog.loop is not loop:
            dog = self._watchdog(loop)
        return dog.watch(task, loop.time() + self.timeout)

    def timed_out(self, watch: _Watch) -> BaseException:
        """The watchdog cancelled the task: undo that cancellation, answer 504 instead -
        unless someone else cancelled it too, whose cancellation goes on."""
        if watch.task.uncancel() > 0:
            return asyncio.CancelledError()
        return HandlerTimeout(self.timeout)

    def _watchdog(self, loop: asyncio.AbstractEventLoop) -> _Watchdog:
        dog = self._last_watchdog
        if dog is not None and dog.loop is loop:
            return dog
        dog = self._watchdogs.get(loop)
        if dog is None:
            dog = self._watchdogs[loop] = _Watchdog(loop, min(0.05, self.timeout / 10))
        self._last_watchdog = dog
        return dog

    def run_sync(
        self, fn: Callable[[], Any], is_async: bool, environ: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a handler from a thread that is not an event loop (WSGI, Coyote.call).

        One deadline decides, the waiting thread's: at ``timeout`` it answers 504 and
        only then cancels an ``async def`` handler.  (A second timer on the handler's
        loop would race it: a handler that turns its cancellation into an error could
        beat the thread to it and be answered 502.)  Given the WSGI ``environ``, a
        client that leaves while the request is queued takes it out of the queue.
        """
        self._acquire_sync(environ)
        future = self.submit_coroutine(self._held(fn)) if is_async else self._submit(fn)
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            future.cancel()
            raise HandlerTimeout(self.timeout) from None

    async def _held(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """An ``async def`` handler run for a thread, holding its slot until it ends."""
        try:
            return await fn()
        except Exception as exc:
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                raise
            # cancelled past the deadline (the caller was answered 504): nobody waits
            logger.warning("handler failed after its timeout: %r", exc)
            return None
        finally:
            self.release()

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in the pool, holding the slot already taken until it returns."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.concurrency, thread_name_prefix="coyote-relay"
                    )
        ctx = contextvars.copy_context()
        try:
            future = self._executor.submit(ctx.run, fn)
        except RuntimeError:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        return future

    # -- casts: fire and forget, same bounds ---------------------------------------

    def cast(
        self, fn: Callable[[], Any], is_async: bool, on_error: Callable[[BaseException], None]
    ) -> None:
        """Accept a handler run for later, or raise ``RelaySaturated`` at once.

        Call it from an event loop (the task runs there) or from any thread (the
        task runs on the relay's own loop).
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        waiter = self._enter(loop or self._ensure_loop())

        async def later() -> None:
            try:
                if waiter is not None:
                    assert waiter.future is not None
                    try:
                        await asyncio.wait_for(asyncio.shield(waiter.future), self.timeout)
                    except (TimeoutError, asyncio.CancelledError):
                        self._give_up(waiter, saturated=True)
                        raise RelaySaturated(self.retry_after) from None
                await self._run_acquired(fn, is_async)
            except BaseException as exc:  # logged, never raised: nobody is waiting
                on_error(exc)

        if loop is not None:
            task = loop.create_task(later())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            self.submit_coroutine(later())

    # -- the relay's own event loop, for async handlers called from threads ----------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop_of is not None:
            return self.loop_of._ensure_loop()
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    thread = threading.Thread(
                        target=loop.run_forever, name="coyote-relay-loop", daemon=True
                    )
                    thread.start()
                    self._loop, self._loop_thread = loop, thread
        return self._loop

    def submit_coroutine(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for casts accepted on this loop to finish (host shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout or self.timeout)

    def close(self) -> None:
        """Stop the relay's loop thread and thread pool (pending handlers finish)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            loop.close()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=False)
