"""At-least-once input to the correlate stage: a Detection record sent again (a NATS redelivery, a
shipper's retry of a chunk, an agent restarted from an older offset) is taken once, with or without
``--state``: no correlation fires or counts on it twice, and no single-event rule alerts again.

In process: random streams of Detection records, some records sent again later (with the same input
line, or another one, as an agent restarted numbers its lines anew), give the alerts of the stream
without them, byte for byte.  Then the real CLI on a replay that is not next to its original.
"""

import io
import json
import os
import tempfile

import ujson
import yaml
from hypothesis import given, settings, strategies as st

from clitools import alerts, ndjson, run_cli
from eventgen import flat_event, raw_events
from test_stages import BY_HOST, SINGLE, filtered
from pipeshell_filter.cli import load_plans
from pipeshell_filter.correlate.state import StateFile
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.rule import BUILTIN_RULE

RESOLVER = FieldResolver(builtin_profiles())


def _pipe_rule(name: str, stream: str) -> str:
    fields = ("ScriptBlockText", "Payload", "EventData")
    return yaml.safe_dump({"title": f"{name} side", "id": name, "name": name,
                           "detection": {**{f"sel{i}": {f"{field}|contains": stream} for i, field in enumerate(fields)},
                                         "condition": "1 of sel*"}})


# every kind a replay could make count twice: value_count (the built-in rule: hosts), event_count
# (BY_HOST), temporal (a server and a client side on one host), and a single-event rule
TEMPORAL = yaml.safe_dump({"title": "Both sides on one host", "id": "both-sides", "correlation": {
    "type": "temporal", "rules": ["server", "client"], "group-by": ["Computer"], "timespan": "3m"}})


def _rule_set():
    with tempfile.TemporaryDirectory(prefix="replays-") as directory:
        paths = [BUILTIN_RULE]
        for name, text in (("by_host", BY_HOST), ("single", SINGLE), ("temporal", "---\n".join(
                [_pipe_rule("server", "NamedPipeServerStream"), _pipe_rule("client", "NamedPipeClientStream"),
                 TEMPORAL]))):
            paths.append(os.path.join(directory, f"{name}.yml"))
            with open(paths[-1], "w") as handle:
                handle.write(text)
        return load_plans(paths, None, strict=True)


RULES = _rule_set()


def detection_lines(events) -> list:
    """What a match stage writes of the events: one Detection record a line."""
    engine = Engine(RULES, RESOLVER)
    lines = []
    for number, (seconds, host, kind, event_id, ident) in enumerate(events, 1):
        _, detections = engine.match(flat_event(seconds, host, kind, event_id, record_id=ident), number)
        lines += [ujson.dumps(d.to_wire()).encode() + b"\n" for d in detections]
    return lines


def correlate(data: bytes, lateness: int, state_path=None) -> tuple:
    """``--stage correlate`` on ``data`` in a fresh filter: (its output, the records sent again it dropped)."""
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        engine = Engine(RULES, RESOLVER, lateness * NS)
        stream_filter = Filter(engine, Output(sink.fileno()), Diagnostics(io.StringIO()), "alerts",
                               clock=lambda: 0, stage="correlate")
        if state_path is not None:
            stream_filter.keep_state(StateFile(state_path, 0))
        source.write(data)
        source.seek(0)
        stream_filter.run(source.fileno(), live=False)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), engine.duplicates()


def sent_again(lines: list, replays: list) -> list:
    """``lines`` with copies: (which record, how far after it, whether its input line is another)."""
    after = [[] for _ in lines]
    for which, offset, renumbered in replays:
        which %= len(lines)
        copy = lines[which]
        if renumbered:  # an agent restarted reads the record's event again as another line of its input
            record = json.loads(copy)
            record["event"]["line"] += 1000
            copy = ujson.dumps(record).encode() + b"\n"
        after[which + offset % (len(lines) - which)].append(copy)
    return [line for original, copies in zip(lines, after) for line in [original, *copies]]


@settings(deadline=None)
@given(raw_events(max_size=30, span=400), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                                                             st.booleans()), min_size=1, max_size=12),
       st.sampled_from([0, 30, 400]), st.booleans())
def test_records_sent_again_anywhere_later_change_no_alert(events, replays, lateness, with_state):
    lines = detection_lines(events)
    if not lines:
        return
    state = None
    with tempfile.TemporaryDirectory() as directory:
        if with_state:
            state = os.path.join(directory, "once.json")
        once, _ = correlate(b"".join(lines), lateness, state)
        if with_state:
            state = os.path.join(directory, "again.json")
        again, _ = correlate(b"".join(sent_again(lines, replays)), lateness, state)
    assert again == once


