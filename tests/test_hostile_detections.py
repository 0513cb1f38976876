"""The correlate stage's input written by an attacker: a compromised match agent, or anyone who reaches
the aggregator, writes the Detection and heartbeat records.  No record crashes the correlator, blinds it
or grows its memory without bound; each bad one is one line on stderr, counted, and the stream goes on.
"""

import json
import os

import jsonschema
import pytest
import ujson
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, alerts, records, run_cli, run_cli_here
from eventgen import flat_event
from pipeshell_filter.cli import load_plans, make_resolver
from pipeshell_filter.detect import Detection, Heartbeat, WireError, from_wire
from pipeshell_filter.engine import Engine
from test_hostile_input import peak_rss_kb
from test_stages import ALERT_SCHEMA, ALERTS, DETECTION_SCHEMA

RULES = """title: Three pipe servers on one host
id: pipes-by-host
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() by Computer >= 3
  timeframe: 2m
---
title: Encoded command
id: encoded-command
detection:
  sel:
    CommandLine|contains: ' -enc '
  condition: sel
"""

COUNT = """title: Three pipe servers
id: three-pipes
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() >= 3
  timeframe: 5m
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "rules.yml"
    path.write_text(RULES)
    return str(path)


def wire_lines(rule_path: str, events) -> list:
    """The Detection records a match stage writes for ``events`` (line numbers from 1), as dicts."""
    engine = Engine(load_plans([rule_path], None), make_resolver("auto", None, None))
    return [json.loads(json.dumps(d.to_wire())) for line, event in enumerate(events, 1)
            for d in engine.match(event, line)[1]]


def encode(record) -> bytes:
    return ujson.dumps(record, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8", "surrogatepass")


GENUINE = [flat_event(s, "dc01", "server", 4104, n) for n, s in enumerate((0, 30, 60), 1)]


def genuine_alerts(stdout: bytes) -> list:
    return [a for a in alerts(stdout) if a["rule"]["id"] == "pipes-by-host" and a["related"]["hosts"] == ["dc01"]]


def summary_counts(stderr: str) -> tuple:
    """(lines, detections, heartbeats, lines skipped) from the summary line at exit."""
    line = next(text for text in stderr.splitlines() if " lines (" in text and "detections" in text)
    head, _, rest = line.partition(" lines (")
    lines = int(head.rsplit(" ", 1)[-1])
    detections, heartbeats = (int(part.split()[0]) for part in rest.split(")")[0].split(", "))
    skipped = 0
    for part in line.split("; "):
        if part.startswith("skipped: "):
            for item in part[len("skipped: "):].split(", "):
                count, _, kind = item.partition(" ")
                if kind != "no event time":  # a Detection taken, then left out of correlation: counted as one
                    skipped += int(count)
    return lines, detections, heartbeats, skipped


# ---------------------------------------------------------------- what a reader holds of a record


def test_a_record_from_elsewhere_is_held_as_a_writer_bounds_it_and_a_writers_own_reads_back_whole(rules):
    """A megabyte host, field value or key of its own in the event reference, a hundred thousand fields,
    terms or selections: what the correlate stage keeps is what a match stage would have written."""
    plans = load_plans([rules], None)
    engine = Engine(plans, make_resolver("auto", None, None))
    wire = wire_lines(rules, GENUINE[:1])[0]
    own = Detection.from_wire(wire)
    assert engine.received(own) is own
    hostile = json.loads(json.dumps(wire))
    hostile["source"] = "dc01" + "x" * 1_000_000
    hostile["fields"]["Computer"] = ["y" * 1_000_000] + ["v%d" % i for i in range(100_000)]
    hostile["fields"].update({"junk%d" % i: ["z"] for i in range(100_000)})
    hostile["terms"] = [0, 0] + list(range(5, 100_000))
    hostile["event"].update(extra={"deep": [[["x" * 1_000_000]]]}, host="h" * 1_000_000,
                            selections=["sel"] * 100_000 + ["not-a-selection"])
    taken = engine.received(Detection.from_wire(hostile))
    assert taken.terms == (0,) and list(taken.fields) == ["Computer"]
    assert len(taken.fields["Computer"]) == 100 and max(map(len, taken.fields["Computer"])) <= 1024
    assert len(taken.source) < 1024 and len(taken.event["host"]) < 1024
    assert set(taken.event) == set(wire["event"]) and taken.event["selections"] == ["sel"]
    assert len(json.dumps(taken.to_wire())) < 20_000
    with pytest.raises(WireError, match="names no term"):
        engine.received(Detection.from_wire(dict(wire, terms=[7])))


def test_a_megabyte_agent_name_is_held_and_said_bounded():
    heartbeat = from_wire({"type": "sigma.heartbeat", "version": 1, "agent": "a" * 1_000_000, "time": 1})
    assert isinstance(heartbeat, Heartbeat) and len(heartbeat.agent) < 1024
    result = run_cli(["--stage", "correlate"],
                     encode({"type": "sigma.heartbeat", "version": 1, "agent": "a" * 1_000_000, "time": 10 ** 30}))
    assert result.returncode == 0 and b"Traceback" not in result.stderr
    assert b"not believed" in result.stderr and max(map(len, result.stderr.splitlines())) < 2000


def test_records_of_megabyte_values_in_an_open_window_keep_memory_bounded(rules, tmp_path):
    """150 Detections of 1 MB values (host, group-by value, a key of the reference's own) in one window
    of other hosts: held whole they took 580 MB; now about the start's 45 MB.  The incident alerts."""
    decoy = wire_lines(rules, [flat_event(10, "ws01", "server", 4104, 9)])[0]
    lines = []
    for n in range(150):
        record = json.loads(json.dumps(decoy))
        pad = "%06d" % n + "x" * 1_000_000
        if n % 3 == 0:
            record["source"] = record["event"]["host"] = pad
        elif n % 3 == 1:
            record["fields"]["Computer"] = [pad]
        else:
            record["event"]["extra"] = pad
        record["event"]["record_id"] = 100 + n
        lines.append(encode(record))
    data = b"\n".join(lines + [encode(r) for r in wire_lines(rules, GENUINE)]) + b"\n"
    code, out, err, peak_kb = peak_rss_kb(COMMAND + ["--stage", "correlate", "--rule", rules], data, tmp_path)
    assert code == 0 and b"Traceback" not in err, err[-500:]
    assert len(genuine_alerts(out)) == 1
    assert peak_kb < 120 * 1024, peak_kb
    assert max(map(len, out.splitlines())) < 100_000  # an alert echoes no megabyte


def test_a_key_of_its_own_in_the_event_reference_never_reaches_an_alert(rules):
    """The alert schema lists the reference's keys: a record that added one made an alert that broke it."""
    wires = wire_lines(rules, GENUINE)
    wires[1]["event"]["extra"] = {"nested": [1, 2]}
    wires[2]["event"]["line"] = 3
    result = run_cli(["--stage", "correlate", "--rule", rules], b"".join(encode(w) + b"\n" for w in wires))
    assert result.returncode == 0, result.stderr
    found = genuine_alerts(result.stdout)
    assert len(found) == 1
    jsonschema.validate(found[0], ALERT_SCHEMA)


@pytest.mark.parametrize("key, value, message", [
    ("line", -5, b"'event.line' must be an integer, 0 or more"),
    ("line", 1 << 64, b"'event.line' must be an integer, 0 or more, within 64 bits"),
    ("@timestamp", "garbage", b"'event.@timestamp' is not the record's 'time'"),
    ("@timestamp", "2021-06-03T13:00:01Z", b"'event.@timestamp' is not the record's 'time'"),
])
def test_a_reference_an_alert_could_not_carry_is_one_line_and_skipped(rules, key, value, message):
    """Taken, each made an alert against its schema (``line`` >= 0 and within 64 bits, ``@timestamp`` RFC 3339)."""
    wires = wire_lines(rules, GENUINE)
    forged = json.loads(json.dumps(wires[0]))
    forged["event"][key] = value
    forged["event"]["record_id"] = 99
    result = run_cli(["--stage", "correlate", "--rule", rules],
                     b"".join(encode(w) + b"\n" for w in [forged] + wires))
    assert result.returncode == 0 and message in result.stderr, result.stderr
    assert b"skipped: 1 not a Detection record" in result.stderr
    found = genuine_alerts(result.stdout)
    assert len(found) == 1 and found[0]["sigma"]["events_total"] == 3
    jsonschema.validate(found[0], ALERT_SCHEMA)


@pytest.mark.parametrize("with_state", [True, False])
def test_a_detection_sent_again_with_keys_of_its_own_is_taken_once(tmp_path, with_state):
    """An event sent again counts once (README, "State across restarts"; without --state too, the
    correlate stage's input being at least once): a copy that carries a key, a field or a repeated
    term of its own is the same event, and was counted again."""
    rule = tmp_path / "count.yml"
    rule.write_text(COUNT)
    first, second, third = wire_lines(str(rule), [flat_event(0, "dc01", "server", 4104, 1),
                                                  flat_event(20, "dc02", "server", 4104, 2),
                                                  flat_event(40, "dc02", "server", 4104, 3)])
    copies = [dict(first, tag="pipeshell.records.0"),  # Fluent Bit's nats output adds its tag
              dict(first, event=dict(first["event"], line=17, note="again")),
              dict(first, fields={"Computer": ["dc01"]}, terms=[0, 0])]
    for copy in copies:
        state = ["--state", str(tmp_path / f"{id(copy)}.json")] if with_state else []
        result = run_cli(["--stage", "correlate", "--rule", str(rule), *state],
                         b"".join(encode(r) + b"\n" for r in (first, second, copy)))
        assert result.returncode == 0, result.stderr
        assert not alerts(result.stdout), (copy, result.stderr)
        assert b"1 sent again (taken once)" in result.stderr
    result = run_cli(["--stage", "correlate", "--rule", str(rule), "--state", str(tmp_path / "three.json")],
                     b"".join(encode(r) + b"\n" for r in (first, second, third)))
    assert len(alerts(result.stdout)) == 1


@pytest.mark.parametrize("value, message", [
    ("[" * 1020 + "]" * 1020, b"version a list"),  # its repr raised RecursionError: the correlate stage stopped
    ('"' + "v" * 100_000 + '"', b"version 'vvvv"),  # the whole value on one line of stderr
])
@pytest.mark.parametrize("kind", ["sigma.detection", "sigma.heartbeat"])
def test_a_version_of_any_shape_is_one_short_line(value, message, kind):
    line = b'{"type": "%s", "version": %s}\n' % (kind.encode(), value.encode())
    result = run_cli(["--stage", "correlate"], line)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-300:]
    assert message in result.stderr and max(map(len, result.stderr.splitlines())) < 300
    assert b"skipped: 1 not a Detection record" in result.stderr


