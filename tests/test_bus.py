"""The fleet bus (``pipeshell_filter.io.bus``) against a real nats-server with JetStream: order, no loss,
no repeats, across acks, replays, a restarting server and a killed one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from natsserver import NatsServer, free_port, needs_client, needs_nats, skip_reason
from pipeshell_filter.io import bus as busmod
from pipeshell_filter.io.bus import Bus, BusError

STREAM = "DETECTIONS"
DET = "pipeshell.det"
HB = "pipeshell.hb"


def records(prefix: str, n: int, start: int = 0):
    return [(f"{DET}.{prefix}", f'{{"n":{i},"src":"{prefix}"}}'.encode(), f"{prefix}-{i}")
            for i in range(start, start + n)]


def drain(consumer, want: int, timeout: float = 10.0, batch: int = 256):
    """Fetch until ``want`` messages came (or ``timeout`` passed); all of them, in arrival order."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += consumer.fetch(min(batch, want - len(got)), timeout=0.5)
    return got


def numbers(messages):
    import json

    return [json.loads(m.data)["n"] for m in messages]


def assert_stream_order(messages):
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


@pytest.fixture
def nats_server(tmp_path):
    """A started JetStream server storing in a fresh temporary directory, stopped at teardown."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bus(nats_server):
    with Bus(nats_server.url, connect_timeout=5) as b:
        b.ensure_stream(STREAM, [f"{DET}.>", f"{HB}.>"])
        yield b


@needs_nats
def test_every_record_once_in_order_per_subject(bus):
    n = 400
    det = records("agent1", n)
    hb = [(f"{HB}.agent1", f'{{"n":{i}}}'.encode(), f"hb-{i}") for i in range(n)]
    interleaved = [item for pair in zip(det, hb) for item in pair]
    bus.publish_many(interleaved[: n])
    for subject, payload, msg_id in interleaved[n: n + 20]:  # one at a time as well
        assert bus.publish(subject, payload, msg_id) > 0
    bus.publish_many(interleaved[n + 20:])

    dets = bus.consumer(STREAM, "corr-det", f"{DET}.>")
    hbs = bus.consumer(STREAM, "corr-hb", f"{HB}.>")
    got_det, got_hb = drain(dets, n, batch=100), drain(hbs, n, batch=100)
    assert numbers(got_det) == list(range(n))
    assert numbers(got_hb) == list(range(n))
    assert {m.subject for m in got_det} == {f"{DET}.agent1"}
    assert {m.subject for m in got_hb} == {f"{HB}.agent1"}
    assert_stream_order(got_det)
    assert_stream_order(got_hb)
    assert set(m.seq for m in got_det).isdisjoint(m.seq for m in got_hb)
    assert dets.fetch(timeout=0.3) == [] and hbs.fetch(timeout=0.3) == []
    assert dets.pending() == 0
    bus.publish(f"{DET}.agent2", b"{}", "late")
    deadline = time.monotonic() + 10  # the server counts a consumer's pending a moment after the publish's ack
    while dets.pending() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dets.pending() == 1 and hbs.pending() == 0


@needs_nats
def test_same_msg_id_is_stored_once(bus):
    first = bus.publish(f"{DET}.a", b"one", "alert-42")
    again = bus.publish(f"{DET}.a", b"one", "alert-42")
    assert again == first  # the PubAck of a duplicate names the stored copy
    bus.publish_many([(f"{DET}.a", b"one", "alert-42"), (f"{DET}.a", b"two", "alert-43"),
                      (f"{DET}.a", b"two", "alert-43")])
    consumer = bus.consumer(STREAM, "dedup", f"{DET}.>")
    got = drain(consumer, 3, timeout=1.5)
    assert [m.data for m in got] == [b"one", b"two"]
    assert got[0].seq == first


@needs_nats
def test_resume_after_ack_gives_only_unacknowledged(nats_server):
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        bus.publish_many(records("a", 10))
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>", ack_wait=1.0)
        got = drain(consumer, 10)
        assert numbers(got) == list(range(10))
        consumer.ack(got[5])  # acknowledges records 0..5 (AckPolicy.ALL)
        consumer.ack(got[2])  # an older one: nothing changes
    with Bus(nats_server.url) as bus:
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>", ack_wait=1.0)
        again = drain(consumer, 4, timeout=5)
        assert numbers(again) == [6, 7, 8, 9]
        assert [m.seq for m in again] == [m.seq for m in got[6:]]
        # Unacknowledged past ack_wait: the server redelivers, the caller does not see them twice.
        assert consumer.fetch(timeout=1.6) == []
        bus.publish_many(records("a", 2, start=10))
        assert numbers(drain(consumer, 2)) == [10, 11]


@needs_nats
def test_start_seq_replays_exactly_from_there(nats_server):
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>", f"{HB}.>"])
        items = records("a", 30)
        # Other subjects in between: the stream sequences of the filter's records are not contiguous.
        mixed = []
        for i, item in enumerate(items):
            mixed.append(item)
            if i % 3 == 0:
                mixed.append((f"{HB}.a", b"{}", f"hb-{i}"))
        bus.publish_many(mixed)
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
        got = drain(consumer, 30)
        assert numbers(got) == list(range(30))
        consumer.ack(got[-1])  # all acknowledged
        k = got[11].seq
    with Bus(nats_server.url) as bus:
        replay = bus.consumer(STREAM, "corr", f"{DET}.>", start_seq=k)
        again = drain(replay, 19)
        assert numbers(again) == list(range(11, 30))
        assert [m.seq for m in again] == [m.seq for m in got[11:]]
        assert replay.fetch(timeout=0.3) == []
        # A start between two of the filter's records begins at the next one.
        between = bus.consumer(STREAM, "corr", f"{DET}.>", start_seq=got[3].seq + 1)
        assert numbers(drain(between, 26))[:2] == [4, 5]
        with pytest.raises(BusError):
            bus.consumer(STREAM, "corr", f"{DET}.>", start_seq=0)


@needs_nats
def test_server_restart_is_ridden_out(nats_server):
    n = 300
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        bus.publish_many(records("a", n))
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
        got = drain(consumer, 100, batch=64)
        consumer.ack(got[-1])

        nats_server.stop()
        published = []
        failures = []

        def publish_later():
            try:
                bus.publish_many(records("a", n, start=n))
                published.append(bus.publish(f"{DET}.a", b'{"n":%d}' % (2 * n), "a-single"))
            except BaseException as exc:  # reported by the assertions below
                failures.append(exc)

        publisher = threading.Thread(target=publish_later, daemon=True)
        publisher.start()
        empties = []
        for _ in range(3):  # the server is down: fetch waits about its timeout and gives nothing
            started = time.monotonic()
            empties.append(consumer.fetch(50, timeout=0.4))
            assert time.monotonic() - started < 3.0
        assert publisher.is_alive() and not published  # publish waits for the server
        nats_server.start()
        publisher.join(20)
        assert not publisher.is_alive() and not failures, failures
        assert published and published[0] > 0

        rest = drain(consumer, 2 * n + 1 - len(got) - sum(map(len, empties)), timeout=15)
        everything = got + [m for e in empties for m in e] + rest
        assert numbers(everything) == list(range(2 * n + 1))
        assert_stream_order(everything)
        consumer.ack(everything[-1])
        assert consumer.fetch(timeout=0.3) == []
        assert consumer.pending() == 0


@needs_nats
def test_unanswered_requests_are_sent_again(nats_server):
    """A server that stops answering while the connection stays up (SIGSTOP): publishes and acks time
    out and are sent again; once it answers, every record is stored once (the retries are duplicates
    by message id) and the ack is confirmed."""
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        bus.publish_many(records("a", 20))
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
        first = drain(consumer, 20)
        other = bus.consumer(STREAM, "other", f"{DET}.>")  # fetched from while the ack waits
        assert len(drain(other, 20)) == 20
        done = {}

        def publish_many():
            bus.publish_many(records("a", 500, start=20))
            done["many"] = True

        def publish_one():
            done["one"] = bus.publish(f"{DET}.b", b'{"n":520}', "b-520")

        def ack():
            consumer.ack(first[-1])
            done["ack"] = True

        nats_server.pause()
        try:
            workers = [threading.Thread(target=f, daemon=True) for f in (publish_many, publish_one, ack)]
            for worker in workers:
                worker.start()
            started = time.monotonic()
            assert other.fetch(timeout=0.5) == []
            # its timeout, give or take one attempt (``Consumer.fetch``), and a loaded machine's slack: not
            # the 30 s last resort (3.0 s was too tight: 3.15 s in a CI run beside the whole suite)
            assert time.monotonic() - started < 0.5 + busmod.ATTEMPT_TIMEOUT + 2.0
            time.sleep(busmod.ATTEMPT_TIMEOUT + 0.5)  # past one attempt: every request is sent again
            assert all(worker.is_alive() for worker in workers) and not done
        finally:
            nats_server.resume()
        for worker in workers:
            worker.join(20)
        assert sorted(done) == ["ack", "many", "one"]
        rest = drain(consumer, 501)
        got = first + rest
        assert [n for m, n in zip(got, numbers(got)) if m.subject == f"{DET}.a"] == list(range(520))
        # The single publish was stored once, and its PubAck named that copy.
        assert [m.seq for m in got if m.subject == f"{DET}.b"] == [done["one"]]
        assert_stream_order(got)
        assert consumer.fetch(timeout=0.3) == []


@needs_nats
def test_sigkill_keeps_acknowledged_publishes(nats_server):
    n = 1000
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        bus.publish_many(records("a", n))
        last = bus.publish(f"{DET}.a", b'{"n":%d}' % n, "a-last")
        nats_server.kill()
        nats_server.start()
        # The same connection carries on after the crash.
        assert bus.publish(f"{DET}.a", b'{"n":%d}' % (n + 1), "a-after") == last + 1
    with Bus(nats_server.url) as bus:
        consumer = bus.consumer(STREAM, "after-crash", f"{DET}.>")
        got = drain(consumer, n + 2)
        assert numbers(got) == list(range(n + 2))
        assert_stream_order(got)


@needs_nats
def test_lost_deliveries_are_recovered_in_order(bus):
    """Deliveries that never reach the consumer (here: pulled through another subscription to the same
    durable, as a dropped connection would swallow them) show as a jump in the delivery sequence; the
    consumer makes the durable anew from its ack floor, so nothing is skipped and nothing repeats."""
    bus.publish_many(records("a", 50))
    consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
    first = consumer.fetch(10, timeout=2)
    assert numbers(first) == list(range(10))
    consumer.ack(first[4])

    async def steal():
        sub = await bus._js.pull_subscribe_bind(durable="corr", stream=STREAM)
        msgs = await sub.fetch(7, timeout=2)
        await sub.unsubscribe()
        return len(msgs)

    assert bus._call(steal()) == 7
    rest = drain(consumer, 40)
    everything = first + rest
    assert numbers(everything) == list(range(50))
    assert_stream_order(everything)
    consumer.ack(first[7])  # delivered before the reset: acknowledged through the new incarnation
    consumer.ack(rest[-1])
    assert consumer.fetch(timeout=0.3) == []
    assert consumer.pending() == 0


@needs_nats
def test_messages_the_stream_discarded_before_they_were_read_are_told(nats_server):
    """A stream with limits drops its oldest messages; a consumer behind them skips them in silence
    (the server says nothing): the gap below the stream's first sequence is told, once."""
    with Bus(nats_server.url) as bus:
        bus._call(bus._js.add_stream(name=STREAM, subjects=[f"{DET}.>", f"{HB}.>"], max_msgs=5))
        bus.publish_many(records("a", 20))  # sequences 1..20: 16..20 kept
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
        got = drain(consumer, 5)
        assert numbers(got) == list(range(15, 20)) and consumer.discarded() == [(1, 15)]
        consumer.ack(got[-1])
        bus.publish_many(records("a", 2, start=20) + [(f"{HB}.a", b"{}", "hb")])  # 21, 22; 23 another subject
        assert numbers(drain(consumer, 2)) == [20, 21] and consumer.discarded() == []
        bus.publish_many(records("a", 10, start=22))  # 24..33: 29..33 kept
        assert numbers(drain(consumer, 5)) == list(range(27, 32)) and consumer.discarded() == [(23, 28)]
        bus.publish(f"{HB}.a", b"{}", "hb2")
        bus.publish(f"{DET}.a", b'{"n":32}', "a-32")  # after another subject's message: nothing discarded
        assert numbers(drain(consumer, 1)) == [32] and consumer.discarded() == []
        again = bus.consumer(STREAM, "corr", f"{DET}.>", start_seq=3)  # a saved position before them
        assert numbers(drain(again, 4)) == [29, 30, 31, 32] and again.discarded() == [(3, 30)]


