"""The logsource layer: which events a rule's product / category / service covers."""

import json

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

import sigmahq
from pipeshell_filter.sigma.logsource import (
    TABLE_PATH,
    EventFacts,
    LogsourceCheck,
    LogsourceTable,
    compile_logsource,
)
from pipeshell_filter.sigma.rule import BUILTIN_RULE, RuleError, load_rule

TABLE = LogsourceTable.builtin()

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS_OPERATIONAL = "Microsoft-Windows-PowerShell/Operational"
PS_CORE = "PowerShellCore/Operational"
PS_CLASSIC = "Windows PowerShell"
DEFENDER = "Microsoft-Windows-Windows Defender/Operational"


def check(logsource: dict) -> LogsourceCheck:
    compiled = compile_logsource(logsource, TABLE, "test.yml")
    assert compiled is not None
    return compiled


def fits(logsource: dict, unknown="match", **facts) -> bool:
    return check(logsource).verdict(EventFacts(**facts), unknown)[0]


# --------------------------------------------------------------------------- the table


def test_builtin_table_is_loaded_once():
    assert LogsourceTable.builtin() is LogsourceTable.builtin()


def test_table_knows_windows_categories_and_services():
    assert TABLE.products == frozenset({"windows", "linux"})
    assert len(TABLE.categories("windows")) >= 35
    assert len(TABLE.services("windows")) >= 44
    assert TABLE.knows("windows")
    assert TABLE.knows("Windows", category="PS_Script")
    assert TABLE.knows("windows", service="security")
    assert not TABLE.knows("windows", category="file_access")
    assert not TABLE.knows("aws", service="cloudtrail")
    assert TABLE.alternatives("windows", "process_creation") == (
        (frozenset({"1"}), "sysmon"), (frozenset({"4688"}), "security"))
    assert TABLE.channels("windows", "powershell") == (PS_OPERATIONAL, PS_CORE)


def test_product_of_channel():
    assert TABLE.product_of_channel("Security") == "windows"
    assert TABLE.product_of_channel("microsoft-windows-sysmon/OPERATIONAL") == "windows"
    assert TABLE.product_of_channel("Microsoft-Windows-Nothing/Operational") is None
    assert TABLE.product_of_channel("") is None


def test_table_file_has_no_fieldmappings_and_every_alternative_names_a_service():
    with open(TABLE_PATH, encoding="utf-8") as handle:
        text = handle.read()
    assert "fieldmappings" not in text
    assert text.startswith("#")
    for category in TABLE.categories("windows"):
        for event_ids, service in TABLE.alternatives("windows", category):
            assert event_ids and TABLE.channels("windows", service)


def test_malformed_table_is_refused():
    with pytest.raises(ValueError, match="unknown service"):
        LogsourceTable({"windows": {"categories": {"x": [{"event_ids": [1], "service": "nope"}]}}}, "t.yml")
    with pytest.raises(ValueError, match="listed under"):
        LogsourceTable({"a": {"services": {"s": ["C"]}}, "b": {"services": {"s": ["c"]}}}, "t.yml")
    with pytest.raises(ValueError, match="partial must be true or false"):
        LogsourceTable({"linux": {"partial": "yes"}}, "t.yml")


# --------------------------------------------------------------------------- verdicts


def test_builtin_rule_logsource():
    rule = load_rule(BUILTIN_RULE, builtin=True)
    compiled = compile_logsource(rule.logsource, TABLE, rule.path)
    assert compiled.verdict(EventFacts(channel=PS_OPERATIONAL, event_id="4104"))[0]
    assert compiled.verdict(EventFacts(channel=PS_CORE, event_id="4103"))[0]
    assert compiled.verdict(EventFacts(channel=PS_CLASSIC, event_id="800"))[0]
    assert not compiled.verdict(EventFacts(channel=PS_CLASSIC, event_id="4104"))[0]
    assert not compiled.verdict(EventFacts(channel=PS_OPERATIONAL, event_id="800"))[0]
    assert not compiled.verdict(EventFacts(channel="Security", event_id="4688"))[0]
    assert compiled.channels == frozenset(c.casefold() for c in (PS_OPERATIONAL, PS_CORE, PS_CLASSIC))
    assert compiled.event_ids == frozenset({"4103", "4104", "800"})


