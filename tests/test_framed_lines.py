"""Fluent Bit's framed lines (``io.frames``): ``[TIME, {record}]``, ``[[TIME, {metadata}], {record}]`` and its
file output's ``TAG: [TIME, {record}]``, read as the record they hold, in every mode."""

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clitools import REPO, alerts, records, run_cli_here
from eventgen import BASE, FRAME_GARBAGE, FRAMINGS, flat_event, framed
from pipeshell_filter.io import frames as framing
from pipeshell_filter.io.stream import every_value, load_framed

SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")
NS = 10 ** 9


def alerts_among(stdout: bytes) -> list:
    """The alerts among lines that may be a tagged frame's, which are not JSON."""
    return alerts(b"\n".join(line for line in stdout.splitlines() if line.startswith(b"{")))


def sample_lines() -> list:
    with open(SAMPLE, "rb") as handle:
        return handle.read().splitlines()


def frame_all(lines, framing_name, seconds=100.0) -> bytes:
    return b"".join(framed(line, seconds + i, framing_name) + b"\n" for i, line in enumerate(lines))


@pytest.mark.parametrize("line, record, seconds", [
    (b'[1796431136.200271588, {"a":1}]', b'{"a":1}', 1796431136200271588),
    (b'win: [1796431136.200271588, {"a":1}]', b'{"a":1}', 1796431136200271588),
    (b'kube.var.log: [ 12 ,{"a":[1,{"b":"}]"}]} ] ', b'{"a":[1,{"b":"}]"}]}', 12 * NS),
    (b'[[1.5, {"m":"{x}", "n":[1,"]"]}], {"a":1}]', b'{"a":1}', 1_500_000_000),
    (b'[[1.5,{}],{}]', b'{}', 1_500_000_000),
    (b'[1.5e3, {"a":1}]', b'{"a":1}', 1_500 * NS),
    (b'[-1, {"a":1}]', b'{"a":1}', None),  # a time Fluent Bit cannot have written: the record's own or none
    (b'[1e400, {"a":1}]', b'{"a":1}', None),
    # a TIME whose exact value is out of Decimal's default range (Overflow), or whose integer has a million
    # digits (21 s of CPU to make for one line of 20 bytes): none, at once
    (b'[1e999999, {"a":1}]', b'{"a":1}', None),
    (b'[-1e99999999999, {"a":1}]', b'{"a":1}', None),
    (b'[1e999990, {"a":1}]', b'{"a":1}', None),
    (b'[1e-999999, {"a":1}]', b'{"a":1}', 0),
    (b'[-0.0, {"a":1}]', b'{"a":1}', 0),
])
def test_a_frame_is_read_as_its_record_at_its_time(line, record, seconds):
    text, event = load_framed(line)
    assert text == record and event == json.loads(record)
    assert getattr(event, "frame_time", None) == seconds


@pytest.mark.parametrize("line", [b'{"a":1}', b"not json", b"Dec  5 host sysmon: <Event/>", b"", b"win : [1, {}]"])
def test_a_line_that_does_not_open_like_a_frame_is_not_one(line):
    assert framing.opening(line) is None and load_framed(line) is None


@pytest.mark.parametrize("line", [line for line in FRAME_GARBAGE if line not in (b"[1e400, {}]", b"[-3, {}]")])
def test_a_line_that_opens_like_a_frame_and_is_none_is_refused(line):
    if framing.opening(line) is None:
        pytest.skip("not opened like a frame: diagnosed as any line")
    with pytest.raises(ValueError):
        load_framed(line)


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=8), st.integers(), st.lists(st.text(max_size=3),
                                                                                                   max_size=2))),
       st.sampled_from(FRAMINGS), st.integers(0, 10 ** 6))
