"""Event-time correlation: sliding windows, a watermark for out-of-order input, consume-on-fire.

Semantics (also in the README):

* A window ends at an evaluation time t and covers ``[t - timeframe, t]`` (both
  ends included).  It is evaluated at each distinct event time, with all events
  of that time added first, so ties cannot change the result.
* It fires when its inputs are complete (every referenced rule or term seen,
  where the spec asks for that) and the spec's condition holds on the
  aggregate kept by the window's shape (``windows``).  Firing consumes the group's events up
  to t: the next alert needs new events.
* Times are final once the watermark passes them: watermark = the newest event
  time two sources vouch for (``clock``: one wrong clock cannot move it) -
  lateness, and it never moves back.  Times strictly before the watermark
  are evaluated; an event at exactly the watermark is still on time.
* An event older than the watermark is *late*.  It never reopens an evaluated
  window.  If it is not older than watermark - timeframe and not in a consumed
  episode, it joins the windows still open: it is evaluated at the watermark.
  Otherwise it is dropped from correlation (it is still counted and passed on).
* A count with an upper bound (``spec.anchored``): a group's window starts at its
  earliest event s not yet consumed and covers ``[s, s + timeframe]``; it is judged
  once the watermark passes its end, fires or not at its end, and its events are
  consumed either way: the group's next event starts the next window (``_judge``).

* Early alerts (``early``, for a monotone condition: a count or number of
  distinct values or inputs with lower bounds only): when an on-time event
  arrives, the window ending at its time (or at a newer event of its group
  already here), over every event that has arrived since the group's last
  early alert, is evaluated at once; if it holds, it fires then, without
  waiting for the watermark (more events could only keep it holding).  The
  watermark still evaluates and consumes as above, and keeps back an alert
  that shares an event with an early one.  On a time-sorted stream these are
  the watermark's alerts, sooner.

State is bounded: after each advance nothing older than watermark - timeframe
is held, so memory follows the event rate, not the length of the input.
"""

from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right, insort
from collections import deque
from typing import Any, Optional

import attrs
from sortedcontainers import SortedList

from ..sigma.correlation import CorrelationSpec
from .clock import SourceClocks
from .windows import SHAPES, Contribution, group_of

DEFAULT_MAX_SKEW = 300 * 1_000_000_000
# At most this many events are held per correlation (pending and in windows), and as many consumed
# episodes remembered: a flood of distinct hosts must not take the memory.  Past it, the oldest are
# dropped from correlation first, and counted (``shed``).
MAX_HELD = 100_000
# At the cap, events dated more than ``max_skew`` past the stream's time go first, newest first, once
# more than this share of the cap (1/64) waits so: a flood from a clock in the future, which must not
# push the other hosts' windows out.  Fewer are the first events of an episode after a quiet spell (its
# first host alone, none yet to vouch for its time), which a flood held at the cap shed in its place:
# the incident after a flood of 150,000 hosts never alerted.
FUTURE_SHARE = 64
# With one source so far, this many events may wait before what two of its events reached is taken as
# the stream's time (``SourceClocks.one_source_time``): one host's log is then evaluated as it goes, not
# held to its end (and past ``MAX_HELD`` shed unevaluated), while a first source whose clock is wrong
# cannot move the time before a second one comes, unless it sends this many events alone.  The same once
# this many events came from the newest source and none from the others, which all came far behind it
# (``SourceClocks.solo_time``: a line dated 1970 in one host's log).
ONE_SOURCE_HELD = 10_000
# An early evaluation gathers at most this many events of its group; past it (a flood of the group),
# the window waits for the watermark as any other, so that the cost per event stays bounded.
EARLY_MAX = 256

NEVER = float("-inf")
# Events held that make a flood, whose memory is given back as it passes (``give_back_memory``),
# and what may be left of one when it is given back the last time.
FLOOD = 10_000
FLOOD_LEFT = 100


