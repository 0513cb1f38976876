"""Rule loading (the built-in rule, RuleError messages) and compiled plans (join modes, matching, prefilter)."""

import textwrap

import attrs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeshell_filter.sigma.condition import Aggregation, Not, Or, Ref
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.matchers import FieldMatcher, KeywordMatcher
from pipeshell_filter.sigma.rule import BUILTIN_RULE, RuleError, load_rule, parse_rule

SERVER = "System.IO.Pipes.NamedPipeServerStream"
CLIENT = "System.IO.Pipes.NamedPipeClientStream"
SOURCE = "/etc/rules/my_rule.yml"

SELECTIONS = [
    "SERVER_powershell_native",
    "SERVER_powershell_modern",
    "SERVER_powershell_block",
    "CLIENT_powershell_native",
    "CLIENT_spowershell_modern",
    "CLIENT_powershell_block",
]


@pytest.fixture(scope="module")
def builtin():
    return load_rule(BUILTIN_RULE, builtin=True)


@pytest.fixture(scope="module")
def plan(builtin):
    return compile_plan(builtin)


@pytest.fixture(scope="module")
def resolver():
    return FieldResolver(builtin_profiles())


def rule_text(detection, **top):
    data = {"title": "test rule", **top, "detection": detection}
    return yaml.safe_dump(data, sort_keys=False)


def make_plan(detection, join=None, **top):
    return compile_plan(parse_rule(rule_text(detection, **top), SOURCE), join)


def matched(plan, resolver, event):
    return plan.match(resolver.view(event))


def assert_one_line_rule_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message, message
    assert SOURCE in message, message
    for needle in needles:
        assert needle in message, (needle, message)


# ---------------------------------------------------------------- the built-in rule


def test_builtin_rule_metadata(builtin):
    assert builtin.builtin is True
    assert builtin.path == BUILTIN_RULE
    assert builtin.title == "PipeShell exfiltration over named pipes"
    assert builtin.level == "medium"
    assert builtin.status == "experimental"
    assert builtin.author == "mdecrevoisier"
    assert builtin.tags == ("attack.execution", "attack.t1059.001", "attack.exfiltration")
    assert builtin.attack_techniques == ("T1059.001",)
    assert builtin.attack_tactics == ("execution", "exfiltration")
    assert builtin.logsource["category"] == ["ps_module", "ps_classic_script", "ps_script"]
    assert len(builtin.references) == 7


def test_builtin_rule_has_stable_id_without_an_id_field(builtin):
    again = load_rule(BUILTIN_RULE)
    assert builtin.id == again.id
    assert len(builtin.id) == 36


def test_builtin_rule_selections(builtin):
    assert list(builtin.detection) == SELECTIONS
    assert builtin.detection["SERVER_powershell_native"] == {"EventID": 800, "EventData|contains": SERVER}
    assert builtin.detection["CLIENT_spowershell_modern"] == {"EventID": 4103, "Payload|contains": CLIENT}
    assert builtin.detection["CLIENT_powershell_block"] == {"EventID": 4104, "ScriptBlockText|contains": CLIENT}


def test_builtin_rule_condition_text_and_aggregation(builtin):
    assert builtin.condition.text == "(1 of SERVER*) AND (1 of CLIENT*) | count(Computer) > 2"
    assert builtin.condition.aggregation == Aggregation("count", "Computer", None, ">", 2.0)


def test_builtin_rule_timeframe(builtin):
    assert builtin.timeframe_ns == 300 * 1_000_000_000
    assert "timeframe" not in builtin.detection
    assert "condition" not in builtin.detection


# ---------------------------------------------------------------- rule errors

VALID = {"sel": {"EventID": 4104}, "condition": "sel"}


def test_valid_minimal_rule_parses():
    rule = parse_rule(rule_text(VALID), SOURCE)
    assert rule.path == SOURCE
    assert list(rule.detection) == ["sel"]
    assert rule.timeframe_ns is None
    assert rule.builtin is False


def test_unknown_modifier_names_file_selection_and_modifier():
    text = rule_text({"selection_pipes": {"CommandLine|frobnicate|contains": "x"}, "condition": "selection_pipes"})
    rule = parse_rule(text, SOURCE)
    with pytest.raises(RuleError) as excinfo:
        compile_plan(rule)
    assert_one_line_rule_error(excinfo, "selection_pipes", "frobnicate", "CommandLine")


def test_unknown_modifier_in_unused_selection_is_still_an_error():
    text = rule_text({"sel": {"a": "x"}, "other": {"b|frobnicate": "y"}, "condition": "sel"})
    with pytest.raises(RuleError) as excinfo:
        compile_plan(parse_rule(text, SOURCE))
    assert_one_line_rule_error(excinfo, "other", "frobnicate")


