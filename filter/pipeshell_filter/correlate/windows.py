"""Window state, one shape per correlation kind: the one place to add a kind.

A window holds one group's events between ``t - timespan`` and ``t``.  Events
come and go one at a time, and each shape keeps its aggregate up to date as
they do (a count, a Counter of values, an exact running sum, a sorted list),
so evaluating a window never walks its events.  State is plain data: the
events themselves, keyed by ``(time, arrival)``, and what was counted of them.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, insort
from collections import Counter
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import Any, Optional

import attrs
from sortedcontainers import SortedList

from ..sigma.correlation import CorrelationSpec
from ..sigma.typed import parse_number


@attrs.frozen
class Contribution:
    """What correlation keeps of one Detection."""

    time: int  # event time, ns
    refs: tuple  # keys (``RuleRef.key``) of the inputs the detection feeds
    group: tuple  # the values of the group-by fields
    value: Any  # what the detection adds to the aggregate (see ``Window.value_of``)
    detection: Any  # the Detection, handed back in alerts


# A window's events keys stay in a plain list up to this many, in a SortedList beyond (``WindowEvents``).
SMALL_WINDOW = 32


class WindowEvents:
    """A window's events, ``(time, seq) -> Contribution``, in key order: the part of a SortedDict's
    interface windows use.  Most windows hold a few events; a flood of distinct users makes one per
    event in every correlation, and a SortedDict each (a dozen objects, about 9 µs to make, all
    walked by each full garbage collection) was a third of a detection's cost to 50 correlations
    at their cap.  The keys are a plain list while there are few (appended: events come in time
    order, but for late ones), a SortedList past ``SMALL_WINDOW``, so that a flood of one group
    still costs O(log n) per event."""

    __slots__ = ("_keys", "_values")

    def __init__(self, items=()):
        self._keys, self._values = [], {}
        self.update(items)

    def __setitem__(self, key: tuple, value) -> None:
        if key not in self._values:
            keys = self._keys
            if type(keys) is not list:
                keys.add(key)
            else:
                if not keys or keys[-1] < key:
                    keys.append(key)
                else:
                    insort(keys, key)
                if len(keys) > SMALL_WINDOW:
                    self._keys = SortedList(keys)
        self._values[key] = value

    def update(self, items) -> None:
        """Many at once (a state taken back): the keys sorted once."""
        self._values.update(items)
        keys = sorted(self._values)
        self._keys = keys if len(keys) <= SMALL_WINDOW else SortedList(keys)

    def pop(self, key: tuple):
        value = self._values.pop(key)
        self._keys.remove(key)  # most often the first: it slid out, or was shed as the oldest
        return value

    def peekitem(self, index: int) -> tuple:
        key = self._keys[index]
        return key, self._values[key]

    def __getitem__(self, key: tuple):
        return self._values[key]

    def __eq__(self, other) -> bool:
        return isinstance(other, WindowEvents) and self._values == other._values

    __hash__ = None

    def __contains__(self, key) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        return iter(self._keys)

    def keys(self) -> list:
        return list(self._keys)

    def values(self) -> list:
        values = self._values
        return [values[key] for key in self._keys]

    def items(self) -> list:
        values = self._values
        return [(key, values[key]) for key in self._keys]


class Window:
    """Base shape: the events, and how many of them feed each input."""

    __slots__ = ("spec", "events", "seen")

    def __init__(self, spec: CorrelationSpec):
        self.spec = spec
        self.events = WindowEvents()  # (time, seq) -> Contribution
        self.seen = Counter()  # input key -> events feeding it

    def compact(self) -> None:
        """After a flood: a dict's table keeps the size it had at its largest, so each dict of
        this window is copied afresh (``Correlator.compact``)."""
        for name in (slot for cls in type(self).__mro__ for slot in getattr(cls, "__slots__", ())):
            value = getattr(self, name, None)
            if type(value) in (dict, Counter):
                setattr(self, name, type(value)(value))
            elif type(value) is WindowEvents:
                setattr(self, name, WindowEvents(value.items()))

    @staticmethod
    def value_of(spec: CorrelationSpec, detection) -> Any:
        """What one detection adds to the aggregate; None when it adds nothing."""
        return None

    def add(self, key: tuple, c: Contribution) -> None:
        self.events[key] = c
        self.seen.update(c.refs)
        self._account(c, +1)

    def fill(self, items: list) -> None:
        """``add`` for many ``(key, Contribution)`` at once (a state taken back, or put back after a
        pause's flush): the events sorted once, not inserted one by one."""
        self.events.update(items)
        self.seen.update(ref for _, c in items for ref in c.refs)
        for _, c in items:
            self._account(c, +1)

    def remove(self, key: tuple) -> None:
        c = self.events.pop(key)
        self.seen.subtract(c.refs)
        for ref in c.refs:
            if not self.seen[ref]:
                del self.seen[ref]
        self._account(c, -1)

    def _account(self, c: Contribution, sign: int) -> None:
        pass

    def complete(self) -> bool:
        """Every input occurred, where the spec asks for that, and no input the spec wants
        absent (a legacy ``near``'s ``and not x``) did."""
        if self.spec.absent and any(ref.key in self.seen for ref in self.spec.absent):
            return False
        return not self.spec.require_each or len(self.seen) == len(self.spec.rules)

    def aggregate(self):
        raise NotImplementedError

    def distinct(self) -> tuple:
        """Distinct values, for kinds that count them (shown in the alert)."""
        return ()


def _leaves(spec: CorrelationSpec, detection) -> list:
    return detection.fields.get(spec.field_for(spec.field, detection.rule)) or []


def _written_number(spec: CorrelationSpec, detection) -> Optional[Decimal]:
    """The field's first value as a number within a double's range, exactly as events write one
    (``parse_number``: ASCII digits, a sign, a point, an exponent; not ``1_000`` or other scripts'
    digits, which ``float`` would read, nor what ``|gte`` would not); None when it has none."""
    values = _leaves(spec, detection)
    number = parse_number(values[0]) if values else None
    return number if number is not None and math.isfinite(float(number)) else None


def _number(spec: CorrelationSpec, detection) -> Optional[float]:
    """``_written_number`` as the double nearest it."""
    number = _written_number(spec, detection)
    return None if number is None else float(number)


class EventCount(Window):
    __slots__ = ()

    def aggregate(self):
        return len(self.events)


class ValueCount(Window):
    """Distinct values by reference count: a value leaves when its last event does.  Values are one
    when they compare equal as Sigma's values do, case-folded (``Admin`` and ``admin`` are one user,
    ``DC01`` and ``dc01`` one host: what a Windows name is); the alert shows each by its least
    spelling among the window's events."""

    __slots__ = ("values", "folded")

    def __init__(self, spec):
        super().__init__(spec)
        self.values = Counter()  # each spelling -> events holding it
        self.folded = Counter()  # each value, case-folded -> its spellings in ``values``

    @staticmethod
    def value_of(spec, detection):
        return tuple(sorted(set(_leaves(spec, detection))))

    def _account(self, c, sign):
        for value in c.value:
            held = self.values[value] = self.values[value] + sign
            if held == (1 if sign > 0 else 0):  # a spelling came, or went
                key = fold(value)
                self.folded[key] += sign
                if not held:
                    del self.values[value]
                if not self.folded[key]:
                    del self.folded[key]

    def aggregate(self):
        return len(self.folded) if self.spec.field else len(self.events)

    def distinct(self):
        least = {}
        for value in sorted(self.values, reverse=True):
            least[fold(value)] = value
        return tuple(sorted(least.values()))


class Temporal(Window):
    __slots__ = ()

    def aggregate(self):
        return len(self.seen)


class TemporalOrdered(Window):
    """How many inputs, in the spec's order, occur at non-decreasing times."""

    __slots__ = ("times",)

    def __init__(self, spec):
        super().__init__(spec)
        self.times = {}  # input key -> SortedList of event times

    def _account(self, c, sign):
        for ref in c.refs:
            times = self.times.setdefault(ref, SortedList())
            (times.add if sign > 0 else times.remove)(c.time)

    def aggregate(self):
        at, done = -math.inf, 0
        for ref in self.spec.rules:  # greedy: the earliest occurrence after the previous one
            times = self.times.get(ref.key)
            i = bisect_left(times, at) if times else 0
            if not times or i == len(times):
                break
            at, done = times[i], done + 1
        return done


# The finest place a sum keeps: far below the least double (about 4.9e-324), so that rounding there never
# moves the double nearest a sum, and a fraction's denominator is at most 10**1100 however a number is written.
FINEST_PLACE = Decimal(1).scaleb(-1100)
# digits enough for any finite double's integer part and those 1100 places
_FINEST_CONTEXT = Context(prec=1500, rounding=ROUND_HALF_EVEN)


def _exact_number(spec: CorrelationSpec, detection) -> Optional[Fraction]:
    """``_written_number`` exactly (``0.1`` is a tenth, not the double nearest it), so that
    ``0.1 + 0.2`` sums to the ``0.3`` a rule writes; to 1100 places (``FINEST_PLACE``): ``1e-999999999``,
    12 bytes, was a fraction over 10**999999999, which took for ever to make, and to add to."""
    number = _written_number(spec, detection)
    if number is None:
        return None
    if number.as_tuple().exponent < -1100:
        number = number.quantize(FINEST_PLACE, context=_FINEST_CONTEXT)
    return Fraction(number)


class ValueSum(Window):
    """An exact running sum (of the numbers as written, in decimal), so removal never drifts; the
    aggregate is the double nearest it."""

    __slots__ = ("total", "count")

    def __init__(self, spec):
        super().__init__(spec)
        self.total, self.count = Fraction(0), 0

    value_of = staticmethod(_exact_number)

    def _account(self, c, sign):
        if c.value is not None:
            self.total += sign * c.value
            self.count += sign

    def aggregate(self):
        return _as_float(self.total) if self.count else None


class ValueAvg(ValueSum):
    __slots__ = ()

    def aggregate(self):
        return _as_float(self.total / self.count) if self.count else None


def _as_float(exact: Fraction) -> float:
    """The nearest double; past the largest (a sum of numbers near 1e308), the largest, with its
    sign: an aggregate is compared and written as a finite JSON number, never raises."""
    try:
        return float(exact)
    except OverflowError:
        return sys.float_info.max if exact > 0 else -sys.float_info.max


class ValueExtreme(Window):
    __slots__ = ("numbers",)

    def __init__(self, spec):
        super().__init__(spec)
        self.numbers = SortedList()

    value_of = staticmethod(_number)

    def _account(self, c, sign):
        if c.value is not None:
            (self.numbers.add if sign > 0 else self.numbers.remove)(c.value)


class ValueMin(ValueExtreme):
    __slots__ = ()

    def aggregate(self):
        return self.numbers[0] if self.numbers else None


class ValueMax(ValueExtreme):
    __slots__ = ()

    def aggregate(self):
        return self.numbers[-1] if self.numbers else None


class ValuePercentile(Window):
    """The rarest value's share of the events that hold one, in percent; values alike but for letter
    case are one (``fold``), as for ``ValueCount``: ``admin`` and ``Admin`` are one account, not two
    each rarer."""

    __slots__ = ("values", "counts", "held")

    def __init__(self, spec):
        super().__init__(spec)
        self.values = Counter()  # value -> events holding it
        self.counts = SortedList()  # the Counter's counts, so the least is at hand
        self.held = 0  # events holding a value

    @staticmethod
    def value_of(spec, detection):
        values = _leaves(spec, detection)
        return fold(values[0]) if values else None

    def _account(self, c, sign):
        if c.value is None:
            return
        before = self.values[c.value]
        if before:
            self.counts.remove(before)
        after = before + sign
        self.held += sign
        if after:
            self.values[c.value] = after
            self.counts.add(after)
        else:
            del self.values[c.value]

    def aggregate(self):
        return 100.0 * self.counts[0] / self.held if self.held else None


SHAPES = {
    "event_count": EventCount,
    "value_count": ValueCount,
    "temporal": Temporal,
    "temporal_ordered": TemporalOrdered,
    "value_sum": ValueSum,
    "value_avg": ValueAvg,
    "value_percentile": ValuePercentile,
    "value_min": ValueMin,
    "value_max": ValueMax,
}


def group_of(spec: CorrelationSpec, detection) -> tuple:
    """The group key: the first value of each group-by field (None where absent), letter case folded
    (``fold``): Sigma compares values without it and a Windows account or host name has none, so a brute
    force that varied the case of the name it tried (``admin``, ``ADMIN``) was groups each under the
    threshold.  ``spelled_group`` gives it back as the events wrote it."""
    key = []
    for name in spec.group_by:
        values = detection.fields.get(spec.field_for(name, detection.rule))
        key.append(fold(values[0]) if values else None)
    return tuple(key)


def fold(value):
    """A group value as ``group_of`` compares it: a text case-folded (the very string when that changes
    nothing: a flood's keys cost no second copy)."""
    if value.__class__ is not str:
        return value
    folded = value.casefold()
    return value if folded == value else folded


def spelled_group(spec: CorrelationSpec, group: tuple, contributions) -> tuple:
    """A window's ``group`` as its first event wrote it, for the alert to show."""
    if not contributions:
        return group
    detection = contributions[0].detection
    spelled = []
    for name, key in zip(spec.group_by, group):
        values = detection.fields.get(spec.field_for(name, detection.rule))
        spelled.append(values[0] if values and fold(values[0]) == key else key)
    return tuple(spelled)
