"""Sigma v2 correlations through the command line (``--rule FILE --emit alerts``) against a brute force
written here, for what ``tests/oracle.py`` and its tests leave out: sums, means and percentiles of
values events write in many ways (JSON numbers, numeric strings, text, null, absent), a group-by field
absent from some events, ``aliases`` in ``group-by`` and ``field`` of the value kinds, ranges, the
timespan's ends (both in), and chains with and without ``generate``.

The brute force imports nothing from the filter.  Per group (first value of each group-by field,
letter case folded, None where absent or null), for each distinct event time t in order, the window
is the group's events in [t - timespan, t] after its last alert; it fires when every bound holds on
the kind's aggregate, and firing consumes up to t.  A count with an upper bound is judged from the
group's first event s not yet taken, over [s, s + timespan], at s + timespan, fired or not consumed.
"""

import datetime
import json
import os
import tempfile
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from clitools import alerts, ndjson, run_cli, run_cli_here

START = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
RULES = {1: "a", 2: "b", 3: "c"}
BASE_RULES = "".join(
    f"---\ntitle: rule {name}\nid: {name}\nname: n_{name}\nlogsource: {{product: test}}\n"
    f"detection:\n  sel: {{EventID: {eid}}}\n  condition: sel\n" for eid, name in RULES.items())
OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
       "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b}
COUNTS = ("event_count", "value_count", "temporal", "temporal_ordered")


