"""The raw-byte prefilter: its needles and triggers, and the property that it never changes output."""

import io
import json
import os
import random
import re
import signal
import tempfile
import threading
import time

import pytest
import ujson
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clitools import alerts
import resolvers
from eventgen import CLIENT, FRAME_GARBAGE, FRAMINGS, HOSTS, SERVER, evtx_event, flat_event, framed
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io import rule_index as ri
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.sigma import literals
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule
from pipeshell_filter.values import leaves
from pipeshell_filter.events.xml_event import carries_xml
from pipeshell_filter.cli import build_prefilter
from pipeshell_filter.io import stream as stream_module
from pipeshell_filter.io.stream import BlockReader, Diagnostics, Filter, LINES, Output, PIECE, PIECE_END

ENGINES = pf.available_engines()
PLAN = compile_plan(load_rule(BUILTIN_RULE, builtin=True))
NEEDLES = PLAN.prefilter_literals(pf.needle)


# ---------------------------------------------------------------- needles and triggers

def test_builtin_rule_needles_are_the_two_class_names():
    assert NEEDLES == [CLIENT.lower().encode(), SERVER.lower().encode()]


@pytest.mark.parametrize("literal, expected", [
    ("namedpipe", b"namedpipe"),
    ("800", None),  # numbers have many spellings (8e2, 800.0)
    ("-1.5e3", None),
    ("c:\\windows\\system32\\cmd.exe", b"c:\\\\windows\\\\system32\\\\cmd.exe"),  # JSON doubles backslashes
    ('say "hello world"', b'say \\"hello world\\"'),  # and escapes quotes
    ("a/bc", b"bc"),  # '/' may be written '\/'
    ("\u00e9t\u00e9 ici", b" ici"),  # the longest verbatim ASCII run
    ("\u00e9\u00e9", None),
    ("", None),
    ("\u02e3", "\u02e3".encode()),  # caseless beyond ASCII: its UTF-8 bytes
    ("a\u2014b/c", "a\u2014b".encode()),
    ("\U0001f600 x", "\U0001f600 x".encode()),
    ("\u00e9t\u2014", "t\u2014".encode()),  # e-acute has a capital: the run stops there
    ("\u0149", None),  # n-apostrophe has case
    ("127.0.0.1", b"127.0.0.1"),  # no number's text holds two dots
    ("1.5", None),
    ("inf", None),  # 1e400 is read as a float too large, whose text is "inf"
    ("-in", None),
    ("nf", None),
    ("info", b"info"),
    ("nan", b"nan"),  # only NaN is read as nan, and NaN holds it
])
def test_needle_is_the_longest_run_json_spells_one_way(literal, expected):
    assert pf.needle(literal) == expected


@given(st.text(alphabet=st.sampled_from("ab/ \\\"\x7f\x1f\u00e9\u2014\u02e3\u0149\U0001f600-.~0")))
def test_a_needle_is_the_longest_run_of_characters_spelled_one_way(literal):
    """Against a character-by-character reading (the ASCII text is split by a regular expression)."""
    runs, run = [], ""
    for ch in literal:
        if ("\x20" <= ch <= "\x7e" and ch != "/") if ch < "\x80" else pf.caseless(ch):
            run += ch
        else:
            runs, run = runs + [run], ""
    spelled = [run.replace("\\", "\\\\").replace('"', '\\"').encode() for run in runs + [run] if run]
    found = pf.needle(literal)
    if set(literal) <= set("0123456789.+-e") and literal.count(".") < 2 or literal in "-inf":
        assert found is None  # the text of a number: not in the line as the number is written
    else:
        assert found == max(spelled, key=len, default=None)


NUMBER_SPELLINGS = st.one_of(
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "8e2", "800.0", "-0.0", "1E5", "2.5e-7"]),
    st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.integers(-9, 9), st.integers(-400, 400)).map(lambda t: f"{t[0]}e{t[1]}"))


@given(NUMBER_SPELLINGS, st.data())
def test_a_needle_of_a_number_s_text_is_in_the_number_as_written(spelling, data):
    """A number's value compares as its text (``1e400`` as ``inf``, ``8e2`` as ``800``): every
    part of that text has no needle, or one the line holds as the number is written."""
    value = ujson.loads(f'{{"x": {spelling}}}')["x"]
    text = next(leaves(value)).casefold()
    start = data.draw(st.integers(0, len(text) - 1))
    literal = text[start:data.draw(st.integers(start + 1, len(text)))]
    found = pf.needle(literal)
    assert found is None or found in spelling.lower().encode(), (spelling, literal, found)


def test_the_list_of_characters_folding_to_ascii_is_complete():
    found = [chr(c) for c in range(0x80, 0x110000)
             if not 0xD800 <= c <= 0xDFFF and any(ch < "\x80" for ch in chr(c).casefold())]
    assert "".join(found) == pf.FOLDS_TO_ASCII


def test_caseless_characters_are_folded_into_by_no_other_character():
    parts = {}
    for code in range(0x110000):
        if not 0xD800 <= code <= 0xDFFF:
            ch = chr(code)
            for part in set(ch.casefold()) - {ch}:
                parts.setdefault(part, ch)
    without_case = sorted(p for p in parts if p.upper() == p == p.lower() and not p.isascii())
    assert "".join(without_case) == pf.FOLD_PARTS_WITHOUT_CASE
    for code in range(0x80, 0x110000):
        if pf.caseless(chr(code)):
            assert chr(code) not in parts, (hex(code), parts.get(chr(code)))
            assert chr(code).casefold() == chr(code)


def test_triggers_of_characters_beyond_ascii_are_their_escapes():
    found = set(pf.triggers(["a\u2014\U0001f600".encode()]))
    assert b"\\u2014" in found and b"\\ud83d" in found and b"\\u0061" in found and b"\\u0041" in found


def test_triggers_cover_escapes_and_fold_look_alikes():
    found = set(pf.triggers([b"ks"]))
    assert b"\\u006b" in found and b"\\u004b" in found and b"\\u0073" in found and b"\\u0053" in found
    assert "\u212a".encode() in found and b"\\u212a" in found  # Kelvin sign -> k
    assert "\u017f".encode() in found and "\u00df".encode() in found  # long s -> s, sharp s -> ss
    assert b"\\u0061" not in found  # 'a' is not in the needle


def _plan(detection: dict):
    return compile_plan(parse_rule(yaml.safe_dump({"title": "t", "detection": detection}), "t.yml"))


