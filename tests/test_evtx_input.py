"""``--input FILE.evtx``: read with the real EVTX parser, exactly as if its records were piped in."""

import json
import os
import re
import signal
import subprocess
import threading
import time
import zlib

import pytest
from evtx import PyEvtxParser
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, alerts, children, ndjson, run_cli
from eventgen import CLIENT, SERVER, flat_event
from evtxwriter import write_evtx
from sigmahq import SIGMAHQ

PS = "Microsoft-Windows-PowerShell"
OPERATIONAL = "Microsoft-Windows-PowerShell/Operational"


def powershell(record_id, time, computer, kind, event_id):
    text = {"server": f"$p = New-Object {SERVER}('x')", "client": f"$c = New-Object {CLIENT}('.', 'x')",
            "benign": "Get-ChildItem C:\\ | Out-Null"}[kind]
    event = {"provider": PS, "event_id": event_id, "time": time, "record_id": record_id, "channel": OPERATIONAL,
             "computer": computer, "level": 5}
    if event_id == 4104:
        event["data"] = {"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": text, "ScriptBlockId": "b",
                         "Path": ""}
    elif event_id == 4103:
        event["data"] = {"ContextInfo": "Host Name = ConsoleHost", "UserData": "", "Payload": text}
    else:  # classic event 800: unnamed data, EventID with Qualifiers
        event.update(provider="PowerShell", channel="Windows PowerShell", qualifiers=0, level=4,
                     data=["Get-Thing", "\tHostName=ConsoleHost\r\n", f"ParameterBinding: value=\"{text}\""])
    return event


ATTACK = [
    powershell(11, "2026-11-01T10:00:00.1234567Z", "srv01.corp.example", "server", 4104),
    powershell(12, "2026-11-01T10:00:20Z", "ws07.corp.example", "benign", 4104),
    powershell(13, "2026-11-01T10:00:30Z", "cli01.corp.example", "client", 800),
    powershell(14, "2026-11-01T10:01:00.5Z", "cli02.corp.example", "client", 4103),
]


