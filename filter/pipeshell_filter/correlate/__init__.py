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

from ..sigma.correlation import CorrelationSpec
from .correlator import Correlator, Hit

NS = 1_000_000_000

__all__ = ["Correlation", "Correlator", "Hit"]


class Correlation:
    def __init__(self, specs: Iterable[CorrelationSpec], lateness_ns: int = 0,
                 clock: Callable[[], float] = _time.monotonic):
        self.lateness_ns = lateness_ns
        self.clock = clock
        self.correlators = [Correlator(spec, lateness_ns) for spec in specs]
        self._by_rule = defaultdict(list)  # rule id -> correlators that refer to it
        for correlator in self.correlators:
            for rule in dict.fromkeys(ref.rule for ref in correlator.spec.rules):
                self._by_rule[rule].append(correlator)
        self._newest_wall = {id(c): 0.0 for c in self.correlators}  # wall clock when its newest time last rose

    def wants(self, rule: str) -> bool:
        """Some correlation refers to this rule."""
        return rule in self._by_rule

    def observe(self, detection) -> List[Hit]:
        hits = []
        for correlator in self._by_rule.get(detection.rule, ()):
            before = correlator.newest
            hits.extend(correlator.observe(detection))
            if correlator.newest != before:
                self._newest_wall[id(correlator)] = self.clock()
        return hits

    def settle(self) -> List[Hit]:
        """The input paused: close the newest watermark instant now.

        Normally only times strictly before the watermark are final, so a hit
        at the newest event time would wait for a newer event.  Before the
        stream blocks on input it settles: times at the watermark become final
        too (with ``--lateness 0`` the alert comes out at once), and an event
        arriving later with that same time is treated as late.
        """
        return self._advance(lambda c: c.newest - self.lateness_ns + 1)

    def idle(self, idle_seconds: float) -> List[Hit]:
        """Wall-clock progress: after ``idle_seconds`` with no newer event time, the
        watermark moves on with the wall clock, so pending alerts come out."""
        now = self.clock()

        def watermark(c):
            waited = now - self._newest_wall[id(c)] - idle_seconds
            return c.newest - self.lateness_ns + int(waited * NS) if waited > 0 else None

        return self._advance(watermark)

    def flush(self) -> List[Hit]:
        """End of input: every pending window becomes final."""
        return self._advance(lambda c: float("inf"))

    def _advance(self, watermark_of) -> List[Hit]:
        hits = []
        for correlator in self.correlators:
            if correlator.newest == float("-inf"):
                continue  # no event yet: nothing pending
            watermark = watermark_of(correlator)
            if watermark is not None:
                hits.extend(correlator.advance(watermark))
        return hits

    def late_counts(self) -> dict:
        return {"late": sum(c.late for c in self.correlators),
                "late_dropped": sum(c.late_dropped for c in self.correlators)}
