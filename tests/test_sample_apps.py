"""The sample apps never rot: the demo host serves the Saloon, its own route, and falls through."""

from __future__ import annotations

from starlette.testclient import TestClient

from sample_apps.deadwood.saloon import STORY
from sample_apps.demo import build


def test_demo_host_serves_the_saloon_and_its_own_routes() -> None:
    coyote, app = build()
    with TestClient(app) as client:  # runs the lifespan too
        assert client.get("/").text == STORY
        assert client.get("/host").status_code == 200
        assert client.get("/table").json()[0]["service"] == "deadwood.saloon"
        assert client.get("/no/such/route").status_code == 404
    coyote.close()
