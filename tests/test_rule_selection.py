"""``--min-level``, ``--status``, ``--tag``, ``--exclude-tag``, ``--exclude-rule`` and ``--exclude-rules``:
which rules of a rule set alert (``sigma.selection``).

The selection decides what alerts and never what a kept correlation sees: the alerts with it are
exactly the alerts without it whose rule or correlation it keeps, a correlation it keeps fires
whatever the levels, tags or ids of the rules it reads, and a rule left out that nothing kept reads
is not loaded.  Checked through the engine (a property over random levels, statuses, tags and
excluded ids), through the command line (options, warnings, summary line, explain, the two stages)
and on SigmaHQ's Windows rules.
"""

import glob
import json
import os
import subprocess

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, alerts, run_cli, run_cli_here
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


def name_of(rule_id: str) -> str:
    """The ``name`` each test document has besides its id (``--exclude-rule`` takes either)."""
    return f"Doc_{rule_id[-2:]}"


def rule_text(rule_id: str, level=None, status=None, tags=()) -> str:
    document = {"title": f"rule {rule_id[-2:]}", "id": rule_id, "name": name_of(rule_id),
                "logsource": {"product": "windows"},
                "detection": {"sel": {"EventID": EVENT_OF[rule_id]}, "condition": "sel"}}
    return yaml.safe_dump({**document, **_meta(level, status, tags)})


def correlation_text(rule_id: str, reads: str, gte: int, generate: bool, level=None, status=None, tags=()) -> str:
    document = {"title": f"correlation {rule_id[-2:]}", "id": rule_id, "name": name_of(rule_id),
                "correlation": {"type": "event_count", "rules": [reads], "group-by": ["Computer"],
                                "timespan": "60s", "condition": {"gte": gte}, "generate": generate}}
    return yaml.safe_dump({**document, **_meta(level, status, tags)})


def _meta(level, status, tags=()) -> dict:
    return {**({"level": level} if level is not None else {}), **({"status": status} if status is not None else {}),
            **({"tags": list(tags)} if tags else {})}


def load(directory, documents, **options):
    path = os.path.join(str(directory), "rules.yml")
    with open(path, "w") as handle:
        handle.write("---\n".join(documents))
    files = []
    if options.get("exclusion_file"):
        files.append(os.path.join(str(directory), "excluded.txt"))
        with open(files[0], "w") as handle:
            handle.write("# ids left out\n" + "".join(f"{rule_id}  # a comment\n\n"
                                                      for rule_id in options["exclusion_file"]))
    return load_plans([path], None, strict=True, report=lambda message: None,
                      selection=parse_selection(options.get("min_level"), options.get("status"), options.get("tags"),
                                                options.get("exclude_tags", ()), options.get("exclude_rules", ()),
                                                files))


def run_engine(rule_set, events):
    engine = Engine(rule_set, RESOLVER, 0)
    found = []
    for line, event in enumerate(events, 1):
        found += engine.process(event, line).alerts
    return engine, found + engine.flush()


def kept(level, status, min_level, statuses, rule_tags=(), rule_id=None, tags=None, exclude_tags=(),
         excluded=()) -> bool:
    """The selection as the README states it, written out independently."""
    order = ["informational", "low", "medium", "high", "critical"]
    if min_level is not None and level is not None and level.lower() in order \
            and order.index(level.lower()) < order.index(min_level):
        return False

    def has(wanted):  # a tag of the rule is the one wanted, or, wanted ending in *, begins as it does
        return any(tag.lower() == wanted.lower() or wanted.endswith("*") and
                   tag.lower()[:len(wanted) - 1] == wanted[:-1].lower() for tag in rule_tags)

    if rule_id is not None and {rule_id.lower(), name_of(rule_id).lower()} & {e.lower() for e in excluded}:
        return False
    if any(has(wanted) for wanted in exclude_tags) or tags is not None and not any(has(w) for w in tags):
        return False
    return statuses is None or status is None or status.lower() in statuses


# ------------------------------------------------------------------ the property, through the engine

levels = st.sampled_from([None, "informational", "low", "medium", "High", "critical", "severe"])
TAGS = ["attack.t1059.001", "attack.T1059", "attack.execution", "detection.threat-hunting",
        "Detection.Emerging-Threats"]