def test_reason_names_the_needed_and_the_actual_eventid():
    applies, reason = check({"product": "windows", "category": "ps_script"}).verdict(
        EventFacts(channel=PS_OPERATIONAL, event_id="4103"))
    assert not applies
    assert reason == "category ps_script needs EventID 4104, event has 4103"


def test_process_creation_has_a_sysmon_and_a_security_alternative():
    logsource = {"product": "windows", "category": "process_creation"}
    assert fits(logsource, channel=SYSMON, event_id="1")
    assert fits(logsource, channel="Security", event_id="4688")
    assert not fits(logsource, channel=SYSMON, event_id="4688")
    assert not fits(logsource, channel="Security", event_id="1")
    assert check(logsource).event_ids == frozenset({"1", "4688"})


def test_aws_rule_does_not_apply_to_windows_events():
    logsource = {"product": "aws", "service": "cloudtrail"}
    for unknown in ("match", "skip"):
        applies, reason = check(logsource).verdict(EventFacts(channel="Security", event_id="4624"), unknown)
        assert not applies
        assert "aws" in reason and "windows" in reason
        assert not fits(logsource, unknown, product="windows")
    assert fits(logsource, "match", event_id="1")  # product unknown: the policy decides
    assert not fits(logsource, "skip", event_id="1")
    assert fits(logsource, "skip", product="AWS")
    assert check(logsource).channels is None


def test_unknown_facts_follow_the_policy():
    logsource = {"product": "windows", "category": "ps_script"}
    assert fits(logsource, "match", event_id="4104")
    assert not fits(logsource, "skip", event_id="4104")
    assert fits(logsource, "skip", product="windows", channel=PS_OPERATIONAL, event_id="4104")
    assert not fits(logsource, "match", event_id="4103")  # known facts are always checked
    applies, reason = check(logsource).verdict(EventFacts(channel=PS_OPERATIONAL), "skip")
    assert not applies and "unknown" in reason and "EventID" in reason


def test_values_compare_case_insensitively():
    logsource = {"product": "WINDOWS", "category": "PS_Script"}
    assert fits(logsource, channel="microsoft-windows-powershell/operational", event_id="4104")
    assert fits(logsource, product="Windows", channel="POWERSHELLCORE/OPERATIONAL", event_id="4104")
    assert not fits(logsource, product="Linux", channel=PS_CORE, event_id="4104")


def test_event_id_text_is_canonical():
    logsource = {"product": "windows", "category": "ps_script"}
    assert fits(logsource, channel=PS_OPERATIONAL, event_id=4104)
    assert fits(logsource, channel=PS_OPERATIONAL, event_id=" 04104")
    assert EventFacts(event_id="4104") == EventFacts(event_id="4104")


def test_service_lists_channels():
    logsource = {"product": "windows", "service": ["security", "System"]}
    assert fits(logsource, channel="Security", event_id="4624")
    assert fits(logsource, channel="system")
    assert not fits(logsource, channel="Application", event_id="4624")
    assert check(logsource).channels == frozenset({"security", "system"})
    assert check(logsource).event_ids is None


def test_category_and_service_must_both_hold():
    both = check({"product": "windows", "category": "process_creation", "service": "sysmon"})
    assert both.verdict(EventFacts(channel=SYSMON, event_id="1"))[0]
    assert not both.verdict(EventFacts(channel="Security", event_id="4688"))[0]
    never = check({"product": "windows", "category": "process_creation", "service": "system"})
    assert not never.verdict(EventFacts())[0]
    assert never.channels == frozenset() and never.event_ids == frozenset()
    assert "no event" in never.describe()


