"""The fleet's time (``correlate.agents``): each agent's heartbeats, the least agent time, and the
agents that must not hold it back (silent, idle, far behind)."""

import datetime
import json
import subprocess
import time as _time

import pytest
from hypothesis import given, settings, strategies as st

from clitools import COMMAND, alerts, ndjson, read_all, run_cli
from eventgen import flat_event
from pipeshell_filter.correlate.agents import NEVER, AgentClocks, Progress
from pipeshell_filter.detect import Heartbeat, WireError, from_wire

S = 10**9
SKEW = 300 * S


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_fleet_time_is_the_least_time_of_the_active_agents():
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    agents.see("a", 100 * S)
    agents.see("b", 50 * S)
    agents.see("c", 120 * S)
    assert agents.frontier() == 50 * S
    agents.see("b", 110 * S)
    assert agents.frontier() == 100 * S


def test_an_agent_ahead_cannot_move_the_fleet_time_and_one_far_behind_is_left_out_and_named():
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    agents.see("a", 1000 * S)
    agents.see("b", 1010 * S)
    agents.see("future", 10**6 * S)  # a clock far ahead
    assert agents.frontier() == 1000 * S
    agents.see("stuck", 10 * S)  # 990 s behind the time two agents vouch for
    assert agents.frontier() == 10 * S  # waited for: it may be catching up on a backlog
    assert agents.lagging() == []
    clock.now = 30
    agents.see("stuck", 500 * S)  # catching up
    agents.see("a", 1000 * S)
    agents.see("b", 1010 * S)
    agents.see("future", 10**6 * S)
    assert agents.frontier() == 500 * S
    clock.now = 61  # still far behind after the idle time: a wrong clock, or stuck; left out
    agents.see("stuck", 510 * S)
    assert agents.frontier() == 1000 * S
    assert [name for name, _ in agents.lagging()] == ["stuck"]
    assert agents.lagging() == []  # once
    agents.see("stuck", 990 * S)  # back within max_skew: it holds the time again
    assert agents.frontier() == 990 * S


def test_an_agent_left_out_counts_again_when_the_agents_ahead_fall_quiet():
    """Left out while two agents vouched for a time far ahead; once one of them says it is idle,
    the time two agents vouch for is the left-out agent's own, and it holds the fleet's time."""
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    for now in (0, 30, 61):
        clock.now = now
        for name, seconds in (("a", 3000), ("b", 3000), ("c", 1000)):
            agents.see(name, seconds * S)
        agents.frontier()
    assert agents.frontier() == 3000 * S and [name for name, _ in agents.lagging()] == ["c"]
    agents.see("b", 3000 * S, idle=True)
    assert agents.frontier() == 1000 * S


def test_a_silent_agent_drops_out_after_the_idle_timeout_and_an_idle_one_at_once():
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    agents.see("a", 100 * S)
    agents.see("b", 50 * S)
    clock.now = 30
    agents.see("a", 140 * S)
    assert agents.frontier() == 50 * S
    clock.now = 61  # b silent for 61 s
    assert agents.frontier() == 140 * S
    agents.see("b", 60 * S)  # b is back: it holds the time again (the watermark never moves back)
    assert agents.frontier() == 60 * S
    agents.see("b", 60 * S, idle=True)  # live input with nothing new: b says so
    assert agents.frontier() == 140 * S
    clock.now = 200  # every agent silent: what they sent is all there is
    assert agents.frontier() == 140 * S


def test_when_every_agent_is_quiet_one_agent_far_ahead_does_not_carry_the_fleet_time():
    """A clock in the future (or one forged heartbeat) on one agent: once the whole fleet is quiet
    its time counts only ``max_skew`` past the newest time two agents vouch for."""
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    for name, seconds in (("a", 1000), ("b", 1010), ("c", 1020)):
        agents.see(name, seconds * S)
    agents.see("a", 10**9 * S)  # 2001 -> a far future
    assert agents.frontier() == 1010 * S
    for name in "abc":
        agents.see(name, agents._time[name], idle=True)
    assert agents.frontier() == 1020 * S + SKEW
    clock.now = 200  # every agent silent
    assert agents.frontier() == 1020 * S + SKEW
    lone = AgentClocks(SKEW, idle=60, clock=clock)
    lone.see("a", 10**9 * S, idle=True)
    assert lone.frontier() == 10**9 * S  # one agent: its own time is all there is (bounded on the agent)


