"""The fleet's time: each agent says how far it got, the correlate stage takes the least.

Both halves of the heartbeat protocol live here: ``Progress`` on the agent (a
``--stage match``), deciding what time to vouch for and when; ``AgentClocks``
in the ``--stage correlate`` that many agents feed.

With ``--stage correlate`` fed by many agents (each a ``--stage match``), the
correlate stage no longer has to guess time from the detections alone, which
are rare: every agent says how far its input has got (``detect.Heartbeat``).
Each agent keeps its own order within the lateness, so nothing it sends from
now on is older than its time minus the lateness, and the fleet's time is the
**least** agent time: no agent's on-time event can arrive behind the
watermark.  That is the per-partition watermark of Flink and Kafka Streams.

Two things must not hold the fleet's time back for ever:

* an agent that says it is idle (its live input brought nothing new), or that
  went silent (no record for ``idle`` seconds of wall clock: it stopped or
  its link did), drops out of the minimum until it sends a newer time;
* an agent whose time has stayed more than ``max_skew`` behind the newest time
  two agents vouch for, for ``idle`` seconds of wall clock, is a wrong clock or
  a stuck pipeline: it drops out too, and is reported by name (its events
  arrive late and are counted as such).  An agent catching up on a backlog
  moves faster than that, and is waited for.

An agent ahead of the others cannot move the minimum, and no agent's time
counts more than ``max_skew`` past what something else vouches for, so that one
forged heartbeat, even under a real agent's name, cannot carry the fleet's time
into the future (every later event would be late): on live input a report
dated past the wall clock by more than that is not believed at all (as an
agent's own ``Progress`` does), and without a wall clock to check against, the
fleet's time goes no further than ``max_skew`` past the second newest agent
time, and an agent time that far ahead of every other is replaced by the
agent's next report, older or not.  An agent not heard from
yet cannot hold it back either, so when agents may start at different times
(a backfill, a correlator that starts first) the number to wait for is given
(``expected``): the fleet's time stays still until that many have reported,
or ``idle`` seconds have passed.  With one agent its own
time is all there is (its detect stage bounds it by the wall clock on live
input).
"""

from __future__ import annotations

import time as _time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional

from sortedcontainers import SortedList

from ..detect import Heartbeat, within

NEVER = float("-inf")
MAX_AGENTS = 100_000  # agents remembered; past it, the one silent longest is forgotten