def test_unmapped_windows_category_falls_back_to_the_product():
    logsource = {"product": "windows", "category": "file_access"}
    compiled = check(logsource)
    for unknown in ("match", "skip"):
        assert fits(logsource, unknown, channel="Security", event_id="4663")
        assert not fits(logsource, unknown, product="linux")
    assert not fits(logsource, "skip", event_id="4663")
    assert compiled.channels is None and compiled.event_ids is None
    assert "file_access" in compiled.describe() and "not in the logsource table" in compiled.describe()
    # One unmapped category in a list makes the whole list fall back.
    assert check({"product": "windows", "category": ["ps_script", "file_rename"]}).event_ids is None


def test_servicebus_client_legacy_name_is_its_channels():
    """SigmaHQ's one servicebus rule writes the service's legacy name (its comment: "Change to servicebus-client
    once validators are up to date"), which pySigma's windows_logsource_mapping maps to the same channels; it
    fell back to the product: its EventIDs 40300-40302 and keywords were tried on every Windows event."""
    logsource = {"product": "windows", "service": "microsoft-servicebus-client"}
    assert check(logsource).channels == check({"product": "windows", "service": "servicebus-client"}).channels
    assert fits(logsource, "skip", channel="Microsoft-ServiceBus-Client/Operational", event_id="40300")
    assert not fits(logsource, "match", channel="Security", event_id="40300")
    assert "not in the logsource table" not in check(logsource).describe()


def test_productless_category_from_the_table():
    logsource = {"category": "antivirus"}
    assert fits(logsource, channel=DEFENDER, event_id="1116")
    assert not fits(logsource, channel="Security", event_id="1116")
    assert not fits(logsource, channel=DEFENDER, event_id="4104")
    assert check(logsource).channels == frozenset({DEFENDER.casefold()})


def test_productless_category_the_table_lacks_is_not_windows():
    logsource = {"category": "proxy"}
    for unknown in ("match", "skip"):
        applies, reason = check(logsource).verdict(EventFacts(channel="Security", event_id="4688"), unknown)
        assert not applies and "other than windows" in reason
        assert fits(logsource, unknown, product="zeek")
    assert fits(logsource, "match")
    assert not fits(logsource, "skip")


def test_productless_source_the_table_lacks_applies_to_linux_events_other_than_sysmons():
    """The table knows one log of linux, Sysmon for Linux's: a web server's, a proxy's or Apache's log on a
    Linux host is a linux event too, and their rules (no product) were never applied to it, under either
    policy (``--logsource product=linux`` on an nginx log met no webserver rule)."""
    sysmon = dict(product="linux", channel="Linux-Sysmon/Operational", event_id="1")
    for logsource in ({"category": "webserver"}, {"category": ["proxy", "dns"]}, {"service": "apache"}):
        for unknown in ("match", "skip"):
            assert fits(logsource, unknown, product="linux")
            assert fits(logsource, unknown, product="Linux", channel="my-log")
            applies, reason = check(logsource).verdict(EventFacts(**sysmon), unknown)
            assert not applies and "Linux-Sysmon/Operational" in reason, reason
            assert not fits(logsource, unknown, channel="Linux-Sysmon/Operational", event_id="3")
            assert not fits(logsource, unknown, product="windows")


def test_no_constraint_compiles_to_none():
    for logsource in (None, {}, {"definition": "anything"}, {"product": []}, {"product": None, "service": ""}):
        assert compile_logsource(logsource, TABLE, "test.yml") is None


def test_other_keys_are_ignored():
    compiled = check({"product": "windows", "service": "security", "definition": {"x": [1]}, "custom": 5})
    assert compiled.verdict(EventFacts(channel="Security"))[0]
    assert not compiled.verdict(EventFacts(channel="System"))[0]


@pytest.mark.parametrize("logsource, words", [
    (["product", "windows"], "'logsource' must be a mapping"),
    ({"product": 3}, "logsource 'product' must be a string or a list of strings"),
    ({"category": ["ps_script", 7]}, "logsource 'category'"),
    ({"service": {"a": "b"}}, "logsource 'service'"),
])
def test_malformed_logsource_is_a_rule_error(logsource, words):
    with pytest.raises(RuleError) as error:
        compile_logsource(logsource, TABLE, "rules/bad.yml")
    message = str(error.value)
    assert "rules/bad.yml" in message and words in message and "\n" not in message


