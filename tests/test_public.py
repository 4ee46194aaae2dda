"""The public surface: a sorted ``__all__``, and no web framework pulled in by import."""

from __future__ import annotations

import subprocess
import sys

import coyote_mw


def test_public_names_are_a_sorted_all() -> None:
    assert coyote_mw.__all__ == sorted(coyote_mw.__all__)
    for name in coyote_mw.__all__:
        assert hasattr(coyote_mw, name), name
    for name in ("Coyote", "Client", "route", "Request", "RouteTable", "Response", "Match"):
        assert name in coyote_mw.__all__


def test_importing_coyote_mw_pulls_in_no_web_framework() -> None:
    code = (
        "import sys, coyote_mw, coyote_mw.adapters; "
        "print(','.join(m for m in ('starlette', 'flask', 'django', 'uvicorn', 'a2wsgi', "
        "'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_adapters_folder_ships_as_coyote_mw_adapters() -> None:
    import coyote_mw.adapters

    assert coyote_mw.adapters.__name__ == "coyote_mw.adapters"
