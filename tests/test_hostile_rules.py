"""Hostile rule files never crash the loader: each is one line of RuleError, quickly, in bounded memory.

Each case below crashed (RecursionError, ValueError, a Hyperscan error), hung (minutes of
backtracking) or ate gigabytes (a billion-laughs alias) before the loader capped it.  The
fuzz test at the end feeds mutated and random rule texts through parse_rule + compile_plan
and allows no exception but RuleError.
"""

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from clitools import alerts, ndjson, run_cli
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io import rule_index as ri
from pipeshell_filter.sigma.collection import MAX_CHAIN
from pipeshell_filter.sigma import modifiers
from pipeshell_filter.sigma.modifiers import ModifierError, ModifierSpec
from pipeshell_filter.sigma.placeholders import PlaceholderError, load_placeholders
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.correlation import CorrelationSpec, RuleRef, Threshold
from pipeshell_filter.sigma.rule import BUILTIN_RULE, RuleError, load_rules, parse_rule, parse_rules

SOURCE = "hostile.yml"


def rule_text(detection_lines, extra=""):
    return "title: hostile\nlogsource: {product: windows}\n" + extra + "detection:\n" + \
        "".join(f"  {line}\n" for line in detection_lines)


def load(text: str):
    """parse_rule + compile_plan, as the CLI does for one rule file."""
    return compile_plan(parse_rule(text, SOURCE))


def assert_rule_error(text: str, *needles, seconds: float = 5.0):
    start = time.perf_counter()
    with pytest.raises(RuleError) as excinfo:
        load(text)
    message = str(excinfo.value)
    assert time.perf_counter() - start < seconds
    assert "\n" not in message and "\r" not in message, message
    assert SOURCE in message and len(message) < 400, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ---------------------------------------------------------------- conditions


def test_deeply_nested_parentheses():
    condition = "(" * 250 + "sel" + ")" * 250
    assert_rule_error(rule_text(["sel: {a: x}", f"condition: '{condition}'"]), "deeper than 100")


def test_thousands_of_nots():
    assert_rule_error(rule_text(["sel: {a: x}", "condition: " + "not " * 2000 + "sel"]), "deeper than 100")


def test_nesting_up_to_the_limit_loads_and_matches():
    condition = "not (" * 50 + "sel" + ")" * 50  # 100 levels: 50 parentheses, 50 nots
    plan = load(rule_text(["sel: {a: x}", f"condition: '{condition}'"]))
    assert str(plan.expression).count("not") == 50
    assert plan.term_mask(frozenset(["sel"])) == 1 and plan.term_mask(frozenset()) == 0


def test_a_condition_expanding_to_too_many_references():
    names = [f"s{i}: {{a: x}}" for i in range(1000)]
    assert_rule_error(rule_text(names + ["condition: " + " and ".join(["1 of them"] * 200)]),
                      "more than 100,000 selection references")


def test_aggregation_with_a_long_run_of_spaces_is_refused_quickly():
    # 'count(' + spaces + 'x' took quadratic time in the aggregation pattern
    assert_rule_error(rule_text(["sel: {a: x}", "condition: 'sel | count(" + " " * 1_000_000 + "x'"]),
                      "cannot parse aggregation", seconds=2.0)


# ---------------------------------------------------------------- values


def test_a_long_contains_value_loads_and_its_prefilter_literal_is_a_prefix():
    value = "".join(chr(ord("a") + i % 26) for i in range(8000))
    plan = load(rule_text([f"sel: {{Payload|contains: '{value}'}}", "condition: sel"]))
    literals = plan.prefilter_literals(pf.needle)
    assert literals and all(len(n) <= 256 and value.encode().find(n) >= 0 for n in literals)
    for engine in pf.available_engines():  # Hyperscan refuses a literal of 4,000 bytes
        scanner = pf.Prefilter(literals, engine)
        line = ('{"Payload": "x %s y"}\n' % value.upper()).encode()
        assert scanner.spans(line) == [(0, len(line) - 1)]
        ri.RuleIndex({"r": literals}, engine)
    for value_form in (value, "*" + value + "*?", value + "|" + value):
        load(rule_text([f"sel: {{Payload|contains: '{value_form}'}}", "condition: sel"]))


def test_a_long_contains_value_runs_end_to_end(tmp_path):
    value = "".join(chr(ord("a") + i % 26) for i in range(8000))
    (tmp_path / "long.yml").write_text(rule_text([f"sel: {{Payload|contains: '{value}'}}", "condition: sel"]))
    events = ndjson([{"EventID": 4103, "Payload": "x " + value.upper() + " y", "@timestamp": "2021-01-01T00:00:00Z"},
                     {"EventID": 4103, "Payload": value[:-1], "@timestamp": "2021-01-01T00:00:01Z"}])
    for engine in pf.available_engines():
        result = run_cli(["--rule", str(tmp_path / "long.yml"), "--prefilter-engine", engine], events)
        assert result.returncode == 0, result.stderr
        assert len(alerts(result.stdout)) == 1, result.stdout[:200]


