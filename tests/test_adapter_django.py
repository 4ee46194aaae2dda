"""Django: the middleware under WSGI (``Client``) and ASGI (``AsyncClient``), the management
command, and the sample project under real gunicorn and uvicorn processes."""

from __future__ import annotations

import asyncio
import os
import threading
from io import StringIO

import httpx
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_apps.django_host.settings")

import django

django.setup()

from coyote_mw.adapters.django import get_coyote  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import AsyncClient  # noqa: E402
from django.test import Client as DjangoClient  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from coyote_mw import Client, Request, route  # noqa: E402
from sample_apps.deadwood.saloon import STORY  # noqa: E402
from tests.processes import running  # noqa: E402

SALOON = "sample_apps.deadwood.saloon:Saloon"


class Trouble(Client):
    gate = threading.Event()

    @route("GET", "/fail")
    def fail(self, request: Request) -> str:
        raise RuntimeError("kaput")

    @route("GET", "/hold")
    def hold(self, request: Request) -> str:
        self.gate.wait(5)
        return "held"

    @route("GET", "/ahold")
    async def ahold(self, request: Request) -> str:
        await asyncio.sleep(0.3)
        return "held"

    @route("POST", "/echo")
    def echo(self, request: Request) -> bytes:
        return request.read()


def test_saloon_host_view_and_fall_through_under_wsgi() -> None:
    client = DjangoClient()
    r = client.get("/")
    assert r.status_code == 200 and r.content.decode() == STORY
    assert r["Content-Type"] == "text/html; charset=utf-8"
    assert client.get("/host").status_code == 200
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and b"No matching route" not in missing.content


@pytest.mark.anyio
async def test_saloon_host_view_and_fall_through_under_asgi() -> None:
    client = AsyncClient()
    r = await client.get("/")
    assert r.status_code == 200
    assert b"".join([c async for c in r.streaming_content]).decode() == STORY  # type: ignore[attr-defined]
    assert (await client.get("/host")).status_code == 200
    assert (await client.get("/no/such/route")).status_code == 404


@override_settings(COYOTE={"CLIENTS": [SALOON], "MOUNT": "/saloon", "CONCURRENCY": 1, "QUEUE": 0})
def test_errors_where_coyote_owns_the_mount_under_wsgi() -> None:
    client = DjangoClient()
    assert client.get("/saloon/").content.decode() == STORY
    get_coyote().register(Trouble())
    r = client.get("/saloon/nothing")
    assert r.status_code == 404 and r.json()["error"] == "No matching route"
    r = client.post("/saloon/")
    assert r.status_code == 405 and r["Allow"] == "GET, HEAD"
    assert client.get("/saloon/fail").json() == {"error": "Routing error"}
    assert client.post("/saloon/echo", b"a body", content_type="text/plain").content == b"a body"
    Trouble.gate.clear()
    holder = threading.Thread(target=client.get, args=("/saloon/hold",))
    holder.start()
    try:
        while get_coyote().relay.active == 0:
            threading.Event().wait(0.01)
        r = client.get("/saloon/hold")
        assert r.status_code == 503 and r["Retry-After"] == "1"
    finally:
        Trouble.gate.set()
        holder.join(5)


@pytest.mark.anyio
@override_settings(COYOTE={"CLIENTS": [SALOON], "MOUNT": "/saloon", "CONCURRENCY": 1, "QUEUE": 0})
async def test_errors_where_coyote_owns_the_mount_under_asgi() -> None:
    client = AsyncClient()
    get_coyote().register(Trouble())
    r = await client.get("/saloon/nothing")
    assert r.status_code == 404
    r = await client.post("/saloon/")
    assert r.status_code == 405 and r["Allow"] == "GET, HEAD"
    r = await client.get("/saloon/fail")
    assert r.status_code == 502
    r = await client.post("/saloon/echo", b"async body", content_type="text/plain")
    assert b"".join([c async for c in r.streaming_content]) == b"async body"  # type: ignore[attr-defined]
    statuses = sorted(
        r.status_code
        for r in await asyncio.gather(client.get("/saloon/ahold"), client.get("/saloon/ahold"))
    )
    assert statuses == [200, 503]


@override_settings(COYOTE={"CLIENTS": [SALOON], "PRECEDENCE": "host"})
def test_precedence_host_gives_django_views_the_first_word() -> None:
    class Shadow(Client):
        @route("GET", "/host")
        def shadow(self, request: Request) -> str:
            return "coyote"

    client = DjangoClient()
    client.get("/")  # loads the middleware, which builds the leader
    get_coyote().register(Shadow())
    assert client.get("/host").content.startswith(b"This route belongs to the Django")
    assert client.get("/").content.decode() == STORY


def test_management_command_lists_the_route_table() -> None:
    out = StringIO()
    call_command("coyote_routes", stdout=out)
    assert "GET" in out.getvalue() and "deadwood.saloon" in out.getvalue()
    out = StringIO()
    call_command("coyote_routes", "--json", stdout=out)
    assert '"service": "deadwood.saloon"' in out.getvalue()


@pytest.mark.parametrize(
    "server",
    [
        ["gunicorn", "-w", "1", "sample_apps.django_host.wsgi:application"],
        ["uvicorn", "sample_apps.django_host.asgi:application"],
    ],
    ids=["gunicorn-wsgi", "uvicorn-asgi"],
)
def test_django_sample_project_under_real_servers(server: list[str]) -> None:
    with running(server) as url:
        assert httpx.get(url + "/").text == STORY
        assert httpx.get(url + "/host").status_code == 200
        assert httpx.get(url + "/no/such/route").status_code == 404
        assert httpx.get(url + "/files/%zz").json()["error"] == "Bad request path"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@override_settings(
    COYOTE={"CLIENTS": [SALOON], "TRUSTED_PROXIES": ["10.0.0.0/8"], "MAX_HEADERS": 7}
)
def test_forwarding_settings_come_from_settings_coyote() -> None:
    leader = get_coyote()
    assert leader.forwarding.trusts("10.1.2.3") and not leader.forwarding.trusts("192.0.2.1")
    assert leader.forwarding.max_headers == 7
    many = {f"HTTP_X_H{i}": "v" for i in range(8)}
    assert DjangoClient().get("/", **many).status_code == 431  # type: ignore[arg-type]
