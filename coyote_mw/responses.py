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
``coyote_mw.Response``                 as it is (a body may be an iterator)
a Starlette or Werkzeug response       its status, headers and body
=====================================  ==========================================

Anything else is a programming error in the handler: a 502 "Routing error".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any

from coyote_mw.errors import DispatchError

__all__ = ["Response", "error_response", "to_response"]

Body = bytes | Iterable[bytes] | AsyncIterable[bytes]


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
        self.body: Body = body
        hs: list[tuple[str, str]]
        if headers is None:  # the common case, kept cheap: it is on every request
            hs = [("content-type", media_type)] if media_type else []
        else:
            items = headers.items() if isinstance(headers, Mapping) else headers
            hs = [(k.lower(), str(v)) for k, v in items if k.lower() != "content-length"]
            if media_type and not any(k == "content-type" for k, _ in hs):
                hs.append(("content-type", media_type))
        if isinstance(body, bytes) and status >= 200 and status not in (204, 304):
            hs.append(("content-length", str(len(body))))
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
            extra = Response(b"", 200, result[2]).headers
            names = {k for k, _ in extra if k != "content-length"}
            response.headers = [(k, v) for k, v in response.headers if k not in names]
            response.headers.extend(h for h in extra if h[0] != "content-length")
        if response.status in (204, 304) or response.status < 200:
            response.headers = [(k, v) for k, v in response.headers if k != "content-length"]
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
    """A Starlette (``body``, ``raw_headers``) or Werkzeug (``get_data``) response."""
    status = getattr(result, "status_code", None)
    if not isinstance(status, int):
        return None
    raw = getattr(result, "raw_headers", None)
    if raw is not None and isinstance(getattr(result, "body", None), bytes):
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        return Response(result.body, status, headers)
    get_data = getattr(result, "get_data", None)
    if callable(get_data) and hasattr(result, "headers"):
        return Response(get_data(), status, list(result.headers.items()))
    return None


def error_response(exc: DispatchError) -> Response:
    """The HTTP answer for every ``DispatchError``: ``{"error": ..., **fields}``."""
    return json_response({"error": exc.error, **exc.fields()}, exc.status, exc.headers())