@pytest.mark.parametrize("detection, expected", [
    ({"sel": {"EventID": 4104}, "condition": "sel"}, None),  # only a number
    ({"sel": {"A|contains": "xyz"}, "f": {"B": "yy"}, "condition": "sel or not f"}, None),  # 'not f' alone
    ({"sel": {"A|re": "x+"}, "condition": "sel"}, None),
    ({"sel": {"EventID": 4104, "A|contains": "Pipe"}, "f": {"B": "No"}, "condition": "sel and not f"},
     [b"pipe"]),  # an event that meets only the filter does not matter
    ({"sel": {"A|contains": "C:\\Windows\\Temp"}, "condition": "sel"}, [b"c:\\\\windows\\\\temp"]),
    ({"a": {"A|contains": "Invoke-Thing"}, "b": {"B|endswith": "\\x.exe"}, "condition": "a and b"},
     [b"invoke-thing"]),  # one side of an AND is enough: the side with the longer literals
    # a whole value that ends (starts) the text is looked for with the string's quote
    ({"sel": {"A|endswith": "\\Whoami.exe"}, "condition": "sel"}, [b'\\\\whoami.exe"']),
    ({"sel": {"A|startswith": "Power"}, "condition": "sel"}, [b'"power']),
    ({"sel": {"A": "c:/x.exe"}, "condition": "sel"}, [b'x.exe"']),  # the run that reaches the end
    ({"sel": {"A": "a\\b/c\"d"}, "condition": "sel"}, [b'"a\\\\b']),
    ({"sel": {"A|endswith": "rue"}, "condition": "sel"}, [b"rue"]),  # true's text ends so, unquoted
    ({"sel": {"A": "nan"}, "condition": "sel"}, [b"nan"]),
    ({"sel": {"A|endswith": "x*.exe"}, "condition": "sel"}, [b".exe"]),  # a wildcard: its longest chunk
    ({"sel": {"A|contains": "cmd.exe"}, "condition": "sel"}, [b"cmd.exe"]),
    ({"sel": {"A|endswith": "a" * 300}, "condition": "sel"}, [b"a" * 256]),  # cut short: not its end
])
def test_plan_needles(detection, expected):
    assert _plan(detection).prefilter_literals(pf.needle) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_suspects_are_the_lines_that_do_not_look_like_objects(engine):
    scanner = pf.Prefilter(NEEDLES, engine)
    lines = [b"not json", b'{"a": 1}', b"", b"[1, 2]", b'{"a":', b'{"b": 2}', b' {"c": 3}', b'{"d": 4}\r',
             b'{"t": "System.IO.Pipes.NamedPipeServerStream"', b'{"e": 5}',
             b'[1.5, {"a": 1}]', b'win: [1796431136.200271588, {"a": 1}]', b'[[1, {"m": 2}],{"a": 1}]',  # frames
             b'[1.5, {"a": 1}', b"tag: [x", b"[1.5, [1]]", b'["1.5", {"a": 1}]', b'win : [1.5, {"a": 1}]']
    block = b"\n".join(lines) + b"\n"
    candidates, suspects = scanner.scan(block, 0, len(block))
    assert [block[s:e] for s, e in candidates] == [lines[8]]  # a candidate is never also a suspect
    assert [block[s:e] for s, e in suspects] == [lines[i] for i in (0, 2, 3, 4, 6, 7, 13, 14, 15, 16, 17)]
    # a range inside a bigger block
    offset = block.index(b"[1, 2]")
    _, inner = scanner.scan(block, offset, len(block))
    assert [block[s:e] for s, e in inner] == [lines[i] for i in (3, 4, 6, 7, 13, 14, 15, 16, 17)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("line", [b'\xef\xbb\xbf{"a": 1}', b'\xef\xbb\xbf[1.5, {"a": 1}]',
                                  b'\xef\xbb\xbfwin: [1.5, {"a": 1}]'])
def test_a_line_after_a_byte_order_mark_is_a_suspect_framed_or_not(engine, line):
    """The full path strips the mark and says so: a tagged frame after one is not ruled out as if the mark
    were its tag's first bytes (the summary's count of marks would differ with --no-prefilter)."""
    block = b'{"b": 2}\n' + line + b"\n"
    _, suspects = pf.Prefilter(NEEDLES, engine).scan(block, 0, len(block))
    assert [block[s:e] for s, e in suspects] == [line]


_FRAME_SHAPE = re.compile(rb'(?:[^\s"\[\]{}:]{1,512}: )?\[[ \t]*(?:\[[ \t]*)?-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?'
                          rb'[ \t]*,[ \t]*\{.*\}\]', re.S)


def _shaped_like_object(line: bytes) -> bool:
    """A JSON object's shape, or that of a Fluent Bit frame around one (``io.frames``)."""
    return line.startswith(b"{") and line.endswith(b"}") or _FRAME_SHAPE.fullmatch(line) is not None


_LINE_BYTES = st.one_of(st.binary(max_size=12), st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
                        st.sampled_from([b"{", b"}", b'"a":1', b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
                                         b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80"]))


@given(st.lists(st.lists(_LINE_BYTES, max_size=5).map(lambda parts: b"".join(parts).replace(b"\n", b"")),
                min_size=1, max_size=12))
@example([b"{\xc3\xa9}", b"{\xc3}", b"{\xa9}", b"{\xe2\x82\xac\xac}", b"{\xed\xa0\x80}", b"{\xf0\x9f\x98\x80}"])
def test_suspects_are_exactly_the_lines_not_shaped_like_objects(lines):
    # bytes that are not UTF-8 do not make a suspect: content is checked when a line is parsed
    block = b"\n".join(lines) + b"\n"
    expected = [i for i, line in enumerate(lines) if not _shaped_like_object(line)]
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    for engine in ENGINES:
        candidates, suspects = pf.Prefilter(NEEDLES, engine).scan(block, 0, len(block))
        chosen = {starts.index(s) for s, _ in candidates}  # e.g. a generated 'ß': parsed anyway
        assert [starts.index(s) for s, _ in suspects] == [i for i in expected if i not in chosen], engine


@pytest.mark.parametrize("engine", ENGINES)
def test_spans_are_the_candidate_lines(engine):
    scanner = pf.Prefilter(NEEDLES, engine)
    lines = [
        b'{"a": "nothing here"}',
        b'{"t": "x System.IO.Pipes.NAMEDPIPESERVERSTREAM y"}',
        b'{"t": "C:\\\\Users\\\\u0073er"}',  # an escaped backslash then "u0073": harmless, but may be flagged
        b'{"t": "\\u0053ystem.IO.Pipes.NamedPipeClientStream"}',  # escaped S
        b'{"t": "\xc5\xbfystem"}',  # long s
        b'{"t": "plain"}',
        b'{"t": "\\u004eamedPipeClientStream"}',  # escaped N, upper-case hex
        b'{"t": "\\U004eamedPipeClientStream"}',  # no JSON escape: the line cannot be parsed
        b'{"t": "C:\\\\windows\\\\user32.dll \\u0078"}',  # "\\u" of a path; x is no needle letter
    ]
    block = b"\n".join(lines) + b"\n"
    spans = scanner.spans(block)
    picked = [block[s:e] for s, e in spans]
    assert lines[1] in picked and lines[3] in picked and lines[4] in picked and lines[6] in picked
    assert lines[0] not in picked and lines[5] not in picked and lines[7] not in picked and lines[8] not in picked
    for start, end in spans:
        assert (start == 0 or block[start - 1:start] == b"\n") and block[end:end + 1] == b"\n"


@st.composite
def escape_heavy_blocks(draw):
    """Lines full of what the quick database reports and Python checks: escapes of needle
    letters and of others, in both hex cases, and the "\\u" of Windows paths."""
    pieces = st.sampled_from([b"\\u0053", b"\\u0073", b"\\u004E", b"\\u004e", b"\\u0041", b"\\u017F",
                              b"\\u212a", b"\\ufb01", b"\\U0053", b"\\\\users", b"\\\\u0053", b"\\u",
                              b"\\u00", b"x", b"ystem", b" ", b'"', b"\xc5\xbf"])
    lines = draw(st.lists(st.lists(pieces, max_size=12).map(lambda p: b'{"t":"' + b"".join(p) + b'"}'),
                          min_size=1, max_size=20))
    return b"\n".join(lines) + b"\n"


@given(st.lists(st.one_of(_LINE_BYTES, st.sampled_from([SERVER.encode(), b'{"t":"' + CLIENT.upper().encode() + b'"}',
                                                         b'{"t":"\\u004eamedPipeServerStream"}', b'{"a":1}\n{"b":2}',
                                                         b'{"a":1}\nx', b"{}"])), max_size=30))
def test_judging_lines_in_one_batch_gives_each_line_its_own_verdict(lines):
    for engine in ENGINES:
        scanner = pf.Prefilter(NEEDLES, engine)
        batch = scanner.judge(lines)
        for line, verdict in zip(lines, batch):
            # a line holding newlines of its own is judged by its worst part
            parts = [scanner.judge([part])[0] for part in line.split(b"\n")] if b"\n" in line else None
            alone = max(parts, key=[pf.SKIP, pf.SUSPECT, pf.CANDIDATE].index) if parts else None
            if alone is None:
                candidates, suspects = scanner.scan(line + b"\n", 0, len(line) + 1)
                alone = pf.CANDIDATE if candidates else pf.SUSPECT if suspects else pf.SKIP
            assert verdict == alone, (engine, line)
        assert len(batch) == len(lines)


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="the hyperscan wheel is not installed")
@given(escape_heavy_blocks())
def test_the_quick_and_the_exact_database_find_the_same_lines(block):
    scanner = pf.Prefilter(NEEDLES, "hyperscan")
    results = []
    for exact_left in (0, 1):  # as the scanning thread would choose: quick, then exact
        scanner.scan(block, 0, len(block))  # makes the thread's scratch spaces
        scanner._local.exact_left = exact_left
        results.append(scanner.scan(block, 0, len(block)))
    assert results[0] == results[1] == pf.Prefilter(NEEDLES, "python").scan(block, 0, len(block))


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="the hyperscan wheel is not installed")
def test_a_block_dense_in_backslash_u_turns_the_thread_to_the_exact_database_for_a_while():
    scanner = pf.Prefilter(NEEDLES, "hyperscan")
    sparse = b'{"Image":"C:\\\\Windows\\\\System32\\\\user32.dll","pad":"' + b"x" * 8000 + b'"}\n'
    dense = b'{"Image":"C:\\\\Windows\\\\System32\\\\user32.dll"}\n' * 2000
    scanner.scan(sparse * 20, 0, len(sparse) * 20)
    assert scanner._local.exact_left == 0
    scanner.scan(dense, 0, len(dense))
    assert scanner._local.exact_left == scanner.EXACT_RUN
    for left in range(scanner.EXACT_RUN - 1, -1, -1):
        scanner.scan(sparse, 0, len(sparse))
        assert scanner._local.exact_left == left
    few = dense[:dense.index(b"\n") + 1] * 10
    scanner.scan(few, 0, len(few))  # a few lines do not decide alone
    assert scanner._local.exact_left == 0
    seen = []  # each thread decides for itself
    worker = threading.Thread(target=lambda: (scanner.scan(sparse, 0, len(sparse)),
                                              seen.append(scanner._local.exact_left)))
    scanner.scan(dense, 0, len(dense))
    worker.start()
    worker.join()
    assert seen == [0] and scanner._local.exact_left == scanner.EXACT_RUN


# ---------------------------------------------------------------- the block reader

@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.booleans(), st.integers(1, 64), st.integers(1024, 2048))
def test_block_reader_yields_every_byte_in_whole_lines(lines, final_newline, block_size, max_line):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        items = list(BlockReader(handle.fileno(), False, lambda: None, block_size=block_size, max_line=max_line))
    joined = b"".join(d[s:e] + (b"\n" if k == PIECE_END else b"") for k, d, s, e in items)
    assert joined == (data if data.endswith(b"\n") or not data else data + b"\n")
    assert all(k == LINES and d[s:e].endswith(b"\n") for k, d, s, e in items)


@given(st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.integers(1, 128), st.integers(1, 60))
def test_every_line_longer_than_the_limit_is_a_long_line_whatever_the_reads(lines, block_size, max_line):
    """``--max-line-bytes``: a line longer than it goes on as a long line (in pieces, the last
    ``PIECE_END``), whether the reads cut it or one read holds it whole; every other line in
    ``LINES``; nothing lost."""
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        items = list(BlockReader(handle.fileno(), False, lambda: None, block_size=block_size, max_line=max_line))
    assert b"".join(d[s:e] + (b"\n" if k == PIECE_END else b"") for k, d, s, e in items) == data
    short, long, piece = [], [], b""
    for kind, d, s, e in items:
        if kind == LINES:
            short += d[s:e].split(b"\n")[:-1]
        else:
            piece += d[s:e]
            if kind == PIECE_END:
                long.append(piece)
                piece = b""
    assert short == [line for line in lines if len(line) <= max_line]
    assert long == [line for line in lines if len(line) > max_line]


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       st.lists(st.integers(1, 60), min_size=1, max_size=8), st.integers(16, 256))
def test_block_reader_on_a_pipe_gathers_what_is_there_and_loses_nothing(lines, writes, block_size):
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    read_end, write_end = os.pipe()

    def writer():  # uneven writes, with pauses so that the reader sometimes finds the pipe empty
        position = 0
        for i in range(len(data)):
            if position >= len(data):
                break
            size = writes[i % len(writes)]
            os.write(write_end, data[position:position + size])
            position += size
            if i % 3 == 2:
                time.sleep(0.0005)
        os.close(write_end)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        items = list(BlockReader(read_end, True, lambda: None, block_size=block_size, max_line=4096))
    finally:
        thread.join()
        os.close(read_end)
    assert b"".join(d[s:e] for k, d, s, e in items) == data
    assert all(k == LINES and d[s:e].endswith(b"\n") for k, d, s, e in items)
    assert all(len(d) <= block_size + 4096 for k, d, s, e in items)


