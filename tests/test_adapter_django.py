"""Django: the middleware under WSGI (``Client``) and ASGI (``AsyncClient``), the management
command, and the sample project under real gunicorn and uvicorn processes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import httpx
import pytest
from coyote_mw.adapters.django import get_coyote
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import AsyncClient
from django.test import Client as DjangoClient
from django.test.utils import override_settings

from coyote_mw import Client, Request, route
from sample_apps.deadwood.saloon import STORY
from tests.support import django_setup  # noqa: F401  (sets Django up)
from tests.support.clients import Trouble
from tests.support.processes import running

SALOON = "sample_apps.deadwood.saloon:Saloon"


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
    trouble = Trouble()
    get_coyote().register(trouble)
    r = client.get("/saloon/nothing")
    assert r.status_code == 404 and r.json()["error"] == "No matching route"
    r = client.post("/saloon/")
    assert r.status_code == 405 and r["Allow"] == "GET, HEAD"
    assert client.get("/saloon/fail").json() == {"error": "Routing error"}
    assert client.post("/saloon/echo", b"a body", content_type="text/plain").content == b"a body"
    holder = threading.Thread(target=client.get, args=("/saloon/hold",))
    holder.start()
    try:
        while get_coyote().relay.active == 0:
            threading.Event().wait(0.01)
        r = client.get("/saloon/hold")
        assert r.status_code == 503 and r["Retry-After"] == "1"
    finally:
        trouble.gate.set()
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


def test_an_unknown_key_in_settings_coyote_is_refused_naming_the_closest_one() -> None:
    closest = r"did you mean settings.COYOTE\['CLIENTS'\]"
    with (
        override_settings(COYOTE={"CLIENT": [SALOON]}),
        pytest.raises(ImproperlyConfigured, match=closest),
    ):
        DjangoClient().get("/")  # loading the middleware refuses it
    with (
        override_settings(COYOTE={"CLIENTS": [SALOON], "TIMOUT": 3}),
        pytest.raises(ImproperlyConfigured, match=r"'TIMOUT'.*did you mean .*'TIMEOUT'"),
    ):
        get_coyote()


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


JAR = "tests.support.django_site.jar:Jar"
COOKIES = ["session=abc; Path=/; HttpOnly", "theme=dark; Path=/; Max-Age=3600"]


def _set_cookie_lines(response: Any) -> list[str]:
    """The Set-Cookie lines Django's handlers write for ``response`` (from its cookies)."""
    return [c.output(header="").strip() for c in response.cookies.values()]


@override_settings(COYOTE={"CLIENTS": [JAR]})
def test_every_set_cookie_of_a_coyote_response_survives_under_wsgi() -> None:
    r = DjangoClient().get("/jar/cookies")
    assert r.status_code == 200 and r.content == b"two cookies"
    assert _set_cookie_lines(r) == COOKIES
    assert r["Link"] == "</a.css>; rel=preload, </b.js>; rel=preload"


@pytest.mark.anyio
@override_settings(COYOTE={"CLIENTS": [JAR]})
async def test_every_set_cookie_of_a_coyote_response_survives_under_asgi() -> None:
    client = AsyncClient()
    r = await client.get("/jar/cookies")
    assert r.status_code == 200
    assert _set_cookie_lines(r) == COOKIES
    assert r["Link"] == "</a.css>; rel=preload, </b.js>; rel=preload"
    # the test client keeps them as a browser would
    assert {k: m.value for k, m in client.cookies.items()} == {"session": "abc", "theme": "dark"}


@override_settings(
    COYOTE={"CLIENTS": [JAR]},
    MIDDLEWARE=[
        "django.middleware.cache.UpdateCacheMiddleware",
        "django.middleware.cache.FetchFromCacheMiddleware",  # coyote's answers cached too
        "coyote_mw.adapters.django.CoyoteMiddleware",
    ],
)
def test_set_cookie_lines_survive_djangos_cache_middleware() -> None:
    client = DjangoClient()
    first = client.get("/jar/cookies")
    again = client.get("/jar/cookies")  # from the cache: the response was pickled
    assert first["Cache-Control"].startswith("max-age") and again is not first
    assert _set_cookie_lines(first) == _set_cookie_lines(again) == COOKIES


@pytest.mark.parametrize(
    "server",
    [
        ["gunicorn", "-w", "1", "tests.support.django_site.wsgi:application"],
        ["uvicorn", "tests.support.django_site.asgi:application"],
    ],
    ids=["gunicorn-wsgi", "uvicorn-asgi"],
)
def test_every_set_cookie_reaches_the_client_under_real_django_servers(server: list[str]) -> None:
    with running(server) as url:
        r = httpx.get(url + "/jar/cookies")
        assert r.status_code == 200
        assert r.headers.get_list("set-cookie") == COOKIES


