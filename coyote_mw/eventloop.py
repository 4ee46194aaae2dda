"""Which event loop an ASGI server runs: coyote_mw dispatches on asyncio only.

The relay (slots, watchdog, thread hand-offs), the lean transport and the bridges to
in-process apps are asyncio code.  A host app may run on trio through anyio (Starlette
does, under ``hypercorn -k trio``); coyote then refuses to start - the host's lifespan
startup fails naming the cause - and, where no lifespan reached it, answers each request
it would dispatch with 500 "Unsupported event loop" instead of failing inside.
"""

from __future__ import annotations

import sniffio

from coyote_mw.errors import UnsupportedEventLoop

__all__ = ["not_on_asyncio", "require_asyncio"]


def not_on_asyncio() -> UnsupportedEventLoop | None:
    """The error to raise when the running event loop is not asyncio's, else None."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no known event loop"
    return None if library == "asyncio" else UnsupportedEventLoop(library)


def require_asyncio() -> None:
    """Raise ``UnsupportedEventLoop`` unless this runs on asyncio."""
    error = not_on_asyncio()
    if error is not None:
        raise error
