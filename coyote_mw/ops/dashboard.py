"""The operator's dashboard: one page under the API prefix, for people.

    GET  {prefix}/dashboard               the page when signed in, else the sign-in form
    POST {prefix}/dashboard/login         form field ``token``: 303 to the page with a
                                          session cookie; a wrong token: the form again, 401
    POST {prefix}/dashboard/logout        303 to the form, the session ended
    GET  {prefix}/dashboard/data          the page's JSON (session cookie or Bearer token):
                                          topologies with their relay's load, instances with
                                          their health and lease, routes, recent errors
    GET  {prefix}/dashboard/data?routes=V the same, but ``routes`` as the table lists them
                                          (no per-route health: ``instances`` has it), or
                                          null when the table is still at ``routes_version``
                                          V: what the page polls
    GET  {prefix}/dashboard/static/NAME   the page's script and style sheet

The page polls ``/data?routes=V`` every second and updates its tables in place: the
routes travel, and are gathered, only when the table changed (10,000 routes are some
megabytes of JSON, a quarter of a second to gather, each second, for each page open).
What the rest is gathered from is kept per table version (``RouteTable.version``).

Security stance: the token never travels in a URL (it is never read from a query
string; the only query read is ``routes``, a version) and never in the cookie.
Signing in trades the token, sent once in a form body, for a session cookie:
``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https, ``Path`` the
dashboard's, holding an expiry and a random id signed with HMAC-SHA256 under a key
derived from the token - so it lasts ``SESSION_LIFETIME`` seconds at most, every worker
sharing the token accepts it, and changing the token ends every session.  Signing out
drops the cookie and refuses that session in this process until it expires.  The two
POSTs are the only state-changing calls: a browser's cross-origin POST to them (its
``Origin`` or ``Sec-Fetch-Site`` says so) is refused 403.  The cookie is good for
``/data`` only, never for the registration API, which takes the Bearer token alone.
Every answer carries a Content-Security-Policy without inline script or style
(``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import html
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from werkzeug.http import dump_cookie, parse_cookie

from coyote_mw.http.responses import Response, json_response
from coyote_mw.ops.views import Leased, route_view

if TYPE_CHECKING:
    from coyote_mw.ops.base import Operator, OpsRequest
    from coyote_mw.routing.table import Instance

__all__ = [
    "COOKIE",
    "RECENT_ERRORS",
    "SESSION_LIFETIME",
    "Dashboard",
    "RecentErrors",
    "Sessions",
    "dashboard_data",
    "recent_errors",
    "serve",
]

logger = logging.getLogger("coyote_mw.dashboard")

SESSION_LIFETIME = 8 * 3600
"""Seconds a dashboard session lasts after signing in (a working day)."""

COOKIE = "coyote_dashboard"

RECENT_ERRORS = 50
"""How many WARNING-or-worse lines of the ``coyote_mw`` loggers the dashboard keeps."""

MAX_MESSAGE = 500
"""Characters kept of each such line."""

MAX_REVOKED = 1024
"""Signed-out sessions remembered (until they expire) in one process."""

STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY = [
    ("content-security-policy", _CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    # not no-referrer: under it a browser sends "Origin: null" with the sign-in form
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
]
_FORM = "application/x-www-form-urlencoded"


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- recent errors ----------------------------------------------------------------------


class RecentErrors(logging.Handler):
    """The last ``size`` WARNING-or-worse records, each cut to ``MAX_MESSAGE``
    characters: the dashboard's recent errors.  It writes nothing anywhere."""

    def __init__(self, size: int = RECENT_ERRORS) -> None:
        super().__init__(logging.WARNING)
        self._lines: deque[dict[str, str]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the raw message is still worth showing
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
        self._lines.append(
            {
                "time": _iso(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": message[:MAX_MESSAGE],
            }
        )

    def lines(self) -> list[dict[str, str]]:
        """Newest first."""
        self.acquire()  # the lock handle() holds around emit()
        try:
            return list(reversed(self._lines))
        finally:
            self.release()


_recent: RecentErrors | None = None
_recent_lock = threading.Lock()


def recent_errors() -> RecentErrors:
    """The process's one ``RecentErrors``, put on the ``coyote_mw`` logger on first use
    (every leader in the process shares it, as they share the loggers)."""
    global _recent
    with _recent_lock:
        if _recent is None:
            _recent = RecentErrors()
            logging.getLogger("coyote_mw").addHandler(_recent)
        return _recent


# -- sessions ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Sessions:
    """Signed session cookies: ``<expiry>.<random id>.<HMAC-SHA256 of both>``."""

    def __init__(self, token: bytes, lifetime: int = SESSION_LIFETIME) -> None:
        self._key = hmac.new(token, b"coyote_mw dashboard session", hashlib.sha256).digest()
        self.lifetime = lifetime
        self._revoked: dict[str, int] = {}  # id -> its expiry
        self._lock = threading.Lock()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self) -> str:
        payload = f"{int(time.time()) + self.lifetime}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def _check(self, value: str) -> tuple[str, int] | None:
        """The id and expiry of a cookie value this process signed and that is still
        good; None for anything else."""
        if len(value) > 200 or not value.isascii() or value.count(".") != 2:
            return None
        expiry, sid, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{expiry}.{sid}")):
            return None
        if not expiry.isdigit() or int(expiry) <= time.time():
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return sid, int(expiry)

    def valid(self, value: str | None) -> bool:
        return value is not None and self._check(value) is not None

    def revoke(self, value: str | None) -> None:
        held = self._check(value) if value is not None else None
        if held is None:
            return
        sid, expiry = held
        now = time.time()
        with self._lock:
            for old in [s for s, e in self._revoked.items() if e <= now]:
                del self._revoked[old]
            while len(self._revoked) >= MAX_REVOKED:  # the one expiring first goes
                del self._revoked[min(self._revoked, key=self._revoked.__getitem__)]
            self._revoked[sid] = expiry


# -- the data ---------------------------------------------------------------------------


class _Gathered:
    """What ``dashboard_data`` shows of the table at one ``RouteTable.version``: the
    routes as the table lists them, each instance (the first route's, in the routes'
    order) with its number of routes, the number of routes of each topology."""

    __slots__ = ("instances", "per_topology", "routes", "version")

    def __init__(self, ops: Operator) -> None:
        table = ops.table
        self.version = table.version  # read first: a change meanwhile is seen next time
        self.routes = table.routes()
        self.instances: dict[tuple[str, str, str], tuple[Instance, int]] = {}
        self.per_topology: dict[str, int] = {}
        endpoints = sorted(table.endpoints(), key=lambda ep: (ep.topology, ep.pattern, ep.method))
        for ep in endpoints:
            self.per_topology[ep.topology] = self.per_topology.get(ep.topology, 0) + 1
            for inst in ep.instances:
                key = (ep.topology, ep.service, inst.instance)
                seen = self.instances.get(key)
                self.instances[key] = (inst, 1) if seen is None else (seen[0], seen[1] + 1)


class _Kept:
    """One API's ``_Gathered`` (``Operator.part``), made again when the table changed,
    and the epoch of its versions: a random word, so that a version seen from another
    process, or before a restart, is never taken for this one's."""

    def __init__(self, ops: Operator) -> None:
        self.ops = ops
        self.epoch = secrets.token_hex(4)
        self.gathered: _Gathered | None = None
        self._lock = threading.Lock()  # polls after a change gather once, not each

    def get(self) -> _Gathered:
        kept = self.gathered
        if kept is not None and kept.version == self.ops.table.version:
            return kept
        with self._lock:
            kept = self.gathered
            if kept is None or kept.version != self.ops.table.version:
                kept = self.gathered = _Gathered(self.ops)
            return kept


def dashboard_data(ops: Operator, routes_seen: str | None = None) -> dict[str, Any]:
    """What the page shows: ``topologies`` (each with its relay's load), ``instances``
    (one per topology, service and instance: URL, health, lease), ``routes``
    (``route_view``), ``errors`` (recent WARNING-or-worse lines, newest first), ``now``,
    ``ready`` (None, or why the table is not ready) and ``routes_version``.

    Given ``routes_seen`` (the page's last ``routes_version``): ``routes`` as the table
    lists them (``RouteTable.routes``), or None when the table is still at that
    version."""
    kept = ops.part(_Kept)
    gathered = kept.get()
    version = f"{kept.epoch}.{gathered.version}"
    routes: list[dict[str, Any]] | None
    if routes_seen is None:
        routes = route_view(ops)
    else:
        routes = None if routes_seen == version else gathered.routes
    names = sorted({"default", *gathered.per_topology}, key=lambda t: (t != "default", t))
    leased = Leased(ops)
    instances = {
        key: {"topology": key[0], "service": key[1], **leased.upstream(key[0], inst), "routes": n}
        for key, (inst, n) in gathered.instances.items()
    }
    topologies = []
    for name in names:
        relay = ops.relay_for(name)  # a relay takes no thread until it serves
        topologies.append(
            {
                "topology": name,
                "routes": gathered.per_topology.get(name, 0),
                "instances": sum(1 for key in instances if key[0] == name),
                "relay": {
                    "active": relay.active,
                    "concurrency": relay.concurrency,
                    "waiting": relay.waiting,
                    "queue": relay.queue,
                    "rejected": relay.rejected,
                },
            }
        )
    return {
        "now": _iso(time.time()),
        "ready": ops.registration.leases.not_ready(),
        "topologies": topologies,
        "instances": [instances[key] for key in sorted(instances)],
        "routes": routes,
        "routes_version": version,
        "errors": recent_errors().lines(),
    }


# -- the views --------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return (resources.files("coyote_mw.ops") / "static" / name).read_bytes()


def _problem(
    status: int, error: str, headers: list[tuple[str, str]] | None = None, **fields: Any
) -> Response:
    return json_response({"error": error, **fields}, status, [*_SECURITY, *(headers or [])])


def _not_allowed(method: str, path: str, allowed: list[str]) -> Response:
    return _problem(
        405,
        "Method not allowed",
        [("allow", ", ".join(allowed))],
        method=method,
        path=path,
        allowed=allowed,
    )


def _same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """Whether a POST comes from a page of this origin (or from no browser at all).

    A browser names the page that sent a POST in ``Origin`` (and in ``Sec-Fetch-Site``);
    a client that is no browser (curl) sends neither.  Behind a TLS-terminating proxy the
    scheme is the proxy's only when the server believes its forwarded headers
    (``coyote leader --proxy-headers --trusted-proxy``).
    """
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == f"{scheme}://{headers.get('host', '')}".lower()
    return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def serve(ops: Operator, request: OpsRequest) -> Response:
    """The view (``coyote_mw.ops.api.VIEWS``): this leader's ``Dashboard`` answers."""
    rest = request.path[len(ops.prefix) :]
    board = ops.part(Dashboard)
    return board.handle(
        request.method,
        rest,
        request.headers,
        request.body,
        request.scheme,
        request.root_path,
        request.query,
    )


class Dashboard:
    """The dashboard's views: ``handle(method, rest, headers, body, scheme, root_path)``
    where ``rest`` is the path after the API prefix.  Every URL it gives the browser (the
    form's action, links, the redirect, the cookie's path) starts with the app's
    ``root_path`` (``SCRIPT_NAME``): mounted in a host under ``/admin``, it stays there.
    One per ``OperatorAPI``, made with it (so its recent errors are kept from the
    start)."""

    def __init__(self, ops: Operator) -> None:
        self.ops = ops
        self.token = ops.registration.token
        self.path = f"{ops.prefix}/dashboard"  # below the app's root_path
        self.sessions = Sessions(self.token)
        self._templates: dict[str, Template] = {}
        recent_errors()

    def handle(
        self,
        method: str,
        rest: str,
        headers: Mapping[str, str],
        body: bytes | None,
        scheme: str = "http",
        root_path: str = "",
        query: str = "",
    ) -> Response:
        """The answer to one dashboard request; ``body`` is None when it was too large."""
        base = root_path + self.path
        reading = method in ("GET", "HEAD")
        if rest == "/dashboard":
            if not reading:
                return _not_allowed(method, rest, ["GET", "HEAD"])
            if self.sessions.valid(self._cookie(headers)):
                return self._page(base, "dashboard.html")
            return self._page(base, "login.html")
        if rest == "/dashboard/data":
            if not reading:
                return _not_allowed(method, rest, ["GET", "HEAD"])
            refusal = self._unauthorized(base, headers)
            if refusal is not None:
                return refusal
            seen: str | None = None
            if "routes=" in query:  # (any other query is ignored, as it always was)
                try:
                    given = parse_qs(query, keep_blank_values=True, max_num_fields=8)
                except ValueError:
                    return _problem(400, "Invalid query string", detail="more than 8 fields")
                if "routes" in given:
                    seen = given["routes"][-1]
            return json_response(dashboard_data(self.ops, seen), 200, _SECURITY)
        if rest == "/dashboard/login":
            if method != "POST":
                return _not_allowed(method, rest, ["POST"])
            return self._login(base, headers, body, scheme)
        if rest == "/dashboard/logout":
            if method != "POST":
                return _not_allowed(method, rest, ["POST"])
            if not _same_origin(headers, scheme):
                return _problem(403, "Cross-origin request refused")
            self.sessions.revoke(self._cookie(headers))
            return self._redirect(base, self._cookie_header(base, "", 0, scheme))
        name = rest.removeprefix("/dashboard/static/")
        if name in STATIC:
            if not reading:
                return _not_allowed(method, rest, ["GET", "HEAD"])
            return Response(_asset(name), 200, _SECURITY, STATIC[name])
        return _problem(404, "No such dashboard page", path=self.ops.prefix + rest)

    def _cookie(self, headers: Mapping[str, str]) -> str | None:
        return parse_cookie(headers.get("cookie", "")).get(COOKIE)

    def _unauthorized(self, base: str, headers: Mapping[str, str]) -> Response | None:
        """None when the session cookie or a Bearer token is good; else 401."""
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given:
            token = given.strip().encode("utf-8", "surrogateescape")
            if hmac.compare_digest(token, self.token):
                return None
            return _problem(
                401, "Invalid token", [("www-authenticate", 'Bearer error="invalid_token"')]
            )
        if self.sessions.valid(self._cookie(headers)):
            return None
        return _problem(
            401,
            "Authorization required",
            [("www-authenticate", "Bearer")],
            detail=f"sign in at {base} or send 'Bearer <token>'",
        )

    def _login(
        self, base: str, headers: Mapping[str, str], body: bytes | None, scheme: str
    ) -> Response:
        if not _same_origin(headers, scheme):
            return _problem(403, "Cross-origin request refused")
        if body is None:
            return _problem(413, "Payload too large")
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != _FORM:
            return _problem(415, "Unsupported media type", expected=_FORM)
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return _problem(400, "Invalid form", detail=f"a UTF-8 {_FORM} body")
        given = fields.get("token", [""])[0].encode("utf-8")
        if not hmac.compare_digest(given, self.token):
            logger.warning("dashboard sign-in refused: wrong token")
            page = self._page(base, "login.html", "The token is wrong.")
            page.status = 401
            page.headers.append(("www-authenticate", 'Bearer realm="coyote dashboard"'))
            return page
        logger.info("dashboard sign-in")
        cookie = self._cookie_header(base, self.sessions.issue(), self.sessions.lifetime, scheme)
        return self._redirect(base, cookie)

    def _cookie_header(self, base: str, value: str, max_age: int, scheme: str) -> tuple[str, str]:
        return (
            "set-cookie",
            dump_cookie(
                COOKIE,
                value,
                max_age=max_age,
                path=base,
                secure=scheme == "https",
                httponly=True,
                samesite="Strict",
            ),
        )

    def _redirect(self, base: str, cookie: tuple[str, str]) -> Response:
        # 303: the browser GETs the page (a reload does not post the form again)
        return Response(b"", 303, [*_SECURITY, ("location", base), cookie], "text/plain")

    def _page(self, base: str, name: str, error: str = "") -> Response:
        template = self._templates.get(name)
        if template is None:
            template = self._templates[name] = Template(_asset(name).decode("utf-8"))
        alert = (
            f'<p id="login-error" class="error" role="alert">{html.escape(error)}</p>'
            if error
            else ""
        )
        text = template.substitute(
            base=html.escape(base),
            prefix=html.escape(self.ops.prefix),
            error=alert,
            described="token-help login-error" if error else "token-help",
        )
        return Response(text.encode("utf-8"), 200, _SECURITY, "text/html; charset=utf-8")
