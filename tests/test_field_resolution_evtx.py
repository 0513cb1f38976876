"""Field resolution for Windows events as SigmaHQ's regression runner sees them.

* UserData wraps its fields in one element named by the provider
  (``Event.UserData.EventXML.Address``): they are reachable by their own name, as EventData's.
* Names with spaces (Defender's ``Threat Name``) are also reachable without them (``ThreatName``).
* thor.yml's ``fieldmappings`` (``Image`` is ``NewProcessName`` in Security 4688, ``Signature``
  is ``ThreatName`` in a Defender detection) hold where the event lacks the field.
* Path segments index lists only when they are ASCII digits (``parse_path``).
"""

import json

import pytest
from hypothesis import assume, example, given, strategies as st

import sigmahq
from clitools import records, run_cli
from evtxwriter import write_evtx
from pipeshell_filter.detect import Detector
from pipeshell_filter.events.fields import (ALIASES, MISSING, FieldResolver, _expand, builtin_profiles, lookup,
                                            parse_path, profile_from_table)
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule

RESOLVER = FieldResolver(builtin_profiles())
SECURITY = "Security"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
DEFENDER = "Microsoft-Windows-Windows Defender/Operational"
LSM = "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"


def evtx_event(event_id, channel, data=None, user_data=None, provider="P"):
    """A record as the ``evtx`` package renders it (``evtx_dump -o jsonl``)."""
    event = {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
             "System": {"Provider": {"#attributes": {"Name": provider}}, "EventID": event_id,
                        "TimeCreated": {"#attributes": {"SystemTime": "2026-04-17T04:14:33.653414Z"}},
                        "EventRecordID": 7, "Channel": channel, "Computer": "ws01.corp.example"}}
    if data is not None:
        event["EventData"] = data
    if user_data is not None:
        event["UserData"] = user_data
    return {"Event": event}


def matches(rule_text: str, event: dict) -> bool:
    """Whether the rule (its logsource too) matches the event, as the detect stage decides."""
    plan = compile_plan(parse_rule(rule_text, "test.yml"))
    return bool(Detector([plan], RESOLVER).detect(event))


# ------------------------------------------------------------------ UserData


RDP_LOGON = evtx_event(21, LSM, user_data={"EventXML": {
    "#attributes": {"xmlns": "Event_NS"}, "User": "CORP\\admin", "SessionID": 2, "Address": "16777216"}},
    provider="Microsoft-Windows-TerminalServices-LocalSessionManager")
LOG_CLEARED = evtx_event(1102, SECURITY, user_data={
    "LogFileCleared_attributes": {"xmlns": "http://manifests.microsoft.com/win/2004/08/windows/eventlog"},
    "LogFileCleared": {"SubjectUserSid": "S-1-5-21-1", "SubjectUserName": "admin",
                       "SubjectDomainName": "CORP", "SubjectLogonId": "0x1d9a7"}},
    provider="Microsoft-Windows-Eventlog")  # evtx_dump --separate-json-attributes


def test_userdata_fields_are_reachable_by_name():
    view = RESOLVER.view(RDP_LOGON)
    assert view.profile.name == "evtx"
    assert view.get("Address") == "16777216"
    assert view.get("SessionID") == 2
    assert view.where("User") == "Event.UserData.EventXML.User"
    assert view.get("xmlns") is MISSING  # attributes are metadata, not fields
    view = RESOLVER.view(LOG_CLEARED)  # the element beside its separated attributes
    assert view.get("SubjectUserName") == "admin"
    assert view.where("SubjectLogonId") == "Event.UserData.LogFileCleared.SubjectLogonId"


def test_userdata_fields_match_a_rule():
    rule = ("title: RDP from ngrok\nlogsource: {product: windows, service: terminalservices-localsessionmanager}\n"
            "detection:\n  selection:\n    EventID: 21\n    Address|contains: '16777216'\n  condition: selection\n")
    assert matches(rule, RDP_LOGON)
    other = json.loads(json.dumps(RDP_LOGON))
    other["Event"]["UserData"]["EventXML"]["Address"] = "10.0.0.5"
    assert not matches(rule, other)


NAMES = st.sampled_from(["A", "B", "C", "D"])  # no alias, no space: found where they are or nowhere
OBJECT = st.dictionaries(NAMES, st.one_of(st.text(max_size=3), st.integers(), st.none()), max_size=3)


