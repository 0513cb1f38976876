"""End-to-end: the CLI in a subprocess, on real collector output and on bad input."""

import fcntl
import json
import os
import resource
import select
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time

import jsonschema
import pytest
from hypothesis import given as hypothesis_given, strategies as st

from clitools import COMMAND, FLUENT_BIT_CAPTURES, REPO, alerts, ndjson, records, run_cli, run_cli_here, unread
from eventgen import evtx_event, flat_event
from pipeshell_filter.io import inputs as inputs_module

SCHEMA_DIR = os.path.join(REPO, "filter", "pipeshell_filter", "schema")
ALERT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "alert.schema.json")))
EVENT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "enriched-event.schema.json")))
SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")

ATTACK = [
    evtx_event(0, "srv01", "server", 4104, record_id=11),
    evtx_event(30, "cli01", "client", 800, record_id=12),
    evtx_event(60, "cli02", "client", 4103, record_id=13),
]
BENIGN = [flat_event(10, "ws04", "benign", 4104), {"unrelated": True, "message": "hello"}]


def test_example_in_quick_start_prints_one_alert():
    result = run_cli(["--input", os.path.join(REPO, "examples", "pipeshell-sample.ndjson")])
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 1
    assert found[0]["related"]["hosts"] == ["cli01.corp.example", "cli02.corp.example", "srv01.corp.example"]


@pytest.mark.parametrize("name", ["stdout-json_lines.jsonl", "stdout-json_lines-iso8601.jsonl",
                                  "stdout-json_lines-nodate.jsonl"])
def test_real_fluent_bit_output_yields_the_three_host_alert(name):
    with open(os.path.join(FLUENT_BIT_CAPTURES, name), "rb") as handle:
        data = handle.read()
    result = run_cli(["--emit", "all"], data)
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 1
    alert = found[0]
    assert alert["sigma"]["aggregation"]["values"] == ["cli01.example.test", "cli02.example.test", "srv01.example.test"]
    assert alert["sigma"]["aggregation"]["count"] == 3
    # Event time, not Fluent Bit's read time ("date"), drives the window.
    assert alert["@timestamp"] == "2026-11-01T10:01:00.250Z"
    assert {t["term"]: t["hosts"] for t in alert["sigma"]["terms"]} == {
        "1 of SERVER*": ["srv01.example.test"], "1 of CLIENT*": ["cli01.example.test", "cli02.example.test"]}


def test_emit_modes_and_schemas():
    data = ndjson([BENIGN[0], *ATTACK, BENIGN[1]])
    every = run_cli(["--emit", "all"], data)
    out = every.stdout.splitlines()
    inp = data.splitlines()
    assert len(out) == len(inp) + 1
    assert out[0] == inp[0] and out[4] == inp[4]  # unmatched lines byte for byte
    assert out[5:] and alerts(b"\n".join(out[5:]))  # the alert fires when the flush at end of input runs
    for line, original in zip(out[1:4], inp[1:4]):
        enriched = json.loads(line)
        jsonschema.validate(enriched, EVENT_SCHEMA)
        assert {k: v for k, v in enriched.items() if k != "sigma"} == json.loads(original)
    for alert in alerts(every.stdout):
        jsonschema.validate(alert, ALERT_SCHEMA)

    matches = records(run_cli(["--emit", "matches"], data).stdout)
    assert [("sigma" in r, r.get("event", {}).get("kind")) for r in matches] == [
        (True, None), (True, None), (True, None), (True, "alert")]
    only = records(run_cli(["--emit", "alerts"], data).stdout)
    assert len(only) == 1 and only[0]["event"]["kind"] == "alert"
    assert only[0]["event"]["id"] == alerts(every.stdout)[0]["event"]["id"]  # deterministic id


@pytest.mark.parametrize("lead", [b"\xef\xbb\xbf", b"  "])
def test_a_matched_event_with_its_own_sigma_after_a_byte_order_mark_or_blanks_is_enriched(lead):
    """Cutting the event's own ``sigma`` out read the bytes before its brace as a key: a traceback
    that ended the stream (exit 1, every later line lost)."""
    own = {**ATTACK[0], "sigma": {"from": "elsewhere"}}
    data = ndjson(BENIGN[:1]) + lead + ndjson([own]) + ndjson(BENIGN[1:])
    result = run_cli(["--emit", "all"], data)
    assert result.returncode == 0, result.stderr
    out, inp = result.stdout.splitlines(), data.splitlines()
    assert len(out) == 3 and out[0] == inp[0] and out[2] == inp[2]
    assert out[1].startswith(lead)
    enriched = json.loads(out[1][len(lead):])
    jsonschema.validate(enriched, EVENT_SCHEMA)
    assert {k: v for k, v in enriched.items() if k != "sigma"} == ATTACK[0]
    assert enriched["sigma"]["terms"] == ["1 of SERVER*"]


def test_an_input_event_that_calls_itself_an_alert_is_enriched_as_its_schema_says():
    """The README says an input line may hold ``event.kind: alert`` and is passed on as it is;
    the enriched-event schema said no enriched event ever did, and refused the filter's output."""
    forged = {**ATTACK[0], "event": {"kind": "alert"}}
    result = run_cli(["--emit", "matches", "--quiet"], ndjson([forged]))
    assert result.returncode == 0, result.stderr
    (enriched,) = records(result.stdout)
    assert {k: v for k, v in enriched.items() if k != "sigma"} == forged
    jsonschema.validate(enriched, EVENT_SCHEMA)


def test_an_empty_object_after_a_byte_order_mark_or_blanks_is_enriched_as_json(tmp_path):
    """The comma before the spliced ``sigma`` was decided from the line's second byte on, not the
    object's: `` {}`` came out as `` {,"sigma":...}``, which is no JSON."""
    rule = tmp_path / "absent.yml"
    rule.write_text("title: absent\nid: absent\ndetection:\n  sel: {Foo: null}\n  condition: sel\n")
    result = run_cli(["--rule", str(rule), "--emit", "matches", "--quiet"], b' {}\n\xef\xbb\xbf{}\n{ }\n')
    assert result.returncode == 0, result.stderr
    enriched = [line for line in result.stdout.splitlines() if b'"alert"' not in line]
    assert [line[:6] for line in enriched] == [b' {"sig', b'\xef\xbb\xbf{"s', b'{ "sig']
    for line in enriched:
        assert json.loads(line.lstrip(b"\xef\xbb\xbf ")) == {"sigma": {"rule": {"id": "absent", "title": "absent"},
                                                                       "selections": ["sel"], "terms": ["sel"]}}


def test_event_join_needs_both_sides_in_one_event():
    data = ndjson(ATTACK)
    assert alerts(run_cli(["--join", "window"], data).stdout)
    assert not alerts(run_cli(["--join", "event"], data).stdout)
    both = ndjson([flat_event(t, h, "both") for t, h in ((0, "a"), (5, "b"), (9, "c"))])
    assert len(alerts(run_cli(["--join", "event"], both).stdout)) == 1


def test_relaxed_two_host_rule_via_rule_option(tmp_path):
    rule = open(os.path.join(REPO, "filter", "pipeshell_filter", "rules", "pipeshell_named_pipes.yml")).read()
    relaxed = tmp_path / "two-hosts.yml"
    relaxed.write_text(rule.replace("count(Computer) > 2", "count(Computer) > 1"))
    data = ndjson(ATTACK[:2])
    assert not alerts(run_cli([], data).stdout)
    assert not alerts(run_cli(["--rule", str(relaxed)], data).stdout)  # --rule defaults to strict event join
    found = alerts(run_cli(["--rule", str(relaxed), "--join", "window"], data).stdout)
    assert len(found) == 1 and found[0]["related"]["hosts"] == ["cli01", "srv01"]


BAD_LINES = [
    b"this is not json",
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"EventID": 4104, "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream \xff\xfe bad utf-8"}',
    b"",
    b"   ",
    b"[" * 5000 + b"]" * 5000,
    b'{"a": ' * 3000 + b"1" + b"}" * 3000,
    b'{"EventID": 4104, "Computer": "x", "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream", '
    b'"@timestamp": "not a time"}',
    b'{"EventID": [4104], "Computer": {"deep": ["x"]}, "ScriptBlockText": 12}',
    b'{"EventID": null}',
    b'{"truncated": ',
    b"\x00\x01\x02",
]


def test_bad_input_never_stops_the_stream_and_nothing_is_lost():
    big = b'{"EventID": 4104, "ScriptBlockText": "' + b"A" * (3 << 20) + b'"}'
    lines = [*ndjson(ATTACK[:1]).splitlines(), *BAD_LINES, big, *ndjson(ATTACK[1:]).splitlines()]
    data = b"\n".join(lines) + b"\n"
    result = run_cli(["--emit", "all", "--max-line-bytes", str(1 << 20)], data)
    assert result.returncode == 0
    assert b"Traceback" not in result.stderr
    out = result.stdout.split(b"\n")
    assert out.pop() == b""  # every output line ends with a newline
    # Every input line is still there, in order; bad lines byte for byte.
    body = [line for line in out if b'"kind":"alert"' not in line]
    assert len(body) == len(lines)
    for original, passed in zip(lines[1:-2], body[1:-2]):
        enriched = passed.startswith(original[:-1] + b',"sigma":{')  # matched, so enriched in place
        assert passed == original or enriched
    assert len(out) - len(body) == 1  # the alert
    stderr = result.stderr.decode()
    for expected in ("line 2: not valid JSON", "line 3: JSON list, not an object", "invalid UTF-8",
                     "empty line", "nested too deeply", "no parsable time", "too long"):
        assert expected in stderr, expected
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith("pipeshell-filter: ") and "skipped:" in summary


def test_content_of_a_line_that_cannot_match_is_checked_only_when_parsed():
    # The prefilter checks the shape of a line it skips, not its JSON or UTF-8: the line is
    # passed on byte for byte either way, and --no-prefilter diagnoses it.
    broken = b'{"EventID": 1, "Image": "caf\xc3 \xff\xfe"}\n{"EventID": 1,, "x": 2}\n'
    quiet = run_cli(["--emit", "all"], broken)
    checked = run_cli(["--emit", "all", "--no-prefilter"], broken)
    assert quiet.stdout == checked.stdout == broken
    assert b"invalid UTF-8" not in quiet.stderr and b"not valid JSON" not in quiet.stderr
    assert b"line 1: invalid UTF-8" in checked.stderr and b"line 2: not valid JSON" in checked.stderr


def test_diagnostics_are_rate_limited():
    data = b"garbage\n" * 5000
    result = run_cli(["--emit", "alerts"], data)
    assert result.returncode == 0 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) < 30
    assert "5000 invalid JSON" in lines[-1]


def test_final_line_without_newline_and_crlf():
    data = ndjson(ATTACK).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    result = run_cli(["--emit", "all"], data)
    assert len(alerts(result.stdout)) == 1
    assert result.stdout.count(b"\n") == 4


