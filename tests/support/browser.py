"""Debian's chromium driven by Playwright: what the dashboard's browser tests and its
screenshot share.  Never a downloaded browser: ``executable_path`` is the system's."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium")
"""Debian's chromium (``apt-get install chromium``), None when it is not installed."""

DASHBOARD = "/_coyote/dashboard"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed on the way out."""
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


def console_problems(page: Any) -> list[str]:
    """What the page says went wrong, as it happens: script errors, failed loads,
    whatever the Content-Security-Policy blocked (the console's errors and warnings)."""
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(message.text)
        if message.type in ("error", "warning")
        else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


def sign_in(page: Any, leader_url: str, token: str) -> None:
    """Open the dashboard's sign-in form and send it with ``token``."""
    page.goto(leader_url + DASHBOARD)
    page.get_by_label("Leader token").fill(token)
    page.get_by_role("button", name="Sign in").click()
