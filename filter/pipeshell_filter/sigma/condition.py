"""Sigma condition language: tokens -> expression tree, plus the pipe aggregation.

Legacy (v1) rules write ``(1 of SERVER*) AND (1 of CLIENT*) | count(Computer) > 2``.
Current Sigma tooling refuses upper-case operators and pipe aggregations, so the
parser is ours.  Precedence, loosest first: ``or`` < ``and`` < ``not`` < ``x of``.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Union

import attrs


class ConditionError(ValueError):
    """A condition that cannot be parsed or refers to unknown selections."""


# ---------------------------------------------------------------- tree nodes


@attrs.frozen
class Ref:
    name: str

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class Not:
    operand: "Node"

    def __str__(self) -> str:
        return f"not {_wrap(self.operand)}"


@attrs.frozen
class And:
    operands: tuple

    def __str__(self) -> str:
        return " and ".join(_wrap(o) for o in self.operands)


@attrs.frozen
class Or:
    operands: tuple

    def __str__(self) -> str:
        return " or ".join(_wrap(o) for o in self.operands)


@attrs.frozen
class OfPattern:
    """``1 of X*`` / ``all of them`` before expansion against the detection names."""

    quantifier: str  # "1" or "all"
    pattern: str  # a glob, or "them"

    def __str__(self) -> str:
        return f"{self.quantifier} of {self.pattern}"


Node = Union[Ref, Not, And, Or, OfPattern]


def _wrap(node: Node) -> str:
    return f"({node})" if isinstance(node, (And, Or)) else str(node)


MOST_THRESHOLD = 1e300  # the largest aggregation threshold taken, legacy or v2


def shown_number(number):
    """A condition's number as the rule wrote it: ``1500``, not ``1500.0``; an integral double past 1e15
    as Python writes it (``1e+23``), not the digits of its binary value (99999999999999991611392)."""
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e15:
        return int(number)
    return number


@attrs.frozen
class Aggregation:
    """``| function(field) [by group] op threshold`` after the search expression."""

    function: str  # count, min, max, avg, sum
    field: Optional[str]
    group_by: Optional[str]
    operator: str  # ==, <, <=, >, >=
    threshold: float

    def __str__(self) -> str:
        by = f" by {self.group_by}" if self.group_by else ""
        threshold = shown_number(self.threshold)
        return f"{self.function}({self.field or ''}){by} {self.operator} {threshold}"


@attrs.frozen
class Condition:
    text: str
    expression: Node
    aggregation: Optional[Aggregation]


# ---------------------------------------------------------------- parsing

# Parentheses and ``not`` nest at most this deep: the parser and every walk of the tree recurse.
MAX_DEPTH = 100
# ``1 of x*`` / ``all of them`` expand to at most this many references in all, after at
# most this many tests of a name against a pattern's pieces (``_name_matches`` loops over them: counted
# per test, 1,000 patterns of 1,000 pieces against 1,000 names took a minute at start-up).
MAX_TERMS = 100_000
MAX_NAME_TESTS = 1_000_000
# The names those references spell, in all: a plan is labelled with its expanded condition's text, and
# 20,000 patterns naming one selection of 4 MB (a 4 MB rule) made that text 80 GB (a MemoryError traceback).
MAX_EXPANDED_CHARS = 1 << 25
# Characters of the names one test of a pattern costs as much as one of its pieces: the names' text is
# scanned (``str.find``, in C) once per distinct pattern, 20,000 patterns over a 4 MB name took a minute.
_CHARS_PER_TEST = 1000


def _short(text: str) -> str:
    """A piece of the condition as quoted in an error message (one short line)."""
    text = repr(text[:61])
    return text if len(text) <= 63 else text[:58] + "...'"


_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
_KEYWORDS = {"and", "or", "not", "of", "them", "all"}
# A field or group never holds a comparison sign or a parenthesis: ``by X>>2`` grouped by a field named ``X>``.
_AGGREGATION = re.compile(
    r"""^\s*(?P<function>count|min|max|avg|sum)\s*\(\s*(?P<field>[^\s()<>=]*)\s*\)
        (?:\s*by\s+(?P<group>[^\s()<>=]+))?  # ')by' closed up: sigmac's tokenizer needed no space there
        \s*(?P<op>==|<=|>=|<|>)\s*(?P<threshold>-?\d+(?:\.\d+)?)\s*$""",
    re.IGNORECASE | re.VERBOSE | re.ASCII,  # a threshold's digits are 0-9: float() reads any script's
)


def _tokenize(text: str) -> list:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:  # only trailing whitespace is left
            break
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"condition nests deeper than {MAX_DEPTH} levels of parentheses and 'not'")

    def peek(self) -> Optional[str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def peek_keyword(self) -> Optional[str]:
        token = self.peek()
        return token.lower() if token is not None and token.lower() in _KEYWORDS else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ConditionError("condition ends too early")
        self.pos += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise ConditionError("condition is empty")
        node = self.parse_or()
        if self.peek() is not None:
            raise ConditionError(f"unexpected {_short(self.peek())} in condition")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.peek_keyword() == "or":
            self.take()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.peek_keyword() == "and":
            self.take()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_not(self) -> Node:
        if self.peek_keyword() == "not":
            self.take()
            self.deeper()
            node = Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.take()
        if token == "(":
            self.deeper()
            node = self.parse_or()
            if self.peek() != ")":
                raise ConditionError("missing ')' in condition")
            self.take()
            self.depth -= 1
            return node
        if token == ")":
            raise ConditionError("unexpected ')' in condition")
        quantifier = token.lower()
        if quantifier == "any" and (self.peek() or "").lower() == "of":  # pySigma's grammar: same as '1 of'
            quantifier = "1"
        if quantifier in ("1", "all") and (self.peek() or "").lower() == "of":
            self.take()
            pattern = self.take()
            if pattern in ("(", ")") or pattern.lower() in _KEYWORDS - {"them"}:
                raise ConditionError(f"'{quantifier} of' needs a name pattern or 'them', got {_short(pattern)}")
            return OfPattern(quantifier, "them" if pattern.lower() == "them" else pattern)
        if quantifier in _KEYWORDS:  # where a name is due: a selection named so (``of:``) is never reachable
            raise ConditionError(f"unexpected keyword {_short(token)} in condition, where a selection's name was "
                                 "due (and, or, not, of, them, all cannot name a selection)")
        return Ref(token)


def parse_aggregation(text: str) -> Aggregation:
    # Runs of whitespace as one space: the pattern's neighbouring \s* then cannot backtrack
    # over a long run (quadratic time on 'count(   ...   x').
    # ``by User, Computer`` (as rules in the wild write it) with its commas closed up, so that it is
    # refused as several fields, not as an aggregation that cannot be parsed.
    match = _AGGREGATION.match(" ".join(text.split()).replace(", ", ",").replace(" ,", ","))
    if not match:
        raise ConditionError(f"cannot parse aggregation {_short(text.strip())}")
    function = match.group("function").lower()
    field = match.group("field") if match.group("field") not in ("", "*") else None  # count(*): SQL's count of rows
    if function != "count" and field is None:
        raise ConditionError(f"{function}() needs a field")
    for name in (field, match.group("group")):  # 'by Computer,User' grouped every event under one absent field
        if name is not None and "," in name:
            raise ConditionError(f"an aggregation takes one field, not {_short(name)} (several: a correlation "
                                 "document's group-by)")
    threshold = float(match.group("threshold"))
    if abs(threshold) > MOST_THRESHOLD:  # a double would make it infinite, and alerts invalid JSON
        raise ConditionError(f"aggregation threshold {match.group('threshold')[:40]} is beyond 1e300")
    return Aggregation(
        function=function,
        field=field,
        group_by=match.group("group"),
        operator=match.group("op"),
        threshold=threshold,
    )


def parse_condition(text: str) -> Condition:
    """Parse ``expression [| aggregation]``."""
    if not isinstance(text, str):
        raise ConditionError("condition must be a string")
    search, bar, aggregation_text = text.partition("|")
    if "|" in aggregation_text:
        raise ConditionError("only one '|' aggregation is supported")
    aggregation = parse_aggregation(aggregation_text) if bar else None
    return Condition(text=text, expression=_Parser(search).parse(), aggregation=aggregation)


def _name_matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches an ``x of`` pattern, where ``*`` is the only wildcard (the
    specification's), so a name's ``?`` or ``[`` stands for itself.

    The literal pieces between the stars are looked for in order, each at its leftmost place
    (no later place could leave more room for the rest): time about linear in the name.  A
    regex ``.*a.*a.*a.*b`` backtracks instead, and a rule of 1 KB (a 1,000-letter name) hung
    the start-up for hours."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return name == pattern
    first, *middle, last = pieces
    end = len(name) - len(last)
    if end < len(first) or not name.startswith(first) or not name.endswith(last):
        return False
    at = len(first)
    for piece in middle:
        found = name.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def expand(node: Node, names: Iterable[str]) -> Node:
    """Replace ``x of pattern`` by And/Or over the detection names it matches.

    ``them`` covers every name not starting with an underscore.  A pattern that
    matches nothing, or a reference to an undefined name, is an error; so is a
    condition that expands to more than ``MAX_TERMS`` references or ``MAX_EXPANDED_CHARS`` of names.
    """
    names = list(names)
    return _expand(node, names, set(names), {}, [MAX_TERMS, MAX_NAME_TESTS, MAX_EXPANDED_CHARS])


def _expand(node: Node, names: list, known: set, patterns: dict, left: list) -> Node:
    if isinstance(node, Ref):
        if node.name not in known:
            raise ConditionError(f"condition refers to undefined selection {_short(node.name)}")
        _spend(left, (node,))
        return node
    if isinstance(node, Not):
        return Not(_expand(node.operand, names, known, patterns, left))
    if isinstance(node, (And, Or)):
        return type(node)(tuple(_expand(o, names, known, patterns, left) for o in node.operands))
    matched = patterns.get(node.pattern)
    if matched is None:
        if node.pattern == "them":
            matched = [n for n in names if not n.startswith("_")]
        else:
            left[1] -= len(names) * (node.pattern.count("*") + 1) + sum(map(len, names)) // _CHARS_PER_TEST
            if left[1] < 0:
                raise ConditionError(f"condition has too many distinct 'x of' patterns for {len(names)} selections")
            hidden = not node.pattern.startswith("_")  # '_' names only for a pattern that asks for them
            matched = [n for n in names if _name_matches(node.pattern, n) and not (hidden and n.startswith("_"))]
        patterns[node.pattern] = matched
    if not matched:
        pattern = node.pattern if len(node.pattern) <= 60 else node.pattern[:57] + "..."
        raise ConditionError(f"'{node.quantifier} of {pattern}' matches no selection")
    refs = tuple(Ref(n) for n in matched)
    _spend(left, refs)
    if len(refs) == 1:
        return refs[0]
    return Or(refs) if node.quantifier == "1" else And(refs)


def _spend(left: list, refs: tuple) -> None:
    left[0] -= len(refs)
    if left[0] < 0:
        raise ConditionError(f"condition expands to more than {MAX_TERMS:,} selection references")
    left[2] -= sum(len(ref.name) for ref in refs)
    if left[2] < 0:
        raise ConditionError(f"condition expands to more than {MAX_EXPANDED_CHARS >> 20} MiB of selection names")


def top_level_terms(node: Node) -> tuple:
    """The operands of a top-level AND (a single term otherwise)."""
    return node.operands if isinstance(node, And) else (node,)


def conjuncts(node: Node) -> tuple:
    """The operands of a top-level AND, an AND among them opened up in place (AND being associative,
    ``(a and b) and not f`` and ``all of x* and not f`` are ``a and b and not f``): the terms of a window
    join, the same however the AND is grouped."""
    if not isinstance(node, And):
        return (node,)
    return tuple(term for operand in node.operands for term in conjuncts(operand))


def references(node: Node) -> set:
    """Every selection name the (expanded) tree refers to."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Not):
        return references(node.operand)
    if isinstance(node, (And, Or)):
        return set().union(*(references(o) for o in node.operands))
    raise TypeError("expand() the tree first")


def is_negative(node: Node) -> bool:
    """True for a term that only excludes events (``not filter``)."""
    return isinstance(node, Not)


def holds_on_none(node: Node) -> bool:
    """Whether the expression holds on an event that meets none of its selections (``not a``,
    ``not a and not b``): an ``x of`` pattern names at least one selection, so it does not."""
    if isinstance(node, Not):
        return not holds_on_none(node.operand)
    if isinstance(node, And):
        return all(holds_on_none(o) for o in node.operands)
    if isinstance(node, Or):
        return any(holds_on_none(o) for o in node.operands)
    return False


def evaluate(node: Node, matched: frozenset) -> bool:
    """Truth of an expanded tree given the set of selections an event matched."""
    if isinstance(node, Ref):
        return node.name in matched
    if isinstance(node, Not):
        return not evaluate(node.operand, matched)
    if isinstance(node, And):
        return all(evaluate(o, matched) for o in node.operands)
    if isinstance(node, Or):
        return any(evaluate(o, matched) for o in node.operands)
    raise TypeError("expand() the tree first")
