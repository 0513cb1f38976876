"""Sigma v2.1 global filters ("meta filters"), through the command line.

The specification's example suppresses the matches of the rules it names for users starting
``adm_``; references resolve by id and by name, across files and documents, in either order;
the filter's logsource must cover the rule's; a filter written as pySigma writes it (``not
selection``) suppresses the same events; bad filters are one-line errors (exit 2).  Downstream
of loading a filtered rule is a rule: correlations count its unfiltered matches only, in one
process and in two stages, and ``--state`` sees a changed filter as a changed rule.  Property: a
rule plus a filter writes exactly what the same rule with the condition rewritten by hand
writes, with the prefilter on and off.
"""

import datetime
import json
import os

import pytest
import yaml
from hypothesis import given, strategies as st

from clitools import REPO, alerts, ndjson, run_cli, run_cli_here

SPEC = os.path.join(os.path.dirname(REPO), "shared", "sigma", "spec")
SPEC_FILTER = os.path.join(SPEC, "tests", "schema", "filter", "filter_1.yml")
needs_spec = pytest.mark.skipif(not os.path.isfile(SPEC_FILTER), reason="the shared Sigma specification is absent")

RAR_ID = "6f3e2987-db24-4c78-a860-b4f4095a7095"  # the ids the specification's example names
JUMP_ID = "df0841c0-9846-4e9f-ad8a-7df91571771b"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
BASE = 1_600_000_000


def event(seconds, user, image="C:\\Program Files\\WinRAR\\rar.exe", host="ws1", **more):
    stamp = datetime.datetime.fromtimestamp(BASE + seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"@timestamp": stamp, "EventID": 1, "Channel": SYSMON, "Computer": host, "User": user, "Image": image,
            **more}


def rule(rule_id=RAR_ID, name="rar_compressed", title="Data Compressed - rar.exe", image="\\rar.exe",
         logsource=None, condition="selection") -> dict:
    return {"title": title, "id": rule_id, "name": name, "level": "high",
            "logsource": logsource or {"category": "process_creation", "product": "windows"},
            "detection": {"selection": {"Image|endswith": image}, "condition": condition}}


JUMP = rule(JUMP_ID, "jump_host_login", "Login on jump host", "\\mstsc.exe")


def spec_filter(rules=(RAR_ID, JUMP_ID), condition="selection", logsource=None, **extra) -> dict:
    """The specification's example, with what a test changes."""
    return {"title": "Filter Administrator account", "description": "The valid administrator account start with adm_",
            "logsource": logsource or {"category": "process_creation", "product": "windows"},
            "filter": {"rules": list(rules) if isinstance(rules, (list, tuple)) else rules,
                       "selection": {"User|startswith": "adm_"}, "condition": condition, **extra}}


def write(directory, name, *documents) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write(yaml.safe_dump_all(list(documents), sort_keys=False))  # selections in the order given
    return path


def users_alerted(result) -> list:
    assert result.returncode == 0, result.stderr
    return [(a["rule"]["id"], [e.get("line") for e in a["sigma"]["events"]]) for a in alerts(result.stdout)]


EVENTS = [event(0, "adm_bob"), event(1, "alice"), event(2, "adm_eve", "C:\\Windows\\mstsc.exe"),
          event(3, "carol", "C:\\Windows\\mstsc.exe"), event(4, "admin")]


# ------------------------------------------------------------------ the specification's example


def test_the_specification_example_suppresses_adm_users_and_others_alert(tmp_path):
    rules = write(tmp_path, "rules.yml", rule(), JUMP)
    example = write(tmp_path, "mf_admins.yml", spec_filter())  # the example as the specification's text has it
    for order in ([rules, example], [example, rules]):  # a filter before or after its rules
        result = run_cli([arg for path in order for arg in ("--rule", path)], ndjson(EVENTS))
        assert users_alerted(result) == [(RAR_ID, [2]), (JUMP_ID, [4]), (RAR_ID, [5])]
        assert b"warning" not in result.stderr, result.stderr
    unfiltered = run_cli(["--rule", rules], ndjson(EVENTS))
    assert [line for _, [line] in users_alerted(unfiltered)] == [1, 2, 3, 4, 5]


@needs_spec
def test_the_specifications_schema_test_file_is_that_example(tmp_path):
    assert yaml.safe_load(open(SPEC_FILTER)) == spec_filter()
    rules = write(tmp_path, "rules.yml", rule(), JUMP)
    result = run_cli(["--rule", SPEC_FILTER, "--rule", rules], ndjson(EVENTS))
    assert users_alerted(result) == [(RAR_ID, [2]), (JUMP_ID, [4]), (RAR_ID, [5])]


