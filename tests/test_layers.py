"""The import contract: coyote_mw's dependencies point down its layers, and the modules
of one package import each other in no circle (``[tool.importlinter]`` in
pyproject.toml, checked by import-linter's ``lint-imports``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import BIN, ROOT


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the coyote_mw package in ``root``, with the contracts of
    ``root``'s pyproject.toml."""
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--no-logo"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_coyote_mw_keeps_its_import_contracts() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "says"),
    [
        # a lower layer reaching up: the route table into the registration API
        (
            "routing/table.py",
            "import coyote_mw.registry.api",
            "coyote_mw.routing is not allowed to import coyote_mw.registry",
        ),
        # the bottom layer reaching up
        ("errors.py", "import coyote_mw.http.paths", "not allowed to import coyote_mw.http"),
        # a circle inside one package: patterns is imported by the table
        ("routing/patterns.py", "import coyote_mw.routing.table", "No cycles are allowed"),
    ],
)
def test_an_upward_import_or_a_circle_breaks_the_contract(
    tmp_path: Path, module: str, line: str, says: str
) -> None:
    shutil.copytree(ROOT / "coyote_mw", tmp_path / "coyote_mw")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "coyote_mw" / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert says in out.stdout, out.stdout
