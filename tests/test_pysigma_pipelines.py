"""A pySigma processing pipeline given as ``--field-map`` (events/pipelines.py): its field renames read as a
profile, what it cannot honour said in one line per type, a file it cannot use refused in one line.

The pipelines here are our own text, in the shape of SigmaHQ's community pipelines (elastic_pipelines/,
splunk_pipelines/): field_name_mapping under a logsource condition, field_name_prefix for the fields it does
not name, add_condition for the channel.
"""

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import alerts, records, run_cli, run_cli_here
from pipeshell_filter.events.fields import load_profile_file
from pipeshell_filter.events.pipelines import PipelineError, convert

ECS_LIKE = """\
name: test ECS-like mapping
priority: 20
transformations:
  - id: channel_security
    type: add_condition
    conditions:
      winlog.channel: Security
    rule_conditions:
      - type: logsource
        product: windows
        service: security
  - id: map_common
    type: field_name_mapping
    mapping:
      EventID: event.code
      Image: process.executable
      CommandLine: [process.command_line, process.args_text]
      User: user.name
    rule_conditions:
      - type: logsource
        product: windows
  - id: others_under_event_data
    type: field_name_prefix
    prefix: "winlog.event_data."
    field_name_cond_not: true
    field_name_conditions:
      - type: processing_item_applied
        processing_item_id: map_common
    rule_conditions:
      - type: logsource
        product: windows
"""

# Where ECS_LIKE puts each field of a flat event (CommandLine's second place: its alternative).
RENAMED = {"EventID": ("event", "code"), "Image": ("process", "executable"), "User": ("user", "name"),
           "CommandLine": ("process", "command_line")}
UNNAMED_ROOT = ("winlog", "event_data")

# Different paths for one field under different logsources, as the Splunk Windows pipeline has them.
SPLUNK_LIKE = """\
name: test Splunk-like mapping
transformations:
  - id: eventid
    type: field_name_mapping
    mapping:
      EventID: EventCode
    rule_conditions:
      - type: logsource
        product: windows
  - id: security_process_creation
    type: add_condition
    conditions:
      EventCode: 4688
    rule_conditions:
      - type: logsource
        product: windows
        category: process_creation
  - id: security_process_creation_fields
    type: field_name_mapping
    mapping:
      Image: NewProcessName
      User: SubjectUserName
    rule_conditions:
      - type: logsource
        product: windows
        category: process_creation
      - type: processing_item_applied
        processing_item_id: security_process_creation
  - id: state
    type: set_state
    key: index
    val: win
  - id: true_to_egress
    type: replace_string
    regex: "^true$"
    replacement: egress
  - id: keyword
    type: field_name_suffix
    suffix: .keyword
postprocessing:
  - type: simple_template
    template: "index=win {query}"
"""

PIPELINES = {"ecs": ECS_LIKE, "splunk": SPLUNK_LIKE}


def _pysigma_fields(rule: str, pipeline_text: str) -> list:
    """The field names pySigma gives the detection items of selection ``sel`` of the rule file once the
    pipeline is applied (the test is skipped without pySigma)."""
    pipeline_module = pytest.importorskip("sigma.processing.pipeline")
    rule_module = pytest.importorskip("sigma.rule")
    theirs = rule_module.SigmaRule.from_yaml(open(rule).read())
    pipeline_module.ProcessingPipeline.from_yaml(pipeline_text).apply(theirs)
    return [item.field for item in theirs.detection.detections["sel"].detection_items]


