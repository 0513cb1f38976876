"""Output records: the ``sigma`` enrichment of a matched event and the alert record.

Built from Detection records, correlation hits and rule metadata only: never
from the event itself.  Names follow the Elastic Common Schema where one exists
(``event.kind``, ``event.start``/``event.end``, ``rule.*``, ``threat.*``,
``related.hosts``); Sigma-specific detail sits under ``sigma``.  ``schema/``
holds the JSON Schema of each record kind.
"""

from __future__ import annotations

from typing import List, Optional

from .correlate import Hit, spelled_group
from .detect import HOST_FIELD, SHOWN_KEYS, SHOWN_TEXT, Detection, blake2b
from .events.timeparse import NS, format_time
from .sigma.compile import Plan
from .sigma.condition import shown_number
from .sigma.rule import CorrelationRule, Rule

# Alert records list at most this many contributing events, and at most this many entries in any
# other list (hosts, values), with totals beside; strings taken from events are cut at MAX_TEXT.
MAX_EVENT_REFS = 50
MAX_LIST = 100
MAX_TEXT = SHOWN_TEXT


def _clip(value, limit: int = MAX_TEXT):
    return value[:limit] + "\u2026" if isinstance(value, str) and len(value) > limit else value


def _capped(values: list, limit: int = MAX_LIST) -> list:
    return [_clip(v) for v in values[:limit]]


def _ref(ref: dict) -> dict:
    """An event as an alert lists it: its ``digest`` tells it apart (``_event_id``), and says nothing to a reader;
    its ``fields`` are bounded already (``detect.shown_fields``)."""
    return {key: _clip(value) if key not in _WHOLE else value for key, value in ref.items() if key != "digest"}


_WHOLE = frozenset(("selections", *SHOWN_KEYS))


def rule_summary(rule: Rule) -> dict:
    return {"id": rule.id, "title": rule.title}


def enrichment(plan: Plan, detection: Detection) -> dict:
    """What one rule says of an event that met its condition (a term of it, under a window join)."""
    return {
        "rule": rule_summary(plan.rule),
        "selections": list(detection.event.get("selections", ())),
        "terms": [plan.terms[i].label for i in detection.terms if i < len(plan.terms)],
    }


def sigma_field(matches: List[dict]) -> dict:
    """The ``sigma`` object of an enriched event: the match itself, or ``matches`` when several rules matched."""
    return matches[0] if len(matches) == 1 else {"matches": matches}


def _sort_key(ref: dict) -> tuple:
    return (ref.get("@timestamp", ""), str(ref.get("host", "")), str(ref.get("event_id", "")),
            str(ref.get("record_id", "")))


def _event_id(rule_id: str, group, time, refs) -> str:
    """A digest of each part followed by a NUL, hashed in one go.  Each event is its whole reference
    but the input line (which starts again at 1 in a new process): what ``correlate.state.identity`` calls the
    same event, selections included, so that two alerts the filter tells apart never share an id
    (a bus keeps one message per id); in any order of the events, so that a replay makes the same."""
    events = sorted(repr(sorted((key, repr(value)) for key, value in r.items() if key not in _NOT_IDENTITY))
                    for r in refs)
    parts = (rule_id, repr(group), str(time), *events, "")
    return blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# What does not make an event another (``correlate.state.identity``): its input line, the values it shows.
_NOT_IDENTITY = frozenset(("line", *SHOWN_KEYS))


# The rule's own words an alert carries for triage: its description, and up to MAX_FALSE_POSITIVES of its
# falsepositives entries (``sigma.falsepositives``, not an ECS field), each cut at these lengths.
MAX_DESCRIPTION = 2048
MAX_FALSE_POSITIVES = 10


def _rule_fields(rule: Rule) -> dict:
    fields = {
        "rule": {
            "id": rule.id,
            "name": rule.title,
            "level": rule.level,
            "tags": list(rule.tags),
            "author": rule.author,
            "reference": list(rule.references),
        },
        "threat": _threat(rule),
    }
    if rule.description is not None:
        fields["rule"]["description"] = _clip(rule.description, MAX_DESCRIPTION)
    return fields


def _triage(rule: Rule, sigma: dict) -> dict:
    """``sigma`` with the rule's ``falsepositives`` (when it lists any): what to rule out before acting."""
    if rule.falsepositives:
        sigma["falsepositives"] = _capped(list(rule.falsepositives), MAX_FALSE_POSITIVES)
    return sigma


