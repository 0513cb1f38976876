"""Fluent Bit's winevtlog with Render_Event_As_XML: the whole event as one XML text in the record's System.

Such records were said of (``xml_event``) and never matched: they are now read as the event their XML
holds, in the evtx shape, with the record's Message beside it (``events.xml_event.rendered_event``).
"""

import json
import os
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clitools import filter_file, alerts, records, run_cli, run_cli_here
from eventgen import CLIENT, FRAMINGS, HOSTS, SERVER, framed, raw_events
from shapes import NS, Logical, event_xml, fluentbit, fluentbit_map, fluentbit_xml
from sigmahq import SIGMAHQ
from pipeshell_filter.events.xml_event import carried_event
from pipeshell_filter.io import parallel
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule

T0 = 1622725200 * NS  # 2021-06-03T13:00:00Z
CERTUTIL_RULE = os.path.join(SIGMAHQ, "rules", "windows", "process_creation", "proc_creation_win_certutil_download.yml")


def ndjson(*events) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def test_the_record_is_read_as_its_xml_event_with_its_message():
    event = Logical("srv01.corp", T0 + 12 * NS, 4104, f"$p = New-Object {SERVER}('x') & <y>")
    record = json.loads(json.dumps(fluentbit_xml(event, event_data_as_map=True)))
    read = carried_event(record)
    assert set(read) == {"Event", "Message"} and read["Message"] == event.message  # not StringInserts, the map
    system = read["Event"]["System"]
    assert system["EventID"] == "4104" and system["Computer"] == "srv01.corp"
    assert system["TimeCreated"]["#attributes"]["SystemTime"] == "2021-06-03T13:00:12.0000000Z"
    assert system["Execution"]["#attributes"] == {"ProcessID": "4242", "ThreadID": "17"}
    assert read["Event"]["EventData"]["ScriptBlockText"] == event.text  # the entity references read
    assert carried_event({"System": "Linux", "Message": "<Event>"}) is None  # a text System that is no XML
    assert "Message" not in carried_event({"System": event_xml(event)})


# ---------------------------------------------------------------- the built-in rule, both renderings

TEXTS = {"server": f"$p = New-Object {SERVER}('x')", "client": f"$c = New-Object {CLIENT}('.', 'x')",
         "both": f"{SERVER} {CLIENT}", "benign": "Get-ChildItem C:\\ | Out-Null"}
# Characters XML 1.0 can carry (no C0 control but tab and line breaks, no U+FFFE/U+FFFF), those it escapes too.
XML_CHARS = st.one_of(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                      st.sampled_from("\t\r\n&<>'\""))


def _stream(drawn, fillers) -> list:
    return [Logical(host, T0 + seconds * NS, event_id, fillers[i % len(fillers)] + TEXTS[kind], record_id=i + 1)
            for seconds, host, kind, event_id, i in drawn]


def _read(result) -> tuple:
    """(alerts, each other record's sigma or None, those records without it) of one run."""
    assert result.returncode == 0, result.stderr
    out = [r for r in records(result.stdout) if r.get("event", {}).get("kind") != "alert"]
    return _xml_line_breaks(alerts(result.stdout)), [r.get("sigma") for r in out], \
        [{k: v for k, v in r.items() if k != "sigma"} for r in out]


def _xml_line_breaks(found: list) -> list:
    """Alerts with the values they show of their events (``sigma.events[].fields``) as XML reads text:
    a parser makes each line break in it one LF (XML 1.0, 2.11), so an XML-rendered event has them so."""
    def read(value):
        return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else value

    for alert in found:
        for event in alert["sigma"]["events"]:
            for name, value in event.get("fields", {}).items():
                event["fields"][name] = [read(v) for v in value] if isinstance(value, list) else read(value)
    return found


@settings(max_examples=50)  # four runs of the command each
@given(raw_events(max_size=24), st.lists(st.text(XML_CHARS, max_size=12), min_size=1, max_size=4),
       st.sampled_from(["\r\n", "&#13;&#10;", "\n"]), st.booleans())
@example([(0, "srv01", "server", 800, 0), (60, "cli01", "client", 4103, 1), (90, "cli02", "client", 4104, 2)],
         ["a & b <c> 'd' \"e\""], "\r\n", False)
