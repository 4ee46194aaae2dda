"""What happened to the table, its instances and its store, for whoever counts it.

The layers below the operator's view say what happened where they log it::

    emit("registered", topology, service)

and ``coyote_mw.ops.metrics`` listens (one Prometheus counter per event), so the
registry and the remote instances need not know about metrics.  The events and their
labels:

=================  ====================  ================================================
registered         topology, service     a registration through the API (201)
deregistered       topology, service     a registration deleted through the API
lease_expired      topology, service     a lease not renewed in time (logged once)
ejected            cause                 an instance ejected: "gateway" or "connect"
readmitted         cause                 an ejected instance back: "timer" (its ejection
                                         time is over) or "heartbeat"
store_unreachable  (none)                the shared store became unreachable
=================  ====================  ================================================

Without a listener an event costs a call and an empty loop.  Listeners run in the
thread that emits, so they must be quick and must not raise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["EVENTS", "emit", "listen"]

EVENTS: dict[str, tuple[str, ...]] = {
    "registered": ("topology", "service"),
    "deregistered": ("topology", "service"),
    "lease_expired": ("topology", "service"),
    "ejected": ("cause",),
    "readmitted": ("cause",),
    "store_unreachable": (),
}

Listener = Callable[[str, tuple[str, ...]], None]

_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()


def listen(listener: Listener) -> None:
    """Call ``listener(event, labels)`` for every event from now on (once per listener)."""
    global _listeners
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)  # emit() reads without the lock


def emit(event: str, *labels: str) -> None:
    for listener in _listeners:
        listener(event, labels)
