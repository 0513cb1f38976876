"""Match on every agent, correlate once: the stages' records over the fleet bus (``bus``, NATS JetStream).

Subjects, in one stream per prefix (``stream_names``):

* ``<prefix>.records.<p>``: Detection and heartbeat records for partition ``p``.  A
  Detection goes to the partition of its group key (``Correlation.partition_key``:
  rules whose one correlation groups by fields spread over the partitions; the
  rest belong to partition 0).  A heartbeat goes to every partition: each
  correlate process needs every agent's time.
* ``<prefix>.alerts`` (the second stream): the correlate processes' alerts,
  each with its deterministic ``event.id`` as the message id, so that a
  correlator that replays from its last snapshot and makes an alert again does
  not deliver it twice (the stream's duplicate window drops it).

A match process publishes in batches (``Publisher``), each record with an id
made from its bytes: a re-send of the same record (a restarted agent that
reads the same lines again) is stored once.  A correlate process
(``consume``) reads its partition through a durable pull consumer and
acknowledges only after a snapshot of its state (``--state``) that includes
the message is on disk; on restart it asks the bus for the messages after the
last one its snapshot includes, in stream order.

A shipper may publish the match stage's records instead (integrations/README.md,
"Agents publish with the shipper's own NATS output"): Vector's ``nats`` sink sends
one record per message, as ``Publisher`` does; Fluent Bit's ``nats`` output one
JSON array of ``[time, {record}]`` pairs per flush.  ``consume`` takes both.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import zlib
from collections import Counter
from typing import Callable, List, Optional, Tuple

import ujson

from ..detect import Heartbeat, kept, smaller
from ..records import smallest_fitting
from .bus import ATTEMPT_TIMEOUT, RECONNECT_WAIT, STOP_GRACE, Bus, BusError, Consumer
from .stream import dumps

STREAM = "PIPESHELL"  # the streams of the default prefix (``stream_names``)
ALERT_STREAM = "PIPESHELL_ALERTS"
BATCH = 512  # records a match process publishes at once
UNACKED = 50_000  # a correlate process snapshots (and acknowledges) at least this often, in messages
# After the bus was away, the agents get this much more before their silence counts: each reconnects on
# its own rhythm, maybe a reconnect wait after the correlator, and its first attempt may go unanswered.
AGENTS_BACK = RECONNECT_WAIT + ATTEMPT_TIMEOUT
# A message's headers besides its id: ``NATS/1.0``, the header's name, the line ends (``_Batched.fits``).
HEADER_BYTES = 64
MOST_PARTITIONS = 1024  # --partitions' bound (cli)


def record_subject(prefix: str, partition: int) -> str:
    return f"{prefix}.records.{partition}"


def alert_subject(prefix: str) -> str:
    return f"{prefix}.alerts"


def stream_names(prefix: str) -> Tuple[str, str]:
    """The records' and the alerts' streams of one prefix: ``PIPESHELL`` and ``PIPESHELL_ALERTS`` for
    ``pipeshell``.  Each fleet (prefix) has its own, so that the durable consumers ``correlate-<p>``
    of two fleets on one server are not one (each took the other's messages).  A prefix that is not
    lower-case letters, digits, ``-`` and ``_`` also gets a digest of itself (``a.b`` and ``a_b``,
    ``Fleet`` and ``fleet`` are distinct subjects), and so does one whose name is of the kind the fleet
    makes of another (``pipeshell_alerts``: the alert stream of ``pipeshell``, its records went there;
    ``kv_...``: a key-value bucket's stream, the lease's of another prefix)."""
    name = prefix.upper()
    if not re.fullmatch(r"[a-z0-9_-]+", prefix) or name.endswith("_ALERTS") or name.startswith("KV_"):
        name = re.sub(r"[^A-Z0-9_-]", "_", name) + "_" + format(zlib.crc32(prefix.encode("utf-8")), "08X")
    return name, name + "_ALERTS"


# The longest name of a prefix's stream (``stream_names``): NATS refuses a stream or consumer name over 255
# characters, and the longest the fleet makes of it is its lease bucket's stream, ``KV_<name>_CORRELATORS``,
# or a durable ``<name>-correlate-<p>-r<revision>`` (``durable_name``).
MOST_STREAM_NAME = 200


def prefix_problem(prefix: str) -> Optional[str]:
    """Why ``--nats-prefix`` cannot name the fleet's subjects and streams, or None.  The server refused
    each of these at start, exit status 1, which a supervisor retries for ever: a token that is empty,
    holds a wildcard, a space or a control character; a subject of the server's own (``$JS``, ``$SYS``:
    NATS keeps subjects starting with ``$``); names too long (a subject past the server's control line
    went unanswered, 30 s of retries said as a server that did not answer)."""
    if not all(prefix.split(".")) or any(c in "*>" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in prefix):
        return "is not a NATS subject prefix"
    if prefix.startswith("$"):
        return "starts with '$': NATS keeps those subjects for itself ($JS, $SYS, $KV)"
    name = stream_names(prefix)[0]
    if len(name) > MOST_STREAM_NAME:
        return (f"is too long: its stream's name would be {len(name)} characters, over {MOST_STREAM_NAME} "
                f"(NATS takes names of up to 255, and the fleet adds to it)")
    return None


def open_bus(url: str, prefix: str, name: str) -> Bus:
    """Connect, and make sure both streams exist (file storage, a two-hour duplicate window).

    A stream that already takes the prefix's subjects is kept: before each prefix had its own, every
    prefix's subjects went into ``PIPESHELL`` and ``PIPESHELL_ALERTS``, and a fleet made so goes on
    there (a second stream on the same subjects is refused by the server).  ``bus.fleet_streams``:
    the two names in use; ``bus.stream_limits``: the largest message each takes, by name (its
    ``max_msg_size``, an operator's setting; None: the server's ``max_payload`` alone)."""
    bus = Bus(url, name=name)
    names, limits = [], {}
    for own, subject in zip(stream_names(prefix), (f"{prefix}.records.*", alert_subject(prefix))):
        stream = bus.stream_holding(subject) or own
        limits[stream] = bus.ensure_stream(stream, [subject])
        names.append(stream)
    bus.fleet_streams, bus.stream_limits = tuple(names), limits
    return bus


def durable_name(prefix: str, partition: int, stream: str) -> str:
    """``correlate-<p>``, the key of the partition's lease and the start of its durables' names
    (``holder_durable``); on a stream that is not the prefix's own (one shared by prefixes, from
    before they had their own), with the prefix's stream name in front, so that fleets differ."""
    base, own = f"correlate-{partition}", stream_names(prefix)[0]
    return base if stream == own else f"{own}-{base}"


