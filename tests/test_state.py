"""State across restarts (``--state``): a stop at any point, a restore and the rest of the stream
give the alerts of one uninterrupted run; events sent again never alert twice.

In process, the stream is cut at any line, by end of input or by a stop request, the state goes
through a real file, and a fresh Engine and Filter take it back.  Then the real CLI: SIGTERM and
kill -9 mid-incident, files it cannot use, a path it cannot write.
"""

import io
import json
import os
import shutil
import threading
import signal
import subprocess
import tempfile
import time

import pytest
from hypothesis import event, given, settings, strategies as st

from clitools import COMMAND, alerts, ndjson, run_cli
from eventgen import BASE, flat_event, raw_events
from test_prefilter import StopAfterReads  # a stop request that comes after some reads
from test_stages import BY_HOST, SINGLE
from pipeshell_filter.correlate import state as state_module
from pipeshell_filter.correlate.state import FORMAT, VERSION, StateFile
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule, parse_rules

# the built-in rule (window join), a count() by Computer rule and a single-event rule
PLANS = [compile_plan(load_rule(BUILTIN_RULE, builtin=True)), compile_plan(parse_rule(BY_HOST, "by.yml")),
         compile_plan(parse_rule(SINGLE, "single.yml"))]
RESOLVER = FieldResolver(builtin_profiles())
BASE_NS = int(BASE.timestamp()) * NS


def lines_of(events, without_ids=frozenset()):
    """Those in ``without_ids`` without a record id, told apart by a field no rule reads: by the digest
    of their lines (``event.digest``), which the state keeps with their events."""
    return [json.dumps(dict(flat_event(seconds, host, kind, event_id), SourcePort=ident) if ident in without_ids
                       else flat_event(seconds, host, kind, event_id, record_id=ident)).encode() + b"\n"
            for seconds, host, kind, event_id, ident in events]


def new_filter(sink, lateness, emit, state_path=None, early=False, plans=PLANS, suppress=0):
    """A filter writing to ``sink``, its state restored from ``state_path`` when that holds one
    (``suppress``: ``--suppress`` in seconds)."""
    stream_filter = Filter(Engine(plans, RESOLVER, lateness * NS, early=early, suppress_ns=suppress * NS),
                           Output(sink.fileno()), Diagnostics(io.StringIO()), emit, clock=lambda: 0)
    if state_path is not None:
        state_file = StateFile(state_path, 0)
        stream_filter.keep_state(state_file)
        saved = state_file.load()
        if saved is not None:
            assert stream_filter.resume(saved) == []
    return stream_filter


def feed(stream_filter, data: bytes, stop_at=None, keep_open=False) -> int:
    """Run the filter on ``data`` (a file); ``stop_at``: a stop request after that many bytes, else
    end of input; ``keep_open``: the stop leaves the windows open (``--on-stop keep``).  Returns how
    many alerts the end (the flush, or the pause's flush) wrote."""
    with tempfile.TemporaryFile() as source:
        source.write(data)
        source.seek(0)
        if stop_at is None:
            stream_filter.run(source.fileno(), live=False)
        else:  # one read of exactly the first part, then the stop
            stream_filter.run(source.fileno(), live=False, block_size=max(stop_at, 1),
                              stop=StopAfterReads(1 if stop_at else 0))
        before = stream_filter.engine.stats["alerts"]
        stream_filter.finish(keep_open=keep_open)
        return stream_filter.engine.stats["alerts"] - before


def run_once(data: bytes, lateness: int, emit: str, state_path=None, stop_at=None, whole=None,
             keep_open=False, early=False, plans=PLANS) -> tuple:
    """A fresh process, as it were: (output, alerts written at the end)."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, emit, state_path, early, plans)
        at_end = feed(stream_filter, whole if stop_at is not None else data, stop_at, keep_open)
        sink.seek(0)
        return sink.read(), at_end


def run_paused(parts, lateness, emit, state_path, early=False) -> bytes:
    """One Filter that pauses (end of input with --state) between the parts and goes on."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, emit, state_path, early)
        for part in parts:
            feed(stream_filter, part)
        sink.seek(0)
        return sink.read()


def alert_records(output: bytes):
    return [json.loads(line) for line in output.splitlines() if b'"kind":"alert"' in line]


def without_lines(records):
    for record in records:
        for ref in record["sigma"]["events"]:
            ref.pop("line", None)
    return records


def assert_no_event_alerts_twice(records):
    """Consume-on-fire: per rule and group, no event is in two alerts."""
    taken = {}
    for record in records:
        key = (record["rule"]["id"], json.dumps(record["sigma"].get("aggregation", {}).get("group")))
        ids = [ref.get("record_id", ("line", ref["line"])) for ref in record["sigma"]["events"]]
        assert not taken.setdefault(key, set()) & set(ids), (key, ids)
        taken[key].update(ids)


@st.composite
def cut_streams(draw):
    events = draw(raw_events(max_size=30))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), min_size=1, max_size=2)))
    without_ids = draw(st.one_of(st.just(frozenset()), st.frozensets(st.integers(0, 29))))
    return events, cuts, without_ids


@given(cut_streams(), st.sampled_from([0, 30, 400]), st.sampled_from(["alerts", "all"]),
       st.sampled_from(["end", "stop", "stop-keep"]), st.booleans())
def test_a_stop_anywhere_and_a_restore_give_the_uninterrupted_alerts(tmp_path_factory, case, lateness, emit, how,
                                                                      early):
    """``stop-keep``: the stop leaves the windows open (``--on-stop keep``), so the restarts are
    invisible whatever was pending, byte for byte.  ``early`` (``--early-alerts``): the events of an
    episode alerted early stay taken across a restart (not restoring them went unnoticed)."""
    events, cuts, without_ids = case
    lines = lines_of(events, without_ids)
    folder = tmp_path_factory.mktemp("state")
    data = b"".join(lines)
    whole, _ = run_once(data, lateness, emit, str(folder / "whole.json"), early=early)
    assert whole == run_once(data, lateness, emit, early=early)[0]  # --state changes nothing in one run
    path = str(folder / "state.json")
    outputs, paused_with_alerts = [], False
    bounds = [0] + cuts + [len(lines)]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        part = b"".join(lines[start:end])
        last = i == len(bounds) - 2
        if how != "end" and not last:  # the rest is still there: a stop request ends the run
            output, at_end = run_once(None, lateness, emit, path, len(part), part + b"".join(lines[end:]),
                                      keep_open=how == "stop-keep", early=early)
        else:
            output, at_end = run_once(part, lateness, emit, path, early=early)
        outputs.append(output)
        paused_with_alerts |= bool(at_end) and not last
        saved = json.load(open(path))
        assert saved["format"] == FORMAT and saved["version"] == VERSION and saved["lines"] == end
        assert not [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]
    event(f"a pause alerted: {paused_with_alerts}; alerts: {bool(alert_records(whole))}")
    if how == "stop-keep":
        assert not paused_with_alerts
    if not paused_with_alerts:
        # nothing was final at a pause: the restarts are invisible, byte for byte (line numbers too)
        assert b"".join(outputs) == whole
    else:
        # a pause's flush alerted on some episodes early: they stay consumed after the restore
        parts = [b"".join(lines[start:end]) for start, end in zip(bounds, bounds[1:])]
        assert b"".join(outputs) == run_paused(parts, lateness, emit, str(folder / "paused.json"), early)
    assert_no_event_alerts_twice(alert_records(b"".join(outputs)))


@given(cut_streams(), st.sampled_from([0, 30, 400]), st.sampled_from([0, 30, 400]), st.booleans(), st.booleans(),
       st.booleans())