@pytest.mark.parametrize(
    "text",
    [
        "title: t\ndetection: [\n",
        "title: 't\ndetection:\n",
        "title: t\ndetection:\n\tsel: x\n",
        "title: t\n  bad: indent\n foo: bar\n",
        "title: t\ndetection:\n  sel: {a: 1\n  condition: sel\n",
        "title: !!python/object:os.system x\n",
    ],
)
def test_bad_yaml_is_one_line_rule_error(text):
    with pytest.raises(RuleError) as excinfo:
        parse_rule(text, SOURCE)
    assert_one_line_rule_error(excinfo)


def test_bad_yaml_message_has_line_number():
    with pytest.raises(RuleError) as excinfo:
        parse_rule("title: t\ndetection:\n\tsel: x\n", SOURCE)
    assert_one_line_rule_error(excinfo, "not valid YAML", "line 3")


def test_missing_condition():
    with pytest.raises(RuleError) as excinfo:
        parse_rule(rule_text({"sel": {"a": 1}}), SOURCE)
    assert_one_line_rule_error(excinfo, "condition")


@pytest.mark.parametrize("timeframe", ["5 minutes", "1M", "5", "m", "-5m", "1.5h", "5mins", "tomorrow", "0s", "0d"])
def test_bad_timeframe(timeframe):
    with pytest.raises(RuleError) as excinfo:
        parse_rule(rule_text({**VALID, "timeframe": timeframe}), SOURCE)
    assert_one_line_rule_error(excinfo, "timeframe", repr(timeframe))


@pytest.mark.parametrize("timeframe", ["1M", "3M", " 12 M "])
def test_a_timeframe_in_months_says_so(timeframe):
    """Sigma v1 wrote a month as 'M'; it was refused as a timeframe that cannot be parsed, beside an example
    of '5m', as if the case were the mistake."""
    with pytest.raises(RuleError) as excinfo:
        parse_rule(rule_text({**VALID, "timeframe": timeframe}), SOURCE)
    assert_one_line_rule_error(excinfo, "timeframe", repr(timeframe), "months", "in days")


def test_undefined_selection_in_condition():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "condition": "sel and not filter_undefined"}), SOURCE)
    with pytest.raises(RuleError) as excinfo:
        compile_plan(rule)
    assert_one_line_rule_error(excinfo, "filter_undefined")


def test_pattern_matching_nothing_is_rule_error():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "condition": "1 of nothing*"}), SOURCE)
    with pytest.raises(RuleError) as excinfo:
        compile_plan(rule)
    assert_one_line_rule_error(excinfo, "nothing*")


def test_unparsable_condition_is_rule_error():
    with pytest.raises(RuleError) as excinfo:
        parse_rule(rule_text({"sel": {"a": 1}, "condition": "sel and"}), SOURCE)
    assert_one_line_rule_error(excinfo)


def test_multi_document_yaml():
    text = rule_text(VALID) + "---\n" + rule_text(VALID)
    with pytest.raises(RuleError) as excinfo:
        parse_rule(text, SOURCE)
    assert_one_line_rule_error(excinfo, "found 2")


def test_leading_and_trailing_document_markers_are_one_document():
    rule = parse_rule("---\n" + rule_text(VALID) + "---\n", SOURCE)
    assert list(rule.detection) == ["sel"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "found 0"),
        ("- a\n- b\n", "mapping"),
        (yaml.safe_dump({"detection": VALID}), "title"),
        (yaml.safe_dump({"title": "t"}), "detection"),
        (yaml.safe_dump({"title": "t", "detection": {"sel": {"a": 1}, "condition": 5}}), "condition"),
        (yaml.safe_dump({"title": "t", "detection": {"sel": {"a": 1}, "condition": []}}), "condition"),
        (yaml.safe_dump({"title": "t", "logsource": "windows", "detection": VALID}), "logsource"),
        (yaml.safe_dump({"title": "t", "tags": [1, 2], "detection": VALID}), "tags"),
        (
            yaml.safe_dump({"title": "t",
                            "detection": {"a": {"x": 1}, "b": {"y": 1}, "condition": ["a | count() > 1", "b"]}}),
            "aggregation",
        ),
    ],
)
def test_other_structural_errors(text, needle):
    with pytest.raises(RuleError) as excinfo:
        parse_rule(text, SOURCE)
    assert_one_line_rule_error(excinfo, needle)


