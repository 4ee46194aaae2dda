"""One INFO line per request on the ``coyote_mw.access`` logger.

    GET /items/7 200 0.4ms route=/items/{id:int} service=shop instance=- \
        client=127.0.0.1 request_id=4bf92f3577b34da6a3ce929d0e0e4736

``instance`` is the URL a relayed request went to ("-" in process); ``request_id`` the
X-Request-ID it was relayed with (the client's when safe, else made), or in process
the client's own when safe; "-" for what is not known.  With
``coyote_mw.logs.JSONFormatter`` the same fields are a JSON object's.

The line goes through the standard logging module, so its handlers, formatters and
filters apply.  It is on every request's path, so the record is built directly
(``Logger.handle``) rather than through ``Logger.info``, which looks up the caller's
stack frame for a location that is always this function anyway.

For a busy worker, ``coyote_mw.logs.BufferedFileHandler`` (a plain ``FileHandler``
costs a third of its throughput):

    logging.getLogger("coyote_mw.access").addHandler(BufferedFileHandler("access.log"))

When that handler is the only one a line would reach (no other handler on this logger
or, while it propagates, on its ancestors; no filters; no formatter set), the line is
handed to it directly, without a ``LogRecord``: the same bytes in the file for a
fifth of the cost.  Where the line goes is decided again for every request, from the
logging set-up as it is then (the usual case, this logger's one handler and no
propagation, without a call), so a change to logging is seen by the next line.
When no handler at all would get the line (logging left unconfigured, or only handlers
above INFO such as the dashboard's recent errors), nothing is built.  Any other set-up -
handlers, filters, formatters of your own - gets a normal record through
``Logger.handle``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from coyote_mw.http.forwarding import _REQUEST_ID
from coyote_mw.logs import BufferedFileHandler

__all__ = ["AccessLog", "BufferedFileHandler"]

logger = logging.getLogger("coyote_mw.access")

_START = time.time()
_perf_counter = time.perf_counter
_time = time.time
INFO = logging.INFO


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

    def __init__(self, msg: str, args: tuple[Any, ...]) -> None:
        now = time.time()
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


class AccessLog:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        # called with (endpoint, status, seconds taken) for every request, line or
        # not (coyote_mw.ops.metrics); None: nothing
        self.metrics: Callable[[Any, int, float], None] | None = None

    def __call__(
        self,
        method: str,
        raw_path: str,
        status: int,
        start: float,
        endpoint: Any,
        peer: Any = None,
        handler: Any = None,
        d: Any = None,
    ) -> None:
        """``peer``: the ASGI scope or WSGI environ (client address, X-Request-ID);
        ``handler``: the one that served (its URL when remote); ``d``: the Dispatch
        (the request id sent on).  All read only when a line is written."""
        seconds = _perf_counter() - start  # one clock read, for the metrics and the line
        metrics = self.metrics
        if metrics is not None:
            metrics(endpoint, status, seconds)
        if not self.enabled or not logger.isEnabledFor(INFO):
            return
        # _destination(), its common answer decided here without a call: this logger's
        # one handler a BufferedFileHandler of its own format, no filter, no propagation
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.propagate and not logger.filters:
            direct: Any = handlers[0]
            if (
                type(direct) is not BufferedFileHandler
                or direct.formatter is not None
                or direct.filters
                or direct.level > INFO
            ):
                direct = True
        else:
            direct = _destination()
            if direct is False:
                return
        # the client's address and the request id, "-" for what is not known: the id
        # is the one the request was relayed with (Dispatch.request_id); for a request
        # served in process, the client's X-Request-ID when it is a safe token
        request_id = d.request_id if d is not None else ""
        if peer is None:
            client = "-"
        elif "REQUEST_METHOD" in peer:  # a WSGI environ
            client = peer.get("REMOTE_ADDR") or "-"
            if not request_id:
                given = peer.get("HTTP_X_REQUEST_ID")
                if given is not None:
                    request_id = _safe_id(given.encode("latin-1"))
        else:
            address = peer.get("client")
            if not address:
                client = "-"
            else:
                client = address[0]
                if type(client) is not str:
                    client = str(client)
            if not request_id:
                for name, value in peer.get("headers", ()):
                    if name == b"x-request-id":
                        request_id = _safe_id(value)
                        break
        if not request_id:
            request_id = "-"
        if endpoint is None:
            route = service = "-"
        else:
            route, service = endpoint.pattern, endpoint.service
        if handler is None or handler.kind != "remote":
            instance = "-"
        else:  # the instance it went to in the end
            instance = (d.retried_on if d is not None else "") or handler.url
        if direct is not True:
            # the line emit() would write for the record below, formatted with the
            # next ones (BufferedFileHandler.defer_item)
            direct.defer_item(
                (
                    _lines,
                    _time(),
                    method,
                    raw_path,
                    status,
                    seconds,
                    route,
                    service,
                    instance,
                    client,
                    request_id,
                )
            )
            return
        ms = seconds * 1000
        record = _AccessRecord(
            "%s %s %d %.1fms route=%s service=%s instance=%s client=%s request_id=%s",
            (method, raw_path, status, ms, route, service, instance, client, request_id),
        )
        record.__dict__["access"] = {  # the fields of a JSON line (coyote_mw.logs.JSONFormatter)
            "client": None if client == "-" else client,
            "method": method,
            "path": raw_path,
            "status": status,
            "duration_ms": round(ms, 3),
            "route": None if endpoint is None else route,
            "service": None if endpoint is None else service,
            "instance": None if instance == "-" else instance,
            "request_id": None if request_id == "-" else request_id,
        }
        logger.handle(record)


def _lines(stamp: Callable[[float], str], items: list[tuple[Any, ...]]) -> str:
    """Access lines as ``BufferedFileHandler`` writes their records' messages
    (``BufferedFileHandler.defer_item``: a run of the tuples ``AccessLog`` keeps)."""
    out = []
    low = high = 0.0  # the second [low, high) whose timestamp ``text`` is
    text = ""
    for (
        _,
        created,
        method,
        raw_path,
        status,
        seconds,
        route,
        service,
        instance,
        client,
        request_id,
    ) in items:
        if not low <= created < high:
            low = float(int(created))
            high = low + 1.0
            text = stamp(created)
        out.append(
            f"{text} {method} {raw_path} {status} {seconds * 1000:.1f}ms route={route} "
            f"service={service} instance={instance} client={client} request_id={request_id}\n"
        )
    return "".join(out)


def _safe_id(value: bytes) -> str:
    return value.decode("ascii") if _REQUEST_ID.fullmatch(value) is not None else ""


def _destination() -> BufferedFileHandler | bool:
    """Where ``Logger.handle`` would take an access line, decided from the logging set-up.

    A ``BufferedFileHandler`` with its own format when it is the only handler reached
    and no filter is on the way (the line may go to it directly); False when no handler
    at all would get it (nothing to build); True for anything else (a real record).
    """
    if logger.disabled:
        return False
    direct: BufferedFileHandler | None = None
    if logger.filters:
        return True
    handlers = logger.handlers
    if handlers:
        h = handlers[0]
        if len(handlers) != 1 or type(h) is not BufferedFileHandler:
            return True
        if h.formatter is not None or h.filters or h.level > logging.INFO:
            return True
        direct = h
    parent = logger.parent if logger.propagate else None
    silenced = False  # a NullHandler reached: logging's last resort is not used
    while parent is not None:  # what callHandlers would also reach
        for h in parent.handlers:
            # a handler above INFO (the dashboard's recent errors) takes no access line
            if type(h) is not logging.NullHandler and h.level <= logging.INFO:
                return True
            silenced = True
        parent = parent.parent if parent.propagate else None
    if direct is not None:
        return direct
    if silenced:
        return False
    # No handler anywhere: logging falls back to lastResort, which takes WARNING and up.
    last = logging.lastResort
    return last is None or last.level <= logging.INFO
