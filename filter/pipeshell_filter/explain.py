"""``pipeshell-filter explain``: what a compiled rule does, why one event did or did not match (``--event``),
and why a stream's correlation windows did or did not fire (``--events``)."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import List, Optional

import ujson

from .correlate import alert_detections, spelled_group
from .correlate.correlator import event_key
from .correlate.state import capture
from .detect import event_facts
from .events.fields import MISSING, FieldResolver, lookup_flattened
from .events.timeparse import NS, format_time, parse_time, zoneless
from .events.xml_event import event_to_read
from .io import inputs
from .io.prefilter import needle
from .io.stream import DEFAULT_MAX_LINE, OWN_TYPES, Diagnostics, Filter, Output, load_event
from .sigma.compile import Plan
from .sigma.condition import And, Not, Or, evaluate, top_level_terms
from .sigma.matchers import FieldMatcher, FieldRefMatcher
from .sigma.correlation import compare
from .sigma.logsource import LogsourceTable


def rule_needles(plan: Plan, unknown_logsource: str = "match") -> Optional[list]:
    """What the prefilter looks for on behalf of one rule: its literals, else (when events
    must tell their channel, ``--logsource-unknown skip``) the names of its logsource's
    channels; None when neither can be had."""
    found = plan.prefilter_literals(needle)
    if found is None and unknown_logsource == "skip" and plan.logsource is not None and plan.logsource.channels:
        channels = [needle(channel) for channel in plan.logsource.channels]
        found = None if None in channels else sorted(set(channels))
    return found


def _needles_text(needles: list) -> str:
    """The prefilter's needles as text: the UTF-8 bytes a line must hold, so a rule's non-ASCII literal
    (SigmaHQ writes en dashes, accents, CJK) shows as its characters; it was a UnicodeDecodeError."""
    return ", ".join(repr(n.decode("utf-8", "backslashreplace")) for n in needles)


def _show(value, width: int = 70) -> str:
    if value is MISSING:
        return "(missing)"
    return _clip(_plain(ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)), width)  # as written


def _clip(text: str, width: int = 70) -> str:
    """An event's text cut short, as ``_show`` quotes a field: a 1 MB value is not a 1 MB line."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _clipped_facts(reason: str, facts) -> str:
    """A logsource verdict, which quotes the event's facts (``event has <channel>``), with each cut as
    ``_fact`` cuts it."""
    for value in (facts.channel, facts.event_id, facts.product, facts.service, facts.category):
        if value is not None and len(str(value)) > 70:
            reason = reason.replace(str(value), _clip(str(value)))
    return reason


def describe_event(plans: List[Plan], resolver: FieldResolver, raw: bytes, event: dict, source: str,
                   unknown_logsource: str = "match", gate: tuple = (None, None)) -> str:
    """How one event is read and judged, rule by rule: the answer to "why did it (not) match?".  ``gate``:
    the rule set's block prefilter and rule index (``cli.build_prefilter``), whose verdicts on the line
    are the filter's: whether it is parsed at all, and which rules are tried on it."""
    carried = []
    # Sysmon for Linux in a record, Render_Event_As_XML: its XML's event
    read, problem = event_to_read(raw, event, resolver)
    text_line = not _json_object(raw)  # ``event`` is its XML's (``cli._text_event``), even if the line starts "{"
    prefilter, index = gate  # a line of text is always parsed
    parsed = text_line or prefilter is None or bool(prefilter.spans(raw + b"\n"))
    tried_rules = index.rules_for(raw) if index is not None and parsed and not text_line else None  # None: all
    if text_line:
        carried = ["note      the line is not JSON but holds an event's XML (Sysmon for Linux's syslog file): "
                   "that event is read"]
    elif problem is not None:
        carried = [f"note      {problem}; the record is read as it is"]
    elif read is not event and event.get("System").__class__ is str:
        carried = ["note      the record's System is its event's XML (Fluent Bit's Render_Event_As_XML): "
                   "that event is read" + (", with the record's Message" if "Message" in read else "")]
    elif read is not event:
        carried = ["note      the record's text holds an event's XML: that event is read"]
    if getattr(event, "frame_time", None) is not None:  # ``io.frames.FramedEvent``
        carried.append("note      the line is a Fluent Bit frame [TIME, {record}]: its record is read, at TIME "
                       "where the record has no time of its own")
    # in the evtx shape, at its own time, whatever --profile and --time-field say
    given, resolver = resolver, resolver.reading(read is not event)
    event = read
    view = resolver.view(event)
    chosen = view.profile
    how = "an event's XML, whatever --profile and --time-field say" if resolver is not given else \
        "fixed by --profile" if resolver.fixed else (
        "detected: " + ", ".join(".".join(map(str, p)) for p in chosen.detect) + " present" if chosen.detect
        else "no other profile's paths present")
    origin = "built-in" if chosen.source.startswith(os.path.dirname(__file__)) else chosen.source
    lines = [f"event     {source}", *carried, f"profile   {chosen.name} ({origin}; {how})"]
    if not chosen.detect and not resolver.fixed and not carried:
        lines += _wrapped_hint(resolver, event)
    time_paths = (resolver.time_path,) if resolver.time_path else chosen.time
    found = next(((p, value) for p in time_paths for value in (lookup_flattened(event, p),)  # the first time,
                  if value is not MISSING and parse_time(value) is not None), None)  # as the resolver takes it
    ns = view.time()
    from_frame = ns is not None and getattr(event, "frame_time", None) is not None \
        and resolver.time(dict(event), chosen) is None
    if from_frame:  # none of its own: the frame's
        lines.append(f"time      {format_time(ns)} (from the Fluent Bit frame's TIME: none parsable in the record)")
    elif ns is not None:
        lines.append(f"time      {format_time(ns)} (from {'.'.join(map(str, found[0]))} = {_show(found[1])})"
                     + ("; no zone: taken as UTC" if zoneless(found[1]) else ""))
    else:
        tried = ", ".join(".".join(map(str, p)) for p in time_paths) or "(no time paths)"
        lines.append(f"time      none parsable (tried {tried}): the event would be left out of correlation")
    facts = event_facts(view)
    lines.append(f"logsource product {_fact(facts.product)}, channel {_fact(facts.channel)}, "
                 f"EventID {_fact(facts.event_id)}" + _declared_facts(facts))
    for position, plan in enumerate(plans):
        lines.append(f"rule      {plan.rule.title}")
        if plan.logsource is not None:
            applies, reason = plan.logsource.verdict(facts, unknown_logsource)
            lines.append(f"logsource {'applies' if applies else 'does not apply'}: "
                         f"{_plain(_clipped_facts(reason, facts))}"
                         + ("" if applies else " (the rule is not tried on this event)"))
        fields = []
        for selection in plan.selections:
            for group in selection.alternatives:
                for matcher in group:
                    fields += [name for name in _fields_read(matcher) if name not in fields]
        spec = plan.aggregation
        for extra in (spec.field, spec.group_by) if spec else ():
            if extra and extra not in fields:
                fields.append(extra)
        lines.append("fields:")
        for field in fields:
            where = view.where(field)
            lines.append(f"  {field:<18} {_show(view.get(field))}" + (f"   <- {_plain(where)}" if where else ""))
        applies = plan.logsource is None or plan.logsource.verdict(facts, unknown_logsource)[0]
        matched = plan.match(view)
        lines.append("selections:")
        for selection in plan.selections:
            verdict = "MATCH" if selection.name in matched else "no"
            lines.append(f"  {selection.name:<28} {verdict}")
            for group in selection.alternatives:
                parts = [f"{m.describe()} {'yes' if m.matches(view) else 'no'}" for m in group]
                lines.append("      " + ", ".join(parts))
        mask, negated = plan.term_mask(matched), plan.rule.near or ()
        for i, term in enumerate(plan.terms):
            absent = i < len(negated) and negated[i]
            lines.append(f"  term {i} {'met' if mask >> i & 1 else 'not met'}: "
                         + term.label + (" (a near term that must be absent from the window)" if absent else ""))
        suppressed = plan.rule.filters and _unfiltered_mask(plan, matched) & ~mask
        for applied in plan.rule.filters if suppressed else ():  # not of an event the rule itself misses
            if evaluate(applied.suppress, matched):
                lines.append(f"filtered  out by {applied.title!r} ({applied.path}): "
                             + (f"its condition {applied.written!r} fails here (it says which events to keep)"
                                if applied.keeps else f"its condition {applied.written!r} holds here")
                             + ": the rule does not match this event")
        if mask and applies:
            lines.append("outcome   " + _outcome(plans, plan))
        elif mask:
            lines.append("outcome   none: the rule is not tried on this event (its logsource does not apply)")
        needles = plan.prefilter_literals(needle)
        if needles and text_line:
            lines.append("prefilter the line is not JSON: it is always parsed (the needles are JSON spellings)")
        elif not parsed:
            lines.append("prefilter the line holds no needle of any rule: the filter skips parsing it")
        elif tried_rules is not None and position not in tried_rules:
            lines.append("prefilter the line is parsed (" + ("another rule has no needle: every line is"
                                                             if prefilter is None else "it holds another rule's needle")
                         + "), but holds none of this rule's needles: the rule is not tried on it")
        elif needles:
            lines.append("prefilter the line is a candidate (parsed)")
    return _joined(lines)


