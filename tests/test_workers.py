"""``coyote leader --workers N``: a supervisor and N worker processes on one port, one
table in a real redis-server, real client processes.

Every process here is started by the test and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.coyote_processes import AUTH, ENV, CoyoteProcesses, Proc, procs
from tests.support.ledger import LedgerUpstream
from tests.support.processes import BIN, ROOT, free_port, until
from tests.support.redis_server import redis_url
from tests.support.tls import tls_files

__all__ = ["procs", "redis_url"]  # the fixtures: real processes, a real redis-server

ACCESS = re.compile(r"\[(\d+)\] INFO coyote_mw\.access: GET (\S+) (\d+) ")


def workers_of(leader: Proc) -> list[int]:
    """The worker pids: the children of the process the test started."""
    assert leader.proc is not None
    pid = leader.proc.pid
    return sorted(int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def served_by(log: Callable[[], str], path: str) -> dict[int, int]:
    """Requests for ``path`` answered 200, by the pid of the worker that logged them."""
    counts: dict[int, int] = {}
    for pid, logged, status in ACCESS.findall(log()):
        if logged == path and status == "200":
            counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def batch(url: str, path: str) -> list[int]:
    """Eight GETs at once, each on a connection of its own: their statuses."""
    with ThreadPoolExecutor(8) as pool:
        get = lambda _: httpx.get(url + path, headers={"connection": "close"}, timeout=10)  # noqa: E731
        return [r.status_code for r in pool.map(get, range(8))]


def spread(url: str, path: str, log: Callable[[], str], workers: list[int]) -> int:
    """Batches until each of ``workers`` has answered ``path`` 200 (a registration takes
    a few ms to reach every worker: a 404 before that is no failure); then, as every
    worker has the route, three more batches all answered 200.  Returns the 200s."""
    sent = 0
    while not set(workers) <= set(served_by(log, path)):
        assert sent < 800, f"not every worker served: {served_by(log, path)} {workers}"
        sent += batch(url, path).count(200)
        until(lambda n=sent: sum(served_by(log, path).values()) >= n, 10, "logged")
    for _ in range(3):
        assert batch(url, path) == [200] * 8
        sent += 8
    return sent


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def _metrics_folder(log: str) -> Path:
    shown = re.search(r"metrics of every worker in (\S+) \(PROMETHEUS_MULTIPROC_DIR\)", log)
    assert shown is not None, log
    return Path(shown.group(1))


@pytest.mark.parametrize("http", ["uvicorn", "coyote"])
def test_two_workers_share_one_port_and_one_table_and_a_scrape_counts_both(
    procs: CoyoteProcesses, redis_url: str, http: str
) -> None:
    leader = procs(
        "leader", "--store", redis_url, "--workers", "2", "--metrics", "open", "--http", http
    )
    until(lambda: len(workers_of(leader)) == 2, 20, "two workers")
    workers = workers_of(leader)
    # a remote client registers through one worker (one connection), and both serve it
    procs("serve-client", "tests.support.remote_apps:Whoami", "--leader", leader.url)
    sent = spread(leader.url, "/whoami", leader.stderr, workers)
    assert set(served_by(leader.stderr, "/whoami")) == set(workers)
    log = leader.stderr()
    for number, pid in enumerate(workers, 1):
        assert f"worker {number} started, pid {pid}" in log or f"pid {pid}" in log
    # whichever worker answers the scrape adds up both workers' counts
    for _ in range(6):
        r = httpx.get(leader.url + "/_coyote/metrics", headers={"connection": "close"})
        assert r.status_code == 200
        assert metric(r.text, "coyote_requests_total", route="/whoami", status="2xx") == sent
    # the supervisor runs no server itself: uvloop is loaded by the workers only
    assert leader.proc is not None
    assert "uvloop" not in Path(f"/proc/{leader.proc.pid}/maps").read_text()
    assert all("uvloop" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)
    folder = _metrics_folder(log)  # a private directory the supervisor made
    assert folder.is_dir() and any(folder.iterdir())
    # SIGTERM to the supervisor: every worker stops, it exits 0, its directory is gone
    leader.proc.send_signal(signal.SIGTERM)
    assert leader.proc.wait(30) == 0
    assert not any(alive(pid) for pid in workers)
    assert not folder.exists()
    assert "supervisor pid" in leader.stderr() and "stopped" in leader.stderr()


def test_the_metrics_folder_of_a_killed_supervisor_is_removed_by_the_next_one(
    procs: CoyoteProcesses, redis_url: str, tmp_path: Path
) -> None:
    # SIGKILL leaves the folder behind (nothing runs to remove it): the next supervisor
    # removes it once no worker of the killed one holds it, and leaves a live one's
    env = {"TMPDIR": str(tmp_path)}
    args = ("leader", "--store", redis_url, "--workers", "2", "--metrics", "open")
    first = procs(*args, env=env)
    until(lambda: len(workers_of(first)) == 2, 20, "two workers")
    orphans = workers_of(first)
    left = _metrics_folder(first.stderr())
    assert left.parent == tmp_path
    first.kill(signal.SIGKILL)
    until(lambda: not any(alive(pid) for pid in orphans), 10, "its workers stopped")
    assert left.is_dir()  # left behind
    elsewhere = tmp_path / "elsewhere"  # a link to a folder that looks abandoned
    elsewhere.mkdir()
    (elsewhere / "keep").touch()
    (tmp_path / "coyote-workers-link").symlink_to(elsewhere)
    older = tmp_path / "coyote-metrics-older"  # an older version's, or an unlocked one
    older.mkdir()
    second = procs(*args, env=env)
    until(lambda: len(workers_of(second)) == 2, 20, "two workers")
    kept = _metrics_folder(second.stderr())
    assert not left.exists()
    assert f"removed {left}, the metrics of a supervisor that is gone" in second.stderr()
    assert (elsewhere / "keep").exists() and "coyote-workers-link" not in second.stderr()
    assert older.is_dir()
    third = procs(*args, env=env)
    until(lambda: len(workers_of(third)) == 2, 20, "two workers")
    assert kept.is_dir() and _metrics_folder(third.stderr()).is_dir()
    assert "removed" not in third.stderr()


# a leader whose ``flock`` fails as it does where the temporary folder's filesystem keeps
# no locks (an NFS mount without its lock daemon: ENOLCK)
NO_LOCKS = """
import errno, fcntl, sys
def flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
fcntl.flock = flock
from coyote_mw.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_supervisor_starts_where_its_metrics_folder_cannot_be_locked(
    redis_url: str, tmp_path: Path
) -> None:
    # the lock only lets a later supervisor clean up after a SIGKILL: without it the
    # supervisor serves as before, says so, and removes its folder when it stops
    port = free_port()
    argv = [str(BIN / "python"), "-c", NO_LOCKS, "leader", "--store", redis_url]
    argv += ["--workers", "2", "--metrics", "open", "--port", str(port)]
    leader = Proc(argv, port, {"TMPDIR": str(tmp_path)}).start()
    proc = leader.proc
    assert proc is not None
    try:
        until(lambda: proc.poll() is not None or len(workers_of(leader)) == 2, 20, "up")
        assert proc.poll() is None, leader.stderr()
        until(lambda: "serving" in leader.stderr(), 20, "a worker serving")
        assert httpx.get(leader.url + "/nothing-here", timeout=5).status_code == 404
        r = httpx.get(leader.url + "/_coyote/metrics", timeout=5)
        assert r.status_code == 200 and 'status="4xx"' in r.text  # counted in the folder
        folder = _metrics_folder(leader.stderr())
        assert "No locks available" in leader.stderr() and "Traceback" not in leader.stderr()
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
        leader.kill(signal.SIGTERM)
        assert proc.returncode == 0, leader.stderr()
        assert not folder.exists()
    finally:
        leader.kill(signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_a_crash_loop_backs_off(
    procs: CoyoteProcesses, redis_url: str
) -> None:
    leader = procs("leader", "--store", redis_url, "--workers", "2")
    until(lambda: len(workers_of(leader)) == 2, 20, "two workers")
    first = workers_of(leader)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    until(lambda: victim not in workers_of(leader) and len(workers_of(leader)) == 2, 20, "new")
    (replacement,) = set(workers_of(leader)) - set(first)
    log = leader.stderr()
    died = rf"worker \d \(pid {victim}\) died with signal SIGKILL after [\d.]+ s: restarting"
    assert re.search(died, log), log
    # the replacement serves, and so does the worker that was not killed
    with LedgerUpstream() as up:
        r = httpx.post(
            leader.url + "/_coyote/registrations",
            headers=AUTH,
            json={
                "service": "ledger",
                "instance": "l1",
                "url": up.url,
                "routes": [{"method": "GET", "path": "/ok"}],
                "ttl": 60,
            },
            timeout=5,
        )
        assert r.status_code == 201, r.text
        sent = spread(leader.url, "/ok", leader.stderr, [replacement, first[1]])
    # killed again at once (it lived less than STABLE s): the next start waits, and says so
    until(lambda: f"pid {replacement}) serving" in leader.stderr(), 20, "replacement ready")
    os.kill(replacement, signal.SIGKILL)
    until(lambda: "restarting in 0.5 s" in leader.stderr(), 20, "backoff")
    again = rf"pid {replacement}\) died with signal SIGKILL .* 2 times in a row"
    assert re.search(again, leader.stderr())
    until(lambda: len(workers_of(leader)) == 2, 20, "replaced again")
    # the requests the killed worker answered are still counted, by whichever scrapes
    for _ in range(4):
        headers = {**AUTH, "connection": "close"}
        r = httpx.get(leader.url + "/_coyote/metrics", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        assert metric(r.text, "coyote_requests_total", route="/ok", status="2xx") == sent
    # ... from the archive the supervisor folded them into: the dead workers' files are
    # gone, the live ones' stay
    folder = _metrics_folder(leader.stderr())
    names = {p.name for p in folder.iterdir()}
    assert "coyote_requests_archive.json" in names
    for pid in (victim, replacement):
        mine = (f"coyote_requests_{pid}.", f"coyote_requests_{pid}_")
        assert not any(n.startswith(mine) for n in names)
    assert f"coyote_requests_{first[1]}.labels" in names


@pytest.mark.parametrize("http", ["uvicorn", "coyote"])
@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c"])
def test_a_request_in_flight_finishes_when_the_leader_is_stopped(
    redis_url: str, tmp_path: Path, stop: str, http: str
) -> None:
    """SIGTERM to the supervisor, or Ctrl-C in a terminal (SIGINT to the whole
    foreground process group, workers too, then SIGTERM from the supervisor): each
    worker finishes what is in flight, then exits 0, and so does the supervisor."""
    port, log = free_port(), tmp_path / "leader.log"
    argv = [str(BIN / "coyote"), "leader", "--store", redis_url, "--workers", "2", "--http", http]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,  # a process group of its own, as a shell's job has
        )
    leader = Proc(argv, port)
    leader.proc = proc
    url = f"http://127.0.0.1:{port}"
    try:
        until(
            lambda: len(re.findall(r"worker \d \(pid \d+\) serving", log.read_text())) == 2,
            30,
            "two workers",
        )
        workers = workers_of(leader)
        with LedgerUpstream() as up:
            r = httpx.post(
                url + "/_coyote/registrations",
                headers=AUTH,
                json={
                    "service": "ledger",
                    "instance": "l1",
                    "url": up.url,
                    "routes": [{"method": "GET", "path": "/pause/{ms}"}],
                    "ttl": 60,
                },
                timeout=5,
            )
            assert r.status_code == 201, r.text
            spread(url, "/pause/0", log.read_text, workers)  # both workers have the route
            answers: list[tuple[int, str]] = []

            def slow() -> None:
                r = httpx.get(url + "/pause/1500", timeout=20)
                answers.append((r.status_code, r.text))

            before = len(up.requests)
            thread = threading.Thread(target=slow)
            thread.start()
            assert len(up.wait_for(before + 1)) > before  # with the upstream: in flight
            if stop == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(30) == 0
            thread.join(20)
        assert answers == [(200, "xy")]
        assert not any(alive(pid) for pid in workers)
        assert log.read_text().count("exited with exit code 0") == 2, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_workers_serve_https(procs: CoyoteProcesses, redis_url: str, tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    leader = Proc(
        [
            str(BIN / "coyote"),
            "leader",
            "--store",
            redis_url,
            "--workers",
            "2",
            "--ssl-certfile",
            str(tls.chain),
            "--ssl-keyfile",
            str(tls.key),
            "--port",
            str(port := free_port()),
        ],
        port,
    ).start()
    procs.started.append(leader)
    url = f"https://127.0.0.1:{port}/_coyote/health"

    def up() -> bool:
        try:
            return httpx.get(url, verify=tls.trusting(), timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    until(up, 20, "https up")
    until(lambda: len(workers_of(leader)) == 2, 20, "two workers")
    assert "on https://127.0.0.1" in leader.stderr()


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "coyote"), *argv],
        cwd=ROOT,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--workers", "2"], {}, "--workers 2 needs --store redis://"),
        (["--workers", "0"], {}, "--workers 0: use 1 to 64 worker processes"),
        (["--workers", "65", "--store", "redis://127.0.0.1:9/0"], {}, "--workers 65: use 1 to 64"),
        ([], {"COYOTE_WORKERS": "3"}, "--workers 3 needs --store"),
        ([], {"COYOTE_WORKERS": "many"}, "COYOTE_WORKERS='many' is not a whole number"),
        ([], {"COYOTE_WORKERS": "-1"}, "COYOTE_WORKERS=-1: use 1 to 64"),
        (["--graceful-timeout", "-1"], {}, "--graceful-timeout -1: seconds, 0 or more"),
    ],
)
def test_bad_worker_counts_and_timeouts_are_one_line_and_exit_2(
    argv: list[str], env: dict[str, str], says: str
) -> None:
    done = run("leader", "--port", str(free_port()), *argv, env={"COYOTE_STORE": "", **env})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr


