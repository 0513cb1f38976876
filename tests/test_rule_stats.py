"""Per-rule counts: each rule's and correlation's Detections and alerts, in the stats record (the most
alerting ones) and in the ``--rule-stats`` file (all that matched), for finding the noisy rules."""

import io
import json
import signal
import subprocess
import tempfile
from collections import Counter

import pytest
from hypothesis import event, given, settings, strategies as st

from clitools import COMMAND, alerts, ndjson, records, run_cli, run_cli_here
from eventgen import flat_event, raw_events
import resolvers
from pipeshell_filter.cli import build_prefilter, load_plans
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.io import parallel, stream
from pipeshell_filter.io.stream import OWN_TYPES, Diagnostics, Filter, Output
from test_stages import BY_HOST, SINGLE, _stream_bytes, write
from test_state import feed
from test_stats import stats_records

# A correlation document without ``generate``: the rule it counts matches, but alerts only through it.
TWO_PER_HOST = """title: Two script blocks on one host
id: two-per-host
correlation:
  type: event_count
  rules: [single-4104]
  group-by: [Computer]
  timespan: 2m
  condition: {gte: 2}
level: critical
"""

# A chain: the inner correlation (two script blocks on a host in 2 minutes) fires to feed the outer one
# (two of those in 10 minutes) and, without ``generate``, writes no alert of its own.
CHAIN = """title: Two of those pairs on one host
id: pairs-per-host
correlation:
  type: event_count
  rules: [two_blocks]
  group-by: [Computer]
  timespan: 10m
  condition: {gte: 2}
  generate: false
level: critical
---
title: Two script blocks on one host, fed on
id: two-blocks
name: two_blocks
correlation:
  type: event_count
  rules: [single-4104]
  group-by: [Computer]
  timespan: 2m
  condition: {gte: 2}
level: high
"""

RULE_SETS = {"builtin": (), "single": (("single.yml", SINGLE),),
             "by_host": (("by.yml", BY_HOST), ("single.yml", SINGLE)),
             "document": (("single.yml", SINGLE), ("two.yml", TWO_PER_HOST)),
             "chain": (("single.yml", SINGLE), ("chain.yml", CHAIN))}


def _run_stage(paths, data: bytes, stage: str, suppress: int = 0) -> tuple:
    """``--stage <stage>`` of ``data`` (a finished input) as the command line builds it, in this process
    (``suppress``: ``--suppress`` in seconds): its output and its engine, whose counts are read."""
    plans = load_plans(list(paths) or None, None)
    prefilter, index = (None, None) if stage == "correlate" else \
        build_prefilter(plans, "auto", "match", OWN_TYPES if stage == "match" else ())
    engine = Engine(plans, resolvers.auto(), 30 * NS, unknown_logsource="match", max_skew_ns=300 * NS,
                    suppress_ns=suppress * NS)
    with tempfile.TemporaryFile() as sink:
        stream_filter = Filter(engine, Output(sink.fileno()), Diagnostics(io.StringIO()), "alerts",
                               prefilter=prefilter, clock=lambda: 0, stage=stage, index=index)
        feed(stream_filter, data)
        sink.seek(0)
        return sink.read(), engine


def _counted(engine: Engine) -> dict:
    """Rule or correlation id -> (detections, alerts, fires, suppressed), as ``--rule-stats`` lists them."""
    return {rule.id: tuple(counts[:4]) for rule, *counts in engine.rule_counts()}


def _nonzero(counter: Counter) -> dict:
    return {rule: count for rule, count in counter.items() if count}


