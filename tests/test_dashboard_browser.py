"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a
real ``coyote leader`` and real Saloon client processes.

Every wait is one of Playwright's auto-waiting expectations, bounded by its timeout;
every process is started by the test and ended by PID.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMIUM, chromium, console_problems, sign_in
from tests.support.coyote_processes import TOKEN, Proc, procs, routes_of
from tests.support.processes import until

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (make .venv/.test-installed installs it)",
)

__all__ = ["procs"]  # the fixture, shared: real processes, ended by PID

SALOON = "sample_apps.deadwood.saloon:Saloon"
TTL = 2


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.problems = console_problems(page)
    yield page
    context.close()


def _instances(leader: Proc) -> set[str]:
    return {name for route in routes_of(leader) for name in route["instances"]}  # type: ignore[attr-defined]


def _instance_row(page: Any, name: str) -> Any:
    table = page.get_by_role("table", name=re.compile("^Every registered instance"))
    return table.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))


def test_the_page_shows_the_saloon_a_second_instance_within_2s_and_drops_a_killed_one(
    procs: Callable[..., Proc], page: Any
) -> None:
    from playwright.sync_api import expect

    leader = procs("leader")
    saloon = ("serve-client", SALOON, "--leader", leader.url, "--ttl", str(TTL))
    procs(*saloon, "--instance", "s1")
    until(lambda: _instances(leader) == {"s1"}, 20, "s1 registered")

    sign_in(page, leader.url, "w" * 32)  # a wrong token: the form again, saying so
    expect(page.get_by_role("alert")).to_have_text("The token is wrong.")
    expect(page.get_by_label("Leader token")).to_be_focused()
    page.problems.clear()  # the console names that 401 answer: not a problem of the page
    sign_in(page, leader.url, TOKEN)

    s1 = _instance_row(page, "s1")
    expect(s1).to_contain_text("deadwood.saloon")
    expect(s1).to_contain_text("Healthy")  # in words, not by colour alone
    routes = page.get_by_role("table", name=re.compile("^The route table"))
    expect(routes.get_by_role("cell", name="/drinks/{id:int}", exact=True)).to_be_visible()
    expect(routes.get_by_role("row")).to_have_count(1 + 5)  # the head and the Saloon's 5
    expect(page.get_by_role("status")).to_have_text("Live: updated every second.")

    s2 = procs(*saloon, "--instance", "s2")
    until(lambda: _instances(leader) == {"s1", "s2"}, 20, "s2 registered")
    row = _instance_row(page, "s2")
    expect(row).to_be_visible(timeout=2000)  # the page polls every second
    expect(row).to_contain_text("Healthy")
    changes = page.locator("#changes")  # aria-live: what a screen reader is told
    expect(changes).to_contain_text("deadwood.saloon/s2 in default registered")
    # the routes travel again when the table changed (the page polls with its version)
    drinks = routes.get_by_role("row").filter(
        has=page.get_by_role("cell", name="/drinks/{id:int}", exact=True)
    )
    expect(drinks).to_contain_text("s1, s2")

    s2.kill(signal.SIGKILL)
    # its lease runs out (ttl + the sweep's second), then a poll shows it gone
    expect(row).to_have_count(0, timeout=(TTL + 1 + 2) * 1000)
    expect(changes).to_contain_text("deadwood.saloon/s2 in default is gone")
    expect(s1).to_be_visible()
    expect(drinks).not_to_contain_text("s2")
    expect(drinks).to_contain_text("s1")
    errors = page.get_by_role("table", name=re.compile("^The last warnings"))
    expect(errors).to_contain_text("lease of deadwood.saloon/s2 in default expired")
    expect(errors).to_contain_text("dashboard sign-in refused: wrong token")
    assert page.problems == []  # no script error, nothing the CSP blocked


def test_an_instance_that_stops_answering_is_shown_ejected_in_words(
    procs: Callable[..., Proc], page: Any
) -> None:
    from playwright.sync_api import expect

    leader = procs("leader")
    saloon = ("serve-client", SALOON, "--leader", leader.url, "--ttl", "30")
    procs(*saloon, "--instance", "s1")
    s2 = procs(*saloon, "--instance", "s2")
    until(lambda: _instances(leader) == {"s1", "s2"}, 20, "both registered")
    sign_in(page, leader.url, TOKEN)
    row = _instance_row(page, "s2")
    expect(row).to_contain_text("Healthy")

    s2.kill(signal.SIGKILL)  # its lease lasts 30 s more: it stays in the table

    def ejected() -> bool:
        httpx.get(leader.url + "/", timeout=5)  # s2 refuses the connection: retried on s1
        up = next(u for r in routes_of(leader) for u in r["upstreams"] if u["instance"] == "s2")  # type: ignore[attr-defined]
        return bool(up["health"]["ejected"])

    until(ejected, 20, "s2 ejected after connect failures")
    health = row.get_by_role("cell").nth(4)
    expect(health).to_have_text(re.compile(r"Ejected until \d\d:\d\d:\d\d"))
    expect(row.get_by_role("cell").nth(6)).to_have_text("1")  # one ejection
    expect(page.locator("#changes")).to_contain_text("deadwood.saloon/s2 in default is now ejected")
    errors = page.get_by_role("table", name=re.compile("^The last warnings"))
    expect(errors).to_contain_text("coyote_mw.health")
    assert page.problems == []


def test_the_session_cookie_is_httponly_strict_and_signing_out_ends_it(
    procs: Callable[..., Proc], page: Any
) -> None:
    from playwright.sync_api import expect

    leader = procs("leader")
    sign_in(page, leader.url, TOKEN)
    expect(page.get_by_role("heading", name="Topologies")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/_coyote/dashboard" and cookie["secure"] is False
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # out of reach of any script
    assert page.request.get(leader.url + "/_coyote/dashboard/data").status == 200

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Leader token")).to_be_visible()
    assert page.context.cookies() == []
    assert page.request.get(leader.url + "/_coyote/dashboard/data").status == 401
    # the session's value, kept by someone, is refused too
    kept = {"cookie": f"coyote_dashboard={cookie['value']}"}
    r = httpx.get(leader.url + "/_coyote/dashboard/data", headers=kept, timeout=5)
    assert r.status_code == 401
    assert page.problems == []
