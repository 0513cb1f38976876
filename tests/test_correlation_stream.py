"""Every correlation kind on any arrival order, against a brute-force replay of the README's rules.

``test_correlation_kinds`` checks the time-sorted stream and disorder within the lateness; here the
arrival order is any (events far behind the watermark included), the input pauses anywhere
(``Correlation.settle``), and ``stream_oracle`` replays it as the README tells it: the time two
sources vouch for, the watermark that time less the lateness, late events joining open windows or
left out, consume-on-fire.  Then, for every kind: early alerts against the watermark's, and a
restart anywhere through the state file against one run.
"""

import pytest
from hypothesis import given, strategies as st

from stream_oracle import SETTLE, stream_oracle
from test_correlation_kinds import (ALL_KINDS, COUNT_KINDS, RECORDS, SPECS, build_spec, shuffled_within_lateness,
                                    to_detection)
from pipeshell_filter.correlate import Correlation, Correlator
from pipeshell_filter.correlate import state as state_module
from pipeshell_filter.detect import Detection


def _tuples(hits, ident=lambda c: c.detection.event["ident"]):
    return [(h.time, h.group, frozenset(map(ident, h.contributions)), h.aggregate) for h in hits]


def _oracle(s, stream, lateness, skew=float("inf")):
    return stream_oracle(s["kind"], s["rules"], s["timespan"], s["bounds"], s["group_by"], s["field"],
                         s["require_each"], stream, lateness, lambda r: f"h{r[3] % 3}", skew)


@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_any_arrival_order_and_pauses_give_the_replay_of_the_readmes_rules(kind, data):
    s = data.draw(SPECS[kind], label="spec")
    stream = data.draw(st.permutations(data.draw(RECORDS, label="detections")), label="arrival")
    for _ in range(data.draw(st.integers(0, 4), label="pauses")):
        stream.insert(data.draw(st.integers(0, len(stream))), SETTLE)
    lateness, skew = data.draw(st.integers(0, 10), label="lateness"), data.draw(st.integers(0, 6), label="skew")
    correlation = Correlation([build_spec(s)], lateness_ns=lateness, max_skew_ns=skew)
    hits = []
    for record in stream:
        hits += correlation.settle() if record == SETTLE else correlation.observe(to_detection(record))
    hits += correlation.flush()
    assert sorted(_tuples(hits), key=lambda a: (a[0], repr(a[1]))) == _oracle(s, stream, lateness, skew)


def _run(s, records, lateness, early, detection=to_detection, ident=lambda c: c.detection.event["ident"]):
    correlator = Correlator(build_spec(s), lateness_ns=lateness)
    correlator.early = early
    during = [hit for record in records for hit in correlator.observe(detection(record))]
    return _tuples(during, ident), _tuples(correlator.flush(), ident)


def _monotone(data, kind):
    s = data.draw(SPECS[kind], label="spec")
    if not build_spec(s).monotone:
        s = dict(s, bounds=tuple((op, n) for op, n in s["bounds"] if op in ("gt", "gte")))
    return s


@pytest.mark.parametrize("kind", sorted(COUNT_KINDS))
@given(data=st.data())
def test_early_alerts_on_distinct_sorted_times_are_the_watermarks_each_on_the_event_that_completes_it(kind, data):
    s = _monotone(data, kind)
    times = sorted(data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=15, unique=True), label="times"))
    records = [(t, *r[1:]) for t, r in zip(times, data.draw(RECORDS, label="detections"))]
    lateness = data.draw(st.integers(0, 10), label="lateness")
    during, end = _run(s, records, lateness, True)
    assert end == []
    assert sorted(during, key=repr) == sorted(sum(_run(s, records, lateness, False), []), key=repr)


@pytest.mark.parametrize("kind", sorted(COUNT_KINDS))
@given(data=st.data())
def test_early_alerts_in_any_order_take_no_event_twice_and_within_the_lateness_overlap_each_watermark_alert(
        kind, data):
    s = _monotone(data, kind)
    records = data.draw(RECORDS, label="detections")
    within = data.draw(st.booleans(), label="within the lateness")
    if within:
        stream, lateness = data.draw(shuffled_within_lateness(records), label="arrival")
    else:
        stream, lateness = data.draw(st.permutations(records), label="arrival"), data.draw(st.integers(0, 10))
    found = sum(_run(s, stream, lateness, True), [])
    taken = {}
    for _, group, idents, _ in found:
        assert not taken.setdefault(group, set()) & idents, (group, idents, found)
        taken[group] |= idents
    if within:
        for t, group, idents, _ in sum(_run(s, stream, lateness, False), []):
            assert any(g == group and (i & idents or abs(t2 - t) <= s["timespan"]) for t2, g, i, _ in found)


def _line(c):
    return c.detection.event["line"] - 1


def _wire(record):
    """A detection a state file can hold (its reference's line tells it back)."""
    time, rule, fields, ident, terms = record
    return Detection(rule, time, f"h{ident % 3}", terms, fields,
                     {"line": ident + 1, "record_id": str(ident + 1), "selections": ["sel"]})


def _through_the_file(correlator, s, lateness):
    document = state_module.decode(state_module.encode(
        {"lines": 0, "correlations": {"c": state_module.capture(correlator)}}), "state")
    fresh = Correlator(build_spec(s), lateness_ns=lateness)
    fresh.early = correlator.early
    assert state_module.same_spec(fresh, document["correlations"]["c"])
    state_module.restore(fresh, document["correlations"]["c"])
    return fresh


@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_a_restart_anywhere_through_the_state_file_gives_one_runs_hits(kind, data):
    """Restored with its windows open (``--on-stop keep``): exactly one run's hits.  After a pause
    (end of input, its flush's hits consuming their episodes): the same when the pause found none, and
    never an event in two hits of one group."""
    s = data.draw(SPECS[kind], label="spec")
    stream = data.draw(st.permutations(data.draw(RECORDS, label="detections")), label="arrival")
    lateness = data.draw(st.integers(0, 10), label="lateness")
    early = build_spec(s).monotone and data.draw(st.booleans(), label="early")
    cut, pause = data.draw(st.integers(0, len(stream)), label="cut"), data.draw(st.booleans(), label="pause")
    one_run = sum(_run(s, stream, lateness, early, _wire, _line), [])
    first = Correlator(build_spec(s), lateness_ns=lateness)
    first.early = early
    hits = [hit for record in stream[:cut] for hit in first.observe(_wire(record))]
    paused = state_module.pause(first) if pause else []
    second = _through_the_file(first, s, lateness)
    hits += paused + [hit for record in stream[cut:] for hit in second.observe(_wire(record))] + second.flush()
    found = _tuples(hits, _line)
    if not paused:
        assert found == one_run
    taken = {}
    for _, group, idents, _ in found:
        assert not taken.setdefault(group, set()) & idents, (group, idents)
        taken[group] |= idents