@pytest.mark.parametrize("record", [
    {"type": "sigma.heartbeat", "version": 1, "agent": "a", "time": 10 ** 400},  # its report divided it to a float
    {"type": "sigma.detection", "version": 1, "rule": "55d5b9c0-ae28-59e1-b4ff-9a7278c173db", "time": 10 ** 400,
     "source": "s", "terms": [0], "fields": {"Computer": ["s"]}, "event": {"line": 1, "selections": []}},
])
def test_a_time_of_hundreds_of_digits_is_refused_in_one_line(record):
    result = run_cli(["--stage", "correlate"], encode(record) + b"\n")
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-300:]
    assert b"'time' must be integer nanoseconds of at most 40 digits" in result.stderr


def test_a_time_of_forty_digits_and_a_sign_is_read_as_the_schema_says(rules):
    wire = dict(wire_lines(rules, GENUINE[:1])[0], time="-" + "9" * 40)
    jsonschema.validate(wire, DETECTION_SCHEMA)
    assert Detection.from_wire(wire).time == -int("9" * 40)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(wire, time=10 ** 40), DETECTION_SCHEMA)


# ---------------------------------------------------------------- heartbeats that lie


def _agents_stream(rules, forged: list, at: int) -> bytes:
    """Two agents' records around the incident on dc01 (agent a1 holds it), heartbeats every 30 s,
    with ``forged`` heartbeat records put in after ``at`` steps (a time behind then goes backwards)."""
    detections = wire_lines(rules, GENUINE)
    base = detections[0]["time"]
    lines = []
    for step in range(12):
        if step == at:
            lines += [encode(r) for r in forged]
        now = base + step * 30 * 10 ** 9
        lines += [encode(d) for d in detections if now - 30 * 10 ** 9 < d["time"] <= now]
        lines += [encode({"type": "sigma.heartbeat", "version": 1, "agent": agent, "time": now})
                  for agent in ("a1", "a2")]
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("forged, live", [
    ([("a2", 10 ** 19)], False), ([("a2", 10 ** 19)], True),  # a real agent's name, 2286
    ([("evil1", 10 ** 19), ("evil2", 10 ** 19)], False),  # two names vouch for each other
    ([("evil1", 10 ** 19), ("evil2", 10 ** 19)], True),
    # every real agent's name: on a file nothing tells them from the agents (as two sources, README
    # "Under attack"); on live input the wall clock does
    ([("a1", 10 ** 19), ("a2", 10 ** 19)], True),
    ([("a1", -10 ** 18)], False), ([("a1", -10 ** 18)], True),  # far behind, then the real a1 moves on
])
@pytest.mark.parametrize("at", [0, 2])
def test_heartbeats_that_lie_about_the_time_never_lose_the_incident(rules, tmp_path, forged, live, at):
    """Dated in 2286 under one or two names, or far behind (backwards, mid-stream): the fleet's time
    never runs past the real agents', so the incident is on time and alerts once."""
    records_in = [{"type": "sigma.heartbeat", "version": 1, "agent": agent, "time": time} for agent, time in forged]
    data = _agents_stream(rules, records_in, at)
    if live:
        result = run_cli(["--stage", "correlate", "--rule", rules, "--lateness", "0"], data)
    else:
        path = tmp_path / "records.ndjson"
        path.write_bytes(data)
        result = run_cli(["--stage", "correlate", "--rule", rules, "--lateness", "0", "--input", str(path)])
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-300:]
    found = genuine_alerts(result.stdout)
    assert len(found) == 1 and found[0]["sigma"]["events_total"] == 3, result.stderr


