"""A file input read on where the last run left it (``--state``, ``io/position.py``), and a stop that
ends at a line's end.

In process: a file that grows between runs, cut anywhere (mid-line too), or runs stopped anywhere,
each run a fresh filter with the state taken back: every line of the file goes out once, whole,
as one run over the whole file writes it.  Then the real CLI: the same file read on, a file
replaced or rewritten read from its start, ``< FILE``, a damaged place refused, and a stop whose
cut line's rest a pipe brings a moment later.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from hypothesis import event, given, settings, strategies as st

from clitools import COMMAND, alerts, ndjson, read_all, run_cli
from eventgen import flat_event
from pipeshell_filter import cli
from pipeshell_filter.correlate import state as state_module
from pipeshell_filter.io import position, stream
from test_prefilter import StopAfterReads
from test_state import alert_records, assert_no_event_alerts_twice, lines_of, new_filter, cut_streams


def run_on(path: str, state_path: str, lateness: int, emit: str, workers: int, stop=None, block_size=None,
           then=None) -> tuple:
    """A fresh process, as it were, on the file at ``path``: (output, alerts its end wrote); ``then``
    runs once the place in the file was taken from the saved state, before the first read."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, emit, state_path)
        if then is not None:
            place_in = stream_filter._place_in
            stream_filter._place_in = lambda *args: (place_in(*args), then())[0]
        stream_filter.workers, stream_filter.parallel_min, stream_filter.parallel_chunk = workers, 0, 256
        with open(path, "rb") as handle:
            options = {} if block_size is None else {"block_size": block_size}
            stream_filter.run(handle.fileno(), live=False, stop=stop, path=path, **options)
        before = stream_filter.engine.stats["alerts"]
        stream_filter.finish(keep_open=stop is not None)
        sink.seek(0)
        return sink.read(), stream_filter.engine.stats["alerts"] - before


def whole_run(data: bytes, folder, lateness: int, emit: str) -> bytes:
    path = str(folder / "whole.ndjson")
    with open(path, "wb") as handle:
        handle.write(data)
    return run_on(path, None, lateness, emit, 0)[0]


def cut_forms(output: bytes, data: bytes) -> tuple:
    """``output`` without the lines that are a cut form of a line of ``data`` (an end of input that
    met a line still being written passes it on as it was), and how many there were."""
    lines = set(data.splitlines())
    kept = [line for line in output.splitlines(keepends=True)
            if line.rstrip(b"\n") in lines or not any(whole.startswith(line.rstrip(b"\n")) for whole in lines)]
    return b"".join(kept), output.count(b"\n") - len(kept)


@settings(max_examples=40)
@given(cut_streams(), st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=3),
       st.sampled_from([0, 30, 400]),
       st.sampled_from(["alerts", "all"]), st.sampled_from([0, 2]), st.booleans())
def test_a_file_that_grows_between_runs_goes_out_once_as_one_run_writes_it(tmp_path_factory, case, growth, lateness,
                                                                          emit, workers, raced):
    """The file grows between runs, cut at any byte (a writer's line half written at a run's end), or
    not at all, or (``raced``) just after a run looked where its saved state left the file: every line
    goes out once, whole, with its line number in the file; the cut forms an end of input met come
    besides, each once.  When no end of input alerted early, byte for byte one run's output."""
    events, _, without_ids = case
    data = b"".join(lines_of(events, without_ids))
    folder = tmp_path_factory.mktemp("grow")
    path, state_path = str(folder / "events.ndjson"), str(folder / "state.json")
    outputs, paused_with_alerts = [], False
    cuts = sorted(int(share * len(data)) for share, twice in growth for _ in range(1 + twice)) + [len(data)]
    written = 0
    for i, cut in enumerate(cuts):
        def grow(piece=data[written:cut]):
            with open(path, "ab") as handle:
                handle.write(piece)
        if not (raced and i):
            grow()
        written = cut
        output, at_end = run_on(path, state_path, lateness, emit, workers, then=grow if raced and i else None)
        outputs.append(output)
        paused_with_alerts |= bool(at_end) and i < len(cuts) - 1
        saved = json.load(open(state_path))
        place = saved["input"]
        assert place["offset"] + place["unterminated"] == cut and place["path"] == path
        assert saved["lines"] == data[:cut].count(b"\n") + bool(place["unterminated"])
    joined, cut_lines = cut_forms(b"".join(outputs), data)
    whole = whole_run(data, folder, lateness, emit)
    event(f"cut lines passed on: {bool(cut_lines)}; a pause alerted: {paused_with_alerts}")
    if emit == "alerts":
        assert cut_lines == 0
    if not paused_with_alerts:
        assert joined == whole
    else:  # a pause's flush alerted early: the same events, each alerted on once
        events_only = [line for line in joined.splitlines() if b'"kind":"alert"' not in line]
        assert events_only == [line for line in whole.splitlines() if b'"kind":"alert"' not in line]
        assert_no_event_alerts_twice(alert_records(joined))


