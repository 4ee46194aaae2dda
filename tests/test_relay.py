"""The relay's bounds: concurrency, queue (503 + Retry-After) and timeout (504)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, HandlerTimeout, RelaySaturated, Request, route
from coyote_mw.errors import ClientDisconnected
from coyote_mw.relay import Relay


class Gate(Client):
    """Handlers that block until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    @route("GET", "/wait")
    def wait(self, request: Request) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.entered.release()
        self.opened.wait(10)
        with self.lock:
            self.running -= 1
        return "through"

    @route("GET", "/sleep")
    async def sleep(self, request: Request) -> str:
        await asyncio.sleep(float(request.query.get("s", "10")))
        return "woke"

    @route("GET", "/swallow")
    async def swallow(self, request: Request) -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup went wrong") from None  # the cancel, turned
        return "woke"

    @route("GET", "/block")
    def block(self, request: Request) -> str:
        time.sleep(float(request.query.get("s", "10")))
        return "woke"


def test_full_queue_answers_503_with_retry_after_and_nothing_is_lost(serve: Any) -> None:
    coyote = Coyote(concurrency=2, queue=1, timeout=5)
    gate = Gate()
    coyote.register(gate)
    client = serve(coyote)
    results: list[Any] = []
    sender = threading.Thread(target=lambda: results.extend(client.gather(*[("GET", "/wait")] * 4)))
    sender.start()
    for _ in range(2):  # two handlers running...
        assert gate.entered.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while (coyote.relay.waiting, coyote.relay.rejected) != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert coyote.relay.waiting == 1  # ...one queued
    assert coyote.relay.rejected == 1  # ...and the fourth refused at once
    gate.opened.set()
    sender.join(10)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 200, 503]
    refused = next(r for r in results if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "Relay saturated", "retry_after": 1}
    assert gate.peak == 2
    assert (coyote.relay.active, coyote.relay.waiting) == (0, 0)
    coyote.close()


@pytest.mark.parametrize("path", ["/sleep?s=5", "/block?s=2", "/swallow"])
def test_slow_handler_answers_504(serve: Any, path: str) -> None:
    coyote = Coyote(timeout=0.3)
    coyote.register(Gate())
    started = time.monotonic()
    r = serve(coyote).get(path)
    assert r.status_code == 504
    assert r.json() == {"error": "Handler timeout", "timeout": 0.3}
    assert time.monotonic() - started < 1.9  # answered at the timeout, not when it woke
    coyote.close()


def test_under_wsgi_one_deadline_decides_a_handler_that_turns_its_cancel_into_an_error() -> None:
    # The race needs the handler's loop to get ahead of the waiting thread: a thread
    # that keeps the GIL busy makes that likely on every run, as a loaded host does.
    coyote = Coyote(timeout=0.02, access_log=False)
    coyote.register(Gate())
    client = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(1000))

    hog = threading.Thread(target=busy, daemon=True)
    hog.start()
    try:
        statuses = [client.get("/swallow").status_code for _ in range(40)]
    finally:
        stop.set()
        hog.join(5)
    assert statuses == [504] * 40
    deadline = time.monotonic() + 5  # each handler's slot comes back once it has ended
    while coyote.relay.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert coyote.relay.active == 0
    coyote.close()


def test_relay_slot_of_a_timed_out_thread_is_held_until_it_returns() -> None:
    relay = Relay(concurrency=1, queue=0, timeout=0.2)
    release = threading.Event()
    with pytest.raises(HandlerTimeout):
        relay.run_sync(lambda: release.wait(5), is_async=False)
    # the thread still runs: its slot is still taken
    with pytest.raises(RelaySaturated):
        relay.run_sync(lambda: "x", is_async=False)
    release.set()
    deadline = time.monotonic() + 5
    while relay.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.run_sync(lambda: "x", is_async=False) == "x"
    relay.close()


