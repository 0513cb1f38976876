"""A reference evaluator of a Sigma rule's detection on a flat event, built on pySigma, not on the filter.

pySigma (``pip install pysigma``, Python 3.11+) parses the rule, applies the modifiers and
expands the condition into a tree of ``ConditionAND``/``OR``/``NOT`` over field = value leaves;
this module only says what each leaf means on a flat ``{field: scalar}`` event, from the
specification: text compares caseless (``re.IGNORECASE``, not ``str.casefold``: events here keep
to characters where the two agree), ``*`` and ``?`` are wildcards, keywords are contained in any
value, regexes search (Python's ``re``, ``\\w``/``\\d``/``\\s`` made ASCII; ``\\b`` is left Unicode),
``lt``..``gte`` compare exact decimals.  Where the filter's README states a choice pySigma does
not make, ``Reference`` says which it follows.  ``test_pysigma_reference.py`` holds the filter
against it.
"""

from __future__ import annotations

import decimal
import ipaddress
import re

from sigma.collection import SigmaCollection
from sigma.conditions import (ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT, ConditionOR,
                              ConditionValueExpression)
from sigma.types import (CompareOperators, SigmaBool, SigmaCasedString, SigmaCIDRExpression, SigmaCompareExpression,
                         SigmaExists, SigmaExpansion, SigmaFieldReference, SigmaNull, SigmaNumber,
                         SigmaRegularExpression, SigmaRegularExpressionFlag, SigmaString, SpecialChars)


class Unsupported(Exception):
    """A leaf this reference does not model (date parts, placeholders, ...)."""


def rules_of(text: str) -> list:
    """The plain rules of a YAML text (no correlations, no filters)."""
    return list(SigmaCollection.from_yaml(text).rules)


def trees(rule) -> list:
    """The rule's conditions, each a pySigma condition tree; several are OR-ed."""
    return [condition.parsed for condition in rule.detection.parsed_condition]