tag_sets = st.lists(st.sampled_from(TAGS), max_size=3, unique=True)
TAG_OPTIONS = ["attack.t1059*", "ATTACK.EXECUTION", "detection.threat-hunting", "attack.t1059.001", "detection.*", "*",
               "attack.t1059"]
UNKNOWN = "ffffffff-0000-0000-0000-000000000000"
statuses = st.sampled_from([None, "stable", "Test", "experimental", "deprecated", "unsupported"])
events = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 10, 10, 10]), st.sampled_from(["a", "b"]),
                            st.integers(0, 40)), max_size=25)


@settings(max_examples=80)
@given(metadata=st.lists(st.tuples(levels, statuses, tag_sets), min_size=7, max_size=7),
       generate=st.tuples(st.booleans(), st.booleans()), rows=events,
       min_level=st.sampled_from([None, *LEVELS]),
       status=st.none() | st.sets(st.sampled_from(STATUSES), min_size=1),
       tags=st.none() | st.lists(st.sampled_from(TAG_OPTIONS), min_size=1, max_size=2),
       exclude_tags=st.lists(st.sampled_from(TAG_OPTIONS), max_size=2),
       excluded=st.lists(st.tuples(st.sampled_from(SINGLE + [BASE, CORRELATION, OUTER, UNKNOWN]),
                                   st.sampled_from(["id", "name", "ID"]), st.booleans()), max_size=3))
def test_the_alerts_with_a_selection_are_those_without_it_that_it_keeps(tmp_path_factory, metadata, generate, rows,
                                                                        min_level, status, tags, exclude_tags,
                                                                        excluded):
    ids = SINGLE + [BASE, CORRELATION, OUTER]
    meta = dict(zip(ids, metadata))
    documents = [rule_text(rule_id, *meta[rule_id]) for rule_id in SINGLE + [BASE]]
    documents += [correlation_text(CORRELATION, BASE, 2, generate[0], *meta[CORRELATION]),
                  correlation_text(OUTER, CORRELATION, 1, generate[1], *meta[OUTER])]
    # each excluded rule by its id, its name or its id upper-cased; on the command line or in a file
    written = [{"id": rule_id, "name": name_of(rule_id), "ID": rule_id.upper()}[how] for rule_id, how, _ in excluded]
    options = {"min_level": min_level, "tags": tags, "exclude_tags": exclude_tags,
               "exclude_rules": [text for text, (_, _, in_file) in zip(written, excluded) if not in_file],
               "exclusion_file": [text for text, (_, _, in_file) in zip(written, excluded) if in_file]}
    times, stream = 0, []
    for event_id, host, step in rows:
        times += step
        stream.append({"@timestamp": f"2024-01-01T00:{times // 60:02d}:{times % 60:02d}Z", "EventID": event_id,
                       "Computer": host})
    directory = tmp_path_factory.mktemp("selection")
    options["status"] = ",".join(sorted(status)) if status is not None else None
    passes = {rule_id: kept(*meta[rule_id][:2], min_level, status, meta[rule_id][2], rule_id, tags, exclude_tags,
                            written) for rule_id in ids}
    if not any(passes[rule_id] for rule_id in SINGLE + [BASE]) and not passes[CORRELATION] and not passes[OUTER]:
        with pytest.raises(UsageProblem, match="leaves out every rule"):
            load(directory, documents, **options)
        return
    _, without = run_engine(load(directory, documents), stream)
    engine, selected = run_engine(load(directory, documents, **options), stream)

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
    # the unknown id, and it only, is named as matching no rule, wherever it was given
    assert sorted(e.id for e in engine.unmatched) == \
        sorted(text for text, (rule_id, _, _) in zip(written, excluded) if rule_id == UNKNOWN)


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
           "--min-level high; both stages need the same --min-level); dropped" \
           in correlate.stderr.decode()
    assert b"skipped: 2 of a rule not loaded" in correlate.stderr
    assert sorted(a["rule"]["id"] for a in alerts(correlate.stdout)) == sorted([SINGLE[1], SINGLE[3], CORRELATION])