@pytest.mark.parametrize("args, message", [
    (["--emit", "everything"], "--emit"),
    (["--lateness", "-1"], "--lateness"),
    # float() reads Python's 1_0 as 10 and other scripts' digits: no number of seconds the README writes
    (["--lateness", "1_0"], "'1_0' is not a number of seconds"),
    (["--max-skew", "\u0661"], "is not a number of seconds"),
    (["--idle", "abc"], "'abc' is not a number of seconds"),
    (["--no-such-option"], "--no-such-option"),
    (["--rule", "/nonexistent/rule.yml"], "/nonexistent/rule.yml"),
    (["--input", "/nonexistent/events.ndjson"], "/nonexistent/events.ndjson"),
    (["--profile", "nosuchshape"], "nosuchshape"),
    (["--partitions", "0"], "--partitions"),  # the fleet's options, checked without --nats too
    (["--partition", "-1"], "--partition"),
    (["--state-interval", "-5"], "--state-interval"),
    # every agent was silent between any two of its records: the fleet's time went on without each, and
    # stderr said so twice a record
    (["--stage", "correlate", "--agent-idle", "0"], "--agent-idle must be more than 0 seconds"),
    (["explain", "--events", "-", "--stage", "correlate", "--agent-idle", "0"], "--agent-idle must be more than 0"),
    (["--max-line-bytes", "99999999999999999999"], "--max-line-bytes"),  # was a traceback with two --input
    (["--max-record-bytes", str(1 << 63)], "--max-record-bytes"),
    (["--workers", "100000"], "--workers"),
    # a tag no rule has, alone: its warning came before the error, two lines
    (["--tag", "attack.nosuch"], "--tag attack.nosuch leaves out every rule"),
    (["explain", "--tag", "attack.nosuch"], "--tag attack.nosuch leaves out every rule"),
    # and a warning of the rule load's before a usage error of an option that needs no rule
    (["--exclude-tag", "nosuch", "--time-field", ""], "--time-field ''"),
    (["--exclude-rule", "nosuch", "--input", "/nonexistent/x.ndjson"], "/nonexistent/x.ndjson"),
    (["--exclude-rule", "nosuch", "--idle", "5", "--input", SAMPLE], "--idle needs live input"),
    (["explain", "--exclude-tag", "nosuch", "--event", SAMPLE, "--field-map", "/nonexistent/m.yml"], "m.yml"),
    (["--exclude-tag", "nosuch", "--nats", "nats://127.0.0.1:9"], "--nats needs --stage match"),
    (["--line-field", ""], "--line-field"),  # an unset variable in a unit file: was read as the key ""
    # a key the JSON decoder that finds it takes no name like: a traceback, exit 1, in the filter and in explain
    (["--line-field", "a\nb"], "--line-field must not hold"),
    (["--line-field", 'log"'], "--line-field must not hold"),
    (["explain", "--events", "-", "--line-field", "a\\b"], "--line-field must not hold"),
    # a subject with an empty token or a control character: the server refused the stream, exit 1 (retried
    # by a supervisor for ever), the message over two lines
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "fleet..b"], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "fleet\nb"], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "fleet\rb"], "--nats-prefix"),
    # names the server refuses: a stream name over 255 characters (exit 1, retried for ever), a subject over the
    # server's control line (30 s of retries, "did not answer"), a subject of the server's own ($JS, $SYS: exit 1)
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "a" * 250], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "a" * 5000], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "\u0390" * 80], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "$JS.API"], "--nats-prefix"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--nats-prefix", "$SYS"], "--nats-prefix"),
])
def test_bad_options_exit_2_with_one_line(args, message):
    result = run_cli(args)
    assert result.returncode == 2
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--stage", "correlate", "--partition", "1"], "--partition needs --stage correlate --nats"),
    (["--stage", "match", "--partitions", "2"], "--partitions needs --stage match --nats"),
    (["--partition", "0"], "--partition needs"),
    (["--stage", "match", "--nats", "nats://127.0.0.1:9", "--partition", "1"], "--partition needs"),
    (["--stage", "correlate", "--nats-prefix", "fleetb"], "--nats-prefix needs --nats"),
    (["--state-interval", "1"], "--state-interval needs --state"),
    (["--state-reset"], "--state-reset needs --state"),
    (["--on-stop", "keep"], "--on-stop needs --state"),
    (["--on-stop", "flush"], "--on-stop needs --state"),  # the default, but given: it does nothing either
    (["--heartbeat", "5"], "--heartbeat needs --stage match"),
    (["--stage", "correlate", "--heartbeat", "0"], "--heartbeat needs --stage match"),
    (["--agent", "a1"], "--agent needs --stage match and a --heartbeat other than 0"),
    (["--stage", "match", "--heartbeat", "0", "--agent", "a1"], "--agent needs --stage match and a --heartbeat"),
    (["--agents", "2"], "--agents needs --stage correlate"),
    (["--stage", "match", "--agent-idle", "30"], "--agent-idle needs --stage correlate"),
    (["--stage", "match", "--early-alerts"], "--early-alerts needs --stage all or --stage correlate"),
    (["--max-record-bytes", "4096"], "--max-record-bytes needs --non-json wrap, or --fluentbit-time with --emit"),
    (["--fluentbit-time", "--max-record-bytes", "4096"], "--max-record-bytes needs --non-json wrap, or"),
    (["--stage", "correlate", "--non-json", "pass", "--max-record-bytes", "8192"], "--max-record-bytes needs"),
    (["--strict"], "--strict needs a --rule directory"),
    (["--strict", "--rule", os.path.join(REPO, "filter", "pipeshell_filter", "rules", "pipeshell_named_pipes.yml")],
     "--strict needs a --rule directory"),
    (["explain", "--strict"], "--strict needs a --rule directory"),
    (["test", "--strict", "--rule", os.path.join(REPO, "filter", "pipeshell_filter", "rules",
                                                 "pipeshell_named_pipes.yml")], "--strict needs a --rule directory"),
])
def test_an_option_that_would_do_nothing_is_a_usage_error(args, message):
    """Given where it does nothing, an option ran in silence, exit 0: a correlator's --partition 1
    without --nats correlated every record it read, --state-interval without --state saved nothing,
    --agents on an agent waited for none, --max-record-bytes without wrap cut nothing.  Nothing is read."""
    result = run_cli(args, ndjson(ATTACK))
    assert result.returncode == 2 and result.stdout == b""
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and message in err and "would do nothing" in err, err


@pytest.mark.parametrize("args", [
    ["--stage", "match", "--heartbeat", "5", "--agent", "a1", "--emit", "all"],
    ["--stage", "correlate", "--agents", "1", "--agent-idle", "60"],
    ["--non-json", "wrap", "--max-record-bytes", "4096"],
    ["--fluentbit-time", "--emit", "all", "--max-record-bytes", "4096"],  # its pipeline_error records are cut to it
    ["--fluentbit-time", "--emit", "matches", "--max-record-bytes", "4096"],  # an event Fluent Bit cannot take too
    ["--stage", "match", "--max-record-bytes", "4096"],  # lines of its own record types, wrapped in any mode
    ["--state", "STATE", "--state-interval", "1", "--state-reset", "--on-stop", "keep"],
    ["--stage", "correlate", "--early-alerts"],
    ["--early-alerts", "--idle", "5"],  # a pipe: live
    ["--idle", "5", "--input", "/dev/stdin"],  # the pipe named
])
def test_an_option_given_where_it_acts_is_accepted(tmp_path, args):
    args = [str(tmp_path / "state.json") if arg == "STATE" else arg for arg in args]
    result = run_cli(args, ndjson(ATTACK))
    assert result.returncode == 0, result.stderr
    assert "--stage" in args or result.stdout.count(b'"kind":"alert"') == 1  # [time, {alert}] too




@pytest.mark.parametrize("args", [[], ["--input", SAMPLE], ["--input", "-"], ["--input", SAMPLE, "--input", "-"],
                                  ["run", "--"]])
def test_idle_where_no_input_is_live_is_a_usage_error(args):
    """``--idle`` moves the watermark by the wall clock while live input waits; a regular file (``<
    FILE`` too) never waits, and several inputs are merged as files: it ran, exit 0, doing nothing.
    In ``run`` without a collector the filter reads the unit's stdin, here the file."""
    with open(SAMPLE, "rb") as stdin:
        result = subprocess.run(COMMAND + args + ["--idle", "5"], stdin=stdin, capture_output=True, timeout=60)
    assert result.returncode == 2 and result.stdout == b""
    err = result.stderr.decode().splitlines()
    said = ("pipeshell-filter: error: --idle needs live input (a pipe or terminal as the only input, or --stage "
            "correlate --nats): here it would do nothing")
    if args[:1] == ["run"]:  # the filter's line behind its role, then the unit's
        assert err[0] == "filter: " + said and err[1].endswith("exited with status 2; stopping the chain"), err
    else:
        assert err == [said]


NOT_EVENTS = "--stage all or --stage match (a correlate stage reads Detection records, not events)"


def _detection_records() -> bytes:
    """What a match stage writes of the sample: the Detection and heartbeat records of one alert."""
    matched = run_cli(["--stage", "match", "--input", SAMPLE])
    assert matched.returncode == 0 and matched.stdout.count(b'"sigma.detection"') == 3, matched.stderr
    return matched.stdout


@pytest.mark.parametrize("given, needs", [
    (["--emit", "all"], "--stage all or --stage match (a correlate stage writes alerts only)"),
    (["--emit", "alerts"], "--stage all or --stage match (a correlate stage writes alerts only)"),  # given
    (["--profile", "flat"], NOT_EVENTS), (["--profile", "auto"], NOT_EVENTS), (["--field-map", "FIELDMAP"], NOT_EVENTS),
    (["--time-field", "ts"], NOT_EVENTS), (["--logsource-unknown", "skip"], NOT_EVENTS),
    (["--logsource", "category=proxy"], NOT_EVENTS),
    (["--no-prefilter"], NOT_EVENTS), (["--prefilter-engine", "python"], NOT_EVENTS), (["--workers", "2"], NOT_EVENTS),
    (["--workers", "0"], NOT_EVENTS),
    (["--max-record-bytes", "4096", "--fluentbit-time"],
     "--non-json wrap (a correlate stage's alerts are never cut with --fluentbit-time alone)"),
])
def test_an_option_for_reading_events_is_a_usage_error_in_the_correlate_stage(tmp_path, given, needs):
    """A correlate stage reads a match stage's Detection records, whose fields that stage resolved and
    judged, and writes alerts only: the options about events (their shape, their time, their log
    source, the prefilter and the workers that match them), --emit, and --max-record-bytes with
    --fluentbit-time alone (which caps pipeline_error records, of which it writes none) ran, exit 0,
    the same alert.  Where they act, they are taken."""
    (tmp_path / "map.yml").write_text("name: mine\nfields: {}\n")
    given = [str(tmp_path / "map.yml") if arg == "FIELDMAP" else arg for arg in given]
    records = _detection_records()
    result = run_cli(["--stage", "correlate", *given], records)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.decode() == f"pipeshell-filter: error: {given[0]} needs {needs}: here it would do nothing\n"
    if given[0] == "--max-record-bytes":
        taken = run_cli(["--stage", "correlate", "--non-json", "wrap", *given], records)
    else:
        taken = run_cli(["--stage", "match", "--input", SAMPLE, *given])
    assert taken.returncode == 0, taken.stderr


def test_the_fluent_bit_modes_and_the_line_options_act_in_the_correlate_stage():
    """What a correlate stage's options do to its alerts and to the lines it reads: --fluentbit-time
    frames each alert as [time, {alert}] at the alert's own time, and makes text of what Fluent Bit
    cannot take (a lone surrogate in a host name); --non-json wrap does that too and keeps each alert
    under --max-record-bytes; --line-field reads the records a collector wrapped; --max-line-bytes
    skips longer records.  Each acts there, and is taken."""
    records = _detection_records().replace(b'.corp.example"', b'.corp.example\\ud800' + b"x" * 3000 + b'"')
    plain = run_cli(["--stage", "correlate"], records)
    assert plain.returncode == 0 and len(plain.stdout) > 4096, plain.stderr
    alert, = alerts(plain.stdout)
    assert alert["related"]["hosts"][2].startswith("srv01.corp.example\ud800x")  # as the records give it

    framed = run_cli(["--stage", "correlate", "--fluentbit-time"], records)
    assert framed.returncode == 0 and len(framed.stdout.splitlines()) == 1, framed.stderr
    when, alert = json.loads(framed.stdout)
    assert alert["@timestamp"] == "2026-11-02T09:05:18.250Z" and f"{when:.3f}" == "1793610318.250"
    assert alert["related"]["hosts"][2].startswith("srv01.corp.example\\ud800x")  # the escape as text

    wrapped = run_cli(["--stage", "correlate", "--non-json", "wrap", "--max-record-bytes", "4096"], records)
    assert wrapped.returncode == 0 and len(wrapped.stdout) < 4096, wrapped.stderr
    alert, = alerts(wrapped.stdout)
    assert alert["related"]["hosts"][2].startswith("srv01.corp.example\\ud800x")
    assert alert["sigma"]["aggregation"]["count"] == 3

    lines = records.splitlines()
    collected = b"".join(json.dumps({"log": line.decode()}).encode() + b"\n" for line in lines)
    unwrapped = run_cli(["--stage", "correlate", "--line-field", "log"], collected)
    assert unwrapped.returncode == 0 and unwrapped.stdout == plain.stdout, unwrapped.stderr
    short = run_cli(["--stage", "correlate", "--max-line-bytes", "2048"], records)
    assert short.returncode == 0 and not short.stdout and b"line too long to inspect; skipped" in short.stderr


@pytest.mark.parametrize("args", [["--input", "-", "--input", "-"], ["--input", "-", "--input", "/dev/stdin"],
                                  ["explain", "--events", "-", "--events", "-"], ["--input", SAMPLE, "--input", "-"],
                                  ["explain", "--events", SAMPLE, "--events", "-"]])
def test_standard_input_named_twice_is_read_once(args):
    """Read twice, a redirected file's events were counted twice (two alerts of one incident's windows
    cut in two), and two readers of a pipe split its lines between them.  So with the file it is
    redirected from named before it: ``-`` was read whatever came before it."""
    explain = args[0] == "explain"
    with open(SAMPLE, "rb") as stdin:
        twice = subprocess.run(COMMAND + args + ["--emit", "all"] * (not explain), stdin=stdin,
                               capture_output=True, timeout=120)
    with open(SAMPLE, "rb") as stdin:
        once = subprocess.run(COMMAND + args[:2 + explain] + ["--emit", "all"] * (not explain), stdin=stdin,
                              capture_output=True, timeout=120)
    assert twice.returncode == 0 and twice.stdout == once.stdout and twice.stderr == once.stderr, twice.stderr


