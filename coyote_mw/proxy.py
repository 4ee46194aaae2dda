"""The HTTP relay: ``RemoteHandler`` forwards a matched request to a remote instance.

A sibling of the in-process handlers behind the same interface.  Under ASGI it uses
``coyote_mw.transport.Pool`` - a lean pooled HTTP/1.1 client on asyncio and httptools,
one per event loop - because a shared ``httpx.AsyncClient`` costs about 1.6 ms of CPU
per request in its pool; under WSGI a pooled ``httpx.Client`` per leader.  Both
stream bodies both ways.

What is forwarded: the canonical path (byte for byte when the request was already
canonical) and the raw query string; the headers minus hop-by-hop ones; ``Host`` set
to the instance's, the original in ``X-Forwarded-Host``, plus ``X-Forwarded-For`` /
``-Proto`` (and ``-Prefix`` under a mount).  Responses come back without hop-by-hop
headers and without the instance's ``Date`` and ``Server``: the host's server sends
its own, as nginx does.

Failures: a connect failure counts against the instance and, after ``EJECT_AFTER``
in a row, ejects it until its next heartbeat; an idempotent request is then retried
once on another instance (a POST or PATCH never is).  No instance left -> 502, or 503
"No healthy instance" when all are ejected; a read timeout -> 504; anything else the
instance does wrong -> 502 "Routing error", with the detail in the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from coyote_mw.apps import Closing, call_asgi_app
from coyote_mw.errors import BadRequest, HandlerTimeout, NoHealthyInstance, RoutingError
from coyote_mw.handlers import Dispatch, Handler, handler_failed, status_line
from coyote_mw.request import BODY_CUT_SHORT, read_wsgi_input, wsgi_body_length
from coyote_mw.transport import (
    ConnectError,
    Pool,
    ReadTimeout,
    TransportError,
    UpstreamResponse,
)

if TYPE_CHECKING:
    from coyote_mw.leader import Coyote

__all__ = ["EJECT_AFTER", "RemoteHandler"]

logger = logging.getLogger("coyote_mw.proxy")

EJECT_AFTER = 3
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
_HOP_BY_HOP_B = frozenset(h.encode() for h in HOP_BY_HOP)
# the WebSocket client writes its own handshake
_WS_HANDSHAKE = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = weakref.WeakKeyDictionary()


# Request headers the relay replaces or drops: hop-by-hop ones, the Host (the
# instance's goes instead), X-Forwarded-For (extended) and Expect (bodies stream anyway).
_REPLACED = _HOP_BY_HOP_B | {b"host", b"x-forwarded-for", b"expect"}


# the last loop's pool, held weakly: a closed loop and its pool must be free to go
_last_pool: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[Pool]] | None = None


def _pool() -> Pool:
    global _last_pool
    loop = asyncio.get_running_loop()
    last = _last_pool
    if last is not None and last[0]() is loop:
        pool = last[1]()
        if pool is not None:
            return pool
    pool = _pools.get(loop)
    if pool is None:
        # no read timeout of its own: the relay's watchdog bounds the wait for a head
        pool = _pools[loop] = Pool(read_timeout=None)
    _last_pool = (weakref.ref(loop), weakref.ref(pool))
    return pool


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


# Response headers the relay drops: hop-by-hop ones, and Date and Server, which the
# host's server adds to every response itself (uvicorn, gunicorn, Werkzeug do), so the
# instance's would go out twice.  nginx hides the same two by default.
_RESPONSE_DROP = _HOP_BY_HOP_B | {b"date", b"server"}


def _strip(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's headers to pass on (names lowercase): without ``_RESPONSE_DROP``
    and those the Connection header names."""
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for k, v in headers:
        if k in _RESPONSE_DROP:
            if k == b"connection":
                named = _connection_tokens(v)
            continue
        out.append((k, v))
    if named:
        out = [(k, v) for k, v in out if k not in named]
    return out


