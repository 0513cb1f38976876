"""What an event's text must hold for a rule to matter: a formula over literals.

A rule set is thousands of rules, and most lines of a stream hold *some* literal
of *some* rule.  Trying every rule whose literals appear anywhere in a line was
a hundred rule evaluations per Sysmon event.  The condition says more than that:
``selection_img and selection_cli`` needs a literal of each, and ``not filter``
needs nothing.  So each rule gets a formula of AND/OR over literals that every
event meeting one of its terms satisfies; a scanner evaluates all the formulas
over a line at once (``io.rule_index.RuleIndex``).

A formula is ``None`` (no requirement: any line may matter), a literal (the
bytes a scanner looks for, from ``usable``; any value but a tuple), or
``(AND, parts)`` / ``(OR, parts)``.  Why it is sound: a matcher holds only when one of its values holds,
and a value holds only on a text holding one of its ``literals()``; a selection
holds when all matchers of one alternative hold; ``not`` gives no requirement.
"""

from __future__ import annotations

from typing import Optional

from .condition import And, Not, Or, Ref

AND, OR = "and", "or"

Formula = object  # None, a literal, or (AND | OR, tuple of formulas)



def both(parts):
    """AND of formulas: a part without requirement drops out."""
    flat = []
    for part in parts:
        if part is None:
            continue
        flat.extend(part[1] if isinstance(part, tuple) and part[0] == AND else (part,))
    return _joined(AND, flat)


def either(parts):
    """OR of formulas: any part without requirement makes the whole one none."""
    flat = []
    for part in parts:
        if part is None:
            return None
        flat.extend(part[1] if isinstance(part, tuple) and part[0] == OR else (part,))
    return _joined(OR, flat)


def _joined(op: str, parts: list):
    unique = list(dict.fromkeys(parts))
    if not unique:
        return None
    return unique[0] if len(unique) == 1 else (op, tuple(unique))


def leaves(formula: Formula) -> set:
    if formula is None:
        return set()
    if not isinstance(formula, tuple):
        return {formula}
    return set().union(*(leaves(part) for part in formula[1]))


def cover(formula: Formula) -> Optional[set]:
    """A set of literals one of which every satisfying text holds (for a one-pass block
    scan): an AND keeps the part whose literals are the longest; None: no requirement."""
    if formula is None:
        return None
    if not isinstance(formula, tuple):
        return {formula}
    op, parts = formula
    covers = [cover(part) for part in parts]
    if op == OR:
        return set().union(*covers)
    return max(covers, key=lambda found: (min(map(len, found)), -len(found)))


class Anchored(str):
    """A literal that is the whole start (``start``) or end (``end``) of a text it matches in: an
    ``|endswith``, ``|startswith`` or plain value, whole.  A scanner may look for it next to the
    quote of the JSON string that holds it (``io.prefilter.needle``)."""

    def __new__(cls, text: str, start: bool, end: bool):
        literal = super().__new__(cls, text)
        literal.start, literal.end = start, end
        return literal


_ANCHORS = {"equals": (True, True), "startswith": (True, False), "endswith": (False, True)}


def _anchored(test, found: tuple) -> tuple:
    """``found`` (a test's literals) as ``Anchored`` when the test is a plain, starts- or ends-with
    comparison of its whole value, which is its one literal."""
    anchors = _ANCHORS.get(getattr(test, "kind", None))
    if anchors is None or len(found) != 1 or found[0] != test.needle.casefold():
        return found
    return (Anchored(found[0], *anchors),)


def of_matcher(matcher, usable):
    """A matcher's values (OR'ed, or AND'ed with ``|all``), each needing one of its literals."""
    tests = getattr(matcher, "tests", ())
    if getattr(matcher, "exists", None) is not None or getattr(matcher, "accepts_null", False) or not tests:
        return None
    each = []
    for test in tests:
        found = test.literals()
        if found is None:
            each.append(None)
            continue
        scanned = [usable(literal) for literal in _anchored(test, found)]
        each.append(None if None in scanned else either(scanned))
    return both(each) if getattr(matcher, "require_all", False) else either(each)


def of_selection(selection, usable):
    return either(both(of_matcher(m, usable) for m in group) for group in selection.alternatives)


def of_node(node, selections: dict, usable):
    """The formula of an expanded condition tree; ``selections`` maps names to formulas."""
    if isinstance(node, Ref):
        return selections.get(node.name)
    if isinstance(node, Not):
        return None
    if isinstance(node, And):
        return both(of_node(o, selections, usable) for o in node.operands)
    if isinstance(node, Or):
        return either(of_node(o, selections, usable) for o in node.operands)
    raise TypeError("expand() the tree first")


def of_plan(plan, usable):
    """What an event must hold to meet one of the plan's terms (and so to matter at all)."""
    return either(of_node(term.node, _Formulas(plan.selections, usable), usable) for term in plan.terms)


class _Formulas:
    """Selection name -> its formula, worked out when the condition first reaches it outside a ``not``:
    a selection named only under one needs none (a global filter's 20,000 users, in each of 200 rules
    it applies to, took 20 s of start-up)."""

    def __init__(self, selections, usable):
        self._selections, self._usable, self._found = {s.name: s for s in selections}, usable, {}

    def get(self, name: str):
        if name not in self._found:
            selection = self._selections.get(name)
            self._found[name] = None if selection is None else of_selection(selection, self._usable)
        return self._found[name]


def required_values(plan, field: str = "EventID") -> Optional[frozenset]:
    """The folded values ``field`` must take for the plan to matter (from the selections'
    equality guards, ``EventID: 4104``), or None when the condition does not pin it down.
    A rule set routes each event to the rules that can want its EventID before any is tried."""
    guards = {s.name: (s.guard[1] if s.guard is not None and s.guard[0] == field else None)
              for s in plan.selections}

    def values(node) -> Optional[frozenset]:
        if isinstance(node, Ref):
            return guards.get(node.name)
        if isinstance(node, And):
            known = [v for v in map(values, node.operands) if v is not None]
            return frozenset.intersection(*known) if known else None
        if isinstance(node, Or):
            every = [values(o) for o in node.operands]
            return None if None in every else frozenset().union(*every)
        return None  # a negation pins nothing

    every = [values(term.node) for term in plan.terms]
    return None if not every or None in every else frozenset().union(*every)