def test_a_pipe_is_widened_to_hold_a_block_and_never_narrowed():
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no pipe sizes on this platform")
    read_end, write_end = os.pipe()
    try:
        BlockReader(read_end, True, lambda: None, block_size=1 << 18)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= 1 << 18
        BlockReader(read_end, True, lambda: None, block_size=4096)
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) >= 1 << 18
    finally:
        os.close(read_end)
        os.close(write_end)


def _scripted_reads(monkeypatch, chunks):
    """os.read as the stream module sees it: hands over these chunks in turn, then b""."""
    calls = []

    def read(fd, size):
        calls.append(size)
        chunk = chunks.pop(0) if chunks else b""
        assert len(chunk) <= size
        return chunk

    monkeypatch.setattr(stream_module.os, "read", read)
    monkeypatch.setattr(BlockReader, "_ready", lambda self: True)
    return calls


def test_a_pipe_read_gathers_what_is_already_there_into_one_block(monkeypatch):
    lines = [b'{"n": %d}' % i for i in range(12)]
    data = b"\n".join(lines) + b"\n"
    _scripted_reads(monkeypatch, [data[i:i + 5] for i in range(0, len(data), 5)])
    items = list(BlockReader(0, True, lambda: None, block_size=64))
    assert b"".join(d[s:e] for k, d, s, e in items) == data
    assert max(d[s:e].count(b"\n") for k, d, s, e in items) >= 2  # 5-byte reads joined: whole lines


