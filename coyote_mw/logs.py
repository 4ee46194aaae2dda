"""Log formats: coyote's text line and one JSON object per line.

Every coyote logger is under ``coyote_mw`` (``coyote_mw.access`` for the line per
request).  As a library, coyote_mw only adds a ``NullHandler`` to ``coyote_mw``
(the logging HOWTO's advice): what is printed, and how, is the host's choice.
``coyote leader`` / ``coyote serve-client`` configure logging themselves
(``configure_cli``); a host may ask for coyote's own handler with
``Coyote(log_format="text" | "json")`` (``use_format``), or put ``JSONFormatter`` in
its own logging configuration.

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``; an
access line adds ``client``, ``method``, ``path``, ``status``, ``duration_ms``,
``route``, ``service``, ``instance`` and ``request_id`` (None where there is none);
``exception`` holds a traceback when there is one.

``BufferedFileHandler`` is a file handler for a busy access log: a plain ``FileHandler``
flushes (one system call) and formats a timestamp per line, which costs a busy worker a
third of its throughput; this one writes through a buffer flushed every
``flush_interval`` seconds (as nginx's ``access_log ... buffer= flush=``) and formats the
timestamp once a second.  As the only handler an access line reaches, it is fed that
line's fields directly, without a ``LogRecord`` (``coyote_mw.middleware.accesslog``),
and formats them later, a batch of lines at a time (``defer``; ``defer_item``: a run of
lines kept alike by one call): formatting one line between two requests costs several
times what it costs among others like it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "TEXT_FORMAT",
    "BufferedFileHandler",
    "JSONFormatter",
    "configure_cli",
    "formatter",
    "use_format",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_PID = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")

DEFER_BATCH = 256
"""Deferred lines (``BufferedFileHandler.defer`` / ``defer_item``) formatted together, at
the latest."""


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line, with stable field names; ``pid=True``
    adds the process id (``coyote leader --workers N``)."""

    def __init__(self, *args: Any, pid: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid = pid

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.pid:
            out["pid"] = record.process
        access = record.__dict__.get("access")
        if access is not None:
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(", ", ": "), default=str)


def formatter(log_format: str, pid: bool = False) -> logging.Formatter:
    """The formatter of a format name: "text" or "json"; ValueError for anything else.
    ``pid``: each line says its process (``[1234]`` after the time, or ``"pid"``)."""
    if log_format == "json":
        return JSONFormatter(pid=pid)
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT_PID if pid else TEXT_FORMAT)
    raise ValueError(f"log_format {log_format!r}: use one of {', '.join(FORMATS)}")