@pytest.mark.parametrize(
    "selection, needle",
    [
        ({"a|re": "(unclosed"}, "bad pattern"),
        ({"a|exists": "yes"}, "true or false"),
        ({"a": []}, "empty list"),
        ({}, "empty mapping"),
        ({"": "x"}, "empty field name"),
        ({"a": {"nested": "dict"}}, "unsupported value"),
    ],
)
def test_selection_compile_errors(selection, needle):
    rule = parse_rule(rule_text({"sel": selection, "condition": "sel"}), SOURCE)
    with pytest.raises(RuleError) as excinfo:
        compile_plan(rule)
    assert_one_line_rule_error(excinfo, "'sel'", needle)


def test_unreadable_file_names_file(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(RuleError) as excinfo:
        load_rule(str(missing))
    message = str(excinfo.value)
    assert str(missing) in message and "\n" not in message


def test_non_utf8_file_names_file(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RuleError) as excinfo:
        load_rule(str(path))
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_load_rule_from_file(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text(rule_text(VALID), encoding="utf-8")
    rule = load_rule(str(path))
    assert rule.path == str(path)
    assert rule.builtin is False


def test_duplicate_selection_key_is_rule_error():
    text = textwrap.dedent(
        """\
        title: t
        detection:
          selection:
            EventID: 4104
          filter:
            ScriptBlockText|contains: 'benign-a'
          filter:
            ScriptBlockText|contains: 'benign-b'
          condition: selection and not filter
        """
    )
    with pytest.raises(RuleError, match=r"line 7\): duplicate key 'filter'"):
        parse_rule(text, SOURCE)


# ---------------------------------------------------------------- timeframe


def test_timeframe_inside_detection_is_not_a_selection():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "timeframe": "30s", "condition": "1 of them"}), SOURCE)
    assert list(rule.detection) == ["sel"]
    assert rule.timeframe_ns == 30 * 10**9
    plan = compile_plan(rule)
    assert [s.name for s in plan.selections] == ["sel"]
    assert plan.expression == Ref("sel")
    assert plan.timeframe_ns == 30 * 10**9


def test_timeframe_at_top_level():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "condition": "sel"}, timeframe="2h"), SOURCE)
    assert rule.timeframe_ns == 2 * 3600 * 10**9


def test_timeframe_in_detection_wins_over_top_level():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "timeframe": "1m", "condition": "sel"}, timeframe="1d"), SOURCE)
    assert rule.timeframe_ns == 60 * 10**9


def test_referring_to_timeframe_in_condition_is_undefined_selection():
    rule = parse_rule(rule_text({"sel": {"a": 1}, "timeframe": "1m", "condition": "sel and timeframe"}), SOURCE)
    with pytest.raises(RuleError, match="timeframe"):
        compile_plan(rule)


def test_no_timeframe_is_zero_window_in_plan():
    assert make_plan(VALID).timeframe_ns == 0


# ---------------------------------------------------------------- condition lists


def test_condition_list_is_or_of_parts():
    plan = make_plan({"a": {"x": 1}, "b": {"y": 2}, "condition": ["a", "b"]})
    assert plan.rule.condition.text == "(a) or (b)"
    assert plan.expression == Or((Ref("a"), Ref("b")))


@pytest.mark.parametrize("parts", [["a and (b", "c)"], ["a) or (b", "c"], ["a", "(b", "c)"]])
def test_each_condition_of_a_list_is_parsed_on_its_own(parts):
    """Joined as text, one condition's '(' closed in the next: ['a and (b', 'c)'] loaded as
    '(a and b) or c' and alerted on c alone."""
    detection = {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}, "condition": parts}
    with pytest.raises(RuleError) as excinfo:
        make_plan(detection)
    assert_one_line_rule_error(excinfo, f"condition {2 if parts[0] == 'a' else 1} of the list:")


def test_a_condition_of_a_list_nests_as_deep_as_one_alone():
    deep = "(" * 100 + "a" + ")" * 100
    assert make_plan({"a": {"x": 1}, "condition": deep}).expression == Ref("a")
    assert make_plan({"a": {"x": 1}, "b": {"y": 2}, "condition": [deep, "b"]}).expression == Or((Ref("a"), Ref("b")))


# ---------------------------------------------------------------- join modes


@pytest.mark.parametrize("condition", ["a and b", "a and not b"])
def test_a_window_join_without_a_window_is_the_event_join(resolver, condition):
    """--join window splits a condition into terms that events in one timeframe may meet apart;
    without a timeframe or an aggregation there is no window, and an event meeting one term alone
    alerted (``a and b`` read as ``a or b``)."""
    plan = make_plan({"a": {"EventID": 4625}, "b": {"User": "bob"}, "condition": condition}, "window")
    assert len(plan.terms) == 1 and plan.correlation is None  # one term (its filters apply per event too)
    bob, amy = {"EventID": 4625, "User": "bob"}, {"EventID": 4625, "User": "amy"}
    assert (plan.judge(resolver.view(bob))[0] == plan.full_mask) == (condition == "a and b")
    assert (plan.judge(resolver.view(amy))[0] == plan.full_mask) == (condition == "a and not b")
    windowed = make_plan({"a": {"EventID": 4625}, "b": {"User": "bob"}, "condition": "a and b", "timeframe": "5m"},
                         "window")
    assert windowed.join == "window" and windowed.correlation is not None  # a window: two terms to join


