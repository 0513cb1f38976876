"""An EVTX file read on after the records the last run handed on (``--state``, ``position.RecordPlace``).

In process: runs stopped after any record, or on a file grown by more records (and chunks) between
runs, alone or merged with another file, each a fresh filter with the state taken back: every record
goes out once, in order, as one run over the whole file writes it.  Then the real CLI: a second run
on the same file passes nothing on and says so in one line, a file replaced under the same path is
read whole, a damaged place is refused, and ``explain --events --state`` reads on as the filter does.
"""

import json
import struct
import tempfile
import zlib

import pytest
from hypothesis import event, given, settings, strategies as st

from clitools import alerts, ndjson, run_cli
from eventgen import flat_event
from evtxwriter import write_evtx
from pipeshell_filter import cli
from pipeshell_filter.io import stream
from test_evtx_input import ATTACK, powershell
from test_prefilter import StopAfterReads
from test_state import alert_records, assert_no_event_alerts_twice, new_filter

KINDS = ("server", "client", "benign")


@st.composite
def evtx_events(draw, most: int = 40):
    """PowerShell events in time order, record ids rising with gaps, some long enough that a file holds
    several chunks (a chunk is 64 KiB)."""
    count = draw(st.integers(1, most))
    events, record_id, seconds = [], 0, 0
    for _ in range(count):
        record_id += draw(st.integers(1, 3))
        seconds += draw(st.integers(0, 40))
        host = draw(st.sampled_from(["srv01", "cli01", "cli02"]))
        event_id = draw(st.sampled_from([4104, 4103, 800]))
        one = powershell(record_id, f"2026-11-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z", host,
                         draw(st.sampled_from(KINDS)), event_id)
        if event_id == 4104 and draw(st.booleans()):  # a long script block: few records to a chunk
            one["data"]["Path"] = "x" * 12000
        events.append(one)
    return events


