"""Where an access line goes when the logging set-up changes between two requests.

``AccessLog`` decides the common case (one ``BufferedFileHandler`` of its own format,
nothing else on the way) without asking ``_destination()``; each change below must be
seen by the very next request, and undoing it must bring the direct line back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, Request, route
from coyote_mw.logs import DEFER_BATCH, BufferedFileHandler
from coyote_mw.middleware import accesslog


class Items(Client):
    service = "items"

    @route("GET", "/items/{id:int}")
    def item(self, request: Request) -> str:
        return "ok"


class Kept(logging.Handler):
    """Keeps the messages of the records it is given."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "access.log"
        self.handler = BufferedFileHandler(self.path, flush_interval=60)
        self.logger = logging.getLogger("coyote_mw.access")
        self.kept: Kept | None = None  # a handler a change added
        self.coyote = Coyote(timeout=5)
        self.coyote.register(Items())
        self.client = httpx.Client(
            transport=httpx.WSGITransport(self.coyote.wsgi()), base_url="http://t"
        )

    def only(self) -> None:
        """The set-up's handler alone on the logger: pytest hangs its capture handlers
        on non-propagating loggers as each test starts (after its fixtures)."""
        self.logger.handlers[:] = [self.handler]

    def get(self, n: int) -> None:
        assert self.client.get(f"/items/{n}").status_code == 200

    def lines(self) -> list[str]:
        """The paths of the lines in the file so far."""
        self.handler.flush()
        return [line.split()[3] for line in self.path.read_text().splitlines()]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """The access logger writing to a BufferedFileHandler only, as on a server."""
    s = Setup(tmp_path)
    access = s.logger
    saved = access.handlers[:], access.level, access.propagate
    access.setLevel(logging.INFO)
    access.propagate = False
    yield s
    access.handlers[:], level, access.propagate = saved
    access.setLevel(level)
    access.filters.clear()
    access.disabled = False
    logging.disable(logging.NOTSET)
    s.client.close()
    s.coyote.close()
    s.handler.close()


def _add_kept(s: Setup) -> Callable[[], Any]:
    kept = s.kept = Kept()
    s.logger.addHandler(kept)
    return lambda: s.logger.removeHandler(kept)


def _replace_handler(s: Setup) -> Callable[[], Any]:
    kept = Kept()
    s.logger.handlers[0] = kept  # in place: the same list, the same length

    def undo() -> None:
        s.logger.handlers[0] = s.handler

    return undo


def _remove_handler(s: Setup) -> Callable[[], Any]:
    s.logger.removeHandler(s.handler)
    return lambda: s.logger.addHandler(s.handler)


def _logger_level(s: Setup) -> Callable[[], Any]:
    s.logger.setLevel(logging.WARNING)
    return lambda: s.logger.setLevel(logging.INFO)


def _ancestor_level(s: Setup) -> Callable[[], Any]:
    s.logger.setLevel(logging.NOTSET)  # its level is then its ancestor's
    parent = logging.getLogger("coyote_mw")
    level = parent.level
    parent.setLevel(logging.WARNING)

    def undo() -> None:
        parent.setLevel(level)
        s.logger.setLevel(logging.INFO)

    return undo


def _disable_all(s: Setup) -> Callable[[], Any]:
    logging.disable(logging.INFO)
    return lambda: logging.disable(logging.NOTSET)


def _logger_disabled(s: Setup) -> Callable[[], Any]:
    s.logger.disabled = True  # what dictConfig does to the loggers it does not name

    def undo() -> None:
        s.logger.disabled = False

    return undo


def _handler_level(s: Setup) -> Callable[[], Any]:
    s.handler.setLevel(logging.WARNING)
    return lambda: s.handler.setLevel(logging.NOTSET)


def _handler_filter(s: Setup) -> Callable[[], Any]:
    def drop(record: logging.LogRecord) -> bool:
        return False

    s.handler.addFilter(drop)
    return lambda: s.handler.removeFilter(drop)


def _logger_filter(s: Setup) -> Callable[[], Any]:
    def drop(record: logging.LogRecord) -> bool:
        return False

    s.logger.addFilter(drop)
    return lambda: s.logger.removeFilter(drop)


def _propagate(s: Setup) -> Callable[[], Any]:
    kept = s.kept = Kept()
    root = logging.getLogger()
    root.addHandler(kept)
    s.logger.propagate = True

    def undo() -> None:
        s.logger.propagate = False
        root.removeHandler(kept)

    return undo


def _formatter(s: Setup) -> Callable[[], Any]:
    s.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))  # with msecs

    def undo() -> None:
        s.handler.formatter = None

    return undo


