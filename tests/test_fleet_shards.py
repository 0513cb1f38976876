"""Match on every agent, correlate once (issue "Fleet scale", its first property).

A stream split into K agent shards, each detected by its own match stage, and the
Detection records correlated by one correlate stage, gives the alerts of one process
running both stages on the merged stream, for K = 1..4:

* delivered in any interleaving that keeps each agent's own order (in process);
* or as K files of Detection records merged by event time by ``--input`` (through the
  CLI's main, in process), against ``--stage all`` on the stream merged the same way.

Line numbers are each agent's own, so the comparison leaves out the ``line`` of event
references and the alert ``id`` derived from them.
"""

import json

from hypothesis import given, settings, strategies as st

from clitools import alerts, ndjson, run_cli_here
from eventgen import HOSTS, flat_event, raw_events
from pipeshell_filter.cli import load_plans, make_resolver
from pipeshell_filter.detect import Detection
from pipeshell_filter.engine import Engine
from test_stages import BY_HOST, SINGLE, write


def comparable(alert: dict) -> dict:
    """An alert without what depends on line numbering."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("line", "id")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(alert)


@st.composite
def shards(draw, max_size=30):
    """A stream, the agent of each host (K agents), and an interleaving of the agents' streams."""
    events = draw(raw_events(max_size=max_size))
    k = draw(st.integers(1, 4))
    agent_of = {host: draw(st.integers(0, k - 1)) for host in HOSTS}
    per_agent = [[e for e in events if agent_of[e[1]] == a] for a in range(k)]
    order = draw(st.permutations([a for a in range(k) for _ in per_agent[a]]))
    return per_agent, list(order)


def plans_for(rules: str, tmp) -> list:
    paths = {"builtin": None, "single": [write(tmp, "single.yml", SINGLE)],
             "by_host": [write(tmp, "by.yml", BY_HOST), write(tmp, "s.yml", SINGLE)]}[rules]
    return load_plans(paths, None)


def engine(plans, lateness: int) -> Engine:
    return Engine(plans, make_resolver("auto", None, None), lateness * 10**9)


@settings(max_examples=60, deadline=None)
@given(shards(), st.sampled_from(["builtin", "single", "by_host"]), st.sampled_from([0, 30, 400]))
def test_k_match_stages_and_one_correlate_stage_alert_as_one_process(tmp_path_factory, split, rules, lateness):
    per_agent, order = split
    plans = plans_for(rules, tmp_path_factory.mktemp("rules"))
    whole, correlator = engine(plans, lateness), engine(plans, lateness)
    agents = [engine(plans, lateness) for _ in per_agent]
    expected, found = [], []
    position, line = [0] * len(per_agent), 0
    for agent in order:
        seconds, host, kind, event_id, ident = per_agent[agent][position[agent]]
        position[agent] += 1
        line += 1
        event = flat_event(seconds, host, kind, event_id, record_id=ident)
        expected += whole.process(event, line).alerts
        _, detections = agents[agent].match(event, position[agent])  # the agent's own line number
        for detection in detections:  # over the wire, as NDJSON
            wire = Detection.from_wire(json.loads(json.dumps(detection.to_wire())))
            found += correlator.observe(wire).alerts
    expected += whole.flush()
    found += correlator.flush()
    assert [comparable(a) for a in found] == [comparable(a) for a in expected]


