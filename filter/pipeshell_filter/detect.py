"""The detect stage, stateless: one event in, a ``Detection`` per rule whose condition it meets.

A Detection is all that later stages need of the event: the rule's stable id,
the event time, where it came from, which terms of the condition it met, the
values of the fields correlations group or aggregate by, and a short
reference to the event for the alert.  It is plain data with a versioned wire
form (one NDJSON line, ``schema/detection.schema.json``), so correlation can
run in another process, or after a restart, from the records alone.

A detect stage that runs on one agent of many also says how far its input has
got (``Heartbeat`` records, made by ``correlate.agents.Progress``), so that a
correlate stage fed by many agents can move its time on when nothing matches.
"""

from __future__ import annotations

import time as _time
from itertools import islice
from typing import Dict, List, Optional

import attrs
import ujson

try:  # CPython's own BLAKE2, without loading OpenSSL (5 ms of start-up); ``records`` hashes with it too
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

from .events.fields import READ, FieldResolver
from .events.timeparse import format_time
from .sigma.compile import Plan
from .sigma.literals import required_values
from .sigma.logsource import EventFacts, LogsourceTable
from .values import MISSING, first_leaf, leaves

WIRE_TYPE = "sigma.detection"
HEARTBEAT_TYPE = "sigma.heartbeat"
WIRE_VERSION = 1
# A Detection stays small enough for every transport, however an attacker writes the event: at
# most this many characters of one value whole (``kept``; a host name has 253, an alert shows 256),
# this many values of one field (a list), and at most this many bytes of one field's values as JSON
# with every escape (``\u0001`` is six bytes for one character).  Without the last, two fields of
# 100 values of 1,024 control characters made a Detection of 1.24 MB, over NATS's 1 MB message: the
# agent's publish was refused and it stopped.  With it, four such fields and the rest of the record
# stay under 1 MB.
LONGEST_VALUE = 1024
MOST_VALUES = 100
FIELD_BYTES = 200_000
_WORST_BYTES = 12  # JSON bytes of one character at most: a character past U+FFFF as two \uXXXX escapes


# What an alert shows of each event it lists, ``fields`` of the event reference (``--alert-fields``):
# the values of the fields the rule's Sigma ``fields`` names and (``matched``) of those its matched
# selections read, as the event has them (a text, an integer, true/false, null; a list or an object as
# its leaf strings).  Bounded as alerts bound what they take from events: a text cut at SHOWN_TEXT
# characters (and an ellipsis), a list at SHOWN_VALUES values, at most SHOWN_FIELDS fields, and at most
# SHOWN_BYTES of JSON per event, every escape counted, so that an alert's 50 events add at most 200 KB
# and a Detection stays far under every transport's cap; ``fields_truncated`` says something was left
# out.  Display only: not part of what makes two events the same (``correlate.state.identity``).
ALERT_FIELDS = ("matched", "rule", "none")
SHOWN_TEXT = 256
SHOWN_VALUES = 10
SHOWN_FIELDS = 32
SHOWN_BYTES = 4096
SHOWN_KEYS = ("fields", "fields_truncated")  # the reference's display keys
# Fields the reference shows already (``_reference``): a selection reading them adds nothing.
_REFERENCED = frozenset(("EventID", "Computer", "EventRecordID"))


def clipped(text: str, longest: int = SHOWN_TEXT) -> str:
    """A text as alerts show one taken from an event: its first ``longest`` characters and an
    ellipsis when longer (the same again when cut again: a record read back stays as written)."""
    return text[:longest] + "\u2026" if len(text) > longest else text


def _shown_value(value, longest: int) -> tuple:
    """``(value as an alert shows it, whether some of it was left out)``."""
    kind = value.__class__
    if kind is str:
        return clipped(value, longest), False
    if value is None or kind is bool or kind is int and -(1 << 63) <= value < 1 << 63:
        return value, False
    if kind is not list and kind is not dict:  # a float, a number beyond 64 bits: its text
        return clipped(first_leaf(value), longest), False
    texts = list(islice(leaves(value), SHOWN_VALUES + 1))
    shown = [clipped(text, longest) for text in texts[:SHOWN_VALUES]]
    if kind is dict and len(shown) == 1:  # an XML element ({"#text": ..., "#attributes": ...}): its text
        return shown[0], False
    return shown, len(texts) > SHOWN_VALUES


