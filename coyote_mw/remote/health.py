"""How the relay judges remote instances: outlier ejection and re-admission, and the
limits on what it waits for and reads from them (``UpstreamPolicy``).

Ejection follows Envoy's outlier detection:

* an instance fails a request when it cannot be connected to, or - a *gateway
  failure* - resets or closes the connection before its response ended, breaks HTTP
  framing, sends a head over ``max_response_head``, is too slow (``timeout``,
  ``stream_idle_timeout``, ``response_timeout``), or answers 502, 503 or 504;
  ``eject_after`` failures in a row eject it (Envoy's ``consecutive_gateway_failure``).
  The pool being busy (no free connection in time) is not the instance's failure;
* gateway failures eject an instance only while at most ``max_ejection_percent`` of its
  route's instances are ejected (rounded down: one instance of two, none of one), so a
  route never loses every instance while some answer.  An instance nobody can connect
  to serves nothing: connect failures eject it regardless, and a route whose instances
  are all unreachable answers 503 "No healthy instance";
* an ejected instance is re-admitted after ``base_ejection_time`` times the number of
  its ejections, at most ``max_ejection_time`` (Envoy's ``base_ejection_time`` /
  ``max_ejection_time``); each ``base_ejection_time`` it stays healthy afterwards takes
  one ejection off the count.  Re-admitted, it is on probation until its first
  success: one failure ejects it again.  A heartbeat (leased instances) re-admits it
  at once, as an active health check does in Envoy.

The success path costs one attribute read (and a write after a failure); the lock is
taken only when something failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from coyote_mw.events import emit
from coyote_mw.remote.transport import MAX_HEAD

__all__ = ["EJECT_AFTER", "InstanceHealth", "UpstreamPolicy"]

logger = logging.getLogger("coyote_mw.health")

EJECT_AFTER = 3

# Ejection decisions compare an instance with its route's other instances: one lock
# for all of them, taken only on the failure path.
_lock = threading.Lock()


@dataclass(frozen=True)
class UpstreamPolicy:
    """The settings for remote instances (``Coyote(...)`` keywords of the same names)."""

    max_response_head: int = MAX_HEAD
    response_timeout: float = 300.0  # 0: no total deadline
    stream_idle_timeout: float | None = None  # None: the relay's timeout
    eject_after: int = EJECT_AFTER
    base_ejection_time: float = 10.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.max_response_head, int) or self.max_response_head < 1024:
            raise ValueError("max_response_head must be a number of bytes, 1024 or more")
        if not self.response_timeout >= 0:
            raise ValueError("response_timeout must be 0 (no total deadline) or positive")
        if self.stream_idle_timeout is not None and not self.stream_idle_timeout > 0:
            raise ValueError("stream_idle_timeout must be positive (None: the timeout)")
        if not isinstance(self.eject_after, int) or self.eject_after < 1:
            raise ValueError("eject_after must be a whole number of failures, 1 or more")
        if not self.base_ejection_time > 0:
            raise ValueError("base_ejection_time must be positive")
        if not self.max_ejection_time >= self.base_ejection_time:
            raise ValueError("max_ejection_time must be at least base_ejection_time")
        if not isinstance(self.max_ejection_percent, int) or not (
            0 <= self.max_ejection_percent <= 100
        ):
            raise ValueError("max_ejection_percent must be a whole number from 0 to 100")


class _Policed(Protocol):
    policy: UpstreamPolicy  # coyote_mw.remote.upstreams.Upstreams has it


class InstanceHealth:
    """Health bookkeeping of one instance (mixed into ``RemoteHandler``).

    ``ejected`` is what the table's ``pick`` reads; ``readmit()`` is asked only of an
    ejected instance.
    """

    url: str
    upstreams: _Policed  # its ``policy`` is read at each failure: configure() changes it

    failures = 0  # failures in a row
    ejected = False
    ejections = 0  # the multiplier of the next ejection time
    readmit_at = 0.0  # time.monotonic() when an ejected instance comes back
    readmitted_at = 0.0
    probation = False  # re-admitted by its timer, and not yet answered since

    def answered(self, status: int, d: Any) -> None:
        """The response ended: a 502/503/504 is a gateway failure, anything else a success."""
        if 501 < status < 505:
            self.gateway_failed(f"answered {status}", d)
        elif self.failures or self.probation:
            self.failures = 0
            self.probation = False

    def head_answered(self, status: int, d: Any) -> None:
        """The response's head came, its body still to come (WSGI, where the body is
        iterated by the server): a 502/503/504 fails now; any other status ends a
        probation now, before the client can send its next request, but clears the
        failures in a row only when the body ends (``answered``): a body cut every time
        still ejects the instance."""
        if 501 < status < 505:
            self.gateway_failed(f"answered {status}", d)
        elif self.probation:
            with _lock:
                self.probation = False
                self.failures = 0

    def connect_failed(self, exc: BaseException) -> None:
        self._failed(exc, None)

    def gateway_failed(self, exc: BaseException | str, d: Any) -> None:
        self._failed(exc, d.match.endpoint.instances)

    def _failed(self, exc: BaseException | str, siblings: Sequence[Any] | None) -> None:
        policy = self.upstreams.policy
        with _lock:
            self.failures += 1
            if self.ejected or self.failures < policy.eject_after:
                return
            now = time.monotonic()
            if siblings is not None and not self._room_to_eject(siblings, policy, now):
                return
            if self.readmitted_at:  # healthy for a while since: fewer ejections count
                healthy = now - self.readmitted_at
                self.ejections = max(0, self.ejections - int(healthy / policy.base_ejection_time))
            self.ejections += 1
            ejection = min(policy.base_ejection_time * self.ejections, policy.max_ejection_time)
            self.readmit_at = now + ejection
            self.ejected = True
        logger.warning(
            "instance %s ejected for %g s after %d %s in a row: %s",
            self.url,
            ejection,
            self.failures,
            "gateway failures" if siblings is not None else "connect failures",
            exc if isinstance(exc, str) else repr(exc),
        )
        emit("ejected", "gateway" if siblings is not None else "connect")

    def _room_to_eject(self, siblings: Sequence[Any], policy: UpstreamPolicy, now: float) -> bool:
        allowed = len(siblings) * policy.max_ejection_percent // 100
        ejected = sum(
            1
            for i in siblings
            if i.handler is not self
            and getattr(i.handler, "ejected", False)
            and getattr(i.handler, "readmit_at", 0.0) > now
        )
        return ejected < allowed

    def readmit(self) -> bool:
        """Whether an ejected instance's ejection time is over (then it is back)."""
        if time.monotonic() < self.readmit_at:
            return False
        with _lock:
            if not self.ejected:
                return True
            self.ejected = False
            self.readmitted_at = time.monotonic()
            # on probation: one more failure ejects it again
            self.failures = max(self.upstreams.policy.eject_after - 1, 0)
            self.probation = True
        logger.info("instance %s re-admitted after its ejection time", self.url)
        emit("readmitted", "timer")
        return True

    def revive(self) -> None:
        """A heartbeat: the instance is alive, whatever happened before."""
        with _lock:
            was = self.ejected
            self.failures = 0
            self.probation = False
            self.ejections = 0
            self.readmit_at = 0.0
            self.ejected = False
        if was:
            logger.info("instance %s is back: no longer ejected", self.url)
            emit("readmitted", "heartbeat")
