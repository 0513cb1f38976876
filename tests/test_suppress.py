"""``--suppress DURATION``: one alert per rule (or correlation) and host (or group) per period of event
time; the key's next alert says how many were suppressed.

The properties run the engine in process on random streams (several rules, hosts, times out of
order) and compare with an oracle written here over the alerts of a run without the option: it
reads each alert's key, time and hosts from the records themselves.  A stream cut anywhere and
restarted with ``--state`` gives what one run gives.  Then the command line.
"""

import io
import json
import tempfile
from collections import Counter

from hypothesis import event, given, strategies as st

from clitools import alerts, ndjson, records, run_cli, run_cli_here
from eventgen import flat_event
from test_stages import BY_HOST, SINGLE, write
from test_state import feed, new_filter
from pipeshell_filter.correlate import state as state_module
from pipeshell_filter.correlate.suppress import Suppressor, single_key
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.events.timeparse import NS, parse_time
from pipeshell_filter.io.stream import Diagnostics, Filter, Output
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule

CLIENT_RULE = """title: Pipe client in any script event
id: single-client
detection:
  selection:
    - ScriptBlockText|contains: NamedPipeClientStream
    - Payload|contains: NamedPipeClientStream
    - EventData|contains: NamedPipeClientStream
  condition: selection
"""

# two single-event rules and a count() by Computer correlation (whose rule alerts through it alone)
PLANS = [compile_plan(parse_rule(SINGLE, "single.yml")), compile_plan(parse_rule(CLIENT_RULE, "client.yml")),
         compile_plan(parse_rule(BY_HOST, "by.yml"))]
SINGLES = [compile_plan(parse_rule(SINGLE, "single.yml")), compile_plan(parse_rule(CLIENT_RULE, "client.yml"))]
RESOLVER = FieldResolver(builtin_profiles())
NEVER = float("-inf")


def lines_of(events) -> list:
    # mixed letter case: a host is one key whatever the case its events write
    return [json.dumps(flat_event(seconds, host.upper() if ident % 3 == 0 else host, kind, event_id,
                                  record_id=ident)).encode() + b"\n"
            for seconds, host, kind, event_id, ident in events]


def run(data: bytes, lateness: int, suppress: int = 0, state_path=None, plans=PLANS) -> tuple:
    """One process, as it were: (its output, the engine)."""
    with tempfile.TemporaryFile() as sink:
        stream_filter = new_filter(sink, lateness, "alerts", state_path, plans=plans, suppress=suppress)
        feed(stream_filter, data)
        sink.seek(0)
        return sink.read(), stream_filter.engine


def key_of(alert: dict) -> tuple:
    """An alert's key as its record tells it: the rule and its host, or the correlation and its group."""
    sigma = alert["sigma"]
    if "aggregation" in sigma:
        return "correlation", alert["rule"]["id"], str(sigma["aggregation"].get("group")).casefold()
    hosts = alert["related"]["hosts"]
    return "rule", alert["rule"]["id"], hosts[0].casefold() if hosts else None


def oracle(made: list, period: int, lateness: int) -> list:
    """(event.id, suppressed) of the alerts ``--suppress`` lets out, from the alerts made without it
    (in the order they were made).  Per key: the first goes out and opens [t, t + period); one in the
    open period is counted; one after it goes out with the count and opens the next; one before its
    start goes out with 0.  A period with nothing counted is gone once the time two hosts' alerts
    reached, less the lateness, passed its end; a correlation's, once its own newest alert time, less the
    lateness, did."""
    newest, periods, out, newest_of = {}, {}, [], {}
    for alert in made:
        time = parse_time(alert.get("@timestamp")) if "@timestamp" in alert else None
        hosts = alert["related"]["hosts"] or [None]
        ranked = sorted(newest.values())
        watermark = ranked[-2] - lateness * NS if len(ranked) > 1 else NEVER
        if time is not None:
            for host in hosts:
                newest[host] = max(newest.get(host, time), time)
        key = key_of(alert)
        if key[0] == "correlation":
            watermark = newest_of[key[1]] - lateness * NS if key[1] in newest_of else NEVER
            if time is not None:
                newest_of[key[1]] = max(newest_of.get(key[1], time), time)
        start, count = periods.get(key, (None, 0))
        if start is not None and count == 0 and start + period * NS <= watermark:
            start = None
        if time is None:
            out.append((alert["event"]["id"], 0))
        elif start is not None and start <= time < start + period * NS:
            periods[key] = (start, count + 1)
        elif start is not None and time < start:
            out.append((alert["event"]["id"], 0))
        else:
            out.append((alert["event"]["id"], count if start is not None else 0))
            periods[key] = (time, 0)
    return out


