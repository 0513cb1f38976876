"""A rule's verdicts do not depend on the rules loaded with it: one rule alone (no rule index) and the same
rule among SigmaHQ's whole process_creation folder (routing by log source and EventID, the Hyperscan index and
its per-route plans) match the same lines, on SigmaHQ's regression events as each collector writes them, as
Security 4688 events, as Sysmon 3 events (which no process_creation rule may match) and with no channel."""

import glob
import json
import os
import random

import pytest
import ujson

import sigmahq
from clitools import run_cli_here

FOLDER = os.path.join(sigmahq.SIGMAHQ, "rules", "windows", "process_creation")
EVENTS = os.path.join(sigmahq.SIGMAHQ, "regression_data", "rules", "windows", "process_creation")
TIME = "2024-01-01T00:00:00.000000Z"

pytestmark = pytest.mark.skipif(not os.path.isdir(EVENTS), reason="SigmaHQ checkout not found")


def _regression_events() -> list:
    """(EventID, channel, data, record id) of each Sysmon event of the regression folder."""
    found = []
    for path in sorted(glob.glob(os.path.join(EVENTS, "*", "*.json"))):
        text, at, decoder = open(path, encoding="utf-8").read(), 0, json.JSONDecoder()
        while text[at:].strip():  # several JSON documents one after the other
            at += len(text[at:]) - len(text[at:].lstrip())
            record, at = decoder.raw_decode(text, at)
            system = record["Event"]["System"]
            found.append((system["EventID"], system["Channel"], record["Event"].get("EventData") or {},
                          system["EventRecordID"]))
    return found


def _variants(event_id, channel, data, record) -> list:
    if event_id != 1:
        return [(event_id, channel, data, record)]
    security = {{"Image": "NewProcessName", "ParentImage": "ParentProcessName"}.get(k, k): v for k, v in data.items()}
    return [(1, channel, data, record), (4688, "Security", security, record), (3, channel, data, record),
            (1, channel.upper(), data, record), (1, None, data, record)]


def _shapes(event_id, channel, data, record) -> list:
    system = {"EventID": event_id, "TimeCreated": {"#attributes": {"SystemTime": TIME}}, "EventRecordID": record,
              "Channel": channel, "Computer": "h1"}
    winlog = {"channel": channel, "computer_name": "h1", "event_id": str(event_id), "record_id": record,
              "event_data": data}
    flat = {"EventID": event_id, "Channel": channel, "Computer": "h1", "TimeCreated": TIME, **data}
    nxlog = {"EventTime": "2024-01-01T00:00:00.000000+00:00", "Hostname": "h1", "EventID": event_id,
             "RecordNumber": record, "Channel": channel, **data}
    shapes = [{"Event": {"System": system, "EventData": data}},
              {"@timestamp": TIME, "winlog": winlog},
              {"channel": channel, "computer": "h1", "event_id": event_id, "record_id": record,
               "timestamp": TIME, "event_data": data},
              nxlog, flat]
    if channel is None:  # an event that does not tell its channel
        for shape in shapes:
            for place in (shape, shape.get("Event", {}).get("System", {}), shape.get("winlog", {})):
                for key in ("Channel", "channel"):
                    place.pop(key, None)
    return shapes


def _matches(rules: str, data: bytes, policy: str, *more: str) -> set:
    done = run_cli_here(["--stage", "match", "--heartbeat", "0", "--logsource-unknown", policy, "--rule", rules,
                         *more], data)
    assert done.returncode == 0, done.stderr
    found = set()
    for line in done.stdout.splitlines():
        record = ujson.loads(line)
        if record.get("type") == "sigma.detection":
            found.add((record["rule"], record["event"]["line"], record["event"].get("event_id")))
    return found


def _rule_ids() -> dict:
    ids = {}
    for path in sorted(glob.glob(os.path.join(FOLDER, "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            ids[path] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("id:"))
    return ids


@pytest.mark.parametrize("policy", ["match", "skip"])
def test_a_rule_alone_and_among_its_folder_match_the_same_lines(policy):
    events = [shape for event in _regression_events() for variant in _variants(*event) for shape in _shapes(*variant)]
    data = "".join(json.dumps(event) + "\n" for event in events).encode()
    together = _matches(FOLDER, data, policy)
    assert {event_id for _, _, event_id in together} == {1, 4688}  # never Sysmon 3; the others meet their rules
    ids = _rule_ids()
    matched = {rule for rule, _, _ in together}
    chosen = [path for path in ids if ids[path] in matched]
    chosen += random.Random(policy).sample(sorted(set(ids) - set(chosen)), 40)
    for path in chosen:
        alone = _matches(path, data, policy)
        assert alone == {found for found in together if found[0] == ids[path]}, path


@pytest.mark.parametrize("policy", ["match", "skip"])
def test_a_declared_sysmon_service_routes_as_its_channel(policy):
    """Flat records without a channel, ``--logsource product=windows,service=sysmon``: Sysmon 1 meets the
    process_creation rules, Sysmon 3 and 4688 (Security's) do not, under both policies (under match every
    EventID did; under skip none), alone as among the folder."""
    events = []
    for event_id, _, data, record in _regression_events():
        if event_id == 1:
            for variant in (1, 3, 4688):
                events.append({"EventID": variant, "Computer": "h1", "TimeCreated": TIME, "EventRecordID": record,
                               **data})
    data = "".join(json.dumps(event) + "\n" for event in events).encode()
    declared = ("--logsource", "product=windows,service=sysmon")
    together = _matches(FOLDER, data, policy, *declared)
    assert {event_id for _, _, event_id in together} == {1}
    ids = _rule_ids()
    matched = {rule for rule, _, _ in together}
    assert len(matched) > 20
    chosen = [path for path in ids if ids[path] in matched][:30]
    chosen += random.Random(policy).sample(sorted(set(ids) - set(chosen)), 10)
    for path in chosen:
        alone = _matches(path, data, policy, *declared)
        assert alone == {found for found in together if found[0] == ids[path]}, path