@needs_nats
def test_a_refusal_that_waiting_cannot_cure_is_final_at_once(nats_server):
    """A stream full with discard new, a deleted stream: the server answers, and answers no; such
    refusals were retried for ever in silence (every 5xx counted as a server restarting)."""
    with Bus(nats_server.url) as bus:
        bus._call(bus._js.add_stream(name=STREAM, subjects=[f"{DET}.>"], max_msgs=3, discard="new"))
        started = time.monotonic()
        with pytest.raises(BusError, match="maximum messages exceeded"):
            bus.publish_many(records("a", 5))
        with pytest.raises(BusError, match="maximum messages exceeded"):
            bus.publish(f"{DET}.a", b"x", "one-more")
        assert time.monotonic() - started < busmod.ATTEMPT_TIMEOUT + 3
        bus._call(bus._js.delete_stream(STREAM))
        started = time.monotonic()
        for publish in (lambda: bus.publish_many(records("b", 2)), lambda: bus.publish(f"{DET}.b", b"x", "b")):
            with pytest.raises(BusError, match=f"publish to {DET}.b: no stream on NATS at .* takes this subject"):
                publish()
        assert time.monotonic() - started < 2 * busmod.ATTEMPT_TIMEOUT + 3
        bus.ensure_stream(STREAM, [f"{DET}.>"])  # made again: the bus goes on
        assert bus.publish(f"{DET}.b", b"x", "b") == 1


