"""Run the real CLI in a subprocess, as a pipeline would."""

import os
import subprocess
import sys

import ujson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Real Fluent Bit output, captured once (see the README there).
FLUENT_BIT_CAPTURES = os.path.join(REPO, "tests", "fixtures", "fluent-bit")
COMMAND = [sys.executable, "-m", "pipeshell_filter"]


def run_cli(args, data: bytes = b"", timeout=60):
    return subprocess.run(COMMAND + list(args), input=data, capture_output=True, timeout=timeout)


def records(stdout: bytes):
    return [ujson.loads(line) for line in stdout.splitlines() if line.strip()]


def alerts(stdout: bytes):
    return [r for r in records(stdout) if isinstance(r, dict) and r.get("event", {}).get("kind") == "alert"]


def ndjson(events) -> bytes:
    return b"".join(ujson.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


def children(pid: int) -> list:
    """The pids of a process's children (Linux ``/proc``); none when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []
