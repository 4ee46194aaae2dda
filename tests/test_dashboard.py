"""The operator's dashboard over HTTP, in process under ASGI and WSGI: the sign-in form,
the session cookie, what is refused (no token in a URL, a forged or ended session, a
cross-origin POST), the security headers, and the JSON the page polls.
(In a real Chromium against real processes: tests/test_dashboard_browser.py.)"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from coyote_mw import Coyote
from coyote_mw.ops.dashboard import MAX_MESSAGE, RECENT_ERRORS, Sessions, recent_errors
from tests.support.http_clients import ASGIClient
from tests.support.processes import ROOT
from tests.support.registration import AUTH, TOKEN, api, leader, payload

__all__ = ["api", "leader"]  # the fixtures, shared

PAGE = "/_coyote/dashboard"
DATA = PAGE + "/data"
LOGIN = PAGE + "/login"
LOGOUT = PAGE + "/logout"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _origin(api: Any, scheme: str = "http") -> dict[str, str]:
    """The Origin and Host a browser sends with a form on the dashboard's own page."""
    host = "testserver" if hasattr(api, "loop") else "t"
    return {"origin": f"{scheme}://{host}", "host": host}


def _sign_in(api: Any, token: str = TOKEN, scheme: str = "http") -> httpx.Response:
    base = "https://testserver" if hasattr(api, "loop") else "https://t"
    url = (base if scheme == "https" else "") + LOGIN
    return api.post(url, content=f"token={token}", headers={**FORM, **_origin(api, scheme)})


def _session(api: Any) -> dict[str, str]:
    r = _sign_in(api)
    assert r.status_code == 303, r.text
    value = re.match(r"coyote_dashboard=([^;]+);", r.headers["set-cookie"])
    assert value is not None
    return {"cookie": f"coyote_dashboard={value.group(1)}"}


