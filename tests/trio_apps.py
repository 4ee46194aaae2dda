"""Apps for the trio tests (``tests/hypercorn_cli.py -k trio tests.trio_apps:mounted``)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon
from sample_apps.starlette_host import host

coyote = Coyote()
coyote.register(Saloon())

# Starlette sends no lifespan to a mounted app: coyote meets trio at its first request
mounted = Starlette(routes=[Route("/host", host), Mount("/saloon", app=coyote.asgi())])
