"""Under a real ``hypercorn -k trio``: a client's own handlers are served through anyio
within the relay's bounds; routes that need asyncio (remote instances, in-process apps)
are a clean JSON 500 naming the cause; the host's own routes keep working."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from sample_apps.deadwood.saloon import STORY
from tests.support.processes import running

HYPERCORN = [sys.executable, "tests/support/hypercorn_cli.py", "-k", "trio"]
CAUSE = "coyote_mw dispatches on asyncio, and this server runs trio"


@pytest.fixture(scope="module", params=["app", "mounted"])
def trio_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The host with coyote in its middleware (lifespan reaches coyote), or mounted
    inside it (no lifespan: coyote meets trio at its first request)."""
    app = f"tests.support.trio_apps:{request.param}"
    with running([*HYPERCORN, app], ready_path="/host") as url:
        yield url if request.param == "app" else url + "/saloon"


def test_a_clients_handlers_are_served_under_trio(trio_url: str) -> None:
    with httpx.Client(base_url=trio_url, timeout=10) as client:
        assert client.get("/").text == STORY
        assert client.post("/sync/echo", content=b"whiskey").content == b"sync whiskey"
        assert client.post("/async/echo", content=b"rye").content == b"async rye"
        assert client.get("/stream/sync").text == "one,two"
        assert client.get("/stream/async").text == "three,four"
        r = client.get("/fail")
        assert (r.status_code, r.json()) == (502, {"error": "Routing error"})


def test_the_relay_timeout_holds_under_trio(trio_url: str) -> None:
    with httpx.Client(base_url=trio_url, timeout=10) as client:
        r = client.get("/slow")
        assert (r.status_code, r.json()["error"]) == (504, "Handler timeout")
        r = client.get("/slow-sync")
        assert (r.status_code, r.json()["error"]) == (504, "Handler timeout")
        # the thread keeps its slot until it returns, then every slot is back
        for _ in range(50):
            if client.get("/active").json()["active"] == 1:
                break
            time.sleep(0.2)
        assert client.get("/active").json() == {"active": 1}


def test_a_cast_is_accepted_and_run_under_trio(trio_url: str) -> None:
    with httpx.Client(base_url=trio_url, timeout=10) as client:
        r = client.post("/cast", content=b"tab")
        assert r.status_code == 202
        assert "tab" in client.get("/casts").json()["casts"]


@pytest.mark.parametrize("path", ["/remote", "/app"])
def test_routes_that_need_asyncio_are_a_clean_500_under_trio(trio_url: str, path: str) -> None:
    r = httpx.get(trio_url + path, timeout=10)
    assert r.status_code == 500
    assert r.json()["error"] == "Unsupported event loop"
    assert CAUSE in r.json()["detail"]
    assert httpx.get(trio_url.removesuffix("/saloon") + "/host").status_code == 200


def test_the_operator_views_answer_under_trio(trio_url: str) -> None:
    # the views answered in a thread (the token's, /metrics) go through anyio's threads
    # there: asyncio.to_thread finds no loop (it was a 500 with a traceback)
    from tests.support.trio_apps import TOKEN

    auth = {"authorization": "Bearer " + TOKEN}
    assert httpx.get(trio_url + "/_coyote/health", timeout=10).json() == {"status": "ok"}
    r = httpx.get(trio_url + "/_coyote/routes", headers=auth, timeout=10)
    assert r.status_code == 200 and any(x["path"] == "/" for x in r.json()), r.text
    r = httpx.get(trio_url + "/_coyote/metrics", timeout=10)
    assert r.status_code == 200 and "coyote_requests_total" in r.text, r.text
    assert httpx.get(trio_url + "/_coyote/routes", timeout=10).status_code == 401
