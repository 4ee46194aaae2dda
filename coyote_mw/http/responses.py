"""What a handler may return, and the one place a result becomes a ``Response``.

=====================================  ==========================================
handler returns                        response
=====================================  ==========================================
``str``                                200, ``text/html; charset=utf-8``
``bytes``                              200, ``application/octet-stream``
``dict`` / ``list``                    200, JSON
``None``                               204, no body
``(status, body)``                     that status, body as above
``(status, body, headers)``            with those headers (a dict or pairs)
``coyote_mw.Response``                 as it is (a body may be an iterator); without
                                       a content type, ``application/octet-stream``
a Starlette or Werkzeug response       its status, headers and body: streamed ones
                                       and files too (sent whole: no ranges), then
                                       Starlette's ``background`` task
=====================================  ==========================================

1xx, 204 and 304 responses carry no body, so no ``Content-Type`` nor ``Content-Length``.

Anything else is a programming error in the handler: a 502 "Routing error".
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from coyote_mw.errors import DispatchError

__all__ = ["Response", "error_response", "to_response"]

Body = bytes | Iterable[bytes] | AsyncIterable[bytes]

OCTET_STREAM = "application/octet-stream"
"""The content type of a body nobody described (RFC 9110 section 8.3)."""
_NO_BODY_DROPS = frozenset(("content-length", "content-type", "transfer-encoding"))


class Response:
    """A status, headers and a body (bytes, or an iterator of bytes to stream)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: Body | str = b"",
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        media_type: str | None = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
            media_type = media_type or "text/plain; charset=utf-8"
        self.status = status
        hs: list[tuple[str, str]]
        if status >= 200 and status not in (204, 304):
            self.body: Body = body
            if headers is None:  # the common case, kept cheap: it is on every request
                hs = [("content-type", media_type or OCTET_STREAM)]
            else:
                items = headers.items() if isinstance(headers, Mapping) else headers
                hs = [(k.lower(), str(v)) for k, v in items if k.lower() != "content-length"]
                if not any(k == "content-type" for k, _ in hs):
                    hs.append(("content-type", media_type or OCTET_STREAM))
            if isinstance(body, bytes):
                hs.append(("content-length", str(len(body))))
        else:  # 1xx, 204 and 304 have no body, so nothing describes one (RFC 9110 6.4.1)
            self.body = b""
            items = (
                ()
                if headers is None
                else headers.items()
                if isinstance(headers, Mapping)
                else headers
            )
            hs = [(k.lower(), str(v)) for k, v in items if k.lower() not in _NO_BODY_DROPS]
        self.headers = hs

    @property
    def content(self) -> bytes:
        if not isinstance(self.body, bytes):
            raise TypeError("the body is streamed; iterate over response.body instead")
        return self.body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def json_response(data: Any, status: int = 200, headers: Any = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body.encode("utf-8"), status, headers, "application/json")


def to_response(result: Any) -> Response:
    """Turn what a handler returned into a ``Response``; ``TypeError`` if it cannot."""
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(result.encode("utf-8"), 200, None, "text/html; charset=utf-8")
    if isinstance(result, bytes):
        return Response(result, 200, None, "application/octet-stream")
    if isinstance(result, dict | list):
        return json_response(result)
    if result is None:
        return Response(b"", 204)
    if isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[0], int):
        response = to_response(result[1])
        response.status = result[0]
        if len(result) == 3:
            given = result[2]
            items = given.items() if isinstance(given, Mapping) else given
            extra = [(k.lower(), str(v)) for k, v in items if k.lower() != "content-length"]
            names = {k for k, _ in extra}
            response.headers = [(k, v) for k, v in response.headers if k not in names]
            response.headers.extend(extra)
        if response.status in (204, 304) or response.status < 200:
            response.headers = [(k, v) for k, v in response.headers if k not in _NO_BODY_DROPS]
            response.body = b""
        return response
    foreign = _foreign(result)
    if foreign is not None:
        return foreign
    raise TypeError(
        f"a handler returned {type(result).__name__}; return str, bytes, dict, list, None, "
        "(status, body[, headers]) or a coyote_mw.Response"
    )


def _foreign(result: Any) -> Response | None:
    """A Starlette or Werkzeug response, streamed ones and files included."""
    status = getattr(result, "status_code", None)
    if not isinstance(status, int):
        return None
    raw = getattr(result, "raw_headers", None)
    if raw is not None:
        return _starlette(result, status, raw)
    get_data = getattr(result, "get_data", None)
    if callable(get_data) and hasattr(result, "headers"):
        headers = list(result.headers.items())
        if getattr(result, "direct_passthrough", False) or getattr(result, "is_streamed", False):
            return _streamed(_werkzeug_body(result), status, headers)
        return Response(get_data(), status, headers)
    return None


def _starlette(result: Any, status: int, raw: Any) -> Response | None:
    """Starlette's ``Response`` (``body``), ``StreamingResponse`` (``body_iterator``) and
    ``FileResponse`` (``path``); a ``background`` task runs once the body is sent."""
    body: Body
    if isinstance(getattr(result, "body", None), bytes):
        body = result.body
    elif hasattr(result, "body_iterator"):
        body = result.body_iterator
    elif hasattr(result, "path"):
        if getattr(result, "stat_result", None) is None:
            result.set_stat_headers(os.stat(result.path))  # length, last-modified, etag
        body = _file_chunks(result.path)
        raw = [(k, v) for k, v in result.raw_headers if k != b"accept-ranges"]  # whole file
    else:
        return None
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    response = (
        Response(body, status, headers)
        if isinstance(body, bytes)
        else _streamed(body, status, headers)
    )
    background = getattr(result, "background", None)
    if background is not None:  # after the body, whatever the status (a 204 too)
        response.body = _then(response.body, background)
    return response


def _streamed(body: Body, status: int, headers: list[tuple[str, str]]) -> Response:
    """A streamed body, keeping the length its response declared."""
    response = Response(body, status, headers)
    length = next((v for k, v in headers if k.lower() == "content-length"), None)
    if length is not None and response.body is body:
        response.headers.append(("content-length", length))
    return response


def _file_chunks(path: str, size: int = 64 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(size):
            yield chunk


def _werkzeug_body(result: Any) -> Iterator[bytes]:
    try:
        yield from result.response if result.direct_passthrough else result.iter_encoded()
    finally:
        result.close()  # its call_on_close functions, the file send_file opened


async def _then(body: Body, background: Any) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        if body:
            yield body
    elif isinstance(body, AsyncIterable):
        async for chunk in body:
            yield chunk
    else:  # a file: read off the event loop
        chunks = iter(body)
        while (chunk := await asyncio.to_thread(next, chunks, b"")) != b"":
            yield chunk
    await background()


def error_response(exc: DispatchError) -> Response:
    """The HTTP answer for every ``DispatchError``: ``{"error": ..., **fields}``."""
    return json_response({"error": exc.error, **exc.fields()}, exc.status, exc.headers())