def holder_durable(base: str, revision: int) -> str:
    """The durable that the lease's holder reads: ``<base>-r<revision>``, the revision of the key that
    it took.  Each holder has its own, and the next one deletes it: an ack sent by a former holder that
    arrived late (held up in the network, its process paused past its lease) went to the durable of the
    same name that the new holder had made anew, moved its ack floor past what the new holder had saved,
    and set its delivery floor to the former's count, so that the new holder's acks were confirmed and
    ignored (past ``max_ack_pending`` of them the server stopped delivering).  A late ack or pull now
    finds no durable."""
    return f"{base}-r{revision}"


def _holder_revision(base: str, name: str) -> Optional[int]:
    """The revision in the name of a durable of ``base`` (``holder_durable``); 0 for ``base`` itself, the
    one durable of a partition before holders had their own; None for any other consumer."""
    if name == base:
        return 0
    found = re.fullmatch(re.escape(base) + r"-r([0-9]+)", name)
    return int(found.group(1)) if found else None


def take_durable(bus: Bus, stream: str, base: str, revision: int, subject: str,
                 start_seq: Optional[int]) -> Consumer:
    """The new holder's own durable (``holder_durable``), delivering from ``start_seq`` or, when that is
    None, after the acknowledged position of the latest former holder's (the highest revision: one that a
    former holder made again late is older); then the former holders' durables are deleted."""
    own = holder_durable(base, revision)
    former = {}
    for info in bus.consumers(stream):
        found = _holder_revision(base, info.name)
        if found is not None and info.name != own:
            former[info.name] = (found, info.ack_floor.stream_seq if info.ack_floor else 0)
    if start_seq is None and former:
        start_seq = max(former.values())[1] + 1
    consumer = bus.consumer(stream, own, subject, start_seq)
    for name in former:
        bus.delete_consumer(stream, name)
    return consumer


def partition_of(key: Optional[tuple], partitions: int) -> int:
    """The same partition for the same key in every process (not Python's hash, which is salted)."""
    if key is None or partitions == 1:
        return 0
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass")) % partitions


