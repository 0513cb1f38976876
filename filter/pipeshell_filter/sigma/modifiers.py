"""Value matchers: one Sigma detection value (with its modifiers) -> a predicate.

Event values are reduced to their *leaf strings* first (see :func:`leaves`) so
that ``EventID: 800`` matches ``800``, ``"800"`` and ``{"#text": "800"}`` alike,
and a field holding a list or an object (event 800's ``EventData``) matches when
any string inside it matches.  Matching is case-insensitive unless ``|cased``.

Every pattern runs on RE2 (the ``google-re2`` package), whose matching time is
linear in the text: a wildcard value or an ``|re`` written to backtrack (``*a*b*c``
against a long field, ``(a+)+$``) costs one pass like any other.  Plain values
(equals, contains, startswith, endswith) need no pattern at all.

A key's modifiers are checked once (:meth:`ModifierSpec.parse`): an unknown one, or
two that contradict each other, is an error naming them.  The encoding modifiers
rewrite the value at compile time (``encodings``), the typed ones read the event
text as a number, a date or an address (``typed``), ``|expand`` fills placeholders
(``placeholders``).  Every test has ``literals()``: folded substrings one of which
every text it matches contains (the prefilter's soundness rests on it), or None.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable, Optional

import attrs
import re2

from ..values import fold
from .encodings import BASE64, BOM, DASHES, UTF16, base64_offsets, base64_plain, to_bytes, utf16
from ..yamlfile import plain_is_number
from .regex_literals import required_runs
from .placeholders import PlaceholderError, expand
from .typed import (COMPARISONS, DATE_PARTS, PART_RANGES, DatePartTest, NetworkTest, NumberTest, parse_number,
                    rule_network, rule_number)

MATCH_MODES = ("contains", "startswith", "endswith")
# Sigma v2.1 sub-modifiers of |re, each under its short and its long name, as an RE2 flag.
RE_FLAGS = {"i": "i", "ignorecase": "i", "m": "m", "multiline": "m", "s": "s", "dotall": "s"}
TRANSFORMS = ("windash",) + UTF16 + BASE64  # rewrite the value, in the order written
LIST_MODIFIERS = {"all"}
FIELD_MODIFIERS = {"exists"}
# The modifier that decides what kind of test a value becomes (a string comparison when none).
TYPE_MODIFIERS = ("re", "cidr", "fieldref", "exists") + tuple(COMPARISONS) + DATE_PARTS
VALUE_MODIFIERS = set(MATCH_MODES) | {"re", "cased", "neq", "expand", "cidr", "fieldref"} | set(TRANSFORMS) \
    | set(COMPARISONS) | set(DATE_PARTS)
# Modifiers we understand; anything else is a rule error naming the modifier.
KNOWN_MODIFIERS = VALUE_MODIFIERS | set(RE_FLAGS) | LIST_MODIFIERS | FIELD_MODIFIERS
# Modifiers that read the value as text: a YAML number or bool under them is a rule error (as in pySigma),
# since YAML has rewritten it before any rule sees it (0755 is 493, 1.10 is 1.1, yes is true).
TEXT_MODIFIERS = set(MATCH_MODES) | {"re", "cased", "expand"} | set(TRANSFORMS) | set(RE_FLAGS)

# What may go with each kind of test (besides |all, which only joins a list of values).
_ALLOWED = {
    "string": set(MATCH_MODES) | {"cased", "neq", "expand"} | set(TRANSFORMS),
    "re": set(RE_FLAGS) | {"cased", "neq", "expand"},
    "cidr": {"neq", "expand"},
    "fieldref": set(MATCH_MODES) | {"cased", "neq"},
    "number": set(),  # lt/lte/gt/gte: one of them, and nothing else
    "date": {"neq"},  # |hour: 3, |hour|neq: 3 (and |hour|gte: 22, a type modifier pair)
    "exists": set(),
}
# What a keyword key (no field: ``'|all':``) may ask for: the values are searched in the whole event.
_KEYWORD_KINDS = ("string", "re")

# ``*`` wildcards in one value (SigmaHQ's most is 13).  Past about a thousand, RE2 outgrows its DFA
# cache on ``*a*a*a...`` and falls back to a search that costs the pattern's size per character of
# text: 2,000 took 35 s a megabyte.
MAX_STARS = 256

# How many variants one value may stand for once windash dashes are spelled out for an encoding.
MAX_VARIANTS = 1000

# The tests one rule's values may stand for once expanded: placeholders' lists, windash's dashes spelled
# out for an encoding, base64offset's three forms.  As many as the values a rule file may hold
# (``rule.MAX_RULE_NODES``): a short rule must not cost what no long one may (one value of
# ``|expand|windash|base64offset`` over a placeholder of 100 entries made 187,500 tests, 15 s and 480 MB).
MAX_TESTS = 100_000
# And their text (in characters or bytes), four times what a rule file may hold, room for base64offset's three
# forms of its every value: a 100 KB value under |windash|base64offset, four dashes in it, made 250 MB of it.
MAX_TEST_TEXT = 64 << 20

# A prefilter literal is at most this long (a prefix of the folded value: a text holding
# the whole value holds its prefix).  Hyperscan refuses a literal of 4,000 bytes and more.
MAX_LITERAL = 256


class TestBudget:
    """What is left of one rule's allowance of compiled tests (``MAX_TESTS``), taken before they are made."""

    def __init__(self):
        self.allowance = self.left = MAX_TESTS
        self.text_allowance = self.text_left = MAX_TEST_TEXT

    def take(self, count: int, text: int = 0) -> None:
        """``count`` tests more, of ``text`` characters together."""
        self.left -= count
        self.text_left -= text
        if self.left < 0:
            raise ModifierError(f"the rule's values stand for more than {self.allowance:,} tests once expanded "
                                "(placeholders, windash and encoding variants)")
        if self.text_left < 0:
            raise ModifierError(f"the rule's values stand for more than {self.text_allowance >> 20} MiB of text "
                                "once expanded (placeholders, windash and encoding variants)")