def shown_fields(pairs, longest: int = SHOWN_TEXT, budget: int = SHOWN_BYTES) -> tuple:
    """``(name -> value as shown, whether something was left out)`` of ``(name, value)`` pairs, in
    their order, bounded as ``SHOWN_BYTES`` says; a field past the budget is left out whole."""
    shown, cut, size = {}, False, 2
    for count, (name, value) in enumerate(pairs):
        if count == SHOWN_FIELDS:
            return shown, True
        value, lost = _shown_value(value, longest)
        cut |= lost
        chars = len(name) + (len(value) if value.__class__ is str else
                             sum(map(len, value)) + 4 * len(value) if value.__class__ is list else 24)
        entry = _WORST_BYTES * chars + 8  # a cheap bound; measured only when it does not fit
        if size + entry > budget:
            entry = len(ujson.dumps([name, value], ensure_ascii=True))
            if size + entry > budget:
                cut = True
                continue
        shown[name] = value
        size += entry
    return shown, cut


class WireError(ValueError):
    """A record that is not a Detection of a version this build reads; the message is one line."""


def kept(text, longest: int = LONGEST_VALUE):
    """A value as a Detection carries it: whole, or over ``longest`` characters its head and a
    digest of the whole.  Equal values stay equal and different ones different (what grouping and
    counting read), while a record stays small enough for every transport: Fluent Bit's record
    cap, NATS's 1 MB message, the correlate stage's windows."""
    if text.__class__ is not str or len(text) <= longest:
        return text
    return f"{text[:longest // 4]}...[{len(text)} characters, sha256 {_sha256(text)}]"


def kept_values(texts: list, field_bytes: int = FIELD_BYTES, longest: int = LONGEST_VALUE) -> list:
    """A field's values as a Detection carries them: each ``kept``; past ``MOST_VALUES``, or past
    ``field_bytes`` of JSON (the first value always whole: what group-by reads), the rest as one
    digest of them all (equal lists stay equal, different ones different)."""
    values = [kept(text, longest) for text in texts[:MOST_VALUES]]
    cut = MOST_VALUES - 1 if len(texts) > MOST_VALUES else None
    if sum(len(value) for value in values) * _WORST_BYTES > field_bytes:  # a long or escape-heavy list
        size = 0
        for position, value in enumerate(values):
            size += len(ujson.dumps(value, ensure_ascii=True)) + 1
            if size > field_bytes - 128 and position:  # room for the digest of the rest
                cut = min(position, MOST_VALUES - 1)
                break
    if cut is None:
        return values
    return values[:cut] + [f"...[{len(texts) - cut} more values, sha256 {_sha256(chr(0).join(texts[cut:]))}]"]


