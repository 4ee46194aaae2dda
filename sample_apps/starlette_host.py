"""A Starlette host with one route of its own and the Deadwood Saloon mounted through coyote.

uvicorn sample_apps.starlette_host:app --port 8000
"""

from __future__ import annotations

from coyote_mw.adapters.starlette import CoyoteMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon


async def host(request: Request) -> PlainTextResponse:
    return PlainTextResponse("This route belongs to the Starlette host app.\n")


def create_app(coyote: Coyote | None = None) -> Starlette:
    coyote = coyote if coyote is not None else Coyote()
    coyote.register(Saloon())
    return Starlette(
        routes=[Route("/host", host)],
        middleware=[Middleware(CoyoteMiddleware, coyote=coyote)],
    )


app = create_app()
