"""Compiled plan: a rule's selections as matchers, its condition split into join terms.

``--join event`` (strict Sigma v1): the whole condition holds on one event; such
events feed the aggregation.  ``--join window``: each top-level AND-ed term may
be met by a different event inside the timeframe.  A negated top-level term
(``and not filter``) still applies to every event on its own: it excludes events
and cannot be "met" by one.
"""

from __future__ import annotations

from typing import Optional

import attrs
import re2

from ..values import MISSING, fold
from .condition import (And, ConditionError, Node, Not, Or, Ref, evaluate, expand, is_negative, references,
                        top_level_terms)
from .correlation import CorrelationSpec, from_legacy
from . import literals
from .logsource import LogsourceCheck, LogsourceTable, compile_logsource
from .modifiers import (AnyVariant, ModifierError, ModifierSpec, PatternError, _RegexTest, compile_re2, compile_value,
                        encode, escape)
from .rule import Rule, RuleError, shown


def _found(search):
    """``search`` (from ``compile_re2``) as a test of whether it finds anything in encoded text,
    calling RE2's own ``Match`` where the binding has it: the wrapper's generator and match
    object cost more than the search of a short text."""
    regexp = getattr(getattr(search, "__self__", None), "_regexp", None)
    match, anchor = getattr(regexp, "Match", None), getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if match is None or anchor is None:
        return lambda data: search(data) is not None
    return lambda data: match(anchor, data, 0, len(data))[0][0] >= 0


def _needs_non_ascii(test) -> bool:
    """Whether every folded text this (caseless) test holds on has a non-ASCII character:
    its needle, or one of the chunks a wildcard value must contain, has one."""
    chunks = getattr(test, "chunks", None)
    if chunks is not None:
        return any(not chunk.isascii() for chunk in chunks)
    return not test.needle.isascii()


def _regex_groups(tests: list) -> tuple:
    """``|re`` values of one matcher as few RE2 searches: ``(?flags:p1)|(?flags:p2)`` holds where
    one of them does (each pattern is a whole regex on its own, so its group closes it; flags
    stay inside it).  A group RE2 refuses is searched one by one."""
    by_flags = {}
    for test in tests:
        by_flags.setdefault(test.flags, []).append(test)
    found = []
    for flags, group in by_flags.items():
        if len(group) > 1:
            try:
                found.append(_found(compile_re2("|".join(f"(?{flags}:{t.needle})" for t in group))))
                continue
            except PatternError:
                pass
        found += [_found(t.search) for t in group]
    return tuple(found)