def test_end_of_input_met_while_gathering_is_not_read_again(monkeypatch):
    # a terminal reports Ctrl-D once: the reader must not wait for a second one
    calls = _scripted_reads(monkeypatch, [b'{"a": 1}\n', b""])
    items = list(BlockReader(0, True, lambda: None, block_size=1024))
    assert [d[s:e] for k, d, s, e in items] == [b'{"a": 1}\n']
    assert len(calls) == 2


def _written(stream_filter, sink) -> bytes:
    stream_filter.output.flush()
    sink.seek(0)
    return sink.read()


def test_a_run_cut_short_by_an_error_still_processes_what_was_read():
    # finish() handles the unfinished last line the reader holds, as at end of input
    sink = tempfile.TemporaryFile()
    stream_filter = Filter(Engine([PLAN], FieldResolver(builtin_profiles()), 0), Output(sink.fileno()),
                           Diagnostics(io.StringIO()), "all", prefilter=pf.Prefilter(NEEDLES, ENGINES[0]))
    with sink:
        stream_filter.process_block(b'{"a": 1}\n{"a": 2}\n')
        reader = stream_filter._reader = BlockReader(0, False, lambda: None)
        reader._carry = [b'{"a": ', b"4}"]
        stream_filter.finish()
        assert _written(stream_filter, sink) == b'{"a": 1}\n{"a": 2}\n{"a": 4}\n'
        assert stream_filter.lines == 3


def test_block_reader_cuts_an_oversized_line_into_pieces():
    data = b'{"a":1}\n' + b"x" * 5000 + b"\n" + b'{"b":2}\n'
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        items = list(BlockReader(handle.fileno(), False, lambda: None, block_size=512, max_line=1024))
    kinds = [k for k, *_ in items]
    assert PIECE in kinds and kinds.count(PIECE_END) == 1
    assert b"".join(d[s:e] + (b"\n" if k == PIECE_END else b"") for k, d, s, e in items) == data


# ---------------------------------------------------------------- output never changes

def _escape_some(text: str, rng: random.Random) -> str:
    """JSON-encode a string, writing random characters as \\u escapes."""
    out = []
    for ch in json.dumps(text, ensure_ascii=False)[1:-1]:
        escape = f"\\u{ord(ch):04x}"
        out.append((escape if rng.random() < 0.5 else "\\u" + escape[2:].upper())
                   if ch.isalnum() and rng.random() < 0.2 else ch)
    return '"' + "".join(out) + '"'


def _random_case(text: str, rng: random.Random) -> str:
    return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)


LOOK_ALIKES = {"s": "\u017f", "k": "\u212a", "i": "\u0130", "fi": "\ufb01", "st": "\ufb06", "ss": "\u00df"}


# Lines the Fluent Bit modes must not pass on as they are (or pass on with care): numbers and strings
# Fluent Bit cannot take, a byte order mark, space before the object, JSON nested deeper than
# the parser allows, an object far over a small --max-record-bytes.
FLUENT_BIT_HAZARDS = [
    b'{"EventID": NaN}', b'{"n": 1e400, "@timestamp": "2021-06-03T13:00:00Z"}', b'{"n": -Infinity}',
    b'{"n": 123456789012345678901234567890}', b'{"n": -9223372036854775809}', b'{"s": "\\ud800"}',
    b'{"s": "\xed\xa0\x80"}', b'\xef\xbb\xbf{"EventID": 7, "@timestamp": "2021-06-03T13:00:00Z"}',
    b' {"EventID": 7}', b'{"d": ' + b"[" * 1100 + b"]" * 1100 + b"}",
    b'{"long": "' + b"x" * 700 + b'", "@timestamp": 1622725200.5}', b'{"t": "2021-06-03 15:06:00 +0200"}',
]


@st.composite
def streams(draw):
    rng = random.Random(draw(st.integers(0, 2**32)))
    lines = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["event", "event", "event", "noise", "garbage"]))
        if kind == "garbage":
            lines.append(draw(st.sampled_from([b"", b"not json", b"[1,2]", b'{"a":', b"\xff\xfe{}", b'"x"',
                                               b"{}", b'{"t": "ok"} trailing}'] + FLUENT_BIT_HAZARDS + FRAME_GARBAGE)))
            continue
        if kind == "noise":  # with the "\\u" of Windows paths, which the quick scan reports
            lines.append(json.dumps({"EventID": 7, "Computer": rng.choice(HOSTS),
                                     "ImageLoaded": rng.choice(["C:\\Windows\\System32\\user32.dll",
                                                                "c:\\users\\u0053\\x", "C:\\Users\\x"]),
                                     "CommandLine": "cmd.exe /c echo " + "x" * rng.randint(0, 60)}).encode())
            continue
        seconds = draw(st.integers(0, 400))
        role = draw(st.sampled_from(["server", "client", "benign"]))
        event_id = draw(st.sampled_from([800, 4103, 4104]))
        host = draw(st.sampled_from(HOSTS[:4]))
        build = draw(st.sampled_from([flat_event, evtx_event]))
        text = json.dumps(build(seconds, host, role, event_id), ensure_ascii=False)
        for literal in (SERVER, CLIENT):
            if literal in text:
                variant = _random_case(literal, rng)
                if rng.random() < 0.3:  # a look-alike that case-folds to the same letters
                    plain, fancy = rng.choice(sorted(LOOK_ALIKES.items()))
                    variant = variant.replace(plain, fancy, 1).replace(plain.upper(), fancy, 1)
                text = text.replace(literal, variant)
        if rng.random() < 0.4:  # re-encode every string with random \u escapes
            event = json.loads(text)
            text = _reencode(event, rng)
        framing = draw(st.sampled_from((None, None, None) + FRAMINGS))
        if framing is not None:  # in a Fluent Bit frame, its own time kept or left to the frame's
            if draw(st.booleans()):
                text = text.replace('"@timestamp"', '"no_time"').replace('"SystemTime"', '"no_time"')
            text = framed(text.encode("utf-8"), seconds + draw(st.sampled_from([0, 30])), framing).decode("utf-8")
        lines.append(text.encode("utf-8"))
    final_newline = draw(st.booleans())
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    return data


def _reencode(value, rng) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(_escape_some(k, rng) + ":" + _reencode(v, rng) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_reencode(v, rng) for v in value) + "]"
    if isinstance(value, str):
        return _escape_some(value, rng)
    return json.dumps(value)


