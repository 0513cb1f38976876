"""Every correlation kind of the correlate stage against the brute-force oracle.

Specs of each kind in ``KINDS`` are generated with small pools of rules, group-by
values, field values and times, so that ties, repeated values, window edges and
consume-on-fire come up often; the ``Correlator``'s hits must equal those of
``oracle.correlation_oracle``, which knows nothing of the package.  Then: within the
lateness bound, arrival order does not change the hits; and a few hand-computed cases.
"""

import itertools
import sys
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from oracle import correlation_oracle
from pipeshell_filter.correlate import Correlator
from pipeshell_filter.correlate.windows import SHAPES
from pipeshell_filter.detect import Detection
from pipeshell_filter.sigma.condition import parse_condition
from pipeshell_filter.sigma.correlation import KINDS, CorrelationSpec, RuleRef, Threshold

ALL_KINDS = sorted(KINDS)
COUNT_KINDS = {"event_count", "value_count", "temporal", "temporal_ordered"}

# referenced inputs: whole rules, and terms of rule "r" (one detection may feed several)
REF_POOL = [("a", None), ("b", None), ("c", None), ("r", None), ("r", 0), ("r", 1)]
DETECTION_RULES = ["a", "b", "c", "r", "z"]  # "z" is referenced by nothing
FIELD_POOLS = {
    "User": ["alice", "bob", "Alice"],  # one user to a value_count, two groups to a group-by
    "Host": ["h1", "h2", "h3"],
    "Val": ["2", "1", "x", "2.5", "-1", "0.1", "10", "nan", "inf", "", "1_000", "\u0661\u0662", " 3 ", "1e400",
            "1e308", "-1.7e308", "1.7976931348623157e308"],  # sums beyond a double: the largest, signed
}
GROUP_FIELDS = ["User", "Host", "Val"]
NUMERIC_KINDS = {"value_sum", "value_avg", "value_min", "value_max"}


def fields_for(kind):
    """The aggregated field: mostly one that can aggregate; sometimes one that cannot, or none."""
    if kind in NUMERIC_KINDS:
        return st.sampled_from(["Val", "Val", "Val", "Val", "Host", None])
    return st.sampled_from(["Val", "Host", "User", "Val", "Host", "User", None])
OPS = ["gt", "gte", "lt", "lte", "eq", "neq"]


# ------------------------------------------------------------------ strategies

def numbers_for(kind):
    if kind in COUNT_KINDS:
        return st.integers(0, 5)
    if kind == "value_percentile":
        return st.one_of(st.sampled_from([0, 20, 25, 100 / 3, 50, 200 / 3, 75, 100]), st.integers(0, 100))
    return st.one_of(st.sampled_from([-1, 0, 0.1, 1, 2, 2.5, 3, 4.5, 10, 12.5]), st.integers(-2, 14))


def specs(kind):
    """A spec of this kind as plain data: 1-3 inputs, 0-2 group-by fields, and no bound
    (always), one, or two (a range, or anything with ``neq``)."""
    bound = st.tuples(st.sampled_from(OPS), numbers_for(kind))
    return st.fixed_dictionaries({
        "kind": st.just(kind),
        "rules": st.lists(st.sampled_from(REF_POOL), min_size=1, max_size=3, unique=True),
        "timespan": st.integers(0, 8),
        "bounds": st.lists(bound, max_size=2).map(tuple),
        "group_by": st.lists(st.sampled_from(GROUP_FIELDS), max_size=2, unique=True).map(tuple),
        "field": fields_for(kind),
        "require_each": st.booleans(),
    })


SPECS = {kind: specs(kind) for kind in KINDS}


def _field_options(pool):
    """A field's possible leaf lists: empty, one value, two (in either order, or repeated)."""
    return [[]] + [[v] for v in pool] + [[v, w] for v in pool[:3] for w in pool[:3]]


