"""What the operator's views cost the leader with a large route table: a dashboard
poll and a metrics scrape.

    .venv/bin/python benchmarks/operator_views.py                # 10,000 routes
    .venv/bin/python benchmarks/operator_views.py --routes 1000

Registers ``--routes`` routes (``/s{k}/r{i}/{id}``, ten services of two instances each,
through the registration API, in process), and times, the median of ``--polls`` each:

* ``GET /_coyote/dashboard/data`` three ways: whole (no ``routes=``: every route with its
  instances' health, what a script gets); as the page polls while the table stays as it
  is (``?routes=V``, its last ``routes_version``: ``routes`` is null); and the first poll
  after a change (one more registration: the routes again, gathered anew);
* ``GET /_coyote/metrics`` once every route has answered a request (a series each), and
  beside it the same two request families written by prometheus-client's own
  ``generate_latest`` (what the scrape used before, about 19 lines a route).

Then, in a process of its own in prometheus-client's multiprocess mode (what
``coyote leader --workers N`` and gunicorn ``-w N`` run in), ``--workers`` forked worker
processes each count one request of every route, and it times:

* ``GET /_coyote/metrics``, which reads and sums every worker's files, against what a
  scrape was before: the same counts written by prometheus-client's own multiprocess
  Counter and Histogram (in worker processes too), read by its ``MultiProcessCollector``
  and written by ``generate_latest``;
* what counting one request costs a worker, coyote's ``Metrics.record`` against those
  two prometheus-client values (their children made beforehand, as coyote kept them);
* after ``--replaced`` more workers have each counted one request of every route and
  exited (as gunicorn's ``max_requests`` replaces them), the scrape with their files
  left in the directory, then with each folded into the archive
  (``mark_process_dead``), and what one fold takes.

Prints milliseconds and bytes.  The time is the leader's own work (the view, the JSON
or text) with httpx's WSGI transport around it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

from coyote_mw import Coyote
from coyote_mw.ops.metrics import requests_text_by_prometheus_client

TOKEN = "t" * 32
AUTH = {"authorization": "Bearer " + TOKEN}
DATA = "/_coyote/dashboard/data"
PER_REQUEST = 1000  # routes per registration: its body stays under the API's 64 KiB


def register(client: httpx.Client, service: str, instance: str, paths: list[str]) -> None:
    for start in range(0, len(paths), PER_REQUEST):
        body = {
            "service": service,
            "instance": f"{instance}-{start // PER_REQUEST}" if start else instance,
            "url": "http://127.0.0.1:9",
            "ttl": 600,
            "routes": [{"method": "GET", "path": p} for p in paths[start : start + PER_REQUEST]],
        }
        r = client.post("/_coyote/registrations", json=body, headers=AUTH)
        r.raise_for_status()


def timed(poll: Callable[[], httpx.Response], times: int) -> tuple[float, int]:
    """Median milliseconds of ``times`` polls, and the last answer's size."""
    took, size = [], 0
    for _ in range(times):
        start = time.perf_counter()
        r = poll()
        took.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        size = len(r.content)
    return statistics.median(took), size


def scrape(coyote: Coyote, client: httpx.Client, polls: int) -> None:
    metrics = coyote.metrics
    assert metrics is not None
    for endpoint in coyote.table.endpoints():  # one request each: a series per route
        metrics.record(endpoint, 200, 0.004)
    ours = timed(lambda: client.get("/_coyote/metrics", headers=AUTH), polls)
    took = []
    for _ in range(polls):
        start = time.perf_counter()
        text = requests_text_by_prometheus_client(metrics)
        took.append((time.perf_counter() - start) * 1000)
    print("\n| metrics scrape | ms | bytes |\n|---|---|---|")
    print(f"| `GET /_coyote/metrics` | {ours[0]:.1f} | {ours[1]:,} |")
    print(
        f"| its request families by prometheus-client's `generate_latest` "
        f"| {statistics.median(took):.1f} | {len(text):,} |"
    )


def in_workers(count: int, work: Callable[[], None]) -> None:
    """``work()`` in ``count`` forked processes, one after the other."""
    for _ in range(count):
        in_worker(work)


