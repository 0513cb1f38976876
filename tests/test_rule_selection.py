"""``--min-level`` and ``--status``: which rules of a rule set alert (``sigma.selection``).

The selection decides what alerts and never what a kept correlation sees: the alerts with it are
exactly the alerts without it whose rule or correlation it keeps, a correlation it keeps fires
whatever the levels of the rules it reads, and a rule left out that nothing kept reads is not
loaded.  Checked through the engine (a property over random levels and statuses), through the
command line (options, summary line, explain, the two stages) and on SigmaHQ's Windows rules.
"""

import glob
import json
import os

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from clitools import alerts, run_cli
from pipeshell_filter.cli import UsageProblem, load_plans, make_resolver
from pipeshell_filter.engine import Engine
from pipeshell_filter.sigma.selection import LEVELS, STATUSES, SelectionError, parse_selection
import sigmahq

RESOLVER = make_resolver("auto", None, None)
SINGLE = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(1, 5)]  # EventID 1..4
BASE = "00000000-0000-0000-0000-000000000010"  # EventID 10, read by CORRELATION
CORRELATION = "00000000-0000-0000-0000-000000000020"  # two BASE events of one Computer within 60 s
OUTER = "00000000-0000-0000-0000-000000000030"  # each CORRELATION alert
EVENT_OF = {**{rule: i for i, rule in enumerate(SINGLE, 1)}, BASE: 10}


def rule_text(rule_id: str, level=None, status=None) -> str:
    document = {"title": f"rule {rule_id[-2:]}", "id": rule_id, "logsource": {"product": "windows"},
                "detection": {"sel": {"EventID": EVENT_OF[rule_id]}, "condition": "sel"}}
    return yaml.safe_dump({**document, **_meta(level, status)})


def correlation_text(rule_id: str, reads: str, gte: int, generate: bool, level=None, status=None) -> str:
    document = {"title": f"correlation {rule_id[-2:]}", "id": rule_id,
                "correlation": {"type": "event_count", "rules": [reads], "group-by": ["Computer"],
                                "timespan": "60s", "condition": {"gte": gte}, "generate": generate}}
    return yaml.safe_dump({**document, **_meta(level, status)})


def _meta(level, status) -> dict:
    return {**({"level": level} if level is not None else {}), **({"status": status} if status is not None else {})}


def load(directory, documents, **options):
    path = os.path.join(str(directory), "rules.yml")
    with open(path, "w") as handle:
        handle.write("---\n".join(documents))
    return load_plans([path], None, strict=True, selection=parse_selection(options.get("min_level"),
                                                                             options.get("status")))


def run_engine(rule_set, events):
    engine = Engine(rule_set, RESOLVER, 0)
    found = []
    for line, event in enumerate(events, 1):
        found += engine.process(event, line).alerts
    return engine, found + engine.flush()


def kept(level, status, min_level, statuses) -> bool:
    """The selection as the README states it, written out independently."""
    order = ["informational", "low", "medium", "high", "critical"]
    if min_level is not None and level is not None and level.lower() in order \
            and order.index(level.lower()) < order.index(min_level):
        return False
    return statuses is None or status is None or status.lower() in statuses


# ------------------------------------------------------------------ the property, through the engine

levels = st.sampled_from([None, "informational", "low", "medium", "High", "critical", "severe"])
statuses = st.sampled_from([None, "stable", "Test", "experimental", "deprecated", "unsupported"])
events = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 10, 10, 10]), st.sampled_from(["a", "b"]),
                            st.integers(0, 40)), max_size=25)


@settings(max_examples=60)
@given(metadata=st.lists(st.tuples(levels, statuses), min_size=7, max_size=7),
       generate=st.tuples(st.booleans(), st.booleans()), rows=events,
       min_level=st.sampled_from([None, *LEVELS]),
       status=st.none() | st.sets(st.sampled_from(STATUSES), min_size=1))
