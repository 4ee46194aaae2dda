"""gunicorn's configuration for coyote's metrics in multiprocess mode (the README's)."""

from __future__ import annotations

from typing import Any

from coyote_mw.ops.metrics import mark_process_dead


def child_exit(server: Any, worker: Any) -> None:
    # a worker gone: its live gauges (relay slots, queue, ...) no longer count, and its
    # request counts are folded into the directory's archive (its files removed)
    mark_process_dead(worker.pid)
