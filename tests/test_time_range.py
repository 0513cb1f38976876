"""``--from``/``--to``: only events whose own time is in [from, to) are detected.

The oracle: an event outside the range is an event that matches nothing.  So a run with a
range must write what a run without one writes over the same stream with each event outside
the range made benign (same time, host and line), byte for byte, out of order too, with
worker processes or without; and it counts each matched event it left out.
"""

import datetime
import io
import json
import tempfile

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import resolvers
from clitools import alerts, ndjson, run_cli_here
from eventgen import BASE, flat_event, iso
from pipeshell_filter.cli import build_prefilter
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver
from pipeshell_filter.events.timeparse import NS, parse_instant
from pipeshell_filter.io import parallel
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule

RULES = [
    {"title": "server block", "id": "server-block", "detection": {
        "s": {"EventID": 4104, "ScriptBlockText|contains": "NamedPipeServerStream"}, "condition": "s"}},
    {"title": "client anywhere", "id": "client-any", "detection": {"k": ["NamedPipeClientStream"], "condition": "k"}},
]


def plans():
    return [compile_plan(parse_rule(yaml.safe_dump(rule), f"{rule['id']}.yml")) for rule in RULES] + \
        [compile_plan(load_rule(BUILTIN_RULE, builtin=True))]


def run(data: bytes, emit: str, between=None, workers: int = 0) -> tuple:
    """(output, lines, matched, outside) of one in-process run over ``data`` as a regular file (with
    ``workers`` detecting processes, in tiny chunks)."""
    rule_plans = plans()
    scanner, index = build_prefilter(rule_plans, "auto")
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        source.seek(0)
        engine = Engine(rule_plans, FieldResolver(resolvers.PROFILES), 60 * NS, between=between)
        stream_filter = Filter(engine, Output(sink.fileno()), Diagnostics(io.StringIO()), emit, prefilter=scanner,
                               index=index, clock=lambda: 0, workers=workers)
        stream_filter.parallel_min, stream_filter.parallel_chunk = 0, 512
        stream_filter.run(source.fileno(), live=False, block_size=1 << 12)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), stream_filter.lines, engine.stats["matched"], engine.detector.outside


@st.composite
def streams(draw):
    """Events a few seconds apart, some out of order (within and beyond the lateness), and a range
    (``(first, end)`` in ns, either None), its bounds now and then an event's own time."""
    count = draw(st.integers(1, 40))
    seconds, events = 0.0, []
    for _ in range(count):
        seconds += draw(st.floats(0, 90))
        at = seconds - draw(st.sampled_from([0, 0, 0, 5, 120]))  # now and then late, or beyond the lateness
        host = draw(st.sampled_from(["srv01", "cli01", "cli02", "cli03"]))
        kind = draw(st.sampled_from(["server", "client", "benign", "both"]))
        events.append((at, host, kind, draw(st.sampled_from([4104, 4103, 800]))))
    times = [event_time(at) for at, *_ in events]
    bound = st.one_of(st.sampled_from(times), st.floats(-10, seconds + 10).map(event_time))
    first, end = sorted([draw(bound), draw(bound)])
    first = draw(st.sampled_from([None, first]))
    end = draw(st.sampled_from([None, end if end != first else end + 1]))
    return events, (first, end)


def event_time(seconds: float) -> int:
    """The time ``flat_event(seconds, ...)`` writes, in ns, read from its text (to the microsecond)."""
    moment = datetime.datetime.fromisoformat(iso(seconds).replace("Z", "+00:00"))
    return int(moment.timestamp()) * NS + moment.microsecond * 1000


def _inside(at: float, between: tuple) -> bool:
    first, end = between
    return (first is None or event_time(at) >= first) and (end is None or event_time(at) < end)


