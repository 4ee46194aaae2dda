"""The ``coyote`` command on bad input: one line on stderr, a non-zero exit, no traceback.

Every command runs as a real process with a bounded timeout; the leaders it talks to are
real sockets on 127.0.0.1 (a ``LedgerUpstream`` answering what a test needs, or nothing).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.ledger import LedgerUpstream, Received, _answer
from tests.support.processes import BIN, ROOT, free_port, stop

TOKEN = "cli-test-token-0123456789"
ENV = {**os.environ, "COYOTE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
SALOON = "sample_apps.deadwood.saloon:Saloon"


def coyote(
    *argv: str, env: dict[str, str] = ENV, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "coyote"), "--log-level", "warning", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one line on stderr, and no traceback: that line."""
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "not_pem.txt").write_text("not a certificate\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('the module is broken')\n")
    (tmp_path / "broken_syntax.py").write_text("def (:\n")
    (tmp_path / "clients.py").write_text(
        "from coyote_mw import Client\n"
        "class Moody(Client):\n"
        "    def __init__(self):\n"
        "        raise ValueError('not today')\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["routes", "--leader", "127.0.0.1:8000"], "is not an http:// or https:// URL"),
        (["routes", "--leader", "http://[::1"], "is not a URL"),
        (["routes", "--leader", "http://127.0.0.1:99999"], "is not a URL"),
        (["serve-client", SALOON, "--leader", "127.0.0.1:8000"], "http:// or https://"),
        (["serve-client", SALOON, "--leader", "ftp://127.0.0.1:1"], "http:// or https://"),
        (["serve-client", SALOON, "--leader", "http://127.0.0.1:1", "--advertise", "x"], "URL"),
        (["serve-client", "no_such_module:Saloon", "--leader", "http://127.0.0.1:1"], "import"),
        (["serve-client", "sample_apps.deadwood.saloon", "--leader", "http://127.0.0.1:1"], "Name"),
        (["serve-client", "raising:Client", "--leader", "http://127.0.0.1:1"], "is broken"),
        (["serve-client", "broken_syntax:Client", "--leader", "http://127.0.0.1:1"], "Syntax"),
        (["serve-client", "clients:Moody", "--leader", "http://127.0.0.1:1"], "not today"),
        (
            ["serve-client", SALOON, "--leader", "https://127.0.0.1:1", "--ca-file", "/no/ca.pem"],
            "is not a file",
        ),
        (
            ["serve-client", SALOON, "--leader", "https://127.0.0.1:1", "--ca-file", "not_pem.txt"],
            "is not a CA bundle",
        ),
        (["leader", "--ca-file", "not_pem.txt"], "is not a CA bundle"),
        (["routes", "--leader", "https://127.0.0.1:1", "--ca-file", "not_pem.txt"], "CA bundle"),
        (
            [
                "serve-client",
                SALOON,
                "--leader",
                "http://127.0.0.1:1",
                "--ssl-certfile",
                "not_pem.txt",
                "--ssl-keyfile",
                "not_pem.txt",
            ],
            "--ssl-certfile",
        ),
        (
            [
                "serve-client",
                SALOON,
                "--leader",
                "http://127.0.0.1:1",
                "--ssl-certfile",
                "/no/cert.pem",
                "--ssl-keyfile",
                "/no/key.pem",
            ],
            "not a readable file",
        ),
        (["leader", "--store", "not-a-url"], "Redis URL"),
        (["leader", "--prefix", "no-slash"], "must be a path"),
        (["leader", "--token", "short"], "at least 16"),
        (["leader", "--max-websockets", "-1"], "max_websockets must be 0 or more"),
    ],
)
def test_bad_command_line_input_is_one_line_and_exit_2(
    files: Path, argv: list[str], says: str
) -> None:
    argv = [a.replace("not_pem.txt", str(files / "not_pem.txt")) for a in argv]
    if argv[0] == "serve-client":
        argv += ["--app-dir", str(files)]
    out = coyote(*argv)
    line = one_line_error(out)
    assert out.returncode == 2
    assert says in line, line