def test_xml_rendered_events_alert_exactly_as_the_map_shaped_ones(events, fillers, line_break, with_map):
    """The same random events, as Fluent Bit's map-shaped records and rendered as XML: the same alerts, the
    same lines matched with the same selections; each XML record written as it came, with the prefilter
    and without it byte for byte."""
    stream = _stream(events, fillers)
    shaped = ndjson(*[(fluentbit_map if with_map else fluentbit)(event) for event in stream])
    rendered = ndjson(*[fluentbit_xml(event, with_map, line_break) for event in stream])
    expected = _read(run_cli_here(["--emit", "all"], shaped))
    got = run_cli_here(["--emit", "all"], rendered)
    found = _read(got)
    assert found[:2] == expected[:2]
    assert found[2] == records(rendered)
    assert b"xml_unread" not in got.stderr and b"no_event_data_map" not in got.stderr
    unfiltered = run_cli_here(["--emit", "all", "--no-prefilter"], rendered)
    assert (unfiltered.stdout, unfiltered.stderr) == (got.stdout, got.stderr)
    python = run_cli_here(["--emit", "all", "--prefilter-engine", "python"], rendered)
    assert python.stdout == got.stdout


def test_the_incident_rendered_as_xml_alerts_through_the_command():
    """Before: three events said ``xml_event``, no selection matched, no alert."""
    incident = [Logical("srv01", T0 + 12 * NS, 800, f"New-Object {SERVER}"),
                Logical("cli01", T0 + 65 * NS, 4103, CLIENT), Logical("cli02", T0 + 290 * NS, 4104, CLIENT.upper())]
    result = run_cli(["--emit", "alerts"], ndjson(*map(fluentbit_xml, incident)))
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 1 and found[0]["related"]["hosts"] == ["cli01", "cli02", "srv01"]
    assert found[0]["@timestamp"] == "2021-06-03T13:04:50Z"  # the XML's TimeCreated, not the read time
    assert b"xml_event" not in result.stderr and b"3 matched; 1 alert" in result.stderr


@pytest.mark.parametrize("options", [["--profile", "fluentbit-winevtlog"], ["--time-field", "date"],
                                     ["--profile", "flat", "--time-field", "date"], ["--profile", "evtx"]])
def test_a_fixed_profile_or_time_field_reads_the_xml_event_in_its_own_shape(options):
    """``--profile`` and ``--time-field`` say what the records are; an event read from the XML one carries is
    in the evtx shape at its own TimeCreated whatever they say.  Before: a fixed profile read it through its
    paths and matched nothing, and ``--time-field date`` found no time in it (no alert: left out of correlation).
    A record read as it is goes on being read as they say (its ``date``, an hour later, is its time)."""
    incident = [Logical("srv01", T0 + 12 * NS, 800, f"New-Object {SERVER}"),
                Logical("cli01", T0 + 65 * NS, 4103, CLIENT), Logical("cli02", T0 + 290 * NS, 4104, CLIENT.upper())]
    read_at = "2021-06-03 14:00:00 +0000"
    lines = [dict(fluentbit_xml(event), date=read_at) for event in incident]
    expected = run_cli(["--emit", "alerts"], ndjson(*lines))
    result = run_cli(["--emit", "alerts", *options], ndjson(*lines))
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert found == alerts(expected.stdout) and len(found) == 1, result.stderr
    assert found[0]["@timestamp"] == "2021-06-03T13:04:50Z"  # the XML's TimeCreated, not the record's date
    assert b"3 matched; 1 alert" in result.stderr and b"no_time" not in result.stderr
    if options == ["--time-field", "date"]:  # beside a record without XML, read at its date
        both = ndjson(lines[0], dict(fluentbit(incident[0]), date=read_at))
        matched = run_cli(["--stage", "match", "--heartbeat", "0", *options], both)
        times = [r["time"] for r in records(matched.stdout) if r.get("type") == "sigma.detection"]
        assert times == [T0 + 12 * NS, T0 + 3600 * NS], matched.stderr


# ---------------------------------------------------------------- SigmaHQ's Windows rules, entities

