"""Sigma condition language: tokenizer, parser, precedence, `x of`, aggregation, evaluation."""

import itertools
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from pipeshell_filter.sigma.compile import _condition_test, _selection_test
from pipeshell_filter.sigma.condition import (
    Aggregation,
    And,
    ConditionError,
    Not,
    OfPattern,
    Or,
    Ref,
    _tokenize,
    conjuncts,
    evaluate,
    expand,
    is_negative,
    parse_aggregation,
    parse_condition,
    references,
    top_level_terms,
)


def expr(text):
    return parse_condition(text).expression


def expanded(text, names):
    return expand(expr(text), names)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_splits_parentheses_without_spaces():
    assert _tokenize("not(a)and(b)") == ["not", "(", "a", ")", "and", "(", "b", ")"]


def test_tokenizer_ignores_surrounding_and_inner_whitespace_including_newlines():
    assert _tokenize("  a \n\tand   b  \n") == ["a", "and", "b"]


def test_tokenizer_empty_and_blank():
    assert _tokenize("") == []
    assert _tokenize("   \n ") == []


def test_tokenizer_keeps_glob_characters_in_one_token():
    assert _tokenize("1 of SERVER_* or sel?x") == ["1", "of", "SERVER_*", "or", "sel?x"]


# ---------------------------------------------------------------- keywords as whole words


@pytest.mark.parametrize("word", ["and", "AND", "And", "aNd"])
def test_and_in_any_case(word):
    assert expr(f"a {word} b") == And((Ref("a"), Ref("b")))


@pytest.mark.parametrize("word", ["or", "OR", "Or", "oR"])
def test_or_in_any_case(word):
    assert expr(f"a {word} b") == Or((Ref("a"), Ref("b")))


@pytest.mark.parametrize("word", ["not", "NOT", "Not", "nOT"])
def test_not_in_any_case(word):
    assert expr(f"{word} a") == Not(Ref("a"))


@pytest.mark.parametrize("quant, of, them", [("1", "of", "them"), ("ALL", "OF", "THEM"), ("All", "Of", "Them")])
def test_x_of_them_in_any_case(quant, of, them):
    assert expr(f"{quant} {of} {them}") == OfPattern(quant.lower(), "them")


@pytest.mark.parametrize("text", ["any of sel*", "ANY OF sel*", "Any of sel*"])
def test_any_of_is_one_of_as_pysigma_reads_it(text):
    assert expr(text) == OfPattern("1", "sel*")
    assert expanded(text, ["sel1", "sel2", "filter"]) == Or((Ref("sel1"), Ref("sel2")))


@pytest.mark.parametrize(
    "name",
    ["android", "notes", "oracle", "order", "andy", "nothing", "often", "allow", "theme", "ORacle", "NOTES", "Android"],
)
def test_names_starting_with_a_keyword_are_plain_references(name):
    assert expr(name) == Ref(name)
    assert expr(f"{name} and x") == And((Ref(name), Ref("x")))
    assert expr(f"not {name}") == Not(Ref(name))


def test_android_and_notes_are_selections_not_operators():
    assert expr("android and notes") == And((Ref("android"), Ref("notes")))
    assert expr("android or not notes") == Or((Ref("android"), Not(Ref("notes"))))


def test_names_with_keyword_inside_are_plain_references():
    assert expr("sel_and_filter or not_this") == Or((Ref("sel_and_filter"), Ref("not_this")))


def test_reference_names_keep_their_case():
    assert expr("Selection") == Ref("Selection")
    assert expand(Ref("Selection"), ["Selection"]) == Ref("Selection")
    with pytest.raises(ConditionError):
        expand(Ref("selection"), ["Selection"])


# ---------------------------------------------------------------- precedence


def test_and_binds_tighter_than_or():
    assert expr("a or b and c") == Or((Ref("a"), And((Ref("b"), Ref("c")))))
    assert expr("a and b or c") == Or((And((Ref("a"), Ref("b"))), Ref("c")))


def test_not_binds_tighter_than_and():
    assert expr("not a and b") == And((Not(Ref("a")), Ref("b")))
    assert expr("a and not b") == And((Ref("a"), Not(Ref("b"))))


