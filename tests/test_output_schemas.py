"""The output records against their JSON Schemas, and the schemas against what the README says of them.

Every record a run writes validates; a schema refuses a key the README does not document (an alert is
a new object, built from the rules and Detections only), so a field added to a record without its
schema and README fails here.
"""

import copy
import json
import os

import jsonschema
import pytest

from clitools import REPO, alerts, ndjson, records, run_cli

SCHEMA_DIR = os.path.join(REPO, "filter", "pipeshell_filter", "schema")
ALERT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "alert.schema.json")))
DETECTION_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "detection.schema.json")))
HEARTBEAT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "heartbeat.schema.json")))
EVENT_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "enriched-event.schema.json")))
STATS_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "stats.schema.json")))
PIPELINE_ERROR_SCHEMA = json.load(open(os.path.join(SCHEMA_DIR, "pipeline-error.schema.json")))

RULES = """\
title: Failed logon
id: failed_logon
name: failed_logon
description: A failed logon.
tags: [attack.credential-access, attack.t1110, attack.g0016, attack.s0002]
falsepositives: [Typos]
level: medium
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625}
  condition: sel
---
title: Admin logon
id: admin_logon
name: admin_logon
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625, User|startswith: adm}
  condition: sel
---
title: Count
id: c-count
correlation: {type: event_count, rules: [failed_logon], group-by: [User], timespan: 5m, condition: {gte: 2}}
---
title: Users
id: c-users
correlation: {type: value_count, rules: [failed_logon], timespan: 5m, condition: {field: User, gte: 120}}
---
title: Temporal
id: c-temporal
correlation: {type: temporal, rules: [failed_logon, admin_logon], group-by: [User], timespan: 5m}
---
title: Ordered
id: c-ordered
correlation: {type: temporal_ordered, rules: [failed_logon, admin_logon], timespan: 5m}
---
title: Sum
id: c-sum
correlation: {type: value_sum, rules: [failed_logon], timespan: 5m, condition: {field: Bytes, gt: 10}}
---
title: Avg
id: c-avg
correlation: {type: value_avg, rules: [failed_logon], timespan: 5m, condition: {field: Bytes, gt: 1}}
---
title: Rare
id: c-rare
correlation: {type: value_percentile, rules: [failed_logon], timespan: 5m, condition: {field: User, lte: 60}}
---
title: Chain
id: c-chain
correlation: {type: event_count, rules: [c-count, admin_logon], timespan: 10m, condition: {gte: 2}, generate: true}
---
title: Legacy hosts
id: legacy-hosts
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4625}
  timeframe: 5m
  condition: sel | count(Computer) > 110
---
title: Legacy near
id: legacy-near
logsource: {product: windows, service: security}
detection:
  a: {EventID: 4625}
  b: {EventID: 4624}
  timeframe: 5m
  condition: a | near b
---
title: Single
id: single
logsource: {product: windows, service: security}
detection:
  sel: {EventID: 4624}
  condition: sel
"""


def _events(users: int):
    """150 failed logons (and a few successful ones) in one window: past the 100 values an alert lists."""
    return [{"@timestamp": f"2024-01-01T00:0{i // 60}:{i % 60:02d}Z", "EventID": 4624 if i % 50 == 7 else 4625,
             "Computer": f"h{i % 120}", "User": ("adm" if i % 3 else "user") + str(i % users), "Bytes": i % 9,
             "EventRecordID": i} for i in range(150)]


def _with_unknown_keys(alert: dict):
    """The alert with one key the README does not name added to each of its objects, one at a time."""
    paths = [()] + [(key,) for key, value in alert.items() if isinstance(value, dict)]
    paths += [("sigma", key) for key, value in alert["sigma"].items() if isinstance(value, dict)]
    paths += [("threat", key) for key, value in alert["threat"].items() if isinstance(value, dict)]
    for path in paths:
        changed = copy.deepcopy(alert)
        target = changed
        for key in path:
            target = target[key]
        target["undocumented"] = 1
        yield path, changed


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "rules.yml"
    rules.write_text(RULES)
    result = run_cli(["--rule", str(rules), "--emit", "alerts", "--suppress", "1m"], ndjson(_events(users=140)))
    assert result.returncode == 0, result.stderr
    return alerts(result.stdout)