def _write(tmp_path, text, name="pipeline.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_field_name_mapping_and_prefix_become_fields_and_roots(tmp_path):
    profile = load_profile_file(_write(tmp_path, ECS_LIKE))
    paths = {field: [".".join(map(str, c.path)) for c in candidates] for field, candidates in profile.fields.items()}
    # each mapped path, then the name as written: a rule of no windows logsource, which no item applies to, reads it
    assert paths == {"EventID": ["event.code", "EventID"], "Image": ["process.executable", "Image"],
                     "User": ["user.name", "User"], "CommandLine": ["process.command_line", "process.args_text",
                                                                   "CommandLine"]}
    assert profile.roots == (UNNAMED_ROOT,)
    assert profile.detect == (("event", "code"),)  # EventID's one path
    assert ("@timestamp",) in profile.time and ("_time",) in profile.time
    assert profile.name == "pipeline"  # the file's name: what --profile takes


def test_a_field_mapped_per_logsource_reads_every_path_first_present(tmp_path):
    profile = load_profile_file(_write(tmp_path, SPLUNK_LIKE))
    paths = {field: [".".join(map(str, c.path)) for c in candidates] for field, candidates in profile.fields.items()}
    # in the windows context Image is unmapped (itself); under process_creation it is NewProcessName
    assert paths == {"EventID": ["EventCode", "EventID"], "Image": ["Image", "NewProcessName"],
                     "User": ["User", "SubjectUserName"]}
    assert profile.roots == ()


def test_what_it_leaves_out_is_one_line_per_type(tmp_path):
    path = _write(tmp_path, SPLUNK_LIKE)
    result = run_cli(["--field-map", path, "--quiet"])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    prefix = f"pipeshell-filter: warning: field map {path} (pySigma pipeline): "
    assert all(line.startswith(prefix) for line in lines), lines
    said = [line[len(prefix):] for line in lines]
    assert said == [
        "ignored, as they only shape a backend's query or output: set_state, postprocessing (simple_template)",
        "ignored 1 add_condition item(s), which change what matches: it adds conditions on EventCode to the rules "
        "of its conditions (the filter routes by its own logsource table: see Log sources)",
        "ignored 1 replace_string item(s), which change what matches: it rewrites values the rules compare (^true$)",
        "ignored 1 field_name_suffix item(s), which change what matches: it adds the suffix .keyword to field names "
        "(an index's sub-field such as .keyword is no path in the event)",
        "mapped differently under different rule conditions, so read from each of their paths in the file's order, "
        "the first present: Image, User",
    ]


def test_a_condition_linking_pysigma_does_not_know_is_said(tmp_path):
    text = ECS_LIKE.replace("    field_name_cond_not: true\n", "    field_name_cond_not: true\n"
                            "    field_name_cond_op: any\n")
    notes = convert(yaml.safe_load(text), "p.yml").notes
    assert notes[:1] == ["transformation others_under_event_data: field_name_cond_op 'any' is not 'and' or 'or', "
                     "so pySigma links its conditions with 'and', and so does this reading (write 'or' if that is "
                     "meant)"]


def test_a_renaming_item_with_field_conditions_not_read_here_is_left_out_and_said():
    text = ECS_LIKE + """\
  - id: by_state
    type: field_name_mapping
    mapping: {Hashes: hash.all}
    field_name_conditions:
      - type: processing_state
        key: index
        val: win
"""
    conversion = convert(yaml.safe_load(text), "p.yml")
    assert "Hashes" not in conversion.fields
    assert "ignored 1 field_name_mapping item(s) (by_state): its field name conditions are of a kind not read " \
           "here" in conversion.notes


@pytest.mark.parametrize("body, message", [
    ("transformations:\n  - type: add_condition\n    conditions: {a: b}\n", "renames no field (it has add_condition)"),
    ("finalizers:\n  - type: concat\n", "renames no field (it has finalizers)"),
    ("transformations:\n  - type: field_name_mapper\n    mapping: {a: b}\n",
     "transformation 1: unknown transformation type 'field_name_mapper'"),
    ("transformations: {a: b}\n", "'transformations' must be a list of mappings"),
    ("transformations:\n  - mapping: {a: b}\n", "transformation 1: no 'type'"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: {a: 7}\n",
     "a mapping's target must be a field name or a list of them"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: [a]\n", "needs 'mapping'"),
    ("transformations:\n  - type: field_name_prefix\n    prefix: 3\n", "needs 'prefix'"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: {a: b}\n    rule_conditions: logsource\n",
     "'rule_conditions' must be a list of conditions"),
    ("transformations: []\nbackend: splunk\n", "not a pySigma pipeline: unknown key(s) 'backend'"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: {a: b}\n    field_name_conditions:\n"
     "      - type: include_fields\n        fields: ['(']\n        mode: re\n", "bad regular expression"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: {a: b, a: c}\n", "duplicate key 'a'"),
    ("transformations:\n  - type: field_name_mapping\n    mapping: {a: b}\n    rule_conditions:\n"
     "      - {type: processing_item_applied, processing_item_id: [x]}\n", "needs 'processing_item_id'"),
])
def test_a_pipeline_it_cannot_use_is_a_one_line_usage_error(tmp_path, body, message):
    path = _write(tmp_path, body)
    result = run_cli(["--field-map", path])
    err = result.stderr.decode().strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert path in err and message in err, err


def test_a_field_map_of_ours_may_name_a_pipeline_and_override_it(tmp_path):
    _write(tmp_path, SPLUNK_LIKE, "splunk.yml")
    own = _write(tmp_path, "pipeline: splunk.yml\nname: splunk-win\ntime: [when]\ndetect: []\n"
                           "fields:\n  Image: [NewProcessName, process_path]\n", "mine.yml")
    profile = load_profile_file(own)
    assert (profile.name, profile.time, profile.detect) == ("splunk-win", (("when",),), ())
    assert [c.path for c in profile.fields["Image"]] == [("NewProcessName",), ("process_path",)]
    assert [c.path for c in profile.fields["User"]] == [("User",), ("SubjectUserName",)]  # the pipeline's
    assert profile.notes  # what the pipeline left out is still said
    bad = _write(tmp_path, "pipeline: mine.yml\nname: x\n", "loop.yml")
    result = run_cli(["--field-map", bad])
    assert result.returncode == 2 and "is not a pySigma pipeline" in result.stderr.decode()


# The property: the pipeline on events renamed by its mapping matches as the filter without it on the
# original flat events (the oracle: the flat profile reads a Sigma field where it is named).
FIELDS = ["EventID", "Image", "CommandLine", "User", "ParentUser"]
WORDS = ["ab", "b", "Ab", "x"]


def _selection(draw):
    fields = draw(st.lists(st.sampled_from(FIELDS[1:]), min_size=1, max_size=2, unique=True))
    selection = {}
    for field in fields:
        modifier = draw(st.sampled_from(["", "|contains", "|endswith", "|startswith"]))
        values = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=2))
        selection[field + modifier] = values if len(values) > 1 else values[0]
    if draw(st.booleans()):
        selection["EventID"] = draw(st.sampled_from([1, 4688]))
    return selection


@st.composite
def rules(draw):
    condition = draw(st.sampled_from(["a", "a and b", "a or b", "a and not b", "1 of *"]))
    rule = {"title": "generated", "id": "00000000-0000-4000-8000-000000000001", "status": "test",
            "logsource": {"product": "windows", "category": "process_creation"}, "level": "high",
            "detection": {"a": _selection(draw), "b": _selection(draw), "condition": condition}}
    return yaml.safe_dump(rule, sort_keys=False)


@st.composite
def flat_events(draw):
    event = {"@timestamp": f"2026-11-01T10:00:0{draw(st.integers(0, 9))}Z",
             "EventID": draw(st.sampled_from([1, 4688])), "Computer": "ws1"}
    for field in FIELDS[1:]:
        if draw(st.booleans()):
            event[field] = draw(st.sampled_from(["xab", "b", "ab", "AB x", "bx"]))
    return event, draw(st.booleans()), draw(st.booleans())  # CommandLine in its alternative place; flattened


def _renamed(event: dict, alternative: bool, flattened: bool = False) -> dict:
    """The event as the pipeline's logs hold it: each field where ECS_LIKE maps it (``flattened``: a
    mapped field's path as one key, as flattened ECS writes it, ``{"process.executable": ...}``)."""
    out = {"@timestamp": event["@timestamp"]}
    for field, value in event.items():
        if field == "@timestamp":
            continue
        path = RENAMED.get(field, UNNAMED_ROOT + (field,))
        if field == "CommandLine" and alternative:
            path = ("process", "args_text")
        if flattened and field in RENAMED:
            path = (".".join(path),)
        node = out
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = value
    return out


def _verdicts(stdout: bytes) -> list:
    """Per input line, what matched on it (``--emit all``: one output line per input line, plus alerts)."""
    lines = [r for r in records(stdout) if r.get("event", {}).get("kind") != "alert"]
    found = [(json.dumps(r.get("sigma"), sort_keys=True)) for r in lines]
    fired = [(a["rule"]["id"], a["message"], a["related"], a["sigma"]) for a in alerts(stdout)]  # fields: by Sigma name
    return found + [json.dumps(fired, sort_keys=True)]


@settings(max_examples=40, deadline=None)
@given(rules(), st.lists(flat_events(), min_size=1, max_size=6))
def test_pipeline_on_renamed_events_matches_as_the_flat_events_without_it(tmp_path_factory, rule, drawn):
    where = tmp_path_factory.mktemp("p")
    rule_path = _write(where, rule, "rule.yml")
    pipeline = _write(where, ECS_LIKE)
    flat = b"".join(json.dumps(e).encode() + b"\n" for e, _, _ in drawn)
    renamed = b"".join(json.dumps(_renamed(e, alt, flattened)).encode() + b"\n" for e, alt, flattened in drawn)
    oracle = run_cli_here(["--rule", rule_path, "--emit", "all", "--quiet", "--profile", "flat"], flat)
    mapped = run_cli_here(["--rule", rule_path, "--emit", "all", "--quiet", "--field-map", pipeline], renamed)
    assert oracle.returncode == 0 and mapped.returncode == 0, (oracle.stderr, mapped.stderr)
    assert _verdicts(mapped.stdout) == _verdicts(oracle.stdout)
    assert mapped.stderr.decode().count("\n") == 1  # the ignored add_condition, said once


def test_pysigma_reads_each_pipeline_and_maps_as_derived(tmp_path):
    """pySigma's own reading of each test pipeline: its field_name_mapping items give the paths we derived,
    and a rule it processes gets field names among those we read (where pySigma is installed)."""
    pipeline_module = pytest.importorskip("sigma.processing.pipeline")
    rule_module = pytest.importorskip("sigma.rule")
    for text in PIPELINES.values():
        theirs = pipeline_module.ProcessingPipeline.from_yaml(text)
        ours = convert(yaml.safe_load(text), "p.yml")
        for item in theirs.items:
            mapping = getattr(item.transformation, "mapping", None)
            if type(item.transformation).__name__ != "FieldMappingTransformation":
                continue
            for field, targets in mapping.items():
                targets = targets if isinstance(targets, list) else [targets]
                assert [t for t in ours.fields[field] if t in targets] == targets, field
        for category in ("process_creation", "image_load"):
            rule = rule_module.SigmaRule.from_yaml(
                f"title: t\nlogsource: {{product: windows, category: {category}}}\ndetection:\n  sel:\n"
                "    EventID: 1\n    Image: a\n    User: b\n    ParentUser: c\n  condition: sel\n")
            theirs.apply(rule)
            named = [item.field for item in rule.detection.detections["sel"].detection_items]
            for field, name in zip(["EventID", "Image", "User", "ParentUser"], named):
                name = name.removesuffix(".keyword")  # field_name_suffix: left out here, and said so
                ours_read = ours.fields.get(field) or [field] + [f"{root}.{field}" for root in ours.roots]
                assert name in ours_read, (field, name, ours_read)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.sampled_from(
    ["", "a", "a.b", "x.", ".", "EventID", "map_common", "field_name_mapping", "field_name_prefix",
     "field_name_prefix_mapping", "logsource", "include_fields", "processing_item_applied", "re", "(", "or", "any"]))
