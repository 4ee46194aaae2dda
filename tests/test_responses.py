"""What a handler returns, on the wire: Starlette's and Werkzeug's responses (streamed
ones and files included), bodiless statuses, and a body nobody described; under ASGI and
WSGI alike."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse
from werkzeug.utils import send_file
from werkzeug.wrappers import Response as WerkzeugResponse

from coyote_mw import Client, Coyote, Request, Response, route

FILE_BYTES = os.urandom(200_000)  # several read chunks
ran: list[str] = []


class Foreign(Client):
    def __init__(self, path: Path) -> None:
        self.path = path

    @route("GET", "/starlette/stream")
    def starlette_stream(self, request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                await asyncio.sleep(0)
                yield part

        return StreamingResponse(parts(), media_type="text/csv")

    @route("GET", "/starlette/stream-sync")
    def starlette_stream_sync(self, request: Request) -> StreamingResponse:
        return StreamingResponse(iter([b"sync ", b"parts"]), media_type="text/plain")

    @route("GET", "/starlette/file")
    async def starlette_file(self, request: Request) -> FileResponse:
        return FileResponse(self.path, filename="data.bin")

    @route("GET", "/starlette/background")
    def starlette_background(self, request: Request) -> StarletteResponse:
        return StarletteResponse(b"done", background=BackgroundTask(ran.append, "after"))

    @route("DELETE", "/starlette/background")
    def starlette_background_204(self, request: Request) -> StarletteResponse:
        return StarletteResponse(status_code=204, background=BackgroundTask(ran.append, "204"))

    @route("GET", "/werkzeug/stream")
    def werkzeug_stream(self, request: Request) -> WerkzeugResponse:
        def parts() -> Iterator[str]:
            yield "w-one,"
            yield "w-two"

        return WerkzeugResponse(parts(), mimetype="text/plain")

    @route("GET", "/werkzeug/file")
    def werkzeug_file(self, request: Request) -> WerkzeugResponse:
        environ = {"REQUEST_METHOD": "GET", "SERVER_NAME": "testserver", "SERVER_PORT": "80"}
        return send_file(self.path, environ, mimetype="application/x-data")

    @route("GET", "/empty/{status:int}")
    def empty(self, request: Request) -> Any:
        status = request.params["status"]
        if request.query.get("as") == "response":
            return Response(b"ignored", status, {"etag": '"v1"'}, media_type="text/plain")
        if request.query.get("as") == "starlette":
            return StarletteResponse(b"", status, headers={"etag": '"v1"'})
        return status, "ignored text", {"etag": '"v1"'}

    @route("GET", "/bare")
    def bare(self, request: Request) -> Response:
        return Response(b"\x00\x01 raw")


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[Coyote]:
    path = tmp_path / "data.bin"
    path.write_bytes(FILE_BYTES)
    coyote = Coyote(timeout=5)
    coyote.register(Foreign(path))
    yield coyote
    coyote.close()


def test_starlette_streaming_responses_are_streamed(foreign: Coyote, serve: Any) -> None:
    client = serve(foreign)
    r = client.get("/starlette/stream")
    assert (r.status_code, r.text) == (200, "one,two,three")
    assert r.headers["content-type"].startswith("text/csv")
    r = client.get("/starlette/stream-sync")
    assert (r.status_code, r.text) == (200, "sync parts")


def test_a_starlette_file_response_sends_the_whole_file(foreign: Coyote, serve: Any) -> None:
    r = serve(foreign).get("/starlette/file", headers={"range": "bytes=0-9"})
    assert r.status_code == 200 and r.content == FILE_BYTES
    assert r.headers["content-length"] == str(len(FILE_BYTES))
    assert r.headers["content-disposition"] == 'attachment; filename="data.bin"'
    assert "etag" in r.headers and "last-modified" in r.headers
    assert "accept-ranges" not in r.headers  # coyote sends it whole, so it offers no ranges


def test_a_starlette_background_task_runs_after_the_body(foreign: Coyote, serve: Any) -> None:
    ran.clear()
    client = serve(foreign)
    r = client.get("/starlette/background")
    assert (r.status_code, r.content) == (200, b"done")
    assert r.headers["content-length"] == "4"
    r = client.request("DELETE", "/starlette/background")
    assert (r.status_code, r.content) == (204, b"")
    assert ran == ["after", "204"]


def test_werkzeug_streamed_and_file_responses_are_sent(foreign: Coyote, serve: Any) -> None:
    client = serve(foreign)
    r = client.get("/werkzeug/stream")
    assert (r.status_code, r.text) == (200, "w-one,w-two")
    r = client.get("/werkzeug/file")
    assert r.status_code == 200 and r.content == FILE_BYTES
    assert r.headers["content-type"] == "application/x-data"
    assert r.headers["content-length"] == str(len(FILE_BYTES))


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("shape", ["tuple", "response", "starlette"])
def test_204_and_304_carry_no_body_and_no_content_type(
    foreign: Coyote, serve: Any, status: int, shape: str
) -> None:
    r = serve(foreign).get(f"/empty/{status}?as={shape}")
    assert (r.status_code, r.content) == (status, b"")
    assert "content-type" not in r.headers
    assert "content-length" not in r.headers
    assert r.headers["etag"] == '"v1"'


def test_a_bare_response_of_bytes_is_application_octet_stream(foreign: Coyote, serve: Any) -> None:
    r = serve(foreign).get("/bare")
    assert r.content == b"\x00\x01 raw"
    assert r.headers["content-type"] == "application/octet-stream"