class AnyOf:
    """A list of values tested at once on case-folded text: one set lookup for the
    equalities, one ``startswith``/``endswith`` call with a tuple, one RE2 search
    (linear in the text) for every ``contains`` and wildcard value.  A rule set's
    matcher often lists dozens of values; testing them one by one, each folding the
    text again, was most of the cost of a rule set.  Cased values are tested one by
    one on the original text, and so are the values of a group RE2 cannot take at
    once (too large: it is compiled in pieces first); ``|re`` values with the same
    flags are one search.  Values that all need a non-ASCII character (emoji,
    look-alike letters) are not looked for in ASCII text."""

    __slots__ = ("equals", "starts", "ends", "needles", "searches", "rest", "uses_texts", "only_equals", "_found",
                 "_regexes", "_non_ascii")

    # A few contains needles are quicker with ``in`` than with a pattern.
    FEW = 2
    # Values per RE2 pattern: RE2 refuses a program larger than its memory budget (8 MiB).
    CHUNK_CHARS = 1 << 16

    def __init__(self, tests: tuple):
        equals, starts, ends, needles, patterns, rest = set(), [], [], [], [], []
        starts_tests, ends_tests = [], []
        for test in tests:
            kind = getattr(test, "kind", None)
            if getattr(test, "cased", True) or isinstance(test, _RegexTest) or kind is None:
                rest.append(test)
            elif kind == "equals":
                equals.add(test.needle)
            elif kind == "startswith":
                starts.append(test.needle)
                starts_tests.append(test)
            elif kind == "endswith":
                ends.append(test.needle)
                ends_tests.append(test)
            elif kind == "contains":
                needles.append(test)
            else:  # a wildcard value: its own anchored pattern, on folded text
                patterns.append(test)
        tested = starts_tests + ends_tests + needles + patterns
        self._non_ascii = bool(tested) and all(_needs_non_ascii(t) for t in tested)
        if len(needles) <= self.FEW and not patterns:
            self.needles = tuple(t.needle for t in needles) or None
            searches = []
        else:
            self.needles = None
            searches = self._searches(needles + patterns, rest)
        self.equals = frozenset(equals)
        self.starts = tuple(starts) or None
        self.ends = tuple(ends) or None
        self.searches = tuple(searches) or None
        self._found = tuple(_found(search) for search in searches) or None
        self._regexes = _regex_groups([t for t in rest if isinstance(t, _RegexTest)]) or None
        self.rest = tuple(t for t in rest if not isinstance(t, _RegexTest))
        self.uses_texts = bool(self.rest or self._regexes)  # else ``holds`` reads the folded leaves only
        self.only_equals = not (self.uses_texts or self.starts or self.ends or self.needles or self._found)

    @classmethod
    def _searches(cls, tests: list, rest: list) -> list:
        """One RE2 search per group of values; a group RE2 refuses is tried in halves, then one by one."""
        searches, group, size = [], [], 0
        sources = [escape(t.needle) if t.kind == "contains" else t.needle for t in tests]
        groups = []
        for test, source in zip(tests, sources):
            if group and size + len(source) > cls.CHUNK_CHARS:
                groups.append(group)
                group, size = [], 0
            group.append((test, source))
            size += len(source) + 1
        if group:
            groups.append(group)
        while groups:
            group = groups.pop()
            try:
                searches.append(compile_re2("|".join(source for _, source in group)))
            except PatternError:
                if len(group) == 1:
                    rest.append(group[0][0])  # its own test (``in`` for contains)
                else:
                    groups += [group[:len(group) // 2], group[len(group) // 2:]]
        return searches

    def holds(self, folded: frozenset, texts: tuple) -> bool:
        if self.equals and not self.equals.isdisjoint(folded):
            return True
        starts, ends, needles, found = self.starts, self.ends, self.needles, self._found
        if starts or ends or needles or found:
            non_ascii = self._non_ascii
            for text in folded:
                if non_ascii and text.isascii():
                    continue
                if starts and text.startswith(starts):
                    return True
                if ends and text.endswith(ends):
                    return True
                if needles:
                    for needle in needles:
                        if needle in text:
                            return True
                if found:
                    data = encode(text)
                    for search in found:
                        if search(data):
                            return True
        regexes = self._regexes
        if regexes:
            for text in texts:
                data = encode(text)
                for search in regexes:
                    if search(data):
                        return True
        for test in self.rest:
            for text in texts:
                if test(text):
                    return True
        return False


@attrs.frozen
class FieldMatcher:
    """``field|modifiers: values`` -- values OR'ed (AND'ed with ``|all``)."""

    field: str
    modifiers: tuple
    tests: tuple  # StringTest-like callables; empty when only null is accepted
    require_all: bool
    accepts_null: bool  # a null rule value: field absent or JSON null
    exists: Optional[bool] = None  # the |exists modifier
    any_of: AnyOf = attrs.field(default=None, eq=False, repr=False)

    # Neither |exists, |all, |neq nor a null value: an absent or null field has no leaves, on
    # which AnyOf never holds, so the field's folded leaves are all there is to look up.
    plain: bool = attrs.field(init=False, default=False, eq=False, repr=False)
    test: object = attrs.field(init=False, default=None, eq=False, repr=False)  # ``matches``, specialised

    def __attrs_post_init__(self):
        if self.any_of is None and not self.require_all:
            object.__setattr__(self, "any_of", AnyOf(self.tests))
        object.__setattr__(self, "plain", self.exists is None and not self.require_all and not self.accepts_null)
        object.__setattr__(self, "test", self._test())

    def _test(self):
        """``matches`` as one function: a plain list of caseless equalities (``EventID: 1``,
        ``OriginalFileName: [...]``) is one set test on the field's folded leaves."""
        if not self.plain:
            return self.matches
        field, any_of = self.field, self.any_of
        if any_of.only_equals:
            equals = any_of.equals
            return lambda view: not equals.isdisjoint(view.folded(field))
        single = _one_kind(field, any_of)
        if single is not None:
            return single
        holds = any_of.holds
        if any_of.uses_texts:
            return lambda view: holds(view.folded(field), view.leaves(field))
        return lambda view: holds(view.folded(field), ())

    def matches(self, view) -> bool:
        field = self.field
        if self.plain:
            any_of = self.any_of
            return any_of.holds(view.folded(field), view.leaves(field) if any_of.uses_texts else ())
        value = view.get(field)
        if self.exists is not None:
            return (value is not MISSING) == self.exists
        if value is MISSING or value is None:
            return self.accepts_null and not (self.require_all and self.tests)
        if self.require_all:
            texts = view.leaves(field)
            return all(any(test(t) for t in texts) for test in self.tests) and bool(self.tests)
        return self.any_of.holds(view.folded(field), view.leaves(field))

    def describe(self) -> str:
        mods = "".join(f"|{m}" for m in self.modifiers)
        return f"{self.field}{mods}"


def _one_kind(field: str, any_of: AnyOf):
    """``AnyOf.holds`` on one field, for values all of one kind (most matchers of a rule set:
    ``Image|endswith``, ``CommandLine|re``), without the tests of the kinds it has not got;
    None for the other matchers."""
    kinds = [name for name in ("equals", "starts", "ends", "needles", "_found", "_regexes", "rest")
             if getattr(any_of, name)]
    if len(kinds) != 1 or any_of._non_ascii:
        return None
    kind, values = kinds[0], getattr(any_of, kinds[0])
    if kind == "_regexes":  # on the original text: the folded leaves are not needed
        def regex(view) -> bool:
            for text in view.leaves(field):
                data = encode(text)
                for search in values:
                    if search(data):
                        return True
            return False
        return regex
    if kind == "starts":
        def starts(view) -> bool:
            for text in view.folded(field):
                if text.startswith(values):
                    return True
            return False
        return starts
    if kind == "ends":
        def ends(view) -> bool:
            for text in view.folded(field):
                if text.endswith(values):
                    return True
            return False
        return ends
    if kind == "needles":
        def contains(view) -> bool:
            for text in view.folded(field):
                for needle in values:
                    if needle in text:
                        return True
            return False
        return contains
    if kind == "_found":
        def search(view) -> bool:
            for text in view.folded(field):
                data = encode(text)
                for found in values:
                    if found(data):
                        return True
            return False
        return search
    return None


@attrs.frozen
class FieldRef:
    """One ``|fieldref`` value: the name of the other field, and how the two values compare."""

    mode: str  # equals, contains, startswith, endswith: how this field's value holds the other's
    needle: str  # the other field
    cased: bool

    @property
    def kind(self) -> str:
        return "fieldref" if self.mode == "equals" else f"fieldref {self.mode}"

    def holds(self, view, texts: tuple, folded: frozenset) -> Optional[bool]:
        """Whether a value of the field and one of the other compare; None when the other is absent."""
        other = view.get(self.needle)
        if other is MISSING or other is None:
            return None
        mine, theirs = (texts, view.leaves(self.needle)) if self.cased else (folded, view.folded(self.needle))
        if self.mode == "equals":
            return not set(mine).isdisjoint(theirs)
        if self.mode == "contains":
            return any(b in a for a in mine for b in theirs)
        if self.mode == "startswith":
            return any(a.startswith(b) for a in mine for b in theirs)
        return any(a.endswith(b) for a in mine for b in theirs)

    def literals(self) -> Optional[tuple]:
        return None  # the other field's value is only known per event


@attrs.frozen
class FieldRefMatcher:
    """``field|fieldref: other`` -- compares two fields of the same event (Sigma v2 ``fieldref``);
    OR-ed over the values (AND-ed with ``|all``).  With ``|neq`` the field must differ from every
    other field named.  An absent or null field on either side compares with nothing: no match."""

    field: str
    modifiers: tuple
    tests: tuple  # of FieldRef
    require_all: bool
    negate: bool

    def matches(self, view) -> bool:
        value = view.get(self.field)
        if value is MISSING or value is None:
            return False
        texts, folded = view.leaves(self.field), view.folded(self.field)
        for ref in self.tests:
            held = ref.holds(view, texts, folded)
            verdict = held is not None and held != self.negate
            if verdict and not self.require_all:
                return True
            if not verdict and self.require_all:
                return False
        return self.require_all

    def describe(self) -> str:
        mods = "".join(f"|{m}" for m in self.modifiers)
        return f"{self.field}{mods}"


@attrs.frozen
class KeywordMatcher:
    """A bare list of strings: any of them anywhere in the event."""

    tests: tuple
    any_of: AnyOf = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self):
        if self.any_of is None:
            object.__setattr__(self, "any_of", AnyOf(self.tests))

    def matches(self, view) -> bool:
        return self.any_of.holds(view.everything_folded(), view.everything())

    def describe(self) -> str:
        return "<keywords>"


@attrs.frozen
class KeywordKeyMatcher(KeywordMatcher):
    """Keywords written as a key without a field (``'|all': [...]``) inside a mapping, AND-ed with
    its other keys.  ``field`` is empty: the code that looks at a mapping's fields skips it."""

    field = ""


@attrs.frozen
class Selection:
    """A named search identifier: alternatives (OR) of matcher groups (AND)."""

    name: str
    alternatives: tuple  # tuple of tuples of matchers
    # (field, folded values): every alternative needs the field to equal one of them
    # (``EventID: 4104``), so one set lookup rules out most events before any matcher runs.
    guard: Optional[tuple] = None
    # ``matches`` as one function over the matchers' bound methods: a rule set judges
    # hundreds of thousands of selections, and generator expressions cost more than the tests.
    test: object = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "test", _selection_test(self.alternatives, self.guard))

    def matches(self, view) -> bool:
        return self.test(view)


