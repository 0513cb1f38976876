"""The correlate stage, stateful: Detection records in, hits out.

One ``Correlator`` per ``CorrelationSpec`` (``correlator``: windows, watermark,
consume-on-fire), each with its window shape (``windows``).  ``Correlation``
routes each detection to the correlations that refer to its rule and moves
their watermarks: on each event, before the input blocks (``settle``), with
the wall clock on live input (``idle``) and at the end (``flush``).
"""

from __future__ import annotations

import time as _time
from collections import defaultdict
from typing import Callable, Iterable, List

from ..events.timeparse import NS
from ..sigma.correlation import CorrelationSpec
from . import state as _state
from .correlator import DEFAULT_MAX_SKEW, Correlator, Hit, give_back_memory

__all__ = ["DEFAULT_MAX_SKEW", "Correlation", "Correlator", "Hit"]


class Correlation:
    def __init__(self, specs: Iterable[CorrelationSpec], lateness_ns: int = 0,
                 clock: Callable[[], float] = _time.monotonic, max_skew_ns: int = DEFAULT_MAX_SKEW,
                 wall: Callable[[], int] = _time.time_ns):
        self.lateness_ns = lateness_ns
        self.clock = clock
        self.wall = wall
        self.correlators = [Correlator(spec, lateness_ns, max_skew_ns) for spec in specs]
        self._behind_reported = set()
        self._shed_reported = set()
        self._by_rule = defaultdict(list)  # rule id -> correlators that refer to it
        for correlator in self.correlators:
            for rule in dict.fromkeys(ref.rule for ref in correlator.spec.rules):
                self._by_rule[rule].append(correlator)
        self._newest_wall = {id(c): 0.0 for c in self.correlators}  # wall clock when an event time last rose

    def wants(self, rule: str) -> bool:
        """Some correlation refers to this rule."""
        return rule in self._by_rule

    def _after_flood(self) -> None:
        """A correlation's state shrank from a flood: return the memory, now that no frame of
        the correlator holds on to any of it."""
        if any(c.flood_gone for c in self.correlators):
            for c in self.correlators:
                c.flood_gone = False
            give_back_memory()

    def observe(self, detection) -> List[Hit]:
        hits = []
        for correlator in self._by_rule.get(detection.rule, ()):
            before = correlator.clocks.newest, correlator.newest
            hits.extend(correlator.observe(detection))
            if (correlator.clocks.newest, correlator.newest) != before:
                self._newest_wall[id(correlator)] = self.clock()
            if correlator.flood_gone:
                self._after_flood()
        return hits

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
        wall = self.wall()
        return self._advance(lambda c: c.clocks.trusted_newest(wall) - self.lateness_ns + 1)

    def idle(self, idle_seconds: float) -> List[Hit]:
        """Wall-clock progress: after ``idle_seconds`` with no newer event time, the
        watermark moves on with the wall clock, so pending alerts come out."""
        now = self.clock()

        wall = self.wall()

        def watermark(c):
            waited = now - self._newest_wall[id(c)] - idle_seconds
            if waited <= 0:
                return None
            # from the newest time that is not suspect: a source far ahead of the others, or of the
            # wall clock, must not carry the watermark past the others' windows
            return c.clocks.trusted_newest(wall) - self.lateness_ns + int(waited * NS)

        return self._advance(watermark)

    def flush(self) -> List[Hit]:
        """End of input: every pending window becomes final."""
        return self._advance(lambda c: float("inf"))

    # ------------------------------------------------------------ state across restarts (``state``)

    def take_once(self) -> None:
        """Each event is taken once: a Detection the same as one taken (``state.identity``) is
        dropped, so an upstream that re-sends after a restart cannot make an alert twice."""
        for correlator in self.correlators:
            if correlator.seen is None:
                correlator.seen = _state.Seen()

    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.correlators)

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

    def pause(self) -> List[Hit]:
        """End of input that is a pause (``--state``): the hits a flush finds now, while the
        windows stay open and the watermark where it was, the episodes of those hits consumed
        (``state.pause``)."""
        hits = []
        for correlator in self.correlators:
            if len(correlator.clocks):
                hits.extend(_state.pause(correlator))
        return hits

    def _advance(self, watermark_of) -> List[Hit]:
        hits = []
        for correlator in self.correlators:
            if not len(correlator.clocks):
                continue  # no event yet: nothing pending
            watermark = watermark_of(correlator)
            if watermark is not None:
                hits.extend(correlator.advance(watermark))
        self._after_flood()
        return hits

    def skew_reports(self, final: bool = False) -> List[tuple]:
        """(kind, line): one per source newly seen to run ahead of the others (its events wait), or
        behind them (its events arrive too late to count), each reported once; and one per
        correlation that reached its state cap."""
        lines = []
        now = self.clock()
        for correlator in self.correlators:
            title = correlator.spec.title
            for source, ahead in correlator.clocks.ahead(now, final):
                lines.append(("skewed_source", f"source {source!r} is {ahead / NS:g} s ahead of the other sources: "
                              f"its events wait for the others (rule {title})"))
            for source, count in correlator.late_sources.items():
                if (id(correlator), source) not in self._behind_reported and len(self._behind_reported) < 100_000:
                    self._behind_reported.add((id(correlator), source))
                    lines.append(("skewed_source", f"source {source!r} is behind the other sources: {count} of its "
                                  f"events came too late to count (rule {title})"))
            if correlator.shed and id(correlator) not in self._shed_reported:
                self._shed_reported.add(id(correlator))
                lines.append(("state_cap", f"rule {title}: more than {correlator.max_held} events held for "
                              "correlation; the oldest are dropped from it (a flood?)"))
        return lines

    def late_counts(self) -> dict:
        return {"late": sum(c.late for c in self.correlators),
                "late_dropped": sum(c.late_dropped for c in self.correlators),
                "shed": sum(c.shed for c in self.correlators)}
