"""One source with a wrong clock never blinds the filter to the others (per-source event time)."""

import re
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from clitools import COMMAND, alerts, ndjson, read_all, run_cli
from eventgen import BASE, SERVER, evtx_event, flat_event
import resolvers
from pipeshell_filter.cli import Join, load_plans
from pipeshell_filter.correlate.clock import NEVER, SourceClocks
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.timeparse import NS
from pipeshell_filter.sigma.condition import Aggregation
from test_correlation_properties import BASE_NS, run, shuffled_within_lateness

INCIDENT = [evtx_event(0, "srv01", "server", 4104, 1), evtx_event(30, "cli01", "client", 800, 2),
            evtx_event(60, "cli02", "client", 4103, 3)]
YEAR_2099 = (2099 - BASE.year) * 365 * 86400


@st.composite
def wrong_clock(draw):
    """Events of one extra host whose clock is wrong: far ahead, far behind, or both, by more
    than the window, the lateness and the tolerated skew together, so that they cannot take part
    in the others' windows (where events of a right clock legitimately could)."""
    far = 300 + 400 + 300 + 1
    events = []
    for i in range(draw(st.integers(1, 12))):
        direction = draw(st.sampled_from([1, -1]))
        offset = draw(st.integers(far, 10 * far)) if draw(st.booleans()) else draw(st.integers(far, YEAR_2099))
        seconds = (900 + offset) if direction > 0 else -offset
        kind = draw(st.sampled_from(["server", "client", "both"]))
        events.append((seconds, "skewed", kind, draw(st.sampled_from([800, 4103, 4104])), 1000 + i))
    return events


@given(shuffled_within_lateness(), wrong_clock(), st.data())
def test_a_wrong_clock_never_removes_an_alert_of_the_other_hosts(case, skewed, data):
    stream, lateness = case
    base, _ = run(stream, lateness)
    merged = list(stream)
    for event in skewed:  # anywhere in the stream, in any order
        merged.insert(data.draw(st.integers(0, len(merged))), event)
    extended, _ = run(merged, lateness)
    others = [a for a in extended if not any(i >= 1000 for i in a[1])]
    assert set(base) <= set(others), (base, others)


def test_one_event_dated_2099_before_an_incident_does_not_blind_the_filter(tmp_path):
    """A file: no wall clock to check times against (a pipe: ``..._dated_2099_on_a_pipe_...``)."""
    future = flat_event(YEAR_2099, "broken", "server", 4104)
    (tmp_path / "in.ndjson").write_bytes(ndjson([future] + INCIDENT))
    result = run_cli(["--lateness", "60", "--input", str(tmp_path / "in.ndjson")])
    assert result.returncode == 0, result.stderr
    found = alerts(result.stdout)
    assert len(found) == 1 and found[0]["related"]["hosts"] == ["cli01", "cli02", "srv01"]
    assert b"'broken'" in result.stderr and b"ahead of the other sources" in result.stderr


def test_a_host_an_hour_ahead_and_one_an_hour_behind_do_not_blind_the_filter():
    ahead = [flat_event(3600 + s, "fast", "client", 4104) for s in (0, 20, 40)]
    behind = [flat_event(-3600 + s, "slow", "server", 4104) for s in (0, 20, 40, 80)]
    stream = [ahead[0], INCIDENT[0], behind[0], ahead[1], INCIDENT[1], behind[1], ahead[2], INCIDENT[2], behind[2]]
    result = run_cli(["--lateness", "60"], ndjson(stream))
    found = alerts(result.stdout)
    assert [a["related"]["hosts"] for a in found] == [["cli01", "cli02", "srv01"]]
    assert b"'slow' is behind" in result.stderr


