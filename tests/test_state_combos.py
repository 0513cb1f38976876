"""The stateful options together: ``--suppress``, ``--early-alerts``, ``--state`` with a stop that
flushes or keeps the windows, across restarts.

A stream cut at random lines, each part run by a fresh filter that takes back the state the last
one saved, against one run over the whole stream: with ``--on-stop keep`` the restarts are invisible
byte for byte; with end of input (a pause, whose flush may alert) the output is that of one filter
that pauses at the same places and goes on.
"""

import json
import signal
import subprocess
import tempfile

from hypothesis import assume, event, given, settings, strategies as st

from clitools import COMMAND, alerts, ndjson, run_cli

from eventgen import raw_events
from test_stages import SINGLE
from test_state import PLANS, StopAfterReads, alert_records, assert_no_event_alerts_twice, lines_of, new_filter
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule

FEWER = """title: Fewer than three pipe events on one host
id: fewer-by-host
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() by Computer < 3
  timeframe: 1m
"""

# the test_state set (built-in rule joined by window, count() by Computer, a single-event rule); the built-in
# rule joined by event, and a count with an upper bound (windows judged once complete, never at a pause)
PLAN_SETS = {"state": PLANS,
             "event-join": [compile_plan(load_rule(BUILTIN_RULE, builtin=True), join="event"),
                            compile_plan(parse_rule(SINGLE, "single.yml"))],
             "upper": [compile_plan(parse_rule(FEWER, "fewer.yml")), compile_plan(parse_rule(SINGLE, "single.yml"))]}


def run_parts(parts, lateness, suppress, early, state_path, how, plans=PLANS) -> bytes:
    """Each part by a fresh filter restored from ``state_path`` (``how``: ``end``, end of input; ``keep``,
    a stop request with ``--on-stop keep`` while the rest of the stream is still to be read)."""
    outputs = []
    for i, part in enumerate(parts):
        rest = b"".join(parts[i:])
        with tempfile.TemporaryFile() as sink, tempfile.TemporaryFile() as source:
            stream_filter = new_filter(sink, lateness, "alerts", state_path, early, plans, suppress)
            last = i == len(parts) - 1
            source.write(part if how == "end" or last else rest)
            source.seek(0)
            if how == "end" or last:
                stream_filter.run(source.fileno(), live=False)
            else:
                stream_filter.run(source.fileno(), live=False, block_size=max(len(part), 1),
                                  stop=StopAfterReads(1 if part else 0))
            stream_filter.finish(keep_open=how == "keep" and not last)
            sink.seek(0)
            outputs.append(sink.read())
    return b"".join(outputs)