@pytest.mark.parametrize("command", ["routes", "serve-client"])
def test_a_missing_token_is_one_line_and_exit_2(command: str) -> None:
    env = {k: v for k, v in ENV.items() if k != "COYOTE_TOKEN"}
    target = [SALOON] if command == "serve-client" else []
    out = coyote(command, *target, "--leader", "http://127.0.0.1:1", env=env)
    assert out.returncode == 2 and "a token is required" in one_line_error(out)


def test_routes_against_a_leader_that_is_down_is_one_line_and_exit_1() -> None:
    url = dead_url()
    out = coyote("routes", "--leader", url)
    line = one_line_error(out)
    assert out.returncode == 1 and url in line and "ConnectError" in line


def test_routes_against_a_leader_that_never_answers_is_one_line_after_its_timeout() -> None:
    with LedgerUpstream() as up:
        out = coyote("routes", "--leader", up.url, "--prefix", "/hang", "--timeout", "0.5")
    line = one_line_error(out)
    assert out.returncode == 1 and "Timeout" in line


@pytest.mark.parametrize(("prefix", "says"), [("/status/403", "403"), ("/echo", "not with JSON")])
def test_routes_answered_with_an_error_or_not_json_is_one_line_and_exit_1(
    prefix: str, says: str
) -> None:
    with LedgerUpstream() as up:
        out = coyote("routes", "--leader", up.url, "--prefix", prefix)
    line = one_line_error(out)
    assert out.returncode == 1 and says in line


@pytest.mark.parametrize("command", ["leader", "serve-client"])
def test_a_busy_port_is_one_line_and_exit_1(command: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        if command == "leader":
            out = coyote("leader", "--port", port)
        else:
            out = coyote("serve-client", SALOON, "--leader", dead_url(), "--port", port)
    line = one_line_error(out)
    assert out.returncode == 1 and "in use" in line and port in line


# -- serve-client: permanent refusals end it, transient failures are retried ----------------


def registrations_answer(status: int) -> dict[str, object]:
    """LedgerUpstream behaviours: every call under /_coyote answered with ``status``."""

    def answer(conn: socket.socket, request: Received) -> bool:
        _answer(conn, status, b'{"error":"as the test says"}')
        return True

    return {"_coyote": answer}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_serve_client_refused_for_good_says_so_in_one_line_and_exits_1(status: int) -> None:
    with LedgerUpstream(behaviours=registrations_answer(status)) as leader:  # type: ignore[arg-type]
        out = coyote(
            "serve-client", SALOON, "--leader", leader.url, "--port", str(free_port()), timeout=60
        )
        attempts = len(leader.requests)
    line = one_line_error(out)
    assert out.returncode == 1
    assert leader.url in line and str(status) in line and "not retrying" in line
    assert attempts == 1  # asked once, not again and again


@pytest.mark.parametrize("status", [500, 502, 503])
def test_serve_client_retries_a_leader_that_answers_5xx_with_backoff(status: int) -> None:
    with LedgerUpstream(behaviours=registrations_answer(status)) as leader:  # type: ignore[arg-type]
        proc = subprocess.Popen(
            [
                *(str(BIN / "coyote"), "--log-level", "warning", "serve-client", SALOON),
                *("--leader", leader.url, "--port", str(free_port())),
            ],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while len(leader.requests) < 3 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.05)
            assert len(leader.requests) >= 3, "it stopped retrying"
            assert proc.poll() is None
        finally:
            stop(proc)
        stderr = proc.stderr.read()  # type: ignore[union-attr]
    # a clean stop (uvicorn re-raises the SIGTERM it handled once it has shut down)
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr
    # the first failure is said once, not once per attempt
    assert stderr.count("retrying") == 1, stderr
