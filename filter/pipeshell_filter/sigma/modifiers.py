"""Value matchers: one Sigma detection value (with its modifiers) -> a predicate.

Event values are reduced to their *leaf strings* first (see :func:`leaves`) so
that ``EventID: 800`` matches ``800``, ``"800"`` and ``{"#text": "800"}`` alike,
and a field holding a list or an object (event 800's ``EventData``) matches when
any string inside it matches.  Matching is case-insensitive unless ``|cased``.

Every pattern runs on RE2 (the ``google-re2`` package), whose matching time is
linear in the text: a wildcard value or an ``|re`` written to backtrack (``*a*b*c``
against a long field, ``(a+)+$``) costs one pass like any other.  Plain values
(equals, contains, startswith, endswith) need no pattern at all.
"""

from __future__ import annotations

from typing import Callable, Optional

import attrs
import re2

from ..values import fold

# Modifiers we understand; anything else is a rule error naming the modifier.
VALUE_MODIFIERS = {"contains", "startswith", "endswith", "re", "cased"}
# Sigma v2.1 sub-modifiers of |re, each under its short and its long name, as an RE2 flag.
RE_FLAGS = {"i": "i", "ignorecase": "i", "m": "m", "multiline": "m", "s": "s", "dotall": "s"}
LIST_MODIFIERS = {"all"}
FIELD_MODIFIERS = {"exists"}
KNOWN_MODIFIERS = VALUE_MODIFIERS | set(RE_FLAGS) | LIST_MODIFIERS | FIELD_MODIFIERS

# A prefilter literal is at most this long (a prefix of the folded value: a text holding
# the whole value holds its prefix).  Hyperscan refuses a literal of 4,000 bytes and more.
MAX_LITERAL = 256


class PatternError(ValueError):
    """A value RE2 cannot run (backreference, lookaround, syntax error, too large); one line."""


def _options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.never_capture = True  # only "does it match" is asked
    return options


OPTIONS = _options()


def encode(text: str) -> bytes:
    """A str as RE2 reads it: UTF-8, a lone surrogate (JSON ``"\\ud800"``) as one character."""
    return text.encode("utf-8", "surrogatepass")


def escape(literal: str) -> str:
    """An RE2 pattern matching exactly ``literal``."""
    return re2.escape(encode(literal)).decode("utf-8", "surrogatepass")


def compile_re2(pattern: str):
    """``pattern`` (RE2 syntax) as a bound ``search`` over encoded text; PatternError when RE2 refuses it."""
    try:
        return re2.compile(encode(pattern), OPTIONS).search
    except re2.error as error:
        reason = error.args[0] if error.args else "rejected"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = " ".join(str(reason).split()) or "rejected"  # RE2 quotes the offending part: keep it short
        raise PatternError(reason if len(reason) <= 100 else reason[:97] + "...") from None


def _short_literal(literal: str) -> Optional[tuple]:
    return (literal[:MAX_LITERAL],) if literal else None


@attrs.frozen
class StringTest:
    """How one rule string is compared: kind in equals/contains/startswith/endswith."""

    kind: str
    needle: str  # case-folded unless cased
    cased: bool

    def __call__(self, text: str) -> bool:
        if not self.cased:
            text = text.casefold()
        if self.kind == "contains":
            return self.needle in text
        if self.kind == "startswith":
            return text.startswith(self.needle)
        if self.kind == "endswith":
            return text.endswith(self.needle)
        return text == self.needle

    def literals(self) -> Optional[tuple]:
        """Substrings one of which every matching text contains, after folding (for a prefilter)."""
        return _short_literal(fold(self.needle))


@attrs.frozen
class _RegexTest:
    """``|re``: an RE2 pattern searched in the original text (Sigma: case-sensitive unless ``|re|i``)."""

    needle: str  # the pattern as written
    flags: str  # RE2 flags from the sub-modifiers: "i", "m", "s"
    search: Callable = attrs.field(eq=False, repr=False)

    kind = "regex"

    @property
    def cased(self) -> bool:
        return "i" not in self.flags

    def __call__(self, text: str) -> bool:
        return self.search(encode(text)) is not None

    def literals(self) -> Optional[tuple]:
        return None


