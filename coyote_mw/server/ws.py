"""A WebSocket connection (RFC 6455) after its HTTP/1.1 handshake, on the sans-I/O
``websockets.server.ServerProtocol``: it checks the handshake (400/426 when it is not
one), parses and masks frames, answers pings and bounds a message to
``ws_max_message`` bytes (1009 above). Messages wait for the app in a queue of
``ws_max_queue``; reading pauses while it is full."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from coyote_mw.server.wire import Host, unwind

__all__ = ["WebSocketConnection"]

log = logging.getLogger("coyote_mw.server")


class _ClientGone(OSError):
    """Sent on a WebSocket the client has left (ASGI: an ``OSError``)."""


class WebSocketConnection(asyncio.Protocol):
    def __init__(
        self, server: Host, transport: asyncio.Transport, http: dict[str, Any], url: bytes
    ) -> None:
        self.server = server
        self.loop = server.loop
        self.transport = transport
        self.http = http
        self.scheme = http["scheme"]  # the server's ticker unwinds a closed one over TLS
        self.unwound = False
        self.url = url
        self.protocol = ServerProtocol(max_size=server.options.ws_max_message, logger=log)
        self.queue: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.write_paused = False
        self.writable = asyncio.Event()  # set while the client reads what is written
        self.writable.set()
        self.accepted = False
        self.closed = False  # no more frames from the app
        self.gone = False
        self.fragments: list[bytes] = []
        self.text = False
        self.response: Any = None
        self.task: asyncio.Task[None] | None = None

    def start(self, rest: bytes) -> None:
        self.server.connections.add(self)
        scope = self.http
        head = [b"GET ", self.url, b" HTTP/1.1\r\n"]
        for name, value in scope["headers"]:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.protocol.receive_data(b"".join(head) + rest)
        events = self.protocol.events_received()
        request = events[0] if events and isinstance(events[0], Request) else None
        if request is None:
            self._flush()
            self.transport.close()
            return
        self.response = self.protocol.accept(request)
        if self.response.status_code != 101:  # not a valid handshake
            self.protocol.send_response(self.response)
            self._flush()
            self.transport.close()
            return
        self.scope = {
            **scope,
            "type": "websocket",
            "scheme": "wss" if scope["scheme"] == "https" else "ws",
            "subprotocols": [
                p.strip()
                for v in request.headers.get_all("Sec-WebSocket-Protocol")
                for p in v.split(",")
                if p.strip()
            ],
        }
        del self.scope["method"]
        self.queue.append({"type": "websocket.connect"})
        self.task = self.loop.create_task(self.run())
        self.server.track(self.task)
        self._events(events[1:])

    # -- the transport's calls ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._events(self.protocol.events_received())

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._events(self.protocol.events_received())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._disconnect(1006 if not self.closed else 1005)
        self.writable.set()

    def pause_writing(self) -> None:
        # every sender waits; reading pauses too, or the pongs (and the close) the
        # protocol answers with would pile up for a client that does not read
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.server.options.send_timeout
        self.writable.clear()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = 0.0
        self.writable.set()
        if not self.paused and not self.gone:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The server stops: 1012 (service restart)."""
        if self.accepted and not self.closed and self.protocol.state is State.OPEN:
            self.protocol.send_close(1012)
            self.closed = True
            self._flush()
        self._disconnect(1012)
        self.transport.close()

    def expired(self) -> None:  # no timer of its own: the app owns an open WebSocket
        pass

    def stalled(self) -> None:
        """Frames waited ``send_timeout`` for the client to read: cut off."""
        log.info("a WebSocket client read nothing in %ss: closed", self.server.options.send_timeout)
        self.write_deadline = 0.0
        self.transport.abort()

    def unwinding(self) -> None:
        """Closed over TLS: as an HTTP connection's (``H1Connection.unwinding``)."""
        self.unwound = unwind(self.transport, self.unwound)

    state = 2  # the server's ticker leaves it alone (busy)
    deadline = 0.0
    write_deadline = 0.0

    # -- frames in ---------------------------------------------------------------------

    def _events(self, events: list[Any]) -> None:
        for event in events:
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.text, self.fragments = event.opcode is Opcode.TEXT, [bytes(event.data)]
            elif event.opcode is Opcode.CONT:
                self.fragments.append(bytes(event.data))
            elif event.opcode is Opcode.CLOSE:
                close = self.protocol.close_rcvd
                self._disconnect(close.code if close else 1005)
                continue
            else:  # ping (answered by the protocol) and pong
                continue
            if event.fin:
                data = b"".join(self.fragments)
                self.fragments = []
                message: dict[str, Any]
                if self.text:
                    try:
                        message = {"type": "websocket.receive", "text": data.decode()}
                    except UnicodeDecodeError:
                        self.protocol.fail(1007, "invalid UTF-8")
                        break
                else:
                    message = {"type": "websocket.receive", "bytes": data}
                self._put(message)
        self._flush()
        if self.protocol.state in (State.CLOSING, State.CLOSED):
            # the client closed (answered above) or broke the protocol (failed above)
            self._disconnect(self.protocol.close_code or 1006)
            self.transport.close()

    def _put(self, message: dict[str, Any]) -> None:
        self.queue.append(message)
        if len(self.queue) >= self.server.options.ws_max_queue and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _disconnect(self, code: int) -> None:
        if not self.gone:
            self.gone = True
            self.queue.append({"type": "websocket.disconnect", "code": code})
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _flush(self) -> None:
        out = self.protocol.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.writelines(out)

    # -- the app -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.server.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if not isinstance(exc, _ClientGone):
                log.error("the app failed on the WebSocket %s", self.scope["path"], exc_info=exc)
            if not self.accepted:
                self._reject(500)
            self.transport.close()
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            if not self.accepted:
                log.error("the app returned without accepting the WebSocket %s", self.scope["path"])
                self._reject(500)
            elif not self.closed:
                self.protocol.send_close(1000)
                self._flush()
            self.transport.close()

    async def receive(self) -> dict[str, Any]:
        while not self.queue:
            self.waiter = self.loop.create_future()
            await self.waiter
            self.waiter = None
        message = self.queue.popleft()
        if self.paused and len(self.queue) < self.server.options.ws_max_queue // 2 + 1:
            self.paused = False
            if not self.gone and not self.write_paused:
                self.transport.resume_reading()
        if message["type"] == "websocket.disconnect":
            self.queue.appendleft(message)  # said again to any later receive
        return message

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.gone and self.accepted:
            raise _ClientGone("the client has left the WebSocket")
        if not self.accepted:
            if kind == "websocket.accept":
                response = self.response
                for name, value in message.get("headers", ()):
                    response.headers[name.decode("latin-1")] = value.decode("latin-1")
                subprotocol = message.get("subprotocol")
                if subprotocol:
                    response.headers["Sec-WebSocket-Protocol"] = subprotocol
                self.accepted = True
                self.protocol.send_response(response)
                self._flush()
            elif kind == "websocket.close":
                self.accepted = self.closed = True
                self._reject(403)
                self._disconnect(1006)
                self.transport.close()
            else:
                raise RuntimeError(f"expected 'websocket.accept' or '.close', got {kind!r}")
            return
        if self.closed:
            raise RuntimeError(f"{kind!r} after the WebSocket was closed")
        try:
            if kind == "websocket.send":
                text = message.get("text")
                if text is not None:
                    self.protocol.send_text(text.encode())
                else:
                    self.protocol.send_binary(message.get("bytes") or b"")
            elif kind == "websocket.close":
                self.protocol.send_close(message.get("code", 1000), message.get("reason") or "")
                self.closed = True
            else:
                raise RuntimeError(f"expected 'websocket.send' or 'websocket.close', got {kind!r}")
        except InvalidState:
            raise _ClientGone("the WebSocket is closing") from None
        self._flush()
        if self.write_paused and not self.gone:
            await self.writable.wait()

    def _reject(self, status: int) -> None:
        response = self.protocol.reject(status, "")
        self.protocol.send_response(response)
        self._flush()
