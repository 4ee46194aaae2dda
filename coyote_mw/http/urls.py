"""Instance URLs: validated, and stored in one canonical form.

An instance URL is where the relay sends requests, so everything in it ends up in a
request line or a ``Host`` header.  ``canonical_url`` refuses what cannot be made safe
and rewrites the rest into one form (RFC 3986 §6.2.2 normalisation):

- ``http`` or ``https``, lower-case; no credentials, query or fragment;
- the host lower-case: a DNS name (letters, digits, ``-`` and ``_`` in labels of at
  most 63 characters, 253 in all), an IPv4 address or a bracketed IPv6 address (compressed); an
  internationalised name is stored as its IDNA (punycode) form; a host whose last label
  is a number is an IPv4 address, read as the WHATWG URL parser (and so every browser)
  reads it and stored as a dotted quad (``127.1``, ``0x7f.0.0.1``, ``0177.0.0.1``,
  ``2130706433``: ``127.0.0.1``), or refused when it is not one (``1.2.3.4.5``,
  ``256.1.1.1``);
- the port elided when it is the scheme's default (80, 443), else kept (1-65535);
- the path percent-encoded as UTF-8 wherever RFC 3986 does not allow a character
  (spaces, non-ASCII, ``"<>\\^`{|}``), existing escapes in upper case, escaped
  unreserved characters decoded, dot-segments removed (RFC 3986 §5.2.4, so ``/a/../b``
  is ``/b`` and ``/../`` is ``/``), and no trailing ``/``;
- control characters (CR, LF, TAB, NUL, ...) and surrounding spaces are refused, never
  dropped silently.

The same URL always gives the same string: ``canonical_url(canonical_url(u)) ==
canonical_url(u)``.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from coyote_mw.errors import InvalidInstanceURL

__all__ = ["canonical_url"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_DEFAULT_PORT = {"http": 80, "https": 443}
# RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; and "/" between
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset("0123456789abcdefABCDEF")
MAX_URL = 2000


def canonical_url(url: str) -> str:
    """The canonical form of an instance URL; ``InvalidInstanceURL`` saying how to fix it."""
    if not isinstance(url, str):
        raise InvalidInstanceURL(f"url must be a string, not {type(url).__name__}")
    if not url or len(url) > MAX_URL:
        raise InvalidInstanceURL(f"url must be 1 to {MAX_URL} characters long")
    if _CONTROL.search(url):
        raise InvalidInstanceURL(
            "url may not contain control characters (CR, LF, TAB, NUL...): remove them"
        )
    if url != url.strip():
        raise InvalidInstanceURL("url may not start or end with spaces: remove them")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInstanceURL("url is not valid Unicode (a lone surrogate)") from None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInstanceURL(f"url {url!r} cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT or not parts.netloc:
        raise InvalidInstanceURL(
            f"url {url!r} must be an absolute http:// or https:// URL with a host, "
            "e.g. 'http://10.0.0.7:8000'"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidInstanceURL("url may not carry a query or a fragment: remove them")
    if "@" in parts.netloc:
        raise InvalidInstanceURL("url may not carry credentials (user:password@): remove them")
    host = _host(parts.netloc, url)
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInstanceURL(f"url has a bad port: {exc}") from None
    if port == 0:
        raise InvalidInstanceURL("url has a bad port: 0 (use 1-65535)")
    netloc = host if port is None or port == _DEFAULT_PORT[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{canonical_path(parts.path)}"


def _host(netloc: str, url: str) -> str:
    hostport = netloc
    if hostport.startswith("["):
        end = hostport.find("]")
        literal = hostport[1:end] if end > 0 else ""
        after = hostport[end + 1 :] if end > 0 else ""
        try:
            if "%" in literal or (after and not after.startswith(":")):
                raise ValueError(literal)
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidInstanceURL(
                f"url {url!r}: {hostport!r} is not an IPv6 address in brackets with an "
                "optional ':port' (zone ids are not allowed)"
            ) from None
        return f"[{address.compressed}]"
    host = hostport.rsplit(":", 1)[0] if ":" in hostport else hostport
    if not host:
        raise InvalidInstanceURL(f"url {url!r} has no host")
    if not host.isascii():
        import idna  # only for internationalised names

        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidInstanceURL(
                f"url {url!r}: the host is not a valid internationalised name ({exc})"
            ) from None
    host = host.lower()
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if _ends_in_a_number(labels):
        return _ipv4(labels, url, host)
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidInstanceURL(
            f"url {url!r}: the host {host!r} is not a DNS name or an IP address "
            "(letters, digits, '-' and '_' in dot-separated labels; IPv6 in brackets)"
        )
    return host


def _ends_in_a_number(labels: list[str]) -> bool:
    """WHATWG URL "ends in a number": then the host is an IPv4 address or nothing."""
    last = labels[-1]
    return last.isascii() and (last.isdigit() or _ipv4_number(last) is not None)


def _ipv4_number(part: str) -> int | None:
    """WHATWG URL "IPv4 number": decimal, ``0x`` hexadecimal or ``0`` octal."""
    if not part:
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0
    digits = "0123456789abcdef"[:radix]
    if not all(c in digits for c in part.lower()):
        return None
    part = part.lstrip("0")
    # 12 significant digits or more are past any address (8**11 is 2**33): not converted
    return int(part or "0", radix) if len(part) <= 11 else 1 << 32


def _ipv4(labels: list[str], url: str, host: str) -> str:
    """The dotted quad of a host that ends in a number, as browsers read it (WHATWG URL
    IPv4 parser): ``127.1``, ``0x7f.0.0.1``, ``0177.0.0.1`` and ``2130706433`` are all
    ``127.0.0.1``; the last part fills the bytes the others leave."""
    numbers = [_ipv4_number(label) for label in labels]
    if len(labels) <= 4 and all(n is not None for n in numbers):
        *first, last = [n for n in numbers if n is not None]
        if all(n <= 255 for n in first) and last < 256 ** (4 - len(first)):
            address = last
            for i, n in enumerate(first):
                address += n << (8 * (3 - i))
            return str(ipaddress.IPv4Address(address))
    raise InvalidInstanceURL(
        f"url {url!r}: the host {host!r} ends in a number, so it is read as an IPv4 "
        "address, and it is not one (at most four dot-separated numbers, each 0-255 but "
        "the last, which fills the bytes left); write it as a dotted quad such as "
        "'10.0.0.7', or use a DNS name"
    )


def canonical_path(path: str) -> str:
    """``path`` percent-encoded per RFC 3986, without dot-segments or a trailing '/'."""
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "%" and i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
            decoded = chr(int(path[i + 1 : i + 3], 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + path[i + 1 : i + 3].upper())
            i += 3
            continue
        if c in _PATH_SAFE:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
        i += 1
    return _remove_dot_segments("".join(out)).rstrip("/")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path whose escaped dots were already decoded."""
    if "." not in path:
        return path
    segments = path.split("/")
    kept: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                kept.append("")
        elif seg == "..":
            if len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(seg)
    result = "/".join(kept)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result