ABSENT = None
# every combination, prebuilt, so a detection's fields cost one draw (the first: no fields at all)
FIELD_MAPS = st.sampled_from([
    {name: values for name, values in zip(FIELD_POOLS, lists) if values is not ABSENT}
    for lists in itertools.product(*([ABSENT] + _field_options(pool) for pool in FIELD_POOLS.values()))])
TIMES = st.sampled_from(list(range(13)) + [None])  # small times: ties and window edges
R_TERMS = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
RULE_TERMS = st.sampled_from([(rule, (0,)) for rule in DETECTION_RULES if rule != "r"]
                             + [("r", terms) for terms in R_TERMS])


def detection_records(max_size=22):
    """(time, rule, fields, ident, terms); ident is the position, so idents are unique."""
    return st.lists(st.tuples(TIMES, RULE_TERMS, FIELD_MAPS), min_size=3, max_size=max_size).map(
        lambda rows: [(time, rule, fields, i, terms) for i, (time, (rule, terms), fields) in enumerate(rows)])


RECORDS = detection_records()


# ------------------------------------------------------------------ running both

def build_spec(s):
    return CorrelationSpec(
        id="c", title="c", kind=s["kind"], rules=tuple(RuleRef(rule, term) for rule, term in s["rules"]),
        timespan_ns=s["timespan"], condition=Threshold(s["bounds"]), group_by=s["group_by"],
        field=s["field"], require_each=s["require_each"])


def to_detection(record):
    """From one of three hosts: with a single source no time is vouched for (``clock``), so the
    watermark never moved before ``flush`` and the streaming evaluation went untested."""
    time, rule, fields, ident, terms = record
    return Detection(rule, time, f"h{ident % 3}", terms, fields, {"ident": ident})


def run_correlator(s, records, lateness=0):
    correlator = Correlator(build_spec(s), lateness_ns=lateness)
    hits = []
    for record in records:
        hits += correlator.observe(to_detection(record))
    hits += correlator.flush()
    for hit in hits:  # what every hit promises, beyond what the oracle returns
        assert hit.window_start == hit.time - s["timespan"]
        assert all(hit.window_start <= c.detection.time <= hit.time for c in hit.contributions)
        if s["kind"] == "value_count" and s["field"] is not None:
            spellings = {}
            for v in sorted({v for c in hit.contributions for v in c.detection.fields.get(s["field"]) or []}):
                spellings.setdefault(v.casefold(), v)  # each value by its least spelling
            assert list(hit.distinct_values) == sorted(spellings.values())
    return [(h.time, h.group, frozenset(c.detection.event["ident"] for c in h.contributions), h.aggregate)
            for h in hits], correlator


def run_oracle(s, records):
    return correlation_oracle(s["kind"], s["rules"], s["timespan"], s["bounds"], s["group_by"],
                              s["field"], s["require_each"], records)


def by_time(records):
    return sorted((r for r in records if r[0] is not None), key=lambda r: r[0]) + \
        [r for r in records if r[0] is None]


# ------------------------------------------------------------------ properties

@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_kind_agrees_with_oracle(kind, data):
    """Sorted stream, lateness 0: the hits are exactly the oracle's, in the same order."""
    s = data.draw(SPECS[kind], label="spec")
    records = data.draw(RECORDS, label="detections")
    hits, _ = run_correlator(s, by_time(records))
    assert hits == run_oracle(s, records)


@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_a_window_filled_at_once_is_the_window_added_to_one_by_one(kind, data):
    """``Window.fill`` (a state taken back, a pause's windows put back) keeps what ``add`` keeps,
    event by event: the events, what each input saw, and the kind's own aggregate state."""
    s = data.draw(SPECS[kind], label="spec")
    correlator = Correlator(build_spec(s))
    found = [correlator.contribution(to_detection(record)) for record in data.draw(RECORDS, label="detections")]
    items = [((c.time, n), c) for n, c in enumerate(found) if c is not None]
    one_by_one, at_once = correlator.shape(correlator.spec), correlator.shape(correlator.spec)
    for key, c in items:
        one_by_one.add(key, c)
    at_once.fill(items)
    slots = {slot for cls in type(at_once).__mro__ for slot in getattr(cls, "__slots__", ())}
    assert {slot: getattr(at_once, slot) for slot in slots} == {slot: getattr(one_by_one, slot) for slot in slots}
    assert list(at_once.events) == list(one_by_one.events)
    if items:
        assert at_once.aggregate() == one_by_one.aggregate() and at_once.complete() == one_by_one.complete()


