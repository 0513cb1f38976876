#!/usr/bin/env python3
"""Benchmark for issue 4, "Throughput near the I/O limit": one command, one table.

    python bench/run.py --events 400000 --repeat 5
    python bench/run.py --events 400000 --repeat 5 --memory --json bench/out/results.json

1. Generates the corpus with bench/corpus.py, cached in bench/out/ (keyed by
   event count, seed and the generator's source).
2. Correctness, outside the timing: each emit mode once with its output read
   back (alert count, matched-event count, and in --emit all that every input
   line comes out, unchanged unless enriched); grep's count and the baseline's
   alert count against what the generator injected.
3. Timing: on the same file, round-robin, ``--repeat`` rounds (each round starts
   one command later, so no command always follows the same one):
   ``cat FILE > /dev/null``, ``grep -F -i -c namedpipeserverstream FILE``, the
   hand-written baseline, and ``pipeshell-filter --emit alerts|matches|all < FILE
   > /dev/null``.  Wall time and the peak RSS of that child alone (wait4 rusage).
4. Prints a Markdown table of medians and one PASS/FAIL line per goal.
5. ``--memory``: the filter on streams piped straight from ``corpus.py -o -``
   (400,000 and 4,000,000 events by default), peak RSS of the filter for each.

Exit status 1 when a correctness check fails; performance goals only report,
unless ``--strict``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The rule the correlation benchmarks count (pause.py, manycorr.py): one per failed logon.
FAILED_LOGON_RULE = """\
title: Failed logon
id: bench-failed-logon
name: failed_logon
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4625
    condition: selection