def test_a_restart_with_early_alerts_or_the_lateness_changed_alerts_no_event_twice(tmp_path_factory, case, lateness,
                                                                                  lateness_after, early, early_after,
                                                                                  keep_open):
    """A restart is when options change: ``--early-alerts`` turned on or off (what the early alerts took
    is in the state, and a run without the option must still keep it back from the watermark's alerts)
    and ``--lateness`` changed.  Whatever the cut, the stop (end of input, or a stop that keeps the
    windows open) and the options on each side, no event is in two alerts of one rule and group."""
    events, cuts, without_ids = case
    lines = lines_of(events, without_ids)
    path = str(tmp_path_factory.mktemp("state") / "state.json")
    cut = cuts[0]
    first = b"".join(lines[:cut])
    if keep_open:
        output, _ = run_once(None, lateness, "alerts", path, len(first), b"".join(lines), keep_open=True,
                             early=early)
    else:
        output, _ = run_once(first, lateness, "alerts", path, early=early)
    rest, _ = run_once(b"".join(lines[cut:]), lateness_after, "alerts", path, early=early_after)
    assert json.load(open(path))["lines"] == len(lines)
    made = alert_records(output + rest)
    event(f"alerts: {min(len(made), 3)}; before the cut: {bool(alert_records(output))}")
    assert_no_event_alerts_twice(made)


@given(cut_streams(), st.sampled_from([0, 30, 400]), st.integers(1, 10))
def test_events_sent_again_after_a_restore_never_alert_twice(tmp_path_factory, case, lateness, again):
    events, cuts, without_ids = case
    cut = cuts[0]
    lines = lines_of(events, without_ids)
    folder = tmp_path_factory.mktemp("state")
    path = str(folder / "state.json")
    first, _ = run_once(b"".join(lines[:cut]), lateness, "alerts", path)
    saved = open(path, "rb").read()
    rest, _ = run_once(b"".join(lines[cut:]), lateness, "alerts", path)
    open(path, "wb").write(saved)
    replayed, _ = run_once(b"".join(lines[max(0, cut - again):]), lateness, "alerts", path)
    assert without_lines(alert_records(replayed)) == without_lines(alert_records(rest))
    assert_no_event_alerts_twice(alert_records(first + replayed))


@given(raw_events(max_size=30), st.sampled_from([0, 30, 400]))
def test_a_snapshot_taken_back_is_the_same_snapshot(events, lateness):
    engine = Engine(PLANS, RESOLVER, lateness * NS)
    engine.take_once()
    for line in lines_of(events):
        engine.process(json.loads(line))
    saved = json.loads(state_module.encode(engine.snapshot()))
    again = Engine(PLANS, RESOLVER, lateness * NS)
    again.take_once()
    assert again.restore(saved) == []
    assert json.loads(state_module.encode(again.snapshot())) == saved


@given(raw_events(max_size=30), st.sampled_from([0, 30, 400]))
def test_a_pause_leaves_the_state_a_trip_through_the_saved_form_leaves(events, lateness):
    """``pause`` keeps the correlator's own objects across its flush (the saved form's trip made a
    pause with 100,000 events held take 6.8 s): the same hits, and the same state after, as a pause
    that captures the state, flushes and restores it."""
    engines = []
    for _ in range(2):
        engine = Engine(PLANS, RESOLVER, lateness * NS)
        engine.take_once()
        for line in lines_of(events):
            engine.process(json.loads(line))
        engines.append(engine)
    kept, tripped = (engine.correlation.correlators for engine in engines)
    for mine, theirs in zip(kept, tripped):
        hits = state_module.pause(mine)
        before = json.loads(state_module.encode({"correlation": state_module.capture(theirs)}))["correlation"]
        expected = theirs.flush()
        state_module.restore(theirs, before)
        consumed = {}
        for hit in expected:
            consumed[hit.group] = max(hit.time, consumed.get(hit.group, float("-inf")))
        state_module._consume(theirs, consumed)
        assert [(h.time, h.group, len(h.contributions)) for h in hits] == \
            [(h.time, h.group, len(h.contributions)) for h in expected]
        assert state_module.capture(mine) == state_module.capture(theirs)


def test_a_pause_that_alerts_consumes_the_episode_and_the_windows_stay_open(tmp_path):
    path = str(tmp_path / "state.json")
    builtin = PLANS[0].rule.id

    def built_in_alerts(output):
        return [record for record in alert_records(output) if record["rule"]["id"] == builtin]

    incident = lines_of([(0, "srv01", "server", 4104, 1), (10, "cli01", "client", 800, 2),
                         (20, "cli02", "client", 4103, 3)])
    first, _ = run_once(b"".join(incident), 400, "alerts", path)
    assert len(built_in_alerts(first)) == 1  # the pause's flush: the alert comes out now
    saved = json.load(open(path))
    # the watermark from before the flush: the time two hosts vouch for (10 s) - lateness
    assert saved["correlations"][builtin]["watermark"] == BASE_NS + (10 - 400) * NS
    # the episode is consumed: more of it never alerts again (uninterrupted: one alert at 30 s)
    more = lines_of([(30, "cli03", "client", 4104, 4), (40, "ws04", "client", 4103, 5)])
    second, _ = run_once(b"".join(more), 400, "alerts", path)
    assert built_in_alerts(second) == []
    # the windows stay open: those two clients and a new server make a new episode
    later = lines_of([(310, "srv01", "server", 4103, 6)])
    third, _ = run_once(b"".join(later), 400, "alerts", path)
    assert [[e["record_id"] for e in a["sigma"]["events"]] for a in built_in_alerts(third)] == [[4, 5, 6]]
    assert [e["line"] for e in built_in_alerts(third)[0]["sigma"]["events"]] == [4, 5, 6]


# ---------------------------------------------------------------- the CLI


INCIDENT = [flat_event(0, "srv01", "server", 4104, record_id=1), flat_event(30, "cli01", "client", 800, record_id=2),
            flat_event(60, "cli02", "client", 4103, record_id=3)]
ARGS = ["--lateness", "0", "--idle", "0", "--quiet"]


