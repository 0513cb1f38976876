"""Sigma v2.1 value modifiers: windash, the encodings, numeric and date comparisons, cidr, neq,
expand, fieldref and ``'|all':`` keywords.

Each modifier has hand-written cases from the specification's own examples and a hypothesis
property against a reference written here, from the standard library, independently of the
package (base64offset from encodings of the value with varied neighbours, cidr from
``ipaddress``, windash by spelling out the variants...).  The last property holds every test's
``literals()`` to what the prefilter assumes: a text the test matches contains one of them.
"""

import base64
import datetime
import ipaddress
import itertools
import re
import string
from fractions import Fraction

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clitools import ndjson, records, run_cli
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.sigma.compile import compile_plan, compile_selection
from pipeshell_filter.sigma.encodings import base64_offsets
from pipeshell_filter.sigma.modifiers import KNOWN_MODIFIERS, ModifierError, ModifierSpec, PatternError, compile_value
from pipeshell_filter.sigma.placeholders import PlaceholderError, load_placeholders
from pipeshell_filter.sigma.rule import RuleError, parse_rule
from pipeshell_filter.sigma.typed import PART_RANGES

SOURCE = "/rules/v21.yml"
DASHES = "-/\u2013\u2014\u2015"
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def compiled(value, *modifiers, placeholders=None):
    return compile_value(value, ModifierSpec.parse(modifiers), placeholders)


def rule_error(detection, placeholders=None) -> str:
    text = yaml.safe_dump({"title": "t", "detection": detection}, sort_keys=False)
    with pytest.raises(RuleError) as excinfo:
        compile_plan(parse_rule(text, SOURCE), placeholders=placeholders)
    message = str(excinfo.value)
    assert "\n" not in message and SOURCE in message, message
    return message


RESOLVER = FieldResolver(builtin_profiles())


def selects(selection, event, placeholders=None) -> bool:
    return compile_selection("sel", selection, SOURCE, placeholders).matches(RESOLVER.view(event))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- windash


def test_windash_matches_every_dash_for_each_dash():
    test = compiled(" -enc ", "contains", "windash")
    for dash in DASHES:
        assert test(f"powershell {dash}enc AAAA")
        assert test(f"POWERSHELL {dash}ENC AAAA")
    assert not test("powershell enc AAAA")
    assert not test("powershell _enc AAAA")
    both = compiled("-a -b", "windash")
    assert both("/a \u2015b") and both("\u2013a -b") and not both("-a b")


def test_windash_with_slash_in_the_value_and_endswith():
    assert compiled("/s", "endswith", "windash")("regsvr32 \u2014s")
    assert compiled("/s", "endswith", "windash")("regsvr32 -S")
    assert not compiled("/s", "endswith")("regsvr32 -s")


def test_windash_literals_are_a_part_every_variant_holds():
    assert compiled(" -enc ", "contains", "windash").literals() == ("enc ",)  # the longest dash-free part
    assert set(compiled("-", "contains", "windash").literals()) == set(DASHES)


def _windash_reference(value, mode, text):
    """Spell out every variant, then compare as Sigma does (caseless)."""
    slots = [DASHES if ch in DASHES else ch for ch in value]
    folded = text.casefold()
    for chars in itertools.product(*slots):
        variant = "".join(chars).casefold()
        if {"contains": variant in folded, "startswith": folded.startswith(variant),
                "endswith": folded.endswith(variant), "equals": folded == variant}[mode]:
            return True
    return False


_WINDASH_VALUE = st.text("aB-/\u2013\u2014\u2015 ", max_size=6)


@st.composite
def _windash_case(draw):
    value = draw(_WINDASH_VALUE)
    mode = draw(st.sampled_from(["contains", "startswith", "endswith", "equals"]))
    if draw(st.booleans()):  # a variant of the value, case changed, inside filler
        body = "".join(draw(st.sampled_from(DASHES)) if ch in DASHES else
                       draw(st.sampled_from([ch.lower(), ch.upper()])) for ch in value)
        text = draw(st.text("ab-/ ", max_size=3)) + body + draw(st.text("ab-/ ", max_size=3))
    else:
        text = draw(st.text("aAbB-/\u2013\u2014\u2015 x", max_size=10))
    return value, mode, text


@FAST
@given(_windash_case())
def test_windash_agrees_with_spelled_out_variants(case):
    value, mode, text = case
    modifiers = ("windash",) if mode == "equals" else (mode, "windash")
    assert compiled(value, *modifiers)(text) == _windash_reference(value, mode, text)


# ---------------------------------------------------------------- utf16 / wide


def test_utf16_examples_of_the_specification():
    def byte_text(hexes):
        return bytes.fromhex(hexes).decode("latin-1")

    assert compiled("cmd", "utf16le")(byte_text("63 00 6d 00 64 00"))
    assert compiled("cmd", "wide")(byte_text("63 00 6d 00 64 00"))
    assert compiled("cmd", "utf16be")(byte_text("00 63 00 6d 00 64"))
    assert compiled("cmd", "utf16")(byte_text("FF FE 63 00 6d 00 64 00"))
    assert not compiled("cmd", "utf16")(byte_text("63 00 6d 00 64 00"))
    assert not compiled("cmd", "utf16le")("cmd")


def test_wide_keeps_wildcards():
    test = compiled("c*d", "wide")
    assert test("c\x00m\x00d\x00".replace("m\x00", "xyz"))
    assert test("c\x00m\x00d\x00")


@FAST
@given(st.text(string.ascii_letters + " ./", min_size=1, max_size=8), st.text("aB\x00 ", max_size=4),
       st.text("aB\x00 ", max_size=4), st.sampled_from(["utf16le", "utf16be", "utf16", "wide"]), st.booleans())
def test_utf16_agrees_with_the_codec(value, before, after, name, embed):
    codec = {"utf16le": "utf-16-le", "wide": "utf-16-le", "utf16be": "utf-16-be", "utf16": "utf-16-le"}[name]
    encoded = value.encode(codec)
    if name == "utf16":
        encoded = b"\xff\xfe" + encoded
    expected_text = encoded.decode("latin-1")
    text = before + (expected_text.upper() if embed else "") + after
    assert compiled(value, name, "contains")(text) == (expected_text.casefold() in text.casefold())


# ---------------------------------------------------------------- base64 / base64offset


def test_base64offset_forms_of_a_sigmahq_value():
    # The three forms SigmaHQ's rules listed by hand before the modifier existed.
    assert set(base64_offsets(b"::FromBase64String")) == {
        "OjpGcm9tQmFzZTY0U3RyaW5n", "o6RnJvbUJhc2U2NFN0cmluZ", "6OkZyb21CYXNlNjRTdHJpbm"}
    test = compiled("::FromBase64String", "base64offset", "contains")
    for prefix in (b"", b"a", b"ab", b"abc"):
        assert test("powershell -enc " + b64(prefix + b"[Convert]::FromBase64String($x)"))


