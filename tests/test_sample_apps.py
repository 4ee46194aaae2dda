"""The sample apps never rot: the demo host serves the Saloon, its own route, and falls through."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from starlette.testclient import TestClient

from sample_apps.deadwood.saloon import STORY
from sample_apps.demo import build
from tests.support.processes import ROOT


def test_demo_host_serves_the_saloon_and_its_own_routes() -> None:
    coyote, app = build()
    with TestClient(app) as client:  # runs the lifespan too
        assert client.get("/").text == STORY
        assert client.get("/host").status_code == 200
        assert client.get("/table").json()[0]["service"] == "deadwood.saloon"
        assert client.get("/no/such/route").status_code == 404
    coyote.close()


def test_demo_on_a_busy_port_says_so_in_one_line_without_the_banner() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = subprocess.run(
            [sys.executable, "-m", "sample_apps.demo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert demo.returncode != 0
    assert "Saloon is open" not in demo.stdout + demo.stderr
    lines = [line for line in demo.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, demo.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


def test_saloon_serves_drinks_and_a_tab_filled_by_casts() -> None:
    coyote, app = build()
    with TestClient(app) as client:
        assert client.get("/drinks/1").json() == {"id": 1, "drink": "whiskey"}
        assert client.get("/drinks").json()[2] == {"id": 3, "drink": "coffee"}  # the menu
        assert client.post("/tab", json={"drink": "coffee"}).status_code == 202
        deadline = time.monotonic() + 10
        while not (tab := client.get("/tab").json()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tab == [{"drink": "coffee"}]
    coyote.close()