_KEYS = st.sampled_from(["type", "id", "mapping", "prefix", "rule_conditions", "field_name_conditions",
                         "field_name_cond_not", "field_name_cond_op", "rule_cond_op", "detection_item_conditions",
                         "fields", "mode", "product", "category", "processing_item_id", "EventID", "a"])
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner,
                                                                                            max_size=4), max_leaves=12)


@given(st.lists(st.dictionaries(_KEYS, _VALUES, max_size=5), max_size=4))
def test_a_malformed_pipeline_is_refused_never_a_crash(transformations):
    from pipeshell_filter.events.fields import ProfileError, profile_from_table

    try:
        conversion = convert({"transformations": transformations}, "p.yml")
        profile_from_table(conversion.table, "p.yml", tuple(conversion.notes))
    except (PipelineError, ProfileError) as error:
        assert "\n" not in str(error)


def test_a_field_mapped_to_itself_twice_over_and_over_is_read_once():
    """One-to-many mappings that repeat a name must not double the field's names at each item (40 items of
    ``Image: [Image, Image]`` held 2**40 names and hung the load): a field's names are a set, in order."""
    items = [{"type": "field_name_mapping", "mapping": {"Image": ["Image", "Image"], "User": ["user.name", "User"]}}
             for _ in range(40)]
    conversion = convert({"transformations": items}, "p.yml")
    assert conversion.fields == {"Image": ["Image"], "User": ["user.name", "User"]}


