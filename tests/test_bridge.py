"""Whole ASGI apps in process, one test body under an ASGI and a WSGI host: failures
are coyote's JSON answers (502, 504) and bodies stream both ways."""

from __future__ import annotations

import asyncio
from typing import Any

from coyote_mw import Coyote


async def failing_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        raise RuntimeError("the sub-app broke")


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await asyncio.sleep(30)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers each chunk of the body as it arrives, with its size first."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"echo")]})
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def test_asgi_app_that_raises_is_a_502(serve: Any) -> None:
    coyote = Coyote(timeout=5)
    coyote.register(failing_app, routes=[("GET", "/fail")], service="failing")
    response = serve(coyote).get("/fail")
    assert response.status_code == 502
    assert response.json() == {"error": "Routing error"}
    coyote.close()


def test_asgi_app_that_never_answers_is_a_504(serve: Any) -> None:
    coyote = Coyote(timeout=0.5)
    coyote.register(slow_app, routes=[("GET", "/slow")], service="slow")
    response = serve(coyote).get("/slow")
    assert response.status_code == 504
    assert response.json()["error"] == "Handler timeout"
    coyote.close()


def test_asgi_app_streams_the_body_back(serve: Any) -> None:
    coyote = Coyote(timeout=5)
    coyote.register(echo_app, routes=[("POST", "/echo")], service="echo")
    body = bytes(range(256)) * 1024  # several chunks each way
    response = serve(coyote).post("/echo", content=body)
    assert response.status_code == 200
    assert response.headers["x-app"] == "echo"
    assert response.content == body
    coyote.close()


async def no_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Ignores every scope but HTTP, lifespan included: returns at once."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def test_asgi_app_that_ignores_lifespan_is_served(serve: Any) -> None:
    coyote = Coyote(timeout=5)
    coyote.register(no_lifespan_app, routes=[("GET", "/plain")], service="plain")
    response = serve(coyote).get("/plain")
    assert response.status_code == 200
    assert response.text == "served"
    coyote.close()
