"""``load_event`` reads a line with msgspec and falls back to ujson: what it reads, and what it
refuses, must be exactly ujson's, on any text, since every diagnostic and every match depends on it."""

from __future__ import annotations

import json
import sys

import pytest
import ujson
from hypothesis import example, given, strategies as st

from pipeshell_filter.io.stream import load_event


def outcome(read, text: bytes):
    """What a reader makes of the text: the value with every type spelled out (``-0.0`` is not
    ``0``, ``nan`` equals itself, key order counts), or that it refused it."""
    try:
        value = read(text)
    except (ValueError, OverflowError):
        return "refused"
    return _spelled(value)


def _spelled(value) -> list:
    """The value as a flat list of tokens (without recursion: the deepest line ujson reads is 1,024 deep)."""
    tokens, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            tokens.append(("object", len(item)))
            for key, member in reversed(list(item.items())):
                stack += [member, ("key", key)]
        elif isinstance(item, list):
            tokens.append(("array", len(item)))
            stack += reversed(item)
        elif isinstance(item, tuple):
            tokens.append(item)
        else:
            tokens.append((type(item).__name__, repr(item)))
    return tokens


def _number():
    """Numbers as JSON spells them, and as it does not (leading zeros, a bare sign, huge exponents)."""
    sign = st.sampled_from(["", "-", "+"])
    digits = st.text("0123456789", min_size=0, max_size=25)
    fraction = st.one_of(st.just(""), st.builds(lambda d: "." + d, digits))
    exponent = st.one_of(st.just(""), st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), sign, digits))
    spelled = st.builds(lambda s, d, f, e: s + d + f + e, sign, digits, fraction, exponent)
    return st.one_of(spelled, st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "-0.0", "5e-324",
                                               "18446744073709551616", "-9223372036854775809", "2.5e-400"]))


def _character():
    """One character of a JSON string as written: plain, escaped, a control character, a surrogate."""
    escaped = st.builds(lambda n: "\\u%04x" % n, st.integers(0, 0xFFFF))
    plain = st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\')
    odd = ['\\"', "\\\\", "\\n", "\\/", "\\x", "\x01", "\t", "\\ud83d\\ude00", "\\ud800", "\\udc00x"]
    return st.one_of(plain, escaped, st.sampled_from(odd))


_strings = st.builds(lambda chars: '"' + "".join(chars) + '"', st.lists(_character(), max_size=8))
_space = st.sampled_from(["", " ", "\t", "\r\n", "\x0b"])


def _json(depth: int = 3):
    leaf = st.one_of(_strings, _number(), st.sampled_from(["true", "false", "null", "nul", "True"]))
    if depth == 0:
        return leaf
    inner = _json(depth - 1)
    members = st.lists(st.tuples(st.one_of(_strings, st.sampled_from(['"a"', '"a"', "a", "1"])), _space, inner),
                       max_size=4)
    obj = st.builds(lambda ms, s, trail: "{" + s + ",".join(f"{k}{s}:{s}{v}" for k, s, v in ms) + trail + "}",
                    members, _space, st.sampled_from(["", "", ","]))
    arr = st.builds(lambda vs, trail: "[" + ",".join(vs) + trail + "]", st.lists(inner, max_size=4),
                    st.sampled_from(["", "", ","]))
    return st.one_of(leaf, obj, arr)


@given(_json(), st.sampled_from(["", " ", "\n", "x", "}", "\x00"]))
@example('{"a":1,"b":2,"a":3}', "")
@example('{"a":"\\ud800"}', "")
@example('{"a":"\ud800"}', "")  # a lone surrogate as raw bytes (ED A0 80)
@example('{"a":1e400,"b":NaN}', "")
@example('{"a":19933688932870350000,"b":19999999999999999999,"c":18446744073709551616}', "")  # msgspec < 0.19
@example("[" * 1024 + "]" * 1024, "")
@example("[" * 1025 + "]" * 1025, "")
def test_load_event_reads_and_refuses_what_ujson_does(text: str, tail: str):
    data = (text + tail).encode("utf-8", "surrogatepass")
    assert outcome(load_event, data) == outcome(ujson.loads, data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=20),
       st.data())
def test_load_event_agrees_with_ujson_on_written_values_and_their_damage(value, data):
    """Values as a JSON writer spells them, then with a byte changed, cut or inserted."""
    text = json.dumps({"v": value}, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    assert outcome(load_event, text) == outcome(ujson.loads, text)
    at = data.draw(st.integers(0, len(text)))
    byte = bytes([data.draw(st.integers(0, 255))])
    for damaged in (text[:at] + byte + text[at + 1:], text[:at], text[:at] + byte + text[at:]):
        assert outcome(load_event, damaged) == outcome(ujson.loads, damaged)


@pytest.mark.parametrize("limit", [1000, 6000])
def test_nesting_read_as_deep_as_ujson_reads_whatever_the_recursion_limit(limit):
    """msgspec's depth limit is Python's recursion limit up to 3.11, its own after: either way a line
    nested deeper than ujson reads is refused, one just short of it read."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        for depth in (500, 1023, 1024, 1025, 5000):
            for line in (b"[" * depth + b"]" * depth, b'{"d":' + b"[" * depth + b"]" * depth + b"}"):
                assert outcome(load_event, line) == outcome(ujson.loads, line), depth
    finally:
        sys.setrecursionlimit(before)