def _unfiltered_mask(plan: Plan, matched: frozenset) -> int:
    """The term mask of the rule without its global filters (the nodes they AND-ed to its terms taken as
    true): the terms a filter suppressed are those set here and not in ``plan.term_mask``."""
    added = {node for applied in plan.rule.filters for node in applied.added}

    def holds(node) -> bool:
        if node in added:
            return True
        if isinstance(node, Not):
            return not holds(node.operand)
        if isinstance(node, (And, Or)):
            return (all if isinstance(node, And) else any)(holds(operand) for operand in node.operands)
        return evaluate(node, matched)

    if not all(holds(negative) for negative in plan.filters):
        return 0
    return sum(1 << i for i, term in enumerate(plan.terms) if holds(term.node))


def _fields_read(matcher) -> list:
    """The event's fields a matcher's verdict hangs on: a ``|fieldref`` compares its field with others."""
    if isinstance(matcher, FieldRefMatcher):
        return [matcher.field] + [ref.needle for ref in matcher.tests]
    return [matcher.field] if isinstance(matcher, FieldMatcher) else []


def left_out_of_range(count: int, stage: str) -> str:
    """How many ``--from``/``--to`` left out, as the summary line and ``explain --events`` say it: a correlate
    stage leaves out Detection records, the others matched events."""
    return f"{count} {'detection' if stage == 'correlate' else 'matched event'}{'' if count == 1 else 's'}"


def _fact(value) -> str:
    """A logsource fact of an event (its channel, EventID, a declared category): the event's own text, escaped
    as ``_plain`` escapes it (a line break in it would forge a line of the report)."""
    return _plain(_clip(str(value))) if value else "(unknown)"


def _declared_facts(facts) -> str:
    """The service and category an event declares (its field map, ``--logsource``), and who declared them."""
    if facts.service is None and facts.category is None:
        return f" (declared by {_plain(facts.origin)})" if facts.origin and facts.product else ""
    product = facts.product or (LogsourceTable.builtin().product_of_channel(facts.channel) if facts.channel else None)
    if facts.category is None and facts.service and LogsourceTable.builtin().declared_channels(product, facts.service):
        how = "judged as an event of that service's channel, with its EventID, not its own channel"
    else:
        how = "judged on these declared facts, not its channel or EventID"
    return (f", service {_fact(facts.service)}, category {_fact(facts.category)} (declared by "
            f"{_plain(facts.origin)}; {how})")


def _json_object(raw: bytes) -> bool:
    """Whether a line is a JSON object, as the filter reads one; a line of text may start with a brace."""
    try:
        return isinstance(load_event(raw), dict)
    except (ValueError, OverflowError):
        return False


def _wrapped_hint(resolver: FieldResolver, event: dict) -> list:
    """A collector's wrapper (Fluent Bit's ``{"log": "<line>"}``, Vector's ``message``) reads as a flat
    event that no rule meets: name the key whose text is an event of a shape the filter knows."""
    for key, value in event.items():
        if type(value) is str and value.lstrip().startswith("{"):
            try:
                inner = load_event(value.encode("utf-8", "surrogatepass"))
            except (ValueError, OverflowError):
                continue
            if isinstance(inner, dict) and resolver.profile_for(inner).detect:
                shape = resolver.profile_for(inner).name
                return [f"note      the text in {_plain(_clip(key))} is an event ({shape}): the filter reads it "
                        f"with --line-field {_plain(_clip(key))}"]
    return []


def _outcome(plans, plan: Plan) -> str:
    """What a Detection of ``plan`` leads to, in a rule set that may hold correlation documents."""
    feeds = [c.rule.title for c in getattr(plans, "correlations", ()) if plan.rule.id in c.spec.chained
             or any(plan.rule.id in ref.rule_ids and not ref.chained for ref in c.spec.rules)]
    named = "; feeds correlation " + ", ".join(repr(title) for title in feeds) if feeds else ""
    if plan.correlation is not None:
        return "a Detection for the correlation (see explain without --event)" + named
    deselected = getattr(plans, "deselected", {}).get(plan.rule.id)
    if deselected is not None:
        return f"no alert of its own ({deselected})" + named + " (see explain without --event)"
    if plan.rule.id in getattr(plans, "quiet", ()):
        return "no alert of its own (generate: false)" + named + " (see explain without --event)"
    return "an alert, at once" + named


