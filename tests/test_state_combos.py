"""The stateful options together: ``--suppress``, ``--early-alerts``, ``--state`` with a stop that
flushes or keeps the windows, across restarts.

A stream cut at random lines, each part run by a fresh filter that takes back the state the last
one saved, against one run over the whole stream: with ``--on-stop keep`` the restarts are invisible
byte for byte; with end of input (a pause, whose flush may alert) the output is that of one filter
that pauses at the same places and goes on.
"""

import json
import tempfile

from hypothesis import event, given, strategies as st

from clitools import alerts, ndjson, run_cli

from eventgen import raw_events
from test_correlation_documents import CHAIN, chain_event
from test_stages import SINGLE
from test_state import PLANS, alert_records, assert_no_event_alerts_twice, feed, lines_of, new_filter
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import BUILTIN_RULE, load_rule, parse_rule

FEWER = """title: Fewer than three pipe events on one host
id: fewer-by-host
detection:
  sel:
    ScriptBlockText|contains: NamedPipe
  condition: sel | count() by Computer < 3
  timeframe: 1m
"""

# the test_state set (built-in rule joined by window, count() by Computer, a single-event rule); the built-in
# rule joined by event, and a count with an upper bound (windows judged once complete, never at a pause)
PLAN_SETS = {"state": PLANS,
             "event-join": [compile_plan(load_rule(BUILTIN_RULE, builtin=True), join="event"),
                            compile_plan(parse_rule(SINGLE, "single.yml"))],
             "upper": [compile_plan(parse_rule(FEWER, "fewer.yml")), compile_plan(parse_rule(SINGLE, "single.yml"))]}


def run_parts(parts, lateness, suppress, early, state_path, how, plans=PLANS) -> bytes:
    """Each part by a fresh filter restored from ``state_path`` (``how``: ``end``, end of input; ``keep``,
    a stop request with ``--on-stop keep`` while the rest of the stream is still to be read)."""
    outputs = []
    for i, part in enumerate(parts):
        with tempfile.TemporaryFile() as sink:
            stream_filter = new_filter(sink, lateness, "alerts", state_path, early, plans, suppress)
            if how == "end" or i == len(parts) - 1:
                feed(stream_filter, part)
            else:  # the stop comes once the part is read, the rest still to come
                feed(stream_filter, b"".join(parts[i:]), stop_at=len(part), keep_open=True)
            sink.seek(0)
            outputs.append(sink.read())
    return b"".join(outputs)


def run_paused(parts, lateness, suppress, early, state_path, plans=PLANS) -> bytes:
    """One filter that pauses (end of input with ``--state``) between the parts and goes on."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, "alerts", state_path, early, plans, suppress)
        for part in parts:
            feed(stream_filter, part)
        sink.seek(0)
        return sink.read()


@st.composite
def cut_streams(draw):
    events = draw(raw_events(max_size=30))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), min_size=1, max_size=2)))
    return events, cuts


def _cut(events, cuts) -> tuple:
    """The events' lines, and the parts the cuts make of them."""
    lines = lines_of(events)
    bounds = [0] + cuts + [len(lines)]
    return lines, [b"".join(lines[start:end]) for start, end in zip(bounds, bounds[1:])]


# --lateness, --suppress (seconds), --early-alerts, the rules
OPTIONS = (st.sampled_from([0, 30, 400]), st.sampled_from([1, 60, 600]), st.booleans(),
           st.sampled_from(sorted(PLAN_SETS)))


@given(cut_streams(), *OPTIONS)
def test_stops_that_keep_the_windows_are_invisible_with_suppress_and_early_alerts(tmp_path_factory, case, lateness,
                                                                                  suppress, early, plans):
    lines, parts = _cut(*case)
    plans = PLAN_SETS[plans]
    folder = tmp_path_factory.mktemp("combo")
    whole = run_parts([b"".join(lines)], lateness, suppress, early, str(folder / "whole.json"), "end", plans)
    cut = run_parts(parts, lateness, suppress, early, str(folder / "cut.json"), "keep", plans)
    made = alert_records(whole)
    event(f"alerts: {min(len(made), 3)}; a count carried: {any(a['sigma']['suppressed'] for a in made)}")
    assert cut == whole


@given(cut_streams(), *OPTIONS)
def test_pauses_then_restarts_are_one_filter_pausing_with_suppress_and_early_alerts(tmp_path_factory, case, lateness,
                                                                                    suppress, early, plans):
    lines, parts = _cut(*case)
    plans = PLAN_SETS[plans]
    folder = tmp_path_factory.mktemp("combo")
    cut = run_parts(parts, lateness, suppress, early, str(folder / "cut.json"), "end", plans)
    assert cut == run_paused(parts, lateness, suppress, early, str(folder / "paused.json"), plans)
    assert json.load(open(folder / "cut.json"))["lines"] == len(lines)
    made = alert_records(cut)
    assert_no_event_alerts_twice(made)


def test_a_pause_whose_flush_alerts_nothing_leaves_an_inner_correlation_of_a_chain_as_it_was(tmp_path):
    """The inner correlation (no ``generate``: it makes no alert) fired at the pause's flush on lines 1-2, and
    that episode was consumed: line 3, on time in one run (within the lateness), was left out, and the outer
    alert listed line 2 where one run lists line 3.  A pause that alerts on nothing changes nothing."""
    rules = tmp_path / "chain.yml"
    rules.write_text(CHAIN % ("60s", "gte: 2", "10m"))
    events = [chain_event(seconds, kind, host) for seconds, kind, host in
              ((0, "a", "h1"), (10, "a", "h2"), (5, "a", "h3"), (20, "b", "h1"))]
    args = ["--rule", str(rules), "--lateness", "30", "--quiet"]
    whole = run_cli(args, ndjson(events))
    assert [[e["line"] for e in a["sigma"]["events"]] for a in alerts(whole.stdout)] == [[3, 4]]
    state = str(tmp_path / "state.json")
    first = run_cli(args + ["--state", state], ndjson(events[:2]))
    rest = run_cli(args + ["--state", state], ndjson(events[2:]))
    assert first.stdout == b"" and rest.stdout == whole.stdout
