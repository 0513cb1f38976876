"""Input written by an attacker: no line crashes the filter, loses an event or grows without bound.

Each case the issue "Never crash, never go blind, never forget" found is a test here;
the fuzz property at the end sends streams of hostile lines through every mode.
"""

import io
import json
import os
import subprocess
import tempfile

import jsonschema
import pytest
import ujson
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, REPO, alerts, ndjson, records, run_cli
from eventgen import CLIENT, SERVER, evtx_event, flat_event, iso
from pipeshell_filter.cli import build_prefilter, load_plans, make_resolver
from pipeshell_filter.correlate import Correlation, Correlator
from pipeshell_filter.detect import Detection
from pipeshell_filter.engine import Engine
from pipeshell_filter.io.stream import LINES, Diagnostics, Filter, Output, enrich_line, wrap_line
from pipeshell_filter.records import MAX_LIST
from pipeshell_filter.sigma.correlation import CorrelationSpec, RuleRef, Threshold

INCIDENT = [flat_event(0, "srv01", "server", 4104, 1), flat_event(30, "cli01", "client", 800, 2),
            flat_event(60, "cli02", "client", 4103, 3)]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "0001-01-01T00:00:00Z"])
def test_a_time_at_the_edge_of_the_calendar_is_no_crash(stamp):
    event = flat_event(0, "srv01", "server", 4104)
    event["@timestamp"] = stamp
    result = run_cli(["--emit", "all", "--lateness", "0"], ndjson([event] + INCIDENT))
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert len(records(result.stdout)) == 5  # every line, and the incident's alert


def test_a_long_timeframe_before_an_early_event_is_no_crash(tmp_path):
    rule = tmp_path / "long.yml"
    rule.write_text("title: long\ndetection:\n  sel: {ScriptBlockText|contains: NamedPipe}\n"
                    "  condition: sel | count() > 1\n  timeframe: 3650d\n")
    early = [flat_event(0, "a", "server", 4104), flat_event(1, "b", "client", 4104)]
    for event in early:
        event["@timestamp"] = "0002-01-01T00:00:00Z"
    result = run_cli(["--rule", str(rule), "--lateness", "0"], ndjson(early))
    assert result.returncode == 0, result.stderr
    assert alerts(result.stdout)[0]["event"]["start"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "\u0663", "12\u00b3"])
def test_unicode_digits_in_host_or_record_id_are_no_crash(value):
    events = [dict(e, Computer=value + e["Computer"], EventRecordID=value) for e in INCIDENT]
    result = run_cli(["--lateness", "0"], ndjson(events))
    assert result.returncode == 0, result.stderr
    assert alerts(result.stdout)[0]["sigma"]["events"][0]["record_id"] == value


@pytest.mark.parametrize("depth", [980, 1000, 1023])
def test_json_nested_a_thousand_deep_inside_a_matched_field_is_no_crash(depth):
    event = flat_event(0, "srv01", "server", 4104)
    event["EventData"] = "[" * depth + json.dumps(SERVER) + "]" * depth
    line = json.dumps(event).replace(json.dumps(event["EventData"]), event["EventData"]).encode()
    rule_all = ["--rule", _keyword_rule()]
    for args in ([], rule_all):
        result = run_cli(args + ["--emit", "all"], line + b"\n")
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
        assert result.stdout.count(b"\n") >= 1


def _keyword_rule():
    path = tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False)
    path.write("title: keywords\ndetection:\n  k: [namedpipeserverstream]\n  condition: k\n")
    path.close()
    return path.name


@pytest.mark.parametrize("option, value", [("--lateness", "inf"), ("--lateness", "1e300"), ("--idle", "nan"),
                                           ("--idle", "inf"), ("--max-skew", "-1")])
def test_an_absurd_time_option_is_one_line_and_exit_2(option, value):
    result = run_cli([option, value], b"")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr


def test_a_flood_of_hosts_gives_an_alert_of_bounded_size_that_stays_an_alert_when_wrapped(tmp_path):
    """Thousands of hosts in one window: the host lists are cut, with totals; with --non-json wrap
    and a small record cap the alert is made smaller, never turned into a pipeline_error."""
    rule = tmp_path / "many.yml"
    rule.write_text("title: many hosts\ndetection:\n  sel: {ScriptBlockText|contains: NamedPipe}\n"
                    "  condition: sel | count(Computer) > 3000\n  timeframe: 5m\n")
    clients = [flat_event(i / 100, f"host{i:05d}-" + "x" * 300, "client", 4104, i) for i in range(3000)]
    stream = ndjson([flat_event(0, "srv01", "server", 4104, 99999)] + clients)
    rule_args = ["--rule", str(rule), "--lateness", "0"]
    result = run_cli(rule_args, stream)
    alert = alerts(result.stdout)[0]
    assert len(alert["related"]["hosts"]) == MAX_LIST and alert["sigma"]["hosts_total"] == 3001
    assert alert["sigma"]["aggregation"]["values_total"] == 3001
    assert all(len(h) <= 257 for h in alert["related"]["hosts"])
    assert max(len(line) for line in result.stdout.splitlines()) < 200_000
    wrapped = run_cli(rule_args + ["--non-json", "wrap", "--max-record-bytes", "4096"], stream)
    found = alerts(wrapped.stdout)
    assert len(found) == 1 and found[0]["sigma"]["truncated"] is True
    assert max(len(line) for line in wrapped.stdout.splitlines()) < 4096


def test_an_alert_made_smaller_lists_hosts_alike_in_their_first_64_characters_once(tmp_path):
    """``shrink`` cut every host to 64 characters: fully qualified names alike that far became one
    name three times in related.hosts, which the alert schema says holds unique values."""
    schema = json.load(open(os.path.join(REPO, "filter", "pipeshell_filter", "schema", "alert.schema.json")))
    rule = tmp_path / "many.yml"
    rule.write_text("title: many hosts\ndetection:\n  sel: {x: hit}\n  condition: sel | count(Computer) > 30\n"
                    "  timeframe: 5m\n")
    events = [{"@timestamp": f"2020-01-01T00:00:{i:02d}Z", "x": "hit", "Computer": "host-" + "x" * 70 + str(i)}
              for i in range(40)]
    result = run_cli(["--rule", str(rule), "--lateness", "0", "--non-json", "wrap", "--max-record-bytes", "4096"],
                     ndjson(events))
    [alert] = alerts(result.stdout)
    assert alert["sigma"]["truncated"] is True
    jsonschema.validate(alert, schema)
    assert alert["related"]["hosts"] == ["host-" + "x" * 59 + "\u2026"] and alert["sigma"]["hosts_total"] == 31


