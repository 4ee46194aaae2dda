"""The ASGI and WSGI shapes every layer speaks of, named once (as ``starlette.types``).

ASGI (the ASGI 3 specification): an app is ``await app(scope, receive, send)``.
WSGI (PEP 3333): an app is ``app(environ, start_response)`` -> an iterable of bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "ASGIApp",
    "Environ",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "StartResponse",
    "WSGIApp",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Environ = dict[str, Any]
# start_response(status, headers, exc_info=None) -> write(data)
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
