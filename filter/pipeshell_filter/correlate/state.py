"""Correlation state across restarts: a versioned snapshot file (``--state FILE``).

A pipeline restarts its filter on every reload (Vector, Fluent Bit) and
supervisors kill it; without a snapshot the restarted filter forgets every open
window, and an incident cut in two by the restart never alerts.

What a snapshot holds, per correlation (keyed by its stable ``spec.id``, with
the spec's own definition so that a changed rule is recognised): the
watermark, the arrival counter, each source's newest time, the events pending
and in windows (each a Detection's fields: its wire record less the type and
version, which the file has once; each window's aggregate is rebuilt by adding
its events again, never stored), the consumed episodes, and the identities of
the events taken (so a replay after a restart is not taken twice).  The stream
adds its line counter, the engine the identities of its recent single-event
alerts (and, with ``--suppress``, its open periods: ``suppress``).  One JSON document, integer
nanoseconds exact, written and read by msgspec (no dict made per event to write it; keys shared when read), written
atomically (temp file in the same directory, fsync, rename, fsync of the
directory).

End of input with ``--state`` is a pause (``pause``): the state from before the
final flush is kept (windows open, watermark as it was), the flush's alerts are
written, and the episodes they consumed are marked consumed, so a next run on
the rest of the stream goes on as if it had never stopped, without alerting
on those episodes again.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import stat
import tempfile
import time as _time
from collections import deque
from typing import Optional

import msgspec
import ujson
from sortedcontainers import SortedList

from ..detect import SHOWN_KEYS, Detection, WireError, blake2b
from .windows import fold

FORMAT = "pipeshell-filter.state"
VERSION = 2  # 2: events kept as their fields alone, without a wire record's type and version
# Versions read: 1's events are whole wire records, whose type and version ``Detection.from_fields``
# passes over, so an upgrade keeps its windows.
READABLE = (1, VERSION)

NEVER = float("-inf")

# The line counter a state may hold: far past any run's, with room for the lines the next runs read within
# the 63 bits a Detection record's ``event.line`` has (a count beyond them made every record a match stage
# wrote one its correlator refused).
MOST_LINES = 1 << 62

# Single-event alerts whose events are remembered, so that a replay does not alert again.
MAX_ALERTED = 10_000


class StateError(ValueError):
    """A state file this build cannot use; the message is one line."""


class NotAStateFile(StateError):
    """A file no pipeshell-filter wrote: never removed by ``--state-reset`` (a mistyped ``--state``
    naming a log or a configuration file must not cost the user that file)."""


# ------------------------------------------------------------ the same event


def identity(detection: Detection) -> str:
    """What makes two Detection records the same event: everything but the input line number
    (which starts at 1 again in a new process): rule, event time, host, terms met, the field
    values correlations use, and the event reference (@timestamp, EventID, host, EventRecordID or
    the digest of its line, selections), without the values it shows (``fields``: what a match
    stage's ``--alert-fields`` chose, or an older build left out, is the same event).  96 bits of
    BLAKE2b over its canonical JSON."""
    event = detection.event
    if "line" in event or "fields" in event or "fields_truncated" in event:
        event = {key: value for key, value in event.items() if key not in _NOT_IDENTITY}
    text = ujson.dumps([detection.rule, detection.time, detection.source, list(detection.terms),
                        detection.fields, event], sort_keys=True, ensure_ascii=True)
    return blake2b(text.encode("ascii"), digest_size=12).hexdigest()


_NOT_IDENTITY = frozenset(("line", *SHOWN_KEYS))


class Seen:
    """The identities of the events a correlation took, by event time; those older than the
    correlation's horizon (watermark - timeframe) are forgotten, since such an event, sent
    again, is late and left out anyway.  So is the identity of an event shed at the state cap,
    and past ``cap`` identities the oldest: a flood of a million events in one window kept a
    million (495 MB resident for 400,000, against 216 MB without ``--state``)."""

    __slots__ = ("keys", "order", "cap")

    key = staticmethod(identity)

    def __init__(self, cap: int = 200_000):
        self.keys = set()
        self.order = SortedList()  # (event time, identity)
        self.cap = cap

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, time: int) -> None:
        self.keys.add(key)
        self.order.add((time, key))
        if len(self.keys) > self.cap:
            self.keys.discard(self.order.pop(0)[1])

    def discard(self, key: str, time: int) -> None:
        """An event no longer held (shed at the state cap): sent again, it is taken as a new one."""
        if key in self.keys:
            self.keys.discard(key)
            self.order.discard((time, key))

    def restore(self, pairs: list) -> None:
        """Take back saved ``(event time, identity)`` pairs all at once (one sort, not one insertion
        each), keeping the newest ``cap``."""
        for time, key in pairs:
            if type(key) is not str:
                raise ValueError("'seen' holds an identity that is not a string")
            _event_time(time)
        order = sorted((time, key) for time, key in pairs)[-self.cap:]
        self.keys = {key for _, key in order}
        self.order = SortedList(order)

    def evict(self, horizon) -> None:
        order = self.order
        while order and order[0][0] < horizon:
            self.keys.discard(order.pop(0)[1])


# ------------------------------------------------------------ one correlation


def matched_by(rules, inner=()) -> str:
    """What decides which events the windows of a correlation hold: the log source, selections
    and condition of each rule it counts, in its order, as a digest.  Its spec names them by id
    alone, and an id can change hands: a collection's rules are numbered by their place in the
    file (``<id>#3``), so reordering it gave one rule's open windows to another, which then
    alerted on events it never matched.  ``inner``: the ``describe`` of each correlation whose
    alerts it counts, which a changed definition discards (its saved alerts were kept, and
    counted with those of the new definition)."""
    written = [[rule.logsource, rule.detection, rule.condition.text] for rule in rules]
    if inner:
        written.append(list(inner))
    try:  # keys sorted: the same rule written in another order is the same rule
        text = json.dumps(written, default=repr, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    except TypeError:  # a key JSON cannot take, or keys of several types (YAML's ``2024-01-01:``, ``1:``)
        text = ascii(written)
    return blake2b(text.encode("ascii"), digest_size=12).hexdigest()


def describe(spec, rules_digest: Optional[str] = None) -> dict:
    """What a correlation's windows depend on, as plain data: a saved state is used only by a
    correlation whose description is the same (titles and other metadata may change);
    ``rules_digest``: ``matched_by`` of the rules it counts."""
    described = {
        "kind": spec.kind,
        "inputs": [list(ref.key) for ref in spec.rules],
        "timespan_ns": spec.timespan_ns,
        "condition": [list(bound) for bound in spec.condition.bounds],
        "group_by": list(spec.group_by),
        "field": spec.field,
        "aliases": [[alias, [list(pair) for pair in mapping]] for alias, mapping in spec.aliases],
        "require_each": spec.require_each,
    }
    # only where used, so that the states saved for other correlations stay valid
    if spec.absent:
        described["absent"] = [list(ref.key) for ref in spec.absent]
    if spec.chained:
        described["chained"] = list(spec.chained)
    if any(ref.also for ref in spec.inputs):  # a collection named by its shared id: which rules it reads
        described["also"] = [list(ref.also) for ref in spec.inputs]
    labels = [ref.label for ref in spec.rules + spec.absent if ref.term is not None]
    if labels:  # a legacy rule's terms are numbered in its condition's order: which term is which
        described["labels"] = labels
    if rules_digest is not None:
        described["matched_by"] = rules_digest
    return ujson.loads(ujson.dumps(described))


def _time_out(value):
    if value == NEVER:
        return None
    return "inf" if value == float("inf") else value


def _event_time(value) -> int:
    """A time that must be one (an event's, an alert's): never null."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    return value


def _time_in(value):
    if value is None:
        return NEVER
    if value == "inf":
        return float("inf")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    return value


def capture(correlator) -> dict:
    """The correlator's state for ``encode``: plain data, but for its events, the Detection objects
    themselves (encoded as they are, none copied into a dict of its own)."""
    windows = correlator._windows
    held = [(seq, windows[group].events[(time, seq)].detection) for time, seq, group in correlator._held]
    consumed = sorted(((t, list(group)) for group, t in correlator._consumed.items()),
                      key=lambda item: (item[0], repr(item[1])))
    behind = correlator.clocks.came_behind()
    return {
        "spec": describe(correlator.spec, correlator.matched_by),
        "watermark": _time_out(correlator.watermark),
        "wanted": _time_out(correlator.wanted),
        "seq": correlator._seq,
        "clocks": correlator.clocks.saved(),
        "pending": [(_time_out(t), seq, c.detection) for t, seq, c in correlator._pending],
        "windows": held,
        "consumed": [[t, group] for t, group in consumed],
        "seen": None if correlator.seen is None else [[t, key] for t, key in correlator.seen.order],
        "early_used": [[time, seq] for time, seq in correlator._early_used],
        "early_done": [[t, list(group)] for t, group in correlator._early_order
                       if correlator._early_done.get(group) == t],
        **({"came_behind": behind} if behind else {}),  # (absent: none, as an earlier build saved it)
    }


def same_spec(correlator, data) -> bool:
    if not isinstance(data, dict):
        return False
    saved, now = data.get("spec"), describe(correlator.spec, correlator.matched_by)
    for key in ("labels", "matched_by"):
        if isinstance(saved, dict) and key not in saved:  # saved by a build that did not write it
            now.pop(key, None)
    return saved == now


def restore(correlator, data: dict) -> None:
    """Put a captured state into ``correlator`` (of the same spec), replacing what it holds.
    Counters (late events, duplicates) are this run's and stay as they are."""
    try:
        _restore(correlator, data)
    except (KeyError, TypeError, ValueError, IndexError, WireError) as error:
        raise StateError(f"the state of correlation {correlator.spec.id!r} is damaged "
                         f"({type(error).__name__}: {error})".replace("\n", " ")) from None


def _contribution(correlator, saved):
    c = correlator.contribution(Detection.from_fields(saved))
    if c is None:
        raise ValueError("an event the correlation does not take")
    return c


def _number(value) -> int:
    if type(value) is not int:
        raise ValueError("an event's number is not an integer")
    return value


def _windows_of(correlator, held) -> tuple:
    """The open windows made again of the events they hold (``(number, Contribution)``, each
    aggregate rebuilt by adding its events), and the index of those events for eviction."""
    grouped, order = {}, []
    for number, c in held:
        grouped.setdefault(c.group, []).append(((c.time, number), c))
        order.append((c.time, number, c.group))
    windows = {}
    for group, events in grouped.items():
        window = windows[group] = correlator.shape(correlator.spec)
        window.fill(events)
    return windows, SortedList(order)


def _restore(correlator, data: dict) -> None:
    watermark = _time_in(data["watermark"])
    seq = data["seq"]
    if not isinstance(seq, int):
        raise ValueError("'seq' is not an integer")
    pending = SortedList()
    for t, number, wire in data["pending"]:
        pending.add((_time_in(t), _number(number), _contribution(correlator, wire)))
    # an event's number is sorted beside the others: a string among them failed mid-stream
    windows, held = _windows_of(correlator, ((_number(number), _contribution(correlator, wire))
                                             for number, wire in data["windows"]))
    numbers = [number for _, number, _ in pending] + [number for _, number, _ in held]
    if len(set(numbers)) != len(numbers) or any(number > seq for number in numbers):
        # an event in twice passed the restore and crashed the stream when it left its window, every restart
        raise ValueError("an event's number is there twice, or past 'seq'")
    early_used = SortedList()
    for time, number in data.get("early_used", ()):
        if type(time) is not int or type(number) is not int:
            raise ValueError("'early_used' holds a non-integer")
        early_used.add((time, number))
    consumed, order = {}, deque()
    for t, group in data["consumed"]:
        group = tuple(map(fold, group))  # as ``group_of`` makes it now (an older state's may differ in case)
        consumed[group] = max(_event_time(t), consumed.get(group, NEVER))
        order.append((consumed[group], group))
    seen = None
    if data.get("seen") is not None and correlator.seen is not None:
        seen = type(correlator.seen)(correlator.seen.cap)
        seen.restore(data["seen"])
    came_behind = data.get("came_behind", [])
    if not isinstance(came_behind, list):
        raise ValueError("'came_behind' is not a list")
    correlator.clocks.restore(data["clocks"], came_behind)
    correlator.watermark = watermark
    correlator.resumed_at = correlator.clocks.times()
    correlator.wanted = _time_in(data.get("wanted"))  # a chained one's own sources' (absent: none yet)
    correlator._seq = seq
    correlator._pending = pending
    correlator.index_waiting()
    correlator._windows = windows
    correlator._held = held
    correlator._consumed = consumed
    correlator._consumed_order = order
    correlator._early_used = early_used
    correlator._early_done, correlator._early_order = {}, deque()
    for t, group in data.get("early_done", ()):
        if type(t) is not int:
            raise ValueError("'early_done' holds a non-integer time")
        group = tuple(map(fold, group))
        correlator._early_done[group] = max(t, correlator._early_done.get(group, NEVER))
        correlator._early_order.append((t, group))
    if correlator.seen is not None:
        correlator.seen = seen if seen is not None else type(correlator.seen)(correlator.seen.cap)


def _kept(correlator) -> tuple:
    """What ``restore`` puts back, as the correlator's own objects (a flush changes no source
    clock): ``pause`` keeps this, not the saved form, whose trip through the wire format made a
    pause with 100,000 events held take 6.8 s of the run's 8.3."""
    windows, seen = correlator._windows, correlator.seen
    held = [(seq, windows[group].events[(time, seq)]) for time, seq, group in correlator._held]
    return (correlator.watermark, correlator.wanted, correlator._seq, list(correlator._pending), held,
            dict(correlator._consumed), deque(correlator._consumed_order), list(correlator._early_used),
            dict(correlator._early_done), deque(correlator._early_order),
            None if seen is None else (set(seen.keys), list(seen.order)))


def _put_back(correlator, kept: tuple) -> None:
    (correlator.watermark, correlator.wanted, correlator._seq, pending, held, correlator._consumed,
     correlator._consumed_order, early_used, correlator._early_done, correlator._early_order, seen) = kept
    correlator._pending = SortedList(pending)
    correlator.index_waiting()
    correlator._windows, correlator._held = _windows_of(correlator, held)
    correlator._early_used = SortedList(early_used)
    if seen is not None:
        correlator.seen.keys, correlator.seen.order = seen[0], SortedList(seen[1])


def pause(correlator) -> list:
    """End of input with ``--state``: the hits of a final flush, while the correlator keeps the
    state from before it (windows open, watermark as it was), with each episode a hit
    consumed marked consumed: its events leave, and an event of its group up to the hit's time
    is not taken again.  A window that starts at a group's earliest event (``Correlator.anchored``)
    is judged only once complete, which the rest of the stream decides: none is judged here."""
    if correlator.anchored:
        return []
    before = _kept(correlator)
    hits = correlator.flush()
    _put_back(correlator, before)
    consumed = {}  # group -> the time of its last hit
    for hit in hits:
        consumed[hit.group] = max(hit.time, consumed.get(hit.group, NEVER))
    _consume(correlator, consumed)
    return hits


def _consume(correlator, consumed: dict) -> None:
    """Each group's episode up to its time in ``consumed`` leaves: its window, and its events still
    waiting for the watermark.  All groups in one pass over what waits (one pass per hit made a
    pause with many alerts quadratic: 10,000 took 200 s)."""
    for group in consumed:
        window = correlator._windows.pop(group, None)
        if window is not None:
            for time, seq in window.events:
                correlator._held.remove((time, seq, group))
    pending = correlator._pending
    gone = [entry for entry in pending if entry[0] <= consumed.get(entry[2].group, NEVER)]
    for entry in gone:
        pending.remove(entry)
    if gone:
        correlator.index_waiting()
    for group, t in sorted(consumed.items(), key=lambda item: item[1]):
        if t > correlator._consumed.get(group, NEVER):
            correlator._consumed[group] = t
            correlator._consumed_order.append((t, group))


# ------------------------------------------------------------ the file


def encode(document: dict) -> bytes:
    """The snapshot file's bytes: ``{"format", "version", "lines", "correlations", "alerted"}``, and
    ``agents`` (the fleet's clocks) in a correlate stage fed by agents.  msgspec writes the events
    held (Detection objects) as they are: no dict made for each (3 times faster than ujson over
    the wire records, and no second copy of the state).  A lone surrogate (an event's ``"\\ud800"``,
    which ujson reads as it is) has no UTF-8: such a state is written with JSON's escapes instead, so
    that one forged host name never stops every snapshot (it made each save fail, and the last one a
    traceback)."""
    document = {"format": FORMAT, "version": VERSION, **document}
    try:
        return _ENCODER.encode(document)
    except msgspec.EncodeError as error:
        raise ValueError(str(error)) from None
    except UnicodeEncodeError:
        return json.dumps(msgspec.to_builtins(document), separators=(",", ":"), allow_nan=False).encode()


_ENCODER = msgspec.json.Encoder()


def decode(data: bytes, where: str) -> dict:
    """A snapshot file's document; ``StateError`` (one line, naming ``where``) when this build
    cannot use it."""
    try:
        document = msgspec.json.decode(data)  # strict JSON, UTF-8 checked; dict keys shared, not one each
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        document = _with_surrogates(data)
    if document is None and b'"%s"' % FORMAT.encode() in data[:100]:  # ours, but no JSON: cut short (a full disk)
        raise StateError(f"{where}: damaged state file (cut short, or not JSON)")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise NotAStateFile(f"{where}: not a pipeshell-filter state file")
    if document.get("version") not in READABLE or type(document.get("version")) is not int:
        raise StateError(f"{where}: state format version {str(document.get('version'))[:40]!r} (this build reads "
                         f"{' and '.join(map(str, READABLE))})")
    lines, correlations, alerted = document.get("lines"), document.get("correlations"), document.get("alerted", [])
    if not isinstance(lines, int) or isinstance(lines, bool) or not 0 <= lines < MOST_LINES \
            or not isinstance(correlations, dict) \
            or not isinstance(alerted, list) or not all(isinstance(key, str) for key in alerted):
        raise StateError(f"{where}: damaged state file (lines, correlations or alerted)")
    agents = document.get("agents", [])
    if not isinstance(agents, list) or not all(
            isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and type(a[1]) is int for a in agents):
        raise StateError(f"{where}: damaged state file (agents)")
    if "bus_seq" in document and (type(document["bus_seq"]) is not int or document["bus_seq"] < 0):
        raise StateError(f"{where}: damaged state file (bus_seq)")
    if "bus_stream" in document and not (isinstance(document["bus_stream"], str) and len(document["bus_stream"]) <= 64):
        raise StateError(f"{where}: damaged state file (bus_stream)")
    if "bus_subject" in document and not (isinstance(document["bus_subject"], str)
                                          and 0 < len(document["bus_subject"]) <= 1024):
        raise StateError(f"{where}: damaged state file (bus_subject)")
    return document


def _with_surrogates(data: bytes):
    """The document of a state ``encode`` wrote with a lone surrogate escaped (msgspec refuses the
    escape): read by the standard library, as strictly otherwise (no NaN); None when it is no JSON."""
    if b"\\ud" not in data and b"\\uD" not in data:
        return None

    def refuse(constant):
        raise ValueError(constant)

    try:
        return json.loads(data, parse_constant=refuse)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


@contextlib.contextmanager
def collector_paused():
    """A snapshot makes many small objects, none of them garbage: the cyclic collector would only
    walk them (a restore needs no such pause: start-up has the collector paused, ``startup``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once: a reader (or a restart after a crash) finds the
    old file or the new one, never a part.  Temp file beside it, fsync, rename, fsync the
    directory.  The temp file is new and ours alone (``mkstemp``: never a link someone left
    there, never another writer's); a ``path`` that is a symbolic link has its target replaced
    (a state kept on a mounted volume stays there)."""
    path = os.path.realpath(path)
    fd, temp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                dir=os.path.dirname(path))  # O_EXCL, mode 0600
    try:
        try:
            with memoryview(data) as view:
                offset = 0
                while offset < len(view):
                    offset += os.write(fd, view[offset:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(directory)


_TEMP_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # ``tempfile.mkstemp``'s random names
TEMP_NAME_EXTRA = len(".") + 8 + len(".tmp")  # what ``write_atomic``'s temp file adds to the file's name


class StateFile:
    """Where the snapshots go and when: every ``interval`` seconds (0: only at the end),
    skipped when nothing changed since the last one."""

    def __init__(self, path: str, interval: float = 10.0, clock=_time.monotonic):
        self.path = path
        self.interval = interval
        self.clock = clock
        self.next_due = clock() + interval if interval else float("inf")
        self._last = None  # digest of the last snapshot written

    def load(self) -> Optional[dict]:
        """The saved document; None when there is no file yet, or an empty one (made by ``touch``
        or a unit's setup: snapshots are written whole, so none is ever empty)."""
        data = self._read()
        return decode(data, f"state file {self.path}") if data else None

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return b""
        except OSError as error:
            raise StateError(f"state file {self.path}: cannot read it: {error.strerror or error}") from None

    _lock = None  # the open lock file, held while the process lives

    def take(self, say) -> None:
        """One process per state file: two would each write their own windows over the other's,
        the last one winning in silence.  A second one waits for the first to end (a reload that
        starts the new filter before the old one has gone), said once through ``say``; a signal
        ends the wait as it ends start-up.  The lock is ``flock`` on ``FILE.lock`` beside the
        file (of its target, through a link), left there; where it cannot be taken (a directory
        or another user's file by that name, a file system without locks), no lock, said in one line."""
        lock = os.path.realpath(self.path) + ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            self._unlocked(say, lock, error)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"state file {self.path}: in use by another pipeshell-filter; waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:  # a file system without locks
            os.close(fd)
            self._unlocked(say, lock, error)
            return
        self._lock = fd

    def _unlocked(self, say, lock: str, error: OSError) -> None:
        """Without the lock nothing keeps a second filter off this file: said, not left to be found."""
        say(f"state file {self.path}: cannot lock {lock} ({error.strerror or error}): another filter started "
            "on this file would not wait for this one")

    def release(self) -> None:
        """Let the next process have the file (``take``): a run that ends by refusing it."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def remove_leftovers(self) -> None:
        """The temp files a run killed while writing a snapshot left beside the file (kill -9, the
        OOM killer during a flood's snapshot): each is up to a whole snapshot, and a restart loop
        filled the disk with them.  Only names ``write_atomic`` makes for this file, regular files."""
        folder, base = os.path.split(os.path.realpath(self.path))
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            middle = name[len(base) + 1:-4]
            if name.startswith(base + ".") and name.endswith(".tmp") and len(middle) == 8 \
                    and set(middle) <= _TEMP_LETTERS:
                try:
                    if stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
                        os.unlink(os.path.join(folder, name))
                except OSError:
                    pass

    def discard(self) -> None:
        """``--state-reset``: forget what the file holds (a snapshot later writes a new one).  A file
        that cannot be removed (a read-only file system) is a StateError: left there, the next run
        would take it back.  Through a link, its target goes and the link stays: removing the link
        left the state on the volume it points to, and moved the next snapshots off it.  Only a file
        a filter wrote (damaged or of another version) or an empty one goes: ``NotAStateFile`` for
        any other."""
        data = self._read()
        if data and FORMAT.encode() not in data[:100]:  # ``encode`` writes the format first
            raise NotAStateFile(f"state file {self.path}: not a pipeshell-filter state file, so --state-reset "
                                "leaves it; name another file")
        try:
            os.unlink(os.path.realpath(self.path))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as error:
            raise StateError(f"state file {self.path}: --state-reset cannot remove it: "
                             f"{error.strerror or error}") from None

    def due(self) -> bool:
        return self.clock() >= self.next_due

    def save(self, make) -> Optional[str]:
        """Write the snapshot ``make()`` encodes; the reason, in a few words, when it could not be
        written.  A snapshot as big as a flood makes it (about 0.3 s of CPU for 100,000 events held) is
        taken at most every 20 times as long as it took, so it never costs more than 5 %."""
        started = self.clock()
        try:
            with collector_paused():
                data = make()
        except (TypeError, ValueError, OverflowError) as error:  # never expected; never the stream's end
            self.next_due = self.clock() + self.interval if self.interval else float("inf")
            return f"cannot encode it: {error}"
        digest = blake2b(data, digest_size=16).digest()
        try:
            if digest != self._last:  # the same as the last one (nothing happened): not again
                write_atomic(self.path, data)
                self._last = digest
        except OSError as error:
            return f"cannot write it: {error.strerror or error}"
        finally:
            now = self.clock()
            self.next_due = now + max(self.interval, 20 * (now - started)) if self.interval else float("inf")
        return None