def _threat(rule: Rule) -> dict:
    """ECS ``threat.*`` from the rule's ATT&CK tags; groups and software only when tagged."""
    threat = {"framework": "MITRE ATT&CK", "tactic": {"name": list(rule.attack_tactics)},
              "technique": {"id": list(rule.attack_techniques)}}
    if rule.attack_groups:
        threat["group"] = {"id": list(rule.attack_groups)}
    if rule.attack_software:
        threat["software"] = {"id": list(rule.attack_software)}
    return threat


def detection_alert(plan: Plan, detection: Detection) -> dict:
    """The alert of a rule that needs no correlation: the event itself is the finding."""
    rule = plan.rule
    ref = _ref(detection.event)
    host = ref.get("host")
    record = {}
    if detection.time is not None:
        record["@timestamp"] = format_time(detection.time)
    record["event"] = {
        "kind": "alert",
        "id": _event_id(rule.id, None, detection.time, [detection.event]),  # whole: clipped, hosts told apart
                                                                                # after 256 characters were one
        "module": "pipeshell-filter",
        "dataset": "sigma.alert",
    }
    if detection.time is not None:
        record["event"]["start"] = record["event"]["end"] = record["@timestamp"]
    record["message"] = rule.title + (f" on {host}" if host is not None else "")
    record.update(_rule_fields(rule))
    record["related"] = {"hosts": [host] if host is not None else []}
    record["sigma"] = {
        "condition": rule.condition.text,
        "terms": [{"term": plan.terms[i].label, "hosts": [host] if host is not None else [], "events": 1}
                  for i in detection.terms if i < len(plan.terms)],
        "events": [ref],
        "events_total": 1,
        "events_truncated": False,
    }
    _triage(rule, record["sigma"])
    return record


def correlation_alert(rule: Rule, hit: Hit) -> dict:
    """The alert of a correlation window that fired; ``rule`` carries the metadata."""
    spec = hit.spec
    # in time order (their texts do not sort so: ``...00.5Z`` before ``...00Z``), then as the key says
    ordered = sorted(hit.contributions, key=lambda c: (c.time, _sort_key(c.detection.event)))
    refs = [c.detection.event for c in ordered]
    hosts = sorted({r["host"] for r in refs if "host" in r}, key=str)
    terms = []
    for ref_spec in spec.rules:
        met = [c.detection.event for c in ordered if ref_spec.key in c.refs]
        if not met:  # a v2 correlation may fire without every rule it refers to (gte 2 of 3)
            continue
        term_hosts = sorted({r["host"] for r in met if "host" in r}, key=str)
        term = {"term": ref_spec.label, "hosts": _capped(term_hosts), "events": len(met)}
        if len(term_hosts) > MAX_LIST:
            term["hosts_total"] = len(term_hosts)
        terms.append(term)
    sigma = {}
    if spec.legacy is not None:
        sigma["join"] = spec.legacy.join
        sigma["condition"] = spec.legacy.condition
    else:
        sigma["condition"] = f"{spec.kind}({', '.join(ref.label for ref in spec.rules)}): {spec.condition}"
        sigma["correlation"] = {"id": spec.id, "type": spec.kind, "condition": str(spec.condition),
                                "group_by": list(spec.group_by), "field": spec.field}
    sigma["timeframe_seconds"] = spec.timespan_ns / 1e9
    sigma["terms"] = terms
    sigma["events"] = [_ref(r) for r in refs[:MAX_EVENT_REFS]]
    sigma["events_total"] = len(refs)
    sigma["events_truncated"] = len(refs) > MAX_EVENT_REFS
    aggregation = spec.legacy.aggregation if spec.legacy is not None else None
    spelled = spelled_group(spec, hit.group, hit.contributions)  # the group's letter case as its events wrote it
    if aggregation is not None:
        shown = {
            "function": aggregation.function,
            "field": aggregation.field,
            "operator": aggregation.operator,
            "threshold": shown_number(aggregation.threshold),
        }
        if aggregation.function == "count" and aggregation.field:
            shown["values"] = _capped(list(hit.distinct_values))
            if len(hit.distinct_values) > MAX_LIST:
                shown["values_total"] = len(hit.distinct_values)
        shown["count" if aggregation.function == "count" else "value"] = hit.aggregate
        if aggregation.group_by:
            shown["group_by"] = aggregation.group_by
            shown["group"] = spelled[0]
        sigma["aggregation"] = shown
    elif spec.legacy is None:
        sigma["correlation"]["value"] = hit.aggregate
        sigma["correlation"]["group"] = dict(zip(spec.group_by, spelled))
        if hit.distinct_values:
            sigma["correlation"]["values"] = _capped(list(hit.distinct_values))
            if len(hit.distinct_values) > MAX_LIST:
                sigma["correlation"]["values_total"] = len(hit.distinct_values)
    # a legacy rule groups by at most one field, and its ids were made from that value alone
    group = (hit.group[0] if hit.group else None) if spec.legacy is not None else hit.group
    record = {
        "@timestamp": format_time(hit.time),
        "event": {
            "kind": "alert",
            "id": _event_id(spec.id, group, hit.time, refs),
            "module": "pipeshell-filter",
            "dataset": "sigma.alert",
            "start": format_time(hit.window_start),
            "end": format_time(hit.time),
        },
        "message": f"{spec.title}: {_measured(spec, aggregation, hit.aggregate, len(hosts))} within "
                   f"{spec.timespan_ns / NS:g}s",
    }
    record.update(_rule_fields(rule))
    # names apart only after MAX_TEXT characters are one name as cut: listed once (ECS's list is of
    # distinct values), and the total says how many there were
    shown = list(dict.fromkeys(_capped(hosts)))
    record["related"] = {"hosts": shown}
    if len(shown) < len(hosts):
        sigma["hosts_total"] = len(hosts)
    record["sigma"] = _triage(rule, sigma)
    return record


