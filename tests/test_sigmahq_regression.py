"""SigmaHQ's regression cases, judged as SigmaHQ's own runner judges them.

Each case (``regression_data/**/info.yml``) names a rule, an .evtx and ``match_count``;
SigmaHQ's runner (``tests/regression_tests_runner.py``) passes it when the rule matches
at least ``match_count`` records of the .evtx (more is only a warning).  Here the rules
are loaded as users load them, every ``rules*`` directory at once, and every .evtx is
read in the same CLI run (``conftest.sigmahq_run``, shared with ``test_sigmahq_rules``).
A match is attributed to a case by the record itself: the enriched event without its
``sigma`` object is the record of the .evtx, as the ``evtx`` package renders it.

Besides the cases: every public rule file either loads or is skipped for one of the
named limitations below, and nothing else.
"""

import re
import warnings

import pytest

import sigmahq

pytestmark = pytest.mark.skipif(not sigmahq.available(), reason="the shared SigmaHQ checkout is absent")

CASES = sorted(sigmahq.regression_cases(), key=lambda case: case[0]) if sigmahq.available() else []

# Cases that still fail for a reason another piece of work owns: the rule is skipped at load
# with this text in the reason.  Each entry is checked to still hold, so when the work lands
# the test says which entry to remove: this list only shrinks.  (Empty since the modifiers
# windash, fieldref and re's i flag are supported.)
KNOWN = {
    # rule id: "text of the load-time skip reason",
}

# Cases whose rule matches more records than ``match_count`` (SigmaHQ's runner warns), each
# checked by hand: rule id -> (records it matches, why).  Any other case that exceeds is
# reported as a warning, for a look by hand.
EXCEEDING = {
    "0b9ad457-2554-44c1-82c2-d56a99c42377": (3, "3 of the 5 Sysmon 11 records write AnyDesk's user.conf "
                                                "(user.conf.new twice, user.conf~RF2d9c20d.TMP); the "
                                                "other 2 are service.conf"),
    "8fbf3271-1ef6-4e94-8210-03c2317947f6": (3, "3 of the 6 Sysmon 11 records end with a listed name "
                                                "(procdump64.exe, procdump64a.exe, procdump.exe); the "
                                                "other 3 are their :Zone.Identifier streams"),
    "45e112d0-7759-4c2a-aa36-9f8fb79d3393": (3, "all 3 Sysmon 13 records set a ZoneMap\\Domains value to "
                                                "DWORD (0x00000002), which the filter does not exclude "
                                                "(https, http and * of one domain)"),
}

# Why a public rule file may be skipped at load: name -> pattern of the reason.  Every
# reason must be one of these, and each must still occur (so this list, which the README
# repeats, stays true: remove an entry when its work lands).
LIMITATIONS = {
    "|expand: placeholder values need --placeholders FILE (rules-placeholder, 2 emerging-threats rules)":
        re.compile(r"\|expand needs --placeholders FILE$"),
}


def _id(case):
    return case[1]


def _need(match_count) -> int:
    return 1 if match_count is None else match_count


@pytest.fixture(scope="module")
def run(sigmahq_run):
    assert sigmahq_run.returncode == 0, sigmahq_run.stderr[-2000:]
    assert b"Traceback" not in sigmahq_run.stderr
    return sigmahq_run


def test_the_cases_are_there():
    assert len(CASES) >= 50
    assert len({case[1] for case in CASES}) == len(CASES)  # one case per rule: ids name them
    assert set(KNOWN) <= {case[1] for case in CASES}
    assert set(EXCEEDING) <= {case[1] for case in CASES}


@pytest.mark.parametrize("rule_path, rule_id, evtx, match_count", CASES, ids=[_id(case) for case in CASES])
def test_regression_case(run, rule_path, rule_id, evtx, match_count):
    got = run.count(rule_id, evtx)
    reasons = run.skipped.get(rule_path, [])
    if rule_id in KNOWN:
        assert any(KNOWN[rule_id] in reason for reason in reasons), (
            f"{rule_path} is no longer skipped for {KNOWN[rule_id]!r} (now: {reasons or 'it loads'}): "
            f"remove {rule_id} from KNOWN")
        assert got < _need(match_count), f"{rule_id} matches {got} records now: remove it from KNOWN"
        pytest.xfail(f"known: {KNOWN[rule_id]}")
    assert not reasons, f"{rule_path} was skipped at load: {reasons}"
    assert got >= _need(match_count), f"{rule_path}: {got} of the records in {evtx} match, want {match_count}"
    if rule_id in EXCEEDING:
        assert got == EXCEEDING[rule_id][0], f"checked by hand: {EXCEEDING[rule_id][1]}"


def test_cases_exceeding_match_count(run):
    """More matches than ``match_count`` is a warning in SigmaHQ's runner, and here: printed
    (``pytest -s``), and a warning for any case not checked by hand (``EXCEEDING``, whose counts
    ``test_regression_case`` pins)."""
    exceeding, passing = {}, 0
    for rule_path, rule_id, evtx, match_count in CASES:
        got = run.count(rule_id, evtx)
        passing += got >= _need(match_count)
        if got > _need(match_count):
            exceeding[rule_id] = (rule_path, match_count, got)
    print(f"SigmaHQ regression cases: {len(CASES)}, passing {passing} ({len(exceeding)} of them exceed "
          f"match_count), failing {len(CASES) - passing} ({len(KNOWN)} known); one CLI run: {run.seconds:.1f} s")
    for rule_id, (rule_path, match_count, got) in sorted(exceeding.items()):
        print(f"exceeds match_count: {rule_id} {rule_path}: {got} > {match_count}"
              f" ({EXCEEDING[rule_id][1] if rule_id in EXCEEDING else 'not checked by hand'})")
    unchecked = sorted(set(exceeding) - set(EXCEEDING))
    if unchecked:
        warnings.warn(f"regression cases matching more records than match_count, not checked by hand: "
                      f"{[(i, exceeding[i][1:]) for i in unchecked]}")


def test_every_rule_file_loads_or_is_skipped_for_a_named_limitation(run):
    files = sigmahq.rule_files()
    assert len(files) > 3000
    assert set(run.skipped) <= set(files), sorted(set(run.skipped) - set(files))[:5]
    used, unnamed = {}, []
    for path, reasons in sorted(run.skipped.items()):
        for reason in reasons:
            names = [name for name, pattern in LIMITATIONS.items() if pattern.search(reason)]
            if names:
                used.setdefault(names[0], []).append(path)
            else:
                unnamed.append((path, reason))
    for name in LIMITATIONS:
        print(f"{len(used.get(name, ())):4} rule files skipped: {name}")
    assert not unnamed, f"skipped for no named limitation: {unnamed[:10]}"
    stale = sorted(set(LIMITATIONS) - set(used))  # the README lists them: keep it true
    assert not stale, f"no rule file is skipped for these any more: remove them here and in the README: {stale}"
    assert len(run.skipped) < 0.05 * len(files)
