"""Prometheus metrics: what a leader counts, and ``{prefix}/metrics`` where it shows it.

    GET {prefix}/metrics   the Prometheus text format; the API's bearer token unless
                           ``Coyote(metrics="open")``; ``metrics="off"`` records nothing
                           and answers 404

They need prometheus-client (``pip install 'coyote-mw[metrics]'``).  Without it coyote
imports and serves as before, records nothing, and ``/metrics`` answers 501 naming the
extra.  The README's *Metrics* section has the table of names and labels.

Per request.  The access line's hook (``AccessLog.metrics``) calls ``Metrics.record``
once a request is answered, with its endpoint, status and start.  Labels come from the
route that matched - topology, method, pattern, service - never from the raw path, so
there are as many series as routes (times the five status classes), whatever the
clients send; a request no route took has all four empty.  A route's counts (by status
class) and latency buckets are plain integers in a ``_Series``, found by its endpoint
(a dict kept until the table changes) and added to under one uncontended lock: about
0.4 us a request, a quarter of what prometheus-client's own Counter and Histogram
take.  When scraped, coyote writes the two families of the requests itself (as
prometheus-client would, byte for byte: ``_requests_text``); the rest is
prometheus-client's exposition.

State (relay slots and queue, routes, ejected instances, the store) is read when
scraped, by the same collector: nothing per request.

Several worker processes (gunicorn ``-w N``): prometheus-client's multiprocess mode,
on when ``PROMETHEUS_MULTIPROC_DIR`` names a directory before the workers start.  Each
worker's ``_Series`` are then slots of memory-mapped files of its own there
(``coyote_mw.ops.metrics_files``), added to as in one process, and whichever worker
answers a scrape reads and sums every worker's files; every leader of a process counts
in the process's slots, under one lock (as prometheus-client's values are the
process's).  A collector cannot read another process's state, so each worker writes its state as
gauges every ``SAMPLE_INTERVAL`` seconds (the scraping worker at the scrape as well),
each with the multiprocess mode that adds workers up right: ``livesum`` for slots and
queues, ``livemax`` for routes and ejected instances (every worker holds the same
table), ``livemin`` for the store (down if any worker finds it down).

The event counters (``coyote_mw.events``: registrations, expiries, ejections, store
outages) are prometheus-client Counters of the process, shown by every leader in it.  In
multiprocess mode they, and the relay's saturations, are counted in slots of the
worker's own files instead (``metrics_files.EVENTS``: a slot an event and its labels,
the count its first number), so that ``mark_process_dead`` folds them with its
requests and removes its files: prometheus-client keeps a dead worker's counter file
for good, and a server that replaces its workers would keep one for every worker that
ever counted an event.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import logging
import os
import resource
import sys
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from coyote_mw import events
from coyote_mw.http.responses import Response, json_response
from coyote_mw.ops import metrics_files
from coyote_mw.ops.metrics_files import SeriesFiles, Slot, add_values, read_series

if TYPE_CHECKING:
    from coyote_mw.ops.base import Operator, OpsRequest

__all__ = [
    "BUCKETS",
    "MODES",
    "PATH",
    "SAMPLE_INTERVAL",
    "Metrics",
    "check_mode",
    "mark_process_dead",
    "requests_text_by_prometheus_client",
    "scrape",
    "serve",
]

logger = logging.getLogger("coyote_mw.metrics")

PATH = "/metrics"
MODES = ("token", "open", "off")
EXTRA = "pip install 'coyote-mw[metrics]'"

SAMPLE_INTERVAL = 1.0
"""Seconds between two writes of a worker's state, in multiprocess mode."""

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Upper bounds of the latency histogram, in seconds: in-process handlers answer in well
under a millisecond, relayed ones in milliseconds to seconds, and 30 s is the default
timeout."""

RETIRE_AFTER = 600.0
"""Seconds a route's series stay after its route left the table (counted from the first
scrape that finds it gone), so that scrapes see its last counts; then they are dropped
and a leader whose routes come and go keeps as many series as it has routes."""

ROUTE = ("topology", "method", "route", "service")
_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_BOUND_MAX = 4096  # endpoints kept in the cache; past it the cache starts over

# name -> (help, labels, multiprocess mode); read from the leader when scraped
GAUGES: dict[str, tuple[str, tuple[str, ...], Literal["livesum", "livemax", "livemin"]]] = {
    "coyote_relay_in_flight": (
        "Requests with a handler now (relay slots taken)",
        ("topology",),
        "livesum",
    ),
    "coyote_relay_queue_depth": ("Requests waiting for a relay slot", ("topology",), "livesum"),
    "coyote_relay_concurrency": ("Relay slots (the concurrency bound)", ("topology",), "livesum"),
    "coyote_relay_queue_capacity": (
        "Places in the relay queue (the queue bound)",
        ("topology",),
        "livesum",
    ),
    "coyote_routes": ("Routes in the table", ("topology",), "livemax"),
    "coyote_instances_ejected": (
        "Instances of a service ejected now (outlier detection)",
        ("topology", "service"),
        "livemax",
    ),
    "coyote_store_up": (
        "1 while the shared store is reachable, else 0 (absent without a store)",
        (),
        "livemin",
    ),
}
REQUESTS = ("coyote_requests", "Requests coyote answered, by route and status class")
DURATION = (
    "coyote_request_duration_seconds",
    "Seconds from a request's arrival to its answer, by route",
)
SATURATED = (
    "coyote_relay_saturated",
    "Requests refused 503 because the relay was full",
    ("topology",),
)

# event (coyote_mw.events) -> counter name (exposed with _total) and help
EVENT_COUNTERS: dict[str, tuple[str, str]] = {
    "registered": ("coyote_registrations", "Registrations taken through the API"),
    "deregistered": ("coyote_deregistrations", "Registrations deleted through the API"),
    "lease_expired": ("coyote_lease_expiries", "Leases dropped because their heartbeats stopped"),
    "ejected": ("coyote_instance_ejections", "Instances ejected, by cause (gateway, connect)"),
    "readmitted": (
        "coyote_instance_readmissions",
        "Ejected instances back, by cause (timer, heartbeat)",
    ),
    "store_unreachable": ("coyote_store_outages", "Times the shared store became unreachable"),
}


def check_mode(mode: str | bool) -> str:
    """``"token"`` (the default), ``"open"`` or ``"off"``; True / False are token / off."""
    if mode is True:
        return "token"
    if mode is False:
        return "off"
    if mode not in MODES:
        raise ValueError(
            f"metrics must be one of {', '.join(MODES)} (or True / False), not {mode!r}"
        )
    return str(mode)


class _Shared:
    """The process's event counters, and in multiprocess mode its gauges
    (prometheus-client's, written to files every worker shares) and its events' slots."""

    def __init__(self) -> None:
        from prometheus_client import values

        self.multiprocess = values.ValueClass is not values.MutexValue
        # In multiprocess mode an event is counted in a slot of this process's files
        # (_count_in_files), folded and removed with them once it has exited; where
        # they cannot be written, in memory (shown by this worker's scrapes alone), never
        # in prometheus-client's files, whose counter_<pid>.db outlives the process for
        # good (and on a full disk is a sparse map whose first write kills it: SIGBUS).
        # _FromFiles shows 0 for an unlabelled counter no worker counted, as one
        # process shows it.  All of it under _events_lock.
        # (With PROMETHEUS_MULTIPROC_DIR set but empty too: in memory then, said once.)
        self.events: dict[str, Any] = {}
        if not self.multiprocess:
            for event in EVENT_COUNTERS:
                self._counter(event)
        self.gauges: dict[str, Any] = {}
        self.directory = _multiprocess_directory()  # every worker's files (multiprocess)
        self.files: SeriesFiles | None = None  # this process's events' files
        self.slots: dict[tuple[str, ...], Slot] = {}  # an event series' slot, by its key
        self.unfiled: dict[tuple[str, ...], int] = {}  # ... counted where they could not be
        self._files_failed = False
        events.listen(self.counted)

    def gauge(self, name: str) -> Any:
        """A gauge of the state (multiprocess mode), made when first written: a gauge
        without labels is written to this process's file as soon as it is made, and
        ``coyote_store_up`` must stay absent where there is no store."""
        gauge = self.gauges.get(name)
        if gauge is None:
            from prometheus_client import Gauge

            text, labels, mode = GAUGES[name]
            gauge = Gauge(name, text, labels, multiprocess_mode=mode, registry=None)
            self.gauges[name] = gauge
        return gauge

    def _counter(self, event: str) -> Any:
        """The counter of ``event``, made if it is not yet (under ``_events_lock``)."""
        counter = self.events.get(event)
        if counter is None:
            from prometheus_client import Counter

            name, text = EVENT_COUNTERS[event]
            counter = Counter(name, text, events.EVENTS[event], registry=None)
            self.events[event] = counter
        return counter

    def counted(self, event: str, labels: tuple[str, ...]) -> None:
        try:
            # Made and counted under the lock, which a fork waits for (_before_fork): a
            # counter's first value writes its file under prometheus-client's own lock
            # too, and a child forked meanwhile would inherit both held for good
            with _events_lock:
                if self.multiprocess:
                    self._count_in_files(EVENT_COUNTERS[event][0], labels, 1)
                    return
                counter = self._counter(event)
                (counter.labels(*labels) if labels else counter).inc()
        except Exception:  # an event must never fail what emitted it
            logger.exception("could not count event %s %s", event, labels)

    def count_saturated(self, topology: str, n: int) -> None:
        """``n`` more requests refused because ``topology``'s relay was full (multiprocess
        mode: ``_Sampler`` counts them from the relays)."""
        with _events_lock:
            self._count_in_files(SATURATED[0], (topology,), n)

    def _count_in_files(self, name: str, labels: tuple[str, ...], n: int) -> None:
        """Multiprocess mode: ``n`` added to the series ``name`` / ``labels`` in this
        process's events' slots (its slot given on its first count, and held); where
        they cannot be written (said once), in ``unfiled`` (under ``_events_lock``)."""
        key = _event_key(name, labels)
        slot = self.slots.get(key)
        if slot is None:
            if key in self.unfiled:
                self.unfiled[key] += n
                return
            try:
                if self.files is None:
                    if not self.directory:  # (prometheus-client's mode on, its name unset)
                        raise OSError(errno.ENOENT, "PROMETHEUS_MULTIPROC_DIR is not set")
                    self.files = SeriesFiles(self.directory, metrics_files.EVENTS)
                slot = self.slots[key] = self.files.slot(key)
            except OSError as exc:
                if not self._files_failed:
                    self._files_failed = True
                    logger.error(
                        "metrics: could not write to %s (%s); this worker's events it had "
                        "not counted are shown only by its own scrapes",
                        self.directory,
                        exc,
                    )
                self.unfiled[key] = n
                return
        slot.counts[0] += n

    def forked(self) -> None:
        """In a forked child (under ``_events_lock``, made afresh): its events count in
        files of its own, never in its parent's."""
        if self.files is not None:
            self.files.close()
            self.files = None
        self.slots = {}
        self.unfiled = {}