@attrs.frozen
class _WildcardTest:
    """A value with ``*`` / ``?``: an anchored RE2 pattern over the (folded unless cased) text.
    Keeps its (folded) literal chunks for the prefilter."""

    needle: str  # the RE2 pattern
    cased: bool
    chunks: tuple
    search: Callable = attrs.field(eq=False, repr=False)

    kind = "wildcard"

    def __call__(self, text: str) -> bool:
        if not self.cased:
            text = text.casefold()
        return self.search(encode(text)) is not None

    def literals(self) -> Optional[tuple]:
        # Every chunk must occur; the longest alone is enough for soundness.
        return _short_literal(fold(max(self.chunks, key=len, default="")))


class _Wildcard(str):
    """A ``*`` or ``?`` token, distinct from an escaped (literal) one."""


ANY, ONE = _Wildcard("*"), _Wildcard("?")


def _split_wildcards(value: str) -> list:
    """Split a Sigma string into literal chunks (str) and ANY / ONE tokens.

    A backslash escapes ``*``, ``?`` and itself; any other backslash is literal
    (Windows paths are written with single backslashes).
    """
    parts, literal, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            literal.append(value[i + 1])
            i += 2
            continue
        if ch in "*?":
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(ANY if ch == "*" else ONE)
        else:
            literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def re_flags(modifiers) -> str:
    """The RE2 flags an ``|re`` value's sub-modifiers ask for, in a fixed order."""
    flags = {RE_FLAGS[m] for m in modifiers if m in RE_FLAGS}
    return "".join(f for f in "ims" if f in flags)


def compile_string(value: str, modifiers: set):
    """Compile one rule string with its value modifiers.

    ``|re`` patterns run on the original text, case-sensitive unless ``|re|i``
    (``|cased`` changes nothing there); everything else compares case-folded
    text with a case-folded needle.  Raises :class:`PatternError` for a pattern
    RE2 cannot run.
    """
    cased = "cased" in modifiers
    if "re" in modifiers:
        flags = re_flags(modifiers)
        if cased and "i" in flags:
            raise PatternError("|cased and |i contradict each other")
        return _RegexTest(value, flags, compile_re2(f"(?{flags}){value}" if flags else value))
    parts = _split_wildcards(value)
    if "contains" in modifiers:
        parts = [ANY, *parts, ANY]
    elif "startswith" in modifiers:
        parts = [*parts, ANY]
    elif "endswith" in modifiers:
        parts = [ANY, *parts]
    # Collapse runs of ANY so '*x*' is recognised as plain 'contains'.
    collapsed = []
    for part in parts:
        if not (part is ANY and collapsed and collapsed[-1] is ANY):
            collapsed.append(part)
    parts = [p if isinstance(p, _Wildcard) or cased else fold(p) for p in collapsed]
    inner = [p for p in parts if not isinstance(p, _Wildcard)]
    if not any(p is ONE for p in parts) and len(inner) <= 1:
        needle = inner[0] if inner else ""
        lead, trail = bool(parts) and parts[0] is ANY, bool(parts) and parts[-1] is ANY
        if not inner:
            kind = "contains" if parts else "equals"  # '*' matches anything
        elif lead and trail:
            kind = "contains"
        elif trail:
            kind = "startswith"
        elif lead:
            kind = "endswith"
        else:
            kind = "equals"
        return StringTest(kind, needle, cased)
    pattern = wildcard_pattern(parts)
    return _WildcardTest(pattern, cased, tuple(inner), compile_re2(pattern))


def wildcard_pattern(parts: list) -> str:
    """ANY / ONE / literal parts as one anchored RE2 pattern: ``.`` is any character, newline too.
    Leading and trailing ANY are left out (RE2 searches unanchored): they cost nothing then."""
    body = [".*" if p is ANY else "." if p is ONE else escape(p) for p in parts]
    head = 1 if parts and parts[0] is ANY else 0
    tail = 1 if len(parts) > head and parts[-1] is ANY else 0
    middle = "".join(body[head:len(body) - tail])
    return "(?s:" + ("" if head else r"\A") + middle + ("" if tail else r"\z") + ")"


def compile_scalar(value, modifiers: set):
    """A rule value that is a number or bool compares with the leaf's text form."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    if "re" in modifiers:  # the number's text is the pattern
        return compile_string(text, modifiers)
    return compile_string(text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"), modifiers)
