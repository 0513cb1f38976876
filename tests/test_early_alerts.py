"""Early alerts (``--early-alerts``): a window whose condition is monotone fires on the event that
completes it, instead of when the watermark passes it.

Related to the watermark's alerts on the same stream:

* time-sorted, no two events of a stream at the same time: the same alerts, each out on the event
  that completed it (nothing left for the end of input);
* time-sorted with ties: the same episodes (rule and window end), contributions aside (events
  with the window's end time that arrive after it fired are in the watermark's alert, not in it);
* disorder within the lateness: every watermark alert has an early alert of the same rule whose
  window overlaps it, and no alert comes out twice.
"""

import json

import pytest
from hypothesis import given, settings, strategies as st

from eventgen import flat_event, raw_events
import resolvers
from pipeshell_filter.cli import load_plans
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import parse_time
from test_clock_defence import future_sources
from test_correlation_properties import BASE_NS
from test_stages import BY_HOST, SINGLE, within_lateness, write

TEMPORAL = """title: server then client
name: server_then_client
correlation:
  type: temporal_ordered
  rules: [pipe_server, pipe_client]
  timespan: 3m
---
title: server
name: pipe_server
detection:
  sel: {ScriptBlockText|contains: NamedPipeServerStream}
  condition: sel
---
title: client
name: pipe_client
detection:
  sel: {ScriptBlockText|contains: NamedPipeClientStream}
  condition: sel
"""


# A correlation of a correlation: every server-then-client episode is an event of the outer one,
# whose early alert comes from the inner one's early alert.
CHAIN = TEMPORAL + """---
title: pipe episodes
name: pipe_episodes
correlation:
  type: event_count
  rules: [server_then_client]
  timespan: 10m
  condition: {gte: 1}
"""


# A chain whose outer correlation also counts a rule its inner one counts: a client event is then one
# detection of the outer one and, completing a server-then-client episode, an inner alert at its time too.
# The inner alert was fed to the outer one, which alerted early on it before taking the client event itself.
CHAIN_AND_RULE = TEMPORAL + """---
title: pipe episodes and clients
name: pipe_episodes_and_clients
correlation:
  type: event_count
  rules: [server_then_client, pipe_client]
  timespan: 10m
  condition: {gte: 2}
"""


def plans_for(rules, tmp):
    paths = {"builtin": None, "by_host": [write(tmp, "by.yml", BY_HOST), write(tmp, "s.yml", SINGLE)],
             "temporal": [write(tmp, "t.yml", TEMPORAL)], "chain": [write(tmp, "c.yml", CHAIN)],
             "chain_and_rule": [write(tmp, "cr.yml", CHAIN_AND_RULE)]}[rules]
    return load_plans(paths, None)


def run(plans, events, lateness, early):
    engine = Engine(plans, resolvers.auto(), lateness * 10**9, early=early)
    during = []
    for line, (seconds, host, kind, event_id, ident) in enumerate(events, 1):
        during += engine.process(flat_event(seconds, host, kind, event_id, record_id=ident), line).alerts
        for correlator in engine.correlation.correlators:
            check_waiting(correlator)
    return during, engine.flush()


def check_waiting(correlator):
    """Each group's index of the events waiting for the watermark holds its entries of the
    correlator's ``_pending``, in the same order; without early alerts, which alone read it, it is
    not kept at all (its upkeep was a sixth of a detection's cost to each correlation)."""
    if not correlator.early:
        assert not correlator._waiting
        return
    groups = {}
    for entry in correlator._pending:
        groups.setdefault(entry[2].group, []).append(entry)
    indexed = {group: waiting.entries[waiting.start:] for group, waiting in correlator._waiting.items()}
    assert indexed == groups


def key(alert):
    return json.dumps(alert, sort_keys=True)


def episode(alert):
    return alert["rule"]["id"], alert["@timestamp"]


RULES = st.sampled_from(["builtin", "by_host", "temporal", "chain", "chain_and_rule"])


@settings(max_examples=80, deadline=None)
@given(raw_events(max_size=40), RULES, st.sampled_from([0, 30, 400]))
def test_on_a_sorted_stream_without_ties_early_alerts_are_the_watermark_alerts_sooner(tmp_path_factory, events,
                                                                                    rules, lateness):
    seen, distinct = set(), []
    for event in sorted(events):
        if event[0] not in seen:
            seen.add(event[0])
            distinct.append(event)
    plans = plans_for(rules, tmp_path_factory.mktemp("rules"))
    early_during, early_end = run(plans, distinct, lateness, True)
    late_during, late_end = run(plans, distinct, lateness, False)
    assert sorted(map(key, early_during + early_end)) == sorted(map(key, late_during + late_end))
    monotone_at_end = [a for a in early_end if a["sigma"].get("events_total", 1) > 1 or "join" in a["sigma"]]
    assert not monotone_at_end  # every window alert came out on the event that completed it