def _measured(spec, aggregation, aggregate, hosts: int) -> str:
    """What an alert's message says the window held: the number its condition is about, by its kind or
    legacy aggregation (a count of users all on one host said "1 host(s)"); a ``near`` join's hosts."""
    if aggregation is not None:
        function, field = aggregation.function, aggregation.field
    elif spec.legacy is None:
        function, field = _KIND_FUNCTIONS.get(spec.kind, spec.kind), spec.field
    else:
        return f"{hosts} host(s)"
    if function == "temporal":
        return f"{aggregate} of {len(spec.rules)} rules"
    if function == "count":
        if not field:
            return f"{aggregate} event(s)"
        return f"{aggregate} host(s)" if field == HOST_FIELD else f"{aggregate} distinct {field} value(s)"
    shown = shown_number(aggregate)  # 1500, not 1500.0; a larger double as Python writes it (1e+300)
    if function == "percentile":  # the share of the rarest value, not a percentile of the values
        return f"rarest {field} value in {shown} % of events"
    return f"{function}({field}) = {shown}"


# A v2 correlation's kind as the function its message names (``_measured``).
_KIND_FUNCTIONS = {"event_count": "count", "value_count": "count", "temporal": "temporal",
                   "temporal_ordered": "temporal", "value_sum": "sum", "value_avg": "avg",
                   "value_percentile": "percentile", "value_min": "min", "value_max": "max"}


SHRUNK_FIELDS = 4  # an event's field values a shrunk alert shows
SHRUNK_TEXT = 64  # characters of each string in a shrunk record
# Ever smaller forms of a record over its output's cap (``smallest_fitting``): (JSON bytes a string may
# take at worst, entries kept of each list).  The first is ``shrink``'s own, strings of 64 characters;
# 64 control characters are 384 bytes, and an alert's hosts and values of three events (each in several
# lists) kept one at 4.9 KB, over the smallest cap.  40 bytes still hold a time, an event id, a level.
SHRINK_FORMS = ((None, 3), (64, 3), (40, 1))


def _json_cost(char: str) -> int:
    """The most bytes one character takes in a record's JSON: escaped (a control character, a
    quote), or as ASCII escapes (``dumps`` writes a whole record so when it holds a lone surrogate)."""
    code = ord(char)
    if code < 0x20:
        return 6
    if code < 0x7f:
        return 2 if char in '"\\' else 1
    return 12 if code > 0xffff else 6


def _cut(value: str, budget) -> str:
    """``value`` cut at ``SHRUNK_TEXT`` characters and, given a ``budget``, at as many as take at most
    that many bytes of JSON, the ellipsis included."""
    value = _clip(value, SHRUNK_TEXT)
    if budget is None or sum(map(_json_cost, value)) <= budget:
        return value
    kept, spent = [], 6  # the ellipsis, escaped
    for char in value:
        spent += _json_cost(char)
        if spent > budget:
            break
        kept.append(char)
    return "".join(kept) + "\u2026"