@needs_nats
def test_a_server_that_stays_unreachable_is_said_and_so_is_its_return(nats_server):
    """Waited for in silence for ever, by an agent's publish and a correlator's fetch alike; now a
    line after a while, again every so often, and one when it is back (times shortened here)."""
    said = []
    with Bus(nats_server.url, unreachable_first=0.6, unreachable_every=1.0) as bus:
        bus.report = said.append
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
        nats_server.stop()
        started = time.monotonic()
        while time.monotonic() - started < 2.9:
            assert consumer.fetch(timeout=0.3) == []
        assert 2 <= len(said) <= 3 and all("unreachable since" in line and "still trying" in line for line in said)
        assert said[0].startswith(f"NATS at {nats_server.url} unreachable since 20")
        nats_server.start()
        bus.publish(f"{DET}.a", b"{}", "back")  # waits for the reconnection
        assert len(drain(consumer, 1)) == 1
        assert said[-1].startswith(f"NATS at {nats_server.url} reachable again after ")
        count = len(said)
        assert consumer.fetch(timeout=0.3) == [] and len(said) == count  # said once


@needs_nats
def test_close_ends_a_blocked_publish_and_does_not_hang(nats_server):
    bus = Bus(nats_server.url)
    bus.ensure_stream(STREAM, [f"{DET}.>"])
    nats_server.stop()
    outcome = []

    def publish():
        try:
            bus.publish(f"{DET}.a", b"x", "x-1")
            outcome.append("published")
        except BusError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()
    started = time.monotonic()
    bus.close()
    bus.close()  # idempotent
    thread.join(5)
    assert time.monotonic() - started < 6
    assert len(outcome) == 1 and isinstance(outcome[0], BusError), outcome
    assert "closed" in str(outcome[0])
    assert not any(t.name == "pipeshell-filter-nats" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(BusError, match="closed"):
        bus.publish(f"{DET}.a", b"x", "x-2")


@needs_nats
def test_ensure_stream_updates_an_existing_stream(nats_server):
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"], duplicate_window=120)
        bus.publish(f"{DET}.a", b"1", "one")
        bus.ensure_stream(STREAM, [f"{HB}.>"], duplicate_window=60)  # adds, keeps the old subject
        info = bus._call(bus._js.stream_info(STREAM))
        assert sorted(info.config.subjects) == sorted([f"{DET}.>", f"{HB}.>"])
        assert info.config.duplicate_window == 60
        assert [getattr(v, "value", v) for v in (info.config.storage, info.config.retention)] == ["file", "limits"]
        assert info.state.messages == 1  # updated, not made anew
        bus.ensure_stream(STREAM, [f"{DET}.>", f"{HB}.>"], duplicate_window=60)  # nothing to change
        assert bus.publish(f"{HB}.a", b"2", "two") == 2


@needs_nats
def test_a_stream_whose_operator_set_a_max_age_under_the_duplicate_window_is_used(nats_server):
    """An operator sizing the stream by age (``max_age`` 1 h) must lower its duplicate window with it (the
    server refuses a window longer than the age).  The update to the two-hour window was refused, and
    every agent and correlator stopped at start (exit 1) for as long as the limit stood.  The window is
    now the age, the most that stream can hold (a message older than that is gone anyway)."""
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"], duplicate_window=7200)
        config = bus._call(bus._js.stream_info(STREAM)).config
        bus._call(bus._js.update_stream(config.evolve(max_age=3600.0, duplicate_window=600.0)))
        bus.ensure_stream(STREAM, [f"{DET}.>", f"{HB}.>"], duplicate_window=7200)
        config = bus._call(bus._js.stream_info(STREAM)).config
        assert (config.max_age, config.duplicate_window) == (3600.0, 3600.0)
        assert sorted(config.subjects) == sorted([f"{DET}.>", f"{HB}.>"])
        bus.ensure_stream(STREAM, [f"{DET}.>", f"{HB}.>"], duplicate_window=7200)  # nothing to change
        assert bus.publish(f"{HB}.a", b"2", "two") == 1


@needs_nats
def test_a_stream_that_forgets_acknowledged_records_is_refused(nats_server):
    with Bus(nats_server.url) as bus:
        bus._call(bus._js.add_stream(name="WORK", subjects=["work.>"], retention="workqueue"))
        with pytest.raises(BusError, match="workqueue retention"):
            bus.ensure_stream("WORK", ["work.>"])


@needs_nats
def test_a_stream_that_does_not_acknowledge_publishes_is_refused(nats_server):
    """An operator's stream with ``no_ack``: the server stores each publish and answers none, and an agent
    retried every batch for ever, said as a hung server ("not answering ... still trying") while the
    server answered everything else."""
    with Bus(nats_server.url, setup_timeout=5) as bus:
        bus._call(bus._js.add_stream(name="QUIET", subjects=["quiet.>"], no_ack=True))
        started = time.monotonic()
        with pytest.raises(BusError, match="no_ack"):
            bus.ensure_stream("QUIET", ["quiet.>"])
        assert time.monotonic() - started < 3


PERMISSIONS = """authorization {
  users = [
    {user: admin, password: pw}
    {user: reader, password: pw, permissions: {
      publish: {allow: ["$JS.API.STREAM.>", "$JS.API.CONSUMER.INFO.>", "$JS.API.CONSUMER.CREATE.>",
                        "$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.DURABLE.>"]},
      subscribe: {allow: ["_INBOX.>"]}}}
  ]
}
"""


@needs_nats
def test_a_request_the_users_permissions_refuse_is_final_in_one_line(tmp_path):
    """A NATS user not allowed to publish on the records' subject, or to pull from its durable: the server
    says so (a permissions violation, the connection kept up) and answers nothing, and every publish or
    pull was retried for ever, said as a hung or overloaded server; a correlator read nothing and said
    nothing.  The refusal is now final, in one line, as the server's other refusals are."""
    with NatsServer(tmp_path / "nats", config=PERMISSIONS) as server:
        admin, reader = (server.url.replace("//", f"//{user}:pw@") for user in ("admin", "reader"))
        with Bus(admin) as bus:
            bus.ensure_stream(STREAM, [f"{DET}.>"])
            bus.publish(f"{DET}.a", b"1", "one")
        with Bus(reader, setup_timeout=20) as bus:
            guard = threading.Timer(30, bus.close)  # the retries for ever, ended (BusError "closed")
            guard.daemon = True
            guard.start()
            for publish in (lambda: bus.publish(f"{DET}.a", b"2", "two"),
                            lambda: bus.publish_many([(f"{DET}.a", b"3", "three")])):
                started = time.monotonic()
                with pytest.raises(BusError, match=f"(?i)permissions violation for publish to .{DET}.a") as caught:
                    publish()
                assert "\n" not in str(caught.value) and time.monotonic() - started < 10
            consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
            started = time.monotonic()
            with pytest.raises(BusError, match="(?i)permissions violation"):
                while time.monotonic() - started < 20:
                    assert consumer.fetch(timeout=0.5) == []
            assert time.monotonic() - started < 10
            guard.cancel()


@needs_nats
def test_server_without_jetstream_is_a_prompt_error(tmp_path):
    with NatsServer(tmp_path / "plain", jetstream=False) as server, Bus(server.url) as bus:
        started = time.monotonic()
        with pytest.raises(BusError, match="no JetStream"):
            bus.ensure_stream(STREAM, [f"{DET}.>"])
        with pytest.raises(BusError, match="no JetStream"):
            bus.consumer(STREAM, "corr", f"{DET}.>")
        assert time.monotonic() - started < 5


@needs_nats
def test_a_client_closed_for_good_is_replaced(bus):
    """nats-py stops reconnecting after some server errors; the bus then connects a new client, and a
    consumer binds to it again without losing its place."""
    bus.publish_many(records("a", 10))
    consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
    first = consumer.fetch(4, timeout=2)
    assert numbers(first) == [0, 1, 2, 3]
    old = bus._nc
    bus._call(old.close())
    assert bus.publish(f"{DET}.a", b'{"n":10}', "a-10") == 11
    assert bus._nc is not old and bus._nc.is_connected
    consumer.ack(first[1])  # received through the old client, acknowledged through the new one
    assert bus._call(bus._js.consumer_info(STREAM, "corr")).ack_floor.stream_seq == first[1].seq
    rest = drain(consumer, 7)
    assert numbers(first + rest) == list(range(11))
    consumer.ack(rest[-1])
    assert consumer.pending() == 0 and consumer.fetch(timeout=0.3) == []


@needs_nats
def test_missing_stream_is_a_one_line_error(bus):
    with pytest.raises(BusError) as caught:
        bus.consumer("NO_SUCH_STREAM", "corr", "nothing.>")
    assert "NO_SUCH_STREAM" in str(caught.value) and "\n" not in str(caught.value)


def test_server_urls_are_checked_before_any_connection():
    assert busmod.check_servers(" nats://a:4222, tls://u:p@b ,127.0.0.1:4333,[::1]:4222") == \
        ["nats://a:4222", "tls://u:p@b", "nats://127.0.0.1:4333", "nats://[::1]:4222"]
    for bad, why in (("", "no NATS server URL"), (",", "no NATS server URL"), ("nats://a,,nats://b", "empty URL"),
                     ("nats://127.0.0.1:99999", "out of range"), ("nats://[::1", "IPv6"),
                     ("nats://127.0.0.1:abc", "integer"), ("http://h:4222", "nats:// or tls://"),
                     ("ws://h:4222", "nats:// or tls://"), ("nats://u:secret@:4222", "no host"),
                     ("nats://h:0", "port 0"), ("nats://h:4222/path", "no path"),
                     ("nats://exa mple:4222", "no space")):  # was a DNS failure, exit 1
        with pytest.raises(ValueError, match=why) as caught:
            busmod.check_servers(bad)
        assert "secret" not in str(caught.value)


def test_a_password_holding_an_at_sign_is_not_shown():
    """An ``@`` left unencoded in a password (the URL's parser takes the last ``@`` as the end of the
    credentials, and the client connects with it): the part after it was shown in every message."""
    assert busmod._redact("nats://alice:s3cr@tword@127.0.0.1:1") == "nats://***@127.0.0.1:1"
    assert busmod._redact("nats://alice:s3cr@tword@h:4222,nats://bob:pw@h2:1") == "nats://***@h:4222,nats://***@h2:1"
    with pytest.raises(ValueError) as caught:
        busmod.check_servers("nats://alice:s3cr@tword@h:4222/path")
    assert "tword" not in str(caught.value)


def test_missing_nats_py_gives_the_install_hint(monkeypatch):
    def no_nats():
        raise ImportError("No module named 'nats'")

    monkeypatch.setattr(busmod, "_nats", no_nats)
    with pytest.raises(BusError) as caught:
        Bus("nats://127.0.0.1:4222")
    assert str(caught.value) == "the NATS bus needs nats-py: pip install 'pipeshell-filter[nats]'"


def test_module_imports_without_nats_py():
    """The filter must import the module, and fail with the hint only when a bus is asked for."""
    code = ("import sys; sys.modules['nats'] = None\n"
            "from pipeshell_filter.io.bus import Bus, BusError\n"
            "try:\n    Bus('nats://127.0.0.1:1')\n"
            "except BusError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == busmod.INSTALL_HINT and out.stderr == ""


@needs_client
def test_no_server_is_a_one_line_error_within_connect_timeout():
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BusError) as caught:
        Bus(url, connect_timeout=1.0)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert elapsed < 3.0
    assert url in message and "\n" not in message
    assert message.startswith("cannot connect to NATS")
    assert not any(t.name == "pipeshell-filter-nats" and t.is_alive() for t in threading.enumerate())


class PlaintextServer:
    """A socket that answers as a NATS server without TLS (``tls_required`` false, credentials asked
    for), keeps what each client sends, and refuses what it does not understand as nats-server does."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.got = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.settimeout(2)
                client.sendall(b'INFO {"server_id":"fake","version":"2.10.0","proto":1,"headers":true,'
                               b'"max_payload":1048576,"jetstream":true,"auth_required":true,'
                               b'"tls_required":false}\r\n')
                try:
                    self.got += client.recv(65536)
                    client.sendall(b"-ERR 'Unknown Protocol Operation'\r\n")
                except OSError:
                    pass

    def close(self):
        import socket
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@needs_client
def test_a_tls_url_never_sends_credentials_in_the_clear():
    """tls:// to a server that does not offer TLS: nats-py went on in plaintext (it upgrades only
    when the server asks), CONNECT with the password included; now the connection is TLS or none."""
    server = PlaintextServer()
    try:
        started = time.monotonic()
        with pytest.raises(BusError) as caught:
            Bus(f"tls://alice:s3cret@127.0.0.1:{server.port}", connect_timeout=5)
        took = time.monotonic() - started
    finally:
        server.close()
    assert server.got and b"CONNECT" not in server.got and b"s3cret" not in server.got
    message = str(caught.value)
    assert "TLS failed" in message and "s3cret" not in message and took < 3, (message, took)


@needs_nats
def test_no_traceback_reaches_stderr(nats_server, tmp_path):
    """A whole session with a server restart, in a child process: nothing on stderr."""
    script = tmp_path / "session.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from natsserver import NatsServer\n"
        "from pipeshell_filter.io.bus import Bus\n"
        f"server = NatsServer({str(tmp_path / 'child')!r}).start()\n"
        "bus = Bus(server.url)\n"
        "bus.ensure_stream('S', ['s.>'])\n"
        "bus.publish_many([('s.a', b'x', str(i)) for i in range(50)])\n"
        "c = bus.consumer('S', 'd', 's.>')\n"
        "c.fetch(10, 1)\n"
        "server.kill()\n"
        "print(len(c.fetch(10, 0.3)))\n"
        "server.start()\n"
        "bus.publish('s.a', b'y', 'late')\n"
        "got, deadline = 0, time.monotonic() + 10\n"
        "while got < 41 and time.monotonic() < deadline:\n"
        "    got += len(c.fetch(100, 0.5))\n"
        "print(got)\n"
        "server.stop()\n"
        "bus.close()\n"
        "print('closed')\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.split()
    assert lines[-1] == "closed"
    assert int(lines[0]) + int(lines[1]) == 41  # 40 left of the first 50, and the late one


@needs_nats
def test_a_stream_deleted_and_made_anew_under_a_consumer_is_read_from_its_first_message(bus, monkeypatch):
    """An operator deletes the stream and makes it again (``nats stream rm``, ``nats stream add``) while a
    consumer reads it: its durable is gone with it, and was made anew from the old stream's position, so
    the new stream's first messages (as many as the old one had) were skipped in silence.  Now it is read
    from its first message, and said (``remade``)."""
    monkeypatch.setattr(busmod, "IDLE_CHECK", 0.5)
    bus.publish_many(records("a", 5))
    consumer = bus.consumer(STREAM, "corr", f"{DET}.>")
    got = drain(consumer, 5)
    consumer.ack(got[-1])
    made = consumer.made
    assert made is not None

    async def remake():
        config = (await bus._js.stream_info(STREAM)).config
        await bus._js.delete_stream(STREAM)
        await bus._js.add_stream(config)

    bus._call(remake())
    bus.publish_many(records("b", 8))
    again = drain(consumer, 8)
    assert numbers(again) == list(range(8)) and [m.seq for m in again] == list(range(1, 9))
    assert consumer.remade() == [made] and consumer.made not in (None, made) and consumer.remade() == []
    consumer.ack(again[-1])
    assert consumer.fetch(timeout=0.3) == [] and consumer.pending() == 0


@needs_nats
def test_a_server_restarted_without_jetstream_ends_a_publish_in_one_line(nats_server):
    """The server restarted without ``-js`` under a running agent: its publishes were retried for ever in
    silence (a correlator, and an agent at start, said at once that the server has no JetStream)."""
    with Bus(nats_server.url) as bus:
        bus.ensure_stream(STREAM, [f"{DET}.>"])
        bus.publish_many(records("a", 3))
        nats_server.stop()
        nats_server.jetstream = False
        nats_server.start()
        failed = []
        publishing = threading.Thread(target=lambda: failed.append(pytest.raises(BusError, bus.publish_many,
                                                                                 records("a", 3, start=3))),
                                      daemon=True)
        publishing.start()
        publishing.join(15.0)
        assert not publishing.is_alive(), "the publish is retried for ever"
    assert failed and "no JetStream" in str(failed[0].value) and "\n" not in str(failed[0].value)
