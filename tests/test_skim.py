"""The skimmer (``io.skim``) vouches for a block only when each line is what ujson finds in it.

The property: whatever the block, a vouched one is all JSON objects that ujson reads, each
with the time ``FieldResolver.time`` finds in the parsed event (and, for ``--non-json wrap``,
nothing Fluent Bit cannot take and no line over the limit).  The blocks mix every collector
shape with lines crafted against each clause of the soundness argument: several values on a
line, a value spread over lines, bytes msgspec skips without checking, nesting about
ujson's depth limit, duplicate keys, numbers out of range.  A check the other way keeps the
quick way in use: a block of clean lines is vouched for.
"""

import contextlib
import io
import json
import random
import re
import sys
from time import gmtime, strftime

import pytest
import ujson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeshell_filter.engine import Engine
from pipeshell_filter.events import timeparse
from pipeshell_filter.events.fields import FieldResolver
from pipeshell_filter.events.timeparse import parse_time
from pipeshell_filter.io import frames, skim, stream
from pipeshell_filter.io.skim import LineField, Skimmer
from shapes import NS, SERVER, SHAPES, T_MAX, T_MIN, Logical, logical_events
import resolvers
from eventgen import FRAME_GARBAGE, FRAMINGS, framed

LONGEST = 600  # a small --max-record-bytes, so that some lines are over it
RESOLVERS = {
    "auto": lambda: FieldResolver(resolvers.PROFILES),
    "fixed": lambda: FieldResolver(resolvers.PROFILES, fixed="flat"),
    "time-field": lambda: FieldResolver(resolvers.PROFILES, time_field="meta.when"),
}

