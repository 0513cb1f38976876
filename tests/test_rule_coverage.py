"""``--rule-stats``' coverage: how many events were routed to each rule, and which fields its condition
needs that no sampled event routed to it carried (a rule blind on this collector's events)."""

import json
from zlib import crc32

from hypothesis import given, settings, strategies as st

from clitools import run_cli, run_cli_here
from pipeshell_filter import coverage
from pipeshell_filter.engine import Engine
from pipeshell_filter.events.fields import FieldResolver, builtin_profiles
from pipeshell_filter.io import parallel, stream
from pipeshell_filter.sigma.compile import compile_plan
from pipeshell_filter.sigma.rule import parse_rule
from test_winlogbeat_modules import CASES

PROCESS_CREATION = "logsource: {category: process_creation, product: windows}\n"
HASHES_RULE = ("title: Hashes\nid: hashes\n" + PROCESS_CREATION + "detection:\n"
               "  selection:\n    Hashes|contains: 'IMPHASH=0A1B'\n"
               "  filter:\n    Imphash: '00000000'\n    ParentImage|endswith: '\\explorer.exe'\n"
               "  condition: selection and not filter\n")
IMAGE_RULE = ("title: Image\nid: image\n" + PROCESS_CREATION + "detection:\n"
              "  selection:\n    Image|endswith: '\\certutil.exe'\n    CommandLine|contains: 'urlcache'\n"
              "  unsigned:\n    Signature|exists: false\n  keywords:\n    - 'urlcache'\n"
              "  condition: selection and unsigned and keywords\n")
NEVER_ROUTED = ("title: DNS\nid: dns\nlogsource: {category: dns_query, product: windows}\ndetection:\n"
                "  selection:\n    QueryName|endswith: '.example'\n  condition: selection\n")


def _table(path) -> dict:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_a_winlogbeat_module_stream_names_hashes_never_seen(tmp_path):
    """The Sysmon module script splits Hashes into ECS hash fields: a rule on Hashes can never fire on
    its events, and the table says so; a rule on fields the script moved (read where it put them) and
    one that matched lack none; the filter's field, |exists: false and keywords are no fields needed."""
    for name, text in (("hashes.yml", HASHES_RULE), ("image.yml", IMAGE_RULE), ("dns.yml", NEVER_ROUTED)):
        (tmp_path / name).write_text(text)
    sysmon_1 = json.dumps(CASES[0][2]).encode() + b"\n"
    table = tmp_path / "rules.ndjson"
    result = run_cli(["--rule", str(tmp_path / "hashes.yml"), "--rule", str(tmp_path / "image.yml"),
                      "--rule", str(tmp_path / "dns.yml"), "--rule-stats", str(table), "--field-coverage", "--quiet"],
                     sysmon_1 * 3)
    assert result.returncode == 0, result.stderr
    rows = _table(table)
    assert list(rows) == ["image", "hashes"]  # matched first; routed and blind after; never routed: absent
    assert (rows["image"]["alerts"], rows["image"]["routed"], rows["image"]["fields_never_seen"]) == (3, 3, [])
    assert (rows["hashes"]["alerts"], rows["hashes"]["routed"], rows["hashes"]["fields_never_seen"]) == \
        (0, 3, ["Hashes"])
    # the README's jq filters: the noisy by alerts, the blind by their fields
    assert [row["id"] for row in rows.values() if row["alerts"] > 2] == ["image"]
    assert [row["id"] for row in rows.values() if row.get("fields_never_seen")] == ["hashes"]


