"""Before and after: the same benchmarked apps from two checkouts, side by side.

    .venv/bin/python benchmarks/ab.py --base ../coyote-before          # in process
    .venv/bin/python benchmarks/ab.py --base ../coyote-before --suite proxy

A change to the request path states its cost as a ratio measured in one sitting: each
app of the suite is started from this checkout ("after") and from ``--base`` ("before",
e.g. ``git worktree add ../coyote-before main``), each under its own checkout's
``.venv`` when it has one (else this one's, with the checkout first on the path), on
the same core; wrk rounds are interleaved so the machine's noise hits both alike.

* ``inprocess``: ``benchmarks/inprocess_apps.py`` - an async handler as a coyote client,
  standalone and in front of a Starlette host, access log on (to a file);
* ``proxy``: ``benchmarks/proxy_apps.py`` - coyote relaying to one upstream (started
  once, from this checkout), access log on;
* ``own``: the same on coyote's own server (``coyote leader --http coyote``, relaying
  without ASGI where it can).

The table gives median requests/s and p99 per app and checkout, after / before of the
medians and the median of the rounds' ratios (the two runs of a round are seconds
apart), and the server's CPU time per request (before / after: above 1, after is cheaper).
Noise on a shared machine is a few percent: repeat a run before believing a smaller
difference.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BIN, ROOT, UVICORN, Server, free_port, interleaved, summarise

SUITES = {
    "inprocess": ("/hello/world", b"hello world", ["coyote_app", "coyote_host_app"]),
    "proxy": ("/hello", b"Hello, World!", ["coyote_gateway"]),
    "own": ("/hello", b"Hello, World!", ["coyote_gateway"]),
}


def bin_of(checkout: Path, name: str) -> str:
    """``name`` (python, uvicorn) from ``checkout``'s own virtualenv when it has one,
    else from this one's."""
    own = checkout / ".venv" / "bin" / name
    return str(own) if own.exists() else str(BIN / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--suite", choices=sorted(SUITES), default="inprocess")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "coyote_mw").is_dir():
        print(f"--base {base}: not a coyote_mw checkout", file=sys.stderr)
        return 2
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk (make bench does it)", file=sys.stderr)
        return 2
    path, expected, apps = SUITES[args.suite]
    module = "inprocess_apps" if args.suite == "inprocess" else "proxy_apps"
    own = args.suite == "own"
    tmp = Path(tempfile.mkdtemp(prefix="coyote-ab-bench-"))
    env = {"COYOTE_ACCESS_LOG_FILE": str(tmp / "access.log")}
    upstream = None
    if args.suite != "inprocess":
        up_port = free_port()
        env["UPSTREAM"] = f"http://127.0.0.1:{up_port}"
        upstream = Server(
            "upstream",
            [
                *UVICORN,
                "--no-proxy-headers",
                "--port",
                str(up_port),
                "benchmarks.proxy_apps:upstream",
            ],
            up_port,
        )
    servers: dict[str, Server] = {}
    for app in apps:
        for side, checkout in (("before", base), ("after", ROOT)):
            port = free_port()
            if own:  # python -m benchmarks.proxy_apps APP PORT: on coyote's own server
                argv = [bin_of(checkout, "python"), "-m", f"benchmarks.{module}", app, str(port)]
            else:
                uvicorn = [bin_of(checkout, "uvicorn"), *UVICORN[1:]]
                argv = [*uvicorn, "--port", str(port), f"benchmarks.{module}:{app}"]
            servers[f"{app} {side}"] = Server(f"{app} {side}", argv, port, env, root=checkout)
    try:
        if upstream is not None:
            upstream.start(path)
        results, cpu = interleaved(servers, path, expected, args)
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(results)
    print(f"\nbefore: {base}\nafter:  {ROOT}")
    print(f"{args.connections} connections, {args.duration:g} s x {args.rounds} rounds; medians\n")
    print(
        "| app | before req/s | after req/s | after / before | median of the rounds' ratios"
        " | CPU us/req before | after | before / after | p99 before | p99 after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for app in apps:
        before, after = f"{app} before", f"{app} after"
        b, a = summary[before], summary[after]
        rounds = median(
            [x.rps / y.rps for x, y in zip(results[after], results[before], strict=True)]
        )
        cb, ca = median(cpu[before]), median(cpu[after])
        print(
            f"| {app} | {b['rps']:.0f} | {a['rps']:.0f} | {a['rps'] / b['rps']:.3f}x"
            f" | {rounds:.3f}x | {cb:.1f} | {ca:.1f} | {cb / ca:.3f}x"
            f" | {b['p99_ms']:.2f} | {a['p99_ms']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
