"""What an alert shows of each event it lists (``sigma.events[].fields``, ``--alert-fields``).

The values of the rule's Sigma ``fields`` and of the fields the event's matched selections read,
bounded; carried by Detection records from a match stage to a correlate stage; display only: the
same event with other values shown, or none (an older build's records and state), is the same event.
"""

import json
import os
import tempfile

import pytest
import ujson
import yaml
from hypothesis import given, settings, strategies as st

from clitools import REPO, alerts, ndjson, records, run_cli
from eventgen import flat_event, raw_events
from test_replays import correlate, detection_lines
from test_stages import ALERTS, BY_HOST, DETECTIONS, SINGLE, _stage, write
from test_state import INCIDENT
import resolvers
from pipeshell_filter.cli import load_plans
from pipeshell_filter.correlate.state import identity
from pipeshell_filter.detect import SHOWN_BYTES, SHOWN_TEXT, SHOWN_VALUES, Detection, WireError
from pipeshell_filter.engine import Engine
from pipeshell_filter.records import shrink

SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")
WITH_FIELDS = """title: named pipe script
id: with-fields
fields: [ScriptBlockText, Path, NotThere]
detection:
  sel: {EventID: 4104, ScriptBlockText|contains: NamedPipe}
  condition: sel
"""
WITHOUT_FIELDS = WITH_FIELDS.replace("id: with-fields", "id: without-fields").replace(
    "fields: [ScriptBlockText, Path, NotThere]\n", "")
# the alert's event.id of WITH_FIELDS on the sample, as the build before these values made it
ID_BEFORE = "b36ec73e1ec22fcb99f1bae0ac7df31a"


def _sample_script() -> str:
    return json.loads(open(SAMPLE).read().splitlines()[29])["Event"]["EventData"]["ScriptBlockText"]


def _by_rule(stdout: bytes) -> dict:
    found = {}
    for alert in alerts(stdout):
        ALERTS.validate(alert)
        found[alert["rule"]["id"]] = alert
    return found


@pytest.mark.parametrize("mode", ["matched", "rule", "none", None])
def test_an_alert_shows_the_rules_fields_and_its_selections_fields_as_the_option_says(tmp_path, mode):
    rules = ["--rule", write(tmp_path, "w.yml", WITH_FIELDS), "--rule", write(tmp_path, "wo.yml", WITHOUT_FIELDS)]
    option = ["--alert-fields", mode] if mode else []
    result = run_cli(rules + ["--emit", "alerts"] + option, open(SAMPLE, "rb").read())
    assert result.returncode == 0, result.stderr
    found = _by_rule(result.stdout)
    [shown], [plain] = found["with-fields"]["sigma"]["events"], found["without-fields"]["sigma"]["events"]
    script = _sample_script()
    if mode in ("matched", None):  # the default: the rule's fields (those the event has), its selection's
        assert shown["fields"] == {"ScriptBlockText": script, "Path": ""}
        assert plain["fields"] == {"ScriptBlockText": script}  # EventID: the reference shows it already
    elif mode == "rule":
        assert shown["fields"] == {"ScriptBlockText": script, "Path": ""} and "fields" not in plain
    else:
        assert "fields" not in shown and "fields" not in plain
    assert "fields_truncated" not in shown
    assert found["with-fields"]["event"]["id"] == ID_BEFORE  # display only: the alert is the same alert
    shown.pop("fields", None)  # and nothing else changed in it
    assert shown == {"@timestamp": "2026-11-02T09:03:21.114281Z", "line": 30, "event_id": 4104,
                     "host": "srv01.corp.example", "record_id": 1087, "selections": ["sel"]}


def test_a_bad_alert_fields_value_or_rule_fields_is_a_usage_error(tmp_path):
    refused = run_cli(["--alert-fields", "all"], b"")
    assert refused.returncode == 2 and b"Traceback" not in refused.stderr
    bad = write(tmp_path, "bad.yml", WITH_FIELDS.replace("fields: [ScriptBlockText, Path, NotThere]", "fields: {a: 1}"))
    refused = run_cli(["--rule", bad], b"")
    assert refused.returncode == 2 and refused.stderr.count(b"\n") == 1
    assert b"'fields' must be a string or a list of strings" in refused.stderr