def test_a_bus_outage_is_no_agents_silence_and_an_idle_agent_counts_again_after_it():
    """Five minutes of an unreachable bus: both agents were silent past --agent-idle, so the first
    report after it (a at 400) was the fleet's time, and b's records from its idle time on, held
    through the outage, came late.  b said it was idle before; it may have read records since."""
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    agents.see("a", 100 * S)
    agents.see("b", 90 * S, idle=True)
    assert agents.frontier() == 100 * S
    clock.now += 300
    agents.input_back(300)
    agents.see("a", 400 * S)
    assert agents.frontier() == 90 * S and set(agents.active()) == {"a", "b"}
    agents.see("b", 95 * S)  # what it held
    assert agents.frontier() == 95 * S
    agents.see("b", 95 * S, idle=True)  # idle anew, now: a's time, no further than max_skew past b's
    assert agents.frontier() == 395 * S
    clock.now += 61  # a real silence still counts
    assert agents.active() == []


def test_after_a_restore_the_agents_known_move_the_fleet_time_again():
    """Restored agents counted as seen with the time 'never' worked out: their next reports said
    the time could not have moved, so it never did (a backlog after a restart piled up to the cap)."""
    agents = AgentClocks(SKEW, idle=60, clock=Clock())
    agents.restore([["a", 100 * S], ["b", 90 * S]])
    assert agents.see("a", 200 * S) | agents.see("b", 210 * S)
    assert agents.frontier() == 200 * S


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 10**4), st.booleans()), max_size=40))
def test_the_fleet_time_is_never_beyond_an_active_agent_that_is_not_far_behind(reports):
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    for name, seconds, idle in reports:
        agents.see(name, seconds * S, idle)
        frontier = agents.frontier()
        times = {a: agents._time[a] for a in agents.active()}
        if times:
            ranked = sorted(times.values(), reverse=True)
            vouched = ranked[1] if len(ranked) > 1 else ranked[0]
            assert all(frontier <= t for t in times.values() if t >= vouched - SKEW)
            everyone = sorted(agents._time.values())
            cap = everyone[-2] + SKEW if len(everyone) > 1 else float("inf")  # one agent's time, unvouched
            assert frontier in {min(t, cap) for t in times.values()}


class AgentsModel:
    """What ``AgentClocks`` promises, worked out from scratch at every call (a pass over every
    agent): the reference the kept-up-to-date lists are checked against."""

    def __init__(self, skew, idle, clock, expected, max_agents):
        self.skew, self.idle, self.clock, self.expected, self.max_agents = skew, idle, clock, expected, max_agents
        self.started = clock()
        self.time, self.heard, self.idle_set = {}, {}, set()
        self.since, self.behind, self.reported = {}, {}, set()
        self.last = float("-inf")
        self.wall = None

    def limit(self, agent):
        if self.wall is not None:
            return self.wall() + self.skew
        others = [time for name, time in self.time.items() if name != agent]
        return max(others) + self.skew if others else float("inf")

    def bound_by(self, wall):
        self.wall = wall
        for agent in [a for a, time in self.time.items() if time > wall() + self.skew]:
            del self.time[agent], self.heard[agent]
            self.idle_set.discard(agent)

    def see(self, agent, time, idle):
        if self.wall is not None and time > self.wall() + self.skew:
            return False
        old = self.time.get(agent)
        newer = old is None or time > old or (time < old and old > self.limit(agent))
        if newer:
            self.time[agent] = time
            self.idle_set.discard(agent)
        idle = idle and (newer or time >= old)  # an idle report older than the agent's time: sent again
        if idle or agent in self.idle_set:  # not active: its time behind starts again once it is
            self.since.pop(agent, None)
        if idle and agent not in self.idle_set:
            self.idle_set.add(agent)
            old = float("-inf")
        self.heard.pop(agent, None)
        self.heard[agent] = self.clock()
        if len(self.heard) > self.max_agents:
            gone = next(iter(self.heard))
            del self.heard[gone], self.time[gone]
            self.idle_set.discard(gone)
        return old is None or old <= self.last or self.last == float("-inf")

    def input_back(self, away):
        """The input was away: every agent heard, waiting since and the start that much later; none
        idle any more (it may have read records it holds)."""
        self.heard = {agent: heard + away for agent, heard in self.heard.items()}
        self.since = {agent: since + away for agent, since in self.since.items()}
        self.started += away
        self.idle_set.clear()

    def active(self):
        now = self.clock()
        return {a for a, heard in self.heard.items() if heard >= now - self.idle and a not in self.idle_set}

    def frontier(self):
        now = self.clock()
        if not self.time or (len(self.time) < self.expected and now - self.started < self.idle):
            return float("-inf")
        active = self.active()
        if not active:
            self.since = {}
            ranked = sorted(self.time.values())
            self.last = ranked[-1] if len(ranked) == 1 else min(ranked[-1], ranked[-2] + self.skew)
            return self.last
        ranked = sorted(self.time[a] for a in active)
        vouched = ranked[-2] if len(ranked) > 1 else ranked[-1]
        behind = {a for a in active if self.time[a] < vouched - self.skew}
        self.since = {a: self.since.get(a, now) for a in behind}
        out = {a for a in behind if now - self.since[a] >= self.idle}
        self.behind.update((a, vouched - self.time[a]) for a in out if a not in self.reported)
        self.last = min(self.time[a] for a in active - out)
        if self.wall is None and len(self.time) > 1:
            self.last = min(self.last, sorted(self.time.values())[-2] + self.skew)
        return self.last

    def lagging(self):
        found, self.behind = set(self.behind), {}
        self.reported |= found
        return found


