"""The full path: throughput when every line is a candidate for the built-in rule.

    python bench/fullpath.py --events 100000 --repeat 3

The prefilter rules out nearly every line of a fleet's stream, so the bench corpus mostly
measures the scan.  Here every line reaches the full path: parsing, field resolution,
routing, the rule's selections, enrichment, correlation.  The stream is the bench corpus
(``corpus.py``) with the client type name, ``System.IO.Pipes.NamedPipeClientStream``, added
to every event's ``System`` object under a key the rule does not read, so every line is a
candidate and the alerts stay the corpus's own.  Rows, timed in the same rounds (the machine
is noisy): the filter as a user runs it (workers on a file), the same in one process
(``--workers 0``), and the bare parse loops over the same lines (``ujson.loads``, and ``msgspec``,
which the filter tries first), the floor of any Python filter that parses.  Events/s leaves
start-up out (the same command on an empty input).
``--compare DIR`` adds the filter package in DIR (a copy of ``filter/``) in one process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rulesets import options_of, rounds, run, source_filter  # noqa: E402

NEEDLE = b'"System":{"PipeShellBench":"System.IO.Pipes.NamedPipeClientStream",'
PARSE_LOOPS = {  # the bare parse loops: ujson, and msgspec, which the filter reads a line with first
    "ujson.loads loop": "import sys, ujson\nfor line in sys.stdin.buffer: ujson.loads(line)\n",
    "msgspec decode loop": "import sys, msgspec\ndecode = msgspec.json.Decoder().decode\n"
                           "for line in sys.stdin.buffer: decode(line)\n"}


def candidates(events: int) -> str:
    """The bench corpus with every line made a candidate (cached in ``bench/out``)."""
    path = os.path.join(HERE, "out", f"fullpath-{events}.ndjson")
    if os.path.exists(path):
        return path
    source = os.path.join(HERE, "out", f"fullpath-{events}.source.ndjson")
    subprocess.run([sys.executable, os.path.join(HERE, "corpus.py"), "--events", str(events), "--seed", "1",
                    "-o", source], check=True)
    with open(source, "rb") as lines, open(path + ".part", "wb") as out:
        for line in lines:
            changed = line.replace(b'"System":{', NEEDLE, 1)
            if changed == line:
                raise SystemExit(f"fullpath: a corpus line without a System object: {line[:80]!r}")
            out.write(changed)
    os.replace(path + ".part", path)
    os.unlink(source)
    return path


def parse_loop(source: str, loop: str) -> tuple:
    """``run``'s tuple for a bare parse loop (its output is not a filter's)."""
    import time
    with open(source, "rb") as stdin:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", loop], stdin=stdin, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit("fullpath: the parse loop failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, 0


def main() -> int:
    options = options_of(__doc__, 100_000, ", one process")
    source = candidates(options.events)
    rows = {"pipeshell-filter (workers)": lambda path: run([], path),
            "pipeshell-filter --workers 0": lambda path: run(["--workers", "0"], path),
            **{name: lambda path, loop=loop: parse_loop(path, loop) for name, loop in PARSE_LOOPS.items()}}
    for path in options.compare:
        label = os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(path)))) or path
        rows[f"--workers 0 @{label}"] = lambda where, command=source_filter(path): run(["--workers", "0"], where,
                                                                                      command)
    found = rounds(rows, source, options.repeat)
    print(f"{options.events:,} events, every line a candidate, {options.repeat} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':34} {'start-up s':>10} {'stream s':>9} {'events/s':>10} {'CPU ev/s':>9} {'alerts':>10}")
    for name, times in found.items():
        start, full = statistics.median(times["start"]), statistics.median(times["full"])
        stream, cpu = max(full - start, 1e-6), max(statistics.median(times["cpu"]), 1e-6)
        lines = "/".join(f"{count:,}" for count in sorted(times["alerts"]))
        rate = f"{options.events / stream:10,.0f}" if stream > 0.1 * start else f"{'(< noise)':>10}"
        print(f"{name:34} {start:10.2f} {stream:9.2f} {rate} {options.events / cpu:9,.0f} {lines:>10}")
    if any(len(times["alerts"]) > 1 for times in found.values()):
        print("fullpath: the rounds disagree on the output (shown a/b)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
