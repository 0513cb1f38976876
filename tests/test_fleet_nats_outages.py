"""The fleet bus when the server is slow, hung, killed or shared by two correlators of one partition,
with the real ``nats-server`` (``natsserver``): what the correlator counts as the agents' silence,
how soon an agent's publishes go on after a crash, what is said, and who alerts."""

import datetime
import json
import re
import signal
import sys
import threading
import time

import pytest

from fleettools import QUICK_BY_HOST, WAIT, Fleet, hosts, open_text, wait_until
from natsproxy import DroppingRelay, HoldingRelay
from natsserver import NatsServer, needs_nats

pytestmark = needs_nats


@pytest.mark.parametrize("held", [b"pipeshell.alerts", b"$JS.ACK"], ids=["alert publish", "ack"])
def test_a_correlator_held_up_by_the_server_does_not_count_the_wait_as_the_agents_silence(tmp_path, held):
    """The server slow for 8 s just as the correlator publishes an alert, or acknowledges (the relay
    holds its traffic): both agents were declared silent (--agent-idle 3) when it came back, and the
    fleet's time moved on without them.  The wait is no time in which the correlator could hear them."""
    with NatsServer(tmp_path / "nats") as server:
        relay = HoldingRelay(server.port)
        fleet = Fleet(tmp_path, server.url)
        try:
            correlate = fleet.correlator(relay.url, extra=["--agent-idle", "3", "--early-alerts"])
            fleet.tick(3)
            relay.hold_on(held, 8)
            for _ in range(3):
                fleet.write(0, "first")
            assert relay.held.wait(WAIT)
            fleet.tick(8)
            for _ in range(3):
                fleet.write(1, "second")
            fleet.tick(3)
            assert wait_until(lambda: len(hosts(correlate)) == 2), hosts(correlate)
        finally:
            fleet.stop()
            relay.close()
    err = correlate.stderr.read().decode()
    assert hosts(correlate) == [["first"], ["second"]], err
    assert "sent nothing" not in err, err


def test_publishes_in_flight_when_the_server_is_killed_are_sent_again_as_soon_as_it_is_back(tmp_path, monkeypatch):
    """Records published to a server that hangs, then is killed and restarted: their PubAcks never come,
    and they waited the whole ATTEMPT_TIMEOUT (here made 30 s) after the restart before they were sent
    again.  Now they are sent again once the client is connected anew, and each is stored once."""
    from pipeshell_filter.io import bus as bus_module
    monkeypatch.setattr(bus_module, "ATTEMPT_TIMEOUT", 30.0)
    with NatsServer(tmp_path / "nats") as server, bus_module.Bus(server.url, name="agent") as bus:
        bus.ensure_stream("T", ["t.>"])
        server.pause()
        before = bus._nc.stats["out_msgs"]
        publishing = threading.Thread(target=bus.publish_many,
                                      args=([("t.x", b"%d" % i, f"id{i}") for i in range(100)],), daemon=True)
        publishing.start()
        # sent, unanswered: every one handed to the socket (none left in the client's buffer)
        assert wait_until(lambda: bus._nc.stats["out_msgs"] >= before + 100 and not bus._nc.pending_data_size,
                          step=0.05), "the publishes were not sent"
        server.kill()
        server.start()
        publishing.join(20.0)
        assert not publishing.is_alive(), "the publishes still wait for the PubAcks of the killed server"
        assert bus.last_seq("T") == 100


def test_an_agent_is_not_taken_for_silent_while_it_reconnects_after_a_server_restart(tmp_path):
    """SIGKILL and restart of the server: the agents reconnect and send what they read meanwhile a
    moment after the correlator is back; with a short --agent-idle (2 s) that moment was their silence,
    and the fleet's time moved on without them.  No Detection is lost."""
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url)
        try:
            correlate = fleet.correlator(server.url, extra=["--agent-idle", "2"])
            fleet.tick(3)
            for restart in range(3):
                fleet.write(0, f"victim{restart}")
                server.kill()
                fleet.write(0, f"victim{restart}")
                time.sleep(0.5)
                server.start()
                fleet.write(0, f"victim{restart}")
                fleet.tick(4)
            fleet.tick(12)  # the windows (10 s) close
            assert wait_until(lambda: len(hosts(correlate)) == 3), hosts(correlate)
        finally:
            fleet.stop()
    err = correlate.stderr.read().decode()
    assert sorted(hosts(correlate)) == [["victim0"], ["victim1"], ["victim2"]], err
    assert "sent nothing" not in err and "late" not in err.replace("arrive late", ""), err


