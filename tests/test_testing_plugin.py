"""The pytest plugin, exercised the way users meet it: in a fresh pytest run (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _settled_pytest_asyncio(pytester: pytest.Pytester) -> None:
    """pytest-asyncio is installed, so it loads in every run here: give it the setting it
    warns about when unset."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_plugin_fixtures_test_a_client_in_three_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from coyote_mw import Client, route

        class Saloon(Client):
            @route("GET", "/")
            def story(self, request):
                return "<h1>The Clever Coyote</h1>"

            @route("GET", "/drinks/{id:int}")
            async def drink(self, request):
                return {"id": request.params["id"]}

        def test_sync(coyote, coyote_client):
            coyote.register(Saloon())
            assert coyote_client.get("/").text == "<h1>The Clever Coyote</h1>"
            assert coyote_client.get("/drinks/3").json() == {"id": 3}
            assert coyote_client.get("/nope").json()["error"] == "No matching route"

        @pytest.mark.anyio
        async def test_async(coyote, coyote_async_client):
            coyote.register(Saloon())
            response = await coyote_async_client.get("/drinks/4")
            assert response.json() == {"id": 4}

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        def test_each_test_gets_a_fresh_table(coyote):
            assert coyote.table.routes() == []
        """
    )
    result = pytester.runpytest("-p", "anyio", "-q")
    result.assert_outcomes(passed=3)


def test_overriding_the_coyote_fixture_configures_the_clients(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from coyote_mw import Coyote

        @pytest.fixture
        def coyote():
            leader = Coyote(max_body=4)
            yield leader
            leader.close()
        """
    )
    pytester.makepyfile(
        """
        from coyote_mw import Client, route

        class Echo(Client):
            @route("POST", "/echo")
            def echo(self, request):
                return request.read()

        def test_limit(coyote, coyote_client):
            coyote.register(Echo())
            assert coyote_client.post("/echo", content=b"12345").status_code == 413
        """
    )
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1)


ASYNC_TESTS = """
import pytest
from coyote_mw import Client, route

class Saloon(Client):
    @route("GET", "/drinks/{id:int}")
    async def drink(self, request):
        return {"id": request.params["id"]}

@pytest.mark.{mark}
async def test_async(coyote, coyote_async_client):
    coyote.register(Saloon())
    response = await coyote_async_client.get("/drinks/4")
    assert response.json() == {"id": 4}
"""


def test_the_async_client_works_under_pytest_asyncio_strict_mode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(ASYNC_TESTS.replace("{mark}", "asyncio"))
    result = pytester.runpytest("-p", "asyncio", "-p", "no:anyio", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=1)


def test_the_async_client_works_under_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ASYNC_TESTS.replace("@pytest.mark.{mark}\n", ""))
    result = pytester.runpytest("-p", "asyncio", "-p", "no:anyio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)


def test_the_async_client_works_under_anyio_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    backends = """
@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""
    pytester.makepyfile(ASYNC_TESTS.replace("{mark}", "anyio") + backends)
    result = pytester.runpytest("-p", "anyio")
    result.assert_outcomes(passed=2)