def test_waiting_longer_than_timeout_for_a_slot_is_503() -> None:
    relay = Relay(concurrency=1, queue=5, timeout=0.2)

    async def scenario() -> list[Any]:
        async def slow() -> str:
            await asyncio.sleep(0.15)
            return "slow"

        async def hog() -> str:
            await asyncio.sleep(0.19)
            return "hog"

        first = asyncio.ensure_future(relay.run(hog, True))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(relay.run(slow, True))
        return await asyncio.gather(first, second, return_exceptions=True)

    hog_result, slow_result = asyncio.run(scenario())
    assert hog_result == "hog"
    # waited ~0.18 s then ran 0.15 s: within its own timeout, so it succeeds
    assert slow_result == "slow"
    assert relay.active == 0


def test_async_handlers_run_under_wsgi_and_sync_handlers_off_the_loop_under_asgi(
    serve: Any,
) -> None:
    seen: dict[str, Any] = {}

    class Where(Client):
        @route("GET", "/sync")
        def sync(self, request: Request) -> str:
            try:
                asyncio.get_running_loop()
                seen["sync"] = "on a loop"
            except RuntimeError:
                seen["sync"] = threading.current_thread().name
            return "ok"

        @route("GET", "/async")
        async def asynchronous(self, request: Request) -> str:
            seen["async"] = threading.current_thread().name
            return "ok"

    coyote = Coyote()
    coyote.register(Where())
    client = serve(coyote)
    assert client.get("/sync").text == "ok"
    assert client.get("/async").text == "ok"
    assert seen["sync"].startswith("coyote-relay")
    coyote.close()


def test_casts_share_the_bounds_and_are_refused_when_saturated() -> None:
    coyote = Coyote(concurrency=1, queue=0, timeout=5)
    gate = Gate()
    coyote.register(gate)
    coyote.cast("GET", "/wait")
    assert gate.entered.acquire(timeout=5)
    with pytest.raises(RelaySaturated):
        coyote.cast("GET", "/wait")
    gate.opened.set()
    coyote.close()


def test_invalid_relay_settings_are_refused() -> None:
    for kwargs in ({"concurrency": 0}, {"queue": -1}, {"timeout": 0}):
        with pytest.raises(ValueError):
            Relay(**kwargs)  # type: ignore[arg-type]


def test_configure_changes_the_bounds_before_serving() -> None:
    coyote = Coyote()
    coyote.configure(concurrency=3, queue=7, timeout=2.5, max_body=10)
    assert (coyote.relay.concurrency, coyote.relay.queue, coyote.relay.timeout) == (3, 7, 2.5)
    assert coyote.max_body == 10
    with pytest.raises(ValueError):
        coyote.configure(concurrency=0)
    coyote.close()


def test_only_the_watchdogs_own_cancel_becomes_a_504() -> None:
    relay = Relay(timeout=5)

    async def victim() -> None:
        watch = relay.watch()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            watch.fired = True  # as the watchdog marks what it cancels
            raise relay.timed_out(watch) from None
        finally:
            watch.end()

    async def cancelled(times: int) -> BaseException:
        task = asyncio.ensure_future(victim())
        await asyncio.sleep(0)
        for _ in range(times):  # the watchdog's cancel, and maybe somebody else's
            task.cancel()
        try:
            await task
        except BaseException as exc:  # what it ended with is the point
            return exc
        raise AssertionError("not cancelled")

    assert isinstance(asyncio.run(cancelled(1)), HandlerTimeout)
    assert isinstance(asyncio.run(cancelled(2)), asyncio.CancelledError)


# -- the admission API handlers use: Relay.admit / Relay.admit_sync ---------------------


def test_an_admission_holds_a_slot_for_its_block_and_gives_it_back() -> None:
    relay = Relay(concurrency=2, queue=0, timeout=5)

    async def scenario() -> list[int]:
        seen = []
        async with relay.admit() as slot:
            seen.append(relay.active)
            async with relay.admit():
                seen.append(relay.active)
            seen.append(relay.active)
            assert slot.deadline > asyncio.get_running_loop().time()
        seen.append(relay.active)
        return seen

    assert asyncio.run(scenario()) == [1, 2, 1, 0]