"""
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import corpus  # noqa: E402  (bench/corpus.py)

MODES = ("alerts", "matches", "all")
ALERT_MARK = b'"kind":"alert"'
SIGMA_MARK = b'"sigma":'
RSS_LIMIT_MB = 64.0
RSS_SAME_TOLERANCE = 0.10  # "the same" at 400k and 4M: within 10 %


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- child processes
#
# A child's ru_maxrss from wait4 is never below the resident size its parent had
# when it forked (Linux carries the old memory's high-water mark across exec).
# So the measured commands are not started by this process, whose size grows
# while it reads outputs back, but by a small launcher started first: a bare
# Python that forks, execs, wait4s and reports.  Its own size is the floor of
# every RSS figure (measured with `true` and printed); anything bigger is the
# child's own peak.

LAUNCHER = r"""
import json, os, sys, time
def fd(path, write):
    if path is None:
        path = os.devnull
    return os.open(path, (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if write else os.O_RDONLY, 0o644)
for job in sys.stdin:
    job = json.loads(job)
    commands = job["pipeline"]
    first_in = fd(job["stdin"], False)
    last_out = fd(job["stdout"], True)
    err = fd(job["stderr"], True)
    pids, stdin = [], first_in
    started = time.perf_counter()
    for i, argv in enumerate(commands):
        if i + 1 < len(commands):
            read_end, stdout = os.pipe()
        else:
            read_end, stdout = None, last_out
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(stdin, 0); os.dup2(stdout, 1); os.dup2(err, 2)
                os.closerange(3, 1 << 16)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        pids.append(pid)
        if stdin != first_in:
            os.close(stdin)
        if stdout != last_out:
            os.close(stdout)
        stdin = read_end
    os.close(first_in); os.close(last_out); os.close(err)
    results = {}
    while len(results) < len(pids):
        pid, status, usage = os.wait4(-1, 0)
        if pid in pids:
            results[pid] = {"exit": os.waitstatus_to_exitcode(status), "rss_kb": usage.ru_maxrss,
                            "seconds": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime}
    sys.stdout.write(json.dumps([results[p] for p in pids]) + "\n")
    sys.stdout.flush()
"""


class Launcher:
    """The small process that starts, times and measures every benchmarked command."""

    def __init__(self):
        # An installed package runs from cached bytecode; PYTHONDONTWRITEBYTECODE (set in some
        # sandboxes) would make every timed run of an editable install compile its sources again.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.proc = subprocess.Popen([sys.executable, "-S", "-I", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.floor_mb = max(self.run([["true"]])[0]["rss_kb"] for _ in range(3)) / 1024

    def submit(self, pipeline: list, stdin: str = None, stdout: str = None, stderr: str = None) -> None:
        job = {"pipeline": pipeline, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def result(self) -> list:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the launcher died")
        return json.loads(line)

    def run(self, pipeline: list, stdin: str = None, stdout: str = None, stderr: str = None) -> list:
        """Run a pipeline of commands to its end: [{exit, rss_kb, seconds}] per command."""
        self.submit(pipeline, stdin, stdout, stderr)
        return self.result()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


class Scan:
    """Counts of one filter output stream, read as it is produced."""

    def __init__(self):
        self.lines = 0
        self.alerts = 0
        self.enriched = 0
        self.other = 0  # neither alert nor enriched
        self.passthrough_mismatch = None  # first input line that --emit all lost or changed

    def take(self, line: bytes) -> str:
        self.lines += 1
        if ALERT_MARK in line:
            self.alerts += 1
            return "alert"
        if SIGMA_MARK in line:
            self.enriched += 1
            return "enriched"
        self.other += 1
        return "other"


def lines_of(stream, block: int = 1 << 20):
    carry = b""
    while True:
        data = stream.read(block)
        if not data:
            break
        parts = (carry + data).split(b"\n")
        carry = parts.pop()
        yield from parts
    if carry:
        yield carry


def scan_output(launcher: Launcher, pipeline: list, stdin: str = None, input_path: str = None) -> tuple:
    """Run a pipeline whose last command is the filter and read its output back through a FIFO.

    Counts alerts and enriched events.  With ``input_path`` (--emit all), also
    checks that the output is the input, line for line, with matched lines
    enriched (the original bytes, then ``,"sigma":{...}}``) and alerts inserted.
    """
    scan = Scan()
    scratch = tempfile.mkdtemp(prefix="pipeshell-bench-")
    fifo, err_path = os.path.join(scratch, "out"), os.path.join(scratch, "err")
    os.mkfifo(fifo)
    try:
        launcher.submit(pipeline, stdin, fifo, err_path)
        source = open(input_path, "rb") if input_path else None
        number = 0
        with open(fifo, "rb") as output:
            for line in lines_of(output):
                kind = scan.take(line)
                if source is None or kind == "alert" or scan.passthrough_mismatch is not None:
                    continue
                original = source.readline().rstrip(b"\n")
                number += 1
                same = line == original if kind == "other" else (
                    original.endswith(b"}") and line.startswith(original[:-1] + b',"sigma":'))
                if not same:
                    scan.passthrough_mismatch = number
        if source is not None:
            if scan.passthrough_mismatch is None and source.readline():
                scan.passthrough_mismatch = number + 1  # input lines missing from the output
            source.close()
        results = launcher.result()
        with open(err_path, "rb") as handle:
            stderr = handle.read().decode("utf-8", "replace").strip()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return scan, results, stderr


# --------------------------------------------------------------------------- setup


def find_filter(explicit: str = None) -> list:
    if explicit:
        return shlex.split(explicit)
    for candidate in (os.path.join(os.path.dirname(sys.executable), "pipeshell-filter"),
                      shutil.which("pipeshell-filter")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return [sys.executable, "-m", "pipeshell_filter"]


def filter_options(filter_cmd: list) -> list:
    """``--idle 0`` when this build of the CLI has the option."""
    try:
        text = subprocess.run(filter_cmd + ["--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--idle", "0"] if "--idle" in text else []


def ensure_corpus(events: int, seed: int, out_dir: str) -> tuple:
    """(path, summary); generated once per (events, seed, generator source)."""
    os.makedirs(out_dir, exist_ok=True)
    stem = f"corpus-{events}-s{seed}"
    path = os.path.join(out_dir, f"{stem}-{corpus.source_digest()}.ndjson")
    meta = path + ".meta.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        for name in os.listdir(out_dir):  # an older generator's corpus of the same key: stale
            if name.startswith(stem + "-") and (name.endswith(".ndjson") or name.endswith(".meta.json")):
                os.unlink(os.path.join(out_dir, name))
        log(f"generating {path} ...")
        subprocess.run([sys.executable, os.path.join(HERE, "corpus.py"), "--events", str(events), "--seed",
                        str(seed), "-o", path, "--meta", meta], check=True)
    else:
        log(f"using cached {path}")
    with open(meta) as handle:
        return path, json.load(handle)


def cpu_model():
    """The CPU's model name (Linux), for the environment line of every benchmark."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        return None


