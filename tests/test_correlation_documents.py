"""Sigma v2 correlation documents, ``action`` rule collections and the legacy ``near``.

Loading: every example of the specification (its schema test files and the examples
in its text) loads, with references resolved by id and by name across files and
documents; bad documents are one-line errors (skipped in a directory, exit 2 with
``--strict`` or alone).  Running: each kind, on NDJSON events through the engine, gives
the alerts of the independent oracle (``tests/oracle.py``); aliases are the same as
renaming the field in the events; a chained correlation is the oracle applied twice
(the inner alerts as the outer's events); ``near`` agrees with a brute force written
here.  ``generate`` decides whether the referenced rules alert on their own.
"""

import datetime
import functools
import glob
import json
import os
import re
import select
import subprocess
import tempfile

import jsonschema
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, REPO, alerts, ndjson, run_cli
from oracle import correlation_oracle
from pipeshell_filter.cli import UsageProblem, load_plans, make_resolver
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import NS, parse_time
from pipeshell_filter.sigma.rule import CorrelationRule, Rule, RuleError, parse_rules

SHARED = os.path.join(os.path.dirname(REPO), "shared", "sigma")
SPEC = os.path.join(SHARED, "spec")
ALERT_SCHEMA = json.load(open(os.path.join(REPO, "filter", "pipeshell_filter", "schema", "alert.schema.json")))
RESOLVER = make_resolver("auto", None, None)
BASE = 1_600_000_000  # event times: BASE + seconds


def iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(BASE + seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ns(seconds: int) -> int:
    return (BASE + seconds) * NS


def write(directory, name: str, text: str) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def stub_rule(reference: str, event_id: int = 1) -> str:
    """A base rule that a reference (an id or a name) resolves to."""
    key = "id" if re.fullmatch(r"[0-9a-f-]{36}", reference) else "name"
    return yaml.safe_dump({"title": f"stub {reference}", key: reference,
                           "detection": {"sel": {"EventID": event_id}, "condition": "sel"}})


# ------------------------------------------------------------------ loading: the specification's examples

SCHEMA_EXAMPLES = sorted(glob.glob(os.path.join(SPEC, "tests", "schema", "correlation", "*.yml")))


# The specification comes from the shared checkout beside the repository (CI has it); without it
# these tests are skipped.
needs_spec = pytest.mark.skipif(not os.path.isdir(SPEC), reason="the shared Sigma specification is absent")


def spec_text_examples():
    """The YAML blocks of the specification text that hold a correlation (each with the other
    documents of its block); none without the shared specification."""
    path = os.path.join(SPEC, "specification", "sigma-correlation-rules-specification.md")
    if not os.path.isfile(path):
        return []
    text = open(path).read()
    # (the fragment that only shows how ``rules`` are written has no ``type``: not a document)
    return [block for block in re.findall(r"```ya?ml\n(.*?)```", text, re.S)
            if "correlation:" in block and "type:" in block]


@needs_spec
def test_the_specification_has_what_this_file_tests():
    assert len(SCHEMA_EXAMPLES) == 8
    assert len(spec_text_examples()) >= 9


@pytest.mark.parametrize("path", SCHEMA_EXAMPLES, ids=os.path.basename)
def test_every_schema_example_loads(tmp_path, path):
    [document] = parse_rules(open(path).read(), path)
    assert isinstance(document, CorrelationRule), document
    data = yaml.safe_load(open(path))
    assert document.kind == data["correlation"]["type"]
    assert list(document.group_by) == data["correlation"]["group-by"]
    # its references resolve once rules with those ids or names are loaded with it
    write(tmp_path, "example.yml", open(path).read())
    write(tmp_path, "stubs.yml", "---\n".join(stub_rule(r, i) for i, r in enumerate(document.rules, 1)))
    rule_set = load_plans([str(tmp_path)], None, strict=True)
    [correlation] = rule_set.correlations
    assert [t.written for t in correlation.targets] == list(document.rules)
    assert correlation.spec.timespan_ns == document.timespan_ns
    assert set(rule_set.quiet) == {p.rule.id for p in rule_set}  # generate false: the rules do not alert alone


@pytest.mark.parametrize("index", range(len(spec_text_examples())))
def test_every_example_in_the_specification_text_loads(tmp_path, index):
    """The text's fragments leave out the (mandatory) title; each gets one here, and rules it
    refers to that the block does not define get a stub."""
    documents = [d for d in yaml.safe_load_all(spec_text_examples()[index]) if d]
    for number, document in enumerate(documents):
        document.setdefault("title", f"fragment {number}")
    defined = {str(d.get(k)) for d in documents for k in ("id", "name") if d.get(k)}
    wanted = [r for d in documents if "correlation" in d for r in d["correlation"]["rules"] if r not in defined]
    write(tmp_path, "block.yml", yaml.safe_dump_all(documents))
    if wanted:
        write(tmp_path, "stubs.yml", "---\n".join(stub_rule(r, i) for i, r in enumerate(wanted, 1)))
    rule_set = load_plans([str(tmp_path)], None, strict=True)
    assert len(rule_set.correlations) == sum(1 for d in documents if "correlation" in d)


@needs_spec
def test_the_complete_example_chains_by_name(tmp_path):
    """The specification's closing example: four documents in one file, references by name,
    a temporal_ordered correlation over an event_count one."""
    [block] = [b for b in spec_text_examples() if "Multiple failed logons" in b]
    rule_set = load_plans([write(tmp_path, "brute.yml", block)], None)
    inner, outer = rule_set.correlations  # inner first
    assert [inner.rule.name, outer.rule.name] == ["multiple_failed_login", None]
    assert [ref.chained for ref in outer.spec.rules] == [True, False]
    assert outer.spec.rules[0].rule == inner.spec.id == "a8418a5a-5fc4-46b5-b23b-6c73beb19d41"
    assert rule_set.quiet == {inner.spec.id, "53ba33fd-3a50-4468-a5ef-c583635cfa92",
                              "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8"}


# ------------------------------------------------------------------ loading: errors

FAILED = """title: Failed login
name: failed_login
detection: {sel: {EventID: 4625}, condition: sel}
"""


def correlation_doc(**section):
    body = {"type": "event_count", "rules": ["failed_login"], "group-by": ["User"], "timespan": "5m",
            "condition": {"gte": 3}}
    body.update(section)
    return yaml.safe_dump({"title": "many failures", "id": "many", "correlation": body})


@pytest.mark.parametrize("section, message", [
    ({"rules": ["nobody"]}, "unknown rule 'nobody'"),
    ({"type": "count"}, "'type'"),
    ({"condition": {"more": 3}}, "unknown operator 'more'"),
    ({"condition": {"gte": "three"}}, "not a number"),
    ({"condition": {"gte": True}}, "not a number"),
    ({"condition": {}}, "no operator"),
    ({"type": "value_count"}, "needs 'field'"),
    ({"type": "value_sum", "condition": {"gt": 1, "field": ["a", "b"]}}, "several fields"),
    ({"condition": {"gte": 1, "field": "x"}}, "takes no 'field'"),
    ({"timespan": "soon"}, "timespan"),
    ({"timespan": None}, "timespan"),
    ({"groupby": ["User"]}, "unknown key 'groupby'"),
    ({"rules": ["failed_login", "failed_login"]}, "twice"),
    ({"rules": []}, "at least one rule"),
    ({"aliases": {"ip": {"someone_else": "x"}}}, "unknown rule 'someone_else'"),
    ({"aliases": {"ip": {"failed_login": 5}}}, "field name"),
    ({"generate": "yes"}, "'generate'"),
])
def test_bad_correlation_is_one_line_naming_it(tmp_path, section, message):
    rules = write(tmp_path, "base.yml", FAILED)
    bad = write(tmp_path, "bad.yml", correlation_doc(**section))
    with pytest.raises(UsageProblem) as excinfo:
        load_plans([rules, bad], None)
    text = str(excinfo.value)
    assert message in text and bad in text and "\n" not in text


def test_unknown_reference_in_a_directory_is_skipped_and_strict_exits_2(tmp_path):
    write(tmp_path, "base.yml", FAILED)
    write(tmp_path, "good.yml", correlation_doc())
    write(tmp_path, "bad.yml", correlation_doc(rules=["missing_rule"]).replace("id: many", "id: bad"))
    write(tmp_path, "worse.yml", yaml.safe_dump({"title": "on the bad one", "correlation": {
        "type": "event_count", "rules": ["bad"], "timespan": "1h", "condition": {"gte": 2}}}))
    result = run_cli(["--rule", str(tmp_path)], b"")
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.decode().splitlines() if "skipped:" in line]
    assert len(skipped) == 2
    assert "bad.yml" in skipped[0] and "unknown rule 'missing_rule'" in skipped[0]
    assert "worse.yml" in skipped[1] and "refers to correlation 'bad', which could not be loaded" in skipped[1]
    strict = run_cli(["--rule", str(tmp_path), "--strict"], b"")
    assert strict.returncode == 2
    assert len(strict.stderr.splitlines()) == 1 and b"missing_rule" in strict.stderr \
        and b"Traceback" not in strict.stderr


def test_cycles_and_ambiguous_names_are_errors(tmp_path):
    def one(name, rules, group_by=("User",)):
        return yaml.safe_dump({"title": name, "name": name, "correlation": {
            "type": "event_count", "rules": list(rules), "group-by": list(group_by), "timespan": "1m",
            "condition": {"gte": 1}}})
    cycle = write(tmp_path, "cycle.yml", one("x", ["y"]) + "---\n" + one("y", ["x"]))
    with pytest.raises(UsageProblem, match="cycle"):
        load_plans([write(tmp_path, "base.yml", FAILED), cycle], None)
    twice = write(tmp_path, "twice.yml", "---\n".join(
        FAILED.replace("name: failed_login", f"id: {i}\nname: failed_login") for i in ("r1", "r2")))
    with pytest.raises(UsageProblem, match="ambiguous"):
        load_plans([twice, write(tmp_path, "c.yml", correlation_doc())], None)


