"""A process that counts requests in multiprocess mode, for tests (tests/test_metrics_files.py).

    python -m tests.support.metrics_worker DIR SCRIPT

Sets ``PROMETHEUS_MULTIPROC_DIR=DIR`` before prometheus-client is imported, makes a
leader with metrics open (its warnings and errors logged to stderr) and runs the
commands of SCRIPT, one a line, printing what each gives on a line of its own
(flushed):

* ``count METHOD PATTERN SERVICE STATUS SECONDS N``: N requests of that route
  (``count - - - 404 0.5 1``: of no route; a route not in the table, one endpoint
  for its every ``count``);
* ``register PATTERN SERVICE`` / ``deregister SERVICE``: a route of a client, then gone;
* ``clock SECONDS``: the metrics' clock moved on (``Metrics.clock``);
* ``event NAME [LABEL ...]``: an event (``coyote_mw.events``), counted as the leader's are;
* ``files``: the names of this process's files in DIR, as JSON;
* ``scrape``: ``GET /_coyote/metrics``, its body as JSON text on one line;
* ``pid``: the process id;
* ``fold-while-scraping PID``: a scrape during which another process folds worker PID
  (``metrics_files.fold``), started as the scrape reads the metrics' clock and holding
  the directory's lock's gate before the scrape goes on: the fold's result (``True``:
  folded) and the scrape's body, as JSON on one line;
* ``remove-directory``: DIR removed, with what is in it;
* ``full``: no file of the process grows from now (``RLIMIT_FSIZE``: a write past a
  file's end fails, as on a full disk);
* ``hold``: wait until stdin closes (or the test kills the process).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time


def main(directory: str, script: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    import httpx

    from coyote_mw import Client, Coyote, Request, route
    from coyote_mw.routing.endpoint import Endpoint
    from coyote_mw.routing.patterns import parse_pattern

    coyote = Coyote(token="w" * 32, metrics="open")
    metrics = coyote.metrics
    assert metrics is not None and metrics.shared is not None and metrics.shared.multiprocess
    now = [1000.0]
    metrics.clock = lambda: now[0]
    endpoints: dict[tuple[str, str, str], Endpoint] = {}
    http = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://w")
    for line in script.strip().splitlines():
        command, *args = line.split()
        if command == "count":
            method, pattern, service, status, seconds, n = args
            endpoint = None
            if pattern != "-":
                endpoint = endpoints.get((method, pattern, service))
                if endpoint is None:
                    endpoint = Endpoint(
                        method, parse_pattern(pattern), service, "default", False, ()
                    )
                    endpoints[method, pattern, service] = endpoint
            for _ in range(int(n)):
                metrics.record(endpoint, int(status), float(seconds))
            print("counted", flush=True)
        elif command == "register":
            pattern, service = args

            class One(Client):
                @route("GET", pattern)
                def one(self, request: Request) -> str:
                    return "one"

            coyote.register(One(), service=service)
            assert http.get(pattern).status_code == 200
            print("registered", flush=True)
        elif command == "deregister":
            coyote.deregister(service=args[0])
            print("deregistered", flush=True)
        elif command == "clock":
            now[0] += float(args[0])
            print("moved", flush=True)
        elif command == "event":
            from coyote_mw import events

            events.emit(args[0], *args[1:])
            print("emitted", flush=True)
        elif command == "files":
            pid = str(os.getpid())
            print(json.dumps(sorted(n for n in os.listdir(directory) if pid in n)), flush=True)
        elif command == "scrape":
            r = http.get("/_coyote/metrics")
            assert r.status_code == 200, r.text
            print(json.dumps(r.text), flush=True)
        elif command == "fold-while-scraping":
            folder: list[subprocess.Popen[str]] = []

            def folding(
                folder: list[subprocess.Popen[str]] = folder, pid: int = int(args[0])
            ) -> float:
                if not folder:
                    folder.append(_folder(directory, pid))
                return now[0]

            metrics.clock = folding
            r = http.get("/_coyote/metrics")
            metrics.clock = lambda: now[0]
            assert r.status_code == 200, r.text
            folded = folder[0].communicate(timeout=60)[0].strip()
            print(json.dumps([folded, r.text]), flush=True)
        elif command == "remove-directory":
            shutil.rmtree(directory)
            print("removed", flush=True)
        elif command == "pid":
            print(os.getpid(), flush=True)
        elif command == "full":
            resource.setrlimit(
                resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
            )
            print("full", flush=True)
        elif command == "hold":
            print("holding", flush=True)
            sys.stdin.read()
        else:
            raise SystemExit(f"unknown command {command!r}")


def _folder(directory: str, pid: int) -> subprocess.Popen[str]:
    """A process that folds worker ``pid``, once it holds the lock's gate (or is done)."""
    from coyote_mw.ops import metrics_files

    code = "import sys; from coyote_mw.ops.metrics_files import fold; "
    code += "print(fold(sys.argv[1], int(sys.argv[2])))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, directory, str(pid)], stdout=subprocess.PIPE, text=True
    )
    fd = os.open(os.path.join(directory, metrics_files.GATE), os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break  # the fold holds it: it waits for the lock, or folds
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.001)
    finally:
        os.close(fd)
    return proc


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