# ------------------------------------------------------------------ tags and excluded ids

TAGGED = [rule_text(SINGLE[0], tags=["attack.t1059.001", "attack.execution"]),
          rule_text(SINGLE[1], tags=["ATTACK.T1059"]),
          rule_text(SINGLE[2], tags=["detection.threat-hunting", "attack.t1059.003"]),
          rule_text(SINGLE[3]),
          rule_text(BASE, tags=["detection.threat-hunting"]),
          correlation_text(CORRELATION, BASE, 2, True, tags=["attack.credential-access"])]


@pytest.fixture
def tagged_file(tmp_path):
    path = tmp_path / "tagged.yml"
    path.write_text("---\n".join(TAGGED))
    return str(path)


def fired(result):
    assert result.returncode == 0, result.stderr
    return sorted(a["rule"]["id"] for a in alerts(result.stdout))


def test_a_trailing_star_makes_a_tag_a_prefix_and_tags_are_read_in_any_letter_case(tagged_file):
    base = ["--rule", tagged_file, "--workers", "0"]
    assert fired(run_cli_here(base + ["--tag", "Attack.T1059*"], EVENTS.encode())) == SINGLE[:3]
    # without the star the tag is one tag: attack.t1059 itself (rule 02's), not its sub-techniques
    exact = run_cli_here(base + ["--tag", "attack.t1059"], EVENTS.encode())
    assert fired(exact) == [SINGLE[1]]
    assert b"(5 left out by --tag attack.t1059)" in exact.stderr
    # two --tag: either; --exclude-tag wins over --tag
    assert fired(run_cli_here(base + ["--tag", "attack.execution", "--tag", "attack.credential-access"],
                              EVENTS.encode())) == sorted([SINGLE[0], CORRELATION])
    assert fired(run_cli_here(base + ["--tag", "attack.*", "--exclude-tag", "DETECTION.threat-hunting"],
                              EVENTS.encode())) == sorted(SINGLE[:2] + [CORRELATION])


def test_a_correlation_whose_base_rule_is_excluded_by_id_still_fires(tagged_file, tmp_path):
    result = run_cli_here(["--rule", tagged_file, "--workers", "0", "--exclude-rule", BASE.upper()], EVENTS.encode())
    assert fired(result) == sorted(SINGLE + [CORRELATION])
    assert f"(0 left out by --exclude-rule {BASE.upper()}, 1 loaded only to feed correlations)".encode() \
        in result.stderr
    # by a tag too, and through a file; the correlation by its name leaves the base rule nothing to feed
    listed = tmp_path / "noisy.txt"
    listed.write_text(f"\ufeff# shared list\n\n  {name_of(CORRELATION).lower()}   # by name\n")
    result = run_cli_here(["--rule", tagged_file, "--workers", "0", "--exclude-tag", "detection.threat-hunting",
                           "--exclude-rules", str(listed)], EVENTS.encode())
    assert fired(result) == [SINGLE[0], SINGLE[1], SINGLE[3]]
    assert f"(3 left out by --exclude-tag detection.threat-hunting --exclude-rules {listed})".encode() \
        in result.stderr
    explained = run_cli(["explain", "--rule", tagged_file, "--exclude-rule", BASE])
    assert f"alerts    none of its own: its id {BASE} is excluded by --exclude-rule; loaded only because a kept " \
           "correlation reads its matches" in explained.stdout.decode()
    explained = run_cli(["explain", "--rule", tagged_file, "--exclude-rules", str(listed), "--tag", "attack.t1059*"])
    text = explained.stdout.decode()
    assert f"left out by --tag attack.t1059* --exclude-rules {listed}, not loaded (no correlation kept reads " \
           "them): 3\n" in text
    assert f"({CORRELATION}, {tagged_file} (document 6)): its name {name_of(CORRELATION).lower()} is excluded by " \
           f"--exclude-rules {listed} line 3" in text
    assert f"({SINGLE[3]}, {tagged_file} (document 4)): it has no tag that matches --tag attack.t1059*" in text