# A rule set over the streams' vocabulary: each rule has its own literals, so the index
# from literal to rules decides which rules a candidate line is tried against.
RULE_SET = [
    {"title": "server block", "id": "server-block", "detection": {
        "s": {"EventID": 4104, "ScriptBlockText|contains": "NamedPipeServerStream"}, "condition": "s"}},
    {"title": "client anywhere", "id": "client-any", "detection": {
        "k": ["NamedPipeClientStream"], "condition": "k"}},
    {"title": "benign listing", "id": "benign", "detection": {
        "b": {"ScriptBlockText|contains|all": ["get-childitem", "out-null"]}, "condition": "b"}},
    {"title": "pipes on one host", "id": "by-host", "timeframe": "2m", "detection": {
        "p": {"ScriptBlockText|contains": ["pipes.namedpipe"]}, "condition": "p | count() by Computer > 1"}},
]


RULE_SET_FILES = [(yaml.safe_dump(rule), f"{rule['id']}.yml") for rule in RULE_SET]  # as read, each run


def run_filter(data: bytes, emit: str, engine, block_size: int, non_json="pass", fluentbit_time=False,
               stop=None, rule_set=False, max_record=1_000_000, line_field=None, heartbeat=None) -> bytes:
    if rule_set:
        plans = [compile_plan(parse_rule(text, name)) for text, name in RULE_SET_FILES]
        plans.insert(1, compile_plan(load_rule(BUILTIN_RULE, builtin=True)))
        scanner, index = (None, None) if engine is None else build_prefilter(plans, engine)
        assert engine is None or index is not None
    else:
        plans = [compile_plan(load_rule(BUILTIN_RULE, builtin=True))]
        scanner = None if engine is None else pf.Prefilter(plans[0].prefilter_literals(pf.needle), engine)
        index = None
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.seek(0)
        stream_filter = Filter(Engine(plans, FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               Diagnostics(io.StringIO()), emit, prefilter=scanner, non_json=non_json,
                               fluentbit_time=fluentbit_time, clock=lambda: 0, index=index,
                               max_record=max_record, stage="all" if heartbeat is None else "match")
        stream_filter.line_field = line_field
        if heartbeat is not None:
            stream_filter.send_heartbeats("agent-a", heartbeat, 0)
        stream_filter.run(source.fileno(), live=False, block_size=block_size, stop=stop)
        stream_filter.finish()
        sink.seek(0)
        return sink.read()


@given(streams(), st.sampled_from(["alerts", "matches", "all"]), st.integers(7, 4096))
@example(b'{"EventID":4104,"Computer":"a","@timestamp":"2021-06-03T13:00:00Z","ScriptBlockText":'
         b'"\\u0053ystem.IO.Pipes.NamedPipeServerStream"}', "matches", 16)
def test_prefilter_never_changes_the_output(data, emit, block_size):
    expected = run_filter(data, emit, None, 1 << 20)
    for engine in ENGINES:
        assert run_filter(data, emit, engine, block_size) == expected, engine


@given(streams(), st.sampled_from(["alerts", "matches", "all"]), st.integers(7, 4096))
def test_a_rule_set_routed_by_the_literal_index_gives_the_output_of_every_rule_on_every_line(data, emit, block_size):
    expected = run_filter(data, emit, None, 1 << 20, rule_set=True)
    for engine in ENGINES:
        assert run_filter(data, emit, engine, block_size, rule_set=True) == expected, engine


def test_the_literal_index_names_the_rules_whose_literals_a_line_holds():
    for engine in ENGINES:
        index = ri.RuleIndex({0: [b"alpha"], 1: [b"beta", b"gamma"], 2: [b"alpha"]}, engine)
        assert index.rules_for(b'{"x": "ALPHA and Gamma"}') == {0, 1, 2}
        assert index.rules_for(b'{"x": "beta"}') == {1}
        assert index.rules_for(b'{"x": "nothing"}') == frozenset()
        assert index.rules_for(b'{"x": "\\u0062eta"}') is None  # an escaped needle letter: every rule
        assert index.rules_for('{"x": "gamma \u212a"}'.encode()) == {1}  # Kelvin folds to k: in no needle
    for engine in ENGINES:
        index = ri.RuleIndex({0: [b"best"], 1: [b"gamma"]}, engine)
        assert index.rules_for('{"x": "be\u017ft"}'.encode()) is None  # long s folds to s: maybe "best"


WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta"]
FORMULAS = st.recursive(st.sampled_from(WORDS), lambda inner: st.tuples(
    st.sampled_from([literals.AND, literals.OR]), st.lists(inner, min_size=1, max_size=3).map(tuple)), max_leaves=6)


def _words_line(words: list) -> bytes:
    return b'{"x": "%s"}' % b" ".join(words)


LINE_WORDS = st.lists(st.sampled_from(WORDS + [b"\\u0061", b"other"]), max_size=6)


def _holds_on(formula, text: bytes) -> bool:
    if not isinstance(formula, tuple):
        return formula in text
    parts = [_holds_on(part, text) for part in formula[1]]
    return all(parts) if formula[0] == literals.AND else any(parts)


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="route plans are made by the Hyperscan engine")
@given(st.dictionaries(st.integers(0, 7), FORMULAS, min_size=1, max_size=8), st.data(),
       st.lists(LINE_WORDS, min_size=1, max_size=6), st.lists(LINE_WORDS, min_size=1, max_size=12))
def test_a_route_planned_from_its_first_lines_names_every_rule_that_can_matter(formulas, data, sample, lines):
    """A route's plan takes the literals all of its first lines held as present and indexes each
    rule under the part of its formula they held least often: it names every rule whose formula
    holds on the decoded line, every rule the shared database names on a line without an
    escape, and exactly those on a line that holds every literal one of the first lines held
    (the plan may take any of them as present)."""
    among = data.draw(st.frozensets(st.sampled_from(sorted(formulas) + [8])))
    shared = ri.RuleIndex(formulas, "hyperscan", always=[8])
    shared.MAX_ROUTES = 0  # never sampled: the shared database and the whole formulas
    routed = ri.RuleIndex(formulas, "hyperscan", always=[8])
    routed.ROUTE_AFTER = len(sample)
    for words in sample:
        assert routed.rules_for(_words_line(words), among) == shared.rules_for(_words_line(words), among)
    assert isinstance(routed._routes[among], ri._Route)
    escaped = any(b"a" in needle for needle in shared.needles)  # \\u0061 is then a trigger
    clean = [set(words) for words in sample if not (escaped and b"\\u0061" in words)]
    seen = set.union(*clean) & set(shared.needles) if clean else set()
    for words in lines:
        line = _words_line(words)
        text = json.loads(line)["x"].lower().encode()
        found, expected = routed.rules_for(line, among), shared.rules_for(line, among)
        truth = {rule for rule in among if rule == 8 or _holds_on(formulas[rule], text)}
        assert truth <= found <= among, (line, truth, found)
        if b"\\u0061" not in words:
            assert expected <= found, (line, expected, found)
            if seen <= set(words):
                assert found == expected, (line, expected, found)


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="route plans are made by the Hyperscan engine")
def test_a_route_plan_scans_for_a_narrowing_literal_only_where_its_first_lines_seldom_held_it():
    """``alpha and beta`` is indexed under alpha, the rarer of the two in the route's first lines;
    beta, which half of them held, is then taken as present (a line with alpha alone is tried),
    while ``delta`` and ``epsilon``, which none held, still rule out ``gamma and (delta or
    epsilon)`` on a line with gamma alone."""
    formulas = {0: (literals.AND, (b"alpha", b"beta")),
                1: (literals.AND, (b"gamma", (literals.OR, (b"delta", b"epsilon"))))}
    index = ri.RuleIndex(formulas, "hyperscan")
    sample = [[b"alpha", b"beta"]] * 10 + [[b"beta"]] * 40 + [[b"other"]] * 50
    index.ROUTE_AFTER = len(sample)
    among = frozenset(formulas)
    for words in sample:
        index.rules_for(_words_line(words), among)
    plan = index._routes[among]
    assert isinstance(plan, ri._Route)
    assert {index.needles[at] for at in plan.by_literal} == {b"alpha", b"gamma", b"delta", b"epsilon"}
    assert index.rules_for(_words_line([b"alpha"]), among) == {0}
    assert index.rules_for(_words_line([b"beta"]), among) == set()
    assert index.rules_for(_words_line([b"gamma"]), among) == set()
    assert index.rules_for(_words_line([b"gamma", b"epsilon"]), among) == {1}