def _selection_test(alternatives: tuple, guard: Optional[tuple]):
    """A function of the view: the guard, then whether all matchers of one alternative hold."""
    groups = tuple(tuple(getattr(m, "test", None) or m.matches for m in group) for group in alternatives)
    if len(groups) == 1 and len(groups[0]) == 1:
        only = groups[0][0]
    else:
        only = None

        def any_group(view) -> bool:
            for group in groups:
                for test in group:
                    if not test(view):
                        break
                else:
                    return True
            return False
    inner = only or any_group
    if guard is None:
        return inner
    field, values = guard

    def guarded(view) -> bool:
        return not values.isdisjoint(view.folded(field)) and inner(view)
    return guarded


def _equality_values(matcher) -> Optional[frozenset]:
    """The folded values a field must equal for this matcher to hold, if it is a plain equality."""
    if not isinstance(matcher, FieldMatcher) or matcher.exists is not None or matcher.accepts_null:
        return None
    if not matcher.tests or any(getattr(t, "kind", None) != "equals" for t in matcher.tests):
        return None
    return frozenset(fold(t.needle) for t in matcher.tests)


def _guard(alternatives: tuple) -> Optional[tuple]:
    """A field every alternative tests for equality (EventID first), with the values allowed."""
    fields = [{field: values for field, values in ((m.field, _equality_values(m)) for m in group)
               if values is not None}
              for group in alternatives]
    common = set.intersection(*(set(f) for f in fields)) if fields else set()
    if not common:
        return None
    field = "EventID" if "EventID" in common else sorted(common)[0]
    return field, frozenset().union(*(f[field] for f in fields))