@settings(max_examples=80, deadline=None)
@given(raw_events(max_size=40), RULES, st.sampled_from([0, 30, 400]))
def test_on_a_sorted_stream_with_ties_the_episodes_are_the_same(tmp_path_factory, events, rules, lateness):
    plans = plans_for(rules, tmp_path_factory.mktemp("rules"))
    early = sum(run(plans, sorted(events), lateness, True), [])
    late = sum(run(plans, sorted(events), lateness, False), [])
    assert sorted(map(episode, early)) == sorted(map(episode, late))


@settings(max_examples=120, deadline=None)
@given(raw_events(max_size=40), RULES, st.sampled_from([30, 400]))
def test_under_disorder_within_the_lateness_every_watermark_alert_has_an_early_one(tmp_path_factory, events,
                                                                                  rules, lateness):
    events = within_lateness(events, lateness)
    plans = plans_for(rules, tmp_path_factory.mktemp("rules"))
    early = sum(run(plans, events, lateness, True), [])
    late = sum(run(plans, events, lateness, False), [])
    ids = [a["event"]["id"] for a in early]
    assert len(ids) == len(set(ids))  # nothing twice
    for alert in late:
        rule, end, start = alert["rule"]["id"], parse_time(alert["event"]["end"]), parse_time(alert["event"]["start"])
        assert any(a["rule"]["id"] == rule and parse_time(a["event"]["start"]) <= end
                   and start <= parse_time(a["event"]["end"]) for a in early), alert["@timestamp"]


def test_an_outer_correlation_takes_the_event_that_made_an_inner_alert_before_its_early_evaluation(tmp_path):
    """A client at 0, a server at 100, a client at 200: the last client is one event of the outer
    correlation and completes an inner episode at its time.  The inner alert, fed first, completed the
    outer window with the first client, and the early alert lacked the client itself (2 events, the
    watermark's 3)."""
    plans = plans_for("chain_and_rule", tmp_path)
    events = [(0, "h1", "client", 4104, 1), (100, "h2", "server", 4104, 2), (200, "h3", "client", 4104, 3)]
    early_during, early_end = run(plans, events, 0, True)
    late_during, late_end = run(plans, events, 0, False)
    assert not early_end and [a["sigma"]["correlation"]["value"] for a in early_during] == [3]
    assert list(map(key, early_during)) == list(map(key, late_during + late_end))


def test_a_non_monotone_condition_waits_for_the_watermark(tmp_path):
    rule = write(tmp_path, "few.yml", """title: few pipe events
id: few
detection:
  sel: {ScriptBlockText|contains: NamedPipe}
  condition: sel | count() < 3
  timeframe: 1m
""")
    plans = load_plans([rule], None)
    assert not plans[0].correlation.monotone
    during, end = run(plans, [(0, "srv01", "server", 4104, 1), (200, "srv01", "benign", 4104, 2)], 0, True)
    assert not during and len(end) == 1  # under 3 in its minute: known only once the minute is over