def sysmon_windows_xml(image_xml: str, command_xml: str, host: str = "ws01.corp") -> str:
    """A Sysmon process creation (EventID 1) as EvtRender writes it; the values given already XML-escaped."""
    return ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
            "<Provider Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/>"
            "<EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>"
            "<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='2026-12-04T10:00:00.1234567Z'/>"
            "<EventRecordID>4711</EventRecordID><Correlation/><Execution ProcessID='3012' ThreadID='4072'/>"
            f"<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>{host}</Computer>"
            "<Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'>-</Data>"
            "<Data Name='UtcTime'>2026-12-04 10:00:00.120</Data><Data Name='ProcessId'>6252</Data>"
            f"<Data Name='Image'>{image_xml}</Data><Data Name='OriginalFileName'>CertUtil.exe</Data>"
            f"<Data Name='CommandLine'>{command_xml}</Data><Data Name='User'>CORP\\jdoe</Data>"
            "<Data Name='ParentImage'>C:\\Windows\\System32\\cmd.exe</Data></EventData></Event>")


def xml_record(xml: str) -> dict:
    return {"System": xml, "Message": "Process Create:\r\nRuleName: -", "StringInserts": ["-", "x"]}


IMAGE = "C:\\Windows\\System32\\certutil.exe"


@pytest.mark.skipif(not os.path.isfile(CERTUTIL_RULE), reason="the shared SigmaHQ checkout is absent")
@pytest.mark.parametrize("extra", [[], ["--no-prefilter"], ["--prefilter-engine", "python"]])
def test_a_sigmahq_windows_rule_matches_an_xml_rendered_event_its_values_entity_escaped(extra):
    """``&#99;ertutil.exe`` is certutil.exe and ``&quot;``/``&amp;`` quotes and an ampersand: the rule's
    literals are not in the line's bytes as it spells them, so the line must be read to match.  The
    positional StringInserts beside the XML are not said to lack named fields (the XML names them)."""
    matching = xml_record(sysmon_windows_xml("C:\\Windows\\System32\\&#99;ertutil.exe",
                                             "certutil -f -&#117;rlcache &quot;&#x68;ttp://x/a&amp;b&quot; a.exe"))
    quiet = xml_record(sysmon_windows_xml(IMAGE.replace("certutil", "c&#101;rtutil"), "certutil -dump a.cer"))
    result = run_cli(["--rule", CERTUTIL_RULE, "--emit", "all", *extra], ndjson(matching, quiet))
    assert result.returncode == 0, result.stderr
    found, sigma, written = _read(result)
    assert sigma[0]["rule"]["title"] == "Suspicious Download Via Certutil.EXE" and sigma[1] is None
    assert written == [matching, quiet]
    assert found[0]["related"]["hosts"] == ["ws01.corp"] and found[0]["@timestamp"] == "2026-12-04T10:00:00.123456700Z"
    assert b"no_event_data_map" not in result.stderr and b"StringInserts" not in result.stderr


# ---------------------------------------------------------------- hostile XML in System

BILLION_LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)) + ']>')
HOSTILE = {
    "billion laughs": BILLION_LAUGHS + "<Event><System/><EventData><Data Name='CommandLine'>&lol9; x</Data>"
                                       "</EventData></Event>",
    "deep": "<Event><System/>" + "<a>" * 100_000 + "x" + "</a>" * 100_000 + "</Event>",
    "wide": "<Event><System/>" + "<a/>" * 200_000 + "</Event>",
    "huge": "<Event><System/><EventData><Data Name='x'>" + "x" * (1 << 20) + "</Data></EventData></Event>",
    "truncated": event_xml(Logical("srv01", T0, 4104, SERVER))[:600],
    "external entity": "<Event><System/><Data>&xxe; x</Data></Event>",
    "processing instruction": "<Event><?pi x?><System/></Event>",
    "cdata": f"<Event><System/><EventData><Data Name='ScriptBlockText'><![CDATA[{SERVER}]]></Data></EventData></Event>",
}


