"""Declared logsource facts: what a field map (``product`` / ``service`` / ``category``) or ``--logsource``
says of events that have no channel or EventID to tell their log source by (proxy, web server, cloud)."""

import json
import os
import re

import attrs
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import sigmahq
from clitools import alerts, run_cli, run_cli_here
from pipeshell_filter.cli import UsageProblem, make_resolver, parse_logsource
from pipeshell_filter.detect import Detector, event_facts
from pipeshell_filter.events.fields import READ, ProfileError, profile_from_table
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.logsource import EventFacts, LogsourceTable, compile_logsource
from pipeshell_filter.sigma.rule import parse_rule

TABLE = LogsourceTable.builtin()
SECURITY = "Security"


# --------------------------------------------------------------------------- the field-map keys


def test_a_field_map_declares_constant_facts():
    profile = profile_from_table({"name": "p", "detect": ["a"], "product": "zscaler", "category": " proxy "}, "t")
    assert (profile.product, profile.service, profile.category, profile.reads) == ("zscaler", None, "proxy", ())
    assert profile.tag == ("declared", "zscaler", None, "proxy")
    assert profile.declared({"a": 1}) == ("zscaler", None, "proxy")


def test_a_field_map_reads_facts_from_the_event():
    profile = profile_from_table({"name": "p", "product": "aws", "service": {"path": "event.dataset"},
                                  "category": {"path": ["kind", "other.kind"]}}, "t")
    assert profile.tag is READ
    assert profile.reads == (("service", (("event", "dataset"),)), ("category", (("kind",), ("other", "kind"))))
    assert profile.declared({"event": {"dataset": "cloudtrail"}, "other": {"kind": "x"}}) == ("aws", "cloudtrail", "x")
    # absent, empty or blank: not told; a list: its first value
    assert profile.declared({"event": {"dataset": " "}, "kind": ["a", "b"]}) == ("aws", None, "a")
    assert profile.declared({}) == ("aws", None, None)
    # flattened ECS: a path's keys joined into one key, as its time and channel paths are read
    assert profile.declared({"event.dataset": "cloudtrail", "other.kind": "x"}) == ("aws", "cloudtrail", "x")


def test_a_windows_profile_keeps_its_product_as_routing_tag():
    """The built-in shapes declare a product only: their routing key is what it was (no slower path)."""
    profile = profile_from_table({"name": "w", "product": "windows"}, "t")
    assert profile.tag == "windows" and profile.reads == ()
    assert profile_from_table({"name": "f"}, "t").tag is None


@pytest.mark.parametrize("key, value", [
    ("category", ""), ("category", 3), ("service", ["proxy"]), ("product", {"paths": "a"}),
    ("category", {"path": "a", "extra": 1}), ("service", {"path": []}), ("category", "a\nb"),
])
def test_a_bad_fact_in_a_field_map_is_refused(key, value):
    with pytest.raises(ProfileError, match=f"'{key}' must be a name"):
        profile_from_table({"name": "p", key: value}, "map.yml")
    with pytest.raises(ProfileError, match="a path must be a non-empty string"):
        profile_from_table({"name": "p", key: {"path": ["a", ""]}}, "map.yml")


# --------------------------------------------------------------------------- --logsource


@pytest.mark.parametrize("text, facts", [
    ("product=aws,service=cloudtrail", ("aws", "cloudtrail", None)),
    ("category=proxy", (None, None, "proxy")),
    (" category = proxy , product=zscaler", ("zscaler", None, "proxy")),
])
def test_logsource_option_parses(text, facts):
    assert parse_logsource(text) == facts


@pytest.mark.parametrize("text, message", [
    ("", "each part must be KEY=VALUE"), ("category", "each part must be KEY=VALUE"),
    ("category=", "each part must be KEY=VALUE"), ("category=a=b", "each part must be KEY=VALUE"),
    ("product=aws,", "each part must be KEY=VALUE"), ("cat=proxy", "unknown key 'cat'"),
    ("Category=proxy", "unknown key 'Category'"), ("category=a,category=b", "category given twice"),
])
def test_bad_logsource_option_is_a_usage_error(text, message):
    with pytest.raises(UsageProblem, match=message):
        parse_logsource(text)