def test_every_kinds_alert_validates_with_its_lists_cut(every_kind):
    """A value_count over 100 values wrote ``sigma.correlation.values_total``, a key neither its schema
    nor the README named."""
    kinds = {a["sigma"].get("correlation", {}).get("type", a["rule"]["id"]) for a in every_kind}
    assert kinds >= {"event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg",
                     "value_percentile", "legacy-hosts", "legacy-near", "single"}, kinds
    users = [a for a in every_kind if a["rule"]["id"] == "c-users"]
    assert users and users[0]["sigma"]["correlation"]["values_total"] > 100
    assert any(a["sigma"].get("hosts_total", 0) > 100 for a in every_kind)
    for alert in every_kind:
        jsonschema.validate(alert, ALERT_SCHEMA)


def test_the_alert_schema_refuses_a_key_it_does_not_document(every_kind):
    """The schema let any key through in every object of an alert: it could not tell a record with an
    undocumented field (``sigma.correlation.values_total``) from one without."""
    for alert in every_kind:
        for path, changed in _with_unknown_keys(alert):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(changed, ALERT_SCHEMA)
                pytest.fail(f"an unknown key in {'.'.join(path) or 'the record'} validated")


def test_a_detection_references_time_is_what_a_match_stage_writes(tmp_path):
    """A reader refuses an ``event.@timestamp`` that is not an RFC 3339 time as a match stage writes it;
    the schema took any string."""
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    result = run_cli(["--rule", str(rules), "--stage", "match", "--heartbeat", "0"], ndjson(_events(users=3)[:5]))
    detections = records(result.stdout)
    assert detections, result.stderr
    for detection in detections:
        jsonschema.validate(detection, DETECTION_SCHEMA)
    forged = copy.deepcopy(detections[0])
    forged["event"]["@timestamp"] = "yesterday"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(forged, DETECTION_SCHEMA)


def test_a_shrunk_alert_says_what_its_lists_left_out(tmp_path):
    """Made smaller for ``--max-record-bytes``, an alert listed 3 of its 10 events with
    ``events_truncated: false``, and 3 of its 10 values and term hosts with no total beside them: as if
    the window had held those 3."""
    rule = tmp_path / "ten.yml"
    rule.write_text("title: Ten\nid: ten\ndetection:\n  sel: {EventID: 4625}\n  timeframe: 5m\n"
                    "  condition: sel | count(User) > 9\n")
    events = [{"@timestamp": f"2024-01-01T00:00:{i:02d}Z", "EventID": 4625, "Computer": f"host{i}" + "\u0001" * 250,
               "User": "u" * 250 + str(i)} for i in range(10)]
    whole, = alerts(run_cli(["--rule", str(rule), "--emit", "alerts"], ndjson(events)).stdout)
    result = run_cli(["--rule", str(rule), "--emit", "alerts", "--non-json", "wrap", "--max-record-bytes", "4096"],
                     ndjson(events))
    shrunk, = alerts(result.stdout)
    jsonschema.validate(shrunk, ALERT_SCHEMA)
    sigma = shrunk["sigma"]
    assert sigma["truncated"] is True and len(sigma["events"]) < sigma["events_total"] == 10
    assert sigma["events_truncated"] is True
    assert sigma["aggregation"]["values_total"] == len(whole["sigma"]["aggregation"]["values"]) == 10
    assert [term.get("hosts_total") for term in sigma["terms"]] == [10]
    assert sigma["hosts_total"] == 10


# Lines a wrap run writes as pipeline_error records: not JSON, not an object, invalid UTF-8, NaN, a lone
# surrogate in a matched event, one of the match stage's own types, a matched event over a 4,096-byte cap.
BAD_LINES = [b"not json", b"[1, 2]", b"\xff\xfe{}", b'{"a": NaN}', b'{"EventID": 4625, "s": "\\ud800"}',
             b'{"type": "sigma.heartbeat", "EventID": 4625}', b'{"EventID": 4625, "x": "' + b"a" * 5000 + b'"}']


