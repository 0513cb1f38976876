"""A rule's literal formula (``sigma.literals``) and the rule-set index built on it are sound:
whenever a rule's condition holds on an event, the index names that rule for the event's raw
line, however the line's JSON was written (escaped slashes, ``\\u`` escapes, raw UTF-8)."""

import json

import hypothesis.strategies as st
import ujson
import yaml
from hypothesis import example, given

from pipeshell_filter.detect import Detector, event_facts
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io import rule_index as ri
from pipeshell_filter.sigma import literals
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule

ENGINES = pf.available_engines()
RESOLVER = FieldResolver(builtin_profiles())
FIELDS = ["A", "B"]
# Text made of what makes needles hard: JSON's escaped characters, slashes, case, look-alikes,
# caseless characters beyond ASCII (one beyond the BMP), one that is part of another's folding
# (U+02BC, of U+0149), and dotted digits.
TEXT = st.text(alphabet="abAB\\\"/ -.1\u017f\u212a\u00e9\u00c9\u2014\U0001f600\u02bc\u0149\u00a0", min_size=0,
               max_size=6)
KINDS = ["", "|contains", "|startswith", "|endswith", "|contains|all", "|windash|contains", "|cased",
         "|endswith|cased"]
# Rule values that start or end the text of a JSON value written without quotes (true, 1e400 as
# inf, NaN as nan, 2.5 as itself): a needle next to a quote would miss them.
UNQUOTED_PARTS = st.sampled_from(["true", "rue", "tr", "false", "alse", "inf", "nan", "na", "2.5", ".5a", "a1"])
# Event values: strings, and what JSON writes without quotes.
VALUES = st.one_of(TEXT, st.booleans(), st.integers(-100, 100), st.sampled_from([2.5, -0.5, 1e300, 1e20]))


@st.composite
def conditions(draw, names, depth=0):
    if depth >= 2 or draw(st.booleans()):
        return draw(st.sampled_from(names))
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return f"not {draw(conditions(names, depth + 1))}"
    return f"({draw(conditions(names, depth + 1))} {op} {draw(conditions(names, depth + 1))})"


@st.composite
def rules(draw):
    detection = {}
    for name in ("s1", "s2", "s3"):
        field = draw(st.sampled_from(FIELDS))
        values = draw(st.lists(st.one_of(TEXT.filter(lambda t: t.strip("*?")), UNQUOTED_PARTS), min_size=1,
                               max_size=3))
        detection[name] = {field + draw(st.sampled_from(KINDS)): values}
    detection["condition"] = draw(conditions(["s1", "s2", "s3"]))
    text = yaml.safe_dump({"title": "t", "id": "r", "detection": detection})
    return compile_plan(parse_rule(text, "r.yml"))


def spellings(event: dict) -> list:
    """The same event as different JSON writers put it."""
    return [json.dumps(event).encode(), json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            ujson.dumps(event).encode(), ujson.dumps(event, escape_forward_slashes=False).encode()]


@given(rules(), st.fixed_dictionaries({f: VALUES for f in FIELDS}))
@example(compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": "r", "detection": {
    "s1": {"A|contains": "a/\\b"}, "condition": "s1"}}), "r.yml")), {"A": "xa/\\by", "B": ""})
@example(compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": "r", "detection": {
    "s1": {"A|contains": "ab\\ba"}, "condition": "s1"}}), "r.yml")), {"A": "ab\\ba", "B": ""})
def test_a_rule_whose_condition_holds_is_named_by_the_index(plan, event):
    mask, _ = plan.judge(RESOLVER.view(event))
    formula = literals.of_plan(plan, pf.needle)
    if not mask or formula is None:
        return
    for line in spellings(event):
        for engine in ENGINES:
            index = ri.RuleIndex({0: formula, 1: [b"zzzz"]}, engine)
            found = index.rules_for(line)
            assert found is None or 0 in found, (line, formula, engine)
        cover = literals.cover(formula)
        scanner = pf.Prefilter(sorted(cover), ENGINES[0])
        assert scanner.spans(line + b"\n"), (line, cover)