def test_an_excluded_id_no_rule_has_is_a_warning_counted_in_the_summary(tagged_file, tmp_path):
    listed = tmp_path / "shared.txt"
    listed.write_text(f"{SINGLE[0]}\nffffffff-0000-0000-0000-000000000000 # of a newer rule set\n")
    for strict in ([], ["--strict"]):  # a list shared across rule versions is no mistake, even with --strict
        result = run_cli(["--rule", os.path.dirname(tagged_file), "--workers", "0", "--exclude-rules", str(listed),
                          "--exclude-rule", "gone"] + strict, EVENTS.encode())
        assert fired(result) == sorted(SINGLE[1:] + [BASE, BASE, CORRELATION])
        lines = result.stderr.decode().splitlines()
        assert lines[:2] == [
            f"pipeshell-filter: warning: --exclude-rule: no rule or correlation of {tmp_path} has the id or name "
            "'gone'",
            f"pipeshell-filter: warning: --exclude-rules {listed} line 2: no rule or correlation of {tmp_path} "
            "has the id or name 'ffffffff-0000-0000-0000-000000000000'"]
        assert f"pipeshell-filter: 5 rules (1 left out by --exclude-rule gone --exclude-rules {listed}, 2 excluded " \
               "ids matching no rule); 6 lines" in lines[2]


def test_a_tag_no_rule_has_is_a_warning_and_the_others_still_select(tagged_file):
    rules = os.path.dirname(tagged_file)  # a warning even with --strict: a list of tags is shared as ids are
    result = run_cli(["--rule", rules, "--workers", "0", "--tag", "attack.t1059*", "--tag", "attack.t1095",
                      "--exclude-tag", "detection.threat-huntin", "--strict"], EVENTS.encode())
    lines = result.stderr.decode().splitlines()
    assert lines[:2] == [
        f"pipeshell-filter: warning: --tag attack.t1095: no rule or correlation of {rules} has a tag it matches",
        "pipeshell-filter: warning: --exclude-tag detection.threat-huntin: no rule or correlation of "
        f"{rules} has a tag it matches"]
    matched = run_cli(["--rule", rules, "--workers", "0", "--tag", "attack.t1059*"], EVENTS.encode())
    assert fired(result) == fired(matched) and fired(matched)
    assert b"warning" not in matched.stderr


@pytest.mark.parametrize("args, message", [
    (["--tag", ""], "--tag '': an empty tag"),
    (["--tag", "a", "--exclude-tag", "  "], "--exclude-tag '  ': an empty tag"),
    (["--exclude-rule", ""], "--exclude-rule '': an empty rule id"),
    # a '*' elsewhere than at the end was a literal no tag has: the exclusion excluded nothing, in silence
    (["--exclude-tag", "attack.*.001"], "--exclude-tag 'attack.*.001': '*' only ends a tag (attack.t1059*: every "
                                        "tag it starts)"),
    (["--tag", "**"], "--tag '**': '*' only ends a tag (attack.t1059*: every tag it starts)"),
    (["--exclude-rules", "/nonexistent/list.txt"], "cannot read --exclude-rules file /nonexistent/list.txt: No such "
                                                   "file or directory"),
    (["--exclude-rules", "."], "cannot read --exclude-rules file .: Is a directory"),
    (["--exclude-rules", "LATIN1"], "--exclude-rules file LATIN1 line 2 is not UTF-8 text"),
])
def test_a_bad_tag_or_exclusion_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "LATIN1").write_bytes(b"\xef\xbb\xbfid\nid\xe9\n")
    for command in ([], ["explain"]):
        result = subprocess.run(COMMAND + command + args, capture_output=True, cwd=str(tmp_path), timeout=60)
        assert result.returncode == 2
        assert result.stderr.decode().splitlines() == [f"pipeshell-filter: error: {message}"]
        assert result.stdout == b""


def test_exclusion_files_read_ids_comments_and_blank_lines():
    selection = parse_selection(None, None, ["A*"], ["b"], [" X "])
    assert selection.tags == ("A*",) and selection.exclude_tags == ("b",)
    assert [(e.id, e.where) for e in selection.exclusions] == [("X", "--exclude-rule")]
    assert not parse_selection(None, None) and parse_selection(None, None, exclude_rules=["x"])
    assert selection.options() == "--tag A* --exclude-tag b --exclude-rule X"
    assert selection.option_names_text() == "--tag, --exclude-tag and --exclude-rule"