@pytest.mark.parametrize("args", [["--logsource", "nope=1"], ["explain", "--logsource", "product", "--event", "-"]])
def test_bad_logsource_option_exits_2_with_one_line(args):
    result = run_cli(args, b"{}\n")
    assert result.returncode == 2 and not result.stdout
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeshell-filter: error: --logsource "), result.stderr


def _facts(event: dict, field_maps=(), logsource=None) -> EventFacts:
    resolver = make_resolver("auto", list(field_maps), None, logsource)
    return event_facts(resolver.view(event))


def test_logsource_option_fills_only_events_that_tell_nothing(tmp_path):
    windows = {"EventID": 4688, "Channel": SECURITY}
    assert _facts(windows, logsource="category=proxy") == EventFacts("windows", SECURITY, "4688")
    proxy = {"c-uri": "http://x/"}
    assert _facts(proxy, logsource="category=proxy") == EventFacts(category="proxy")
    assert _facts(proxy, logsource="category=proxy").origin == "--logsource"
    assert _facts(proxy) == EventFacts()
    # a field map's own declaration wins over the option, whole
    mapped = tmp_path / "map.yml"
    mapped.write_text("name: web\ndetect: [uri_path]\ncategory: webserver\n")
    web = _facts({"uri_path": "/"}, [str(mapped)], "product=aws,category=proxy")
    assert web == EventFacts(category="webserver") and web.origin == "profile web"


# --------------------------------------------------------------------------- verdicts


def check(logsource: dict):
    compiled = compile_logsource(logsource, TABLE, "t.yml")
    assert compiled is not None
    return compiled


def test_declared_category_decides_against_the_other_categories():
    proxy, web = EventFacts(category="proxy"), EventFacts(category="WebServer")
    for unknown in ("match", "skip"):
        assert check({"category": "proxy"}).verdict(proxy, unknown)[0]
        assert check({"category": "webserver"}).verdict(web, unknown)[0]
        applies, reason = check({"category": "proxy"}).verdict(web, unknown)
        assert not applies and reason == "category proxy does not fit: the event declares category WebServer"
        assert not check({"category": "proxy"}).applies(web, unknown)
    # without a declaration both apply (the event tells nothing: --logsource-unknown match)
    assert check({"category": "proxy"}).applies(EventFacts(), "match")
    assert check({"category": "webserver"}).applies(EventFacts(), "match")


def test_declared_facts_replace_channel_and_event_id():
    """An EDR's records declared windows / process_creation: SigmaHQ's Windows rules apply, whatever
    EventID or channel the record happens to carry, and a Windows rule of another category does not."""
    edr = EventFacts(product="windows", event_id="7", category="process_creation", origin="profile edr")
    rule = check({"product": "windows", "category": "process_creation"})
    applies, reason = rule.verdict(edr, "skip")
    assert applies and reason == ("category process_creation applies: the event declares product windows, "
                                  "category process_creation (by profile edr)")
    assert not check({"product": "windows", "category": "image_load"}).applies(edr, "match")
    assert not check({"product": "linux"}).applies(edr, "match")
    security = check({"product": "windows", "service": "security"})
    assert security.applies(edr, "match")
    applies, reason = security.verdict(edr, "skip")
    assert not applies and reason == ("service security needs the event's service, which it does not tell "
                                      "(policy skip) (by profile edr)")


def test_cloudtrail_declared_by_option():
    trail = EventFacts(product="aws", service="cloudtrail")
    assert check({"product": "aws", "service": "cloudtrail"}).applies(trail, "skip")
    assert not check({"product": "azure", "service": "activitylogs"}).applies(trail, "match")
    assert not check({"product": "aws", "service": "guardduty"}).applies(trail, "match")
    assert not check({"category": "proxy"}).applies(trail, "skip")
    assert check({"category": "proxy"}).applies(trail, "match")  # its category is not told


# An independent statement of the semantics, for events that declare a service or a category: every fact the
# rule names must equal the event's (any entry of a list, ignoring case); one the event does not tell is taken
# as matching under "match" and as failing under "skip".  The event's product is its declared one, else the one
# the table gives its channel.

