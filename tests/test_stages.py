"""The two stages: Detection records, single-event rules, enrichment per condition, rule sets.

The central property: detecting, writing the Detection records as NDJSON and
correlating them in a second process gives byte-identical alerts to one
process doing both (checked on the command line once, then for random streams
with each stage a filter of its own in this process).
"""

import io
import json
import os
import re
import socket
import subprocess
import tempfile

import jsonschema
import ujson
import pytest
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, REPO, alerts, ndjson, records, run_cli
from eventgen import FRAMINGS, evtx_event, flat_event, framed, raw_events
import resolvers
from pipeshell_filter.cli import build_prefilter, load_plans
from pipeshell_filter.detect import FIELD_BYTES, LONGEST_VALUE, MOST_VALUES, Detection, Heartbeat, WireError, kept, \
    kept_values
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.io.stream import OWN_TYPES, Diagnostics, Filter, Output

SCHEMA_DIR = os.path.join(REPO, "filter", "pipeshell_filter", "schema")
DETECTION_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "detection.schema.json")))
HEARTBEAT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "heartbeat.schema.json")))
ALERT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "alert.schema.json")))
EVENT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "enriched-event.schema.json")))


def checker(schema: dict):
    """A validator of ``schema`` (``checker(s).validate(record)``), the schema checked once here:
    ``jsonschema.validate`` checks it again on each call, 50 ms, most of a property's example."""
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


DETECTIONS, HEARTBEATS, ALERTS = checker(DETECTION_SCHEMA), checker(HEARTBEAT_SCHEMA), checker(ALERT_SCHEMA)

SINGLE = """title: Script block with Invoke-Pipe
id: single-4104
logsource: {product: windows, category: ps_script}
detection:
  selection:
    EventID: 4104
    ScriptBlockText|contains: NamedPipe
  filter:
    ScriptBlockText|contains: benign-marker
  condition: selection and not filter
level: high
"""

BY_HOST = """title: Three pipe events on one host
id: count-by-host
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() by Computer >= 3
  timeframe: 2m
"""


def enriched_events(stdout):
    return [r for r in records(stdout) if "sigma" in r and r.get("event", {}).get("kind") != "alert"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- the wire format


def test_detection_records_validate_and_round_trip():
    engine = Engine(load_plans(None, None), resolvers.auto())
    _, detections = engine.match(evtx_event(5, "srv01", "server", 4104, record_id=3), 7)
    assert len(detections) == 1
    wire = json.loads(json.dumps(detections[0].to_wire()))
    jsonschema.validate(wire, DETECTION_SCHEMA)
    assert Detection.from_wire(wire) == detections[0]
    assert wire["terms"] == [0] and wire["fields"] == {"Computer": ["srv01"]} and wire["event"]["line"] == 7
    older = dict(wire, event=dict(wire["event"], host=7))  # an older build's agent wrote a numeric host so
    assert Detection.from_wire(older).event["host"] == "7"


def test_an_event_digest_is_of_the_line_the_filter_parses(tmp_path):
    """The same event, with a byte order mark or forwarded in a ``--line-field`` record with a read time
    of its own, from stdin or a named file: one digest, as the README says (a line read again is the
    same event); an event with a record id carries none."""
    rule = write(tmp_path, "single.yml", SINGLE)
    event = json.dumps(dict(flat_event(0, "srv01", "server", 4104), SourcePort=1)).encode()
    with_id = json.dumps(flat_event(1, "srv01", "server", 4104, record_id=5)).encode()
    digests, source = [], tmp_path / "in.ndjson"
    for data, options in [(event + b"\n" + with_id + b"\n", []), (b"\xef\xbb\xbf" + event + b"\n", []),
                          (b"".join(json.dumps({"date": 1.5 + i, "log": event.decode()}).encode() + b"\n"
                                    for i in range(2)), ["--line-field", "log"])]:
        source.write_bytes(data)
        for stdin, named in ((data, []), (b"", ["--input", str(source)])):
            result = run_cli(["--rule", rule, "--stage", "match", "--heartbeat", "0", *options, *named], stdin)
            assert result.returncode == 0, result.stderr
            for line in result.stdout.splitlines():
                reference = json.loads(line)["event"]
                assert ("digest" in reference) != ("record_id" in reference), reference
                digests += [reference["digest"]] if "digest" in reference else []
    assert len(digests) == 8 and len(set(digests)) == 1


@pytest.mark.parametrize("record, message", [
    ({"type": "other"}, "not a sigma.detection"),
    ({"type": "sigma.detection", "version": 2}, "version 2"),
    ({"type": "sigma.detection", "version": True, "rule": "r", "time": 1, "terms": [0]}, "version True"),
    ({"type": "sigma.detection", "version": 1, "rule": "", "time": 1, "terms": [0]}, "rule"),
    ({"type": "sigma.detection", "version": 1, "rule": "r", "time": 1.5, "terms": [0]}, "time"),
    ({"type": "sigma.detection", "version": 1, "rule": "r", "time": 1, "terms": []}, "terms"),
    ({"type": "sigma.detection", "version": 1, "rule": "r", "time": 1, "terms": [0], "fields": {"a": "x"}}, "fields"),
])
def test_a_record_that_is_not_a_detection_is_refused_in_one_line(record, message):
    with pytest.raises(WireError, match=message) as error:
        Detection.from_wire(record)
    assert "\n" not in str(error.value)


def test_a_heartbeat_whose_version_is_true_is_refused():
    """JSON ``true`` is no version 1 (the schema's ``const`` tells them apart), though Python's ``True == 1``."""
    with pytest.raises(WireError, match="version True"):
        Heartbeat.from_wire({"type": "sigma.heartbeat", "version": True, "agent": "a", "time": 1})


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
                     lambda inner: st.lists(inner, max_size=2)
                     | st.dictionaries(st.text(max_size=2), inner, max_size=2),
                     max_leaves=4)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["@timestamp", "host", "event_id", "record_id", "digest", "line", "selections", "other"]),
       _JSON,
       st.integers(0, 2))
def test_a_detection_with_any_event_reference_is_refused_or_alerts(key, value, which):
    """Whatever a record puts in its event reference, it is refused in one line or taken and the
    alerts it makes are built: the correlate stage never stops on it."""
    plans = load_plans(None, None)
    engine = Engine(plans, resolvers.auto(), 0)
    events = [evtx_event(0, "srv01", "server", 4104, 1), evtx_event(30, "cli01", "client", 800, 2),
              evtx_event(60, "cli02", "client", 4103, 3)]
    wires = [json.loads(json.dumps(d.to_wire())) for line, e in enumerate(events, 1) for d in engine.match(e, line)[1]]
    wires[which]["event"][key] = value
    correlate = Engine(plans, resolvers.auto(), 0)
    taken = []
    for wire in wires:
        try:
            taken.append(Detection.from_wire(wire))
        except WireError as error:
            assert "\n" not in str(error)
    made = [alert for detection in taken for alert in correlate.observe(detection).alerts] + correlate.flush()
    for alert in made:
        json.dumps(alert)
    assert len(made) == (len(taken) == 3)  # the incident, when every record was taken