SHARED_FORMULAS = {0: [b"alpha"], 1: (literals.AND, (b"beta", b"gamma")), 2: [b"delta", b"zeta"]}
SHARED_LINES = [_words_line(words) for words in ([b"alpha", b"beta"], [b"beta", b"gamma"], [b"beta", b"delta"],
                                                  [b"zeta"], [b"other"], [b"\\u0061lpha"],
                                                  [b"beta", b"gamma", b"zeta"])]


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="route plans are made by the Hyperscan engine")
def test_a_route_plan_is_made_once_and_read_by_the_other_processes_of_a_run(tmp_path, monkeypatch):
    among = frozenset({0, 1, 2})
    first, second = (ri.RuleIndex(SHARED_FORMULAS, "hyperscan") for _ in range(2))
    for index in (first, second):
        index.ROUTE_AFTER = 2
        index.share_plans(str(tmp_path))
    for line in SHARED_LINES[:2]:
        first.rules_for(line, among)
    assert isinstance(first._routes[among], ri._Route)
    monkeypatch.setattr(second, "_compile", lambda *_: pytest.fail("the plan was made again"))
    for line in SHARED_LINES[:2]:
        second.rules_for(line, among)
    assert isinstance(second._routes[among], ri._Route)
    for line in SHARED_LINES:
        assert second.rules_for(line, among) == first.rules_for(line, among)


@pytest.mark.skipif("hyperscan" not in ENGINES, reason="route plans are made by the Hyperscan engine")
def test_while_another_process_makes_a_plan_the_shared_database_answers_then_one_of_its_own(tmp_path):
    among = frozenset({0, 1, 2})
    index = ri.RuleIndex(SHARED_FORMULAS, "hyperscan")
    unplanned = ri.RuleIndex(SHARED_FORMULAS, "hyperscan")
    unplanned.MAX_ROUTES = 0
    index.ROUTE_AFTER, index.POLL, index.WAIT = 2, 2, 6
    index.share_plans(str(tmp_path))
    open(ri.plan_path(str(tmp_path), among) + ".lock", "w").close()  # another process is making it
    lines = SHARED_LINES * 2
    for seen, line in enumerate(lines[:7], 1):
        assert index.rules_for(line, among) == unplanned.rules_for(line, among)
        assert isinstance(index._routes[among], ri._Sample), seen
    index.rules_for(lines[7], among)  # ROUTE_AFTER + WAIT lines: the other process may have died
    assert isinstance(index._routes[among], ri._Route)
    assert os.path.exists(ri.plan_path(str(tmp_path), among))  # and the others may read it now


@given(streams(), st.integers(7, 4096), st.sampled_from([("wrap", True), ("wrap", False), ("pass", True)]),
       st.sampled_from([1_000_000, 600]))
def test_prefilter_never_changes_the_fluent_bit_output(data, block_size, mode, max_record):
    """The lines the prefilter rules out take a quicker way in the Fluent Bit modes (``_pass_framed``):
    the output is still that of every line parsed and written one by one."""
    expected = run_filter(data, "all", None, 1 << 20, *mode, max_record=max_record)
    for engine in ENGINES:
        assert run_filter(data, "all", engine, block_size, *mode, max_record=max_record) == expected, engine


@pytest.mark.parametrize("line", [b'{"a":"u003cEvent"}', b'{"a":"\\\\u003cEvent"}', b'{"a":"\\u003CEvent"}',
                                  b'{"a":"<Event"}', b'{"a":"x<Ev","b":"<\\u0045vent"}'])
def test_a_line_the_reading_takes_for_one_carrying_xml_is_never_ruled_out_when_times_are_wanted(line):
    """The reading looks for an event's XML in a line by ``carries_xml``, the prefilter by its marks: each line
    the first takes, the second parses alone (``xml_alone``), whatever letters the rule's needles hold."""
    for engine in ENGINES:
        scanner = pf.Prefilter([b"qqqzzz"], engine)
        scanner.xml_alone = True
        assert not carries_xml(line) or scanner.judge([line]) != [pf.SKIP], engine


def test_a_line_ruled_out_in_a_fluent_bit_mode_has_the_time_of_its_flattened_keys():
    """A key holding a dot (flattened ECS) is where the full parse finds a time path (``lookup_flattened``) and
    the event's shape (``winlog.event_id``: Winlogbeat's, whose time is ``@timestamp`` alone): a line the
    prefilter rules out, skimmed, must be framed with the same time."""
    data = (b'{"EventID":1,"Computer":"a","TimeCreated.SystemTime":"2021-06-03T13:00:00Z"}\n'
            b'{"winlog.event_id":4104,"TimeCreated":"2021-06-03T13:00:00Z"}\n'
            b'{"winlog\\u002eevent_id":4104,"TimeCreated":"2021-06-03T13:00:00Z"}\n'
            b'{"EventID":2,"@timestamp":"2021-06-03T13:00:05Z"}\n')
    expected = run_filter(data, "all", None, 1 << 20, "wrap", True)
    assert expected.startswith(b"[1622725200.000000000,")  # the first line's flattened time
    for engine in ENGINES:
        assert run_filter(data, "all", engine, 1 << 20, "wrap", True) == expected, engine


@given(streams(), st.integers(7, 4096), st.sampled_from(["alerts", "all"]),
       st.sampled_from([("wrap", True), ("wrap", False), ("pass", True)]), st.sampled_from([0.5, 30.0]))
@settings(max_examples=50)  # three runs of the filter each; the Fluent Bit property above covers more streams
def test_prefilter_never_changes_a_match_stages_fluent_bit_output_and_heartbeats(data, block_size, emit, mode,
                                                                                    every):
    """A match stage on one agent (``--heartbeat``) in the Fluent Bit modes: every line's time is read, so
    its heartbeats come after the same lines as when each line is parsed."""
    expected = run_filter(data, emit, None, 1 << 20, *mode, heartbeat=every)
    for engine in ENGINES:
        assert run_filter(data, emit, engine, block_size, *mode, heartbeat=every) == expected, engine


