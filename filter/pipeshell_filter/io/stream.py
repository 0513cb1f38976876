"""Bytes in, records out: block reading, per-line decisions, emit modes, diagnostics.

Input is read in large blocks cut at line boundaries.  The prefilter marks the
few lines that can match; the others are passed on as whole byte ranges (or
dropped) without being parsed; the bulk of a big regular file is prefiltered
by worker processes instead (``parallel``), their results taken in file order.
Candidate lines are parsed and run through the engine.  Bad input is diagnosed
on stderr and, in ``--emit all``, passed on unchanged (or wrapped into a record
with ``--non-json wrap``), so nothing is lost.  Output is buffered and flushed before every read that could block: in a
pipeline an alert must not wait for the next event.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import os
import re
import select
import stat
import sys
import time
from collections import Counter
from itertools import repeat
from typing import Callable, Iterable, Iterator, Optional

import msgspec
import ujson

from ..correlate.state import StateError, encode as encode_state
from ..correlate.agents import Progress
from ..detect import HEARTBEAT_TYPE, WIRE_TYPE, Detection, Heartbeat, WireError, from_wire, smaller
from ..engine import Engine
from ..records import smallest_fitting
from ..values import MISSING, one_line
from ..events.fields import FramedEvent
from ..events.timeparse import parse_time
from ..events.xml_event import XmlEventProblem, event_in_line, event_to_read
from . import parallel
from .frames import frame, frame_of, opening, start_at, start_or_clock, string_end, value_end
from .inputs import LongLine, line_rest_now, readable_now
from .position import FilePlaces, Place, Placed, RecordPlaced, check_mark, file_path, regular
from .prefilter import CANDIDATE, SKIP, Prefilter, any_of, ends_of
from .rule_index import RuleIndex
from . import signals
from .signals import WRITING, StopRequest, Terminated
from .skim import held_line, nesting_bounded, shallow

BLOCK_SIZE = 1 << 20
BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE = 16 << 20
DEFAULT_MAX_RECORD = 1_000_000
# A regular file at least this big (from where reading starts) is prefiltered by worker processes.
PARALLEL_MIN = 2 * parallel.CHUNK

# What runs: both stages, detection only (Detection records out), correlation only (Detection records in).
STAGES = ("all", "match", "correlate")

# A range of lines the skimmer does not vouch for is halved down to this many lines, then parsed line by line.
SKIM_LEAST = 32

# Seconds the stop of a run with --state waits for the reader of its output to take the stop's alerts.
TAKE_WAIT = 2.0
STOP_LINE_WAIT = signals.STOP_LINE_WAIT  # seconds a stop waits for the rest of a pipe's line (tests set it)
PLACED = (Placed, RecordPlaced)  # labels that move their file's place once their line is processed (``--state``)

# What the reader hands the filter.
LINES = "lines"  # one or more complete lines, each ending in b"\n"
PIECE = "piece"  # part of a line longer than the inspection limit; more follows
PIECE_END = "piece_end"  # the last part of such a line (its newline stripped)


HAND_ON_SECONDS = 0.5  # at most this long does busy live input hold records back in the output (``hand_on_due``)


class OutputClosed(Exception):
    """The reader of our stdout went away (``| head -1``); or, with a ``reason``, writing to it
    failed (a full disk): the run stops as for a reader gone, but says so and fails."""

    def __init__(self, reason: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason


class Output:
    """A byte buffer in front of a file descriptor."""

    def __init__(self, fd: int, limit: int = 1 << 16):
        self.fd = fd
        self.limit = limit
        self.buffer = bytearray()

    def write(self, data) -> None:
        if len(data) >= self.limit:  # a big range of passed-on lines: no copy through the buffer
            self.flush()
            self._write_all(data)
            return
        self.buffer += data
        if len(self.buffer) >= self.limit:
            self.flush()

    def _write_all(self, data) -> None:
        WRITING.depth += 1  # a second SIGTERM now waits for the record to be whole (``signals``)
        try:
            with memoryview(data) as whole:  # released even on error, so the buffer can be cleared
                offset = 0
                try:
                    while offset < len(whole):
                        with whole[offset:] as rest:
                            try:
                                offset += os.write(self.fd, rest)
                            except BlockingIOError:
                                self._wait_writable()
                except (BrokenPipeError, ConnectionResetError):
                    raise OutputClosed() from None
                except OSError as error:
                    raise OutputClosed(error.strerror or str(error)) from None
        finally:
            WRITING.depth -= 1
        if WRITING.exit_pending and not WRITING.depth:
            raise Terminated()

    def _wait_writable(self) -> None:
        """A descriptor its parent made non-blocking (O_NONBLOCK on a shared pipe or socket) is full:
        wait as a blocking write would, until the reader takes more, or is gone (the write then fails)."""
        watch = select.poll()
        watch.register(self.fd, select.POLLOUT)
        watch.poll()

    def flush(self) -> None:
        if self.buffer:
            try:
                self._write_all(self.buffer)
            finally:
                self.buffer.clear()

    def reader_can_drop(self) -> bool:
        """A pipe or a socket: its reader may go away, or stop, with what was written in it."""
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            return True
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

    def taken(self, wait: float) -> bool:
        """Whether the reader took what was written.  Only a pipe can say (Linux: the bytes it
        still holds): True once it is empty, False when its reader closes it first or ``wait``
        seconds pass.  Anything else (a file, a terminal) holds what was written: True."""
        self.flush()
        try:
            import fcntl
            import termios

            if not stat.S_ISFIFO(os.fstat(self.fd).st_mode):
                return True
            watch = select.poll()
            watch.register(self.fd, select.POLLERR)
            deadline = time.monotonic() + wait
            while int.from_bytes(fcntl.ioctl(self.fd, termios.FIONREAD, bytes(4)), sys.byteorder, signed=True) > 0:
                if watch.poll(20) or time.monotonic() > deadline:  # POLLERR: no reader any more
                    return False
            return True
        except (ImportError, AttributeError, OSError):  # not Linux, or no such ioctl on this pipe
            return True


class Diagnostics:
    """Counted, rate-limited one-line messages on stderr."""

    def __init__(self, stream=None, per_kind: int = 10, interval: float = 10.0, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.per_kind = per_kind
        self.interval = interval
        self.clock = clock
        self.counts = Counter()
        self._last = {}

    def report(self, kind: str, where, message: str) -> None:
        """``where`` is a line number or a ready label such as ``"file.ndjson line 3"``."""
        self.counts[kind] += 1
        count = self.counts[kind]
        now = self.clock()
        if count > self.per_kind and now - self._last.get(kind, -self.interval) < self.interval:
            return
        self._last[kind] = now
        suffix = f" (occurrence {count}; further ones rate-limited)" if count >= self.per_kind else ""
        label = f"line {where}" if isinstance(where, int) else where
        self.note(f"{label}: {message}{suffix}")

    def note(self, message: str) -> None:
        """One line about the run, not about a line of input: neither counted nor rate-limited."""
        try:
            self.stream.write(f"pipeshell-filter: {one_line(message)}\n")  # a path may hold a line break
            self.stream.flush()
        except (OSError, ValueError):
            pass


def dumps(record) -> bytes:
    """One JSON line; UTF-8, or ASCII escapes when a string holds a lone surrogate."""
    try:
        return ujson.dumps(record, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
    except UnicodeEncodeError:
        return ujson.dumps(record, ensure_ascii=True, escape_forward_slashes=False).encode("ascii")


def enrich_line(raw: bytes, event: dict, sigma: dict) -> bytes:
    """The original line with ``"sigma": {...}`` spliced in before its closing brace.

    Splicing keeps every original byte (number formats, key order, escapes), the blanks after
    the brace too (a CRLF file's CR: cut, a reader splitting at CRLF joined the line to the next).
    An event that already has a ``sigma`` key loses that member (each, if given twice), cut out of
    the line, and nothing else: re-serialised, its numbers and escapes changed, and a
    1e400 became Infinity, which is no JSON.
    """
    body = raw.rstrip()
    after = raw[len(body):]
    start = body.find(b"{")  # the object's brace: a byte order mark or blanks may come before it
    if start < 0 or not body.endswith(b"}"):  # not reached for a line the JSON parser took: a safe way out
        return dumps({**event, "sigma": sigma})
    if "sigma" in event:
        body = body[:start] + _without_member(body[start:], "sigma")
    separator = b"," if body[start + 1:-1].strip() else b""
    return body[:-1] + separator + b'"sigma":' + dumps(sigma) + b"}" + after


def text_record(text: bytes, sigma: Optional[dict]) -> bytes:
    """A line of text read as the event its XML holds (Sysmon for Linux's syslog file), as a record for the
    Fluent Bit modes, which write JSON only: ECS ``message`` holding the line (a byte order mark left off, as
    for a JSON line), with ``sigma`` when it matched, as a JSON event is enriched.  It was one more
    ``pipeline_error`` record, though read, and never enriched.  Over the cap it is cut as an enriched JSON
    event is (``Filter._write``)."""
    message = text.decode("utf-8")  # UTF-8: it was read (``event_in_line``)
    return dumps({"message": message} if sigma is None else {"message": message, "sigma": sigma})


_BLANK = b" \t\r\n"


def _without_member(body: bytes, name: str) -> bytes:
    """A JSON object's text without its top-level members named ``name`` (however escaped),
    every other byte as it was.  ``body`` is an object the JSON parser took."""
    spans, at, end = [], 1, len(body) - 1  # (start, stop) of each member, its comma included
    while at < end:
        start = at
        while at < end and body[at] in _BLANK:
            at += 1
        if at >= end:
            break
        key_end = string_end(body, at)
        key = json.loads(body[at:key_end])
        at = value_end(body, body.index(b":", key_end) + 1)
        while at < end and body[at] in _BLANK:
            at += 1
        if at < end and body[at:at + 1] == b",":
            at += 1
        spans.append((start, at, key == name))
    kept = [body[start:stop] for start, stop, drop in spans if not drop]
    text = b"".join(kept).rstrip(_BLANK)
    if text.endswith(b","):  # the last member was dropped: its comma goes with it
        text = text[:-1]
    return body[:1] + text + body[end:]


FRAME_ROOM = 64  # bytes a frame adds to a record: ``[4294967292.999999999,`` and ``]``, with room to spare


def wrap_line(raw: bytes, kind: str, message: str, line: int, max_record: int, size: Optional[int] = None) -> bytes:
    """A line that is not a usable JSON object, as a record Fluent Bit accepts.

    ECS ``event.kind: pipeline_error``; the text keeps invalid UTF-8 visible as
    ``\\xNN``; it is cut so that the record stays under ``max_record`` bytes, with room for a
    ``--fluentbit-time`` frame around it (``FRAME_ROOM``).
    ``size``: the whole line's length, when ``raw`` is only its start.
    """
    size = len(raw) if size is None else size
    max_record -= FRAME_ROOM
    keep = min(len(raw), max_record)  # a record is longer than the text it keeps
    for attempt in range(64):
        # a text cut inside a character leaves it out: its first bytes alone read as invalid UTF-8,
        # which the line did not hold (an incremental decoder keeps them back for the rest)
        text = codecs.getincrementaldecoder("utf-8")("backslashreplace").decode(raw[:keep], keep >= size)
        record = dumps({
            "event": {"kind": "pipeline_error", "original": text},
            "error": {"type": kind, "message": message},
            "pipeshell": {"line": line, "bytes": size, "truncated": keep < size},
        })
        if len(record) < max_record or keep == 0:
            return record
        if attempt < 3:  # as much of the text as fits, at the rate it grew as JSON (a third of it was kept)
            written = len(dumps(text))
            keep = max(0, min(keep - 1, keep * (max_record - 1 - (len(record) - written)) // max(written, 1)))
        else:  # a text much denser in escapes at its start than on the whole
            keep = min(keep // 2, max(0, (max_record - 512) // 6))  # 6: worst JSON growth of one byte
    return record


# A long line of small values would take far more memory parsed than as text (a list is 56 bytes in
# Python, ``[],`` 3 on the line: 16 MiB of them took 450 MB, and 1.4 GB in wrap mode).  Such a line
# is not parsed: it goes on as a line that cannot be read, diagnosed ``too_complex``.
DENSE_FROM = 1 << 20  # bytes: shorter lines are always parsed
MAX_VALUES = 1_000_000  # commas and opening brackets in a longer line (inside strings too: an upper bound)
_TOO_COMPLEX = f"more than {MAX_VALUES:,} JSON values on a line of {DENSE_FROM >> 20} MiB or more; not parsed"


NO_EVENT_DATA_MAP = ("a Fluent Bit winevtlog event with its data only in StringInserts (by position): its rules' "
                     "fields {} cannot be read; set Event_Data_As_Map on")
# Fluent Bit's older winlog input has no such option: its events' data never have names.
NO_EVENT_DATA_NAMES = ("a Fluent Bit winlog event with its data only in StringInserts (by position): its rules' "
                       "fields {} cannot be read; read the log with the winevtlog input, Event_Data_As_Map on")
POSITIONAL_ONLY = {"fluentbit-winevtlog": NO_EVENT_DATA_MAP, "fluentbit-winlog": NO_EVENT_DATA_NAMES}

# What is said of a line that opens as a Fluent Bit frame (``frames``) but is none.
FRAME_UNREAD = "a Fluent Bit frame [TIME, {record}] that is "
NOT_FRAME = "not an object, nor a Fluent Bit frame [TIME, {record}] or [[TIME, {metadata}], {record}]"

# The records a match stage writes, by their "type": a shipper routes them to the correlate stage
# on it (fleet-agent.yaml's grep, Vector's route), so an input line must not carry it.
OWN_TYPES = frozenset((WIRE_TYPE, HEARTBEAT_TYPE))
STATS_DATASET = "pipeshell.stats"  # a stats record's ``event.dataset`` (``--stats-interval``)


def is_stats_record(record: dict) -> bool:
    """Whether a record has the shape of the filter's own stats record (``--stats-interval``), and
    nothing a shipper routes by (a ``type``, an enriched event's ``sigma``): a correlate stage passes it
    on, so a line shaped so must not come out as a Detection, a heartbeat or a matched event."""
    kind = record.get("event")
    return isinstance(kind, dict) and kind.get("dataset") == STATS_DATASET and kind.get("kind") == "metric" \
        and isinstance(record.get("pipeshell"), dict) and "type" not in record and "sigma" not in record


def impersonates(text: bytes) -> bool:
    """Whether an input line names a record type of a match stage's own in a top-level "type" (any
    of them, if the key is given twice; decoded, however escaped): passed on, its shipper would
    take it for a Detection or a heartbeat and forward it to the correlate stage."""
    if b"sigma" not in text and b"\\u" not in text:  # neither written out nor escaped
        return False
    top = []

    def pairs(items):
        top.append(items)  # the last object built is the outermost
        return None

    try:
        json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return True  # not readable here, though the JSON parser took it: not passed on as it is
    # a line of the value that is one (the shipper's regex ^...$ holds at each line of a text)
    return bool(top) and any(key == "type" and isinstance(value, str) and not OWN_TYPES.isdisjoint(value.split("\n"))
                             for key, value in top[-1])


def load_event(text: bytes):
    """``ujson.loads`` of an input line, unless it is too dense to parse in bounded memory (ValueError).

    ``msgspec`` reads it first: it builds the same objects in about two thirds of the time, and
    refuses more (numbers beyond a double, NaN, lone surrogates, raw control characters, nesting past
    Python's recursion limit) but accepts nothing ujson refuses.  What it refuses goes to ujson, so
    what is read, and every diagnostic, is ujson's (a property test holds the two to it)."""
    if len(text) >= DENSE_FROM and text.count(b",") + text.count(b"[") + text.count(b"{") > MAX_VALUES:
        raise ValueError(_TOO_COMPLEX)
    if nesting_bounded() or shallow(text):  # else msgspec may read a line nested deeper than ujson reads
        try:
            return _decode(text)
        except (ValueError, RecursionError):  # msgspec's DecodeError is a ValueError
            pass
    return ujson.loads(text)


_decode = msgspec.json.Decoder().decode


class NotAFrame(ValueError):
    """A line that opens like a Fluent Bit frame and whose JSON is none: ``kind``, the JSON type it is."""

    def __init__(self, kind: str):
        super().__init__(NOT_FRAME)
        self.kind = kind


def read_frame(text: bytes, at: int) -> tuple:
    """``(Frame, event)`` of a line that opens like a Fluent Bit frame at ``at`` (``frames.opening``): the
    event is its record, a ``FramedEvent`` when the frame has a time.  What every reader of a framed line
    reads it with.  ValueError or OverflowError (``load_event``'s) when it is no JSON the filter reads,
    NotAFrame when it is JSON but no frame around an object."""
    value = load_event(text[at:])
    framed = frame_of(text, at, value)
    if framed is None:
        raise NotAFrame(type(value).__name__)
    return framed, value[1] if framed.time is None else FramedEvent(value[1], framed.time)


def load_framed(text: bytes) -> Optional[tuple]:
    """``(record's text, event)`` of a line in a Fluent Bit frame (``read_frame``); None when the line does not
    open like a frame; ValueError (``load_event``'s, or NotAFrame) when it does but holds no frame around an
    object."""
    at = opening(text)
    if at is None:
        return None
    framed, event = read_frame(text, at)
    return text[framed.start:framed.end], event


def every_value(text: bytes, event: dict) -> dict:
    """``event`` (``load_event`` of ``text``) with each key an object gives twice holding all its values,
    in order, as a list would: EVTX's ``<Data Name="Group">`` repeated comes as the key repeated (evtx,
    evtx_dump), of which ujson keeps the last value alone, so ``Group: Administrators`` missed the event.
    Only then (``_may_repeat``) is the line parsed again, keeping every member."""
    if not _may_repeat(text, event):
        return event
    try:
        merged = json.loads(text, object_pairs_hook=_merged_members)
    except (ValueError, RecursionError):
        return event
    if not isinstance(merged, dict):
        return event
    frame_time = getattr(event, "frame_time", None)  # a framed record's time goes with it (``fields.FramedEvent``)
    return merged if frame_time is None else FramedEvent(merged, frame_time)


_KEY_END = re.compile(rb'"[ \t\r\n]*:')  # the end of every key, and of a string holding ``":``


def _may_repeat(text: bytes, event: dict) -> bool:
    """Whether an XML-derived event's ``EventData`` or ``UserData`` may give a key twice: EVTX repeats
    Data names there and nowhere else, and collectors that write a map (Winlogbeat, NXLog, Fluent Bit)
    cannot repeat one.  Each key ends in ``":`` (blanks allowed), so a key given twice makes the line hold
    more of them from the first ``"EventData":`` (or ``"UserData":``) on than the objects there hold keys; a string
    holding ``":``, or an object after them, only sends the line to the parse that keeps every member.
    A search and a scan of the line's end in C; the objects are walked only when the scan finds more
    (writing the whole event to compare its quotes cost 7-14 us a line)."""
    inner = event.get("Event")
    if inner.__class__ is not dict:
        return False
    start, keys, parts = len(text), 0, []
    for name in ("EventData", "UserData"):
        part = inner.get(name)
        if part.__class__ is dict:
            found = text.find(b'"' + name.encode() + b'"')
            start = min(start, found if found >= 0 else 0)
            keys += len(part) + 1  # and its own name's
            parts.append(part)
    ends = len(_KEY_END.findall(text, start)) if parts else 0
    return ends > keys and ends > keys + sum(_keys_within(part) for part in parts)


def _keys_within(value) -> int:
    """How many keys the objects inside ``value`` (an object's values, lists' items) hold, its own not."""
    count, stack = 0, list(value.values())
    while stack:
        item = stack.pop()
        if item.__class__ is dict:
            count += len(item)
            stack.extend(item.values())
        elif item.__class__ is list:
            stack.extend(item)
    return count


def _merged_members(pairs: list) -> dict:
    """An object's members, a key given twice (or more) holding the list of its values."""
    merged = dict(pairs)
    if len(merged) == len(pairs):
        return merged
    merged = {}
    for key, value in pairs:
        if key in merged:
            merged[key].append(value)
        else:
            merged[key] = [value]
    return {key: values[0] if len(values) == 1 else values for key, values in merged.items()}


def decode_problem(line: bytes, error: Exception) -> tuple:
    message = str(error)
    if message == _TOO_COMPLEX:
        return "too_complex", message
    if "depth" in message.lower():
        return "too_deep", "JSON nested too deeply"
    if "integer string conversion" in message:  # Python's own limit, and its advice to a programmer
        return "invalid_json", f"an integer of more than {sys.get_int_max_str_digits():,} digits; not read"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return "invalid_utf8", f"invalid UTF-8 at byte {bad.start}"
    return "invalid_json", f"not valid JSON ({message})"


# What Fluent Bit cannot take although ujson reads it (observed on 5.1.1): NaN and Infinity (the
# whole read is dropped; -Infinity becomes 0), a number beyond a double (1e400 comes out as ``inf``,
# which is not JSON), an integer beyond 64 bits (made a rounded float), a lone surrogate (escaped
# or as raw bytes: made U+FFFD or removed).  ``_MAYBE_UNPORTABLE`` is a necessary condition on the
# bytes, cheap enough for every output line in the wrap path; ``_unportable`` decides on the value.
_VALUE_AFTER = (b":", b",", rb"\[")  # what a value comes after in an object or an array
_SPACE = rb"[ \t\r\n]*"
_VALUE_START = rb"[:,\[]" + _SPACE
_BIG_NUMBER_TAILS = [
    rb"-?[0-9.]*[eE]\+?[0-9]{3}",
    rb"-?[0-9]{20}",  # also every integer part a double cannot hold (309 digits)
    rb"-[0-9]{19}",  # below -2**63
]
# The same, a group for each character a value comes after: Hyperscan scans the three groups one
# after the other in 0.9 us a 1.5 KB line, and all of them with the class in 1.6 us.
_BIG_NUMBER_GROUPS = [[after + _SPACE + tail for tail in _BIG_NUMBER_TAILS] for after in _VALUE_AFTER]
_BIG_NUMBERS = [_VALUE_START + tail for tail in _BIG_NUMBER_TAILS]
# A record nested 64 deep (its own object counted; 63 went through) made Fluent Bit 5.1.1's stdin drop
# it and every record left in that read.  It holds 64 opening brackets on its line, which ``_DEEP``
# finds, for ``_unportable`` to measure the depth.
FLUENT_BIT_DEPTH = 64
_DEEP = rb"[\[{](?:[^\[{\n]*[\[{]){%d}" % (FLUENT_BIT_DEPTH - 1)
_UNPORTABLE_PATTERNS = [
    _VALUE_START + rb"-?(?:NaN|Infinity)",
    *_BIG_NUMBERS,
    rb"\\u[dD][89a-fA-F]",
    rb"\xed[\xa0-\xbf]",
]
_INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # msgpack's integers
# The largest double Fluent Bit writes back as one: it writes 16 digits, and the two above it come out
# as 1.797693134862316e+308, beyond a double (Infinity, or an error, to whoever reads its output).
_LARGEST = 1.7976931348623153e308


_MAYBE_UNPORTABLE = None  # ``prefilter.any_of`` over the patterns, then over ``_DEEP``, built on first use
_UNPORTABLE_ENDS = None  # ``prefilter.ends_of`` over each: where in a block they may be


def _scanners():
    global _MAYBE_UNPORTABLE, _UNPORTABLE_ENDS
    if _MAYBE_UNPORTABLE is None:  # _DEEP apart: with the others it makes their one scan slower than two
        _MAYBE_UNPORTABLE = (any_of(_UNPORTABLE_PATTERNS), any_of([_DEEP]))
        _UNPORTABLE_ENDS = ends_of(_UNPORTABLE_PATTERNS)
    return _MAYBE_UNPORTABLE, _UNPORTABLE_ENDS


def _maybe_unportable_ends(data: bytes) -> list:
    (_, deep), ends = _scanners()
    found = ends(data)
    if deep(data):  # each line with 64 opening brackets: its end (``_DEEP`` ends at every bracket past 63)
        position = 0
        for line in data.split(b"\n"):
            position += len(line) + 1
            if deep(line):
                found.append(position - 1)
        found.sort()
    return found


def _problem(value) -> Optional[str]:
    """Why Fluent Bit could not take this JSON scalar as it is, or None."""
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "lone surrogate in a string"
    elif kind is float:
        if not -_LARGEST <= value <= _LARGEST:  # NaN too
            return "NaN, Infinity or a number beyond a double"
    elif kind is int and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return "integer beyond 64 bits"
    return None


def _unportable(value) -> Optional[str]:
    """Why Fluent Bit could not take this parsed JSON value (a record) as it is, or None."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict or kind is list:
            if depth >= FLUENT_BIT_DEPTH:
                return f"nested {FLUENT_BIT_DEPTH} deep or more"
            depth += 1
            if kind is dict:
                stack.extend(zip(value, repeat(depth)))
                value = value.values()
            stack.extend(zip(value, repeat(depth)))
        else:
            problem = _problem(value)
            if problem is not None:
                return problem
    return None


def unportable_record(record: bytes) -> Optional[str]:
    """Why Fluent Bit could not take this output record (JSON bytes) as it is, or None."""
    (maybe, deep), _ = _scanners()
    nested = deep(record)
    if not maybe(record) and not nested:
        return None
    try:
        problem = _unportable(ujson.loads(record))
    except (ValueError, OverflowError):
        return None
    if problem is None and (nested or b"NaN" in record or b"Infinity" in record):
        return _unportable_repeated(record)
    return problem


def _unportable_repeated(record: bytes) -> Optional[str]:
    """Why Fluent Bit could not take a record that ujson finds nothing wrong with: a key given twice,
    of which ujson keeps the last value, hides the first from it; Fluent Bit keeps the last too, but a
    NaN, an Infinity or a nesting 64 deep in the first made it drop the whole read.  Read again with
    every member kept (their keys and values, in a list); what Python's parser refuses (a leading
    zero, which ujson takes) is not known to be fine."""
    try:
        every = json.loads(record.decode("utf-8", "surrogatepass"), object_pairs_hook=_members, strict=False)
    except RecursionError:
        return f"nested {FLUENT_BIT_DEPTH} deep or more"
    except ValueError:
        return "not read strictly, and holding what Fluent Bit may not take"
    return _unportable(every)


def _members(pairs: list) -> list:
    return [item for pair in pairs for item in pair]


def portable_form(record: dict) -> tuple:
    """``record`` and its JSON as the Fluent Bit modes write it: what Fluent Bit cannot take made
    text (``portable``); the record itself when it can take all of it."""
    encoded = dumps(record)
    if unportable_record(encoded) is None:
        return record, encoded
    record = portable(record)
    return record, dumps(record)


def _as_carried(detection: Detection, limit: Optional[int] = None) -> Detection:
    """A Detection as the Fluent Bit modes carry it between two stages (``portable_form``; over
    ``limit`` bytes, in its smaller form, as ``Filter._send`` writes it), read back."""
    wire = detection.to_wire()
    carried, encoded = portable_form(wire)
    if limit is not None and len(encoded) > limit:
        found = fitted(wire, limit)
        if found is not None:  # else written whole, and cut: carried as it is, as before
            return from_wire(found[0])
    return detection if carried is wire else from_wire(carried)


def fitted(wire: dict, limit: int) -> Optional[tuple]:
    """A Detection's wire record over ``limit`` bytes in the Fluent Bit modes (a small
    ``--max-record-bytes``) in its smaller form (``detect.smaller``), and its JSON; None when none
    fits.  Cut into a pipeline_error record, it was lost to the correlate stage (a host name of
    1,000 CJK characters, twice in the record, made one over a 4,096-byte cap: no alert)."""
    def fitting(candidate: dict) -> Optional[tuple]:
        form = portable_form(candidate)
        return form if len(form[1]) <= limit else None

    return smaller(wire, fitting)


def portable(value):
    """``value`` with what Fluent Bit cannot take made text: NaN, Infinity, out-of-range numbers
    as their JSON spelling, lone surrogates as ``\\udXXX``.  For records that must stay what they
    are (alerts)."""
    kind = type(value)
    if kind is dict:
        return {portable(k): portable(v) for k, v in value.items()}
    if kind is list:
        return [portable(v) for v in value]
    if _problem(value) is None:
        return value
    if kind is str:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")  # other characters as they are
    return ujson.dumps(value) if kind is float else str(value)


def _newlines(block: bytes, start: int, end: int) -> int:
    """``block.count(b"\\n", start, end)``, faster on a range that is most of the block:
    count() of one byte is a plain loop, replace() finds with memchr and copies with
    memcpy (about 2.5x faster), and the few bytes outside the range are counted apart."""
    if end - start < len(block) // 2 or end - start < 1 << 16:
        return block.count(b"\n", start, end)
    outside = block.count(b"\n", 0, start) + block.count(b"\n", end)
    return len(block) - len(block.replace(b"\n", b"")) - outside


def unwrap_line(line: bytes, field: str) -> bytes:
    """The line a collector forwarded raw, as a JSON object holding it as text in ``field``
    (``--line-field``), maybe in a Fluent Bit frame (its file output's archive of ``tail``: ``TAG: [TIME,
    {"log": "<line>"}]``; the line is then read at its own time, the frame's is not kept).  A line that is
    not such an object (or whose text holds a newline but at its end, which a line cannot) stays as it is.  A byte order
    mark before the record goes on before its line, for the filter to ignore and say so as for any line."""
    mark = BOM if line.startswith(BOM) else b""
    record_line = line[len(mark):]
    try:
        record = load_event(record_line) if opening(record_line) is None else load_framed(record_line)[1]
    except (ValueError, OverflowError):
        return line
    held = held_line(record.get(field)) if isinstance(record, dict) else None  # a FramedEvent is one
    return line if held is None else mark + held


def unwrap_lines(block: bytes, start: int, end: int, field: str) -> bytes:
    """``unwrap_line`` of each whole line of ``block[start:end]``, each ending in a newline."""
    return b"".join(unwrap_line(line, field) + b"\n" for line in block[start:end - 1].split(b"\n"))


def _as_judged(chunk: bytes, judged) -> Optional[bytes]:
    """What ``chunk`` becomes by ``Filter.judged``'s verdict on it: itself (True), its lines framed
    (the frames' starts), or None (not vouched for, or starts that do not pair up with its lines)."""
    if judged is None:
        return None
    if judged is True:
        return chunk
    return frame(chunk[:-1].split(b"\n"), judged)


class BlockReader:
    """Cuts a file descriptor into blocks of whole lines, read in large reads.

    Yields ``(kind, data, start, end)``: the item is ``data[start:end]`` (see
    LINES / PIECE / PIECE_END).  A final line with no newline gets one.  ``live``
    input (a pipe) may block: before a read that would, ``before_block`` runs
    (it settles and flushes the output), and while nothing arrives ``on_idle`` runs every
    ``idle`` seconds.  Once ``stop`` is requested, no more is read than the rest of the line
    being read (a pipe's, if it comes within ``STOP_LINE_WAIT``): what was read is handed on, as at
    end of input, but a regular file's line that was cut by the stop is left for a next run.
    ``place`` (``position.Place``, a regular file's with ``--state``) follows the lines handed on.
    """

    def __init__(self, fd: int, live: bool, before_block: Callable[[], None],
                 on_idle: Optional[Callable[[], None]] = None, idle: Optional[float] = None,
                 block_size: int = BLOCK_SIZE, max_line: int = DEFAULT_MAX_LINE,
                 stop: Optional[StopRequest] = None, place: Optional[Place] = None):
        self.fd = fd
        self.live = live
        self.stop = stop
        self.place = place
        self._at = os.lseek(fd, 0, os.SEEK_CUR) if place is not None else 0  # where the next read starts
        self._line_deadline = None  # stopped: until when the rest of the line being read is waited for
        self._line_budget = None  # then: how many bytes more the rest of that line may take (``_line_there``)
        self.before_block = before_block
        self.on_idle = on_idle
        self.idle = idle
        self.block_size = block_size
        self.max_line = max_line
        self._eof = False
        self._carry = []  # pieces of the unfinished last line
        self._carried = 0
        self._in_long_line = False  # a line over max_line is being handed on in pieces
        if live:
            parallel.widen_pipe(fd, block_size)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.requested

    def _read(self) -> bytes:
        if self._eof or self._stopped():
            return b""
        while self.live and not self._ready():
            self.before_block()
            waits = [self.fd] if self.stop is None else [self.fd, self.stop.fd]
            timeout = self.idle if self.on_idle is not None and self.idle else None
            while not (ready := select.select(waits, [], [], timeout)[0]):
                self.on_idle()
            if self._stopped():
                return b""
            if self.stop is not None and self.stop.fd in ready:
                self.stop.drain()  # woken by another signal: look at the input again
                if self._stopped():  # unless ours came meanwhile (its handler ran by now)
                    return b""
        data = os.read(self.fd, self.block_size)
        self._eof = not data
        if not self.live or not data or len(data) >= self.block_size // 2:
            return data
        # A pipe hands over what its writer has put in so far (64 KiB by default): gather what
        # is already there into one block, as a file read would give, without waiting for more.
        parts, size = [data], len(data)
        while size < self.block_size // 2 and self._ready() and not self._stopped():
            more = os.read(self.fd, self.block_size - size)
            if not more:
                self._eof = True  # a terminal reports its end (Ctrl-D) only once
                break
            parts.append(more)
            size += len(more)
        return b"".join(parts) if len(parts) > 1 else data

    def _ready(self) -> bool:
        return readable_now(self.fd)

    def _read_on(self) -> bytes:
        """Stopped in the middle of a line: a block more, for its rest (a pipe's, if it comes in time).
        A pipe's is read up to the line's end and no further (``_line_there``): a block read brought the
        cut line's end and the start of another, and a writer that kept the pipe busy, in writes that end
        mid-line, brought another cut line with each end of one, the last one handed on cut (invalid
        JSON, lost) when the wait was over.  The wait bounds every read of a pipe after the stop."""
        if self._eof:
            return b""
        if not self.live:
            data = os.read(self.fd, self.block_size)
            self._eof = not data
            return data
        left = self._line_deadline - time.monotonic()
        if left > 0:
            if not select.select([self.fd], [], [], left)[0]:
                return b""
        elif self._line_budget is None:
            self._line_budget = self.block_size  # past the wait: what is there already, one block at most
        return self._line_there()

    def _line_there(self) -> bytes:
        """Of what the writer has put in the pipe, the rest of the line being read, up to its newline
        and no further: byte by byte, as only the rest of one line is read so, without a wait (what is
        there), at most a block at a time, and past the wait at most one block in all."""
        got, ended = line_rest_now(self.fd, self.block_size if self._line_budget is None else self._line_budget)
        self._eof = self._eof or ended
        if self._line_budget is not None:
            self._line_budget -= len(got)
        return got

    @property
    def _in_line(self) -> bool:
        return bool(self._carry) or self._in_long_line

    def __iter__(self) -> Iterator[tuple]:
        """Whole blocks are handed on as ranges, not copied."""
        read = self._read
        while True:
            block = read()
            if not block:
                if self._eof or not self._in_line or read == self._read_on:
                    break
                # stopped in the middle of a line: read on to its end, for it to go on whole
                read, self._line_deadline = self._read_on, time.monotonic() + STOP_LINE_WAIT
                continue
            if self.place is not None and self.place.continued:  # the end of a line the saved run handed on
                past, head = self.place.continue_line(block)
                if past:
                    self._at += past
                    self._handed(self._at)
                    block = block[past:]
                    if not block:
                        continue
                elif head:
                    self._carry, self._carried = [head], len(head)
            base, self._at = self._at, self._at + len(block)
            cut = block.rfind(b"\n")
            if cut < 0:
                self._carry.append(block)
                self._carried += len(block)
                if self._carried > self.max_line:
                    piece = b"".join(self._carry)
                    self._carry, self._carried, self._in_long_line = [], 0, True
                    if self.place is not None:
                        self.place.between_lines = False
                    yield PIECE, piece, 0, len(piece)
                continue
            start = 0
            if self._carry or self._in_long_line:
                first = block.index(b"\n") + 1
                head = b"".join(self._carry) + block[:first]
                self._carry, self._carried = [], 0
                start = first
                if self._in_long_line:
                    self._in_long_line = False
                    self._handed(base + first)
                    yield PIECE_END, head, 0, len(head) - 1
                else:
                    yield from self._lines(head, 0, len(head), base + first - len(head))
                if read == self._read_on and not self.live:
                    break  # the line the stop cut is whole: the next ones are left in the file
            tail = block[cut + 1:]
            self._carry, self._carried = ([tail], len(tail)) if tail else ([], 0)
            if start <= cut:
                yield from self._lines(block, start, cut + 1, base)
            if read == self._read_on and not tail:
                break  # what the pipe held up to the line's end is handed on, whole lines
        yield from self.rest()

    def _handed(self, offset: int, unterminated: int = 0) -> None:
        if self.place is not None:
            self.place.handed(offset, unterminated)

    def _lines(self, block: bytes, start: int, end: int, base: Optional[int]) -> Iterator[tuple]:
        """``block[start:end]``, whole lines, as ``LINES``; but a line longer than ``max_line``, which
        one read holds whole when the limit is under the block size (or the line began in the read
        before), goes on as a long line does, in one ``PIECE_END``.  ``base``: where ``block`` begins
        in the file, for the place (None: the place is set already)."""
        at = parallel.first_long_line(block, start, end, self.max_line)
        if at is None:
            if base is not None:
                self._handed(base + end)
            yield LINES, block, start, end
            return
        run = start
        while at < end:  # line by line from the first long one
            newline = block.find(b"\n", at, end)  # every range ends with one
            if newline - at > self.max_line:
                if run < at:
                    if base is not None:
                        self._handed(base + at)
                    yield LINES, block, run, at
                if base is not None:
                    self._handed(base + newline + 1)
                yield PIECE_END, block, at, newline
                run = newline + 1
            at = newline + 1
        if run < end:
            if base is not None:
                self._handed(base + end)
            yield LINES, block, run, end

    def rest(self) -> Iterator[tuple]:
        """What was read but not handed on (the unfinished last line), as at end of input;
        also for a run that ends by an error, so that nothing read is lost.  But a regular file's
        line cut by a stop is not handed on cut: it is still in the file, for a next run."""
        carry, in_long_line = self._carry, self._in_long_line
        self._carry, self._carried, self._in_long_line = [], 0, False
        if not self.live and self._stopped() and not self._eof:
            return
        if in_long_line:
            piece = b"".join(carry)
            if self.place is not None:
                self._handed(self.place.offset, self._at - self.place.offset)
            yield PIECE_END, piece, 0, len(piece)
        elif carry:
            last = b"".join(carry) + b"\n"
            self._handed(self._at - len(last) + 1, len(last) - 1)
            yield from self._lines(last, 0, len(last), None)


# Lines read one by one (``--input``) that the prefilter skips: one in this many is parsed for the
# agent's time (``--heartbeat``), as the last line of each skipped block is on a stream.
SAMPLE_EVERY = 256


class Filter:
    """Runs the engine over a stream of lines in one emit mode.

    ``non_json``: "pass" keeps unusable lines byte for byte (Unix pipes); "wrap"
    turns each into a JSON record (``wrap_line``) so that every output line is a
    JSON object under ``max_record`` bytes, which Fluent Bit's stdin input needs.
    ``fluentbit_time`` writes ``[time, record]`` so Fluent Bit keeps event time.
    ``keep_state`` (``--state``) snapshots the correlation state now and then and at the end.
    """

    state = None  # ``correlate.state.StateFile`` with ``--state``
    progress = None  # ``correlate.agents.Progress``: a match stage's heartbeats (``--heartbeat``)
    _live = False  # the input being read is a pipe
    # the fleet bus (``fleet``): where a match stage's records go instead of the output; what else
    # takes each alert (both with ``flush``); what follows each snapshot (the acknowledgement); the bus
    # position it includes, and when the stream it is in was made (a stream made anew numbers from 1)
    publisher = None
    alert_sink = None
    after_save = None
    bus_seq = None
    bus_stream = None
    bus_subject = None  # the subject the correlator on the bus reads (its prefix and partition)
    lines_start = 0  # the line counter taken back from a state file
    stats_passed = 0  # ``--stage correlate``: a match stage's stats records passed on
    _place = None  # ``position.Place``: where a regular file input is read up to (``--state``)
    saved_place = None  # the state file's: where the last run left its file
    file_places = None  # ``position.FilePlaces``: the places in the files merged (``--state``)
    saved_inputs = None  # the state file's: where the last run left the files it merged
    place_notes = ()  # what became of the saved places: read on from, or why a file is read from its start

    def __init__(self, engine: Engine, output: Output, diagnostics: Diagnostics, emit: str = "all",
                 idle: Optional[float] = None, prefilter: Optional[Prefilter] = None, non_json: str = "pass",
                 fluentbit_time: bool = False, max_record: int = DEFAULT_MAX_RECORD, clock=time.time_ns,
                 workers: int = 0, stage: str = "all", index: Optional[RuleIndex] = None):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if emit not in ("alerts", "matches", "all"):
            raise ValueError(f"unknown emit mode {emit!r}")
        if non_json not in ("pass", "wrap"):
            raise ValueError(f"unknown non-JSON handling {non_json!r}")
        self.engine = engine
        self.stage = stage
        if stage == "correlate":  # its Detection records come at least once: a replay counts once
            engine.take_once()
        self.output = output
        self.diagnostics = diagnostics
        self.emit = emit
        self.idle = idle
        self.prefilter = prefilter
        self.index = index  # which rules a candidate line can match (a rule set)
        self.wrap = non_json == "wrap"
        # a line that is not a JSON object (or is over --max-line-bytes) as a pipeline_error record: with
        # wrap, and with --fluentbit-time too, which cannot frame it as [time, {record}] otherwise
        self.wrap_unusable = self.wrap or fluentbit_time
        if self.wrap_unusable and stage == "all":  # as a match stage would write them (``own_form``)
            engine.carried = functools.partial(_as_carried, limit=max_record - 64 if self.wrap else None)
        self.fluentbit_time = fluentbit_time
        self.max_record = max_record
        self.clock = clock
        # Lines the prefilter rules out may still need parsing: to be checked for
        # JSON (wrap) or to have their time written (fluentbit_time); whole blocks of them are
        # vouched for by the skimmer when it can (``skim``), else one by one.
        self._parse_every_line = self.wrap or fluentbit_time
        self._skimmer = None
        if self._parse_every_line:
            self._skimmer = self._make_skimmer(fluentbit_time and emit == "all")
        self.lines = 0
        self.origin = None  # label for diagnostics when reading several files
        self._long_line = None  # line number of the line over the inspection limit being passed on
        self._long_head, self._long_size = b"", 0  # wrap: its first --max-line-bytes, and its length so far
        self._wall_idle = None  # idle seconds when live input lets the wall clock move the watermark
        self._reader = None  # the BlockReader of the input being read
        self.workers = workers  # processes prefiltering a regular file (``parallel``); 0: none
        self.parallel_min = PARALLEL_MIN
        self.parallel_chunk = parallel.CHUNK

    def _make_skimmer(self, need_time: bool):
        from .skim import Skimmer  # msgspec: only the Fluent Bit modes need it
        if need_time and self.prefilter is not None:  # a line carrying XML: parsed alone, at its XML's time
            self.prefilter.xml_alone = True
        # what else it must refuse: in both modes, numbers Fluent Bit cannot take (msgspec checks the
        # syntax of those it skips, not their size; it refuses NaN, Infinity and a lone surrogate escape,
        # and Python's UTF-8 decoder an encoded surrogate), lines that may nest too deep; 64: room for
        # the frame
        return Skimmer(self.engine.resolver, need_time, _BIG_NUMBER_GROUPS + [[_DEEP]] if self.wrap_unusable else (),
                       min(self.max_record - 64, DENSE_FROM) if self.wrap else DENSE_FROM)  # long: parsed alone

    # ------------------------------------------------------------ input

    max_line = DEFAULT_MAX_LINE  # ``--max-line-bytes``, as ``run`` or ``process_labelled`` was given it
    _line_field = None  # ``--line-field``: the input lines wrap the event's own line, in this field
    _unwrapper = None  # ``skim.LineField`` for it: whole blocks unwrapped at once
    # An .evtx input's records may give a Data name twice: matched on each value (``every_value``).  Not
    # looked for in NDJSON lines, written by collectors as maps: the scan would cost 2-6 us a line.
    repeated_keys = False

    @property
    def line_field(self) -> Optional[str]:
        return self._line_field

    @line_field.setter
    def line_field(self, field: Optional[str]) -> None:
        self._line_field = field
        if field is not None:
            from .skim import LineField
            self._unwrapper = LineField(field, DENSE_FROM)  # longer: maybe too dense for ``load_event``

    def process(self, kind: str, data: bytes, start: int, end: int) -> None:
        """One item from ``BlockReader``."""
        self.engine.release_memory()
        self._block_at, self._read_at = self._read_at - start, self._read_at + end - start
        if kind == LINES and self._block_workers is not None:
            if self._block_workers.full:
                self._take_handed()
            if self._block_workers is not None:
                self._block_workers.hand(data[start:end])
                return
        self.drain()
        if kind == LINES:
            if self.line_field is not None:
                data, start, end = self._unwrap_lines(data, start, end), 0, None
            self.process_block(data, start, end)
        else:
            self._process_long_piece(data[start:end], kind == PIECE_END)

    _read_at = 0  # bytes of input handed on so far, and where the block being handled starts among them:
    _block_at = 0  # a file's time samples are taken at fixed places in it, whatever its blocks (``_sample_time``)
    _block_workers = None  # ``parallel.BlockWorkers`` matching the blocks of a pipe (``run``)
    _handed = ()  # (worker, block) they held when they were closed, for the filter to read itself

    def drain(self) -> None:
        """Take every block handed to the workers, in order: before anything else is written
        (a long line's piece, an idle tick's alerts, the end), and before state is saved."""
        while self._block_workers is not None and self._block_workers.pending:
            self._take_handed()
        while self._handed:
            _, block = self._handed.popleft()
            self.process_block(block, 0, len(block))

    def _take_handed(self) -> None:
        block, lines, marked = self._block_workers.take()
        if marked is None:  # its worker died: the filter reads on alone, from this block
            self._end_block_workers()
            self.process_block(block, 0, len(block))
            return
        self._take_detected(block, lines, marked)

    def _end_block_workers(self) -> None:
        workers, self._block_workers = self._block_workers, None
        if workers is not None:
            self._handed = workers.pending
            workers.close()

    def _unwrap_lines(self, block: bytes, start: int, end: int) -> bytes:
        """``unwrap_lines``, for a whole block at once when every line is a JSON object (``skim``)."""
        chunk = block[start:end]
        return self._unwrapper.unwrap(chunk, _newlines(chunk, 0, len(chunk))) \
            or unwrap_lines(block, start, end, self.line_field)

    def process_block(self, block: bytes, start: int = 0, end: Optional[int] = None, scanned=None) -> None:
        """Whole lines, each ending in a newline: ``block[start:end]``; ``scanned``
        is the prefilter's result with the line count, when a worker computed it."""
        end = len(block) if end is None else end
        if self.prefilter is None:
            self._each_line(block, start, end, True)
            return
        candidates, suspects, newlines = scanned or (*self.prefilter.scan(block, start, end), None)
        if not candidates and not suspects:  # the common case: nothing in this block can match
            self._skip(block, start, end, newlines)
            return
        marked = sorted([(s, e, True) for s, e in candidates] + [(s, e, False) for s, e in suspects])
        position, process_line = start, self.process_line
        for line_start, line_end, candidate in marked:
            if position < line_start:
                self._skip(block, position, line_start)
            self.lines += 1
            process_line(block[line_start:line_end], self.lines, candidate)
            position = line_end + 1
        self._skip(block, position, end)

    def _each_line(self, block: bytes, start: int, end: int, candidate: bool) -> None:
        if start < end:
            for line in block[start:end - 1].split(b"\n"):
                self.lines += 1
                self.process_line(line, self.lines, candidate)

    def _skip(self, block: bytes, start: int, end: int, newlines: Optional[int] = None) -> None:
        """Lines that cannot match and look like JSON objects: on untouched (or dropped).
        ``newlines`` is their count when the scan already took it."""
        if start >= end:
            return
        if self._parse_every_line:
            self._pass_framed(block, start, end, newlines)
            return
        self.lines += _newlines(block, start, end) if newlines is None else newlines
        written = start if self.progress is None else self._sample_time(block, start, end)
        if self.emit == "all":
            self.output.write(memoryview(block)[written:end])

    def _pass_framed(self, block: bytes, start: int, end: int, lines: Optional[int] = None) -> None:
        """Lines that cannot match, in the Fluent Bit modes, which need each to be a JSON object
        (``wrap``) and the record's own time (``fluentbit_time``).  A range the skimmer vouches for
        goes out in one piece; one it does not is halved, and a short one is parsed line by line."""
        lines = _newlines(block, start, end) if lines is None else lines
        if self.progress is not None:  # the match stage's heartbeats go between the lines
            times = self._skimmer.vouch(block[start:end], lines)
            if times is not None:
                self._pass_timed(block[start:end], times)
                return
        else:
            out = self.vouched(block[start:end], lines)
            if out is not None:
                self.lines += lines
                if self.emit == "all":
                    self.output.write(out)
                return
        if lines > SKIM_LEAST:
            middle = block.find(b"\n", (start + end) // 2, end - 1)
            if middle < 0:
                middle = block.rfind(b"\n", start, (start + end) // 2)
            self._pass_framed(block, start, middle + 1)
            self._pass_framed(block, middle + 1, end)
        elif self.emit == "all" and self.progress is None:
            self._pass_lines(block, start, end)
        else:
            self._each_line(block, start, end, False)

    def _pass_timed(self, chunk: bytes, times: list) -> None:
        """Vouched-for lines whose times the agent's progress hears of, each heartbeat it sends
        written after the line that made it due, as ``process_line`` would."""
        lines = chunk[:-1].split(b"\n")
        begin = 0
        for index, when in enumerate(times):
            beat = self.progress.see(when)
            if beat is not None or index == len(times) - 1:
                self.lines += index + 1 - begin
                if self.emit == "all":
                    piece = lines[begin:index + 1]
                    self.output.write(frame(piece, self._starts(times[begin:index + 1])) if self.fluentbit_time
                                      else b"\n".join(piece) + b"\n")
                self._send(beat)
                begin = index + 1

    def vouched(self, chunk: bytes, lines: int) -> Optional[bytes]:
        """What ``chunk``, ``lines`` whole lines the prefilter ruled out, becomes in the Fluent Bit
        modes when the skimmer vouches for every line: itself (``wrap``; or nothing is written), or
        its lines each framed with its time; None when it does not."""
        return _as_judged(chunk, self.judged(chunk, lines))

    def judged(self, chunk: bytes, lines: int):
        """The skimmer's verdict on ``chunk`` (asked by a worker too, ``parallel.scan_chunk``): None
        when it does not vouch for every line; True when the lines go out as they are (or not at
        all); else the frames' starts ``[<time>,``, one per line (for ``frame``)."""
        if not self.fluentbit_time or self.emit != "all":
            return None if self._skimmer.vouch(chunk, lines) is None else True
        starts = self._skimmer.starts(chunk, lines)
        if starts is not None and (None in starts or b"" in starts):  # no time Fluent Bit takes: the clock's
            clock = self.clock
            starts = [start or start_at(clock()) for start in starts]
        return starts

    def _starts(self, times: list) -> list:
        """Each time's frame start ``[<time>,`` (the clock's for a line without one)."""
        clock = self.clock
        return [start_or_clock(when, clock) for when in times]

    def _pass_lines(self, block: bytes, start: int, end: int) -> None:
        """Lines that cannot match, one by one: each is parsed, with no more work than that.  What
        could make a line come out otherwise (not starting with ``{``, not a JSON object, over
        ``--max-record-bytes``, or bytes that may be unportable, found by one scan of the whole
        range) sends it down ``process_line``, so the output is the same byte for byte."""
        chunk = block[start:end]
        risky = iter(_maybe_unportable_ends(chunk) if self.wrap_unusable else ())
        next_risk = next(risky, len(chunk) + 1)
        out = []
        loads, clock, time_of = load_event, self.clock, self.line_time
        framed, wrap, limit = self.fluentbit_time, self.wrap, self.max_record
        position = 0
        for line in chunk[:-1].split(b"\n"):
            self.lines += 1
            line_start, position = position, position + len(line) + 1
            while next_risk <= line_start:  # a match ending at a line's start ended on the line before
                next_risk = next(risky, len(chunk) + 1)
            record = None
            if next_risk >= position and line[:1] == b"{":
                try:
                    event = loads(line)
                except (ValueError, OverflowError):
                    event = None
                if event is not None:
                    record = line
                    if framed:
                        when = time_of(line, event)
                        record = start_or_clock(when, clock) + line + b"]"
                    if wrap and len(record) > limit:
                        record = None
            if record is not None:
                out.append(record)
                continue
            if out:
                out.append(b"")
                self.output.write(b"\n".join(out))
                out = []
            self.process_line(line, self.lines, False)
        if out:
            out.append(b"")
            self.output.write(b"\n".join(out))

    def _sample_time(self, block: bytes, start: int, end: int, every: int = 1 << 16) -> int:
        """Lines the prefilter skipped are not parsed, yet they carry the agent's time: one line
        in every ``every`` bytes is (the agent's time lags by at most that much input), and on live
        input the first lines the agent reads, until two vouch for a time (its correlators hear of it
        at once).  A file's are the lines at each ``every``-th byte of it, whatever blocks it is read
        in, and the heartbeat one makes due goes out after it (``--emit all``): worker processes read
        other blocks than one process does, and send the same heartbeats at the same places.  Returns
        where in ``block`` what is still to be passed on starts."""
        if not self._live:
            at, written, stop = self._block_at, start, None
            mark = -((at + start) // -every) * every - at  # the first such byte at or after ``start``
            while mark < end:
                stop = block.find(b"\n", mark, end)
                if self.emit == "all":
                    self.output.write(memoryview(block)[written:stop + 1])
                    written = stop + 1
                self._sample_line(block[max(block.rfind(b"\n", start, mark) + 1, start):stop])
                mark = ((at + stop) // every + 1) * every - at
            self._last_skipped = None if stop == end - 1 else \
                (block[max(block.rfind(b"\n", start, end - 1) + 1, start):end - 1], at + end)
            return written
        first = start
        if self.progress.early and start < end:
            self._sample_line(block[start:block.find(b"\n", start, end)])
        while start < end:
            stop = block.rfind(b"\n", start, min(end, start + every)) if end - start > every else end - 1
            if stop < start:  # one line longer than ``every``
                stop = block.find(b"\n", start, end)
            self._sample_line(block[max(block.rfind(b"\n", start, stop) + 1, start):stop])
            start = stop + 1
        return first

    _last_skipped = None  # (line, where its input ends): the last line of a file ``_sample_time`` saw, unsampled

    def _sample_last(self) -> None:
        """End of a file's input: its last line, when skipped, gives the agent's final time."""
        if self._last_skipped is not None and self._last_skipped[1] == self._read_at:
            self._sample_line(self._last_skipped[0])
        self._last_skipped = None

    def _sample_line(self, line: bytes) -> None:
        try:
            framed = load_framed(line)
            line, event = framed if framed is not None else (line, load_event(line))
        except (ValueError, OverflowError):
            return
        if isinstance(event, dict):
            self._seen_time(self.line_time(line, event))

    def line_time(self, line: bytes, event: dict) -> Optional[int]:
        """The time the filter reads for a line, ``event`` its JSON: that of the event whose XML it carries
        (``_carried``), the time its Detections take, not the collector's record's, which is later.  What a
        match stage's heartbeat vouches for (at the collector's time it made the next Detections late for
        the correlate stage), and the merge key of several ``--input`` files.  Every other line costs a
        dictionary lookup and a ``<`` (memchr) more than its own time (``event_to_read``)."""
        read = event_to_read(line, event, self.engine.resolver)[0]  # a refused XML: said where it is matched
        return self.engine.event_time(read, read is not event)

    def text_time(self, text: bytes) -> Optional[int]:
        """The time the filter reads for a line that is not JSON (no byte order mark): that of the event
        whose XML it holds (``_read_text_xml``: Sysmon for Linux's own syslog file), else None.  The merge
        key of several ``--input`` files, which kept such a file's lines after all of another's."""
        if self.stage == "correlate":
            return None
        try:
            read = event_in_line(text)
        except XmlEventProblem:  # said where the line is read
            return None
        return None if read is None else self.engine.event_time(read, True)

    def _seen_time(self, time_ns: Optional[int]) -> None:
        self._send(self.progress.see(time_ns))

    def _send(self, record) -> None:
        """A match stage's Detection or Heartbeat record (None: nothing): to the fleet bus when
        there is one, else to the output."""
        if record is None:
            return
        wire = record.to_wire()
        _, payload = self.own_form(wire)
        if self.publisher is not None:  # the bus has a cap of its own (``fleet.Publisher``)
            self.publisher.send(record, payload)
            return
        if self.wrap and len(payload) > self.max_record - 64 and record.__class__ is Detection:
            found = fitted(wire, self.max_record - 64)
            if found is not None:  # else cut into a pipeline_error record, as any record over the cap
                self.diagnostics.report("detection_shortened", self._where(self.lines),
                                        f"Detection of rule {record.rule!r} over --max-record-bytes: written with "
                                        "its long values cut short (equal values stay equal)")
                payload = found[1]
        self._write(payload, None, record.time)

    def _process_long_piece(self, piece: bytes, last: bool) -> None:
        """A line over ``--max-line-bytes``, piece by piece: passed on as it comes, or (wrap) kept
        as its first ``--max-line-bytes`` and its length, for one record at its end."""
        if self._long_line is None:
            self.lines += 1
            self._long_line, self._long_head, self._long_size = self.lines, b"", 0
            self.diagnostics.report("too_long", self._where(self.lines), "line too long to inspect; " +
                                    ("wrapped, cut" if self.wrap_unusable and self.emit == "all" else
                                     "passed on unchanged" if self.emit == "all" else "skipped"))
        if self.emit == "all" and self.wrap_unusable:
            if len(self._long_head) < self.max_line:  # the same first bytes wherever the reads cut it
                self._long_head += piece[:self.max_line - len(self._long_head)]
            self._long_size += len(piece)
        elif self.emit == "all":
            self.output.write(piece)
        if last:
            if self.emit == "all" and self.wrap_unusable:
                self._write(wrap_line(self._long_head, "too_long", "line longer than --max-line-bytes; cut",
                                      self._long_line, self.max_record, self._long_size), None)
            elif self.emit == "all":
                self.output.write(b"\n")
            self._long_line, self._long_head = None, b""

    def process_line(self, line: bytes, number: int, candidate: bool = True) -> None:
        """One line (without its newline): parse, detect, write."""
        keep = self.emit == "all"
        if not line or line.isspace():  # ``not line.strip()``, without copying the line
            self._unusable(line, number, "empty", "empty line", keep)
            return
        text = line
        if line.startswith(BOM):  # an editor's or a Windows tool's byte order mark (files joined with cat)
            self.diagnostics.report("bom", self._where(number), "UTF-8 byte order mark before the line; ignored")
            text = line[len(BOM):]
        at = opening(text)  # a Fluent Bit frame around the record (a match stage's too, archived and replayed)
        try:
            if at is None:
                event = load_event(text)
            else:
                framed, event = read_frame(text, at)
        except NotAFrame as refused:
            self._unusable(line, number, "not_object", f"JSON {refused.kind}, {NOT_FRAME}", keep)
            return
        except (ValueError, OverflowError) as error:
            if self.stage == "correlate" or not self._read_text_xml(line, text, number):
                kind, message = decode_problem(line, error)
                self._unusable(line, number, kind, message if at is None else FRAME_UNREAD + message, keep)
            return
        head = tail = b""
        if at is not None:  # the record goes on in its own frame: what is before and after it
            head, tail = line[:len(line) - len(text) + framed.start], text[framed.end:]
            text = text[framed.start:framed.end]
        # A pipeline_error record's ``original`` is the line as read, byte order mark included (as for
        # a line that is not JSON); an object goes on without it in wrap mode: Fluent Bit takes none.
        if not isinstance(event, dict):
            self._unusable(line, number, "not_object", f"JSON {type(event).__name__}, not an object", keep)
            return
        forged = self.stage == "match" and impersonates(text)
        if forged:  # wrapped in any mode, never passed on as it is; still detected: else one field an attacker
            # sets would take the event out of the fleet's alerts
            message = "a record type of the filter's own (sigma.detection, sigma.heartbeat) in the input; wrapped"
            self.diagnostics.report("impersonation", self._where(number), message)
            self._write(wrap_line(line, "impersonation", message, number, self.max_record), None)
            keep = False
        if self.wrap_unusable:
            line = text
        if not candidate:  # framed, and vouched for, at the time the filter reads for it: a carried XML's
            when = self.line_time(text, event) if self.fluentbit_time or self.progress is not None else None
            if keep:
                self._write(line, event, when)
            if self.progress is not None:
                self._seen_time(when)
            return
        if self.stage == "correlate":
            self._correlate_line(line, event, number)
            return
        if "StringInserts" in event:  # no call on every other event's way (the worker's guard too)
            self._say_event_data_map(self._event_data_map_problem(event), number)
        only = self._only(line)
        if self.repeated_keys:
            event = every_value(text, event)
        read = self._carried(text, event, number)  # the event matched; ``event`` is the line's own
        carried = read is not event
        sigma, following = self._judge(read, number, only, text, carried)
        if sigma is not None and self.emit != "alerts" and not forged:
            if head and not self.wrap_unusable:  # in its own frame: the record enriched inside it
                self._write(head + enrich_line(text, event, sigma) + tail, read, carried=carried)
            else:
                self._write(enrich_line(line, event, sigma), read, carried=carried)
        elif keep:
            self._write(line, read, carried=carried)
        self._follow(read, following, carried)

    def _judge(self, read: dict, number: int, only, text: bytes, carried: bool) -> tuple:
        """The detect stage, and in one process the correlate stage, on the event a line is read as:
        its enrichment (None: it matched nothing), and what goes out after the line: its Detections
        (``--stage match``) or the alerts it fired (``_follow``).  ``carried``: ``read`` is the event of
        the XML the line carries (``FieldResolver.carried`` reads it)."""
        if self.stage == "match":
            return self.engine.match(read, number, only, text, carried)
        outcome = self.engine.process(read, number, only, text, carried)
        if outcome.untimed:
            self.diagnostics.report("no_time", self._where(number),
                                    "matched event has no parsable time; left out of correlation")
        return outcome.sigma, outcome.alerts

    def _follow(self, read: dict, following: list, carried: bool) -> None:
        """After a line: its Detections, then a heartbeat vouching for them (``--stage match``), or its alerts."""
        if self.stage != "match":
            self.write_alerts(following)
            return
        for detection in following:
            self._send(detection)
        if self.progress is not None:
            self._seen_time(following[0].time if following else self.engine.event_time(read, carried))

    def _read_text_xml(self, line: bytes, text: bytes, number: int) -> bool:
        """A line that is not JSON but holds an event's XML (a line of Sysmon for Linux's own syslog
        file, read with ``cat``): read as that event, always (the block prefilter's needles are JSON
        spellings: a backslash is doubled there), and tried on the rules the index finds its literals for
        as text (``RuleIndex.rules_for_text``).  The line goes on as it came, not enriched (text has no
        place for it); in the Fluent Bit modes, which write JSON only, as the record ``text_record`` makes.
        False: no event's XML there (or not UTF-8), for the caller to diagnose."""
        try:
            read = event_in_line(text)
        except XmlEventProblem as problem:
            self._unusable(line, number, "xml_unread", f"{problem}; the line, not JSON, {self._fate_of_text()}",
                           self.emit == "all")
            return True
        if read is None:
            return False
        only = None if self.index is None else lambda routed: self.index.rules_for_text(text, routed)
        sigma, following = self._judge(read, number, only, text, True)
        if self.emit == "all" or sigma is not None and self.emit != "alerts":
            kept = text_record(text, sigma) if self.wrap_unusable else line
            self._write(kept, read, carried=True)  # --fluentbit-time: framed at its XML's time
        self._follow(read, following, True)
        return True

    def _fate_of_text(self) -> str:
        """What becomes of a line that is not JSON, for a diagnostic to say it truly in every mode."""
        if self.emit != "all":
            return "is not written"
        return "is written as a pipeline_error record" if self.wrap_unusable else "is passed on as it is"

    def _carried(self, text: bytes, event: dict, number: int) -> dict:
        """The event whose XML a text of the line holds (Sysmon for Linux in a collector's record, Fluent
        Bit's ``Render_Event_As_XML``: ``events.xml_event``), else the line's own.  The line is written as it
        came, at its own time."""
        read, problem = event_to_read(text, event, self.engine.resolver)
        if problem is not None:
            self.diagnostics.report("xml_unread", self._where(number), f"{problem}; the line is read as it is")
        return read

    def _event_data_map_problem(self, event: dict) -> Optional[str]:
        """Fluent Bit's winevtlog without ``Event_Data_As_Map``, and its older winlog input always, write
        an event's data only as the positional ``StringInserts``: the fields its rules name (``Image``) are
        missing, and every rule on them misses in silence.  What to say of an event lacking a field that the
        rules written for its kind of event read (``Detector.fields_expected``), or None: events whose data have
        no names (PowerShell's 800) get no map either way, and their rules read ``Data``, which is
        ``StringInserts``.
        A detecting worker asks it too: the parent never sees a line that matched nothing."""
        if "StringInserts" not in event or "EventData" in event or event.get("System").__class__ is str:
            return None  # Render_Event_As_XML: the names are in the XML
        inserts = event["StringInserts"]
        if inserts.__class__ is not list or not inserts:
            return None
        view = self.engine.resolver.view(event)
        problem = POSITIONAL_ONLY.get(view.profile.name)
        if problem is None:
            return None
        unread = sorted(f for f in self.engine.detector.fields_expected(view) if view.get(f) is MISSING)
        if not unread:
            return None
        shown = ", ".join(unread[:3]) + (f" and {len(unread) - 3} more" if len(unread) > 3 else "")
        return problem.format(shown)

    def _say_event_data_map(self, problem: Optional[str], number: int) -> None:
        if problem is not None:
            self.diagnostics.report("no_event_data_map", self._where(number), problem)

    def _only(self, line: bytes):
        """The ``only`` of ``Engine.match`` for a line: with a rule set, the index is asked about
        the rules the event's log source routes it to, once they are known."""
        return None if self.index is None else lambda routed: self.index.rules_for(line, routed)

    def _correlate_line(self, line: bytes, event: dict, number: int) -> None:
        """``--stage correlate``: a line is a Detection or a heartbeat record from a match stage, or
        its stats record (``--stats-interval``), passed on: it came piped with them, for the SIEM."""
        try:
            detection = from_wire(event)
        except WireError as error:
            if is_stats_record(event):
                self.stats_passed += 1
                self._write(self.own_form(event, shrinkable=True)[1], None)
                return
            self._unusable(line, number, "not_detection", f"not a Detection record: {error}", False)
            return
        if isinstance(detection, Heartbeat):
            self.write_alerts(self.engine.progress(detection))
            return
        if detection.rule not in self.engine.plans:  # the stages' --rule differ: say so, never drop in silence
            left_out = self.engine.left_out.get(detection.rule)
            why = "is not loaded here (both stages need the same --rule)" if left_out is None else \
                f"{self.engine.selection.options()} leaves out here ({left_out.why}; both stages need the same " \
                f"{self.engine.selection.option_names_text()})"
            self.diagnostics.report("unknown_rule", self._where(number),
                                    f"Detection of rule {detection.rule[:80]!r}, which {why}; dropped")
            return
        try:
            detection = self.engine.received(detection)
        except WireError as error:
            self._unusable(line, number, "not_detection", f"not a Detection record: {error}", False)
            return
        outcome = self.engine.observe(detection, number)
        if outcome.untimed:
            self.diagnostics.report("no_time", self._where(number),
                                    "detection has no event time; left out of correlation")
        self.write_alerts(outcome.alerts)

    def _unusable(self, line: bytes, number: int, kind: str, message: str, keep: bool) -> None:
        self.diagnostics.report(kind, self._where(number), message)
        if keep:
            self._write(wrap_line(line, kind, message, number, self.max_record) if self.wrap_unusable else line,
                        None)

    def _where(self, number: int):
        return self.origin or number

    def process_labelled(self, labelled: Iterable[tuple], max_line: int = DEFAULT_MAX_LINE,
                         stop: Optional[StopRequest] = None) -> None:
        """Lines that come one by one from files (``inputs``): ``(label, line, verdict)``,
        the label (``"a.evtx record 7"``) shown by diagnostics instead of a number, the
        verdict the prefilter's (``inputs.judged``)."""
        self.max_line = max_line
        for label, line, verdict in labelled:
            if stop is not None and stop.requested:
                break
            if self.state is not None and self.state.due():
                self.save_state()
            self.origin = label
            self._labelled_line(line, verdict, max_line)
            if label.__class__ in PLACED:  # a merged (or EVTX) file's place moves past the line (``--state``)
                label.handed()
            if self._stats is not None:  # every interval, as when one file is read in blocks
                self.write_stats()
            self.hand_on_due()  # a pipe among them that never pauses
        self.origin = None

    def _labelled_line(self, line, verdict, max_line: int) -> None:
        if isinstance(line, LongLine):  # passed on in pieces, never whole in memory
            pieces = line.pieces()
            piece = next(pieces, b"")
            for following in pieces:
                self._process_long_piece(piece, False)
                piece = following
            self._process_long_piece(piece, True)
            return
        if len(line) > max_line:
            self._process_long_piece(line, True)
            return
        if self.line_field is not None:
            line, verdict = unwrap_line(line, self.line_field), CANDIDATE
        self.lines += 1
        if verdict != SKIP or self._parse_every_line:
            self.process_line(line, self.lines, verdict == CANDIDATE)
            return
        if self.emit == "all":
            self.output.write(line + b"\n")
        if self.progress is not None and (self.lines % SAMPLE_EVERY == 0 or self.progress.early):
            self._sample_line(line)  # the agent's time, from its first line and now and then

    # ------------------------------------------------------------ output

    def _write(self, record: bytes, event: Optional[dict], time_ns: Optional[int] = None,
               carried: bool = False) -> None:
        """One output record; ``event`` (or ``time_ns``) gives its time for ``--fluentbit-time``: the event
        read from the XML the record carries (``carried``), if it does, as ``line_time`` says."""
        if self.wrap_unusable:  # --fluentbit-time alone too: Fluent Bit would drop the whole read
            problem = unportable_record(record)
            if problem is not None:  # the record as it would have gone out, kept as text
                self.diagnostics.report("unportable", self._where(self.lines),
                                        f"{problem}; written as a pipeline_error record")
                record = wrap_line(record, "unportable", problem, self.lines, self.max_record)
        if self.fluentbit_time:
            if time_ns is None and event is not None:
                time_ns = self.engine.event_time(event, carried)
            start = start_or_clock(time_ns, self.clock)
            line = start + record + b"]"
        else:
            start, line = b"", record
        if self.wrap and len(line) > self.max_record:
            self.diagnostics.report("record_cut", self._where(self.lines), "record over --max-record-bytes; cut")
            record = wrap_line(record, "too_long", "record over --max-record-bytes; cut", self.lines, self.max_record)
            line = start + record + b"]" if start else record
        self.output.write(line + b"\n")

    def own_form(self, record: dict, shrinkable: bool = False) -> tuple:
        """A record of the filter's own (an alert, a Detection, a heartbeat, a metric) and its JSON:
        in the Fluent Bit modes, what Fluent Bit cannot take is made text (``portable``) and, when
        ``shrinkable`` (an alert, a metric), one too long is made smaller (``records.smallest_fitting``), so
        that the record stays what it is rather than becoming a pipeline_error record.  A Detection is never
        shrunk: cut, it would mislead the correlate stage; its values are bounded (``detect.kept``)."""
        record, encoded = portable_form(record) if self.wrap_unusable else (record, dumps(record))
        if shrinkable and self.wrap and len(encoded) > self.max_record - 64:
            encoded = smallest_fitting(record, dumps, lambda smaller: len(smaller) <= self.max_record - 64)
        return record, encoded

    def write_alerts(self, alerts: Iterable[dict]) -> None:
        for record in alerts:
            record, encoded = self.own_form(record, shrinkable=True)
            self._write(encoded, None, parse_time(record.get("@timestamp")) if self.fluentbit_time else None)
            if self.alert_sink is not None:
                self.alert_sink(record, encoded)

    # ------------------------------------------------------------ running

    def on_idle(self) -> None:
        """The input has waited a while with nothing (the reader's call): the agent is idle, and
        says so now (``_idle_beat``); then what is due while waiting (``_waiting``)."""
        if self.progress is not None and self._live:
            self._idle_beat()
        self._waiting()

    def _idle_beat(self) -> None:
        """An idle heartbeat, only when the input was seen waiting: made after a flush that was held
        up (a bus down), it said the agent was idle when records had come meanwhile, and the fleet's
        time went past them.  On the bus it goes at once or never (``Publisher.send_idle``): it sat
        in the batch until the next input, so the fleet never heard the agent was idle."""
        beat = self.progress.quiet()
        if beat is None:
            return
        if self.publisher is None:
            self._send(beat)
        else:
            self.publisher.send_idle(beat, self.own_form(beat.to_wire())[1])

    def _waiting(self) -> None:
        if self._wall_idle is not None:
            self.write_alerts(self.engine.idle(self._wall_idle))
        self.report_skew()
        self.write_stats()
        self.output.flush()
        if self.state is not None and self.state.due():
            self.save_state()

    # ------------------------------------------------------------ stats records (``--stats-interval``)

    _stats = None  # (interval in seconds, function making the record, monotonic clock)
    _stats_next = None

    def send_heartbeats(self, agent: str, every: float, max_skew_ns: int) -> None:
        """``--stage match`` on one agent of many: say how far the input has got (``correlate.agents.Progress``),
        so that the correlate stage's time moves when nothing matches."""
        if self.stage != "match":
            raise ValueError("heartbeats come from a match stage")
        self.progress = Progress(agent, every, max_skew_ns, between=self.engine.detector.between)
        if self._skimmer is not None:  # the lines' times are needed now, whatever is written
            self._skimmer = self._make_skimmer(True)

    def keep_stats(self, interval: float, make_record, clock=time.monotonic) -> None:
        """Write ``make_record()`` as an output record every ``interval`` seconds of wall time
        (checked between blocks and while input waits), and once at the end."""
        self._stats = (interval, make_record, clock)
        self._stats_next = clock() + interval

    def write_stats(self, final: bool = False) -> None:
        if self._stats is None:
            return
        interval, make_record, clock = self._stats
        now = clock()
        if final or now >= self._stats_next:
            self._stats_next = now + interval
            self.report_skew()  # the record names the sources reported so far
            self._write(self.own_form(make_record(), shrinkable=True)[1], None)

    def report_skew(self, final: bool = False) -> None:
        for kind, message in self.engine.skew_reports(final):
            if kind is None:  # about the run, not counted (``Correlation._own_clock_hint``)
                self.diagnostics.note(f"correlation: {message}")
            else:
                self.diagnostics.report(kind, "correlation", message)

    def before_block(self) -> None:
        """No input is ready: what is final now goes out now, before the reader waits."""
        self.drain()
        self.write_alerts(self.engine.settle())
        self._flush_sinks()
        self._waiting()
        self.engine.release_memory()

    def finish(self, keep_open: bool = False, pause: bool = False) -> None:
        """End of input (or of what was read before a stop or an error): what was read is
        processed, then flushed; with ``keep_open`` (``--on-stop keep``, a stop signal) the windows
        still open are not flushed but left in the state, for the next run to go on with.  ``pause``:
        without a state to save (``explain --state``), the end is that of a run with ``--state``,
        whose windows stay open (``Engine.pause``: an upper bound's window not complete is not judged)."""
        if self._reader is not None:
            for item in self._reader.rest():
                self.process(*item)
            self._reader = None
        self.drain()
        self._end_block_workers()
        if self._long_line is not None:
            self._process_long_piece(b"", True)
        if self.progress is not None:
            self._sample_last()
            self._send(self.progress.last())
        self.report_skew(final=True)  # before the flush, which makes every source's events final
        if self.state is not None and keep_open:
            self.save_state()
        elif self.state is not None:
            # end of input is a pause: the flush's alerts go out, the windows stay open in the state
            self._pause()
        else:
            self.write_alerts(self.engine.pause() if pause else self.engine.flush())
        self.write_stats(final=True)  # after the last alerts, which it counts
        self._flush_sinks()
        self.output.flush()
        if self.file_places is not None:  # kept open for the last snapshot's marks
            self.file_places.close()

    _hand_on_at = 0.0  # monotonic time by which what the output and the sinks hold goes on (``hand_on_due``)

    def hand_on_due(self) -> None:
        """Live input read without a pause (a writer ahead of the filter, a backlog on the bus): what the
        output's buffer and the sinks hold goes on at least every ``HAND_ON_SECONDS``.  Only a pause
        (``before_block``) flushed them: under a writer that kept the pipe full, an alert sat in the
        buffer until 64 KiB of records had come after it, with ``--emit alerts`` for as long as the
        flood lasted."""
        now = time.monotonic()
        if now >= self._hand_on_at:
            self._hand_on_at = now + HAND_ON_SECONDS
            self.output.flush()
            self._flush_sinks()

    def _flush_sinks(self) -> None:
        """What waits for the fleet bus goes now (``fleet``: stored by the server on return)."""
        for sink in (self.publisher, self.alert_sink):
            if sink is not None:
                sink.flush()

    def run(self, fd: int, live: bool = True, max_line: int = DEFAULT_MAX_LINE, block_size: int = BLOCK_SIZE,
            stop: Optional[StopRequest] = None, path: Optional[str] = None) -> None:
        """Filter one input to its end, or until ``stop`` is requested.  ``live`` input (a pipe)
        lets the wall clock advance the watermark when no newer event arrives; a file never does.
        ``path``: the file given (``--input``); with ``--state`` a regular file's place is kept, and
        a restart on the same file reads on from there (``position``)."""
        self._place = self._place_in(fd, live, path)
        # With a rule set and worker processes, the index's route plans are made once for the run
        # and shared by the workers (``RuleIndex.plans_shared``).
        sharing = self.index is not None and self.workers and parallel.available()
        try:
            with self.index.plans_shared() if sharing else contextlib.nullcontext():
                self._run(fd, live, max_line, block_size, stop)
        finally:
            if self._place is not None:
                self._place.close()

    def _place_in(self, fd: int, live: bool, path: Optional[str]) -> Optional[Place]:
        """With ``--state``, the place in a regular file input, moved to where the saved state left
        the same file (said in one line).  A state taken back without a state file to write (``explain
        --events --state``) moves it too: that run reads what the filter's next one would."""
        if self.state is None and self.saved_place is None and not self.saved_inputs or live or not regular(fd):
            return None
        where = file_path(fd, path)
        if where is None:
            return None
        place = Place(fd, where)
        saved = self.saved_place if self.saved_place is None or "kind" not in self.saved_place else None
        if saved is None and self.saved_inputs:  # the last run merged files (a directory): this one among them?
            places = FilePlaces(self.saved_inputs)
            start, in_file = places.resume(place)  # the line counter goes on: the stream's, as the merge's was
            problem = next(iter(places.problems()), None)
        else:
            start, again, problem = place.resume(saved if saved is not None and saved["path"] == where else None)
            in_file = self.lines - again
            self.read_again(again)
            place.on_again = self.read_again
        if start:
            self.said_of_places([f"input {where}: read on from line {in_file + 1} (byte {start}), where the "
                                 "saved state left it"])
        elif problem is not None:
            self.said_of_places([problem])
        return place

    def read_again(self, lines: int) -> None:
        """Lines the saved run counted that this one reads again whole (a last line without its newline,
        which its writer added to since): the counters go back, so that each counts once.  Only after
        a run on one file, whose last line counted it was: after files merged, it may have been any
        line, and stepping back would give a new line a number an earlier one has (events without a
        record id are told apart by it)."""
        if self.saved_inputs is not None:
            return
        self.lines -= lines
        self.lines_start -= lines

    def said_of_places(self, notes: list) -> None:
        """Where the saved state's places led the input (one line each), kept for ``explain``."""
        self.place_notes = list(self.place_notes) + notes
        for note in notes:
            self.diagnostics.note(note)

    def _between_lines(self) -> bool:
        """Whether a snapshot can be taken: not in the middle of a long line of a file whose place it keeps."""
        return self._place is None or self._place.between_lines

    def _run(self, fd: int, live: bool, max_line: int, block_size: int, stop: Optional[StopRequest]) -> None:
        self.begin(live)
        self.max_line = max_line
        if not live and self.workers and parallel.available() and (self._detecting or self.prefilter is not None and (
                not self._parse_every_line or self.progress is None)):
            self._run_workers(fd, block_size, max_line, stop)
        wait = self._wall_idle
        for every in (self.state.interval if self.state is not None else 0, self._stats and self._stats[0],
                      self.progress and self.progress.every):
            if live and every:  # snapshots and stats records go on while input waits
                wait = min(wait or every, every)
        reader = self._reader = BlockReader(fd, live, self.before_block, self.on_idle, wait,
                                            block_size, max_line, stop, self._place)
        if live and self.workers and self.prefilter is None and self._detecting and parallel.available():
            self._start_block_workers()
        try:
            for item in reader:
                self.process(*item)
                if self.state is not None and self.state.due() and self._between_lines():
                    self.drain()  # a snapshot covers every line read before it, as without workers
                    self.save_state()
                if self._stats is not None:
                    self.write_stats()
                if live:
                    self.hand_on_due()
        except BaseException:
            self._end_block_workers()  # what they held is read by ``finish``, as what the reader held
            raise
        self._reader = None

    def _start_block_workers(self) -> None:
        """A pipe whose every line is parsed (a rule set no scan can rule lines out for): workers
        match its blocks as they come (``parallel.BlockWorkers``), the filter writes and correlates
        in order.  Without processes to be had, the filter reads alone."""
        workers = parallel.BlockWorkers(self.workers, self.detected)
        try:
            workers.start()
        except OSError:
            return
        self._block_workers = workers

    def begin(self, live: bool) -> None:
        """The input is about to be read: ``live`` (a pipe, the bus) lets the wall clock move the
        watermark when no newer event arrives, and bounds the time an agent believes."""
        self._wall_idle = self.idle if live and self.idle else None
        self._live = live
        if self.progress is not None and live:  # believe no host clock far in the future of this one
            self.progress.wall = self.clock
        if live and self.stage != "match":  # nor an agent's or a source's that says so (a forged heartbeat, a line)
            for title in self.engine.live():
                self.diagnostics.note(f"correlation {title}: the saved state's time is more than --max-skew past "
                                      "the wall clock (saved from a file or by an older build): not believed, it "
                                      "goes on from the time of the sources believed")

    def _run_workers(self, fd: int, block_size: int, max_line: int, stop: Optional[StopRequest]) -> None:
        """The bulk of a regular file, prefiltered by worker processes (``parallel``) and handled
        here in file order; the file offset is then left where they got to, for ``run`` to read on."""
        start = os.lseek(fd, 0, os.SEEK_CUR)
        if self._place is not None and self._place.continued:  # the end of a line the saved run handed on
            past, head = self._place.continue_line(os.pread(fd, 2, start))
            start = os.lseek(fd, start + past - len(head), os.SEEK_SET)
            if past:
                self._place.handed(start)
        size = os.fstat(fd).st_size
        chunk, least = self.parallel_chunk, self.parallel_min
        if self.prefilter is None:  # every line parsed and matched: a thousand times a scan's work per byte
            chunk = min(chunk, parallel.PARSE_CHUNK)
            least = min(least, 2 * chunk)
        if size - start < least:
            return
        workers = parallel.Workers(fd, start, size, self.workers, self.prefilter and self.prefilter.scan, _newlines,
                                   block_size, max_line, chunk,
                                   self.judged if self._parse_every_line else None,
                                   self.detected if self._detecting else None)
        try:
            workers.start()
        except OSError:  # no processes to be had (the process limit): the file is read as usual
            return
        position, base = start, self._read_at - start
        try:
            with workers:
                for kind, offset, *found in workers.records():
                    if offset != position or (stop is not None and stop.requested):
                        break
                    if kind == parallel.CHUNK_END:
                        continue
                    self._block_at = base + offset
                    if not self._take_block(fd, kind, offset, found):
                        break
                    position += found[0]
                    if self._place is not None:
                        self._place.handed(position)
                    if self.state is not None and self.state.due():
                        self.save_state()
                    if self._stats is not None:  # every interval, as when the file is read here
                        self.write_stats()
        finally:
            os.lseek(fd, position, os.SEEK_SET)
            self._read_at = base + position

    @property
    def _detecting(self) -> bool:
        """Whether workers parse and match the candidate lines too (``detected``): in the plain
        modes of ``--stage all``, where what the parent does with a match is write the line the
        worker enriched, correlate its Detections and write the alerts."""
        return self.stage == "all" and not self._parse_every_line and self.progress is None

    def detected(self, block: bytes, end: int, candidates: Optional[list], suspects: list) -> list:
        """A detecting worker's part of ``process_line`` for the candidate lines of ``block[:end]``
        (every line when ``candidates`` is None): ``[(index, start, end, outcome)]`` for the lines
        the parent has to act on, in order, ``index`` counted from the block's first line.  The
        outcome of a line that matched is the line enriched (None under ``--emit alerts``), its
        Detections as tuples and what the parent says of it (``_event_data_map_problem``); that alone
        (a str) for a line that matched nothing; True or False, for a line the parent parses itself
        (as a candidate or not), one to be diagnosed: diagnostics come from one process, in order.
        Returned with the block's tallies for the parent (``_take_tallies``): how many matched outside
        ``--from``/``--to``, and with ``--rule-stats`` what its events told of their fields
        (``Coverage.end_block``) and each rule's tries and their time."""
        detector = self.engine.detector
        coverage, outside = detector.coverage, detector.outside
        tallies = {}
        if coverage is not None:
            coverage.begin_block()
        try:
            marked = self._detected(block, end, candidates, suspects)
        finally:
            if coverage is not None:
                tallies["coverage"] = coverage.end_block()
        if detector.outside != outside:
            tallies["outside"] = detector.outside - outside
        if detector.timing:  # this worker's since its last block: the parent adds them to its own
            tallies["timing"] = dict(detector.timing)
            detector.timing.clear()
        return marked, tallies

    def _detected(self, block: bytes, end: int, candidates: Optional[list], suspects: list) -> list:
        marked = []
        coverage = self.engine.detector.coverage  # told each line's place: the parent reads some lines itself
        if candidates is None:
            position = 0
            for index, line in enumerate(block[:end - 1].split(b"\n")):
                if coverage is not None:
                    coverage.line = index
                outcome = self._match_here(line)
                if outcome is not None:
                    marked.append((index, position, position + len(line), outcome))
                position += len(line) + 1
            return marked
        index = position = 0
        for start, stop, candidate in sorted([(s, e, True) for s, e in candidates] +
                                             [(s, e, False) for s, e in suspects]):
            index += block.count(b"\n", position, start)
            position = start
            if coverage is not None:
                coverage.line = index
            outcome = self._match_here(block[start:stop]) if candidate else False
            if outcome is not None:
                marked.append((index, start, stop, outcome))
        return marked

    def _match_here(self, line: bytes):
        """``detected``'s outcome for one candidate line; None: it parsed and matched nothing."""
        if not line or line.isspace() or line.startswith(BOM):  # ``process_line``'s empty line, unstripped
            return True
        try:
            event = load_event(line)
        except (ValueError, OverflowError):
            return True
        if not isinstance(event, dict):  # diagnosed by the parent; or a Fluent Bit frame, which it reads
            return True
        problem = self._event_data_map_problem(event) if "StringInserts" in event else None
        if self.repeated_keys:
            event = every_value(line, event)
        read, unread = event_to_read(line, event, self.engine.resolver)
        if unread is not None:  # diagnosed by the parent
            return True
        sigma, detections = self.engine.match(read, 0, self._only(line), line, read is not event)
        if not detections:
            return problem
        return (enrich_line(line, event, sigma) if self.emit != "alerts" else None,
                [(d.rule, d.time, d.source, d.terms, d.fields, d.event) for d in detections], problem)

    def _take_detected(self, block: Optional[bytes], lines: int, result: tuple) -> None:
        """A detecting worker's result for one block: its lines in order, the marked ones as
        ``detected`` says.  ``block`` may be None when it is not needed (``_needs_block``)."""
        marked, tallies = result
        coverage = self._take_tallies(tallies)
        first, position = self.lines, 0
        for index, start, stop, outcome in marked:
            if outcome.__class__ is str:  # matched nothing, but is said something of: passed on with the rest
                self._say_event_data_map(outcome, first + index + 1)
                continue
            if self.emit == "all":
                self.output.write(memoryview(block)[position:start])
            self.lines = first + index + 1
            position = stop + 1
            if outcome.__class__ is bool:
                if coverage is not None:
                    coverage.settle(index)
                self.process_line(block[start:stop], self.lines, outcome)
                continue
            enriched, found, problem = outcome
            self._say_event_data_map(problem, first + index + 1)
            detections = []
            for rule, time_ns, source, terms, fields, reference in found:
                reference["line"] = self.lines
                detections.append(Detection(rule, time_ns, source, terms, fields, reference))
            result = self.engine.take(detections)
            if result.untimed:
                self.diagnostics.report("no_time", self._where(self.lines),
                                        "matched event has no parsable time; left out of correlation")
            if enriched is not None:
                self._write(enriched, None)
            self.write_alerts(result.alerts)
        if coverage is not None:
            coverage.settle()
        if self.emit == "all":
            self.output.write(memoryview(block)[position:])
        self.lines = first + lines

    def _take_tallies(self, tallies: dict):
        """A detecting worker's counts of one block (``detected``) added to this process's own; the coverage
        that still has the block's events to count in, as the parent reaches them (None without it)."""
        detector = self.engine.detector
        detector.outside += tallies.get("outside", 0)
        for position, (tried, spent) in tallies.get("timing", {}).items():
            found = detector.timing.setdefault(position, [0, 0])
            found[0] += tried
            found[1] += spent
        observed = tallies.get("coverage")
        if observed is None:
            return None
        detector.coverage.merge(observed)  # its events counted in around the lines the parent reads itself
        return detector.coverage

    def _needs_block(self, result: tuple) -> bool:
        return self.emit == "all" or any(outcome.__class__ is bool for *_, outcome in result[0])

    def _take_block(self, fd: int, kind: int, offset: int, found: list) -> bool:
        """A worker's record of one block (``parallel``): what the parent does with the block; False
        when the file shrank under it."""
        length, lines = found[0], found[1]
        if kind == parallel.DETECTED:
            block = os.pread(fd, length, offset) if self._needs_block(found[2]) else None
            if block is not None and len(block) != length:
                return False
            self._take_detected(block, lines, found[2])
            return True
        judged = found[2] if kind == parallel.RULED_OUT and len(found) > 2 else None
        unread = judged is not None or not self._parse_every_line and self.progress is None
        if kind == parallel.RULED_OUT and self.emit != "all" and unread:
            self.lines += lines  # nothing to write, nothing to look at
            return True
        block = os.pread(fd, length, offset)
        if len(block) != length:
            return False
        framed = _as_judged(block, judged)
        if framed is not None:  # vouched for by the worker's skimmer: as it is, or framed
            self.lines += lines
            self.output.write(framed)
        elif judged is not None:  # a worker's frames that do not fit the block now: it was rewritten
            self.process_block(block, 0, length)
        else:
            self.process_block(block, 0, length, (*(found[2:] if kind == parallel.MARKED else ([], [])), lines))
        return True

    # ------------------------------------------------------------ state across restarts (``--state``)

    def keep_state(self, state_file) -> None:
        """Snapshot the correlation state to ``state_file`` (``correlate.state.StateFile``) every
        interval, and at the end, which becomes a pause (``Engine.pause``); events are taken once."""
        self.state = state_file
        self.engine.take_once()

    def resume(self, saved: dict) -> list:
        """Take back a saved state (``StateFile.load``): the correlations' and the line counter, so
        that alert records name the lines as one uninterrupted run would.  Returns one-line
        messages about state that had to be discarded."""
        if "input" in saved and not check_mark(saved["input"]):
            raise StateError("damaged state file (input)")
        if "inputs" in saved and not (isinstance(saved["inputs"], list) and all(
                check_mark(mark, merged=True) for mark in saved["inputs"])):
            raise StateError("damaged state file (inputs)")
        self.saved_inputs = saved.get("inputs")
        messages = self.engine.restore(saved)
        self.lines = self.lines_start = saved["lines"]
        self.bus_seq = saved.get("bus_seq")
        self.bus_stream = saved.get("bus_stream")
        self.bus_subject = saved.get("bus_subject")
        self.saved_place = saved.get("input")
        return messages

    def _pause(self) -> None:
        """The stop of a run with ``--state``: the alerts the flush gives go out, and the state counts
        them as made only once the reader of the output took them.  A shipper that died, or stopped
        reading, leaves them in the pipe: the state saved is then the one from before the flush, and
        the next run makes them again (at least once).  One that reads them and drops them at its own
        stop (Fluent Bit's ``exec`` input) cannot be told apart: ``--on-stop keep`` is for it."""
        # What was passed on before the stop goes out first, as before any snapshot: the one from before
        # the flush counts it as out (it sat in the buffer, and a reader gone lost it with the lines read).
        self.output.flush()
        # the state from before the flush (a second snapshot: 1.7 s at the cap of 100,000 events),
        # only when the flush can alert and the output is one whose reader can leave them
        before = self._state_payload() if self.engine.held() and self.output.reader_can_drop() else None
        alerts = self.engine.pause()
        try:
            self.write_alerts(alerts)
            taken = not alerts or before is None or self.output.taken(TAKE_WAIT)
        except OutputClosed:
            if before is not None:  # else the last snapshot stands: the flush's alerts were not written
                self.save_state(before)
            raise
        self.save_state(None if taken else before)
        if not taken:
            self.diagnostics.report("stop_untaken", "output", f"{len(alerts)} alert(s) of the stop not taken by "
                                    "the reader; kept in the state, to be made again by the next run")

    def _state_payload(self) -> bytes:
        where = {} if self.bus_seq is None else {"bus_seq": self.bus_seq}
        if self.bus_stream is not None:
            where["bus_stream"] = self.bus_stream
        if self.bus_subject is not None:
            where["bus_subject"] = self.bus_subject
        if self._place is not None:
            where["input"] = self._place.mark()
        if self.file_places is not None:
            marks = self.file_places.marks()
            if self.file_places.alone and len(marks) == 1:
                where["input"] = marks[0]  # one EVTX file read alone
            else:
                where["inputs"] = marks
        return encode_state({"lines": self.lines, **where, **self.engine.snapshot()})

    def save_state(self, payload: Optional[bytes] = None) -> None:
        """One snapshot (``payload``: one made earlier).  The output goes first: an alert the state
        counts as made is out.  A file that cannot be written is a diagnostic, and the stream goes on."""
        try:
            self.output.flush()
        except OutputClosed:
            if payload is None:
                raise
        # the bus's batches stored before the snapshot: a correlator's alerts before the records that made them
        # are acknowledged; an agent's Detections before the input's position moves past their lines (a kill
        # after a snapshot lost those still waiting in the batch, the restart reading on past them)
        self._flush_sinks()
        error = self.state.save(self._state_payload if payload is None else lambda: payload)
        if error is not None:
            self.diagnostics.report("state", f"state file {self.state.path}", f"{error}; the stream goes on")
        elif self.after_save is not None:
            self.after_save()