def test_an_alert_of_escape_heavy_values_stays_an_alert_at_the_smallest_cap(tmp_path):
    """Made smaller, an alert's strings were cut to 64 characters: 64 control characters are 384 bytes of
    JSON, and the hosts, values and commands of three events (each in several lists) kept it at 4.9 KB,
    over a 4,096-byte cap: cut into a pipeline_error record, the alert was lost to its router."""
    schema = json.load(open(os.path.join(REPO, "filter", "pipeshell_filter", "schema", "alert.schema.json")))
    rule = tmp_path / "commands.yml"
    rule.write_text("title: commands\ndetection:\n  sel: {x: hit}\n  condition: sel | count(CommandLine) by User > 1\n"
                    "  timeframe: 5m\n")
    events = [{"@timestamp": f"2020-01-01T00:00:0{i}Z", "x": "hit", "Computer": "\u0001" * 200 + str(i),
               "User": "\u0001" * 300, "CommandLine": "\u0001" * 300 + str(i)} for i in range(4)]
    result = run_cli(["--rule", str(rule), "--lateness", "0", "--non-json", "wrap", "--max-record-bytes", "4096"],
                     ndjson(events))
    assert b"pipeline_error" not in result.stdout, result.stderr
    found = records(result.stdout)
    assert len(found) == 2 and all(alert["sigma"]["truncated"] is True for alert in found)
    assert max(len(line) for line in result.stdout.splitlines()) < 4096
    for alert in found:
        jsonschema.validate(alert, schema)


@pytest.mark.parametrize("kind, mode", [("value_sum", ["--fluentbit-time"]),
                                        ("value_avg", ["--non-json", "wrap"]),
                                        ("value_sum", [])])
def test_an_aggregate_beyond_what_fluent_bit_takes_still_validates(tmp_path, kind, mode):
    """An event of the largest double's bytes makes an aggregate of it, which the Fluent Bit modes write as
    its text (Fluent Bit writes it back beyond a double); the schema said a number, so the alert broke it."""
    schema = json.load(open(os.path.join(REPO, "filter", "pipeshell_filter", "schema", "alert.schema.json")))
    rule = tmp_path / "bytes.yml"
    rule.write_text("title: bytes\nname: bytes\ndetection:\n  sel: {x: hit}\n  condition: sel\n---\n"
                    f"title: many bytes\ncorrelation:\n  type: {kind}\n  rules: [bytes]\n  timespan: 5m\n"
                    "  condition: {gte: 1.0e+300, field: Bytes}\n---\n"
                    "title: legacy bytes\ndetection:\n  sel: {x: hit}\n  condition: sel | sum(Bytes) >= 1\n"
                    "  timeframe: 5m\n")
    event = {"@timestamp": "2020-01-01T00:00:00Z", "x": "hit", "Computer": "h", "Bytes": 1.7976931348623157e308}
    result = run_cli(["--rule", str(rule), "--lateness", "0", *mode], ndjson([event]))
    found = [a[1] if isinstance(a, list) else a for a in records(result.stdout)]
    aggregates = [a["sigma"].get("correlation", a["sigma"].get("aggregation"))["value"] for a in found
                  if "correlation" in a["sigma"] or "aggregation" in a["sigma"]]
    assert len(aggregates) == 2 and all(float(value) > 1e308 for value in aggregates), result.stderr
    for alert in found:
        jsonschema.validate(alert, schema)


def test_correlation_state_has_a_cap_and_sheds_the_oldest_first():
    spec = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gt", 10**9),)),
                           field="Computer")
    correlator = Correlator(spec, 0, max_held=500)
    for i in range(5000):  # one window, never firing, every host new
        correlator.observe(Detection("r", i * 10**7, f"h{i}", (0,), {"Computer": [f"h{i}"]}, {"line": i}))
        assert correlator.state_size() <= 500 + 1
    assert correlator.shed == 5000 - 500
    assert min(correlator.held_times()) == (5000 - 500) * 10**7  # the newest were kept


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["now", "ahead", "late"])), min_size=1, max_size=400),
       st.integers(5, 60), st.booleans())
def test_events_shed_or_evaluated_are_not_kept_by_the_early_alert_index(steps, cap, live):
    """Each group's index of its waiting events (``_Waiting``) kept the entries that left from its front
    until half of them had gone: a flood dated in the future, none of it believed and shed from the
    front at the cap, held up to twice the cap's events (324 MB against 216 for the same flood at
    present).  Whatever arrives, the index refers to exactly the events waiting."""
    spec = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gt", 10**9),)),
                           field="User", group_by=("Group",))
    correlator = Correlator(spec, 0, max_held=cap)
    correlator.early = True  # the index is kept for early alerts only
    wall = 10_000 * 10**9
    if live:
        correlator.clocks.wall = lambda: wall
    at = 1000
    for i, (group, when) in enumerate(steps):
        at += 1
        seconds = {"now": at, "ahead": 10**9 + i, "late": at - 200}[when]
        correlator.observe(Detection("r", seconds * 10**9, f"h{i % 7}" if when != "ahead" else f"f{i}", (0,),
                                     {"User": [f"u{i}"], "Group": [str(group)]}, {"line": i}))
        indexed = sorted(e[1] for w in correlator._waiting.values() for e in w.entries if e is not None)
        assert indexed == sorted(e[1] for e in correlator._pending)
        assert correlator.state_size() <= cap + 1


def test_late_events_joining_an_open_window_are_under_the_cap_too():
    """Two hosts set the watermark at 1000 s; 5,000 events at 970 s (late, yet within the open window)
    from a third: they wait at the watermark, and the cap holds for them as for events on time (they
    went past it: 1.2 GB for 300,000 through the CLI)."""
    spec = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gt", 10**9),)),
                           field="User")
    correlator = Correlator(spec, 0, max_held=500)
    for host in ("h1", "h2"):
        correlator.observe(Detection("r", 1000 * 10**9, host, (0,), {"User": [host]}, {"line": 0}))
    assert correlator.watermark == 1000 * 10**9
    for i in range(5000):
        correlator.observe(Detection("r", 970 * 10**9, "h3", (0,), {"User": [f"u{i}"]}, {"line": i}))
        assert correlator.state_size() <= 500 + 1
    assert correlator.late == 5000 and correlator.shed == 5000 + 2 - 500



