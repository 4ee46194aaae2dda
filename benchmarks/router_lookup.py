"""Route lookup: coyote's matcher against Falcon, Starlette and Werkzeug on one route set.

    .venv/bin/python benchmarks/router_lookup.py            # or: make bench
    .venv/bin/python benchmarks/router_lookup.py --quick

For 10, 100, 1,000 and 10,000 routes (a third static, a third ``/api/v{i}/items/{id:int}``,
a third ``/users{i}/{name}/profile``), it times five lookups with each router's own API:

  static early  the first static route
  static late   the last static route
  param hit     the last ``.../items/{id:int}`` route, cycling through 1,000 ids
  param mid     the last ``/users{i}/{name}/profile`` route, cycling through 1,000 names
  miss          1,000 distinct paths no route takes (``/no/such/route/{n}``)

Every path is a new string object when it is looked up, as a request's path is (so its
hash is not cached from an earlier lookup).  Every router gets the same, already
normalised paths and must give the same answers first (the script fails if not);
coyote's canonicalisation of a raw path is timed on its own line.

coyote keeps a bounded cache of recent lookups per table snapshot (4,096 entries), which
the 1,000 paths of a case fit in: the ``coyote`` column is a cached lookup
(``RouteTable.match``), ``coyote cold`` the same lookup with the cache bypassed
(``Snapshot.lookup``, what ``match`` runs for a path it has not cached).  Falcon
compiles its router to Python code; Starlette tries its routes' regexes in turn;
Werkzeug matches with its state machine.

``--count CASE --router NAME --repeat K`` only runs K lookups of one case with one router
(at the first of ``--sizes``), for counting instructions: run it under
``valgrind --tool=callgrind`` with two values of K and divide the difference by theirs.

It also times how long one registration into the 10,000-route table takes to be visible
to a lookup.  Timings are medians of batches, interleaved across routers; ratios > 1
mean coyote is faster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon.routing
from starlette.routing import Match as StarletteMatch
from starlette.routing import Route as StarletteRoute
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from coyote_mw.http.paths import canonicalize
from coyote_mw.routing.table import RouteTable

CASES = ("static early", "static late", "param hit", "param mid", "miss")
TARGET_CASES = ("static early", "static late", "param hit", "miss")
ROUTERS = ("coyote", "coyote cold", "falcon", "starlette", "werkzeug")
DISTINCT = 1000  # values cycled through in the param and miss cases


def route_set(n: int) -> list[str]:
    patterns = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            patterns.append(f"/static{i}/page")
        elif kind == 1:
            patterns.append(f"/api/v{i}/items/{{id:int}}")
        else:
            patterns.append(f"/users{i}/{{name}}/profile")
    return patterns


def cases(patterns: list[str]) -> dict[str, list[str]]:
    """The paths each case cycles through."""
    statics = [p for p in patterns if "{" not in p]
    ints = [p for p in patterns if "{id:int}" in p]
    names = [p for p in patterns if "{name}" in p]
    out = {"static early": [statics[0]], "static late": [statics[-1]]}
    out["param hit"] = [ints[-1].replace("{id:int}", str(k)) for k in range(DISTINCT)]
    if names:
        out["param mid"] = [names[-1].replace("{name}", f"user{k}") for k in range(DISTINCT)]
    out["miss"] = [f"/no/such/route/{k}" for k in range(DISTINCT)]
    return out


def build(patterns: list[str]) -> dict[str, Callable[[str], str | None]]:
    """One lookup function per router: path -> matched template, or None."""
    table = RouteTable()
    table.register("bench", [("GET", p) for p in patterns], lambda r: None)

    def coyote(path: str) -> str | None:
        m = table.match("default", "GET", path)
        return m.endpoint.pattern if m is not None else None

    snapshot = table._snapshots["default"]

    def coyote_cold(path: str) -> str | None:
        m = snapshot.lookup("GET", path)
        return m.endpoint.pattern if m is not None else None

    fal = falcon.routing.CompiledRouter()
    for p in patterns:
        fal.add_route(p, _Resource(p))
    fal.find("/warm-up")  # compiles the router

    def falcon_find(path: str) -> str | None:
        found = fal.find(path)
        return found[0].template if found is not None else None

    star = [StarletteRoute(p, _endpoint, methods=["GET"]) for p in patterns]
    base_scope: dict[str, Any] = {"type": "http", "method": "GET", "root_path": ""}

    def starlette(path: str) -> str | None:
        scope = {**base_scope, "path": path}
        for route in star:
            match, _ = route.matches(scope)
            if match is StarletteMatch.FULL:
                return route.path
        return None

    wmap = Map([Rule(_werkzeug_rule(p), endpoint=p, methods=["GET"]) for p in patterns])
    adapter = wmap.bind("localhost")

    def werkzeug(path: str) -> str | None:
        try:
            endpoint, _ = adapter.match(path, method="GET")
        except NotFound:
            return None
        return str(endpoint)

    return {
        "coyote": coyote,
        "coyote cold": coyote_cold,
        "falcon": falcon_find,
        "starlette": starlette,
        "werkzeug": werkzeug,
    }


class _Resource:
    def __init__(self, template: str) -> None:
        self.template = template

    def on_get(self, req: Any, resp: Any) -> None:  # falcon wants a responder
        pass


async def _endpoint(request: Any) -> None:
    pass


def _werkzeug_rule(pattern: str) -> str:
    return pattern.replace("{id:int}", "<int:id>").replace("{name}", "<name>")


def fresh(path: str) -> str:
    """An equal string that is a new object, its hash not yet computed."""
    return path.encode().decode()


def time_lookup(fn: Callable[[str], Any], paths: list[str], budget: float) -> float:
    """Median ns per lookup over batches cycling through ``paths``, within ``budget``."""
    start = time.perf_counter_ns()
    fn(fresh(paths[0]))
    once = max(time.perf_counter_ns() - start, 1)
    batch = max(1, min(200, 2_000_000 // once))  # about 2 ms a batch, at most 200 lookups
    cycle = itertools.cycle(paths)
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while (len(samples) < 5 or time.perf_counter() < deadline) and len(samples) < 2000:
        chunk = [fresh(next(cycle)) for _ in range(batch)]
        start = time.perf_counter_ns()
        for path in chunk:
            fn(path)
        samples.append((time.perf_counter_ns() - start) / batch)
    return statistics.median(samples)


def registration_visible_ms(n: int, rounds: int) -> tuple[float, float]:
    """Median ms for one registration into an n-route table to be matched (coyote, falcon)."""
    patterns = route_set(n)
    table = RouteTable()
    table.register("bench", [("GET", p) for p in patterns], lambda r: None)
    ours = []
    for i in range(rounds):
        start = time.perf_counter()
        table.register(f"new{i}", [("GET", f"/fresh{i}/{{x}}")], lambda r: None)
        assert table.match("default", "GET", f"/fresh{i}/y") is not None
        ours.append((time.perf_counter() - start) * 1000)
        table.deregister(service=f"new{i}")
    fal = falcon.routing.CompiledRouter()
    for p in patterns:
        fal.add_route(p, _Resource(p))
    fal.find("/warm-up")
    theirs = []
    for i in range(max(2, rounds // 10)):
        start = time.perf_counter()
        fal.add_route(f"/fresh{i}/{{x}}", _Resource("x"))
        assert fal.find(f"/fresh{i}/y") is not None  # recompiles the whole router
        theirs.append((time.perf_counter() - start) * 1000)
    return statistics.median(ours), statistics.median(theirs)


def count(n: int, case: str, router: str, repeat: int) -> int:
    """``repeat`` lookups and nothing else timed: the paths are made before, always as
    many, so two runs differ by their lookups alone."""
    patterns = route_set(n)
    lookup = build(patterns)[router]
    paths = cases(patterns)[case]
    for path in paths:
        lookup(path)  # (fills the cache for the cached column)
    made = [fresh(p) for p, _ in zip(itertools.cycle(paths), range(20_000), strict=False)]
    for path in made[:repeat]:
        lookup(path)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--count", choices=CASES, help="only run --repeat lookups of a case")
    parser.add_argument("--router", choices=ROUTERS, default="coyote cold")
    parser.add_argument("--repeat", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.count:
        return count(sizes[0], args.count, args.router, args.repeat)
    budget = 0.05 if args.quick else args.budget
    results: dict[int, dict[str, dict[str, float]]] = {}
    for n in sizes:
        patterns = route_set(n)
        routers = build(patterns)
        by_case = cases(patterns)
        for paths in by_case.values():
            for path in paths[:20]:
                answers = {name: fn(path) for name, fn in routers.items()}
                if len(set(answers.values())) != 1:
                    print(f"routers disagree on {path!r} at {n} routes: {answers}", file=sys.stderr)
                    return 1
        for path in itertools.chain(*by_case.values()):
            routers["coyote"](path)  # every path of a case is in the cache from now on
        results[n] = {case: {} for case in by_case}
        for _ in range(2):  # two interleaved passes; keep the better median of each
            for case, paths in by_case.items():
                for name in ROUTERS:
                    ns = time_lookup(routers[name], paths, budget / 2)
                    best = results[n][case].get(name)
                    results[n][case][name] = ns if best is None else min(best, ns)

    print("median ns per lookup (ratio: the peer's time / coyote's; > 1 means coyote is faster)\n")
    print(
        "| routes | case | coyote | coyote cold | falcon | starlette | werkzeug | falcon / coyote "
        "| falcon / cold | starlette / cold | werkzeug / cold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    faster = True
    for n, by_case in results.items():
        for case, t in by_case.items():
            c, cold = t["coyote"], t["coyote cold"]
            if case in TARGET_CASES:
                faster &= t["falcon"] > cold
            print(
                f"| {n:,} | {case} | {c:,.0f} | {cold:,.0f} | {t['falcon']:,.0f} | "
                f"{t['starlette']:,.0f} | {t['werkzeug']:,.0f} | {t['falcon'] / c:.2f}x | "
                f"{t['falcon'] / cold:.2f}x | {t['starlette'] / cold:.1f}x | "
                f"{t['werkzeug'] / cold:.1f}x |"
            )
    plain, messy = ["/api/v7/items/42"], ["/api/%76%37/./items/42"]
    print(
        f"\ncanonicalising a raw path: {plain[0]} (the fast path) "
        f"{time_lookup(canonicalize, plain, budget):.0f} ns, {messy[0]} "
        f"{time_lookup(canonicalize, messy, budget):.0f} ns"
    )
    flat = True
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for column in ("coyote", "coyote cold"):
            print(f"\n{column} lookup({hi:,}) / lookup({lo:,}):", end="")
            for case in results[hi]:
                r = results[hi][case][column] / results[lo][case][column]
                flat &= r <= 1.2
                print(f"  {case} {r:.2f}", end="")
        print()
    ours, theirs = registration_visible_ms(sizes[-1], 10 if args.quick else 40)
    print(
        f"\none registration into {sizes[-1]:,} routes, visible to lookups: coyote {ours:.2f} ms, "
        f"falcon {theirs:.0f} ms (recompiles its router)"
    )

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print("\ntargets:")
    print(
        "  cold lookups faster than Falcon (static early, static late, param hit, miss) "
        f"at every size: {verdict(faster)}"
    )
    print(f"  lookup({sizes[-1]:,}) within 1.2x of lookup({sizes[0]:,}): {verdict(flat)}")
    print(f"  one registration visible within 1 ms: {verdict(ours < 1)}")
    if args.json:
        args.json.write_text(json.dumps({"lookups": results, "register_ms": ours}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
