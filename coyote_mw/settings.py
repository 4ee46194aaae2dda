"""Settings from a framework's config: import "module:attribute" strings (settings, the
command line), refuse unknown keys, and apply the rest to a ``Coyote``."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterable
from typing import Any

from coyote_mw.errors import UnknownSetting

__all__ = ["UnknownSetting", "check_settings", "import_string", "known_settings"]

# The settings keys the Flask (``COYOTE_<KEY>``) and Django (``COYOTE["<KEY>"]``) adapters
# read: every keyword of ``Coyote.configure`` (spelled upper case; a new keyword there is
# a new key here, nothing else to edit), plus the keys the adapters use themselves.
ADAPTER_SETTINGS = ("CLIENTS", "MOUNT", "PRECEDENCE", "TOPOLOGY")


def _configure_keys() -> tuple[str, ...]:
    # when asked, not at import: the adapters import this module before the web stack
    from coyote_mw.leader import Coyote

    parameters = inspect.signature(Coyote.configure).parameters.values()
    return tuple(p.name.upper() for p in parameters if p.kind is p.KEYWORD_ONLY)


def check_settings(keys: Iterable[str], spell: str = "{}") -> None:
    """Refuse the first key not in ``known_settings()``, naming the closest known one.

    ``spell`` shows a key as the user wrote it: ``"COYOTE_{}"`` (Flask),
    ``"settings.COYOTE[{!r}]"`` (Django).
    """
    known = known_settings()
    for key in map(str, keys):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {spell.format(close[0])}?" if close else ""
            raise UnknownSetting(
                f"{spell.format(key)} is not a coyote setting{hint} "
                f"(known: {', '.join(sorted(known))})"
            )


def known_settings() -> tuple[str, ...]:
    """Every settings key an adapter reads."""
    return _configure_keys() + ADAPTER_SETTINGS


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


def apply_settings(coyote: Any, get: Any) -> str:
    """Configure ``coyote`` from a framework's settings and register its ``CLIENTS``.

    ``get(key)`` reads one setting (``"CONCURRENCY"``, ``"CLIENTS"``, ...) or None;
    returns the topology the settings name.  Used by the Flask and Django adapters.
    """
    coyote.configure(**{key.lower(): get(key) for key in _configure_keys()})
    topology: str = get("TOPOLOGY") or "default"
    for spec in get("CLIENTS") or ():
        coyote.register(import_string(spec)(), topology=topology)
    return topology