def _multiprocess_directory() -> str:
    """The directory of every worker's files, as prometheus-client's collector finds it
    (it still reads the older, lower-case name too); "" when none is set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
        "prometheus_multiproc_dir",  # noqa: SIM112
        "",
    )


_shared: _Shared | None = None
# held while an event is counted, and by a fork (so that no child starts with it, or
# prometheus-client's lock taken under it, held): events are rare, the wait short
_events_lock = threading.RLock()
_missing = False  # prometheus-client is not installed
_shared_lock = threading.Lock()
# multiprocess mode: this process's slots (made when first needed), and the lock every
# leader here holds to add to them or change them (its ``_lock``)
_files: SeriesFiles | None = None
_files_lock = threading.Lock()


def _metrics_of_process() -> _Shared | None:
    """The process's metrics, made on first use; None without prometheus-client."""
    global _shared, _missing
    if _shared is None and not _missing:
        with _shared_lock:
            if _shared is None and not _missing:
                try:
                    _shared = _Shared()
                except ImportError:
                    _missing = True
    return _shared


class _Series:
    """One route's requests by status class, and its latency histogram (one process;
    in multiprocess mode a ``metrics_files.Slot``, the same numbers in a file)."""

    __slots__ = ("buckets", "counts", "labels", "sums")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.counts = [0] * len(_CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)  # not cumulative; the last is +Inf
        self.sums = [0.0]  # the seconds: a list, as a slot's is a view