def _engine(rule_text: str, mode: str = "matched") -> Engine:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "rule.yml")
        with open(path, "w") as handle:
            handle.write(rule_text)
        return Engine(load_plans([path], None), resolvers.auto(), alert_fields=mode)


HOSTILE = {"EventID": 4104, "Computer": "h1", "@timestamp": "2026-11-02T09:00:00Z", "EventRecordID": 5,
           "ScriptBlockText": "NamedPipe" + "x" * (1 << 20), "Many": [f"v{i}" for i in range(50)],
           "Nested": {"a": {"b": ["deep", 7]}}, "Element": {"#attributes": {"Q": "0"}, "#text": "its text"},
           "Number": 42, "Float": 1.5, "Huge": 10 ** 30, "Flag": True, "Null": None}


def test_values_are_shown_as_the_event_has_them_and_bounded():
    rule = WITH_FIELDS.replace("[ScriptBlockText, Path, NotThere]", json.dumps(list(HOSTILE)))
    _, [detection] = _engine(rule).match(HOSTILE, 3)
    shown = detection.event["fields"]
    assert list(shown) == list(HOSTILE)  # as the rule's fields name them (EventID too, which it asks for)
    assert shown["EventID"] == 4104 and shown["@timestamp"] == HOSTILE["@timestamp"]
    assert shown["ScriptBlockText"] == HOSTILE["ScriptBlockText"][:SHOWN_TEXT] + "\u2026"  # as alerts cut text
    assert shown["Many"] == [f"v{i}" for i in range(SHOWN_VALUES)] and detection.event["fields_truncated"]
    assert shown["Nested"] == ["deep", "7"] and shown["Element"] == "its text"
    assert (shown["Number"], shown["Float"], shown["Huge"], shown["Flag"], shown["Null"]) == \
        (42, "1.5", str(10 ** 30), True, None)
    wire = json.loads(json.dumps(detection.to_wire()))
    DETECTIONS.validate(wire)
    assert Detection.from_wire(wire) == detection  # read back as written


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.text(st.sampled_from(["\x01", "a", "\u6f22", "\U0001f600", "\ud800"]), max_size=400),
                          st.lists(st.text(st.sampled_from(["\x01", "\U0001f600"]), max_size=300), max_size=15),
                          st.integers(-(1 << 70), 1 << 70)), max_size=40))
def test_an_events_values_stay_within_their_bytes_whatever_their_escapes(values):
    names = [f"F{i}" for i in range(len(values))]
    rule = WITH_FIELDS.replace("[ScriptBlockText, Path, NotThere]", "[" + ", ".join(names) + "]")
    event = dict(HOSTILE, **dict(zip(names, values)))
    _, [detection] = _engine(rule, "rule").match(event, 1)
    shown = detection.event.get("fields", {})
    assert len(ujson.dumps(shown, ensure_ascii=True)) <= SHOWN_BYTES
    assert Detection.from_fields(json.loads(ujson.dumps(detection.to_wire()))) == detection


@pytest.mark.parametrize("fields", [[], "text", {"A": {"b": 1}}, {"A": [1]}, {"A": 1.5}])
def test_a_detection_whose_shown_values_are_not_values_is_refused(fields):
    _, [detection] = _engine(WITH_FIELDS).match(HOSTILE, 1)
    wire = json.loads(json.dumps(detection.to_wire()))
    wire["event"]["fields"] = fields
    with pytest.raises(WireError, match="'event.fields' must map"):
        Detection.from_wire(wire)


def test_a_foreign_detections_megabyte_values_are_bounded_when_read():
    _, [detection] = _engine(WITH_FIELDS).match(HOSTILE, 1)
    wire = json.loads(json.dumps(detection.to_wire()))
    wire["event"]["fields"] = {f"F{i}": "\x01" * (1 << 16) for i in range(100)}
    read = Detection.from_wire(wire).event
    assert len(ujson.dumps(read["fields"], ensure_ascii=True)) <= SHOWN_BYTES and read["fields_truncated"]


TEMPORAL = """title: server side
id: server
fields: [ScriptBlockText]
detection:
  sel: {ScriptBlockText|contains: NamedPipeServerStream}
  condition: sel
---
title: client side
id: client
fields: [EventData, Payload]
detection:
  sel: {EventData|contains: NamedPipeClientStream}
  other: {Payload|contains: NamedPipeClientStream}
  condition: sel or other
---
title: Both sides
id: both
correlation: {type: temporal, rules: [server, client], timespan: 5m}
"""


