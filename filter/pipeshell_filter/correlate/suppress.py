"""``--suppress DURATION``: one alert per rule and group per period of event time.

A single-event rule alerts on every event that meets it, so one noisy rule on one
host floods the alert sink.  Here an alert's key is its rule (or correlation) and
its group: the host of a single-event alert (letter case folded), the group of a
correlation's window.  The first alert of a key goes out and opens a period
``[t, t + DURATION)`` at its event time; the key's later alerts dated in it are
suppressed and counted; the key's first alert dated at or after its end goes out
carrying that count and opens the next period.  One dated before the open
period's start (out of order) goes out with a count of 0 and leaves the period
as it is: it repeats nothing the key alerted on since.  An alert without an
event time is never suppressed, nor on live input one dated past the wall clock by more than the skew.

Event time, not the wall clock, so that a replay suppresses the same alerts, and
a restart (``--state``) goes on with the periods saved.  Memory: a period whose
end the watermark passed with nothing suppressed in it counts as none (only a
very late alert of its key is judged otherwise), and is forgotten at the next
pass over the periods; the watermark is the newest alert time two hosts vouch
for, less the lateness (``clock.SourceClocks``: one host's wrong clock cannot
move it), and for a correlation's key the newest time of that correlation's own
alerts, less the lateness: its alerts are made as its own windows close, in
their time order, which may be long after other rules alerted on later events
(two of its alerts in one period went out, the other rules' alerts having
moved the first watermark past it meanwhile).  A period with alerts suppressed is kept for its count until the
key's next alert.  Past ``MAX_KEYS`` keys the period opened longest ago is
forgotten (its count stays in the run's total).
"""

from __future__ import annotations

from typing import Hashable, Iterable, Optional

from .clock import NEVER, SourceClocks
from .windows import fold

# Keys remembered at most (a flood of distinct hosts or groups, each alerting once).
MAX_KEYS = 100_000
_SWEEP_AFTER = 1024  # periods opened, at least, between two passes that forget the passed ones


class SuppressError(ValueError):
    """A saved suppression state that cannot be used; the message is one line."""


def single_key(rule: str, host) -> tuple:
    """The key of a single-event rule's alert: the rule and its host (case folded, as a
    correlation folds its group's values)."""
    return rule, fold(host)


def correlation_key(correlation: str, group: tuple) -> tuple:
    """The key of a correlation's alert: the correlation and its window's group (a tuple, so that
    it is never the key of a single-event alert)."""
    return correlation, tuple(group)