def test_workers_from_the_toml_file(tmp_path: Path) -> None:
    from coyote_mw.cli.main import parse

    config = tmp_path / "leader.toml"
    config.write_text('workers = 4\nstore = "redis://127.0.0.1:6379/0"\n')
    assert parse(["leader", "--config", str(config)]).workers == 4
    assert parse(["leader", "--config", str(config), "--workers", "2"]).workers == 2
    config.write_text("workers = 1\n")
    done = run("leader", "--config", str(config), "--workers", "2", "--port", "1")
    assert done.returncode == 2 and "--workers 2 needs --store" in done.stderr


def test_a_first_worker_that_cannot_start_stops_the_supervisor_with_one_line(
    redis_url: str,
) -> None:
    # a setting only the leader itself refuses (in the worker, after the fork)
    done = run(
        "leader",
        "--store",
        redis_url,
        "--workers",
        "3",
        "--prefix",
        "no-slash",
        "--port",
        str(free_port()),
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "coyote leader: error:" in line]
    assert len(errors) == 1, done.stderr  # said once, by the first worker, not by three
    assert "no-slash" in errors[0]
    assert "before it served: stopping" in done.stderr


def test_the_help_says_what_workers_need_and_what_is_per_worker() -> None:
    done = run("leader", "--help")
    text = " ".join(done.stdout.split())
    assert "--workers N" in text and "$COYOTE_WORKERS" in text
    assert "more than 1 needs --store" in text and "are then per worker" in text
    assert "--graceful-timeout SECONDS" in text
