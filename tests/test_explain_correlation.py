"""``explain --events``: a stream through the real engine, and per correlation why its windows did or did not fire."""

import os

import ujson
import yaml
from hypothesis import example, given, settings, strategies as st

from clitools import REPO, alerts, ndjson, run_cli, run_cli_here
from eventgen import flat_event, iso
from pipeshell_filter.cli import load_plans, make_resolver
from pipeshell_filter.detect import WIRE_TYPE
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.explain import CorrelationTrace
from pipeshell_filter.io.stream import DEFAULT_MAX_LINE

SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")

FAILED = """title: Failed login
name: failed_login
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4625}, condition: sel}
"""
MANY = yaml.safe_dump({"title": "many failures", "id": "many", "correlation": {
    "type": "event_count", "rules": ["failed_login"], "group-by": ["User"], "timespan": "5m",
    "condition": {"gte": 3}}})


def failure(seconds, user, host, channel="Security"):
    return {"EventID": 4625, "Channel": channel, "Computer": host, "User": user, "@timestamp": iso(seconds)}


def rules(tmp_path):
    (tmp_path / "failed.yml").write_text(FAILED)
    (tmp_path / "many.yml").write_text(MANY)
    return ["--rule", str(tmp_path / "failed.yml"), "--rule", str(tmp_path / "many.yml")]


def explain_events(tmp_path, events, *args):
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(events))
    result = run_cli(["explain", "--events", str(path), *args])
    assert result.returncode == 0, result.stderr
    assert not result.stderr
    return result.stdout.decode()


def filtered(tmp_path, events, *args):
    """The alerts the filter itself writes for the same stream, read from a file as explain reads it."""
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(events))
    result = run_cli(["--input", str(path), "--quiet", *args])
    assert result.returncode == 0, result.stderr
    return alerts(result.stdout)


def traced(directory, plans, events, lateness, **options) -> CorrelationTrace:
    """``explain --events`` in process: the events, as a file in ``directory``, through the filter."""
    path = directory / "events.ndjson"
    path.write_bytes(ndjson(events))
    trace = CorrelationTrace(Engine(plans, make_resolver("auto", None, None), lateness * NS))
    trace.read(str(path), **options)
    return trace


def test_builtin_rule_on_the_example_reports_the_window_that_fired_and_its_hosts():
    result = run_cli(["explain", "--events", SAMPLE])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("events    89 read; lateness 60s")
    assert "correlation PipeShell exfiltration over named pipes\n" in text
    assert "  fires when count(Computer) > 2 within 5m, one group; every input must occur\n" in text
    assert "  input term '1 of SERVER*': 1 event (line 30)\n" in text
    assert "  input term '1 of CLIENT*': 2 events (lines 42, 49)\n" in text
    assert "    line 30  2026-11-02T09:03:21.114281Z  host srv01.corp.example  term '1 of SERVER*': on time\n" in text
    [fired] = [line for line in text.splitlines() if line.startswith("  fired at ")]
    # the same alert the filter writes on the same file
    [alert] = alerts(run_cli(["--input", SAMPLE, "--quiet"]).stdout)
    assert fired.startswith(f"  fired at {alert['@timestamp']}  (one group): count(Computer) 3 > 2 within ")
    assert "consumed lines 30, 42, 49" in fired
    assert fired.endswith("hosts cli01.corp.example, cli02.corp.example, srv01.corp.example")
    assert "did not fire" not in text and "no window fired" not in text
    assert run_cli(["explain", "--events", SAMPLE]).stdout.decode() == text  # deterministic


def test_event_count_one_event_short_reports_the_best_count_and_the_unmet_condition(tmp_path):
    events = [failure(0, "alice", "dc1"), failure(30, "bob", "dc1"), failure(60, "alice", "dc2"),
              failure(400, "alice", "dc1")]
    text = explain_events(tmp_path, events, *rules(tmp_path))
    assert text == (
        "events    4 read; lateness 60s; the end of input makes every window final\n"
        "correlation many failures\n"
        "  fires when count >= 3 within 5m, per User\n"
        "  input rule failed_login ('Failed login'): 4 events (lines 1, 2, 3, 4)\n"
        "  events (4):\n"
        "    line 1  2021-06-03T13:00:00Z  host dc1  User=alice  rule failed_login: on time\n"
        "    line 2  2021-06-03T13:00:30Z  host dc1  User=bob  rule failed_login: on time\n"
        "    line 3  2021-06-03T13:01:00Z  host dc2  User=alice  rule failed_login: on time\n"
        "    line 4  2021-06-03T13:06:40Z  host dc1  User=alice  rule failed_login: on time\n"
        "  did not fire  User=alice: best count 2 of needed >= 3 within 5m, events at lines 1, 3 (window ending "
        "2021-06-03T13:01:00Z): condition not met within the timespan\n"
        "  did not fire  User=bob: best count 1 of needed >= 3 within 5m, events at line 2 (window ending "
        "2021-06-03T13:00:30Z): condition not met within the timespan\n"
        "  no window fired\n")
    assert filtered(tmp_path, events, *rules(tmp_path)) == []
    # one more in the window and it fires, as the filter says too
    events.insert(3, failure(90, "alice", "dc1"))
    text = explain_events(tmp_path, events, *rules(tmp_path))
    assert "  fired at 2021-06-03T13:01:30Z  User=alice: count 3 >= 3 within [2021-06-03T12:56:30Z, " \
           "2021-06-03T13:01:30Z]; consumed lines 1, 3, 4; hosts dc1, dc2\n" in text
    assert "then did not fire again  User=alice: best count 1 of needed >= 3" in text
    [alert] = filtered(tmp_path, events, *rules(tmp_path))
    assert alert["@timestamp"] == "2021-06-03T13:01:30Z"


def test_late_event_left_out_is_named_as_the_reason(tmp_path):
    events = [failure(0, "alice", "dc1"), failure(10, "alice", "dc2"), failure(400, "bob", "dc1"),
              failure(410, "bob", "dc2"), failure(20, "alice", "dc3")]
    text = explain_events(tmp_path, events, *rules(tmp_path), "--lateness", "0")
    assert ("    line 5  2021-06-03T13:00:20Z  host dc3  User=alice  rule failed_login: late: 380s behind the "
            "watermark 2021-06-03T13:06:40Z, older than watermark - 5m: left out of correlation\n") in text
    assert ("  did not fire  User=alice: best count 2 of needed >= 3 within 5m, events at lines 1, 2 (window ending "
            "2021-06-03T13:00:10Z): condition not met within the timespan; line 5 came too late behind the "
            "watermark (left out)\n") in text
    assert filtered(tmp_path, events, *rules(tmp_path), "--lateness", "0") == []
    # in time order the same events fire: it was the lateness
    ordered = sorted(events, key=lambda e: e["@timestamp"])
    assert len(filtered(tmp_path, ordered, *rules(tmp_path), "--lateness", "0")) == 1
    assert "  fired at 2021-06-03T13:00:20Z  User=alice" in explain_events(tmp_path, ordered, *rules(tmp_path),
                                                                           "--lateness", "0")