@pytest.mark.parametrize("prefilter", [[], ["--no-prefilter"]])
def test_hostile_xml_in_system_is_a_diagnostic_and_the_stream_goes_on(prefilter):
    good = [fluentbit_xml(Logical(host, T0 + i * NS, 4104, f"{SERVER} {CLIENT}")) for i, host in enumerate(HOSTS[:3])]
    lines = []
    for name, payload in HOSTILE.items():
        lines += [{"System": payload + f" {SERVER} {CLIENT}", "Message": name}]
    lines += good
    result = run_cli(["--emit", "all", *prefilter], ndjson(*lines), timeout=120)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    found, sigma, written = _read(result)
    assert written == lines and sigma == [None] * len(HOSTILE) + [sigma[-1]] * 3 and sigma[-1] is not None
    assert len(found) == 1
    said = [line for line in result.stderr.decode().splitlines() if "not read" in line and "line " in line]
    assert len(said) == len(HOSTILE), result.stderr
    assert f"{len(HOSTILE)} line(s) whose event XML was not read (xml_unread)" in result.stderr.decode()


# ---------------------------------------------------------------- workers, explain

def _filter_file(data: bytes, workers: int) -> tuple:
    plans = [compile_plan(load_rule(BUILTIN_RULE, builtin=True))]
    return filter_file(plans, data, workers)


@pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")
def test_worker_processes_read_render_event_as_xml_as_one_process_does():
    """Detecting workers sent every record with a text System back to the parent; now they match its
    XML's event, and leave a refused one to the parent, which says so."""
    lines = []
    for i in range(100):
        lines += [fluentbit_xml(Logical(HOSTS[i % 3], T0 + i * 7 * NS, 4104, f"{SERVER} & {CLIENT}",
                                        record_id=i)),
                  {"System": HOSTILE["truncated"] + SERVER, "Message": "x"},
                  fluentbit_xml(Logical(HOSTS[3], T0 + i * 7 * NS, 800, "Get-Date", record_id=i))]
    data = ndjson(*lines)
    alone, together = _filter_file(data, 0), _filter_file(data, 2)
    assert together == alone
    assert alone[1]["xml_unread"] == 100
    assert sum(b'"sigma"' in line and b'"kind":"alert"' not in line for line in alone[0].splitlines()) == 100


def test_explain_reads_the_xml_as_the_stream_does(tmp_path):
    event = tmp_path / "e.json"
    event.write_text(json.dumps(fluentbit_xml(Logical("srv01", T0 + 12 * NS, 4104, f"x & {SERVER}"))))
    result = run_cli(["explain", "--event", str(event)])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "Render_Event_As_XML): that event is read, with the record's Message" in text
    assert "profile   evtx" in text and "time      2021-06-03T13:00:12Z" in text
    assert "<- Event.EventData.ScriptBlockText" in text and "SERVER_powershell_block      MATCH" in text
    fixed = run_cli(["explain", "--event", str(event), "--profile", "fluentbit-winevtlog", "--time-field", "date"])
    assert fixed.returncode == 0, fixed.stderr
    assert "profile   evtx (built-in; an event's XML, whatever --profile and --time-field say)" in fixed.stdout.decode()
    assert "time      2021-06-03T13:00:12Z" in fixed.stdout.decode() and b"MATCH" in fixed.stdout
    event.write_text(json.dumps({"System": HOSTILE["billion laughs"], "Message": "x"}))
    result = run_cli(["explain", "--event", str(event)])
    assert result.returncode == 0 and b"Traceback" not in result.stderr
    assert "; the record is read as it is" in result.stdout.decode()


MESSAGE_RULE = """
title: message and keyword
id: 0b5f3c2a-9d4e-4f61-8a7b-1c2d3e4f5a6b
logsource: {product: windows, service: powershell}
detection:
  message: {Message|contains: 'Creating Scriptblock text'}
  keywords: ['ScriptBlock ID: 5c0e8a3d']
  condition: message and keywords
"""