def compile_selection(name: str, value, source: str, placeholders: Optional[dict] = None) -> Selection:
    """One search identifier -> a Selection.  ``placeholders`` fills ``|expand`` values (None: no file)."""
    where = f"rule {source}: selection {shown(name)}"
    if isinstance(value, dict):
        alternatives = (_compile_map(value, where, placeholders),)
        return Selection(name, alternatives, _guard(alternatives))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        alternatives = tuple(_compile_map(v, where, placeholders) for v in value)
        return Selection(name, alternatives, _guard(alternatives))
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        tests = _spelled_out(_compile_value(v, _KEYWORDS, where) for v in value)
        return Selection(name, ((KeywordMatcher(tests),),))
    if isinstance(value, (str, int)):
        return Selection(name, ((KeywordMatcher(_spelled_out([_compile_value(value, _KEYWORDS, where)])),),))
    raise RuleError(f"{where}: must be a mapping, a list of mappings or a list of keywords")


_KEYWORDS = ModifierSpec.parse((), keyword=True)  # a bare keyword: contained anywhere in the event


def _spelled_out(tests) -> tuple:
    """OR-ed tests with each value that stands for several (AnyVariant) replaced by them: AnyOf then
    tests a placeholder's hundred names with one set lookup, not one by one."""
    out = []
    for test in tests:
        out += test.alternatives if isinstance(test, AnyVariant) else [test]
    return tuple(out)