class PatternError(ValueError):
    """A value RE2 cannot run (backreference, lookaround, syntax error, too large); one line."""


class ModifierError(ValueError):
    """Modifiers that cannot be applied (unknown, contradictory, a value of the wrong type); one line
    naming the modifier.  The caller adds the rule, selection and field."""


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
        """The longest run of plain text every match holds (``regex_literals``), when it is
        three characters or more: a shorter one is in nearly every event anyway."""
        best = max(required_runs(self.needle), key=len, default="")
        return _short_literal(fold(best)) if len(best) >= 3 else None


@attrs.frozen
class _WildcardTest:
    """A value with ``*`` / ``?`` (or |windash dashes): an anchored RE2 pattern over the (folded
    unless cased) text.  Keeps its (folded) literal chunks for the prefilter."""

    needle: str  # the RE2 pattern
    cased: bool
    chunks: tuple
    search: Callable = attrs.field(eq=False, repr=False)
    dashes: bool = False  # holds a |windash dash, which matches any of DASHES

    kind = "wildcard"

    def __call__(self, text: str) -> bool:
        if not self.cased:
            text = text.casefold()
        return self.search(encode(text)) is not None

    def literals(self) -> Optional[tuple]:
        # Every chunk must occur; the longest alone is enough for soundness.  With no chunk at all
        # a windash value still holds one of the dashes.
        longest = fold(max(self.chunks, key=len, default=""))
        if not longest and self.dashes:
            return tuple(DASHES)
        return _short_literal(longest)