def start(state_path, *extra):
    return subprocess.Popen(COMMAND + ARGS + ["--emit", "all", "--state", state_path, *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def send_and_see(process, events):
    """Write events and wait until the filter passed them on: it has read them."""
    process.stdin.write(ndjson(events))
    process.stdin.flush()
    for _ in events:
        assert process.stdout.readline()


def half_incident_then(process, then, timeout: float = 30) -> tuple:
    """The incident's first two events sent and read, then ``then(process)``, then the filter's end:
    its (stdout, stderr); killed if it does not end."""
    try:
        send_and_see(process, INCIDENT[:2])
        then(process)
        return process.communicate(timeout=timeout)
    finally:
        process.kill()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=lambda number: number.name)
def test_sigterm_mid_incident_then_a_restart_on_the_rest_gives_the_alert(tmp_path, stop):
    """SIGHUP (a hang-up, or what ``run`` itself takes as a stop) too: killed by it, the filter
    saved no state, and the restart never alerted."""
    path = str(tmp_path / "state.json")
    whole = run_cli(ARGS, ndjson(INCIDENT))
    assert len(alerts(whole.stdout)) == 1
    process = start(path)
    out, err = half_incident_then(process, lambda started: started.send_signal(stop))
    assert process.returncode == 0, err
    assert alerts(out) == [] and json.load(open(path))["lines"] == 2
    rest = run_cli(ARGS + ["--state", path], ndjson(INCIDENT[2:]))
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout == whole.stdout  # byte for byte: the lines 1-3 it names too
    without = run_cli(ARGS, ndjson(INCIDENT[2:]))
    assert alerts(without.stdout) == []  # what a restart without --state gives


def test_kill_9_loses_nothing_older_than_the_interval(tmp_path):
    path = str(tmp_path / "state.json")
    process = start(path, "--state-interval", "0.2")
    try:
        send_and_see(process, INCIDENT[:2])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the snapshot made while the filter waits for input
            if os.path.exists(path) and json.load(open(path))["lines"] == 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert json.load(open(path))["lines"] == 2
    rest = run_cli(ARGS + ["--state", path], ndjson(INCIDENT[2:]))
    assert rest.returncode == 0, rest.stderr
    assert [e["record_id"] for e in alerts(rest.stdout)[0]["sigma"]["events"]] == [1, 2, 3]


def test_a_replay_of_the_whole_input_after_a_restart_does_not_alert_again(tmp_path):
    path = str(tmp_path / "state.json")
    first = run_cli(ARGS + ["--state", path], ndjson(INCIDENT))
    assert len(alerts(first.stdout)) == 1
    again = run_cli(["--lateness", "0", "--idle", "0", "--state", path], ndjson(INCIDENT))
    assert again.returncode == 0 and alerts(again.stdout) == []
    assert b"3 sent again (taken once)" in again.stderr


def test_a_shipper_sending_again_what_the_last_run_passed_names_no_clock_behind(tmp_path):
    """Events re-sent after a restart that are older than the windows the state kept are late: each
    host was named "behind the other sources" (a wrong clock), though only the shipper went back.  One
    line says so instead; a host whose events come late after its own time in the state is still named."""
    path = str(tmp_path / "state.json")
    hour = [flat_event(t, f"h{t // 30 % 3}", "server", record_id=t) for t in range(0, 3600, 30)]
    first = run_cli(["--lateness", "0", "--idle", "0", "--state", path], ndjson(hour))
    assert first.returncode == 0 and b"behind" not in first.stderr, first.stderr
    later = [flat_event(t, f"h{t // 30 % 3}", "server", record_id=t) for t in range(3600, 4200, 30)]
    # late, and dated after the host's own last time in the state (or it had none): a clock behind
    slow = [flat_event(3650, "slow", "server", record_id=1), flat_event(3550, "h0", "server", record_id=1)]
    again = run_cli(["--lateness", "0", "--idle", "0", "--state", path], ndjson(hour + later + slow))
    assert again.returncode == 0, again.stderr
    said = again.stderr.decode().splitlines()
    assert [line for line in said if "is behind" in line] == [
        f"pipeshell-filter: correlation: source {host!r} is behind the other sources: 1 of its events came too late "
        "to count (rule PipeShell exfiltration over named pipes)" for host in ("slow", "h0")], said
    assert sum("saved state came after the restart, too late to count (sent again by the shipper?)" in line
               for line in said) == 1, said


@pytest.mark.parametrize("surrogate", [b"\\ud800", b"\xed\xa0\x80"])
def test_a_host_name_holding_a_lone_surrogate_is_kept_in_the_state_across_a_restart(tmp_path, surrogate):
    """msgspec cannot write a lone surrogate (which the filter reads, escaped or as raw bytes) as
    UTF-8: one event from such a host made every snapshot fail and the one at the end of input a
    traceback, exit 1; the windows of every host went with it."""
    path = str(tmp_path / "state.json")
    first = run_cli(ARGS + ["--state", path], ndjson(INCIDENT[:1]).replace(b"srv01", b"srv01" + surrogate))
    assert first.returncode == 0 and first.stderr == b"", first.stderr[-600:]
    rest = run_cli(ARGS + ["--state", path], ndjson(INCIDENT[1:]))
    assert rest.returncode == 0 and rest.stderr == b"", rest.stderr[-600:]
    [alert] = alerts(rest.stdout)
    assert alert["related"]["hosts"] == ["cli01", "cli02", "srv01\ud800"]


def test_a_correlate_stage_keeps_a_lone_surrogate_of_a_source_or_an_agent_in_its_state(tmp_path):
    path = str(tmp_path / "state.json")
    records = run_cli(["--stage", "match", "--heartbeat", "0"], ndjson(INCIDENT)).stdout.splitlines()
    forged = records[0].replace(b"srv01", b"srv01\\ud800")
    heartbeat = json.dumps({"type": "sigma.heartbeat", "version": 1, "agent": "agent\ud800",
                            "time": BASE_NS}).encode()
    correlate = ARGS + ["--stage", "correlate", "--state", path]
    first = run_cli(correlate, heartbeat + b"\n" + forged + b"\n")
    assert first.returncode == 0 and first.stderr == b"", first.stderr[-600:]
    rest = run_cli(correlate, b"\n".join(records[1:]) + b"\n")
    assert rest.returncode == 0 and rest.stderr == b"", rest.stderr[-600:]
    [alert] = alerts(rest.stdout)
    assert alert["related"]["hosts"] == ["cli01", "cli02", "srv01\ud800"]


@pytest.mark.parametrize("content", [json.dumps({"format": FORMAT, "version": 99}).encode(),
                                     json.dumps({"format": FORMAT, "version": VERSION, "lines": -1,
                                                 "correlations": {}}).encode(),
                                     # a count no run reaches: every Detection record a match stage wrote was
                                     # refused by its correlator ('event.line' beyond 64 bits)
                                     json.dumps({"format": FORMAT, "version": VERSION, "lines": 1 << 64,
                                                 "correlations": {}}).encode()])
def test_a_state_file_it_cannot_use_is_refused_in_one_line_and_reset_discards_it(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    refused = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT))
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr.count(b"\n") == 1 and b"--state-reset" in refused.stderr, refused.stderr
    assert path.read_bytes() == content  # left as it was
    reset = run_cli(ARGS + ["--state", str(path), "--state-reset"], ndjson(INCIDENT))
    assert reset.returncode == 0 and len(alerts(reset.stdout)) == 1
    assert json.loads(path.read_bytes())["lines"] == 3


@pytest.mark.parametrize("content", [b"garbage", b'{"format": "other"}', b"[" * 100_000, b'{"format": "\xff"}',
                                     b'{"EventID": 4104, "note": "pipeshell-filter.stat"}\n'])
def test_a_file_no_filter_wrote_is_refused_and_never_removed_by_reset(tmp_path, content):
    """``--state events.ndjson`` (a slip of the keyboard) was refused with "--state-reset discards
    it", and --state-reset then deleted the user's log: reset removes only a file a filter wrote."""
    path = tmp_path / "events.ndjson"
    path.write_bytes(content)
    for extra in ([], ["--state-reset"]):
        refused = run_cli(ARGS + ["--state", str(path)] + extra, ndjson(INCIDENT))
        assert refused.returncode == 2 and refused.stdout == b"", refused.stderr
        assert refused.stderr == (f"pipeshell-filter: error: state file {path}: not a pipeshell-filter state file"
                                  + (", so --state-reset leaves it" if extra else "")
                                  + "; name another file\n").encode(), refused.stderr
        assert path.read_bytes() == content


def test_an_empty_state_file_is_no_state_yet(tmp_path):
    """A file made empty by ``touch`` or a unit's setup (a snapshot is never empty: written whole)
    was refused as "not a pipeshell-filter state file": the run starts afresh and saves there."""
    path = tmp_path / "state.json"
    path.write_bytes(b"")
    run = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT))
    assert run.returncode == 0 and run.stderr.count(b"\n") <= 1 and len(alerts(run.stdout)) == 1, run.stderr
    assert json.loads(path.read_bytes())["lines"] == 3
    path.write_bytes(b"")
    explained = run_cli(["explain", "--events", "-", "--state", str(path)], ndjson(INCIDENT))
    assert explained.returncode == 0, explained.stderr