# Lines against each clause of the module docstring's argument (``io/skim.py``).
CRAFTED = [
    b'{"a":1} {"b":2}', b'{"a":1}{"b":2}', b'{"a":[1,', b'{"x":2}]}', b'{"a":[{"x":1}', b',{"y":2}]}',
    b'{"a":1} ', b' {"a":1}', b'{"a":1}\r', b'{}', b'{"a":"x\ty"}', b'{"a":"\x01"}', b'{"a":01}',
    b'{"a":1.}', b'{"a":-}', b'{"s":"\xff"}', b'{"\xc3":1}', b'{"s":"\xc0\xaf"}', b'{"s":"\xf4\x90\x80\x80"}',
    b'{"s":"\xed\xa0\x80"}', b'{"s":"\\ud800"}', b'{"s":"\\uDE00\\uD83D"}', b'{"s":"x\\udc00"}',
    b'{"\\udfff":1}', b'{"s":"\\uD83D\\uDE00"}',
    b'{"n":NaN}', b'{"n":-Infinity}', b'{"n":1e400}', b'{"n":1E+308}', b'{"n":123456789012345678901}',
    b'{"n":-9223372036854775809}', b'{"n":18446744073709551615}', b'{"n":[1e999]}',
    b'{"n":' + b"7" * 4301 + b"}", b'{"n":[-' + b"7" * 5000 + b"]}", b'{"n":' + b"7" * 4300 + b"}",
    b'{"n":' + b"7" * 5000 + b".5}", b'{"s":"' + b"7" * 600 + b'"}', b'{"n":' + b"7" * 511 + b"}",
    b'{"d":' + b"[" * 1023 + b"]" * 1023 + b"}", b'{"d":' + b"[" * 1030 + b"]" * 1030 + b"}",
    b'{"d":' + b"[" * 990 + b"]" * 990 + b"}", b'{"d":' + b'{"a":' * 1030 + b"1" + b"}" * 1030 + b"}",
    b'{"Event":{"System":{}},"Event":"x"}', b'{"Event":"x","Event":{"System":{}}}',
    b'{"@timestamp":"2021-06-03T13:00:00Z","@timestamp":"2021-06-03T14:00:00Z"}',
    b'{"@timestamp":1622725200.5}', b'{"@timestamp":1622725200123}', b'{"@timestamp":true}',
    b'{"@timestamp":null}', b'{"TimeCreated":{"SystemTime":"2021-06-03T13:00:00.5Z"}}',
    b'{"TimeCreated":{"#text":"2021-06-03T13:00:00Z"}}', b'{"TimeCreated":["2021-06-03T13:00:00Z"]}',
    b'{"Event":{"System":{"TimeCreated":{"#attributes":{"SystemTime":"2021-06-03T13:00:00.1234567Z"}}}}}',
    b'{"Event":{"System":{"TimeCreated":{"#attributes":"x"}}}}', b'{"Event":{"System":[]}}',
    b'{"Event":{"System":{"TimeCreated_attributes":{"SystemTime":"2021-06-03T13:00:00Z"}}}}',
    b'{"Event":{"System":null},"@timestamp":"2021-06-03T13:00:00Z"}',
    b'{"meta":{"when":"2021-06-03T13:00:00Z"}}', b'{"meta":{"when":{"#text":"2021-06-03T13:00:00.5Z"}}}',
    b'{"meta":"2021-06-03T13:00:00Z"}', b'{"EventID":4104,"Computer":"a","TimeCreated":"2021-06-03 15:06:00 +0200",'
    b'"ProviderName":"p","EventRecordID":1}', b'{"@timestamp":"2021-06-03T13:00:00.\xd9\xa3Z"}',
    b'{"@times\\u0074amp":"2021-06-03T13:00:00Z"}', b'{"long":"' + b"x" * LONGEST + b'"}',
    b'\xef\xbb\xbf{"a":1}', b'[1,2]', b'"x"', b'', b'{"a":', b'{"a":1}}',
    # a key holding a dot: flattened ECS, whose time and shape the full parse reads from such keys
    b'{"EventID":1,"Computer":"a","TimeCreated.SystemTime":"2021-06-03T13:00:00Z"}',
    b'{"winlog.event_id":4104,"TimeCreated":"2021-06-03T13:00:00Z"}', b'{"meta.when":"2021-06-03T13:00:00Z"}',
    b'{"winlog\\u002Eevent_id":4104,"TimeCreated":"2021-06-03T13:00:00Z"}',
    b'{"TimeCreated.SystemTime" :"2021-06-03T13:00:00Z","x.\\"":1}',
    b'{"Event":{"System":{}},"Event.System.TimeCreated.#attributes.SystemTime":"2021-06-03T13:00:00Z"}',
    b'{"Event":{"System":{"TimeCreated":{"#attributes":{"SystemTime":"2021-06-03T13:00:00Z"}}}},"winlog.event_id":1}',
    # Fluent Bit's frames (``io.frames``): never vouched for as objects, read line by line
    b'[1622725200.5, {"@timestamp":"2021-06-03T13:00:00Z"}]', b'win: [1622725200.5, {"a":1}]',
    b'[[1622725200.5, {}], {"a":1}]', b'[1622725200.5,{"a":1}]',
] + FRAME_GARBAGE


def shaped_line(event, shape: str) -> bytes:
    return json.dumps(SHAPES[shape].render(event), ensure_ascii=False).encode()


@st.composite
def blocks(draw, crafted: bool = True):
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        if crafted and draw(st.integers(0, 3)) == 0:
            lines.append(draw(st.sampled_from(CRAFTED)))
        else:
            line = shaped_line(draw(logical_events()), draw(st.sampled_from(sorted(SHAPES))))
            framing = draw(st.sampled_from((None,) * 6 + FRAMINGS)) if crafted else None
            lines.append(line if framing is None else framed(line, 0, framing))
    return b"\n".join(lines) + b"\n", len(lines)


def skimmers():
    for name, make in RESOLVERS.items():
        resolver = make()
        for wrap in (False, True):
            yield name, resolver, wrap, Skimmer(resolver, True, stream._BIG_NUMBER_GROUPS if wrap else (),
                                                LONGEST if wrap else None)
        yield name, resolver, False, Skimmer(resolver, False)


SKIMMERS = list(skimmers())


