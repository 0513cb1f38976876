"""The correlate stage on the bus, fed by a shipper's own NATS output instead of ``--stage match --nats``
(integrations/README.md, "Agents publish with the shipper's own NATS output"), with the real nats-server.

Neither shipper runs here (the Fluent Bit 5.1.1 build has no nats plugin; there is no Vector), so the
test publishes exactly what each one sends, as read in its source:

* Vector's ``nats`` sink (src/sinks/nats): one event per message, the json codec's bytes with no framing
  (no newline), keys in sorted order; with ``jetstream.enabled`` a JetStream publish awaiting the PubAck,
  with no ``Nats-Msg-Id`` unless ``jetstream.headers.message_id`` is set; otherwise a core publish;
* Fluent Bit's ``nats`` output (plugins/out_nats/nats.c): one message per flush, subject = the chunk's
  tag, a JSON array of ``[time, {"tag": <tag>, ...record}]`` (time a double printed with ``%.16g``,
  non-ASCII escaped), after a ``CONNECT`` line, with core ``PUB``.

The records are the real match-stage output of ``examples/pipeshell-sample.ndjson`` split over two
agents by host; the alert the correlator publishes must be that of one ``pipeshell-filter`` on the
whole sample (line numbers and ids aside), and messages in no known framing must be diagnosed and
skipped while the stream goes on.
"""

import asyncio
import json
import signal
import socket
import subprocess
import time

import pytest

from clitools import COMMAND, alerts, run_cli
from fleettools import SAMPLE, bus_alerts
from natsserver import NatsServer, needs_nats
from test_fleet_shards import comparable

pytestmark = needs_nats
SUBJECT = "pipeshell.records.0"  # the recipes' subject: one partition
# The incident's three hosts on both agents (srv01 on one, cli01 and cli02 on the other).
AGENT_HOSTS = {"a": ["srv01.corp.example", "ws03.corp.example"],
               "b": ["cli01.corp.example", "cli02.corp.example", "ws04.corp.example"]}
FLUSH = 2  # records per Fluent Bit flush: several messages per agent, most holding two records
WAIT = 30
# out_nats's handshake, written before every flush (plugins/out_nats/nats.h); the version is 5.1.1's.
OUT_NATS_CONNECT = (b'CONNECT {"verbose":false,"pedantic":false,"ssl_required":false,'
                    b'"name":"fluent-bit","lang":"c","version":"5.1.1"}\r\n')


def host_of(line: bytes) -> str:
    record = json.loads(line)
    return record.get("Computer") or record["Event"]["System"]["Computer"]


@pytest.fixture(scope="module")
def sample():
    """Each agent's match-stage records (bytes, in its order) and the alerts of one process on the
    whole sample: what the correlator must publish."""
    with open(SAMPLE, "rb") as handle:
        data = handle.read()
    expected = alerts(run_cli([], data).stdout)
    assert len(expected) == 1
    lines = data.splitlines()
    records = {}
    for agent, hosts in AGENT_HOSTS.items():
        mine = b"".join(line + b"\n" for line in lines if host_of(line) in hosts)
        result = run_cli(["--stage", "match", "--agent", agent, "--quiet"], mine)
        assert result.returncode == 0, result.stderr
        records[agent] = result.stdout.splitlines()
        assert all(json.loads(r)["type"] in ("sigma.detection", "sigma.heartbeat") for r in records[agent])
    assert sum(b'"sigma.detection"' in r for rs in records.values() for r in rs) == 3
    return records, expected


def correlator(url, tmp_path):
    """The recipes' correlate stage (one, partition 0), started first: it creates the streams, and a
    core publish to a subject no stream captures yet is not stored."""
    return subprocess.Popen(COMMAND + ["--stage", "correlate", "--nats", url, "--state", str(tmp_path / "state.json"),
                                       "--state-interval", "0.2", "--idle", "1", "--agent-idle", "3",
                                       "--agents", "2"],
                            stdout=open(tmp_path / "alerts.ndjson", "wb"), stderr=subprocess.PIPE)


async def _wait_for_stream(nc, deadline):
    js = nc.jetstream()
    while True:
        try:
            await js.stream_info("PIPESHELL")
            return js
        except Exception:  # noqa: BLE001 - not created yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def publish(url, messages):
    """``messages``: (how, payload) in order, how being "core" (nats-py's plain publish), "jetstream"
    (a publish that awaits the stream's PubAck, no message id) or "out_nats" (the plugin's own bytes
    on a fresh TCP connection, closed at once: the recipe's ``net.keepalive: off``)."""
    import nats

    port = int(url.rsplit(":", 1)[1])

    async def run():
        nc = await nats.connect(url)
        try:
            js = await _wait_for_stream(nc, time.monotonic() + WAIT)
            for how, payload in messages:
                if how == "core":
                    await nc.publish(SUBJECT, payload)
                    await nc.flush()
                elif how == "jetstream":
                    await js.publish(SUBJECT, payload)
                else:
                    request = b"PUB %s %d\r\n%s\r\n" % (SUBJECT.encode(), len(payload), payload)
                    with socket.create_connection(("127.0.0.1", port)) as raw:
                        raw.sendall(OUT_NATS_CONNECT + request)
                    await asyncio.sleep(0.02)  # one flush after the other, as one worker sends them
        finally:
            await nc.close()

    asyncio.run(run())


