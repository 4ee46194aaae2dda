"""The pytest plugin (entry point ``pytest11``): test your clients in three lines.

    def test_saloon(coyote, coyote_client):
        coyote.register(Saloon())
        assert coyote_client.get("/").status_code == 200

Fixtures:

* ``coyote`` - a fresh ``Coyote`` with an in-memory table, closed after the test;
* ``coyote_client`` - an ``httpx.Client`` bound to ``coyote.wsgi()`` (standalone);
* ``coyote_async_client`` - an ``httpx.AsyncClient`` bound to ``coyote.asgi()``, for
  async tests: ``@pytest.mark.asyncio`` (pytest-asyncio, strict or auto mode) or
  ``@pytest.mark.anyio``.

Override ``coyote`` in your ``conftest.py`` to configure it (``Coyote(timeout=1)``) or
to register your clients once for every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from coyote_mw.leader import Coyote

__all__ = ["coyote", "coyote_async_client", "coyote_client"]

BASE_URL = "http://testserver"


@pytest.fixture
def coyote() -> Iterator[Coyote]:
    """A fresh leader with an in-memory route table."""
    leader = Coyote()
    yield leader
    leader.close()


@pytest.fixture
def coyote_client(coyote: Coyote) -> Iterator[httpx.Client]:
    """A sync httpx client whose requests go through ``coyote.wsgi()``."""
    with httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url=BASE_URL) as c:
        yield c


@pytest.fixture
def coyote_async_client(coyote: Coyote) -> httpx.AsyncClient:
    """An async httpx client whose requests go through ``coyote.asgi()``.

    A plain (not async) fixture, so it works wherever an async test runs: pytest-asyncio
    in strict or auto mode, anyio's plugin.  The client binds to no event loop until the
    test sends its first request, and over ``ASGITransport`` it holds nothing to close.
    """
    return httpx.AsyncClient(transport=httpx.ASGITransport(coyote.asgi()), base_url=BASE_URL)
