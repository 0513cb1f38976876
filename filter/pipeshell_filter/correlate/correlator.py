"""Event-time correlation: sliding windows, a watermark for out-of-order input, consume-on-fire.

Semantics (also in the README):

* A window ends at an evaluation time t and covers ``[t - timeframe, t]`` (both
  ends included).  It is evaluated at each distinct event time, with all events
  of that time added first, so ties cannot change the result.
* It fires when every join term is met by at least one event in it and the
  aggregation over all its events holds.  Firing consumes the group's events up
  to t: the next alert needs new events.
* Times are final once the watermark passes them: watermark = newest event time
  seen - lateness (and never moves back).  Times strictly before the watermark
  are evaluated; an event at exactly the watermark is still on time.
* An event older than the watermark is *late*.  It never reopens an evaluated
  window.  If it is not older than watermark - timeframe and not in a consumed
  episode, it joins the windows still open: it is evaluated at the watermark.
  Otherwise it is dropped from correlation (it is still counted and passed on).

State is bounded: after each advance nothing older than watermark - timeframe
is held, so memory follows the event rate, not the length of the input.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from typing import Any, Hashable, Optional

import attrs
from sortedcontainers import SortedDict, SortedList

from ..sigma.condition import Aggregation

_OPERATORS = {"==": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
NEVER = float("-inf")


@attrs.frozen
class Contribution:
    """What correlation needs of one candidate event."""

    time: int  # event time, ns
    mask: int  # bit i: the event meets join term i
    group: Hashable = None  # value of the aggregation's ``by`` field
    value: Any = None  # count(field): tuple of distinct strings; sum/min/max/avg: float or None
    ref: Any = None  # opaque; handed back in alerts


@attrs.frozen
class Alert:
    time: int  # window end (the evaluation time)
    window_start: int
    group: Hashable
    contributions: tuple  # the window's events, in (time, arrival) order
    aggregate: Any  # the aggregated value that met the threshold (None: no aggregation)
    distinct_values: tuple  # count(field): sorted distinct values


class _Window:
    """One group's open window with incremental aggregate state."""

    __slots__ = ("events", "term_counts", "values", "numbers")

    def __init__(self, n_terms: int):
        self.events = SortedDict()  # (time, seq) -> Contribution
        self.term_counts = [0] * n_terms
        self.values = Counter()  # count(field): value -> events holding it
        self.numbers = SortedList()  # sum/min/max/avg operands

    def add(self, key: tuple, c: Contribution) -> None:
        self.events[key] = c
        self._account(c, +1)

    def remove(self, key: tuple) -> None:
        self._account(self.events.pop(key), -1)

    def _account(self, c: Contribution, sign: int) -> None:
        for i in range(len(self.term_counts)):
            if c.mask >> i & 1:
                self.term_counts[i] += sign
        if isinstance(c.value, tuple):
            for v in c.value:
                self.values[v] += sign
                if not self.values[v]:
                    del self.values[v]
        elif c.value is not None:
            (self.numbers.add if sign > 0 else self.numbers.remove)(c.value)


class Correlator:
    """Feeds candidate events in arrival order and returns alerts as they become final."""

    def __init__(self, n_terms: int, timeframe_ns: int, aggregation: Optional[Aggregation], lateness_ns: int = 0):
        if n_terms < 1:
            raise ValueError("at least one join term")
        self.n_terms = n_terms
        self.timeframe = timeframe_ns
        self.aggregation = aggregation
        self.lateness = lateness_ns
        self.watermark = NEVER
        self.newest = NEVER
        self.late = 0  # events that arrived behind the watermark
        self.late_dropped = 0  # ... of which could not join any open window
        self._seq = 0
        self._pending = SortedList()  # (evaluation time, seq, Contribution), all >= watermark
        self._windows = {}  # group -> _Window
        self._held = SortedList()  # (time, seq, group) of every windowed event, for eviction
        self._consumed = {}  # group -> time of its last alert

    # ------------------------------------------------------------ input

    def observe(self, c: Contribution) -> list:
        """Take one candidate event; return the alerts that became final."""
        self._seq += 1
        if c.time < self.watermark:
            self.late += 1
            if c.time < self.watermark - self.timeframe or c.time <= self._consumed.get(c.group, NEVER):
                self.late_dropped += 1
            else:
                self._pending.add((self.watermark, self._seq, c))
            return []
        self._pending.add((c.time, self._seq, c))
        if c.time > self.newest:
            self.newest = c.time
            return self.advance(self.newest - self.lateness)
        return []

    def advance(self, watermark) -> list:
        """Move the watermark forward (never back); evaluate every time before it."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        alerts = []
        pending = self._pending
        while pending and pending[0][0] < watermark:
            t = pending[0][0]
            touched = []
            while pending and pending[0][0] == t:
                _, seq, c = pending.pop(0)
                window = self._windows.get(c.group)
                if window is None:
                    window = self._windows[c.group] = _Window(self.n_terms)
                window.add((c.time, seq), c)
                self._held.add((c.time, seq, c.group))
                if c.group not in touched:
                    touched.append(c.group)
            for group in sorted(touched, key=repr):
                alert = self._evaluate(group, t)
                if alert is not None:
                    alerts.append(alert)
        self._evict(watermark - self.timeframe)
        return alerts

    def flush(self) -> list:
        """End of input: everything pending becomes final."""
        return self.advance(float("inf"))

    # ------------------------------------------------------------ windows

    def _evaluate(self, group, t: int) -> Optional[Alert]:
        window = self._windows[group]
        start = t - self.timeframe
        while window.events and window.events.peekitem(0)[0][0] < start:
            (time, seq), _ = window.events.peekitem(0)
            window.remove((time, seq))
            self._held.remove((time, seq, group))
        if not all(window.term_counts):
            return None
        aggregate = self._aggregate(window)
        spec = self.aggregation
        if spec is not None and (aggregate is None or not _OPERATORS[spec.operator](aggregate, spec.threshold)):
            return None
        alert = Alert(
            time=t,
            window_start=start,
            group=group,
            contributions=tuple(window.events.values()),
            aggregate=aggregate,
            distinct_values=tuple(sorted(window.values)),
        )
        for time, seq in window.events:
            self._held.remove((time, seq, group))
        del self._windows[group]
        self._consumed[group] = t
        return alert

    def _aggregate(self, window: _Window):
        spec = self.aggregation
        if spec is None:
            return None
        if spec.function == "count":
            return len(window.values) if spec.field else len(window.events)
        numbers = window.numbers
        if not numbers:
            return None
        if spec.function == "min":
            return numbers[0]
        if spec.function == "max":
            return numbers[-1]
        total = math.fsum(numbers)
        return total if spec.function == "sum" else total / len(numbers)

    def _evict(self, horizon) -> None:
        """Drop everything older than ``horizon``: no future window can reach it."""
        held = self._held
        while held and held[0][0] < horizon:
            time, seq, group = held.pop(0)
            window = self._windows[group]
            window.remove((time, seq))
            if not window.events:
                del self._windows[group]
        for group in [g for g, t in self._consumed.items() if t < horizon]:
            del self._consumed[group]

    # ------------------------------------------------------------ introspection

    def held_times(self) -> list:
        """Event times of everything held (pending and windowed); for tests and stats."""
        return [c.time for _, _, c in self._pending] + [t for t, _, _ in self._held]

    def state_size(self) -> int:
        return len(self._pending) + len(self._held) + len(self._consumed)
