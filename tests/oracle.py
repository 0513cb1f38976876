"""A brute-force reference for the built-in rule, written independently of the filter.

Sort by time; per distinct time t, the window is every candidate event with time
in [t - timeframe, t] not consumed by an earlier alert; fire when it has a server
event, a client event and more than two distinct hosts (letter case aside); firing consumes up to t.
"""

SERVER = "namedpipeserverstream"
CLIENT = "namedpipeclientstream"


def sides(event_text: str):
    text = event_text.lower()
    return (SERVER in text, CLIENT in text)


def pipeshell_oracle(events, timeframe=300, threshold=2, join="window"):
    """events: (seconds, host, kind, event_id, ident).  Returns [(t, frozenset(idents))]."""
    candidates = []
    for seconds, host, kind, _event_id, ident in events:
        server = kind in ("server", "both")
        client = kind in ("client", "both")
        if join == "event":
            server = client = server and client
        if server or client:
            candidates.append((seconds, host, server, client, ident))
    candidates.sort(key=lambda c: c[0])
    alerts, consumed = [], float("-inf")
    for t in sorted({c[0] for c in candidates}):
        window = [c for c in candidates if consumed < c[0] and t - timeframe <= c[0] <= t]
        hosts = {c[1].casefold() if isinstance(c[1], str) else c[1] for c in window}  # as Sigma compares
        if any(c[2] for c in window) and any(c[3] for c in window) and len(hosts) > threshold:
            alerts.append((t, frozenset(c[4] for c in window)))
            consumed = t
    return alerts


# ---------------------------------------------------------------- correlation kinds

from decimal import Decimal as _Decimal
from fractions import Fraction as _Fraction
import math as _math
import sys as _sys
import re as _re

def _as_aggregate(a, b):
    """A sum, mean or share is a double: the rule's number b is taken as the double nearest it."""
    return float(b) if isinstance(a, float) else b


_OPS = {
    "gt": lambda a, b: a > _as_aggregate(a, b),
    "gte": lambda a, b: a >= _as_aggregate(a, b),
    "lt": lambda a, b: a < _as_aggregate(a, b),
    "lte": lambda a, b: a <= _as_aggregate(a, b),
    "eq": lambda a, b: a == _as_aggregate(a, b),
    "neq": lambda a, b: a != _as_aggregate(a, b),
}


def _feeds(ref, rule, terms):
    """Does a detection of ``rule`` meeting ``terms`` feed ``ref`` (a rule id or (rule id, term))?"""
    ref_rule, ref_term = (ref, None) if isinstance(ref, str) else ref
    return rule == ref_rule and (ref_term is None or ref_term in terms)


def _first(fields, name):
    values = fields.get(name) if name is not None else None
    return values[0] if values else None


def _folded(value):
    return value.casefold() if isinstance(value, str) else value


_NUMBER = _re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")  # as events write one


def _largest(exact):
    return _sys.float_info.max if exact > 0 else -_sys.float_info.max


def _finite(text):
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if _math.isfinite(number) else None


def _longest_ordered_prefix(rules, window):
    """The largest k such that events feeding rules[0], ..., rules[k-1] exist in the window
    at non-decreasing times; found by trying every choice of times, longest first."""
    for k in range(len(rules), 0, -1):
        choices = [sorted({d["time"] for d in window if _feeds(ref, d["rule"], d["terms"])})
                   for ref in rules[:k]]

        def exists(i, at):
            return i == k or any(t >= at and exists(i + 1, t) for t in choices[i])

        if exists(0, float("-inf")):
            return k
    return 0