def _files_written(contents: list, folder) -> tuple:
    """Each of ``contents`` written to a file of its own in ``folder``: (their paths, where the state goes)."""
    paths = [str(folder / f"f{i}.ndjson") for i in range(len(contents))]
    for path, content in zip(paths, contents):
        with open(path, "wb") as handle:
            handle.write(content)
    return paths, str(folder / "state.json")


def _written(case, folder) -> tuple:
    """A stream's lines written to ``events.ndjson`` in ``folder``: (its bytes, the folder, its path, where
    its state goes)."""
    events, _, without_ids = case
    data = b"".join(lines_of(events, without_ids))
    path, state_path = str(folder / "events.ndjson"), str(folder / "state.json")
    with open(path, "wb") as handle:
        handle.write(data)
    return data, folder, path, state_path


@settings(max_examples=40)
@given(cut_streams(), st.integers(7, 300), st.integers(0, 6), st.sampled_from([0, 30, 400]),
       st.sampled_from(["alerts", "all"]), st.sampled_from([0, 2]))
def test_runs_stopped_anywhere_in_a_file_write_what_one_run_writes(tmp_path_factory, case, block_size, reads,
                                                                  lateness, emit, workers):
    """Each run stopped after a few reads (mid-line, mostly) with the windows left open (``--on-stop
    keep``), the next one on the same file: together, byte for byte what one run writes."""
    data, folder, path, state_path = _written(case, tmp_path_factory.mktemp("stops"))
    outputs = []
    for _ in range(len(data) // block_size + 2):
        outputs.append(run_on(path, state_path, lateness, emit, workers, StopAfterReads(reads), block_size)[0])
        if json.load(open(state_path))["input"]["offset"] == len(data):
            break
    outputs.append(run_on(path, state_path, lateness, emit, 0)[0])  # the end of input
    assert b"".join(outputs) == whole_run(data, folder, lateness, emit)


# ------------------------------------------------------------ several files merged (--input DIR)

def run_merged(paths: list, state_path, lateness: int, emit: str, stop=None, then=None) -> bytes:
    """A fresh process, as it were, on the files merged by event time, as ``--input DIR`` reads them;
    ``then`` runs once the files' places were taken from the saved state, before the first read."""
    place_all = position.FilePlaces.place_all
    if then is not None:
        position.FilePlaces.place_all = lambda places: (place_all(places), then())
    try:
        with tempfile.TemporaryFile() as sink:
            stream_filter = new_filter(sink, lateness, emit, state_path)
            stream_filter.process_labelled(cli._file_lines(paths, stream_filter, stream_filter.diagnostics),
                                           stream.DEFAULT_MAX_LINE, stop)
            stream_filter.finish(keep_open=stop is not None)
            sink.seek(0)
            return sink.read()
    finally:
        position.FilePlaces.place_all = place_all


@st.composite
def files_of(draw):
    """A stream's lines dealt to two or three files, each file in time order (as logs are written)."""
    events, _, without_ids = draw(cut_streams())
    count = draw(st.integers(2, 3))
    dealt = [draw(st.integers(0, count - 1)) for _ in events]
    lines = lines_of(events, without_ids)
    files = [sorted((e for e, f in zip(zip(events, lines), dealt) if f == i), key=lambda pair: pair[0][0])
             for i in range(count)]
    return [b"".join(line for _, line in file) for file in files]


@settings(max_examples=40)
@given(files_of(), st.integers(0, 8), st.sampled_from([0, 30, 400]), st.sampled_from(["alerts", "all"]))
def test_merged_files_stopped_anywhere_write_what_one_run_writes(tmp_path_factory, contents, lines_each,
                                                                 lateness, emit):
    """Runs on the same files stopped after a few lines each, the windows left open, then one to the
    end: together, byte for byte what one run over them writes (each file read on where it was left,
    the merge going on from there)."""
    folder = tmp_path_factory.mktemp("merged")
    paths, state_path = _files_written(contents, folder)
    outputs = [run_merged(paths, state_path, lateness, emit, StopAfterReads(lines_each)) for _ in range(3)]
    outputs.append(run_merged(paths, state_path, lateness, emit))
    assert b"".join(outputs) == run_merged(paths, None, lateness, emit)


@settings(max_examples=40)
@given(files_of(), st.lists(st.floats(0, 1), min_size=1, max_size=2), st.sampled_from(["alerts", "all"]),
       st.booleans())
def test_merged_files_that_grow_between_runs_go_out_once(tmp_path_factory, contents, growth, emit, raced):
    """Each file grows between runs, cut at any byte, or (``raced``) just after a run looked where its
    saved state left the files: every line of every file goes out once, whole, in its file's order
    (the cut forms an end of input met besides), and no event is alerted on twice."""
    folder = tmp_path_factory.mktemp("grown")
    paths = [str(folder / f"f{i}.ndjson") for i in range(len(contents))]
    state_path = str(folder / "state.json")
    written = [0] * len(contents)
    outputs = []
    for run, share in enumerate(sorted(growth) + [1.0]):
        def grow(share=share):
            for i, (path, content) in enumerate(zip(paths, contents)):
                cut = int(share * len(content))
                with open(path, "ab") as handle:
                    handle.write(content[written[i]:cut])
                written[i] = max(written[i], cut)
        if not (raced and run):
            grow()
        outputs.append(run_merged(paths, state_path, 30, emit, then=grow if raced and run else None))
        saved = json.load(open(state_path))
        marks = {mark["path"]: mark for mark in saved["inputs"]}
        counted = [content[:end].count(b"\n") + bool(marks[os.path.realpath(path)]["unterminated"])
                   for path, content, end in zip(paths, contents, written)]
        assert [marks[os.path.realpath(path)]["lines"] for path in paths] == counted
    joined, _ = cut_forms(b"".join(outputs), b"".join(contents))
    passed = [_unenriched(line) for line in joined.splitlines() if b'"kind":"alert"' not in line]
    if emit == "all":
        assert sorted(passed) == sorted(line for content in contents for line in content.splitlines())
        for content in contents:
            own = content.splitlines()
            if all(sum(line in other.splitlines() for other in contents) == 1 for line in own):
                assert [line for line in passed if line in own] == own
    assert_no_event_alerts_twice(alert_records(joined))


def _unenriched(line: bytes) -> bytes:
    """An output line as its input line was: without the ``sigma`` object spliced in before its end."""
    at = line.rfind(b',"sigma":{')
    return line[:at] + b"}" if at >= 0 else line


# ------------------------------------------------------------ the real CLI

ARGS = ["--emit", "all", "--lateness", "0"]
INCIDENT = [flat_event(0, "srv01", "server", record_id=1), flat_event(30, "cli01", "client", record_id=2),
            flat_event(60, "cli02", "client", record_id=3)]
BENIGN = [dict(flat_event(t, "h", "server", record_id=100 + t), EventID=1) for t in range(5)]


def passed_on(output: bytes) -> list:
    """The events the output passed on, as objects, without what enriched them."""
    records = [json.loads(line) for line in output.splitlines()]
    return [{key: value for key, value in record.items() if key != "sigma"} for record in records
            if not (isinstance(record.get("event"), dict) and record["event"].get("kind") == "alert")]


def test_the_same_file_is_read_on_where_the_last_run_left_it(tmp_path):
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(BENIGN + INCIDENT[:1]))
    first = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert first.returncode == 0 and first.stdout.count(b"\n") == 6 and alerts(first.stdout) == []
    again = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert again.returncode == 0 and again.stdout == b"", again.stderr
    assert f"input {path}: read on from line 7 (byte {path.stat().st_size}), where the saved state left it" \
        in again.stderr.decode()
    with open(path, "ab") as handle:
        handle.write(ndjson(INCIDENT[1:]))
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert rest.returncode == 0 and passed_on(rest.stdout) == INCIDENT[1:], rest.stderr
    [alert] = alerts(rest.stdout)  # the incident cut by the restarts, its lines named as in the file
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [6, 7, 8]
    assert b"2 lines" in rest.stderr.splitlines()[-1]


