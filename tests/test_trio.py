"""coyote_mw dispatches on asyncio: under a real ``hypercorn -k trio`` it refuses to start,
naming the cause, and where no lifespan reached it each request it would dispatch is a
clean JSON 500; the host's own routes keep working."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.processes import ROOT, free_port, running

HYPERCORN = [sys.executable, "tests/hypercorn_cli.py", "-k", "trio"]
CAUSE = "coyote_mw dispatches on asyncio, and this server runs trio"


def test_a_host_with_coyote_refuses_to_start_under_trio_naming_the_cause() -> None:
    argv = [*HYPERCORN, "sample_apps.starlette_host:app", "--port", str(free_port())]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,  # it ends by itself: startup failed
        check=False,
    )
    assert "Lifespan failure in startup" in done.stderr.decode()
    assert CAUSE in done.stderr.decode()


def test_without_a_lifespan_a_coyote_route_under_trio_is_a_clean_500() -> None:
    with running([*HYPERCORN, "tests.trio_apps:mounted"], ready_path="/host") as url:
        assert httpx.get(url + "/host").status_code == 200  # the host runs on trio
        r = httpx.get(url + "/saloon/")
        assert r.status_code == 500
        assert r.json()["error"] == "Unsupported event loop"
        assert CAUSE in r.json()["detail"]