def test_a_reference_means_an_id_or_a_name_before_another_rules_title(tmp_path):
    """A rule with neither id nor name is known by its title; a reference that is another rule's
    name finds that rule, not the one whose title happens to read the same."""
    titled = "title: failed_login\ndetection: {sel: {EventID: 4624}, condition: sel}\n"
    named = FAILED.replace("name: failed_login", "id: 11111111-1111-4111-8111-111111111111\nname: failed_login")
    rule_set = load_plans([write(tmp_path, "rules.yml", titled + "---\n" + named + "---\n" + correlation_doc())],
                          None, strict=True)
    assert [ref.rule for ref in rule_set.correlations[0].spec.inputs] == ["11111111-1111-4111-8111-111111111111"]
    alone = load_plans([write(tmp_path, "alone.yml", titled + "---\n" + correlation_doc())], None, strict=True)
    assert [ref.rule for ref in alone.correlations[0].spec.inputs] == ["failed_login"]  # the title, when alone


def test_a_uuid_reference_in_another_letter_case_finds_its_rule(tmp_path):
    """Rule ids are UUIDs, which compare whatever their letter case (pySigma reads them as UUIDs)."""
    upper = FAILED.replace("name: failed_login", "id: AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA")
    rule_set = load_plans([write(tmp_path, "r.yml", upper + "---\n" + correlation_doc(
        rules=["aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"]))], None, strict=True)
    assert [ref.rule for ref in rule_set.correlations[0].spec.inputs] == ["AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA"]
    with pytest.raises(UsageProblem, match="unknown rule"):  # a name is still compared as written
        load_plans([write(tmp_path, "n.yml", FAILED + "---\n" + correlation_doc(rules=["Failed_Login"]))], None)


def test_a_document_cannot_be_both_rule_and_correlation():
    [error] = parse_rules(yaml.safe_dump({"title": "t", "detection": {"s": {"a": 1}, "condition": "s"},
                                          "correlation": {"type": "temporal"}}), "x.yml")
    assert isinstance(error, RuleError) and "not both" in str(error)


# ------------------------------------------------------------------ action: global / reset / repeat

COLLECTION = """action: global
title: Shared title
tags: [attack.t1059]
detection:
  filter: {User: admin}
  condition: selection and not filter
---
id: one
logsource: {product: windows}
detection:
  selection: {EventID: 1}
---
action: repeat
id: two
detection:
  selection: {EventID: 2}
---
id: three
title: Its own title
detection:
  selection: {EventID: 3}
---
action: reset
---
id: four
title: Alone
detection:
  selection: {EventID: 4}
  condition: selection
"""


def test_action_global_reset_and_repeat():
    rules = parse_rules(COLLECTION, "c.yml")
    assert all(isinstance(r, Rule) for r in rules), rules
    one, two, three, four = rules
    assert [r.id for r in rules] == ["one", "two", "three", "four"]
    assert one.title == two.title == "Shared title" and one.tags == ("attack.t1059",)
    assert one.condition.text == "selection and not filter" and set(one.detection) == {"filter", "selection"}
    assert two.detection["selection"] == {"EventID": 2} and two.logsource == {"product": "windows"}  # repeat
    assert three.title == "Shared title"  # the global content wins, as sigmac merged it
    assert four.title == "Alone" and four.tags == () and set(four.detection) == {"selection"}  # reset
    assert one.path == "c.yml (document 2)"


SHARED_ID = """action: global
title: WannaCry
id: 4d9e1f2a-0000-4000-8000-000000000001
detection:
  condition: selection
---
logsource: {product: windows, service: security}
detection:
  selection: {EventID: 4688}
---
logsource: {product: windows, service: sysmon}
detection:
  selection: {EventID: 1}
---
action: repeat
detection:
  selection: {EventID: 11}
---
id: own
detection:
  selection: {EventID: 12}
---
action: reset
---
title: Alone
detection:
  selection: {EventID: 13}
  condition: selection
---
title: Alone
detection:
  selection: {EventID: 14}
  condition: selection
"""


def test_a_collections_rules_sharing_the_global_id_or_title_each_get_one(tmp_path):
    """The v1 style: the global document holds the title, often the id, that every rule document
    then shares; every rule after the first was refused as a duplicate id (exit 2; in a directory,
    skipped: detections lost). Each gets the shared id with its document's number, unless it sets
    its own."""
    rules = parse_rules(SHARED_ID, "w.yml")
    shared = "4d9e1f2a-0000-4000-8000-000000000001"
    # the global content wins over the document's (as sigmac merged): its id too
    # two documents of one title and no id are two rules as well
    assert [r.id for r in rules] == [shared, f"{shared}#3", f"{shared}#4", f"{shared}#5", "Alone", "Alone#8"]
    assert [r.title for r in rules] == ["WannaCry"] * 4 + ["Alone"] * 2
    without_id = SHARED_ID.replace(f"id: {shared}\n", "")
    assert [r.id for r in parse_rules(without_id, "w.yml")][:4] == ["WannaCry", "WannaCry#3", "WannaCry#4", "own"]
    assert len(list(load_plans([write(tmp_path, "w.yml", SHARED_ID)], None))) == 6
    twice = "id: mine\n" + SHARED_ID.rsplit("---", 1)[1].lstrip("\n")  # an id written twice: still refused
    with pytest.raises(UsageProblem, match="already names"):
        load_plans([write(tmp_path, "twice.yml", twice + "---\n" + twice)], None)


# A v1 collection whose rules share the id 'kerb' (the second numbered 'kerb#3'), and a rule of its own
KERB_COLLECTION = ("action: global\ntitle: Kerberos failures\nid: kerb\ndetection:\n  condition: sel\n"
                   "---\ndetection: {sel: {EventID: 4625}}\n---\ndetection: {sel: {EventID: 4771}}\n---\n"
                   "action: reset\n---\ntitle: success\nid: success\n"
                   "detection: {sel: {EventID: 4624}, condition: sel}\n")


@pytest.mark.parametrize("kind, rules, condition, events, fired", [
    # one of each of the collection's rules: two failures of the collection
    ("event_count", ["kerb"], {"gte": 2}, [(0, 4625), (5, 4771)], [5]),
    ("event_count", ["kerb#3"], {"gte": 2}, [(0, 4625), (5, 4771), (9, 4771)], [9]),  # that one rule only
    # a temporal input named by the shared id is met by any rule of the collection, not by each
    ("temporal_ordered", ["kerb", "success"], None, [(0, 4771), (5, 4624)], [5]),
    ("temporal", ["kerb", "success"], None, [(0, 4625), (5, 4624)], [5]),
    ("temporal_ordered", ["kerb", "success"], None, [(0, 4624), (5, 4771)], []),
])
def test_a_correlation_naming_a_collections_shared_id_reads_each_of_its_rules(tmp_path, kind, rules, condition,
                                                                             events, fired):
    """A correlation naming a collection's shared id read its first rule alone (and the others alerted on their
    own); it reads every rule of the collection as one input, ``<id>#N`` one rule."""
    section = {"type": kind, "rules": rules, "group-by": ["User"], "timespan": "1m"}
    if condition is not None:
        section["condition"] = condition
    text = KERB_COLLECTION + "---\n" + yaml.safe_dump({"title": "burst", "id": "burst", "correlation": section})
    rule_set = load_plans([write(tmp_path, "k.yml", text)], None, strict=True)
    found = run_engine(rule_set, [event(seconds, event_id, "u1") for seconds, event_id in events])
    # without generate, the rules it reads do not alert on their own: each rule of the collection named by its id
    named = {"kerb": {"kerb", "kerb#3"}, "kerb#3": {"kerb#3"}, "success": {"success"}}
    quiet = set().union(*(named[written.lower()] for written in rules))
    assert rule_set.quiet == quiet
    assert [(a["rule"]["id"], a["@timestamp"]) for a in found if a["rule"]["id"] == "burst"] == \
        [("burst", iso(seconds)) for seconds in fired]
    assert not {a["rule"]["id"] for a in found} & quiet



def test_a_collections_shared_id_in_an_alias_and_with_a_counting_rule(tmp_path):
    """An alias naming the shared id gives the field of each rule of the collection; a collection one of whose
    rules counts events itself is one input of two sorts (detections and alerts): refused, naming the way out."""
    section = {"type": "value_count", "rules": ["kerb", "success"], "group-by": ["who"], "timespan": "1m",
               "condition": {"gte": 2, "field": "Val"}, "aliases": {"who": {"kerb": "TargetUser", "success": "User"}}}
    text = KERB_COLLECTION + "---\n" + yaml.safe_dump({"title": "spread", "id": "spread", "correlation": section})
    rule_set = load_plans([write(tmp_path, "k.yml", text)], None, strict=True)
    [correlation] = rule_set.correlations
    assert correlation.spec.aliases == (("who", (("kerb", "TargetUser"), ("kerb#3", "TargetUser"),
                                                 ("success", "User"))),)
    events = [event(0, 4771, value=1, TargetUser="u1"), event(5, 4624, "u1", value=2)]
    assert [a["rule"]["id"] for a in run_engine(rule_set, events)] == ["spread"]
    counting = ("action: global\ntitle: Kerberos failures\nid: kerb\n---\ndetection: {sel: {EventID: 4625}, "
                "condition: sel}\n---\n"
                "detection: {sel: {EventID: 4771}, timeframe: 1m, condition: sel | count() > 3}\n")
    text = counting + "---\n" + yaml.safe_dump({"title": "burst", "id": "burst", "correlation": {
        "type": "event_count", "rules": ["kerb"], "timespan": "1m", "condition": {"gte": 2}}})
    with pytest.raises(UsageProblem, match="'kerb' names the rules of a collection, and 'kerb#3' of them counts "
                                           "events itself: name its rules one by one"):
        load_plans([write(tmp_path, "k.yml", text)], None, strict=True)



def test_a_collections_shared_id_still_names_its_rules_when_its_first_failed_to_load(tmp_path):
    """In a directory a rule that fails to load is skipped: the id the collection's other rules share still
    names them (the reference found no document of that id, and the correlation was skipped too)."""
    broken = KERB_COLLECTION.replace("detection: {sel: {EventID: 4625}}", "detection: {sel: {EventID|bad: 4625}}")
    (tmp_path / "rules").mkdir()
    burst = {"title": "burst", "id": "burst", "correlation": {"type": "event_count", "rules": ["kerb"],
                                                              "timespan": "1m", "condition": {"gte": 2}}}
    write(tmp_path / "rules", "k.yml", broken + "---\n" + yaml.safe_dump(burst))
    skipped = []
    rule_set = load_plans([str(tmp_path / "rules")], None, report=skipped.append)
    assert len(skipped) == 1 and "document 2" in skipped[0], skipped
    [correlation] = rule_set.correlations
    assert [(ref.rule, ref.also) for ref in correlation.spec.rules] == [("kerb#3", ())]