def run_files(paths: list, state_path, emit: str, stop=None, at_end=None) -> bytes:
    """A fresh process, as it were, on the files (one EVTX file alone, or merged), as ``--input`` reads
    them; ``at_end``: a list the number of alerts the end (a pause) made is put in."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, 30, emit, state_path)
        stream_filter.process_labelled(cli._file_lines(paths, stream_filter, stream_filter.diagnostics),
                                       stream.DEFAULT_MAX_LINE, stop)
        before = stream_filter.engine.stats["alerts"]
        stream_filter.finish(keep_open=stop is not None)
        if at_end is not None:
            at_end.append(stream_filter.engine.stats["alerts"] - before)
        sink.seek(0)
        return sink.read()


def _place(state_path) -> dict:
    saved = json.load(open(state_path))
    return saved["input"] if "input" in saved else next(mark for mark in saved["inputs"] if "kind" in mark)


@settings(max_examples=25, deadline=None)
@given(evtx_events(), st.integers(0, 8), st.sampled_from(["alerts", "all"]), st.booleans())
def test_runs_stopped_after_any_record_write_what_one_run_writes(tmp_path_factory, events, records_each, emit,
                                                                 merged):
    """Runs on the same file stopped after a few records each (mid-chunk, mostly), the windows left
    open, then one to the end: together, byte for byte what one run writes; alone or merged with an
    NDJSON file."""
    folder = tmp_path_factory.mktemp("stops")
    paths = [str(folder / "log.evtx")]
    write_evtx(paths[0], events)
    if merged:
        paths.append(str(folder / "other.ndjson"))
        with open(paths[1], "wb") as handle:
            handle.write(ndjson([flat_event(t, "srv09", "benign", record_id=500 + t) for t in range(0, 600, 90)]))
    state_path = str(folder / "state.json")
    outputs = []
    for _ in range(len(events) // max(records_each, 1) + 2):
        outputs.append(run_files(paths, state_path, emit, StopAfterReads(records_each)))
        if _place(state_path)["record"] == events[-1]["record_id"]:
            break
    outputs.append(run_files(paths, state_path, emit))
    place = _place(state_path)
    assert (place["record"], place["lines"]) == (events[-1]["record_id"], len(events))
    assert b"".join(outputs) == run_files(paths, None, emit)


@settings(max_examples=25, deadline=None)
@given(evtx_events(), st.lists(st.floats(0, 1), min_size=1, max_size=3), st.sampled_from(["alerts", "all"]))
def test_a_file_that_grows_between_runs_goes_out_once_in_order(tmp_path_factory, events, growth, emit):
    """The log grows by records and chunks between runs (its first record stays): every record goes
    out once, in order, numbered as in one run; without an early alert of a pause, byte for byte
    what one run writes."""
    folder = tmp_path_factory.mktemp("grows")
    path, state_path = str(folder / "log.evtx"), str(folder / "state.json")
    outputs, paused_with_alerts = [], False
    for share in sorted(growth) + [1.0]:
        written = events[:max(1, int(share * len(events)))]
        write_evtx(path, written)
        at_end = []
        outputs.append(run_files([path], state_path, emit, at_end=at_end))
        paused_with_alerts |= bool(at_end[0]) and share < 1.0
        place = _place(state_path)
        assert (place["record"], place["lines"]) == (written[-1]["record_id"], len(written))
    joined = b"".join(outputs)
    whole = run_files([path], None, emit)
    event(f"a run alerted before the last: {paused_with_alerts}")
    if not paused_with_alerts:
        assert joined == whole
    passed = [line for line in joined.splitlines() if b'"kind":"alert"' not in line]
    assert passed == [line for line in whole.splitlines() if b'"kind":"alert"' not in line]
    assert_no_event_alerts_twice(alert_records(joined))


# ------------------------------------------------------------ the real CLI

ARGS = ["--emit", "all", "--lateness", "0"]


def test_a_second_run_on_the_same_file_passes_nothing_on_and_says_so(tmp_path):
    path, state = tmp_path / "powershell.evtx", str(tmp_path / "state.json")
    write_evtx(str(path), ATTACK[:2])
    first = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert first.returncode == 0 and first.stdout.count(b"\n") == 2, first.stderr
    again = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert again.returncode == 0 and again.stdout == b"", again.stderr
    said = again.stderr.decode().splitlines()
    assert said[0] == f"pipeshell-filter: input {path}: read on from record 3 (after EventRecordID 12), where " \
        "the saved state left it" and "0 lines" in said[-1] and len(said) == 2, said
    write_evtx(str(path), ATTACK)  # the log grew: its first records as they were
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    records = [json.loads(line) for line in rest.stdout.splitlines()]
    assert [r["Event"]["System"]["EventRecordID"] for r in records if "Event" in r] == [13, 14], rest.stderr
    [alert] = alerts(rest.stdout)  # the incident cut by the restarts, its records named as in the file
    assert [ref["record_id"] for ref in alert["sigma"]["events"]] == [11, 13, 14]
    assert [ref["line"] for ref in alert["sigma"]["events"]] == [1, 3, 4]


def test_a_file_replaced_under_the_same_path_is_read_whole_and_its_events_taken_once(tmp_path):
    path, state = tmp_path / "powershell.evtx", str(tmp_path / "state.json")
    write_evtx(str(path), ATTACK[:3])
    assert run_cli(ARGS + ["--input", str(path), "--state", state]).returncode == 0
    write_evtx(str(path), [dict(ATTACK[1], record_id=10)] + ATTACK)  # another log, the same events after its first
    replaced = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert replaced.returncode == 0 and len(replaced.stderr.splitlines()) == 2, replaced.stderr
    assert f"pipeshell-filter: input {path}: not the EVTX file the saved state read there (another file, or a full " \
        "log that wrapped over the records read): read from its start\n" in replaced.stderr.decode()
    assert replaced.stdout.count(b'"EventRecordID"') == 5
    assert replaced.stderr.endswith(b"5 lines; 3 matched; 1 alert; 2 sent again (taken once)\n"), replaced.stderr


def test_a_damaged_evtx_place_in_the_state_file_is_refused_in_one_line(tmp_path):
    path, state = tmp_path / "powershell.evtx", tmp_path / "state.json"
    write_evtx(str(path), ATTACK)
    assert run_cli(ARGS + ["--input", str(path), "--state", str(state)]).returncode == 0
    document = json.loads(state.read_bytes())
    assert document["input"]["kind"] == "evtx"
    assert isinstance(document["input"]["last"], str)
    for key, value in (("record", -1), ("head", None), ("kind", "xml"), ("last", 5)):
        state.write_text(json.dumps(dict(document, input=dict(document["input"], **{key: value}))))
        result = run_cli(ARGS + ["--input", str(path), "--state", str(state)])
        assert result.returncode == 2 and result.stderr.decode() == (
            f"pipeshell-filter: error: state file {state}: damaged state file (input); --state-reset discards it\n")


def test_merged_files_read_on_each_and_the_note_counts_the_evtx_files(tmp_path):
    logs, state = tmp_path / "logs", str(tmp_path / "state.json")
    logs.mkdir()
    write_evtx(str(logs / "a.evtx"), ATTACK[:2])
    write_evtx(str(logs / "b.evtx"), [dict(one, record_id=100 + i) for i, one in enumerate(ATTACK[2:])])
    (logs / "c.ndjson").write_bytes(ndjson([flat_event(0, "h", "benign", record_id=7)]))
    first = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert first.returncode == 0 and first.stdout.count(b'{"Event":') == 4, first.stderr
    again = run_cli(ARGS + ["--input", str(logs), "--state", state])
    assert again.returncode == 0 and again.stdout == b"", again.stderr
    assert b"inputs: 1 of 1 NDJSON files and 2 of 2 EVTX files read on where the saved state left them\n" \
        in again.stderr
    write_evtx(str(logs / "a.evtx"), ATTACK[:2] + [dict(ATTACK[0], record_id=20, time="2026-11-01T11:00:00Z")])
    alone = run_cli(ARGS + ["--input", str(logs / "a.evtx"), "--state", state])  # one of them alone, read on
    assert alone.stdout.count(b'{"Event":') == 1 and b'"EventRecordID":20' in alone.stdout, alone.stderr
    assert f"input {logs / 'a.evtx'}: read on from record 3 (after EventRecordID 12)".encode() in alone.stderr


def test_explain_events_with_the_state_reads_an_evtx_file_on_as_the_filter_does(tmp_path):
    path, state = tmp_path / "powershell.evtx", tmp_path / "state.json"
    write_evtx(str(path), ATTACK[:2])
    assert run_cli(["--input", str(path), "--state", str(state), "--quiet"]).returncode == 0
    write_evtx(str(path), ATTACK)
    explained = run_cli(["explain", "--events", str(path), "--state", str(state)])
    assert explained.returncode == 0, explained.stderr
    text = explained.stdout.decode()
    assert text.startswith("events    2 read;"), text
    assert f"state     input {path}: read on from record 3 (after EventRecordID 12), where the saved state " \
        "left it\n" in text


def _rewrite_chunks(path, change) -> None:
    """Each chunk of the file at ``path`` changed in place by ``change(chunk, records)`` (a bytearray and
    the offsets of its records), its header checksum made right again."""
    data = bytearray(path.read_bytes())
    for start in range(4096, len(data), 65536):
        chunk = data[start:start + 65536]
        offsets, offset = [], 512
        while chunk[offset:offset + 4] == b"**\0\0":
            offsets.append(offset)
            offset += int.from_bytes(chunk[offset + 4:offset + 8], "little")
        change(chunk, offsets)
        crc = zlib.crc32(bytes(chunk[:120] + chunk[128:512]))
        data[start:start + 65536] = chunk[:124] + crc.to_bytes(4, "little") + chunk[128:]
    path.write_bytes(bytes(data))


def _exported(path, events) -> None:
    """An export's file: its chunks number their records from 1 in the file (bytes 8-24 of a chunk's
    header), each record keeping its EventRecordID (bytes 24-40, and the records')."""
    write_evtx(str(path), events)
    counted = [0]

    def renumber(chunk, offsets):
        chunk[8:24] = struct.pack("<QQ", counted[0] + 1, counted[0] + len(offsets))
        counted[0] += len(offsets)
    _rewrite_chunks(path, renumber)


def test_an_export_whose_chunks_number_records_from_one_is_read_on_by_event_record_id(tmp_path):
    """A chunk's header numbers its records twice: in the file (1, 2, ... in an export) and by their
    EventRecordID.  The place is an EventRecordID: compared with the file's numbers, every chunk of a
    grown export ended "before" it, and the records added were never passed on."""
    path, state = tmp_path / "export.evtx", str(tmp_path / "state.json")
    events = [dict(one, record_id=5000 + i) for i, one in enumerate(ATTACK)]
    _exported(path, events[:2])
    first = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert first.returncode == 0 and first.stdout.count(b'"EventRecordID"') == 2, first.stderr
    _exported(path, events)
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    records = [json.loads(line) for line in rest.stdout.splitlines()]
    assert [r["Event"]["System"]["EventRecordID"] for r in records if "Event" in r] == [5002, 5003], rest.stderr
    assert b"could not be read" not in rest.stderr and b"lost" not in rest.stderr, rest.stderr


def test_a_record_whose_header_holds_a_damaged_id_does_not_move_the_place_past_the_log(tmp_path):
    """A record's own header says its EventRecordID; one damaged there (a bit flipped: 2**40 more) is
    still read, but its id lies outside those its chunk's header numbers: taken as the place, every
    record the log gained after it was never passed on, run after run, without a word."""
    path, state = tmp_path / "powershell.evtx", str(tmp_path / "state.json")

    def damage(chunk, offsets):  # the second record's header: its id 2**40 greater
        start = offsets[1] + 8
        chunk[start:start + 8] = (int.from_bytes(chunk[start:start + 8], "little") + (1 << 40)).to_bytes(8, "little")
    write_evtx(str(path), ATTACK[:3])
    _rewrite_chunks(path, damage)
    first = run_cli(ARGS + ["--input", str(path), "--state", state])
    assert first.returncode == 0 and first.stdout.count(b'"EventRecordID"') == 3, first.stderr
    write_evtx(str(path), ATTACK + [dict(ATTACK[2], record_id=15)])
    _rewrite_chunks(path, damage)
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    records = [json.loads(line) for line in rest.stdout.splitlines()]
    assert [r["Event"]["System"]["EventRecordID"] for r in records if "Event" in r] == [14, 15], rest.stderr


def test_a_full_log_that_wrapped_over_its_first_chunk_is_read_on_after_the_records_read(tmp_path):
    """A live log full, Windows writes its newest records over its oldest chunk, the file's first: the
    first record the file was known by is gone, but the one the place was left after is still there,
    the same bytes.  Taken for another file, every record read before was passed on again, once each
    time the log wrapped round."""
    path, state, whole = tmp_path / "live.evtx", str(tmp_path / "state.json"), tmp_path / "whole.evtx"
    events = [powershell(21 + i, f"2026-11-01T10:00:{i:02d}Z", "srv01", KINDS[i % 3], 4104) for i in range(8)]
    for one in events:
        one["data"]["Path"] = "x" * 12000  # 24 KB in UTF-16
    write_evtx(str(whole), events)  # two records to a chunk: 4 chunks
    chunks = [whole.read_bytes()[4096 + start:4096 + start + 65536] for start in range(0, 4 * 65536, 65536)]
    header = bytearray(whole.read_bytes()[:4096])
    header[8:24], header[42:44] = struct.pack("<QQ", 1, 0), (3).to_bytes(2, "little")  # 3 chunks; wrapped
    header[124:128] = zlib.crc32(bytes(header[:120])).to_bytes(4, "little")
    path.write_bytes(whole.read_bytes()[:4096 + 3 * 65536])
    first = run_cli(ARGS + ["--input", str(path), "--state", state])
    read = [json.loads(line)["Event"]["System"]["EventRecordID"] for line in first.stdout.splitlines()
            if line.startswith(b'{"Event"')]
    assert first.returncode == 0 and read == [e["record_id"] for e in events][:len(read)], first.stderr
    path.write_bytes(bytes(header) + chunks[3] + chunks[1] + chunks[2])  # chunk 4 written over chunk 1
    rest = run_cli(ARGS + ["--input", str(path), "--state", state])
    again = [json.loads(line)["Event"]["System"]["EventRecordID"] for line in rest.stdout.splitlines()
             if line.startswith(b'{"Event"')]
    assert again == [e["record_id"] for e in events][len(read):], rest.stderr
    assert b"not the EVTX file" not in rest.stderr and b"sent again" not in rest.stderr, rest.stderr


def test_records_a_log_gains_while_its_chunk_is_read_move_the_place_past_them(tmp_path, monkeypatch):
    """Windows adds records to a log's last chunk while the filter reads it: the chunk's header, read
    before the chunk was parsed, numbers fewer records than the parser then finds.  Those found after
    the last it numbered went out under that record's id: the place stayed before them, and the next
    run passed them on again."""
    from pipeshell_filter.io import evtx_chunks

    path, state = str(tmp_path / "live.evtx"), str(tmp_path / "state.json")
    events = [powershell(100 + i, f"2026-11-01T10:00:{i:02d}Z", "srv01", KINDS[i % 3], 4104) for i in range(20)]
    write_evtx(path, events[:10])

    class GrowingLog(evtx_chunks.ChunkReader):
        """The log gains ten records in its chunk once the filter has looked at the chunks' headers."""
        grown = False

        def chunk(self, *args, **kwargs):
            if not self.grown:
                write_evtx(path, events)
                self.grown = True
            return super().chunk(*args, **kwargs)

    reader = GrowingLog()
    monkeypatch.setattr(evtx_chunks, "_READER", reader)
    try:
        first = run_files([path], state, "all")
    finally:
        reader.close()
    assert first.count(b'"EventRecordID"') == 20
    assert (_place(state)["record"], _place(state)["lines"]) == (119, 20)
    assert run_files([path], state, "all").count(b'"EventRecordID"') == 0


@pytest.mark.parametrize("chunk, field, value", [(0, 8, (1 << 64) - 1), (1, 24, 0)])
def test_a_chunk_whose_header_numbers_are_damaged_is_read_in_its_place_and_runs_stopped_skip_none(
        tmp_path, chunk, field, value):
    """Chunks were read in the order of the record numbers their headers give (bytes 8-24), the place
    kept by EventRecordID: a flipped number sent the first chunk after the others, and a run stopped
    between them left the place past its records, which no later run passed on.  Ordered by the
    EventRecordIDs (24-40) alone, one of those damaged did the same."""
    path, state = tmp_path / "rotted.evtx", str(tmp_path / "state.json")
    events = [powershell(100 + i, f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}Z", "srv01", "benign", 4104)
              for i in range(90)]  # chunks of 41, 41 and 8 records
    write_evtx(str(path), events)
    data = bytearray(path.read_bytes())
    start = 4096 + chunk * 65536 + field  # its first record number, or EventRecordID
    data[start:start + 8] = value.to_bytes(8, "little")
    path.write_bytes(bytes(data))
    outputs = [run_files([str(path)], state, "all", StopAfterReads(30)) for _ in range(4)]
    outputs.append(run_files([str(path)], state, "all"))
    read = [json.loads(line)["Event"]["System"]["EventRecordID"] for output in outputs
            for line in output.splitlines() if line.startswith(b'{"Event"')]
    assert read == [event["record_id"] for event in events]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 3), st.sampled_from([1 << 40, -12]), st.integers(1, 3), st.sampled_from([None, 0]))