def test_not_binds_tighter_than_or():
    assert expr("not a or b") == Or((Not(Ref("a")), Ref("b")))


def test_mixed_precedence_uppercase():
    assert expr("a OR b AND NOT c") == Or((Ref("a"), And((Ref("b"), Not(Ref("c"))))))


def test_x_of_binds_tighter_than_not():
    assert expr("not 1 of X*") == Not(OfPattern("1", "X*"))
    assert expr("not all of them") == Not(OfPattern("all", "them"))


def test_x_of_binds_tighter_than_and_or():
    assert expr("1 of A* and all of B* or c") == Or(
        (And((OfPattern("1", "A*"), OfPattern("all", "B*"))), Ref("c"))
    )


def test_double_not():
    assert expr("not not a") == Not(Not(Ref("a")))


def test_chains_are_flat():
    assert expr("a and b and c") == And((Ref("a"), Ref("b"), Ref("c")))
    assert expr("a or b or c or d") == Or((Ref("a"), Ref("b"), Ref("c"), Ref("d")))


# ---------------------------------------------------------------- parentheses


def test_parentheses_override_precedence():
    assert expr("(a or b) and c") == And((Or((Ref("a"), Ref("b"))), Ref("c")))
    assert expr("not (a or b)") == Not(Or((Ref("a"), Ref("b"))))


def test_redundant_parentheses():
    assert expr("((a))") == Ref("a")
    assert expr("(a) and ((b))") == And((Ref("a"), Ref("b")))


def test_parenthesised_x_of():
    assert expr("(1 of SERVER*) AND (1 of CLIENT*)") == And((OfPattern("1", "SERVER*"), OfPattern("1", "CLIENT*")))


def test_nested_parentheses_without_spaces():
    assert expr("((a or b)and(not c))") == And((Or((Ref("a"), Ref("b"))), Not(Ref("c"))))


# ---------------------------------------------------------------- x of


def test_one_of_pattern_expands_to_or_in_name_order():
    names = ["SERVER_a", "CLIENT_a", "SERVER_b", "other"]
    assert expanded("1 of SERVER*", names) == Or((Ref("SERVER_a"), Ref("SERVER_b")))


def test_all_of_pattern_expands_to_and():
    names = ["sel_a", "sel_b", "filter"]
    assert expanded("all of sel*", names) == And((Ref("sel_a"), Ref("sel_b")))


def test_x_of_pattern_with_single_match_is_the_reference():
    assert expanded("1 of sel*", ["sel", "filter"]) == Ref("sel")
    assert expanded("all of sel*", ["sel", "filter"]) == Ref("sel")


def test_x_of_pattern_is_case_sensitive_with_star_the_only_wildcard():
    """The specification's patterns have ``*`` wildcards only: ``?`` and ``[`` stand for themselves
    (a glob took ``sel?`` for any one character, pulling in ``selA``)."""
    assert expanded("1 of Sel*", ["Sel1", "sel2"]) == Ref("Sel1")
    assert expanded("1 of sel?", ["sel?", "sel1", "selA"]) == Ref("sel?")
    assert expanded("1 of sel[ab]*", ["sela", "sel[ab]x"]) == Ref("sel[ab]x")
    assert expanded("all of a.*", ["a.1", "ab"]) == Ref("a.1")
    with pytest.raises(ConditionError):
        expanded("1 of sel?", ["sel1", "sel22"])


@settings(max_examples=300, deadline=None)
@given(st.text("ab_*", min_size=1, max_size=8), st.text("ab_", min_size=1, max_size=10))
def test_x_of_pattern_matches_as_the_star_glob_it_is(pattern, name):
    """``*`` is any run of characters, everything else itself: as the regex the glob stands for
    (a ``_`` name only for a pattern starting with ``_``)."""
    glob = re.compile(".*".join(map(re.escape, pattern.split("*"))), re.DOTALL)
    if glob.fullmatch(name) and (pattern.startswith("_") or not name.startswith("_")):
        assert expanded(f"1 of {pattern}", [name]) == Ref(name)
    else:
        with pytest.raises(ConditionError, match="matches no selection"):
            expanded(f"1 of {pattern}", [name])