@pytest.mark.parametrize("role", ["correlator", "agent"])
def test_a_hung_server_is_said_long_before_the_clients_pings_fail(tmp_path, role):
    """SIGSTOP: the connection stays up, and a hung server was said only once the client's pings failed
    (20-30 s on), then unreachable_first later.  Now the first request left unanswered starts the
    count, and the line says what it is; its end is said too."""
    from pipeshell_filter.io.bus import Bus
    said = []
    with NatsServer(tmp_path / "nats") as server, Bus(server.url, name=role, unreachable_first=1.0) as bus:
        bus.report = said.append
        bus.ensure_stream("T", ["t.>"])
        consumer = bus.consumer("T", "reader", "t.>")
        server.pause()
        started = time.monotonic()
        try:
            if role == "agent":
                publishing = threading.Thread(target=bus.publish_many, args=([("t.x", b"1", "one")],), daemon=True)
                publishing.start()
                assert wait_until(lambda: said, timeout=15.0), "nothing said within 15 s"
            else:
                while not said and time.monotonic() - started < 15.0:
                    consumer.fetch(1, 0.5)
                assert said, "nothing said within 15 s"
        finally:
            server.resume()
        assert "not answering since" in said[0] and "hung or overloaded" in said[0], said
        if role == "agent":
            publishing.join(WAIT)
            assert wait_until(lambda: len(said) > 1, timeout=5.0)
        else:
            assert wait_until(lambda: consumer.fetch(1, 0.5) is not None and len(said) > 1, timeout=WAIT)
        assert said[-1].startswith(f"NATS at {server.url} answering again after"), said


def test_a_second_correlator_of_a_partition_stands_by_and_takes_over_when_the_first_ends(tmp_path):
    """Two correlators started on partition 0 both read its durable and both alerted (double alerts,
    the second's start even made the durable anew under the first).  The second now stands by, says
    so in one line, and takes over once the first has ended; each alert is made once."""
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url)
        try:
            first = fleet.correlator(server.url, "first")
            fleet.active(first)
            second = fleet.correlator(server.url, "second")
            fleet.tick(3)
            for _ in range(3):
                fleet.write(0, "victim")
            fleet.tick(14)  # the window (10 s) closes
            assert wait_until(lambda: hosts(first) or hosts(second)), "no alert"
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=WAIT) == 0, first.stderr.read()
            fleet.tick(2)
            for _ in range(3):
                fleet.write(1, "later")
            fleet.tick(14)
            assert wait_until(lambda: hosts(second)), "the standby did not take over"
        finally:
            fleet.stop()
    err = second.stderr.read().decode()
    assert hosts(first) == [["victim"]] and hosts(second) == [["later"]], err
    assert "partition 0 is held by another correlator" in err, err


def test_a_standby_takes_over_from_a_killed_correlator_once_its_lease_lapses(tmp_path):
    """kill -9 of the active correlator: nobody deletes its key, which lapses LEASE seconds after its
    last renewal; the standby then reads on from the durable's acknowledged position."""
    from pipeshell_filter.io.fleet import PartitionLease
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url)
        try:
            first = fleet.correlator(server.url, "first")
            fleet.active(first)
            second = fleet.correlator(server.url, "second")
            fleet.tick(2)
            first.kill()
            first.wait(timeout=WAIT)
            for _ in range(3):
                fleet.write(1, "victim")
            fleet.tick(int(PartitionLease.LEASE) + 14)  # the lease lapses, the window (10 s) closes
            assert wait_until(lambda: hosts(second)), "the standby did not take over"
        finally:
            fleet.stop()
    err = second.stderr.read().decode()
    assert hosts(second) == [["victim"]], err
    assert "standing by" in err and "partition 0: taken over" in err, err


