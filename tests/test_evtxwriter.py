"""Round trips through ``evtxwriter``: files it writes are read back by the real
parser (``evtx.PyEvtxParser``, the Rust evtx crate) with checksum validation on,
and the parsed JSON/XML must have exactly the expected structure and values.
"""

import datetime as dt
import json
import struct
import zlib

import pytest
from evtx import PyEvtxParser
from hypothesis import given, strategies as st

from evtxwriter import CHUNK_SIZE, FILE_HEADER_SIZE, INT32, Typed, filetime, write_evtx

XMLNS = {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"}

PS_4104 = {
    "provider": "Microsoft-Windows-PowerShell", "event_id": 4104, "qualifiers": None, "level": 5,
    "time": "2026-11-01T10:00:00.1234567Z", "record_id": 11,
    "channel": "Microsoft-Windows-PowerShell/Operational", "computer": "srv01.example.test",
    "data": {"MessageNumber": "1", "MessageTotal": "1",
             "ScriptBlockText": "Get-Process | Where-Object { $_.CPU -gt 10 }",
             "ScriptBlockId": "9f1c2d3e-0000-4000-8000-000000000001", "Path": ""},
}
PS_800 = {
    "provider": "PowerShell", "event_id": 800, "qualifiers": 0, "level": 4,
    "time": "2026-11-01T10:00:01.5Z", "record_id": 12, "channel": "Windows PowerShell",
    "computer": "srv01.example.test",
    "data": ["Get-ChildItem C:\\", "\tDetailSequence=1\r\n\tHostName=ConsoleHost\r\n",
             "CommandInvocation(Get-ChildItem): \"Get-ChildItem\"\r\n"],
}


def _system(provider, event_id, level, system_time, record_id, channel, computer):
    return {
        "Provider": {"#attributes": {"Name": provider}}, "EventID": event_id,
        "Version": 0, "Level": level, "Task": 0, "Opcode": 0, "Keywords": "0x0",
        "TimeCreated": {"#attributes": {"SystemTime": system_time}},
        "EventRecordID": record_id, "Correlation": None, "Execution": None,
        "Channel": channel, "Computer": computer, "Security": None,
    }


def read(path, **kw):
    """All records as (record dict, parsed Event), with CRC32 validation on."""
    parser = PyEvtxParser(str(path), validate_checksums=True, **kw)
    return [(r, json.loads(r["data"])) for r in parser.records_json()]


def test_4104_named_event_data_exact_json(tmp_path):
    write_evtx(tmp_path / "a.evtx", [PS_4104])
    [(rec, doc)] = read(tmp_path / "a.evtx")
    assert rec["event_record_id"] == 11
    assert rec["timestamp"] == "2026-11-01T10:00:00.1234567Z UTC"
    assert doc == {"Event": {
        "#attributes": XMLNS,
        "System": _system("Microsoft-Windows-PowerShell", 4104, 5, "2026-11-01T10:00:00.123456Z",
                          11, "Microsoft-Windows-PowerShell/Operational", "srv01.example.test"),
        "EventData": {"MessageNumber": "1", "MessageTotal": "1",
                      "ScriptBlockText": "Get-Process | Where-Object { $_.CPU -gt 10 }",
                      "ScriptBlockId": "9f1c2d3e-0000-4000-8000-000000000001", "Path": ""},
    }}


def test_800_unnamed_data_and_qualifiers_exact_json(tmp_path):
    write_evtx(tmp_path / "b.evtx", [PS_800])
    [(rec, doc)] = read(tmp_path / "b.evtx")
    assert rec["event_record_id"] == 12
    assert rec["timestamp"] == "2026-11-01T10:00:01.5Z UTC"
    system = _system("PowerShell", {"#attributes": {"Qualifiers": 0}, "#text": 800}, 4,
                     "2026-11-01T10:00:01.500000Z", 12, "Windows PowerShell", "srv01.example.test")
    assert doc == {"Event": {"#attributes": XMLNS, "System": system,
                             "EventData": {"Data": {"#text": PS_800["data"]}}}}


def test_xml_rendering_of_both_records(tmp_path):
    write_evtx(tmp_path / "c.evtx", [PS_4104, PS_800])
    xml = [r["data"] for r in PyEvtxParser(str(tmp_path / "c.evtx"), validate_checksums=True).records()]
    assert len(xml) == 2
    assert '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event">' in xml[0]
    assert "<EventID>4104</EventID>" in xml[0]
    assert '<TimeCreated SystemTime="2026-11-01T10:00:00.123456Z">' in xml[0]
    assert '<Data Name="ScriptBlockText">Get-Process | Where-Object { $_.CPU -gt 10 }</Data>' in xml[0]
    assert '<EventID Qualifiers="0">800</EventID>' in xml[1]
    assert "<Data>Get-ChildItem C:\\</Data>" in xml[1]
    assert "<Channel>Windows PowerShell</Channel>" in xml[1]


def test_optional_system_fields_and_typed_values(tmp_path):
    ev = dict(PS_4104, version=1, task=2, opcode=15, keywords=0x8000000000000000,
              process_id=4242, thread_id=77, user_id="S-1-5-21-1-2-3-1001",
              provider_guid="{A0C1853B-5C40-4B15-8766-3CF1C58F985A}", qualifiers=16384,
              data={"MessageNumber": Typed(INT32, 1), "MessageTotal": 3, "Path": None})
    write_evtx(tmp_path / "d.evtx", [ev])
    [(_, doc)] = read(tmp_path / "d.evtx")
    system = doc["Event"]["System"]
    assert system["Provider"] == {"#attributes": {
        "Name": "Microsoft-Windows-PowerShell", "Guid": "{A0C1853B-5C40-4B15-8766-3CF1C58F985A}"}}
    assert system["EventID"] == {"#attributes": {"Qualifiers": 16384}, "#text": 4104}
    assert (system["Version"], system["Task"], system["Opcode"]) == (1, 2, 15)
    assert system["Keywords"] == "0x8000000000000000"
    assert system["Execution"] == {"#attributes": {"ProcessID": 4242, "ThreadID": 77}}
    assert system["Security"] == {"#attributes": {"UserID": "S-1-5-21-1-2-3-1001"}}
    assert doc["Event"]["EventData"] == {"MessageNumber": 1, "MessageTotal": 3, "Path": ""}


def test_data_shapes(tmp_path):
    base = dict(PS_800, record_id=None)
    shapes = [["only"], ["a", "", "c"], [], {}]
    write_evtx(tmp_path / "e.evtx", [dict(base, data=d) for d in shapes])
    got = [doc["Event"]["EventData"] for _, doc in read(tmp_path / "e.evtx")]
    # One unnamed <Data> is a scalar #text, several are a list, none is null.
    assert got == [{"Data": {"#text": "only"}}, {"Data": {"#text": ["a", "", "c"]}}, None, None]


def test_non_ascii_and_special_characters(tmp_path):
    text = "Write-Host 'Grüße, Привет, 日本語, emoji 🙂 𝄞' <tag a=\"1\"> & \r\n\tend"
    ev = dict(PS_4104, computer="сервер-01.пример.test", channel="Ünïcode/Operational",
              data={"ScriptBlockText": text, "Päth": "C:\\Users\\Zoë\\naïve.ps1"})
    write_evtx(tmp_path / "f.evtx", [ev])
    [(_, doc)] = read(tmp_path / "f.evtx")
    assert doc["Event"]["System"]["Computer"] == "сервер-01.пример.test"
    assert doc["Event"]["System"]["Channel"] == "Ünïcode/Operational"
    assert doc["Event"]["EventData"] == {"ScriptBlockText": text, "Päth": "C:\\Users\\Zoë\\naïve.ps1"}
    [xml] = [r["data"] for r in PyEvtxParser(str(tmp_path / "f.evtx")).records()]
    assert "&lt;tag a=\"1\"&gt; &amp;" in xml and "<Computer>сервер-01.пример.test</Computer>" in xml


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300))
def test_arbitrary_text_round_trips(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("prop") / "p.evtx"
    write_evtx(path, [dict(PS_4104, data={"ScriptBlockText": text}), dict(PS_800, data=[text, "x"])])
    (_, a), (_, b) = read(path)
    assert a["Event"]["EventData"] == {"ScriptBlockText": text}
    assert b["Event"]["EventData"] == {"Data": {"#text": [text, "x"]}}


def _block(i, size=3000):
    body = f"# script block {i}\n" + "".join(f"$v{j} = 'value {i}-{j} ü'\n" for j in range(400))
    return body[:size]


def test_multi_chunk_file_with_300_large_script_blocks(tmp_path):
    events = [dict(PS_4104, record_id=1000 + i, time=f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}.0000001Z",
                   data={"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": _block(i)})
              for i in range(300)]
    path = tmp_path / "big.evtx"
    write_evtx(path, events)
    raw = path.read_bytes()
    n_chunks = (len(raw) - FILE_HEADER_SIZE) // CHUNK_SIZE
    assert len(raw) == FILE_HEADER_SIZE + n_chunks * CHUNK_SIZE and n_chunks >= 10
    records = read(path)
    assert [r["event_record_id"] for r, _ in records] == list(range(1000, 1300))
    for i, (rec, doc) in enumerate(records):
        system = doc["Event"]["System"]
        assert system["EventRecordID"] == 1000 + i and system["EventID"] == 4104
        assert system["TimeCreated"]["#attributes"]["SystemTime"] == \
            f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}.000000Z"
        assert rec["timestamp"] == f"2026-11-01T10:{i // 60:02d}:{i % 60:02d}.0000001Z UTC"
        assert doc["Event"]["EventData"]["ScriptBlockText"] == _block(i)
    xml_ids = [r["event_record_id"] for r in PyEvtxParser(str(path), validate_checksums=True).records()]
    assert xml_ids == list(range(1000, 1300))


