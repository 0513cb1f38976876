"""Which of the fields its rules need each route's events carry: the blind rules of ``--rule-stats``.

A rule whose fields the collector never delivers (renamed by a Winlogbeat module script, a field map
missing, a collector option off) can never fire, and matching alone says nothing of it.  Per route (the
detector's routing key: what an event tells of its log source, and its EventID) this counts the events
and looks, in a sample of them, for each field the routed rules' conditions need there
(``Plan.fields_needed_by``) until it is found once; a field found is not looked for again in that
route, so once all are, an event costs a dictionary lookup and an addition.

The sample is the first ``FIRST`` events of each route, then those whose line's CRC-32 is a multiple
of ``EVERY`` (about one in 64): a function of the line, not of the order lines come in, so that
detecting workers, each reading part of a file, together sample the events one process would
(``begin_block``, ``end_block`` and ``merge``: a worker reports, per block, what it found in each
event it looked at and where that event stands in its route, and the parent keeps what one process
would have).  "Never seen" is therefore "absent from every sampled event": a field a route's events
carry only rarely after its first 256 may be missed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Dict, Optional
from zlib import crc32

from .values import MISSING

FIRST = 256  # every event of a route up to this many is looked at
EVERY = 64  # then about one in this many (by its line's CRC-32)
MAX_ROUTES = 4096  # routes whose fields are looked for; events of more are only counted (hostile input)


class _Route:
    __slots__ = ("routed", "event_ids", "fields", "count", "seen", "unseen")

    def __init__(self, routed: frozenset, event_ids, fields: frozenset):
        self.routed, self.event_ids, self.fields = routed, event_ids, fields
        self.count = 0
        self.seen = set()
        self.unseen = tuple(sorted(fields))


class Coverage:
    """Per route, how many events came and which of the needed fields a sampled one carried."""

    def __init__(self, plans):
        self.plans = list(plans)
        self.routes: Dict[object, _Route] = {}
        self.unkeyed = Counter()  # routed rules -> events of a route too big to key, or past MAX_ROUTES
        self._needed = {}  # (rule position, EventIDs or None) -> Plan.fields_needed_by
        self._block = None  # a detecting worker's block: routing key -> [route, its events' lines, finds]
        self._block_unkeyed = None
        # a detecting worker's routes past MAX_ROUTES, for its block only: the parent, which keeps the file's
        # first routes, not this worker's, may have one (the other worker met it first)
        self._block_routes = None
        self.line = 0  # a detecting worker's line being read, counted from its block's first (``io.stream``)
        # a worker's block merged: its events, (line, [key, routed, EventIDs, finds, events of the route
        # counted in]) in the block's order, and their lines; those before ``_settled`` are counted in
        self._pending, self._pending_lines, self._settled = [], [], 0

    def needed(self, position: int, event_ids, keep: bool = True) -> frozenset:
        """The fields rule ``position`` needs of an event with these EventIDs, worked out once (but for
        EventIDs past ``MAX_ROUTES`` routes, not ``keep``: hostile input may invent any number)."""
        plan = self.plans[position]
        guarded = plan.guarded_by_event_id
        key = (position, event_ids if guarded else None)
        found = self._needed.get(key)
        if found is None:
            found = plan.fields_needed_by(event_ids)
            if keep or not guarded:
                self._needed[key] = found
        return found

    def _route(self, key, routed: frozenset, event_ids) -> Optional[_Route]:
        if key is None:
            return None
        if len(self.routes) >= MAX_ROUTES:
            if self._block_routes is None:
                return None
            route = self._block_routes.get(key)  # past the limit: no EventIDs of hostile input kept beyond a block
            if route is None:
                fields = frozenset().union(*(self.needed(position, event_ids, False) for position in routed))
                route = self._block_routes[key] = _Route(routed, event_ids, fields)
            return route
        fields = frozenset().union(*(self.needed(position, event_ids) for position in routed))
        route = self.routes[key] = _Route(routed, event_ids, fields)
        return route

    def see(self, view, key, routed: frozenset, text: Optional[bytes] = None) -> None:
        """One event, routed by ``key`` (None: too big to keep) to the rules ``routed``; ``text``: its line."""
        if not routed:
            return
        route = self.routes.get(key)
        if route is None:
            route = self._route(key, routed, view.folded("EventID"))
            if route is None:
                self.unkeyed[routed] += 1
                if self._block_unkeyed is not None:
                    self._block_unkeyed[routed] += 1
                return
        count = route.count
        route.count = count + 1
        block = self._block
        if block is not None:
            noted = block.get(key)
            if noted is None:
                noted = block[key] = [route, [], []]
            ordinal = len(noted[1])
            noted[1].append(self.line)
        if not route.unseen:
            return
        if count >= FIRST:
            sampled = count % EVERY == 0 if text is None else crc32(text) % EVERY == 0
            if not sampled:
                return
        else:  # a worker's count is its own: an event among its first may be past the file's first
            # FIRST, where one process takes it by its CRC only, which the parent must be told
            sampled = block is not None and text is not None and crc32(text) % EVERY == 0
        get = view.get
        found = tuple(field for field in route.unseen if get(field) is not MISSING)
        if not found:
            return
        if block is None or sampled:  # a worker's own first events may not be the file's first: the parent says
            route.seen.update(found)
            route.unseen = tuple(field for field in route.unseen if field not in route.seen)
        if block is not None:
            noted[2].append((ordinal, found, sampled))

    # ------------------------------------------------------------ detecting workers (``io.parallel``)

    def begin_block(self) -> None:
        self._block, self._block_unkeyed, self._block_routes = {}, Counter(), {}

    def end_block(self) -> list:
        """What a worker saw in the block since ``begin_block``, for the parent's ``merge``: per route,
        ``(key, routed, EventIDs, the block's lines of its events, [(its position among them, fields found,
        sampled by CRC)])``."""
        observed = [(key, route.routed, route.event_ids, lines, finds)
                    for key, (route, lines, finds) in self._block.items()]
        observed += [(None, routed, None, events, []) for routed, events in self._block_unkeyed.items()]
        self._block = self._block_unkeyed = self._block_routes = None
        return observed

    def merge(self, observed: list) -> None:
        """A worker's ``end_block``, taken in the file's order.  Its events are counted in by ``settle``: the
        lines of the block the parent reads itself (a Fluent Bit frame, a line after a byte order mark) come
        among them, and each event must have the place in its route that it has in one process."""
        self.settle()
        events = []
        for key, routed, event_ids, lines, finds in observed:
            if key is None:
                self.unkeyed[routed] += lines  # counted only: where they come does not matter
                continue
            entry = [key, routed, event_ids, {ordinal: (found, sampled) for ordinal, found, sampled in finds}, 0]
            events += [(line, entry) for line in lines]
        events.sort(key=lambda event: event[0])  # one event a line
        self._pending, self._pending_lines, self._settled = events, [line for line, _ in events], 0

    def settle(self, line: Optional[int] = None) -> None:
        """Count in the events of the merged block before its line ``line`` (None: all of them), one by one
        in the block's order: the fields found in an event that is among its route's first ``FIRST`` here,
        or sampled by its CRC, count; the others were a worker's first events only."""
        pending, at = self._pending, self._settled
        end = len(pending) if line is None else bisect_left(self._pending_lines, line, at)
        for _, entry in pending[at:end]:
            key, routed, event_ids, finds, ordinal = entry
            entry[4] = ordinal + 1
            route = self.routes.get(key)
            if route is None:
                route = self._route(key, routed, event_ids)
                if route is None:
                    self.unkeyed[routed] += 1
                    continue
            place = route.count
            route.count = place + 1
            finding = finds.get(ordinal)
            if finding is not None and (finding[1] or place < FIRST):
                route.seen.update(finding[0])
                route.unseen = tuple(field for field in route.fields if field not in route.seen)
        self._settled = end
        if end == len(pending):
            self._pending, self._pending_lines, self._settled = [], [], 0

    # ------------------------------------------------------------ the report

    def by_rule(self) -> dict:
        """Rule position -> ``(events routed to it, sorted fields it needs that no sampled event of a
        route where it needs them carried)``, for each rule routed at least one event."""
        self.settle()
        routed, needed, seen = Counter(), {}, {}
        for route in self.routes.values():
            for position in route.routed:
                routed[position] += route.count
                fields = self.needed(position, route.event_ids)
                needed.setdefault(position, set()).update(fields)
                seen.setdefault(position, set()).update(fields & route.seen)
        for rules, events in self.unkeyed.items():
            for position in rules:
                routed[position] += events
        return {position: (events, sorted(needed.get(position, set()) - seen.get(position, set())))
                for position, events in routed.items() if events}
