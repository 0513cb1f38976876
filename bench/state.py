#!/usr/bin/env python3
"""A big ``--state``: its restore at start, a snapshot's stall of a live stream, and memory.

    python bench/state.py                         # 100,000 hosts in one window (the state cap)
    python bench/state.py --hosts 20000 --rounds 1 --compare HEAD~1

A flood (``--hosts`` PipeShell client events, each from its own host, in one 5-minute window that
never fires, as ``flood.py``) is run once per version through ``--state FILE``, which leaves the
biggest state a correlation holds (its 100,000 events at the cap, with their identities).  Then,
per round and version, alternating: the filter is started on that state with ``--emit all
--state-interval 1`` on a pipe, a probe line is sent, and once it came back (the state restored)
benign lines go in every 5 ms for ``--stream`` seconds, each timed from its write to its line on
stdout.  The first snapshot is due then, so the slowest line is held back by about as long as a
snapshot takes: that is the stall.  Measured:

* restore: the time ``resume_state`` takes (reading the file and taking the state back), timed
  inside the filter by a wrapper the command line starts it with;
* RSS after restore (``VmRSS`` at the probe's line) and peak RSS of the run (``VmHWM``, the
  snapshot's own memory included);
* stall: the slowest line's latency (the median's beside it);
* stop: from closing stdin to the exit (the pause, and its final snapshot written).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from eventgen import flat_event  # noqa: E402  the test suite's event builder
from run import compare_command  # noqa: E402

OUT = os.path.join(HERE, "out")
# the filter of the source tree SOURCE, with the start-up's restore (``cli.resume_state``) timed on stderr
TIMED = """import sys, time
sys.path.insert(0, {source!r})
import pipeshell_filter.cli as cli
resume = cli.resume_state
def timed(*args):
    started = time.perf_counter()
    try:
        return resume(*args)
    finally:
        sys.stderr.write(f"bench: restore {{time.perf_counter() - started:.6f}}\\n")
cli.resume_state = timed
from pipeshell_filter.launch import main
main()
"""


def timed_filter(source: str) -> list:
    return [sys.executable, "-c", TIMED.format(source=os.path.abspath(source))]


def source_of(ref: str) -> str:
    """The ``filter`` directory of git ``ref``'s tree (``run.compare_command`` makes it)."""
    command = compare_command(ref, OUT)
    return re.search(r"sys.path.insert\(0, '([^']+)'\)", command[-1]).group(1)
OPTIONS = ["--idle", "0", "--lateness", "0"]
RECORD = re.compile(rb'"EventRecordID": (\d+)')


def status(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` memory figure in MB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_flood(path: str, hosts: int) -> None:
    with open(path, "w") as out:
        for i in range(hosts):
            out.write(json.dumps(flat_event(i * 250 / hosts, f"flood-{i:07d}", "client")) + "\n")


def build_state(command: list, flood: str, path: str) -> float:
    """The flood through ``--state path``; its seconds."""
    if os.path.exists(path):
        os.unlink(path)
    started = time.monotonic()
    subprocess.run(command + ["--emit", "alerts", *OPTIONS, "--state-interval", "0", "--state", path,
                              "--input", flood], check=True, capture_output=True)
    return time.monotonic() - started


def live_run(command: list, state: str | None, seconds: float) -> dict:
    """One live run on a pipe (see the module's docstring); without ``state``, only the start."""
    extra = ["--state", state, "--state-interval", "1"] if state else []
    started = time.monotonic()
    process = subprocess.Popen(command + ["--emit", "all", *OPTIONS, *extra], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    arrived, lines = {}, []

    def read():
        for line in process.stdout:
            found = RECORD.search(line)
            if found:
                arrived[int(found.group(1))] = time.monotonic()
                lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    sent = {}

    def send(number: int) -> None:
        sent[number] = time.monotonic()
        process.stdin.write(json.dumps(flat_event(3600 + number / 100, "ws04", "benign", record_id=number))
                            .encode() + b"\n")
        process.stdin.flush()

    send(0)
    while 0 not in arrived and process.poll() is None:
        time.sleep(0.001)
    ready = arrived.get(0, time.monotonic()) - started
    result = {"ready": ready, "rss": status(process.pid, "VmRSS")}
    number, streaming = 1, time.monotonic()
    while state and time.monotonic() - streaming < seconds:
        send(number)
        number += 1
        time.sleep(0.005)
    while state and len(arrived) < number and time.monotonic() - streaming < seconds + 60:
        time.sleep(0.01)
    result["peak"] = status(process.pid, "VmHWM")
    closed = time.monotonic()
    process.stdin.close()
    reader.join()
    process.wait()
    result["stop"] = time.monotonic() - closed
    errors = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"the filter failed: {errors.strip()}")
    found = re.search(r"bench: restore ([0-9.]+)", errors)
    result["restore"] = float(found.group(1)) if found else 0.0
    latencies = sorted(arrived[n] - sent[n] for n in range(1, number) if n in arrived)
    if state and len(latencies) != number - 1:
        raise SystemExit(f"{number - 1 - len(latencies)} of {number - 1} lines never came back")
    if latencies:
        result["median"], result["stall"] = latencies[len(latencies) // 2], latencies[-1]
    return result


def main() -> int:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stream", type=float, default=3.0, help="seconds of benign lines after the restore")
    parser.add_argument("--compare", metavar="REF", action="append", default=[])
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    flood = os.path.join(OUT, f"state-flood-{args.hosts}.ndjson")
    if not os.path.exists(flood):
        write_flood(flood, args.hosts)
    versions = [("this", timed_filter(os.path.join(HERE, "..", "filter")))] + [
        (ref, timed_filter(source_of(ref))) for ref in args.compare]
    built, runs = {}, {label: [] for label, _ in versions}
    for label, command in versions:
        path = os.path.join(OUT, f"state-{label.replace('/', '_')}.json")
        built[label] = (build_state(command, flood, path), path, os.path.getsize(path))
    for r in range(args.rounds):  # round-robin, each round starting with another version
        for label, command in versions[r % len(versions):] + versions[:r % len(versions)]:
            with open(built[label][1], "rb") as saved, open(built[label][1] + ".run", "wb") as copy:
                copy.write(saved.read())  # each run starts from the flood's state, not the last run's
            runs[label].append(live_run(command, built[label][1] + ".run", args.stream))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{args.hosts:,} hosts, medians of {args.rounds} round(s)\n")
    print("| version | flood with --state | state file | restore | RSS after restore | snapshot stall "
          "(median line) | peak RSS | stop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, _ in versions:
        def median(key):
            values = sorted(run[key] for run in runs[label])
            return values[len(values) // 2]
        seconds, _, size = built[label]
        print(f"| {label} | {seconds:.1f} s | {size / 1e6:.1f} MB | {median('restore'):.2f} s | "
              f"{median('rss'):.0f} MB | {median('stall'):.2f} s ({median('median') * 1000:.0f} ms) | "
              f"{median('peak'):.0f} MB | {median('stop'):.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