@settings(max_examples=30, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(sorted(RULE_SETS)), st.sampled_from([30, 600]))
def test_each_rules_counts_are_its_detection_records_and_its_alerts(tmp_path_factory, events, rules, period):
    """Each stage's counts, held against the records of the same run: a match stage's Detections are the
    Detection records it writes (and it makes no alert); one process counts the same Detections and the
    alerts it writes, by rule; a correlate stage fed the match stage's records counts them as received,
    and its alerts, which are one process's.  A rule's or correlation's fires are its alerts, but for an
    inner correlation without ``generate``, whose fires are the alerts it writes with ``generate`` (and a
    rule that only feeds a correlation, which fires nothing); with ``--suppress``, the fires are the
    same and each one's suppressed are its alerts without the option less those with it."""
    folder = tmp_path_factory.mktemp("rules")
    paths = [write(folder, name, text) for name, text in RULE_SETS[rules]]
    data = _stream_bytes(events)
    matched, match_engine = _run_stage(paths, data, "match")
    whole, whole_engine = _run_stage(paths, data, "all")
    correlated, correlate_engine = _run_stage(paths, matched, "correlate")
    detections = Counter(record["rule"] for record in records(matched) if record["type"] == "sigma.detection")
    alerted = Counter(alert["rule"]["id"] for alert in alerts(whole))
    assert _counted(match_engine) == {rule: (made, 0, 0, 0) for rule, made in detections.items()}
    counted = _counted(whole_engine)
    assert _nonzero(Counter({rule: made for rule, (made, *_) in counted.items()})) == dict(detections)
    assert _nonzero(Counter({rule: made for rule, (_, made, *_) in counted.items()})) == dict(alerted)
    assert _counted(correlate_engine) == counted
    assert correlated == whole
    ranked = [(alerts_made, made) for _, made, alerts_made, *_ in whole_engine.rule_counts()]
    assert ranked == sorted(ranked, reverse=True)  # the most alerts first, then the most detections
    loud = Counter()
    if rules == "chain":  # the same run with generate: the inner correlation alerts (and rule single-4104)
        chain = write(folder, "loud.yml", CHAIN.replace("generate: false", "generate: true"))  # not over chain.yml
        loud = Counter(alert["rule"]["id"] for alert in alerts(_run_stage([paths[0], chain], data, "all")[0]))
        event(f"chain: inner fired {bool(loud['two-blocks'])}, outer alerted {bool(alerted['pairs-per-host'])}")
    kinds = {rule.id: type(rule).__name__ for rule, *_ in whole_engine.rule_counts()}
    for rule, (_, made, fires, suppressed) in counted.items():
        assert suppressed == 0
        if rule not in whole_engine.quiet:
            assert fires == made
        elif kinds[rule] == "CorrelationRule":
            assert fires == loud[rule] > 0  # listed because it fired
        else:
            assert (made, fires) == (0, 0)
    assert rules != "chain" or ("two-blocks" in counted) == (loud["two-blocks"] > 0)
    kept, kept_engine = _run_stage(paths, data, "all", suppress=period)
    let_out = Counter(alert["rule"]["id"] for alert in alerts(kept))
    with_option = _counted(kept_engine)
    assert {rule: (made, fires) for rule, (made, _, fires, _) in with_option.items()} == \
        {rule: (made, fires) for rule, (made, _, fires, _) in counted.items()}
    assert {rule: (let_out[rule], alerted[rule] - let_out[rule]) for rule in counted} == \
        {rule: (made, suppressed) for rule, (_, made, _, suppressed) in with_option.items()}
    assert sum(suppressed for *_, suppressed in with_option.values()) == kept_engine.stats["suppressed"]
    event(f"suppressed: {bool(kept_engine.stats['suppressed'])}")


def _twice(matched: bytes) -> bytes:
    """A match stage's records, each Detection record sent twice in a row (a shipper's retry), heartbeats once."""
    lines = []
    for line in matched.splitlines(keepends=True):
        lines += [line, line] if b'"sigma.detection"' in line else [line]
    return b"".join(lines)


@settings(max_examples=30, deadline=None)
@given(raw_events(max_size=30), st.sampled_from(sorted(RULE_SETS)))
def test_a_detection_record_sent_again_counts_once_in_the_correlate_stage(tmp_path_factory, events, rules):
    """A correlate stage takes a Detection record sent again once (``take_once``): its rule's detections
    count it once, as its alerts do.  The copy was counted as a detection of its own: at-least-once
    delivery made a rule look twice as noisy in ``--rule-stats``."""
    folder = tmp_path_factory.mktemp("rules")
    paths = [write(folder, name, text) for name, text in RULE_SETS[rules]]
    matched, _ = _run_stage(paths, _stream_bytes(events), "match")
    once, once_engine = _run_stage(paths, matched, "correlate")
    again, again_engine = _run_stage(paths, _twice(matched), "correlate")
    assert again == once
    assert _counted(again_engine) == _counted(once_engine)
    event(f"sent again: {bool(again_engine.duplicates())}")