def test_each_event_of_a_correlation_alert_shows_its_own_rules_fields(tmp_path):
    result = run_cli(["--rule", write(tmp_path, "t.yml", TEMPORAL), "--emit", "alerts", "--lateness", "0"],
                     open(SAMPLE, "rb").read())
    assert result.returncode == 0, result.stderr
    both = _by_rule(result.stdout)["both"]
    shown = [(event["event_id"], list(event.get("fields", {}))) for event in both["sigma"]["events"]]
    assert shown == [(4104, ["ScriptBlockText"]), (800, ["EventData"])]  # the client rule's Payload: not in an 800


def test_two_stages_carry_the_values_and_the_correlate_stage_shows_what_its_option_names(tmp_path):
    rules = ["--rule", write(tmp_path, "t.yml", TEMPORAL), "--lateness", "0", "--quiet"]
    sample = open(SAMPLE, "rb").read()
    matched = run_cli(rules + ["--stage", "match", "--emit", "alerts"], sample)
    detections = [record for record in records(matched.stdout) if record["type"] == "sigma.detection"]
    assert detections and all("fields" in record["event"] for record in detections)
    for record in detections:
        DETECTIONS.validate(record)
    for mode in ("matched", "rule", "none"):
        whole = run_cli(rules + ["--emit", "alerts", "--alert-fields", mode], sample)
        correlated = run_cli(rules + ["--stage", "correlate", "--alert-fields", mode], matched.stdout)
        assert correlated.returncode == 0 and correlated.stdout == whole.stdout, (mode, correlated.stderr)
    # a match stage of an earlier build wrote no values: read as they are, alerting the same without them
    older = b"".join(ujson.dumps({**r, "event": {k: v for k, v in r["event"].items() if k != "fields"}}).encode()
                     + b"\n" if r["type"] == "sigma.detection" else ujson.dumps(r).encode() + b"\n"
                     for r in records(matched.stdout))
    correlated = run_cli(rules + ["--stage", "correlate"], older)
    none = run_cli(rules + ["--emit", "alerts", "--alert-fields", "none"], sample)
    assert correlated.returncode == 0 and correlated.stdout == none.stdout


FIELDS_RULES = {"fields": """title: fields
id: fields
fields: [Note, ScriptBlockText]
detection:
  sel: {ScriptBlockText|contains: NamedPipe}
  condition: sel
""", "by_host": BY_HOST.replace("detection:", "fields: [Note]\ndetection:"), "single": SINGLE}
NOTES = st.one_of(st.text(st.sampled_from(["\x01", "a", "\u6f22", "\U0001f600"]), max_size=300),
                  st.lists(st.text(max_size=5), max_size=12), st.integers(-5, 5), st.none())


@settings(max_examples=20, deadline=None)
@given(raw_events(max_size=25), st.lists(NOTES, min_size=25, max_size=25), st.sampled_from([0, 30, 400]),
       st.sampled_from(["matched", "rule", "none"]))
def test_two_stages_show_what_one_process_shows_and_nothing_else_changes(tmp_path_factory, events, notes, lateness,
                                                                        mode):
    """Random streams, each event with a value of its own (text with escapes, a list, a number, null):
    detect in one filter and correlate its Detection records in another, with ``--alert-fields``
    in both, gives the alert bytes of one process; and the values are all that the option changes."""
    tmp = tmp_path_factory.mktemp("rules")
    paths = [write(tmp, f"{name}.yml", text) for name, text in FIELDS_RULES.items()]
    data = ndjson(dict(flat_event(seconds, host, kind, event_id, record_id=ident), Note=note)
                  for (seconds, host, kind, event_id, ident), note in zip(events, notes))
    whole = _stage(paths, data, lateness, "all", alert_fields=mode)
    matched = _stage(paths, data, lateness, "match", alert_fields=mode)
    assert _stage(paths, matched, lateness, "correlate", alert_fields=mode) == whole
    plain = _stage(paths, data, lateness, "all", alert_fields="none")
    shown = alerts(whole)
    for alert in shown:
        ALERTS.validate(alert)
        for event in alert["sigma"]["events"]:
            assert ("fields" in event) == (mode == "matched" or mode == "rule" and alert["rule"]["id"] != "single-4104")
            event.pop("fields", None)
            event.pop("fields_truncated", None)
    assert shown == alerts(plain)