def _aggregate(kind, rules, field, window):
    if kind == "event_count":
        return len(window)
    if kind == "value_count":
        if field is None:
            return len(window)
        return len({v.casefold() for d in window for v in (d["fields"].get(field) or [])})  # as Sigma compares
    if kind == "temporal":
        return sum(1 for ref in rules if any(_feeds(ref, d["rule"], d["terms"]) for d in window))
    if kind == "temporal_ordered":
        return _longest_ordered_prefix(rules, window)
    if kind == "value_percentile":
        values = [_folded(v) for v in (_first(d["fields"], field) for d in window) if v is not None]
        if not values:
            return None
        return 100.0 * min(values.count(v) for v in set(values)) / len(values)
    numbers = [n for n in (_finite(_first(d["fields"], field)) for d in window) if n is not None]
    if not numbers:
        return None
    if kind in ("value_sum", "value_avg"):  # exact, of the numbers as written in decimal; then the nearest double
        texts = [t for t in (_first(d["fields"], field) for d in window) if _finite(t) is not None]
        total = sum(_Fraction(_Decimal(t)) for t in texts)
        value = total if kind == "value_sum" else total / len(texts)
        return _largest(value) if abs(value) > _Fraction(_sys.float_info.max) else float(value)
    if kind == "value_min":
        return min(numbers)
    if kind == "value_max":
        return max(numbers)
    raise ValueError(f"oracle does not know kind {kind!r}")


def correlation_oracle(kind, rules, timespan, bounds, group_by, field, require_each, detections):
    """A brute-force reference for one correlation, written independently of the filter
    (it imports nothing from ``pipeshell_filter``; everything comes in as plain data).

    kind: a correlation kind name; rules: the referenced inputs, each a rule id or a
    (rule id, term) pair (term None: any terms); timespan: window length; bounds:
    [(op, number)] that must all hold; group_by: field names; field: the aggregated
    field or None; require_each: every referenced input must occur in the window;
    detections: (time, rule, fields, ident) or (time, rule, fields, ident, terms),
    fields mapping a name to a list of strings, terms defaulting to (0,).

    Candidates are the detections with a time that feed some referenced input.  Each
    group (the first value of each group-by field, letter case folded, None where absent) is taken on its
    own: at each distinct time t of its candidates, in increasing order, the window is
    every candidate of the group with time in [t - timespan, t] and after the group's
    last alert; it fires when it is complete (if required) and every bound holds on the
    kind's aggregate, and firing consumes the group's candidates up to t.

    But a count (event_count, value_count, temporal, temporal_ordered) with a bound that is
    not gt or gte: there, the group's first candidate s starts a window of every candidate
    with time in [s, s + timespan]; when it is complete (if required) and every bound holds,
    it fires at s + timespan; either way it consumes the group's candidates up to there, and
    the first candidate after that starts the next window.

    Returns [(t, group, frozenset(idents), aggregate)] sorted by (t, repr(group)).
    """
    candidates = []
    for record in detections:
        time, rule, fields, ident = record[:4]
        terms = tuple(record[4]) if len(record) > 4 else (0,)
        if time is None or not any(_feeds(ref, rule, terms) for ref in rules):
            continue
        group = tuple(_folded(_first(fields, name)) for name in group_by)  # as Sigma compares values
        candidates.append({"time": time, "rule": rule, "terms": terms, "fields": fields,
                           "ident": ident, "group": group})

    alerts = []
    from_start = kind in ("event_count", "value_count", "temporal", "temporal_ordered") and \
        any(op not in ("gt", "gte") for op, _ in bounds)
    for group in {c["group"] for c in candidates}:
        mine = [c for c in candidates if c["group"] == group]
        consumed = float("-inf")
        for t in sorted({c["time"] for c in mine}):
            if from_start and t <= consumed:
                continue
            low, high = (t, t + timespan) if from_start else (t - timespan, t)
            window = [c for c in mine if consumed < c["time"] and low <= c["time"] <= high]
            if from_start:
                consumed = high  # fired or not, the window's candidates are taken
            if require_each and not all(any(_feeds(ref, c["rule"], c["terms"]) for c in window)
                                        for ref in rules):
                continue
            value = _aggregate(kind, rules, field, window)
            if value is None or not all(_OPS[op](value, number) for op, number in bounds):
                continue
            alerts.append((high, group, frozenset(c["ident"] for c in window), value))
            consumed = high
    alerts.sort(key=lambda a: (a[0], repr(a[1])))
    return alerts
