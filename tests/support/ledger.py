"""An upstream instance for relay tests: it records the exact bytes it receives and
misbehaves on command.

    with LedgerUpstream() as up:                 # a thread with a real socket on 127.0.0.1
        coyote.register_remote(up.url, routes=[("GET", "/{rest:path}")], service="up")
        ...
        up.requests[-1].raw      # the exact bytes of the last request (head and body)
        up.requests[-1].headers  # [(name, value), ...] as sent, names as sent
        up.connections[0]        # every byte one connection carried, in order

What it answers is chosen by the request's first path segment (see ``BEHAVIOURS``):

    /echo...          200, the body it received (content-length)
    /status/{code}    that status, a short body
    /reset            reads the request, then resets the connection (no answer)
    /close            reads the request, then closes the connection (no answer)
    /drip/{n}/{ms}    200 with content-length n, one byte every ms milliseconds
    /pause/{ms}       200 with content-length 2: one byte at once, the other ms later
    /hang             reads the request, never answers (until the server stops)
    /fresh-only       200 to the first request on a connection; a later one on the same
                      connection is reset unanswered (a pooled connection gone stale)
    /close-delimited/{n}  200 without length or chunks, n bytes, then a clean close (FIN)
    /cut/{n}          the same, but the n bytes end in a reset (RST), not a close
    /framing/{case}   a 200 whose framing is bad: see ``BAD_FRAMING``
    /big-head/{kib}   a 200 with one header of kib KiB
    /under-100        a response of status 099 ("EVIL!"), then a 200 "ok"
    /interim-content  a 150 with content ("EVIL!"), then a 200 "ok"
    anything else     200 "ok" (content-length), keep-alive

Tests add their own with ``LedgerUpstream(behaviours={"name": fn})``, where ``fn(conn,
request)`` writes whatever it likes to the socket and returns False to close it.
Requests are parsed with httptools (llhttp) only to know where each one ends: what is
recorded is the bytes as they arrived, never a re-serialisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

__all__ = [
    "BAD_FRAMING",
    "BEHAVIOURS",
    "LedgerUpstream",
    "Received",
    "parse_status",
    "raw_exchange",
]


@dataclass
class Received:
    """One request as the upstream got it."""

    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""  # the exact bytes of this request, head and body
    connection: int = 0  # which connection (index into LedgerUpstream.connections)
    chunked: bool = False  # its body was sent with Transfer-Encoding: chunked
    nth: int = 0  # its place on its connection: 0 for the first request
    body_size: int = 0  # the body's size, counted whole even past ``record_limit``
    body_sha256: str = ""  # and its digest

    def header(self, name: str) -> bytes | None:
        """The first value of a header (case-insensitive), or None."""
        key = name.lower().encode()
        for k, v in self.headers:
            if k.lower() == key:
                return v
        return None

    def header_values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == key]


Behaviour = Callable[[socket.socket, Received], bool]


def _answer(conn: socket.socket, status: int, body: bytes, extra: bytes = b"") -> None:
    conn.sendall(
        b"HTTP/1.1 %d X\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n%b\r\n%b"
        % (status, len(body), extra, body)
    )


def _ok(conn: socket.socket, request: Received) -> bool:
    _answer(conn, 200, b"ok")
    return True


def _echo(conn: socket.socket, request: Received) -> bool:
    _answer(conn, 200, request.body)
    return True


def _status(conn: socket.socket, request: Received) -> bool:
    code = int(request.target.split(b"/")[2].split(b"?")[0])
    _answer(conn, code, b"status %d" % code)
    return True


def _reset(conn: socket.socket, request: Received) -> bool:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False


def _close(conn: socket.socket, request: Received) -> bool:
    return False


def _drip(conn: socket.socket, request: Received) -> bool:
    parts = request.target.split(b"?")[0].split(b"/")
    count, pause = int(parts[2]), int(parts[3]) / 1000
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % count)
    for _ in range(count):
        time.sleep(pause)
        conn.sendall(b"x")
    return True


def _pause(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nx")
    time.sleep(int(request.target.split(b"/")[2]) / 1000)
    conn.sendall(b"y")
    return True


def _hang(conn: socket.socket, request: Received) -> bool:
    conn.settimeout(None)
    try:
        while conn.recv(65536):  # until the peer or the server's stop closes it
            pass
    except OSError:
        pass
    return False


def _fresh_only(conn: socket.socket, request: Received) -> bool:
    if request.nth == 0:
        _answer(conn, 200, b"fresh")
        return True
    return _reset(conn, request)


def _arg(request: Received, index: int = 2) -> bytes:
    return request.target.split(b"?")[0].split(b"/")[index]


def _close_delimited(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * int(_arg(request)))
    return False


def _cut(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * int(_arg(request)))
    time.sleep(0.3)  # the bytes are read and passed on before the reset
    return _reset(conn, request)


BAD_FRAMING = {
    b"gzip": b"transfer-encoding: gzip\r\n\r\nnot gzip at all",
    b"chunked-chunked": b"transfer-encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"two-te": (
        b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ),
    b"gzip-chunked": b"transfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"length-and-te": (
        b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ),
    b"two-lengths": b"content-length: 2\r\ncontent-length: 3\r\n\r\nok!",
}


def _framing(conn: socket.socket, request: Received) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\n" + BAD_FRAMING[_arg(request)])
    return False


def _big_head(conn: socket.socket, request: Received) -> bool:
    size = int(_arg(request)) * 1024
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: ")
    block = b"b" * 65536
    for _ in range(size // len(block)):
        conn.sendall(block)
    conn.sendall(b"b" * (size % len(block)) + b"\r\n\r\nok")
    return True


def _under_100(conn: socket.socket, request: Received) -> bool:
    # llhttp reads any three digits: "099" is neither an interim head nor a response
    conn.sendall(b"HTTP/1.1 099 X\r\ncontent-length: 5\r\n\r\nEVIL!")
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    return True


def _interim_content(conn: socket.socket, request: Received) -> bool:
    # a 1xx ends with its head (RFC 9110 15.2); llhttp reads the content one announces
    conn.sendall(b"HTTP/1.1 150 X\r\ncontent-length: 5\r\n\r\nEVIL!")
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    return True


BEHAVIOURS: dict[str, Behaviour] = {
    "echo": _echo,
    "status": _status,
    "reset": _reset,
    "close": _close,
    "drip": _drip,
    "pause": _pause,
    "hang": _hang,
    "fresh-only": _fresh_only,
    "close-delimited": _close_delimited,
    "cut": _cut,
    "framing": _framing,
    "big-head": _big_head,
    "under-100": _under_100,
    "interim-content": _interim_content,
}


class _Parse:
    """httptools callbacks filling one ``Received`` at a time."""

    def __init__(self, connection: int, record_limit: int | None = None) -> None:
        self.connection = connection
        self.record_limit = record_limit
        self.current = Received(connection=connection)
        self.done: list[Received] = []
        self.url = b""
        self.count = 0
        self._chunks: list[bytes] = []
        self._digest = hashlib.sha256()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self.current.chunked = True

    def on_body(self, body: bytes) -> None:
        limit = self.record_limit
        if limit is None or self.current.body_size < limit:
            self._chunks.append(body)
        self.current.body_size += len(body)
        self._digest.update(body)

    def on_message_complete(self) -> None:
        self.current.body = b"".join(self._chunks)
        self.current.body_sha256 = self._digest.hexdigest()
        self._chunks, self._digest = [], hashlib.sha256()
        self.current.target = self.url
        self.current.nth = self.count
        self.count += 1
        self.done.append(self.current)
        self.current = Received(connection=self.connection)
        self.url = b""


class LedgerUpstream:
    """A threaded HTTP/1.1 upstream on 127.0.0.1 that records every byte it receives."""

    def __init__(
        self,
        behaviours: dict[str, Behaviour] | None = None,
        port: int = 0,
        record_limit: int | None = None,
    ) -> None:
        """``port``: listen there (an instance coming back where it was); 0: any free one.
        ``record_limit``: keep at most about that many bytes of each body and of each
        connection's ledger (sizes and digests still count every byte): for bodies too
        big to keep."""
        self.behaviours = {**BEHAVIOURS, **(behaviours or {})}
        self.record_limit = record_limit
        self.requests: list[Received] = []
        self.connections: list[bytes] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.port = port
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LedgerUpstream:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        # shutdown() wakes the thread blocked in accept(); close() alone does not (Linux)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Wait (bounded) until ``count`` requests have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        with self.lock:
            return list(self.requests)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                index = len(self.connections)
                self.connections.append(b"")
                self._socks.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, index: int) -> None:
        parse = _Parse(index, self.record_limit)
        parser = httptools.HttpRequestParser(parse)
        limit = self.record_limit
        pending = b""  # bytes of the request being received
        conn.settimeout(30)
        try:
            while not self._stopping:
                data = conn.recv(65536)
                if not data:
                    return
                if limit is None or len(self.connections[index]) < limit:
                    with self.lock:
                        self.connections[index] += data
                if limit is None or len(pending) < limit:
                    pending += data
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass
                except httptools.HttpParserError as exc:
                    self.errors.append(exc)
                    _answer(conn, 400, b"bad request")
                    return
                while parse.done:
                    request = parse.done.pop(0)
                    request.method = parser.get_method()
                    # the bytes that arrived since the last complete request: when several
                    # arrive in one read (pipelining) the first holds them all, the others
                    # none; `connections` is the exact ledger either way
                    request.raw, pending = pending, b""
                    with self.lock:
                        self.requests.append(request)
                    first = request.target.split(b"?")[0].split(b"/")[1:2]
                    name = first[0].decode("latin-1") if first else ""
                    behave = self.behaviours.get(name, _ok)
                    if not behave(conn, request):
                        return
        except OSError:
            return
        except Exception as exc:  # a behaviour's own bug: seen by the test, not lost
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes to 127.0.0.1:port, read until the peer closes (bounded by timeout)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def parse_status(answer: bytes) -> int:
    """The status code of the first response in ``answer`` (0 when there is none)."""
    if not answer.startswith(b"HTTP/"):
        return 0
    return int(answer.split(b" ", 2)[1])