def run_paused(parts, lateness, suppress, early, state_path, plans=PLANS) -> bytes:
    """One filter that pauses (end of input with ``--state``) between the parts and goes on."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, "alerts", state_path, early, plans, suppress)
        for part in parts:
            with tempfile.TemporaryFile() as source:
                source.write(part)
                source.seek(0)
                stream_filter.run(source.fileno(), live=False)
                stream_filter.finish()
        sink.seek(0)
        return sink.read()


@st.composite
def cut_streams(draw):
    events = draw(raw_events(max_size=30))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), min_size=1, max_size=2)))
    return events, cuts


# --lateness, --suppress (seconds), --early-alerts, the rules
OPTIONS = (st.sampled_from([0, 30, 400]), st.sampled_from([1, 60, 600]), st.booleans(),
           st.sampled_from(sorted(PLAN_SETS)))


@given(cut_streams(), *OPTIONS)
def test_stops_that_keep_the_windows_are_invisible_with_suppress_and_early_alerts(tmp_path_factory, case, lateness,
                                                                                  suppress, early, plans):
    events, cuts = case
    plans = PLAN_SETS[plans]
    lines = lines_of(events)
    bounds = [0] + cuts + [len(lines)]
    parts = [b"".join(lines[start:end]) for start, end in zip(bounds, bounds[1:])]
    folder = tmp_path_factory.mktemp("combo")
    whole = run_parts([b"".join(lines)], lateness, suppress, early, str(folder / "whole.json"), "end", plans)
    cut = run_parts(parts, lateness, suppress, early, str(folder / "cut.json"), "keep", plans)
    made = alert_records(whole)
    event(f"alerts: {min(len(made), 3)}; a count carried: {any(a['sigma']['suppressed'] for a in made)}")
    assert cut == whole


@given(cut_streams(), *OPTIONS)
def test_pauses_then_restarts_are_one_filter_pausing_with_suppress_and_early_alerts(tmp_path_factory, case, lateness,
                                                                                    suppress, early, plans):
    events, cuts = case
    plans = PLAN_SETS[plans]
    lines = lines_of(events)
    bounds = [0] + cuts + [len(lines)]
    parts = [b"".join(lines[start:end]) for start, end in zip(bounds, bounds[1:])]
    folder = tmp_path_factory.mktemp("combo")
    cut = run_parts(parts, lateness, suppress, early, str(folder / "cut.json"), "end", plans)
    assert cut == run_paused(parts, lateness, suppress, early, str(folder / "paused.json"), plans)
    assert json.load(open(folder / "cut.json"))["lines"] == len(lines)
    made = alert_records(cut)
    assert_no_event_alerts_twice(made)


def _stopped_by(signal_number, lines, state_path, args) -> bytes:
    """The real CLI on a live pipe: ``lines`` written and passed on (``--emit all``), then the signal;
    its output."""
    process = subprocess.Popen(COMMAND + args + ["--emit", "all", "--state", state_path], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(b"".join(lines))
        process.stdin.flush()
        out = b""
        while out.count(b"\n") - out.count(b'"kind":"alert"') < len(lines):
            piece = process.stdout.readline()
            assert piece, process.stderr.read()
            out += piece
        process.send_signal(signal_number)
        rest, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        return out + rest
    finally:
        process.kill()


@settings(max_examples=12, deadline=None)  # three runs of the CLI each
@given(cut_streams(), st.sampled_from([0, 30]), st.sampled_from(["60", "10m"]), st.booleans(),
       st.sampled_from([signal.SIGTERM, signal.SIGHUP]))
def test_the_cli_stopped_by_a_signal_with_on_stop_keep_then_restarted_writes_what_one_run_writes(
        tmp_path_factory, case, lateness, suppress, early, signal_number):
    events, cuts = case
    # no two events at one time: a live pipe's pauses make the times at the watermark final (``settle``), and
    # an event tied with them that comes later is late there, not in a file
    events = list({event[0]: event for event in reversed(events)}.values())[::-1]
    assume(0 < cuts[0] < len(events))  # a line read first: the filter is past its start, its stop request set up
    lines = lines_of(events)
    folder = tmp_path_factory.mktemp("combo")
    # --max-skew: a live pipe's pauses hold back a source ahead of the others by more (``Under attack``)
    args = ["--lateness", str(lateness), "--idle", "0", "--max-skew", "100000", "--quiet", "--suppress", suppress,
            *(["--early-alerts"] if early else [])]
    whole = run_cli(args + ["--emit", "all"], b"".join(lines))
    assert whole.returncode == 0, whole.stderr
    path = str(folder / "state.json")
    first = _stopped_by(signal_number, lines[:cuts[0]], path, args + ["--on-stop", "keep"])
    rest = run_cli(args + ["--emit", "all", "--state", path], b"".join(lines[cuts[0]:]))
    assert rest.returncode == 0, rest.stderr
    # the events passed on in their order; the alerts the same, but for where among them: the stopped run read
    # a live pipe, whose pauses make what is final go out before the filter waits (``settle``)
    cut, one = (first + rest.stdout).splitlines(), whole.stdout.splitlines()
    assert [line for line in cut if b'"kind":"alert"' not in line] == \
        [line for line in one if b'"kind":"alert"' not in line]
    assert sorted(line for line in cut if b'"kind":"alert"' in line) == \
        sorted(line for line in one if b'"kind":"alert"' in line)


CHAIN = """title: A
name: rule_a
detection: {sel: {kind: a}, condition: sel}
---
title: B
name: rule_b
detection: {sel: {kind: b}, condition: sel}
---
title: inner
id: inner
correlation: {type: event_count, rules: [rule_a], timespan: 60s, condition: {gte: 2}}
---
title: outer
id: outer
correlation: {type: event_count, rules: [inner, rule_b], timespan: 10m, condition: {gte: 2}}
"""


def _kind(seconds, kind, host):
    return {"@timestamp": f"2024-01-01T00:00:{seconds:02d}Z", "kind": kind, "Computer": host}


def test_a_pause_whose_flush_alerts_nothing_leaves_an_inner_correlation_of_a_chain_as_it_was(tmp_path):
    """The inner correlation (no ``generate``: it makes no alert) fired at the pause's flush on lines 1-2, and
    that episode was consumed: line 3, on time in one run (within the lateness), was left out, and the outer
    alert listed line 2 where one run lists line 3.  A pause that alerts on nothing changes nothing."""
    rules = tmp_path / "chain.yml"
    rules.write_text(CHAIN)
    events = [_kind(0, "a", "h1"), _kind(10, "a", "h2"), _kind(5, "a", "h3"), _kind(20, "b", "h1")]
    args = ["--rule", str(rules), "--lateness", "30", "--quiet"]
    whole = run_cli(args, ndjson(events))
    assert [[e["line"] for e in a["sigma"]["events"]] for a in alerts(whole.stdout)] == [[3, 4]]
    state = str(tmp_path / "state.json")
    first = run_cli(args + ["--state", state], ndjson(events[:2]))
    rest = run_cli(args + ["--state", state], ndjson(events[2:]))
    assert first.stdout == b"" and rest.stdout == whole.stdout
