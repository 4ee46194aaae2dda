"""Relaying to a remote service: coyote against the usual gateways, side by side.

    .venv/bin/python benchmarks/proxy.py            # or: make bench
    .venv/bin/python benchmarks/proxy.py --quick    # a short smoke run

One upstream (uvicorn, one worker, httptools + uvloop, a fixed 13-byte answer) and,
in one run, wrk against: the upstream directly; coyote relaying to it (one uvicorn
worker, access log on, to a file), and the same on coyote's own HTTP/1.1 server
(``coyote leader --http coyote``); a Starlette gateway on a shared httpx.AsyncClient
(what most FastAPI gateways do); the same on aiohttp; nginx ``proxy_pass`` with
upstream keepalive; and "bare transport", one ASGI function on uvicorn forwarding through
coyote's transport with nothing else (no routing, forwarded headers or log): the
ceiling for any gateway on uvicorn, and so for coyote.  Every gateway but that one
sends X-Forwarded-For/-Proto/-Host, as coyote must.  Rounds are interleaved so machine
noise hits every variant alike; the table shows the median requests/s and p50/p99 of
the rounds, and ratios to direct.
wrk runs on core 0, servers on core 1 (``taskset``), all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import UVICORN, Server, WrkResult, free_port, http_get, summarise, wrk

# The target, in its two forms: against direct, and against the peers it was
# equated with where it was set (there nginx ran at 0.7x direct and aiohttp at 0.15x).
TARGET_DIRECT = "coyote >= 0.3x direct"
TARGET_PEERS = "coyote >= 15x the httpx gateway and >= 2x the aiohttp one, with a lower p99"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 s runs, one round")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk (make bench does it)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="coyote-proxy-bench-"))
    up_port = free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    env = {"UPSTREAM": upstream_url, "COYOTE_ACCESS_LOG_FILE": str(tmp / "access.log")}
    servers: dict[str, Server] = {}
    # --no-proxy-headers: the upstream stands for any service and costs the same whatever
    # the gateway in front sends (uvicorn would otherwise parse X-Forwarded-For, for
    # the gateways that set it, at several us a request on the servers' shared core)
    upstream = Server(
        "upstream",
        [*UVICORN, "--no-proxy-headers", "--port", str(up_port), "benchmarks.proxy_apps:upstream"],
        up_port,
    )
    for name, app in [
        ("coyote", "coyote_gateway"),
        ("bare transport", "bare_gateway"),
        ("starlette+httpx", "httpx_gateway"),
        ("starlette+aiohttp", "aiohttp_gateway"),
    ]:
        port = free_port()
        servers[name] = Server(
            name, [*UVICORN, "--port", str(port), f"benchmarks.proxy_apps:{app}"], port, env
        )
    port = free_port()  # the same leader app on coyote's own server (--http coyote)
    servers["coyote --http coyote"] = Server(
        "coyote --http coyote",
        [sys.executable, "-m", "benchmarks.proxy_apps", "coyote_gateway", str(port)],
        port,
        env,
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():
        port = free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, upstream=up_port, port=port))
        servers["nginx"] = Server("nginx", [nginx, "-c", str(tmp / "nginx.conf")], port)
    else:
        print("nginx is missing (apt-get install nginx-light): its row is skipped")

    results: dict[str, list[WrkResult]] = {"direct": [], **{n: [] for n in servers}}
    try:
        upstream.start("/hello")
        for s in servers.values():
            s.start("/hello")
            answer = http_get(s.port, "/hello")
            assert answer == (200, b"Hello, World!"), f"{s.name} answered {answer!r}"
        targets = {"direct": upstream_url, **{n: s.url for n, s in servers.items()}}
        for url in targets.values():  # warm up every path (connections, caches)
            wrk(url + "/hello", duration=1, connections=args.connections)
        for r in range(args.rounds):
            for name, url in targets.items():
                res = wrk(url + "/hello", duration=args.duration, connections=args.connections)
                results[name].append(res)
                print(
                    f"round {r + 1} {name:<18} {res.rps:10.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                    f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors}",
                    flush=True,
                )
    finally:
        for s in [*servers.values(), upstream]:
            s.stop()

    summary = summarise(results)
    direct = summary["direct"]["rps"]
    print(
        f"\n{args.connections} connections, {args.duration:g} s x {args.rounds} rounds, "
        "13-byte body; medians\n"
    )
    print("| variant | req/s | vs direct | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['rps']:.0f} | {s['rps'] / direct:.3f}x | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['errors']} |"
        )
    coyote = summary["coyote"]
    httpx_gw, aiohttp_gw = summary["starlette+httpx"], summary["starlette+aiohttp"]
    peers_ok = (
        coyote["rps"] >= 15 * httpx_gw["rps"]
        and coyote["rps"] >= 2 * aiohttp_gw["rps"]
        and coyote["p99_ms"] < min(httpx_gw["p99_ms"], aiohttp_gw["p99_ms"])
    )
    print(
        f"\ntarget: {TARGET_DIRECT}: {'PASS' if coyote['rps'] >= 0.3 * direct else 'FAIL'} "
        f"({coyote['rps'] / direct:.3f}x; the bare transport, a gateway that does nothing "
        f"else, reaches {summary['bare transport']['rps'] / direct:.3f}x)"
    )
    print(
        f"target: {TARGET_PEERS}: {'PASS' if peers_ok else 'FAIL'} "
        f"({coyote['rps'] / httpx_gw['rps']:.0f}x httpx, "
        f"{coyote['rps'] / aiohttp_gw['rps']:.1f}x aiohttp)"
    )
    log = tmp / "access.log"
    print(f"coyote access log: {sum(1 for _ in log.open()) if log.exists() else 0} lines")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
