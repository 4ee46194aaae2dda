"""Several worker processes serving one port: a small pre-fork supervisor.

``Supervisor(workers, serve).run()`` is the parent of ``coyote leader --workers N``.  It
forks the workers, each of which calls ``serve(ready)`` and exits with what it returns;
``serve`` brings its own server (the leader's is uvicorn) and calls ``ready()`` once
it accepts connections.  The listening socket is bound by the parent before it forks,
so every worker inherits it and the kernel hands each new connection to one of the
workers waiting in ``accept`` - nothing here knows what HTTP server runs on it.

* Start: the first worker alone, until it is ready; a first worker that dies before
  that (bad settings, a certificate that does not load) stops the supervisor, exit 1,
  having said why once rather than once per worker.  Then the others.
* A worker that dies is logged with its exit code and replaced.  One that dies within
  ``STABLE`` seconds of its start again and again is replaced after a delay that
  doubles each time, up to ``MAX_BACKOFF`` (a crash loop does not spin).
* SIGTERM or SIGINT: each worker gets SIGTERM once (its server stops accepting and
  finishes what is in flight), and whatever is still running ``graceful_timeout`` + 5 s
  later is killed.  A further signal is passed on as it came (a second SIGINT
  makes uvicorn stop waiting).  Exit 0.
* Workers stay in the parent's process group: a terminal's Ctrl-C (or ``kill`` of the
  group) reaches them too, and the parent's SIGTERM after it does not hurry them (uvicorn
  hurries only on a second SIGINT).  A worker whose parent is gone (killed with SIGKILL)
  stops itself within a second.
* Metrics: unless ``PROMETHEUS_MULTIPROC_DIR`` is set already, the parent makes a
  private temporary directory for prometheus-client's multiprocess mode before it
  forks, marks each dead worker dead (``coyote_mw.ops.metrics.mark_process_dead``: its
  live gauges dropped, its request counts folded into the directory's archive and its
  files removed) and removes the directory when it exits.  It holds a lock (``flock``)
  on the directory for its life, which its workers inherit; a supervisor killed with
  SIGKILL cannot remove its directory, so the next one to start removes every such
  directory whose lock no process holds any more (its own user's, in the same temporary
  folder; the lock also keeps systemd-tmpfiles from cleaning it).  Where the filesystem
  keeps no locks it serves without one, under a name no sweep reads.

Not uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``): its workers are
spawned from a pickled uvicorn ``Config`` (the parent imports uvicorn and the worker
model is uvicorn's), it restarts a worker that keeps dying at once, every time, logs no
exit code, has no place for ``mark_process_dead``, and waits for its workers without a
bound.  This is the part of gunicorn's arbiter a leader needs.

The parent imports no server, Redis client or prometheus-client (but for
``mark_process_dead``, when a worker has died): it forks from a process with one thread
and little state.  Logs go through ``logging`` (``coyote_mw.workers``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import select
import shutil
import signal
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MAX_BACKOFF", "MAX_WORKERS", "STABLE", "Supervisor"]

logger = logging.getLogger("coyote_mw.workers")

MAX_WORKERS = 64
STABLE = 10.0
"""Seconds a worker must have lived for its death not to count towards a crash loop."""
MAX_BACKOFF = 30.0
"""The longest wait before a worker that keeps dying young is started again."""
KILL_AFTER = 5.0
"""Seconds past ``graceful_timeout`` before the workers still running are killed."""

_STOP = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (*_STOP, signal.SIGCHLD)
_PID = struct.Struct("=i")


@dataclass
class _Worker:
    number: int
    pid: int
    started: float
    ready: bool = False


@dataclass
class _Slot:
    """One of the N places a worker fills; its crash streak survives its workers."""

    number: int
    worker: _Worker | None = None
    streak: int = 0  # deaths in a row, each within STABLE s of its start
    due: float = 0.0  # when to start the next worker (monotonic)
    waiting: bool = field(default=False)  # a restart is scheduled


class Supervisor:
    """Fork ``workers`` processes that each run ``serve(ready)``; keep them running
    until SIGTERM/SIGINT.  ``run()`` returns the parent's exit code."""

    def __init__(
        self,
        workers: int,
        serve: Callable[[Callable[[], None]], int],
        *,
        graceful_timeout: float = 30.0,
        metrics_dir: bool = False,
    ) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be from 1 to {MAX_WORKERS}")
        self.serve = serve
        self.graceful_timeout = graceful_timeout
        self.metrics_dir = metrics_dir
        self.slots = [_Slot(i + 1) for i in range(workers)]
        self._signals: list[int] = []
        self._own_dir: str | None = None
        self._lock_fd: int | None = None  # the lock held on _own_dir while it lives
        self._prometheus_dir: str | None = None

    # -- the parent -------------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        self._ready_r, self._ready_w = os.pipe()
        for fd in (wake_r, wake_w, self._ready_r):
            os.set_blocking(fd, False)
        self._wake = (wake_r, wake_w)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _HANDLED}
        old_wakeup = signal.set_wakeup_fd(wake_w)
        self._metrics_start()
        logger.info("supervisor pid %d: starting %d workers", os.getpid(), len(self.slots))
        try:
            return self._supervise()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (wake_r, wake_w, self._ready_r, self._ready_w):
                os.close(fd)
            self._metrics_end()

    def _on_signal(self, sig: int, frame: object) -> None:
        self._signals.append(sig)  # handled in the loop; the wakeup fd ends its select

    def _supervise(self) -> int:
        self._spawn(self.slots[0])
        booting = True  # the first worker alone, until it is ready
        while True:
            self._wait(timeout=1.0)
            if any(sig in _STOP for sig in self._signals):
                return self._stop()
            self._signals.clear()
            self._read_ready()
            first = self.slots[0].worker
            if booting and first is not None and first.ready:
                booting = False
                for slot in self.slots[1:]:
                    self._spawn(slot)
            for worker, status in self._reap():
                if booting:  # the first worker, dead before it served
                    logger.error(
                        "worker %d (pid %d) exited with %s before it served: stopping",
                        worker.number,
                        worker.pid,
                        _describe(status),
                    )
                    self._stop()
                    return 1
                self._died(worker, status)
            if not booting:
                now = time.monotonic()
                for slot in self.slots:
                    if slot.waiting and slot.due <= now:
                        self._spawn(slot)

    def _wait(self, timeout: float) -> None:
        """Until a signal, a worker's ready message or ``timeout`` (or a due restart)."""
        now = time.monotonic()
        dues = [s.due - now for s in self.slots if s.waiting]
        timeout = max(0.0, min([timeout, *dues]))
        try:
            readable, _, _ = select.select([self._wake[0], self._ready_r], [], [], timeout)
        except InterruptedError:  # pragma: no cover - retried by Python (PEP 475)
            return
        if self._wake[0] in readable:
            try:
                while os.read(self._wake[0], 512):
                    pass
            except BlockingIOError:
                pass

    def _read_ready(self) -> None:
        try:
            data = os.read(self._ready_r, _PID.size * 64)
        except BlockingIOError:
            return
        for (pid,) in _PID.iter_unpack(data[: len(data) - len(data) % _PID.size]):
            for slot in self.slots:
                if slot.worker is not None and slot.worker.pid == pid and not slot.worker.ready:
                    slot.worker.ready = True
                    logger.info("worker %d (pid %d) serving", slot.number, pid)

    def _reap(self) -> list[tuple[_Worker, int]]:
        dead = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for slot in self.slots:
                if slot.worker is not None and slot.worker.pid == pid:
                    dead.append((slot.worker, status))
                    slot.worker = None
            self._mark_dead(pid)
        return dead

    def _died(self, worker: _Worker, status: int) -> None:
        slot = self.slots[worker.number - 1]
        lived = time.monotonic() - worker.started
        slot.streak = slot.streak + 1 if lived < STABLE else 1
        delay = 0.0 if slot.streak <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** (slot.streak - 2))
        slot.waiting, slot.due = True, time.monotonic() + delay
        if delay:
            logger.error(
                "worker %d (pid %d) died with %s after %.1f s, %d times in a row within "
                "%g s of its start: restarting in %g s",
                worker.number,
                worker.pid,
                _describe(status),
                lived,
                slot.streak,
                STABLE,
                delay,
            )
        else:
            logger.error(
                "worker %d (pid %d) died with %s after %.1f s: restarting",
                worker.number,
                worker.pid,
                _describe(status),
                lived,
            )

    def _spawn(self, slot: _Slot) -> None:
        slot.waiting = False
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker; it never returns from here
            self._child()
        slot.worker = _Worker(slot.number, pid, time.monotonic())
        logger.info("worker %d started, pid %d", slot.number, pid)

    def _stop(self) -> int:
        """SIGTERM to every worker, then wait for them (bounded); exit code 0."""
        deadline = time.monotonic() + self.graceful_timeout + KILL_AFTER
        live = [s.worker for s in self.slots if s.worker is not None]
        bound = self.graceful_timeout + KILL_AFTER
        logger.info("stopping %d workers (SIGTERM; at most %g s)", len(live), bound)
        for worker in live:
            _kill(worker.pid, signal.SIGTERM)
        handled = len(self._signals)
        while any(s.worker is not None for s in self.slots):
            if time.monotonic() >= deadline:
                for slot in self.slots:
                    if slot.worker is not None:
                        logger.error(
                            "worker %d (pid %d) still running after %g s: killed",
                            slot.number,
                            slot.worker.pid,
                            self.graceful_timeout + KILL_AFTER,
                        )
                        _kill(slot.worker.pid, signal.SIGKILL)
                deadline = float("inf")  # SIGKILL ends them: reap below, unbounded no more
            self._wait(timeout=0.2)
            for sig in self._signals[handled:]:  # a second Ctrl-C: passed on
                if sig in _STOP:
                    for slot in self.slots:
                        if slot.worker is not None:
                            _kill(slot.worker.pid, sig)
            handled = len(self._signals)
            for worker, status in self._reap():
                logger.info(
                    "worker %d (pid %d) exited with %s",
                    worker.number,
                    worker.pid,
                    _describe(status),
                )
        logger.info("supervisor pid %d: stopped", os.getpid())
        return 0

    # -- metrics ----------------------------------------------------------------------

    def _metrics_start(self) -> None:
        if not self.metrics_dir:
            return
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if given:
            self._prometheus_dir = given
        else:
            tmp = tempfile.gettempdir()
            _sweep_abandoned(tmp)
            self._own_dir, self._lock_fd, failed = _make_held(tmp)
            self._prometheus_dir = self._own_dir
            if failed is not None:  # a filesystem that keeps no locks (NFS without lockd)
                logger.warning(
                    "cannot lock %s (%s): if this supervisor is killed with SIGKILL, the next "
                    "one will not remove it",
                    self._own_dir,
                    failed.strerror or failed,
                )
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._own_dir
        logger.info(
            "metrics of every worker in %s (PROMETHEUS_MULTIPROC_DIR)", self._prometheus_dir
        )

    def _mark_dead(self, pid: int) -> None:
        if self._prometheus_dir is None:
            return
        from coyote_mw.ops.metrics import mark_process_dead

        mark_process_dead(pid, self._prometheus_dir)

    def _metrics_end(self) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == self._own_dir:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]

    # -- a worker ---------------------------------------------------------------------

    def _child(self) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for sig in _STOP:
                # stopped by a signal (uvicorn raises it again once it has drained): exit 0
                signal.signal(sig, _exit_zero)
            os.close(self._wake[0])
            os.close(self._wake[1])
            os.close(self._ready_r)
            parent, ready_w = os.getppid(), self._ready_w
            _orphan_watch(parent)

            def ready() -> None:
                os.write(ready_w, _PID.pack(os.getpid()))

            code = self.serve(ready)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:
            logger.exception("worker pid %d failed", os.getpid())
            code = 1
        finally:
            # never back into the parent's code: no finally, no atexit of the parent's
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os._exit(code)


