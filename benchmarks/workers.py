"""``coyote leader --workers N``: how relayed throughput scales from one worker to two.

    .venv/bin/python benchmarks/workers.py            # or: make bench
    .venv/bin/python benchmarks/workers.py --quick    # a short smoke run

A redis-server, the upstream of benchmarks/proxy.py (``proxy_apps:upstream``: uvicorn,
one worker, httptools + uvloop, a 13-byte answer) and two leaders sharing the table in
Redis, ``coyote leader --workers 1`` and ``--workers 2`` (``--concurrency 256 --queue
1024`` as proxy.py's coyote; ``--log-level warning``, so no access line), each relaying
``GET /hello`` to the upstream, registered once through the API.  wrk runs against each
in turn, rounds interleaved; the table gives the median requests/s and p50/p99 of the
rounds, the ratio of two workers to one, and the leader's CPU time per request (its
workers' user + system time over the requests wrk counted).

Nothing is pinned to a core here (benchmarks/proxy.py pins servers to core 1 and wrk to
core 0): on a two-core machine a second worker can only help if it may run on the other
core, which wrk and the upstream need too.  All on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BIN,
    UVICORN,
    Server,
    WrkResult,
    free_port,
    http_get,
    median,
    parse_wrk_options,
    summarise,
    wrk,
    wrk_options,
)
from propagation import start_redis

TOKEN = "workers-benchmark-token-0123456"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def workers_of(server: Server) -> list[int]:
    assert server.proc is not None
    pid = server.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()] or [pid]  # --workers 1: the process itself


def cpu(pid: int) -> float:
    """User + system CPU seconds of one process (Linux); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    wrk_options(parser, rounds=5)
    args = parse_wrk_options(parser, ("wrk", "redis-server"))
    if args is None:
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="coyote-workers-bench-"))
    redis_proc, store = start_redis(tmp)
    up_port = free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    upstream = Server(
        "upstream",
        [*UVICORN, "--no-proxy-headers", "--port", str(up_port), "benchmarks.proxy_apps:upstream"],
        up_port,
        core=None,
    )
    leaders: dict[str, Server] = {}
    for name, n in [("1 worker", 1), ("2 workers", 2)]:
        port = free_port()
        argv = [str(BIN / "coyote"), "--log-level", "warning", "leader", "--store", store]
        argv += ["--workers", str(n), "--concurrency", "256", "--queue", "1024"]
        argv += ["--port", str(port)]
        leaders[name] = Server(name, argv, port, {"COYOTE_TOKEN": TOKEN}, core=None)

    results: dict[str, list[WrkResult]] = {name: [] for name in leaders}
    cpu_per_request: dict[str, list[float]] = {name: [] for name in leaders}
    shares: dict[str, list[float]] = {name: [] for name in leaders}
    try:
        upstream.start("/hello")
        for s in leaders.values():
            s.start("/_coyote/health")
        registration = {
            "service": "upstream",
            "instance": "u1",
            "url": upstream_url,
            "routes": [{"method": "GET", "path": "/hello"}],
            "ttl": 3600,
        }
        first = next(iter(leaders.values()))
        r = httpx.post(f"{first.url}/_coyote/registrations", json=registration, headers=AUTH)
        assert r.status_code == 201, r.text
        for s in leaders.values():  # every worker has the route (a connection each)
            answers = [http_get(s.port, "/hello") for _ in range(20)]
            while answers[-20:].count((200, b"Hello, World!")) < 20:
                assert len(answers) < 500, f"{s.name} answered {answers[-1]!r}"
                answers.append(http_get(s.port, "/hello"))
        targets = {name: s.url + "/hello" for name, s in leaders.items()}
        for url in targets.values():  # warm up every path (connections, caches)
            wrk(url, duration=1, connections=args.connections, core=None)
        for r_ in range(args.rounds):
            for name, url in targets.items():
                pids = workers_of(leaders[name])
                before = [cpu(p) for p in pids]
                res = wrk(url, duration=args.duration, connections=args.connections, core=None)
                used = [cpu(p) - b for p, b in zip(pids, before, strict=True)]
                results[name].append(res)
                cpu_per_request[name].append(sum(used) / max(1, res.requests) * 1e6)
                shares[name].append(min(used) / max(max(used), 1e-9))
                print(
                    f"round {r_ + 1} {name:<20} {res.rps:8.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                    f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors}  "
                    f"CPU {sum(used) / max(1, res.requests) * 1e6:5.1f} us/req  "
                    f"per worker {' / '.join(f'{u:.2f} s' for u in used)}",
                    flush=True,
                )
    finally:
        for s in [*leaders.values(), upstream]:
            s.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    summary = summarise(results)
    one = summary["1 worker"]["rps"]
    print(
        f"\n{args.connections} connections, {args.duration:g} s x {args.rounds} rounds, "
        "relaying GET /hello (13-byte body); medians; nothing pinned\n"
    )
    print("| leader | req/s | vs 1 worker | p50 ms | p99 ms | CPU us/req | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        per_req = median(cpu_per_request[name])
        print(
            f"| {name} | {s['rps']:.0f} | {s['rps'] / one:.2f}x | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {per_req:.1f} | {s['errors']} |"
        )
    ratios = [b.rps / a.rps for a, b in zip(results["1 worker"], results["2 workers"], strict=True)]
    print(
        f"\n2 workers / 1 worker, round by round: {', '.join(f'{x:.2f}' for x in ratios)}; "
        f"the less busy worker's CPU time / the busier one's, median: "
        f"{median(shares['2 workers']):.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