_RULE_PRODUCTS = ["aws", "AWS", "okta", "zscaler", "windows", "linux"]
_RULE_SERVICES = ["cloudtrail", "okta", "security", "sysmon", "Sysmon"]
_RULE_CATEGORIES = ["proxy", "webserver", "process_creation", "dns", "antivirus", "file_access"]
_CHANNELS = [None, SECURITY, "Microsoft-Windows-Sysmon/Operational", "Linux-Sysmon/Operational", "my-log"]


def _one_or_list(values):
    return st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=3))


rule_logsources = st.fixed_dictionaries({}, optional={
    "product": _one_or_list(_RULE_PRODUCTS), "service": _one_or_list(_RULE_SERVICES),
    "category": _one_or_list(_RULE_CATEGORIES)})
declared_events = st.builds(
    EventFacts,
    product=st.one_of(st.none(), st.sampled_from(["aws", "Okta", "zscaler", "Windows"])),
    channel=st.sampled_from(_CHANNELS),
    event_id=st.one_of(st.none(), st.sampled_from(["1", "4688", "11"])),
    service=st.one_of(st.none(), st.sampled_from(["CloudTrail", "okta", "security", "sysmon"])),
    category=st.one_of(st.none(), st.sampled_from(["proxy", "WEBSERVER", "process_creation", "dns"])),
)


def _service_channels(product, service) -> list:
    """The channels of a declared service, for an event of ``product`` (None: of any product the table maps)."""
    products = [product.lower()] if product else sorted(TABLE.products)
    return [c for p in products if p in TABLE.products for c in TABLE.channels(p, service) or ()]


def expected(logsource: dict, event: EventFacts, unknown: str) -> bool:
    product = event.product or (TABLE.product_of_channel(event.channel) if event.channel else None)
    if event.category is None and event.service and _service_channels(product, event.service):
        # a service the table knows, no category: as an event in one of that service's channels
        return any(check(logsource).applies(EventFacts(product, channel, event.event_id), unknown)
                   for channel in _service_channels(product, event.service))
    told = {"product": product, "service": event.service, "category": event.category}
    for key, names in logsource.items():
        names = [names] if isinstance(names, str) else names
        if told[key] is None:
            if unknown == "skip":
                return False
        elif told[key].lower() not in [name.lower() for name in names]:
            return False
    return True


@given(rule_logsources, declared_events, st.sampled_from(["match", "skip"]))
def test_a_rule_applies_to_a_declaring_event_iff_its_facts_fit(logsource, event, unknown):
    assume(logsource and (event.service or event.category))
    compiled = check(logsource)
    want = expected(logsource, event, unknown)
    assert compiled.applies(event, unknown) == want
    applies, reason = compiled.verdict(event, unknown)
    assert applies == want and reason and "\n" not in reason


@given(rule_logsources, declared_events, st.sampled_from(["match", "skip"]))
def test_routing_keeps_the_declared_facts_apart(logsource, event, unknown):
    """The detector's routes, keyed per distinct facts: a rule is routed to an event of a profile that
    declares these facts iff its logsource applies (the same profile reading them from the event)."""
    assume(logsource and (event.service or event.category))
    rule = parse_rule(json.dumps({"title": "t", "id": "r1", "logsource": logsource,
                                  "detection": {"sel": {"x": "1"}, "condition": "sel"}}), "t.yml")
    table = {"name": "declaring", "detect": ["x"], "channel": ["ch"],
             "product": {"path": "p"}, "service": {"path": "s"}, "category": {"path": "c"}}
    resolver = make_resolver("auto", None, None)
    resolver.profiles.insert(0, profile_from_table(table, "t"))
    detector = Detector([compile_plan(rule)], resolver, unknown_logsource=unknown)
    raw = {"x": "1", "p": event.product, "s": event.service, "c": event.category, "ch": event.channel,
           "EventID": event.event_id}
    # as documented: the product the table gives the event's channel, else the declared one
    product = (TABLE.product_of_channel(event.channel) if event.channel else None) or event.product
    other = dict(raw, c="nothing-like-it", s=None)  # the same shape, routed first, with other facts
    assert bool(detector.detect(other)) == expected(logsource, EventFacts(
        product, event.channel, category="nothing-like-it"), unknown)
    told = EventFacts(product, event.channel, event.event_id, event.service, event.category)
    assert bool(detector.detect({k: v for k, v in raw.items() if v is not None})) == expected(logsource, told, unknown)


