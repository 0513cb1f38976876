"""Value matchers: one Sigma detection value (with its modifiers) -> a predicate.

Event values are reduced to their *leaf strings* first (see :func:`leaves`) so
that ``EventID: 800`` matches ``800``, ``"800"`` and ``{"#text": "800"}`` alike,
and a field holding a list or an object (event 800's ``EventData``) matches when
any string inside it matches.  Matching is case-insensitive unless ``|cased``.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import attrs

from ..values import fold

# Modifiers we understand; anything else is a rule error naming the modifier.
VALUE_MODIFIERS = {"contains", "startswith", "endswith", "re", "cased"}
LIST_MODIFIERS = {"all"}
FIELD_MODIFIERS = {"exists"}
KNOWN_MODIFIERS = VALUE_MODIFIERS | LIST_MODIFIERS | FIELD_MODIFIERS


@attrs.frozen
class StringTest:
    """How one rule string is compared: kind in equals/contains/startswith/endswith/regex."""

    kind: str
    needle: str  # case-folded unless cased; the pattern source for kind == "regex"
    cased: bool
    regex: Optional[re.Pattern] = None

    def __call__(self, text: str) -> bool:
        if not self.cased:
            text = text.casefold()
        if self.regex is not None:
            return self.regex.search(text) is not None
        if self.kind == "contains":
            return self.needle in text
        if self.kind == "startswith":
            return text.startswith(self.needle)
        if self.kind == "endswith":
            return text.endswith(self.needle)
        return text == self.needle

    def literals(self) -> Optional[tuple]:
        """Substrings one of which every matching text contains, after folding (for a prefilter)."""
        if self.kind == "regex":
            return None
        return (fold(self.needle),) if self.needle else None


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


def compile_string(value: str, modifiers: set) -> StringTest:
    """Compile one rule string with its value modifiers.

    ``|re`` patterns keep Python's ``re.IGNORECASE`` semantics on the original
    text; everything else compares case-folded text with a case-folded needle.
    """
    cased = "cased" in modifiers
    if "re" in modifiers:
        flags = re.DOTALL | (0 if cased else re.IGNORECASE)
        return _RegexTest("regex", value, cased, re.compile(value, flags))
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
    pattern = "".join(".*" if p is ANY else "." if p is ONE else re.escape(p) for p in parts)
    test = StringTest("regex", pattern, cased, re.compile(rf"\A(?:{pattern})\Z", re.DOTALL))
    return _WildcardTest(test, tuple(inner))


class _RegexTest(StringTest):
    """``|re``: the pattern runs on the original text (its own case rules)."""

    def __call__(self, text: str) -> bool:
        return self.regex.search(text) is not None


@attrs.frozen
class _WildcardTest:
    """A wildcard pattern; keeps its (folded) literal chunks for the prefilter."""

    test: StringTest
    chunks: tuple

    def __call__(self, text: str) -> bool:
        return self.test(text)

    @property
    def kind(self) -> str:
        return "wildcard"

    @property
    def needle(self) -> str:
        return self.test.needle

    @property
    def cased(self) -> bool:
        return self.test.cased

    def literals(self) -> Optional[tuple]:
        # Every chunk must occur; the longest alone is enough for soundness.
        longest = max(self.chunks, key=len, default="")
        return (fold(longest),) if longest else None


def compile_scalar(value, modifiers: set) -> Callable[[str], bool]:
    """A rule value that is a number or bool compares with the leaf's text form."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return compile_string(text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"), modifiers)
