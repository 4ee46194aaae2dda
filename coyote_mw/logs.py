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
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["FORMATS", "TEXT_FORMAT", "JSONFormatter", "configure_cli", "formatter", "use_format"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line, with stable field names."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = record.__dict__.get("access")
        if access is not None:
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(", ", ": "), default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of a format name: "text" or "json"; ValueError for anything else."""
    if log_format == "json":
        return JSONFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log_format {log_format!r}: use one of {', '.join(FORMATS)}")


def configure_cli(level: str, log_format: str) -> None:
    """How the ``coyote`` commands log: one handler on stderr, in the format asked for."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
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