def test_thousands_of_agent_names_and_a_flood_of_groups_leave_the_incident_alerting(rules, tmp_path):
    """20,000 agent names and 30,000 Detections each of its own group before the incident: it alerts."""
    decoy = wire_lines(rules, [flat_event(0, "ws01", "server", 4104, 9)])[0]
    lines = []
    for n in range(30_000):
        record = dict(decoy, source=f"ws{n}", fields={"Computer": [f"ws{n}"]},
                      event=dict(decoy["event"], host=f"ws{n}", record_id=n, line=n + 1))
        lines.append(encode(record))
        if n < 20_000:
            lines.append(encode({"type": "sigma.heartbeat", "version": 1, "agent": f"agent{n}",
                                 "time": decoy["time"] - 10 ** 9}))
    lines += [encode(r) for r in wire_lines(rules, GENUINE)]
    path = tmp_path / "records.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run_cli(["--stage", "correlate", "--rule", rules, "--input", str(path)], timeout=120)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-300:]
    assert len(genuine_alerts(result.stdout)) == 1


# ---------------------------------------------------------------- the fuzz property

_SCALARS = (st.none() | st.booleans() | st.integers() | st.sampled_from([2 ** 63, 2 ** 64, -2 ** 63 - 1, 10 ** 30])
            | st.floats() | st.text(max_size=8) | st.sampled_from(["x" * 2000, "\ud800", "", "sigma.detection"]))


def _containers(inner):
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


_JSON = st.recursive(_SCALARS, _containers, max_leaves=6)
_KEYS = st.sampled_from(["type", "version", "rule", "time", "source", "terms", "fields", "event", "extra"])
_EVENT_KEYS = st.sampled_from(["@timestamp", "line", "event_id", "host", "record_id", "selections", "extra"])


@st.composite
def mutated(draw, base: dict) -> bytes:
    """A record of ``base`` made wrong in one to three ways: a key dropped or given any value (nested,
    huge, a number out of range, a lone surrogate), a key of its own, a group-by value of another type;
    then as text: a number made NaN, Infinity or 1e400, a byte order mark, a byte that is no UTF-8, a
    key given twice, the line cut, nested past the parser's limit, empty, or over --max-line-bytes."""
    record = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "event", "fields"]))
        target = record if where == "top" or not isinstance(record.get(where), dict) else record[where]
        key = draw(_EVENT_KEYS if where == "event" else st.just("Computer") | st.text(max_size=3)
                   if where == "fields" else _KEYS)
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(_JSON | st.lists(_SCALARS, max_size=3))
    text = json.dumps(record, allow_nan=True).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is", "nan", "bom", "byte", "twice", "cut", "deep", "empty", "long"]))
    if how == "nan":
        text = text.replace(b'"version": 1', b'"version": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"1e400",
                                                                                     b"-0", b"1.0"])))
    elif how == "bom":
        text = b"\xef\xbb\xbf" + text
    elif how == "byte":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + text[at:]
    elif how == "twice":
        text = text[:-1] + b', "' + draw(_KEYS).encode() + b'": ' + encode(draw(_SCALARS)) + b"}"
    elif how == "cut":
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif how == "deep":
        text = text[:-1] + b', "extra": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    elif how == "empty":
        text = draw(st.sampled_from([b"", b" ", b"\t", b"\r"]))
    elif how == "long":
        text = text[:-1] + b', "extra": "' + b"x" * 5000 + b'"}'
    return text.replace(b"\n", b" ")


