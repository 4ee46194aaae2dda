"""A WSGI leader for real server processes in the tests (gunicorn): it relays every GET
to the instance at ``$COYOTE_TEST_UPSTREAM``, with ``$COYOTE_TEST_RESPONSE_TIMEOUT``."""

from __future__ import annotations

import os

from coyote_mw import Coyote

coyote = Coyote(response_timeout=float(os.environ.get("COYOTE_TEST_RESPONSE_TIMEOUT", "300")))
coyote.register_remote(
    os.environ["COYOTE_TEST_UPSTREAM"], routes=[("GET", "/{rest:path}")], service="svc"
)
app = coyote.wsgi()