def _sha256(text: str) -> str:
    """SHA-256 of a value too long to carry whole: imported here, on that rare path, since
    ``hashlib`` loads OpenSSL (4 ms of every start)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# Ever smaller forms of a Detection for a transport whose messages are smaller than the one its values
# are bounded for (``smaller``): (JSON bytes of one field's values, characters of one value whole).
SMALLER_FORMS = ((FIELD_BYTES // 8, LONGEST_VALUE), (4096, 256), (1024, 64), (256, 16))


def smaller(record: dict, fitting):
    """A Detection's wire record with its values kept to fewer bytes, in the first form that fits
    (a NATS server whose ``max_payload`` is under 1 MB, a small ``--max-record-bytes``): what
    ``fitting`` gives for it (its encoding; ``fitting`` gives None for a form that does not fit), or
    None when none does.  Each form is encoded once, by ``fitting``.  Kept as the values always are
    (``kept_values``): equal values stay equal and different ones different, so grouping and counting
    read the same (only a value cut here and whole in another Detection counts as two).
    Not ``records.shrink``, the alerts' smaller form: it cuts values to their head, making different
    values one, and the rule id and condition terms with them."""
    event = record.get("event") or {}
    for field_bytes, longest in SMALLER_FORMS:
        fields = {name: kept_values(values, field_bytes, longest) for name, values in record["fields"].items()}
        reference = {key: kept(value, longest) if key in ("host", "event_id", "record_id") else value
                     for key, value in event.items()}
        if "fields" in reference:  # shown with fewer bytes too (a field past them left out)
            reference = bounded_shown(reference, min(SHOWN_TEXT, longest // 4), min(SHOWN_BYTES, field_bytes))
        candidate = dict(record, source=kept(record.get("source"), longest), fields=fields, event=reference)
        found = fitting(candidate)
        if found is not None:
            return found
    return None


def _is_wire_version(version) -> bool:
    """Whether a record's ``version`` is the one this build reads: JSON ``true`` is not 1, though Python's
    ``True == 1`` took a record the schema refuses for one."""
    return version == WIRE_VERSION and version.__class__ is not bool


def _shown(value) -> str:
    """A record's value in a diagnostic: a scalar's repr, cut; a list or an object by its kind.  Its
    whole repr made a line as long as the record, and a list nested a thousand deep, which the
    parser takes, raised RecursionError and stopped the correlate stage."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


MOST_DIGITS = 10 ** 40  # a wire time has fewer digits than this, as a number or as a string
_INT64 = (-(1 << 63), 1 << 63)


def _time_written(time: Optional[int]):
    """A time as a wire record writes it: a number within 64-bit signed integers, else its digits as
    text, in every mode: a shipper made the number a float (Vector's ``parse_json`` keeps no larger
    integer), which the correlate stage refuses, so an event dated after 2262 slipped past the fleet."""
    return time if time is None or _INT64[0] <= time < _INT64[1] else str(time)


def _wire_time(value, required: bool):
    """A wire record's time: integer ns, or (beyond 64 bits, which a Fluent Bit record cannot hold
    as a number) the same integer written as decimal digits; None when absent and allowed."""
    if value is None and not required:
        return None
    digits = value[1 if value[:1] == "-" else 0:] if value.__class__ is str else None
    if digits is not None and digits.isdigit() and digits.isascii() and len(digits) <= 40:  # as the schema says
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not -MOST_DIGITS < value < MOST_DIGITS:
        # as many digits as the string form takes: a time of 400 digits, dated past the wall clock,
        # made the correlate stage's report of it (seconds, a float) raise OverflowError and stop
        raise WireError("'time' must be integer nanoseconds of at most 40 digits"
                        + ("" if required else " or null"))
    return value