def test_late_event_that_joins_an_open_window(tmp_path):
    events = [failure(0, "alice", "dc1"), failure(10, "alice", "dc2"), failure(100, "bob", "dc1"),
              failure(110, "bob", "dc2"), failure(20, "alice", "dc3")]
    text = explain_events(tmp_path, events, *rules(tmp_path), "--lateness", "0")
    assert ("line 5  2021-06-03T13:00:20Z  host dc3  User=alice  rule failed_login: late: 80s behind the watermark "
            "2021-06-03T13:01:40Z; joined the windows still open\n") in text
    assert "  fired at 2021-06-03T13:01:40Z  User=alice: count 3 >= 3" in text
    [alert] = filtered(tmp_path, events, *rules(tmp_path), "--lateness", "0")
    assert alert["@timestamp"] == "2021-06-03T13:01:40Z"


def test_a_term_never_met_and_events_out_of_logsource(tmp_path):
    clients = [flat_event(0, "cli01", "client"), flat_event(30, "cli02", "client"), flat_event(60, "cli03", "client")]
    text = explain_events(tmp_path, clients)
    assert "  input term '1 of SERVER*': met by no event\n" in text
    assert ("  did not fire  (one group): best count(Computer) 3 of needed > 2 within 5m, events at lines 1, 2, 3 "
            "(window ending 2021-06-03T13:01:00Z): term '1 of SERVER*' never met\n") in text
    events = [failure(0, "alice", "dc1"), failure(10, "alice", "dc1", "System"), failure(20, "alice", "dc2")]
    text = explain_events(tmp_path, events, *rules(tmp_path))
    assert ("  input rule failed_login ('Failed login'): 2 events (lines 1, 3); 1 event met it out of its "
            "logsource (line 2)\n") in text
    assert "best count 2 of needed >= 3" in text


def test_no_event_feeds_it_and_usage_errors(tmp_path):
    text = explain_events(tmp_path, [flat_event(0, "ws04", "benign"), {"no": "time"}])
    assert "  did not fire: no event fed it\n" in text and text.startswith("events    2 read")
    path = tmp_path / "events.ndjson"
    both = run_cli(["explain", "--event", str(path), "--events", str(path)])
    assert both.returncode == 2 and b"not both" in both.stderr
    missing = run_cli(["explain", "--events", str(tmp_path / "nope.ndjson")])
    assert missing.returncode == 2 and b"nope.ndjson" in missing.stderr
    assert run_cli(["explain", "--events", str(path), "--lateness", "-1"]).returncode == 2


BURST = """title: Failed burst
id: 11111111-1111-4111-8111-111111111111
name: failed_burst
logsource: {product: windows, service: security}
detection:
  selection: {EventID: 4625}
  timeframe: 10m
  condition: selection | count() by User > 2
---
title: Success login
name: successful_login
logsource: {product: windows, service: security}
detection: {selection: {EventID: 4624}, condition: selection}
---
""" + yaml.safe_dump({"title": "burst then success", "id": "chain", "correlation": {
    "type": "temporal_ordered", "rules": ["failed_burst", "successful_login"], "group-by": ["User"],
    "timespan": "10m"}})


def test_a_chained_legacy_rule_feeds_its_alerts_and_hosts_as_the_filter_does(tmp_path):
    """A v2 correlation over a v1 aggregation rule takes that rule's alerts, not its matches (as
    the engine routes them); the window that fired lists the hosts its alert lists."""
    (tmp_path / "rules.yml").write_text(BURST)
    events = [failure(0, "bob", "h1"), failure(30, "amy", "h1"), failure(60, "bob", "h2"), failure(120, "bob", "h1"),
              dict(failure(180, "bob", "h3"), EventID=4624), dict(failure(300, "amy", "h1"), EventID=4624)]
    args = ["--rule", str(tmp_path / "rules.yml")]
    text = explain_events(tmp_path, events, *args)
    outer = text[text.index("correlation burst then success"):]
    assert "input correlation failed_burst ('Failed burst'): 1 event (line 4)" in outer
    assert "correlation failed_burst ('Failed burst') never met in this group" in outer  # amy: no burst
    (alert,) = [a for a in filtered(tmp_path, events, *args) if a["rule"]["id"] == "chain"]
    assert alert["related"]["hosts"] == ["h1", "h3"]
    assert "consumed lines 4, 5; hosts h1, h3" in outer


def test_a_host_or_group_value_cannot_write_lines_of_the_report(tmp_path):
    """A host or user name from the events holding a newline (or U+2028) printed raw: an event could
    write lines that read as the report's own ("  fired at ...").  They are written as escapes: the
    report has the same lines, in the same places, as with plain names."""
    hostile = "h\n  fired at 2026-01-01T00:00:00Z (one group): faked\u2028\x85"
    plain, forged = ([failure(s, user, host) for s in (0, 10, 20)]
                     for user, host in (("u", "h"), (hostile, hostile)))
    shown, quoted = (explain_events(tmp_path, events, *rules(tmp_path)) for events in (plain, forged))
    assert len(quoted.splitlines()) == len(shown.splitlines())
    assert [line.startswith("  fired at ") for line in quoted.splitlines()].count(True) == 1
    assert "host h\\u000a  fired at 2026-01-01T00:00:00Z (one group): faked\\u2028\\u0085  " in quoted
    assert "User=h\\u000a  fired at" in quoted


TWO_RULES = FAILED + """---
title: Failed login again
name: failed_again
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4625}, condition: sel}
---
""" + yaml.safe_dump({"title": "failures", "id": "both", "correlation": {
    "type": "event_count", "rules": ["failed_login", "failed_again"], "group-by": ["User"], "timespan": "20s",
    "condition": {"gte": 3}}})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.sampled_from(["dc1", "dc2"]), st.sampled_from(["amy", "bob"])),
                min_size=2, max_size=25), st.sampled_from([0, 5, 30]))