def _schema_of(record):
    """The schema a record of the filter's says it follows, by what a router reads (an input line that
    holds a match stage's ``type`` is matched and enriched by ``--stage all``: it has ``sigma``)."""
    kind = record.get("event", {}).get("kind") if isinstance(record.get("event"), dict) else None
    if "sigma" in record and kind != "alert":
        return EVENT_SCHEMA
    if record.get("type") in ("sigma.detection", "sigma.heartbeat"):
        return DETECTION_SCHEMA if record["type"] == "sigma.detection" else HEARTBEAT_SCHEMA
    return {"alert": ALERT_SCHEMA, "pipeline_error": PIPELINE_ERROR_SCHEMA, "metric": STATS_SCHEMA}.get(
        kind, EVENT_SCHEMA)


@pytest.mark.parametrize("stage", ["all", "match"])
@pytest.mark.parametrize("mode", [["--non-json", "wrap", "--max-record-bytes", "4096"], ["--fluentbit-time"]])
def test_every_record_of_the_fluent_bit_modes_follows_its_schema(tmp_path, stage, mode):
    """The pipeline_error and stats records had no schema: their fields were a sentence of the README."""
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    data = ndjson(_events(users=3)[:40]) + b"\n".join(BAD_LINES) + b"\n"
    emit = ["--emit", "all"] if stage == "all" else []
    result = run_cli(["--rule", str(rules), "--stage", stage, *emit, "--stats-interval", "3600", *mode], data)
    assert result.returncode == 0, result.stderr
    written = [r[1] if isinstance(r, list) else r for r in records(result.stdout)]
    kinds = set()
    for record in written:
        schema = _schema_of(record)
        jsonschema.validate(record, schema)
        kinds.add(schema["title"])
    assert {PIPELINE_ERROR_SCHEMA["title"], STATS_SCHEMA["title"]} <= kinds
    assert (ALERT_SCHEMA["title"] in kinds) == (stage == "all")
    assert (DETECTION_SCHEMA["title"] in kinds) == (stage == "match")


def test_a_shrunk_stats_record_follows_its_schema(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("".join(f"title: {'t' * 300}{i}\nid: r{i}\ndetection:\n  sel: {{EventID: 4625}}\n"
                             "  condition: sel\n---\n" for i in range(40)))
    result = run_cli(["--rule", str(rules), "--emit", "alerts", "--stats-interval", "3600", "--non-json", "wrap",
                      "--max-record-bytes", "4096"], ndjson(_events(users=3)[:3]))
    stats = [r for r in records(result.stdout) if r["event"]["kind"] == "metric"]
    assert stats and stats[-1]["pipeshell"]["truncated"] is True, result.stderr
    jsonschema.validate(stats[-1], STATS_SCHEMA)


def test_a_group_is_text_or_null_and_an_enrichments_rule_is_id_and_title(every_kind):
    """A window's group is the text its first event wrote, or null where the event had none; the schemas
    took any value there, and any key in an enriched event's ``sigma.rule``."""
    grouped = [a for a in every_kind if a["sigma"].get("correlation", {}).get("group")]
    assert grouped
    for alert in grouped:
        changed = copy.deepcopy(alert)
        name = next(iter(changed["sigma"]["correlation"]["group"]))
        for value in (["a", "b"], 5, {"x": "y"}):
            changed["sigma"]["correlation"]["group"][name] = value
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(changed, ALERT_SCHEMA)
    legacy = {"function": "count", "field": None, "operator": ">", "threshold": 1, "count": 2, "group_by": "User"}
    aggregation = ALERT_SCHEMA["properties"]["sigma"]["properties"]["aggregation"]
    for value in ("alice", None):
        jsonschema.validate(dict(legacy, group=value), aggregation)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(legacy, group=["alice"]), aggregation)
    enriched = {"User": "x", "sigma": {"rule": {"id": "r", "title": "t"}, "selections": [], "terms": ["sel"]}}
    jsonschema.validate(enriched, EVENT_SCHEMA)
    enriched["sigma"]["rule"]["level"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(enriched, EVENT_SCHEMA)