def test_a_rule_reads_the_records_message_beside_the_xml(tmp_path):
    """The rendered Message is no part of the XML: kept beside its event, a rule's ``Message`` and a keyword
    search see it as they do in every other Fluent Bit mode."""
    rule = tmp_path / "m.yml"
    rule.write_text(MESSAGE_RULE)
    event = Logical("srv01", T0, 4104, "Get-Date")
    lines = ndjson(fluentbit_xml(event), fluentbit(event))
    result = run_cli(["--rule", str(rule), "--emit", "matches"], lines)
    assert result.returncode == 0, result.stderr
    assert [bool(sigma) for sigma in _read(result)[1]] == [True, True], result.stderr


def _spelled(record: dict, index: int) -> bytes:
    """The record's JSON with its XML's ``<`` as itself or as an escape (``\\u003c``, ``\\u003C``: Go's
    encoding/json writes it so), one after the other: the prefilter finds each spelling its own way."""
    text = json.dumps(record)
    return (text, text.replace("<", "\\u003c"), text.replace("<", "\\u003C"))[index % 3].encode() + b"\n"


XML_STREAM = [Logical(HOSTS[i % 4], T0 + i * 7 * NS, (800, 4103, 4104)[i % 3], ("Get-Date", CLIENT)[i % 5 == 0],
                      record_id=i + 1) for i in range(300)]


@pytest.mark.parametrize("extra", [[], ["--no-prefilter"], ["--prefilter-engine", "python"], ["--non-json", "wrap"],
                                   ["--workers", "2", "--input", "FILE"], ["--line-field", "log"],
                                   ["--stage", "match", "--agent", "a1"]])
def test_fluentbit_time_frames_an_xml_record_at_its_xml_time(tmp_path, extra):
    """A Render_Event_As_XML record has no time at its top level: ``--fluentbit-time`` framed it at the
    clock's, matched or not, while its alerts and Detections took its XML's.  Blocks of records the
    prefilter rules out included (the skimmer's), its XML's ``<`` escaped or not, and a record without XML
    beside them at its own time; inside a forwarder's record (``--line-field``), and a match stage's."""
    stream = XML_STREAM
    lines = [fluentbit_xml(event) for event in stream] + [fluentbit(stream[0])]
    data = b"".join(_spelled(line, i) for i, line in enumerate(lines))
    if "--line-field" in extra:
        data = ndjson(*[{"log": line.decode(), "stream": "stdout"} for line in data.splitlines()])
    if "FILE" in extra:
        (tmp_path / "in.ndjson").write_bytes(data)
        extra, data = [str(tmp_path / "in.ndjson") if x == "FILE" else x for x in extra], b""
    result = run_cli(["--fluentbit-time", "--emit", "all", *extra], data)
    assert result.returncode == 0, result.stderr
    framed = [(line[1:line.index(b",")].decode(), json.loads(line)[1]) for line in result.stdout.splitlines()]
    out = [(when, record) for when, record in framed if record.get("event", {}).get("kind") != "alert"
           and record.get("type") not in ("sigma.detection", "sigma.heartbeat")]
    assert [{k: v for k, v in record.items() if k != "sigma"} for _, record in out] == lines
    assert sum("sigma" in record for _, record in out) == 61  # matched ones and ruled out ones (the rest)
    assert [when for when, _ in out] == [f"{e.time_ns // NS}.{e.time_ns % NS:09d}" for e in stream + stream[:1]]


def test_a_record_is_read_as_xml_only_where_the_prefilter_finds_a_mark_of_it(tmp_path):
    """Whether a line carries XML is decided on its bytes, by the reading and the prefilter alike: the text
    ``u003cEvent`` with no backslash before it is no ``<`` escaped, and does not make the reading look for
    the XML a ``System`` spells with an escaped letter (``\\u003c\\u0045vent``), which a line the prefilter
    rules out (a rule with other letters than ``<Event``'s) is not read for either."""
    rule = tmp_path / "rule.yml"
    rule.write_text("title: q\nlogsource: {product: windows}\ndetection: {k: [qqqzzz], condition: k}\n")
    event = "\\u0045vent"
    xml = (f"\\u003c{event} xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
           f"<Provider Name='x'/>\\u003c{event}ID>1\\u003c/{event}ID><TimeCreated SystemTime='2001-01-01T00:00:00Z'/>"
           f"<Computer>h</Computer></System>\\u003c/{event}>")
    data = "".join('{%s"System":"%s","TimeCreated":"2021-06-03T13:00:00Z"}\n' % (decoy, xml)
                   for decoy in ('"a":"u003cEvent",', "")).encode()
    outputs = [run_cli(["--rule", str(rule), "--fluentbit-time", "--emit", "all", *extra], data)
               for extra in ([], ["--no-prefilter"])]
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert outputs[0].stdout == outputs[1].stdout
    assert [line[:line.index(b",")] for line in outputs[0].stdout.splitlines()] == [b"[1622725200.000000000"] * 2