@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30), st.sampled_from(["now", "ahead"])),
                min_size=1, max_size=300),
       st.integers(4, 40), st.sampled_from([1, 2, 3]), st.sampled_from([0, 5]), st.booleans())
def test_what_early_alerts_remember_is_bounded_as_the_events_held(steps, cap, least, lateness, live):
    """``--early-alerts`` remembered each early alert's events until the watermark passed their time
    plus the timeframe: a flood of groups that each alerted early within one window kept them all
    (300,000 with ``count() >= 1`` by User, 161 MB against 77 without the option), and a flood dated
    past the wall clock, none of it believed, kept them for good.  Now the events remembered are
    events still held, and as many early alerts are remembered as consumed episodes; no event is in
    two alerts."""
    spec = CorrelationSpec("c", "c", "event_count", (RuleRef("r"),), 60 * 10**9, Threshold((("gte", least),)),
                           group_by=("User",))
    correlator = Correlator(spec, lateness * 10**9, max_held=cap)
    correlator.early = True
    if live:
        correlator.clocks.wall = lambda: 10_000 * 10**9
    hits, at = [], 1000
    for i, (step, group, when) in enumerate(steps):
        at += step % 3
        seconds = at - step % 4 if when == "now" else 10**9 + i
        hits += correlator.observe(Detection("r", seconds * 10**9, f"h{i % 3}" if when == "now" else f"f{i}", (0,),
                                             {"User": [f"u{group}"]}, {"line": i + 1}))
        held = {(t, seq) for t, seq, _ in correlator._held} | {(c.time, seq) for _, seq, c in correlator._pending}
        assert set(correlator._early_used) <= held
        assert len(correlator._early_done) <= len(correlator._early_order) <= cap
    hits += correlator.flush()
    taken = [c.detection.event["line"] for hit in hits for c in hit.contributions]
    assert len(taken) == len(set(taken))


def _quiet_and_flooded(flooded: int) -> list:
    """A correlation of a few events (three logons of one user), and ``flooded`` over another rule
    whose flood never fires (distinct users)."""
    quiet = CorrelationSpec("q", "q", "event_count", (RuleRef("q"),), 60 * 10**9, Threshold((("gte", 3),)),
                            group_by=("User",))
    return [quiet] + [CorrelationSpec(f"f{i}", f"f{i}", "value_count", (RuleRef("f"),), 600 * 10**9,
                                      Threshold((("gt", 10**9),)), field="User", group_by=("User",))
                      for i in range(flooded)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["q", "f", "f", "f"]), st.integers(0, 2), st.sampled_from(["amy", "bob"])),
                max_size=250), st.integers(2, 6), st.integers(24, 60))
def test_the_correlations_together_hold_at_most_their_shared_cap(steps, flooded, cap):
    """Each correlation had a cap of its own and no more: 200 correlations over one rule held 100,000
    events each (20 held 50,000 each of a flood of distinct users: 2.7 GB).  The correlations together
    now hold at most ``max_held_total`` (checked here after every detection), the largest dropping
    their oldest first, so a quiet correlation below its share keeps every event and alert."""
    stream, at, logons = [], 1000, 0
    for i, (rule, step, user) in enumerate(steps):
        at += step
        if rule == "f" or logons < cap // (flooded + 1):  # the quiet one holds no more than its share
            logons += rule == "q"
            stream.append((rule, at * 10**9, user if rule == "q" else f"flood{i}"))

    def run(stream):
        correlation = Correlation(_quiet_and_flooded(flooded), 0)
        correlation.max_held_total = cap
        correlation._held_check_every = correlation._until_held_check = 1
        hits = []
        for i, (rule, time, user) in enumerate(stream):
            hits += correlation.observe(Detection(rule, time, f"h{i % 2}", (0,), {"User": [user]}, {"line": i + 1}))
            assert correlation.held() <= cap
        hits += correlation.flush()
        return [(hit.spec.id, hit.time, hit.group) for hit in hits], correlation

    found, correlation = run(stream)
    alone, _ = run([step for step in stream if step[0] == "q"])
    assert found == alone
    assert correlation.shed_shared == sum(c.shed for c in correlation.correlators)
    assert not correlation.correlators[0].shed
    said = [text for kind, text in correlation.skew_reports(final=True) if kind == "state_cap"]
    shared = f"correlations together held more than {cap} events"
    assert [shared in text for text in said].count(True) == (correlation.shed_shared > 0), said
    assert not [kind for kind, _ in correlation.skew_reports(final=True) if kind == "state_cap"]  # said once


FLOOD_SPEC = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gte", 3),)),
                             field="Computer")
YEAR_2099 = 4_070_908_800 * 10**9


def _value_count_hits(stream, max_held=200):
    correlator = Correlator(FLOOD_SPEC, 0, max_held=max_held)
    hits = []
    for line, (time, host) in enumerate(stream):
        hits += correlator.observe(Detection("r", time, host, (0,), {"Computer": [host]}, {"line": line + 1}))
    hits += correlator.flush()
    return [(hit.time, hit.group, hit.distinct_values) for hit in hits], correlator


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1200), st.sampled_from(["a", "b", "c", "d"])), min_size=2, max_size=60),
       st.integers(250, 600), st.integers(0, 60), st.sampled_from([YEAR_2099, 10**15 * 10**9]))
