"""A rule set: the rules and the Sigma v2 correlation documents loaded together.

A correlation document refers to rules by ``id`` or ``name``, in any file of the
set, and to other correlations (a chain).  ``resolve`` runs once every file is
read: it turns each document into a ``CorrelationSpec`` whose inputs are stable
rule ids, and works out which rules alert on their own.

* A reference is an ``id`` first, else a ``name``; a name two rules share is
  ambiguous.  An unknown or ambiguous reference, a reference to a correlation
  that could not be loaded, or a cycle of correlations, is a ``RuleError``
  naming it (the caller reports it like any rule that fails to load).
* A referenced rule that is itself a correlation (a v2 document, or a v1 rule
  with a pipe aggregation or ``near``) feeds its **alerts** to the referring
  correlation (``RuleRef.chained``): each alert is one input event there, at
  the time of the alert's last event, carrying the inner correlation's group
  values under its group-by names.  A group-by field (or the value field) of
  the outer correlation that the inner one does not group by is read from the
  inner alert's events (``correlate.carried_fields``): the specification's
  temporal_ordered example groups by ``User`` over a correlation grouped by
  ``ComputerName``.
* ``generate`` (default false, as the specification has it): the referenced
  rules do not alert on their own; their matches still enrich events and feed
  the correlation.  A rule referenced by several correlations alerts on its own
  when one of them says ``generate: true``.
"""

from __future__ import annotations

import uuid
from typing import Callable, Iterable, Optional

import attrs

from .compile import Plan
from .correlation import CorrelationSpec, RuleRef, Threshold
from .rule import CorrelationRule, RuleError, shown

# Correlations of correlations of ... at most this deep (SigmaHQ's go two deep): each event of the
# innermost moves the time of every one outside it, so a chain of thousands cost seconds an event.
MAX_CHAIN = 100


@attrs.frozen
class Target:
    """What one reference of a correlation document resolved to."""

    written: str  # the reference as written (an id or a name)
    id: str  # the stable id it resolved to
    title: str
    correlation: Optional[CorrelationSpec]  # the referenced rule's own correlation; None: a plain rule
    also: tuple = ()  # a collection's shared id: the ids of its other rules, read as this one input

    @property
    def ids(self) -> tuple:
        """Every rule this reference reads."""
        return (self.id,) + self.also


@attrs.frozen
class CorrelationPlan:
    """A resolved correlation document: its metadata (``rule``, for alerts), its spec, and what
    each reference resolved to (for ``explain``)."""

    rule: CorrelationRule
    spec: CorrelationSpec
    targets: tuple  # of Target, in the order written


class RuleSet(list):
    """The compiled rules, a list of ``Plan`` as ever, with what the correlation documents
    loaded with them add: ``correlations`` (``CorrelationPlan``, inner ones first) and
    ``quiet``, the ids of rules (and correlations) that feed a correlation without
    ``generate`` and so do not alert on their own; and ``filters``, the global filters loaded
    (already applied to the rules they name, ``filters.apply_filters``).  ``--min-level`` and
    ``--status`` and the other selection options (``selection.select``) add ``selection``, ``deselected``
    (id -> why, loaded quiet to feed a kept correlation, and in ``quiet`` too), ``left_out`` (id ->
    ``LeftOut``, not loaded), ``unmatched`` (the excluded ids that name no rule of the set) and
    ``unmatched_tags`` (the ``--tag`` and ``--exclude-tag`` no rule of the set has)."""

    selection = None
    deselected: dict = {}
    left_out: dict = {}
    unmatched: tuple = ()
    unmatched_tags: tuple = ()

    def __init__(self, plans: Iterable[Plan] = (), correlations: Iterable[CorrelationPlan] = (),
                 quiet: Iterable[str] = (), filters: Iterable = ()):
        super().__init__(plans)
        self.correlations = list(correlations)
        self.quiet = frozenset(quiet)
        self.filters = list(filters)


def canonical_uuid(text: str) -> Optional[str]:
    """``text`` as a canonical UUID when it is one (any letter case, with or without braces), else None."""
    try:
        return str(uuid.UUID(text)) if isinstance(text, str) and len(text) >= 32 else None
    except ValueError:
        return None