def test_thousands_of_star_wildcards_are_refused_and_a_few_hundred_match():
    """``*a*a*a...``: past about a thousand stars RE2 falls back from its DFA to a search costing the
    pattern's size per character (3,000 took 5 s for a 100 KB field); 256 is the most, SigmaHQ's 13."""
    assert_rule_error(rule_text(["sel: {f: '" + "*a" * 3000 + "*'}", "condition: sel"]), "more than 256 * wildcards")
    assert_rule_error(rule_text(["sel: {f|contains: '" + "a*" * 257 + "'}", "condition: sel"]), "256")
    plan = load(rule_text(["sel: {f: '" + "*a" * 255 + "*'}", "condition: sel"]))
    view = FieldResolver(builtin_profiles()).view
    assert plan.match(view({"f": "ab" * 300})) and not plan.match(view({"f": "ab" * 200}))
    assert load(rule_text(["sel: {f: '" + "\\*" * 3000 + "'}", "condition: sel"]))  # escaped: literal stars


def test_a_regex_re2_cannot_run_names_file_selection_and_reason():
    message = assert_rule_error(rule_text(["sel: {CommandLine|re: '(a)\\1'}", "condition: sel"]),
                                "'sel'", "CommandLine", "bad pattern")
    assert "escape" in message
    assert_rule_error(rule_text(["sel: {CommandLine|re: '(?<=a)b'}", "condition: sel"]), "'sel'", "bad pattern")


def test_re_sub_modifiers_need_re():
    assert_rule_error(rule_text(["sel: {CommandLine|contains|i: x}", "condition: sel"]), "only applies to |re")
    load(rule_text(["sel: {CommandLine|re|i|m|s: '^x.y$'}", "condition: sel"]))


# ---------------------------------------------------------------- timeframe


@pytest.mark.parametrize("timeframe, needle", [
    ("9" * 5000 + "s", "longer than 3650 days"),
    ("800000d", "longer than 3650 days"),
    ("3651d", "longer than 3650 days"),
    ("9" * 5000, "not valid YAML"),  # an integer YAML cannot build
], ids=["5000-digits-s", "800000d", "3651d", "5000-digit-int"])
def test_timeframe_too_long(timeframe, needle):
    assert_rule_error(rule_text(["sel: {a: x}", "condition: sel | count() > 1", f"timeframe: {timeframe}"]), needle)


def test_timeframe_at_the_limit_loads():
    assert load(rule_text(["sel: {a: x}", "condition: sel | count() > 1", "timeframe: 3650d"])).timeframe_ns == \
        3650 * 86400 * 10**9


# ---------------------------------------------------------------- YAML


