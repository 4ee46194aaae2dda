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

What handlers use, one request at a time::

    async with relay.admit(receive) as slot:  # a slot, or the queue: 503, 499
        ...                                   # under the deadline: 504
        await slot.to_thread(fn)              # a ``def`` in the pool, keeping the slot
    # released here, unless the block took the release: ``release = slot.hand_over()``

    with relay.admit_sync(environ) as slot:   # the same from a thread (WSGI), where
        return slot.run(fn, is_async)         # ``run`` waits at most the timeout: 504

``acquire`` / ``acquire_sync`` / ``release`` are the steps underneath, for a caller whose
slot outlives any block (each ``acquire`` paired with one ``release``); ``loop`` is the
relay's own event loop thread, for running coroutines from threads.
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
from typing import Any, Protocol, TypeVar

from coyote_mw.errors import ClientDisconnected, HandlerTimeout, RelaySaturated
from coyote_mw.http.types import Message, Receive

_running_loop = asyncio.get_running_loop
_current_task = asyncio.current_task

__all__ = [
    "PEEK_LIMIT",
    "PEEK_MESSAGES",
    "POLL",
    "Admission",
    "Relay",
    "Sockets",
    "SyncAdmission",
    "Watchdog",
    "Watched",
]

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


class Watched(Protocol):
    """What a watchdog holds (``Relay.watchdog``): ``cancel()`` is called, and ``fired``
    set, once the loop's time is past ``deadline``."""

    deadline: float
    fired: bool

    def cancel(self) -> Any: ...


class _Watch:
    """One handler under a watchdog (``Relay.watch``); ``end()`` it when the handler is
    done."""

    __slots__ = ("deadline", "dog", "fired", "task")

    dog: Watchdog
    task: asyncio.Task[Any]
    deadline: float
    """When the watchdog cancels the task, in its loop's time."""
    fired: bool
    """Whether it did (the deadline passed)."""

    def end(self) -> None:
        self.dog.running.discard(self)

    def cancel(self) -> None:
        self.task.cancel()