def test_x_of_pattern_against_long_names_takes_linear_time():
    """A regex for ``*a*a*a*a*b`` backtracks over a long name (14 s for 300 letters, hours for the
    1,000 of a 1 KB rule, at start-up): a pattern is matched piece by piece instead."""
    started = time.monotonic()
    assert expanded("1 of *a*a*a*a*b", ["a" * 300, "a" * 299 + "b"]) == Ref("a" * 299 + "b")
    assert time.monotonic() - started < 1
    with pytest.raises(ConditionError, match="matches no selection"):
        expanded("1 of " + "*a" * 20 + "*b", ["a" * 100_000])
    assert time.monotonic() - started < 2


def test_the_pattern_budget_counts_each_piece_of_a_pattern_tested():
    """Each name is tested piece by piece, in a loop: 1,000 patterns of up to 1,000 pieces, each matching one of
    1,000 long names (a 2 MB rule), were a million tests within the budget and took a minute at start-up."""
    names = ["a" * 2100 + str(i) for i in range(99)] + ["a" * 2100 + "q"]
    condition = " or ".join("1 of *" + "a*" * pieces + "q*" for pieces in range(2000, 2010))
    with pytest.raises(ConditionError, match="too many distinct 'x of' patterns"):
        expanded(condition, names)
    # what rules write stays far within it: 1,000 selections, 100 patterns of a few pieces
    many = [f"sel_{i}_img" for i in range(1000)]
    assert len(references(expanded(" or ".join(f"1 of *sel_{i}_*" for i in range(100)), many))) == 100


def test_patterns_over_long_names_are_bounded_by_the_text_scanned_and_expanded():
    """Patterns that each name one selection of a long name: 20,000 of them and a name of 4 MB (a 4 MB rule)
    scanned the name 20,000 times for a minute, then labelled the plan with an 80 GB text: a MemoryError."""
    long_name = "a" * 400_000 + "".join(f"b{i}" for i in range(200))
    with pytest.raises(ConditionError, match="MiB of selection names"):
        expanded(" or ".join(f"1 of *b{i}*" for i in range(100)), [long_name])
    short = "s" + "".join(f"b{i}" for i in range(600))
    with pytest.raises(ConditionError, match="too many distinct 'x of' patterns"):
        expanded(" or ".join(f"1 of *b{i}*" for i in range(600)), ["a" * 200_000 + str(i) for i in range(10)] + [short])
    assert expanded(" or ".join(f"1 of *b{i}*" for i in range(20)), [long_name]) == Or((Ref(long_name),) * 20)


def test_one_of_them_excludes_underscore_names():
    names = ["sel", "_internal", "filter", "_x"]
    assert expanded("1 of them", names) == Or((Ref("sel"), Ref("filter")))
    assert expanded("all of them", names) == And((Ref("sel"), Ref("filter")))


def test_a_pattern_skips_underscore_names_like_them():
    """'1/all of pattern' is 'them' restricted to the names that match (the spec); pySigma reads
    it so too: a helper selection `_selection_x` is not pulled into `all of *selection*`."""
    names = ["selection_img", "selection_cli", "_selection_helper"]
    assert expanded("all of *selection*", names) == And((Ref("selection_img"), Ref("selection_cli")))
    assert expanded("1 of *", names) == Or((Ref("selection_img"), Ref("selection_cli")))
    assert expanded("1 of _sel*", names) == Ref("_selection_helper")


def test_explicit_pattern_may_select_underscore_names():
    assert expanded("1 of _*", ["sel", "_a", "_b"]) == Or((Ref("_a"), Ref("_b")))


def test_underscore_names_still_referable_directly():
    assert expanded("sel and not _f", ["sel", "_f"]) == And((Ref("sel"), Not(Ref("_f"))))


def test_them_when_only_underscore_names_is_error():
    with pytest.raises(ConditionError):
        expanded("1 of them", ["_a", "_b"])


