#!/usr/bin/env python3
"""Many alerts at the end of input with ``--state``: the cost of the pause that keeps the windows.

    python bench/pause.py                          # 10,000 users, each alerting
    python bench/pause.py --users 10000 20000 --compare HEAD~1

With ``--state``, end of input (and SIGTERM) is a pause: the alerts a flush gives go out, while
the windows stay open in the saved state with each alerted episode marked consumed.  A burst of
failed logons (3 per user, from two hosts, inside one minute) leaves every user's episode pending
at the end, so the pause consumes as many episodes as there are users.  Each row runs the filter
with and without ``--state`` on the same file, side by side: the difference is the pause's cost,
which must grow with the number of alerts, not with its square.  ``--compare REF`` also runs the
filter as it was at git ``REF`` in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import FAILED_LOGON_RULE, compare_command, timed_run  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
FILTER = [sys.executable, "-m", "pipeshell_filter"]
RULES = FAILED_LOGON_RULE + """\
---
title: Many failed logons
id: bench-many-failed
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [User]
    timespan: 1m
    condition: {gte: 3}
"""


def write_burst(path: str, users: int) -> None:
    """Three failed logons per user, from two hosts, all within 50 s."""
    with open(path, "w") as out:
        for n in range(3 * users):
            second = 50 * n // (3 * users)
            out.write(json.dumps({"@timestamp": f"2023-11-14T22:13:{second:02d}Z", "EventID": 4625,
                                  "Channel": "Security", "Computer": f"dc{n % 2}", "User": f"u{n // 3}",
                                  "EventRecordID": n}) + "\n")


def run_once(command: list, rules: str, path: str, state: bool) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        extra = ["--state", os.path.join(scratch, "state.json")] if state else []
        return timed_run(command + ["--rule", rules, "--input", path, "--emit", "alerts"] + extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="REF", action="append", default=[])
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rules = os.path.join(OUT, "pause-rules.yml")
    with open(rules, "w") as handle:
        handle.write(RULES)
    versions = [("this", FILTER)] + [(ref, compare_command(ref, OUT)) for ref in args.compare]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.repeat} rounds\n")
    print("| version | alerts | without --state | with --state |")
    print("|---|---|---|---|")
    for users in args.users:
        path = os.path.join(OUT, f"pause-{users}.ndjson")
        write_burst(path, users)
        times = {(label, state): [] for label, _ in versions for state in (False, True)}
        for _ in range(args.repeat):  # round-robin: the versions share each round's machine
            for label, command in versions:
                for state in (False, True):
                    times[label, state].append(run_once(command, rules, path, state))
        for label, _ in versions:
            plain, kept = (sorted(times[label, s])[args.repeat // 2] for s in (False, True))
            print(f"| {label} | {users:,} | {plain:.2f} s | {kept:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