def _compile_value(value, spec: ModifierSpec, where: str, placeholders: Optional[dict] = None):
    if isinstance(value, (str, int, float)):  # bool is an int
        try:
            return compile_value(value, spec, placeholders)
        except PatternError as error:  # RE2 cannot run it: a backreference, a lookaround, a syntax error
            raise RuleError(f"{where}: bad pattern {shown(value)}: {error}") from None
        except ModifierError as error:
            raise RuleError(f"{where}: value {shown(value)}: {error}") from None
    raise RuleError(f"{where}: unsupported value {shown(value)}")


def _compile_map(mapping: dict, where: str, placeholders: Optional[dict] = None) -> tuple:
    if not mapping:
        raise RuleError(f"{where}: empty mapping")
    matchers = []
    for key, raw in mapping.items():
        field, *mods = str(key).split("|")
        if not field and not mods:
            raise RuleError(f"{where}: empty field name in {shown(key)}")
        at = f"{where}, field {shown(field)}" if field else f"{where}, keywords {shown(key)}"
        try:
            spec = ModifierSpec.parse(mods, keyword=not field)  # no field: '|all': [keywords]
        except ModifierError as error:
            raise RuleError(f"{at}: {error}") from None
        if spec.kind == "exists":
            if not isinstance(raw, bool):
                raise RuleError(f"{where}: {shown(key)} needs true or false")
            matchers.append(FieldMatcher(field, tuple(mods), (), False, False, raw))
            continue
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise RuleError(f"{where}: {shown(key)} has an empty list of values")
        accepts_null = any(v is None for v in values)
        if accepts_null and (spec.neq or spec.kind == "fieldref" or not field):
            what = "keywords" if not field else "|neq" if spec.neq else "|fieldref"
            raise RuleError(f"{at}: null cannot be one of the values of {what} (test it in a selection of its own)")
        if spec.kind == "fieldref":
            matchers.append(_fieldref_matcher(field, tuple(mods), values, spec, at))
            continue
        tests = tuple(_compile_value(v, spec, at, placeholders) for v in values if v is not None)
        if not field:  # keywords: each must occur with |all, any of them otherwise
            groups = [(t,) for t in tests] if spec.all else [tests]
            matchers += [KeywordKeyMatcher(_spelled_out(group)) for group in groups]
        elif spec.neq:  # the field differs from every value
            matchers.append(FieldMatcher(field, tuple(mods), tests, True, False))
        else:
            matchers.append(FieldMatcher(field, tuple(mods), tests if spec.all else _spelled_out(tests), spec.all,
                                         accepts_null))
    return tuple(matchers)