def test_a_pipeline_whose_renames_multiply_a_fields_names_is_refused_in_one_line():
    """Prefix mappings can make each item double a field's distinct names (``I`` to ``II`` and ``IJ``): such a
    pipeline is refused at load, quickly, not read for hours."""
    items = [{"type": "field_name_mapping", "mapping": {"Image": "Image"}}] + \
        [{"type": "field_name_prefix_mapping", "mapping": {"I": ["II", "IJ"]}} for _ in range(40)]
    with pytest.raises(PipelineError) as refused:
        convert({"transformations": items}, "p.yml")
    assert "\n" not in str(refused.value) and "Image" in str(refused.value) and "names" in str(refused.value)


def test_a_field_condition_regex_runs_in_linear_time_as_pysigma_matches_it():
    """``include_fields`` in mode ``re`` match a field's name from its start (pySigma's ``re.match``), on RE2: a
    pattern such as ``(a+)+b`` against a long name of ``a`` hung the load on Python's backtracking."""
    long_name = "a" * 60
    items = [{"type": "field_name_mapping", "mapping": {long_name: "slow", "aab": "kept", "xaab": "unmatched"},
              "field_name_conditions": [{"type": "include_fields", "fields": ["(a+)+b"], "mode": "re"}]}]
    conversion = convert({"transformations": items}, "p.yml")
    assert conversion.fields == {long_name: [long_name], "aab": ["kept"], "xaab": ["xaab"]}