def test_references_by_id_by_name_and_in_any_letter_case(tmp_path):
    rules = write(tmp_path, "rules.yml", rule(), JUMP)
    for references in ([RAR_ID, "jump_host_login"], ["rar_compressed", JUMP_ID.upper()]):
        mf = write(tmp_path, "mf_admins.yml", spec_filter(references))
        assert users_alerted(run_cli(["--rule", rules, "--rule", mf], ndjson(EVENTS))) == \
            [(RAR_ID, [2]), (JUMP_ID, [4]), (RAR_ID, [5])]
    only_rar = write(tmp_path, "mf_rar.yml", spec_filter(["rar_compressed"]))
    assert users_alerted(run_cli(["--rule", rules, "--rule", only_rar], ndjson(EVENTS))) == \
        [(RAR_ID, [2]), (JUMP_ID, [3]), (JUMP_ID, [4]), (RAR_ID, [5])]


def test_across_files_of_a_directory_and_in_one_multi_document_file(tmp_path):
    directory = tmp_path / "rules"
    directory.mkdir()
    write(directory, "a_rar.yml", rule())
    write(directory, "b_jump.yml", JUMP)
    write(directory, "mf_admins.yml", spec_filter())
    want = [(RAR_ID, [2]), (JUMP_ID, [4]), (RAR_ID, [5])]
    assert users_alerted(run_cli(["--rule", str(directory)], ndjson(EVENTS))) == want
    together = write(tmp_path, "all.yml", spec_filter(), rule(), JUMP)  # the filter first in its file
    assert users_alerted(run_cli(["--rule", together], ndjson(EVENTS))) == want


def test_two_filters_on_one_rule_and_the_pysigma_way_of_writing_one(tmp_path):
    """pySigma ANDs a filter's condition to the rule's, so its filters say ``not selection``: that
    suppresses the same events as the specification's ``selection``."""
    rules = write(tmp_path, "rules.yml", rule())
    events = [event(0, "adm_bob"), event(1, "alice", host="DC-1"), event(2, "alice"), event(3, "adm_x", host="DC-2")]
    admins = write(tmp_path, "mf_admins.yml", spec_filter([RAR_ID]))
    dcs = {"title": "Filter Out Domain Controllers", "id": "mf-dc", "logsource": {"product": "windows"},
           "filter": {"rules": [RAR_ID], "selection": {"Computer|startswith": "DC-"}, "condition": "not selection"}}
    dcs_path = write(tmp_path, "mf_dc.yml", dcs)
    assert users_alerted(run_cli(["--rule", rules, "--rule", dcs_path], ndjson(events))) == \
        [(RAR_ID, [1]), (RAR_ID, [3])]
    dcs["filter"]["condition"] = "selection"
    assert users_alerted(run_cli(["--rule", rules, "--rule", write(tmp_path, "mf_dc2.yml", dcs)], ndjson(events))) \
        == [(RAR_ID, [1]), (RAR_ID, [3])]
    both = run_cli(["--rule", rules, "--rule", admins, "--rule", dcs_path], ndjson(events))
    assert users_alerted(both) == [(RAR_ID, [3])]


def test_two_filters_whose_ids_differ_only_in_blanks_and_underscores_both_apply(tmp_path):
    """Each filter's selections are renamed ``filter:<id>:`` with blanks as ``_``: 'mf admins' and
    'mf_admins' took one prefix, clashed, and neither applied (one warning, blaming the rule)."""
    rules = write(tmp_path, "rules.yml", rule())
    events = [event(0, "adm_bob"), event(1, "alice", host="DC-1"), event(2, "alice"), event(3, "adm_x", host="DC-2")]
    admins = write(tmp_path, "mf_admins.yml", dict(spec_filter([RAR_ID]), id="mf admins"))
    dcs = write(tmp_path, "mf_dc.yml", {"title": "Filter Out Domain Controllers", "id": "mf_admins",
                                        "logsource": {"product": "windows"},
                                        "filter": {"rules": [RAR_ID], "selection": {"Computer|startswith": "DC-"},
                                                   "condition": "selection"}})
    both = run_cli(["--rule", rules, "--rule", admins, "--rule", dcs], ndjson(events))
    assert users_alerted(both) == [(RAR_ID, [3])]
    assert both.stderr.count(b"\n") == 1 and b"warning" not in both.stderr, both.stderr  # the summary line alone
    [alert] = alerts(both.stdout)
    assert alert["sigma"]["condition"] == ("((selection) and not (filter:mf_admins:selection)) and "
                                           "not (filter:mf_admins#2:selection)")
    again = write(tmp_path, "mf_again.yml", dict(spec_filter([RAR_ID]), id="mf_admins"))  # one id, two filters
    refused = run_cli(["--rule", rules, "--rule", dcs, "--rule", again], ndjson(events))
    assert refused.returncode == 2 and b"'mf_admins' already names " in refused.stderr