REPORT = st.tuples(st.just("see"), st.sampled_from("abcde"), st.integers(0, 30).map(lambda t: t * 100),
                   st.sampled_from([False, False, False, True]))
TICKS = st.sampled_from([0, 1, 20, 45, 59, 60, 61, 200])
OPERATIONS = st.lists(st.one_of(REPORT, REPORT, st.just(("frontier",)), st.just(("again",)),
                                st.tuples(st.just("tick"), TICKS), st.tuples(st.just("away"), TICKS),
                                st.just(("lagging",)), st.just(("live",))), min_size=10, max_size=120)


@settings(max_examples=400, deadline=None)
@given(OPERATIONS, st.sampled_from([0, 3]), st.sampled_from([4, 100]), st.sampled_from([0, 300, 900]))
def test_the_agents_kept_in_order_agree_with_working_it_all_out_at_every_call(operations, expected, most, skew):
    """Every report, the fleet's time and the agents named as lagging, as the docstring's rules
    give them worked out from every agent at every call (silent, idle, far behind, waited for,
    left out, back within reach, forgotten past the most agents remembered, a time far past the
    others' given way, a time past the wall clock not believed once the input is live)."""
    from unittest import mock
    clock = Clock()

    def wall():  # reports go up to 3000 s: some are past it
        return int((1500 + clock.now) * S)

    with mock.patch("pipeshell_filter.correlate.agents.MAX_AGENTS", most):
        agents = AgentClocks(skew * S, idle=60, clock=clock, expected=expected)
        model = AgentsModel(skew * S, 60, clock, expected, most)
        for operation in operations:
            if operation[0] == "live":
                if model.wall is None:
                    agents.bound_by(wall)
                    model.bound_by(wall)
            elif operation[0] == "see":
                _, name, seconds, idle = operation
                assert agents.see(name, seconds * S, idle) == model.see(name, seconds * S, idle)
            elif operation[0] == "again":  # every agent says its time again (a live fleet that waits)
                for name in sorted(model.time):
                    assert agents.see(name, model.time[name]) == model.see(name, model.time[name], False)
            elif operation[0] == "tick":
                clock.now += operation[1]
            elif operation[0] == "away":  # the bus unreachable that long, then back
                clock.now += operation[1]
                agents.input_back(operation[1])
                model.input_back(operation[1])
            elif operation[0] == "frontier":
                assert agents.frontier() == model.frontier()
                assert set(agents.active()) == model.active()
            else:
                assert {name for name, _ in agents.lagging()} == model.lagging()
        assert agents.frontier() == model.frontier()


