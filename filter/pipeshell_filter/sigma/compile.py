"""Compiled plan: a rule's selections as matchers (``matchers``), its condition split into join terms.

``--join event`` (strict Sigma v1): the whole condition holds on one event; such
events feed the aggregation.  ``--join window``: each top-level AND-ed term may
be met by a different event inside the timeframe.  A negated top-level term
(``and not filter``) still applies to every event on its own: it excludes events
and cannot be "met" by one.
"""

from __future__ import annotations

import math
from typing import Optional

import attrs

from ..values import fold
from .condition import (And, ConditionError, Node, Not, Or, Ref, conjuncts, evaluate, expand, is_negative,
                        references, top_level_terms)
from .correlation import CorrelationSpec, from_legacy
from . import literals
from .logsource import LogsourceCheck, LogsourceTable, compile_logsource
from .matchers import FieldMatcher, FieldRef, FieldRefMatcher, KeywordKeyMatcher, KeywordMatcher
from .modifiers import AnyVariant, ModifierError, ModifierSpec, PatternError, TestBudget, compile_value
from .rule import Rule, RuleError, shown


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


def _forward(items: list, item) -> None:
    """Move ``item`` one place towards the front of ``items``: the order in which the parts of
    an AND or an OR are tried, which is free (every test is pure), learns which part decides
    most often (a filter that holds on most events, a matcher that fails on most)."""
    for at in range(1, len(items)):
        if items[at] is item:
            items[at - 1], items[at] = item, items[at - 1]
            return


def _selection_test(alternatives: tuple, guard: Optional[tuple]):
    """A function of the view: the guard, then whether all matchers of one alternative hold
    (alternatives and matchers tried in the order that decides soonest, ``_forward``)."""
    groups = [[getattr(m, "test", None) or m.matches for m in group] for group in alternatives]
    if len(groups) == 1 and len(groups[0]) == 1:
        only = groups[0][0]
    else:
        only = None

        def any_group(view) -> bool:
            for group in groups:
                for test in group:
                    if not test(view):
                        if test is not group[0]:
                            _forward(group, test)
                        break
                else:
                    if group is not groups[0]:
                        _forward(groups, group)
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


def compile_selection(name: str, value, source: str, placeholders: Optional[dict] = None,
                      budget: Optional[TestBudget] = None) -> Selection:
    """One search identifier -> a Selection.  ``placeholders`` fills ``|expand`` values (None: no file);
    ``budget``: what is left of the rule's allowance of tests (``modifiers.MAX_TESTS``)."""
    where = f"rule {source}: selection {shown(name)}"
    budget = budget or TestBudget()
    if isinstance(value, dict):
        alternatives = (_compile_map(value, where, placeholders, budget),)
        return Selection(name, alternatives, _guard(alternatives))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        alternatives = tuple(_compile_map(v, where, placeholders, budget) for v in value)
        return Selection(name, alternatives, _guard(alternatives))
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        tests = _spelled_out(_compile_value(v, _KEYWORDS, where, None, budget) for v in value)
        return Selection(name, ((KeywordMatcher(tests),),))
    if isinstance(value, (str, int, float)):
        test = _compile_value(value, _KEYWORDS, where, None, budget)
        return Selection(name, ((KeywordMatcher(_spelled_out([test])),),))
    if value == []:  # pySigma keeps it, with no value: whether that holds always or never is anyone's guess
        raise RuleError(f"{where}: an empty list (of keywords or of mappings)")
    raise RuleError(f"{where}: must be a mapping, a list of mappings or a list of keywords")


_KEYWORDS = ModifierSpec.parse((), keyword=True)  # a bare keyword: contained anywhere in the event


def _spelled_out(tests) -> tuple:
    """OR-ed tests with each value that stands for several (AnyVariant) replaced by them: AnyOf then
    tests a placeholder's hundred names with one set lookup, not one by one."""
    out = []
    for test in tests:
        out += test.alternatives if isinstance(test, AnyVariant) else [test]
    return tuple(out)


def _compile_value(value, spec: ModifierSpec, where: str, placeholders: Optional[dict] = None,
                   budget: Optional[TestBudget] = None):
    if isinstance(value, float) and not math.isfinite(value):  # YAML's .nan, .inf: no event writes one
        raise RuleError(f"{where}: value {shown(value)} is not a number (write it quoted to mean the text)")
    if isinstance(value, (str, int, float)):  # bool is an int
        try:
            return compile_value(value, spec, placeholders, budget)
        except PatternError as error:  # RE2 cannot run it: a backreference, a lookaround, a syntax error
            raise RuleError(f"{where}: bad pattern {shown(value)}: {error}") from None
        except ModifierError as error:
            raise RuleError(f"{where}: value {shown(value)}: {error}") from None
    raise RuleError(f"{where}: unsupported value {shown(value)}")