def test_a_field_needed_only_for_other_eventids_is_not_blind(tmp_path):
    """A rule on 4103's Payload or 4104's ScriptBlockText, on 4104 events with no Payload: Payload is not
    needed of a 4104; on 4103 events without it, it is blind."""
    rule = tmp_path / "ps.yml"
    rule.write_text("title: PS\nid: ps\nlogsource: {product: windows, service: powershell}\ndetection:\n"
                    "  sb:\n    EventID: 4104\n    ScriptBlockText|contains: 'Invoke-Pipe'\n"
                    "  module:\n    EventID: 4103\n    Payload|contains: 'Invoke-Pipe'\n  condition: sb or module\n")
    channel = "Microsoft-Windows-PowerShell/Operational"
    events = [{"EventID": 4104, "Channel": channel, "ScriptBlockText": "Get-Date"},
              {"EventID": 4103, "Channel": channel, "ContextInfo": "x"}]
    table = tmp_path / "rules.ndjson"
    for lines, never in ((events[:1], []), (events, ["Payload"])):
        data = b"".join(json.dumps(event).encode() + b"\n" for event in lines)
        assert run_cli(["--rule", str(rule), "--rule-stats", str(table), "--field-coverage"], data).returncode == 0
        assert (_table(table)["ps"]["routed"], _table(table)["ps"]["fields_never_seen"]) == (len(lines), never)


# ------------------------------------------------------------------ a property: the table against its definition

FIELDS = ("A", "B", "C")
EVENT_IDS = (1, 2)
# a selection: (EventID it wants or None, field, how it reads it: a value, absent (|exists: false), or null)
SELECTION = st.tuples(st.sampled_from((None,) + EVENT_IDS), st.sampled_from(FIELDS),
                      st.sampled_from(("value", "absent", "null")))
CONDITIONS = ("s0", "s0 or s1", "s0 and s1", "s0 and not s1", "not s0 and s1", "s0 or not s1")


def _rule_text(number: int, selections: tuple, condition: str) -> str:
    body = ""
    for position, (event_id, field, how) in enumerate(selections):
        body += f"  s{position}:\n" + (f"    EventID: {event_id}\n" if event_id is not None else "")
        body += {"value": f"    {field}|contains: 'x'\n", "absent": f"    {field}|exists: false\n",
                 "null": f"    {field}: null\n"}[how]
    return (f"title: r{number}\nid: r{number}\nlogsource: {{product: windows}}\ndetection:\n{body}"
            f"  condition: {condition}\n")


def _positive(condition: str) -> set:
    """The selections a condition of ``CONDITIONS`` names outside a ``not``."""
    words = condition.split()
    return {word for at, word in enumerate(words) if word.startswith("s") and (at == 0 or words[at - 1] != "not")}


def _required(selections: tuple, condition: str):
    """The EventIDs an event must have to be routed to the rule (None: any), worked out by hand."""
    wanted = [{event_id} if event_id is not None else None for event_id, *_ in selections]
    if condition in ("s0", "s0 and not s1"):
        return wanted[0]
    if condition == "not s0 and s1":
        return wanted[1]
    if condition == "s0 and s1":
        return wanted[0] & wanted[1] if wanted[0] is not None and wanted[1] is not None else wanted[0] or wanted[1]
    if condition == "s0 or s1":
        return wanted[0] | wanted[1] if wanted[0] is not None and wanted[1] is not None else None
    return None  # s0 or not s1


RULES = st.lists(st.tuples(st.tuples(SELECTION, SELECTION), st.sampled_from(CONDITIONS)), min_size=1, max_size=4)
EVENTS = st.lists(st.tuples(st.sampled_from(EVENT_IDS), st.sets(st.sampled_from(FIELDS))), max_size=30)


@settings(max_examples=60, deadline=None)
@given(RULES, EVENTS)
def test_the_table_is_its_definition_over_every_event(rules, events):
    """Under ``coverage.FIRST`` events a route, every one is looked at: a rule's ``routed`` is the events whose
    EventID its condition allows, and its ``fields_never_seen`` the fields of the selections its condition names
    outside a ``not`` (not |exists: false, not null) for an event's EventID that no such event carried."""
    plans = [compile_plan(parse_rule(_rule_text(n, selections, condition), f"r{n}.yml"))
             for n, (selections, condition) in enumerate(rules)]
    engine = Engine(plans, FieldResolver(builtin_profiles()))
    engine.watch_fields()
    for event_id, present in events:
        event = {"EventID": event_id, "Channel": "Security", **{field: "y" for field in present}}
        engine.process(event, text=json.dumps(event).encode())
    expected = {}
    for n, (selections, condition) in enumerate(rules):
        required, positive = _required(selections, condition), _positive(condition)
        routed, needed, seen = 0, set(), set()
        for event_id, present in events:
            if required is not None and event_id not in required:
                continue
            routed += 1
            wants = {field for position, (wanted, field, how) in enumerate(selections)
                     if f"s{position}" in positive and how == "value" and wanted in (None, event_id)}
            needed |= wants
            seen |= wants & present
        if routed:
            expected[f"r{n}"] = (routed, sorted(needed - seen))
    assert engine.rule_coverage() == expected


