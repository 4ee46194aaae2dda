"""A WSGI leader with open metrics, for gunicorn with several workers in tests:

    PROMETHEUS_MULTIPROC_DIR=/tmp/an-empty-dir \\
        gunicorn -w 2 -c python:tests.support.metrics_gunicorn tests.support.metrics_app:app

``GET /pid`` answers the worker's process id.
"""

from __future__ import annotations

import os

from coyote_mw import Client, Coyote, Request, route

__all__ = ["CONCURRENCY", "app"]

CONCURRENCY = 7


class Worker(Client):
    @route("GET", "/pid")
    def pid(self, request: Request) -> str:
        return str(os.getpid())


coyote = Coyote(token="m" * 32, metrics="open", concurrency=CONCURRENCY)
coyote.register(Worker(), service="worker")
app = coyote.wsgi()