# --------------------------------------------------------------------------- a declared service the table knows

SYSMON = "Microsoft-Windows-Sysmon/Operational"


@pytest.mark.parametrize("unknown", ["match", "skip"])
@pytest.mark.parametrize("product", ["windows", None])
def test_a_declared_known_service_keeps_its_categories_eventids(unknown, product):
    """``--logsource product=windows,service=sysmon`` on records without a channel: Sysmon 1 is a process
    creation, Sysmon 3 is not (it was, under match; under skip neither was), as in Sysmon's channel."""
    rule = check({"product": "windows", "category": "process_creation"})
    for event_id, want in (("1", True), ("3", False), ("4688", False), (None, unknown == "match")):
        facts = EventFacts(product, None, event_id, "Sysmon", origin="--logsource")
        assert rule.applies(facts, unknown) == want, event_id
        applies, reason = rule.verdict(facts, unknown)
        assert applies == want and "declared service Sysmon" in reason and "--logsource" in reason, reason
    assert check({"product": "windows", "category": "network_connection"}).applies(
        EventFacts(product, None, "3", "sysmon"), unknown)
    security = EventFacts(product, None, "4688", "security")
    assert rule.applies(security, unknown) and not rule.applies(attrs.evolve(security, event_id="1"), unknown)
    assert check({"product": "windows", "service": "sysmon"}).applies(EventFacts(product, None, "3", "sysmon"), unknown)
    assert not check({"product": "windows", "service": "security"}).applies(EventFacts(product, None, "3", "sysmon"),
                                                                            unknown)


@pytest.mark.parametrize("unknown", ["match", "skip"])
def test_a_declared_category_or_unknown_service_is_judged_as_before(unknown):
    rule = check({"product": "windows", "category": "process_creation"})
    # a declared category wins: the EventID is not read
    assert rule.applies(EventFacts("windows", None, "3", "sysmon", "process_creation"), unknown)
    assert not rule.applies(EventFacts("windows", None, "1", "sysmon", "network_connection"), unknown)
    # a service the table does not know: the category is not told, decided by the policy
    assert rule.applies(EventFacts("windows", None, "3", "my-edr"), unknown) == (unknown == "match")
    # nor one the event's product does not have
    assert rule.applies(EventFacts("aws", None, "1", "sysmon"), unknown) is False


def test_a_declared_service_is_judged_as_its_channel_is():
    """The declared service's channel, whatever channel the event carries (its field map says which
    service it is): the same verdicts as an event in that channel."""
    for logsource in ({"product": "windows", "category": "process_creation"}, {"product": "windows"},
                      {"category": "proxy"}, {"product": "linux", "category": "process_creation"},
                      {"product": "windows", "category": "file_access"}, {"service": "sysmon"}):
        rule = check(logsource)
        for event_id in ("1", "3", None):
            for unknown in ("match", "skip"):
                declared = EventFacts("windows", "other-log", event_id, "sysmon")
                assert rule.applies(declared, unknown) == rule.applies(
                    EventFacts("windows", SYSMON, event_id), unknown), (logsource, event_id, unknown)


# --------------------------------------------------------------------------- the CLI, two shapes in one stream

PROXY_MAP = """name: my-proxy
description: a proxy's access log as JSON
detect: [c-ip, cs-host]
time: [ts]
category: proxy
"""
WEB_MAP = """name: my-web
detect: [c-ip, cs-uri-stem]
time: [ts]
category: {path: log.kind}
"""
# SigmaHQ-style rules: each for its log, each reading a field both logs have
PROXY_RULE = """title: Proxy hacktool user agent
id: 0b2a6f4e-1c1d-4c59-9f4c-000000000001
logsource: {category: proxy}
detection:
    selection:
        c-useragent|contains: [sqlmap/, Nikto/]
    condition: selection
level: high
"""
WEB_RULE = """title: Web server scanner user agent
id: 0b2a6f4e-1c1d-4c59-9f4c-000000000002
logsource: {category: webserver}
detection:
    selection:
        c-useragent|contains: [sqlmap/, Nikto/]
    condition: selection
level: high
"""
EVENTS = [
    {"ts": "2024-05-01T10:00:00Z", "c-ip": "10.0.0.5", "cs-host": "example.org", "c-useragent": "sqlmap/1.7"},
    {"ts": "2024-05-01T10:00:01Z", "c-ip": "198.51.100.7", "cs-uri-stem": "/login", "log": {"kind": "webserver"},
     "c-useragent": "Mozilla/5.0 Nikto/2.5"},
    {"ts": "2024-05-01T10:00:02Z", "c-ip": "10.0.0.6", "cs-host": "example.com", "c-useragent": "curl/8"},
]