def _fieldref_matcher(field: str, mods: tuple, values: list, spec: ModifierSpec, at: str) -> FieldRefMatcher:
    for value in values:
        if not isinstance(value, str) or not value:
            raise RuleError(f"{at}: |fieldref needs the name of another field, not {shown(value)}")
    refs = tuple(FieldRef(spec.mode, value, spec.cased) for value in values)
    return FieldRefMatcher(field, mods, refs, spec.all or spec.neq, spec.neq)


def _never(view) -> bool:
    return False


def _condition_test(node: Node, selections: dict):
    """An expanded condition tree as a function of the view, selections tried on demand
    (``a and b`` stops at a failing ``a``); a name without a selection never holds."""
    if isinstance(node, Ref):
        selection = selections.get(node.name)
        return _never if selection is None else selection.test
    if isinstance(node, Not):
        inner = _condition_test(node.operand, selections)
        return lambda view: not inner(view)
    if isinstance(node, (And, Or)):
        parts = tuple(_condition_test(o, selections) for o in node.operands)
        if len(parts) == 1:
            return parts[0]
        if isinstance(node, And):
            if len(parts) == 2:
                first, second = parts
                return lambda view: first(view) and second(view)

            def every(view) -> bool:
                for part in parts:
                    if not part(view):
                        return False
                return True
            return every
        if len(parts) == 2:
            first, second = parts
            return lambda view: first(view) or second(view)

        def some(view) -> bool:
            for part in parts:
                if part(view):
                    return True
            return False
        return some
    raise TypeError("expand() the tree first")


def _mask_test(filters: tuple, terms: list, selections: dict):
    """A function of the view giving the term mask: 0 when a filter fails, else bit i per term i met."""
    checks = tuple(_condition_test(f, selections) for f in filters)
    tests = tuple(_condition_test(t, selections) for t in terms)
    if not checks and len(tests) == 1:
        only = tests[0]
        return lambda view: 1 if only(view) else 0

    def mask(view) -> int:
        for check in checks:
            if not check(view):
                return 0
        found = 0
        for i, test in enumerate(tests):
            if test(view):
                found |= 1 << i
        return found
    return mask


@attrs.frozen
class Term:
    label: str  # as printed in alerts and explain
    node: Node


