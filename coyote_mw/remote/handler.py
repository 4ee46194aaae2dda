"""The HTTP relay: ``RemoteHandler`` forwards a matched request to a remote instance.

A sibling of the in-process handlers behind the same interface.  Under ASGI it uses
``coyote_mw.remote.transport.Pool`` - a lean pooled HTTP/1.1 client on asyncio and httptools,
one per event loop - because a shared ``httpx.AsyncClient`` costs about 1.6 ms of CPU
per request in its pool; under WSGI a pooled ``httpx.Client`` per leader.  Both
stream bodies both ways.  The pools and the settings a handler relays by are its
leader's ``Upstreams`` (``coyote_mw.remote.upstreams``).

What is forwarded: the canonical path (byte for byte when the request was already
canonical) and the raw query string; the headers and framing ``coyote_mw.http.forwarding``
decides (hop-by-hop ones dropped, ``Host`` the instance's, ``X-Forwarded-*`` by the
``trusted_proxies`` policy, ``Via``, ``X-Request-ID``, the relay's own body framing).
Responses come back without hop-by-hop headers and without the instance's ``Date``
and ``Server``: the host's server sends its own, as nginx does.

Failures count against the instance and eject it for a while (``coyote_mw.remote.health``);
after a connect failure, where nothing was sent, an idempotent request is retried once
on another instance (a POST or PATCH never is).  No instance left -> 502, or 503
"No healthy instance" when all are ejected; a read timeout -> 504; anything else the
instance does wrong -> 502 "Routing error", with the detail in the log.  A response
whose head went out already and then fails (a reset, a timeout, ``response_timeout``
over) is cut: the client's connection closes without the response's end.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from coyote_mw.errors import (
    BadRequest,
    HandlerTimeout,
    NoHealthyInstance,
    ResponseCut,
    RoutingError,
)
from coyote_mw.handlers.apps import Closing, call_asgi_app
from coyote_mw.handlers.base import Dispatch, Handler, instance_failed, status_line
from coyote_mw.http.request import BODY_CUT_SHORT, read_wsgi_input, wsgi_body_length
from coyote_mw.http.urls import canonical_url
from coyote_mw.remote.health import EJECT_AFTER, InstanceHealth
from coyote_mw.remote.transport import (
    IDEMPOTENT_METHODS,
    ConnectError,
    PoolTimeout,
    ReadTimeout,
    TransportError,
    UpstreamResponse,
)
from coyote_mw.remote.upstreams import Upstreams

__all__ = ["EJECT_AFTER", "RemoteHandler", "strip_response_headers"]

logger = logging.getLogger("coyote_mw.proxy")

IDEMPOTENT = IDEMPOTENT_METHODS
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


def _connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


# Response headers the relay drops: hop-by-hop ones, and Date and Server, which the
# host's server adds to every response itself (uvicorn, gunicorn, Werkzeug do), so the
# instance's would go out twice.  nginx hides the same two by default.
_RESPONSE_DROP = _HOP_BY_HOP_B | {b"date", b"server"}


def strip_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
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


class RemoteHandler(InstanceHealth, Handler):
    kind = "remote"
    upstreams: Upstreams

    def __init__(self, url: str, upstreams: Upstreams) -> None:
        url = canonical_url(url)  # InvalidInstanceURL (a ValueError) saying how to fix it
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.netloc = parts.netloc.encode("latin-1")
        if self.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: an instance is an absolute http:// or https:// URL")
        # an IPv6 address goes in brackets in a URL (RFC 3986 3.2.2), bare to connect()
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        # the WSGI relay's URL: httpx gets the target apart (``_forward_sync``)
        self.origin = httpx.URL(f"{self.scheme}://{authority}/")
        self.ws_origin = f"{'wss' if self.scheme == 'https' else 'ws'}://{authority}"
        self.upstreams = upstreams
        # https: verified with the leader's context (upstreams.tls), per request, so a
        # configure(tls=...) applies to instances registered before it
        self.https = self.scheme == "https"

    def __repr__(self) -> str:
        return f"<RemoteHandler {self.url}{' ejected' if self.ejected else ''}>"

    def forward_headers(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        client: Any,
        scheme: str,
        d: Dispatch,
        version: str = "1.1",
        make_id: bool = True,
    ) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
        """The headers to forward (``coyote_mw.http.forwarding``), the body's checked length
        (None: unknown), and whether the request announces a body (``make_id``: as
        ``Forwarding.forward``'s)."""
        out, length, has_body, d.request_id = self.upstreams.forwarding.forward(
            headers,
            str(client[0]) if client else None,
            scheme,
            d.root_path,
            self.netloc,
            version,
            d.request_id,
            make_id,
        )
        return out, length, has_body

    def target(self, d: Dispatch, query: bytes) -> bytes:
        """The request target sent to the instance: its base path, the route's path
        (``Dispatch.path``), the query as the client sent it."""
        target = (self.base + d.path.raw).encode("latin-1")
        return target + b"?" + query if query else target

    # -- ASGI: the lean transport ----------------------------------------------------

    async def serve_asgi(self, d: Dispatch, scope: Any, receive: Any, send: Any) -> int:
        # One coroutine for the whole exchange: every frame between the task and the
        # awaited response head costs on each suspension and resumption.
        relay = d.relay
        # the headers as checked, before anything reads the body: a server may append
        # the body's trailer fields to scope["headers"] (uvicorn does)
        headers, length, streamed = self.forward_headers(
            scope["headers"],
            scope.get("client"),
            scope.get("scheme", "http"),
            d,
            scope.get("http_version", "1.1"),
        )
        slot = relay.admit(receive)  # the admission's ``async with``, spelled out
        if not slot.enter():
            await slot.wait()  # queued: a client that leaves, leaves the queue
        try:
            body: bytes | AsyncIterator[bytes] = b""
            received = None  # a streamed body: [whether the client's whole body came]
            if streamed:
                received = [False]
                body = _stream_request(slot.receive, length, received)
            target = self.target(d, scope.get("query_string", b""))
            instance = self
            while True:
                # The pool has no read timeout of its own: the relay's deadline bounds
                # the wait for the head (a retry on another instance included); the
                # body's pauses are bounded in _stream_back.
                try:
                    upstreams = instance.upstreams
                    # the loop as the admission found it
                    response = await upstreams.pool(slot.dog.loop).request(
                        d.method,
                        instance.host,
                        instance.port,
                        target,
                        headers,
                        body,
                        upstreams.tls if instance.https else None,
                        upstreams.policy.max_response_head,
                    )
                except asyncio.CancelledError:
                    # past the deadline (the slot answers 504): the instance's failure
                    # once it has the whole request; before, the client may be the slow
                    # one (its body streams through as it comes)
                    if slot.fired and (received is None or received[0]):
                        instance.gateway_failed("no response head within the timeout", d)
                    raise
                except ConnectError as exc:
                    if not isinstance(exc, PoolTimeout):  # a busy pool is not its failure
                        instance.connect_failed(exc)
                    # Nothing was sent: an idempotent request with its body in hand may
                    # go to another instance, once.
                    other = None
                    if instance is self and d.method in IDEMPOTENT and isinstance(body, bytes):
                        other = _another(d, instance)
                    if other is None:
                        raise instance_failed(d, instance.url, exc) from exc
                    instance_failed(d, instance.url, exc, retrying_on=other.url)
                    d.retried_on = other.url
                    headers = [(k, v) for k, v in headers if k != b"host"]
                    headers.append((b"host", other.netloc))
                    instance = other
                    continue
                except ReadTimeout as exc:
                    instance.gateway_failed(exc, d)
                    raise HandlerTimeout(relay.timeout) from None
                except TransportError as exc:
                    instance.gateway_failed(exc, d)
                    raise instance_failed(d, instance.url, exc) from exc
                slot.unwatch()  # the body streams back under timeouts of its own
                status = await _stream_back(d, response, send, instance, slot.deadline)
                break
        except BaseException as exc:
            timeout = slot.leave(exc)  # the deadline passed: 504
            if timeout is None:
                raise
            raise timeout from None
        slot.leave()
        return status

    # -- WebSockets (ASGI) -------------------------------------------------------------

    async def serve_websocket(self, d: Dispatch, scope: Any, receive: Any, send: Any) -> None:
        """Open the same WebSocket on the instance, then pump messages both ways."""
        query = scope.get("query_string", b"")
        url = self.ws_origin + self.target(d, query).decode("latin-1")
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        refused = self.upstreams.forwarding.check_asgi(scope)
        if refused is not None:
            logger.info("WebSocket %s refused: %s", d.path.raw, refused)
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        sockets = self.upstreams.websockets
        if not sockets.take():
            logger.warning(
                "WebSocket %s refused: max_websockets (%d) are open", d.path.raw, sockets.limit
            )
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        try:
            await self._relay_websocket(d, scope, receive, send, url)
        finally:
            sockets.give_back()

    async def _relay_websocket(
        self, d: Dispatch, scope: Any, receive: Any, send: Any, url: str
    ) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in self.forward_headers(
                scope["headers"],
                scope.get("client"),
                # X-Forwarded-Proto names the HTTP scheme of the handshake, as Envoy's does
                "https" if scope.get("scheme") == "wss" else "http",
                d,
            )[0]
            if k not in _WS_HANDSHAKE
        ]
        try:
            upstream = await connect(
                url,
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=d.relay.timeout,
                max_size=None,
                ssl=self.upstreams.tls if self.https else None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            if not isinstance(exc, InvalidStatus):
                self.connect_failed(exc)
            instance_failed(d, self.url, exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        if self.failures:
            self.failures = 0
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
        # queued, a client that leaves, leaves the queue; the slot is held until the
        # server closes the response
        with d.relay.admit_sync(environ) as slot:
            result = self._forward_sync(d, environ, start_response, retry=True)
            return Closing(result, slot.hand_over())

    def _forward_sync(
        self, d: Dispatch, environ: dict[str, Any], start_response: Any, retry: bool
    ) -> Iterable[bytes]:
        # A body of known length goes on under its Content-Length; one the server
        # de-chunked (wsgi.input_terminated) streams on chunked, never held whole.
        length = wsgi_body_length(environ)
        remote = environ.get("REMOTE_ADDR")
        headers, _, _ = self.forward_headers(
            _environ_headers(environ, length != 0),
            (remote, 0) if remote else None,
            environ.get("wsgi.url_scheme", "http"),
            d,
            environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:],
        )
        content: bytes | Iterator[bytes] = (
            b"" if length == 0 else _read_input(environ["wsgi.input"], length)
        )
        query = environ.get("QUERY_STRING", "").encode("latin-1")
        if _NOT_IN_TARGET.search(query) is not None:
            query = _NOT_IN_TARGET.sub(_escape_byte, query)
        client = self.upstreams.sync_client()
        request = client.build_request(
            d.method,
            self.origin,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            content=content,
            # the target as it is, query byte for byte: httpx would re-encode the URL's
            # (`"<>` as %22%3C%3E); httpcore sends the "target" extension unchanged
            extensions={"target": self.target(d, query)},
        )
        policy = self.upstreams.policy
        started = time.monotonic()
        try:
            response = client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self.connect_failed(exc)
            if retry and d.method in IDEMPOTENT and isinstance(content, bytes):
                other = _another(d, self)
                if other is not None:
                    instance_failed(d, self.url, exc, retrying_on=other.url)
                    d.retried_on = other.url
                    return other._forward_sync(d, environ, start_response, retry=False)
            raise instance_failed(d, self.url, exc) from exc
        except httpx.TimeoutException as exc:
            if not isinstance(exc, httpx.PoolTimeout):  # a busy pool is not its failure
                self.gateway_failed(exc, d)
            raise HandlerTimeout(d.relay.timeout) from None
        except httpx.HTTPError as exc:
            self.gateway_failed(exc, d)
            raise instance_failed(d, self.url, exc) from exc
        refused = _refuse_head(response, policy.max_response_head)
        if refused is not None:
            response.close()
            self.gateway_failed(refused, d)
            raise instance_failed(d, self.url, refused) from None
        back = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in strip_response_headers((k.lower(), v) for k, v in response.headers.raw)
        ]
        if d.method == "HEAD":
            response.close()
            self.answered(response.status_code, d)
            start_response(status_line(response.status_code), back)
            return []
        # the body's pauses: stream_idle_timeout (httpcore reads the request's timeout
        # when the body starts); its total: response_timeout, checked as bytes come
        idle = d.relay.timeout if policy.stream_idle_timeout is None else policy.stream_idle_timeout
        deadline = None
        if policy.response_timeout:
            deadline = started + policy.response_timeout
            idle = max(min(idle, deadline - time.monotonic()), 0.001)
        if idle != d.relay.timeout:
            request.extensions["timeout"] = {**request.extensions["timeout"], "read": idle}
        # The first bytes before the head: a WSGI server sends the head with them anyway
        # (PEP 3333), and an instance that stalls before its body can still be answered
        # 504 - within the relay's timeout, as every wait on an instance is (a long-poll
        # or event stream must send something within it).
        # iter_raw() without a size passes bytes on as they come (no 64 KiB batches).
        stream = response.iter_raw()
        try:
            try:
                first = next(stream, b"")
            except httpx.TimeoutException as exc:
                self.gateway_failed(exc, d)
                raise HandlerTimeout(d.relay.timeout) from None
            except httpx.HTTPError as exc:
                self.gateway_failed(exc, d)
                raise instance_failed(d, self.url, exc) from exc
            start_response(status_line(response.status_code), back)
        except BaseException:
            response.close()  # its connection goes back now, not when collected
            raise
        # its head judged now: the client may have the last bytes (and send its next
        # request) before the server resumes this body's iterator
        self.head_answered(response.status_code, d)
        return _HttpxBody(d, self, response, first, stream, deadline)

    async def acall(self, d: Dispatch, request: Any) -> Any:
        return await call_asgi_app(self, d, request)

    def call(self, d: Dispatch, request: Any) -> Any:
        return d.relay.submit_coroutine(self.acall(d, request)).result()


