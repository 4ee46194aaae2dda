"""Where a request's Python goes: bytecodes and calls per request, by function.

    .venv/bin/python benchmarks/bytecodes.py                     # the relay
    .venv/bin/python benchmarks/bytecodes.py --headers browser --top 40
    .venv/bin/python benchmarks/bytecodes.py --suite inprocess   # vs native Starlette

``--suite relay`` (the default): the upstream of benchmarks/proxy.py and the gateway of
``coyote leader --http coyote`` (``benchmarks.proxy_apps coyote_gateway``, relaying
without ASGI where it can, access log on, to a file), ``GET /hello`` (``--path /64k``:
the 64 KiB answer).  ``--suite
inprocess``: the apps of benchmarks/inprocess.py on uvicorn (httptools, uvloop), the
native Starlette route, coyote standalone and coyote in front of a Starlette host, one
after the other, ``GET /hello/world``.
After ``--warm`` requests over one kept-alive connection on 127.0.0.1, the server counts
every bytecode its Python runs (``sys.settrace`` with ``f_trace_opcodes``) for
``--requests`` more, then prints them per request by function, with the calls.  A count,
not a time: the same on a busy machine, and slow to take, so the run is short.  It shows
what costs in the interpreter; callgrind (see the README) gives the instructions.
``--headers browser`` sends the twelve header lines of a browser's navigation instead of
``Host`` alone.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
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


def serve(port: int, out: Path, requests: int, app: str) -> None:
    """The server, counting while SIGUSR2 has been given once (a second: written out):
    ``app`` "gateway" (coyote's server) or an app of benchmarks/inprocess_apps.py
    (uvicorn)."""
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
    if app != "gateway":
        import uvicorn

        target = f"benchmarks.inprocess_apps:{app}"
        uvicorn.run(
            target,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
        )
        return
    import benchmarks.proxy_apps as apps
    from coyote_mw.server import Server as H1Server

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    gateway = apps.coyote_gateway
    H1Server(gateway, shortcut=gateway.direct()).run([sock])


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


def count(app: str, path: str, args: argparse.Namespace, tmp: Path) -> list[str]:
    """Run ``app`` (with the upstream for the gateway), count, and return the rows."""
    out = tmp / f"{app}.txt"
    port = free_port()
    env = {"COYOTE_ACCESS_LOG_FILE": str(tmp / "access.log")}
    servers = []
    if app == "gateway":
        up_port = free_port()
        argv = [*UVICORN, "--port", str(up_port), "benchmarks.proxy_apps:upstream"]
        servers.append(Server("upstream", argv, up_port, core=None))
        env["UPSTREAM"] = f"http://127.0.0.1:{up_port}"
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    argv += [str(port), str(out), str(args.requests), app]
    server = Server(app, argv, port, env, core=None)
    servers.append(server)
    lines = "".join(f"{line}\r\n" for line in (BROWSER if args.headers == "browser" else ()))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode()
    try:
        for each in servers:
            each.start(path if each is server else "/hello")
        assert server.proc is not None
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(args.warm):
                _get(sock, request)
            server.proc.send_signal(signal.SIGUSR2)
            time.sleep(0.5)  # the signal is handled between two bytecodes
            for _ in range(args.requests):
                _get(sock, request)
            server.proc.send_signal(signal.SIGUSR2)
        server.proc.wait(20)
    finally:
        for each in reversed(servers):
            each.stop()
    return out.read_text().splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("relay", "inprocess"), default="relay")
    parser.add_argument("--headers", choices=("one", "browser"), default="one")
    parser.add_argument("--warm", type=int, default=300, help="requests before counting")
    parser.add_argument("--requests", type=int, default=100, help="requests counted")
    parser.add_argument("--top", type=int, default=30, help="functions shown")
    parser.add_argument(
        "--path", choices=("/hello", "/64k"), default="/hello", help="relay: the path asked"
    )
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)  # the server's side
    args = parser.parse_args()
    if args.serve:
        port, out, requests, app = args.serve
        serve(int(port), Path(out), int(requests), app)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="coyote-bytecodes-"))
    if args.suite == "relay":
        path, apps = args.path, {"coyote --http coyote, relaying": "gateway"}
    else:
        path = "/hello/world"
        apps = {
            "native Starlette route": "native_app",
            "coyote, standalone": "coyote_app",
            "coyote, in front of a Starlette host": "coyote_host_app",
        }
    said = "Host alone" if args.headers == "one" else f"Host and {len(BROWSER)} more lines"
    print(f"GET {path} ({said}), {args.requests} requests counted, {ROOT}")
    for label, app in apps.items():
        total, *rows = count(app, path, args, tmp)
        ops, calls = total.split()
        print(f"\n{label}: {ops} bytecodes, {calls} Python calls per request\n")
        print("| bytecodes | calls | function |\n|---|---|---|")
        for row in rows[: args.top]:
            number, called, where = row.split(" ", 2)
            print(f"| {number} | {called} | {where} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