LATENESS = st.integers(0, 10)


@st.composite
def shuffled_within_lateness(draw, records):
    """An arrival order in which no detection is more than ``lateness`` behind the newest
    time seen before it: arrival key = time + a delay in [0, lateness]."""
    lateness = draw(LATENESS)
    delays = draw(st.lists(st.integers(0, lateness), min_size=len(records), max_size=len(records)))
    timed = [i for i, r in enumerate(records) if r[0] is not None]
    order = sorted(timed, key=lambda i: (records[i][0] + delays[i], i))
    untimed = [r for r in records if r[0] is None]
    # detections without a time are ignored wherever they arrive
    stream = [records[i] for i in order]
    for r in untimed:
        stream.insert(draw(st.integers(0, len(stream))), r)
    return stream, lateness


@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_order_independence_within_lateness(kind, data):
    """No detection more than ``lateness`` behind the newest seen before it: the hits are
    those of the sorted stream (and so the oracle's), and nothing counts as late."""
    s = data.draw(SPECS[kind], label="spec")
    records = data.draw(RECORDS, label="detections")
    stream, lateness = data.draw(shuffled_within_lateness(records), label="arrival")
    newest = float("-inf")
    for r in stream:  # the generator's promise, checked
        if r[0] is not None:
            assert r[0] >= newest - lateness
            newest = max(newest, r[0])
    shuffled, correlator = run_correlator(s, stream, lateness)
    ordered, _ = run_correlator(s, by_time(records), lateness)
    assert correlator.late == 0
    assert shuffled == ordered == run_oracle(s, records)


@pytest.mark.parametrize("kind", ALL_KINDS)
@given(data=st.data())
def test_late_detections_never_join_an_episode_already_alerted(kind, data):
    """Any arrival order, late detections included: a group's alert takes none of the detections
    up to the time of its previous alert (firing consumes them, and a late one in a consumed
    episode is dropped, not evaluated at the watermark), and a group's alerts come in time order."""
    s = data.draw(SPECS[kind], label="spec")
    records = data.draw(RECORDS, label="detections")
    stream = data.draw(st.permutations(records), label="arrival")
    hits, _ = run_correlator(s, stream, data.draw(LATENESS, label="lateness"))
    time_of = {r[3]: r[0] for r in records}
    last = {}
    for t, group, idents, _ in hits:
        previous = last.get(group, float("-inf"))
        assert t > previous and all(time_of[i] > previous for i in idents), (t, group, previous)
        last[group] = t


# ------------------------------------------------------------------ hand-computed cases

def case(kind, rules, timespan, bounds, records, group_by=(), field=None, require_each=False):
    s = {"kind": kind, "rules": [(r, None) if isinstance(r, str) else r for r in rules],
         "timespan": timespan, "bounds": tuple(bounds), "group_by": tuple(group_by), "field": field,
         "require_each": require_each}
    full = [(t, rule, fields, i, (0,)) for i, (t, rule, fields) in enumerate(records)]
    hits, _ = run_correlator(s, by_time(full))
    assert hits == run_oracle(s, full)  # the oracle agrees on every hand-computed case too
    return hits


def test_temporal_ordered_rejects_reversed_order():
    reversed_ = case("temporal_ordered", ["a", "b"], 10, [("gte", 2)], [(1, "b", {}), (2, "a", {})])
    assert reversed_ == []
    in_order = case("temporal_ordered", ["a", "b"], 10, [("gte", 2)], [(1, "a", {}), (2, "b", {})])
    assert in_order == [(2, (), frozenset({0, 1}), 2)]
    # the same time counts as in order (non-decreasing times)
    tied = case("temporal_ordered", ["a", "b"], 10, [("gte", 2)], [(3, "b", {}), (3, "a", {})])
    assert tied == [(3, (), frozenset({0, 1}), 2)]