def billion_laughs(levels: int, where: str) -> str:
    lines = ["title: laughs", 'lol: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    top = f"*a{levels - 1}"
    lines.append("detection:")
    lines.append(f"  sel: {{Payload|contains: {top}}}" if where == "value" else "  sel: {Payload: x}")
    lines.append("  condition: sel")
    if where == "level":
        lines.append(f"level: {top}")
    if where == "timeframe":
        lines.append(f"timeframe: {top}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["value", "level", "timeframe"])
def test_billion_laughs(where):
    # 10^9 'lol's behind a 1 KB file: refused while walking the first 100,000
    assert_rule_error(billion_laughs(9, where), "YAML aliases", seconds=2.0)


def test_billion_laughs_in_a_multi_document_file_stops_at_the_file_budget():
    small = billion_laughs(5, "value").replace("title: laughs", "title: laughs {n}")  # 10^5 / 10 per document
    text = "---\n".join(small.replace("{n}", str(n)) for n in range(40))
    start = time.perf_counter()
    results = parse_rules(text, SOURCE)
    assert time.perf_counter() - start < 5.0
    assert all(isinstance(r, RuleError) for r in results)
    assert all("\n" not in str(r) for r in results)


def test_the_documents_after_the_file_budget_are_one_error_not_one_each(monkeypatch):
    """A file of 100,000 small rules passed the 1,000,000 values a file may hold at its 58,824th; in a --rule
    directory each of the 41,177 after it was a line on stderr.  The rest of the file is one error."""
    from pipeshell_filter.sigma import rule as rule_module

    monkeypatch.setattr(rule_module, "MAX_FILE_NODES", 100)
    text = "---\n".join(f"title: t{n}\ndetection: {{sel: {{EventID: {n}}}, condition: sel}}\n" for n in range(50))
    results = parse_rules(text, SOURCE)
    loaded = [r for r in results if not isinstance(r, RuleError)]
    errors = [str(r) for r in results if isinstance(r, RuleError)]
    assert [r.title for r in loaded] == [f"t{n}" for n in range(len(loaded))] and len(loaded) > 5
    over = len(loaded) + 1
    assert len(errors) == 2, errors[:3]
    assert errors[0].startswith(f"rule {SOURCE} (document {over}) has more than 100 per file values and keys")
    assert errors[1] == f"rule {SOURCE} (documents {over + 1}-50): skipped, the file is over its size limit " \
        "(see the error above)"


def test_aliases_within_bounds_are_fine():
    text = ("title: shared\nvalues: &v [one, two, three]\ndetection:\n  a: {Payload|contains: *v}\n"
            "  b: {CommandLine|contains: *v}\n  condition: a or b\n")
    assert len(load(text).selections) == 2


def _counted_tests(monkeypatch) -> list:
    """How many string tests the compiler makes (each costs an object, often an RE2 pattern)."""
    made = []
    original = modifiers._compile_parts

    def counted(*args):
        made.append(1)
        return original(*args)
    monkeypatch.setattr(modifiers, "_compile_parts", counted)
    return made


def _expand_rule(references: int, modifiers_written: str = "expand") -> str:
    return rule_text([f"sel: {{CommandLine|{modifiers_written}: [" + ", ".join(["'%hosts%'"] * references) + "]}",
                      "condition: sel"])


def test_placeholders_cannot_multiply_a_short_rule_past_the_rules_allowance_of_tests(monkeypatch):
    """Each value may expand to 10,000, but a list of 100 of them made a million tests (11 s, 280 MB),
    a thousand ten million, from a rule of a hundred lines: a rule's values together stand for at most
    ``MAX_TESTS`` tests, the values a rule file may hold."""
    monkeypatch.setattr(modifiers, "MAX_TESTS", 1_000)
    made = _counted_tests(monkeypatch)
    placeholders = {"hosts": tuple(f"host{i}" for i in range(100))}
    plan = compile_plan(parse_rule(_expand_rule(10), SOURCE), placeholders=placeholders)  # 1,000: at the limit
    assert len(made) == 1_000 and plan.selections
    made.clear()
    with pytest.raises(RuleError) as raised:
        compile_plan(parse_rule(_expand_rule(11), SOURCE), placeholders=placeholders)
    assert "more than 1,000 tests" in str(raised.value) and "\n" not in str(raised.value)
    assert len(made) <= 1_000


def test_windash_and_base64offset_under_a_placeholder_stop_at_the_allowance(monkeypatch):
    """``|expand|windash|base64offset|contains`` over a list of 100 commands of four dashes each:
    100 x 625 x 3 = 187,500 tests (15 s, 480 MB) from one value; the count stops at the allowance."""
    made = _counted_tests(monkeypatch)
    placeholders = {"hosts": tuple(f"cmd{i} -a -b -c -d" for i in range(100))}
    with pytest.raises(RuleError) as raised:
        compile_plan(parse_rule(_expand_rule(1, "expand|windash|base64offset|contains"), SOURCE),
                     placeholders=placeholders)
    assert f"more than {modifiers.MAX_TESTS:,} tests" in str(raised.value)
    assert len(made) <= modifiers.MAX_TESTS


def test_a_long_value_under_windash_and_base64offset_is_refused_before_its_variants_are_made(monkeypatch):
    """A 100 KB value with four dashes under ``|windash|base64offset|contains``: 625 variants, each in three
    forms, 250 MB of text (480 MB resident) from one value.  Its text is counted before it is made."""
    made = _counted_tests(monkeypatch)
    spelled = []
    original = modifiers._spell_dashes
    monkeypatch.setattr(modifiers, "_spell_dashes", lambda parts: spelled.append(1) or original(parts))
    value = "-a-b-c-d" + "x" * 100_000
    message = assert_rule_error(rule_text([f"sel: {{CommandLine|windash|base64offset|contains: '{value}'}}",
                                           "condition: sel"]), "more than 64 MiB of text")
    assert len(message) < 400 and not made and not spelled
    load(rule_text([f"sel: {{CommandLine|windash|base64offset|contains: '{value[:1000]}'}}", "condition: sel"]))


def test_a_placeholders_file_of_aliases_is_refused_before_it_is_built(tmp_path):
    """2,000 names aliasing one list of 100,000 (a file of 700 KB) took 23 s and 1.6 GB before any rule was
    read; aliases count each time they are used, as in a rule file."""
    path = tmp_path / "placeholders.yml"
    path.write_text("big: &big [" + ",".join(f"v{i}" for i in range(100_000)) + "]\n" +
                    "".join(f"k{j}: *big\n" for j in range(2000)))
    with pytest.raises(PlaceholderError) as raised:
        load_placeholders(str(path))
    assert "more than 1,000,000 values (YAML aliases count each time they are used)" in str(raised.value)
    path.write_text("long: &long '" + "x" * 1_000_000 + "'\n" + "".join(f"k{j}: *long\n" for j in range(20)))
    with pytest.raises(PlaceholderError) as raised:
        load_placeholders(str(path))
    assert "more than 16 MiB of text" in str(raised.value)


def test_expanding_a_long_placeholder_several_times_in_one_value_is_refused_before_it_is_made():
    """Ten values of 1.6 MB written ``%a%%a%%a%%a%``: 10,000 values of 6.4 MB, 64 GB, within the count of
    values one value may expand to.  Their text is worked out first."""
    placeholders = {"a": tuple(f"{n}" + "x" * 1_600_000 for n in range(10))}
    with pytest.raises(ModifierError) as raised:
        modifiers.compile_value("%a%%a%%a%%a%", ModifierSpec.parse(["expand"]), placeholders)
    assert "|expand gives more than 16 MiB of text" in str(raised.value)
    one = {"a": ("x" * 1_000_000,)}
    with pytest.raises(RuleError) as raised:  # one value is fine; eighty of them are the rule's 64 MiB
        compile_plan(parse_rule(rule_text(["sel: {CommandLine|expand: [" + ", ".join(["'%a%'"] * 80) + "]}",
                                           "condition: sel"]), SOURCE), placeholders=one)
    assert "more than 64 MiB of text" in str(raised.value)


def test_a_global_filter_is_compiled_once_for_all_the_rules_it_names(tmp_path, monkeypatch):
    """A filter of 20,000 users with ``rules: any`` over 200 rules was compiled, and its literal
    formula worked out, once per rule: 27 s and 580 MB at start.  Its selections are compiled once
    (and once more to check the filter alone), and a selection named only under ``not`` needs no
    literal formula."""
    from pipeshell_filter.cli import build_prefilter, load_plans
    from pipeshell_filter.sigma import literals
    users = 50
    for n in range(40):
        (tmp_path / f"r{n}.yml").write_text(rule_text([f"sel: {{Image|endswith: 'tool{n}.exe'}}", "condition: sel"])
                                            .replace("title: hostile", f"title: rule {n}"))
    (tmp_path / "filter.yml").write_text(
        "title: service users\nlogsource: {product: windows}\nfilter:\n  rules: any\n  selection:\n"
        "    User|contains: [" + ", ".join(f"'svc{i}'" for i in range(users)) + "]\n  condition: selection\n")
    made = _counted_tests(monkeypatch)
    formulas = []
    original = literals.of_selection
    monkeypatch.setattr(literals, "of_selection", lambda selection, usable: formulas.append(selection.name) or
                        original(selection, usable))
    plans = load_plans([str(tmp_path)], None)
    assert len(plans) == 40 and all(plan.rule.filters for plan in plans)
    assert len(made) == 40 + 2 * users, len(made)
    build_prefilter(list(plans), "python")
    assert formulas == ["sel"] * 40
    view = FieldResolver(builtin_profiles()).view
    third = next(plan for plan in plans if plan.rule.title == "rule 3")
    assert third.term_mask(third.match(view({"Image": "C:\\tool3.exe", "User": "alice"}))) == 1
    assert third.term_mask(third.match(view({"Image": "C:\\tool3.exe", "User": "svc7"}))) == 0


@pytest.mark.parametrize("text, needle", [
    ("title: t\nx: " + "1" * 5000 + "\ndetection: {sel: {a: 1}, condition: sel}\n", "not valid YAML"),
    ("title: t\nx: 2001-13-45\ndetection: {sel: {a: 1}, condition: sel}\n", "not valid YAML"),
    ("title: t\nx: " + "[" * 40 + "]" * 40 + "\ndetection: {sel: {a: 1}, condition: sel}\n", "deeper than"),
    ("title: t\ndetection: {sel: {a: " + "[" * 40 + "1" + "]" * 40 + "}, condition: sel}\n", "deeper than"),
], ids=["5000-digit-int", "month-13", "deep-list", "deep-value"])
def test_yaml_python_cannot_build_or_too_deep(text, needle):
    assert_rule_error(text, needle)


@pytest.mark.parametrize("tagged", ["!!timestamp tomorrow", "!!bool maybe", "!!int ''", "!!float _", "!!map [a]",
                                    "!!set [a]"])
def test_a_value_its_explicit_tag_cannot_read_is_one_line(tagged):
    """PyYAML's constructors meet such a value with an AttributeError, a KeyError, an IndexError or a TypeError,
    none of them a YAMLError: a traceback, from a rule, a field map, a placeholders file or an info.yml."""
    from pipeshell_filter.yamlfile import YamlProblem, load_yaml

    message = assert_rule_error(f"title: {tagged}\ndetection: {{sel: {{a: 1}}, condition: sel}}\n", "not valid YAML")
    assert message.endswith("a value its explicit tag (such as !!bool or !!timestamp) cannot read"), message
    with pytest.raises(YamlProblem):
        load_yaml(f"x: {tagged}\n")


def test_dev_zero_is_one_line(tmp_path):
    assert os.path.exists("/dev/zero")
    [error] = load_rules("/dev/zero")
    assert isinstance(error, RuleError) and "\n" not in str(error) and "larger than 16 MiB" in str(error)
    result = run_cli(["--rule", "/dev/zero"])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[:300]
    assert b"Traceback" not in result.stderr


def test_a_hostile_rule_in_a_directory_is_skipped_in_one_line(tmp_path):
    (tmp_path / "good.yml").write_text(rule_text(["sel: {Payload|contains: x}", "condition: sel"]))
    (tmp_path / "nots.yml").write_text(rule_text(["sel: {a: x}", "condition: " + "not " * 2000 + "sel"]))
    (tmp_path / "laughs.yml").write_text(billion_laughs(9, "value"))
    result = run_cli(["--rule", str(tmp_path)], b"")
    assert result.returncode == 0, result.stderr
    skipped = result.stderr.decode().splitlines()
    assert len([line for line in skipped if "skipped" in line]) == 2, skipped
    assert "Traceback" not in result.stderr.decode()


# ---------------------------------------------------------------- fuzz

with open(BUILTIN_RULE, encoding="utf-8") as _handle:
    _BUILTIN_TEXT = _handle.read()

# Mostly well-formed pieces, so that many generated rules load and reach the matchers.
_MODIFIER = st.sampled_from(["contains", "startswith", "endswith", "re", "cased", "all", "exists", "i", "m", "s",
                             "ignorecase", "dotall", "windash", "", "contains"])
_WORD = st.sampled_from(["sel", "filter", "SERVER_x", "CLIENT_y", "them", "1", "all", "of", "and", "or", "not",
                         "AND", "(", ")", "|", "count()", ">", "2", "by", "x*", "*", "_u"])
_SCALAR = st.one_of(
    st.text(st.sampled_from("ab*?\\()[]{}+.^$|'\"ß İ\n:#&!-"), max_size=20),
    st.integers(-10**30, 10**30), st.booleans(), st.none(), st.floats(allow_nan=True),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "*", "(", "\\", "a*", "ab?"]), st.integers(0, 9000)),
    st.sampled_from(["(a)\\1", "(?=x)", "(a+)+$", "[", "\\Z", "(?i)x", "800000d", "9" * 5000 + "s", "5m", "0s"]))