def test_a_correlator_cut_off_past_its_lease_while_a_standby_took_over_stops_in_one_line(tmp_path):
    """The active correlator's link held past the lease (a relay): the standby takes over, and the first,
    once it can talk again, finds its lease gone and stops (exit 1) instead of alerting beside it."""
    from pipeshell_filter.io.fleet import PartitionLease
    with NatsServer(tmp_path / "nats") as server:
        relay = HoldingRelay(server.port)
        fleet = Fleet(tmp_path, server.url)
        try:
            first = fleet.correlator(relay.url, "first")
            fleet.active(first)
            second = fleet.correlator(server.url, "second")
            fleet.tick(2)
            relay.hold_on(b"$KV", PartitionLease.LEASE + 8)
            assert relay.held.wait(WAIT)
            assert wait_until(lambda: "taken over" in open_text(second), timeout=WAIT)
            assert first.wait(timeout=WAIT) == 1
        finally:
            fleet.stop()
            relay.close()
    err = first.stderr.read().decode()
    assert "its lease lapsed" in err and "took it over; this one stops" in err, err
    assert len(err.strip().splitlines()) <= 3, err  # perhaps a line on the wait, then the reason


# The correlator held up (a pause of the process: swapped out, a VM migrated, SIGSTOP) for longer than its
# lease, right after a fetch that brought a record of host "victim".
STALLED_AFTER_FETCH = [sys.executable, "-c", """
import time
from pipeshell_filter.io import bus, fleet
fetch = bus.Consumer.fetch

def stalled(self, *args, **kwargs):
    messages = fetch(self, *args, **kwargs)
    if not stalled.done and any(b"victim" in message.data for message in messages):
        stalled.done = True
        time.sleep(fleet.PartitionLease.LEASE + 6)
    return messages

stalled.done = False
bus.Consumer.fetch = stalled
from pipeshell_filter.launch import main
main()
"""]
ONE_PIPE_EVENT = QUICK_BY_HOST.replace(">= 3", ">= 1")


def test_a_correlator_held_up_past_its_lease_after_a_fetch_leaves_what_it_fetched_to_the_one_that_took_over(
        tmp_path):
    """The first correlator fetched a record, then stood still past its lease while the standby took over:
    it went on with the record it had fetched (an alert beside the standby's, an ack from under it).  Now
    it says in one line that it lost the lease, and stops without using or acknowledging the record,
    which the standby gets and alerts on, once."""
    with NatsServer(tmp_path / "nats") as server:
        fleet = Fleet(tmp_path, server.url)
        (tmp_path / "by.yml").write_text(ONE_PIPE_EVENT)  # one event is an alert, made at once
        try:
            first = fleet.correlator(server.url, "first", ["--early-alerts"], STALLED_AFTER_FETCH)
            fleet.active(first)
            second = fleet.correlator(server.url, "second", ["--early-alerts"])
            fleet.tick(2)
            fleet.write(0, "victim")
            assert wait_until(lambda: "taken over" in open_text(second), timeout=WAIT)
            assert first.wait(timeout=WAIT) == 1
            fleet.tick(2)
            assert wait_until(lambda: hosts(second)), "the standby did not alert"
        finally:
            fleet.stop()
    err = open_text(first)
    assert hosts(first) == [] and hosts(second) == [["victim"]], (err, open_text(second))
    assert "its lease lapsed" in err and "took it over; this one stops" in err, err
    assert "leaves what it fetched and had not used to it, unacknowledged" in err, err
    assert len(err.strip().splitlines()) == 1, err


# What a correlator sends its lease's bucket: the key's writes, and the bucket's API requests.
BUCKET_SUBJECTS = (b"$KV.", b"KV_PIPESHELL_CORRELATORS")