def test_base64_is_compared_exactly_and_needs_no_wildcards():
    test = compiled("http://", "base64", "contains")
    assert test.needle == b64(b"http://")
    assert test("x " + b64(b"http://") + " y")
    assert not test("x " + b64(b"http://").lower() + " y")  # base64's letter case carries bits
    with pytest.raises(ModifierError, match="wildcards"):
        compiled("http*", "base64")
    with pytest.raises(ModifierError, match="at least 2 bytes"):
        compiled("a", "base64offset", "contains")


def test_wide_base64offset_finds_powershell_encoded_commands():
    test = compiled("Invoke-Expression", "wide", "base64offset", "contains")
    for prefix in ("", "x", "xy", "$a = 1; "):
        script = prefix + "Invoke-Expression (New-Object Net.WebClient)"
        assert test("powershell.exe -EncodedCommand " + b64(script.encode("utf-16-le")))
    assert not test("powershell.exe -EncodedCommand " + b64("Get-Date".encode("utf-16-le")))


def _static_forms(data: bytes) -> set:
    """Reference base64offset: for each shift, the characters of the encoding that stay the same
    whatever the neighbouring bytes (all bits 0, then all bits 1)."""
    forms = set()
    for shift in range(3):
        after = 3 + -(shift + len(data)) % 3  # whole groups: no padding character, which would not vary
        low = b64(b"\x00" * shift + data + b"\x00" * after)
        high = b64(b"\xff" * shift + data + b"\xff" * after)
        static = [i for i in range(len(low)) if low[i] == high[i]]
        assert static == list(range(static[0], static[-1] + 1))  # one run
        forms.add(low[static[0]:static[-1] + 1])
    return forms


_PLAIN = "".join(ch for ch in string.printable if ch not in "*?\\") + "\u00e9\u20ac"  # no wildcard syntax


@FAST
@given(st.binary(min_size=2, max_size=12))
def test_base64offset_forms_are_the_static_parts_of_every_encoding(data):
    assert set(base64_offsets(data)) == _static_forms(data)


@FAST
@given(st.text(_PLAIN, min_size=2, max_size=10), st.binary(max_size=5),
       st.binary(max_size=5), st.sampled_from([(), ("wide",), ("utf16be",)]))
def test_base64offset_finds_the_value_in_any_encoded_text(value, before, after, encoding):
    data = value.encode("utf-16-le" if encoding == ("wide",) else "utf-16-be" if encoding else "utf-8")
    assert compiled(value, *encoding, "base64offset", "contains")(b64(before + data + after))


@FAST
@given(st.text("ab", min_size=1, max_size=6), st.binary(max_size=8))
def test_base64_agrees_with_the_stdlib(value, noise):
    text = b64(noise) + b64(value.encode())
    assert compiled(value, "base64", "contains")(text) == (b64(value.encode()) in text)
    assert compiled(value, "base64")(b64(value.encode()))


# ---------------------------------------------------------------- lt / lte / gt / gte


def test_numeric_comparisons():
    assert compiled(10, "gt")("11") and not compiled(10, "gt")("10") and compiled(10, "gte")("10")
    assert compiled(10, "lt")("-3.5") and compiled(10, "lte")("1e1") and not compiled(10, "lt")("1e1")
    assert compiled(0.5, "lt")(" 0.25 ")
    for text in ("abc", "", "0x10", "NaN", "inf", "1_000", "10 apples", "true"):
        assert not compiled(0, "gt")(text) and not compiled(0, "lt")(text), text
    assert compiled(2**70, "lt")(str(2**70 + 1)) is False and compiled(2**70, "gt")(str(2**70 + 1))
    with pytest.raises(ModifierError, match="needs a number"):
        compiled("ten", "gt")
    with pytest.raises(ModifierError):
        compiled(True, "gt")


_NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


@FAST
@given(st.one_of(st.integers(-10**20, 10**20).map(str), st.decimals(allow_nan=False, allow_infinity=False,
                                                                    places=3).map(str),
                 st.floats(allow_nan=False, allow_infinity=False).map(repr), st.text("0123456789.-+eE x", max_size=6)),
       st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False)),
       st.sampled_from(["lt", "lte", "gt", "gte"]))
def test_numeric_comparisons_agree_with_fractions(text, bound, modifier):
    if _NUMBER_TEXT.fullmatch(text):
        number, limit = Fraction(text.strip()), Fraction(repr(bound) if isinstance(bound, float) else bound)
        expected = {"lt": number < limit, "lte": number <= limit, "gt": number > limit,
                    "gte": number >= limit}[modifier]
    else:
        expected = False
    assert compiled(bound, modifier)(text) == expected


# ---------------------------------------------------------------- neq


def test_neq_is_the_field_differing_from_every_value():
    assert selects({"User|neq": "SYSTEM"}, {"User": "bob"})
    assert not selects({"User|neq": "SYSTEM"}, {"User": "system"})  # caseless like any value
    assert not selects({"User|neq": ["a", "b"]}, {"User": "b"})
    assert selects({"User|neq": ["a", "b"]}, {"User": "c"})
    assert not selects({"User|neq": "a"}, {"Other": "x"})  # an absent field differs from nothing
    assert not selects({"User|neq": "a"}, {"User": None})
    assert selects({"EventID|neq": 4624}, {"EventID": 4625})
    assert not selects({"EventID|neq": 4624}, {"EventID": "4624"})
    assert selects({"Image|neq|endswith": "\\cmd.exe"}, {"Image": "C:\\x\\powershell.exe"})
    assert not selects({"Image|neq|endswith": "\\cmd.exe"}, {"Image": "C:\\x\\CMD.EXE"})


@FAST
@given(st.lists(st.text("aAb", max_size=2), min_size=1, max_size=3), st.text("aAb", max_size=2))
def test_neq_is_the_complement_of_equality(values, field_value):
    assert selects({"F|neq": values}, {"F": field_value}) == all(field_value.casefold() != v.casefold()
                                                                 for v in values)


@FAST
@given(st.lists(st.text("aAb", max_size=2), min_size=1, max_size=3),
       st.lists(st.text("aAb", max_size=2), max_size=3), st.booleans())
def test_neq_on_a_list_is_the_complement_of_equality_on_the_list(values, leaves, nested):
    """A field holding several strings matches a value when one of them does; so ``|neq`` holds
    when none of them matches any value (an empty list: none does)."""
    field_value = {"x": leaves} if nested else leaves
    equal = selects({"F": values}, {"F": field_value})
    assert equal == any(leaf.casefold() == v.casefold() for leaf in leaves for v in values)
    assert selects({"F|neq": values}, {"F": field_value}) == (not equal)



