"""Shared benchmark plumbing: server processes on 127.0.0.1 and wrk runs, all bounded.

Servers are started here and ended here, by PID; wrk runs for a fixed duration.  On a
two-core machine wrk is pinned to core 0 and the servers to core 1 (``taskset``), so
the load generator does not steal the servers' CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TASKSET = shutil.which("taskset") if (os.cpu_count() or 1) >= 2 else None
# every benchmarked server: one uvicorn worker, its fastest parts, its own log quiet
UVICORN = [
    str(BIN / "uvicorn"),
    "--no-access-log",
    "--log-level",
    "warning",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
]


def wrk_options(
    parser: argparse.ArgumentParser,
    *,
    duration: float = 5.0,
    rounds: int = 3,
    connections: int | None = 32,
) -> None:
    """The options every wrk benchmark takes (``connections=None``: the script's own)."""
    parser.add_argument("--duration", type=float, default=duration, help="seconds per wrk run")
    if connections is not None:
        parser.add_argument("--connections", type=int, default=connections)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--quick", action="store_true", help="2 s runs, one round")
    parser.add_argument("--json", type=Path, help="write the results here")


def parse_wrk_options(
    parser: argparse.ArgumentParser, needs: tuple[str, ...] = ("wrk",)
) -> argparse.Namespace | None:
    """The parsed options, ``--quick`` applied; None (having said why) when a program
    the benchmark runs is missing."""
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    for tool in needs:
        if not shutil.which(tool):
            print(f"{tool} is missing: make bench installs it", file=sys.stderr)
            return None
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(argv: list[str], core: int) -> list[str]:
    return [TASKSET, "-c", str(core), *argv] if TASKSET else argv


class Server:
    """A server process we start, wait for, and end by PID."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        env: dict[str, str] | None = None,
        root: Path = ROOT,
        core: int | None = 1,
    ):
        """``core``: the CPU it is pinned to; None: not pinned (the kernel schedules it)."""
        self.name, self.argv, self.port, self.root = name, argv, port, root
        self.core = core
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/", timeout: float = 20.0) -> Server:
        self.proc = subprocess.Popen(
            self.argv if self.core is None else pinned(self.argv, self.core),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"{self.name} exited early:\n{err[-2000:]}")
            if http_get(self.port, ready_path) is not None:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout}s")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, user and system (Linux)."""
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid)

    def tree_cpu_seconds(self) -> float:
        """CPU time the server process and its live descendants (nginx's worker,
        granian's) have used so far, user and system (Linux)."""
        assert self.proc is not None
        return sum(_cpu_seconds(pid) for pid in _tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux: /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # ended since it was listed
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """One GET over a raw socket; None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return None


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"cannot read a latency from {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, *, duration: float, connections: int, threads: int = 1, core: int | None = 0
) -> WrkResult:
    """Run wrk for ``duration`` seconds against ``url`` (pinned to ``core``; None: not)."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    argv += ["--latency", url]
    out = subprocess.run(
        argv if core is None else pinned(argv, core),
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    return WrkResult(rps, p50, p99, errors, int(m.group(1)) if m else 0)


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def round_ratio(results: dict[str, list[WrkResult]], label: str, base: str) -> float:
    """``label``'s throughput over ``base``'s, round by round (their runs seconds apart),
    then the median: steadier than the ratio of medians when other work loads the machine."""
    return median([a.rps / b.rps for a, b in zip(results[label], results[base], strict=True)])


def interleaved(
    servers: dict[str, Server],
    path: str,
    expect: bytes,
    args: argparse.Namespace,
    cpu_shown: bool = True,
) -> tuple[dict[str, list[WrkResult]], dict[str, list[float]]]:
    """Start every server, check it answers ``path`` with ``expect`` and warm it up; then
    ``args.rounds`` rounds of one wrk run each, interleaved; stop them.  Each run's
    result, and the server's CPU time per request in us (user and system: of the process
    started, so ``cpu_shown=False`` for a server that serves from a child)."""
    results: dict[str, list[WrkResult]] = {label: [] for label in servers}
    cpu: dict[str, list[float]] = {label: [] for label in servers}
    width = max(map(len, servers))
    try:
        for s in servers.values():
            s.start(path)
            answer = http_get(s.port, path)
            assert answer == (200, expect), f"{s.name} answered {answer!r}"
            wrk(s.url + path, duration=1, connections=args.connections)  # warm up
        for r in range(args.rounds):
            for label, s in servers.items():
                used = s.cpu_seconds()
                res = wrk(s.url + path, duration=args.duration, connections=args.connections)
                used = s.cpu_seconds() - used
                results[label].append(res)
                cpu[label].append(used / max(res.requests, 1) * 1e6)
                shown = f"  CPU {cpu[label][-1]:5.1f} us/req" if cpu_shown else ""
                print(
                    f"round {r + 1} {label:<{width}} {res.rps:9.0f} req/s"
                    f"  p50 {res.p50_ms:5.2f} ms  p99 {res.p99_ms:6.2f} ms{shown}"
                    f"  errors {res.errors}",
                    flush=True,
                )
    finally:
        for s in servers.values():
            s.stop()
    return results, cpu


def summarise(results: dict[str, list[WrkResult]]) -> dict[str, dict[str, float]]:
    """Medians over the rounds of each variant (errors summed)."""
    return {
        name: {
            "rps": median([x.rps for x in rs]),
            "p50_ms": median([x.p50_ms for x in rs]),
            "p99_ms": median([x.p99_ms for x in rs]),
            "errors": sum(x.errors for x in rs),
        }
        for name, rs in results.items()
    }


def access_log_from_env() -> None:
    """In a benchmarked server: coyote's access log on, to ``$COYOTE_ACCESS_LOG_FILE``.

    Through ``BufferedFileHandler``, or a plain ``FileHandler`` with a timestamped
    format when ``PLAIN_FILE_HANDLER`` is set (to compare the two).
    """
    import logging

    from coyote_mw.logs import BufferedFileHandler

    log = os.environ.get("COYOTE_ACCESS_LOG_FILE")
    if not log:
        return
    handler: logging.Handler
    if os.environ.get("PLAIN_FILE_HANDLER"):
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    else:
        handler = BufferedFileHandler(log)
    access = logging.getLogger("coyote_mw.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
