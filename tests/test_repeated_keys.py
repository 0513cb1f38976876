"""A key an object gives twice (EVTX's ``<Data Name="Group">`` repeated, which evtx and evtx_dump write
as the key repeated) holds all its values, as a JSON list would: a selection matches when one of them
does, ``|neq`` and ``not`` when none does.  ujson keeps the last value alone; ``stream.every_value``
parses such a line again, and its quick test for whether a line has a key twice is held here to a
parse that keeps every member, on texts written with blanks and escapes."""

import fractions
import ipaddress
import json
import re

import ujson
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from clitools import records, run_cli
from evtxwriter import write_evtx
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.io.stream import every_value
from pipeshell_filter.sigma.compile import compile_selection

RESOLVER = FieldResolver(builtin_profiles())
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- the parse


def _reference_members(text: str):
    """Every member of every object, a key given more than once holding the list of its values."""
    def merge(pairs):
        values = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        return {key: found[0] if len(found) == 1 else found for key, found in values.items()}
    return json.loads(text, object_pairs_hook=merge)


_KEYS = st.sampled_from(["a", "b", "A", 'q"', "\u00e9", "x y"])
_SCALARS = st.one_of(st.text('ab"\\/\u00e9 ', max_size=4), st.integers(-5, 5), st.booleans(), st.none())


def _written(value, draw) -> str:
    """``value`` as JSON text, with blanks around its parts and a quote now and then as ``\\u0022``."""
    blank = st.sampled_from(["", " ", "\n", "\t "])
    if isinstance(value, list) and value and value[0] == "object":
        members = [draw(blank) + _written(key, draw) + draw(blank) + ":" + _written(item, draw)
                   for key, item in value[1]]
        return "{" + ",".join(members) + draw(blank) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_written(item, draw) for item in value) + "]"
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if isinstance(value, str) and draw(st.booleans()):
        text = '"' + text[1:-1].replace('\\"', "\\u0022") + '"'
    return draw(blank) + text + draw(blank)


_TREES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.lists(st.tuples(_KEYS, inner), max_size=4).map(lambda pairs: ["object", pairs])), max_leaves=12)


@FAST
@given(st.data(), st.lists(st.tuples(_KEYS, _TREES), min_size=1, max_size=5),
       st.sampled_from(["EventData", "UserData"]),
       st.sampled_from(["", ',"RenderingInfo":{"a":1,"a":2}', ',"Other":"x\\":y"']))
def test_every_value_keeps_each_member_a_key_gives_twice(data, pairs, where, after):
    """An XML-derived event's EventData or UserData (where EVTX repeats a Data name), written with blanks
    and escapes, before or after other members: ``_may_repeat``'s scan never misses a key given twice."""
    inner = _written(["object", pairs], data.draw)
    text = '{"Event":{"System":{"EventID":1,"Channel":"Security"},"' + where + '":' + inner + after + "}}"
    assert every_value(text.encode(), ujson.loads(text)) == _reference_members(text)


def test_a_line_without_a_key_twice_is_the_parsed_event_itself():
    """Objects within EventData are counted (no second parse); a string holding ``":`` is parsed again, to
    the same event."""
    text = b'{"Event":{"System":{"a":1},"EventData":{"a": "\\u0022x\\"", "b": {"a": 1}, "c": [{"a": 2}]}}}'
    event = ujson.loads(text)
    assert every_value(text, event) is event
    text = b'{"Event":{"System":{"a":1},"EventData":{"CommandLine":"x \\":y", "b": "z"}}}'
    event = ujson.loads(text)
    again = every_value(text, event)
    assert again == event and again is not event


def test_a_map_writers_shape_is_not_parsed_again():
    """Winlogbeat, NXLog, Fluent Bit write a map: a key twice is no EVTX Data name and costs no second parse
    (a JSON parser's last value, as any reader of such a line gets)."""
    text = b'{"winlog":{"event_data":{"Group":"Administrators","Group":"Users"}}}'
    event = ujson.loads(text)
    assert every_value(text, event) is event


# ---------------------------------------------------------------- matching against a reference


_TEXTS = st.sampled_from(["Administrators", "Users", "10.1.2.3", "192.168.0.7", "12", "7.5", "-3", "adminx",
                          "ADMINISTRATORS", "", " 10.1.2.3 "])
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _address(text):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


# modifiers, rule value, and whether one field text meets it (written here from the standard library)
_TESTS = [
    ("", "administrators", lambda v, t: t.casefold() == v.casefold()),
    ("|contains", "admin", lambda v, t: v.casefold() in t.casefold()),
    ("|startswith", "user", lambda v, t: t.casefold().startswith(v.casefold())),
    ("|re", "^[0-9]+$", lambda v, t: re.search(v, t) is not None),
    ("|cidr", "10.0.0.0/8", lambda v, t: _address(t) is not None and _address(t) in ipaddress.ip_network(v)),
    ("|gt", 10, lambda v, t: bool(_NUMBER.fullmatch(t)) and fractions.Fraction(t.strip()) > v),
    ("|lte", 7.5, lambda v, t: bool(_NUMBER.fullmatch(t)) and fractions.Fraction(t.strip()) <= fractions.Fraction(
        str(v))),
]


@FAST
@given(st.lists(_TEXTS, min_size=2, max_size=4), st.sampled_from(range(len(_TESTS))),
       st.sampled_from(["plain", "neq", "not"]), st.sampled_from(["EventData", "UserData"]))
