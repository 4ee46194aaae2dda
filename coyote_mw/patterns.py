"""Route patterns: ``/items/{id:int}``, ``/users/{name}``, ``/static/{rest:path}``.

Parameters are spelled as Starlette spells them.  A pattern is parsed once, at
registration, into segment specs the matcher compiles into its trie; a pattern that
cannot be used raises ``InvalidRoute`` with a message that says how to fix it.

Convertors (``{name:conv}``; ``str`` is the default):

=======  ===========================  ============================================
str      one non-empty segment        ``str``
int      ``[0-9]+``                   ``int``
float    ``[0-9]+(.[0-9]+)?``         ``float``
uuid     8-4-4-4-12 hex digits        ``uuid.UUID``
path     the rest of the path         ``str`` (may hold ``/``; last segment only)
=======  ===========================  ============================================

Precedence where several patterns fit one path, most specific first at each segment:
a literal segment, then a segment mixing literals and parameters (``{name}.json``),
then a typed parameter (int, float, uuid), then ``str``, then ``path``.  The search
backtracks, so a deeper mismatch under a literal still tries the parameters.

A segment mixing literals and parameters matches in time linear in its length (see
``_mixed_segment``): parameters need a literal between them; a ``str`` parameter
followed by another ends where the next literal first occurs; a typed one takes the
longest value of its type.  Patterns that cannot be matched so are refused.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coyote_mw.errors import InvalidRoute

__all__ = [
    "CONVERTORS",
    "Convertor",
    "Pattern",
    "Segment",
    "parse_method",
    "parse_pattern",
]


@dataclass(frozen=True, slots=True)
class Convertor:
    name: str
    regex: str
    convert: Callable[[str], Any]
    check: Callable[[str], bool]
    """Whole-segment test, cheaper than the regex on the hot path."""
    priority: int
    """Lower is tried first among parameters at one segment."""


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]+)?")


def _is_int(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _is_float(s: str) -> bool:
    return _FLOAT.fullmatch(s) is not None


def _is_uuid(s: str) -> bool:
    return len(s) == 36 and _UUID.fullmatch(s) is not None


def _is_nonempty(s: str) -> bool:
    return s != ""


CONVERTORS: dict[str, Convertor] = {
    c.name: c
    for c in (
        Convertor("int", "[0-9]+", int, _is_int, 1),
        Convertor("float", r"[0-9]+(?:\.[0-9]+)?", float, _is_float, 1),
        Convertor("uuid", _UUID.pattern, uuid.UUID, _is_uuid, 1),
        Convertor("str", "[^/]+", str, _is_nonempty, 2),
        Convertor("path", ".*", str, _is_nonempty, 3),
    )
}

COMPLEX_PRIORITY = 0

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 method token


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a pattern.

    ``kind`` is "literal" (``text`` is the decoded literal), "param" (one whole-segment
    parameter), "complex" (literals and parameters mixed; ``regex`` matches the segment)
    or "path" (the rest of the path).  ``key`` identifies the segment's shape: two
    patterns whose segments have equal keys fit exactly the same paths.
    """

    kind: str
    key: str
    text: str = ""
    convertors: tuple[Convertor, ...] = ()
    regex: re.Pattern[str] | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str
    segments: tuple[Segment, ...]
    names: tuple[str, ...]
    """Parameter names in the order the matcher collects their values."""

    @property
    def shape(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.segments)

    @property
    def is_static(self) -> bool:
        return all(s.kind == "literal" for s in self.segments)


def parse_method(method: str) -> str:
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise InvalidRoute(f"method {method!r} is not an HTTP method token (e.g. 'GET')")
    return method.upper()