def test_a_correlator_whose_lease_bucket_does_not_answer_stops_in_one_line_once_its_lease_lapsed(tmp_path):
    """The server answers the correlator's pulls but not its lease's bucket (the relay drops those
    requests): every record fetched once its last renewal was SURE seconds old waited for a renewal
    without end, in silence.  Now it stops once its lease has certainly lapsed (another correlator may
    hold it), in one line, exit status 1, as a correlator that finds its lease taken does."""
    from pipeshell_filter.io.fleet import PartitionLease
    with NatsServer(tmp_path / "nats") as server:
        relay = DroppingRelay(server.port)
        fleet = Fleet(tmp_path, server.url)
        try:
            first = fleet.correlator(relay.url, "first")
            fleet.active(first)
            relay.drop(*BUCKET_SUBJECTS)
            dropped = time.monotonic()
            while first.poll() is None and time.monotonic() - dropped < PartitionLease.LEASE + 20:
                fleet.tick(1)  # records keep coming, and the pulls are answered
            ended = first.poll()
        finally:
            fleet.stop()
            relay.close()
    err = first.stderr.read().decode()
    assert relay.drops and ended == 1, (ended, err)
    assert "its lease could not be renewed" in err and "this one stops" in err, err
    assert len(err.strip().splitlines()) == 1, err


def holders_durable(url: str):
    """The info of the durable that partition 0's holder reads: the newest of partition 0's."""
    from pipeshell_filter.io.bus import Bus
    with Bus(url, name="test looker") as bus:
        found = bus._call(bus._js.consumers_info("PIPESHELL"))
    ours = [info for info in found if re.fullmatch(r"correlate-0(-r\d+)?", info.name)]
    return max(ours, key=lambda info: info.created) if ours else None


def test_a_correlator_cut_off_from_its_lease_bucket_never_makes_the_new_holders_durable_anew(tmp_path):
    """The first correlator's lease lapses while the server answers its pulls (the relay drops its
    requests to the bucket), and the standby takes over.  The first pulled on from the durable: it took
    some of the new holder's deliveries, saw the gap in their delivery sequence, and made the durable
    anew under the new holder (which then lost its deliveries and made it anew in turn).  Now it pulls
    only while its lease is certainly its own, and stops in one line once that is over."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        relay = DroppingRelay(server.port)
        fleet = Fleet(tmp_path, server.url, agents=1)
        try:
            first = fleet.correlator(relay.url, "first")
            fleet.active(first)
            second = fleet.correlator(server.url, "second")
            fleet.tick(2)
            fleet.agents[0].stdin.close()  # from now on the test alone writes to the partition
            assert fleet.agents[0].wait(timeout=WAIT) == 0
            relay.drop(*BUCKET_SUBJECTS)
            assert wait_until(lambda: "taken over" in open_text(second), timeout=WAIT)
            assert wait_until(lambda: (tmp_path / "second.json").exists()), "the new holder did not start"
            before = datetime.datetime.now(datetime.timezone.utc)
            with Bus(server.url, name="test agent") as bus:
                beat = bus.last_message("PIPESHELL", "pipeshell.records.0")
                for i in range(20):  # one at a time, for any pull waiting on the durable to take
                    bus.publish_many([("pipeshell.records.0", beat, f"beat {i}")])
                    time.sleep(0.25)
                last = bus.last_seq("PIPESHELL")
            assert wait_until(lambda: holders_durable(server.url).ack_floor.stream_seq == last), "not all acknowledged"
            made = holders_durable(server.url).created
            assert first.wait(timeout=WAIT) == 1
        finally:
            fleet.stop()
            relay.close()
    err = first.stderr.read().decode()
    assert made <= before, f"the durable was made anew at {made}, after the new holder began ({before}): {err}"
    assert "its lease could not be renewed" in err and len(err.strip().splitlines()) == 1, err


def saved_position(path):
    """The bus position (``bus_seq``) of a correlator's last snapshot; 0 before there is one."""
    try:
        return json.loads(path.read_text()).get("bus_seq") or 0
    except (OSError, ValueError):
        return 0