def _assert_secure_headers(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_without_a_session_the_page_is_the_sign_in_form(api: Any) -> None:
    r = api.get(PAGE)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    _assert_secure_headers(r)
    assert '<form method="post" action="/_coyote/dashboard/login">' in r.text
    assert 'type="password"' in r.text and '<label for="token">' in r.text
    assert "dashboard.js" not in r.text  # nothing of the dashboard before signing in
    assert "<script>" not in r.text and "style=" not in r.text  # nothing inline


def test_the_data_needs_a_session_or_the_bearer_token(api: Any) -> None:
    r = api.get(DATA)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "Authorization required"
    _assert_secure_headers(r)
    wrong = api.get(DATA, headers={"authorization": "Bearer " + "x" * 32})
    assert wrong.status_code == 401 and wrong.json() == {"error": "Invalid token"}
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = api.get(DATA, headers=AUTH)
    assert r.status_code == 200, r.text
    assert {"now", "ready", "topologies", "instances", "routes", "errors"} <= r.json().keys()


def test_a_token_in_the_query_string_is_never_taken(api: Any) -> None:
    assert api.get(f"{DATA}?token={TOKEN}").status_code == 401
    assert api.get(f"{DATA}?access_token={TOKEN}").status_code == 401
    page = api.get(f"{PAGE}?token={TOKEN}")
    assert 'type="password"' in page.text  # still the form
    r = api.post(f"{LOGIN}?token={TOKEN}", content=b"", headers={**FORM, **_origin(api)})
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_signing_in_gives_a_signed_httponly_strict_cookie_that_is_not_the_token(
    api: Any,
) -> None:
    r = _sign_in(api)
    assert r.status_code == 303 and r.headers["location"] == PAGE
    _assert_secure_headers(r)
    cookie = r.headers["set-cookie"]
    attributes = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attributes and "SameSite=Strict" in attributes
    assert "Path=/_coyote/dashboard" in attributes and "Max-Age=28800" in attributes
    assert "Secure" not in attributes  # plain http: a Secure cookie would not come back
    assert TOKEN not in cookie
    session = _session(api)
    page = api.get(PAGE, headers=session)
    assert page.status_code == 200
    _assert_secure_headers(page)
    assert '<script src="/_coyote/dashboard/static/dashboard.js" defer></script>' in page.text
    assert 'data-endpoint="/_coyote/dashboard/data"' in page.text
    assert api.get(DATA, headers=session).status_code == 200


def test_the_cookie_is_secure_over_https(api: Any) -> None:
    r = _sign_in(api, scheme="https")
    assert r.status_code == 303, r.text
    assert "Secure" in [a.strip() for a in r.headers["set-cookie"].split(";")]


def test_a_wrong_token_gives_the_form_again_with_an_error(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "coyote_mw.dashboard"):
        r = _sign_in(api, token="w" * 32)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    _assert_secure_headers(r)
    assert '<p id="login-error" class="error" role="alert">The token is wrong.</p>' in r.text
    assert 'aria-describedby="token-help login-error"' in r.text
    assert "w" * 32 not in r.text
    (line,) = [x for x in caplog.records if x.name == "coyote_mw.dashboard"]
    assert line.levelname == "WARNING" and "w" * 32 not in line.getMessage()


def test_a_forged_expired_or_foreign_session_is_refused(api: Any, leader: Coyote) -> None:
    good = _session(api)["cookie"].split("=", 1)[1]
    expiry, sid, signature = good.split(".")
    forged = [
        f"{int(expiry) + 3600}.{sid}.{signature}",  # a later expiry, the old signature
        f"{expiry}.{sid}.{signature[:-2]}AA",
        f"{expiry}.{sid}",
        "x" * 300,
        "a.b.c",
        "..",
        Sessions(b"another-token-0123456789").issue(),  # signed under another token
        Sessions(TOKEN.encode(), lifetime=-1).issue(),  # expired
    ]
    for value in forged:
        cookie = {"cookie": f"coyote_dashboard={value}"}
        assert api.get(DATA, headers=cookie).status_code == 401
        assert 'type="password"' in api.get(PAGE, headers=cookie).text
    assert api.get(DATA, headers={"cookie": f"coyote_dashboard={good}"}).status_code == 200


def test_signing_out_ends_the_session(api: Any) -> None:
    session = _session(api)
    r = api.post(LOGOUT, headers={**session, **_origin(api)})
    assert r.status_code == 303 and r.headers["location"] == PAGE
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert api.get(DATA, headers=session).status_code == 401  # a copy of it is refused too
    assert 'type="password"' in api.get(PAGE, headers=session).text


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "https://testserver", "host": "testserver"},  # another scheme
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ],
)
def test_a_cross_origin_sign_in_or_out_is_refused(api: Any, headers: dict[str, str]) -> None:
    r = api.post(LOGIN, content=f"token={TOKEN}", headers={**FORM, **headers})
    assert r.status_code == 403 and r.json() == {"error": "Cross-origin request refused"}
    assert "set-cookie" not in r.headers
    session = _session(api)
    r = api.post(LOGOUT, headers={**session, **headers})
    assert r.status_code == 403
    assert api.get(DATA, headers=session).status_code == 200  # not signed out


def test_signing_in_takes_a_form_body_only(api: Any) -> None:
    r = api.post(LOGIN, json={"token": TOKEN}, headers=_origin(api))
    assert r.status_code == 415 and r.json()["expected"] == "application/x-www-form-urlencoded"
    r = api.post(LOGIN, content=b"token=\xff", headers={**FORM, **_origin(api)})
    assert r.status_code == 400 and r.json()["error"] == "Invalid form"
    r = api.post(LOGIN, content=b"t" * (64 * 1024 + 1), headers={**FORM, **_origin(api)})
    assert r.status_code == 413