def _first_place(event: dict, field: str):
    """The value a field resolves to in the evtx shape, by the module docstring: the top level,
    then each root in order (EventData, UserData, each element UserData wraps, then System: the event's
    data before a System element of the same name)."""
    places, inner = [event], event.get("Event")
    if isinstance(inner, dict):
        places += [inner[key] for key in ("EventData", "UserData") if isinstance(inner.get(key), dict)]
        wrapped = inner.get("UserData")
        if isinstance(wrapped, dict):
            places += [child for key, child in wrapped.items() if key != "#attributes" and isinstance(child, dict)]
        places += [inner["System"]] if isinstance(inner.get("System"), dict) else []
    for place in places:
        if field in place:
            return place[field]
    return MISSING


@given(OBJECT, OBJECT, OBJECT, st.dictionaries(st.sampled_from(["X", "Y", "#attributes", "A"]),
                                               st.one_of(OBJECT, st.text(max_size=2)), max_size=3), NAMES)
def test_a_field_resolves_to_the_first_object_holding_it(top, system, data, user_data, field):
    event = {**top, "Event": {"System": {**system, "Provider": {"#attributes": {"Name": "P"}}},
                              "EventData": data, "UserData": user_data}}
    view = RESOLVER.view(event)
    assert view.profile.name == "evtx"
    expected = _first_place(event, field)
    assert view.get(field) == expected if expected is not MISSING else view.get(field) is MISSING
    where = view.where(field)
    assert (where is None) == (expected is MISSING)
    if where is not None:
        assert lookup(event, parse_path(where)) == expected


KEY = st.sampled_from(["a", "b", "0", "1", "*", "#attributes"])
NODE = st.recursive(st.one_of(st.none(), st.integers(0, 3), st.text(max_size=2)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEY, inner, max_size=3)),
                    max_leaves=12)


@given(NODE, st.lists(st.lists(KEY, min_size=1, max_size=4).map(".".join), min_size=1, max_size=4))
@example({"a": None, "b": [{"a": 1}, "x"], "*": {"0": 2}}, ["a", "b.0.a", "b.1", "*.0", "a.b"])
def test_root_places_are_where_each_root_reaches(event, roots):
    """The view's walk to its profile's roots (keys of objects inline) finds, in order, what the
    general expansion of each root finds: list indexes, ``*`` and absent steps included."""
    profile = profile_from_table({"name": "t", "detect": [], "time": [], "roots": roots, "fields": {}}, "test")
    view = FieldResolver([profile]).view(event if isinstance(event, dict) else {"x": event})
    assert view._root_nodes() == [place for root in profile.roots for place in _expand(view.event, root)]


def test_eventdata_and_system_come_before_userdata():
    event = evtx_event(4624, SECURITY, data={"User": "from-eventdata"},
                       user_data={"X": {"User": "from-userdata", "Computer": "not-the-host"}})
    view = RESOLVER.view(event)
    assert view.get("User") == "from-eventdata"
    assert view.get("Computer") == "ws01.corp.example"


def test_userdata_that_is_not_an_element_is_harmless():
    for user_data in (None, "text", [1, 2], {}, {"Only": "a string"}):
        view = RESOLVER.view(evtx_event(1, SYSMON, data={"Image": "a.exe"}, user_data=user_data))
        assert view.get("Image") == "a.exe"
        assert view.get("Nothing") is MISSING


# ------------------------------------------------------------------ data named as a System element

WMI = "Microsoft-Windows-WMI-Activity/Operational"
SCM_PROVIDER = {"#attributes": {"xmlns": "http://manifests.microsoft.com/win/2006/windows/WMI"},
                "Namespace": "//./root/CIMV2", "PossibleCause": "Permanent", "Provider": "SCM Event Provider",
                "Query": "select * from MSFT_SCMEventLogEvent", "User": "S-1-5-32-544", "processid": "0"}
# SigmaHQ's win_wmi_persistence.yml keeps out this registration by its UserData field Provider
WMI_RULE = """
title: wmi persistence
logsource: {product: windows, service: wmi}
detection:
  registration: {EventID: 5859}
  filter_scmevent: {Provider: 'SCM Event Provider', Query: 'select * from MSFT_SCMEventLogEvent',
                    User: 'S-1-5-32-544', PossibleCause: 'Permanent'}
  condition: registration and not filter_scmevent
"""