def test_a_hostile_event_digest_is_refused_in_one_line_and_one_beside_a_record_id_is_not_read(tmp_path):
    """``event.digest`` is what ``line_digest`` writes or the record is refused, said in one line: a
    megabyte of it, or any other text, was taken as is.  Beside a record id it is not read: records of
    one Windows event with other digests were as many events (three made a count of three)."""
    rule = write(tmp_path, "by.yml", BY_HOST)  # three pipe events on one host
    lines = [dict(flat_event(0, "srv01", "server", 4104), SourcePort=port) for port in range(3)]
    match = run_cli(["--rule", rule, "--stage", "match", "--heartbeat", "0"], ndjson(lines))
    assert match.returncode == 0, match.stderr
    wires = [json.loads(line) for line in match.stdout.splitlines()]
    assert len({wire["event"]["digest"] for wire in wires}) == 3 and all("record_id" not in w["event"] for w in wires)
    whole = run_cli(["--rule", rule, "--stage", "correlate"], ndjson(wires))
    assert len(alerts(whole.stdout)) == 1, whole.stderr
    for hostile in ["f" * 1_000_000, "0123456789ABCDEF", "0123456789abcde", "0123456789abcdeg", 12345, None, ""]:
        wires[0]["event"]["digest"] = hostile
        result = run_cli(["--rule", rule, "--stage", "correlate"], ndjson(wires))
        assert result.returncode == 0 and alerts(result.stdout) == [], result.stderr  # two events left
        said = [line for line in result.stderr.splitlines() if b"event.digest" in line]
        assert len(said) == 1 and len(said[0]) < 200, result.stderr[:300]
        assert b"must be 16 lowercase hexadecimal digits" in said[0]
    for number, wire in enumerate(wires):
        wire["event"].update(record_id=7, digest=f"{number:016x}", line=number + 1)
    once = run_cli(["--rule", rule, "--stage", "correlate"], ndjson(wires))
    assert once.returncode == 0 and alerts(once.stdout) == [], once.stderr
    assert b"2 sent again (taken once)" in once.stderr
    read = Detection.from_wire(wires[1])
    assert "digest" not in read.event and read.event["record_id"] == 7


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_record_id_tells_no_event_apart(tmp_path, blank):
    """A shipper writing ``EventRecordID`` with nothing in it: three failed logons of one second from
    three source ports were one event to the correlate stage and under ``--state`` (no alert); the
    line's digest tells them apart as for events without the field.  A record an older build wrote
    with an empty record id and no digest reads back without the record id."""
    rule = write(tmp_path, "by.yml", BY_HOST)
    lines = [dict(flat_event(0, "srv01", "server", 4104, record_id=blank), SourcePort=port) for port in range(3)]
    match = run_cli(["--rule", rule, "--stage", "match", "--heartbeat", "0"], ndjson(lines))
    assert match.returncode == 0, match.stderr
    wires = [json.loads(line) for line in match.stdout.splitlines()]
    assert all("record_id" not in w["event"] for w in wires) and len({w["event"]["digest"] for w in wires}) == 3
    whole = run_cli(["--rule", rule, "--stage", "correlate"], ndjson(wires))
    assert len(alerts(whole.stdout)) == 1, whole.stderr
    kept_state = run_cli(["--rule", rule, "--state", str(tmp_path / "state")], ndjson(lines))
    assert len(alerts(kept_state.stdout)) == 1, kept_state.stderr
    older = dict(wires[0], event={k: v for k, v in wires[0]["event"].items() if k != "digest"})
    older["event"]["record_id"] = blank
    assert "record_id" not in Detection.from_wire(older).event


def test_correlate_stage_diagnoses_lines_that_are_not_detections_and_goes_on(tmp_path):
    match = run_cli(["--stage", "match", "--lateness", "0"], ndjson([
        evtx_event(0, "srv01", "server", 4104, 1), evtx_event(30, "cli01", "client", 800, 2),
        evtx_event(60, "cli02", "client", 4103, 3)]))
    assert match.returncode == 0, match.stderr
    assert not alerts(match.stdout)
    lines = match.stdout.splitlines()
    assert sum(b'"sigma.detection"' in line for line in lines) == 3
    polluted = b"\n".join([lines[0], b'{"type": "sigma.detection", "version": 9}', b"garbage", *lines[1:]]) + b"\n"
    polluted += b"[1]\n\n" + b"x" * 3000 + b"\n"
    # --emit all passed the lines that were no JSON object on; the stage writes alerts only (--emit is refused)
    result = run_cli(["--stage", "correlate", "--max-line-bytes", "2048"], polluted)
    assert result.returncode == 0, result.stderr
    assert len(alerts(result.stdout)) == 1 and len(result.stdout.splitlines()) == 1, result.stdout[-300:]
    assert b"version 9" in result.stderr and b"Traceback" not in result.stderr
    heartbeats = sum(b'"sigma.heartbeat"' in line for line in lines)
    # its summary counts records, not matched events (it said "0 matched" of three Detections)
    assert f"{len(polluted.splitlines())} lines (3 detections, {heartbeats} heartbeats); 1 alert".encode() \
        in result.stderr, result.stderr


def test_a_detection_of_a_rule_the_correlate_stage_has_not_loaded_is_diagnosed_not_dropped_in_silence(tmp_path):
    single = write(tmp_path, "single.yml", SINGLE)
    match = run_cli(["--rule", single, "--stage", "match"], ndjson([flat_event(0, "srv01", "server", 4104, 1)]))
    assert match.returncode == 0 and b'"single-4104"' in match.stdout, match.stderr
    result = run_cli(["--stage", "correlate"], match.stdout)  # the built-in rule only
    assert result.returncode == 0 and not alerts(result.stdout)
    assert b"'single-4104', which is not loaded here" in result.stderr and b"Traceback" not in result.stderr
    assert b"skipped: 1 of a rule not loaded" in result.stderr


SPRAY = """title: Password spray
id: spray
detection:
  sel:
    EventID: 4625
  condition: sel | count(TargetUserName) by Computer > 2
  timeframe: 5m
"""


def _unframed(stdout: bytes) -> bytes:
    """The match stage's records out of Fluent Bit's ``[time, record]`` frames, as a shipper hands them on."""
    return b"".join(ujson.dumps(json.loads(line)[1]).encode() + b"\n" for line in stdout.splitlines())


