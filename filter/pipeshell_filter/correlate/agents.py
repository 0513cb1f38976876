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

An agent ahead of the others cannot move the minimum.  An agent not heard from
yet cannot hold it back either, so when agents may start at different times
(a backfill, a correlator that starts first) the number to wait for is given
(``expected``): the fleet's time stays still until that many have reported,
or ``idle`` seconds have passed.  With one agent its own
time is all there is (its detect stage bounds it by the wall clock on live
input).
"""

from __future__ import annotations

import time as _time
from typing import Callable, Dict, List, Optional

from ..detect import Heartbeat

NEVER = float("-inf")
MAX_AGENTS = 100_000  # agents remembered; past it, the one silent longest is forgotten


class AgentClocks:
    def __init__(self, max_skew_ns: int, idle: float, clock: Callable[[], float] = _time.monotonic,
                 expected: int = 0):
        self.max_skew = max_skew_ns
        self.idle = idle
        self.clock = clock
        self.expected = expected
        self._started = clock()
        self._time: Dict[str, int] = {}  # agent -> newest time it reported
        self._heard: Dict[str, float] = {}  # agent -> wall clock of its last record, least recent first
        self._idle = set()  # agents whose last report said their input is idle
        self._behind: Dict[str, int] = {}  # agents left out for lagging, and by how much (ns), not yet reported
        self._lagging_since: Dict[str, float] = {}  # agent -> wall clock since when it is far behind
        self._reported = set()
        self.last = NEVER  # the frontier as last worked out

    def see(self, agent: str, time: int, idle: bool = False) -> bool:
        """Take an agent's report; True when the fleet's time may have moved (the agent was at
        or behind it, is new, or became idle): only then is it worth working out again."""
        old = self._time.get(agent)
        if old is None or time > old:
            self._time[agent] = time
            self._idle.discard(agent)
        if idle and agent not in self._idle:
            self._idle.add(agent)
            old = NEVER
        self._heard.pop(agent, None)
        self._heard[agent] = self.clock()
        if len(self._heard) > MAX_AGENTS:
            gone = next(iter(self._heard))
            del self._heard[gone], self._time[gone]
            self._idle.discard(gone)
        return old is None or old <= self.last

    def active(self) -> List[str]:
        """The agents heard from within ``idle`` seconds, and not idle by their own word."""
        since = self.clock() - self.idle
        return [agent for agent, heard in self._heard.items() if heard >= since and agent not in self._idle]

    def frontier(self):
        """The fleet's time: the least time of the active agents that are not far behind; when
        every agent is quiet, the newest time any reached (what they sent is all there is)."""
        if not self._time or (len(self._time) < self.expected and self.clock() - self._started < self.idle):
            return NEVER
        active = self.active()
        if not active:
            self.last = max(self._time.values())
            return self.last
        times = sorted((self._time[agent] for agent in active), reverse=True)
        vouched = times[1] if len(times) > 1 else times[0]
        now, since, lagging = self.clock(), self._lagging_since, {}
        for agent in active:
            lag = vouched - self._time[agent]
            if lag <= self.max_skew:
                continue
            lagging[agent] = since.get(agent, now)
            if now - lagging[agent] >= self.idle:  # not a backlog being caught up: left out
                if agent not in self._reported:
                    self._behind[agent] = lag
            else:
                vouched = min(vouched, self._time[agent] + self.max_skew)  # still waited for
        self._lagging_since = lagging
        floor = vouched - self.max_skew
        self.last = min(t for t in times if t >= floor)
        return self.last

    def lagging(self) -> List[tuple]:
        """(agent, how far behind in ns) of the agents newly seen far behind; each reported once."""
        found = list(self._behind.items())
        self._reported.update(self._behind)
        self._behind = {}
        return found

    def saved(self) -> list:
        return [[agent, time] for agent, time in self._time.items()]

    def restore(self, saved: list) -> None:
        """Take back ``saved`` (``state``): each agent counts as just heard from."""
        now = self.clock()
        for agent, time in saved:  # checked by ``state.decode``
            self._time[agent] = time
            self._heard[agent] = now


class Progress:
    """How far one agent's input has got, and when to say so (``--heartbeat``).

    The agent's time is the newest event time it has read; on live input none further
    than ``max_skew`` past the wall clock is believed (a host with a clock in the future
    must not carry the fleet's time there).  Within one agent there is no telling a
    host whose clock runs ahead from hosts that went quiet, so the judgement across
    hosts is the fleet's: an agent ahead of the others cannot move their least time.
    A heartbeat is due when the agent's time has moved ``every`` seconds past the last
    one sent (deterministic on a file), and on live input also when ``every`` seconds
    of wall clock passed without one (``quiet``).
    """

    def __init__(self, agent: str, every: float, max_skew_ns: int, wall=None, clock=_time.monotonic):
        self.agent = agent
        self.every = every
        self.every_ns = int(every * 1e9)
        self.max_skew = max_skew_ns
        self.wall = wall  # on live input: the wall clock in ns
        self.clock = clock
        self.newest = None  # the agent's time
        self._sent = None  # time of the last heartbeat
        self._sent_at = self.clock()

    def see(self, time: Optional[int]) -> Optional[Heartbeat]:
        if time is None or (self.newest is not None and time <= self.newest):
            return None
        if self.wall is not None and time > self.wall() + self.max_skew:
            return None
        self.newest = time
        if self._sent is None or time - self._sent >= self.every_ns:
            return self._beat()
        return None

    def quiet(self) -> Optional[Heartbeat]:
        """Live input that waits: an idle heartbeat every ``every`` seconds, so that the agent is not
        counted gone, nor holds the fleet's time back while it has nothing to say."""
        if self.newest is None or self.clock() - self._sent_at < self.every:
            return None
        return self._beat(idle=True)

    def last(self) -> Optional[Heartbeat]:
        """End of input: the agent's final time, when it moved since the last heartbeat."""
        return self._beat() if self.newest is not None and self.newest != self._sent else None

    def _beat(self, idle: bool = False) -> Heartbeat:
        self._sent, self._sent_at = self.newest, self.clock()
        return Heartbeat(self.agent, self.newest, idle)