def test_alerts_of_correct_hosts_come_out_within_lateness_and_idle_despite_a_skewed_host():
    """Live input: the skewed host keeps sending; the incident's alert still comes out about
    lateness + idle seconds after its last event."""
    process = subprocess.Popen(COMMAND + ["--lateness", "2", "--idle", "1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(ndjson([flat_event(YEAR_2099, "broken", "server", 4104)] + INCIDENT))
        process.stdin.flush()
        read_all(process.stdin)  # the wait starts when the lines are read, not with the filter's start-up
        started = time.monotonic()
        line = process.stdout.readline()  # the input stays open
        waited = time.monotonic() - started
        assert b'"kind":"alert"' in line
        assert waited < 2 + 1 + 3, waited  # lateness + idle, and slack for a loaded machine
    finally:
        process.stdin.close()
        process.wait(timeout=30)


@given(st.lists(st.tuples(st.sampled_from("aab"), st.integers(0, 50)), max_size=40))
def test_the_time_is_what_two_sources_vouch_for_and_two_events_of_the_only_one_are_kept_apart(reports):
    """The second-newest source time (NEVER with one source: a first source may be a wrong clock);
    while there is one source, ``one_source_time`` is the second-newest of its event times, which
    the correlator takes only when too many events wait (``ONE_SOURCE_HELD``)."""
    clocks, seen = SourceClocks(300), {}
    for source, event_time in reports:
        before = clocks.reference
        rose = clocks.see(source, event_time)
        seen.setdefault(source, []).append(event_time)
        if len(seen) > 1:
            assert clocks.reference == sorted(max(times) for times in seen.values())[-2]
            assert clocks.one_source_time == NEVER
        else:
            times = sorted(next(iter(seen.values())))
            assert clocks.reference == NEVER
            assert clocks.one_source_time == (times[-2] if len(times) > 1 else NEVER)
        assert rose == (clocks.reference > before)


@given(st.lists(st.one_of(st.tuples(st.just("see"), st.sampled_from("abcd"), st.integers(0, 2000)),
                          st.tuples(st.just("bound"), st.just(""), st.integers(0, 2000)),
                          st.tuples(st.just("restore"), st.just(""), st.integers(0, 3))), max_size=60),
       st.integers(1, 3))
def test_the_kept_top_two_follow_every_change_of_the_sources(steps, cap):
    """``reference`` and ``newest`` are kept as the sources change (each correlation read them several
    times per detection, from a SortedList): through events, a source pushed out by the cap or
    forgotten behind the horizon, a wall clock that forgets the future, a state put back, they are
    the second-newest and the newest source times; the sources that came behind another are kept ones."""
    clocks = SourceClocks(100, cap=cap, horizon_ns=500)
    for what, source, value in steps:
        if what == "see":
            clocks.see(source, value)
        elif what == "bound":
            clocks.bound_by(lambda: value)
        else:
            clocks.restore(clocks.saved()[:value], clocks.came_behind())
        times = sorted(time for _, time in clocks.saved())
        assert clocks.reference == (times[-2] if len(times) > 1 else NEVER)
        assert clocks.newest == (times[-1] if times else NEVER)
        # which came behind another: of the sources kept only (``solo_time`` counts them)
        assert clocks._came_behind <= {source for source, _ in clocks.saved()}


def test_one_line_ahead_then_a_pause_on_a_pipe_does_not_make_the_others_late():
    """A replay on a pipe whose first line is one host's event dated 57 minutes ahead, then a
    pause: the one source's time was trusted at the pause (a replay of the past has no wall clock
    to check it against), and the incident after it was all late: 0 alerts, 1 from the file."""
    ahead = ndjson([flat_event(3400, "srv09", "server", 4104)])
    process = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(ahead)
    process.stdin.flush()
    read_all(process.stdin)  # the filter has read the line (on a slow start the pause came before it)
    time.sleep(1.5)  # and waits: it settles
    out, err = process.communicate(ndjson(INCIDENT), timeout=30)
    assert process.returncode == 0
    assert [a["related"]["hosts"] for a in alerts(out)] == [["cli01", "cli02", "srv01"]], err
    assert alerts(run_cli([], ahead + ndjson(INCIDENT)).stdout) == alerts(out)


def test_one_host_alone_on_a_live_pipe_still_alerts_while_the_input_stays_open(tmp_path):
    """With one source only, two of its events vouch for its time: a single host's live stream
    (one domain controller's log) alerts after lateness + idle, not at the end of input."""
    rule = tmp_path / "count.yml"
    rule.write_text("title: many script blocks\nlogsource: {product: windows}\ndetection:\n"
                    "  sel: {EventID: 4104}\n  condition: sel | count() >= 3\n  timeframe: 1m\n")
    process = subprocess.Popen(COMMAND + ["--rule", str(rule), "--lateness", "1", "--idle", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(ndjson([flat_event(t, "dc01", "benign", 4104) for t in (0, 1, 2, 3)]))
        process.stdin.flush()
        read_all(process.stdin)  # as above
        started = time.monotonic()
        line = process.stdout.readline()  # the input stays open
        assert b'"kind":"alert"' in line
        assert time.monotonic() - started < 1 + 1 + 1 + 3  # the last event's second, lateness, idle, slack
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def run_live(events, lateness, wall_ns):
    """``run`` on live input whose wall clock reads ``wall_ns`` (``Engine.live``)."""
    engine = Engine(load_plans(None, Join("window")), resolvers.auto(), lateness * NS)
    engine.correlation.wall = lambda: wall_ns
    engine.live()
    records = []
    for seconds, host, kind, event_id, ident in events:
        records += engine.process(flat_event(seconds, host, kind, event_id, record_id=ident)).alerts
    records += engine.flush()
    return [frozenset(e["record_id"] for e in r["sigma"]["events"]) for r in records], engine


@st.composite
def future_sources(draw):
    """Events of two or more hosts (two hosts of one broken time server, or forged lines under
    several names) dated more than ``--max-skew`` past the wall clock, which reads the end of the
    stream's span (900 s)."""
    hosts = draw(st.integers(2, 4))
    events = []
    for i in range(draw(st.integers(hosts, 12))):
        offset = draw(st.integers(300 + 1, YEAR_2099)) if draw(st.booleans()) else draw(st.integers(301, 3000))
        kind = draw(st.sampled_from(["server", "client", "both"]))
        events.append((900 + offset, f"future{i % hosts}", kind, draw(st.sampled_from([800, 4103, 4104])), 1000 + i))
    return events


@given(shuffled_within_lateness(), future_sources(), st.data())
def test_on_live_input_sources_dated_past_the_wall_clock_never_remove_an_alert_of_the_others(case, future, data):
    """Two lines dated 2099 under two host names were two sources vouching for 2099: every later
    event was late, no alert for the rest of the run (and with --state, of the next ones)."""
    stream, lateness = case
    wall = BASE_NS + 900 * NS
    base, _ = run_live(stream, lateness, wall)
    merged = list(stream)
    for event in future:  # anywhere in the stream, in any order
        merged.insert(data.draw(st.integers(0, len(merged))), event)
    extended, engine = run_live(merged, lateness, wall)
    others = [a for a in extended if not any(i >= 1000 for i in a)]
    assert set(base) <= set(others), (base, others)
    assert engine.correlation_stats()["late"] == 0


def test_two_hosts_dated_2099_on_a_pipe_do_not_blind_the_filter(tmp_path):
    future = [flat_event(YEAR_2099, "evil1", "server", 4104, 100),
              flat_event(YEAR_2099 + 1, "evil2", "server", 4104, 101)]
    path = str(tmp_path / "state.json")
    result = run_cli(["--lateness", "60", "--state", path], ndjson(future + INCIDENT))  # stdin: a pipe
    assert result.returncode == 0, result.stderr
    assert [a["related"]["hosts"] for a in alerts(result.stdout)] == [["cli01", "cli02", "srv01"]]
    assert b"'evil1' is dated" in result.stderr and b"past the wall clock" in result.stderr
    later = [flat_event(600 + s, h, k, e, 10 + i) for i, (s, h, k, e) in
             enumerate([(0, "srv02", "server", 4104), (30, "cli03", "client", 800), (60, "cli04", "client", 4103)])]
    again = run_cli(["--lateness", "60", "--state", path], ndjson(later))  # the state kept nothing of 2099
    assert [a["related"]["hosts"] for a in alerts(again.stdout)] == [["cli03", "cli04", "srv02"]], again.stderr


def test_an_incident_whose_hosts_are_all_past_the_wall_clock_still_alerts_at_the_end_of_input(tmp_path):
    """Not one source believed, so no source clock at all: the end of input (and a pause) passed over the
    correlation, as one that had no event yet, and its events were lost."""
    future = [flat_event(YEAR_2099 + s, h, k, e, i) for i, (s, h, k, e) in
              enumerate([(0, "srv01", "server", 4104), (30, "cli01", "client", 800), (60, "cli02", "client", 4103)])]
    for extra in ([], ["--state", str(tmp_path / "state.json")]):
        result = run_cli(["--lateness", "60"] + extra, ndjson(future))  # stdin: a pipe
        assert [a["related"]["hosts"] for a in alerts(result.stdout)] == [["cli01", "cli02", "srv01"]], result.stderr


def test_one_event_dated_a_day_ahead_does_not_blind_the_correlate_stage_of_one_agent(tmp_path):
    """The agent's heartbeats are the fleet's time when it is the only agent: they followed its newest
    event, so one line a day ahead made the incident's detections late (0 alerts, where one process
    gives 1); they follow what two of its events reached now."""
    future = flat_event(86400, "broken", "server", 4104, 100)
    (tmp_path / "in.ndjson").write_bytes(ndjson([future] + INCIDENT))
    match = run_cli(["--stage", "match", "--agent", "a1", "--input", str(tmp_path / "in.ndjson")])
    assert match.returncode == 0, match.stderr
    assert b'"sigma.heartbeat"' in match.stdout
    correlate = run_cli(["--stage", "correlate"], match.stdout)
    assert correlate.returncode == 0, correlate.stderr
    assert [a["related"]["hosts"] for a in alerts(correlate.stdout)] == [["cli01", "cli02", "srv01"]], \
        correlate.stderr


def test_two_events_dated_ahead_on_the_only_agent_are_said_to_set_the_fleets_time(tmp_path):
    """Two lines a day ahead do carry a lone agent's time (README), and the incident's detections are
    late: the correlate stage said the honest hosts were "behind the other sources", as if their
    clocks were wrong; it says they are behind the fleet's time, which the agents' heartbeats set."""
    future = [flat_event(86400 + n, "broken", "server", 4104, 100 + n) for n in range(2)]
    (tmp_path / "in.ndjson").write_bytes(ndjson(future + INCIDENT))
    match = run_cli(["--stage", "match", "--agent", "a1", "--input", str(tmp_path / "in.ndjson")])
    assert match.returncode == 0, match.stderr
    correlate = run_cli(["--stage", "correlate"], match.stdout)
    assert correlate.returncode == 0 and alerts(correlate.stdout) == [], correlate.stderr
    said = [line for line in correlate.stderr.decode().splitlines() if "too late to count" in line]
    assert said and all("is behind the fleet's time (the least of its agents' heartbeats" in line for line in said)
    assert not any("behind the other sources" in line for line in correlate.stderr.decode().splitlines())


def test_the_last_host_of_a_file_after_a_quiet_spell_is_no_wrong_clock():
    """Detections are few: a lone event of one host fifteen minutes after the rest, the file's last, was
    said to be "ahead of the other sources" at the end (the bench corpus's last decoy did so).  Nothing
    contradicts its clock; a host ahead whose events others follow, dated behind it, is still said."""
    late = flat_event(900, "srv09", "server", 4104)
    quiet = run_cli(["--lateness", "60"], ndjson(INCIDENT + [late]))
    assert quiet.returncode == 0 and len(alerts(quiet.stdout)) == 1, quiet.stderr
    assert b"ahead" not in quiet.stderr and b"wrong clock" not in quiet.stderr, quiet.stderr
    followed = run_cli(["--lateness", "60"], ndjson([INCIDENT[0], late] + INCIDENT[1:]))
    assert b"'srv09' is 8" in followed.stderr and b"ahead of the other sources" in followed.stderr, followed.stderr
    first = run_cli(["--lateness", "60"], ndjson(INCIDENT + [flat_event(900, "srv01", "server", 4104)]))
    assert b"ahead" not in first.stderr, first.stderr  # the file's first host: ahead until a second one sent


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 1000)), max_size=40), st.booleans())
def test_at_the_end_a_source_is_said_ahead_only_when_others_sent_since_it_last_went_ahead(reports, midway):
    """A source is ahead when its newest time is more than ``max_skew`` past the second-newest; at the
    end it is said to be so only when another source sent after it last went ahead.  A source that went
    ahead once, was caught up, and went ahead again as the file's lone last host (the first host of a
    file, ahead of nobody before a second one sent) was said to be a wrong clock: its first mark stood."""
    clocks, newest, went_ahead, followed = SourceClocks(100), {}, None, False
    for n, (source, event_time) in enumerate(reports):
        clocks.see(source, event_time)
        if midway and n == len(reports) // 2:
            clocks.ahead(0)  # a live check on the way: no patience spent, nothing said
        newest[source] = max(newest.get(source, event_time), event_time)
        ranked = sorted(newest, key=newest.get)
        top = ranked[-1]
        ahead = top if len(ranked) < 2 or newest[top] > newest[ranked[-2]] + 100 else None
        if ahead != went_ahead:
            went_ahead, followed = ahead, False
        elif ahead is not None and source != ahead:
            followed = True
    said = [source for source, _ in clocks.ahead(0, final=True)]
    assert said == ([went_ahead] if went_ahead is not None and followed and len(newest) > 1 else [])