def test_a_flood_from_a_clock_in_the_future_is_shed_before_the_other_hosts_windows(legit, flood, at, future):
    """One host (forged, or its clock set to 2099) sends more events than the cap while the others
    run: every alert of the others still fires, as without it. Its events were kept and the others'
    windows shed, oldest first, so that the rule went blind for the rest of the run."""
    legit = sorted((t * 10**9, host) for t, host in legit)
    at = min(at, len(legit))
    flooded = legit[:at] + [(future + i, "evil") for i in range(flood)] + legit[at:]
    expected, _ = _value_count_hits(legit)
    found, correlator = _value_count_hits(flooded)
    assert [hit for hit in found if hit[0] < future] == expected
    assert correlator.shed >= flood - 200 if correlator.watermark != float("-inf") else True


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(600, 5000), st.booleans())
def test_the_incident_after_a_flood_held_at_the_cap_still_alerts(times_the_cap, quiet, ahead_too):
    """A flood of distinct hosts in one window (it can never fire) fills the cap; no detection for a
    while; then a real incident.  Its first event, from one host with none yet to vouch for its time,
    counted as a clock in the future and was shed first at the cap, in the flood's place: no alert
    (bench/flood.py, 150,000 hosts).  A few such events now wait and the flood's oldest go; a flood
    from the future (``ahead_too``: as many again, one host in 2099) is still shed first."""
    cap = 300
    engine = Engine(load_plans(None, None), make_resolver("auto", None, None), 0)
    [correlator] = engine.correlation.correlators
    correlator.max_held = cap
    flood = [flat_event(i * 250 / (cap * times_the_cap), f"flood-{i}", "client", 4104)
             for i in range(cap * times_the_cap)]
    in_2099 = 78 * 365 * 86400  # seconds from the events' 2021
    forged = [flat_event(in_2099 + i, "evil", "client", 4104) for i in range(2 * cap)] if ahead_too else []
    incident = [flat_event(250 + quiet, "srv01", "server", 4104), flat_event(280 + quiet, "cli01", "client", 800),
                flat_event(310 + quiet, "cli02", "client", 4103)]
    found = []
    for line, event in enumerate(flood + forged + incident, 1):
        found += engine.process(event, line).alerts
    found += engine.flush()
    assert [sorted(alert["related"]["hosts"]) for alert in found] == [["cli01", "cli02", "srv01"]], found
    assert correlator.shed >= cap * times_the_cap - cap


# ---------------------------------------------------------------- the fuzz suite


def _xml_line(seconds: int, host: str, kind: str, form: str) -> bytes:
    """A PowerShell 4104 as event XML in a syslog line (not JSON: read from its XML), in a collector's record,
    or cut short (refused XML, said ``xml_unread``)."""
    text = flat_event(seconds, host, kind)["ScriptBlockText"].replace("&", "&amp;").replace("<", "&lt;")
    xml = ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
           "<Provider Name='Microsoft-Windows-PowerShell'/><EventID>4104</EventID>"
           f"<TimeCreated SystemTime='{iso(seconds)}'/><EventRecordID>{seconds}</EventRecordID>"
           f"<Channel>Microsoft-Windows-PowerShell/Operational</Channel><Computer>{host}</Computer></System>"
           f"<EventData><Data Name='ScriptBlockText'>{text}</Data></EventData></Event>")
    line = f"Dec  4 10:00:00 {host} pwsh: {xml}"
    if form == "record":
        return json.dumps({"log": line}).encode()
    return (line[:len(line) // 2] if form == "cut" else line).encode()


HOSTILE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"", b"\xef\xbb\xbf{}", b"{\"EventID\": NaN}", b"{\"EventID\": 1e400}", b"{\"a\": \"\\ud800\"}",
                     b"[" * 2000 + b"]" * 2000, b"{" + b"\"a\":{" * 1100 + b"}" * 1101, b"{\"a\":1,,}", b"null",
                     b"{\"@timestamp\": \"0001-01-01T00:00:00+01:00\", \"ScriptBlockText\": \""
                     + SERVER.encode() + b"\"}",
                     b"{\"Computer\": \"\\u00b2\", \"EventID\": 4104, \"ScriptBlockText\": \""
                     + CLIENT.encode() + b"\"}",
                     b"\x00" * 20, b"{}" * 50, b"\t", b"\r"]),
    st.builds(lambda e: json.dumps(e).encode(), st.builds(flat_event, st.integers(-10**6, 10**6),
                                                          st.sampled_from(["a", "b", "c", "\u00b2"]),
                                                          st.sampled_from(["server", "client", "both", "benign"]))),
    st.builds(lambda e: json.dumps(e).encode(), st.builds(evtx_event, st.integers(0, 900), st.sampled_from(["a", "b"]),
                                                          st.sampled_from(["server", "client"]))),
    st.builds(_xml_line, st.integers(0, 900), st.sampled_from(["a", "b", "c"]), st.sampled_from(["server", "client"]),
              st.sampled_from(["text", "record", "cut"])),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(HOSTILE, max_size=20), st.sampled_from(["alerts", "matches", "all"]), st.sampled_from(["pass", "wrap"]),
       st.booleans(), st.booleans(), st.sampled_from(["all", "match"]), st.integers(7, 300))
def test_hostile_streams_through_every_mode(lines, emit, non_json, fluentbit_time, prefilter, stage, block):
    """Exit normally, account for every line, and pass the lines no rule matched on unchanged."""
    data = b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)
    plans = load_plans(None, None)
    scanner = build_prefilter(plans, "auto")[0] if prefilter else None
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.seek(0)
        stream_filter = Filter(Engine(plans, make_resolver("auto", None, None), 0), Output(sink.fileno()),
                               Diagnostics(io.StringIO()), emit, prefilter=scanner, non_json=non_json,
                               fluentbit_time=fluentbit_time, clock=lambda: 0, stage=stage)
        stream_filter.run(source.fileno(), live=False, block_size=block)
        stream_filter.finish()
        sink.seek(0)
        out = sink.read()
    assert stream_filter.lines == len(lines)
    if emit == "all" and non_json == "pass" and not fluentbit_time:
        kept = [line for line in out.split(b"\n")[:-1]
                if b'"kind":"alert"' not in line and not line.startswith(b'{"type":"sigma.detection"')]
        assert len(kept) == len(lines)
        for original, written in zip(lines, kept):
            original = original.replace(b"\n", b" ")
            assert written == original or written.startswith(original.rstrip()[:-1])  # enriched in place
    if non_json == "wrap":
        for line in out.split(b"\n")[:-1]:
            json.loads(line)  # Fluent Bit's input takes every line


# ---------------------------------------------------------------- the small ones


def test_a_byte_order_mark_before_a_line_is_tolerated_and_diagnosed():
    data = b"\xef\xbb\xbf" + ndjson(INCIDENT)
    result = run_cli(["--emit", "all", "--lateness", "0"], data)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(b"\xef\xbb\xbf{") and b'"sigma"' in lines[0]  # parsed, matched, bytes kept
    assert sum(b'"kind":"alert"' in line for line in lines) == 1
    assert b"byte order mark" in result.stderr and b"invalid JSON" not in result.stderr