@attrs.frozen
class Detection:
    rule: str  # the rule's stable id
    time: Optional[int]  # event time, ns since the epoch; None when the event has none we can parse
    source: Optional[str]  # the host the event came from
    terms: tuple  # indices of the condition terms the event met ((0,) for the whole condition)
    fields: Dict[str, list] = attrs.field(factory=dict)  # field -> its leaf strings, for correlation
    event: Dict[str, object] = attrs.field(factory=dict)  # reference: @timestamp, line, event_id, host, ...

    def to_wire(self) -> dict:
        return {"type": WIRE_TYPE, "version": WIRE_VERSION, "rule": self.rule, "time": _time_written(self.time),
                "source": self.source, "terms": list(self.terms), "fields": self.fields, "event": self.event}

    @classmethod
    def from_wire(cls, record) -> "Detection":
        if not isinstance(record, dict) or record.get("type") != WIRE_TYPE:
            raise WireError(f"not a {WIRE_TYPE} record")
        if not _is_wire_version(record.get("version")):
            raise WireError(f"{WIRE_TYPE} version {_shown(record.get('version'))} (this build reads {WIRE_VERSION})")
        return cls.from_fields(record)

    @classmethod
    def from_fields(cls, record: dict) -> "Detection":
        """A Detection from its fields alone, each checked (a state file keeps its events without
        the wire record's type and version: the file has its own)."""
        if not isinstance(record, dict):
            raise WireError("a detection must be an object")
        rule, time, source = record.get("rule"), record.get("time"), record.get("source")
        terms, fields, event = record.get("terms"), record.get("fields", {}), record.get("event", {})
        if not isinstance(rule, str) or not rule:
            raise WireError("'rule' must be a non-empty string")
        time = _wire_time(time, required=False)
        if source is not None and not isinstance(source, str):
            raise WireError("'source' must be a string or null")
        if not isinstance(terms, list) or not terms or \
                not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in terms):
            raise WireError("'terms' must be a non-empty list of term indices")
        if not isinstance(fields, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v) for v in fields.values()):
            raise WireError("'fields' must map field names to lists of strings")
        if not isinstance(event, dict):
            raise WireError("'event' must be an object")
        _check_reference(event)
        missing = [key for key in FIELD_KEYS if key not in record] + \
            [f"event.{key}" for key in ("line", "selections") if key not in event]
        if missing:  # each is written, null if need be: a record without one is not a match stage's whole
            raise WireError(f"no {', '.join(repr(key) for key in missing)}")  # (an alert of it broke its schema)
        # Held as a writer bounds it (``kept``), whoever wrote it: a compromised agent's megabyte host
        # or field values, or reference keys of its own, were held with every event of a window (up to
        # the state cap: 150 records of 1 MB values took 580 MB), echoed into alerts and made a record sent
        # again another event.  A record this build wrote reads back unchanged.
        event = {key: kept(value) if key != "fields" else value
                 for key, value in event.items() if key in REFERENCE_KEYS}
        if "fields" in event:  # bounded as a detect stage shows them; a record this build wrote, unchanged
            event = bounded_shown(event)
        if "record_id" in event:  # what tells this event apart, as ``_reference`` writes it: a digest
            if _tells_apart(event["record_id"]):  # beside it made one event sent again many events
                event.pop("digest", None)
            else:  # an empty one, as an older build wrote it, tells nothing apart
                del event["record_id"]
        if type(event.get("host")) is int:  # an agent of an older build wrote a numeric host so
            event["host"] = str(event["host"])  # (hosts are text: alerts and their schema)
        fields = {name: values if len(values) <= MOST_VALUES and all(len(v) <= LONGEST_VALUE for v in values)
                  else kept_values(values) for name, values in fields.items()}
        return cls(rule, time, kept(source), tuple(terms), fields, event)


# The keys of a Detection's fields, every one written (``Detection.to_wire``, the state file); of its
# event reference (``_reference``), which a reader keeps only.
FIELD_KEYS = ("rule", "time", "source", "terms", "fields", "event")
REFERENCE_KEYS = frozenset(("@timestamp", "line", "event_id", "host", "record_id", "digest", "selections",
                            *SHOWN_KEYS))


def bounded_shown(event: dict, longest: int = SHOWN_TEXT, budget: int = SHOWN_BYTES) -> dict:
    """An event reference with its ``fields`` bounded as ``shown_fields`` bounds them (whoever wrote
    them), ``fields_truncated`` set when something was left out, now or by its writer."""
    shown, cut = shown_fields(event["fields"].items(), longest, budget)
    cut |= event.get("fields_truncated") is True
    event = {key: value for key, value in event.items() if key not in SHOWN_KEYS}
    if shown:
        event["fields"] = shown
    if cut:
        event["fields_truncated"] = True
    return event


DIGEST_DIGITS = 16  # ``line_digest``: 64 bits as hex