def test_record_filling_a_whole_chunk(tmp_path):
    # 31922 UTF-16 code units is the largest ScriptBlockText that fits into one
    # chunk with this event's other fields; the record then ends 1 byte short of 64 KiB.
    big = (_block(0, 10**6) * 4)[:31922]
    path = tmp_path / "g.evtx"
    write_evtx(path, [dict(PS_4104, data={"ScriptBlockText": big}), PS_800])
    assert path.stat().st_size == FILE_HEADER_SIZE + 2 * CHUNK_SIZE
    assert struct.unpack_from("<I", path.read_bytes(), FILE_HEADER_SIZE + 48)[0] == CHUNK_SIZE - 1
    docs = [doc for _, doc in read(path)]
    assert docs[0]["Event"]["EventData"]["ScriptBlockText"] == big
    assert docs[1]["Event"]["EventData"]["Data"]["#text"] == PS_800["data"]
    with pytest.raises(ValueError, match="does not fit"):
        write_evtx(path, [dict(PS_4104, data={"ScriptBlockText": big + "x"})])


def test_headers_and_checksums(tmp_path):
    events = [dict(PS_4104, record_id=None, data={"ScriptBlockText": _block(i, 3000)}) for i in range(25)]
    path = tmp_path / "h.evtx"
    write_evtx(path, events)
    raw = path.read_bytes()
    magic, first, last, next_id, hsize, minor, major, block, count = \
        struct.unpack_from("<8sQQQIHHHH", raw, 0)
    assert (magic, first, hsize, minor, major, block) == (b"ElfFile\0", 0, 128, 1, 3, 4096)
    assert count == last + 1 == (len(raw) - FILE_HEADER_SIZE) // CHUNK_SIZE and count > 1
    assert next_id == 26
    assert struct.unpack_from("<I", raw, 124)[0] == zlib.crc32(raw[:120])
    expected_first = 1
    for c in range(count):
        chunk = raw[FILE_HEADER_SIZE + c * CHUNK_SIZE:][:CHUNK_SIZE]
        magic, n_first, n_last, i_first, i_last, hsize, last_off, free, data_crc = \
            struct.unpack_from("<8sQQQQIIII", chunk, 0)
        assert (magic, hsize, n_first, n_last) == (b"ElfChnk\0", 128, i_first, i_last)
        assert i_first == expected_first
        assert data_crc == zlib.crc32(chunk[512:free])
        assert struct.unpack_from("<I", chunk, 124)[0] == zlib.crc32(chunk[:120] + chunk[128:512])
        assert not any(chunk[free:])  # unused space is zero
        # Walk the records: signature, size, id, trailing size copy.
        off, rid = 512, i_first
        while off < free:
            sig, size, rec_id = struct.unpack_from("<4sIQ", chunk, off)
            assert (sig, rec_id) == (b"**\0\0", rid)
            assert struct.unpack_from("<I", chunk, off + size - 4)[0] == size
            last_seen, off, rid = off, off + size, rid + 1
        assert (off, last_seen, rid - 1) == (free, last_off, i_last)
        expected_first = i_last + 1
    assert expected_first == 26