def test_any_record_in_any_frame_is_read_back_byte_for_byte(record, framing_name, seconds):
    text = json.dumps(record, ensure_ascii=False).encode()
    read, event = load_framed(framed(text, seconds, framing_name))
    assert read == text and event == record
    assert event.frame_time == int((BASE.timestamp() + seconds) * NS)


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_an_archive_of_frames_alerts_as_the_plain_file_and_keeps_its_framing(framing_name):
    lines = sample_lines()
    plain = run_cli_here(["--emit", "all", "--quiet"], b"".join(line + b"\n" for line in lines))
    archive = frame_all(lines, framing_name)
    done = run_cli_here(["--emit", "all", "--quiet"], archive)
    assert done.returncode == 0 and done.stderr == b""
    assert alerts_among(done.stdout) and alerts_among(done.stdout) == alerts(plain.stdout)
    got, expected = done.stdout.splitlines(), plain.stdout.splitlines()
    assert len(got) == len(expected)
    for out, plain_out, framed_in, plain_in in zip(got, expected, archive.splitlines() + [None], lines + [None]):
        if plain_out == plain_in:  # unmatched: byte for byte
            assert out == framed_in
        elif plain_in is not None and plain_out.startswith(b"{\"Event\""):  # enriched: inside its own frame
            head = framed_in[:framed_in.index(plain_in)]
            assert out == head + plain_out + framed_in[len(head) + len(plain_in):]


def test_the_frames_time_is_the_events_only_where_it_has_none_of_its_own():
    own = flat_event(10, "cli01", "benign")
    untimed = dict(own)
    del untimed["@timestamp"]
    data = b"".join(framed(json.dumps(event).encode(), 3600, name) + b"\n"
                    for event in (own, untimed) for name in FRAMINGS)
    done = run_cli_here(["--emit", "all", "--fluentbit-time", "--quiet"], data)
    out = records(done.stdout)
    assert [type(r) for r in out] == [list] * 8
    expected_own, expected_frame = BASE.timestamp() + 10, BASE.timestamp() + 3600
    assert [r[0] for r in out] == [expected_own] * 4 + [expected_frame] * 4
    assert [r[1] for r in out] == [own] * 4 + [untimed] * 4  # the record alone: no tag, no metadata


def test_an_untimed_framed_event_correlates_at_its_frames_time():
    """The sample's events without their own times, each in a frame at that time: the same alert."""
    lines = sample_lines()
    plain = alerts(run_cli_here(["--quiet"], b"".join(line + b"\n" for line in lines)).stdout)
    archive = []
    for line in lines:
        event = json.loads(line)
        stamp = event["Event"]["System"]["TimeCreated"]["#attributes"].pop("SystemTime")
        seconds = _epoch(stamp)
        archive.append(b"win: [%.6f, %s]\n" % (seconds, json.dumps(event).encode()))
    got = alerts(run_cli_here(["--quiet"], b"".join(archive)).stdout)
    assert [a["@timestamp"] for a in got] == [a["@timestamp"] for a in plain] and got


def _epoch(stamp: str) -> float:
    import datetime
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float("0." + (fraction or "0"))


@pytest.mark.parametrize("mode", [[], ["--non-json", "wrap"], ["--fluentbit-time"], ["--no-prefilter"]])
def test_a_malformed_frame_is_diagnosed_in_one_line_counted_and_goes_on(mode):
    bad = [b"[1, 2]", b"tag: [x", b'[1.5, {"a":1}', b"[1.5, [1]]", b'[[1.5, {}], [1]]']
    good = b'[1.5, {"a":1}]'
    data = b"".join(line + b"\n" for line in bad + [good])
    done = run_cli_here(["--emit", "all"] + mode, data)
    assert done.returncode == 0
    said = done.stderr.decode().splitlines()
    assert len(said) == len(bad) + 1 and all("Fluent Bit frame" in line for line in said[:-1]), said
    assert "2 invalid JSON, 3 not an object" in said[-1]
    out = done.stdout.splitlines()
    if not mode or mode == ["--no-prefilter"]:
        assert out == bad + [good]
        return
    wrapped = [json.loads(line) if line.startswith(b"{") else json.loads(line)[1] for line in out]
    assert [w["event"]["original"].encode() for w in wrapped[:-1]] == bad
    assert {w["event"]["kind"] for w in wrapped[:-1]} == {"pipeline_error"} and wrapped[-1] == {"a": 1}