@pytest.mark.parametrize("user, host, year", [
    ("admin\ud800", "dc01", 2026),  # a lone surrogate: Fluent Bit would have made it U+FFFD
    ("admin", "dc01\ud800", 2026),  # ... in the host, which the alert's id is made of
    ("admin", "dc01", 3000),  # event time beyond 64 bits of ns: no Fluent Bit number holds it
    ("admin", "dc01" + "x" * 1_500_000, 2026),  # a value over --max-record-bytes
])
def test_detection_records_in_the_fluent_bit_modes_stay_detections_and_alert_as_one_process(tmp_path, user, host,
                                                                                           year):
    """An attacker who writes the user name, the clock or the host name must not turn the agent's
    Detection records into pipeline_error records (which go to the events' file) and so evade
    correlation across the fleet."""
    rule = write(tmp_path, "spray.yml", SPRAY)
    events = b"".join(json.dumps({"EventID": 4625, "Computer": host, "TargetUserName": f"{user}{i}",
                                  "@timestamp": f"{year}-11-02T10:00:0{i}Z"}).encode() + b"\n" for i in range(3))
    whole = run_cli(["--rule", rule, "--quiet"], events)
    matched = run_cli(["--rule", rule, "--stage", "match", "--emit", "all", "--non-json", "wrap", "--fluentbit-time"],
                      events)
    assert matched.returncode == 0 and b"Traceback" not in matched.stderr
    wire = [record for record in records(_unframed(matched.stdout)) if record.get("type") == "sigma.detection"]
    assert len(wire) == 3 and all(len(json.dumps(record)) < 10_000 for record in wire)
    for record in wire:
        jsonschema.validate(record, DETECTION_SCHEMA)
    correlated = run_cli(["--rule", rule, "--stage", "correlate", "--quiet"], _unframed(matched.stdout))
    assert len(alerts(whole.stdout)) == len(alerts(correlated.stdout)) == 1, correlated.stderr
    # in the same mode one process makes the alert the two stages make, its id too (with a lone
    # surrogate the one process hashed the surrogate, the correlate stage the text it became)
    one = run_cli(["--rule", rule, "--quiet", "--non-json", "wrap"], events)
    two = run_cli(["--rule", rule, "--stage", "correlate", "--quiet", "--non-json", "wrap"], _unframed(matched.stdout))
    assert alerts(one.stdout) == alerts(two.stdout)


def _through_vector(stdout: bytes) -> bytes:
    """The match stage's records as Vector's fleet recipes hand them to the correlate stage: each line read
    by ``parse_json`` (serde_json), which refuses a lone surrogate (the recipe's ``drop_on_error`` then
    drops the line) and makes a number outside 64-bit signed integers a float; the Detection and heartbeat
    records written again."""
    def number(text):
        value = int(text)
        return value if -(1 << 63) <= value < 1 << 63 else float(text)
    carried = []
    for line in stdout.splitlines():
        record = json.loads(line, parse_int=number)
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: refused
            continue
        if record.get("type") in OWN_TYPES:
            carried.append(json.dumps(record).encode() + b"\n")
    return b"".join(carried)


def vector_agent_options(recipe: str) -> list:
    """The match stage's options in integrations/README.md's command line for a Vector fleet agent."""
    with open(os.path.join(REPO, "integrations", "README.md"), encoding="utf-8") as handle:
        pattern = r"\| pipeshell-filter (--stage match [^|\n]*?) *\| vector -q -c vector/" + re.escape(recipe)
        (line,) = re.findall(pattern, handle.read())
    return line.split()


@pytest.mark.parametrize("recipe", ["fleet-agent.yaml", "fleet-agent-nats.yaml"])
@pytest.mark.parametrize("user, host, year", [
    ("admin", "dc01", 2300),  # a time past 64 bits of signed ns: a float in Vector
    ("admin", "dc01", 1600),
    ("admin", "dc01", 3000),
    ("admin\ud800", "dc01", 2026),  # a lone surrogate: a line Vector refuses
    ("admin", "dc01\udc00", 2026),
])
def test_detection_records_of_a_vector_fleet_agent_reach_the_correlate_stage(tmp_path, recipe, user, host, year):
    """Vector's fleet agents read the match stage's output with ``parse_json``: a Detection of an event whose
    clock (after 2262, before 1678), user or host name an attacker wrote was refused there, or its time made
    a float that the correlate stage refused, and the event slipped past the fleet's correlation, where one
    process alerted.  With the recipe's options every Detection arrives, and the alert is one process's."""
    rule = write(tmp_path, "spray.yml", SPRAY)
    events = b"".join(json.dumps({"EventID": 4625, "Computer": host, "TargetUserName": f"{user}{i}",
                                  "@timestamp": f"{year}-11-02T10:00:0{i}Z"}).encode() + b"\n" for i in range(3))
    whole = run_cli(["--rule", rule, "--quiet"], events)
    matched = run_cli(["--rule", rule, *vector_agent_options(recipe), "--agent", "a"], events)
    assert matched.returncode == 0 and b"Traceback" not in matched.stderr
    carried = _through_vector(matched.stdout)
    detections = [record for record in records(carried) if record["type"] == "sigma.detection"]
    assert len(detections) == 3
    for record in detections:
        jsonschema.validate(record, DETECTION_SCHEMA)
    correlated = run_cli(["--rule", rule, "--stage", "correlate", "--quiet"], carried)
    assert b"not a Detection record" not in correlated.stderr
    assert len(alerts(whole.stdout)) == len(alerts(correlated.stdout)) == 1, correlated.stderr


def test_a_long_value_is_carried_as_its_head_and_a_digest_that_tells_values_apart():
    assert kept("x" * LONGEST_VALUE) == "x" * LONGEST_VALUE
    long, other = "y" * (LONGEST_VALUE + 1), "y" * LONGEST_VALUE + "z"
    assert kept(long) == kept("y" * (LONGEST_VALUE + 1)) and kept(long) != kept(other)
    assert len(kept("z" * 10**6)) < 400 and kept("\ud800" * 5000) != kept("\udc00" * 5000)
    many = [f"v{i}" for i in range(MOST_VALUES + 50)]
    assert kept_values(many[:MOST_VALUES]) == many[:MOST_VALUES]
    assert len(kept_values(many)) == MOST_VALUES and kept_values(many)[:-1] == many[:MOST_VALUES - 1]
    assert kept_values(many) == kept_values(list(many)) and kept_values(many) != kept_values(many[:-1] + ["w"])


_VALUE_TEXT = st.text(st.sampled_from(["\x01", "\"", "a", "\u6f22", "\U0001f600", "\ud800"]), max_size=1100)
_ESCAPES = st.builds(lambda c, n, i: c * n + str(i), st.sampled_from(["\x01", "\U0001f600", "\ud800"]),
                     st.integers(900, 1020), st.integers(0, 999))


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.lists(_VALUE_TEXT, max_size=130), st.lists(_ESCAPES, min_size=30, max_size=130)),
       st.integers(0, 129), st.sampled_from(["\x02", "b"]))
def test_a_fields_values_stay_within_their_bytes_whatever_their_escapes(texts, where, other):
    """100 values of 1,024 control characters were 600 KB of JSON (each six bytes escaped): two
    such fields made a Detection over NATS's 1 MB message, refused, and the agent stopped.  The
    values' JSON stays within ``FIELD_BYTES``, the first value is always kept (group-by reads it),
    equal lists give equal values and different lists different ones."""
    values = kept_values(texts)
    assert len(ujson.dumps(values, ensure_ascii=True)) <= FIELD_BYTES
    assert values == kept_values(list(texts)) and (not texts or values[0] == kept(texts[0]))
    changed = list(texts)
    if changed:
        changed[where % len(changed)] += other
        assert kept_values(changed) != values
    assert kept_values(texts + [other]) != values


@pytest.mark.parametrize("case", ["host", "list"])
def test_a_detection_of_a_hostile_event_fits_the_record_cap_and_stays_one(tmp_path, case):
    """A host name of 4,000 CJK characters (36 KB as a Detection, over a 16,000-byte cap) and a
    Computer list of 260 values of 4,095 characters (166 KB) made pipeline_error records, which
    the correlate stage never sees: the alert was lost."""
    host, cap = ("srv-" + "\u6f22" * 4000, "16000") if case == "host" else (["x" * 4095 + str(i) for i in range(260)],
                                                                         "1000000")
    events = [flat_event(0, "srv01", "server", 4104), flat_event(30, "cli01", "client", 4104),
              flat_event(60, "cli02", "client", 4104)]
    events[0]["Computer"] = host
    data = ndjson(events)
    matched = run_cli(["--stage", "match", "--heartbeat", "0", "--non-json", "wrap", "--max-record-bytes", cap], data)
    assert matched.returncode == 0 and b"pipeline_error" not in matched.stdout, matched.stdout[:300]
    assert max(len(line) for line in matched.stdout.splitlines()) < int(cap)
    correlated = run_cli(["--stage", "correlate"], matched.stdout)
    assert alerts(correlated.stdout) == alerts(run_cli([], data).stdout) and len(alerts(correlated.stdout)) == 1


@pytest.mark.parametrize("case", ["host", "list"])
def test_a_detection_over_a_small_record_cap_is_shortened_and_still_alerts(case):
    """A host name of 1,000 CJK characters (kept whole: 3 KB, twice in the record) made a Detection
    over a 4,096-byte cap, cut into a pipeline_error record: the correlate stage never saw it and the
    incident did not alert.  Its long values are now written shorter, and the split run alerts as
    the one process does with the same options."""
    host = "srv-" + "\u6f22" * 1000 if case == "host" else ["x" * 300 + str(i) for i in range(40)]
    events = [flat_event(0, "srv01", "server", 4104), flat_event(30, "cli01", "client", 4104),
              flat_event(60, "cli02", "client", 4104)]
    events[0]["Computer"] = host
    data = ndjson(events)
    options = ["--non-json", "wrap", "--max-record-bytes", "4096"]
    matched = run_cli(["--stage", "match", "--heartbeat", "0"] + options, data)
    assert matched.returncode == 0 and b"pipeline_error" not in matched.stdout, matched.stdout[:300]
    assert b"cut short" in matched.stderr and max(len(line) for line in matched.stdout.splitlines()) < 4096
    correlated = run_cli(["--stage", "correlate"] + options, matched.stdout)
    whole = alerts(run_cli(options, data).stdout)
    assert alerts(correlated.stdout) == whole and len(whole) == 1


_WIRE_VALUE = st.one_of(_VALUE_TEXT, _ESCAPES)


@settings(max_examples=60, deadline=None)
@given(_WIRE_VALUE, st.dictionaries(st.sampled_from(["Computer", "User", "Image"]),
                                    st.lists(_WIRE_VALUE, min_size=1, max_size=120), max_size=3),
       st.integers(4096 - 64, 40_000), st.sampled_from(["\x02", "b"]))
def test_a_fitted_detection_fits_reads_back_and_tells_values_apart(host, fields, limit, other):
    """``fitted`` (``detect.smaller`` in the Fluent Bit modes): within the limit (or None), a valid
    Detection, equal records alike, and a record whose value differs stays different (what grouping
    and counting read)."""
    from pipeshell_filter.io.stream import fitted
    kept_fields = {name: kept_values(values) for name, values in fields.items()}
    detection = Detection("r", 10**18, kept(host), (0,), kept_fields, {"line": 1, "host": kept(host),
                                                                       "digest": "0123456789abcdef", "selections": []})
    found = fitted(detection.to_wire(), limit)
    if found is None:
        return
    record, encoded = found
    assert len(encoded) <= limit and ujson.loads(encoded) == record
    read = Detection.from_wire(record)
    assert read.event["digest"] == "0123456789abcdef"  # what tells the event apart, as it was
    DETECTIONS.validate(record)
    assert fitted(Detection.from_wire(detection.to_wire()).to_wire(), limit) == found
    changed = Detection("r", 10**18, kept(host + other), (0,), kept_fields, {"line": 1, "host": kept(host + other),
                                                                           "selections": []})
    again = fitted(changed.to_wire(), limit)
    if again is not None:
        assert Detection.from_wire(again[0]).source != read.source


def test_a_detection_no_smaller_form_fits_is_carried_whole_in_one_process():
    """``--stage all`` with wrap carries a Detection as a match stage writes it; one that no smaller
    form brings under the cap (80 long fields) is written whole (and cut) there: carried whole, not
    read back from nothing (``from_wire(None)``: a WireError that stopped the filter)."""
    from pipeshell_filter.io.stream import _as_carried, fitted
    fields = {f"F{i}": ["v" * 300 + str(i)] for i in range(80)}
    detection = Detection("r", 10**18, "h", (0,), fields, {"line": 1, "host": "h", "selections": []})
    assert fitted(detection.to_wire(), 4096 - 64) is None
    assert _as_carried(detection, 4096 - 64).to_wire() == detection.to_wire()


# ---------------------------------------------------------------- two processes = one


def _stream_bytes(events, without_ids=frozenset()):
    """The events as lines; those in ``without_ids`` carry no record id, but a field no rule reads (a
    source port): told apart by their lines' digests alone (``event.digest``), in both stages alike."""
    return ndjson(dict(flat_event(seconds, host, kind, event_id), SourcePort=ident) if ident in without_ids
                  else flat_event(seconds, host, kind, event_id, record_id=ident)
                  for seconds, host, kind, event_id, ident in events)


# which events of ``raw_events`` have no record id
WITHOUT_IDS = st.one_of(st.just(frozenset()), st.frozensets(st.integers(0, 29)), st.just(frozenset(range(30))))


def _rule_args(rules, tmp):
    return {"builtin": [], "single": ["--rule", write(tmp, "single.yml", SINGLE)],
            "by_host": ["--rule", write(tmp, "by.yml", BY_HOST), "--rule", write(tmp, "s.yml", SINGLE)]}[rules]


