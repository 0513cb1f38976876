"""The Fluent Bit recipes run with the real Fluent Bit (5.1.1, ``../shared/tools/fluent-bit/``): every
alert and every line the filter writes reaches the shipper's files, at end of input, when the filter
or Fluent Bit gets SIGTERM mid-stream, and when the input holds lines Fluent Bit would choke on.

The recipe files are used as they are, except that the output directory is a temporary one and the
state file is a fresh one; the filter gets exactly the arguments written in the recipe.  Without the
binary the Fluent Bit tests are skipped; the last tests check the filter's side alone.
"""

import contextlib
import datetime
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time

import pytest
import ujson
import yaml
from hypothesis import given
from hypothesis import strategies as st

import eventgen
from pipeshell_filter.io import prefilter as pf
from pipeshell_filter.io import stream
from clitools import COMMAND, REPO, run_cli
from sigmahq import SIGMAHQ
from test_sysmon_linux import DOWNLOAD, syslog_line, sysmon_xml

# $FLUENT_BIT, for a checkout that has no ../shared beside it (a git worktree elsewhere)
FLUENT_BIT = os.environ.get("FLUENT_BIT") or os.path.join(REPO, "..", "shared", "tools", "fluent-bit", "fluent-bit")
HAVE_FLUENT_BIT = os.path.isfile(FLUENT_BIT) and os.access(FLUENT_BIT, os.X_OK)
needs_fluent_bit = pytest.mark.skipif(not HAVE_FLUENT_BIT, reason=f"no Fluent Bit binary at {FLUENT_BIT}")

RECIPES = os.path.join(REPO, "integrations", "fluent-bit")
SAMPLE = os.path.join(REPO, "examples", "pipeshell-sample.ndjson")
SAMPLE_HOSTS = ["cli01.corp.example", "cli02.corp.example", "srv01.corp.example"]
WAIT = 30  # seconds any one step may take on a loaded 2-core machine
SIGMAHQ_LINUX = os.path.join(SIGMAHQ, "rules", "linux")
CURL_RULE_TITLE = "Suspicious Download and Execute Pattern via Curl/Wget"

# Lines Fluent Bit 5.1.1 cannot take as they are (NaN: the whole read dropped; -Infinity: 0;
# 1e400: "inf", not JSON; lone surrogates: U+FFFD or removed; > 64-bit integers: a rounded float),
# and one that is not JSON at all (the whole read dropped).
HOSTILE = [
    b'{"EventID": NaN, "Computer": "h1"}',
    b'{"EventID": 1e400, "Computer": "h2"}',
    b'{"EventID": [1, -Infinity], "Computer": "h3"}',
    b'{"EventID": 4104, "Computer": "\\ud800"}',
    b'{"EventID": 4104, "Computer": "\xed\xa0\x80"}',
    b'{"EventRecordID": 123456789012345678901234567890}',
    b'{"EventID": 4104, "Data": ' + b'[' * 63 + b'1' + b']' * 63 + b'}',  # 64 deep: dropped, and the read's rest
    # the largest doubles: Fluent Bit writes them with 16 digits, 1.797693134862316e+308, beyond a double
    b'{"EventID": 1.7976931348623157e308, "Computer": "h11"}',
    # in a member whose key comes again (the JSON parser keeps the last value; so does Fluent Bit, but
    # first it dropped the read for a NaN, an Infinity or a nesting 64 deep there)
    b'{"EventID": NaN, "EventID": 4104, "Computer": "h12"}',
    b'{"Data": {"x": [Infinity]}, "Data": 1, "Computer": "h13"}',
    b'{"Data": ' + b'[' * 63 + b'1' + b']' * 63 + b', "Data": 1, "Computer": "h14"}',
    b'{"EventID": 4104, "ScriptBlockText": "not closed"',
]
# Events whose time Fluent Bit cannot take in a frame (before 1970, from 2106 on: the record, or the
# read's rest, dropped): framed with the clock, passed on as they are.
ODD_TIMES = [
    b'{"EventID": 4104, "Computer": "h8", "@timestamp": "1601-01-01T00:00:00Z"}',
    b'{"EventID": 4104, "Computer": "h9", "@timestamp": "2200-01-01T00:00:00.5Z"}',
    b'{"EventID": 4104, "Computer": "h10", "@timestamp": "2106-02-07T06:28:13.999999999Z"}',
]


def ship_args():
    """The filter's arguments in the command line written at the top of ship.yaml."""
    with open(os.path.join(RECIPES, "ship.yaml"), encoding="utf-8") as handle:
        text = handle.read()
    (line,) = re.findall(r"\|\s*pipeshell-filter\s+([^|\n]+?)\s*\|\s*fluent-bit -c ship\.yaml", text)
    return line.split()


def recipe(name, tmp_path):
    """The recipe with its files written under tmp_path/out: (config path, output dir)."""
    with open(os.path.join(RECIPES, name), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)  # as the README says: the two outputs creating it at once race (ship.yaml)
    for output in config["pipeline"]["outputs"]:
        assert output["path"] == "/var/log/pipeshell", output  # the only thing changed
        output["path"] = str(out)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path), out


def filter_command(tmp_path, state=True, early=True):
    """The recipe's filter command; ``state=False``: without its --state (as issue 15 ran it);
    ``early=False``: without --early-alerts, so that the alert waits for the watermark (a rule whose
    condition is not monotone always does): on live input it is written only when the filter stops."""
    args = ship_args()
    if not early:
        args.remove("--early-alerts")
    at = args.index("--state")
    if state:
        args[at + 1] = str(tmp_path / "state.json")
    else:
        del args[at:at + 2]
    return COMMAND + args