def _record_id(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


class _Batched:
    """Publishes in batches of ``BATCH``; ``flush`` returns once the server stored every one."""

    def __init__(self, bus: Bus, report: Optional[Callable] = None, stream: Optional[str] = None):
        self.bus = bus
        self._pending = []
        self.published = 0
        self.report = report or (lambda kind, where, message: None)  # ``Diagnostics.report``
        # the stream's own bound (``open_bus``): a message over it was refused for good, as one over the
        # server's max_payload was, and the process stopped (exit 1) at every restart
        self.stream = stream
        self.stream_limit = getattr(bus, "stream_limits", {}).get(stream)

    @staticmethod
    def size(payload: bytes, msg_id: str) -> int:
        """A message's size as the server's ``max_payload`` counts it: the headers too."""
        return len(payload) + len(msg_id.encode("utf-8")) + HEADER_BYTES

    def limit(self) -> int:
        """The largest message the bus takes: the server's ``max_payload``, or the stream's
        ``max_msg_size`` when that is less (both count the headers)."""
        server = self.bus.max_payload()
        return min(server, self.stream_limit) if self.stream_limit else server

    def limit_text(self) -> str:
        """What ``limit`` is, for a message."""
        limit = self.limit()
        if limit != self.bus.max_payload():
            return f"the max_msg_size of stream {self.stream} ({limit} bytes)"
        return f"the NATS server's max_payload ({limit} bytes)"

    def fits(self, payload: bytes, msg_id: str) -> bool:
        """The message is within ``limit`` (the server closes the connection on one over its
        max_payload, the client refuses one whose payload alone is, the stream refuses one over its own)."""
        return self.size(payload, msg_id) <= self.limit()

    def _add(self, subject: str, payload: bytes, msg_id: str) -> None:
        self._pending.append((subject, payload, msg_id))
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.bus.publish_many(pending)
            self.published += len(pending)


class Publisher(_Batched):
    """``--stage match --nats``: Detection and heartbeat records to the bus."""

    def __init__(self, bus: Bus, prefix: str, partitions: int, partition_key: Callable,
                 report: Optional[Callable] = None):
        super().__init__(bus, report, getattr(bus, "fleet_streams", stream_names(prefix))[0])
        self.prefix = prefix
        self.partitions = partitions
        self.partition_key = partition_key  # Detection -> key or None (``Correlation.partition_key``)

    def send(self, record, payload: bytes) -> None:
        """A Detection to its partition; a Heartbeat to every partition."""
        if not isinstance(record, Heartbeat):
            partition = partition_of(self.partition_key(record), self.partitions)
            msg_id = _record_id(payload)
            if not self.fits(payload, msg_id):
                payload = self._smaller(record, payload)
                if payload is None:
                    return
                msg_id = _record_id(payload)
            self._add(record_subject(self.prefix, partition), payload, msg_id)
            return
        for item in self._beats(record, payload):
            self._add(*item)

    def _smaller(self, record, payload: bytes) -> Optional[bytes]:
        """A Detection over the server's ``max_payload`` (set under its 1 MB default) in a smaller form
        (``detect.smaller``), or None when even that is over it: said and counted either way.  It was
        refused, and the agent stopped (exit 1), its events not passed on."""
        where, rule, limit = record.event.get("line", "?"), record.rule, self.limit_text()

        def fitting(wire: dict) -> Optional[bytes]:
            encoded = dumps(wire)
            return encoded if self.fits(encoded, _record_id(encoded)) else None

        smaller_payload = smaller(ujson.loads(payload), fitting)
        if smaller_payload is None:
            self.report("bus_too_big", where, f"Detection of rule {rule!r} ({len(payload)} bytes) is over {limit} "
                        "even with its values cut short: not published")
            return None
        self.report("bus_shrunk", where, f"Detection of rule {rule!r} ({len(payload)} bytes) is over {limit}: "
                    "published with its values cut short "
                    f"({len(smaller_payload)} bytes; equal values stay equal)")
        return smaller_payload

    def heartbeat_over(self, record: Heartbeat, payload: bytes) -> Optional[int]:
        """The size of the largest message the heartbeat ``record`` (``payload``) makes, when it is over
        the server's ``max_payload``; else None.  Refused, a heartbeat stopped the agent (exit 1, none
        of its events passed on) at its first one, and again at every restart: the agent's name is the
        one part of it with no bound (``--agent``)."""
        sizes = [self.size(payload, msg_id)
                 for _, payload, msg_id in self._beats(record, payload) if not self.fits(payload, msg_id)]
        return max(sizes) if sizes else None

    def _beats(self, record: Heartbeat, payload: bytes) -> list:
        # an idle heartbeat repeats the same time on purpose (the agent is alive): its id must differ
        suffix = f":{time.time_ns()}" if record.idle else ""
        # the agent's --partitions, for the correlators to check (``PartitionCheck``)
        payload = payload.rstrip()[:-1] + b',"partitions":%d}' % self.partitions
        return [(record_subject(self.prefix, partition), payload, f"{_record_id(payload)}:{partition}{suffix}")
                for partition in range(self.partitions)]

    def send_idle(self, record: Heartbeat, payload: bytes) -> None:
        """An idle heartbeat: published now, behind every record before it, or dropped (the server
        down, records still waiting).  It says the agent has nothing newer now: stored later, it
        would say so of a time when records may have come since (the agent then holds them)."""
        if self._pending:
            self.flush()
            return
        self.bus.publish_once(self._beats(record, payload))


class AlertPublisher(_Batched):
    """``--stage correlate --nats``: every alert also to the alert subject, under its ``event.id``.
    ``flush`` comes before every snapshot (and whenever the input waits), so that no record is
    acknowledged before the alerts it made are stored."""

    def __init__(self, bus: Bus, prefix: str, report: Optional[Callable] = None):
        super().__init__(bus, report, getattr(bus, "fleet_streams", stream_names(prefix))[1])
        self.subject = alert_subject(prefix)

    def __call__(self, record: dict, payload: bytes) -> None:
        """An alert over the server's ``max_payload`` goes in its smaller form (``sigma.truncated``,
        its ``event.id`` kept): refused, it stopped the correlator, and every restart made it again
        from the state (100 host names of emoji, each list of them twice in the alert, were 1.07 MB).
        One still over it (a server's ``max_payload`` set very low) is said and counted, and left to
        stdout: refused, it stopped the correlator the same way."""
        msg_id = record.get("event", {}).get("id") or _record_id(payload)
        if not self.fits(payload, msg_id):
            payload = smallest_fitting(record, dumps, lambda smaller: self.fits(smaller, msg_id))
            if not self.fits(payload, msg_id):
                self.report("bus_too_big", "correlation", f"alert {msg_id} of rule "
                            f"{record.get('rule', {}).get('id')!r} is over {self.limit_text()} even in its smaller "
                            "form: on stdout only")
                return
        self._add(self.subject, payload, msg_id)


class PartitionCheck:
    """Agents and correlators that disagree on ``--partitions`` split a group's detections between
    correlators, or send some to a partition nobody reads: alerts lost in silence.  Every heartbeat
    on the bus says its agent's ``--partitions``; a correlator says, once per agent and count, when
    agents disagree, and at start-up when its partition is past the count of the last heartbeat of
    partition 0 (which every agent's heartbeats reach)."""

    MOST = 10_000  # agents remembered

    def __init__(self, partition: int, report: Callable[[str], None]):
        self.partition = partition
        self.report = report
        self.counts: dict = {}  # agent -> its --partitions, as last said
        self._agreeing: Counter = Counter()  # --partitions -> how many agents of ``counts`` say it

    def at_start(self, bus: Bus, stream: str, prefix: str) -> None:
        if self.partition:
            self.see(bus.last_message(stream, record_subject(prefix, 0)) or b"", start=True)

    def see(self, data: bytes, start: bool = False) -> None:
        if b'"partitions"' not in data or b"sigma.heartbeat" not in data:
            return
        try:
            record = ujson.loads(data)
            agent, count = record["agent"], record["partitions"]
        except (ValueError, KeyError, TypeError):
            return
        # a count no agent can have (--partitions is 1-1024) is no agent's; a name is held and said as the
        # agents' table holds it (a megabyte each, 10,000 of them, and on stderr whole, from anyone publishing)
        if not isinstance(count, int) or not 1 <= count <= MOST_PARTITIONS or not isinstance(agent, str):
            return
        agent = kept(agent)
        if self.counts.get(agent) == count:
            return
        if self.partition >= count:
            self.report(f"agent {agent!r} publishes to {count} partition(s) (--partitions {count}), and this "
                        f"correlator reads partition {self.partition}: none of that agent's detections "
                        f"come here; give every agent --partitions "
                        f"{self.partition + 1} or more, and run one correlator per partition")
        if start:
            return
        if len(self.counts) < self.MOST or agent in self.counts:
            before = self.counts.get(agent)
            if before is not None:
                self._agreeing[before] -= 1
                if not self._agreeing[before]:
                    del self._agreeing[before]
            self.counts[agent] = count
            self._agreeing[count] += 1
        # looked for only when some agent says another count: every heartbeat of an agent past the ``MOST``
        # remembered came here, and a pass over the 10,000 others cost it about 100 us (the record's own cost)
        other = None
        if any(theirs != count for theirs in self._agreeing):
            other = next((name for name, theirs in self.counts.items() if theirs != count), None)
        if other is not None:
            theirs = self.counts[other]
            self.report(f"agents disagree on --partitions: agent {agent!r} publishes to {count} partitions, "
                        f"agent {other!r} to {theirs}: a group's detections are split between correlators and "
                        "its alerts lost or wrong; give every agent the same --partitions")


class LeaseLost(BusError):
    """Another correlator took this one's partition over (``PartitionLease``)."""


class PartitionLease:
    """One correlator per partition.  Two read one durable by turns, each its share of the records (its
    own alerts, or double ones after the resets that the missing deliveries set off), and the second's
    start made the durable anew under the first.  So a correlator holds a key (``correlate-<p>``) in a
    JetStream key-value bucket (``<stream>_CORRELATORS``, the server's own compare-and-set) whose values
    expire ``LEASE`` seconds after they were written, and renews it; a second one stands by, said once,
    until the key is free: the first ended (it deletes the key), or stopped renewing (killed, cut off)
    for ``LEASE`` seconds.  The key says who holds it; one held by this host's process of the same
    state file is free at once: this process holds the state's file lock, so that one has ended.

    A fetched record is used, and acknowledged, only while the key is certainly still this one's
    (``held``): a correlator held up past its lease (a stall, renewals the server did not answer) went
    on with the batch it had fetched beside the one that took over, and acknowledged it from under it."""

    LEASE = 15.0
    RENEW = 3.0  # seconds between renewals
    # Seconds after a write of the key was sent that it certainly still holds (the server counts its
    # ``LEASE`` from when it stored the write, later): one renewal's margin, for the two clocks.
    SURE = LEASE - RENEW
    STANDBY_POLL = 1.0

    def __init__(self, bus: Bus, stream: str, key: str, partition: int, state_path: str):
        self.bus, self.key, self.partition = bus, key, partition
        self.bucket = f"{stream}_CORRELATORS"
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "state": os.path.realpath(state_path)}
        self.value = ujson.dumps(self.owner).encode()
        self.revision: Optional[int] = None
        self.taken_at: Optional[int] = None  # the revision at which ``take`` took the key (``holder_durable``)
        self._renewed = 0.0  # when the last write of the key went through
        self._written = 0.0  # when it was sent (``SURE``)
        self._kv = self._kv_js = None

    async def _bucket(self, js):
        if self._kv_js is not js:
            errors = self.bus._mod.js.errors
            try:
                self._kv = await js.key_value(self.bucket)
            except errors.BucketNotFoundError:
                self._kv = await js.create_key_value(bucket=self.bucket, history=1, ttl=self.LEASE)
            self._kv_js = js
        return self._kv

    def _run(self, what: str, step, timeout: float, grace: float = STOP_GRACE):
        """``step(kv)`` through the bus's retries, for at most ``timeout`` seconds, or ``grace`` seconds
        once the process is asked to stop (BusError)."""
        async def attempt(js):
            return await step(await self._bucket(js))

        return self.bus._call(self.bus._retry(attempt, f"the lease of partition {self.partition} ({what})",
                                              timeout, grace), timeout=timeout + 5)

    async def _claim(self, kv) -> Optional[dict]:
        """Take the key if it is free, or ours; else the holder's value."""
        errors = self.bus._mod.js.errors
        try:
            self.revision = await kv.create(self.key, self.value)
            return None
        except errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(self.key)
        except errors.KeyNotFoundError:  # expired or deleted meanwhile: try again
            return {}
        try:
            holder = ujson.loads(entry.value or b"{}")
        except ValueError:
            holder = {}
        mine = holder.get("host") == self.owner["host"] and holder.get("state") == self.owner["state"]
        if mine:  # this host's earlier process of the same state file: it has ended (``State.take``)
            try:
                self.revision = await kv.update(self.key, self.value, last=entry.revision)
                return None
            except errors.KeyWrongLastSequenceError:
                return {}
        return holder if isinstance(holder, dict) else {}

    def take(self, stop, say: Callable[[str], None]) -> bool:
        """Hold the partition, standing by while another correlator does; False when stopped first."""
        told = False
        while not stop.requested:
            sent = time.monotonic()
            try:
                holder = self._run("taking it", self._claim, self.bus.setup_timeout, grace=0)
            except BusError:
                if stop.requested:
                    return False
                raise
            if holder is None:
                self._renewed, self._written = time.monotonic(), sent
                self.taken_at = self.revision
                if told:
                    say(f"partition {self.partition}: taken over, the other correlator gone")
                return True
            if not told and holder:
                say(f"partition {self.partition} is held by another correlator (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, state {holder.get('state')}): standing by until it ends or "
                    f"stops renewing its lease for {self.LEASE:g} s")
                told = True
            time.sleep(self.STANDBY_POLL)
        return False

    def renew(self) -> None:
        """Every ``RENEW`` seconds, while the server answers (nobody can take the key from one that does
        not, and the loop is not held up trying).  A lease that lapsed and was taken by another
        correlator ends this one (``LeaseLost``) at its next turn: the other reads on from the durable's
        acknowledged position.  One that lapsed with nobody taking it is taken again."""
        if time.monotonic() - self._renewed < self.RENEW or not self._answering():
            return
        try:
            self._renew()
        except LeaseLost:
            raise
        except BusError:
            if not self._answering():
                return  # went away meanwhile: tried again once it is back
            raise

    def certain(self) -> bool:
        """The key is certainly still this correlator's: its last write was sent less than ``SURE`` ago."""
        return time.monotonic() - self._written < self.SURE

    def held(self, stop) -> bool:
        """Before a fetched record is used or acknowledged, and before a pull: True once the key is
        certainly this correlator's, renewed first when ``SURE`` seconds have passed since its last
        write was sent, waiting for a server that does not answer as long as it takes (the bus says
        so).  Taken by another meanwhile: ``LeaseLost``, the record neither used nor acknowledged, so
        that the other gets it.  A server that answers the bus but not the lease's bucket: ``LeaseLost``
        too, once the key has certainly lapsed (``LEASE`` seconds after its last write was stored),
        since another correlator may hold it then (it waited without end).  False when stopped first."""
        answering = False  # the bus answered since the last renewal left unanswered
        while not self.certain():
            if stop.requested:
                return False
            try:
                self._renew(grace=0)  # stopping: not waited for (the state holds the position)
            except LeaseLost:
                raise
            except BusError:
                if stop.requested:
                    return False
                if self._answering() or self.bus._closed:
                    raise  # refused by a server that answers, or the bus closed: no wait cures it
                if time.monotonic() - self._renewed < self.LEASE:
                    continue
                # once more after the bus answered (a server back from a pause answers the bucket too)
                was_answering, answering = answering, self._bus_answers()
                if was_answering and answering:
                    raise LeaseLost(f"partition {self.partition}: its lease could not be renewed for "
                                    f"{self.LEASE:g} s, NATS at {self.bus.url} answering but not the key-value "
                                    f"bucket {self.bucket}, and another correlator may hold it now; this one "
                                    "stops, and leaves what it fetched and had not used, unacknowledged") from None
        return True

    def _bus_answers(self) -> bool:
        """JetStream answers a request that is not the bucket's (its account's info)."""
        async def account(js):
            return await js.account_info()

        try:
            self.bus._call(self.bus._retry(account, "JetStream", ATTEMPT_TIMEOUT, grace=0),
                           timeout=ATTEMPT_TIMEOUT + 5)
            return True
        except BusError:
            return False

    def _renew(self, grace: float = STOP_GRACE) -> None:
        errors = self.bus._mod.js.errors

        async def renew(kv):
            try:
                self.revision = await kv.update(self.key, self.value, last=self.revision)
                return None
            except errors.KeyWrongLastSequenceError:
                return await self._claim(kv)

        sent = time.monotonic()
        holder = self._run("renewing it", renew, ATTEMPT_TIMEOUT, grace)
        if holder is not None:
            raise LeaseLost(f"partition {self.partition}: its lease lapsed (not renewed for {self.LEASE:g} s) and "
                            f"another correlator (pid {holder.get('pid')} on {holder.get('host')}) took it over; "
                            "this one stops, and leaves what it fetched and had not used to it, unacknowledged")
        self._renewed, self._written = time.monotonic(), sent

    def _answering(self) -> bool:
        nc = self.bus._nc
        return nc is not None and nc.is_connected and self.bus._silent_since is None

    def release(self) -> None:
        """At the end: a standby takes over at once instead of ``LEASE`` seconds on.  Best effort, and
        not waited for from a server that is down or does not answer (the key lapses by itself)."""
        if self.revision is None or not self._answering():
            return

        async def delete(kv):
            await kv.delete(self.key, last=self.revision)

        try:
            self._run("releasing it", delete, ATTEMPT_TIMEOUT)
        except BusError:
            pass
        self.revision = None


