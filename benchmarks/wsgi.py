"""The cost of coyote's WSGI middleware: a handler through coyote vs a native Flask route.

    .venv/bin/python benchmarks/wsgi.py                   # gthread worker, 4 threads
    .venv/bin/python benchmarks/wsgi.py --worker sync     # gunicorn's sync worker
    .venv/bin/python benchmarks/wsgi.py --quick

wrk against one gunicorn worker on 127.0.0.1, three ways in one run, rounds
interleaved: ``GET /hello/{name}`` as a native Flask route; as a coyote route (a
client's ``def`` handler, the same work) in front of that Flask app
(``coyote.wsgi(flask_app)``); and as the Flask route again behind coyote, which has
routes of its own but none for this path (the fall-through: coyote's lookup, then
Flask).  coyote's access log is on, to a file, and its Prometheus metrics are recorded
(prometheus-client is in the bench environment).  A gthread worker keeps connections
alive; the sync worker closes each one after its answer (``Connection: close``), so
there every request is a new connection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BIN,
    Server,
    free_port,
    interleaved,
    parse_wrk_options,
    round_ratio,
    summarise,
    wrk_options,
)

VARIANTS = {
    "native Flask route": "native_app",
    "coyote route, in front of Flask": "coyote_app",
    "Flask route, through coyote (fall-through)": "fallthrough_app",
}


def gunicorn(worker: str, threads: int, port: int, app: str) -> list[str]:
    argv = [str(BIN / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}"]
    argv += ["--log-level", "warning", "--worker-class", worker]
    if worker == "gthread":
        argv += ["--threads", str(threads)]
    return [*argv, f"benchmarks.wsgi_apps:{app}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("gthread", "sync"), default="gthread")
    parser.add_argument("--threads", type=int, default=4, help="gthread worker threads")
    wrk_options(parser)
    args = parse_wrk_options(parser)
    if args is None:
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="coyote-wsgi-bench-"))
    log = tmp / "access.log"
    servers = {}
    for label, app in VARIANTS.items():
        port = free_port()
        servers[label] = Server(
            label,
            gunicorn(args.worker, args.threads, port, app),
            port,
            {"COYOTE_ACCESS_LOG_FILE": str(log)},
        )
    # (CPU times would be the gunicorn master's, not its worker's: not shown)
    results, _ = interleaved(servers, "/hello/world", b"hello world", args, cpu_shown=False)
    summary = summarise(results)
    native = summary["native Flask route"]["rps"]
    for label, s in summary.items():
        s["ratio"] = round_ratio(results, label, "native Flask route")
    worker = f"gthread, {args.threads} threads" if args.worker == "gthread" else "sync"
    print(
        f"\none gunicorn worker ({worker}), {args.connections} connections, "
        f"{args.duration:g} s x {args.rounds} rounds; medians\n"
    )
    print("| variant | req/s | vs native | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for label, s in summary.items():
        print(
            f"| {label} | {s['rps']:.0f} | {s['ratio']:.2f}x | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} |"
        )
    routed = summary["coyote route, in front of Flask"]["ratio"]
    verdict = "PASS" if routed >= 1 else "FAIL"
    print(f"\ntarget: the coyote route >= 1.0x the native route (median ratio): {verdict}")
    lines = sum(1 for _ in log.open()) if log.exists() else 0
    print(f"coyote access log: {lines} lines (the native route at {native:.0f} req/s wrote none)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
