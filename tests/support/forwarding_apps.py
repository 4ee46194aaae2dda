"""Leaders for real server processes in test_forwarding.py (``uvicorn --factory``).

``COYOTE_TEST_UPSTREAM`` names the instance every route under ``/up/`` is relayed to.
"""

from __future__ import annotations

import os
from typing import Any

from coyote_mw import Coyote


def leader() -> Coyote:
    coyote = Coyote(timeout=10)
    coyote.register_remote(
        os.environ["COYOTE_TEST_UPSTREAM"],
        routes=[("GET", "/up/{rest:path}"), ("POST", "/up/{rest:path}")],
        service="up",
    )
    return coyote


def leader_asgi() -> Any:
    return leader().asgi()