def test_the_script_style_sheet_and_icon_are_served_and_nothing_else(api: Any) -> None:
    js = api.get(PAGE + "/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff"
    assert "textContent" in js.text and "innerHTML" not in js.text
    css = api.get(PAGE + "/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert api.get(PAGE + "/static/favicon.svg").status_code == 200
    for path in ("/static/login.html", "/static/../views.py", "/static/", "/nope", "/"):
        r = api.get(PAGE + path)
        assert r.status_code == 404 and r.json()["error"] == "No such dashboard page"


def test_each_dashboard_path_answers_its_methods_only(api: Any) -> None:
    for path, allowed in ((PAGE, "GET, HEAD"), (DATA, "GET, HEAD"), (LOGIN, "POST")):
        r = api.request("PUT" if allowed == "POST" else "DELETE", path)
        assert r.status_code == 405 and r.headers["allow"] == allowed
    assert api.head(PAGE).status_code == 200
    assert api.head(DATA).status_code == 401


def test_the_registration_api_does_not_take_the_session_cookie(api: Any) -> None:
    session = _session(api)
    assert api.get("/_coyote/routes", headers=session).status_code == 401
    r = api.post("/_coyote/registrations", json=payload(), headers=session)
    assert r.status_code == 401


def test_the_data_shows_each_instance_with_its_health_and_each_relay_with_its_load(
    api: Any, leader: Coyote
) -> None:
    r = api.post("/_coyote/registrations", json=payload(ttl=30), headers=AUTH)
    assert r.status_code == 201, r.text
    data = api.get(DATA, headers=AUTH).json()
    (one,) = [i for i in data["instances"] if i["instance"] == "one"]
    assert one["service"] == "remote.saloon" and one["url"] == "http://127.0.0.1:9"
    assert one["health"]["ejected"] is False and one["routes"] == 1
    assert one["lease_expires"] and one["last_heartbeat"]
    saloon = [i for i in data["instances"] if i["service"] == "deadwood.saloon"]
    assert saloon and saloon[0]["health"] is None  # in process
    (default,) = data["topologies"]
    assert default["topology"] == "default" and default["routes"] == len(data["routes"])
    assert default["relay"] == {
        "active": 0,
        "concurrency": 50,
        "waiting": 0,
        "queue": 100,
        "rejected": 0,
    }
    assert data["ready"] is None


def test_the_routes_travel_again_only_when_the_table_changed(api: Any, leader: Coyote) -> None:
    """The page polls with the ``routes_version`` it has: ``routes`` is null while the
    table is at that version, the table's routes again once it changed; everything else
    is what the full answer says."""
    first = api.get(DATA, params={"routes": ""}, headers=AUTH).json()
    full = api.get(DATA, headers=AUTH).json()
    assert first["routes"] == leader.table.routes()  # as the table lists them
    assert [r["path"] for r in first["routes"]] == [r["path"] for r in full["routes"]]
    assert "upstreams" in full["routes"][0] and "upstreams" not in first["routes"][0]
    version = first["routes_version"]
    assert full["routes_version"] == version
    same = api.get(DATA, params={"routes": version}, headers=AUTH).json()
    assert same["routes"] is None and same["routes_version"] == version
    for key in ("instances", "topologies", "ready"):
        assert same[key] == full[key], key

    r = api.post("/_coyote/registrations", json=payload(ttl=30), headers=AUTH)
    assert r.status_code == 201, r.text
    changed = api.get(DATA, params={"routes": version}, headers=AUTH).json()
    assert changed["routes_version"] != version
    assert ("GET", "/remote") in {(r["method"], r["path"]) for r in changed["routes"]}
    full = api.get(DATA, headers=AUTH).json()
    for key in ("instances", "topologies"):  # the instance's health and lease as well
        assert changed[key] == full[key], key
    (one,) = [i for i in changed["instances"] if i["instance"] == "one"]
    assert one["lease_expires"] and one["routes"] == 1
    # a version of another process (or of this one before a restart) is never this one's
    other = "0" * 8 + "." + changed["routes_version"].split(".")[1]
    assert api.get(DATA, params={"routes": other}, headers=AUTH).json()["routes"]
    many = "&".join(f"f{i}=1" for i in range(9))
    assert api.get(f"{DATA}?{many}", headers=AUTH).status_code == 200  # ignored, as before
    refused = api.get(f"{DATA}?{many}&routes=x", headers=AUTH)
    assert refused.status_code == 400 and refused.json()["error"] == "Invalid query string"


def test_a_full_relay_shows_its_slots_taken_and_the_requests_it_turned_away(
    api: Any, leader: Coyote
) -> None:
    leader.configure(concurrency=1, queue=0)
    relay = leader.relay_for("default")
    assert relay.try_enter()  # the one slot, taken
    try:
        assert api.get("/").status_code == 503
        load = api.get(DATA, headers=AUTH).json()["topologies"][0]["relay"]
    finally:
        relay.release()
    assert load == {"active": 1, "concurrency": 1, "waiting": 0, "queue": 0, "rejected": 1}


def test_recent_errors_are_the_last_warnings_newest_first_bounded_in_count_and_size(
    api: Any,
) -> None:
    log = logging.getLogger("coyote_mw.health")
    log.info("not a warning")
    for n in range(RECENT_ERRORS + 5):
        log.warning("instance %d ejected", n)
    log.error("x" * (MAX_MESSAGE * 3))
    errors = api.get(DATA, headers=AUTH).json()["errors"]
    assert len(errors) == RECENT_ERRORS
    assert errors[0]["level"] == "ERROR" and errors[0]["message"] == "x" * MAX_MESSAGE
    assert errors[1] == {
        "time": errors[1]["time"],
        "level": "WARNING",
        "logger": "coyote_mw.health",
        "message": f"instance {RECENT_ERRORS + 4} ejected",
    }
    assert not any(e["message"] == "not a warning" for e in errors)
    assert recent_errors() is recent_errors()  # one per process, whatever the leaders


def test_recent_errors_keep_an_unconfigured_host_silent_and_its_access_line_unbuilt() -> None:
    # the recent errors' handler is on coyote_mw: an access line still finds no handler
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import logging\n"
            "from coyote_mw import Coyote\n"
            "from coyote_mw.middleware import accesslog\n"
            "coyote = Coyote(token='t' * 32)\n"
            "logging.getLogger('coyote_mw.health').warning('instance ejected')\n"
            "print(accesslog._destination())\n"
            "coyote.close()\n",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip() == "False"


def test_no_dashboard_without_a_token(loop_thread: Any) -> None:
    coyote = Coyote()
    client = ASGIClient(coyote.asgi(), loop_thread)
    try:
        assert client.get(PAGE).status_code == 404
    finally:
        client.close()
        coyote.close()


def _mounted(interface: str, coyote: Coyote, loop_thread: Any) -> Any:
    """coyote mounted at /admin in its host: a Starlette Mount, or Werkzeug's dispatcher
    (SCRIPT_NAME /admin, PATH_INFO below it) under WSGI."""
    if interface == "asgi":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        host = Starlette(routes=[Mount("/admin", app=coyote.asgi())])
        return ASGIClient(host, loop_thread)
    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    host = DispatcherMiddleware(NotFound(), {"/admin": coyote.wsgi()})
    return httpx.Client(transport=httpx.WSGITransport(host), base_url="http://testserver")


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_mounted_below_a_root_path_every_url_it_gives_stays_below_it(
    interface: str, loop_thread: Any
) -> None:
    coyote = Coyote(token=TOKEN)
    client = _mounted(interface, coyote, loop_thread)
    origin = {"origin": "http://testserver", "host": "testserver"}
    try:
        page = client.get("/admin" + PAGE)
        assert page.status_code == 200
        assert 'action="/admin/_coyote/dashboard/login"' in page.text
        r = client.post("/admin" + LOGIN, content=f"token={TOKEN}", headers={**FORM, **origin})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/admin" + PAGE
        assert "Path=/admin/_coyote/dashboard;" in r.headers["set-cookie"]
        session = r.headers["set-cookie"].split(";", 1)[0]
        board = client.get("/admin" + PAGE, headers={"cookie": session})
        assert 'src="/admin/_coyote/dashboard/static/dashboard.js"' in board.text
        assert 'data-endpoint="/admin/_coyote/dashboard/data"' in board.text
        assert client.get("/admin" + DATA, headers={"cookie": session}).status_code == 200
    finally:
        client.close()
        coyote.close()