@st.composite
def streams(draw, max_size=40):
    """(seconds, host, kind, EventID, record id): events over 20 minutes on three hosts, in time order
    but for a few moved, or in any order."""
    events = draw(st.lists(st.tuples(st.integers(0, 1200), st.sampled_from(["srv01", "cli01", "ws04"]),
                                     st.sampled_from(["server", "client", "both", "benign"]),
                                     st.sampled_from([4104, 4104, 4104, 4103])), min_size=3, max_size=max_size))
    if draw(st.booleans()):
        events.sort()
        for _ in range(draw(st.integers(0, 4))):
            if len(events) > 1:
                i, j = draw(st.integers(0, len(events) - 1)), draw(st.integers(0, len(events) - 1))
                events[i], events[j] = events[j], events[i]
    return [(seconds, host, kind, event_id, i + 1) for i, (seconds, host, kind, event_id) in enumerate(events)]


@given(streams(), st.sampled_from([0, 30, 400]), st.sampled_from([1, 30, 120, 600]))
def test_the_alerts_let_out_are_those_the_oracle_keeps_and_the_counts_add_up(events, lateness, period):
    data = b"".join(lines_of(events))
    made = alerts(run(data, lateness)[0])
    output, engine = run(data, lateness, period)
    shown = alerts(output)
    assert [(a["event"]["id"], a["sigma"]["suppressed"]) for a in shown] == oracle(made, period, lateness)
    assert len(shown) + engine.stats["suppressed"] == len(made)
    # per rule or correlation (``--rule-stats``): its alerts with the option, and the others suppressed
    made_by, shown_by = Counter(a["rule"]["id"] for a in made), Counter(a["rule"]["id"] for a in shown)
    assert {rule.id: (alerted, fires, suppressed) for rule, _, alerted, fires, suppressed, *_ in engine.rule_counts()
            if fires} == {rule: (shown_by[rule], made_by[rule], made_by[rule] - shown_by[rule]) for rule in made_by}
    event(f"suppressed: {bool(engine.stats['suppressed'])}, a count carried: "
          f"{any(a['sigma']['suppressed'] for a in shown)}, "
          f"correlation alerts: {any(key_of(a)[0] == 'correlation' for a in made)}")
    assert sum(a["sigma"]["suppressed"] for a in shown) <= engine.stats["suppressed"]
    # what goes out is what would have gone out without the option, but for the new key
    unsuppressed = {a["event"]["id"]: a for a in made}
    for alert in shown:
        assert {k: v for k, v in alert["sigma"].items() if k != "suppressed"} == \
            unsuppressed[alert["event"]["id"]]["sigma"]


@given(streams(max_size=30), st.lists(st.integers(0, 30), min_size=1, max_size=2), st.sampled_from([0, 30, 400]),
       st.sampled_from([60, 600]))
def test_a_stream_cut_anywhere_and_restarted_with_state_suppresses_as_one_run(tmp_path_factory, events, cuts,
                                                                              lateness, period):
    """Single-event rules: a pause (end of input with --state) alerts on nothing, so the restarts are
    invisible byte for byte, a period open at the cut suppressing on in the next run."""
    lines = lines_of(events)
    folder = tmp_path_factory.mktemp("suppress")
    whole, _ = run(b"".join(lines), lateness, period, plans=SINGLES)
    path = str(folder / "state.json")
    bounds = [0] + sorted(min(cut, len(lines)) for cut in cuts) + [len(lines)]
    outputs = [run(b"".join(lines[start:end]), lateness, period, path, SINGLES)[0]
               for start, end in zip(bounds, bounds[1:])]
    assert b"".join(outputs) == whole


@given(streams(max_size=30), st.sampled_from([0, 30]))
def test_a_snapshot_taken_back_is_the_same_snapshot(events, lateness):
    engine = Engine(PLANS, RESOLVER, lateness * NS, suppress_ns=300 * NS)
    engine.take_once()
    for line in lines_of(events):
        engine.process(json.loads(line))
    saved = json.loads(state_module.encode(engine.snapshot()))
    again = Engine(PLANS, RESOLVER, lateness * NS, suppress_ns=300 * NS)
    again.take_once()
    assert again.restore(saved) == []
    assert json.loads(state_module.encode(again.snapshot())) == saved