def test_an_event_two_rules_feed_has_one_verdict_and_the_engines_late_counts(tmp_path_factory, rows, lateness):
    """An event meeting both rules of an event_count is one event to the correlator: taken, or
    late, once.  Its second detection was listed "on time" even when the event came late and was
    left out.  Each line has one verdict, and the lines listed late are the engine's late count."""
    path = tmp_path_factory.mktemp("two") / "rules.yml"
    path.write_text(TWO_RULES)
    events = [failure(seconds, user, host) for seconds, host, user in rows]
    plans = load_plans([str(path)], None)
    trace = traced(path.parent, plans, events, lateness)
    engine = Engine(plans, make_resolver("auto", None, None), lateness * NS)
    for number, event in enumerate(events, 1):
        engine.process(event, number)
    engine.flush()
    [fed] = trace.fed.values()
    verdicts = {}
    for entry in fed:
        verdicts.setdefault(entry.line, set()).add(entry.status.split(":")[0])
    assert all(len(found - {"the same event as for another rule just above"}) == 1 for found in verdicts.values())
    late = [line for line, found in verdicts.items() if "late" in found]
    assert len(late) == engine.correlation_stats()["late"]
    assert all("on time" not in found for line, found in verdicts.items() if line in late)


def test_a_line_too_dense_for_the_filter_to_parse_feeds_no_window(tmp_path):
    """A line of over 1 MiB with over a million values the filter does not parse (``too_complex``);
    explain parsed it, and showed a window fire on it that the filter never alerted on."""
    events = [failure(0, "alice", "dc1"), failure(10, "alice", "dc2")]
    dense = ndjson([failure(20, "alice", "dc3")])[:-2] + b', "pad": [' + b",".join([b"0"] * 1_100_000) + b"]}\n"
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(events) + dense)
    result = run_cli(["explain", "--events", str(path), *rules(tmp_path)])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("events    2 read, 1 not read (not a JSON object, or too long or dense to parse: skipped)")
    assert "  no window fired\n" in text and "fired at" not in text
    assert alerts(run_cli(["--input", str(path), "--quiet", *rules(tmp_path)]).stdout) == []


def fired_and_alerted(rule_path, events, lateness):
    """(what explain says alerted, what the engine alerted): (title, time) of each, sorted."""
    plans = load_plans([str(rule_path)], None)
    trace = traced(rule_path.parent, plans, events, lateness)
    engine = Engine(plans, make_resolver("auto", None, None), lateness * NS)
    written = []
    for number, event in enumerate(events, 1):
        written += engine.process(event, number).alerts
    written += engine.flush()
    said, title = [], None
    for line in trace.report().splitlines():
        title = line[len("correlation "):] if line.startswith("correlation ") else title
        if line.startswith("  fired at ") and not line.endswith("; no alert (not generated)"):
            said.append((title, line.split()[2]))
    alerted = [(a["rule"]["name"], a["@timestamp"]) for a in written if "timeframe_seconds" in a.get("sigma", {})]
    return sorted(said), sorted(alerted)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["h1", "h2"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4625, 4624])), min_size=2, max_size=25), st.sampled_from([0, 60]))
def test_a_window_of_a_correlation_without_generate_is_not_shown_as_an_alert(tmp_path_factory, rows, lateness):
    """An aggregation that feeds a correlation without ``generate`` writes no alert of its own;
    explain showed its windows "fired at" as any other's.  It says they make no alert, and the
    windows it shows fired otherwise are the engine's alerts."""
    path = tmp_path_factory.mktemp("quiet") / "rules.yml"
    path.write_text(BURST)
    events = [dict(failure(seconds, user, host), EventID=event_id) for seconds, host, user, event_id in rows]
    said, alerted = fired_and_alerted(path, events, lateness)
    assert said == alerted


EITHER = FAILED + """---
title: Success login
name: successful_login
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4624}, condition: sel}
---
""" + yaml.safe_dump({"title": "failure and success", "id": "pair", "correlation": {
    "type": "temporal", "rules": ["failed_login", "successful_login"], "group-by": ["User"], "timespan": "1m"}})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["h1", "h2"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4624])), min_size=2, max_size=20), st.sampled_from([0, 20]))
def test_an_input_said_never_met_in_a_group_was_met_by_none_of_its_events(tmp_path_factory, rows, lateness):
    """"never met in this group" was said of an input that an event of the group did meet, but
    too late to count (it is "met only too late") or before the group's last alert (it is "not
    met ... after its last alert")."""
    path = tmp_path_factory.mktemp("pair") / "rules.yml"
    path.write_text(EITHER)
    events = [dict(failure(seconds, user, host), EventID=event_id) for seconds, host, user, event_id in rows]
    trace = traced(path.parent, load_plans([str(path)], None), events, lateness)
    [correlator] = trace.correlators
    for line in trace.report().splitlines():
        for start in ("  did not fire  User=", "  then did not fire again  User="):
            if line.startswith(start):
                user = line[len(start):].split(":")[0]
                for ref in correlator.spec.rules:
                    if f"{trace._label(correlator.spec, ref.key)} never met" in line:
                        assert not [f for f in trace.fed[id(correlator)] if f.group == (user,) and ref.key in f.refs]


KINDS = FAILED + """---
title: Success login
name: successful_login
logsource: {product: windows, service: security}
detection: {sel: {EventID: 4624}, condition: sel}
---
""" + "---\n".join(yaml.safe_dump({"title": title, "id": title, "correlation": dict(
    {"rules": ["failed_login", "successful_login"], "group-by": ["User"], "timespan": "1m"}, **body)})
    for title, body in (("count", {"type": "event_count", "rules": ["failed_login"], "condition": {"gte": 3}}),
                        ("pair", {"type": "temporal"}),
                        ("order", {"type": "temporal_ordered"}),
                        ("hosts", {"type": "value_count", "condition": {"field": "Computer", "gte": 2}})))


def said_fired(text: str) -> list:
    """(correlation, window end, lines consumed) of each window an explain --events report says fired."""
    fired, title = [], None
    for line in text.splitlines():
        title = line[len("correlation "):] if line.startswith("correlation ") else title
        if line.startswith("  fired at "):
            consumed = line.split("; consumed ")[1].split(";")[0].split(" ", 1)[1]
            fired.append((title, line.split()[2], tuple(sorted(map(int, consumed.split(", "))))))
    return sorted(fired)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 240), st.sampled_from(["h1", "h2", "h3"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4625, 4624]), st.sampled_from(["plain", "plain", "long", "wrapped"])),
                min_size=2, max_size=30),
       st.booleans(), st.sampled_from(["0", "30"]), st.sampled_from([None, "1024"]), st.sampled_from([None, "log"]))