def _quoted(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''").replace("\n", " ") + "'"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _rare(draw, unusual, usual):
    """Mostly ``usual``: hypothesis draws the bounds of a range often, so the rare branch sits inside it."""
    return draw(unusual) if draw(st.integers(0, 9)) == 4 else draw(usual)


@st.composite
def _conditions(draw, names, depth=0):
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        return _rare(draw, st.sampled_from(["1 of sel*", "all of them", "undefined", "not " + names[0]]),
                     st.sampled_from(names))
    op = draw(st.sampled_from([" and ", " or ", " AND "]))
    parts = draw(st.lists(_conditions(names, depth + 1), min_size=1, max_size=3))
    text = op.join(parts)
    return draw(st.sampled_from([text, text, f"({text})", f"not ({text})"]))


@st.composite
def _generated_rules(draw):
    logsource = _rare(draw, st.sampled_from(["{}", "[1]", "x", "{category: [a, [b]]}"]),
                      st.just("{product: windows}"))
    lines = ["title: fuzz", f"logsource: {logsource}", "detection:"]
    names = draw(st.lists(st.sampled_from(["sel", "filter", "sel2", "_u"]), min_size=1, max_size=3, unique=True))
    for name in names:
        lines.append(f"  {name}:")
        for field in draw(st.lists(st.sampled_from(["a", "Payload", "CommandLine"]), min_size=1, max_size=3,
                                   unique=True)):
            field = _rare(draw, st.sampled_from(["", "a|", "|"]), st.just(field))
            modifiers = "".join("|" + m for m in draw(st.lists(_MODIFIER, max_size=2)))
            values = _rare(draw, st.lists(_SCALAR, max_size=4), st.lists(_SCALAR, min_size=1, max_size=4))
            shown = _quoted(values[0]) if len(values) == 1 else "[" + ", ".join(map(_quoted, values)) + "]"
            lines.append(f"    '{field}{modifiers}': {shown}")
    condition = _rare(draw, st.lists(_WORD, max_size=12).map(" ".join), _conditions(names))
    condition = _rare(draw, st.just("(" * 120 + condition + ")" * 120), st.just(condition))
    aggregation = _rare(draw, st.sampled_from([" | count() > 1", " | count(x) by y >= 2", " | max() < 3",
                                               " | sum(q) = 1"]), st.just(""))
    lines.append(f"  condition: {_quoted(condition + aggregation)}")
    timeframe = _rare(draw, _SCALAR, st.sampled_from([None, None, "5m", "3650d"]))
    if timeframe is not None:
        lines.append(f"  timeframe: {_quoted(timeframe)}")
    return "\n".join(lines) + "\n"


@st.composite
def _mutated_rules(draw):
    """The built-in rule with a few bytes replaced, inserted or deleted."""
    text = _BUILTIN_TEXT
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(["*", "(", ")", "|re", "|contains", " not", "&a ", "*a", "[", "]", "{", "\n",
                                      "  ", ":", "'", "!!int ", "? ", "---\n", "\t", "9" * 5000, "|i", ""]))
        cut = draw(st.integers(0, 3))
        text = text[:at] + piece + text[at + cut:]
    return text


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
@given(st.one_of(_generated_rules(), _mutated_rules(), st.text(max_size=200)))
def test_fuzzed_rules_raise_only_rule_errors(text):
    try:
        load(text)
    except RuleError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000, str(error)[:300]


