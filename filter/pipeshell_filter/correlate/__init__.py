"""The correlate stage, stateful: Detection records in, hits out.

One ``Correlator`` per ``CorrelationSpec`` (``correlator``: windows, watermark,
consume-on-fire), each with its window shape (``windows``).  ``Correlation``
routes each detection to the correlations that refer to its rule and moves
their watermarks: on each event, before the input blocks (``settle``), with
the wall clock on live input (``idle``) and at the end (``flush``).

Fed by many agents (``--stage correlate`` with heartbeats), the correlations'
time is the fleet's (``agents``): the least time of the agents still sending,
instead of the detections' own sources.

Correlations of correlations (``RuleRef.chained``): each hit of an inner
correlation is a detection for the outer ones (``alert_detections``): at its
window end, with the inner group values as its fields, and the fields the
outer ones need that the inner does not group by read from its events
(``carried_fields``; one detection per distinct set of their values).  The
correlators run inner first, and an outer one's watermark follows its inner
ones' (``Correlator.advance``).  Every hit is returned, inner ones too; which
become alerts is the engine's business (``generate``).
"""

from __future__ import annotations

import itertools
import time as _time
from collections import defaultdict
from typing import Callable, Iterable, List, Optional

from ..detect import Detection, kept_values
from ..events.timeparse import NS
from ..sigma.correlation import CorrelationSpec
from . import state as _state
from .agents import AgentClocks
from .correlator import DEFAULT_MAX_SKEW, MAX_HELD, NEVER, Correlator, Hit, give_back_memory
from .windows import group_of, spelled_group

# Seconds after which an agent that sent nothing counts as gone (``--agent-idle``).
DEFAULT_AGENT_IDLE = 60.0
# The correlations together hold at most this many events, each at most ``MAX_HELD``: 200 correlations
# over one rule held 100,000 events each (20 of them, 50,000 each of a flood of distinct users: 2.7 GB).
MAX_HELD_TOTAL = 2 * MAX_HELD
# The total is checked every ``HELD_CHECK // correlations`` detections, so that it costs little per
# detection, and goes past the cap by about this many events at most between checks.
HELD_CHECK = 16_384

__all__ = ["DEFAULT_AGENT_IDLE", "DEFAULT_MAX_SKEW", "Correlation", "Correlator", "Hit", "alert_detections",
           "carried_fields", "carried_into", "spelled_group"]


def alert_detections(hit: Hit, carried: tuple = (), along: tuple = ()) -> List[Detection]:
    """An inner correlation's hit as detections for the correlations chained to it: rule = the
    inner correlation's id, time = its window end (the time of its last event, but for a window a
    late event joined: the watermark it was evaluated at, which the outer one has not passed, so
    the hit is on time there), fields = its group values (under its group-by names).

    ``carried`` (``carried_into``): names the outer correlation groups by (or counts) that the
    inner one does not group by; their values are its events' (the first value of each, as
    group-by reads one; every value of an event that is itself an inner alert).  The hit is one
    detection per distinct set of those values among its events, so that it is in the outer group of
    each: the specification's failed logons grouped by computer, then a successful logon of the same
    user.  Each refers to its last event with those values; without ``carried``, one detection that
    refers to the hit's last event.  ``along``: names the outer correlation only passes on to those
    chained to it; each detection holds every distinct value of them among its events, unsplit (split by
    them, the outer correlation counted one hit once per value of a field it does not read), bounded as a
    Detection's values are (``kept_values``: as a restart reads them back from the state)."""
    spec = hit.spec
    grouped = {name: [value] for name, value in zip(spec.group_by, spelled_group(spec, hit.group, hit.contributions))
               if value is not None}
    last, kept = {}, {}  # the carried values -> the last event holding them (first-seen order); ``along``'s values
    for c in hit.contributions:  # in (time, arrival) order
        for values in itertools.product(*(_values(spec, c, name) for name in carried)):
            last[values] = c
            held = kept.setdefault(values, {name: {} for name in along})
            for name in along:
                held[name].update(dict.fromkeys(value for value in _values(spec, c, name) if value is not None))
    return [Detection(spec.id, hit.time, None, (0,),
                      dict(grouped, **{name: [value] for name, value in zip(carried, values) if value is not None},
                           **{name: kept_values(list(found)) for name, found in kept[values].items() if found}),
                      dict(c.detection.event))
            for values, c in last.items()]