def test_value_count_counts_values_alike_but_for_letter_case_once():
    """Sigma compares values without letter case, and a Windows account or host name has none:
    'Admin', 'admin' and 'ADMIN' were three users (three hosts for the built-in rule's
    count(Computer)). A value stays while any event of the window spells it some way."""
    records = [(0, "a", {"User": ["Admin"]}), (1, "a", {"User": ["admin", "ADMIN"]}), (2, "a", {"User": ["bob"]}),
               (11, "a", {"User": ["alice"]})]
    hits = case("value_count", ["a"], 10, [("gte", 3)], records, field="User")
    assert hits == [(11, (), frozenset({1, 2, 3}), 3)]  # 'Admin' left at 11; 'admin' stayed
    correlator = Correlator(build_spec({"kind": "value_count", "rules": [("a", None)], "timespan": 10,
                                        "bounds": (("gte", 3),), "group_by": (), "field": "User",
                                        "require_each": False}))
    found = [hit for r in records for hit in correlator.observe(to_detection((*r, records.index(r), (0,))))]
    assert [hit.distinct_values for hit in found + correlator.flush()] == [("ADMIN", "alice", "bob")]


def test_value_avg_over_three_numbers():
    hits = case("value_avg", ["a"], 10, [("eq", 3)],
                [(0, "a", {"Val": ["1"]}), (1, "a", {"Val": ["2"]}), (2, "a", {"Val": ["6", "100"]})],
                field="Val")
    assert hits == [(2, (), frozenset({0, 1, 2}), 3.0)]  # (1 + 2 + 6) / 3; only first values count


def test_a_sum_beyond_a_double_is_the_largest_double_and_never_raises():
    """Two events of -1e308 bytes: the exact sum is -2e308, which ``float`` refuses (OverflowError, the
    stream stopped, and a saved state crashed every restart); the aggregate is the largest, signed."""
    big = sys.float_info.max
    hits = case("value_sum", ["a"], 10, [("lt", -1.5e308)],
                [(0, "a", {"Val": ["-1e308"]}), (1, "a", {"Val": ["-1e308"]})], field="Val")
    assert hits == [(1, (), frozenset({0, 1}), -big)]
    assert case("value_avg", ["a"], 10, [("lt", 1.2e308)],
                [(0, "a", {"Val": ["1.7e308"]}), (1, "a", {"Val": ["1.7e308"]}), (2, "a", {"Val": ["-1.7e308"]})],
                field="Val") == \
        [(2, (), frozenset({0, 1, 2}), 1.7e308 / 3)]  # through a sum beyond a double, exact


def test_value_avg_ignores_non_numbers():
    hits = case("value_avg", ["a"], 10, [("eq", 1.5)],
                [(0, "a", {"Val": ["1"]}), (0, "a", {"Val": ["x"]}), (0, "a", {"Val": ["nan"]}),
                 (0, "a", {}), (0, "a", {"Val": ["2"]})], field="Val")
    assert hits == [(0, (), frozenset(range(5)), 1.5)]


def test_value_percentile_picks_the_rarest_value():
    hits = case("value_percentile", ["a"], 10, [("lte", 30)],
                [(0, "a", {"Host": ["x"]}), (1, "a", {"Host": ["x"]}), (2, "a", {"Host": ["y"]}),
                 (3, "a", {"Host": ["x"]}), (3, "a", {})], field="Host")
    # t=0,1: only x (100%); t=2: y is 1 of 3 (33.3%); t=3: y is 1 of the 4 holding a value
    assert hits == [(3, (), frozenset(range(5)), 25.0)]