@attrs.frozen
class AnyVariant:
    """One rule value that stands for several (base64offset's three forms, the windash variants
    of an encoded value, a placeholder's list): it matches when one of them does."""

    alternatives: tuple
    kind = "any of"
    cased = True  # each alternative is tested on its own terms, on the original text

    @property
    def needle(self) -> tuple:
        return tuple(t.needle for t in self.alternatives)

    def __call__(self, text: str) -> bool:
        return any(test(text) for test in self.alternatives)

    def literals(self) -> Optional[tuple]:
        found = []
        for test in self.alternatives:
            lits = test.literals()
            if lits is None:
                return None
            found.extend(lits)
        return tuple(dict.fromkeys(found)) or None


@attrs.frozen
class Negated:
    """``|neq``: the value's test, negated.  A text that does not match the value matches, so
    there is no literal to look for."""

    test: object
    cased = True  # the inner test folds if it has to

    @property
    def kind(self) -> str:
        return "not " + self.test.kind

    @property
    def needle(self):
        return self.test.needle

    def __call__(self, text: str) -> bool:
        return not self.test(text)

    def literals(self) -> Optional[tuple]:
        return None


class _Wildcard(str):
    """A ``*`` or ``?`` token (or a |windash dash), distinct from an escaped (literal) one."""


ANY, ONE, DASH = _Wildcard("*"), _Wildcard("?"), _Wildcard("-")
_DASH_CLASS = "[" + "".join("\\" + d if d in "-/" else d for d in DASHES) + "]"


# An escaped ``*``, ``?`` or backslash, a wildcard, a run of plain text, a lone backslash.
_WILDCARD_TOKENS = re.compile(r"\\[*?\\]|[*?]|[^\\*?]+|\\")


def _split_wildcards(value: str) -> list:
    """Split a Sigma string into literal chunks (str) and ANY / ONE tokens.

    A backslash escapes ``*``, ``?`` and itself; any other backslash is literal
    (Windows paths are written with single backslashes).
    """
    parts, literal = [], []
    for token in _WILDCARD_TOKENS.findall(value):
        if token == "*" or token == "?":
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(ANY if token == "*" else ONE)
        else:
            literal.append(token[1] if token[0] == "\\" and len(token) == 2 else token)  # an escape
    if literal:
        parts.append("".join(literal))
    if sum(p is ANY for p in parts) > MAX_STARS:
        raise ModifierError(f"more than {MAX_STARS} * wildcards in one value")
    return parts


def _written_out(value: str) -> str:
    """A Sigma string with every literal backslash, ``*`` and ``?`` escaped: the same value, safe
    to join with other Sigma text (``CORP\\`` then ``*`` stays a backslash and a wildcard)."""
    return "".join("*" if part is ANY else "?" if part is ONE else
                   part.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
                   for part in _split_wildcards(value))


def re_flags(modifiers) -> str:
    """The RE2 flags an ``|re`` value's sub-modifiers ask for, in a fixed order."""
    flags = {RE_FLAGS[m] for m in modifiers if m in RE_FLAGS}
    return "".join(f for f in "ims" if f in flags)


_FLAG_GROUP = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")  # (?m) (?i-m) (?m:...) and the like


def pcre_dollar(pattern: str, flags: str) -> str:
    """``pattern`` with each ``$`` as PCRE (Sigma's flavour) reads it without ``m``: at the end, or
    before a final newline.  RE2's ``$`` is the end only, so it becomes ``(?:\\n?\\z)``, which gives the
    same answer to whether the text holds a match where the ``$`` ends it: nothing but group ends (of
    groups that need not repeat: ``?``, ``*``, ``+``), alternatives and other ``$`` follow.  A ``$`` that more pattern
    follows (``$^``, ``a$.``, ``(a$)+b``) is a PatternError: PCRE's holds before a final newline that the
    rest may still match or look at, which RE2 cannot say (it has no lookahead).  An escaped ``\\$``,
    one in a class and one quoted (``\\Q$\\E``) are characters; a ``$`` where an inline ``m`` is in
    force (``(?m)`` to its group's end, ``(?m:...)``) is left."""
    if "$" not in pattern:
        return pattern
    tokens = _regex_tokens(pattern, "m" in flags)
    out = []
    for at, (kind, text) in enumerate(tokens):
        if kind == "end":
            if not _ends_the_match(tokens, at + 1):
                raise PatternError(f"a '$' that more pattern follows (at character {_offset(tokens, at)}): "
                                   "PCRE reads it before a final newline, which RE2 cannot express; end the "
                                   "pattern there, or use (?m)")
            out.append("(?:\\n?\\z)")
        else:
            out.append(text)
    return "".join(out)