def test_standard_input_from_the_same_file_is_read_on_too(tmp_path):
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(INCIDENT[:2]))
    with open(path, "rb") as stdin:
        first = subprocess.run(COMMAND + ARGS + ["--state", state], stdin=stdin, capture_output=True, timeout=60)
    assert first.returncode == 0 and first.stdout.count(b"\n") == 2
    with open(path, "ab") as handle:
        handle.write(ndjson(INCIDENT[2:]))
    with open(path, "rb") as stdin:
        rest = subprocess.run(COMMAND + ARGS + ["--state", state], stdin=stdin, capture_output=True, timeout=60)
    assert passed_on(rest.stdout) == INCIDENT[2:] and len(alerts(rest.stdout)) == 1


def test_a_file_replaced_or_rewritten_is_read_from_its_start_and_its_events_taken_once(tmp_path):
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(BENIGN + INCIDENT[:2]))
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    os.rename(path, tmp_path / "events.ndjson.1")  # rotated: a new file under the same name
    path.write_bytes(ndjson(INCIDENT))
    rotated = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert f"input {path}: not the bytes the saved state read there (replaced, rotated, rewritten or cut shorter): " \
        "read from its start" in rotated.stderr.decode()
    assert passed_on(rotated.stdout) == INCIDENT and len(alerts(rotated.stdout)) == 1
    assert b"2 sent again (taken once)" in rotated.stderr
    with open(path, "r+b") as handle:  # the same file, written over from its start
        handle.write(ndjson(BENIGN))
    rewritten = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert f"input {path}: not the bytes the saved state read there (replaced, rotated, rewritten or cut " \
        "shorter): read from its start" in rewritten.stderr.decode()
    assert rewritten.returncode == 0 and passed_on(rewritten.stdout)[:5] == BENIGN


def test_another_file_is_the_rest_of_the_stream_and_read_whole_without_a_word(tmp_path):
    state = str(tmp_path / "state.json")
    (tmp_path / "monday.ndjson").write_bytes(ndjson(INCIDENT[:2]))
    (tmp_path / "tuesday.ndjson").write_bytes(ndjson(INCIDENT[2:]))
    assert run_cli(ARGS + ["--input", str(tmp_path / "monday.ndjson"), "--state", state]).returncode == 0
    tuesday = run_cli(ARGS + ["--input", str(tmp_path / "tuesday.ndjson"), "--state", state])
    assert len(alerts(tuesday.stdout)) == 1 and b"input " not in tuesday.stderr, tuesday.stderr


