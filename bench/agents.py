#!/usr/bin/env python3
"""Many agents: the cost of a heartbeat as the number of agents feeding one correlate stage grows.

    python bench/agents.py                          # 2,000 and 20,000 agents
    python bench/agents.py --agents 2000 20000 100000 --compare HEAD~1

Writes heartbeats (``sigma.heartbeat`` records, the match stage's own) from N distinct agents, each
reporting a few times as its input moves on, into one ``pipeshell-filter --stage correlate`` through a
file, and reports wall time and microseconds per heartbeat per N, side by side in one run.
The fleet's time is the least agent time, worked out after every report that can move it: a cost per
report that grows with the number of agents makes a fleet that starts (or a flood of agent names)
quadratic.  Flat microseconds per heartbeat across the rows is the goal.  ``--compare REF`` also runs
the filter as it was at git ``REF``, in the same rounds (``run.compare_command``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import compare_command, timed_run  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
START = 1_700_000_000 * 10**9
FILTER = [sys.executable, "-m", "pipeshell_filter"]


def write_heartbeats(path: str, agents: int, beats: int) -> int:
    """``beats`` rounds in which every agent reports a time one second on (agents a little apart)."""
    with open(path, "w") as out:
        for beat in range(beats):
            for n in range(agents):
                record = {"type": "sigma.heartbeat", "version": 1, "agent": f"agent-{n:06d}",
                          "time": START + (beat * 60 + n % 50) * 10**9}
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
    return agents * beats


def run_once(command: list, path: str) -> float:
    return timed_run(command + ["--stage", "correlate", "--input", path, "--agent-idle", "600"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument("--beats", type=int, default=3, help="heartbeats per agent")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="REF", action="append", default=[])
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    versions = [("this", FILTER)] + [(ref, compare_command(ref, OUT)) for ref in args.compare]
    rows = []
    for agents in args.agents:
        path = os.path.join(OUT, f"heartbeats-{agents}-{args.beats}.ndjson")
        count = write_heartbeats(path, agents, args.beats)
        times = {label: [] for label, _ in versions}
        for _ in range(args.repeat):  # round-robin: the versions share each round's machine
            for label, command in versions:
                times[label].append(run_once(command, path))
        for label, _ in versions:
            best = sorted(times[label])[len(times[label]) // 2]
            rows.append((label, agents, count, best, best / count * 1e6))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, medians of {args.repeat} rounds\n")
    print("| version | agents | heartbeats | seconds | µs per heartbeat |")
    print("|---|---|---|---|---|")
    for label, agents, count, seconds, per in rows:
        print(f"| {label} | {agents:,} | {count:,} | {seconds:.2f} | {per:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