def _regex_tokens(pattern: str, multiline: bool) -> list:
    """``(kind, text)`` pieces of a pattern, as far as ``pcre_dollar`` needs them: ``end`` (a ``$`` read
    without ``m``), ``dollar`` (one read with it), ``open`` (a group), ``flags`` (``(?i)``: no group),
    ``close``, ``bar``, ``repeat`` (``?``, ``*``, ``+``, ``{n,m}``, lazy or not) and ``text`` (anything
    else: a character, an escape, a class, quoted text)."""
    tokens, at, end = [], 0, len(pattern)
    modes = [multiline]  # per open group: whether m is in force
    while at < end:
        char = pattern[at]
        if pattern.startswith("\\Q", at):  # quoted text up to \E (or the end): every $ in it a character
            close = pattern.find("\\E", at + 2)
            close = end if close < 0 else close + 2
            tokens.append(("text", pattern[at:close]))
            at = close
        elif char == "\\":  # an escape: the next character with it
            tokens.append(("text", pattern[at:at + 2]))
            at += 2
        elif char == "[":  # a class, whole: a ``]`` first (after ``^``) is in it, so is ``[:name:]``
            close = at + 1 + (pattern[at + 1:at + 2] == "^")
            close += pattern[close:close + 1] == "]"
            while close < end and pattern[close] != "]":
                if pattern[close] == "\\":
                    close += 1
                elif pattern.startswith("[:", close) and pattern.find(":]", close + 2) > 0:
                    close = pattern.find(":]", close + 2) + 1
                close += 1
            tokens.append(("text", pattern[at:close + 1]))
            at = close + 1
        elif char == "(":
            group = _FLAG_GROUP.match(pattern, at)
            state = modes[-1]
            if group is not None:
                state = True if "m" in group.group(1) else False if "m" in (group.group(2) or "") else state
                if group.group(3) == ")":  # (?m): for the rest of the group it is in
                    modes[-1] = state
                    tokens.append(("flags", group.group(0)))
                else:
                    modes.append(state)
                    tokens.append(("open", group.group(0)))
                at = group.end()
            else:
                modes.append(state)
                tokens.append(("open", char))
                at += 1
        else:
            repeat = _REPEAT.match(pattern, at)
            if repeat is not None:
                tokens.append(("repeat", repeat.group(0)))
                at = repeat.end()
                continue
            if char == ")" and len(modes) > 1:
                modes.pop()
            kind = {")": "close", "|": "bar"}.get(char, "text")
            if char == "$":
                kind = "dollar" if modes[-1] else "end"
            tokens.append((kind, char))
            at += 1
    return tokens


_REPEAT = re.compile(r"(?:[?*+]|\{\d+(?:,\d*)?\})[?+]?")  # a quantifier, lazy or possessive too


def _ends_the_match(tokens: list, at: int) -> bool:
    """Whether nothing that reads text, or looks at it, can follow ``tokens[at - 1]`` in a match: only
    ``$`` (the same place), flags, ends of groups that are not repeated (``?`` at most), and other
    alternatives, which are skipped to their group's end."""
    while at < len(tokens):
        kind, text = tokens[at]
        if kind == "bar":  # the rest of this alternative is another way: on after its group's end
            depth = 0
            at += 1
            while at < len(tokens) and not (tokens[at][0] == "close" and depth == 0):
                depth += {"open": 1, "close": -1}.get(tokens[at][0], 0)
                at += 1
            continue
        if kind == "repeat" and tokens[at - 1][0] == "close" and _least(text) > 1:
            return False  # the group at least twice: its next turn reads on after the $
        if kind not in ("end", "dollar", "flags", "close", "repeat"):
            return False
        at += 1
    return True


