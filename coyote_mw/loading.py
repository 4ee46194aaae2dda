"""Import an object named by a "module:attribute" string (settings, the command line)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_string"]


def import_string(spec: str) -> Any:
    """``"sample_apps.deadwood.saloon:Saloon"`` -> the ``Saloon`` class."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} must look like 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} (from {spec!r}): {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    return obj