@pytest.mark.parametrize("body,kind,stage", [(b"{bad", "invalid_json", "all"), (b"[1,2]", "not_object", "all"),
                                             (b'"text"', "not_object", "all"),
                                             (b'{"type": "sigma.detection"}', "impersonation", "match")])
def test_a_pipeline_error_keeps_the_line_as_read_byte_order_mark_included(body, kind, stage):
    """Whatever made the line unusable, ``original`` is the line as it was read (it kept the mark
    for text that is not JSON, and dropped it for a JSON value that is not an object)."""
    line = b"\xef\xbb\xbf" + body
    result = run_cli(["--emit", "all", "--non-json", "wrap", "--stage", stage], line + b"\n")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["error"]["type"] == kind
    assert record["event"]["original"].encode() == line and record["pipeshell"]["bytes"] == len(line)


@pytest.mark.parametrize("args", [["--non-json", "wrap"], ["--fluentbit-time"], ["--emit", "all", "--non-json", "wrap"],
                                  ["--stage", "match", "--non-json", "wrap"]])
def test_a_lone_surrogate_beside_other_non_ascii_text_in_a_matched_value_is_no_crash(args):
    """``portable`` made such a value ASCII text and could not: a host ``\u6f22\ud800`` in a
    matched event ended the filter with a traceback in every Fluent Bit mode."""
    events = [dict(e) for e in INCIDENT]
    events[0]["Computer"] = "\u6f22\ud800srv"
    data = b"".join(json.dumps(event).encode() + b"\n" for event in events)  # the surrogate as an escape
    result = run_cli(args + ["--lateness", "0"], data)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-600:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    if "--fluentbit-time" in args:  # [time, record]
        lines = [line[1] for line in lines]
    if "match" not in args:
        [alert] = [line for line in lines if line.get("event", {}).get("kind") == "alert"]
        assert "\u6f22\\ud800srv" in alert["related"]["hosts"]


def test_a_second_signal_during_a_write_lets_the_record_finish():
    """The second SIGTERM ends the run, but never in the middle of a record."""
    import signal as signal_module

    from pipeshell_filter.io import signals
    from pipeshell_filter.io.stream import Output

    read_end, write_end = __import__("os").pipe()
    stop = signals.StopRequest()
    stop.requested = True  # the first signal came already
    output = Output(write_end, limit=1)
    record = b'{"event": {"kind": "alert"}}\n'
    original_write = __import__("os").write
    calls = []

    def slow_write(fd, data):  # the second signal arrives while the record is half written
        calls.append(len(data))
        if len(calls) == 1:
            stop.set(signal_module.SIGTERM, None)
            return original_write(fd, bytes(data[:5]))
        return original_write(fd, data)

    import pipeshell_filter.io.stream as stream_module
    stream_module.os.write, saved = slow_write, stream_module.os.write
    try:
        with pytest.raises(signals.Terminated):
            output.write(record)
    finally:
        stream_module.os.write = saved
        signals.WRITING.exit_pending = False
    __import__("os").close(write_end)
    assert __import__("os").read(read_end, 1000) == record  # whole, then the run ended