def describe_rule_set(plans, unknown_logsource: str = "match") -> str:
    """Every compiled rule (``describe_plan``), then every correlation document (``describe_correlation``),
    then what the selection options (``--min-level``, ``--tag``, ...) left out (``sigma.selection``)."""
    quiet = getattr(plans, "quiet", frozenset())
    deselected = getattr(plans, "deselected", {})
    blocks = [describe_plan(plan, unknown_logsource, plan.rule.id in quiet, deselected.get(plan.rule.id))
              for plan in plans]
    blocks += [describe_correlation(c, c.spec.id in quiet, deselected.get(c.spec.id))
               for c in getattr(plans, "correlations", ())]
    left_out = getattr(plans, "left_out", {})
    if left_out:
        blocks.append(_joined([f"left out by {plans.selection.options()}, not loaded (no correlation kept reads "
                               f"them): {len(left_out)}"]
                              + [f"  {gone.title!r} ({gone.id}, {gone.path}): {gone.why}"
                                 for gone in left_out.values()]))
    return "\n".join(blocks)


def _deselected_line(why: str, what: str) -> str:
    """``explain``: a rule or correlation the selection left out, loaded only because a kept correlation reads it."""
    return f"alerts    none of its own: {why}; loaded only because a kept correlation reads {what}"


def describe_correlation(correlation, quiet: bool = False, deselected: Optional[str] = None) -> str:
    """A Sigma v2 correlation document as resolved against the rule set (``sigma.collection``):
    kind, referenced rules, group-by, timespan, condition, generate."""
    rule, spec = correlation.rule, correlation.spec
    lines = [
        f"correlation {rule.title}",
        f"id        {rule.id}" + (f"   name: {rule.name}" if rule.name else ""),
        f"file      {rule.path}",
        f"level     {rule.level or '-'}    tags: {', '.join(rule.tags) or '-'}",
        f"type      {spec.kind}: fires when {spec.kind_meaning()} is {spec.condition}",
        "rules" + (" (in this order)" if spec.kind == "temporal_ordered" else ""),
    ]
    for target in correlation.targets:
        inner = target.correlation
        own = [name for name in spec.read_names
               if inner is not None and spec.field_for(name, target.id) not in inner.group_by]
        what = ("a correlation: each of its alerts is one event here, at the time of its last event, with its "
                "group values" + (f" and, one event per distinct value, its events' {', '.join(own)}" if own else "")) \
            if inner is not None else "a rule: each event it matches"
        shown_id = "" if target.written == target.id and not target.also else f" = {', '.join(target.ids)}"
        lines.append(f"  {target.written}{shown_id} ({target.title!r}): {what}")
    if spec.group_by:
        lines.append("group-by  " + ", ".join(spec.group_by) + "   (one window per distinct combination of values; "
                     "an event without a field is in the group of its absence)")
    else:
        lines.append("group-by  (none: one window for all events)")
    for alias, mapping in spec.aliases:
        lines.append(f"  alias {alias}: " + ", ".join(f"{field} in {rule_id}" for rule_id, field in mapping))
    if spec.field:
        lines.append(f"field     {spec.field}")
    lines.append(_window(spec))
    lines.append("generate  " + ("true: the referenced rules also alert on their own" if spec.generate else
                                 "false: the referenced rules do not alert on their own (their matches still "
                                 "enrich events)"))
    if deselected is not None:
        lines.append(_deselected_line(deselected, "its alerts"))
    elif quiet:
        lines.append("alerts    none of its own: it feeds another correlation without generate")
    return _joined(lines)


def _window(spec) -> str:
    """Which windows a correlation judges, and when: a count with an upper bound (``anchored``) is
    judged on the timespan after a group's earliest event, not on windows ending at each event."""
    seconds = f"{spec.timespan_ns / NS:g}s"
    if spec.anchored:
        return (f"window    [s, s + {seconds}] from the group's earliest event not yet taken (s), both ends "
                f"included; judged once complete (the watermark passes s + {seconds}), an alert at s + {seconds}; "
                "its events are taken, fired or not")
    return (f"window    [t - {seconds}, t], both ends included; evaluated at each event time once the watermark "
            "(newest event time - lateness) passes it; an alert consumes its events")


def _expanded(plan: Plan) -> str:
    """The condition with its ``x of`` expanded.  A ``near`` rule's expression is the AND of its
    terms, a negated one without its ``not``: written back as ``search | near a and not b``, not as
    an AND that says the event that must be absent must occur."""
    if plan.rule.near is None:
        return str(plan.expression)
    first, *terms = top_level_terms(plan.expression)
    near = [str(Not(term)) if negated else f"({term})" if isinstance(term, (And, Or)) else str(term)
            for term, negated in zip(terms, plan.rule.near[1:])]
    return f"{first} | near {' and '.join(near)}"


