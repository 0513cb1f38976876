#!/usr/bin/env python3
"""Every Fluent Bit recipe on the real Fluent Bit, in one run, one table (issue "Pipelines proven on
the real Fluent Bit").

    python bench/recipes.py                       # ~5 minutes on 2 cores
    python bench/recipes.py --quick               # skip the ~60 s latency run without --early-alerts

Recipes (integrations/fluent-bit/), each run as the tests run it (tests/test_fluentbit_real.py,
tests/test_supervise.py, tests/test_fleet_forward_real.py: their helpers are imported, so output
paths, db and state files are adapted exactly as there, the filter options are the recipe's own):

* replay:  ``cat FILE | pipeshell-filter <ship.yaml's options> | fluent-bit -c ship.yaml``
* exec:    ``fluent-bit -c exec.yaml``, its command ``cat FILE | pipeshell-filter ...`` (``tail -F FILE``
  for the live run)
* chain:   ``pipeshell-filter run --collect "fluent-bit -c collect-tail.yaml" --ship "fluent-bit -c
  ship.yaml" -- <the README unit's options>``, the tail input reading DIR/logs/*.ndjson
* fleet:   ``cat FILE | pipeshell-filter --stage match ... | fluent-bit -c fleet-agent.yaml`` (one agent)
  forwarding to ``fluent-bit -c fleet-aggregator.yaml | pipeshell-filter --stage correlate ... >
  alerts.ndjson`` (the options of the recipe's ``pipeshell-filter run`` unit, as a plain pipe)

1. Delivery (every filtered run): a slice of the bench corpus (--events, 2 incidents per 100,000);
   lines in events.ndjson against input lines, alerts in alerts.ndjson against those
   ``pipeshell-filter --input FILE`` finds (compared by their hosts).
2. Throughput: wall time of the recipe with the filter against the same Fluent Bit pipeline without
   it (the filter's command left out: ``cat FILE | fluent-bit -c ship.yaml``; exec's command
   ``cat FILE``; ``fluent-bit -c collect-tail.yaml | fluent-bit -c ship.yaml``; ``cat FILE | fluent-bit
   -c fleet-agent.yaml``), best of --repeat, both side by side in each round.  End: every process
   exited (replay, exec, fleet agent), or the last line in events.ndjson (chain, whose tail never ends).
3. Latency, live: background corpus lines at --rate lines/s with the current time, then incidents
   (server on A, client on B, after --pause the client on C that completes it); the time from writing
   C's line to its alert appearing in alerts.ndjson (polled every 10 ms), median of --samples.  With
   the recipe's options as written (``--early-alerts`` among them); then the replay recipe once without
   it (the alert waits for --lateness 60 + --idle 2: about a minute; skipped with --quick).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from run import cpu_model  # noqa: E402  (bench/run.py)
import fleet  # noqa: E402  (bench/fleet.py: corpus cache, live events, feeder)
from fleet import Feeder, background, client_event, ensure_corpus, server_event  # noqa: E402
import test_fluentbit_real as fbt  # noqa: E402
import test_fleet_forward_real as fwd  # noqa: E402
import test_supervise as sup  # noqa: E402

from pathlib import Path  # noqa: E402

FLUENT_BIT = os.path.realpath(fbt.FLUENT_BIT)
FILTER = fbt.COMMAND  # python -m pipeshell_filter, as the tests run it
ALERT_MARK = b'"kind":"alert"'
COMMANDS = {}  # label -> the command line, as printed
RECIPES = ("replay", "exec", "chain", "fleet")


def log(message: str) -> None:
    sys.stderr.write(f"recipes: {message}\n")
    sys.stderr.flush()


def shown(argv, tmp) -> str:
    text = argv if isinstance(argv, str) else shlex.join(argv)
    if str(tmp):
        text = text.replace(str(tmp), "$TMP")
    for binary in (fbt.FLUENT_BIT, FLUENT_BIT):
        text = text.replace(binary, "fluent-bit")
    return text.replace(fleet.OUT_DIR, "$OUT").replace(shlex.join(FILTER), "pipeshell-filter") \
        .replace(" ".join(FILTER), "pipeshell-filter")


def note(label, argv, tmp) -> None:
    COMMANDS.setdefault(label, shown(argv, tmp))


# --------------------------------------------------------------------------- processes


class Group:
    """Processes of one run, each in its own session; whatever is left is killed by group."""

    def __init__(self, tmp):
        self.procs = []
        self.err = open(tmp / "stderr.log", "ab")
        self.tmp = tmp

    def start(self, argv, **popen):
        popen.setdefault("stderr", self.err)
        proc = subprocess.Popen(argv, start_new_session=True, **popen)
        self.procs.append(proc)
        return proc

    def stderr(self) -> str:
        self.err.flush()
        return (self.tmp / "stderr.log").read_bytes().decode(errors="replace")[-2000:]

    def kill(self):
        leftovers(self.tmp)
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        self.err.close()


def leftovers(tmp) -> None:
    """SIGKILL to any process whose command line names this run's directory: Fluent Bit's exec input
    starts its command (sh -c "tail -F ... | pipeshell-filter ...") outside Fluent Bit's process group,
    and it outlives a killed Fluent Bit."""
    mark = str(tmp).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if mark in handle.read():
                        os.kill(int(entry), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def pipeline(group, argvs, stdin=subprocess.DEVNULL, last_stdout=subprocess.DEVNULL, env=None):
    """argv | argv | ...: the processes (first stdin and last stdout as given)."""
    procs = []
    for i, argv in enumerate(argvs):
        last = i == len(argvs) - 1
        proc = group.start(argv, stdin=stdin, stdout=last_stdout if last else subprocess.PIPE, env=env)
        if procs:
            procs[-1].stdout.close()  # the next one holds the read end
        procs.append(proc)
        stdin = proc.stdout
    return procs


class Lines:
    """Counts the lines of a growing file incrementally."""

    def __init__(self, path):
        self.path, self.offset, self.count = path, 0, 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                while True:
                    data = handle.read(1 << 22)
                    if not data:
                        break
                    self.count += data.count(b"\n")
                    self.offset += len(data)
        except FileNotFoundError:
            pass
        return self.count


class Arrival(threading.Thread):
    """The moment (perf_counter) a growing file first holds ``expected`` lines, polled every 20 ms."""

    def __init__(self, path, expected):
        super().__init__(daemon=True)
        self.counter, self.expected, self.at = Lines(path), expected, None
        self.done = threading.Event()
        self.start()

    def run(self):
        while not self.done.is_set():
            if self.counter.poll() >= self.expected:
                self.at = time.perf_counter()
                return
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.at


def count_lines(path) -> int:
    return Lines(path).poll()


def alert_hosts(path) -> list:
    if not os.path.exists(path):
        return []
    found = []
    for line in open(path, "rb").read().splitlines():
        if ALERT_MARK in line:
            found.append(tuple(sorted(json.loads(line).get("related", {}).get("hosts", []))))
    return sorted(found)


def wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    return [p.wait(max(0.1, deadline - time.monotonic())) for p in procs]


# --------------------------------------------------------------------------- recipe set-ups


EARLY = "--early-alerts"  # in every recipe as written; ``early=False`` below takes it out


def replay_setup(tmp, live=False, early=True, with_filter=True, state=True):
    config, out = fbt.recipe("ship.yaml", tmp)
    return config, Path(out), fbt.filter_command(tmp, state, early)


def exec_config(tmp, source, with_filter=True, live=False, early=True):
    """exec.yaml as tests/test_fluentbit_real.py adapts it; the command reads ``source``."""
    reader = f"tail -F {shlex.quote(str(source))}" if live else f"cat {shlex.quote(str(source))}"
    return fbt.exec_recipe(tmp, reader, early, with_filter)


def chain_setup(tmp, early=True):
    """tests/test_supervise.py's RealUnit: collect-tail.yaml on tmp/logs/*.ndjson, the README unit's
    filter options (state in tmp), ship.yaml writing tmp/out."""
    real = sup.RealUnit(tmp, lambda path, argv: None)
    assert EARLY in real.argv, real.argv
    if not early:
        real.argv = [a for a in real.argv if a != EARLY]
    return real


def link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def fleet_setup(tmp):
    port = fwd.free_port()
    env = dict(os.environ, PIPESHELL_AGGREGATOR_HOST="127.0.0.1", PIPESHELL_AGGREGATOR_LISTEN="127.0.0.1",
               PIPESHELL_AGGREGATOR_PORT=str(port))
    agent_yaml = fwd.agent_config(tmp, "agent-a")
    # the recipe runs the aggregator as one unit (``pipeshell-filter run --collect 'fluent-bit -c
    # fleet-aggregator.yaml' -- OPTIONS``); here its correlate stage, with those options, reads a pipe
    args = fwd.recipe_command(fwd.AGGREGATOR_RECIPE, r"pipeshell-filter run --collect 'fluent-bit -c "
                              r"fleet-aggregator\.yaml' --\s+([^|>\n]+?)\s*>>")
    args[args.index("--state") + 1] = str(tmp / "correlate.state.json")
    return port, env, agent_yaml, FILTER + args


def start_aggregator(group, tmp, port, env, correlate):
    alerts = open(tmp / "alerts.ndjson", "wb")
    procs = [group.start([FLUENT_BIT, "-c", fwd.AGGREGATOR_RECIPE], env=env, stdout=subprocess.PIPE)]
    procs.append(group.start(correlate, stdin=procs[0].stdout, stdout=alerts))
    procs[0].stdout.close()
    alerts.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            fwd.socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return procs
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the aggregator did not listen: {group.stderr()}")


def stop_aggregator(procs):
    procs[0].send_signal(signal.SIGTERM)
    return wait_all(procs, 40)


# --------------------------------------------------------------------------- 1+2: one timed run


def timed_run(name, with_filter, corpus_path, tmp, lines_expected, timeout):
    """One run of recipe ``name`` on the corpus: {seconds, events, alerts, codes}."""
    group = Group(tmp)
    label = f"{name} {'filter' if with_filter else 'passthrough'}"
    arrival = None
    try:
        if name == "replay":
            config, out, args = replay_setup(tmp)
            argvs = [["cat", corpus_path]] + ([args] if with_filter else []) + [[FLUENT_BIT, "-c", config]]
            note(label, " | ".join(shlex.join(a) for a in argvs), tmp)
            arrival = Arrival(out / "events.ndjson", lines_expected)
            started = time.perf_counter()
            codes = wait_all(pipeline(group, argvs), timeout)
            seconds = time.perf_counter() - started
        elif name == "exec":
            config, out, command = exec_config(tmp, corpus_path, with_filter)
            note(label, f"fluent-bit -c exec.yaml   # command: {command}", tmp)
            arrival = Arrival(out / "events.ndjson", lines_expected)
            started = time.perf_counter()
            codes = wait_all([group.start([FLUENT_BIT, "-c", config], stdout=subprocess.DEVNULL)], timeout)
            seconds = time.perf_counter() - started
        elif name == "chain":
            real = chain_setup(tmp)
            out = Path(real.out)
            link_or_copy(corpus_path, real.log)
            if with_filter:
                argvs = [real.argv]
            else:
                argvs = [[FLUENT_BIT, "-c", str(real.collect)], [FLUENT_BIT, "-c", str(real.ship)]]
            note(label, " | ".join(shlex.join(a) for a in argvs), tmp)
            counter = Lines(out / "events.ndjson")
            started = time.perf_counter()
            procs = pipeline(group, argvs)
            deadline = time.monotonic() + timeout
            while counter.poll() < lines_expected and time.monotonic() < deadline:
                if any(p.poll() is not None for p in procs):
                    break
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            last_line = seconds if counter.count >= lines_expected else None
            procs[0].send_signal(signal.SIGTERM)  # the unit (or the collector: the shipper sees end of input)
            codes = wait_all(procs, 60)
        elif name == "fleet":
            port, env, agent_yaml, correlate = fleet_setup(tmp)
            out = tmp / "agent-a"
            aggregator = start_aggregator(group, tmp, port, env, correlate)
            argvs = [["cat", corpus_path]] + ([fwd.agent_command("agent-a")] if with_filter else []) + \
                [[FLUENT_BIT, "-c", agent_yaml]]
            note(label, " | ".join(shlex.join(a) for a in argvs), tmp)
            note("fleet aggregator", f"fluent-bit -c fleet-aggregator.yaml | {shlex.join(correlate)} "
                                     f"> $TMP/alerts.ndjson", tmp)
            arrival = Arrival(out / "events.ndjson", lines_expected)
            started = time.perf_counter()
            procs = pipeline(group, argvs, env=env)
            codes = wait_all(procs, timeout)
            seconds = time.perf_counter() - started
            codes += stop_aggregator(aggregator)
            alerts_path = tmp / "alerts.ndjson"
        if name != "fleet":
            alerts_path = out / "alerts.ndjson"
        if name != "chain":
            reached = arrival.stop()
            last_line = None if reached is None else reached - started
            # chain: the tail never ends, the unit is stopped at the last line: no exit time of its own
        return {"seconds": seconds if name != "chain" else None, "last_line": last_line,
                "events": count_lines(out / "events.ndjson"), "alerts": alert_hosts(alerts_path),
                "codes": codes}
    except subprocess.TimeoutExpired:
        return {"seconds": None, "last_line": None, "events": count_lines(tmp / "out" / "events.ndjson"),
                "alerts": [], "codes": ["timeout"], "stderr": group.stderr()}
    finally:
        if arrival is not None:
            arrival.done.set()
        group.kill()


# --------------------------------------------------------------------------- 3: latency, live


class AlertWatch:
    """Polls a growing alerts file; ``wait(hosts, timeout)``: the moment an alert on exactly these
    hosts was first seen (perf_counter), or None."""

    def __init__(self, path):
        self.path, self.offset, self.partial, self.seen = path, 0, b"", {}

    def poll(self):
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        now = time.perf_counter()
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            if ALERT_MARK in line:
                hosts = tuple(sorted(json.loads(line).get("related", {}).get("hosts", [])))
                self.seen.setdefault(hosts, now)

    def wait(self, hosts, timeout):
        deadline = time.perf_counter() + timeout
        while True:
            self.poll()
            if hosts in self.seen:
                return self.seen[hosts]
            if time.perf_counter() >= deadline:
                return None
            time.sleep(0.01)


def live_run(name, options, shares, tmp, early=True, samples=None):
    """Start the recipe on live input, feed it, time ``samples`` incidents; {latencies, ...}."""
    samples = options.samples if samples is None else samples
    group = Group(tmp)
    label = f"{name} live{'' if early else ' without --early-alerts'}"
    feeder = sink = None
    result = {"early": early, "latencies": [], "missing": 0}
    try:
        if name == "replay":
            config, out, args = replay_setup(tmp, early=early)
            procs = pipeline(group, [args, [FLUENT_BIT, "-c", config]], stdin=subprocess.PIPE)
            sink = procs[0].stdin
            alerts_path, events_path = out / "alerts.ndjson", out / "events.ndjson"
            note(label, f"PIPE | {shlex.join(args)} | fluent-bit -c ship.yaml", tmp)
        elif name == "exec":
            source = tmp / "powershell.ndjson"
            source.touch()
            config, out, command = exec_config(tmp, source, live=True, early=early)
            procs = [group.start([FLUENT_BIT, "-c", config], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)]
            sink = open(source, "ab")
            alerts_path, events_path = out / "alerts.ndjson", out / "events.ndjson"
            note(label, f"fluent-bit -c exec.yaml   # command: {command}; lines appended to the file", tmp)
        elif name == "chain":
            real = chain_setup(tmp, early=early)
            real.log.touch()
            procs = [group.start(real.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)]
            sink = open(real.log, "ab")
            alerts_path, events_path = Path(real.out) / "alerts.ndjson", Path(real.out) / "events.ndjson"
            note(label, shlex.join(real.argv) + "   # lines appended to $TMP/logs/powershell.ndjson", tmp)
        elif name == "fleet":
            port, env, agent_yaml, correlate = fleet_setup(tmp)
            assert EARLY in correlate, correlate
            if not early:
                correlate = [a for a in correlate if a != EARLY]
            aggregator = start_aggregator(group, tmp, port, env, correlate)
            agent = fwd.agent_command("agent-a")
            procs = pipeline(group, [agent, [FLUENT_BIT, "-c", agent_yaml]], stdin=subprocess.PIPE, env=env)
            sink = procs[0].stdin
            procs = aggregator + procs
            alerts_path, events_path = tmp / "alerts.ndjson", tmp / "agent-a" / "events.ndjson"
            note(label, f"PIPE | {shlex.join(agent)} | fluent-bit -c fleet-agent.yaml; fluent-bit -c "
                        f"fleet-aggregator.yaml | {shlex.join(correlate)} > $TMP/alerts.ndjson", tmp)
        feeder = Feeder([sink], shares, options.rate)
        events = Lines(events_path)
        deadline = time.monotonic() + 30
        while events.poll() == 0 and time.monotonic() < deadline:  # the pipeline is up and shipping
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name}: a process ended: {group.stderr()}")
            time.sleep(0.05)
        result["warmup"] = 30 - (deadline - time.monotonic())
        time.sleep(1.0)
        watch = AlertWatch(alerts_path)
        for k in range(samples):
            a, b, c = (f"LAT-{name}{'E' if early else 'L'}{k}-{role}.bench.example" for role in ("SRV", "WSB", "WSC"))
            pipe = f"bench{name}{k}"
            feeder.write(0, server_event(a, pipe, 10 * k + 1))
            time.sleep(0.2)
            feeder.write(0, client_event(b, a, pipe, 10 * k + 2))
            time.sleep(options.pause)
            at = feeder.write(0, client_event(c, a, pipe, 10 * k + 3))
            seen = watch.wait(tuple(sorted((a, b, c))), options.latency_timeout if early else options.late_timeout)
            if seen is None:
                result["missing"] += 1
                log(f"   {label}: incident {k + 1}: no alert within the wait")
            else:
                result["latencies"].append(seen - at)
                log(f"   {label}: incident {k + 1}: {seen - at:.3f} s")
            time.sleep(0.5)
        result["background_written"] = feeder.written
        result["feeder_error"] = feeder.error
    except Exception as error:  # reported in the table, not a crash of the whole run
        result["error"] = f"{type(error).__name__}: {error}"
        log(f"   {label}: {result['error']}")
    finally:
        if feeder is not None:
            feeder.stop()
        group.kill()
        if sink is not None:
            try:
                sink.close()
            except OSError:
                pass
    return result


# --------------------------------------------------------------------------- report


def environment() -> dict:
    cpu = cpu_model()
    version = subprocess.run([FLUENT_BIT, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "fluent_bit": (version or ["?"])[0], "filter": shlex.join(FILTER), "loadavg_at_start": os.getloadavg()}


def seconds_text(value) -> str:
    return "—" if value is None else f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def rows_of(report: dict) -> list:
    expected = report["expected_alerts"]
    lines = report["lines"]
    rows = []
    for name in [name for name in RECIPES if name in report["throughput"]]:  # those run (--recipes)
        runs = report["throughput"][name]
        filtered = [r for r in runs["filter"]]
        delivered = [sum(1 for hosts in expected if hosts in r["alerts"]) for r in filtered]
        extra = [len(r["alerts"]) - d for r, d in zip(filtered, delivered)]
        worst = min(range(len(filtered)), key=lambda i: (delivered[i], -extra[i], filtered[i]["events"]))
        alerts = f"{delivered[worst]} / {len(expected)}" + (f" (+{extra[worst]} other)" if extra[worst] else "")
        accounted = f"{filtered[worst]['events']:,} / {lines:,}"
        bad_codes = [r["codes"] for r in filtered + runs["passthrough"] if any(c not in (0,) for c in r["codes"])]
        if len(filtered) > 1:
            alerts += f", worst of {len(filtered)} runs"
            accounted += f", worst of {len(filtered)} runs"
        parts = []
        for key, what in (("last_line", "to the last line in events.ndjson"), ("seconds", "to exit")):
            best_f = min((r[key] for r in filtered if r.get(key) is not None), default=None)
            best_p = min((r[key] for r in runs["passthrough"] if r.get(key) is not None), default=None)
            if best_f and best_p:
                parts.append(f"{best_f / best_p:.2f}× {what} ({seconds_text(best_f)} vs {seconds_text(best_p)})")
        ratio = "; ".join(parts) or "—"
        if bad_codes:
            ratio += f"; exit codes {bad_codes}"
        cells = []
        for live in report["latency"].get(name, []):
            values = live["latencies"]
            what = "recipe as written" if live["early"] else "recipe without --early-alerts"
            if values:
                text = f"{statistics.median(values):.2f} s (median of {len(values)}"
                text += f", {min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ")"
            else:
                text = "no alert"
            if live["missing"]:
                text += f", {live['missing']} alert(s) not seen within the wait"
            if live.get("error"):
                text += f", error: {live['error'][:120]}"
            cells.append(f"{text}, {what}")
        rows.append([name, alerts, accounted, "; ".join(cells) or "—", ratio])
    return rows


def markdown(rows) -> str:
    head = ["recipe", "alerts delivered", "lines accounted", "latency (event written → alert in alerts.ndjson)",
            "time vs passthrough (best of each)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def main() -> int:
    # An installed filter starts from cached bytecode; with PYTHONDONTWRITEBYTECODE (set in some
    # sandboxes) an editable install would compile its changed modules again at every start, in
    # every timed run (bench/run.py does the same for its commands).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description="Every Fluent Bit recipe on the real Fluent Bit: delivery, "
                                                 "latency, time against passthrough.")
    parser.add_argument("--events", type=int, default=100_000, help="corpus slice (bench corpus, seed --seed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each variant (best is reported)")
    parser.add_argument("--samples", type=int, default=3, help="incidents timed per live recipe")
    parser.add_argument("--rate", type=float, default=200.0, help="background lines/s during the latency runs")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between the second and third event")
    parser.add_argument("--latency-timeout", type=float, default=20.0, help="wait cap per alert, --early-alerts")
    parser.add_argument("--late-timeout", type=float, default=120.0, help="wait cap for the alert without it")
    parser.add_argument("--timeout", type=float, default=180.0, help="cap on one timed run")
    parser.add_argument("--quick", action="store_true", help="skip the latency run without --early-alerts (~60 s)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset")
    parser.add_argument("--json", help="also write the whole report here")
    options = parser.parse_args()
    names = [n for n in options.recipes.split(",") if n]
    if not (os.path.isfile(FLUENT_BIT) and os.access(FLUENT_BIT, os.X_OK)):
        log(f"no Fluent Bit at {FLUENT_BIT}")
        return 2
    started = time.monotonic()
    corpus_path, meta = ensure_corpus(options.events, options.seed)
    report = {"environment": environment(), "options": vars(options), "corpus": corpus_path, "meta": meta}
    lines = count_lines(corpus_path)
    report["lines"] = lines
    found = subprocess.run(FILTER + ["--input", corpus_path, "--quiet"], capture_output=True, timeout=600)
    report["expected_alerts"] = alert_hosts_from(found.stdout)
    COMMANDS["expected alerts"] = shown(FILTER + ["--input", corpus_path], "")
    log(f"corpus {corpus_path}: {lines:,} lines; pipeshell-filter --input finds {len(report['expected_alerts'])} "
        f"alerts (the generator injected {meta.get('expected_alerts')})")
    base = Path(tempfile.mkdtemp(prefix="recipes-", dir=fleet.OUT_DIR))  # beside the corpus: a hard link for chain
    report["throughput"] = {n: {"filter": [], "passthrough": []} for n in names}
    report["latency"] = {}
    try:
        for round_number in range(options.repeat):
            for n, name in enumerate(names):
                order = ("passthrough", "filter") if (round_number + n) % 2 == 0 else ("filter", "passthrough")
                for variant in order:
                    tmp = base / f"{name}-{variant}-{round_number}"
                    tmp.mkdir()
                    run = timed_run(name, variant == "filter", corpus_path, tmp, lines, options.timeout)
                    report["throughput"][name][variant].append(run)
                    log(f"round {round_number + 1} {name} {variant}: last line {seconds_text(run['last_line'])}, "
                        f"exit {seconds_text(run['seconds'])}, "
                        f"{run['events']:,} lines, {len(run['alerts'])} alerts, codes {run['codes']}"
                        + (f"\n{run.get('stderr')}" if run.get("stderr") else ""))
                    shutil.rmtree(tmp, ignore_errors=True)
        (shares,) = background(corpus_path, 20_000, agents=1)
        for name in names:
            tmp = base / f"{name}-live"
            tmp.mkdir()
            log(f"latency {name}, the recipe as written ...")
            report["latency"][name] = [live_run(name, options, [shares], tmp)]
        if not options.quick and "replay" in names:
            tmp = base / "replay-live-late"
            tmp.mkdir()
            log("latency replay, without --early-alerts (the alert waits for the watermark): about a minute ...")
            report["latency"]["replay"].append(live_run("replay", options, [shares], tmp, early=False, samples=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["environment"]["loadavg_at_end"] = os.getloadavg()
    report["environment"]["seconds"] = round(time.monotonic() - started, 1)
    env = report["environment"]
    print(f"Date {env['date']}; {env['cores']} cores ({env['cpu']}); Python {env['python']}; {env['fluent_bit']}; "
          f"load average {env['loadavg_at_start'][0]:.2f} at start, {env['loadavg_at_end'][0]:.2f} at end; "
          f"whole run {env['seconds']:.0f} s.")
    print(f"Corpus: {lines:,} lines of the bench corpus (seed {options.seed}, {meta.get('bytes', 0) / 1e6:.0f} MB), "
          f"{len(report['expected_alerts'])} alerts by `pipeshell-filter --input FILE`; timed runs best of "
          f"{options.repeat}; latency: background {options.rate:g} lines/s, {options.samples} incidents per recipe.")
    print()
    print(markdown(rows_of(report)))
    print()
    print("Commands ($TMP: the run's temporary directory; fluent-bit: " + FLUENT_BIT + "):")
    print()
    for label, command in COMMANDS.items():
        print(f"* {label}: `{command}`")
    if options.json:
        with open(options.json, "w") as handle:
            json.dump(report, handle, indent=1, default=str)
    return 0


def alert_hosts_from(stdout: bytes) -> list:
    return sorted(tuple(sorted(json.loads(line).get("related", {}).get("hosts", [])))
                  for line in stdout.splitlines() if ALERT_MARK in line)


if __name__ == "__main__":
    sys.exit(main())
