"""Remote registration over HTTP: the leader's API under its prefix (default ``/_coyote``).

    POST   /_coyote/registrations          {service, instance, url, routes, topology, ttl}
                                           -> 201 {lease, ttl, heartbeat}
    PUT    /_coyote/registrations/{lease}  heartbeat -> 200 {lease, ttl}; 404 if unknown
    DELETE /_coyote/registrations/{lease}  -> 204; 404 if unknown

The prefix belongs to ``coyote_mw.ops.OperatorAPI``, which answers the operator's
views (``/health``, ``/routes``, ...) and hands every other path to this API.

Security stance: the API is off until ``Coyote(token=...)`` is set, and every call
needs ``Authorization: Bearer <token>`` (compared in constant time): 401 without it,
403 with a wrong one.  Payloads are decoded strictly (unknown fields refused) with
pydantic; a body over ``MAX_PAYLOAD`` bytes is 413.

Hostile bodies: the token is checked before a byte of the body is read (401/403), a
declared ``Content-Length`` over ``MAX_PAYLOAD`` is answered 413 at once, and a body
without a length (chunked) is read only up to ``MAX_PAYLOAD``: one byte more and the
answer is 413, the rest unread (under ASGI the response then says
``Connection: close``, so the server drops the connection rather than drain it).
The JSON is parsed strictly: UTF-8 only, no ``NaN``/``Infinity``, no duplicate keys,
nesting at most ``MAX_DEPTH`` deep; anything else is a 400 naming the problem.

A registration may not take routes under the API prefix (403), nor routes another
service holds (409).  Every refusal leaves the table exactly as it was.

Leases: a registration lives ``ttl`` seconds (``MIN_TTL`` to ``MAX_TTL``) unless a
heartbeat renews it; an expired one is dropped by the ``LeaseKeeper`` within a second
of its expiry (Coyote's Monitor).  A heartbeat also brings an ejected instance back.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from coyote_mw.errors import InvalidRoute, ReservedRoute, RouteConflict
from coyote_mw.events import emit
from coyote_mw.http.responses import Response, json_response
from coyote_mw.registry.leases import StoreUnavailable
from coyote_mw.registry.redis_store import StoreConflict
from coyote_mw.registry.remotes import (
    MAX_TTL,
    MIN_TTL,
    RemoteFactory,
    log_expired,
    register_remote,
)
from coyote_mw.routing.table import Route, RouteTable

if TYPE_CHECKING:
    from coyote_mw.registry.leases import SharedLeases
    from coyote_mw.routing.table import Registration

__all__ = [
    "MAX_DEPTH",
    "MAX_PAYLOAD",
    "MAX_TTL",
    "MIN_TTL",
    "LeaseKeeper",
    "RegistrationAPI",
    "parse_json",
    "read_asgi_body",
    "read_wsgi_body",
]


logger = logging.getLogger("coyote_mw.registration")

MAX_PAYLOAD = 64 * 1024
MAX_DEPTH = 32
"""How deeply arrays and objects may nest in a registration (it needs 4 levels)."""


def _problem(status: int, error: str, *, close: bool = False, **fields: Any) -> Response:
    headers = [("www-authenticate", "Bearer")] if status == 401 else []
    if close:
        headers.append(("connection", "close"))
    return json_response({"error": error, **fields}, status, headers or None)


def _too_large(close: bool) -> Response:
    return _problem(413, "Payload too large", close=close, max_bytes=MAX_PAYLOAD)


class _Refused(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused(f"duplicate key {dup!r}")
    return out


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


# a string (to its closing quote, or to the end when it has none: so each character is
# looked at once, whatever the quotes and backslashes), or a bracket
_STRUCTURE = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)|[\[\]{}]', re.DOTALL)


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (strings skipped)."""
    depth = deepest = 0
    for m in _STRUCTURE.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c == "]" or c == "}":
            depth -= 1
    return deepest