class ListeningClock:
    """The correlator's clock for the agents' silence (``--agent-idle``) and for ``--idle``: monotonic
    time that stands still outside ``Consumer.fetch``.  Only in a fetch can a record come; the time
    spent on what was fetched, and above all waiting for an ack or an alert's publish (a server slow or
    gone for a moment), is no agent's silence: counted as such, every agent was declared silent after
    a wait longer than ``--agent-idle``, the fleet's time moved on without them, and the records that
    had piled up meanwhile came late.  A fetch listens for ``longest`` seconds (its wait) at most: the
    rest of one that took longer is the process held up (stopped, frozen, swapped out), which counted as
    the agents' silence the same way.  Starts at the monotonic time, so times taken before go on."""

    def __init__(self, longest: Optional[float] = None):
        self.longest = longest
        self._deaf = 0.0  # seconds that do not count: outside a fetch, or past ``longest`` in one
        self._since: Optional[float] = None  # when the current stretch outside a fetch began
        self._heard: Optional[float] = None  # when the current fetch began

    def __call__(self) -> float:
        now = time.monotonic()
        return now - self._deaf - self._uncounted(now)

    def _uncounted(self, now: float) -> float:
        """What of the stretch going on does not count."""
        if self._since is not None:
            return now - self._since
        if self._heard is not None and self.longest is not None:
            return max(0.0, now - self._heard - self.longest)
        return 0.0

    def listen(self) -> None:
        now = time.monotonic()
        if self._since is not None:
            self._deaf += now - self._since
            self._since = None
            self._heard = now
        elif self._heard is None:
            self._heard = now

    def deaf(self) -> None:
        if self._since is None:
            now = time.monotonic()
            self._deaf += self._uncounted(now)
            self._since, self._heard = now, None