def test_an_exclusion_file_keeps_a_collection_rules_numbered_id(tmp_path):
    """A v1 collection's rules after the first get ``<id>#<document>``, and README's jq line writes ``ID  # N
    alerts``: ``#`` after the id was read as a comment, so the line excluded the collection's first rule instead."""
    from pipeshell_filter.sigma.selection import read_exclusions

    path = tmp_path / "noisy.txt"
    path.write_text("4d9e1f2a-0000-4000-8000-000000000001#3  # 12 alerts: \"WannaCry\"\n# a comment\nplain#x\n"
                    "  after # blank\nname\t# tab\n")
    assert [e.id for e in read_exclusions(str(path))] == ["4d9e1f2a-0000-4000-8000-000000000001#3", "plain#x",
                                                          "after", "name"]


COLLECTION = "00000000-0000-0000-0000-000000000040"  # a v1 collection's shared id: its rules read EventID 1 and 2


def test_excluding_a_collections_shared_id_excludes_each_of_its_rules_and_a_title_is_one_line(tmp_path):
    """The rules of a v1 collection share its id (numbered ``<id>#N`` here after the first): excluding that id
    left out the first rule alone; it leaves out each, ``<id>#N`` one.  A rule without id nor name is known by its
    title, which an exclusion file's line of several words was refused as (not one id)."""
    documents = [f"action: global\ntitle: Two of one\nid: {COLLECTION}\ndetection:\n  condition: sel\n",
                 "detection: {sel: {EventID: 1}}\n", "detection: {sel: {EventID: 2}}\n", "action: reset\n",
                 "title: Encoded  PowerShell (base64)\ndetection: {sel: {EventID: 3}, condition: sel}\n"]
    second, titled = f"{COLLECTION}#3", "Encoded  PowerShell (base64)"
    rule_set = load(tmp_path, documents, exclude_rules=[COLLECTION.upper()])
    assert [plan.rule.id for plan in rule_set] == [titled] and not rule_set.unmatched
    assert {rule_id: left.why for rule_id, left in rule_set.left_out.items()} == {
        COLLECTION: f"its id {COLLECTION.upper()} is excluded by --exclude-rule",
        second: f"its collection's id {COLLECTION.upper()} is excluded by --exclude-rule"}
    assert [plan.rule.id for plan in load(tmp_path, documents, exclude_rules=[second])] == [COLLECTION, titled]
    rule_set = load(tmp_path, documents, exclusion_file=["encoded  powershell (BASE64)"])  # a comment after it
    assert [plan.rule.id for plan in rule_set] == [COLLECTION, second] and not rule_set.unmatched
    assert [plan.rule.id for plan in load(tmp_path, documents, exclusion_file=["Encoded PowerShell"])] == \
        [COLLECTION, second, titled]  # the title as written, not another
    (tmp_path / "titles.txt").write_text("# Encoded  PowerShell\n\tEncoded  PowerShell (base64)  \n")
    rule_set = load_plans([str(tmp_path / "rules.yml")], None, strict=True, report=lambda message: None,
                          selection=parse_selection(None, None, exclusion_files=[str(tmp_path / "titles.txt")]))
    assert [plan.rule.id for plan in rule_set] == [COLLECTION, second]