@FAST
@given(st.lists(st.text("aAb", min_size=1, max_size=2), min_size=1, max_size=3),
       st.one_of(st.text("aAb", max_size=3), st.lists(st.text("aAb", max_size=2), max_size=3)),
       st.sampled_from(["", "|contains"]))
def test_neq_all_is_the_negation_of_all(values, field_value, mode):
    """``|neq`` negates what the key would say without it; with ``|all`` that is "not every value
    matches" (pySigma: NOT of the AND), not "no value matches" as ``|all`` was once ignored."""
    every = selects({f"F{mode}|all": values}, {"F": field_value})
    assert selects({f"F{mode}|neq|all": values}, {"F": field_value}) == (not every)
    assert not selects({f"F{mode}|neq|all": values}, {"F": None})
    assert not selects({f"F{mode}|neq|all": values}, {"G": field_value})


def test_neq_all_on_a_command_line():
    selection = {"CommandLine|neq|contains|all": [" -a", " -b"]}
    assert selects(selection, {"CommandLine": "tool -a"})  # it does not hold both
    assert not selects(selection, {"CommandLine": "tool -A -b"})
    assert not selects({"A|fieldref|neq|all": ["B", "C"]}, {"A": "x", "B": "X", "C": "x"})
    assert selects({"A|fieldref|neq|all": ["B", "C"]}, {"A": "x", "B": "x", "C": "y"})
    assert not selects({"A|fieldref|neq": ["B", "C"]}, {"A": "x", "B": "x", "C": "y"})

# ---------------------------------------------------------------- date parts


def test_date_parts_read_the_date_as_written():
    text = "2024-12-30T23:59:58.1234567Z"
    assert compiled(23, "hour")(text) and compiled(59, "minute")(text) and compiled(30, "day")(text)
    assert compiled(12, "month")(text) and compiled(2024, "year")(text)
    assert compiled(1, "week")(text)  # ISO week 1 of 2025
    assert compiled(23, "hour")("2024-12-30 23:00:00+05:00")  # the zone is not applied
    assert not compiled(0, "hour")("2024-12-30")  # no time: no hour
    assert compiled(30, "day")("2024-12-30")
    assert compiled(22, "hour", "gte")("2024-01-01T22:10:00Z") and not compiled(22, "hour", "gte")("2024-01-01T21:10")
    assert compiled(3, "hour", "neq")("2024-01-01T04:00:00")
    assert compiled(23, "hour")("2016-12-31T23:59:60Z") and compiled(1, "hour")("2024-01-01T01:00+02")
    # a second or a zone out of range is no time either (they were read past: 10:00:99 was hour 10)
    for text in ("yesterday", "2024-13-01T00:00", "2024-02-30", "1700000000", "2024-01-01T25:00", "2024-01-01x",
                 "2024-01-01T01:00:99Z", "2024-01-01T01:00:61", "2024-01-01T01:00:00+24:00", "2024-01-01T01:00+0199"):
        assert not compiled(1, "month")(text) and not compiled(2, "month")(text), text


@FAST
@given(st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1)),
       st.sampled_from(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S+02:00"]),
       st.sampled_from(["minute", "hour", "day", "week", "month", "year"]), st.integers(0, 60))
def test_date_parts_agree_with_datetime(moment, layout, part, bound):
    text = moment.strftime(layout)
    value = {"minute": moment.minute, "hour": moment.hour, "day": moment.day, "week": moment.isocalendar()[1],
             "month": moment.month, "year": moment.year}[part]
    assert compiled(value, part)(text)
    low, high = PART_RANGES.get(part, (bound, bound))
    if low <= bound <= high:
        assert compiled(bound, part)(text) == (value == bound)
    else:  # a part it can never be: a rule error, not a test that never holds
        with pytest.raises(ModifierError, match=f"{part} takes a whole number from {low} to {high}"):
            compiled(bound, part)
    assert compiled(bound, part, "lt")(text) == (value < bound)


# ---------------------------------------------------------------- cidr


def test_cidr_example_of_the_specification():
    test = compiled("10.0.0.0/8", "cidr")
    assert test("10.1.2.3") and test(" 10.255.255.255 ") and not test("11.0.0.1") and not test("10.0.0.1:443")
    assert test("::ffff:10.1.2.3")  # an IPv4-mapped address is its IPv4 address
    v6 = compiled("fe80::/10", "cidr")
    assert v6("fe80::1") and v6("FE80::abcd%eth0") and not v6("10.1.2.3") and not v6("2001:db8::1")
    with pytest.raises(ModifierError, match="not an IP network"):
        compiled("10.0.0.1/8", "cidr")
    with pytest.raises(ModifierError):
        compiled("10.0.0.0/33", "cidr")


@st.composite
def _address(draw):
    if draw(st.booleans()):
        return ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    return ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))


@st.composite
def _network(draw):
    address = draw(_address())
    return ipaddress.ip_network(f"{address}/{draw(st.integers(0, address.max_prefixlen))}", strict=False)


@FAST
@given(_network(), st.one_of(_address().map(str), _address().map(lambda a: f"::ffff:{a}" if a.version == 4 else str(a)),
                             st.text("0123456789.:abcdef/", max_size=12)))
def test_cidr_agrees_with_ipaddress(network, text):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        expected = False
    else:
        if address.version == 6 and address.ipv4_mapped is not None and network.version == 4:
            address = address.ipv4_mapped
        expected = address.version == network.version and address in network
    assert compiled(str(network), "cidr")(text) == expected


def test_cidr_in_a_rule_ors_the_networks():
    selection = {"DestinationIp|cidr": ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]}
    assert selects(selection, {"DestinationIp": "10.9.9.9"}) and selects(selection, {"DestinationIp": "::1"})
    assert not selects(selection, {"DestinationIp": "8.8.8.8"})
    assert not selects(selection, {"DestinationIp": "localhost"})


# ---------------------------------------------------------------- expand


PLACEHOLDERS = {"Workstations": ("WS-*", "LAPTOP1"), "Admins": ("root",), "none": ()}


def test_expand_fills_placeholders_from_the_file():
    assert selects({"ComputerName|expand": "%Workstations%"}, {"ComputerName": "ws-0042"}, PLACEHOLDERS)
    assert selects({"ComputerName|expand": "%Workstations%"}, {"ComputerName": "laptop1"}, PLACEHOLDERS)
    assert not selects({"ComputerName|expand": "%Workstations%"}, {"ComputerName": "srv1"}, PLACEHOLDERS)
    assert selects({"User|expand|contains": "\\\\%Admins%"}, {"User": "x\\ROOT y"}, PLACEHOLDERS)  # \\ then %Admins%
    # \% is a plain percent sign (beside a placeholder: alone, see the escaped-only test below)
    assert compiled("\\%Admins% %Admins%", "expand", placeholders=PLACEHOLDERS)("%Admins% root")
    assert not selects({"User|expand": "%none%"}, {"User": "x"}, PLACEHOLDERS)
    # the specification's example: \%plain%name% is '%plain' then the placeholder
    test = compiled("\\%plain%Admins%", "expand", placeholders=PLACEHOLDERS)
    assert test("%plainroot") and not test("\\%plainroot")
    assert compiled("100%", "expand", "contains", placeholders={})("it is 100% done")
    assert compiled("%20-%", "expand", placeholders={"20-": ("x",)})("x")