@attrs.frozen
class Hit:
    """A window that fired."""

    spec: CorrelationSpec
    time: int  # window end (the evaluation time)
    window_start: int
    group: tuple
    contributions: tuple  # the window's events, in (time, arrival) order
    aggregate: Any  # the value that met the condition
    distinct_values: tuple  # value_count: sorted distinct values


class _Waiting:
    """One group's entries of ``Correlator._pending`` (``(evaluation time, seq, contribution)``, in
    the same order), so that an early evaluation reads its own group's, however busy the others.
    Entries leave from the front, as the watermark passes them: a start index moves, the slot is
    emptied (a flood shed from the front kept as many gone events as it held: 1,000,000 hosts dated
    in the future, none believed, peaked at 324 MB against 216 for the same flood at present), and
    the list is cut when half of it is gone."""

    __slots__ = ("entries", "start")

    def __init__(self):
        self.entries, self.start = [], 0

    def __len__(self) -> int:
        return len(self.entries) - self.start

    def add(self, entry) -> None:
        insort(self.entries, entry, self.start)  # at the end, but for an event out of order

    def drop_first(self, count: int = 1) -> None:
        for at in range(self.start, self.start + count):  # ``between`` and ``add`` never look before start
            self.entries[at] = None
        self.start += count
        if self.start * 2 >= len(self.entries):
            del self.entries[:self.start]
            self.start = 0

    def between(self, low, high) -> list:
        """The entries whose evaluation time is in ``[low, high]``."""
        entries = self.entries
        return entries[bisect_left(entries, (low,), self.start):bisect_right(entries, (high, float("inf")), self.start)]


def _find_malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere.  Found at start-up (ctypes costs it 4 ms): found
    when a flood has passed, the import's own objects would fill the holes the flood left and
    keep its arenas from going back."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()


