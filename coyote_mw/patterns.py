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

import itertools
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
    reverse: bool = False
    """A "complex" segment whose ``regex`` matches the segment read backwards (its
    groups read backwards too, last parameter first): see ``_mixed_segment``."""


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
        regex, key, reverse = _mixed_segment(text, part, params, convs)
        segments.append(
            Segment(
                "complex",
                key,
                convertors=tuple(convs),
                regex=re.compile(regex),
                priority=COMPLEX_PRIORITY,
                reverse=reverse,
            )
        )
    return Pattern(text, tuple(segments), tuple(names))


def _mixed_segment(
    text: str, part: str, params: list[re.Match[str]], convs: list[Convertor]
) -> tuple[str, str, bool]:
    """The regex, the shape key and the direction of a segment mixing literals and
    parameters.

    Matching takes time linear in the segment's length, by construction: every parameter
    but the one matched last has exactly one place where it can end, so the regex engine
    never retries a parameter after the one that follows it has started.

    - Two parameters must have a literal between them (``{a}{b}`` is refused).
    - Several parameters, all ``str``: the segment is matched backwards, each parameter after the
      first ending (from the right) where the literal before it last occurs, so the
      split is the one Starlette's greedy regex gives: ``{a}.{b}`` on ``x.tar.gz`` is
      ``a="x.tar"``, ``b="gz"``.
    - Typed parameters among them (int, float, uuid): matched forwards.  A typed
      parameter followed by another takes the longest value of its type and never gives
      any back (an atomic group), so the literal after an int or a float may not start
      with a digit (it could never match), which is refused; a ``str`` parameter
      followed by another ends where the next literal first occurs
      (``{a}.{n:int}.{b}`` on ``x.y.1.z`` does not match: ``a`` is ``x``).
    - The parameter matched last is followed only by a literal and the end of the
      segment: the engine tries each of its ends once, checking the literal.
    """
    literals = [part[: params[0].start()]]
    literals += [part[m.end() : n.start()] for m, n in itertools.pairwise(params)]
    literals.append(part[params[-1].end() :])
    key = literals[0] + "".join(
        "{:" + c.name + "}" + lit for c, lit in zip(convs, literals[1:], strict=True)
    )
    for i, between in enumerate(literals[1:-1], start=1):
        if between == "":
            a, b = params[i - 1].group(1), params[i].group(1)
            raise InvalidRoute(
                f"pattern {text!r}: parameters {{{a}}} and {{{b}}} touch in segment "
                f"{part!r}, so where one ends is ambiguous; put a literal between them, "
                f"e.g. '{{{a}}}-{{{b}}}'"
            )
    if len(convs) > 1 and all(c.name == "str" for c in convs):
        # backwards: the last parameter first, each followed by the literal before it
        backwards = [lit[::-1] for lit in reversed(literals)]
        return _linear(backwards, [c.regex for c in reversed(convs)], []), key, True
    for i, c in enumerate(convs[:-1]):
        after = literals[i + 1]
        if after[:1].isdigit() and c.name in ("int", "float"):
            raise InvalidRoute(
                f"pattern {text!r}: the {c.name} parameter {{{params[i].group(1)}}} is "
                f"followed by {after!r}, which starts with a digit, so the {c.name} could "
                "never end before it; start that literal with something else, e.g. '-'"
            )
    typed = [c.name != "str" for c in convs]
    return _linear(literals, [c.regex for c in convs], typed), key, False


def _linear(literals: list[str], regexes: list[str], typed: list[bool]) -> str:
    """``literals[0] (p0) literals[1] (p1) ... literals[-1]`` where every parameter but
    the last has one end: a typed one (``typed[i]``) in an atomic group, a ``str`` one
    as a run that stops where the next literal first occurs."""
    regex = re.escape(literals[0])
    last = len(regexes) - 1
    for i, param in enumerate(regexes):
        after = literals[i + 1]
        if i == last:
            regex += f"({param})"
        elif typed and typed[i]:
            regex += f"((?>{param}))"
        elif len(after) == 1:
            regex += f"([^/{re.escape(after)}]+)"
        else:
            regex += f"((?:(?!{re.escape(after)})[^/])+)"
        regex += re.escape(after)
    return regex