def test_a_condition_naming_every_selection_under_a_not_is_read_as_pysigma_reads_it(tmp_path):
    """``not admin or not server`` (pySigma's way: keep an event unless it is an admin's on a server) has
    an OR at its top: read the specification's way, it would keep only admins on servers."""
    rules = write(tmp_path, "rules.yml", rule())
    mf = {"title": "admins on servers", "id": "mf-or", "logsource": {"product": "windows"},
          "filter": {"rules": [RAR_ID], "admin": {"User|startswith": "adm_"}, "server": {"Computer|startswith": "srv"},
                     "condition": "not admin or not server"}}
    events = [event(0, "adm_a", host="srv1"), event(1, "adm_b"), event(2, "bob", host="srv2"), event(3, "carol")]
    assert users_alerted(run_cli(["--rule", rules, "--rule", write(tmp_path, "mf.yml", mf)], ndjson(events))) == \
        [(RAR_ID, [2]), (RAR_ID, [3]), (RAR_ID, [4])]


def test_a_keeping_condition_with_an_or_at_its_top_is_checked_on_every_event_of_a_window(tmp_path):
    """With ``--join window`` each top-level term may be met by another event: ``not admin or not server``
    was added as a term of its own, met by any event in the window that is not an admin's on a server, and
    the admin's event that the filter drops alerted with it.  Added as ``not (admin and server)`` it is
    checked on every event, as the condition's text now says too."""
    windowed = rule()
    windowed["detection"]["timeframe"] = "5m"
    rules = write(tmp_path, "rules.yml", windowed)
    mf = write(tmp_path, "mf.yml", {
        "title": "admins on servers", "id": "mf-or", "logsource": {"product": "windows"},
        "filter": {"rules": [RAR_ID], "admin": {"User|startswith": "adm_"}, "server": {"Computer|startswith": "srv"},
                   "condition": "not admin or not server"}})
    events = [event(0, "adm_a", host="srv1"), event(1, "carol", "C:\\Windows\\notepad.exe")]
    for join in ("event", "window"):
        assert users_alerted(run_cli(["--rule", rules, "--rule", mf, "--join", join], ndjson(events))) == [], join
    events.append(event(2, "bob", host="srv1"))
    found = alerts(run_cli(["--rule", rules, "--rule", mf, "--join", "window"], ndjson(events)).stdout)
    assert [e["line"] for a in found for e in a["sigma"]["events"]] == [3]
    assert found[0]["sigma"]["condition"] == "(selection) and not (filter:mf-or:admin and filter:mf-or:server)"


def test_named_selections_other_than_selection_and_patterns_over_them(tmp_path):
    rules = write(tmp_path, "rules.yml", rule())
    mf = {"title": "admins but not on servers", "id": "mf-x", "logsource": {"product": "windows"},
          "filter": {"rules": ["rar_compressed"], "filter_adm": {"User|startswith": "adm_"},
                     "filter_svc": {"User": "svc"}, "server": {"Computer|startswith": "srv"},
                     "condition": "1 of filter_* and not server"}}
    events = [event(0, "adm_a"), event(1, "svc"), event(2, "adm_b", host="srv1"), event(3, "bob")]
    assert users_alerted(run_cli(["--rule", rules, "--rule", write(tmp_path, "mf.yml", mf)], ndjson(events))) == \
        [(RAR_ID, [3]), (RAR_ID, [4])]


def test_a_filter_after_a_v1_collection_takes_no_rule_section(tmp_path):
    """A legacy collection (a global document with the shared logsource and detection) and a filter of its
    rules in one file: the filter took the global 'detection' and was refused as a rule and a filter."""
    path = tmp_path / "c.yml"
    path.write_text("action: global\ntitle: rar\nlogsource: {category: process_creation, product: windows}\n"
                    "detection:\n  condition: selection\n---\n"
                    f"id: {RAR_ID}\ndetection:\n  selection: {{Image|endswith: 'rar.exe'}}\n---\n"
                    + yaml.safe_dump(spec_filter([RAR_ID], logsource={"product": "windows"})))
    assert users_alerted(run_cli(["--rule", str(path)], ndjson(EVENTS))) == [(RAR_ID, [2]), (RAR_ID, [5])]