def test_a_source_ahead_in_a_restored_state_is_no_wrong_clock_unless_others_send():
    """The state keeps each source's newest time, not who sent after whom: a host ahead at the end of one
    run, unsaid there (nobody followed it), was said to be ahead at the end of the next one with no input."""
    clocks = SourceClocks(100)
    clocks.see("a", 0)
    clocks.see("b", 1000)
    assert clocks.ahead(0, final=True) == []
    for later in ([], [("b", 1001)], [("a", 1)]):
        again = SourceClocks(100)
        again.restore(clocks.saved())
        for source, event_time in later:
            again.see(source, event_time)
        assert [source for source, _ in again.ahead(0, final=True)] == (["b"] if ("a", 1) in later else [])


def test_on_live_input_a_chatty_host_an_hour_behind_does_not_hold_back_the_other_hosts_alert(tmp_path):
    """Two sources: the victim's, at the wall clock, and one whose clock runs an hour behind and that
    keeps sending.  Neither vouched for the other, and each event of the one behind moved the time two
    sources reached, which reset the idle timer: the victim's alert waited for the end of input (and
    the victim was named as the wrong clock).  On live input the wall clock tells them apart: a time
    not after it, and no more than ``--max-skew`` before it, has happened."""
    rule = tmp_path / "by_host.yml"
    rule.write_text("title: three on one host\nid: by-host\ndetection:\n  sel: {ScriptBlockText|contains: NamedPipe}\n"
                    "  condition: sel | count() by Computer >= 3\n  timeframe: 2m\n")
    now = [0.0]
    engine = Engine(load_plans([str(rule)], None), resolvers.auto(), 2 * NS, clock=lambda: now[0])
    wall = BASE_NS + 86400 * NS
    engine.correlation.wall = lambda: wall + int(now[0] * NS)
    engine.live()
    alerts = []
    for i in range(3):
        alerts += engine.process(flat_event(86400, "victim", "server", 4104, i)).alerts
    for second in range(1, 30):
        now[0] = float(second)
        alerts += engine.process(flat_event(86400 - 3600 + second, "behind", "client", 4104, 100 + second)).alerts
        alerts += engine.settle() + engine.idle(1.0)
    assert ["victim"] in [a["related"]["hosts"] for a in alerts]
    named = " ".join(line for _, line in engine.correlation.skew_reports(final=True))
    assert "'behind' is behind" in named and "'victim'" not in named