class References:
    """Where a reference (a correlation's or a filter's ``rules``) finds the document it names, as pySigma
    does: an id, a UUID in any letter case, else a name (several may share one: ambiguous to the caller),
    else the title of a rule with neither id nor name (``rule._metadata`` made the title its id), which a
    reference finds only when no document has the text as its id or name.  The id a v1 collection's rules
    share (``Rule.collection``: they are ``<id>``, ``<id>#3``, ...) names every one of them, as pySigma's
    filters take each rule of that id; ``<id>#3`` names one."""

    def __init__(self, entries: Iterable, document_of: Callable = lambda entry: entry):
        self._by_id, self._by_title, self._by_name, self._collections = {}, {}, {}, {}
        self._document_of = document_of
        for entry in entries:
            document = document_of(entry)
            (self._by_title if document.name is None and document.id == document.title
             else self._by_id)[document.id] = entry
            if document.name is not None:
                self._by_name.setdefault(document.name, []).append(entry)
            if getattr(document, "collection", None) is not None:
                self._collections.setdefault(document.collection, []).append(entry)
        self._by_uuid = {key: entry for key, entry in
                         ((canonical_uuid(rule_id), entry) for rule_id, entry in self._by_id.items()) if key}
        self._collections.update({key: entries for key, entries in
                                  ((canonical_uuid(shared), entries) for shared, entries in self._collections.items())
                                  if key and key not in self._collections})

    def find(self, written: str) -> list:
        """Every entry ``written`` names: one, none, the rules of a collection (its shared id), or several
        (a name they share: ``ambiguous``)."""
        if written in self._by_id:
            found = [self._by_id[written]]
        else:
            canonical = canonical_uuid(written)
            found = [self._by_uuid[canonical]] if canonical in self._by_uuid else \
                self._by_name.get(written) or ([self._by_title[written]] if written in self._by_title else [])
        if len(found) == 1:  # the collection's first rule, named by the id its rules share: all of them
            document = self._document_of(found[0])
            if getattr(document, "collection", None) == document.id:
                return list(self._collections[document.id])
        if not found:  # its first rule failed to load: the others still share the id
            found = list(self._collections.get(written) or self._collections.get(canonical_uuid(written), []))
        return found

    def ambiguous(self, found: list) -> bool:
        """Whether ``find``'s entries are documents that share a name, not the rules of one collection."""
        shared = {getattr(self._document_of(entry), "collection", None) for entry in found}
        return len(found) > 1 and (len(shared) > 1 or None in shared)

    def collection_of(self, found: list) -> Optional[str]:
        """The id ``find``'s entries share as a collection's rules; None: they are one document."""
        return None if len(found) < 2 or self.ambiguous(found) else self._document_of(found[0]).collection