def agent_reports(draw_steps):
    """Reports as agents make them (``Progress``): each agent's times go up, an idle report says its
    newest time again."""
    reports, times = [], {}
    for name, step, idle in draw_steps:
        times[name] = times.get(name, 0) + (0 if idle else step)
        reports.append((name, times[name], idle))
    return reports


STEPS = st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 50), st.booleans()), min_size=2, max_size=60)


@settings(max_examples=300, deadline=None)
@given(STEPS, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=6))
def test_a_heartbeat_sent_again_or_late_leaves_the_fleet_time_as_it_was(steps, copies):
    """A shipper delivers at least once, and may deliver a retried chunk after newer ones: a report
    sent again, at any later point, moves nothing.  An idle report older than its agent's time took
    the agent out of the least time, and the records it still sent came late, their alerts lost."""
    reports = agent_reports(steps)
    after = {}  # report index -> the copies of earlier reports delivered right after it
    for which, where in copies:
        origin = which % len(reports)
        after.setdefault(origin + where % (len(reports) - origin), []).append(reports[origin])
    again = [(report, None if number == 0 else "copy") for index, original in enumerate(reports)
             for number, report in enumerate([original] + after.get(index, []))]
    once, twice = AgentClocks(10**9 * S, idle=60, clock=Clock()), AgentClocks(10**9 * S, idle=60, clock=Clock())
    expected = []
    for name, seconds, idle in reports:
        once.see(name, seconds * S, idle)
        expected.append(once.frontier())
    found, last = [], NEVER
    for (name, seconds, idle), copy in again:
        twice.see(name, seconds * S, idle)
        frontier = twice.frontier()
        if copy:
            assert frontier == last
        else:
            found.append(frontier)
        last = frontier
    assert found == expected


FORGED = st.tuples(st.integers(0, 200), st.sampled_from(["a", "b", "c", "evil"]), st.integers(1, 10**9),
                   st.booleans())


@settings(max_examples=300, deadline=None)
@given(OPERATIONS, st.lists(FORGED, max_size=8), st.sampled_from([0, 300, 900]))
def test_on_live_input_a_heartbeat_dated_past_the_wall_clock_changes_nothing(operations, forged, skew):
    """Forged heartbeats (a real agent's name or a new one, idle or not, anywhere in the stream),
    dated past the wall clock by more than max_skew: the fleet's time, the agents named and the
    state saved are those of the same stream without them (one under a real name stopped every
    later alert: the real agent's next reports were never newer)."""
    clock = Clock()

    def wall():
        return int((1500 + clock.now) * S)

    plain = AgentClocks(skew * S, idle=60, clock=clock, wall=wall)
    attacked = AgentClocks(skew * S, idle=60, clock=clock, wall=wall)
    named = set()
    for step, operation in enumerate(operations):
        for at, name, past, idle in forged:
            if at == step:
                assert not attacked.see(name, wall() + skew * S + past, idle)
                named.add(name)
        if operation[0] == "see":
            _, name, seconds, idle = operation
            assert plain.see(name, seconds * S, idle) == attacked.see(name, seconds * S, idle)
        elif operation[0] == "again":
            for name, time in plain.saved():
                plain.see(name, time)
                attacked.see(name, time)
        elif operation[0] in ("tick", "away"):
            clock.now += operation[1]
            if operation[0] == "away":
                plain.input_back(operation[1])
                attacked.input_back(operation[1])
        elif operation[0] == "frontier":
            assert plain.frontier() == attacked.frontier()
        elif operation[0] == "lagging":
            assert plain.lagging() == attacked.lagging()
    assert plain.frontier() == attacked.frontier() and plain.saved() == attacked.saved()
    assert {name for name, _ in attacked.ahead()} >= named and attacked.ahead() == []


def test_a_future_agent_time_restored_from_the_state_is_forgotten_once_the_input_is_live():
    """A state saved by a run that took a forged heartbeat: the agent's restored time is past the
    wall clock, so it is dropped when the input turns out live, and the agent's next report counts."""
    agents = AgentClocks(SKEW, idle=60, clock=Clock())
    agents.restore([["a1", 4102444800 * S], ["a2", 1000 * S]])
    agents.bound_by(lambda: 2000 * S)
    assert agents.saved() == [["a2", 1000 * S]]
    assert [name for name, _ in agents.ahead()] == ["a1"]
    agents.see("a1", 1100 * S)
    assert agents.frontier() == 1000 * S and agents.saved() == [["a2", 1000 * S], ["a1", 1100 * S]]