def _check_reference(event: dict) -> None:
    """The event reference (``_reference``) as alerts read it: they sort and group by these keys."""
    for key in ("@timestamp", "host", "event_id", "record_id"):
        value = event.get(key, "")  # absent: fine; present: not null
        if type(value) not in (str, int) or key == "@timestamp" and type(value) is not str:
            raise WireError(f"'event.{key}' must be {'a string' if key == '@timestamp' else 'a string or an integer'}")
    digest = event.get("digest", "0" * DIGEST_DIGITS)
    if type(digest) is not str or len(digest) != DIGEST_DIGITS or digest.strip("0123456789abcdef"):
        # as ``line_digest`` writes it: any other text (a megabyte, each record its own) was taken as is
        raise WireError(f"'event.digest' must be {DIGEST_DIGITS} lowercase hexadecimal digits")
    shown, truncated = event.get("fields", {}), event.get("fields_truncated", False)
    if not isinstance(shown, dict) or not all(
            value is None or type(value) in (str, int, bool) or type(value) is list and all(
                type(text) is str for text in value) for value in islice(shown.values(), SHOWN_FIELDS)):
        raise WireError("'event.fields' must map field names to a string, an integer, true, false, null "
                        "or a list of strings")
    if type(truncated) is not bool:
        raise WireError("'event.fields_truncated' must be true or false")
    line, selections = event.get("line", 0), event.get("selections", [])
    if type(line) is not int or not 0 <= line < 1 << 63:  # (a negative one went into alerts against their
        # schema; one beyond 64 bits too, as its text in the Fluent Bit modes)
        raise WireError("'event.line' must be an integer, 0 or more, within 64 bits")
    if not isinstance(selections, list) or not all(isinstance(name, str) for name in selections):
        raise WireError("'event.selections' must be a list of strings")


@attrs.frozen
class Heartbeat:
    """An agent's progress: every event it reads from now on is no older than ``time`` minus the
    lateness (the same promise the watermark relies on within one stream).  ``idle``: live input
    that has brought nothing new for a while; the agent's time says nothing of the stream's then."""

    agent: str
    time: int  # the newest event time the agent has read, ns since the epoch
    idle: bool = False

    def to_wire(self) -> dict:
        record = {"type": HEARTBEAT_TYPE, "version": WIRE_VERSION, "agent": self.agent,
                  "time": _time_written(self.time)}
        if self.idle:
            record["idle"] = True
        return record

    @classmethod
    def from_wire(cls, record) -> "Heartbeat":
        if not _is_wire_version(record.get("version")):
            raise WireError(f"{HEARTBEAT_TYPE} version {_shown(record.get('version'))} "
                            f"(this build reads {WIRE_VERSION})")
        agent, time, idle = record.get("agent"), record.get("time"), record.get("idle", False)
        if not isinstance(agent, str) or not agent:
            raise WireError("'agent' must be a non-empty string")
        time = _wire_time(time, required=True)
        if not isinstance(idle, bool):
            raise WireError("'idle' must be true or false")
        return cls(kept(agent), time, idle)  # a megabyte name, in the agents' table and on stderr: bounded


def from_wire(record):
    """A Detection or a Heartbeat, by the record's ``type``."""
    if isinstance(record, dict) and record.get("type") == HEARTBEAT_TYPE:
        return Heartbeat.from_wire(record)
    return Detection.from_wire(record)


def _scalar(value, number: bool = True):
    """A reference value: an integer when it writes one exactly (an EventID, a record id: not
    "0042", which stays text), else its text; a host is always its text (hosts "007" and "7" are
    two hosts, and were one)."""
    text = first_leaf(value)
    if text is None or not number:
        return text
    canonical = text.isascii() and text.isdigit() and len(text) < 19 and (text == "0" or text[0] != "0")
    return int(text) if canonical else text


