"""``pipeshell-filter explain``: what a compiled rule does, and why one event did or did not match."""

from __future__ import annotations

import os
from typing import List, Optional

import ujson

from .detect import event_facts
from .events.fields import MISSING, FieldResolver, lookup
from .events.timeparse import NS, format_time
from .io.prefilter import Prefilter, needle
from .sigma.compile import FieldMatcher, Plan


def rule_needles(plan: Plan, unknown_logsource: str = "match") -> Optional[list]:
    """What the prefilter looks for on behalf of one rule: its literals, else (when events
    must tell their channel, ``--logsource-unknown skip``) the names of its logsource's
    channels; None when neither can be had."""
    found = plan.prefilter_literals(needle)
    if found is None and unknown_logsource == "skip" and plan.logsource is not None and plan.logsource.channels:
        channels = [needle(channel) for channel in plan.logsource.channels]
        found = None if None in channels else sorted(set(channels))
    return found


def _show(value, width: int = 70) -> str:
    if value is MISSING:
        return "(missing)"
    text = ujson.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."


def describe_event(plans: List[Plan], resolver: FieldResolver, raw: bytes, event: dict, source: str,
                   unknown_logsource: str = "match") -> str:
    """How one event is read and judged, rule by rule: the answer to "why did it (not) match?"."""
    view = resolver.view(event)
    chosen = view.profile
    how = "fixed by --profile" if resolver.fixed else (
        "detected: " + ", ".join(".".join(map(str, p)) for p in chosen.detect) + " present" if chosen.detect
        else "no other profile's paths present")
    origin = "built-in" if chosen.source.startswith(os.path.dirname(__file__)) else chosen.source
    lines = [f"event     {source}", f"profile   {chosen.name} ({origin}; {how})"]
    time_paths = (resolver.time_path,) if resolver.time_path else chosen.time
    found = next(((p, lookup(event, p)) for p in time_paths if lookup(event, p) is not MISSING), None)
    ns = view.time()
    if ns is not None:
        lines.append(f"time      {format_time(ns)} (from {'.'.join(map(str, found[0]))} = {_show(found[1])})")
    else:
        tried = ", ".join(".".join(map(str, p)) for p in time_paths) or "(no time paths)"
        lines.append(f"time      none parsable (tried {tried}): the event would be left out of correlation")
    facts = event_facts(view)
    lines.append(f"logsource product {facts.product or '(unknown)'}, channel {facts.channel or '(unknown)'}, "
                 f"EventID {facts.event_id or '(unknown)'}")
    for plan in plans:
        lines.append(f"rule      {plan.rule.title}")
        if plan.logsource is not None:
            applies, reason = plan.logsource.verdict(facts, unknown_logsource)
            lines.append(f"logsource {'applies' if applies else 'does not apply'}: {reason}"
                         + ("" if applies else " (the rule is not tried on this event)"))
        fields = []
        for selection in plan.selections:
            for group in selection.alternatives:
                fields += [m.field for m in group if isinstance(m, FieldMatcher) and m.field not in fields]
        spec = plan.aggregation
        for extra in (spec.field, spec.group_by) if spec else ():
            if extra and extra not in fields:
                fields.append(extra)
        lines.append("fields:")
        for field in fields:
            where = view.where(field)
            lines.append(f"  {field:<18} {_show(view.get(field))}" + (f"   <- {where}" if where else ""))
        matched = plan.match(view)
        lines.append("selections:")
        for selection in plan.selections:
            verdict = "MATCH" if selection.name in matched else "no"
            lines.append(f"  {selection.name:<28} {verdict}")
            for group in selection.alternatives:
                parts = [f"{m.describe()} {'yes' if m.matches(view) else 'no'}" for m in group]
                lines.append("      " + ", ".join(parts))
        mask = plan.term_mask(matched)
        for i, term in enumerate(plan.terms):
            lines.append(f"  term {i} {'met' if mask >> i & 1 else 'not met'}: {term.label}")
        if mask:
            lines.append("outcome   " + _outcome(plans, plan))
        needles = plan.prefilter_literals(needle)
        if needles:
            scan = Prefilter(needles, "python").spans(raw + b"\n")
            lines.append("prefilter " + ("the line is a candidate (parsed)" if scan else
                                         "the line holds no needle: it would skip parsing"))
    return "\n".join(lines)