def check_vouched(block: bytes, lines: int):
    """Every skimmer's verdict on the block is sound; returns how many vouched for it."""
    vouched = 0
    for name, resolver, wrap, skimmer in SKIMMERS:
        times = skimmer.vouch(block, lines)
        if times is None:
            continue
        vouched += 1
        parts = block[:-1].split(b"\n")
        assert len(times) == len(parts) == lines
        for line, time in zip(parts, times):
            event = ujson.loads(line)  # raises if ujson does not read it
            assert type(event) is dict, (name, line)
            if skimmer._time is not None:
                assert time == resolver.time(event), (name, line)
        if skimmer._time is not None:  # the frame starts, made from the values without the numbers
            assert skimmer.starts(block, lines) == [None if time is None else frames.start_at(time) for time in times]
            if wrap:
                assert stream.unportable_record(line) is None, (name, line)
                assert len(line) < LONGEST, (name, line)
    return vouched


@given(blocks())
@example((b'{"a":[1,\n{"x":2}]}\n{} {}\n', 3))
@example((b'{"a":[{"x":1}\n,{"y":2}]}\n{} {}\n', 3))
def test_a_vouched_block_is_what_ujson_finds_line_by_line(block):
    check_vouched(*block)


def some_events(count: int, seed: int) -> list:
    rng = random.Random(seed)
    return [Logical(rng.choice(["srv01", "ws-7.corp.example"]), rng.randrange(T_MIN, T_MAX),
                    rng.choice([800, 4103, 4104]), rng.choice(["x", SERVER, "ünï"]), rng.randrange(-720, 840, 15),
                    rng.randrange(0, 3600 * NS), rng.randrange(1, 2**32)) for _ in range(count)]


@pytest.mark.parametrize("line", CRAFTED)
def test_each_crafted_line_alone_and_among_clean_ones(line):
    clean = [shaped_line(event, shape) for event, shape in zip(some_events(2, len(line)), ["evtx", "nxlog"])]
    for block, lines in ((line + b"\n", 1), (b"\n".join([clean[0], line, clean[1]]) + b"\n", 3)):
        check_vouched(block, lines)


@given(blocks(crafted=False))
@settings(max_examples=50)
def test_a_block_of_clean_lines_is_vouched_for(block):
    """Lines as collectors write them are vouched for: the quick way is the way taken."""
    data, lines = block
    for name, _, wrap, skimmer in SKIMMERS:
        if not wrap or max(map(len, data.split(b"\n"))) < LONGEST:
            assert skimmer.vouch(data, lines) is not None, name


def test_a_block_whose_dotted_keys_place_no_line_otherwise_is_vouched_for():
    """A key with a dot matters only to a line no profile's nested paths place (``DOTTED_KEY``) and as a time
    path's joined name: evtx lines with dotted names in their data are still skimmed, not parsed one by one."""
    lines = [b'{"Event":{"System":{"TimeCreated":{"#attributes":{"SystemTime":"2021-06-03T13:00:0%d.5Z"}}},'
             b'"EventData":{"a.b":"c.d","Image":"C:\\\\x.exe"}},"host.name":"h"}' % second for second in range(5)]
    block = b"\n".join(lines) + b"\n"
    for name, resolver, wrap, skimmer in SKIMMERS:
        if name == "auto" and skimmer._time is not None:
            assert skimmer.vouch(block, len(lines)) == [resolver.time(ujson.loads(line)) for line in lines]


