"""Per-event detection: resolve fields, match selections, feed each rule's correlator.

The engine knows nothing of bytes or streams (that is ``stream``): it takes a
parsed event and hands back the enrichment and the alert records that became
final.  One correlator per rule; all rules see every event.
"""

from __future__ import annotations

import time as _time
from collections import Counter
from typing import Optional

import attrs

from .correlate.correlator import Contribution, Correlator
from .events.fields import FieldResolver
from .events.timeparse import NS
from .records import alert_record, enrichment, event_ref
from .sigma.compile import Plan
from .values import first_leaf, leaves


@attrs.define
class _RuleState:
    plan: Plan
    correlator: Correlator
    newest_wall: float = 0.0  # wall clock when the correlator's newest event time last rose


@attrs.define
class Outcome:
    sigma: Optional[dict]  # the enrichment, None when no selection matched
    alerts: list  # alert records that became final on this event


_UNSET = object()


class Engine:
    def __init__(self, plans: list, resolver: FieldResolver, lateness_ns: int = 0, clock=_time.monotonic):
        self.resolver = resolver
        self.rules = [
            _RuleState(p, Correlator(len(p.terms), p.timeframe_ns, p.aggregation, lateness_ns)) for p in plans
        ]
        self.lateness_ns = lateness_ns
        self.clock = clock
        self.stats = Counter()

    def process(self, event: dict, line: int = 0) -> Outcome:
        view = self.resolver.view(event)
        matches, alerts = [], []
        event_time = _UNSET
        for state in self.rules:
            plan = state.plan
            matched = plan.match(view)
            mask = plan.term_mask(matched)
            if matched:
                matches.append(enrichment(plan, matched, mask))
            if not mask:
                continue
            if event_time is _UNSET:
                event_time = view.time()
            if event_time is None:
                self.stats["no_time"] += 1
                continue
            contribution = Contribution(
                time=event_time,
                mask=mask,
                group=_group(plan, view),
                value=_aggregation_value(plan, view),
                ref=event_ref(event_time, view, matched, mask, plan, line),
            )
            correlator = state.correlator
            before = correlator.newest
            alerts.extend(alert_record(plan, a) for a in correlator.observe(contribution))
            if correlator.newest != before:
                state.newest_wall = self.clock()
        if matches:
            self.stats["matched"] += 1
        self.stats["alerts"] += len(alerts)
        sigma = None
        if matches:
            sigma = dict(matches[0])
            if len(matches) > 1:
                sigma["matches"] = matches
        return Outcome(sigma, alerts)

    def event_time(self, event: dict) -> Optional[int]:
        """The event's own time in ns (None when it has none we can parse)."""
        return self.resolver.view(event).time()

    def settle(self) -> list:
        """The input paused: close the newest watermark instant now.

        Normally only times strictly before the watermark are final, so an
        alert at the newest event time would wait for a newer event.  Before
        the stream blocks on input it settles: times at the watermark become
        final too (with ``--lateness 0`` the alert comes out at once), and an
        event arriving later with that same time is treated as late.
        """
        return self._advance(lambda state: state.correlator.newest - self.lateness_ns + 1)

    def idle(self, idle_seconds: float) -> list:
        """Wall-clock progress: after ``idle_seconds`` with no newer event time, the
        watermark moves on with the wall clock, so pending alerts come out."""
        now = self.clock()

        def watermark(state):
            waited = now - state.newest_wall - idle_seconds
            return state.correlator.newest - self.lateness_ns + int(waited * NS) if waited > 0 else None

        return self._advance(watermark)

    def flush(self) -> list:
        """End of input: every pending alert becomes final."""
        return self._advance(lambda state: float("inf"))

    def _advance(self, watermark_of) -> list:
        """Move each rule's watermark to ``watermark_of(state)`` (None: leave it);
        the alert records that became final."""
        alerts = []
        for state in self.rules:
            if state.correlator.newest == float("-inf"):
                continue  # no event yet: nothing pending
            watermark = watermark_of(state)
            if watermark is not None:
                alerts.extend(alert_record(state.plan, a) for a in state.correlator.advance(watermark))
        self.stats["alerts"] += len(alerts)
        return alerts

    def correlation_stats(self) -> Counter:
        totals = Counter()
        for state in self.rules:
            totals["late"] += state.correlator.late
            totals["late_dropped"] += state.correlator.late_dropped
        return totals


def _group(plan: Plan, view):
    spec = plan.aggregation
    return first_leaf(view.get(spec.group_by)) if spec is not None and spec.group_by else None


def _aggregation_value(plan: Plan, view):
    spec = plan.aggregation
    if spec is None or spec.field is None:
        return None
    value = view.get(spec.field)
    if spec.function == "count":
        return tuple(sorted(set(leaves(value))))
    text = first_leaf(value)
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and number == number else None