def test_a_damaged_place_in_the_state_file_is_refused_in_one_line(tmp_path):
    path, state = tmp_path / "events.ndjson", tmp_path / "state.json"
    path.write_bytes(ndjson(BENIGN))
    assert run_cli(ARGS + ["--input", str(path), "--state", str(state)]).returncode == 0
    document = json.loads(state.read_bytes())
    document["input"]["offset"] = -1
    state.write_text(json.dumps(document))
    result = run_cli(ARGS + ["--input", str(path), "--state", str(state)])
    assert result.returncode == 2 and result.stderr.decode() == (
        f"pipeshell-filter: error: state file {state}: damaged state file (input); --state-reset discards it\n")


def test_a_stop_waits_a_moment_for_the_rest_of_a_line_a_pipe_brought_half_of(tmp_path):
    """SIGTERM when the pipe has handed on half a line: its writer's next write brings the rest, and
    the line goes out whole (it went out cut, its rest lost with the pipe)."""
    line = json.dumps(dict(INCIDENT[0], EventData="x" * 200)).encode()
    process = subprocess.Popen(COMMAND + ARGS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(ndjson(BENIGN) + line[:100])
    process.stdin.flush()
    read_all(process.stdin)  # read, and waiting for the rest (a start-up slower than a sleep: killed by the signal)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    process.stdin.write(line[100:] + b"\n" + ndjson(BENIGN))  # the rest (the line after it is left unread)
    process.stdin.flush()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert passed_on(out) == BENIGN + [json.loads(line)], err  # what came after it is not begun
    assert b"invalid JSON" not in err


def test_a_stop_reads_a_pipe_no_longer_than_its_wait_however_full_the_pipe_is(tmp_path, monkeypatch):
    """A writer faster than the filter keeps the pipe full, in writes that end mid-line: each read
    after the stop brought the cut line's end and the start of another, and the stop read on as
    long as the writer wrote.  Here a file read as a pipe is one that is always ready: with no wait,
    the stop hands on what the first read gave and the rest of the line it cut, which is there: a
    block read at the wait's end began another line, handed on cut (a writer busy at a SIGTERM made
    one line of its stream invalid JSON, and lost it)."""
    monkeypatch.setattr(stream, "STOP_LINE_WAIT", 0.0)
    line = b'{"EventID": 1, "message": "' + b"x" * 90 + b'"}\n'
    path = tmp_path / "always-ready"
    path.write_bytes(line * 2000)
    with open(path, "rb") as handle:
        reader = stream.BlockReader(handle.fileno(), True, lambda: None, block_size=1000, stop=StopAfterReads(1))
        handed = b"".join(bytes(data[start:end]) for kind, data, start, end in reader)
    assert handed == line * (1000 // len(line) + 1)  # whole lines, the one the first read cut included


def test_a_last_line_whose_writer_ends_it_with_crlf_later_is_not_read_again(tmp_path):
    """A CRLF writer that wrote a line and its end apart: the run between them passed the line on (no
    newline yet); the next one reads on past its end, as past a newline alone, and does not pass the
    line on again."""
    lines = [json.dumps(event).encode() for event in BENIGN[:3]]
    path, state_path = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(lines[0] + b"\r\n" + lines[1])
    first = run_on(str(path), state_path, 0, "all", 0)[0]
    with open(path, "ab") as handle:
        handle.write(b"\r\n" + lines[2] + b"\r\n")
    second = run_on(str(path), state_path, 0, "all", 0)[0]
    assert passed_on(first + second) == BENIGN[:3]
    assert json.load(open(state_path))["lines"] == 3


def test_a_last_line_whose_crlf_a_run_meets_half_written_is_not_read_again(tmp_path):
    """The CR of a line's CRLF written, its LF not yet (a writer that flushes in blocks cut between
    them): the run that meets the CR alone took the line for one its writer had added to, and passed
    it on again, then its end the run after; the CR is half of the line's end, read past once whole."""
    lines = [json.dumps(event).encode() for event in BENIGN[:2]]
    path, state_path = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(lines[0])
    first = run_on(str(path), state_path, 0, "all", 0)[0]
    with open(path, "ab") as handle:
        handle.write(b"\r")
    second = run_on(str(path), state_path, 0, "all", 0)[0]
    with open(path, "ab") as handle:
        handle.write(b"\n" + lines[1] + b"\r\n")
    third = run_on(str(path), state_path, 0, "all", 0)[0]
    assert passed_on(first + second + third) == BENIGN[:2]
    assert json.load(open(state_path))["lines"] == 2
    merged = [tmp_path / "a.ndjson", tmp_path / "b.ndjson"]  # the same among files merged
    merged_state = str(tmp_path / "merged.json")
    merged[0].write_bytes(lines[0])
    merged[1].write_bytes(b"")
    outputs = [run_merged([str(name) for name in merged], merged_state, 0, "all")]
    with open(merged[0], "ab") as handle:
        handle.write(b"\r")
    outputs.append(run_merged([str(name) for name in merged], merged_state, 0, "all"))
    with open(merged[0], "ab") as handle:
        handle.write(b"\n" + lines[1] + b"\r\n")
    outputs.append(run_merged([str(name) for name in merged], merged_state, 0, "all"))
    assert passed_on(b"".join(outputs)) == BENIGN[:2]


def test_a_directory_whose_file_was_renamed_by_a_rotation_reads_it_on_and_the_new_one_whole(tmp_path):
    """The saved place follows the file's inode to its new name: the lines written before the rename
    go out once, the new file's from its start, and nothing is said about the old name's new file."""
    logs, state = tmp_path / "logs", str(tmp_path / "state.json")
    logs.mkdir()
    (logs / "events.ndjson").write_bytes(ndjson(BENIGN[:2]))
    (logs / "other.ndjson").write_bytes(ndjson(INCIDENT[:1]))
    first = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert first.returncode == 0 and len(passed_on(first.stdout)) == 3, first.stderr
    with open(logs / "events.ndjson", "ab") as handle:
        handle.write(ndjson(BENIGN[2:4]))
    os.rename(logs / "events.ndjson", logs / "events-1.ndjson")
    (logs / "events.ndjson").write_bytes(ndjson(INCIDENT[1:]))
    rotated = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(map(json.dumps, passed_on(rotated.stdout))) == sorted(map(json.dumps, BENIGN[2:4] + INCIDENT[1:]))
    assert len(alerts(rotated.stdout)) == 1
    said = rotated.stderr.decode()
    assert "inputs: 2 of 3 NDJSON files read on where the saved state left them" in said and "read from its start" \
        not in said, said


def test_a_damaged_place_of_merged_files_is_refused_in_one_line(tmp_path):
    logs, state = tmp_path / "logs", tmp_path / "state.json"
    logs.mkdir()
    for name in ("a.ndjson", "b.ndjson"):
        (logs / name).write_bytes(ndjson(BENIGN))
    assert run_cli(ARGS + ["--input", str(logs), "--state", str(state)]).returncode == 0
    document = json.loads(state.read_bytes())
    document["inputs"][1]["lines"] = "many"
    state.write_text(json.dumps(document))
    result = run_cli(ARGS + ["--input", str(logs), "--state", str(state)])
    assert result.returncode == 2 and result.stderr.decode() == (
        f"pipeshell-filter: error: state file {state}: damaged state file (inputs); --state-reset discards it\n")


def test_a_directory_whose_one_file_a_rotation_makes_two_and_back_reads_each_line_once(tmp_path):
    """A directory of one file is read as that file alone, of two merged: a rotation that renames its
    file beside a new one, and the removal of the rotated file, change which; the place saved by one
    kind of run is taken by the other, each line going out once, named as in its file."""
    logs, state = tmp_path / "logs", str(tmp_path / "state.json")
    logs.mkdir()
    current = logs / "events.ndjson"
    current.write_bytes(ndjson(BENIGN[:3]))
    first = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert first.returncode == 0 and passed_on(first.stdout) == BENIGN[:3], first.stderr
    with open(current, "ab") as handle:
        handle.write(ndjson(BENIGN[3:]))
    os.rename(current, logs / "events-1.ndjson")
    current.write_bytes(ndjson(INCIDENT[:2]))
    rotated = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(map(json.dumps, passed_on(rotated.stdout))) == sorted(map(json.dumps, BENIGN[3:] + INCIDENT[:2]))
    assert b"read from its start" not in rotated.stderr, rotated.stderr
    os.remove(logs / "events-1.ndjson")
    with open(current, "ab") as handle:
        handle.write(ndjson(INCIDENT[2:]) + b"{not json\n")
    alone = run_cli(ARGS + ["--input", str(logs), "--state", state])
    kept = b"".join(line for line in alone.stdout.splitlines(keepends=True) if not line.startswith(b"{not json"))
    assert alone.returncode == 0 and passed_on(kept) == INCIDENT[2:], alone.stderr
    [alert] = alerts(kept)
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [4, 7, 8]  # the stream's lines, merged or not
    assert f"input {current.resolve()}: read on from line 3 (byte " in alone.stderr.decode(), alone.stderr
    assert b"line 9: not valid JSON" in alone.stderr and b"read from its start" not in alone.stderr, alone.stderr


def test_a_merged_file_ends_at_a_last_line_without_its_newline_even_when_its_writer_goes_on(tmp_path):
    """A line read without its newline met the file's end: the rest its writer adds meanwhile is no
    line of its own (passed on, the place moved past it, the line was never passed on whole), but
    the next run's, which reads the whole line again."""
    from pipeshell_filter.io.inputs import labelled_lines, ndjson_lines
    from pipeshell_filter.io.position import FilePlaces

    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"a": 1}\n{"b": ')
    places = FilePlaces(None)
    handle = open(path, "rb")
    place = places.add(str(path), handle)
    places.place_all()
    lines = labelled_lines(str(path), None, 1024, opened=(handle, place, place.lines))
    plain = ndjson_lines(str(path), 1024)
    assert [line for _, line in (next(lines), next(lines))] == [b'{"a": 1}', b'{"b": ']
    assert [next(plain), next(plain)] == [b'{"a": 1}', b'{"b": ']
    with open(path, "ab") as handle:
        handle.write(b'2}\n{"c": 3}\n')
    assert list(lines) == [] and list(plain) == []
    places.close()


def test_a_long_last_line_without_its_newline_ends_the_file_too(tmp_path):
    from pipeshell_filter.io.inputs import LongLine, ndjson_lines

    path = tmp_path / "events.ndjson"
    path.write_bytes(b'{"a": 1}\n' + b"x" * 3000)
    plain = ndjson_lines(str(path), 1024)
    assert next(plain) == b'{"a": 1}' and isinstance(next(plain), LongLine)
    with open(path, "ab") as handle:
        handle.write(b'y\n{"c": 3}\n')
    assert list(plain) == []


def test_many_merged_files_read_from_their_start_are_said_in_one_line(tmp_path):
    """A rotation of a whole directory (every file cut shorter): one line, not one per file."""
    logs, state = tmp_path / "logs", str(tmp_path / "state.json")
    logs.mkdir()
    for i in range(12):
        (logs / f"f{i:02d}.ndjson").write_bytes(ndjson(BENIGN))
    assert run_cli(ARGS + ["--input", str(logs), "--state", state]).returncode == 0
    for i in range(10):
        (logs / f"f{i:02d}.ndjson").write_bytes(ndjson(BENIGN[:1]))
    again = run_cli(ARGS + ["--input", str(logs), "--state", state])
    said = again.stderr.decode().splitlines()
    assert again.returncode == 0 and len(passed_on(again.stdout)) == 10, again.stderr
    assert said[:2] == ["pipeshell-filter: inputs: 2 of 12 NDJSON files read on where the saved state left them",
                        f"pipeshell-filter: inputs: 10 files not the bytes the saved state read there (replaced, "
                        f"rotated, rewritten or cut shorter), read from their start: {logs.resolve()}/f00.ndjson, "
                        f"{logs.resolve()}/f01.ndjson, {logs.resolve()}/f02.ndjson and 7 more"], said
    assert len(said) == 3, said


def test_a_directory_whose_file_was_copied_and_truncated_by_a_rotation_reads_the_copy_on(tmp_path):
    """logrotate's copytruncate: the lines read are in a new file (another inode, another name), the
    old one cut to nothing and written anew.  The copy is the saved file by its bytes: read on where
    the saved state left it, each line once; a copy of a file whose own place is found is not."""
    logs, state = tmp_path / "logs", str(tmp_path / "state.json")
    logs.mkdir()
    current = logs / "events.ndjson"
    current.write_bytes(ndjson(BENIGN[:3]))
    (logs / "other.ndjson").write_bytes(ndjson(INCIDENT[:1]))
    assert run_cli(ARGS + ["--input", str(logs), "--state", state]).returncode == 0
    with open(current, "ab") as handle:
        handle.write(ndjson(BENIGN[3:]))
    (logs / "events-1.ndjson").write_bytes(current.read_bytes())
    (logs / "a-copy-of-other.ndjson").write_bytes((logs / "other.ndjson").read_bytes())
    current.write_bytes(ndjson(INCIDENT[1:]))
    rotated = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(map(json.dumps, passed_on(rotated.stdout))) == \
        sorted(map(json.dumps, BENIGN[3:] + INCIDENT[1:] + INCIDENT[:1]))  # the copy of other.ndjson: whole
    said = rotated.stderr.decode()
    assert "inputs: 2 of 4 NDJSON files read on where the saved state left them" in said and "read from its start" \
        not in said, said


def rotate(path, how: str) -> None:
    """As logrotate does: ``rename`` shifts ``events.ndjson.N`` up one and renames the log to ``.1``,
    creating it anew; ``copytruncate`` copies it to a dated name and empties it in place."""
    if how == "rename":
        kept = sorted(int(name.rsplit(".", 1)[1]) for name in os.listdir(path.parent) if name.startswith(
            path.name + "."))
        for number in reversed(kept):
            os.rename(f"{path}.{number}", f"{path}.{number + 1}")
        os.rename(path, f"{path}.1")
        path.write_bytes(b"")
    else:
        shutil.copyfile(path, path.parent / f"{path.name}-{len(os.listdir(path.parent))}")
        with open(path, "r+b") as handle:
            handle.truncate()


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([None, "rename", "copytruncate"]), st.integers(0, 3)),
                min_size=2, max_size=4))