class Detector:
    """Runs every compiled rule's condition on an event.

    ``needed`` names, per rule id, the fields its correlations group or
    aggregate by; their values travel in the Detection.  ``shown`` (``ALERT_FIELDS``): which
    fields' values its event reference carries for alerts to show (``shown_names``).
    """

    def __init__(self, plans: List[Plan], resolver: FieldResolver, needed: Optional[Dict[str, tuple]] = None,
                 unknown_logsource: str = "match", shown: str = "matched", between: Optional[tuple] = None):
        self.plans = list(plans)
        # ``--from``/``--to``: (first, end) in ns, either None when not given; a matched event whose own time
        # is not in [first, end) (or that has none) makes no Detection, counted in ``outside``.  Looked at only
        # once a rule matched: most events match none, and reading their time would cost every one of them.
        self.between = between
        self.outside = 0
        if shown not in ALERT_FIELDS:
            raise ValueError(f"alert fields {shown!r}: one of {', '.join(ALERT_FIELDS)}")
        self.shown = shown
        self._shown_names = {}
        self.resolver = resolver
        self.needed = needed or {}
        self.unknown_logsource = unknown_logsource
        # Routing: the rules an event can matter to, from what it tells of its log source and
        # its EventID, worked out once per distinct answer (a stream has a few dozen).
        self._wanted_ids = [required_values(plan) for plan in self.plans]
        self._routes = {}
        # The rules grouped by their log source as checked: a route not seen yet asks each log source once,
        # not each rule (a flood of distinct channels or EventIDs asked all 3,141 SigmaHQ rules: 3 ms a line).
        grouped = {}
        for i, plan in enumerate(self.plans):
            logsource = plan.logsource
            grouped.setdefault(None if logsource is None else logsource.identity(), (logsource, []))[1].append(i)
        self._by_logsource = [(logsource, tuple(positions)) for logsource, positions in grouped.values()]
        self._route_fields = {}
        self._tests = [plan.matters for plan in self.plans]
        # ``--rule-cost``: rule position -> [events its condition was tried on, nanoseconds it took] (``time_rules``)
        self.timing = None

    def time_rules(self) -> None:
        """Count and time each rule's condition on the events it is tried on (``--rule-cost``: ``tried`` and
        ``eval_ms`` in the ``--rule-stats`` file, which rules a run's time goes to).  Each rule's test is
        wrapped once, so that a run without the option pays nothing for it."""
        self.timing = {}
        self._tests = [_timed(position, test, self.timing) for position, test in enumerate(self._tests)]

    # ``--rule-stats``: which fields of its rules each route's events carry (``coverage.Coverage``)
    coverage = None
    MAX_ROUTES = 4096  # distinct (log source, EventID) answers remembered; hostile input may invent more

    def _route(self, view) -> frozenset:
        return self._routing(view)[1]

    def _routing(self, view) -> tuple:
        """``(routing key, positions of the rules routed)``; the key is None when too big to keep."""
        # Keyed by what the facts are made of, as the event has them: the facts themselves
        # (EventFacts, its casefolded key) are built only for an answer not worked out yet.
        # Most events have a text channel and a number or a text EventID: those two values,
        # which are then their own leaves, are the key; any other shape is keyed by its leaves.
        # The shape's logsource facts come first: its product as before (every Windows shape), or what
        # it declares, which a shape reading them from the event has read (``Profile.tag``).
        channel, event_id, tag = view.log_channel(), view.get("EventID"), view.profile.tag
        if tag is READ:
            tag = view.profile.declared(view.event)
        if channel.__class__ is str and (event_id.__class__ is int or event_id.__class__ is str):
            key = (tag, channel, event_id)
        else:
            channel, event_id = () if channel is MISSING else tuple(leaves(channel)), view.leaves("EventID")
            key = (tag, channel[0] if channel else None, event_id[0] if event_id else None,
                   view.folded("EventID"))
        found = self._routes.get(key)
        if found is not None:
            return key, found
        facts, event_ids = event_facts(view), view.folded("EventID")
        if len(self._routes) >= self.MAX_ROUTES:
            self._routes.clear()
        wanted, unknown = self._wanted_ids, self.unknown_logsource
        found = frozenset(
            i for logsource, positions in self._by_logsource
            if logsource is None or logsource.applies(facts, unknown)
            for i in positions if wanted[i] is None or not wanted[i].isdisjoint(event_ids))
        if sum(map(len, event_ids)) <= 64 and len(key[1] or "") <= 256 and \
                (tag.__class__ is not tuple or sum(len(fact) for fact in tag if fact.__class__ is str) <= 256):
            self._routes[key] = found  # not a hostile megabyte to remember
            return key, found
        return None, found

    def fields_expected(self, view) -> frozenset:
        """The fields read by the rules routed to this event that were written for its kind of
        event (their condition or their log source names EventIDs): fields its data should have.
        Rules for any event of a log (a product, a channel) read fields many of its events lack;
        so do a rule's selections for other EventIDs (the built-in rule's ``Payload``, 4103's,
        in a 4104)."""
        routed, event_ids = self._route(view), view.folded("EventID")
        found = self._route_fields.get((routed, event_ids))
        if found is None:
            if len(self._route_fields) >= self.MAX_ROUTES:
                self._route_fields.clear()
            plans, wanted = self.plans, self._wanted_ids
            found = frozenset().union(*(
                plans[i].fields_read_by(event_ids) for i in routed
                if wanted[i] is not None
                or plans[i].logsource is not None and plans[i].logsource.event_ids is not None))
            if sum(map(len, event_ids)) <= 64:  # as ``_route``: no hostile megabyte of EventID kept as a key
                self._route_fields[routed, event_ids] = found
        return found

    def detect(self, event: dict, line: int = 0, only=None, text: Optional[bytes] = None,
               carried: bool = False) -> List[Detection]:
        """``only``: positions of the rules to try (the others cannot match), None for every rule;
        ``text``: the event's input line, which tells apart events without a record id (``line_digest``);
        ``carried``: the event was read from the XML its record carries (``FieldResolver.carried`` reads it)."""
        return self.detect_view(self.resolver.reading(carried).view(event), line, only, text)

    def detect_view(self, view, line: int = 0, only=None, text: Optional[bytes] = None) -> List[Detection]:
        """``only``: the rules to try (the others cannot match), None for every rule, or a
        function from the rules routed to this event to those of them to try."""
        found = []
        time = host = MISSING
        key, routed = self._routing(view)
        if self.coverage is not None:
            self.coverage.see(view, key, routed, text)
        if callable(only):
            only = only(routed)
        chosen = routed if only is None else routed & only
        tests = self._tests
        for position in sorted(chosen):
            if not tests[position](view):  # most rules tried fail: their term mask, nothing more
                continue
            plan = self.plans[position]
            mask, matched = plan.judge(view)
            if not mask:  # cannot be, ``matters`` held: the two read the same condition
                continue
            if time is MISSING:
                time = view.time()
                if self.between is not None and not within(time, self.between):
                    self.outside += 1
                    return []
                host = kept(first_leaf(view.get("Computer")))
            fields = {}
            for field in self.needed.get(plan.rule.id, ()):
                value = view.get(field)
                if value is not MISSING and value is not None:
                    fields[field] = kept_values(list(leaves(value)))
            reference = _reference(view, time, line, plan, matched, text)
            if self.shown != "none":  # read for a rule that matched only: most events match none
                names = self.shown_names(plan, matched)
                if names:
                    _show(view, names, reference)
            found.append(Detection(plan.rule.id, time, host, tuple(i for i in range(len(plan.terms)) if mask >> i & 1),
                                   fields, reference))
        return found

    def shown_names(self, plan: Plan, matched: frozenset) -> tuple:
        """The fields whose values an alert shows of an event that met the selections ``matched`` of
        ``plan``: the rule's Sigma ``fields``, then (``matched``) those the selections read, in the
        rule's order, but for what the reference shows already (EventID, host, record id).  Worked
        out once per rule and set of selections (a stream has a handful)."""
        if self.shown == "none":
            return ()
        key = (plan.rule.id, matched)
        found = self._shown_names.get(key)
        if found is None:
            found = plan.rule.fields
            if self.shown == "matched":
                found = tuple(dict.fromkeys(found + tuple(name for name in plan.fields_of(matched)
                                                          if name not in _REFERENCED)))
            if len(self._shown_names) >= self.MAX_ROUTES:
                self._shown_names.clear()
            self._shown_names[key] = found
        return found


