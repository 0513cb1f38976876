"""Event-time progress per source, so that one wrong clock cannot move the stream's time.

A single event dated 2099, or a host whose clock runs an hour ahead, used to
push the watermark (newest time - lateness) past every other host's events:
they all became late, and no alert could fire.  Here each source (the host a
Detection came from) has its own newest time, and the stream's time is the
newest one that **two sources vouch for**: the second-newest source time.
One source ahead of the others cannot move it, not even the first source
seen; one source behind cannot hold it back, since it is not the
second-newest unless it is all there is besides one other.  While there is
one source only (one host's log) no time is vouched for; what two of its
events reached (``one_source_time``) is taken only when its windows would
otherwise hold too many events (``Correlator``): the first source seen may
yet be a wrong clock that the next one contradicts.  So is that of the newest
source when as many of its events came and none of the others, which all came
behind it (``solo_time``): a line dated 1970 in one host's log must not hold
that host's stream to the end of input.

When the input pauses on a live pipe, the newest time that is not suspect
becomes final too: no more than ``max_skew`` past the vouched-for time, and
not in the future of the wall clock (with one source, what two of its events
reached, within the wall clock's bound); and of two sources,
the newest time that the wall clock vouches for, not after it and no more than
``max_skew`` before it.

Two sources can be wrong together (two hosts of one broken time server, or two
forged lines under two host names): on live input (``bound_by``) a time more
than ``max_skew`` past the wall clock moves no source's clock at all, so it
cannot vouch (two such lines dated 2099 made every later event late, the state
keeping it).

State is bounded: only the ``cap`` sources with the newest times are kept,
and none further behind the vouched-for time than ``horizon`` (skew, window
and lateness: it can no longer matter); the vouched-for time depends on the
top two alone.
"""

from __future__ import annotations

from typing import Hashable, Optional

from sortedcontainers import SortedList

NEVER = float("-inf")