def test_value_percentile_takes_values_alike_but_for_letter_case_as_one():
    """As value_count and group-by do: admin and Admin are one account, not two values each rarer."""
    hits = case("value_percentile", ["a"], 10, [("lte", 30)],
                [(0, "a", {"User": ["admin"]}), (1, "a", {"User": ["Admin"]}), (2, "a", {"User": ["ADMIN"]}),
                 (3, "a", {"User": ["svc"]})], field="User")
    assert hits == [(3, (), frozenset(range(4)), 25.0)]
    spelled = case("value_percentile", ["a"], 10, [("lte", 30)],
                   [(0, "a", {"User": ["admin"]}), (1, "a", {"User": ["Admin"]}), (2, "a", {"User": ["ADMIN"]}),
                    (3, "a", {"User": ["ADMIN"]})], field="User")
    assert spelled == []  # one value in every event: 100 %, where each spelling counted was 25 %


def test_range_condition_rejects_too_many():
    hits = case("event_count", ["a"], 5, [("gt", 1), ("lt", 3)],
                [(0, "a", {}), (0, "a", {}), (0, "a", {}), (10, "a", {}), (11, "a", {})])
    # three in [0, 5] is outside the range; [10, 15] holds two: judged, and alerting, at its end
    assert hits == [(15, (), frozenset({3, 4}), 2)]


def test_consume_on_fire():
    hits = case("event_count", ["a"], 10, [("gte", 2)],
                [(0, "a", {}), (1, "a", {}), (2, "a", {}), (3, "a", {})])
    assert hits == [(1, (), frozenset({0, 1}), 2), (3, (), frozenset({2, 3}), 2)]


def test_consume_is_per_group():
    hits = case("event_count", ["a"], 10, [("gte", 2)],
                [(0, "a", {"User": ["bob"]}), (1, "a", {"User": ["alice"]}), (2, "a", {"User": ["alice"]}),
                 (3, "a", {"User": ["bob"]}), (3, "a", {"User": ["alice"]})], group_by=["User"])
    assert hits == [(2, ("alice",), frozenset({1, 2}), 2), (3, ("bob",), frozenset({0, 3}), 2)]


def test_require_each_and_window_edges():
    # a at 0 and b at 5: in one window only when timespan >= 5 (both ends included)
    records = [(0, "a", {}), (5, "b", {})]
    assert case("temporal", ["a", "b"], 4, [("gte", 2)], records) == []
    assert case("temporal", ["a", "b"], 5, [("gte", 2)], records) == [(5, (), frozenset({0, 1}), 2)]
    assert case("event_count", ["a", "b"], 5, [("gte", 1)], [(0, "a", {})], require_each=True) == []


def test_group_is_evaluated_only_at_its_own_times():
    # alice's window ending at t=3 would hold one event (2 or more), but t=3 is bob's time, not
    # hers: a group's windows end at its own event times, so other groups cannot make it fire
    hits = case("event_count", ["a"], 2, [("gte", 2)],
                [(0, "a", {"User": ["alice"]}), (2, "a", {"User": ["bob"]}), (3, "a", {"User": ["alice"]}),
                 (3, "a", {"User": ["bob"]})], group_by=["User"])
    assert hits == [(3, ("bob",), frozenset({1, 3}), 2)]
    # an upper bound: a group's windows start at its own events; alice's from 0 holds three (taken
    # without an alert), bob's from 3 one
    hits = case("event_count", ["a"], 2, [("lt", 2)],
                [(0, "a", {"User": ["alice"]}), (0, "a", {"User": ["alice"]}), (2, "a", {"User": ["alice"]}),
                 (3, "a", {"User": ["bob"]})], group_by=["User"])
    assert hits == [(5, ("bob",), frozenset({3}), 1)]