@pytest.mark.parametrize("args", [[], ["--input", "-"], ["--input", "/dev/stdin"]])
def test_dev_null_as_input_is_finished_not_live(args):
    """``< /dev/null`` (a job given no input) is a character device, and was taken for live input as a
    terminal is: ``--idle 5`` was accepted there, doing nothing.  It ends at once, empty, as a file."""
    with open(os.devnull, "rb") as stdin:
        result = subprocess.run(COMMAND + args + ["--idle", "5"], stdin=stdin, capture_output=True, timeout=60)
        assert result.returncode == 2 and result.stdout == b""
        assert result.stderr.decode().startswith("pipeshell-filter: error: --idle needs live input"), result.stderr
        result = subprocess.run(COMMAND + args + ["--idle", "0"], stdin=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    assert result.stderr == b"pipeshell-filter: 1 rule; 0 lines; 0 matched; 0 alerts\n"


@pytest.mark.parametrize("args", [["--idle", "0"], ["--idle", "0", "--input", SAMPLE],
                                  ["run", "--collect", f"cat {SAMPLE}", "--", "--idle", "5"]])
def test_idle_is_taken_where_it_acts_and_idle_0_everywhere(args):
    """``--idle 0`` (never) is what a file gets anyway: taken, so that one command line (the
    benchmarks' ``--idle 0 < FILE``) serves a file and a pipe.  In ``run`` the collector's pipe is live."""
    with open(SAMPLE, "rb") as stdin:
        result = subprocess.run(COMMAND + args + ["--quiet"], stdin=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(alerts(result.stdout)) == 1


def test_the_options_that_act_only_with_another_still_show_their_defaults_in_help():
    text = " ".join(run_cli(["--help"]).stdout.decode().split())
    for default in ("snapshot this often (0: only on a signal and at the end). [default: 10.0]",
                    "[default: 60.0]", "[default: 1000000]", "[default: flush]"):
        assert default in text, default


@pytest.mark.parametrize("body, message", [
    ("title: x\ndetection:\n  sel:\n    Field|sparkle: 1\n  condition: sel\n", "'sparkle'"),
    ("title: x\ndetection:\n  sel:\n    a: 1\n  condition: sel and\n", "condition"),
    ("title: x\ndetection: [unbalanced\n", "not valid YAML"),
    ("title: x\ndetection:\n  sel:\n    a: 1\n  condition: other\n", "other"),
    ("title: x\ndetection:\n  sel:\n    a: 1\n  condition: sel | count(a) >> 2\n", "aggregation"),
    ("title: x\ndetection:\n  sel:\n    a: 1\n  condition: sel\n  timeframe: soon\n", "timeframe"),
    ("title: x\ndetection:\n  1:\n    a: 1\n  sel:\n    b: 1\n  condition: 1 of them\n", "selection name 1"),
    ("title: x\ndetection:\n  yes:\n    a: 1\n  condition: all of *\n", "selection name True"),
    ("title: x\ndetection:\n  ~:\n    a: 1\n  condition: all of *\n", "selection name None"),
    ("title: x\ndetection:\n  sel:\n    a|re: null\n  condition: sel\n", "null cannot be a value of |re"),
])
def test_bad_rules_exit_2_naming_the_file(tmp_path, body, message):
    path = tmp_path / "bad.yml"
    path.write_text(body)
    for args in (["--rule", str(path)], ["explain", "--rule", str(path)]):
        result = run_cli(args)
        assert result.returncode == 2
        err = result.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err and "Traceback" not in err


def test_explain_prints_the_compiled_plan():
    result = run_cli(["explain"])
    text = result.stdout.decode()
    assert result.returncode == 0
    for expected in ("term 0: 1 of SERVER*", "term 1: 1 of CLIENT*", "count(Computer) > 2", "join      window",
                     "[t - 300s, t]", "system.io.pipes.namedpipeserverstream", "CLIENT_spowershell_modern"):
        assert expected in text


def test_explain_shows_a_non_ascii_literal(tmp_path):
    """A rule whose prefilter literal is not ASCII (SigmaHQ's rules hold en dashes and accented words)
    made ``explain`` end in a UnicodeDecodeError traceback, exit 1: ``explain --rule`` on SigmaHQ's
    ``rules/`` printed nothing at all."""
    rule = tmp_path / "accent.yml"
    rule.write_text("title: x\nlogsource: {product: windows}\ndetection:\n  sel:\n"
                    "    CommandLine|contains: 'caf\u00e9 \u2013enc'\n  condition: sel\n", encoding="utf-8")
    result = run_cli(["explain", "--rule", str(rule)])
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert "caf\u00e9 \u2013enc" in result.stdout.decode("utf-8")


def test_help_names_what_profile_takes():
    """--help showed ``--profile <str>``, a type where the README's usage line has ``auto|NAME``."""
    for args in (["--help"], ["explain", "--help"]):
        text = run_cli(args).stdout.decode()
        assert "--profile auto|NAME" in text and "<str>" not in text, args


def test_closed_stdout_ends_quietly():
    data = ndjson([BENIGN[0]] * 20000)
    shell = subprocess.run(" ".join(COMMAND) + " --emit all | head -1", shell=True, input=data,
                           capture_output=True, timeout=60)
    assert shell.stdout.count(b"\n") == 1
    assert b"Traceback" not in shell.stderr and b"Error" not in shell.stderr
    # but it says so, in its summary line: a shipper stopped first lost what was still to be written, unsaid
    assert shell.stderr.decode().startswith("pipeshell-filter: 1 rule; ") and shell.stderr.decode().endswith(
        "; output closed by its reader before the end: what was still to be written is lost\n"), shell.stderr
    quiet = subprocess.run(" ".join(COMMAND) + " --quiet --emit all | head -1", shell=True, input=data,
                           capture_output=True, timeout=60)
    assert quiet.stdout.count(b"\n") == 1 and quiet.stderr == b""


def _read_line(proc, timeout):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


def test_alert_is_flushed_while_input_stays_open():
    """The alert must not sit in a buffer while the filter waits for more input."""
    proc = subprocess.Popen(COMMAND + ["--lateness", "0", "--idle", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        later = flat_event(400, "ws04", "server")  # moves the watermark past the attack
        proc.stdin.write(ndjson(ATTACK + [later]))
        proc.stdin.flush()
        line = _read_line(proc, 20)
        assert line is not None and json.loads(line)["event"]["kind"] == "alert"
    finally:
        proc.kill()
        proc.wait()


def test_idle_input_lets_pending_alerts_out():
    proc = subprocess.Popen(COMMAND + ["--lateness", "4", "--idle", "0.3"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(ndjson(ATTACK))
        proc.stdin.flush()
        started = time.monotonic()
        line = _read_line(proc, 60)
        assert line is not None and json.loads(line)["event"]["kind"] == "alert"
        assert time.monotonic() - started >= 3.5  # lateness is honoured in wall time before giving up on stragglers
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_flushes_pending_alerts_and_exits_0():
    proc = subprocess.Popen(COMMAND + ["--emit", "all", "--lateness", "600", "--idle", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(ndjson(ATTACK))
    proc.stdin.flush()
    echoed = b""
    deadline = time.monotonic() + 30
    while echoed.count(b"\n") < len(ATTACK) and time.monotonic() < deadline:  # read, enriched and waiting
        if select.select([proc.stdout], [], [], 1)[0]:
            echoed += os.read(proc.stdout.fileno(), 1 << 16)
    assert echoed.count(b'"sigma":') == len(ATTACK)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert len(alerts(echoed + out)) == 1
    assert b"Traceback" not in err


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_sigterm_mid_stream_leaves_whole_records_and_loses_nothing_read(delay):
    """SIGTERM while the filter writes into a full pipe (a slow consumer): no record is cut
    in two, and the output is the input read so far.  The line the feeder was still writing
    ends the input read so far, as at end of input: it goes on as read, diagnosed."""
    events = [flat_event(t, f"host{t % 50}", "benign", record_id=t) for t in range(20000)]
    lines = ndjson(events).splitlines(keepends=True)
    proc = subprocess.Popen(COMMAND + ["--emit", "all", "--idle", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def feed():
        try:
            for at in range(0, len(lines), 500):
                proc.stdin.write(b"".join(lines[at:at + 500]))
                proc.stdin.flush()
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = b""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:  # a slow reader: the filter's writes block
        out += os.read(proc.stdout.fileno(), 4096)
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    while True:
        more = os.read(proc.stdout.fileno(), 1 << 16)
        if not more:
            break
        out += more
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and b"Traceback" not in err, err
    feeder.join()  # the filter stopped reading and exited: the feeder's pipe broke
    assert out.endswith(b"\n")
    produced = out.splitlines(keepends=True)
    assert 0 < len(produced) <= len(lines)
    assert produced[:-1] == lines[:len(produced) - 1]  # whole lines, in order, none skipped
    last, expected = produced[-1], lines[len(produced) - 1]
    assert last == expected or (expected.startswith(last[:-1]) and b"not valid JSON" in err)


def test_out_of_order_file_within_lateness_gives_the_sorted_result(tmp_path):
    events = [flat_event(t, h, k, record_id=i) for i, (t, h, k) in enumerate(
        [(0, "srv01", "server"), (50, "cli01", "client"), (20, "cli02", "client"), (400, "a", "server"),
         (380, "b", "client"), (390, "c", "client"), (900, "x", "benign")])]
    shuffled = run_cli(["--lateness", "60"], ndjson(events))
    ordered = run_cli(["--lateness", "60"], ndjson(sorted(events, key=lambda e: e["@timestamp"])))
    ids = [a["event"]["id"] for a in alerts(shuffled.stdout)]
    assert len(ids) == 2 and ids == [a["event"]["id"] for a in alerts(ordered.stdout)]


def test_an_event_exactly_lateness_behind_is_on_time_whatever_the_fraction(tmp_path):
    # 1.001 as a float times 1e9 is 1000999999.9999999: cut to an int, the watermark stood a nanosecond past
    # newest - 1.001 s, and the event exactly at it, which the README calls on time, was counted late.
    rule = tmp_path / "by-host.yml"
    rule.write_text("title: two pipe events on one host\nid: two-by-host\ndetection:\n  sel:\n"
                    "    ScriptBlockText|contains: NamedPipe\n  condition: sel | count() by Computer >= 2\n"
                    "  timeframe: 10s\n")
    events = [dict(flat_event(0, host, "server", record_id=i), **{"@timestamp": stamp})
              for i, (host, stamp) in enumerate([("a", "2021-06-03T13:00:00Z"), ("b", "2021-06-03T13:00:00Z"),
                                                 ("a", "2021-06-03T13:00:02.001Z"), ("b", "2021-06-03T13:00:02.001Z"),
                                                 ("c", "2021-06-03T13:00:01Z")])]
    for lateness in ("1.001", "1.0010"):
        result = run_cli_here(["--rule", str(rule), "--lateness", lateness, "--emit", "alerts"], ndjson(events))
        summary = result.stderr.decode().strip().splitlines()[-1]
        assert result.returncode == 0 and len(alerts(result.stdout)) == 2, result.stderr
        assert "late" not in summary, (lateness, summary)


@pytest.mark.parametrize("burst", [True, False])
def test_lateness_zero_alert_comes_out_before_the_filter_blocks(burst):
    """No newer event, no idle timer: the alert at the newest event time still comes out
    as soon as the input pauses, whether the events arrive in one read or one by one."""
    proc = subprocess.Popen(COMMAND + ["--lateness", "0", "--idle", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if burst:
            proc.stdin.write(ndjson(ATTACK))
            proc.stdin.flush()
        else:
            for event in ATTACK:
                proc.stdin.write(ndjson([event]))
                proc.stdin.flush()
                time.sleep(0.2)
        line = _read_line(proc, 20)
        assert line is not None, "alert held back while stdin stays open"
        alert = json.loads(line)
        assert alert["event"]["kind"] == "alert" and alert["sigma"]["aggregation"]["count"] == 3
    finally:
        proc.kill()
        proc.wait()


def test_explain_event_shows_profile_fields_and_verdicts(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(evtx_event(30, "cli01", "client", 800), indent=2))  # pretty-printed is fine
    result = run_cli(["explain", "--event", str(path)])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for expected in ("profile   evtx (built-in", "\"#text\":\"800\"", "<- Event.System.EventID",
                     "<- Event.EventData", "CLIENT_powershell_native     MATCH", "SERVER_powershell_native     no",
                     "term 1 met: 1 of CLIENT*", "term 0 not met", "the line is a candidate"):
        assert expected in text, expected
    benign = tmp_path / "benign.ndjson"
    benign.write_bytes(ndjson([flat_event(0, "ws04", "benign"), {"not": "read"}]))
    text = run_cli(["explain", "--event", str(benign)]).stdout.decode()
    assert "profile   flat" in text and "MATCH" not in text and "the filter skips parsing it" in text


def test_explain_event_shows_both_fields_a_fieldref_compares(tmp_path):
    """``User|fieldref: TargetUser`` compares two fields of the event: its verdict hangs on both values,
    but the fields explain --event listed were those of plain field matchers only, neither of these."""
    rule = tmp_path / "same_user.yml"
    rule.write_text("title: same user\nlogsource: {product: windows}\n"
                    "detection: {sel: {EventID: 4624, User|fieldref: TargetUser}, condition: sel}\n")
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"EventID": 4624, "User": "amy", "TargetUser": "bob"}))
    result = run_cli(["explain", "--rule", str(rule), "--event", str(path)])
    assert result.returncode == 0, result.stderr
    fields = result.stdout.decode().split("fields:\n")[1].split("selections:")[0].splitlines()
    assert [line.split()[0] for line in fields] == ["EventID", "User", "TargetUser"]
    assert '  User               "amy"   <- User' in fields and '  TargetUser         "bob"   <- TargetUser' in fields


@pytest.mark.parametrize("unreadable", ['"garbage"', "null", "1e400", '{"x": 1}', '""'])
def test_explain_event_names_the_path_its_time_was_read_from(tmp_path, unreadable):
    """The filter takes an event's time from the first of its profile's time paths whose value is a
    time; explain --event named the first path present, a value that is no time, as its source."""
    path = tmp_path / "one.json"
    path.write_text('{"@timestamp": %s, "EventTime": "2026-01-01T00:00:00Z"}' % unreadable)
    result = run_cli(["explain", "--event", str(path)])
    assert result.returncode == 0, result.stderr
    [said] = [line for line in result.stdout.decode().splitlines() if line.startswith("time ")]
    assert said == 'time      2026-01-01T00:00:00Z (from EventTime = "2026-01-01T00:00:00Z")'


@pytest.mark.parametrize("options, event", [
    (["--time-field", "event.created"], {"event.created": "2026-01-01T00:00:00Z", "EventID": 1}),
    ([], {"TimeCreated.SystemTime": "2026-01-01T00:00:00Z", "EventID": 1})])
def test_explain_event_names_a_time_read_from_a_flattened_key(tmp_path, options, event):
    """A time path's keys joined into one (flattened ECS): the filter reads the time there, and explain
    --event, which looked for the path nested only, ended in a traceback naming its source."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps(event))
    result = run_cli(["explain", *options, "--event", str(path)])
    assert result.returncode == 0, result.stderr
    [said] = [line for line in result.stdout.decode().splitlines() if line.startswith("time ")]
    assert said.startswith("time      2026-01-01T00:00:00Z (from ") and said.endswith(' = "2026-01-01T00:00:00Z")')


def test_explain_event_reads_a_wrapped_line_as_the_filter_does(tmp_path):
    """A collector's wrapper (Fluent Bit's tail without a parser: ``{"log": "<line>"}``; Vector's file
    source: ``message``) is read by the filter with --line-field, which explain --event refused ("needs
    --events"): the one tool that says why an event did not match showed a flat event that no rule meets,
    and did not say that its line was inside."""
    event = evtx_event(30, "cli01", "client", 800)
    wrapped = tmp_path / "wrapped.ndjson"
    wrapped.write_text(json.dumps({"date": 1622725230.5, "log": json.dumps(event)}) + "\n")
    plain = run_cli(["explain", "--event", str(wrapped)])
    assert plain.returncode == 0, plain.stderr
    assert "note      the text in log is an event (evtx): the filter reads it with --line-field log" \
        in plain.stdout.decode()
    assert b"MATCH" not in plain.stdout
    unwrapped = run_cli(["explain", "--line-field", "log", "--event", str(wrapped)])
    assert unwrapped.returncode == 0, unwrapped.stderr
    text = unwrapped.stdout.decode()
    assert "profile   evtx (built-in" in text and "CLIENT_powershell_native     MATCH" in text and "note" not in text
    assert "the line is a candidate" in text
    direct = tmp_path / "direct.json"
    direct.write_text(json.dumps(event))
    assert run_cli(["explain", "--event", str(direct)]).stdout == unwrapped.stdout.replace(
        str(wrapped).encode(), str(direct).encode())
    not_json = tmp_path / "text.json"
    not_json.write_text(json.dumps({"log": "plain text"}))
    refused = run_cli(["explain", "--line-field", "log", "--event", str(not_json)])
    assert refused.returncode == 2 and refused.stderr.decode() == (
        f"pipeshell-filter: error: --event {not_json}: the text in log is not a JSON object, nor a line holding "
        "an event's XML (Sysmon for Linux's syslog file)\n")


@pytest.mark.parametrize("form", ["frame", "tagged frame", "byte order mark"])
def test_explain_event_reads_a_wrapped_frame_or_marked_line_as_the_filter_does(tmp_path, form):
    """The line a collector wrapped may be a Fluent Bit frame (an archive tailed) or start with a byte order
    mark: the filter reads its record and matches it, yet explain --event --line-field refused it (exit 2,
    "the text in log is not a JSON object")."""
    event = json.dumps(evtx_event(30, "cli01", "client", 800))
    line = {"frame": f"[1796431136.5, {event}]", "tagged frame": f"win: [1796431136.5, {event}]",
            "byte order mark": "\ufeff" + event}[form]
    wrapped = tmp_path / "wrapped.ndjson"
    wrapped.write_text(json.dumps({"log": line}) + "\n")
    filtered = run_cli(["--line-field", "log", "--input", str(wrapped)])
    assert filtered.returncode == 0 and b"; 1 matched;" in filtered.stderr, filtered.stderr
    explained = run_cli(["explain", "--line-field", "log", "--event", str(wrapped)])
    assert explained.returncode == 0, explained.stderr
    assert "profile   evtx (built-in" in explained.stdout.decode()
    assert "CLIENT_powershell_native     MATCH" in explained.stdout.decode()


@pytest.mark.parametrize("surrogate", [b"\\ud800", b"\xed\xa0\x80"])
def test_explain_shows_a_lone_surrogate_as_its_escape(tmp_path, surrogate):
    """A host name holding a lone surrogate (escaped, or its raw bytes, both of which the filter
    reads and alerts on) made explain --event and --events end in a UnicodeEncodeError traceback,
    exit 1, with no report at all."""
    event = evtx_event(30, "cli01", "client", 800)
    line = json.dumps(event).encode().replace(b"cli01", b"cli01" + surrogate)
    one = tmp_path / "one.json"
    one.write_bytes(line + b"\n")
    stream = tmp_path / "stream.ndjson"
    stream.write_bytes(ndjson(ATTACK[:1]) + line + b"\n" + ndjson(ATTACK[2:]))
    for args in (["explain", "--event", str(one)], ["explain", "--events", str(stream)]):
        result = run_cli(args)
        assert result.returncode == 0 and result.stderr == b"", (args, result.stderr)
        assert b"cli01\\ud800" in result.stdout, args
    assert b"fired at" in result.stdout


@pytest.mark.parametrize("event", [
    {"EventID": 4104, "Channel": "C" * 1_000_000, "ScriptBlockText": "x"},
    {"EventID": "4" * 1_000_000, "Channel": "Microsoft-Windows-PowerShell/Operational"},
    {"C" * 1_000_000: '{"Event": {"System": {"EventID": 1}}}'},
], ids=["channel", "event_id", "wrapper_key"])
def test_explain_event_quotes_a_long_value_of_the_event_cut_short(tmp_path, event):
    """explain --event quotes a field's value cut to 70 characters, but wrote an event's channel, its
    EventID and the key of a wrapped event whole: a 1 MB channel was three lines of 1 MB (the logsource
    line, then each rule's verdict quoting it)."""
    path = tmp_path / "long.json"
    path.write_text(json.dumps(event))
    result = run_cli_here(["explain", "--event", str(path)])
    assert result.returncode == 0 and result.stderr == b""
    assert len(result.stdout) < 5000 and b"C" * 100 not in result.stdout and b"4" * 100 not in result.stdout
    assert b"CCC..." in result.stdout or b"444..." in result.stdout


@pytest.mark.parametrize("content", [b"", b"not json\n", b"[1, 2]\n"])
def test_explain_event_rejects_a_file_without_an_object(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = run_cli(["explain", "--event", str(path)])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and b"Traceback" not in result.stderr


def test_explain_event_reads_the_event_as_the_filter_does(tmp_path):
    """A byte order mark the filter ignores made explain refuse the event; a deep object was called
    no object; a value's / was shown as \\/; and a rule whose logsource does not apply still ended
    in 'an alert, at once', where the filter never tries it."""
    event = flat_event(30, "cli01", "client", 4104)
    event["Payload"] = "cmd /c whoami"
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(event).encode() + b"\n")
    result = run_cli(["explain", "--event", str(path)])
    assert result.returncode == 0, result.stderr
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n")
    result = run_cli(["explain", "--event", str(deep)])
    assert result.returncode == 2 and result.stderr.decode().splitlines() == [
        f"pipeshell-filter: error: --event {deep}: neither the file nor its first line is a JSON object "
        "(JSON nested too deeply), nor a line holding an event's XML (Sysmon for Linux's syslog file)"]
    rule = tmp_path / "security.yml"
    rule.write_text("title: whoami in security\nlogsource: {product: windows, service: security}\n"
                    "detection:\n  sel: {Payload|contains: /c whoami}\n  condition: sel\n")
    sysmon = tmp_path / "sysmon.json"
    sysmon.write_text(json.dumps({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                  "Computer": "ws01", "Payload": "cmd /c whoami"}))
    text = run_cli(["explain", "--rule", str(rule), "--event", str(sysmon)]).stdout.decode()
    assert "logsource does not apply" in text and "sel                          MATCH" in text
    assert "outcome   none: the rule is not tried on this event" in text and "at once" not in text
    assert '"cmd /c whoami"' in text and "\\/" not in text
    assert run_cli(["--rule", str(rule), "--input", str(sysmon), "--emit", "matches"]).stdout == b""


def test_explain_event_judges_a_lines_own_bytes_for_the_prefilter(tmp_path):
    """A one-line event was parsed, written again and the prefilter's verdict given on that text: of a key
    given twice only the last value was left (NDJSON lines are read as JSON readers read them), so a line
    whose first value held a needle was said to be skipped, though the filter scans its bytes and parses it."""
    line = ('{"EventID":4104,"Computer":"a","Channel":"Microsoft-Windows-PowerShell/Operational",'
            '"@timestamp":"2021-06-03T13:00:12Z","ScriptBlockText":"[System.IO.Pipes.NamedPipeServerStream]",'
            '"ScriptBlockText":"benign"}')
    path = tmp_path / "twice.json"
    path.write_text(line + "\n")
    text = run_cli(["explain", "--event", str(path)]).stdout.decode()
    assert 'ScriptBlockText    "benign"' in text and "MATCH" not in text
    assert "prefilter the line is a candidate (parsed)" in text, text
    result = run_cli(["--input", str(path), "--emit", "matches"])
    assert result.returncode == 0 and result.stdout == b"", result.stderr


def test_explain_event_gives_the_prefilter_verdict_of_the_whole_rule_set(tmp_path):
    """The prefilter scans a line for the needles of every rule, and is off when one rule has none (a
    comparison of numbers): explain --event judged each rule's needles alone, and said "it would skip
    parsing" of a line the filter parses for another rule.  Whether the line is parsed is the rule set's
    verdict; whether a rule is tried on it, the rule index's."""
    from pipeshell_filter.cli import build_prefilter, load_plans

    literal, numeric = tmp_path / "literal.yml", tmp_path / "numeric.yml"
    literal.write_text("title: literal\nlogsource: {product: windows}\n"
                       "detection: {sel: {CommandLine|contains: mimikatz}, condition: sel}\n")
    numeric.write_text("title: numeric\nlogsource: {product: windows}\n"
                       "detection: {sel: {Port|gte: 5}, condition: sel}\n")
    other = tmp_path / "other.yml"
    other.write_text("title: other\nlogsource: {product: windows}\n"
                     "detection: {sel: {CommandLine|contains: rubeus}, condition: sel}\n")
    event = tmp_path / "event.json"
    event.write_text('{"EventID": 1, "CommandLine": "rubeus.exe"}\n')

    def said(*rules):
        result = run_cli_here(["explain", *[arg for rule in rules for arg in ("--rule", str(rule))],
                               "--event", str(event)])
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.decode().splitlines() if line.startswith("prefilter ")]

    prefilter, _ = build_prefilter(load_plans([str(literal), str(numeric)], None), "python")
    assert prefilter is None  # every line parsed
    assert said(literal, numeric)[0] == ("prefilter the line is parsed (another rule has no needle: every line is), "
                                       "but holds none of this rule's needles: the rule is not tried on it")
    assert said(literal, other) == [
        "prefilter the line is parsed (it holds another rule's needle), but holds none of this rule's needles: "
        "the rule is not tried on it", "prefilter the line is a candidate (parsed)"]
    assert said(literal) == ["prefilter the line holds no needle of any rule: the filter skips parsing it"]


def test_input_dev_stdin_loses_no_byte_and_sigterm_ends_its_wait():
    proc = subprocess.Popen(COMMAND + ["--emit", "all", "--idle", "0", "--input", "/dev/stdin"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b'{"a":1}\n{"b":2}\n')  # the writer stays: only the signal ends the input
    proc.stdin.flush()
    out = b""
    deadline = time.monotonic() + 30
    while out.count(b"\n") < 2 and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            out += os.read(proc.stdout.fileno(), 1 << 16)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out + rest == b'{"a":1}\n{"b":2}\n', err


def test_more_inputs_than_the_hard_open_file_limit_are_a_usage_error(tmp_path):
    for number in range(50):
        (tmp_path / f"{number}.ndjson").write_bytes(ndjson([flat_event(number, "ws04", "benign")]))
    limited = subprocess.run(COMMAND + ["--input", str(tmp_path)], capture_output=True, timeout=60,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)))
    assert limited.returncode == 2 and b"Traceback" not in limited.stderr
    assert limited.stderr.splitlines() == [b"pipeshell-filter: error: 50 input files cannot be open at once "
                                           b"(the open-file limit is 40); merge fewer, or raise the limit (ulimit -n)"]


def test_merged_inputs_lift_the_soft_open_file_limit_within_the_hard_one():
    from pipeshell_filter.io.inputs import allow_open

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 164:
        pytest.skip(f"the hard open-file limit here is {hard}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, hard))
        allow_open(100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (164, hard)
        allow_open(10)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (164, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_several_inputs_are_merged_by_event_time(tmp_path):
    server, client1, client2 = ATTACK
    files = {"a.ndjson": [server, flat_event(500, "ws04", "benign")],
             "b.ndjson": [client1, "garbage"], "c.ndjson": [client2]}
    for name, events in files.items():
        (tmp_path / name).write_bytes(b"".join(
            (e.encode() + b"\n") if isinstance(e, str) else ndjson([e]) for e in events))
    together = run_cli(["--emit", "all"], ndjson(ATTACK))
    for args in ([str(tmp_path)], [str(tmp_path / n) for n in ("c.ndjson", "b.ndjson", "a.ndjson")]):
        merged = run_cli(["--emit", "all", *[x for p in args for x in ("--input", p)]])
        assert merged.returncode == 0, merged.stderr
        out = merged.stdout.splitlines()
        # every input line once, in event-time order (garbage keeps its place after its
        # file's previous line), plus the alert
        assert len(out) == 5 + 1
        passed = [line for line in out if b'"kind":"alert"' not in line]
        assert passed[2] == b"garbage"
        hosts = [json.loads(line).get("Computer") or json.loads(line)["Event"]["System"]["Computer"]
                 for line in passed if line != b"garbage"]
        assert hosts == ["srv01", "cli01", "cli02", "ws04"]
        found = alerts(b"\n".join(line for line in out if line != b"garbage"))
        assert [a["sigma"]["aggregation"]["values"] for a in found] == \
            [a["sigma"]["aggregation"]["values"] for a in alerts(together.stdout)]
        assert f"{tmp_path / 'b.ndjson'} line 2: not valid JSON" in merged.stderr.decode()


def test_a_named_pipe_found_in_a_directory_is_skipped_not_waited_on(tmp_path):
    """A FIFO named ``*.ndjson`` in an input directory blocked the run until a writer opened it (for
    ever, if none did); named on its own it is an input like a pipe on stdin."""
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "b.ndjson")
    (logs / "a.ndjson").write_bytes(b'{"EventID": 1}\n')
    result = run_cli(["--emit", "all", "--input", str(logs)], timeout=30)
    assert result.returncode == 0 and result.stdout == b'{"EventID": 1}\n', result.stderr
    assert result.stderr.decode().splitlines()[0] == (
        f"pipeshell-filter: skipped: input {logs / 'b.ndjson'}: not a regular file (a named pipe found in a "
        "directory is read only when named)")
    os.remove(logs / "a.ndjson")
    alone = run_cli(["--input", str(logs)], timeout=30)
    assert alone.returncode == 2 and alone.stderr.decode() == (
        f"pipeshell-filter: error: input directory {logs} holds only named pipes, no .evtx, .ndjson, .jsonl, "
        ".json files\n")


def test_a_stop_ends_the_wait_for_a_named_pipe_merged_with_a_file(tmp_path):
    """A pipe named among files merged, whose writer keeps it open and writes nothing: SIGTERM set its
    flag and the read of the pipe went on waiting, through the stop, until the supervisor's kill.  The
    stop ends that wait as it ends a lone pipe's: exit 0, as at end of input."""
    fifo, path = tmp_path / "events.pipe", tmp_path / "events.ndjson"
    os.mkfifo(fifo)
    path.write_bytes(ndjson(ATTACK))
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--input", str(fifo), "--input", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with open(fifo, "wb"):  # open once the filter opened it to read: its stop is in place then
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and out == b"", err
    assert err.decode().endswith("0 lines; 0 matched; 0 alerts\n"), err


def _bytes_in_pipe(fd: int) -> int:
    """What a pipe holds that its reader has not taken yet (``FIONREAD``, either end)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


@pytest.mark.parametrize("through", ["fifo", "stdin"])
def test_a_stop_hands_on_the_lines_read_ahead_from_a_pipe_merged_with_a_file(tmp_path, through):
    """Merged with a file, a pipe's lines are read ahead (the prefilter's batch, the one waiting in the
    merge): a stop dropped them, though a pipe cannot be read again, and handed on cut the line it cut.
    Every line taken from the pipe goes on, the cut one whole when its rest comes in time; the file's are
    left to a next run (its place, with ``--state``)."""
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson([flat_event(seconds, "file01", "benign") for seconds in range(100, 105)]))
    piped = [flat_event(seconds, f"pipe{seconds:02d}", "benign") for seconds in range(20)]
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    reader, writer = os.pipe() if through == "stdin" else (None, None)
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--input", str(path),
                                          "--input", str(fifo) if through == "fifo" else "-"],
                               stdin=reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if through == "fifo":
            writer = os.open(fifo, os.O_WRONLY)  # once the filter opened it to read
        else:
            os.close(reader)
        cut = ndjson([flat_event(30, "pipe30", "benign")])
        os.write(writer, ndjson(piped) + cut[:25])  # and kept open: the stop, not the end of input, ends the run
        while _bytes_in_pipe(writer) and process.poll() is None:  # until the filter has read them all
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        os.write(writer, cut[25:])  # the rest of the line the stop cut, within the stop's wait for it
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        if writer is not None:
            os.close(writer)
    assert process.returncode == 0, err
    hosts = [json.loads(line)["Computer"] for line in out.splitlines()]
    assert [host for host in hosts if host.startswith("pipe")] == [event["Computer"] for event in piped] + ["pipe30"]
    assert b"not valid JSON" not in err, err
    assert hosts.count("file01") <= 5


def _lines_within(stream, count: int, timeout: float = 60.0) -> list:
    """The first ``count`` lines the filter writes, or those written within ``timeout`` seconds (a run held back)."""
    fd, data, deadline = stream.fileno(), b"", time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
    return data.splitlines()[:count]


@pytest.mark.parametrize("prefilter", [[], ["--no-prefilter"]])
def test_a_slow_pipe_merged_with_a_file_hands_on_its_lines_while_its_writer_waits(tmp_path, prefilter):
    """Merged with a file, a pipe's lines went on only once the prefilter's batch (up to 1 MiB) was full,
    or at its end, and the output was not written while the pipe waited: a slow collector's events gave
    nothing for hours.  Its batch is judged, and the output written, as soon as the pipe would wait; the
    merge still waits for each input's next line (the file's later line stays behind the pipe's)."""
    path, fifo = tmp_path / "events.ndjson", tmp_path / "events.pipe"
    path.write_bytes(ndjson([flat_event(0, "file00", "benign"), flat_event(100, "file100", "benign")]))
    os.mkfifo(fifo)
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--input", str(path), "--input", str(fifo)] + prefilter,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = None
    try:
        writer = os.open(fifo, os.O_WRONLY)  # kept open: no end of input
        os.write(writer, ndjson([flat_event(1, "pipe01", "server"), flat_event(2, "pipe02", "benign")]))
        hosts = [json.loads(line)["Computer"] for line in _lines_within(process.stdout, 3)]
        assert hosts == ["file00", "pipe01", "pipe02"]
        os.close(writer)
        writer = None
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        if writer is not None:
            os.close(writer)
    assert process.returncode == 0, err
    assert [json.loads(line)["Computer"] for line in out.splitlines()] == ["file100"]


@pytest.mark.parametrize("reading", [["--workers", "0"], ["--workers", "2"], ["merged"]])
def test_an_alert_goes_out_while_a_writer_keeps_the_pipe_full(tmp_path, reading):
    """The output was written when the input paused: under a writer ahead of the filter (a backlog
    replayed, a collector catching up) the pipe never paused, and ``--emit alerts``' alert sat in the
    buffer until 64 KiB of records came after it: for as long as the flood lasted.  Now within a second;
    standard input read alone or by workers, or a FIFO merged with a file."""
    rule = tmp_path / "marker.yml"
    rule.write_text("title: marker\nid: marker\nlogsource: {product: windows}\n"
                    "detection:\n  sel:\n    CommandLine|contains: evilmarker\n  condition: sel\n")
    flood = ndjson([dict(flat_event(1, "ws01", "benign"), CommandLine="notepad.exe " + "x" * 200)] * 4000)
    fifo, empty = tmp_path / "events.pipe", tmp_path / "empty.ndjson"
    if reading == ["merged"]:
        os.mkfifo(fifo)
        empty.write_bytes(b"")
        reading = ["--input", str(fifo), "--input", str(empty)]
    process = subprocess.Popen(COMMAND + ["--rule", str(rule), "--no-prefilter", "--emit", "alerts", "--quiet"]
                               + reading, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    flooding = threading.Event()
    flooding.set()

    def write() -> None:
        try:
            with (open(fifo, "wb") if "--input" in reading else process.stdin) as pipe:
                fcntl.fcntl(pipe.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: as the filter widens its stdin
                pipe.write(ndjson([dict(flat_event(0, "ws01", "benign"), CommandLine="run evilmarker")]))
                while flooding.is_set():  # far faster than every line parsed: the pipe stays full
                    pipe.write(flood)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write)
    writer.start()
    try:
        during = _lines_within(process.stdout, 1, timeout=20)  # while the writer still writes
        assert flooding.is_set()
    finally:
        flooding.clear()
        writer.join()
        process.stdin.close()
        out, err = process.stdout.read(), process.stderr.read()
        process.wait(60)
    assert [json.loads(line)["rule"]["id"] for line in during] == ["marker"], err
    assert process.returncode == 0 and out == b"", err


def test_two_pipes_merged_are_each_opened_while_the_other_waits(tmp_path):
    """Two FIFOs merged: the second was opened only once the first's prefilter batch was full, so its
    writer's ``open`` hung.  The first's lines go on as soon as it would wait; then the second is opened."""
    first, second = tmp_path / "first.pipe", tmp_path / "second.pipe"
    os.mkfifo(first)
    os.mkfifo(second)
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--input", str(first), "--input", str(second)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writers = []
    try:
        writers.append(os.open(first, os.O_WRONLY))
        os.write(writers[0], ndjson([flat_event(1, "first01", "benign"), flat_event(5, "first05", "benign")]))
        deadline = time.monotonic() + 60
        while len(writers) < 2 and process.poll() is None and time.monotonic() < deadline:
            try:  # no reader yet: ENXIO, at once (a blocking open would hang this test with the bug)
                writers.append(os.open(second, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                time.sleep(0.05)
        assert len(writers) == 2, "the second pipe was not opened while the first waited"
        os.write(writers[1], ndjson([flat_event(2, "second02", "benign")]))
        hosts = [json.loads(line)["Computer"] for line in _lines_within(process.stdout, 2)]
        assert hosts == ["first01", "second02"]
        for writer in writers:
            os.close(writer)
        writers = []
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        for writer in writers:
            os.close(writer)
    assert process.returncode == 0, err
    assert [json.loads(line)["Computer"] for line in out.splitlines()] == ["first05"]


def test_an_input_that_is_the_output_file_is_a_usage_error(tmp_path):
    """``--input FILE --emit all >> FILE`` (or ``< FILE >> FILE``, or FILE in an input directory): the filter
    read back what it wrote, for ever, until the disk was full (5 GB in 30 s); ``cat`` refuses as much."""
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "events.ndjson"
    path.write_bytes(ndjson(ATTACK))
    for args, stdin in ((["--input", str(path)], None), ([], path), (["--input", str(logs)], None)):
        with open(path, "ab") as stdout, open(stdin or os.devnull, "rb") as source:
            result = subprocess.run(COMMAND + ["--emit", "all"] + args, stdin=source, stdout=stdout,
                                    stderr=subprocess.PIPE, timeout=60)
        assert result.returncode == 2 and path.read_bytes() == ndjson(ATTACK), result.stderr
        named = "standard input" if stdin else f"input {path}"
        assert result.stderr.decode() == f"pipeshell-filter: error: {named} is the file standard output writes to: " \
            "the filter would read back what it writes, for ever\n"


def test_missing_input_is_a_usage_error(tmp_path):
    result = run_cli(["--input", str(tmp_path / "nope.ndjson")])
    assert result.returncode == 2 and b"nope.ndjson" in result.stderr and len(result.stderr.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(["--input", str(empty)])
    assert result.returncode == 2 and b"holds no" in result.stderr
    result = run_cli(["--input", "/dev/zero"])  # a device: neither read for ever nor called missing
    assert result.returncode == 2 and result.stderr.splitlines() == [
        b"pipeshell-filter: error: cannot read input /dev/zero: not a file, a directory, a named pipe or /dev/null"]
    result = run_cli(["--input", "/dev/null"])  # but /dev/null, empty, as ``< /dev/null``
    assert result.returncode == 0 and result.stdout == b"" and b"0 lines" in result.stderr


@pytest.mark.parametrize("packed, writer", [("gzip", "gzip"), ("bzip2", "bz2"), ("xz", "lzma")])
def test_a_compressed_input_is_a_usage_error_naming_how_to_read_it(tmp_path, packed, writer):
    """An archive's ``events.ndjson.gz`` was read as lines of compressed bytes: every one an invalid-JSON
    diagnostic, ``--emit all`` handing the bytes on, no event detected, exit 0.  Now it is refused at start,
    named (as file, in a directory, as standard input, through ``-`` and for explain), with the command
    that reads it."""
    import importlib

    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "events.ndjson"
    path.write_bytes(importlib.import_module(writer).compress(ndjson(ATTACK)))
    tool = {"gzip": "zcat", "bzip2": "bzcat", "xz": "xzcat"}[packed]
    for args, stdin, named in ((["--input", str(path)], None, f"input {path}"),
                               (["--input", str(logs)], None, f"input {path}"),
                               ([], path, "standard input"), (["--input", "-"], path, "standard input"),
                               (["explain", "--events", str(path)], None, f"--events {path}")):
        with open(stdin or os.devnull, "rb") as source:
            result = subprocess.run(COMMAND + ["--emit", "all"] * (args[:1] != ["explain"]) + args, stdin=source,
                                    capture_output=True, timeout=60)
        file = path if stdin is None else "FILE"
        assert (result.returncode, result.stdout) == (2, b""), result.stderr
        assert result.stderr.decode() == f"pipeshell-filter: error: {'cannot read ' * (stdin is None)}{named}" \
            f"{':' if stdin is None else ' is'} {packed}-compressed; decompress it into the filter " \
            f"({tool} {file} | pipeshell-filter ...)\n"
    decompressed = importlib.import_module(writer).decompress(path.read_bytes())  # read as it asks: the alert
    result = subprocess.run(COMMAND, input=decompressed, capture_output=True, timeout=60)
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr


@hypothesis_given(st.binary(max_size=12))
def test_no_json_or_text_line_is_taken_for_a_compressed_file(tail):
    """The magic numbers ``inputs.compression`` knows start with bytes no NDJSON, BOM or text line starts
    with (a control byte, or ``BZh`` followed by a level and a bzip2 block's own six bytes)."""
    for head in (b"{", b"\xef\xbb\xbf{", b" ", b"BZh9 ", b"BZh", b"<Event", b"2026-"):
        assert inputs_module.compression(head + tail) is None
    assert inputs_module.compression(b"\x1f\x8b\x08" + tail) == "gzip"
    assert inputs_module.compression(b"\x28\xb5\x2f\xfd" + tail) == "zstd"


def test_a_named_pipe_in_a_rule_directory_is_skipped_not_waited_on(tmp_path):
    """A rule directory is read file by file; a named pipe there would block start-up for ever."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yml").write_text("title: x\nid: 1\nlogsource: {}\ndetection:\n  sel:\n    a: 1\n"
                                    "  condition: sel\n")
    os.mkfifo(rules / "pipe.yml")
    result = run_cli(["--rule", str(rules), "--emit", "matches"], b'{"a": 1}\n')
    assert result.returncode == 0 and b'"kind":"alert"' in result.stdout  # the good rule ran
    assert f"skipped: rule {rules / 'pipe.yml'}: not a regular file" in result.stderr.decode()
    strict = run_cli(["--rule", str(rules), "--strict"], b"")
    assert strict.returncode == 2 and len(strict.stderr.splitlines()) == 1


def test_two_rules_without_id_sharing_a_title_are_said_to_clash_by_their_title(tmp_path):
    """A rule with neither id nor name is known by its title; the clash said "its id <title> is
    already the id of ...", and its writer looked for an id the file never held."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, value in (("a.yml", 1), ("b.yml", 2)):
        (rules / name).write_text(f"title: Same title\nlogsource: {{}}\ndetection:\n  sel:\n    a: {value}\n"
                                  "  condition: sel\n")
    result = run_cli(["--rule", str(rules), "--emit", "matches"], b'{"a": 1}\n')
    assert result.returncode == 0 and b'"kind":"alert"' in result.stdout
    assert (f"skipped: rule {rules / 'b.yml'}: its id (its title, where it has no id or name) 'Same title' "
            f"already names {rules / 'a.yml'}: give each its own id\n") in result.stderr.decode()


def test_a_named_pipe_is_read_as_input(tmp_path):
    """``mkfifo`` then ``--input`` (a collector writing into it): read like stdin, to its end."""
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--input", str(fifo)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    with open(fifo, "wb") as writer:
        writer.write(ndjson(ATTACK) + b"garbage\n")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lines = [line for line in out.splitlines() if b'"kind":"alert"' not in line]
    assert [json.loads(line)["Event"]["System"]["Computer"] for line in lines[:3]] == ["srv01", "cli01", "cli02"]
    assert lines[3:] == [b"garbage"]
    assert out.count(b"\"kind\":\"alert\"") == 1 and b"line 4: not valid JSON" in err


FIELD_MAP = """\
name: my-collector
detect: [rec.id]
time: [rec.when]
fields:
  EventID: [rec.id]
  Computer: [rec.box]
  ScriptBlockText: [rec.text]
"""


def test_field_map_reads_a_shape_of_ones_own(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(FIELD_MAP)
    events = [{"rec": {"id": 4104, "box": host, "when": f"2026-11-01T10:0{i}:00Z", "text": text}}
              for i, (host, text) in enumerate([("srv", "x System.IO.Pipes.NamedPipeServerStream"),
                                                ("c1", "System.IO.Pipes.NamedPipeClientStream"),
                                                ("c2", "System.IO.Pipes.NamedPipeClientStream")])]
    result = run_cli(["--field-map", str(path)], ndjson(events))
    assert result.returncode == 0, result.stderr
    assert [a["related"]["hosts"] for a in alerts(result.stdout)] == [["c1", "c2", "srv"]]
    explained = run_cli(["explain", "--field-map", str(path), "--event", str(_write(tmp_path, events[0]))])
    assert "profile   my-collector (" + str(path) in explained.stdout.decode()


def _write(tmp_path, event):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return path


@pytest.mark.parametrize("body, message", [
    (FIELD_MAP + "  Computer: [rec.host]\n", "duplicate key 'Computer'"),
    ("name: x\nfields: [1, 2]\n", "'fields' must map field names"),
    ("name: x\nbogus: 1\n", "unknown key(s) 'bogus'"),
    ("name: x\n1: y\nnull: z\n2021-01-01: w\n", "unknown key(s) 1, None, datetime.date(2021, 1, 1)"),
    ("name: x\nfields:\n  1: [a]\n", "field name '1' must be a non-empty string"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: x\nfields:\n  Computer: [2001-13-45]\n", "not valid YAML/JSON: month must be in 1..12"),
    ("name: x\nfields:\n  Computer: [" + "7" * 5001 + "]\n", "not valid YAML/JSON: Exceeds the limit"),
    # an EventID a candidate is for is a number or a text: any other value matched no event, in silence
    ("name: x\nfields:\n  Payload: [{path: a, event_id: [4103.0]}]\n", "'Payload': an event_id is"),
    ("name: x\nfields:\n  Payload: [{path: a, event_id: {x: 1}}]\n", "'Payload': an event_id is"),
    ("name: x\nfields:\n  Payload: [{path: a, event_id: [true, null]}]\n", "'Payload': an event_id is"),
    ("name: x\nfields:\n  Payload: [{path: a, event_id: &e [*e]}]\n", "deeper than"),
    # EventID read only for events of an EventID: it never resolved (it cannot be known before it is read)
    ("name: x\nfields:\n  EventID: [{path: a, event_id: [1]}]\n", "'EventID': its candidates cannot be for some"),
    # a path that is no text is said with the file's name, and briefly however large it is
    ("name: x\ndetect: [[a, b]]\n", "'detect': a path must be a non-empty string, got a list"),
    ("name: x\nfields:\n  Payload: [{path: [a]}]\n", "'Payload': a path must be a non-empty string, got a list"),
    # YAML aliases standing for a huge tree ("billion laughs"): refused, not expanded into the memory
    ("name: x\nfields:\n  Payload: [{path: a, event_id: [&a0 [1,1,1,1,1,1,1,1,1]"
     + "".join(f", &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)) + "]}]\n",
     "values and keys"),
    ("name: x\ndetect: [&a0 [x,x,x,x,x,x,x,x,x]"
     + "".join(f", &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)) + "]\n",
     "values and keys"),
    ("name: x\ndescription: &t " + "a." * 400_000 + "b\ntime: [" + ", ".join(["*t"] * 200) + "]\n", "MiB of text"),
])
def test_bad_field_map_is_a_one_line_usage_error(tmp_path, body, message):
    path = tmp_path / "bad.yml"
    path.write_text(body)
    result = run_cli(["--field-map", str(path)])
    err = result.stderr.decode().strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and message in err, err


@pytest.mark.parametrize("option, content", [
    ("--field-map", b"EventID: \xff\n"),  # not UTF-8
    ("--field-map", None),  # /dev/zero: endless
    ("--state", None),  # /dev/zero: not a file the state can be kept in (nor replaced, nor removed)
    ("--state", "fifo"),
])
def test_a_file_argument_it_cannot_use_is_refused_in_one_line(tmp_path, option, content):
    if content is None:
        path = "/dev/zero"
    elif content == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    else:
        path = str(tmp_path / "map.yml")
        open(path, "wb").write(content)
    # --state-reset too, on the fifo only: a build that removed the file must not take /dev/zero with it
    for extra in ([], ["--state-reset"]) if content == "fifo" else ([],):
        result = run_cli([option, path, *extra], b"", timeout=30)
        assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr
        assert result.stderr.count(b"\n") == 1 and path.encode() in result.stderr, result.stderr
    assert os.path.exists(path)


@pytest.mark.parametrize("how", ["stdout closed", "stdin closed", "disk full"])
def test_closed_or_failing_standard_streams_are_one_line_errors(how):
    sample = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")
    with open(sample, "rb") as source, open("/dev/full", "wb") as full:
        result = subprocess.run(COMMAND + ["--emit", "all"], stdin=None if how == "stdin closed" else source,
                                stdout=full if how == "disk full" else subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: os.close({"stdout closed": 1, "stdin closed": 0}.get(how, 99))
                                if how != "disk full" else None, timeout=60)
    assert result.returncode == (1 if how == "disk full" else 2), result.stderr
    assert b"Traceback" not in result.stderr and result.stderr.count(b"\n") == 1, result.stderr
    assert {"disk full": b"No space left", "stdout closed": b"standard output is closed",
            "stdin closed": b"standard input is closed"}[how] in result.stderr


@pytest.mark.parametrize("arguments", [["--emit", "alerts"], ["--emit", "all", "--workers", "2"], ["explain"]])
def test_standard_output_open_for_reading_only_is_a_usage_error(tmp_path, arguments):
    """``1<FILE``: the run read its input up to the first record it wrote (with --emit alerts, the first
    alert, maybe hours in), then failed with 'cannot write the output: Bad file descriptor', exit status
    1; as standard input open for writing only, it is refused at start."""
    (tmp_path / "out").write_bytes(b"")
    with open(tmp_path / "out", "rb") as read_only:
        result = subprocess.run(COMMAND + ["--input", SAMPLE] * (arguments[0] != "explain") + arguments,
                                stdin=subprocess.DEVNULL, stdout=read_only, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == b"pipeshell-filter: error: standard output is open for reading only\n"


@pytest.mark.parametrize("arguments", [["--input", "-"], ["--input", SAMPLE, "--input", "-"]])
def test_standard_input_named_as_dash_and_closed_is_said_so(arguments):
    """``--input - <&-`` said 'cannot read input /dev/stdin: permission denied': the path the filter reads
    standard input through, and a cause that is not the one; ``<&-`` alone says the stream is closed."""
    result = subprocess.run(COMMAND + arguments, stdin=None, capture_output=True, timeout=60,
                            preexec_fn=lambda: os.close(0))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr == b"pipeshell-filter: error: standard input is closed\n"


def test_standard_input_open_for_writing_only_is_a_usage_error(tmp_path):
    """``pipeshell-filter 0>FILE`` failed at its first read: 'Bad file descriptor', exit status 1."""
    with open(tmp_path / "out", "wb") as write_only:
        result = subprocess.run(COMMAND, stdin=write_only, capture_output=True, timeout=60)
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr == b"pipeshell-filter: error: standard input is open for writing only\n"


@pytest.mark.parametrize("arguments", [["--input", "-"], ["--input", "-", "--input", "-"],
                                       ["explain", "--events", "-"], ["explain", "--event", "-"]])
def test_standard_input_named_as_dash_and_open_for_writing_only_is_a_usage_error(tmp_path, arguments):
    """``--input - 0>FILE`` read FILE afresh through /dev/stdin (here empty: 0 lines, exit 0), where
    ``0>FILE`` alone was refused; ``-`` is standard input, the same refusal for both (and for explain)."""
    with open(tmp_path / "out", "wb") as write_only:
        result = subprocess.run(COMMAND + arguments, stdin=write_only, capture_output=True, timeout=60)
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr == b"pipeshell-filter: error: standard input is open for writing only\n"


def test_an_empty_input_directory_or_a_device_is_refused_and_a_named_pipe_is_read(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", "/dev/zero"):  # /dev/zero would be read for ever (/dev/null: empty)
        result = run_cli(["--input", str(path)], timeout=30)
        assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and str(path).encode() in result.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(COMMAND + ["--input", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb") as writer:
        writer.write(ndjson(ATTACK))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and len(alerts(out)) == 1, err


CORRELATED_RULES = """title: A pipe event
id: pipe-event
name: pipe_event
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel
---
title: Pipe events on one host
correlation:
  type: event_count
  rules: [pipe_event]
  group-by: [Computer]
  timespan: 2m
  condition: {gte: 3}
"""


def test_the_summary_line_says_how_many_rules_were_loaded(tmp_path):
    """It said how many lines, matches and alerts, not with how many rules: a rule directory that
    loaded fewer than meant was told only by the skipped rules' own lines, lost among diagnostics."""
    (tmp_path / "rules.yml").write_text(CORRELATED_RULES)
    (tmp_path / "broken.yml").write_text("title: x\ndetection:\n  sel:\n    a: 1\n  condition: other\n")
    for args, stage, expected in ((["--emit", "all"], [], "1 rule; 3 lines; "),
                                  (["--rule", str(tmp_path)], [], "2 rules; 3 lines; "),
                                  (["--rule", str(tmp_path)], ["--stage", "correlate"], "2 rules; 0 lines (")):
        result = run_cli(args + stage, ndjson(ATTACK) if not stage else b"")
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().splitlines()[-1].startswith("pipeshell-filter: " + expected), result.stderr


@pytest.mark.parametrize("args, message", [
    (["--rule", "/nonexistent", "explain"],
     "--rule before 'explain' would be ignored: give the options after the subcommand"),
    (["--emit", "all", "--quiet", "run", "--collect", "true"],
     "--emit, --quiet before 'run' would be ignored: give the options after '--'"),
])
def test_filter_options_before_a_subcommand_are_refused_not_ignored(args, message):
    """Ignored, they made ``run`` filter with the defaults (every event dropped from the chain with
    --emit alerts) and ``explain`` show the built-in rule instead of the one asked for."""
    result = run_cli(args)
    err = result.stderr.decode().strip()
    assert result.returncode == 2 and err == f"pipeshell-filter: error: {message}" and not result.stdout


def test_with_stderr_closed_the_stream_goes_on_and_exit_statuses_hold():
    """``2>&-``: no ``sys.stderr``; the first diagnostic used to end the run with status 1 and no output."""
    def closed_stderr(args, data=b""):
        return subprocess.run(COMMAND + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              close_fds=True, preexec_fn=lambda: os.close(2), timeout=60)
    lines = b'bad\n{"a": 1}\n' + ndjson([evtx_event(0, "srv01", "benign", 4104, 1)])
    passed = closed_stderr(["--emit", "all"], lines)
    assert passed.returncode == 0 and passed.stdout == lines
    assert closed_stderr(["--lateness", "nan"]).returncode == 2


@pytest.mark.parametrize("args, status", [
    (["--lateness", "nan"], 2), (["--rule", "/nonexistent"], 2), (["--bogus"], 2), (["--rule-stats", "/no/such/x"], 2),
    (["explain", "--rule", "/nonexistent"], 2), (["--input", SAMPLE], 0), (["--input", SAMPLE, "--emit", "all"], 1)])
def test_with_stderr_full_the_exit_statuses_hold(args, status):
    """``2>/dev/full``: the error line failed to be written, and that failure (a traceback no one saw)
    made a usage error's status 1, not 2.  The output full too (the last case): 1, as said."""
    with open("/dev/full", "wb") as full:
        result = subprocess.run(COMMAND + args, stdin=subprocess.DEVNULL, stderr=full, timeout=60,
                                stdout=full if status == 1 else subprocess.DEVNULL)
    assert result.returncode == status


@pytest.mark.parametrize("args", [["--time-field="], ["--time-field=."], ["--time-field=a..b"], ["--state="]])
def test_an_empty_path_option_is_a_usage_error(args):
    """--time-field '' was ignored (and '.' left every event without a time); --state '' never saved."""
    result = run_cli(args)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--lateness", "-1"], ["--max-skew", "nan"], ["--field-map", "/nonexistent"],
                                  ["--time-field", "a..b"], ["--profile", "nosuch"], ["--agents", "-1"],
                                  ["--agent-idle", "nan"], ["--stage", "match"]])
def test_explain_refuses_a_bad_option_it_would_not_use(args):
    """Without --event or --events these options were never read: a wrong value, or a field map that
    does not exist, printed the plan and exit status 0."""
    result = run_cli(["explain", *args])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and not result.stdout, result.stderr


@pytest.mark.parametrize("given, needs", [
    (["--lateness", "5"], "--events"), (["--max-skew", "5"], "--events"), (["--early-alerts"], "--events"),
    (["--max-line-bytes", "5000"], "--events"), (["--line-field", "log"], "--event or --events"),
    (["--stage", "correlate"], "--events"), (["--stage", "all"], "--events"),
    (["--agents", "2"], "--events --stage correlate"), (["--agent-idle", "5"], "--events --stage correlate"),
])
@pytest.mark.parametrize("mode", ["plan", "event", "events"])
def test_explain_options_for_a_stream_without_it_are_usage_errors(given, needs, mode):
    """The options that run a stream (``--events``) printed the plan or one event's verdicts as if
    they had been heeded, exit 0; ``--agents`` and ``--agent-idle`` act only on a correlate stage's
    records.  Given where they act, they are taken."""
    where = {"plan": [], "event": ["--event", SAMPLE], "events": ["--events", SAMPLE]}[mode]
    result = run_cli(["explain", *where, *given])
    if mode in {"--events": {"events"}, "--event or --events": {"event", "events"}}.get(needs, ()):
        assert result.returncode == 0 and result.stdout.startswith((b"events ", b"detections ", b"event ")), \
            result.stderr
        return
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.decode() == f"pipeshell-filter: error: {given[0]} needs {needs}: here it would do nothing\n"
    if "correlate" in needs:
        taken = run_cli(["explain", "--events", SAMPLE, "--stage", "correlate", *given])
        assert taken.returncode == 0 and taken.stdout.startswith(b"detections "), taken.stderr


EVENTS_READ = "--event, or --events of events (not --stage correlate)"
JUDGED = ("rules to describe or events to judge (not --events --stage correlate, whose Detection records the match "
          "stage judged)")


@pytest.mark.parametrize("given, mode, needs", [
    (["--profile", "flat"], "plan", EVENTS_READ), (["--field-map", "FIELDMAP"], "plan", EVENTS_READ),
    (["--time-field", "ts"], "plan", EVENTS_READ), (["--profile", "flat"], "correlate", EVENTS_READ),
    (["--field-map", "FIELDMAP"], "correlate", EVENTS_READ), (["--time-field", "ts"], "correlate", EVENTS_READ),
    (["--logsource-unknown", "skip"], "correlate", JUDGED), (["--state", "STATE"], "plan", "--events"),
    (["--state", "STATE"], "event", "--events"), (["--logsource", "category=proxy"], "plan", EVENTS_READ),
    (["--logsource", "category=proxy"], "correlate", EVENTS_READ),
])
def test_explain_options_that_would_do_nothing_are_usage_errors(tmp_path, given, mode, needs):
    """The plan alone reads no event, nor does a correlate stage's file of Detection records (the match
    stage resolved their fields, as --logsource-unknown told it): --profile, --field-map, --time-field
    there printed the same report, exit 0.  Where they act they are taken."""
    (tmp_path / "map.yml").write_text("name: mine\nfields: {}\n")
    (tmp_path / "state.json").write_bytes(b"")
    given = [{"FIELDMAP": str(tmp_path / "map.yml"), "STATE": str(tmp_path / "state.json")}.get(a, a) for a in given]
    where = {"plan": [], "event": ["--event", SAMPLE], "correlate": ["--events", SAMPLE, "--stage", "correlate"]}
    result = run_cli(["explain", *where[mode], *given])
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.decode() == f"pipeshell-filter: error: {given[0]} needs {needs}: here it would do nothing\n"
    if given[0] != "--state":
        for taken in (["--event", SAMPLE], ["--events", SAMPLE]):
            assert run_cli(["explain", *taken, *given]).returncode == 0
    if given[0] == "--logsource-unknown":
        assert run_cli(["explain", *given]).returncode == 0


def test_explain_strict_refuses_a_rule_directory_with_a_rule_that_does_not_load(tmp_path):
    """explain had no --strict: the plan of a directory whose rule failed to load was printed without
    it (the rule named on stderr), with no way to make that an error as the filter makes it."""
    (tmp_path / "good.yml").write_text("title: good\nlogsource: {product: windows}\n"
                                       "detection: {sel: {EventID: 1}, condition: sel}\n")
    (tmp_path / "bad.yml").write_text("title: bad\ndetection: {sel: {EventID: 1}, condition: nosuch}\n")
    lenient = run_cli(["explain", "--rule", str(tmp_path)])
    assert lenient.returncode == 0 and b"rule      good\n" in lenient.stdout
    assert lenient.stderr.startswith(b"pipeshell-filter: skipped: ") and b"bad.yml" in lenient.stderr
    for mode in ([], ["--events", SAMPLE]):
        strict = run_cli(["explain", "--rule", str(tmp_path), "--strict", *mode])
        assert strict.returncode == 2 and not strict.stdout and len(strict.stderr.splitlines()) == 1
        assert strict.stderr.startswith(b"pipeshell-filter: error: ") and b"bad.yml" in strict.stderr


def test_explain_state_file_that_cannot_be_read_is_a_usage_error(tmp_path):
    for path, said in ((tmp_path / "none.json", "no such file"), (tmp_path, "not a regular file")):
        result = run_cli(["explain", "--events", SAMPLE, "--state", str(path)])
        assert result.returncode == 2 and not result.stdout
        assert result.stderr.decode() == f"pipeshell-filter: error: --state {path}: {said}\n"
    (tmp_path / "bad.json").write_bytes(b"not a state")
    result = run_cli(["explain", "--events", SAMPLE, "--state", str(tmp_path / "bad.json")])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["explain"], ["explain", "--event", os.path.join(REPO, "examples",
                                                                     "pipeshell-sample.ndjson")]])
def test_explain_to_a_closed_output_is_a_usage_error(args):
    """``explain >&-`` printed nothing and exited 0, where the filter refuses a closed output."""
    result = subprocess.run(COMMAND + args, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=60)
    assert result.returncode == 2 and result.stderr == b"pipeshell-filter: error: standard output is closed\n"


@pytest.mark.parametrize("args", [["explain"], ["--help"]])
def test_explain_or_help_to_a_full_output_is_one_line(args):
    with open("/dev/full", "wb") as full:
        result = subprocess.run(COMMAND + args, stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 1 and result.stderr == b"pipeshell-filter: error: No space left on device\n"


def test_host_names_that_look_like_numbers_stay_text_and_apart(tmp_path):
    """Hosts "007" and "7" were both the integer 7 in alerts: one host in related.hosts and in the
    message, one event.id for two alerts (a NATS subscriber then drops the second as a duplicate),
    and an integer where the schema says a host name. A record id "0042" stays text too."""
    rule = tmp_path / "hit.yml"
    rule.write_text("title: hit rule\ndetection:\n  sel: {x: hit}\n  condition: sel\n")
    lines = [{"x": "hit", "@timestamp": "2026-01-01T00:00:00Z", "Computer": host, "EventRecordID": record}
             for host, record in (("007", "0042"), ("7", "42"))]
    found = alerts(run_cli(["--rule", str(rule)], ndjson(lines)).stdout)
    assert [a["related"]["hosts"] for a in found] == [["007"], ["7"]]
    assert found[0]["event"]["id"] != found[1]["event"]["id"]
    assert [a["sigma"]["events"][0]["record_id"] for a in found] == ["0042", 42]
    for alert in found:
        jsonschema.validate(alert, ALERT_SCHEMA)
    clients = [flat_event(30 * i, host, "client", 4104) for i, host in enumerate(("7", "12"), 1)]
    [alert] = alerts(run_cli([], ndjson([flat_event(0, "007", "server", 4104)] + clients)).stdout)
    assert alert["related"]["hosts"] == ["007", "12", "7"] and "3 host(s)" in alert["message"]
    jsonschema.validate(alert, ALERT_SCHEMA)


# Three events of one host, three users, 1,500 bytes: what the aggregation messages below measure.
THREE_HITS = [{"x": "hit", "@timestamp": f"2026-01-01T00:00:0{i}Z", "Computer": "srv", "User": user, "Bytes": size}
              for i, (user, size) in enumerate((("ann", 200), ("bob", 300), ("cy", 1000)))]


@pytest.mark.parametrize("aggregation, message", [
    ("sum(Bytes) > 1000", "sum(Bytes) = 1500 within 60s"),
    ("avg(Bytes) > 400", "avg(Bytes) = 500 within 60s"),
    ("count(User) > 2", "3 distinct User value(s) within 60s"),
    ("count() by Computer > 2", "3 event(s) within 60s"),
    ("count(Computer) > 0", "1 host(s) within 60s"),  # each event alone: three alerts
])
def test_a_legacy_aggregations_message_says_what_it_counted_or_summed(tmp_path, aggregation, message):
    """Every legacy aggregation's message said "N host(s)", the hosts among its events: "1 host(s)"
    for a sum of 1,500 bytes or three distinct users, all on one host."""
    rule = tmp_path / "agg.yml"
    rule.write_text(f"title: agg\ndetection:\n  sel: {{x: hit}}\n  condition: sel | {aggregation}\n"
                    "  timeframe: 1m\n")
    lines = THREE_HITS
    found = alerts(run_cli(["--rule", str(rule)], ndjson(lines)).stdout)
    assert [a["message"] for a in found] == [f"agg: {message}"] * (3 if "host" in message else 1)
    jsonschema.validate(found[0], ALERT_SCHEMA)


@pytest.mark.parametrize("correlation, message", [
    ("{type: event_count, rules: [hit], group-by: [Computer], timespan: 1m, condition: {gte: 3}}", "3 event(s)"),
    ("{type: value_count, rules: [hit], timespan: 1m, condition: {field: User, gte: 3}}",
     "3 distinct User value(s)"),
    ("{type: value_count, rules: [hit], timespan: 1m, condition: {field: Computer, gte: 1}}", "1 host(s)"),
    ("{type: value_sum, rules: [hit], timespan: 1m, condition: {field: Bytes, gt: 1000}}", "sum(Bytes) = 1500"),
    ("{type: value_avg, rules: [hit], timespan: 1m, condition: {field: Bytes, gt: 400}}", "avg(Bytes) = 500"),
    ("{type: temporal, rules: [hit, other], timespan: 1m, condition: {gte: 2}}", "2 of 2 rules"),
])
def test_a_correlation_documents_message_says_what_it_measured(tmp_path, correlation, message):
    """A v2 correlation's message said "N host(s)" whatever its kind, as legacy aggregations' did."""
    rule = tmp_path / "corr.yml"
    rule.write_text("title: hit\nname: hit\ndetection:\n  sel: {x: hit}\n  condition: sel\n---\n"
                    "title: other\nname: other\ndetection:\n  sel: {User: cy}\n  condition: sel\n---\n"
                    f"title: corr\ncorrelation: {correlation}\n")
    lines = THREE_HITS
    found = [a for a in alerts(run_cli(["--rule", str(rule)], ndjson(lines)).stdout) if a["rule"]["name"] == "corr"]
    assert [a["message"] for a in found][:1] == [f"corr: {message} within 60s"]
    jsonschema.validate(found[0], ALERT_SCHEMA)


def test_single_event_alerts_of_hosts_apart_after_256_characters_have_ids_apart(tmp_path):
    """The id was hashed from the reference as the alert shows it, cut at 256 characters."""
    rule = tmp_path / "hit.yml"
    rule.write_text("title: hit rule\ndetection:\n  sel: {x: hit}\n  condition: sel\n")
    lines = [{"x": "hit", "@timestamp": "2026-01-01T00:00:00Z", "Computer": "A" * 300 + end} for end in "12"]
    found = alerts(run_cli(["--rule", str(rule)], ndjson(lines)).stdout)
    assert len(found) == 2 and found[0]["event"]["id"] != found[1]["event"]["id"]
    assert found[0]["related"]["hosts"] == found[1]["related"]["hosts"]  # as shown: the same, cut


def test_a_windows_hosts_alike_in_their_first_256_characters_are_listed_once_with_the_total():
    """``related.hosts`` listed each host as cut at 256 characters: three hosts apart only after
    that were one name three times, against the schema's unique list."""
    events = [{"@timestamp": f"2026-01-01T00:00:0{i}Z", "EventID": 4104, "Computer": "h" * 256 + end,
               "ScriptBlockText": f"System.IO.Pipes.NamedPipe{kind}Stream"}
              for i, (end, kind) in enumerate([("", "Server"), ("a", "Client"), ("b", "Client")])]
    [alert] = alerts(run_cli([], ndjson(events)).stdout)
    jsonschema.validate(alert, ALERT_SCHEMA)
    assert alert["related"]["hosts"] == ["h" * 256, "h" * 256 + "\u2026"]
    assert alert["sigma"]["hosts_total"] == 3 and "3 host(s)" in alert["message"]


def test_an_alerts_threat_fields_follow_the_attack_tags_by_kind(tmp_path):
    rule = tmp_path / "tagged.yml"
    rule.write_text("title: tagged\ntags: [attack.credential-access, attack.s0002, attack.g0069, attack.t1059.1]\n"
                    "detection:\n  sel: {x: hit}\n  condition: sel\n")
    [alert] = alerts(run_cli(["--rule", str(rule)],
                             ndjson([{"x": "hit", "@timestamp": "2026-01-01T00:00:00Z"}])).stdout)
    assert alert["threat"] == {"framework": "MITRE ATT&CK", "tactic": {"name": ["credential-access"]},
                               "technique": {"id": []}, "group": {"id": ["G0069"]}, "software": {"id": ["S0002"]}}
    jsonschema.validate(alert, ALERT_SCHEMA)


def test_an_input_path_that_cannot_be_reached_is_said_with_the_systems_reason(tmp_path):
    """``--input file/x`` (a file on the way) or a path under a directory that cannot be searched
    was called "no such file or directory": the reason the system gives is said instead."""
    (tmp_path / "plain").write_text("{}\n")
    result = run_cli(["--input", str(tmp_path / "plain" / "x")], b"")
    assert result.returncode == 2 and result.stderr.decode().strip() == \
        f"pipeshell-filter: error: cannot read input {tmp_path / 'plain' / 'x'}: not a directory"
    missing = run_cli(["--input", str(tmp_path / "none")], b"")
    assert missing.returncode == 2 and missing.stderr.decode().strip().endswith(": no such file or directory")
    device = run_cli(["--input", "/dev/zero"], b"")
    assert device.returncode == 2 and b"not a file, a directory, a named pipe or /dev/null" in device.stderr


def test_an_events_path_that_cannot_be_read_is_named_as_given(tmp_path):
    """``explain --events`` with a missing file said "cannot read input X", as if --input were given:
    it names --events, one line, exit status 2; ``--event`` gives the system's reason as every other
    such line does (it was "No such file or directory")."""
    for option, given, reason in (
            ("--events", tmp_path / "none.ndjson", "cannot read --events {}: no such file or directory"),
            ("--events", tmp_path, "--events directory {} holds no .evtx, .ndjson, .jsonl, .json files"),
            ("--event", tmp_path / "none.json", "cannot read --event {}: no such file or directory")):
        result = run_cli(["explain", option, str(given)])
        assert result.returncode == 2 and not result.stdout
        assert result.stderr.decode() == f"pipeshell-filter: error: {reason.format(given)}\n"


@pytest.mark.parametrize("args", [["--input", "-"], ["explain", "--events", "-"], ["explain", "--event", "-"]])
def test_a_dash_is_standard_input(args):
    """``-`` reads standard input, as for every Unix tool (it was 'no such file or directory')."""
    with open(os.path.join(REPO, "examples", "pipeshell-sample.ndjson"), "rb") as handle:
        sample = handle.read()
    result = run_cli(args, sample)
    assert result.returncode == 0, result.stderr
    expected = run_cli(args[:-2] + [args[-2], "/dev/stdin"], sample)
    assert result.stdout == expected.stdout and result.stdout
    if args[0] == "--input":
        assert len(alerts(result.stdout)) == 1


def test_a_path_holding_a_line_break_or_a_terminal_escape_is_named_on_one_line(tmp_path):
    """A usage error, or a diagnostic, that names a path: its line breaks and escape sequences are
    escapes, so that the message stays one line and drives no terminal."""
    odd = str(tmp_path / "a\nb\x1b[31m")
    for args in (["--rule", odd], ["--input", odd], ["--field-map", odd]):
        result = run_cli(args)
        assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"\x1b" not in result.stderr, args
        assert "a\\nb\\x1b[31m" in result.stderr.decode(), result.stderr
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x\ny.ndjson").write_bytes(b"not json\n")
    (folder / "other.ndjson").write_bytes(b"")  # two files: lines named by their file
    result = run_cli(["--input", str(folder), "--quiet"])
    said = result.stderr.decode()
    assert result.returncode == 0 and said.count("\n") == 1
    assert said.startswith(f"pipeshell-filter: {folder}/x\\ny.ndjson line 1: not valid JSON"), said


def test_a_dash_that_holds_no_event_is_named_as_given():
    result = run_cli(["explain", "--event", "-"], b"not an event")
    assert result.returncode == 2 and result.stderr.decode().startswith("pipeshell-filter: error: --event -: neither")


def test_every_diagnostic_kind_is_said_by_the_summary_as_a_skipped_line_or_a_notice():
    """The summary counts a diagnostic kind it does not know as skipped lines under its bare name: a
    notice added without a place in ``cli.NOTICES`` would tell the user that lines were skipped."""
    import ast

    from pipeshell_filter.cli import NOTICES, SKIPPED

    package = os.path.join(REPO, "filter", "pipeshell_filter")
    kinds = set()
    for root, _, names in os.walk(package):
        for name in (name for name in names if name.endswith(".py")):
            for node in ast.walk(ast.parse(open(os.path.join(root, name)).read())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "report" and node.args and isinstance(node.args[0], ast.Constant):
                    kinds.add(node.args[0].value)
    assert len(kinds) > 10, kinds  # the scan found the reports
    assert kinds - set(NOTICES) - set(SKIPPED) == set()
    assert set(NOTICES).isdisjoint(SKIPPED)


def test_a_rule_file_reached_twice_is_loaded_once(tmp_path):
    """A file named after a directory that holds it was refused as a duplicate of its own id (exit 2), and named
    before it, said skipped: one file, loaded once, in either order."""
    (tmp_path / "sub").mkdir()
    rule = tmp_path / "sub" / "pipes.yml"
    rule.write_bytes(open(os.path.join(REPO, "filter", "pipeshell_filter", "rules", "pipeshell_named_pipes.yml"),
                          "rb").read())
    for order in ([tmp_path, rule], [rule, tmp_path], [tmp_path, tmp_path / "sub"]):
        result = run_cli(sum((["--rule", str(path)] for path in order), ["--join", "window"]), ndjson(ATTACK))
        assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
        assert result.stderr.decode().splitlines() == ["pipeshell-filter: 1 rule; 3 lines; 3 matched; 1 alert"]


def test_a_non_blocking_output_pipe_that_fills_is_waited_on_not_a_failure():
    """A parent that set O_NONBLOCK on the pipe it gave as stdout (a Node.js or asyncio parent's own
    end, shared): the first write to the full pipe raised EAGAIN, and the run stopped with 'cannot
    write the output: Resource temporarily unavailable', exit status 1, the rest of the output lost."""
    expected = run_cli(["--emit", "all", "--input", SAMPLE])
    assert expected.returncode == 0 and len(expected.stdout) > 4 * 4096, expected.stderr
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # filled by the first records
        os.set_blocking(write_end, False)
        proc = subprocess.Popen(COMMAND + ["--emit", "all", "--input", SAMPLE], stdout=write_end,
                                stderr=subprocess.PIPE)
        os.close(write_end)
        write_end = None
        deadline = time.monotonic() + 60
        while unread(read_end) < 4096 and proc.poll() is None:  # the reader takes nothing until it is full
            assert time.monotonic() < deadline, "the output pipe never filled"
            time.sleep(0.01)
        taken = bytearray()
        while chunk := os.read(read_end, 1 << 16):
            taken += chunk
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
    assert proc.returncode == 0 and stderr.count(b"error") == 0, stderr
    assert bytes(taken) == expected.stdout


_HOSTILE_VALUES = ["", "-", "--", "1e309", "-1e309", "nan", "inf", "-0", "0x10", "\u0661", "\uff11", "a\nb",
                   "a\\b", '"', "\t", "1_0", "99999999999999999999", str(1 << 64), "5e-324", "0", "1", "5", "match",
                   "correlate", "all", "wrap", "keep", "event", "10m", "2026-11-02", "product=x", "=", ",",
                   "attack.t1059*", "x" * 300, "/dev/null", "/nonexistent/x", REPO, SAMPLE]
_FILTER_OPTIONS = None


def _filter_options():
    """The filter's own options, as its typer app declares them (the fleet bus and the worker processes
    left out: a network connection and a process pool are not what this property is about)."""
    global _FILTER_OPTIONS
    if _FILTER_OPTIONS is None:
        import typer.main
        from pipeshell_filter import cli

        params = typer.main.get_command(cli.app).params
        _FILTER_OPTIONS = [(p.opts[0], getattr(p, "is_flag", False)) for p in params
                           if p.opts[0].startswith("--") and p.opts[0] not in ("--nats", "--workers", "--help")]
    return _FILTER_OPTIONS


@hypothesis_given(st.data())
def test_any_option_list_ends_in_a_status_and_a_usage_error_is_one_line(data):
    """Options drawn from the real ones with hostile values (repeated, after ``--``, a subcommand misplaced):
    the command ends 0, 1 or 2, never in a traceback; exit 2 is one line on stderr and nothing on stdout
    (``--line-field 'a\\nb'`` was a traceback; a ``--tag`` no rule has, alone, two lines)."""
    args = []
    for _ in range(data.draw(st.integers(1, 4))):
        option, flag = data.draw(st.sampled_from(_filter_options()))
        args += [option] if flag else [option, data.draw(st.sampled_from(_HOSTILE_VALUES))]
    if data.draw(st.booleans()):
        args.insert(data.draw(st.integers(0, len(args))), data.draw(st.sampled_from(["--", "explain", "-"])))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as here:  # a relative --state or --rule-stats is written here
        os.chdir(here)
        try:
            result = run_cli_here(args, ndjson(ATTACK))
        finally:
            os.chdir(cwd)
    assert result.returncode in (0, 1, 2), (args, result.stderr)
    assert b"Traceback" not in result.stderr, (args, result.stderr)
    if result.returncode == 2:
        assert len(result.stderr.decode().strip().splitlines()) == 1 and result.stdout == b"", (args, result)
