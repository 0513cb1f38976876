"""Correlation IR: what a correlation asks of a stream of Detection records.

Every way a rule can correlate events has one typed shape, ``CorrelationSpec``:
the seven kinds of Sigma v2 correlation documents, and the legacy pipe
aggregation (``... | count(Computer) > 2`` with ``timeframe``), which
``from_legacy`` compiles to it.  The correlate stage runs specs; it never sees
rule syntax.  To add a kind: name it in ``KINDS`` here, give it a window shape
in ``correlate/windows.py``.
"""

from __future__ import annotations

import operator
from typing import Optional

import attrs

from .condition import Aggregation, shown_number

# kind -> what the condition is compared with, per group and window
KINDS = {
    "event_count": "the number of events",
    "value_count": "the number of distinct values of the field",
    "temporal": "the number of referenced rules seen",
    "temporal_ordered": "the number of referenced rules seen in their order",
    "value_sum": "the sum of the field",
    "value_avg": "the mean of the field",
    "value_percentile": "the share in percent of the window's events holding the field's rarest value",
    # legacy v1 aggregations that v2 has no kind for
    "value_min": "the least value of the field",
    "value_max": "the greatest value of the field",
}

# the kinds a Sigma v2 correlation document may name (``type``)
DOCUMENT_KINDS = ("event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg",
                  "value_percentile")
# kinds that count (events, distinct values, inputs): more events never lower the aggregate
COUNTING_KINDS = ("event_count", "value_count", "temporal", "temporal_ordered")
# kinds whose condition compares a field's values (``condition.field``)
FIELD_KINDS = ("value_count", "value_sum", "value_avg", "value_percentile")

OPERATORS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
             "eq": operator.eq, "neq": operator.ne}
_LEGACY_OPERATORS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "==": "eq", "!=": "neq"}
_LEGACY_KINDS = {"sum": "value_sum", "avg": "value_avg", "min": "value_min", "max": "value_max"}


@attrs.frozen
class Threshold:
    """A condition on the aggregate: every bound holds (a range is two bounds)."""

    bounds: tuple  # ((operator name, number), ...)

    def holds(self, value) -> bool:
        return value is not None and all(compare(name, value, number) for name, number in self.bounds)

    def __str__(self) -> str:
        return " and ".join(f"{name} {shown_number(number)}" for name, number in self.bounds) or "always"

    @property
    def lower_bounds_only(self) -> bool:
        """Once it holds, more of what is counted keeps it holding."""
        return all(name in ("gt", "gte") for name, _ in self.bounds)


def compare(name: str, aggregate, number) -> bool:
    """One bound on an aggregate.  A sum, mean or share is a double (the nearest the exact one), so the
    rule's number is taken as the double nearest it too: a sum of exactly 12345678901234567890123 met
    neither ``eq`` nor ``gte`` of that number, which Python compares exactly with the double.  A count is
    an int, compared exactly."""
    if type(aggregate) is float:
        number = float(number)
    return OPERATORS[name](aggregate, number)


@attrs.frozen
class RuleRef:
    """A rule whose detections feed a correlation (one term of it, for a legacy window join)."""

    rule: str  # the detection rule's stable id (a correlation's id when ``chained``)
    term: Optional[int] = None  # legacy window join: the condition term; None: the whole condition
    label: str = ""  # how alerts and ``explain`` name it
    chained: bool = False  # the input is another correlation's alerts, not a rule's detections
    # a v1 collection named by the id its rules share: the ids of its other rules, whose detections are this input's
    also: tuple = ()

    @property
    def key(self) -> tuple:
        """Plain data naming this input in window state and snapshots."""
        return (self.rule, self.term)

    @property
    def rule_ids(self) -> tuple:
        """Every rule (or correlation) whose detections (or alerts) are this input."""
        return (self.rule,) + self.also

    def hit(self, rule: str, terms: tuple) -> bool:
        return (rule == self.rule or rule in self.also) and (self.term is None or self.term in terms)


@attrs.frozen
class LegacyForm:
    """How a v1 rule wrote its correlation, kept for the alert record it has always had."""

    join: str  # "window" or "event"
    condition: str  # the rule's condition text
    aggregation: Optional[Aggregation]