def test_a_replay_that_is_not_next_to_its_original_counts_once_on_the_command_line(tmp_path):
    rule = tmp_path / "by_host.yml"
    rule.write_text(BY_HOST)  # three pipe events on one host within 2 minutes
    match = run_cli(["--rule", str(rule), "--stage", "match", "--heartbeat", "0"],
                    ndjson([flat_event(0, "srv01", "server", 4104, 1), flat_event(10, "srv01", "server", 4104, 2)]))
    assert match.returncode == 0, match.stderr
    first, second = match.stdout.splitlines(keepends=True)
    for state in ([], ["--state", str(tmp_path / "plain.json")]):
        plain = run_cli(["--rule", str(rule), "--stage", "correlate", *state], first + second)
        state = [option.replace("plain", "replayed") for option in state]
        replayed = run_cli(["--rule", str(rule), "--stage", "correlate", *state], first + second + first)
        assert plain.returncode == replayed.returncode == 0, replayed.stderr
        assert alerts(plain.stdout) == alerts(replayed.stdout) == []  # two events, not three: no alert
        assert b"; 1 sent again (taken once)" in replayed.stderr and replayed.stderr.count(b"\n") == 1, \
            replayed.stderr


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["h1", "h2"]), st.integers(0, 4)), min_size=1,
                max_size=16),
       st.sampled_from([0, 30]), st.booleans())
def test_events_without_a_record_id_told_apart_by_their_line_count_each(events, lateness, with_state):
    """Events without a record id, the same time, host and values of the fields their rules read,
    that differ elsewhere (a source port): each counts (three in one second on one host fire
    ``count() by Computer >= 3``); the same line again counts once.  They were one event to the
    correlate stage and under ``--state``: ten failed logons in one second counted one."""
    lines = [ujson.dumps(dict(flat_event(seconds, host, "server"), SourcePort=port)).encode() + b"\n"
             for seconds, host, port in events]  # an event repeated is its line sent again
    records = []
    engine = Engine(RULES, RESOLVER)
    for number, line in enumerate(lines, 1):
        _, detections = engine.match(json.loads(line), number, None, line[:-1])
        records += [ujson.dumps(d.to_wire()).encode() + b"\n" for d in detections]
    with tempfile.TemporaryDirectory() as directory:
        state = os.path.join(directory, "state.json") if with_state else None
        correlated, _ = correlate(b"".join(records), lateness, state)
    firsts = [line if line not in lines[:number] else b"{}\n" for number, line in enumerate(lines)]
    assert correlated == filtered(RULES, b"".join(firsts), lateness)  # (a copy's place kept: lines keep their number)


def _without_lines(output: bytes) -> list:
    """Alert records with every ``line`` left out: each agent numbers its own input lines."""
    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key != "line"}
        return [strip(item) for item in value] if isinstance(value, list) else value
    return [strip(json.loads(line)) for line in output.splitlines()]


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["h1", "h2"]), st.integers(0, 4), st.integers(0, 1)),
                min_size=1, max_size=16),
       st.sampled_from([0, 30]), st.booleans())
def test_events_of_two_agents_told_apart_by_their_line_count_each(events, lateness, with_state):
    """Two match stages, each numbering its own lines from 1, read events of the same hosts without a
    record id: their records, interleaved at the correlate stage, give the alerts of one process on
    all the lines (a line both agents read counts once).  Two events of one host at one time, each
    its agent's line N, told apart by their lines' digests only, were one event when they came one
    after the other (``correlator.event_key``)."""
    lines = [(ujson.dumps(dict(flat_event(seconds, host, "server"), SourcePort=port)).encode() + b"\n", agent)
             for seconds, host, port, agent in events]
    engines, numbers, records = (Engine(RULES, RESOLVER), Engine(RULES, RESOLVER)), [0, 0], []
    for line, agent in lines:
        numbers[agent] += 1
        _, detections = engines[agent].match(json.loads(line), numbers[agent], None, line[:-1])
        records += [ujson.dumps(d.to_wire()).encode() + b"\n" for d in detections]
    with tempfile.TemporaryDirectory() as directory:
        state = os.path.join(directory, "state.json") if with_state else None
        correlated, _ = correlate(b"".join(records), lateness, state)
    texts = [line for line, _ in lines]
    firsts = [line if line not in texts[:number] else b"{}\n" for number, line in enumerate(texts)]
    assert _without_lines(correlated) == _without_lines(filtered(RULES, b"".join(firsts), lateness))