def test_one_uuid_written_in_two_letter_cases_is_one_id(tmp_path):
    """A reference finds a UUID in any letter case (or in braces), so two rules whose ids are one UUID so written
    are two rules of one id, refused: both loaded, a correlation's reference took the one written alike and
    silenced it, while the other alerted on its own."""
    rule = "title: {}\nid: {}\nlogsource: {{product: windows}}\ndetection:\n  s: {{f: 1}}\n  condition: s\n"
    upper, lower = "5F5F5F5F-0000-4000-8000-00000000000A", "5f5f5f5f-0000-4000-8000-00000000000a"
    for other in (lower, "'{" + lower + "}'"):
        paths = [write(tmp_path, "a.yml", rule.format("a", upper)), write(tmp_path, "b.yml", rule.format("b", other))]
        with pytest.raises(UsageProblem, match="already names"):
            load_plans(paths, None)


@pytest.mark.parametrize("text, message", [
    ("action: repeat\nid: x\n", "needs a rule document before it"),
    ("action: merge\ntitle: x\n", "unknown 'action: 'merge''"),
    ("action: global\ntitle: x\n", "only 'action' documents"),
])
def test_bad_action_documents(text, message):
    try:
        results = parse_rules(text, "a.yml")
    except RuleError as error:
        results = [error]
    assert any(isinstance(r, RuleError) and message in str(r) for r in results), results


def test_action_global_over_a_correlation_document(tmp_path):
    text = (FAILED + "---\naction: global\ncorrelation:\n  timespan: 10m\n  group-by: [User]\n---\n"
            + yaml.safe_dump({"title": "c", "correlation": {"type": "event_count", "rules": ["failed_login"],
                                                           "condition": {"gte": 2}}}))
    rule_set = load_plans([write(tmp_path, "g.yml", text)], None)
    [correlation] = rule_set.correlations
    assert correlation.spec.group_by == ("User",) and correlation.spec.timespan_ns == 600 * NS


def test_a_correlation_document_after_a_v1_collection_takes_no_rule_section(tmp_path):
    """A legacy collection whose global document holds the shared detection and logsource, and a
    correlation of its rules in the same file: the correlation took the global 'detection' too and
    was refused as "a rule and a correlation" (in a directory, skipped)."""
    text = ("action: global\ntitle: Logons\nlogsource: {product: windows}\ndetection:\n  condition: selection\n---\n"
            "id: failed\ndetection:\n  selection: {EventID: 4625}\n---\n"
            "id: success\ndetection:\n  selection: {EventID: 4624}\n---\n"
            + yaml.safe_dump({"title": "failed then success", "id": "then", "correlation": {
                "type": "temporal_ordered", "rules": ["failed", "success"], "group-by": ["User"], "timespan": "1m"}}))
    failed, success, correlation = parse_rules(text, "c.yml")
    assert isinstance(correlation, CorrelationRule), correlation
    assert failed.logsource == success.logsource == {"product": "windows"}
    assert failed.condition.text == "selection"
    rule_set = load_plans([write(tmp_path, "c.yml", text)], None)
    found = run_engine(rule_set, [event(0, 4625, "u1"), event(5, 4624, "u2"), event(9, 4624, "u1")])
    assert [(a["rule"]["id"], a["@timestamp"]) for a in found] == [("then", iso(9))]


def test_a_correlation_documents_own_id_and_title_win_over_the_global_documents(tmp_path):
    """The global document's id and title replaced a correlation document's own (its own id then
    numbered from the global's: 'wannacry#3'), so alerts carried the rules' title and an id the
    document never had. The global content is the correlation's defaults: level, tags here."""
    text = ("action: global\ntitle: WannaCry\nid: wannacry\nlevel: high\ntags: [attack.t1486]\n"
            "logsource: {product: windows}\ndetection:\n  condition: selection\n---\n"
            "detection:\n  selection: {EventID: 4625}\n---\n"
            + yaml.safe_dump({"title": "WannaCry burst", "id": "burst", "correlation": {
                "type": "event_count", "rules": ["wannacry"], "timespan": "1m", "condition": {"gte": 2}}})
            + "---\n" + yaml.safe_dump({"correlation": {
                "type": "event_count", "rules": ["wannacry"], "timespan": "1m", "condition": {"gte": 3}}}))
    rule, own, defaults = parse_rules(text, "w.yml")
    assert isinstance(own, CorrelationRule) and isinstance(defaults, CorrelationRule), (own, defaults)
    assert (rule.id, rule.title) == ("wannacry", "WannaCry")
    assert (own.id, own.title, own.level, own.tags) == ("burst", "WannaCry burst", "high", ("attack.t1486",))
    assert (defaults.id, defaults.title) == ("wannacry#4", "WannaCry")  # none of its own: the global's, numbered
    rule_set = load_plans([write(tmp_path, "w.yml", text)], None, strict=True)
    found = run_engine(rule_set, [event(0, 4625, "u1"), event(5, 4625, "u2")])
    assert [(a["rule"]["id"], a["rule"]["name"]) for a in found] == [("burst", "WannaCry burst")]


# ------------------------------------------------------------------ running every kind against the oracle

BASE_RULES = "---\n".join(yaml.safe_dump({"title": f"rule {name}", "id": name, "name": f"n_{name}",
                                          "detection": {"sel": {"EventID": eid}, "condition": "sel"}})
                          for name, eid in (("a", 1), ("b", 2), ("c", 3)))
RULE_OF = {1: "a", 2: "b", 3: "c"}


@functools.lru_cache(maxsize=None)
def rule_set_of(*documents: str):
    with tempfile.TemporaryDirectory(prefix="corrdocs-") as directory:
        paths = [write(directory, f"d{i}.yml", text) for i, text in enumerate(documents)]
        return load_plans(paths, None, strict=True)


def run_engine(rule_set, events, lateness: int = 0):
    engine = Engine(rule_set, RESOLVER, lateness * NS)
    found = []
    for line, event in enumerate(events, 1):
        found += engine.process(event, line).alerts
    return found + engine.flush()


def event(seconds, event_id, user=None, value=None, host="h1", **more):
    record = {"@timestamp": iso(seconds), "EventID": event_id, "Computer": host, **more}
    if user is not None:
        record["User"] = user
    if value is not None:
        record["Val"] = value
    return record


def test_an_alerts_events_are_in_time_order_whatever_their_texts():
    """``...00.5Z`` sorts before ``...00Z`` as text: the alert listed the half second first."""
    texts = ["2026-01-05T10:00:00Z", "2026-01-05T10:00:00.5Z", "2026-01-05T10:00:01Z", "2026-01-05T10:00:01.25+00:00"]
    events = [dict(event(0, 4625, user="amy"), **{"@timestamp": text}) for text in texts]
    (alert,) = run_engine(rule_set_of(FAILED, correlation_doc(condition={"gte": 4})), events)
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [1, 2, 3, 4]


def detections_of(events, fields=("User", "Val")):
    """The oracle's view: (time, rule, fields, ident = input line) per event a base rule matches."""
    return [(parse_time(e["@timestamp"]) // NS - BASE, RULE_OF[e["EventID"]],
             {f: [str(e[f])] for f in fields if f in e}, line)
            for line, e in enumerate(events, 1) if e["EventID"] in RULE_OF]


def seen_alerts(found, correlation_id, group_by):
    """(time ns, group, lines of its events, value) of the alerts of one correlation."""
    shown = []
    for alert in found:
        jsonschema.validate(alert, ALERT_SCHEMA)
        if alert["rule"]["id"] != correlation_id:
            continue
        group = alert["sigma"]["correlation"]["group"]
        shown.append((parse_time(alert["@timestamp"]), tuple(group[name] for name in group_by),
                      frozenset(ref["line"] for ref in alert["sigma"]["events"]),
                      alert["sigma"]["correlation"]["value"]))
    return shown


def expected(kind, refs, timespan, bounds, group_by, field, detections):
    hits = correlation_oracle(kind, refs, ns(timespan) - ns(0), bounds, group_by, field, False,
                              [(ns(t), rule, fields, ident) for t, rule, fields, ident in detections])
    return [(t, group, idents, value) for t, group, idents, value in hits]


KIND_NUMBERS = {"event_count": st.integers(0, 5), "value_count": st.integers(0, 4), "temporal": st.integers(0, 3),
                "temporal_ordered": st.integers(0, 3), "value_sum": st.sampled_from([-1, 0, 1.5, 3, 4, 7]),
                "value_avg": st.sampled_from([0, 1, 1.5, 2, 2.5]),
                "value_percentile": st.sampled_from([0, 25, 50, 100])}
OPERATORS = ["gt", "gte", "lt", "lte", "eq", "neq"]
EVENTS = st.lists(st.tuples(st.integers(0, 12), st.sampled_from([1, 2, 3, 4]), st.sampled_from([None, "alice", "bob"]),
                            st.sampled_from([None, "1", "2", "2.5", "-1", "x"]), st.sampled_from(["h1", "h2"])),
                  min_size=1, max_size=14)


