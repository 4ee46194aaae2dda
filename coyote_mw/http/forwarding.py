"""The forwarding policy: what a request must look like to be dispatched, and which
headers go on to an instance.  Written once, used by the ASGI and WSGI middleware
(``check_asgi`` / ``check_wsgi``) and by the HTTP and WebSocket relays (``forward``).

Checked before a request coyote answers is dispatched (RFC 9110 / 9112, as nginx does):

* its target: at most ``max_target`` bytes (else 414), checked before the route lookup
  (``target_too_long``, inlined in the HTTP middleware);
* its head: at most ``max_headers`` header lines and ``max_header_bytes`` bytes of
  names and values (else 431);
* one ``Host``, a valid ``host[:port]`` (a port up to 65535, an IPv6 literal that
  parses), and one at all under HTTP/1.1 (else 400);
* at most one ``Content-Length`` and never with ``Transfer-Encoding`` (else 400 with
  ``Connection: close``: a server and a proxy in front of it may disagree on where such
  a body ends, RFC 9112 6.1), whitespace around it aside;
* no transfer coding but a single ``chunked`` (else 501 with ``Connection: close``);
* no ``Via`` entry of this leader's (else 508 "Loop detected").

Forwarded to an instance: the client's end-to-end headers, without hop-by-hop ones
(and those ``Connection`` names), ``Host`` (the instance's goes instead) and ``Expect``;
the body framed by the relay itself (the client's length, checked, or chunked); and:

* from a peer that is not in ``trusted_proxies`` (the default: none), every client
  ``Forwarded``, ``X-Forwarded`` and ``X-Forwarded-*`` (any name), the client-IP family
  (``X-Real-IP``, ``X-Client-IP``, ``True-Client-IP``, ``CF-Connecting-IP``,
  ``X-Cluster-Client-IP``, ``Forwarded-For``, ``X-Original-Forwarded-For``) and
  ``X-Original-URL`` / ``X-Rewrite-URL``, in any case and with ``_`` or ``.`` for ``-``
  too, is dropped (an IPv4-mapped ``trusted_proxies`` entry is its IPv4 address); the
  relay sets ``X-Forwarded-For`` (the peer), ``-Proto``, ``-Host`` (the client's Host,
  or an absolute-form target's authority) and ``-Prefix`` (under a mount);
* from a trusted peer the chain is extended, as nginx's ``$proxy_add_x_forwarded_for``
  does: ``X-Forwarded-For`` gets the peer appended, the proxy's other headers of that
  set are kept, ``-Prefix`` is the proxy's plus the mount.
  Alias spellings (``X_Forwarded_For``) are dropped from every peer.
* ``Via``: the client's, with ``<version> <pseudonym>`` of this leader appended;
* ``X-Request-ID``: the client's when it is one value of at most 200 safe characters
  (letters, digits, ``-._:+/=``), else a new random one (also on ``Dispatch.request_id``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from random import getrandbits
from typing import Any

from coyote_mw.errors import (
    BadFraming,
    BadRequest,
    DispatchError,
    HeadTooLarge,
    LoopDetected,
    UnsupportedCoding,
)
from coyote_mw.http.paths import CanonicalPath

__all__ = ["HOP_BY_HOP", "Forwarding", "connection_tokens", "new_request_id"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)

# Client headers about the path to the leader (who the client is, how and where it
# asked): trusted only from a trusted proxy.  Any other ``x-forwarded-*`` name is one
# of them too (``forward`` tests the prefix).
_FORWARDED = frozenset(
    {
        b"forwarded",
        b"forwarded-for",
        b"x-forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"x-cluster-client-ip",
        b"x-original-forwarded-for",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-forwarded-ssl",
        b"x-forwarded-scheme",
    }
)
_X_FORWARDED = b"x-forwarded-"
# Every request header name ``forward`` does something with; the rest pass as they are.
_SPECIAL = (
    HOP_BY_HOP
    | _FORWARDED
    | {
        b"host",
        b"expect",
        b"content-length",
        b"via",
        b"x-request-id",
    }
)

# RFC 3986 host (a reg-name without ",", which only joined duplicates produce; an IPv4
# address; an IP literal) and an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+;=-]+)(?::[0-9]{0,5})?")
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,200}")
_CHECKED_LENGTHS = frozenset(
    {len(b"host"), len(b"via"), len(b"content-length"), len(b"transfer-encoding")}
)
_GOOD_HOSTS_MAX = 256
_TRUST_CACHE_MAX = 1024


def _one_length(value: str) -> bool:
    """Whether a WSGI ``CONTENT_LENGTH`` is one number (whitespace around it aside)."""
    return value.isascii() and value.strip(" \t").isdigit()


def connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


def _is_forwarded_alias(name: bytes) -> bool:
    """``x_forwarded_for``, ``x.real.ip``, ``X-Forwarded_Proto``...: another spelling
    of a forwarded header, which some frameworks read as the real one."""
    canonical = name.lower().replace(b"_", b"-").replace(b".", b"-")
    return canonical in _FORWARDED or canonical.startswith(_X_FORWARDED)


class Forwarding:
    """One leader's policy: its trusted proxies, head limits and ``Via`` pseudonym."""

    def __init__(
        self,
        trusted_proxies: Iterable[str] | str | None = None,
        max_headers: int = 100,
        max_header_bytes: int = 32 * 1024,
        max_target: int = 8 * 1024,
        pseudonym: str | None = None,
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [p for p in re.split(r"[\s,]+", trusted_proxies) if p]
        networks = []
        for proxy in trusted_proxies or ():
            try:
                network = ipaddress.ip_network(proxy.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {proxy!r} is not an IP address or network "
                    "(such as 10.0.0.5 or 10.0.0.0/8)"
                ) from None
            mapped = network.network_address
            if (
                isinstance(mapped, ipaddress.IPv6Address)
                and mapped.ipv4_mapped is not None
                and (network.prefixlen >= 96)
            ):
                # ::ffff:10.0.0.0/104 is 10.0.0.0/8: trusts() sees mapped peers as IPv4
                network = ipaddress.IPv4Network((mapped.ipv4_mapped, network.prefixlen - 96))
            networks.append(network)
        self.trusted_proxies = tuple(networks)
        for name, value in (
            ("max_headers", max_headers),
            ("max_header_bytes", max_header_bytes),
            ("max_target", max_target),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_target = max_target
        if pseudonym is None:
            pseudonym = "coyote-" + os.urandom(4).hex()
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", pseudonym):
            raise ValueError(f"pseudonym {pseudonym!r}: up to 64 letters, digits, '.', '_', '-'")
        self.pseudonym = pseudonym
        self._mark = pseudonym.encode("ascii")
        self._via = {v: f"{v} {pseudonym}".encode("ascii") for v in ("1.0", "1.1", "2", "3")}
        self._trusted: dict[str, bool] = {}
        self._good_hosts: set[bytes] = set()

    def trusts(self, peer: str) -> bool:
        """Whether a peer address is one of ``trusted_proxies``."""
        if not self.trusted_proxies:
            return False
        known = self._trusted.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:  # a unix socket path, or no address at all
                known = False
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped  # ::ffff:10.0.0.1 on a dual-stack socket
                known = any(address in net for net in self.trusted_proxies)
            if len(self._trusted) >= _TRUST_CACHE_MAX:
                self._trusted.clear()
            self._trusted[peer] = known
        return known

    def _passed_here(self, via: bytes) -> bool:
        """Whether one of the ``Via`` entries (``1.1 name (comment)``) names this leader."""
        for entry in via.split(b","):
            parts = entry.split()
            if len(parts) >= 2 and parts[1] == self._mark:
                return True
        return False

    def _valid_host(self, host: bytes) -> bool:
        if host in self._good_hosts:
            return True
        if _HOST.fullmatch(host) is None:
            return False
        if host[:1] == b"[":  # an IP literal: an IPv6 address ("[::::]" is not one)
            end = host.index(b"]")
            port = host[end + 2 :]
            try:
                ipaddress.IPv6Address(host[1:end].decode("ascii"))
            except ValueError:
                return False
        else:
            port = host.partition(b":")[2]
        if port and int(port) > 65535:
            return False
        if len(self._good_hosts) >= _GOOD_HOSTS_MAX:
            self._good_hosts.clear()
        self._good_hosts.add(host)
        return True

    # -- checks before dispatch -----------------------------------------------------------

    def target_too_long(self, scope: Mapping[str, Any], path: CanonicalPath) -> bool:
        """Whether the target (path and query) is over ``max_target``: checked by the
        middleware before the route lookup, for every request it looks up."""
        raw_path: bytes | None = scope.get("raw_path")
        size = len(path.raw) if raw_path is None else len(raw_path)
        return size + len(scope.get("query_string") or b"") > self.max_target

    def check_asgi(self, scope: Mapping[str, Any]) -> DispatchError | None:
        """The answer to a request whose head coyote refuses, or None (the target's
        size was checked before the lookup: ``target_too_long``)."""
        return self.check_head(scope["headers"], scope.get("http_version"))

    def check_head(
        self, headers: list[tuple[bytes, bytes]], version: str | None
    ) -> DispatchError | None:
        """``check_asgi`` of a request's header lines (names lowercase) and version."""
        if len(headers) > self.max_headers:
            return HeadTooLarge("max_headers", self.max_headers)
        # The usual request has one valid Host, at most one plain Content-Length, and no
        # Transfer-Encoding or Via: one pass adds the sizes and notes whether anything
        # needs a closer look.
        size = 0
        host: bytes | None = None
        length = rare = False
        for k, v in headers:
            n = len(k)
            size += n + len(v)
            # only four names matter here; their lengths spare most comparisons
            if n in _CHECKED_LENGTHS:
                if k == b"host":
                    rare = rare or host is not None
                    host = v
                elif k == b"content-length":
                    rare = rare or length or not v.isdigit()
                    length = True
                elif k == b"transfer-encoding" or k == b"via":
                    rare = True
        if not rare and size <= self.max_header_bytes and host in self._good_hosts:
            return None  # without a call more
        return self._close_look(headers, version == "1.1")

    def _close_look(
        self, headers: Iterable[tuple[bytes, bytes]], host_required: bool
    ) -> DispatchError | None:
        size = hosts = lengths = 0
        host = b""
        coding: bytes | None = None  # Transfer-Encoding, its lines joined
        loop = False
        for k, v in headers:
            size += len(k) + len(v)
            if k == b"host":
                hosts += 1
                host = v
            elif k == b"content-length":
                # "5, 5" or "x": not one length; OWS is not part of the value
                lengths += 1 if v.isdigit() or v.strip(b" \t").isdigit() else 2
            elif k == b"transfer-encoding":
                coding = v if coding is None else coding + b", " + v
            elif k == b"via" and self._mark in v:
                loop = self._passed_here(v)
        return self._verdict(size, hosts, host, lengths, coding, loop, host_required)

    def check_wsgi(self, environ: Mapping[str, Any]) -> DispatchError | None:
        """``check_asgi`` for a WSGI environ (the server has joined repeated lines)."""
        count = size = 0
        for key, value in environ.items():
            if key[:5] == "HTTP_":
                count += 1
                size += len(key) - 5 + len(value)
        length = environ.get("CONTENT_LENGTH")
        if length:
            count += 1
            size += 14 + len(length)
        if count > self.max_headers:
            return HeadTooLarge("max_headers", self.max_headers)
        host = environ.get("HTTP_HOST")
        via = environ.get("HTTP_VIA")
        coding = environ.get("HTTP_TRANSFER_ENCODING")
        return self._verdict(
            size,
            0 if host is None else 1,
            b"" if host is None else host.encode("latin-1"),
            # a server that joined two lengths gives "5,5" or "5, 7"
            # ("²".isdigit() is true of a str: ASCII digits only)
            2 if length and not _one_length(length) else int(bool(length)),
            None if coding is None else coding.encode("latin-1"),
            via is not None and self.pseudonym in via and self._passed_here(via.encode("latin-1")),
            # a server's environ (test clients, Django's, build theirs without Host or
            # SERVER_SOFTWARE: PEP 3333 takes SERVER_NAME then)
            environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and "SERVER_SOFTWARE" in environ,
        )

    def _verdict(
        self,
        size: int,
        hosts: int,
        host: bytes,
        lengths: int,
        coding: bytes | None,
        loop: bool,
        host_required: bool,
    ) -> DispatchError | None:
        if size > self.max_header_bytes:
            return HeadTooLarge("max_header_bytes", self.max_header_bytes)
        if hosts > 1:
            return BadRequest("more than one Host header")
        if hosts and not self._valid_host(host):
            return BadRequest("the Host header is not a valid host[:port]")
        if not hosts and host_required:
            return BadRequest("an HTTP/1.1 request without a Host header")
        if lengths > 1:
            return BadFraming("more than one Content-Length, or one that is not a number")
        if coding is not None:
            if lengths:
                return BadFraming("Content-Length together with Transfer-Encoding")
            if coding.strip(b" \t").lower() != b"chunked":
                return UnsupportedCoding(coding.decode("latin-1"))
        if loop:
            return LoopDetected(self.pseudonym)
        return None

    # -- the headers an instance gets -------------------------------------------------------

    def forward(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        peer: str | None,
        scheme: str,
        prefix: str,
        netloc: bytes,
        version: str = "1.1",
        made_id: str = "",
        make_id: bool = True,
    ) -> tuple[list[tuple[bytes, bytes]], int | None, bool, str]:
        """The headers to forward (names lowercase), the body's length if the client
        gave a valid one (None: unknown, sent chunked), whether a body follows, and the
        request id (``made_id`` when one was made for this request already: a retry).
        Framing was checked before dispatch (``check_asgi``).

        ``make_id`` false: when the client gave no valid id, none is made: its line's
        value is empty and the id returned is "" (the caller makes one per request,
        ``new_request_id``, for headers it keeps and sends again)."""
        out: list[tuple[bytes, bytes]] = []
        forwarded_for = via = b""
        host = proto = fwd_host = fwd_prefix = request_id = None
        kept: list[tuple[bytes, bytes]] | None = None
        named: set[bytes] | None = None
        length: int | None = None
        has_body = False
        trusted = peer is not None and bool(self.trusted_proxies) and self.trusts(peer)
        for k, v in headers:
            if k in _SPECIAL:
                if k == b"host":
                    host = v
                elif k == b"connection":
                    named = connection_tokens(v)
                elif k == b"transfer-encoding":
                    has_body = True
                elif k == b"content-length":
                    if not v.isdigit():
                        v = v.strip(b" \t")  # OWS is not part of the value
                    if v.isdigit():
                        length = int(v)
                        has_body = has_body or length > 0
                    else:
                        has_body = True
                elif k == b"via":
                    via = via + b", " + v if via else v
                elif k == b"x-request-id":
                    request_id = b"" if request_id is not None else v  # two: make one
                elif trusted and k in _FORWARDED:
                    if k == b"x-forwarded-for":
                        forwarded_for = forwarded_for + b", " + v if forwarded_for else v
                    elif k == b"x-forwarded-proto":
                        proto = v
                    elif k == b"x-forwarded-host":
                        fwd_host = v
                    elif k == b"x-forwarded-prefix":
                        fwd_prefix = v
                    else:
                        if kept is None:
                            kept = []
                        kept.append((k, v))
                continue
            # 95 and 46: "_" and "."; an int is found by memchr, several times faster
            # than a bytes needle
            if k[:1] == b"x" and k.startswith(_X_FORWARDED):  # k[:1]: a cached object
                # X-Forwarded-User, -Uri...: a trusted proxy's pass as they are
                if trusted and 95 not in k and 46 not in k:
                    out.append((k, v))
                continue
            if (95 in k or 46 in k) and _is_forwarded_alias(k):
                continue
            out.append((k, v))
        if named:
            out = [(k, v) for k, v in out if k not in named]
        if kept:
            out += kept
        if peer:
            ip = peer.encode("latin-1")
            forwarded_for = forwarded_for + b", " + ip if forwarded_for else ip
        if forwarded_for:
            out.append((b"x-forwarded-for", forwarded_for))
        out.append((b"x-forwarded-proto", proto or scheme.encode("latin-1")))
        if fwd_host or host:
            out.append((b"x-forwarded-host", fwd_host or host))  # type: ignore[arg-type]
        if prefix or fwd_prefix:
            mine = prefix.encode("latin-1")
            out.append((b"x-forwarded-prefix", (fwd_prefix or b"").rstrip(b"/") + mine))
        ours = self._via.get(version) or f"{version} {self.pseudonym}".encode("latin-1")
        out.append((b"via", via + b", " + ours if via else ours))
        if not request_id or _REQUEST_ID.fullmatch(request_id) is None:
            if made_id:
                request_id = made_id.encode("ascii")
            else:
                request_id = new_request_id() if make_id else b""
        out.append((b"x-request-id", request_id))
        if length is not None and has_body:
            out.append((b"content-length", b"%d" % length))
        out.append((b"host", netloc))
        return out, length, has_body, request_id.decode("ascii")


def new_request_id() -> bytes:
    """A request id as ``Forwarding.forward`` makes one: unique, not secret (the random
    module, re-seeded in a forked child, is cheaper than os.urandom per request)."""
    return b"%032x" % getrandbits(128)
