"""Memory under a flood: N distinct hosts in one window, then the window passes.

    python bench/flood.py --hosts 1000000

Writes N PipeShell client events (4104, each from its own host, all inside one
5-minute window, no server: the window can never fire) into the filter through a
pipe, then ten minutes of ordinary events, then one real incident, whose alert
means the flood's window has passed.  Samples the filter's resident memory
(``/proc/PID/status``) while it runs and reports the peak during the flood, the
resident memory at start and once the incident alerted, the alert count (1 expected) and the
largest output line.  ``--rounds R`` sends R such floods an hour apart and reports the resident
memory after each: it must come back to the same size every time, not grow.  ``--ahead S`` dates
the flood S seconds later (``--ahead 3e9``: a century ahead, past the wall clock, so none of it is
believed and it waits, shed at the cap): it must cost no more than the same flood at present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from eventgen import flat_event  # noqa: E402  the test suite's event builder

FILTER = [sys.executable, "-m", "pipeshell_filter", "--emit", "alerts", "--idle", "0", "--lateness", "0"]


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the filter starts from cached bytecode, as installed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="floods one after the other (RSS after each)")
    parser.add_argument("--ahead", type=float, default=0.0, help="seconds the flood is dated ahead of the rest")
    args = parser.parse_args()
    process = subprocess.Popen(FILTER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = {"flood": 0.0, "after": 0.0}
    phase = ["flood"]
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples[phase[0]] = max(samples[phase[0]], rss_mb(process.pid))
            time.sleep(0.05)

    output = []

    def alerted_count():
        return sum(1 for line in output if b'"kind":"alert"' in line)

    def read():
        for line in process.stdout:
            output.append(line)

    reader = threading.Thread(target=read)
    sampler = threading.Thread(target=sample)
    reader.start()
    sampler.start()
    time.sleep(1.0)  # start-up done: the size a run without a flood keeps
    at_start = rss_mb(process.pid)
    started = time.monotonic()
    settled = []
    for r in range(args.rounds):  # each round an hour after the last one
        base = r * 3600
        phase[0] = "flood"
        batch = []
        for i in range(args.hosts):  # all within 250 s: one window
            event = flat_event(base + args.ahead + i * 250 / args.hosts, f"flood{r}-{i:07d}", "client", 4104)
            batch.append(json.dumps(event))
            if len(batch) == 10_000:
                process.stdin.write(("\n".join(batch) + "\n").encode())
                batch = []
        process.stdin.write(("\n".join(batch) + "\n").encode() if batch else b"")
        phase[0] = "after"
        later = [flat_event(base + 900 + s, "ws04", "benign", 4104) for s in range(0, 600, 5)]
        incident = [flat_event(base + 1800, "srv01", "server", 4104), flat_event(base + 1830, "cli01", "client", 800),
                    flat_event(base + 1860, "cli02", "client", 4103), flat_event(base + 2500, "ws04", "benign", 4104)]
        process.stdin.write("".join(json.dumps(e) + "\n" for e in later + incident).encode())
        process.stdin.flush()
        deadline = time.monotonic() + 600
        while alerted_count() <= r and time.monotonic() < deadline:  # this round's incident alerted:
            time.sleep(0.05)                                          # its flood's window has long passed
        time.sleep(0.5)
        settled.append(round(rss_mb(process.pid), 1))
    flood_seconds = time.monotonic() - started
    process.stdin.close()
    reader.join()
    done.set()
    sampler.join()
    process.wait()
    lines = [line.rstrip(b"\n") for line in output]
    result = {
        "hosts": args.hosts,
        "ahead_s": args.ahead,
        "peak_rss_mb_during_flood": round(samples["flood"], 1),
        "rss_mb_at_start": round(at_start, 1),
        "rss_mb_after_window_passed": settled[0] if len(settled) == 1 else settled,
        "alerts": sum(1 for line in lines if b'"kind":"alert"' in line),
        "largest_output_line_bytes": max((len(line) for line in lines), default=0),
        "seconds": round(flood_seconds, 1),
        "stderr": process.stderr.read().decode(errors="replace").strip().splitlines()[-3:],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