def test_a_field_given_several_times_matches_as_its_list_would(texts, which, how, where):
    """Each modifier on a key given 2-4 times in EVTX's EventData (or a UserData child): any value
    for the selection, none for |neq and for ``not``; and the same verdict as the values in a list."""
    modifiers, value, meets = _TESTS[which]
    if how == "neq" and modifiers in ("|gt", "|lte"):  # no |neq for a comparison: its not is the other one
        how = "not"
    members = ",".join('"Group":' + json.dumps(text) for text in texts)
    body = '{"ServiceName":"svc",' + members + "}"
    if where == "UserData":
        body = '{"EventXML":' + body + "}"
    line = '{"Event":{"System":{"EventID":4732,"Channel":"Security"},"' + where + '":' + body + "}}"
    event = every_value(line.encode(), ujson.loads(line))
    key = "Group" + modifiers + ("|neq" if how == "neq" else "")
    selection = compile_selection("sel", {key: value}, "/rules/r.yml")
    verdict = selection.matches(RESOLVER.view(event))
    if how == "not":
        verdict = not verdict
    expected = any(meets(value, text) for text in texts)
    assert verdict == (expected if how == "plain" else not expected)
    listed = json.loads(line.replace(members, '"Group":' + json.dumps(texts)))
    assert selection.matches(RESOLVER.view(listed)) == selection.matches(RESOLVER.view(event))


# ---------------------------------------------------------------- through the filter


_RULE = """title: group member
id: 5b8f3c0e-3f0a-4c8e-9d7e-1a2b3c4d5e6f
logsource: {product: windows}
detection:
    sel:
        %s
    condition: %s
"""


def test_a_data_name_given_twice_matches_on_each_value(tmp_path):
    """An EVTX record read with ``--input``: ``Group: Administrators`` matched only when Administrators
    was the last of the values."""
    path = tmp_path / "groups.evtx"
    write_evtx(str(path), [{"provider": "Microsoft-Windows-Security-Auditing", "event_id": 4732,
                            "time": "2026-11-01T10:00:00Z", "record_id": 1, "channel": "Security",
                            "computer": "dc01", "level": 0,
                            "data": [("Group", "Administrators"), ("Group", "Users"), ("Member", "x"),
                                     ("Group", "Guests")]}])
    piped = run_cli(["--emit", "all", "--input", str(path)]).stdout
    assert piped.count(b'"Group":') == 3
    cases = [("Group: Administrators", "sel", True), ("Group|contains: user", "sel", True),
             ("Group|re: '^Gue'", "sel", True), ("Group: Nobody", "sel", False),
             ("Group|neq: Administrators", "sel", False), ("Group|neq: Nobody", "sel", True),
             ("Group: Users", "not sel", False), ("'Group|contains|all': [admin, guest]", "sel", True)]
    for selection, condition, expected in cases:
        rule = tmp_path / "rule.yml"
        rule.write_text(_RULE % (selection, condition))
        assert yaml.safe_load(rule.read_text())["detection"]["sel"]
        result = run_cli(["--rule", str(rule), "--emit", "matches", "--input", str(path)])
        assert result.returncode == 0, result.stderr
        found = [r for r in records(result.stdout) if "sigma" in r]
        assert bool(found) == expected, (selection, condition)
    # Piped in, the same lines are matched on the last value (not looked for in NDJSON: see Filter)
    rule.write_text(_RULE % ("Group: Guests", "sel"))
    assert [r for r in records(run_cli(["--rule", str(rule), "--emit", "matches"], piped).stdout) if "sigma" in r]
    rule.write_text(_RULE % ("Group: Administrators", "sel"))
    assert not [r for r in records(run_cli(["--rule", str(rule), "--emit", "matches"], piped).stdout) if "sigma" in r]


_GROUPED = """title: member added
id: 11111111-0000-4000-8000-000000000001
name: member_added
logsource: {product: windows, service: security}
detection:
  sel:
    EventID: 4732
  condition: sel
---
title: twice to a group
id: 11111111-0000-4000-8000-000000000002
correlation:
  type: %s
  rules: [member_added]
  group-by: [Group]
  timespan: 5m
  condition: %s
"""


def test_a_data_name_given_twice_groups_a_correlation_by_its_first_value(tmp_path):
    """The documented choice: a key given twice is a list of its values for correlations too, so group-by
    takes the first (a record of Administrators then Users is in the Administrators group, though
    ``Group: Users`` selects it) and value_count counts each value."""
    path = tmp_path / "groups.evtx"

    def record(number, groups):
        return {"provider": "Microsoft-Windows-Security-Auditing", "event_id": 4732, "record_id": number,
                "time": f"2026-11-01T10:00:0{number}Z", "channel": "Security", "computer": "dc01", "level": 0,
                "data": [("Group", group) for group in groups] + [("Member", "x")]}
    write_evtx(str(path), [record(1, ["Administrators", "Users"]), record(2, ["Users", "Administrators"]),
                           record(3, ["Administrators", "Guests"])])
    rule = tmp_path / "rule.yml"
    rule.write_text(_GROUPED % ("event_count", "{gte: 2}"))
    result = run_cli(["--rule", str(rule), "--input", str(path)])
    assert result.returncode == 0, result.stderr
    found = [r["sigma"]["correlation"] for r in records(result.stdout) if "correlation" in r.get("sigma", {})]
    assert [(c["group"], c["value"]) for c in found] == [({"Group": "Administrators"}, 2)]
    rule.write_text(_GROUPED % ("value_count", "{gte: 2, field: Group}"))
    found = [r["sigma"]["correlation"] for r in records(run_cli(["--rule", str(rule), "--input", str(path)]).stdout)
             if "correlation" in r.get("sigma", {})]
    assert [(c["group"], c["values"]) for c in found] == [  # each event alone is 2 values (an alert consumes them)
        ({"Group": "Administrators"}, ["Administrators", "Users"]), ({"Group": "Users"}, ["Administrators", "Users"]),
        ({"Group": "Administrators"}, ["Administrators", "Guests"])]