def test_without_a_wall_clock_an_agent_far_past_every_other_gives_way_to_its_next_report():
    """A file of records: nothing to check a first forged heartbeat against; once other agents
    show it is far ahead, the fleet's time goes no further than max_skew past theirs, and the
    agent's next (real, older) report replaces it."""
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    agents.see("a1", 1000 * S)
    agents.see("a2", 1010 * S)
    agents.see("a1", 4102444800 * S)  # forged under a real name
    agents.see("a2", 1020 * S, idle=True)
    assert agents.frontier() == 1020 * S + SKEW  # a1 alone is active: not carried to 2100
    agents.see("a1", 1030 * S)  # the real a1 again: older, but its time was vouched for by nobody
    assert agents.frontier() == 1030 * S
    agents.see("a1", 1025 * S)  # within reach of the others: an older report changes nothing
    assert agents.saved() == [["a1", 1030 * S], ["a2", 1020 * S]]


def test_progress_beats_every_so_often_in_event_time_and_says_the_last_time_at_the_end():
    progress = Progress("a", 10, SKEW)
    beats = [progress.see(t * S) for t in (0, 3, 9, 10, 25, 24, 31)]
    # the time two events reached: 0 once 3 is read, 10 once 25 is, 24 (and 25) once 24 is
    assert [b.time // S for b in beats if b] == [0, 10, 24]
    assert progress.last() == Heartbeat("a", 31 * S)
    assert progress.last() is None


def test_one_event_dated_ahead_does_not_carry_the_agents_time():
    """With one agent the fleet's time is its time: one line a day ahead made every later event late."""
    progress = Progress("a", 5, SKEW)
    beats = [progress.see(t * S) for t in (0, 10, 86400, 20, 30)]
    assert [b.time // S for b in beats if b] == [0, 10, 20, 30]
    assert Progress("a", 5, SKEW).see(86400 * S) is None  # alone, nothing vouches for it


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=40), st.integers(0, 40),
       st.integers(1, 10**9), st.sampled_from([1, 5, 60]))
def test_no_single_event_moves_the_agents_heartbeats(times, at, ahead, every):
    """Adding one event dated ahead never raises a heartbeat's time above what the events
    without it reached (but the last one's, at the end of input)."""
    progress = Progress("a", every, SKEW)
    plain = [t * S for t in times]
    sent = [b.time for b in map(progress.see, plain[:at] + [max(plain) + ahead * S] + plain[at:]) if b is not None]
    assert all(time <= max(plain) for time in sent)


def test_progress_believes_no_time_far_in_the_future_of_the_wall_clock_on_live_input():
    progress = Progress("a", 10, SKEW, wall=lambda: 1000 * S)
    assert progress.see(1100 * S) is None  # alone, nothing vouches for it
    assert progress.see(1200 * S).time == 1000 * S  # believed, but the agent's time stops at the wall clock
    assert progress.see(2000 * S) is None  # 1000 s ahead of the wall clock
    assert progress.newest == 1200 * S


def test_heartbeat_records_round_trip_and_bad_ones_are_one_line_errors():
    beat = Heartbeat("agent-7", 123, idle=True)
    assert from_wire(json.loads(json.dumps(beat.to_wire()))) == beat
    for bad in ({"agent": "", "time": 1}, {"agent": "a", "time": "1.5"}, {"agent": "a", "time": 1, "idle": 1},
                {"agent": "a", "time": 1, "version": 2}):
        record = {"type": "sigma.heartbeat", "version": 1, **bad}
        try:
            from_wire(record)
        except WireError as error:
            assert "\n" not in str(error)
        else:
            raise AssertionError(f"accepted {record}")


def _incident(offset=0):
    return [flat_event(offset + 0, "srv01", "server", 4104, record_id=1),
            flat_event(offset + 10, "cli01", "client", 4104, record_id=2),
            flat_event(offset + 20, "cli02", "client", 4104, record_id=3)]