def test_on_live_input_one_line_dated_now_does_not_make_the_hosts_of_a_pipeline_running_late_late():
    """The wall clock breaks the tie of two sources only: with more, two of them vouch for the time, and
    a single line dated now (the wall clock vouching for it too) must not carry it past them."""
    engine = Engine(load_plans(None, Join("window")), resolvers.auto(), 60 * NS, clock=lambda: 0.0)
    wall = BASE_NS + 86400 * NS
    engine.correlation.wall = lambda: wall
    engine.live()
    running_late = [flat_event(86400 - 600 + s, h, k, 4104, i) for i, (s, h, k) in
                    enumerate([(0, "srv01", "server"), (30, "cli01", "client")])]
    for event in running_late:
        engine.process(event)
    engine.process(flat_event(86400, "forged", "benign", 4104, 99) | {"ScriptBlockText": f"{SERVER}"})
    engine.settle()
    alerts = engine.process(flat_event(86400 - 600 + 60, "cli02", "client", 4104, 3)).alerts + engine.flush()
    assert [a["related"]["hosts"] for a in alerts] == [["cli01", "cli02", "srv01"]]
    assert engine.correlation_stats()["late"] == 0


@pytest.mark.parametrize("other", ["1970", "an hour behind", "two hosts in 1970"])
def test_a_line_of_another_host_far_behind_does_not_hold_a_busy_hosts_stream_to_its_end(other):
    """One line dated 1970 from a second host (or an hour behind) was the time two sources vouch for
    for the rest of the run: every later event of the one busy host waited for the end of input, and
    past the cap was shed unevaluated (one such line among 130,000 failed logons of one host: 49,999
    alerts of 65,000, 387 MB).  Once ``ONE_SOURCE_HELD`` events of that host alone wait, what two of
    its events reached is the time, as for a host alone."""
    from pipeshell_filter.correlate.correlator import ONE_SOURCE_HELD
    from test_correlation_properties import detection, legacy_correlator

    correlator = legacy_correlator(1, 60 * NS, Aggregation("count", None, None, ">", 2), 30 * NS)
    worst, hits = 0, 0
    for i in range(3 * ONE_SOURCE_HELD):  # one event a second from one host: a hit every 3 events
        hits += len(correlator.observe(detection(BASE_NS + i * NS, 1, "dc01", i)))
        if i == 5:
            when = BASE_NS + (i - 3600) * NS if other == "an hour behind" else 0
            hits += len(correlator.observe(detection(when, 1, "ws02", -1)))
            if other == "two hosts in 1970":  # (two of them: the second-newest time is theirs)
                hits += len(correlator.observe(detection(when, 1, "ws03", -2)))
        worst = max(worst, correlator.state_size())
    assert worst <= ONE_SOURCE_HELD + 10 and correlator.shed == 0
    assert hits > 2 * ONE_SOURCE_HELD // 3  # the windows before the last ONE_SOURCE_HELD events came out
    hits += len(correlator.flush())
    assert hits == ONE_SOURCE_HELD  # and none was lost


