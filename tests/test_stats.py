"""``--stats-interval``: a periodic stats record a pipeline can route, naming sources with a wrong clock."""

import io
import itertools
import json
import subprocess
import time

from hypothesis import given, settings

from clitools import COMMAND, alerts, ndjson, run_cli, run_cli_here
from eventgen import evtx_event, flat_event, raw_events
import resolvers
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver
from pipeshell_filter.io import parallel
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule
from test_clock_defence import INCIDENT, YEAR_2099
from test_stages import BY_HOST, SINGLE


def stats_records(stdout: bytes) -> list:
    found = []
    for line in stdout.splitlines():
        record = json.loads(line)
        if record.get("event", {}).get("kind") == "metric":
            found.append(record)
    return found


def test_no_stats_record_unless_asked():
    result = run_cli([], ndjson(INCIDENT))
    assert result.returncode == 0 and stats_records(result.stdout) == []


def test_the_last_stats_record_counts_the_whole_run_after_its_last_alert():
    benign = [evtx_event(10, "cli03", "benign", 4104, 9)]
    result = run_cli(["--stats-interval", "3600", "--emit", "all"], ndjson(INCIDENT + benign))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    last = json.loads(lines[-1])
    assert last["event"]["dataset"] == "pipeshell.stats"
    stats = last["pipeshell"]
    assert (stats["lines"], stats["matched"], stats["alerts"]) == (4, 3, 1)
    assert stats["held"] == 0 and stats["skewed_sources"] == [] and stats["diagnostics"] == {}
    assert len(alerts(result.stdout)) == 1 and len(lines) == 4 + 1 + 1  # every line, the alert, the stats


def test_diagnostics_and_a_skewed_source_are_in_the_stats_record():
    future = flat_event(YEAR_2099, "broken", "server", 4104)
    result = run_cli(["--stats-interval", "3600"], ndjson([future] + INCIDENT) + b"not json\n")
    stats = stats_records(result.stdout)[-1]["pipeshell"]
    assert stats["diagnostics"] == {"invalid_json": 1, "skewed_source": 1}
    assert stats["skewed_sources"] == [{"source": "broken", "clock": "ahead"}]
    assert stats["skewed_sources_total"] == 1