def test_an_admission_past_the_slots_and_the_queue_is_refused_503() -> None:
    relay = Relay(concurrency=1, queue=0, timeout=5)

    async def scenario() -> None:
        async with relay.admit():
            with pytest.raises(RelaySaturated):
                async with relay.admit():
                    raise AssertionError("admitted past the bounds")

    asyncio.run(scenario())
    assert (relay.rejected, relay.active) == (1, 0)
    with relay.admit_sync(), pytest.raises(RelaySaturated), relay.admit_sync():
        raise AssertionError("admitted past the bounds")
    assert (relay.rejected, relay.active) == (2, 0)


def test_a_queued_admission_enters_when_the_slot_comes_back() -> None:
    relay = Relay(concurrency=1, queue=1, timeout=5)

    async def scenario() -> list[str]:
        order = []

        async def second() -> None:
            async with relay.admit():
                order.append("second in")

        async with relay.admit():
            waiting = asyncio.ensure_future(second())
            while not relay.waiting:
                await asyncio.sleep(0.01)
            order.append("first out")
        await waiting
        return order

    assert asyncio.run(scenario()) == ["first out", "second in"]
    assert (relay.active, relay.waiting, relay.rejected) == (0, 0, 0)


@pytest.mark.parametrize("turned", [False, True], ids=["cancelled", "cancel turned into an error"])
def test_an_admission_past_its_deadline_is_504_and_gives_its_slot_back(turned: bool) -> None:
    relay = Relay(concurrency=1, queue=0, timeout=0.1)

    async def scenario() -> bool:
        with pytest.raises(HandlerTimeout):
            async with relay.admit():
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    if turned:
                        raise RuntimeError("cleanup went wrong") from None
                    raise
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling() == 0  # the deadline's cancel was taken back

    assert asyncio.run(scenario())
    assert relay.active == 0


def test_a_client_that_leaves_while_queued_leaves_the_admission_queue() -> None:
    relay = Relay(concurrency=1, queue=1, timeout=5)

    async def scenario() -> list[str]:
        order = []
        left = asyncio.Event()

        async def leaving() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        async def queued() -> None:
            async with relay.admit(leaving):
                order.append("ran")  # never: its client left

        async with relay.admit():
            waiting = asyncio.ensure_future(queued())
            while not relay.waiting:
                await asyncio.sleep(0.01)
            left.set()
            with pytest.raises(ClientDisconnected):
                await waiting
            order.append(f"waiting {relay.waiting}")
        return order

    assert asyncio.run(scenario()) == ["waiting 0"]
    assert relay.active == 0


def test_a_queued_admission_replays_what_it_read_while_waiting() -> None:
    relay = Relay(concurrency=1, queue=1, timeout=5)
    body = {"type": "http.request", "body": b"payload", "more_body": False}

    async def scenario() -> dict[str, Any]:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect: the client stays
            sent = True
            return body

        async def queued() -> dict[str, Any]:
            async with relay.admit(receive) as slot:
                return await slot.receive()  # type: ignore[no-any-return]

        async with relay.admit():
            waiting = asyncio.ensure_future(queued())
            while not sent:
                await asyncio.sleep(0.01)
        return await waiting

    assert asyncio.run(scenario()) == body
    assert relay.active == 0


def test_a_wsgi_client_that_leaves_while_queued_leaves_the_admission_queue() -> None:
    relay = Relay(concurrency=1, queue=1, timeout=5)
    server_side, client_side = socket.socketpair()
    outcome: list[BaseException] = []

    def queued() -> None:
        try:
            with relay.admit_sync({"werkzeug.socket": server_side}):
                raise AssertionError("ran for a client that left")
        except ClientDisconnected as exc:
            outcome.append(exc)

    with relay.admit_sync():
        waiter = threading.Thread(target=queued)
        waiter.start()
        while not relay.waiting:
            time.sleep(0.01)
        client_side.close()
        waiter.join(5)
        assert relay.waiting == 0
    server_side.close()
    assert len(outcome) == 1
    assert relay.active == 0


