"""Which topology a request is routed in, and where a mount prefix ends.

A middleware serves one topology (``topology="saloon"``), or picks one per request:
``by_header("X-Coyote-Topology", allowed={"blue", "green"})`` reads a header and
falls back to the default when the header is absent or names a topology that is not
allowed (a client never reaches a topology you did not list), or any function of the
ASGI scope / WSGI environ.

``explain`` says which topology a request with given headers would get and why, for
``{prefix}/explain``: ``"default"`` (nothing chose another), ``"mount"`` (the middleware
serves that one topology), ``"header"`` (``by_header`` read it) or ``"resolver"`` (a
function chose it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from coyote_mw.http.paths import CanonicalPath
from coyote_mw.routing.table import DEFAULT_TOPOLOGY

__all__ = ["TopologyResolver", "TopologySpec", "by_header", "mount_relative"]


class TopologyResolver:
    """Gives the topology of an ASGI scope or a WSGI environ."""

    def __init__(self, default: str = DEFAULT_TOPOLOGY) -> None:
        self.default = default

    def __call__(self, scope: Mapping[str, Any]) -> str:
        return self.default

    def wsgi(self, environ: Mapping[str, Any]) -> str:
        return self.default

    @property
    def fixed(self) -> str | None:
        """The one topology every request gets, if it does not depend on the request."""
        return self.default if type(self) is TopologyResolver else None

    def explain(
        self, method: str, path: str, headers: Mapping[str, str], wsgi: bool
    ) -> tuple[str, str, str]:
        """The topology of a request with these ``headers`` (names in lower case), why,
        and a sentence saying so.  A function resolver is called with a scope (an
        environ when ``wsgi``) holding the method, path and headers only."""
        if self.default == DEFAULT_TOPOLOGY:
            return self.default, "default", "the middleware routes in the default topology"
        return self.default, "mount", f"the middleware routes in topology {self.default!r}"

    @staticmethod
    def of(value: TopologySpec) -> TopologyResolver:
        if isinstance(value, TopologyResolver):
            return value
        if isinstance(value, str):
            return TopologyResolver(value)
        if callable(value):
            return _FunctionResolver(value)
        raise TypeError("topology must be a name, by_header(...) or a function")


class _FunctionResolver(TopologyResolver):
    def __init__(self, fn: Callable[[Mapping[str, Any]], str]) -> None:
        super().__init__()
        self.fn = fn

    def __call__(self, scope: Mapping[str, Any]) -> str:
        return self.fn(scope)

    def wsgi(self, environ: Mapping[str, Any]) -> str:
        return self.fn(environ)

    def explain(
        self, method: str, path: str, headers: Mapping[str, str], wsgi: bool
    ) -> tuple[str, str, str]:
        if wsgi:
            carrier: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path}
            for name, value in headers.items():
                key = name.upper().replace("-", "_")
                if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                    key = "HTTP_" + key
                carrier[key] = value
        else:
            carrier = {
                "type": "http",
                "method": method,
                "path": path,
                "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers.items()],
            }
        name = self.fn(carrier)
        what = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        return name, "resolver", f"the topology resolver {what} chose it"


class _HeaderResolver(TopologyResolver):
    def __init__(self, header: str, default: str, allowed: Iterable[str] | None) -> None:
        super().__init__(default)
        self.header = header.lower().encode("latin-1")
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.allowed = frozenset(allowed) if allowed is not None else None

    def _pick(self, value: str | None) -> str:
        if not value or (self.allowed is not None and value not in self.allowed):
            return self.default
        return value

    def __call__(self, scope: Mapping[str, Any]) -> str:
        for name, value in scope.get("headers", ()):
            if name == self.header:
                return self._pick(value.decode("latin-1"))
        return self.default

    def wsgi(self, environ: Mapping[str, Any]) -> str:
        return self._pick(environ.get(self.environ_key))

    def explain(
        self, method: str, path: str, headers: Mapping[str, str], wsgi: bool
    ) -> tuple[str, str, str]:
        header = self.header.decode("latin-1")
        value = headers.get(header)
        name = self._pick(value)
        if value and name == value:
            return name, "header", f"{header}: {value}"
        if not value:
            return name, "default", f"no {header} header: the resolver's default"
        allowed = ", ".join(sorted(self.allowed or ()))
        return name, "default", f"{header}: {value} is not allowed ({allowed}): the default"


TopologySpec = str | TopologyResolver | Callable[[Mapping[str, Any]], str]
"""A topology name, ``by_header(...)``, or a function of the scope / environ."""


def by_header(
    header: str = "X-Coyote-Topology",
    *,
    default: str = DEFAULT_TOPOLOGY,
    allowed: Iterable[str] | None = None,
) -> TopologyResolver:
    """Route each request in the topology its ``header`` names (if allowed)."""
    return _HeaderResolver(header, default, allowed)


def mount_relative(path: CanonicalPath, mount: str) -> CanonicalPath | None:
    """``path`` below the ``mount`` prefix (``/saloon/x`` -> ``/x``), or None if outside."""
    if not mount:
        return path
    if path.segments is not None:
        # an encoded slash somewhere: compare segment by segment
        parts = mount.split("/")[1:]
        if list(path.segments[: len(parts)]) != parts:
            return None
        rest = path.segments[len(parts) :] or ("",)
        raw_rest = path.raw.split("/")[len(parts) + 1 :] or [""]
        return CanonicalPath(
            "/" + "/".join(rest),
            "/" + "/".join(raw_rest),
            rest if any("/" in s for s in rest) else None,
        )
    p = path.path
    if p == mount:
        return CanonicalPath("/", "/", None)
    if not p.startswith(mount + "/"):
        return None
    raw_parts = path.raw.split("/")[mount.count("/") + 1 :]
    return CanonicalPath(p[len(mount) :], "/" + "/".join(raw_parts), None)