def test_live_input_gets_stats_records_while_it_waits():
    process = subprocess.Popen(COMMAND + ["--stats-interval", "0.3", "--lateness", "2", "--idle", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(ndjson([flat_event(YEAR_2099, "broken", "server", 4104)] + INCIDENT))
        process.stdin.flush()
        seen, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:  # the input stays open: records come from the idle timer
            record = json.loads(process.stdout.readline())
            seen.append(record["event"]["kind"])
            if record["event"]["kind"] == "metric" and record["pipeshell"]["skewed_sources"] and "alert" in seen:
                break
        assert "alert" in seen and seen[-1] == "metric", seen
        assert record["pipeshell"]["skewed_sources"] == [{"source": "broken", "clock": "ahead"}]
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def test_a_bad_interval_is_a_usage_error():
    result = run_cli(["--stats-interval", "-1"], b"")
    assert result.returncode == 2 and b"--stats-interval" in result.stderr and b"Traceback" not in result.stderr


def test_in_wrap_mode_a_big_stats_record_stays_a_metric_and_is_no_input_problem():
    """Ten sources an hour behind with 500-character names: the record went over
    --max-record-bytes, was cut into a pipeline_error record and counted as a too-long input line."""
    events = [{"@timestamp": f"2024-01-01T01:00:0{i}Z", "EventID": 4104, "Computer": f"base{i % 3}",
               "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream"} for i in range(4)]
    events += [{"@timestamp": f"2024-01-01T00:00:0{i}Z", "EventID": 4104, "Computer": f"h{i}" + "x" * 500,
                "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream"} for i in range(10)]
    result = run_cli(["--emit", "all", "--non-json", "wrap", "--max-record-bytes", "4096", "--stats-interval", "3600"],
                     ndjson(events))
    assert result.returncode == 0 and b"too long" not in result.stderr, result.stderr
    (record,) = stats_records(result.stdout)
    assert record["pipeshell"]["skewed_sources_total"] == 10
    assert record["pipeshell"]["diagnostics"].get("too_long") is None
    assert all(len(line) <= 4096 for line in result.stdout.splitlines())


def test_a_stats_record_made_smaller_says_so_in_its_own_member():
    """Over --max-record-bytes, a stats record is made smaller as an alert is; it said so with a top-level
    sigma member, which is what marks an enriched event (an event some rule matched) to whatever routes them."""
    events = [{"@timestamp": f"2024-01-01T01:00:0{i}Z", "EventID": 4104, "Computer": f"base{i % 3}",
               "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream"} for i in range(4)]
    events += [{"@timestamp": "2024-01-01T00:00:00Z", "EventID": 4104, "Computer": f"h{i:02d}" + "x" * 500,
                "ScriptBlockText": "System.IO.Pipes.NamedPipeServerStream"} for i in range(20)]
    result = run_cli(["--non-json", "wrap", "--max-record-bytes", "4096", "--stats-interval", "3600"], ndjson(events))
    assert result.returncode == 0, result.stderr
    (record,) = stats_records(result.stdout)
    assert len(json.dumps(record)) <= 4096 and record["pipeshell"]["skewed_sources_total"] == 20
    assert len(record["pipeshell"]["skewed_sources"]) < 20 and record["pipeshell"]["truncated"] is True
    assert "sigma" not in record


def test_a_match_stages_stats_record_is_passed_on_by_the_correlate_stage_it_feeds():
    """``--stage match | --stage correlate``, both with --stats-interval: the match stage's record was
    taken for a bad Detection record (a diagnostic, and lost to the SIEM)."""
    matched = run_cli(["--stage", "match", "--stats-interval", "3600"], ndjson(INCIDENT))
    assert matched.returncode == 0, matched.stderr
    [upstream] = stats_records(matched.stdout)
    assert upstream["pipeshell"]["stage"] == "match" and upstream["pipeshell"]["matched"] == 3
    result = run_cli(["--stage", "correlate", "--stats-interval", "3600"], matched.stdout)
    assert result.returncode == 0, result.stderr
    assert [r["pipeshell"]["stage"] for r in stats_records(result.stdout)] == ["match", "correlate"]
    assert stats_records(result.stdout)[0] == upstream and len(alerts(result.stdout)) == 1
    assert b"not a Detection record" not in result.stderr
    assert b"heartbeats, 1 stats record passed on)" in result.stderr
    assert stats_records(result.stdout)[1]["pipeshell"]["diagnostics"] == {}


def test_a_line_shaped_as_a_stats_record_with_a_type_or_sigma_is_not_passed_on_by_a_correlate_stage():
    shaped = {"event": {"kind": "metric", "dataset": "pipeshell.stats"}, "pipeshell": {}}
    lines = [dict(shaped, type="sigma.heartbeat"), dict(shaped, sigma={"rule": {"id": "x"}}), shaped]
    result = run_cli(["--stage", "correlate"], ndjson(lines))
    assert result.returncode == 0 and [json.loads(line) for line in result.stdout.splitlines()] == [shaped]
    assert result.stderr.count(b": not a Detection record: ") == 2, result.stderr


def test_a_file_read_by_worker_processes_gets_stats_records_as_it_goes(tmp_path):
    """The bulk of a regular file is handed over by worker processes (``--workers``): a stats record still
    comes every interval, as when the filter reads the file alone (it came only at the end)."""
    if not parallel.available():
        return
    plan = compile_plan(load_rule(BUILTIN_RULE, builtin=True))
    source = tmp_path / "events.ndjson"
    source.write_bytes(ndjson([flat_event(seconds, f"h{seconds % 7}", "benign") for seconds in range(300)]))
    counted = {}
    for workers in (0, 2):
        with open(source, "rb") as events, open(tmp_path / f"out-{workers}", "w+b") as sink:
            stream_filter = Filter(Engine([plan], FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                                   Diagnostics(io.StringIO()), "alerts", clock=lambda: 0, workers=workers)
            stream_filter.parallel_min, stream_filter.parallel_chunk = 0, 1024
            ticks = itertools.count()  # a clock one second on at each look: a record due at each check
            stream_filter.keep_stats(1, lambda reading=stream_filter: {"event": {"kind": "metric"},
                                                                       "pipeshell": {"lines": reading.lines}},
                                     clock=lambda: next(ticks))
            stream_filter.run(events.fileno(), live=False, block_size=1024, max_line=4096)
            stream_filter.finish()
            sink.seek(0)
            counted[workers] = [record["pipeshell"]["lines"] for record in stats_records(sink.read())]
    for workers, lines in counted.items():
        assert lines[-1] == 300 and len(lines) > 3 and lines == sorted(lines), (workers, lines)


def test_several_input_files_get_stats_records_as_they_are_read(tmp_path, monkeypatch):
    """``--input`` twice (files merged by time, read line by line): a stats record every interval, not only
    at the end."""
    keep_stats, ticks = Filter.keep_stats, itertools.count()  # one second on at each look: always due
    monkeypatch.setattr(Filter, "keep_stats", lambda self, interval, make_record:
                        keep_stats(self, interval, make_record, lambda: next(ticks)))
    paths = []
    for name, first in (("a.ndjson", 0), ("b.ndjson", 1)):
        paths += ["--input", str(tmp_path / name)]
        (tmp_path / name).write_bytes(ndjson([flat_event(seconds, "h", "benign") for seconds in range(first, 40, 2)]))
    result = run_cli_here(paths + ["--stats-interval", "1", "--quiet"])
    assert result.returncode == 0, result.stderr
    lines = [record["pipeshell"]["lines"] for record in stats_records(result.stdout)]
    assert len(lines) > 3 and lines == sorted(lines) and lines[-1] == 40, lines


def test_the_summary_counts_a_source_behind_in_two_correlations_once(tmp_path):
    """A source behind is reported once per correlation its events came too late to (two lines on stderr),
    and is one source: the summary line says so, as the stats record's ``skewed_sources_total`` does."""
    rule = tmp_path / "single.yml"
    rule.write_text(SINGLE)
    for name, count in (("two.yml", 2), ("three.yml", 3)):
        (tmp_path / name).write_text(f"title: {count} on one host\nid: per-host-{count}\ncorrelation:\n"
                                     "  type: event_count\n  rules: [single-4104]\n  group-by: [Computer]\n"
                                     f"  timespan: 2m\n  condition: {{gte: {count}}}\nlevel: high\n")
    events = [flat_event(seconds + offset, host, "server") for seconds in range(0, 600, 10)
              for offset, host in ((0, "a"), (1, "b"))] + [flat_event(5, "late-host", "server")]
    rules = ["--rule", str(rule), "--rule", str(tmp_path / "two.yml"), "--rule", str(tmp_path / "three.yml")]
    result = run_cli_here(rules + ["--stats-interval", "3600"], ndjson(events))
    assert result.returncode == 0, result.stderr
    said = result.stderr.decode().splitlines()
    assert sum("'late-host' is behind" in line for line in said) == 2
    assert stats_records(result.stdout)[-1]["pipeshell"]["skewed_sources_total"] == 1
    assert "; 1 source(s) with a wrong clock" in said[-1], said[-1]


def test_the_summary_line_says_one_of_each_count_in_the_singular():
    """One line, one Detection, one heartbeat: "1 line", not "1 lines" (as "1 alert" and "1 rule" were)."""
    result = run_cli_here([], ndjson([flat_event(10, "cli03", "benign")]))
    assert result.stderr.decode().splitlines()[-1] == "pipeshell-filter: 1 rule; 1 line; 0 matched; 0 alerts"
    matched = run_cli_here(["--stage", "match", "--heartbeat", "3600"], ndjson(INCIDENT[:1]))
    assert matched.returncode == 0, matched.stderr
    [detection, heartbeat] = [line for line in matched.stdout.splitlines() if b'"sigma.heartbeat"' in line
                              or b'"sigma.detection"' in line][:2]
    correlated = run_cli_here(["--stage", "correlate"], detection + b"\n" + heartbeat + b"\n")
    assert correlated.stderr.decode().splitlines()[-1].startswith(
        "pipeshell-filter: 1 rule; 2 lines (1 detection, 1 heartbeat); "), correlated.stderr


def test_a_matched_event_without_a_time_is_left_out_of_correlation_not_skipped(tmp_path):
    """A matched event without a time alerts for a rule on its own and is enriched: only the correlation
    leaves it out.  The summary listed it among the skipped lines ("skipped: 1 no event time"), beside
    the alert it made; the stats record counts it as the diagnostic kind it is."""
    (tmp_path / "single.yml").write_text(SINGLE)
    (tmp_path / "by.yml").write_text(BY_HOST)
    timeless = flat_event(0, "cli01", "server", 4104)
    del timeless["@timestamp"]
    rules = ["--rule", str(tmp_path / "single.yml"), "--rule", str(tmp_path / "by.yml")]
    result = run_cli_here(rules + ["--stats-interval", "3600"], ndjson([timeless]))
    assert len(alerts(result.stdout)) == 1 and stats_records(result.stdout)[-1]["pipeshell"]["diagnostics"] == \
        {"no_time": 1}
    summary = result.stderr.decode().splitlines()[-1]
    assert "skipped" not in summary and summary.endswith(
        "; 1 line; 1 matched; 1 alert; 1 matched event(s) without an event time left out of correlation"), summary
    matched = run_cli_here(rules + ["--stage", "match"], ndjson([timeless]))
    correlated = run_cli_here(rules + ["--stage", "correlate"], matched.stdout)
    summary = correlated.stderr.decode().splitlines()[-1]
    assert len(alerts(correlated.stdout)) == 1 and "skipped" not in summary and summary.endswith(
        "; 1 alert; 1 Detection(s) without an event time left out of correlation"), summary


def _per_host(count: int) -> str:
    return (f"title: {count} on one host\nid: per-host-{count}\ncorrelation:\n  type: event_count\n"
            f"  rules: [single-4104]\n  group-by: [Computer]\n  timespan: 2m\n  condition: {{gte: {count}}}\n"
            "level: high\n")


@settings(max_examples=25, deadline=None)
@given(raw_events(max_size=25))
def test_a_late_event_counts_once_however_many_correlations_it_feeds(tmp_path_factory, events):
    """``late`` and ``late_dropped`` count events: a second correlation over the same rule changes neither.
    One late event fed to two correlations said "2 late", more late events than were matched."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "single.yml").write_text(SINGLE)
    data = b"".join(json.dumps(flat_event(seconds, host, kind, event_id, record_id)).encode() + b"\n"
                    for seconds, host, kind, event_id, record_id in events)
    found = []
    for count in (1, 2):
        for number in range(2, 2 + count):
            (folder / f"c{number}.yml").write_text(_per_host(number))
        rules = [arg for number in range(2, 2 + count) for arg in ("--rule", str(folder / f"c{number}.yml"))]
        run = run_cli_here(["--rule", str(folder / "single.yml"), *rules, "--stats-interval", "3600"], data)
        assert run.returncode == 0, run.stderr
        counted = stats_records(run.stdout)[-1]["pipeshell"]
        assert counted["late_dropped"] <= counted["late"] <= counted["matched"], counted
        found.append((counted["late"], counted["late_dropped"]))
    assert found[0] == found[1]


def test_an_event_sent_again_counts_once_however_many_rules_it_matched(tmp_path):
    """An event read again after a restart (``--state``) that matched a rule alerting on its own and one
    counted by a correlation is one event sent again: it was counted twice, 8 "sent again" of 4 lines."""
    (tmp_path / "single.yml").write_text(SINGLE)
    (tmp_path / "by.yml").write_text(BY_HOST)
    events = tmp_path / "events.ndjson"
    events.write_bytes(ndjson([flat_event(seconds, "srv01", "server", 4104, seconds) for seconds in (0, 5, 10, 15)]))
    args = ["--rule", str(tmp_path / "single.yml"), "--rule", str(tmp_path / "by.yml"), "--stats-interval", "3600",
            "--state", str(tmp_path / "state.json")]
    assert run_cli(args + ["--input", str(events)]).returncode == 0
    other = ndjson([flat_event(1, "srv01", "benign")]) + events.read_bytes()  # another input: read from its start
    again = run_cli(args, other)
    assert again.returncode == 0, again.stderr
    counted = stats_records(again.stdout)[-1]["pipeshell"]
    assert (counted["lines"], counted["matched"], counted["duplicates"], counted["alerts"]) == (5, 4, 4, 0), counted
    assert again.stderr.decode().splitlines()[-1].endswith("; 4 sent again (taken once)"), again.stderr