# Bytes a request line cannot carry (RFC 9112 3.2: visible ASCII only), which h11
# refuses: a server may hand over a query with raw UTF-8 or spaces; they go on escaped
_NOT_IN_TARGET = re.compile(rb"[^\x21-\x7e]")


def _escape_byte(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


def _refuse_head(response: httpx.Response, limit: int) -> httpx.RemoteProtocolError | None:
    """Why a response head httpx took must not be relayed (what the lean transport
    refuses itself), or None.  h11 refuses any Transfer-Encoding but one ``chunked``,
    and httpcore a head over 100 KiB; ``max_response_head`` may be lower."""
    if response.status_code > 599:  # RFC 9110 15; h11 reads any three digits
        return httpx.RemoteProtocolError(f"the upstream sent status {response.status_code}")
    size = 16
    framing = 0
    for k, v in response.headers.raw:
        size += len(k) + len(v) + 4
        lower = k.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            framing |= 1 if lower == b"content-length" else 2
    if size > limit:
        return httpx.RemoteProtocolError("the instance's response head is too large")
    if framing == 3:  # RFC 9112 6.3: a sign of smuggling; nginx refuses it too
        return httpx.RemoteProtocolError(
            "the instance sent both Content-Length and Transfer-Encoding"
        )
    return None


def _another(d: Dispatch, failed: RemoteHandler) -> RemoteHandler | None:
    """Another healthy instance of the route to retry on, if there is one."""
    try:
        other = d.match.endpoint.pick(exclude=failed)
    except NoHealthyInstance:
        return None
    return other if isinstance(other, RemoteHandler) else None


async def _stream_request(
    receive: Any, length: int | None, received: list[bool]
) -> AsyncIterator[bytes]:
    """The request body from ``receive``; with a declared ``length`` (forwarded as the
    Content-Length) exactly that many bytes, or the exchange fails and its connection
    is dropped: the relay never sends a body that disagrees with its own framing.
    ``received[0]`` turns True once the client's whole body came."""
    more = True
    left = -1 if length is None else length
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RoutingError("the client went away while sending its body")
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        if chunk:
            if length is not None:
                left -= len(chunk)
                if left < 0:
                    raise RoutingError(f"the request body is longer than its length {length}")
            yield chunk
    if left > 0:
        raise RoutingError(f"the request body is shorter than its length {length}")
    received[0] = True


async def _stream_back(
    d: Dispatch, response: UpstreamResponse, send: Any, instance: RemoteHandler, head_by: float
) -> int:
    """Send the response on; ``head_by``: the relay's deadline for its head."""
    status = response.status
    whole = response.take_whole()  # the usual small answer: all here already
    if whole is not None:
        if instance.failures or 501 < status < 505:  # the usual success costs no call
            instance.answered(status, d)
        # the connection is back in the pool already: nothing to clean up on failure
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": strip_response_headers(response.headers),
            }
        )
        await send({"type": "http.response.body", "body": b"" if d.method == "HEAD" else whole})
        return status
    try:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": strip_response_headers(response.headers),
            }
        )
        if d.method != "HEAD":
            # No byte for stream_idle_timeout, or the whole response past its
            # response_timeout: cut the response off (the head is sent).
            # (response_timeout runs from where the relay's timeout started)
            timeout = d.relay.timeout
            policy = instance.upstreams.policy
            total = policy.response_timeout
            idle = policy.stream_idle_timeout
            async for chunk in response.aiter_body(
                timeout if idle is None else idle, head_by - timeout + total if total else None
            ):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except TransportError as exc:
        # Too late for a 502: log why, and leave the response unfinished so the
        # server closes the connection and the client sees a truncated body.
        instance.gateway_failed(exc, d)
        instance_failed(d, instance.url, exc)
        return status
    finally:
        await response.aclose()
    instance.answered(status, d)
    await send({"type": "http.response.body", "body": b""})
    return status