_NO_ROUTE = ("", "", "", "")


def _event_key(name: str, labels: tuple[str, ...]) -> tuple[str, str, str, str]:
    """The labels of the slot (``metrics_files.EVENTS``) that counts the counter family
    ``name`` with ``labels``: a slot's labels are four strings."""
    return (name, json.dumps(labels), "", "")


_ABSENT = object()  # labels the archive does not have


def _labels(endpoint: Any) -> tuple[str, str, str, str]:
    if endpoint is None:
        return _NO_ROUTE
    return (endpoint.topology, endpoint.method, endpoint.pattern, endpoint.service)


class Metrics:
    """One leader's metrics: its per-request hook, its state, and its ``/metrics``.

    ``relays()`` gives the leader's relays by topology, ``leases()`` its registration
    API's lease keeper (None without the API); both are read when scraped.
    """

    def __init__(
        self,
        mode: str | bool,
        relays: Callable[[], Mapping[str, Any]],
        table: Any,
        leases: Callable[[], Any],
    ) -> None:
        self.relays, self.table, self.leases = relays, table, leases
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series | Slot] = {}  # by labels, a route each
        self._gone: dict[tuple[str, ...], float] = {}  # labels of no route now -> since
        self._files: SeriesFiles | None = None  # multiprocess mode: this process's slots
        self._files_failed = False  # ... could not be made (said once)
        # multiprocess mode: labels in the files of no route now -> since (by scrapes)
        self._hidden: dict[tuple[str, ...], float] = {}
        self._swept_at = 0  # how many series there were at the last sweep
        self.clock = time.monotonic  # when routes are found gone (``retire``)
        # endpoint -> its series (or children); a new dict at every change of the table,
        # so that endpoints it replaced are not kept alive here
        self._bound: dict[Any, Any] = {}
        table.subscribe(self._table_changed)
        self._registry: Any = None
        self.shared: _Shared | None = None
        self.mode = "off"
        self.configure(mode)
        _leaders.add(self)

    def configure(self, mode: str | bool) -> None:
        self.mode = check_mode(mode)
        if self.mode != "off":
            self.shared = _metrics_of_process()
            if self.shared is not None and self.shared.multiprocess:
                # the process's slots are every leader's: one lock for them all
                self._lock = _files_lock

    @property
    def recorder(self) -> Callable[[Any, int, float], None] | None:
        """The per-request hook (``AccessLog.metrics``); None when nothing is recorded."""
        shared = self.shared
        if self.mode == "off" or shared is None:
            return None
        return self.record

    def record(self, endpoint: Any, status: int, seconds: float) -> None:
        """A request answered in ``seconds``: ``endpoint`` the route it matched (None: no
        route)."""
        series = self._bound.get(endpoint)
        if series is None:
            series = self._bind(endpoint)
        c = status // 100
        i = bisect_left(BUCKETS, seconds)
        lock = self._lock
        # nothing in between can raise, so no try/finally (nor a with, which costs as
        # much again as the additions)
        lock.acquire()
        series.counts[c if 0 < c < 6 else 0] += 1
        series.buckets[i] += 1
        series.sums[0] += seconds
        lock.release()

    def _bind(self, endpoint: Any) -> _Series | Slot:
        labels = _labels(endpoint)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = self._new_series(labels)
            # its route is back (a request matched it): a grace from its next leaving
            self._gone.pop(labels, None)
            grown = len(self._series) > 2 * self._swept_at + 64
        if grown:  # unscraped: the series of routes that left are dropped here too
            self.retire()
        if len(self._bound) >= _BOUND_MAX:
            self._bound = {}
        self._bound[endpoint] = series
        return series

    def _new_series(self, labels: tuple[str, ...]) -> _Series | Slot:
        """A series for ``labels`` (under ``_lock``): in multiprocess mode a slot of this
        process's files, where every worker reads it."""
        shared = self.shared
        if shared is None or not shared.multiprocess or not shared.directory:
            return _Series(labels)
        _sampler.watch(self)  # this process serves: it writes its state
        global _files
        try:
            if _files is None:
                _files = SeriesFiles(shared.directory)
            self._files = _files
            return _files.slot(labels)
        except OSError as exc:  # a full disk, no such directory: counted here alone
            self._failed(exc)
            return _Series(labels)

    def _failed(self, exc: OSError) -> None:
        """This worker's files could not be written (said once)."""
        if not self._files_failed:
            self._files_failed = True
            logger.error(
                "metrics: could not write to %s (%s); this worker's requests of routes "
                "it had not counted are shown only by its own scrapes",
                self.shared.directory if self.shared is not None else "",
                exc,
            )

    def _table_changed(self, change: Any) -> None:
        self._bound = {}

    # -- scraping ----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition and its content type."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        shared = self.shared
        assert shared is not None
        encode, content_type = choose_encoder("")  # the classic text format, 0.0.4
        if shared.multiprocess:
            _sampler.watch(self)
            _sampler.write_or_say()  # this worker's state as it is now
            registry = CollectorRegistry()
            # (the requests' files are read under the directory's lock, in _merged; not
            # taken around the rest too: a fold waiting for it in between would hold up
            # both): the events' slots are read with them
            counted: dict[tuple[str, ...], float] = {}
            text = _requests_text(self, counted)
            with _events_lock:  # and what this worker could not write
                for key, n in shared.unfiled.items():
                    counted[key] = counted.get(key, 0) + n
            present = os.path.isdir(shared.directory)
            registry.register(_FromFiles(counted, shared.directory if present else None))
            if not present and not self._files_failed:  # removed under the workers
                self._files_failed = True
                logger.error(
                    "metrics: %s is gone; scrapes show this worker's alone", shared.directory
                )
            return text.encode("utf-8") + encode(registry), content_type
        if self._registry is None:
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            registry = CollectorRegistry()
            registry.register(_Collector(self))
            for counter in shared.events.values():
                registry.register(counter)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            self._registry = registry
        # the requests' families written here: a series per route, and prometheus-client
        # takes some 25 us a line for what is a few string joins (10,000 routes: 1.6 s)
        return _requests_text(self).encode("utf-8") + encode(self._registry), content_type

    def retire(self, now: float | None = None) -> set[tuple[str, ...]]:
        """Drop the series of routes that left the table ``RETIRE_AFTER`` seconds ago
        or more (not the series of requests no route took); note the newly gone.  In
        multiprocess mode twice as late: scrapes, each worker's on its own clock, stop
        showing a route ``RETIRE_AFTER`` after they find it gone (``_merged``), and a
        slot freed before that would make the total they show fall.  Returns the labels
        of the routes in the table now."""
        now = self.clock() if now is None else now
        live: set[tuple[str, ...]] = {_labels(ep) for ep in self.table.endpoints()}
        shared = self.shared
        after = RETIRE_AFTER * 2 if shared is not None and shared.multiprocess else RETIRE_AFTER
        with self._lock:
            gone = self._gone
            dropped = False
            for labels in list(self._series):
                if labels in live or labels == _NO_ROUTE:
                    gone.pop(labels, None)
                elif labels not in gone:
                    gone[labels] = now
                elif now - gone[labels] >= after:
                    series = self._series.pop(labels)
                    del gone[labels]
                    dropped = True
                    if type(series) is Slot and self._files is not None:
                        try:
                            self._files.free(series)  # given again to the next new route
                        except OSError as exc:
                            self._failed(exc)
            self._swept_at = len(self._series)
            if dropped:  # an endpoint of it still bound (its request answered late)
                self._bound = {}  # binds a series of its own again
        return live

    def snapshot(
        self, counted: dict[tuple[str, ...], float] | None = None
    ) -> list[tuple[tuple[str, ...], list[int], list[int], float]]:
        """Each route's labels, counts by status class, bucket counts and sum (a copy);
        series of routes long gone are dropped first (``retire``).  In multiprocess
        mode: every worker's, summed (``_merged``), and ``counted`` given the events'
        series read with them (by their slots' labels: ``_event_key``)."""
        live = self.retire()
        shared = self.shared
        if shared is not None and shared.multiprocess:
            return self._merged(shared.directory, live, counted)
        with self._lock:
            return [
                (s.labels, list(s.counts), list(s.buckets), s.sums[0])
                for s in self._series.values()
            ]

    def _merged(
        self,
        directory: str,
        live: set[tuple[str, ...]],
        counted: dict[tuple[str, ...], float] | None = None,
    ) -> list[tuple[tuple[str, ...], list[int], list[int], float]]:
        """Every worker's series in ``directory`` summed by labels, and this worker's
        that are not in a file.  Labels of no route now (not in ``live``) are shown for
        ``RETIRE_AFTER`` seconds from the first scrape here that finds them gone, or from
        when the archive says a scrape found them gone, if earlier (a worker drops its
        own series twice as late, and frees their slots; the archive's are dropped
        twice as late too, by the scrape that finds them so and no slot of them)."""
        now = self.clock()
        # the archive's labels, and since when each has had no route as it noted it
        archived: dict[tuple[str, ...], float | None] = {}
        held: set[tuple[str, ...]] = set()  # ... and the workers' slots'
        with metrics_files.locked(directory):
            merged = read_series(directory, archived, held)
            if counted is not None:  # with them: a fold is seen in both or in neither
                events_read = read_series(directory, family=metrics_files.EVENTS)
                for labels, values in events_read.items():
                    counted[labels] = values[0][0]
        noted: dict[tuple[str, ...], float | None] = {}  # news for the archive
        drop: dict[tuple[str, ...], float] = {}  # its series to drop: gone since
        with self._lock:
            for s in self._series.values():
                if type(s) is _Series:  # its files could not be written
                    add_values(merged, s.labels, list(s.counts), list(s.buckets), s.sums[0])
            hidden = {labels: self._hidden[labels] for labels in merged if labels in self._hidden}
            out = []
            for labels, (counts, buckets, total) in merged.items():
                kept = archived.get(labels, _ABSENT)
                if labels in live or labels == _NO_ROUTE:
                    hidden.pop(labels, None)
                    if kept is not None and kept is not _ABSENT:
                        noted[labels] = None  # a route again
                    out.append((labels, counts, buckets, total))
                    continue
                # gone since this worker first found it so, or the archive says earlier
                # (a worker before this one found it: workers that live less than the
                # grace time it from then, not each from its own first scrape)
                since = hidden.get(labels, now)
                if type(kept) is float and kept < since:
                    since = kept
                hidden[labels] = since
                if kept is not _ABSENT and kept != since:
                    noted[labels] = since
                if now - since >= RETIRE_AFTER:
                    # twice as late the archive drops it, once no worker holds a slot of
                    # it (each frees its own twice as late on its own clock, retire,
                    # maybe later: until then the note stays for workers to come)
                    late = now - since >= 2 * RETIRE_AFTER
                    if late and kept is not _ABSENT and labels not in held:
                        drop[labels] = since
                    continue
                out.append((labels, counts, buckets, total))
            self._hidden = hidden
        if noted or drop:  # (the lock taken exclusively, so not while read)
            try:
                metrics_files.update_archive(directory, noted, drop)
            except OSError as exc:
                logger.warning("metrics: cannot update the archive: %s", exc)
        return out