def test_expand_keeps_structure_around_x_of():
    names = ["SERVER_1", "SERVER_2", "CLIENT_1", "filter"]
    assert expanded("(1 of SERVER*) and (1 of CLIENT*) and not filter", names) == And(
        (Or((Ref("SERVER_1"), Ref("SERVER_2"))), Ref("CLIENT_1"), Not(Ref("filter")))
    )


@pytest.mark.parametrize("text", ["1 of and", "1 of or", "1 of not", "1 of all", "1 of of", "1 of (", "1 of )"])
def test_x_of_needs_a_pattern(text):
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_x_of_at_end_is_error():
    with pytest.raises(ConditionError):
        parse_condition("1 of")
    with pytest.raises(ConditionError):
        parse_condition("a and all of")


def test_number_without_of_is_a_reference():
    assert expr("1 and x") == And((Ref("1"), Ref("x")))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n",
        "(a",
        "((a)",
        "a)",
        "(a))",
        "()",
        ")",
        "(",
        "a and",
        "a or",
        "and a",
        "or a",
        "not",
        "a and not",
        "a and or b",
        "a not b",
        "a b",
        "a (b)",
        "all",
        "them",
        "of",
        "| count() > 1",
    ],
)
def test_parse_errors(text):
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_condition_error_is_value_error():
    assert issubclass(ConditionError, ValueError)


def test_non_string_condition():
    with pytest.raises(ConditionError):
        parse_condition(5)
    with pytest.raises(ConditionError):
        parse_condition(None)


def test_unknown_selection_is_error_naming_it():
    with pytest.raises(ConditionError, match="missing"):
        expanded("sel and missing", ["sel"])


def test_unknown_selection_under_not_is_error():
    with pytest.raises(ConditionError):
        expanded("sel and not (filter or other)", ["sel", "filter"])


def test_pattern_matching_nothing_is_error():
    with pytest.raises(ConditionError, match="SERVER"):
        expanded("1 of SERVER*", ["CLIENT_a", "filter"])
    with pytest.raises(ConditionError):
        expanded("all of nothing*", ["a"])


def test_expand_with_no_names():
    with pytest.raises(ConditionError):
        expanded("1 of them", [])


# ---------------------------------------------------------------- aggregation


def test_builtin_aggregation():
    cond = parse_condition("(1 of SERVER*) AND (1 of CLIENT*) | count(Computer) > 2")
    assert cond.aggregation == Aggregation("count", "Computer", None, ">", 2.0)
    assert cond.expression == And((OfPattern("1", "SERVER*"), OfPattern("1", "CLIENT*")))
    assert cond.text == "(1 of SERVER*) AND (1 of CLIENT*) | count(Computer) > 2"


def test_count_without_field_with_group_by():
    agg = parse_condition("sel | count() by Computer >= 3").aggregation
    assert agg == Aggregation("count", None, "Computer", ">=", 3.0)


def test_count_star_counts_events_as_sql_writes_it():
    """``count(*)`` was a distinct count of a field named ``*``, which no event has: it never fired."""
    assert parse_aggregation("count(*) by Computer > 1") == parse_aggregation("count() by Computer > 1")
    with pytest.raises(ConditionError, match="needs a field"):
        parse_aggregation("sum(*) > 1")


@pytest.mark.parametrize("name", ["of", "them", "all", "and"])
def test_a_keyword_where_a_name_is_due_says_a_selection_cannot_be_named_so(name):
    with pytest.raises(ConditionError, match=f"unexpected keyword '{name}' in condition, where a selection's name "
                                             "was due"):
        parse_condition(f"sel or {name}")


def test_count_with_field_and_group_by():
    agg = parse_aggregation("count(User) by Computer > 1")
    assert (agg.function, agg.field, agg.group_by, agg.operator, agg.threshold) == \
        ("count", "User", "Computer", ">", 1.0)


def test_no_aggregation_is_none():
    assert parse_condition("sel").aggregation is None


