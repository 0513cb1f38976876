"""Output records: the ``sigma`` enrichment of a matched event and the alert record.

Names follow the Elastic Common Schema where one exists (``event.kind``,
``event.start``/``event.end``, ``rule.*``, ``threat.*``, ``related.hosts``);
Sigma-specific detail sits under ``sigma``.  ``schema/`` holds the JSON Schema
of both record kinds.
"""

from __future__ import annotations

from .correlate.correlator import Alert
from .events.timeparse import format_time
from .sigma.compile import Plan
from .values import first_leaf

# Alert records list at most this many contributing events (issue: record size cap).
MAX_EVENT_REFS = 50


def rule_summary(plan: Plan) -> dict:
    return {"id": plan.rule.id, "title": plan.rule.title}


def enrichment(plan: Plan, matched: frozenset, mask: int) -> dict:
    """The ``sigma`` object added to an event that satisfied at least one selection."""
    return {
        "rule": rule_summary(plan),
        "selections": [s.name for s in plan.selections if s.name in matched],
        "terms": [t.label for i, t in enumerate(plan.terms) if mask >> i & 1],
    }


def event_ref(time_ns, view, matched: frozenset, mask: int, plan: Plan, line: int) -> dict:
    """What an alert says about one contributing event."""
    ref = {"@timestamp": format_time(time_ns), "line": line}
    for key, field in (("event_id", "EventID"), ("host", "Computer"), ("record_id", "EventRecordID")):
        value = _scalar(view.get(field))
        if value is not None:
            ref[key] = value
    ref["selections"] = [s.name for s in plan.selections if s.name in matched]
    ref["terms"] = [i for i in range(len(plan.terms)) if mask >> i & 1]
    return ref


def _scalar(value):
    text = first_leaf(value)
    if text is None:
        return None
    return int(text) if text.isdigit() and len(text) < 19 else text


def _sort_key(ref: dict) -> tuple:
    return (ref["@timestamp"], str(ref.get("host", "")), str(ref.get("event_id", "")), str(ref.get("record_id", "")))


def alert_record(plan: Plan, alert: Alert) -> dict:
    rule = plan.rule
    refs = sorted((c.ref for c in alert.contributions), key=_sort_key)
    hosts = sorted({r["host"] for r in refs if "host" in r}, key=str)
    terms = []
    for i, term in enumerate(plan.terms):
        met = [r for r in refs if i in r["terms"]]
        terms.append({
            "term": term.label,
            "hosts": sorted({r["host"] for r in met if "host" in r}, key=str),
            "events": len(met),
        })
    sigma = {
        "join": plan.join,
        "condition": rule.condition.text,
        "timeframe_seconds": plan.timeframe_ns / 1e9,
        "terms": terms,
        "events": [{k: v for k, v in r.items() if k != "terms"} for r in refs[:MAX_EVENT_REFS]],
        "events_total": len(refs),
        "events_truncated": len(refs) > MAX_EVENT_REFS,
    }
    spec = plan.aggregation
    if spec is not None:
        aggregation = {
            "function": spec.function,
            "field": spec.field,
            "operator": spec.operator,
            "threshold": int(spec.threshold) if float(spec.threshold).is_integer() else spec.threshold,
        }
        if spec.function == "count" and spec.field:
            aggregation["values"] = list(alert.distinct_values)
        aggregation["count" if spec.function == "count" else "value"] = alert.aggregate
        if spec.group_by:
            aggregation["group_by"] = spec.group_by
            aggregation["group"] = alert.group
        sigma["aggregation"] = aggregation
    import hashlib  # here, not at start-up: loading OpenSSL costs every run 5 ms, most runs alert rarely

    digest = hashlib.blake2b(digest_size=16)
    for part in (rule.id, repr(alert.group), str(alert.time), *(repr(_sort_key(r)) for r in refs)):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    record = {
        "@timestamp": format_time(alert.time),
        "event": {
            "kind": "alert",
            "id": digest.hexdigest(),
            "module": "pipeshell-filter",
            "dataset": "sigma.alert",
            "start": format_time(alert.window_start),
            "end": format_time(alert.time),
        },
        "message": f"{rule.title}: {len(hosts)} host(s) within {plan.timeframe_ns / 1e9:g}s",
        "rule": {
            "id": rule.id,
            "name": rule.title,
            "level": rule.level,
            "tags": list(rule.tags),
            "author": rule.author,
            "reference": list(rule.references),
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "tactic": {"name": rule.attack_tactics},
            "technique": {"id": rule.attack_techniques},
        },
        "related": {"hosts": hosts},
        "sigma": sigma,
    }
    return record
