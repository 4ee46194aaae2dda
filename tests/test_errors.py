"""One exception tree: every error coyote_mw raises on purpose is a ``CoyoteError``, and
the tree drawn in ``coyote_mw.errors``' docstring is the tree the classes make."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import coyote_mw
from coyote_mw import errors
from coyote_mw.errors import CoyoteError


def _modules() -> list[str]:
    names = [
        info.name
        for info in pkgutil.walk_packages(coyote_mw.__path__, "coyote_mw.")
        # __main__ runs the command line; the adapters import their frameworks
        if not info.name.endswith("__main__") and not info.name.startswith("coyote_mw.adapters")
    ]
    return ["coyote_mw", *names]


def test_every_public_exception_of_the_package_is_a_coyote_error() -> None:
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("coyote_mw")
                and not attr.startswith("_")
                and not issubclass(obj, CoyoteError)
            ):
                outside.append(f"{name}.{attr}")
    assert outside == []


def _drawn_tree() -> dict[str, str]:
    """Each class the docstring draws, and the class it is drawn under."""
    drawing = (errors.__doc__ or "").split("\n\n")[1]
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (column, name) of the classes above this line
    for line in drawing.splitlines():
        drawn = re.search(r"(?:^\s*|── )([A-Z]\w+)", line)  # not a description's next line
        if drawn is None:
            continue
        column, name = drawn.start(1), drawn.group(1)
        while stack and stack[-1][0] >= column:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((column, name))
    return parents


def test_the_tree_in_the_docstring_is_the_tree_of_the_classes() -> None:
    drawn = _drawn_tree()
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, CoyoteError) and obj is not CoyoteError
    }
    assert sorted(drawn) == sorted(classes)
    for name, parent in drawn.items():
        assert classes[name].__bases__[0] is getattr(errors, parent), name


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("coyote_mw.settings", "UnknownSetting"),
        ("coyote_mw.registry.leases", "StoreUnavailable"),
        ("coyote_mw.registry.redis_store", "StoreConflict"),
        ("coyote_mw.registry.registrar", "RegistrationRefused"),
        ("coyote_mw.remote.transport", "TransportError"),
        ("coyote_mw.remote.transport", "ConnectError"),
        ("coyote_mw.remote.transport", "PoolTimeout"),
        ("coyote_mw.remote.transport", "ReadTimeout"),
        ("coyote_mw.remote.transport", "RemoteProtocolError"),
        ("coyote_mw.remote.handler", "ResponseCut"),
    ],
)
def test_an_error_is_still_importable_from_the_module_that_raises_it(
    module: str, name: str
) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_errors_that_were_builtin_ones_still_are() -> None:
    # caught as such by code that predates the tree
    assert issubclass(errors.UnknownSetting, ValueError)
    assert issubclass(errors.InvalidInstanceURL, ValueError)
    assert issubclass(errors.ResponseCut, ConnectionAbortedError)
    # and a transport failure is no DispatchError: the remote handler translates it
    assert not issubclass(errors.TransportError, errors.DispatchError)