def describe_plan(plan: Plan, unknown_logsource: str = "match", quiet: bool = False,
                  deselected: Optional[str] = None) -> str:
    """A compiled rule: selections, condition, logsource, correlation, prefilter."""
    rule = plan.rule
    lines = [
        f"rule      {rule.title}",
        f"id        {rule.id}",
        f"file      {'(built-in) ' if rule.builtin else ''}{rule.path}",
        f"level     {rule.level or '-'}    tags: {', '.join(rule.tags) or '-'}",
        f"condition {rule.condition.text}",
        f"expanded  {_expanded(plan)}",
    ]
    for applied in rule.filters:
        reading = (f"its condition {applied.written!r} says which events to keep (as pySigma reads a negation)"
                   if applied.keeps else f"events where its condition {applied.written!r} holds are suppressed")
        lines.append(f"filter    {applied.title!r} ({applied.path}): {reading}; its selections are named "
                     f"filter:{applied.id}:<name> here")
    lines.append("selections:")
    for selection in plan.selections:
        lines.append(f"  {selection.name}")
        for i, group in enumerate(selection.alternatives):
            prefix = "    or " if i else "       "
            lines.append(prefix + " AND ".join(_describe_matcher(m) for m in group))
    lines.append(f"join      {plan.join}")
    if plan.join == "window":
        lines.append("  an alert needs, inside one window, at least one event meeting each term:")
    else:
        lines.append("  each event must satisfy the whole condition:")
    negated = plan.rule.near or ()
    for i, term in enumerate(plan.terms):
        absent = i < len(negated) and negated[i]
        lines.append(f"  term {i}: not {term.label} (no event meeting it may be in the window)" if absent
                     else f"  term {i}: {term.label}")
    for node in plan.filters:
        lines.append(f"  every event must also satisfy: {node}")
    lines.append("logsource " + (plan.logsource.describe() if plan.logsource is not None else "(any event)"))
    correlation = plan.correlation
    if correlation is None and deselected is not None:
        lines.append(_deselected_line(deselected, "its matches"))
    elif correlation is None and quiet:
        lines.append("alerts    none of its own: its matches feed a correlation without generate")
    elif correlation is None:
        lines.append("alerts    on each event that meets the condition, at once (no correlation, no watermark)")
    else:
        spec = plan.aggregation
        lines.append(f"aggregate {spec if spec else '(none: every window meeting the terms alerts)'}"
                     + ("   [count(field) counts distinct non-null values]" if spec and spec.field and
                        spec.function == "count" else ""))
        group = ", ".join(correlation.group_by) or "(one group)"
        lines.append(f"correlate {correlation.kind} of {correlation.field or 'events'} per {group}, "
                     f"fires when {correlation.kind_meaning()} is {correlation.condition}"
                     + ("; every term must occur" if correlation.require_each and len(correlation.rules) > 1 else "")
                     + (" but the negated ones" if correlation.require_each and correlation.absent else ""))
        if correlation.absent:
            lines.append("near      no event meeting "
                         + ", ".join(ref.label[len("not "):] for ref in correlation.absent)
                         + " may be in the window")
        if deselected is not None:
            lines.append(_deselected_line(deselected, "its alerts"))
        elif quiet:
            lines.append("alerts    none of its own: it feeds another correlation without generate")
        lines.append(_window(correlation))
    needles = rule_needles(plan, unknown_logsource)
    if needles and plan.prefilter_literals(needle) is None:
        lines.append("prefilter the rule has no literal: tried on lines holding its channels' names (any case): "
                     + _needles_text(needles))
    elif needles:
        lines.append("prefilter a line can only match if its bytes hold (any case) one of: "
                     + _needles_text(needles)
                     + " -- or a JSON \\u escape / non-ASCII look-alike of their letters")
    else:
        lines.append("prefilter off: a term holds without any selection, or some selection has no literal "
                     "every match must contain (regex, |exists, null, numbers only)"
                     + ("; with --logsource-unknown skip it would be tried on its channels' lines only"
                        if plan.logsource is not None and plan.logsource.channels and unknown_logsource != "skip"
                        else ""))
    return _joined(lines)


def _describe_matcher(matcher) -> str:
    tests = getattr(matcher, "tests", ())
    shown = " | ".join(f"{t.kind} {t.needle!r}" for t in tests)
    if getattr(matcher, "exists", None) is not None:
        shown = f"exists={matcher.exists}"
    if getattr(matcher, "accepts_null", False):
        shown = (shown + " | " if shown else "") + "null"
    joiner = " (all)" if getattr(matcher, "require_all", False) else ""
    return f"{matcher.describe()}: {shown}{joiner}"


# ------------------------------------------------------------ explain --events: why a window did (not) fire

_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "neq": "!="}
_MEASURES = {"event_count": "count", "value_count": "count({})", "temporal": "rules seen",
             "temporal_ordered": "rules seen in order", "value_sum": "sum({})", "value_avg": "avg({})",
             "value_min": "min({})", "value_max": "max({})", "value_percentile": "rarest share % of {}"}
MAX_LISTED = 100  # events listed per correlation; the rest are counted


def _needs(condition) -> str:
    return " and ".join(f"{_SYMBOLS[name]} {number:g}" for name, number in condition.bounds) or "(always)"


def _span(ns: int) -> str:
    seconds = ns / NS
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _measure(spec) -> str:
    """What the condition is compared with, in a word or two: ``count(Computer)``, ``sum(bytes)``."""
    text = _MEASURES[spec.kind]
    if spec.legacy is not None and spec.kind in ("temporal", "temporal_ordered"):
        text = text.replace("rules", "terms")
    return text.format(spec.field) if spec.field else text.replace("({})", "").replace(" of {}", "")


def _value(value) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _group(spec, group: tuple) -> str:
    if not spec.group_by:
        return "(one group)"
    return ", ".join(f"{name}={'(absent)' if value is None else _plain(value)}"
                     for name, value in zip(spec.group_by, group))


# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional marks,
# embeddings, overrides and isolates (a terminal shows the rest of a line reordered: another number)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _plain(value) -> str:
    """A value from an event (a host, a group value) as one piece of one line of the report: a
    newline in a host name would otherwise start a line that looks like the report's own."""
    return _CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", str(value))


def _joined(lines: list) -> str:
    """The report's lines, one per fact: text from a rule (a title, a field or selection name, a
    group-by) holds what YAML lets it, line breaks and terminal controls too, escaped as ``_plain``
    escapes an event's values (already escaped text is left as it is)."""
    return "\n".join(map(_plain, lines))


def _lines(numbers, unit: str = "line") -> str:
    """``line 3`` or ``lines 3, 7``: the input lines (or .evtx records) of some events; those of none
    (``--stage correlate --state``: restored, read by an earlier run) are counted."""
    numbers = list(numbers)
    restored = sum(1 for n in numbers if n is None)
    numbers = sorted(set(n for n in numbers if n is not None))
    shown = ", ".join(map(str, numbers[:20]))
    text = unit + ("s " if len(numbers) > 1 else " ") + shown + (
        f", ... ({len(numbers)} in all)" if len(numbers) > 20 else "") if numbers else ""
    return text + (", " if text and restored else "") + (f"{restored} restored" if restored else "")


def _listed(values) -> str:
    """A window's hosts or distinct values, the first 20 (a window of thousands was a line of as many)."""
    values = list(values)
    more = f", ... ({len(values)} in all)" if len(values) > 20 else ""
    return ", ".join(map(_plain, values[:20])) + more


def _events(count: int) -> str:
    return f"{count} event" + ("" if count == 1 else "s")


def _shortfall(condition, aggregate) -> float:
    """How far an aggregate is from meeting the condition (0: it meets it)."""
    if aggregate is None:
        return float("inf")
    return sum(abs(aggregate - number) or 1.0 for name, number in condition.bounds
               if not compare(name, aggregate, number))


class _Fed:
    """One input of one correlation: an event (or an inner correlation's alert) and what became of it;
    ``event_line``: with ``--stage correlate``, the line its Detection names (of the match stage's input);
    ``spelled``: its group as the event wrote it (``group`` is the key, its letter case folded)."""

    __slots__ = ("line", "time", "host", "group", "refs", "status", "taken", "dropped", "event_line", "spelled")

    def __init__(self, spec, line, c, host, status, taken=True, dropped=False, event_line=None):
        self.line, self.time, self.host, self.group, self.refs = line, c.time, host, c.group, c.refs
        self.status, self.taken, self.dropped, self.event_line = status, taken, dropped, event_line
        self.spelled = spelled_group(spec, c.group, [c])


