"""Both stages in one process: detect, correlate, and the records they produce.

The engine knows nothing of bytes or streams (that is ``io.stream``).  An event
goes through the detect stage (``detect``: a Detection per rule whose
condition it meets); each Detection enriches the event, and then either is an
alert at once (a rule without correlation) or goes to the correlate stage
(``correlate``), whose hits become alerts when their windows are final.
``observe`` is the correlate stage's entry for Detection records that were
made elsewhere (``--stage correlate``).
"""

from __future__ import annotations

import time as _time
from collections import Counter
from typing import List, Optional

import attrs

from .correlate import DEFAULT_AGENT_IDLE, DEFAULT_MAX_SKEW, Correlation, Hit
from .correlate.state import MAX_ALERTED, StateError, describe, identity, matched_by
from .correlate.suppress import SuppressError, Suppressor, correlation_key, single_key
from .coverage import Coverage
from .detect import SHOWN_KEYS, Detection, Detector, Heartbeat, WireError, within
from .events.fields import FieldResolver
from .events.timeparse import format_time
from .records import correlation_alert, detection_alert, enrichment, sigma_field
from .sigma.compile import Plan


@attrs.define
class Outcome:
    sigma: Optional[dict]  # the enrichment, None when no rule's condition held
    alerts: list  # alert records that became final on this event
    untimed: bool = False  # a detection for a correlation had no event time: left out of it


SUPPRESSED = -1  # ``Engine._let_out``: the alert does not go out


def _counted(alert: dict, suppressed: Optional[int]) -> dict:
    """With ``--suppress``, an alert that goes out says how many of its key it stands for (``sigma.suppressed``)."""
    if suppressed is not None:
        alert["sigma"]["suppressed"] = suppressed
    return alert


