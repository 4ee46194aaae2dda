"""Make docs/dashboard.png: the dashboard of a real leader with two Saloon instances,
taken in Debian's headless chromium through Playwright (the browser tests' set-up).

    .venv/bin/python -m tests.support.dashboard_screenshot [docs/dashboard.png]

Every process is started here on a free 127.0.0.1 port and ended by PID.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.support.browser import chromium, console_problems, sign_in
from tests.support.processes import BIN, ROOT, running

TOKEN = "dashboard-screenshot-token-0123456789"


def main(out: Path) -> None:
    env = {"COYOTE_TOKEN": TOKEN}
    auth = {"authorization": f"Bearer {TOKEN}"}
    with ExitStack() as stack:
        leader = stack.enter_context(
            running([str(BIN / "coyote"), "leader"], "/_coyote/health", env=env)
        )
        for name in ("s1", "s2"):
            client = [str(BIN / "coyote"), "serve-client", "sample_apps.deadwood.saloon:Saloon"]
            stack.enter_context(
                running([*client, "--leader", leader, "--instance", name], "/", env=env)
            )
        deadline = time.monotonic() + 20
        while True:  # until both are registered (each within a second of listening)
            table = httpx.get(f"{leader}/_coyote/routes", headers=auth, timeout=5).json()
            if table and all(len(route["instances"]) == 2 for route in table):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the two Saloons did not register within 20 s")
            time.sleep(0.1)
        for _ in range(5):
            httpx.get(leader + "/", timeout=5)  # some traffic through the relay
        browser = stack.enter_context(chromium())
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, leader, "not-the-token")  # a warning line in "Recent errors"
        problems = console_problems(page)
        sign_in(page, leader, TOKEN)
        instances = page.get_by_role("table", name="Every registered instance", exact=False)
        instances.get_by_role("cell", name="s2", exact=True).wait_for()
        page.get_by_text("dashboard sign-in refused").wait_for()
        page.screenshot(path=str(out), full_page=True)
        if problems:
            raise SystemExit(f"the page reported problems: {problems}")
    print(f"wrote {out}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