@pytest.mark.parametrize("text, needle", [
    ("title: a\nid: a\nname: a\nlogsource: {product: windows}\ndetection: {sel: {EventID: 1}, condition: sel}\n"
     "---\ntitle: c\ncorrelation: {type: event_count, rules: [a], timespan: 1m, group-by: [User], condition: {lt: "
     + "1" + "0" * 400 + "}}\n", "correlation condition lt: 100000000"),
    ("title: l\nlogsource: {product: windows}\ndetection:\n  sel: {EventID: 1}\n  condition: sel | count() by User < 1"
     + "0" * 400 + "\ntimeframe: 1m\n", "aggregation threshold 10000"),
])
def test_a_threshold_past_a_double_is_refused_in_one_line(tmp_path, text, needle):
    """It loaded, then crashed at the first alert (v2) or wrote "threshold": Infinity, not JSON (legacy)."""
    path = tmp_path / "huge.yml"
    path.write_text(text)
    result = run_cli(["--rule", str(path)], b'{"EventID": 1, "User": "u", "@timestamp": "2024-01-01T00:00:00Z"}\n')
    err = result.stderr.decode()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and needle in err and "beyond 1e300" in err, err


def test_a_malformed_group_in_an_aggregation_is_refused_in_one_line(tmp_path):
    """``by User>>2`` loaded, grouping by a field named ``User>`` that no event has: the rule never fired."""
    path = tmp_path / "malformed.yml"
    path.write_text("title: l\nlogsource: {product: windows}\ndetection:\n  sel: {EventID: 1}\n"
                    "  condition: sel | count() by User>>2\ntimeframe: 1m\n")
    result = run_cli(["--rule", str(path)], b'{"EventID": 1, "User": "u", "@timestamp": "2024-01-01T00:00:00Z"}\n')
    err = result.stderr.decode()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "cannot parse aggregation" in err, err