def test_an_and_needs_a_literal_of_each_side():
    plan = compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": "r", "detection": {
        "img": {"Image|endswith": "\\whoami.exe"}, "cli": {"CommandLine|contains": "/priv"},
        "filter": {"ParentImage|endswith": "\\cmd.exe"}, "condition": "img and cli and not filter"}}), "r.yml"))
    formula = literals.of_plan(plan, pf.needle)
    assert formula == (literals.AND, (b"\\\\whoami.exe\"", b"priv"))  # the filter asks for nothing; an end: "
    for engine in ENGINES:
        index = ri.RuleIndex({0: formula, 1: [b"zzzz"]}, engine)
        assert index.rules_for(rb'{"Image": "C:\\whoami.exe", "CommandLine": "whoami /priv"}') == {0}
        assert index.rules_for(rb'{"Image": "C:\\whoami.exe", "CommandLine": "whoami /all"}') == frozenset()
        assert index.rules_for(rb'{"Image": "C:\\x.exe", "CommandLine": "whoami /priv"}') == frozenset()


def test_an_event_id_guard_routes_before_any_rule_is_tried():
    plan = compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": "r", "detection": {
        "a": {"EventID": 4104, "X": "y"}, "b": {"EventID": [800, 4103]}, "f": {"EventID": 1},
        "condition": "(a or b) and not f"}}), "r.yml"))
    assert literals.required_values(plan) == {"4104", "800", "4103"}
    either = compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": "r", "detection": {
        "a": {"EventID": 4104}, "k": ["word"], "condition": "a or k"}}), "r.yml"))
    assert literals.required_values(either) is None  # a keyword alone may match any EventID


ROUTED_RULES = [
    {"logsource": {"product": "windows", "category": "process_creation"}, "detection": {"s": {"Image": "x"}}},
    {"logsource": {"product": "windows", "service": "security"}, "detection": {"s": {"EventID": [4624, "4625"]}}},
    {"logsource": {"product": "windows", "category": "ps_script"}, "detection": {"s": {"EventID": 4104, "X": 1}}},
    {"detection": {"s": {"EventID": ["true", 1.5]}}},
    {"logsource": {"product": "aws"}, "detection": {"s": {"eventName": "x"}}},
]
CHANNELS = st.sampled_from(["Security", "security", "Microsoft-Windows-Sysmon/Operational",
                            "Microsoft-Windows-PowerShell/Operational", "Other", ""])
EVENT_IDS = st.one_of(st.sampled_from([1, 4624, 4625, 4104, 0, -1, 2 ** 70]), st.sampled_from(["1", "4625", "ABC", ""]),
                      st.booleans(), st.sampled_from([1.0, 1.5, 4624.0]), st.none(),
                      st.lists(st.sampled_from([1, "4104", True]), max_size=2),
                      st.fixed_dictionaries({"#text": st.sampled_from([4624, "1"]), "#attributes": st.just({"Q": 0})}))


@given(st.lists(st.tuples(st.one_of(CHANNELS, st.none(), st.lists(CHANNELS, max_size=2)), EVENT_IDS,
                          st.booleans(), st.booleans()), min_size=1, max_size=30))
@example([("Security", 1, True, True), ("Security", True, True, True), ("Security", 1.0, True, True),
          ("Security", "1", True, True)])
def test_an_event_is_routed_to_the_rules_its_log_source_and_event_id_allow(stream):
    """Whatever shape its channel and EventID have (a number, a text, a boolean, a list, an XML
    element, absent), and however often the route was asked for before, an event goes to the
    rules whose log source applies to its facts and whose required EventIDs it has."""
    plans = [compile_plan(parse_rule(yaml.safe_dump({"title": "t", "id": f"r{i}", "condition": "s", **rule,
                                                     "detection": {**rule["detection"], "condition": "s"}}), "r.yml"))
             for i, rule in enumerate(ROUTED_RULES)]
    resolver = FieldResolver(builtin_profiles())
    detector = Detector(plans, resolver)
    for channel, event_id, has_channel, has_id in stream:
        event = {"Image": "x"}
        if has_channel:
            event["Channel"] = channel
        if has_id:
            event["EventID"] = event_id
        view = resolver.view(event)
        facts, event_ids = event_facts(view), view.folded("EventID")
        wanted = [literals.required_values(plan) for plan in plans]
        expected = {i for i, plan in enumerate(plans)
                    if (plan.logsource is None or plan.logsource.applies(facts, "match"))
                    and (wanted[i] is None or not wanted[i].isdisjoint(event_ids))}
        assert detector._route(resolver.view(event)) == expected, event
