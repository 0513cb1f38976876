"""One logical PowerShell event, rendered as each collector would write it.

A :class:`Logical` event carries what the built-in rule looks at (host, time,
event ID, the text that may hold a pipe class name) plus what some shapes need
(the collector host's UTC offset, its read delay).  ``SHAPES`` maps each fixture
name in ``fixtures/shapes/`` to a renderer, the time precision the shape keeps
and the profile that must detect it.  The layouts follow ``docs/shapes.md``; a
test checks that every key a renderer writes also occurs in the fixture record
of the same event ID.
"""

from __future__ import annotations

import datetime

import attrs
from hypothesis import strategies as st

NS = 1_000_000_000
SERVER = "System.IO.Pipes.NamedPipeServerStream"
CLIENT = "System.IO.Pipes.NamedPipeClientStream"
XMLNS = "http://schemas.microsoft.com/win/2004/08/events/event"
GUID = "{A0C1853B-5C40-4B15-8766-3CF1C58F985A}"

CLASSIC = {"provider": "PowerShell", "channel": "Windows PowerShell"}
OPERATIONAL = {"provider": "Microsoft-Windows-PowerShell", "channel": "Microsoft-Windows-PowerShell/Operational"}
NAMES = {4103: ["ContextInfo", "UserData", "Payload"],
         4104: ["MessageNumber", "MessageTotal", "ScriptBlockText", "ScriptBlockId", "Path"]}

COMMAND_LINE = "$pipe = New-Object -TypeName $pipeType -ArgumentList $pipeName"


def _binding(value: str) -> str:
    return ('CommandInvocation(New-Object): "New-Object"\r\n'
            f'ParameterBinding(New-Object): name="TypeName"; value="{value}"')


@attrs.frozen
class Logical:
    host: str
    time_ns: int
    event_id: int  # 800, 4103 or 4104
    text: str  # 4104: the script block; 800 and 4103: the value bound to -TypeName
    offset_minutes: int = 0  # UTC offset of the host that writes local times
    read_delay_ns: int = 1_500_000_000  # how long after the event the collector read it
    record_id: int = 1

    @property
    def meta(self) -> dict:
        return CLASSIC if self.event_id == 800 else OPERATIONAL

    @property
    def data(self) -> list:
        """The <Data> values in template order (800's are unnamed)."""
        if self.event_id == 800:
            context = ("\tDetailSequence=1\r\n\tDetailTotal=1\r\n\r\n\tSequenceNumber=11\r\n\r\n"
                       "\tUserId=CORP\\jdoe\r\n\tHostName=ConsoleHost\r\n\tHostApplication=powershell.exe\r\n"
                       f"\tCommandLine={COMMAND_LINE}")
            return [COMMAND_LINE, context, _binding(self.text)]
        if self.event_id == 4103:
            context = ("        Severity = Informational\r\n        Host Name = ConsoleHost\r\n"
                       "        Command Name = New-Object\r\n        Command Type = Cmdlet")
            return [context, "", _binding(self.text)]
        return [1, 1, self.text, "5c0e8a3d-2f61-4b97-8e14-a7d3c9f2b046", ""]

    @property
    def named(self) -> dict:
        return dict(zip(NAMES[self.event_id], self.data)) if self.event_id in NAMES else {}

    @property
    def message(self) -> str:
        d = self.data
        if self.event_id == 800:
            return (f"Pipeline execution details for command line: {d[0]}. \r\n\r\n"
                    f"Context Information: \r\n{d[1]} \r\n\r\nDetails: \r\n{d[2]}")
        if self.event_id == 4103:
            return f"{d[2]}\r\n\r\n\r\nContext:\r\n{d[0]}\r\n\r\n\r\nUser Data:\r\n\r\n"
        return f"Creating Scriptblock text (1 of 1):\r\n{d[2]}\r\n\r\nScriptBlock ID: {d[3]}\r\nPath: {d[4]}"


# ------------------------------------------------------------------ time text


def _utc(ns: int) -> datetime.datetime:
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=ns // NS)


