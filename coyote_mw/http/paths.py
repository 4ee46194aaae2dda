"""One canonical form of a request path, used both to match and to forward.

ASGI servers hand us ``raw_path`` (bytes as sent) and WSGI servers ``REQUEST_URI`` /
``RAW_URI``; both adapters feed those raw bytes here, so a WSGI host and an ASGI host
give the same verdict for the same request.  The rules, in order:

* the path must start with ``/``; raw non-ASCII bytes are treated as if percent-encoded;
* a ``%`` not followed by two hex digits, an encoding of bytes that are not UTF-8, or
  an encoded NUL is a 400 ``Bad request path``;
* repeated slashes collapse into one (``/a//b`` is ``/a/b``); a trailing slash is kept and
  is significant (``/items`` and ``/items/`` are different routes);
* dot-segments are removed as RFC 3986 section 5.2.4 says, after decoding, so ``%2e%2e`` is
  ``..`` too; a ``..`` that would climb above the root is a 400, never silently clamped;
* an encoded slash (``%2F``) is data, not a separator: ``/files/a%2Fb`` has the two
  segments ``files`` and ``a/b``;
* matching is case-sensitive and runs on decoded segments;
* the forwarded (raw) form is the RFC 3986 section 6.2.2 normal form: percent-encoded
  unreserved characters decoded, other escapes upper-cased, reserved characters left as
  sent, so a request that is already canonical is forwarded byte for byte.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

from coyote_mw.errors import BadRequestPath

__all__ = ["CanonicalPath", "canonical_raw", "canonicalize", "from_decoded", "quote_segment"]


class CanonicalPath(NamedTuple):
    path: str
    """Decoded path (``/files/a/b`` for ``/files/a%2Fb``): what handlers see as ``path``."""
    raw: str
    """Normalised percent-encoded path: what is forwarded and what the log shows."""
    segments: tuple[str, ...] | None
    """Decoded segments when one holds an encoded slash; ``None`` when ``path`` splits."""


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stand unescaped in a path segment (RFC 3986 pchar minus "%"); used to
# escape raw non-ASCII bytes and decoded paths without touching anything else.
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"


def _normalise_escape(m: re.Match[str]) -> str:
    byte = int(m.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else "%" + m.group(1).upper()


def quote_segment(segment: str) -> str:
    """Percent-encode one decoded segment (a ``/`` inside it becomes ``%2F``)."""
    return quote_from_bytes(segment.encode("utf-8"), safe=_PCHAR_SAFE)


def canonicalize(raw: str | bytes) -> CanonicalPath:
    """Canonicalise a raw request path (no query string). Raises ``BadRequestPath``."""
    if isinstance(raw, bytes):
        data = raw
        try:
            raw = data.decode("ascii")
        except UnicodeDecodeError:
            # Some clients send UTF-8 unescaped; treat it as if it were escaped.
            raw = quote_from_bytes(data, safe="/%" + _PCHAR_SAFE)
    elif not raw.isascii():
        raw = quote_from_bytes(raw.encode("utf-8"), safe="/%" + _PCHAR_SAFE)
    # Fast path: nothing to decode, collapse or resolve.
    if raw[:1] == "/" and "%" not in raw and "//" not in raw and "/." not in raw:
        return CanonicalPath(raw, raw, None)
    if raw[:1] != "/":
        raise BadRequestPath("the path must start with '/'")
    parts = raw.split("/")
    raw_out: list[str] = []
    dec_out: list[str] = []
    trailing = False
    for part in parts[1:]:
        if not part:
            trailing = True
            continue
        if "%" in part:
            decoded = _decode(part)
            part = _ESCAPE.sub(_normalise_escape, part)
        else:
            decoded = part
        trailing = False
        if decoded == ".":
            trailing = True
            continue
        if decoded == "..":
            if not dec_out:
                raise BadRequestPath("'..' climbs above the root of the path")
            raw_out.pop()
            dec_out.pop()
            trailing = True
            continue
        raw_out.append(part)
        dec_out.append(decoded)
    if trailing or not dec_out:
        raw_out.append("")
        dec_out.append("")
    segments = tuple(dec_out)
    return CanonicalPath(
        "/" + "/".join(segments),
        "/" + "/".join(raw_out),
        segments if any("/" in s for s in segments) else None,
    )


def from_decoded(path: str) -> str:
    """Re-escape an already decoded path (ASGI ``path``, WSGI ``PATH_INFO``).

    Used only when the server gives no raw path; an encoded slash can no longer be
    told from a separator then, which is why both adapters prefer the raw path.
    """
    return quote_from_bytes(path.encode("utf-8", "surrogateescape"), safe="/" + _PCHAR_SAFE)


def _decode(part: str) -> str:
    if part.count("%") != len(_ESCAPE.findall(part)):
        raise BadRequestPath(f"malformed percent-encoding in {part!r}")
    try:
        decoded = unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestPath(f"percent-encoded bytes in {part!r} are not UTF-8") from None
    if "\x00" in decoded:
        raise BadRequestPath("the path contains an encoded NUL byte")
    return decoded


# Canonical paths by raw path (what a server hands over): most requests repeat a few
# paths.  Bounded, cleared when full; a long path is not kept.
_paths: dict[bytes, CanonicalPath] = {}
_PATHS_MAX = 1024
_PATH_KEPT_MAX = 256


def canonical_raw(raw: bytes) -> CanonicalPath:
    """The canonical path of a raw path (no query, no root path), kept for the next
    request of the same path (``BadRequestPath`` for a path that has none)."""
    kept = _paths.get(raw)
    if kept is None:
        kept = canonicalize(raw)  # BadRequestPath is raised, never kept
        if len(raw) <= _PATH_KEPT_MAX:
            if len(_paths) >= _PATHS_MAX:
                _paths.clear()
            _paths[raw] = kept
    return kept
