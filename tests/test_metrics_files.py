"""Multiprocess mode's storage of the request counts (``coyote_mw.ops.metrics_files``):
the files themselves, then real worker processes counting into one directory - summed
by whichever scrapes, kept when a worker is killed, freed when routes leave."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from coyote_mw.ops import metrics_files
from coyote_mw.ops.metrics import mark_process_dead
from coyote_mw.ops.metrics_files import (
    ARCHIVE,
    SLOT_VALUES,
    SLOTS,
    SeriesFiles,
    fold,
    locked,
    read_series,
)
from tests.support.processes import ROOT
from tests.test_metrics import value

ITEMS = ("default", "GET", "/items/{id:int}", "shop")
NO_ROUTE = ("", "", "", "")


def labels_of(n: int) -> tuple[str, str, str, str]:
    return ("default", "GET", f"/r{n}", "svc")


# -- the files ------------------------------------------------------------------------


def python(
    script: str, *args: str | Path, under: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``script`` run by a Python process of its own (``under`` a command, if given)
    with ``args``; it must exit 0 (its output is returned)."""
    argv = [*under, sys.executable, "-c", script, *map(str, args)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def small_disk(directory: Path) -> list[str]:
    """The command to run a process under with ``directory`` a 400 KiB tmpfs of its own
    (as /dev/shm), in a mount namespace of its own; the test skipped where there is none."""
    mount = 'mount -t tmpfs -o size=400k tmpfs "$1" && shift && exec "$@"'
    argv = ["unshare", "-rm", "sh", "-c", mount, "sh", str(directory)]
    if subprocess.run([*argv, "true"], capture_output=True).returncode != 0:
        pytest.skip("no tmpfs of its own here (unshare -rm, mount)")
    return argv


def test_counts_are_read_back_by_labels_across_several_slot_files(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    many = 2 * SLOTS + 3  # three .slots files
    for n in range(many):
        slot = files.slot(labels_of(n))
        slot.counts[2] += n
        slot.buckets[n % 16] += 1
        slot.sums[0] += n * 0.25
    read = read_series(str(tmp_path))
    assert len(read) == many
    for n in (0, 1, SLOTS - 1, SLOTS, 2 * SLOTS + 2):
        counts, buckets, total = read[labels_of(n)]
        assert counts == [0, 0, n, 0, 0, 0]
        assert buckets == [1 if i == n % 16 else 0 for i in range(16)]
        assert total == n * 0.25
    assert sorted(p.name for p in tmp_path.glob("*.slots")) == [
        f"coyote_requests_{os.getpid()}_{i}.slots" for i in range(3)
    ]


def test_a_freed_slot_counts_nothing_and_goes_to_the_next_new_route(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    old = files.slot(labels_of(1))
    old.counts[2] += 5
    old.sums[0] += 1.5
    kept = files.slot(labels_of(2))
    kept.counts[4] += 1
    files.free(old)
    assert set(read_series(str(tmp_path))) == {labels_of(2)}  # freed: not read
    new = files.slot(labels_of(3))
    assert new.index == old.index  # given again before the files grow
    assert list(new.counts) == [0] * 6 and new.sums[0] == 0.0  # none of the old counts
    new.counts[5] += 2
    read = read_series(str(tmp_path))
    assert read[labels_of(3)] == ([0, 0, 0, 0, 0, 2], [0] * 16, 0.0)
    assert read[labels_of(2)][0] == [0, 0, 0, 0, 1, 0]


def test_a_freed_slot_held_still_adds_to_no_other_routes(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    old = files.slot(labels_of(1))
    files.free(old)  # a request still holds it (Metrics.record, before its lock)
    new = files.slot(labels_of(2))
    assert new.index == old.index
    old.counts[2] += 5
    old.buckets[3] += 5
    old.sums[0] += 2.5
    assert read_series(str(tmp_path)) == {labels_of(2): ([0] * 6, [0] * 16, 0.0)}


def test_a_slot_two_leaders_count_in_is_freed_by_the_last_of_them(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    first, second = files.slot(ITEMS), files.slot(ITEMS)  # two leaders, one process
    assert first.index == second.index
    first.counts[2] += 1
    second.counts[2] += 1
    files.free(first)
    assert read_series(str(tmp_path))[ITEMS][0][2] == 2  # the other still counts in it
    files.free(second)
    assert read_series(str(tmp_path)) == {}


def test_the_labels_file_stays_bounded_as_routes_come_and_go(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    steady = [files.slot(labels_of(n)) for n in range(10)]
    for n in range(10, 10 + 20 * SLOTS):  # routes that come, count once, and go
        slot = files.slot(labels_of(n))
        slot.counts[2] += 1
        files.free(slot)
    for slot in steady:
        slot.counts[2] += 7
    path = tmp_path / f"coyote_requests_{os.getpid()}.labels"
    assert len(path.read_bytes().splitlines()) <= 2 * 10 + SLOTS + 1
    assert len(list(tmp_path.glob("*.slots"))) == 1  # slots given again: no growth
    read = read_series(str(tmp_path))
    assert set(read) == {labels_of(n) for n in range(10)}
    assert all(counts == [0, 0, 7, 0, 0, 0] for counts, _, _ in read.values())


def test_a_slot_whose_line_could_not_be_written_is_neither_lost_nor_held(
    tmp_path: Path,
) -> None:
    # a full disk (RLIMIT_FSIZE: no file grows) while a route is given a slot
    script = """
import resource, sys
from coyote_mw.ops.metrics_files import SeriesFiles, read_series
files = SeriesFiles(sys.argv[1])
files.free(files.slot(("default", "GET", "/gone", "svc")))  # slot 0 free
limit = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, limit[1]))
for _ in range(3):
    try:
        files.slot(("default", "GET", "/new", "svc"))
    except OSError:
        pass
    else:
        raise SystemExit("written")
resource.setrlimit(resource.RLIMIT_FSIZE, limit)
slot = files.slot(("default", "GET", "/new", "svc"))
print(slot.index)
files.free(slot)  # its one user
print(len(read_series(sys.argv[1])))
"""
    out = python(script, tmp_path)
    assert out.stdout.split() == ["0", "0"]  # the free slot given; then freed


FULL_DISK = """
import logging, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory = sys.argv[1]
logging.basicConfig()
from coyote_mw import Coyote
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.patterns import parse_pattern
metrics = Coyote(token="w" * 32, metrics="open").metrics
routes = [Endpoint("GET", parse_pattern(f"/r{n}"), "s", "default", False, ()) for n in range(60)]
metrics.record(routes[0], 200, 0.1)
metrics.render()
fd = os.open(os.path.join(directory, "fill"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError:
    os.close(fd)
for endpoint in routes:
    metrics.record(endpoint, 200, 0.1)
from coyote_mw import events
events.emit("registered", "default", "shop")  # its slot cannot be given either
text = metrics.render()[0].decode()
print(text.count('status="2xx"'))
print(text.count('coyote_registrations_total{service="shop",topology="default"} 1.0'))
"""


def test_a_disk_that_fills_up_kills_no_worker(tmp_path: Path) -> None:
    # a disk of its own, filled while the worker runs, then new routes are counted:
    # their slots' pages were never written (a write to a page the disk has no room
    # for is SIGBUS)
    out = python(FULL_DISK, tmp_path, under=small_disk(tmp_path))
    assert out.stdout.split() == ["60", "1"]  # its own scrape shows every route, the event
    said = [line for line in out.stderr.splitlines() if "could not write" in line]
    # once for its requests, once for its events
    assert len(said) == 2, out.stderr
    assert all("No space left on device" in line for line in said), out.stderr


GAUGES_ON_A_FULL_DISK = """
import logging, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory = sys.argv[1]
logging.basicConfig()
from coyote_mw import Coyote
from coyote_mw.ops.metrics import SAMPLE_INTERVAL
import time
metrics = Coyote(token="w" * 32, metrics="open").metrics
fd = os.open(os.path.join(directory, "fill"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError:
    pass
# no gauge file yet: the first sample makes them, on a full disk, at the scrape and in
# the sampler's thread; then room again: the next sample writes them
text = metrics.render()[0].decode()
time.sleep(2.5 * SAMPLE_INTERVAL)
print("coyote_relay_concurrency{" in text)
os.close(fd)
os.unlink(os.path.join(directory, "fill"))
text = metrics.render()[0].decode()
print('coyote_relay_concurrency{topology="default"}' in text)
for name in sorted(os.listdir(directory)):  # each with the blocks of its whole size
    if name != "fill" and not name.startswith("coyote_"):  # (no temporary file left)
        st = os.stat(os.path.join(directory, name))
        print(name.split("_")[1], st.st_size, st.st_blocks * 512 >= st.st_size)
"""


def test_gauges_on_a_full_disk_kill_no_worker(tmp_path: Path) -> None:
    # prometheus-client maps a new gauge file sparse: on a disk with no room, its first
    # write to it would be SIGBUS; coyote gives the file its blocks first (said once)
    out = python(GAUGES_ON_A_FULL_DISK, tmp_path, under=small_disk(tmp_path))
    lines = out.stdout.splitlines()
    assert lines == ["False", "True", "livesum 65536 True"]  # no gauges, then the gauges
    said = [line for line in out.stderr.splitlines() if "could not write" in line]
    assert len(said) == 1, out.stderr
    assert "No space left on device" in out.stderr, out.stderr
    assert "writing this worker's metrics again" in out.stderr, out.stderr


GAUGES_GROWN = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory = sys.argv[1]
from prometheus_client import Gauge
from coyote_mw.ops import metrics
from coyote_mw.ops.metrics import GAUGES, _reserve_gauge_files
asked = []
def fallocate(fd, mode, offset, length):  # libc's, its lengths noted
    asked.append(length)
    return real(fd, mode, offset, length)
real = metrics._find_fallocate()
metrics._fallocate = fallocate
name = "coyote_instances_ejected"
text, names, mode = GAUGES[name]
gauge = Gauge(name, text, names, multiprocess_mode=mode, registry=None)
path = os.path.join(directory, f"gauge_livemax_{os.getpid()}.db")
filed = {mode: set()}
def sample(labels):  # as _Sampler.write: reserved, written, noted
    _reserve_gauge_files({name: labels}, filed)
    for values in labels:
        gauge.labels(*values).set(1)
    filed[mode].update((name, values) for values in labels)
    st = os.stat(path)
    print(st.st_size, st.st_blocks * 512 >= st.st_size)
first = [("default", "service-0")]
sample(first)  # a new file: prometheus-client opens it at 64 KiB
# 1,500 more at once: prometheus-client doubles it three times, each time within the
# blocks reserved beyond its end (a truncate that made the file its own size would have
# given back the blocks past it, and the next doubling would map them sparse)
sample(first + [("default", f"service-{n}") for n in range(1, 1501)])
sample(first + [("default", f"service-{n}") for n in range(1, 1501)])  # the same again
print(asked)  # (the same again: reserved before, the file is not touched)
"""


def test_gauge_files_get_their_blocks_before_prometheus_client_grows_them(
    tmp_path: Path,
) -> None:
    out = python(GAUGES_GROWN, tmp_path).stdout.splitlines()
    assert out[:3] == ["65536 True", "524288 True", "524288 True"]
    # blocks for what the file grows to, not for its series twice (they are in it)
    assert out[3] == "[65536, 524288]"


def test_a_gauge_file_that_cannot_have_its_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    from coyote_mw.ops import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    series = {"coyote_routes": [("default",)]}
    path = tmp_path / f"gauge_livemax_{os.getpid()}.db"

    def refuse(code: int) -> Any:
        def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
            ctypes.set_errno(code)
            return -1

        return fallocate

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # no room: the sample skipped
        monkeypatch.setattr(metrics, "_fallocate", refuse(code))
        with pytest.raises(OSError) as raised:
            metrics._reserve_gauge_files(series, {})
        assert raised.value.errno == code
        assert os.listdir(tmp_path) == []  # no file for prometheus-client, no other
    # a file system that cannot reserve blocks: made and written as prometheus-client
    # makes them (sparse)
    monkeypatch.setattr(metrics, "_fallocate", refuse(errno.EOPNOTSUPP))
    metrics._reserve_gauge_files(series, {})
    assert os.listdir(tmp_path) == [path.name]
    assert path.stat().st_size == 65536
    monkeypatch.setattr(metrics, "_fallocate", None)  # found again: libc's
    metrics._reserve_gauge_files(series, {})
    st = path.stat()
    assert st.st_size == 65536 and st.st_blocks * 512 >= 65536  # its holes filled


def test_a_gauge_file_made_meanwhile_is_reserved_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coyote_mw.ops import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    path = tmp_path / f"gauge_livemax_{os.getpid()}.db"
    link = os.link

    made: list[int] = []

    def made_first(source: str, target: str) -> None:  # prometheus-client, just before
        with open(target, "ab") as f:
            f.truncate(65536)
        made.append(os.stat(target).st_ino)
        link(source, target)  # FileExistsError

    monkeypatch.setattr(os, "link", made_first)
    metrics._reserve_gauge_files({"coyote_routes": [("default",)]}, {})
    st = path.stat()  # its file, kept (not ours put in its place), with its blocks
    assert made == [st.st_ino]
    assert st.st_size == 65536 and st.st_blocks * 512 >= 65536
    assert os.listdir(tmp_path) == [path.name]


def test_gauge_files_where_there_are_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    from coyote_mw.ops import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    path = tmp_path / f"gauge_livemax_{os.getpid()}.db"

    def no_links(source: str, target: str) -> None:  # as vfat answers
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    libc = metrics._find_fallocate()
    full = [True]

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        if full[0]:
            ctypes.set_errno(errno.ENOSPC)
            return -1
        return int(libc(fd, mode, offset, length))

    monkeypatch.setattr(metrics, "_fallocate", fallocate)
    series = {"coyote_routes": [("default",)]}
    with pytest.raises(OSError, match="No space left"):  # its temporary file: no room
        metrics._reserve_gauge_files(series, {})
    assert os.listdir(tmp_path) == []
    full[0] = False
    metrics._reserve_gauge_files(series, {})  # made in place, with its blocks
    st = path.stat()
    assert os.listdir(tmp_path) == [path.name]
    assert st.st_size == 65536 and st.st_blocks * 512 >= 65536


def test_a_gauge_file_a_dead_worker_was_making_is_removed(tmp_path: Path) -> None:
    stray = tmp_path / "gauge_livesum_4242.db.4242.140000.new"
    stray.write_bytes(b"")
    other = tmp_path / "gauge_livesum_4243.db.4243.140000.new"  # a live worker's
    other.write_bytes(b"")
    assert mark_process_dead(4242, str(tmp_path))
    assert not stray.exists() and other.exists()


def test_gauge_files_within_the_file_size_limit(tmp_path: Path) -> None:
    # RLIMIT_FSIZE, which not every file system checks on a reservation beyond the end
    script = """
import os, resource, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from coyote_mw.ops.metrics import _reserve_gauge_files
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, resource.RLIM_INFINITY))
labels = [("default", f"service-{n}") for n in range(int(sys.argv[2]))]
try:
    _reserve_gauge_files({"coyote_instances_ejected": labels}, {})
except OSError as exc:
    print(exc.errno)
else:
    print("reserved")
"""
    assert python(script, tmp_path, 100).stdout.split() == ["reserved"]  # 64 KiB
    assert python(script, tmp_path, 1000).stdout.split() == [str(errno.EFBIG)]


def test_lines_cut_short_or_not_ours_are_not_read(tmp_path: Path) -> None:
    files = SeriesFiles(str(tmp_path))
    files.slot(ITEMS).counts[2] += 3
    path = tmp_path / f"coyote_requests_{os.getpid()}.labels"
    with path.open("ab") as f:
        f.write(b'"not a list"\n[1, 2, 3, 4, 5]\n[-1, "a", "b", "c", "d"]\n{}\n\xff\n')
        f.write(b'[7, "default", "GET", "/cut", "sh')  # a line being written
    (tmp_path / "coyote_requests_99999999.labels").write_bytes(b'[0,"a","b","c","d"]\n')
    (tmp_path / "coyote_requests_notapid.labels").write_bytes(b'[0,"a","b","c","d"]\n')
    assert read_series(str(tmp_path)) == {ITEMS: ([0, 0, 3, 0, 0, 0], [0] * 16, 0.0)}


def test_a_process_id_used_again_goes_on_in_its_slots(tmp_path: Path) -> None:
    gone = SeriesFiles(str(tmp_path))  # a process that died: its files stay
    gone.slot(ITEMS).counts[2] += 4
    gone.free(gone.slot(labels_of(1)))  # a free slot in its files
    gone.close()
    path = tmp_path / f"coyote_requests_{os.getpid()}.labels"
    with path.open("ab") as f:  # a line that is not ours: a slot past any bound
        f.write(b'[4000000000,"default","GET","/huge","svc"]\n')
    again = SeriesFiles(str(tmp_path))  # the same pid, as after a wrap-around
    slot = again.slot(ITEMS)
    slot.counts[2] += 1
    assert again.slot(labels_of(2)).index == 1  # its free slot, given again
    assert read_series(str(tmp_path))[ITEMS][0][2] == 5
    assert SLOT_VALUES == 6 + 16 + 1


# -- real worker processes ------------------------------------------------------------


class Worker:
    """A ``tests.support.metrics_worker`` process that ran ``script`` and holds."""

    def __init__(self, directory: Path, script: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.metrics_worker",
                str(directory),
                script + "\nhold",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        for _ in script.strip().splitlines():
            self.out.append(self._line())
        assert self._line() == "holding"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the worker ended: {self.proc.wait(10)}"
        return line.rstrip("\n")

    def end(self, sig: int | None = None) -> int:
        if sig is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        else:
            self.proc.send_signal(sig)
        return self.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)


def run(directory: Path, script: str, log: list[str] | None = None) -> list[str]:
    """A worker process that runs ``script`` and exits: what it printed (and what it
    logged, added to ``log``)."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.metrics_worker", str(directory), script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    if log is not None:
        log.extend(out.stderr.splitlines())
    return out.stdout.splitlines()


def scraped(directory: Path) -> str:
    text = json.loads(run(directory, "scrape")[-1])
    assert isinstance(text, str)
    return text


def test_a_workers_events_are_counted_in_its_own_files_and_folded_with_them(
    tmp_path: Path,
) -> None:
    # prometheus-client keeps every worker's counter_<pid>.db for good (its counts
    # must outlive it): a server that replaces its workers (gunicorn's max_requests)
    # would keep one for every worker that ever counted an event
    quiet = run(tmp_path, "pid\ncount GET /items/{id:int} shop 200 0.25 3\nscrape\nfiles")
    own = json.loads(quiet[-1])  # as it ran: what mark_process_dead removes or folds
    assert own and all(n.startswith(("coyote_requests_", "gauge_live")) for n in own), own
    text = json.loads(quiet[-2])
    assert value(text, "coyote_store_outages_total") == 0  # shown all the same
    assert "coyote_instance_ejections_total" not in text  # labelled: none yet, as one process
    # a worker that counts events counts them in its own slots, summed with the others'
    first = run(
        tmp_path, "pid\nevent store_unreachable\nevent ejected gateway\nevent ejected gateway"
    )
    second = run(tmp_path, "pid\nevent store_unreachable\nevent registered default shop\nfiles")
    kinds = ("coyote_requests_", "coyote_events_", "gauge_live")
    assert all(n.startswith(kinds) for n in json.loads(second[-1]))
    assert not list(tmp_path.glob("counter_*"))
    text = scraped(tmp_path)
    assert value(text, "coyote_store_outages_total") == 2
    assert value(text, "coyote_instance_ejections_total", cause="gateway") == 2
    assert value(text, "coyote_registrations_total", topology="default", service="shop") == 1
    assert text.count("# TYPE coyote_store_outages_total counter") == 1
    assert "event" not in text.partition("# HELP coyote_request_duration_seconds")[0]
    # folded once they have exited: no file of theirs is left, and their counts stay
    pids = [quiet[0], first[0], second[0]]
    for pid in pids:
        assert mark_process_dead(int(pid), str(tmp_path))
    assert not [n for n in os.listdir(tmp_path) if any(pid in n for pid in pids)]
    text = scraped(tmp_path)
    assert value(text, "coyote_store_outages_total") == 2
    assert value(text, "coyote_instance_ejections_total", cause="gateway") == 2
    assert value(text, "coyote_registrations_total", topology="default", service="shop") == 1
    shop = {"route": "/items/{id:int}", "service": "shop", "status": "2xx"}
    assert value(text, "coyote_requests_total", **shop) == 3
    # in files of their own: a version that reads only the requests' sees none of them
    assert {labels[0] for labels in read_series(str(tmp_path))} == {"default", ""}
    assert "coyote_store_outages" not in (tmp_path / ARCHIVE).read_text()


def test_an_event_a_worker_cannot_write_is_shown_by_its_own_scrapes_and_fails_no_other(
    tmp_path: Path,
) -> None:
    # its files cannot grow (RLIMIT_FSIZE, as a full disk): counted in its memory, never
    # in a counter file of prometheus-client's, which would be left empty for good and
    # fail every worker's scrape
    log: list[str] = []
    own = run(tmp_path, "full\nevent registered default shop\nscrape", log)
    mine = {"service": "shop", "topology": "default"}
    assert value(json.loads(own[-1]), "coyote_registrations_total", **mine) == 1
    assert sum("events it had not counted" in line for line in log) == 1, log
    assert not list(tmp_path.glob("counter_*"))
    text = scraped(tmp_path)  # another worker's
    assert value(text, "coyote_store_outages_total") == 0


def test_a_file_of_prometheus_clients_it_cannot_read_fails_no_scrape(tmp_path: Path) -> None:
    # an empty counter file (a worker that had no room to size it): prometheus-client's
    # collector fails on it (struct.error), and would fail every worker's scrape for good
    run(tmp_path, "count GET /items/{id:int} shop 200 0.25 3\nevent store_unreachable")
    (tmp_path / "counter_999999.db").touch()
    log: list[str] = []
    text = json.loads(run(tmp_path, "scrape", log)[-1])
    assert value(text, "coyote_requests_total", route="/items/{id:int}", status="2xx") == 3
    assert value(text, "coyote_store_outages_total") == 1
    # the other files' families all the same (the workers' gauges)
    assert value(text, "coyote_relay_concurrency", topology="default") > 0
    assert any("counter_999999.db cannot be read" in line for line in log), log


def test_events_counted_in_memory_while_the_directory_is_gone_are_shown(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    script = "remove-directory\ncount GET /items/{id:int} shop 200 0.25 3\n"
    script += "event registered default shop\nevent store_unreachable\nscrape"
    text = json.loads(run(folder, script)[-1])
    assert value(text, "coyote_requests_total", route="/items/{id:int}", status="2xx") == 3
    assert value(text, "coyote_store_outages_total") == 1
    assert value(text, "coyote_registrations_total", service="shop") == 1


def test_saturations_a_worker_cannot_write_are_shown_by_its_own_scrapes(tmp_path: Path) -> None:
    # its gauges cannot be written either (and raise): the saturations are counted first
    limit = "resource.RLIMIT_FSIZE"
    full = f"resource.setrlimit({limit}, (0, resource.getrlimit({limit})[1]))"
    lines, _, _ = saturating(tmp_path, before=full)
    assert lines == ['coyote_relay_saturated_total{topology="blue"} 3.0']


def test_events_with_the_directorys_name_set_empty_are_counted_in_memory(tmp_path: Path) -> None:
    # prometheus-client's multiprocess mode is on, with no directory: an event is counted
    # in memory, not in a counter file of prometheus-client's where the worker runs
    script = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = ""
from coyote_mw import Coyote, events
metrics = Coyote(token="w" * 32, metrics="open").metrics
events.emit("store_unreachable")
print([x for x in metrics.render()[0].decode().splitlines() if x.startswith("coyote_store")])
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", script]
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['coyote_store_outages_total 1.0']"
    assert not list(tmp_path.glob("counter_*"))  # (its gauges and locks are still written there)


def test_saturations_counted_while_the_directory_is_gone_are_shown(tmp_path: Path) -> None:
    gone = "metrics.SAMPLE_INTERVAL = 3600  # only the calls below write the state\n"
    gone += "assert ops.get('/_coyote/metrics').status_code == 200\nshutil.rmtree(directory)"
    back = "metrics._sampler.write_or_say()  # the sampler's tick meanwhile\nos.mkdir(directory)"
    lines, _, _ = saturating(tmp_path, before=gone, after=back)
    assert lines == ['coyote_relay_saturated_total{topology="blue"} 3.0']


SATURATING = """
import json, logging, os, resource, shutil, sys, threading
os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory = sys.argv[1]
logging.basicConfig(level=logging.CRITICAL)
import httpx
from coyote_mw import Client, Coyote, Request, route
from coyote_mw.ops import metrics
gate = threading.Event()
class Held(Client):
    @route("GET", "/hold")
    def hold(self, request: Request) -> str:
        gate.wait(10)
        return "held"
coyote = Coyote(token="w" * 32, metrics="open", topologies={"blue": {"concurrency": 1, "queue": 0}})
coyote.register(Held(), topology="blue")
http = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi(topology="blue")), base_url="http://w")
ops = httpx.Client(transport=httpx.WSGITransport(coyote.wsgi()), base_url="http://w")
# BEFORE
held = threading.Thread(target=http.get, args=("/hold",))
held.start()
while coyote.relay_for("blue").active == 0:
    pass
statuses = [http.get("/hold").status_code for _ in range(3)]
gate.set()
held.join()
# AFTER
text = ops.get("/_coyote/metrics").text  # its own scrape (its state written, as each second)
lines = [x for x in text.splitlines() if x.startswith("coyote_relay_saturated_total")]
pid = str(os.getpid())
print(json.dumps([statuses, lines, pid, sorted(n for n in os.listdir(directory) if pid in n)]))
"""


def saturating(directory: Path, before: str = "", after: str = "") -> list[Any]:
    """A worker whose relay of topology "blue" (one slot, no queue) refuses three
    requests, ``before`` run first and ``after`` then: their statuses, the saturation
    lines of its own scrape, its process id and its files in ``directory``."""
    script = SATURATING.replace("# BEFORE", before).replace("# AFTER", after)
    out = json.loads(python(script, directory).stdout)
    assert out[0] == [503, 503, 503]
    return list(out[1:])


def test_a_workers_saturations_are_counted_in_its_own_files(tmp_path: Path) -> None:
    # (counted from the relays as the worker writes its state: each second, and at a
    # scrape it answers)
    _, pid, files = saturating(tmp_path)
    assert not [n for n in files if n.startswith("counter_")] and "coyote_events_" in str(files)
    text = scraped(tmp_path)
    assert value(text, "coyote_relay_saturated_total", topology="blue") == 3
    assert text.count("# TYPE coyote_relay_saturated_total counter") == 1
    assert mark_process_dead(int(pid), str(tmp_path))
    assert not [n for n in os.listdir(tmp_path) if pid in n]
    assert value(scraped(tmp_path), "coyote_relay_saturated_total", topology="blue") == 3


PRELOADED = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from coyote_mw import Coyote, events
from coyote_mw.ops.metrics import mark_process_dead
Coyote(token="w" * 32, metrics="open")
events.emit("store_unreachable")  # the master, before it forks (gunicorn --preload)
events.emit("ejected", "connect")
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        events.emit("store_unreachable")
        events.emit("ejected", "connect")
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
    assert mark_process_dead(pid)
print(sorted(n for n in os.listdir(sys.argv[1]) if any(str(p) in n for p in children)))
"""


def test_workers_forked_from_a_master_that_counted_events_leave_no_file(
    tmp_path: Path,
) -> None:
    # gunicorn --preload: each worker counts in slots of its own, never in its master's
    # (which it inherits), and they are folded once it has exited
    assert python(PRELOADED, tmp_path).stdout.split() == ["[]"]
    assert not list(tmp_path.glob("counter_*"))
    text = scraped(tmp_path)
    assert value(text, "coyote_store_outages_total") == 4  # the master's one, a worker's each
    assert value(text, "coyote_instance_ejections_total", cause="connect") == 4


def test_events_counted_at_once_by_many_threads_of_a_worker_are_all_counted(
    tmp_path: Path,
) -> None:
    script = """
import os, sys, threading
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from coyote_mw import Coyote, events
Coyote(token="w" * 32, metrics="open")
go = threading.Barrier(8)
def count():
    go.wait()
    for _ in range(200):
        events.emit("store_unreachable")
        events.emit("ejected", "connect")
threads = [threading.Thread(target=count) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""
    python(script, tmp_path)
    text = scraped(tmp_path)
    assert value(text, "coyote_store_outages_total") == 1600
    assert value(text, "coyote_instance_ejections_total", cause="connect") == 1600


FORK_DURING_FIRST_EVENT = """
import os, signal, sys, threading
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from coyote_mw import Coyote, events
Coyote(token="w" * 32, metrics="open")
first = threading.Thread(target=events.emit, args=("store_unreachable",))
first.start()
pid = os.fork()  # as gunicorn's arbiter forks a worker while a thread of it counts
if pid == 0:
    signal.alarm(5)  # a child stuck on a lock held at the fork dies of SIGALRM
    events.emit("store_unreachable")
    events.emit("ejected", "connect")
    os._exit(0)
first.join()
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_worker_forked_while_an_event_counter_is_made_can_count(tmp_path: Path) -> None:
    # the first event of a kind makes its counter and its file (a fraction of a ms, under
    # locks): a fork meanwhile (gunicorn --preload, the arbiter's threads counting) must
    # not leave the child a lock held for good
    for trial in range(12):
        directory = tmp_path / str(trial)
        directory.mkdir()
        out = python(FORK_DURING_FIRST_EVENT, directory)
        assert out.stdout.split() == ["0"], f"trial {trial}: {out.stdout} {out.stderr}"


def test_workers_counts_are_summed_and_a_killed_workers_stay(
    tmp_path: Path, workers: list[Worker]
) -> None:
    run(tmp_path, "count GET /items/{id:int} shop 200 0.25 3\ncount - - - 404 0.5 1")
    killed = Worker(tmp_path, "count GET /items/{id:int} shop 503 0.5 5\ncount - - - 404 0.5 1")
    workers.append(killed)
    assert killed.end(signal.SIGKILL) == -signal.SIGKILL
    live = Worker(tmp_path, "count GET /items/{id:int} shop 200 2.0 2")
    workers.append(live)
    text = scraped(tmp_path)  # a fourth process, which counted nothing itself
    items = {"route": "/items/{id:int}", "service": "shop"}
    assert value(text, "coyote_requests_total", status="2xx", **items) == 5
    assert value(text, "coyote_requests_total", status="5xx", **items) == 5
    assert value(text, "coyote_requests_total", route="", status="4xx") == 2
    assert value(text, "coyote_request_duration_seconds_count", **items) == 10
    assert value(text, "coyote_request_duration_seconds_sum", **items) == 3 * 0.25 + 5 * 0.5 + 4.0
    assert value(text, "coyote_request_duration_seconds_bucket", le="0.25", **items) == 3
    assert value(text, "coyote_request_duration_seconds_bucket", le="0.5", **items) == 8
    assert value(text, "coyote_request_duration_seconds_bucket", le="+Inf", **items) == 10
    # what prometheus-client's own collector adds (the workers' state) still follows
    assert value(text, "coyote_relay_concurrency", topology="default") > 0
    assert text.count("# TYPE coyote_requests_total counter") == 1
    assert live.end() == 0


def test_a_worker_frees_the_slots_of_routes_long_gone_and_scrapes_stop_showing_them(
    tmp_path: Path,
) -> None:
    # scrapes stop showing a route RETIRE_AFTER after they find it gone; a worker frees
    # its slot only twice as late, so that no worker's scrape, on its own clock, shows
    # the route's total fall (a counter reset to Prometheus)
    out = run(
        tmp_path,
        """
        pid
        register /gone/{id} leaving
        deregister leaving
        scrape
        clock 601
        scrape
        register /new/{id} arriving
        clock 600
        scrape
        register /newer/{id} arriving2
        scrape
        """,
    )
    pid = out[0]
    shown, hidden, later, arrived = (json.loads(out[i]) for i in (3, 5, 8, 10))
    gone = {"route": "/gone/{id}", "service": "leaving"}
    assert value(shown, "coyote_requests_total", status="2xx", **gone) == 1  # in its grace
    assert value(hidden, "coyote_request_duration_seconds_count", **gone) == 0  # grace over
    assert 'route="/gone/{id}"' not in hidden and 'route="/gone/{id}"' not in later
    assert value(arrived, "coyote_requests_total", route="/new/{id}", status="2xx") == 1
    assert value(arrived, "coyote_requests_total", route="/newer/{id}", status="2xx") == 1
    path = tmp_path / f"coyote_requests_{pid}.labels"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    given = [line for line in lines if line[1:] == ["default", "GET", "/gone/{id}", "leaving"]]
    assert len(given) == 1
    slot = given[0][0]
    at = lines.index(given[0])
    # not freed while scrapes may still show it (/new took a slot of its own), then
    # freed, and given to the next new route (the scrapes' own series, of no route,
    # came in between)
    assert [line for line in lines[at + 1 :] if line[0] == slot] == [
        [slot],
        [slot, "default", "GET", "/newer/{id}", "arriving2"],
    ]


def test_a_worker_whose_directory_is_gone_serves_on_and_shows_its_own_counts(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    log: list[str] = []
    out = run(
        folder,
        """
        remove-directory
        count GET /items/{id:int} shop 200 0.25 3
        count GET /other shop 200 0.25 1
        scrape
        """,
        log,
    )
    text = json.loads(out[-1])
    items = {"route": "/items/{id:int}", "service": "shop"}
    assert value(text, "coyote_requests_total", status="2xx", **items) == 3
    assert value(text, "coyote_requests_total", route="/other", status="2xx") == 1
    said = [line for line in log if "could not write" in line]
    assert len(said) == 2, log  # once for the counts, once for the state


def test_the_families_read_from_the_files_are_what_prometheus_clients_files_gave(
    tmp_path: Path,
) -> None:
    # the same requests counted by coyote's files and, in another process as before
    # them, by prometheus-client's multiprocess Counter and Histogram: the same samples
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    code = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]
from prometheus_client import Counter, Histogram
from coyote_mw import Coyote
from coyote_mw.ops.metrics import BUCKETS, DURATION, REQUESTS, ROUTE, _CLASSES, _requests_text
from coyote_mw.routing.endpoint import Endpoint
from coyote_mw.routing.patterns import parse_pattern

odd = [
    Endpoint("GET", parse_pattern("/items/{id:int}"), "shop", "default", False, ()),
    Endpoint("POST", parse_pattern('/q"uote/back\\\\slash'), 'svc"\\\\\\n', "t\\n2", False, ()),
    Endpoint("PUT", parse_pattern("/caf\\u00e9/{name}"), "caf\\u00e9", "default", False, ()),
    None,
]
if sys.argv[1] == "ours":
    metrics = Coyote(metrics="open").metrics
else:
    requests = Counter(*REQUESTS[:2], (*ROUTE, "status"), registry=None)
    duration = Histogram(*DURATION, ROUTE, buckets=BUCKETS, registry=None)
for i, endpoint in enumerate(odd):
    labels = ("", "", "", "") if endpoint is None else (
        endpoint.topology, endpoint.method, endpoint.pattern, endpoint.service)
    for status, seconds in [(200, 0.0001), (404, 0.003), (503, 31.0), (99, 1e-9), (200, 0.1)]:
        for _ in range(i + 1):
            if sys.argv[1] == "ours":
                metrics.record(endpoint, status, seconds * (i + 1))
            else:
                c = status // 100
                requests.labels(*labels, _CLASSES[c if 0 < c < 6 else 0]).inc()
                duration.labels(*labels).observe(seconds * (i + 1))
if sys.argv[1] == "ours":
    print(_requests_text(metrics))
"""

    def counted(who: str, folder: Path) -> str:
        return python(code, who, folder).stdout

    mine = counted("ours", ours)
    counted("theirs", theirs)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(theirs))  # type: ignore[no-untyped-call]
    reference = generate_latest(registry).decode()

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    assert samples(mine) == samples(reference)
    assert len(samples(mine)) == 4 * (4 + 18)  # four status classes and 18 histogram lines
    assert 'service="svc\\"\\\\\\n"' in mine  # the odd labels, escaped
    assert not list(theirs.glob("coyote_requests_*")) and list(ours.glob("coyote_requests_*"))


def test_an_older_versions_files_of_the_requests_add_no_second_family(tmp_path: Path) -> None:
    # a worker of an older version counted the two families in prometheus-client's own
    # Counter and Histogram files, and left them in the directory
    older = """
from prometheus_client import Counter, Histogram
from coyote_mw.ops.metrics import DURATION, REQUESTS, ROUTE
Counter(*REQUESTS, (*ROUTE, "status"), registry=None).labels(
    "default", "GET", "/old", "svc", "2xx"
).inc(7)
Histogram(*DURATION, ROUTE, registry=None).labels("default", "GET", "/old", "svc").observe(0.1)
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", older], cwd=ROOT, env=env, check=True, timeout=60)
    assert {p.name.split("_")[0] for p in tmp_path.glob("*.db")} == {"counter", "histogram"}
    run(tmp_path, "count GET /items/{id:int} shop 200 0.25 3")
    text = scraped(tmp_path)
    # a family twice fails the whole scrape in Prometheus ("second TYPE line")
    assert text.count("# TYPE coyote_requests_total counter") == 1
    assert text.count("# TYPE coyote_request_duration_seconds histogram") == 1
    assert 'route="/old"' not in text
    assert value(text, "coyote_requests_total", route="/items/{id:int}", status="2xx") == 3
    assert value(text, "coyote_relay_concurrency", topology="default") > 0


def test_an_older_versions_event_files_are_summed_with_the_slots_a_family_each(
    tmp_path: Path,
) -> None:
    # a worker of an older version counted its events and saturations in
    # prometheus-client's counter files (as a worker still does where it cannot write
    # its slots), and left them in the directory
    older = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from prometheus_client import Counter
from coyote_mw.ops.metrics import SATURATED
Counter("coyote_store_outages", "older", registry=None).inc(5)
Counter("coyote_instance_ejections", "older", ["cause"], registry=None).labels("timer").inc(2)
Counter(*SATURATED, registry=None).labels("blue").inc(4)
"""
    python(older, tmp_path)
    run(tmp_path, "event store_unreachable\nevent ejected timer\nevent ejected connect")
    text = scraped(tmp_path)
    for family in ("coyote_store_outages", "coyote_instance_ejections", "coyote_relay_saturated"):
        assert text.count(f"# TYPE {family}_total counter") == 1, family
    assert value(text, "coyote_store_outages_total") == 6
    assert value(text, "coyote_instance_ejections_total", cause="timer") == 3
    assert value(text, "coyote_instance_ejections_total", cause="connect") == 1
    assert value(text, "coyote_relay_saturated_total", topology="blue") == 4


def test_a_request_of_a_route_whose_slot_was_freed_counts_in_no_other_routes_slot(
    tmp_path: Path,
) -> None:
    # /r is not in the table (a request that matched it before it left, answered after):
    # its series is dropped and its slot freed while its endpoint is still bound, and
    # the next new route (/q) is given that slot
    out = run(
        tmp_path,
        """
        count GET /r shop 200 0.1 1
        scrape
        clock 1201
        scrape
        count GET /q shop 200 0.1 1
        count GET /r shop 200 0.1 5
        scrape
        """,
    )
    text = json.loads(out[-1])
    assert value(text, "coyote_requests_total", route="/q", status="2xx") == 1
    assert value(text, "coyote_requests_total", route="/r", status="2xx") == 5


def test_a_disk_that_takes_no_more_fails_no_scrape_and_is_said_once(tmp_path: Path) -> None:
    log: list[str] = []
    out = run(
        tmp_path,
        """
        register /one/{id} leaving
        register /two/{id} going
        deregister leaving
        deregister going
        scrape
        full
        clock 1201
        scrape
        count GET /items/{id:int} shop 200 0.25 2
        scrape
        """,
        log,
    )
    # the slots of the routes gone could not be freed (nor a new route's given): the
    # scrapes answer all the same, the routes gone past their grace hidden
    hidden, last = json.loads(out[-3]), json.loads(out[-1])
    assert 'route="/one/{id}"' not in hidden and 'route="/two/{id}"' not in hidden
    assert value(last, "coyote_requests_total", route="/items/{id:int}", status="2xx") == 2
    said = [line for line in log if "could not write" in line]
    assert len(said) == 1 and "File too large" in said[0], log


# -- the files of workers that have exited: folded into the archive -----------------------


def dead_worker(directory: Path, pid: int, counts: dict[tuple[str, str, str, str], int]) -> None:
    """The files worker ``pid`` left when it exited, having counted ``counts[labels]``
    requests of 0.25 s each (made by this process, then named as that worker's)."""
    files = SeriesFiles(str(directory))
    for labels, n in counts.items():
        slot = files.slot(labels)
        slot.counts[2] += n
        slot.buckets[4] += n  # 0.25 s: the fifth bucket
        slot.sums[0] += 0.25 * n
    files.close()
    mine, theirs = f"coyote_requests_{os.getpid()}", f"coyote_requests_{pid}"
    for path in [directory / f"{mine}.labels", *directory.glob(f"{mine}_*.slots")]:
        path.rename(directory / path.name.replace(mine, theirs, 1))


def totals(directory: Path) -> dict[tuple[str, ...], tuple[int, int, float]]:
    """Requests, bucket counts and sum by labels, as a scrape reads them."""
    with locked(str(directory)) as held:
        assert held
        read = read_series(str(directory))
    return {labels: (sum(c), sum(b), t) for labels, (c, b, t) in read.items()}


def worker_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith("coyote_requests")}


def test_a_dead_workers_counts_are_folded_and_its_files_removed(tmp_path: Path) -> None:
    # gunicorn's max_requests replaces workers all day: each leaves its files, and
    # without folding every scrape reads every worker that ever was
    expected: dict[tuple[str, ...], tuple[int, int, float]] = {}
    for pid in range(900_001, 900_021):  # twenty workers, one after the other
        counts = {ITEMS: 3, labels_of(pid % 4): 2}
        dead_worker(tmp_path, pid, counts)
        for labels, n in counts.items():
            c, b, t = expected.get(labels, (0, 0, 0.0))
            expected[labels] = (c + n, b + n, t + 0.25 * n)
        assert totals(tmp_path) == expected  # its files, before
        assert fold(str(tmp_path), pid)
        assert totals(tmp_path) == expected  # the archive, after
        assert worker_files(tmp_path) == {ARCHIVE, metrics_files.LOCK, metrics_files.GATE}
    assert expected[ITEMS] == (60, 60, 15.0)
    assert fold(str(tmp_path), 900_001)  # again: nothing left to fold, nothing changed
    assert totals(tmp_path) == expected
    # a live worker's files are read beside the archive
    files = SeriesFiles(str(tmp_path))
    files.slot(ITEMS).counts[2] += 1
    assert totals(tmp_path)[ITEMS] == (61, 60, 15.0)


def test_a_scrape_never_sees_a_fold_half_done(tmp_path: Path) -> None:
    # many routes a worker, so that each fold takes a while; a reader scraping all along
    # must always see every count once: not in the archive and the files both (twice),
    # nor in neither (a counter that falls is a reset to Prometheus)
    routes = [labels_of(n) for n in range(1500)]
    pids = list(range(910_001, 910_011))
    for pid in pids:
        dead_worker(tmp_path, pid, dict.fromkeys(routes, 1))
    want = sum(sum(c) for c, _, _ in read_series(str(tmp_path)).values())
    assert want == len(pids) * len(routes)
    seen: list[int] = []
    done = threading.Event()

    def scrape() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline and len(seen) < 10_000:
            with locked(str(tmp_path)):
                read = read_series(str(tmp_path))
            seen.append(sum(sum(c) for c, _, _ in read.values()))

    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for pid in pids:
            assert fold(str(tmp_path), pid)
            read = len(seen)
            deadline = time.monotonic() + 10
            while len(seen) < read + 2 and time.monotonic() < deadline:  # a fold, a read
                time.sleep(0.001)
    finally:
        done.set()
        reader.join(60)
    assert len(seen) >= 2 * len(pids)
    assert set(seen) == {want}
    assert worker_files(tmp_path) == {ARCHIVE, metrics_files.LOCK, metrics_files.GATE}


def test_a_fold_that_cannot_write_or_lock_leaves_the_workers_files_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dead_worker(tmp_path, 920_001, {ITEMS: 4})
    dead_worker(tmp_path, 920_002, {ITEMS: 1})
    assert fold(str(tmp_path), 920_001)
    before = totals(tmp_path)
    assert before[ITEMS] == (5, 5, 1.25)

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics_files, "_write_archive", full)
    with caplog.at_level(logging.WARNING, logger="coyote_mw.metrics"):
        assert not mark_process_dead(920_002, str(tmp_path))
    assert "worker 920002's counts not all folded" in caplog.text and "No space" in caplog.text
    assert totals(tmp_path) == before  # its files put back, the archive as it was
    assert "coyote_requests_920002.labels" in worker_files(tmp_path)
    monkeypatch.undo()
    # a scrape holds the lock longer than a fold waits: the fold leaves the files
    with locked(str(tmp_path)) as held:
        assert held
        assert not fold(str(tmp_path), 920_002, wait=0.05)
    assert "coyote_requests_920002.labels" in worker_files(tmp_path)
    assert totals(tmp_path) == before
    assert mark_process_dead(920_002, str(tmp_path))  # later: folded
    assert totals(tmp_path) == before
    assert worker_files(tmp_path) == {ARCHIVE, metrics_files.LOCK, metrics_files.GATE}


def test_two_folds_of_one_worker_at_once_fold_it_once(tmp_path: Path) -> None:
    # both wait for the lock a scrape holds; the second finds it folded already
    dead_worker(tmp_path, 925_001, {ITEMS: 3})
    results: list[bool | BaseException] = []

    def folding() -> None:
        try:
            results.append(fold(str(tmp_path), 925_001))
        except BaseException as exc:  # what the test reports
            results.append(exc)

    with locked(str(tmp_path)) as held:
        assert held
        threads = [threading.Thread(target=folding) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)  # both at the lock (nothing is asserted about the time)
    for thread in threads:
        thread.join(10)
    assert results == [True, True]
    assert totals(tmp_path) == {ITEMS: (3, 3, 0.75)}


def test_the_archive_skips_lines_that_are_not_series(tmp_path: Path) -> None:
    dead_worker(tmp_path, 930_001, {ITEMS: 2})
    assert fold(str(tmp_path), 930_001)
    archive = tmp_path / ARCHIVE
    good = archive.read_text()
    archive.write_text(
        good
        + "not json\n"
        + json.dumps([list(labels_of(1)), [1] * 5, [0] * 16, 0.5])  # five counts
        + "\n"
        + json.dumps([list(labels_of(2)), [True] * 6, [0] * 16, 0.5])
        + "\n"
        + json.dumps([list(ITEMS), [0, 0, 1, 0, 0, 0], [0] * 16, 0.0])  # added
        + "\n"
        + '[["a"], [0, 0'  # cut short
    )
    assert totals(tmp_path) == {ITEMS: (3, 2, 0.5)}


def test_a_scrape_prunes_archived_routes_long_gone(tmp_path: Path) -> None:
    # a worker counts a route and exits; a worker that still serves does not have that
    # route: its scrapes show the archive's counts for RETIRE_AFTER, stop, and once no
    # worker can hold the route any more (twice as late) drop it from the archive
    first = run(tmp_path, "pid\nregister /gone/{id} leaving")
    assert mark_process_dead(int(first[0]), str(tmp_path))
    gone = ("default", "GET", "/gone/{id}", "leaving")
    assert gone in read_series(str(tmp_path))
    out = run(tmp_path, "scrape\nclock 601\nscrape\nclock 600\nscrape\nscrape")
    shown, hidden = json.loads(out[0]), json.loads(out[2])
    assert value(shown, "coyote_requests_total", route="/gone/{id}", status="2xx") == 1
    assert 'route="/gone/{id}"' not in hidden
    assert gone not in read_series(str(tmp_path))


def test_workers_that_live_less_than_the_grace_time_it_from_the_first_to_find_it(
    tmp_path: Path,
) -> None:
    # gunicorn's max_requests: each worker lives a few minutes.  The first scrape to
    # find an archived route gone notes when in the archive; the workers after it hide
    # the route from then (not each from its own first scrape, showing it again for
    # RETIRE_AFTER), and drop it from the archive twice as late
    first = run(tmp_path, "pid\nregister /gone/{id} leaving\nregister /kept/{id} staying")
    assert mark_process_dead(int(first[0]), str(tmp_path))
    gone = ("default", "GET", "/gone/{id}", "leaving")
    kept = ("default", "GET", "/kept/{id}", "staying")
    route = 'route="/gone/{id}"'
    # each worker's clock starts at 1000: "clock" moves it on to where the last one was
    second = run(tmp_path, "pid\nregister /kept/{id} staying\nscrape\nclock 400\nscrape")
    assert route in json.loads(second[2]) and route in json.loads(second[4])  # in its grace
    assert mark_process_dead(int(second[0]), str(tmp_path))
    script = "pid\nregister /kept/{id} staying\nclock 601\nscrape\nclock 600\nscrape"
    third = run(tmp_path, script)
    assert route not in json.loads(third[3])  # 601 s after the second worker found it gone
    assert gone not in read_series(str(tmp_path))  # 1201 s after: dropped
    assert kept in read_series(str(tmp_path))  # its route is in the table: kept
    assert mark_process_dead(int(third[0]), str(tmp_path))
    counted = value(json.loads(third[5]), "coyote_requests_total", route="/kept/{id}", status="2xx")
    assert counted == 3  # a request at each worker's registration


def test_an_archived_route_stays_while_a_live_worker_still_holds_its_slot(
    tmp_path: Path, workers: list[Worker]
) -> None:
    # a worker that served the route, and is not scraped (Prometheus keeps its
    # connection to another), frees its slot on its own clock, later: until it does,
    # the archive keeps the route and the note of since when it is gone, or a worker
    # that comes after would show the route again, its total fallen to that slot's
    first = run(tmp_path, "pid\nregister /gone/{id} leaving")
    assert mark_process_dead(int(first[0]), str(tmp_path))
    holder = Worker(tmp_path, "register /gone/{id} leaving\nderegister leaving")
    workers.append(holder)
    gone = ("default", "GET", "/gone/{id}", "leaving")
    route = 'route="/gone/{id}"'
    second = run(tmp_path, "scrape\nclock 1201\nscrape")  # found gone, then long gone
    assert value(json.loads(second[0]), "coyote_requests_total", route="/gone/{id}") == 2
    assert route not in json.loads(second[2])
    third = run(tmp_path, "clock 1300\nscrape")  # a worker started since
    assert route not in json.loads(third[1])
    # the holder exits: its counts folded, the route is in the archive alone, and the
    # next scrape drops it
    assert holder.end() == 0
    assert mark_process_dead(holder.proc.pid, str(tmp_path))
    fourth = run(tmp_path, "clock 1300\nscrape")
    assert route not in json.loads(fourth[1])
    assert gone not in read_series(str(tmp_path))


def test_an_archived_route_that_comes_back_is_shown_with_its_counts(tmp_path: Path) -> None:
    first = run(tmp_path, "pid\nregister /back/{id} returning")
    assert mark_process_dead(int(first[0]), str(tmp_path))
    second = run(tmp_path, "pid\nscrape\nclock 601\nscrape")  # gone, then hidden
    assert 'route="/back/{id}"' not in json.loads(second[3])
    assert mark_process_dead(int(second[0]), str(tmp_path))
    # it comes back before it is dropped: shown, its archived request with the new one,
    # and the archive no longer notes it gone
    third = run(tmp_path, "clock 700\nregister /back/{id} returning\nscrape\nclock 1200\nscrape")
    for text in (json.loads(third[2]), json.loads(third[4])):
        assert value(text, "coyote_requests_total", route="/back/{id}", status="2xx") == 2
    archive = (tmp_path / ARCHIVE).read_text().splitlines()
    back = [json.loads(line) for line in archive if "/back/{id}" in line]
    assert len(back) == 1 and len(back[0]) == 4  # no "gone since"


def test_a_fold_that_comes_during_a_scrape_is_done_once_the_scrape_has_read(
    tmp_path: Path,
) -> None:
    # a scrape takes the lock once: a fold that comes while it reads waits for it, and
    # the scrape does not wait for the fold (had the scrape taken the lock inside the
    # lock, each would wait for the other until one gave up, the fold first: its
    # worker's files left for good)
    dead = int(run(tmp_path, "count GET /items/{id:int} shop 200 0.25 3\npid")[-1])
    folded, text = json.loads(run(tmp_path, f"fold-while-scraping {dead}")[0])
    assert folded == "True"
    assert value(text, "coyote_requests_total", route="/items/{id:int}", status="2xx") == 3
    assert not any(name.startswith(f"coyote_requests_{dead}") for name in worker_files(tmp_path))
    assert totals(tmp_path)[ITEMS] == (3, 3, 0.75)


@pytest.mark.skipif(os.geteuid() != 0, reason="a worker of another user: needs root")
def test_a_worker_of_another_user_than_the_folder_takes_the_lock(
    request: pytest.FixtureRequest,
) -> None:
    # gunicorn --user: the arbiter (root) folds, and makes the lock's files its own
    # (0644); its workers (another user) must still take the lock to read, else a
    # scrape may see a fold half done
    directory = Path(tempfile.mkdtemp(prefix="coyote-multiproc-"))  # (tmp_path: root's)
    request.addfinalizer(lambda: shutil.rmtree(directory))
    os.chown(directory, 65534, 65534)
    dead_worker(directory, 940_001, {ITEMS: 2})
    assert fold(str(directory), 940_001)  # by root: the lock's files are root's
    assert (directory / metrics_files.LOCK).stat().st_uid == 0
    pid = os.fork()
    if pid == 0:  # the worker, as that user
        held = False
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with locked(str(directory)) as held:
                pass
        finally:
            os._exit(0 if held else 1)
    assert os.waitpid(pid, 0)[1] == 0  # it held the lock


def test_a_worker_that_exits_during_a_fold_is_folded_after_it_by_a_signal_handler(
    tmp_path: Path,
) -> None:
    # gunicorn 22 and 23 reap their workers (and run child_exit) in the SIGCHLD handler
    # itself: a worker that exits during a fold calls mark_process_dead inside it, in
    # the thread that holds the lock's gate.  It must not wait for that lock (in vain,
    # for 5 s, the arbiter stalled, and the worker's files left): it is folded after
    directory = str(tmp_path)
    dead_worker(tmp_path, 950_001, {ITEMS: 2})
    dead_worker(tmp_path, 950_002, {ITEMS: 3, labels_of(1): 1})
    # a scrape under way: the fold waits for it, holding the gate
    code = (
        "import sys; from coyote_mw.ops.metrics_files import locked\n"
        "with locked(sys.argv[1]) as held: print(held, flush=True); sys.stdin.read()"
    )
    scrape = subprocess.Popen(
        [sys.executable, "-c", code, directory],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert scrape.stdout is not None and scrape.stdin is not None
    assert scrape.stdout.readline().strip() == "True"
    nested: list[bool] = []

    def child_exit(sig: int, frame: object) -> None:
        nested.append(mark_process_dead(950_002, directory))
        assert scrape.stdin is not None
        scrape.stdin.close()  # the scrape ends

    def exits_during_the_fold() -> None:
        fd = os.open(os.path.join(directory, metrics_files.GATE), os.O_RDONLY | os.O_CREAT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # the fold holds it
                    os.kill(os.getpid(), signal.SIGUSR1)
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)
                time.sleep(0.001)
        finally:
            os.close(fd)

    previous = signal.signal(signal.SIGUSR1, child_exit)
    sender = threading.Thread(target=exits_during_the_fold)
    try:
        sender.start()
        assert mark_process_dead(950_001, directory)
    finally:
        sender.join(30)
        signal.signal(signal.SIGUSR1, previous)
        if not scrape.stdin.closed:
            scrape.stdin.close()
        scrape.wait(10)
    assert nested == [True]
    assert worker_files(tmp_path) == {ARCHIVE, metrics_files.LOCK, metrics_files.GATE}
    assert totals(tmp_path) == {ITEMS: (5, 5, 1.25), labels_of(1): (1, 1, 0.25)}