def utc_text(ns: int, digits: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.f]Z`` with ``digits`` fraction digits (truncated)."""
    stamp = _utc(ns).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{ns % NS:09d}"[:digits]
    return f"{stamp}.{fraction}Z" if digits else f"{stamp}Z"


def local_text(ns: int, offset_minutes: int, sep: str, fraction_digits: int, colon: bool, space: bool) -> str:
    moment = _utc(ns) + datetime.timedelta(minutes=offset_minutes)
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if fraction_digits:
        text += "." + f"{ns % NS:09d}"[:fraction_digits]
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return text + (" " if space else "") + f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


# ------------------------------------------------------------------ renderers


def evtx(ev: Logical) -> dict:
    system = {
        "Provider": {"#attributes": {"Name": ev.meta["provider"]}},
        "EventID": {"#attributes": {"Qualifiers": 0}, "#text": 800} if ev.event_id == 800 else ev.event_id,
        "TimeCreated": {"#attributes": {"SystemTime": utc_text(ev.time_ns, 6)}},
        "EventRecordID": ev.record_id,
        "Channel": ev.meta["channel"],
        "Computer": ev.host,
    }
    data = {"Data": {"#text": ev.data}, "Binary": None} if ev.event_id == 800 else ev.named
    return {"Event": {"#attributes": {"xmlns": XMLNS}, "System": system, "EventData": data}}


def evtx_separate_attributes(ev: Logical) -> dict:
    system = {"Provider_attributes": {"Name": ev.meta["provider"]}, "EventID": ev.event_id}
    if ev.event_id == 800:
        system["EventID_attributes"] = {"Qualifiers": 0}
    system.update({
        "TimeCreated_attributes": {"SystemTime": utc_text(ev.time_ns, 6)},
        "EventRecordID": ev.record_id,
        "Channel": ev.meta["channel"],
        "Computer": ev.host,
    })
    # current evtx_dump concatenates unnamed Data items with no separator
    data = {"Data": "".join(ev.data), "Binary": None} if ev.event_id == 800 else ev.named
    return {"Event": {"System": system, "EventData": data}, "Event_attributes": {"xmlns": XMLNS}}


def _lf(value):
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def _winlogbeat_base(ev: Logical) -> dict:
    return {
        "@timestamp": utc_text(ev.time_ns, 3),
        "event": {"code": str(ev.event_id), "created": utc_text(ev.time_ns + ev.read_delay_ns, 3), "kind": "event"},
        "host": {"name": "wec01"},
        "message": _lf(ev.message),
        "winlog": {
            "channel": ev.meta["channel"],
            "computer_name": ev.host,
            "event_id": str(ev.event_id),
            "provider_name": ev.meta["provider"],
            "record_id": ev.record_id,
        },
    }


def winlogbeat_raw(ev: Logical) -> dict:
    record = _winlogbeat_base(ev)
    if ev.event_id == 800:
        data = {f"param{i}": _lf(v) for i, v in enumerate(ev.data, 1)}
    else:  # numbers become strings, empty values are dropped
        data = {k: _lf(str(v)) for k, v in ev.named.items() if v != ""}
    record["winlog"]["event_data"] = data
    return record


def winlogbeat_ecs(ev: Logical) -> dict:
    """After the PowerShell module's pipelines: event data parsed, then deleted."""
    record = _winlogbeat_base(ev)
    record["event"]["module"] = "powershell"
    record["winlog"]["record_id"] = str(ev.record_id)
    details = [
        {"related_command": "New-Object", "type": "CommandInvocation", "value": '"New-Object"'},
        {"name": '"TypeName"', "related_command": "New-Object", "type": "ParameterBinding",
         "value": f'"{_lf(ev.text)}"'},
    ]
    if ev.event_id == 800:
        record["powershell"] = {"command": {"invocation_details": details, "value": COMMAND_LINE}}
    elif ev.event_id == 4103:
        record["powershell"] = {"command": {"invocation_details": details, "name": "New-Object", "type": "Cmdlet"}}
    else:
        record["powershell"] = {"file": {"script_block_id": ev.data[3], "script_block_text": _lf(ev.text)},
                                "sequence": 1, "total": 1}
    return record


def _fluentbit(ev: Logical, event_data_as_map: bool = False, stdout: bool = False) -> dict:
    record = {"date": _read_time_float(ev)} if stdout else {}
    record.update({
        "ProviderName": ev.meta["provider"],
        "EventID": ev.event_id,
        "TimeCreated": local_text(ev.time_ns, ev.offset_minutes, " ", 0, colon=False, space=True),
        "EventRecordID": ev.record_id,
        "RelatedActivityID": "",
        "Channel": ev.meta["channel"],
        "Computer": ev.host,
        "Message": ev.message,
        "StringInserts": ev.data,
    })
    if event_data_as_map and ev.named:
        record["EventData"] = ev.named
    return record


def _read_time_float(ev: Logical) -> float:
    """Fluent Bit's ``date`` (json_date_format double): read time, microseconds."""
    micros = (ev.time_ns + ev.read_delay_ns) // 1000
    return float(f"{micros // 10**6}.{micros % 10**6:06d}")


def fluentbit(ev: Logical) -> dict:
    return _fluentbit(ev)


