"""gunicorn's configuration for coyote's metrics in multiprocess mode (the README's)."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    # a worker gone: its live gauges (relay slots, queue, ...) no longer count
    multiprocess.mark_process_dead(worker.pid)
