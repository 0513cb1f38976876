"""Input shapes: every collector's record resolves to the same event and the same match.

Fixtures (``fixtures/shapes/*.ndjson`` + ``expected.json``) pin real-looking
records; the renderers in ``shapes.py`` turn one logical event into every shape
for the property tests.  Everything goes through the built-in profiles, the
built-in rule's compiled plan and the engine.
"""

import json
import os

import pytest
from hypothesis import given, strategies as st

from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import _PROFILE_DIR, MISSING, FieldResolver, builtin_profiles, lookup
from pipeshell_filter.values import first_leaf
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule
from pipeshell_filter.events.timeparse import NS, parse_time
from clitools import records as output_records, run_cli
from shapes import CLIENT, SELECTION, SERVER, SHAPES, Logical, expected_selections, fluentbit_winlog, logical_events

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "shapes")
EXPECTED = json.load(open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8"))
PROFILES = builtin_profiles()
RESOLVER = FieldResolver(PROFILES)
PLAN = compile_plan(load_rule(BUILTIN_RULE, builtin=True))


def records(shape):
    with open(os.path.join(FIXTURES, f"{shape}.ndjson"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _fixture_cases():
    for shape, rows in EXPECTED.items():
        for row, record in zip(rows, records(shape)):
            yield pytest.param(shape, row, record, id=f"{shape}:{row['line']}")


FIXTURE_CASES = list(_fixture_cases())


def engine():
    return Engine([PLAN], RESOLVER)


def resolved(record):
    """(profile, EventID, Computer, time ns, selections) of one record, the engine's way."""
    view = RESOLVER.view(record)
    return (view.profile.name, first_leaf(view.get("EventID")), first_leaf(view.get("Computer")), view.time(),
            PLAN.match(view))


# ------------------------------------------------------------------ profiles


def test_every_profile_file_is_ordered_and_flat_is_last():
    listed = [p.name for p in PROFILES]
    files = sorted(f[:-4] for f in os.listdir(_PROFILE_DIR) if f.endswith(".yml"))
    assert sorted(listed) == files
    assert len(set(listed)) == len(listed)
    assert listed[-1] == "flat" and PROFILES[-1].detect == ()
    assert listed.index("winlogbeat-ecs") < listed.index("winlogbeat-modules") < listed.index("winlogbeat")


def test_every_fixture_file_is_covered():
    files = sorted(f[:-7] for f in os.listdir(FIXTURES) if f.endswith(".ndjson"))
    assert files == sorted(EXPECTED) == sorted(SHAPES)
    for shape in EXPECTED:
        assert len(records(shape)) == len(EXPECTED[shape]) == 9


# A detector may also hold for a more general profile that comes later in the order.
# (The PowerShell module sets event.module too: winlogbeat-modules holds for its records.)
GENERALISES = {"winlogbeat-ecs": {"winlogbeat-modules", "winlogbeat"}}


@pytest.mark.parametrize("shape, row, record", FIXTURE_CASES)
def test_detectors_are_unambiguous(shape, row, record):
    expected = SHAPES[shape].profile
    holding = {p.name for p in PROFILES if p.detect and p.applies_to(record)}
    assert holding - {expected} <= GENERALISES.get(expected, set())
    assert RESOLVER.profile_for(record).name == expected


# ------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("shape, row, record", FIXTURE_CASES)
def test_fixture_record_resolves(shape, row, record):
    view = RESOLVER.view(record)
    assert view.profile.name == SHAPES[shape].profile
    assert first_leaf(view.get("EventID")) == str(row["event_id"])
    assert view.get("Computer") == row["computer"]
    # expected.json gives microseconds; Vector's 9-digit line is truncated there
    assert view.time() // 1000 * 1000 == parse_time(row["time_utc"])
    present = [p for p in view.profile.time if lookup(record, p) is not MISSING]
    assert ".".join(map(str, present[0])) == row["time_field"]


@pytest.mark.parametrize("shape, row, record", FIXTURE_CASES)
def test_fixture_record_matches_builtin_rule(shape, row, record):
    outcome = engine().process(record, row["line"])
    expected = [] if row["kind"] == "benign" else [SELECTION[row["kind"], row["event_id"]]]
    assert (outcome.sigma["selections"] if outcome.sigma else []) == expected
    assert outcome.alerts == []


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_fixture_file_as_a_stream(shape):
    """Each file has one server (srv01) and one client (cli01): two hosts, no alert."""
    eng = engine()
    alerts = [a for i, r in enumerate(records(shape), 1) for a in eng.process(r, i).alerts] + eng.flush()
    assert alerts == []
    assert eng.stats["matched"] == 6 and eng.stats["no_time"] == 0


def _key_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from _key_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for item in value:
            yield from _key_paths(item, prefix + ("[]",))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_renderers_only_write_keys_the_fixtures_have(shape):
    """The renderers below stay true to the documented layouts."""
    for event_id in (800, 4103, 4104):
        fixture = next(r for r, row in zip(records(shape), EXPECTED[shape]) if row["event_id"] == event_id)
        rendered = SHAPES[shape].render(Logical("h.corp.example", 1622725212 * NS, event_id, SERVER))
        assert set(_key_paths(rendered)) <= set(_key_paths(fixture)), (shape, event_id)
        assert resolved(rendered)[4] == {SELECTION["server", event_id]}


# ------------------------------------------------------------------ collector read times and hosts


def test_fluent_bit_date_is_not_the_event_time():
    for record, row in zip(records("fluentbit-stdout"), EXPECTED["fluentbit-stdout"]):
        assert abs(parse_time(record["date"]) - parse_time(row["time_utc"])) >= NS // 2  # read ~1 s later
        assert RESOLVER.view(record).time() == parse_time(row["time_utc"])
        moved = dict(record, date=record["date"] + 86400 * 365)
        assert RESOLVER.view(moved).time() == parse_time(row["time_utc"])


def test_fluent_bit_date_is_hidden_from_rules():
    rule = parse_rule(
        "title: read time\nlogsource: {product: windows}\n"
        "detection:\n  sel:\n    date|startswith: '16'\n  any:\n    date|exists: true\n"
        "  condition: sel or any\n",
        "date.yml",
    )
    plan = compile_plan(rule)
    record = records("fluentbit-stdout")[0]
    assert plan.match(RESOLVER.view(record)) == frozenset()
    # the same key on a shape that does not add it is an ordinary field
    assert plan.match(RESOLVER.view({"EventID": 1, "date": 1622725213.5})) == {"sel", "any"}


def test_vector_host_is_not_the_computer():
    record = dict(records("vector-windows_event_log")[0], host="vector-agent-07")
    assert RESOLVER.view(record).get("Computer") == "srv01.corp.example"


def test_winlogbeat_host_name_is_not_the_computer():
    record = records("winlogbeat-raw")[0]
    assert record["host"]["name"] == "wec01"
    assert RESOLVER.view(record).get("Computer") == "srv01.corp.example"


def test_read_times_are_never_event_times():
    """event.created (Winlogbeat), EventReceivedTime (NXLog) lose to the event's own time."""
    for shape, key in (("winlogbeat-raw", ("event", "created")), ("nxlog", ("EventReceivedTime",))):
        for record, row in zip(records(shape), EXPECTED[shape]):
            assert lookup(record, key) is not MISSING
            assert RESOLVER.view(record).time() // 1000 * 1000 == parse_time(row["time_utc"])


# ------------------------------------------------------------------ ECS: text the module deleted


def test_ecs_without_message_falls_back_to_parsed_command():
    ecs = records("winlogbeat-ecs")
    for line, selection in ((0, "SERVER_powershell_native"), (1, "SERVER_powershell_modern"),
                            (3, "CLIENT_powershell_native"), (4, "CLIENT_spowershell_modern")):
        record = {k: v for k, v in ecs[line].items() if k != "message"}
        assert PLAN.match(RESOLVER.view(record)) == {selection}


def test_ecs_payload_and_eventdata_come_from_message():
    view = RESOLVER.view(records("winlogbeat-ecs")[1])
    assert view.where("Payload") == "message"
    view = RESOLVER.view(records("winlogbeat-ecs")[0])
    assert view.where("EventData") == "message"
    view = RESOLVER.view(records("winlogbeat-ecs")[2])
    assert view.where("ScriptBlockText") == "powershell.file.script_block_text"


def test_fluent_bit_positional_inserts_follow_the_event_id():
    plain, mapped = records("fluentbit-winevtlog"), records("fluentbit-winevtlog-eventdata-map")
    assert RESOLVER.view(plain[1]).where("Payload") == "StringInserts.2"
    assert RESOLVER.view(plain[2]).where("ScriptBlockText") == "StringInserts.2"
    assert RESOLVER.view(plain[2]).where("Payload") is None  # 4104's third insert is not a Payload
    assert RESOLVER.view(plain[1]).where("ScriptBlockText") is None
    assert RESOLVER.view(mapped[1]).where("Payload") == "EventData.Payload"
    no_inserts = {k: v for k, v in mapped[2].items() if k != "StringInserts"}  # string_inserts false
    assert RESOLVER.view(no_inserts).profile.name == "fluentbit-winevtlog"
    assert PLAN.match(RESOLVER.view(no_inserts)) == {"SERVER_powershell_block"}


# ------------------------------------------------------------------ one event, any two shapes


def _truncate(ns, precision):
    return ns // precision * precision


@given(logical_events(), st.sampled_from(sorted(SHAPES)), st.sampled_from(sorted(SHAPES)))
def test_one_event_any_two_shapes_agree(event, shape_a, shape_b):
    """Same selections, same Computer, same time (up to the coarser shape's precision)."""
    seen = []
    for shape in (shape_a, shape_b):
        spec = SHAPES[shape]
        record = json.loads(json.dumps(spec.render(event)))  # as it arrives on the wire
        profile, event_id, computer, time_ns, matched = resolved(record)
        assert profile == spec.profile
        assert event_id == str(event.event_id)
        assert time_ns == _truncate(event.time_ns, spec.precision_ns)
        seen.append((matched, computer, time_ns))
    coarse = max(SHAPES[shape_a].precision_ns, SHAPES[shape_b].precision_ns)
    (matched_a, host_a, time_a), (matched_b, host_b, time_b) = seen
    assert matched_a == matched_b == expected_selections(event)
    assert host_a == host_b == event.host
    assert _truncate(time_a, coarse) == _truncate(time_b, coarse)


# ------------------------------------------------------------------ mixed-shape streams


def _run(stream):
    eng = engine()
    alerts = []
    for line, record in enumerate(stream, 1):
        alerts += eng.process(record, line).alerts
    return alerts + eng.flush()


T0 = 1622725200 * NS  # 2021-06-03T13:00:00Z


def test_mixed_collectors_one_alert():
    server = Logical("srv01.corp.example", T0 + 12 * NS, 4104, f"$p = New-Object {SERVER}('x')", offset_minutes=120)
    client1 = Logical("cli01.corp.example", T0 + 65 * NS, 800, CLIENT, offset_minutes=-240)
    client2 = Logical("cli02.corp.example", T0 + 290 * NS, 4103, CLIENT.upper())
    noise = Logical("ws07.corp.example", T0 + 100 * NS, 4104, "Get-ChildItem")
    stream = [SHAPES["fluentbit-stdout"].render(server), SHAPES["winlogbeat-ecs"].render(noise),
              SHAPES["vector-windows_event_log"].render(client1), SHAPES["nxlog"].render(client2)]
    alerts = _run(stream)
    assert len(alerts) == 1
    assert alerts[0]["related"]["hosts"] == ["cli01.corp.example", "cli02.corp.example", "srv01.corp.example"]
    assert alerts[0]["sigma"]["aggregation"]["count"] == 3
    assert [e["line"] for e in alerts[0]["sigma"]["events"]] == [1, 3, 4]


def test_mixed_collectors_too_far_apart_no_alert():
    server = Logical("srv01", T0, 4104, SERVER)
    clients = [Logical("cli01", T0 + 100 * NS, 4104, CLIENT), Logical("cli02", T0 + 302 * NS, 4104, CLIENT)]
    stream = [SHAPES["evtx"].render(server), SHAPES["winlogbeat-raw"].render(clients[0]),
              SHAPES["fluentbit-winevtlog"].render(clients[1])]
    assert _run(stream) == []


@given(
    st.permutations(sorted(SHAPES)),
    st.lists(st.sampled_from([800, 4103, 4104]), min_size=3, max_size=3),
    st.lists(st.integers(0, 299), min_size=2, max_size=2),
    st.lists(st.integers(-48, 56).map(lambda q: q * 15), min_size=3, max_size=3),
    st.booleans(),
)
def test_server_and_two_clients_via_three_collectors(shapes, event_ids, delays, offsets, far):
    """A server via one collector, two clients via two others, three hosts: one alert
    within 5 minutes, none when the second client comes more than 5 minutes after the server."""
    hosts = ["srv01.corp.example", "cli01.corp.example", "cli02.corp.example"]
    times = [T0, T0 + delays[0] * NS, T0 + (302 if far else delays[1]) * NS]
    texts = [f"$s = New-Object {SERVER}('p')", f"[{CLIENT}]::new('srv01', 'p')", CLIENT.lower()]
    stream = [
        SHAPES[shape].render(Logical(host, t, eid, text, offset_minutes=off))
        for shape, host, t, eid, text, off in zip(shapes[:3], hosts, times, event_ids, texts, offsets)
    ]
    alerts = _run(sorted(stream, key=lambda r: RESOLVER.view(r).time()))
    if far:  # no 5-minute window holds the server and the second client
        assert alerts == []
    else:
        assert len(alerts) == 1
        assert alerts[0]["related"]["hosts"] == sorted(hosts)



DATA_RULE = """title: classic Data
id: classic-data
logsource: {product: windows, service: powershell-classic}
detection:
  sel:
    EventID: 800
    Data|contains: Compress-Archive
  condition: sel
"""


def test_a_rule_on_the_classic_events_data_field_matches_in_every_shape(tmp_path):
    """SigmaHQ's classic PowerShell rules read the unnamed data as ``Data`` (25 uses): it resolved in
    the evtx shape only, so such a rule never matched what Winlogbeat, Vector, Fluent Bit or NXLog
    sent."""
    rule = tmp_path / "data.yml"
    rule.write_text(DATA_RULE)
    event = Logical(host="h1.corp", time_ns=1622725212 * NS, event_id=800, record_id=7,
                    text="Compress-Archive -Path C:\\Users\\x -DestinationPath $env:TEMP\\a.zip")
    lines = b"".join(json.dumps(shape.render(event)).encode() + b"\n" for shape in SHAPES.values())
    result = run_cli(["--rule", str(rule), "--emit", "matches"], lines)
    assert result.returncode == 0, result.stderr
    matched = [record for record in output_records(result.stdout) if record.get("event", {}).get("kind") != "alert"]
    assert len(matched) == len(SHAPES), [name for name, shape in SHAPES.items()
                                         if json.loads(json.dumps(shape.render(event))) not in
                                         [{k: v for k, v in m.items() if k != "sigma"} for m in matched]]


def test_fluent_bit_events_rendered_as_xml_are_read_field_by_field():
    """Fluent Bit's winevtlog with Render_Event_As_XML writes the whole event as one XML text in
    System (with Message and StringInserts): it fell to the flat profile and every rule missed; then it
    was only said (``xml_event``).  Its XML's event is read now, and the record written as it came."""
    event = {"System": "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
                       "<EventID>4104</EventID><TimeCreated SystemTime='2021-06-03T13:00:12.0000000Z'/>"
                       "<Channel>Microsoft-Windows-PowerShell/Operational</Channel><Computer>srv01</Computer>"
                       "</System><EventData><Data Name='ScriptBlockText'>System.IO.Pipes.NamedPipeServerStream</Data>"
                       "</EventData></Event>",
             "Message": "Creating Scriptblock text", "StringInserts": ["1", "1", "x"]}
    result = run_cli(["--emit", "all"], (json.dumps(event) + "\n").encode())
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert written.pop("sigma")["selections"] == ["SERVER_powershell_block"] and written == event
    assert b"xml" not in result.stderr.lower() and b"; 1 matched;" in result.stderr


_CERTUTIL_RULE = """
title: certutil download
id: 3c1f7a52-6a0e-4d7e-9a51-0f2d1c3b4a10
logsource: {product: windows, category: process_creation}
detection:
  selection: {Image|endswith: '\\\\certutil.exe', CommandLine|contains: urlcache}
  condition: selection
"""
_CLASSIC_RULE = """
title: classic data
id: 8f0e7c1b-2d3a-4b5c-9e6f-7a8b9c0d1e2f
logsource: {product: windows, service: powershell-classic}
detection:
  selection: {Data|contains: 'Get-Date'}
  condition: selection
"""


def test_fluent_bit_events_without_the_event_data_map_are_said_to_miss_named_fields(tmp_path):
    """Fluent Bit's winevtlog without Event_Data_As_Map writes event data only by position
    (StringInserts): a rule on Image never matched, and nothing said why.  The diagnostic names the
    fields the event's own rules read; an event whose data have no names (PowerShell 800) and an
    event with the map are not reported."""
    (tmp_path / "certutil.yml").write_text(_CERTUTIL_RULE)
    (tmp_path / "classic.yml").write_text(_CLASSIC_RULE)
    base = {"ProviderName": "Microsoft-Windows-Sysmon", "EventID": 1, "TimeCreated": "2026-12-03 10:00:00 +0000",
            "EventRecordID": 5, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws1",
            "Message": "Process Create", "StringInserts": ["-", "2026", "{x}", 42, "C:\\Windows\\certutil.exe",
                                                           "certutil -urlcache -f http://x/a a"]}
    mapped = dict(base, EventData={"Image": "C:\\Windows\\certutil.exe", "CommandLine": "certutil -urlcache -f x a"})
    classic = {"ProviderName": "PowerShell", "EventID": 800, "TimeCreated": "2026-12-03 10:00:01 +0000",
               "EventRecordID": 6, "Channel": "Windows PowerShell", "Computer": "ws1", "Message": "m",
               "StringInserts": ["Get-Date", "ctx", "details"]}
    lines = [base, mapped, classic]
    rules = ["--rule", str(tmp_path)]
    result = run_cli(["--emit", "all", *rules], "".join(json.dumps(e) + "\n" for e in lines).encode())
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.decode().splitlines() if "Event_Data_As_Map" in line]
    assert len(said) == 1 and said[0].startswith("pipeshell-filter: line 1: ") and "CommandLine, Image" in said[0]
    assert b"; 1 event(s) with their data by position only (no_event_data_map)" in result.stderr
    events = [e for e in map(json.loads, result.stdout.splitlines()) if e.get("event", {}).get("kind") != "alert"]
    assert events[0] == base  # passed on as it came
    assert [e["sigma"]["rule"]["title"] for e in events[1:]] == ["certutil download", "classic data"]
    # the built-in rule reads only fields StringInserts holds by position: nothing to say
    quiet = run_cli(["--emit", "all"], (json.dumps(base) + "\n").encode())
    assert quiet.returncode == 0 and b"Event_Data_As_Map" not in quiet.stderr


@pytest.mark.parametrize("shape", ["fluentbit-winevtlog", "fluentbit-stdout"])
def test_the_builtin_rule_on_fluent_bit_positional_events_says_nothing(shape):
    """The built-in rule reads Payload in 4103, ScriptBlockText in 4104 and EventData in 800, each by
    position in StringInserts.  Its fields were taken as expected of every event it applies to, so
    each 800, 4103 and 4104 of Fluent Bit's default settings was said to lack the others (a 4104
    "cannot read Payload; set Event_Data_As_Map on"), one stderr line per event of the recipes'
    own stream.  A selection pinned to other EventIDs names no field this event should have."""
    with open(os.path.join(FIXTURES, f"{shape}.ndjson"), "rb") as handle:
        result = run_cli(["--emit", "all"], handle.read())
    assert result.returncode == 0, result.stderr
    assert b"Event_Data_As_Map" not in result.stderr and b"no_event_data_map" not in result.stderr
    assert b"6 matched" in result.stderr


# ------------------------------------------------------------------ Fluent Bit's older winlog input


@given(logical_events(event_ids=(800,)))
def test_fluent_bit_winlog_events_read_as_the_evtx_shape_does(event):
    """Fluent Bit's winlog input writes ComputerName, TimeGenerated and the data by position only
    (StringInserts; its ``Data`` is the record's binary data in hex).  Its records fell to the flat
    profile: no time, no Computer, and 800's EventData was the empty binary data, so the built-in rule
    never matched."""
    record = json.loads(json.dumps(fluentbit_winlog(event)))
    profile, event_id, computer, time_ns, matched = resolved(record)
    assert profile == "fluentbit-winlog" and RESOLVER.view(record).where("EventData") == "StringInserts"
    assert (event_id, computer) == ("800", event.host)
    assert time_ns == _truncate(event.time_ns, NS)
    assert matched == resolved(SHAPES["evtx"].render(event))[4] == expected_selections(event)


def test_fluent_bit_winlog_positional_events_say_what_they_miss(tmp_path):
    """A Security 4688 through the winlog input has no named data, so a process_creation rule misses;
    that is said, with advice that fits this input (it has no Event_Data_As_Map).  The classic 800 still
    matches a rule on ``Data``."""
    (tmp_path / "certutil.yml").write_text(_CERTUTIL_RULE)
    (tmp_path / "classic.yml").write_text(DATA_RULE)
    local = "2026-12-03 11:00:00 +0100"
    security = {"RecordNumber": 9, "TimeGenerated": local, "TimeWritten": local, "EventID": 4688, "Qualifiers": 0,
                "EventType": "SuccessAudit", "EventCategory": 13312, "Channel": "Security",
                "SourceName": "Microsoft-Windows-Security-Auditing", "ComputerName": "ws1",
                "Data": "", "Sid": "", "Message": "A new process has been created.",
                "StringInserts": ["S-1-5-18", "WS1$", "CORP", "0x3e7", "0x10f0", "C:\\Windows\\certutil.exe",
                                  "%%1936", "0x1a2c", "certutil -urlcache -f http://x/a a"]}
    classic = fluentbit_winlog(Logical("ws1", 1_764_756_001 * NS, 800, "Compress-Archive -Path C:\\x"))
    lines = "".join(json.dumps(e) + "\n" for e in (security, classic)).encode()
    result = run_cli(["--emit", "all", "--rule", str(tmp_path)], lines)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.decode().splitlines() if "StringInserts" in line]
    assert len(said) == 1 and said[0].startswith("pipeshell-filter: line 1: a Fluent Bit winlog event")
    assert "CommandLine, Image" in said[0] and "winevtlog input, Event_Data_As_Map on" in said[0]
    events = list(map(json.loads, result.stdout.splitlines()))
    assert events[0] == security
    assert events[1]["sigma"]["rule"]["title"] == "classic Data"


def test_explain_says_a_time_without_a_zone_is_taken_as_utc(tmp_path):
    """NXLog's older EventTime has no zone and is taken as UTC, right only on a host whose clock runs on
    UTC: explain --event showed the time as if it were exact.  It now says so; times with a zone do not."""
    said = {}
    for shape in ("nxlog-legacy-time", "nxlog", "fluentbit-winevtlog"):
        path = tmp_path / f"{shape}.json"
        path.write_text(json.dumps(records(shape)[0]))
        result = run_cli(["explain", "--event", str(path)])
        assert result.returncode == 0, result.stderr
        said[shape] = [line for line in result.stdout.decode().splitlines() if line.startswith("time ")][0]
    assert said["nxlog-legacy-time"].endswith('(from EventTime = "2021-06-03 13:00:12"); no zone: taken as UTC')
    assert "no zone" not in said["nxlog"] and "no zone" not in said["fluentbit-winevtlog"]


def flattened(record: dict, prefix: str = "") -> dict:
    """``record`` as flattened ECS writes it (Vector's ``flatten``, an Elasticsearch export): every
    object's keys joined down to the values that are not objects, ``{"winlog.event_id": 4104}``."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            flat.update(flattened(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@given(logical_events(), st.sampled_from(sorted(SHAPES)))
def test_a_shape_flattened_resolves_as_the_shape_does(event, shape):
    """The same profile, EventID, Computer, time and selections, nested or flattened."""
    record = json.loads(json.dumps(SHAPES[shape].render(event)))
    assert resolved(flattened(record)) == resolved(record)


def test_a_flattened_stream_alerts_as_the_nested_one_through_the_cli():
    """Three hosts' Winlogbeat records, flattened: the same alert, its hosts and lines."""
    stream = [SHAPES["winlogbeat-raw"].render(Logical(host, 1622725200 * NS + i * 30 * NS, 4104, text, record_id=i))
              for i, (host, text) in enumerate([("srv01", SERVER), ("cli01", CLIENT), ("cli02", CLIENT)])]
    found = []
    for records_in in (stream, [flattened(json.loads(json.dumps(r))) for r in stream]):
        result = run_cli(["--lateness", "0"], b"".join(json.dumps(r).encode() + b"\n" for r in records_in))
        [alert] = [r for r in output_records(result.stdout) if r.get("event", {}).get("kind") == "alert"]
        found.append((sorted(alert["related"]["hosts"]), [e["line"] for e in alert["sigma"]["events"]]))
    assert found[0] == found[1] == (["cli01", "cli02", "srv01"], [1, 2, 3])


def test_telling_flattened_shapes_apart_keeps_no_event_keys():
    """Events of the catch-all shape whose many dotted keys differ from event to event (labels,
    headers): picking their profile holds none of their keys (a memo of key sets held thousands of
    them, hundreds of MB), and a flattened shape among them is still told."""
    import gc
    import tracemalloc

    resolver = FieldResolver(PROFILES)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            event = {"@timestamp": "2026-11-02T08:00:00Z", "EventID": 1}
            event.update((f"labels.key{k}.event{i}", "v") for k in range(1000))
            assert resolver.profile_for(event).name == "flat"
            del event
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 << 20, held
    flattened_event = {"winlog.event_id": 4104, "winlog.channel": "x", **{f"labels.k{k}": "v" for k in range(1000)}}
    assert resolver.profile_for(flattened_event).name.startswith("winlogbeat")


def test_a_profile_name_two_profiles_share_is_refused_by_profile_and_xml_events_keep_the_builtin_evtx():
    """A field map named as a built-in profile (or as another map) made ``--profile NAME`` take whichever
    came first, in silence; and an event read from its XML, which the README says is read as the built-in
    ``evtx`` profile reads it, was read by the field map named ``evtx`` instead."""
    from pipeshell_filter.events.fields import ProfileError, profile_from_table
    mine = profile_from_table({"name": "evtx", "detect": ["my.id"], "fields": {"EventID": ["my.id"]}}, "mine.yml")
    with pytest.raises(ProfileError, match=r"--profile evtx: .*mine\.yml.*built-in"):
        FieldResolver([mine] + builtin_profiles(), "evtx")
    carried = FieldResolver([mine] + builtin_profiles(), "auto", "my.time").carried.profiles
    assert [p.source for p in carried] == [os.path.join(_PROFILE_DIR, "evtx.yml")]