@pytest.mark.parametrize("function", ["min", "max", "avg", "sum", "count"])
@pytest.mark.parametrize("op", ["==", "<", "<=", ">", ">="])
def test_functions_and_operators(function, op):
    agg = parse_condition(f"sel | {function}(Duration) {op} 10").aggregation
    assert agg.function == function
    assert agg.field == "Duration"
    assert agg.operator == op
    assert agg.threshold == 10.0
    assert agg.group_by is None


@pytest.mark.parametrize("function", ["min", "max", "avg", "sum"])
@pytest.mark.parametrize("op", ["==", "<", "<=", ">", ">="])
def test_functions_with_group_by_no_spaces_around_operator(function, op):
    agg = parse_aggregation(f"{function}(Size) by Computer{op}7")
    assert (agg.function, agg.field, agg.group_by, agg.operator, agg.threshold) == \
        (function, "Size", "Computer", op, 7.0)


def test_aggregation_case_insensitive_function_and_by():
    agg = parse_aggregation("COUNT(Computer) BY User > 2")
    assert agg.function == "count"
    assert agg.field == "Computer"
    assert agg.group_by == "User"


def test_aggregation_decimal_and_negative_threshold():
    assert parse_aggregation("avg(x) <= 2.5").threshold == 2.5
    assert parse_aggregation("min(x) > -3").threshold == -3.0


@pytest.mark.parametrize("threshold", ["\u0663", "\uff13", "1\u0660", "2.\u0665"])
def test_aggregation_threshold_takes_ascii_digits_only(threshold):
    """float() reads any script's digits: ``count() > \u0663`` loaded as > 3."""
    with pytest.raises(ConditionError, match="cannot parse aggregation"):
        parse_condition(f"sel | count() > {threshold}")


def test_aggregation_whitespace_tolerance():
    agg = parse_aggregation("  count(  Computer  )   >   2  ")
    assert agg == Aggregation("count", "Computer", None, ">", 2.0)


def test_aggregation_str_round_trips():
    for text in ["count(Computer) > 2", "count() by Computer >= 3", "avg(x) by y == 2.5", "sum(Bytes) < 100"]:
        agg = parse_aggregation(text)
        assert str(agg) == text
        assert parse_aggregation(str(agg)) == agg


@pytest.mark.parametrize("function", ["min", "max", "avg", "sum"])
def test_non_count_function_needs_field(function):
    with pytest.raises(ConditionError, match="needs a field"):
        parse_condition(f"sel | {function}() > 1")


@pytest.mark.parametrize(
    "text",
    [
        "sel | count() > 1 | count() > 2",
        "sel | count(Computer) > 2 | near x",
        "sel || count() > 1",
    ],
)
def test_two_pipes_is_error(text):
    with pytest.raises(ConditionError):
        parse_condition(text)


@pytest.mark.parametrize(
    "agg",
    [
        "",
        "   ",
        "garbage",
        "count(Computer)",
        "count(Computer) > ",
        "count(Computer) = 2",
        "count(Computer) != 2",
        "count(Computer) => 2",
        "count(Computer) > two",
        "count(Computer) > 2 extra",
        "count(Computer) by > 2",
        "count(a b) > 2",
        "count Computer > 2",
        "median(x) > 2",
        "near sel",
        "count(Computer) > 1e3",
        "count() by Computer,User > 2",
        "count(User,Image) > 2",
        "count(User) by Computer, > 2",
    ],
)
def test_garbage_after_pipe_is_error(agg):
    with pytest.raises(ConditionError):
        parse_condition(f"sel | {agg}")


@pytest.mark.parametrize("agg", ["count(ShareName) by SubjectUserName, IpAddress > 8",
                                 "count() by Computer ,User > 2", "count() by Computer , User>2"])
def test_several_group_fields_written_with_spaces_are_refused_as_several_fields(agg):
    """A form rules in the wild use; it was 'cannot parse aggregation', which does not say what is wrong."""
    with pytest.raises(ConditionError, match="takes one field"):
        parse_condition(f"sel | {agg}")


def test_bad_search_with_good_aggregation_is_error():
    with pytest.raises(ConditionError):
        parse_condition("sel and | count() > 1")


# ---------------------------------------------------------------- evaluate


