"""Flask: the extension, through Flask's own test client and a real gunicorn process."""

from __future__ import annotations

import threading

import pytest
from coyote_mw.adapters.flask import Coyote
from flask import Flask

from coyote_mw import Client, Request, route
from sample_apps.deadwood.saloon import STORY
from sample_apps.flask_host import create_app
from tests.support.clients import Trouble
from tests.support.processes import running


def test_saloon_and_host_route_through_flask_test_client() -> None:
    app = create_app()
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == STORY
    assert client.get("/host").status_code == 200
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert b"No matching route" not in missing.data  # Flask's own 404: it owns the path
    assert client.post("/").status_code == 404  # a POST falls through to Flask, which has no /


def test_mount_makes_coyote_own_a_prefix_with_its_errors() -> None:
    app = create_app(COYOTE_MOUNT="/saloon")
    client = app.test_client()
    assert client.get("/saloon/").get_data(as_text=True) == STORY
    assert client.get("/saloon/nothing").get_json()["error"] == "No matching route"
    r = client.post("/saloon/")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    assert client.get("/host").status_code == 200


def test_settings_come_from_app_config_and_init_app_works_in_a_factory() -> None:
    coyote = Coyote()
    trouble = Trouble()
    coyote.register(trouble)
    app = Flask(__name__)
    app.config.update(COYOTE_CONCURRENCY=1, COYOTE_QUEUE=0, COYOTE_TIMEOUT=5)
    coyote.init_app(app)
    assert app.extensions["coyote"] is coyote
    assert (coyote.relay.concurrency, coyote.relay.queue) == (1, 0)
    client = app.test_client()
    assert client.get("/fail").get_json() == {"error": "Routing error"}
    holder = threading.Thread(target=client.get, args=("/hold",))
    holder.start()
    try:
        deadline = threading.Event()
        while coyote.relay.active == 0 and not deadline.wait(0.01):
            pass
        r = client.get("/hold")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    finally:
        trouble.gate.set()
        holder.join(5)
    coyote.close()


def test_precedence_host_lets_flask_routes_win() -> None:
    class Shadow(Client):
        @route("GET", "/host")
        def shadow(self, request: Request) -> str:
            return "coyote"

    app = create_app(COYOTE_PRECEDENCE="host")
    app.extensions["coyote"].register(Shadow())
    assert app.test_client().get("/host").get_data(as_text=True).startswith("This route")


@pytest.mark.parametrize("bad", ["nomodule", "sample_apps.deadwood.saloon:Nope"])
def test_bad_client_spec_in_config_says_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValueError, match=bad.split(":")[0]):
        create_app(COYOTE_CLIENTS=[bad])


def test_flask_host_under_a_real_gunicorn() -> None:
    with running(["gunicorn", "-w", "1", "--threads", "4", "sample_apps.flask_host:app"]) as url:
        import httpx

        assert httpx.get(url + "/").text == STORY
        assert httpx.get(url + "/host").status_code == 200
        r = httpx.get(url + "/files/%zz")
        assert r.status_code == 400 and r.json()["error"] == "Bad request path"
        assert httpx.get(url + "/no/such/route").status_code == 404


def test_registration_api_settings_come_from_app_config() -> None:
    token = "flask-config-token-0123456789"
    app = create_app(COYOTE_TOKEN=token, COYOTE_PREFIX="/_reg")
    client = app.test_client()
    r = client.post(
        "/_reg/registrations",
        json={
            "service": "remote",
            "instance": "r1",
            "url": "http://127.0.0.1:9",
            "routes": [{"method": "GET", "path": "/remote"}],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    assert client.get("/_reg/routes").status_code == 401
    app.extensions["coyote"].close()


def test_an_unknown_coyote_key_in_app_config_is_refused_naming_the_closest_one() -> None:
    app = Flask(__name__)
    app.config["COYOTE_CLIENT"] = ["sample_apps.deadwood.saloon:Saloon"]
    with pytest.raises(ValueError, match=r"COYOTE_CLIENT is not .*did you mean COYOTE_CLIENTS\?"):
        Coyote(app)
    app = Flask(__name__)
    app.config["COYOTE_TIMEOUT"] = 5  # every known key passes, other config is not ours
    app.config["SECRET_KEY"] = "x"
    assert Coyote(app).relay.timeout == 5