def test_identity_and_alert_ids_do_not_depend_on_the_values_shown():
    """An event's identity (``--state``'s ``seen`` and ``alerted``, the correlate stage's records sent
    again) is what the build before the values made: its saved identities still match."""
    reference = {"@timestamp": "2026-11-02T09:03:21.114281Z", "line": 30, "event_id": 4104, "host": "srv01",
                 "record_id": 1087, "selections": ["sel"]}
    plain = Detection("r1", 1793610201114281000, "srv01", (0,), {"Computer": ["srv01"]}, reference)
    shown = Detection("r1", 1793610201114281000, "srv01", (0,), {"Computer": ["srv01"]},
                      dict(reference, fields={"ScriptBlockText": "x"}, fields_truncated=True))
    assert identity(plain) == identity(shown) == "d2d7ad354f2156921286179e"  # as the build before made it


def _with_copies(originals: list, sources: list, replays: list, change) -> list:
    """``originals`` with copies of ``sources`` (their lines as another build or option wrote them) sent
    again later, as ``test_replays.sent_again`` places them, each changed by ``change(record)``."""
    after = [[] for _ in originals]
    for which, offset, renumbered in replays:
        which %= len(originals)
        record = json.loads(sources[which])
        record["event"]["line"] += 1000 if renumbered else 0
        change(record["event"])
        after[which + offset % (len(originals) - which)].append(ujson.dumps(record).encode() + b"\n")
    return [line for original, copies in zip(originals, after) for line in [original, *copies]]


def _older(line: bytes) -> bytes:
    record = json.loads(line)
    record["event"].pop("fields", None)
    return ujson.dumps(record).encode() + b"\n"


@settings(deadline=None, max_examples=25)
@given(raw_events(max_size=30, span=400), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                                                             st.booleans()), min_size=1, max_size=12),
       st.sampled_from([0, 30, 400]), st.sampled_from(["dropped", "other", "older"]))
def test_records_sent_again_with_other_values_shown_change_no_alert(events, replays, lateness, shown):
    """A copy of a record whose values differ (a match stage with another ``--alert-fields``, or the
    originals from an older build's agent, which wrote none, and the copies from this one's after an
    upgrade) is the same event: taken once, the alerts those of the stream without copies."""
    lines = detection_lines(events)
    if not lines:
        return
    originals = [_older(line) for line in lines] if shown == "older" else lines
    change = {"dropped": lambda event: event.pop("fields", None), "older": lambda event: None,
              "other": lambda event: event.update(fields={"Other": "value"})}[shown]
    once, _ = correlate(b"".join(originals), lateness)
    again, _ = correlate(b"".join(_with_copies(originals, lines, replays, change)), lateness)
    assert again == once


def _without_values(stdout: bytes) -> list:
    found = alerts(stdout)
    for alert in found:
        for event in alert["sigma"]["events"]:
            event.pop("fields", None)
    return found


def test_a_state_written_before_the_values_is_restored_and_alerts_as_one_run(tmp_path):
    """Windows saved by a build without the values (its events' references have none) are restored; the
    alert is the one an uninterrupted run makes (same event.id), its restored events without values."""
    args = ["--lateness", "0", "--idle", "0", "--quiet", "--emit", "alerts"]
    path = tmp_path / "state.json"
    assert run_cli(args + ["--state", str(path)], ndjson(INCIDENT[:2])).returncode == 0
    document = json.loads(path.read_bytes())
    [saved] = document["correlations"].values()
    held = [entry[2] for entry in saved["pending"]] + [entry[1] for entry in saved["windows"]]
    assert held and all("fields" in event["event"] for event in held)
    for event in held:
        del event["event"]["fields"]
    path.write_text(json.dumps(document))
    resumed = run_cli(args + ["--state", str(path)], ndjson(INCIDENT[2:]))
    assert resumed.returncode == 0, resumed.stderr
    [alert], [whole] = alerts(resumed.stdout), alerts(run_cli(args, ndjson(INCIDENT)).stdout)
    assert alert["event"]["id"] == whole["event"]["id"]
    restored, new = alert["sigma"]["events"][:2], alert["sigma"]["events"][2:]
    assert all("fields" not in event for event in restored) and all("fields" in event for event in new)
    assert _without_values(resumed.stdout) == _without_values(run_cli(args, ndjson(INCIDENT)).stdout)


