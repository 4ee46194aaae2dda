"""What a lookup finds: a route's ``Endpoint`` (its service, its instances and the round
robin over them) and a ``Match``, an endpoint with the path's converted parameters."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from coyote_mw.errors import NoHealthyInstance
from coyote_mw.routing.patterns import Pattern

__all__ = ["Endpoint", "Instance", "Match"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a service behind a route: its id and the handler to call."""

    service: str
    instance: str
    handler: Any


class Endpoint:
    """Everything a match needs: the route, its service, and its instances."""

    __slots__ = ("cast", "instances", "method", "names", "pattern", "service", "topology", "turn")

    def __init__(
        self,
        method: str,
        pattern: Pattern,
        service: str,
        topology: str,
        cast: bool,
        instances: tuple[Instance, ...],
    ) -> None:
        self.method = method
        self.pattern = pattern.text
        self.names = pattern.names
        self.service = service
        self.topology = topology
        self.cast = cast
        self.instances = instances
        self.turn = 0
        """Where the instance round robin starts next (``peek`` reads it, and what a
        ``pick`` left is what ``unpick(after=)`` is given)."""

    def pick(self, exclude: Any = None) -> Any:
        """The next healthy instance's handler, round robin (skipping ``exclude``).

        Raises ``NoHealthyInstance`` when every instance is ejected: the route exists,
        so that is a 503, not a 404.  An ejected instance whose ejection time is over is
        re-admitted here (``readmit``), as it is picked.
        """
        inst = self.instances
        if len(inst) == 1:
            handler = inst[0].handler
            if handler is not exclude and (
                not getattr(handler, "ejected", False) or handler.readmit()
            ):
                return handler
        else:
            n = len(inst)
            start = self.turn
            # not atomic: two threads may take one turn, which only evens out later
            self.turn = start + 1 if start + 1 < n else 0
            for k in range(n):
                handler = inst[(start + k) % n].handler
                if handler is not exclude and (
                    not getattr(handler, "ejected", False) or handler.readmit()
                ):
                    return handler
        raise NoHealthyInstance(self.service, _retry_after(inst))

    def unpick(self, after: int | None = None) -> None:
        """Give back the turn the last ``pick`` took: the request it picked for is not
        sent after all, and is picked for again (coyote's own server's shortcut declines
        it for the ASGI path) - the same instance then, as when it was not picked twice.

        ``after``: the ``turn`` that pick left, when time has passed since it; if another
        pick has moved the turn meanwhile, it is left as it is (the last turn taken is
        then another request's, and giving it back would send this one elsewhere)."""
        n = len(self.instances)
        if n > 1 and (after is None or self.turn == after):
            self.turn = self.turn - 1 if self.turn else n - 1

    def peek(self) -> Instance | None:
        """The instance the next ``pick`` would take, without taking its turn or
        re-admitting anyone; None when every instance is ejected (``pick`` would raise
        ``NoHealthyInstance``).  For ``/explain``: a look, not a request."""
        inst = self.instances
        n = len(inst)
        start = self.turn if n > 1 else 0
        now = time.monotonic()
        for k in range(n):
            candidate = inst[(start + k) % n]
            handler = candidate.handler
            # an ejected instance whose ejection time is over is re-admitted as picked
            if not getattr(handler, "ejected", False) or getattr(handler, "readmit_at", 0.0) <= now:
                return candidate
        return None

    def __repr__(self) -> str:
        return f"<Endpoint {self.method} {self.pattern} -> {self.service} ({self.topology})>"


def _retry_after(instances: tuple[Instance, ...]) -> int:
    """Whole seconds until the first ejected instance is re-admitted (at least 1)."""
    now = time.monotonic()
    back = [getattr(i.handler, "readmit_at", 0.0) - now for i in instances]
    soonest = min((b for b in back if b > 0), default=1.0)
    return max(1, math.ceil(soonest))


class Match:
    """A successful lookup: the endpoint and the converted path parameters (read-only).

    Matches are shared between requests through the lookup cache, hence immutable.
    """

    # ``params`` is made on its first read from the values the lookup found (``_values``,
    # in the order of ``endpoint.names``; the value itself when the route has one
    # parameter, so that no sequence is made for it): a request relayed to a remote
    # instance never reads it, and the read-only mapping costs more than the match.
    __slots__ = ("_params", "_values", "endpoint")

    def __init__(self, endpoint: Endpoint, params: Mapping[str, Any]) -> None:
        self.endpoint = endpoint
        self._params: Mapping[str, Any] | None = params
        self._values: Any = ()

    @property
    def params(self) -> Mapping[str, Any]:
        params = self._params
        if params is None:
            names = self.endpoint.names
            values = self._values
            # Two threads reading it first may each make one: equal, and either is kept.
            params = MappingProxyType(
                {names[0]: values} if len(names) == 1 else dict(zip(names, values, strict=True))
            )
            self._params = params
        return params

    @property
    def route(self) -> str:
        return self.endpoint.pattern

    @property
    def service(self) -> str:
        return self.endpoint.service

    def __repr__(self) -> str:
        return f"<Match {self.endpoint!r} params={self.params!r}>"
