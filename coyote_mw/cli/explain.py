"""``coyote explain`` as lines a person reads: the verdict first, then why.

    GET /drinks/ -> 404 No matching route
      canonical  /drinks/
      topology   default (default: the middleware routes in the default topology)
      why        no route of topology 'default' fits /drinks/; closest: GET /drinks (...)
      near miss  GET /drinks            deadwood.saloon  trailing-slash  the route has ...
      near miss  GET /drinks/{id:int}   deadwood.saloon  convert         {id:int} needs ...

The JSON (``--json``) is the leader's answer as it came: ``coyote_mw.ops.explain``.
"""

from __future__ import annotations

from typing import Any, TextIO

from coyote_mw.cli.table import health_state

__all__ = ["headline", "print_explanation"]

_KEYS = {"method", "path", "verdict", "status", "detail"}


def headline(data: dict[str, Any]) -> str:
    """``GET /drinks/3 -> deadwood.saloon (GET /drinks/{id:int})``, ``... -> 404 ...``."""
    verdict, status, route = data["verdict"], data.get("status"), data.get("route")
    if verdict == "dispatch" and isinstance(route, dict):
        what = f"{route.get('service')} ({route.get('method')} {route.get('path')})"
        if status is not None:
            what = f"{status} {data.get('error') or ''} {what}".replace("  ", " ")
    elif verdict == "host":
        what = "the host app"
    elif verdict == "operator":
        what = "the operator API"
    else:
        what = f"{status} {data.get('error')}"
    return f"{data['method']} {data['path']} -> {what}"


def _instance(up: Any) -> str:
    """``s1  http://127.0.0.1:9001  ok``; ``main  in process``."""
    if not isinstance(up, dict):
        return "-"
    if not up.get("url"):
        return f"{up.get('instance')}  in process"
    return f"{up.get('instance')}  {up.get('url')}  {health_state(up.get('health'))}"


def print_explanation(data: Any, out: TextIO) -> None:
    """Print an explanation; ``ValueError`` when ``data`` is not one."""
    if not isinstance(data, dict) or not set(data) >= _KEYS:
        raise ValueError("not an explanation (a JSON object with a verdict)")
    lines: list[tuple[str, str]] = []
    if data.get("canonical") and data["canonical"] != data["path"]:
        lines.append(("canonical", data["canonical"]))
    if data.get("mount"):
        lines.append(("mount", f"{data['mount']} (looked up: {data.get('lookup')})"))
    topology = data.get("topology")
    if isinstance(topology, dict):
        lines.append(
            (
                "topology",
                f"{topology.get('name')} ({topology.get('why')}: {topology.get('detail')})",
            )
        )
    route = data.get("route")
    if isinstance(route, dict):
        params = route.get("params") or {}
        if params:
            lines.append(("params", " ".join(f"{k}={v}" for k, v in params.items())))
        if route.get("cast"):
            lines.append(("cast", "yes: answered 202 at once"))
    if data.get("next") is not None:
        lines.append(("next", _instance(data["next"])))
    instances = data.get("instances") or []
    if len(instances) > 1 or (instances and data.get("next") is None):
        lines.extend(("instance", _instance(up)) for up in instances)
    if data.get("allowed"):
        lines.append(("allowed", ", ".join(data["allowed"])))
    if data.get("precedence") == "host":
        lines.append(("precedence", "host: the host app answers first"))
    lines.append(("why", str(data["detail"])))
    near = [n for n in data.get("near") or [] if isinstance(n, dict)]
    if near:
        targets = [f"{n.get('method')} {n.get('path')}" for n in near]
        services = [str(n.get("service")) for n in near]
        kinds = [str(n.get("kind")) for n in near]
        widths = [max(len(x) for x in column) for column in (targets, services, kinds)]
        for n, target, service, kind in zip(near, targets, services, kinds, strict=True):
            cells = (target.ljust(widths[0]), service.ljust(widths[1]), kind.ljust(widths[2]))
            lines.append(("near miss", f"{'  '.join(cells)}  {n.get('why')}"))
    out.write(headline(data) + "\n")
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        out.write(f"  {label.ljust(width)}  {text}".rstrip() + "\n")