_marking = threading.local()  # .queue: mark_process_dead's calls made during one


def mark_process_dead(pid: int, directory: str | None = None) -> bool:
    """Multiprocess mode: what to do once worker ``pid`` has exited, in the process that
    saw it exit (``coyote leader --workers``'s supervisor does it; under gunicorn, call it
    from ``child_exit``).  prometheus-client's ``mark_process_dead`` (the worker's live
    gauges dropped), then its request and event counts folded into the directory's
    archives and its files removed (``metrics_files.fold``), so that a server that
    replaces its workers keeps no more files than it has workers.  ``directory``:
    ``PROMETHEUS_MULTIPROC_DIR`` when not given.  False, and said: the counts not folded
    stay in the worker's files (still read, and counted), as when it is not called.
    Called again in the same thread while it runs (a signal handler): done after it, and
    True."""
    if directory is None:
        directory = _multiprocess_directory()
    if not directory:
        raise ValueError("mark_process_dead: PROMETHEUS_MULTIPROC_DIR is not set")
    queue: list[tuple[int, str]] | None = getattr(_marking, "queue", None)
    if queue is not None:
        # called during this thread's own call, by a signal handler (gunicorn 22 and 23
        # run child_exit in their SIGCHLD handler): done once that call is, not here,
        # where the fold would wait for the lock that call holds (in vain, both giving up)
        queue.append((pid, directory))
        return True
    _marking.queue = queue = []
    try:
        folded = _mark_dead(pid, directory)
        while queue:
            _mark_dead(*queue.pop(0))
    finally:
        _marking.queue = None
    return folded