class RemoteHandler(Handler):
    kind = "remote"

    def __init__(self, url: str, coyote: Coyote) -> None:
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.netloc = parts.netloc.encode("latin-1")
        if self.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: an instance is an absolute http:// or https:// URL")
        self.coyote = coyote
        # https: verified with the leader's context (coyote.tls), per request, so a
        # configure(tls=...) applies to instances registered before it
        self.https = self.scheme == "https"
        self.failures = 0
        self.ejected = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RemoteHandler {self.url}{' ejected' if self.ejected else ''}>"

    def revive(self) -> None:
        """A heartbeat: the instance is alive, whatever happened before."""
        with self._lock:
            self.failures = 0
            if self.ejected:
                logger.info("instance %s is back: no longer ejected", self.url)
            self.ejected = False

    def _failed_to_connect(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= EJECT_AFTER and not self.ejected:
                self.ejected = True
                logger.warning(
                    "instance %s ejected after %d connect failures: %r",
                    self.url,
                    self.failures,
                    exc,
                )

    def _succeeded(self) -> None:
        if self.failures:
            with self._lock:
                self.failures = 0

    def _headers(
        self, headers: Iterable[tuple[bytes, bytes]], client: Any, scheme: str, d: Dispatch
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The headers to forward, and whether the request announces a body."""
        out: list[tuple[bytes, bytes]] = []
        forwarded_for = b""
        host = b""
        named: set[bytes] | None = None
        has_body = False
        for k, v in headers:
            if k in _REPLACED:
                if k == b"host":
                    host = v
                elif k == b"x-forwarded-for":
                    forwarded_for = v
                elif k == b"connection":
                    named = _connection_tokens(v)
                elif k == b"transfer-encoding":
                    has_body = True
                continue
            if k == b"content-length" and v != b"0":
                has_body = True
            out.append((k, v))
        if named:
            out = [(k, v) for k, v in out if k not in named]
        if client:
            ip = str(client[0]).encode("latin-1")
            forwarded_for = forwarded_for + b", " + ip if forwarded_for else ip
        if forwarded_for:
            out.append((b"x-forwarded-for", forwarded_for))
        out.append((b"x-forwarded-proto", scheme.encode("latin-1")))
        if host:
            out.append((b"x-forwarded-host", host))
        if d.root_path:
            out.append((b"x-forwarded-prefix", d.root_path.encode("latin-1")))
        out.append((b"host", self.netloc))
        return out, has_body

    def _target(self, d: Dispatch, query: bytes) -> bytes:
        target = (self.base + d.path.raw).encode("latin-1")
        return target + b"?" + query if query else target

    # -- ASGI: the lean transport ----------------------------------------------------

    async def serve_asgi(self, d: Dispatch, scope: Any, receive: Any, send: Any) -> int:
        # One coroutine for the whole exchange: every frame between the task and the
        # awaited response head costs on each suspension and resumption.
        relay = d.relay
        if not relay.try_enter():
            await relay._acquire()
        try:
            headers, streamed = self._headers(
                scope["headers"], scope.get("client"), scope.get("scheme", "http"), d
            )
            body: bytes | AsyncIterator[bytes] = _stream_request(receive) if streamed else b""
            target = self._target(d, scope.get("query_string", b""))
            instance = self
            while True:
                # The pool has no read timeout of its own: the relay's watchdog bounds
                # the wait for the head; the body's pauses are bounded in _stream_back.
                watch = relay.watch()
                try:
                    response = await _pool().request(
                        d.method,
                        instance.host,
                        instance.port,
                        target,
                        headers,
                        body,
                        instance.coyote.tls if instance.https else None,
                    )
                except asyncio.CancelledError:
                    if not watch.fired:
                        raise
                    raise relay.timed_out(watch) from None
                except ConnectError as exc:
                    instance._failed_to_connect(exc)
                    # Nothing was sent: an idempotent request with its body in hand may
                    # go to another instance, once.
                    other = None
                    if instance is self and d.method in IDEMPOTENT and isinstance(body, bytes):
                        other = _another(d, instance)
                    if other is None:
                        raise handler_failed(d, exc) from exc
                    headers = [(k, v) for k, v in headers if k != b"host"]
                    headers.append((b"host", other.netloc))
                    instance = other
                    continue
                except ReadTimeout:
                    raise HandlerTimeout(relay.timeout) from None
                except TransportError as exc:
                    raise handler_failed(d, exc) from exc
                finally:
                    watch.end()
                instance._succeeded()
                return await _stream_back(d, response, send)
        finally:
            relay.release()

    # -- WebSockets (ASGI) -------------------------------------------------------------

    async def serve_websocket(self, d: Dispatch, scope: Any, receive: Any, send: Any) -> None:
        """Open the same WebSocket on the instance, then pump messages both ways."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        query = scope.get("query_string", b"")
        ws = "wss" if self.https else "ws"
        url = f"{ws}://{self.host}:{self.port}{self._target(d, query).decode('latin-1')}"
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in self._headers(scope["headers"], scope.get("client"), "ws", d)[0]
            if k not in _WS_HANDSHAKE
        ]
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        try:
            upstream = await connect(
                url,
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=d.relay.timeout,
                max_size=None,
                ssl=self.coyote.tls if self.https else None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not isinstance(exc, InvalidStatus):
                self._failed_to_connect(exc)
            handler_failed(d, exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        self._succeeded()
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def client_to_upstream() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    await upstream.close(msg.get("code", 1000))
                    return
                data = msg.get("bytes")
                await upstream.send(data if data is not None else msg.get("text", ""))

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    key = "bytes" if isinstance(data, bytes) else "text"
                    await send({"type": "websocket.send", key: data})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code})

        tasks = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()

    # -- WSGI: a pooled httpx.Client ---------------------------------------------------

    def serve_wsgi(self, d: Dispatch, environ: dict[str, Any], start_response: Any) -> Any:
        relay = d.relay
        relay._acquire_sync()
        try:
            result = self._forward_sync(d, environ, start_response, retry=True)
        except BaseException:
            relay.release()
            raise
        return Closing(result, relay.release)

    def _forward_sync(
        self, d: Dispatch, environ: dict[str, Any], start_response: Any, retry: bool
    ) -> Iterable[bytes]:
        raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _environ_headers(environ)
        ]
        remote = environ.get("REMOTE_ADDR")
        headers, _ = self._headers(
            raw_headers, (remote, 0) if remote else None, environ.get("wsgi.url_scheme", "http"), d
        )
        # A body of known length goes on under its Content-Length; one the server
        # de-chunked (wsgi.input_terminated) streams on chunked, never held whole.
        length = wsgi_body_length(environ)
        content: bytes | Iterator[bytes] = (
            b"" if length == 0 else _read_input(environ["wsgi.input"], length)
        )
        target = self._target(d, environ.get("QUERY_STRING", "").encode("latin-1"))
        client = _sync_client(self.coyote)
        request = client.build_request(
            d.method,
            f"{self.scheme}://{self.host}:{self.port}{target.decode('latin-1')}",
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            content=content,
        )
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:
            self._failed_to_connect(exc)
            if retry and d.method in IDEMPOTENT and isinstance(content, bytes):
                other = _another(d, self)
                if other is not None:
                    return other._forward_sync(d, environ, start_response, retry=False)
            raise handler_failed(d, exc) from exc
        except httpx.TimeoutException:
            raise HandlerTimeout(d.relay.timeout) from None
        except httpx.HTTPError as exc:
            raise handler_failed(d, exc) from exc
        self._succeeded()
        back = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in _strip((k.lower(), v) for k, v in response.headers.raw)
        ]
        if d.method == "HEAD":
            response.close()
            start_response(status_line(response.status_code), back)
            return []
        # The first bytes before the head: a WSGI server sends the head with them anyway
        # (PEP 3333), and an instance that stalls before its body can still be answered
        # 504 - within the relay's timeout, as every wait on an instance is (a long-poll
        # or event stream must send something within it).
        # iter_raw() without a size passes bytes on as they come (no 64 KiB batches).
        stream = response.iter_raw()
        try:
            try:
                first = next(stream, b"")
            except httpx.TimeoutException:
                raise HandlerTimeout(d.relay.timeout) from None
            except httpx.HTTPError as exc:
                raise handler_failed(d, exc) from exc
            start_response(status_line(response.status_code), back)
        except BaseException:
            response.close()  # its connection goes back now, not when collected
            raise
        return _HttpxBody(d, response, first, stream)

    async def acall(self, d: Dispatch, request: Any) -> Any:
        return await call_asgi_app(_AsASGI(self), d, request)

    def call(self, d: Dispatch, request: Any) -> Any:
        return d.relay.submit_coroutine(self.acall(d, request)).result()