def test_a_state_file_cut_short_is_called_damaged_not_another_kind_of_file(tmp_path):
    """A snapshot cut short (copied from a full disk, a backup interrupted) was refused as "not a
    pipeshell-filter state file", which sent its reader looking for a wrong path."""
    path = str(tmp_path / "state.json")
    assert run_cli(ARGS + ["--state", path], ndjson(INCIDENT[:2])).returncode == 0
    whole = open(path, "rb").read()
    for size in (40, len(whole) // 2, len(whole) - 1):
        open(path, "wb").write(whole[:size])
        refused = run_cli(ARGS + ["--state", path], ndjson(INCIDENT[2:]))
        assert refused.returncode == 2 and refused.stderr.count(b"\n") == 1, refused.stderr
        assert b"damaged state file (cut short" in refused.stderr and b"--state-reset" in refused.stderr


def test_a_state_file_of_the_previous_format_is_read_and_its_windows_kept(tmp_path):
    """Version 1 kept each event as a whole wire record (type and version in each, 40 MB for a flood's
    100,000): an upgrade reads it, and the incident cut by the restart still alerts."""
    path = tmp_path / "state.json"
    assert run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[:2])).returncode == 0
    document = json.loads(path.read_bytes())
    [saved] = document["correlations"].values()
    assert saved["pending"] or saved["windows"]
    for entry in saved["pending"]:  # as version 1 wrote them
        entry[2] = {"type": "sigma.detection", "version": 1, **entry[2]}
    for entry in saved["windows"]:
        entry[1] = {"type": "sigma.detection", "version": 1, **entry[1]}
    path.write_text(json.dumps(dict(document, version=1)))
    resumed = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[2:]))
    assert resumed.returncode == 0, resumed.stderr
    assert len(alerts(resumed.stdout)) == 1
    assert json.loads(path.read_bytes())["version"] == VERSION
    path.write_text(json.dumps(dict(document, version=3)))
    refused = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[2:]))
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr == (f"pipeshell-filter: error: state file {path}: state format version '3' (this build "
                              f"reads 1 and {VERSION}); --state-reset discards it\n").encode(), refused.stderr


def _saved_mid_incident(tmp_path) -> bytes:
    """A real state file: two of the incident's three events held."""
    path = str(tmp_path / "state.json")
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, 0, "alerts", path)
        feed(stream_filter, ndjson(INCIDENT[:2]))
    with open(path, "rb") as handle:
        return handle.read()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_truncated_or_corrupted_state_file_is_taken_or_refused_never_a_crash(tmp_path_factory, data):
    """Any cut of a real state file, and any bytes changed in it (digits, quotes, brackets, bytes
    that are not UTF-8, escapes of lone surrogates), is either refused (``StateError``, one line) or
    taken back, and then the rest of the stream runs."""
    folder = tmp_path_factory.mktemp("state")
    content = bytearray(_saved_mid_incident(folder))
    if data.draw(st.booleans(), "cut"):
        content = content[:data.draw(st.integers(0, len(content) - 1), "cut at")]
    for _ in range(data.draw(st.integers(0, 3), "changes")):
        if content:
            at = data.draw(st.integers(0, len(content) - 1), "at")
            content[at:at + 1] = data.draw(st.sampled_from(
                [b"0", b"9", b"-", b'"', b"[", b"]", b"{", b"}", b",", b"\xff", b"\\ud800", b"null", b"1e999",
                 b"99999999999999999999999", b"true", b""]), "bytes")
    path = str(folder / "state.json")
    with open(path, "wb") as handle:
        handle.write(content)
    with tempfile.TemporaryFile() as sink:
        try:
            stream_filter = new_filter(sink, 0, "alerts")
            state_file = StateFile(path, 0)
            stream_filter.keep_state(state_file)
            saved = state_file.load()
            if saved is None:  # cut to nothing: no state yet, as ``resume_state`` takes it
                assert content == b""
                event("empty")
                return
            stream_filter.resume(saved)
        except state_module.StateError as error:
            assert "\n" not in str(error)
            event("refused")
            return
        event("taken")
        feed(stream_filter, ndjson(INCIDENT[2:]))


@given(st.lists(st.tuples(st.integers(0, 50), st.text("abc", min_size=1, max_size=4)), unique_by=lambda p: p[1]),
       st.integers(1, 8))
def test_seen_taken_back_at_once_is_seen_added_one_by_one(pairs, cap):
    """``Seen.restore`` (one sort) keeps what adding each saved identity in turn keeps."""
    one_by_one, at_once = state_module.Seen(cap), state_module.Seen(cap)
    for when, key in pairs:
        one_by_one.add(key, when)
    at_once.restore([list(pair) for pair in pairs])
    assert at_once.keys == one_by_one.keys and list(at_once.order) == list(one_by_one.order)


def test_a_changed_rule_set_discards_that_state_in_one_line(tmp_path):
    path = str(tmp_path / "state.json")
    run_cli(ARGS + ["--state", path], ndjson(INCIDENT[:2]))
    joined = run_cli(ARGS + ["--state", path, "--join", "event"], b"")  # the same rule, another correlation
    assert joined.returncode == 0
    assert joined.stderr.count(b"\n") == 1 and b"discarded the saved state of 1 correlation" in joined.stderr
    rule = tmp_path / "by.yml"
    rule.write_text(BY_HOST)
    other = run_cli(ARGS + ["--state", path, "--rule", str(rule)], b"")  # the rule is gone
    assert other.returncode == 0
    assert other.stderr.count(b"\n") == 1 and b"discarded the saved state of 1 correlation" in other.stderr


@pytest.mark.parametrize("where", ["missing", "a file", "read-only"])
def test_a_state_file_where_it_cannot_be_written_is_a_usage_error_at_start(tmp_path, where):
    """In a directory that did not exist (or could not be written) the run went on without a state,
    exit 0: each snapshot failed in one line on stderr, and the restart had lost every window."""
    top = tempfile.mkdtemp(prefix="pipeshell-state-")  # not under tmp_path: another user reaches it
    try:
        os.chmod(top, 0o755)
        folder = os.path.join(top, "folder")
        if where == "a file":
            open(folder, "w").close()
        elif where == "read-only":
            os.mkdir(folder, 0o555)
        path = os.path.join(folder, "state.json")
        as_other_user = []
        if where == "read-only" and os.geteuid() == 0:  # root writes anywhere: another user tries it
            if shutil.which("setpriv") is None:
                pytest.skip("running as root, without setpriv to run as another user")
            as_other_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            probe = subprocess.run(as_other_user + COMMAND + ["--help"], capture_output=True, timeout=60)
            if probe.returncode != 0:  # a checkout in a directory only root may enter (mktemp -d)
                pytest.skip("another user cannot run this checkout's filter")
        result = subprocess.run(as_other_user + COMMAND + ARGS + ["--state", path], input=ndjson(INCIDENT),
                                capture_output=True, timeout=60)
        assert result.returncode == 2 and result.stdout == b"", result.stderr
        reason = {"missing": "No such file or directory", "a file": "is not a directory",
                  "read-only": "cannot write in the directory"}[where]
        assert result.stderr.decode().splitlines() == [f"pipeshell-filter: error: --state {path}: "
                                                        + (f"{reason} {folder}" if where == "read-only" else
                                                           f"{folder}{':' if where == 'missing' else ''} {reason}")]
    finally:
        os.chmod(top, 0o700)
        if os.path.isdir(os.path.join(top, "folder")):
            os.chmod(os.path.join(top, "folder"), 0o700)
        shutil.rmtree(top)