def test_expand_errors_name_the_placeholder_or_the_option():
    message = rule_error({"sel": {"ComputerName|expand": "%Workstations%"}, "condition": "sel"})
    assert "needs --placeholders FILE" in message and "ComputerName" in message
    message = rule_error({"sel": {"ComputerName|expand": "%Servers%"}, "condition": "sel"}, PLACEHOLDERS)
    assert "%Servers%" in message and "not defined" in message


@FAST
@given(st.dictionaries(st.sampled_from(["a", "b_1", "C-2"]), st.lists(st.text("xyZ", max_size=3), max_size=3),
                       min_size=1), st.text("pq", max_size=2), st.data(), st.text("pq", max_size=2),
       st.text("pqxyZ", max_size=7))
def test_expand_agrees_with_substitution(table, before, data, after, text):
    name = data.draw(st.sampled_from(sorted(table)))
    placeholders = {key: tuple(values) for key, values in table.items()}
    test = compiled(f"{before}%{name}%{after}", "expand", placeholders=placeholders)
    expected = any(text.casefold() == f"{before}{v}{after}".casefold() for v in table[name])
    assert test(text) == expected


def _sigma_regex(text):
    """The reference: a Sigma string as a regex (a backslash escapes *, ? and itself, else is literal)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 2] in ("*", "?", "\\"):
            out.append(re.escape(text[i + 1]))
            i += 2
            continue
        out.append(".*" if text[i] == "*" else "." if text[i] == "?" else re.escape(text[i]))
        i += 1
    return "".join(out)


@FAST
@given(st.text("a\\*?", max_size=4), st.text("a\\*?", max_size=4), st.text("a\\*?", max_size=4),
       st.text("a\\*?", max_size=6))
def test_a_placeholder_value_is_a_sigma_value_of_its_own(before, value, after, text):
    """Each piece keeps its own escapes: a value ending in a backslash (``CORP\\``) does not escape the
    rule's ``*`` after it (it did: ``CORP\\alice`` was missed and the text ``CORP*`` matched)."""
    before = before.rstrip("\\") + ("\\\\" if before.endswith("\\") else "")  # the rule's text: no bare \ before %
    test = compiled(f"{before}%v%{after}", "expand", "cased", placeholders={"v": (value,)})
    expected = re.fullmatch(_sigma_regex(before) + _sigma_regex(value) + _sigma_regex(after), text, re.DOTALL)
    assert test(text) == bool(expected)


def test_a_placeholder_value_ending_in_a_backslash_leaves_the_next_wildcard_one():
    test = compiled("%Dom%*", "expand", placeholders={"Dom": ("CORP\\",)})
    assert test("CORP\\alice") and test("corp\\") and not test("CORP*") and not test("CORPalice")
    assert not compiled("%Dom%x", "expand", placeholders={"Dom": ("CORP\\",)})("CORPx")


def test_placeholders_file(tmp_path):
    path = tmp_path / "placeholders.yml"
    path.write_text("Workstations: ['WS-*', 'LAPTOP1']\n'%Admins%': root\nports: [80, 443]\n")
    assert load_placeholders(str(path)) == {"Workstations": ("WS-*", "LAPTOP1"), "Admins": ("root",),
                                            "ports": ("80", "443")}
    for text in ("[a, b]\n", "a: {b: c}\n", "'bad name': x\n", "a: x\na: y\n", "a: [\n", "a: 2001-13-45\n",
                 "a: " + "7" * 5001 + "\n"):  # the last two: a ValueError of the YAML scalar escaped as a traceback
        path.write_text(text)
        with pytest.raises(PlaceholderError):
            load_placeholders(str(path))
    with pytest.raises(PlaceholderError, match="cannot read"):
        load_placeholders(str(tmp_path / "absent.yml"))


def test_an_expand_value_whose_only_placeholder_is_no_name_we_read_is_an_error():
    """pySigma reads ``%Domain Admins%`` as a placeholder (and refuses it when undefined); here it was plain
    text, so ``|expand: '%Domain Admins%'`` matched that literal text and never the admins, in silence."""
    for value in ("%Domain Admins%", "CORP\\\\%Domain Admins%", "%a:b%x"):
        with pytest.raises(ModifierError, match="is no placeholder name"):
            compiled(value, "expand", placeholders={"Admins": ("root",)})
    # a lone percent sign, an escaped one, or a placeholder we read beside it stay as they were
    assert compiled("100%", "expand", "contains", placeholders={})("it is 100% done")
    assert compiled("\\%Domain Admins\\%", "expand", placeholders={})("%Domain Admins%")
    assert compiled("50 % or %Admins%", "expand", placeholders={"Admins": ("root",)})("50 % or root")


def test_an_expand_value_whose_only_placeholder_is_escaped_is_an_error():
    """``C:\\Users\\%admins%\\Desktop``: pySigma reads a backslash then the placeholder, the specification's
    ``\\%`` a plain percent sign, so here the value had no placeholder and matched its own text, in silence."""
    with pytest.raises(ModifierError, match=r"no placeholder: .*escaped"):
        compiled("C:\\Users\\%admins%\\Desktop", "expand", placeholders={"admins": ("bob",)})
    test = compiled("C:\\Users\\\\%admins%\\Desktop", "expand", placeholders={"admins": ("bob",)})
    assert test("C:\\Users\\bob\\Desktop")
    # the specification's example: an escaped percent sign beside a placeholder
    assert compiled("\\%plain%admins%", "expand", placeholders={"admins": ("bob",)})("%plainbob")


def test_a_placeholders_files_numbers_are_values_as_written_as_a_rules_are(tmp_path):
    """``0755`` in a rule compares as the text 0755; in the placeholders file it was YAML 1.1's 493
    (``12:30`` was 750), so ``FileMode|expand: '%modes%'`` missed the very mode it named."""
    path = tmp_path / "placeholders.yml"
    path.write_text("modes: [0755, 0x1F, 12:30, 1.10, 7]\n")
    table = load_placeholders(str(path))
    assert table == {"modes": ("0755", "0x1F", "12:30", "1.10", "7")}
    assert selects({"FileMode|expand": "%modes%"}, {"FileMode": "0755"}, table)
    assert not selects({"FileMode|expand": "%modes%"}, {"FileMode": "493"}, table)