def _mark_dead(pid: int, directory: str) -> bool:
    try:
        from prometheus_client import multiprocess
    except ImportError:
        pass
    else:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    # a gauge file it was making when it ended (_made_reserved), with its blocks
    for stray in glob.glob(os.path.join(glob.escape(directory), f"gauge_*_{pid}.db.{pid}.*.new")):
        with contextlib.suppress(OSError):
            os.remove(stray)
    try:
        folded = metrics_files.fold(directory, pid)
    except OSError as exc:
        logger.warning(
            "metrics: worker %d's counts not all folded (the files of those not folded stay, "
            "still counted): %s",
            pid,
            exc,
        )
        return False
    if not folded:
        logger.warning(
            "metrics: worker %d's counts not folded (its files stay): %s locked for %g s",
            pid,
            directory,
            metrics_files.LOCK_WAIT,
        )
    return folded


def serve(ops: Operator, request: OpsRequest) -> Response:
    """The view (``coyote_mw.ops.api.VIEWS``): answered before any body is read, the
    token checked here unless ``metrics="open"`` (it is the leader's setting)."""
    metrics: Metrics | None = ops.metrics
    if metrics is None or metrics.mode != "open":
        refusal = ops.registration.unauthorized(request.headers)
        if refusal is not None:
            return refusal
    return scrape(metrics, request.method)


def scrape(metrics: Metrics | None, method: str) -> Response:
    """The answer to ``GET {prefix}/metrics`` (its token, if it needs one, checked)."""
    if method != "GET" and method != "HEAD":
        return json_response(
            {
                "error": "Method not allowed",
                "method": method,
                "path": PATH,
                "allowed": ["GET", "HEAD"],
            },
            405,
            [("allow", "GET, HEAD")],
        )
    if metrics is None or metrics.mode == "off":
        return json_response(
            {
                "error": "Metrics are off",
                "detail": "Coyote(metrics='token' or 'open') turns them on",
            },
            404,
        )
    if metrics.shared is None:
        return json_response(
            {"error": "Metrics need prometheus-client", "detail": EXTRA, "extra": "metrics"},
            501,
        )
    body, content_type = metrics.render()
    return Response(body, 200, [("cache-control", "no-store")], content_type)


# -- a leader's state ----------------------------------------------------------------------


def _state(
    leaders: Iterable[Metrics],
) -> tuple[dict[str, dict[tuple[str, ...], float]], dict[Any, str]]:
    """The gauges' values over ``leaders`` (summed by label set; the store's: the
    least), and every relay with its topology (for the saturation counter)."""
    values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in GAUGES}
    relays: dict[Any, str] = {}

    def add(name: str, labels: tuple[str, ...], value: float) -> None:
        values[name][labels] = values[name].get(labels, 0) + value

    for leader in leaders:
        for topology, relay in list(leader.relays().items()):
            relays[relay] = topology
            add("coyote_relay_in_flight", (topology,), relay.active)
            add("coyote_relay_queue_depth", (topology,), relay.waiting)
            add("coyote_relay_concurrency", (topology,), relay.concurrency)
            add("coyote_relay_queue_capacity", (topology,), relay.queue)
        ejected: set[tuple[str, str, str]] = set()
        services: set[tuple[str, str]] = set()
        for ep in leader.table.endpoints():
            add("coyote_routes", (ep.topology,), 1)
            services.add((ep.topology, ep.service))
            for inst in ep.instances:
                if getattr(inst.handler, "ejected", False):
                    ejected.add((ep.topology, ep.service, inst.instance))
        for pair in services:
            add("coyote_instances_ejected", pair, 0)
        for topology, service, _ in ejected:
            add("coyote_instances_ejected", (topology, service), 1)
        up = getattr(leader.leases(), "store_up", None)
        if up is not None:
            now = values["coyote_store_up"].get((), 1.0)
            values["coyote_store_up"][()] = min(now, 1.0 if up else 0.0)
    return values, relays