def _another(d: Dispatch, failed: RemoteHandler) -> RemoteHandler | None:
    """Another healthy instance of the route to retry on, if there is one."""
    try:
        other = d.match.endpoint.pick(exclude=failed)
    except NoHealthyInstance:
        return None
    return other if isinstance(other, RemoteHandler) else None


class _AsASGI(Handler):
    def __init__(self, remote: RemoteHandler) -> None:
        self.remote = remote

    async def serve_asgi(self, d: Dispatch, scope: Any, receive: Any, send: Any) -> int:
        return await self.remote.serve_asgi(d, scope, receive, send)


async def _stream_request(receive: Any) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RoutingError("the client went away while sending its body")
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            yield chunk


async def _stream_back(d: Dispatch, response: UpstreamResponse, send: Any) -> int:
    status = response.status
    whole = response.take_whole()  # the usual small answer: all here already
    if whole is not None:
        # the connection is back in the pool already: nothing to clean up on failure
        await send(
            {"type": "http.response.start", "status": status, "headers": _strip(response.headers)}
        )
        await send({"type": "http.response.body", "body": b"" if d.method == "HEAD" else whole})
        return status
    try:
        await send(
            {"type": "http.response.start", "status": status, "headers": _strip(response.headers)}
        )
        if d.method != "HEAD":
            # no byte for the relay's timeout: cut the response off (the head is sent)
            async for chunk in response.aiter_body(d.relay.timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except TransportError as exc:
        # Too late for a 502: log why, and leave the response unfinished so the
        # server closes the connection and the client sees a truncated body.
        handler_failed(d, exc)
        return status
    finally:
        await response.aclose()
    await send({"type": "http.response.body", "body": b""})
    return status


def _environ_headers(environ: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-"), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-"), value


def _read_input(stream: Any, length: int | None) -> Iterator[bytes]:
    """``length`` bytes of ``wsgi.input``, or all of it up to its end when None."""
    if length is None:
        while chunk := read_wsgi_input(stream, 64 * 1024):
            yield chunk
        return
    remaining = length
    while remaining > 0:
        chunk = read_wsgi_input(stream, min(64 * 1024, remaining))
        if not chunk:
            raise BadRequest(BODY_CUT_SHORT)  # less than its Content-Length
        remaining -= len(chunk)
        yield chunk


_clients: weakref.WeakKeyDictionary[Any, httpx.Client] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def _sync_client(coyote: Coyote) -> httpx.Client:
    with _clients_lock:
        client = _clients.get(coyote)
        if client is None:
            client = _clients[coyote] = httpx.Client(
                verify=coyote.tls,
                timeout=httpx.Timeout(coyote.relay.timeout, connect=5.0),
                limits=httpx.Limits(max_connections=coyote.relay.concurrency * 2),
                follow_redirects=False,
            )
        return client


class _HttpxBody:
    """A relayed body under WSGI.  Past the first bytes a failure can only cut the
    response short: it is logged, and raised so the server closes the connection."""

    def __init__(
        self, d: Dispatch, response: httpx.Response, first: bytes, rest: Iterator[bytes]
    ) -> None:
        self.d = d
        self.response = response
        self.first = first
        self.rest = rest

    def __iter__(self) -> Iterator[bytes]:
        if self.first:
            yield self.first
        try:
            yield from self.rest
        except httpx.HTTPError as exc:
            raise handler_failed(self.d, exc) from exc

    def close(self) -> None:
        self.response.close()