# ---------------------------------------------------------------- memory


def test_periods_the_watermark_passed_with_nothing_suppressed_are_forgotten():
    suppressor = Suppressor(60 * NS, 0, 300 * NS)
    for second in range(100_000):  # a host alerting once each, a second apart
        assert suppressor.admit(single_key("r", f"h{second}"), second * NS, [f"h{second}"]) == 0
    assert len(suppressor.open) <= 2 * 1024 + 60
    assert suppressor.forgotten == 0


def test_past_the_cap_the_period_opened_longest_ago_is_forgotten():
    suppressor = Suppressor(3600 * NS, 0, 300 * NS, cap=100)
    for host in range(150):  # all within one period: nothing passes
        assert suppressor.admit(single_key("r", f"h{host}"), host * NS, [f"h{host}"]) == 0
        assert suppressor.admit(single_key("r", f"h{host}"), host * NS, [f"h{host}"]) is None
    assert len(suppressor.open) == 100 and suppressor.forgotten == 50
    assert single_key("r", "h0") not in suppressor.open and single_key("r", "h149") in suppressor.open
    assert suppressor.admit(single_key("r", "h0"), 200 * NS, ["h0"]) == 0  # its count went with it (in the total)


def test_one_host_dated_in_the_future_does_not_end_the_other_hosts_periods():
    suppressor = Suppressor(600 * NS, 0, 300 * NS)
    year_2099 = 4_000_000_000 * NS
    assert suppressor.admit(single_key("r", "a"), 0, ["a"]) == 0
    assert suppressor.admit(single_key("r", "forged"), year_2099, ["forged"]) == 0
    for second in range(1, 200):
        assert suppressor.admit(single_key("r", "a"), second * NS, ["a"]) is None
    assert suppressor.admit(single_key("r", "a"), 600 * NS, ["a"]) == 199


def test_on_live_input_an_alert_dated_past_the_wall_clock_opens_no_period_of_its_key():
    """One line of a host dated 2099 (a forged line, a clock reset at boot) opened its key's period
    in 2099: every later alert of that host and rule was dated before it and went out, until 2099
    and across restarts.  On live input such a time is not believed (as ``SourceClocks`` does)."""
    now = 1_700_000_000 * NS
    year_2099 = 4_000_000_000 * NS
    suppressor = Suppressor(3600 * NS, 0, 300 * NS)
    wall = [now]
    suppressor.bound_by(lambda: wall[0])
    key = single_key("r", "a")
    assert suppressor.admit(key, now - 10 * NS, ["a"]) == 0
    assert suppressor.admit(key, year_2099, ["a"]) == 0  # goes out, as one without a time
    assert suppressor.admit(key, now - 5 * NS, ["a"]) is None  # the period opened 10 s ago goes on
    wall[0] = now + 3600 * NS
    assert suppressor.admit(key, now + 3600 * NS, ["a"]) == 1
    # a period saved at 2099 (by a replay, or an older build) is forgotten once the input is live
    saved = Suppressor(3600 * NS, 0, 300 * NS)
    assert saved.admit(key, year_2099, ["a"]) == 0
    restarted = Suppressor(3600 * NS, 0, 300 * NS)
    restarted.restore(json.loads(json.dumps(saved.saved())))
    restarted.bound_by(lambda: now)
    assert restarted.admit(key, now, ["a"]) == 0 and restarted.admit(key, now + NS, ["a"]) is None
    bound_first = Suppressor(3600 * NS, 0, 300 * NS)  # the state taken back once the input is known live
    bound_first.bound_by(lambda: now)
    bound_first.restore(json.loads(json.dumps(saved.saved())))
    assert bound_first.admit(key, now, ["a"]) == 0 and bound_first.admit(key, now + NS, ["a"]) is None


# ---------------------------------------------------------------- the command line

NOISY = [flat_event(seconds, "srv01", "server", 4104, record_id=seconds + 1) for seconds in (0, 10, 20, 700, 710)]


def summary(result) -> str:
    return result.stderr.decode().strip().splitlines()[-1]