def _requests_text(metrics: Metrics, counted: dict[tuple[str, ...], float] | None = None) -> str:
    """The requests' two families (``REQUESTS``, ``DURATION``) in the text format,
    exactly as prometheus-client writes them from a ``CounterMetricFamily`` and a
    ``HistogramMetricFamily`` (tests/test_metrics.py compares the two): label names
    sorted, label values escaped, numbers as Go writes floats.  ``counted``: as
    ``Metrics.snapshot``."""
    from prometheus_client.utils import floatToGoString

    les = _bucket_bounds()
    requests, duration = REQUESTS[0] + "_total", DURATION[0]
    counts_out = [
        f"# HELP {requests} {_help(REQUESTS[1])}\n# TYPE {requests} counter\n",
    ]
    durations_out = [
        f"# HELP {duration} {_help(DURATION[1])}\n# TYPE {duration} histogram\n",
    ]
    add_count, add_duration = counts_out.append, durations_out.append
    for labels, counts, buckets, total in sorted(metrics.snapshot(counted)):
        topology, method, route, service = (_label_value(v) for v in labels)
        inner = f'method="{method}",route="{route}",service="{service}"'
        tail = f'topology="{topology}"}} '
        for c, count in enumerate(counts):
            if count:
                add_count(f'{requests}{{{inner},status="{_CLASSES[c]}",{tail}{_go(count)}\n')
        inner = f"{inner},{tail}"
        running = 0
        for le, count in zip(les, buckets, strict=True):
            running += count
            add_duration(f'{duration}_bucket{{le="{le}",{inner}{_go(running)}\n')
        add_duration(f"{duration}_count{{{inner}{_go(running)}\n")
        add_duration(f"{duration}_sum{{{inner}{floatToGoString(total)}\n")  # type: ignore[no-untyped-call]
    return "".join(counts_out) + "".join(durations_out)


def requests_text_by_prometheus_client(metrics: Metrics) -> str:
    """The same two families made as prometheus-client's own ``CounterMetricFamily``
    and ``HistogramMetricFamily`` and written by its ``generate_latest``: what the scrape
    wrote before, the reference ``_requests_text`` is held to (tests/test_metrics.py)
    and measured against (benchmarks/operator_views.py)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily(*REQUESTS[:2], labels=(*ROUTE, "status"))
    duration = HistogramMetricFamily(*DURATION, labels=ROUTE)
    les = _bucket_bounds()
    for labels, counts, buckets, total in sorted(metrics.snapshot()):
        for c, count in enumerate(counts):
            if count:
                requests.add_metric((*labels, _CLASSES[c]), count)
        cumulative: list[tuple[str, float]] = []
        running = 0
        for le, count in zip(les, buckets, strict=True):
            running += count
            cumulative.append((le, running))
        duration.add_metric(labels, cumulative, total)

    class _Families:
        def collect(self) -> Iterator[Any]:
            yield requests
            yield duration

    registry = CollectorRegistry()
    registry.register(_Families())
    return generate_latest(registry).decode("utf-8")


def _bucket_bounds() -> list[str]:
    """The histogram's ``le`` values as prometheus-client writes them ("0.0005", "1.0",
    ..., "+Inf")."""
    from prometheus_client.utils import floatToGoString

    return [floatToGoString(b) for b in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go(count: int) -> str:
    """A count as prometheus-client writes a float (``floatToGoString``): Go switches to
    an exponent from 1e6 up."""
    if count < 1_000_000:
        return f"{count}.0"
    from prometheus_client.utils import floatToGoString

    return floatToGoString(count)  # type: ignore[no-any-return, no-untyped-call]


class _Collector:
    """A custom collector over one leader (one process): its state as it is when
    scraped (its requests: ``_requests_text``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = weakref.ref(metrics)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        metrics = self._metrics()
        if metrics is None:
            return
        # (the requests' families come first, from _requests_text)
        values, relays = _state([metrics])
        for name, (text, labels, _) in GAUGES.items():
            family = GaugeMetricFamily(name, text, labels=labels)
            for key, value in sorted(values[name].items()):
                family.add_metric(key, value)
            yield family
        saturated = CounterMetricFamily(*SATURATED[:2], labels=SATURATED[2])
        totals: dict[str, int] = {}
        for relay, topology in relays.items():
            totals[topology] = totals.get(topology, 0) + relay.saturated
        for topology, count in sorted(totals.items()):
            saturated.add_metric((topology,), count)
        yield saturated


class _FromFiles:
    """prometheus-client's collector over every worker's files (multiprocess mode),
    without the requests' families (``_requests_text`` writes them): workers of an
    older version counted them in prometheus-client's files, which may still be there,
    and a family written twice fails the whole scrape.  The event counters (and the
    saturations) are the sums of the events' slots (``counted``, by ``_event_key``) and
    of what prometheus-client's files hold of them (an older version's workers, or a
    worker that could not write its slots), a family each."""

    def __init__(self, counted: Mapping[tuple[str, ...], float], directory: str | None) -> None:
        """``directory``: prometheus-client's files (None: it is gone, the events alone)."""
        self.counted = counted
        self.directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        ours = (REQUESTS[0], DURATION[0])
        counters = {
            name: (text, events.EVENTS[event]) for event, (name, text) in EVENT_COUNTERS.items()
        }
        counters[SATURATED[0]] = (SATURATED[1], SATURATED[2])
        totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in counters}
        for (name, labels, _, _), value in self.counted.items():
            try:
                key = tuple(json.loads(labels))
            except (ValueError, TypeError):  # not a line of ours
                continue
            if not all(type(v) is str for v in key):
                continue
            if name in totals and len(key) == len(counters[name][1]):
                totals[name][key] = totals[name].get(key, 0) + value
        families = _readable_families(self.directory) if self.directory is not None else []
        for family in families:
            if family.name in ours:
                continue
            if family.name not in counters:
                yield family
                continue
            names = counters[family.name][1]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = tuple(sample.labels.get(n, "") for n in names)
                    totals[family.name][key] = totals[family.name].get(key, 0) + sample.value
        for name, (text, names) in counters.items():
            values = totals[name]
            if not names:  # shown at 0 until some worker counts one, as one process shows it
                yield CounterMetricFamily(name, text, value=values.get((), 0))
            elif values:
                family = CounterMetricFamily(name, text, labels=names)
                for key, value in sorted(values.items()):
                    family.add_metric(key, value)
                yield family