@pytest.mark.parametrize("kind", sorted(KIND_NUMBERS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_each_kind_agrees_with_the_oracle(kind, data):
    refs = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True), label="rules")
    bounds = data.draw(st.dictionaries(st.sampled_from(OPERATORS), KIND_NUMBERS[kind], max_size=2), label="bounds")
    if not bounds and kind not in ("temporal", "temporal_ordered"):
        bounds = {"gte": 1}
    group_by = data.draw(st.sampled_from([[], ["User"]]), label="group_by")
    timespan = data.draw(st.integers(1, 6), label="timespan")
    field = "Val" if kind in ("value_sum", "value_avg", "value_percentile") else \
        ("User" if kind == "value_count" else None)
    condition = dict(bounds, **({"field": field} if field else {}))
    section = {"type": kind, "rules": [f"n_{r}" if i % 2 else r for i, r in enumerate(refs)],
               "group-by": group_by, "timespan": f"{timespan}s"}
    if condition:
        section["condition"] = condition
    document = yaml.safe_dump({"title": "under test", "id": "k", "correlation": section})
    rows = sorted(data.draw(EVENTS, label="events"), key=lambda r: r[0])
    events = [event(t, eid, user, value, host) for t, eid, user, value, host in rows]
    found = run_engine(rule_set_of(BASE_RULES, document), events)
    if not bounds:  # temporal kinds without a condition: every referenced rule
        bounds = {"gte": len(refs)}
    want = expected(kind, refs, timespan, sorted(bounds.items()), group_by, field, detections_of(events))
    assert seen_alerts(found, "k", group_by) == want
    # the referenced rules do not alert on their own; the others do, on each event
    alone = [e["EventID"] for e in events if RULE_OF.get(e["EventID"]) not in (None, *refs)]
    assert len(found) - len(want) == len(alone)


def test_every_operator_and_a_range(tmp_path):
    """event_count by User, 1 to 4 events per 10 s window, written as ranges and single bounds.  A lower
    bound alone is met by the window ending at an event; one with an upper bound is judged on the 10 s
    from a group's earliest event not yet taken, at their end (alice's from 0 holds four, bob's one)."""
    events = [event(t, 1, "alice") for t in (0, 1, 2, 3)] + [event(30, 1, "bob")]
    for condition, fired in [({"gte": 2, "lte": 3}, []), ({"gte": 2, "lte": 4}, [10]), ({"gt": 3}, [3]),
                             ({"lt": 2}, [40]), ({"eq": 4}, [10]), ({"neq": 1}, [10]), ({"lte": 1}, [40]),
                             ({"gt": 1, "lt": 3}, []), ({"gte": 1, "lt": 5}, [10, 40]), ({"gte": 2}, [1, 3])]:
        document = yaml.safe_dump({"title": "r", "id": "r", "correlation": {
            "type": "event_count", "rules": ["a"], "group-by": ["User"], "timespan": "10s", "condition": condition}})
        found = run_engine(rule_set_of(BASE_RULES, document), events)
        assert [parse_time(a["@timestamp"]) for a in found] == [ns(t) for t in fired], condition


# ------------------------------------------------------------------ aliases, generate, chains

def alias_document(timespan, kind):
    return yaml.safe_dump({"title": "aliased", "id": "al", "correlation": {
        "type": kind, "rules": ["n_a", "b"], "group-by": ["ip"], "timespan": f"{timespan}s",
        "aliases": {"ip": {"n_a": "Destination", "b": "Source"}}}})


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 10), st.sampled_from([1, 2]),
                               st.sampled_from([None, "10.0.0.1", "10.0.0.2"]),
                               st.sampled_from([None, "10.0.0.1", "10.0.0.2"])), min_size=1, max_size=12),
       timespan=st.integers(1, 5), kind=st.sampled_from(["temporal", "temporal_ordered"]))
def test_aliases_are_the_same_as_renaming_the_field_in_the_events(rows, timespan, kind):
    rows = sorted(rows, key=lambda r: r[0])
    events = [event(t, eid, Source=src, Destination=dst) for t, eid, src, dst in rows]
    for e in events:  # a field that is absent is absent (not null)
        for key in ("Source", "Destination"):
            if e[key] is None:
                del e[key]
    found = run_engine(rule_set_of(BASE_RULES, alias_document(timespan, kind)), events)
    renamed = [(ns(t), RULE_OF[e["EventID"]], {"ip": [e[{1: "Destination", 2: "Source"}[e["EventID"]]]]}
                if {1: "Destination", 2: "Source"}[e["EventID"]] in e else {}, line)
               for line, (e, (t, *_)) in enumerate(zip(events, rows), 1)]
    want = correlation_oracle(kind, ["a", "b"], ns(timespan) - ns(0), [("gte", 2)], ["ip"], None, False, renamed)
    assert seen_alerts(found, "al", ["ip"]) == want


def chain_documents(inner_gte, inner_span, outer_kind, outer_span, generate=False):
    """``inner_gte``: the inner count's least number of events, or its whole condition."""
    inner = {"title": "inner", "id": "inner", "name": "many_a", "correlation": {
        "type": "event_count", "rules": ["a"], "group-by": ["User"], "timespan": f"{inner_span}s",
        "condition": inner_gte if isinstance(inner_gte, dict) else {"gte": inner_gte}}}
    outer = {"title": "outer", "id": "outer", "correlation": {
        "type": outer_kind, "rules": ["many_a", "b"], "group-by": ["User"], "timespan": f"{outer_span}s",
        "generate": generate}}
    return yaml.safe_dump(outer) + "---\n" + yaml.safe_dump(inner)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 14), st.sampled_from([1, 1, 2, 3]),
                               st.sampled_from(["alice", "bob", None]),
                               st.sampled_from(["h1", "h2", "h3"])), min_size=1, max_size=16),
       inner_gte=st.one_of(st.integers(1, 3), st.sampled_from([{"lt": 2}, {"lte": 2}, {"gte": 2, "lte": 3}])),
       inner_span=st.integers(1, 5), outer_span=st.integers(1, 6),
       outer_kind=st.sampled_from(["temporal", "temporal_ordered"]), lateness=st.integers(0, 3))
def test_a_chain_is_the_oracle_applied_twice(rows, inner_gte, inner_span, outer_kind, outer_span, lateness):
    """Inner alerts (event_count of rule a by User) are the outer correlation's events, at the time
    of the inner window's end (its last event's; with an upper bound, its start + timespan) with
    their group values; the outer's alerts are the oracle's over them and rule b's events.  Only the
    outer alerts (generate false)."""
    rows = sorted(rows, key=lambda r: r[0])
    events = [event(t, eid, user, host=host) for t, eid, user, host in rows]
    found = run_engine(rule_set_of(BASE_RULES, chain_documents(inner_gte, inner_span, outer_kind, outer_span)),
                       events, lateness)
    detections = detections_of(events, ("User",))
    times = {ident: t for t, _, _, ident in detections}
    bounds = sorted(inner_gte.items()) if isinstance(inner_gte, dict) else [("gte", inner_gte)]
    inner = correlation_oracle("event_count", ["a"], ns(inner_span) - ns(0), bounds, ["User"], None,
                               False, [(ns(t), r, f, i) for t, r, f, i in detections])
    fed = [(ns(t), r, f, i) for t, r, f, i in detections if r == "b"]
    for end, group, idents, _ in inner:
        last = max(idents, key=lambda i: (times[i], i))
        fed.append((end, "inner", {"User": [group[0]]} if group[0] is not None else {}, last))
    want = correlation_oracle(outer_kind, ["inner", "b"], ns(outer_span) - ns(0), [("gte", 2)], ["User"], None,
                              False, sorted(fed, key=lambda d: (d[0], d[3])))
    assert seen_alerts(found, "outer", ["User"]) == [(t, g, i, v) for t, g, i, v in want]
    assert {a["rule"]["id"] for a in found} <= {"outer", "c"}  # c: referenced by nothing


def chain_on_another_field(inner_gte, inner_span, outer_kind, outer_span):
    """The specification's note: the inner correlation counts rule a per Computer, the outer one
    groups by User, a field the inner one does not group by."""
    inner = {"title": "inner", "id": "inner", "name": "many_a", "correlation": {
        "type": "event_count", "rules": ["a"], "group-by": ["Computer"], "timespan": f"{inner_span}s",
        "condition": {"gte": inner_gte}}}
    outer = {"title": "outer", "id": "outer", "correlation": {
        "type": outer_kind, "rules": ["many_a", "b"], "group-by": ["User"], "timespan": f"{outer_span}s",
        **({"condition": {"gte": 2}} if outer_kind == "event_count" else {})}}
    return yaml.safe_dump(outer) + "---\n" + yaml.safe_dump(inner)


def test_an_outer_correlation_groups_by_its_own_field_as_the_specification_notes():
    """"Even if the rule many_failed_logins groups by the "ComputerName" field, the correlation rule
    only uses its own group-by "User"": the outer correlation was refused ('User' is not among the
    group-by fields of the inner one), so it never alerted and rules a and b alerted on their own.
    An inner alert is in the outer group of each user among its events (a spray over users)."""
    rule_set = rule_set_of(BASE_RULES, chain_on_another_field(3, 10, "temporal_ordered", 30))
    brute = [event(0, 1, "amy"), event(1, 1, "amy"), event(2, 1, "amy"), event(5, 2, "amy"), event(6, 2, "bob")]
    [alert] = run_engine(rule_set, brute)
    assert alert["rule"]["id"] == "outer" and alert["sigma"]["correlation"]["group"] == {"User": "amy"}
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [3, 4]
    spray = [event(0, 1, "amy"), event(1, 1, "bob"), event(2, 1, "cat"), event(5, 2, "bob"), event(6, 2, "dan")]
    [alert] = run_engine(rule_set, spray)
    assert alert["sigma"]["correlation"]["group"] == {"User": "bob"}
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [2, 4]  # bob's own failure, then his logon


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 14), st.sampled_from([1, 1, 2, 3]),
                               st.sampled_from(["alice", "bob", None]),
                               st.sampled_from(["h1", "h2"])), min_size=1, max_size=16),
       inner_gte=st.integers(1, 3), inner_span=st.integers(1, 5), outer_span=st.integers(1, 6),
       outer_kind=st.sampled_from(["temporal", "temporal_ordered", "event_count"]), lateness=st.integers(0, 3))