def test_a_field_condition_regex_re2_cannot_read_is_refused_in_one_line():
    items = [{"type": "field_name_mapping", "mapping": {"a": "b"},
              "field_name_conditions": [{"type": "include_fields", "fields": ["a(?=b)"], "mode": "re"}]}]
    with pytest.raises(PipelineError) as refused:
        convert({"transformations": items}, "p.yml")
    assert "\n" not in str(refused.value) and "bad regular expression" in str(refused.value)


# Items under a product and under a category: a rule of both gets each, the second renaming what the first named.
BY_PRODUCT_THEN_CATEGORY = """\
name: renames by product, then a prefix by category
transformations:
  - id: by_product
    type: field_name_mapping
    mapping: {Image: proc.image}
    rule_conditions: [{type: logsource, product: windows}]
  - id: by_category
    type: field_name_prefix
    prefix: "winlog."
    rule_conditions: [{type: logsource, category: process_creation}]
"""


def test_items_of_two_logsource_conditions_both_apply_to_a_rule_of_both(tmp_path):
    """A windows process_creation rule gets the product's item and the category's, in turn: pySigma reads its
    Image at winlog.proc.image.  Run per written set of conditions only, neither context had that path, and an
    event laid out so was missed."""
    pipeline = _write(tmp_path, BY_PRODUCT_THEN_CATEGORY)
    conversion = convert(yaml.safe_load(BY_PRODUCT_THEN_CATEGORY), "p.yml")
    assert "winlog.proc.image" in conversion.fields["Image"]
    rule = _write(tmp_path, "title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
                            "  sel: {Image: x.exe, CommandLine: y}\n  condition: sel\n", "rule.yml")
    event = json.dumps({"winlog": {"proc": {"image": "x.exe"}, "CommandLine": "y"}}).encode() + b"\n"
    result = run_cli_here(["--rule", rule, "--field-map", pipeline, "--quiet"], event)
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
    assert _pysigma_fields(rule, BY_PRODUCT_THEN_CATEGORY) == \
        ["winlog.proc.image", "winlog.CommandLine"]