_unreadable: set[str] = set()  # files of prometheus-client's said to be unreadable


def _readable_families(directory: str) -> list[Any]:
    """The families of prometheus-client's files in ``directory``, merged as its
    ``MultiProcessCollector`` merges them, but for a file it cannot read (an empty one,
    left by a worker that had no room to size it): that file is left out, and said once,
    rather than failing the whole scrape for as long as it stays."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = sorted(glob.glob(os.path.join(directory, "*.db")))
    try:
        return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]
    except Exception:
        pass
    readable = []
    for path in files:
        try:
            MultiProcessCollector.merge([path], accumulate=True)  # type: ignore[no-untyped-call]
        except FileNotFoundError:  # removed meanwhile (mark_process_dead)
            continue
        except Exception as exc:
            if path not in _unreadable:
                if len(_unreadable) >= 1024:
                    _unreadable.clear()
                _unreadable.add(path)
                logger.error("metrics: %s cannot be read, and is left out: %r", path, exc)
            continue
        readable.append(path)
    try:
        return list(MultiProcessCollector.merge(readable, accumulate=True))  # type: ignore[no-untyped-call]
    except Exception:  # one that changed meanwhile: the next scrape
        logger.exception("metrics: prometheus-client's files could not be read")
        return []


class _Sampler:
    """Multiprocess mode: each serving worker writes its leaders' state as gauges,
    every ``SAMPLE_INTERVAL`` seconds, from a daemon thread of its own."""

    def __init__(self) -> None:
        self._leaders: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self._seen: dict[str, set[tuple[str, ...]]] = {name: set() for name in GAUGES}
        self._counted: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False
        # the gauge series in this process's gauge files, by multiprocess mode
        self._filed: dict[str, set[tuple[str, tuple[str, ...]]]] = {}
        self._filed_pid = 0

    def watch(self, metrics: Metrics) -> None:
        if metrics in self._leaders and self._thread is not None:
            return
        with self._lock:
            self._leaders.add(metrics)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="coyote-metrics", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_INTERVAL)
            self.write_or_say()

    def write_or_say(self) -> None:
        """``write``, and a failure said once (a leader closing meanwhile, its directory
        gone, a full disk), until a write works again: a scrape goes on without it."""
        try:
            self.write()
        except Exception:
            if not self._failing:
                self._failing = True
                logger.exception("could not write this worker's metrics (said once)")
            return
        if self._failing:
            self._failing = False
            logger.warning("writing this worker's metrics again")

    def write(self) -> None:
        shared = _shared
        if shared is None:
            return
        with self._lock:
            values, relays = _state(list(self._leaders))
            # the saturations first: they are counted in memory where the files cannot
            # be written, which the gauges below are not (and may raise)
            for relay, topology in relays.items():
                done = relay.saturated
                new = done - self._counted.get(relay, 0)
                if new > 0:  # (then _events_lock: nothing holding that takes this one)
                    shared.count_saturated(topology, new)
                self._counted[relay] = done
            written = {
                name: self._seen[name] | set(current)
                for name, current in values.items()
                if current or self._seen[name] - set(current)
            }
            pid = os.getpid()
            if self._filed_pid != pid:  # (a fork: prometheus-client's files start anew)
                self._filed, self._filed_pid = {}, pid
            _reserve_gauge_files(written, self._filed)
            for name, current in values.items():
                if name not in written:
                    continue
                gone = written[name] - set(current)
                gauge = shared.gauge(name)
                for labels in gone:  # 0, not its last value
                    (gauge.labels(*labels) if labels else gauge).set(0)
                for labels, value in current.items():
                    (gauge.labels(*labels) if labels else gauge).set(value)
                self._seen[name] |= set(current)
                self._filed.setdefault(GAUGES[name][2], set()).update(
                    (name, values) for values in written[name]
                )

    def forked(self) -> None:
        # the thread stayed in the parent; leaders come back by serving here
        self._thread = None
        self._leaders = weakref.WeakSet()
        self._lock = threading.Lock()


_GAUGE_FILE_MIN = 1 << 16  # a gauge file's first size (prometheus_client.mmap_dict)
# fallocate's answers that mean it cannot reserve here (the file system, a filter)
_CANNOT = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.ENODEV)
# link's that mean no hard links on this file system
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)
_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE
_fallocate: Any = None  # fallocate(2), found at the first reservation (False: none here)
_reserved: dict[tuple[int, int], int] = {}  # bytes reserved, by file (device, inode)


def _reserve_gauge_files(
    series: Mapping[str, Iterable[tuple[str, ...]]],
    filed: Mapping[str, set[tuple[str, tuple[str, ...]]]],
) -> None:
    """Disk blocks for the gauge files a sample writes, before prometheus-client writes
    to them: ``series``, by gauge, every label tuple the sample writes; ``filed``, by
    multiprocess mode, the series in this process's files already.

    prometheus-client makes a gauge file sparse (``truncate``: 64 KiB, doubled when it
    fills) and writes it through a memory map: on a disk with no room, its first write
    to a page with no block is SIGBUS, which kills the worker.  Each file is given here,
    beyond its end (``fallocate`` with ``FALLOC_FL_KEEP_SIZE``: its size stays
    prometheus-client's, which never shrinks it), the blocks of the size
    prometheus-client would grow it to for the series not in it yet; a file not made
    yet is made with them under another name and linked into place (made in place
    where there are no hard links).  A full disk, a quota or the file size limit
    (``RLIMIT_FSIZE``) is then an OSError here: the sample is skipped, and
    ``_Sampler.write_or_say`` says so.  Where ``fallocate`` is not (not Linux) or the
    file system cannot reserve, the files are written as prometheus-client writes them
    (and on a copy-on-write file system blocks reserved are no promise)."""
    fallocate = _fallocate if _fallocate is not None else _find_fallocate()
    if not fallocate:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # as prometheus-client reads it
    if directory is None:
        directory = os.environ.get("prometheus_multiproc_dir", "")  # noqa: SIM112
    by_mode: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for name, labels in series.items():
        by_mode.setdefault(GAUGES[name][2], []).extend((name, values) for values in labels)
    if len(_entry_sizes) > 65536:
        _entry_sizes.clear()
    pid = os.getpid()
    for mode, entries in by_mode.items():
        path = os.path.join(directory, f"gauge_{mode}_{pid}.db")
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            fd = _made_reserved(fallocate, path, sum(_entry_size(*e) for e in entries))
            if fd < 0:
                continue
        try:
            head = os.pread(fd, 4, 0)
            used = int.from_bytes(head, sys.byteorder, signed=True) if len(head) == 4 else 0
            known = filed.get(mode, set()) if used > 8 else set()
            size = sum(_entry_size(*e) for e in entries if e not in known)
            _reserve(fallocate, fd, max(used, 8) + size)
        finally:
            os.close(fd)


def _made_reserved(fallocate: Any, path: str, size: int) -> int:
    """``path`` made with the blocks of ``size`` bytes of entries and its first 64 KiB
    (the size prometheus-client then finds): -1; or, when another made it meanwhile, a
    descriptor of that one, to reserve as any other."""
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.new"  # (read as no .db file)
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        _reserve(fallocate, fd, 8 + size)
        os.ftruncate(fd, _GAUGE_FILE_MIN)  # within its blocks
        try:
            os.link(temp, path)
        except FileExistsError:
            return os.open(path, os.O_RDWR)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            return _made_in_place(path)
        return -1
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _made_in_place(path: str) -> int:
    """Where there are no hard links: ``path`` made (or found) at prometheus-client's
    first size, its blocks to be reserved; a file that cannot have them stays (sparse,
    not written: each sample tries again), never removed under prometheus-client."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return os.open(path, os.O_RDWR)
    os.ftruncate(fd, _GAUGE_FILE_MIN)
    return fd


def _reserve(fallocate: Any, fd: int, used: int) -> None:
    """Blocks for ``fd`` up to what prometheus-client grows it to once ``used`` bytes
    are in it: it doubles the file from the size it has (its capacity), 64 KiB at first."""
    st = os.fstat(fd)
    target = st.st_size or _GAUGE_FILE_MIN
    while target < used:
        target *= 2
    key = (st.st_dev, st.st_ino)
    if _reserved.get(key, 0) >= target:
        return  # (reserved before: no write to the file, not even of its times)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and target > limit:  # (not every file system checks)
        raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)} (RLIMIT_FSIZE {limit})")
    while fallocate(fd, _KEEP_SIZE, 0, target) != 0:
        code = ctypes.get_errno()
        if code == errno.EINTR:
            continue
        if code in _CANNOT:
            return
        raise OSError(code, os.strerror(code))
    if len(_reserved) >= 64:
        _reserved.clear()
    _reserved[key] = target