def test_a_placeholder_written_with_and_without_its_percent_signs_is_given_twice(tmp_path):
    """``'%a%'`` and ``a`` are two YAML keys but one placeholder: the last one won, in silence."""
    path = tmp_path / "placeholders.yml"
    path.write_text("'%Admins%': [bob]\nAdmins: [carol]\n")
    with pytest.raises(PlaceholderError, match="'Admins' is given twice"):
        load_placeholders(str(path))


# ---------------------------------------------------------------- fieldref


def test_fieldref_compares_two_fields_of_the_event():
    assert selects({"TargetFilename|fieldref": "Image"}, {"TargetFilename": "C:\\a.exe", "Image": "c:\\A.EXE"})
    assert not selects({"TargetFilename|fieldref": "Image"}, {"TargetFilename": "C:\\a.exe", "Image": "C:\\b.exe"})
    assert not selects({"TargetFilename|fieldref": "Image"}, {"TargetFilename": "C:\\a.exe"})
    assert not selects({"TargetFilename|fieldref": "Image"}, {"Image": "C:\\a.exe"})
    assert selects({"User|fieldref|neq": "ParentUser"}, {"User": "a", "ParentUser": "b"})
    assert not selects({"User|fieldref|neq": "ParentUser"}, {"User": "a", "ParentUser": "A"})
    assert not selects({"User|fieldref|neq": "ParentUser"}, {"User": "a"})
    assert selects({"CommandLine|fieldref|contains": "Image"},
                   {"CommandLine": "\"C:\\x.exe\" -a", "Image": "C:\\X.exe"})
    assert selects({"CommandLine|fieldref|startswith": "Image"}, {"CommandLine": "C:\\x.exe -a", "Image": "C:\\x.exe"})
    assert not selects({"A|fieldref|cased": "B"}, {"A": "x", "B": "X"})
    assert selects({"A|fieldref": ["B", "C"]}, {"A": "x", "B": "y", "C": "x"})
    assert not selects({"A|fieldref|all": ["B", "C"]}, {"A": "x", "B": "y", "C": "x"})


@FAST
@given(st.text("aAb*", max_size=3), st.text("aAb*", max_size=3),
       st.sampled_from(["equals", "contains", "startswith", "endswith"]), st.booleans())
def test_fieldref_agrees_with_string_operations(mine, theirs, mode, negate):
    key = "A|fieldref" + ("" if mode == "equals" else "|" + mode) + ("|neq" if negate else "")
    a, b = mine.casefold(), theirs.casefold()
    held = {"equals": a == b, "contains": b in a, "startswith": a.startswith(b), "endswith": a.endswith(b)}[mode]
    assert selects({key: "B"}, {"A": mine, "B": theirs}) == (held != negate)


# ---------------------------------------------------------------- '|all': keywords


def test_all_keywords_of_the_specification():
    selection = {"|all": ["OabVirtualDirectory", " -ExternalUrl "]}
    assert selects(selection, {"Payload": "Set-OabVirtualDirectory -ExternalUrl 'http://x'"})
    assert selects(selection, {"a": "set-oabvirtualdirectory", "b": {"c": "x -externalurl y"}})
    assert not selects(selection, {"Payload": "Set-OabVirtualDirectory -InternalUrl x"})


def test_all_keywords_beside_fields_and_in_sigmahq_shapes():
    selection = {"EventID": 1, "|all": ["grep", "password"]}
    assert selects(selection, {"EventID": 1, "cmd": "grep -r password /etc"})
    assert not selects(selection, {"EventID": 2, "cmd": "grep -r password /etc"})
    assert selects({"|all|windash": ["truncate", " -s"]}, {"cmd": "truncate /s 0 x"})
    assert selects({"|contains": "x"}, {"a": "yxy"})


def test_keyword_keys_refuse_modifiers_that_need_a_field():
    for key in ("|startswith", "|neq", "|cidr", "|gt", "|fieldref", "|exists"):
        message = rule_error({"sel": {key: "x" if key != "|exists" else True}, "condition": "sel"})
        assert "needs a field name" in message or "exists" in message, message


# ---------------------------------------------------------------- rule errors


@pytest.mark.parametrize("key, value, needles", [
    ("a|frobnicate", "x", ["unknown modifier", "frobnicate", "'a'"]),
    ("a|startswith|endswith", "x", ["startswith", "endswith", "contradict"]),
    ("a|re|contains", "x", ["contains", "|re"]),
    ("a|cidr|contains", "10.0.0.0/8", ["contains", "cidr"]),
    ("a|lt|gt", 3, ["lt", "gt", "contradict"]),
    ("a|gt|neq", 3, ["gt", "neq"]),
    ("a|hour|day", 3, ["hour", "day"]),
    ("a|re|cased|i", "x", ["cased", "|i"]),
    ("a|contains|i", "x", ["only applies to |re"]),
    ("a|re", "(a)\\1", ["bad pattern"]),
    ("a|base64", "a*", ["|base64", "wildcards"]),
    ("a|base64offset|contains", "a", ["base64offset", "2 bytes"]),
    # windash after an encoding has no dash of the text left to rewrite (it crashed spelling an en dash
    # into UTF-16 bytes for base64)
    ("a|wide|windash|base64offset|contains", "a-enc", ["windash", "before |wide"]),
    ("a|utf16be|windash|contains", "a-enc", ["windash", "before |utf16be"]),
    ("a|base64|windash", "a-enc", ["windash", "before |base64"]),
    # in the order written, contains' wildcards would be base64-encoded (pySigma refuses it): it loaded as
    # base64offset|contains, another rule than the one written
    ("a|contains|base64offset", "hello", ["|contains must come after |base64offset"]),
    ("a|startswith|wide|base64", "hello", ["|startswith must come after |base64"]),
    ("a|windash|wide|windash|base64", "/", ["windash", "before |wide"]),
    ("a|cidr", "10.0.0.300/8", ["cidr", "not an IP network"]),
    ("a|gte", "ten", ["gte", "needs a number"]),
    # a part it can never be loaded and never matched
    ("a|hour", 14.5, ["|hour takes a whole number from 0 to 23", "14.5"]),
    ("a|month", 13, ["|month takes a whole number from 1 to 12"]),
    ("a|year", 2026.5, ["|year takes a whole number"]),
    ("a|fieldref", 3, ["fieldref", "name of another field"]),
    ("a|neq", [None, "x"], ["null", "neq"]),
    # null is a field's absence, no value a modifier applies to: these loaded as a plain null check (pySigma
    # refuses each), so ``|re: null`` matched every event without the field
    ("a|re", None, ["null", "|re", "'a': null"]),
    ("a|re|i", ["x", None], ["null", "|re"]),
    ("a|cidr", None, ["null", "|cidr"]),
    ("a|gt", None, ["null", "|gt"]),
    ("a|hour", None, ["null", "|hour"]),
    ("a|contains", ["x", None], ["null", "|contains"]),
    ("a|startswith|all", ["x", None], ["null", "|startswith"]),
    ("a|cased", None, ["null", "|cased"]),
    ("a|windash", None, ["null", "|windash"]),
    ("a|base64offset|contains", None, ["null", "|base64offset"]),
    ("a|expand", None, ["null", "|expand"]),
    ("a|exists|contains", True, ["contains", "exists"]),
])
def test_modifier_errors_are_one_line_naming_field_and_modifier(key, value, needles):
    message = rule_error({"sel": {key: value}, "condition": "sel"})
    for needle in needles:
        assert needle in message, (needle, message)
    assert "'sel'" in message