def test_builtin_defaults_to_window_join_with_two_labelled_terms(plan):
    assert plan.join == "window"
    assert [t.label for t in plan.terms] == ["1 of SERVER*", "1 of CLIENT*"]
    assert plan.filters == ()
    assert plan.full_mask == 0b11
    assert plan.timeframe_ns == 300 * 10**9
    assert plan.aggregation == Aggregation("count", "Computer", None, ">", 2.0)
    assert plan.terms[0].node == Or(tuple(Ref(n) for n in SELECTIONS[:3]))
    assert plan.terms[1].node == Or(tuple(Ref(n) for n in SELECTIONS[3:]))


def test_builtin_event_join_has_one_term(builtin):
    plan = compile_plan(builtin, "event")
    assert plan.join == "event"
    assert len(plan.terms) == 1
    assert plan.filters == ()
    assert plan.terms[0].node == plan.expression
    assert plan.full_mask == 1


def test_non_builtin_defaults_to_event_join():
    rule = load_rule(BUILTIN_RULE)  # same file, not flagged built-in
    plan = compile_plan(rule)
    assert plan.join == "event"
    assert len(plan.terms) == 1


def test_unknown_join_mode():
    with pytest.raises(RuleError, match="join"):
        make_plan(VALID, "session")


def test_term_mask_window(plan):
    server, client = frozenset({SELECTIONS[1]}), frozenset({SELECTIONS[5]})
    assert plan.term_mask(server) == 0b01
    assert plan.term_mask(client) == 0b10
    assert plan.term_mask(server | client) == 0b11
    assert plan.term_mask(frozenset()) == 0


def test_term_mask_event_join_needs_whole_condition(builtin):
    plan = compile_plan(builtin, "event")
    assert plan.term_mask(frozenset({SELECTIONS[0]})) == 0
    assert plan.term_mask(frozenset({SELECTIONS[0], SELECTIONS[3]})) == 1


def test_window_selection_and_not_filter_has_one_term_and_one_filter():
    detection = {"selection": {"EventID": 4104}, "filter": {"ScriptBlockText|contains": "benign"}}
    plan = make_plan({**detection, "condition": "selection and not filter"}, "window")
    assert [t.label for t in plan.terms] == ["selection"]
    assert plan.terms[0].node == Ref("selection")
    assert plan.filters == (Not(Ref("filter")),)
    assert plan.term_mask(frozenset({"selection"})) == 1
    assert plan.term_mask(frozenset({"selection", "filter"})) == 0
    assert plan.term_mask(frozenset({"filter"})) == 0


@pytest.mark.parametrize("condition", ["all of sel_*", "sel_a and sel_b and sel_c", "(sel_a and sel_b and sel_c)",
                                       "all of sel_* and not f", "(sel_a and sel_b and sel_c) and not f",
                                       "sel_a and (sel_b and (sel_c and not f))", "not f and all of sel_*"])
def test_window_terms_are_the_same_however_the_and_is_grouped(condition):
    """AND is associative: ``all of sel_*`` alone was three terms (three events may meet them), and with
    ``and not f`` one term (one event had to meet all three), so adding a filter changed what alerts."""
    detection = {"sel_a": {"EventID": 1}, "sel_b": {"EventID": 2}, "sel_c": {"EventID": 3}, "f": {"User": "x"}}
    plan = make_plan({**detection, "condition": condition, "timeframe": "5m"}, "window")
    assert [t.node for t in plan.terms] == [Ref("sel_a"), Ref("sel_b"), Ref("sel_c")]
    assert plan.filters == ((Not(Ref("f")),) if "not f" in condition else ())
    assert plan.correlation is not None and len(plan.correlation.rules) == 3


def test_window_only_negative_condition_is_one_term():
    plan = make_plan({"filter": {"a": 1}, "condition": "not filter"}, "window")
    assert len(plan.terms) == 1
    assert plan.filters == ()
    assert plan.terms[0].node == Not(Ref("filter"))
    assert plan.term_mask(frozenset()) == 1


def test_unused_selections_are_dropped_from_plan():
    plan = make_plan({"a": {"x": 1}, "b": {"y": 1}, "condition": "a"})
    assert [s.name for s in plan.selections] == ["a"]


# ---------------------------------------------------------------- Plan.match on realistic events