def test_explain_says_fired_the_windows_the_filter_alerts_on_with_the_same_options(tmp_path_factory, rows, early,
                                                                                   lateness, max_line, line_field):
    """explain --events took neither --early-alerts, --max-line-bytes nor --line-field, and read
    lines itself: on out-of-order streams the windows it said fired were not the filter's alerts
    (early alerts fire sooner, on other events; a line the filter leaves uninspected, or reads
    unwrapped, fed explain's windows).  With the same options, what it says fired is exactly what
    the filter (the command line, here in this process) alerts on: the same correlations, window ends
    and events."""
    directory = tmp_path_factory.mktemp("kinds")
    (directory / "rules.yml").write_text(KINDS)
    lines = []
    for seconds, host, user, event_id, form in rows:
        event = dict(failure(seconds, user, host), EventID=event_id)
        if form == "long":
            event["pad"] = "x" * 1100
        line = ndjson([event])
        lines.append(ndjson([{"log": line[:-1].decode()}]) if form == "wrapped" else line)
    path = directory / "events.ndjson"
    path.write_bytes(b"".join(lines))
    options = ["--rule", str(directory / "rules.yml"), "--lateness", lateness] + (["--early-alerts"] if early else []) \
        + (["--max-line-bytes", max_line] if max_line else []) + (["--line-field", line_field] if line_field else [])
    written = run_cli_here(["--input", str(path), "--quiet", "--workers", "0", *options])
    assert written.returncode == 0, written.stderr
    alerted = sorted((a["rule"]["name"], a["@timestamp"], tuple(sorted(e["line"] for e in a["sigma"]["events"])))
                     for a in alerts(written.stdout) if "timeframe_seconds" in a["sigma"])
    explained = run_cli_here(["explain", "--events", str(path), *options])
    assert explained.returncode == 0, explained.stderr
    assert said_fired(explained.stdout.decode()) == alerted


def test_early_alerts_the_window_the_filter_fires_and_the_one_it_keeps_back(tmp_path):
    """With --early-alerts the filter fires on the event that completes a window (line 4, out of
    order, completes 13:00:00-13:04:10 at once), and the watermark's later window over lines 1, 4, 5
    is kept back as it shares events with that alert; explain had no such option and showed the
    watermark's window fire instead."""
    events = [failure(0, "amy", "h1"), failure(250, "amy", "h1"), failure(500, "amy", "h1"),
              failure(150, "amy", "h1"), failure(200, "amy", "h1")]
    args = [*rules(tmp_path), "--lateness", "100", "--early-alerts"]
    text = explain_events(tmp_path, events, *args)
    assert "; early alerts (a window whose condition can only stay true alerts on the event that completes it);" \
        in text.splitlines()[0]
    assert said_fired(text) == [("many failures", "2021-06-03T13:04:10Z", (1, 2, 4))]
    assert "  kept back at 2021-06-03T13:03:20Z  User=amy: the window met the condition, but holds events of an " \
           "early alert above (an episode alerts once): consumed, no alert\n" in text
    [alert] = filtered(tmp_path, events, *args)
    assert (alert["@timestamp"], [e["line"] for e in alert["sigma"]["events"]]) == ("2021-06-03T13:04:10Z", [1, 4, 2])
    assert said_fired(explain_events(tmp_path, events, *rules(tmp_path), "--lateness", "100")) == \
        [("many failures", "2021-06-03T13:03:20Z", (1, 4, 5))]


def test_explain_reads_lines_as_the_filter_does_with_max_line_bytes_and_line_field(tmp_path):
    """A line over --max-line-bytes is passed on uninspected by the filter, and with --line-field the
    filter reads the line a collector wrapped: explain took neither option and read every line as
    it was."""
    events = [failure(0, "amy", "h1"), dict(failure(10, "amy", "h2"), pad="x" * 1100), failure(20, "amy", "h3")]
    text = explain_events(tmp_path, events, *rules(tmp_path), "--max-line-bytes", "1024")
    assert text.startswith("events    2 read, 1 not read (") and "  no window fired\n" in text
    assert filtered(tmp_path, events, *rules(tmp_path), "--max-line-bytes", "1024") == []
    assert said_fired(explain_events(tmp_path, events, *rules(tmp_path)))[0][2] == (1, 2, 3)
    wrapped = [{"log": ndjson([event])[:-1].decode()} for event in events]
    text = explain_events(tmp_path, wrapped, *rules(tmp_path), "--line-field", "log")
    assert said_fired(text) == [("many failures", "2021-06-03T13:00:20Z", (1, 2, 3))]
    assert len(filtered(tmp_path, wrapped, *rules(tmp_path), "--line-field", "log")) == 1
    assert run_cli(["explain", "--events", str(tmp_path / "events.ndjson"), "--line-field", ""]).returncode == 2


CHAINED = KINDS + "---\n" + yaml.safe_dump({"title": "count then success", "id": "chain", "correlation": {
    "type": "temporal_ordered", "rules": ["count", "successful_login"], "group-by": ["User"], "timespan": "2m",
    "generate": True}})


def fired_windows(text: str) -> list:
    """(correlation, window end, group) of each window an explain --events report says alerted."""
    fired, title = [], None
    for line in text.splitlines():
        title = line[len("correlation "):] if line.startswith("correlation ") else title
        if line.startswith("  fired at ") and not line.endswith("; no alert (not generated)"):
            time, rest = line[len("  fired at "):].split("  ", 1)
            fired.append((title, time, rest.split(": ", 1)[0]))
    return sorted(fired)


def alerted_windows(stdout: bytes) -> list:
    """(correlation, window end, group) of each correlation alert the filter wrote."""
    found = []
    for alert in alerts(stdout):
        correlation = alert["sigma"].get("correlation")
        if correlation is not None:
            group = ", ".join(f"{name}={value}" for name, value in correlation["group"].items()) or "(one group)"
            found.append((alert["rule"]["name"], alert["@timestamp"], group))
    return sorted(found)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 240), st.sampled_from(["h1", "h2", "h3"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4625, 4624]), st.sampled_from(["a", "a", "b"])),
                min_size=2, max_size=20),
       st.sampled_from(["0", "30"]), st.booleans(), st.sampled_from(["0", "5", "60"]), st.sampled_from(["0", "2"]),
       st.booleans())