def _exit_zero(sig: int, frame: object) -> None:
    raise SystemExit(0)


def _orphan_watch(parent: int) -> None:
    """SIGTERM this worker once its parent is gone (killed without a chance to stop it)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        logger.error("worker pid %d: supervisor pid %d is gone: stopping", os.getpid(), parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="coyote-orphan-watch", daemon=True).start()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:  # gone already: reaped below
        if exc.errno != errno.ESRCH:
            raise


_LOCKED = "coyote-workers-"  # a supervisor's directory it holds a lock on
_UNLOCKED = "coyote-metrics-"  # one it could not lock: never swept
_MAKING = ".coyote-workers-making-"


def _make_held(tmp: str) -> tuple[str, int | None, OSError | None]:
    """A new private directory in ``tmp`` and the descriptor of the lock held on it for
    as long as that is open here or in a forked worker (None, and why, where the
    filesystem keeps no locks).  Made under another name, locked, then renamed: a sweep
    never sees it unlocked; one that could not be locked takes a name no sweep reads."""
    made = tempfile.mkdtemp(prefix=_MAKING, dir=tmp)
    opened = os.open(made, os.O_RDONLY | os.O_DIRECTORY)
    held: int | None = opened
    failed = None
    try:
        fcntl.flock(opened, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else holds it
    except OSError as exc:  # (ENOLCK: an NFS mount without its lock daemon)
        os.close(opened)
        held, failed = None, exc
    prefix = _LOCKED if held is not None else _UNLOCKED
    folder = os.path.join(tmp, prefix + os.path.basename(made).removeprefix(_MAKING))
    os.rename(made, folder)
    return folder, held, failed


def _sweep_abandoned(tmp: str) -> None:
    """Remove the directories of supervisors that are gone: those no process holds a
    lock on any more.  Links, other users' directories and those this user cannot open
    are left alone, and so are the directories of supervisors that could not lock theirs
    (or of versions that did not)."""
    for folder in glob.glob(os.path.join(glob.escape(tmp), _LOCKED + "*")):
        try:
            made = os.lstat(folder)
            if not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid():
                continue  # a link, or another user's: never followed, never removed
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its supervisor, or a worker of it, still runs
            continue
        else:
            shutil.rmtree(folder, ignore_errors=True)
            if os.path.lexists(folder):
                logger.warning("could not remove %s, a gone supervisor's metrics", folder)
            else:
                logger.info("removed %s, the metrics of a supervisor that is gone", folder)
        finally:
            os.close(fd)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"signal {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