@given(streams(), st.sampled_from(["alerts", "matches", "all"]))
@settings(max_examples=60, deadline=None)
def test_an_event_outside_the_range_is_one_that_matches_nothing(stream, emit):
    events, between = stream
    # each line its own (``n``): the oracle's benign twins are mapped back to their lines by their text
    lines = [json.dumps({**flat_event(at, host, kind, eid), "n": n}).encode() for n, (at, host, kind, eid)
             in enumerate(events)]
    benign = [json.dumps({**flat_event(at, host, "benign", eid), "n": n}).encode() for n, (at, host, kind, eid)
              in enumerate(events)]
    inside = [_inside(at, between) for at, *_ in events]
    oracle_input = b"".join((line if keep else quiet) + b"\n" for line, quiet, keep in zip(lines, benign, inside))
    expected, count, matched, none_outside = run(oracle_input, emit)
    assert none_outside == 0
    between = None if between == (None, None) else between
    found, found_count, found_matched, outside = run(b"".join(line + b"\n" for line in lines), emit, between)
    if emit == "all":  # the events left out go on as they came; the oracle's are their benign twins
        back = {quiet: line for line, quiet, keep in zip(lines, benign, inside) if not keep}
        expected = b"".join(back.get(line, line) + b"\n" for line in expected.splitlines())
    assert found == expected and found_count == count and found_matched == matched
    assert outside == (sum(kind != "benign" for (_, _, kind, _), keep in zip(events, inside) if not keep)
                       if between is not None else 0)


@pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")
@given(streams(), st.sampled_from(["alerts", "all"]), st.integers(1, 2))
@settings(max_examples=20, deadline=None)  # forks workers
def test_workers_leave_out_and_count_what_one_process_does(stream, emit, workers):
    events, between = stream
    data = b"".join(json.dumps(flat_event(at, host, kind, eid)).encode() + b"\n" for at, host, kind, eid in events)
    assert run(data, emit, between, workers) == run(data, emit, between)


def test_the_range_is_given_as_people_write_times():
    assert parse_instant("2026-11-02") == parse_instant("2026-11-02T00:00:00Z")
    assert parse_instant(" 2026-11-02 08:00:00 ") == parse_instant("2026-11-02T08:00:00Z")  # zoneless: UTC
    assert parse_instant("2026-11-02T10:00:00+02:00") == parse_instant("2026-11-02T08:00:00Z")
    assert parse_instant("1793606400") == parse_instant("2026-11-02T08:00:00Z")
    assert parse_instant("1793606400.25") == parse_instant("2026-11-02T08:00:00.25Z")
    assert parse_instant("1793606400250") == parse_instant("2026-11-02T08:00:00.25Z")  # milliseconds
    for bad in ("", "yesterday", "2026-13-01", "2026-11-02T25:00:00Z", "1e9", "-5", "２０２６-11-02", "1" * 30):
        assert parse_instant(bad) is None, bad


@pytest.mark.parametrize("args, says", [
    (["--from", "soon"], "--from 'soon': a time as RFC 3339"),
    (["--to", "2026-02-30"], "--to '2026-02-30': a time"),
    (["--to", "253402300800"], "--to '253402300800': a time"),  # past year 9999 in seconds: was 1978 in ms
    (["--from", "2026-11-02", "--to", "2026-11-02"], "is not before --to"),
    (["--from", "2026-11-03", "--to", "2026-11-02"], "is not before --to"),
])
def test_a_bad_range_is_a_usage_error(args, says):
    result = run_cli_here(args, b"")
    assert result.returncode == 2 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeshell-filter: error: ") and says in lines[0]


INCIDENT = [flat_event(0, "srv01", "server"), flat_event(10, "cli01", "client", 4103),
            flat_event(20, "cli02", "client", 800)]


def test_the_summary_counts_what_the_range_left_out_and_an_untimed_event_is_outside():
    untimed = dict(flat_event(30, "cli03", "client"))
    del untimed["@timestamp"]
    data = ndjson(INCIDENT + [untimed])
    result = run_cli_here(["--from", BASE.strftime("%Y-%m-%dT%H:%M:05Z")], data)
    assert result.returncode == 0 and alerts(result.stdout) == []  # the server's event is before the range
    assert result.stderr.decode().endswith("; 2 matched; 0 alerts; 2 matched events outside --from/--to\n")
    whole = run_cli_here(["--from", "2000-01-01"], ndjson(INCIDENT))
    assert len(alerts(whole.stdout)) == 1 and "; 0 matched events outside --from/--to" in whole.stderr.decode()
    counted = run_cli_here(["--to", BASE.strftime("%Y-%m-%dT%H:%M:15Z"), "--stats-interval", "3600"], data)
    stats = [record for record in map(json.loads, counted.stdout.splitlines())
             if record["event"]["kind"] == "metric"]
    assert [(s["pipeshell"]["matched"], s["pipeshell"]["outside_range"]) for s in stats] == [(2, 2)]