class Engine:
    suppressor = None  # ``--suppress``: one alert per rule and group per period of event time
    _alerted = None  # ``take_once``: identities of the recent single-event alerts' events, oldest first
    # ``explain --events`` (``explain.CorrelationTrace``): told of each event ``process`` matched (``matched``)
    # and of each of its detections once the correlate stage took it (``taken``); with ``--stage correlate``,
    # of each Detection record before and after ``observe`` takes it (``received``, ``taken``) and of each
    # heartbeat (``heard``); so that it explains what the filter's own run did; it reads, never changes anything
    trace = None

    def __init__(self, plans: List[Plan], resolver: FieldResolver, lateness_ns: int = 0, clock=_time.monotonic,
                 unknown_logsource: str = "match", max_skew_ns: int = DEFAULT_MAX_SKEW,
                 agent_idle: float = DEFAULT_AGENT_IDLE, agents: int = 0, early: bool = False,
                 alert_fields: str = "matched", suppress_ns: int = 0, between: Optional[tuple] = None):
        self.plans = {plan.rule.id: plan for plan in plans}
        # a rule set (``sigma.collection.RuleSet``) brings its correlation documents, and the rules
        # that feed them without ``generate`` and so do not alert on their own (``quiet``)
        documents = getattr(plans, "correlations", ())
        self.quiet = getattr(plans, "quiet", frozenset())
        # ``--min-level``, ``--status``, ... (``sigma.selection``): the rules loaded quiet to feed a kept
        # correlation (in ``quiet`` too), those not loaded, id -> why (a correlate stage names them), and
        # the excluded ids that name no rule (the summary counts them)
        self.selection = getattr(plans, "selection", None)
        self.deselected = getattr(plans, "deselected", {})
        self.left_out = getattr(plans, "left_out", {})
        self.unmatched = getattr(plans, "unmatched", ())
        self.meta = {**{plan.rule.id: plan.rule for plan in plans}, **{d.spec.id: d.rule for d in documents}}
        specs = [plan.correlation for plan in plans if plan.correlation is not None] + [d.spec for d in documents]
        self.correlation = Correlation(specs, lateness_ns, clock, max_skew_ns)
        described = {}  # with --state, what its saved windows hold: which rules' events, which correlations' alerts
        for correlator in self.correlation.correlators:  # inner ones first
            counted = dict.fromkeys(i for ref in correlator.spec.inputs if not ref.chained for i in ref.rule_ids)
            inner = [described[rule] for rule in correlator.spec.chained if rule in described]
            correlator.matched_by = matched_by((self.meta[rule] for rule in counted if rule in self.meta), inner)
            described[correlator.spec.id] = describe(correlator.spec, correlator.matched_by)
        if early:
            self.correlation.alert_early()
        needed = {}
        carried = {correlator.spec.id: correlator.carried for correlator in self.correlation.correlators}
        for spec in specs:
            for ref in spec.inputs:
                for rule in ref.rule_ids if not ref.chained else ():
                    fields = spec.needed_fields(rule, carried[spec.id])
                    needed[rule] = tuple(dict.fromkeys(needed.get(rule, ()) + fields))
        self.detector = Detector(plans, resolver, needed, unknown_logsource, alert_fields, between)
        self.resolver = resolver
        self.agent_idle = agent_idle
        self.expected_agents = agents
        self.stats = Counter()
        self.late = Counter()  # events late to a correlation (``_count_late``): once each
        self._repeated = 0  # single-event alerts not made again (``_first_alert``)
        # per rule or correlation id, in this run only (never saved with --state): the Detections
        # made (or, in a correlate stage, received), the times it fired (a rule's alerts before
        # --suppress judged them, a correlation's hits, an inner one's without generate included),
        # the alerts written and those --suppress held back; only a match, a hit or an alert touches them
        self.rule_detections = Counter()
        self.rule_fires = Counter()
        self.rule_alerts = Counter()
        self.rule_suppressed = Counter()
        if suppress_ns:
            self.suppressor = Suppressor(suppress_ns, lateness_ns, max_skew_ns)
        # Detection -> the Detection the correlate stage would read of it after the wire, when a
        # mode rewrites it on the way (``io.stream``'s Fluent Bit modes): one process correlates the
        # same values as two, so that alerts and their ids are the same either way
        self.carried = None

    def process(self, event: dict, line: int = 0, only=None, text: Optional[bytes] = None,
                carried: bool = False) -> Outcome:
        """The detect stage and then the correlate stage, for one parsed event; ``only``: the
        positions of the rules that can match it (``io.rule_index.RuleIndex``), None for all;
        ``text``: its input line; ``carried``: read from its record's XML (``Detector.detect``)."""
        sigma, detections = self.match(event, line, only, text, carried)
        if self.trace is not None:
            self.trace.matched(event, line, detections, carried)
        return Outcome(sigma, *self._correlate_all(detections))

    def take(self, detections: List[Detection]) -> Outcome:
        """The correlate half of ``process``, for the Detections another process's ``match`` made
        of one event (``io.parallel``'s detecting workers): the event counts as matched here."""
        self.stats["matched"] += 1
        counts = self.rule_detections
        for detection in detections:
            counts[detection.rule] += 1
        return Outcome(None, *self._correlate_all(detections))

    def _correlate_all(self, detections: List[Detection]) -> tuple:
        """One event's detections; an early alert waits for all of them (``Correlation.end_event``)."""
        alerts, untimed = [], False
        several = len(detections) > 1
        before, repeated = self._late_so_far(), self._duplicates_of()
        for detection in detections:
            if self.carried is not None:
                detection = self.carried(detection)
            found, timeless = self._correlate(detection, several)
            if self.trace is not None:
                self.trace.taken(detection)
            alerts += found
            untimed |= timeless
        if several:
            alerts += self._alerts(self.correlation.end_event())
        self._count_late(before)
        if self._duplicates_of() != repeated:  # no key made for 0: workers' stats have none
            self.stats["duplicates"] += 1
        return alerts, untimed

    def _late_so_far(self) -> Optional[tuple]:
        """The correlations' late and late-dropped counts, summed (None without correlations)."""
        if not self.correlation.correlators:
            return None
        counts = self.correlation.late_counts()
        return counts["late"], counts["late_dropped"]

    def _count_late(self, before: Optional[tuple]) -> None:
        """One event (one Detection record in the correlate stage) is late once however many correlations
        it came late to, and outside any open window when it joined none of those."""
        if before is None:
            return
        late, dropped = (now - then for now, then in zip(self._late_so_far(), before))
        if late:
            self.late["late"] += 1
            self.late["late_dropped"] += dropped == late

    def match(self, event: dict, line: int = 0, only=None, text: Optional[bytes] = None,
              carried: bool = False) -> tuple:
        """The detect stage alone: the enrichment and the Detection records (``--stage match``)."""
        detections = self.detector.detect(event, line, only, text, carried)
        if not detections:
            return None, []
        self.stats["matched"] += 1
        counts = self.rule_detections
        for detection in detections:
            counts[detection.rule] += 1
        return sigma_field([enrichment(self.plans[d.rule], d) for d in detections]), detections

    def received(self, detection: Detection) -> Detection:
        """What the correlate stage keeps of a Detection record of a loaded rule: the fields its
        correlations read, the terms and selections the rule has (in order, once each), as its
        detect stage writes them (a record it wrote is kept whole).  A record from elsewhere may
        carry a hundred thousand fields or terms, each held with the event in its windows, and a
        term or selection the rule has not would name one that is not there in alerts, or make a
        record sent again another event.  WireError when it meets no term of the rule, or its
        reference's ``@timestamp`` is not its time as a detect stage writes it (any other text went
        into alerts, against their schema).  Not for a correlation's own saved state, whose chained
        events carry their last event's reference at the window's time."""
        stamp = detection.event.get("@timestamp")
        if stamp is not None and (detection.time is None or stamp != format_time(detection.time)):
            raise WireError("'event.@timestamp' is not the record's 'time' as RFC 3339")
        plan = self.plans[detection.rule]
        needed = self.detector.needed.get(detection.rule, ())
        terms = tuple(sorted({t for t in detection.terms if t < len(plan.terms)}))
        if not terms:
            raise WireError(f"'terms' names no term of rule {detection.rule[:80]!r} "
                            f"(it has {len(plan.terms)}: 0 to {len(plan.terms) - 1})")
        selections = detection.event.get("selections", [])
        named = {s.name for s in plan.selections}
        event = detection.event
        if not all(name in named for name in selections) or len(set(selections)) < len(selections):
            event = dict(event, selections=list(dict.fromkeys(name for name in selections if name in named)))
        shown = event.get("fields")
        if shown is not None or "fields_truncated" in event:
            event = self._shown_here(plan, event, shown)
        fields = detection.fields
        if any(name not in needed for name in fields):
            fields = {name: values for name, values in fields.items() if name in needed}
        if terms == detection.terms and fields is detection.fields and event is detection.event:
            return detection
        return attrs.evolve(detection, terms=terms, fields=fields, event=event)

    def _shown_here(self, plan: Plan, event: dict, shown: Optional[dict]) -> dict:
        """An event reference with the field values this stage's ``--alert-fields`` shows of it, of
        those its match stage wrote (``Detector.shown_names``): none, or the rule's own, or those
        of its selections; a record of this build with the same option, unchanged."""
        names = self.detector.shown_names(plan, frozenset(event.get("selections", ())))
        if not names:
            return {key: value for key, value in event.items() if key not in SHOWN_KEYS}
        if shown is None or all(name in names for name in shown):
            return event
        event = dict(event, fields={name: value for name, value in shown.items() if name in names})
        if not event["fields"]:
            del event["fields"]
        return event

    def observe(self, detection: Detection, line: int = 0) -> Outcome:
        """The correlate stage alone: one Detection record made by a detect stage (``line``: the
        record's own line of input)."""
        self.stats["detections"] += 1
        if detection.rule not in self.plans:
            return Outcome(None, [])
        if self.detector.between is not None and not within(detection.time, self.detector.between):
            self.detector.outside += 1
            return Outcome(None, [])
        if self.trace is not None:
            self.trace.received(detection, line)
        before, late = self._duplicates_of(detection.rule), self._late_so_far()
        alerts, untimed = self._correlate(detection)
        self._count_late(late)
        if self._duplicates_of(detection.rule) == before:  # a record sent again is taken once, and counted once
            self.rule_detections[detection.rule] += 1
        else:
            self.stats["duplicates"] += 1
        if self.trace is not None:
            self.trace.taken(detection)
        return Outcome(None, alerts, untimed)

    def progress(self, heartbeat: Heartbeat) -> list:
        """The correlate stage alone: an agent's heartbeat moves the fleet's time (``correlate.agents``)."""
        self.stats["heartbeats"] += 1
        if self.trace is not None:
            self.trace.heard(heartbeat)
        self.correlation.follow_agents(self.agent_idle, self.expected_agents)
        return self._alerts(self.correlation.progress(heartbeat.agent, heartbeat.time, heartbeat.idle))

    def _correlate(self, detection: Detection, defer_early: bool = False) -> tuple:
        plan = self.plans[detection.rule]
        alerts = []
        # a rule alerts on its own unless it is a correlation, or feeds one without ``generate``
        if plan.correlation is None and detection.rule not in self.quiet and \
                (self._alerted is None or self._first_alert(detection)):
            self.rule_fires[detection.rule] += 1
            count = self._let_out(detection.rule, single_key(detection.rule, detection.source), detection.time,
                                  (detection.source,))
            if count != SUPPRESSED:
                alerts.append(_counted(detection_alert(plan, detection), count))
        if not self.correlation.wants(detection.rule):
            return alerts, False
        if detection.time is None:
            self.stats["no_time"] += 1
            return alerts, True
        return alerts + self._alerts(self.correlation.observe(detection, defer_early)), False

    def _alerts(self, hits: List[Hit]) -> list:
        alerts = []
        for hit in hits:
            self.rule_fires[hit.spec.id] += 1
            if hit.spec.id in self.quiet:  # an inner correlation's, without generate
                continue
            hosts = () if self.suppressor is None else dict.fromkeys(c.detection.source for c in hit.contributions)
            count = self._let_out(hit.spec.id, correlation_key(hit.spec.id, hit.group), hit.time, hosts)
            if count != SUPPRESSED:
                alerts.append(_counted(correlation_alert(self.meta[hit.spec.id], hit), count))
        return alerts

    def _let_out(self, rule: str, key: tuple, time: Optional[int], hosts):
        """Whether an alert of ``rule`` made goes out, counted either way: SUPPRESSED when its key's open
        ``--suppress`` period takes it (never built); else how many of its key were suppressed since the
        key's last one (None without ``--suppress``).  Every alert made is judged, in the order alerts
        are made (``Suppressor.admit``)."""
        count = None
        if self.suppressor is not None:
            count = self.suppressor.admit(key, time, hosts)
            if count is None:
                self.stats["suppressed"] += 1
                self.rule_suppressed[rule] += 1
                return SUPPRESSED
        self.stats["alerts"] += 1
        self.rule_alerts[rule] += 1
        return count

    def rule_counts(self, timed: bool = False) -> List[tuple]:
        """``(rule metadata, detections, alerts, fires, suppressed, tried, eval_ns)`` of each rule or correlation
        that matched, fired or alerted in this run, the most alerts first, then the most detections, then the
        most fires (``--rule-stats``, the stats record): a rule that only feeds a correlation has
        Detections and nothing else; an inner correlation without ``generate``, fires and no alerts;
        any other, alerts + suppressed = fires.  ``timed`` (``Detector.time_rules``): every rule tried on an
        event is listed too, with how many events and how long it took (the most time first, after those that
        matched); else ``tried`` and ``eval_ns`` are None."""
        timing = self.detector.timing if timed else None
        tried = {}
        if timing is not None:
            plans = self.detector.plans
            for position, (count, spent) in timing.items():
                found = tried.setdefault(plans[position].rule.id, [0, 0])  # a rule id loaded twice: one row
                found[0] += count
                found[1] += spent
        ids = set(self.rule_detections) | set(self.rule_fires) | set(self.rule_alerts) | set(tried)
        rows = [(self.meta[rule], self.rule_detections[rule], self.rule_alerts[rule], self.rule_fires[rule],
                 self.rule_suppressed[rule], *((tried.get(rule, (0, 0))) if timing is not None else (None, None)))
                for rule in ids if rule in self.meta]
        rows.sort(key=lambda row: (-row[2], -row[1], -row[3], -(row[6] or 0), row[0].id))
        return rows

    def watch_fields(self) -> None:
        """Learn, per route, which fields its rules need its events carry (``coverage``; ``--rule-stats``)."""
        self.detector.coverage = Coverage(self.detector.plans)

    def rule_coverage(self) -> dict:
        """Rule id -> ``(events routed to it, fields it needs never seen in them)``, for the rules routed
        an event in this run (``watch_fields``); empty when not watched."""
        coverage = self.detector.coverage
        if coverage is None:
            return {}
        plans = self.detector.plans
        return {plans[position].rule.id: found for position, found in coverage.by_rule().items()}

    def event_time(self, event: dict, carried: bool = False) -> Optional[int]:
        """The event's own time in ns (None when it has none we can parse); ``carried``: the event was read
        from the XML its record carries (``FieldResolver.carried``)."""
        return self.resolver.reading(carried).time(event)

    def release_memory(self) -> None:
        """Between blocks: memory a passed flood left behind goes back (``Correlation.release_memory``)."""
        self.correlation.release_memory()

    def live(self) -> List[str]:
        """The input is live: the wall clock bounds the agents' times and the restored watermarks
        (``Correlation.live``), and the hosts' times that ``--suppress`` keeps; the titles of the
        correlations whose watermark was not believed."""
        if self.suppressor is not None:
            self.suppressor.bound_by(self.correlation.wall)
        return self.correlation.live()

    def listen_by(self, clock) -> None:
        """The clock of the agents' silence and of ``--idle`` (``Correlation.listen_by``)."""
        self.correlation.listen_by(clock)

    def input_back(self, away: float) -> None:
        """The input was away ``away`` seconds (the fleet bus unreachable) and is back: that time
        was no agent's silence and no pause of the events (``Correlation.input_back``)."""
        self.correlation.input_back(away)

    def settle(self) -> list:
        """The input paused: what is final at the newest watermark instant goes out (``Correlation.settle``)."""
        return self._alerts(self.correlation.settle())

    def idle(self, idle_seconds: float) -> list:
        """Wall-clock progress on live input (``Correlation.idle``)."""
        return self._alerts(self.correlation.idle(idle_seconds))

    def flush(self) -> list:
        """End of input: every pending alert becomes final."""
        return self._alerts(self.correlation.flush())

    # ------------------------------------------------------------ state across restarts (``correlate.state``)

    def take_once(self) -> None:
        """Each event is taken once: a Detection the same as one taken (``state.identity``) counts in
        no correlation again, nor alerts again on its own.  The correlate stage's input is at least
        once (a redelivery, a shipper's retry, an agent restarted from an older offset), and so is
        any input after a restart (``--state``)."""
        self.correlation.take_once()
        if self._alerted is None:
            self._alerted = {}

    def _first_alert(self, detection: Detection) -> bool:
        """A single-event alert: False when the same event alerted already (among the last
        ``MAX_ALERTED``)."""
        key = identity(detection)
        if key in self._alerted:
            self._repeated += 1
            return False
        self._alerted[key] = None
        if len(self._alerted) > MAX_ALERTED:
            del self._alerted[next(iter(self._alerted))]
        return True

    def _duplicates_of(self, rule: Optional[str] = None) -> int:
        """Detections dropped as sent again so far, by the single-event alerts and the correlations (those
        ``rule`` feeds directly): one event may be dropped by several."""
        found = self.correlation.duplicates() if rule is None else self.correlation.duplicates_of(rule)
        return self._repeated + found

    def duplicates(self) -> int:
        """Events (Detection records in the correlate stage) dropped because the same one was taken
        already (``take_once``): once each, however many rules and correlations dropped it."""
        return self.stats["duplicates"]

    def snapshot(self) -> dict:
        saved = {"correlations": self.correlation.snapshot(), "alerted": list(self._alerted or ())}
        if self.correlation.agents is not None:
            saved["agents"] = self.correlation.agents.saved()
        if self.suppressor is not None:
            saved["suppress"] = self.suppressor.saved()
        return saved

    def restore(self, saved: dict) -> List[str]:
        """Take back a ``snapshot``; one-line messages about what had to be discarded."""
        messages = self.correlation.restore(saved.get("correlations", {}))
        if saved.get("agents"):
            self.correlation.follow_agents(self.agent_idle, self.expected_agents)
            self.correlation.agents.restore(saved["agents"])
        if self._alerted is not None:
            self._alerted = dict.fromkeys(saved.get("alerted", ())[-MAX_ALERTED:])
        if self.suppressor is not None and saved.get("suppress") is not None:  # a state of a run without it: none
            try:
                self.suppressor.restore(saved["suppress"])
            except SuppressError as error:
                raise StateError(str(error)) from None
        return messages

    def pause(self) -> list:
        """End of input that is a pause (``--state``): the alerts a flush gives now, while the
        windows stay open for the next run (``Correlation.pause``)."""
        return self._alerts(self.correlation.pause(self.quiet))

    def skew_reports(self, final: bool = False) -> List[str]:
        """Sources newly seen with a wrong clock, one line each (``Correlation.skew_reports``)."""
        return self.correlation.skew_reports(final)

    def skewed_sources(self) -> dict:
        return self.correlation.skewed_sources()

    def held(self) -> int:
        return self.correlation.held()

    def correlation_stats(self) -> Counter:
        """Late and late-dropped events (``_count_late``), and those shed at the cap."""
        return Counter(self.late, shed=self.correlation.late_counts()["shed"])