def test_a_state_file_that_cannot_be_written_later_is_a_diagnostic_and_the_stream_goes_on(tmp_path):
    """Once started, a snapshot that fails (the directory gone, a full disk) is one line, not the end."""
    folder = tmp_path / "folder"
    folder.mkdir()
    process = start(str(folder / "state.json"))
    try:
        process.stdin.write(ndjson(INCIDENT[:1]))
        process.stdin.flush()
        assert process.stdout.readline()  # read: the state was taken at start
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()
        out, err = process.communicate(ndjson(INCIDENT[1:]), timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and len(alerts(out)) == 1, err
    assert err.count(b"\n") == 1 and b"cannot write" in err and b"goes on" in err, err


@pytest.mark.parametrize("option", ["--state", "--rule-stats"])
def test_a_file_in_an_input_or_rule_directory_under_a_name_its_walk_reads_is_refused_at_the_first_start(
        tmp_path, option):
    """``--input DIR --state DIR/state.json`` (or ``--rule DIR --state DIR/state.yml``): the first run went
    on and wrote the file there, and every restart was then refused (the file named as an input, or a
    rule: exit 2, a restart loop).  Refused from the start; a name the walk passes over is the user's."""
    logs, rules = tmp_path / "logs", tmp_path / "rules"
    (logs / "sub").mkdir(parents=True)
    rules.mkdir()
    (logs / "a.ndjson").write_bytes(ndjson(INCIDENT))
    (rules / "by.yml").write_text(BY_HOST)
    for reader, top, name in (("--input", logs, "state.json"), ("--input", logs, "sub/state.JSONL"),
                              ("--rule", rules, "state.yml")):
        result = run_cli(ARGS + ["--input", str(logs), "--rule", str(rules), option, str(top / name)])
        assert result.returncode == 2 and result.stdout == b"", result
        assert result.stderr.count(b"\n") == 1 and reader.encode() in result.stderr, result.stderr
        assert not (top / name).exists()
    assert run_cli(ARGS + ["--input", str(logs), "--rule", str(rules), option, str(logs / "state")]).returncode == 0


@pytest.mark.parametrize("option", ["--state", "--rule-stats"])
@pytest.mark.parametrize("name", ["state.json/", "new/", "state.json/."])
def test_a_file_name_that_ends_as_a_directory_is_a_usage_error(tmp_path, option, name):
    """``--state state.json/`` was written to ``state.json``, but read through the name as given: not a
    directory, so no state, and every restart began from nothing, exit 0, without a word."""
    (tmp_path / "state.json").write_bytes(b"")
    result = run_cli(ARGS + [option, str(tmp_path) + os.sep + name], ndjson(INCIDENT))
    assert result.returncode == 2 and result.stdout == b"", result
    assert result.stderr.count(b"\n") == 1 and b"not a file name" in result.stderr, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


@pytest.mark.parametrize("option", ["--state", "--rule-stats"])
def test_a_dash_for_a_file_to_replace_is_a_usage_error(tmp_path, option):
    """``--state -`` (or ``--rule-stats -``) wrote a file named ``-`` in the working directory, where every
    Unix tool reads ``-`` as standard output (which carries the stream here)."""
    result = subprocess.run(COMMAND + ARGS + [option, "-"], input=ndjson(INCIDENT), capture_output=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stdout == b"", result
    assert result.stderr == f"pipeshell-filter: error: {option} -: not a file name (standard output carries the " \
        "stream; name a file)\n".encode()
    assert os.listdir(tmp_path) == []


def test_state_options_are_checked(tmp_path):
    assert run_cli(["--state-reset"], b"").returncode == 2
    result = run_cli(["--state", str(tmp_path / "state.json"), "--state-interval", "-1"], b"")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1


# ---------------------------------------------------------------------------------------------
# the stop's alerts count as made only once the reader took them


def _stop_run(state_path, lines, take_the_stop):
    """One run with --state on ``lines`` (end of input: the stop), its stdout a pipe read by the
    test: every line the run passes on is read; the stop's alert only when ``take_the_stop``,
    else the reader closes the pipe with the alert still in it (Fluent Bit's exec input at its stop)."""
    process = subprocess.Popen(COMMAND + ["--emit", "all", "--state", str(state_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"".join(lines))
    process.stdin.close()
    taken = bytearray()
    while taken.count(b"\n") < len(lines):  # the events, each passed on: read a byte at a time, so that
        taken += os.read(process.stdout.fileno(), 1)  # nothing after them leaves the pipe
    if take_the_stop:
        taken += process.stdout.read()
    else:
        time.sleep(0.3)  # the alert is written into the pipe, and left there
        process.stdout.close()
    assert process.wait(30) == 0
    return bytes(taken), process.stderr.read().decode()


@pytest.mark.parametrize("take_the_stop", [True, False], ids=["taken", "left-in-the-pipe"])
def test_the_stops_alert_left_in_the_pipe_is_made_again_by_the_next_run(tmp_path, take_the_stop):
    state_path = tmp_path / "state.json"
    incident = [flat_event(10, "srv01", "server"), flat_event(20, "cli01", "client"),
                flat_event(30, "cli02", "client")] + [flat_event(40 + i, "ws04", "benign") for i in range(5)]
    first, stderr = _stop_run(state_path, ndjson(incident).splitlines(keepends=True), take_the_stop)
    assert len(alerts(first)) == (1 if take_the_stop else 0)
    assert ("kept in the state" in stderr) != take_the_stop, stderr
    later = run_cli(["--emit", "all", "--state", str(state_path)], ndjson([flat_event(4000, "ws04", "benign")]))
    assert later.returncode == 0, later.stderr
    again = alerts(later.stdout)
    if take_the_stop:
        assert again == []  # made once, taken once
    else:
        assert len(again) == 1 and sorted(again[0]["related"]["hosts"]) == ["cli01", "cli02", "srv01"]


def test_lines_passed_on_before_the_stop_that_never_reached_a_gone_reader_are_read_again(tmp_path):
    """A file's lines are passed on through a buffer, written at the stop: a reader gone by then never
    got them, nor the alert of the single-event rule among them.  The state saved was the one from
    before the stop's flush, which counted those lines as read: the next run read on past them, and
    they and that alert were lost for good."""
    source = tmp_path / "events.ndjson"
    source.write_bytes(ndjson([flat_event(seconds, "srv01", "server", record_id=seconds) for seconds in (1, 2, 3)]))
    args = ["--idle", "0", "--quiet", "--emit", "all", "--rule", str(_rule_file(tmp_path)),
            "--input", str(source), "--lateness", "3600"]
    whole = run_cli(args + ["--state", str(tmp_path / "whole.json")])
    # the lines, the single rule's alerts and the count's, made by the stop's flush
    assert len(alerts(whole.stdout)) == 4 and whole.stdout.count(b"\n") == 7
    path = str(tmp_path / "state.json")
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written
    try:
        first = subprocess.run(COMMAND + args + ["--state", path], stdout=writer, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(writer)
    assert first.returncode == 0, first.stderr
    again = run_cli(args + ["--state", path])
    assert again.returncode == 0, again.stderr
    assert again.stdout == whole.stdout


def _rule_file(tmp_path):
    """A count by host (its window held until the stop) and a single-event rule."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "single.yml").write_text(SINGLE)
    (folder / "by.yml").write_text(BY_HOST)
    return folder


def test_on_stop_keep_needs_a_state_file():
    result = run_cli(["--on-stop", "keep"])
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == ["pipeshell-filter: error: --on-stop needs --state: "
                                                   "here it would do nothing"]


@pytest.mark.parametrize("output", ["file", "pipe"])
def test_the_state_before_the_stops_flush_is_made_only_where_the_reader_can_leave_the_alerts(tmp_path, output):
    """A snapshot at the cap of held events takes seconds: the stop makes the one from before its
    flush only when the flush can alert and the output is a pipe, whose reader can go away with
    the alerts still in it (``Filter._pause``)."""
    incident = lines_of([(10, "srv01", "server", 4104, 1), (20, "cli01", "client", 4104, 2),
                         (30, "cli02", "client", 4104, 3)])
    with tempfile.TemporaryFile() as sink:
        reader, writer = os.pipe()
        stream_filter = new_filter(sink, 60, "alerts", str(tmp_path / "state.json"))
        if output == "pipe":
            stream_filter.output = Output(writer)
        snapshots = []
        real = stream_filter.engine.snapshot
        stream_filter.engine.snapshot = lambda: snapshots.append(1) or real()
        with tempfile.TemporaryFile() as source:
            source.write(b"".join(incident))
            source.seek(0)
            stream_filter.run(source.fileno(), live=False)
        assert stream_filter.engine.held() > 0
        taken = bytearray()

        def drain_all():  # every write the stop makes, to the end (one read got only the first under load)
            while True:
                data = os.read(reader, 1 << 20)
                if not data:
                    return
                taken.extend(data)
        drain = threading.Thread(target=drain_all)
        drain.start()
        stream_filter.finish()
        os.close(writer)
        drain.join(10)
        os.close(reader)
        sink.seek(0)
        written = bytes(taken) if output == "pipe" else sink.read()
    assert any(sorted(a["related"]["hosts"]) == ["cli01", "cli02", "srv01"] for a in alerts(written))  # the stop's
    assert len(snapshots) == (2 if output == "pipe" else 1)


@pytest.mark.parametrize("key, change", [
    ("seen", lambda seen: [[None, seen[0][1]]] + seen[1:]),  # a time that must be one, null
    ("consumed", lambda consumed: [[None, []]]),
    ("seq", lambda seq: [seq]),
    ("pending", lambda pending: [[1, 2, {"type": "sigma.detection"}]]),
    ("windows", lambda windows: [[None, None]]),
    ("early_done", lambda done: [[None, ["x"]]]),
    # these passed the restore and crashed the stream at the next event of the same time, every restart
    ("pending", lambda pending: [[pending[0][0], "x", pending[0][2]]] + pending[1:]),
    ("seen", lambda seen: [[seen[0][0], 5]] + seen[1:]),
    # an event that is not an object, where the saved form keeps an event's fields
    ("windows", lambda windows: [[1, "not an object"]]),
    ("pending", lambda pending: [[pending[0][0], 2, ["not", "an", "object"]]]),
    ("pending", lambda pending: [[pending[0][0], 2, dict(pending[0][2], terms=[-1])]]),
    # an event number twice, or past the counter: restored, then a crash when it left its window
    ("pending", lambda pending: pending + pending[:1]),
    ("seq", lambda seq: 0),
])
def test_a_damaged_correlation_state_is_refused_in_one_line(tmp_path, key, change):
    path = tmp_path / "state.json"
    assert run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[:2])).returncode == 0
    document = json.loads(path.read_bytes())
    [saved] = document["correlations"].values()
    saved[key] = change(saved.get(key) or [])
    path.write_text(json.dumps(document))
    refused = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[2:]))
    assert refused.returncode == 2 and b"Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.count(b"\n") == 1 and b"damaged" in refused.stderr, refused.stderr


def test_the_state_is_saved_through_a_link_and_never_through_a_link_left_as_its_temp_file(tmp_path):
    """A link at FILE.tmp made the filter overwrite what it pointed to (and two filters shared the
    temp name and renamed each other's away); a state path that is a link (a state kept on a
    mounted volume) was replaced by a plain file and its target never written again."""
    from pipeshell_filter.correlate.state import write_atomic
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "state.json.tmp").symlink_to(victim)
    volume = tmp_path / "volume"
    volume.mkdir()
    (tmp_path / "link.json").symlink_to(volume / "state.json")
    write_atomic(str(tmp_path / "state.json"), b"{}")
    write_atomic(str(tmp_path / "link.json"), b'{"a": 1}')
    assert victim.read_text() == "keep me" and (tmp_path / "state.json").read_bytes() == b"{}"
    assert (tmp_path / "link.json").is_symlink() and (volume / "state.json").read_bytes() == b'{"a": 1}'
    assert oct((volume / "state.json").stat().st_mode & 0o777) == "0o600"


@settings(max_examples=8, deadline=None)  # two runs of the CLI each
@given(st.lists(st.sampled_from(["state.json.bak", "state.json.tmp", "state.json.abcdefgh.tmpx", "p1.json.abcdefgh.tmp",
                                 "state.json.ABCDEFGH.tmp", "state.json.abcdefg.tmp", "xstate.json.abcdefgh.tmp",
                                 "state.json.abc-efgh.tmp"]), unique=True), st.integers(1, 4))
def test_a_snapshot_cut_by_kill_9_leaves_no_temp_file_behind_the_next_start(tmp_path_factory, others, killed):
    """kill -9 while a snapshot is written (measured: the flood's 40 MB snapshot, killed 3 times in 3) left
    its temp file beside the state, and nothing removed it: a restart loop (the OOM killer during a flood)
    filled the disk, and then no snapshot could be written.  The next start removes them, and nothing else."""
    folder = tmp_path_factory.mktemp("state")
    path = folder / "state.json"
    assert run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[:2])).returncode == 0
    for _ in range(killed):  # what write_atomic had written of the next snapshot when it was killed
        fd, _temp = tempfile.mkstemp(prefix="state.json.", suffix=".tmp", dir=folder)
        os.write(fd, path.read_bytes()[:100])
        os.close(fd)
    for name in others:
        (folder / name).write_text("not ours")
    rest = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[2:]))
    assert rest.returncode == 0 and len(alerts(rest.stdout)) == 1, rest.stderr
    assert sorted(os.listdir(folder)) == sorted(others + ["state.json", "state.json.lock"])


TWO_TERMS = """title: two terms
id: 5a0d3c3e-2f41-4c59-9d0e-3b7f6a1c2d4e
logsource: {{product: windows}}
detection:
  server: {{EventID: 4104}}
  client: {{EventID: 800}}
  timeframe: 5m
  condition: {}
"""


def test_a_legacy_rule_whose_terms_changed_places_discards_its_state_and_an_older_state_still_fits(tmp_path):
    """A legacy window join numbers its terms in its condition's order, and the saved state held only
    those numbers: after ``server and client`` became ``client and server`` a saved server event
    counted as a client one (a client event then alerted with no server in the window).  The terms'
    labels are in the state now; a state written before them is read as before."""
    path, rule = str(tmp_path / "state.json"), tmp_path / "two.yml"
    args = ARGS + ["--join", "window", "--rule", str(rule), "--state", path]
    rule.write_text(TWO_TERMS.format("server and client"))
    first = run_cli(args, ndjson(INCIDENT[:1]))  # the server event, held
    assert first.returncode == 0 and alerts(first.stdout) == []
    saved = json.loads(open(path, "rb").read())
    rule.write_text(TWO_TERMS.format("client and server"))
    swapped = run_cli(args, ndjson([flat_event(40, "cli02", "client", 4104, record_id=9)]))  # a second server
    assert swapped.returncode == 0 and alerts(swapped.stdout) == []
    assert b"discarded the saved state of 1 correlation" in swapped.stderr
    # the same state as an older build wrote it (no labels), the rule unchanged: taken back
    for correlation in saved["correlations"].values():
        del correlation["spec"]["labels"]
    open(path, "w").write(json.dumps(saved))
    rule.write_text(TWO_TERMS.format("server and client"))
    older = run_cli(args, ndjson(INCIDENT[1:2]))  # the client event completes it
    assert older.returncode == 0 and b"discarded" not in older.stderr
    assert [e["record_id"] for e in alerts(older.stdout)[0]["sigma"]["events"]] == [1, 2]


# A Sigma v1 collection: its rules share the global document's id, so each is numbered by its place in
# the file (``<id>#3``); the rules differ only in the EventID they select.
COLLECTION = """action: global
title: numbered rules
id: 33333333-4444-5555-6666-777777777777
logsource: {product: windows}
detection:
  condition: sel | count() by Computer >= 2
timeframe: 60s
"""


def collection_plans(event_ids) -> list:
    text = COLLECTION + "".join(f"---\ndetection: {{sel: {{EventID: {n}}}}}\n" for n in event_ids)
    return [compile_plan(rule) for rule in parse_rules(text, "collection.yml")]


def run_with_plans(plans, events, state_path) -> list:
    """One run of a fresh Filter with ``plans`` on ``events`` with ``--state``; its alert records."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = Filter(Engine(plans, RESOLVER, 0), Output(sink.fileno()), Diagnostics(io.StringIO()),
                               "alerts", clock=lambda: 0)
        state_file = StateFile(state_path, 0)
        stream_filter.keep_state(state_file)
        saved = state_file.load()
        if saved is not None:
            stream_filter.resume(saved)
        feed(stream_filter, b"".join(json.dumps(event).encode() + b"\n" for event in events))
        sink.seek(0)
        return alert_records(sink.read())


@given(st.permutations([4104, 4103, 800]),
       st.lists(st.tuples(st.integers(0, 100), st.sampled_from(["cli01", "cli02"]), st.sampled_from([4104, 4103, 800])),
                max_size=12),
       st.integers(0, 12))
def test_a_collection_reordered_between_runs_never_gives_one_rules_windows_to_another(tmp_path_factory, order,
                                                                                       raw, cut):
    """Reordered, a collection's rules swap their numbered ids, and a rule's saved windows went to the
    rule that took its id: it alerted on events it never matched (two 4104 events saved, then one 4103
    event made an alert of the 4103 rule over all three).  The state now names the rules' selections
    too, so such a window is discarded; every alert holds only events its own rule selects."""
    path = str(tmp_path_factory.mktemp("reordered") / "state.json")
    events = [flat_event(seconds, host, "benign", event_id, record_id=number)
              for number, (seconds, host, event_id) in enumerate(sorted(raw), 1)]
    first = run_with_plans(collection_plans([4104, 4103, 800]), events[:cut], path)
    plans = collection_plans(order)
    selects = {plan.rule.id: plan.rule.detection["sel"]["EventID"] for plan in plans}
    for record in run_with_plans(plans, events[cut:], path):
        assert {ref["event_id"] for ref in record["sigma"]["events"]} == {selects[record["rule"]["id"]]}, first


def test_a_second_process_on_the_same_state_file_waits_for_the_first_and_goes_on_from_its_state(tmp_path):
    """Two filters on one state file each wrote their own windows over the other's, the last one
    winning in silence (a reload that starts the new filter before the old one has gone): the second
    now waits for the first to end, says so, then takes its state back.  A signal ends the wait."""
    path = str(tmp_path / "state.json")
    whole = run_cli(ARGS, ndjson(INCIDENT))
    first = start(path)
    try:
        send_and_see(first, INCIDENT[:2])
        second = start(path)
        second.stdin.write(ndjson(INCIDENT[2:]))
        second.stdin.close()
        line = second.stderr.readline()  # said before it waits
        assert line.startswith(b"pipeshell-filter: state file ") and b"in use by another" in line
        time.sleep(0.5)
        assert second.poll() is None  # still waiting: the first holds the file
        third = start(path)
        assert b"in use by another" in third.stderr.readline()
        third.send_signal(signal.SIGTERM)  # ends its wait, and leaves the state alone
        assert third.wait(timeout=30) == 0
        first.stdin.close()  # end of input: a pause, the state written, the first ends
        assert first.wait(timeout=30) == 0
        out = second.stdout.read()
        second.wait(timeout=60)
    finally:
        for process in (first, second, third):
            process.kill()
    assert second.returncode == 0
    assert alerts(out) == alerts(whole.stdout)  # the incident the first saw half of, whole


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGINT], ids=lambda number: number.name)
def test_a_hang_up_or_ctrl_c_ends_the_wait_for_the_state_file_as_sigterm_does(tmp_path, stop, stop_signals_not_ignored):
    """SIGHUP, a stop everywhere else, killed the filter waiting for the lock (status 129): start-up
    left it its default action.  Nothing is read yet: the run ends with status 0, the state left alone."""
    path = str(tmp_path / "state.json")
    first = start(path)
    try:
        send_and_see(first, INCIDENT[:2])
        second = subprocess.Popen(COMMAND + ARGS + ["--state", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        assert b"in use by another" in second.stderr.readline()
        second.send_signal(stop)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0 and out == b"" and err == b"", (second.returncode, err)
        first.stdin.close()
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
        second.kill()
    assert json.load(open(path))["lines"] == 2


def test_snapshots_that_could_not_be_written_are_in_the_summary(tmp_path):
    """A snapshot that cannot be written (a full disk, the directory removed) is a diagnostic and the
    stream goes on; but the summary line, which counts the other problems, said nothing of them, even
    when the one at the end failed: the run exited 0 looking clean, and the next one started afresh."""
    folder = tmp_path / "gone"
    folder.mkdir()
    process = subprocess.Popen(COMMAND + ["--lateness", "0", "--idle", "0", "--emit", "all", "--state",
                                          str(folder / "state.json")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = half_incident_then(process, lambda _: shutil.rmtree(folder), timeout=60)
    assert process.returncode == 0, err
    said = err.decode().splitlines()
    assert said[0].endswith("state.json: cannot write it: No such file or directory; the stream goes on"), said
    failed = sum("cannot write it" in line for line in said)
    assert said[-1].endswith(f"; 2 lines; 2 matched; 0 alerts; {failed} state file problem(s)"), said


def test_a_lock_that_cannot_be_taken_is_said(tmp_path):
    """``FILE.lock`` that cannot be opened (a directory there, or a file another user left) or locked
    (a file system without locks): the run went on with no lock and said nothing, so a second filter
    started on the file wrote over the first one's state in silence.  Now one line says so."""
    path = tmp_path / "state.json"
    (tmp_path / "state.json.lock").mkdir()
    result = run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT))
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
    said = result.stderr.decode().splitlines()
    assert said == [f"pipeshell-filter: state file {path}: cannot lock {path}.lock (Is a directory): another "
                    "filter started on this file would not wait for this one"], said
    assert json.loads(path.read_bytes())["lines"] == 3  # the state itself is saved


def test_a_state_file_reset_cannot_remove_is_a_usage_error(tmp_path, monkeypatch):
    """``--state-reset`` on a file it cannot remove (a read-only file system) said nothing and went on:
    the file stayed, and the next run took the old state back.  Now one line and exit 2."""
    from pipeshell_filter.cli import UsageProblem, resume_state
    path = tmp_path / "state.json"
    assert run_cli(ARGS + ["--state", str(path)], ndjson(INCIDENT[:2])).returncode == 0
    kept = path.read_bytes()

    def read_only(target, *args, **kwargs):
        raise OSError(30, "Read-only file system", target)

    with open(os.devnull, "wb") as sink:
        monkeypatch.setattr(state_module.os, "unlink", read_only)
        with pytest.raises(UsageProblem, match=r"state\.json: --state-reset cannot remove it: Read-only file system$"):
            resume_state(new_filter(sink, 0, "alerts"), str(path), 0, True)
    assert path.read_bytes() == kept
    monkeypatch.undo()
    reset = run_cli(ARGS + ["--state", str(path), "--state-reset"], ndjson(INCIDENT[2:]))  # removable: removed
    assert reset.returncode == 0 and alerts(reset.stdout) == [] and json.loads(path.read_bytes())["lines"] == 1


def test_a_reset_through_a_link_discards_its_target_and_the_link_stays(tmp_path):
    """``--state-reset`` removed the link, not the state it pointed to: the next snapshot went into a
    plain file in its place (off the mounted volume), and the discarded state stayed on the volume,
    taken back by the next run that linked to it again."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "state.json").write_bytes(b'{"format": "%s", "version": 0}' % FORMAT.encode())
    link = tmp_path / "link.json"
    link.symlink_to(volume / "state.json")
    StateFile(str(link)).discard()
    assert link.is_symlink() and not (volume / "state.json").exists()
    assert StateFile(str(link)).load() is None
    reset = run_cli(ARGS + ["--state", str(link), "--state-reset"], ndjson(INCIDENT[:2]))
    assert reset.returncode == 0, reset.stderr
    assert link.is_symlink() and json.loads((volume / "state.json").read_bytes())["lines"] == 2


def _incident_events(alerts_found):
    """The events of the alerts dated now (not those of the clocks in the future), without line numbers."""
    return [[{k: v for k, v in e.items() if k != "line"} for e in a["sigma"]["events"]]
            for a in alerts_found if a["@timestamp"].startswith("2021")]


@pytest.mark.parametrize("future", [
    [(3e9, "evil1", "client", 4104), (3e9 + 1, "evil2", "client", 4104)],  # moved the time
    [(3e9, "evil1", "server", 4104), (3e9 + 30, "evil2", "client", 800), (3e9 + 60, "evil3", "client", 4103),
     (3e9 + 900, "evil4", "benign", 4104)],  # and alerted: an episode consumed in the future
])
def test_a_saved_watermark_in_the_future_is_not_believed_on_live_input(tmp_path, future):
    """A state saved by a run on a file (or an older build) that believed two clocks in the future held
    a watermark there; restored on live input, every later event was late: 0 alerts for the incident,
    and for every run after it.  It is not believed now (one line says so), and the run alerts as
    one without the state."""
    path, state = tmp_path / "future.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(flat_event(*event) for event in future))
    first = run_cli(["--state", state, "--input", str(path), "--lateness", "0"])
    assert first.returncode == 0, first.stderr
    for offset in (0, 3600):  # and the run after it, from the state this one saved
        incident = ndjson([flat_event(offset + seconds, *rest) for seconds, *rest in
                           [(0, "srv01", "server", 4104), (30, "cli01", "client", 800),
                            (60, "cli02", "client", 4103), (700, "ws04", "benign", 4104)]])
        expected = _incident_events(alerts(run_cli(["--lateness", "0"], incident).stdout))
        live = run_cli(["--state", state, "--lateness", "0"], incident)
        assert live.returncode == 0, live.stderr
        assert len(expected) == 1 and _incident_events(alerts(live.stdout)) == expected
        assert (b"saved state's time is more than --max-skew past the wall clock" in live.stderr) == (offset == 0)


FEW_LOGONS = """title: Few logons
id: few-logons
detection:
  sel:
    EventID: 4624
  condition: sel | count() by User < 3
  timeframe: 1m
"""


def test_a_pause_judges_no_window_of_an_upper_bound_that_the_rest_of_the_stream_could_change(tmp_path):
    """``count() < 3``: a window starts at a user's earliest event and is judged once the minute after
    it is over.  End of input with --state is a pause: amy's window from 0 s, holding two so far, must
    not alert then (the next run brings her third event at 20 s); the next run judges it when the time
    passes 60 s (three: no), and the one from 70 s at 130 s (one: the alert), as one run does."""
    rules = tmp_path / "few.yml"
    rules.write_text(FEW_LOGONS)

    def logon(seconds, user, host):
        return {"@timestamp": f"2026-01-05T10:{seconds // 60:02d}:{seconds % 60:02d}Z", "EventID": 4624,
                "User": user, "Computer": host}

    first = [logon(0, "amy", "h1"), logon(10, "amy", "h2")]
    second = [logon(20, "amy", "h1"), logon(70, "amy", "h2"), logon(200, "zed", "h1"), logon(201, "zed", "h2")]
    state = str(tmp_path / "state.json")
    args = ["--rule", str(rules), "--lateness", "0", "--quiet", "--state", state]

    def alerted(result):
        assert result.returncode == 0, result.stderr
        return [(a["@timestamp"], a["sigma"]["correlation"]["group"] if "correlation" in a["sigma"] else
                 a["sigma"]["aggregation"]["group"], len(a["sigma"]["events"])) for a in alerts(result.stdout)]

    assert alerted(run_cli(args, ndjson(first))) == []
    resumed = alerted(run_cli(args, ndjson(second)))
    whole = alerted(run_cli(args[:-2], ndjson(first + second)))
    assert resumed == whole[:1] and len(resumed) == 1 and resumed[0][2] == 1
    assert resumed[0][0].startswith("2026-01-05T10:02:10")
    assert len(whole) == 2  # zed's window closes at the end of input without --state: a flush


FEW_BY_HOST = """title: Few pipe events on one host
id: few-by-host
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() by Computer <= 2
  timeframe: 2m
"""


@given(cut_streams(), st.sampled_from([0, 30, 400]), st.sampled_from(["end", "stop", "stop-keep"]))
def test_an_upper_bound_cut_anywhere_alerts_as_one_run_with_state(tmp_path_factory, case, lateness, how):
    """``count() <= 2``: a window is judged once its timespan is over, which a pause (or a stop's flush)
    with --state never decides, so a pause alerts on nothing: cut at any line and restored, the runs
    write, byte for byte, what one run with --state writes."""
    events, cuts, without_ids = case
    lines = lines_of(events, without_ids)
    plans = [compile_plan(parse_rule(FEW_BY_HOST, "few.yml"))]
    folder = tmp_path_factory.mktemp("state")
    whole, at_end = run_once(b"".join(lines), lateness, "alerts", str(folder / "whole.json"), plans=plans)
    assert at_end == 0
    path, outputs = str(folder / "state.json"), []
    bounds = [0] + cuts + [len(lines)]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        part = b"".join(lines[start:end])
        if how != "end" and i < len(bounds) - 2:
            output, at_end = run_once(None, lateness, "alerts", path, len(part), part + b"".join(lines[end:]),
                                      keep_open=how == "stop-keep", plans=plans)
        else:
            output, at_end = run_once(part, lateness, "alerts", path, plans=plans)
        assert at_end == 0
        outputs.append(output)
    assert b"".join(outputs) == whole
    event(f"alerts: {bool(alert_records(whole))}")


@pytest.mark.parametrize("key, value, good", [("bus_subject", "pipeshell.records.1", True),
                                               ("bus_subject", 1, False), ("bus_subject", "", False),
                                               ("bus_subject", "x" * 1025, False),
                                               ("bus_stream", "2026-12-05T08:14:04.397659+00:00", True),
                                               ("bus_stream", 5, False), ("bus_stream", "x" * 65, False)])
def test_the_bus_subject_and_streams_creation_time_in_the_state_are_checked(key, value, good):
    """A correlator on the bus saves, beside its position there, the subject it reads (its partition, its
    prefix) and when its stream was made (a stream made anew numbers from 1 again); a state file with
    anything else there is refused in one line."""
    document = {"format": FORMAT, "version": VERSION, "lines": 3, "correlations": {}, "bus_seq": 8, key: value}
    data = json.dumps(document).encode()
    if good:
        assert state_module.decode(data, "s")[key] == value
    else:
        with pytest.raises(state_module.StateError, match=f"damaged state file \\({key}\\)"):
            state_module.decode(data, "s")