def test_explain_reads_a_framed_line(tmp_path):
    path = tmp_path / "one.log"
    path.write_bytes(framed(b'{"EventID":4104,"ScriptBlockText":"x"}', 60, "tag") + b"\n")
    done = run_cli_here(["explain", "--event", str(path)])
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "Fluent Bit frame" in text and "time      2021-06-03T13:01:00" in text and "TIME" in text


def test_merged_inputs_of_frames_without_times_are_ordered_by_their_frames(tmp_path):
    lines = sample_lines()
    plain = alerts(run_cli_here(["--quiet"], b"".join(line + b"\n" for line in lines)).stdout)
    halves = []
    for part, name in ((lines[0::2], "tag"), (lines[1::2], "meta")):
        archive = []
        for line in part:
            event = json.loads(line)
            seconds = _epoch(event["Event"]["System"]["TimeCreated"]["#attributes"].pop("SystemTime"))
            archive.append(b"[[%.6f, {}], %s]\n" % (seconds, json.dumps(event).encode()) if name == "meta" else
                           b"win: [%.6f, %s]\n" % (seconds, json.dumps(event).encode()))
        halves.append(tmp_path / f"{name}.log")
        halves[-1].write_bytes(b"".join(archive))
    done = run_cli_here(["--quiet", "--input", str(halves[0]), "--input", str(halves[1])])
    assert done.returncode == 0, done.stderr
    got = alerts(done.stdout)
    assert got and [a["@timestamp"] for a in got] == [a["@timestamp"] for a in plain]


def test_a_framed_events_repeated_keys_keep_the_frames_time():
    """EVTX's repeated Data names, read again keeping every value (an .evtx among the inputs), in a frame: the
    event read again still has the frame's time where it has none of its own (it lost it: no time, no
    correlation, an alert without @timestamp)."""
    line = (b'win: [1767225600.5, {"Event":{"System":{"EventID":4732,"Computer":"h"},'
            b'"EventData":{"Group":"Administrators","Group":"Users"}}}]')
    text, event = load_framed(line)
    merged = every_value(text, event)
    assert merged["Event"]["EventData"]["Group"] == ["Administrators", "Users"]
    assert merged.frame_time == 1767225600_500_000_000


_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                            | st.text(alphabet=st.sampled_from('ab"\\{}[],: \t'), max_size=6),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=3), max_leaves=12)


@given(_JSON_VALUES, st.sampled_from(["", " ", "\t \r\n", " " * 3000]), st.sampled_from([",", "]", "}", " ,", ""]))
def test_value_end_finds_where_any_json_value_ends(value, blanks, after):
    """``frames.value_end`` (where a frame's metadata ends, and ``stream._without_member``), on any value
    spelled with any blanks before it and between its tokens."""
    spelled = json.dumps(value, separators=(blanks + "," + blanks, ":" + blanks)).encode()
    text = b"[" + blanks.encode() + spelled + after.encode()
    assert framing.value_end(text, 1) == 1 + len(blanks) + len(spelled)


def test_a_frames_metadata_of_many_blanks_is_read():
    line = b'[[1.5, {"m":1' + b" " * 100_000 + b'}], {"a":1}]'
    assert load_framed(line) == (b'{"a":1}', {"a": 1})


