"""Which rules of a loaded rule set alert: ``--min-level`` and ``--status``.

Loading all of SigmaHQ alerts on many benign events through its low and informational rules;
a user chooses what alerts, as Hayabusa's ``--min-level`` and Chainsaw's ``--status`` do.

The selection decides what **alerts**, never what a kept correlation sees:

* a rule or correlation the selection keeps is loaded as ever (it may still be quiet: a
  correlation refers to it without ``generate``);
* one it leaves out, but that a kept correlation reads (directly, or through a correlation of
  correlations), is loaded **quiet**: its matches feed that correlation, and it does not alert;
* one it leaves out that nothing kept reads is not loaded at all, so it costs no matching.

A rule without a level, or with one that is none of Sigma's five, is kept by ``--min-level``
(it cannot be placed below anything); one without a status is kept by ``--status``.  Both are
compared without regard to letter case.  The selection never makes a rule alert that would not
alert without it: a rule kept that feeds a correlation left out without ``generate`` stays quiet.
"""

from __future__ import annotations

from typing import Optional

import attrs

from .collection import RuleSet

LEVELS = ("informational", "low", "medium", "high", "critical")  # lowest first
STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")


class SelectionError(ValueError):
    """A bad ``--min-level`` or ``--status``; the message is one line."""


@attrs.frozen
class Selection:
    """``--min-level`` (one of ``LEVELS``, None: any) and ``--status`` (a subset of ``STATUSES``, None: any)."""

    min_level: Optional[str] = None
    statuses: Optional[frozenset] = None

    def __bool__(self) -> bool:
        return self.min_level is not None or self.statuses is not None

    def options(self) -> str:
        """The options as a user writes them (``--min-level high --status stable,test``)."""
        given = [f"--min-level {self.min_level}"] if self.min_level is not None else []
        if self.statuses is not None:
            given.append("--status " + ",".join(s for s in STATUSES if s in self.statuses))
        return " ".join(given)

    def why_left_out(self, rule) -> Optional[str]:
        """Why the rule or correlation (its metadata) does not alert under this selection; None: it may."""
        level = (rule.level or "").strip().lower()
        if self.min_level is not None and level in LEVELS and LEVELS.index(level) < LEVELS.index(self.min_level):
            return f"level {level} is below --min-level {self.min_level}"
        status = (rule.status or "").strip().lower()
        if self.statuses is not None and status and status not in self.statuses:
            return f"status {status} is not in --status {','.join(s for s in STATUSES if s in self.statuses)}"
        return None


def parse_selection(min_level: Optional[str], statuses: Optional[str]) -> Selection:
    """The options as given on the command line; SelectionError names a bad value."""
    level = None
    if min_level is not None:
        level = min_level.strip().lower()
        if level not in LEVELS:
            raise SelectionError(f"--min-level {min_level!r} is not a Sigma level (one of {', '.join(LEVELS)})")
    kept = None
    if statuses is not None:
        names = [name.strip().lower() for name in statuses.split(",")]
        unknown = [name for name in names if name not in STATUSES]
        if not statuses.strip() or unknown:
            what = repr(unknown[0]) if unknown and unknown[0] else "an empty name"
            raise SelectionError(f"--status {statuses!r}: {what} is not a Sigma status (a comma-separated list of "
                                 f"{', '.join(STATUSES)})")
        kept = frozenset(names)
    return Selection(level, kept)


@attrs.frozen
class LeftOut:
    """A rule or correlation the selection left out and nothing kept reads: not loaded."""

    id: str
    title: str
    path: str
    why: str


def select(rule_set: RuleSet, selection: Selection) -> RuleSet:
    """The rule set that alerts as ``selection`` says (see the module's docstring).  The result
    carries ``selection``, ``deselected`` (id -> why, of the rules and correlations loaded quiet only
    to feed a kept correlation) and ``left_out`` (id -> ``LeftOut``, those not loaded)."""
    if not selection:
        return rule_set
    documents = {c.spec.id: c for c in rule_set.correlations}
    metadata = {**{plan.rule.id: plan.rule for plan in rule_set}, **{i: c.rule for i, c in documents.items()}}
    why = {rule_id: selection.why_left_out(rule) for rule_id, rule in metadata.items()}
    kept = {rule_id for rule_id, reason in why.items() if reason is None}
    loaded, pending = set(kept), [rule_id for rule_id in kept if rule_id in documents]
    while pending:  # what kept correlations read, through correlations of correlations
        for target in documents[pending.pop()].targets:
            if target.id not in loaded:
                loaded.add(target.id)
                if target.id in documents:
                    pending.append(target.id)
    deselected = {rule_id: why[rule_id] for rule_id in loaded - kept}
    selected = RuleSet([plan for plan in rule_set if plan.rule.id in loaded],
                       [c for c in rule_set.correlations if c.spec.id in loaded],
                       set(rule_set.quiet & loaded) | set(deselected), rule_set.filters)
    selected.selection, selected.deselected = selection, deselected
    selected.left_out = {rule_id: LeftOut(rule_id, rule.title, rule.path, why[rule_id])
                         for rule_id, rule in metadata.items() if rule_id not in loaded}
    return selected