MANY = """title: many
id: many
fields: [Blob, Other]
detection:
  sel: {ScriptBlockText|contains: NamedPipe}
  condition: sel | count() by Computer >= 60
timeframe: 10m
"""


def test_an_alert_of_many_events_with_megabyte_values_stays_bounded(tmp_path):
    """60 events, each with a megabyte value that starts with control characters (six bytes each in
    JSON) and a list of long texts of emoji (twelve): the alert's 50 events add at most 50 times
    ``SHOWN_BYTES``; under a 4,096-byte ``--max-record-bytes`` it is written shrunk, still an alert."""
    blob = "\x01" * 1000 + "x" * (1 << 20)
    events = [dict(flat_event(i, "srv01", "server", 4104, record_id=i), Blob=blob, Other=["\U0001f600" * 300] * 20)
              for i in range(60)]
    rule = ["--rule", write(tmp_path, "many.yml", MANY), "--emit", "alerts", "--lateness", "0",
            "--max-line-bytes", str(4 << 20)]
    result = run_cli(rule, ndjson(events))
    assert result.returncode == 0, result.stderr
    [alert] = alerts(result.stdout)
    ALERTS.validate(alert)
    assert alert["sigma"]["events_total"] == 60 and len(alert["sigma"]["events"]) == 50
    assert all(event["fields_truncated"] for event in alert["sigma"]["events"])
    assert len(result.stdout) < 50 * SHOWN_BYTES + 16_000
    small = run_cli(rule + ["--non-json", "wrap", "--max-record-bytes", "4096"], ndjson(events))
    assert small.returncode == 0, small.stderr
    [cut] = [line for line in small.stdout.splitlines() if b'"alert"' in line]
    assert len(cut) <= 4096 and json.loads(cut)["sigma"]["truncated"] is True
    assert json.loads(cut)["event"]["kind"] == "alert"


def test_a_shrunk_alert_keeps_a_few_values_of_each_event():
    alert = {"event": {"kind": "alert"}, "sigma": {"events": [
        {"line": 1, "selections": ["sel"], "fields": {f"F{i}": ["a" * 300] * 10 for i in range(20)}}]}}
    [event] = shrink(alert)["sigma"]["events"]
    assert len(event["fields"]) == 4 and all(len(value) == 1 for value in event["fields"].values())
    assert event["fields_truncated"] is True


def test_yaml_fields_of_one_string_is_a_list_of_one():
    rule = yaml.safe_load(WITH_FIELDS)
    rule["fields"] = "ScriptBlockText"
    _, [detection] = _engine(yaml.safe_dump(rule), "rule").match(HOSTILE, 1)
    assert list(detection.event["fields"]) == ["ScriptBlockText"]


def test_a_detection_over_a_small_record_cap_keeps_fewer_values_and_alerts_as_one_process(tmp_path):
    """Values of control characters fill an event's 4,096 bytes of them, beside a long host name: its
    Detection is over a 4,096-byte ``--max-record-bytes``, and is written in a smaller form (values cut
    shorter), not cut into a pipeline_error record; the split run alerts as the one process does."""
    names = [f"F{i}" for i in range(12)]
    rule = write(tmp_path, "r.yml", WITH_FIELDS.replace("[ScriptBlockText, Path, NotThere]", json.dumps(names)))
    events = [dict(flat_event(i, "srv-" + "\u6f22" * 400, "server", 4104, record_id=i),
                   **{name: "\x01" * 300 for name in names}) for i in range(3)]
    options = ["--rule", rule, "--non-json", "wrap", "--max-record-bytes", "4096"]
    matched = run_cli(options + ["--stage", "match", "--heartbeat", "0"], ndjson(events))
    assert matched.returncode == 0 and b"pipeline_error" not in matched.stdout, matched.stdout[:300]
    assert b"cut short" in matched.stderr and max(len(line) for line in matched.stdout.splitlines()) < 4096
    for record in records(matched.stdout):
        DETECTIONS.validate(record)
        assert record["event"]["fields"] and record["event"]["fields_truncated"] is True
    correlated = run_cli(options + ["--stage", "correlate"], matched.stdout)
    whole = run_cli(options, ndjson(events))
    assert correlated.stdout == whole.stdout and len(alerts(whole.stdout)) == 3