def _find_fallocate() -> Any:
    """libc's ``fallocate`` (64-bit offsets), or False where there is none."""
    global _fallocate
    found: Any = False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for symbol in ("fallocate64", "fallocate"):
            function = getattr(libc, symbol, None)
            if function is not None and (symbol == "fallocate64" or sys.maxsize > 2**32):
                function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
                function.restype = ctypes.c_int
                found = function
                break
    except OSError:
        pass
    _fallocate = found
    return found


_entry_sizes: dict[tuple[str, tuple[str, ...]], int] = {}


def _entry_size(name: str, values: tuple[str, ...]) -> int:
    """The bytes of gauge ``name``'s entry for ``values`` in its file, at most."""
    size = _entry_sizes.get((name, values))
    if size is None:
        text, names, _ = GAUGES[name]
        key = json.dumps([name, name, dict(zip(names, values, strict=True)), text])
        # its length (4), its key padded to 8 (at most 8 more), its value and timestamp
        # (16); and room for a key that prometheus-client spells a little longer
        size = _entry_sizes[(name, values)] = len(key.encode()) + 28 + 64
    return size


_sampler = _Sampler()
_leaders: weakref.WeakSet[Metrics] = weakref.WeakSet()


def _forked() -> None:
    # A worker forked from a process that made the leaders (gunicorn --preload): each
    # leader binds its routes again, and the first request it serves starts the sampler
    # here (the parent, which serves nothing, writes no state).  In multiprocess mode
    # it counts in files of its own, never in its parent's slots.
    global _files, _files_lock
    _sampler.forked()
    parents, _files_lock = _files_lock, threading.Lock()
    if _files is not None:
        _files.close()
        _files = None
    if _shared is not None:
        _shared.forked()
    for metrics in list(_leaders):
        metrics._bound = {}
        if metrics._lock is not parents:  # one process's metrics (its own lock)
            metrics._lock = threading.Lock()
            continue
        metrics._lock = _files_lock
        metrics._files = None
        metrics._series = {}
        metrics._gone = {}
        metrics._swept_at = 0


def _before_fork() -> None:
    _events_lock.acquire()


def _after_fork_in_parent() -> None:
    _events_lock.release()


def _after_fork_in_child() -> None:
    global _events_lock
    _events_lock = threading.RLock()
    _forked()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