def _least(repeat: str) -> int:
    """The fewest turns a quantifier allows: a text holds a match of ``(X)+`` where it holds one of
    ``(X)``, so a group ending in ``$`` repeated from once on ends the match as the group alone does."""
    if repeat[0] == "{":
        return int(repeat[1:].split(",")[0].rstrip("}?+"))
    return 1 if repeat[0] == "+" else 0


def _offset(tokens: list, at: int) -> int:
    return sum(len(text) for _, text in tokens[:at])


def _regex(value: str, flags: str, cased: bool) -> _RegexTest:
    if cased and "i" in flags:
        raise PatternError("|cased and |i contradict each other")
    pattern = pcre_dollar(value, flags)
    return _RegexTest(value, flags, compile_re2(f"(?{flags}){pattern}" if flags else pattern))


def _compile_parts(parts: list, mode: str, cased: bool):
    """Literal chunks and tokens under a match mode -> a plain StringTest when no pattern is
    needed, else an anchored RE2 pattern."""
    if mode == "contains":
        parts = [ANY, *parts, ANY]
    elif mode == "startswith":
        parts = [*parts, ANY]
    elif mode == "endswith":
        parts = [ANY, *parts]
    # Collapse runs of ANY so '*x*' is recognised as plain 'contains'.
    collapsed = []
    for part in parts:
        if not (part is ANY and collapsed and collapsed[-1] is ANY):
            collapsed.append(part)
    parts = [p if isinstance(p, _Wildcard) or cased else fold(p) for p in collapsed]
    inner = [p for p in parts if not isinstance(p, _Wildcard)]
    if not any(p is ONE or p is DASH for p in parts) and len(inner) <= 1:
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
    return _WildcardTest(pattern, cased, tuple(inner), compile_re2(pattern), any(p is DASH for p in parts))


def wildcard_pattern(parts: list) -> str:
    """ANY / ONE / DASH / literal parts as one anchored RE2 pattern: ``.`` is any character, newline
    too.  Leading and trailing ANY are left out (RE2 searches unanchored): they cost nothing then."""
    body = [".*" if p is ANY else "." if p is ONE else _DASH_CLASS if p is DASH else escape(p) for p in parts]
    head = 1 if parts and parts[0] is ANY else 0
    tail = 1 if len(parts) > head and parts[-1] is ANY else 0
    middle = "".join(body[head:len(body) - tail])
    return "(?s:" + ("" if head else r"\A") + middle + ("" if tail else r"\z") + ")"


def _scalar_text(value) -> str:
    """A number or bool as the text a leaf holds (see ``values.leaves``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# A float written in decimal notation, with a point and maybe an exponent (``1.10``, ``1.0e+16``): its
# author may mean the text (``"1.10"``) or the number (pySigma reads the number alone).
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+(?:[eE][-+]?[0-9]+)?")


def _written(value) -> Optional[str]:
    """The text of a plain YAML number written in a form YAML rewrites (``0755``, ``0x1F``, ``1.10``),
    which the rule compares instead of YAML's number; None for any other value (``yamlfile.WrittenInt``)."""
    return getattr(value, "written", None)


