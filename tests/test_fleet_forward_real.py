"""Fleet forwarding with the real Fluent Bit (5.1.1, ``../shared/tools/fluent-bit/``): agents run the
match stage and ``fluent-bit/fleet-agent.yaml``, which forwards Detection and heartbeat records to one
aggregator, ``fluent-bit/fleet-aggregator.yaml``, whose stdout feeds the one correlate stage.

Two agents and the aggregator are real Fluent Bit processes on loopback ports. The recipe files are
used as they are, except that the agents' event file goes to a temporary directory; host and ports
come through the recipes' environment variables. The filters get the arguments written in the
recipes, plus what running two agents on one host and replaying history need (``agent_command``,
``correlate_command``). The test passes the bytes on between the filters and Fluent Bit (a relay
thread on each side), so it knows what every match stage wrote and what reached the correlate stage.
Without the binary these tests are skipped (not the check of the routing rule).
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import yaml

from clitools import COMMAND, REPO, members as unit_members
from test_fleet_shards import comparable
from test_fluentbit_real import (FLUENT_BIT, RECIPES, SAMPLE, SAMPLE_HOSTS, WAIT, is_alert, needs_fluent_bit,
                                 read_output, sample_lines, without_sigma)

AGENT_RECIPE = os.path.join(RECIPES, "fleet-agent.yaml")
AGGREGATOR_RECIPE = os.path.join(RECIPES, "fleet-aggregator.yaml")
ROUTE_RULE = r"\Asigma\.(detection|heartbeat)\z"  # the agent's grep rule (Onigmo), read back from the recipe below
ROUTED = re.compile(r"sigma\.(detection|heartbeat)")  # the same, for fullmatch (Python 3.11 has no \z)
# The sample's hosts split over two agents, the incident's three on both (srv01 on one, cli01 and
# cli02 on the other).
AGENT_HOSTS = {"agent-a": ["srv01.corp.example", "ws03.corp.example"],
               "agent-b": ["cli01.corp.example", "cli02.corp.example", "ws04.corp.example"]}
# Lines that look like the routed types but are not them: they must go to the events file.
DECOYS = [b'{"type": "sigma.detections", "Computer": "ws04.corp.example"}',
          b'{"type": "xsigma.heartbeat", "Computer": "ws04.corp.example"}',
          b'{"type": {"name": "sigma.detection"}, "Computer": "ws04.corp.example"}',
          b'{"type": "sigma.detection"']  # not JSON: a pipeline_error record
# The agents replay ten minutes of history each in one burst, so one agent's records can reach the
# correlate stage up to the whole span behind the other's; live agents are apart by the forwarding
# delay only. The correlate stage's lateness must cover that (integrations/README.md, "Fleet").
REPLAY_LATENESS = "600"
OUTAGE = 3.0  # seconds the aggregator is down after the agents have read everything


def recipe_command(path, pattern):
    with open(path, encoding="utf-8") as handle:
        (line,) = re.findall(pattern, handle.read())
    return shlex.split(line)


def agent_command(agent):
    """The match stage of fleet-agent.yaml's command line; ``--agent``: two agents on one host."""
    args = recipe_command(AGENT_RECIPE, r"\|\s*pipeshell-filter\s+([^|\n]+?)\s*\|\s*fluent-bit -c fleet-agent\.yaml")
    assert args[:2] == ["--stage", "match"] and "--agent" not in args
    return COMMAND + args + ["--agent", agent]


def correlate_command(tmp_path):
    """The correlate stage of fleet-aggregator.yaml's command line, its state file in tmp_path."""
    args = recipe_command(AGGREGATOR_RECIPE, r"pipeshell-filter run --collect 'fluent-bit -c fleet-aggregator\.yaml' "
                                             r"--\s+([^|>\n]+?)\s*>>")
    assert args[:2] == ["--stage", "correlate"]
    at = args.index("--state")
    args[at + 1] = str(tmp_path / "correlate.state.json")
    return COMMAND + args + ["--lateness", REPLAY_LATENESS, "--quiet"]