def parser_lines(path) -> bytes:
    """The records as evtx_dump -o jsonl would pipe them: the parser's JSON, one compact line each."""
    return b"".join(json.dumps(json.loads(r["data"]), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
                    for r in PyEvtxParser(str(path)).records_json())


def test_evtx_file_behaves_like_its_records_piped_in(tmp_path):
    path = tmp_path / "powershell.evtx"
    write_evtx(str(path), ATTACK)
    for emit in ("alerts", "matches", "all"):
        direct = run_cli(["--emit", emit, "--input", str(path)])
        piped = run_cli(["--emit", emit], parser_lines(path))
        assert direct.returncode == 0, direct.stderr
        assert direct.stdout == piped.stdout
    found = alerts(direct.stdout)
    assert len(found) == 1
    assert found[0]["related"]["hosts"] == ["cli01.corp.example", "cli02.corp.example", "srv01.corp.example"]
    assert [e["record_id"] for e in found[0]["sigma"]["events"]] == [11, 13, 14]


def test_a_data_name_given_twice_keeps_all_its_values_as_when_piped(tmp_path):
    """The parser's JSON of each record was parsed and written again: of a <Data Name> an event
    gives twice, only the last value was passed on, where evtx_dump's lines piped in keep them all."""
    path = tmp_path / "groups.evtx"
    event = dict(ATTACK[0], data=[("Group", "Administrators"), ("Group", "Users"), ("ScriptBlockText", "x"),
                                  ("Group", "Guests")])
    write_evtx(str(path), [event])
    piped = b"".join(r["data"].encode() + b"\n" for r in PyEvtxParser(str(path), indent=False).records_json())
    assert piped.count(b'"Group":') == 3
    direct = run_cli(["--emit", "all", "--input", str(path)])
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == run_cli(["--emit", "all"], piped).stdout == piped


def test_evtx_and_ndjson_inputs_merge_by_event_time(tmp_path):
    evtx_dir = tmp_path / "logs"
    evtx_dir.mkdir()
    write_evtx(str(evtx_dir / "server.evtx"), ATTACK[:2])
    later = flat_event(0, "x", "benign")
    clients = [dict(flat_event(0, "cli01.corp.example", "client", 4104), **{"@timestamp": "2026-11-01T10:00:30Z"}),
               dict(flat_event(0, "cli02.corp.example", "client", 4103), **{"@timestamp": "2026-11-01T10:01:00Z"}),
               dict(later, **{"@timestamp": "2026-11-01T11:00:00Z"})]
    (evtx_dir / "clients.ndjson").write_bytes(ndjson(clients))
    result = run_cli(["--emit", "all", "--input", str(evtx_dir)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 + 1
    found = alerts(result.stdout)
    assert len(found) == 1 and found[0]["sigma"]["aggregation"]["count"] == 3
    # the alert follows the event that moved the watermark past it: the last one
    assert json.loads(lines[-1])["event"]["kind"] == "alert"


def test_damaged_evtx_is_reported_not_fatal(tmp_path):
    path = tmp_path / "cut.evtx"
    write_evtx(str(path), ATTACK)
    data = path.read_bytes()
    path.write_bytes(data[:4096 + 512 + 100])  # the header and a chunk cut in the middle of its records
    result = run_cli(["--emit", "all", "--input", str(path)])
    assert result.returncode == 0, result.stderr
    assert f"{path} chunk 1: the file ends inside this chunk, after 612 of its 65536 bytes; 4 of its 4 records are " \
           "lost".encode() in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr
    write_evtx(str(path), _many(300))  # 8 chunks, cut inside the second: 6 lost, and the cut one's tail
    whole = len(run_cli(["--emit", "all", "--input", str(path)]).stdout.splitlines())
    path.write_bytes(path.read_bytes()[:4096 + 65536 + 30000])
    result = run_cli(["--emit", "all", "--input", str(path)])
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    lost = whole - len(result.stdout.splitlines())
    after = 300 - 2 * 41  # chunks of 41 records
    assert f"{path}: EVTX file truncated: 1 of 8 chunks complete, the file ends inside chunk 2; the records of the " \
           f"6 missing chunks ({after} records) are lost".encode() in result.stderr, result.stderr
    assert f"{path} chunk 2: the file ends inside this chunk, after 30000 of its 65536 bytes; {lost - after} of its " \
           "41 records are lost".encode() in result.stderr, result.stderr


def _record_ends(data: bytes) -> list:
    """The file offsets where the records end, walking each chunk by the records' sizes."""
    ends = []
    for base in range(4096, len(data) - 65536 + 1, 65536):
        offset = 512
        while data[base + offset:base + offset + 4] == b"**\0\0":
            size = int.from_bytes(data[base + offset + 4:base + offset + 8], "little")
            ends.append(base + offset + size)
            offset += size
    return ends


def _lost_said(reports) -> int:
    pattern = re.compile(r"(\d+) of its \d+ records are lost|its (\d+) records are lost|\((\d+) records\) are lost")
    counts = [pattern.search(message) for _, message in reports]
    assert all(reports) and len(counts) == len(reports), reports
    return sum(int(next(group for group in found.groups() if group)) for found in counts if found)


_NETEXEC = os.path.join(SIGMAHQ, "regression_data", "rules", "windows", "file", "file_event",
                        "file_event_win_hktl_netexec_file_indicators", "efc21479-9e83-41da-8cf1-122e06ba8db3.evtx")


@settings(max_examples=40, deadline=None)
@given(source=st.sampled_from(["written"] + (["windows"] if os.path.exists(_NETEXEC) else [])),
       where=st.floats(0, 1, exclude_max=True))
def test_a_file_cut_anywhere_keeps_every_record_it_holds_whole_and_counts_the_rest(tmp_path_factory, source, where):
    """A file cut inside a chunk (a copy interrupted, a full disk) lost all that chunk's records,
    though most were there whole; and a log in use, its header saying fewer chunks than it held,
    lost the cut chunk without a word.  Cut anywhere, the records read are exactly the whole
    file's records that end before the cut, as the parser reads them from the whole file, and the
    records said lost are all the others."""
    from pipeshell_filter.io.evtx_chunks import evtx_records
    folder = tmp_path_factory.mktemp("cut")
    whole_path, cut_path = folder / "whole.evtx", folder / "cut.evtx"
    if source == "windows":  # written by Windows: a string table, templates
        whole_path.write_bytes(open(_NETEXEC, "rb").read())
    else:
        write_evtx(str(whole_path), _many(300))
    data = whole_path.read_bytes()
    whole = list(evtx_records(str(whole_path), lambda *_: pytest.fail("the whole file reported a loss")))
    ends = _record_ends(data)
    assert len(ends) == len(whole)
    cut = 4096 + int(where * (len(data) - 4096))
    cut_path.write_bytes(data[:cut])
    reports = []
    read = list(evtx_records(str(cut_path), lambda where, message: reports.append((where, message))))
    assert read == [line for line, end in zip(whole, ends) if end <= cut]
    if cut >= 4096 + 40:  # the first chunk's header numbers its records; before it, how many is not known
        assert _lost_said(reports) == len(whole) - len(read), reports
    else:
        assert reports and "are lost" in reports[0][1], reports


def test_a_damaged_chunk_count_in_the_header_is_not_believed(tmp_path):
    """The header's chunk count, damaged, was taken at its word: a file cut inside its second chunk
    was said to have lost the records of 65533 chunks."""
    path = tmp_path / "cut.evtx"
    write_evtx(str(path), _many(300))
    data = bytearray(path.read_bytes()[:4096 + 65536 + 30000])
    data[42:44] = (65535).to_bytes(2, "little")  # the header's checksum no longer holds
    path.write_bytes(bytes(data))
    result = run_cli(["--emit", "all", "--input", str(path)])
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert b"missing chunks" not in result.stderr and b"65535" not in result.stderr, result.stderr
    assert f"{path} chunk 2: the file ends inside this chunk, after 30000 of its 65536 bytes".encode() \
        in result.stderr, result.stderr


def test_not_an_evtx_file_with_the_suffix_is_a_usage_error(tmp_path):
    path = tmp_path / "fake.evtx"
    path.write_bytes(b"this is not an event log\n")
    result = run_cli(["--input", str(path)])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert b"fake.evtx" in result.stderr and b"Traceback" not in result.stderr


def test_a_named_pipe_named_as_an_evtx_file_is_a_usage_error_not_a_wait(tmp_path):
    """An EVTX file is read chunk by chunk, at their places: a named pipe cannot be.  Opened to read
    its header, the filter waited for a writer that would not come, deaf to SIGTERM (its open taken
    up again after the signal), which only SIGKILL ended."""
    path = tmp_path / "live.evtx"
    os.mkfifo(path)
    result = run_cli(["--input", str(path)], timeout=30)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert b"live.evtx" in result.stderr and b"regular file" in result.stderr


def test_the_memory_a_file_takes_does_not_grow_with_its_size(tmp_path):
    """Every chunk's 512-byte header was kept while the file was read: a log preallocated or carved
    from a disk, gigabytes of zeros after its chunks, took 11 MB of memory per gigabyte."""
    import tracemalloc

    from pipeshell_filter.io.evtx_chunks import ChunkReader, numbered_records

    path = tmp_path / "preallocated.evtx"
    write_evtx(str(path), ATTACK)
    os.truncate(path, 2 << 30)  # sparse: no disk taken

    class NoParser(ChunkReader):
        def chunk(self, path, index, stop=None):
            return [], [], "done"

    reports = []
    tracemalloc.start()
    try:
        assert list(numbered_records(str(path), lambda *report: reports.append(report), NoParser())) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert len(reports) == 1 and "4 of its 4 records could not be read" in reports[0][1], reports


def test_an_element_name_damaged_into_a_line_break_leaves_every_record_one_json_line(tmp_path):
    """The parser writes an element's name as the chunk's string table holds it, a control character
    unescaped: a name damaged into a line break split its record in two lines of the filter's output,
    neither JSON, without a word."""
    path = tmp_path / "damaged-name.evtx"
    write_evtx(str(path), ATTACK)
    data = bytearray(path.read_bytes())
    name = data.index("EventRecordID".encode("utf-16-le"), 4096)
    data[name + 2 * 7] = 0x0A  # EventRe\nordID
    path.write_bytes(bytes(data))
    result = run_cli(["--emit", "all", "--input", str(path)])
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in result.stdout.split(b"\n")[:-1]]  # each line JSON
    assert sum("Event" in one for one in written) == len(ATTACK), result.stdout


def test_an_unreadable_evtx_file_in_a_directory_is_reported_and_the_others_read(tmp_path):
    """Named, a file that is no EVTX is a usage error; found in a directory (here one cut inside
    its 4096-byte header, and one that only has the suffix) it is reported and skipped: the
    directory's other files are read as before."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write_evtx(str(logs / "server.evtx"), ATTACK)
    whole = (logs / "server.evtx").read_bytes()
    (logs / "cut.evtx").write_bytes(whole[:1000])
    (logs / "fake.evtx").write_bytes(b"this is not an event log\n")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "server.evtx").write_bytes(whole)
    expected = run_cli(["--emit", "all", "--input", str(alone)])
    assert expected.returncode == 0 and len(alerts(expected.stdout)) == 1, expected.stderr
    result = run_cli(["--emit", "all", "--input", str(logs)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    reports = result.stderr.decode().splitlines()
    assert [line for line in reports if "file skipped" in line] == [line for line in reports if "evtx" in line]
    assert len([line for line in reports if "file skipped" in line]) == 2, reports
    assert any(f"{logs / 'cut.evtx'}: not a readable EVTX file (" in line for line in reports), reports
    assert any(f"{logs / 'fake.evtx'}: not a readable EVTX file (" in line for line in reports), reports
    assert b"Traceback" not in result.stderr
    named = run_cli(["--emit", "all", "--input", str(logs / "server.evtx"), "--input", str(logs / "cut.evtx")])
    assert named.returncode == 2 and len(named.stderr.splitlines()) == 1 and b"cut.evtx" in named.stderr


def _many(count):
    return [powershell(100 + i, f"2026-11-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z", f"h{i % 7}.corp", "benign", 4104)
            for i in range(count)]


def test_every_record_a_damaged_chunk_loses_is_reported(tmp_path):
    """A zeroed chunk was skipped in silence, and a bad record that ends its chunk's reading lost the
    rest of the chunk as 'one damaged record': each chunk's header numbers its records."""
    good = tmp_path / "good.evtx"
    write_evtx(str(good), _many(300))
    data = good.read_bytes()
    header, chunk = 4096, 65536
    assert len(data) >= header + 3 * chunk
    zeroed = bytearray(data)
    zeroed[header + 2 * chunk:header + 3 * chunk] = bytes(chunk)
    bad_record = bytearray(data)
    bad_record[header + 512 + 4:header + 512 + 8] = (0xFFFFFFF0).to_bytes(4, "little")  # the first record's size
    whole = run_cli(["--emit", "all", "--input", str(good)])
    for name, damaged, message in (("zeroed", zeroed, b"chunk 3: not an EVTX chunk (damaged or zeroed)"),
                                   ("record", bad_record, b"chunk 1: damaged EVTX record skipped")):
        path = tmp_path / f"{name}.evtx"
        path.write_bytes(bytes(damaged))
        result = run_cli(["--emit", "all", "--input", str(path)])
        lost = len(whole.stdout.splitlines()) - len(result.stdout.splitlines())
        assert result.returncode == 0 and lost > 1, result.stderr
        assert message in result.stderr and b"Traceback" not in result.stderr
        if name == "record":
            assert f"chunk 1: {lost} of its {lost} records could not be read".encode() in result.stderr



def test_a_zeroed_chunk_of_a_log_in_use_is_reported_though_its_header_names_fewer_chunks(tmp_path):
    """Windows updates a log's header lazily: one in use (dirty) names fewer chunks than it holds
    (a real System.evtx: 3 of 15).  A zeroed chunk past that count, though chunks follow it, was
    skipped without a word."""
    path = tmp_path / "dirty.evtx"
    write_evtx(str(path), _many(300))
    data = bytearray(path.read_bytes())
    data[42:44] = (2).to_bytes(2, "little")  # the header says 2 chunks of the 8
    data[120] = 1  # dirty
    data[124:128] = zlib.crc32(bytes(data[:120])).to_bytes(4, "little")
    data[4096 + 4 * 65536:4096 + 5 * 65536] = bytes(65536)
    path.write_bytes(bytes(data))
    reports = []
    from pipeshell_filter.io.evtx_chunks import evtx_records
    assert len(list(evtx_records(str(path), lambda where, message: reports.append((where, message))))) == 300 - 41
    assert reports == [(f"{path} chunk 5", "not an EVTX chunk (damaged or zeroed); its records are lost")]


def test_every_damaged_record_of_a_chunk_is_counted(tmp_path):
    """Only the first 10 damaged records of a chunk were reported: a chunk of 41 bad records said 10
    and counted 10 problems, the other 31 lost without a word."""
    path = tmp_path / "damaged.evtx"
    write_evtx(str(path), _many(300))
    data = bytearray(path.read_bytes())
    chunk, offset, bad = 4096, 512, 0
    while data[chunk + offset:chunk + offset + 4] == b"**\0\0":  # each record of chunk 1: its BinXML broken
        data[chunk + offset + 24] = 0x77
        offset += int.from_bytes(data[chunk + offset + 4:chunk + offset + 8], "little")
        bad += 1
    path.write_bytes(bytes(data))
    assert bad > 10
    result = run_cli(["--emit", "all", "--input", str(path)])
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 300 - bad, result.stderr
    assert f"skipped: {bad} EVTX problems".encode() in result.stderr, result.stderr
    assert b"further ones rate-limited" in result.stderr and b"Traceback" not in result.stderr

def _spinning_file(tmp_path):
    source = os.path.join(SIGMAHQ, "regression_data", "rules", "windows", "builtin", "security",
                          "win_security_susp_scheduled_task_delete_or_disable",
                          "7595ba94-cf3b-4471-aa03-4f6baa9e5fad.evtx")
    if not os.path.exists(source):
        pytest.skip("the shared SigmaHQ regression data is not here")
    spinning = bytearray(open(source, "rb").read())
    spinning[5770] = 1
    path = tmp_path / "stuck.evtx"
    path.write_bytes(bytes(spinning))
    return path


def test_a_chunk_the_parser_is_stuck_on_is_given_up_and_the_file_goes_on(tmp_path):
    """One changed byte in a real SigmaHQ regression file made the Rust parser spin for ever inside
    the filter (SIGTERM could not stop it): chunks are parsed in a child process that is killed."""
    from pipeshell_filter.io.evtx_chunks import ChunkReader, evtx_records
    stuck, good = _spinning_file(tmp_path), tmp_path / "good.evtx"
    write_evtx(str(good), ATTACK)
    reports = []
    reader = ChunkReader(stuck=1.0)
    try:
        started = time.monotonic()
        assert list(evtx_records(str(stuck), lambda where, message: reports.append((where, message)), reader)) == []
        assert time.monotonic() - started < 30
        assert reports == [(f"{stuck} chunk 1", "the EVTX parser was stuck on this chunk (no answer in 1 s); "
                                                 "stopped after 0 records, the rest of the chunk is lost")]
        assert len(list(evtx_records(str(good), lambda *_: None, reader))) == len(ATTACK)  # a new child
    finally:
        reader.close()


def _wait_for_child(pid):
    deadline = time.monotonic() + 15
    while not children(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (child,) = children(pid)
    return child


@pytest.mark.parametrize("whole_group", [False, True], ids=["filter", "process-group"])
def test_sigterm_while_the_parser_spins_stops_at_once_and_says_nothing_of_a_stuck_parser(tmp_path, whole_group):
    """SIGTERM waited for the stuck parser's 10 s; sent to the whole group, it killed the child and
    the filter then blamed a stuck parser ("no answer in 10 s") after 0.1 s."""
    stuck = _spinning_file(tmp_path)
    good = tmp_path / "good.evtx"
    write_evtx(str(good), ATTACK)
    process = subprocess.Popen(COMMAND + ["--input", str(stuck), "--input", str(good)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    child = _wait_for_child(process.pid)
    time.sleep(0.5)  # the child is on the spinning chunk
    started = time.monotonic()
    if whole_group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=15)
    assert time.monotonic() - started < 3
    assert process.returncode == 0 and b"Traceback" not in err
    assert b"stuck" not in err and b"EVTX" not in err, err
    assert not os.path.exists(f"/proc/{child}")


def test_the_parser_child_dies_with_the_filter_and_a_dead_child_is_named_dead(tmp_path):
    """The filter killed (SIGKILL) while its child spins on a chunk: the child dies too, not left
    spinning for ever. A child killed from outside is reported as dead, not as stuck."""
    from pipeshell_filter.io.evtx_chunks import ChunkReader, evtx_records
    stuck = _spinning_file(tmp_path)
    process = subprocess.Popen(COMMAND + ["--input", str(stuck)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = _wait_for_child(process.pid)
    time.sleep(0.5)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().split()[2] != "Z":
        assert time.monotonic() < deadline, "the parser's child outlived the filter"
        time.sleep(0.05)

    reports = []
    reader = ChunkReader(stuck=60.0)
    killer = threading.Thread(target=lambda: (time.sleep(1), os.kill(reader._child.pid, signal.SIGKILL)))
    killer.start()
    try:
        assert list(evtx_records(str(stuck), lambda where, message: reports.append((where, message)), reader)) == []
    finally:
        killer.join()
        reader.close()
    assert reports == [(f"{stuck} chunk 1", "the EVTX parser died on this chunk (killed by SIGKILL); "
                                             "stopped after 0 records, the rest of the chunk is lost")]


def test_a_directory_is_read_through_links_each_file_once_and_a_bad_entry_is_one_line(tmp_path):
    """A link to a file of the same tree read it twice (count correlations inflated); a linked
    directory was never read; a directory whose one file could not be opened gave a traceback."""
    tree = tmp_path / "logs"
    (tree / "sub").mkdir(parents=True)
    write_evtx(str(tree / "sub" / "attack.evtx"), ATTACK)
    (tree / "current.evtx").symlink_to(tree / "sub" / "attack.evtx")
    (tree / "sub" / "up").symlink_to(tree)  # a loop
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "more.ndjson").write_bytes(ndjson([flat_event(0, "ws01", "benign")]))
    (tree / "linked").symlink_to(elsewhere)
    result = run_cli(["--emit", "all", "--input", str(tree)])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if b'"alert"' not in line]
    assert len(lines) == len(ATTACK) + 1 and len(alerts(result.stdout)) == 1
    assert alerts(result.stdout)[0]["sigma"]["events_total"] == 3
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.ndjson").symlink_to(tmp_path / "nowhere")
    result = run_cli(["--input", str(broken)])
    assert result.returncode == 2 and result.stderr.decode().splitlines() == [
        f"pipeshell-filter: error: cannot read input {broken / 'x.ndjson'}: no such file or directory"]


@pytest.mark.parametrize("wrap", ["bom", "line-field"])
def test_merged_files_are_ordered_by_the_line_the_filter_reads(tmp_path, wrap):
    """The merge keyed each line by its raw bytes: a byte order mark, or a collector's --line-field
    wrapper, left it without a time, so it came first and the real episode arrived 'late' (no alert)."""
    def line(seconds, host, kind):
        text = json.dumps(flat_event(seconds, host, kind))
        if wrap == "bom":
            return "\ufeff" + text
        return json.dumps({"log": text})
    files = {"1.ndjson": [line(600, "a", "server")], "2.ndjson": [line(600, "c", "client")],
             "3.ndjson": [line(0, "b", "client"), line(30, "d", "client"), line(60, "e", "server")]}
    for name, lines in files.items():
        (tmp_path / name).write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    args = ["--lateness", "0", "--input", str(tmp_path)] + (["--line-field", "log"] if wrap == "line-field" else [])
    result = run_cli(args)
    assert result.returncode == 0 and b" late" not in result.stderr, result.stderr
    assert [sorted(a["related"]["hosts"]) for a in alerts(result.stdout)] == [["b", "d", "e"]]


def _wrapped(data: bytes, newest: int) -> bytes:
    """``data`` as Windows leaves a full log that wrapped around: its ``newest`` last chunks were
    written over the oldest ones, at the start of the file (the header names the oldest chunk)."""
    header, size = 4096, 65536
    chunks = [data[header + i * size:header + (i + 1) * size] for i in range((len(data) - header) // size)]
    rotated = chunks[-newest:] + chunks[:-newest]
    head = bytearray(data[:header])
    head[8:24] = newest.to_bytes(8, "little") + (newest - 1).to_bytes(8, "little")  # oldest, current chunk
    head[124:128] = zlib.crc32(bytes(head[:120])).to_bytes(4, "little")
    return bytes(head) + b"".join(rotated)


def test_a_log_that_wrapped_around_is_read_oldest_chunk_first(tmp_path):
    """A full log reuses its oldest chunk: the newest records came first in the file, and were read
    first, so a correlation's watermark jumped to them and the episode in the older chunks was late
    (no alert, its hosts blamed for a wrong clock)."""
    events = ATTACK + _many(400)[4:] + [powershell(600, "2026-11-01T13:00:00Z", "srv09.corp", "server", 4104),
                                        powershell(601, "2026-11-01T13:00:10Z", "cli09.corp", "client", 4104),
                                        powershell(602, "2026-11-01T13:00:20Z", "cli08.corp", "client", 4104)]
    events.sort(key=lambda event: event["record_id"])
    ordered, wrapped = tmp_path / "ordered.evtx", tmp_path / "wrapped.evtx"
    write_evtx(str(ordered), events)
    wrapped.write_bytes(_wrapped(ordered.read_bytes(), 2))
    expected = run_cli(["--emit", "all", "--input", str(ordered)])
    assert len(alerts(expected.stdout)) == 2, expected.stderr
    result = run_cli(["--emit", "all", "--input", str(wrapped)])
    assert result.returncode == 0 and b"late" not in result.stderr, result.stderr
    assert result.stdout == expected.stdout


@settings(max_examples=25)
@given(count=st.integers(1, 500), newest=st.integers(0, 8), damaged=st.one_of(st.none(), st.integers(0, 8)))
def test_the_chunks_of_any_wrapped_log_are_read_in_record_order(tmp_path_factory, count, newest, damaged):
    """Whatever chunk a full log wrapped at, and with one chunk zeroed, the records come out in the
    order they were written, the zeroed chunk's reported, and no other lost."""
    from pipeshell_filter.io.evtx_chunks import evtx_records
    folder = tmp_path_factory.mktemp("wrapped")
    ordered, wrapped = folder / "ordered.evtx", folder / "wrapped.evtx"
    write_evtx(str(ordered), _many(count))
    data = ordered.read_bytes()
    chunks = (len(data) - 4096) // 65536
    data = bytearray(_wrapped(data, newest % chunks) if newest % chunks else data)
    if damaged is not None:
        damaged %= chunks
        data[4096 + damaged * 65536:4096 + (damaged + 1) * 65536] = bytes(65536)
    wrapped.write_bytes(bytes(data))
    reports = []
    ids = [json.loads(line)["Event"]["System"]["EventRecordID"]
           for line in evtx_records(str(wrapped), lambda where, message: reports.append((where, message)))]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    if damaged is None:
        assert ids == list(range(100, 100 + count)) and reports == []
    else:
        assert reports == [(f"{wrapped} chunk {damaged + 1}", "not an EVTX chunk (damaged or zeroed); its records "
                                                               "are lost")]


def test_an_evtx_file_whose_name_is_not_utf8_is_read(tmp_path):
    """The parser was given the path: a file name that is no UTF-8 (a Windows share mounted with its
    code page) was 'No such file or directory', a usage error when named, skipped in a directory."""
    logs = tmp_path / "logs"
    logs.mkdir()
    name = os.path.join(os.fsencode(logs), b"Sicherheit-\xe4nderungen.evtx")
    write_evtx(os.fsdecode(name), ATTACK)
    write_evtx(str(tmp_path / "same.evtx"), ATTACK)
    expected = run_cli(["--emit", "all"], parser_lines(tmp_path / "same.evtx"))
    assert len(alerts(expected.stdout)) == 1
    for named in (os.fsdecode(name), str(logs)):
        result = subprocess.run([os.fsencode(part) for part in COMMAND + ["--emit", "all", "--input", named]],
                                capture_output=True, timeout=60)
        assert result.returncode == 0 and b"EVTX" not in result.stderr, result.stderr
        assert result.stdout == expected.stdout


def test_a_file_hard_linked_into_the_tree_is_read_once(tmp_path):
    """Files were told apart by their real path: a hard link (a snapshot taken with cp -al) read
    the same records twice, and the correlation counted each event twice."""
    tree = tmp_path / "logs"
    (tree / "daily.1").mkdir(parents=True)
    write_evtx(str(tree / "Security.evtx"), ATTACK)
    os.link(tree / "Security.evtx", tree / "daily.1" / "Security.evtx")
    alone = run_cli(["--emit", "all", "--input", str(tree / "Security.evtx")])
    for named in ([str(tree)], [str(tree / "daily.1" / "Security.evtx"), str(tree)]):
        result = run_cli(["--emit", "all"] + [option for path in named for option in ("--input", path)])
        assert result.returncode == 0, result.stderr
        assert result.stdout == alone.stdout
        assert alerts(result.stdout)[0]["sigma"]["events_total"] == 3


def test_explain_events_says_a_damaged_evtx_file_lost_records(tmp_path):
    """explain --events on a file with a zeroed chunk said '259 read' and nothing of the 41 records
    lost: the answer to 'why did this correlation not fire' left out the likeliest reason."""
    path = tmp_path / "zeroed.evtx"
    write_evtx(str(path), _many(300))
    data = bytearray(path.read_bytes())
    data[4096 + 65536:4096 + 2 * 65536] = bytes(65536)
    path.write_bytes(bytes(data))
    result = run_cli(["explain", "--events", str(path)])
    assert result.returncode == 0, result.stderr
    first = result.stdout.decode().splitlines()[0]
    assert first.startswith("events    259 read, records lost to 1 EVTX problem (--input says which); "), first
    write_evtx(str(path), _many(300))
    assert run_cli(["explain", "--events", str(path)]).stdout.decode().startswith("events    300 read; lateness")


def test_a_chunk_whose_header_counts_and_first_record_are_zeroed_reports_its_records_lost(tmp_path):
    """A chunk that kept its magic, but whose header's record numbers and ids and first record were zeroed
    (a zeroed run from byte 16), yielded nothing and its header's counts could not be believed: its
    records were lost without a word."""
    path = tmp_path / "zeroed.evtx"
    write_evtx(str(path), _many(300))
    data = bytearray(path.read_bytes())
    start = 4096 + 2 * 65536
    lost = int.from_bytes(data[start + 16:start + 24], "little") - int.from_bytes(data[start + 8:start + 16],
                                                                                   "little") + 1
    data[start + 16:start + 512 + 40] = bytes(512 + 24)
    path.write_bytes(bytes(data))
    reports = []
    from pipeshell_filter.io.evtx_chunks import evtx_records
    assert len(list(evtx_records(str(path), lambda where, message: reports.append((where, message))))) == 300 - lost
    assert [where for where, _ in reports] == [f"{path} chunk 3"], reports
    assert "lost" in reports[0][1]


@pytest.mark.parametrize("damage", [(0, 4096), (0, 8), (3, 5)])
def test_a_damaged_file_header_loses_no_record_of_the_chunks_after_it(tmp_path, damage):
    """A zeroed (or bit-flipped) file header made the whole file a usage error, and, in a directory, a
    file skipped: every record of its whole chunks lost, though nothing of the header is needed to read
    them (each chunk is handed to the parser with a header of its own)."""
    good, path = tmp_path / "good.evtx", tmp_path / "header.evtx"
    write_evtx(str(good), _many(100))
    data = bytearray(good.read_bytes())
    start, end = damage
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    whole = run_cli(["--emit", "all", "--input", str(good)])
    for named in (path, tmp_path):
        result = run_cli(["--emit", "all", "--input", str(named)])
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
        assert sorted(result.stdout.splitlines()) == sorted(whole.stdout.splitlines() * (1 if named == path else 2))
        assert f"{path}: the EVTX file header is damaged".encode() in result.stderr, result.stderr
        # no record lost: a notice, not an EVTX problem the summary counts as skipped, nor a loss explain names
        summary = result.stderr.splitlines()[-1].decode()
        assert "1 EVTX file(s) read past a damaged file header" in summary and "EVTX problem" not in summary
    explained = run_cli(["explain", "--events", str(path)])
    assert explained.returncode == 0 and b"records lost" not in explained.stdout, explained.stdout[:400]