def test_a_record_whose_header_id_is_damaged_is_passed_on_once_by_runs_stopped_anywhere(
        tmp_path_factory, damaged, change, records_each, chunk_last_id):
    """A record whose own header holds an id outside those its chunk numbers took the id of the record
    before it: a run stopped after that one left the place there, and the next took the damaged
    record for read already, never to pass it on.  Its chunk's last id damaged too (``chunk_last_id``),
    the record's own id was taken as it was: the place went past every record after it."""
    folder = tmp_path_factory.mktemp("damaged-id")
    path, state = folder / "powershell.evtx", str(folder / "state.json")

    def damage(chunk, offsets):
        start = offsets[damaged] + 8
        chunk[start:start + 8] = ((int.from_bytes(chunk[start:start + 8], "little") + change) % (1 << 64)) \
            .to_bytes(8, "little")
        if chunk_last_id is not None:
            chunk[32:40] = chunk_last_id.to_bytes(8, "little")
    write_evtx(str(path), ATTACK)
    _rewrite_chunks(path, damage)
    def record_ids(output):
        return [json.loads(line)["Event"]["System"]["EventRecordID"] for line in output.splitlines()
                if line.startswith(b'{"Event"')]
    read = []
    for _ in range(len(ATTACK) + 1):
        read += record_ids(run_files([str(path)], state, "all", StopAfterReads(records_each)))
    assert read == record_ids(run_files([str(path)], None, "all"))