def agent_config(tmp_path, agent, grace=None):
    """fleet-agent.yaml with its event file under tmp_path/agent; ``grace``: changed (one test)."""
    with open(AGENT_RECIPE, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    outputs = config["pipeline"]["outputs"]
    assert [o["name"] for o in outputs] == ["file", "forward"]
    assert outputs[0]["path"] == "/var/log/pipeshell"
    outputs[0]["path"] = str(tmp_path / agent)
    if grace is not None:
        config["service"]["grace"] = grace
    path = tmp_path / f"{agent}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_of(line):
    record = json.loads(line)
    return record.get("Computer") or record["Event"]["System"]["Computer"]


def split_sample():
    lines = sample_lines()
    split = {agent: [line for line in lines if host_of(line) in hosts] for agent, hosts in AGENT_HOSTS.items()}
    assert sum(map(len, split.values())) == len(lines)
    return split


def records_of(data):
    """Strict JSON objects, one a line (Fluent Bit's stdout must carry nothing else)."""
    found = []
    for line in bytes(data).splitlines():
        value = json.loads(line.decode("utf-8"), parse_constant=lambda name: pytest.fail(f"{name}: {line[:200]}"))
        assert isinstance(value, dict), line[:200]
        found.append(value)
    return found


def key(record):
    return json.dumps(record, sort_keys=True)


class Relay(threading.Thread):
    """Copies ``source`` to ``sink`` and keeps what passed; at end of ``source`` it closes ``sink``
    unless ``hold`` is set (then only when ``release`` is)."""

    def __init__(self, source, sink, hold=False, whole=False):
        super().__init__(daemon=True)
        self.source, self.sink = source, sink
        self.whole = whole  # write everything at once at the end (one read for Fluent Bit: one chunk)
        self.passed = bytearray()
        self.ended = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.start()

    def run(self):
        try:
            while True:
                data = os.read(self.source.fileno(), 1 << 16)
                if not data:
                    break
                self.passed += data
                if not self.whole:
                    os.write(self.sink.fileno(), data)
            if self.whole:
                os.write(self.sink.fileno(), self.passed)
        finally:
            self.ended.set()
            self.release.wait(WAIT)
            self.sink.close()


class Fleet:
    """The processes of one run; ``kill`` stops whatever is left."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.env = dict(os.environ, PIPESHELL_AGGREGATOR_HOST="127.0.0.1", PIPESHELL_AGGREGATOR_LISTEN="127.0.0.1",
                        PIPESHELL_AGGREGATOR_PORT=str(self.port))
        self.agent_env = self.env  # what the agents are told (AckSpy: another port)
        self.processes = []
        self.agents = {}
        self.log = open(tmp_path / "stderr.log", "ab")

    def _start(self, args, env=None, **kwargs):
        process = subprocess.Popen(args, stderr=self.log, env=env or self.env, **kwargs)
        self.processes.append(process)
        return process

    def start_agent(self, agent, lines, hold=False, grace=None, whole=False):
        """``pipeshell-filter --stage match ... < its file | fluent-bit -c fleet-agent.yaml``."""
        source = self.tmp_path / f"{agent}.ndjson"
        source.write_bytes(b"\n".join(lines) + b"\n")
        with open(source, "rb") as stdin:
            match = self._start(agent_command(agent), stdin=stdin, stdout=subprocess.PIPE)
        fluent_bit = self._start([FLUENT_BIT, "-c", agent_config(self.tmp_path, agent, grace)],
                                 env=self.agent_env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        relay = Relay(match.stdout, fluent_bit.stdin, hold, whole)
        self.agents[agent] = (match, fluent_bit, relay, lines)

    def start_aggregator(self):
        """``fluent-bit -c fleet-aggregator.yaml | pipeshell-filter --stage correlate ... > alerts``."""
        self.alerts = open(self.tmp_path / "alerts.ndjson", "wb")
        self.aggregator = self._start([FLUENT_BIT, "-c", AGGREGATOR_RECIPE], stdout=subprocess.PIPE)
        self.correlate = self._start(correlate_command(self.tmp_path), stdin=subprocess.PIPE, stdout=self.alerts)
        self.relay = Relay(self.aggregator.stdout, self.correlate.stdin)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.aggregator.poll() is None, self.stderr()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"the aggregator did not listen within {WAIT}s")

    def agents_read_everything(self):
        """Each agent's event file holds its lines (nothing of that waits for the aggregator)."""
        deadline = time.monotonic() + WAIT
        for agent, (_, _, _, lines) in self.agents.items():
            path = self.tmp_path / agent / "events.ndjson"
            while not (path.exists() and path.read_bytes().count(b"\n") >= len(lines)):
                assert time.monotonic() < deadline, (agent, self.stderr())
                time.sleep(0.05)

    def release_agents(self):
        for _, _, relay, _ in self.agents.values():
            relay.release.set()

    def wait_agents(self):
        """Exit codes of every agent's match stage and Fluent Bit, and seconds until the last ended."""
        started = time.monotonic()
        codes = {}
        for agent, (match, fluent_bit, relay, _) in self.agents.items():
            codes[agent] = (match.wait(WAIT), fluent_bit.wait(WAIT + 30))
            relay.join(WAIT)
        return codes, time.monotonic() - started

    def wait_forwarded(self, count):
        """Until ``count`` records have passed the aggregator's stdout."""
        deadline = time.monotonic() + WAIT
        while bytes(self.relay.passed).count(b"\n") < count:
            assert time.monotonic() < deadline, (bytes(self.relay.passed).count(b"\n"), count, self.stderr())
            time.sleep(0.05)

    def stop_aggregator(self):
        """SIGTERM to the aggregator's Fluent Bit; the correlate stage then sees end of input."""
        self.aggregator.send_signal(signal.SIGTERM)
        codes = (self.aggregator.wait(WAIT), self.correlate.wait(WAIT))
        self.relay.join(WAIT)
        self.alerts.close()
        return codes

    def written(self):
        """Per agent, the sigma.* records its match stage wrote, in order (``[time, record]`` lines)."""
        found = {}
        for agent, (_, _, relay, _) in self.agents.items():
            lines = [json.loads(line) for line in bytes(relay.passed).splitlines()]
            assert all(isinstance(line, list) and len(line) == 2 for line in lines)
            found[agent] = [record for _, record in lines if ROUTED.fullmatch(str(record.get("type")))]
        return found

    def received(self):
        return records_of(self.relay.passed)

    def stderr(self):
        self.log.flush()
        return (self.tmp_path / "stderr.log").read_bytes().decode(errors="replace")[-4000:]

    def kill(self):
        for _, _, relay, _ in self.agents.values():
            relay.release.set()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.log.close()


@pytest.fixture
def fleet(tmp_path):
    started = Fleet(tmp_path)
    yield started
    started.kill()


@pytest.fixture(scope="module")
def expected_alerts():
    """What one process gives on the whole sample: `pipeshell-filter < examples/pipeshell-sample.ndjson`."""
    with open(SAMPLE, "rb") as stdin:
        result = subprocess.run(COMMAND, stdin=stdin, capture_output=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    found = records_of(result.stdout)
    assert len(found) == 1 and is_alert(found[0]) and found[0]["related"]["hosts"] == SAMPLE_HOSTS
    return found


def test_the_routing_rule_is_the_one_in_the_recipe():
    """The rule this file checks records with is the agent's grep rule, and it is anchored."""
    with open(AGENT_RECIPE, encoding="utf-8") as handle:
        outputs = yaml.safe_load(handle)["pipeline"]["outputs"]
    rules = {o["name"]: o["processors"]["logs"] for o in outputs}
    assert rules == {"file": [{"name": "grep", "exclude": "$type " + ROUTE_RULE}],
                     "forward": [{"name": "grep", "regex": "$type " + ROUTE_RULE}]}


def assert_events_files(fleet):
    """Every line each agent read is in its event file, in order, and nothing that was routed."""
    for agent, (_, _, _, lines) in fleet.agents.items():
        events = read_output(fleet.tmp_path / agent, "events.ndjson")
        assert len(events) == len(lines), agent
        for line, event in zip(lines, events):
            if line in DECOYS[-1:]:
                assert event["event"] == {"kind": "pipeline_error", "original": line.decode()}
            else:
                assert without_sigma(event) == json.loads(line), agent
        assert sum("sigma" in event for event in events) == (1 if agent == "agent-a" else 2)


def assert_every_record_reached_the_correlate_stage(fleet):
    written, received = fleet.written(), fleet.received()
    assert all(written.values())
    assert {r["agent"] for rs in written.values() for r in rs if r["type"] == "sigma.heartbeat"} == set(written)
    assert sum(r["type"] == "sigma.detection" for rs in written.values() for r in rs) == 3
    assert Counter(map(key, received)) == Counter(key(r) for rs in written.values() for r in rs)
    return written, received


def assert_the_alert(fleet, expected):
    found = read_output(fleet.tmp_path, "alerts.ndjson")
    assert [comparable(a) for a in found] == [comparable(a) for a in expected], fleet.stderr()


@needs_fluent_bit
def test_two_agents_and_an_aggregator_deliver_every_record_and_alert_as_one_process(fleet, expected_alerts):
    split = split_sample()
    split["agent-b"] = split["agent-b"][:20] + DECOYS + split["agent-b"][20:]
    fleet.start_aggregator()
    for agent, lines in split.items():
        fleet.start_agent(agent, lines)
    codes, _ = fleet.wait_agents()
    assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
    assert_events_files(fleet)
    written = fleet.written()
    fleet.wait_forwarded(sum(map(len, written.values())))
    assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    written, received = assert_every_record_reached_the_correlate_stage(fleet)
    # Each agent's records arrive in the order it wrote them (one sending worker, no retry here).
    agent_of = {host: agent for agent, hosts in AGENT_HOSTS.items() for host in hosts}
    for agent, records in written.items():
        assert [r for r in received if r.get("agent", agent_of.get(r.get("source"))) == agent] == records
    assert_the_alert(fleet, expected_alerts)
    assert "error" not in fleet.stderr().lower()


@needs_fluent_bit
def test_aggregator_down_while_the_agents_run_loses_nothing(fleet, expected_alerts):
    """The agents read everything and keep running (their input still open) while nothing listens;
    the aggregator starts OUTAGE seconds later: every record is retried and arrives."""
    for agent, lines in split_sample().items():
        fleet.start_agent(agent, lines, hold=True)
    fleet.agents_read_everything()
    time.sleep(OUTAGE)
    assert "no upstream connections available" in fleet.stderr()  # they did try, and failed
    fleet.start_aggregator()
    written = fleet.written()
    fleet.wait_forwarded(sum(map(len, written.values())))
    fleet.release_agents()
    codes, _ = fleet.wait_agents()
    assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
    assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    assert_events_files(fleet)
    assert_every_record_reached_the_correlate_stage(fleet)
    assert_the_alert(fleet, expected_alerts)


@needs_fluent_bit
def test_aggregator_back_within_the_agents_grace_loses_nothing(fleet, expected_alerts):
    """The agents' input ends while the aggregator is down: each Fluent Bit keeps retrying for up to
    its grace period before it exits, and delivers everything once the aggregator is up."""
    for agent, lines in split_sample().items():
        fleet.start_agent(agent, lines)
    fleet.agents_read_everything()
    time.sleep(OUTAGE)
    assert all(fluent_bit.poll() is None for _, fluent_bit, _, _ in fleet.agents.values()), fleet.stderr()
    fleet.start_aggregator()
    codes, _ = fleet.wait_agents()
    assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
    written = fleet.written()
    fleet.wait_forwarded(sum(map(len, written.values())))
    assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    assert_events_files(fleet)
    assert_every_record_reached_the_correlate_stage(fleet)
    assert_the_alert(fleet, expected_alerts)


@needs_fluent_bit
def test_aggregator_down_past_the_agents_grace_loses_what_they_held(fleet):
    """The documented limit (memory buffering only in this build): an agent that stops while the
    aggregator is down exits 0 after its grace period and the records it held are gone. The grace
    is cut to 1 s here; the events file is complete all the same."""
    for agent, lines in split_sample().items():
        fleet.start_agent(agent, lines, grace=1)
    codes, waited = fleet.wait_agents()
    assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
    assert waited < 15
    assert_events_files(fleet)
    fleet.start_aggregator()
    time.sleep(1)
    assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    assert fleet.received() == [] and read_output(fleet.tmp_path, "alerts.ndjson") == []
    assert "no upstream connections available" in fleet.stderr()


class AckSpy(threading.Thread):
    """A TCP relay between the agents and the aggregator: it calls ``on_ack(n)`` when the aggregator
    answers (with require_ack_response its only answer is the acknowledgement of a chunk), the
    n-th time, before passing the answer on; when it returns True the answer is lost instead, the
    connection cut both ways (the aggregator took the chunk, the agent never hears so)."""

    def __init__(self, upstream, on_ack):
        super().__init__(daemon=True)
        self.upstream, self.on_ack = upstream, on_ack
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.answers = 0
        self.lock = threading.Lock()
        self.start()

    def run(self):
        while True:
            try:
                agent, _ = self.server.accept()
            except OSError:
                return
            aggregator = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(agent, aggregator, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(aggregator, agent, True), daemon=True).start()

    def _pump(self, source, sink, answers):
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if answers:
                    with self.lock:
                        self.answers += 1
                        if self.on_ack(self.answers):
                            for end in (source, sink):  # shutdown, not close: wakes the other pump's recv
                                end.shutdown(socket.SHUT_RDWR)
                            return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.server.close()


@needs_fluent_bit
def test_sigterm_to_the_aggregator_right_after_it_acknowledged_delivers_what_it_took(tmp_path_factory,
                                                                                 expected_alerts):
    """SIGTERM to the aggregator's Fluent Bit the moment it acknowledged the last agent's records (seen
    on the wire, before the agent is told): what it took but had not written yet still reaches the
    correlate stage within its grace period, and the correlate stage writes the alert at the end of
    its input, not before. Each agent sends its records in one chunk (one write into its Fluent Bit:
    one acknowledgement each). Three runs; records in flight at the signal in at least one."""
    in_flight = []
    for run in range(3):
        fleet = Fleet(tmp_path_factory.mktemp(f"sigterm{run}"))
        split = split_sample()
        signalled = threading.Event()
        state = {}

        def on_ack(count):
            if count == len(split):
                state["passed"] = bytes(fleet.relay.passed).count(b"\n")
                state["alerts"] = (fleet.tmp_path / "alerts.ndjson").read_bytes()
                fleet.aggregator.send_signal(signal.SIGTERM)
                signalled.set()

        spy = AckSpy(fleet.port, on_ack)
        fleet.agent_env = dict(fleet.env, PIPESHELL_AGGREGATOR_PORT=str(spy.port))
        try:
            fleet.start_aggregator()
            for agent, lines in split.items():
                fleet.start_agent(agent, lines, whole=True)
            assert signalled.wait(WAIT), fleet.stderr()
            assert (fleet.aggregator.wait(WAIT), fleet.correlate.wait(WAIT)) == (0, 0), fleet.stderr()
            fleet.relay.join(WAIT)
            fleet.alerts.close()
            codes, _ = fleet.wait_agents()
            assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
            assert state["alerts"] == b""  # the window was open until the end of input
            _, received = assert_every_record_reached_the_correlate_stage(fleet)
            in_flight.append(len(received) - state["passed"])
            assert_the_alert(fleet, expected_alerts)
        finally:
            spy.close()
            fleet.kill()
    assert any(in_flight), in_flight


@needs_fluent_bit
def test_a_chunk_whose_acknowledgement_was_lost_is_sent_again_and_taken_once(fleet, expected_alerts):
    """At least once: the aggregator takes agent-b's chunk, but the acknowledgement never reaches the
    agent (the connection cut as it comes), whose Fluent Bit sends the chunk again: the correlate
    stage reads agent-b's records twice before agent-a's complete the incident (with --early-alerts a
    copy coming after the alert would fall in a consumed episode and prove nothing), and alerts once,
    as one process on the whole sample."""
    split = split_sample()
    spy = AckSpy(fleet.port, lambda count: count == 1)
    fleet.agent_env = dict(fleet.env, PIPESHELL_AGGREGATOR_PORT=str(spy.port))
    try:
        fleet.start_aggregator()
        fleet.start_agent("agent-b", split["agent-b"], whole=True)  # one chunk: its one acknowledgement lost
        assert fleet.agents["agent-b"][0].wait(WAIT) == 0
        twice = 2 * len(fleet.written()["agent-b"])
        fleet.wait_forwarded(twice)
        fleet.start_agent("agent-a", split["agent-a"], whole=True)
        codes, _ = fleet.wait_agents()
        assert codes == {"agent-a": (0, 0), "agent-b": (0, 0)}, fleet.stderr()
        written = fleet.written()
        fleet.wait_forwarded(twice + len(written["agent-a"]))
        assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    finally:
        spy.close()
    assert "cannot get ack" in fleet.stderr()
    assert Counter(map(key, fleet.received())) == Counter(key(r) for r in written["agent-a"] + 2 * written["agent-b"])
    assert_the_alert(fleet, expected_alerts)


@needs_fluent_bit
def test_the_aggregator_unit_stops_when_its_correlate_stage_dies(tmp_path):
    """Under a shell pipe the aggregator's Fluent Bit ran on after the correlate stage died, taking
    the agents' records into a dead pipe for good; as the recipe's one ``run`` unit it is stopped,
    and the unit exits 1 for its service manager to restart."""
    port = free_port()
    env = dict(os.environ, PIPESHELL_AGGREGATOR_LISTEN="127.0.0.1", PIPESHELL_AGGREGATOR_PORT=str(port))
    correlate = correlate_command(tmp_path)
    unit = subprocess.Popen(COMMAND + ["run", "--collect", f"{FLUENT_BIT} -c {AGGREGATOR_RECIPE}", "--"]
                            + correlate[len(COMMAND):], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert unit.poll() is None and time.monotonic() < deadline, unit.stderr.read() if unit.poll() else ""
            members = unit_members(unit.pid)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if len(members) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        fluent_bit, filter_process = sorted(members, key=lambda pid: b"fluent-bit" not in
                                            open(f"/proc/{pid}/cmdline", "rb").read())
        os.kill(filter_process, signal.SIGKILL)
        assert unit.wait(WAIT) == 1
        assert b"member 2" in unit.stderr.read()
        with pytest.raises(OSError):  # nobody takes the agents' records any more: they keep them
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert not os.path.exists(f"/proc/{fluent_bit}") or open(f"/proc/{fluent_bit}/stat").read().split()[2] == "Z"
    finally:
        if unit.poll() is None:
            unit.kill()
            unit.wait()


# ---------------------------------------------------------------------------------------------
# each agent's chain as one unit: integrations/README.md's `run` line for the fleet agent

def agent_unit_recipe(unit: bool = False):
    """The agent unit of integrations/README.md: the filter options after ``--``; ``unit``: the
    ``run`` options before ``--collect`` instead (its ``--grace``)."""
    with open(os.path.join(RECIPES, "..", "README.md"), encoding="utf-8") as handle:
        (line,) = re.findall(r"`(pipeshell-filter run (?:--grace \S+ )?--collect 'fluent-bit -c fluent-bit/"
                             r"collect-tail\.yaml' --ship 'fluent-bit -c fluent-bit/fleet-agent\.yaml' -- [^`]+)`",
                             handle.read())
    words = shlex.split(line)
    return words[2:words.index("--collect")] if unit else words[words.index("--") + 1:]


class AgentUnit:
    """One agent's chain as the README's unit: collect-tail.yaml tailing DIR/logs/*.ndjson (its db in
    DIR) | the match stage | fleet-agent.yaml (its event file in DIR), under ``pipeshell-filter run``."""

    def __init__(self, fleet, agent):
        self.fleet, self.agent = fleet, agent
        self.dir = fleet.tmp_path / f"unit-{agent}"
        (self.dir / "logs").mkdir(parents=True)
        with open(os.path.join(RECIPES, "collect-tail.yaml"), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        (tail,) = config["pipeline"]["inputs"]
        tail["path"], tail["db"] = str(self.dir / "logs" / "*.ndjson"), str(self.dir / "tail.db")
        collect = self.dir / "collect-tail.yaml"
        collect.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.collect = str(collect)
        self.ship = agent_config(self.dir, "out")
        self.events = self.dir / "out" / "events.ndjson"
        self.argv = COMMAND + ["run", *agent_unit_recipe(unit=True), "--collect", f"{FLUENT_BIT} -c {self.collect}",
                               "--ship", f"{FLUENT_BIT} -c {self.ship}", "--", *agent_unit_recipe(), "--agent", agent]
        self.process = None

    def start(self):
        self.err = open(self.dir / "unit.err", "ab")
        self.process = subprocess.Popen(self.argv, env=self.fleet.agent_env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.err)
        self.fleet.processes.append(self.process)

    def append(self, lines):
        with open(self.dir / "logs" / "powershell.ndjson", "ab") as handle:
            handle.write(b"".join(line + b"\n" for line in lines))

    def wait_events(self, count):
        deadline = time.monotonic() + WAIT
        while not (self.events.exists() and self.events.read_bytes().count(b"\n") >= count):
            assert self.process.poll() is None and time.monotonic() < deadline, self.stderr()
            time.sleep(0.05)

    def members(self):
        """pid of each member by position: 1 the collector, 2 the match stage, 3 the shipper."""
        deadline = time.monotonic() + WAIT
        while True:
            found = {}
            for pid in unit_members(self.process.pid):
                try:
                    command = open(f"/proc/{pid}/cmdline", "rb").read()
                except OSError:
                    continue
                found[1 if self.collect.encode() in command else 3 if self.ship.encode() in command else 2] = pid
            if len(found) == 3:
                return found
            assert time.monotonic() < deadline, (found, self.stderr())
            time.sleep(0.05)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT + 30)

    def stderr(self):
        self.err.flush()
        return (self.dir / "unit.err").read_bytes().decode(errors="replace")[-3000:]


def test_the_agent_unit_runs_the_agent_recipe_filter_options():
    """The README's agent unit gives its match stage the options of fleet-agent.yaml's command line."""
    assert agent_unit_recipe() == agent_command("x")[len(COMMAND):-2]
    # its --grace leaves the shipper its own grace (for a down aggregator) after the front drained
    (option, seconds) = agent_unit_recipe(unit=True)
    with open(os.path.join(RECIPES, "fleet-agent.yaml"), encoding="utf-8") as handle:
        shipper_grace = yaml.safe_load(handle)["service"]["grace"]
    with open(os.path.join(RECIPES, "collect-tail.yaml"), encoding="utf-8") as handle:
        collector_grace = yaml.safe_load(handle)["service"]["grace"]
    assert option == "--grace" and float(seconds) >= shipper_grace + collector_grace + 5


def test_the_recipes_benchmark_gives_the_aggregator_the_recipe_options(tmp_path):
    """bench/recipes.py times the fleet recipe with the correlate options of fleet-aggregator.yaml's
    command line.  It looked for them in a shell pipe the recipe no longer has (it is a ``run`` unit
    now), and the whole benchmark stopped at the fleet recipe with a ValueError."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import recipes

    correlate = recipes.fleet_setup(tmp_path)[3]
    assert correlate[:len(recipes.FILTER)] == recipes.FILTER
    assert correlate[len(recipes.FILTER):] == correlate_command(tmp_path)[len(COMMAND):-3]


@needs_fluent_bit
def test_agent_units_with_a_match_stage_killed_and_restarted_deliver_every_line_and_the_alert(fleet, expected_alerts):
    """Each agent's chain as the README's ``run`` unit, tailing a growing file. agent-b's match stage
    is killed once its first 20 lines are in its event file: the unit exits 1 naming it and leaves no
    member behind (the collector must not read on into a dead pipe, moving its stored position past
    lines nobody matched). The rest is written while it is down; restarted on the same db, the unit
    reads it. Stopped with SIGTERM, both units exit 0: every line is in its agent's event file once,
    in order, and the correlate stage alerts as one process does on the whole sample."""
    split = split_sample()
    fleet.start_aggregator()
    units = {agent: AgentUnit(fleet, agent) for agent in split}
    for agent, unit in units.items():
        unit.append(split[agent][:20])
        unit.start()
    a, b = units["agent-a"], units["agent-b"]
    b.wait_events(20)
    members = b.members()
    os.kill(members[2], signal.SIGKILL)
    assert b.process.wait(WAIT) == 1
    assert re.search(r"^pipeshell-filter run: member 2 \(.*\) killed by SIGKILL; stopping the chain$", b.stderr(),
                     re.MULTILINE), b.stderr()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in members.values())

    b.append(split["agent-b"][20:])  # while its unit is down
    a.append(split["agent-a"][20:])
    b.start()
    for agent, unit in units.items():
        unit.wait_events(len(split[agent]))
    time.sleep(1)  # the last heartbeats and detections on their way (flush 0.2 s)
    for unit in units.values():
        assert unit.stop() == 0, unit.stderr()
    for agent, unit in units.items():
        events = [without_sigma(record) for record in read_output(unit.dir / "out", "events.ndjson")]
        assert events == [json.loads(line) for line in split[agent]], agent
    received = fleet.received()
    assert {r["agent"] for r in received if r["type"] == "sigma.heartbeat"} == set(split)
    assert sum(r["type"] == "sigma.detection" for r in received) == 3
    assert fleet.stop_aggregator() == (0, 0), fleet.stderr()
    assert_the_alert(fleet, expected_alerts)
