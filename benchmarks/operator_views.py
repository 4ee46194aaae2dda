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

Prints milliseconds and bytes.  The time is the leader's own work (the view, the JSON
or text) with httpx's WSGI transport around it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=5)
    args = parser.parse_args()
    coyote = Coyote(token=TOKEN, metrics="token")
    client = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://t")
    try:
        services = 10
        per_service = max(1, args.routes // services)
        for k in range(services):
            paths = [f"/s{k}/r{i}/{{id}}" for i in range(per_service)]
            for instance in ("a", "b"):
                register(client, f"svc{k}", instance, paths)
        print(f"{len(coyote.table)} routes, 2 instances each\n")
        whole = timed(lambda: client.get(DATA, headers=AUTH), args.polls)
        version = client.get(DATA, params={"routes": ""}, headers=AUTH).json()["routes_version"]
        same = timed(
            lambda: client.get(DATA, params={"routes": version}, headers=AUTH), args.polls
        )
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