class SourceClocks:
    # Bumped each time a clock of any correlation may have become empty or stopped being so:
    # ``Correlator.heard`` keeps its answer until then.
    emptiness_changes = 0

    def __init__(self, max_skew_ns: int, cap: int = 10_000, horizon_ns: float = float("inf")):
        self.max_skew = max_skew_ns
        self.cap = cap
        self.horizon = horizon_ns  # a source this far behind the vouched-for time is forgotten
        self._newest = {}  # source -> newest event time
        self._ranked = SortedList()  # (newest time, repr(source), source)
        self.reported = set()  # sources already reported as skewed
        self._suspect = {}  # source -> wall clock when it was first seen far ahead
        self._second = NEVER  # with one source: the second-newest of its event times
        self.wall = None  # on live input: the wall clock in ns (``bound_by``)
        self._future = {}  # sources whose time was not believed -> how far past the wall clock (ns)
        self._top = (NEVER, NEVER)  # (reference, newest) of ``_ranked``, kept by ``_ranked_changed``
        self._arrivals = 0  # event times taken (``see``)
        # [source, the arrival it last went ahead at, its own arrivals since] (``ahead``): only the newest
        # source can be ahead of the second-newest, so one is kept
        self._went_ahead = None
        # the run of event times taken from one source alone, how many, and the newest time two of them
        # reached (``solo_time``)
        self._solo_source, self._solo_count, self._solo_second = None, 0, NEVER
        self._came_behind = set()  # sources whose first time was more than ``max_skew`` behind the newest

    def compact(self) -> None:
        """After a flood: copy the per-source tables afresh (a dict never shrinks its table)."""
        self._newest, self._suspect, self.reported = dict(self._newest), dict(self._suspect), set(self.reported)
        self._future, self._came_behind = dict(self._future), set(self._came_behind)

    def see(self, source: Hashable, time: int) -> bool:
        """Take an event time of ``source``; True when the vouched-for time rose."""
        if not self.believed(time):
            # named once, and not every name of a flood of them
            if source not in self.reported and len(self.reported) + len(self._future) < self.cap:
                self._future.setdefault(source, time - self.wall())
            return False  # a clock in the future, or a forged line: as if it had no time
        self._arrivals += 1
        mark = self._went_ahead
        if mark is not None and mark[0] == source:
            mark[2] += 1
        before = self.reference
        old = self._newest.get(source)
        if not self._solo_count or source != self._solo_source:
            self._solo_source, self._solo_count, self._solo_second = source, 0, NEVER
        self._solo_count += 1
        if old is not None:
            self._solo_second = max(self._solo_second, min(old, time))
        if old is not None and len(self._ranked) == 1:  # the only source: its events vouch for each other
            self._second = max(self._second, min(old, time))
        if old is not None and old >= time:
            return False
        if old is None and self._ranked and time < self._ranked[-1][0] - self.max_skew:
            self._came_behind.add(source)
        if old is not None:
            self._ranked.remove((old, repr(source), source))
        self._newest[source] = time
        self._ranked.add((time, repr(source), source))
        if old is None and len(self._ranked) == 1:
            SourceClocks.emptiness_changes += 1
        if len(self._ranked) > self.cap:  # the oldest sources cannot be among the top two
            _, _, gone = self._ranked.pop(0)
            del self._newest[gone]
            self._came_behind.discard(gone)
        self._ranked_changed()
        reference = self.reference
        while len(self._ranked) > 2 and self._ranked[0][0] < reference - self.horizon:
            _, _, gone = self._ranked.pop(0)  # it can matter again only by sending: then it is back
            del self._newest[gone]
            self._came_behind.discard(gone)
        if time > reference + self.max_skew and not (old is not None and old > before + self.max_skew):
            self._went_ahead = [source, self._arrivals, 1]  # it goes ahead now (again: others caught it up)
        return reference > before

    def _ranked_changed(self) -> None:
        """``_ranked`` changed: its top two again.  Each correlation asks for them several times
        per detection, and indexing a SortedList costs a few microseconds, times every correlation
        (200 correlations over one rule spent a fifth of their time in ``reference``)."""
        ranked = self._ranked
        self._top = (ranked[-2][0] if len(ranked) > 1 else NEVER, ranked[-1][0] if ranked else NEVER)

    @property
    def reference(self):
        """The newest time at least two sources have reached (NEVER before there are two)."""
        return self._top[0]

    @property
    def one_source_time(self):
        """With one source only: the newest time two of its events reached (else NEVER)."""
        return self._second if len(self._ranked) == 1 else NEVER

    def solo_time(self, run: int):
        """When every source but the newest came more than ``max_skew`` behind it (a line dated 1970 in
        one host's log) and the last ``run`` event times taken all came from the newest: the newest time
        two of its events reached (else NEVER).  That line was the time two sources vouch for for the
        rest of the run, and held the busy host's stream to its end (past the cap, shed unevaluated).
        The sources that came behind another are the suspects: a host that comes ahead of the others (a
        burst dated 2099) is not believed so.  (``_came_behind`` holds sources of ``_newest`` only.)"""
        ranked = self._ranked
        if self._solo_count < run or len(ranked) < 2 or len(self._came_behind) != len(ranked) - 1 \
                or ranked[-1][2] != self._solo_source or self._solo_source in self._came_behind:
            return NEVER
        return self._solo_second

    @property
    def newest(self):
        """The newest time of any source (suspect ones included)."""
        return self._top[1]

    def trusted_newest(self, wall_ns: Optional[int] = None):
        """The newest source time that is no more than ``max_skew`` past the vouched-for time,
        and not in the future of ``wall_ns`` (the wall clock, on live input).
        With one source, what two of its events reached (``one_source_time``): a single line
        dated an hour ahead, first on a pipe that then paused, made every other host's events
        late (a replay of the past has no wall clock to check it against).  On live input (``bound_by``)
        the wall clock vouches too, for the newest source time not after it and no more than
        ``max_skew`` before it, when there are two sources only, which cannot tell each other wrong:
        one an hour behind that kept sending held the other's alerts to the end of input, and was
        taken for the right clock.  (With more, two of them vouch, and one line dated now must not
        overrule them: the hosts of a pipeline running late would all be late.)  None past the wall clock
        itself, though believed: a host minutes fast (more than the lateness, within ``max_skew``) was taken
        at every pause, and the incident of the hosts on time after it was all late.  A filter whose own
        clock is slow only finalises later, as the wall clock catches up."""
        limit = wall_ns if wall_ns is not None else float("inf")
        ranked = self._ranked
        if len(ranked) == 1:
            found = self._second if self._second <= limit else NEVER
        else:
            at = ranked.bisect_right((min(limit, self.reference + self.max_skew), "\U0010ffff"))
            found = ranked[at - 1][0] if at else NEVER
        if self.wall is not None and wall_ns is not None and len(ranked) == 2:
            at = ranked.bisect_right((wall_ns, "\U0010ffff"))
            if at and ranked[at - 1][0] >= wall_ns - self.max_skew:
                found = max(found, ranked[at - 1][0])
        return found

    def bound_by(self, wall) -> None:
        """Live input from now on: no time past ``wall()`` (ns) by more than ``max_skew`` moves a
        source's clock, and one restored from the state that is (taken before this check) is
        forgotten: the source's next event gives its time."""
        self.wall = wall
        limit = wall() + self.max_skew
        SourceClocks.emptiness_changes += 1
        while self._ranked and self._ranked[-1][0] > limit:
            time, _, source = self._ranked.pop(-1)
            del self._newest[source]
            self._came_behind.discard(source)
            if source not in self.reported and len(self.reported) + len(self._future) < self.cap:
                self._future.setdefault(source, time - limit + self.max_skew)
        self._ranked_changed()
        if len(self._ranked) != 1:
            self._second = NEVER

    def believed(self, time: int) -> bool:
        """Whether ``time`` is no more than ``max_skew`` past the wall clock (always, off live input):
        one that is moves no clock (``see``), and makes no early alert (``Correlator._early``)."""
        return self.wall is None or time <= self.wall() + self.max_skew

    def future(self) -> list:
        """(source, how far past the wall clock in ns) of the sources newly found with a time not
        believed (``bound_by``); each reported once."""
        found = list(self._future.items())
        self.reported.update(self._future)
        self._future = {}
        return found

    def ahead(self, now: float, final: bool = False, patience: float = 5.0) -> list:
        """(source, how far ahead in ns) of the sources more than ``max_skew`` past the vouched-for
        time for ``patience`` seconds of wall clock (``now``), or at the end (``final``); each is
        reported once.  The first host to send after a quiet spell is ahead until a second one
        follows: that is no wrong clock.  So at the end, too, a source is said to be ahead only when
        other sources sent after it went ahead (dated behind it): the last host of a file whose
        detections are few (a lone decoy fifteen minutes after the rest) was said to have a wrong clock."""
        if len(self._ranked) < 2:
            return []
        limit = self.reference + self.max_skew
        found, still = [], {}
        wall = self.wall() if self.wall is not None and len(self._ranked) == 2 else None
        for time, _, source in reversed(self._ranked):
            if time <= limit:
                break
            if source in self.reported or (wall is not None and wall - self.max_skew <= time <= wall):
                continue  # (the wall clock vouches for its time: ``trusted_newest``)
            mark = self._went_ahead
            if final and mark is not None and mark[0] == source and self._arrivals - mark[1] + 1 == mark[2]:
                continue  # nobody else sent since it went ahead: no evidence against its clock
            since = self._suspect.get(source, now)
            if final or now - since >= patience:
                self.reported.add(source)
                found.append((source, time - self.reference))
            else:
                still[source] = since
        self._suspect = still
        return found

    def saved(self) -> list:
        """Each source's newest time, as plain data (``state``)."""
        return [[source, time] for time, _, source in self._ranked]

    def came_behind(self) -> list:
        """The sources that came more than ``max_skew`` behind the newest (``solo_time``), as plain data
        (``state``): a line dated 1970 stays the suspect in the runs after it."""
        return [source for _, _, source in self._ranked if source in self._came_behind]

    def restore(self, saved: list, came_behind: list = ()) -> None:
        """Put back what ``saved`` and ``came_behind`` gave (``state``), replacing what is known."""
        newest = {}
        for source, time in saved:
            if not (source is None or isinstance(source, str)) or not isinstance(time, int):
                raise ValueError(f"not a source clock: {source!r}, {time!r}")
            newest[source] = time
        if not all(source is None or isinstance(source, str) for source in came_behind):
            raise ValueError("'came_behind' holds a source that is not a string")
        self._newest = newest
        self._ranked = SortedList((time, repr(source), source) for source, time in newest.items())
        self._ranked_changed()
        self._second = NEVER
        self._solo_source, self._solo_count, self._solo_second = None, 0, NEVER
        self._came_behind = {source for source in came_behind if source in newest}
        # who sent after whom is not saved: a source ahead in the state went ahead with nobody after it
        # (so said at that run's end when others had followed it), as its next events tell again
        self._went_ahead = None
        if len(self._ranked) > 1 and self.newest > self.reference + self.max_skew:
            self._went_ahead = [self._ranked[-1][2], self._arrivals + 1, 0]
        SourceClocks.emptiness_changes += 1
        if self.wall is not None:
            self.bound_by(self.wall)

    def times(self) -> dict:
        """Source -> its newest time, a copy."""
        return dict(self._newest)

    def __len__(self) -> int:
        return len(self._ranked)