def test_a_log_rotated_between_runs_goes_out_line_by_line_once(tmp_path_factory, steps):
    """A cron job on ``--input LOG --state``: lines written, the log perhaps rotated (renamed, or copied
    and emptied), lines written to the new one, a run.  The lines written between a run and the
    rotation are read where the rotation moved them: every line goes out once, in order."""
    folder = tmp_path_factory.mktemp("rotate")
    path, state = folder / "events.ndjson", str(folder / "state.json")
    written, passed, numbers = [], [], iter(range(1 << 20))
    in_file = []  # the lines of the file at the log's path
    read_there = 0  # how many of them the last run read

    def write(count: int) -> None:
        events = [dict(flat_event(number, "h", "benign", record_id=number), EventID=1)
                  for number in (next(numbers) for _ in range(count))]
        with open(path, "ab") as handle:
            handle.write(ndjson(events))
        written.extend(events)
        in_file.extend(events)

    for step, (before, how, after) in enumerate(steps):
        write(before)
        how = how if step else None  # before a first run, no state knows the file
        if how is not None:
            rotate(path, how)
            event(how)
            if how == "copytruncate" and not read_there:  # a copy of no bytes read is any file: not found
                del written[len(written) - before:]
            in_file.clear()
        write(after)
        result = run_cli(ARGS + ["--input", str(path), "--state", state])  # a process each: it holds its state
        assert result.returncode == 0, result.stderr
        passed.extend(passed_on(result.stdout))
        assert passed == written, result.stderr
        moved = how is not None and before and (read_there or how == "rename")
        assert result.stderr.count(b"since the saved state; its lines after byte") == bool(moved), result.stderr
        read_there = len(in_file)


