"""What a handler receives: ``Request``.

The body is not read until a handler asks for it, and then through one of two
twins, as in httpx: ``read()`` / ``json()`` / ``form()`` for ``def`` handlers and
``await aread()`` / ``await ajson()`` / ``await aform()`` for ``async def`` handlers,
with ``iter_bytes()`` / ``aiter_bytes()`` to stream it.  Reading a body over
``max_body`` bytes into memory is refused with 413 (streaming it is not limited);
malformed JSON or form data with 400.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.datastructures import Headers, MultiDict
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from coyote_mw.errors import BadRequest, LengthRequired, PayloadTooLarge
from coyote_mw.http.forwarding import _REQUEST_ID
from coyote_mw.http.types import Receive

__all__ = ["Body", "Request", "read_wsgi_input", "wsgi_body_length"]

CHUNK = 64 * 1024


class Body:
    """A request body that is read at most once, from wherever it comes."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._data: bytes | None = None

    def _check(self, size: int) -> None:
        if size > self.max_body:
            raise PayloadTooLarge(self.max_body)

    # ``max_body`` bounds what is buffered in memory (read, json, form); a handler that
    # streams the body (iter_bytes / aiter_bytes) takes any size, chunk by chunk.

    def _declared(self) -> int | None:
        return None

    def read(self) -> bytes:
        if self._data is None:
            self._check(self._declared() or 0)
            chunks: list[bytes] = []
            size = 0
            for chunk in self.iter_bytes():
                size += len(chunk)
                self._check(size)
                chunks.append(chunk)
            self._data = b"".join(chunks)
        return self._data

    async def aread(self) -> bytes:
        if self._data is None:
            self._check(self._declared() or 0)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.aiter_bytes():
                size += len(chunk)
                self._check(size)
                chunks.append(chunk)
            self._data = b"".join(chunks)
        return self._data

    def iter_bytes(self) -> Iterator[bytes]:
        if self._data is not None:
            yield self._data
            return
        yield from self._iter_sync()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._data is not None:
            yield self._data
            return
        async for chunk in self._iter_async():
            yield chunk

    def _iter_sync(self) -> Iterator[bytes]:
        raise NotImplementedError

    def _iter_async(self) -> AsyncIterator[bytes]:
        raise NotImplementedError


class BytesBody(Body):
    """A body already in memory (``Coyote.call``)."""

    def __init__(self, data: bytes, max_body: int) -> None:
        super().__init__(max_body)
        self._data = data
        self._check(len(data))


class ASGIBody(Body):
    """Reads ``http.request`` messages from ASGI ``receive``.

    A ``def`` handler runs in the relay's thread pool; its ``read()`` hands the
    receiving back to the event loop that owns ``receive`` and waits for it.
    """

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self.max_body = max_body  # Body.__init__, inlined: one per request
        self._data = None
        self._receive = receive
        self._loop = loop
        self._done = False

    async def _iter_async(self) -> AsyncIterator[bytes]:
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            self._done = not message.get("more_body", False)
            if chunk:
                yield chunk

    def _iter_sync(self) -> Iterator[bytes]:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("in an async handler, use `await request.aread()`")
        agen = self._iter_async().__aiter__()
        while True:
            fut = asyncio.run_coroutine_threadsafe(_next(agen), self._loop)
            chunk = fut.result()
            if chunk is None:
                return
            yield chunk