@pytest.mark.parametrize("bounded", [True, False])
def test_nesting_at_ujsons_limit_is_never_vouched_for(monkeypatch, bounded):
    """Whether msgspec's own limit (Python's recursion limit up to 3.11) or the count of brackets
    keeps it out, a line nested as deep as ujson refuses is not vouched for; one just short is.
    Counting the brackets is checked with a recursion limit above the depths tried: up to 3.11
    msgspec refused these lines by itself at the default limit, and the count went untested."""
    monkeypatch.setattr(skim, "nesting_bounded", lambda: bounded)
    if bounded and not (skim.sys.version_info < (3, 12) and skim.sys.getrecursionlimit() <= 1024):
        pytest.skip("msgspec's limit is not the recursion limit here")
    limit = skim.sys.getrecursionlimit()
    if not bounded:
        skim.sys.setrecursionlimit(max(limit, 6000))
    try:
        skimmer = Skimmer(FieldResolver(resolvers.PROFILES), True)
        for depth in (1023, 1024, 5000):
            line = b'{"d":' + b"[" * depth + b"]" * depth + b"}"
            assert skimmer.vouch(line + b"\n", 1) is None
        shallow = b'{"d":' + b"[" * 500 + b"]" * 500 + b"}"
        assert skimmer.vouch(shallow + b"\n", 1) == [None]
    finally:
        skim.sys.setrecursionlimit(limit)


@pytest.mark.parametrize("limit", [640, 4300])
def test_an_integer_longer_than_python_converts_is_never_vouched_for(limit):
    """ujson refuses an integer of more digits than ``sys.get_int_max_str_digits`` (never under 640);
    msgspec skips it unread.  Such a line is left to the line-by-line way, whatever the limit."""
    if not hasattr(skim.sys, "set_int_max_str_digits"):
        pytest.skip("no integer digit limit before Python 3.11")
    skimmer = Skimmer(FieldResolver(resolvers.PROFILES), True)
    for digits in (limit + 1, limit + 100, 20_000):
        line = b'{"n":' + b"1" * digits + b"}"
        with _digit_limit(limit), pytest.raises(ValueError):
            ujson.loads(line)
        assert skimmer.vouch(line + b"\n", 1) is None
    assert skimmer.vouch(b'{"n":' + b"1" * (skim.DIGIT_RUN - 1) + b"}\n", 1) == [None]


@contextlib.contextmanager
def _digit_limit(limit: int):
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(limit)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(before)


def test_a_list_index_in_a_time_path_leaves_every_block_to_the_line_by_line_way(tmp_path):
    skimmer = Skimmer(FieldResolver(resolvers.PROFILES, time_field="times.0"), True)
    assert not skimmer.available and skimmer.vouch(b'{"times":["2021-06-03T13:00:00Z"]}\n', 1) is None
    assert Skimmer(FieldResolver(resolvers.PROFILES, time_field="times.0"), False).available


# ---------------------------------------------------------------- the time's short cut

digits = st.text("0123456789", min_size=1, max_size=12)


@st.composite
def collector_times(draw):
    """Times of the short cut's form and near it: any digits in each field, other digits than ASCII,
    an offset, a lower-case z, no fraction."""
    year, month, day = draw(st.sampled_from(["2026", "0001", "9999", "1969", "0000"])), \
        draw(st.sampled_from(["01", "02", "12", "13", "00"])), draw(st.sampled_from(["01", "28", "29", "31", "32"]))
    hour, minute, second = draw(st.sampled_from(["00", "23", "24"])), draw(st.sampled_from(["00", "59", "60"])), \
        draw(st.sampled_from(["00", "59", "60", "61"]))
    fraction = draw(st.one_of(digits, st.just(""), st.just("\u0663\u0661"), st.just("1 ")))
    zone = draw(st.sampled_from(["Z", "Z", "z", "+01:00", " Z"]))
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}" + ("." + fraction if fraction else "") + zone
    return draw(st.sampled_from([text, " " + text, text.replace("T", " ")]))


@given(st.lists(collector_times(), min_size=1, max_size=6))
def test_the_short_cut_gives_the_full_parse(times):
    """The table of seconds is filled by some strings and read by others of the same second."""
    timeparse._SECONDS.clear()
    for text in times + times:
        assert parse_time(text) == timeparse._parse(text), text