def test_a_merged_line_read_again_whole_takes_a_number_no_other_line_has(tmp_path):
    """Merged files: a last line read cut, and whole by the next run, was not the last line the saved run
    counted (the merge went on with another file).  Its number is a new one: stepping the counter back,
    as after one file, gave it the number of the other file's last line, an event of the same window
    (events without a record id are told apart by their line)."""
    first_file, second_file = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    written = ndjson([flat_event(0, "h0", "benign"), flat_event(10, "cli01", "client")])
    first_file.write_bytes(written[:-40])
    second_file.write_bytes(ndjson([flat_event(0, "h1", "benign"), flat_event(1, "h2", "benign"),
                                    flat_event(5, "srv01", "server")]))
    paths, state = [str(first_file), str(second_file)], str(tmp_path / "state.json")
    run_merged(paths, state, 30, "all")
    with open(first_file, "ab") as handle:
        handle.write(written[-40:])
    with open(second_file, "ab") as handle:
        handle.write(ndjson([flat_event(12, "cli02", "client")]))
    [incident] = [record for record in alert_records(run_merged(paths, state, 30, "all"))
                  if len(record["sigma"]["events"]) == 3]
    assert [(ref["line"], ref["host"]) for ref in incident["sigma"]["events"]] == \
        [(5, "srv01"), (6, "cli01"), (7, "cli02")]