@example([(0, "h1", "amy", 4625, "a")] * 3, "0", False, "0", "0", True)  # one line three times
def test_explain_stage_correlate_says_fired_the_windows_the_correlate_stage_alerts_on(
        tmp_path_factory, rows, lateness, early, heartbeat, agents, ordered):
    """explain --events read a match stage's Detection records as events: no rule met them, and it
    said "did not fire: no event fed it" of a file on which --stage correlate alerts.  With --stage
    correlate it reads them as that stage does (Detections observed, heartbeats moving the agents'
    time): the windows it says fired are the correlate stage's alerts.  The match stage here is one or
    two agents, each writing its own records one after the other, as a backfill sends them.  Explain
    on the original events says fired what one process alerts on, which is what the two stages alert
    on where the README says they agree: one agent, without heartbeats or on a stream in time order."""
    directory = tmp_path_factory.mktemp("stages")
    (directory / "rules.yml").write_text(CHAINED)
    matching = ["--rule", str(directory / "rules.yml"), "--lateness", lateness]
    options = matching + (["--early-alerts"] if early else [])  # not the match stage's: it has no correlation
    rows = sorted(rows, key=lambda row: row[0]) if ordered else rows
    events = [dict(failure(seconds, user, host), EventID=event_id) for seconds, host, user, event_id, _ in rows]
    (directory / "events.ndjson").write_bytes(ndjson(events))
    records = b""
    for agent in ("a", "b"):
        mine = [event for event, row in zip(events, rows) if row[4] == agent]
        (directory / f"{agent}.ndjson").write_bytes(ndjson(mine))
        matched = run_cli_here(["--input", str(directory / f"{agent}.ndjson"), "--quiet", "--stage", "match",
                                "--workers", "0", "--heartbeat", heartbeat,
                                *(["--agent", agent] if heartbeat != "0" else []), *matching])
        assert matched.returncode == 0, matched.stderr
        records += matched.stdout
    path = directory / "detections.ndjson"
    path.write_bytes(records)
    correlate_options = [*options, "--agents", agents]
    correlated = run_cli_here(["--input", str(path), "--quiet", "--stage", "correlate", *correlate_options])
    assert correlated.returncode == 0, correlated.stderr
    explained = run_cli_here(["explain", "--events", str(path), "--stage", "correlate", *correlate_options])
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout.decode()
    assert fired_windows(text) == alerted_windows(correlated.stdout)
    # each window's events, named by the input lines of their Detection records: those the alert lists
    named = {number: tuple(record["event"][key] for key in ("line", "host", "@timestamp"))
             for number, record in enumerate(map(ujson.loads, records.splitlines()), 1) if record["type"] == WIRE_TYPE}
    listed = [(title, time, sorted(named[number] for number in lines)) for title, time, lines in said_fired(text)]
    assert sorted(listed) == sorted((a["rule"]["name"], a["@timestamp"], sorted(tuple(e[key] for key in (
        "line", "host", "@timestamp")) for e in a["sigma"]["events"])) for a in alerts(correlated.stdout)
        if "correlation" in a["sigma"])
    assert text.startswith(f"detections {records.count(b'sigma.detection')} read")
    # the same file without --stage correlate: read as events, which none of them is, and said so
    unstaged = run_cli_here(["explain", "--events", str(path), *options]).stdout.decode()
    assert fired_windows(unstaged) == [] and (not records or "--stage correlate" in unstaged.splitlines()[1])
    # the original events, through stage all, as the filter runs them: what it alerts on
    whole = run_cli_here(["--input", str(directory / "events.ndjson"), "--quiet", "--workers", "0", *options])
    assert whole.returncode == 0, whole.stderr
    said = fired_windows(run_cli_here(["explain", "--events", str(directory / "events.ndjson"),
                                       *options]).stdout.decode())
    assert said == alerted_windows(whole.stdout)
    # (and no line twice: the correlate stage takes a record of the same line again as a copy sent again)
    lines = [tuple(row[:4]) for row in rows]
    if all(row[4] == "a" for row in rows) and (heartbeat == "0" or ordered) and len(set(lines)) == len(lines):
        assert said == fired_windows(text)


def alerted_events(stdout: bytes) -> list:
    """(correlation, window end, lines of its events) of each correlation alert the filter wrote."""
    return sorted((a["rule"]["name"], a["@timestamp"], tuple(sorted(e["line"] for e in a["sigma"]["events"])))
                  for a in alerts(stdout) if "timeframe_seconds" in a["sigma"])


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 240), st.sampled_from(["h1", "h2", "h3"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4625, 4624]), st.sampled_from(["a", "b", "c"])),
                min_size=2, max_size=25), st.sampled_from(["0", "30"]), st.booleans())
def test_explain_merges_several_inputs_by_event_time_as_the_filter_does(tmp_path_factory, rows, lateness, directory):
    """explain --events took one file: given twice, the last one alone was read, in silence.  It takes
    several (or a directory of them), merged by event time as the filter merges its --input files: what
    it says fired, with the lines consumed (numbered in merged order), is what the filter alerts on, and
    each event listed is named by its own file and line too."""
    folder = tmp_path_factory.mktemp("merged")
    (folder / "rules.yml").write_text(KINDS)
    (folder / "logs").mkdir()
    paths = {name: folder / "logs" / f"{name}.ndjson" for name in "abc"}
    for name, path in paths.items():
        path.write_bytes(ndjson([dict(failure(seconds, user, host), EventID=event_id)
                                 for seconds, host, user, event_id, where in rows if where == name]))
    given_paths = [str(folder / "logs")] if directory else [str(path) for path in paths.values()]
    options = ["--rule", str(folder / "rules.yml"), "--lateness", lateness]
    written = run_cli_here([arg for path in given_paths for arg in ("--input", path)] + ["--quiet", *options])
    assert written.returncode == 0, written.stderr
    explained = run_cli_here(["explain", *[arg for path in given_paths for arg in ("--events", path)], *options])
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout.decode()
    assert said_fired(text) == alerted_events(written.stdout)
    assert text.startswith(f"events    {len(rows)} read from 3 files merged by event time")
    seconds = {}  # (file, its own line number) -> the event's time
    for name in "abc":
        mine = [row[0] for row in rows if row[4] == name]
        seconds.update(((str(paths[name]), number), t) for number, t in enumerate(mine, 1))
    listed = [line for line in text.splitlines() if line.startswith("    line ")]
    for line in listed:
        named, rest = line[len("    line "):].split(" (", 1)[1].split(")  ", 1)
        file_name, number = named.rsplit(" line ", 1)
        assert iso(seconds[file_name, int(number)])[:19] == rest.split()[0][:19]


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 240), st.sampled_from(["h1", "h2", "h3"]), st.sampled_from(["amy", "bob"]),
                          st.sampled_from([4625, 4625, 4624])), min_size=2, max_size=25),
       st.integers(0, 25), st.sampled_from(["0", "30"]), st.booleans(), st.sampled_from(["all", "correlate"]))