def test_a_chain_on_a_field_the_inner_one_does_not_group_by_is_the_oracle_applied_twice(
        rows, inner_gte, inner_span, outer_kind, outer_span, lateness):
    """Inner alerts (event_count of rule a by Computer) are the outer correlation's events (by User),
    at their time, one per distinct User among their events (the first value of each, absent as
    null), each referring to the last of its events with that User."""
    rows = sorted(rows, key=lambda r: r[0])
    events = [event(t, eid, user, host=host) for t, eid, user, host in rows]
    found = run_engine(rule_set_of(BASE_RULES, chain_on_another_field(inner_gte, inner_span, outer_kind, outer_span)),
                       events, lateness)
    detections = detections_of(events, ("User", "Computer"))
    times = {ident: t for t, _, _, ident in detections}
    users = {ident: fields["User"][0] if "User" in fields else None for _, _, fields, ident in detections}
    inner = correlation_oracle("event_count", ["a"], ns(inner_span) - ns(0), [("gte", inner_gte)], ["Computer"],
                               None, False, [(ns(t), r, f, i) for t, r, f, i in detections])
    fed = [(ns(t), r, f, i) for t, r, f, i in detections if r == "b"]
    for t, _, idents, _ in inner:
        last = {}
        for ident in sorted(idents, key=lambda i: (times[i], i)):
            last[users[ident]] = ident
        fed += [(t, "inner", {"User": [user]} if user is not None else {}, ident) for user, ident in last.items()]
    bounds = [("gte", 2)]
    want = correlation_oracle(outer_kind, ["inner", "b"], ns(outer_span) - ns(0), bounds, ["User"], None,
                              False, sorted(fed, key=lambda d: (d[0], d[3])))
    assert seen_alerts(found, "outer", ["User"]) == [(t, g, i, v) for t, g, i, v in want]
    assert {a["rule"]["id"] for a in found} <= {"outer", "c"}  # c: referenced by nothing


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["amy", "bob"]), st.sampled_from(["s1", "s2", "s3"]),
                               st.sampled_from(["h1", "h2"])), min_size=1, max_size=12),
       outer_kind=st.sampled_from(["event_count", "value_sum"]), sibling_kind=st.sampled_from(["group", "count"]))
def test_an_outer_correlation_is_the_same_whatever_another_one_over_its_inner_one_reads(rows, outer_kind,
                                                                                          sibling_kind):
    """Two correlations over one inner one, each reading a field of its events that it does not group by:
    the inner alert was split by the values of both (one outer event per distinct (User, Src)), so the
    count by User took one inner alert with two Src values as two, and fired on a single one."""
    outer, inner = (yaml.safe_load(text) for text in chain_on_another_field(2, 4, "event_count", 20).split("---\n"))
    outer["correlation"]["rules"] = ["many_a"]
    outer["correlation"]["type"] = outer_kind
    outer["correlation"]["condition"] = {"gte": 2} if outer_kind == "event_count" else {"gte": 4, "field": "Val"}
    sibling = {"title": "sibling", "id": "sibling", "correlation": {
        "type": "event_count" if sibling_kind == "group" else "value_count", "rules": ["many_a"],
        "group-by": ["Src"] if sibling_kind == "group" else [], "timespan": "20s",
        "condition": {"gte": 3} if sibling_kind == "group" else {"gte": 3, "field": "Src"}}}
    events = [event(t, 1, user, "2", host=host, Src=src) for t, user, src, host in sorted(rows)]
    alone = run_engine(rule_set_of(BASE_RULES, yaml.safe_dump(outer), yaml.safe_dump(inner)), events)
    beside = run_engine(rule_set_of(BASE_RULES, yaml.safe_dump(outer), yaml.safe_dump(inner), yaml.safe_dump(sibling)),
                        events)
    assert seen_alerts(beside, "outer", ["User"]) == seen_alerts(alone, "outer", ["User"])


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["amy", "bob"]), st.sampled_from(["s1", "s2", "s3"]),
                               st.sampled_from(["h1", "h2"])), min_size=1, max_size=12),
       top_gte=st.integers(1, 2))
def test_a_middle_correlation_is_the_same_whatever_the_one_over_it_reads(rows, top_gte):
    """Three levels: the inner alerts (rule a per Computer), counted per User by the middle correlation,
    whose alerts the top one counts per Src.  The inner alert was split by Src for the middle one too, which
    then counted one inner alert with two Src values as two; and the top one still sees every Src of the
    events under the middle alert (here: as many alerts as a run of the middle one alone, split by Src)."""
    outer, inner = (yaml.safe_load(text) for text in chain_on_another_field(2, 4, "event_count", 20).split("---\n"))
    outer["correlation"].update(rules=["many_a"], condition={"gte": 2}, generate=True)
    outer["name"] = "middle"
    top = {"title": "top", "id": "top", "correlation": {
        "type": "event_count", "rules": ["middle"], "group-by": ["Src"], "timespan": "60s",
        "condition": {"gte": top_gte}, "generate": True}}
    events = [event(t, 1, user, "2", host=host, Src=src) for t, user, src, host in sorted(rows)]
    alone = run_engine(rule_set_of(BASE_RULES, yaml.safe_dump(outer), yaml.safe_dump(inner)), events)
    under = run_engine(rule_set_of(BASE_RULES, yaml.safe_dump(outer), yaml.safe_dump(inner), yaml.safe_dump(top)),
                       events)
    assert seen_alerts(under, "outer", ["User"]) == seen_alerts(alone, "outer", ["User"])
    if top_gte == 1:  # every Src of the events under a middle alert is a top event: it alerts in each
        inner_of = {}  # an event -> the lines of the inner alert holding it
        for alert in alone:
            if alert["rule"]["id"] == "inner":
                lines = [ref["line"] for ref in alert["sigma"]["events"]]
                inner_of.update((line, lines) for line in lines)
        under_middle = {events[line - 1]["Src"] for alert in alone if alert["rule"]["id"] == "outer"
                        for ref in alert["sigma"]["events"] for line in inner_of[ref["line"]]
                        if events[line - 1]["User"] == alert["sigma"]["correlation"]["group"]["User"]}
        assert {a["sigma"]["correlation"]["group"]["Src"] for a in under if a["rule"]["id"] == "top"} == under_middle


def test_a_chain_on_another_field_in_two_stages_is_as_in_one_process(tmp_path):
    """The match stage's Detection records carry the field the outer correlation reads from the inner
    one's events, though neither groups the rule's events by it directly."""
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + chain_on_another_field(2, 5, "temporal_ordered", 10))
    events = [event(0, 1, "amy", host="h1"), event(1, 1, "bob", host="h1"), event(4, 2, "bob", host="h3")]
    one = run_cli(["--rule", rules], ndjson(events))
    [alert] = alerts(one.stdout)
    assert alert["sigma"]["correlation"]["group"] == {"User": "bob"}
    detections = run_cli(["--rule", rules, "--stage", "match"], ndjson(events))
    two = run_cli(["--rule", rules, "--stage", "correlate"], detections.stdout)
    assert alerts(two.stdout) == [alert]


def test_generate_true_lets_the_referenced_rules_alert_on_their_own():
    events = [event(0, 1, "alice"), event(1, 1, "alice"), event(2, 2, "alice"), event(3, 3, "alice")]
    quiet = run_engine(rule_set_of(BASE_RULES, chain_documents(2, 5, "temporal", 5)), events)
    assert sorted(a["rule"]["id"] for a in quiet) == ["c", "outer"]  # c: referenced by nothing
    loud = run_engine(rule_set_of(BASE_RULES, chain_documents(2, 5, "temporal", 5, generate=True)), events)
    # the inner correlation and rule b alert too; rule a feeds only the inner one (no generate there)
    assert sorted(a["rule"]["id"] for a in loud) == ["b", "c", "inner", "outer"]
    for alert in loud:
        jsonschema.validate(alert, ALERT_SCHEMA)


def test_chain_through_the_cli_in_one_process_and_in_two_stages(tmp_path):
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + chain_documents(2, 5, "temporal_ordered", 10))
    events = [event(0, 1, "alice", host="h1"), event(1, 1, "alice", host="h2"), event(4, 2, "alice", host="h3"),
              event(5, 1, "bob", host="h1"), event(20, 2, "bob", host="h2")]
    one = run_cli(["--rule", rules, "--emit", "matches"], ndjson(events))
    assert one.returncode == 0, one.stderr
    [alert] = alerts(one.stdout)
    assert alert["rule"]["id"] == "outer" and alert["sigma"]["correlation"]["group"] == {"User": "alice"}
    assert [t["term"] for t in alert["sigma"]["terms"]] == ["many_a", "b"]
    matched = [json.loads(line) for line in one.stdout.splitlines() if b'"sigma"' in line and b'"alert"' not in line]
    assert len(matched) == 5  # generate false keeps the enrichment of the rules' matches
    detections = run_cli(["--rule", rules, "--stage", "match"], ndjson(events))
    two = run_cli(["--rule", rules, "--stage", "correlate"], detections.stdout)
    assert alerts(two.stdout) == [alert]


def test_chain_state_survives_a_restart(tmp_path):
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + chain_documents(2, 5, "temporal_ordered", 30))
    events = [event(0, 1, "alice", host="h1"), event(1, 1, "alice", host="h2"), event(3, 3, None, host="h3"),
              event(20, 2, "alice", host="h3"), event(21, 3, None, host="h1")]
    whole = alerts(run_cli(["--rule", rules], ndjson(events)).stdout)
    assert [a["rule"]["id"] for a in whole] == ["c", "c", "outer"]
    state = str(tmp_path / "state.json")
    first = alerts(run_cli(["--rule", rules, "--state", state, "--lateness", "0"], ndjson(events[:3])).stdout)
    second = alerts(run_cli(["--rule", rules, "--state", state, "--lateness", "0"], ndjson(events[3:])).stdout)
    assert [a["event"]["id"] for a in first + second] == [a["event"]["id"] for a in whole]



