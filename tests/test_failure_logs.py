"""What the log says when a request fails: a line a person can act on, once.

A dead or misbehaving instance is one line naming the instance, route, service and
cause (the traceback only at DEBUG); a handler in this process that raises is a bug in
user code, logged at ERROR with its traceback - once per request, whichever way it ran.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from coyote_mw import Client, Coyote, Request, route
from coyote_mw.errors import RoutingError
from tests.support.ledger import LedgerUpstream
from tests.support.processes import free_port


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record at WARNING or above from coyote_mw."""
    return [
        r for r in caplog.records if r.name.startswith("coyote_mw") and r.levelno >= logging.WARNING
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_dead_instance_is_one_error_line_naming_it_without_a_traceback(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    coyote.register_remote(dead, routes=[(method, "/orders/{id:int}")], service="orders")
    with caplog.at_level(logging.INFO, logger="coyote_mw"):
        r = serve(coyote).request(method, "/orders/7")
    assert r.status_code == 502 and r.json() == {"error": "Routing error"}
    (line,) = failures(caplog)
    assert line.levelno == logging.ERROR
    assert line.exc_info is None and line.exc_text is None
    message = line.getMessage()
    assert "\n" not in message
    for part in (dead, f"{method} /orders/7", "/orders/{id:int}", "orders", "ConnectError"):
        assert part in message, (part, message)


def test_a_dead_instance_logs_its_traceback_at_debug(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    coyote.register_remote(dead, routes=[("GET", "/x")], service="svc")
    with caplog.at_level(logging.DEBUG, logger="coyote_mw"):
        assert serve(coyote).get("/x").status_code == 502
    (line,) = failures(caplog)
    assert line.exc_info is not None and dead in line.getMessage()


def test_an_instance_that_resets_the_connection_is_one_line_naming_it(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with LedgerUpstream() as up:
        coyote.register_remote(up.url, routes=[("POST", "/reset")], service="flaky")
        with caplog.at_level(logging.INFO, logger="coyote_mw"):
            assert serve(coyote).post("/reset", content=b"x").status_code == 502
    (line,) = failures(caplog)
    assert line.exc_info is None and up.url in line.getMessage()
    assert "flaky" in line.getMessage()


def test_a_request_retried_on_another_instance_logs_one_warning_for_the_dead_one(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with LedgerUpstream() as up:
        coyote.register_remote(dead, routes=[("GET", "/x")], service="svc", instance="dead")
        coyote.register_remote(up.url, routes=[("GET", "/x")], service="svc", instance="live")
        client = serve(coyote)
        with caplog.at_level(logging.INFO, logger="coyote_mw"):
            # round robin: one of two requests at least goes to the dead instance first
            assert [client.get("/x").status_code for _ in range(2)] == [200, 200]
    lines = failures(caplog)
    assert 1 <= len(lines) <= 2  # one line for each request that met the dead instance
    for line in lines:
        assert line.levelno == logging.WARNING and line.exc_info is None
        assert dead in line.getMessage() and f"retrying on {up.url}" in line.getMessage()


class Buggy(Client):
    service = "buggy"

    @route("GET", "/boom")
    def boom(self, request: Request) -> str:
        raise ValueError("a bug in the handler")

    @route("GET", "/aboom")
    async def aboom(self, request: Request) -> str:
        raise ValueError("a bug in the handler")

    @route("POST", "/later", cast=True)
    def later(self, request: Request) -> None:
        raise ValueError("a bug in the handler")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in failures(caplog) if r.exc_info is not None]


@pytest.mark.parametrize("path", ["/boom", "/aboom"])
def test_a_handler_that_raises_logs_its_traceback_once_at_error(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    coyote.register(Buggy())
    with caplog.at_level(logging.INFO, logger="coyote_mw"):
        assert serve(coyote).get(path).status_code == 502
    (line,) = failures(caplog)
    assert line.levelno == logging.ERROR and line.exc_info is not None
    assert "a bug in the handler" in str(line.exc_info[1])


def test_coyote_call_of_a_handler_that_raises_logs_one_traceback(
    coyote: Coyote, caplog: pytest.LogCaptureFixture
) -> None:
    coyote.register(Buggy())
    with caplog.at_level(logging.INFO, logger="coyote_mw"), pytest.raises(RoutingError):
        coyote.call("GET", "/boom")
    assert len(failures(caplog)) == 1 and len(tracebacks(caplog)) == 1


def wait_for_failures(caplog: pytest.LogCaptureFixture, timeout: float = 10) -> None:
    """Until a failure is logged; then as long again as that took (at least 0.3 s), so a
    second record of the same failure, which follows the first at once, is seen too."""
    start = time.monotonic()
    while not failures(caplog) and time.monotonic() - start < timeout:
        time.sleep(0.02)
    time.sleep(max(0.3, time.monotonic() - start))


@pytest.mark.parametrize("how", ["coyote.cast", "cast route"])
def test_a_cast_whose_handler_raises_logs_one_traceback(
    coyote: Coyote, serve: Any, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    coyote.register(Buggy())
    with caplog.at_level(logging.INFO, logger="coyote_mw"):
        if how == "coyote.cast":
            coyote.cast("GET", "/boom")
        else:
            assert serve(coyote).post("/later").status_code == 202
        wait_for_failures(caplog)
    assert len(failures(caplog)) == 1 and len(tracebacks(caplog)) == 1
