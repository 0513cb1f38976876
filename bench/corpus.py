#!/usr/bin/env python3
"""Seeded, reproducible benchmark corpus: Windows events as NDJSON, PipeShell incidents inside.

    python bench/corpus.py --events 400000 --seed 1 -o bench/out/corpus.ndjson
    python bench/corpus.py --events 4000000 --seed 1 -o - | pipeshell-filter

Every line is one event in the shape evtx_dump / the ``evtx`` package write
(Windows XML rendered as JSON: ``Event.System`` with ``#attributes``,
``Event.EventData``).  The mix is what a Windows fleet with Sysmon sends:
mostly Sysmon (process creation with long command lines and hashes, network
connections, image loads, file and registry writes, DNS, ...), Security 4624 /
4688, and some benign PowerShell (4103 module logging, 4104 script blocks,
classic 800).  A line is about 1.5 KB on average; time rises steadily with
sub-second jitter, so neighbouring lines are sometimes slightly out of order.

Injected scenarios, one per 15-minute slot, so none can reach another's window:

* ``incident`` (one per 50,000 events): a 4104 on a server whose script block
  builds a ``System.IO.Pipes.NamedPipeServerStream``, and within five minutes
  client events (4103 ``Payload``, 800 data, or 4104 ``ScriptBlockText`` with
  ``NamedPipeClientStream``) on two or three other hosts.  The built-in rule
  (``count(Computer) > 2`` within 5m, window join) fires exactly once for each.
* decoys, as many as incidents, which must never alert: a lone server
  (plus the type name in a Sysmon / 4688 command line, which is not a field the
  rule looks at), a server with a single client (two hosts only; a third host
  names the client type only in 4103 ``ContextInfo``), and a server with two
  clients that come more than five minutes later.

The letter case of the type names varies.  The plan (what is injected where)
depends only on ``--events`` and ``--seed``; ``plan_summary()`` returns the
expected counts without generating anything.  A one-line summary goes to stderr;
``--meta FILE`` writes it as JSON.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import json
import os
import random
import re
import sys
import time

GENERATOR_VERSION = 1

SERVER_TYPE = "System.IO.Pipes.NamedPipeServerStream"
CLIENT_TYPE = "System.IO.Pipes.NamedPipeClientStream"
NEEDLES = (SERVER_TYPE.lower(), CLIENT_TYPE.lower())

EVENTS_PER_INCIDENT = 50_000
SLOT_SECONDS = 900.0  # one scenario per slot; each lasts < 7 minutes, starts 2-3 minutes in
START_EPOCH = calendar.timegm((2026, 11, 2, 8, 0, 0, 0, 0, 0))
XMLNS = "http://schemas.microsoft.com/win/2004/08/events/event"


def q(text: str) -> str:
    """A JSON string literal (UTF-8, as evtx_dump writes)."""
    return json.dumps(text, ensure_ascii=False)


# --------------------------------------------------------------------------- templates


class Template:
    """A JSON document with ``"@@name@@"`` holes, rendered by % formatting.

    Hole values are JSON fragments (already quoted strings, numbers, objects).
    """

    _HOLE = re.compile(r'"@@(\w+)@@"')

    def __init__(self, document):
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        parts = self._HOLE.split(text)
        self.names = tuple(parts[1::2])
        self.format = "%s".join(p.replace("%", "%%") for p in parts[0::2])

    def render(self, values: dict) -> str:
        return self.format % tuple([values[name] for name in self.names])


def hole(name: str) -> str:
    return f"@@{name}@@"


def system_part(provider: dict, event_id, channel: str, *, version=None, level=4, task=0, opcode=0,
                keywords="0x8000000000000000", execution=True, correlation=False) -> dict:
    part = {"Provider": {"#attributes": provider}, "EventID": event_id}
    if version is not None:
        part["Version"] = version
    part.update({"Level": level, "Task": task})
    if opcode is not None:
        part["Opcode"] = opcode
    part["Keywords"] = keywords
    part["TimeCreated"] = {"#attributes": {"SystemTime": hole("time")}}
    part["EventRecordID"] = hole("rid")
    if correlation:
        part["Correlation"] = hole("corr")
    if execution:
        part["Execution"] = {"#attributes": {"ProcessID": hole("xpid"), "ThreadID": hole("xtid")}}
    part.update({"Channel": channel, "Computer": hole("host"), "Security": hole("sec")})
    return part


def event_template(system: dict, data: dict) -> Template:
    return Template({"Event": {"#attributes": {"xmlns": XMLNS}, "System": system, "EventData": data}})


SYSMON = {"Name": "Microsoft-Windows-Sysmon", "Guid": "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"}
SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
SECURITY = {"Name": "Microsoft-Windows-Security-Auditing", "Guid": "{54849625-5478-4994-a5ba-3e3b0328c30d}"}
PS_OPERATIONAL = {"Name": "Microsoft-Windows-PowerShell", "Guid": "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}"}
PS_CHANNEL = "Microsoft-Windows-PowerShell/Operational"


def sysmon(event_id: int, task: int, data: dict, version: int = 5) -> Template:
    return event_template(system_part(SYSMON, event_id, SYSMON_CHANNEL, version=version, task=task), data)


def fields(*names) -> dict:
    return {name: hole(name) for name in names}


TEMPLATES = {
    "sysmon1": sysmon(1, 1, fields(
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "FileVersion", "Description", "Product",
        "Company", "OriginalFileName", "CommandLine", "CurrentDirectory", "User", "LogonGuid", "LogonId",
        "TerminalSessionId", "IntegrityLevel", "Hashes", "ParentProcessGuid", "ParentProcessId", "ParentImage",
        "ParentCommandLine", "ParentUser")),
    "sysmon3": sysmon(3, 3, fields(
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "User", "Protocol", "Initiated",
        "SourceIsIpv6", "SourceIp", "SourceHostname", "SourcePort", "SourcePortName", "DestinationIsIpv6",
        "DestinationIp", "DestinationHostname", "DestinationPort", "DestinationPortName")),
    "sysmon5": sysmon(5, 5, fields("RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "User"), version=3),
    "sysmon7": sysmon(7, 7, fields(
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "ImageLoaded", "FileVersion", "Description",
        "Product", "Company", "OriginalFileName", "Hashes", "Signed", "Signature", "SignatureStatus", "User"),
        version=3),
    "sysmon10": sysmon(10, 10, fields(
        "RuleName", "UtcTime", "SourceProcessGUID", "SourceProcessId", "SourceThreadId", "SourceImage",
        "TargetProcessGUID", "TargetProcessId", "TargetImage", "GrantedAccess", "CallTrace", "SourceUser",
        "TargetUser"), version=3),
    "sysmon11": sysmon(11, 11, fields(
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "TargetFilename", "CreationUtcTime", "User"),
        version=2),
    "sysmon13": sysmon(13, 13, fields(
        "RuleName", "EventType", "UtcTime", "ProcessGuid", "ProcessId", "Image", "TargetObject", "Details",
        "User"), version=2),
    "sysmon17": sysmon(17, 17, fields(
        "RuleName", "EventType", "UtcTime", "ProcessGuid", "ProcessId", "PipeName", "Image", "User"), version=1),
    "sysmon22": sysmon(22, 22, fields(
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "QueryName", "QueryStatus", "QueryResults", "Image",
        "User")),
    "sec4624": event_template(
        system_part(SECURITY, 4624, "Security", version=3, level=0, task=12544, keywords="0x8020000000000000",
                    correlation=True),
        fields("SubjectUserSid", "SubjectUserName", "SubjectDomainName", "SubjectLogonId", "TargetUserSid",
               "TargetUserName", "TargetDomainName", "TargetLogonId", "LogonType", "LogonProcessName",
               "AuthenticationPackageName", "WorkstationName", "LogonGuid", "TransmittedServices",
               "LmPackageName", "KeyLength", "ProcessId", "ProcessName", "IpAddress", "IpPort",
               "ImpersonationLevel", "RestrictedAdminMode", "RemoteCredentialGuard", "TargetOutboundUserName",
               "TargetOutboundDomainName", "VirtualAccount", "TargetLinkedLogonId", "ElevatedToken")),
    "sec4688": event_template(
        system_part(SECURITY, 4688, "Security", version=2, level=0, task=13312, keywords="0x8020000000000000"),
        fields("SubjectUserSid", "SubjectUserName", "SubjectDomainName", "SubjectLogonId", "NewProcessId",
               "NewProcessName", "TokenElevationType", "ProcessId", "CommandLine", "TargetUserSid",
               "TargetUserName", "TargetDomainName", "TargetLogonId", "ParentProcessName", "MandatoryLabel")),
    "ps4104": event_template(
        system_part(PS_OPERATIONAL, 4104, PS_CHANNEL, version=1, level=hole("level"), task=2, opcode=15,
                    keywords="0x0", correlation=True),
        fields("MessageNumber", "MessageTotal", "ScriptBlockText", "ScriptBlockId", "Path")),
    "ps4103": event_template(
        system_part(PS_OPERATIONAL, 4103, PS_CHANNEL, version=1, level=4, task=106, opcode=20, keywords="0x0",
                    correlation=True),
        fields("ContextInfo", "UserData", "Payload")),
    "ps800": event_template(
        system_part({"Name": "PowerShell"}, {"#attributes": {"Qualifiers": "0"}, "#text": "800"},
                    "Windows PowerShell", level=4, task=8, opcode=None, keywords="0x80000000000000",
                    execution=False),
        {"Data": {"#text": [hole("data1"), hole("data2"), hole("data3")]}, "Binary": None}),
}

CHANNEL_OF = {name: ("sysmon" if name.startswith("sysmon") else "security" if name.startswith("sec")
                     else "classic" if name == "ps800" else "psop") for name in TEMPLATES}

# --------------------------------------------------------------------------- vocabulary

FIRST = ["anna", "ben", "carla", "david", "elena", "farid", "grace", "hugo", "ines", "jonas", "kim", "lars",
         "maria", "nils", "olga", "peter", "quinn", "rosa", "sven", "tara", "umar", "vera", "walt", "xenia",
         "yusuf", "zoe", "aaron", "bianca", "chen", "dana"]
LAST = ["meyer", "novak", "garcia", "okafor", "lindqvist", "rossi", "tanaka", "kowalski", "dubois", "silva",
        "jansen", "weber", "murphy", "haddad", "larsen", "moreau", "schmidt", "ivanova", "brown", "nakamura"]
DOMAIN = "CORP"
DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"

# (path, version, description, product, company, original name)
MS = "Microsoft Corporation"
WINOS = "Microsoft\u00ae Windows\u00ae Operating System"
PROGRAMS = [
    ("C:\\Windows\\System32\\svchost.exe", "10.0.19041.4355 (WinBuild.160101.0800)",
     "Host Process for Windows Services", WINOS, MS, "svchost.exe"),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "130.0.6723.92", "Google Chrome", "Google Chrome",
     "Google LLC", "chrome.exe"),
    ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe", "130.0.2849.68", "Microsoft Edge",
     "Microsoft Edge", MS, "msedge.exe"),
    ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "10.0.19041.3996 (WinBuild.160101.0800)",
     "Windows PowerShell", WINOS, MS, "PowerShell.EXE"),
    ("C:\\Windows\\System32\\cmd.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Windows Command Processor", WINOS, MS,
     "Cmd.Exe"),
    ("C:\\Windows\\System32\\conhost.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Console Window Host", WINOS, MS,
     "CONHOST.EXE"),
    ("C:\\Windows\\System32\\RuntimeBroker.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Runtime Broker", WINOS, MS,
     "RuntimeBroker.exe"),
    ("C:\\Windows\\explorer.exe", "10.0.19041.4474 (WinBuild.160101.0800)", "Windows Explorer", WINOS, MS,
     "EXPLORER.EXE"),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", "16.0.17928.20216", "Microsoft Outlook",
     "Microsoft Outlook", MS, "Outlook.exe"),
    ("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "16.0.17928.20216", "Microsoft Word",
     "Microsoft Office", MS, "WinWord.exe"),
    ("C:\\Windows\\System32\\taskhostw.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Host Process for Windows Tasks",
     WINOS, MS, "taskhostw.exe"),
    ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "10.0.19041.3636 (WinBuild.160101.0800)", "WMI Provider Host", WINOS,
     MS, "Wmiprvse.exe"),
    ("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MsMpEng.exe", "4.18.24090.11",
     "Antimalware Service Executable", WINOS, MS, "MsMpEng.exe"),
    ("C:\\Windows\\System32\\backgroundTaskHost.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Background Task Host",
     WINOS, MS, "backgroundTaskHost.exe"),
    ("C:\\Windows\\System32\\SearchProtocolHost.exe", "7.0.19041.4355 (WinBuild.160101.0800)",
     "Microsoft Windows Search Protocol Host", "Windows\u00ae Search", MS, "SearchProtocolHost.exe"),
    ("C:\\Windows\\System32\\msiexec.exe", "5.0.19041.4355 (WinBuild.160101.0800)", "Windows\u00ae installer",
     "Windows Installer - Unicode", MS, "msiexec.exe"),
    ("C:\\Program Files\\Git\\mingw64\\bin\\git.exe", "2.47.0.windows.2", "Git for Windows", "Git",
     "The Git Development Community", "git.exe"),
    ("C:\\Windows\\System32\\schtasks.exe", "10.0.19041.4355 (WinBuild.160101.0800)",
     "Task Scheduler Configuration Tool", WINOS, MS, "schtasks.exe"),
    ("C:\\Windows\\System32\\sc.exe", "10.0.19041.4355 (WinBuild.160101.0800)",
     "Service Control Manager Configuration Tool", WINOS, MS, "sc.exe"),
    ("C:\\Windows\\System32\\reg.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Registry Console Tool", WINOS, MS,
     "reg.exe"),
    ("C:\\Windows\\System32\\net1.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Net Command", WINOS, MS, "net1.exe"),
    ("C:\\Program Files\\Microsoft VS Code\\Code.exe", "1.95.1", "Visual Studio Code", "Visual Studio Code", MS,
     "electron.exe"),
    ("C:\\Windows\\System32\\gpupdate.exe", "10.0.19041.4355 (WinBuild.160101.0800)",
     "Microsoft\u00ae Windows\u00ae GPUpdate Utility", WINOS, MS, "GPUpdate.exe"),
    ("C:\\Windows\\System32\\wuauclt.exe", "10.0.19041.4355 (WinBuild.160101.0800)", "Windows Update", WINOS, MS,
     "wuauclt.exe"),
]
P_SVCHOST, P_CHROME, P_EDGE, P_POWERSHELL, P_CMD, P_CONHOST = 0, 1, 2, 3, 4, 5
P_EXPLORER, P_OUTLOOK, P_WORD, P_WMI, P_DEFENDER = 7, 8, 9, 11, 12
# Browsers and Electron apps start far more processes than anything else.
SPAWNED = list(range(len(PROGRAMS))) + [P_CHROME] * 8 + [P_EDGE] * 6 + [21] * 2

SERVICES = ["netsvcs -p -s Schedule", "netsvcs -p -s gpsvc", "LocalServiceNetworkRestricted -p -s EventLog",
            "NetworkService -p -s Dnscache", "LocalSystemNetworkRestricted -p -s SysMain", "netsvcs -p -s BITS",
            "UnistackSvcGroup -s CDPUserSvc", "wusvcs -p -s WaaSMedicSvc", "DcomLaunch -p", "RPCSS -p",
            "LocalService -p -s nsi", "NetworkService -p -s WinRM", "appmodel -p -s StateRepository"]
TASKS = ["\\Microsoft\\Windows\\UpdateOrchestrator\\Schedule Scan", "\\Microsoft\\Windows\\Defrag\\ScheduledDefrag",
         "\\Microsoft\\Office\\Office Automatic Updates 2.0", "\\GoogleUpdateTaskMachineUA",
         "\\Microsoft\\Windows\\Windows Defender\\Windows Defender Scheduled Scan"]
BENIGN_PS_FILES = ["C:\\ProgramData\\IT\\inventory.ps1", "C:\\ProgramData\\IT\\Sync-Printers.ps1",
                   "\\\\corp.example\\NETLOGON\\logon.ps1", "C:\\Program Files\\Monitoring\\agent\\health.ps1",
                   "C:\\ProgramData\\IT\\Clear-TempFiles.ps1"]


def command_line(rng: random.Random, program: int, user: str) -> str:
    path = PROGRAMS[program][0]
    if program == P_SVCHOST:
        return f"C:\\Windows\\system32\\svchost.exe -k {rng.choice(SERVICES)}"
    if program in (P_CHROME, P_EDGE):
        kind = rng.choice(["renderer", "gpu-process", "utility", "renderer", "renderer"])
        extra = (f"--extension-process --renderer-client-id={rng.randrange(5, 400)} "
                 f"--launch-time-ticks={rng.randrange(10**9, 10**11)} "
                 f"--time-ticks-at-unix-epoch=-{rng.randrange(10**15, 10**16)} --enable-main-frame-before-activation "
                 f"--lang=en-US --num-raster-threads=4 --enable-zero-copy --device-scale-factor=1 "
                 f"--enable-features=msEdgeFluentOverlayScrollbar,msOverlayScrollbarWinStyle:scrollbar_mode/full_mode,"
                 f"PartitionedCookies,ThirdPartyStoragePartitioning --disable-features=CalculateNativeWinOcclusion,"
                 f"WinUseBrowserSpellChecker --enable-blink-features=PrefersColorSchemeClientHintHeader "
                 if kind == "renderer" else
                 "--utility-sub-type=network.mojom.NetworkService --lang=en-US --service-sandbox-type=none "
                 if kind == "utility" else
                 "--gpu-preferences=UAAAAAAAAADgAAAEAAAAAAAAAAAAAAAAAABgAAEAAAAAAAAAAAAAAAAAAAACAAAAAAAAAAAAAAAAAAAAAA"
                 "AAAAAAAAAAAAAAA== "
                 f"--gpu-vendor-id=0x{rng.randrange(4096, 65535):04x} "
                 f"--gpu-device-id=0x{rng.randrange(4096, 65535):04x} ")
        return (f"\"{path}\" --type={kind} {extra}--field-trial-handle={rng.randrange(1000, 9999)},i,"
                f"{rng.getrandbits(63)},{rng.getrandbits(63)},262144 "
                f"--variations-seed-version=20241101-{rng.randrange(100000, 999999)}.{rng.randrange(10, 99)} "
                f"--mojo-platform-channel-handle={rng.randrange(1000, 9999)} /prefetch:{rng.randrange(1, 9)}")
    if program == P_POWERSHELL:
        return rng.choice([
            f"\"{path}\" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"{rng.choice(BENIGN_PS_FILES)}\"",
            "powershell.exe -ExecutionPolicy Restricted -Command Write-Host 'Final result: 1';",
            f"\"{path}\" -NoLogo -NoProfile -Command \"Get-CimInstance Win32_LogicalDisk | Select-Object "
            "DeviceID,FreeSpace | ConvertTo-Json -Compress\"",
            f"\"{path}\"",
        ])
    if program == P_CMD:
        return rng.choice([
            "C:\\Windows\\system32\\cmd.exe /c \"C:\\ProgramData\\IT\\logon.cmd\"",
            f"\"C:\\Windows\\system32\\cmd.exe\" /c ipconfig /all > C:\\Users\\{user}\\AppData\\Local\\Temp\\"
            f"net{rng.randrange(1000, 9999)}.txt",
            "C:\\Windows\\system32\\cmd.exe /d /c \"C:\\Program Files\\Git\\cmd\\git.exe\" fetch --all --prune",
        ])
    if program == P_CONHOST:
        return "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1"
    if program == P_OUTLOOK:
        return f"\"{path}\" /recycle"
    if program == P_WORD:
        return (f"\"{path}\" /n \"C:\\Users\\{user}\\OneDrive - Corp Example\\Documents\\"
                f"{rng.choice(['Q4 planning', 'Budget 2027', 'Minutes', 'Onboarding checklist'])}.docx\" /o \"\"")
    if program == P_DEFENDER:
        return f"\"{path}\""
    if program == 17:
        return f"schtasks.exe /run /tn \"{rng.choice(TASKS)}\""
    if program == 18:
        return f"sc.exe query {rng.choice(['WinRM', 'Spooler', 'wuauserv', 'BITS', 'Sysmon64'])}"
    if program == 19:
        return ("reg.exe query \"HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\" "
                f"/v {rng.choice(['ProductName', 'CurrentBuild', 'UBR'])}")
    if program == 20:
        return f"C:\\Windows\\system32\\net1 user {user} /domain"
    if program == 16:
        return f"\"{path}\" " + rng.choice(['fetch origin --quiet', 'status --porcelain=v2 -z', 'log -n 20 --format=%H',
                                            'rev-parse HEAD'])
    if program == 21:
        return (f"\"{path}\" --type=renderer --user-data-dir=\"C:\\Users\\{user}\\AppData\\Roaming\\Code\" "
                "--standard-schemes=vscode-webview,vscode-file --enable-sandbox --lang=en-US "
                f"--js-flags=--nodecommit_pooled_pages --renderer-client-id={rng.randrange(5, 99)} "
                f"--launch-time-ticks={rng.randrange(10**9, 10**11)} "
                f"--mojo-platform-channel-handle={rng.randrange(1000, 9999)} /prefetch:1")
    return f"\"{path}\""


DLLS = [
    ("C:\\Windows\\System32\\ntdll.dll", "NT Layer DLL"),
    ("C:\\Windows\\System32\\kernel32.dll", "Windows NT BASE API Client DLL"),
    ("C:\\Windows\\System32\\KernelBase.dll", "Windows NT BASE API Client DLL"),
    ("C:\\Windows\\System32\\user32.dll", "Multi-User Windows USER API Client DLL"),
    ("C:\\Windows\\System32\\advapi32.dll", "Advanced Windows 32 Base API"),
    ("C:\\Windows\\System32\\combase.dll", "Microsoft COM for Windows"),
    ("C:\\Windows\\System32\\ole32.dll", "Microsoft OLE for Windows"),
    ("C:\\Windows\\System32\\oleaut32.dll", "OLEAUT32.DLL"),
    ("C:\\Windows\\System32\\rpcrt4.dll", "Remote Procedure Call Runtime"),
    ("C:\\Windows\\System32\\sechost.dll", "Host for SCM/SDDL/LSA Lookup APIs"),
    ("C:\\Windows\\System32\\bcrypt.dll", "Windows Cryptographic Primitives Library"),
    ("C:\\Windows\\System32\\crypt32.dll", "Crypto API32"),
    ("C:\\Windows\\System32\\wintrust.dll", "Microsoft Trust Verification APIs"),
    ("C:\\Windows\\System32\\ws2_32.dll", "Windows Socket 2.0 32-Bit DLL"),
    ("C:\\Windows\\System32\\winhttp.dll", "Windows HTTP Services"),
    ("C:\\Windows\\System32\\wininet.dll", "Internet Extensions for Win32"),
    ("C:\\Windows\\System32\\amsi.dll", "Anti-Malware Scan Interface"),
    ("C:\\Windows\\System32\\dnsapi.dll", "DNS Client API DLL"),
    ("C:\\Windows\\System32\\IPHLPAPI.DLL", "IP Helper API"),
    ("C:\\Windows\\System32\\netapi32.dll", "Net Win32 API DLL"),
    ("C:\\Windows\\System32\\uxtheme.dll", "Microsoft UxTheme Library"),
    ("C:\\Windows\\System32\\version.dll", "Version Checking and File Installation Libraries"),
    ("C:\\Windows\\System32\\shell32.dll", "Windows Shell Common Dll"),
    ("C:\\Windows\\System32\\windows.storage.dll", "Microsoft WinRT Storage API"),
    ("C:\\Windows\\System32\\ucrtbase.dll", "Microsoft\u00ae C Runtime Library"),
    ("C:\\Windows\\System32\\profapi.dll", "User Profile Basic API"),
    ("C:\\Windows\\System32\\userenv.dll", "Userenv"), ("C:\\Windows\\System32\\wldp.dll", "Windows Lockdown Policy"),
    ("C:\\Windows\\System32\\ncrypt.dll", "Windows NCrypt Router"),
    ("C:\\Windows\\System32\\schannel.dll", "TLS / SSL Security Provider"),
    ("C:\\Windows\\System32\\mswsock.dll", "Microsoft Windows Sockets 2.0 Service Provider"),
    ("C:\\Windows\\System32\\dbghelp.dll", "Windows Image Helper"),
    ("C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\clr.dll",
     "Microsoft .NET Runtime Common Language Runtime - WorkStation"),
    ("C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\mscoreei.dll", "Microsoft .NET Runtime Execution Engine"),
    ("C:\\Windows\\assembly\\NativeImages_v4.0.30319_64\\System.Manaa57fc8cc#\\5d2e30a4bde8a8b0f8e6f5b9b2f7c6a1\\"
     "System.Management.Automation.ni.dll", "System.Management.Automation"),
    ("C:\\Windows\\assembly\\NativeImages_v4.0.30319_64\\Microsoft.Pb378ec07#\\3c1f0e6d9a2b7c4e5f60718293a4b5c6\\"
     "Microsoft.PowerShell.Commands.Management.ni.dll", "Microsoft.PowerShell.Commands.Management"),
    ("C:\\Windows\\assembly\\NativeImages_v4.0.30319_64\\System.Core\\8e2d4a61c0b93f7d15e4a2b6c8d0f1e3\\"
     "System.Core.ni.dll", ".NET Framework"),
    ("C:\\Windows\\WinSxS\\amd64_microsoft.windows.common-controls_6595b64144ccf1df_6.0.19041.4355_none_"
     "60b8b5d1bcd3e1b3\\comctl32.dll", "User Experience Controls Library"),
]

DESTINATIONS = [("10.20.0.10", "dc01.corp.example", 389, "ldap"), ("10.20.0.11", "dc02.corp.example", 88, "kerberos"),
                ("10.20.0.10", "dc01.corp.example", 445, "microsoft-ds"),
                ("10.20.5.40", "fs01.corp.example", 445, "microsoft-ds"),
                ("13.107.42.14", "-", 443, "https"), ("20.190.160.20", "login.microsoftonline.com", 443, "https"),
                ("142.250.185.78", "-", 443, "https"), ("52.113.194.132", "-", 443, "https"),
                ("10.20.7.15", "proxy01.corp.example", 8080, "http-alt"),
                ("10.20.0.12", "dc03.corp.example", 135, "epmap"),
                ("10.20.9.30", "wsus01.corp.example", 8530, "-"),
                ("10.20.9.44", "siem-collector.corp.example", 5986, "-")]
DNS = [("www.google.com", "::ffff:142.250.185.68;"),
       ("login.microsoftonline.com", "type:  5 login.mso.msidentity.com;::ffff:20.190.160.20;"),
       ("outlook.office365.com", "type:  5 outlook.ha.office365.com;::ffff:52.97.146.178;::ffff:40.99.150.50;"),
       ("wsus01.corp.example", "::ffff:10.20.9.30;"), ("dc01.corp.example", "::ffff:10.20.0.10;"),
       ("settings-win.data.microsoft.com", "type:  5 atm-settingsfe-prod-geo2.trafficmanager.net;::ffff:20.42.73.29;"),
       ("github.com", "::ffff:140.82.121.4;"), ("update.googleapis.com", "::ffff:142.250.186.99;")]
REGISTRY = ["HKLM\\System\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\{sid}\\\\Device\\HarddiskVolume3\\"
            "Windows\\System32\\{exe}",
            "HKU\\{sid}\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Explorer\\UserAssist\\"
            "{{CEBFF5CD-ACE2-4F4F-9178-9926F41749EA}}\\Count\\{rot}",
            "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates\\SignaturesLastUpdated",
            "HKU\\{sid}\\SOFTWARE\\Microsoft\\Office\\16.0\\Common\\Roaming\\Identities\\"
            "{hexid}_ADAL\\LastSwitchedTime",
            "HKLM\\System\\CurrentControlSet\\Services\\W32Time\\Config\\LastKnownGoodTime",
            "HKU\\{sid}\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Internet "
            "Settings\\Connections\\SavedLegacySettings"]
REG_DETAILS = ["Binary Data", "DWORD (0x00000001)", "DWORD (0x00000000)", "QWORD (0x01db2c4e-0x8a7f3c10)"]
FILE_TARGETS = ["C:\\Users\\{user}\\AppData\\Local\\Temp\\{hex}.tmp", "C:\\Windows\\Prefetch\\{exeu}-{hex8}.pf",
                "C:\\Users\\{user}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Cache\\Cache_Data\\f_{hex6}",
                "C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\IE\\{hex8}\\update[1].json",
                "C:\\ProgramData\\Microsoft\\Windows Defender\\Scans\\History\\Service\\DetectionHistory\\{hex}.bin",
                "C:\\Users\\{user}\\AppData\\Roaming\\Microsoft\\Office\\Recent\\index.dat"]
PIPES = ["\\srvsvc", "\\wkssvc", "\\lsass", "\\ntsvcs", "\\ProtectedPrefix\\LocalService\\FTHPIPE",
         "\\mojo.{n}.{m}.{big}",
         "\\PSHost.{big}.{n}.DefaultAppDomain.powershell", "\\Winsock2\\CatalogChangeListener-{hexs}-0",
         "\\docker_engine"]
CALL_TRACE = ("C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2c13e|"
              "C:\\Windows\\system32\\lsasrv.dll+{a:x}|C:\\Windows\\SYSTEM32\\SspiSrv.dll+11a2|"
              "C:\\Windows\\System32\\RPCRT4.dll+{b:x}|C:\\Windows\\System32\\RPCRT4.dll+6a6b0|"
              "C:\\Windows\\System32\\RPCRT4.dll+3a1f4|C:\\Windows\\System32\\KERNEL32.DLL+17374|"
              "C:\\Windows\\SYSTEM32\\ntdll.dll+4cc91")

RULE_NAMES = [q(x) for x in ["-", "-", "technique_id=T1036,technique_name=Masquerading",
                              "technique_id=T1055,technique_name=Process Injection",
                              "technique_id=T1021.002,technique_name=SMB/Windows Admin Shares",
                              "technique_id=T1112,technique_name=Modify Registry",
                              "technique_id=T1059.001,technique_name=PowerShell",
                              "technique_id=T1047,technique_name=Windows Management Instrumentation",
                              "technique_id=T1574.002,technique_name=DLL Side-Loading"]]

BENIGN_SCRIPTS = [
    "prompt",
    "$global:?",
    "Get-Service -Name WinRM, Spooler | Select-Object Name, Status, StartType",
    "Get-ChildItem -Path $env:TEMP -Recurse -File | Where-Object { $_.LastWriteTime -lt (Get-Date).AddDays(-14) } | "
    "Remove-Item -Force -ErrorAction SilentlyContinue",
    "Import-Module ActiveDirectory\r\nGet-ADUser -Filter 'Enabled -eq $true' -Properties LastLogonDate |\r\n"
    "    Where-Object { $_.LastLogonDate -lt (Get-Date).AddDays(-90) } |\r\n"
    "    Select-Object SamAccountName, LastLogonDate |\r\n    Export-Csv -NoTypeInformation -Path "
    "\\\\fs01\\reports\\stale-users.csv",
    "$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter \"DriveType=3\"\r\nforeach ($d in $disk) {\r\n"
    "    $free = [math]::Round($d.FreeSpace / 1GB, 1)\r\n    if ($free -lt 10) { Write-EventLog -LogName Application "
    "-Source 'IT-Health' -EventId 3001 -Message \"Low disk on $($d.DeviceID): $free GB\" }\r\n}",
    "# Printer mapping for branch offices\r\nparam([string]$Site = $env:COMPUTERNAME.Substring(0, 3))\r\n$map = @{\r\n"
    "    'BER' = '\\\\print01\\BER-2OG-Color'\r\n    'MUC' = '\\\\print01\\MUC-EG-Mono'\r\n"
    "    'HAM' = '\\\\print02\\HAM-1OG-Color'\r\n}\r\nif ($map.ContainsKey($Site)) {\r\n"
    "    Add-Printer -ConnectionName $map[$Site] -ErrorAction SilentlyContinue\r\n"
    "    (New-Object -ComObject WScript.Network).SetDefaultPrinter($map[$Site])\r\n}",
    "function Get-PendingReboot {\r\n    [CmdletBinding()]\r\n    param()\r\n    $keys = @(\r\n"
    "        'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending',\r\n"
    "        'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired'\r\n"
    "    )\r\n    foreach ($k in $keys) { if (Test-Path $k) { return $true } }\r\n"
    "    $pfro = Get-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager' -Name "
    "PendingFileRenameOperations -ErrorAction SilentlyContinue\r\n    return [bool]$pfro\r\n}\r\nGet-PendingReboot",
    "$ErrorActionPreference = 'Stop'\r\n$body = @{ host = $env:COMPUTERNAME; os = (Get-CimInstance "
    "Win32_OperatingSystem).Caption; uptime = ((Get-Date) - (Get-CimInstance "
    "Win32_OperatingSystem).LastBootUpTime).TotalHours } | ConvertTo-Json\r\n"
    "Invoke-RestMethod -Uri 'https://inventory.corp.example/api/v2/checkin' -Method Post -Body $body -ContentType "
    "'application/json' -UseDefaultCredentials",
    "# Docker health probe used by the build agents\r\n$pipe = New-Object IO.Pipes.NamedPipeClientStream('.', "
    "'docker_engine', [IO.Pipes.PipeDirection]::InOut)\r\ntry { $pipe.Connect(2000); 'docker engine reachable' } catch "
    "{ 'docker engine not reachable' } finally { $pipe.Dispose() }",
    "Get-WinEvent -FilterHashtable @{LogName='System'; Level=2; StartTime=(Get-Date).AddHours(-24)} -MaxEvents 50 | "
    "Format-Table TimeCreated, Id, ProviderName -AutoSize",
    "<#\r\n.SYNOPSIS\r\n    Reports machine certificates that expire soon.\r\n.DESCRIPTION\r\n"
    "    Runs daily from the IT maintenance task. Writes one line per certificate that expires\r\n"
    "    within the warning period to the Application log and returns the list for the caller.\r\n#>\r\n"
    "function Get-ExpiringCertificate {\r\n    [CmdletBinding()]\r\n    param(\r\n        [ValidateRange(1, 365)]\r\n"
    "        [int]$Days = 30,\r\n        [string[]]$Store = @('Cert:\\LocalMachine\\My', "
    "'Cert:\\LocalMachine\\WebHosting')\r\n    )\r\n"
    "    $limit = (Get-Date).AddDays($Days)\r\n    $found = foreach ($s in $Store) {\r\n"
    "        if (-not (Test-Path $s)) { continue }\r\n        Get-ChildItem -Path $s | Where-Object { $_.NotAfter -lt "
    "$limit -and $_.NotAfter -gt (Get-Date) } |\r\n"
    "            ForEach-Object {\r\n                [pscustomobject]@{\r\n                    Store      = $s\r\n"
    "                    Subject    = $_.Subject\r\n                    Thumbprint = $_.Thumbprint\r\n"
    "                    NotAfter   = $_.NotAfter\r\n                    DaysLeft   = [int]($_.NotAfter - "
    "(Get-Date)).TotalDays\r\n                }\r\n            }\r\n    }\r\n"
    "    foreach ($c in $found) {\r\n        $msg = '{0} ({1}) expires in {2} days' -f $c.Subject, $c.Thumbprint, "
    "$c.DaysLeft\r\n        Write-EventLog -LogName Application -Source 'IT-Health' -EventId 3010 -EntryType Warning "
    "-Message $msg\r\n    }\r\n    $found\r\n}\r\n"
    "Get-ExpiringCertificate -Days 45 | Sort-Object DaysLeft | Format-Table -AutoSize",
    "#Requires -Version 5.1\r\n# Weekly inventory collected by the IT maintenance task; results go to the reports "
    "share.\r\n"
    "[CmdletBinding()]\r\nparam(\r\n    [string]$ReportRoot = '\\\\fs01.corp.example\\reports\\inventory',\r\n"
    "    [switch]$IncludeUpdates\r\n)\r\n"
    "$ErrorActionPreference = 'Continue'\r\n$computer = $env:COMPUTERNAME\r\n"
    "$os = Get-CimInstance -ClassName Win32_OperatingSystem\r\n$cs = Get-CimInstance -ClassName "
    "Win32_ComputerSystem\r\n$bios = Get-CimInstance -ClassName Win32_BIOS\r\n"
    "$uninstall = @(\r\n    'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*',\r\n"
    "    'HKLM:\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*'\r\n)\r\n"
    "$software = Get-ItemProperty -Path $uninstall -ErrorAction SilentlyContinue |\r\n"
    "    Where-Object { $_.DisplayName -and -not $_.SystemComponent } |\r\n"
    "    Select-Object DisplayName, DisplayVersion, Publisher, InstallDate |\r\n    Sort-Object DisplayName -Unique\r\n"
    "$admins = Get-LocalGroupMember -Group 'Administrators' -ErrorAction SilentlyContinue |\r\n"
    "    Select-Object Name, ObjectClass, PrincipalSource\r\n"
    "$report = [ordered]@{\r\n    computer     = $computer\r\n    collected    = "
    "(Get-Date).ToUniversalTime().ToString('o')\r\n    os           = $os.Caption\r\n"
    "    build        = $os.BuildNumber\r\n    lastBoot     = $os.LastBootUpTime\r\n    model        = $cs.Model\r\n"
    "    manufacturer = $cs.Manufacturer\r\n    serial       = $bios.SerialNumber\r\n"
    "    memoryGB     = [math]::Round($cs.TotalPhysicalMemory / 1GB, 1)\r\n    admins       = @($admins)\r\n"
    "    software     = @($software)\r\n}\r\n"
    "if ($IncludeUpdates) {\r\n    $report.updates = Get-HotFix | Sort-Object InstalledOn -Descending | Select-Object "
    "-First 20 HotFixID, InstalledOn\r\n}\r\n"
    "$target = Join-Path $ReportRoot ('{0}.json' -f $computer)\r\ntry {\r\n"
    "    $report | ConvertTo-Json -Depth 4 | Set-Content -Path $target -Encoding UTF8\r\n} catch {\r\n"
    "    Write-EventLog -LogName Application -Source 'IT-Health' -EventId 3020 -EntryType Error -Message \"Inventory "
    "upload failed: $($_.Exception.Message)\"\r\n}",
    "# Rotate the monitoring agent logs (keeps 7 archives)\r\n$logDir = 'C:\\Program "
    "Files\\Monitoring\\agent\\logs'\r\n$keep = 7\r\n$now = Get-Date -Format 'yyyyMMdd-HHmmss'\r\n"
    "Get-ChildItem -Path $logDir -Filter '*.log' | Where-Object { $_.Length -gt 10MB } | ForEach-Object {\r\n"
    "    $zip = Join-Path $logDir ('{0}-{1}.zip' -f $_.BaseName, $now)\r\n"
    "    Compress-Archive -Path $_.FullName -DestinationPath $zip -CompressionLevel Optimal\r\n"
    "    Clear-Content -Path $_.FullName\r\n}\r\n"
    "Get-ChildItem -Path $logDir -Filter '*.zip' | Sort-Object LastWriteTime -Descending | Select-Object -Skip $keep | "
    "Remove-Item -Force\r\n"
    "$status = [ordered]@{ host = $env:COMPUTERNAME; rotated = $now; archives = (Get-ChildItem -Path $logDir -Filter "
    "'*.zip').Count }\r\n$status | ConvertTo-Json | Set-Content -Path (Join-Path $logDir 'rotation.json') -Encoding "
    "UTF8",
    "Set-StrictMode -Version Latest\r\n$cfg = Get-Content -Raw -Path 'C:\\Program "
    "Files\\Monitoring\\agent\\config.json' | ConvertFrom-Json\r\n$cfg.checks | ForEach-Object {\r\n"
    "    $result = & $_.command 2>&1\r\n    [pscustomobject]@{ check = $_.name; ok = ($LASTEXITCODE -eq 0); output = "
    "($result | Out-String).Trim() }\r\n} | ConvertTo-Json -Depth 4 | Set-Content -Path 'C:\\Program "
    "Files\\Monitoring\\agent\\last.json'",
]
BENIGN_COMMANDS = [("Get-Service", "Name", "WinRM"), ("Get-ChildItem", "Path", "C:\\ProgramData\\IT"),
                   ("Test-Path", "Path", "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\PowerShell"),
                   ("Get-CimInstance", "ClassName", "Win32_OperatingSystem"), ("Out-Default", "InputObject", "True"),
                   ("Import-Module", "Name", "ActiveDirectory"), ("Get-ItemProperty", "Path", "HKCU:\\Environment"),
                   ("Invoke-RestMethod", "Uri", "https://inventory.corp.example/api/v2/checkin")]


# --------------------------------------------------------------------------- scenario texts


def server_script(pipe: str, type_name: str) -> str:
    return (
        "function Start-RelayListener {\r\n"
        f"    param([string]$PipeName = '{pipe}', [int]$BufferSize = 65536)\r\n"
        "    $rule = New-Object System.IO.Pipes.PipeAccessRule('Everyone', 'ReadWrite', 'Allow')\r\n"
        "    $acl = New-Object System.IO.Pipes.PipeSecurity\r\n"
        "    $acl.AddAccessRule($rule)\r\n"
        f"    $srv = New-Object {type_name}($PipeName, [System.IO.Pipes.PipeDirection]::InOut, 16,\r\n"
        "        [System.IO.Pipes.PipeTransmissionMode]::Byte, [System.IO.Pipes.PipeOptions]::Asynchronous,\r\n"
        "        $BufferSize, $BufferSize, $acl)\r\n"
        "    $srv.WaitForConnection()\r\n"
        "    $rd = New-Object System.IO.StreamReader($srv)\r\n"
        "    $wr = New-Object System.IO.StreamWriter($srv); $wr.AutoFlush = $true\r\n"
        "    while ($srv.IsConnected) {\r\n"
        "        $line = $rd.ReadLine(); if ($null -eq $line) { break }\r\n"
        "        $out = try { Invoke-Expression $line 2>&1 | Out-String } catch { $_.Exception.Message }\r\n"
        "        $wr.WriteLine([Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($out)))\r\n"
        "    }\r\n"
        "    $srv.Dispose()\r\n"
        "}\r\n"
        "Start-RelayListener"
    )


def client_script(server: str, pipe: str, type_name: str) -> str:
    return (
        f"$c = New-Object {type_name}('{server}', '{pipe}', [System.IO.Pipes.PipeDirection]::InOut)\r\n"
        "$c.Connect(10000)\r\n"
        "$w = New-Object System.IO.StreamWriter($c); $w.AutoFlush = $true\r\n"
        "$r = New-Object System.IO.StreamReader($c)\r\n"
        "foreach ($cmd in @('whoami /all', 'Get-ChildItem C:\\Users -Force', 'ipconfig /all')) {\r\n"
        "    $w.WriteLine($cmd); [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($r.ReadLine()))\r\n"
        "}"
    )


def new_object_payload(type_name: str, arguments: str) -> str:
    return (f"CommandInvocation(New-Object): \"New-Object\"\r\n"
            f"ParameterBinding(New-Object): name=\"TypeName\"; value=\"{type_name}\"\r\n"
            f"ParameterBinding(New-Object): name=\"ArgumentList\"; value=\"{arguments}\"")


def vary_case(rng: random.Random, text: str) -> str:
    """Most of the time as Microsoft spells it; sometimes as people type it."""
    roll = rng.random()
    if roll < 0.6:
        return text
    if roll < 0.75:
        return text.lower()
    if roll < 0.85:
        return text.upper()
    if roll < 0.95:
        head, _, tail = text.rpartition(".")
        return head.lower() + "." + tail
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


# --------------------------------------------------------------------------- hosts and plan


class Host:
    __slots__ = ("name", "json", "ip", "user", "sid", "guid_prefix", "sysmon_pid", "counters", "is_server")

    def __init__(self, name: str, ip: str, user: str, sid: str, rng: random.Random, is_server: bool):
        self.name = name
        self.json = q(name)
        self.ip = ip
        self.user = user
        self.sid = sid
        self.guid_prefix = "{%08X-" % rng.getrandbits(32)
        self.sysmon_pid = rng.randrange(1000, 9000, 4)
        self.counters = {"sysmon": rng.randrange(10**5, 10**7), "security": rng.randrange(10**5, 10**8),
                         "psop": rng.randrange(10**3, 10**5), "classic": rng.randrange(10**2, 10**4)}
        self.is_server = is_server


def make_hosts(seed: int) -> tuple:
    rng = random.Random(f"pipeshell-bench-hosts:{seed}")
    users = sorted({f"{rng.choice(FIRST)}.{rng.choice(LAST)}" for _ in range(400)})
    workstations, servers = [], []
    for i in range(1, 721):
        user = rng.choice(users)
        sid = f"{DOMAIN_SID}-{rng.randrange(1100, 60000)}"
        workstations.append(Host(f"WS{i:04d}.corp.example", f"10.{30 + i // 250}.{i % 250}.{rng.randrange(10, 250)}",
                                 user, sid, rng, False))
    roles = ["app", "sql", "web", "fs", "print", "wsus", "build", "citrix", "exch", "dc"]
    for i in range(1, 81):
        role = roles[i % len(roles)]
        name = f"SRV-{role.upper()}{i:02d}.corp.example"
        servers.append(Host(name, f"10.20.{i}.{rng.randrange(10, 250)}", "svc-" + role,
                            f"{DOMAIN_SID}-{rng.randrange(1100, 60000)}", rng, True))
    return workstations, servers


class Scenario:
    def __init__(self, kind: str, events: list, alerts: int):
        self.kind = kind
        self.events = events  # (time, template kind, host, details, meets a rule selection)
        self.alerts = alerts

    @property
    def matching(self) -> int:
        return sum(1 for e in self.events if e[4])


def plan(events: int, seed: int, hosts=None) -> list:
    """The injected scenarios, in time order.  Depends only on (events, seed)."""
    workstations, servers = hosts or make_hosts(seed)
    rng = random.Random(f"pipeshell-bench-plan:{seed}:{events}")
    incidents = max(1, round(events / EVENTS_PER_INCIDENT))
    decoy_kinds = ("lone_server", "two_hosts", "clients_too_late")
    kinds = ["incident"] * incidents + [decoy_kinds[i % 3] for i in range(incidents)]
    rng.shuffle(kinds)
    scenarios = []
    for slot, kind in enumerate(kinds):
        start = START_EPOCH + slot * SLOT_SECONDS + 120.0 + rng.uniform(0.0, 60.0)
        scenarios.append(_scenario(kind, start, rng, workstations, servers))
    return scenarios


def _scenario(kind: str, start: float, rng: random.Random, workstations: list, servers: list) -> Scenario:
    """Events are (time, template kind, host, details, meets a rule selection)."""
    server = rng.choice(servers)
    clients = rng.sample(workstations, 3)
    pipe = rng.choice(["svcctl_diag", "spoolss_relay", "msagent_", "mojo.update.", "TSVCPIPE-"])
    if pipe.endswith(("_", ".", "-")):
        pipe += "%04x" % rng.getrandbits(16)
    server_short = server.name.split(".")[0].lower()
    events = [(start, "ps4104", server, {"text": server_script(pipe, vary_case(rng, SERVER_TYPE))}, True)]

    def client_event(t: float, host: Host):
        form = rng.choice(["ps4103", "ps800", "ps4104"])
        type_name = vary_case(rng, CLIENT_TYPE)
        if form == "ps4104":
            details = {"text": client_script(server_short, pipe, type_name)}
        elif form == "ps4103":
            details = {"payload": new_object_payload(type_name, f"{server_short}, {pipe}, InOut"),
                       "command": "New-Object", "application": "powershell.exe -NoProfile -WindowStyle Hidden"}
        else:
            details = {"first": "$c = New-Object -TypeName $t -ArgumentList $a", "command": "New-Object",
                       "third": new_object_payload(type_name, f"{server_short}, {pipe}")}
        return (t, form, host, details, True)

    if kind == "incident":
        n_clients = 2 if rng.random() < 0.7 else 3
        # Clients within 4.5 minutes of the server; now and then one connects first.
        offsets = sorted(rng.uniform(15.0, 270.0) for _ in range(n_clients))
        if rng.random() < 0.25:
            offsets[0] = -rng.uniform(5.0, 20.0)
        for off, host in zip(offsets, clients):
            events.append(client_event(start + off, host))
        return Scenario(kind, sorted(events, key=lambda e: e[0]), 1)
    if kind == "lone_server":
        # The type name also shows up in process-creation command lines: not fields the rule reads.
        cmd = (f"powershell.exe -NoProfile -Command \"$s = New-Object {vary_case(rng, SERVER_TYPE)}('diag_{pipe}'); "
               "$s.WaitForConnection()\"")
        events.append((start + rng.uniform(20.0, 120.0), "sysmon1", clients[0], {"command_line": cmd}, False))
        events.append((start + rng.uniform(130.0, 240.0), "sec4688", clients[1], {"command_line": cmd}, False))
    elif kind == "two_hosts":
        events.append(client_event(start + rng.uniform(30.0, 150.0), clients[0]))
        # Third host: the client type only in ContextInfo's host application; its Payload is harmless.
        events.append((start + rng.uniform(160.0, 260.0), "ps4103", clients[1],
                       {"payload": "CommandInvocation(Out-Null): \"Out-Null\"", "command": "Out-Null",
                        "application": f"powershell.exe -c \"$p = New-Object {CLIENT_TYPE}('.', '{pipe}')\""},
                       False))
    elif kind == "clients_too_late":
        for host in clients[:2]:
            events.append(client_event(start + rng.uniform(330.0, 400.0), host))
    return Scenario(kind, sorted(events, key=lambda e: e[0]), 0)


def plan_summary(events: int, seed: int) -> dict:
    return plan_summary_from(plan(events, seed), events, seed)


# --------------------------------------------------------------------------- background events


class Generator:
    def __init__(self, events: int, seed: int):
        if events < 100:
            raise ValueError("--events must be at least 100")
        self.events = events
        self.seed = seed
        self.rng = random.Random(f"pipeshell-bench-events:{seed}")
        self.workstations, self.servers = make_hosts(seed)
        self.hosts = self.workstations + self.servers
        self.scenarios = plan(events, seed, (self.workstations, self.servers))
        self._minute_cache = {}
        rng = random.Random(f"pipeshell-bench-vocab:{seed}")
        self.program_hashes = [self._hashes(rng) for _ in PROGRAMS]
        self.dll_hashes = [self._hashes(rng) for _ in DLLS]
        self.programs_json = [tuple(q(x) for x in p) for p in PROGRAMS]
        self.dlls_json = [(q(path), q(desc)) for path, desc in DLLS]
        # weights: (kind, share); tuned for ~1.5 KB per line on average
        mix = [("sysmon1", 22), ("sysmon3", 15), ("sysmon5", 2), ("sysmon7", 18), ("sysmon10", 4), ("sysmon11", 6),
               ("sysmon13", 9), ("sysmon17", 2), ("sysmon22", 5), ("sec4624", 8), ("sec4688", 5),
               ("ps4104", 5), ("ps4103", 2), ("ps800", 0.5)]
        self.kinds = [k for k, _ in mix]
        self.cum_weights = []
        total = 0.0
        for _, w in mix:
            total += w
            self.cum_weights.append(total)
        for text in BENIGN_SCRIPTS + [c[2] for c in BENIGN_COMMANDS]:
            assert not any(n in text.lower() for n in NEEDLES), text
        self.stats = {"events": 0, "bytes": 0, "grep_server_lines": 0}
        self.stats.update(plan_summary_from(self.scenarios, events, seed))

    @staticmethod
    def _hashes(rng: random.Random) -> str:
        return q("SHA1=%040X,MD5=%032X,SHA256=%064X,IMPHASH=%032X" % (
            rng.getrandbits(160), rng.getrandbits(128), rng.getrandbits(256), rng.getrandbits(128)))

    # -- small helpers
    def times(self, t: float) -> tuple:
        """(SystemTime, Sysmon UtcTime) as JSON strings."""
        micros = int(t * 1_000_000)
        seconds, frac = divmod(micros, 1_000_000)
        minute, sec = divmod(seconds, 60)
        prefix = self._minute_cache.get(minute)
        if prefix is None:
            if len(self._minute_cache) > 4096:
                self._minute_cache.clear()
            tm = time.gmtime(minute * 60)
            prefix = self._minute_cache[minute] = (
                "%04d-%02d-%02dT%02d:%02d:" % tm[:5], "%04d-%02d-%02d %02d:%02d:" % tm[:5])
        return (f'"{prefix[0]}{sec:02d}.{frac:06d}0Z"', f'"{prefix[1]}{sec:02d}.{frac // 1000:03d}"')

    def guid(self, host: Host) -> str:
        bits = self.rng.getrandbits(96)
        return '"%s%04X-%04X-%04X-%012X}"' % (host.guid_prefix, bits >> 80, (bits >> 64) & 0xFFFF,
                                              (bits >> 48) & 0xFFFF, bits & 0xFFFFFFFFFFFF)

    def plain_guid(self) -> str:
        bits = self.rng.getrandbits(128)
        h = "%032x" % bits
        return f'"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"'

    def user_of(self, host: Host) -> str:
        if host.is_server or self.rng.random() < 0.35:
            return self.rng.choice(["NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\LOCAL SERVICE",
                                    "NT AUTHORITY\\NETWORK SERVICE"])
        return f"{DOMAIN}\\{host.user}"

    def header(self, kind: str, t: float, host: Host) -> dict:
        rng = self.rng
        channel = CHANNEL_OF[kind]
        host.counters[channel] += 1
        system_time, utc = self.times(t)
        v = {"time": system_time, "UtcTime": utc, "rid": str(host.counters[channel]), "host": host.json}
        if channel == "sysmon":
            v["xpid"] = str(host.sysmon_pid)
            v["xtid"] = str(rng.randrange(1000, 20000, 4))
            v["sec"] = '{"#attributes":{"UserID":"S-1-5-18"}}'
            v["RuleName"] = rng.choice(RULE_NAMES)
        elif channel == "security":
            v["xpid"] = "780"
            v["xtid"] = str(rng.randrange(1000, 20000, 4))
            v["sec"] = "null"
            v["corr"] = '{"#attributes":{"ActivityID":%s}}' % self.plain_guid().upper()
        elif channel == "psop":
            v["xpid"] = str(rng.randrange(1000, 30000, 4))
            v["xtid"] = str(rng.randrange(1000, 30000, 4))
            v["sec"] = '{"#attributes":{"UserID":"%s"}}' % (host.sid if not host.is_server or rng.random() < 0.5
                                                             else "S-1-5-18")
            v["corr"] = '{"#attributes":{"ActivityID":%s}}' % self.plain_guid().upper()
        else:
            v["sec"] = "null"
        return v

    # -- one event per kind
    def sysmon1(self, v: dict, host: Host, details=None) -> None:
        rng = self.rng
        program = P_POWERSHELL if details else rng.choice(SPAWNED)
        parent = rng.choice([P_EXPLORER, P_SVCHOST, P_CMD, P_POWERSHELL, P_CHROME, P_EDGE, P_WMI, 10])
        if program in (P_CHROME, P_EDGE):
            parent = program
        user = self.user_of(host)
        short_user = user.split("\\")[1]
        path, version, desc, product, company, original = self.programs_json[program]
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)), Image=path,
                 FileVersion=version, Description=desc, Product=product, Company=company, OriginalFileName=original,
                 CommandLine=q(details["command_line"] if details else command_line(rng, program, short_user)),
                 CurrentDirectory=q(rng.choice(["C:\\Windows\\system32\\", f"C:\\Users\\{short_user}\\",
                                                  "C:\\Program Files\\Google\\Chrome\\Application\\130.0.6723.92\\"])),
                 User=q(user), LogonGuid=self.guid(host), LogonId="\"0x%X\"" % rng.getrandbits(28),
                 TerminalSessionId=str(rng.choice([0, 1, 1, 2])),
                 IntegrityLevel=q(rng.choice(["Medium", "High", "System", "Medium", "Low"])),
                 Hashes=self.program_hashes[program], ParentProcessGuid=self.guid(host),
                 ParentProcessId=str(rng.randrange(1000, 30000, 4)), ParentImage=self.programs_json[parent][0],
                 ParentCommandLine=q(command_line(rng, parent, short_user)), ParentUser=q(user))

    def sysmon3(self, v: dict, host: Host) -> None:
        rng = self.rng
        program = rng.choice([P_CHROME, P_EDGE, P_SVCHOST, P_OUTLOOK, P_DEFENDER, P_POWERSHELL, 21, 0, 0])
        ip, name, port, port_name = rng.choice(DESTINATIONS)
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)),
                 Image=self.programs_json[program][0], User=q(self.user_of(host)), Protocol='"tcp"',
                 Initiated='"true"', SourceIsIpv6='"false"', SourceIp=q(host.ip), SourceHostname=host.json,
                 SourcePort=q(str(rng.randrange(49152, 65535))), SourcePortName='"-"', DestinationIsIpv6='"false"',
                 DestinationIp=q(ip), DestinationHostname=q(name), DestinationPort=q(str(port)),
                 DestinationPortName=q(port_name))

    def sysmon5(self, v: dict, host: Host) -> None:
        rng = self.rng
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)),
                 Image=self.programs_json[rng.randrange(len(PROGRAMS))][0], User=q(self.user_of(host)))

    def sysmon7(self, v: dict, host: Host) -> None:
        rng = self.rng
        program = rng.randrange(len(PROGRAMS))
        dll = rng.randrange(len(DLLS))
        dll_path, dll_desc = self.dlls_json[dll]
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)),
                 Image=self.programs_json[program][0], ImageLoaded=dll_path,
                 FileVersion='"10.0.19041.4355 (WinBuild.160101.0800)"', Description=dll_desc,
                 Product=q(WINOS), Company=q(MS), OriginalFileName=q(DLLS[dll][0].rsplit("\\", 1)[1]),
                 Hashes=self.dll_hashes[dll], Signed='"true"', Signature='"Microsoft Windows"',
                 SignatureStatus='"Valid"', User=q(self.user_of(host)))

    def sysmon10(self, v: dict, host: Host) -> None:
        rng = self.rng
        v.update(SourceProcessGUID=self.guid(host), SourceProcessId=str(rng.randrange(1000, 30000, 4)),
                 SourceThreadId=str(rng.randrange(1000, 30000, 4)),
                 SourceImage=self.programs_json[rng.choice([P_DEFENDER, P_SVCHOST, P_WMI])][0],
                 TargetProcessGUID=self.guid(host), TargetProcessId=str(rng.randrange(500, 900, 4)),
                 TargetImage='"C:\\\\Windows\\\\system32\\\\lsass.exe"',
                 GrantedAccess=q(rng.choice(["0x1000", "0x1400", "0x101000", "0x1410"])),
                 CallTrace=q(CALL_TRACE.format(a=rng.randrange(0x10000, 0xfffff), b=rng.randrange(0x10000, 0xfffff))),
                 SourceUser='"NT AUTHORITY\\\\SYSTEM"', TargetUser='"NT AUTHORITY\\\\SYSTEM"')

    def sysmon11(self, v: dict, host: Host) -> None:
        rng = self.rng
        program = rng.randrange(len(PROGRAMS))
        user = host.user
        target = rng.choice(FILE_TARGETS).format(user=user, hex="%08x" % rng.getrandbits(32),
                                                 hex8="%08X" % rng.getrandbits(32), hex6="%06x" % rng.getrandbits(24),
                                                 exeu=PROGRAMS[program][5].upper())
        _, utc = self.times(float(START_EPOCH) + rng.uniform(0, 86400.0 * 30))
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)),
                 Image=self.programs_json[program][0], TargetFilename=q(target), CreationUtcTime=utc,
                 User=q(self.user_of(host)))

    def sysmon13(self, v: dict, host: Host) -> None:
        rng = self.rng
        program = rng.randrange(len(PROGRAMS))
        target = rng.choice(REGISTRY).format(sid=host.sid, exe=PROGRAMS[program][5],
                                             rot="HRZR_PGYFRFFVBA", hexid="%032x" % rng.getrandbits(128))
        v.update(EventType='"SetValue"', ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)),
                 Image=self.programs_json[program][0], TargetObject=q(target), Details=q(rng.choice(REG_DETAILS)),
                 User=q(self.user_of(host)))

    def sysmon17(self, v: dict, host: Host) -> None:
        rng = self.rng
        pipe = rng.choice(PIPES).format(n=rng.randrange(1000, 30000), m=rng.randrange(1, 99),
                                        big=rng.getrandbits(60), hexs="%08x" % rng.getrandbits(32))
        v.update(EventType='"CreatePipe"', ProcessGuid=self.guid(host),
                 ProcessId=str(rng.randrange(1000, 30000, 4)), PipeName=q(pipe),
                 Image=self.programs_json[rng.choice([P_CHROME, P_EDGE, P_POWERSHELL, P_SVCHOST])][0],
                 User=q(self.user_of(host)))

    def sysmon22(self, v: dict, host: Host) -> None:
        rng = self.rng
        name, results = rng.choice(DNS)
        v.update(ProcessGuid=self.guid(host), ProcessId=str(rng.randrange(1000, 30000, 4)), QueryName=q(name),
                 QueryStatus='"0"', QueryResults=q(results),
                 Image=self.programs_json[rng.choice([P_CHROME, P_EDGE, P_SVCHOST, P_OUTLOOK])][0],
                 User=q(self.user_of(host)))

    def sec4624(self, v: dict, host: Host) -> None:
        rng = self.rng
        logon_type = rng.choice([3, 3, 3, 2, 5, 10, 11])
        remote = logon_type in (3, 10)
        source = rng.choice(self.workstations) if remote else host
        account = rng.choice([host.user, source.user, host.name.split(".")[0] + "$"])
        v.update(SubjectUserSid='"S-1-5-18"' if not remote else '"S-1-0-0"',
                 SubjectUserName=q(host.name.split(".")[0] + "$") if not remote else '"-"',
                 SubjectDomainName=q(DOMAIN) if not remote else '"-"',
                 SubjectLogonId='"0x3e7"' if not remote else '"0x0"', TargetUserSid=q(source.sid),
                 TargetUserName=q(account), TargetDomainName=q(DOMAIN),
                 TargetLogonId="\"0x%X\"" % rng.getrandbits(30), LogonType=q(str(logon_type)),
                 LogonProcessName='"Kerberos"' if remote else '"User32 "',
                 AuthenticationPackageName='"Kerberos"' if remote else '"Negotiate"',
                 WorkstationName=q(source.name.split(".")[0]) if remote else '"-"',
                 LogonGuid='"{%s}"' % self.plain_guid()[1:-1].upper(),
                 TransmittedServices='"-"', LmPackageName='"-"', KeyLength='"0"',
                 ProcessId='"0x0"' if remote else '"0x%x"' % rng.randrange(0x200, 0x2000),
                 ProcessName='"-"' if remote else '"C:\\\\Windows\\\\System32\\\\svchost.exe"',
                 IpAddress=q(source.ip) if remote else '"127.0.0.1"',
                 IpPort=q(str(rng.randrange(49152, 65535))) if remote else '"0"',
                 ImpersonationLevel='"%%1833"', RestrictedAdminMode='"-"', RemoteCredentialGuard='"-"',
                 TargetOutboundUserName='"-"', TargetOutboundDomainName='"-"', VirtualAccount='"%%1843"',
                 TargetLinkedLogonId='"0x0"', ElevatedToken=rng.choice(['"%%1842"', '"%%1843"']))

    def sec4688(self, v: dict, host: Host, details=None) -> None:
        rng = self.rng
        program = rng.randrange(len(PROGRAMS))
        parent = rng.choice([P_EXPLORER, P_SVCHOST, P_CMD, P_POWERSHELL, 10])
        v.update(SubjectUserSid=q(host.sid), SubjectUserName=q(host.user), SubjectDomainName=q(DOMAIN),
                 SubjectLogonId="\"0x%X\"" % rng.getrandbits(28), NewProcessId='"0x%x"' % rng.randrange(0x200, 0x8000),
                 NewProcessName=self.programs_json[P_POWERSHELL if details else program][0],
                 TokenElevationType=rng.choice(['"%%1936"', '"%%1938"']),
                 ProcessId='"0x%x"' % rng.randrange(0x200, 0x8000),
                 CommandLine=q(details["command_line"] if details else command_line(rng, program, host.user)),
                 TargetUserSid='"S-1-0-0"',
                 TargetUserName='"-"', TargetDomainName='"-"', TargetLogonId='"0x0"',
                 ParentProcessName=self.programs_json[parent][0],
                 MandatoryLabel=rng.choice(['"S-1-16-8192"', '"S-1-16-12288"', '"S-1-16-16384"']))

    def ps4104(self, v: dict, host: Host, details=None) -> None:
        rng = self.rng
        text = details["text"] if details else rng.choice(BENIGN_SCRIPTS)
        v.update(level="5" if details or rng.random() < 0.9 else "3", MessageNumber="1", MessageTotal="1",
                 ScriptBlockText=q(text), ScriptBlockId=self.plain_guid(),
                 Path=q(rng.choice(BENIGN_PS_FILES)) if not details and rng.random() < 0.4 else '""')

    def _context(self, host: Host, command: str, application: str) -> str:
        rng = self.rng
        return (f"        Severity = Informational\r\n        Host Name = ConsoleHost\r\n"
                f"        Host Version = 5.1.19041.4355\r\n        Host ID = {self.plain_guid()[1:-1]}\r\n"
                f"        Host Application = {application}\r\n        Engine Version = 5.1.19041.4355\r\n"
                f"        Runspace ID = {self.plain_guid()[1:-1]}\r\n        Pipeline ID = {rng.randrange(1, 60)}\r\n"
                f"        Command Name = {command}\r\n        Command Type = Cmdlet\r\n        Script Name = \r\n"
                f"        Command Path = \r\n        Sequence Number = {rng.randrange(10, 5000)}\r\n"
                f"        User = {DOMAIN}\\{host.user}\r\n        Connected User = \r\n"
                f"        Shell ID = Microsoft.PowerShell\r\n")

    def ps4103(self, v: dict, host: Host, details=None) -> None:
        rng = self.rng
        if details:
            payload, application, command = details["payload"], details["application"], details["command"]
        else:
            command, name, value = rng.choice(BENIGN_COMMANDS)
            payload = (f"CommandInvocation({command}): \"{command}\"\r\n"
                       f"ParameterBinding({command}): name=\"{name}\"; value=\"{value}\"")
            application = command_line(rng, P_POWERSHELL, host.user)
        v.update(ContextInfo=q(self._context(host, command, application)), UserData='""', Payload=q(payload))

    def ps800(self, v: dict, host: Host, details=None) -> None:
        rng = self.rng
        if details:
            first, third = details["first"], details["third"]
        else:
            command, name, value = rng.choice(BENIGN_COMMANDS)
            first = f"{command} -{name} {value}"
            third = (f"CommandInvocation({command}): \"{command}\"\r\n"
                     f"ParameterBinding({command}): name=\"{name}\"; value=\"{value}\"")
        context = (f"\tDetailSequence=1\r\n\tDetailTotal=1\r\n\r\n\tSequenceNumber={rng.randrange(10, 500)}\r\n\r\n"
                   f"\tUserId={DOMAIN}\\{host.user}\r\n\tHostName=ConsoleHost\r\n\tHostVersion=5.1.19041.4355\r\n"
                   f"\tHostId={self.plain_guid()[1:-1]}\r\n\tHostApplication=powershell.exe -NoProfile\r\n"
                   f"\tEngineVersion=5.1.19041.4355\r\n\tRunspaceId={self.plain_guid()[1:-1]}\r\n"
                   f"\tPipelineId={rng.randrange(1, 60)}\r\n\tScriptName=\r\n\tCommandLine={first}")
        v.update(data1=q(first), data2=q(context), data3=q(third))

    def render(self, kind: str, t: float, host: Host, details=None) -> str:
        v = self.header(kind, t, host)
        if details is None:
            getattr(self, kind)(v, host)
        else:
            getattr(self, kind)(v, host, details)
        return TEMPLATES[kind].render(v)

    # -- the stream
    def lines(self):
        """Yield the N lines (str, no newline)."""
        rng = self.rng
        injected = [e for s in self.scenarios for e in s.events]
        injected.sort(key=lambda e: e[0])
        background = self.events - len(injected)
        if background < 0:
            raise ValueError("too few events for the injected scenarios")
        span = SLOT_SECONDS * len(self.scenarios)
        step = span / max(1, background)
        hosts = self.hosts
        n_hosts = len(hosts)
        kinds = self.kinds
        cum = self.cum_weights
        choose = rng.choices
        nxt = 0
        renderers = {k: getattr(self, k) for k in kinds}
        for i in range(background):
            base = START_EPOCH + i * step
            while nxt < len(injected) and injected[nxt][0] <= base:
                t, kind, host, details, _ = injected[nxt]
                nxt += 1
                line = self.render(kind, t, host, details)
                if NEEDLES[0] in line.lower():
                    self.stats["grep_server_lines"] += 1
                yield line
            kind = choose(kinds, cum_weights=cum)[0]
            # servers log more than workstations
            host = hosts[rng.randrange(n_hosts)] if rng.random() < 0.7 else rng.choice(self.servers)
            t = base + rng.random() * 0.8
            v = self.header(kind, t, host)
            renderers[kind](v, host)
            line = TEMPLATES[kind].format % tuple([v[name] for name in TEMPLATES[kind].names])
            if kind[0] == "p" and NEEDLES[0] in line.lower():
                self.stats["grep_server_lines"] += 1
            yield line
        while nxt < len(injected):
            t, kind, host, details, _ = injected[nxt]
            nxt += 1
            line = self.render(kind, t, host, details)
            if NEEDLES[0] in line.lower():
                self.stats["grep_server_lines"] += 1
            yield line


def plan_summary_from(scenarios: list, events: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "events": events,
        "seed": seed,
        "incidents": sum(1 for s in scenarios if s.kind == "incident"),
        "decoys": sum(1 for s in scenarios if s.kind != "incident"),
        "expected_alerts": sum(s.alerts for s in scenarios),
        "rule_matching_events": sum(s.matching for s in scenarios),
        "injected_events": sum(len(s.events) for s in scenarios),
        "span_seconds": SLOT_SECONDS * len(scenarios),
    }


def source_digest() -> str:
    """Changes whenever this generator changes: part of the cache key in run.py."""
    with open(__file__, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()[:10]


def write(events: int, seed: int, out, batch: int = 2000) -> dict:
    """Write the corpus to a binary file object; return the summary."""
    gen = Generator(events, seed)
    started = time.perf_counter()
    chunk = []
    size = 0
    for line in gen.lines():
        chunk.append(line)
        if len(chunk) >= batch:
            data = ("\n".join(chunk) + "\n").encode("utf-8")
            size += len(data)
            out.write(data)
            chunk.clear()
    if chunk:
        data = ("\n".join(chunk) + "\n").encode("utf-8")
        size += len(data)
        out.write(data)
    out.flush()
    summary = dict(gen.stats)
    summary.update(bytes=size, bytes_per_event=round(size / events, 1), seconds=round(time.perf_counter() - started, 2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000, help="number of lines (default 400000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", default="-", help="file to write, or - for stdout (default)")
    parser.add_argument("--meta", help="also write the summary (expected alerts, sizes) as JSON here")
    parser.add_argument("--plan", action="store_true", help="print the expected counts as JSON and exit")
    parser.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    args = parser.parse_args(argv)
    if args.plan:
        print(json.dumps(plan_summary(args.events, args.seed), indent=2))
        return 0
    try:
        if args.output == "-":
            summary = write(args.events, args.seed, sys.stdout.buffer)
        else:
            directory = os.path.dirname(os.path.abspath(args.output))
            os.makedirs(directory, exist_ok=True)
            partial = f"{args.output}.partial-{os.getpid()}"
            try:
                with open(partial, "wb", buffering=1 << 20) as handle:
                    summary = write(args.events, args.seed, handle)
                os.replace(partial, args.output)
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
    except BrokenPipeError:
        try:
            sys.stdout = None
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass
        return 0
    except ValueError as error:
        parser.error(str(error))
    if args.meta:
        with open(args.meta, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    if not args.quiet:
        sys.stderr.write(
            f"corpus: {summary['events']} events, {summary['bytes'] / 1e6:.1f} MB ({summary['bytes_per_event']:.0f} "
            "B/event), "
            f"seed {args.seed}: {summary['incidents']} PipeShell incidents (expect {summary['expected_alerts']} "
            "alerts), "
            f"{summary['decoys']} decoys, {summary['rule_matching_events']} rule-matching events, "
            f"{summary['grep_server_lines']} lines containing namedpipeserverstream; {summary['seconds']} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