def test_an_upper_bound_is_judged_on_the_whole_timespan_after_a_groups_first_event():
    """"Fewer than 3 in 10 s": five events of one user within 5 s are not, though the window ending at
    the first holds it alone (before: five alerts of count 1).  Each window starts at the group's
    earliest event not yet taken, covers the timespan after it, is judged once complete, and takes
    its events whether it fires or not: the next event starts the next window."""
    burst = [(t, "a", {"User": ["amy"]}) for t in range(5)]
    assert case("event_count", ["a"], 10, [("lt", 3)], burst, group_by=["User"]) == []  # [0, 10] holds five
    apart = [(0, "a", {"User": ["amy"]}), (20, "a", {"User": ["amy"]})]
    assert case("event_count", ["a"], 10, [("lt", 3)], apart, group_by=["User"]) == \
        [(10, ("amy",), frozenset({0}), 1), (30, ("amy",), frozenset({1}), 1)]
    # a range: [0, 10] holds three (fires at its end), [30, 40] four (too many)
    ranged = [(t, "a", {}) for t in (0, 1, 2)] + [(t, "a", {}) for t in (30, 31, 32, 33)]
    assert case("event_count", ["a"], 10, [("gte", 2), ("lte", 3)], ranged) == [(10, (), frozenset({0, 1, 2}), 3)]
    # the same for distinct values and inputs: one value, fewer than two rules in 10 s
    values = [(0, "a", {"Host": ["h1"]}), (4, "a", {"Host": ["h1"]}), (8, "a", {"Host": ["h2"]})]
    assert case("value_count", ["a"], 10, [("eq", 1)], values, field="Host") == []  # h1 and h2 in [0, 10]
    assert case("value_count", ["a"], 3, [("eq", 1)], values, field="Host") == \
        [(3, (), frozenset({0}), 1), (7, (), frozenset({1}), 1), (11, (), frozenset({2}), 1)]
    assert case("temporal", ["a", "b"], 10, [("lt", 2)], [(0, "a", {}), (9, "b", {}), (20, "b", {})]) == \
        [(30, (), frozenset({2}), 1)]


def test_an_upper_bound_waits_for_the_watermark_to_pass_the_window_end():
    """Streaming: a window from s is judged when the watermark passes s + timespan, not before; an
    event of the group inside it that arrives until then is counted."""
    spec = CorrelationSpec(id="c", title="c", kind="event_count", rules=(RuleRef("a"),), timespan_ns=10,
                           condition=Threshold((("lt", 3),)), group_by=("User",))
    correlator = Correlator(spec)
    amy, other = {"User": ["amy"]}, {"User": ["zed"]}
    assert correlator.observe(Detection("a", 0, "h1", (0,), amy, {"ident": 0})) == []
    assert correlator.observe(Detection("a", 10, "h2", (0,), other, {"ident": 1})) == []
    assert correlator.observe(Detection("a", 10, "h1", (0,), other, {"ident": 2})) == []  # time 10 vouched for
    assert correlator.watermark == 10  # [0, 10] may still take an event at 10: not judged
    assert correlator.observe(Detection("a", 10, "h2", (0,), amy, {"ident": 3})) == []
    [hit] = correlator.observe(Detection("a", 11, "h1", (0,), other, {"ident": 4})) + \
        correlator.observe(Detection("a", 11, "h2", (0,), other, {"ident": 5}))
    assert (hit.time, hit.window_start, hit.group, hit.aggregate) == (10, 0, ("amy",), 2)
    assert [c.detection.event["ident"] for c in hit.contributions] == [0, 3]
    assert correlator.flush() == []  # end of input: zed's [10, 20] holds four, not fewer than 3


def test_one_detection_feeds_several_terms():
    # legacy window join: terms 0 and 1 of rule "r"; one detection meeting both completes it
    s = {"kind": "temporal", "rules": [("r", 0), ("r", 1)], "timespan": 0, "bounds": (("gte", 2),),
         "group_by": (), "field": None, "require_each": True}
    records = [(5, "r", {}, 0, (1,)), (7, "r", {}, 1, (0, 1)), (9, "r", {}, 2, (0,))]
    hits, _ = run_correlator(s, records)
    assert hits == run_oracle(s, records) == [(7, (), frozenset({1}), 2)]


def test_a_spec_naming_the_same_input_twice_is_refused():
    """It could never be complete under require_each (the window counts distinct inputs)."""
    with pytest.raises(ValueError, match="more than once"):
        case("event_count", ["a", "a"], 3, [("gte", 1)], [(0, "a", {})], require_each=True)


