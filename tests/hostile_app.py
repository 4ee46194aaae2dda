"""A leader whose routes mix many parameters in one segment, for a real server process:
``uvicorn tests.hostile_app:app``.  A backtracking matcher takes minutes on a 100-character
path here; a linear one answers at once."""

from __future__ import annotations

from typing import Any

from coyote_mw import Client, Coyote, route


class Hostile(Client):
    @route("GET", "/ready")
    def ready(self, request: Any) -> str:
        return "ready"

    @route("GET", "/h/{a}-{b}-{c}-{d}-{e}-{f}-{g}x")
    def hyphens(self, request: Any) -> str:
        return "hyphens"

    @route("GET", "/f/{a}.{b}.{c}.{d}.{e}.{f}.{g}.json")
    def dots(self, request: Any) -> str:
        return "dots"


coyote = Coyote()
coyote.register(Hostile())
app = coyote.asgi()

# a leader with the registration API on, for hostile registration bodies: ``api_app``
# under an ASGI server, ``api_wsgi`` under a WSGI one
TOKEN = "t" * 32
api_leader = Coyote(token=TOKEN)
api_app = api_leader.asgi()
api_wsgi = api_leader.wsgi()
