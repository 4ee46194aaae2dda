"""What every connection of the server shares: its options, the bytes of status lines,
the ``Date`` header (made once a second) and the server's own JSON error answers."""

from __future__ import annotations

import asyncio
import fcntl
import http
import json
import struct
import termios
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol

__all__ = [
    "LIFESPAN_SHUTDOWN",
    "Host",
    "Options",
    "date_line",
    "error_answer",
    "status_line",
    "unwind",
]

LIFESPAN_SHUTDOWN = 5.0
"""The least time the app's lifespan shutdown gets, whatever ``shutdown_timeout``."""


@dataclass(frozen=True)
class Options:
    """The server's bounds, each with its default.

    A request head is at most ``max_head_bytes`` (request line and header lines, else
    431), ``max_headers`` header lines (431) and a ``max_target`` bytes target (414);
    it must arrive within ``header_timeout`` seconds (else 408, or a silent close when
    nothing came); a kept-alive connection idle for ``keep_alive_timeout`` seconds is
    closed; a client that lets what is written for it wait ``send_timeout`` seconds
    unread (the write buffer full) is cut off. At most ``max_connections`` are open: a
    new one over it is closed at once. Over TLS a connection counts from its accept,
    and its handshake is part of the head's ``header_timeout``: a client that connects
    and never completes a handshake holds a place for that long, no longer; a connection
    the server closes ends once the client's TCP has acknowledged every byte, without
    waiting for the client's close_notify (``H1Connection.unwinding``).
    A request body is buffered up to ``body_buffer`` bytes before reading pauses, and as
    much is held behind a pipelined request until its turn (then reading pauses); a body
    the app never read is discarded up to ``max_discard`` bytes (then the connection is
    closed). A WebSocket message is at most ``ws_max_message`` bytes, and
    ``ws_max_queue`` messages wait for the app before reading pauses. On SIGTERM or
    SIGINT, requests under way get ``shutdown_timeout`` seconds to finish (0: none), and
    the lifespan shutdown at least ``LIFESPAN_SHUTDOWN``.
    """

    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    max_target: int = 8 * 1024
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    send_timeout: float = 60.0
    shutdown_timeout: float = 30.0
    max_connections: int = 10_000
    body_buffer: int = 64 * 1024
    max_discard: int = 1024 * 1024
    max_pipeline: int = 16
    ws_max_message: int = 1024 * 1024
    ws_max_queue: int = 16
    server_header: str | None = None
    root_path: str = ""
    lifespan: str = "auto"  # "on", "off", or "auto": on unless the app refuses it

    def __post_init__(self) -> None:
        for name in (
            "max_head_bytes",
            "max_headers",
            "max_target",
            "max_connections",
            "body_buffer",
            "max_discard",
            "max_pipeline",
            "ws_max_message",
            "ws_max_queue",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("header_timeout", "keep_alive_timeout", "send_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number of seconds, not {value!r}")
            if value == 0 and name != "shutdown_timeout":  # 0: requests closed at once
                raise ValueError(f"{name} must be a positive number of seconds, not 0")
        if self.lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {self.lifespan!r}")
        if self.server_header is not None and not self.server_header.isprintable():
            raise ValueError(f"server_header {self.server_header!r}: printable text only")


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


_STATUS = {code: _status_line(code) for code in range(100, 600)}


def status_line(code: int) -> bytes:
    line = _STATUS.get(code)
    if line is None:
        raise RuntimeError(f"invalid HTTP status {code!r} in the response")
    return line


_date: list[object] = [0, b""]


def date_line() -> bytes:
    """``date: ...\\r\\n`` (RFC 9110 6.6.1), made again only when the second changes."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, f"date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date[1]  # type: ignore[return-value]


def error_answer(status: int, error: str, extra: bytes = b"", detail: str = "") -> bytes:
    """A whole answer the server gives itself: ``{"error": ..., "detail": ...}`` (as
    coyote's own errors), and the connection closes after it."""
    fields = {"error": error, "detail": detail} if detail else {"error": error}
    body = json.dumps(fields).encode()
    return b"".join(
        (
            status_line(status),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n",
            extra,
            date_line(),
            b"\r\n",
            body,
        )
    )


class Host(Protocol):
    """What a connection sees of the server that accepted it (``run.Server``)."""

    app: Any
    options: Options
    loop: asyncio.AbstractEventLoop
    asgi: dict[str, str]
    state: dict[str, Any]
    connections: set[Any]
    stopping: bool
    extra: bytes  # header lines the server adds (``server_header``)
    shortcut: Any  # what may answer requests without ASGI (``h1.Shortcut``), or None

    def track(self, task: asyncio.Task[None]) -> None: ...


def unwind(transport: asyncio.Transport, unwound: bool) -> bool:
    """A closed TLS connection's tick (``H1Connection.unwinding``): aborted if nothing
    was left to send at this tick and the one before (``unwound``); whether nothing is."""
    if transport.get_write_buffer_size() or _unacknowledged(transport) != 0:
        return False
    if unwound:
        transport.abort()
    return True


def _unacknowledged(transport: asyncio.BaseTransport) -> int:
    """Bytes written to the socket that its peer has not acknowledged yet (Linux's
    ``SIOCOUTQ``); -1 where that cannot be known."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError, AttributeError):
        return -1
    return int(struct.unpack("i", out)[0])