# (seconds, host, kind, EventID, record id): script blocks on two hosts over 10 minutes, dense enough for
# two pairs on a host (the chain's outer correlation) to be common
CHAIN_EVENTS = st.lists(st.tuples(st.integers(0, 600), st.sampled_from(["srv01", "cli01"]),
                                  st.sampled_from(["server", "server", "benign"]), st.sampled_from([4104, 4104, 4103])),
                        max_size=30).map(lambda rows: [(*row, i) for i, row in enumerate(rows)])


@settings(max_examples=30, deadline=None)
@given(CHAIN_EVENTS, st.sampled_from([30, 600]))
def test_an_inner_correlation_fires_as_often_as_it_alerts_with_generate(tmp_path_factory, events, period):
    """Events dense enough for the chain to fire: without ``generate`` the inner correlation writes no
    alert and is listed with its fires, the alerts it writes with ``generate``; the outer one's fires are
    its alerts, and with ``--suppress`` its alerts plus its suppressed (the inner one's fires stay)."""
    folder = tmp_path_factory.mktemp("chain")
    single = write(folder, "single.yml", SINGLE)
    quiet, loud = write(folder, "quiet.yml", CHAIN), write(folder, "loud.yml", CHAIN.replace("false", "true"))
    data = _stream_bytes(events)
    written = {}
    for name, chain in (("quiet", quiet), ("loud", loud)):
        written[name] = Counter(alert["rule"]["id"] for alert in alerts(_run_stage([single, chain], data, "all")[0]))
    inner = written["loud"]["two-blocks"]
    event(f"inner fired: {bool(inner)}, outer alerted: {bool(written['quiet']['pairs-per-host'])}")
    assert written["quiet"]["two-blocks"] == 0
    assert written["loud"]["pairs-per-host"] == written["quiet"]["pairs-per-host"]
    output, engine = _run_stage([single, quiet], data, "all", suppress=period)
    counted = _counted(engine)
    assert counted.get("two-blocks", (0, 0, 0, 0)) == (0, 0, inner, 0)
    let_out = Counter(alert["rule"]["id"] for alert in alerts(output))
    outer = written["quiet"]["pairs-per-host"]
    event(f"outer alerts suppressed: {let_out['pairs-per-host'] < outer}")
    assert counted.get("pairs-per-host", (0, 0, 0, 0)) == (0, let_out["pairs-per-host"], outer,
                                                          outer - let_out["pairs-per-host"])


def _rule(number: int, needle: str) -> str:
    return f"""title: Rule {number} {"x" * 300}
id: rule-{number:02d}
logsource: {{product: windows, category: ps_script}}
detection:
  selection:
    ScriptBlockText|contains: '{needle}'
  condition: selection
level: low
"""


def _many_rules(folder, count: int) -> list:
    """``count`` rules, rule N matching the events of ``_events_for`` N + 1 times, with long titles."""
    for number in range(count):
        write(folder, f"r{number:02d}.yml", _rule(number, f"marker{number:02d}"))
    return ["--rule", str(folder)]


def _events_for(count: int) -> bytes:
    events = []
    for number in range(count):
        for repeat in range(number + 1):
            event = flat_event(len(events), f"h{repeat}", "benign")
            event["ScriptBlockText"] = f"echo marker{number:02d}"
            events.append(event)
    return ndjson(events)


