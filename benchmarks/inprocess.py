"""The cost of coyote's ASGI middleware: an async handler through coyote vs a native route.

    .venv/bin/python benchmarks/inprocess.py            # or: make bench
    .venv/bin/python benchmarks/inprocess.py --quick

wrk against one uvicorn worker (httptools, uvloop, uvicorn's own access log off) on
127.0.0.1, four ways in one run, rounds interleaved: the handler as a native Starlette
route; as a coyote client behind ``coyote.asgi()`` standalone; the same in front of a
Starlette host app; and standalone again with ``Coyote(metrics="off")``.  coyote's access
log is on (to a file; its line count is shown), and so are its Prometheus metrics (with
prometheus-client installed) but in the last row: the two standalone rows give what
recording them costs, in throughput and in the server's CPU time per request (the
latter moves less when other work shares the machine).

A fifth row gives coyote standalone with its access log off (metrics on): what its
access line costs.  A sixth gives the native route with uvicorn's own access log on, as
uvicorn runs by default (a line a request through the standard logging module, here to a
file by a plain ``FileHandler``): what a native deployment that keeps an access log
pays, beside coyote, which writes its own.  The target is judged with coyote's access
log on, against the native route without any log.

Two more rows serve the handler from a table of 31 routes, as an app of some size has
(``inprocess_apps.ROUTES``; the handler's route in the middle of Starlette's list):
the native Starlette app and coyote standalone, each compared with the other.
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
    UVICORN,
    Server,
    free_port,
    interleaved,
    median,
    parse_wrk_options,
    round_ratio,
    summarise,
    wrk_options,
)

VARIANTS = {
    "native Starlette route": "native_app",
    "coyote, standalone": "coyote_app",
    "coyote, in front of a Starlette host": "coyote_host_app",
    "coyote, standalone, metrics off": "coyote_app_metrics_off",
}
METRICS = ("coyote, standalone", "coyote, standalone, metrics off")  # on, off
# the two apps of 31 routes: coyote's against the native one
ROUTED = {
    "native Starlette app, 31 routes": "native_app_routes",
    "coyote, standalone, 31 routes": "coyote_app_routes",
}
LOGGED = "native Starlette route, uvicorn's access log on"
UNLOGGED = "coyote, standalone, its access log off"


def uvicorn_logging(folder: Path) -> list[str]:
    """uvicorn's options for its own access log, to a file in ``folder``, in its own
    format (its other lines dropped)."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            }
        },
        "handlers": {
            "access": {
                "class": "logging.FileHandler",
                "formatter": "access",
                "filename": str(folder / "uvicorn-access.log"),
            },
            "none": {"class": "logging.NullHandler"},
        },
        "loggers": {
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"handlers": ["none"], "level": "INFO", "propagate": False},
        },
    }
    path = folder / "uvicorn-logging.json"
    path.write_text(json.dumps(config))
    options = [a for a in UVICORN if a not in ("--no-access-log", "warning")]
    at = options.index("--log-level")
    return [*options[:at], *options[at + 1 :], "--log-config", str(path), "--log-level", "info"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    wrk_options(parser)
    args = parse_wrk_options(parser)
    if args is None:
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="coyote-inprocess-bench-"))
    log = tmp / "access.log"
    servers = {}
    for label, app in {**VARIANTS, **ROUTED}.items():
        port = free_port()
        servers[label] = Server(
            label,
            [*UVICORN, "--port", str(port), f"benchmarks.inprocess_apps:{app}"],
            port,
            {"COYOTE_ACCESS_LOG_FILE": str(log)},
        )
    port = free_port()  # no COYOTE_ACCESS_LOG_FILE: no handler, so no line is built
    servers[UNLOGGED] = Server(
        UNLOGGED,
        [*UVICORN, "--port", str(port), "benchmarks.inprocess_apps:coyote_app"],
        port,
    )
    port = free_port()
    servers[LOGGED] = Server(
        LOGGED,
        [*uvicorn_logging(tmp), "--port", str(port), "benchmarks.inprocess_apps:native_app"],
        port,
    )
    results, cpu = interleaved(servers, "/hello/world", b"hello world", args)
    summary = summarise(results)
    native = summary["native Starlette route"]["rps"]
    print(
        f"\n{args.connections} connections, {args.duration:g} s x {args.rounds} rounds; medians\n"
    )
    base = "native Starlette route"
    for label, s in summary.items():
        s["cpu_us"] = median(cpu[label])
        s["ratio"] = round_ratio(results, label, base)
        s["cpu_ratio"] = median([b / a for a, b in zip(cpu[label], cpu[base], strict=True)])
    print(
        "| variant | req/s | vs native (ratio of medians) | vs native (median of the rounds' "
        "ratios) | p50 ms | p99 ms | CPU us/req | native's CPU per request / this one's |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for label, s in summary.items():
        print(
            f"| {label} | {s['rps']:.0f} | {s['rps'] / native:.2f}x | {s['ratio']:.2f}x | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['cpu_us']:.1f} | {s['cpu_ratio']:.2f}x |"
        )
    ok = all(
        s["ratio"] >= 1.0
        for label, s in summary.items()
        if "coyote" in label and label != UNLOGGED and label not in ROUTED
    )
    print(
        "\ntarget: coyote >= 1.0x the native route (median of the rounds' ratios), access log "
        f"on: {'PASS' if ok else 'FAIL'}"
    )
    theirs_app, ours_app = ROUTED
    routed = round_ratio(results, ours_app, theirs_app)
    print(
        f"with 31 routes: coyote standalone {routed:.2f}x the native Starlette app "
        f"(median of the rounds' ratios; {summary[ours_app]['rps']:.0f} against "
        f"{summary[theirs_app]['rps']:.0f} req/s), access log on: "
        f"{'PASS' if routed >= 1.0 else 'FAIL'}"
    )
    # each round's two standalone runs side by side (a minute apart at most), then the
    # median of those ratios: steadier than the ratio of medians when the load moves
    rps = median([a.rps / b.rps for a, b in zip(*(results[v] for v in METRICS), strict=True)])
    cpu_ratio = median([a / b for a, b in zip(*(cpu[v] for v in METRICS), strict=True)])
    verdict = "PASS" if rps >= 0.95 else "FAIL"
    print(
        f"metrics on / off, median of the rounds' ratios: {rps:.3f}x the throughput "
        f"(target >= 0.95: {verdict}), {cpu_ratio:.3f}x the CPU time per request"
    )
    lines = sum(1 for _ in log.open()) if log.exists() else 0
    theirs = tmp / "uvicorn-access.log"
    logged = sum(1 for _ in theirs.open()) if theirs.exists() else 0
    print(f"coyote access log: {lines} lines; uvicorn's (the row with it on): {logged} lines")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