@settings(max_examples=12, deadline=None)
@given(shards(max_size=20), st.sampled_from(["builtin", "by_host"]))
def test_k_detection_files_merged_by_time_alert_as_the_stream_merged_by_time(tmp_path_factory, split, rules):
    per_agent, _ = split
    tmp = tmp_path_factory.mktemp("fleet")
    paths = [] if rules == "builtin" else [write(tmp, "by.yml", BY_HOST), write(tmp, "s.yml", SINGLE)]
    rule_args = [arg for path in paths for arg in ("--rule", path)]
    common = rule_args + ["--lateness", "30", "--quiet"]
    detection_files, event_files = [], []
    for agent, events in enumerate(per_agent):
        stream = ndjson(flat_event(s, h, kind, e, record_id=i) for s, h, kind, e, i in sorted(events))
        event_file = tmp / f"agent{agent}.ndjson"
        event_file.write_bytes(stream)
        event_files.append(str(event_file))
        matched = run_cli_here(common + ["--stage", "match", "--input", str(event_file)], b"")
        assert matched.returncode == 0, matched.stderr
        detection_file = tmp / f"agent{agent}.detections"
        detection_file.write_bytes(matched.stdout)
        detection_files.append(str(detection_file))
    whole = run_cli_here(common + [arg for path in event_files for arg in ("--input", path)], b"")
    correlated = run_cli_here(common + ["--stage", "correlate"] +
                              [arg for p in detection_files for arg in ("--input", p)], b"")
    assert whole.returncode == 0 and correlated.returncode == 0, (whole.stderr, correlated.stderr)
    # the same alerts; with heartbeats a window's alert may come out before or after a single-event alert
    # that one process writes in the other order
    assert sorted(json.dumps(comparable(a), sort_keys=True) for a in alerts(correlated.stdout)) == \
        sorted(json.dumps(comparable(a), sort_keys=True) for a in alerts(whole.stdout))


# ---------------------------------------------------------------- heartbeats: the fleet's time


def on_time_delivery(per_agent, order, lateness):
    """The deliveries, in order, that keep every agent within the lateness of the newest event
    delivered so far (the promise of the watermark): (agent, event) pairs."""
    position, newest, kept = [0] * len(per_agent), None, []
    for agent in order:
        event = per_agent[agent][position[agent]]
        position[agent] += 1
        if newest is None or event[0] >= newest - lateness:
            kept.append((agent, event))
            newest = event[0] if newest is None else max(newest, event[0])
    return kept


def alert_time(alert: dict) -> int:
    from pipeshell_filter.events.timeparse import parse_time
    return parse_time(alert["@timestamp"])


@settings(max_examples=60, deadline=None)
@given(shards(), st.sampled_from(["builtin", "single", "by_host"]), st.sampled_from([0, 30, 400]),
       st.sampled_from([1, 10, 120]))
def test_with_heartbeats_the_correlate_stage_follows_the_least_agent_time(tmp_path_factory, split, rules, lateness,
                                                                          every):
    """K agents each send Detection records and heartbeats (``Progress``); one correlate stage
    takes the least agent time as its watermark.  On deliveries that keep every agent within the
    lateness: the same alerts as one process on the merged stream, and every alert whose window
    ends before the agents' final least time minus the lateness is out before the end (the
    heartbeats moved time; nothing waited for the flush)."""
    from pipeshell_filter.correlate.agents import Progress

    per_agent, order = split
    plans = plans_for(rules, tmp_path_factory.mktemp("rules"))
    whole, correlator = engine(plans, lateness), engine(plans, lateness)
    agents = [engine(plans, lateness) for _ in per_agent]
    progress = [Progress(f"agent{a}", every, 300 * 10**9) for a in range(len(per_agent))]
    expected, found = [], []
    lines = [0] * len(per_agent)

    def send(record):
        wire = json.loads(json.dumps(record.to_wire()))
        if wire["type"] == "sigma.heartbeat":
            from pipeshell_filter.detect import Heartbeat
            return correlator.progress(Heartbeat.from_wire(wire))
        return correlator.observe(Detection.from_wire(wire)).alerts

    for line, (agent, (seconds, host, kind, event_id, ident)) in enumerate(
            on_time_delivery(per_agent, order, lateness), 1):
        event = flat_event(seconds, host, kind, event_id, record_id=ident)
        expected += whole.process(event, line).alerts
        lines[agent] += 1
        _, detections = agents[agent].match(event, lines[agent])
        for detection in detections:
            found += send(detection)
        beat = progress[agent].see(agents[agent].event_time(event))
        if beat is not None:
            found += send(beat)
    for agent_progress in progress:
        beat = agent_progress.last()
        if beat is not None:
            found += send(beat)
    before_end = list(found)
    frontier = correlator.correlation.agents.frontier() if correlator.correlation.agents else float("-inf")
    expected += whole.flush()
    found += correlator.flush()
    assert sorted(json.dumps(comparable(a), sort_keys=True) for a in found) == \
        sorted(json.dumps(comparable(a), sort_keys=True) for a in expected)
    due = [comparable(a) for a in expected if alert_time(a) < frontier - lateness * 10**9]
    assert all(a in [comparable(b) for b in before_end] for a in due)
