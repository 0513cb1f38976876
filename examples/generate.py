#!/usr/bin/env python3
"""Write examples/pipeshell-sample.ndjson: a small, reproducible PowerShell stream.

Ten minutes of ordinary PowerShell activity on five hosts, in the shape the
`evtx` package / evtx_dump / Chainsaw produce, with one PipeShell episode: a
named-pipe server on srv01 (script block 4104) and clients on cli01 (classic
event 800) and cli02 (module logging 4103) within two minutes.  A few events
arrive out of order, as they do through Windows Event Forwarding.

    python3 examples/generate.py > examples/pipeshell-sample.ndjson
"""

import datetime
import json
import random

START = datetime.datetime(2026, 11, 2, 9, 0, 0, tzinfo=datetime.timezone.utc)
HOSTS = ["srv01.corp.example", "cli01.corp.example", "cli02.corp.example", "ws03.corp.example", "ws04.corp.example"]
BENIGN = [
    "Get-ChildItem -Path C:\\Users\\Public -Recurse | Measure-Object",
    "Import-Module ActiveDirectory; Get-ADUser -Filter * | Select-Object -First 5",
    "Get-Service | Where-Object {$_.Status -eq 'Running'}",
    "$env:PSModulePath -split ';'",
    "Test-NetConnection -ComputerName fileserver -Port 445",
]
SERVER = ("$pipe = New-Object System.IO.Pipes.NamedPipeServerStream('pipeshell', "
          "[System.IO.Pipes.PipeDirection]::InOut); $pipe.WaitForConnection()")
CLIENT_PAYLOAD = ('CommandInvocation(New-Object): "New-Object"\r\nParameterBinding(New-Object): name="TypeName"; '
                  'value="System.IO.Pipes.NamedPipeClientStream"\r\nParameterBinding(New-Object): '
                  'name="ArgumentList"; value="srv01.corp.example, pipeshell"')


def system(event_id, host, when, record, channel="Microsoft-Windows-PowerShell/Operational"):
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return {
        "Provider": {"#attributes": {"Name": "Microsoft-Windows-PowerShell",
                                     "Guid": "A0C1853B-5C40-4B15-8766-3CF1C58F985A"}},
        "EventID": event_id, "Version": 1, "Level": 5, "Task": 2, "Opcode": 15, "Keywords": "0x0",
        "TimeCreated": {"#attributes": {"SystemTime": stamp}},
        "EventRecordID": record, "Channel": channel, "Computer": host,
        "Security": {"#attributes": {"UserID": "S-1-5-21-1004336348-1177238915-682003330-1104"}},
    }


def script_block(host, when, record, text):
    return {"Event": {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                      "System": system(4104, host, when, record),
                      "EventData": {"MessageNumber": 1, "MessageTotal": 1, "ScriptBlockText": text,
                                    "ScriptBlockId": f"{record:08x}-6f4a-4c1e-9d3b-6a51c0ffee00", "Path": ""}}}


def module_event(host, when, record, payload):
    return {"Event": {"System": system(4103, host, when, record),
                      "EventData": {"ContextInfo": "        Severity = Informational\r\n"
                                                   "        Host Name = ConsoleHost\r\n"
                                                   f"        Computer = {host}\r\n",
                                    "UserData": "", "Payload": payload}}}


def classic_800(host, when, record, details):
    sys_part = system({"#attributes": {"Qualifiers": "0"}, "#text": "800"}, host, when, record, "Windows PowerShell")
    sys_part["Provider"] = {"#attributes": {"Name": "PowerShell"}}
    return {"Event": {"System": sys_part,
                      "EventData": {"Data": {"#text": [
                          "$c = New-Object System.IO.Pipes.NamedPipeClientStream('srv01', 'pipeshell')",
                          "\tDetailSequence=1\r\n\tDetailTotal=1\r\n\tHostName=ConsoleHost\r\n\tHostVersion=5.1\r\n",
                          details]}, "Binary": None}}}


def main():
    rng = random.Random(20261102)
    events = []
    record = 1000
    for second in range(0, 600, 7):
        record += 1
        host = rng.choice(HOSTS)
        when = START + datetime.timedelta(seconds=second, microseconds=rng.randrange(1_000_000))
        events.append((when, script_block(host, when, record, rng.choice(BENIGN))))
    attack = [
        (START + datetime.timedelta(seconds=201, microseconds=114281), "server"),
        (START + datetime.timedelta(seconds=259, microseconds=500000), "client800"),
        (START + datetime.timedelta(seconds=318, microseconds=250000), "client4103"),
    ]
    for when, kind in attack:
        record += 1
        if kind == "server":
            events.append((when, script_block(HOSTS[0], when, record, SERVER)))
        elif kind == "client800":
            details = ('CommandInvocation(New-Object): "New-Object"\r\nParameterBinding(New-Object): '
                       'name="TypeName"; value="System.IO.Pipes.NamedPipeClientStream"\r\n')
            events.append((when, classic_800(HOSTS[1], when, record, details)))
        else:
            events.append((when, module_event(HOSTS[2], when, record, CLIENT_PAYLOAD)))
    events.sort(key=lambda e: e[0])
    # Forwarding delay: a few events arrive up to 20 s late.
    for i in range(5, len(events) - 3, 17):
        events[i], events[i + 2] = events[i + 2], events[i]
    for _, event in events:
        print(json.dumps(event, separators=(",", ":")))


if __name__ == "__main__":
    main()