def test_policy_must_be_known():
    compiled = check({"product": "windows"})
    with pytest.raises(ValueError, match="'match' or 'skip'"):
        compiled.verdict(EventFacts(), "maybe")
    with pytest.raises(ValueError):
        compiled.applies(EventFacts(), "")


def test_describe_is_one_line():
    text = check({"product": "windows", "category": ["ps_module", "ps_classic_script", "ps_script"]}).describe()
    assert "\n" not in text
    assert "ps_classic_script" in text and PS_CLASSIC in text and "4104" in text


# --------------------------------------------------------------------------- properties

_CATEGORIES = TABLE.categories("windows") + ["file_access", "proxy", "webserver"]
_SERVICES = TABLE.services("windows") + ["cloudtrail", "microsoft-servicebus-client"]
_CHANNELS = sorted({c for s in TABLE.services("windows") for c in TABLE.channels("windows", s)}) + [
    "Microsoft-Windows-Nothing/Operational", "security", "SYSTEM"]
_EVENT_IDS = sorted({e for c in TABLE.categories("windows") for ids, _ in TABLE.alternatives("windows", c)
                     for e in ids}) + ["0", "4624", "9999"]
_PRODUCTS = ["windows", "Windows", "aws", "linux", "zeek"]


def _one_or_list(values):
    return st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=3))


logsources = st.fixed_dictionaries({}, optional={
    "product": _one_or_list(_PRODUCTS),
    "category": _one_or_list(_CATEGORIES),
    "service": _one_or_list(_SERVICES),
    "definition": st.text(max_size=5),
})
facts = st.builds(
    EventFacts,
    product=st.one_of(st.none(), st.sampled_from(_PRODUCTS)),
    channel=st.one_of(st.none(), st.sampled_from(_CHANNELS)),
    event_id=st.one_of(st.none(), st.sampled_from(_EVENT_IDS)),
)


@given(logsources, facts)
def test_skip_never_applies_where_match_does_not(logsource, event):
    compiled = compile_logsource(logsource, TABLE, "test.yml")
    assume(compiled is not None)
    matched = compiled.verdict(event, "match")[0]
    skipped = compiled.verdict(event, "skip")[0]
    assert not skipped or matched
    for unknown, expected in (("match", matched), ("skip", skipped)):
        applies, reason = compiled.verdict(event, unknown)
        assert compiled.applies(event, unknown) == expected
        assert reason and "\n" not in reason


known_facts = st.builds(EventFacts, product=st.sampled_from(_PRODUCTS), channel=st.sampled_from(_CHANNELS),
                        event_id=st.sampled_from(_EVENT_IDS))


@given(logsources, known_facts)
def test_fully_known_event_is_policy_free(logsource, event):
    compiled = compile_logsource(logsource, TABLE, "test.yml")
    assume(compiled is not None)
    assert compiled.verdict(event, "match")[0] == compiled.verdict(event, "skip")[0]


@given(logsources, facts)
def test_channels_and_event_ids_bound_the_applicable_events(logsource, event):
    compiled = compile_logsource(logsource, TABLE, "test.yml")
    assume(compiled is not None and compiled.verdict(event, "match")[0])
    if compiled.channels is not None and event.channel is not None:
        assert event.channel.casefold() in compiled.channels
    if compiled.event_ids is not None and event.event_id is not None:
        assert event.event_id in compiled.event_ids


def _thor_windows():
    if not sigmahq.available():
        pytest.skip(f"SigmaHQ's thor.yml not found at {sigmahq.THOR}")
    thor = sigmahq.load_thor().values()
    categories = sorted({e["category"] for e in thor if "conditions" in e
                         and e.get("rewrite", {}).get("product") == "windows"})
    services = sorted({e["service"] for e in thor if e.get("product") == "windows" and "service" in e})
    channels = sorted({s.split(":", 1)[1] for e in thor for s in e.get("sources", ())
                       if s.startswith(sigmahq.EVENT_LOG_PREFIX)})
    event_ids = sorted({i for e in thor for i in sigmahq.thor_event_ids(e)})
    return categories, services, channels + ["Microsoft-Windows-Nothing/Operational"], event_ids + ["4624", "9999"]