def consume(stream_filter, bus: Bus, prefix: str, partition: int, stop, start_seq: Optional[int],
            state_path: str, batch: int = 1024, wait: float = 0.5) -> None:
    """``--stage correlate --nats``: the partition's records through the filter until ``stop``.

    A message is one record (``Publisher``; Vector's ``nats`` sink with the json codec) or
    Fluent Bit's array of ``[time, {record}]`` pairs; each record is processed as one input
    line.  An array of another shape is diagnosed, as a bad line is, and skipped; anything
    else goes to the filter as a line, which diagnoses and skips what is not a record.
    After every snapshot the last message it includes is acknowledged (cumulatively); the
    snapshot records that message's stream sequence (``Filter.bus_seq``), from which a
    restart carries on: the position is per message, whatever it holds."""
    stream = getattr(bus, "fleet_streams", stream_names(prefix))[0]
    durable = durable_name(prefix, partition, stream)
    lease = bus.partition_lease = PartitionLease(bus, stream, durable, partition, state_path)
    if not lease.take(stop, stream_filter.diagnostics.note):
        return
    last_seq, made = bus.stream_position(stream)
    if start_seq is not None and start_seq - 1 > last_seq:
        # the saved position is past the end: the stream was made anew (its store lost, deleted and
        # created again), and its messages are not those the state took; from its first message
        stream_filter.diagnostics.note(f"the state's position on the bus (message {start_seq - 1}) is past the "
                                       f"last message of stream {stream} ({last_seq}): the stream was made "
                                       "anew; reading it from its first message")
        start_seq = 1
    elif start_seq is not None and None not in (made, stream_filter.bus_stream) and made != stream_filter.bus_stream:
        # made anew, and grown past the saved position before this run: its first messages were skipped
        stream_filter.diagnostics.note(f"the state's position on the bus (message {start_seq - 1}) is in stream "
                                       f"{stream} as made at {stream_filter.bus_stream}, and the stream was made "
                                       f"anew at {made}: reading it from its first message")
        start_seq = 1
    stream_filter.bus_stream, stream_filter.bus_subject = made, record_subject(prefix, partition)
    consumer = take_durable(bus, stream, durable, lease.taken_at, record_subject(prefix, partition), start_seq)
    # No pull, and no reset of the durable, unless the key is certainly still this one's: a correlator whose
    # lease had lapsed pulled on (when one durable served every holder, it took deliveries of the one that took
    # over, and the gap they left made the durable anew under it), and made its own durable again once the new
    # holder had deleted it (``Consumer.ours``).
    consumer.ours = lease.certain
    last = [None, None]  # the last message taken, the last one acknowledged
    check = PartitionCheck(partition, lambda message: stream_filter.diagnostics.report("partitions", "bus", message))
    check.at_start(bus, stream, prefix)

    def acknowledge() -> None:
        if stop.requested:  # stopping: a restart reads on from the snapshot's position (``bus_seq``)
            return  # whatever the ack floor, so the ack is not worth waiting for a silent server
        if last[0] is not None and last[0] is not last[1] and lease.held(stop):
            try:
                consumer.ack(last[0])
            except BusError:
                if stop.requested:  # asked to stop while the ack waited for a silent server
                    return
                raise
            last[1] = last[0]

    def take(message) -> None:
        check.see(message.data)
        records, problem = _fluent_bit_records(message.data) if _ARRAY.match(message.data) else (None, None)
        if records is None:
            stream_filter.lines += 1
            if problem is None:  # one record, or what the filter diagnoses as a bad line
                stream_filter.process_line(message.data, stream_filter.lines)
            else:
                stream_filter.diagnostics.report("not_object", stream_filter.lines,
                                                 f"bus message {message.seq}: {problem}; skipped")
            return
        for record in records:
            stream_filter.lines += 1
            stream_filter.process_line(record, stream_filter.lines)

    stream_filter.after_save = acknowledge
    stream_filter.begin(live=True)
    clock = ListeningClock(wait)
    stream_filter.engine.listen_by(clock)
    taken = 0
    away = None  # since when the bus has not answered
    while not stop.requested:
        lease.renew()
        if not lease.held(stop):
            break
        clock.listen()
        asked = clock()
        messages = consumer.fetch(batch, wait)
        clock.deaf()
        for before in consumer.remade():  # the state names the new stream, before its first message
            stream_filter.bus_stream, stream_filter.bus_seq = consumer.made, 0
            stream_filter.diagnostics.note(f"stream {stream} (made at {before}) was deleted and made anew at "
                                           f"{consumer.made} while this correlator read it: reading the new one "
                                           "from its first message")
        for low, high in consumer.discarded():
            stream_filter.diagnostics.counts["bus_discarded"] += high - low + 1
            which = f"message {low}" if low == high else f"messages {low}-{high}"
            stream_filter.diagnostics.note(f"{which} of stream {stream} {'was' if low == high else 'were'} discarded "
                                           "by the stream's limits before they were read")
        if not messages and consumer.away:
            # nothing could come: the wall clock moves no time (the agents hold their records meanwhile)
            away = asked if away is None else away  # from the pull that found it so
            continue
        if away is not None:
            stream_filter.engine.input_back(clock() - away + AGENTS_BACK)
            away = None
        if not messages:
            stream_filter.before_block()  # what is final goes out; snapshots and stats when due
            continue
        for message in messages:
            if not lease.held(stop):
                break  # stopping: the rest is left unacknowledged, for whoever reads on
            take(message)
            stream_filter.bus_seq = message.seq
            last[0] = message
            taken += 1
        if stream_filter.state.due() or taken >= UNACKED:
            taken = 0
            stream_filter.save_state()
        if len(messages) < batch:  # caught up: the alerts out now, as before a pipe is waited on
            stream_filter.before_block()
        else:  # a backlog, full batches with no wait between: the stats records as they fall due, and
            stream_filter.write_stats()  # the alerts at least every half second
            stream_filter.hand_on_due()


