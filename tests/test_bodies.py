"""Request bodies under every framing, on real server processes.

The same requests go to one coyote leader (``tests/support/body_apps.py``) under
gunicorn (sync and gthread), granian's WSGI and Werkzeug's server, and under uvicorn and
granian's ASGI: a body with a Content-Length, a chunked one, one sent with no length at
all; to an in-process handler, to whole apps across the ASGI/WSGI bridge, and relayed to
an instance (``LedgerUpstream``) that records the exact bytes it got.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.ledger import LedgerUpstream, Received, parse_status, raw_exchange
from tests.support.processes import BIN, running

GRANIAN = str(BIN / "granian")
APPS = "tests.support.body_apps"
SERVERS = {
    "gunicorn-sync": ["gunicorn", "-w", "1", f"{APPS}:wsgi"],
    "gunicorn-gthread": [
        "gunicorn",
        "-w",
        "1",
        "-k",
        "gthread",
        "--threads",
        "4",
        f"{APPS}:wsgi",
    ],
    "granian-wsgi": [GRANIAN, "--interface", "wsgi", "--host", "127.0.0.1", f"{APPS}:wsgi"],
    "werkzeug": [sys.executable, "-m", APPS, "werkzeug"],
    "uvicorn": ["uvicorn", f"{APPS}:asgi"],
    "granian-asgi": [GRANIAN, "--interface", "asgi", "--host", "127.0.0.1", f"{APPS}:asgi"],
}
WSGIREF = [sys.executable, "-m", APPS, "wsgiref"]

BIG = 64 * 1024 * 1024  # a body no relay should hold whole
CHUNK = 64 * 1024


def _digest(conn: socket.socket, request: Received) -> bool:
    body = json.dumps({"size": request.body_size, "sha256": request.body_sha256}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
    return True


@pytest.fixture(scope="module")
def upstream() -> Iterator[LedgerUpstream]:
    with LedgerUpstream(behaviours={"digest": _digest}, record_limit=1024 * 1024) as up:
        yield up


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request: pytest.FixtureRequest, upstream: LedgerUpstream) -> Iterator[str]:
    if str(request.param).startswith("granian"):
        pytest.importorskip("granian", reason="granian: pip install -e '.[servers]'")
    with running(SERVERS[request.param], env={"COYOTE_TEST_UPSTREAM": upstream.url}) as url:
        yield url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


PARTS = [b"first part\n", b"\x00\xff" * 3000, b"", b"last"]
BODY = b"".join(PARTS)


def _framed(framing: str) -> dict[str, object]:
    """httpx arguments sending BODY with a Content-Length, or chunked."""
    return {"content": BODY} if framing == "length" else {"content": iter(PARTS)}


def _recorded(upstream: LedgerUpstream, tag: str) -> Received:
    for received in upstream.requests:
        if tag.encode() in received.target:
            return received
    raise AssertionError(f"the instance never got the request {tag}")


# -- 1. the relay to a remote instance -------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_relayed_body_reaches_the_instance_byte_for_byte(
    server: str, upstream: LedgerUpstream, framing: str
) -> None:
    tag = uuid.uuid4().hex
    response = httpx.post(f"{server}/echo?t={tag}", timeout=20, **_framed(framing))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.content == BODY
    got = _recorded(upstream, tag)
    assert got.body == BODY
    if framing == "chunked":  # a body of unknown length goes on chunked, not as length 0
        assert got.chunked
        assert got.header("content-length") is None
    else:
        assert got.header("content-length") == str(len(BODY)).encode()


def _streams_big_body_in_bounded_memory(server: str, path: str) -> None:
    def peak() -> int:
        return int(httpx.get(f"{server}/peak", timeout=10).json()["peak_kib"])

    # warm up: the first request opens pools, starts apps
    assert httpx.post(server + path, content=iter([b"warm"]), timeout=20).status_code == 200
    before = peak()
    digest = hashlib.sha256()
    block = bytes(range(256)) * (CHUNK // 256)

    def body() -> Iterator[bytes]:
        for _ in range(BIG // CHUNK):
            digest.update(block)
            yield block

    response = httpx.post(server + path, content=body(), timeout=120)
    assert response.status_code == 200, response.text
    assert response.json() == {"size": BIG, "sha256": digest.hexdigest()}
    # streamed, not held: the server's peak memory grew by far less than the body
    assert peak() - before < BIG // 1024 // 4


def test_big_chunked_body_is_relayed_whole_in_bounded_memory(server: str) -> None:
    _streams_big_body_in_bounded_memory(server, "/digest")


# -- 2. in-process handlers, bodies without a length ------------------------------------


@pytest.fixture(scope="module")
def wsgiref_server(upstream: LedgerUpstream) -> Iterator[str]:
    with running(WSGIREF, env={"COYOTE_TEST_UPSTREAM": upstream.url}) as url:
        yield url


def _post_without_length(url: str, path: str) -> bytes:
    return raw_exchange(
        _port(url),
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
        timeout=10,
    )


@pytest.mark.parametrize("path", ["/inproc/echo", "/inproc/aecho", "/echo"])
def test_post_without_length_has_an_empty_body_at_once(server: str, path: str) -> None:
    answer = _post_without_length(server, path)
    assert parse_status(answer) == 200, answer[:300]
    assert answer.split(b"\r\n\r\n", 1)[1] == b""


@pytest.mark.parametrize("path", ["/inproc/echo", "/inproc/aecho", "/echo"])
def test_post_without_length_under_wsgiref_has_an_empty_body_at_once(
    wsgiref_server: str, path: str
) -> None:
    answer = _post_without_length(wsgiref_server, path)
    assert parse_status(answer) == 200, answer[:300]
    assert answer.split(b"\r\n\r\n", 1)[1] == b""


def test_relay_under_wsgiref_adds_no_content_type_of_the_servers_own(
    wsgiref_server: str, upstream: LedgerUpstream
) -> None:
    # wsgiref sets CONTENT_TYPE "text/plain" on every request that has none: a request
    # without a body goes on without it; a type the client sent goes on unchanged
    bare, typed = uuid.uuid4().hex, uuid.uuid4().hex
    for tag, head in ((bare, ""), (typed, "Content-Type: application/json\r\n")):
        answer = raw_exchange(
            _port(wsgiref_server),
            f"POST /echo?t={tag} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            "Connection: close\r\n\r\n".encode(),
            timeout=10,
        )
        assert parse_status(answer) == 200, answer[:300]
    assert _recorded(upstream, bare).header("content-type") is None
    assert _recorded(upstream, typed).header("content-type") == b"application/json"


@pytest.mark.parametrize("path", ["/inproc/echo", "/echo", "/starlette/echo", "/flask/echo"])
def test_chunked_body_a_server_cannot_delimit_is_411(wsgiref_server: str, path: str) -> None:
    answer = raw_exchange(
        _port(wsgiref_server),
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n4\r\nbody\r\n0\r\n\r\n".encode(),
        timeout=10,
    )
    assert parse_status(answer) == 411, answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "Length required"


# granian's WSGI gives a cut-short body as if whole; uvicorn answers no half-closed client
@pytest.mark.parametrize("server", ["gunicorn-sync", "werkzeug"], indirect=True)
@pytest.mark.parametrize("framing", ["length", "chunked", "malformed-chunk"])
@pytest.mark.parametrize("path", ["/echo", "/inproc/echo", "/inproc/aecho", "/starlette/echo"])
def test_body_cut_short_by_the_client_is_400(server: str, path: str, framing: str) -> None:
    framed = "Content-Length: 100" if framing == "length" else "Transfer-Encoding: chunked"
    sent = {"length": "hello", "chunked": "5\r\nhello\r\n"}.get(framing, "5\r\nhello\r\nzz\r\n")
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framed}\r\n\r\n{sent}".encode())
        conn.shutdown(socket.SHUT_WR)  # the client is done sending, mid-body
        answer = b""
        while len(answer) < 65536 and (data := conn.recv(65536)):
            answer += data
    assert parse_status(answer) == 400, answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert error["detail"] == "the request body ended before its framing did"


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("path", ["/inproc/echo", "/inproc/aecho"])
def test_in_process_handler_reads_the_whole_body(server: str, path: str, framing: str) -> None:
    response = httpx.post(server + path, timeout=20, **_framed(framing))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.content == BODY


# -- 3. whole apps across the ASGI/WSGI bridge -------------------------------------------


def test_big_chunked_body_streams_into_a_whole_asgi_app_in_bounded_memory(server: str) -> None:
    # over max_body (10 MiB) too: nothing holds the body, so nothing refuses it
    _streams_big_body_in_bounded_memory(server, "/starlette/count")


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("path", ["/starlette/echo", "/flask/echo"])
def test_whole_app_reads_the_whole_body(server: str, path: str, framing: str) -> None:
    response = httpx.post(server + path, timeout=20, **_framed(framing))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.content == BODY


# -- under Django's own handlers ------------------------------------------------------------


DJANGO_SERVERS = {
    "django-gunicorn": ["gunicorn", "-w", "1", "django.core.wsgi:get_wsgi_application()"],
    "django-uvicorn": ["uvicorn", "--factory", "django.core.asgi:get_asgi_application"],
}
# coyote's routes first, or the Django view that reads the body then answers 404 first
DJANGO_SETTINGS = {
    "coyote-first": "tests.support.django_bodies",
    "host-first": "tests.support.django_bodies_host",
}


@pytest.fixture(
    scope="module",
    params=[(server, order) for server in DJANGO_SERVERS for order in DJANGO_SETTINGS],
    ids=lambda p: "-".join(p),
)
def django_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server, order = request.param
    with running(
        DJANGO_SERVERS[server], env={"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS[order]}
    ) as url:
        yield url


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("path", ["/inproc/echo", "/inproc/aecho"])
def test_handler_under_django_reads_the_whole_body(
    django_server: str, path: str, framing: str
) -> None:
    response = httpx.post(django_server + path, timeout=20, **_framed(framing))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.content == BODY


@pytest.mark.parametrize("path", ["/inproc/echo", "/inproc/aecho"])
def test_post_without_length_under_django_has_an_empty_body_at_once(
    django_server: str, path: str
) -> None:
    answer = _post_without_length(django_server, path)
    assert parse_status(answer) == 200, answer[:300]
    assert answer.split(b"\r\n\r\n", 1)[1] in (b"", b"0\r\n\r\n")