def test_a_live_correlate_stage_alerts_when_the_agents_heartbeats_pass_the_window_not_at_the_end():
    """Two agents; the incident's hosts on both; later events that match nothing move each
    agent's time through its heartbeats, and the alert comes out while the input is still open."""
    parts = []
    for agent, hosts in (("agent-a", {"srv01"}), ("agent-b", {"cli01", "cli02"})):
        events = [e for e in _incident() if e["Computer"] in hosts]
        events += [flat_event(s, next(iter(hosts)), "benign", 4104, record_id=100 + s) for s in (200, 400, 500)]
        matched = run_cli(["--stage", "match", "--agent", agent, "--lateness", "60"], ndjson(events))
        assert matched.returncode == 0, matched.stderr
        parts.append(matched.stdout.splitlines())
    merged = [line for pair in zip(*parts) for line in pair] + parts[0][len(parts[1]):] + parts[1][len(parts[0]):]
    process = subprocess.Popen(COMMAND + ["--stage", "correlate", "--lateness", "60", "--idle", "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(b"\n".join(merged) + b"\n")
        process.stdin.flush()
        line = process.stdout.readline()  # blocks until the alert: the input is still open
        alert = json.loads(line)
        assert alert["event"]["kind"] == "alert"
        assert alert["related"]["hosts"] == ["cli01", "cli02", "srv01"]
    finally:
        process.stdin.close()
        rest = process.stdout.read()
        process.wait(timeout=30)
    assert not alerts(rest)  # and not again at the end


def test_without_heartbeats_the_same_input_waits_for_the_end():
    events = _incident() + [flat_event(s, "srv01", "benign", 4104, record_id=100 + s) for s in (200, 400)]
    matched = run_cli(["--stage", "match", "--heartbeat", "0"], ndjson(events))
    assert b"sigma.heartbeat" not in matched.stdout
    correlated = run_cli(["--stage", "correlate"], matched.stdout)
    assert len(alerts(correlated.stdout)) == 1


def test_bad_heartbeat_options_are_usage_errors():
    for args in (["--heartbeat", "-1"], ["--agent-idle", "nan"], ["--agent", " "]):
        result = run_cli(["--stage", "match", *args], b"")
        assert result.returncode == 2 and b"Traceback" not in result.stderr, args
        assert len(result.stderr.strip().splitlines()) == 1


def flat_time(seconds):
    from eventgen import iso
    from pipeshell_filter.events.timeparse import parse_time
    return parse_time(iso(seconds))


def test_an_agent_reading_input_files_beats_on_lines_that_match_nothing(tmp_path):
    """The skipped lines still move the agent's time: one line in every 64 KiB is parsed for it
    (a 445 KB file: 7 heartbeats at least), whether the file is read in blocks or line by line."""
    path = tmp_path / "quiet.ndjson"
    path.write_bytes(ndjson(flat_event(s, "ws01", "benign", 4104, record_id=s) for s in range(0, 3000)))
    for args in (["--input", str(path)], ["--input", str(path), "--input", str(path)]):
        result = run_cli(["--stage", "match", "--heartbeat", "60", *args])
        beats = [json.loads(line) for line in result.stdout.splitlines()]
        assert result.returncode == 0 and beats and all(b["type"] == "sigma.heartbeat" for b in beats)
        assert len(beats) >= 7 and beats[0]["time"] == flat_time(0) and beats[-1]["time"] >= flat_time(2800)


def test_an_agent_left_out_for_lagging_is_named_on_stderr(tmp_path):
    """Two agents in step, a third an hour behind for longer than --agent-idle: named once."""
    from pipeshell_filter.detect import Heartbeat as Beat

    def beat(agent, seconds):
        return json.dumps(Beat(agent, flat_time(seconds)).to_wire()).encode() + b"\n"

    process = subprocess.Popen(COMMAND + ["--stage", "correlate", "--agent-idle", "1", "--idle", "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(beat("a", 4000) + beat("b", 4000) + beat("slow", 400))
    process.stdin.flush()
    import time as _t
    for step in range(1, 4):  # the slow one keeps sending, still an hour behind
        _t.sleep(0.8)
        process.stdin.write(beat("a", 4000 + step) + beat("b", 4000 + step) + beat("slow", 400 + step))
        process.stdin.flush()
    process.stdin.close()
    err = process.stderr.read()
    assert process.wait(timeout=30) == 0
    named = [line for line in err.decode().splitlines() if "agent 'slow'" in line]
    assert len(named) == 1 and "behind the other agents" in named[0], err.decode()


NEWS_OPERATIONS = st.lists(st.one_of(st.tuples(st.just("see"), st.sampled_from("abcd"), st.booleans()),
                                     st.tuples(st.just("tick"), st.sampled_from([0, 1, 30, 59, 60, 61, 200])),
                                     st.tuples(st.just("away"), st.sampled_from([1, 100])),
                                     st.just(("news",)), st.just(("frontier",))), max_size=80)


@settings(max_examples=300, deadline=None)
@given(NEWS_OPERATIONS, st.sampled_from([0, 2, 5]))
def test_an_agent_gone_silent_is_told_once_and_so_is_its_return_and_the_end_of_the_wait_for_agents(operations,
                                                                                                expected):
    """An agent that sent nothing for ``idle`` seconds stopped holding the fleet's time back in silence,
    and so did the wait for ``--agents N`` end: each is news once, an agent's return after its silence
    too (silent again later: news again), and an outage of the input is no agent's silence."""
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock, expected=expected)
    heard, told, started, told_expected = {}, set(), 0.0, False
    queued = []

    def notice_silence():
        for name in sorted(heard, key=heard.get):
            if heard[name] < clock.now - 60 and name not in told:
                told.add(name)
                queued.append(("silent", name))

    for operation in operations:
        if operation[0] == "see":
            _, name, idle = operation
            agents.see(name, 1000 * S, idle)
            if name in told:
                told.discard(name)
                queued.append(("back", name))
            heard.pop(name, None)  # the order heard in, as ties are told
            heard[name] = clock.now
        elif operation[0] == "tick":
            clock.now += operation[1]
        elif operation[0] == "away":
            clock.now += operation[1]
            agents.input_back(operation[1])
            heard = {name: time + operation[1] for name, time in heard.items()}
            started += operation[1]
        elif operation[0] == "frontier":
            if heard and not (len(heard) < expected and clock.now - started < 60):
                notice_silence()
            agents.frontier()
        else:
            notice_silence()
            if expected and not told_expected and len(heard) < expected and clock.now - started >= 60:
                told_expected = True
                queued.append(("expected", len(heard)))
            news = agents.news()
            assert [(what, name) for what, name, _ in news] == queued
            assert all(seconds >= 60 for what, _, seconds in news if what in ("silent", "back"))
            queued = []


def test_an_agent_gone_silent_and_the_end_of_the_wait_for_agents_are_said_on_stderr(tmp_path):
    """Two agents of --agents 3 report, then one stops: both were dropped in silence."""
    from pipeshell_filter.detect import Heartbeat as Beat

    def beat(agent, seconds):
        return json.dumps(Beat(agent, flat_time(seconds)).to_wire()).encode() + b"\n"

    process = subprocess.Popen(COMMAND + ["--stage", "correlate", "--agent-idle", "1", "--agents", "3"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(beat("a", 100) + beat("b", 100))
    process.stdin.flush()
    import time as _t
    for step in range(1, 6):  # b says nothing more
        _t.sleep(0.5)
        process.stdin.write(beat("a", 100 + step))
        process.stdin.flush()
    process.stdin.write(beat("b", 106))
    process.stdin.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=30) == 0
    lines = err.splitlines()
    assert len([line for line in lines if "agent 'b' sent nothing for" in line]) == 1, err
    assert len([line for line in lines if "agent 'b' heard again after" in line]) == 1, err
    assert len([line for line in lines if "only 2 of the 3 agents of --agents reported" in line]) == 1, err
    assert not [line for line in lines if "agent 'a'" in line], err


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 100)), max_size=30), st.none() | st.floats(0.1, 30))
def test_the_correlators_clock_of_silence_moves_only_while_it_listens(stretches, longest):
    """``fleet.ListeningClock``: the time spent outside a fetch (a blocked ack or publish, the work on
    what came) is no agent's silence: an agent heard before is silent only after ``idle`` seconds of
    listening, however long the correlator was deaf in between.  A fetch listens ``longest`` seconds at
    most (its wait): the rest of a longer one is the process held up (stopped, frozen), which counted
    as the agents' silence, every agent silent after a pause of the correlator."""
    from pipeshell_filter.io import fleet
    now = Clock()
    real = fleet.time.monotonic
    fleet.time.monotonic = now
    try:
        clock = fleet.ListeningClock(longest)
        agents = AgentClocks(SKEW, idle=60, clock=clock)
        agents.see("a", 100 * S)
        listened, listening_before, so_far = 0.0, False, 0.0
        for listening, seconds in stretches:
            before = clock()
            (clock.listen if listening else clock.deaf)()
            # one fetch goes on across two listening stretches in a row
            so_far = 0.0 if not (listening and listening_before) else so_far
            heard = min(seconds, max(0.0, longest - so_far)) if listening and longest is not None else seconds
            now.now += seconds
            so_far += seconds
            assert clock() == pytest.approx(before + (heard if listening else 0.0))
            listened += heard if listening else 0.0
            listening_before = listening
            if abs(listened - 60) > 1e-6:  # not on the edge, where rounding decides
                assert agents.active() == (["a"] if listened < 60 else []), (listened, stretches)
    finally:
        fleet.time.monotonic = real