def test_a_match_stages_heartbeats_in_the_fluent_bit_modes_follow_the_lines_that_made_them_due():
    data = b"".join(json.dumps(flat_event(i, "ws04", "benign", 4104)).encode() + b"\n" for i in range(100))
    out = run_filter(data, "all", ENGINES[0], 1 << 20, "wrap", True, heartbeat=30.0).splitlines()
    beats = [n for n, line in enumerate(out) if b'"type":"sigma.heartbeat"' in line]
    # seconds 0, 30, 60, 90, each once the next second vouched for it (``Progress``); the end
    assert len(out) == 100 + len(beats) and beats == [2, 33, 64, 95, 104]


def forwarded_raw(data: bytes) -> bytes:
    """Each line as a collector forwarding raw lines writes it: {"date": ..., "log": "<the line>"}
    (a line that is not UTF-8 text stays as it is: Fluent Bit would change it)."""
    lines, final = [], data.endswith(b"\n")
    for line in (data[:-1] if final else data).split(b"\n"):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            lines.append(line)
            continue
        lines.append(json.dumps({"date": 1796169934.5, "log": text}, ensure_ascii=False).encode())
    return b"\n".join(lines) + (b"\n" if final else b"") if data else data


@given(streams(), st.integers(7, 4096), st.sampled_from(["alerts", "all"]),
       st.sampled_from([("pass", False), ("wrap", True)]))
def test_lines_forwarded_raw_give_the_output_of_the_lines_themselves(data, block_size, emit, mode):
    """``--line-field log``: the filter reads the line inside each record, so a collector that
    forwards raw lines changes nothing."""
    expected = run_filter(data, emit, None, 1 << 20, *mode)
    for engine in ENGINES:
        assert run_filter(forwarded_raw(data), emit, engine, block_size, *mode, line_field="log") == expected


def run_files(paths, emit: str, engine) -> bytes:
    """The filter over --input files, in process: each file's lines judged in batches, merged by time."""
    from pipeshell_filter.cli import _file_lines

    scanner = None if engine is None else pf.Prefilter(NEEDLES, engine)
    diagnostics = Diagnostics(io.StringIO())
    with tempfile.TemporaryFile() as sink:
        stream_filter = Filter(Engine([PLAN], FieldResolver(resolvers.PROFILES), 0), Output(sink.fileno()),
                               diagnostics, emit, prefilter=scanner, clock=lambda: 0)
        stream_filter.process_labelled(_file_lines(paths, stream_filter, diagnostics))
        stream_filter.finish()
        sink.seek(0)
        return sink.read()


@given(st.lists(st.tuples(st.integers(0, 900), st.sampled_from(HOSTS), st.sampled_from(["server", "client", "benign"]),
                          st.integers(0, 3)), max_size=30),
       st.sampled_from(["alerts", "matches", "all"]),
       st.lists(st.sampled_from((None,) + FRAMINGS), min_size=4, max_size=4), st.booleans())
def test_files_merged_by_event_time_give_what_their_time_ordered_concatenation_gives(events, emit, framings,
                                                                                       untimed):
    """Files of Fluent Bit's framed lines too (``framings``: each file's), ``untimed``: their events at the
    time of their frames alone."""
    files = [[] for _ in range(4)]  # each file in time order
    for seconds, host, kind, index in sorted(events, key=lambda e: e[0]):
        event = flat_event(seconds, host, kind)
        if framings[index] is not None and untimed:
            del event["@timestamp"]
        line = json.dumps(event).encode()
        files[index].append((seconds, line if framings[index] is None else framed(line, seconds, framings[index])))
    timeline = sorted((seconds, index, seq, line) for index, lines in enumerate(files)
                      for seq, (seconds, line) in enumerate(lines))
    expected = run_filter(b"".join(line + b"\n" for *_, line in timeline), emit, None, 1 << 20)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, lines in enumerate(files):
            paths.append(os.path.join(folder, f"{index}.ndjson"))
            with open(paths[-1], "wb") as handle:
                handle.write(b"".join(line + b"\n" for _, line in lines))
        for engine in ENGINES + [None]:
            assert run_files(paths, emit, engine) == expected, engine


def test_the_merge_of_an_out_of_order_file_does_not_depend_on_emit_or_the_prefilter(tmp_path):
    # a file out of time order: its later event's time holds back its earlier one (late), in every mode
    (tmp_path / "a.ndjson").write_bytes(b"\n".join(
        json.dumps(e).encode() for e in [flat_event(1000, "ws04", "benign"), flat_event(0, "srv01", "server")]))
    (tmp_path / "b.ndjson").write_bytes(b"\n".join(json.dumps(flat_event(t, h, "client")).encode()
                                                   for t, h in [(100, "cli01"), (110, "cli02"), (400, "cli03")]))
    paths = [str(tmp_path / "a.ndjson"), str(tmp_path / "b.ndjson")]
    found = {(emit, engine): alerts(run_files(paths, emit, engine))
             for emit in ("alerts", "matches", "all") for engine in ENGINES + [None]}
    # The same answer in every mode.  (Since the watermark follows the time two sources vouch for,
    # cli03's lone 400 no longer makes the server event at 0 too late to join the clients' window.)
    assert len({json.dumps(a, sort_keys=True) for a in found.values()}) == 1, found
    assert [a["related"]["hosts"] for a in found[("alerts", None)]] == [["cli01", "cli02", "srv01"]]


def test_the_property_streams_do_produce_matches_and_alerts():
    # guard against a generator that never exercises the interesting path
    data = b"\n".join(json.dumps(flat_event(t, h, k)).encode() for t, h, k in
                      [(0, "srv01", "server"), (10, "cli01", "client"), (20, "cli02", "client")])
    out = run_filter(data, "matches", "python", 64)
    assert out.count(b'"sigma":') == 4 and out.count(b'"kind":"alert"') == 1


# ---------------------------------------------------------------- a stop request (SIGTERM, Ctrl-C)

class StopAfterReads:
    """Requested once the reader has looked ``reads`` times; on a file it looks once before each read."""

    def __init__(self, reads: int):
        self.left = reads

    @property
    def requested(self) -> bool:
        self.left -= 1
        return self.left < 0


@given(streams(), st.sampled_from(["alerts", "matches", "all"]), st.integers(7, 512), st.integers(0, 12))
def test_a_stop_after_some_reads_gives_the_output_of_the_input_read_so_far(data, emit, block_size, reads):
    """Nothing read is lost, nothing more is read than the rest of the line the stop cut (a file's: its
    next lines are left in it, for a run with --state to read on from), and the input read so far ends
    as a whole input would."""
    read = min(reads * block_size, len(data))
    end = read if read == 0 or data[read - 1:read] == b"\n" else data.find(b"\n", read) + 1 or len(data)
    expected = run_filter(data[:end], emit, None, 1 << 20)
    for engine in ENGINES:
        assert run_filter(data, emit, engine, block_size, stop=StopAfterReads(reads)) == expected, engine