def multiprocess(routes: int, workers: int, polls: int, replaced: int) -> None:
    """The scrape and the per-request cost in multiprocess mode: run by ``main`` in a
    process of its own, with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from coyote_mw.ops.metrics import BUCKETS, DURATION, REQUESTS, ROUTE

    ours_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    coyote, client = leader(routes)
    metrics = coyote.metrics
    assert metrics is not None and metrics.shared is not None and metrics.shared.multiprocess
    endpoints = list(coyote.table.endpoints())
    labels = [(ep.topology, ep.method, ep.pattern, ep.service) for ep in endpoints]
    try:

        def count_ours() -> None:
            for endpoint in endpoints:
                metrics.record(endpoint, 200, 0.004)

        in_workers(workers, count_ours)
        ours = timed(lambda: client.get("/_coyote/metrics", headers=AUTH), polls)
        theirs_dir = tempfile.mkdtemp(prefix="coyote-bench-prometheus-")

        def values() -> tuple[Any, Any]:
            requests = Counter(*REQUESTS[:2], (*ROUTE, "status"), registry=None)
            duration = Histogram(*DURATION, ROUTE, buckets=BUCKETS, registry=None)
            return requests, duration

        def count_theirs() -> None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = theirs_dir
            requests, duration = values()
            for key in labels:
                requests.labels(*key, "2xx").inc()
                duration.labels(*key).observe(0.004)

        in_workers(workers, count_theirs)
        took = []
        for _ in range(polls):
            start = time.perf_counter()
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=theirs_dir)  # type: ignore[no-untyped-call]
            text = generate_latest(registry)
            took.append((time.perf_counter() - start) * 1000)
        print(f"\n{workers} worker processes, each counted one request of every route\n")
        print("| metrics scrape, multiprocess mode | ms | bytes |\n|---|---|---|")
        print(
            f"| `GET /_coyote/metrics` (coyote's files, all of the scrape) | {ours[0]:.1f} "
            f"| {ours[1]:,} |"
        )
        print(
            f"| the request families in prometheus-client's files, its `MultiProcessCollector`"
            f" and `generate_latest` | {statistics.median(took):.1f} | {len(text):,} |"
        )
        # one request counted, a worker's cost: the same route every time
        times = 200_000
        endpoint = endpoints[0]
        start = time.perf_counter()
        for _ in range(times):
            metrics.record(endpoint, 200, 0.004)
        record = (time.perf_counter() - start) / times * 1e6
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = theirs_dir
        requests, duration = values()
        counter, histogram = requests.labels(*labels[0], "2xx"), duration.labels(*labels[0])
        start = time.perf_counter()
        for _ in range(times):
            counter.inc()
            histogram.observe(0.004)
        theirs = (time.perf_counter() - start) / times * 1e6
        print("\n| counting a request, multiprocess mode | us |\n|---|---|")
        print(f"| coyote's `Metrics.record` (a slot of its files) | {record:.2f} |")
        print(f"| prometheus-client's Counter `inc` and Histogram `observe` | {theirs:.2f} |")
        if replaced:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = ours_dir  # as the workers have it
            folded_away(coyote, client, replaced, polls, count_ours)
    finally:
        client.close()
        coyote.close()


def folded_away(
    coyote: Coyote, client: httpx.Client, replaced: int, polls: int, count: Callable[[], None]
) -> None:
    """``replaced`` workers that counted and exited: the scrape with their files, then
    with them folded, and a fold's time."""
    from coyote_mw.ops.metrics import mark_process_dead

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    pids = [in_worker(count) for _ in range(replaced)]
    counted = shown(client)
    before = timed(lambda: client.get("/_coyote/metrics", headers=AUTH), polls)
    took = []
    for pid in pids:
        start = time.perf_counter()
        assert mark_process_dead(pid, directory)
        took.append((time.perf_counter() - start) * 1000)
    after = timed(lambda: client.get("/_coyote/metrics", headers=AUTH), polls)
    # a route's count, every worker's: the same whether folded or not
    assert shown(client) == counted, (shown(client), counted)
    print(f"\n{replaced} more workers each counted one request of every route and exited\n")
    print("| after the replaced workers | ms |\n|---|---|")
    print(f"| `GET /_coyote/metrics`, their files left | {before[0]:.1f} |")
    print(f"| `GET /_coyote/metrics`, each folded (`mark_process_dead`) | {after[0]:.1f} |")
    print(f"| one fold (median) | {statistics.median(took):.1f} |")


def shown(client: httpx.Client) -> float:
    """A route's requests as a scrape shows them."""
    text = client.get("/_coyote/metrics", headers=AUTH).text
    line = re.search(
        r'route="/s0/r0/\{id\}",service="svc0",status="2xx",topology="default"\} (\S+)', text
    )
    assert line is not None
    return float(line.group(1))


def in_worker(work: Callable[[], None]) -> int:
    """``work()`` in a forked process that then exits; its process id."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def leader(routes: int) -> tuple[Coyote, httpx.Client]:
    """A leader with ``routes`` routes, and a client of its WSGI app."""
    coyote = Coyote(token=TOKEN, metrics="token")
    client = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
    services = 10
    per_service = max(1, routes // services)
    for k in range(services):
        paths = [f"/s{k}/r{i}/{{id}}" for i in range(per_service)]
        for instance in ("a", "b"):
            register(client, f"svc{k}", instance, paths)
    return coyote, client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes in multiprocess mode (0: none)"
    )
    parser.add_argument(
        "--replaced", type=int, default=20, help="workers replaced, then folded (multiprocess)"
    )
    parser.add_argument("--multiprocess", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.multiprocess:
        multiprocess(args.routes, args.workers, args.polls, args.replaced)
        return 0
    coyote, client = leader(args.routes)
    try:
        print(f"{len(coyote.table)} routes, 2 instances each\n")
        whole = timed(lambda: client.get(DATA, headers=AUTH), args.polls)
        version = client.get(DATA, params={"routes": ""}, headers=AUTH).json()["routes_version"]
        same = timed(lambda: client.get(DATA, params={"routes": version}, headers=AUTH), args.polls)
        changed_ms, changed_size = [], 0
        for n in range(args.polls):
            register(client, "extra", f"e{n}", [f"/extra{n}"])
            ms, changed_size = timed(
                lambda: client.get(DATA, params={"routes": version}, headers=AUTH), 1
            )
            changed_ms.append(ms)
        print("| dashboard poll | ms | bytes |\n|---|---|---|")
        print(f"| whole (no `routes=`) | {whole[0]:.1f} | {whole[1]:,} |")
        print(f"| `?routes=V`, table unchanged | {same[0]:.1f} | {same[1]:,} |")
        print(
            f"| `?routes=V`, first after a change | {statistics.median(changed_ms):.1f} "
            f"| {changed_size:,} |"
        )
        scrape(coyote, client, args.polls)
    finally:
        client.close()
        coyote.close()
    if args.workers > 0:
        with tempfile.TemporaryDirectory(prefix="coyote-bench-metrics-") as folder:
            argv = [sys.executable, __file__, "--multiprocess", "--workers", str(args.workers)]
            argv += ["--routes", str(args.routes), "--polls", str(args.polls)]
            argv += ["--replaced", str(args.replaced)]
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
            subprocess.run(argv, env=env, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