@attrs.frozen
class Plan:
    rule: Rule
    selections: tuple  # of Selection, in rule order
    expression: Node  # expanded condition
    join: str  # "window" or "event"
    terms: tuple  # positive terms an alert needs, one event each at least
    filters: tuple  # negated top-level terms, applied per event (window join)
    timeframe_ns: int
    correlation: Optional[CorrelationSpec]  # None: the rule alerts on each event that meets its condition
    logsource: Optional[LogsourceCheck]  # None: the rule applies to every event
    # term_mask per set of matched selections: a stream has only a handful of distinct sets
    _masks: dict = attrs.field(factory=dict, eq=False, repr=False)
    _selection_index: dict = attrs.field(factory=dict, eq=False, repr=False)
    _compiled: dict = attrs.field(factory=dict, eq=False, repr=False)  # the condition as functions of the view

    @property
    def aggregation(self):
        return self.rule.condition.aggregation

    def match(self, view) -> frozenset:
        """Names of the selections this event satisfies."""
        return frozenset(s.name for s in self.selections if s.matches(view))

    def judge(self, view) -> tuple:
        """``(term mask, selections matched)`` for one event.

        Selections are tried only as far as the condition needs them (``a and b``
        stops at a failing ``a``), which is all the work for the events that do not
        matter; the full set of matched selections, which an alert's reference
        lists, is worked out only when the mask is not 0."""
        mask = self.mask_test(view)
        if not mask:
            return 0, frozenset()
        return mask, frozenset(s.name for s in self.selections if s.matches(view))

    @property
    def matters(self):
        """A function of the view, true when the event meets a term (``mask_test`` but for a
        single term without filters, where it is the term's own test: one call less)."""
        found = self._compiled.get("matters")
        if found is None:
            single = not self.filters and len(self.terms) == 1
            found = self._compiled["matters"] = \
                _condition_test(self.terms[0].node, self._by_name) if single else self.mask_test
        return found

    @property
    def mask_test(self):
        """The term mask of a view (``judge`` without the selections): the condition compiled
        once into nested functions of the view (``_condition_test``).  A selection named twice
        in the condition may be tried twice: it is pure, and most conditions name each once,
        so a per-event memo would cost more than it saves."""
        found = self._compiled.get("judge")
        if found is None:
            found = self._compiled["judge"] = _mask_test(self.filters, [t.node for t in self.terms], self._by_name)
        return found

    @property
    def _by_name(self) -> dict:
        found = self._selection_index
        if not found:
            found.update((s.name, s) for s in self.selections)
        return found

    def term_mask(self, matched: frozenset) -> int:
        """Bit i set when the event meets term i; 0 means it does not feed correlation."""
        try:
            return self._masks[matched]
        except KeyError:
            pass
        mask = 0
        if all(evaluate(f, matched) for f in self.filters):
            for i, term in enumerate(self.terms):
                if evaluate(term.node, matched):
                    mask |= 1 << i
        self._masks[matched] = mask
        return mask

    @property
    def full_mask(self) -> int:
        return (1 << len(self.terms)) - 1

    def prefilter_literals(self, usable=lambda literal: literal) -> Optional[list]:
        """What a one-pass prefilter may look for: every event meeting one of the plan's
        terms holds one of these (the cover of its literal formula, ``sigma.literals``).
        None means "cannot prefilter": a term can hold without any literal (``not
        filter`` alone, a regex, ``|exists``, a null value, only numbers)."""
        found = literals.cover(literals.of_plan(self, usable))
        return None if found is None else sorted(found)

def compile_plan(rule: Rule, join: Optional[str] = None, placeholders: Optional[dict] = None) -> Plan:
    """Rule -> Plan.  ``join`` defaults to window for the built-in rule, event otherwise.
    ``placeholders`` (name -> values) fills ``|expand`` values; without it such a rule is an error."""
    join = "window" if rule.near is not None else join or ("window" if rule.builtin else "event")  # near: its terms
    if join not in ("window", "event"):
        raise RuleError(f"unknown join mode {join!r} (use window or event)")
    selections = tuple(compile_selection(name, value, rule.path, placeholders)
                       for name, value in rule.detection.items())
    try:
        expression = expand(rule.condition.expression, [s.name for s in selections])
    except ConditionError as error:
        raise RuleError(f"rule {rule.path}: {error}") from None
    used = references(expression)
    selections = tuple(s for s in selections if s.name in used)
    if join == "window":
        parts = top_level_terms(expression)
        original = top_level_terms(rule.condition.expression)
        labels = [str(o) for o in original] if len(original) == len(parts) else [str(p) for p in parts]
        positive = tuple(Term(label, p) for label, p in zip(labels, parts) if not is_negative(p))
        filters = tuple(p for p in parts if is_negative(p))
        if not positive:
            positive, filters = (Term(str(expression), expression),), ()
    else:
        positive, filters = (Term(str(expression), expression),), ()
    spec = from_legacy(rule.id, rule.title, rule.condition.text, rule.condition.aggregation, rule.timeframe_ns,
                       tuple(term.label for term in positive), join, rule.near)
    logsource = compile_logsource(rule.logsource, LogsourceTable.builtin(), rule.path)
    return Plan(rule, selections, expression, join, positive, filters, rule.timeframe_ns or 0, spec, logsource)