def _outcome(plans, plan: Plan) -> str:
    """What a Detection of ``plan`` leads to, in a rule set that may hold correlation documents."""
    feeds = [c.rule.title for c in getattr(plans, "correlations", ()) if plan.rule.id in c.spec.chained
             or any(ref.rule == plan.rule.id and not ref.chained for ref in c.spec.rules)]
    named = "; feeds correlation " + ", ".join(repr(title) for title in feeds) if feeds else ""
    if plan.correlation is not None:
        return "a Detection for the correlation (see explain without --event)" + named
    if plan.rule.id in getattr(plans, "quiet", ()):
        return "no alert of its own (generate: false)" + named + " (see explain without --event)"
    return "an alert, at once" + named


def describe_rule_set(plans, unknown_logsource: str = "match") -> str:
    """Every compiled rule (``describe_plan``), then every correlation document (``describe_correlation``)."""
    quiet = getattr(plans, "quiet", frozenset())
    blocks = [describe_plan(plan, unknown_logsource, plan.rule.id in quiet) for plan in plans]
    blocks += [describe_correlation(c, c.spec.id in quiet) for c in getattr(plans, "correlations", ())]
    return "\n".join(blocks)


def describe_correlation(correlation, quiet: bool = False) -> str:
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
        what = ("a correlation: each of its alerts is one event here, at the time of its last event, with its "
                "group values") if target.correlation is not None else "a rule: each event it matches"
        shown_id = "" if target.written == target.id else f" = {target.id}"
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
    lines.append(f"window    [t - {spec.timespan_ns / NS:g}s, t], both ends included; evaluated at each event time "
                 "once the watermark (newest event time - lateness) passes it; an alert consumes its events")
    lines.append("generate  " + ("true: the referenced rules also alert on their own" if spec.generate else
                                 "false: the referenced rules do not alert on their own (their matches still "
                                 "enrich events)"))
    if quiet:
        lines.append("alerts    none of its own: it feeds another correlation without generate")
    return "\n".join(lines)


def describe_plan(plan: Plan, unknown_logsource: str = "match", quiet: bool = False) -> str:
    """A compiled rule: selections, condition, logsource, correlation, prefilter."""
    rule = plan.rule
    lines = [
        f"rule      {rule.title}",
        f"id        {rule.id}",
        f"file      {'(built-in) ' if rule.builtin else ''}{rule.path}",
        f"level     {rule.level or '-'}    tags: {', '.join(rule.tags) or '-'}",
        f"condition {rule.condition.text}",
        f"expanded  {plan.expression}",
        "selections:",
    ]
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
    for i, term in enumerate(plan.terms):
        lines.append(f"  term {i}: {term.label}")
    for node in plan.filters:
        lines.append(f"  every event must also satisfy: {node}")
    lines.append("logsource " + (plan.logsource.describe() if plan.logsource is not None else "(any event)"))
    correlation = plan.correlation
    if correlation is None and quiet:
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
                     + ("; every term must occur" if correlation.require_each and len(correlation.rules) > 1 else ""))
        if correlation.absent:
            lines.append("near      no event meeting " + ", ".join(ref.label[len("not "):] for ref in correlation.absent)
                         + " may be in the window")
        if quiet:
            lines.append("alerts    none of its own: it feeds another correlation without generate")
        seconds = correlation.timespan_ns / NS
        lines.append(f"window    [t - {seconds:g}s, t], both ends included; evaluated at each event time once the "
                     "watermark (newest event time - lateness) passes it; an alert consumes its events")
    needles = rule_needles(plan, unknown_logsource)
    if needles and plan.prefilter_literals(needle) is None:
        lines.append("prefilter the rule has no literal: tried on lines holding its channels' names (any case): "
                     + ", ".join(repr(n.decode("ascii")) for n in needles))
    elif needles:
        lines.append("prefilter a line can only match if its bytes hold (any case) one of: "
                     + ", ".join(repr(n.decode("ascii")) for n in needles)
                     + " -- or a JSON \\u escape / non-ASCII look-alike of their letters")
    else:
        lines.append("prefilter off: a term holds without any selection, or some selection has no literal "
                     "every match must contain (regex, |exists, null, numbers only)"
                     + ("; with --logsource-unknown skip it would be tried on its channels' lines only"
                        if plan.logsource is not None and plan.logsource.channels and unknown_logsource != "skip"
                        else ""))
    return "\n".join(lines)


def _describe_matcher(matcher) -> str:
    tests = getattr(matcher, "tests", ())
    shown = " | ".join(f"{t.kind} {t.needle!r}" for t in tests)
    if getattr(matcher, "exists", None) is not None:
        shown = f"exists={matcher.exists}"
    if getattr(matcher, "accepts_null", False):
        shown = (shown + " | " if shown else "") + "null"
    joiner = " (all)" if getattr(matcher, "require_all", False) else ""
    return f"{matcher.describe()}: {shown}{joiner}"