def test_logsource_conditions_combining_into_too_many_logsources_are_refused_in_one_line():
    items = [{"type": "field_name_mapping", "mapping": {"Image": f"i{n}"},
              "rule_conditions": [{"type": "logsource", key: f"{key}{n}"}]}
             for key in ("product", "category", "service") for n in range(30)]
    with pytest.raises(PipelineError) as refused:
        convert({"transformations": items}, "p.yml")
    assert "\n" not in str(refused.value) and "logsources" in str(refused.value)


ONLY_PROCESS_CREATION = """\
name: renames for process_creation only
transformations:
  - id: security_4688
    type: field_name_mapping
    mapping: {Image: NewProcessName, EventID: EventCode}
    rule_conditions: [{type: logsource, product: windows, category: process_creation}]
"""


def test_a_rule_no_item_applies_to_reads_its_fields_as_named(tmp_path):
    """pySigma renames nothing in an image_load rule here, so its Image is Image; every context read had the item,
    and Image was NewProcessName only: each image_load event was missed.  The name as written is the last path."""
    conversion = convert(yaml.safe_load(ONLY_PROCESS_CREATION), "p.yml")
    assert conversion.fields == {"Image": ["NewProcessName", "Image"], "EventID": ["EventCode", "EventID"]}
    assert conversion.table["detect"] == ["EventCode"]  # what the pipeline maps EventID to, as before
    pipeline = _write(tmp_path, ONLY_PROCESS_CREATION)
    rule = _write(tmp_path, "title: t\nlogsource: {product: windows, category: image_load}\ndetection:\n"
                            "  sel: {Image|endswith: '\\\\x.exe'}\n  condition: sel\n", "rule.yml")
    event = json.dumps({"EventCode": 7, "Image": "C:\\x.exe"}).encode() + b"\n"
    result = run_cli_here(["--rule", rule, "--field-map", pipeline, "--quiet", "--logsource-unknown", "match"], event)
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
    assert _pysigma_fields(rule, ONLY_PROCESS_CREATION) == ["Image"]


_LOGSOURCE_CONDITIONS = [{"product": "windows"}, {"product": "linux"}, {"category": "process_creation"},
                         {"service": "security"}, {"product": "windows", "category": "process_creation"}]
_RULE_LOGSOURCES = _LOGSOURCE_CONDITIONS[:1] + [{"product": "windows", "category": "process_creation"},
                                                {"product": "windows", "service": "security"},
                                                {"product": "linux", "category": "process_creation"},
                                                {"category": "process_creation"}]
_SIGMA_FIELDS = ["Image", "CommandLine", "User", "EventID"]


@st.composite
def _logsource_pipelines(draw):
    """Renames and prefixes, each under logsource conditions or none: what pipelines mostly are."""
    items = []
    for number in range(draw(st.integers(1, 4))):
        item = {"id": f"i{number}"}
        if draw(st.booleans()):
            item["type"] = "field_name_prefix"
            item["prefix"] = draw(st.sampled_from(["w.", "x.", "evt."]))
        else:
            item["type"] = "field_name_mapping"
            fields = draw(st.lists(st.sampled_from(_SIGMA_FIELDS), min_size=1, max_size=3, unique=True))
            item["mapping"] = {field: draw(st.sampled_from([f"p.{field}", f"q.{field}", [f"a.{field}", f"b.{field}"]]))
                               for field in fields}
        conditions = draw(st.lists(st.sampled_from(_LOGSOURCE_CONDITIONS), max_size=2))
        if conditions:
            item["rule_conditions"] = [dict(type="logsource", **condition) for condition in conditions]
        items.append(item)
    return {"name": "drawn", "transformations": items}