def interleave(records, size):
    """Both agents' records in pieces of ``size``, taking turns: (agent, [records]) in order."""
    pieces = {agent: [rs[i:i + size] for i in range(0, len(rs), size)] for agent, rs in records.items()}
    out = []
    for turn in range(max(map(len, pieces.values()))):
        for agent, agent_pieces in pieces.items():
            if turn < len(agent_pieces):
                out.append((agent, agent_pieces[turn]))
    return out


def vector_message(record: bytes) -> bytes:
    """One event as Vector's json codec writes it for the nats sink: the object alone, keys sorted."""
    return json.dumps(json.loads(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def flb_time(seconds: float) -> bytes:
    """A double as Fluent Bit's msgpack-to-JSON prints it (flb_pack.c): %.1f when whole, else %.16g."""
    return (b"%.1f" % seconds) if seconds == int(seconds) else (b"%.16g" % seconds)


def fluent_bit_message(records, tag=SUBJECT) -> bytes:
    """One flush as out_nats publishes it: [[time, {"tag": tag, ...record}], ...], the record's time
    being its Fluent Bit time (``--fluentbit-time``: the event's), non-ASCII escaped."""
    pairs = []
    for record in records:
        value = json.loads(record)
        body = json.dumps({"tag": tag, **value}, separators=(",", ":"), ensure_ascii=True).encode()
        pairs.append(b"[" + flb_time(value["time"] / 1e9) + b"," + body + b"]")
    return b"[" + b",".join(pairs) + b"]"


def run_correlator(url, tmp_path, messages, want):
    """Start the correlator, publish ``messages``, read ``want`` alerts from the alert subject, stop it
    (SIGTERM); its alerts (the same on stdout) and stderr."""
    process = correlator(url, tmp_path)
    try:
        publish(url, messages)
        found = bus_alerts(url, want, timeout=WAIT)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode("utf-8", "replace")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    written = alerts((tmp_path / "alerts.ndjson").read_bytes())  # stdout has them too
    assert [a["event"]["id"] for a in written] == [a["event"]["id"] for a in found]
    return found, stderr


def check(found, expected):
    assert [comparable(a) for a in found] == [comparable(a) for a in expected]


def test_vector_nats_sink_one_json_object_per_message(tmp_path, sample):
    """Vector's framing, core publishes for one agent (jetstream disabled, the sink's default) and
    JetStream publishes for the other (the recipe); one Detection stored twice (a publish whose PubAck
    was lost, sent again: no message id drops it) is taken once; messages that are no record are
    diagnosed and skipped."""
    records, expected = sample
    how = {"a": "core", "b": "jetstream"}
    messages = [(how[agent], vector_message(r)) for agent, piece in interleave(records, 1) for r in piece]
    detection = next(i for i, (_, payload) in enumerate(messages) if b'"sigma.detection"' in payload)
    messages.insert(detection + 1, messages[detection])
    bad = [b"garbage", b'{"type":"sigma.detection","version":9}', b"[1,2,3]"]
    middle = len(messages) // 2
    messages[middle:middle] = [("core", payload) for payload in bad]
    with NatsServer(tmp_path / "nats") as server:
        found, stderr = run_correlator(server.url, tmp_path, messages, len(expected))
    check(found, expected)
    assert "not valid JSON" in stderr and "version 9" in stderr
    assert "a JSON array that is not Fluent Bit's nats framing" in stderr
    assert "1 sent again (taken once)" in stderr  # the summary line at exit


def test_fluent_bit_nats_output_array_per_flush(tmp_path, sample):
    """Fluent Bit's framing, several records per message: one agent's flushes through nats-py's core
    publish, the other's as the plugin's own bytes on a fresh connection each; a flush of another
    shape, a cut one and one holding a bad record are diagnosed and the stream goes on."""
    records, expected = sample
    how = {"a": "core", "b": "out_nats"}
    messages = [(how[agent], fluent_bit_message(piece)) for agent, piece in interleave(records, FLUSH)]
    # (the match stage's heartbeats on a pipe depend on how its reads fall: the count varies a little)
    assert len(messages) >= 4 and all(payload.startswith(b"[[") for _, payload in messages)
    assert any(payload.count(b'"tag":') == FLUSH for _, payload in messages)
    bad = [
        b'[[1793610201.5,"not a map"]]',  # an array, not the framing: skipped whole
        b"[1793610201.5,{}]",  # one pair, not an array of pairs
        fluent_bit_message(records["a"][:2])[:-7],  # cut: not JSON
        b'[[1793610201.5,{"tag":"pipeshell.records.0","type":"sigma.detection","version":9}]]',
        b"[]",  # no record: nothing to do, nothing to say
    ]
    middle = len(messages) // 2
    messages[middle:middle] = [("core", payload) for payload in bad]
    with NatsServer(tmp_path / "nats") as server:
        found, stderr = run_correlator(server.url, tmp_path, messages, len(expected))
    check(found, expected)
    assert stderr.count("a JSON array that is not Fluent Bit's nats framing") == 2
    assert "not valid JSON" in stderr and "version 9" in stderr
    assert "sent again" not in stderr