def test_the_stats_record_shows_the_twenty_most_alerting_rules_cut_short_and_the_file_all(tmp_path):
    (tmp_path / "rules").mkdir()
    table = tmp_path / "rules.ndjson"
    result = run_cli(_many_rules(tmp_path / "rules", 30) + ["--stats-interval", "3600", "--rule-stats", str(table)],
                     _events_for(30))
    assert result.returncode == 0, result.stderr
    stats = stats_records(result.stdout)[-1]["pipeshell"]
    assert stats["rules_total"] == 30 and len(stats["rules"]) == 20
    assert [entry["id"] for entry in stats["rules"]] == [f"rule-{n:02d}" for n in range(29, 9, -1)]
    first = stats["rules"][0]
    assert (first["detections"], first["alerts"], first["level"], first["type"]) == (30, 30, "low", "rule")
    assert len(first["title"]) == 129 and "path" not in first  # 128 characters and an ellipsis
    assert len(json.dumps(stats)) < 10_000
    lines = [json.loads(line) for line in table.read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"rule-{n:02d}" for n in range(29, -1, -1)]
    assert lines[0]["title"] == "Rule 29 " + "x" * 300 and lines[0]["path"] == str(tmp_path / "rules" / "r29.yml")
    assert [(line["detections"], line["alerts"]) for line in lines] == [(n, n) for n in range(30, 0, -1)]


def test_a_rule_that_feeds_a_correlation_has_detections_and_no_alerts_of_its_own(tmp_path):
    table = tmp_path / "rules.ndjson"
    events = [flat_event(seconds, "srv01", "server", 4104, record_id=seconds) for seconds in (0, 10, 20)]
    args = ["--rule", write(tmp_path, "single.yml", SINGLE), "--rule", write(tmp_path, "two.yml", TWO_PER_HOST)]
    result = run_cli(args + ["--rule-stats", str(table)], ndjson(events))
    assert result.returncode == 0, result.stderr
    counts = {line["id"]: (line["type"], line["detections"], line["alerts"])
              for line in map(json.loads, table.read_text().splitlines())}
    assert counts == {"single-4104": ("rule", 3, 0), "two-per-host": ("correlation", 0, len(alerts(result.stdout)))}
    assert len(alerts(result.stdout)) == 1


def test_the_stages_stats_records_count_what_each_did(tmp_path):
    """A match stage counts its Detections (no alerts); a correlate stage the Detections it received and
    its alerts."""
    events = [flat_event(seconds, "srv01", "server", 4104, record_id=seconds) for seconds in (0, 10, 20)]
    rule = ["--rule", write(tmp_path, "single.yml", SINGLE), "--stats-interval", "3600"]
    matched = run_cli(rule + ["--stage", "match", "--heartbeat", "0"], ndjson(events))
    entry = stats_records(matched.stdout)[-1]["pipeshell"]["rules"]
    assert entry == [{"id": "single-4104", "title": "Script block with Invoke-Pipe", "level": "high", "type": "rule",
                      "detections": 3, "alerts": 0, "fires": 0, "suppressed": 0}]
    correlated = run_cli(rule + ["--stage", "correlate"], matched.stdout)
    stats = stats_records(correlated.stdout)[-1]["pipeshell"]
    assert [(r["id"], r["detections"], r["alerts"]) for r in stats["rules"]] == [("single-4104", 3, 3)]
    assert stats["rules_total"] == 1


def test_no_rule_matched_is_an_empty_list_and_a_file_of_the_rules_routed(tmp_path):
    """Nothing matched: the stats record lists nothing, nor does the file; with ``--field-coverage``, the
    file lists the rules routed the event, with nothing counted (a rule routed nothing, nothing at all)."""
    table = tmp_path / "rules.ndjson"
    table.write_text("left from the last run\n")
    events = ndjson([flat_event(0, "h", "benign")])
    assert run_cli(["--rule-stats", str(table)], events).returncode == 0
    assert table.read_text() == ""
    result = run_cli(["--rule-stats", str(table), "--field-coverage", "--stats-interval", "3600"], events)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert rows and all((row["detections"], row["alerts"], row["routed"]) == (0, 0, 1) for row in rows)
    assert run_cli(["--rule-stats", str(table)], b"").returncode == 0
    assert table.read_text() == ""
    stats = stats_records(result.stdout)[-1]["pipeshell"]
    assert (stats["rules"], stats["rules_total"]) == ([], 0)