def _escaped(text: str) -> str:
    """``text`` as a Sigma string that matches it literally (no wildcards)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


# ---------------------------------------------------------------- modifier chains


@attrs.frozen
class ModifierSpec:
    """A key's modifiers, checked: what kind of test its values become, and how."""

    names: tuple  # as written
    kind: str  # string, re, cidr, number, date, fieldref, exists
    mode: str = "equals"  # or a MATCH_MODES entry
    cased: bool = False
    flags: str = ""  # |re's RE2 flags
    transforms: tuple = ()  # TRANSFORMS entries, in the order written
    compare: Optional[str] = None  # lt lte gt gte
    date_part: Optional[str] = None
    neq: bool = False
    expand: bool = False
    all: bool = False

    @classmethod
    def parse(cls, names, keyword: bool = False) -> "ModifierSpec":
        """ModifierError for an unknown modifier or a combination that means nothing.  ``keyword``:
        a key without a field (``'|all':``), whose values are searched in the whole event."""
        names = tuple(names)
        unknown = [m for m in names if m not in KNOWN_MODIFIERS]
        if unknown:
            raise ModifierError(f"unknown modifier {unknown[0]!r}"[:120])
        used = set(names)
        flags = [m for m in names if m in RE_FLAGS]
        if flags and "re" not in used:
            raise ModifierError(f"modifier {flags[0]!r} only applies to |re")
        # At most one type modifier, except that a date part may take one comparison (|hour|gte).
        types = list(dict.fromkeys(m for m in names if m in TYPE_MODIFIERS))
        parts = [m for m in types if m in DATE_PARTS]
        compares = [m for m in types if m in COMPARISONS]
        others = [m for m in types if m not in parts and m not in compares]
        if (others and len(types) > 1) or len(parts) > 1 or len(compares) > 1:
            raise ModifierError(f"|{types[0]} and |{types[1]} contradict each other")
        kind = others[0] if others else "date" if parts else "number" if compares else "string"
        extra = [m for m in names if m not in TYPE_MODIFIERS and m not in LIST_MODIFIERS and m not in _ALLOWED[kind]]
        if extra:
            raise ModifierError(f"|{extra[0]} does not apply to " + (f"|{types[0]} values" if types else "this value"))
        modes = list(dict.fromkeys(m for m in names if m in MATCH_MODES))
        if len(modes) > 1:
            raise ModifierError(f"|{modes[0]} and |{modes[1]} contradict each other")
        if "neq" in used and compares:
            raise ModifierError(f"|{compares[0]} and |neq contradict each other")
        if "cased" in used and "i" in re_flags(names):
            raise ModifierError("|cased and |i contradict each other")
        encoding = next((m for at, m in enumerate(names) if m in UTF16 + BASE64 and "windash" in names[at + 1:]), None)
        if encoding:  # its dashes are characters of the text: after an encoding there are none to find
            raise ModifierError(f"|windash must come before |{encoding} (it rewrites the text, not its encoding)")
        encoded = next(((mode, m) for at, mode in enumerate(names) if mode in MATCH_MODES
                        for m in names[at + 1:] if m in BASE64), None)
        if encoded:  # in the order written its wildcards would be encoded, which pySigma refuses too
            raise ModifierError(f"|{encoded[0]} must come after |{encoded[1]} (it matches the encoded text: "
                                f"write |{encoded[1]}|{encoded[0]})")
        if keyword:
            if kind not in _KEYWORD_KINDS or "neq" in used:
                raise ModifierError(f"|{types[0] if kind not in _KEYWORD_KINDS else 'neq'} needs a field name")
            if modes and modes[0] != "contains":
                raise ModifierError(f"|{modes[0]} needs a field name (keywords are searched anywhere in the event)")
        mode = modes[0] if modes else ("contains" if keyword and kind == "string" else "equals")
        return cls(names, kind, mode, "cased" in used, re_flags(names), tuple(m for m in names if m in TRANSFORMS),
                   compares[0] if compares else None, parts[0] if parts else None, "neq" in used, "expand" in used,
                   "all" in used)