def _stages(events, rules, lateness, tmp, heartbeat, without_ids=frozenset()):
    """The alerts of one process and of a match stage's records correlated by another, on the command line."""
    common = _rule_args(rules, tmp) + ["--lateness", str(lateness), "--quiet"]
    data = _stream_bytes(events, without_ids)
    whole = run_cli(common, data)
    matched = run_cli(common + ["--stage", "match", "--heartbeat", str(heartbeat)], data)
    correlated = run_cli(common + ["--stage", "correlate"], matched.stdout)
    for result in (whole, matched, correlated):
        assert result.returncode == 0, result.stderr
    return whole.stdout, correlated.stdout, _kinds(matched.stdout)


def _kinds(matched: bytes) -> list:
    """The type of each record a match stage wrote, each checked against its schema."""
    kinds = []
    for line in matched.splitlines():
        record = json.loads(line)
        kinds.append(record["type"])
        (HEARTBEATS if record["type"] == "sigma.heartbeat" else DETECTIONS).validate(record)
    return kinds


def _stage(rule_paths, data: bytes, lateness: int, stage: str, heartbeat: float = 0,
           alert_fields: str = "matched") -> bytes:
    """What ``--stage <stage>`` (default options but these) writes of ``data``, built as the command line
    builds it (its own rules, resolver, prefilter and engine: nothing shared with another stage's run),
    in this process: a property's examples would each start three processes."""
    plans = load_plans(rule_paths or None, None)
    prefilter, index = (None, None) if stage == "correlate" else \
        build_prefilter(plans, "auto", "match", OWN_TYPES if stage == "match" else ())
    engine = Engine(plans, resolvers.auto(), lateness * NS, unknown_logsource="match",
                    max_skew_ns=300 * NS, alert_fields=alert_fields)
    def made(output):
        stream_filter = Filter(engine, output, Diagnostics(io.StringIO()), "alerts", prefilter=prefilter,
                               clock=lambda: 0, stage=stage, index=index)
        if stage == "match" and heartbeat:
            stream_filter.send_heartbeats(socket.gethostname(), heartbeat, 300 * NS)
        return stream_filter

    return run_through(made, data)


def run_through(made, data: bytes) -> bytes:
    """What the filter ``made(output)`` writes of ``data``, a finished input."""
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        stream_filter = made(Output(sink.fileno()))
        source.write(data)
        source.seek(0)
        stream_filter.run(source.fileno(), live=False)
        stream_filter.finish()
        sink.seek(0)
        return sink.read()


def _stages_in_process(events, rules, lateness, tmp, heartbeat, without_ids=frozenset()):
    """``_stages`` in this process."""
    paths = _rule_args(rules, tmp)[1::2]
    data = _stream_bytes(events, without_ids)
    matched = _stage(paths, data, lateness, "match", heartbeat)
    return _stage(paths, data, lateness, "all"), _stage(paths, matched, lateness, "correlate"), _kinds(matched)


def test_two_processes_on_the_command_line_give_byte_identical_alerts(tmp_path):
    """The properties below run each stage in a filter of its own in this process; here three processes
    (the match stage with heartbeats), on a stream where each rule alerts on an event that is late but
    within the lateness."""
    events = [(0, "srv01", "server", 4104, 1), (20, "cli01", "client", 4104, 2), (25, "cli02", "client", 800, 3),
              (40, "srv01", "server", 4104, 4), (15, "srv01", "server", 4104, 5)]
    whole, correlated, kinds = _stages(events, "by_host", 30, tmp_path, 5, {5})  # the late one without a record id
    assert "sigma.heartbeat" in kinds and correlated == whole
    assert [alert["rule"]["id"] for alert in alerts(whole)] == ["single-4104"] * 4 + ["count-by-host"], whole
    assert (whole, correlated, kinds) == _stages_in_process(events, "by_host", 30, tmp_path, 5, {5})


@settings(max_examples=25, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(["builtin", "single", "by_host"]),
       st.sampled_from([0, 30, 400]), WITHOUT_IDS)
def test_two_processes_give_byte_identical_alerts(tmp_path_factory, events, rules, lateness, without_ids):
    """Detect in one filter, correlate the Detection lines in another: the same alert bytes
    as one filter running both stages, for random streams and rules (without heartbeats the
    correlate stage keeps time as the single process does, from the detections' sources); events
    without a record id too, whose alert ids hold their lines' digests."""
    whole, correlated, kinds = _stages_in_process(events, rules, lateness, tmp_path_factory.mktemp("rules"), 0,
                                                  without_ids)
    assert "sigma.heartbeat" not in kinds
    assert correlated == whole


def _framed_stream(events, framings, untimed) -> bytes:
    """``_stream_bytes`` with each line in one of Fluent Bit's frames at the event's own time, and the
    events in ``untimed`` without a time of their own: the frame's is theirs."""
    lines = []
    for (seconds, host, kind, event_id, ident), framing in zip(events, framings):
        event = flat_event(seconds, host, kind, event_id, record_id=ident)
        if ident in untimed:
            del event["@timestamp"]
        lines.append(framed(json.dumps(event).encode(), seconds, framing))
    return b"".join(line + b"\n" for line in lines)


@settings(max_examples=25, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(["builtin", "single", "by_host"]), st.sampled_from([0, 30, 400]),
       st.lists(st.sampled_from(FRAMINGS), min_size=30, max_size=30), WITHOUT_IDS)
def test_framed_lines_alert_as_the_plain_lines_in_one_process_and_in_two(tmp_path_factory, events, rules, lateness,
                                                                          framings, untimed):
    """An archive of Fluent Bit's framed lines gives the alerts of the plain lines, whether an event's time is
    its own or its frame's; and a match stage's records of it correlated apart give them too."""
    paths = _rule_args(rules, tmp_path_factory.mktemp("rules"))[1::2]
    data = _framed_stream(events, framings, untimed)
    matched = _stage(paths, data, lateness, "match")
    whole = _stage(paths, data, lateness, "all")
    assert whole == _stage(paths, _stream_bytes(events), lateness, "all")
    assert _stage(paths, matched, lateness, "correlate") == whole


def _framed_records(matched: bytes, framings: list, seconds: list) -> bytes:
    """A match stage's records as an archive of Fluent Bit's (its ``file`` output, say) holds them: each in
    a frame, at a time of the archive's own (the record's time is the one it carries)."""
    return b"".join(framed(line, seconds[i % len(seconds)], framings[i % len(framings)]) + b"\n"
                    for i, line in enumerate(matched.splitlines()))


@settings(max_examples=25, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(["builtin", "single", "by_host"]), st.sampled_from([0, 30, 400]),
       st.sampled_from([0, 1, 60]), st.lists(st.sampled_from(FRAMINGS), min_size=1, max_size=4),
       st.lists(st.integers(0, 10 ** 6), min_size=1, max_size=3))