@pytest.mark.parametrize("key, written, needles", [
    # YAML turns unquoted digits into a number first: under |contains, 0755 was searched as "493"
    ("a|contains", "12", ["|contains applies to text", "number 12", "quote"]),
    ("a|contains", "0755", ["|contains applies to text", "number 0755", "quote"]),  # as written, not 493
    ("a|startswith", "[1.10, x]", ["|startswith applies to text", "number 1.1"]),
    ("a|endswith", "yes", ["|endswith applies to text", "boolean true"]),
    ("a|re", "12", ["|re applies to text"]),  # pySigma keeps it, as a pattern that is a number
    ("a|re|i", "1.5", ["|re applies to text"]),
    ("a|windash", "12", ["|windash applies to text"]),
    ("a|base64offset|contains", "123", ["applies to text"]),
    ("a|cased", "12", ["|cased applies to text"]),
    ("a|neq|contains", "12", ["|contains applies to text"]),
    ("|contains", "12", ["|contains applies to text"]),
    ("a|expand", "12", ["|expand applies to text"]),
    # a comparison takes a number as YAML writes one, not the text '12' (pySigma refuses it too)
    ("a|gt", "'12'", ["|gt compares numbers", "write 12 unquoted", "'12'"]),
    ("a|lte", "[1, ' 2 ']", ["|lte compares numbers", "write 2 unquoted"]),
    ("a|hour", "'3'", ["|hour compares numbers"]),
    ("a|month|gte", "'10'", ["|month compares numbers"]),
    ("a|gt", "12abc", ["|gt needs a number, not '12abc'"]),
    ("a|lt", "true", ["|lt needs a number, not true"]),
    ("a|gte", "'0x10'", ["|gte needs a number"]),
])
def test_a_value_of_the_wrong_type_for_its_modifier_is_a_rule_error(key, written, needles):
    text = f"title: t\ndetection:\n  sel:\n    '{key}': {written}\n  condition: sel\n"
    with pytest.raises(RuleError) as excinfo:
        compile_plan(parse_rule(text, SOURCE))
    message = str(excinfo.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert "'sel'" in message and "\n" not in message


@pytest.mark.parametrize("selection, needles", [
    ({"a": []}, ["'a' has an empty list of values"]),
    ({"a|neq": []}, ["'a|neq' has an empty list of values"]),
    ({"a|fieldref|neq": []}, ["'a|fieldref|neq' has an empty list of values"]),
    ({"a|contains|all": []}, ["'a|contains|all' has an empty list of values"]),
    ({"a|cidr": []}, ["'a|cidr' has an empty list of values"]),
    ({"a|gt": []}, ["'a|gt' has an empty list of values"]),
    ({"|all": []}, ["'|all' has an empty list of values"]),
    ({"a|exists": []}, ["needs true or false"]),
    ([], ["an empty list (of keywords or of mappings)"]),
    ({"x": "y", "a|re": []}, ["'a|re' has an empty list of values"]),
])
def test_an_empty_list_of_values_is_a_rule_error(selection, needles):
    """pySigma keeps each of these with no value at all, which reads as never (an empty or), always (an
    empty and, |neq of nothing) or as its backend pleases: refused, naming the key."""
    message = rule_error({"sel": selection, "condition": "sel"})
    for needle in needles:
        assert needle in message, (needle, message)


def test_numbers_keep_their_meaning_where_no_modifier_reads_them_as_text():
    """Equality, |neq, |all and keywords compare a number by its text (EventID: 4688), as pySigma does."""
    assert selects({"a": 12}, {"a": "12"}) and selects({"a": 12}, {"a": 12})
    assert selects({"a|neq": 12}, {"a": "13"}) and not selects({"a|neq": 12}, {"a": 12})
    assert selects({"a|all": [12]}, {"a": ["12", "x"]})
    assert selects(["4688"], {"a": "id 4688"}) and selects([4688], {"a": "id 4688"})
    assert selects({"|all": [12, "x"]}, {"a": "x 12"})
    assert selects({"a|gt": 12}, {"a": "13"}) and selects({"a|gte": 1.5}, {"a": 1.5})


@pytest.mark.parametrize("selection", [{"a": float("nan")}, {"a": [1, float("inf")]}, ["x", float("-inf")],
                                       {"a|contains": float("nan")}])
def test_yaml_nan_and_inf_are_not_values(selection):
    """YAML's .nan and .inf compared as the text "nan" / "inf" (pySigma refuses them: not a number)."""
    message = rule_error({"sel": selection, "condition": "sel"})
    assert "is not a number" in message and "quoted" in message


def test_float_values_compare_as_pysigma_renders_them():
    """pySigma keeps a YAML float that is whole as an int (``1.0`` is 1, rendered "1"), any other as
    the float's shortest text; an event's JSON number reads the same way (``values.leaves``)."""
    assert selects({"a": 1.0}, {"a": "1"}) and selects({"a": 1.0}, {"a": 1}) and selects({"a": 1.0}, {"a": 1.0})
    assert not selects({"a": 1.0}, {"a": "1.0"})
    assert selects({"a": 1.5}, {"a": "1.5"}) and selects({"a": 1.5}, {"a": 1.50})
    assert not selects({"a": 1.5}, {"a": "1"})
    assert selects({"a": 1e20}, {"a": "100000000000000000000"}) and selects({"a": 1e-05}, {"a": "1e-05"})


def test_null_under_all_alone_still_loads():
    """|all is the one modifier a null value takes (pySigma too): all of the values, null among them."""
    assert selects({"a|all": None}, {"b": "x"}) and not selects({"a|all": None}, {"a": "x"})
    # x and null at once: no field is both (it matched a field holding x, the null left out)
    assert not selects({"a|all": ["x", None]}, {"a": "x"}) and not selects({"a|all": ["x", None]}, {})
    assert not selects({"a|all": ["x", None]}, {"a": ["x", None]})


def test_every_known_modifier_has_a_use():
    used = {"windash", "utf16le", "utf16be", "utf16", "wide", "base64", "base64offset", "lt", "lte", "gt", "gte",
            "neq", "minute", "hour", "day", "week", "month", "year", "cidr", "expand", "fieldref", "contains",
            "startswith", "endswith", "re", "cased", "all", "exists", "i", "ignorecase", "m", "multiline", "s",
            "dotall"}
    assert used == KNOWN_MODIFIERS


# ---------------------------------------------------------------- literals: what the prefilter relies on


_CHAINS = [
    ("contains",), ("startswith",), ("endswith",), (), ("cased", "contains"),
    ("contains", "windash"), ("windash",), ("endswith", "windash"), ("windash", "cased"),
    ("base64",), ("base64", "contains"), ("base64offset", "contains"), ("wide", "base64offset", "contains"),
    ("utf16", "base64offset", "contains"), ("utf16be", "base64", "contains"), ("wide", "contains"),
    ("utf16le",), ("windash", "base64offset", "contains"), ("windash", "wide", "contains"),
    ("expand", "contains"), ("expand", "windash"), ("neq",), ("neq", "contains"),
    ("re",), ("re", "i"), ("cidr",), ("gt",), ("lte",), ("hour",), ("month", "gte"),
]
_LITERAL_PLACEHOLDERS = {"p": ("x-1", "Yy", "z*z")}


def _instance(draw, value, chain):
    """A text the chain should match (for the text-valued chains), else a random one."""
    if any(m in chain for m in ("neq", "re", "cidr", "gt", "lte", "hour", "month")) or "*" in value or "?" in value:
        return draw(st.text("aB-/\u2013 xYz0.1:T", max_size=14))
    if "expand" in chain:
        value = value.replace("%p%", draw(st.sampled_from(["x-1", "Yy", "zqqz"])))
    if "windash" in chain:
        value = "".join(draw(st.sampled_from(DASHES)) if ch in DASHES else ch for ch in value)
    body = value
    for name in chain:
        if name in ("wide", "utf16le", "utf16be", "utf16"):
            data = body.encode("utf-16-be" if name == "utf16be" else "utf-16-le")
            body = (("\xff\xfe" if name == "utf16" else "") + data.decode("latin-1"))
        elif name in ("base64", "base64offset"):
            data = body.encode("latin-1") if any(n in chain for n in ("wide", "utf16le", "utf16be", "utf16")) \
                else body.encode()
            prefix = draw(st.binary(max_size=3)) if name == "base64offset" else b""
            body = b64(prefix + data + (draw(st.binary(max_size=3)) if name == "base64offset" else b""))
    if not any(m in chain for m in ("base64", "base64offset", "cased")):
        body = "".join(draw(st.sampled_from([ch.lower(), ch.upper()])) for ch in body)
    if "contains" in chain or "base64offset" in chain:
        return draw(st.text("ab ", max_size=3)) + body + draw(st.text("ab ", max_size=3))
    if "startswith" in chain:
        return body + draw(st.text("ab ", max_size=3))
    if "endswith" in chain:
        return draw(st.text("ab ", max_size=3)) + body
    return body


@st.composite
def _literal_case(draw):
    chain = draw(st.sampled_from(_CHAINS))
    if "cidr" in chain:
        value = draw(st.sampled_from(["10.0.0.0/8", "::/0", "1.2.3.4"]))
    elif any(m in chain for m in ("gt", "lte", "hour", "month")):
        value = draw(st.integers(0, 12))
    else:
        value = draw(st.text("aB-/\u2013 xYz\u00df\u0130*?", min_size=2, max_size=6))
        if "expand" in chain:
            value = draw(st.sampled_from(["", "q", "a-"])) + "%p%" + draw(st.sampled_from(["", "-r"]))
        if any(m in chain for m in ("base64", "base64offset")):
            value = value.replace("*", "").replace("?", "") + "ab"
    return chain, value, _instance(draw, value, chain)


@FAST
@given(_literal_case())
def test_a_matched_text_holds_one_of_the_literals(case):
    chain, value, text = case
    try:
        test = compiled(value, *chain, placeholders=_LITERAL_PLACEHOLDERS)
    except (ModifierError, PatternError):  # e.g. a regex RE2 refuses
        assume(False)
    if "*" not in str(value) and "?" not in str(value) and not any(
            m in chain for m in ("neq", "re", "cidr", "gt", "lte", "hour", "month")):
        assert test(text), (chain, value, text)  # the instance was built to match
    lits = test.literals()
    if test(text) and lits is not None:
        assert lits and any(literal in text.casefold() for literal in lits), (chain, value, text, lits)
    for literal in lits or ():
        assert literal == literal.casefold()


def test_typed_and_negated_tests_have_no_literal():
    for chain, value in ((("cidr",), "10.0.0.0/8"), (("gt",), 3), (("hour",), 3), (("neq",), "x"), (("re",), "x")):
        assert compiled(value, *chain).literals() is None


# ---------------------------------------------------------------- the command line


RULE_WITH_PLACEHOLDER = """title: admin logon
id: 11111111-2222-3333-4444-555555555555
logsource: {product: windows}
detection:
    sel:
        User|expand: '%Admins%'
    condition: sel
"""


def test_cli_placeholders_option(tmp_path):
    rule = tmp_path / "rules" / "admin.yml"
    rule.parent.mkdir()
    rule.write_text(RULE_WITH_PLACEHOLDER)
    (tmp_path / "rules" / "other.yml").write_text(RULE_WITH_PLACEHOLDER.replace("1111", "9999")
                                                  .replace("User|expand: '%Admins%'", "User: bob"))
    table = tmp_path / "placeholders.yml"
    table.write_text("Admins: [root, 'adm-*']\n")
    events = ndjson([{"User": "ADM-eve"}, {"User": "mallory"}, {"User": "root"}])
    result = run_cli(["--rule", str(rule), "--placeholders", str(table), "--emit", "matches", "--quiet"], events)
    assert result.returncode == 0, result.stderr
    assert [r["User"] for r in records(result.stdout) if "User" in r] == ["ADM-eve", "root"]

    result = run_cli(["--rule", str(rule)], events)  # a rule file of its own: a usage error
    assert result.returncode == 2 and b"needs --placeholders FILE" in result.stderr
    result = run_cli(["--rule", str(rule.parent), "--quiet"], events)  # in a directory: skipped in one line
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if b"skipped" in line]
    assert len(skipped) == 1 and b"admin.yml" in skipped[0] and b"--placeholders" in skipped[0]

    table.write_text("Servers: [x]\n")
    result = run_cli(["--rule", str(rule), "--placeholders", str(table)], events)
    assert result.returncode == 2 and b"%Admins%" in result.stderr
    result = run_cli(["--rule", str(rule), "--placeholders", str(tmp_path / "absent.yml")], events)
    assert result.returncode == 2 and b"placeholders" in result.stderr