def peak_rss_kb(command: list, data: bytes, tmp_path) -> tuple:
    """(exit status, stdout, stderr, peak RSS in KB) of ``command`` fed ``data``, in a child of its own."""
    import subprocess
    import sys
    (tmp_path / "in").write_bytes(data)
    measure = ("import resource, subprocess, sys\n"
               "with open(sys.argv[1], 'rb') as i, open(sys.argv[2], 'wb') as o, open(sys.argv[3], 'wb') as e:\n"
               "    code = subprocess.run(sys.argv[4:], stdin=i, stdout=o, stderr=e).returncode\n"
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", measure] + [str(tmp_path / n) for n in ("in", "out", "err")] +
                          command, capture_output=True, text=True, timeout=300)
    code, peak = map(int, done.stdout.split())
    return code, (tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes(), peak


def test_merged_inputs_never_hold_a_long_line_in_memory(tmp_path):
    """A 64 MB line among merged files is passed on in pieces: peak RSS stays far below its size."""
    from clitools import COMMAND

    big = tmp_path / "a.ndjson"
    with open(big, "wb") as handle:
        handle.write(ndjson(INCIDENT[:1]))
        handle.write(b'{"blob": "' + b"x" * (64 << 20) + b'"}\n')
        handle.write(ndjson([flat_event(5, "ws04", "benign", 4104)]))
    (tmp_path / "b.ndjson").write_bytes(ndjson(INCIDENT[1:]))
    code, out, _, peak_kb = peak_rss_kb(COMMAND + ["--input", str(big), "--input", str(tmp_path / "b.ndjson"),
                                                   "--emit", "all", "--lateness", "0", "--max-line-bytes",
                                                   str(1 << 20)], b"", tmp_path)
    assert code == 0
    assert peak_kb < 48 * 1024, peak_kb  # the line alone is 64 MB
    written = out.split(b"\n")
    assert len([w for w in written if w.startswith(b'{"blob"')]) == 1
    assert len(next(w for w in written if w.startswith(b'{"blob"'))) == (64 << 20) + 12
    assert sum(b'"kind":"alert"' in w for w in written) == 1


DENSE = (b'{"EventID": 4104, "ScriptBlockText": "NamedPipeServerStream", "x": [' + b"[]," * (4 << 20) + b'[]]}')


@pytest.mark.parametrize("args", [["--emit", "all"], ["--emit", "all", "--no-prefilter"],
                                  ["--emit", "all", "--non-json", "wrap", "--fluentbit-time"]])
def test_a_long_line_of_small_values_is_not_parsed(args, tmp_path):
    """12 MiB of empty lists on one line: parsed, 450 MB of Python objects (1.4 GB in wrap mode);
    now a line of 1 MiB or more with over a million values goes on unparsed, diagnosed too_complex."""
    from clitools import COMMAND
    data = b'{"a": 1}\n' + DENSE + b'\n{"b": 2}\n'
    code, out, err, peak_kb = peak_rss_kb(COMMAND + args, data, tmp_path)
    assert code == 0 and peak_kb < 160 * 1024, (peak_kb, err[-300:])
    lines = out.splitlines()
    assert len(lines) == 3 and b"Traceback" not in err
    if "wrap" in args:
        record = json.loads(lines[1])[1]
        assert record["error"]["type"] == "too_complex" and record["pipeshell"]["bytes"] == len(DENSE)
    else:
        assert lines == data.splitlines()
    if "--no-prefilter" in args or "wrap" in args:  # parsed: diagnosed (the prefilter passes it unread)
        assert b"line 2: more than 1,000,000 JSON values" in err and b"skipped: 1 too many values to parse" in err


@pytest.mark.parametrize("how", ["file", "file one process", "pipe"])
def test_a_line_over_the_limit_in_wrap_mode_is_one_record_with_its_whole_length(tmp_path, how):
    """--non-json wrap: the record of a line over --max-line-bytes keeps its first --max-line-bytes
    and says how long the line was (5 MB here), however the reads cut it."""
    path = tmp_path / "big.ndjson"
    line = b'{"x": "' + b"y" * 5_000_000 + b'"}'
    path.write_bytes(b'{"a": 1}\n' + line + b'\n{"b": 2}\n')
    args = ["--emit", "all", "--non-json", "wrap", "--max-line-bytes", "1024"]
    if how == "pipe":
        result = run_cli(args, path.read_bytes())
    else:
        result = run_cli(args + ["--input", str(path)] + (["--workers", "0"] if "one" in how else []))
    assert result.returncode == 0, result.stderr
    records = [json.loads(text) for text in result.stdout.splitlines()]
    assert records[0] == {"a": 1} and records[2] == {"b": 2} and len(records) == 3
    wrapped = records[1]
    assert wrapped["pipeshell"] == {"line": 2, "bytes": len(line), "truncated": True}
    assert wrapped["event"]["original"].encode() == line[:1024] and wrapped["error"]["type"] == "too_long"
    assert b"line 2: line too long to inspect; wrapped, cut" in result.stderr


def test_after_a_flood_the_tables_that_held_it_are_copied_at_their_present_size():
    """A dict never shrinks its table: once a flood's window has passed, the correlation copies
    its tables afresh so that their memory can go back (``Correlator.compact``)."""
    import sys

    from pipeshell_filter.correlate import Correlation

    spec = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gt", 10**9),)),
                           field="Computer")
    correlation = Correlation([spec], 0)
    for i in range(20_000):  # one window, never firing, every host new
        correlation.observe(Detection("r", i * 10**6, f"h{i}", (0,), {"Computer": [f"h{i}"]}, {"line": i}))
    correlator = correlation.correlators[0]
    flooded = sum(sys.getsizeof(w.values) for w in correlator._windows.values())
    for i in range(100):  # ordinary events every 10 s, so the window never empties: the flood passes
        t = 20 * 10**9 + i * 10 * 10**9
        correlation.observe(Detection("r", t, f"late{i % 3}", (0,), {"Computer": [f"late{i % 3}"]}, {"line": i}))
    after = sum(sys.getsizeof(w.values) for w in correlator._windows.values())
    assert correlator.held_count() < 100
    assert flooded > 100_000 and after < 10_000, (flooded, after)


def test_a_passing_flood_gives_memory_back_at_each_quarter_and_once_more_between_blocks(monkeypatch):
    """A flood's memory goes back as its state shrinks, at each quarter of its peak down to
    almost nothing, and once more when the stream is between blocks: what its last objects
    freed meanwhile would stay pinned in Python's free lists (``Correlation.release_memory``)."""
    import pipeshell_filter.correlate as correlate

    given_back = []
    monkeypatch.setattr(correlate, "give_back_memory", lambda: given_back.append(1))
    spec = CorrelationSpec("c", "c", "value_count", (RuleRef("r"),), 300 * 10**9, Threshold((("gt", 10**9),)),
                           field="Computer")
    plans = load_plans(None, None)
    engine = Engine(plans, make_resolver("auto", None, None), 0)
    correlation = engine.correlation = correlate.Correlation([spec], 0)
    for i in range(40_000):  # one window, never firing, every host new
        correlation.observe(Detection("r", i * 10**6, f"h{i}", (0,), {"Computer": [f"h{i}"]}, {"line": i}))
    assert not given_back and not correlation.release_due
    held = []
    for i in range(90):  # the flood leaves the window a little at a time
        t = 300 * 10**9 + i * 5 * 10**8
        correlation.observe(Detection("r", t, f"late{i % 3}", (0,), {"Computer": [f"late{i % 3}"]}, {"line": i}))
        held.append((correlation.correlators[0].held_count(), len(given_back)))
    releases = [count for (count, n), (_, before) in zip(held, [(0, 0)] + held) if n > before]
    assert len(releases) >= 3 and releases[-1] < 100, releases  # 40,000 -> under 10,000 -> ... -> under 100
    assert correlation.release_due
    with tempfile.TemporaryFile() as sink:
        stream_filter = Filter(engine, Output(sink.fileno()), Diagnostics(io.StringIO()), "all", clock=lambda: 0)
        stream_filter.before_block()  # the reader is about to wait
        assert len(given_back) == len(releases) + 1 and not correlation.release_due
        stream_filter.before_block()  # once only
        stream_filter.process(LINES, b'{"a": 1}\n', 0, 9)
        assert len(given_back) == len(releases) + 1
        correlation.release_due = True  # a release in the middle of the last block: at the next one
        stream_filter.process(LINES, b'{"a": 1}\n', 0, 9)
        assert len(given_back) == len(releases) + 2 and not correlation.release_due


# ---------------------------------------------------------------- an event that has a "sigma" key already

_MEMBER_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                        st.sampled_from(["1.50", "1e400", "-0"]),
                                        st.text(alphabet='a"\\}{],/é\u2028', max_size=5)),
                              lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.sampled_from(["a", "sigma", "}"]), inner,
                                                                      max_size=2)),
                              max_leaves=6)


def _member_text(key, value, escape_key, blank):
    def text(v):
        if isinstance(v, str) and v in ("1.50", "1e400", "-0"):
            return v  # a number as written
        if isinstance(v, list):
            return "[" + f",{blank}".join(map(text, v)) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(k) + ":" + text(x) for k, x in v.items()) + "}"
        return json.dumps(v, ensure_ascii=False)
    name = "".join(f"\\u{ord(c):04x}" for c in key) if escape_key else key
    return f'"{name}"{blank}:{blank}{text(value)}'