def compile_value(value, spec: ModifierSpec, placeholders=None, budget: Optional[TestBudget] = None):
    """One rule value (str, number or bool) under its key's modifiers -> a test.

    Raises ModifierError (wrong value for the modifiers, a placeholder that cannot be filled, the
    rule's ``budget`` of tests spent) or PatternError (a pattern RE2 cannot run).  ``placeholders``:
    name -> values, from ``--placeholders``; None when there is no such file.
    """
    budget = budget or TestBudget()
    _check_type(value, spec)
    raws = [value]
    if spec.kind == "string" and _DECIMAL.fullmatch(_written(value) or ""):
        raws = [value, float(value)]  # ``1.0``: an event's text "1.0", or the number 1.0 (whose text is "1")
    if spec.expand:  # its value is text (``_check_type``)
        try:
            raws = expand(value, placeholders, _written_out if spec.kind == "string" else None)
        except PlaceholderError as error:
            raise ModifierError(str(error)) from None
    budget.take(len(raws), sum(len(raw) for raw in raws if isinstance(raw, str)))
    tests = [_compile_one(raw, spec, budget) for raw in raws]
    test = tests[0] if len(tests) == 1 else AnyVariant(tuple(tests))
    return Negated(test) if spec.neq else test


def _check_type(value, spec: ModifierSpec) -> None:
    """A value of the type its modifiers compare: text for the string ones, a number for lt..gte and
    the date parts (pySigma refuses the others too).  Equality, ``|neq`` and keywords without
    modifiers compare a number by its text, as ``EventID: 4688`` does.  A quoted number is refused where
    unquoted it would read as one: ``'12'``, but not ``09`` or ``1e3``, plain text to YAML 1.1."""
    if isinstance(value, str):
        if spec.kind in ("number", "date") and rule_number(value) is not None and plain_is_number(value.strip()):
            raise ModifierError(f"|{spec.date_part or spec.compare} compares numbers: write {value.strip()[:40]} "
                                f"unquoted, not as the text {value[:40]!r}")
        return
    if spec.kind in ("number", "date") and _written(value) is not None:
        return  # read from its text (``_compile_one``)
    text = next((m for m in spec.names if m in TEXT_MODIFIERS), None)
    if text is not None:
        shown = (_written(value) or _scalar_text(value))[:40]
        raise ModifierError(f"|{text} applies to text, not to the {'boolean' if isinstance(value, bool) else 'number'}"
                            f" {shown}: quote the value (YAML reads 0755 as 493, yes as true)")


def _compile_one(value, spec: ModifierSpec, budget: TestBudget):
    if spec.kind == "cidr":
        try:
            network = rule_network(value)
        except ValueError as error:
            raise ModifierError(str(error)) from None
        return NetworkTest(str(network), network)
    written = _written(value)
    if spec.kind in ("number", "date"):
        name = spec.date_part or spec.compare
        number = rule_number(value) if written is None else parse_number(written)
        if number is None and written is not None:
            raise ModifierError(f"|{name} reads numbers in decimal, as it reads the event's text: {written[:40]} is "
                                f"not one (YAML 1.1 makes it {_scalar_text(value)[:40]}); write the number meant")
        if number is None:
            shown = _scalar_text(value) if isinstance(value, bool) else repr(str(value)[:40])
            raise ModifierError(f"|{name} needs a number, not {shown}")
        if spec.kind == "number":
            return NumberTest(spec.compare, number)
        low, high = PART_RANGES.get(spec.date_part, (number, number))
        if spec.compare is None and (number != number.to_integral_value() or not low <= number <= high):
            raise ModifierError(f"|{name} takes a whole number" + (f" from {low} to {high}" if spec.date_part in
                                PART_RANGES else "") + f", not {(written or str(value))[:40]!r}")
        return DatePartTest(spec.date_part, spec.compare or "eq", number)
    text = value if isinstance(value, str) else written or _scalar_text(value)
    if spec.kind == "re":
        return _regex(text, spec.flags, spec.cased)
    return _compile_text(text if isinstance(value, str) else _escaped(text), spec, budget)