def test_a_changed_inner_correlation_discards_the_saved_state_of_the_chain_over_it(tmp_path):
    """The outer correlation's windows hold the inner one's alerts: with the inner one's definition
    changed (its own state discarded), they were kept and counted with the new definition's alerts,
    an outer alert no run of either definition gives."""
    def rules(inner_gte):
        chain = yaml.safe_load_all(two_level(60, "event_count", ["many_a"], 600, {"gte": 2}))
        inner, outer = chain
        inner["correlation"]["condition"] = {"gte": inner_gte}
        return write(tmp_path, f"rules{inner_gte}.yml", BASE_RULES + "---\n" + yaml.safe_dump_all([inner, outer]))
    state = str(tmp_path / "state.json")
    before = [event(0, 1, "alice"), event(1, 1, "alice")]  # an inner alert (gte 2), one outer event
    after = [event(100, 1, "alice"), event(101, 1, "alice"), event(102, 1, "alice")]  # one inner alert (gte 3)
    first = run_cli(["--rule", rules(2), "--state", state, "--lateness", "0"], ndjson(before))
    assert first.returncode == 0 and not alerts(first.stdout), first.stderr
    second = run_cli(["--rule", rules(3), "--state", state, "--lateness", "0"], ndjson(after))
    assert second.returncode == 0, second.stderr
    assert [a["rule"]["id"] for a in alerts(second.stdout)] == []  # as one run of the new rules gives
    assert b"changed: 'inner', 'outer'" in second.stderr, second.stderr
    whole = run_cli(["--rule", rules(3), "--lateness", "0"], ndjson(before + after))
    assert [a["rule"]["id"] for a in alerts(whole.stdout)] == []


def two_level(inner_span, outer_kind, outer_refs, outer_span, outer_condition=None, generate=False):
    inner = {"title": "inner", "id": "inner", "name": "many_a", "correlation": {
        "type": "event_count", "rules": ["a"], "group-by": ["User"], "timespan": f"{inner_span}s",
        "condition": {"gte": 2}}}
    outer = {"title": "outer", "id": "outer", "correlation": {
        "type": outer_kind, "rules": outer_refs, "group-by": ["User"], "timespan": f"{outer_span}s",
        "generate": generate, **({"condition": outer_condition} if outer_condition else {})}}
    return yaml.safe_dump(inner) + "---\n" + yaml.safe_dump(outer)


def test_an_inner_alert_of_a_window_a_late_event_joined_is_on_time_in_the_outer_one(tmp_path):
    """u's second event comes late and joins u's open window, evaluated at the watermark (95 s):
    the inner alert is an event of the outer correlation at that time, which the outer one has
    not passed, not at its last event's (50 s), which it has."""
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + two_level(60, "event_count", ["many_a"], 10,
                                                                        {"gte": 1}, generate=True))
    events = [event(50, 1, "u", host="h1"), event(100, 1, "x", host="h1"), event(100, 1, "y", host="h2"),
              event(45, 1, "u", host="h3"), event(110, 1, "x", host="h1"), event(110, 1, "y", host="h2")]
    done = run_cli(["--rule", rules, "--lateness", "5"], ndjson(events))
    assert done.returncode == 0, done.stderr
    found = alerts(done.stdout)
    by_rule = {rule: sorted(a["sigma"]["correlation"]["group"]["User"] for a in found if a["rule"]["id"] == rule)
               for rule in ("inner", "outer")}
    assert by_rule == {"inner": ["u", "x", "y"], "outer": ["u", "x", "y"]}
    [late_u] = [a for a in found if a["rule"]["id"] == "outer" and a["sigma"]["correlation"]["group"]["User"] == "u"]
    assert parse_time(late_u["@timestamp"]) == ns(95)


def test_a_chain_that_also_takes_rule_events_resumes_where_it_stopped(tmp_path):
    """The outer correlation takes rule b's events too, so its watermark also follows its own
    sources: that is saved, and after a restart b's event at 70 s is as late as in one run."""
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + two_level(10, "temporal", ["many_a", "b"], 20))
    first = [event(100, 2, "x", host="h1"), event(100, 2, "x", host="h2"), event(50, 1, "y", host="h1"),
             event(50, 1, "z", host="h2")]
    second = [event(80, 1, "w", host="h1"), event(80, 1, "w", host="h2"), event(100, 1, "v", host="h1"),
              event(100, 1, "v", host="h2"), event(70, 2, "w", host="h3")]
    whole = run_cli(["--rule", rules, "--lateness", "5"], ndjson(first + second))
    state = str(tmp_path / "state.json")
    split = [run_cli(["--rule", rules, "--lateness", "5", "--state", state], ndjson(part)) for part in (first, second)]
    assert [a["event"]["id"] for a in alerts(whole.stdout)] == \
        [a["event"]["id"] for part in split for a in alerts(part.stdout)]
    late = [re.search(rb"(\d+) late", result.stderr) for result in (whole, *split)]
    assert late[0] and int(late[0][1]) == sum(int(found[1]) for found in late[1:] if found), \
        [result.stderr for result in (whole, *split)]
    assert late[2] and b"source 'h3' is behind" in split[1].stderr  # b's event at 70 s, as in one run

# ------------------------------------------------------------------ legacy near

NEAR_RULE = """title: Near
id: near
detection:
  primary: {EventID: 1}
  second: {EventID: 2}
  third: {EventID: 3}
  excluded: {EventID: 4}
  timeframe: %ds
  condition: primary | near %s
"""


def near_oracle(rows, timespan, present, absent):
    """Brute force: at each distinct time t, in order, the window is every event in [t - timespan, t]
    after the last alert; it fires when it holds an event of every present term and none of an
    absent one; firing consumes up to t.  rows: (time, event_id, line)."""
    terms = {0: {1}, **{i: {eid} for i, eid in present.items()}, **{i: {eid} for i, eid in absent.items()}}
    wanted = [0] + sorted(present)
    candidates = [(t, eid, line) for t, eid, line in rows if any(eid in ids for ids in terms.values())]
    fired, consumed = [], float("-inf")
    for t in sorted({c[0] for c in candidates}):
        window = [c for c in candidates if consumed < c[0] and t - timespan <= c[0] <= t]
        met = {i for i, ids in terms.items() for c in window if c[1] in ids}
        if all(i in met for i in wanted) and not any(i in met for i in absent):
            fired.append((t, frozenset(c[2] for c in window)))
            consumed = t
    return fired


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 20), st.sampled_from([1, 2, 3, 4, 5])), min_size=1, max_size=16),
       timespan=st.integers(1, 6), terms=st.sampled_from(["second", "second and third", "second and not excluded",
                                                          "not excluded", "third and not excluded and second"]))
def test_near_is_a_temporal_correlation_over_its_terms(rows, timespan, terms):
    rows = sorted(rows, key=lambda r: r[0])
    events = [event(t, eid) for t, eid in rows]
    found = run_engine(rule_set_of(NEAR_RULE % (timespan, terms)), events)
    parts = [p.strip() for p in terms.split(" and ")]
    ids = {"second": 2, "third": 3, "excluded": 4}
    present = {i: ids[p] for i, p in enumerate(parts, 1) if not p.startswith("not ")}
    absent = {i: ids[p[4:]] for i, p in enumerate(parts, 1) if p.startswith("not ")}
    want = near_oracle([(t, eid, line) for line, (t, eid) in enumerate(rows, 1)], timespan, present, absent)
    got = []
    for alert in found:
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert alert["sigma"]["join"] == "window" and "| near" in alert["sigma"]["condition"]
        got.append((parse_time(alert["@timestamp"]) // NS - BASE,
                    frozenset(r["line"] for r in alert["sigma"]["events"])))
    assert got == want


def test_near_needs_a_timeframe_and_plain_terms():
    for condition, message in [("a | near b", "needs a 'timeframe'"),
                               ("not a | near b", "meets none of its selections"),
                               # as much a negation: the primary event was nearly any event
                               ("not a and not b | near b", "meets none"), ("a or not b | near b", "meets none"),
                               ("a | near not not b", "double negation"), ("a | near b | count() > 1", "one '|'"),
                               ("a | near", "needs at least one term"), ("a | NEAR  ", "needs at least one term")]:
        text = yaml.safe_dump({"title": "t", "detection": {"a": {"x": 1}, "b": {"y": 1}, "condition": condition}})
        with pytest.raises(RuleError, match=re.escape(message)):
            [rule] = parse_rules(text, "n.yml")
            if isinstance(rule, RuleError):
                raise rule


def test_a_legacy_aggregation_needs_a_timeframe():
    """Without one it counted the events of one instant only (a 0-second window), in silence."""
    rule = {"title": "t", "detection": {"sel": {"EventID": 4625}, "condition": "sel | count() by IpAddress > 2"}}
    [error] = parse_rules(yaml.safe_dump(rule), "a.yml")
    assert isinstance(error, RuleError) and "needs a 'timeframe'" in str(error) and "count" in str(error)
    [loaded] = parse_rules(yaml.safe_dump(dict(rule, timeframe="1d")), "a.yml")
    assert loaded.timeframe_ns == 86400 * NS


# ------------------------------------------------------------------ explain

def test_explain_shows_the_correlation_plan(tmp_path):
    rules = write(tmp_path, "rules.yml", BASE_RULES + "---\n" + chain_documents(2, 5, "temporal_ordered", 10)
                  + "---\n" + alias_document(7, "temporal"))
    result = run_cli(["explain", "--rule", rules])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    for expected_text in ("correlation outer", "type      temporal_ordered: fires when the number of referenced rules "
                          "seen in their order is gte 2", "rules (in this order)",
                          "many_a = inner ('inner'): a correlation", "b ('rule b'): a rule",
                          "group-by  User", "[t - 10s, t]", "type      event_count: fires when the number of events is "
                          "gte 2", "alias ip: Source in b, Destination in a", "generate  false",
                          "alerts    none of its own: its matches feed a correlation without generate"):
        assert expected_text in text, expected_text
    near = run_cli(["explain", "--rule", write(tmp_path, "near.yml", NEAR_RULE % (5, "second and not excluded"))])
    assert "near      no event meeting excluded may be in the window" in near.stdout.decode()


def test_explain_says_a_count_with_an_upper_bound_is_judged_from_the_groups_first_event(tmp_path):
    """Such a count runs on ``[s, s + timespan]`` after a group's earliest event; explain described the
    windows ending at each event, legacy rule (``count() < 3``) and correlation document alike."""
    legacy = write(tmp_path, "l.yml", "title: few\ndetection:\n  sel: {EventID: 1}\n  timeframe: 1m\n"
                   "  condition: sel | count() by Computer < 3\n")
    document = write(tmp_path, "d.yml", BASE_RULES + "---\ntitle: few\ncorrelation: {type: event_count, rules: [a], "
                     "timespan: 1m, condition: {gte: 1, lte: 2}}\n")
    for rules, other in ((legacy, "count() by Computer > 3"), (document, "{gte: 1}")):
        text = run_cli(["explain", "--rule", rules]).stdout.decode()
        assert "window    [s, s + 60s] from the group's earliest event not yet taken (s)" in text, text
        assert "[t - 60s, t]" not in text
        with open(rules) as handle:
            changed = handle.read().replace("count() by Computer < 3", other).replace("{gte: 1, lte: 2}", other)
        text = run_cli(["explain", "--rule", write(tmp_path, "m.yml", changed)]).stdout.decode()
        assert "window    [t - 60s, t], both ends included" in text and "[s, s + 60s]" not in text, text