def test_a_late_ack_of_a_correlator_cut_off_past_its_lease_does_not_move_the_new_holders_position(tmp_path):
    """The first correlator's acknowledgement is held up in the network (the relay) past its lease, and the
    standby takes over and reads on from the durable's acknowledged position; then the ack arrives.  It
    was for the durable of the same name, made anew by the new holder: the server took it, moved the ack
    floor past what the new holder had saved, and set its delivery floor to the first's delivery count, so
    that the new holder's own acks were confirmed and ignored until its deliveries outnumbered the first's
    (past 100,000 unacknowledged the server stops delivering: the partition stalled).  Now each holder
    reads a durable of its own, which the next one deletes: the late ack finds none."""
    from pipeshell_filter.io.bus import Bus
    with NatsServer(tmp_path / "nats") as server:
        relay = HoldingRelay(server.port)
        fleet = Fleet(tmp_path, server.url, agents=1)
        try:
            first = fleet.correlator(relay.url, "first")
            fleet.active(first)
            with Bus(server.url, name="test agent") as bus:  # many deliveries to the first
                beat = bus.last_message("PIPESHELL", "pipeshell.records.0")
                bus.publish_many([("pipeshell.records.0", beat, f"beat {i}") for i in range(300)])
                last = bus.last_seq("PIPESHELL")
            assert wait_until(lambda: saved_position(tmp_path / "first.json") >= last), "the first did not read"
            # the standby snapshots (and acknowledges) 30 s after its start: not before the late ack came
            second = fleet.correlator(server.url, "second", ["--state-interval", "30"])
            assert wait_until(lambda: "standing by" in open_text(second), timeout=WAIT)
            relay.hold_on(b"$JS.ACK", 120)
            while not relay.held.is_set():
                fleet.tick(1)
            with Bus(server.url, name="test looker") as bus:
                held = bus.last_seq("PIPESHELL")  # the held ack is of this record or one before
            acknowledged = holders_durable(server.url).ack_floor.stream_seq  # the first's, from before the hold
            assert wait_until(lambda: "taken over" in open_text(second), timeout=WAIT)
            assert wait_until(lambda: holders_durable(server.url).delivered.stream_seq >= held), "not read on"
            relay.release()
            assert first.wait(timeout=WAIT) == 1
            fleet.tick(1)
            floor = holders_durable(server.url).ack_floor.stream_seq  # where the new holder began, or its own
            assert floor <= max(acknowledged, saved_position(tmp_path / "second.json")), "moved under the new holder"
            fleet.tick(2)
            with Bus(server.url, name="test looker") as bus:
                last = bus.last_seq("PIPESHELL")
            # its own acks land: the durable's position follows its snapshots
            assert wait_until(lambda: saved_position(tmp_path / "second.json") >= last), "the new holder stopped"
            assert wait_until(lambda: holders_durable(server.url).ack_floor.stream_seq
                              >= saved_position(tmp_path / "second.json"), timeout=WAIT), "its acks were ignored"
        finally:
            fleet.stop()
            relay.close()
    err = first.stderr.read().decode()
    assert "its lease lapsed" in err and "took it over; this one stops" in err, err


def test_a_new_holder_reads_on_after_the_latest_former_holders_durable_and_deletes_every_former_one(tmp_path):
    """The new holder's durable starts after the acknowledged position of the former holder of the highest
    revision (one a former holder made again late is older; ``correlate-0`` is from before holders had
    their own), or at its saved position when it has one; every former one is deleted, other consumers
    are left alone."""
    from pipeshell_filter.io.bus import Bus
    from pipeshell_filter.io.fleet import take_durable
    with NatsServer(tmp_path / "nats") as server, Bus(server.url, name="test") as bus:
        bus.ensure_stream("PIPESHELL", ["pipeshell.records.*"])
        bus.publish_many([("pipeshell.records.0", b"{}", f"m{i}") for i in range(1, 21)])
        for name, floor in [("correlate-0", 12), ("correlate-0-r7", 9), ("correlate-0-r3", 15),
                            ("correlate-1-r8", 18), ("correlate-01-r9", 17), ("reader", 16)]:
            former = bus.consumer("PIPESHELL", name, "pipeshell.records.0")
            taken = []
            while len(taken) < floor:
                taken += former.fetch(floor - len(taken), 1.0)
            former.ack(taken[-1])
        consumer = take_durable(bus, "PIPESHELL", "correlate-0", 11, "pipeshell.records.0", None)
        assert consumer.fetch(1, 5.0)[0].seq == 10
        names = sorted(info.name for info in bus.consumers("PIPESHELL"))
        assert names == ["correlate-0-r11", "correlate-01-r9", "correlate-1-r8", "reader"]
        again = take_durable(bus, "PIPESHELL", "correlate-0", 12, "pipeshell.records.0", 4)
        assert again.fetch(1, 5.0)[0].seq == 4
        assert sorted(info.name for info in bus.consumers("PIPESHELL"))[:1] == ["correlate-0-r12"]
