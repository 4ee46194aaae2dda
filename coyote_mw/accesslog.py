"""One INFO line per request on the ``coyote_mw.access`` logger.

    GET /items/7 200 0.4ms route=/items/{id:int} service=shop

The line goes through the standard logging module, so its handlers, formatters and
filters apply.  It is on every request's path, so the record is built directly
(``Logger.handle``) rather than through ``Logger.info``, which looks up the caller's
stack frame for a location that is always this function anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

__all__ = ["AccessLog"]

logger = logging.getLogger("coyote_mw.access")

_START = time.time()


class _AccessRecord(logging.LogRecord):
    """A LogRecord with the fields formatters read, without the per-call frame walk."""

    def __init__(self, msg: str, args: tuple[Any, ...]) -> None:
        now = time.time()
        self.name = logger.name
        self.msg = msg
        self.args = args
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.pathname = __file__
        self.filename = "accesslog.py"
        self.module = "accesslog"
        self.lineno = 0
        self.funcName = "access"
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - _START) * 1000
        thread = threading.current_thread()
        self.thread = thread.ident
        self.threadName = thread.name
        self.processName = "MainProcess"
        self.process = os.getpid()
        self.taskName = None


class AccessLog:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __call__(
        self, method: str, raw_path: str, status: int, start: float, endpoint: Any
    ) -> None:
        if not self.enabled or not logger.isEnabledFor(logging.INFO):
            return
        ms = (time.perf_counter() - start) * 1000
        if endpoint is None:
            record = _AccessRecord("%s %s %d %.1fms", (method, raw_path, status, ms))
        else:
            record = _AccessRecord(
                "%s %s %d %.1fms route=%s service=%s",
                (method, raw_path, status, ms, endpoint.pattern, endpoint.service),
            )
        logger.handle(record)