class Suppressor:
    """The open periods, key -> ``[start, suppressed count]``, the period opened longest ago first."""

    def __init__(self, period_ns: int, lateness_ns: int, max_skew_ns: int, cap: int = MAX_KEYS):
        if period_ns <= 0:
            raise ValueError("a suppression period must be longer than 0")
        self.period = period_ns
        self.lateness = lateness_ns
        self.cap = cap
        self.clocks = SourceClocks(max_skew_ns)
        self.open = {}
        self.newest = {}  # correlation id -> the newest time of its alerts (its own windows' order)
        self.forgotten = 0  # periods still open that the cap made this run forget
        self._opened = 0  # periods opened since the last pass (``_make_room``)

    def watermark(self):
        reference = self.clocks.reference
        return NEVER if reference == NEVER else reference - self.lateness

    def _watermark_of(self, key: tuple, watermark):
        """The watermark a key's period is judged by: ``watermark`` (the alerts' own), or for a correlation's
        key (its group a tuple) the newest time of that correlation's alerts, less the lateness."""
        if key[1].__class__ is tuple:
            newest = self.newest.get(key[0])
            return NEVER if newest is None else newest - self.lateness
        return watermark

    def _current(self, key: Hashable, watermark) -> Optional[list]:
        """The key's period, None when it has none or it passed the watermark with nothing suppressed."""
        entry = self.open.get(key)
        if entry is None or entry[1] == 0 and entry[0] + self.period <= self._watermark_of(key, watermark):
            return None
        return entry

    def admit(self, key: Hashable, time: Optional[int], hosts: Iterable) -> Optional[int]:
        """One alert made, in the order alerts are made: None when it is suppressed, else how many
        of its key were suppressed since the key's last alert that went out.  ``hosts``: those of
        its events, whose times move the watermark (every alert's, suppressed or not)."""
        if time is None or self._future(time):
            return 0
        watermark = self.watermark()
        for host in hosts:
            self.clocks.see(host, time)
        entry = self._current(key, watermark)
        if key[1].__class__ is tuple and time > self.newest.get(key[0], NEVER):
            self.newest[key[0]] = time
        if entry is not None and entry[0] <= time < entry[0] + self.period:
            entry[1] += 1
            return None
        if entry is not None and time < entry[0]:
            return 0
        count = entry[1] if entry is not None else 0
        self.open.pop(key, None)
        self._make_room(watermark)
        self.open[key] = [time, 0]
        return count

    def _make_room(self, watermark) -> None:
        """Forget the periods the watermark passed with nothing suppressed, in one pass once as many
        periods were opened since the last pass as it left (each costs a constant share of the
        passes); past the cap, the period opened longest ago."""
        self._opened += 1
        if self._opened >= max(_SWEEP_AFTER, len(self.open) // 2):
            self.open = {key: entry for key, entry in self.open.items() if self._current(key, watermark) is not None}
            self._opened = 0
        while len(self.open) >= self.cap:
            oldest = next(iter(self.open))
            self.forgotten += self._current(oldest, watermark) is not None
            del self.open[oldest]

    def _future(self, time: int) -> bool:
        """On live input, a time past the wall clock by more than the skew: its alert is judged as one
        without a time.  Taken, one line dated 2099 opened its key's period then, and its host's alerts,
        all dated before that period, went out (and on after a restart, the period saved)."""
        wall = self.clocks.wall
        return wall is not None and time > wall() + self.clocks.max_skew

    def bound_by(self, wall) -> None:
        """Live input: a host's time past the wall clock by more than the skew moves nothing
        (``SourceClocks.bound_by``), nor opens a period; a period so dated (restored) is forgotten."""
        self.clocks.bound_by(wall)
        self.open = {key: entry for key, entry in self.open.items() if not self._future(entry[0])}
        self.newest = {rule: time for rule, time in self.newest.items() if not self._future(time)}

    # ------------------------------------------------------------ state across restarts

    def saved(self) -> dict:
        """The periods as held, oldest first, the hosts' clocks and the count of periods opened since
        the last pass: what a restart needs to go on as one run would, as plain data."""
        periods = [[key[0], list(key[1]) if isinstance(key[1], tuple) else key[1], start, count]
                   for key, (start, count) in self.open.items()]
        return {"period_ns": self.period, "periods": periods, "clocks": self.clocks.saved(), "opened": self._opened,
                "newest": dict(self.newest)}

    def restore(self, saved) -> None:
        """Take back ``saved``: its periods keep their starts and counts, measured with this run's
        duration; SuppressError when it is damaged."""
        try:
            clocks = SourceClocks(self.clocks.max_skew)
            clocks.restore(saved["clocks"])
            periods = {}
            for rule, group, start, count in saved["periods"]:
                if type(rule) is not str or type(start) is not int or type(count) is not int or count < 0:
                    raise ValueError("a period is not [rule, group, start, count]")
                if isinstance(group, list):
                    if not all(value is None or type(value) is str for value in group):
                        raise ValueError("a group value is not a string")
                    key = correlation_key(rule, tuple(group))
                elif group is None or type(group) is str:
                    key = single_key(rule, group)
                else:
                    raise ValueError("a host is not a string")
                periods[key] = [start, count]
            opened = saved.get("opened", 0)
            if type(opened) is not int or opened < 0:
                raise ValueError("'opened' is not a count")
            newest = saved.get("newest", {})  # none in a state of an older build: its periods pass by the cap
            if not isinstance(newest, dict) or not all(type(t) is int for t in newest.values()):
                raise ValueError("'newest' is not correlation ids and times")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise SuppressError(f"damaged state file (suppress: {error})".replace("\n", " ")) from None
        wall = self.clocks.wall
        self.clocks = clocks
        self.open = dict(list(periods.items())[-self.cap:])
        self._opened = opened
        self.newest = dict(newest)
        if wall is not None:
            self.bound_by(wall)