def all_subsets(names):
    return [frozenset(c) for r in range(len(names) + 1) for c in itertools.combinations(names, r)]


@pytest.mark.parametrize(
    "text, truth",
    [
        ("a", lambda a, b, c: a),
        ("not a", lambda a, b, c: not a),
        ("a and b", lambda a, b, c: a and b),
        ("a or b", lambda a, b, c: a or b),
        ("a or b and c", lambda a, b, c: a or (b and c)),
        ("(a or b) and c", lambda a, b, c: (a or b) and c),
        ("not a and b", lambda a, b, c: (not a) and b),
        ("not (a and b)", lambda a, b, c: not (a and b)),
        ("a and not b or c", lambda a, b, c: (a and not b) or c),
        ("a AND NOT (b OR c)", lambda a, b, c: a and not (b or c)),
        ("1 of them", lambda a, b, c: a or b or c),
        ("all of them", lambda a, b, c: a and b and c),
        ("not 1 of them", lambda a, b, c: not (a or b or c)),
        ("not all of them or a", lambda a, b, c: (not (a and b and c)) or a),
    ],
)
def test_evaluate_truth_tables(text, truth):
    names = ["a", "b", "c"]
    node = expanded(text, names)
    for matched in all_subsets(names):
        assert evaluate(node, matched) is truth("a" in matched, "b" in matched, "c" in matched), (text, matched)


def test_evaluate_builtin_shape():
    names = ["S1", "S2", "C1", "C2"]
    node = expanded("(1 of S*) AND (1 of C*)", names)
    for matched in all_subsets(names):
        expected = bool(matched & {"S1", "S2"}) and bool(matched & {"C1", "C2"})
        assert evaluate(node, matched) is expected


def test_evaluate_ignores_unrelated_matches():
    node = expanded("a and not b", ["a", "b", "z"])
    assert evaluate(node, frozenset({"a", "z"})) is True
    assert evaluate(node, frozenset({"z"})) is False


def test_evaluate_unexpanded_tree_raises():
    with pytest.raises(TypeError):
        evaluate(OfPattern("1", "them"), frozenset())
    with pytest.raises(TypeError):
        references(OfPattern("1", "them"))


# ---------------------------------------------------------------- helpers


def test_top_level_terms():
    node = expanded("a and (b or c) and not d", ["a", "b", "c", "d"])
    assert top_level_terms(node) == (Ref("a"), Or((Ref("b"), Ref("c"))), Not(Ref("d")))
    assert top_level_terms(Ref("a")) == (Ref("a"),)
    assert top_level_terms(expanded("a or b", ["a", "b"])) == (Or((Ref("a"), Ref("b"))),)


def test_conjuncts_open_up_every_and_among_the_top_level_terms():
    names = ["a", "b", "c", "d"]
    assert conjuncts(expanded("(a and (b and not c)) and (d or a)", names)) == \
        (Ref("a"), Ref("b"), Not(Ref("c")), Or((Ref("d"), Ref("a"))))
    assert conjuncts(expanded("not (a and b)", names)) == (Not(And((Ref("a"), Ref("b")))),)
    assert conjuncts(expanded("all of them and not a", names)) == (*map(Ref, names), Not(Ref("a")))


def test_is_negative():
    assert is_negative(Not(Ref("a")))
    assert not is_negative(Ref("a"))
    assert not is_negative(Or((Not(Ref("a")), Ref("b"))))


def test_references():
    node = expanded("a and not (b or 1 of c*)", ["a", "b", "c1", "c2", "unused"])
    assert references(node) == {"a", "b", "c1", "c2"}


def test_str_of_expanded_tree_reparses_to_same_tree():
    names = ["a", "b", "c", "d"]
    node = expanded("a or not (b and c) and d", names)
    assert expanded(str(node), names) == node


# ---------------------------------------------------------------- properties

_names = st.sampled_from(["a", "b", "c", "android", "notes", "order"])


def _trees(depth=3):
    leaf = _names.map(Ref)
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            children.map(Not),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        ),
        max_leaves=8,
    )


