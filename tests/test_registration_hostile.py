"""The registration API under hostile input, against real servers over raw sockets.

Every exchange is bounded in time: a server that waits for a body that never comes, or
reads an endless one, makes the test fail (no answer) rather than hang.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Coyote
from coyote_mw.registry.api import MAX_DEPTH, MAX_PAYLOAD
from tests.support.ledger import parse_status
from tests.support.processes import running
from tests.support.registration import AUTH, TOKEN, api, leader, payload
from tests.support.servers import uvicorn_server, werkzeug_server

__all__ = ["api", "leader"]  # the fixtures, shared

ANSWER_WITHIN = 5.0  # seconds: a fixed leader answers these at once


@pytest.fixture(scope="module")
def gunicorn_gthread() -> Iterator[int]:
    argv = ["gunicorn", "-k", "gthread", "--threads", "4", "tests.support.hostile_app:api_wsgi"]
    with running(argv) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(params=["uvicorn-httptools", "uvicorn-h11", "werkzeug", "gunicorn-gthread"])
def port(request: pytest.FixtureRequest, leader: Coyote) -> Iterator[int]:
    if request.param == "werkzeug":
        with werkzeug_server(leader.wsgi()) as p:
            yield p
    elif request.param == "gunicorn-gthread":  # a process of its own, keep-alive
        yield request.getfixturevalue("gunicorn_gthread")
    else:
        with uvicorn_server(leader.asgi(), http=request.param.split("-")[1]) as p:
            yield p


def paths(port: int) -> list[str]:
    """The leader's table, as its API lists it."""
    r = httpx.get(f"http://127.0.0.1:{port}/_coyote/routes", headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return [route["path"] for route in r.json()]


def head(
    length: str | None = None, token: bool = True, chunked: bool = False, close: bool = False
) -> bytes:
    lines = ["POST /_coyote/registrations HTTP/1.1", "Host: 127.0.0.1"]
    if close:
        lines.append("Connection: close")
    if token:
        lines.append(f"Authorization: Bearer {TOKEN}")
    lines.append("Content-Type: application/json")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def first_answer(
    conn: socket.socket, answered: threading.Event | None = None, until_close: bool = True
) -> tuple[bytes, bool]:
    """Bytes until the server closes (True) or ``ANSWER_WITHIN`` has passed (False);
    ``answered`` is set once a response head has arrived.  ``until_close=False``: stop
    as soon as one whole response (with a Content-Length) is in."""
    out = b""
    deadline = time.monotonic() + ANSWER_WITHIN
    conn.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return out, True  # closed with our unread bytes still in its buffer
        if not chunk:
            return out, True
        out += chunk
        head, found, body = out.partition(b"\r\n\r\n")
        if found and answered is not None:
            answered.set()
        if found and not until_close:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is not None and len(body) >= int(length.group(1)):
                return out, False
    return out, False


def send_and_answer(port: int, data: bytes, until_close: bool = True) -> tuple[bytes, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as conn:
        conn.sendall(data)
        return first_answer(conn, until_close=until_close)


def server_of(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["port"])


def closes_unread(request: pytest.FixtureRequest) -> bool:
    """Whether the server closes a connection whose request body the app left unread:
    uvicorn on coyote's ``Connection: close``, Werkzeug's always; gunicorn's gthread
    worker keeps it alive and drains the body before the next request (a WSGI app may
    not send ``Connection``)."""
    return server_of(request) != "gunicorn-gthread"


def body_json(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2] or b"null")


def test_a_declared_length_over_the_cap_is_413_without_waiting_for_the_body(
    port: int, request: pytest.FixtureRequest
) -> None:
    before = paths(port)
    closes = closes_unread(request)
    answer, closed = send_and_answer(port, head(length=str(10**12)), until_close=closes)
    assert parse_status(answer) == 413, answer[:200]
    assert closed == closes  # the body is never read: the connection cannot be reused
    assert body_json(answer) == {"error": "Payload too large", "max_bytes": MAX_PAYLOAD}
    assert paths(port) == before


@pytest.mark.parametrize("length", ["1000", None])
def test_no_token_is_401_before_a_byte_of_the_body_is_read(
    port: int, length: str | None, request: pytest.FixtureRequest
) -> None:
    before = paths(port)
    # a declared body that never comes, or a chunked one never ended: no token, no read
    data = head(length=length, token=False, chunked=length is None)
    closes = closes_unread(request)
    answer, closed = send_and_answer(port, data, until_close=closes)
    assert parse_status(answer) == 401, answer[:200]
    assert closed == closes
    assert body_json(answer)["error"] == "Authorization required"
    assert paths(port) == before


def test_a_wrong_token_is_403_before_the_body_is_read(
    port: int, request: pytest.FixtureRequest
) -> None:
    data = head(length="1000", token=False).replace(
        b"Host:", b"Authorization: Bearer wrong-wrong-wrong\r\nHost:"
    )
    closes = closes_unread(request)
    answer, closed = send_and_answer(port, data, until_close=closes)
    assert parse_status(answer) == 403, answer[:200]
    assert closed == closes


def test_an_endless_chunked_body_is_cut_at_the_cap_with_413(
    port: int, request: pytest.FixtureRequest
) -> None:
    before = paths(port)
    chunk = b"%x\r\n%s\r\n" % (8192, b"[" * 8192)
    stop = threading.Event()
    sent = [0]

    def pour(conn: socket.socket) -> None:
        # at most 16 MiB or 20 s: far past the cap, bounded all the same
        deadline = time.monotonic() + 20
        while not stop.is_set() and sent[0] < 16 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                conn.sendall(chunk)
            except OSError:
                return  # the server closed: what a fixed leader does
            sent[0] += len(chunk)

    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as conn:
        conn.sendall(head(chunked=True))
        pourer = threading.Thread(target=pour, args=(conn,), daemon=True)
        pourer.start()
        try:
            # the client stops sending once answered (WSGI servers drain a little)
            uvicorn = server_of(request).startswith("uvicorn")
            answer, closed = first_answer(conn, answered=stop, until_close=uvicorn)
        finally:
            stop.set()
            pourer.join(30)
    assert parse_status(answer) == 413, (answer[:200], sent[0])
    if uvicorn:
        # the rest is not drained: Connection: close, and the server drops it (a WSGI
        # app may not send Connection; WSGI servers drain by their own rules)
        assert closed
    assert body_json(answer)["error"] == "Payload too large"
    assert paths(port) == before


def test_a_chunked_registration_within_the_cap_registers(port: int) -> None:
    body = json.dumps(payload()).encode()
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
    answer, _ = send_and_answer(port, head(chunked=True, close=True) + chunks + b"0\r\n\r\n")
    assert parse_status(answer) == 201, answer[:300]
    assert "/remote" in paths(port)


# -- the JSON itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 30_000, f"more than {MAX_DEPTH} deep"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, f"more than {MAX_DEPTH} deep"),
        (json.dumps(payload()).replace('"ttl": 5', '"ttl": 5, "ttl": 6').encode(), "duplicate"),
        (json.dumps(payload()).replace('"ttl": 5', '"ttl": NaN').encode(), "NaN"),
        (json.dumps(payload()).replace('"ttl": 5', '"ttl": -Infinity').encode(), "Infinity"),
        (json.dumps(payload()).replace('"ttl": 5', '"ttl": ' + "9" * 5000).encode(), "digits"),
        (json.dumps(payload()).replace('"ttl": 5', '"ttl": 1e999').encode(), "ttl"),
        (json.dumps(payload()).encode("utf-16"), "UTF-8"),
        (b'{"service": "\xff"}', "UTF-8"),
    ],
    ids=[
        "deep-arrays",
        "deep-objects",
        "duplicate-key",
        "nan",
        "infinity",
        "huge-int",
        "huge-float",
        "utf-16",
        "bad-utf-8",
    ],
)
def test_every_json_parse_failure_is_a_clean_400(
    api: Any, leader: Coyote, body: bytes, says: str
) -> None:
    before = leader.table.routes()
    r = api.post("/_coyote/registrations", content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "Invalid registration"
    assert says in json.dumps(r.json()["detail"])
    assert leader.table.routes() == before


def test_nesting_up_to_the_limit_inside_a_string_is_only_text(api: Any) -> None:
    # brackets inside strings do not count as nesting
    r = api.post(
        "/_coyote/registrations", json=payload(instance="x", service="[" * 100 + "x"), headers=AUTH
    )
    assert r.status_code == 400
    assert "deep" not in r.text and "service" in r.text


def test_a_malformed_content_length_is_400_under_a_server_that_passes_it_on(
    leader: Coyote,
) -> None:
    # Werkzeug's server hands the header to the app as it came; uvicorn refuses it itself
    before = leader.table.routes()
    with werkzeug_server(leader.wsgi()) as port:
        answer, _ = send_and_answer(port, head(length="12abc", close=True))
    assert parse_status(answer) == 400, answer[:200]
    assert body_json(answer) == {"error": "Invalid Content-Length", "value": "12abc"}
    assert leader.table.routes() == before


@pytest.fixture(scope="module")
def leader_process() -> Iterator[str]:
    with running(["uvicorn", "tests.support.hostile_app:api_app"]) as url:
        yield url


@pytest.mark.parametrize(
    "body",
    [b'"' + b'\\"' * 32_000, b'["' + b"\\" * 64_000, b'"' * 64_000],
    ids=["escaped-quotes", "backslashes", "quotes"],
)
def test_a_body_of_quotes_and_backslashes_is_refused_at_once(
    leader_process: str, body: bytes
) -> None:
    # a real server process: a quadratic scan of the body holds its GIL for seconds, so
    # the test process must not be the one parsing.  Generous: a linear scan of 64 KiB
    # takes a millisecond; the quadratic one took over ten seconds.
    r = httpx.post(leader_process + "/_coyote/registrations", content=body, headers=AUTH, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid registration"