def test_the_file_is_written_on_sigterm(tmp_path):
    """A live input stopped by SIGTERM: the counts so far, the flushed windows' alerts too."""
    table = tmp_path / "rules.ndjson"
    process = subprocess.Popen(COMMAND + ["--rule-stats", str(table), "--quiet", "--emit", "all"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        events = [flat_event(0, "srv01", "server"), flat_event(30, "cli01", "client"),
                  flat_event(60, "cli02", "client")]
        process.stdin.write(ndjson(events))
        process.stdin.flush()
        for _ in events:  # passed on: read, while the input stays open
            assert process.stdout.readline()
        assert not table.exists()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in table.read_text().splitlines()]
    assert [(line["id"], line["alerts"]) for line in lines] == [("55d5b9c0-ae28-59e1-b4ff-9a7278c173db", 1)]
    assert lines[0]["detections"] == 3 and len(alerts(out)) == 1


def test_a_file_that_cannot_be_written_is_a_usage_error_before_any_input(tmp_path):
    for path, said in ((tmp_path / "missing" / "rules.ndjson", "No such file or directory"),
                       (tmp_path, "not a regular file"), ("", "needs a file name")):
        result = run_cli(["--rule-stats", str(path) if path != "" else "", "--emit", "all"],
                         ndjson([flat_event(0, "h", "benign")]))
        assert result.returncode == 2 and result.stdout == b"", result
        assert result.stderr.count(b"\n") == 1 and said.encode() in result.stderr and b"--rule-stats" in result.stderr


def test_counts_are_per_run_and_not_saved_with_the_state(tmp_path):
    table, state = tmp_path / "rules.ndjson", tmp_path / "state.json"
    args = ["--rule", write(tmp_path, "single.yml", SINGLE), "--state", str(state), "--rule-stats", str(table)]
    for first in (0, 10):
        events = [flat_event(first + seconds, "srv01", "server", 4104, record_id=first + seconds)
                  for seconds in (0, 5)]
        assert run_cli(args, ndjson(events)).returncode == 0
        assert [json.loads(line)["detections"] for line in table.read_text().splitlines()] == [2]


def test_worker_processes_count_as_one_process_does(tmp_path, monkeypatch):
    """With --workers 2 the workers match and the parent correlates: the table is the same as without."""
    monkeypatch.setattr(stream, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "CHUNK", 4096)
    path = tmp_path / "events.ndjson"
    path.write_bytes(_events_for(25) * 3)
    (tmp_path / "rules").mkdir()
    rules = _many_rules(tmp_path / "rules", 25)
    taken, take = [], Engine.take
    monkeypatch.setattr(Engine, "take", lambda self, found: taken.append(len(found)) or take(self, found))
    tables = []
    for workers in ("0", "2"):
        table = tmp_path / f"rules-{workers}.ndjson"
        result = run_cli_here(rules + ["--input", str(path), "--workers", workers, "--rule-stats", str(table),
                                       "--quiet"])
        assert result.returncode == 0, result.stderr
        tables.append(table.read_text())
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 25
    assert sum(taken) == 3 * 25 * 26 // 2  # every Detection was a worker's, taken by the parent
    assert json.loads(tables[0].splitlines()[0])["detections"] == 75


def test_the_readme_recipe_turns_the_noisy_rules_into_an_exclusion_file(tmp_path):
    """What ``--rule-stats`` writes, its ids one a line with the counts as a comment (the README's jq
    command, done here in Python), is an --exclude-rules file that leaves those rules out."""
    (tmp_path / "rules").mkdir()
    rules = _many_rules(tmp_path / "rules", 5)
    table = tmp_path / "rules.ndjson"
    data = _events_for(5)
    assert run_cli(rules + ["--rule-stats", str(table)], data).returncode == 0
    noisy = [json.loads(line) for line in table.read_text().splitlines()]
    exclusions = tmp_path / "noisy.txt"
    exclusions.write_text("".join(f"{line['id']}  # {line['alerts']} alerts: {json.dumps(line['title'])}\n"
                                  for line in noisy if line["alerts"] > 3))
    result = run_cli(rules + ["--exclude-rules", str(exclusions), "--rule-stats", str(table)], data)
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["id"] for line in table.read_text().splitlines()} == {"rule-00", "rule-01", "rule-02"}
    assert {alert["rule"]["id"] for alert in alerts(result.stdout)} == {"rule-00", "rule-01", "rule-02"}