def evtx_event(event_id, computer, event_data, record=1):
    return {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-PowerShell"}},
                "EventID": event_id,
                "TimeCreated": {"#attributes": {"SystemTime": "2021-06-03T13:00:12.356842Z"}},
                "EventRecordID": record,
                "Channel": "Microsoft-Windows-PowerShell/Operational",
                "Computer": computer,
            },
            "EventData": event_data,
        }
    }


def test_evtx_4104_server_event(plan, resolver):
    event = evtx_event(
        4104,
        "srv01.corp.example",
        {
            "MessageNumber": 1,
            "MessageTotal": 1,
            "ScriptBlockText": f"$pipeName = 'pipeshell'\r\n$pipe = New-Object {SERVER}($pipeName)",
            "ScriptBlockId": "4f1e2c3d",
            "Path": "C:\\ProgramData\\pipeshell\\srv.ps1",
        },
    )
    assert resolver.view(event).profile.name == "evtx"
    assert matched(plan, resolver, event) == {"SERVER_powershell_block"}
    assert plan.term_mask(matched(plan, resolver, event)) == 0b01


def test_classic_800_client_event_with_qualifiers_and_text_list(plan, resolver):
    event = evtx_event(
        {"#attributes": {"Qualifiers": "0"}, "#text": "800"},
        "cli01.corp.example",
        {
            "Data": {
                "#text": [
                    "$pipe = New-Object -TypeName $pipeType -ArgumentList $pipeName",
                    "\tDetailSequence=1\r\n\tHostName=ConsoleHost",
                    f'ParameterBinding(New-Object): name="TypeName"; value="{CLIENT}"',
                ]
            },
            "Binary": None,
        },
    )
    assert matched(plan, resolver, event) == {"CLIENT_powershell_native"}
    assert plan.term_mask(matched(plan, resolver, event)) == 0b10


def test_flat_4103_with_string_event_id(plan, resolver):
    event = {
        "EventID": "4103",
        "Computer": "cli02.corp.example",
        "TimeCreated": "2021-06-03T13:01:05.731890Z",
        "ContextInfo": "Severity = Informational",
        "Payload": 'CommandInvocation(New-Object): "New-Object"\r\n'
                   f'ParameterBinding(New-Object): value="{CLIENT.upper()}"',
    }
    assert resolver.view(event).profile.name == "flat"
    assert matched(plan, resolver, event) == {"CLIENT_spowershell_modern"}


def test_flat_event_with_eventdata_map(plan, resolver):
    event = {"EventID": 4104, "EventData": {"ScriptBlockText": f"[{SERVER}]::new('p')"}}
    assert matched(plan, resolver, event) == {"SERVER_powershell_block"}


def test_benign_event_matches_nothing(plan, resolver):
    event = evtx_event(4104, "ws07.corp.example", {"ScriptBlockText": "Get-ChildItem C:\\Temp | Remove-Item"})
    assert matched(plan, resolver, event) == frozenset()
    assert plan.term_mask(frozenset()) == 0


def test_string_in_wrong_field_matches_nothing(plan, resolver):
    event = {"EventID": 4103, "ContextInfo": f"Command Name = {SERVER}", "Payload": "Get-Date"}
    assert matched(plan, resolver, event) == frozenset()
    event = evtx_event(4104, "h", {"Path": f"C:\\{SERVER}.ps1", "ScriptBlockText": "Get-Date"})
    assert matched(plan, resolver, event) == frozenset()


def test_event_800_does_not_cross_match_4104_selection(plan, resolver):
    event = {"EventID": 800, "ScriptBlockText": SERVER}
    assert matched(plan, resolver, event) == frozenset()
    event = {"EventID": 800, "EventData": f"x {SERVER} y"}
    assert matched(plan, resolver, event) == {"SERVER_powershell_native"}


def test_event_4104_with_payload_does_not_match_4103_selection(plan, resolver):
    assert matched(plan, resolver, {"EventID": 4104, "Payload": CLIENT}) == frozenset()


def test_qualifiers_do_not_satisfy_event_id_selection(resolver):
    plan = make_plan({"sel": {"EventID": 0}, "condition": "sel"})
    event = evtx_event({"#attributes": {"Qualifiers": "0"}, "#text": "800"}, "h", {})
    assert matched(plan, resolver, event) == frozenset()
    plan800 = make_plan({"sel": {"EventID": 800}, "condition": "sel"})
    assert matched(plan800, resolver, event) == {"sel"}


def test_event_with_both_classes_matches_both_sides(plan, resolver):
    event = {"EventID": 4104, "ScriptBlockText": f"{SERVER}; {CLIENT}"}
    m = matched(plan, resolver, event)
    assert m == {"SERVER_powershell_block", "CLIENT_powershell_block"}
    assert plan.term_mask(m) == 0b11


