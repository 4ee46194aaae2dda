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


def apply_settings(coyote: Any, get: Any) -> str:
    """Configure ``coyote`` from a framework's settings and register its ``CLIENTS``.

    ``get(key)`` reads one setting (``"CONCURRENCY"``, ``"CLIENTS"``, ...) or None;
    returns the topology the settings name.  Used by the Flask and Django adapters.
    """
    coyote.configure(
        concurrency=get("CONCURRENCY"),
        queue=get("QUEUE"),
        timeout=get("TIMEOUT"),
        max_body=get("MAX_BODY"),
        access_log=get("ACCESS_LOG"),
        token=get("TOKEN"),
        prefix=get("PREFIX"),
        store=get("STORE"),
        tls=get("TLS"),
        max_response_head=get("MAX_RESPONSE_HEAD"),
        response_timeout=get("RESPONSE_TIMEOUT"),
        stream_idle_timeout=get("STREAM_IDLE_TIMEOUT"),
        eject_after=get("EJECT_AFTER"),
        base_ejection_time=get("BASE_EJECTION_TIME"),
        max_ejection_time=get("MAX_EJECTION_TIME"),
        max_ejection_percent=get("MAX_EJECTION_PERCENT"),
    )
    topology: str = get("TOPOLOGY") or "default"
    for spec in get("CLIENTS") or ():
        coyote.register(import_string(spec)(), topology=topology)
    return topology