def test_two_stages_with_the_same_tags_and_exclusions_alert_as_one_process(tagged_file):
    options = ["--exclude-tag", "detection.threat-hunting", "--exclude-rule", SINGLE[1]]
    one = run_cli(["--rule", tagged_file, "--workers", "0"] + options, EVENTS.encode())
    match = run_cli(["--rule", tagged_file, "--workers", "0", "--stage", "match", "--heartbeat", "0"] + options,
                    EVENTS.encode())
    assert sorted({json.loads(line)["rule"] for line in match.stdout.splitlines()}) == sorted([SINGLE[0], SINGLE[3],
                                                                                              BASE])
    correlate = run_cli(["--rule", tagged_file, "--stage", "correlate"] + options, match.stdout)
    assert alerts(correlate.stdout) == alerts(one.stdout) and fired(one) == sorted([SINGLE[0], SINGLE[3], CORRELATION])
    # a correlate stage given the options, fed by a match stage without them: the message names those given
    every = run_cli(["--rule", tagged_file, "--workers", "0", "--stage", "match", "--heartbeat", "0"], EVENTS.encode())
    correlate = run_cli(["--rule", tagged_file, "--stage", "correlate"] + options, every.stdout)
    assert f"Detection of rule '{SINGLE[1]}', which --exclude-tag detection.threat-hunting --exclude-rule " \
           f"{SINGLE[1]} leaves out here (its id {SINGLE[1]} is excluded by --exclude-rule; both stages need the " \
           "same --exclude-tag and --exclude-rule); dropped" in correlate.stderr.decode()
    assert f"Detection of rule '{SINGLE[2]}', which --exclude-tag detection.threat-hunting --exclude-rule " \
           f"{SINGLE[1]} leaves out here (its tag detection.threat-hunting matches --exclude-tag " \
           "detection.threat-hunting; both" in correlate.stderr.decode()


# ------------------------------------------------------------------ SigmaHQ's Windows rules

SIGMAHQ_ONLY = pytest.mark.skipif(not sigmahq.available(), reason="the shared SigmaHQ checkout is absent")


@pytest.fixture(scope="module")
def windows_run():
    """The arguments running SigmaHQ's Windows rules over 40 regression .evtx, and that run without a selection
    (shared by the tests below: it takes most of their time)."""
    directories = sorted(glob.glob(os.path.join(sigmahq.SIGMAHQ, "rules*", "windows")))
    evtx = sorted({case[2] for case in sigmahq.regression_cases()})[:40]
    args = [arg for directory in directories for arg in ("--rule", directory)] + ["--workers", "0"] + \
        [arg for path in evtx for arg in ("--input", path)]
    every = run_cli(args, timeout=300)
    assert every.returncode == 0, every.stderr[-500:]
    return args, every


def rules_loaded(run) -> int:
    return int(run.stderr.decode().rsplit("pipeshell-filter: ", 1)[1].split(" ")[0])


@SIGMAHQ_ONLY
def test_sigmahq_windows_rules_with_min_level_high_alert_on_a_subset_with_fewer_rules(windows_run):
    """The SigmaHQ rules hold no correlation: the alerts at high are those of the rules at high or above."""
    args, every = windows_run
    high = run_cli(args + ["--min-level", "high"], timeout=300)
    assert high.returncode == 0, high.stderr[-500:]
    loaded, kept_rules = rules_loaded(every), rules_loaded(high)
    assert 0 < kept_rules < loaded * 0.6
    found = alerts(high.stdout)
    assert found and found == [a for a in alerts(every.stdout) if a["rule"]["level"] in ("high", "critical")]
    assert len(found) < len(alerts(every.stdout))


@SIGMAHQ_ONLY
def test_sigmahq_windows_rules_without_threat_hunting_alert_on_a_subset_with_fewer_rules(windows_run):
    """SigmaHQ tags each rule of rules-threat-hunting/ ``detection.threat-hunting``: leaving them out loads
    fewer rules and alerts as before, less the alerts of those rules."""
    args, every = windows_run
    hunting = glob.glob(os.path.join(sigmahq.SIGMAHQ, "rules-threat-hunting", "windows", "**", "*.yml"),
                        recursive=True)
    assert hunting  # the spelling of the tag, checked against the rules themselves
    with open(hunting[0], encoding="utf-8") as handle:
        assert "detection.threat-hunting" in yaml.safe_load(handle)["tags"]
    without = run_cli(args + ["--exclude-tag", "detection.threat-hunting"], timeout=300)
    assert without.returncode == 0, without.stderr[-500:]
    assert 0 < rules_loaded(without) < rules_loaded(every)
    assert b"left out by --exclude-tag detection.threat-hunting)" in without.stderr
    found = alerts(without.stdout)
    expected = [a for a in alerts(every.stdout)
                if "detection.threat-hunting" not in [tag.lower() for tag in a["rule"]["tags"]]]
    assert found and found == expected
    assert len(found) < len(alerts(every.stdout))