def test_a_filter_on_an_aggregation_and_on_every_event_a_near_rule_takes(tmp_path):
    logsource = {"category": "process_creation", "product": "windows"}
    near = {"title": "near", "id": "near", "logsource": logsource, "detection": {
        "a": {"Image|endswith": "rar.exe"}, "b": {"Image|endswith": "cmd.exe"}, "timeframe": "1m",
        "condition": "a | near b"}}
    counted = {"title": "count", "id": "count", "logsource": logsource, "detection": {
        "a": {"Image|endswith": "rar.exe"}, "timeframe": "1m", "condition": "a | count() by User >= 2"}}
    rules = write(tmp_path, "rules.yml", near, counted)
    mf = write(tmp_path, "mf.yml", spec_filter("any", logsource={"product": "windows"}))
    events = [event(0, "adm_a"), event(1, "adm_a"), event(2, "adm_a", "C:\\cmd.exe"), event(3, "bob"),
              event(4, "bob")]
    args = ["--rule", rules, "--lateness", "0"]
    assert sorted(users_alerted(run_cli(args, ndjson(events)))) == [("count", [1, 2]), ("count", [4, 5]),
                                                                     ("near", [1, 2, 3])]
    # bob's rar.exe has no cmd.exe of a user the filter lets through: near does not fire
    assert users_alerted(run_cli(args + ["--rule", mf], ndjson(events))) == [("count", [4, 5])]


# ------------------------------------------------------------------ which rules a filter applies to


def test_the_filters_logsource_must_cover_the_rules(tmp_path):
    linux = rule("lin-1", "lin", "tar on linux", "/tar", {"category": "process_creation", "product": "linux"})
    rules = write(tmp_path, "rules.yml", rule(), linux)
    on_linux = {key: value for key, value in event(1, "adm_bob", "/usr/bin/tar").items()
                if key not in ("Channel", "EventID")}  # its log source unknown: every rule is tried
    events = [event(0, "adm_bob"), on_linux]
    # product windows covers a rule of windows process_creation; not one of linux: that one is reported
    wide = write(tmp_path, "mf.yml", spec_filter([RAR_ID, "lin"], logsource={"product": "windows"}))
    result = run_cli(["--rule", rules, "--rule", wide, "--logsource-unknown", "match"], ndjson(events))
    assert users_alerted(result) == [("lin-1", [2])]
    [warning] = result.stderr.decode().splitlines()[:-1]
    assert warning.startswith("pipeshell-filter: warning: filter ") and "'lin'" in warning and "not within" in warning
    strict = run_cli(["--rule", rules, "--rule", wide, "--strict"], ndjson(events))
    assert strict.returncode == 2 and len(strict.stderr.splitlines()) == 1 and b"not within" in strict.stderr
    # rules: any -- every rule within the filter's logsource, no other
    anyone = write(tmp_path, "mf_any.yml", spec_filter("any", logsource={"product": "windows"}))
    result = run_cli(["--rule", rules, "--rule", anyone, "--strict"], ndjson(events))
    assert users_alerted(result) == [("lin-1", [2])]



def test_rules_any_within_no_loaded_rule_is_a_warning(tmp_path):
    """``rules: any`` whose logsource covers no loaded rule (a misspelt product) suppressed nothing, in silence:
    warned as a reference to no rule is (an error with --strict)."""
    rules = write(tmp_path, "rules.yml", rule())
    typo = write(tmp_path, "mf.yml", spec_filter("any", logsource={"product": "window"}))
    result = run_cli(["--rule", rules, "--rule", typo], ndjson(EVENTS))
    assert [line for _, [line] in users_alerted(result)] == [1, 2, 5]
    [warning] = result.stderr.decode().splitlines()[:-1]
    assert warning.startswith(f"pipeshell-filter: warning: filter {typo}: ") and "{product: window}" in warning, warning
    strict = run_cli(["--rule", rules, "--rule", typo, "--strict"], ndjson(EVENTS))
    assert strict.returncode == 2 and len(strict.stderr.splitlines()) == 1 and b"Traceback" not in strict.stderr
    covering = write(tmp_path, "mf.yml", spec_filter("any", logsource={"product": "windows"}))
    result = run_cli(["--rule", rules, "--rule", covering, "--strict"], ndjson(EVENTS))
    assert [line for _, [line] in users_alerted(result)] == [2, 5] and b"warning" not in result.stderr

