"""Route patterns: ``/items/{id:int}``, ``/users/{name}``, ``/static/{rest:path}``.

Parameters are spelled as Starlette spells them.  A pattern is parsed once, at
registration, into segment specs the matcher compiles into its trie; a pattern that
cannot be used raises ``InvalidRoute`` with a message that says how to fix it.

Convertors (``{name:conv}``; ``str`` is the default):

=======  ===========================  ============================================
str      one non-empty segment        ``str``
int      ``[0-9]+``                   ``int`` (at most ``sys.get_int_max_str_digits()``
                                      digits, what ``int()`` converts)
float    ``[0-9]+(.[0-9]+)?``         ``float`` (finite: a numeral past the float
                                      range, about 1.8e308, is no match)
uuid     8-4-4-4-12 hex digits        ``uuid.UUID``
path     the rest of the path         ``str`` (may hold ``/``; last segment only)
=======  ===========================  ============================================

A value its convertor cannot convert is no match (404 or fall-through), never an error:
a convertor's ``check`` passes exactly the values its ``convert`` takes.

Precedence where several patterns fit one path, most specific first at each segment:
a literal segment, then a segment mixing literals and parameters (``{name}.json``),
then a typed parameter (int, float, uuid), then ``str``, then ``path``.  The search
backtracks, so a deeper mismatch under a literal still tries the parameters.

A segment mixing literals and parameters is matched in one pass (see
``_mixed_segment``), in time linear in its length whatever the literals' length:
parameters need a literal between them; a ``str`` parameter followed by another ends
where the next literal first occurs; a typed one takes the longest value of its type.
Patterns that cannot be matched so are refused.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from coyote_mw.errors import InvalidRoute

__all__ = [
    "CONVERTORS",
    "Convertor",
    "MixedSegment",
    "Pattern",
    "Segment",
    "Step",
    "parse_method",
    "parse_pattern",
]


@dataclass(frozen=True, slots=True)
class Convertor:
    name: str
    regex: str
    convert: Callable[[str], Any]
    check: Callable[[str], bool]
    """Whole-value test, cheaper than the regex on the hot path; a value that passes it
    always converts (``convert`` never raises on the request path)."""
    priority: int
    """Lower is tried first among parameters at one segment."""


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]+)?")


# A numeral of at most this many characters always converts: int() refuses a numeral of
# more than sys.get_int_max_str_digits() digits (4300 by default, 0 for no limit; leading
# zeros count) and that limit is never below 640 (sys.int_info.str_digits_check_threshold);
# float() of a numeral this short is below 1e308, finite.
_CONVERTS = 308


def _is_int(s: str) -> bool:
    return s.isascii() and s.isdigit() and (len(s) <= _CONVERTS or _int_converts(s))


def _int_converts(s: str) -> bool:
    limit = sys.get_int_max_str_digits()
    return limit == 0 or len(s) <= limit


def _is_float(s: str) -> bool:
    return _FLOAT.fullmatch(s) is not None and (len(s) <= _CONVERTS or math.isfinite(float(s)))


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
_TYPED = ("int", "float", "uuid")

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 method token


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a pattern.

    ``kind`` is "literal" (``text`` is the decoded literal), "param" (one whole-segment
    parameter), "complex" (literals and parameters mixed; ``mixed`` matches the segment)
    or "path" (the rest of the path).  ``key`` identifies the segment's shape: two
    patterns whose segments have equal keys fit exactly the same paths.
    """

    kind: str
    key: str
    text: str = ""
    convertors: tuple[Convertor, ...] = ()
    mixed: MixedSegment | None = None
    """How a "complex" segment is matched."""
    priority: int = 0


class Step(NamedTuple):
    """A parameter of a mixed segment other than the last, and the literal after it."""

    convertor: Convertor
    literal: str
    finder: re.Pattern[str] | None
    """A ``str`` parameter: the literal alone as a pattern.  Its ``search`` is the regex
    engine's literal scan (a Knuth-Morris-Pratt overlap table), which reads each
    character a bounded number of times however long the literal (``str.find`` does
    not: a literal nearly as long as the text costs their product)."""
    span: re.Pattern[str] | None
    """A typed parameter: its value (group 1, the longest of its type, in an atomic
    group: never given back) and the literal after it, matched once from where the
    value starts."""


