"""Run the real CLI in a subprocess, as a pipeline would."""

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import termios
import time

import ujson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Real Fluent Bit output, captured once (see the README there).
FLUENT_BIT_CAPTURES = os.path.join(REPO, "tests", "fixtures", "fluent-bit")
COMMAND = [sys.executable, "-m", "pipeshell_filter"]


def run_cli(args, data: bytes = b"", timeout=60):
    return subprocess.run(COMMAND + list(args), input=data, capture_output=True, timeout=timeout)


def run_cli_here(args, data: bytes = b"") -> subprocess.CompletedProcess:
    """``run_cli`` without starting a process (half a second each): the command line's own ``main`` in
    this one, its standard streams files (stdin a file, not a pipe: no live input).  For properties
    that compare what two commands write, many times over; the start-up itself is run_cli's."""
    from pipeshell_filter import cli

    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        stdin.write(data)
        stdin.seek(0)
        saved, on_term = (sys.stdin, sys.stdout, sys.stderr), signal.getsignal(signal.SIGTERM)
        sys.stdin = open(stdin.fileno(), closefd=False)
        sys.stdout, sys.stderr = open(stdout.fileno(), "w", closefd=False), open(stderr.fileno(), "w", closefd=False)
        status = 0
        try:
            cli.main(list(args))
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdin, sys.stdout, sys.stderr = saved
            signal.signal(signal.SIGTERM, on_term)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(args, status, stdout.read(), stderr.read())


def records(stdout: bytes):
    return [ujson.loads(line) for line in stdout.splitlines() if line.strip()]


def alerts(stdout: bytes):
    return [r for r in records(stdout) if isinstance(r, dict) and r.get("event", {}).get("kind") == "alert"]


def ndjson(events) -> bytes:
    return b"".join(ujson.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)


def unread(pipe) -> int:
    """Bytes in ``pipe`` (a child's stdin, or a pipe's file descriptor) not read yet (Linux: FIONREAD)."""
    fd = pipe if isinstance(pipe, int) else pipe.fileno()
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4), "little")


def read_all(pipe, timeout: float = 60) -> None:
    """Until the child has read everything written to ``pipe`` (its stdin): it is up and at work, so
    a time measured from here is not its start-up's (a second or more on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while unread(pipe):
        assert time.monotonic() < deadline, f"{unread(pipe)} bytes still unread after {timeout} s"
        time.sleep(0.01)


def children(pid: int) -> list:
    """The pids of a process's children (Linux ``/proc``); none when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def members(pid: int) -> list:
    """The pids of a ``run`` unit's members: its children but its heir, a fork of the supervisor
    (same command line) that reads the members' stderr if the supervisor dies."""
    def command(of):
        try:
            with open(f"/proc/{of}/cmdline", "rb") as handle:
                return handle.read()
        except OSError:
            return None
    own = command(pid)
    return [child for child in children(pid) if command(child) not in (own, None)]


def filter_file(plans: list, data: bytes, workers: int, engine: str = "auto", **options) -> tuple:
    """(output, diagnostic counts) of a Filter over ``data`` as a regular file, in many small chunks for
    ``workers`` detecting processes (0: one process): what a worker reads must be what one process reads.
    ``options``: the Filter's (``fluentbit_time``...); ``engine``: the prefilter's."""
    import io

    from pipeshell_filter.cli import build_prefilter
    from pipeshell_filter.engine import Engine
    from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
    from pipeshell_filter.io.stream import Diagnostics, Filter, Output

    scanner, index = build_prefilter(plans, engine)
    with tempfile.NamedTemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(data)
        source.flush()
        source.seek(0)
        diagnostics = Diagnostics(io.StringIO())
        stream_filter = Filter(Engine(plans, FieldResolver(builtin_profiles()), 0), Output(sink.fileno()),
                               diagnostics, "all", prefilter=scanner, index=index, clock=lambda: 0, workers=workers,
                               **options)
        stream_filter.parallel_min, stream_filter.parallel_chunk = 0, 4096  # many chunks, however small
        stream_filter.run(source.fileno(), live=False, block_size=1 << 16)
        stream_filter.finish()
        sink.seek(0)
        return sink.read(), dict(diagnostics.counts)
