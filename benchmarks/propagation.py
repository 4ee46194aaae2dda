"""Several workers on one Redis: how fast a registration reaches the others.

    .venv/bin/python benchmarks/propagation.py           # or: make bench
    .venv/bin/python benchmarks/propagation.py --quick

Starts a redis-server, an upstream and two leader processes (A and B) sharing the
table in Redis, all on 127.0.0.1.  Propagation: register a route through A's API, then
time until B first serves a request on it (200 from the upstream), 200 times; p50 and
p99.  Resync: a leader's full reload of a 10,000-route table from Redis (10
registrations of 1,000 routes), as after an outage; median of 5.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BIN, UVICORN, Server, free_port

TOKEN = "propagation-benchmark-token-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def registration(i: int, upstream: str, routes: int = 1) -> dict[str, object]:
    paths = [f"/p{i}"] if routes == 1 else [f"/bulk{i}/r{k}/{{x}}" for k in range(routes)]
    return {
        "service": f"svc{i}",
        "instance": "i1",
        "url": upstream,
        "routes": [{"method": "GET", "path": p} for p in paths],
        "ttl": 600,
    }


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 registrations")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    count = 50 if args.quick else args.registrations
    if not shutil.which("redis-server"):
        print("redis-server is missing: apt-get install redis-server", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="coyote-propagation-"))
    redis_proc, url = start_redis(tmp)
    env = {"COYOTE_TOKEN": TOKEN}
    up_port, a_port, b_port = free_port(), free_port(), free_port()
    upstream = Server(
        "upstream", [*UVICORN, "--port", str(up_port), "benchmarks.proxy_apps:upstream"], up_port
    )
    leader = [str(BIN / "coyote"), "--log-level", "warning", "leader", "--store", url]
    a = Server("leader A", [*leader, "--port", str(a_port)], a_port, env)
    b = Server("leader B", [*leader, "--port", str(b_port)], b_port, env)
    delays: list[float] = []
    try:
        for s in (upstream, a, b):
            s.start("/")
        upstream_url = f"http://127.0.0.1:{up_port}"
        with (
            httpx.Client(base_url=a.url, headers=AUTH) as to_a,
            httpx.Client(base_url=b.url) as to_b,
        ):
            for i in range(count):
                r = to_a.post("/_coyote/registrations", json=registration(i, upstream_url))
                assert r.status_code == 201, r.text
                start = time.perf_counter()
                while to_b.get(f"/p{i}").status_code != 200:
                    if time.perf_counter() - start > 5:
                        raise RuntimeError(f"/p{i} never reached leader B")
                delays.append((time.perf_counter() - start) * 1000)
        # full resync of a 10,000-route table, in this process, as a worker does it
        from coyote_mw import Coyote

        with httpx.Client(base_url=a.url, headers=AUTH) as to_a:
            for i in range(10):
                r = to_a.post(
                    "/_coyote/registrations", json=registration(10_000 + i, upstream_url, 1000)
                )
                assert r.status_code == 201, r.text[:200]
        resyncs = []
        for _ in range(5):
            worker = Coyote(token=TOKEN, store=url)
            assert worker.api is not None
            # it loaded the table as it started: empty it, then time one full reload
            for reg in list(worker.table.registrations()):
                worker.table.deregister(lease=reg.lease)
            worker.api.leases.applied.clear()  # type: ignore[union-attr]
            start = time.perf_counter()
            worker.api.leases.reload()  # type: ignore[union-attr]
            resyncs.append((time.perf_counter() - start) * 1000)
            routes = len(worker.table)
            worker.close()
    finally:
        for s in (a, b, upstream):
            s.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    resync = statistics.median(resyncs)
    print(
        f"propagation, register on A -> first 200 on B, {count} registrations: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(delays):.1f} ms"
    )
    print(f"full resync of {routes:,} routes from Redis: median {resync:.0f} ms")
    print(
        f"targets: p99 under 50 ms: {'PASS' if p99 < 50 else 'FAIL'}; "
        f"10,000-route resync under 1 s: {'PASS' if resync < 1000 else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"p50_ms": p50, "p99_ms": p99, "resync_ms": resync}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