def environment(filter_cmd: list) -> dict:
    def first_line(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    cpu = cpu_model()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
        "filter_uncommitted": bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "filter"],
                                                  capture_output=True, text=True).stdout.strip()),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "grep": first_line(["grep", "--version"]),
        "locale": os.environ.get("LC_ALL") or os.environ.get("LC_CTYPE") or os.environ.get("LANG") or "C",
        "filter": " ".join(filter_cmd),
        "loadavg_at_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- phases


def correctness(launcher: Launcher, path: str, meta: dict, filter_cmd: list, extra: list) -> tuple:
    """Each emit mode once with its output read back; grep and the baseline once."""
    expected = meta["expected_alerts"]
    checks, details = [], {}

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    for mode in MODES:
        log(f"correctness: pipeshell-filter --emit {mode}")
        scan, (run,), stderr = scan_output(launcher, [filter_cmd + ["--emit", mode] + extra], path,
                                           path if mode == "all" else None)
        code, rss, seconds = run["exit"], run["rss_kb"], run["seconds"]
        details[mode] = {"exit": code, "alerts": scan.alerts, "enriched": scan.enriched, "lines": scan.lines,
                         "seconds": round(seconds, 3), "rss_mb": round(rss / 1024, 1), "stderr": stderr[-500:]}
        check(f"emit {mode}: exit status 0", code == 0, f"exit {code}" + (f"; stderr: {stderr[-300:]}" if code else ""))
        check(f"emit {mode}: {expected} alerts", scan.alerts == expected, f"{scan.alerts} alert records")
        if mode == "alerts":
            check("emit alerts: nothing but alerts", scan.lines == scan.alerts, f"{scan.lines} lines")
        else:
            want = meta["rule_matching_events"]
            check(f"emit {mode}: {want} enriched events", scan.enriched == want, f"{scan.enriched} enriched")
        if mode == "all":
            total = meta["events"] + expected
            check(f"emit all: {total} lines (every event + alerts)", scan.lines == total, f"{scan.lines} lines")
            check("emit all: unmatched lines byte for byte, matched ones enriched in place",
                  scan.passthrough_mismatch is None,
                  "ok" if scan.passthrough_mismatch is None
                  else f"first difference at input line {scan.passthrough_mismatch}")
        elif mode == "matches":
            check("emit matches: only enriched events and alerts", scan.other == 0, f"{scan.other} other lines")

    log("correctness: grep and baseline")
    grep = subprocess.run(["grep", "-F", "-i", "-c", "namedpipeserverstream", path], capture_output=True, text=True)
    grep_count = int(grep.stdout.strip() or -1)
    check("grep -c counts the lines the generator wrote with the server type", grep_count == meta["grep_server_lines"],
          f"{grep_count} (generator: {meta['grep_server_lines']})")
    base = subprocess.run([sys.executable, os.path.join(HERE, "baseline.py"), path], capture_output=True, text=True)
    try:
        base_result = json.loads(base.stdout)
    except ValueError:
        base_result = {"alerts": None, "matched": None}
    check(f"baseline: {expected} alerts", base_result["alerts"] == expected, f"{base_result['alerts']} alerts")
    check(f"baseline: {meta['rule_matching_events']} matched events",
          base_result["matched"] == meta["rule_matching_events"], f"{base_result['matched']} matched")
    details["grep"] = grep_count
    details["baseline"] = base_result
    return checks, details


def timed_run(argv: list) -> float:
    """Wall seconds of one run of ``argv``, its output read and dropped; SystemExit when it fails."""
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode(errors='replace').strip()}")
    return seconds


