"""The operator's view, in process: /health and /ready without a token under ASGI and
WSGI and under Flask / Django hosts, and /routes with each instance's URL, health and
lease.  (Real leader processes and a real Redis: tests/test_ops_processes.py.)"""

from __future__ import annotations

import datetime
import io
import json
import time
from typing import Any

import httpx
import pytest
from django.test import AsyncClient
from django.test import Client as DjangoClient
from django.test.utils import override_settings

from coyote_mw import Coyote
from coyote_mw.cli.table import print_routes
from sample_apps.flask_host import create_app
from tests.support import django_setup  # noqa: F401  (sets Django up)
from tests.support.ledger import LedgerUpstream
from tests.support.registration import AUTH, TOKEN, api, leader, payload

__all__ = ["api", "leader"]  # the fixtures, shared

SALOON = "sample_apps.deadwood.saloon:Saloon"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _when(value: str) -> float:
    assert value.endswith("Z"), value
    return datetime.datetime.fromisoformat(value[:-1] + "+00:00").timestamp()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_and_ready_answer_without_a_token(api: Any, method: str) -> None:
    health = api.request(method, "/_coyote/health")
    assert health.status_code == 200, health.text
    ready = api.request(method, "/_coyote/ready")
    assert ready.status_code == 200, ready.text
    assert ready.headers["content-type"].startswith("application/json")
    assert ready.headers["cache-control"] == "no-store"
    if method == "GET":
        assert health.json() == {"status": "ok"}
        assert ready.json()["status"] == "ready" and ready.json()["routes"] >= 1
    else:
        assert health.content == b"" and ready.content == b""


def test_the_other_api_endpoints_still_need_the_token(api: Any) -> None:
    assert api.get("/_coyote/routes").status_code == 401
    assert api.get("/_coyote/healthz").status_code == 401  # only the two probes are open
    assert api.get("/_coyote/health/x").status_code == 401


def test_a_probe_with_another_method_is_405_naming_get_and_head(api: Any) -> None:
    r = api.post("/_coyote/ready", content=b"x")
    assert r.status_code == 405
    assert r.json()["error"] == "Method not allowed" and r.headers["allow"] == "GET, HEAD"


def test_probes_under_a_flask_host() -> None:
    app = create_app(COYOTE_TOKEN=TOKEN, COYOTE_PREFIX="/_ops")
    client = app.test_client()
    try:
        assert client.get("/_ops/health").get_json() == {"status": "ok"}
        r = client.get("/_ops/ready")
        assert r.status_code == 200 and r.get_json()["status"] == "ready"
    finally:
        app.extensions["coyote"].close()


@override_settings(COYOTE={"CLIENTS": [SALOON], "TOKEN": TOKEN})
def test_probes_under_a_django_host_wsgi() -> None:
    client = DjangoClient()
    assert json.loads(client.get("/_coyote/health").content) == {"status": "ok"}
    r = client.get("/_coyote/ready")
    assert r.status_code == 200 and json.loads(r.content)["status"] == "ready"
    assert client.get("/_coyote/routes").status_code == 401


@pytest.mark.anyio
@override_settings(COYOTE={"CLIENTS": [SALOON], "TOKEN": TOKEN})
async def test_probes_under_a_django_host_asgi() -> None:
    r = await AsyncClient().get("/_coyote/ready")
    assert r.status_code == 200
    body = b"".join([c async for c in r.streaming_content])  # type: ignore[attr-defined]
    assert json.loads(body)["status"] == "ready"


def test_routes_show_each_instance_with_its_url_health_lease_and_heartbeat(
    api: Any, leader: Coyote
) -> None:
    before = time.time()
    r = api.post("/_coyote/registrations", json=payload(ttl=30), headers=AUTH)
    assert r.status_code == 201, r.text
    lease = r.json()["lease"]
    table = api.get("/_coyote/routes", headers=AUTH).json()
    (route,) = [x for x in table if x["path"] == "/remote"]
    # the shape promised before stays: instances are the names
    assert route["instances"] == ["one"] and route["service"] == "remote.saloon"
    (up,) = route["upstreams"]
    assert up["instance"] == "one" and up["url"] == "http://127.0.0.1:9"
    assert up["kind"] == "remote"
    assert up["health"] == {
        "ejected": False,
        "consecutive_failures": 0,
        "ejected_until": None,
        "ejections": 0,
    }
    registered = _when(up["last_heartbeat"])
    assert before - 1 <= registered <= time.time() + 1
    assert _when(up["lease_expires"]) == pytest.approx(registered + 30, abs=0.01)
    time.sleep(0.05)
    assert api.request("PUT", f"/_coyote/registrations/{lease}", headers=AUTH).status_code == 200
    table = api.get("/_coyote/routes", headers=AUTH).json()
    (up,) = next(x for x in table if x["path"] == "/remote")["upstreams"]
    assert _when(up["last_heartbeat"]) > registered  # the heartbeat moved it

    # an in-process route: no URL, no health, no lease
    saloon = next(x for x in table if x["service"] == "deadwood.saloon")
    assert saloon["upstreams"][0]["url"] is None and saloon["upstreams"][0]["health"] is None
    assert saloon["upstreams"][0]["lease_expires"] is None


def test_routes_show_an_ejected_instance_with_its_failures_and_ejection_time() -> None:
    coyote = Coyote(token=TOKEN, eject_after=2, base_ejection_time=60, max_ejection_percent=100)
    try:
        with LedgerUpstream() as up:
            coyote.register_remote(
                up.url, routes=[("GET", "/{rest:path}")], service="up", instance="u1"
            )
            http = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
            try:
                assert http.get("/status/503").status_code == 503
                (row,) = http.get("/_coyote/routes", headers=AUTH).json()
                assert row["upstreams"][0]["health"]["consecutive_failures"] == 1
                assert row["upstreams"][0]["health"]["ejected"] is False
                assert http.get("/status/503").status_code == 503  # the second: ejected
                (row,) = http.get("/_coyote/routes", headers=AUTH).json()
            finally:
                http.close()
        health = row["upstreams"][0]["health"]
        assert health["ejected"] is True and health["ejections"] == 1
        assert health["consecutive_failures"] == 2
        assert _when(health["ejected_until"]) == pytest.approx(time.time() + 60, abs=5)
        out = io.StringIO()
        print_routes([row], out)
        lines = out.getvalue().splitlines()
        assert lines[0].split()[:6] == ["TOPOLOGY", "METHOD", "PATH", "SERVICE", "INSTANCE", "URL"]
        assert "ejected until" in lines[1] and up.url in lines[1]
        # aligned: every column starts where its heading does
        assert lines[1].index(up.url) == lines[0].index("URL")
    finally:
        coyote.close()


def test_the_routes_table_prints_a_leader_from_before_upstreams_by_name() -> None:
    out = io.StringIO()
    print_routes(
        [{"topology": "default", "method": "GET", "path": "/", "service": "s", "instances": ["a"]}],
        out,
    )
    assert out.getvalue().splitlines()[1].split()[:5] == ["default", "GET", "/", "s", "a"]
    with pytest.raises(ValueError, match="not a route table"):
        print_routes({"error": "x"}, io.StringIO())