def read_output(out, name):
    """The records of one output file; each line must be strict JSON (no NaN, no inf) and hold
    no U+FFFD (what Fluent Bit makes of a lone surrogate)."""
    path = out / name
    if not path.exists():
        return []
    data = path.read_bytes()
    assert b"\\ufffd" not in data.lower() and "\ufffd".encode() not in data
    found = []
    for line in data.splitlines():
        found.append(json.loads(line.decode("utf-8"),
                                parse_constant=lambda constant: pytest.fail(f"{constant} in {name}: {line[:200]}")))
    return found


def is_alert(record):
    return isinstance(record.get("event"), dict) and record["event"].get("kind") == "alert"


def without_sigma(record):
    return {k: v for k, v in record.items() if k != "sigma"}


def sample_lines():
    with open(SAMPLE, "rb") as handle:
        return handle.read().splitlines()


def recent_incident():
    """A 3-host incident a minute ago among benign lines: its window is still open, so on live input
    the alert is written at once with --early-alerts (the recipe), else only when the filter stops
    (end of input or SIGTERM)."""
    now = (datetime.datetime.now(datetime.timezone.utc) - eventgen.BASE).total_seconds()
    start = now - 60
    events = [eventgen.flat_event(start + i * 0.1, "ws04", "benign", record_id=i) for i in range(300)]
    events.insert(40, eventgen.flat_event(start + 4, "srv01", "server"))
    events.insert(150, eventgen.evtx_event(start + 15, "cli01", "client", 4103))
    events.insert(260, eventgen.flat_event(start + 26, "cli02", "client", 800))
    return [json.dumps(event).encode() for event in events]


class Chain:
    """pipeshell-filter | fluent-bit, or with ``relay`` the test passing the bytes between them (to
    know exactly what the filter had written when Fluent Bit is stopped)."""

    def __init__(self, tmp_path, config, relay=False, state=True, early=True, command=None, stdin=subprocess.PIPE):
        self.log = open(tmp_path / "stderr.log", "wb")
        self.filter = subprocess.Popen(command or filter_command(tmp_path, state, early), stdin=stdin,
                                       stdout=subprocess.PIPE, stderr=self.log)
        self.fluent_bit = subprocess.Popen([FLUENT_BIT, "-c", config],
                                           stdin=subprocess.PIPE if relay else self.filter.stdout,
                                           stdout=subprocess.DEVNULL, stderr=self.log)
        self.forwarded = bytearray()
        self.relay = None
        if relay:
            self.alert_forwarded = threading.Event()
            self.relay = threading.Thread(target=self._relay, daemon=True)
            self.relay.start()
        else:
            self.filter.stdout.close()  # Fluent Bit holds the read end

    def _relay(self):
        source, sink = self.filter.stdout.fileno(), self.fluent_bit.stdin.fileno()
        while not self.alert_forwarded.is_set():
            data = os.read(source, 1 << 16)
            if not data:
                break
            os.write(sink, data)
            self.forwarded += data
            if b'"kind":"alert"' in data:
                self.fluent_bit.send_signal(signal.SIGTERM)  # right after the alert went into its pipe
                self.alert_forwarded.set()

    def write(self, data):
        self.filter.stdin.write(data)
        self.filter.stdin.flush()

    def close_input(self):
        self.filter.stdin.close()

    def wait(self):
        codes = (self.filter.wait(WAIT), self.fluent_bit.wait(WAIT))
        if self.relay is not None:
            self.relay.join(WAIT)
            self.filter.stdout.close()
            self.fluent_bit.stdin.close()
        self.log.close()
        return codes

    def kill(self):
        for process in (self.filter, self.fluent_bit):
            if process.poll() is None:
                process.kill()
                process.wait()
        if not self.log.closed:
            self.log.close()


@pytest.fixture
def chains():
    started = []
    yield lambda *args, **kwargs: started.append(Chain(*args, **kwargs)) or started[-1]
    for chain in started:
        chain.kill()


def wait_for_lines(out, name, count):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        path = out / name
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{name}: fewer than {count} lines after {WAIT}s")


def stderr_of(tmp_path):
    return (tmp_path / "stderr.log").read_bytes().decode(errors="replace")[-3000:]


# ---------------------------------------------------------------------------------------------
# ship.yaml: end of input, SIGTERM


def assert_incident_delivered(out, lines) -> None:
    """The shipper wrote the incident's one alert (three hosts) and every line of the stream."""
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and sorted(alerts[0]["related"]["hosts"]) == ["cli01", "cli02", "srv01"]
    assert len(read_output(out, "events.ndjson")) == len(lines)


@needs_fluent_bit
@pytest.mark.parametrize("state", [True, False], ids=["recipe", "no-state"])
def test_replay_at_end_of_input_delivers_the_alert_and_every_line(tmp_path, chains, state):
    """`cat incident.ndjson | pipeshell-filter ... | fluent-bit -c ship.yaml`: the alert is written just
    before end of input. With rewrite_tag it was lost in most runs (a race: 3 runs each here)."""
    lines = sample_lines()
    for run in range(3):
        where = tmp_path / str(run)
        where.mkdir()
        config, out = recipe("ship.yaml", where)
        chain = chains(where, config, state=state)
        chain.write(b"\n".join(lines) + b"\n")
        chain.close_input()
        assert chain.wait() == (0, 0), stderr_of(where)
        alerts = read_output(out, "alerts.ndjson")
        assert len(alerts) == 1 and is_alert(alerts[0]), (run, stderr_of(where))
        assert alerts[0]["related"]["hosts"] == SAMPLE_HOSTS
        events = read_output(out, "events.ndjson")
        assert [without_sigma(e) for e in events] == [json.loads(line) for line in lines]
        assert sum("sigma" in e for e in events) == 3


