"""One INFO line per request on the ``coyote_mw.access`` logger.

    GET /items/7 200 0.4ms route=/items/{id:int} service=shop

The line goes through the standard logging module, so its handlers, formatters and
filters apply.  It is on every request's path, so the record is built directly
(``Logger.handle``) rather than through ``Logger.info``, which looks up the caller's
stack frame for a location that is always this function anyway.

Under load the lines of an event loop are batched: a request that ends while others are
still in flight queues its line, and the queue goes to the logger at the end of that
loop iteration (``loop.call_soon``), in order, with each record's own time.  The
logging machinery then runs once per batch rather than interleaved with requests,
which halves its cost.  A request that ends with none other in flight logs at once,
after anything queued, so a quiet server (or a test) sees its line immediately.

A plain ``FileHandler`` flushes (one system call) and formats a timestamp per line,
which costs a busy worker a third of its throughput.  ``BufferedFileHandler`` writes
through a buffer flushed every ``flush_interval`` seconds (as nginx's ``access_log
... buffer= flush=``) and formats the timestamp once a second:

    logging.getLogger("coyote_mw.access").addHandler(BufferedFileHandler("access.log"))
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any

__all__ = ["AccessLog", "BufferedFileHandler"]

logger = logging.getLogger("coyote_mw.access")

_START = time.time()


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)  # uvicorn / gunicorn workers are forks
_thread_names: dict[int, str] = {}


_CONSTANT = {
    "name": logger.name,
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": __file__,
    "filename": "accesslog.py",
    "module": "accesslog",
    "lineno": 0,
    "funcName": "access",
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "processName": "MainProcess",
    "taskName": None,
}


class _AccessRecord(logging.LogRecord):
    """A LogRecord with the fields formatters read, without the per-call frame walk.

    Formatters read ``record.__dict__``, so every field is an instance attribute; what
    never changes is copied in with one ``dict.update``.
    """

    def __init__(self, msg: str, args: tuple[Any, ...], now: float) -> None:
        self.__dict__.update(_CONSTANT)
        self.msg = msg
        self.args = args
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - _START) * 1000
        ident = threading.get_ident()
        self.thread = ident
        name = _thread_names.get(ident)
        if name is None:
            name = _thread_names[ident] = threading.current_thread().name
        self.threadName = name
        self.process = _pid


_LINE = "%s %s %d %.1fms"
_ROUTED = "%s %s %d %.1fms route=%s service=%s"
# (time.time() at the end, message, args)
_Entry = tuple[float, str, tuple[Any, ...]]


class AccessLog:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Entry]] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, list[_Entry]] | None = None
        _logs.add(self)

    def __call__(
        self, method: str, raw_path: str, status: int, start: float, endpoint: Any
    ) -> None:
        """Log one request now (WSGI, calls from threads)."""
        if self.enabled and logger.isEnabledFor(logging.INFO):
            _emit(_entry(method, raw_path, status, start, endpoint))

    def soon(
        self, busy: bool, method: str, raw_path: str, status: int, start: float, endpoint: Any
    ) -> None:
        """Log one request from an event loop: queued while ``busy`` (other requests
        in flight), else at once after whatever is queued."""
        if not self.enabled or not logger.isEnabledFor(logging.INFO):
            return
        entry = _entry(method, raw_path, status, start, endpoint)
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            batch = last[1]
        else:
            got = self._batches.get(loop)
            if got is None:
                got = self._batches[loop] = []
            batch = got
            self._last = (loop, batch)
        if busy:
            if not batch:
                loop.call_soon(_drain, batch)
            batch.append(entry)
            return
        if batch:
            _drain(batch)
        _emit(entry)

    def flush(self) -> None:
        """Log every queued line now (at exit, or when a loop stops)."""
        for batch in list(self._batches.values()):
            _drain(batch)


_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """Lines queued on a loop that stopped before its next iteration."""
    for log in list(_logs):
        log.flush()


def _entry(method: str, raw_path: str, status: int, start: float, endpoint: Any) -> _Entry:
    ms = (time.perf_counter() - start) * 1000
    if endpoint is None:
        return (time.time(), _LINE, (method, raw_path, status, ms))
    return (
        time.time(),
        _ROUTED,
        (method, raw_path, status, ms, endpoint.pattern, endpoint.service),
    )


def _emit(entry: _Entry) -> None:
    logger.handle(_AccessRecord(entry[1], entry[2], entry[0]))


def _drain(batch: list[_Entry]) -> None:
    entries = batch[:]
    batch.clear()
    if logger.isEnabledFor(logging.INFO):
        handle = logger.handle
        for now, msg, args in entries:
            handle(_AccessRecord(msg, args, now))


class BufferedFileHandler(logging.Handler):
    """Appends lines to a file through a buffer, flushed every ``flush_interval`` s.

    Without a formatter of its own a line is ``2026-11-25 03:08:14 <message>`` with the
    timestamp formatted once per second.  Lines still in the buffer are written by
    ``flush()`` / ``close()`` (``logging.shutdown`` at exit calls both).
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        *,
        flush_interval: float = 1.0,
        buffer_size: int = 64 * 1024,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__()
        self._file = open(filename, "a", encoding=encoding, buffering=buffer_size)  # noqa: SIM115
        self._second = -1
        self._stamp = ""
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_interval,), name="coyote-access-log", daemon=True
        )
        self._flusher.start()

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is not None:
            return super().format(record)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp} {record.getMessage()}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._file.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def _flush_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        self._stop.set()
        with self.lock:  # type: ignore[union-attr]
            if not self._file.closed:
                self._file.close()
        super().close()