def _reference(event: dict) -> tuple:
    """What tells one event from another in a Detection's reference, as the correlator tells them
    (``event_key``), with its ``@timestamp``: that of an inner correlation's alert is a copy of its
    last event's, but its time is its window end."""
    return tuple(str(value) for value in (*event_key(event), event.get("@timestamp")))


class CorrelationTrace:
    """Runs a file of events through the filter itself (``io.stream.Filter`` over a real ``Engine``,
    its output thrown away: detect, then correlate, as the filter does on a file: no settling, a
    flush at the end) and records, per correlation, what fed it, which windows fired, and each other
    group's best window (``Correlator.watch``, read-only).  The engine tells it of each event and
    detection (``Engine.trace``), so that what it reports is what the filter did with the same options.
    ``stage`` "correlate": the file holds a match stage's records (Detections and heartbeats), read as
    ``--stage correlate`` reads them (``Engine.observe``, ``Engine.progress``); an event is then named
    by the input line of its Detection record (the line the record gives, ``event.line``, is of its
    match stage's input: several agents' lines meet)."""

    def __init__(self, engine, unit: str = "line", stage: str = "all"):
        if stage not in ("all", "correlate"):
            raise ValueError(f"explain runs stage all or correlate, not {stage!r}")
        self.engine = engine
        self.unit = unit
        self.stage = stage
        self.heartbeats = self.wire = 0  # wire: a match stage's records read as events (stage all)
        self.agents = {}  # agent -> its heartbeats (stage correlate)
        self.skipped = Counter()  # the filter's diagnostics, by kind: lines it did not take, and why
        self.correlators = list(engine.correlation.correlators)
        self.fed = {id(c): [] for c in self.correlators}
        self.fired = {id(c): [] for c in self.correlators}
        self.best = {id(c): {} for c in self.correlators}  # group -> (rank, t, window_of)
        self.outside = {id(c): {} for c in self.correlators}  # input key -> lines met out of its logsource
        self.untimed = {id(c): [] for c in self.correlators}
        self.alerted = {id(c): set() for c in self.correlators}  # ids of the contributions its alerts took
        self.kept_back = {id(c): [] for c in self.correlators}  # (t, group) of windows an early alert kept back
        self.events = self.unusable = self.lost = 0  # lost: EVTX problems that cost records
        self._titles = {plan.rule.id: plan.rule.title for plan in engine.plans.values()}
        self._titles.update((c.spec.id, c.spec.title) for c in self.correlators)
        self._number = None  # the line of the event being taken
        self._event_line = None  # stage correlate: the line the Detection being taken names
        self._records = {}  # stage correlate: id(Detection) -> (it, its input line)
        self._by_event = {}  # stage correlate: ``_reference`` of a Detection's event -> its first input line
        self._before = {}  # id(correlator) -> its counts before the detection being taken (``_counts``)
        self._groups = {}  # id(correlator) -> ``_grouped``'s index of ``fed`` and ``fired``, and their sizes then
        self.inputs = 1  # files read, merged by event time when several
        self.origins = {}  # several files: line (in merged order) -> its file and line there
        self.restored = None  # ``--state``: the state file's name, once its correlations are taken back
        self.state_notes = []  # what of the saved state was discarded (``Filter.resume``), where its files were read on
        self._filter = None
        self._lines_before = 0
        engine.trace = self
        for correlator in self.correlators:
            correlator.watch = self._watch

    # ---------------------------------------------------------------- running

    def read(self, path, max_line: int = DEFAULT_MAX_LINE, line_field: Optional[str] = None,
             saved: Optional[tuple] = None, merged=None) -> None:
        """The whole file through a ``Filter``, as ``--input path`` reads it (``--max-line-bytes``,
        ``--line-field``), but never live: a pipe is read to its end as a file is, and the end makes
        every window final.  No prefilter: every line is parsed (the prefilter rules out only lines no
        rule can match, so the alerts are the same), and workers would match out of sight.
        ``merged``: ``path`` is a list of files (or one EVTX file), and this function of the Filter gives
        their lines merged by event time, as the filter merges its ``--input`` files (``cli._file_lines``).
        ``saved``: (file name, document) of a state ``--state`` saved: the correlations start from it,
        as a run with ``--state`` does, and nothing is saved (a flush at the end alerts what the
        filter's pause alerts, which keeps the windows open for its next run)."""
        with open(os.devnull, "w") as quiet:
            devnull = os.open(os.devnull, os.O_WRONLY)
            diagnostics = Diagnostics(quiet)
            try:
                stream_filter = self._filter = Filter(self.engine, Output(devnull), diagnostics, "alerts", None,
                                                      workers=0, stage=self.stage)
                stream_filter.line_field = line_field
                if saved is not None:
                    self._restore(stream_filter, *saved)
                if merged is not None:  # several files, or one EVTX file read on from a saved state's place
                    paths = path if isinstance(path, list) else [path]
                    self.inputs = len(paths)
                    stream_filter.repeated_keys = any(map(inputs.is_evtx, paths))
                    stream_filter.process_labelled(merged(stream_filter), max_line)
                elif inputs.is_evtx(path):
                    stream_filter.repeated_keys = True
                    records = inputs.labelled_lines(path, self._lost, max_line)
                    stream_filter.process_labelled(inputs.judged(records, None), max_line)
                else:  # given its path, a saved state's place in it is read on from, as the filter does
                    with open(path, "rb") as handle:
                        stream_filter.run(handle.fileno(), live=False, max_line=max_line, path=path)
                stream_filter.finish(pause=saved is not None)  # with --state, the run ends in a pause
            finally:
                os.close(devnull)
                self.engine.trace = None
                self._filter = None
                for correlator in self.correlators:
                    correlator.watch = None
        self.skipped = diagnostics.counts
        self.state_notes += stream_filter.place_notes
        self._lines_before = stream_filter.lines_start  # less a last line read again whole, grown since
        self.lost += diagnostics.counts["bad_evtx"]  # of merged files (one alone reports to ``_lost``)
        taken = self.events + self.heartbeats + self.skipped["not_detection"] + self.skipped["unknown_rule"] \
            if self.stage == "correlate" else self.events
        self.unusable = stream_filter.lines - stream_filter.lines_start - taken

    def _restore(self, stream_filter, path: str, document: dict) -> None:
        """``--state``: the correlations' saved windows and times taken back, as the filter takes them
        (``cli.resume_state``), and the events they hold listed first, as restored."""
        self.engine.take_once()  # each event taken once, as with --state
        self.state_notes = stream_filter.resume(document)
        self.restored = path
        for correlator in self.correlators:
            saved = capture(correlator)
            held = [detection for _, _, detection in saved["pending"]] + [d for _, d in saved["windows"]]
            for detection in held:
                c = correlator.contribution(detection)
                if c is None:
                    continue
                line = detection.event.get("line")  # stage correlate: of the match stage's input, not this one's
                if self.stage == "correlate":
                    self._records[id(detection)] = (detection, None)  # no record line of this run (``_line_of``)
                self.fed[id(correlator)].append(_Fed(correlator.spec, line if self.stage == "all" else None, c,
                                                     detection.source, "restored from --state (an earlier run's)",
                                                     event_line=None if self.stage == "all" else line))
            self.fed[id(correlator)].sort(key=lambda entry: entry.time)

    def _origin(self, number: int) -> None:
        """Several files: which file and line the line ``number`` (in merged order) is."""
        if self.inputs > 1 and self._filter is not None and self._filter.origin is not None:
            self.origins[number] = self._filter.origin

    def _lost(self, where: str, message: str) -> None:  # a damaged EVTX file: why a correlation may not fire
        if not isinstance(message, inputs.Recovered):  # a damaged header alone lost no record
            self.lost += 1

    @staticmethod
    def _counts(correlator) -> tuple:
        return (correlator.late, correlator.late_dropped, correlator.watermark, correlator.duplicates,
                correlator.arrivals)

    def matched(self, event: dict, number: int, detections: list, carried: bool = False) -> None:
        """``Engine.trace``: a parsed event, with its detections, before they are correlated (``carried``:
        read from its record's XML, ``Engine.process``)."""
        self.events += 1
        self._number = number
        if detections:  # the file and line of an event that may feed a correlation: not of every line read
            self._origin(number)
        kind = event.get("type")
        if kind.__class__ is str and kind in OWN_TYPES:  # a match stage's output, read as an event
            self.wire += 1
        self._out_of_logsource(event, number, {d.rule for d in detections}, carried)
        if detections:
            self._before = {id(c): self._counts(c) for c in self.correlators}

    def received(self, detection, number: int) -> None:
        """``Engine.trace``, ``--stage correlate``: a Detection record (on input line ``number``),
        before the correlate stage takes it."""
        self.events += 1
        self._number, self._event_line = number, detection.event.get("line")
        self._origin(number)
        self._records[id(detection)] = (detection, number)
        self._by_event.setdefault(_reference(detection.event), number)
        self._before = {id(c): self._counts(c) for c in self.correlators}

    def heard(self, heartbeat) -> None:
        """``Engine.trace``, ``--stage correlate``: an agent's heartbeat."""
        self.heartbeats += 1
        self.agents[heartbeat.agent] = self.agents.get(heartbeat.agent, 0) + 1

    def taken(self, detection) -> None:
        """``Engine.trace``: the correlate stage took one detection of the event: what became of it."""
        number = self._number
        takers = [(c, c.contribution(detection)) for c in self.correlators  # as ``Correlation`` routes it:
                  if any(ref.hit(detection.rule, detection.terms) and not ref.chained  # a chained input
                         for ref in c.spec.inputs)]  # takes the inner correlation's alerts, not its rule's events
        if detection.time is None:
            for correlator, _ in takers:
                self.untimed[id(correlator)].append(number)
            return
        for correlator, c in takers:
            counts = self._before[id(correlator)]
            self.fed[id(correlator)].append(self._judged(correlator, c, number, detection.source, *counts))
        self._before = {id(c): self._counts(c) for c in self.correlators}

    def _judged(self, correlator, c, number, host, late, dropped, watermark, duplicates, arrivals) -> _Fed:
        entry = _Fed(correlator.spec, number, c, host, "on time", event_line=self._event_line)
        if correlator.duplicates != duplicates:
            entry.status, entry.taken = "taken already (the same event): left out", False
        elif correlator.arrivals == arrivals:  # the correlator took none of it: the event met another of its rules
            entry.status, entry.taken = "the same event as for another rule just above: counted once", False
        elif correlator.late_dropped != dropped:
            behind = (watermark - c.time) / NS
            entry.taken, entry.dropped = False, True
            if c.time < watermark - correlator.timeframe:
                entry.status = (f"late: {behind:g}s behind the watermark {format_time(watermark)}, older than "
                                f"watermark - {_span(correlator.timeframe)}: left out of correlation")
            else:
                entry.status = (f"late: {behind:g}s behind the watermark {format_time(watermark)}, inside a window "
                                "that already fired: left out of correlation")
        elif correlator.late != late:
            entry.status = (f"late: {(watermark - c.time) / NS:g}s behind the watermark {format_time(watermark)}; "
                            "joined the windows still open")
        return entry

    def _out_of_logsource(self, event: dict, number: int, matched: set, carried: bool) -> None:
        """Events that meet a correlated rule's condition but not its logsource: the detector
        never tries the rule on them."""
        view = None
        for plan in self.engine.plans.values():
            if plan.rule.id in matched or plan.logsource is None or not self.engine.correlation.wants(plan.rule.id):
                continue
            if view is None:
                view = self.engine.resolver.reading(carried).view(event)
                facts = event_facts(view)
            if plan.logsource.applies(facts, self.engine.detector.unknown_logsource):
                continue
            mask, _ = plan.judge(view)
            if not mask:
                continue
            terms = tuple(i for i in range(len(plan.terms)) if mask >> i & 1)
            for correlator in self.correlators:
                for ref in correlator.spec.inputs:
                    if ref.hit(plan.rule.id, terms) and not ref.chained:
                        self.outside[id(correlator)].setdefault(ref.key, []).append(number)

    def _watch(self, correlator, group, t, hit) -> None:
        if hit is not None:
            self.fired[id(correlator)].append(hit)
            self.alerted[id(correlator)].update(map(id, hit.contributions))
            self.best[id(correlator)].pop(group, None)  # what counts now is what comes after the alert
            for outer in self.correlators:  # an inner correlation's alert is an event of the outer ones
                if correlator not in outer.upstream:
                    continue
                for c in map(outer.contribution, alert_detections(hit, outer.carried_from[correlator.spec.id],
                                                                    outer.along_from[correlator.spec.id])):
                    if c is None:
                        continue
                    named = c.detection.event.get("line") if self.stage == "correlate" else None
                    self.fed[id(outer)].append(_Fed(outer.spec, self._line_of(c.detection), c, None,
                                                    f"the alert of {correlator.spec.title!r} (its last event)",
                                                    event_line=named))
            return
        window = correlator.window_of(group, events=False)
        if window is None:  # it met the condition, but shared an event with an early alert: consumed, no alert
            self.kept_back[id(correlator)].append((t, group))
            return
        alerted = self.alerted[id(correlator)]
        if alerted and any(id(c) in alerted for c in correlator.window_of(group)[0]):
            return  # it holds events an early alert took: it can never alert, it is no "best" window
        _, seen, complete, aggregate = window
        spec = correlator.spec
        rank = (0, 0, _shortfall(spec.condition, aggregate)) if complete else \
            (1, -len(seen), _shortfall(spec.condition, aggregate))
        best = self.best[id(correlator)]
        if group not in best or rank < best[group][0]:  # the first of the best: its events only then
            best[group] = (rank, t, correlator.window_of(group))

    # ---------------------------------------------------------------- report

    def report(self) -> str:
        skipped = f", {self.unusable} not read (not a JSON object, or too long or dense to parse: skipped)"
        head = f"events    {self.events} read" if self.stage == "all" else self._records_read()
        if self.inputs > 1:
            head += (f" from {self.inputs} files merged by event time (lines numbered in that order, as the "
                     "filter's alerts number them)")
        blocks = [head + (skipped if self.unusable else "")
                  + (f", records lost to {self.lost} EVTX problem{'' if self.lost == 1 else 's'} (--input says "
                     "which)" if self.lost else "")
                  + f"; lateness {self.engine.correlation.lateness_ns / NS:g}s"
                  + ("; early alerts (a window whose condition can only stay true alerts on the event that "
                     "completes it)" if any(c.early for c in self.correlators) else "")
                  + ("; the correlations' time follows the agents' heartbeats (the least time of the agents still "
                     "sending), not the detections' own sources" if self.heartbeats else "")
                  + (self._pause_said() if self.restored else "; the end of input makes every window final")]
        if self.restored:
            held = sum(1 for entries in self.fed.values() for f in entries if f.status.startswith("restored"))
            blocks.append(f"state     {_plain(self.restored)}: correlations restored, holding {_events(held)} of "
                          f"earlier runs; lines numbered on from {self._lines_before + 1}")
            blocks += [f"state     {_plain(note)}" for note in self.state_notes]
        detector = self.engine.detector
        if detector.between is not None:
            first, end = detector.between
            span = " ".join(part for part in (first is not None and f"from {format_time(first)}",
                                              end is not None and f"before {format_time(end)}") if part)
            blocks.append(f"range     only events {span} are detected (--from/--to): "
                          f"{left_out_of_range(detector.outside, self.stage)} outside it left out, as if they had "
                          "matched nothing")
        if self.wire:
            blocks.append(f"note      {self.wire} of them {'is' if self.wire == 1 else 'are'} a match stage's "
                          "records (Detection, heartbeat), read here as events: explain what a correlate stage "
                          "does with them with --stage correlate")
        if self.stage == "correlate" and not self.events and self.skipped["not_detection"]:
            blocks.append("note      no Detection record in the file: explain a file of events without "
                          "--stage correlate")
        if not self.correlators:
            blocks.append("no correlation in the rule set: every rule alerts on single events")
        blocks += [self._describe(c) for c in self.correlators]
        return "\n".join(blocks)

    def _pause_said(self) -> str:
        """``--state``: the end of input is a pause, as the filter's with ``--state`` (``Engine.pause``)."""
        return ("; the end of input is a pause, as for the filter with --state: a window a flush finds met alerts, "
                "the windows stay open for its next run" + ("; a window of an upper bound whose timespan is not over "
                                                            "waits for it" if any(c.anchored for c in self.correlators)
                                                            else ""))

    def _records_read(self) -> str:
        """``--stage correlate``: what the file held, as the filter took it."""
        text = f"detections {self.events} read"
        if self.heartbeats:
            names = sorted(self.agents, key=str)
            shown = ", ".join(map(_plain, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            text += (f", {self.heartbeats} heartbeat{'' if self.heartbeats == 1 else 's'} from "
                     f"{len(names)} agent{'' if len(names) == 1 else 's'} ({shown})")
        other, unknown = self.skipped["not_detection"], self.skipped["unknown_rule"]
        if other:
            text += f", {other} not a Detection or heartbeat record (skipped)"
        if unknown:
            text += (f", {unknown} Detection{'' if unknown == 1 else 's'} of rules not loaded here (dropped: both "
                     "stages need the same --rule)")
        return text

    def _line_of(self, detection):
        """How the report names the event of a detection: its line of input; with --stage correlate,
        its Detection record's (an inner correlation's alert: that of its last event)."""
        if self.stage == "all":
            return detection.event.get("line")
        found = self._records.get(id(detection))
        if found is not None and found[0] is detection:
            return found[1]
        return self._by_event.get(_reference(detection.event), detection.event.get("line"))

    def _label(self, spec, key, short: bool = False) -> str:
        """How an input is named: ``term '1 of SERVER*'``, ``rule failed_login ('Failed login')``."""
        for ref in spec.inputs:
            if ref.key != key:
                continue
            if ref.term is not None:
                return f"term {ref.label[len('not '):] if ref in spec.absent else ref.label!r}"
            title = self._titles.get(ref.rule, ref.label)
            named = f"{'correlation' if ref.chained else 'rule'} {ref.label or ref.rule}"
            return named if short or title == ref.label else f"{named} ({title!r})"
        return str(key)

    def _describe(self, correlator) -> str:
        spec, key = correlator.spec, id(correlator)
        fed, fired, best = self.fed[key], self.fired[key], self.best[key]
        per = ("per " + ", ".join(spec.group_by)) if spec.group_by else "one group"
        lines = [f"correlation {spec.title}",
                 f"  fires when {_measure(spec)} {_needs(spec.condition)} within {_span(spec.timespan_ns)}, {per}"
                 + ("; every input must occur" if spec.require_each and len(spec.rules) > 1 else "")
                 + (" but those that must be absent" if spec.require_each and spec.absent else "")
                 + ("; a window starts at the group's earliest event not yet taken, is judged once the "
                    "timespan after it is over, and takes its events, fired or not" if spec.anchored else "")]
        quiet = spec.id in self.engine.quiet  # as ``Engine._alerts``: its hits are events of the outer ones only
        if quiet:
            outer = ", ".join(repr(o.spec.title) for o in self.correlators if correlator in o.upstream)
            deselected = self.engine.deselected.get(spec.id)
            lines.append(f"  no alert of its own: a window that fires is an event of {outer or 'another correlation'}"
                         + (f" ({deselected})" if deselected is not None else " (referenced without generate)"))
        for ref in spec.inputs:
            taken = [f.line for f in fed if ref.key in f.refs]
            text = f"  input {self._label(spec, ref.key)}: "
            text += f"{_events(len(taken))} ({_lines(taken, self.unit)})" if taken else "met by no event"
            outside = self.outside[key].get(ref.key)
            if outside:
                text += f"; {_events(len(outside))} met it out of its logsource ({_lines(outside, self.unit)})"
            lines.append(text + (" (must be absent)" if ref in spec.absent else ""))
        if self.untimed[key]:
            lines.append(f"  no parsable event time: {_lines(self.untimed[key], self.unit)} (left out)")
        if not fed:
            lines.append(f"  did not fire: no {'event' if self.stage == 'all' else 'Detection'} fed it")
            return _joined(lines)
        lines.append(f"  events ({len(fed)}):")
        for entry in fed[:MAX_LISTED]:
            host = f"  host {_plain(entry.host)}" if entry.host else ""
            group = f"  {_group(spec, entry.spelled)}" if spec.group_by else ""
            met = ", ".join(self._label(spec, k, True) for k in entry.refs)
            where = [self.origins[entry.line]] if entry.line in self.origins else []
            where += [f"event line {entry.event_line}"] if entry.event_line is not None else []
            named = f" ({'; '.join(map(_plain, where))})" if where else ""
            name = "restored" if entry.line is None else f"{self.unit} {entry.line}"
            lines.append(f"    {name}{named}  {format_time(entry.time)}{host}{group}  {met}: {entry.status}")
        if len(fed) > MAX_LISTED:
            lines.append(f"    ... and {len(fed) - MAX_LISTED} more")
        for hit in fired:
            consumed = [self._line_of(c.detection) for c in hit.contributions]
            hosts = sorted({c.detection.event["host"] for c in hit.contributions if "host" in c.detection.event},
                           key=str)  # as the alert lists them (``records.correlation_alert``): an inner alert's too
            spelled = spelled_group(spec, hit.group, hit.contributions)  # as the alert names the group
            text = (f"  fired at {format_time(hit.time)}  {_group(spec, spelled)}: {_measure(spec)} "
                    f"{_value(hit.aggregate)} {_needs(spec.condition)} within [{format_time(hit.window_start)}, "
                    f"{format_time(hit.time)}]; consumed {_lines(consumed, self.unit)}")
            if hosts:
                text += "; hosts " + _listed(hosts)
            if hit.distinct_values and list(hit.distinct_values) != hosts:
                text += "; values " + _listed(hit.distinct_values)
            lines.append(text + ("; no alert (not generated)" if quiet else ""))
        for t, group in self.kept_back[key]:
            lines.append(f"  kept back at {format_time(t)}  {self._named(correlator, group)}: the window met the "
                         "condition, but holds events of an early alert above (an episode alerts once): consumed, "
                         "no alert")
        groups = list(dict.fromkeys(f.group for f in fed))
        done = {hit.group for hit in fired}
        for group in groups:
            if group not in done:
                lines.append(f"  did not fire  {self._named(correlator, group)}: " + self._why_not(correlator, group))
            elif group in best:
                lines.append(f"  then did not fire again  {self._named(correlator, group)}: "
                             + self._why_not(correlator, group))
        if not fired:
            lines.append("  no window fired")
        return _joined(lines)

    def _named(self, correlator, group) -> str:
        """A group that did not fire (or not again), as an alert of its best window would name it: as the
        window's first event wrote it; without one, as the group's first event did."""
        found = self.best[id(correlator)].get(group)
        events = found[2][0] if found is not None else ()
        entries = self._grouped(correlator)[0].get(group)
        first = entries[0].spelled if entries else group
        return _group(correlator.spec, spelled_group(correlator.spec, group, events) if events else first)

    def _grouped(self, correlator) -> tuple:
        """(group -> its entries of ``fed`` in order, group -> time of its last window fired), made once per
        correlation: a pass over every entry for each group that did not fire was quadratic (a value per
        line in a grouped correlation: 20,000 lines took 22 s)."""
        key = id(correlator)
        fed, fired = self.fed[key], self.fired[key]
        found = self._groups.get(key)
        if found is None or found[0] != (len(fed), len(fired)):
            by_group, last = {}, {}
            for entry in fed:
                by_group.setdefault(entry.group, []).append(entry)
            for hit in fired:
                if hit.group not in last or hit.time > last[hit.group]:
                    last[hit.group] = hit.time
            found = self._groups[key] = ((len(fed), len(fired)), by_group, last)
        return found[1], found[2]

    def _why_not(self, correlator, group) -> str:
        spec, key = correlator.spec, id(correlator)
        by_group, last_fired = self._grouped(correlator)
        last = last_fired.get(group)
        mine = [f for f in by_group.get(group, ()) if last is None or f.time > last]
        dropped = [f.line for f in mine if f.dropped]
        late = f"; {_lines(dropped, self.unit)} came too late behind the watermark (left out)" if dropped else ""
        found = self.best[key].get(group)
        held = correlator.held_of(group) if found is None and self.restored and spec.anchored else ()
        if held:  # not judged at the pause (``state.pause``): still open, for the next run
            start = held[0].time
            return (f"its window [{format_time(start)}, {format_time(start + spec.timespan_ns)}], events at "
                    f"{_lines((self._line_of(c.detection) for c in held), self.unit)}, was not complete when the "
                    "input ended: the filter's next run with --state judges it" + late)
        if found is None:
            if dropped:
                return f"every event came too late behind the watermark ({_lines(dropped, self.unit)})"
            return "no window was evaluated"
        _, t, (events, seen, complete, aggregate) = found
        text = (f"best {_measure(spec)} {_value(aggregate)} of needed {_needs(spec.condition)} within "
                f"{_span(spec.timespan_ns)}, events at "
                f"{_lines((self._line_of(c.detection) for c in events), self.unit)} "
                + (f"(window [{format_time(t - spec.timespan_ns)}, {format_time(t)}], judged when complete): "
                   if spec.anchored else f"(window ending {format_time(t)}): "))
        reasons = [] if not complete else ["condition not met within the timespan"]
        present = [ref for ref in spec.absent if ref.key in seen]
        if present:
            reasons.append("an input that must be absent occurred in the window: "
                           + ", ".join(self._label(spec, ref.key) for ref in present))
        met = {k for f in mine if f.taken for k in f.refs}
        if not complete or spec.kind in ("temporal", "temporal_ordered"):  # which inputs the window lacked
            for ref in spec.rules:
                if ref.key in seen:
                    continue
                late_only = [f.line for f in mine if f.dropped and ref.key in f.refs]
                if ref.key in met:
                    reasons.append(f"{self._label(spec, ref.key)} not met within the same window")
                elif late_only:  # met, but by events the correlation left out
                    reasons.append(f"{self._label(spec, ref.key)} met only too late ({_lines(late_only, self.unit)})")
                else:
                    where = " in this group" if spec.group_by else ""
                    reasons.append(f"{self._label(spec, ref.key)} " + (f"never met{where}" if last is None else
                                                                       f"not met{where} after its last alert"))
        return text + "; ".join(reasons or ["incomplete"]) + late