def incidents(count, benign_between=400):
    """``count`` 3-host incidents half an hour apart, benign lines between: ``count`` alerts."""
    events = []
    for k in range(count):
        start = k * 1800
        events += [eventgen.flat_event(start + i, "ws04", "benign", record_id=i) for i in range(benign_between)]
        events += [eventgen.flat_event(start + benign_between + 1, f"srv{k}", "server"),
                   eventgen.evtx_event(start + benign_between + 20, f"cli{k}a", "client", 4103),
                   eventgen.flat_event(start + benign_between + 40, f"cli{k}b", "client", 800)]
    return [json.dumps(event).encode() for event in events]


@needs_fluent_bit
def test_several_alerts_in_a_longer_replay_all_arrive(tmp_path, chains):
    """Issue 15 saw 4 of 5 alerts arrive from a long stream, the last one lost."""
    config, out = recipe("ship.yaml", tmp_path)
    lines = incidents(5)
    chain = chains(tmp_path, config)
    chain.write(b"\n".join(lines) + b"\n")
    chain.close_input()
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    alerts = read_output(out, "alerts.ndjson")
    assert sorted(sorted(a["related"]["hosts"]) for a in alerts) == \
        [[f"cli{k}a", f"cli{k}b", f"srv{k}"] for k in range(5)]
    assert len(read_output(out, "events.ndjson")) == len(lines)


EARLY = pytest.mark.parametrize("early", [True, False], ids=["as-written", "at-the-watermark"])


def before_the_stop(out, lines, early):
    """Live input, the window still open: with --early-alerts (the recipe as written) the alert is in
    alerts.ndjson before any stop, in seconds; without it there is none yet."""
    wait_for_lines(out, "events.ndjson", len(lines))
    if early:
        wait_for_lines(out, "alerts.ndjson", 1)
    else:
        assert not (out / "alerts.ndjson").exists()


@needs_fluent_bit
@EARLY
def test_recent_incident_alert_written_at_end_of_input_arrives(tmp_path, chains, early):
    config, out = recipe("ship.yaml", tmp_path)
    lines = recent_incident()
    chain = chains(tmp_path, config, early=early)
    chain.write(b"\n".join(lines) + b"\n")
    before_the_stop(out, lines, early)
    chain.close_input()
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    assert_incident_delivered(out, lines)


@needs_fluent_bit
@EARLY
def test_sigterm_to_the_filter_mid_stream_delivers_the_alert_and_every_line(tmp_path, chains, early):
    """The input stays open; SIGTERM to the filter makes it write the pending alert (if not written
    yet) and exit, and Fluent Bit, at end of its input, writes it out before it exits."""
    config, out = recipe("ship.yaml", tmp_path)
    lines = recent_incident()
    chain = chains(tmp_path, config, early=early)
    chain.write(b"\n".join(lines) + b"\n")
    before_the_stop(out, lines, early)
    chain.filter.send_signal(signal.SIGTERM)
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    assert_incident_delivered(out, lines)


@needs_fluent_bit
@EARLY
def test_sigterm_to_the_whole_chain_at_once_delivers_the_alert_and_every_line(tmp_path, chains, early):
    """What systemd does on stop (KillMode=control-group): SIGTERM to every process at the same time.
    The filter writes its pending alert within milliseconds; Fluent Bit still reads its input then."""
    config, out = recipe("ship.yaml", tmp_path)
    lines = recent_incident()
    chain = chains(tmp_path, config, early=early)
    chain.write(b"\n".join(lines) + b"\n")
    before_the_stop(out, lines, early)
    chain.fluent_bit.send_signal(signal.SIGTERM)
    chain.filter.send_signal(signal.SIGTERM)
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    assert_incident_delivered(out, lines)


@needs_fluent_bit
def test_sigterm_to_fluent_bit_right_after_the_alert_delivers_what_the_filter_wrote(tmp_path, chains):
    """A chain being stopped: SIGTERM to the filter, which writes the pending alert, and SIGTERM to
    Fluent Bit the moment the alert's bytes are in its pipe (the test passes the bytes on, so it knows
    what the filter had written). The alert and every line written before it arrive; with
    rewrite_tag the alert was lost.  Without --early-alerts: the alert must be the one a stop writes."""
    config, out = recipe("ship.yaml", tmp_path)
    lines = recent_incident()
    chain = chains(tmp_path, config, relay=True, early=False)
    chain.write(b"\n".join(lines) + b"\n")
    wait_for_lines(out, "events.ndjson", len(lines))
    chain.filter.send_signal(signal.SIGTERM)
    assert chain.alert_forwarded.wait(WAIT), stderr_of(tmp_path)
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    written = [record for _, record in (json.loads(line) for line in bytes(chain.forwarded).splitlines())]
    assert sum(map(is_alert, written)) == 1 and len(written) == len(lines) + 1
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and sorted(alerts[0]["related"]["hosts"]) == ["cli01", "cli02", "srv01"]
    assert read_output(out, "events.ndjson") == [r for r in written if not is_alert(r)]