def _stream_setup(tmp_path):
    paths = {}
    for name, text in (("proxy.yml", PROXY_MAP), ("web.yml", WEB_MAP), ("r_proxy.yml", PROXY_RULE),
                       ("r_web.yml", WEB_RULE)):
        (tmp_path / name).write_text(text)
        paths[name] = str(tmp_path / name)
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    return paths, str(tmp_path / "events.ndjson")


def _matches(result) -> set:
    assert result.returncode == 0, result.stderr
    return {(a["rule"]["name"], e["line"]) for a in alerts(result.stdout) for e in a["sigma"]["events"]}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_two_declared_shapes_in_one_stream_do_not_cross_match(tmp_path, workers):
    paths, events = _stream_setup(tmp_path)
    rules = ["--rule", paths["r_proxy.yml"], "--rule", paths["r_web.yml"], "--input", events, "--workers", workers]
    maps = ["--field-map", paths["proxy.yml"], "--field-map", paths["web.yml"]]
    crossed = {("Proxy hacktool user agent", 1), ("Web server scanner user agent", 1),
               ("Proxy hacktool user agent", 2), ("Web server scanner user agent", 2)}
    assert _matches(run_cli(rules)) == crossed  # nothing told: every rule on every event
    kept = {("Proxy hacktool user agent", 1), ("Web server scanner user agent", 2)}
    for unknown in ("match", "skip"):
        assert _matches(run_cli(rules + maps + ["--logsource-unknown", unknown])) == kept
    assert _matches(run_cli(rules + ["--logsource-unknown", "skip"])) == set()  # nothing told, nothing tried
    # a single-source stream told by the option alone
    assert _matches(run_cli(rules + ["--logsource", "category=proxy"])) == {
        ("Proxy hacktool user agent", 1), ("Proxy hacktool user agent", 2)}


def test_explain_event_shows_the_declared_facts_and_verdicts(tmp_path):
    paths, _ = _stream_setup(tmp_path)
    (tmp_path / "web.json").write_text(json.dumps(EVENTS[1]))
    result = run_cli_here(["explain", "--rule", paths["r_proxy.yml"], "--rule", paths["r_web.yml"],
                           "--field-map", paths["proxy.yml"], "--field-map", paths["web.yml"],
                           "--event", str(tmp_path / "web.json")])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert ("logsource product (unknown), channel (unknown), EventID (unknown), service (unknown), category "
            "webserver (declared by profile my-web; judged on these declared facts, not its channel or EventID)"
            ) in lines
    assert ("logsource does not apply: category proxy does not fit: the event declares category webserver "
            "(by profile my-web) (the rule is not tried on this event)") in lines
    assert "logsource applies: category webserver applies: the event declares category webserver " \
           "(by profile my-web)" in lines
    told = run_cli_here(["explain", "--rule", paths["r_proxy.yml"], "--logsource", "product=zscaler,category=proxy",
                         "--event", str(tmp_path / "web.json")])
    assert "service (unknown), category proxy (declared by --logsource;" in told.stdout.decode()


WHOAMI = os.path.join(sigmahq.SIGMAHQ, "rules", "windows", "process_creation",
                      "proc_creation_win_whoami_all_execution.yml")


@pytest.mark.skipif(not os.path.exists(WHOAMI), reason="SigmaHQ checkout not found")
def test_explain_event_judges_a_declared_service_as_its_channel(tmp_path):
    event = {"EventID": 3, "Computer": "h1", "TimeCreated": "2024-01-01T00:00:00Z",
             "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /all"}
    (tmp_path / "e.json").write_text(json.dumps(event))
    result = run_cli_here(["explain", "--rule", WHOAMI, "--logsource", "product=windows,service=sysmon",
                           "--logsource-unknown", "skip", "--event", str(tmp_path / "e.json")])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert ("logsource product windows, channel (unknown), EventID 3, service sysmon, category (unknown) (declared "
            "by --logsource; judged as an event of that service's channel, with its EventID, not its own channel)"
            ) in lines
    assert ("logsource does not apply: category process_creation needs EventID 1 or 4688, event has 3 (as in the "
            "channel of its declared service sysmon, by --logsource) (the rule is not tried on this event)") in lines