def test_a_burst_of_one_host_dated_2099_does_not_carry_the_time_of_the_host_before_it():
    """The other way round: one host's log, then more than ``ONE_SOURCE_HELD`` lines of a second host
    dated 2099 in a row (a forged host, a clock far off), then the first host's incident: it alerts.
    The burst's host came ahead of the time the first vouched for: it is the suspect, not the other."""
    from pipeshell_filter.correlate.correlator import ONE_SOURCE_HELD
    from test_correlation_properties import detection, legacy_correlator

    correlator = legacy_correlator(1, 60 * NS, Aggregation("count", None, None, ">", 2), 30 * NS)
    hits = []
    for i in range(10):
        hits += correlator.observe(detection(BASE_NS + i * 100 * NS, 1, "dc01", i))
    for i in range(3 * ONE_SOURCE_HELD):
        hits += correlator.observe(detection(BASE_NS + YEAR_2099 * NS + i * NS, 1, "evil", 100 + i))
    incident = [BASE_NS + (2000 + i) * NS for i in range(3)]
    for i, when in enumerate(incident):
        hits += correlator.observe(detection(when, 1, "dc01", 50 + i))
    hits += correlator.flush()
    assert [hit.time for hit in hits if hit.time < BASE_NS + YEAR_2099 * NS] == [incident[-1]]