def test_sums_and_means_are_exact_on_the_numbers_as_written_in_decimal():
    """0.1 + 0.2 summed as doubles is 0.30000000000000004, which a rule's 0.3 (gte and lte) missed."""
    tenths = [(0, "a", {"Val": ["0.1"]}), (1, "a", {"Val": ["0.2"]})]
    assert case("value_sum", ["a"], 10, [("gte", 0.3), ("lte", 0.3)], tenths, field="Val") == \
        [(1, (), frozenset({0, 1}), 0.3)]
    assert case("value_avg", ["a"], 10, [("eq", 0.15)], tenths, field="Val") == [(1, (), frozenset({0, 1}), 0.15)]


def test_a_number_finer_than_any_double_costs_no_more_than_a_plain_one():
    """``1e-999999999`` is 12 bytes; summed exactly it was a fraction over 10**999999999, whose making
    never ended (``1e-30000000`` alone took 31 s).  Its digits below 1e-1100, far finer than the least
    double, are rounded off first: it is 0 to a sum, and still one number to a mean."""
    s = {"kind": "value_sum", "rules": [("a", None)], "timespan": 10, "bounds": (("eq", 2.5),), "group_by": (),
         "field": "Val", "require_each": False}

    def value_of(text):
        return SHAPES["value_sum"].value_of(build_spec(s), to_detection((0, "a", {"Val": [text]}, 0, (0,))))

    for text in ("1e-100000", "0." + "0" * 5000 + "1", "-1e-100000"):
        assert value_of(text) == 0 and value_of(text).denominator == 1
    assert value_of("1.5e-1100") == Fraction(2, 10 ** 1100)  # rounded half to even at the 1100th place
    assert value_of("0." + "0" * 1099 + "7") == Fraction(7, 10 ** 1100)  # as fine as that: as written
    records = [(0, "a", {"Val": ["5"]}, 0, (0,)), (1, "a", {"Val": ["1e-999999999"]}, 1, (0,))]
    assert run_correlator(dict(s, kind="value_avg"), records)[0] == [(1, (), frozenset({0, 1}), 2.5)]


def test_a_sum_is_compared_with_the_double_nearest_the_rules_number():
    """The aggregate of a sum or mean is the double nearest the exact one, so a rule's number is taken as the
    double nearest it too: bytes summing to exactly 12345678901234567890123 did not meet ``eq`` or ``gte``
    of that very number (the double is 12345678901234567741440, and Python compares it exactly)."""
    big, apart = 12345678901234567890123, 2 ** 30  # far more than the doubles' step there (2 ** 21)
    records = [(0, "a", {"Val": [str(big - apart)]}), (1, "a", {"Val": [str(big + apart)]})]
    for kind, number in (("value_sum", 2 * big), ("value_avg", big)):
        for bounds in ([("eq", number)], [("gte", number)], [("gte", number), ("lte", number)]):
            assert case(kind, ["a"], 10, bounds, records, field="Val") == \
                [(1, (), frozenset({0, 1}), float(number))], (kind, bounds)
        assert case(kind, ["a"], 10, [("gt", number)], records, field="Val") == []
    assert Threshold((("gte", 3),)).holds(3) and not Threshold((("gt", 3),)).holds(3)  # counts: ints, exact


def test_a_conditions_number_is_shown_as_the_rule_wrote_it():
    """``lte: 1.0e+23`` was shown in the alert's condition as 99999999999999991611392, the digits of the
    double nearest it, which no rule wrote; an integral double past 1e15 is shown as Python writes it."""
    assert str(Threshold((("lte", 1.0e23), ("gt", 0.1), ("gte", 1500.0), ("neq", 12345678901234567890123)))) == \
        "lte 1e+23 and gt 0.1 and gte 1500 and neq 12345678901234567890123"
    aggregation = parse_condition("sel | sum(bytes) by host > 100000000000000000000000").aggregation
    assert str(aggregation) == "sum(bytes) by host > 1e+23"
