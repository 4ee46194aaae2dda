"""The leader's command line with real processes: --version, python -m coyote_mw, options
after the subcommand, a TOML config that takes effect, TLS serving, bad config files.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.coyote_processes import AUTH, ENV, Proc
from tests.support.ledger import LedgerUpstream
from tests.support.processes import BIN, ROOT, free_port, until
from tests.support.tls import tls_files


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def started() -> Iterator[Callable[..., Proc]]:
    """Start ``argv`` (a leader on ``port``) and wait, bounded, until ``ready_url`` answers."""
    procs: list[Proc] = []

    def start(argv: list[str], port: int, ready_url: str, verify: object = True) -> Proc:
        p = Proc(argv, port).start()
        procs.append(p)

        def up() -> bool:
            if p.proc is not None and p.proc.poll() is not None:
                raise AssertionError(f"exited {p.proc.returncode}: {p.stderr()}")
            try:
                return httpx.get(ready_url, timeout=2, verify=verify).status_code == 200  # type: ignore[arg-type]
            except httpx.TransportError:
                return False

        until(up, 20, "leader up")
        return p

    yield start
    for p in procs:
        p.kill()
        p.log.close()


def test_version_from_the_command_and_from_python_m() -> None:
    from importlib.metadata import version

    expected = f"coyote-mw {version('coyote-mw')}"
    for argv in (
        [str(BIN / "coyote"), "--version"],
        [sys.executable, "-m", "coyote_mw", "--version"],
    ):
        out = run(*argv)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


@pytest.mark.parametrize("http", ["uvicorn", "coyote"])
def test_python_m_coyote_mw_runs_a_leader_with_options_after_the_subcommand(
    started: Callable[..., Proc], http: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = started(
        [
            sys.executable,
            "-m",
            "coyote_mw",
            "leader",
            "--log-level",
            "warning",
            "--port",
            str(port),
            "--http",
            http,
        ],
        port,
        url + "/_coyote/health",
    )
    assert httpx.get(url + "/_coyote/ready", timeout=5).json()["status"] == "ready"
    p.kill(signal.SIGINT)  # a clean stop: every line it would write is written
    assert "INFO" not in p.stderr(), p.stderr()  # the level after the subcommand took effect


def test_graceful_timeout_0_on_coyotes_server(started: Callable[..., Proc]) -> None:
    # --graceful-timeout takes 0 (requests under way are closed on SIGTERM), as uvicorn does
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "coyote"), "leader", "--port", str(port), "--http", "coyote"]
    p = started([*argv, "--graceful-timeout", "0"], port, url + "/_coyote/health")
    assert p.proc is not None
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(20) == 0, p.stderr()
    assert "Traceback" not in p.stderr() and "ERROR" not in p.stderr(), p.stderr()


def test_help_shows_the_defaults() -> None:
    out = run(str(BIN / "coyote"), "leader", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for shown in (
        "relay slots per topology (default: 50)",
        "relay queue per topology (default: 100)",
        "(504) (default: 30.0)",
        "(default: 10485760)",
        "--access-log, --no-access-log one line per request on the coyote_mw.access logger "
        "(default: on)",
        "--port PORT port to listen on (default: 8000)",
    ):
        assert shown in text, shown


def _hang_upstream_registered(leader_url: str, up: LedgerUpstream, verify: object = True) -> None:
    r = httpx.post(
        f"{leader_url}/_coyote/registrations",
        headers=AUTH,
        json={
            "service": "ledger",
            "instance": "l1",
            "url": up.url,
            "routes": [{"method": "GET", "path": "/{rest:path}"}],
            "ttl": 60,
        },
        timeout=5,
        verify=verify,  # type: ignore[arg-type]
    )
    assert r.status_code == 201, r.text


def test_a_toml_config_sets_the_timeout_and_a_flag_wins_over_it(
    started: Callable[..., Proc], tmp_path: Path
) -> None:
    config = tmp_path / "leader.toml"
    config.write_text("timeout = 0.5\naccess-log = false\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = started(
        [str(BIN / "coyote"), "leader", "--config", str(config), "--port", str(port)],
        port,
        url + "/_coyote/health",
    )
    with LedgerUpstream() as up:
        _hang_upstream_registered(url, up)
        begun = time.monotonic()
        r = httpx.get(url + "/hang", timeout=10)
        assert r.status_code == 504, r.text  # the file's 0.5 s, not the default 30 s
        assert time.monotonic() - begun < 9
    p.kill(signal.SIGINT)
    log = p.stderr()
    assert "coyote leader on" in log  # INFO lines are written...
    # ...but access-log = false: neither coyote's line nor uvicorn's for the request
    assert "coyote_mw.access" not in log and '"GET /hang' not in log, log

    # a flag given on the command line wins over the file
    from coyote_mw.cli.main import parse

    assert parse(["leader", "--config", str(config), "--timeout", "30"]).timeout == 30.0
    assert parse(["leader", "--config", str(config)]).timeout == 0.5
    config.write_text('log_level = "debug"\ntrusted_proxy = "10.0.0.1"\n')
    both = parse(["--log-level", "warning", "leader", "--config", str(config)])
    assert both.log_level == "warning"  # before the subcommand counts as given too
    assert parse(["leader", "--config", str(config)]).log_level == "debug"
    assert parse(["leader", "--config", str(config)]).trusted_proxy == ["10.0.0.1"]
    given = parse(["leader", "--config", str(config), "--trusted-proxy", "10.0.0.2"])
    assert given.trusted_proxy == ["10.0.0.2"]  # replaced, not added to
    assert parse(["leader", "--config", str(config), "--access-log"]).access_log is True


@pytest.mark.parametrize("http", ["uvicorn", "coyote"])
def test_a_leader_serves_https_and_coyote_routes_reads_it_with_ca_file(
    started: Callable[..., Proc], tmp_path: Path, http: str
) -> None:
    tls = tls_files(tmp_path)
    config = tmp_path / "leader.toml"
    config.write_text(f'ssl_certfile = "{tls.chain}"\nssl_keyfile = "{tls.key}"\n')
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    argv = [str(BIN / "coyote"), "leader", "--config", str(config), "--port", str(port)]
    p = started(
        [*argv, "--http", http],
        port,
        url + "/_coyote/health",
        tls.trusting(),
    )
    assert f"https://127.0.0.1:{port}" in p.stderr()  # says where it listens
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused
        httpx.get(url + "/_coyote/health", timeout=5)
    out = run(
        str(BIN / "coyote"), "routes", "--leader", url, "--ca-file", str(tls.bundle), "--json"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    out = run(str(BIN / "coyote"), "routes", "--leader", url)  # the system's CAs: refused
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in out.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "No such file or directory"),
        ("timeout = ", "is not TOML"),
        (b"\xff\xfe = 1", "is not TOML"),
        ("concurency = 5", "unknown key 'concurency' (did you mean 'concurrency'?)"),
        ("timeout = 'soon'", "timeout = 'soon': must be a number"),
        ("queue = 1.5", "queue = 1.5: must be a whole number"),
        ("access_log = 'no'", "must be true or false"),
        ("log_level = 'loud'", "must be one of debug, info, warning"),
        ("config = 'other.toml'", "unknown key 'config'"),
        ("trusted_proxy = [1]", "must be a string or a list of strings"),
        ("ca_file = '/nonexistent'", "is not a file"),
        ("ssl_certfile = '/nonexistent'", "--ssl-certfile and --ssl-keyfile go together"),
        ("concurrency = 0", "concurrency"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, content: str | bytes | None, says: str
) -> None:
    config = tmp_path / "leader.toml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    elif content is not None:
        config.write_text(content)
    out = run(str(BIN / "coyote"), "leader", "--config", str(config), "--port", str(free_port()))
    assert out.returncode == 2, out.stderr
    assert says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("coyote leader: error: ")


def test_tls_flags_on_the_command_line_are_checked() -> None:
    out = run(str(BIN / "coyote"), "leader", "--ssl-certfile", "x.pem", "--ssl-keyfile", "y.pem")
    assert out.returncode == 2 and "is not a readable file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