@pytest.mark.parametrize("mode", [["--stage", "match"], ["--no-prefilter"], ["two inputs"]])
def test_a_frame_time_beyond_decimals_range_goes_on_in_every_mode(mode, tmp_path):
    """``[1e999999, {...}]`` crashed a match stage (its heartbeats sample lines), a merge of inputs (their
    frames' times order them) and any line read in full."""
    data = b'[1e999999, {"a":1}]\n' + framed(b'{"a":2}', 1, "plain") + b"\n"
    if mode == ["two inputs"]:
        paths = [tmp_path / "one.log", tmp_path / "two.log"]
        for path in paths:
            path.write_bytes(data)
        done = run_cli_here(["--emit", "all", "--input", str(paths[0]), "--input", str(paths[1])])
    else:
        done = run_cli_here(mode + ["--emit", "all"], data)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert done.stdout.count(b'{"a":1}') == (2 if mode == ["two inputs"] else 1)


@pytest.mark.parametrize("framing_name", FRAMINGS)
def test_a_framed_collector_record_is_unwrapped_by_line_field(framing_name):
    """Fluent Bit's file output archiving ``tail`` without a parser writes ``TAG: [TIME, {"log": "<line>"}]``:
    ``--line-field log`` read nothing of it (every line left as it was, no alert), as a plain ``{"log": ...}``
    record alerts."""
    wrapped = [json.dumps({"log": line.decode()}).encode() for line in sample_lines()]
    plain = run_cli_here(["--line-field", "log"], b"\n".join(wrapped) + b"\n")
    archive = run_cli_here(["--line-field", "log"], frame_all(wrapped, framing_name))
    assert plain.returncode == archive.returncode == 0, archive.stderr
    assert len(alerts(plain.stdout)) == 1 and alerts(archive.stdout) == alerts(plain.stdout)
    assert archive.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1]


@pytest.mark.parametrize("framing_name", (None,) + tuple(FRAMINGS))
def test_a_collector_record_after_a_byte_order_mark_is_unwrapped_by_line_field(framing_name):
    """A byte order mark before a ``{"log": "<line>"}`` record (a forwarder's file joined with cat) was said to be
    ignored, yet the record was read as the event: the line in it never unwrapped, its alert missed."""
    from pipeshell_filter.io.stream import BOM

    wrapped = [json.dumps({"log": line.decode()}).encode() for line in sample_lines()]
    lines = wrapped if framing_name is None else frame_all(wrapped, framing_name).splitlines()
    marked = b"".join(BOM + line + b"\n" for line in lines)
    plain = run_cli_here(["--line-field", "log"], b"".join(line + b"\n" for line in lines))
    for mode in ([], ["--no-prefilter"], ["--non-json", "wrap"]):
        done = run_cli_here(["--line-field", "log"] + mode, marked)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
        assert len(alerts_among(done.stdout)) == 1 and alerts_among(done.stdout) == alerts_among(plain.stdout)
        assert b"%d byte order mark(s) ignored" % len(lines) in done.stderr.splitlines()[-1]



def test_a_line_field_ending_in_its_newline_is_that_line(tmp_path):
    """Docker's json-file driver (and Fluent Bit's tail with its docker parser) keeps each line's newline in
    ``log`` (``{"log": "<line>\\n", "stream": "stdout", "time": ...}``): --line-field log read such a record as
    it was, a flat event no rule meets, so none of the lines matched.  One newline at the end is the line's
    end; a text holding another is no line, and stays as it is."""
    records = [json.dumps({"log": line.decode() + "\n", "stream": "stdout", "time": "2021-06-03T13:00:00Z"})
               for line in sample_lines()]
    records.append(json.dumps({"log": sample_lines()[0].decode() + "\n\n"}))
    plain = run_cli_here(["--emit", "all", "--input", SAMPLE])
    docker = run_cli_here(["--emit", "all", "--line-field", "log"], "\n".join(records).encode() + b"\n")
    assert plain.returncode == docker.returncode == 0, docker.stderr
    assert alerts(docker.stdout) and alerts(docker.stdout) == alerts(plain.stdout)
    lines = docker.stdout.splitlines()
    lines.remove(records[-1].encode())  # two newlines: no line, passed on as it came
    assert lines == plain.stdout.splitlines()