@pytest.mark.usefixtures("stop_signals_not_ignored")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_wait_for_input_and_what_was_read_goes_out(number):
    read_end, write_end = os.pipe()
    lines = [json.dumps(flat_event(t, h, k)).encode() for t, h, k in
             [(0, "srv01", "server"), (10, "cli01", "client"), (20, "cli02", "client")]]
    os.write(write_end, b"\n".join(lines) + b"\n" + lines[0][:10])  # and half a line: the writer is still busy
    previous = signal.getsignal(number)
    with tempfile.TemporaryFile() as sink, stream_module.StopRequest() as stop:
        stream_filter = Filter(Engine([PLAN], FieldResolver(builtin_profiles()), 600 * 10 ** 9),
                               Output(sink.fileno()), Diagnostics(io.StringIO()), "all", prefilter=None)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), number))
        timer.start()
        started = time.monotonic()
        stream_filter.run(read_end, live=True, stop=stop)  # the pipe stays open: only the signal ends this
        stream_filter.finish()
        assert stop.requested and time.monotonic() - started < 10
        sink.seek(0)
        out = sink.read().split(b"\n")
    os.close(read_end)
    os.close(write_end)
    assert out[3] == lines[0][:10] and out[4].count(b'"kind":"alert"') == 1 and out[5] == b""
    assert signal.getsignal(number) == previous and signal.set_wakeup_fd(-1) == -1  # given back


@pytest.mark.usefixtures("stop_signals_not_ignored")
def test_a_stop_ends_the_wait_to_open_a_fifo_no_writer_opens(tmp_path):
    """``open`` of a FIFO returns only once a writer opens it, and retries after each signal: a filter
    given one no writer ever opened ignored SIGTERM, and only SIGKILL ended it.  A writer opens it five
    seconds on, so that a filter that still waits fails this test rather than hanging it."""
    from pipeshell_filter.io import inputs
    from pipeshell_filter.io.signals import StoppedOpening

    fifo = str(tmp_path / "events.ndjson")
    os.mkfifo(fifo)
    rescue = threading.Timer(5.0, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    stop_signal = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    with stream_module.StopRequest() as stop:
        rescue.start()
        stop_signal.start()
        started = time.monotonic()
        try:
            with pytest.raises(StoppedOpening):
                inputs.open_input(fifo, stop).close()
        finally:
            rescue.cancel()
        assert stop.requested and time.monotonic() - started < 5


def test_a_stop_at_any_step_of_starting_an_open_ends_it():
    """The signal comes at each step of entering ``opening`` in turn (its handler run there, as Python
    runs one between two lines): each time the open is given up before it starts.  The flag was set
    after the stop was looked at, and a signal between the two left the open waiting for a writer."""
    import sys

    from pipeshell_filter.io.signals import StoppedOpening, StopRequest

    code = StopRequest.opening.__wrapped__.__code__
    for step in range(20):
        stop, steps, opened = StopRequest(), [0], []

        def in_opening(frame, event, _arg):
            if event == "line":
                if steps[0] == step:
                    stop.set()  # the signal's handler, between two lines
                steps[0] += 1
            return in_opening

        previous = sys.gettrace()
        sys.settrace(lambda frame, event, arg: in_opening if frame.f_code is code else None)
        try:
            with stop.opening():
                opened.append(steps[0] > step)  # entered: whether the signal came on the way in
        except StoppedOpening:
            assert stop.requested
        finally:
            sys.settrace(previous)
        if opened:
            assert opened == [False], f"a signal at step {step} did not end the open"
            break
    else:
        raise AssertionError("opening was never entered")


def test_a_second_signal_ends_the_run_at_once_and_an_ignored_signal_stays_ignored():
    from pipeshell_filter.io.signals import Terminated

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with stream_module.StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == stop.set
            stop.set()
            assert stop.requested
            time.sleep(stream_module.StopRequest.REPEAT)
            with pytest.raises(Terminated):  # the first one could not end the run (a stuck consumer)
                stop.set()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_one_stop_signalled_twice_at_once_is_one_stop():
    """coreutils' timeout sends its SIGTERM to the filter, then to its own process group, the filter in it:
    two at once. Taken as a second signal, it ended a correlate stage on the bus at once, without its flush,
    its summary line or its state saved (its bus thread let both through: 3 runs of 6 under timeout)."""
    from pipeshell_filter.io.signals import Terminated

    stop = stream_module.StopRequest()
    stop.set()
    stop.set()  # the same stop, delivered again a moment later
    assert stop.requested
    time.sleep(stream_module.StopRequest.REPEAT)
    with pytest.raises(Terminated):  # a signal sent later is a second stop, as ever
        stop.set()


def test_the_declared_hyperscan_scans_a_memoryview():
    """pyproject.toml asked for hyperscan>=0.7 on every Python: 0.7.x (the last releases with Python 3.9
    wheels) raise TypeError on the memoryview the prefilter scans, and on 3.9 pip built the newest from
    source, which failed the install. From 0.8 on, and never on 3.9, where the Python scanner runs."""
    packaging = pytest.importorskip("packaging.requirements")
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"), "rb") as handle:
        declared = tomllib.load(handle)["project"]["dependencies"]
    wanted = [packaging.Requirement(d) for d in declared if d.startswith("hyperscan")]
    linux = {"sys_platform": "linux", "platform_machine": "x86_64"}
    for version, allowed in (("3.9", False), ("3.10", True), ("3.13", True)):
        environment = {**linux, "python_version": version}
        applies = [r for r in wanted if r.marker is None or r.marker.evaluate(environment)]
        assert bool(applies) == allowed, version
        assert all(not r.specifier.contains("0.7.30") and r.specifier.contains("0.8.0") for r in applies)
    if pf.hyperscan is not None:  # the installed one does scan a memoryview
        prefilter = pf.Prefilter([b"pipe"], "hyperscan")
        block = b'{"a": "x"}\n{"b": "PIPE"}\n'
        assert prefilter.scan(block, 0, len(block))[0]


def test_the_same_patterns_are_compiled_once():
    """A Fluent Bit mode's skimmer compiles six databases (90 ms), and a match stage with heartbeats
    made its skimmer twice; each test of the same patterns is now the one compiled first."""
    first = pf.any_of([b"x", rb"[0-9]{512}"])
    assert pf.any_of([b"x", rb"[0-9]{512}"]) is first and pf.any_of([b"x"]) is not first
    assert first(b"ax") and first(b"1" * 512) and not first(b"a" + b"1" * 511)
    assert pf.any_of([b"x", rb"[0-9]{512}"], "python") is not first


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([b'{"x": "New-Object Net.Sockets.TcpListener"}', b'{"x": "benign"}', b"", b"\xff{",
                                 b'{"y": "tcplistener"}']), max_size=40),
       st.lists(st.booleans(), max_size=40), st.integers(1, 200))
def test_a_batch_judged_early_gives_the_verdicts_of_a_full_one(lines, answers, batch_bytes):
    """A pipe among merged inputs has its batch judged as soon as it would wait (``ready`` False), not once
    full: the lines and verdicts are the same however the batches were cut."""
    from pipeshell_filter.io.inputs import judged

    labelled = [(f"pipe line {number}", line) for number, line in enumerate(lines, 1)]
    prefilter = pf.Prefilter(NEEDLES)
    ready = iter(answers)
    early = list(judged(iter(labelled), prefilter, batch_bytes, lambda: next(ready, True)))
    assert early == list(judged(iter(labelled), prefilter, 1 << 20))