@attrs.frozen
class CorrelationSpec:
    id: str
    title: str
    kind: str
    rules: tuple  # of RuleRef
    timespan_ns: int
    condition: Threshold
    group_by: tuple = ()  # field (or alias) names; the group is their values
    field: Optional[str] = None  # the aggregated field (value_* kinds)
    aliases: tuple = ()  # ((alias, ((rule id, field), ...)), ...)
    generate: bool = False  # the referenced rules also alert on their own
    require_each: bool = False  # every referenced rule must occur in the window
    legacy: Optional[LegacyForm] = None
    # inputs that must *not* occur in a window that fires (the ``and not x`` of a legacy ``near``)
    absent: tuple = ()  # of RuleRef
    # alias -> {rule id: field}: ``field_for`` runs for each detection, and an alias of 20,000 rules made
    # into a dict there took 1.4 ms a detection
    _alias_fields: dict = attrs.field(init=False, eq=False, repr=False, factory=dict)

    def __attrs_post_init__(self):
        object.__setattr__(self, "_alias_fields", {alias: dict(mapping) for alias, mapping in reversed(self.aliases)})
        if self.kind not in KINDS:
            raise ValueError(f"unknown correlation kind {self.kind!r}")
        if not self.rules:
            raise ValueError("a correlation refers to at least one rule")
        keys = [ref.key for ref in self.rules + self.absent]
        if len(set(keys)) != len(keys):
            raise ValueError("a correlation refers to the same rule more than once")

    @property
    def monotone(self) -> bool:
        """More events in a window can only keep its condition holding: a count or a number of
        distinct values or inputs with lower bounds only, and no input that must be absent.
        Such a window can alert on the event that completes it (``--early-alerts``)."""
        return self.kind in COUNTING_KINDS and self.condition.lower_bounds_only and not self.absent

    @property
    def anchored(self) -> bool:
        """A count with an upper bound (``lt``, ``lte``, ``eq``, ``neq``, a range): the window ending
        at a group's first event holds it alone, and "fewer than 3 in 10 s" must not hold of it.  So
        a window starts at the group's earliest event not yet taken, s, covers ``[s, s + timespan]``,
        and is judged once complete (``Correlator._judge``)."""
        return self.kind in COUNTING_KINDS and not self.condition.lower_bounds_only

    @property
    def inputs(self) -> tuple:
        """Every input whose detections the correlation takes: ``rules`` and ``absent``."""
        return self.rules + self.absent

    @property
    def chained(self) -> tuple:
        """The ids of the correlations whose alerts feed this one."""
        return tuple(dict.fromkeys(ref.rule for ref in self.rules if ref.chained))

    def kind_meaning(self) -> str:
        return KINDS[self.kind]

    def field_for(self, name: str, rule: str) -> str:
        """The event field behind ``name`` in the detections of ``rule`` (aliases resolved)."""
        mapping = self._alias_fields.get(name)
        return name if mapping is None else mapping.get(rule, name)

    @property
    def read_names(self) -> tuple:
        """The names it reads from its inputs' events: its group-by fields and its value field."""
        return self.group_by + ((self.field,) if self.field else ())

    def needed_fields(self, rule: str, carried: tuple = ()) -> tuple:
        """Event fields the detections of ``rule`` must carry for this correlation, and for the
        ``carried`` names its alerts take from their events (``correlate.carried_fields``)."""
        names = self.read_names + carried
        return tuple(dict.fromkeys(self.field_for(name, rule) for name in names))


def from_legacy(rule_id: str, title: str, condition: str, aggregation: Optional[Aggregation],
                timeframe_ns: Optional[int], term_labels: tuple, join: str,
                near: Optional[tuple] = None) -> Optional[CorrelationSpec]:
    """A v1 rule's correlation, or None for a rule that alerts on single events.

    An aggregation becomes its kind (``count()`` event_count, ``count(f)``
    value_count, ``sum``/``avg``/``min``/``max`` value_*); a window join of
    several terms without one becomes temporal.  Under a window join each term
    is its own input and all must occur in the window (``require_each``).

    ``near`` (``search | near a and not b``, read by ``rule.near_condition``):
    one flag per term, True for a term that must not occur.  It becomes a
    temporal correlation over the terms: the search expression and every
    ``near`` term in one window, and no event of a negated term in it.
    """
    form = LegacyForm(join, condition, aggregation)
    if near is not None:
        present = tuple(RuleRef(rule_id, i, label) for i, (label, negated)
                        in enumerate(zip(term_labels, near)) if not negated)
        absent = tuple(RuleRef(rule_id, i, "not " + label) for i, (label, negated)
                       in enumerate(zip(term_labels, near)) if negated)
        return CorrelationSpec(rule_id, title, "temporal", present, timeframe_ns or 0,
                               Threshold((("gte", len(present)),)), require_each=True, legacy=form, absent=absent)
    refs = tuple(RuleRef(rule_id, i, label) for i, label in enumerate(term_labels))
    if aggregation is None:
        if join != "window" or len(refs) < 2 or not timeframe_ns:
            return None
        return CorrelationSpec(rule_id, title, "temporal", refs, timeframe_ns,
                               Threshold((("gte", len(refs)),)), require_each=True, legacy=form)
    if aggregation.function == "count":
        kind = "value_count" if aggregation.field else "event_count"
    else:
        kind = _LEGACY_KINDS[aggregation.function]
    threshold = Threshold(((_LEGACY_OPERATORS[aggregation.operator], aggregation.threshold),))
    group_by = (aggregation.group_by,) if aggregation.group_by else ()
    return CorrelationSpec(rule_id, title, kind, refs, timeframe_ns or 0, threshold, group_by,
                           aggregation.field, require_each=True, legacy=form)