def test_a_match_stages_records_in_fluent_bit_frames_correlate_as_the_plain_records(tmp_path_factory, events, rules,
                                                                                    lateness, heartbeat, framings,
                                                                                    seconds):
    """A match stage's Detections and heartbeats archived through Fluent Bit and replayed: the correlate stage
    reads each frame's record as it reads the record alone (it said every framed line was no JSON object)."""
    paths = _rule_args(rules, tmp_path_factory.mktemp("rules"))[1::2]
    matched = _stage(paths, _stream_bytes(events), lateness, "match", heartbeat)
    plain = _stage(paths, matched, lateness, "correlate")
    assert _stage(paths, _framed_records(matched, framings, seconds), lateness, "correlate") == plain


def _summary_and_diagnostics(result) -> list:
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    return result.stderr.decode().splitlines()


def test_framed_records_that_are_no_detections_are_diagnosed_as_the_plain_ones(tmp_path):
    """In a frame or not, a record that is no Detection (of a version unknown, a heartbeat's field wrong, an
    event) is said so in the same words and counted alike; a frame that is none is said to be one that is not."""
    match = run_cli(["--stage", "match", "--lateness", "0", "--heartbeat", "0"], ndjson([
        evtx_event(0, "srv01", "server", 4104, 1), evtx_event(30, "cli01", "client", 800, 2),
        evtx_event(60, "cli02", "client", 4103, 3)]))
    assert match.returncode == 0, match.stderr
    good = match.stdout.splitlines()
    bad = [b'{"type": "sigma.detection", "version": 9}', b'{"type": "sigma.heartbeat", "version": 1}',
           json.dumps(flat_event(0, "srv01", "server")).encode()]
    lines = good[:2] + bad + good[2:]
    plain = run_cli(["--stage", "correlate"], b"".join(line + b"\n" for line in lines))
    said = _summary_and_diagnostics(plain)
    assert len(alerts(plain.stdout)) == 1 and len(said) == len(bad) + 1
    for framing in FRAMINGS:
        archived = run_cli(["--stage", "correlate"], _framed_records(b"\n".join(lines), [framing], [5]))
        assert alerts(archived.stdout) == alerts(plain.stdout)
        assert _summary_and_diagnostics(archived) == said
    broken = [b"[1, 2]", b"tag: [x", b'[1.5, {"a":1}', b"[1.5, [1]]"]
    result = run_cli(["--stage", "correlate"], b"".join(line + b"\n" for line in broken + good))
    said = _summary_and_diagnostics(result)
    assert len(alerts(result.stdout)) == 1 and len(said) == len(broken) + 1
    assert all("Fluent Bit frame" in line for line in said[:-1]), said


def test_several_inputs_of_framed_records_are_merged_by_the_records_times(tmp_path):
    """``--stage correlate --input a --input b``: framed records are merged by the times they carry, as plain
    ones (the merge read none of a framed line's)."""
    events = [(0, "srv01", "server", 4104, 1), (20, "cli01", "client", 4104, 2), (25, "cli02", "client", 800, 3),
              (40, "srv01", "server", 4104, 4)]
    matched = run_cli(["--stage", "match", "--lateness", "0", "--heartbeat", "0"], _stream_bytes(events))
    assert matched.returncode == 0, matched.stderr
    lines = matched.stdout.splitlines()
    halves = {}
    for name, framings in (("plain", None), ("framed", ["tag", "meta"])):
        paths = [tmp_path / f"{name}{i}.log" for i in range(2)]
        for i, path in enumerate(paths):  # the later records first, in the first file
            part = b"\n".join(lines[1 - i::2][::-1 if i == 0 else 1])
            path.write_bytes(part + b"\n" if framings is None else _framed_records(part, framings, [7]))
        done = run_cli(["--stage", "correlate", "--lateness", "0", "--input", str(paths[0]), "--input", str(paths[1])])
        halves[name] = (done.returncode, alerts(done.stdout), done.stderr.splitlines()[-1:])
    assert halves["framed"] == halves["plain"] and halves["plain"][1]

def within_lateness(events, lateness):
    """The events an on-time stream keeps: none older than the newest so far minus the lateness."""
    kept, newest = [], None
    for event in events:
        if newest is None or event[0] >= newest - lateness:
            kept.append(event)
            newest = event[0] if newest is None else max(newest, event[0])
    return kept


@settings(max_examples=25, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(["builtin", "single", "by_host"]),
       st.sampled_from([0, 30, 400]), st.sampled_from([1, 5, 60]), WITHOUT_IDS)
def test_with_heartbeats_an_on_time_stream_gives_the_same_alerts(tmp_path_factory, events, rules, lateness,
                                                                 heartbeat, without_ids):
    """With heartbeats the correlate stage keeps the agent's time: on a stream whose disorder
    stays within the lateness (the watermark's promise) the alerts are the same."""
    events = within_lateness(events, lateness)
    whole, correlated, kinds = _stages_in_process(events, rules, lateness, tmp_path_factory.mktemp("rules"),
                                                  heartbeat, without_ids)
    assert ("sigma.heartbeat" in kinds) == bool(events)
    assert sorted(correlated.splitlines()) == sorted(whole.splitlines())


# ---------------------------------------------------------------- single-event rules