def test_explain_writes_a_near_rule_with_its_negated_terms_negated(tmp_path):
    """Its expression is the AND of the terms, a negated one without its ``not``: explain printed
    ``expanded  primary and second and excluded`` and ``term 2: excluded``, an event that must occur."""
    rule = write(tmp_path, "near.yml", NEAR_RULE.replace("primary: {EventID: 1}", "primary_1: {EventID: 1}")
                 .replace("primary | near", "1 of primary* | near") % (5, "(second or third) and not excluded"))
    result = run_cli(["explain", "--rule", rule])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "expanded  primary_1 | near (second or third) and not excluded" in lines
    assert "  term 2: not excluded (no event meeting it may be in the window)" in lines
    assert any(line.startswith("correlate temporal") and line.endswith("every term must occur but the negated ones")
               for line in lines)
    events = write(tmp_path, "e.ndjson", ndjson([event(0, 1), event(1, 2)]).decode())
    one = run_cli(["explain", "--rule", rule, "--event", write(tmp_path, "x.json", json.dumps(event(0, 4)))])
    absent_term = "  term 2 met: excluded (a near term that must be absent from the window)"
    assert absent_term in one.stdout.decode().splitlines()
    result = run_cli(["explain", "--rule", rule, "--events", events])
    assert "every input must occur but those that must be absent" in result.stdout.decode(), result.stdout


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
correlation: {type: event_count, rules: [rule_a], timespan: %s, condition: {%s}}
---
title: outer
id: outer
correlation: {type: event_count, rules: [inner, rule_b], timespan: %s, condition: {gte: 2}}
"""


def chain_event(seconds, kind, host):
    return {"@timestamp": f"2024-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}Z", "kind": kind, "Computer": host}


def test_a_chained_correlation_is_not_held_back_by_an_inner_one_that_never_had_an_event(tmp_path):
    """The outer's time was the least of its inner correlations', and one without any event had
    none: on a stream that never ends the outer never alerted (its events held to the state cap)."""
    rules = tmp_path / "chain.yml"
    rules.write_text(CHAIN % ("10s", "gte: 5", "10s"))
    process = subprocess.Popen(COMMAND + ["--rule", str(rules), "--lateness", "0", "--idle", "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        process.stdin.write(ndjson([chain_event(0, "b", "h1"), chain_event(1, "b", "h2"), chain_event(100, "b", "h3")]))
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no alert while the input is still open"
        alert = json.loads(process.stdout.readline())
        assert alert["rule"]["id"] == "outer" and [e["line"] for e in alert["sigma"]["events"]] == [1, 2]
    finally:
        process.kill()
        process.wait()


def test_a_chain_is_not_held_back_by_an_inner_correlation_whose_rules_went_quiet():
    """The specification's own shape: a burst of failed logons (inner), a successful one, then hours of
    successful logons and no failed one.  The inner correlation's time stayed at its last event, so the
    outer one, whose time is the least of its inner ones', held every later logon: its alert waited for
    the end of input, and past the state cap the episode's events were shed and the alert lost."""
    engine = Engine(rule_set_of(BASE_RULES, chain_documents(3, 10, "temporal_ordered", 20)), RESOLVER, 60 * NS)
    episode = [event(0, 1, "amy", host="h1"), event(1, 1, "amy", host="h2"), event(2, 1, "amy", host="h1"),
               event(3, 2, "amy", host="h1")]
    during = []
    for line, record in enumerate(episode + [event(10 + i, 2, f"u{i % 7}", host=f"h{i % 2 + 1}")
                                             for i in range(400)], 1):
        during += engine.process(record, line).alerts
        outer = next(c for c in engine.correlation.correlators if c.spec.id == "outer")
        assert outer.held_count() <= 2 * (60 + 20 + 2)  # what the lateness and the window reach, not all
    assert [(a["rule"]["id"], a["sigma"]["correlation"]["group"]) for a in during] == [("outer", {"User": "amy"})]
    assert not engine.flush()


def test_a_chain_of_two_inner_correlations_is_not_held_back_by_the_quiet_one():
    """An outer correlation over two inner ones only: the one whose rule went quiet held the outer's
    time, so its alert waited for the end of input (and every alert of the other inner one with it)."""
    documents = yaml.safe_dump({"title": "both", "id": "both", "correlation": {
        "type": "temporal", "rules": ["ia", "ib"], "group-by": ["User"], "timespan": "20s"}})
    for name, rule in (("ia", "a"), ("ib", "b")):
        documents += "---\n" + yaml.safe_dump({"title": name, "id": name, "correlation": {
            "type": "event_count", "rules": [rule], "group-by": ["User"], "timespan": "10s", "condition": {"gte": 1}}})
    engine = Engine(rule_set_of(BASE_RULES, documents), RESOLVER, 10 * NS)
    during = []
    for line, record in enumerate([event(0, 1, "amy", host="h1"), event(1, 2, "amy", host="h2")]
                                  + [event(100 * i, 2, f"u{i}", host=f"h{i % 2 + 1}") for i in range(1, 5)], 1):
        during += engine.process(record, line).alerts
    assert [(a["rule"]["id"], a["sigma"]["correlation"]["group"]) for a in during] == [("both", {"User": "amy"})]
    assert not engine.flush()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 30), st.sampled_from([1, 1, 2, 3]), st.sampled_from(["alice", "bob"]),
                               st.sampled_from(["h1", "h2", "h3"])), min_size=1, max_size=20),
       inner_gte=st.integers(1, 3), inner_span=st.integers(1, 5), outer_span=st.integers(1, 6),
       outer_kind=st.sampled_from(["temporal", "temporal_ordered"]), lateness=st.integers(0, 5))
def test_a_chain_alerts_as_its_own_rules_time_passes(rows, inner_gte, inner_span, outer_kind, outer_span, lateness):
    """On a time-sorted stream that ends with two hosts' events of the outer correlation's own rule,
    later than every other event by more than the lateness, every alert is out before the end of
    input, and they are the alerts of the same stream without that tail (nothing lost, nothing more)."""
    rows = sorted(rows, key=lambda r: r[0])
    events = [event(t, eid, user, host=host) for t, eid, user, host in rows]
    documents = rule_set_of(BASE_RULES, chain_documents(inner_gte, inner_span, outer_kind, outer_span))
    whole = seen_alerts(run_engine(documents, events, lateness), "outer", ["User"])
    tail = [event(40 + lateness, 2, "zed", host="h1"), event(40 + lateness, 2, "zed", host="h2")]
    engine = Engine(documents, RESOLVER, lateness * NS)
    during = []
    for line, record in enumerate(events + tail, 1):
        during += engine.process(record, line).alerts
    at_end = engine.flush()
    assert not seen_alerts(at_end, "outer", ["User"])
    assert seen_alerts(during, "outer", ["User"]) == whole


def test_early_alerts_through_a_chain_wait_for_an_inner_correlation_that_alerts_at_the_watermark(tmp_path):
    """The outer (monotone) fired early before the inner's (eq: not monotone) alert for t=0 existed,
    and the right alert was then held back: on a time-sorted stream early alerts must be the same."""
    rules = tmp_path / "chain.yml"
    rules.write_text(CHAIN % ("1s", "eq: 1", "10s"))
    events = ndjson([chain_event(0, "a", "h1"), chain_event(1, "b", "h2"), chain_event(2, "b", "h1")])
    plain = alerts(run_cli(["--rule", str(rules)], events).stdout)
    early = alerts(run_cli(["--rule", str(rules), "--early-alerts"], events).stdout)
    assert [[e["line"] for e in a["sigma"]["events"]] for a in plain] == [[1, 2]]
    assert [[e["line"] for e in a["sigma"]["events"]] for a in early] == [[1, 2]]


OVERLAPPING = """title: Failed logon
name: failed_logon
detection: {sel: {EventID: 4625}, condition: sel}
---
title: Failed logon of an admin
name: failed_admin_logon
detection: {sel: {EventID: 4625, User|startswith: adm}, condition: sel}
---
title: Two failed logons
id: two-failed
correlation: {type: event_count, rules: [failed_logon, failed_admin_logon], group-by: [User], timespan: 5m,
              condition: {gte: 2}}
---
title: Bytes
id: bytes-sum
correlation: {type: value_sum, rules: [failed_logon, failed_admin_logon], timespan: 5m,
              condition: {field: bytes, gt: 1000}}
---
title: Both rules
id: both-rules
correlation: {type: temporal, rules: [failed_logon, failed_admin_logon], timespan: 5m}
"""


@pytest.mark.parametrize("stages", ["one process", "match | correlate"])
def test_one_event_that_meets_several_referenced_rules_counts_once(tmp_path, stages):
    """It was counted once per rule: one failed logon of an admin made 'two failed logons' and a
    sum of 1,200 bytes out of 600.  The rules seen (temporal) are still both."""
    rules = str(tmp_path / "rules.yml")
    open(rules, "w").write(OVERLAPPING)
    logon = {"@timestamp": "2024-01-01T00:00:00Z", "EventID": 4625, "User": "admin1", "Computer": "dc1", "bytes": 600}

    def run(events):
        if stages == "one process":
            return alerts(run_cli(["--rule", rules], ndjson(events)).stdout)
        matched = run_cli(["--rule", rules, "--stage", "match"], ndjson(events))
        return alerts(run_cli(["--rule", rules, "--stage", "correlate"], matched.stdout).stdout)

    assert [a["rule"]["id"] for a in run([logon])] == ["both-rules"]
    found = {a["rule"]["id"]: a for a in run([logon, dict(logon, **{"@timestamp": "2024-01-01T00:00:01Z"})])}
    assert set(found) == {"two-failed", "bytes-sum", "both-rules"}
    assert found["bytes-sum"]["sigma"]["correlation"]["value"] == 1200
    assert [e["line"] for e in found["two-failed"]["sigma"]["events"]] == [1, 2]