def _timed(position: int, test, timing: dict):
    """``test`` (a rule's condition, a function of the view), counting its calls and their time into
    ``timing[position]``."""
    clock = _time.perf_counter_ns

    def timed(view) -> bool:
        start = clock()
        held = test(view)
        spent = clock() - start
        found = timing.get(position)
        if found is None:
            timing[position] = [1, spent]
        else:
            found[0] += 1
            found[1] += spent
        return held
    return timed


def within(time: Optional[int], between: tuple) -> bool:
    """Whether an event time is in ``--from``/``--to``'s [first, end): an event without one is not."""
    first, end = between
    return time is not None and (first is None or time >= first) and (end is None or time < end)


def event_facts(view) -> EventFacts:
    """What an event tells of its own log source: its product, its channel, its EventID, and the service and
    category its profile declares.  The product is the one the logsource table gives its channel, else its
    profile's: Sysmon for Linux writes Windows' event XML, and its events in that shape (the evtx profile's,
    which says windows) are linux ones.  An event that tells no product, service or category takes those of
    ``--logsource`` (``FieldResolver.logsource``): the source of a stream of one kind of log."""
    channel = first_leaf(view.log_channel())
    product = LogsourceTable.builtin().product_of_channel(channel) if channel.__class__ is str else None
    profile = view.profile
    if profile.tag.__class__ is str or profile.tag is None:  # every Windows shape: the product at most
        declared, service, category, origin = profile.product, None, None, None
    else:
        declared, service, category = profile.declared(view.event)
        origin = f"profile {profile.name}"
    product = product or declared
    if product is None and service is None and category is None and view.resolver.logsource is not None:
        (product, service, category), origin = view.resolver.logsource, "--logsource"
    return EventFacts(product, channel, first_leaf(view.get("EventID")), service, category, origin)