def shrink(record: dict, budget=None, entries: int = 3) -> dict:
    """A smaller form of an alert record that is too big for its output: every list cut to a few
    entries and every string to a few dozen characters (and, given a ``budget``, bytes of JSON),
    ``sigma.truncated`` set.  Still an alert (``event.kind``, ids, times and the rule stay), so routing
    on it never fails.  A stats record (``--stats-interval``) is cut alike, with ``pipeshell.truncated``
    set instead."""
    def cut(value, depth=0):
        if isinstance(value, str):
            return _cut(value, budget)
        if isinstance(value, list):
            return [cut(v, depth + 1) for v in value[:entries]]
        if isinstance(value, dict):
            return {k: cut(v, depth + 1) for k, v in list(value.items())[:32]}
        return value

    smaller = cut(record)
    if "sigma" not in record and isinstance(smaller.get("pipeshell"), dict):  # a stats record: a top-level
        smaller["pipeshell"]["truncated"] = True  # sigma would make it an enriched event to a router
        return smaller
    sigma = smaller.setdefault("sigma", {})
    sigma["truncated"] = True
    for event in sigma.get("events", ()) if isinstance(sigma.get("events"), list) else ():
        shown = event.get("fields") if isinstance(event, dict) else None
        if isinstance(shown, dict) and shown:  # an event's values: the first few, one value each
            event["fields"] = {name: value[:1] if isinstance(value, list) else value
                               for name, value in list(shown.items())[:SHRUNK_FIELDS]}
            if event["fields"] != shown:
                event["fields_truncated"] = True
    hosts = record.get("related", {}).get("hosts")
    if isinstance(hosts, list) and isinstance(smaller.get("related"), dict):
        # names alike as cut are one: listed once, and how many there were
        shown = smaller["related"]["hosts"] = list(dict.fromkeys(smaller["related"]["hosts"]))
        total = record.get("sigma", {}).get("hosts_total", len(hosts))
        if len(shown) < total:
            sigma["hosts_total"] = total
    _totals(record.get("sigma"), sigma)
    return smaller


def _totals(whole, sigma: dict) -> None:
    """A shrunk alert's cut lists say so as those cut at MAX_LIST do: ``events_truncated``, and the total
    beside a list of values or of a term's hosts (3 of 10 events listed with ``events_truncated: false``
    read as a window of 3)."""
    if not isinstance(whole, dict):
        return
    if isinstance(sigma.get("events"), list) and len(sigma["events"]) < whole.get("events_total", 0):
        sigma["events_truncated"] = True
    pairs = [(whole.get(key), sigma.get(key), "values") for key in ("aggregation", "correlation")]
    if isinstance(whole.get("terms"), list) and isinstance(sigma.get("terms"), list):
        pairs += [(term, cut, "hosts") for term, cut in zip(whole["terms"], sigma["terms"])]
    for original, cut, key in pairs:
        if isinstance(original, dict) and isinstance(cut, dict) and isinstance(cut.get(key), list):
            total = original.get(f"{key}_total", len(original.get(key, ())))
            if len(cut[key]) < total:
                cut[f"{key}_total"] = total


def smallest_fitting(record: dict, encode, fits) -> bytes:
    """``record``'s first form (``SHRINK_FORMS``) whose encoding ``fits``, encoded; else its smallest."""
    for budget, entries in SHRINK_FORMS:
        encoded = encode(shrink(record, budget, entries))
        if fits(encoded):
            break
    return encoded


# The stats record lists this many rules (``--stats-interval``), each with strings cut to RULE_TEXT:
# a set of thousands of rules stays one bounded record; ``--rule-stats`` writes them all, whole.
MAX_RULES_SHOWN = 20
RULE_TEXT = 128


def rule_count(rule, detections: int, alerts: int, fires: int = 0, suppressed: int = 0, tried: Optional[int] = None,
               eval_ns: Optional[int] = None, whole: bool = False) -> dict:
    """One rule's or correlation's counts of this run (``Engine.rule_counts``): ``whole`` (the
    ``--rule-stats`` file) with its file and uncut, so that its ``id`` is one ``--exclude-rules`` takes;
    ``tried`` and ``eval_ns`` (events its condition was tried on, and the time it took), when counted."""
    kind = "correlation" if isinstance(rule, CorrelationRule) else "rule"
    counts = {"detections": detections, "alerts": alerts, "fires": fires, "suppressed": suppressed}
    if tried is not None:
        counts.update(tried=tried, eval_ms=round(eval_ns / 1e6, 3))
    if whole:
        return {"id": rule.id, "title": rule.title, "level": rule.level, "type": kind, "path": rule.path, **counts}
    return {"id": _clip(rule.id, RULE_TEXT), "title": _clip(rule.title, RULE_TEXT), "level": rule.level,
            "type": kind, **counts}