def _thor_service_channels(thor, service):
    return [s.split(":", 1)[1] for e in thor if e.get("service") == service and "sources" in e
            for s in e["sources"] if s.startswith(sigmahq.EVENT_LOG_PREFIX)]


@given(st.data())
def test_verdict_agrees_with_thor(data):
    """Random (logsource, EventID, channel) triples, half of the EventIDs and channels drawn from the
    logsource's own thor.yml entry so that both verdicts occur."""
    categories, services, channels, event_ids = _thor_windows()
    thor = list(sigmahq.load_thor().values())
    kind = data.draw(st.sampled_from(["category", "service", "productless"]))
    own_ids, own_channels = [], []
    if kind == "service":
        service = data.draw(st.sampled_from(services))
        logsource = {"product": "windows", "service": service}
        own_channels = _thor_service_channels(thor, service)
    else:
        category = data.draw(st.sampled_from(categories)) if kind == "category" else "antivirus"
        logsource = {"product": "windows", "category": category} if kind == "category" else {"category": category}
        for entry in thor:
            if entry.get("category") == category and "conditions" in entry:
                own_ids += sorted(sigmahq.thor_event_ids(entry))
                own_channels += _thor_service_channels(thor, entry["rewrite"]["service"])
    event_id = data.draw(st.sampled_from(own_ids + event_ids) if own_ids and data.draw(st.booleans())
                         else st.sampled_from(event_ids))
    channel = data.draw(st.sampled_from(own_channels) if own_channels and data.draw(st.booleans())
                        else st.sampled_from(channels))
    expected = sigmahq.applies(logsource, event_id, channel)
    compiled = check(logsource)
    for unknown in ("match", "skip"):
        event = EventFacts(product="windows", channel=channel, event_id=event_id)
        assert compiled.verdict(event, unknown)[0] == expected, (logsource, event_id, channel)


def test_verdict_agrees_with_thor_for_every_category_and_channel():
    categories, _, channels, event_ids = _thor_windows()
    thor = list(sigmahq.load_thor().values())
    positives = 0
    for category in categories:
        own = {i for e in thor if e.get("category") == category for i in sigmahq.thor_event_ids(e)}
        compiled = check({"product": "windows", "category": category})
        for event_id in sorted(own) + ["9999"]:
            for channel in channels:
                expected = sigmahq.applies({"product": "windows", "category": category}, event_id, channel)
                positives += expected
                event = EventFacts(channel=channel, event_id=event_id)
                assert compiled.verdict(event, "skip")[0] == expected, (category, event_id, channel)
    assert positives >= len(categories)


def test_table_covers_every_thor_windows_logsource():
    categories, services, _, _ = _thor_windows()
    for category in categories:
        assert TABLE.knows("windows", category=category), category
    for service in services:
        assert TABLE.knows("windows", service=service), service
    for entry in sigmahq.load_thor().values():
        if "conditions" in entry and entry.get("rewrite", {}).get("product") == "windows":
            ids = {frozenset(a) for a, _ in TABLE.alternatives("windows", entry["category"])}
            assert any(sigmahq.thor_event_ids(entry) <= a for a in ids), entry["category"]


def _evtx_facts(path):
    from evtx import PyEvtxParser

    for record in PyEvtxParser(path).records_json():
        system = json.loads(record["data"])["Event"]["System"]
        event_id = system["EventID"]
        if isinstance(event_id, dict):
            event_id = event_id["#text"]
        yield str(event_id), system["Channel"]