def test_a_reference_to_no_loaded_rule_is_a_warning_and_the_rest_applies(tmp_path):
    rules = write(tmp_path, "rules.yml", rule())
    mf = write(tmp_path, "mf.yml", spec_filter([RAR_ID, "no_such_rule"]))
    result = run_cli(["--rule", rules, "--rule", mf], ndjson(EVENTS))
    assert users_alerted(result) == [(RAR_ID, [2]), (RAR_ID, [5])]
    assert b"refers to unknown rule 'no_such_rule'" in result.stderr
    strict = run_cli(["--rule", rules, "--rule", mf, "--strict"], ndjson(EVENTS))
    assert strict.returncode == 2 and len(strict.stderr.splitlines()) == 1 and b"Traceback" not in strict.stderr


def test_a_filter_naming_a_correlation_is_reported_not_applied(tmp_path):
    correlation = {"title": "many", "id": "many", "correlation": {"type": "event_count", "rules": [RAR_ID],
                                                                 "timespan": "1m", "condition": {"gte": 2}}}
    rules = write(tmp_path, "rules.yml", rule(), correlation)
    result = run_cli(["--rule", rules, "--rule", write(tmp_path, "mf.yml", spec_filter(["many"]))], ndjson(EVENTS))
    assert result.returncode == 0 and b"'many' is a correlation" in result.stderr