def _compile_map(mapping: dict, where: str, placeholders: Optional[dict], budget: TestBudget) -> tuple:
    if not mapping:
        raise RuleError(f"{where}: empty mapping")
    matchers = []
    for key, raw in mapping.items():
        if not isinstance(key, str):  # YAML read `~:`, `yes:`, `0x1F:` as null, true, 31: their text is none written
            what = "null" if key is None else "boolean" if isinstance(key, bool) else \
                "number" if isinstance(key, (int, float)) else type(key).__name__
            raise RuleError(f"{where}: field name {shown(key)} is not text (YAML reads it as a {what}); quote it")
        field, *mods = key.split("|")
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
        # null is a field's absence: no modifier but |all applies to it (pySigma refuses them too), and
        # taken as a plain null check, ``|re: null`` or ``|gt: null`` would match every event without the field.
        modifier = next((m for m in mods if m != "all"), None)
        if accepts_null and (modifier is not None or not field):
            if not field:
                raise RuleError(f"{at}: null cannot be one of the keywords")
            raise RuleError(f"{at}: null cannot be a value of |{modifier} (a field absent or null is tested "
                            f"without modifiers, in a selection of its own: {shown(field)}: null)")
        if spec.kind == "fieldref":
            matchers.append(_fieldref_matcher(field, tuple(mods), values, spec, at))
            continue
        tests = tuple(_compile_value(v, spec, at, placeholders, budget) for v in values if v is not None)
        if not field:  # keywords: each must occur with |all, any of them otherwise
            groups = [(t,) for t in tests] if spec.all else [tests]
            matchers += [KeywordKeyMatcher(_spelled_out(group)) for group in groups]
        elif spec.neq:  # no leaf of the field matches any value (|all: not every value is matched)
            matchers.append(FieldMatcher(field, tuple(mods), tests, not spec.all, False, neq=True))
        else:
            matchers.append(FieldMatcher(field, tuple(mods), tests if spec.all else _spelled_out(tests), spec.all,
                                         accepts_null))
    return tuple(matchers)


def _fieldref_matcher(field: str, mods: tuple, values: list, spec: ModifierSpec, at: str) -> FieldRefMatcher:
    for value in values:
        if not isinstance(value, str) or not value:
            raise RuleError(f"{at}: |fieldref needs the name of another field, not {shown(value)}")
    refs = tuple(FieldRef(spec.mode, value, spec.cased) for value in values)
    # |neq differs from every field named; |neq|all negates |all: it differs from one of them at least
    return FieldRefMatcher(field, mods, refs, spec.all != spec.neq, spec.neq)


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
        parts = [_condition_test(o, selections) for o in node.operands]
        if len(parts) == 1:
            return parts[0]
        if isinstance(node, And):
            def every(view) -> bool:
                for part in parts:
                    if not part(view):
                        if part is not parts[0]:
                            _forward(parts, part)
                        return False
                return True
            return every

        def some(view) -> bool:
            for part in parts:
                if part(view):
                    if part is not parts[0]:
                        _forward(parts, part)
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
        """``(term mask, selections matched)`` for one event that ``matters``: every selection
        tried once (an alert's reference lists them), the mask read from the set (``term_mask``,
        cached per set).  The detect stage asks ``matters`` first, which tries selections only
        as far as the condition needs them: that is all the work for the events that do not
        matter."""
        matched = frozenset(s.name for s in self.selections if s.matches(view))
        return self.term_mask(matched), matched

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

    def fields_read_by(self, event_ids: frozenset) -> frozenset:
        """The event fields named (a ``|fieldref``'s other field too) by the selections an event
        with these (folded) EventIDs can meet: what a collector's shape must carry for the rule to
        see the event as written.  A selection whose guard wants other EventIDs (``EventID: 4103``
        and ``Payload``) names no field of this event."""
        found = set()
        for selection in self.selections:
            guard = selection.guard
            if guard is not None and guard[0] == "EventID" and guard[1].isdisjoint(event_ids):
                continue
            for group in selection.alternatives:
                for matcher in group:
                    found.add(getattr(matcher, "field", ""))
                    found.update(t.needle for t in matcher.tests if isinstance(matcher, FieldRefMatcher))
        found.discard("")
        return frozenset(found)

    @property
    def guarded_by_event_id(self) -> bool:
        """Whether a selection wants some EventIDs (``fields_read_by`` then depends on the event's)."""
        return any(s.guard is not None and s.guard[0] == "EventID" for s in self.selections)

    def fields_needed_by(self, event_ids: frozenset) -> frozenset:
        """The fields of ``fields_read_by`` that an event must carry for the condition to hold as
        written: those of the selections it names outside a ``not`` (a filter that excludes needs
        nothing of the event), less those a matcher holds without (``|exists: false``, a null value,
        ``|neq``).  A collector that never delivers one leaves that part of the rule blind (``--rule-stats``)."""
        positive = self._compiled.get("positive")
        if positive is None:
            positive = self._compiled["positive"] = _positive_references(self.expression)
        found = set()
        for selection in self.selections:
            guard = selection.guard
            if selection.name not in positive or \
                    guard is not None and guard[0] == "EventID" and guard[1].isdisjoint(event_ids):
                continue
            for group in selection.alternatives:
                for matcher in group:
                    if getattr(matcher, "exists", None) is False or getattr(matcher, "accepts_null", False) or \
                            getattr(matcher, "neq", False):
                        continue
                    found.add(getattr(matcher, "field", ""))
                    found.update(t.needle for t in matcher.tests if isinstance(matcher, FieldRefMatcher))
        found.discard("")
        return frozenset(found)

    def fields_of(self, names) -> tuple:
        """The event fields the selections ``names`` read (a ``|fieldref``'s other field too), in the
        rule's order, once each: what an alert shows of an event that met them (``detect.Detector``)."""
        found = {}
        for selection in self.selections:
            if selection.name in names:
                for group in selection.alternatives:
                    for matcher in group:
                        found[getattr(matcher, "field", "")] = None
                        if isinstance(matcher, FieldRefMatcher):
                            found.update(dict.fromkeys(t.needle for t in matcher.tests))
        found.pop("", None)
        return tuple(found)

    def prefilter_literals(self, usable=lambda literal: literal) -> Optional[list]:
        """What a one-pass prefilter may look for: every event meeting one of the plan's
        terms holds one of these (the cover of its literal formula, ``sigma.literals``).
        None means "cannot prefilter": a term can hold without any literal (``not
        filter`` alone, a regex, ``|exists``, a null value, only numbers)."""
        found = literals.cover(literals.of_plan(self, usable))
        return None if found is None else sorted(found)