@given(st.binary().map(lambda raw: bytes(b":,[ -0123456789.eE+x\n"[byte % 21] for byte in raw)))
@example(b"[1e400]")
@example(b':-12345678901234567890')
def test_the_big_number_groups_are_the_big_numbers(text):
    """The skimmer scans a group of patterns for each character a value comes after; together they
    find what the class does."""
    in_groups = any(re.search(p, text) for group in stream._BIG_NUMBER_GROUPS for p in group)
    assert in_groups == any(re.search(p, text) for p in stream._BIG_NUMBERS)


@given(st.lists(collector_times(), min_size=1, max_size=6))
def test_a_frame_start_is_the_parsed_times_text(times):
    """``frames.start_of`` keeps each second's text as ``parse_time`` keeps the second: filled by
    some strings (before 1970 never), read by others of the same second."""
    timeparse._SECONDS.clear()
    frames._SECONDS_TEXT.clear()
    for text in times + times:
        ns = timeparse._parse(text)
        assert frames.start_of(text) == (None if ns is None else expected_start(ns)), text


def expected_start(ns):
    """A time Fluent Bit can take in a frame (1970 to 2106-02-07T06:28:13Z) gives its frame start; any
    other, ``OUT_OF_RANGE`` (the caller frames it with the clock)."""
    return frames.start_at(ns) if 0 <= ns < 4_294_967_293 * 10**9 else frames.OUT_OF_RANGE


@pytest.mark.parametrize("value", [None, 0, -1.5, 1e20, "", "Z", {"#text": "2026-11-02T08:00:00.5Z"},
                                   "1969-12-31T23:59:59.25Z", "1970-01-01T00:00:00.000000000001Z",
                                   "2106-02-07T06:28:12.999999999Z", "2106-02-07T06:28:13Z", "9999-12-31T23:59:59Z"])
def test_a_frame_start_of_other_values(value):
    frames._SECONDS_TEXT.clear()
    for _ in range(2):
        ns = parse_time(value)
        assert frames.start_of(value) == (None if ns is None else expected_start(ns))
    assert frames.start_of("1969-12-31T23:59:59.25Z") == frames.OUT_OF_RANGE
    assert frames.start_of("2106-02-07T06:28:12.5Z") == b"[4294967292.500000000,"


@given(st.integers(-(1 << 70), 1 << 70))
def test_every_frame_has_a_time_fluent_bit_takes(ns):
    """``start_or_clock``: the event's own time when Fluent Bit takes it, else the clock's."""
    start = frames.start_or_clock(ns, lambda: 1_700_000_000 * 10**9)
    seconds = float(start[1:-1])
    assert 0 <= seconds < 4294967294 and start == frames.start_at(ns if 0 <= ns < 4294967293 * 10**9 else
                                                                  1_700_000_000 * 10**9)


@st.composite
def time_columns(draw):
    """A block's column of times: mostly of one length in the Windows form (a fraction of 1 to 9
    digits), with what keeps a column from it: another length, a newline, a non-ASCII digit, a year
    before 1970 or a day that does not exist, a value that is not a string."""
    digits = draw(st.integers(1, 9))
    seconds = st.integers(-3 * 86400, 2 * 86400).map(lambda s: s + 1_790_000_000 * draw(st.sampled_from([0, 1])))

    def windows(second, fraction):
        stamp = strftime("%Y-%m-%dT%H:%M:%S", gmtime(second))
        return f"{stamp}.{fraction:0{digits}d}Z"

    values = draw(st.lists(st.builds(windows, seconds, st.integers(0, 10 ** digits - 1)), min_size=1, max_size=12))
    if draw(st.booleans()):
        odd = st.sampled_from(["2026-11-02T08:00:00.5Z", "2026-02-30T08:00:00." + "1" * digits + "Z",
                               "2026-11-02T08:00:0\n." + "1" * digits + "Z", "2026-11-02T08:00:00.\u0661" +
                               "1" * (digits - 1) + "Z", "٢٠٢٦-11-02T08:00:00." + "1" * digits + "Z", 7, None])
        values.insert(draw(st.integers(0, len(values))), draw(odd))
    return values