def give_back_memory() -> None:
    """Return freed memory to the system: a full collection empties Python's free lists (whose
    entries each pin an object arena) and ``malloc_trim`` glibc's heap (which keeps what is freed
    otherwise); without them the resident size stays near a flood's peak."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def event_key(reference: dict) -> tuple:
    """What tells one event from another in a Detection's reference (its input line, record id or
    the digest of its line, EventID, host), whichever rule it met: two agents' events of one host
    at one time, each its agent's line 5, were one event to the correlate stage without the digest.
    Without the event's time, which its user adds (here the detection's; ``explain``: ``@timestamp``)."""
    return (reference.get("line"), reference.get("record_id"), reference.get("digest"), reference.get("event_id"),
            reference.get("host"))


class Correlator:
    """One correlation: takes Detection records in arrival order, returns hits as they become final."""

    seen = None  # ``state.Seen`` when each event is taken once (``--stage correlate``, ``--state``): their identities
    # ``explain --events``: called after each evaluation with (correlator, group, t, the Hit or None);
    # it may read (``window_of``), never change anything
    watch = None
    duplicates = 0  # events dropped because one the same was taken (``seen``)
    driven = False  # the watermark is moved from outside only (the fleet's time, ``agents``)
    # ``state.matched_by`` of the rules it counts (the engine's): a saved state is kept only by the same rules
    matched_by = None

    def __init__(self, spec: CorrelationSpec, lateness_ns: int = 0, max_skew_ns: int = DEFAULT_MAX_SKEW,
                 max_held: int = MAX_HELD):
        self.spec = spec
        self.shape = SHAPES[spec.kind]
        self.timeframe = spec.timespan_ns
        self.anchored = spec.anchored  # windows start at a group's earliest event (``_judge``)
        self.lateness = lateness_ns
        self.watermark = NEVER
        self.clocks = SourceClocks(max_skew_ns, horizon_ns=max_skew_ns + spec.timespan_ns + lateness_ns)
        self.late_sources = {}  # source -> late events dropped from correlation (reported once each)
        self.resumed_at = {}  # source -> its newest time in a saved state restored (``state``)
        self.late_resent = 0  # late events dropped that their source had passed then: sent again since?
        self.max_held = max_held
        self.shed = 0  # events dropped early because the state was at its cap (or all correlations': ``Correlation``)
        self.capped = False  # this correlation went past its own cap (``max_held``)
        self._peak = 0  # most events held since memory was last given back
        self._flooded = False  # a flood's state is shrinking: memory goes back at each quarter
        self.flood_gone = False  # the state shrank from a flood: ``give_back_memory`` is due
        self.late = 0  # events that arrived behind the watermark
        self.late_dropped = 0  # ... of which could not join any open window
        self._seq = 0
        self._pending = SortedList()  # (evaluation time, seq, Contribution), all >= watermark
        self._waiting = {}  # group -> its entries of ``_pending`` (``_Waiting``), for early alerts
        self._windows = {}  # group -> Window
        self._held = SortedList()  # (time, seq, group) of every windowed event, for eviction
        self._consumed = {}  # group -> time of its last alert
        self._consumed_order = deque()  # (time, group) in alert order, which is time order
        # ``early``: (time, seq) of the events in early alerts, while windows reach them
        self._early_used = SortedList()
        self._early_done = {}  # ``early``: group -> end of its latest early alert (its events up to there are taken)
        self._early_order = deque()  # (end, group) of the early alerts, to forget them once no window reaches them
        # chaining (``Correlation``): the correlators whose alerts feed this one, whether it also
        # takes rule detections, and the watermark its own sources ask for
        self.upstream = ()
        self.carried = ()  # names its hits carry from their events for the correlations chained to it
        # inner correlation id -> the names its hits are split by for this one (``carried_into``)
        self.carried_from = {}
        self.along_from = {}  # ... and the names they pass on to those chained to this one, unsplit
        self.own_inputs = any(not ref.chained for ref in spec.inputs)
        self.wanted = NEVER
        # one event that meets several of the rules: counted once, unless the rules seen are counted
        self._counts_rules = spec.kind in ("temporal", "temporal_ordered")
        self._last_event = None  # (event, group) of the last detection taken
        self._early_due = []  # ``early``: contributions whose early evaluation waits for their event's other detections
        self.feeds_outer = False  # correlations are chained to it (``Correlation``): it keeps ``joined`` for them
        self.joined = []  # ``early``: hits of the events that joined an episode alerted early (``_evaluate``)

    _early_on = False

    @property
    def early(self) -> bool:
        """Alert on the event that completes a window (a monotone condition, ``--early-alerts``)."""
        return self._early_on

    @early.setter
    def early(self, on: bool) -> None:
        """``_waiting`` is read by early evaluations only, so it is kept only while they are on: its
        upkeep was a sixth of each detection's cost to a correlation (200 correlations over one rule)."""
        self._early_on = bool(on)
        self.index_waiting()

    def compact(self) -> None:
        """After a flood (``flood_gone``): the tables that held it are copied afresh, at their
        present size, so that ``give_back_memory`` can return what they held."""
        self._windows, self._consumed = dict(self._windows), dict(self._consumed)
        self._waiting = dict(self._waiting)
        self.late_sources = dict(self.late_sources)
        for window in self._windows.values():
            window.compact()
        self.clocks.compact()

    def held_count(self) -> int:
        """Events in open windows or still waiting for the watermark."""
        return len(self._held) + len(self._pending)

    # ------------------------------------------------------------ input

    def contribution(self, detection) -> Optional[Contribution]:
        """What this correlation keeps of a detection; None when it feeds none of its inputs
        or has no time."""
        if detection.time is None:
            return None
        refs = tuple(ref.key for ref in self.spec.inputs if ref.hit(detection.rule, detection.terms))
        if not refs:
            return None
        return Contribution(detection.time, refs, group_of(self.spec, detection),
                            self.shape.value_of(self.spec, detection), detection)

    def observe(self, detection, clocked: bool = True, defer: bool = False) -> list:
        """Take one detection; return the hits that became final.  ``clocked=False``: an alert
        of a correlation this one is chained to (``upstream``), which moves no source clock
        (the watermark follows the upstream correlations', see ``advance``).  ``defer``: more
        detections of the same event follow, so its early evaluation waits for them (``early_due``)."""
        c = self.contribution(detection)
        if c is None:
            return []
        if self.seen is not None:
            key = self.seen.key(detection)
            if key in self.seen:  # sent again (a redelivery, a retry, a re-send after a restart)
                self.duplicates += 1
                return []
            self.seen.add(key, c.time)
        if not self._counts_rules and clocked and detection.event.get("line"):  # one event's detections
            event = (c.time, detection.source, event_key(detection.event))  # come one after the other
            # the same event, met by another of the rules: it counts once, with the value its first detection
            # gave (an alias may read another field of it for each rule: 5 and 7 were summed as 12)
            if self._last_event == (event, c.group):
                return []
            self._last_event = (event, c.group)
        self._seq += 1
        if c.time < self.watermark:
            self.late += 1
            if c.time < self.watermark - self.timeframe or c.time <= self._consumed.get(c.group, NEVER):
                self.late_dropped += 1
                if c.time <= self.resumed_at.get(detection.source, NEVER):  # its source had passed it before
                    self.late_resent += 1  # the restart: sent again, not a clock behind
                elif len(self.late_sources) < 10_000 or detection.source in self.late_sources:
                    self.late_sources[detection.source] = self.late_sources.get(detection.source, 0) + 1
            else:
                self._wait((self.watermark, self._seq, c))
                if len(self._pending) + len(self._held) > self.max_held:  # a flood of late events too
                    self.capped = True
                    self.shed_one()
            return []
        if c.time <= self._consumed.get(c.group, NEVER):
            # on time yet in a consumed episode: only right after a pause (``state.pause``), whose
            # final flush alerted on the episode
            return self.advance(self.clocks.reference - self.lateness) \
                if clocked and self.clocks.see(detection.source, c.time) and not self.driven else []
        self._wait((c.time, self._seq, c))
        hits = []
        held = len(self._pending) + len(self._held)
        if held > ONE_SOURCE_HELD and clocked and not self.driven:
            alone = self.clocks.one_source_time  # one host's log (``clock``), or one and a stray line
            alone = alone if alone != NEVER else self.clocks.solo_time(ONE_SOURCE_HELD)
            if alone != NEVER:
                hits = self.advance(alone - self.lateness)
                held = len(self._pending) + len(self._held)
        rose = clocked and self.clocks.see(detection.source, c.time)  # before shedding: who is ahead
        if held > self.max_held:
            self.capped = True
            self.shed_one()
        if rose and not self.driven:
            hits += self.advance(self.clocks.reference - self.lateness)
        if self.early and c.time > max(self._consumed.get(c.group, NEVER), self._early_done.get(c.group, NEVER)):
            if defer:
                self._early_due.append(c)
            else:
                hit = self._early(c)
                if hit is not None:
                    hits.append(hit)
        return hits

    @property
    def deferred(self) -> int:
        """How many early evaluations wait for the rest of their event (``observe(defer=True)``)."""
        return len(self._early_due)

    def early_due(self, first: int = 0) -> list:
        """The early evaluations that waited for the rest of their event (``observe(defer=True)``),
        from the ``first`` deferred on.  An event meeting several rules of a temporal correlation is
        one detection per rule: the first could complete a window, which then alerted without the
        event's other rules."""
        due, self._early_due = self._early_due[first:], self._early_due[:first]
        hits = []
        for c in due:
            if c.time > max(self._consumed.get(c.group, NEVER), self._early_done.get(c.group, NEVER)):
                hit = self._early(c)
                if hit is not None:
                    hits.append(hit)
        return hits

    def _wait(self, entry) -> None:
        """An event waits for the watermark (``entry``: evaluation time, seq, contribution)."""
        self._pending.add(entry)
        if not self._early_on:
            return
        waiting = self._waiting.get(entry[2].group)
        if waiting is None:
            waiting = self._waiting[entry[2].group] = _Waiting()
        waiting.add(entry)

    def _drop_newest_waiting(self) -> None:
        """The last entry of ``_pending`` taken out, and of its group's (the newest of both)."""
        entry = self._pending.pop(-1)
        if not self._early_on:
            return
        group = entry[2].group
        waiting = self._waiting[group]
        waiting.entries.pop()
        if not len(waiting):
            del self._waiting[group]

    def _pop_waiting(self):
        """The first entry of ``_pending``, taken out (the first of its group's too)."""
        entry = self._pending.pop(0)
        if not self._early_on:
            return entry
        group = entry[2].group
        waiting = self._waiting[group]
        waiting.drop_first()
        if not len(waiting):
            del self._waiting[group]
        return entry

    def index_waiting(self) -> None:
        """``_waiting`` made afresh from ``_pending`` (after it was set or changed wholesale: ``state``),
        empty without early alerts."""
        self._waiting = {}
        if not self._early_on:
            return
        for entry in self._pending:
            waiting = self._waiting.get(entry[2].group)
            if waiting is None:
                waiting = self._waiting[entry[2].group] = _Waiting()
            waiting.entries.append(entry)  # already in order

    @property
    def newest(self):
        """The stream's time: the newest event time two sources vouch for."""
        return self.clocks.reference

    def advance(self, watermark) -> list:
        """Move the watermark forward (never back); evaluate every time before it.

        A correlation chained to others (``upstream``) is no further on than they are: its
        watermark is the least of theirs (of those that had an event: the first event of one
        that had none, if on time, is not behind our own sources' time), and of ``watermark``
        (the one its own sources give) when it also takes rule detections (``own_inputs``).  An upstream
        hit is final when made, at a time not before the upstream watermark, so it is on time here."""
        if self.upstream:
            self.wanted = max(self.wanted, watermark)
            bounds = [u.watermark for u in self.upstream if u.heard()]  # one that never had an event
            if self.own_inputs:  # holds nothing back: its first, on time, is not before our own time
                bounds.append(self.wanted)
            if not bounds:
                return []
            watermark = min(bounds)
        return self._advance(watermark)

    def forget_future(self, limit: int) -> bool:
        """Live input (``Correlation.live``): a watermark past ``limit`` (the wall clock plus
        ``max_skew``) came from a state saved by a run that believed clocks in the future (a file,
        an older build), and made every later event late: no alert for the rest of the run, nor of
        the runs after it.  It goes back to what the believed sources vouch for; the events in
        windows past it wait again, and episodes consumed past it are forgotten.  True if it was."""
        if self.watermark <= limit and self.wanted <= limit:
            return False
        reference = self.clocks.reference
        self.watermark = min(self.watermark, reference - self.lateness if reference != NEVER else NEVER)
        self.wanted = min(self.wanted, self.watermark)
        for time, seq, group in list(self._held.irange((self.watermark, float("inf")))):
            self._held.remove((time, seq, group))
            self._wait((time, seq, self._out_of_window(time, seq, group)))
        self._consumed = {group: t for group, t in self._consumed.items() if t < self.watermark}
        self._consumed_order = deque(item for item in self._consumed_order if item[0] < self.watermark)
        return True

    _heard_at = -1  # ``SourceClocks.emptiness_changes`` when ``_heard`` was found

    def heard(self) -> bool:
        """Whether any event reached this correlation, or one it is chained to.  Kept until some
        clock may have become empty or stopped being so: asked of each inner correlation of each
        outer one on every detection, it walked a chain 300 deep so often that one event took 13 s."""
        changes = SourceClocks.emptiness_changes
        if self._heard_at != changes:
            self._heard = len(self.clocks) > 0 or any(u.heard() for u in self.upstream)
            self._heard_at = changes
        return self._heard

    def _advance(self, watermark) -> list:
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        hits = []
        pending = self._pending
        while pending and pending[0][0] < watermark:
            t = pending[0][0]
            if self.anchored:  # the windows ending before t are complete: judged before t's events join one
                hits += self._judge_due(t)
            touched = {}
            while pending and pending[0][0] == t:
                _, seq, c = self._pop_waiting()
                window = self._windows.get(c.group)
                if window is None:
                    window = self._windows[c.group] = self.shape(self.spec)
                window.add((c.time, seq), c)
                self._held.add((c.time, seq, c.group))
                touched[c.group] = True
            if self.anchored:
                continue
            for group in sorted(touched, key=repr):
                hit = self._evaluate(group, t)
                if hit is not None:
                    hits.append(hit)
                if self.watch is not None:
                    self.watch(self, group, t, hit)
        if self.anchored:
            hits += self._judge_due(watermark)
        self._evict(watermark - self.timeframe)
        return hits

    def flush(self) -> list:
        """End of input: everything pending becomes final (whatever the upstream watermarks)."""
        return self._advance(float("inf"))

    # ------------------------------------------------------------ windows

    def _evaluate(self, group, t: int) -> Optional[Hit]:
        window = self._windows[group]
        start = t - self.timeframe
        while window.events and window.events.peekitem(0)[0][0] < start:
            (time, seq), _ = window.events.peekitem(0)
            window.remove((time, seq))
            self._held.remove((time, seq, group))
            self._gone_from_early((time, seq))
        if not window.complete():
            return None
        aggregate = window.aggregate()
        if not self.spec.condition.holds(aggregate):
            return None
        hit = Hit(self.spec, t, start, group, tuple(window.events.values()), aggregate, window.distinct())
        for time, seq in window.events:
            self._held.remove((time, seq, group))
        if self._early_used and any(key in self._early_used for key in window.events):
            hit = None  # an episode already alerted early (in this run, or one before: --state) is not again
            self._join_early(group, t, start, window)
            for key in window.events:
                self._gone_from_early(key)
        del self._windows[group]
        self._mark_consumed(group, t)
        return hit

    def _join_early(self, group, t: int, start: int, window) -> None:
        """An episode alerted early, final now, holds events its early alert had not (one at its end
        time that came after it, or one within the lateness): they are the correlations chained to this
        one's as a further hit of the episode (``joined``), which makes no alert of its own here.  Passed
        on only in the early alert, an event tied with it never reached them, and the outer episode the
        watermark alone found (the inner alert holding both hosts) was lost."""
        if not self.feeds_outer:
            return
        used = self._early_used
        joined = tuple(c for key, c in window.events.items() if key not in used)
        if joined:
            self.joined.append(Hit(self.spec, t, start, group, joined, window.aggregate(), window.distinct()))

    def take_joined(self) -> list:
        """The hits of events that joined episodes alerted early (``_join_early``), taken out."""
        joined, self.joined = self.joined, []
        return joined

    def _judge_due(self, limit) -> list:
        """``anchored``: the hits of every window that is complete before ``limit`` (its start +
        timeframe is before it), earliest start first; groups of one start in a fixed order."""
        hits, held = [], self._held
        while held and held[0][0] + self.timeframe < limit:
            start = held[0][0]
            for group in sorted({group for _, _, group in held.irange((start,), (start, float("inf")))}, key=repr):
                hit = self._judge(group, start)
                if hit is not None:
                    hits.append(hit)
        return hits

    def _judge(self, group, start: int) -> Optional[Hit]:
        """``anchored``: the group's window from its earliest event (at ``start``) to start + timeframe,
        complete now, holds the group's events up to its end and none after (``_judge_due`` judges it
        before a later one joins).  It fires if it meets the condition; either way its events are
        taken, and the group's next event starts the next window: one window after another, as a
        SIEM's time buckets are, but each from the first event of its group (a burst of five events
        in five seconds is not "fewer than 3 in 10 s", nor is its last two seconds)."""
        window = self._windows[group]
        end = start + self.timeframe
        aggregate = window.aggregate()
        hit = None
        if window.complete() and self.spec.condition.holds(aggregate):
            hit = Hit(self.spec, end, start, group, tuple(window.events.values()), aggregate, window.distinct())
        if self.watch is not None:  # before its events leave: ``explain`` reads the window judged
            self.watch(self, group, end, hit)
        for time, seq in window.events:
            self._held.remove((time, seq, group))
        del self._windows[group]
        self._mark_consumed(group, end)
        return hit

    def _mark_consumed(self, group, t: int) -> None:
        self._consumed[group] = t
        self._consumed_order.append((t, group))
        if len(self._consumed_order) > self.max_held:  # the oldest episode is forgotten first
            old_t, old_group = self._consumed_order.popleft()
            if self._consumed.get(old_group) == old_t:
                del self._consumed[old_group]

    def _early(self, c: Contribution) -> Optional[Hit]:
        """``early``: a window of ``c``'s group that ``c`` can complete (ending at its time, or at
        a newer event of the group already here, within the timeframe), over the events that have
        arrived (in the open window, or waiting for the watermark) and are after the group's last
        early alert, holds now: the first such window is an alert.  Nothing is consumed here: the watermark still
        evaluates every window as without ``early``, and keeps to itself the alerts that share an
        event with one made early (``_evaluate``), so an alert never comes twice, and an episode
        that this could not see (its events arrived out of order) still alerts."""
        tf, group = self.timeframe, c.group
        done = self._early_done.get(group, NEVER)  # an early alert took the group's events up to here
        waiting = self._waiting.get(group)
        waiting = waiting.between(c.time - tf, c.time + tf) if waiting is not None else []
        window = self._windows.get(group)
        if len(waiting) + (len(window.events) if window is not None else 0) > EARLY_MAX:
            return None
        since = max(c.time - tf, done + 1)
        items = [(key, item) for key, item in window.events.items() if key[0] >= since] \
            if window is not None else []
        items += [((item.time, seq), item) for _, seq, item in waiting if item.time >= since]
        items.sort(key=lambda pair: pair[0])
        trial, added, dropped = self.shape(self.spec), 0, 0
        for t in sorted({key[0] for key, _ in items if key[0] >= c.time}):
            if not self.clocks.believed(t):
                # dated past the wall clock (live input): not believed, its window waits as its events do.
                # Alerted early, three such lines made the group's early evaluations skip every event
                # before their time: the real incident after them waited for the watermark
                return None
            while added < len(items) and items[added][0][0] <= t:
                trial.add(*items[added])
                added += 1
            while items[dropped][0][0] < t - tf:
                trial.remove(items[dropped][0])
                dropped += 1
            aggregate = trial.aggregate() if trial.complete() else None
            if aggregate is not None and self.spec.condition.holds(aggregate):
                break
        else:
            return None
        self._early_used.update(trial.events)
        self._early_done[group] = t
        self._early_order.append((t, group))
        if len(self._early_order) > self.max_held:  # as many early alerts remembered as consumed episodes
            old_t, old_group = self._early_order.popleft()
            if self._early_done.get(old_group) == old_t:
                del self._early_done[old_group]
        hit = Hit(self.spec, t, t - tf, group, tuple(trial.events.values()), aggregate, trial.distinct())
        if self.watch is not None:
            self.watch(self, group, t, hit)
        return hit

    def shed_one(self) -> None:
        """Over the cap: drop the newest event waiting when it is dated more than ``max_skew``
        past the stream's time and more than a share of the cap is (a clock in the future, or
        forged: a flood of it must not push the other hosts' windows out, blinding the rule,
        ``FUTURE_SHARE``); else the oldest event held, in a window if any (its window forgets it
        as if it had slid past), else the oldest pending one."""
        self.shed += 1
        pending, now = self._pending, max(self.watermark + self.lateness, self.clocks.reference)
        ahead = now + self.clocks.max_skew if now != NEVER else NEVER
        if pending and ahead != NEVER and pending[-1][0] > ahead and \
                len(pending) - pending.bisect_right((ahead, float("inf"))) > self.max_held // FUTURE_SHARE:
            _, seq, gone = pending[-1]
            self._drop_newest_waiting()
        elif self._held:
            held = self._held.pop(0)
            seq, gone = held[1], self._out_of_window(*held)
        else:
            _, seq, gone = self._pop_waiting()
        self._gone_from_early((gone.time, seq))
        if self.seen is not None:  # no longer held: its identity goes too (``state.Seen``)
            self.seen.discard(self.seen.key(gone.detection), gone.time)

    def _gone_from_early(self, key: tuple) -> None:
        """An event (``(time, seq)``) left the correlation (consumed, slid out, shed): no window can
        hold it any more, so whether an early alert had it no longer matters.  The events of early
        alerts were kept until the watermark passed their time + timeframe: a flood of groups that
        each alerted early within one window kept every one of them (300,000 held 300,000, past the
        cap of events held)."""
        if self._early_used:
            self._early_used.discard(key)

    def _out_of_window(self, time, seq, group) -> Contribution:
        """An event held (taken out of ``_held`` by the caller) taken out of its group's window, the
        window with it when it was the last; the event."""
        window = self._windows[group]
        gone = window.events[(time, seq)]
        window.remove((time, seq))
        if not window.events:
            del self._windows[group]
        return gone

    def _evict(self, horizon) -> None:
        """Drop everything older than ``horizon``: no future window can reach it."""
        held = self._held
        while held and held[0][0] < horizon:
            time, seq, group = held.pop(0)
            self._out_of_window(time, seq, group)
            self._gone_from_early((time, seq))
        order = self._consumed_order
        while order and order[0][0] < horizon:
            t, group = order.popleft()
            if self._consumed.get(group) == t:
                del self._consumed[group]
        used, order = self._early_used, self._early_order
        while used and used[0][0] < horizon:
            used.pop(0)
        while order and order[0][0] < horizon:
            t, group = order.popleft()
            if self._early_done.get(group) == t:
                del self._early_done[group]
        if self.seen is not None:
            self.seen.evict(horizon)
        size = len(self._held) + len(self._pending)
        self._peak = max(self._peak, size)
        self._flooded = self._flooded or self._peak >= FLOOD
        if self._flooded and size < self._peak // 4:  # a flood is passing: its memory can go back
            self._peak = size
            self.flood_gone = True  # done by the caller, once nothing here refers to the flood any more
            # again at each quarter on the way down, the last once almost nothing of it is left:
            # whatever the flood's last events free after a release stays pinned in Python's free
            # lists and arenas until the next full collection, which a large heap rarely gets
            self._flooded = size >= FLOOD_LEFT

    # ------------------------------------------------------------ introspection

    @property
    def arrivals(self) -> int:
        """A running count of the detections this correlation took (late ones too; not one dropped
        as sent again, ``duplicates``, nor one that is the same event as the detection just before,
        met by another of its rules).  Read-only, for ``explain``, which tells by it whether the
        correlation took an event it was fed, or counted it once already."""
        return self._seq

    def held_times(self) -> list:
        """Event times of everything held (pending and windowed); for tests."""
        return [c.time for _, _, c in self._pending] + [t for t, _, _ in self._held]

    def window_of(self, group, events: bool = True) -> Optional[tuple]:
        """Read-only, for ``explain``: ``(contributions in (time, arrival) order or None without
        ``events``, input keys seen, complete, aggregate)`` of a group's open window; None when it
        has none."""
        window = self._windows.get(group)
        if window is None:
            return None
        held = tuple(window.events.values()) if events else None
        return held, frozenset(window.seen), window.complete(), window.aggregate()

    def held_of(self, group) -> list:
        """Read-only, for ``explain``: a group's contributions held, in its window or waiting for the
        watermark, in time order."""
        window = self._windows.get(group)
        held = list(window.events.values()) if window is not None else []
        held += [c for _, _, c in self._pending if c.group == group]
        return sorted(held, key=lambda c: c.time)

    def state_size(self) -> int:
        return len(self._pending) + len(self._held) + len(self._consumed)