class Watchdog:
    """Cancels handlers past their deadline: one timer per loop, not one per request.

    It holds only the handlers running on its loop (at most ``concurrency``), checks
    them every ``tick`` seconds while any run, and so cancels a handler at most ``tick``
    seconds after its deadline.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.running: set[Watched] = set()
        self.armed = False

    def add(self, w: Watched) -> None:
        self.running.add(w)
        if not self.armed:
            self.armed = True
            self.loop.call_later(self.tick, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        for w in [w for w in self.running if w.deadline <= now]:
            self.running.discard(w)
            w.fired = True
            try:
                w.cancel()
            except Exception:  # one that fails must not stop the others' deadlines
                logger.exception("the watchdog could not end %r", w)
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
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
            weakref.WeakKeyDictionary()
        )
        self._last_watchdog: Watchdog | None = None
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

    # -- admission ------------------------------------------------------------------

    def admit(self, receive: Any = None) -> Admission:
        """One request's slot, from admission to release: ``async with`` it
        (``Admission``).  Given the request's ``receive``, a client that leaves while
        the request is queued takes it out of the queue."""
        return Admission(self, receive)

    def admit_sync(self, environ: Mapping[str, Any] | None = None) -> SyncAdmission:
        """``admit`` for a thread that is not an event loop (WSGI): ``with`` it
        (``SyncAdmission``).  Given the WSGI ``environ``, a client that leaves while the
        request is queued takes it out of the queue."""
        return SyncAdmission(self, environ)

    async def acquire(self, receive: Any = None) -> Any:
        """Take a slot, waiting in the queue if need be (``RelaySaturated``); pair it
        with one ``release()``.

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

    def acquire_sync(self, environ: Mapping[str, Any] | None = None) -> None:
        """Take a slot, waiting in the queue if need be (``RelaySaturated``); pair it
        with one ``release()``.  Given the WSGI environ, a client that leaves meanwhile
        takes its request out of the queue (``ClientDisconnected``) where the server
        exposes the client's socket."""
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
        async with self.admit() as slot:
            if is_async:
                return await fn()
            return await slot.to_thread(fn)

    async def _run_acquired(self, fn: Callable[[], Any], is_async: bool) -> Any:
        """A cast's run, its slot taken already."""
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
        ``timed_out(watch)`` instead.  ``end()`` the watch when done.  (``admit`` does
        all this for a block.)
        """
        w = _Watch()
        self._watch(w)
        return w

    def _watch(self, w: _Watch) -> None:
        task = asyncio.current_task()  # RuntimeError off asyncio (handlers.eventloop)
        assert task is not None
        loop = task.get_loop()
        dog = self._last_watchdog
        if dog is None or dog.loop is not loop:
            dog = self.watchdog(loop)
        w.dog, w.task, w.deadline, w.fired = dog, task, loop.time() + self.timeout, False
        dog.add(w)

    def timed_out(self, watch: _Watch) -> BaseException:
        """The watchdog cancelled the task: undo that cancellation, answer 504 instead -
        unless someone else cancelled it too, whose cancellation goes on."""
        if watch.task.uncancel() > 0:
            return asyncio.CancelledError()
        return HandlerTimeout(self.timeout)

    def watchdog(self, loop: asyncio.AbstractEventLoop) -> Watchdog:
        """The watchdog of ``loop``, for what runs under this relay's ``timeout`` without
        a task of its own (``Watched``): ``add`` it, and take it out of ``running``
        when it ends."""
        dog = self._last_watchdog
        if dog is not None and dog.loop is loop:
            return dog
        dog = self._watchdogs.get(loop)
        if dog is None:
            dog = self._watchdogs[loop] = Watchdog(loop, min(0.05, self.timeout / 10))
        self._last_watchdog = dog
        return dog

    def run_sync(
        self, fn: Callable[[], Any], is_async: bool, environ: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a handler from a thread that is not an event loop (WSGI, Coyote.call)
        within the bounds (``SyncAdmission.run``).  Given the WSGI ``environ``, a
        client that leaves while the request is queued takes it out of the queue."""
        with self.admit_sync(environ) as slot:
            return slot.run(fn, is_async)

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
        waiter = self._enter(loop or self.loop)

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

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The relay's own event loop, on a thread of its own started on first use
        (a topology's relay shares the default relay's): where ``async def`` handlers
        called from threads run, and in-process ASGI apps served under WSGI."""
        if self.loop_of is not None:
            return self.loop_of.loop
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
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

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


class Admission(_Watch):
    """One request's slot, from admission to release (``async with relay.admit()``).

    Entering takes a slot, or waits for one in the bounded queue: ``RelaySaturated``
    (503) when the queue is full or the wait lasts ``timeout``; ``ClientDisconnected``
    (499) when, given the request's ``receive``, the client leaves meanwhile.  The block
    then runs under the watchdog: past ``timeout`` (``deadline``) it is cancelled
    (``fired``), and leaving it raises ``HandlerTimeout`` (504) instead, whatever the
    block made of the cancel.  Leaving releases the slot, unless ``to_thread`` or
    ``hand_over`` passed it on.

    ``async with`` costs two coroutines; the busiest handlers spell it out instead,
    with ``enter`` / ``wait`` / ``leave``::

        slot = relay.admit(receive)
        if not slot.enter():
            await slot.wait()
        try:
            ...
        except BaseException as exc:
            instead = slot.leave(exc)
            if instead is None:
                raise
            raise instead from None
        slot.leave()
    """

    __slots__ = ("_releases", "receive", "relay")

    def __init__(self, relay: Relay, receive: Any) -> None:
        self.relay = relay
        self.receive = receive
        """The ``receive`` to use in the block: first what was read while queued."""
        self._releases = False

    async def __aenter__(self) -> Admission:
        if not self.enter():
            await self.wait()
        return self

    async def __aexit__(self, typ: type[BaseException] | None, exc: Any, tb: Any) -> None:
        instead = self.leave(exc if typ is not None else None)
        if instead is not None:
            raise instead from None

    def enter(self) -> bool:
        """Take a free slot and start the deadline: True; False when none is free
        (then ``await wait()``)."""
        relay = self.relay
        lock = relay._lock
        # nothing in between can raise: no ``with`` (it costs as much again)
        lock.acquire()
        if relay._active >= relay.concurrency or relay._waiting:
            lock.release()
            return False
        relay._active += 1
        lock.release()
        # Relay._watch, inlined: this runs for every request.  The loop is asked for
        # once (under Python 3.11 each asking is a getpid() system call), and the
        # handler reads it from ``dog.loop`` rather than asking again.
        try:
            loop = _running_loop()
        except RuntimeError:  # no asyncio loop: a trio server (handlers.eventloop)
            relay.release()
            raise
        task = _current_task(loop)
        assert task is not None
        dog = relay._last_watchdog
        if dog is None or dog.loop is not loop:
            dog = relay.watchdog(loop)
        self.dog = dog
        self.task = task
        self.deadline = loop.time() + relay.timeout
        self.fired = False
        dog.running.add(self)
        if not dog.armed:
            dog.add(self)  # arms its timer (adding to a set twice is harmless)
        self._releases = True
        return True

    async def wait(self) -> None:
        """Wait in the queue for a slot, then start the deadline."""
        relay = self.relay
        self.receive = await relay.acquire(self.receive)
        try:
            relay._watch(self)
        except BaseException:
            relay.release()
            raise
        self._releases = True

    def leave(self, exc: BaseException | None = None) -> BaseException | None:
        """End the deadline and release the slot (unless it was passed on).  Given the
        exception that ended the block: what to raise instead (``HandlerTimeout``, when
        the deadline's cancel caused it), or None."""
        self.dog.running.discard(self)
        if self._releases:
            self._releases = False
            self.relay.release()
        if self.fired:
            if exc is None:
                self.task.uncancel()  # the block swallowed the cancel: it was ours
            elif isinstance(exc, Exception | asyncio.CancelledError):
                return self.relay.timed_out(self)
        return None

    def unwatch(self) -> None:
        """No deadline for the rest of the block: a response streaming back, under
        timeouts of its own."""
        self.dog.running.discard(self)

    async def to_thread(self, fn: Callable[[], T]) -> T:
        """Run a ``def`` in the relay's thread pool.  The slot goes with the thread,
        which keeps it until it returns, even past the deadline: the bound on threads
        holds."""
        assert self._releases, "to_thread() takes the slot of an entered admission"
        self._releases = False
        future = self.relay._submit(fn)  # it releases the slot if it cannot run fn
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            if self.fired:
                future.cancel()  # only helps if it has not started yet
            raise

    def hand_over(self) -> Callable[[], None]:
        """Keep the slot past the block (a task, a streamed body): call what this
        returns once, when done."""
        assert self._releases, "hand_over() takes the slot of an entered admission"
        self._releases = False
        return self.relay.release


class SyncAdmission:
    """One request's slot from a thread that is not an event loop (``with
    relay.admit_sync()``, WSGI).

    Entering takes a slot, or waits for one in the bounded queue (``RelaySaturated``),
    watching the client's socket where the server exposes it (``ClientDisconnected``).
    A thread has no watchdog: ``run`` waits at most ``timeout`` (``HandlerTimeout``).
    Leaving releases the slot, unless ``run`` or ``hand_over`` passed it on.
    """

    __slots__ = ("_releases", "environ", "relay")

    def __init__(self, relay: Relay, environ: Mapping[str, Any] | None) -> None:
        self.relay = relay
        self.environ = environ
        self._releases = False

    def __enter__(self) -> SyncAdmission:
        self.relay.acquire_sync(self.environ)
        self._releases = True
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if self._releases:
            self._releases = False
            self.relay.release()

    def run(self, fn: Callable[[], Any], is_async: bool) -> Any:
        """Run a handler in the relay's thread pool (``def``) or on its loop (``async
        def``), which keeps the slot until it ends, and wait at most ``timeout``.

        One deadline decides, the waiting thread's: at ``timeout`` it answers 504 and
        only then cancels an ``async def`` handler.  (A second timer on the handler's
        loop would race it: a handler that turns its cancellation into an error could
        beat the thread to it and be answered 502.)
        """
        assert self._releases, "run() takes the slot of an entered admission"
        relay = self.relay
        if is_async:
            future = relay.submit_coroutine(relay._held(fn))
            self._releases = False
        else:
            self._releases = False
            future = relay._submit(fn)  # it releases the slot if it cannot run fn
        try:
            return future.result(relay.timeout)
        except FutureTimeout:
            future.cancel()
            raise HandlerTimeout(relay.timeout) from None

    def hand_over(self) -> Callable[[], None]:
        """Keep the slot past the block (a streamed body): call what this returns
        once, when done."""
        assert self._releases, "hand_over() takes the slot of an entered admission"
        self._releases = False
        return self.relay.release