def exec_recipe(tmp_path, reader, early=True, with_filter=True):
    """exec.yaml with its command reading through ``reader`` (``cat FILE`` for a finished file,
    ``tail -F FILE`` live) instead of ``tail -F /var/log/...``, its state file and output directory
    in tmp_path; ``early=False`` without --early-alerts; ``with_filter=False``: the reader alone (the
    benchmark's passthrough).  (config path, output dir, command)."""
    with open(os.path.join(RECIPES, "exec.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    (command,) = [i["command"] for i in config["pipeline"]["inputs"]]
    written = "tail -F /var/log/windows/powershell.ndjson | pipeshell-filter "
    assert command.startswith(written), command
    args = command[len(written):].replace("/var/lib/pipeshell-filter/exec.state.json", str(tmp_path / "state.json"))
    assert "--early-alerts" in args.split() and "--state" in args.split(), args
    if not early:
        args = " ".join(a for a in args.split() if a != "--early-alerts")
    config["pipeline"]["inputs"][0]["command"] = \
        f"{reader} | {' '.join(map(shlex.quote, COMMAND))} {args}" if with_filter else reader
    config["service"]["parsers_file"] = os.path.join(RECIPES, config["service"]["parsers_file"])
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)  # as the README says (ship.yaml)
    for output in config["pipeline"]["outputs"]:
        assert output["path"] == "/var/log/pipeshell"
        output["path"] = str(out)
    path = tmp_path / "exec.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path), out, config["pipeline"]["inputs"][0]["command"]


# Top-level @timestamp values Fluent Bit 5.1.1's JSON parser could not turn into a record time (before
# 1970, from early 2106 on, not a time at all): with time_key set, the exec input dropped each
# such record ("Error encoding record : -4"), an alert made of events of such a time among them.
ODD_STAMPS = ["1601-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z", "2200-01-01T00:00:00.5Z",
              "9999-12-31T23:59:59.999Z", "garbage", ""]


@needs_fluent_bit
def test_exec_recipe_delivers_events_and_alerts_whatever_their_timestamp(tmp_path):
    """exec.yaml's parser takes no record time from ``@timestamp``: every line and every alert the
    filter writes arrives, whatever that field holds, alerts dated 1969 included."""
    before_1970 = (datetime.datetime(1969, 12, 31, 23, 58, tzinfo=datetime.timezone.utc) - eventgen.BASE)
    before_1970 = before_1970.total_seconds()
    incident = [eventgen.flat_event(before_1970, "srv01", "server"),
                eventgen.evtx_event(before_1970 + 10, "cli01", "client", 4103),
                eventgen.flat_event(before_1970 + 20, "cli02", "client", 800)]
    odd = [{"EventID": 4104, "Computer": "h1", "n": n, "@timestamp": stamp} for n, stamp in enumerate(ODD_STAMPS)]
    lines = [json.dumps(event).encode() for event in incident + odd] + sample_lines()
    source = tmp_path / "powershell.ndjson"
    source.write_bytes(b"\n".join(lines) + b"\n")
    path, out, command = exec_recipe(tmp_path, f"cat {shlex.quote(str(source))}")
    args = shlex.split(command.split("|", 1)[1])[len(COMMAND):]
    args[args.index("--state") + 1] = str(tmp_path / "alone.json")
    alone = run_cli(args, source.read_bytes())
    written = [json.loads(line) for line in alone.stdout.splitlines()]
    assert any(is_alert(r) and r["@timestamp"].startswith("1969-12-31T23:5") for r in written), alone.stderr
    result = subprocess.run([FLUENT_BIT, "-c", path], capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_output(out, "alerts.ndjson") == [r for r in written if is_alert(r)], result.stderr[-3000:]
    assert read_output(out, "events.ndjson") == [r for r in written if not is_alert(r)], result.stderr[-3000:]
    assert len(written) == len(lines) + sum(map(is_alert, written))


@needs_fluent_bit
def test_exec_recipe_delivers_the_alert_and_every_line_when_the_command_ends(tmp_path):
    """exec.yaml with its command reading a finished file (`cat` for `tail -F`): Fluent Bit exits with
    the command (exit_after_oneshot) and writes the alert made at its end."""
    source = tmp_path / "powershell.ndjson"
    lines = sample_lines()
    source.write_bytes(b"\n".join(lines) + b"\n")
    path, out, _ = exec_recipe(tmp_path, f"cat {shlex.quote(str(source))}")
    result = subprocess.run([FLUENT_BIT, "-c", path], capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr[-3000:]
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and alerts[0]["related"]["hosts"] == SAMPLE_HOSTS
    events = read_output(out, "events.ndjson")
    assert [without_sigma(e) for e in events] == [json.loads(line) for line in lines]


def commands_of(tmp_path):
    """The processes whose command line names tmp_path: exec's command and the filter, which Fluent
    Bit starts outside its process group, so that they may outlive it."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if entry.isdigit() and str(tmp_path).encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def end_commands_of(tmp_path):
    """After Fluent Bit exited: its command ends by itself (the filter saving its state on the way
    out, as a supervisor that waits for the whole unit lets it); what is left after WAIT is killed."""
    deadline = time.monotonic() + WAIT
    while commands_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in commands_of(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@needs_fluent_bit
@EARLY
def test_exec_recipe_stopped_by_sigterm_and_started_again_delivers_the_alert(tmp_path, early):
    """Fluent Bit's exec input stops reading its command at its own SIGTERM and signals it: what the
    filter wrote then is lost.  As written, the alert is out before the stop (--early-alerts); without
    that, the open window stays in the state (--on-stop keep) and the next run, started as a supervisor
    would, makes the alert once its watermark passes it, with the hosts of before the stop."""
    source = tmp_path / "powershell.ndjson"
    source.write_bytes(b"")
    # The first run reads the file from its first line (``-n +1``): as ``tail -F`` started before the
    # incident is written, however late Fluent Bit starts it.  A fixed second was the wait for that:
    # on a loaded machine tail started after the write and read its last 10 lines only, no alert.
    path, out, _ = exec_recipe(tmp_path, f"tail -n +1 -F {shlex.quote(str(source))}", early)
    lines = recent_incident()
    log = open(tmp_path / "fluent-bit.log", "wb")  # Fluent Bit's and the filter's stderr
    first = subprocess.Popen([FLUENT_BIT, "-c", path], stdout=subprocess.DEVNULL, stderr=log)
    try:
        with open(source, "ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
        before_the_stop(out, lines, early)
        first.send_signal(signal.SIGTERM)
        assert first.wait(WAIT) == 0
    finally:
        first.kill()
        end_commands_of(tmp_path)
    assert len(read_output(out, "alerts.ndjson")) == (1 if early else 0)
    assert (tmp_path / "state.json").exists()
    later = (datetime.datetime.now(datetime.timezone.utc) - eventgen.BASE).total_seconds() + 100
    path, _, _ = exec_recipe(tmp_path, f"tail -F {shlex.quote(str(source))}", early)  # its last 10 lines, then on
    second = subprocess.Popen([FLUENT_BIT, "-c", path], stdout=subprocess.DEVNULL, stderr=log)
    try:
        time.sleep(1)
        with open(source, "ab") as handle:  # later events from two hosts move the watermark past the incident
            handle.write(b"".join(json.dumps(eventgen.flat_event(later, host, "server")).encode() + b"\n"
                                  for host in ("ws05", "ws06")))
        try:
            wait_for_lines(out, "alerts.ndjson", 1)
        except pytest.fail.Exception:
            pytest.fail(f"no alert after the restart; stderr: {(tmp_path / 'fluent-bit.log').read_bytes()[-3000:]}")
        time.sleep(1)  # nothing more comes
        second.send_signal(signal.SIGTERM)
        assert second.wait(WAIT) == 0
    finally:
        second.kill()
        end_commands_of(tmp_path)
    log.close()
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and {"cli01", "cli02", "srv01"} <= set(alerts[0]["related"]["hosts"]), alerts
    assert len(read_output(out, "events.ndjson")) >= len(lines) + 2  # tail -F reads its last 10 lines again


# ---------------------------------------------------------------------------------------------
# lines Fluent Bit chokes on


@needs_fluent_bit
def test_hostile_lines_in_one_read_lose_nothing(tmp_path, chains):
    """Hostile lines in the middle of the incident, all in one write: before, NaN made Fluent Bit drop
    the whole read, 1e400 came out as inf and a lone surrogate as U+FFFD."""
    config, out = recipe("ship.yaml", tmp_path)
    lines = sample_lines()
    middle = len(lines) // 2
    data = lines[:middle] + HOSTILE + ODD_TIMES + lines[middle:]
    chain = chains(tmp_path, config)
    chain.write(b"\n".join(data) + b"\n")
    chain.close_input()
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and alerts[0]["related"]["hosts"] == SAMPLE_HOSTS
    events = read_output(out, "events.ndjson")
    assert len(events) == len(data)
    errors = events[middle:middle + len(HOSTILE)]
    for line, record in zip(HOSTILE, errors):
        assert record["event"] == {"kind": "pipeline_error", "original": line.decode("utf-8", "backslashreplace")}
    assert [r["error"]["type"] for r in errors] == ["unportable"] * (len(HOSTILE) - 1) + ["invalid_json"]
    assert [without_sigma(e) for e in events[:middle] + events[middle + len(HOSTILE):]] == \
        [json.loads(line) for line in lines[:middle] + ODD_TIMES + lines[middle:]]


@needs_fluent_bit
def test_an_event_kind_holding_alert_on_a_line_of_its_own_goes_with_the_events(tmp_path, chains):
    """ship.yaml's grep rule was ``^alert$``, which Fluent Bit's regexes (Onigmo) match at any line of
    the value: events whose ``event.kind`` was ``"note\\nalert"`` or ``"alert\\n"`` went to alerts.ndjson."""
    config, out = recipe("ship.yaml", tmp_path)
    kinds = ["note\nalert", "alert\n", "alert\nnote", "alerts", "Alert"]
    near = [json.dumps({"event": {"kind": kind}, "n": n}).encode() for n, kind in enumerate(kinds)]
    lines = sample_lines()
    chain = chains(tmp_path, config)
    chain.write(b"\n".join(lines + near) + b"\n")
    chain.close_input()
    assert chain.wait() == (0, 0), stderr_of(tmp_path)
    alerts = read_output(out, "alerts.ndjson")
    assert len(alerts) == 1 and alerts[0]["related"]["hosts"] == SAMPLE_HOSTS
    events = read_output(out, "events.ndjson")
    assert [event["event"]["kind"] for event in events[len(lines):]] == kinds


# ---------------------------------------------------------------------------------------------
# collect-sysmon.yaml | pipeshell-filter ... | ship.yaml: Sysmon for Linux's syslog file


def sysmon_collector(tmp_path):
    """collect-sysmon.yaml tailing tmp_path/sysmon.log, its db in tmp_path, and the filter command
    written at its top, with its state in tmp_path and SigmaHQ's rules/linux for its rule directory:
    (collector config, log file, filter command)."""
    with open(os.path.join(RECIPES, "collect-sysmon.yaml"), encoding="utf-8") as handle:
        text = handle.read()
    config = yaml.safe_load(text)
    (tail,) = config["pipeline"]["inputs"]
    assert tail["path"] == "/var/log/sysmon.log" and tail["db"] == "/var/lib/fluent-bit/pipeshell-sysmon.db"
    tail["path"], tail["db"] = str(tmp_path / "sysmon.log"), str(tmp_path / "sysmon.db")
    path = tmp_path / "collect-sysmon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (line,) = re.findall(r"collect-sysmon\.yaml \| pipeshell-filter ([^|\n]+?) \| fluent-bit -c ship\.yaml", text)
    args = line.split()
    args[args.index("--state") + 1] = str(tmp_path / "state.json")
    args[args.index("--rule") + 1] = SIGMAHQ_LINUX
    return str(path), tmp_path / "sysmon.log", COMMAND + args


def sysmon_syslog(count=20):
    """Sysmon for Linux process creations (every fifth SigmaHQ's curl-to-/tmp-and-run) among other
    daemons' lines, one of them not UTF-8: (lines, how many downloads)."""
    lines = []
    for i in range(count):
        lines.append(b"Dec  4 10:00:%02d web1 CRON[%d]: (root) CMD (run-parts /etc/cron.hourly)" % (i, 900 + i))
        command = DOWNLOAD if i % 5 == 2 else "ls -la /root"
        xml = sysmon_xml(command, record=i, when=f"2026-12-04T10:00:{i:02d}.500000000Z")
        lines.append(syslog_line(xml).encode())
    lines.insert(7, b"Dec  4 10:00:03 web1 kernel: \xff\xfe not UTF-8")
    return lines, count // 5


@needs_fluent_bit
@pytest.mark.skipif(not os.path.isdir(SIGMAHQ_LINUX), reason=f"no SigmaHQ rules at {SIGMAHQ_LINUX}")
def test_sysmon_for_linux_syslog_through_the_collector_filter_and_shipper(tmp_path, chains):
    """The Sysmon for Linux recipe end to end: the collector tails the syslog file (half written before it
    starts, half while it runs) and forwards each line as it is; the filter reads each Sysmon line as its
    XML's event, with SigmaHQ's Linux rules; the shipper writes each download's alert to alerts.ndjson and
    every line to events.ndjson, exactly what the filter alone writes on the file (the Sysmon lines as
    ``{"message": <line>}``, enriched where matched, the others as pipeline_error records), and all of it
    arrives when the collector stops and the filter meets the end of its input."""
    collect, log, command = sysmon_collector(tmp_path)
    lines, downloads = sysmon_syslog()
    half = len(lines) // 2
    log.write_bytes(b"".join(line + b"\n" for line in lines[:half]))
    alone = run_cli(command[len(COMMAND):] + ["--state", str(tmp_path / "alone.json")],
                    b"".join(line + b"\n" for line in lines))
    assert alone.returncode == 0, alone.stderr
    written = [json.loads(line)[1] for line in alone.stdout.splitlines()]
    config, out = recipe("ship.yaml", tmp_path)
    with open(tmp_path / "collector.log", "wb") as collector_log:
        collector = subprocess.Popen([FLUENT_BIT, "-c", collect], stdout=subprocess.PIPE, stderr=collector_log)
    try:
        chain = chains(tmp_path, config, command=command, stdin=collector.stdout)
        collector.stdout.close()  # the filter holds the read end
        wait_for_lines(out, "events.ndjson", half)
        with open(log, "ab") as handle:
            handle.write(b"".join(line + b"\n" for line in lines[half:]))
        wait_for_lines(out, "events.ndjson", len(lines))
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(WAIT) == 0, (tmp_path / "collector.log").read_text(errors="replace")
        assert chain.wait() == (0, 0), stderr_of(tmp_path)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    alerts, events = read_output(out, "alerts.ndjson"), read_output(out, "events.ndjson")
    assert alerts == [record for record in written if is_alert(record)]
    assert [a["rule"]["name"] for a in alerts].count(CURL_RULE_TITLE) == downloads
    assert events == [record for record in written if not is_alert(record)]
    assert [e.get("message") or e["event"]["original"] for e in events] == \
        [line.decode("utf-8", "backslashreplace") for line in lines]
    assert ["message" in e for e in events] == [b" sysmon: <Event>" in line for line in lines]
    assert sum("sigma" in e for e in events) >= downloads
    assert f"{len(lines)} lines; {downloads} matched; {len(alerts)} alerts; skipped: {len(lines) // 2} invalid JSON, " \
        "1 invalid UTF-8" in stderr_of(tmp_path)


# ---------------------------------------------------------------------------------------------
# the filter's side alone (no Fluent Bit needed)


def strict(line):
    """Parse as Fluent Bit would need it: no NaN/Infinity, no number beyond a double or 64 bits,
    no lone surrogate."""
    value = json.loads(line.decode("utf-8"), parse_constant=lambda name: pytest.fail(f"{name}: {line[:200]}"))
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            assert depth < 64 + isinstance(value, list), line[:200]  # a [time, record] frame adds one
            stack.extend((inner, depth + 1) for inner in (list(item) + list(item.values()) if
                                                          isinstance(item, dict) else item))
        elif isinstance(item, str):
            item.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(item, float):  # nor one Fluent Bit writes (16 digits) as a number beyond a double
            assert item == item and abs(float("%.16g" % item)) != float("inf"), line[:200]
        elif isinstance(item, int) and not isinstance(item, bool):
            assert -(1 << 63) <= item < 1 << 64, line[:200]
    return value


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_time_fluent_bit_cannot_frame_is_framed_with_the_clock(tmp_path, workers):
    """Before 1970 or from 2106-02-07T06:28:14Z on: framed with the clock, whether the line was
    vouched for in a block (skim) or parsed (--no-prefilter); the record itself unchanged."""
    lines = sample_lines()
    data = lines[:3] + ODD_TIMES * 200 + lines[3:]
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n".join(data) + b"\n")
    outputs = []
    for extra in ([], ["--no-prefilter"]):
        started = time.time()
        result = run_cli(["--emit", "all", "--non-json", "wrap", "--fluentbit-time", "--input", str(path),
                          "--workers", workers] + extra)
        finished = time.time()
        assert result.returncode == 0, result.stderr
        framed = [strict(line) for line in result.stdout.splitlines()]
        odd = [(stamp, record) for stamp, record in framed if record.get("Computer") in ("h8", "h9", "h10")]
        assert len(odd) == 600 and all(started - 1 <= stamp <= finished + 1 for stamp, _ in odd)
        assert [record for _, record in odd] == [json.loads(line) for line in ODD_TIMES * 200]
        outputs.append([record for _, record in framed])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("extra", [[], ["--no-prefilter"], ["--max-line-bytes", "1024"]])
def test_fluentbit_time_alone_frames_every_line_as_time_and_object(extra):
    """Without --non-json wrap too: a line that is not a JSON object (or is over --max-line-bytes, or
    has a byte order mark) cannot be framed as [time, {record}] as it is; it was framed raw
    ([t,not json], not JSON: Fluent Bit drops the read).  It is a pipeline_error record."""
    lines = [b"not json", b"[1, 2]", b"\xff\xfe bad", b"", b"\xef\xbb\xbf{\"a\": 1}",
             b'{"b": "' + b"x" * 3000 + b'"}', b'{"c": 3}']
    result = run_cli(["--emit", "all", "--fluentbit-time", *extra], b"\n".join(lines) + b"\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(lines)
    assert all(isinstance(t, float) and isinstance(record, dict) for t, record in out)
    kinds = [record.get("error", {}).get("type") for _, record in out]
    assert kinds[:4] == ["invalid_json", "not_object", "invalid_utf8", "empty"]
    assert out[4][1] == {"a": 1} and out[6][1] == {"c": 3}
    assert kinds[5] == ("too_long" if extra[:1] == ["--max-line-bytes"] else None)


@pytest.mark.parametrize("args", [["--emit", "all", "--non-json", "wrap"],
                                  ["--emit", "all", "--non-json", "wrap", "--fluentbit-time"],
                                  ["--emit", "all", "--fluentbit-time"],  # alone: NaN, 1e400, ... were framed raw
                                  ["--emit", "all", "--fluentbit-time", "--no-prefilter"]])
def test_wrap_output_is_always_portable_and_keeps_the_original(args):
    fine = [b'{"a": "\\ud83d\\ude00", "b": 1e300, "c": "x: NaN 1e400 \\\\ud800", "d": 18446744073709551615}']
    result = run_cli(args, b"\n".join(HOSTILE + fine) + b"\n")
    assert result.returncode == 0 and b"Traceback" not in result.stderr
    out = [strict(line) for line in result.stdout.splitlines()]
    if "--fluentbit-time" in args:
        out = [record for _, record in out]
    assert len(out) == len(HOSTILE) + len(fine)
    for line, record in zip(HOSTILE, out):
        assert record["event"]["original"] == line.decode("utf-8", "backslashreplace")
    assert out[-1] == json.loads(fine[0])  # suspicious-looking, yet portable: unchanged


def test_an_incident_with_a_lone_surrogate_still_alerts_and_the_alert_stays_an_alert():
    lines = [line.replace(b"cli01.corp.example", b"cli01\\ud800") for line in sample_lines()]
    result = run_cli(["--emit", "all", "--non-json", "wrap"], b"\n".join(lines) + b"\n")
    assert result.returncode == 0
    out = [strict(line) for line in result.stdout.splitlines()]
    alerts = [r for r in out if is_alert(r)]
    assert len(alerts) == 1 and alerts[0]["related"]["hosts"][0] == "cli01\\ud800"
    changed = [r for r in out if r.get("event", {}).get("kind") == "pipeline_error"]
    assert changed and all(r["error"]["type"] == "unportable" for r in changed)
    assert len(out) == len(lines) + 1


def test_pass_mode_is_untouched():
    """Without --non-json wrap the filter passes every line byte for byte, hostile or not."""
    result = run_cli(["--emit", "all"], b"\n".join(HOSTILE) + b"\n")
    assert result.stdout == b"\n".join(HOSTILE) + b"\n"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(1 << 70), 1 << 70)
    | st.sampled_from([1 << 64, (1 << 64) - 1, -(1 << 63), -(1 << 63) - 1, 10 ** 308, 1e308, -1e-320])
    | st.text(st.characters(blacklist_categories=()), max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12)


_SCANNERS = {}


def scanner(kind):
    """The byte scans of ``stream`` (``_MAYBE_UNPORTABLE``, ``_UNPORTABLE_ENDS``), built with Hyperscan
    or (as without its wheels) with ``re``."""
    if kind not in _SCANNERS:
        if kind == "hyperscan" and importlib.util.find_spec("hyperscan") is None:
            pytest.skip("hyperscan is not installed")
        engine = "hyperscan" if kind == "hyperscan" else "python"
        groups = (stream._UNPORTABLE_PATTERNS, [stream._DEEP])
        _SCANNERS[kind] = (tuple(pf.any_of(group, engine) for group in groups),
                           pf.ends_of(stream._UNPORTABLE_PATTERNS, engine))
    return _SCANNERS[kind]


@contextlib.contextmanager
def scanning_with(kind):
    saved = stream._MAYBE_UNPORTABLE, stream._UNPORTABLE_ENDS
    stream._MAYBE_UNPORTABLE, stream._UNPORTABLE_ENDS = scanner(kind)
    try:
        yield
    finally:
        stream._MAYBE_UNPORTABLE, stream._UNPORTABLE_ENDS = saved


def nested(value, depth, spaced=False):
    """``value`` inside ``depth`` containers, lists and objects by turns (Fluent Bit's limit: 63)."""
    for level in range(depth):
        value = [value] if level % 2 else {"k" + " " * spaced: value}
    return value


@pytest.mark.parametrize("kind", ["hyperscan", "re"])
@given(value=st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=4),
       ascii_only=st.booleans(), spaced=st.booleans(), depth=st.sampled_from([0, 0, 10, 61, 62, 63, 64, 70]))
def test_the_byte_scan_never_misses_what_fluent_bit_cannot_take(kind, value, ascii_only, spaced, depth):
    """``unportable_record`` says a record is fine exactly when a strict parser takes it (the byte
    scan is only a necessary condition, so it must never miss), with either scanner."""
    value = dict(value, deep=nested(value, depth, spaced)) if depth else value
    # spaced: as a record on one line can be (a newline is only ever between records)
    text = ujson.dumps(value, ensure_ascii=ascii_only, indent=2 if spaced else 0).replace("\n", " ")
    record = text.encode("utf-8", "surrogatepass")  # a lone surrogate as raw bytes, as ujson reads them
    try:
        strict(record.decode("utf-8").encode())
        fine = True
    except (UnicodeDecodeError, UnicodeEncodeError, AssertionError, ValueError, pytest.fail.Exception):
        fine = False
    with scanning_with(kind):
        assert (stream.unportable_record(record) is None) == fine, record[:300]


@pytest.mark.parametrize("record, unportable", [
    (b'{"a": NaN, "a": 1}', True), (b'{"a": {"b": [-Infinity]}, "a": 1}', True),
    (b'{"a": ' + b"[" * 63 + b"]" * 63 + b', "a": 1}', True), (b'{"a": NaN, "a": 01}', True),  # not read strictly
    (b'{"a": "x: NaN", "a": 1}', False), (b'{"a": ' + b"[" * 62 + b"]" * 62 + b', "a": 1}', False),
    (b'{"a": 1.7976931348623157e308}', True), (b'{"a": -1.7976931348623155e308}', True),
    (b'{"a": 1.7976931348623153e308}', False)])
def test_what_a_repeated_key_hides_and_the_largest_doubles_are_unportable(record, unportable):
    """ujson keeps a repeated key's last value, and Fluent Bit does too, but it first dropped the read for a
    NaN, an Infinity or a nesting 64 deep in an earlier one; it writes back the two largest doubles as
    1.797693134862316e+308, beyond a double."""
    assert (stream.unportable_record(record) is not None) == unportable


@pytest.mark.parametrize("kind", ["hyperscan", "re"])
@given(values=st.lists(st.tuples(st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=4),
                                 st.sampled_from([0, 0, 0, 62, 63, 64])), max_size=6),
       ascii_only=st.booleans())
def test_one_scan_of_a_block_marks_every_line_the_line_scan_would(kind, values, ascii_only):
    """The Fluent Bit modes scan a whole block of lines once (``ends_of``): each line the per-line
    scan flags must hold the end of a match, with either engine, so that it is looked at closely."""
    (maybe, deep), _ = scanner(kind)
    lines = [ujson.dumps(nested(v, depth), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
             for v, depth in values]
    block = b"".join(line + b"\n" for line in lines)
    with scanning_with(kind):
        ends = stream._maybe_unportable_ends(block)
    assert ends == sorted(ends)
    position = 0
    for line in lines:
        marked = any(position < end <= position + len(line) for end in ends)
        assert marked or not (maybe(line) or deep(line)), line[:200]
        position += len(line) + 1


@needs_fluent_bit
def test_an_archive_of_fluent_bit_s_file_output_alerts_as_the_plain_file(tmp_path):
    """Fluent Bit's ``file`` output in its default format writes ``TAG: [TIME, {record}]``: an archive of it
    replayed through the filter (``< archive.log``) alerts as the sample itself does, and passes every
    line it does not enrich on as it came."""
    out = tmp_path / "out"
    out.mkdir()
    config = tmp_path / "archive.yaml"
    config.write_text(yaml.safe_dump({
        "service": {"flush": 0.2, "log_level": "error"},
        "pipeline": {"inputs": [{"name": "stdin", "tag": "win"}],
                     "outputs": [{"name": "file", "match": "*", "path": str(out), "file": "archive.log"}]}}))
    with open(SAMPLE, "rb") as handle:
        sample = handle.read()
    # Fluent Bit's stdin cannot read a regular file: the sample is piped in, as ``cat sample | fluent-bit``
    written = subprocess.run([FLUENT_BIT, "-c", str(config)], input=sample, capture_output=True, timeout=WAIT)
    assert written.returncode == 0, written.stderr[-2000:]
    archive = (out / "archive.log").read_bytes()
    assert archive.count(b"\n") == sample.count(b"\n") and archive.startswith(b"win: [")
    plain = run_cli(["--emit", "all", "--quiet"], sample)
    replayed = run_cli(["--emit", "all"], archive)
    assert replayed.returncode == 0 and b"not valid JSON" not in replayed.stderr, replayed.stderr
    assert b"3 matched; 1 alert" in replayed.stderr
    got = [ujson.loads(line) for line in replayed.stdout.splitlines() if line.startswith(b"{")]
    expected = [ujson.loads(line) for line in plain.stdout.splitlines() if line.startswith(b'{"@timestamp"')]
    assert [r for r in got if r.get("event", {}).get("kind") == "alert"] == expected
    unchanged = [line for line in replayed.stdout.splitlines() if line.startswith(b"win: [")]
    assert len(unchanged) == sample.count(b"\n")
    assert sum(line in archive.splitlines() for line in unchanged) == sample.count(b"\n") - 3  # 3 enriched
