"""Real server processes on 127.0.0.1 free ports, started and stopped by PID, and the
bounded waits the tests poll them with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the checkout
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process (by its PID); SIGKILL it if it has not ended in 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 50 ms; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


@contextmanager
def running(
    argv: list[str],
    ready_path: str = "/",
    timeout: float = 30,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """Run a server command with ``--bind``/``--port`` added; yield its base URL.

    A command that names its port itself says ``{port}`` where it goes (and nothing is
    added). ``env`` adds variables; ``log`` takes its stdout and stderr (else stderr is
    read only when it fails to start, so a chatty server must be given a ``log``).
    """
    port = free_port()
    cmd = list(argv)
    if any("{port}" in arg for arg in cmd):
        cmd = [arg.replace("{port}", str(port)) for arg in cmd]
        if not cmd[0].startswith("/") and (BIN / cmd[0]).exists():
            cmd[0] = str(BIN / cmd[0])
    elif cmd[0] == "gunicorn":
        cmd = [str(BIN / "gunicorn"), *cmd[1:], "--bind", f"127.0.0.1:{port}"]
    elif cmd[0] == "uvicorn":
        cmd = [str(BIN / "uvicorn"), *cmd[1:], "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [*cmd, "--port", str(port)]
    out = open(log, "wb") if log else None  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=out or subprocess.DEVNULL,
        stderr=out or subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                said = log.read_bytes() if log else proc.stderr.read()  # type: ignore[union-attr]
                raise RuntimeError(f"{cmd} exited: {said.decode()[-2000:]}")
            try:
                httpx.get(url + ready_path, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd} did not answer within {timeout}s") from None
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)
        if out:
            out.close()