def test_a_slot_handed_over_is_held_until_its_release_is_called() -> None:
    relay = Relay(concurrency=1, queue=0, timeout=5)
    with relay.admit_sync() as slot:
        release = slot.hand_over()
    assert relay.active == 1
    with pytest.raises(RelaySaturated):
        relay.run_sync(lambda: "x", is_async=False)
    release()
    assert relay.active == 0

    async def scenario() -> int:
        async with relay.admit() as slot:
            release = slot.hand_over()
        held = relay.active
        release()
        return held

    assert asyncio.run(scenario()) == 1
    assert relay.active == 0


def test_a_def_run_from_an_admission_keeps_its_slot_in_its_thread_past_the_504() -> None:
    relay = Relay(concurrency=1, queue=0, timeout=0.1)
    finish = threading.Event()

    async def scenario() -> None:
        with pytest.raises(HandlerTimeout):
            async with relay.admit() as slot:
                await slot.to_thread(lambda: finish.wait(5))
        assert relay.active == 1  # the thread runs on: its slot with it
        with pytest.raises(RelaySaturated):
            async with relay.admit():
                pass

    asyncio.run(scenario())
    finish.set()
    deadline = time.monotonic() + 5
    while relay.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert relay.active == 0
    relay.close()


def test_the_relays_loop_runs_on_a_thread_of_its_own_shared_by_topologies() -> None:
    relay = Relay()
    topology = Relay(loop_of=relay)
    assert topology.loop is relay.loop
    assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "ran"), relay.loop).result(5) == "ran"
    relay.close()


def test_an_admission_spelled_out_enters_waits_and_leaves_as_async_with_does() -> None:
    relay = Relay(concurrency=1, queue=1, timeout=0.1)

    async def queued() -> list[Any]:
        slot = relay.admit()
        assert not slot.enter()  # none free: it must wait
        await slot.wait()
        seen: list[Any] = [relay.active]
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError as exc:
            seen.append(slot.leave(exc))  # past the deadline: what to raise instead
        seen.append(relay.active)
        return seen

    async def scenario() -> list[Any]:
        first = relay.admit()
        assert first.enter()  # the free slot
        second = asyncio.ensure_future(queued())
        while not relay.waiting:
            await asyncio.sleep(0.01)
        assert first.leave() is None  # the slot passes on to the queued one
        return await second

    active, instead, after = asyncio.run(scenario())
    assert active == 1 and isinstance(instead, HandlerTimeout) and after == 0


def test_a_watched_one_that_fails_to_end_leaves_the_watchdog_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the direct relay's exchanges are watched without a task: their cancel() runs code
    relay = Relay(timeout=0.05)

    class Watched:
        def __init__(self, fails: bool) -> None:
            self.deadline, self.fired, self.fails, self.ended = 0.0, False, fails, False

        def cancel(self) -> None:
            self.ended = True
            if self.fails:
                raise RuntimeError("broken")

    async def main() -> list[Watched]:
        loop = asyncio.get_running_loop()
        dog = relay.watchdog(loop)
        first = [Watched(True), Watched(False)]
        for w in first:
            w.deadline = loop.time()
            dog.add(w)
        await asyncio.sleep(0.1)
        later = Watched(False)  # watched after the failure: still ended in time
        later.deadline = loop.time() + 0.01
        dog.add(later)
        await asyncio.sleep(0.2)
        return [*first, later]

    with caplog.at_level(logging.ERROR, logger="coyote_mw.relay"):
        watched = asyncio.run(main())
    assert [w.ended for w in watched] == [True, True, True]
    assert any("could not end" in r.getMessage() for r in caplog.records)