# each change: (what it does, the paths of the file's lines for requests 1, 2, 3 - the
# second made after the change, the third after it is undone)
CHANGES: dict[str, tuple[Callable[[Setup], Callable[[], Any]], list[str]]] = {
    "a second handler": (_add_kept, ["/items/1", "/items/2", "/items/3"]),
    "the handler replaced in place": (_replace_handler, ["/items/1", "/items/3"]),
    "the handler removed": (_remove_handler, ["/items/1", "/items/3"]),
    "the logger's level": (_logger_level, ["/items/1", "/items/3"]),
    "an ancestor's level": (_ancestor_level, ["/items/1", "/items/3"]),
    "logging.disable()": (_disable_all, ["/items/1", "/items/3"]),
    "the logger disabled": (_logger_disabled, ["/items/1", "/items/3"]),
    "the handler's level": (_handler_level, ["/items/1", "/items/3"]),
    "a filter on the handler": (_handler_filter, ["/items/1", "/items/3"]),
    "a filter on the logger": (_logger_filter, ["/items/1", "/items/3"]),
    "propagation to a handler above": (_propagate, ["/items/1", "/items/2", "/items/3"]),
    "a formatter on the handler": (_formatter, ["/items/1", "/items/2", "/items/3"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_to_logging_is_seen_by_the_next_request_and_undoing_it_too(
    setup: Setup, change: str
) -> None:
    setup.only()
    make, paths = CHANGES[change]
    setup.get(1)
    undo = make(setup)
    try:
        setup.get(2)
        if change == "a formatter on the handler":  # a record, formatted as asked
            setup.handler.flush()
            line = setup.path.read_text().splitlines()[1]
            assert re.match(r"\S+ \S+,\d{3} GET /items/2 200 ", line), line
    finally:
        undo()
    setup.get(3)
    assert setup.lines() == paths
    if setup.kept is not None:  # the handler the change added got the line in between
        assert [m.split()[1] for m in setup.kept.messages] == ["/items/2"]
    # the direct path again: a line that is still waiting, unformatted, for its batch
    setup.get(4)
    assert len(setup.handler._pending) == 1


def test_another_buffered_handler_in_place_of_the_first_gets_the_next_lines(
    setup: Setup, tmp_path: Path
) -> None:
    setup.only()
    other = BufferedFileHandler(tmp_path / "other.log", flush_interval=60)
    try:
        setup.get(1)
        setup.logger.handlers[0] = other
        setup.get(2)
        other.flush()
        assert [x.split()[3] for x in (tmp_path / "other.log").read_text().splitlines()] == [
            "/items/2"
        ]
        assert setup.lines() == ["/items/1"]
    finally:
        setup.logger.handlers[0] = setup.handler
        other.close()


def test_a_handler_of_a_subclass_gets_a_record(setup: Setup, tmp_path: Path) -> None:
    setup.only()

    class Mine(BufferedFileHandler):
        def format(self, record: logging.LogRecord) -> str:
            return "mine " + record.getMessage()

    mine = Mine(tmp_path / "mine.log", flush_interval=60)
    try:
        setup.logger.handlers[0] = mine
        setup.get(1)
        mine.flush()
        assert (tmp_path / "mine.log").read_text().startswith("mine GET /items/1 200 ")
    finally:
        setup.logger.handlers[0] = setup.handler
        mine.close()


def test_lines_kept_in_runs_are_the_lines_their_records_give(setup: Setup) -> None:
    """A batch formatted by runs: the same bytes as the records' messages, durations
    included (rounded as ``%.1f`` rounds them), in the order given, with other lines."""
    setup.only()
    durations = [0.0, 0.00005, 0.00015, 0.00025, 0.000349999, 0.0123456, 0.0999, 1.5, 123.456]
    created = 1_000_000.25
    items = []
    for i, seconds in enumerate(durations):
        fields = ("GET", f"/d/{i}", 200, seconds, "/d/{n}", "s", "-", "127.0.0.1", "-")
        items.append((accesslog._lines, created + i / 4, *fields))
    for item in items[:4]:
        setup.handler.defer_item(item)
    setup.handler.write_raw("between\n")
    for item in items[4:]:
        setup.handler.defer_item(item)
    setup.handler.flush()
    expected = []
    for item in items:
        _, when, method, path, status, seconds, *rest = item
        record = logging.LogRecord("coyote_mw.access", logging.INFO, "", 0, "%s", (), None)
        record.created = when
        record.msg = "%s %s %d %.1fms route=%s service=%s instance=%s client=%s request_id=%s"
        record.args = (method, path, status, seconds * 1000, *rest)
        expected.append(setup.handler.format(record))
    expected.insert(4, "between")
    assert setup.path.read_text().splitlines() == expected


def test_a_run_that_cannot_be_formatted_loses_only_its_bad_line(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.only()
    good = (accesslog._lines, 0.0, "GET", "/a", 200, 0.001, "-", "-", "-", "-", "-")
    bad = (accesslog._lines, 0.0, "GET", "/b", 200, "not a float", "-", "-", "-", "-", "-")
    for item in (good, bad, good):
        setup.handler.defer_item(item)
    setup.handler.flush()
    assert setup.lines() == ["/a", "/a"]
    assert "unformattable line" in capsys.readouterr().err


def test_lines_of_a_full_batch_are_formatted_at_once(setup: Setup) -> None:
    setup.only()
    for n in range(DEFER_BATCH - 1):
        setup.get(n)
    assert len(setup.handler._pending) == DEFER_BATCH - 1
    setup.get(DEFER_BATCH)
    assert len(setup.handler._pending) == 0
    assert len(setup.lines()) == DEFER_BATCH