def test_a_flood_of_agent_names_left_out_behind_is_not_remembered_past_the_agents_kept(monkeypatch):
    """Each agent named as left out behind was kept in a set for good, after the agent itself was
    forgotten (past ``MAX_AGENTS``): a compromised agent sending heartbeats under fresh names, behind
    the fleet's time, grew it without end.  What is remembered of an agent goes with it."""
    from pipeshell_filter.correlate import agents as agents_module
    monkeypatch.setattr(agents_module, "MAX_AGENTS", 40)
    clock = Clock()
    agents = AgentClocks(SKEW, idle=60, clock=clock)
    named = []
    for round_ in range(25):
        fresh = [f"forged-{round_}-{n}" for n in range(30)]
        for _ in range(2):  # heard twice, 61 s apart: waited for, then left out
            for name in ("a", "b"):
                agents.see(name, (1000 + clock.now) * S)
            for name in fresh:
                agents.see(name, 10 * S)
            agents.frontier()
            clock.now += 61
        named += [name for name, _ in agents.lagging()]
        remembered = len(agents._time)
        assert remembered <= 40
        assert len(agents._reported) <= remembered, round_
    assert len(named) > 40  # the flood was named as it came


def test_on_live_input_a_host_minutes_fast_does_not_carry_the_agents_time_past_the_wall_clock(tmp_path):
    """Two lines of a host whose clock runs minutes fast (more than the lateness, within ``--max-skew``)
    vouched for the agent's time on live input, being believed: with one agent the fleet's time is its
    time, and the incident of a host on time after them was all late in ``--stage correlate`` (0 alerts,
    1 from ``--stage all``).  The agent's time stops at the wall clock."""
    rule = tmp_path / "three.yml"
    rule.write_text("title: three blocks\nid: three\ndetection:\n  sel: {EventID: 4104}\n"
                    "  condition: sel | count() by Computer >= 3\n  timeframe: 1m\n")
    now = datetime.datetime.now(datetime.timezone.utc)

    def line(seconds, host):
        stamp = (now + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps({"EventID": 4104, "Computer": host, "@timestamp": stamp}).encode() + b"\n"

    process = subprocess.Popen(COMMAND + ["--stage", "match", "--rule", str(rule), "--lateness", "60"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(line(0, "srv01") + line(200, "fast") + line(201, "fast"))
    process.stdin.flush()
    read_all(process.stdin)
    _time.sleep(1)
    out, err = process.communicate(line(2, "cli01") + line(3, "cli01") + line(4, "cli01"), timeout=60)
    assert process.returncode == 0, err
    (tmp_path / "detections.ndjson").write_bytes(out)
    result = run_cli(["--stage", "correlate", "--rule", str(rule), "--lateness", "60",
                      "--input", str(tmp_path / "detections.ndjson")])
    assert [a["related"]["hosts"] for a in alerts(result.stdout)] == [["cli01"]], result.stderr
