"""The request path through both middlewares: one body per behaviour, ASGI and WSGI."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coyote_mw import Client, Coyote, Request, Response, by_header, route
from coyote_mw.logs import BufferedFileHandler
from sample_apps.deadwood.saloon import STORY, Saloon


class Shop(Client):
    service = "shop"

    @route("GET", "/items/{id:int}")
    def item(self, request: Request) -> dict[str, Any]:
        return {"id": request.params["id"], "route": request.route}

    @route("GET", "/items/{id:int}/async")
    async def item_async(self, request: Request) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": request.params["id"], "async": True}

    @route("POST", "/echo")
    def echo(self, request: Request) -> bytes:
        return request.read()

    @route("POST", "/json")
    async def json_body(self, request: Request) -> dict[str, Any]:
        return {"got": await request.ajson()}

    @route("POST", "/form")
    def form(self, request: Request) -> dict[str, Any]:
        return {k: v for k, v in request.form().items()}

    @route("GET", "/created")
    def created(self, request: Request) -> tuple[int, dict[str, bool], dict[str, str]]:
        return 201, {"created": True}, {"X-Thing": "1"}

    @route("GET", "/nothing")
    def nothing(self, request: Request) -> None:
        return None

    @route("GET", "/stream")
    def stream(self, request: Request) -> Response:
        return Response(iter([b"one,", b"two"]), media_type="text/plain")

    @route("GET", "/query")
    def query(self, request: Request) -> dict[str, Any]:
        return {"tags": request.query.getlist("tag"), "header": request.headers.get("x-test")}

    @route("GET", "/files/{rest:path}")
    def files(self, request: Request) -> dict[str, Any]:
        return {"rest": request.params["rest"], "path": request.path, "raw": request.raw_path}

    @route("GET", "/boom")
    def boom(self, request: Request) -> str:
        raise RuntimeError("secret detail from deep inside")

    @route("GET", "/bad-return")
    def bad_return(self, request: Request) -> Any:
        return object()


@pytest.fixture
def shop(coyote: Coyote) -> Coyote:
    coyote.register(Saloon())
    coyote.register(Shop())
    return coyote


def test_saloon_serves_the_story_at_root(shop: Coyote, serve: Any) -> None:
    r = serve(shop).get("/")
    assert r.status_code == 200
    assert r.text == STORY
    assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_unmatched_path_is_404_no_matching_route_when_standalone(shop: Coyote, serve: Any) -> None:
    r = serve(shop).get("/no/such/route")
    assert r.status_code == 404
    assert r.json() == {
        "error": "No matching route",
        "method": "GET",
        "path": "/no/such/route",
        "topology": "default",
    }


def test_unmatched_path_falls_through_to_the_host_app(
    shop: Coyote, serve: Any, host_app: Any
) -> None:
    client = serve(shop, host_app)
    assert client.get("/host").text == "host"
    assert client.get("/").text == STORY
    r = client.get("/no/such/route")
    assert (r.status_code, r.text) == (404, "host 404")


def test_wrong_method_under_a_host_falls_through_but_is_405_where_coyote_owns(
    shop: Coyote, serve: Any, host_app: Any
) -> None:
    assert serve(shop, host_app).post("/").text == "host 404"
    r = serve(shop).post("/")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.json()["error"] == "Method not allowed"


def test_mount_prefix_is_owned_by_coyote(shop: Coyote, serve: Any, host_app: Any) -> None:
    client = serve(shop, host_app, mount="/saloon")
    assert client.get("/saloon/").text == STORY
    assert client.get("/saloon").text == STORY
    assert client.get("/saloon/items/4").json()["id"] == 4
    assert client.get("/host").text == "host"
    r = client.get("/saloon/missing")
    assert r.status_code == 404 and r.json()["error"] == "No matching route"
    assert client.get("/saloonx").text == "host 404"


def test_path_parameters_are_converted(shop: Coyote, serve: Any) -> None:
    client = serve(shop)
    assert client.get("/items/42").json() == {"id": 42, "route": "/items/{id:int}"}
    assert client.get("/items/42/async").json() == {"id": 42, "async": True}
    assert client.get("/items/forty-two").status_code == 404


def test_head_falls_back_to_get_without_a_body(shop: Coyote, serve: Any) -> None:
    r = serve(shop).head("/")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(STORY.encode()))


def test_request_body_query_and_headers_reach_the_handler(shop: Coyote, serve: Any) -> None:
    client = serve(shop)
    assert client.post("/echo", content=b"x" * 100_000).content == b"x" * 100_000
    assert client.post("/json", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
    assert client.post("/form", data={"name": "Coyote"}).json() == {"name": "Coyote"}
    r = client.get("/query?tag=a&tag=b", headers={"X-Test": "yes"})
    assert r.json() == {"tags": ["a", "b"], "header": "yes"}


def test_return_values_map_to_responses(shop: Coyote, serve: Any) -> None:
    client = serve(shop)
    r = client.get("/created")
    assert (r.status_code, r.json(), r.headers["x-thing"]) == (201, {"created": True}, "1")
    assert client.get("/nothing").status_code == 204
    assert client.get("/stream").text == "one,two"


def test_malformed_json_body_is_400_not_502(shop: Coyote, serve: Any) -> None:
    r = serve(shop).post(
        "/json", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "Bad request"


def test_body_over_max_body_is_413(serve: Any) -> None:
    coyote = Coyote(max_body=1000)
    coyote.register(Shop())
    r = serve(coyote).post("/echo", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json() == {"error": "Request body too large", "max_body": 1000}
    assert serve(coyote).post("/echo", content=b"x" * 1000).status_code == 200
    coyote.close()


def test_handler_exception_is_502_with_detail_logged_not_sent(
    shop: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="coyote_mw"):
        r = serve(shop).get("/boom")
    assert r.status_code == 502
    assert r.json() == {"error": "Routing error"}
    assert "secret" not in r.text
    logged = "\n".join(rec.getMessage() + str(rec.exc_info) for rec in caplog.records)
    assert "secret detail from deep inside" in logged
    assert "/boom" in logged and "shop" in logged


def test_a_value_a_handler_cannot_return_is_502(shop: Coyote, serve: Any) -> None:
    r = serve(shop).get("/bad-return")
    assert r.status_code == 502 and r.json() == {"error": "Routing error"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/files/a%2Fb", {"rest": "a/b", "path": "/files/a/b", "raw": "/files/a%2Fb"}),
        ("/files/x/../y", {"rest": "y", "path": "/files/y", "raw": "/files/y"}),
        ("/files//z", {"rest": "z", "path": "/files/z", "raw": "/files/z"}),
        ("/files/%7Euser", {"rest": "~user", "path": "/files/~user", "raw": "/files/~user"}),
    ],
)
def test_paths_are_canonicalised_before_matching(
    shop: Coyote, interface: str, serve: Any, raw: str, expected: dict[str, str]
) -> None:
    if interface == "wsgi" and "%2F" in raw:
        pytest.skip("httpx's WSGITransport gives no raw URI; see test_servers.py for real servers")
    r = serve(shop).get(raw)
    assert r.status_code == 200, r.text
    assert r.json() == expected


def test_malformed_percent_encoding_is_400(shop: Coyote, serve: Any, interface: str) -> None:
    if interface == "wsgi":
        pytest.skip("httpx's WSGITransport decodes the path first; see test_servers.py")
    r = serve(shop).get("/files/%zz")
    assert r.status_code == 400
    assert r.json()["error"] == "Bad request path"


def test_cast_route_answers_202_and_runs_later(serve: Any) -> None:
    import threading

    done = threading.Event()
    seen: list[bytes] = []

    class Ledger(Client):
        @route("POST", "/log", cast=True)
        def log(self, request: Request) -> None:
            seen.append(request.read())
            done.set()

    coyote = Coyote()
    coyote.register(Ledger())
    r = serve(coyote).post("/log", content=b"a drink")
    assert r.status_code == 202
    assert done.wait(5)
    assert seen == [b"a drink"]
    coyote.close()


def test_topology_per_mount_and_by_header(serve: Any) -> None:
    coyote = Coyote()
    coyote.register(Saloon(), topology="saloon")
    assert serve(coyote).get("/").status_code == 404
    assert serve(coyote, topology="saloon").get("/").text == STORY
    client = serve(coyote, topology=by_header("X-Coyote-Topology", allowed={"saloon"}))
    assert client.get("/", headers={"X-Coyote-Topology": "saloon"}).text == STORY
    assert client.get("/", headers={"X-Coyote-Topology": "secret"}).status_code == 404
    coyote.close()


def test_access_log_line_per_request(
    shop: Coyote, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        client = serve(shop)
        client.get("/items/7")
        client.get("/missing")
    lines = [r.getMessage() for r in caplog.records if r.name == "coyote_mw.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /items/7 200 ")
    assert "route=/items/{id:int} service=shop" in lines[0]
    assert lines[1].startswith("GET /missing 404 ")


def test_registration_during_traffic_becomes_visible(shop: Coyote, serve: Any) -> None:
    client = serve(shop)

    class Late(Client):
        @route("GET", "/late")
        def late(self, request: Request) -> str:
            return "late"

    assert client.get("/late").status_code == 404
    shop.register(Late())
    assert client.get("/late").text == "late"
    shop.deregister(service="Late")
    assert client.get("/late").status_code == 404
    assert client.get("/").text == STORY


def test_registration_churn_during_traffic_never_fails_a_stable_route(
    shop: Coyote, serve: Any
) -> None:
    import threading

    client = serve(shop)
    stop = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        for i in range(200):  # bounded: 200 register/deregister pairs
            if stop.is_set():
                return

            class Passing(Client):
                service = f"passing-{i}"

                @route("GET", f"/passing/{i}/{{x}}")
                def passing(self, request: Request) -> str:
                    return "p"

            shop.register(Passing())
            shop.deregister(service=f"passing-{i}")
            churned += 1

    writer = threading.Thread(target=churn)
    writer.start()
    statuses = [client.get("/items/1").status_code for _ in range(150)]
    stop.set()
    writer.join(30)
    assert set(statuses) == {200}
    assert churned > 0
    assert [r["service"] for r in shop.table.routes()].count("shop") == len(
        Shop().declared_routes()
    )


class Uploads(Client):
    @route("POST", "/ignore")
    async def ignore(self, request: Request) -> str:
        return "not read"

    @route("POST", "/chunks")
    async def chunks(self, request: Request) -> dict[str, int]:
        sizes = [len(c) async for c in request.aiter_bytes()]
        return {"chunks": len(sizes), "total": sum(sizes)}


def test_asgi_body_is_streamed_and_never_read_unless_asked(loop_thread: Any) -> None:
    coyote = Coyote()
    coyote.register(Uploads())
    app = coyote.asgi()
    pieces = [b"x" * 1000] * 5
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": pieces[received - 1], "more_body": received < 5}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(path: str) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "root_path": "",
        }

    loop_thread.run(app(scope("/ignore"), receive, send))
    assert received == 0
    assert sent[-1]["body"] == b"not read"
    loop_thread.run(app(scope("/chunks"), receive, send))
    assert received == 5
    assert sent[-1]["body"] == b'{"chunks":5,"total":5000}'
    coyote.close()


def test_wsgi_body_is_not_read_unless_asked() -> None:
    import io

    coyote = Coyote()
    coyote.register(Uploads())
    body = io.BytesIO(b"y" * 5000)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/ignore",
        "wsgi.input": body,
        "CONTENT_LENGTH": "5000",
        "SERVER_NAME": "t",
        "SERVER_PORT": "80",
    }
    out = b"".join(coyote.wsgi()(environ, lambda status, headers, exc=None: None))
    assert out == b"not read"
    assert body.tell() == 0
    environ.update(PATH_INFO="/chunks")
    out = b"".join(coyote.wsgi()(environ, lambda status, headers, exc=None: None))
    assert out == b'{"chunks":1,"total":5000}'
    coyote.close()


def test_precedence_host_lets_the_host_answer_first_and_coyote_after_its_404(
    serve: Any, host_app: Any
) -> None:
    class Shadow(Client):
        @route("GET", "/host")
        def shadow(self, request: Request) -> str:
            return "coyote's /host"

    coyote = Coyote()
    coyote.register(Shadow())
    coyote.register(Saloon())
    assert serve(coyote, host_app).get("/host").text == "coyote's /host"
    host_first = serve(coyote, host_app, precedence="host")
    assert host_first.get("/host").text == "host"
    assert host_first.get("/").text == STORY  # the host's 404 gave way to coyote
    assert host_first.get("/missing").text == "host 404"
    with pytest.raises(ValueError, match="precedence"):
        coyote.asgi(host_app, precedence="sometimes")
    coyote.close()


def test_buffered_access_log_handler_writes_formatted_lines(tmp_path: Any, shop: Coyote) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=0.05)
    access = logging.getLogger("coyote_mw.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        import httpx

        with httpx.Client(transport=httpx.WSGITransport(shop.wsgi()), base_url="http://t") as c:
            c.get("/items/3")
        handler.flush()
        line = path.read_text().strip()
        assert "route=/items/{id:int} service=shop instance=- client=127.0.0.1" in line
        assert " GET /items/3 200 " in line
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
        handler.close()


def test_access_lines_of_concurrent_requests_all_arrive_in_order_with_their_own_time(
    coyote: Coyote, loop_thread: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import time

    import httpx

    class Slow(Client):
        @route("GET", "/slow/{n:int}")
        async def slow(self, request: Request) -> str:
            await asyncio.sleep(request.params["n"] / 100)
            return "ok"

    coyote.register(Slow(), service="slow")
    app = coyote.asgi()

    async def burst() -> tuple[list[int], float]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            done: list[int] = []

            async def one(n: int) -> None:
                await c.get(f"/slow/{n}")
                done.append(n)

            await asyncio.gather(*(one(n) for n in (3, 1, 2, 5, 4)))
            # no await since the last request: whatever was queued is in the log now
            return done, time.time()

    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        done, after = loop_thread.run(burst())
    records = [r for r in caplog.records if r.name == "coyote_mw.access"]
    # the first four ended while others were in flight (queued), the last one alone
    assert [r.getMessage().split()[1] for r in records] == [f"/slow/{n}" for n in done]
    times = [r.created for r in records]
    assert times == sorted(times) and times[-1] <= after
    assert times[-1] - times[0] >= 0.03  # each record has its request's time, not the flush's


@pytest.fixture
def access_file(tmp_path: Any) -> Iterator[tuple[Any, BufferedFileHandler]]:
    """The access logger writing to a BufferedFileHandler only, as on a server."""
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=60)
    access = logging.getLogger("coyote_mw.access")
    saved = access.handlers[:]
    access.setLevel(logging.INFO)
    access.propagate = False
    yield path, handler
    access.handlers[:] = saved
    access.setLevel(logging.NOTSET)
    access.propagate = True
    access.filters.clear()
    handler.close()


def _only(handler: logging.Handler) -> None:
    # pytest hangs its capture handlers on non-propagating loggers as each test starts
    logging.getLogger("coyote_mw.access").handlers[:] = [handler]


def _lines(path: Any, handler: BufferedFileHandler) -> list[str]:
    handler.flush()
    text: str = path.read_text()
    return text.splitlines()


def test_a_line_written_directly_is_the_line_logging_would_write(
    shop: Coyote, access_file: tuple[Any, BufferedFileHandler]
) -> None:
    from coyote_mw.middleware import accesslog

    path, handler = access_file
    _only(handler)
    client = httpx.Client(transport=httpx.WSGITransport(shop.wsgi()), base_url="http://t")
    assert accesslog._destination() is handler  # the direct path is taken
    client.get("/items/3")
    client.get("/nothing/here")
    # a filter that lets everything through sends the same requests through logging
    access = logging.getLogger("coyote_mw.access")
    access.addFilter(lambda record: True)
    assert accesslog._destination() is True
    client.get("/items/3")
    client.get("/nothing/here")
    lines = _lines(path, handler)
    assert len(lines) == 4

    def shape(line: str) -> list[str]:  # all but the date, time and milliseconds
        words = line.split()
        return words[2:5] + words[6:]

    assert (
        shape(lines[0])
        == shape(lines[2])
        == [
            "GET",
            "/items/3",
            "200",
            "route=/items/{id:int}",
            "service=shop",
            "instance=-",
            "client=127.0.0.1",
            "request_id=-",
        ]
    )
    assert (
        shape(lines[1])
        == shape(lines[3])
        == [
            "GET",
            "/nothing/here",
            "404",
            "route=-",
            "service=-",
            "instance=-",
            "client=127.0.0.1",
            "request_id=-",
        ]
    )
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \S+ \d+ \d+\.\dms.*", x) for x in lines
    )


def test_filters_levels_and_other_handlers_are_honoured(
    shop: Coyote, access_file: tuple[Any, BufferedFileHandler], caplog: pytest.LogCaptureFixture
) -> None:
    from coyote_mw.middleware import accesslog

    path, handler = access_file
    _only(handler)
    client = httpx.Client(transport=httpx.WSGITransport(shop.wsgi()), base_url="http://t")
    access = logging.getLogger("coyote_mw.access")
    access.addFilter(lambda record: "/secret" not in record.getMessage())
    client.get("/secret")
    access.filters.clear()
    handler.setLevel(logging.WARNING)
    client.get("/too-low")
    handler.setLevel(logging.NOTSET)
    # propagating to the root logger, which has handlers here (pytest's): logging decides
    access.propagate = True
    assert accesslog._destination() is True
    with caplog.at_level(logging.INFO, logger="coyote_mw.access"):
        client.get("/both")
    assert [r.getMessage().split()[1] for r in caplog.records] == ["/both"]
    assert [line.split()[3] for line in _lines(path, handler)] == ["/both"]


def test_a_response_header_that_is_not_latin_1_is_a_routing_error_under_asgi(
    coyote: Coyote, loop_thread: Any
) -> None:
    class Euro(Client):
        @route("GET", "/price")
        async def price(self, request: Request) -> Any:
            return (200, "ten", {"x-currency": "€"})

        @route("GET", "/plain")
        async def plain(self, request: Request) -> Any:
            return (200, "ten", {"x-currency": "EUR"})

    coyote.register(Euro(), service="euro")
    app = coyote.asgi()

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            return [await c.get("/price"), await c.get("/plain"), await c.get("/price")]

    bad, good, again = loop_thread.run(both())
    assert bad.status_code == again.status_code == 502
    assert bad.json()["error"] == "Routing error"
    assert good.status_code == 200 and good.headers["x-currency"] == "EUR"


def test_with_no_handler_anywhere_no_line_is_built(
    shop: Coyote, access_file: tuple[Any, BufferedFileHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coyote_mw.middleware import accesslog

    access = logging.getLogger("coyote_mw.access")
    access.handlers[:] = []  # propagate is off: as if logging were never configured
    assert accesslog._destination() is False
    client = httpx.Client(transport=httpx.WSGITransport(shop.wsgi()), base_url="http://t")
    assert client.get("/items/3").status_code == 200
    # logging's last resort, were it lowered to INFO, would print the line: a record then
    monkeypatch.setattr(logging.lastResort, "level", logging.INFO)
    assert accesslog._destination() is True
    access.disabled = True
    try:
        assert accesslog._destination() is False
    finally:
        access.disabled = False


def test_a_forked_worker_writes_its_own_lines_once_and_keeps_flushing(tmp_path: Any) -> None:
    import os
    import time

    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=0.05)
    try:
        handler.write_raw("parent before the fork\n")  # still in the buffer
        pid = os.fork()
        if pid == 0:  # the worker: no flush() of its own, only its flusher thread
            code = 1
            try:
                handler.write_raw("child\n")
                time.sleep(0.5)
                code = 0 if handler._flusher.is_alive() else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        handler.flush()
        assert sorted(path.read_text().splitlines()) == ["child", "parent before the fork"]
    finally:
        handler.close()


def _said(stamp: str, text: str) -> str:
    return f"{stamp} {text}\n"


def test_deferred_lines_keep_their_order_among_the_lines_written_as_they_stand(
    tmp_path: Any,
) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=60)
    try:
        handler.defer(_said, 0.0, ("first",))
        handler.write_raw("second\n")  # the deferred line goes to the buffer before it
        handler.defer(_said, 0.0, ("third",))
        assert path.read_text() == ""  # nothing written before a flush
        handler.flush()
        stamp = handler._timestamp(0.0)
        assert path.read_text().splitlines() == [f"{stamp} first", "second", f"{stamp} third"]
    finally:
        handler.close()


def test_deferred_lines_are_formatted_a_batch_at_a_time_and_never_pile_up(
    tmp_path: Any,
) -> None:
    from coyote_mw.logs import DEFER_BATCH

    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=60)
    try:
        for i in range(DEFER_BATCH * 3 + 5):
            handler.defer(_said, 1_000_000.0 + i / 10, (str(i),))
            assert len(handler._pending) < DEFER_BATCH  # formatted when a batch waits
        handler.close()  # what still waits is formatted and written at the close
        lines = path.read_text().splitlines()
        assert [line.rsplit(" ", 1)[1] for line in lines] == [
            str(i) for i in range(DEFER_BATCH * 3 + 5)
        ]
        # each line has the timestamp of its own second
        assert lines[0].startswith(handler._timestamp(1_000_000.0))
        assert lines[-1].startswith(handler._timestamp(1_000_000.0 + (len(lines) - 1) / 10))
    finally:
        handler.close()


def test_a_deferred_line_that_cannot_be_written_is_reported_and_the_others_are_kept(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=60)
    try:
        handler.defer(_said, 0.0, ("before",))
        handler.defer(_said, 0.0, ("bad \udc80 surrogate",))  # not UTF-8 encodable
        handler.defer(_said, 0.0, ("after",))
        handler.flush()
        stamp = handler._timestamp(0.0)
        assert path.read_text().splitlines() == [f"{stamp} before", f"{stamp} after"]
        assert "surrogate" in capsys.readouterr().err  # logging's handleError says so
    finally:
        handler.close()


def test_a_forked_worker_writes_its_deferred_lines_once(tmp_path: Any) -> None:
    import os

    path = tmp_path / "access.log"
    handler = BufferedFileHandler(path, flush_interval=60)
    try:
        handler.defer(_said, 0.0, ("parent",))  # waits, unformatted, at the fork
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                handler.defer(_said, 0.0, ("child",))
                handler.flush()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        handler.flush()
        stamp = handler._timestamp(0.0)
        assert sorted(path.read_text().splitlines()) == [f"{stamp} child", f"{stamp} parent"]
    finally:
        handler.close()


def test_canonical_paths_are_kept_for_repeated_raw_paths_within_bounds() -> None:
    from coyote_mw.errors import BadRequestPath
    from coyote_mw.http import paths
    from coyote_mw.middleware import asgi

    def scope(raw: bytes) -> dict[str, Any]:
        return {"raw_path": raw, "path": raw.decode(), "root_path": ""}

    paths._paths.clear()
    first = asgi._canonical(scope(b"/items/%7e7/"))
    assert (first.path, first.raw) == ("/items/~7/", "/items/~7/")
    assert asgi._canonical(scope(b"/items/%7e7/")) is first  # kept, not made again
    with pytest.raises(BadRequestPath):
        asgi._canonical(scope(b"/a/../../b"))
    assert b"/a/../../b" not in paths._paths  # a refusal is never kept
    long = b"/" + b"x" * paths._PATH_KEPT_MAX
    assert asgi._canonical(scope(long)).raw == long.decode()
    assert long not in paths._paths
    for i in range(paths._PATHS_MAX * 2):
        asgi._canonical(scope(b"/n/%d" % i))
        assert len(paths._paths) <= paths._PATHS_MAX
    paths._paths.clear()


def test_response_header_pairs_given_as_lists_are_sent(coyote: Coyote, loop_thread: Any) -> None:
    class Lists(Client):
        @route("GET", "/lists")
        async def lists(self, request: Request) -> Any:
            response = Response(b"ok", media_type="text/plain")
            response.headers = [list(pair) for pair in response.headers]  # type: ignore[misc]
            response.headers.append(["x-pair", "a list"])  # type: ignore[arg-type]
            return response

    coyote.register(Lists(), service="lists")
    app = coyote.asgi()

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            return await c.get("/lists")

    r = loop_thread.run(get())
    assert (r.status_code, r.text, r.headers["x-pair"]) == (200, "ok", "a list")


def test_cookies_and_long_header_values_are_not_kept_in_the_encoding_cache(
    coyote: Coyote, loop_thread: Any
) -> None:
    from coyote_mw.handlers import base as handlers

    class Jar(Client):
        @route("GET", "/cookie")
        async def cookie(self, request: Request) -> Any:
            return (200, "ok", {"set-cookie": "session=s3cr3t", "x-long": "v" * 100})

    coyote.register(Jar(), service="jar")
    app = coyote.asgi()

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
            return await c.get("/cookie")

    r = loop_thread.run(get())
    assert r.headers["set-cookie"] == "session=s3cr3t" and r.headers["x-long"] == "v" * 100
    kept = {name for name, _ in handlers._encoded}
    assert "content-type" in kept
    assert "set-cookie" not in kept and "x-long" not in kept