def parse_json(body: bytes) -> Any:
    """Decode a registration body strictly; ``ValueError`` saying what is wrong.

    UTF-8 only; ``NaN`` and ``Infinity`` refused, as are duplicate keys and arrays or
    objects nested deeper than ``MAX_DEPTH`` (checked before parsing, so a body of
    30,000 ``[`` is a clean refusal, not a ``RecursionError``).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not UTF-8: {exc}") from None
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"body nests arrays or objects more than {MAX_DEPTH} deep")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Refused as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None


def _declares_body(headers: Mapping[str, str]) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


async def read_asgi_body(receive: Callable[[], Any]) -> bytes | Response | None:
    """The request body, read up to ``MAX_PAYLOAD``: bytes; a 413 (``Connection:
    close``, the rest unread) past it; None when the client left."""
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        more = message.get("more_body", False)
        body += message.get("body", b"")
        if len(body) > MAX_PAYLOAD:
            return _too_large(close=more)
    return body


def read_wsgi_body(environ: Mapping[str, Any]) -> bytes | Response:
    """The request body under WSGI, read up to ``MAX_PAYLOAD``, or a 413 past it.

    With ``CONTENT_LENGTH`` that many bytes; without it (chunked) to the end when the
    server says the input is terminated (``wsgi.input_terminated``), else none
    (PEP 3333).  Never more than ``MAX_PAYLOAD`` + 1 bytes are read.
    """
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length:
        if not length.isdigit() or len(length) > 9 or int(length) > MAX_PAYLOAD:
            return _too_large(close=False)  # refuse_early answers these before
        size = int(length)
        return stream.read(size) if size else b""
    if not environ.get("wsgi.input_terminated"):
        return b""
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_PAYLOAD:
        chunk = stream.read(MAX_PAYLOAD + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > MAX_PAYLOAD:
        return _too_large(close=False)  # WSGI may not send Connection: the server decides
    return b"".join(chunks)


class LeaseKeeper:
    """Drops registrations whose lease was not renewed in time (a daemon thread)."""

    def __init__(self, expire: Callable[[str], None], interval: float = 0.2) -> None:
        self._expire = expire
        self._interval = interval
        self._deadlines: dict[str, tuple[float, int]] = {}  # lease -> (deadline, ttl)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def grant(self, registration: Registration, ttl: int, url: str) -> str:
        lease = registration.lease
        with self._lock:
            self._deadlines[lease] = (time.monotonic() + ttl, ttl)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coyote-leases", daemon=True)
                self._thread.start()
        return lease

    def renew(self, lease: str) -> int | None:
        """Extend a lease by its ttl; None when it is unknown (or already expired)."""
        with self._lock:
            held = self._deadlines.get(lease)
            if held is None:
                return None
            self._deadlines[lease] = (time.monotonic() + held[1], held[1])
            return int(held[1])

    def forget(self, lease: str) -> None:
        with self._lock:
            self._deadlines.pop(lease, None)

    def not_ready(self) -> str | None:
        """Why the table is not ready (``/ready``): never, it lives in this process."""
        return None

    def deadlines(self) -> dict[str, tuple[float, int]]:
        """Each lease's expiry (a Unix time) and ttl."""
        shift = time.time() - time.monotonic()
        with self._lock:
            return {lease: (dl + shift, ttl) for lease, (dl, ttl) in self._deadlines.items()}

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                expired = [lease for lease, (dl, _) in self._deadlines.items() if dl <= now]
                for lease in expired:
                    del self._deadlines[lease]
            for lease in expired:
                try:
                    self._expire(lease)
                except Exception:
                    logger.exception("could not drop expired lease %s", lease)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


