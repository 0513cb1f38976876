"""A flood of distinct routes (a channel or an EventID forged per line) asks each log source once per
route, not each rule: with SigmaHQ's 3,141 rules every new route cost 3 ms."""

import json

from pipeshell_filter.cli import make_resolver
from pipeshell_filter.detect import Detector
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.logsource import LogsourceCheck
from pipeshell_filter.sigma.rule import parse_rule

LOGSOURCES = [{"product": "windows", "service": "security"}, {"product": "windows", "service": "sysmon"},
              {"product": "windows", "category": "process_creation"}, {"product": "linux"}, None]


def plans(copies: int) -> list:
    made = []
    for n, logsource in enumerate(LOGSOURCES * copies):
        detection = {"sel": {"EventID": 4625 if n % 2 else 1, "x": "1"}, "condition": "sel"}
        rule = {"title": f"t{n}", "id": f"r{n}", "detection": detection}
        if logsource is not None:
            rule["logsource"] = logsource
        made.append(compile_plan(parse_rule(json.dumps(rule), f"t{n}.yml")))
    return made


def test_a_new_route_asks_each_log_source_once_and_routes_as_each_rule_would(monkeypatch):
    calls = []
    applies = LogsourceCheck.applies
    monkeypatch.setattr(LogsourceCheck, "applies", lambda self, *a: calls.append(self) or applies(self, *a))
    made = plans(40)
    detector = Detector(made, make_resolver("auto", None, None))
    each_rule = Detector(made, make_resolver("auto", None, None))  # asks every rule, as before
    each_rule._by_logsource = [(plan.logsource, (i,)) for i, plan in enumerate(made)]
    seen = set()
    for channel in ["Security", "Microsoft-Windows-Sysmon/Operational", "forged-1", None]:
        for event_id in (1, 4625, 99):
            event = {"EventID": event_id, "x": "1", "Computer": "h"}
            if channel is not None:
                event["Channel"] = channel
            calls.clear()
            found = {d.rule for d in detector.detect(event)}
            assert len(calls) <= len(LOGSOURCES) - 1  # one per distinct log source, not 40 of each
            assert found == {d.rule for d in each_rule.detect(event)}, (channel, event_id)
            seen |= found
    assert len(seen) > len(made) // 4  # the comparison is over rules that did match