# ---------------------------------------------------------------- hostile chains


_ANY_VALUE = st.one_of(st.text("ab-/*?\\%\u2013 1.:", max_size=8), st.integers(-10**20, 10**20), st.booleans(),
                       st.none(), st.floats(), st.just("10.0.0.0/8"), st.just("%p%"), st.just("-" * 40))


@FAST
@given(st.lists(st.sampled_from(sorted(KNOWN_MODIFIERS) + ["bogus", ""]), max_size=4), st.sampled_from(["F", ""]),
       st.one_of(_ANY_VALUE, st.lists(_ANY_VALUE, max_size=3)), st.sampled_from([None, {"p": ("x", "y-*")}]),
       st.lists(st.text("ab-/1.:T\ud800 ", max_size=12), min_size=1, max_size=3))
def test_any_modifier_chain_is_a_rule_error_or_a_working_selection(modifiers, field, value, placeholders, texts):
    key = field + "".join("|" + m for m in modifiers)
    if not key:
        return
    text = yaml.safe_dump({"title": "t", "detection": {"sel": {key: value}, "condition": "sel"}})
    try:
        plan = compile_plan(parse_rule(text, SOURCE), placeholders=placeholders)
    except RuleError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000, str(error)
        return
    for leaf in texts:
        plan.match(RESOLVER.view({"F": leaf, "G": [leaf, 3]}))


