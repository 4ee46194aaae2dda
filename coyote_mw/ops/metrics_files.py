"""A worker's request counts in files every worker reads: the multiprocess mode's
storage for the requests' two families (``coyote_mw.ops.metrics``).

Under several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set: ``coyote leader
--workers``, gunicorn ``-w``) each worker keeps its routes' counts in memory-mapped
files of its own in that directory, and whichever worker answers a scrape reads every
worker's.  A request adds to them as a single process adds to its lists: three
additions under one lock, no system call and no lock between processes.  What a worker
wrote stays in the kernel's page cache when it dies, SIGKILL included, as
prometheus-client's own files do.

A worker's files (``<pid>`` its process id):

* ``coyote_requests_<pid>.labels``: a line per slot given to a route,
  ``[slot, topology, method, route, service]`` in JSON, appended with one ``write``; a
  later line for a slot replaces what it held (a slot freed and given again), and
  ``[slot]`` frees it.
* ``coyote_requests_<pid>_<n>.slots``: slots ``n * SLOTS`` to ``(n + 1) * SLOTS - 1``,
  made whole (zeros) when the first of them is given.  A slot is ``SLOT_VALUES`` 8-byte
  numbers in the machine's byte order: the counts by status class (six), the latency
  bucket counts (``len(BUCKETS) + 1``, not cumulative, the last +Inf), then the sum of
  the seconds as a double.

A slot is given to a route (its labels) when the worker first counts a request of it,
freed (zeroed) when the worker drops the route's series (``Metrics.retire``), and given
again before the files grow: a worker holds about as many slots as it has series.  A
process that starts with the process id of one that is gone (its files still there)
goes on counting in that one's slots, as prometheus-client's files do.

When a worker has exited, ``fold`` adds its counts to the directory's archive
(``coyote_requests_archive.json``, a JSON line per series, written whole and put in
place of the old one) and removes its files: ``coyote_mw.ops.metrics.mark_process_dead``,
called by ``coyote leader --workers``'s supervisor and by a gunicorn ``child_exit``.
Without it a server that replaces its workers (gunicorn's ``max_requests``) keeps every
worker's files until the directory is emptied, and each scrape reads them all.  A fold
holds the directory's lock (``coyote_requests.lock`` and ``.gate``, ``flock``)
exclusively, and a scrape holds it shared while it reads (``locked``): no scrape sees a
worker's counts in both the archive and its files, or in neither.  The archive also
notes since when a series has had no route, as the first scrape to find it gone saw
it (``update_archive``): workers that come later, however short their lives, time its
grace from then, and the scrapes drop it from the archive twice as late, once no
worker holds a slot of it (a worker frees its own on its own clock: until then a worker
that comes later finds the note).

The event counters (``coyote_mw.ops.metrics``: registrations, expiries, ejections,
store outages, saturations) are kept the same way in files of their own family,
``coyote_events_<pid>.labels`` and ``_<n>.slots`` (a slot an event and its labels, its
count the first number) and ``coyote_events_archive.json``, folded with the requests:
a version that knows only the requests' files reads none of them.

prometheus-client's collector reads ``*.db`` files only; it reads none of these.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import mmap
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "EVENTS",
    "REQUESTS",
    "SLOTS",
    "SeriesFiles",
    "add_values",
    "fold",
    "locked",
    "read_series",
    "update_archive",
]

logger = logging.getLogger("coyote_mw.metrics")

SLOTS = 2048
"""Slots a ``.slots`` file holds."""

MAX_SLOTS = 1 << 20
"""Slots one process may hold (series at once): past them, and in a labels file that
names a slot past them (not one of ours), nothing is given."""

COUNTS = 6  # by status class: other, 1xx .. 5xx
BUCKETS = 16  # coyote_mw.ops.metrics.BUCKETS and +Inf
SLOT_VALUES = COUNTS + BUCKETS + 1  # and the sum
_SLOT_BYTES = SLOT_VALUES * 8
REQUESTS = "coyote_requests"
"""The requests' files' family: ``coyote_requests_<pid>.labels`` and so on."""
EVENTS = "coyote_events"
"""The event counters' files' family."""
_FAMILIES = (REQUESTS, EVENTS)


def _archive(family: str) -> str:
    return f"{family}_archive.json"


ARCHIVE = _archive(REQUESTS)
"""The counts of the workers that have exited and were folded (``fold``); the events'
are in ``coyote_events_archive.json``."""
LOCK = "coyote_requests.lock"
GATE = "coyote_requests.gate"
LOCK_WAIT = 5.0
"""Seconds a scrape or a fold waits for the directory's lock at most: past them a scrape
reads without it (a fold under way may then be seen half done), and a fold leaves the
worker's files as they are (still read, and counted)."""