class AgentClocks:
    """The least time of the agents, kept up to date report by report.

    With thousands of agents a report must not cost a pass over all of them (a
    fleet that starts, or a flood of agent names, would take time quadratic in
    their number), so the agents are kept in sorted lists by time and a report
    or a ``frontier`` costs a logarithm, plus the agents whose standing changed:

    * ``_in``: the active agents (heard within ``idle`` seconds, not idle) that
      count, the least of them being the fleet's time;
    * ``_out``: active agents left out for lagging longer than ``idle``;
    * ``_waiting``: agents of ``_in`` behind the line (the newest time two agents
      vouch for, less ``max_skew``) since when they were first seen there, oldest
      first; ``_waiting_times`` the same agents by time.
    """

    def __init__(self, max_skew_ns: int, idle: float, clock: Callable[[], float] = _time.monotonic,
                 expected: int = 0, wall: Optional[Callable[[], int]] = None):
        self.max_skew = max_skew_ns
        self.idle = idle
        self.clock = clock
        self.expected = expected
        self.wall = wall  # on live input: the wall clock in ns (``bound_by``)
        self._started = clock()
        self._time: Dict[str, int] = {}  # agent -> newest time it reported
        self._heard: "OrderedDict[str, float]" = OrderedDict()  # agent -> wall clock of its last record
        self._live: "OrderedDict[str, float]" = OrderedDict()  # the same, for those heard within ``idle``
        self._idle = set()  # agents whose last report said their input is idle
        self._everyone = SortedList()  # (time, agent) of every agent remembered
        self._in = SortedList()
        self._out = SortedList()
        self._left_out = set()  # the agents of ``_out``
        self._waiting: "OrderedDict[str, float]" = OrderedDict()
        self._waiting_times = SortedList()
        self._changed = set()  # agents reported since the last ``frontier``
        self._line = None  # the line as last worked out
        self._behind: Dict[str, int] = {}  # agents left out for lagging, and by how much (ns), not yet reported
        self._reported = set()
        self._ahead: Dict[str, int] = {}  # agents whose time was not believed, and by how much (ns) past the wall
        self._ahead_reported = set()
        self.last = NEVER  # the frontier as last worked out
        # what the user is told once each (``news``): agents gone silent and when they were last heard,
        # those heard again after that and how long they were silent, and the wait for ``expected``
        self._silent: Dict[str, float] = {}
        self._news: List[tuple] = []
        self._expected_told = False

    def see(self, agent: str, time: int, idle: bool = False) -> bool:
        """Take an agent's report; True when the fleet's time may have moved (the agent was at
        or behind it, is new, or became idle): only then is it worth working out again."""
        if self.wall is not None:
            past = time - self.wall() - self.max_skew
            if past > 0:  # a clock in the future, or a forged report: as if never sent
                if agent not in self._ahead_reported and len(self._ahead_reported) < MAX_AGENTS:
                    self._ahead.setdefault(agent, past + self.max_skew)
                return False
        old = self._time.get(agent)
        # an agent time nothing vouches for (taken when nothing could check it) gives way to its next report
        newer = old is None or time > old or (time < old and old > self._limit(agent))
        # an idle report older than the agent's time was sent again or came late (a shipper's retry): the
        # agent has read on since, and may hold records (it took the agent out, and its records came late)
        idle = idle and (newer or time >= old)
        self._leave(agent, waiting=idle or (agent in self._idle and not newer))  # idle: no longer active
        if newer:
            if old is not None:
                self._everyone.remove((old, agent))
            self._everyone.add((time, agent))
            self._time[agent] = time
            self._idle.discard(agent)
        if idle and agent not in self._idle:
            self._idle.add(agent)
            old = NEVER
        now = self.clock()
        if agent in self._silent:
            self._news.append(("back", agent, now - self._silent.pop(agent)))
        for heard in (self._heard, self._live):
            heard[agent] = now
            heard.move_to_end(agent)
        if agent not in self._idle:
            self._join(agent)
        if len(self._heard) > MAX_AGENTS:
            self._forget(next(iter(self._heard)))
        return old is None or old <= self.last or self.last == NEVER  # NEVER: not worked out (a restore)

    def input_back(self, away: float) -> None:
        """The correlate stage's input was away ``away`` seconds: no agent could be heard, so that
        time is no agent's silence (every agent counts as heard that much later, in the same order),
        nor time spent behind.  And an agent that said it was idle may have read records since, which
        it holds until the bus is back: it counts with its time again until it says so anew (within a
        heartbeat), or the first agent back carried the fleet's time past the records the others held."""
        for heard in (self._heard, self._live):
            for agent in heard:
                heard[agent] += away
        self._started += away
        for agent in self._waiting:
            self._waiting[agent] += away
        for agent in list(self._idle):
            self._idle.discard(agent)
            if agent in self._live:
                self._join(agent)

    def _forget(self, agent: str) -> None:
        self._leave(agent, waiting=True)
        del self._heard[agent]
        self._live.pop(agent, None)
        self._everyone.remove((self._time.pop(agent), agent))
        self._idle.discard(agent)
        self._changed.discard(agent)
        self._silent.pop(agent, None)
        self._reported.discard(agent)  # a flood of names left out behind grew it for good

    def _limit(self, agent: str):
        """The newest time ``agent`` may count for: ``max_skew`` past the wall clock (live input), or
        past the newest time of another agent; without either, no limit."""
        if self.wall is not None:
            return self.wall() + self.max_skew
        top = self._everyone[-2:]
        others = [time for time, name in top if name != agent]
        return others[-1] + self.max_skew if others else float("inf")

    def bound_by(self, wall: Callable[[], int]) -> None:
        """Live input from now on: no report past ``wall()`` by more than ``max_skew`` is believed,
        and an agent time restored from the state that is (a forged heartbeat a run took before
        this check) is forgotten: the agent's next report gives its time."""
        self.wall = wall
        limit = wall() + self.max_skew
        for time, agent in list(self._everyone.irange((limit, "\U0010ffff"))):
            if time > limit:
                self._forget(agent)
                self._ahead.setdefault(agent, time - limit + self.max_skew)

    def _join(self, agent: str) -> None:
        """``agent`` is active again, with its time: among those that count, unless it was left
        out and is still far behind (``frontier`` decides)."""
        self._changed.add(agent)
        if agent in self._left_out:
            self._out.add((self._time[agent], agent))
        else:
            self._in.add((self._time[agent], agent))
            if agent in self._waiting:
                self._waiting_times.add((self._time[agent], agent))

    def _leave(self, agent: str, waiting: bool = False) -> None:
        """Take ``agent`` out of the sorted lists: before its time changes, keeping its standing
        among the waiting and the left out, or (``waiting=True``) as it stops being active."""
        time = self._time.get(agent)
        if time is None or agent not in self._live or agent in self._idle:
            return
        if agent in self._left_out:
            self._out.remove((time, agent))
            if waiting:
                self._left_out.discard(agent)
        else:
            self._in.remove((time, agent))
            if agent in self._waiting:
                self._waiting_times.remove((time, agent))
                if waiting:
                    del self._waiting[agent]

    def active(self) -> List[str]:
        """The agents heard within ``idle`` seconds, and not idle by their own word."""
        since = self.clock() - self.idle
        return [agent for _, agent in self._in + self._out if self._live.get(agent, since - 1) >= since]

    def _forget_silent(self) -> None:
        since = self.clock() - self.idle
        while self._live:
            agent, heard = next(iter(self._live.items()))
            if heard >= since:
                break
            self._leave(agent, waiting=True)
            del self._live[agent]
            self._silent[agent] = heard
            self._news.append(("silent", agent, self.clock() - heard))

    def frontier(self):
        """The fleet's time: the least time of the active agents that are not far behind; when
        every agent is quiet, the newest time any reached (what they sent is all there is).
        Either way no further than ``max_skew`` past the newest time two agents vouch for (on
        live input, when some agents are active, the wall clock vouches instead: ``see``): one
        agent with a clock in the future (or one forged heartbeat) must not carry it there.

        An agent is far behind when its time is more than ``max_skew`` behind the newest time
        two agents vouch for (the line); it is waited for ``idle`` seconds of wall clock (a
        backlog being caught up), then left out (a wrong clock, a stuck pipeline) and named."""
        if not self._time or (len(self._time) < self.expected and self.clock() - self._started < self.idle):
            return NEVER
        self._forget_silent()
        if not self._in and not self._out:  # one agent's time counts only so far past two agents'
            self._changed.clear()
            self.last = self._everyone[-1][0]
            if len(self._everyone) > 1:
                self.last = min(self.last, self._everyone[-2][0] + self.max_skew)
            return self.last
        top = sorted(self._in[-2:] + self._out[-2:])
        vouched = top[-2][0] if len(top) > 1 else top[-1][0]  # the newest time two agents vouch for
        line = vouched - self.max_skew
        now = self.clock()
        for time, agent in list(self._out.irange((line,))):  # no longer behind: counts again
            self._out.remove((time, agent))
            self._left_out.discard(agent)
            self._in.add((time, agent))
        for time, agent in list(self._waiting_times.irange((line,))):  # caught up
            self._waiting_times.remove((time, agent))
            del self._waiting[agent]
        newly = self._changed
        if self._line is not None and line > self._line:
            newly = newly | {agent for _, agent in self._in.irange((self._line,), (line,), (True, False))}
        for agent in newly:
            time = self._time.get(agent)
            if (time is not None and time < line and agent not in self._waiting and agent not in self._left_out
                    and (time, agent) in self._in):
                self._waiting[agent] = now
                self._waiting_times.add((time, agent))
        self._changed = set()
        self._line = line
        while self._waiting:
            agent, since = next(iter(self._waiting.items()))
            if now - since < self.idle:
                break
            del self._waiting[agent]
            time = self._time[agent]
            self._waiting_times.remove((time, agent))
            self._in.remove((time, agent))
            self._out.add((time, agent))
            self._left_out.add(agent)
            if agent not in self._reported:
                self._behind[agent] = vouched - time
        self.last = self._in[0][0]
        if self.wall is None and len(self._everyone) > 1:  # one agent's time, as when all are quiet
            self.last = min(self.last, self._everyone[-2][0] + self.max_skew)
        return self.last

    def news(self) -> List[tuple]:
        """What to tell the user, once each, since the last call: ("silent", agent, seconds) for an agent
        that sent nothing for ``idle`` seconds (it no longer holds the fleet's time back), ("back",
        agent, seconds) for one heard again after that, and ("expected", agents heard, ``expected``)
        when the wait for ``expected`` agents ended with fewer.  Each was dropped in silence."""
        self._forget_silent()
        if (self.expected and not self._expected_told and len(self._time) < self.expected
                and self.clock() - self._started >= self.idle):
            self._expected_told = True
            self._news.append(("expected", len(self._time), self.expected))
        found, self._news = self._news, []
        return found

    def lagging(self) -> List[tuple]:
        """(agent, how far behind in ns) of the agents newly seen far behind; each reported once."""
        found = list(self._behind.items())
        self._reported.update(agent for agent in self._behind if agent in self._time)  # (not one forgotten)
        self._behind = {}
        return found

    def ahead(self) -> List[tuple]:
        """(agent, how far past the wall clock in ns) of the agents newly found with a time not
        believed (``bound_by``); each reported once."""
        found = list(self._ahead.items())
        self._ahead_reported.update(self._ahead)
        self._ahead = {}
        return found

    def saved(self) -> list:
        return [[agent, time] for agent, time in self._time.items()]

    def restore(self, saved: list) -> None:
        """Take back ``saved`` (``state``): each agent counts as just heard from."""
        for agent, time in saved:  # checked by ``state.decode``
            self.see(agent, time)