# A shipper's framing (``consume``): Fluent Bit's nats output sends an array per flush.
_ARRAY = re.compile(rb"\s*\[")


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fluent_bit_records(data: bytes) -> Tuple[Optional[List[bytes]], Optional[str]]:
    """The records of a message in Fluent Bit's ``nats`` framing: (records, None); or
    (None, why not) for a JSON array of another shape; or (None, None) when it does not parse,
    left to the filter to diagnose as it does a bad line (invalid, too deep, bad UTF-8).

    out_nats (plugins/out_nats/nats.c) publishes each flush as one JSON array whose elements
    are ``[time, {record}]``: the time a float, the record with the chunk's tag added under
    ``"tag"`` (the correlate stage reads only its own fields).  The ``[[time, {metadata}],
    {record}]`` element of Fluent Bit's internal event format is taken too, should a later
    version pass it through."""
    try:
        value = ujson.loads(data)
    except (ValueError, OverflowError):
        return None, None
    records = []
    for element in value if isinstance(value, list) else (None,):
        head = element[0] if isinstance(element, list) and len(element) == 2 else None
        if isinstance(head, list) and len(head) == 2 and isinstance(head[1], dict):
            head = head[0]
        if not _is_time(head) or not isinstance(element[1], dict):
            return None, "a JSON array that is not Fluent Bit's nats framing [[time, {record}], ...]"
        records.append(dumps(element[1]))
    return records, None