@given(st.lists(st.tuples(st.sampled_from(["x", "sigma", "n", "sigmas"]), _MEMBER_VALUES, st.booleans()), max_size=5),
       st.sampled_from(["", " ", "\t", "  \r\n "]), st.sampled_from([b"", b" ", b"\xef\xbb\xbf", b"\xef\xbb\xbf\t"]))
def test_an_events_own_sigma_members_are_cut_out_and_every_other_byte_kept(members, blank, lead):
    """An event that already had a "sigma" key was re-serialised whole: numbers rewritten (1.50,
    and 1e400 as Infinity, which is no JSON), escapes and duplicate keys changed.  A line with a
    byte order mark or blanks before its brace made the cut read them as a key: a traceback."""
    pieces = [_member_text(key, value, escaped, blank) for key, value, escaped in members]
    line = lead + ("{" + blank + f"{blank},{blank}".join(pieces) + blank + "}").encode()
    event = ujson.loads(line[3:] if line.startswith(b"\xef\xbb\xbf") else line)
    enriched = enrich_line(line, event, {"mine": True})
    assert enriched.startswith(lead)
    enriched = enriched[len(lead):]
    kept = [piece.encode() for (key, _, _), piece in zip(members, pieces) if key != "sigma"]
    at = 0
    for piece in kept:  # every other member, byte for byte, in order
        found = enriched.find(piece, at)
        assert found >= 0, (piece, enriched)
        at = found + len(piece)
    pairs = json.loads(enriched.replace(b"1e400", b"1"), object_pairs_hook=lambda items: items)
    assert [key for key, _ in pairs] == [key for key, _, _ in members if key != "sigma"] + ["sigma"]
    assert pairs[-1][1] == [("mine", True)]


@given(st.text(" \t\r", max_size=4), st.booleans())
def test_an_enriched_line_keeps_the_blanks_after_its_brace(after, sigma_of_its_own):
    """They were cut off (a framed line's were kept): of a file with CRLF line ends, ``--emit all`` wrote the
    matched lines without their CR among the others with theirs, and a reader splitting at CRLF joined each
    matched line to the next."""
    line = b'{"a": 1' + (b', "sigma": 2' if sigma_of_its_own else b"") + b"}" + after.encode()
    enriched = enrich_line(line, ujson.loads(line), {"mine": True})
    assert enriched == b'{"a": 1,"sigma":{"mine":true}}' + after.encode()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_emit_all_of_a_file_with_crlf_line_ends_keeps_them_on_every_line(tmp_path, workers):
    path = tmp_path / "crlf.ndjson"
    path.write_bytes(ndjson(INCIDENT).replace(b"\n", b"\r\n"))
    with open(path, "rb") as source:
        result = subprocess.run(COMMAND + ["--emit", "all", "--lateness", "0", "--workers", workers], stdin=source,
                                capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split(b"\n")[:-1]
    events = [line for line in lines if b'"kind":"alert"' not in line]
    assert len(events) == 3 and all(b'"sigma"' in line for line in events)
    assert all(line.endswith(b"\r") for line in events), events


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1200), st.sampled_from(["a", "b", "c", "d", "e"]), st.booleans()),
                max_size=80), st.integers(20, 200), st.booleans(), st.integers(0, 3))
def test_with_state_the_identities_of_a_flood_are_bounded_and_every_held_event_is_taken_once(
        legit, flood, future, again):
    """``--state`` remembers the identity of each event taken (``state.Seen``): a flood of distinct hosts in
    one window kept every identity past the cap (a million in memory and in the state file; 495 MB resident
    for 400,000 events, against 216 MB without --state).  At most twice the cap now, never more than the
    events held while they fit, and an event held, sent again, is still dropped as taken."""
    correlation = Correlation([FLOOD_SPEC])
    [correlator] = correlation.correlators
    correlator.max_held = 20
    correlation.take_once()  # as --state does
    start = YEAR_2099 if future else 600 * 10**9
    stream = [(t * 10**9, host, dup) for t, host, dup in sorted(legit)]
    at = len(stream) // 2
    stream = stream[:at] + [(start + i * 10**6, f"h{i}", False) for i in range(flood)] + stream[at:]
    taken = []
    for line, (time, host, dup) in enumerate(stream):
        detection = Detection("r", time, host, (0,), {"Computer": [host]}, {"line": line + 1})
        correlator.observe(detection)
        taken.append(detection)
        assert len(correlator.seen) == len(correlator.seen.order) <= 2 * correlator.max_held
        for _ in range(again if dup else 0):  # sent again at once: never a second time in a window
            before = correlator.held_count()
            correlator.observe(Detection("r", time, host, (0,), {"Computer": [host]}, {"line": line + 1}))
            assert correlator.held_count() == before
    held = {id(c.detection) for _, _, c in correlator._pending} | \
        {id(c.detection) for window in correlator._windows.values() for c in window.events.values()}
    keys = {correlator.seen.key(d) for d in taken if id(d) in held}
    assert keys <= correlator.seen.keys  # each event still held is remembered: sent again, it is dropped


def test_the_summary_names_what_was_skipped_and_apart_what_was_passed_on_rewritten():
    """A line of an integer past Python's digit limit is said in the filter's words (Python's own
    advised a call to sys.set_int_max_str_digits) and skipped; a record Fluent Bit cannot take and a
    line forging the filter's own record type go on rewritten: not "skipped", and not a bare kind."""
    huge = b'{"EventID": 4104, "n": ' + b"7" * 5000 + b"}\n"
    result = run_cli(["--emit", "all", "--fluentbit-time", "--no-prefilter"],
                     huge + b'{"EventID": NaN}\n' + b'{"type": "sigma.detection"}\n')
    assert result.returncode == 0
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("pipeshell-filter: line 1: an integer of more than ") and \
        lines[0].endswith(" digits; not read"), lines
    assert lines[-1] == ("pipeshell-filter: 1 rule; 3 lines; 0 matched; 0 alerts; skipped: 1 invalid JSON; "
                         "1 record(s) Fluent Bit cannot take written as pipeline_error (unportable)"), lines
    forged = run_cli(["--stage", "match", "--heartbeat", "0"], b'{"type": "sigma.detection"}\n')
    assert forged.stderr.decode().splitlines()[-1] == ("pipeshell-filter: 1 rule; 1 line; 0 matched; 0 alerts; "
                                                        "1 line(s) of the filter's own record types wrapped "
                                                        "(impersonation)")


