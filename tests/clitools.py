"""Run the real CLI in a subprocess, as a pipeline would."""

import os
import subprocess
import sys

import ujson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shared_fluent_bit() -> str:
    """The captured Fluent Bit output lives in the workspace's shared folder beside the checkout
    (``../shared``); PIPESHELL_SHARED overrides, and parent folders are searched too."""
    candidates = [os.environ.get("PIPESHELL_SHARED", "")]
    folder = REPO
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        candidates.append(os.path.join(folder, "shared"))
    for shared in filter(None, candidates):
        path = os.path.join(shared, "fixtures", "fluent-bit")
        if os.path.isdir(path):
            return path
    return os.path.join(os.path.dirname(REPO), "shared", "fixtures", "fluent-bit")  # the error names this


SHARED_FLUENT_BIT = _shared_fluent_bit()
COMMAND = [sys.executable, "-m", "pipeshell_filter"]


def run_cli(args, data: bytes = b"", timeout=60):
    return subprocess.run(COMMAND + list(args), input=data, capture_output=True, timeout=timeout)


def records(stdout: bytes):
    return [ujson.loads(line) for line in stdout.splitlines() if line.strip()]


def alerts(stdout: bytes):
    return [r for r in records(stdout) if isinstance(r, dict) and r.get("event", {}).get("kind") == "alert"]


def ndjson(events) -> bytes:
    return b"".join(ujson.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)