@pytest.fixture(scope="module")
def incident(rules):
    """The records the property mutates (a single-event rule's, another host's of the correlation) and
    the incident's own, made once: each example mutates copies."""
    single, correlated = wire_lines(rules, [
        {"Computer": "ws07", "CommandLine": "powershell -enc AAAA", "@timestamp": GENUINE[1]["@timestamp"],
         "EventID": 4688, "EventRecordID": 7},
        flat_event(45, "ws08", "server", 4104, 8)])
    return single, correlated, [encode(r) for r in wire_lines(rules, GENUINE)]


@settings(max_examples=int(os.environ.get("HOSTILE_DETECTION_EXAMPLES", "25")), deadline=None)
@given(st.data())
def test_mutated_detection_records_are_each_diagnosed_or_used_and_the_incident_alerts(rules, incident, data):
    """Any mutation of valid Detection records, among the genuine incident's own: exit 0, no
    traceback, every diagnostic one line, every line accounted for (a Detection, a heartbeat or
    skipped, in the summary), and the incident alerts once with its three events.  Mutations of
    the single-event rule's records come anywhere; those of the correlation's (other hosts) after
    the incident's, as a record that moves the time may well make later ones late."""
    single, correlated, incidents = incident
    before = data.draw(st.lists(mutated(single), max_size=4))
    after = data.draw(st.lists(mutated(single) | mutated(correlated), max_size=6))
    genuine = data.draw(st.permutations(incidents))
    lines = before + genuine + after
    result = run_cli_here(["--stage", "correlate", "--rule", rules, "--max-line-bytes", "4096"],
                          b"\n".join(lines) + b"\n")
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert all(text.startswith("pipeshell-filter: ") for text in stderr.splitlines()), stderr[-2000:]
    total, detections, heartbeats, skipped = summary_counts(stderr)
    assert total == len(lines) == detections + heartbeats + skipped, stderr[-2000:]
    found = genuine_alerts(result.stdout)
    assert len(found) == 1 and sorted(e["record_id"] for e in found[0]["sigma"]["events"]) == [1, 2, 3], stderr
    for alert in alerts(result.stdout):
        ALERTS.validate(alert)
    assert all(isinstance(r, dict) for r in records(result.stdout))