@given(time_columns())
@example(["1969-12-31T23:59:59.25Z", "1970-01-01T00:00:00.25Z"])
def test_a_column_of_frame_starts_is_each_values_frame_start(values):
    """``frames.starts_of`` gives what ``start_of`` gives value by value, or leaves the column
    to it (None); a column all of the Windows form, on or after 1970, is never left."""
    frames._SECONDS_TEXT.clear()
    timeparse._SECONDS.clear()
    starts = frames.starts_of(values)
    expected = [frames.start_of(value) for value in values]
    assert starts is None or starts == expected
    same_length = len({len(value) if type(value) is str else -1 for value in values}) == 1
    plain = all(type(v) is str and v.isascii() and v[:4].isdigit() and v[:4] >= "1970" and "\n" not in v
                and parse_time(v) is not None for v in values)
    if same_length and plain:
        assert starts == expected


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_block_of_one_shape_has_its_starts_made_by_column(shape):
    """Every collector shape: the starts of a block of one shape are those found item by item, and
    the column (``skim._column_finder``) finds the values, for a mixed block too when it can."""
    events = some_events(30, 11)
    skimmer = Skimmer(FieldResolver(resolvers.PROFILES), True)
    lines = [shaped_line(event, shape) for event in events]
    for block_lines in (lines, lines + [shaped_line(events[0], other) for other in sorted(SHAPES)]):
        block = b"\n".join(block_lines) + b"\n"
        decoded = skimmer._objects.decode(block, len(block_lines))
        by_item = [skimmer._start(item, []) for item in decoded]
        assert skimmer.starts(block, len(block_lines)) == by_item
        values = skimmer._column(decoded, [])
        if values is not None:
            assert [frames.start_of(value) for value in values] == by_item


def test_a_profile_that_applies_to_some_items_leaves_the_column_to_them():
    """Event.System on every line but one, which has an Event without it, and an "@timestamp" (a
    later profile's time) on every line: the column must not take the later profile for all."""
    lines = [b'{"Event":{"System":{"TimeCreated":{"#attributes":{"SystemTime":"2026-11-02T08:00:0%d.5Z"}}}},'
             b'"@timestamp":"2026-11-02T09:00:00.5Z"}' % second for second in range(5)]
    skimmer = Skimmer(FieldResolver(resolvers.PROFILES), True)
    resolver = FieldResolver(resolvers.PROFILES)
    for odd in (b'{"Event":{"Other":1},"@timestamp":"2026-11-02T09:00:00.5Z"}',  # the first profile's
                b'{"@timestamp":"2026-11-02T09:00:00.5Z"}'):  # marker missing in one item only
        mixed = lines[:2] + [odd] + lines[2:]
        block = b"\n".join(mixed) + b"\n"
        assert skimmer.starts(block, len(mixed)) == \
            [frames.start_at(resolver.time(ujson.loads(line))) for line in mixed]
        assert skimmer._column(skimmer._objects.decode(block, len(mixed)), []) is None


def test_the_table_of_seconds_text_stays_bounded(monkeypatch):
    monkeypatch.setattr(frames, "_SECONDS_KEPT", 3)
    frames._SECONDS_TEXT.clear()
    for second in range(10):
        text = f"2026-11-02T08:00:{second:02d}.5Z"
        assert frames.start_of(text) == frames.start_at(parse_time(text))
        assert len(frames._SECONDS_TEXT) <= 3


def test_a_leap_seconds_frame_start_is_its_parsed_time_whatever_the_fraction():
    """A leap second reads as the last nanosecond before midnight, not its seconds plus its fraction: the
    table of seconds text must not hold one, alone or in a column."""
    frames._SECONDS_TEXT.clear()
    leap = ["2016-12-31T23:59:60.8Z", "2016-12-31T23:59:60.3Z", "2016-12-31T23:59:60.8Z"]
    expected = frames.start_at(parse_time(leap[0]))
    assert expected == b"[1483228799.999999999,"
    assert [frames.start_of(text) for text in leap] == [expected] * 3
    column = frames.starts_of(leap)
    assert column is None or column == [expected] * 3