def test_the_option_takes_seconds_or_sigma_durations_and_refuses_anything_else(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    for value, out in (("10m", 2), ("600", 2), ("600.0", 2), ("1h", 1), ("0", 5), ("0s", 5), ("1", 5)):
        result = run_cli_here(["--rule", rule, "--suppress", value], ndjson(NOISY))
        assert result.returncode == 0 and len(alerts(result.stdout)) == out, (value, result.stderr)
    for value in ("", "5x", "-1", "inf", "nan", "1e99", "3M", "\u0663", "99999999999d", "10 minutes",
                  "1e-10", "0.0000000001", "1e-300", "1_0", "6_0_0"):
        result = run_cli_here(["--rule", rule, "--suppress", value], ndjson(NOISY))
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "--suppress" in lines[0], (value, lines)
        assert result.stdout == b""


def test_the_summary_and_the_stats_record_count_the_alerts_suppressed(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    result = run_cli_here(["--rule", rule, "--suppress", "10m", "--stats-interval", "3600"], ndjson(NOISY))
    shown = alerts(result.stdout)
    assert [a["sigma"]["suppressed"] for a in shown] == [0, 2]  # 10 and 20 s, then 700 carries them; 710 is taken
    assert "2 alerts; 3 alerts suppressed" in summary(result)
    stats = [r for r in records(result.stdout) if r["event"]["kind"] == "metric"][-1]["pipeshell"]
    assert (stats["alerts"], stats["suppressed"]) == (2, 3)
    without = run_cli_here(["--rule", rule, "--stats-interval", "3600"], ndjson(NOISY))
    assert "suppressed" not in summary(without) and "suppressed" not in alerts(without.stdout)[0]["sigma"]
    assert [r for r in records(without.stdout) if r["event"]["kind"] == "metric"][-1]["pipeshell"]["suppressed"] == 0


def test_a_correlation_alert_is_suppressed_per_group(tmp_path):
    rule = write(tmp_path, "by.yml", BY_HOST)
    events = [flat_event(seconds, host, "server", 4104, record_id=i) for i, (seconds, host) in
              enumerate([(s, "srv01") for s in (0, 1, 2, 200, 201, 202, 900, 901, 902)] + [(5, "cli01"), (6, "cli01"),
                                                                                            (7, "cli01")])]
    events.sort(key=lambda e: e["@timestamp"])
    made = alerts(run_cli_here(["--rule", rule], ndjson(events)).stdout)
    assert len(made) == 4
    result = run_cli_here(["--rule", rule, "--suppress", "10m"], ndjson(events))
    shown = [(a["sigma"]["aggregation"]["group"], a["@timestamp"][11:19], a["sigma"]["suppressed"])
             for a in alerts(result.stdout)]
    assert shown == [("srv01", "13:00:02", 0), ("cli01", "13:00:07", 0), ("srv01", "13:15:02", 1)]
    assert "3 alerts; 1 alert suppressed" in summary(result)


def test_a_match_stage_refuses_the_option_and_two_stages_suppress_as_one(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    refused = run_cli_here(["--rule", rule, "--stage", "match", "--suppress", "10m"], ndjson(NOISY))
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert b"--suppress needs --stage all or --stage correlate" in refused.stderr
    detections = run_cli(["--rule", rule, "--stage", "match", "--heartbeat", "0"], ndjson(NOISY)).stdout
    split = run_cli_here(["--rule", rule, "--stage", "correlate", "--suppress", "10m"], detections)
    together = run_cli_here(["--rule", rule, "--suppress", "10m"], ndjson(NOISY))
    assert split.returncode == 0 and split.stdout == together.stdout and len(alerts(split.stdout)) == 2
    assert "3 alerts suppressed" in summary(split)


def test_a_restart_mid_period_keeps_suppressing_and_an_older_state_still_loads(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    state = str(tmp_path / "state.json")
    first = run_cli(["--rule", rule, "--suppress", "10m", "--state", state], ndjson(NOISY[:2]))
    assert [a["sigma"]["suppressed"] for a in alerts(first.stdout)] == [0]
    saved = json.load(open(state))
    assert saved["suppress"]["periods"] == [["single-4104", "srv01", saved["suppress"]["periods"][0][2], 1]]
    rest = run_cli(["--rule", rule, "--suppress", "10m", "--state", state], ndjson(NOISY[2:]))
    assert [a["sigma"]["suppressed"] for a in alerts(rest.stdout)] == [2]  # 20 s suppressed, 700 s says both
    # a state saved without the option: no period, every alert's key starts afresh
    older = str(tmp_path / "older.json")
    run_cli(["--rule", rule, "--state", older], ndjson(NOISY[:2]))
    assert "suppress" not in json.load(open(older))
    after = run_cli(["--rule", rule, "--suppress", "10m", "--state", older], ndjson(NOISY[2:]))
    assert after.returncode == 0 and [a["sigma"]["suppressed"] for a in alerts(after.stdout)] == [0, 0]


def test_a_damaged_suppression_state_is_refused_in_one_line(tmp_path):
    rule = write(tmp_path, "single.yml", SINGLE)
    state = str(tmp_path / "state.json")
    run_cli(["--rule", rule, "--suppress", "10m", "--state", state], ndjson(NOISY[:2]))
    saved = json.load(open(state))
    for damage in ({"periods": [["single-4104", 5, 0, 1]]}, {"periods": [["r", "h", 0, -1]]}, {"clocks": 3},
                   {"periods": "x"}, {"opened": "x"}, {"newest": "x"}, {"newest": {"count-by-host": "1"}}):
        json.dump(dict(saved, suppress=dict(saved["suppress"], **damage)), open(state, "w"))
        result = run_cli(["--rule", rule, "--suppress", "10m", "--state", state], ndjson(NOISY[2:]))
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "suppress" in lines[0] and "--state-reset" in lines[0]


def test_a_period_given_with_a_fraction_is_that_many_seconds_to_the_nanosecond(tmp_path):
    # 1.001 as a float times 1e9 is 1000999999.9999999: cut to an int, the period ended a nanosecond early,
    # and an alert dated 1.000999999 s after the first, inside [t, t + 1.001 s), went out.
    rule = write(tmp_path, "single.yml", SINGLE)
    first = flat_event(0, "srv01", "server", 4104, record_id=1)
    inside = dict(flat_event(1, "srv01", "server", 4104, record_id=2),
                  **{"@timestamp": "2021-06-03T13:00:01.000999999Z"})
    after = dict(inside, EventRecordID=3, **{"@timestamp": "2021-06-03T13:00:01.001Z"})
    for value in ("1.001", "1.0010"):
        result = run_cli_here(["--rule", rule, "--suppress", value], ndjson([first, inside, after]))
        assert result.returncode == 0, result.stderr
        assert [(a["@timestamp"], a["sigma"]["suppressed"]) for a in alerts(result.stdout)] == [
            ("2021-06-03T13:00:00Z", 0), ("2021-06-03T13:00:01.001Z", 1)], value


BENIGN_RULE = """title: Directory listing
id: single-listing
detection:
  sel: {ScriptBlockText|contains: Get-ChildItem}
  condition: sel
"""


def test_two_alerts_of_one_correlation_group_in_one_period_are_one_with_or_without_early_alerts():
    """Two episodes of count() by Computer on srv01 at 2 s and 5 s: one period of 60 s, so one alert.
    A rule the correlation does not count alerts on two other hosts 2000 s later, before the end of
    input: the watermark's alerts of the correlation come at the end, after those, and the period the
    first opened was taken as passed with nothing suppressed, so the second went out too; with
    --early-alerts (each on the event that completed it) the second was suppressed.  A correlation's periods
    are judged by its own alerts' times now."""
    plans = [compile_plan(parse_rule(BY_HOST, "by.yml")), compile_plan(parse_rule(BENIGN_RULE, "listing.yml"))]
    events = [(t, "srv01", "server", 4104, i + 1) for i, t in enumerate([0, 1, 2, 3, 4, 5])] + \
        [(2000, "cli01", "benign", 4104, 7), (2000, "ws04", "benign", 4104, 8)]
    data = b"".join(json.dumps(flat_event(*event[:4], record_id=event[4])).encode() + b"\n" for event in events)
    for early in (True, False):
        with tempfile.TemporaryFile() as sink:
            stream_filter = Filter(Engine(plans, RESOLVER, 0, early=early, suppress_ns=60 * NS), Output(sink.fileno()),
                                   Diagnostics(io.StringIO()), "alerts", clock=lambda: 0)
            feed(stream_filter, data)
            sink.seek(0)
            made = [a for a in alerts(sink.read()) if a["rule"]["id"] == "count-by-host"]
        assert [a["@timestamp"] for a in made] == ["2021-06-03T13:00:02Z"], early
