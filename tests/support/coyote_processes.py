"""``coyote leader`` and ``coyote serve-client`` as real processes on 127.0.0.1.

``procs`` (a fixture) starts them, waits for a leader to answer, and ends every one it
started by PID.  Each runs with ``ENV``: this checkout on the path and ``TOKEN`` as
``COYOTE_TOKEN``; ``AUTH`` is the header that token goes in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.processes import BIN, ROOT, free_port, stop, until

__all__ = ["AUTH", "ENV", "TOKEN", "CoyoteProcesses", "Proc", "get", "procs", "routes_of"]

TOKEN = "remote-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ENV = {**os.environ, "COYOTE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}


class Proc:
    def __init__(self, argv: list[str], port: int, env: Mapping[str, str] | None = None) -> None:
        self.argv, self.port, self.env = argv, port, {**ENV, **(env or {})}
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        # a file, not a pipe: nobody drains a pipe, and a full one blocks the process
        self.log = tempfile.NamedTemporaryFile(prefix="coyote-test-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def stderr(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


def get(url: str) -> httpx.Response | None:
    """The answer to a GET, or None when nothing answers."""
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def routes_of(leader: Proc) -> list[dict[str, object]]:
    r = httpx.get(leader.url + "/_coyote/routes", headers=AUTH, timeout=5)
    return r.json() if r.status_code == 200 else []  # type: ignore[no-any-return]


class CoyoteProcesses:
    """``self("leader", *args)`` / ``self("serve-client", *args)`` starts one on a free
    port (or ``port=``; ``env=``: variables added) and returns it once a leader answers;
    ``close()`` kills them all.

    ``log_levels``: the ``--log-level`` of each command; a command not named runs at
    its default.
    """

    def __init__(self, log_levels: Mapping[str, str] | None = None) -> None:
        self.log_levels = dict(log_levels or {})
        self.started: list[Proc] = []

    def __call__(
        self,
        command: str,
        *args: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        port = port or free_port()
        level = self.log_levels.get(command)
        argv = [
            str(BIN / "coyote"),
            *(("--log-level", level) if level else ()),
            command,
            *args,
            "--port",
            str(port),
        ]
        p = Proc(argv, port, env).start()
        self.started.append(p)
        if command == "leader":
            until(lambda: get(p.url + "/_coyote/routes") is not None, 20, "leader up")
        return p

    def close(self) -> None:
        for p in self.started:
            p.kill()
            p.log.close()

    def __enter__(self) -> CoyoteProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def procs() -> Iterator[CoyoteProcesses]:
    """Leaders log at INFO, clients at WARNING."""
    with CoyoteProcesses({"leader": "info", "serve-client": "warning"}) as started:
        yield started
