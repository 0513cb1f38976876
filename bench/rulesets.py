"""Throughput with a rule set loaded: the built-in rule, SigmaHQ's Windows rules, and all of SigmaHQ.

    python bench/rulesets.py --events 20000 --repeat 3

On the bench corpus (``corpus.py``, cached in ``bench/out``), each rule set runs round-robin in
the same rounds, twice per round: once on an empty input (start-up: imports, loading and
compiling the rules, building the literal index) and once on the corpus.  Events/s is the
corpus's events over the difference of the two medians, so loading does not count against the
stream; peak RSS is the filter's own (``wait4``).  The Windows rules run twice: with the
filter's worker processes (two on two cores) and in one process (``--workers 0``), the latter
also without the cache of compiled Hyperscan databases (``io.database_cache``): each run then
compiles its databases, as the first run after a change of rules does.  The cache is one of
this bench (``bench/out/cache``), emptied at its start: the first round fills it.
``--compare DIR`` adds rows for the filter package in DIR (a copy of ``filter/`` as it was),
timed in the same rounds.  SigmaHQ's rules come from ``../shared/sigma/sigmahq``
(``$SIGMAHQ_DIR``).  The issue's goal is 50,000 events/s with every Windows rule loaded, in
one process.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIGMAHQ = os.environ.get("SIGMAHQ_DIR", os.path.join(HERE, "..", "..", "shared", "sigma", "sigmahq"))


def rule_sets() -> dict:
    windows = sorted(glob.glob(os.path.join(SIGMAHQ, "rules*", "windows")))
    every = sorted(glob.glob(os.path.join(SIGMAHQ, "rules*")))
    windows = [arg for path in windows for arg in ("--rule", path)]
    return {"built-in rule": [],
            "SigmaHQ Windows rules": windows,
            "SigmaHQ Windows rules, one process": windows + ["--workers", "0"],  # the measure
            NO_CACHE: windows + ["--workers", "0"],
            "SigmaHQ, every rule": [arg for path in every for arg in ("--rule", path)]}


FILTER = [sys.executable, "-m", "pipeshell_filter"]
NO_CACHE = "SigmaHQ Windows rules, one process, no cache"
CACHE = os.path.join(HERE, "out", "cache")
CACHE_VARIABLE = "PIPESHELL_FILTER_CACHE"


def source_filter(path: str) -> list:
    """The filter whose package sits in ``path`` (a copy of ``filter/``, say as it was before a
    change), run with this Python: timed in the same rounds, since the machine is noisy."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {os.path.abspath(path)!r}); "
            "from pipeshell_filter.launch import main; main()"]


def run(args: list, source: str, command: list = FILTER, cache: str = CACHE) -> tuple:
    """(wall seconds, CPU seconds, peak RSS in MB, stdout lines) of one filter run."""
    with open(source, "rb") as stdin:
        started = time.perf_counter()
        child = subprocess.Popen([*command, "--idle", "0", "--quiet", *args], env={**os.environ, CACHE_VARIABLE: cache},
                                 stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"rulesets: {' '.join(args[:4])}... exited with status {status >> 8}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.count(b"\n")


def rounds(rows: dict, source: str, repeat: int) -> dict:
    """Each row (name -> a function of the input path giving ``run``'s tuple) on an empty input
    (start-up) and on ``source``, round-robin over ``repeat`` rounds, each round starting one row
    further on: name -> lists of start-up and full wall seconds, CPU seconds of the stream and
    of start-up, peak RSS, and the set of output line counts (every round must give the same)."""
    results = {name: {"start": [], "full": [], "cpu": [], "start_cpu": [], "rss": [], "alerts": set()}
               for name in rows}
    for round_number in range(repeat):
        names = list(rows)
        names = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in names:
            start, full = rows[name](os.devnull), rows[name](source)
            found = results[name]
            found["start"].append(start[0])
            found["full"].append(full[0])
            found["cpu"].append(full[1] - start[1])
            found["start_cpu"].append(start[1])
            found["rss"].append(full[2])
            found["alerts"].add(full[3])  # a speed-up may not change them
    return results


def corpus(events: int) -> str:
    path = os.path.join(HERE, "out", f"rulesets-{events}.ndjson")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([sys.executable, os.path.join(HERE, "corpus.py"), "--events", str(events), "--seed", "1",
                        "-o", path], check=True)
    return path


def options_of(doc: str, events: int, compare: str = "") -> argparse.Namespace:
    """The options these side-by-side benches share: ``--events``, ``--repeat`` and ``--compare DIR``
    (a copy of ``filter/`` as it was, timed in the same rounds); the filter starts from cached
    bytecode, as installed."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=events)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="DIR", action="append", default=[],
                        help="also time the filter package in DIR (e.g. a copy of filter/ before a change)" + compare)
    return parser.parse_args()


def main() -> int:
    options = options_of(__doc__, 20_000)
    if not os.path.isdir(SIGMAHQ):
        print(f"rulesets: no SigmaHQ checkout at {SIGMAHQ} (set SIGMAHQ_DIR)", file=sys.stderr)
        return 2
    source = corpus(options.events)
    sets = {name: (args, FILTER) for name, args in rule_sets().items()}
    for path in options.compare:
        label = os.path.basename(os.path.normpath(os.path.dirname(os.path.abspath(path)))) or path
        sets.update({f"{name} @{label}": (args, source_filter(path))
                     for name, (args, command) in list(sets.items()) if command is FILTER and args})
    shutil.rmtree(CACHE, ignore_errors=True)
    results = rounds({name: (lambda path, args=args, command=command, cache="" if name.startswith(NO_CACHE) else CACHE:
                             run(args, path, command, cache))
                      for name, (args, command) in sets.items()}, source, options.repeat)
    print(f"{options.events:,} events, {options.repeat} rounds, load average {os.getloadavg()[0]:.1f}")
    width = max(24, *map(len, results))
    print(f"{'rule set':{width}} {'start-up s':>10} {'stream s':>9} {'events/s':>10} {'CPU ev/s':>9} {'peak MB':>8} "
          f"{'alerts':>7}")
    for name, found in results.items():
        start, full = statistics.median(found["start"]), statistics.median(found["full"])
        stream = max(full - start, 1e-6)
        cpu, start_cpu = max(statistics.median(found["cpu"]), 1e-6), statistics.median(found["start_cpu"])
        alerts = "/".join(f"{count:,}" for count in sorted(found["alerts"]))
        # a stream shorter than a tenth of start-up is within start-up's own spread: no figure
        rate = f"{options.events / stream:10,.0f}" if stream > 0.1 * start else f"{'(< noise)':>10}"
        cpu_rate = f"{options.events / cpu:9,.0f}" if cpu > 0.1 * start_cpu else f"{'(< noise)':>9}"
        print(f"{name:{width}} {start:10.2f} {stream:9.2f} {rate} {cpu_rate} {max(found['rss']):8.0f} {alerts:>7}")
    if any(len(found["alerts"]) > 1 for found in results.values()):
        print("rulesets: the rounds disagree on the alerts (shown a/b)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