@settings(max_examples=6, deadline=None)
@given(st.integers(1, 25), st.sampled_from(["0", "2"]), st.booleans())
def test_rule_cost_counts_the_events_each_rule_was_tried_on(tmp_path_factory, count, workers, prefilter):
    """``--rule-cost``: rule N's literal ``markerNN`` is in N + 1 events, which the rule index alone sends it:
    tried on exactly those; without the index (``--no-prefilter``) every rule is tried on every event.  The
    same with worker processes, whose tries the parent adds up.  Each listed with the time its tries took."""
    folder = tmp_path_factory.mktemp("cost")
    (folder / "rules").mkdir()
    events = folder / "events.ndjson"
    events.write_bytes(_events_for(count))
    table = folder / "rules.ndjson"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream, "PARALLEL_MIN", 0)
        patch.setattr(parallel, "CHUNK", 4096)
        result = run_cli_here(_many_rules(folder / "rules", count) + [
            "--input", str(events), "--workers", workers, "--rule-stats", str(table), "--rule-cost", "--quiet"]
            + ([] if prefilter else ["--no-prefilter"]))
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in map(json.loads, table.read_text().splitlines())}
    total = count * (count + 1) // 2
    assert sorted(rows) == [f"rule-{n:02d}" for n in range(count)]
    for number in range(count):
        row = rows[f"rule-{number:02d}"]
        assert row["detections"] == number + 1
        assert row["tried"] == (number + 1 if prefilter else total)
        assert row["eval_ms"] >= 0 and isinstance(row["eval_ms"], float)


def test_rule_cost_lists_the_rules_only_tried_after_those_that_matched(tmp_path):
    """A rule tried and never matched is listed (after every rule that matched), one never tried is not;
    the stats record stays without the costs."""
    folder = tmp_path / "rules"
    folder.mkdir()
    write(folder, "matches.yml", _rule(1, "marker01"))
    write(folder, "tried.yml", _rule(2, "echo marker0").replace("|contains: 'echo marker0'", "|endswith: '9'"))
    write(folder, "never.yml", _rule(3, "never-in-any-event"))
    table = tmp_path / "rules.ndjson"
    result = run_cli(["--rule", str(folder), "--rule-stats", str(table), "--rule-cost", "--stats-interval", "3600"],
                     _events_for(3))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert [(row["id"], row["detections"], row["tried"]) for row in rows] == [("rule-01", 2, 2), ("rule-02", 0, 6)]
    assert "tried" not in stats_records(result.stdout)[-1]["pipeshell"]["rules"][0]


@pytest.mark.parametrize("args", [["--rule-cost"], ["--rule-cost", "--rule-stats", "x.ndjson", "--stage", "correlate"]])
def test_rule_cost_needs_a_stage_that_tries_rules_and_a_table(args):
    result = run_cli(args, b"")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"--rule-cost needs --rule-stats" in \
        result.stderr