# ------------------------------------------------------------------ sampled, and the same with workers

def _line(number: int, extra: dict) -> bytes:
    event = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Image": "C:\\a.exe",
             "n": number, **extra}
    return json.dumps(event).encode() + b"\n"


def _sampled(line: bytes) -> bool:
    return crc32(line[:-1]) % coverage.EVERY == 0


def _with_crc(number: int, extra: dict, sampled: bool) -> bytes:
    """The line of event ``number`` carrying ``extra``, padded until its CRC samples it or not."""
    for pad in range(10_000):
        line = _line(number, {**extra, "pad": "p" * pad})
        if _sampled(line) == sampled:
            return line
    raise AssertionError("no padding gives that CRC")


def test_past_the_first_events_a_route_is_sampled_and_workers_sample_as_one_process(tmp_path, monkeypatch):
    """Past a route's first 256 events, a field only in an event the CRC leaves out is never seen, one
    in an event it takes is; with --workers 2, each worker's own first 256 events reach past the file's
    300th (it reads every other chunk), and the table is the same."""
    monkeypatch.setattr(stream, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "CHUNK", 8192)
    lines = [_with_crc(n, {}, False) for n in range(600)]
    lines[300] = _with_crc(300, {"Early": "x"}, False)  # not in the first 256, not sampled: never seen
    lines[400] = _with_crc(400, {"Unsampled": "x"}, False)
    lines[500] = _with_crc(500, {"Sampled": "x"}, True)
    lines[10] = _with_crc(10, {"First": "x"}, False)  # among the first 256: seen
    merged, merge = [], coverage.Coverage.merge
    monkeypatch.setattr(coverage.Coverage, "merge",
                        lambda self, observed: merged.append(observed) or merge(self, observed))
    tables = _tables_by_workers(tmp_path, lines, "Early: x", "Unsampled: x", "Sampled: x", "First: x")
    assert tables[0] == tables[1] and len(merged) >= 4  # the workers' blocks, each merged
    row = json.loads(tables[0])
    assert (row["routed"], row["fields_never_seen"]) == (600, ["Early", "Unsampled"])


def test_field_coverage_needs_rule_stats_and_events(tmp_path):
    """``--field-coverage`` parses every line (slow with few rules), so it is its own option: without
    ``--rule-stats`` it would learn for no one, and a correlate stage reads no events."""
    alone = run_cli(["--field-coverage"], b"")
    assert alone.returncode == 2 and alone.stderr.decode() == (
        "pipeshell-filter: error: --field-coverage needs --rule-stats and --stage all or --stage match "
        "(a correlate stage reads no events): here it would do nothing\n")
    correlate = run_cli(["--stage", "correlate", "--rule-stats", str(tmp_path / "t"), "--field-coverage"], b"")
    assert correlate.returncode == 2 and correlate.stderr.count(b"\n") == 1 and b"--field-coverage needs" in \
        correlate.stderr


def _tables_by_workers(tmp_path, lines: list, *alternatives: str) -> list:
    """The ``--rule-stats --field-coverage`` files of a rule on process creations whose ``Image`` ends
    ``\\b.exe``, or that meet one of ``alternatives`` (``Field: value``), over ``lines``, with ``--workers 0``
    and ``2``."""
    return _tables_of(tmp_path, lines, "title: R\nid: r\n" + PROCESS_CREATION + "detection:\n  selection:\n"
                      "    - Image|endswith: '\\b.exe'\n" + "".join(f"    - {item}\n" for item in alternatives)
                      + "  condition: selection\n")