def test_explain_with_a_saved_state_says_fired_what_the_filters_next_run_alerts_on(tmp_path_factory, rows, split,
                                                                                  lateness, early, stage):
    """A filter run with --state goes on from the windows its last run left open: explain had no
    --state, so a window that fired on events of two runs was said not to fire.  With the state file
    (a copy, as saved after the first run), what it says fired on the second run's events, with the
    lines consumed (those of earlier runs too), is what that run alerts on; the file is only read.
    The same for a correlate stage's state and its Detection records (the restored events are of no
    line of this run's input: counted as restored).  The runs with --state are processes of their own
    (a run holds its state file's lock until it exits); the others run in this process."""
    folder = tmp_path_factory.mktemp("state")
    (folder / "rules.yml").write_text(KINDS)
    events = [dict(failure(seconds, user, host), EventID=event_id) for seconds, host, user, event_id in rows]
    lines = ndjson(events).splitlines(keepends=True)
    if stage == "correlate":
        matched = run_cli_here(["--stage", "match", "--heartbeat", "0", "--rule", str(folder / "rules.yml"), "--quiet"],
                               ndjson(events))
        assert matched.returncode == 0, matched.stderr
        lines = matched.stdout.splitlines(keepends=True)
    split = min(split, len(lines))
    (folder / "first.ndjson").write_bytes(b"".join(lines[:split]))
    (folder / "second.ndjson").write_bytes(b"".join(lines[split:]))
    options = ["--rule", str(folder / "rules.yml"), "--lateness", lateness, "--stage", stage] \
        + (["--early-alerts"] if early else [])
    state = folder / "run" / "state.json"
    state.parent.mkdir()
    for part in ("first", "second"):
        if part == "second":
            (folder / "saved").mkdir()
            (folder / "saved" / "state.json").write_bytes(state.read_bytes())
        written = run_cli(["--input", str(folder / f"{part}.ndjson"), "--state", str(state), "--quiet", *options])
        assert written.returncode == 0, written.stderr
    saved = folder / "saved" / "state.json"
    before = saved.read_bytes()
    explained = run_cli_here(["explain", "--events", str(folder / "second.ndjson"), "--state", str(saved), *options])
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout.decode()
    assert fired_windows(text) == alerted_windows(written.stdout)
    if stage == "all":
        assert said_fired(text) == alerted_events(written.stdout)
    restored = [line for line in text.splitlines() if line.endswith(": restored from --state (an earlier run's)")]
    named = "    line " if stage == "all" else "    restored (event line "  # no record of this run's input
    assert all(line.startswith(named) for line in restored)
    assert text.splitlines()[1].startswith(f"state     {saved}: correlations restored, holding ")
    assert text.splitlines()[1].endswith(f"; lines numbered on from {split + 1}")
    assert saved.read_bytes() == before and os.listdir(saved.parent) == ["state.json"]  # no lock, no snapshot


def test_an_upper_bound_says_its_windows_start_at_the_first_event_and_when_each_was_judged(tmp_path):
    """``eq: 3``: a window starts at a user's earliest event not yet taken and is judged once the 5 minutes
    after it are over; explain says so, and names the window it judged, start and end, as the filter alerts."""
    (tmp_path / "failed.yml").write_text(FAILED)
    (tmp_path / "three.yml").write_text(MANY.replace("gte: 3", "eq: 3"))
    args = ["--rule", str(tmp_path / "failed.yml"), "--rule", str(tmp_path / "three.yml")]
    events = [failure(0, "amy", "h1"), failure(10, "amy", "h2"), failure(100, "bob", "h1"),
              failure(101, "bob", "h2"), failure(102, "bob", "h1")]
    text = explain_events(tmp_path, events, *args)

    def at(seconds):  # as explain writes a time
        return iso(seconds).replace(".000000", "")

    assert "fires when count == 3 within 5m, per User; a window starts at the group's earliest event not yet " \
           "taken, is judged once the timespan after it is over, and takes its events, fired or not" in text
    assert f"fired at {at(400)}  User=bob: count 3 == 3 within [{at(100)}, {at(400)}]" in text
    assert f"did not fire  User=amy: best count 2 of needed == 3 within 5m, events at lines 1, 2 (window " \
           f"[{at(0)}, {at(300)}], judged when complete)" in text
    [alert] = filtered(tmp_path, events, *args)
    assert alert["@timestamp"] == at(400) and len(alert["sigma"]["events"]) == 3


def explained_then_run(events, state, saved, options) -> tuple:
    """explain --events on a copy (``saved``) of the filter's ``state``, then the filter's own next run
    on the same events: (the report, the lines its one alert consumed), the report saying it fired
    on those same lines."""
    saved.write_bytes(state.read_bytes())
    explained = run_cli_here(["explain", "--events", str(events), "--state", str(saved), *options])
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout.decode()
    again = run_cli(["--input", str(events), "--state", str(state), "--quiet", *options])
    [(_, _, consumed)] = alerted_events(again.stdout)
    assert said_fired(text) == alerted_events(again.stdout)
    return text, consumed


def test_the_state_of_a_run_on_the_same_file_is_read_on_from_where_that_run_left_it(tmp_path):
    """A filter run with --state keeps its place in a regular file: its next run on the same, grown
    file reads on from there.  explain --events read the file from its first line again: its old lines
    counted as read, and every line numbered after the saved run's last (line 1 said to be line 3), so
    the lines it said fired were not those the filter's alert names.  It reads on as the filter does."""
    options = rules(tmp_path)
    path, state, saved = tmp_path / "grows.ndjson", tmp_path / "state.json", tmp_path / "saved.json"
    old = ndjson([failure(0, "amy", "h1"), failure(10, "amy", "h1")])
    path.write_bytes(old)
    assert run_cli(["--input", str(path), "--state", str(state), "--quiet", *options]).returncode == 0
    with open(path, "ab") as handle:
        handle.write(ndjson([failure(20, "amy", "h2"), failure(30, "bob", "h1")]))
    text, consumed = explained_then_run(path, state, saved, options)
    assert consumed == (1, 2, 3)
    assert text.startswith("events    2 read;")
    assert f"state     input {path}: read on from line 3 (byte {len(old)}), where the saved state left it\n" in text
    assert "line 4  " in text and "line 5" not in text