COUNT_RULE = """title: three logon failures
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625}
  condition: sel | count() > 2
timeframe: 1d
"""


def _failures():
    return ndjson([{"EventID": 4625, "Channel": "Security", "Computer": "dc01",
                    "@timestamp": f"2026-11-01T10:00:0{i}Z"} for i in range(4)])


def test_a_rule_or_input_tree_1200_directories_deep_is_read_not_a_traceback(tmp_path):
    """os.walk recursed: a tree 1,200 deep gave a RecursionError traceback, exit 1."""
    deep = leaf = tmp_path / "deep"
    deep.mkdir()
    for _ in range(1200):  # one by one: makedirs recurses too
        leaf = leaf / "a"
        leaf.mkdir()
    (leaf / "count.yml").write_text(COUNT_RULE)
    (leaf / "events.ndjson").write_bytes(_failures())
    try:
        result = run_cli(["--rule", str(deep), "--input", str(deep)])
    finally:  # removed here, bottom up: pytest's own clean-up (shutil.rmtree) recurses too
        for name in ("count.yml", "events.ndjson"):
            (leaf / name).unlink()
        while leaf != tmp_path:
            leaf.rmdir()
            leaf = leaf.parent
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-300:]
    assert len(alerts(result.stdout)) == 1


def test_a_linked_directory_of_a_rule_tree_is_read_as_an_input_tree_is(tmp_path):
    """A symbolic link to a directory in a --rule tree was skipped in silence (--input follows them)."""
    real = tmp_path / "shared-rules"
    real.mkdir()
    (real / "count.yml").write_text(COUNT_RULE)
    tree = tmp_path / "rules"
    tree.mkdir()
    (tree / "linked").symlink_to(real)
    (tree / "loop").symlink_to(tree)  # a link back up: read once
    result = run_cli(["--rule", str(tree)], _failures())
    assert result.returncode == 0, result.stderr
    assert len(alerts(result.stdout)) == 1


def test_a_rule_file_reached_by_a_hard_link_too_is_read_once(tmp_path):
    """A rule named by a hard link, with the --rule directory holding it, was read twice: the second its own
    repeated id, exit 2 (a named file must load), where a symbolic link was read once."""
    tree = tmp_path / "rules"
    tree.mkdir()
    (tree / "count.yml").write_text(COUNT_RULE)
    os.link(tree / "count.yml", tmp_path / "linked.yml")
    result = run_cli(["--rule", str(tree), "--rule", str(tmp_path / "linked.yml")], _failures())
    assert result.returncode == 0 and b"skipped" not in result.stderr, result.stderr
    assert len(alerts(result.stdout)) == 1