# ------------------------------------------------------------------ random chains

# a rule that meets events of the other rules too (by User): one event, several detections
AMY = yaml.safe_dump({"title": "rule d", "id": "d", "name": "n_d",
                      "detection": {"sel": {"User": "amy"}, "condition": "sel"}})


@st.composite
def random_chains(draw):
    """An inner correlation of any monotone count over rules a-d, an outer one over it and some of the
    same rules (grouped or counting by a field the inner one may not group by), and sometimes a sibling
    over the inner one reading another field."""
    inner_kind = draw(st.sampled_from(["event_count", "value_count", "temporal"]))
    inner = {"title": "inner", "id": "inner", "name": "inner_n", "correlation": {
        "type": inner_kind, "rules": draw(st.lists(st.sampled_from(["a", "b", "n_d"]), min_size=1, max_size=3,
                                                   unique=True)),
        "group-by": draw(st.sampled_from([["User"], ["Computer"], []])), "timespan": f"{draw(st.integers(1, 9))}s",
        "condition": {"gte": draw(st.integers(1, 2)), **({"field": "Val"} if inner_kind == "value_count" else {})}}}
    outer_kind = draw(st.sampled_from(["event_count", "temporal", "temporal_ordered", "value_count"]))
    rules = draw(st.lists(st.sampled_from(["a", "b", "n_d"]), max_size=2, unique=True))
    rules.insert(draw(st.integers(0, len(rules))), "inner_n")
    outer = {"title": "outer", "id": "outer", "correlation": {
        "type": outer_kind, "rules": rules, "group-by": draw(st.sampled_from([["User"], ["Computer"], []])),
        "timespan": f"{draw(st.integers(1, 20))}s",
        "condition": {"gte": draw(st.integers(1, 3)), **({"field": "Val"} if outer_kind == "value_count" else {})}}}
    documents = [yaml.safe_dump(inner), yaml.safe_dump(outer)]
    if draw(st.booleans()):
        documents.append(yaml.safe_dump({"title": "sibling", "id": "sibling", "correlation": {
            "type": "event_count", "rules": ["inner_n"], "group-by": ["Val"], "timespan": "5s",
            "condition": {"gte": 1}}}))
    return documents


CHAIN_ROWS = st.lists(st.tuples(st.integers(0, 30), st.sampled_from([1, 2, 3]), st.sampled_from(["amy", "bob", None]),
                                st.sampled_from(["1", "2", None]), st.sampled_from(["h1", "h2", "h3"])), max_size=20)


def run_rows(rule_set, rows, order, lateness, early):
    events = [event(t, eid, user, value, host, EventRecordID=i) for i, (t, eid, user, value, host) in enumerate(rows)]
    engine = Engine(rule_set, RESOLVER, lateness * NS, early=early)
    found = []
    for i in order:
        found += engine.process(events[i], i + 1).alerts
    return found, engine.flush()


def alert_summary(alert):
    correlation = alert["sigma"].get("correlation", {})
    return (alert["rule"]["id"], alert["@timestamp"], json.dumps(correlation.get("group"), sort_keys=True).casefold(),
            json.dumps(correlation.get("value")), len(alert["sigma"]["events"]))


@settings(max_examples=80, deadline=None)
@given(documents=random_chains(), rows=CHAIN_ROWS, lateness=st.sampled_from([0, 5, 30]))
def test_early_alerts_through_random_chains_are_the_watermarks_on_a_sorted_stream_without_ties(documents, rows,
                                                                                             lateness):
    """An event that is one detection of an outer correlation and completes an inner alert at its time:
    the inner alert was fed first and completed the outer window alone (an early alert short of the event)."""
    rule_set = rule_set_of(BASE_RULES, AMY, *documents)
    times, distinct = set(), []
    for row in sorted(rows, key=lambda row: row[0]):
        if row[0] not in times:
            times.add(row[0])
            distinct.append(row)
    order = range(len(distinct))
    early_during, early_end = run_rows(rule_set, distinct, order, lateness, True)
    late = sum(run_rows(rule_set, distinct, order, lateness, False), [])
    assert sorted(map(alert_summary, early_during + early_end)) == sorted(map(alert_summary, late))
    assert not [a for a in early_end if a["rule"]["id"] in ("inner", "outer")]  # each out on its last event


@settings(max_examples=80, deadline=None)
@given(documents=random_chains(), rows=CHAIN_ROWS, data=st.data())
def test_random_chains_under_disorder_within_the_lateness_alert_as_on_the_sorted_stream(documents, rows, data):
    rule_set = rule_set_of(BASE_RULES, AMY, *documents)
    lateness = data.draw(st.integers(0, 10), label="lateness")
    delays = data.draw(st.lists(st.integers(0, lateness), min_size=len(rows), max_size=len(rows)), label="delays")
    arrival = sorted(range(len(rows)), key=lambda i: (rows[i][0] + delays[i], i))
    in_time = sorted(range(len(rows)), key=lambda i: (rows[i][0], i))
    shuffled = sum(run_rows(rule_set, rows, arrival, lateness, False), [])
    in_order = sum(run_rows(rule_set, rows, in_time, lateness, False), [])
    assert sorted(map(alert_summary, shuffled)) == sorted(map(alert_summary, in_order))
    early = sum(run_rows(rule_set, rows, arrival, lateness, True), [])
    ids = [a["event"]["id"] for a in early]
    assert len(ids) == len(set(ids))  # nothing twice


def test_a_field_passed_through_a_middle_correlation_with_many_values_alerts_as_one_run_across_a_restart(tmp_path):
    """The middle correlation passes on every Src of an inner alert's events for the top one; a restart
    reads a Detection's values back bounded (100 at most), so they are bounded when made too: the top one
    saw 150 Src values of the first inner alert in one run, 99 and a digest after a restart."""
    from test_state import alert_records, run_once

    inner = {"title": "inner", "id": "inner", "name": "inner_n", "correlation": {
        "type": "event_count", "rules": ["a"], "group-by": ["User"], "timespan": "1s", "condition": {"gte": 150}}}
    middle = {"title": "middle", "id": "middle", "name": "middle_n", "correlation": {
        "type": "event_count", "rules": ["inner_n"], "group-by": ["User"], "timespan": "10s", "condition": {"gte": 2}}}
    top = {"title": "top", "id": "top", "correlation": {
        "type": "event_count", "rules": ["middle_n"], "group-by": ["Src"], "timespan": "60s", "condition": {"gte": 1}}}
    rule_set = rule_set_of(BASE_RULES, *map(yaml.safe_dump, (inner, middle, top)))
    lines = [json.dumps(event(t, 1, "amy", host=f"h{i % 3}", Src=f"s{i}", EventRecordID=n)).encode() + b"\n"
             for n, (t, i) in enumerate([(0, i) for i in range(150)] + [(3, i) for i in range(150)])]
    lines += [json.dumps(event(100, 2, host=host)).encode() + b"\n" for host in ("h1", "h2")]
    whole, _ = run_once(b"".join(lines), 0, "alerts", str(tmp_path / "whole.json"), plans=rule_set)
    assert len([a for a in alert_records(whole) if a["rule"]["id"] == "top"]) == 100  # 99 values, a digest of the rest
    path = str(tmp_path / "state.json")
    first, at_end = run_once(b"".join(lines[:152]), 0, "alerts", path, plans=rule_set)
    assert not at_end and json.load(open(path))["correlations"]["middle"]["windows"]  # the first inner alert
    rest, _ = run_once(b"".join(lines[152:]), 0, "alerts", path, plans=rule_set)
    assert first + rest == whole


def test_one_event_meeting_two_aliased_rules_is_summed_once(tmp_path):
    """An alias may read another field of the event for each rule: one event meeting both rules, 5 in one
    field and 7 in the other, was summed as 12 (the README: counted and summed once), and listed twice."""
    rules = [{"title": name, "name": name, "logsource": {"product": "windows"},
              "detection": {"sel": {"EventID": 1}, "condition": "sel"}} for name in ("r1", "r2")]
    rules.append({"title": "sum", "id": "sum", "correlation": {
        "type": "value_sum", "rules": ["r1", "r2"], "group-by": ["Computer"], "timespan": "1m",
        "aliases": {"n": {"r1": "n1", "r2": "n2"}}, "condition": {"field": "n", "gte": 6}}})
    path = write(tmp_path, "rules.yml", yaml.safe_dump_all(rules))
    one = {"EventID": 1, "Computer": "h1", "@timestamp": iso(0), "n1": 5, "n2": 7}
    result = run_cli(["--rule", path], ndjson([one, dict(one, **{"@timestamp": iso(1), "n1": 1, "n2": 100})]))
    assert result.returncode == 0, result.stderr
    [alert] = alerts(result.stdout)  # 5 + 1, each event once with its first detection's value
    assert alert["message"] == "sum: sum(n) = 6 within 60s" and [e["line"] for e in alert["sigma"]["events"]] == [1, 2]


def test_a_percentile_alert_says_what_its_number_is(tmp_path):
    """value_percentile's aggregate is the share of the window's events that hold its rarest value: the message
    said ``percentile(Image) = 25``, which reads as a percentile of the values."""
    rules = [{"title": "r", "name": "r", "logsource": {"product": "windows"},
              "detection": {"sel": {"EventID": 1}, "condition": "sel"}},
             {"title": "rare", "id": "rare", "correlation": {
                 "type": "value_percentile", "rules": ["r"], "group-by": ["Computer"], "timespan": "1m",
                 "condition": {"field": "Image", "lte": 25}}}]
    path = write(tmp_path, "rules.yml", yaml.safe_dump_all(rules))
    images = ["a.exe", "a.exe", "a.exe", "b.exe"]
    events = [{"EventID": 1, "Computer": "h1", "@timestamp": iso(i), "Image": image} for i, image in enumerate(images)]
    [alert] = alerts(run_cli(["--rule", path], ndjson(events)).stdout)
    assert alert["message"] == "rare: rarest Image value in 25 % of events within 60s"