# ---------------------------------------------------------------- |re's $ as PCRE reads it


_RE_PARTS = st.sampled_from(["a", "b", ".", "$", "^", "[ab]", "[$]", r"\$", "[^]a]", "a*", "(?:a|b$)", "b?", "m",
                             r"\(?", r"\)", "[(?m]", "(?m:a$)", "(?-m:b$)", "(?i:a$)", "(?s:.$)"])


# Of the parts above, those holding a ``$`` read without ``m`` (by the flags given), and the one a ``$``
# may be followed by and still end the match (another ``$``): any other part after such a ``$`` reads on.
_NON_M_DOLLARS = {"": {"$", "(?:a|b$)", "(?-m:b$)", "(?i:a$)", "(?s:.$)"}, "m": {"(?-m:b$)"}}


@FAST
@given(st.lists(_RE_PARTS, min_size=1, max_size=5), st.text("ab$\n", max_size=6), st.sampled_from(["", "i", "m", "s"]))
def test_re_dollar_is_pcres(parts, text, flags):
    """Sigma's regexes are PCRE: without ``m`` a ``$`` holds at the end or before a final newline
    (RE2's only at the end).  Python's ``re`` reads these patterns as PCRE does.  A ``$`` that more
    pattern follows is refused (RE2 cannot say "before a final newline" and go on reading), and only
    such a one."""
    pattern = "".join(parts)
    dollars = _NON_M_DOLLARS["m" if flags == "m" else ""]
    reads_on = any(part in dollars and any(after != "$" for after in parts[at + 1:]) for at, part in enumerate(parts))
    try:
        test = compiled(pattern, "re", *flags)
    except PatternError as error:
        assert reads_on and "'$' that more pattern follows" in str(error), (pattern, flags, error)
        return
    assert not reads_on, (pattern, flags)
    expected = re.search(f"(?{flags}){pattern}" if flags else pattern, text) is not None
    assert test(text) == expected, (pattern, text, flags)


@pytest.mark.parametrize("pattern", ["$^", "a$.", "$(?s:.)", "(a$)+b", "((?s:.)$){2}", "a$\\n", "(a|b$)c"])
def test_re_a_dollar_that_more_pattern_follows_is_a_named_load_error(pattern):
    message = rule_error({"sel": {"F|re": pattern}, "condition": "sel"})
    assert "a '$' that more pattern follows" in message and "RE2 cannot express" in message


@pytest.mark.parametrize("pattern, text", [("(^a$)|(^b$)", "b\n"), ("(?:z|a$)", "a\n"), ("a$$", "a\n"),
                                           ("b(a$)?$", "ba\n"), ("(a$)+", "a\n"), ("a$|c.", "a\n"), ("a$(?i)", "a\n")])
def test_re_a_dollar_that_ends_the_match_holds_before_a_final_newline(pattern, text):
    assert compiled(pattern, "re")(text) and compiled(pattern, "re")(text[:-1])
    assert not compiled(pattern, "re")(text[:-1] + "\nx")


def test_re_dollar_before_a_final_newline():
    assert compiled("mimikatz$", "re")("invoke mimikatz\n")
    assert not compiled("mimikatz$", "re")("invoke mimikatz\nx")
    assert compiled(r"cost\$", "re")("cost$5") and not compiled("[$]$", "re")("x")
    # quoted text is characters, a $ in it too (it was rewritten into the quote: never matched)
    assert compiled(r"\Qcost$5\E", "re")("the cost$5") and not compiled(r"\Qcost$5\E", "re")("the cost")
    assert compiled(r"\Qa$", "re")("a$") and compiled(r"\Qa\E$", "re")("a\n")
    assert selects({"F|re": [r"\Qx$\E", "y$"]}, {"F": "x$z"})
    # a quote left open runs to the end of its pattern, not into the next value's (one search of all three
    # was the text "x)|(?:a)|(?:\Qy" between two groups)
    assert selects({"F|re": [r"\Qx", "a", r"\Qy\E"]}, {"F": "a"})
    assert selects({"F|re": [r"\Qx", "a", r"\Qy\E"]}, {"F": "x"})
    assert compiled("[[:alpha:]$]x$", "re")("$x\n")  # a $ in a class with a POSIX class: a character
    assert compiled("a$", "re", "m")("a\nb") and compiled("(?m)a$", "re")("a\nb")  # multiline: as RE2 reads it
    # an escaped paren made optional before a word with an m is no (?m (it turned the reading off)
    assert compiled(r"Invoke\(?Command$", "re")("InvokeCommand\n")
    assert compiled("[(?m]x$", "re")("mx\n")
    # (?m) holds to the end of its group; (?m:...) inside its own
    assert compiled("(a(?m)b$)\nc$", "re")("ab\nc\n") and compiled("(?m:a$)\nb$", "re")("a\nb\n")
    assert not compiled("((?m)a)$", "re")("a\nb") and compiled("((?m)a)$", "re")("a\n")  # its group ended
    # several values of one matcher are one search: the same reading
    assert selects({"F|re": ["mimikatz$", "lsass$"]}, {"F": "dump lsass\n"})
    assert not selects({"F|re": ["mimikatz$", "lsass$"]}, {"F": "dump lsass\nx"})