def test_a_link_to_itself_in_a_rule_tree_is_no_reason_to_refuse_the_tree(tmp_path):
    """A symbolic link to itself (ELOOP) aborted the whole --rule directory, exit 2, whatever its name: one not
    named as a rule is no rule and is passed over, one named as a rule is skipped in one line like any bad rule."""
    tree = tmp_path / "rules"
    tree.mkdir()
    (tree / "count.yml").write_text(COUNT_RULE)
    (tree / "notes").symlink_to("notes")
    quiet = run_cli(["--rule", str(tree)], _failures())
    assert quiet.returncode == 0 and quiet.stderr.count(b"skipped") == 0, quiet.stderr
    assert len(alerts(quiet.stdout)) == 1
    (tree / "self.yml").symlink_to("self.yml")
    skipped = run_cli(["--rule", str(tree)], _failures())
    assert skipped.returncode == 0 and b"Traceback" not in skipped.stderr, skipped.stderr
    assert [line for line in skipped.stderr.splitlines() if b"skipped" in line] == \
        [f"pipeshell-filter: skipped: rule {tree / 'self.yml'}: not a regular file".encode()]
    assert len(alerts(skipped.stdout)) == 1


def test_a_directory_vanishing_during_the_walk_holds_no_rule(tmp_path, monkeypatch):
    """A subdirectory removed between being listed and being read (a rule set updated under the filter)
    made the whole walk an error; it holds no file now, as if it had gone before the walk."""
    from pipeshell_filter import dirwalk

    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "a.yml").write_text(COUNT_RULE)
    (tmp_path / "kept.yml").write_text(COUNT_RULE)
    listed = os.scandir

    def scandir(path):
        if os.path.basename(path) == "gone":
            raise FileNotFoundError(2, "No such file or directory", path)
        return listed(path)

    monkeypatch.setattr(dirwalk.os, "scandir", scandir)
    assert dirwalk.files_under(str(tmp_path), (".yml",)) == [str(tmp_path / "kept.yml")]
    monkeypatch.setattr(dirwalk.os, "scandir", listed)
    with pytest.raises(FileNotFoundError):  # the top itself gone: the caller says so
        dirwalk.files_under(str(tmp_path / "missing"), (".yml",))


def chain_of(depth: int, reversed_order: bool = False) -> str:
    """A failed-logon rule and ``depth`` correlations, each of the one before (in either file order)."""
    documents = [f"title: level {level}\nname: c{level}\ncorrelation: {{type: event_count, rules: "
                 f"[c{level - 1}], group-by: [User], timespan: 5m, condition: {{gte: 1}}}}\n"
                 for level in range(1, depth + 1)]
    return "---\n".join(["title: failed logon\nname: c0\nlogsource: {product: windows}\n"
                         "detection: {sel: {EventID: 4625}, condition: sel}\n"] +
                        (documents[::-1] if reversed_order else documents))