def test_a_rule_without_correlation_alerts_on_each_event_at_once_even_without_time(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    timeless = flat_event(0, "cli01", "client", 4104)
    del timeless["@timestamp"]
    same_time = [flat_event(0, "srv01", "server", 4104, record_id=1),
                 flat_event(0, "cli02", "client", 4104, record_id=2)]
    result = run_cli(["--rule", rule, "--lateness", "60"], ndjson(same_time + [timeless]))
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 3  # one per event, not one for "2 hosts within 0s"
    for alert in found:
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert alert["sigma"]["events_total"] == 1 and "join" not in alert["sigma"]
    assert [a["related"]["hosts"] for a in found] == [["srv01"], ["cli02"], ["cli01"]]
    assert "@timestamp" not in found[2] and found[0]["@timestamp"] == found[0]["event"]["start"]
    assert b"no event time" not in result.stderr


def test_a_single_event_alert_is_written_before_the_next_line_is_read(tmp_path):
    """Never held for the watermark: the alert is out while the input is still open."""
    rule = write(tmp_path, "single.yml", SINGLE)
    process = subprocess.Popen(COMMAND + ["--rule", rule, "--lateness", "3600", "--idle", "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(ndjson([flat_event(0, "srv01", "server", 4104)]))
        process.stdin.flush()
        line = process.stdout.readline()  # blocks until the alert is written: the input is still open
        assert json.loads(line)["event"]["kind"] == "alert"
    finally:
        process.stdin.close()
        process.wait(timeout=30)


# ---------------------------------------------------------------- enrichment per condition


def test_enrichment_only_where_the_condition_holds(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    filtered = flat_event(0, "srv01", "server", 4104)
    filtered["ScriptBlockText"] += " benign-marker"
    events = [filtered, flat_event(1, "cli01", "client", 4104)]
    result = run_cli(["--rule", rule, "--emit", "all"], ndjson(events))
    out = records(result.stdout)
    assert "sigma" not in out[0]  # met `filter` too: `selection and not filter` is false
    assert out[1]["sigma"] == {"rule": {"id": "single-4104", "title": "Script block with Invoke-Pipe"},
                               "selections": ["selection"], "terms": ["selection and not filter"]}
    jsonschema.validate(out[1], EVENT_SCHEMA)


def test_several_rules_are_listed_once_each(tmp_path):
    rules = ["--rule", write(tmp_path, "a.yml", SINGLE), "--rule", write(tmp_path, "b.yml", BY_HOST)]
    result = run_cli(rules + ["--emit", "matches"], ndjson([flat_event(0, "srv01", "server", 4104)]))
    enriched = enriched_events(result.stdout)
    assert len(enriched) == 1
    sigma = enriched[0]["sigma"]
    assert set(sigma) == {"matches"}
    assert [m["rule"]["id"] for m in sigma["matches"]] == ["single-4104", "count-by-host"]
    jsonschema.validate(enriched[0], EVENT_SCHEMA)


def test_group_by_rule_alerts_per_host(tmp_path):
    rule = write(tmp_path, "by.yml", BY_HOST)
    events = [flat_event(i, host, "server", 4104, record_id=i) for i, host in
              enumerate(["srv01", "cli01", "srv01", "cli01", "srv01"])]
    result = run_cli(["--rule", rule, "--lateness", "0"], ndjson(events))
    found = alerts(result.stdout)
    assert [(a["sigma"]["aggregation"]["group"], a["sigma"]["aggregation"]["count"]) for a in found] == [("srv01", 3)]


# ---------------------------------------------------------------- rule sets


def test_rule_directories_and_multi_document_files(tmp_path):
    rules = tmp_path / "rules"
    (rules / "sub").mkdir(parents=True)
    (rules / "sub" / "both.yaml").write_text(SINGLE + "---\n" + BY_HOST)
    (rules / "broken.yml").write_text("title: broken\ndetection: {sel: {a: 1}, condition: nosuch}\n")
    (rules / "notes.txt").write_text("not a rule")
    result = run_cli(["--rule", str(rules), "--emit", "matches"], ndjson([flat_event(0, "srv01", "server", 4104)]))
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if b"skipped" in line]
    assert len(skipped) == 1 and b"broken.yml" in skipped[0] and b"nosuch" in skipped[0]
    enriched = enriched_events(result.stdout)
    assert [m["rule"]["id"] for m in enriched[0]["sigma"]["matches"]] == ["single-4104", "count-by-host"]
    strict = run_cli(["--rule", str(rules), "--strict"], b"")
    assert strict.returncode == 2 and strict.stderr.count(b"\n") == 1 and b"broken.yml" in strict.stderr


def test_a_named_rule_file_that_fails_is_an_error_and_duplicate_ids_are_refused(tmp_path):
    bad = write(tmp_path, "bad.yml", "title: x\ndetection: {condition: sel}\n")
    result = run_cli(["--rule", bad], b"")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1
    first, second = write(tmp_path, "a.yml", SINGLE), write(tmp_path, "b.yml", SINGLE)
    result = run_cli(["--rule", first, "--rule", second], b"")
    assert result.returncode == 2 and b"already names" in result.stderr


def filtered(plans, data: bytes, lateness: int = 60) -> bytes:
    """``--emit alerts`` on ``data`` without ``--state``, in this process (a property's hundreds of runs,
    each a start of its own)."""
    return run_through(lambda output: Filter(Engine(plans, resolvers.auto(), lateness * NS), output,
                                             Diagnostics(io.StringIO()), "alerts", clock=lambda: 0), data)


EITHER = ("title: either\nid: either\ndetection:\n  a: {X: one}\n  b: {X: two}\n  both: {X: both}\n"
          "  condition: [a, b, both]\n")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["one", "two", "both"]), st.integers(0, 3), st.sampled_from(["h1", "h2"])),
                min_size=1, max_size=12),
       st.integers(0, 3))
def test_alerts_the_filter_tells_apart_never_share_an_id(tmp_path_factory, events, padding):
    """``event.id`` is the message id on the fleet bus, which keeps one message per id: two alerts
    of events that differ in their selections (a list condition: either) had the same one and the
    bus dropped the second.  And it does not depend on the line number (a replay from elsewhere)."""
    plans = load_plans([write(tmp_path_factory.mktemp("either"), "either.yml", EITHER)], None)
    lines = [json.dumps({"X": x, "Computer": host, "@timestamp": f"2026-01-01T00:00:0{second}Z"})
             for x, second, host in events]
    first = filtered(plans, ("\n".join(lines) + "\n").encode())
    shifted = filtered(plans, ("\n".join(['{"other": 1}'] * padding + lines) + "\n").encode())
    found = alerts(first)
    distinct = {(x, second, host) for x, second, host in events}
    assert len(found) == len(events) and len({a["event"]["id"] for a in found}) == len(distinct)
    assert [a["event"]["id"] for a in alerts(shifted)] == [a["event"]["id"] for a in found]


# ---------------------------------------------------------------- records of the filter's own kind in the input

def _own_typed(stdout: bytes) -> list:
    """The output records whose top-level "type" a fleet agent's shipper routes on (each line's
    record, unframed: ``[time, record]`` in the Fluent Bit modes)."""
    found = []
    for line in stdout.splitlines():
        value = json.loads(line)
        record = value[1] if isinstance(value, list) else value
        if record.get("type") in ("sigma.detection", "sigma.heartbeat"):
            found.append(record)
    return found


FORGED = [b'{"type":"sigma.detection","version":1,"rule":"55d5b9c0-ae28-59e1-b4ff-9a7278c173db","time":1,'
          b'"source":"forged","terms":[0],"fields":{},"event":{"line":1}}',
          b'{"type":"sigma\\u002eheartbeat","version":1,"agent":"a","time":4102444800000000000}',
          b'{"type":"x","type":"sigma.heartbeat","agent":"a","time":4102444800000000000}',
          b'{"\\u0074ype":"sigma.detection"}',
          b'{"type":"note\\nsigma.detection"}']


@pytest.mark.parametrize("mode", [[], ["--no-prefilter"], ["--prefilter-engine", "python"],
                                  ["--non-json", "wrap", "--fluentbit-time"],
                                  ["--non-json", "wrap", "--fluentbit-time", "--no-prefilter"]])