def _values(spec: CorrelationSpec, c, name: str) -> list:
    """What an event gives ``alert_detections`` for ``name``: its first value (None when it has none),
    or every value, when the event is itself an inner alert (``along`` gave it all)."""
    values = c.detection.fields.get(spec.field_for(name, c.detection.rule)) or [None]
    return values if c.detection.rule in spec.chained else values[:1]


def _first(values):
    return values[0] if values else None


def carried_fields(specs: Iterable[CorrelationSpec]) -> dict:
    """Correlation id -> the names its alerts carry from their events (``alert_detections``): those
    the correlations chained to it group by or count (their aliases resolved) and it does not group
    by, and those they carry in turn.  The specification: "Even if the rule many_failed_logins groups
    by the "ComputerName" field, the correlation rule only uses its own group-by "User"."."""
    specs = _inner_first(list(specs))
    by_id = {spec.id: spec for spec in specs}
    carried = {}
    for spec in reversed(specs):  # outer first: what it carries is known before its inner ones are seen
        for inner_id in spec.chained:
            carried[inner_id] = tuple(dict.fromkeys(
                carried.get(inner_id, ()) + carried_into(spec, by_id[inner_id], carried.get(spec.id, ()))))
    return carried


def carried_into(outer: CorrelationSpec, inner: CorrelationSpec, outer_carries: tuple = ()) -> tuple:
    """The names an inner correlation's alerts carry for one outer correlation: those it reads and those
    it carries in turn (``outer_carries``), as the inner alert's events name them, less the inner
    group-by.  Its alerts are split by these alone (``alert_detections``): split by the union over every
    correlation chained to the inner one, an outer one counted one inner alert once per value of a field
    only another correlation read (two alerts where it had one, and it fired)."""
    wanted = (outer.field_for(name, inner.id) for name in outer.read_names + outer_carries)
    return tuple(dict.fromkeys(name for name in wanted if name not in inner.group_by))


def _inner_first(specs: list) -> list:
    """The specs ordered so that every correlation comes after those whose alerts it takes."""
    by_id = {spec.id: spec for spec in specs}
    order, placed, visiting = [], set(), set()
    for first in specs:
        stack = [(first, False)]
        while stack:
            spec, ready = stack.pop()
            if spec.id in placed:
                continue
            if ready:
                visiting.discard(spec.id)
                placed.add(spec.id)
                order.append(spec)
                continue
            if spec.id in visiting:
                raise ValueError(f"correlations refer to each other in a cycle through {spec.id!r}")
            visiting.add(spec.id)
            stack.append((spec, True))
            for inner in spec.chained:
                if inner not in by_id:
                    raise ValueError(f"correlation {spec.id!r} is chained to {inner!r}, which is not loaded")
                if inner not in placed:
                    stack.append((by_id[inner], False))
    return order