@pytest.mark.skipif(not parallel.available(), reason="no os.fork / os.pread here")
@pytest.mark.parametrize("engine", ["auto", "python"])
def test_worker_processes_frame_each_xml_record_at_its_xml_time(engine):
    """The command's workers take a file of 32 MiB or more: here many small chunks, each worker's prefilter
    making the lines carrying XML suspects (``Prefilter.xml_alone``, set before they fork), the blocks it
    rules out framed by its skimmer, each XML spelling; the very output of one process."""
    plans = [compile_plan(load_rule(BUILTIN_RULE, builtin=True))]
    lines = [fluentbit_xml(event) for event in XML_STREAM] + [fluentbit(XML_STREAM[0])]
    data = b"".join(_spelled(line, i) for i, line in enumerate(lines))
    alone, together = (filter_file(plans, data, workers, fluentbit_time=True, engine=engine) for workers in (0, 2))
    assert together == alone
    out = [line for line in alone[0].splitlines() if b'"kind":"alert"' not in line]
    assert [line[1:line.index(b",")].decode() for line in out] == \
        [f"{e.time_ns // NS}.{e.time_ns % NS:09d}" for e in XML_STREAM + XML_STREAM[:1]]


# ---------------------------------------------------------------- in a Fluent Bit frame, without TimeCreated


def _untimed(record: dict) -> dict:
    """The record with its XML's TimeCreated taken out."""
    return {key: re.sub(r"<TimeCreated [^>]*/>", "", value) if isinstance(value, str) else value
            for key, value in record.items()}


def _carrying(event: Logical, shape: str) -> dict:
    """A record carrying the event's XML: Render_Event_As_XML's, or a collector's text holding it."""
    return fluentbit_xml(event) if shape == "rendered" else {"message": "host sysmon: " + event_xml(event)}


@settings(max_examples=20, deadline=None)  # two runs of the command each
@given(raw_events(max_size=20), st.lists(st.sampled_from(FRAMINGS), min_size=1, max_size=4),
       st.sampled_from(["rendered", "text"]), st.sampled_from([[], ["--stage", "match", "--heartbeat", "0"]]))
def test_a_framed_xml_event_without_timecreated_takes_the_frames_time(events, framings, shape, stage):
    """As a JSON record without a time of its own takes its frame's: the event an XML without TimeCreated holds,
    in a frame at the event's time, alerts (and is detected) as the record of the XML with it, unframed.  It had
    no time at all: left out of correlation, no alert."""
    stream = _stream(events, [""])
    plain = ndjson(*[_carrying(event, shape) for event in stream])
    archive = b"".join(framed(json.dumps(_untimed(_carrying(event, shape))).encode(), seconds,
                              framings[i % len(framings)]) + b"\n"
                       for i, (event, (seconds, *_)) in enumerate(zip(stream, events)))
    expected, got = (run_cli_here(["--quiet", *stage], data) for data in (plain, archive))
    assert got.returncode == expected.returncode == 0, got.stderr
    assert records(got.stdout) == records(expected.stdout) and got.stderr == expected.stderr


def test_explain_says_a_framed_xml_event_without_timecreated_is_at_the_frames_time(tmp_path):
    event = Logical("srv01", T0 + 12 * NS, 4104, SERVER)
    path = tmp_path / "one.log"
    path.write_bytes(framed(json.dumps(_untimed(fluentbit_xml(event))).encode(), 60, "tag") + b"\n")
    result = run_cli(["explain", "--event", str(path)])
    assert result.returncode == 0, result.stderr
    assert "time      2021-06-03T13:01:00Z (from the Fluent Bit frame's TIME" in result.stdout.decode()
