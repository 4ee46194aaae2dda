"""``precedence="host"``: the request body the host app read, kept for coyote's handler.

A host that reads the body and then answers 404 (a framework validating a body before
its routing gives up) has consumed it; coyote's handler must see the same body, not an
empty one nor a read that waits for bytes the client already sent.  What the host read
is kept, up to ``max_body`` bytes, and read again in front of whatever the host left
unread.  Past ``max_body`` it cannot be replayed: the request is refused with 413.
Only a middleware with ``precedence="host"`` uses this; nothing here is on the path of
other requests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from coyote_mw.http.types import Environ, Message, Receive

__all__ = ["ASGIKeeper", "WSGIKeeper"]


class _Kept:
    """Chunks kept while their total stays within ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def keep(self, data: bytes) -> None:
        if self.over or not data:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
            self.chunks.clear()
        else:
            self.chunks.append(data)


class ASGIKeeper:
    """Wraps ``receive`` for the host app; ``replay()`` is coyote's ``receive`` after."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._kept = _Kept(limit)
        self._read = False  # the host received at least one http.request message
        self._ended = False  # ... and the last one it received ended the body

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._read = True
            self._kept.keep(message.get("body", b""))
            self._ended = not message.get("more_body", False)
        return message

    def replay(self) -> Receive | None:
        """``receive`` giving the body again, then the rest; None when over the limit."""
        if not self._read:
            return self._receive
        if self._kept.over:
            return None
        pending: Message | None = {
            "type": "http.request",
            "body": b"".join(self._kept.chunks),
            "more_body": not self._ended,
        }
        receive = self._receive

        async def replaying() -> Message:
            nonlocal pending
            if pending is not None:
                message, pending = pending, None
                return message
            return await receive()

        return replaying


class WSGIKeeper:
    """Puts a keeping ``wsgi.input`` in ``environ`` for the host; ``replay()`` puts back
    one that reads the kept bytes again, then the rest."""

    def __init__(self, environ: Environ, limit: int) -> None:
        self._stream = environ["wsgi.input"]
        self._kept = _Kept(limit)
        environ["wsgi.input"] = _KeepingInput(self._stream, self._kept)

    def replay(self, environ: Environ) -> bool:
        """False when the host read more than the limit: the body cannot be replayed."""
        if self._kept.over:
            return False
        if self._kept.size:
            environ["wsgi.input"] = _ReplayInput(b"".join(self._kept.chunks), self._stream)
        else:
            environ["wsgi.input"] = self._stream
        return True


class _Input:
    """The read methods of PEP 3333's ``wsgi.input`` on top of ``read`` and ``readline``."""

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readline(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _read(stream: Any, size: int | None) -> bytes:
    return stream.read() if size is None or size < 0 else stream.read(size)  # type: ignore[no-any-return]


def _readline(stream: Any, size: int | None) -> bytes:
    return stream.readline() if size is None or size < 0 else stream.readline(size)  # type: ignore[no-any-return]


class _KeepingInput(_Input):
    def __init__(self, stream: Any, kept: _Kept) -> None:
        self._stream = stream
        self._kept = kept

    def read(self, size: int | None = -1) -> bytes:
        data = _read(self._stream, size)
        self._kept.keep(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = _readline(self._stream, size)
        self._kept.keep(data)
        return data


class _ReplayInput(_Input):
    def __init__(self, kept: bytes, rest: Any) -> None:
        self._head = io.BytesIO(kept)
        self._rest = rest

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._head.read() + _read(self._rest, size)
        return self._head.read(size) or _read(self._rest, size)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(-1 if size is None else size)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        left = -1 if size is None or size < 0 else size - len(line)
        return line + _readline(self._rest, left)