@dataclass(frozen=True, slots=True)
class MixedSegment:
    """A segment mixing literals and parameters, matched in one pass from its start
    (from its end when ``reverse``): ``head``, then each of ``steps`` (a parameter and
    the literal after it), then the ``last`` parameter, then ``tail``.  Built by
    ``_mixed_segment``, which says why each parameter has one place to end."""

    head: str
    steps: tuple[Step, ...]
    last: Convertor
    tail: str
    reverse: bool
    """Match the segment read backwards (``head``, ``steps`` and ``tail`` are read
    backwards too, the last parameter first)."""

    def match(self, seg: str) -> tuple[str, ...] | None:
        """The parameters' raw values in the pattern's order, each one its convertor's
        ``check`` passes, or None.  Never raises.

        One pass, linear in the segment's length whatever the literals: each literal is
        compared in place or searched for once, from where the text before it ended;
        no parameter is tried at a second length."""
        if self.reverse:
            seg = seg[::-1]
        head = self.head
        tail = self.tail
        # no literal holds a '/' and no parameter of a mixed segment may
        if "/" in seg or (head and not seg.startswith(head)) or (tail and not seg.endswith(tail)):
            return None
        pos = len(head)
        end = len(seg) - len(tail)
        if not self.steps:  # one parameter: what lies between head and tail
            value = seg[pos:end]  # empty when pos >= end
            return (value,) if value and self.last.check(value) else None
        values: list[str] = []
        for conv, after, finder, span in self.steps:
            if finder is not None:  # str: up to where the literal after it first occurs
                found = finder.search(seg, pos, end)
                if found is None:
                    return None
                stop = found.start()
                if stop == pos:  # an empty value
                    return None
                values.append(seg[pos:stop])
                pos = stop + len(after)
            else:  # typed: the longest value of its type, never less, then the literal
                assert span is not None
                found = span.match(seg, pos)
                if found is None:
                    return None
                value = found[1]
                # the span took a value of its type: only a long one may not convert
                if len(value) > _CONVERTS and not conv.check(value):
                    return None
                values.append(value)
                pos = found.end()
        value = seg[pos:end]
        if not value or not self.last.check(value):
            return None
        values.append(value)
        if self.reverse:  # read backwards: the last parameter first, each reversed
            return tuple([v[::-1] for v in reversed(values)])
        return tuple(values)


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
        # Literals and parameters mixed in one segment: plan one pass over it.
        mixed, key = _mixed_segment(text, part, params, convs)
        segments.append(
            Segment(
                "complex",
                key,
                convertors=tuple(convs),
                mixed=mixed,
                priority=COMPLEX_PRIORITY,
            )
        )
    return Pattern(text, tuple(segments), tuple(names))


def _mixed_segment(
    text: str, part: str, params: list[re.Match[str]], convs: list[Convertor]
) -> tuple[MixedSegment, str]:
    """How to match a segment mixing literals and parameters, and its shape key.

    One pass over the segment, whatever it holds: every parameter but the one matched
    last has exactly one place where it can end, found without trying another, and
    every literal is compared in place or searched for once with a linear literal
    scan (``Step.finder``), so the cost grows with the segment's length and not with
    the literals' length.

    - Two parameters must have a literal between them (``{a}{b}`` is refused).
    - Several parameters, all ``str``: the segment is matched backwards, each parameter
      after the first ending (from the right) where the literal before it last occurs,
      so the split is the one Starlette's greedy regex gives: ``{a}.{b}`` on
      ``x.tar.gz`` is ``a="x.tar"``, ``b="gz"``.
    - Typed parameters among them (int, float, uuid): matched forwards.  A typed
      parameter followed by another takes the longest value of its type and never gives
      any back, so the literal after an int or a float may not start with a digit (it
      could never match), which is refused; a ``str`` parameter followed by another ends
      where the next literal first occurs (``{a}.{n:int}.{b}`` on ``x.y.1.z`` does not
      match: ``a`` is ``x``).
    - The parameter matched last is whatever lies between the text before it and the
      literal that ends the segment.
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
        return _plan(backwards, convs[::-1], reverse=True), key
    for i, c in enumerate(convs[:-1]):
        after = literals[i + 1]
        if after[:1].isdigit() and c.name in ("int", "float"):
            raise InvalidRoute(
                f"pattern {text!r}: the {c.name} parameter {{{params[i].group(1)}}} is "
                f"followed by {after!r}, which starts with a digit, so the {c.name} could "
                "never end before it; start that literal with something else, e.g. '-'"
            )
    return _plan(literals, convs, reverse=False), key


def _plan(literals: list[str], convs: list[Convertor], reverse: bool) -> MixedSegment:
    """``literals[0] (p0) literals[1] (p1) ... literals[-1]`` as a ``MixedSegment``."""
    steps = tuple(
        Step(c, after, None, re.compile(f"(?>({c.regex})){re.escape(after)}"))
        if c.name in _TYPED
        else Step(c, after, re.compile(re.escape(after)), None)
        for c, after in zip(convs[:-1], literals[1:-1], strict=True)
    )
    return MixedSegment(literals[0], steps, convs[-1], literals[-1], reverse)