def test_an_events_data_named_as_a_system_element_is_the_data():
    """Event 5859's UserData names a field Provider, as <System> names its own element (attributes only): the
    rule's Provider was System's, which holds no text, so SigmaHQ's filter on it never held in the evtx shape
    (an .evtx file, Render_Event_As_XML) where Winlogbeat's and Vector's held.  The data win, as there; a
    System element no datum names is still read (Level, Version)."""
    wmi = evtx_event(5859, WMI, user_data={"Operation_EssStarted": SCM_PROVIDER},
                     provider="Microsoft-Windows-WMI-Activity")
    wmi["Event"]["System"].update(Level=4, Version=0)
    flat = {k: v for k, v in SCM_PROVIDER.items() if k != "#attributes"}
    shapes = [wmi,
              {"winlog": {"event_id": 5859, "channel": WMI, "user_data": dict(flat, xml_name="Operation_EssStarted")},
               "@timestamp": "2026-04-17T04:14:33Z"},
              {"event_id": 5859, "computer": "ws01", "channel": WMI, "user_data": flat}]
    for event in shapes:
        assert RESOLVER.view(event).get("Provider") == "SCM Event Provider"
        assert not matches(WMI_RULE, event)
        other = json.loads(json.dumps(event).replace("SCM Event Provider", "Evil Provider"))
        assert matches(WMI_RULE, other)
    view = RESOLVER.view(wmi)
    assert view.where("Provider") == "Event.UserData.Operation_EssStarted.Provider"
    assert (view.get("Level"), view.get("Version")) == (4, 0)
    assert view.get("Provider_Name") == "Microsoft-Windows-WMI-Activity"
    assert RESOLVER.view(evtx_event(1, SYSMON, data={"Image": "x"})).where("Provider") == "Event.System.Provider"


# ------------------------------------------------------------------ names with spaces

WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters=". #\"\\"),
               min_size=1, max_size=6)
SPACED = st.lists(WORD, min_size=2, max_size=4)


def _shapes(data: dict) -> list:
    """The same named data in each Windows shape whose profile has roots."""
    return [
        evtx_event(1116, DEFENDER, data=dict(data)),
        {"winlog": {"event_id": 1116, "channel": DEFENDER, "event_data": dict(data)}, "@timestamp": "2026-04-17"},
        {"event_id": 1116, "computer": "ws01", "channel": DEFENDER, "event_data": dict(data)},
        dict({"EventID": 1116, "Channel": DEFENDER}, **data),
        {"EventID": 1116, "Channel": DEFENDER, "EventData": dict(data)},
    ]


@given(SPACED, st.text(max_size=20), st.dictionaries(WORD, st.text(max_size=5), max_size=4))
@example(["1", "0"], "", {})  # "10" is also a list index: still the name of "1 0"
def test_a_name_with_spaces_is_reachable_both_ways(words, value, others):
    name, squeezed = " ".join(words), "".join(words)
    assume(squeezed not in others and name not in others)
    assume(squeezed not in {"EventID", "Channel", "Computer", "EventRecordID", "Provider_Name", "EventData"})
    for event in _shapes(dict(others, **{name: value})):
        view = RESOLVER.view(event)
        assert view.get(name) == value, view.profile.name
        assert view.get(squeezed) == value, view.profile.name
        assert view.where(squeezed).endswith(name)


@given(SPACED, st.text(max_size=5), st.text(max_size=5))
def test_the_exact_name_wins(words, spaced_value, exact_value):
    name, squeezed = " ".join(words), "".join(words)
    assume(squeezed not in {"EventID", "Channel", "Computer", "EventRecordID", "Provider_Name", "EventData"})
    for event in _shapes({name: spaced_value, squeezed: exact_value}):
        assert RESOLVER.view(event).get(squeezed) == exact_value


def test_spaces_are_not_squeezed_from_paths_or_deeper_objects():
    event = evtx_event(1116, DEFENDER, data={"Outer": {"Threat Name": "x"}})
    view = RESOLVER.view(event)
    assert view.get("ThreatName") is MISSING  # only keys of the top level and of the roots
    assert view.get("Outer.Threat Name") == "x"
    assert view.get("Outer.ThreatName") is MISSING


@given(st.lists(st.text("abcXYZ_-é", min_size=1, max_size=4), min_size=2, max_size=4), st.text(max_size=5),
       st.text(max_size=5))
