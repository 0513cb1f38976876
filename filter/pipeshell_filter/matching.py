"""Value matchers: one Sigma detection value (with its modifiers) -> a predicate.

Event values are reduced to their *leaf strings* first (see :func:`leaves`) so
that ``EventID: 800`` matches ``800``, ``"800"`` and ``{"#text": "800"}`` alike,
and a field holding a list or an object (event 800's ``EventData``) matches when
any string inside it matches.  Matching is case-insensitive unless ``|cased``.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Optional

import attrs

# Modifiers we understand; anything else is a rule error naming the modifier.
VALUE_MODIFIERS = {"contains", "startswith", "endswith", "re", "cased"}
LIST_MODIFIERS = {"all"}
FIELD_MODIFIERS = {"exists"}
KNOWN_MODIFIERS = VALUE_MODIFIERS | LIST_MODIFIERS | FIELD_MODIFIERS


def leaves(value) -> Iterator[str]:
    """Every scalar inside a JSON value, as the string a rule compares with.

    An XML-as-JSON element ``{"#attributes": ..., "#text": x}`` stands for x:
    attributes are metadata (``Qualifiers="0"`` must not match ``EventID: 0``).
    """
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool):
        yield "true" if value else "false"
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float):
        yield str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, dict):
        if "#text" in value:
            yield from leaves(value["#text"])
        else:
            for key, item in value.items():
                if key != "#attributes":
                    yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)


def first_leaf(value) -> Optional[str]:
    return next(leaves(value), None)


@attrs.frozen
class StringTest:
    """How one rule string is compared: kind in equals/contains/startswith/endswith/regex."""

    kind: str
    needle: str  # lower-cased unless cased; the regex source for kind == "regex"
    cased: bool
    regex: Optional[re.Pattern] = None

    def __call__(self, text: str) -> bool:
        if self.regex is not None:
            return self.regex.search(text) is not None
        if not self.cased:
            text = text.lower()
        if self.kind == "contains":
            return self.needle in text
        if self.kind == "startswith":
            return text.startswith(self.needle)
        if self.kind == "endswith":
            return text.endswith(self.needle)
        return text == self.needle

    def literals(self) -> Optional[tuple]:
        """Plain substrings that every matching text must contain (for a prefilter)."""
        if self.kind == "regex":
            return None
        return (self.needle,) if self.needle else None


def _split_wildcards(value: str) -> list:
    """Split a Sigma string into literal chunks and '*' / '?' wildcards.

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
            parts.append(ch if ch == "?" else "*")
            i += 1
            continue
        literal.append(ch)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def compile_string(value: str, modifiers: set) -> StringTest:
    """Compile one rule string with its value modifiers."""
    cased = "cased" in modifiers
    if "re" in modifiers:
        flags = re.DOTALL | (0 if cased else re.IGNORECASE)
        return StringTest("regex", value, cased, re.compile(value, flags))
    parts = _split_wildcards(value)
    if "contains" in modifiers:
        parts = ["*", *parts, "*"]
    elif "startswith" in modifiers:
        parts = [*parts, "*"]
    elif "endswith" in modifiers:
        parts = ["*", *parts]
    # Collapse runs of '*' so '*x*' is recognised as plain 'contains'.
    collapsed = []
    for part in parts:
        if not (part == "*" and collapsed and collapsed[-1] == "*"):
            collapsed.append(part)
    parts = collapsed
    fold = (lambda s: s) if cased else str.lower
    inner = [p for p in parts if p not in ("*", "?")]
    if "?" not in parts and len(inner) <= 1:
        needle = fold(inner[0]) if inner else ""
        lead, trail = parts[:1] == ["*"], parts[-1:] == ["*"]
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
    pattern = "".join(".*" if p == "*" else "." if p == "?" else re.escape(p) for p in parts)
    flags = re.DOTALL | (0 if cased else re.IGNORECASE)
    test = StringTest("regex", pattern, cased, re.compile(rf"\A(?:{pattern})\Z", flags))
    return _WildcardTest(test, tuple(fold(p) for p in inner))


@attrs.frozen
class _WildcardTest:
    """A wildcard pattern; keeps its literal chunks for the prefilter."""

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

    def literals(self) -> Optional[tuple]:
        # Every chunk must occur; the longest alone is enough for soundness.
        longest = max(self.chunks, key=len, default="")
        return (longest,) if longest else None


def compile_scalar(value, modifiers: set) -> Callable[[str], bool]:
    """A rule value that is a number or bool compares with the leaf's text form."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return compile_string(text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"), modifiers)
