"""A standalone WSGI leader for gunicorn in tests: one relay slot, a long queue."""

from __future__ import annotations

import os

from coyote_mw import Coyote

coyote = Coyote(
    token=os.environ["COYOTE_TOKEN"], concurrency=1, queue=40, timeout=20, access_log=False
)
app = coyote.wsgi()