def test_a_rules_own_text_cannot_write_lines_of_the_report_nor_control_the_terminal(tmp_path):
    """A rule's title, tags, selection and field names, condition and group-by were printed raw: a
    line break in them (YAML writes one as "\\n") started a line that read as the report's own, an
    escape sequence reached the terminal.  They are written as an event's values are, as escapes:
    the report has as many lines as with plain names, and no control character."""
    def rule_set(odd: str) -> list:
        (tmp_path / "odd.yml").write_text(yaml.safe_dump({
            "title": f"Failed{odd}login", "name": "failed_login", "tags": [f"attack{odd}t1110"],
            "logsource": {"product": "windows", "service": f"sec{odd}urity"},
            "detection": {f"sel{odd}": {f"Event{odd}ID": 4625, "EventID": 4625}, "condition": "1 of sel*"}}))
        (tmp_path / "corr.yml").write_text(yaml.safe_dump({"title": f"many{odd}failures", "id": "many",
                                                           "correlation": {
            "type": "event_count", "rules": ["failed_login"], "group-by": [f"Us{odd}er"], "timespan": "5m",
            "condition": {"gte": 2}}}))
        return ["--rule", str(tmp_path / "odd.yml"), "--rule", str(tmp_path / "corr.yml")]

    (tmp_path / "one.json").write_text(ujson.dumps(failure(0, "amy", "h1")))
    for mode in ([], ["--event", str(tmp_path / "one.json")], ["--events", str(tmp_path / "one.json")]):
        plain, odd = (run_cli_here(["explain", *rule_set(odd), *mode]) for odd in ("_", "\n\x1b[2J\u2028\x85"))
        assert plain.returncode == odd.returncode == 0, odd.stderr
        assert len(odd.stdout.splitlines()) == len(plain.stdout.splitlines())
        assert b"\x1b" not in odd.stdout and b"\\u001b[2J\\u2028\\u0085" in odd.stdout


def test_a_state_file_whose_input_place_is_damaged_is_a_usage_error_not_a_traceback(tmp_path):
    """The filter refuses a state file whose saved place in its input is damaged (exit 2, one line);
    explain --events --state took it back in a traceback."""
    options = rules(tmp_path)
    path, state = tmp_path / "events.ndjson", tmp_path / "state.json"
    path.write_bytes(ndjson([failure(0, "amy", "h1")]))
    assert run_cli(["--input", str(path), "--state", str(state), "--quiet", *options]).returncode == 0
    document = ujson.loads(state.read_bytes())
    document["input"]["offset"] = -1
    state.write_text(ujson.dumps(document))
    result = run_cli_here(["explain", "--events", str(path), "--state", str(state), *options])
    assert result.returncode == 2
    assert result.stderr.decode() == f"pipeshell-filter: error: state file {state}: damaged state file (input)\n"
    assert not result.stdout


def test_merged_files_keep_the_origin_of_the_events_that_fed_a_correlation_only(tmp_path):
    """Several --events files: the file and line of every event read were kept, to name the few that
    fed a correlation: memory grew with the archive (some 200 bytes a line: gigabytes for the tens of
    millions of lines of a hunt), not with what the report shows.  Only fed events' origins are kept,
    and each of them is still named by its own file and line."""
    from pipeshell_filter.cli import _file_lines
    from pipeshell_filter.io import inputs

    plans = load_plans(rules(tmp_path)[1::2], None, False)
    for name, offset in (("a", 0), ("b", 1)):
        noise = [dict(failure(offset + 2 * i, "amy", "h1"), EventID=4624) for i in range(50)]
        (tmp_path / f"{name}.ndjson").write_bytes(ndjson(noise + [failure(100 + offset, "amy", name)]))
    files, walked = inputs.expand([str(tmp_path / "a.ndjson"), str(tmp_path / "b.ndjson")], "--events")
    trace = CorrelationTrace(Engine(plans, make_resolver("auto", None, None), 0))
    trace.read(files, merged=lambda f: _file_lines(files, f, f.diagnostics, DEFAULT_MAX_LINE, walked))
    assert trace.events == 102
    assert sorted(trace.origins) == [101, 102]
    text = trace.report()
    assert f"    line 101 ({tmp_path / 'a.ndjson'} line 51)  " in text
    assert f"    line 102 ({tmp_path / 'b.ndjson'} line 51)  " in text


def test_the_state_of_a_run_on_merged_files_is_read_on_in_each_from_where_that_run_left_it(tmp_path):
    """As for one file, so for the files of a directory merged: the filter's next run reads on in each
    where its saved state left it, and explain --events read them all from their first lines again."""
    options = rules(tmp_path)
    folder, state, saved = tmp_path / "logs", tmp_path / "state.json", tmp_path / "saved.json"
    folder.mkdir()
    (folder / "a.ndjson").write_bytes(ndjson([failure(0, "amy", "h1")]))
    (folder / "b.ndjson").write_bytes(ndjson([failure(5, "amy", "h2")]))
    assert run_cli(["--input", str(folder), "--state", str(state), "--quiet", *options]).returncode == 0
    for name, seconds in (("a", 20), ("b", 25)):
        with open(folder / f"{name}.ndjson", "ab") as handle:
            handle.write(ndjson([failure(seconds, "bob", name), failure(seconds + 10, "amy", name)]))
    text, consumed = explained_then_run(folder, state, saved, options)
    assert consumed == (1, 2, 5)
    assert text.startswith("events    4 read from 2 files")
    assert "state     inputs: 2 of 2 NDJSON files read on where the saved state left them\n" in text


def test_a_bidirectional_override_in_a_value_is_escaped(tmp_path):
    """U+202E (right-to-left override) and its kin are no control characters, but a terminal shows the
    rest of the line reversed: a host "h1\\u202e..." made the report say another line number and status
    than it holds.  They are escaped, as line breaks are."""
    hostile = "h\u202e1 enil\u2066x\u2069\u200f"
    text = explain_events(tmp_path, [failure(s, hostile, hostile) for s in (0, 10, 20)], *rules(tmp_path))
    assert not any(mark in text for mark in "\u202e\u2066\u2069\u200f")
    assert "host h\\u202e1 enil\\u2066x\\u2069\\u200f  User=h\\u202e1 enil" in text
    event = tmp_path / "one.json"
    event.write_text(ujson.dumps(dict(failure(0, "u", "h"), EventID=hostile)))
    said = run_cli_here(["explain", "--event", str(event), *rules(tmp_path)]).stdout.decode()
    assert "\u202e" not in said and '"h\\u202e1 enil' in said