def fluentbit_map(ev: Logical) -> dict:
    return _fluentbit(ev, event_data_as_map=True)


def fluentbit_stdout(ev: Logical) -> dict:
    return _fluentbit(ev, stdout=True)


def fluentbit_winlog(ev: Logical) -> dict:
    """Fluent Bit's older winlog input (plugins/in_winlog/pack.c): classic logs only, so of these events
    800 alone; its data only by position, ``Data`` the record's binary data in hex."""
    assert ev.event_id == 800, "the classic event log API reads no Operational channel"
    local = local_text(ev.time_ns, ev.offset_minutes, " ", 0, colon=False, space=True)
    return {
        "RecordNumber": ev.record_id, "TimeGenerated": local, "TimeWritten": local, "EventID": ev.event_id,
        "Qualifiers": 0, "EventType": "Information", "EventCategory": 8, "Channel": ev.meta["channel"],
        "SourceName": ev.meta["provider"], "ComputerName": ev.host, "Data": "", "Sid": "", "Message": ev.message,
        "StringInserts": ev.data,
    }


def _xml_text(value) -> str:
    """A value as Windows' event XML writes it: ``&``, ``<``, ``>`` and the quotes as entity references."""
    named = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"}
    return "".join(named.get(ch, ch) for ch in str(value))


def event_xml(ev: Logical, line_break: str = "\r\n") -> str:
    """The event as ``EvtRender(EvtRenderEventXml)`` writes it: single-quoted attributes, 7 fraction digits,
    800's data unnamed.  A line break in a value is written ``line_break`` (raw, XML reads it as LF)."""
    data = ev.data if ev.event_id == 800 else ev.named.values()
    names = [""] * len(ev.data) if ev.event_id == 800 else [f" Name='{name}'" for name in ev.named]
    items = "".join(f"<Data{name}>{_xml_text(value).replace(chr(13) + chr(10), line_break)}</Data>"
                    for name, value in zip(names, data))
    qualifiers = " Qualifiers='0'" if ev.event_id == 800 else ""
    guid = "" if ev.event_id == 800 else f" Guid='{GUID}'"
    return (f"<Event xmlns='{XMLNS}'><System><Provider Name='{ev.meta['provider']}'{guid}/>"
            f"<EventID{qualifiers}>{ev.event_id}</EventID><Version>1</Version><Level>4</Level><Task>2</Task>"
            f"<Opcode>15</Opcode><Keywords>0x0</Keywords><TimeCreated SystemTime='{utc_text(ev.time_ns, 7)}'/>"
            f"<EventRecordID>{ev.record_id}</EventRecordID><Correlation/><Execution ProcessID='4242' ThreadID='17'/>"
            f"<Channel>{ev.meta['channel']}</Channel><Computer>{_xml_text(ev.host)}</Computer>"
            f"<Security UserID='S-1-5-21-1004336348-1177238915-682003330-1001'/></System>"
            f"<EventData>{items}{'<Binary></Binary>' if ev.event_id == 800 else ''}</EventData></Event>")


def fluentbit_xml(ev: Logical, event_data_as_map: bool = False, line_break: str = "\r\n") -> dict:
    """Fluent Bit's winevtlog with ``Render_Event_As_XML`` (plugins/in_winevtlog/pack.c,
    ``winevtlog_pack_xml_event``): the whole event's XML in ``System``, then ``Message``, the ``EventData``
    map (``Event_Data_As_Map``) and ``StringInserts`` (on by default)."""
    record = {"System": event_xml(ev, line_break), "Message": ev.message}
    if event_data_as_map and ev.named:
        record["EventData"] = ev.named
    record["StringInserts"] = ev.data
    return record


def vector(ev: Logical) -> dict:
    """Vector trims each value and keeps event data as strings; unnamed data go to string_inserts."""
    record = {
        "channel": ev.meta["channel"],
        "computer": ev.host,
        "event_id": ev.event_id,
        "host": ev.host,
        "message": ev.message,
        "provider_name": ev.meta["provider"],
        "record_id": ev.record_id,
        "source_type": "windows_event_log",
        "timestamp": utc_text(ev.time_ns, 9),
    }
    if ev.event_id == 800:
        record["string_inserts"] = [str(v).strip() for v in ev.data]
    else:
        record["event_data"] = {k: str(v).strip() for k, v in ev.named.items() if v != ""}
    return record