def test_the_alerts_with_a_selection_are_those_without_it_that_it_keeps(tmp_path_factory, metadata, generate, rows,
                                                                        min_level, status):
    ids = SINGLE + [BASE, CORRELATION, OUTER]
    meta = dict(zip(ids, metadata))
    documents = [rule_text(rule_id, *meta[rule_id]) for rule_id in SINGLE + [BASE]]
    documents += [correlation_text(CORRELATION, BASE, 2, generate[0], *meta[CORRELATION]),
                  correlation_text(OUTER, CORRELATION, 1, generate[1], *meta[OUTER])]
    times, stream = 0, []
    for event_id, host, step in rows:
        times += step
        stream.append({"@timestamp": f"2024-01-01T00:{times // 60:02d}:{times % 60:02d}Z", "EventID": event_id,
                       "Computer": host})
    directory = tmp_path_factory.mktemp("selection")
    status_option = ",".join(sorted(status)) if status is not None else None
    passes = {rule_id: kept(*meta[rule_id], min_level, status) for rule_id in ids}
    if not any(passes[rule_id] for rule_id in SINGLE + [BASE]) and not passes[CORRELATION] and not passes[OUTER]:
        with pytest.raises(UsageProblem, match="leaves out every rule"):
            load(directory, documents, min_level=min_level, status=status_option)
        return
    _, without = run_engine(load(directory, documents), stream)
    engine, selected = run_engine(load(directory, documents, min_level=min_level, status=status_option), stream)

    assert selected == [alert for alert in without if passes[alert["rule"]["id"]]]
    # a kept correlation fires whatever its rules' levels: the base rule left out still feeds it
    fired = [alert for alert in without if alert["rule"]["id"] == CORRELATION]
    if passes[CORRELATION]:
        assert [alert for alert in selected if alert["rule"]["id"] == CORRELATION] == fired
    # what is loaded: what is kept, and what a kept correlation reads, through the chain
    loaded = set(engine.meta)  # the rules and correlation documents loaded
    expected = {rule_id for rule_id in ids if passes[rule_id]}
    if passes[OUTER]:
        expected.add(CORRELATION)
    if CORRELATION in expected:
        expected.add(BASE)
    assert loaded == expected
    assert set(engine.left_out) == set(ids) - expected
    assert set(engine.deselected) == {rule_id for rule_id in expected if not passes[rule_id]}


# ------------------------------------------------------------------ the options

@pytest.mark.parametrize("min_level, status, message", [
    ("severe", None, "--min-level 'severe' is not a Sigma level"),
    ("", None, "--min-level '' is not a Sigma level"),
    (None, "stable,foo", "'foo' is not a Sigma status"),
    (None, "stable,", "an empty name is not a Sigma status"),
    (None, "", "an empty name is not a Sigma status"),
])
def test_a_bad_value_is_one_line_and_exit_2(min_level, status, message):
    with pytest.raises(SelectionError, match=message):
        parse_selection(min_level, status)
    args = (["--min-level", min_level] if min_level is not None else []) + \
        (["--status", status] if status is not None else [])
    result = run_cli(args)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert result.stdout == b""


def test_levels_and_statuses_are_read_in_any_letter_case():
    assert parse_selection("HiGh", " Stable ,TEST") == parse_selection("high", "stable,test")


RULES = [rule_text(SINGLE[0], "low", "test"), rule_text(SINGLE[1], "high", "experimental"),
         rule_text(SINGLE[2], "medium"), rule_text(SINGLE[3]), rule_text(BASE, "informational", "stable"),
         correlation_text(CORRELATION, BASE, 2, True, "high", "test")]
EVENTS = "".join(json.dumps({"@timestamp": f"2024-01-01T00:00:0{i}Z", "EventID": event_id, "Computer": "a"}) + "\n"
                 for i, event_id in enumerate([1, 2, 3, 4, 10, 10]))


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text("---\n".join(RULES))
    return str(path)


def test_the_cli_alerts_on_what_it_keeps_and_the_summary_says_what_it_left_out(rules_file):
    every = run_cli(["--rule", rules_file, "--workers", "0"], EVENTS.encode())
    assert sorted(a["rule"]["id"] for a in alerts(every.stdout)) == sorted(SINGLE + [BASE, BASE, CORRELATION])
    assert b"pipeshell-filter: 6 rules; 6 lines" in every.stderr
    high = run_cli(["--rule", rules_file, "--workers", "0", "--min-level", "high"], EVENTS.encode())
    assert high.returncode == 0, high.stderr
    # the rule without a level is kept; the informational base rule feeds the correlation, quiet
    assert sorted(a["rule"]["id"] for a in alerts(high.stdout)) == sorted([SINGLE[1], SINGLE[3], CORRELATION])
    assert b"pipeshell-filter: 4 rules (2 left out by --min-level high, 1 loaded only to feed correlations); " \
           b"6 lines; 4 matched; 3 alerts" in high.stderr
    stable = run_cli(["--rule", rules_file, "--workers", "0", "--status", "stable,test"], EVENTS.encode())
    # the rule without a status is kept, and so is the medium one without
    assert sorted(a["rule"]["id"] for a in alerts(stable.stdout)) == \
        sorted([SINGLE[0], SINGLE[2], SINGLE[3], BASE, BASE, CORRELATION])
    assert b"5 rules (1 left out by --status stable,test)" in stable.stderr


def test_a_selection_that_leaves_out_every_rule_is_an_error(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text("---\n".join(RULES[:3] + RULES[4:]))  # each with a level or a status
    result = run_cli(["--rule", str(path), "--min-level", "critical", "--status", "stable"])
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f"pipeshell-filter: error: --min-level critical --status stable leaves out every rule of {path} "
        "(5 left out)"]