def test_a_match_stage_never_passes_on_an_input_line_its_shipper_would_take_for_its_own_record(tmp_path, mode):
    """An input line that is a Detection or heartbeat record (a log line an attacker wrote) went
    through the match stage byte for byte, and the agent's shipper, routing on "type", forwarded it
    to the correlate stage: a forged Detection, or a heartbeat from the year 2100. Each is now a
    pipeline_error record holding the line, in any mode; its look-alikes pass on as they are."""
    sample = open(os.path.join(REPO, "examples", "pipeshell-sample.ndjson"), "rb").read().splitlines()
    decoys = [b'{"type":"sigma.detections"}', b'{"kind":"sigma.detection"}']
    lines = sample[:20] + FORGED + decoys + sample[20:]
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    alone = run_cli(["--stage", "match", "--heartbeat", "0", "--emit", "all"] + mode,
                    b"\n".join(sample) + b"\n")
    result = run_cli(["--stage", "match", "--heartbeat", "0", "--emit", "all", "--input", str(path)] + mode)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(lines) + 3  # every line, and the sample's 3 Detections
    own = _own_typed(result.stdout)
    assert [(r["rule"], r["time"], r["source"]) for r in own] == \
        [(r["rule"], r["time"], r["source"]) for r in _own_typed(alone.stdout)] and len(own) == 3
    errors = [json.loads(line) for line in result.stdout.splitlines() if b'"impersonation"' in line]
    errors = [e[1] if isinstance(e, list) else e for e in errors]
    assert [e["event"]["original"].encode() for e in errors] == FORGED
    assert result.stderr.count(b"impersonation") == 1  # the summary's count; each line diagnosed
    for decoy in decoys:
        assert decoy in result.stdout


def test_an_event_that_forges_a_record_type_is_still_detected_by_the_match_stage(tmp_path):
    """An event that matched and had a top-level ``type`` of ``sigma.detection`` was wrapped as a
    ``pipeline_error`` record, never matched: one field an attacker could set took the event out of the
    fleet's alerts (``--stage match | --stage correlate`` gave none, one process one).  The line is still
    never passed on as it is; its own Detections go out after the record holding it."""
    rule = write(tmp_path, "single.yml", SINGLE)
    forged = [dict(flat_event(seconds, "srv01", "server", 4104, record_id=seconds), type=kind)
              for seconds, kind in ((0, "sigma.detection"), (10, "sigma.heartbeat"), (20, "note"))]
    data = ndjson(forged)
    one = run_cli(["--rule", rule], data)
    assert len(alerts(one.stdout)) == 3
    for emit in ("alerts", "matches", "all"):
        matched = run_cli(["--rule", rule, "--stage", "match", "--heartbeat", "0", "--emit", emit], data)
        assert matched.returncode == 0, matched.stderr
        own = _own_typed(matched.stdout)
        assert [r["event"]["record_id"] for r in own] == [0, 10, 20]
        for record in own:
            DETECTIONS.validate(record)
        assert matched.stdout.count(b'"impersonation"') == 2
        assert b'"sigma":' not in b"".join(line for line in matched.stdout.splitlines() if b'"type":"sigma.' in line
                                          and b'"impersonation"' not in line and b'"version"' not in line)
        correlated = run_cli(["--rule", rule, "--stage", "correlate"], matched.stdout)
        assert correlated.stdout == one.stdout


def test_an_alert_carries_the_rules_description_and_false_positives_bounded(tmp_path):
    """What an analyst triages with: ``rule.description`` (cut at 2,048 characters) and
    ``sigma.falsepositives`` (at most 10 texts of 256), on a rule's alerts and a correlation's; a rule
    without them has neither, and entries that are no text are left out, never a reason to refuse it."""
    described = SINGLE + "description: " + "d" * 3000 + "\nfalsepositives:\n" + \
        "".join(f"  - fp{n} {'x' * 300}\n" for n in range(12)) + "  - 5\n  - ''\n"
    correlation = BY_HOST + "description: three on one host\nfalsepositives: an admin's loop\n"
    args = ["--rule", write(tmp_path, "single.yml", described), "--rule", write(tmp_path, "by.yml", correlation)]
    events = [flat_event(seconds, "srv01", "server", 4104, record_id=seconds) for seconds in (0, 10, 20)]
    found = alerts(run_cli(args, ndjson(events)).stdout)
    single = [a for a in found if a["rule"]["id"] == "single-4104"]
    counted = [a for a in found if a["rule"]["id"] == "count-by-host"]
    assert len(single) == 3 and len(counted) == 1
    for alert in found:
        ALERTS.validate(alert)
    assert single[0]["rule"]["description"] == "d" * 2048 + "\u2026"
    assert single[0]["sigma"]["falsepositives"] == [f"fp{n} {'x' * 300}"[:256] + "\u2026" for n in range(10)]
    assert counted[0]["rule"]["description"] == "three on one host"
    assert counted[0]["sigma"]["falsepositives"] == ["an admin's loop"]
    plain = alerts(run_cli(["--rule", write(tmp_path, "plain.yml", SINGLE)], ndjson(events)).stdout)
    assert plain and all("description" not in a["rule"] and "falsepositives" not in a["sigma"] for a in plain)


@pytest.mark.parametrize("description", ["''", "'   '", "\"\\n\\t\""])
def test_a_blank_description_is_none_as_a_blank_false_positive_is(description):
    """An alert carries no empty ``rule.description``: a blank one is left out, as blank falsepositives are."""
    from pipeshell_filter.sigma.rule import parse_rule

    rule = parse_rule(SINGLE + f"description: {description}\nfalsepositives: ['', ' ']\n", "blank.yml")
    assert rule.description is None and rule.falsepositives == ()


def test_identical_lines_without_a_record_id_count_apart_in_one_process_and_once_in_the_stages(tmp_path):
    """The exception the README's Heartbeats guarantees name: three identical matching lines without an
    EventRecordID make ``count() > 2`` alert in one process (its input lines told apart), not through
    ``--stage match | --stage correlate``, whose correlate stage takes a record sent again once."""
    rule = tmp_path / "three.yml"
    rule.write_text("title: three logons\nid: 11111111-2222-3333-4444-555555555555\nlevel: high\n"
                    "logsource: {product: windows, service: security}\n"
                    "detection:\n  sel: {EventID: 4625}\n  condition: sel | count() > 2\ntimeframe: 5m\n")
    line = {"@timestamp": "2026-11-02T09:00:00Z", "EventID": 4625, "Computer": "h1", "Channel": "Security"}
    data = ndjson([line] * 3)
    one = run_cli(["--rule", str(rule)], data)
    match = run_cli(["--rule", str(rule), "--stage", "match", "--heartbeat", "0"], data)
    both = run_cli(["--rule", str(rule), "--stage", "correlate"], match.stdout)
    assert one.returncode == match.returncode == both.returncode == 0, (one.stderr, match.stderr, both.stderr)
    assert len(alerts(one.stdout)) == 1 and alerts(both.stdout) == []
    assert b"2 sent again (taken once)" in both.stderr