class Correlation:
    def __init__(self, specs: Iterable[CorrelationSpec], lateness_ns: int = 0,
                 clock: Callable[[], float] = _time.monotonic, max_skew_ns: int = DEFAULT_MAX_SKEW,
                 wall: Callable[[], int] = _time.time_ns):
        self.lateness_ns = lateness_ns
        self.max_skew_ns = max_skew_ns
        self.agents = None  # ``AgentClocks`` once an agent reported its progress (``progress``)
        self.clock = clock
        self.wall = wall
        self.correlators = [Correlator(spec, lateness_ns, max_skew_ns) for spec in _inner_first(list(specs))]
        self._behind_reported = set()
        self._resent_reported = set()  # correlations said to have taken late events sent again after a restart
        self._shed_reported = set()
        self._skewed = {}  # source -> "ahead" / "behind", as reported (for the stats record)
        self._past_wall = {}  # source -> how far past the wall clock it was found (``_own_clock_hint``)
        self._by_rule = defaultdict(list)  # rule id -> correlators that refer to it (inner first)
        by_id = {c.spec.id: c for c in self.correlators}
        carried = carried_fields(c.spec for c in self.correlators)
        for correlator in self.correlators:
            correlator.carried = carried.get(correlator.spec.id, ())
            for rule in dict.fromkeys(i for ref in correlator.spec.inputs if not ref.chained for i in ref.rule_ids):
                self._by_rule[rule].append(correlator)
            correlator.upstream = tuple(by_id[inner] for inner in correlator.spec.chained)
            correlator.carried_from = {inner.spec.id: carried_into(correlator.spec, inner.spec)
                                       for inner in correlator.upstream}
            correlator.along_from = {
                inner.spec.id: tuple(name for name in carried_into(correlator.spec, inner.spec, correlator.carried)
                                     if name not in correlator.carried_from[inner.spec.id])
                for inner in correlator.upstream}
        self._chained = [c for c in self.correlators if c.upstream]
        self._feeds_outer = {inner.spec.id for c in self._chained for inner in c.upstream}
        for correlator in self.correlators:
            correlator.feeds_outer = correlator.spec.id in self._feeds_outer
        self._pushed_by = self._pushers()
        self._push_route = [c for c in self.correlators if c.upstream or id(c) in self._pushed_by]
        self._route = {}  # rule id -> what a detection of it runs through, with chains: see ``observe``
        self._newest_wall = {id(c): 0.0 for c in self.correlators}  # wall clock when an event time last rose
        self.max_held_total = MAX_HELD_TOTAL
        self.shed_shared = 0  # events dropped because the correlations together held too many (``_share_cap``)
        self._shared_reported = False
        self._until_held_check = self._held_check_every = max(1, HELD_CHECK // max(1, len(self.correlators)))

    def _pushers(self) -> dict:
        """id(correlator) -> the chained correlators that depend on it, directly or through
        others: their time moves it on (``_push``)."""
        pushed_by, reached = {}, set()  # (inner, outer) ids: ``outer in list`` made a chain's start cubic
        for outer in self._chained:
            stack = list(outer.upstream)
            while stack:
                inner = stack.pop()
                if (id(inner), id(outer)) not in reached:
                    reached.add((id(inner), id(outer)))
                    pushed_by.setdefault(id(inner), []).append(outer)
                    stack.extend(inner.upstream)
        return pushed_by

    def _push(self) -> List[Hit]:
        """An inner correlation whose rules went quiet kept its watermark, and the outer one,
        whose time is the least of its inner ones', held every detection of its own rules (or
        alert of its other inner ones) from then on: a replay of hours of successful logons after
        one burst of failed ones was held to the state cap, which then shed the episode's events,
        and its alert was lost.  All come from one stream: a detection that arrives behind the
        time an outer correlation's own sources vouch for, or an inner one's watermark, is late
        whichever rule it meets.  So each inner correlation that had an event is moved on to the
        newest of those times (``wanted``, the inner watermarks) among the outer ones that depend
        on it; their hits feed the outer ones as ever."""
        if not self._pushed_by:
            return []
        hits, made = [], {}
        for correlator in self._push_route:  # inner first: their hits feed the outer ones
            found = self._feed(correlator, made)
            floor = max((max([outer.wanted] + [u.watermark for u in outer.upstream if u.heard()])
                         for outer in self._pushed_by.get(id(correlator), ())), default=NEVER)
            if correlator.upstream or (floor > correlator.watermark and correlator.heard()):
                found += correlator.advance(floor)
            self._made(correlator, found, made, hits)
        return hits

    def partition_key(self, detection) -> Optional[tuple]:
        """What a detection can be partitioned by across correlate processes: the group key of
        the one correlation that takes its rule, when that correlation groups by fields and is
        chained to no other (in either direction); None when one process must own it (no
        group-by, several correlations, chains).  A rule no correlation takes: its rule id and
        source (its alerts are its own, any process can make them)."""
        takers = self._by_rule.get(detection.rule)
        if not takers:
            return (detection.rule, detection.source)
        if len(takers) != 1:
            return None
        spec = takers[0].spec
        if not spec.group_by or spec.chained or spec.id in self._feeds_outer:
            return None
        return group_of(spec, detection)

    def wants(self, rule: str) -> bool:
        """Some correlation refers to this rule."""
        return rule in self._by_rule

    release_due = False  # a flood's memory went back during a block: once more after it (``release_memory``)

    def _after_flood(self) -> None:
        """A correlation's state shrank from a flood: return the memory, now that no frame of
        the correlator holds on to any of it."""
        if any(c.flood_gone for c in self.correlators):
            for c in self.correlators:
                if c.flood_gone:
                    c.compact()
                c.flood_gone = False
            give_back_memory()
            self.release_due = True

    def release_memory(self) -> None:
        """After a flood, between blocks of input: give memory back once more.  What the flood's
        last objects freed after ``_after_flood`` (the frames that still held them, the source
        clocks) waits in Python's free lists, each entry pinning an arena, until a full
        collection, which a heap that has grown rarely gets.  Measured on a 300,000-host flood:
        104 MB resident before this second release, 62 MB after."""
        if self.release_due:
            self.release_due = False
            give_back_memory()

    _deferred = False  # a correlator has early evaluations waiting for the end of an event (``end_event``)

    def observe(self, detection, defer_early: bool = False) -> List[Hit]:
        """Take one detection; ``defer_early``: more detections of the same event follow, and the
        early alerts it may complete wait for them (``end_event``)."""
        hits, made = [], {}
        takers = self._by_rule.get(detection.rule, ())
        for correlator in self._routed(detection.rule, takers):
            takes = not correlator.upstream or correlator in takers
            # the inner alerts this detection made and the detection itself are one event here: all are
            # taken before its early evaluation (fed first, an inner alert completed the window without it)
            waiting = correlator.deferred
            found = self._feed(correlator, made, evaluate=not takes) if correlator.upstream else []
            if takes:
                before = correlator.clocks.newest, correlator.newest
                found += correlator.observe(detection, defer=defer_early or bool(correlator.upstream))
                if correlator.upstream and not defer_early:
                    found += correlator.early_due(waiting)
                self._deferred = self._deferred or bool(correlator.deferred)
                if (correlator.clocks.newest, correlator.newest) != before:
                    self._newest_wall[id(correlator)] = self.clock()
            if correlator.upstream:  # its inner correlations may have moved on
                found += correlator.advance(NEVER)
            self._made(correlator, found, made, hits)
            if correlator.flood_gone:
                self._after_flood()
        self._until_held_check -= 1
        if not self._until_held_check:
            self._until_held_check = self._held_check_every
            self._share_cap()
        return hits + self._push()

    def _share_cap(self) -> None:
        """The correlations together hold more than ``max_held_total`` events: those holding the
        most drop their oldest (``Correlator.shed_one``) down to the one level at which the total fits,
        so a flood of one correlation takes no room from the quiet ones."""
        counts = [correlator.held_count() for correlator in self.correlators]
        if sum(counts) <= self.max_held_total:
            return
        level, room, left = 0, self.max_held_total, len(counts)
        for count in sorted(counts):  # the most each may hold: all below it whole, the rest at it
            if count * left > room:
                level = room // left
                break
            room, left = room - count, left - 1
        for correlator, count in zip(self.correlators, counts):
            for _ in range(count - level):
                correlator.shed_one()
                self.shed_shared += 1

    def end_event(self) -> List[Hit]:
        """Every detection of an event was taken: the early evaluations it deferred (inner first,
        their hits fed to the correlations chained to them)."""
        if not self._deferred:
            return []
        self._deferred = False
        hits, made = [], {}
        for correlator in self.correlators:
            found = self._feed(correlator, made) + correlator.early_due()
            self._made(correlator, found, made, hits)
        return hits

    def _routed(self, rule: str, takers) -> list:
        """The correlators a detection of ``rule`` goes through, inner first: those that take
        it, and every chained one (an inner one may fire)."""
        if not self._chained:
            return takers
        route = self._route.get(rule)
        if route is None:
            wanted = set(map(id, takers)) | set(map(id, self._chained))
            route = self._route[rule] = [c for c in self.correlators if id(c) in wanted]
        return route

    @staticmethod
    def _made(correlator: Correlator, found: List[Hit], made: dict, hits: List[Hit]) -> None:
        """A correlator's hits: returned, and made for the correlations chained to it, with the events
        that joined its episodes alerted early, which make no alert (``Correlator.take_joined``)."""
        joined = correlator.take_joined() if correlator.feeds_outer else []
        if found or joined:
            made[correlator.spec.id] = found + joined
            hits.extend(found)

    @staticmethod
    def _feed(correlator: Correlator, made: dict, evaluate: bool = True) -> List[Hit]:
        """Give a chained correlator the hits its inner correlations just made; its own hits that
        this made (early alerts, ``Correlator.early``).  A hit is one detection per distinct carried
        value, all at its time: the early evaluations wait for the whole hit, as for one event's
        detections (the first completed the outer window and alerted without the others).
        ``evaluate=False``: they wait for the caller (``early_due``), which has more of the event to give."""
        found = []
        for inner in correlator.upstream:
            for hit in made.get(inner.spec.id, ()):
                before = correlator.deferred  # an event's own detections may be waiting too
                for detection in alert_detections(hit, correlator.carried_from[inner.spec.id],
                                                  correlator.along_from[inner.spec.id]):
                    found += correlator.observe(detection, clocked=False, defer=True)
                if evaluate:
                    found += correlator.early_due(before)
        return found

    def alert_early(self) -> None:
        """Every correlation whose condition is monotone alerts on the event that completes a
        window, not when the watermark passes it (``Correlator.early``)."""
        for correlator in self.correlators:  # inner first; one chained to a late one waits as it does
            correlator.early = correlator.spec.monotone and all(inner.early for inner in correlator.upstream)

    # ------------------------------------------------------------ the fleet's time (``agents``)

    def follow_agents(self, idle: float, expected: int = 0) -> None:
        """From now on the watermark follows the agents' reports (``progress``), not the sources
        of the detections; an agent silent for ``idle`` seconds drops out; the time stays still
        until ``expected`` agents reported (or ``idle`` seconds passed)."""
        if self.agents is None:
            self.agents = AgentClocks(self.max_skew_ns, idle, self.clock, expected, self._agents_wall)
            for correlator in self.correlators:
                correlator.driven = True

    _agents_wall = None  # the wall clock that bounds the agents' times (``live``)

    def live(self) -> List[str]:
        """The input is live: an agent's time, and a source's, is believed only up to the wall clock
        plus ``max_skew`` (``AgentClocks.bound_by``, ``SourceClocks.bound_by``), those restored from
        the state too, and so is a restored watermark (``Correlator.forget_future``): the titles of
        the correlations whose watermark was not believed."""
        self._agents_wall = self.wall
        if self.agents is not None:
            self.agents.bound_by(self.wall)
        for correlator in self.correlators:
            correlator.clocks.bound_by(self.wall)
        return [c.spec.title for c in self.correlators if c.forget_future(self.wall() + self.max_skew_ns)]

    def progress(self, agent: str, time: int, idle: bool = False) -> List[Hit]:
        """An agent's heartbeat: the hits that became final as the fleet's time moved."""
        if self.agents is None:
            self.follow_agents(DEFAULT_AGENT_IDLE)
        if not self.agents.see(agent, time, idle):
            return []
        return self._follow(self.agents.frontier())

    def listen_by(self, clock: Callable[[], float]) -> None:
        """From now on the agents' silence and ``--idle`` are measured by ``clock`` (the fleet bus's:
        only the time in which a record could have come counts); it goes on from the current one."""
        self.clock = clock
        if self.agents is not None:
            self.agents.clock = clock

    def input_back(self, away: float) -> None:
        """The input was away ``away`` seconds and is back: that wall-clock time moves nothing.  No
        record could arrive, so no agent was silent and no source idle: counted as such, a bus outage
        longer than lateness + idle moved the watermark on, and the records the agents held through
        it came late, their windows closed (alerts lost, their hosts named as clocks behind)."""
        for correlator in self.correlators:
            self._newest_wall[id(correlator)] += away
        if self.agents is not None:
            self.agents.input_back(away)

    def _follow(self, frontier) -> List[Hit]:
        if frontier <= self._frontier:
            return []
        self._frontier = frontier
        now = self.clock()
        for correlator in self.correlators:
            self._newest_wall[id(correlator)] = now
        return self._advance(lambda c: frontier - self.lateness_ns)

    _frontier = NEVER  # the fleet's time as last followed

    def _newest(self, wall: int):
        """Correlator -> the newest time that is not suspect: the fleet's (worked out once), or
        that of the correlation's own sources."""
        if self.agents is not None:
            fleet = self.agents.frontier()
            return lambda c: fleet
        return lambda c: c.clocks.trusted_newest(wall)

    def settle(self) -> List[Hit]:
        """The input paused: close the newest watermark instant now.

        Normally only times strictly before the watermark are final, so a hit
        at the newest event time would wait for a newer event.  Before the
        stream blocks on input it settles: times at the watermark become final
        too (with ``--lateness 0`` the alert comes out at once), and an event
        arriving later with that same time is treated as late.  The newest time
        taken is the newest that is not suspect (``SourceClocks.trusted_newest``):
        a source far ahead of the others does not count.
        """
        newest = self._newest(self.wall())
        return self._advance(lambda c: newest(c) - self.lateness_ns + 1)

    def idle(self, idle_seconds: float) -> List[Hit]:
        """Wall-clock progress: after ``idle_seconds`` with no newer event time, the
        watermark moves on with the wall clock, so pending alerts come out."""
        now = self.clock()
        newest = self._newest(self.wall())
        if self.agents is not None:  # agents that went silent drop out: the fleet's time may move
            hits = self._follow(newest(None))
            if hits:
                return hits

        def watermark(c):
            waited = now - self._newest_wall[id(c)] - idle_seconds
            if waited <= 0:
                return None
            # from the newest time that is not suspect: a source far ahead of the others, or of the
            # wall clock, must not carry the watermark past the others' windows
            return newest(c) - self.lateness_ns + int(waited * NS)

        return self._advance(watermark)

    def flush(self) -> List[Hit]:
        """End of input: every pending window becomes final."""
        return self._advance(None, final=True)

    # ------------------------------------------------------------ state across restarts (``state``)

    def take_once(self) -> None:
        """Each event is taken once: a Detection the same as one taken (``state.identity``) is
        dropped, so an upstream that sends it again (at least once) cannot make an alert twice or
        count in one twice.  An identity is kept while its event could be in a window (``state.Seen``)."""
        for correlator in self.correlators:
            if correlator.seen is None:
                correlator.seen = _state.Seen(2 * correlator.max_held)  # what is held, and consumed episodes

    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.correlators)

    def duplicates_of(self, rule: str) -> int:
        """Those of ``duplicates`` in the correlations ``rule`` feeds directly: a cheap look before and after
        one of its Detections (``Engine.observe``)."""
        return sum(c.duplicates for c in self._by_rule.get(rule, ()))

    def snapshot(self) -> dict:
        """Every correlation's state as plain data, keyed by its stable id."""
        return {c.spec.id: _state.capture(c) for c in self.correlators}

    def restore(self, saved: dict) -> List[str]:
        """Take back a ``snapshot``; the state of a correlation that is no longer in the rule set,
        or whose definition changed, is discarded: the one-line message says so."""
        by_id = {c.spec.id: c for c in self.correlators}
        discarded = []
        for spec_id, data in saved.items():
            correlator = by_id.get(spec_id)
            if correlator is None or not _state.same_spec(correlator, data):
                discarded.append(spec_id)
                continue
            _state.restore(correlator, data)
            self._newest_wall[id(correlator)] = self.clock()
        if not discarded:
            return []
        named = ", ".join(repr(spec_id) for spec_id in discarded[:5]) + (", ..." if len(discarded) > 5 else "")
        return [f"discarded the saved state of {len(discarded)} correlation(s) no longer in the rule set "
                f"or changed: {named}"]

    def pause(self, quiet=frozenset()) -> List[Hit]:
        """End of input that is a pause (``--state``): the hits a flush finds now, while the
        windows stay open and the watermark where it was, the episodes of those hits consumed
        (``state.pause``).  ``quiet``: the correlations that make no alert (inner, without
        ``generate``).  When the chained correlations' hits are all quiet, the chains are left as they
        were: an inner episode consumed at the pause, with no alert to show for it, left out an event
        that came on time after the restart, and the outer alert differed from one run's."""
        chained = [c for c in self.correlators if c.upstream or c.feeds_outer]
        before = [(c, _state._kept(c)) for c in chained if len(c.clocks) or c.upstream or c.held_count()]
        hits, made = [], {}
        for correlator in self.correlators:  # inner first: their hits feed the outer ones
            found = self._feed(correlator, made)
            if len(correlator.clocks) or correlator.upstream or correlator.held_count():
                found += _state.pause(correlator)
            self._made(correlator, found, made, hits)
        ids = {c.spec.id for c in chained}
        if not any(hit.spec.id in ids and hit.spec.id not in quiet for hit in hits):
            for correlator, kept in before:
                _state._put_back(correlator, kept)
            hits = [hit for hit in hits if hit.spec.id not in ids]
        return hits

    def _advance(self, watermark_of, final: bool = False) -> List[Hit]:
        hits, made = [], {}
        for correlator in self.correlators:  # inner first: their hits feed the outer ones
            found = self._feed(correlator, made)
            if final and correlator.held_count():  # (events of sources past the wall clock only: no clock)
                found += correlator.flush()
            elif not len(correlator.clocks) and not correlator.upstream:
                continue  # no event yet: nothing pending
            elif final:
                found += correlator.flush()
            else:
                # a chained correlator follows its inner ones (and its own sources, if it has any)
                watermark = watermark_of(correlator) if len(correlator.clocks) else None
                if watermark is None:
                    if not correlator.upstream:
                        continue
                    watermark = NEVER
                found += correlator.advance(watermark)
            self._made(correlator, found, made, hits)
        if not final:
            hits += self._push()
        self._after_flood()
        return hits

    def skew_reports(self, final: bool = False) -> List[tuple]:
        """(kind, line): one per source newly seen to run ahead of the others (its events wait), or
        behind them (its events arrive too late to count), each reported once; and one per
        correlation that reached its state cap; once, a line of kind None when two sources are found past
        the wall clock by about as much (``_own_clock_hint``)."""
        lines = []
        now = self.clock()
        for agent, ahead in self.agents.ahead() if self.agents is not None else ():
            self._note_skewed(agent, "ahead")
            lines.append(("skewed_source", f"agent {agent!r} said its time was {ahead / NS:g} s past the wall clock: "
                          "not believed (a wrong clock or a forged heartbeat)"))
        for what, agent, value in self.agents.news() if self.agents is not None else ():
            if what == "silent":
                lines.append(("agent_silent", f"agent {agent!r} sent nothing for {value:.0f} s (--agent-idle): it no "
                              "longer holds the fleet's time back (stopped, or its link did); its events, should it "
                              "come back behind the others, arrive late"))
            elif what == "back":
                lines.append(("agent_silent", f"agent {agent!r} heard again after {value:.0f} s of silence"))
            else:
                lines.append(("agent_silent", f"only {agent} of the {value} agents of --agents reported within "
                              f"--agent-idle ({self.agents.idle:g} s): the fleet's time moves on without the others "
                              "(their events, should they come behind it, arrive late)"))
        for agent, lag in self.agents.lagging() if self.agents is not None else ():
            self._note_skewed(agent, "behind")
            lines.append(("skewed_source", f"agent {agent!r} is {lag / NS:g} s behind the other agents: left out "
                          "of the fleet's time (a wrong clock or a stuck pipeline); its events arrive late"))
        for correlator in self.correlators:
            title = correlator.spec.title
            for source, ahead in correlator.clocks.future():
                self._note_skewed(source, "ahead")
                lines.append(("skewed_source", f"source {source!r} is dated {ahead / NS:g} s past the wall clock: "
                              f"not believed, its events wait (a wrong clock or a forged line; rule {title})"))
                lines += self._own_clock_hint(source, ahead)
            for source, ahead in correlator.clocks.ahead(now, final):
                self._note_skewed(source, "ahead")
                lines.append(("skewed_source", f"source {source!r} is {ahead / NS:g} s ahead of the other sources: "
                              f"its events wait for the others (rule {title})"))
            for source, count in correlator.late_sources.items():
                if (id(correlator), source) not in self._behind_reported and len(self._behind_reported) < 100_000:
                    self._behind_reported.add((id(correlator), source))
                    self._note_skewed(source, "behind")
                    behind = "the other sources" if self.agents is None else \
                        "the fleet's time (the least of its agents' heartbeats; an agent's lines dated ahead carry it)"
                    lines.append(("skewed_source", f"source {source!r} is behind {behind}: {count} of its "
                                  f"events came too late to count (rule {title})"))
            if correlator.late_resent and id(correlator) not in self._resent_reported:
                self._resent_reported.add(id(correlator))
                lines.append(("late_resent", f"rule {title}: events older than their host's last time in the "
                              "saved state came after the restart, too late to count (sent again by the shipper?); "
                              "counted late, their hosts not named behind"))
            if correlator.capped and id(correlator) not in self._shed_reported:
                self._shed_reported.add(id(correlator))
                lines.append(("state_cap", f"rule {title}: more than {correlator.max_held} events held for "
                              "correlation; the oldest are dropped from it (a flood?)"))
        if self.shed_shared and not self._shared_reported:
            self._shared_reported = True
            lines.append(("state_cap", f"the {len(self.correlators)} correlations together held more than "
                          f"{self.max_held_total} events; those holding the most drop their oldest (a flood?)"))
        return lines

    MAX_SKEWED = 1000  # sources remembered by name for the stats record

    def _own_clock_hint(self, source, ahead: int) -> List[tuple]:
        """Once, when a second source is found past the wall clock by about as much as another: perhaps
        it is this machine's clock that is behind.  Said, not acted on: times past the wall clock are
        not believed whoever is wrong, as two forged hosts could agree too, and until the clock is put
        right no correlation alerts before the end of input.  (None: a line, not a counted kind.)"""
        if self._past_wall is None:
            return []
        if len(self._past_wall) < self.MAX_SKEWED:
            self._past_wall[source] = ahead
        agreeing = sorted(t for other, t in self._past_wall.items()
                          if other != source and abs(t - ahead) <= self.max_skew_ns)
        if not agreeing:
            return []
        self._past_wall = None
        low, high = min(agreeing[0], ahead), max(agreeing[-1], ahead)
        return [(None, f"{len(agreeing) + 1} sources are dated {low / NS:g}-{high / NS:g} s past this machine's "
                       "clock: if it is this machine's clock that is behind (check its time sync), their events wait "
                       "and no correlation alerts before the end of input")]


    def _note_skewed(self, source, how: str) -> None:
        if source in self._skewed or len(self._skewed) < self.MAX_SKEWED:
            self._skewed[source] = how

    def skewed_sources(self) -> dict:
        """Source -> "ahead" or "behind": every source reported with a wrong clock so far."""
        return dict(self._skewed)

    def held(self) -> int:
        """Events held in open windows or waiting for the watermark, over every correlation."""
        return sum(correlator.held_count() for correlator in self.correlators)

    def late_counts(self) -> dict:
        return {"late": sum(c.late for c in self.correlators),
                "late_dropped": sum(c.late_dropped for c in self.correlators),
                "shed": sum(c.shed for c in self.correlators)}