def parse_pattern(text: str) -> Pattern:
    """Parse a route pattern; raise ``InvalidRoute`` saying how to fix a bad one."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise InvalidRoute(f"pattern {text!r} must be a string starting with '/'")
    if any(c in text for c in "?#") or not text.isprintable() or " " in text:
        raise InvalidRoute(
            f"pattern {text!r} may not contain '?', '#', spaces or control characters"
        )
    parts = text[1:].split("/")
    segments: list[Segment] = []
    names: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "":
            if not last:
                raise InvalidRoute(f"pattern {text!r} has an empty segment ('//'); remove it")
            segments.append(Segment("literal", "", text=""))
            continue
        if part in (".", ".."):
            raise InvalidRoute(f"pattern {text!r} has a dot-segment {part!r}; remove it")
        if "%" in part:
            raise InvalidRoute(
                f"pattern {text!r} holds a percent-escape; write the decoded character "
                "instead (patterns match decoded paths)"
            )
        params = list(_PARAM.finditer(part))
        stray = _PARAM.sub("", part)
        if "{" in stray or "}" in stray:
            raise InvalidRoute(f"pattern {text!r}: unbalanced '{{' or '}}' in segment {part!r}")
        if not params:
            segments.append(Segment("literal", part, text=part))
            continue
        convs: list[Convertor] = []
        for m in params:
            name, conv_name = m.group(1), (m.group(2) or "str")
            if not _NAME.match(name):
                raise InvalidRoute(
                    f"pattern {text!r}: parameter name {name!r} must be a Python identifier"
                )
            if name in names:
                raise InvalidRoute(f"pattern {text!r}: parameter {name!r} appears twice")
            conv = CONVERTORS.get(conv_name)
            if conv is None:
                raise InvalidRoute(
                    f"pattern {text!r}: unknown convertor {conv_name!r}; use one of "
                    + ", ".join(sorted(CONVERTORS))
                )
            names.append(name)
            convs.append(conv)
        whole = len(params) == 1 and params[0].group(0) == part
        if any(c.name == "path" for c in convs):
            if not (whole and last):
                raise InvalidRoute(
                    f"pattern {text!r}: a 'path' parameter must be a whole segment and the "
                    "last one, as in '/static/{rest:path}'"
                )
            segments.append(Segment("path", "{:path}", convertors=(convs[0],), priority=3))
            continue
        if whole:
            c = convs[0]
            segments.append(
                Segment("param", "{:" + c.name + "}", convertors=(c,), priority=c.priority)
            )
            continue
        # Literals and parameters mixed in one segment: compile one regex for it.
        regex, key = _mixed_segment(text, part, params, convs)
        segments.append(
            Segment(
                "complex",
                key,
                convertors=tuple(convs),
                regex=re.compile(regex),
                priority=COMPLEX_PRIORITY,
            )
        )
    return Pattern(text, tuple(segments), tuple(names))


def _mixed_segment(
    text: str, part: str, params: list[re.Match[str]], convs: list[Convertor]
) -> tuple[str, str]:
    """The regex and the shape key of a segment mixing literals and parameters.

    Matching it takes time linear in the segment's length, by construction: every
    parameter but the last has exactly one place where it can end, so the regex engine
    never retries a parameter after the one that follows it has started.

    - Two parameters must have a literal between them (``{a}{b}`` is refused).
    - A ``str`` parameter followed by another parameter ends where the literal after it
      first occurs: ``[^/c]+`` for a one-character literal ``c``, a run of characters
      none of which starts the literal otherwise.  ``{a}.{b}`` on ``x.tar.gz`` gives
      ``a="x"``, ``b="tar.gz"``.
    - A typed parameter (int, float, uuid) followed by another parameter takes the
      longest value of its type and never gives any back (an atomic group): so the
      literal after an int or a float may not start with a digit (it could never
      match), which is refused.
    - The last parameter is followed only by a literal and the end of the segment: the
      engine tries each of its ends once, checking the literal, which is linear.
    """
    regex, key, pos = "", "", 0
    last = len(params) - 1
    for i, (m, c) in enumerate(zip(params, convs, strict=True)):
        before = part[pos : m.start()]
        if i > 0 and before == "":
            raise InvalidRoute(
                f"pattern {text!r}: parameters {{{params[i - 1].group(1)}}} and "
                f"{{{m.group(1)}}} touch in segment {part!r}, so where one ends is "
                f"ambiguous; put a literal between them, e.g. "
                f"'{{{params[i - 1].group(1)}}}-{{{m.group(1)}}}'"
            )
        regex += re.escape(before)
        key += before + "{:" + c.name + "}"
        pos = m.end()
        if i == last:
            regex += f"({c.regex})"
            continue
        after = part[pos : params[i + 1].start()]
        if after[:1].isdigit() and c.name in ("int", "float"):
            raise InvalidRoute(
                f"pattern {text!r}: the {c.name} parameter {{{m.group(1)}}} is followed by "
                f"{after!r}, which starts with a digit, so the {c.name} could never end "
                "before it; start that literal with something else, e.g. '-'"
            )
        if c.name != "str":
            regex += f"((?>{c.regex}))"
        elif len(after) == 1:
            regex += f"([^/{re.escape(after)}]+)"
        else:
            regex += f"((?:(?!{re.escape(after)})[^/])+)"
    tail = part[pos:]
    return regex + re.escape(tail), key + tail