def test_a_line_far_behind_stays_the_suspect_across_a_restart_with_state():
    """``--state`` keeps each source's newest time: the line dated 1970 was back as the time two sources
    vouch for in every run after it (a cron job reading on from its state held the busy host's stream to
    each run's end).  Which source came behind the other is kept with the clocks."""
    from pipeshell_filter.correlate import state as state_module
    from pipeshell_filter.correlate.correlator import ONE_SOURCE_HELD
    from pipeshell_filter.detect import Detection
    from test_correlation_properties import legacy_correlator

    def detection(time, host, line):  # whole, as a state file holds it
        return Detection("r", time, host, (0,), {"Computer": [host]}, {"line": line, "selections": ["sel"]})

    def fresh():
        return legacy_correlator(1, 60 * NS, Aggregation("count", None, None, ">", 2), 30 * NS)

    first = fresh()
    for i in range(10):
        first.observe(detection(BASE_NS + i * NS, "dc01", i + 1))
    first.observe(detection(0, "ws02", 10**6))
    saved = state_module.decode(state_module.encode({"lines": 0, "correlations": {"r": state_module.capture(first)}}),
                                "state")["correlations"]["r"]
    correlator = fresh()
    state_module.restore(correlator, saved)
    worst = 0
    for i in range(10, 3 * ONE_SOURCE_HELD):
        correlator.observe(detection(BASE_NS + i * NS, "dc01", i + 1))
        worst = max(worst, correlator.state_size())
    assert worst <= ONE_SOURCE_HELD + 20 and correlator.shed == 0  # (the first run's 11 too)