class Progress:
    """How far one agent's input has got, and when to say so (``--heartbeat``).

    The agent's time is the newest time two of the event times it has read reached, as a
    lone source's time is in ``SourceClocks``: one line dated in the future (a forged line, a
    host's clock jump) must not carry it there, since with one agent the fleet's time is its
    time (one line dated 280 s ahead on a live pipe, or a day ahead in a replay, made every
    later event of a one-minute correlation late: 0 alerts, where ``--stage all`` gave them).
    On live input none further than ``max_skew`` past the wall clock is believed at all, and none
    past it carries the agent's time (two lines of a host minutes fast made the others late).  At
    the end and when idle, the newest time read: no later event of the agent can vouch for
    it, and its lines read so far are on time whatever it is (one line in 64 KiB of skipped
    input is read for the time, so two read times may be minutes apart).  Within one agent
    there is no telling a host whose clock runs ahead from hosts that went quiet, so the
    judgement across hosts is the fleet's: an agent ahead of the others cannot move their
    least time.
    A line outside ``--from``/``--to`` (``between``) gives no time, matched or not, whatever the
    prefilter let through: one process takes none from it (its clock moves on Detections in the
    range), and two lines dated a day past ``--to`` made half the events after them late.
    A heartbeat is due when the agent's time has moved ``every`` seconds past the last
    one sent (deterministic on a file), and on live input also when ``every`` seconds
    of wall clock passed without one (``quiet``).
    """

    def __init__(self, agent: str, every: float, max_skew_ns: int, wall=None, clock=_time.monotonic,
                 between: Optional[tuple] = None):
        self.agent = agent
        self.between = between  # ``--from``/``--to``: (first, end) in ns, either None
        self.every = every
        self.every_ns = int(every * 1e9)
        self.max_skew = max_skew_ns
        self.wall = wall  # on live input: the wall clock in ns
        self.clock = clock
        self.newest = None  # the newest event time read
        self.vouched = None  # the newest time two of them reached: the agent's time
        self.read = 0  # event times read, in the range or not (``early``)
        self._sent = None  # time of the last heartbeat
        self._sent_at = self.clock()

    def see(self, time: Optional[int]) -> Optional[Heartbeat]:
        if time is None or (self.wall is not None and time > self.wall() + self.max_skew):
            return None
        self.read += 1
        if self.between is not None and not within(time, self.between):
            return None
        if self.newest is None:
            self.newest = time
            return None
        reached, self.newest = min(self.newest, time), max(self.newest, time)
        if self.wall is not None:  # two lines of a host minutes fast (within max_skew) carried it past the
            reached = min(reached, self.wall())  # wall clock: the hosts on time after them came late
        if self.vouched is not None and reached <= self.vouched:
            return None
        self.vouched = reached
        if self._sent is None or reached - self._sent >= self.every_ns:
            return self._beat(reached)
        return None

    @property
    def early(self) -> bool:
        """Fewer than two event times read yet: the lines the prefilter skips are read for them.  Those
        outside the range count, so that a hunt starting past a long archive's head is not slower
        (every line before ``--from`` was parsed)."""
        return self.read < 2

    def quiet(self) -> Optional[Heartbeat]:
        """Live input that waits: an idle heartbeat every ``every`` seconds, so that the agent is not
        counted gone, nor holds the fleet's time back while it has nothing to say."""
        if self.newest is None or self.clock() - self._sent_at < self.every:
            return None
        return self._beat(self.newest if self.wall is None else min(self.newest, self.wall()), idle=True)

    def last(self) -> Optional[Heartbeat]:
        """End of input: the agent's final time, when it moved since the last heartbeat."""
        return self._beat(self.newest) if self.newest is not None and self.newest != self._sent else None

    def _beat(self, time: int, idle: bool = False) -> Heartbeat:
        self._sent, self._sent_at = time, self.clock()
        return Heartbeat(self.agent, time, idle)