def test_time_inputs():
    ref = filetime("2026-11-01T10:00:00.1234567Z")
    assert filetime("2026-11-01T12:00:00.1234567+02:00") == ref
    assert filetime("2026-11-01T10:00:00.123456789Z") == ref  # 100 ns resolution
    assert filetime(dt.datetime(2026, 11, 1, 10, 0, 0, 123456)) == ref - 7
    assert filetime(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc)) == ref - 1234567
    ns = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp()) * 10**9 + 123456700
    assert filetime(ns) == ref
    assert filetime("1601-01-01T00:00:00Z") == 0
    with pytest.raises(ValueError):
        filetime("01/11/2026 10:00")


def test_time_inputs_as_parsed(tmp_path):
    times = ["2026-11-01T10:00:00Z", dt.datetime(2026, 11, 1, 10, 0, 1, 250000),
             1_793_527_202_000_000_100]
    write_evtx(tmp_path / "t.evtx", [dict(PS_800, record_id=None, time=t) for t in times])
    got = [(r["timestamp"], d["Event"]["System"]["TimeCreated"]["#attributes"]["SystemTime"])
           for r, d in read(tmp_path / "t.evtx")]
    assert got == [("2026-11-01T10:00:00Z UTC", "2026-11-01T10:00:00.000000Z"),
                   ("2026-11-01T10:00:01.25Z UTC", "2026-11-01T10:00:01.250000Z"),
                   ("2026-11-01T10:00:02.0000001Z UTC", "2026-11-01T10:00:02.000000Z")]


def test_empty_file_and_errors(tmp_path):
    write_evtx(tmp_path / "empty.evtx", [])
    assert (tmp_path / "empty.evtx").stat().st_size == FILE_HEADER_SIZE
    assert read(tmp_path / "empty.evtx") == []
    with pytest.raises(ValueError, match="increasing"):
        write_evtx(tmp_path / "x.evtx", [PS_800, PS_4104])  # 12 then 11
    with pytest.raises(ValueError, match="does not fit"):
        write_evtx(tmp_path / "x.evtx", [dict(PS_4104, data={"ScriptBlockText": "x" * 40000})])


def test_corrupted_chunk_is_rejected_by_parser(tmp_path):
    path = tmp_path / "bad.evtx"
    write_evtx(path, [PS_4104])
    raw = bytearray(path.read_bytes())
    raw[FILE_HEADER_SIZE + 600] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="CRC32"):
        read(path)
