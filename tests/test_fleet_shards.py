"""Match on every agent, correlate once (issue "Fleet scale", its first property).

A stream split into K agent shards, each detected by its own match stage, and the
Detection records correlated by one correlate stage, gives the alerts of one process
running both stages on the merged stream, for K = 1..4:

* delivered in any interleaving that keeps each agent's own order (in process);
* or as K files of Detection records merged by event time by ``--input`` (through the
  CLI), against ``--stage all`` on the stream merged the same way.

Line numbers are each agent's own, so the comparison leaves out the ``line`` of event
references and the alert ``id`` derived from them.
"""

import json

from hypothesis import given, settings, strategies as st

from clitools import alerts, ndjson, run_cli
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
        matched = run_cli(common + ["--stage", "match", "--input", str(event_file)], b"")
        assert matched.returncode == 0, matched.stderr
        detection_file = tmp / f"agent{agent}.detections"
        detection_file.write_bytes(matched.stdout)
        detection_files.append(str(detection_file))
    whole = run_cli(common + [arg for path in event_files for arg in ("--input", path)], b"")
    correlated = run_cli(common + ["--stage", "correlate"] + [arg for p in detection_files for arg in ("--input", p)],
                         b"")
    assert whole.returncode == 0 and correlated.returncode == 0, (whole.stderr, correlated.stderr)
    assert [comparable(a) for a in alerts(correlated.stdout)] == [comparable(a) for a in alerts(whole.stdout)]