@pytest.mark.skipif(not os.path.exists(WHOAMI), reason="SigmaHQ checkout not found")
@pytest.mark.parametrize("unknown", ["match", "skip"])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_declared_sysmon_stream_meets_process_creation_on_eventid_1_only(tmp_path, unknown, workers):
    """The reviewer's reproducer: Sysmon 1 and 3 records of ``whoami /all`` without a channel."""
    events = [{"EventID": event_id, "Computer": "h1", "TimeCreated": f"2024-01-01T00:00:0{at}Z",
               "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /all",
               "OriginalFileName": "whoami.exe"} for at, event_id in enumerate((3, 1, 4688))]
    path = tmp_path / "sysmon.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events) * 50)
    result = run_cli_here(["--stage", "match", "--heartbeat", "0", "--rule", WHOAMI, "--input", str(path),
                           "--logsource", "product=windows,service=sysmon", "--logsource-unknown", unknown,
                           "--workers", workers])
    assert result.returncode == 0, result.stderr
    found = [json.loads(line)["event"]["event_id"] for line in result.stdout.decode().splitlines()]
    assert found == [1] * 50


# --------------------------------------------------------------------------- SigmaHQ's own web and cloud rules

SIGMAHQ_RULES = [os.path.join(sigmahq.SIGMAHQ, "rules", part) for part in ("web", "cloud")]
MAPS = {
    "proxy.yml": "name: proxy\ndetect: [c-useragent, cs-host]\ncategory: proxy\n",
    "web.yml": "name: web\ndetect: [cs-user-agent, cs-uri-stem]\ncategory: webserver\n",
    "trail.yml": "name: trail\ndetect: [eventSource, awsRegion]\nproduct: aws\nservice: cloudtrail\n",
}
SIGMAHQ_EVENTS = [
    # an administrator's call to Azure's API, seen by the proxy: Azure's activity-log keyword rules hold on it
    {"c-useragent": "sqlmap/1.7", "cs-host": "management.azure.com", "cs-method": "PUT",
     "c-uri": "https://management.azure.com/x/providers/Microsoft.Authorization/roleAssignments/1",
     "operationName": "Microsoft.Authorization/roleAssignments/write"},
    {"cs-user-agent": "sqlmap/1.7", "cs-uri-stem": "/index.php", "cs-uri-query": "id=1' UNION SELECT 1--",
     "cs-method": "GET", "sc-status": 200},
    {"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging", "awsRegion": "eu-west-1",
     "userIdentity": {"type": "IAMUser"}},
    # an outbound request the proxy saw: the web servers' SQL injection keywords hold on its record too
    {"c-useragent": "python-requests/2.31", "cs-host": "shop.example", "cs-method": "GET",
     "c-uri": "http://shop.example/item?id=1%20or%201=1#"},
]


def _logsources() -> dict:
    found = {}
    for top in SIGMAHQ_RULES:
        for folder, _, names in os.walk(top):
            for name in names:
                if name.endswith(".yml"):
                    with open(os.path.join(folder, name), encoding="utf-8") as handle:
                        rule = yaml.load(handle, Loader=sigmahq.SAFE_LOADER)
                    if isinstance(rule, dict) and "logsource" in rule:
                        found[rule.get("title")] = {k: str(v).lower() for k, v in rule["logsource"].items()
                                                    if k in ("product", "service", "category")}
    return found


