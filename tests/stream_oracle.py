"""A brute-force reference for the correlate stage on any arrival order, written from the README alone.

``oracle.correlation_oracle`` judges a time-sorted stream; this one replays arrivals as the README's
"Event time, windows and the watermark" tells them: each source's newest time, the stream's time the
second newest of those (two sources vouch for it), the watermark that time less the lateness (never
back), events before it late (joining the open windows at the watermark when not older than watermark -
timespan nor in a consumed episode, else left out), every evaluation time strictly before the watermark
final, and at the end of input everything.  Each window is found afresh from every event taken so far.
It imports nothing from ``pipeshell_filter``.
"""

from oracle import _aggregate, _feeds, _first, _folded, _OPS

NEVER = float("-inf")
SETTLE = "settle"


def stream_oracle(kind, rules, timespan, bounds, group_by, field, require_each, arrivals, lateness, source_of,
                  max_skew=float("inf")):
    """arrivals: (time, rule, fields, ident, terms) in arrival order, or ``SETTLE`` where the input paused
    (the times at the newest time that is not suspect, less the lateness, become final); source_of(record)
    -> its source.
    Returns [(t, group, frozenset(idents), aggregate)] sorted by (t, repr(group))."""
    anchored = kind in ("event_count", "value_count", "temporal", "temporal_ordered") and \
        any(op not in ("gt", "gte") for op, _ in bounds)
    newest, watermark = {}, NEVER
    taken = []  # dicts: time, eval, group, ident, rule, terms, fields, done (evaluated)
    consumed = {}  # group -> end of its last episode
    alerts = []

    def holds(window):
        if require_each and not all(any(_feeds(ref, c["rule"], c["terms"]) for c in window) for ref in rules):
            return None
        value = _aggregate(kind, rules, field, window)
        if value is None or not all(_OPS[op](value, number) for op, number in bounds):
            return None
        return value

    def live(group):
        return [c for c in taken if c["done"] and c["group"] == group and c["time"] > consumed.get(group, NEVER)]

    def judge_anchored(limit):
        while True:
            starts = {}
            for c in taken:
                if c["done"] and c["time"] > consumed.get(c["group"], NEVER):
                    starts[c["group"]] = min(starts.get(c["group"], c["time"]), c["time"])
            due = sorted(((s, repr(g), g) for g, s in starts.items() if s + timespan < limit))
            if not due:
                return
            start, _, group = due[0]
            window = [c for c in live(group) if start <= c["time"] <= start + timespan]
            value = holds(window)
            if value is not None:
                alerts.append((start + timespan, group, frozenset(c["ident"] for c in window), value))
            consumed[group] = start + timespan

    def advance(limit):
        while True:
            waiting = [c["eval"] for c in taken if not c["done"] and c["eval"] < limit]
            if not waiting:
                break
            t = min(waiting)
            if anchored:
                judge_anchored(t)
            groups = set()
            for c in taken:
                if not c["done"] and c["eval"] == t:
                    c["done"] = True
                    groups.add(c["group"])
            if anchored:
                continue
            for group in sorted(groups, key=repr):
                window = [c for c in live(group) if t - timespan <= c["time"] <= t]
                value = holds(window)
                if value is not None:
                    alerts.append((t, group, frozenset(c["ident"] for c in window), value))
                    consumed[group] = t
        if anchored:
            judge_anchored(limit)

    lone = []  # the event times of the only source, while there is one
    for record in arrivals:
        if record == SETTLE:
            if len(newest) == 1:
                trusted = sorted(lone)[-2] if len(lone) > 1 else NEVER
            elif newest:
                reference = sorted(newest.values())[-2]
                trusted = max(t for t in newest.values() if t <= reference + max_skew)
            else:
                continue
            if trusted - lateness + 1 > watermark:
                watermark = trusted - lateness + 1
                advance(watermark)
            continue
        time, rule, fields, ident = record[:4]
        terms = tuple(record[4]) if len(record) > 4 else (0,)
        if time is None or not any(_feeds(ref, rule, terms) for ref in rules):
            continue
        group = tuple(_folded(_first(fields, name)) for name in group_by)
        entry = {"time": time, "group": group, "ident": ident, "rule": rule, "terms": terms, "fields": fields,
                 "done": False}
        if time < watermark:
            if time >= watermark - timespan and time > consumed.get(group, NEVER):
                taken.append(dict(entry, eval=watermark))
            continue
        taken.append(dict(entry, eval=time))
        source = source_of(record)
        newest[source] = max(newest.get(source, NEVER), time)
        if len(newest) == 1:
            lone.append(time)
        if len(newest) >= 2:
            reference = sorted(newest.values())[-2]
            if reference - lateness > watermark:
                watermark = reference - lateness
                advance(watermark)
    advance(float("inf"))
    alerts.sort(key=lambda a: (a[0], repr(a[1])))
    return alerts
