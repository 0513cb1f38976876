"""A rule value YAML 1.1 reads as a number from a form it rewrites (``0755`` is 493, ``0x1F`` 31, ``1_000``
1000, ``1:30`` 90, ``+5`` 5) is compared as the text its author wrote: ``FileMode: 0755`` matched an
event's ``"493"``, never its ``"0755"``.  A decimal written with a point (``1.0``, ``1.10``, ``1.0e+16``)
matches its text as written and its number (``1``, ``1.1``, ``1e16``).  A number written as the text it compares by
(``EventID: 4104``, ``-5``, ``1.5``) is compared as before.  Under lt..gte and the date parts the
written text is read as an event's text is (decimal), and a form that reads as no decimal number is
a rule error."""

import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clitools import alerts, run_cli
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.sigma.compile import compile_plan, compile_selection
from pipeshell_filter.sigma.rule import RuleError, parse_rule, parse_rules
from pipeshell_filter.values import first_leaf
from pipeshell_filter import yamlfile

SOURCE = "/rules/numbers.yml"
RESOLVER = FieldResolver(builtin_profiles())
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every text YAML 1.1 resolves as an int or a float, from PyYAML's own patterns for them.
_NUMBER_PATTERNS = [pattern for tag, pattern in yaml.resolver.Resolver.yaml_implicit_resolvers["1"]
                    if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
NUMBER_TEXTS = st.one_of([st.from_regex(pattern, fullmatch=True) for pattern in _NUMBER_PATTERNS])


def _rule(key: str, written: str) -> str:
    return f"title: t\nlogsource: {{product: linux}}\ndetection:\n  sel:\n    '{key}': {written}\n  condition: sel\n"


def selects(key: str, written: str, event: dict) -> bool:
    """Whether the rule ``key: written`` (``written`` as YAML text, unquoted) selects ``event``."""
    rule = parse_rule(_rule(key, written), SOURCE)
    return compile_selection("sel", rule.detection["sel"], SOURCE).matches(RESOLVER.view(event))


def yaml_number(text: str):
    """What YAML makes of ``text`` written unquoted, when it is a finite number; else the test is skipped."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # 0x_ is an int to the pattern, no int to Python
        value = None
    assume(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    return value


@FAST
@given(NUMBER_TEXTS)
def test_a_number_matches_the_text_its_author_wrote(text):
    value = yaml_number(text)
    assert selects("F", text, {"F": text})
    assert selects("F", text, {"F": text.upper()})  # 0x1f and 0X1F: values are caseless
    as_yaml_reads = first_leaf(value)
    if as_yaml_reads == text:  # written as it compares: as before, the JSON number too
        assert selects("F", text, {"F": value})
    elif re.fullmatch(r"-?(?:0|[1-9][0-9]*)\.[0-9]+(?:[eE][-+]?[0-9]+)?", text):  # 1.10, 1.0e+16: text or number
        assert selects("F", text, {"F": as_yaml_reads}) and selects("F", text, {"F": value})
        assert not selects("F|neq", text, {"F": value}) and not selects("F|neq", text, {"F": text})
    else:  # a form YAML rewrites: its number's text is another value
        assert not selects("F", text, {"F": as_yaml_reads}) and not selects("F", text, {"F": value})
        assert selects("F|neq", text, {"F": as_yaml_reads}) and not selects("F|neq", text, {"F": text})


@FAST
@given(NUMBER_TEXTS)
def test_a_comparison_reads_the_written_number_in_decimal_or_refuses_it(text):
    """``|gte: 0755`` is 755, as an event's ``"0755"`` is read; ``|gte: 0x1F`` reads as no decimal number."""
    value = yaml_number(text)
    decimal = text.lstrip("+-").replace(".", "", 1)
    if decimal.isdigit() and decimal.isascii() and "e" not in text.lower():
        assert selects("F|gte", text, {"F": text}) and not selects("F|gt", text, {"F": text})
    elif first_leaf(value) != text and any(mark in text.lower() for mark in ("x", "b", "_", ":")):
        with pytest.raises(RuleError, match=r"reads numbers in decimal.*not one \(YAML 1\.1 makes it"):
            selects("F|gte", text, {"F": text})


def test_file_mode_0755_matches_an_events_0755_through_the_cli(tmp_path):
    """The reported case: ``FileMode: 0755`` alerted on ``"493"`` and ``493``, not on ``"0755"``."""
    rule = tmp_path / "r.yml"
    rule.write_text(_rule("FileMode", "0755"))
    lines = b'{"FileMode": "0755"}\n{"FileMode": "493"}\n{"FileMode": 493}\n{"FileMode": "755"}\n'
    result = run_cli(["--rule", str(rule)], lines)
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert [event["line"] for alert in found for event in alert["sigma"]["events"]] == [1]


@pytest.mark.parametrize("written, event, expected", [
    ("0x1F", "0x1f", True), ("0x1F", "31", False), ("1_000", "1_000", True), ("1_000", "1000", False),
    ("1:30", "1:30", True), ("1:30", "90", False), ("+5", "+5", True), ("+5", "5", False),
    ("1.10", "1.10", True), ("1.10", "1.1", True), ("1.0", "1.0", True), ("1.0", 1.0, True), ("1.0", "1", True),
    ("1.10", "1.100", False), ("01.5", "1.5", False), ("0b101", "0b101", True),
    ("-0", "-0", True), ("[0755, 0x10]", "0x10", True), ("[0755, 0x10]", "16", False),
])
def test_forms_yaml_rewrites(written, event, expected):
    assert selects("F", written, {"F": event}) is expected


def test_keywords_search_the_written_text():
    rule = parse_rule("title: t\ndetection:\n  words: [0755, 4104]\n  condition: words\n", SOURCE)
    words = compile_selection("words", rule.detection["words"], SOURCE)
    assert words.matches(RESOLVER.view({"a": "chmod 0755 x"})) and words.matches(RESOLVER.view({"a": "id 4104"}))
    assert not words.matches(RESOLVER.view({"a": "chmod 493 x"}))


@pytest.mark.parametrize("written, event", [("4104", "4104"), ("4104", 4104), ("-5", "-5"), ("1.5", 1.5),
                                            ("1.5", "1.5"), ("0", "0"), ("0", 0)])
def test_a_number_written_as_it_compares_is_matched_as_before(written, event):
    assert selects("EventID", written, {"EventID": event})
    assert type(parse_rule(_rule("EventID", written), SOURCE).detection["sel"]["EventID"]) in (int, float)


@pytest.mark.parametrize("key, written, event, expected", [
    ("F|gt", "0755", "756", True), ("F|gt", "0755", "700", False),  # 755, not YAML's 493
    ("F|lte", "+5", "5", True), ("F|gte", "1.50", "1.5", True), ("F|hour", "07", "2026-01-01T07:00:00Z", True),
    ("F|hour", "09", "2026-01-01T09:00:00Z", True),  # 09 is no octal: YAML reads the text '09'
    ("F|gt", "1e3", "1001", True),  # no number to YAML 1.1 either (it wants a point)
])
def test_a_comparison_reads_the_written_text_in_decimal(key, written, event, expected):
    assert selects(key, written, {"F": event}) is expected


@pytest.mark.parametrize("key, written, needles", [
    ("F|gt", "0x10", ["|gt reads numbers in decimal", "0x10 is not one", "makes it 16"]),
    ("F|lt", "1_000", ["1_000 is not one"]), ("F|hour", "1:30", ["|hour reads numbers in decimal"]),
    ("F|gt", "'12'", ["write 12 unquoted"]), ("F|gte", "'0755'", ["write 0755 unquoted"]),
    ("F|contains", "0x1F", ["|contains applies to text", "number 0x1F", "quote"]),
])
def test_forms_no_comparison_reads_are_rule_errors(key, written, needles):
    with pytest.raises(RuleError) as excinfo:
        compile_plan(parse_rule(_rule(key, written), SOURCE))
    message = str(excinfo.value)
    assert "\n" not in message and all(needle in message for needle in needles), message


def test_a_bad_form_under_a_comparison_is_a_usage_error_through_the_cli(tmp_path):
    rule = tmp_path / "r.yml"
    rule.write_text(_rule("F|gt", "0x10"))
    result = run_cli(["--rule", str(rule)], b'{"F": "17"}\n')
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert b"0x10 is not one" in result.stderr and result.stderr.count(b"\n") == 1


def test_outside_detection_a_rewritten_number_is_the_number_yaml_reads():
    """Only detection values compare as written: a correlation's bound is YAML's number, a plain int."""
    documents = parse_rules("title: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [r]\n"
                            "  timespan: 5m\n  condition: {gte: 010}\n", SOURCE)
    assert documents[0].condition == (("gte", 8),) and type(documents[0].condition[0][1]) is int
    written = yamlfile.load_yaml("a: 0x1F", written_numbers=True)["a"]
    assert isinstance(written, yamlfile.WrittenInt) and written == 31 and written.written == "0x1F"
    assert type(yamlfile.load_yaml("a: 0x1F")["a"]) is int  # field maps and placeholders: as before


def test_ids_and_names_are_kept_as_written(tmp_path):
    """A rule ``id: 0x10`` or ``name: 0755`` is that text, not YAML's 16 or 493: a correlation names
    it as written, and its alerts carry it."""
    (tmp_path / "r.yml").write_text("title: r\nid: 0x10\nname: 0755\nlogsource: {product: linux}\n"
                                    "detection:\n  sel: {F: x}\n  condition: sel\n---\n"
                                    "title: c\nid: 0o17\ncorrelation:\n  type: event_count\n  rules: [0755]\n"
                                    "  group-by: [H]\n  timespan: 5m\n  condition: {gte: 2}\n")
    [rule, correlation] = parse_rules((tmp_path / "r.yml").read_text(), SOURCE)
    assert (rule.id, rule.name, correlation.id, correlation.rules) == ("0x10", "0755", "0o17", ("0755",))
    result = run_cli(["--rule", str(tmp_path / "r.yml")],
                     b'{"F": "x", "H": "a", "@timestamp": "2026-01-01T00:00:00Z"}\n'
                     b'{"F": "x", "H": "a", "@timestamp": "2026-01-01T00:00:01Z"}\n')
    assert result.returncode == 0, result.stderr
    [alert] = alerts(result.stdout)
    assert alert["rule"]["id"] == alert["sigma"]["correlation"]["id"] == "0o17"


@pytest.mark.parametrize("written, number", [("1.0e+16", 1e16), ("1.5e+0", 1.5), ("-2.50E-3", -0.0025)])
def test_a_decimal_with_an_exponent_matches_its_number_too(written, number):
    """Only its text matched: an event's ``1e16`` missed ``B: 1.0e+16``, which pySigma reads as that number
    (found by the differential test against it)."""
    assert selects("B", written, {"B": number}) and selects("B", written, {"B": written})
    assert not selects("B", written, {"B": number * 2})
