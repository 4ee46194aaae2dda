"""A leader whose routes mix many parameters in one segment, for a real server process:
``uvicorn tests.support.hostile_app:app``.  A backtracking matcher takes minutes on a
100-character path here; a linear one answers at once."""

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


# At one node, many mixed segments whose literals are long runs of one character with
# another in their middle: a matcher that compares such a literal at every character of
# a 60 KB segment of that one character (under uvicorn's request-line limit) takes over
# a minute here; one that looks for each literal once answers in milliseconds.
def long_literal(i: int) -> str:
    return "a" * 15_000 + f"b{i}b" + "a" * 15_000  # costly read from either end


class Long(Client):
    routes = [("GET", "/ready")] + [
        ("GET", pattern)
        for i in range(100)
        for pattern in (
            "/p/{x}" + long_literal(i) + "{y:int}",  # forwards
            "/q/{x}" + long_literal(i),  # one parameter, a long tail
            "/r/{x}" + long_literal(i) + "{y}",  # backwards
        )
    ]

    def call(self, request: Any) -> str:
        return request.path[:2]


long_leader = Coyote(max_target=256 * 1024)
long_leader.register(Long())
long_app = long_leader.asgi()
