"""Where a relayed request's Python goes: bytecodes and calls per request, by function.

    .venv/bin/python benchmarks/bytecodes.py                  # coyote's own server
    .venv/bin/python benchmarks/bytecodes.py --headers browser --top 40

The upstream of benchmarks/proxy.py and the gateway of ``coyote leader --http coyote``
(``benchmarks.proxy_apps coyote_gateway``, relaying without ASGI where it can, access
log on, to a file) on 127.0.0.1.  After ``--warm`` requests over one kept-alive
connection, the gateway counts every bytecode its Python runs (``sys.settrace`` with
``f_trace_opcodes``) for ``--requests`` more, then prints them per request by function,
with the calls.  A count, not a time: the same on a busy machine, and slow to take, so
the run is short.  It shows what costs in the interpreter; callgrind (see the README)
gives the instructions.  ``--headers browser`` sends the twelve header lines of a
browser's navigation instead of ``Host`` alone.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, UVICORN, Server, free_port

BROWSER = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-GB,en;q=0.9",
    "Accept-Encoding: gzip, deflate, br",
    "Connection: keep-alive",
    "Cookie: session=abcdef0123456789; theme=dark",
    "Upgrade-Insecure-Requests: 1",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: none",
    "Cache-Control: max-age=0",
)


def serve(port: int, out: Path, requests: int) -> None:
    """The gateway, counting while SIGUSR2 has been given once (a second: written out)."""
    import benchmarks.proxy_apps as apps
    from coyote_mw.server import Server as H1Server

    ops: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def name(frame: FrameType) -> str:
        code = frame.f_code
        return f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_qualname}"

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            calls[name(frame)] += 1
        elif event == "opcode":
            ops[name(frame)] += 1
        return tracer

    counting = [False]

    def toggle(*_: Any) -> None:
        if not counting[0]:
            counting[0] = True
            sys.settrace(tracer)
            return
        sys.settrace(None)
        lines = [f"{sum(ops.values()) / requests:.0f} {sum(calls.values()) / requests:.1f}"]
        lines += [f"{v / requests:.1f} {calls[k] / requests:.2f} {k}" for k, v in ops.most_common()]
        out.write_text("\n".join(lines) + "\n")
        os._exit(0)

    signal.signal(signal.SIGUSR2, toggle)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app = apps.coyote_gateway
    H1Server(app, shortcut=app.direct()).run([sock])


def _get(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data += sock.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(body) >= length:
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise RuntimeError(f"the gateway answered {head[:80]!r}")
                return
    raise RuntimeError("no whole answer within 10 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headers", choices=("one", "browser"), default="one")
    parser.add_argument("--warm", type=int, default=300, help="requests before counting")
    parser.add_argument("--requests", type=int, default=100, help="requests counted")
    parser.add_argument("--top", type=int, default=30, help="functions shown")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # the gateway's side
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), int(args.serve[2]))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="coyote-bytecodes-"))
    out = tmp / "counts.txt"
    up_port, gw_port = free_port(), free_port()
    upstream = Server(
        "upstream",
        [*UVICORN, "--port", str(up_port), "benchmarks.proxy_apps:upstream"],
        up_port,
        core=None,
    )
    gateway = Server(
        "gateway",
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            str(gw_port),
            str(out),
            str(args.requests),
        ],
        gw_port,
        {
            "UPSTREAM": f"http://127.0.0.1:{up_port}",
            "COYOTE_ACCESS_LOG_FILE": str(tmp / "access.log"),
        },
        core=None,
    )
    lines = "".join(f"{line}\r\n" for line in (BROWSER if args.headers == "browser" else ()))
    request = f"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{gw_port}\r\n{lines}\r\n".encode()
    try:
        upstream.start("/hello")
        gateway.start("/hello")
        assert gateway.proc is not None
        with socket.create_connection(("127.0.0.1", gw_port), timeout=10) as sock:
            for _ in range(args.warm):
                _get(sock, request)
            gateway.proc.send_signal(signal.SIGUSR2)
            time.sleep(0.5)  # the signal is handled between two bytecodes
            for _ in range(args.requests):
                _get(sock, request)
            gateway.proc.send_signal(signal.SIGUSR2)
        gateway.proc.wait(20)
    finally:
        gateway.stop()
        upstream.stop()
    total, *rows = out.read_text().splitlines()
    ops, calls = total.split()
    said = "Host alone" if args.headers == "one" else f"Host and {len(BROWSER)} more lines"
    print(f"GET /hello ({said}), {args.requests} requests counted, {ROOT}")
    print(f"per request: {ops} bytecodes, {calls} Python calls\n")
    print("| bytecodes | calls | function |\n|---|---|---|")
    for row in rows[: args.top]:
        count, called, where = row.split(" ", 2)
        print(f"| {count} | {called} | {where} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