def test_the_state_of_a_run_on_one_file_is_read_on_when_a_rotation_makes_the_directory_two(tmp_path):
    """A directory of one file is read as that file alone; a rotation adds a second, and the filter's
    next run, merging the two, reads the first on where its saved state left it.  explain --events
    read both from their first lines, the saved run's events counted again."""
    options = rules(tmp_path)
    folder, state, saved = tmp_path / "logs", tmp_path / "state.json", tmp_path / "saved.json"
    folder.mkdir()
    (folder / "a.ndjson").write_bytes(ndjson([failure(0, "amy", "h1")]))
    assert run_cli(["--input", str(folder), "--state", str(state), "--quiet", *options]).returncode == 0
    with open(folder / "a.ndjson", "ab") as handle:
        handle.write(ndjson([failure(20, "bob", "a")]))
    (folder / "b.ndjson").write_bytes(ndjson([failure(25, "amy", "b"), failure(30, "amy", "b")]))
    text, consumed = explained_then_run(folder, state, saved, options)
    assert consumed == (1, 3, 4)
    assert text.startswith("events    3 read from 2 files"), text
    assert "state     inputs: 1 of 2 NDJSON files read on where the saved state left them\n" in text


def test_a_group_is_named_as_its_events_wrote_it_as_the_alert_names_it(tmp_path):
    """Group-by values alike but for letter case are one group, and the alert names it as its window's
    first event wrote it ("Amy"): explain named it by its folded key ("amy"), a group the alerts never
    show, and gave each event that spelling instead of its own."""
    events = [failure(0, "Amy", "h1"), failure(10, "AMY", "h2"), failure(20, "amy", "h3"), failure(30, "Bob", "h1"),
              failure(400, "aMy", "h1")]
    text = explain_events(tmp_path, events, *rules(tmp_path))
    [alert] = filtered(tmp_path, events, *rules(tmp_path))
    assert alert["sigma"]["correlation"]["group"] == {"User": "Amy"}
    assert "  fired at 2021-06-03T13:00:20Z  User=Amy: count 3 >= 3" in text
    assert "    line 2  2021-06-03T13:00:10Z  host h2  User=AMY  rule failed_login: on time\n" in text
    assert "  did not fire  User=Bob: best count 1" in text
    assert "  then did not fire again  User=aMy: best count 1" in text


def test_a_window_of_many_hosts_and_values_is_one_line_of_bounded_length(tmp_path):
    """The line of a window that fired listed every host and distinct value it held: a window of
    thousands of hosts was a line of hundreds of kilobytes.  It lists the first 20 of each, as it lists
    lines, and says how many there were."""
    (tmp_path / "failed.yml").write_text(FAILED)
    (tmp_path / "wide.yml").write_text(yaml.safe_dump({"title": "wide", "id": "wide", "correlation": {
        "type": "value_count", "rules": ["failed_login"], "timespan": "1h",
        "condition": {"field": "User", "gte": 150}}}))
    events = [failure(i, f"user{i:03d}", f"host-{i:03d}.corp.example") for i in range(150)]
    text = explain_events(tmp_path, events, "--rule", str(tmp_path / "failed.yml"),
                          "--rule", str(tmp_path / "wide.yml"))
    [fired] = [line for line in text.splitlines() if line.startswith("  fired at ")]
    assert len(fired) < 1500
    assert "; hosts host-000.corp.example, host-001.corp.example, " in fired
    assert ", host-019.corp.example, ... (150 in all); values user000, user001, " in fired
    assert fired.endswith(", user019, ... (150 in all)")


def test_with_a_saved_state_a_window_of_an_upper_bound_not_over_is_not_said_to_fire(tmp_path):
    """The filter with --state ends its run with the windows open, and a count with an upper bound judges
    none there: a window whose timespan the watermark has not passed waits for the next run.  explain
    with the state made every window final, and said fired a window on which that run does not alert."""
    (tmp_path / "failed.yml").write_text(FAILED)
    (tmp_path / "few.yml").write_text(MANY.replace("gte: 3", "lte: 2"))
    options = ["--rule", str(tmp_path / "failed.yml"), "--rule", str(tmp_path / "few.yml")]
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    first.write_bytes(ndjson([failure(0, "amy", "h1")]))
    second.write_bytes(ndjson([failure(10, "amy", "h2")]))
    state, saved = tmp_path / "state.json", tmp_path / "saved.json"
    assert run_cli(["--input", str(first), "--state", str(state), "--quiet", *options]).returncode == 0
    saved.write_bytes(state.read_bytes())
    explained = run_cli_here(["explain", "--events", str(second), "--state", str(saved), *options])
    assert explained.returncode == 0, explained.stderr
    again = run_cli(["--input", str(second), "--state", str(state), "--quiet", *options])
    assert again.returncode == 0 and alerted_events(again.stdout) == []
    text = explained.stdout.decode()
    assert said_fired(text) == []
    assert "  did not fire  User=amy: its window [2021-06-03T13:00:00Z, 2021-06-03T13:05:00Z], events at lines " \
           "1, 2, was not complete when the input ended: the filter's next run with --state judges it\n" in text


class _Passes(list):
    """A list that counts the passes made over it."""

    passes = 0

    def __iter__(self):
        _Passes.passes += 1
        return super().__iter__()


def test_the_report_makes_a_bounded_number_of_passes_over_the_events_whatever_the_groups(tmp_path):
    """A group per event (a user name forged per line): a pass over every event for each group that did
    not fire made the report quadratic (20,000 lines took 22 s, 5,000 lines 2 s)."""
    (tmp_path / "failed.yml").write_text(FAILED)
    (tmp_path / "many.yml").write_text(MANY)
    plans = load_plans([str(tmp_path / "failed.yml"), str(tmp_path / "many.yml")], None)
    passes = []
    for groups in (20, 200):
        events = [failure(i, f"user{i}", "dc1") for i in range(groups)] + [failure(400 + i, "alice", "dc1")
                                                                           for i in range(3)]
        trace = traced(tmp_path, plans, events, 60)
        [key] = trace.fed
        trace.fed[key], trace.fired[key] = _Passes(trace.fed[key]), _Passes(trace.fired[key])
        _Passes.passes = 0
        text = trace.report()
        assert f"did not fire  User=user{groups - 1}: best count 1 of needed >= 3" in text
        assert "fired at" in text and "User=alice" in text
        passes.append(_Passes.passes)
    assert passes[0] == passes[1] <= 10