def test_a_dotted_field_is_found_in_a_flattened_event_too(segments, flat_value, nested_value):
    """Flattened ECS (Vector's, Elastic's NDJSON) writes `{"process.name": ...}` where a nested event
    has `{"process": {"name": ...}}`: a rule's `process.name` finds either, the nested one first."""
    field = ".".join(segments)
    assume(segments[0] not in {"EventID", "Channel", "Computer", "winlog", "event_id", "Event", "System"})
    nested = nested_value
    for segment in reversed(segments):
        nested = {segment: nested}
    flat = RESOLVER.view({field: flat_value})
    assert flat.get(field) == flat_value and flat.where(field) == field
    assert RESOLVER.view(dict(nested, **{field: flat_value})).get(field) == nested_value
    rooted = RESOLVER.view({"EventID": 1, "EventData": {field: flat_value}})
    assert rooted.get(field) == flat_value


# ------------------------------------------------------------------ thor.yml's field mappings


def test_aliases_are_thor_yml_fieldmappings():
    if not sigmahq.available():
        pytest.skip("the shared SigmaHQ checkout is absent")
    thor = sigmahq.load_thor()
    expected = set()
    for entry in thor.values():
        for field, target in (entry.get("fieldmappings") or {}).items():
            rewrite = entry.get("rewrite", {})
            channels = {source[len(sigmahq.EVENT_LOG_PREFIX):] for other in thor.values()
                        if other.get("service") == rewrite.get("service") and "sources" in other
                        for source in other["sources"]}
            expected.add((field, target, frozenset(sigmahq.thor_event_ids(entry)), frozenset(channels)))
    assert expected and {(f, t, frozenset(i), frozenset(c)) for f, t, i, c in ALIASES} == expected


NEW_PROCESS = evtx_event(4688, SECURITY, data={"NewProcessName": "C:\\Windows\\System32\\certutil.exe",
                                               "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
                                               "CommandLine": "certutil -encode a b"})
DETECTION = evtx_event(1116, DEFENDER, data={"Threat Name": "Virus:DOS/EICAR_Test_File",
                                             "Source Name": "Real-Time Protection",
                                             "Path": "file:_C:\\Users\\Public\\x.php"})


def test_process_creation_fields_in_security_4688():
    view = RESOLVER.view(NEW_PROCESS)
    assert view.get("Image") == "C:\\Windows\\System32\\certutil.exe"
    assert view.where("ParentImage") == "Event.EventData.ParentProcessName"
    rule = ("title: certutil\nlogsource: {category: process_creation, product: windows}\n"
            "detection:\n  selection:\n    Image|endswith: '\\certutil.exe'\n    ParentImage|endswith: '\\cmd.exe'\n"
            "  condition: selection\n")
    assert matches(rule, NEW_PROCESS)


def test_defender_fields_in_a_detection():
    view = RESOLVER.view(DETECTION)
    assert view.get("Signature") == "Virus:DOS/EICAR_Test_File"
    assert view.where("Signature") == "Event.EventData.Threat Name"
    assert view.get("Filename") == "file:_C:\\Users\\Public\\x.php"
    rule = ("title: av\nlogsource: {category: antivirus}\n"
            "detection:\n  selection:\n    Signature|contains: EICAR\n    Filename|endswith: '.php'\n"
            "  condition: selection\n")
    assert matches(rule, DETECTION)


def test_aliases_hold_only_for_their_events():
    data = {"NewProcessName": "a.exe", "ParentProcessName": "b.exe", "Threat Name": "t", "Path": "p"}
    for event_id, channel in ((4689, SECURITY), (4688, SYSMON), (1, SYSMON), (5007, DEFENDER), (1116, SECURITY)):
        view = RESOLVER.view(evtx_event(event_id, channel, data=data))
        assert [view.get(f) for f in ("Image", "ParentImage", "Signature", "Filename")] == [MISSING] * 4


def test_aliases_never_hide_the_field_itself():
    sysmon_style = evtx_event(4688, SECURITY, data={"Image": "own.exe", "NewProcessName": "new.exe"})
    assert RESOLVER.view(sysmon_style).get("Image") == "own.exe"
    image_load = evtx_event(7, SYSMON, data={"Signature": "Microsoft Windows", "ImageLoaded": "x.dll"})
    assert RESOLVER.view(image_load).get("Signature") == "Microsoft Windows"