def test_early_alerts_on_a_live_pipe_come_before_the_input_ends_and_survive_a_restart(tmp_path):
    """Through the CLI: with --early-alerts and an hour of lateness the alert is out as soon as the
    third host's event is written; a restart from the state file does not alert it again."""
    import subprocess

    from clitools import COMMAND, alerts, ndjson, run_cli

    incident = [flat_event(0, "srv01", "server", 4104, 1), flat_event(10, "cli01", "client", 4104, 2),
                flat_event(20, "cli02", "client", 4104, 3)]
    state = str(tmp_path / "state.json")
    args = ["--early-alerts", "--lateness", "3600", "--idle", "0", "--state", state]
    process = subprocess.Popen(COMMAND + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(ndjson(incident))
        process.stdin.flush()
        alert = json.loads(process.stdout.readline())  # before the input ends
        assert alert["related"]["hosts"] == ["cli01", "cli02", "srv01"]
    finally:
        process.stdin.close()
        rest = process.stdout.read()
        process.wait(timeout=30)
    assert not alerts(rest)
    again = run_cli(args, ndjson(incident + [flat_event(30, "cli03", "client", 4104, 4)]))
    assert again.returncode == 0 and not alerts(again.stdout)  # the episode was alerted, the replay is taken once
    without = [a for a in args if a != "--early-alerts"]  # restarted without the option: still alerted once
    later = run_cli(without, ndjson([flat_event(40, "cli04", "client", 4104, 5)]))
    assert later.returncode == 0 and not alerts(later.stdout)


def test_events_at_the_end_time_of_an_early_alert_that_arrive_after_it_are_in_its_episode(tmp_path):
    """server at 0; client at 1 fires early at 1; another client and a server at 1 come after: the
    watermark would have taken them in the same episode, so they make no second alert."""
    plans = plans_for("temporal", tmp_path)
    events = [(0, "srv01", "server", 4104, 27), (1, "srv01", "client", 4104, 26), (1, "srv01", "client", 4104, 33),
              (1, "srv01", "server", 4104, 0)]
    early = sum(run(plans, events, 30, True), [])
    late = sum(run(plans, events, 30, False), [])
    assert [episode(a) for a in early] == [episode(a) for a in late] == [("server_then_client",
                                                                         "2021-06-03T13:00:01Z")]


def test_a_busy_correlation_still_alerts_early_on_a_quiet_group(tmp_path):
    """Hundreds of other hosts' events waiting for the watermark (a busy correlation, a long
    lateness) do not hold back the early alert of a host whose window the next event completes:
    an early evaluation reads its own group's events."""
    plans = plans_for("by_host", tmp_path)
    busy = [(i // 100, f"busy{i}", "server", 4104, i) for i in range(600)]  # one event each, 600 hosts
    quiet = [(10, "srv01", "server", 4104, 1001), (11, "srv01", "client", 4104, 1002),
             (12, "srv01", "server", 4104, 1003)]
    engine = Engine(plans, resolvers.auto(), 60 * 10**9, early=True)
    for line, (seconds, host, kind, event_id, ident) in enumerate(busy + quiet[:-1], 1):
        engine.process(flat_event(seconds, host, kind, event_id, record_id=ident), line)
    last = quiet[-1]
    alerts = engine.process(flat_event(last[0], last[1], last[2], last[3], record_id=last[4]), 999).alerts
    assert [a["sigma"]["events_total"] for a in alerts if a["rule"]["id"] == "count-by-host"] == [3]


THREE_RULES = "---\n".join(f"title: rule {name}\nname: rule_{name}\ndetection: {{sel: {{{name}: x}}, condition: sel}}\n"
                           for name in "abc")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["h1", "h2"])),
                min_size=1, max_size=25),
       st.sampled_from(["temporal", "temporal_ordered"]), st.permutations(["rule_a", "rule_b", "rule_c"]),
       st.integers(1, 8), st.sampled_from([0, 5, 400]))
def test_an_event_that_meets_several_rules_is_whole_in_its_early_alert(tmp_path_factory, rows, kind, order, span,
                                                                       lateness):
    """One event meeting several rules of a temporal correlation is one detection per rule; the first
    completed the window and alerted early without the others (the watermark's alert had them all):
    on a time-sorted stream without ties the early alerts are still exactly the watermark's."""
    directory = tmp_path_factory.mktemp("rules")
    rules = write(directory, "r.yml", THREE_RULES + "---\n" + f"title: ordered\nid: ordered\ncorrelation: {{type: "
                  f"{kind}, rules: [{', '.join(order)}], group-by: [Computer], timespan: {span}s}}\n")
    plans = load_plans([rules], None)
    events = [dict({name: "x" for name, met in zip("abc", row[:3]) if met}, Computer=row[3],
                   **{"@timestamp": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}) for i, row in enumerate(rows)]
    _early_alerts_are_the_watermarks(plans, events, lateness)


def _early_alerts_are_the_watermarks(plans, events, lateness):
    """The alerts of ``events`` in time order with ``--early-alerts`` all come before the end, and are
    exactly those the watermark gives without it."""
    def alerts_of(early):
        engine = Engine(plans, resolvers.auto(), lateness * 10**9, early=early)
        during = [a for line, e in enumerate(events, 1) for a in engine.process(e, line).alerts]
        return during, engine.flush()

    early_during, early_end = alerts_of(True)
    assert not early_end
    assert sorted(map(key, early_during)) == sorted(map(key, sum(alerts_of(False), [])))


# A legacy rule (a pipe aggregation, or ``near``) whose alerts feed a correlation that counts a field
# the legacy rule does not group by: each inner alert is one outer event per distinct value, all at
# the inner alert's time.
LEGACY_INNERS = {
    "count": "  timeframe: 20s\n  condition: a or b | count() > 1\n",
    "near": "  timeframe: 20s\n  condition: a | near b\n",
}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from(["u1", "u2", "u3"]),
                          st.sampled_from(["h1", "h2"])), min_size=1, max_size=30),
       st.sampled_from(sorted(LEGACY_INNERS)), st.integers(1, 3), st.sampled_from([0, 5, 400]))