BRUTE_FORCE = """title: failed logon
name: failed_logon
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625}
  condition: sel
---
title: brute force
correlation: {type: event_count, rules: [failed_logon], group-by: [TargetUserName], timespan: 5m,
              condition: {gte: 4}}
"""


@pytest.mark.parametrize("stages", ["one", "two"])
def test_a_brute_force_that_varies_the_case_of_the_account_is_one_group(tmp_path, stages):
    """A Windows account name has no letter case: ``admin``, ``Admin`` and ``ADMIN`` log on alike.  Each
    was a group of its own, one or two tries each, so a brute force of any size stayed under every
    threshold; the alert shows the account as its first event wrote it."""
    rule = tmp_path / "r.yml"
    rule.write_text(BRUTE_FORCE)
    names = ["Admin", "admin", "ADMIN", "aDmIn", "bob"]
    lines = [{"EventID": 4625, "Channel": "Security", "Computer": "dc1", "TargetUserName": name,
              "@timestamp": f"2026-12-04T10:00:0{i}Z"} for i, name in enumerate(names)]
    if stages == "one":
        out = run_cli(["--rule", str(rule), "--emit", "alerts"], ndjson(lines)).stdout
    else:
        matched = run_cli(["--rule", str(rule), "--stage", "match"], ndjson(lines))
        out = run_cli(["--rule", str(rule), "--stage", "correlate"], matched.stdout).stdout
    [alert] = alerts(out)
    assert alert["sigma"]["correlation"]["group"] == {"TargetUserName": "Admin"}
    assert alert["sigma"]["correlation"]["value"] == 4 and alert["sigma"]["events_total"] == 4


def test_a_state_saved_before_group_values_were_folded_keeps_its_consumed_episodes(tmp_path):
    """A state written before group-by values were case-folded holds a consumed episode under the
    spelling of its first event (``Admin``): restored as it is, the episode's other events (``ADMIN``)
    were a group of their own and alerted on it once more."""
    rule, state = tmp_path / "r.yml", tmp_path / "state.json"
    rule.write_text(BRUTE_FORCE)

    def tries(names, first):
        return ndjson([{"EventID": 4625, "Channel": "Security", "Computer": "dc1", "TargetUserName": name,
                        "@timestamp": f"2026-12-04T10:00:{first + i:02d}Z"} for i, name in enumerate(names)])

    args = ["--rule", str(rule), "--emit", "alerts", "--state", str(state)]
    assert len(alerts(run_cli(args, tries(["Admin"] * 4, 0)).stdout)) == 1
    document = json.loads(state.read_text())
    [saved] = [c for c in document["correlations"].values() if c["consumed"]]
    assert [group for _, group in saved["consumed"]] == [["admin"]]
    saved["consumed"] = [[t, ["Admin"]] for t, _ in saved["consumed"]]  # as a state of the last build held it
    state.write_text(json.dumps(document))
    again = run_cli(args, tries(["ADMIN"] * 4, 1))  # the same episode, sent again in other letters
    assert again.returncode == 0, again.stderr
    assert alerts(again.stdout) == []


def test_a_matched_record_cut_at_the_cap_is_said_as_such_not_as_a_skipped_line():
    """The summary said "skipped: 1 too long" of an event that was matched and correlated, and whose
    output record alone was cut under ``--max-record-bytes``."""
    big = flat_event(0, "srv01", "server", 4104)
    big["pad"] = "x" * 6000
    result = run_cli(["--emit", "all", "--non-json", "wrap", "--max-record-bytes", "4096"], ndjson([big]))
    assert result.returncode == 0, result.stderr
    [record] = records(result.stdout)
    assert record["error"]["type"] == "too_long"
    said = result.stderr.decode()
    assert "1 matched" in said and "too long" not in said.splitlines()[-1], said
    assert "1 record(s) over --max-record-bytes written cut as pipeline_error (record_cut)" in said, said


@pytest.mark.parametrize("line", [b"x" * 10_000, "\u00e9".encode() * 5_000, b"\x01" * 10_000])
@pytest.mark.parametrize("framed", [[], ["--fluentbit-time"]])
def test_a_wrapped_line_keeps_as_much_of_its_text_as_the_cap_lets_it(line, framed):
    """Cut for the worst growth of a byte as JSON (six), a line of plain text kept 597 of its characters
    under a cap of 4,096; now it keeps what fits, at the rate its text grew, and a frame still fits."""
    result = run_cli(["--emit", "all", "--non-json", "wrap", "--max-record-bytes", "4096", *framed], line + b"\n")
    [out] = result.stdout.splitlines()
    assert len(out) <= 4096
    record = json.loads(out)[1] if framed else json.loads(out)
    written = len(json.dumps(record["event"]["original"]))
    assert record["pipeshell"]["truncated"] and written > 3000, written


@pytest.mark.parametrize("char", ["\u00e9", "\u4e2d", "\U0001f600"])
@pytest.mark.parametrize("cap", range(4096, 4104))
def test_a_line_cut_to_fit_keeps_whole_characters(char, cap):
    """Cut inside a character, a line's kept text ended in its first bytes shown as ``\\xNN``: invalid
    UTF-8 the line did not hold."""
    line = char.encode() * 5_000
    record = json.loads(wrap_line(line, "too_long", "line too long", 1, cap))
    kept = record["event"]["original"]
    assert record["pipeshell"]["truncated"] and len(kept) > 100 and line.decode().startswith(kept), kept[-10:]
    for whole in (b"", char.encode(), b"x" + char.encode(), b"\x80" * 5, b"\xc3"):  # within the cap: all of it
        record = json.loads(wrap_line(whole, "invalid_json", "not JSON", 1, cap))
        assert record["event"]["original"] == whole.decode("utf-8", "backslashreplace")
    head = line[:2047]  # the first --max-line-bytes of a longer line, cut where they end
    record = json.loads(wrap_line(head, "too_long", "line too long", 1, cap, len(line)))
    kept = record["event"]["original"]
    assert len(kept) > 100 and line.decode().startswith(kept), kept[-10:]