def text_of(value):
    """How a flat event's scalar reads as text; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a JSON number has no text of its own: 2.0 is 2, as the README says
    return str(value)


_PATTERNS: dict = {}  # (cased, dashed, parts) -> compiled; SigmaHQ's values repeat across rules
DASHES = "-/\u2013\u2014\u2015"
UNDASH = str.maketrans({dash: "-" for dash in DASHES})


def string_pattern(value: SigmaString, cased: bool = False, dashed: bool = False):
    """A SigmaString as a compiled regex of the whole text (``*`` any run, ``?`` one character);
    ``dashed``: of a windash value, to be matched against a text whose dashes became ``-``."""
    cased = cased or isinstance(value, SigmaCasedString)
    key = (cased, dashed, tuple(value.s))
    found = _PATTERNS.get(key)
    if found is None:
        parts = []
        for part in value.s:
            if part is SpecialChars.WILDCARD_MULTI:
                parts.append(".*")
            elif part is SpecialChars.WILDCARD_SINGLE:
                parts.append(".")
            elif isinstance(part, str):
                parts.append(re.escape(part.translate(UNDASH) if dashed else part))
            else:
                raise Unsupported(f"string part {part!r}")
        flags = re.DOTALL | (0 if cased else re.IGNORECASE)
        found = _PATTERNS[key] = re.compile("".join(parts), flags)
    return found


def _number(text: str):
    """The text as an exact decimal number, blanks around it trimmed; None when it is none (hex,
    NaN, infinity, Python's digit separators)."""
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() and "_" not in text else None


_CLASSES = {"w": "A-Za-z0-9_", "d": "0-9", "s": " \\t\\n\\r\\f\\v"}


def ascii_classes(pattern: str) -> str:
    """``\\w``, ``\\d``, ``\\s`` (and negations) as ASCII classes: PCRE's meaning without UCP,
    and RE2's, which the filter's README states; Python's are Unicode."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            letter = pattern[i + 1]
            chars = _CLASSES.get(letter.lower())
            if chars is None:
                out.append(pattern[i:i + 2])
            elif in_class:
                if letter.isupper():
                    raise Unsupported(f"negated class \\{letter} inside brackets")
                out.append(chars)
            else:
                out.append(f"[{'^' if letter.isupper() else ''}{chars}]")
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                out.append("]")
                i += 1
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


_COMPARE = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
}


def value_matches(value, event: dict, field, cased: frozenset = frozenset(), dashed: frozenset = frozenset()) -> bool:
    """Does the event's field meet one pySigma value?  ``cased``, ``dashed``: ids of the values
    compared case-sensitively, or with every dash as any dash (see ``Reference``)."""
    present = field in event
    text = text_of(event.get(field))
    if isinstance(value, SigmaNull):
        return text is None
    if isinstance(value, SigmaExists):
        return present == value.exists
    if isinstance(value, SigmaExpansion):
        return any(value_matches(v, event, field, cased | {id(v)} if id(value) in cased else cased,
                                 dashed | {id(v)} if id(value) in dashed else dashed)
                   for v in value.values)
    if text is None:
        return False
    if isinstance(value, SigmaString):
        if id(value) in dashed:
            return string_pattern(value, id(value) in cased, True).fullmatch(text.translate(UNDASH)) is not None
        return string_pattern(value, id(value) in cased).fullmatch(text) is not None
    if isinstance(value, SigmaBool):
        return text.lower() == ("true" if value.boolean else "false")
    if isinstance(value, SigmaCompareExpression):
        number = _number(text)
        return number is not None and _COMPARE[value.op](number, decimal.Decimal(str(value.number.number)))
    if isinstance(value, SigmaNumber):
        if type(value).__name__ != "SigmaNumber":
            raise Unsupported(type(value).__name__)
        raw = event[field]
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return raw == value.number  # a JSON number: its value
        return text == str(value.number)  # a text: as written
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= {SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
                      SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
                      SigmaRegularExpressionFlag.DOTALL: re.DOTALL}[flag]
        return re.search(ascii_classes(value.regexp.original), text, flags) is not None
    if isinstance(value, SigmaCIDRExpression):
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.1.2.3 is 10.1.2.3 too (README)
        return any(a.version == value.network.version and a in value.network for a in (address, mapped) if a)
    if isinstance(value, SigmaFieldReference):
        other = text_of(event.get(value.field))
        if other is None:
            return False
        mine, other = text.lower(), other.lower()
        if value.starts_with and value.ends_with:  # |contains
            return other in mine
        if value.starts_with:
            return mine.startswith(other)
        if value.ends_with:
            return mine.endswith(other)
        return mine == other
    raise Unsupported(type(value).__name__)


def keyword_matches(value, event: dict) -> bool:
    """A keyword: contained in (with its own wildcards) any value of the event."""
    if isinstance(value, SigmaExpansion):
        return any(keyword_matches(v, event) for v in value.values)
    if not isinstance(value, SigmaString):
        value = SigmaString(str(value))
    pattern = string_pattern(value)
    return any(pattern.search(text) is not None
               for text in map(text_of, event.values()) if text is not None)


BASE64 = {"SigmaBase64Modifier", "SigmaBase64OffsetModifier"}


def _items(detection):
    """Every detection item of a selection, through nested lists of maps."""
    for item in detection.detection_items:
        if hasattr(item, "detection_items"):
            yield from _items(item)
        else:
            yield item


class Reference:
    """One rule's verdicts.  Where pySigma's values say less than the specification, or than a
    choice the filter's README states, the reference follows those: base64 forms are compared
    case-sensitively (their letter case carries bits), where pySigma's are plain caseless strings;
    ``windash`` makes each dash of the value any of the five wherever it stands, as the
    specification says, where pySigma expands only a dash that starts a word, at most three;
    ``|neq`` needs the field present and not null, where pySigma's NOT holds of an absent field."""

    def __init__(self, rule):
        self.rule = rule
        self.trees = trees(rule)
        self.cased = frozenset(id(value) for detection in rule.detection.detections.values()
                               for item in _items(detection)
                               if {m.__name__ for m in item.modifiers} & BASE64 for value in item.value)
        self.negated = frozenset(id(value) for detection in rule.detection.detections.values()
                                 for item in _items(detection) if item.negated and item.field is not None
                                 for value in item.value)
        self.dashed = frozenset(id(value) for detection in rule.detection.detections.values()
                                for item in _items(detection)
                                if "SigmaWindowsDashModifier" in {m.__name__ for m in item.modifiers}
                                for value in item.value)

    def _negated_field(self, node):
        """The field of a ``|neq`` item that pySigma negated into this node, else None: every leaf
        below it one of that item's values, and no NOT below it (a condition's ``not`` of it)."""
        leaves, stack = [], [node]
        while stack:
            item = stack.pop()
            if isinstance(item, ConditionNOT):
                return None
            if isinstance(item, (ConditionAND, ConditionOR)):
                stack.extend(item.args)
            elif isinstance(item, ConditionFieldEqualsValueExpression) and id(item.value) in self.negated:
                leaves.append(item.field)
            else:
                return None
        return leaves[0] if leaves and len(set(leaves)) == 1 else None

    def holds(self, event: dict) -> bool:
        return any(self._holds(tree, event) for tree in self.trees)

    def _holds(self, node, event: dict) -> bool:
        if isinstance(node, ConditionAND):
            return all(self._holds(arg, event) for arg in node.args)
        if isinstance(node, ConditionOR):
            return any(self._holds(arg, event) for arg in node.args)
        if isinstance(node, ConditionNOT):
            field = self._negated_field(node.args[0])
            if field is not None and event.get(field) is None:
                return False  # |neq needs the field, present and not null
            return not self._holds(node.args[0], event)
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return value_matches(node.value, event, node.field, self.cased, self.dashed)
        if isinstance(node, ConditionValueExpression):
            return keyword_matches(node.value, event)
        raise Unsupported(type(node).__name__)