@settings(max_examples=60, deadline=None)
@given(_logsource_pipelines())
def test_every_name_pysigma_gives_a_field_is_one_we_read(pipeline):
    """For a rule of each logsource, the name pySigma's run of the pipeline gives each field is among the paths
    the profile reads it at (the fields as named where no item applies, a product's and a category's items in
    turn on a rule of both)."""
    pipeline_module = pytest.importorskip("sigma.processing.pipeline")
    rule_module = pytest.importorskip("sigma.rule")
    ours = convert(json.loads(json.dumps(pipeline)), "p.yml")
    for logsource in _RULE_LOGSOURCES:
        rule = rule_module.SigmaRule.from_dict({"title": "t", "logsource": logsource, "detection": {
            "sel": {field: "v" for field in _SIGMA_FIELDS}, "condition": "sel"}})
        pipeline_module.ProcessingPipeline.from_dict(json.loads(json.dumps(pipeline))).apply(rule)
        for field, item in zip(_SIGMA_FIELDS, rule.detection.detections["sel"].detection_items):
            theirs = [i.field for i in getattr(item, "detection_items", [item])]
            read = ours.fields.get(field) or [field] + [f"{root}.{field}" for root in ours.roots]
            assert set(theirs) <= set(read), (logsource, field, theirs, read)


def test_a_renaming_item_with_a_key_pysigma_does_not_take_is_refused_as_pysigma_refuses_it(tmp_path):
    """``rule_condition`` (misspelt) was read as no condition at all: the item renamed the fields of every rule,
    where pySigma refuses the pipeline."""
    text = ("transformations:\n  - type: field_name_mapping\n    mapping: {Image: NewProcessName}\n"
            "    rule_condition: [{type: logsource, category: process_creation}]\n")
    with pytest.raises(PipelineError) as refused:
        convert(yaml.safe_load(text), "p.yml")
    assert "\n" not in str(refused.value) and "'rule_condition'" in str(refused.value)
    for kind, parameter in (("field_name_prefix", "prefix: x."), ("field_name_prefix_mapping", "mapping: {a: b}")):
        convert(yaml.safe_load(f"transformations:\n  - {{type: {kind}, {parameter}, id: i, rule_cond_op: or}}\n"), "p")
    listed = text.replace("rule_condition:", "rule_conditions:").replace("process_creation", "[process_creation]")
    with pytest.raises(PipelineError) as refused:
        convert(yaml.safe_load(listed), "p.yml")
    assert "\n" not in str(refused.value) and "category must be text" in str(refused.value)
    misspelt = text.replace("rule_condition:", "rule_conditions:").replace("category", "categroy")
    with pytest.raises(PipelineError) as refused:
        convert(yaml.safe_load(misspelt), "p.yml")
    assert "\n" not in str(refused.value) and "'categroy'" in str(refused.value)
    pipeline_module = pytest.importorskip("sigma.processing.pipeline")
    for refused_text, key in ((text, "rule_condition"), (misspelt, "categroy"), (listed, "must be string")):
        with pytest.raises(Exception, match=key):
            pipeline_module.ProcessingPipeline.from_yaml(refused_text)


# A prefix for some fields only, named in its field name conditions and by no mapping (a common way to move
# the event data of a few fields under the collector's root).
PREFIX_FOR_NAMED_FIELDS = """\
name: a prefix for the fields its conditions name
transformations:
  - id: eventid
    type: field_name_mapping
    mapping: {EventID: event.code}
  - id: event_data
    type: field_name_prefix
    prefix: "winlog.event_data."
    field_name_conditions:
      - type: include_fields
        fields: [Image, CommandLine]
  - id: not_these
    type: field_name_prefix
    prefix: "other."
    field_name_conditions:
      - type: exclude_fields
        fields: [EventID, event.code, User, winlog.event_data.Image, winlog.event_data.CommandLine]
"""