def test_a_chain_of_100_correlations_takes_each_event_in_bounded_time(tmp_path):
    """Each inner correlation asked whether its chain had heard an event, walking the chain, for
    each outer one on every detection: with 300 correlations each chained to the one before, one
    event took 13 s (cubic in the depth) and five no longer fit a minute.  Chains stop at 100 deep."""
    path = tmp_path / "chain.yml"
    path.write_text(chain_of(MAX_CHAIN))
    events = ndjson([{"EventID": 4625, "User": "bob", "@timestamp": f"2026-11-01T10:00:0{i}Z"} for i in range(5)])
    start = time.monotonic()
    result = run_cli(["--rule", str(path), "--lateness", "0"], events, timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode == 0, result.stderr[-600:]
    assert [alert["rule"]["name"] for alert in alerts(result.stdout)] == [f"level {MAX_CHAIN}"] * 5


@pytest.mark.parametrize("reversed_order", [False, True])
def test_a_chain_deeper_than_100_correlations_is_a_rule_error(tmp_path, reversed_order):
    """In either order of the file (the outermost first: read by recursion, which a chain of
    thousands would exhaust)."""
    path = tmp_path / "chain.yml"
    path.write_text(chain_of(3000 if reversed_order else MAX_CHAIN + 1, reversed_order))
    result = run_cli(["--rule", str(path)], b"")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr[-600:]
    assert result.stderr.endswith(f"correlations of correlations more than {MAX_CHAIN} deep\n".encode())


def _correlation(group_by: list, rules: list = ("failed",)) -> str:
    return ("title: wide\ncorrelation:\n  type: event_count\n  rules: [" + ", ".join(rules) + "]\n"
            "  group-by: [" + ", ".join(group_by) + "]\n  timespan: 1h\n  condition: {gte: 2}\n")


def test_a_correlation_grouping_by_thousands_of_fields_is_a_rule_error():
    """Each group-by field is a key of every Detection of its rules, kept with each event of its windows:
    20,000 of them took 19 ms and 175 KB an event (2,000 events: 38 s, 358 MB; the state cap of 100,000
    events, 17 GB).  A correlation groups by at most 32 fields."""
    [loaded] = parse_rules(_correlation([f"f{i}" for i in range(32)]), SOURCE)
    assert len(loaded.group_by) == 32
    [error] = parse_rules(_correlation([f"f{i}" for i in range(20_000)]), SOURCE)
    assert isinstance(error, RuleError) and "'group-by' names 20,000 fields; at most 32" in str(error)
    assert "\n" not in str(error)


def test_a_correlation_naming_a_rule_twice_among_tens_of_thousands_is_found_in_one_pass():
    """The check that no name comes twice compared each name with all before it: 30,000 names took 17 s,
    the 90,000 a rule may hold some two minutes."""
    names = [f"r{i}" for i in range(90_000)]
    [error] = parse_rules(_correlation([], names + ["r7"]), SOURCE)
    assert isinstance(error, RuleError) and "'rules' names 'r7' twice" in str(error)
    [loaded] = parse_rules(_correlation([], names), SOURCE)
    assert len(loaded.rules) == 90_000


class _CountedPairs(tuple):
    """An alias's (rule, field) pairs that count how often they are read through."""

    reads = 0

    def __iter__(self):
        type(self).reads += 1
        return super().__iter__()


def test_an_alias_of_thousands_of_rules_is_read_once_not_for_each_detection():
    """``field_for`` (each detection, each group-by name) made the alias's pairs into a dict every time:
    an alias over 20,000 rules took 1.4 ms a detection, and 29 s of the start-up that named them."""
    pairs = _CountedPairs((f"rule{i}", f"User{i}") for i in range(20_000))
    spec = CorrelationSpec("c", "c", "event_count", (RuleRef("rule1", None, "rule1"),), 60, Threshold((("gte", 2),)),
                           ("user",), aliases=(("user", pairs),))
    before = _CountedPairs.reads
    assert [spec.field_for("user", f"rule{i}") for i in (1, 19_999, 7)] == ["User1", "User19999", "User7"]
    assert spec.field_for("user", "other") == "user" and spec.field_for("host", "rule1") == "host"
    assert [spec.needed_fields(f"rule{i}") for i in range(1000)][5] == ("User5",)
    assert _CountedPairs.reads == before


@pytest.mark.parametrize("title, said", [("[a, b]", "'title' must be text, not list"), ("", "missing 'title'"),
                                         ("{a: 1}", "'title' must be text, not dict"), ("'  '", "missing 'title'")])
def test_a_title_that_is_no_text_is_named_as_such(title, said):
    """A list given as the title was called missing."""
    with pytest.raises(RuleError) as raised:
        load(f"title: {title}\nlogsource: {{product: windows}}\ndetection: {{sel: {{EventID: 1}}, condition: sel}}\n")
    assert str(raised.value).endswith(said), str(raised.value)


@pytest.mark.parametrize("rule_id, said", [("[a, b]", "list"), ("{5f5f5f5f-0000-4000-8000-00000000000a}", "dict"),
                                           ("yes", "bool"), ("true", "bool"), ("!!binary aGVsbG8=", "bytes"),
                                           ("!!set {a}", "set")])
def test_an_id_that_is_no_text_is_refused_not_shown_as_python(rule_id, said):
    """An id written as a YAML list, a mapping (a UUID in braces, unquoted) or a boolean became its Python
    text, ``{'5f5f...': None}`` or ``True``, as the rule's id in every alert."""
    with pytest.raises(RuleError) as raised:
        load(f"title: t\nid: {rule_id}\nlogsource: {{product: windows}}\n"
             "detection: {sel: {EventID: 1}, condition: sel}\n")
    assert str(raised.value).endswith(f"'id' must be text, not {said} (quote it)"), str(raised.value)


def test_an_id_written_as_a_number_or_date_is_its_text():
    for written in ("123", "0x1F", "1.0", "2024-01-01"):
        assert parse_rule(f"title: t\nid: {written}\nlogsource: {{product: windows}}\n"
                          "detection: {sel: {EventID: 1}, condition: sel}\n", SOURCE).id == written


@pytest.mark.parametrize("level", ["[high]", "{a: 1}"])
def test_a_level_that_is_no_text_is_left_out_not_shown_as_python(level):
    """A list or mapping as the level was the rule's level as Python printed it (``['high']``) in its alerts."""
    rule = parse_rule(f"title: t\nlevel: {level}\nlogsource: {{product: windows}}\n"
                      "detection: {sel: {EventID: 1}, condition: sel}\n", SOURCE)
    assert rule.level is None
    assert parse_rule("title: t\nlevel: ' High '\nlogsource: {product: windows}\n"
                      "detection: {sel: {EventID: 1}, condition: sel}\n", SOURCE).level == " High "


@pytest.mark.parametrize("key, read", [("~", "None"), ("yes", "True"), ("0x1F", "31"), ("1.5", "1.5"),
                                       ("2024-01-01", "2024-01-01")])
def test_a_field_name_yaml_reads_as_no_text_is_refused(key, read):
    """``~: x`` in a selection compared a field called None (pySigma reads it as keywords), ``yes: x`` one called
    True, ``0x1F: x`` one called 31: Python's text of what YAML read, as selection names are refused."""
    with pytest.raises(RuleError) as raised:
        load(f"title: t\nlogsource: {{product: windows}}\ndetection:\n  sel: {{{key}: x}}\n  condition: sel\n")
    assert "field name" in str(raised.value) and "quote it" in str(raised.value), str(raised.value)
    assert load(f"title: t\nlogsource: {{product: windows}}\ndetection:\n  sel: {{'{key}': x}}\n  condition: sel\n")