def test_explain_says_which_rules_are_quiet_or_left_out_and_why(rules_file, tmp_path):
    result = run_cli(["explain", "--rule", rules_file, "--min-level", "high"])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "alerts    none of its own: level informational is below --min-level high; loaded only because a kept " \
           "correlation reads its matches" in text
    assert "left out by --min-level high, not loaded (no correlation kept reads them): 2\n" in text
    assert f"  'rule 01' ({SINGLE[0]}, {rules_file} (document 1)): level low is below --min-level high" in text
    assert "rule      rule 01" not in text
    one = tmp_path / "event.json"
    one.write_text(EVENTS.splitlines()[4])
    result = run_cli(["explain", "--rule", rules_file, "--min-level", "high", "--event", str(one)])
    assert "outcome   no alert of its own (level informational is below --min-level high); feeds correlation " \
           "'correlation 20'" in result.stdout.decode()


def test_a_global_filter_keeps_working_on_what_remains(tmp_path):
    documents = RULES + [yaml.safe_dump({"title": "not host b", "id": "f0000000-0000-0000-0000-000000000000",
                                         "logsource": {"product": "windows"},
                                         "filter": {"rules": [SINGLE[1], SINGLE[0]],
                                                    "selection": {"Computer": "b"}, "condition": "not selection"}})]
    path = tmp_path / "rules.yml"
    path.write_text("---\n".join(documents))
    lines = "".join(json.dumps({"@timestamp": "2024-01-01T00:00:00Z", "EventID": 2, "Computer": host}) + "\n"
                    for host in ("a", "b"))
    result = run_cli(["--rule", str(path), "--workers", "0", "--min-level", "high"], lines.encode())
    assert result.returncode == 0, result.stderr
    assert [a["rule"]["id"] for a in alerts(result.stdout)] == [SINGLE[1]]
    assert b"warning" not in result.stderr  # the filter's reference to the rule left out is no mistake


def test_two_stages_with_the_same_selection_alert_as_one_process(rules_file):
    one = run_cli(["--rule", rules_file, "--workers", "0", "--min-level", "high"], EVENTS.encode())
    match = run_cli(["--rule", rules_file, "--workers", "0", "--min-level", "high", "--stage", "match",
                     "--heartbeat", "0"], EVENTS.encode())
    # the match stage ships the Detections of what alerts and of what a kept correlation reads, no more
    assert sorted({json.loads(line)["rule"] for line in match.stdout.splitlines()}) == sorted([SINGLE[1], SINGLE[3],
                                                                                              BASE])
    correlate = run_cli(["--rule", rules_file, "--min-level", "high", "--stage", "correlate"], match.stdout)
    assert correlate.returncode == 0, correlate.stderr
    assert alerts(correlate.stdout) == alerts(one.stdout)


def test_a_correlate_stage_names_a_detection_its_selection_left_out(rules_file):
    match = run_cli(["--rule", rules_file, "--workers", "0", "--stage", "match", "--heartbeat", "0"], EVENTS.encode())
    correlate = run_cli(["--rule", rules_file, "--min-level", "high", "--stage", "correlate"], match.stdout)
    assert correlate.returncode == 0
    assert f"line 1: Detection of rule '{SINGLE[0]}', which --min-level high leaves out here (level low is below " \
           "--min-level high; both stages need the same --min-level and --status); dropped" \
           in correlate.stderr.decode()
    assert b"skipped: 2 of a rule not loaded" in correlate.stderr
    assert sorted(a["rule"]["id"] for a in alerts(correlate.stdout)) == sorted([SINGLE[1], SINGLE[3], CORRELATION])


# ------------------------------------------------------------------ SigmaHQ's Windows rules

@pytest.mark.skipif(not sigmahq.available(), reason="the shared SigmaHQ checkout is absent")
def test_sigmahq_windows_rules_with_min_level_high_alert_on_a_subset_with_fewer_rules():
    """The SigmaHQ rules hold no correlation: the alerts at high are those of the rules at high or above."""
    directories = sorted(glob.glob(os.path.join(sigmahq.SIGMAHQ, "rules*", "windows")))
    evtx = sorted({case[2] for case in sigmahq.regression_cases()})[:40]
    args = [arg for directory in directories for arg in ("--rule", directory)] + ["--workers", "0"] + \
        [arg for path in evtx for arg in ("--input", path)]
    every, high = run_cli(args, timeout=300), run_cli(args + ["--min-level", "high"], timeout=300)
    assert every.returncode == high.returncode == 0, high.stderr[-500:]
    loaded, kept_rules = (int(run.stderr.decode().rsplit("pipeshell-filter: ", 1)[1].split(" ")[0])
                          for run in (every, high))
    assert 0 < kept_rules < loaded * 0.6
    found = alerts(high.stdout)
    assert found and found == [a for a in alerts(every.stdout) if a["rule"]["level"] in ("high", "critical")]
    assert len(found) < len(alerts(every.stdout))