@pytest.mark.parametrize("ahead", [100, 200, 290])
def test_on_live_input_a_host_minutes_fast_does_not_make_the_others_late_at_a_pause(tmp_path, ahead):
    """A host whose clock runs minutes fast (more than the lateness, less than ``--max-skew``) was taken at
    each pause on live input, being within ``--max-skew`` of the wall clock: the watermark went to its time
    minus the lateness, and the incident of a host on time that came after the pause was all late, out of
    any window (0 alerts, 1 without the fast host).  A time past the wall clock is not final at a pause."""
    rule = tmp_path / "three.yml"
    rule.write_text("title: three blocks\nid: three\ndetection:\n  sel: {EventID: 4104}\n"
                    "  condition: sel | count() >= 3\n  timeframe: 1m\n")
    found = {}
    for fast in (True, False):
        now = [0.0]
        engine = Engine(load_plans([str(rule)], None), resolvers.auto(), 60 * NS, clock=lambda: now[0])
        engine.correlation.wall = lambda: BASE_NS + int(now[0] * NS)  # the hosts on time are at the wall clock
        engine.live()
        alerts = engine.process(flat_event(0, "srv01", "benign", 4104, 1)).alerts
        if fast:
            for i in range(2):
                alerts += engine.process(flat_event(ahead + i, "fast", "benign", 4104, 10 + i)).alerts
        alerts += engine.settle()
        now[0] = 3.0
        alerts += engine.idle(2.0)
        for second in (5, 6, 7):  # the incident of a host on time, after the pause
            now[0] = float(second)
            alerts += engine.process(flat_event(second, "cli01", "benign", 4104, second)).alerts
        alerts += engine.flush()
        found[fast] = [a["related"]["hosts"] for a in alerts]
        assert engine.correlation_stats()["late"] == 0, fast
    assert found[False] == [["cli01", "srv01"]]
    assert ["cli01", "srv01"] in found[True]


@pytest.mark.parametrize("behind", [600, 365 * 86400])
def test_sources_that_agree_past_this_machines_clock_are_said_to_point_at_it(behind):
    """Every host dated ``behind`` seconds past this machine's clock: each was named past the wall clock,
    as a forged line would be, and nothing said that the one clock they all disagree with is this
    machine's, nor that no correlation would alert before the end of input.  Said once, counted nowhere:
    times past the wall clock stay unbelieved (two forged hosts can agree too)."""
    base = time.time() - BASE.timestamp() + behind  # flat_event's seconds of this machine's clock, plus behind
    process = subprocess.Popen(COMMAND + ["--lateness", "2", "--idle", "1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for n, host in enumerate(["srv01", "srv02", "srv03"]):
            process.stdin.write(ndjson([flat_event(base + n, host, "server", 4104, n)]))
            process.stdin.flush()
            time.sleep(0.5)
    finally:
        out, err = process.communicate(timeout=30)
    [hint] = [line for line in err.decode().splitlines() if "past this machine's clock" in line]
    low, high = re.fullmatch(r"pipeshell-filter: correlation: 2 sources are dated ([0-9.e+]+)-([0-9.e+]+) s past "
                             r"this machine's clock: if it is this machine's clock that is behind \(check its time "
                             r"sync\), their events wait and no correlation alerts before the end of input",
                             hint).groups()
    assert behind - 30 < float(low) <= float(high) < behind + 30, hint
    assert "source(s) with a wrong clock" in err.decode().splitlines()[-1]  # the summary counts sources alone