def _py(node, matched):
    """Reference semantics via Python's own boolean expression evaluation."""
    if isinstance(node, Ref):
        return node.name in matched
    if isinstance(node, Not):
        return not _py(node.operand, matched)
    if isinstance(node, And):
        return all(_py(o, matched) for o in node.operands)
    return any(_py(o, matched) for o in node.operands)


def _render(node, upper):
    """Render a tree fully parenthesised, with keywords in upper or lower case."""
    kw = (lambda s: s.upper()) if upper else (lambda s: s)
    if isinstance(node, Ref):
        return node.name
    if isinstance(node, Not):
        return f"{kw('not')} ({_render(node.operand, upper)})"
    joiner = f" {kw('and')} " if isinstance(node, And) else f" {kw('or')} "
    return "(" + joiner.join(_render(o, upper) for o in node.operands) + ")"


@given(_trees(), st.booleans(), st.frozensets(_names))
def test_fully_parenthesised_rendering_parses_to_equivalent_tree(tree, upper, matched):
    names = ["a", "b", "c", "android", "notes", "order"]
    parsed = expanded(_render(tree, upper), names)
    assert evaluate(parsed, matched) == _py(tree, matched)


@given(_trees(), st.frozensets(_names))
def test_str_rendering_preserves_semantics(tree, matched):
    names = ["a", "b", "c", "android", "notes", "order"]
    parsed = expanded(str(tree), names)
    assert evaluate(parsed, matched) == _py(tree, matched)


# ---------------------------------------------------------------- compiled conditions


class _Named:
    """A stand-in selection or matcher: holds on a view (a set of names) that holds its name."""

    def __init__(self, name):
        self.name = name
        self.test = lambda view: name in view


@given(_trees(), st.lists(st.frozensets(_names), min_size=1, max_size=40))
def test_a_compiled_condition_agrees_with_the_tree_on_every_event_of_a_stream(tree, stream):
    """The compiled condition tries the parts of an AND or an OR in an order it learns from the
    events before (``_forward``): that order may change from one event to the next, the verdict
    never does."""
    test = _condition_test(tree, {name: _Named(name) for name in ["a", "b", "c", "android", "notes", "order"]})
    for matched in stream:
        assert test(matched) == _py(tree, matched)


@given(st.lists(st.lists(_names, min_size=1, max_size=4), min_size=1, max_size=4),
       st.lists(st.frozensets(_names), min_size=1, max_size=40))
def test_a_compiled_selection_holds_when_every_matcher_of_one_alternative_does(alternatives, stream):
    test = _selection_test(tuple(tuple(_Named(name) for name in group) for group in alternatives), None)
    for matched in stream:
        assert test(matched) == any(all(name in matched for name in group) for group in alternatives)


@pytest.mark.parametrize("agg, field", [("count()by Computer > 2", None), ("count(User)by Computer > 2", "User"),
                                        ("count(User)  by Computer>2", "User")])
def test_by_closed_up_against_the_parenthesis_is_a_group(agg, field):
    """sigmac's tokenizer read ``)by`` as two tokens; it was 'cannot parse aggregation' here."""
    assert parse_condition(f"sel | {agg}").aggregation == Aggregation("count", field, "Computer", ">", 2.0)


@pytest.mark.parametrize("agg", ["count()byComputer > 2", "count()by > 2"])
def test_by_needs_its_group_after_a_space(agg):
    with pytest.raises(ConditionError):
        parse_condition(f"sel | {agg}")


@pytest.mark.parametrize("agg", ["count() by X>>2", "count() by X> >2", "count() by X=>2", "count() by X<>2",
                                 "count() by X>=<2", "count() by X<2>3", "count() by X>2>2", "count() by X=2 > 3",
                                 "count() by >X > 2", "count(a>b) > 1", "count(=) > 2", "count(a) by b) > 1",
                                 "count(a) by (b > 1"])
def test_a_comparison_sign_or_parenthesis_in_a_field_or_group_is_refused(agg):
    """``by X>>2`` grouped by a field named ``X>``: the regex let the group take the first '>'."""
    with pytest.raises(ConditionError, match="cannot parse aggregation"):
        parse_condition(f"sel | {agg}")