def resolve(plans: list, documents: list, on_error: Callable[[CorrelationRule, RuleError], None]) -> RuleSet:
    """Resolve ``documents`` (``CorrelationRule``) against ``plans`` and each other.

    A document that cannot be resolved is handed to ``on_error`` (which may raise) and left
    out; so, in turn, is every document that refers to it."""
    references = References(list(plans) + list(documents), lambda e: e.rule if isinstance(e, Plan) else e)
    done, failed, order, depths = {}, {}, [], {}  # depths: a correlation's chain, 1 when it reads rules only

    def lookup(document: CorrelationRule, written: str) -> list:
        """The entry ``written`` names, or the rules of the collection it names (one input of the correlation)."""
        found = references.find(written)
        if references.ambiguous(found):
            where = ", ".join(entry.rule.path if isinstance(entry, Plan) else entry.path for entry in found[:3])
            raise RuleError(f"rule {document.path}: the name {shown(written)} is ambiguous: several rules have it "
                            f"({where})")
        if not found:
            raise RuleError(f"rule {document.path}: refers to unknown rule {shown(written)} (no loaded rule has "
                            "this id or name)")
        chained = [entry.rule.id for entry in found if isinstance(entry, Plan) and entry.correlation is not None]
        if len(found) > 1 and chained:  # one input reads either rules' detections or a correlation's alerts
            raise RuleError(f"rule {document.path}: {shown(written)} names the rules of a collection, and "
                            f"{shown(chained[0])} of them counts events itself: name its rules one by one "
                            "(<id>#N)")
        return found

    def visit(document: CorrelationRule, path: tuple) -> Optional[CorrelationPlan]:
        if document.id in done:
            return done[document.id]
        if document.id in failed:
            return None
        try:
            if document.id in path:
                cycle = " -> ".join(shown(i) for i in path[path.index(document.id):] + (document.id,))
                raise RuleError(f"rule {document.path}: correlations refer to each other in a cycle: {cycle}")
            targets, depth = [], 1
            for written in document.rules:
                entry, *others = lookup(document, written)
                if isinstance(entry, Plan):
                    targets.append(Target(written, entry.rule.id, entry.rule.title, entry.correlation,
                                          tuple(other.rule.id for other in others)))
                    continue
                deeper = f"rule {document.path}: correlations of correlations more than {MAX_CHAIN} deep"
                if len(path) + 2 > MAX_CHAIN:  # those around it, it and the one it reads: not visited (recursion)
                    raise RuleError(deeper)
                inner = visit(entry, path + (document.id,))
                if inner is None:
                    if document.id in failed:  # a cycle through this document: reported once, for it
                        return None
                    raise RuleError(f"rule {document.path}: refers to correlation {shown(written)}, which could "
                                    "not be loaded")
                depth = max(depth, depths[entry.id] + 1)
                if depth > MAX_CHAIN:
                    raise RuleError(deeper)
                targets.append(Target(written, inner.spec.id, inner.rule.title, inner.spec))
            plan = CorrelationPlan(document, _spec(document, tuple(targets), lambda w: lookup(document, w)),
                                   tuple(targets))
        except RuleError as error:
            failed[document.id] = error
            on_error(document, error)
            return None
        done[document.id], depths[document.id] = plan, depth
        order.append(plan)
        return plan

    for document in documents:
        visit(document, ())
    referenced, generated = set(), set()
    for plan in order:
        ids = {rule_id for target in plan.targets for rule_id in target.ids}
        (generated if plan.rule.generate else referenced).update(ids)
    return RuleSet(plans, order, referenced - generated)


def _spec(document: CorrelationRule, targets: tuple, lookup) -> CorrelationSpec:
    """The ``CorrelationSpec`` of a document whose references resolved to ``targets``."""
    where = f"rule {document.path}"
    ids = set()  # a set: the 20,000 rules one correlation named took seconds here, a list read once for each
    twice = next(((t, i) for t in targets for i in t.ids if i in ids or ids.add(i)), None)
    if twice is not None:
        raise RuleError(f"{where}: {shown(twice[0].written)} refers to rule {shown(twice[1])} a second time")
    aliases = []
    for alias, mapping in document.aliases:
        pairs = []
        for written, field in mapping:
            for entry in lookup(written):  # a collection's shared id: the field of each of its rules
                rule_id = entry.rule.id if isinstance(entry, Plan) else entry.id
                if rule_id not in ids:
                    raise RuleError(f"{where}: alias {shown(alias)} names rule {shown(written)}, which the "
                                    "correlation does not refer to")
                other = next((f for i, f in pairs if i == rule_id and f != field), None)
                if other is not None:  # by id and by name: the last written won in silence
                    raise RuleError(f"{where}: alias {shown(alias)} gives rule {shown(rule_id)} two fields, "
                                    f"{shown(other)} and {shown(field)}")
                pairs.append((rule_id, field))
        aliases.append((alias, tuple(pairs)))
    bounds = document.condition or (("gte", len(targets)),)  # temporal kinds: every referenced rule
    try:
        spec = CorrelationSpec(
            id=document.id, title=document.title, kind=document.kind,
            rules=tuple(RuleRef(t.id, None, t.written, chained=t.correlation is not None, also=t.also)
                        for t in targets),
            timespan_ns=document.timespan_ns, condition=Threshold(tuple(bounds)), group_by=document.group_by,
            field=document.field, aliases=tuple(aliases), generate=document.generate)
    except ValueError as error:
        raise RuleError(f"{where}: {error}") from None
    return spec