def test_aliases_in_other_shapes_and_without_a_channel():
    winlogbeat = {"winlog": {"event_id": 4688, "channel": "security",
                             "event_data": {"NewProcessName": "C:\\x.exe"}}, "@timestamp": "2026-04-17"}
    assert RESOLVER.view(winlogbeat).get("Image") == "C:\\x.exe"  # channel names compare caselessly
    flat = {"EventID": 4688, "NewProcessName": "C:\\x.exe"}  # a flat record that tells no channel
    assert RESOLVER.view(flat).get("Image") == "C:\\x.exe"


def test_defender_detection_from_an_evtx_file(tmp_path):
    """End to end: a real .evtx whose data names have spaces, rules asking without them."""
    path = tmp_path / "defender.evtx"
    data = {"Product Name": "Microsoft Defender Antivirus", "Threat Name": "Tool:Win32/EICAR_Test_File",
            "Source Name": "Real-Time Protection", "Process Name": "C:\\Users\\x\\RedSun.exe",
            "Path": "file:_C:\\Users\\x\\AppData\\Local\\Temp\\RS-{1}\\TieringEngineService.exe"}
    write_evtx(str(path), [{"provider": "Microsoft-Windows-Windows Defender", "event_id": 1119, "channel": DEFENDER,
                            "time": "2026-04-17T04:14:33Z", "record_id": 542, "data": data},
                           {"provider": "Microsoft-Windows-Windows Defender", "event_id": 1116, "channel": DEFENDER,
                            "time": "2026-04-17T04:14:34Z", "record_id": 543, "data": data}])
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "windefend.yml").write_text(
        "title: windefend\nid: 11111111-1111-4111-8111-111111111111\n"
        "logsource: {product: windows, service: windefend}\n"
        "detection:\n  selection:\n    EventID: 1119\n    SourceName: Real-Time Protection\n"
        "    ThreatName|endswith: EICAR_Test_File\n    ProcessName|endswith: '\\RedSun.exe'\n  condition: selection\n")
    (rules / "antivirus.yml").write_text(
        "title: antivirus\nid: 22222222-2222-4222-8222-222222222222\nlogsource: {category: antivirus}\n"
        "detection:\n  selection:\n    Signature|contains: EICAR\n    Filename|endswith: TieringEngineService.exe\n"
        "  condition: selection\n")
    result = run_cli(["--rule", str(rules), "--input", str(path), "--emit", "matches"])
    assert result.returncode == 0, result.stderr
    matched = {(r["Event"]["System"]["EventID"], r["sigma"]["rule"]["title"])
               for r in records(result.stdout) if "Event" in r}
    assert matched == {(1119, "windefend"), (1116, "antivirus")}  # antivirus: 1116 is a detection, 1119 not
    explained = run_cli(["explain", "--rule", str(rules / "windefend.yml"), "--event", str(path)])
    assert explained.returncode == 0, explained.stderr
    assert b"<- Event.EventData.Threat Name" in explained.stdout


# ------------------------------------------------------------------ paths


def test_only_ascii_digits_index_lists():
    assert parse_path("a.0.12") == ("a", 0, 12)
    assert parse_path("a.\u00b2") == ("a", "\u00b2")  # '²'.isdigit() is true, int('²') raises
    assert parse_path("a.\u0663") == ("a", "\u0663")  # Arabic-Indic three: a name, not list index 3
    assert parse_path("a.01") == ("a", "01")  # not canonical: a key
    assert lookup({"a": ["x", "y", "z", "w"]}, parse_path("a.\u0663")) is MISSING
    assert lookup({"a": {"\u00b2": 1, "01": 2}}, parse_path("a.\u00b2")) == 1
    assert lookup({"a": {"\u00b2": 1, "01": 2}}, parse_path("a.01")) == 2
    assert RESOLVER.view({"EventID": 1, "\u00b2": "sq"}).get("\u00b2") == "sq"


@given(st.lists(st.text(st.characters(blacklist_characters="."), max_size=4), min_size=1, max_size=5),
       st.integers())
def test_any_dotted_name_is_a_path_to_its_keys(segments, value):
    text = ".".join(segments)
    assume(text)
    nested = value
    for segment in reversed(segments):
        nested = {segment: nested}
    assert lookup(nested, parse_path(text)) == value


ECS_TASK = """
title: task definition querying the credential endpoint
logsource: {product: aws, service: cloudtrail}
detection:
  selection:
    eventName: RegisterTaskDefinition
    requestParameters.containerDefinitions.command|contains: '$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI'
  condition: selection
"""
GCP_POLICY = """
title: access policy deleted
logsource: {product: gcp, service: gcp.audit}
detection:
  selection:
    data.protoPayload.authorizationInfo.permission: accesscontextmanager.accessPolicies.delete
    data.protoPayload.authorizationInfo.granted: 'true'
  filter: {data.protoPayload.authorizationInfo.resource: trusted}
  condition: selection and not filter
"""