def compare_command(ref: str, out_dir: str) -> list:
    """The filter as it was at git ``ref`` (a worktree under ``out_dir``), run with this Python:
    the same machine and the same run, so that a change is measured side by side."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    tree = os.path.join(out_dir, f"ref-{sha}")
    if not os.path.isdir(tree):
        subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", tree, sha], check=True,
                       capture_output=True)
    source = os.path.join(tree, "filter")
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {source!r}); "
            "from pipeshell_filter.launch import main; main()"]


# The Fluent Bit modes (``--fluent-bit``): ``--emit all`` with what the recipes add, each timed beside plain
# ``--emit all`` (issue 15: at least 80 % of its events/s).
FLUENT_BIT_MODES = {"all wrap": ["--non-json", "wrap"], "all fluentbit-time": ["--fluentbit-time"],
                    "all wrap fluentbit-time": ["--non-json", "wrap", "--fluentbit-time"]}


def timing(launcher: Launcher, path: str, filter_cmd: list, extra: list, repeat: int, modes: tuple,
           compare: tuple = (), fluent_bit: bool = False) -> dict:
    scratch = tempfile.mkdtemp(prefix="pipeshell-bench-")
    commands = [
        ("cat", "cat FILE > /dev/null", ["cat", path], None, None),
        ("grep", "grep -F -i -c namedpipeserverstream FILE", ["grep", "-F", "-i", "-c", "namedpipeserverstream", path],
         None, os.path.join(scratch, "grep.out")),
        ("baseline", "python bench/baseline.py < FILE", [sys.executable, os.path.join(HERE, "baseline.py")], path,
         os.path.join(scratch, "baseline.out")),
    ]
    options = {m: ["--emit", m] for m in modes}
    if fluent_bit:
        options.update({m: ["--emit", "all"] + more for m, more in FLUENT_BIT_MODES.items()})
    commands += [(f"emit {m}", f"pipeshell-filter {' '.join(o + extra)} < FILE > /dev/null",
                  filter_cmd + o + extra, path, None) for m, o in options.items()]
    for label, command in compare:  # an earlier version, in the same rounds
        commands += [(f"{label} emit {m}", f"pipeshell-filter@{label} {' '.join(o)} < FILE > /dev/null",
                      command + o + extra, path, None) for m, o in options.items()]
    # A pipeline hands the filter a pipe, not a file: the same work, fed by a writer on the same cores.
    commands += [
        ("pipe grep", "cat FILE | grep -F -i -c namedpipeserverstream", [["cat", path], commands[1][2][:-1]], None,
         os.path.join(scratch, "pipe-grep.out")),
        ("pipe emit alerts",
         f"cat FILE | pipeshell-filter --emit alerts{' ' + ' '.join(extra) if extra else ''} > /dev/null",
         [["cat", path], filter_cmd + ["--emit", "alerts"] + extra], None, None),
    ] if "alerts" in modes else []
    runs = {name: [] for name, *_ in commands}
    try:
        launcher.run([["cat", path]])  # page cache warm-up
        for round_no in range(repeat):
            shift = round_no % len(commands)
            for name, _, argv, stdin_path, stdout_path in commands[shift:] + commands[:shift]:
                pipeline = argv if isinstance(argv[0], list) else [argv]
                stages = launcher.run(pipeline, stdin_path, stdout_path)
                for stage_argv, stage in zip(pipeline, stages):  # grep -c exits 1 when it counts 0
                    if stage["exit"] != 0 and not (stage_argv[0] == "grep" and stage["exit"] == 1):
                        raise RuntimeError(f"{name}: {stage_argv[0]} exited with status {stage['exit']}")
                # a pipeline's time is until its last stage ends, its CPU all stages', its RSS the last stage's
                result = dict(stages[-1], cpu=sum(stage["cpu"] for stage in stages),
                              seconds=max(stage["seconds"] for stage in stages))
                runs[name].append(result)
                log(f"round {round_no + 1}/{repeat}  {name:<12} {result['seconds']:8.3f} s  "
                    f"(CPU {result['cpu']:7.3f} s)  {result['rss_kb'] / 1024:7.1f} MB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {name: {"command": shown, "seconds": [round(r["seconds"], 4) for r in runs[name]],
                   "median": statistics.median(r["seconds"] for r in runs[name]),
                   "min": min(r["seconds"] for r in runs[name]),
                   "cpu": statistics.median(r["cpu"] for r in runs[name]),
                   "rss_mb": max(r["rss_kb"] for r in runs[name]) / 1024}
            for name, shown, *_ in commands}


def memory_runs(launcher: Launcher, sizes: list, seed: int, filter_cmd: list, extra: list, mode: str) -> list:
    results = []
    for events in sizes:
        expected = corpus.plan_summary(events, seed)["expected_alerts"]
        log(f"memory: corpus.py --events {events} -o - | pipeshell-filter --emit {mode} ...")
        generator = [sys.executable, os.path.join(HERE, "corpus.py"), "--events", str(events), "--seed", str(seed),
                     "-o", "-", "--quiet"]
        scan, (gen, run), stderr = scan_output(launcher, [generator, filter_cmd + ["--emit", mode] + extra])
        code, rss, seconds, gen_code = run["exit"], run["rss_kb"], run["seconds"], gen["exit"]
        cpu = run["cpu"]
        results.append({"events": events, "emit": mode, "rss_mb": round(rss / 1024, 1), "seconds": round(seconds, 1),
                        "cpu": round(cpu, 1),
                        "alerts": scan.alerts, "expected_alerts": expected, "exit": code, "generator_exit": gen_code,
                        "stderr": stderr[-300:]})
        log(f"memory: {events} events: peak RSS {rss / 1024:.1f} MB, {scan.alerts} alerts (expected {expected}), "
            f"{seconds:.1f} s")
    return results


# --------------------------------------------------------------------------- report


def rss_cell(mb: float, floor_mb: float) -> str:
    return f"<= {floor_mb:.1f}" if mb <= floor_mb + 0.3 else f"{mb:.1f}"


def table(results: dict, events: int, size: int, floor_mb: float) -> str:
    grep = results["grep"]["median"]
    base = results["baseline"]["median"]
    rows = ["| command | median s | min s | CPU s | events/s | MB/s | time / grep | speedup vs baseline "
            "| peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        m = r["median"]
        shown = r["command"].replace("|", "\\|")  # a pipe inside a table cell
        rows.append(f"| `{shown}` | {m:.3f} | {r['min']:.3f} | {r['cpu']:.3f} | {events / m:,.0f} | "
                    f"{size / 1e6 / m:,.0f} | "
                    f"{m / grep:.2f} | {base / m:.2f} | {rss_cell(r['rss_mb'], floor_mb)} |")
    return "\n".join(rows)


def goals(results: dict, memory: list) -> list:
    out = []

    def goal(name: str, ok: bool, detail: str) -> None:
        out.append({"goal": name, "ok": bool(ok), "detail": detail})

    med = {name: r["median"] for name, r in results.items()}
    cpu = {name: r["cpu"] for name, r in results.items()}

    def paired(top: str, bottom: str) -> str:
        """top/bottom run by run within each round: the machine's drift over the benchmark
        cancels out, which the ratio of the two medians does not do."""
        ratios = sorted(a / b for a, b in zip(results[top]["seconds"], results[bottom]["seconds"]))
        return f"per round {statistics.median(ratios):.2f}x, from {ratios[0]:.2f}x to {ratios[-1]:.2f}x"

    for mode in ("alerts", "matches"):
        key = f"emit {mode}"
        if key in med:
            goal(f"emit {mode} <= grep -F -i", med[key] <= med["grep"],
                 f"{med[key]:.3f} s vs {med['grep']:.3f} s ({med[key] / med['grep']:.2f}x; "
                 f"{paired(key, 'grep')}; CPU time {cpu[key] / cpu['grep']:.2f}x)")
            goal(f"emit {mode} >= 10x faster than the baseline", med["baseline"] / med[key] >= 10,
                 f"{med['baseline'] / med[key]:.2f}x ({med['baseline']:.3f} s / {med[key]:.3f} s; "
                 f"{paired('baseline', key)}; CPU time {cpu['baseline'] / cpu[key]:.2f}x)")
    if "pipe emit alerts" in med:
        goal("fed by a pipe: emit alerts <= grep -F -i (not an issue goal; both read from cat)",
             med["pipe emit alerts"] <= med["pipe grep"],
             f"{med['pipe emit alerts']:.3f} s vs {med['pipe grep']:.3f} s "
             f"({med['pipe emit alerts'] / med['pipe grep']:.2f}x; CPU time with cat's "
             f"{cpu['pipe emit alerts']:.3f} s vs {cpu['pipe grep']:.3f} s)")
    if "emit all" in med and "emit alerts" in med:
        bound = 1.5 * (med["cat"] + med["emit alerts"])
        cpu_bound = 1.5 * (cpu["cat"] + cpu["emit alerts"])
        goal("emit all <= 1.5 x (cat + emit alerts)", med["emit all"] <= bound,
             f"{med['emit all']:.3f} s vs 1.5 x ({med['cat']:.3f} + {med['emit alerts']:.3f}) = {bound:.3f} s; "
             f"CPU time {cpu['emit all']:.3f} s vs {cpu_bound:.3f} s")
    for mode in FLUENT_BIT_MODES:
        key = f"emit {mode}"
        if key in med and "emit all" in med:
            goal(f"{key}: at least 80 % of emit all's events/s (issue 15)", med[key] <= 1.25 * med["emit all"],
                 f"{med['emit all'] / med[key]:.0%} ({med[key]:.3f} s vs {med['emit all']:.3f} s; "
                 f"{paired(key, 'emit all')}; CPU time {cpu[key] / cpu['emit all']:.2f}x)")
    for name in med:  # rows of an earlier version (--compare): this one must cost no more
        ref, _, mode = name.partition(" emit ")
        if mode and not name.startswith("pipe") and f"emit {mode}" in med:
            key = f"emit {mode}"
            goal(f"emit {mode} no slower than at {ref} (within 5 %)", med[key] <= 1.05 * med[name],
                 f"{med[key]:.3f} s vs {med[name]:.3f} s ({med[key] / med[name]:.2f}x; {paired(key, name)}; "
                 f"CPU time {cpu[key] / cpu[name]:.2f}x)")
    for name, r in results.items():
        if name.startswith(("emit ", "pipe emit ")):
            goal(f"{name}: peak RSS < {RSS_LIMIT_MB:g} MB", r["rss_mb"] < RSS_LIMIT_MB, f"{r['rss_mb']:.1f} MB")
    if memory:
        for m in memory:
            goal(f"streamed {m['events']:,} events: peak RSS < {RSS_LIMIT_MB:g} MB", m["rss_mb"] < RSS_LIMIT_MB,
                 f"{m['rss_mb']:.1f} MB")
        low, high = min(memory, key=lambda m: m["events"]), max(memory, key=lambda m: m["events"])
        if high["events"] > low["events"]:
            goal(f"peak RSS the same at {low['events']:,} and {high['events']:,} events (within "
                 f"{RSS_SAME_TOLERANCE:.0%})", high["rss_mb"] <= low["rss_mb"] * (1 + RSS_SAME_TOLERANCE),
                 f"{low['rss_mb']:.1f} MB vs {high['rss_mb']:.1f} MB")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark pipeshell-filter against cat, grep and a hand-written "
                                                 "baseline.")
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--modes", default=",".join(MODES), help="emit modes to time (default alerts,matches,all)")
    parser.add_argument("--out", default=os.path.join(HERE, "out"), help="corpus cache directory (default bench/out)")
    parser.add_argument("--filter-cmd", help="how to start the filter (default: the pipeshell-filter script of "
                        "this Python's environment)")
    parser.add_argument("--fluent-bit", action="store_true", help="also time --emit all with --non-json wrap, "
                        "--fluentbit-time and both (the Fluent Bit recipes' options)")
    parser.add_argument("--memory", action="store_true", help="also run the streamed memory check")
    parser.add_argument("--memory-events", default="400000,4000000", help="stream sizes for --memory")
    parser.add_argument("--memory-emit", default="alerts", choices=MODES)
    parser.add_argument("--no-timing", action="store_true", help="skip corpus, correctness and timing (with --memory)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON ('-': stdout)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a performance goal fails too")
    parser.add_argument("--compare", metavar="REF", action="append", default=[],
                        help="also time the filter as it was at this git commit, in the same rounds (repeatable)")
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    if any(m not in MODES for m in modes) or args.repeat < 1:
        parser.error("--modes takes alerts,matches,all; --repeat at least 1")

    launcher = Launcher()
    try:
        return report_all(args, modes, launcher)
    finally:
        launcher.close()


def report_all(args, modes: tuple, launcher: Launcher) -> int:
    filter_cmd = find_filter(args.filter_cmd)
    extra = filter_options(filter_cmd)
    report = {"environment": environment(filter_cmd), "filter_extra_args": extra,
              "rss_floor_mb": round(launcher.floor_mb, 1)}
    checks, results, goal_list, memory = [], {}, [], []
    if not args.no_timing:
        path, meta = ensure_corpus(args.events, args.seed, args.out)
        report["corpus"] = {"path": os.path.relpath(path, REPO), **meta}
        checks, details = correctness(launcher, path, meta, filter_cmd, extra)
        report["correctness"] = {"checks": checks, "details": details}
        compare = [(ref, compare_command(ref, args.out)) for ref in args.compare]
        results = timing(launcher, path, filter_cmd, extra, args.repeat, modes, compare, args.fluent_bit)
        report["timing"] = results
    if args.memory:
        sizes = [int(s) for s in args.memory_events.split(",") if s]
        memory = memory_runs(launcher, sizes, args.seed, filter_cmd, extra, args.memory_emit)
        report["memory"] = memory
        for m in memory:
            checks.append({"check": f"streamed {m['events']:,} events, emit {m['emit']}: {m['expected_alerts']} alerts",
                           "ok": m["alerts"] == m["expected_alerts"] and m["exit"] == 0,
                           "detail": f"{m['alerts']} alerts, exit {m['exit']}"})
    goal_list = goals(results, memory)
    report["goals"] = goal_list
    report["environment"]["loadavg_at_end"] = os.getloadavg()

    env = report["environment"]
    dirty = " + uncommitted changes in filter/" if env["filter_uncommitted"] else ""
    print(f"## pipeshell-filter benchmark ({env['date']}, commit {env['commit']}{dirty})\n")
    print(f"{env['cpu']}, {env['cores']} cores, Python {env['python']}, {env['grep']}, locale {env['locale']}, "
          f"load average (1 min) {env['loadavg_at_start'][0]:.2f} at start, {env['loadavg_at_end'][0]:.2f} at end "
          f"(other work on this machine slows the wall times; CPU s is less sensitive to it)")
    print(f"filter: `{env['filter']}` {' '.join(extra)}; peak RSS of each command alone (wait4), never shown "
          f"below the launcher's own {launcher.floor_mb:.1f} MB (a child starts with its parent's size)\n")
    if results:
        c = report["corpus"]
        print(f"Corpus: {c['events']:,} events, {c['bytes'] / 1e6:.0f} MB ({c['bytes_per_event']:.0f} B/event), "
              f"seed {c['seed']}: {c['incidents']} PipeShell incidents, {c['decoys']} decoys, "
              f"{c['rule_matching_events']} rule-matching events (`{c['path']}`).  "
              f"Medians of {args.repeat} interleaved runs.\n")
        print(table(results, c["events"], c["bytes"], launcher.floor_mb))
        print()
    if memory:
        print("| streamed from corpus.py -o - | emit | peak RSS MB | alerts (expected) | filter CPU s | wall s |")
        print("|---:|---|---:|---:|---:|---:|")
        for m in memory:
            print(f"| {m['events']:,} | {m['emit']} | {rss_cell(m['rss_mb'], launcher.floor_mb)} | {m['alerts']} "
                  f"({m['expected_alerts']}) | {m['cpu']:.1f} | {m['seconds']:.1f} |")
        print("\n(wall time of a streamed run is mostly the generator's: it makes ~10-20k events/s)\n")
    if checks:
        print("Correctness:")
        for c in checks:
            print(f"- {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
        print()
    print("Goals (issue 4; issue 15 with --fluent-bit):")
    for g in goal_list:
        print(f"- {'PASS' if g['ok'] else 'FAIL'} {g['goal']}: {g['detail']}")
    if args.json:
        text = json.dumps(report, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as handle:
                handle.write(text + "\n")
    failed_checks = [c for c in checks if not c["ok"]]
    if failed_checks or (args.strict and any(not g["ok"] for g in goal_list)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