def test_a_pipe_merged_with_a_file_is_read_as_it_comes_and_the_file_read_on(tmp_path):
    """Standard input (a pipe) given beside a file: the file's place is kept, the pipe has none (the
    run failed with "Illegal seek" when it was given a place)."""
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(BENIGN[:2]))
    first = run_cli(ARGS + ["--input", str(path), "--input", "-", "--state", state], ndjson(BENIGN[2:3]))
    assert first.returncode == 0 and passed_on(first.stdout) == BENIGN[:3], first.stderr
    again = run_cli(ARGS + ["--input", str(path), "--input", "-", "--state", state], ndjson(BENIGN[3:4]))
    assert again.returncode == 0 and passed_on(again.stdout) == BENIGN[3:4], again.stderr
    assert b"inputs: 1 of 1 NDJSON files read on where the saved state left them" in again.stderr


def _whole_events(output: bytes) -> list:
    """``passed_on`` of the lines that are whole JSON (a cut last line is passed on as it was)."""
    kept = []
    for line in output.splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        kept.append(line)
    return passed_on(b"\n".join(kept))


def test_a_log_renamed_after_a_run_read_part_of_its_first_line_is_read_on_where_it_went(tmp_path):
    """The saved run read only the start of the log's first line (a writer that flushes in blocks), the
    writer ended it and wrote on, and a rotation renamed the log: the new log under its name begins with
    the same bytes (every line of a log starts alike), but it is not the file read.  It was taken for it,
    and the renamed file's lines were lost."""
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    written = ndjson(BENIGN[:2])
    path.write_bytes(written[:20])
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    with open(path, "ab") as handle:
        handle.write(written[20:])
    os.rename(path, f"{path}.1")
    path.write_bytes(ndjson(BENIGN[2:4]))
    assert path.read_bytes()[:20] == written[:20]
    rotated = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(map(json.dumps, _whole_events(rotated.stdout))) == sorted(map(json.dumps, BENIGN[:4])), \
        rotated.stderr
    assert f"rotated to {path}.1 since the saved state" in rotated.stderr.decode()