Labels = tuple[str, ...]
Values = tuple[list[int], list[int], float]


class Slot:
    """One route's counts in this worker's files: what ``Metrics.record`` adds to, as it
    adds to a single process's ``_Series`` (``counts``, ``buckets``, ``sums[0]``)."""

    __slots__ = ("buckets", "counts", "index", "labels", "sums")

    counts: memoryview[int] | list[int]
    buckets: memoryview[int] | list[int]
    sums: memoryview[float] | list[float]

    def __init__(
        self, labels: Labels, index: int, ints: memoryview[int], floats: memoryview[float]
    ) -> None:
        base = (index % SLOTS) * SLOT_VALUES
        self.labels = labels
        self.index = index
        self.counts = ints[base : base + COUNTS]
        self.buckets = ints[base + COUNTS : base + COUNTS + BUCKETS]
        self.sums = floats[base + SLOT_VALUES - 1 : base + SLOT_VALUES]

    def detach(self) -> None:
        """Counts from now in lists of its own, read by no one (``SeriesFiles.free``)."""
        self.counts, self.buckets, self.sums = [0] * COUNTS, [0] * BUCKETS, [0.0]


class SeriesFiles:
    """This process's slots in ``directory``, one set for every leader in it (as
    prometheus-client's values are the process's): leaders with a route of the same
    labels count in one slot, freed when the last of them lets it go.  Not thread-safe:
    the caller holds the process's lock (every leader's ``Metrics._lock`` in
    multiprocess mode) around ``slot``, ``free`` and the additions."""

    def __init__(self, directory: str, family: str = REQUESTS) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self._prefix = os.path.join(directory, f"{family}_{self.pid}")
        # per .slots file: its map and that map seen as 8-byte integers and as doubles
        self._chunks: list[tuple[mmap.mmap, memoryview[int], memoryview[float]]] = []
        self._given: dict[Labels, int] = {}  # labels -> slot, for the labels file
        self._users: dict[Labels, int] = {}  # labels -> the series that count in it
        self._free: list[int] = []
        self._next = 0  # the first slot never given
        labels_file = self._prefix + ".labels"
        # a process id used before (the files of a process gone): its slots go on
        for index, labels in _slots_of(_read(labels_file)).items():
            self._given[labels] = index
        self._next = max(self._given.values(), default=-1) + 1
        given = set(self._given.values())
        self._free = [i for i in range(self._next - 1, -1, -1) if i not in given]
        self._lines = len(self._given)  # lines in the labels file, once compacted
        self._fd = -1
        self._compact()

    def slot(self, labels: Labels) -> Slot:
        """The slot that counts ``labels``: the one they have, else a free one (each
        call is a user of it, until ``free``).  OSError (a full disk): nothing changed."""
        index = self._given.get(labels)
        if index is None:
            free = self._free
            index = free[-1] if free else self._next
            if index >= MAX_SLOTS:
                raise OSError(errno.EFBIG, f"more than {MAX_SLOTS} series in one process")
            ints, floats = self._chunk(index // SLOTS)
            self._reserve(index)
            base = (index % SLOTS) * SLOT_VALUES
            ints[base : base + SLOT_VALUES] = _ZEROS  # a freed slot's counts (zero at first)
            self._write([index, *labels])  # (a free slot that stays free if this fails)
            if free:
                free.pop()
            else:
                self._next += 1
            self._given[labels] = index
        else:
            ints, floats = self._chunk(index // SLOTS)
        self._users[labels] = self._users.get(labels, 0) + 1
        return Slot(labels, index, ints, floats)

    def free(self, slot: Slot) -> None:
        """A leader dropped ``slot``'s series: once no leader counts in it, it counts
        nothing.  ``slot`` itself counts nowhere from now: a request that still holds it
        adds to no other route's slot.  Where the freeing cannot be written, the slot
        stays the route's (counted on should the route come back)."""
        slot.detach()
        labels = slot.labels
        if self._given.get(labels) != slot.index:
            return
        users = self._users.get(labels, 0) - 1
        if users > 0:
            self._users[labels] = users
            return
        self._users.pop(labels, None)
        # first: a reader never sees its zeros as the route's (OSError, a full disk: the
        # slot stays the route's, counts and all, as its files say)
        self._write([slot.index])
        del self._given[labels]
        ints, _ = self._chunk(slot.index // SLOTS)
        base = (slot.index % SLOTS) * SLOT_VALUES
        ints[base : base + SLOT_VALUES] = _ZEROS
        self._free.append(slot.index)

    def close(self) -> None:
        """Close the labels file (a forked child's copy of its parent's): the maps stay,
        as the slots taken from them may still be read."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write(self, line: list[Any]) -> None:
        if self._lines > 2 * len(self._given) + SLOTS:
            self._compact()  # routes came and went: the file says what it holds now
        os.write(self._fd, _line(line))  # O_APPEND: one write, whole, at the end
        self._lines += 1

    def _compact(self) -> None:
        """The labels file anew, a line per slot given, put in place of the old one
        (a reader has the one or the other, whole)."""
        lines = [_line([index, *labels]) for labels, index in self._given.items()]
        # the descriptor goes with the file: appends land there (OSError: the old file
        # and descriptor stand)
        fd = _replace_whole(self._prefix + ".labels", b"".join(lines))
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._lines = len(lines)

    def _reserve(self, index: int) -> None:
        """The disk blocks under slot ``index`` taken now (a full disk: ENOSPC, here),
        not at its first write (SIGBUS: the worker killed); only those of slots given, so
        that the files of workers gone hold no more than they counted."""
        fd = os.open(f"{self._prefix}_{index // SLOTS}.slots", os.O_RDWR)
        try:
            os.posix_fallocate(fd, (index % SLOTS) * _SLOT_BYTES, _SLOT_BYTES)
        finally:
            os.close(fd)

    def _chunk(self, n: int) -> tuple[memoryview[int], memoryview[float]]:
        while len(self._chunks) <= n:
            path = f"{self._prefix}_{len(self._chunks)}.slots"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = SLOTS * _SLOT_BYTES
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)  # its blocks taken as slots are given (_reserve)
                mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            view = memoryview(mapped)
            self._chunks.append((mapped, view.cast("q"), view.cast("d")))
        _, ints, floats = self._chunks[n]
        return ints, floats


_ZEROS = memoryview(bytes(_SLOT_BYTES)).cast("q")


def _line(line: list[Any]) -> bytes:
    return json.dumps(line, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


@contextlib.contextmanager
def locked(directory: str, exclusive: bool = False, wait: float = LOCK_WAIT) -> Iterator[bool]:
    """Hold ``directory``'s lock, shared (readers) or exclusive (a fold), for the block;
    it gives whether it is held: not after ``wait`` seconds (another holds it), nor
    where the directory is gone or its filesystem keeps no locks.

    Two ``flock``\\ s: the lock itself, and a gate taken before it (held by a fold for as
    long as the lock, by a reader only while it takes the lock), so that scrapes
    overlapping one another do not keep a fold waiting for ever."""
    deadline = time.monotonic() + wait
    fds: list[int] = []
    try:
        try:
            for name in (GATE, LOCK):
                fds.append(_open_lock(os.path.join(directory, name)))
        except OSError:
            yield False
            return
        gate, lock = fds
        held = _flock(gate, fcntl.LOCK_EX, deadline) and _flock(
            lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline
        )
        if held and not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)  # the next reader may come in
        yield held
    finally:
        for fd in fds:
            os.close(fd)  # and with it its lock


def _open_lock(path: str) -> int:
    """A descriptor to ``flock``: for reading where the file is another user's (gunicorn
    --user: made by the root arbiter's fold), as ``flock`` needs no more."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def _flock(fd: int, operation: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        except OSError:  # ENOLCK: a filesystem without locks
            return False


def fold(directory: str, pid: int, wait: float = LOCK_WAIT) -> bool:
    """Add the counts of worker ``pid``, which has exited, to the directory's archives
    (its requests', then its events') and remove its files.  False: not folded, its files
    left as they are (still read) - the lock not had within ``wait`` seconds; OSError:
    an archive could not be written (a full disk): the files of that family, and of any
    after it, left as they are (still read), those folded before it gone."""
    families = [
        family
        for family in _FAMILIES
        if os.path.exists(os.path.join(directory, f"{family}_{pid}.labels"))
    ]
    if not families:
        return True  # nothing counted (or folded already)
    with locked(directory, exclusive=True, wait=wait) as held:
        if not held:
            return False
        for family in families:
            _fold(directory, family, pid)
    return True


def _fold(directory: str, family: str, pid: int) -> None:
    """``fold``'s work for one family of files, the lock held."""
    prefix = os.path.join(directory, f"{family}_{pid}")
    labels_file = prefix + ".labels"
    # out of the readers' sight first: should it stay (removing the rest failed), its
    # counts are in the archive once, not twice
    folding = labels_file + ".folding"
    try:
        os.replace(labels_file, folding)
    except FileNotFoundError:
        return  # folded by another while this one waited for the lock
    try:
        archive, gone = _read_archive(directory, family)
        for labels, counts, buckets, total in _values(prefix, folding):
            add_values(archive, labels, counts, buckets, total)
        _write_archive(directory, archive, gone, family)
    except BaseException:
        os.replace(folding, labels_file)
        raise
    mine = re.compile(rf"{family}_{pid}(_\d+\.slots|\.labels\..*)")
    for name in os.listdir(directory):
        if mine.fullmatch(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def update_archive(
    directory: str, gone: Mapping[Labels, float | None], drop: Mapping[Labels, float]
) -> None:
    """Note in the archive since when its series ``gone`` have had no route (None: they
    have one again), and drop the series ``drop`` that have had none since the time
    given or earlier (not one that has had a route again since): if the lock is free now,
    else at a later scrape."""
    with locked(directory, exclusive=True, wait=0) as held:
        if not held:
            return
        archive, since = _read_archive(directory)
        changed = False
        for labels, at in gone.items():
            if labels in archive and since.get(labels) != at:
                if at is None:
                    del since[labels]
                else:
                    since[labels] = at
                changed = True
        for labels, at in drop.items():
            noted = since.get(labels)
            if noted is not None and noted <= at:
                del archive[labels], since[labels]
                changed = True
        if changed:
            _write_archive(directory, archive, since)


def read_series(
    directory: str,
    archived: dict[Labels, float | None] | None = None,
    held: set[Labels] | None = None,
    family: str = REQUESTS,
) -> dict[Labels, Values]:
    """Every worker's counts in ``directory`` summed by labels, the archive's with them:
    counts by status class, bucket counts (not cumulative) and the sum of seconds.  A
    caller that must not see a fold half done holds ``locked`` around it.  ``archived``
    is given the archive's labels, each with since when it has had no route (as noted by
    ``update_archive``; None: not noted); ``held``, the labels of the workers' slots.
    ``family``: the files read (``REQUESTS`` or ``EVENTS``)."""
    out: dict[Labels, Values] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    if _archive(family) in names:
        out, since = _read_archive(directory, family)
        if archived is not None:
            archived.update(dict.fromkeys(out))
            archived.update(since)
    mine = re.compile(rf"{family}_\d+\.labels")
    for name in names:
        if mine.fullmatch(name) is None:
            continue
        prefix = os.path.join(directory, name[: -len(".labels")])
        for labels, counts, buckets, total in _values(prefix):
            add_values(out, labels, counts, buckets, total)
            if held is not None:
                held.add(labels)
    return out


def add_values(
    into: dict[Labels, Values], labels: Labels, counts: list[int], buckets: list[int], total: float
) -> None:
    """Add one series' counts, bucket counts and sum to ``into[labels]`` (set if absent)."""
    have = into.get(labels)
    if have is None:
        into[labels] = (counts, buckets, total)
    else:
        into[labels] = (
            [a + b for a, b in zip(have[0], counts, strict=True)],
            [a + b for a, b in zip(have[1], buckets, strict=True)],
            have[2] + total,
        )


def _values(
    prefix: str, labels_file: str | None = None
) -> Iterator[tuple[Labels, list[int], list[int], float]]:
    """One worker's slots as its files hold them now (its labels in ``labels_file``,
    when not in the usual one)."""
    chunks: dict[int, tuple[memoryview[int], memoryview[float]] | None] = {}
    lines = _read(labels_file or prefix + ".labels")
    for index, labels in sorted(_slots_of(lines).items()):
        n = index // SLOTS
        if n not in chunks:
            data = _read(f"{prefix}_{n}.slots")
            if len(data) < SLOTS * _SLOT_BYTES:
                chunks[n] = None  # not made yet (or cut): nothing counted in it
            else:
                view = memoryview(data)
                chunks[n] = (view.cast("q"), view.cast("d"))
        chunk = chunks[n]
        if chunk is None:
            continue
        ints, floats = chunk
        base = (index % SLOTS) * SLOT_VALUES
        yield (
            labels,
            ints[base : base + COUNTS].tolist(),
            ints[base + COUNTS : base + COUNTS + BUCKETS].tolist(),
            floats[base + SLOT_VALUES - 1],
        )


def _slots_of(data: bytes) -> dict[int, Labels]:
    """The slots a labels file gives, as its lines leave them (a line cut short, being
    written or by a full disk, is not read)."""
    slots: dict[int, Labels] = {}
    for line in data.split(b"\n")[:-1]:
        try:
            index, *labels = json.loads(line)
        except (ValueError, TypeError):
            continue
        if type(index) is not int or not 0 <= index < MAX_SLOTS:
            continue
        if not labels:
            slots.pop(index, None)
        elif len(labels) == 4 and all(type(v) is str for v in labels):
            slots[index] = tuple(labels)
    return slots


def _read_archive(
    directory: str, family: str = REQUESTS
) -> tuple[dict[Labels, Values], dict[Labels, float]]:
    """The archive's series, and since when those noted gone have had no route (a line
    that is not a series is skipped)."""
    out: dict[Labels, Values] = {}
    gone: dict[Labels, float] = {}
    for line in _read(os.path.join(directory, _archive(family))).split(b"\n"):
        try:
            labels, counts, buckets, total, *since = json.loads(line)
        except (ValueError, TypeError):
            continue
        if (
            len(since) <= 1
            and all(type(v) in (int, float) for v in since)
            and type(labels) is list
            and len(labels) == 4
            and all(type(v) is str for v in labels)
            and type(counts) is list
            and len(counts) == COUNTS
            and type(buckets) is list
            and len(buckets) == BUCKETS
            and all(type(v) is int for v in (*counts, *buckets))
            and type(total) in (int, float)
        ):
            add_values(out, tuple(labels), counts, buckets, float(total))
            if since:
                gone[tuple(labels)] = float(since[0])
    return out, gone


def _write_archive(
    directory: str,
    archive: dict[Labels, Values],
    gone: Mapping[Labels, float],
    family: str = REQUESTS,
) -> None:
    """The archive anew, put in place of the old one whole (OSError: the old stands):
    a line a series, ``[labels, counts, buckets, sum]``, and since when it has had no
    route where that is noted."""
    data = b"".join(
        _line(
            [list(labels), counts, buckets, total]
            if labels not in gone
            else [list(labels), counts, buckets, total, gone[labels]]
        )
        for labels, (counts, buckets, total) in archive.items()
    )
    os.close(_replace_whole(os.path.join(directory, _archive(family)), data))


def _replace_whole(path: str, data: bytes) -> int:
    """``path`` anew with ``data``, written beside it and put in its place (a reader has
    the old file or the new one, whole); the new file's descriptor, open for appending.
    OSError: the old file stands."""
    making = f"{path}.{os.getpid()}.new"
    fd = os.open(making, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.replace(making, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(making)
        raise
    return fd


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