def _tables_of(tmp_path, lines: list, rule_text: str) -> list:
    """The ``--rule-stats --field-coverage`` files of the rule ``rule_text`` over ``lines``, with
    ``--workers 0`` and ``2``."""
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(lines))
    rule = tmp_path / "rule.yml"
    rule.write_text(rule_text)
    tables = []
    for workers in ("0", "2"):
        table = tmp_path / f"rules-{workers}.ndjson"
        result = run_cli_here(["--rule", str(rule), "--input", str(path), "--workers", workers,
                               "--rule-stats", str(table), "--field-coverage", "--quiet"])
        assert result.returncode == 0, result.stderr
        tables.append(table.read_text())
    return tables


def test_a_worker_keeps_an_event_the_crc_samples_among_its_own_first_events(tmp_path, monkeypatch):
    """The 301st event of a route, sampled by its CRC, is seen by one process; with --workers 2 it is
    among its worker's own first 256 events, and the worker must still report it as sampled (it was
    reported as one of the worker's first events only, which the parent dropped: 'Sampled' never seen)."""
    monkeypatch.setattr(stream, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "CHUNK", 8192)
    lines = [_with_crc(n, {}, False) for n in range(600)]
    lines[300] = _with_crc(300, {"Sampled": "x"}, True)
    tables = _tables_by_workers(tmp_path, lines, "Sampled: y")
    assert tables[0] == tables[1]
    assert json.loads(tables[0])["fields_never_seen"] == []


def test_a_line_the_parent_reads_itself_keeps_its_place_among_the_workers_events(tmp_path, monkeypatch):
    """A Fluent Bit frame among plain lines is read by the parent, not the detecting worker: its event is
    the route's 101st, seen by one process; with --workers 2 the parent counted the block's worker events
    first, made it the 600th, left it out of the sample and called its field never seen."""
    monkeypatch.setattr(stream, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "CHUNK", 1 << 20)
    lines = [_with_crc(n, {}, False) for n in range(600)]
    framed = next(line for line in (b"[1700000000, " + _line(100, {"Framed": "x", "pad": "q" * pad})[:-1] + b"]\n"
                                    for pad in range(10_000)) if not _sampled(line))
    lines[100] = framed
    tables = _tables_by_workers(tmp_path, lines, "Framed: y")
    assert tables[0] == tables[1]
    assert (json.loads(tables[0])["routed"], json.loads(tables[0])["fields_never_seen"]) == (600, [])


def _fixed_line(event_id: int, extra: dict, size: int = 128) -> bytes:
    """An event of ``event_id`` on the Security channel, padded to ``size`` bytes with its newline."""
    event = {"EventID": event_id, "Channel": "Security", **extra, "pad": ""}
    bare = len(json.dumps(event)) + 1
    event["pad"] = "p" * (size - bare)
    return json.dumps(event).encode() + b"\n"


def test_a_worker_past_the_route_limit_still_names_routes_the_file_has_within_it(tmp_path, monkeypatch):
    """Past ``MAX_ROUTES`` routes, the events of new ones are only counted.  One process keeps the file's first
    routes; a worker reading every other chunk reaches its own limit with others, and an event of a route the
    file has among its first (seen by the other worker) was sent as of no route: its field was never seen."""
    monkeypatch.setattr(stream, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "CHUNK", 8192)  # 64 lines of 128 bytes a chunk, every other chunk a worker's
    monkeypatch.setattr(coverage, "MAX_ROUTES", 3)
    chunks = [[_fixed_line(2, {})] + [_fixed_line(1, {})] * 63,  # routes 1 and 2: the file's first
              [_fixed_line(3, {}), _fixed_line(4, {}), _fixed_line(5, {})] + [_fixed_line(3, {})] * 61,
              [_fixed_line(1, {})] * 64,
              [_fixed_line(2, {"Foo": "seen"})] * 64]  # the second worker's, which holds routes 3, 4 and 5
    tables = _tables_of(tmp_path, [line for chunk in chunks for line in chunk],
                        "title: R\nid: r\nlogsource: {product: windows}\ndetection:\n  selection:\n"
                        "    Foo: never\n  condition: selection\n")
    assert (json.loads(tables[0])["routed"], json.loads(tables[0])["fields_never_seen"]) == (256, [])
    assert tables[0] == tables[1]
