"""The README as a newcomer reads it: its code is the shipped code, its commands run.

* every Python block that names a file (``# sample_apps/...``) is that file, exactly;
* every Python block names nothing it does not define or import (ruff's F821);
* every server command it shows for a sample app serves the Saloon from a real process;
* the tour answers the story, a drink and the tab's cast (202, then its effect);
* a wheel built from the checkout ships the LICENSE, and the README names every extra;
* the Flask and Django adapters' docstrings name every settings key they read.

Every process is started here and ended by PID; every wait is bounded.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from coyote_mw import Coyote
from coyote_mw.settings import known_settings
from sample_apps.deadwood.saloon import STORY
from tests.support.processes import BIN, ROOT, running

README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def code_of(path: Path) -> str:
    """A file as the README shows it: without its docstring and ``__future__`` import."""
    text = path.read_text()
    text = re.sub(r'\A""".*?"""\n\n', "", text, flags=re.S)
    return text.replace("from __future__ import annotations\n\n", "", 1).strip()


@pytest.mark.parametrize(("adapter", "spell"), [("flask", "COYOTE_{}"), ("django", "``{}``")])
def test_an_adapter_docstring_names_every_settings_key_it_reads(adapter: str, spell: str) -> None:
    doc = importlib.import_module(f"coyote_mw.adapters.{adapter}").__doc__ or ""
    assert [key for key in known_settings() if spell.format(key) not in doc] == []


def test_readme_blocks_that_name_a_file_are_that_file_exactly() -> None:
    named = {}
    for block in PYTHON_BLOCKS:
        first, _, rest = block.partition("\n")
        if first.startswith("# sample_apps/"):
            named[first[2:]] = rest.strip()
    assert {"sample_apps/deadwood/saloon.py", "sample_apps/deadwood/tour.py"} <= set(named)
    for path, shown in named.items():
        assert shown == code_of(ROOT / path), f"the README's {path} is not the file"


def test_readme_python_blocks_use_no_undefined_name(tmp_path: Path) -> None:
    files = []
    for i, block in enumerate(PYTHON_BLOCKS):
        f = tmp_path / f"block_{i}.py"
        f.write_text(block)
        compile(block, f"README.md python block {i}", "exec")  # a SyntaxError fails here
        files.append(f)
    assert len(files) >= 8
    ruff = subprocess.run(
        [str(BIN / "ruff"), "check", "--isolated", "--no-cache", "--select", "F821"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_the_seed_shape_in_the_readme_serves_the_story_and_a_drink() -> None:
    (block,) = [b for b in PYTHON_BLOCKS if "class SeedSaloon" in b]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    coyote = Coyote()
    try:
        coyote.register(namespace["SeedSaloon"]())  # type: ignore[operator]
        assert coyote.call("GET", "/").body == STORY.encode()
        assert coyote.call("GET", "/drinks/rum").body == b'{"drink":"rum"}'
    finally:
        coyote.close()


# -- the README's commands, run --------------------------------------------------------


def readme_server_commands() -> list[str]:
    """Every command the README shows that serves a sample app (placeholders skipped)."""
    found = re.findall(
        r"(?:\.venv/bin/)?(?:uvicorn|gunicorn)\s+(?:-w \d+\s+)?sample_apps[\w.]*:\w+"
        r"|python sample_apps/django_host/manage\.py runserver",
        README,
    )
    return sorted({" ".join(c.split()) for c in found})


COMMANDS = readme_server_commands()


def test_the_readme_shows_the_servers_for_the_tour_and_every_sample_host() -> None:
    shown = " | ".join(COMMANDS)
    for needed in (
        "uvicorn sample_apps.deadwood.tour:app",
        "gunicorn sample_apps.deadwood.tour:wsgi_app",
        "uvicorn sample_apps.starlette_host:app",
        "gunicorn sample_apps.flask_host:app",
        "manage.py runserver",
        "gunicorn sample_apps.django_host.wsgi:application",
        "uvicorn sample_apps.django_host.asgi:application",
    ):
        assert needed in shown, needed


def argv_of(command: str) -> list[str]:
    """The README's command, run from this checkout's venv (``running`` gives the port)."""
    words = command.split()
    program = words[0].removeprefix(".venv/bin/")
    if program == "python":
        return [sys.executable, words[1], "runserver", "127.0.0.1:{port}", "--noreload"]
    assert program in ("uvicorn", "gunicorn"), command
    return [program, *words[1:]]


@contextmanager
def serving(command: str) -> Iterator[str]:
    """Run a README command as a real process; yield its base URL once it answers."""
    with (
        tempfile.TemporaryDirectory() as folder,
        running(argv_of(command), log=Path(folder) / "server.log") as url,
    ):
        yield url


@pytest.mark.parametrize("command", COMMANDS)
def test_every_server_command_in_the_readme_serves_the_saloon(command: str) -> None:
    with serving(command) as url:
        r = httpx.get(url + "/", timeout=10)
        assert r.status_code == 200, (command, r.status_code, r.text[:300])
        assert r.text == STORY


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_the_tour_serves_a_drink_and_takes_a_tab_with_a_cast(server: str) -> None:
    (command,) = [c for c in COMMANDS if "deadwood.tour" in c and server in c]
    with serving(command) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/drinks/3").json() == {"id": 3, "drink": "coffee"}
        assert http.get("/drinks/9").status_code == 404
        assert http.get("/drinks/whiskey").json()["error"] == "No matching route"
        r = http.post("/tab", json={"drink": "whiskey", "for": "Calamity Jane"})
        assert (r.status_code, r.json()) == (202, {"status": "accepted"})
        deadline = time.monotonic() + 10
        while (tab := http.get("/tab").json()) == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tab == [{"drink": "whiskey", "for": "Calamity Jane"}]


# -- what a wheel ships ----------------------------------------------------------------


def test_a_wheel_built_from_the_checkout_ships_the_license_and_the_readme_names_its_extras(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("coyote_mw-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (license_file,) = [n for n in names if n.endswith("/licenses/LICENSE")]
        text = z.read(license_file).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the coyote_mw authors" in text
    assert "License-Expression: MIT" in metadata
    for asset in ("dashboard.html", "login.html", "dashboard.js", "dashboard.css", "favicon.svg"):
        assert f"coyote_mw/ops/static/{asset}" in names, f"the wheel lacks the dashboard's {asset}"
    install = README[README.index("## Install it in your project") :]
    install = install[: install.index("\n## ")]
    extras = re.findall(r"^Provides-Extra: (\S+)$", metadata, flags=re.M)
    assert "flask" in extras
    for extra in extras:
        assert f"`{extra}`" in install, f"the README's install section does not name [{extra}]"