def stamp(seconds):
    return (START + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def text_of(value):
    """A JSON value as the filter reads it into a field: None when absent or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def number_of(text):
    """The exact number a value writes (ASCII decimal), or None."""
    if text is None or not text.strip() or text.strip().lower() in ("nan", "inf", "-inf", "infinity"):
        return None
    if any(ch not in "0123456789+-.eE" for ch in text.strip()):
        return None
    try:
        return Fraction(Decimal(text.strip()))
    except ArithmeticError:
        return None


def folded(text):
    return text.casefold() if isinstance(text, str) else text


def aggregate(kind, refs, window, field_of):
    if kind == "event_count":
        return len(window)
    if kind == "value_count":
        return len({folded(field_of(e)) for e in window if field_of(e) is not None})
    if kind == "temporal":
        return len({e["rule"] for e in window})
    if kind == "temporal_ordered":
        best, at = 0, None
        for ref in refs:  # the longest run of the list from its first rule, at non-decreasing times
            times = [e["t"] for e in window if e["rule"] == ref and (at is None or e["t"] >= at)]
            if not times:
                break
            best, at = best + 1, min(times)
        return best
    values = [field_of(e) for e in window]
    if kind == "value_percentile":
        values = [folded(v) for v in values if v is not None]
        return 100.0 * min(values.count(v) for v in values) / len(values) if values else None
    numbers = [n for n in map(number_of, values) if n is not None]
    if not numbers:
        return None
    total = sum(numbers)
    return float(total if kind == "value_sum" else total / len(numbers))


def brute_force(kind, refs, timespan, bounds, group_by, field, events, alias=None):
    """events: dicts with t, rule, line, fields.  Returns [(end, group, lines, value)] sorted."""
    def read(e, name):
        name = (alias or {}).get(name, {}).get(e["rule"], name)
        return e["fields"].get(name)

    mine = [e for e in events if e["rule"] in refs]
    hits = []
    from_start = kind in COUNTS and any(op not in ("gt", "gte") for op, _ in bounds)
    for group in {tuple(folded(read(e, g)) for g in group_by) for e in mine}:
        own = [e for e in mine if tuple(folded(read(e, g)) for g in group_by) == group]
        taken = None
        for t in sorted({e["t"] for e in own}):
            if from_start and taken is not None and t <= taken:
                continue
            low, high = (t, t + timespan) if from_start else (t - timespan, t)
            window = [e for e in own if (taken is None or e["t"] > taken) and low <= e["t"] <= high]
            if from_start:
                taken = high
            value = aggregate(kind, refs, window, lambda e: read(e, field))
            if value is not None and all(OPS[op](value, float(n) if isinstance(value, float) else n)
                                         for op, n in bounds):
                hits.append((high, group, frozenset(e["line"] for e in window), value))
                taken = high
    return sorted(hits, key=lambda h: (h[0], repr(h[1])))


def run(documents, rows):
    """Write the rule file and the events, run the command line; its alerts."""
    with tempfile.TemporaryDirectory(prefix="corr-cli-") as directory:
        path = os.path.join(directory, "rules.yml")
        with open(path, "w") as handle:
            handle.write(BASE_RULES + "".join("---\n" + d for d in documents))
        done = run_cli_here(["--rule", path, "--emit", "alerts", "--quiet"], ndjson(rows))
    assert done.returncode == 0, done.stderr.decode()
    return alerts(done.stdout)


def seen(found, correlation_id, group_by):
    out = []
    for alert in found:
        if alert["rule"]["id"] != correlation_id:
            continue
        seconds = (datetime.datetime.fromisoformat(alert["@timestamp"].replace("Z", "+00:00")) - START).total_seconds()
        group = alert["sigma"]["correlation"]["group"]
        out.append((int(seconds), tuple(folded(group[g]) for g in group_by),
                    frozenset(ref["line"] for ref in alert["sigma"]["events"]), alert["sigma"]["correlation"]["value"]))
    return sorted(out, key=lambda h: (h[0], repr(h[1])))


def events_of(rows, names):
    return [{"t": r["t"], "rule": RULES[r["EventID"]], "line": line,
             "fields": {n: text_of(r.get(n)) for n in names}}
            for line, r in enumerate(rows, 1) if r["EventID"] in RULES]


VALUES = st.sampled_from([None, 0, 3, -1, 1.5, "2", "2.5", " 4 ", "x", "", "0.1", "0.2", "1e3", "1_0", "nan"])
USERS = st.sampled_from([None, "alice", "Alice", "bob"])


@st.composite
def streams(draw, eids=(1, 2, 3, 4)):
    rows = []
    for t in sorted(draw(st.lists(st.integers(0, 16), min_size=1, max_size=16))):
        # "seq": no two lines alike, which would be one event sent twice (README, State across restarts)
        row = {"@timestamp": stamp(t), "t": t, "seq": len(rows), "EventID": draw(st.sampled_from(eids))}
        for name, values in (("User", USERS), ("Host", st.sampled_from([None, "h1", "h2"])),
                             ("Val", VALUES), ("Src", USERS), ("Dst", USERS)):
            value = draw(values)
            if value is not None or draw(st.booleans()):  # absent, or written as null
                row[name] = value
        rows.append(row)
    return rows


def document(kind, refs, group_by, timespan, bounds, field=None, ident="k", **more):
    condition = dict(bounds, **({"field": field} if field else {}))
    section = {"type": kind, "rules": refs, "group-by": group_by, "timespan": f"{timespan}s", **more}
    if condition:
        section["condition"] = condition
    return json.dumps({"title": f"under test {ident}", "id": ident, "name": f"name_{ident}",
                       "correlation": section}) + "\n"


NUMBERS = {"value_sum": st.sampled_from([-1, 0, 0.3, 2, 4.5, 7]),
           "value_avg": st.sampled_from([-1, 0, 0.15, 1.5, 2, 3]),
           "value_percentile": st.sampled_from([0, 25, 50, 100]), "value_count": st.integers(0, 3),
           "temporal_ordered": st.integers(0, 3), "event_count": st.integers(0, 4)}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(NUMBERS)))
def test_each_kind_through_the_command_line_is_the_brute_force(data, kind):
    refs = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
    bounds = data.draw(st.dictionaries(st.sampled_from(sorted(OPS)), NUMBERS[kind], max_size=2))
    if not bounds and kind != "temporal_ordered":
        bounds = {"gt": 0}
    group_by = data.draw(st.sampled_from([[], ["User"], ["User", "Host"]]))
    timespan = data.draw(st.integers(1, 6))
    field = {"value_count": "User", "event_count": None, "temporal_ordered": None}.get(kind, "Val")
    if kind == "value_count":
        group_by = [g for g in group_by if g != "User"] or ["Host"]
        field = "User"
    rows = data.draw(streams())
    found = run([document(kind, refs, group_by, timespan, bounds, field)], rows)
    ops = sorted(bounds.items()) or [("gte", len(refs))]
    want = brute_force(kind, refs, timespan, ops, group_by, field, events_of(rows, ("User", "Host", "Val")))
    assert seen(found, "k", group_by) == want


@settings(max_examples=40, deadline=None)
@given(rows=streams((1, 2)), kind=st.sampled_from(["value_sum", "value_count", "value_percentile", "temporal"]),
       timespan=st.integers(1, 6))
def test_aliases_in_group_by_and_field(rows, kind, timespan):
    """``ip`` is Src in rule a's events and Dst in rule b's; ``v`` is Val in a's and User in b's."""
    alias = {"ip": {"a": "Src", "b": "Dst"}, "v": {"a": "Val", "b": "User"}}
    field = None if kind == "temporal" else "v"
    bounds = {} if kind == "temporal" else {"gte": 1} if kind != "value_percentile" else {"lte": 50}
    aliases = {"ip": {"n_a": "Src", "b": "Dst"}, **({"v": {"a": "Val", "n_b": "User"}} if field else {})}
    found = run([document(kind, ["a", "n_b"], ["ip"], timespan, bounds, field, aliases=aliases)], rows)
    ops = sorted(bounds.items()) or [("gte", 2)]
    want = brute_force(kind, ["a", "b"], timespan, ops, ["ip"], field,
                       events_of(rows, ("Src", "Dst", "Val", "User")), alias)
    assert seen(found, "k", ["ip"]) == want


@settings(max_examples=40, deadline=None)
@given(rows=streams((1, 1, 2, 3)), inner=st.sampled_from([{"gte": 2}, {"gte": 1}, {"gt": 1, "lte": 2}]),
       inner_span=st.integers(1, 5), outer_span=st.integers(1, 6), generate=st.booleans(),
       outer_kind=st.sampled_from(["temporal", "temporal_ordered", "event_count"]))
def test_a_correlation_of_a_correlation(rows, inner, inner_span, outer_kind, outer_span, generate):
    """Each inner alert (event_count of a by User) is an outer event at its window's end (its last
    event's time, or start + timespan for an upper bound), in its group.  ``generate`` on the outer one
    writes the inner alerts too; rule a never alerts alone, b does only with ``generate``, c always."""
    outer_bounds = {"gte": 2} if outer_kind == "event_count" else {}
    documents = [document("event_count", ["a"], ["User"], inner_span, inner, ident="inner"),
                 document(outer_kind, ["name_inner", "b"], ["User"], outer_span, outer_bounds, ident="outer",
                          generate=generate)]
    found = run(documents, rows)
    events = events_of(rows, ("User",))
    inner_hits = brute_force("event_count", ["a"], inner_span, sorted(inner.items()), ["User"], None, events)
    times = {e["line"]: e["t"] for e in events}
    fed = [e for e in events if e["rule"] == "b"]
    for end, group, lines, _ in inner_hits:
        last = max(lines, key=lambda line: (times[line], line))
        fed.append({"t": end, "rule": "inner", "line": last, "fields": {"User": group[0]}})
    want = brute_force(outer_kind, ["inner", "b"], outer_span, sorted(outer_bounds.items()) or [("gte", 2)],
                       ["User"], None, sorted(fed, key=lambda e: (e["t"], e["line"])))
    assert seen(found, "outer", ["User"]) == want
    assert seen(found, "inner", ["User"]) == (inner_hits if generate else [])
    alone = sorted(r["EventID"] for r in rows if r["EventID"] == 3 or (generate and r["EventID"] == 2))
    assert sorted({"b": 2, "c": 3}[a["rule"]["id"]] for a in found if a["rule"]["id"] in ("a", "b", "c")) == alone


def test_the_timespans_ends_are_both_in_the_window():
    """Two events exactly a timespan apart are in one window (README: ``[t - timeframe, t]``, both ends)."""
    rows = [{"@timestamp": stamp(t), "EventID": 1, "User": "u"} for t in (0, 10, 21)]
    for bounds, fired in (({"gte": 2}, [10]), ({"eq": 2}, [10]), ({"lt": 2}, [31])):
        found = run([document("event_count", ["a"], ["User"], 10, bounds)], rows)
        assert [h[0] for h in seen(found, "k", ["User"])] == fired, bounds


def test_one_subprocess_run_agrees_with_the_in_process_one():
    """The in-process runs above are the command line's own ``main``; once as its own process."""
    rows = [{"@timestamp": stamp(t), "EventID": 1, "User": "u", "Val": v} for t, v in ((0, "12"), (1, 1.5), (2, None))]
    with tempfile.TemporaryDirectory(prefix="corr-cli-") as directory:
        path = os.path.join(directory, "rules.yml")
        with open(path, "w") as handle:
            handle.write(BASE_RULES + "---\n" + document("value_sum", ["a"], ["User"], 5, {"gte": 13}, "Val"))
        done = run_cli(["--rule", path, "--emit", "alerts", "--quiet"], ndjson(rows))
    assert [(a["sigma"]["correlation"]["value"], len(a["sigma"]["events"])) for a in alerts(done.stdout)] == [(13.5, 2)]


def test_an_alias_giving_one_rule_two_fields_is_an_error():
    """``ip: {a: Src, n_a: Dst}`` names rule a twice (by id and by name) with two fields: the last
    written won in silence, so swapping the two lines changed which events were grouped together."""
    with tempfile.TemporaryDirectory(prefix="corr-cli-") as directory:
        path = os.path.join(directory, "rules.yml")
        with open(path, "w") as handle:
            handle.write(BASE_RULES + "---\n" + document("event_count", ["a"], ["ip"], 10, {"gte": 2},
                                                         aliases={"ip": {"a": "Src", "n_a": "Dst"}}))
        done = run_cli_here(["--rule", path, "--emit", "alerts"], b"")
    assert done.returncode == 2
    assert b"alias 'ip'" in done.stderr and b"two fields" in done.stderr, done.stderr


@settings(max_examples=15, deadline=None)
@given(rows=streams((1, 1, 2, 3)), cut=st.integers(0, 16), generate=st.booleans(),
       kind=st.sampled_from(["value_sum", "value_avg", "value_percentile", "temporal_ordered"]))
def test_a_restart_through_the_state_file_alerts_as_one_run(rows, cut, generate, kind):
    """An aliased value kind, and a chain, cut anywhere by a restart with ``--state``: one run's alerts."""
    field = None if kind == "temporal_ordered" else "v"
    aliases = {"ip": {"a": "Src", "b": "Dst"}, **({"v": {"a": "Val", "b": "Val"}} if field else {})}
    bounds = {} if kind == "temporal_ordered" else {"lte": 50} if kind == "value_percentile" else {"gte": 2}
    documents = [document(kind, ["a", "b"], ["ip"], 4, bounds, field, aliases=aliases),
                 document("event_count", ["a"], ["User"], 3, {"gte": 2}, ident="inner"),
                 document("temporal", ["name_inner", "c"], ["User"], 5, {}, ident="outer", generate=generate)]
    whole = run(documents, rows)
    with tempfile.TemporaryDirectory(prefix="corr-cli-") as directory:
        path, state = os.path.join(directory, "rules.yml"), os.path.join(directory, "state.json")
        with open(path, "w") as handle:
            handle.write(BASE_RULES + "".join("---\n" + d for d in documents))
        parts = []
        for piece in (rows[:cut], rows[cut:]):
            done = run_cli(["--rule", path, "--emit", "alerts", "--quiet", "--state", state], ndjson(piece))
            assert done.returncode == 0, done.stderr.decode()
            parts += alerts(done.stdout)
    for ident, group_by in (("k", ["ip"]), ("outer", ["User"]), ("inner", ["User"])):
        assert seen(parts, ident, group_by) == seen(whole, ident, group_by), ident