# The field an event's host is read from (through the profile's field names): ``related.hosts``.
HOST_FIELD = "Computer"


def _reference(view, time: Optional[int], line: int, plan: Plan, matched: frozenset, text: Optional[bytes]) -> dict:
    """What an alert says about one contributing event, and what tells it from another
    (``correlate.state.identity``): its record id, else the digest of its line ``text``."""
    ref = {"@timestamp": format_time(time)} if time is not None else {}
    ref["line"] = line
    for key, field in (("event_id", "EventID"), ("host", HOST_FIELD), ("record_id", "EventRecordID")):
        value = _scalar(view.get(field), key != "host")
        if value is not None and (key != "record_id" or _tells_apart(value)):
            ref[key] = kept(value)
    if text is not None and "record_id" not in ref:
        ref["digest"] = line_digest(text)
    ref["selections"] = [s.name for s in plan.selections if s.name in matched]
    return ref


def _show(view, names: tuple, reference: dict) -> None:
    """The values of the fields ``names`` that the event has, into its ``reference`` (``shown_fields``)."""
    get = view.get
    shown, cut = shown_fields((name, value) for name, value in ((name, get(name)) for name in names)
                              if value is not MISSING)
    if shown:
        reference["fields"] = shown
    if cut:
        reference["fields_truncated"] = True


def _tells_apart(record_id) -> bool:
    """A record id that names an event: not an empty or blank ``EventRecordID`` (a shipper writing
    the field with nothing in it), which would make every event of a host's second one event."""
    return record_id.__class__ is not str or bool(record_id.strip())


def line_digest(text: bytes) -> str:
    """What tells apart two events without a record id whose time, host and the values their
    rules read are the same (ten failed logons in one second, from ten source ports): 64 bits of
    BLAKE2b over the event's input line.  A record id tells Windows events apart instead: a
    shipper sending one again may write other bytes (Winlogbeat's ``event.created``)."""
    return blake2b(text, digest_size=DIGEST_DIGITS // 2).hexdigest()
