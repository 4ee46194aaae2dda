"""A leader in this process with its registration API open (``TOKEN``), the Saloon
registered in process: ``leader`` (a fixture), and ``api`` (a fixture: an httpx client
on it, once under ASGI and once under WSGI); ``payload`` is a valid registration body.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon
from tests.support.http_clients import ASGIClient, WSGIClient

__all__ = ["AUTH", "TOKEN", "api", "leader", "payload"]

TOKEN = "t" * 32
AUTH = {"authorization": f"Bearer {TOKEN}"}


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": "remote.saloon",
        "instance": "one",
        "url": "http://127.0.0.1:9",
        "routes": [{"method": "GET", "path": "/remote"}],
        "topology": "default",
        "ttl": 5,
    }
    body.update(overrides)
    return body


@pytest.fixture
def leader() -> Iterator[Coyote]:
    coyote = Coyote(token=TOKEN)
    coyote.register(Saloon())
    yield coyote
    coyote.close()


@pytest.fixture(params=["asgi", "wsgi"])
def api(request: pytest.FixtureRequest, leader: Coyote, loop_thread: Any) -> Iterator[Any]:
    if request.param == "asgi":
        client: Any = ASGIClient(leader.asgi(), loop_thread)
    else:
        client = WSGIClient(transport=httpx.WSGITransport(leader.wsgi()), base_url="http://t")
    yield client
    client.close()