def test_a_correlate_stage_leaves_out_the_detections_outside_its_range():
    rules = []
    for rule in RULES:
        rules += ["--rule", f"{rule['id']}.yml"]
    with tempfile.TemporaryDirectory() as directory:
        for rule in RULES:
            with open(f"{directory}/{rule['id']}.yml", "w") as handle:
                yaml.safe_dump(rule, handle)
        rules = ["--rule", directory]
        data = ndjson(INCIDENT + [flat_event(400, "srv01", "server")])
        matched = run_cli_here(rules + ["--stage", "match", "--heartbeat", "0"], data)
        assert matched.returncode == 0
        bounds = ["--from", BASE.strftime("%Y-%m-%dT%H:%M:05Z"), "--to", BASE.strftime("%Y-%m-%dT%H:05:00Z")]
        one_stage = run_cli_here(rules + bounds, data)
        two_stages = run_cli_here(rules + ["--stage", "correlate"] + bounds, matched.stdout)
    ids = lambda result: sorted((a["rule"]["id"], a["sigma"]["events"][0]["@timestamp"])
                                for a in alerts(result.stdout))
    assert ids(one_stage) == ids(two_stages) == [("client-any", "2021-06-03T13:00:10Z"),
                                                 ("client-any", "2021-06-03T13:00:20Z")]
    assert two_stages.stderr.decode().endswith("2 detections outside --from/--to\n")


def test_explain_says_what_the_range_left_out(tmp_path):
    events = tmp_path / "incident.ndjson"
    events.write_bytes(ndjson(INCIDENT))
    start = BASE.strftime("%Y-%m-%dT%H:%M:05Z")
    result = run_cli_here(["explain", "--events", str(events), "--from", start])
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert f"range     only events from {start} are detected (--from/--to): 1 matched event outside it" in text
    assert "did not fire" in text
    whole = run_cli_here(["explain", "--events", str(events), "--to", "2100-01-01"]).stdout.decode()
    assert "before 2100-01-01T00:00:00Z are detected (--from/--to): 0 matched events" in whole
    assert "did not fire" not in whole


BY_HOST = {"title": "three on a host", "id": "by-host", "detection": {
    "s": {"ScriptBlockText|contains": "NamedPipe"}, "condition": "s | count() by Computer >= 3"}, "timeframe": "2m"}


@st.composite
def streams_with_far_lines(draw):
    """Events in order on two hosts (3 s apart or so), with lines dated far outside the range, after
    --to or before --from, matching or not, put anywhere: none of them is one the range lets in.  Each
    has a record id of its own: two equal lines are one event to a correlate stage (sent again)."""
    count = draw(st.integers(3, 60))
    seconds, events = 0, []
    for _ in range(count):
        seconds += draw(st.integers(0, 6))
        events.append(flat_event(seconds, draw(st.sampled_from("ab")), draw(st.sampled_from(["server", "benign"])),
                                 record_id=len(events)))
    first, end = -1, seconds + 1  # the range holds every event above
    for _ in range(draw(st.integers(1, 4))):
        far = draw(st.sampled_from([end + 100_000, end + 86_400 * 30, first - 100_000]))
        at = draw(st.integers(0, len(events)))
        events.insert(at, flat_event(far + draw(st.integers(0, 5)), draw(st.sampled_from("ab")),
                                     draw(st.sampled_from(["server", "benign"])), record_id=-len(events)))
    return ndjson(events), ["--from", iso(first), "--to", iso(end)]


@given(streams_with_far_lines(), st.sampled_from([[], ["--no-prefilter"]]), st.sampled_from(["5", "1"]))
@settings(max_examples=40, deadline=None)
def test_a_line_outside_the_range_moves_no_heartbeat(stream, prefilter, heartbeat):
    """A match stage's heartbeats carry no time from a line outside --from/--to, matched or not, as one
    process takes none from it: two lines dated a day past --to in the middle of a stream made the
    heartbeats vouch for that day, and half the correlation's events of the rest came late to the
    correlate stage (16 alerts where one process gave 32; with --no-prefilter, other numbers)."""
    data, bounds = stream
    with tempfile.TemporaryDirectory() as directory:
        with open(f"{directory}/by-host.yml", "w") as handle:
            yaml.safe_dump(BY_HOST, handle)
        rules = ["--rule", directory, "--quiet"] + bounds
        one_stage = run_cli_here(rules + prefilter, data)
        matched = run_cli_here(rules + prefilter + ["--stage", "match", "--heartbeat", heartbeat], data)
        two_stages = run_cli_here(rules + ["--stage", "correlate"], matched.stdout)
    for result in (one_stage, matched, two_stages):
        assert result.returncode == 0, result.stderr
    assert two_stages.stdout == one_stage.stdout