def test_a_file_the_run_reads_or_the_state_file_is_refused_as_the_table(tmp_path):
    """The table replaces its file at exit: named as an --input (or the file standard input reads), a rule
    file, another option's file or the --state file, it destroyed that file (the input log lost, the state
    refused by the next run).  A usage error at start, the file untouched."""
    rule = tmp_path / "single.yml"
    write(tmp_path, "single.yml", SINGLE)
    events = ndjson([flat_event(0, "srv01", "server", 4104)])
    log, state, exclusions = tmp_path / "events.ndjson", tmp_path / "state.json", tmp_path / "noisy.txt"
    log.write_bytes(events)
    exclusions.write_text("# none\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.ndjson").symlink_to(log)
    for table, more, said in ((log, ["--input", str(log)], "--input"),
                              (log, ["--input", str(tmp_path / "logs")], "--input"),
                              (rule, [], "--rule"),
                              (exclusions, ["--exclude-rules", str(exclusions)], "--exclude-rules"),
                              (state, ["--state", str(state)], "--state")):
        before = table.read_bytes() if table.exists() else None
        result = run_cli(["--rule", str(rule), "--rule-stats", str(table)] + more, events)
        assert result.returncode == 2 and result.stdout == b"", (table, result)
        assert result.stderr.count(b"\n") == 1 and said.encode() in result.stderr, result.stderr
        assert (table.read_bytes() if table.exists() else None) == before
    with open(log, "rb") as stdin:  # ``< FILE``
        result = subprocess.run(COMMAND + ["--rule", str(rule), "--rule-stats", str(log)], stdin=stdin,
                                capture_output=True, timeout=60)
    assert result.returncode == 2 and b"standard input" in result.stderr and log.read_bytes() == events
    # --state replaces its file too: --state-reset on the input log removed it, then could not read it
    result = run_cli(["--rule", str(rule), "--input", str(log), "--state", str(log), "--state-reset"])
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"--input" in result.stderr, result
    assert log.read_bytes() == events


def test_a_file_name_too_long_to_write_is_a_usage_error_before_any_input(tmp_path):
    """The table is written beside its FILE first (a temp name 13 bytes longer): a name the directory cannot
    hold, that one or its own, was found at the end of the run, the table lost.  Refused at start, as --state."""
    for length in (250, 300):
        path = str(tmp_path / ("x" * length))
        for option in ("--rule-stats", "--state"):
            result = run_cli([option, path, "--emit", "all"], ndjson([flat_event(0, "h", "benign")]))
            assert result.returncode == 2 and result.stdout == b"", result
            assert result.stderr.count(b"\n") == 1 and b"name too long" in result.stderr, result.stderr
    table = tmp_path / ("x" * 200)  # short enough, with its temp name
    assert run_cli(["--rule-stats", str(table)], ndjson([flat_event(0, "h", "benign")])).returncode == 0
    assert table.exists()


PIPE_COLLECTION = """action: global
title: Pipe script
id: pipes
logsource: {product: windows}
detection:
  condition: selection
---
detection: {selection: {EventID: 4104, ScriptBlockText|contains: NamedPipe}}
---
detection: {selection: {EventID: 4103, Payload|contains: NamedPipe}}
---
action: reset
---
""" + TWO_PER_HOST.replace("rules: [single-4104]", "rules: [pipes]")


def test_a_collection_counted_by_its_shared_id_names_each_of_its_rules(tmp_path):
    """A correlation naming a v1 collection's shared id reads each of its rules (``pipes``, ``pipes#3``), in one
    process and in two stages; ``--rule-stats`` and ``explain`` still name them one by one."""
    table = tmp_path / "rules.ndjson"
    events = [flat_event(0, "srv01", "server", 4104), flat_event(10, "srv01", "server", 4103)]
    args = ["--rule", write(tmp_path, "pipes.yml", PIPE_COLLECTION)]
    result = run_cli(args + ["--rule-stats", str(table)], ndjson(events))
    assert result.returncode == 0, result.stderr
    counts = {line["id"]: (line["type"], line["detections"], line["alerts"])
              for line in map(json.loads, table.read_text().splitlines())}
    assert counts == {"pipes": ("rule", 1, 0), "pipes#3": ("rule", 1, 0), "two-per-host": ("correlation", 0, 1)}
    [alert] = alerts(result.stdout)
    assert [term["term"] for term in alert["sigma"]["terms"]] == ["pipes"]
    match = run_cli(args + ["--stage", "match", "--heartbeat", "0"], ndjson(events))  # two stages alert alike
    correlate = run_cli(args + ["--stage", "correlate"], match.stdout)
    assert correlate.returncode == 0 and alerts(correlate.stdout) == [alert], correlate.stderr
    explained = run_cli(["explain"] + args)
    assert explained.returncode == 0, explained.stderr
    assert "  pipes = pipes, pipes#3 ('Pipe script'): a rule: each event it matches" in explained.stdout.decode()
