"""Value matching: event leaves, compiled rule strings, wildcards, escapes, prefilter literals."""

import fnmatch

import pytest
from hypothesis import assume, example, given, settings, strategies as st

from pipeshell_filter.sigma.modifiers import KNOWN_MODIFIERS, ModifierError
from rulevalues import compile_scalar, compile_string
from pipeshell_filter.values import first_leaf, leaves


def L(value):
    return list(leaves(value))


def escape(text):
    """How a literal string is written as a Sigma value (no wildcards)."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


# ---------------------------------------------------------------- leaves


def test_leaves_int_and_string_event_id_agree():
    assert L(800) == ["800"]
    assert L("800") == ["800"]


def test_leaves_xml_element_is_its_text_only():
    value = {"#attributes": {"Qualifiers": "0"}, "#text": "800"}
    assert L(value) == ["800"]


def test_leaves_xml_element_int_text_and_int_qualifiers():
    assert L({"#attributes": {"Qualifiers": 0}, "#text": 800}) == ["800"]


def test_qualifiers_do_not_leak_even_when_nested():
    event = {"System": {"EventID": {"#attributes": {"Qualifiers": "0"}, "#text": "800"}, "Level": 4}}
    got = L(event)
    assert got == ["800", "4"]
    assert "0" not in got


def test_attributes_only_element_has_no_leaves():
    assert L({"#attributes": {"Name": "PowerShell"}}) == []


def test_attributes_skipped_in_dict_without_text():
    assert L({"#attributes": {"xmlns": "ns"}, "System": {"Computer": "h"}}) == ["h"]


def test_xml_element_with_null_text():
    assert L({"#attributes": {"Qualifiers": "0"}, "#text": None}) == []


def test_leaves_list_of_strings():
    assert L(["a", "b", 3]) == ["a", "b", "3"]


def test_leaves_xml_text_list_event_800():
    data = {"Data": {"#text": ["first", "second System.IO.Pipes.NamedPipeClientStream"]}}
    assert L(data) == ["first", "second System.IO.Pipes.NamedPipeClientStream"]


def test_leaves_nested_dicts_and_lists_in_order():
    value = {"a": {"b": [1, {"c": "x"}, [True, None]]}, "d": "y"}
    assert L(value) == ["1", "x", "true", "y"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (800.0, "800"),
        (-0.0, "0"),
        (1e16, "10000000000000000"),
        (800.5, "800.5"),
        (0.1, "0.1"),
        (-2.25, "-2.25"),
    ],
)
def test_leaves_floats(value, expected):
    assert L(value) == [expected]


def test_leaves_bools_are_lowercase_words_not_ints():
    assert L(True) == ["true"]
    assert L(False) == ["false"]
    assert L([True, 1]) == ["true", "1"]


def test_leaves_none_and_empty():
    assert L(None) == []
    assert L([]) == []
    assert L({}) == []
    assert L("") == [""]


def test_leaves_big_int():
    assert L(36028797018963968) == ["36028797018963968"]


def test_first_leaf():
    assert first_leaf({"#attributes": {"Qualifiers": "0"}, "#text": 800}) == "800"
    assert first_leaf(["x", "y"]) == "x"
    assert first_leaf(None) is None
    assert first_leaf({"#attributes": {"Qualifiers": "0"}}) is None


@given(st.integers())
def test_leaves_int_float_string_agree_for_integers(n):
    assume(abs(n) < 2**53)
    assert L(n) == L(float(n)) == L(str(n)) == [str(n)]


# ---------------------------------------------------------------- compile_string: kinds


def test_equals_kind():
    t = compile_string("powershell.exe", set())
    assert t.kind == "equals"
    assert t("powershell.exe")
    assert t("PowerShell.EXE")
    assert not t("xpowershell.exe")
    assert not t("powershell.exe ")


def test_contains_kind():
    t = compile_string("NamedPipeServerStream", {"contains"})
    assert t.kind == "contains"
    assert t.needle == "namedpipeserverstream"
    assert t('value="System.IO.Pipes.NamedPipeServerStream"')
    assert t("namedpipeserverstream")
    assert not t("NamedPipeClientStream")


def test_startswith_kind():
    t = compile_string("System.IO", {"startswith"})
    assert t.kind == "startswith"
    assert t("system.io.pipes")
    assert not t("x System.IO")


def test_endswith_kind():
    t = compile_string(".ps1", {"endswith"})
    assert t.kind == "endswith"
    assert t(r"C:\ProgramData\srv.PS1")
    assert not t("srv.ps1.txt")


def test_leading_trailing_star_recognised_as_plain_kinds():
    assert compile_string("*abc*", set()).kind == "contains"
    assert compile_string("abc*", set()).kind == "startswith"
    assert compile_string("*abc", set()).kind == "endswith"
    assert compile_string("**abc**", set()).kind == "contains"
    assert compile_string("*abc*", {"contains"}).kind == "contains"


def test_star_alone_matches_anything():
    t = compile_string("*", set())
    assert t("") and t("anything\nat all")


def test_empty_string_equals_only_empty():
    t = compile_string("", set())
    assert t("")
    assert not t("x")


def test_empty_contains_matches_everything_and_gives_no_literal():
    t = compile_string("", {"contains"})
    assert t("") and t("abc")
    assert t.literals() is None


# ---------------------------------------------------------------- case


def test_case_insensitive_by_default_both_directions():
    assert compile_string("ABC", {"contains"})("xxabcxx")
    assert compile_string("abc", {"contains"})("XXABCXX")
    assert compile_string("AbC", set())("aBc")


def test_cased_modifier():
    t = compile_string("ABC", {"contains", "cased"})
    assert t.cased
    assert t.needle == "ABC"
    assert t("xABCx")
    assert not t("xabcx")
    assert compile_string("Abc", {"cased"})("Abc")
    assert not compile_string("Abc", {"cased"})("abc")


def test_cased_with_wildcard():
    t = compile_string("A*C", {"cased"})
    assert t("AxxC")
    assert not t("axxc")
    assert compile_string("A*C", set())("axxc")


# ---------------------------------------------------------------- wildcards


def test_star_wildcard_in_middle():
    t = compile_string("power*.exe", set())
    assert t.kind == "wildcard"
    assert t("powershell.exe")
    assert t("POWER.EXE")
    assert not t("powershell.exe2")
    assert not t("xpowershell.exe")


def test_question_mark_is_exactly_one_character():
    t = compile_string("a?c", set())
    assert t("abc")
    assert t("a\nc")  # any character, including newline
    assert not t("ac")
    assert not t("abbc")


def test_question_marks_with_contains():
    t = compile_string("a??d", {"contains"})
    assert t("xxabcdxx")
    assert not t("xxabcxx")


def test_star_spans_newlines():
    assert compile_string("begin*end", set())("begin\r\nmiddle\r\nend")


def test_regex_metacharacters_are_literal_in_plain_values():
    t = compile_string("a.b+c(d)[e]", set())
    assert t("a.b+c(d)[e]")
    assert not t("axbbc(d)[e]")
    w = compile_string("$pipe*(x)", set())
    assert w("$pipe = New-Object(x)")
    assert not w("pipe(x)")


def test_wildcard_with_contains_startswith_endswith():
    assert compile_string("a*b", {"contains"})("zzaxxbzz")
    assert compile_string("a*b", {"startswith"})("axxbzz")
    assert not compile_string("a*b", {"startswith"})("zaxxb")
    assert compile_string("a*b", {"endswith"})("zzaxxb")
    assert not compile_string("a*b", {"endswith"})("axxbz")


# ---------------------------------------------------------------- escapes


def test_escaped_star_is_literal():
    t = compile_string(r"a\*b", set())
    assert t.kind == "equals"
    assert t("a*b")
    assert not t("axb")
    assert not t("ab")


def test_escaped_question_mark_is_literal():
    t = compile_string(r"what\?", set())
    assert t("what?")
    assert not t("whatx")


def test_escaped_backslash_is_one_backslash():
    t = compile_string(r"a\\b", set())
    assert t("a\\b")
    assert not t("a\\\\b")


def test_escaped_backslash_then_wildcard():
    t = compile_string(r"C:\Temp\\*", set())
    assert t.kind == "startswith"
    assert t.needle == "c:\\temp\\"
    assert t("C:\\Temp\\evil.exe")
    assert not t("C:\\Temp*")


def test_escaped_backslash_then_escaped_star():
    t = compile_string(r"a\\\*", set())
    assert t("a\\*")
    assert not t("a\\x")


def test_lone_backslash_in_windows_path_is_literal():
    t = compile_string(r"C:\Windows\System32\cmd.exe", set())
    assert t.kind == "equals"
    assert t("c:\\windows\\system32\\cmd.exe")
    assert not t("C:WindowsSystem32cmd.exe")


def test_windows_path_with_wildcard_and_lone_backslashes():
    t = compile_string(r"C:\Users\\*\AppData\Roaming\*.ps1", set())
    # '\\*' = backslash + wildcard; '\A', '\R' are literal backslashes; the final '\*' is a
    # literal star (the backslash is consumed as the escape)
    assert t("C:\\Users\\bob\\AppData\\Roaming*.ps1")
    assert t("c:\\users\\\\appdata\\roaming*.PS1")
    assert not t("C:\\Users\\bob\\AppData\\Roaming\\*.ps1")
    assert not t("C:\\Users\\bob\\AppData\\Roamingx.ps1")


def test_trailing_lone_backslash_is_literal():
    t = compile_string("share\\", {"endswith"})
    assert t("\\\\host\\share\\")
    assert not t("\\\\host\\share")


def test_escaped_wildcard_next_to_literal_text_stays_literal():
    t = compile_string(r"*.php\?id=*", set())
    assert t("http://x/index.php?id=3")
    assert not t("http://x/index.phpXid=3")
    assert compile_string(r"x\*", set())("x*")
    assert not compile_string(r"x\*", set())("xy")


@pytest.mark.parametrize(
    "value, modifiers, text",
    [
        (r"\*", set(), "x"),  # literal '*' equals 'x'?  (compiled as contains '' -> matches everything)
        (r"\*", {"endswith"}, "abc"),  # endswith '*' on 'abc'
        (r"\?", {"contains"}, "abc"),  # contains '?' on 'abc' (compiled as regex .*..*)
        (r"\?", set(), "b"),  # equals '?' on 'b'
        (r"*\**", set(), "abc"),  # contains a literal star
        (r"a*\?", set(), "abc"),  # must end in a literal '?'
    ],
)
def test_escaped_wildcard_as_its_own_chunk_is_literal(value, modifiers, text):
    assert not compile_string(value, modifiers)(text)


@pytest.mark.parametrize("text", ["*", "?"])
def test_escape_round_trip_for_lone_wildcard_characters(text):
    t = compile_string(escape(text), set())
    assert t(text)
    assert not t("x"), f"escaped {text!r} must only match the character itself"


def test_double_backslash_before_plain_char_is_one_backslash():
    # Sigma: a plain backslash may be written single or doubled
    assert compile_string(r"C:\\Windows", set())("C:\\Windows")
    assert compile_string(r"C:\Windows", set())("C:\\Windows")


@given(st.text(max_size=30))
def test_escape_round_trip_equals(text):
    t = compile_string(escape(text), set())
    assert t.kind == "equals"
    assert t.needle == text.casefold()
    assert t(text)
    assert not t(text + "x")


@given(st.text(max_size=20), st.text(max_size=10), st.text(max_size=10))
def test_escape_round_trip_contains(text, before, after):
    t = compile_string(escape(text), {"contains", "cased"})
    assert t(before + text + after)


@given(st.text(alphabet="ab*?\\", max_size=12))
def test_escape_round_trip_cased_only_matches_itself_among_variants(text):
    t = compile_string(escape(text), {"cased"})
    assert t(text)
    for other in {text + "a", "a" + text, text.replace("*", "a"), text.replace("?", "b"), text[:-1]}:
        if other != text:
            assert not t(other)


# ---------------------------------------------------------------- wildcard oracle

_PAT_ALPHABET = "abcAB.-$ *?\n"  # no '[', ']' or backslash: fnmatch would read those specially


@given(st.text(alphabet=_PAT_ALPHABET, max_size=10), st.text(alphabet="abcAB.-$ \n", max_size=14))
def test_wildcards_agree_with_fnmatch_oracle(pattern, text):
    expected = fnmatch.fnmatchcase(text.lower(), pattern.lower())
    assert compile_string(pattern, set())(text) == expected
    cased_expected = fnmatch.fnmatchcase(text, pattern)
    assert compile_string(pattern, {"cased"})(text) == cased_expected


@given(st.text(alphabet=_PAT_ALPHABET, max_size=8), st.text(alphabet="abcAB.-$ \n", max_size=14))
def test_contains_equals_star_wrapped(pattern, text):
    assert compile_string(pattern, {"contains"})(text) == compile_string("*" + pattern + "*", set())(text)
    assert compile_string(pattern, {"startswith"})(text) == compile_string(pattern + "*", set())(text)
    assert compile_string(pattern, {"endswith"})(text) == compile_string("*" + pattern, set())(text)


# ---------------------------------------------------------------- re


def test_re_modifier_searches_unanchored_case_sensitive():
    # Sigma v2.1: |re is case-sensitive unless |re|i (it used to ignore case by default)
    t = compile_string(r"New-Object\s+-TypeName\s+\$\w+", {"re"})
    assert t.kind == "regex"
    assert t("$pipe = New-Object   -TypeName $pipeType -ArgumentList x")
    assert not t("$pipe = new-object   -typename $pipeType -ArgumentList x")
    assert not t("New-Object -ArgumentList")


@pytest.mark.parametrize("flag", ["i", "ignorecase"])
def test_re_i_ignores_case(flag):
    t = compile_string(r"New-Object\s+-TypeName\s+\$\w+", {"re", flag})
    assert t("$pipe = new-object   -typename $pipeType -ArgumentList x")
    assert not t.cased


def test_re_modifier_wildcards_are_regex_syntax():
    t = compile_string("a.c", {"re", "i"})
    assert t("xxABCxx")
    assert not compile_string("a.c", {"re"})("xxABCxx")
    assert not compile_string("a*c", {"re"})("xyz")
    assert compile_string("^a*c$", {"re"})("c")


@pytest.mark.parametrize("flag", ["s", "dotall"])
def test_re_modifier_dot_matches_newline_only_with_s(flag):
    # Sigma v2.1: '.' does not match a newline unless |re|s (it used to by default)
    assert not compile_string("begin.*end", {"re"})("begin\nend")
    assert compile_string("begin.*end", {"re", flag})("begin\nend")


@pytest.mark.parametrize("flag", ["m", "multiline"])
def test_re_modifier_multiline(flag):
    assert not compile_string("^b$", {"re"})("a\nb\nc")
    assert compile_string("^b$", {"re", flag})("a\nb\nc")


def test_re_modifier_cased():
    t = compile_string("ABC", {"re", "cased"})
    assert t("xABCx")
    assert not t("xabcx")


def test_re_cased_and_i_contradict():
    from pipeshell_filter.sigma.modifiers import ModifierError

    with pytest.raises(ModifierError, match="contradict"):
        compile_string("ABC", {"re", "cased", "i"})


def test_re_literals_are_the_longest_run_every_match_holds():
    assert compile_string("NamedPipeServerStream", {"re"}).literals() == ("namedpipeserverstream",)
    assert compile_string("Invoke-Obfuscation.*-Join", {"re"}).literals() == ("invoke-obfuscation",)
    assert compile_string("(Server|Client)Stream", {"re"}).literals() == ("stream",)
    assert compile_string("a?bcd|efgh", {"re"}).literals() is None  # no run in every alternative
    assert compile_string("ab\\z", {"re"}).literals() is None  # RE2-only syntax: nothing assumed


@pytest.mark.parametrize("pattern", ["(unclosed", r"(a)\1", "(?=a)b", "(?<=a)b", "(?!a)b", "a++", r"a\Z"])
def test_bad_regex_raises(pattern):
    # RE2 runs |re in linear time: no backreferences or lookaround, and the error is one line
    from pipeshell_filter.sigma.modifiers import PatternError

    with pytest.raises(PatternError) as excinfo:
        compile_string(pattern, {"re"})
    assert "\n" not in str(excinfo.value) and str(excinfo.value)


# ---------------------------------------------------------------- scalars


def test_compile_scalar_int_matches_all_event_forms():
    t = compile_scalar(800, set())
    for value in (800, "800", 800.0, {"#attributes": {"Qualifiers": "0"}, "#text": "800"}):
        assert any(t(x) for x in leaves(value)), value
    assert not any(t(x) for x in leaves(8000))
    assert not any(t(x) for x in leaves({"#attributes": {"Qualifiers": "800"}, "#text": "4104"}))


def test_compile_scalar_float_and_bool():
    assert compile_scalar(800.0, set())("800")
    assert compile_scalar(1.5, set())("1.5")
    assert compile_scalar(True, set())("true")
    assert compile_scalar(False, set())("FALSE")
    assert not compile_scalar(True, set())("1")


def test_compile_scalar_with_contains_is_refused():
    """A YAML number under |contains was searched as its text, which YAML may have rewritten (0755 as 493)."""
    with pytest.raises(ModifierError, match=r"\|contains applies to text, not to the number 80"):
        compile_scalar(80, {"contains"})


def test_known_modifiers():
    # every modifier of the Sigma v2.1 appendix
    assert KNOWN_MODIFIERS == {"contains", "startswith", "endswith", "re", "cased", "all", "exists",
                               "i", "ignorecase", "m", "multiline", "s", "dotall", "windash", "base64",
                               "base64offset", "utf16", "utf16le", "utf16be", "wide", "lt", "lte", "gt", "gte",
                               "neq", "minute", "hour", "day", "week", "month", "year", "cidr", "expand", "fieldref"}


# ---------------------------------------------------------------- literals


def test_literals_of_plain_kinds():
    assert compile_string("System.IO.Pipes.NamedPipeServerStream", {"contains"}).literals() == (
        "system.io.pipes.namedpipeserverstream",
    )
    assert compile_string("ABC", set()).literals() == ("abc",)
    assert compile_string("ABC", {"startswith"}).literals() == ("abc",)
    assert compile_string("ABC", {"endswith"}).literals() == ("abc",)
    assert compile_string("ABC", {"cased"}).literals() == ("abc",)  # always folded: the prefilter is caseless


def test_literals_of_wildcard_is_longest_chunk():
    assert compile_string("ab*cdef*g", set()).literals() == ("cdef",)
    assert compile_string("x?yyy", set()).literals() == ("yyy",)
    assert compile_string("A*BCD", set()).literals() == ("bcd",)


def test_literals_of_pure_wildcards_is_none():
    for value in ("*", "?", "*?*", "??", ""):
        assert compile_string(value, {"contains"}).literals() is None, value


def test_literals_keep_escaped_characters():
    assert compile_string(r"a\*b", {"contains"}).literals() == ("a*b",)
    # '\W' is a lone (literal) backslash, '\*' an escaped star: no backslash before the star
    assert compile_string(r"C:\Windows\*", set()).literals() == ("c:\\windows*",)


def _instantiate(draw, value, vary_case=True):
    """A text the pattern matches: wildcards replaced by random filler, case varied."""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append(value[i + 1])
            i += 2
            continue
        if ch == "*":
            out.append(draw(st.text(alphabet="aAbB\\*? x", max_size=4)))
        elif ch == "?":
            out.append(draw(st.sampled_from("aAbB\\*? x")))
        else:
            variants = [ch]
            if vary_case:
                # only simple one-to-one case pairs ('ß'.upper() == 'SS' is not one)
                variants += [v for v in (ch.upper(), ch.lower()) if len(v) == 1 and v.lower() == ch.lower()]
            out.append(draw(st.sampled_from(variants)))
        i += 1
    return "".join(out)


_SPECIALS = "aAbBxX.\\*? "
# Any code point: matching folds both sides with str.casefold, which is context-free.
_VALUE_CHARS = st.one_of(st.sampled_from(_SPECIALS), st.characters(blacklist_categories=("Cs",)))
_MODIFIER_SETS = [set(), {"contains"}, {"startswith"}, {"endswith"}, {"cased"}, {"contains", "cased"},
                  {"endswith", "cased"}]


@st.composite
def value_and_text(draw):
    value = draw(st.text(alphabet=_VALUE_CHARS, max_size=10))
    modifiers = draw(st.sampled_from(_MODIFIER_SETS))
    if draw(st.booleans()):
        text = draw(st.text(alphabet=_VALUE_CHARS, max_size=14))
    else:
        prefix = draw(st.text(alphabet="ab x", max_size=3))
        suffix = draw(st.text(alphabet="ab x", max_size=3))
        text = prefix + _instantiate(draw, value) + suffix
    return value, modifiers, text


@given(value_and_text())
@example(("ab*cdef*g", set(), "ABxxCDEFyyG"))
@example((r"C:\Windows\*", set(), "c:\\WINDOWS*"))
@example(("a?b", {"contains"}, "xxAxBxx"))
@example(("\u00c9T\u00c9*", set(), "\u00e9t\u00e9 ici"))
def test_literals_are_sound_for_a_prefilter(case):
    """If the test matches the text, the case-folded text contains one of literals()."""
    value, modifiers, text = case
    test = compile_string(value, modifiers)
    lits = test.literals()
    if lits is not None:
        assert lits, "literals() must be None or non-empty"
        if test(text):
            assert any(lit in text.casefold() for lit in lits), (value, modifiers, text, lits)


@st.composite
def value_and_instance(draw):
    """A pattern, modifiers, and a text built to match it (wildcards filled, case varied)."""
    value = draw(st.text(alphabet=_VALUE_CHARS, max_size=10))
    modifiers = draw(st.sampled_from(_MODIFIER_SETS))
    text = _instantiate(draw, value, vary_case="cased" not in modifiers)
    if modifiers & {"contains", "endswith"}:
        text = draw(st.text(alphabet="ab x", max_size=3)) + text
    if modifiers & {"contains", "startswith"}:
        text = text + draw(st.text(alphabet="ab x", max_size=3))
    return value, modifiers, text


@given(value_and_instance())
@example(("a\\*b", set(), "a*B"))
@example(("C:\\Win\\\\*", {"startswith"}, "c:\\win\\x.exe"))
def test_every_instantiation_of_a_pattern_matches(case):
    value, modifiers, text = case
    assert compile_string(value, modifiers)(text), (value, modifiers, text)


@given(value_and_instance())
def test_instantiations_are_found_by_literals(case):
    value, modifiers, text = case
    lits = compile_string(value, modifiers).literals()
    assert lits is None or any(lit in text.casefold() for lit in lits)


@pytest.mark.parametrize(
    "value, text, expected",
    [
        ("a*\u017f\u017f", "ass", True),  # long s folds to 's'
        ("x*\u0130", "xi\u0307", True),  # dotted capital I folds to 'i' + combining dot
        ("x*\u0130", "xi", False),
        ("*\u212a*", "kelvin", True),  # the Kelvin sign folds to 'k'
        ("a*stra\u00dfe", "a strasse", True),
    ],
)
def test_unicode_wildcards_fold_and_literals_stay_sound(value, text, expected):
    test = compile_string(value, set())
    assert test(text) is expected
    lits = test.literals()
    assert lits
    if expected:
        assert any(lit in text.casefold() for lit in lits), (value, text, lits)


def test_plain_and_wildcard_case_folding_agree_on_unicode():
    plain = compile_string("\u017f\u017f", {"contains"})("ass")
    wildcard = compile_string("a*\u017f\u017f", set())("ass")
    assert plain == wildcard


@pytest.mark.parametrize(
    "value, modifiers, text",
    [
        ("\u039a\u03a9\u03a3", {"contains"}, "\u039a\u03a9\u03a3\u03a4\u0391\u03a3"),  # 'ΚΩΣ' in 'ΚΩΣΤΑΣ'
        ("C:\\Users\\\u039a\u03a9\u03a3", {"startswith"}, "C:\\Users\\\u039a\u03a9\u03a3\u03a4\u0391\u03a3\\x.ps1"),
    ],
)
def test_case_insensitive_match_of_text_containing_the_exact_value(value, modifiers, text):
    assert compile_string(value, modifiers | {"cased"})(text)  # the exact characters are there
    assert compile_string(value, modifiers)(text)


# ---------------------------------------------------------------- values tested together

_PIECES = st.sampled_from(["a", "B", "ß", "ss", "*", "?", "\\*", "x.y", "İ", "ǰ", " ", "\n"])
_VALUE = st.lists(_PIECES, max_size=5).map("".join)


@given(st.lists(st.tuples(_VALUE, st.sampled_from([(), ("contains",), ("startswith",), ("endswith",),
                                                    ("cased",), ("contains", "cased"), ("re",)])),
                min_size=1, max_size=6),
       st.lists(st.lists(_PIECES, max_size=8).map("".join), max_size=4))
def test_values_tested_together_agree_with_each_value_on_its_own(values, texts):
    """AnyOf (one set, one tuple, one regex) is the OR of the values' own tests."""
    from pipeshell_filter.sigma.matchers import AnyOf
    from pipeshell_filter.values import fold

    tests = []
    for value, modifiers in values:
        try:
            tests.append(compile_string(value, set(modifiers)))
        except Exception:  # an |re value that is no regular expression
            continue
    if not tests:
        return
    expected = any(test(text) for test in tests for text in texts)
    assert AnyOf(tuple(tests)).holds(frozenset(fold(t) for t in texts), tuple(texts)) == expected


# Patterns built from the pieces that decide what every match must hold: literal runs, classes,
# alternatives, optional and repeated groups, anchors, case flags.
_PIECES = st.sampled_from(["ab", "Cd", "x.y", "\\.", "[ab]", "(ab|cd)", "(abc)+", "(ab)?", "a*", "b{1,2}", "^", "$",
                           "\\b", "(?i:ab)", ".", "\\d", "k", "s"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=6), st.sampled_from(["", "i"]),
       st.text(alphabet="abcdxyABCDXY.-0 \u212a\u017f", max_size=30))
def test_every_text_a_regex_matches_holds_its_literal(pieces, flags, text):
    assume("$" not in pieces[:-1])  # a '$' that more pattern follows is a rule error (test_modifiers_v21)
    test = compile_string("".join(pieces), {"re", *flags})
    found = test.literals()
    if found is not None and test(text):
        assert any(literal in text.casefold() for literal in found), (pieces, flags, text, found)