def test_a_prefix_for_fields_its_conditions_name_reads_them_there(tmp_path):
    """pySigma reads the Image of ``include_fields: [Image]`` under the prefix, and an excluded User as written.
    A field no mapping named was judged as one unnamed field, which include_fields never lists: the prefix was
    dropped without a word and the Image of every event missed."""
    conversion = convert(yaml.safe_load(PREFIX_FOR_NAMED_FIELDS), "p.yml")
    assert conversion.fields["Image"] == ["winlog.event_data.Image"]
    assert conversion.fields["CommandLine"] == ["winlog.event_data.CommandLine"]
    assert conversion.fields["User"] == ["User"]  # excluded from the other prefix: as written, not other.User
    assert conversion.roots == ["other"]  # every other field: other.<field>
    rule = _write(tmp_path, "title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
                            "  sel: {EventID: 1, Image|endswith: x.exe, User: bob, ParentImage: p.exe}\n"
                            "  condition: sel\n", "rule.yml")
    pipeline = _write(tmp_path, PREFIX_FOR_NAMED_FIELDS)
    event = {"event": {"code": 1}, "winlog": {"event_data": {"Image": "c:\\x.exe"}}, "User": "bob",
             "other": {"ParentImage": "p.exe"}}
    result = run_cli_here(["--rule", rule, "--field-map", pipeline, "--quiet"], json.dumps(event).encode() + b"\n")
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
    assert _pysigma_fields(rule, PREFIX_FOR_NAMED_FIELDS) == \
        ["event.code", "winlog.event_data.Image", "User", "other.ParentImage"]


def test_a_prefix_for_field_patterns_reads_unnamed_fields_under_it_and_says_so():
    """A pattern cannot be judged on the fields no item names (the rules' fields are not known at load): the
    prefix is taken for them, after the name as written (a path more, never a field lost), and said."""
    items = [{"id": "ed", "type": "field_name_prefix", "prefix": "winlog.event_data.",
              "field_name_conditions": [{"type": "include_fields", "mode": "re", "fields": ["Image|Command"]}]}]
    conversion = convert({"transformations": items}, "p.yml")
    assert conversion.roots == ["winlog.event_data"]
    assert any(note.startswith("field_name_prefix ed holds for field names matching its patterns") and
               "under the prefix" in note for note in conversion.notes), conversion.notes
    items[0]["field_name_conditions"][0]["mode"] = "plain"  # a list: exactly the fields it names
    conversion = convert({"transformations": items}, "p.yml")
    assert conversion.roots == [] and conversion.fields == {"Image|Command": ["winlog.event_data.Image|Command"]}
    assert conversion.notes == []


# Items for a few categories at once (rule_cond_op: or), as pySigma's community pipelines write them, and an item
# for the product: a windows process_creation rule gets both, in turn.
ANY_OF_CATEGORIES = """\
name: an item for any of two categories, then one for the product
transformations:
  - id: process_fields
    type: field_name_mapping
    mapping: {Image: process.executable}
    rule_cond_op: or
    rule_conditions:
      - {type: logsource, category: process_creation}
      - {type: logsource, category: network_connection}
  - id: under_winlog
    type: field_name_prefix
    prefix: "winlog."
    rule_conditions: [{type: logsource, product: windows}]
"""


def test_an_item_for_any_of_several_logsources_meets_the_items_of_each(tmp_path):
    """pySigma reads a windows process_creation rule's Image at winlog.process.executable.  Items whose logsource
    conditions were linked with ``or`` were run in a context of their own, apart from the product's item: that
    path was never read, and every event laid out so missed."""
    conversion = convert(yaml.safe_load(ANY_OF_CATEGORIES), "p.yml")
    assert "winlog.process.executable" in conversion.fields["Image"]
    rule = _write(tmp_path, "title: t\nlogsource: {product: windows, category: process_creation}\ndetection:\n"
                            "  sel: {Image: x.exe, CommandLine: y}\n  condition: sel\n", "rule.yml")
    event = json.dumps({"winlog": {"process": {"executable": "x.exe"}, "CommandLine": "y"}}).encode() + b"\n"
    result = run_cli_here(["--rule", rule, "--field-map", _write(tmp_path, ANY_OF_CATEGORIES), "--quiet"], event)
    assert result.returncode == 0 and len(alerts(result.stdout)) == 1, result.stderr
    misspelt = ANY_OF_CATEGORIES.replace("{type: logsource, category: network_connection}",
                                         "{type: logsource, categroy: network_connection}")
    with pytest.raises(PipelineError, match="a logsource condition takes no key 'categroy'"):
        convert(yaml.safe_load(misspelt), "p.yml")
    assert _pysigma_fields(rule, ANY_OF_CATEGORIES) == \
        ["winlog.process.executable", "winlog.CommandLine"]
