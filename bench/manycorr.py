#!/usr/bin/env python3
"""Many correlations over one rule: the cost of a detection that every correlation takes.

    python bench/manycorr.py                                   # 50 correlations, 5,000 events
    python bench/manycorr.py --correlations 50 200 --events 10000 --compare /tmp/before/filter

N ``event_count`` correlations, grouped by ``User``, all over one failed-logon rule, so each
detection goes through all N.  Two inputs, the same number of events from two hosts, 5 a second:

* ``few users`` (normal operation): 20 users, each 15 or 16 events in any minute; a 1-minute timespan,
  one correlation firing at 16 events, the others (17-19) never: windows slide, little is held, the
  state cap is never reached, and the alerts do not outweigh the correlation;
* ``flood``: every event a new user, a 1-hour timespan that never fires: every correlation holds
  every event until the correlations together reach their cap (``MAX_HELD_TOTAL``), then each drops
  its oldest (``Correlation._share_cap``).

Each row is the real command line (``--lateness 0 --idle 0 --emit alerts``) on a file; milliseconds
per detection and microseconds per detection per correlation, from CPU time (user + system: the
machine is shared, wall time moves more).  ``--compare DIR`` also runs the filter package in DIR (a
copy of ``filter/`` as it was before a change) in the same rounds, and its alerts must be the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import FAILED_LOGON_RULE as BASE_RULE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
FILTER = [sys.executable, "-m", "pipeshell_filter"]
CORRELATION = """\
---
title: Failed logons {n}
id: manycorr-{n}
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [User]
    timespan: {timespan}
    condition: {{gte: {least}}}
"""
SCENARIOS = {"few users": dict(users=20, timespan="1m", least=lambda n: 16 if n == 0 else 17 + n % 3),
             "flood": dict(users=None, timespan="1h", least=lambda n: 1_000_000)}


def write_rules(path: str, correlations: int, scenario: dict) -> None:
    with open(path, "w") as out:
        out.write(BASE_RULE)
        for n in range(correlations):
            out.write(CORRELATION.format(n=n, timespan=scenario["timespan"], least=scenario["least"](n)))


def write_events(path: str, events: int, users) -> None:
    """``events`` failed logons, 5 a second, from two hosts; ``users`` distinct users (None: each new)."""
    with open(path, "w") as out:
        for k in range(events):
            second = k // 5
            out.write(json.dumps({"@timestamp": f"2023-11-14T{second // 3600:02d}:{second // 60 % 60:02d}:"
                                                f"{second % 60:02d}Z",
                                  "EventID": 4625, "Channel": "Security", "Computer": f"dc{k % 2}",
                                  "User": f"u{k % users if users else k}", "EventRecordID": k}) + "\n")


def source_filter(path: str) -> list:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.abspath(path)!r}); "
            "from pipeshell_filter.launch import main; main()"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--correlations", type=int, nargs="+", default=[50])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append")
    parser.add_argument("--compare", metavar="DIR", action="append", default=[],
                        help="also run the filter package in DIR (a copy of filter/ before a change)")
    options = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    versions = [("this", FILTER)] + [(path, source_filter(path)) for path in options.compare]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {options.events:,} events, "
          f"medians of {options.repeat} round(s), load average {os.getloadavg()[0]:.1f}\n")
    print("| scenario | correlations | version | CPU s | ms per detection | µs per detection and correlation "
          "| peak RSS | alerts |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    failed = False
    for name in options.scenario or list(SCENARIOS):
        scenario = SCENARIOS[name]
        events = os.path.join(OUT, f"manycorr-{name.replace(' ', '-')}-{options.events}.ndjson")
        write_events(events, options.events, scenario["users"])
        for correlations in options.correlations:
            rules = os.path.join(OUT, f"manycorr-{name.replace(' ', '-')}-{correlations}.yml")
            write_rules(rules, correlations, scenario)
            found = {label: [] for label, _ in versions}
            for _ in range(options.repeat):  # round-robin: the versions share each round's machine
                for label, command in versions:
                    found[label].append(measure(command, rules, events))
            alerts = {label: {alerts for *_, alerts in rows} for label, rows in found.items()}
            failed = failed or len(set().union(*alerts.values())) > 1
            for label, rows in found.items():
                cpu = statistics.median(row[0] for row in rows)
                rss = max(row[1] for row in rows)
                shown = "/".join(f"{count:,}" for count in sorted(alerts[label]))
                print(f"| {name} | {correlations} | {label} | {cpu:.1f} | {cpu / options.events * 1e3:.2f} | "
                      f"{cpu / options.events / correlations * 1e6:.0f} | {rss:.0f} MB | {shown} |")
    if failed:
        print("manycorr: the versions (or rounds) disagree on the alerts", file=sys.stderr)
        return 1
    return 0


def measure(command: list, rules: str, events: str) -> tuple:
    """(CPU seconds, peak RSS in MB, alert lines) of one run of the real command line."""
    errors = tempfile.TemporaryFile()
    child = subprocess.Popen(command + ["--rule", rules, "--input", events, "--lateness", "0", "--idle", "0",
                                        "--emit", "alerts", "--quiet"],
                             stdout=subprocess.PIPE, stderr=errors)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        errors.seek(0)
        raise SystemExit(f"manycorr: {' '.join(command[:3])}... failed: {errors.read().decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.count(b"\n")


if __name__ == "__main__":
    sys.exit(main())