def _late_starter(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """A generator app: start_response runs on the first next(), as PEP 3333 allows."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"late "
    yield b"start"


def _never_starts(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    yield from ()


def _fails_first(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    raise RuntimeError("kaput before the first chunk")
    yield b""


@override_settings(COYOTE={"CLIENTS": []})
def test_a_whole_app_that_starts_its_response_late_is_served_under_django_wsgi() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("through the bridge")

    client = DjangoClient()
    client.get("/host")  # loads the middleware, which builds the leader
    coyote = get_coyote()
    coyote.register(_late_starter, routes=[("GET", "/late")], service="late", interface="wsgi")
    coyote.register(_never_starts, routes=[("GET", "/mute")], service="mute", interface="wsgi")
    coyote.register(_fails_first, routes=[("GET", "/kaput")], service="kaput", interface="wsgi")
    coyote.register(Starlette(routes=[Route("/sub", hello)]), routes=[("GET", "/sub")])
    r = client.get("/late")
    assert r.status_code == 200 and b"".join(r.streaming_content) == b"late start"  # type: ignore[attr-defined]
    assert r["Content-Type"] == "text/plain"
    r = client.get("/sub")
    assert r.status_code == 200 and b"".join(r.streaming_content) == b"through the bridge"  # type: ignore[attr-defined]
    for path in ("/mute", "/kaput"):
        r = client.get(path)
        assert r.status_code == 502 and r.json() == {"error": "Routing error"}
    # every slot given back: the bridged app gives its slot back on the relay's loop once
    # it has finished (after its body, background tasks included), a moment after close
    for _ in range(100):
        if coyote.relay.active == 0:
            break
        time.sleep(0.05)
    assert coyote.relay.active == 0


@pytest.mark.anyio
@override_settings(COYOTE={"CLIENTS": [JAR]})
async def test_a_query_string_that_djangos_async_client_gives_as_str_is_read() -> None:
    r = await AsyncClient().get("/jar/query", {"a": "1", "b": ["2", "3"]})
    assert r.status_code == 200
    body = b"".join([c async for c in r.streaming_content])  # type: ignore[attr-defined]
    assert json.loads(body) == {"a": ["1"], "b": ["2", "3"]}


MIB = 1024 * 1024
CHUNK = 64 * 1024  # what /jar/stream yields at a time


def _progress(url: str) -> dict[str, Any]:
    """What /jar/stream has produced so far, and the server process's RSS."""
    return httpx.get(url + "/jar/progress", timeout=5).json()  # type: ignore[no-any-return]


def _settled(url: str, rounds: int = 50) -> dict[str, Any]:
    """The producer's progress once it stops moving (at most ``rounds`` x 0.2 s)."""
    last = _progress(url)
    for _ in range(rounds):
        time.sleep(0.2)
        now = _progress(url)
        if now["chunks"] == last["chunks"]:
            return now
        last = now
    return last


def _closed(url: str, rounds: int = 50) -> dict[str, Any]:
    """The producer's progress once it was closed (at most ``rounds`` x 0.2 s)."""
    for _ in range(rounds):
        now = _progress(url)
        if now["closed"]:
            return now
        time.sleep(0.2)
    return now


def test_a_stream_to_a_paused_client_is_held_back_and_stopped_under_django_asgi() -> None:
    with running(["uvicorn", "tests.support.django_site.asgi:application"]) as url:
        port = int(url.rsplit(":", 1)[1])
        before = _progress(url)["rss"]
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(10)
        try:
            client.connect(("127.0.0.1", port))
            client.sendall(b"GET /jar/stream/96 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")  # then it reads no more
            paused = _settled(url)
            # 96 MiB asked for: the producer waits for the client, a few socket
            # buffers ahead of it, and the server's memory stays flat
            assert paused["chunks"] * CHUNK < 16 * MIB, paused
            assert paused["rss"] - before < 24 * MIB, (paused, before)
            assert not paused["closed"]
        finally:
            client.close()
        gone = _closed(url)
        assert gone["closed"], gone  # the producer was stopped when the client left
        assert gone["chunks"] < 96 * 16


@override_settings(
    COYOTE={"CLIENTS": [SALOON], "TRUSTED_PROXIES": ["10.0.0.0/8"], "MAX_HEADERS": 7}
)
def test_forwarding_settings_come_from_settings_coyote() -> None:
    leader = get_coyote()
    assert leader.forwarding.trusts("10.1.2.3") and not leader.forwarding.trusts("192.0.2.1")
    assert leader.forwarding.max_headers == 7
    many = {f"HTTP_X_H{i}": "v" for i in range(8)}
    assert DjangoClient().get("/", **many).status_code == 431  # type: ignore[arg-type]
