"""Relaying to a remote service: coyote against the usual gateways, side by side.

    .venv/bin/python benchmarks/proxy.py            # or: make bench
    .venv/bin/python benchmarks/proxy.py --quick    # a short smoke run

One upstream (uvicorn, one worker, httptools + uvloop, a fixed answer: 13 bytes at
``/hello``, 64 KiB at ``/64k``) and, in one run, wrk against: the upstream directly;
coyote relaying to it (one uvicorn worker, access log on, to a file), the same on
coyote's own HTTP/1.1 server (``coyote leader --http coyote``, relaying without ASGI
where it can: coyote_mw.middleware.direct) and on granian (one worker, its ASGI
interface, uvloop: a server whose HTTP is in Rust); a Starlette gateway on
a shared httpx.AsyncClient (what most FastAPI gateways do); the same on aiohttp; nginx
``proxy_pass`` with upstream keepalive, without an access log and with its own (the
combined format, buffered), beside coyote's own server without its access line (the
target is judged as it was set, coyote logging and nginx not; these two rows give the
ratios like for like); "bare transport", one ASGI function on uvicorn
forwarding through coyote's transport with nothing else (no routing, forwarded headers
or log): the ceiling for any gateway on uvicorn; the same transport behind granian's
RSGI interface (HTTP in Rust, no ASGI scope or messages: the ceiling for a gateway on
it); and "python floor"
(benchmarks/relay_floor.py), a callback-only relay on uvloop and httptools with no
policy at all: the least any relay written in Python costs.  Every gateway but the bare
transport sends X-Forwarded-For/-Proto (and all but the floor -Host), as coyote must.
Each path is run at each connection count (``--connections 32,64``); rounds are
interleaved so machine noise hits every variant alike; the tables show the median
requests/s and p50/p99 of the rounds, and ratios to direct and to nginx.
wrk runs on core 0, servers on core 1 (``taskset``), all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BIN,
    UVICORN,
    Server,
    WrkResult,
    free_port,
    http_get,
    parse_wrk_options,
    summarise,
    wrk,
    wrk_options,
)
from proxy_apps import BIG, BODY, PATHS

# The target, in its two forms: against direct, and against the peers it was
# equated with where it was set (there nginx ran at 0.7x direct and aiohttp at 0.15x).
TARGET_DIRECT = "coyote >= 0.3x direct"
TARGET_PEERS = "coyote >= 15x the httpx gateway and >= 2x the aiohttp one, with a lower p99"
# and against nginx itself, on a small and a 64 KiB answer at 32 and 64 connections
TARGET_NGINX = "coyote >= 0.8x nginx's throughput with a p99 <= 1.5x nginx's"
# The target is judged as it was set: coyote writing its access line, nginx none.  Two
# more rows give the like-for-like ratios: each writing its access log, and neither.
NGINX_LOGGED = "nginx, access log on"
COYOTE_UNLOGGED = "coyote --http coyote, access log off"
NGINX_LOG = "access_log {log} combined buffer=64k flush=1s;"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    {access_log}
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


def cpu_of(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Medians of the gateway's and the upstream's CPU us per request over the rounds."""
    if not runs:
        return 0.0, 0.0
    return median(g for g, _ in runs), median(u for _, u in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    wrk_options(parser, duration=4.0, connections=None)
    parser.add_argument(
        "--connections", default="32,64", help="wrk connections, comma-separated (32,64)"
    )
    parser.add_argument("--paths", default=",".join(PATHS), help=f"of {', '.join(PATHS)}")
    args = parse_wrk_options(parser)
    if args is None:
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    paths = args.paths.split(",")
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths: of {', '.join(PATHS)}")

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
    port = free_port()  # the same, with no access log: like for like with nginx's row
    servers[COYOTE_UNLOGGED] = Server(
        COYOTE_UNLOGGED,
        [sys.executable, "-m", "benchmarks.proxy_apps", "coyote_gateway", str(port)],
        port,
        {"UPSTREAM": upstream_url},
    )
    port = free_port()  # the same ASGI app on granian (Rust I/O, one worker, uvloop)
    granian = [
        str(BIN / "granian"),
        *("--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--no-ws"),
        *("--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"),
        *("--port", str(port), "benchmarks.proxy_apps:coyote_gateway"),
    ]
    servers["coyote on granian"] = Server("coyote on granian", granian, port, env)
    port = free_port()  # the bare transport on granian's RSGI interface (no ASGI at all)
    rsgi = [
        str(BIN / "granian"),
        *("--interface", "rsgi", "--loop", "uvloop", "--workers", "1", "--no-ws"),
        *("--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"),
        *("--port", str(port), "benchmarks.proxy_apps:bare_rsgi_gateway"),
    ]
    servers["bare transport, granian RSGI"] = Server(
        "bare transport, granian RSGI", rsgi, port, env
    )
    port = free_port()
    floor = [sys.executable, str(Path(__file__).with_name("relay_floor.py")), str(port)]
    servers["python floor"] = Server("python floor", floor, port, env)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():
        port = free_port()
        conf = NGINX_CONF.format(tmp=tmp, upstream=up_port, port=port, access_log="access_log off;")
        (tmp / "nginx.conf").write_text(conf)
        servers["nginx"] = Server("nginx", [nginx, "-c", str(tmp / "nginx.conf")], port)
        # like for like with coyote's line: nginx's own access log, as it ships (the
        # combined format), buffered as coyote's BufferedFileHandler is
        port = free_port()
        logged = tmp / "logged"
        logged.mkdir()
        line = NGINX_LOG.format(log=logged / "access.log")
        conf = NGINX_CONF.format(tmp=logged, upstream=up_port, port=port, access_log=line)
        (logged / "nginx.conf").write_text(conf)
        servers[NGINX_LOGGED] = Server(
            NGINX_LOGGED, [nginx, "-c", str(logged / "nginx.conf")], port
        )
    else:
        print("nginx is missing (apt-get install nginx-light): its row is skipped")

    cells = [(path, c) for path in paths for c in connections]
    names = ["direct", *servers]
    results: dict[tuple[str, int], dict[str, list[WrkResult]]] = {
        cell: {n: [] for n in names} for cell in cells
    }
    # CPU time per request of each run: the gateway's (its process and children), and
    # the upstream's, which shares core 1 with it
    cpu: dict[tuple[str, int], dict[str, list[tuple[float, float]]]] = {
        cell: {n: [] for n in names} for cell in cells
    }
    try:
        upstream.start("/hello")
        for s in servers.values():
            s.start("/hello")
            for path in paths:
                answer = http_get(s.port, path)
                expected = BIG if path == "/64k" else BODY
                assert answer == (200, expected), f"{s.name} answered {path} with {answer!r}"
        targets = {"direct": upstream_url, **{n: s.url for n, s in servers.items()}}
        for url in targets.values():  # warm up every path (connections, caches)
            wrk(url + paths[0], duration=1, connections=max(connections))
        for r in range(args.rounds):
            for cell in cells:
                path, c = cell
                for name, url in targets.items():
                    gateway = servers.get(name)
                    g0 = gateway.tree_cpu_seconds() if gateway else 0.0
                    u0 = upstream.cpu_seconds()
                    res = wrk(url + path, duration=args.duration, connections=c)
                    n = max(res.requests, 1) / 1e6
                    g = (gateway.tree_cpu_seconds() - g0) / n if gateway else 0.0
                    u = (upstream.cpu_seconds() - u0) / n
                    results[cell][name].append(res)
                    cpu[cell][name].append((g, u))
                    print(
                        f"round {r + 1} {path:<6} c={c:<3} {name:<18} {res.rps:9.0f} req/s"
                        f"  p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms"
                        f"  CPU us/req {g:5.1f} + upstream {u:5.1f}  errors {res.errors}",
                        flush=True,
                    )
    finally:
        for s in [*servers.values(), upstream]:
            s.stop()

    summaries = {cell: summarise(results[cell]) for cell in cells}
    print(f"\n{args.duration:g} s x {args.rounds} rounds, medians")
    verdicts = []
    for (path, c), summary in summaries.items():
        direct = summary["direct"]["rps"]
        ngx = summary.get("nginx")
        print(
            f"\n{path} ({len(BIG if path == '/64k' else BODY)} bytes), {c} connections\n\n"
            "| variant | req/s | vs direct | vs nginx | p50 ms | p99 ms | p99 vs nginx "
            "| CPU us/req | upstream's | errors |\n|---|---|---|---|---|---|---|---|---|---|"
        )
        for name, row in summary.items():
            vs_ngx = f"{row['rps'] / ngx['rps']:.2f}x" if ngx else "-"
            p99_ngx = f"{row['p99_ms'] / ngx['p99_ms']:.2f}x" if ngx else "-"
            g, u = cpu_of(cpu[(path, c)][name])
            print(
                f"| {name} | {row['rps']:.0f} | {row['rps'] / direct:.3f}x | {vs_ngx} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {p99_ngx} | "
                f"{g:.1f} | {u:.1f} | {row['errors']} |"
            )
        for name in ("coyote", "coyote --http coyote", "coyote on granian"):
            if ngx and name in summary:
                row = summary[name]
                verdicts.append(
                    (name, path, c, row["rps"] / ngx["rps"], row["p99_ms"] / ngx["p99_ms"])
                )
    for name, path, c, rps, p99 in verdicts:
        ok = rps >= 0.8 and p99 <= 1.5
        print(
            f"target: {TARGET_NGINX}: {name}, {path} c={c}: {'PASS' if ok else 'FAIL'} "
            f"({rps:.2f}x the throughput, {p99:.2f}x the p99)"
        )
    for (path, c), by_name in cpu.items():
        ours = "coyote --http coyote"
        if "nginx" in by_name and by_name[ours]:
            # The gateway and the upstream share core 1, so a request's turn on it is
            # the two CPU times together: 0.8x nginx's throughput leaves coyote, beside
            # the upstream it relays to, 1/0.8 of nginx's turn
            ng, nu = cpu_of(by_name["nginx"])
            g, u = cpu_of(by_name[ours])
            budget = (ng + nu) / 0.8 - u
            print(
                f"core 1, {path} c={c}: nginx {ng:.1f} + upstream {nu:.1f} us a request; "
                f"at 0.8x nginx, {ours} may take {budget:.1f} us beside its upstream's "
                f"{u:.1f}: it takes {g:.1f} ({g / budget:.2f}x)"
            )
    for (path, c), summary in summaries.items():
        pairs = [
            ("each logging", "coyote --http coyote", NGINX_LOGGED),
            ("neither logging", COYOTE_UNLOGGED, "nginx"),
        ]
        for what, ours, theirs in pairs:
            if ours in summary and theirs in summary:
                a, b = summary[ours], summary[theirs]
                print(
                    f"like for like, {what}: coyote --http coyote, {path} c={c}: "
                    f"{a['rps'] / b['rps']:.2f}x nginx's throughput, "
                    f"{a['p99_ms'] / b['p99_ms']:.2f}x its p99"
                )
    hello = summaries.get(("/hello", 32))
    if hello is not None:
        coyote, direct = hello["coyote"], hello["direct"]["rps"]
        httpx_gw, aiohttp_gw = hello["starlette+httpx"], hello["starlette+aiohttp"]
        peers_ok = (
            coyote["rps"] >= 15 * httpx_gw["rps"]
            and coyote["rps"] >= 2 * aiohttp_gw["rps"]
            and coyote["p99_ms"] < min(httpx_gw["p99_ms"], aiohttp_gw["p99_ms"])
        )
        print(
            f"target: {TARGET_DIRECT} (/hello, 32): "
            f"{'PASS' if coyote['rps'] >= 0.3 * direct else 'FAIL'} "
            f"({coyote['rps'] / direct:.3f}x; the bare transport, a gateway that does nothing "
            f"else, reaches {hello['bare transport']['rps'] / direct:.3f}x)"
        )
        print(
            f"target: {TARGET_PEERS} (/hello, 32): {'PASS' if peers_ok else 'FAIL'} "
            f"({coyote['rps'] / httpx_gw['rps']:.0f}x httpx, "
            f"{coyote['rps'] / aiohttp_gw['rps']:.1f}x aiohttp)"
        )
    log = tmp / "access.log"
    theirs = tmp / "logged" / "access.log"
    print(
        f"coyote access log: {sum(1 for _ in log.open()) if log.exists() else 0} lines; "
        f"nginx's (its row with it on): {sum(1 for _ in theirs.open()) if theirs.exists() else 0}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({f"{path} c={c}": s for (path, c), s in summaries.items()}, indent=2)
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