class RegistrationAPI:
    """The registration endpoints; pure request -> response, behind ``OperatorAPI``.

    It registers into ``table`` the handlers ``remote`` makes of instances' URLs.
    """

    def __init__(
        self,
        table: RouteTable,
        remote: RemoteFactory,
        token: str,
        prefix: str,
        store: str | None = None,
    ) -> None:
        self.table = table
        self.remote = remote
        self.token = token.encode()
        self.prefix = prefix
        self.leases: LeaseKeeper | SharedLeases
        if store:
            # redis is imported here, not with coyote_mw: only leaders with a store need it
            from coyote_mw.registry.leases import SharedLeases
            from coyote_mw.registry.redis_store import RedisStore

            self.leases = SharedLeases(table, remote, RedisStore(store))
        else:
            self.leases = LeaseKeeper(self._expired)

    def refuse_early(
        self, headers: Mapping[str, str], close: bool = False, token: bool = True
    ) -> Response | None:
        """The answer to give before reading the body, if any: 401/403 without the right
        token (unless ``token`` is False: a view that signs its users in itself, as the
        dashboard does), 413 for a declared length over ``MAX_PAYLOAD``, 400 for a bad one.

        ``close``: the server honours ``Connection: close`` from the app (ASGI over
        HTTP/1), so a refused request whose body stays unread closes its connection.
        """
        refusal = self.unauthorized(headers) if token else None
        close = close and _declares_body(headers)
        if refusal is not None:
            if close:
                refusal.headers.append(("connection", "close"))
            return refusal
        length = headers.get("content-length")
        if length is not None:
            if not length.isascii() or not length.isdigit():
                return _problem(400, "Invalid Content-Length", close=close, value=length[:40])
            if len(length) > 9 or int(length) > MAX_PAYLOAD:
                return _too_large(close)
        return None

    def unauthorized(self, headers: Mapping[str, str]) -> Response | None:
        """401 without a bearer token, 403 with a wrong one; None with the right one."""
        auth = headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _problem(401, "Authorization required", detail="send 'Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self.token):
            return _problem(403, "Invalid token")
        return None

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> Response:
        """Answer one API call; ``body`` is None when it was over ``MAX_PAYLOAD``."""
        rest = path[len(self.prefix) :]
        refusal = self.unauthorized(headers)
        if refusal is not None:
            return refusal
        if body is None:
            return _problem(413, "Payload too large", max_bytes=MAX_PAYLOAD)
        if rest == "/registrations":
            if method != "POST":
                return _not_allowed(method, rest, ["POST"])
            return self._register(body)
        if rest.startswith("/registrations/") and rest.count("/") == 2:
            lease = rest.rsplit("/", 1)[1]
            if method == "PUT":
                return self._heartbeat(lease)
            if method == "DELETE":
                return self._deregister(lease)
            return _not_allowed(method, rest, ["DELETE", "PUT"])
        return _problem(404, "No such API endpoint", path=path)

    def _register(self, body: bytes) -> Response:
        try:
            data = parse_json(body)
        except ValueError as exc:
            return _problem(400, "Invalid registration", detail=[str(exc)])
        # pydantic is imported here, not with coyote_mw: only leaders with a token need it
        from pydantic import ValidationError

        from coyote_mw.registry.schemas import RegistrationIn

        try:
            reg = RegistrationIn.model_validate(data)
        except ValidationError as exc:
            detail = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            return _problem(400, "Invalid registration", detail=detail)
        previous = self.table.registration_of(reg.service, reg.instance, reg.topology)
        routes = [Route(r.method, r.path, r.cast) for r in reg.routes]

        def register(lease: str | None = None) -> Registration:
            return register_remote(
                self.table,
                self.remote,
                reg.url,
                reg.service,
                routes,
                instance=reg.instance,
                topology=reg.topology,
                lease=lease,
            )

        try:
            registration = register()
            held = self.leases.grant(registration, reg.ttl, reg.url)
            if held != registration.lease:
                # a shared store holds this instance already, registered alike through
                # another leader: it keeps that one lease, renewed by heartbeats to any
                registration = register(held)
        except ReservedRoute as exc:
            return _problem(
                403,
                "Reserved path",
                detail=f"routes under {exc.prefix} are the leader's own",
                paths=exc.patterns,
            )
        except StoreUnavailable as exc:
            self.table.deregister(lease=registration.lease)  # as if never made
            return _problem(503, "Store unavailable", detail=str(exc), retry_after=1)
        except StoreConflict as exc:  # taken through another worker a moment ago
            self.table.deregister(lease=registration.lease)
            return _problem(
                409, "Route conflict", detail=str(exc), held_by=exc.owner, route=exc.claim
            )
        except RouteConflict as exc:
            return _problem(
                409,
                "Route conflict",
                detail=str(exc),
                held_by=exc.existing.service,
                route=f"{exc.duplicate.method} {exc.duplicate.pattern}",
            )
        except InvalidRoute as exc:
            return _problem(400, "Invalid registration", detail=[str(exc)])
        if previous is not None and previous.lease != registration.lease:
            # the instance registered again (a restart): its old lease goes, so the
            # store never holds two leases for one instance
            with contextlib.suppress(StoreUnavailable):  # if so, it expires on its own
                self.leases.forget(previous.lease)
        logger.info(
            "registered %s/%s at %s: %d routes in %s, ttl %ss",
            reg.service,
            reg.instance,
            reg.url,
            len(reg.routes),
            reg.topology,
            reg.ttl,
        )
        emit("registered", reg.topology, reg.service)
        return json_response(
            {"lease": registration.lease, "ttl": reg.ttl, "heartbeat": max(reg.ttl / 3, 0.2)},
            201,
        )

    def _heartbeat(self, lease: str) -> Response:
        try:
            ttl = self.leases.renew(lease)
        except StoreUnavailable as exc:
            return _problem(503, "Store unavailable", detail=str(exc), retry_after=1)
        registration = self.table.registration(lease)
        if ttl is None or registration is None:
            return _problem(404, "Unknown lease", lease=lease, detail="register again")
        for handler in set(registration.handlers.values()):
            revive = getattr(handler, "revive", None)
            if revive is not None:
                revive()
        logger.debug(
            "heartbeat of %s/%s in %s (lease %s)",
            registration.service,
            registration.instance,
            registration.topology,
            lease,
        )
        return json_response({"lease": lease, "ttl": ttl})

    def _deregister(self, lease: str) -> Response:
        try:
            self.leases.forget(lease)
        except StoreUnavailable as exc:
            return _problem(503, "Store unavailable", detail=str(exc), retry_after=1)
        dropped = self.table.deregister(lease=lease)
        if not dropped:
            return _problem(404, "Unknown lease", lease=lease)
        for reg in dropped:
            logger.info(
                "deregistered %s/%s: %d routes in %s",
                reg.service,
                reg.instance,
                len(reg.routes),
                reg.topology,
            )
            emit("deregistered", reg.topology, reg.service)
        return Response(b"", 204)

    def _expired(self, lease: str) -> None:
        for reg in self.table.deregister(lease=lease):
            log_expired(reg.service, reg.instance, reg.topology)

    def close(self) -> None:
        self.leases.close()


def _not_allowed(method: str, path: str, allowed: list[str]) -> Response:
    return json_response(
        {"error": "Method not allowed", "method": method, "path": path, "allowed": allowed},
        405,
        [("allow", ", ".join(allowed))],
    )