def test_the_table_of_seconds_stays_bounded(monkeypatch):
    monkeypatch.setattr(timeparse, "_SECONDS_KEPT", 3)
    timeparse._SECONDS.clear()
    for second in range(10):
        text = f"2026-11-02T08:00:{second:02d}.5Z"
        assert parse_time(text) == timeparse._parse(text)
        assert len(timeparse._SECONDS) <= 3


def test_the_skimmer_finds_the_times_collectors_write():
    rng = random.Random(7)
    events = some_events(20, 7)
    resolver = FieldResolver(resolvers.PROFILES)
    skimmer = Skimmer(resolver, True)
    for shape in sorted(SHAPES):
        lines = [shaped_line(event, shape) for event in events]
        rng.shuffle(lines)
        times = skimmer.vouch(b"\n".join(lines) + b"\n", len(lines))
        assert times == [resolver.time(ujson.loads(line)) for line in lines], shape
        assert None not in times, shape
        assert skimmer.starts(b"\n".join(lines) + b"\n", len(lines)) == list(map(frames.start_at, times)), shape


# ---------------------------------------------------------------- --line-field, a block at once

@st.composite
def forwarded_blocks(draw):
    """Lines as a collector forwarding raw lines writes them ({"date": ..., "log": "<line>"}), and
    records whose field is missing, twice, not text, or text with a newline; crafted lines too."""
    lines = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["forwarded", "forwarded", "odd", "crafted"]))
        inner = draw(st.sampled_from(CRAFTED)).decode("utf-8", "replace")
        if kind == "forwarded":
            lines.append(json.dumps({"date": 1796169934.5, "log": inner}, ensure_ascii=draw(st.booleans())).encode())
        elif kind == "odd":
            lines.append(draw(st.sampled_from([
                b'{"date":1}', b'{"log":7}', b'{"log":{"a":"b"}}', b'{"log":"a\\nb"}', b'{"log":"x","log":"y"}',
                b'{"log":"\\ud800"}', b'{"log":"\\u00e9\\/"}', b'{"log":null}', b'{"log":"' + b"x" * 700 + b'"}'])))
        else:
            lines.append(draw(st.sampled_from(CRAFTED)))
    return b"\n".join(lines) + b"\n", len(lines)


@given(forwarded_blocks())
@settings(max_examples=200)
def test_a_block_unwrapped_at_once_is_each_line_unwrapped(block):
    data, lines = block
    unwrapped = LineField("log").unwrap(data, lines)
    assert unwrapped is None or unwrapped == stream.unwrap_lines(data, 0, len(data), "log")


def test_a_forwarded_line_too_dense_to_parse_is_not_unwrapped_in_a_block_either():
    """``unwrap_line`` leaves a line of 1 MiB or more with more values than ``load_event`` parses as it
    is; the block's one decode unwrapped it, so the same input came out otherwise read as merged files."""
    commas = max(stream.MAX_VALUES, stream.DENSE_FROM) + 1
    dense = json.dumps({"log": '{"EventID": 7, "x": "' + "," * commas + '"}'}).encode()
    data = b'{"log": "{}"}\n' + dense + b"\n"
    stream_filter = stream.Filter(Engine([], FieldResolver(resolvers.PROFILES)), stream.Output(1),
                                  stream.Diagnostics(io.StringIO()))
    stream_filter.line_field = "log"
    assert stream_filter._unwrap_lines(data, 0, len(data)) == stream.unwrap_lines(data, 0, len(data), "log") == \
        b"{}\n" + dense + b"\n"


def test_forwarded_lines_are_unwrapped_a_block_at_once():
    lines = [json.dumps({"date": 1.5, "log": shaped_line(event, "evtx").decode()}).encode()
             for event in some_events(30, 3)]
    data = b"\n".join(lines) + b"\n"
    assert LineField("log").unwrap(data, 30) == stream.unwrap_lines(data, 0, len(data), "log")