# A client header spelled with an underscore (``Content_Length: 60``) becomes
# HTTP_CONTENT_LENGTH under servers that keep such names (granian): never a length or a
# type, which only CONTENT_LENGTH / CONTENT_TYPE carry (the relay frames the body itself)
_ALIASES = frozenset({"HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"})


def _environ_headers(environ: dict[str, Any], body: bool) -> list[tuple[bytes, bytes]]:
    """The request's headers from a WSGI environ (names lowercase).  ``body``: whether a
    body follows; without one, a Content-Type the server made up is not passed on."""
    out = []
    for key, value in environ.items():
        if key[:5] == "HTTP_":
            if key not in _ALIASES:
                out.append(
                    (key[5:].replace("_", "-").lower().encode("latin-1"), value.encode("latin-1"))
                )
        elif key == "CONTENT_LENGTH":
            if value:
                out.append((b"content-length", value.encode("latin-1")))
        elif key == "CONTENT_TYPE" and value and (body or not _made_up_type(environ, value)):
            out.append((b"content-type", value.encode("latin-1")))
    return out


def _made_up_type(environ: dict[str, Any], value: str) -> bool:
    """Whether CONTENT_TYPE may be the server's invention: wsgiref's (``WSGIServer/``)
    sets ``text/plain`` on every request that has no Content-Type."""
    return value == "text/plain" and environ.get("SERVER_SOFTWARE", "").startswith("WSGIServer/")


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


class _HttpxBody:
    """A relayed body under WSGI.  Past the first bytes a failure can only cut the
    response short: it is logged, and raised so the server closes the connection."""

    def __init__(
        self,
        d: Dispatch,
        instance: RemoteHandler,
        response: httpx.Response,
        first: bytes,
        rest: Iterator[bytes],
        deadline: float | None,
    ) -> None:
        self.d = d
        self.instance = instance
        self.response = response
        self.first = first
        self.rest = rest
        self.deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        if self.first:
            yield self.first
        deadline = self.deadline
        try:
            for chunk in self.rest:
                if deadline is not None and time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the response took longer than response_timeout")
                yield chunk
        except httpx.HTTPError as exc:
            if not 501 < self.response.status_code < 505:  # counted by its head already
                self.instance.gateway_failed(exc, self.d)
            raise ResponseCut(str(instance_failed(self.d, self.instance.url, exc))) from exc
        if not 501 < self.response.status_code < 505:  # counted by its head already
            self.instance.answered(self.response.status_code, self.d)

    def close(self) -> None:
        self.response.close()
