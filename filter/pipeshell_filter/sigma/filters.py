"""Sigma v2.1 global filters ("meta filters"): one tuning applied to many rules.

A filter document names rules (by ``id`` or ``name``, in any file of the set, or ``any``)
and gives selections and a condition.  ``apply_filters`` runs once every file is read,
before the rules compile: each rule a filter applies to becomes a rule of its own whose
detection holds the filter's selections (renamed ``filter:<filter id>:<name>``, numbered
where two ids would give one prefix, so that no two sides' names nor ``x of`` patterns meet)
and whose condition is ``(its condition) and not (the filter's)``.  Everything after it (the
literal formula, the rule index, correlations, the two stages, ``--state``'s digest of a
rule) sees that rule.

* **Reading the condition.** The specification's example writes the events to suppress
  (``condition: selection``, users starting ``adm_``); pySigma ANDs a filter's condition to
  the rule's, so filters written for it say what to keep (``condition: not selection``).
  A condition every top-level AND term of which is a negation, or every selection of which
  is named under a ``not`` (``not a or not b``), is read as pySigma reads it (AND-ed to the
  rule's, as negations only: ``not (a and b)``); any other as the specification's example
  (``and not (...)``).  Either way the filter suppresses what its author meant.
* **Which rules.** A reference resolves as a correlation's does (``collection``); a v1 collection's shared
  id applies the filter to each of its rules within the filter's logsource (reported when none is), as
  ``rules: any`` does.  pySigma
  skips in silence a reference to no loaded rule, to a correlation, or to a rule whose
  logsource is not within the filter's; here each is reported (``unapplied``: a warning,
  an error with ``--strict``) and the rest of the filter applies.  ``rules: any`` applies
  to every detection rule within the filter's logsource (pySigma's extension); within none, it
  is reported alike.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

import attrs

from .collection import References
from .compile import compile_selection
from .condition import And, Condition, ConditionError, Node, Not, Or, Ref, expand, top_level_terms
from .modifiers import TestBudget
from .rule import FilterRule, Rule, shown

_LOGSOURCE_KEYS = ("category", "product", "service")


@attrs.frozen
class AppliedFilter:
    """A filter as one rule took it: what ``explain`` says of it."""

    id: str
    title: str
    path: str
    written: str  # the filter's condition as written
    keeps: bool  # read as pySigma reads it: its condition says which events to keep
    suppress: Node  # over the renamed selections: the rule's event is dropped where this holds
    # the nodes AND-ed to the rule's terms (``explain`` takes them as true to see what the rule alone meets)
    added: tuple = ()


def check_filter(document: FilterRule, placeholders=None) -> None:
    """Compile the filter's selections once, so that a malformed one is the filter's error (naming
    its file), not an error of each rule it applies to."""
    budget = TestBudget()
    for name, value in document.detection.items():
        compile_selection(name, value, document.path, placeholders, budget)


def covers(outer: dict, inner: dict) -> bool:
    """Whether a rule of logsource ``inner`` is within ``outer`` (pySigma's test: each of category,
    product and service ``outer`` gives, the rule gives alike; letter case aside here)."""
    def norm(value):
        return [str(v).strip().lower() for v in value] if isinstance(value, list) else str(value).strip().lower()

    for key in _LOGSOURCE_KEYS:
        wanted = outer.get(key)
        if wanted is None:
            continue
        have = norm(inner.get(key)) if inner.get(key) is not None else None
        if have is None or norm(wanted) != have and not (isinstance(have, list) and norm(wanted) in have):
            return False
    return True


def apply_filters(rules: list, filters: list, others: Iterable,
                  unapplied: Callable[[FilterRule, str], None]) -> list:
    """``rules`` (``Rule``) with every filter of ``filters`` that names them applied, in load order.

    ``others`` are the other documents a reference may find (correlations, filters): a filter does
    not apply to them.  A reference that applies to nothing is handed to ``unapplied`` with a
    one-line reason (which may raise)."""
    references = References(list(rules) + list(others) + list(filters))
    chosen = {rule.id: [] for rule in rules}
    for document in filters:
        if document.rules is None:
            targets = [rule for rule in rules if covers(document.logsource, rule.logsource)]
            if not targets:  # a misspelt logsource suppressed nothing, in silence
                unapplied(document, f"filter {document.path}: rules: any, but no loaded rule is within its "
                                    f"logsource {_logsource(document.logsource)}; applied to none")
        else:
            targets = []
            for written in document.rules:
                found = references.find(written)
                shared = references.collection_of(found)
                if shared is not None:  # a collection's id: each of its rules within the filter's logsource
                    within = [rule for rule in found if covers(document.logsource, rule.logsource)]
                    if not within:
                        unapplied(document, f"filter {document.path}: no rule of the collection {shown(written)} is "
                                            f"within its logsource {_logsource(document.logsource)}; not applied there")
                    targets += within
                    continue
                why = _not_applied(document, written, found, references.ambiguous(found))
                if why:
                    unapplied(document, f"filter {document.path}: {why}; not applied there")
                    continue
                targets.append(found[0])
        for rule in targets:
            if document not in chosen[rule.id]:
                chosen[rule.id].append(document)
    return [filtered(rule, chosen[rule.id]) if chosen[rule.id] else rule for rule in rules]


def _not_applied(document: FilterRule, written: str, found: list, ambiguous: bool):
    """Why a reference does not apply the filter (None: it does)."""
    if not found:
        return f"refers to unknown rule {shown(written)} (no loaded rule has this id or name)"
    if ambiguous:
        return f"the name {shown(written)} is ambiguous: several rules have it"
    target = found[0]
    if not isinstance(target, Rule):
        kind = "filter" if isinstance(target, FilterRule) else "correlation"
        return (f"{shown(written)} is a {kind}: a filter applies to detection rules"
                + (" (filter the rules it counts)" if kind == "correlation" else ""))
    if not covers(document.logsource, target.logsource):
        return (f"rule {shown(written)} ({target.path}) has logsource {_logsource(target.logsource)}, not within "
                f"the filter's {_logsource(document.logsource)}")
    return None


def _logsource(logsource: dict) -> str:
    return "{" + ", ".join(f"{k}: {logsource[k]}" for k in _LOGSOURCE_KEYS if logsource.get(k) is not None) + "}"


def filtered(rule: Rule, documents: list) -> Rule:
    """``rule`` with ``documents`` (``FilterRule``) applied.  A rule whose own condition does not
    expand is left as it is: compiling it reports that."""
    try:
        expression = expand(rule.condition.expression, list(rule.detection))  # its patterns: its own names only
    except ConditionError:
        return rule
    detection, text, applied = dict(rule.detection), rule.condition.text, list(rule.filters)
    search, bar, tail = text.partition("|") if rule.near is not None or rule.condition.aggregation else (text, "", "")
    for document in documents:
        prefix = _prefix(document.id, detection)
        detection.update((prefix + name, value) for name, value in document.detection.items())
        node = _renamed(document.condition.expression, prefix)
        terms = top_level_terms(node)
        negations = all(isinstance(term, Not) for term in terms)
        keeps = negations or _negated_throughout(node)
        # only negations are added: ``--join window`` checks each on every event (a top-level
        # ``not a or not b`` would be a term of its own there, met by any other event in the window)
        added = terms if negations else (Not(_complement(node) if keeps else node),)
        if rule.near is not None:  # its terms keep their places; each event met must pass the filter
            expression = And(tuple(term if negated else And(top_level_terms(term) + tuple(added))
                                   for term, negated in zip(top_level_terms(expression), rule.near)))
        else:
            expression = And(top_level_terms(expression) + tuple(added))
        search = f"({search.strip()}) and " + (str(And(added)) if keeps else f"not ({node})")
        applied.append(AppliedFilter(document.id, document.title, document.path, document.condition.text, keeps,
                                     Not(node) if keeps else node, tuple(added)))
    condition = Condition(search + (f" |{tail}" if bar else ""), expression, rule.condition.aggregation)
    return attrs.evolve(rule, detection=detection, condition=condition, filters=tuple(applied))


def _prefix(filter_id: str, detection: dict) -> str:
    """``filter:<id>:``, the id's blanks and parentheses written ``_`` (a condition's name holds none);
    ``filter:<id>#2:`` (``#3``, ...) when a name of the rule, or of a filter applied before, already
    starts so: two filters whose ids differ only there (``a b``, ``a_b``) took one prefix, clashed,
    and neither applied.  A filter's names keep their first form otherwise (``--state`` digests them)."""
    base = "filter:" + re.sub(r"[\s()]+", "_", filter_id)
    prefix, number = base + ":", 1
    while any(name.startswith(prefix) for name in detection):
        number += 1
        prefix = f"{base}#{number}:"
    return prefix


def _negated_throughout(node: Node, negated: bool = False) -> bool:
    """Whether every selection the condition names is under a ``not`` (``not a or not b``): written,
    as pySigma's filters are, to say which events to keep, whatever its top level."""
    if isinstance(node, Ref):
        return negated
    if isinstance(node, Not):
        return _negated_throughout(node.operand, not negated)
    return all(_negated_throughout(operand, negated) for operand in node.operands)


def _complement(node: Node) -> Node:
    """The negation of ``node`` with its ``not`` pushed inwards (``not a or not b`` -> ``a and b``)."""
    if isinstance(node, Ref):
        return Not(node)
    if isinstance(node, Not):
        return node.operand
    return (Or if isinstance(node, And) else And)(tuple(_complement(operand) for operand in node.operands))


def _renamed(node: Node, prefix: str) -> Node:
    if isinstance(node, Ref):
        return Ref(prefix + node.name)
    if isinstance(node, Not):
        return Not(_renamed(node.operand, prefix))
    return type(node)(tuple(_renamed(o, prefix) for o in node.operands))