def test_a_legacy_alert_split_by_a_carried_field_is_whole_in_the_outer_early_alert(tmp_path_factory, rows, inner,
                                                                                   needed, lateness):
    """The outer correlation's early evaluation ran on the first of those events: its alert lacked the
    others (the watermark's had them), though the stream was time-sorted without ties."""
    directory = tmp_path_factory.mktemp("rules")
    rules = write(directory, "r.yml", "title: legacy\nid: legacy\ndetection:\n  a: {a: x}\n  b: {b: x}\n"
                  + LEGACY_INNERS[inner] + "---\ntitle: users\nid: users\ncorrelation: {type: value_count, "
                  f"rules: [legacy], group-by: [Computer], timespan: 2m, condition: {{gte: {needed}, field: User}}}}\n")
    plans = load_plans([rules], None)
    events = [dict({name: "x" for name, met in zip("ab", row[:2]) if met}, User=row[2], Computer=row[3],
                   **{"@timestamp": f"2024-01-01T00:{i * 3 // 60:02d}:{i * 3 % 60:02d}Z"})
              for i, row in enumerate(rows)]
    _early_alerts_are_the_watermarks(plans, events, lateness)


def _early_during_live(events, lateness, wall_ns):
    """The record ids of each alert made before the end of input, with ``--early-alerts`` on live
    input whose wall clock reads ``wall_ns``."""
    engine = Engine(load_plans(None, None), resolvers.auto(), lateness * 10**9, early=True)
    engine.correlation.wall = lambda: wall_ns
    engine.live()
    during = []
    for line, (seconds, host, kind, event_id, ident) in enumerate(events, 1):
        during += engine.process(flat_event(seconds, host, kind, event_id, record_id=ident), line).alerts
    return [frozenset(e["record_id"] for e in a["sigma"]["events"]) for a in during]


@settings(max_examples=80, deadline=None)
@given(raw_events(max_size=30), st.sampled_from([30, 400, 3600]), st.data())
def test_on_live_input_events_dated_past_the_wall_clock_hold_back_no_early_alert_of_the_others(events, lateness,
                                                                                             data):
    """Three lines dated 2099 under three host names (not believed: their events wait) made an early
    alert at once, and the group's early evaluations then skipped every event before 2099: the real
    incident after them alerted only when the watermark passed it (an hour later with --lateness 3600)."""
    stream = sorted(events)
    wall = BASE_NS + 900 * 10**9
    base = _early_during_live(stream, lateness, wall)
    merged = list(stream)
    for event in data.draw(future_sources()):  # anywhere in the stream
        merged.insert(data.draw(st.integers(0, len(merged))), event)
    extended = _early_during_live(merged, lateness, wall)
    assert set(base) <= {a for a in extended if not any(i >= 1000 for i in a)}
    assert not [a for a in extended if any(i >= 1000 for i in a)]  # they wait, as their events do


NEAR_HOSTS = """title: server near client
id: near-pipe
detection:
  server: {ScriptBlockText|contains: NamedPipeServerStream}
  client: {ScriptBlockText|contains: NamedPipeClientStream}
  timeframe: 2m
  condition: server | near client
---
title: hosts of server near client
id: near-hosts
correlation: {type: value_count, rules: [near-pipe], timespan: 5m, condition: {gte: 2, field: Computer}}
"""


TEMPORAL_HOSTS = TEMPORAL + """---
title: hosts of server then client
id: near-hosts
correlation: {type: value_count, rules: [server_then_client], timespan: 5m, condition: {gte: 2, field: Computer}}
"""


@pytest.mark.parametrize("rules, events, end", [
    (NEAR_HOSTS, [(0, "srv01", "both", 4104, 1), (0, "cli01", "server", 4104, 2)], "13:00:00"),
    (TEMPORAL_HOSTS, [(0, "srv01", "server", 4104, 1), (60, "srv01", "client", 4104, 2),
                      (60, "cli01", "server", 4104, 3)], "13:01:00")])
def test_an_event_tied_with_an_inner_early_alert_still_reaches_the_outer_correlation(tmp_path, rules, events, end):
    """srv01 completes the inner correlation (a legacy near rule, or a Sigma temporal one) alone: it alerts
    early on srv01.  cli01's server at the same time comes next and joins that episode (a tie).  The
    watermark's inner alert has both hosts, and the outer value_count of Computer fires on it; with early
    alerts cli01 reached the outer correlation only in the early alert, which it was not in, and nothing fired.
    It is now passed on as a further part of the inner episode (``Correlator.joined``), which makes no alert."""
    plans = load_plans([write(tmp_path, "chain.yml", rules)], None)
    late = sum(run(plans, events, 30, False), [])
    assert [episode(a) for a in late] == [("near-hosts", f"2021-06-03T{end}Z")]
    assert [episode(a) for a in sum(run(plans, events, 30, True), [])] == [episode(a) for a in late]