BAD_FILTERS = {
    "no rules": ({"rules": None}, "has no 'rules'"),
    "empty rules": ({"rules": []}, "must name at least one rule"),
    "no condition": ({"condition": None}, "has no 'condition'"),
    "unknown identifier": ({"condition": "selection and not exception"}, "undefined selection 'exception'"),
    "unparsable condition": ({"condition": "selection and"}, "condition ends too early"),
    "an aggregation": ({"condition": "selection | count() > 2"}, "takes no '|'"),
    "condition a list": ({"condition": ["selection"]}, "must be a string"),
    "malformed selection": ({"selection": {"User|nosuchmodifier": "x"}}, "selection 'selection'"),
    "empty selection": ({"selection": []}, "an empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILTERS))
def test_bad_filters_are_one_line_errors(tmp_path, case):
    change, message = BAD_FILTERS[case]
    document = spec_filter([RAR_ID])
    for key, value in change.items():
        if value is None:
            del document["filter"][key]
        else:
            document["filter"][key] = value
    mf = write(tmp_path, "mf.yml", document)
    result = run_cli(["--rule", write(tmp_path, "rules.yml", rule()), "--rule", mf], ndjson(EVENTS))
    assert result.returncode == 2, result
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("pipeshell-filter: ") and f"rule {mf}" in line and message in line, line
    assert "Traceback" not in line


@pytest.mark.parametrize("logsource", [{"product": ["windows"]}, {"category": ["process_creation", "image_load"]},
                                       {"product": "windows", "service": 5}])
def test_a_filter_logsource_that_is_no_text_is_refused_as_pysigma_refuses_it(logsource):
    """``product: [windows]`` in a filter covered no rule (a list is never a rule's text), so the filter applied to
    nothing, in silence with ``rules: any``; pySigma refuses it (a log source's product must be a string)."""
    from pipeshell_filter.sigma.rule import RuleError, parse_rules

    [parsed] = parse_rules(yaml.safe_dump(spec_filter("any", logsource=logsource)), "mf.yml")
    assert isinstance(parsed, RuleError) and "logsource" in str(parsed) and "must be text" in str(parsed), parsed


def test_other_bad_filter_documents(tmp_path):
    rules = write(tmp_path, "rules.yml", rule())
    no_logsource = spec_filter([RAR_ID])
    del no_logsource["logsource"]
    both = dict(spec_filter([RAR_ID]), detection={"sel": {"a": 1}, "condition": "sel"})
    for document, message in ((no_logsource, "needs a 'logsource'"), (both, "not several"),
                              (dict(spec_filter(), filter="selection"), "'filter' must be a mapping")):
        result = run_cli(["--rule", rules, "--rule", write(tmp_path, "mf.yml", document)], ndjson(EVENTS))
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert message.encode() in result.stderr, result.stderr
    # in a directory, a bad filter is reported and skipped (its rules run unfiltered)
    directory = tmp_path / "set"
    directory.mkdir()
    write(directory, "rules.yml", rule())
    write(directory, "mf.yml", no_logsource)
    result = run_cli(["--rule", str(directory)], ndjson(EVENTS))
    assert [line for _, [line] in users_alerted(result)] == [1, 2, 5]
    assert b"skipped: rule " in result.stderr


# ------------------------------------------------------------------ downstream: correlations, stages, state, explain


def counting(gte=2) -> dict:
    return {"title": "many rar", "id": "many-rar", "correlation": {
        "type": "event_count", "rules": ["rar_compressed"], "group-by": ["User"], "timespan": "1m",
        "condition": {"gte": gte}}}


def test_a_correlation_over_a_filtered_rule_counts_unfiltered_matches_in_one_and_two_stages(tmp_path):
    rules = write(tmp_path, "rules.yml", rule(), counting())
    mf = write(tmp_path, "mf.yml", spec_filter([RAR_ID]))
    events = [event(0, "adm_a"), event(1, "adm_a"), event(2, "bob"), event(3, "adm_a"), event(4, "bob"),
              event(5, "carl")]
    args = ["--rule", rules, "--rule", mf, "--lateness", "0"]
    one = run_cli(args, ndjson(events))
    found = alerts(one.stdout)
    assert one.returncode == 0 and [a["sigma"]["correlation"]["group"] for a in found] == [{"User": "bob"}]
    unfiltered = alerts(run_cli(["--rule", rules, "--lateness", "0"], ndjson(events)).stdout)
    assert {json.dumps(a["sigma"]["correlation"]["group"]) for a in unfiltered} == \
        {'{"User": "adm_a"}', '{"User": "bob"}'}
    matched = run_cli(args + ["--stage", "match"], ndjson(events))
    assert matched.returncode == 0, matched.stderr
    assert b"adm_a" not in matched.stdout  # no Detection of a filtered event reaches the correlate stage
    two = run_cli(args + ["--stage", "correlate"], matched.stdout)
    assert two.returncode == 0 and alerts(two.stdout) == found


def test_state_sees_a_changed_filter_as_a_changed_rule(tmp_path):
    rules = write(tmp_path, "rules.yml", rule(), counting())
    state = str(tmp_path / "state.json")
    admins = write(tmp_path, "mf.yml", spec_filter([RAR_ID]))
    first = run_cli(["--rule", rules, "--rule", admins, "--state", state, "--lateness", "0"],
                    ndjson([event(0, "adm_a"), event(1, "bob")]))
    assert first.returncode == 0 and not alerts(first.stdout), first.stderr
    same = run_cli(["--rule", rules, "--rule", admins, "--state", state, "--lateness", "0"],
                   ndjson([event(2, "bob")]))
    assert b"changed" not in same.stderr and len(alerts(same.stdout)) == 1, same.stderr
    other = spec_filter([RAR_ID])
    other["filter"]["selection"] = {"User|startswith": "bo"}
    changed = run_cli(["--rule", rules, "--rule", write(tmp_path, "mf.yml", other), "--state", state,
                       "--lateness", "0"], ndjson([event(3, "adm_a")]))
    assert changed.returncode == 0 and b"changed: 'many-rar'" in changed.stderr, changed.stderr
    assert not alerts(changed.stdout)  # bob's saved match is not counted with the new definition's
    gone = run_cli(["--rule", rules, "--state", state, "--lateness", "0"], ndjson([event(4, "adm_a")]))
    assert b"changed: 'many-rar'" in gone.stderr, gone.stderr  # removing the filter changes the rule too


def test_explain_shows_the_filter_and_why_an_event_was_filtered_out(tmp_path):
    rules = write(tmp_path, "rules.yml", rule())
    mf = write(tmp_path, "mf.yml", spec_filter([RAR_ID]))
    plan = run_cli(["explain", "--rule", rules, "--rule", mf])
    assert plan.returncode == 0, plan.stderr
    text = plan.stdout.decode()
    assert f"filter    'Filter Administrator account' ({mf}): events where its condition 'selection' holds " \
           "are suppressed" in text
    assert "condition (selection) and not (filter:Filter_Administrator_account:selection)" in text
    one = tmp_path / "event.json"
    for user, filtered in (("adm_bob", True), ("alice", False)):
        one.write_text(json.dumps(event(0, user)))
        explained = run_cli(["explain", "--rule", rules, "--rule", mf, "--event", str(one)]).stdout.decode()
        assert ("filtered  out by 'Filter Administrator account'" in explained) is filtered, explained
        assert ("outcome   an alert, at once" in explained) is not filtered, explained



def test_explain_says_filtered_out_only_of_an_event_the_rule_itself_meets(tmp_path):
    """An event the rule's own condition misses is not "filtered out", whatever the filter says of it: the
    line sent an analyst to the filter for a rule that never matched (adm_bob running notepad)."""
    rules = write(tmp_path, "rules.yml", rule())
    one = tmp_path / "event.json"
    for condition in ("selection", "not selection"):  # the specification's reading, and pySigma's
        mf = write(tmp_path, "mf.yml", spec_filter([RAR_ID], condition=condition))
        expected = ("adm_bob", "C:\\x\\rar.exe")  # read either way, the filter suppresses the adm_ users
        for user, image in (("adm_bob", "C:\\Windows\\notepad.exe"), ("bob", "C:\\Windows\\notepad.exe"),
                            ("adm_bob", "C:\\x\\rar.exe"), ("bob", "C:\\x\\rar.exe")):
            one.write_text(json.dumps(event(0, user, image)))
            explained = run_cli(["explain", "--rule", rules, "--rule", mf, "--event", str(one)])
            assert explained.returncode == 0, explained.stderr
            text = explained.stdout.decode()
            filtered = (user, image) == expected
            assert ("filtered  out by 'Filter Administrator account'" in text) is filtered, (condition, user, text)


# ------------------------------------------------------------------ property: a filter is its rewritten condition

FIELDS = ("User", "Image", "Computer")
VALUES = ("adm_", "rar", "DC-", "a", "alice", "1")
SELECTION = st.dictionaries(st.sampled_from([f"{field}{modifier}" for field in FIELDS
                                             for modifier in ("", "|startswith", "|endswith", "|contains")]),
                            st.sampled_from(VALUES), min_size=1, max_size=2)
ONE_KEY = SELECTION.filter(lambda selection: len(selection) == 1)  # a filter that holds often enough to matter
RULE_CONDITIONS = ("s1", "s1 and s2", "s1 or s2", "s1 and not s2", "1 of s*", "not s2", "all of them")
# (as the filter writes it, as the rewritten rule writes it: {p} the filter's selections' names there)
FILTER_CONDITIONS = (("selection", "{p}selection"), ("selection and other", "{p}selection and {p}other"),
                     ("selection or other", "{p}selection or {p}other"), ("selection and not other",
                     "{p}selection and not {p}other"), ("1 of them", "1 of {p}*"), ("all of them", "all of {p}*"),
                     ("not selection", "not {p}selection"), ("not selection and not other",
                     "not {p}selection and not {p}other"), ("not (selection or other)", "not ({p}selection or "
                     "{p}other)"), ("not 1 of them", "not 1 of {p}*"))
TEXTS = st.sampled_from(("adm_bob", "alice", "DC-1", "C:\\rar.exe", "rar", "x"))
EVENT = st.fixed_dictionaries({"EventID": st.just(1), "Channel": st.just(SYSMON), "User": TEXTS, "Image": TEXTS},
                              optional={"Computer": TEXTS})


def normalized(stdout: bytes) -> list:
    """The records with the condition's spelling left out (the filtered rule's says which filter)."""
    out = []
    for line in stdout.splitlines():
        record = json.loads(line)
        sigma = record.get("sigma") if isinstance(record, dict) else None
        if isinstance(sigma, dict):
            sigma.pop("condition", None)
            sigma["terms"] = [{k: v for k, v in t.items() if k != "term"} if isinstance(t, dict) else "term"
                              for t in sigma.get("terms", ())]
        out.append(record)
    return out


@given(s1=ONE_KEY, s2=SELECTION, condition=st.sampled_from(RULE_CONDITIONS), f1=ONE_KEY, f2=ONE_KEY,
       written=st.sampled_from(FILTER_CONDITIONS), events=st.lists(EVENT, min_size=3, max_size=10))
def test_a_rule_plus_a_filter_is_the_rule_with_its_condition_rewritten(tmp_path_factory, s1, s2, condition, f1, f2,
                                                                        written, events):
    directory = tmp_path_factory.mktemp("property")
    logsource = {"category": "process_creation", "product": "windows"}
    base = {"title": "r", "id": "r", "logsource": logsource, "detection": {"s1": s1, "s2": s2,
                                                                          "condition": condition}}
    mf = {"title": "mf", "id": "mf", "logsource": logsource,
          "filter": {"rules": ["r"], "selection": f1, "other": f2, "condition": written[0]}}
    prefix = "filter:mf:"
    hand = written[1].format(p=prefix)
    keeps = written[0].startswith("not ")  # every top-level term a negation: it says which events to keep
    rewritten = dict(base, detection={"s1": s1, "s2": s2, prefix + "selection": f1, prefix + "other": f2,
                                      "condition": f"({condition}) and " + (hand if keeps else f"not ({hand})")})
    if condition == "all of them":  # the rule's own names only, as it was written
        rewritten["detection"]["condition"] = rewritten["detection"]["condition"].replace("all of them", "s1 and s2")
    data = ndjson(events)
    filtered = [write(directory, "r.yml", base), write(directory, "mf.yml", mf)]
    by_hand = [write(directory, "hand.yml", rewritten)]
    outputs = []
    for paths in (filtered, by_hand):
        for prefilter in ([], ["--no-prefilter"]):
            result = run_cli_here([arg for p in paths for arg in ("--rule", p)] + ["--emit", "all", "--quiet",
                                                                                  "--workers", "0", *prefilter], data)
            assert result.returncode == 0, result.stderr
            outputs.append(normalized(result.stdout))
    assert outputs[0] == outputs[1] == outputs[2] == outputs[3]


def collection_of_two(tmp_path) -> str:
    """A v1 collection: a global document with the shared id, title and logsource, and two rule documents
    (``RAR_ID`` and ``RAR_ID#3``)."""
    path = tmp_path / "collection.yml"
    path.write_text(f"action: global\ntitle: rar or 7z\nid: {RAR_ID}\n"
                    "logsource: {category: process_creation, product: windows}\ndetection:\n  condition: selection\n"
                    "---\ndetection:\n  selection: {Image|endswith: 'rar.exe'}\n"
                    "---\ndetection:\n  selection: {Image|endswith: '7z.exe'}\n")
    return str(path)


@pytest.mark.parametrize("named, filtered", [(RAR_ID, [RAR_ID, f"{RAR_ID}#3"]),
                                             (RAR_ID.upper(), [RAR_ID, f"{RAR_ID}#3"]),
                                             (f"{RAR_ID}#3", [f"{RAR_ID}#3"])])
def test_a_filter_naming_a_collections_shared_id_applies_to_each_of_its_rules(tmp_path, named, filtered):
    """The rules of a v1 collection share its id (numbered ``<id>#N`` here after the first): a filter naming that
    id applied to the first rule only, as pySigma's does to every rule of that id; ``<id>#N`` names one."""
    from pipeshell_filter.cli import load_plans

    mf = write(tmp_path, "mf.yml", spec_filter([named]))
    rule_set = load_plans([collection_of_two(tmp_path), mf], None, strict=True)
    assert sorted(plan.rule.id for plan in rule_set if plan.rule.filters) == filtered
    events = [event(0, "adm_a"), event(1, "adm_a", "C:\\7z.exe"), event(2, "bob", "C:\\7z.exe")]
    alerted = users_alerted(run_cli(["--rule", collection_of_two(tmp_path), "--rule", mf], ndjson(events)))
    assert alerted == [(RAR_ID, [1])] * (RAR_ID not in filtered) + [(f"{RAR_ID}#3", [3])]



def test_a_filter_naming_a_collection_applies_to_its_rules_within_its_logsource(tmp_path):
    """A collection's rules often differ in logsource (sysmon, security): the filter applies to those within its
    own, as ``rules: any`` does, and a warning (``--strict``: an error) says when none is."""
    from pipeshell_filter.cli import UsageProblem, load_plans

    path = tmp_path / "collection.yml"
    path.write_text(f"action: global\ntitle: rar or 7z\nid: {RAR_ID}\ndetection:\n  condition: selection\n---\n"
                    "logsource: {category: process_creation, product: windows}\n"
                    "detection:\n  selection: {Image|endswith: 'rar.exe'}\n---\n"
                    "logsource: {category: file_event, product: windows}\n"
                    "detection:\n  selection: {TargetFilename|endswith: '.7z'}\n")
    rule_set = load_plans([str(path), write(tmp_path, "mf.yml", spec_filter([RAR_ID]))], None, strict=True)
    assert [(plan.rule.id, plan.rule.logsource["category"], bool(plan.rule.filters)) for plan in rule_set] == \
        [(RAR_ID, "process_creation", True), (f"{RAR_ID}#3", "file_event", False)]
    elsewhere = write(tmp_path, "mf.yml", spec_filter([RAR_ID], logsource={"category": "network_connection"}))
    with pytest.raises(UsageProblem, match=f"no rule of the collection '{RAR_ID}' is within its logsource"):
        load_plans([str(path), elsewhere], None, strict=True)