def test_a_copy_is_not_found_by_part_of_a_first_line_an_older_copy_holds_too(tmp_path):
    """copytruncate after a run that read only the start of the log's first line: every copy of the log
    begins with those bytes, an older one too, which was read on as if it were the copy just made (its
    lines passed on twice).  A copy is found by whole lines read, as one of a log read empty is not."""
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(BENIGN[:2]))
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    shutil.copyfile(path, f"{path}-1")
    written = ndjson(BENIGN[2:4])
    path.write_bytes(written[:20])
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    with open(path, "ab") as handle:
        handle.write(written[20:])
    shutil.copyfile(path, f"{path}-2")
    path.write_bytes(ndjson(INCIDENT[:1]))
    rotated = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert rotated.returncode == 0, rotated.stderr
    assert _whole_events(rotated.stdout) == INCIDENT[:1], rotated.stderr
    assert b"rotated to" not in rotated.stderr


def test_a_rotated_log_the_last_run_did_not_read_to_its_end_is_read_on(tmp_path):
    """A log renamed by a rotation is read on with the new one; the run that found it may not read it to
    its end: stopped halfway (a supervisor's SIGTERM, a kill after a snapshot), or its writer, which writes
    on to the renamed file until it opens the new one (logrotate's postrotate), added to it since.  Its
    place was saved, but the next run looked only beside the paths it reads, where the renamed file is
    not: the rest of it was lost."""
    path, state = tmp_path / "events.ndjson", str(tmp_path / "state.json")
    path.write_bytes(ndjson(BENIGN[:1]))
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    with open(path, "ab") as handle:
        handle.write(ndjson(BENIGN[1:2]))
    os.rename(path, f"{path}.1")
    path.write_bytes(b"")
    found = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert found.returncode == 0 and passed_on(found.stdout) == BENIGN[1:2], found.stderr
    with open(f"{path}.1", "ab") as handle:  # the writer, not told yet
        handle.write(ndjson(BENIGN[2:3]))
    path.write_bytes(ndjson(BENIGN[3:4]))
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert rest.returncode == 0 and passed_on(rest.stdout) == BENIGN[2:4], rest.stderr
    assert f"input {path}.1: not read to its end by the saved run; its lines after byte" in rest.stderr.decode()
    again = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert again.returncode == 0 and again.stdout == b"", again.stderr


@settings(max_examples=30)
@given(cut_streams(), st.integers(7, 300), st.sampled_from([0, 30, 400]), st.sampled_from(["alerts", "all"]),
       st.sampled_from([0, 2]), st.data())
def test_a_kill_9_right_after_any_snapshot_and_a_restart_write_what_one_run_writes(tmp_path_factory, case, block_size,
                                                                                   lateness, emit, workers, data):
    """kill -9 loses what came after the last snapshot, no more: the output written up to a snapshot
    taken mid-run (``--state-interval``), then a restart from that snapshot on the same file, are byte
    for byte what one run writes (the line numbers, alerts and all)."""
    whole_data, folder, path, state_path = _written(case, tmp_path_factory.mktemp("killed"))
    snapshots = []  # (the state file's bytes, the output written before it)
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, emit)
        stream_filter.keep_state(state_module.StateFile(state_path, 1))
        stream_filter.state.due = lambda: True  # a snapshot at every check: after each block, or line merged
        stream_filter.after_save = lambda: snapshots.append((open(state_path, "rb").read(), sink.tell()))
        stream_filter.workers, stream_filter.parallel_min, stream_filter.parallel_chunk = workers, 0, 256
        with open(path, "rb") as handle:
            stream_filter.run(handle.fileno(), live=False, path=path, block_size=block_size)
        sink.seek(0)
        written = sink.read()
    if not snapshots:
        return
    event(f"{len(snapshots)} snapshots")
    saved, upto = snapshots[data.draw(st.integers(0, len(snapshots) - 1))]
    with open(state_path, "wb") as handle:  # the last snapshot before the kill
        handle.write(saved)
    rest, _ = run_on(path, state_path, lateness, emit, 0)
    assert written[:upto] + rest == whole_run(whole_data, folder, lateness, emit)


@settings(max_examples=30)
@given(files_of(), st.sampled_from([0, 30, 400]), st.sampled_from(["alerts", "all"]), st.data())
def test_merged_files_killed_right_after_any_snapshot_write_what_one_run_writes(tmp_path_factory, contents, lateness,
                                                                                emit, data):
    """As above, for files merged (``--input DIR``): a snapshot before any line, the kill right after it."""
    folder = tmp_path_factory.mktemp("merged-killed")
    paths, state_path = _files_written(contents, folder)
    snapshots = []
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, emit)
        stream_filter.keep_state(state_module.StateFile(state_path, 1))
        stream_filter.state.due = lambda: True
        stream_filter.after_save = lambda: snapshots.append((open(state_path, "rb").read(), sink.tell()))
        stream_filter.process_labelled(cli._file_lines(paths, stream_filter, stream_filter.diagnostics))
        sink.seek(0)
        written = sink.read()
        stream_filter.file_places.close()
    if not snapshots:
        return
    saved, upto = snapshots[data.draw(st.integers(0, len(snapshots) - 1))]
    with open(state_path, "wb") as handle:
        handle.write(saved)
    assert written[:upto] + run_merged(paths, state_path, lateness, emit) == run_merged(paths, None, lateness, emit)