async def _next(agen: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return None


def wsgi_body_length(environ: Mapping[str, Any]) -> int | None:
    """How much of ``wsgi.input`` is the request's body: ``None`` for "up to its end".

    PEP 3333: without ``CONTENT_LENGTH`` a request has no body, and reading past the
    length can block on the connection - unless the server sets ``wsgi.input_terminated``
    (gunicorn, granian, Werkzeug for a chunked body), when ``wsgi.input`` ends where the
    body does.  A ``Transfer-Encoding`` body (which takes precedence over a length, RFC
    9112 section 6.3) under a server without that mark (wsgiref) cannot be read safely:
    411, as a server that cannot take chunked bodies answers.
    """
    if "HTTP_TRANSFER_ENCODING" in environ:
        if environ.get("wsgi.input_terminated"):
            return None
        raise LengthRequired()
    length = environ.get("CONTENT_LENGTH")
    if not length:
        return 0
    # OWS: Werkzeug keeps it; "²".isdigit() is true of a str
    if not (length.isascii() and length.strip(" \t").isdigit()):
        raise BadRequest(f"invalid Content-Length {length!r}")
    return int(length)


BODY_CUT_SHORT = "the request body ended before its framing did"


def read_wsgi_input(stream: Any, size: int) -> bytes:
    """``stream.read(size)``; a body the server cannot finish reading (the client left
    mid-body, a malformed chunk) is the client's fault: 400, not a 502 or a 500."""
    try:
        return stream.read(size)  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise BadRequest(BODY_CUT_SHORT) from exc
    except Exception as exc:
        # gunicorn's errors for a malformed chunk (InvalidChunkSize, ...) are neither
        if type(exc).__module__.startswith("gunicorn."):
            raise BadRequest(BODY_CUT_SHORT) from exc
        raise


class WSGIBody(Body):
    """Reads ``wsgi.input``: ``length`` bytes, or up to its end when ``length`` is None
    (see ``wsgi_body_length``)."""

    def __init__(self, stream: Any, length: int | None, max_body: int) -> None:
        super().__init__(max_body)
        self._stream = stream
        self._length = length

    def _declared(self) -> int | None:
        return self._length

    def _iter_sync(self) -> Iterator[bytes]:
        remaining = self._length
        while remaining is None or remaining > 0:
            chunk = read_wsgi_input(
                self._stream, CHUNK if remaining is None else min(CHUNK, remaining)
            )
            if not chunk:
                if remaining is not None:
                    raise BadRequest(BODY_CUT_SHORT)  # less than its Content-Length
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk

    async def _iter_async(self) -> AsyncIterator[bytes]:
        # wsgi.input blocks: read it off the event loop, a chunk at a time.
        chunks = self._iter_sync()
        while (chunk := await asyncio.to_thread(next, chunks, b"")) != b"":
            yield chunk


class Request:
    """An HTTP request as a handler sees it."""

    __slots__ = (
        "_body",
        "_headers",
        "_query",
        "_raw_headers",
        "client",
        "method",
        "params",
        "path",
        "query_string",
        "raw_path",
        "route",
        "scheme",
        "service",
        "topology",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        raw_path: str | None = None,
        params: Mapping[str, Any] | None = None,
        query_string: bytes = b"",
        headers: list[tuple[bytes, bytes]] | Headers | None = None,
        body: Body | None = None,
        topology: str = "default",
        route: str = "",
        service: str = "",
        scheme: str = "http",
        client: tuple[str, int] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        """Decoded canonical path, e.g. ``/files/a b``."""
        self.raw_path = raw_path if raw_path is not None else path
        """Canonical percent-encoded path, as forwarded."""
        self.params = params if params is not None else {}
        """Path parameters (read-only), converted: ``{id:int}`` gives an ``int``."""
        self.query_string = query_string
        self.topology = topology
        self.route = route
        """The pattern that matched, e.g. ``/items/{id:int}``."""
        self.service = service
        self.scheme = scheme
        self.client = client
        self._raw_headers = headers
        self._headers: Headers | None = headers if isinstance(headers, Headers) else None
        self._query: MultiDict[str, str] | None = None
        self._body = body if body is not None else BytesBody(b"", 0)

    @classmethod
    def _of_asgi(
        cls,
        method: str,
        path: str,
        raw_path: str,
        params: Mapping[str, Any],
        body: Body,
        topology: str,
        route: str,
        service: str,
        scope: Mapping[str, Any],
    ) -> Request:
        """``Request(...)`` for an ASGI scope, without keyword binding (every request)."""
        self = cls.__new__(cls)
        self.method = method
        self.path = path
        self.raw_path = raw_path
        self.params = params
        self.query_string = scope.get("query_string", b"")
        self.topology = topology
        self.route = route
        self.service = service
        self.scheme = scope.get("scheme", "http")
        self.client = scope.get("client")
        self._raw_headers = scope.get("headers")
        self._headers = None
        self._query = None
        self._body = body
        return self

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path} route={self.route!r}>"

    @property
    def headers(self) -> Headers:
        """Case-insensitive, multi-valued request headers."""
        if self._headers is None:
            raw = self._raw_headers or []
            assert isinstance(raw, list)
            self._headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])
        return self._headers

    @property
    def request_id(self) -> str | None:
        """The request's X-Request-ID when it is a safe token (1-200 characters of
        ``A-Za-z0-9._:+/=-``; the one coyote's access line shows), else None.  Behind a
        coyote leader it is the id the leader logged and relayed."""
        value = self.headers.get("x-request-id")
        if value is None or _REQUEST_ID.fullmatch(value.encode("latin-1")) is None:
            return None
        return value

    @property
    def query(self) -> MultiDict[str, str]:
        """Query parameters (``request.query.getlist("tag")`` for repeated ones)."""
        if self._query is None:
            qs = self.query_string.decode("latin-1")
            self._query = MultiDict(parse_qsl(qs, keep_blank_values=True))
        return self._query

    # -- body, sync twins -----------------------------------------------------------

    def read(self) -> bytes:
        return self._body.read()

    def iter_bytes(self) -> Iterator[bytes]:
        return self._body.iter_bytes()

    def json(self) -> Any:
        return _parse_json(self.read())

    def form(self) -> MultiDict[str, Any]:
        return self._parse_form(self.read())

    # -- body, async twins ----------------------------------------------------------

    async def aread(self) -> bytes:
        return await self._body.aread()

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._body.aiter_bytes()

    async def ajson(self) -> Any:
        return _parse_json(await self.aread())

    async def aform(self) -> MultiDict[str, Any]:
        return self._parse_form(await self.aread())

    def _parse_form(self, data: bytes) -> MultiDict[str, Any]:
        """Form fields and files (``FileStorage``) of an urlencoded or multipart body."""
        mimetype, options = parse_options_header(self.headers.get("content-type", ""))
        if mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise BadRequest(f"expected a form body, got content-type {mimetype or 'none'!r}")
        try:
            _, form, files = FormDataParser(max_content_length=self._body.max_body).parse(
                io.BytesIO(data), mimetype, len(data), options
            )
        except ValueError as exc:
            raise BadRequest(f"malformed form body: {exc}") from exc
        merged: MultiDict[str, Any] = MultiDict(form)
        for key, value in files.items(multi=True):
            merged.add(key, value)
        return merged


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from exc