# ---------------------------------------------------------------- selection semantics


def test_all_modifier_with_list(resolver):
    plan = make_plan({"sel": {"CommandLine|contains|all": ["New-Object", "NamedPipe"]}, "condition": "sel"})
    assert matched(plan, resolver, {"CommandLine": "New-Object System.IO.Pipes.NamedPipeServerStream"}) == {"sel"}
    assert matched(plan, resolver, {"CommandLine": "New-Object System.Net.WebClient"}) == frozenset()
    # the values may be met by different leaves of a list-valued field
    assert matched(plan, resolver, {"CommandLine": ["New-Object x", "NamedPipe y"]}) == {"sel"}
    assert matched(plan, resolver, {}) == frozenset()


def test_list_without_all_is_or(resolver):
    plan = make_plan({"sel": {"EventID": [4103, 4104]}, "condition": "sel"})
    assert matched(plan, resolver, {"EventID": 4103}) == {"sel"}
    assert matched(plan, resolver, {"EventID": "4104"}) == {"sel"}
    assert matched(plan, resolver, {"EventID": 800}) == frozenset()


def test_field_list_value_matches_any_leaf(resolver):
    plan = make_plan({"sel": {"Data": "b"}, "condition": "sel"})
    assert matched(plan, resolver, {"Data": ["a", "B", "c"]}) == {"sel"}
    assert matched(plan, resolver, {"Data": ["a", "bb"]}) == frozenset()


def test_list_of_maps_is_or_of_and(resolver):
    plan = make_plan({"sel": [{"EventID": 1, "a": "x"}, {"EventID": 2}], "condition": "sel"})
    assert matched(plan, resolver, {"EventID": 1, "a": "x"}) == {"sel"}
    assert matched(plan, resolver, {"EventID": 1, "a": "y"}) == frozenset()
    assert matched(plan, resolver, {"EventID": 2}) == {"sel"}


def test_null_value_means_absent_or_null(resolver):
    plan = make_plan({"sel": {"EventID": 4104, "Path": None}, "condition": "sel"})
    assert matched(plan, resolver, {"EventID": 4104}) == {"sel"}
    assert matched(plan, resolver, {"EventID": 4104, "Path": None}) == {"sel"}
    assert matched(plan, resolver, {"EventID": 4104, "Path": ""}) == frozenset()
    assert matched(plan, resolver, {"EventID": 4104, "Path": "C:\\x.ps1"}) == frozenset()


def test_null_or_value(resolver):
    plan = make_plan({"sel": {"Path": [None, "a.ps1"]}, "condition": "sel"})
    assert matched(plan, resolver, {}) == {"sel"}
    assert matched(plan, resolver, {"Path": "A.PS1"}) == {"sel"}
    assert matched(plan, resolver, {"Path": "b.ps1"}) == frozenset()


def test_exists_modifier(resolver):
    present = make_plan({"sel": {"ScriptBlockText|exists": True}, "condition": "sel"})
    absent = make_plan({"sel": {"ScriptBlockText|exists": False}, "condition": "sel"})
    for event, is_present in [
        ({"ScriptBlockText": "x"}, True),
        ({"ScriptBlockText": ""}, True),
        ({"ScriptBlockText": None}, True),
        ({"Other": "x"}, False),
        ({}, False),
    ]:
        assert (matched(present, resolver, event) == {"sel"}) is is_present, event
        assert (matched(absent, resolver, event) == {"sel"}) is (not is_present), event


def test_exists_through_evtx_roots(resolver):
    plan = make_plan({"sel": {"ScriptBlockText|exists": True}, "condition": "sel"})
    assert matched(plan, resolver, evtx_event(4104, "h", {"ScriptBlockText": "x"})) == {"sel"}
    assert matched(plan, resolver, evtx_event(4104, "h", {"Path": "x"})) == frozenset()


def test_keyword_list_matches_anywhere(resolver):
    plan = make_plan({"keywords": ["NamedPipeServerStream", "Invoke-PipeShell"], "condition": "keywords"})
    sel = plan.selections[0]
    assert isinstance(sel.alternatives[0][0], KeywordMatcher)
    assert matched(plan, resolver, {"deep": {"list": ["zz", "… invoke-pipeshell …"]}}) == {"keywords"}
    assert matched(plan, resolver, evtx_event(4104, "h", {"ScriptBlockText": SERVER})) == {"keywords"}
    assert matched(plan, resolver, {"a": "Get-Date", "b": 4104}) == frozenset()