def test_sigmahq_regression_events_fit_their_rules_logsource():
    """Each regression case's evtx holds at least match_count (or one) events of the rule's logsource."""
    if not sigmahq.available():
        pytest.skip(f"SigmaHQ checkout not found at {sigmahq.SIGMAHQ}")
    cases = list(sigmahq.regression_cases())
    assert len(cases) >= 50
    for rule_path, rule_id, evtx_path, match_count in cases:
        with open(rule_path, encoding="utf-8") as handle:
            logsource = yaml.safe_load(handle).get("logsource") or {}
        compiled = compile_logsource(logsource, TABLE, rule_path)
        applicable = 0
        for event_id, channel in _evtx_facts(evtx_path):
            # The product is left to the channel: every regression channel must be in the table.
            event = EventFacts(channel=channel, event_id=event_id)
            applies = compiled is None or compiled.verdict(event, "skip")[0]
            applicable += applies
            try:
                expected = sigmahq.applies(logsource, event_id, channel)
            except sigmahq.NotMapped:
                continue
            assert applies == expected, (rule_path, event_id, channel)
        assert applicable >= (match_count or 1), (rule_path, rule_id, applicable, match_count)


# --------------------------------------------------------------------------- Sysmon for Linux

LINUX_SYSMON = "Linux-Sysmon/Operational"
_CRONTAB = """title: crontab listed
logsource: {product: linux, category: process_creation}
detection:
  selection: {Image|endswith: /crontab, CommandLine|contains: ' -l'}
  condition: selection
"""
_WHOAMI = """title: whoami
logsource: {product: windows, category: process_creation}
detection:
  selection: {CommandLine|contains: ' -l'}
  condition: selection
"""


def _linux_sysmon_event(shape: str) -> dict:
    data = {"RuleName": "-", "UtcTime": "2021-10-20 01:00:47.600", "ProcessId": 2356, "Image": "/usr/bin/crontab",
            "CommandLine": "crontab -l", "CurrentDirectory": "/root", "User": "root", "ParentImage": "/bin/bash"}
    if shape == "evtx":  # Windows' event XML, as Sysmon for Linux writes it, in the evtx package's JSON
        system = {"Provider": {"#attributes": {"Name": "Linux-Sysmon",
                                               "Guid": "FF032593-A8D3-4F13-B0D6-01FC615A0F97"}},
                  "EventID": 1, "TimeCreated": {"#attributes": {"SystemTime": "2021-10-20T01:00:47.600000Z"}},
                  "EventRecordID": 35705, "Channel": LINUX_SYSMON, "Computer": "ubuntu"}
        return {"Event": {"System": system, "EventData": data}}
    return dict(data, EventID=1, Channel=LINUX_SYSMON, Computer="ubuntu", TimeCreated="2021-10-20T01:00:47.600Z")


@pytest.mark.parametrize("shape", ["evtx", "flat"])
def test_sysmon_for_linux_events_are_linux_events_in_every_shape(shape):
    """Sysmon for Linux writes Windows' event XML, in its own log Linux-Sysmon/Operational. In the evtx
    shape, whose profile says windows, its events were taken as Windows ones: a linux process_creation
    rule (SigmaHQ has 124) never applied to them.  The Sigma taxonomy maps linux process_creation,
    network_connection and file_event to Sysmon's EventIDs 1, 3 and 11: the channel names the product."""
    from pipeshell_filter.detect import event_facts
    from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
    from pipeshell_filter.sigma.compile import compile_plan
    from pipeshell_filter.sigma.rule import parse_rule

    assert TABLE.product_of_channel(LINUX_SYSMON) == "linux"
    assert TABLE.alternatives("linux", "process_creation") == ((frozenset({"1"}), "sysmon"),)
    view = FieldResolver(builtin_profiles()).view(_linux_sysmon_event(shape))
    facts = event_facts(view)
    linux, windows = (compile_plan(parse_rule(text, "rule.yml")) for text in (_CRONTAB, _WHOAMI))
    for unknown in ("match", "skip"):
        assert linux.logsource.verdict(facts, unknown)[0], linux.logsource.verdict(facts, unknown)
        assert not windows.logsource.verdict(facts, unknown)[0]
    assert linux.match(view) == {"selection"}
    assert fits({"product": "linux", "category": "process_creation"}, "skip", channel=LINUX_SYSMON, event_id="1")
    assert not fits({"product": "linux", "category": "process_creation"}, channel=LINUX_SYSMON, event_id="3")
    assert not fits({"product": "linux", "category": "network_connection"}, channel=SYSMON, event_id="3")