def _nxlog(ev: Logical, legacy: bool) -> dict:
    if legacy:  # zone-less local time; rendered for an agent whose clock runs on UTC
        event_time = _utc(ev.time_ns).strftime("%Y-%m-%d %H:%M:%S")
        received = _utc(ev.time_ns + ev.read_delay_ns).strftime("%Y-%m-%d %H:%M:%S")
    else:
        event_time = local_text(ev.time_ns, ev.offset_minutes, "T", 6, colon=True, space=False)
        received = local_text(ev.time_ns + ev.read_delay_ns, ev.offset_minutes, "T", 6, colon=True, space=False)
    record = {
        "EventTime": event_time,
        "Hostname": ev.host,
        "EventID": ev.event_id,
        "SourceName": ev.meta["provider"],
        "RecordNumber": ev.record_id,
        "Channel": ev.meta["channel"],
        "Message": ev.message,
    }
    record.update({k: str(v) for k, v in ev.named.items() if v != ""})
    record.update({"EventReceivedTime": received, "SourceModuleType": "im_msvistalog"})
    return record


def nxlog(ev: Logical) -> dict:
    return _nxlog(ev, legacy=False)


def nxlog_legacy(ev: Logical) -> dict:
    return _nxlog(ev, legacy=True)


def sigma_flat(ev: Logical) -> dict:
    record = {
        "EventID": ev.event_id,
        "Channel": ev.meta["channel"],
        "Provider_Name": ev.meta["provider"],
        "Computer": ev.host,
        "TimeCreated": utc_text(ev.time_ns, 9),
    }
    if ev.event_id == 800:
        record["EventData"] = "\r\n".join(ev.data)
    else:
        record.update(ev.named)
    return record


@attrs.frozen
class Shape:
    render: object
    precision_ns: int  # the event time survives truncated to this
    profile: str  # the built-in profile that must detect it


SHAPES = {
    "evtx": Shape(evtx, 1000, "evtx"),
    "evtx-separate-attributes": Shape(evtx_separate_attributes, 1000, "evtx"),
    "winlogbeat-raw": Shape(winlogbeat_raw, 1_000_000, "winlogbeat"),
    "winlogbeat-ecs": Shape(winlogbeat_ecs, 1_000_000, "winlogbeat-ecs"),
    "fluentbit-winevtlog": Shape(fluentbit, NS, "fluentbit-winevtlog"),
    "fluentbit-winevtlog-eventdata-map": Shape(fluentbit_map, NS, "fluentbit-winevtlog"),
    "fluentbit-stdout": Shape(fluentbit_stdout, NS, "fluentbit-winevtlog"),
    "vector-windows_event_log": Shape(vector, 1, "vector"),
    "nxlog": Shape(nxlog, 1000, "nxlog"),
    "nxlog-legacy-time": Shape(nxlog_legacy, NS, "nxlog"),
    "sigma-flat": Shape(sigma_flat, 1, "flat"),
}

# The built-in rule's selection for (kind, EventID).
SELECTION = {
    ("server", 800): "SERVER_powershell_native",
    ("server", 4103): "SERVER_powershell_modern",
    ("server", 4104): "SERVER_powershell_block",
    ("client", 800): "CLIENT_powershell_native",
    ("client", 4103): "CLIENT_spowershell_modern",
    ("client", 4104): "CLIENT_powershell_block",
}


def expected_selections(ev: Logical) -> set:
    """What the rule must find: the class names anywhere in the text, in any case."""
    folded = ev.text.casefold()
    return {SELECTION[kind, ev.event_id] for kind, needle in (("server", SERVER), ("client", CLIENT))
            if needle.casefold() in folded}


# ------------------------------------------------------------------ strategies

T_MIN = 946_684_800 * NS  # 2000-01-01
T_MAX = 4_102_444_800 * NS  # 2100-01-01

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.corp\.example)?", fullmatch=True)
offsets = st.integers(-48, 56).map(lambda quarters: quarters * 15)  # UTC-12:00 .. UTC+14:00


@st.composite
def random_case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if up else c.lower() for c, up in zip(text, flips))


@st.composite
def script_texts(draw) -> str:
    """Random text; sometimes with the server and/or client class name in random case."""
    filler = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
    parts = [draw(filler)]
    for needle in draw(st.lists(st.sampled_from([SERVER, CLIENT]), max_size=2, unique=True)):
        parts += [draw(random_case(needle)), draw(filler)]
    return "".join(parts)


@st.composite
def logical_events(draw, event_ids=(800, 4103, 4104)) -> Logical:
    return Logical(
        host=draw(hosts),
        time_ns=draw(st.integers(T_MIN, T_MAX)),
        event_id=draw(st.sampled_from(event_ids)),
        text=draw(script_texts()),
        offset_minutes=draw(offsets),
        read_delay_ns=draw(st.integers(0, 3600 * NS)),
        record_id=draw(st.integers(1, 2**32)),
    )