def test_keywords_see_xml_attributes_but_not_namespaces(resolver):
    """A keyword searches the event's text, an attribute's value too (as where a collector writes it as a
    plain key); a field is its element's text alone, and xmlns is syntax."""
    plan = make_plan({"keywords": ["secret"], "condition": "keywords"})
    assert matched(plan, resolver, {"x": {"#attributes": {"Name": "secret"}, "#text": "ok"}}) == {"keywords"}
    assert matched(plan, resolver, {"x": {"#attributes": {"xmlns": "secret", "xmlns:s": "secret"}}}) == frozenset()
    field = make_plan({"sel": {"x": "secret"}, "condition": "sel"})
    assert matched(field, resolver, {"x": {"#attributes": {"Name": "secret"}, "#text": "ok"}}) == frozenset()


def test_single_keyword_string(resolver):
    plan = make_plan({"kw": "pipeshell", "condition": "kw"})
    assert matched(plan, resolver, {"a": "Invoke-PIPESHELL"}) == {"kw"}


@pytest.mark.parametrize("keyword", [1.5, 15, "1.5"])
def test_a_single_keyword_is_taken_as_a_list_of_one_is(resolver, keyword):
    """A lone number was refused when a float ("must be a mapping, ... or a list of keywords"), though
    the same number in a list of one, or an int alone, was taken."""
    alone, listed = (make_plan({"kw": value, "condition": "kw"}) for value in (keyword, [keyword]))
    for event in ({"a": "x 1.5 y"}, {"a": 1.5}, {"a": 15}, {"a": "15"}, {"a": "2"}):
        assert matched(alone, resolver, event) == matched(listed, resolver, event), event
    assert matched(alone, resolver, {"a": f"x {keyword} y"}) == {"kw"}


def test_field_matcher_is_compiled_with_its_modifiers(builtin):
    plan = compile_plan(builtin)
    group = plan.selections[0].alternatives[0]
    assert [type(m) for m in group] == [FieldMatcher, FieldMatcher]
    assert [m.describe() for m in group] == ["EventID", "EventData|contains"]


def test_selection_and_not_filter_matching(resolver):
    plan = make_plan(
        {"selection": {"EventID": 4104}, "filter": {"ScriptBlockText|contains": "benign"},
         "condition": "selection and not filter"},
        "window",
    )
    ok = matched(plan, resolver, {"EventID": 4104, "ScriptBlockText": "evil"})
    filtered = matched(plan, resolver, {"EventID": 4104, "ScriptBlockText": "BENIGN stuff"})
    assert ok == {"selection"} and plan.term_mask(ok) == 1
    assert filtered == {"selection", "filter"} and plan.term_mask(filtered) == 0


# ---------------------------------------------------------------- prefilter literals


def test_builtin_prefilter_literals_are_the_two_class_names(plan):
    assert plan.prefilter_literals() == sorted([SERVER.lower(), CLIENT.lower()])


def test_builtin_event_join_prefilter_needs_one_class_name(builtin):
    # one event must name both types under --join event: looking for one of them is enough
    assert compile_plan(builtin, "event").prefilter_literals() in ([SERVER.lower()], [CLIENT.lower()])


def test_prefilter_none_for_not_filter():
    plan = make_plan({"filter": {"ScriptBlockText|contains": "benign"}, "condition": "not filter"})
    assert plan.prefilter_literals() is None


def test_prefilter_with_re_selection_uses_the_run_every_match_holds():
    plan = make_plan(
        {"sel": {"ScriptBlockText|re": "Named.*Stream"}, "other": {"Payload|contains": SERVER},
         "condition": "sel or other"}
    )
    assert plan.prefilter_literals() == ["stream", SERVER.lower()]  # the longer of "Named" and "Stream"
    assert make_plan({"sel": {"a|re": "x+"}, "condition": "sel"}).prefilter_literals() is None  # too short
    assert make_plan({"sel": {"a|re": "(abc|def)"}, "condition": "sel"}).prefilter_literals() is None


def test_prefilter_re_beside_a_literal_matcher_takes_the_longer_requirement():
    # every match holds '4104' and 'Stream': one of them is enough, the longer one
    plan = make_plan({"sel": {"EventID": 4104, "ScriptBlockText|re": "Named.*Stream"}, "condition": "sel"})
    assert plan.prefilter_literals() == ["stream"]
    plan = make_plan({"sel": {"EventID": 4104, "ScriptBlockText|re": "[a-z]+"}, "condition": "sel"})
    assert plan.prefilter_literals() == ["4104"]


def test_prefilter_uses_longest_literal_of_each_alternative():
    plan = make_plan({"sel": {"EventID": 4104, "ScriptBlockText|contains": "NamedPipe"}, "condition": "sel"})
    assert plan.prefilter_literals() == ["namedpipe"]


def test_prefilter_none_for_exists_or_null_only_selection():
    assert make_plan({"sel": {"a|exists": True}, "condition": "sel"}).prefilter_literals() is None
    assert make_plan({"sel": {"a": None}, "condition": "sel"}).prefilter_literals() is None