@pytest.mark.skipif(not all(map(os.path.isdir, SIGMAHQ_RULES)), reason="no SigmaHQ checkout (../shared/sigma)")
def test_sigmahq_web_and_cloud_rules_match_only_their_own_declared_logs(tmp_path):
    for name, text in MAPS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in SIGMAHQ_EVENTS))
    args = [a for top in SIGMAHQ_RULES for a in ("--rule", top)] + ["--input", str(tmp_path / "events.ndjson"),
                                                                   "--workers", "0"]
    declared = {1: {"category": "proxy"}, 2: {"category": "webserver"}, 3: {"product": "aws", "service": "cloudtrail"},
                4: {"category": "proxy"}}
    logsources = _logsources()

    def conflicting(matches) -> set:  # the rule names a fact the event declares otherwise
        return {(title, line) for title, line in matches
                if any(logsources[title].get(k, v) != v for k, v in declared[line].items())}

    def outside(matches) -> set:  # ... or one the event does not declare
        return conflicting(matches) | {(title, line) for title, line in matches
                                       if set(logsources[title]) - set(declared[line])}

    maps = [a for name in MAPS for a in ("--field-map", str(tmp_path / name))]
    plain = _matches(run_cli(args))
    assert conflicting(plain), plain  # without the declarations rules match events of another log
    # Azure's keyword rules (product azure) hold on the proxy's record of a call to Azure's API: the event
    # declares no product, which --logsource-unknown match takes as matching
    told = _matches(run_cli(args + maps))
    assert told and not conflicting(told) and told <= plain, told
    assert outside(told) == {("Granting Of Permissions To An Account", 1)}
    strict = _matches(run_cli(args + maps + ["--logsource-unknown", "skip"]))
    assert strict == told - outside(told)
    assert {line for _, line in strict} == {1, 2, 3}  # each event still meets its own log's rules


def test_a_megabyte_of_declared_fact_is_not_remembered_as_a_route():
    """Facts read from the event are part of the routing key: a hostile value is judged, not kept."""
    rule = parse_rule(json.dumps({"title": "t", "id": "r1", "logsource": {"category": "proxy"},
                                  "detection": {"sel": {"x": "1"}, "condition": "sel"}}), "t.yml")
    resolver = make_resolver("auto", None, None)
    resolver.profiles.insert(0, profile_from_table({"name": "d", "detect": ["x"], "category": {"path": "c"}}, "t"))
    detector = Detector([compile_plan(rule)], resolver)
    assert not detector.detect({"x": "1", "c": "p" * (1 << 20)})
    assert not detector._routes
    assert detector.detect({"x": "1", "c": "Proxy"}) and len(detector._routes) == 1


# Any character, control characters and line separators most often.
_HOSTILE_TEXT = st.text(st.one_of(st.sampled_from("\n\r\x00\x1b\x85\u2028\u2029\x7f\t"),
                                  st.characters(blacklist_categories=("Cs",))),
                        min_size=1, max_size=12).filter(str.strip)


@settings(max_examples=40, deadline=None)
@given(_HOSTILE_TEXT, st.sampled_from(["category", "service", "channel", "EventID"]))
def test_explain_event_prints_an_events_logsource_facts_escaped(tmp_path_factory, value, where):
    """An event's declared service and category, its channel and EventID, are its own text: ``explain --event``
    wrote them raw, so a line break in one forged lines of the report.  Whatever they hold, the report has the
    lines it has for a plain value, and none holds a control character or line separator."""
    tmp_path = tmp_path_factory.mktemp("explain")
    paths, _ = _stream_setup(tmp_path)
    (tmp_path / "map.yml").write_text("name: mine\ndetect: [c-ip]\ntime: [ts]\nproduct: zscaler\n"
                                      "service: {path: svc}\ncategory: {path: cat}\n")

    def report(told) -> list:
        if where in ("category", "service"):
            event = dict(EVENTS[0], **{"svc": "proxy", "cat": "proxy", where[:3]: told})
            options = ["--field-map", str(tmp_path / "map.yml"), "--rule", paths["r_proxy.yml"]]
        else:
            system = {"Channel": "Microsoft-Windows-PowerShell/Operational", "EventID": 4104, "Computer": "h",
                      "TimeCreated": {"#attributes": {"SystemTime": "2024-05-01T10:00:00Z"}}, where: told}
            event = {"Event": {"System": system, "EventData": {"ScriptBlockText": "x"}}}
            options = []
        (tmp_path / "event.json").write_text(json.dumps(event))
        done = run_cli_here(["explain", *options, "--event", str(tmp_path / "event.json")])
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8", "surrogateescape").splitlines()

    plain, got = report("plain"), report(value)
    assert len(got) == len(plain), got
    assert not any(re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", line) for line in got), got