def configure_cli(level: str, log_format: str, pid: bool = False) -> None:
    """How the ``coyote`` commands log: one handler on stderr, in the format asked for
    (``pid``: with the process id, for several worker processes)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, pid))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings.warn() too: through the handler, one format
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per heartbeat
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class _CoyoteHandler(logging.StreamHandler[TextIO]):
    """The handler ``use_format`` puts on ``coyote_mw`` (one, replaced when changed)."""


def use_format(log_format: str | None) -> None:
    """``Coyote(log_format=...)``: None leaves logging to the host; "text" / "json" give
    the ``coyote_mw`` logger a stderr handler of its own in that format (its lines no
    longer propagate to the host's handlers) and INFO as its level if it had none."""
    if log_format is not None:
        chosen = formatter(log_format)  # ValueError before anything changes
    root = logging.getLogger("coyote_mw")
    for h in [h for h in root.handlers if isinstance(h, _CoyoteHandler)]:
        root.removeHandler(h)
    if log_format is None:
        root.propagate = True
        return
    handler = _CoyoteHandler(sys.stderr)
    handler.setFormatter(chosen)
    root.addHandler(handler)
    root.propagate = False
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


class BufferedFileHandler(logging.Handler):
    """Appends lines to a file through a buffer, flushed every ``flush_interval`` s.

    Without a formatter of its own a line is ``2026-11-25 03:08:14 <message>`` with the
    timestamp formatted once per second.  The buffer is written out when it holds
    ``buffer_size`` bytes, every ``flush_interval`` seconds, and by ``flush()`` /
    ``close()`` (``logging.shutdown`` at exit calls both).  Each write is whole lines.
    A forked worker (gunicorn, uvicorn --workers) starts with an empty buffer - the
    parent writes what it had - and a flusher of its own.

    ``defer`` takes a line's fields and formats them later, with the next ones: when
    ``DEFER_BATCH`` lines wait, before any other line is appended, and before the buffer
    is written out.  Lines reach the file in the order they were given either way.
    ``defer_item`` does the same for a line kept as one tuple whose first item renders
    a whole run of such lines at once (the access line's fast path).
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
        self._file = open(filename, "ab")  # noqa: SIM115
        self._encoding = encoding
        self._buffer = bytearray()
        self._buffer_size = buffer_size
        # lines given to defer() / defer_item() and not yet formatted, each one tuple
        # whose first item renders a run of them: appended without the lock
        # (deque.append is thread-safe), taken out under it, in order
        self._pending: deque[tuple[Any, ...]] = deque()
        self._interval = flush_interval
        # (second, its formatted stamp), replaced whole: threads never see a mix
        self._stamped: tuple[int, str] = (-1, "")
        self._stop = threading.Event()
        self._start_flusher()
        _buffered.add(self)

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(
            target=self._flush_every, name="coyote-access-log", daemon=True
        )
        self._flusher.start()

    def _after_fork(self) -> None:
        # The buffer's lines are the parent's to write; the flusher thread is gone.
        # (logging has already re-made self.lock for this process.)
        self._buffer = bytearray()
        self._pending = deque()
        if not self._stop.is_set():
            self._start_flusher()

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is not None:
            return super().format(record)
        return f"{self._timestamp(record.created)} {record.getMessage()}"

    def _timestamp(self, created: float) -> str:
        second = int(created)
        stamped = self._stamped
        if stamped[0] == second:
            return stamped[1]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._stamped = (second, stamp)
        return stamp

    def write_raw(self, line: str) -> None:
        """Append a whole line (with its timestamp and newline) as it stands."""
        try:
            self._append(line.encode(self._encoding))
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": line.rstrip("\n")}))

    def defer(self, render: Callable[..., str], created: float, args: tuple[Any, ...]) -> None:
        """Append the line ``render(stamp, *args)`` (whole, with its newline; ``stamp``
        is the timestamp of ``created``, a ``time.time()``), formatted later with others
        (see the class docstring)."""
        self.defer_item((_render_each, created, render, args))

    def defer_item(self, item: tuple[Any, ...]) -> None:
        """Append the line(s) ``item[0](stamp, items)`` will give, formatted later with
        others: ``items`` a run of consecutive deferred tuples with the same first item,
        ``stamp`` this handler's timestamp function (``stamp(created)``, a string for a
        ``time.time()``, the same for every time in one second).  The renderer returns
        the run's lines, whole, with their newlines, in order; one item at a time too."""
        pending = self._pending
        pending.append(item)
        if len(pending) >= DEFER_BATCH:
            with self.lock:  # type: ignore[union-attr]
                self._render()

    def _render(self) -> None:
        # under self.lock: one renderer at a time takes the waiting lines out, oldest
        # first, so they reach the buffer in the order they were given
        pending = self._pending
        count = len(pending)  # what waits now: later lines wait for the next
        if not count:
            return
        items = [pending.popleft() for _ in range(count)]
        texts = []
        run_start = 0
        renderer = items[0][0]
        for i in range(1, count + 1):  # each run of items with the same renderer
            if i < count and items[i][0] is renderer:
                continue
            run = items[run_start:i]
            try:
                texts.append(renderer(self._timestamp, run).encode(self._encoding))
            except Exception:  # one item at a time: only what cannot be formatted is lost
                texts.extend(self._render_alone(renderer, run))
            if i < count:
                run_start, renderer = i, items[i][0]
        buffer = self._buffer
        buffer += b"".join(texts)
        if len(buffer) >= self._buffer_size:
            self._write_out()

    def _render_alone(
        self, renderer: Callable[..., str], run: list[tuple[Any, ...]]
    ) -> list[bytes]:
        texts = []
        for item in run:
            try:
                text = renderer(self._timestamp, [item])
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": f"unformattable line {item[1:]!r}"}))
                continue
            try:
                texts.append(text.encode(self._encoding))
            except UnicodeEncodeError:
                self.handleError(logging.makeLogRecord({"msg": text.rstrip("\n")}))
        return texts

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._append((self.format(record) + "\n").encode(self._encoding))
        except Exception:
            self.handleError(record)

    # self.lock (logging's, re-made in a forked child) guards the buffer and the file.

    def _append(self, line: bytes) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                self._render()  # the lines given before this one come first
            buffer = self._buffer
            buffer += line
            if len(buffer) >= self._buffer_size:
                self._write_out()

    def _write_out(self) -> None:
        # under self.lock, so lines reach the file in the order they were appended
        try:
            if self._buffer and not self._file.closed:
                self._file.write(self._buffer)
                self._file.flush()
        finally:
            self._buffer.clear()  # lines that cannot be written are dropped, not hoarded

    def _flush_every(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # a full disk must not end the flusher
                failed = f"flushing {self._file.name} failed"
                self.handleError(logging.makeLogRecord({"msg": failed}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._render()
            self._write_out()

    def close(self) -> None:
        self._stop.set()
        try:
            with self.lock:  # type: ignore[union-attr]
                try:
                    self._render()
                    self._write_out()
                finally:
                    self._file.close()
        finally:
            super().close()


def _render_each(stamp: Callable[[float], str], items: list[tuple[Any, ...]]) -> str:
    # the run of lines given to defer(): (_render_each, created, render, args) each
    return "".join([render(stamp(created), *args) for _, created, render, args in items])


_buffered: weakref.WeakSet[BufferedFileHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_buffered):
        handler._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