def test_prefilter_with_and_not_filter_is_still_available():
    plan = make_plan({"sel": {"a|contains": "Evil"}, "filter": {"b": "ok"}, "condition": "sel and not filter"})
    lits = plan.prefilter_literals()
    assert lits is not None and "evil" in lits


def test_prefilter_keywords():
    plan = make_plan({"kw": ["Alpha", "Beta"], "condition": "kw"})
    assert plan.prefilter_literals() == ["alpha", "beta"]


def test_prefilter_all_modifier_uses_one_value():
    plan = make_plan({"sel": {"a|contains|all": ["first", "second"]}, "condition": "sel"})
    assert plan.prefilter_literals() == ["second"]  # every value must occur: the longest is looked for


# ---------------------------------------------------------------- selection guards

_GUARD_DETECTIONS = [
    {"sel": {"EventID": 4104, "ScriptBlockText|contains": "pipe"}, "condition": "sel"},
    {"sel": [{"EventID": [800, 4103]}, {"EventID": "4104", "Payload": "x"}], "condition": "sel"},
    {"sel": {"EventID|cased": "AbC"}, "condition": "sel"},
    {"sel": [{"EventID": 1}, {"Channel": "x"}], "condition": "sel"},  # no common field: no guard
    {"sel": {"Channel": "Security", "EventID|contains": "41"}, "condition": "sel"},  # guard on Channel
    {"sel": {"EventID": None}, "condition": "sel"},
]


@pytest.mark.parametrize("detection", _GUARD_DETECTIONS)
@given(event_id=st.one_of(st.integers(0, 5000), st.sampled_from(["4104", "abc", "ABC", "800", " 800", "4103"]),
                          st.builds(lambda t: {"#text": t}, st.sampled_from(["800", "4104", "AbC"])),
                          st.lists(st.sampled_from(["800", 4104, "x"]), max_size=3), st.none()),
       channel=st.sampled_from(["Security", "security", "x", None]),
       text=st.sampled_from(["", "a pipe", "x"]))
def test_selection_guard_never_changes_the_verdict(detection, event_id, channel, text):
    plan = make_plan(detection)
    resolver = FieldResolver(builtin_profiles())
    event = {"ScriptBlockText": text, "Payload": text}
    if event_id is not None:
        event["EventID"] = event_id
    if channel is not None:
        event["Channel"] = channel
    for selection in plan.selections:
        unguarded = attrs.evolve(selection, guard=None)
        assert selection.matches(resolver.view(event)) == unguarded.matches(resolver.view(event))


def test_selection_guards_are_found():
    guards = [make_plan(d).selections[0].guard for d in _GUARD_DETECTIONS]
    assert guards[0] == ("EventID", frozenset({"4104"}))
    assert guards[1] == ("EventID", frozenset({"800", "4103", "4104"}))
    assert guards[2] == ("EventID", frozenset({"abc"}))
    assert guards[3] is None and guards[5] is None
    assert guards[4] == ("Channel", frozenset({"security"}))


def test_attack_tags_are_read_by_kind_as_ecs_threat_fields():
    """Group and software tags (attack.g0069, attack.s0002: 128 in SigmaHQ) went into the tactic
    names, and attack.t1059.1 became a technique id the schema refuses."""
    rule = parse_rule(textwrap.dedent("""\
        title: t
        tags: [attack.credential-access, attack.lateral-movement, attack.s0002, attack.g0069, attack.t1059.1,
               attack.t1003.001, attack.T1021, cve.2021-1234, detection.threat-hunting]
        detection:
          sel: {x: 1}
          condition: sel
        """), "t.yml")
    assert rule.attack_tactics == ("credential-access", "lateral-movement")
    assert rule.attack_techniques == ("T1003.001", "T1021")
    assert rule.attack_groups == ("G0069",) and rule.attack_software == ("S0002",)


def test_attack_ids_are_ascii_digits_as_the_alert_schema_says():
    """``\\d`` took any Unicode digit: attack.t\u0661\u0662\u0663\u0664 became the technique id
    ``T\u0661\u0662\u0663\u0664``, which the alert schema's ``^T[0-9]{4}`` refuses."""
    arabic = "\u0661\u0662\u0663\u0664"
    tags = f"attack.t{arabic}, attack.g{arabic}, attack.s{arabic}, attack.t1021.{arabic[:3]}, attack.execution"
    rule = parse_rule(f"title: t\ntags: [{tags}]\ndetection:\n  sel: {{x: 1}}\n  condition: sel\n", "t.yml")
    assert rule.attack_techniques == rule.attack_groups == rule.attack_software == ()
    assert rule.attack_tactics == ("execution",)
