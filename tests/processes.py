"""Real server processes on 127.0.0.1 free ports, started and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(
    argv: list[str],
    ready_path: str = "/",
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run a server command with ``--bind``/``--port`` added (``env``: more environment
    variables); yield its base URL."""
    port = free_port()
    cmd = list(argv)
    if cmd[0] == "gunicorn":
        cmd = [str(BIN / "gunicorn"), *cmd[1:], "--bind", f"127.0.0.1:{port}"]
    elif cmd[0] == "uvicorn":
        cmd = [str(BIN / "uvicorn"), *cmd[1:], "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [*cmd, "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                httpx.get(url + ready_path, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd} did not answer within {timeout}s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