def test_a_dotted_field_reaches_into_each_object_of_a_list():
    """CloudTrail's containerDefinitions, GCP's authorizationInfo, Azure's targetResources are lists of objects:
    SigmaHQ's rules name a key inside them as a plain path (as Elasticsearch and Splunk read one), which was
    missing here, so those rules never matched.  A key segment at a list is looked up in each element: the field
    is the list of what they hold, matched as any list value is (any element; ``not`` when none)."""
    task = {"eventName": "RegisterTaskDefinition", "requestParameters": {"containerDefinitions": [
        {"name": "side", "image": "envoy"},
        {"name": "c", "command": ["sh", "-c", "curl 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]}]}}
    assert matches(ECS_TASK, task)
    view = RESOLVER.view(task)
    assert view.get("requestParameters.containerDefinitions.name") == ["side", "c"]
    assert view.get("requestParameters.containerDefinitions.command") == [task["requestParameters"][
        "containerDefinitions"][1]["command"]]
    assert view.get("requestParameters.containerDefinitions.0.name") == "side"  # an index still indexes
    assert view.get("requestParameters.containerDefinitions.missing") is MISSING
    assert lookup({"a": [[{"b": 1}], {"b": 2}, "b", None, {"b": None}]}, parse_path("a.b")) == [1, 2]
    assert lookup({"a": [{"b": None}, {"c": 1}]}, parse_path("a.b")) is MISSING
    deep = {"a": [{"b": 1}]}
    for _ in range(100_000):  # lists nested deeper than Python recurses
        deep["a"] = [deep["a"]]
    assert lookup(deep, parse_path("a.b")) == [1]
    benign = json.loads(json.dumps(task).replace("$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/health"))
    assert not matches(ECS_TASK, benign)
    policy = {"data": {"protoPayload": {"authorizationInfo": [
        {"permission": "accesscontextmanager.accessPolicies.delete", "granted": True, "resource": "org/1"}]}}}
    assert matches(GCP_POLICY, policy)
    policy["data"]["protoPayload"]["authorizationInfo"].append({"permission": "x", "resource": "trusted"})
    assert not matches(GCP_POLICY, policy)


def test_lookup_plans_are_worked_out_once_per_profile():
    profile = RESOLVER.profile_for(NEW_PROCESS)
    assert profile.plan("Image") is profile.plan("Image")
    assert profile.plan("EventID").candidates is not None
    custom = profile_from_table({"name": "c", "roots": ["data.*"]}, "c.yml")
    view = FieldResolver([custom]).view({"data": {"A": {"Threat Name": 1}, "#attributes": {"k": 2}}})
    assert view.get("ThreatName") == 1 and view.get("k") is MISSING


# ------------------------------------------------------------------ fields a shape names its own way

CLEARED_RULES = {  # SigmaHQ's two rules on event 104, their detections as written there
    "medium": "  selection: {EventID: 104, Provider_Name: Microsoft-Windows-Eventlog}\n"
              "  filter_main_covered:\n    Channel: [Microsoft-Windows-Sysmon/Operational, Security, System]\n"
              "  condition: selection and not 1 of filter_main_*\n",
    "high": "  selection:\n    EventID: 104\n    Provider_Name: Microsoft-Windows-Eventlog\n"
            "    Channel: [Microsoft-Windows-Sysmon/Operational, Security, System]\n  condition: selection\n"}


def _cleared_rule(level):
    return f"title: log cleared {level}\nlogsource: {{product: windows, service: system}}\ndetection:\n" \
           + CLEARED_RULES[level]


def _cleared(log, shape):
    data = {"SubjectUserName": "admin", "SubjectDomainName": "CORP", "Channel": log, "BackupPath": ""}
    if shape == "evtx":
        return evtx_event(104, "System", user_data={"LogFileCleared": data}, provider="Microsoft-Windows-Eventlog")
    return {"@timestamp": "2026-04-17T04:14:33.653Z",  # Winlogbeat: UserData's element, its children
            "winlog": {"event_id": "104", "channel": "System", "computer_name": "ws01.corp.example",
                       "provider_name": "Microsoft-Windows-Eventlog", "record_id": 7,
                       "user_data": dict(data, xml_name="LogFileCleared")}}


@pytest.mark.parametrize("shape", ["evtx", "winlogbeat"])
def test_a_rules_channel_in_event_104_is_the_log_cleared_and_the_event_still_routes_as_system(shape):
    """Event 104 (System log) says which log was cleared in its own Channel datum; SigmaHQ's rules
    read that. The rule field Channel was the System log: the medium rule could never fire and the
    high one fired on every clear. The logsource (service: system) still routes by the event's log."""
    for log, medium, high in [("Microsoft-Windows-TaskScheduler/Operational", True, False), ("Security", False, True),
                              ("System", False, True)]:
        event = _cleared(log, shape)
        assert RESOLVER.view(event).get("Channel") == log and RESOLVER.view(event).log_channel() == "System"
        assert matches(_cleared_rule("medium"), event) is medium, (log, "medium")
        assert matches(_cleared_rule("high"), event) is high, (log, "high")
    other = _cleared("Security", shape)  # another event of the System log: Channel is its log
    if shape == "evtx":
        other["Event"]["System"]["EventID"] = 7045
    else:
        other["winlog"]["event_id"] = "7045"
    assert RESOLVER.view(other).get("Channel") == "System"


def test_vector_level_and_keywords_are_the_rules_level_and_keywords():
    """Vector writes the level as a name and a number (level, level_value) and the keywords as hex
    text: unmapped, Level never found level (keys are case-sensitive) and SigmaHQ's rules on them missed."""
    event = {"event_id": 42, "computer": "dc01", "channel": "System",
             "provider_name": "Microsoft-Windows-Kerberos-Key-Distribution-Center",
             "timestamp": "2026-04-17T04:14:33.653Z", "level": "Error", "level_value": 2,
             "keywords": "0x8010000000000000", "record_id": 9, "event_data": {"AccountName": "svc"}}
    view = RESOLVER.view(event)
    assert view.profile.name == "vector" and view.get("Level") == 2 and view.get("Keywords") == "0x8010000000000000"
    rule = ("title: kdc rc4\nlogsource: {product: windows, service: system}\ndetection:\n"
            "  selection: {EventID: 42, Level: 2, Keywords: '0x8010000000000000'}\n  condition: selection\n")
    assert matches(rule, event)


def test_nxlog_source_name_is_the_events_datum_not_the_provider():
    """NXLog's own SourceName is the provider; Defender's datum is "Source Name", a key of its own:
    the exact key won, so SigmaHQ's SourceName rules (AMSI, RedSun) missed in NXLog's shape only."""
    event = {"EventTime": "2026-04-17T06:14:33.653+02:00", "Hostname": "ws01", "EventID": 1116,
             "SourceName": "Microsoft-Windows-Windows Defender", "Channel": DEFENDER,
             "Source Name": "AMSI", "Threat Name": "Trojan:PowerShell/Mal"}
    view = RESOLVER.view(event)
    assert view.profile.name == "nxlog"
    assert view.get("SourceName") == "AMSI" and view.get("Provider_Name") == "Microsoft-Windows-Windows Defender"
    rule = ("title: amsi\nlogsource: {product: windows, service: windefend}\ndetection:\n"
            "  selection: {EventID: 1116, SourceName: AMSI}\n  condition: selection\n")
    assert matches(rule, event)


# ------------------------------------------------------------------ keywords and XML attributes


def _keyword_rule(*keywords) -> str:
    listed = "".join(f"\n        - '{k}'" for k in keywords)
    return f"title: k\nlogsource: {{product: windows}}\ndetection:\n    keywords:{listed}\n    condition: keywords\n"


def _provider_shapes(provider: str, qualifiers: str) -> list:
    """One event's provider and EventID qualifiers as each collector writes them."""
    evtx = evtx_event(7045, "System", data={"ServiceName": "svc"}, provider=provider)
    evtx["Event"]["System"]["EventID"] = {"#attributes": {"Qualifiers": qualifiers}, "#text": 7045}
    separate = evtx_event(7045, "System", data={"ServiceName": "svc"}, provider=provider)
    separate["Event"]["System"]["Provider_attributes"] = separate["Event"]["System"].pop("Provider")["#attributes"]
    separate["Event"]["System"]["EventID_attributes"] = {"Qualifiers": qualifiers}
    separate["Event"]["System"]["Event_attributes"] = separate["Event"].pop("#attributes")
    winlogbeat = {"winlog": {"event_id": 7045, "channel": "System", "provider_name": provider,
                             "event_data": {"ServiceName": "svc", "Qualifiers": qualifiers}},
                  "@timestamp": "2026-04-17T04:14:33Z"}
    return [evtx, separate, winlogbeat]


@pytest.mark.parametrize("shape", range(3))
def test_a_keyword_finds_the_xml_attributes_in_every_shape(shape):
    """A keyword searches the event's text: a value the XML holds as an attribute (Provider Name, the
    EventID's Qualifiers) too.  Under ``#attributes`` it was skipped, where Winlogbeat's
    ``provider_name`` and evtx_dump's ``Provider_attributes`` were searched: the same event met a
    keyword rule or not by its collector's shape."""
    event = _provider_shapes("Service Control Manager", "16384")[shape]
    assert matches(_keyword_rule("control manager"), event)
    assert matches(_keyword_rule("16384"), event)
    assert not matches(_keyword_rule("nothing of it"), event)


def test_a_keyword_does_not_find_a_namespace_declaration():
    """xmlns is XML syntax, the same URL on every Windows event: a keyword like 'schemas.microsoft.com'
    would hold on all of them."""
    for event in _provider_shapes("P", "0")[:2] + [RDP_LOGON, LOG_CLEARED]:
        assert not matches(_keyword_rule("schemas.microsoft.com"), event)
        assert not matches(_keyword_rule("manifests.microsoft.com"), event)
        assert not matches(_keyword_rule("Event_NS"), event)


def test_a_field_value_still_leaves_the_attributes_out():
    """A field is its element's text: EventID: 0 must not match Qualifiers="0"."""
    event = _provider_shapes("P", "0")[0]
    rule = "title: f\nlogsource: {product: windows}\ndetection:\n    sel:\n        EventID: %s\n    condition: sel\n"
    assert matches(rule % 7045, event) and not matches(rule % 0, event)


SYSTEM_ATTRIBUTES = {"Provider": {"Name": "Service Control Manager", "Guid": "{555908d1-a6d7-4695-8e1e-26931d2012f4}",
                                  "EventSourceName": "Service Control Manager"},
                     "EventID": {"Qualifiers": "16384"}, "TimeCreated": {"SystemTime": "2026-04-17T04:14:33.653414Z"},
                     "Correlation": {"ActivityID": "{a1}", "RelatedActivityID": "{b2}"},
                     "Execution": {"ProcessID": 788, "ThreadID": 792, "ProcessorID": 1, "SessionID": 0,
                                   "KernelTime": 5, "UserTime": 6, "ProcessorTime": 7},
                     "Security": {"UserID": "S-1-5-18"}}


@pytest.mark.parametrize("separate", [False, True])
def test_system_attributes_are_element_underscore_attribute(separate):
    """The specification names an attribute of a <System> element by the element, an underscore and
    the attribute: ``<Execution ProcessID="788" ThreadID="792" />`` is ``Execution_ProcessID``, its own
    example beside ``Provider_Name``.  Only ``Provider_Name`` was read: a rule on ``Execution_ProcessID``
    or ``Security_UserID`` never matched a Windows event.  Both attribute layouts (``#attributes``, and
    evtx_dump's ``<Name>_attributes``) hold them."""
    event = evtx_event(7045, "System", data={"ServiceName": "svc"})
    system = event["Event"]["System"]
    for element, attributes in SYSTEM_ATTRIBUTES.items():
        text = system.pop(element, None)
        text = None if isinstance(text, dict) else text  # the Provider evtx_event gave: attributes only
        if separate:
            system[f"{element}_attributes"] = dict(attributes)
            system[element] = text
        else:
            system[element] = {"#attributes": dict(attributes)} if text is None else \
                {"#attributes": dict(attributes), "#text": text}
    view = RESOLVER.view(event)
    for element, attributes in SYSTEM_ATTRIBUTES.items():
        for attribute, value in attributes.items():
            assert view.get(f"{element}_{attribute}") == value, (element, attribute)
    rule = ("title: x\nlogsource: {product: windows, service: system}\ndetection:\n    sel:\n"
            "        Execution_ProcessID: %s\n        Security_UserID: S-1-5-18\n    condition: sel\n")
    assert matches(rule % 788, event) and not matches(rule % 792, event)
    assert view.leaves("EventID") == ("7045",)  # the element's text stays the field of its own name