def _positive_references(node: Node, positive: bool = True) -> set:
    """The selection names an expanded condition refers to under an even number of ``not``."""
    if isinstance(node, Ref):
        return {node.name} if positive else set()
    if isinstance(node, Not):
        return _positive_references(node.operand, not positive)
    return set().union(*(_positive_references(o, positive) for o in node.operands))


def _shared_selection(name: str, value, source: str, placeholders: Optional[dict], budget: TestBudget,
                      shared: Optional[dict]) -> Selection:
    """A selection whose value is one object with another rule's (a global filter's, which each rule
    it names holds) compiled once: a filter of 20,000 users over 200 rules was compiled 200 times
    (27 s, 580 MB).  It still counts towards each rule's budget of tests."""
    if shared is None or not isinstance(value, (dict, list)):
        return compile_selection(name, value, source, placeholders, budget)
    known = shared.get(id(value))
    if known is None:
        before = budget.left
        selection = compile_selection(name, value, source, placeholders, budget)
        shared[id(value)] = (value, selection, before - budget.left)  # the value kept: its id stays its own
        return selection
    _, selection, cost = known
    try:
        budget.take(cost)
    except ModifierError as error:
        raise RuleError(f"rule {source}: selection {shown(name)}: {error}") from None
    return Selection(name, selection.alternatives, selection.guard)


def compile_plan(rule: Rule, join: Optional[str] = None, placeholders: Optional[dict] = None,
                 shared: Optional[dict] = None) -> Plan:
    """Rule -> Plan.  ``join`` defaults to window for the built-in rule, event otherwise.
    ``placeholders`` (name -> values) fills ``|expand`` values; without it such a rule is an error.
    ``shared``: the selections compiled for the rules of one load (``_shared_selection``)."""
    join = "window" if rule.near is not None else join or ("window" if rule.builtin else "event")  # near: its terms
    if join not in ("window", "event"):
        raise RuleError(f"unknown join mode {join!r} (use window or event)")
    budget = TestBudget()  # the rule's, its global filters' selections included
    selections = tuple(_shared_selection(name, value, rule.path, placeholders, budget, shared)
                       for name, value in rule.detection.items())
    try:
        expression = expand(rule.condition.expression, [s.name for s in selections])
    except ConditionError as error:
        raise RuleError(f"rule {rule.path}: {error}") from None
    used = references(expression)
    selections = tuple(s for s in selections if s.name in used)
    if join == "window":
        # a near rule's terms are its search expression and each near term, as written (its flags say so)
        terms_of = top_level_terms if rule.near is not None else conjuncts
        parts = terms_of(expression)
        original = terms_of(rule.condition.expression)
        labels = [str(o) for o in original] if len(original) == len(parts) else [str(p) for p in parts]
        positive = tuple(Term(label, p) for label, p in zip(labels, parts) if not is_negative(p))
        filters = tuple(p for p in parts if is_negative(p))
        if not positive:
            positive, filters = (Term(str(expression), expression),), ()
    else:
        positive, filters = (Term(str(expression), expression),), ()
    spec = from_legacy(rule.id, rule.title, rule.condition.text, rule.condition.aggregation, rule.timeframe_ns,
                       tuple(term.label for term in positive), join, rule.near)
    if spec is None and join == "window" and len(positive) > 1:
        # no window to join the terms in (no timeframe, no aggregation): each event meets the whole
        # condition or nothing, as under the event join (a term alone alerted, ``a and b`` was ``a or b``)
        join, positive, filters = "event", (Term(str(expression), expression),), ()
    logsource = compile_logsource(rule.logsource, LogsourceTable.builtin(), rule.path)
    return Plan(rule, selections, expression, join, positive, filters, rule.timeframe_ns or 0, spec, logsource)