def _compile_text(value: str, spec: ModifierSpec, budget: TestBudget):
    """A Sigma string through its transforms (in the order written), then its match mode.

    A value goes through the transforms as variants of parts (literal chunks and wildcard
    tokens).  Windash marks its dashes as DASH tokens, one RE2 character class each, unless an
    encoding follows: then each combination of dashes is spelled out, since the encoding
    changes what a dash looks like.  Base64 output is compared case-sensitively: its letters'
    case carries the encoded bits.
    """
    variants = [tuple(_split_wildcards(value))]
    byte_chars = encoded = False
    for name in spec.transforms:
        if name == "windash":
            variants = [_mark_dashes(v) for v in variants]
            continue
        spelled_out = len(variants)
        counts = [_variant_count(v) for v in variants]
        if sum(counts) > MAX_VARIANTS:
            raise ModifierError(f"|windash|{name} gives more than {MAX_VARIANTS} variants of this value")
        # the value was taken once; the variants' text, and at most four times it encoded (base64offset's three
        # forms, a third longer; UTF-16's two bytes a character; base64's four characters for three), is
        # taken before either is made
        budget.take(sum(counts) * (3 if name == "base64offset" else 1) - spelled_out,
                    5 * sum(count * len("".join(v)) for count, v in zip(counts, variants)))
        variants = [spelled for v in variants for spelled in _spell_dashes(v)]
        if name in UTF16:
            variants = [_utf16_parts(v, name) for v in variants]
            byte_chars = True
            continue
        if any(isinstance(p, _Wildcard) for v in variants for p in v):
            raise ModifierError(f"|{name} cannot encode the wildcards * and ? (write them as \\* and \\?)")
        forms = []
        for v in variants:
            data = to_bytes("".join(v), byte_chars)
            try:
                forms += base64_offsets(data) if name == "base64offset" else [base64_plain(data)]
            except ValueError as error:
                raise ModifierError(str(error)) from None
        variants = [(form,) for form in dict.fromkeys(forms)]
        byte_chars, encoded = False, True
    tests = [_compile_parts(list(v), spec.mode, spec.cased or encoded) for v in dict.fromkeys(variants)]
    return tests[0] if len(tests) == 1 else AnyVariant(tuple(tests))


def _mark_dashes(parts: tuple) -> tuple:
    out = []
    for part in parts:
        out += [part] if isinstance(part, _Wildcard) else _split_on_dashes(part)
    return tuple(p for p in out if isinstance(p, _Wildcard) or p)


def _split_on_dashes(text: str) -> list:
    """``text`` as literal chunks and DASH tokens."""
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in DASHES:
            out += [text[start:i], DASH]
            start = i + 1
    out.append(text[start:])
    return out


def _variant_count(parts: tuple) -> int:
    """How many variants ``_spell_dashes`` makes of ``parts`` (ModifierError past ``MAX_VARIANTS``)."""
    count = 1
    for part in parts:
        if part is DASH:
            count *= len(DASHES)
            if count > MAX_VARIANTS:
                raise ModifierError(f"|windash gives more than {MAX_VARIANTS} variants of this value")
    return count


def _spell_dashes(parts: tuple) -> list:
    """The variants of ``parts`` with each DASH token replaced by one dash, adjacent chunks joined."""
    _variant_count(parts)
    return [_joined(choice) for choice in itertools.product(*(DASHES if p is DASH else (p,) for p in parts))]


def _joined(parts) -> tuple:
    out = []
    for part in parts:
        if not isinstance(part, _Wildcard) and out and not isinstance(out[-1], _Wildcard):
            out[-1] += part
        elif part != "" or isinstance(part, _Wildcard):
            out.append(part)
    return tuple(out)


def _utf16_parts(parts: tuple, name: str) -> tuple:
    """Each literal chunk in UTF-16 (wildcards stay wildcards); |utf16's byte order mark in front."""
    out = [p if isinstance(p, _Wildcard) else utf16(p, "utf16le" if name == "utf16" else name) for p in parts]
    if name == "utf16":
        out.insert(0, BOM)
    return _joined(out)
