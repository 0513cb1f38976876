"""Command line: ``pipeshell-filter [options]`` filters stdin; ``pipeshell-filter explain`` shows the plan;
``pipeshell-filter run`` supervises collector | filter | shipper (``supervise``); ``pipeshell-filter test``
runs the rules' regression cases (``regress``).

Errors in rules or options print one line and exit with status 2; bad input
lines never stop the stream (see ``io.stream``).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import signal
import socket
import stat
import sys
import time
from typing import List, Optional

import typer
import ujson

from .dirwalk import file_identity
from .engine import Engine
from .records import MAX_RULES_SHOWN, rule_count
from .startup import streaming
from .values import one_line
from .events.fields import LOGSOURCE_KEYS, FieldResolver, ProfileError, builtin_profiles, load_profile_file
from .events.timeparse import NS, format_time, parse_instant, seconds_ns
from .events.xml_event import XmlEventProblem, event_in_line
from .io import inputs as inputs_module
from .io import parallel
from .io.position import FilePlaces, rotated_away
from .io.prefilter import Prefilter, needle
from .io.rule_index import RuleIndex
from .io.signals import StoppedOpening, StopRequest, Terminated, stop_at_start
from .correlate.state import TEMP_NAME_EXTRA, NotAStateFile, StateError, StateFile, write_atomic
from .supervise import SUPERVISED, tell_ready
from .io.stream import (BOM, OWN_TYPES, STATS_DATASET, DEFAULT_MAX_LINE, DEFAULT_MAX_RECORD, Diagnostics, Filter,
                        Output, OutputClosed, decode_problem, every_value, load_event, load_framed, unwrap_line)
from .explain import CorrelationTrace, describe_event, describe_rule_set, left_out_of_range, rule_needles
from .sigma import literals
from .sigma.compile import Plan, compile_plan
from .sigma.collection import RuleSet, canonical_uuid, resolve
from .sigma.placeholders import PlaceholderError, load_placeholders
from .sigma.selection import Selection, SelectionError, parse_selection, select
from .sigma.filters import apply_filters, check_filter
from .sigma.rule import (BUILTIN_RULE, RULE_SUFFIXES, CorrelationRule, FilterRule, RuleError, load_rule, load_rules,
                         parse_duration, rule_files)


class Emit(str, enum.Enum):
    alerts = "alerts"
    matches = "matches"
    all = "all"


class Join(str, enum.Enum):
    window = "window"
    event = "event"


class Stage(str, enum.Enum):
    all = "all"
    match = "match"
    correlate = "correlate"


class ExplainStage(str, enum.Enum):  # explain --events: a match stage alone correlates nothing
    all = "all"
    correlate = "correlate"


class UnknownLogsource(str, enum.Enum):
    match = "match"
    skip = "skip"


class AlertFields(str, enum.Enum):
    matched = "matched"
    rule = "rule"
    none = "none"


class OnStop(str, enum.Enum):
    flush = "flush"
    keep = "keep"


class PrefilterEngine(str, enum.Enum):
    auto = "auto"
    hyperscan = "hyperscan"
    python = "python"


class NonJson(str, enum.Enum):
    pass_ = "pass"
    wrap = "wrap"


# Options in seconds stay below this (ten years): a bigger one is a mistake, and inf or nan would
# break the arithmetic of the watermark.
MAX_SECONDS = 10 * 365 * 86400


class UsageProblem(Exception):
    """A bad rule, field map or option: one line on stderr, exit status 2."""


class BusProblem(Exception):
    """The fleet bus cannot be reached or used (a server down, a stream deleted): one line on stderr,
    exit status 1, so that a supervisor restarts the process (status 2 means: do not)."""


app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Streaming Sigma detection filter: NDJSON events in, enriched events and alert records out.",
)

_RULE_HELP = ("Sigma rule file or directory of them (repeatable); a file may hold several rules, one per YAML "
              "document. Default: the built-in PipeShell rule.")
_JOIN_HELP = "window: each top-level AND term may be met by a different event in the timeframe; event: strict Sigma."


def load_plans(rule_paths: Optional[List[str]], join: Optional[Join], strict: bool = False,
               report=None, placeholders: Optional[dict] = None, selection: Selection = Selection()) -> List[Plan]:
    """The compiled rules (a ``RuleSet``: with the correlation documents, resolved once every
    file is read, and the global filters applied to the rules they name), of which ``selection``
    (``--min-level``, ``--status``, ``--tag``, ...) chooses what alerts (``sigma.selection``).  A rule that fails to
    load is a usage error, except in a directory (unless ``strict``): there it is reported by
    name, in one line, and skipped (through ``report`` when given: ``test`` keeps what it says).  A filter
    reference that applies to no rule is a warning (``strict``: a usage error), said as one, never as a skip."""
    join_mode = join.value if join else None
    if not rule_paths:
        try:
            builtin = RuleSet([compile_plan(load_rule(BUILTIN_RULE, builtin=True), join_mode,
                                            placeholders=placeholders)])
        except RuleError as error:
            raise UsageProblem(str(error)) from None
        return _selected(builtin, selection, "the built-in rule")
    # documents: correlation -> whether it came from a directory; loaded: (rule, from a directory)
    seen, documents, filters, loaded = {}, {}, [], []
    read = set()  # each file once, however many --rule options reach it (a directory and a file in it, a hard link)
    for path in rule_paths:
        directory = os.path.isdir(path)
        try:
            files = rule_files(path)
        except RuleError as error:
            raise UsageProblem(str(error)) from None
        if directory and not files:
            raise UsageProblem(f"rule directory {path} holds no .yml or .yaml files")
        for file in files:
            identity = file_identity(file)
            if identity in read:
                continue
            read.add(identity)
            # in a directory, a named pipe or a device is never opened: it could wait for ever
            rules = load_rules(file) if not directory or os.path.isfile(file) else \
                [RuleError(f"rule {file}: not a regular file")]
            for rule in rules:
                try:
                    if isinstance(rule, RuleError):
                        raise rule
                    same = canonical_uuid(rule.id) or rule.id  # a UUID in any letter case is one (as referred to)
                    if same in seen:
                        raise RuleError(_clash(rule, seen[same]))
                    if isinstance(rule, CorrelationRule):
                        documents[rule] = directory
                    elif isinstance(rule, FilterRule):
                        check_filter(rule, placeholders)
                        filters.append(rule)
                    else:
                        loaded.append((rule, directory))
                    seen[same] = rule.path
                except RuleError as error:
                    if strict or not directory:
                        raise UsageProblem(str(error)) from None
                    (report or _skipped)(str(error))

    def unapplied(document, message):
        if strict:
            raise UsageProblem(message)
        _warned(message)

    # global filters first: the rules they name compile with them
    filtered = apply_filters([rule for rule, _ in loaded], filters, list(documents), unapplied)
    plans, shared = [], {}
    for rule, (_, directory) in zip(filtered, loaded):
        try:
            plans.append(compile_plan(rule, join_mode, placeholders=placeholders, shared=shared))
        except RuleError as error:
            if strict or not directory:
                raise UsageProblem(str(error)) from None
            (report or _skipped)(str(error))

    def unresolved(document, error):
        if strict or not documents[document]:
            raise UsageProblem(str(error)) from None
        (report or _skipped)(str(error))

    rule_set = resolve(plans, list(documents), unresolved)
    rule_set.filters = filters
    if not plans:
        raise UsageProblem("no rule could be loaded from " + ", ".join(rule_paths))
    return _selected(rule_set, selection, ", ".join(rule_paths))


def _selected(rule_set: RuleSet, selection: Selection, where: str) -> RuleSet:
    """``select``, and a usage error when the selection leaves no rule at all: a filter that could
    never alert is a mistake in its options.  An excluded id or a tag that names no rule is a warning,
    even with ``--strict``: an exclusion list is shared across versions of a rule set."""
    chosen = select(rule_set, selection)
    if not chosen:  # before the warnings: a usage error is one line
        raise UsageProblem(f"{selection.options()} leaves out every rule of {where} ({len(chosen.left_out)} "
                           "left out)")
    for exclusion in chosen.unmatched:
        _warned(f"{exclusion.where}: no rule or correlation of {where} has the id or name {exclusion.id[:80]!r}")
    for option, tag in chosen.unmatched_tags:
        _warned(f"{option} {tag[:80]}: no rule or correlation of {where} has a tag it matches")
    return chosen


def read_selection(min_level: Optional[str], statuses: Optional[str], tags: Optional[List[str]] = None,
                   exclude_tags: Optional[List[str]] = None, exclude_rules: Optional[List[str]] = None,
                   exclusion_files: Optional[List[str]] = None) -> Selection:
    """``--min-level``, ``--status``, ``--tag``, ``--exclude-tag``, ``--exclude-rule`` and ``--exclude-rules``
    (the files read), checked before any rule is read."""
    try:
        return parse_selection(min_level, statuses, tags or None, exclude_tags or (), exclude_rules or (),
                               exclusion_files or ())
    except SelectionError as error:
        raise UsageProblem(str(error)) from None


_MIN_LEVEL_HELP = ("Only rules and correlations of this level or above alert (informational < low < medium < high "
                   "< critical; a rule without a level, or with another, is kept). One left out that a kept "
                   "correlation reads still feeds it, without alerting; one nothing kept reads is not loaded.")
_STATUS_HELP = ("Only rules and correlations of these statuses alert (comma-separated: stable, test, experimental, "
                "deprecated, unsupported; a rule without a status is kept); left out as for --min-level.")
_TAG_HELP = ("Only rules and correlations having one of these tags alert (repeatable; any letter case; a trailing * "
             "matches every tag it starts: attack.t1059*); left out as for --min-level. A tag no rule has is a "
             "warning.")
_EXCLUDE_TAG_HELP = ("Rules and correlations having this tag do not alert (repeatable; as for --tag: "
                     "detection.threat-hunting, detection.emerging-threats); left out as for --min-level.")
_EXCLUDE_RULE_HELP = ("This rule or correlation, by id (or name), does not alert (repeatable); left out as for "
                      "--min-level. A v1 collection's shared id: each of its rules. An id no rule has is a warning.")
_EXCLUDE_RULES_HELP = ("As --exclude-rule for each id in FILE (repeatable): one a line (the whole line: a title "
                       "may hold blanks), '#' starts a comment.")


def read_placeholders(path: Optional[str]) -> Optional[dict]:
    """``--placeholders FILE``: the values of the rules' ``|expand`` placeholders (None without it)."""
    if path is None:
        return None
    try:
        return load_placeholders(path)
    except PlaceholderError as error:
        raise UsageProblem(str(error)) from None


_PLACEHOLDERS_HELP = ("YAML mapping of placeholder name to a string or a list of strings: the values of "
                      "|expand placeholders (%name%) in the rules. Without it a rule using |expand is not loaded.")


def _warned(message: str) -> None:
    try:
        sys.stderr.write(f"pipeshell-filter: warning: {one_line(message)}\n")
    except (OSError, ValueError):
        pass


def _skipped(message: str) -> None:
    try:
        sys.stderr.write(f"pipeshell-filter: skipped: {one_line(message)}\n")
    except (OSError, ValueError):
        pass


_LOGSOURCE_HELP = ("The logsource of every event that tells none of its own (no product by its channel or "
                   "profile, no service or category by its field map): KEY=VALUE[,KEY=VALUE] with KEY product, "
                   "service or category, e.g. product=aws,service=cloudtrail or category=proxy, for a stream of "
                   "one kind of log.")


def parse_logsource(text: Optional[str]) -> Optional[tuple]:
    """``--logsource product=aws,service=cloudtrail`` as ``(product, service, category)``, None for each
    not given; a usage error for anything else."""
    if text is None:
        return None
    facts = {}
    shown = text if len(text) <= 80 else text[:77] + "..."
    for part in text.split(","):
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not value or "=" in value:
            raise UsageProblem(f"--logsource {shown!r}: each part must be KEY=VALUE (e.g. category=proxy), "
                               f"not {part.strip()[:40]!r}")
        if key not in LOGSOURCE_KEYS:
            raise UsageProblem(f"--logsource {shown!r}: unknown key {key[:40]!r} (known: product, service, category)")
        if key in facts:
            raise UsageProblem(f"--logsource {shown!r}: {key} given twice")
        facts[key] = value
    return tuple(facts.get(key) for key in LOGSOURCE_KEYS)


def make_resolver(profile: str, field_maps: Optional[List[str]], time_field: Optional[str],
                  logsource: Optional[str] = None) -> FieldResolver:
    if time_field is not None and (not time_field or "" in time_field.split(".")):
        raise UsageProblem(f"--time-field {time_field!r}: a dotted path of field names (e.g. event.created)")
    declared = parse_logsource(logsource)
    try:
        custom = [load_profile_file(path) for path in field_maps or []]
        for loaded in custom:  # what a pySigma pipeline left out, a line each
            for note in loaded.notes:
                _warned(f"field map {loaded.source} (pySigma pipeline): {note}")
        return FieldResolver(custom + builtin_profiles(), profile, time_field, declared)
    except ProfileError as error:
        raise UsageProblem(str(error)) from None


def declares(resolver: FieldResolver) -> bool:
    """Whether some event may declare its service or category (a field map, ``--logsource``): its channel
    then says nothing of the rules that apply to it, and cannot be what the prefilter looks for."""
    given = resolver.logsource is not None and any(resolver.logsource[1:])
    return given or any(p.service or p.category or any(f != "product" for f, _ in p.reads) for p in resolver.profiles)


def seconds_value(value) -> float:
    """A ``SECONDS`` option's number as the README writes them (``90``, ``1.5``, ``1e3``): ``float()`` alone
    also read Python's ``1_0`` as 10 and other scripts' digits (``١``)."""
    try:
        if isinstance(value, str) and ("_" in value or not value.isascii()):
            raise ValueError
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of seconds") from None


SECONDS = {"metavar": "SECONDS", "parser": seconds_value}  # how every option in seconds is read


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    rule: Optional[List[str]] = typer.Option(None, "--rule", metavar="PATH", help=_RULE_HELP),
    emit: Emit = typer.Option(Emit.alerts, "--emit", help="alerts: alert records only; matches: matched events "
                              "(enriched) and alerts; all: every input line, enriched where matched, plus alerts."),
    join: Optional[Join] = typer.Option(None, "--join", help=_JOIN_HELP + " Default: window for the built-in rule, "
                                        "event for --rule."),
    lateness: float = typer.Option(60.0, "--lateness", **SECONDS,
                                   help="How far behind the newest event time an event may arrive and still be on "
                                   "time."),
    time_field: Optional[str] = typer.Option(None, "--time-field", metavar="PATH",
                                             help="Dotted path of the event time, overriding the detected one."),
    max_skew: float = typer.Option(300.0, "--max-skew", **SECONDS, help="How far a source's events may "
                                   "run ahead of the others (or of the wall clock, on live input) before they are "
                                   "suspect: they never move the watermark when the input pauses; on live input, "
                                   "one that far past the wall clock never moves it."),
    inputs: Optional[List[str]] = typer.Option(None, "--input", metavar="PATH", help="Read this file (NDJSON or "
                                               ".evtx) or directory instead of stdin (-: stdin too); several are "
                                               "merged by event time."),
    profile: str = typer.Option("auto", "--profile", metavar="auto|NAME",
                                help="Event shape: auto (detected per event) or a profile name."),
    field_map: Optional[List[str]] = typer.Option(None, "--field-map", metavar="FILE",
                                                  help="Your own field-resolution table (YAML/JSON), tried first, "
                                                  "or a pySigma processing pipeline's YAML (its field renames)."),
    idle: float = typer.Option(2.0, "--idle", **SECONDS, help="On live input, after this long with no newer "
                               "event time the watermark follows the wall clock (0: never)."),
    max_line: int = typer.Option(DEFAULT_MAX_LINE, "--max-line-bytes", metavar="BYTES",
                                 help="Longer lines are passed on uninspected."),
    no_prefilter: bool = typer.Option(False, "--no-prefilter", help="Parse every line, even those the rule's "
                                      "literals rule out (slower; every bad line is diagnosed)."),
    prefilter_engine: PrefilterEngine = typer.Option(PrefilterEngine.auto, "--prefilter-engine",
                                                     help="Byte scanner: hyperscan when installed, else python."),
    non_json: NonJson = typer.Option(NonJson.pass_, "--non-json", help="pass: lines that are not a JSON object go "
                                     "on byte for byte; wrap: each becomes a JSON record with the raw text and the "
                                     "reason (for Fluent Bit's stdin input)."),
    fluentbit_time: bool = typer.Option(False, "--fluentbit-time", help="Write records as [time, {record}] with the "
                                        "event's own time, Fluent Bit's stdin form that keeps event time."),
    line_field: Optional[str] = typer.Option(None, "--line-field", metavar="FIELD", help="Each input line is a "
                                             "JSON object holding the event's own line, as text, in this field (a "
                                             "collector forwarding raw lines: Fluent Bit's tail input without a "
                                             "parser writes {\"log\": \"<line>\"}): that line is read instead. A "
                                             "line without it is read as it is."),
    max_record: int = typer.Option(DEFAULT_MAX_RECORD, "--max-record-bytes", metavar="BYTES",
                                   help="With --non-json wrap, no output line is longer (bigger ones are cut "
                                   "into a pipeline_error record); with --fluentbit-time alone, no pipeline_error "
                                   "record is."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", help="Processes that prefilter and match a "
                                          "regular-file input in parallel (0: none). Default: one per CPU, up to "
                                          f"{parallel.MAX_WORKERS}; none on a single CPU."),
    stage: Stage = typer.Option(Stage.all, "--stage", help="all: detect and correlate; match: detect only, writing "
                                "Detection records (schema/detection.schema.json); correlate: read Detection "
                                "records and write alerts. Both stages need the same --rule and the same "
                                "--min-level, --status, --tag, --exclude-tag, --exclude-rule and --exclude-rules."),
    logsource_unknown: UnknownLogsource = typer.Option(
        UnknownLogsource.match, "--logsource-unknown", help="An event that does not tell what a rule's logsource "
        "asks (no channel, no product): match: the rule applies as far as the event tells; skip: it does not."),
    logsource: Optional[str] = typer.Option(None, "--logsource", metavar="KEY=VALUE,...", help=_LOGSOURCE_HELP),
    strict: bool = typer.Option(False, "--strict", help="A rule in a --rule directory that fails to load is an "
                                "error (by default it is reported and skipped); so is a global filter's "
                                "reference that applies to no rule."),
    placeholders: Optional[str] = typer.Option(None, "--placeholders", metavar="FILE", help=_PLACEHOLDERS_HELP),
    min_level: Optional[str] = typer.Option(None, "--min-level", metavar="LEVEL", help=_MIN_LEVEL_HELP + " Give "
                                            "--stage match and --stage correlate the same selection options."),
    status: Optional[str] = typer.Option(None, "--status", metavar="LIST", help=_STATUS_HELP),
    tag: Optional[List[str]] = typer.Option(None, "--tag", metavar="TAG", help=_TAG_HELP),
    exclude_tag: Optional[List[str]] = typer.Option(None, "--exclude-tag", metavar="TAG", help=_EXCLUDE_TAG_HELP),
    exclude_rule: Optional[List[str]] = typer.Option(None, "--exclude-rule", metavar="ID", help=_EXCLUDE_RULE_HELP),
    exclude_rules: Optional[List[str]] = typer.Option(None, "--exclude-rules", metavar="FILE",
                                                      help=_EXCLUDE_RULES_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="No summary line on stderr at exit."),
    state: Optional[str] = typer.Option(None, "--state", metavar="FILE", help="Keep the correlation state in "
                                        "this file across restarts: restored at start, saved every "
                                        "--state-interval, on SIGTERM, SIGHUP or Ctrl-C and at end of input, which "
                                        "becomes a pause (windows stay open for the next run); events are taken once."),
    state_interval: float = typer.Option(10.0, "--state-interval", **SECONDS,
                                         help="With --state, snapshot this often (0: only on a signal and at "
                                         "the end)."),
    state_reset: bool = typer.Option(False, "--state-reset", help="With --state, discard the saved state "
                                     "(one this build cannot use, or on purpose) and start afresh."),
    on_stop: OnStop = typer.Option(OnStop.flush, "--on-stop", help="With --state, what SIGTERM, SIGHUP or Ctrl-C "
                                   "does with windows still open: flush: their alerts are written now, as at end "
                                   "of input; keep: they stay in the state and the next run alerts when its "
                                   "watermark passes them, as one run would have (for a shipper that stops reading "
                                   "when it is stopped: Fluent Bit's exec input)."),
    heartbeat: float = typer.Option(5.0, "--heartbeat", **SECONDS, help="With --stage match: write a "
                                    "heartbeat record (the agent's time) each time the input's event time moved "
                                    "this far, and this often while live input waits, so that a correlate stage "
                                    "fed by many agents moves on when nothing matches (0: none)."),
    agent: Optional[str] = typer.Option(None, "--agent", metavar="NAME", help="With --stage match: this "
                                        "agent's name in heartbeats (default: the host name). Each match "
                                        "process feeding one correlate stage needs its own."),
    agent_idle: float = typer.Option(60.0, "--agent-idle", **SECONDS, help="With --stage correlate: "
                                     "an agent that sent nothing for this long no longer holds the fleet's "
                                     "time back."),
    agents: int = typer.Option(0, "--agents", metavar="N", help="With --stage correlate: the fleet's time "
                               "stays still until N agents have reported (or --agent-idle seconds passed), so "
                               "that agents starting late (a backfill) do not find their events late."),
    early_alerts: bool = typer.Option(False, "--early-alerts", help="A correlation whose condition can only "
                                      "stay true as events are added (count, distinct values or rules with > or "
                                      ">=) alerts on the event that completes its window, not when the watermark "
                                      "passes it (lateness + idle later)."),
    alert_fields: AlertFields = typer.Option(
        AlertFields.matched, "--alert-fields", help="Which values of each event an alert lists with it "
        "(sigma.events[].fields): matched: the rule's Sigma 'fields' and the fields its matched selections read; "
        "rule: the rule's 'fields' only; none: no values. A match stage's Detection records carry them; a "
        "correlate stage shows those its own option names."),
    nats: Optional[str] = typer.Option(None, "--nats", metavar="URL", help="The fleet bus, NATS JetStream "
                                       "(needs nats-py): --stage match publishes its Detection and heartbeat "
                                       "records there instead of stdout; --stage correlate reads its partition "
                                       "from there (with --state) and also publishes its alerts."),
    nats_prefix: str = typer.Option("pipeshell", "--nats-prefix", metavar="NAME",
                                    help="Subject prefix on the bus: NAME.records.<partition>, NAME.alerts."),
    partitions: int = typer.Option(1, "--partitions", metavar="N", help="With --stage match --nats: how many "
                                   "correlate processes share the rules that group by fields."),
    partition: int = typer.Option(0, "--partition", metavar="P", help="With --stage correlate --nats: the "
                                  "partition this process owns (0 also owns every rule that cannot be split)."),
    stats_interval: float = typer.Option(0.0, "--stats-interval", **SECONDS, help="Write a stats record "
                                         "(event.kind metric: lines, matches, alerts, diagnostics, sources with a "
                                         "wrong clock, events held, the rules that matched most) this often, and at "
                                         "the end (0: never)."),
    rule_stats: Optional[str] = typer.Option(None, "--rule-stats", metavar="FILE", help="At exit (end of input, "
                                             "SIGTERM, SIGHUP, Ctrl-C), write to FILE one JSON line per rule or "
                                             "correlation that matched, fired or alerted in this run: id, title, "
                                             "level, type, path, detections, alerts, fires (alerts before "
                                             "--suppress, or a correlation's hits, a quiet inner one's too), "
                                             "suppressed; the most alerts first."),
    field_coverage: bool = typer.Option(False, "--field-coverage", help="With --rule-stats: also list each rule "
                                        "routed events but never matched, and give each rule routed events "
                                        "routed (how many) and fields_never_seen (fields its condition needs that "
                                        "no sampled event routed to it carried). Every line is then parsed: "
                                        "slower with a few rules (about 4x with the built-in rule)."),
    rule_cost: bool = typer.Option(False, "--rule-cost", help="With --rule-stats: also list each rule tried on "
                                   "events, and give each rule tried (events its condition was tried on, after the "
                                   "rule index) and eval_ms (the time those tries took, worker processes' too): "
                                   "which rules the run's time goes to. A few per cent slower."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="TIME", help="Only events of this event time "
                                        "or later are detected (RFC 3339, a date for its midnight UTC, or epoch "
                                        "seconds); the others go on unmatched. An event without a time is then "
                                        "never detected."),
    to: Optional[str] = typer.Option(None, "--to", metavar="TIME", help="Only events before this event time are "
                                     "detected (as --from; the range is [--from, --to))."),
    suppress: Optional[str] = typer.Option(None, "--suppress", metavar="DURATION", help="One alert per rule (or "
                                           "correlation) and host (or group) per DURATION of event time (seconds, "
                                           "or 30s, 10m, 1h, 2d): the first goes out, the others in its period are "
                                           "counted, and the key's next alert after it says how many "
                                           "(sigma.suppressed). 0: off."),
) -> None:
    """Filter NDJSON events from stdin (or --input) to stdout."""
    if ctx.invoked_subcommand is not None:
        _no_options_before(ctx)
        return
    check_seconds(("--lateness", lateness), ("--idle", idle), ("--max-skew", max_skew))
    check_line_options(max_line, line_field)
    if not 4096 <= max_record <= MAX_BYTES_OPTION:
        raise UsageProblem(f"--max-record-bytes must be between 4096 and {MAX_BYTES_OPTION} (1 GiB)")
    if workers is not None and not 0 <= workers <= MAX_WORKERS_OPTION:
        raise UsageProblem(f"--workers must be between 0 and {MAX_WORKERS_OPTION}")
    check_seconds(("--heartbeat", heartbeat))
    check_agent_idle(agent_idle)
    check_agents(agents)
    if agent is not None and not agent.strip():
        raise UsageProblem("--agent must not be empty")
    check_seconds(("--stats-interval", stats_interval), ("--state-interval", state_interval))
    suppress_ns = read_duration("--suppress", suppress)
    between = read_range(from_, to)
    if not 1 <= partitions <= 1024:  # checked when unused too: a typo is told at once, not when --nats is added
        raise UsageProblem("--partitions must be between 1 and 1024")
    if not 0 <= partition < 1024:
        raise UsageProblem("--partition must be between 0 and 1023")
    # Records cut to --max-record-bytes: every one with wrap; a match stage's lines of its own record types
    # (impersonation) in any mode; with --fluentbit-time alone, the lines it writes as pipeline_error
    # records, which --emit alerts never writes (an alert is never cut then, nor in a correlate stage).
    wrapped = non_json is NonJson.wrap or stage is Stage.match or \
        fluentbit_time and stage is Stage.all and emit is not Emit.alerts
    _no_option_without_effect(ctx, stage, nats, state, heartbeat, wrapped, rule_stats)
    check_state_path(state)
    check_output_path("--rule-stats", rule_stats)
    # Every check of the options that needs no rule comes before the rules are read: a rule load's
    # warnings (a tag no rule has, a rule skipped) went out before the usage error, which was then not one line.
    resolver = make_resolver(profile, field_map, time_field, logsource)
    if any(path in ("-", inputs_module.STDIN) for path in inputs or ()):
        # before the inputs are opened: a closed one is said so, not as /dev/stdin's failure; a write-only one
        # was reopened through /dev/stdin and its file read
        check_stdin()
    try:
        files, walked = inputs_module.expand(inputs or [], skipped=_skipped)
    except inputs_module.InputError as error:
        raise UsageProblem(str(error)) from None
    reads_stdin = not files and not (nats is not None and stage is Stage.correlate)
    if reads_stdin:
        check_stdin()
    check_not_output(files, reads_stdin)
    if rule_stats is not None or state is not None:
        check_not_read((("--rule-stats", rule_stats), ("--state", state)),
                       [("--input", path) for path in files] + [("--rule", path) for path in rule_paths_read(rule)]
                       + [("--field-map", path) for path in field_map or ()]
                       + [("--exclude-rules", path) for path in exclude_rules or ()]
                       + [("--placeholders", path) for path in ([placeholders] if placeholders else [])],
                       stdin=reads_stdin, walked=[("--input", path, inputs_module.INPUT_SUFFIXES)
                                                  for path in inputs or () if os.path.isdir(path)]
                       + [("--rule", path, RULE_SUFFIXES) for path in rule or () if os.path.isdir(path)])
    if idle and _given(ctx, "idle") and not _reads_live(files, nats, stage):
        raise UsageProblem("--idle needs live input (a pipe or terminal as the only input, or --stage correlate "
                           "--nats): here it would do nothing")
    if nats is not None:
        check_fleet_bus(nats, nats_prefix, stage, state, bool(files))
    selection = read_selection(min_level, status, tag, exclude_tag, exclude_rule, exclude_rules)
    plans = load_plans(rule, join, strict, placeholders=read_placeholders(placeholders), selection=selection)
    _no_strict_without_a_directory(ctx, rule, plans)
    # The correlate stage reads Detection records: every line is one.
    prefilter, index = (None, None) if no_prefilter or stage is Stage.correlate else \
        build_prefilter(plans, prefilter_engine.value, "match" if declares(resolver) else logsource_unknown.value,
                        OWN_TYPES if stage is Stage.match else ())

    engine = Engine(plans, resolver, seconds_ns(lateness), unknown_logsource=logsource_unknown.value,
                    max_skew_ns=seconds_ns(max_skew), agent_idle=agent_idle, agents=agents, early=early_alerts,
                    alert_fields=alert_fields.value, suppress_ns=suppress_ns, between=between)
    if field_coverage:
        # which fields each route's events carry: every event is routed, so none is ruled out unread
        # (the rule index still picks the rules each line is tried on)
        engine.watch_fields()
        prefilter = None
    if rule_cost:
        engine.detector.time_rules()
    diagnostics = Diagnostics()
    check_stdout()
    output = Output(sys.stdout.fileno())
    # the correlate stage writes alerts only: its input lines (Detection records, or lines that are
    # none, which are diagnosed) are never passed on, whatever --emit says
    shown = "alerts" if stage is Stage.correlate else emit.value
    stream_filter = Filter(engine, output, diagnostics, shown, idle or None, prefilter=prefilter,
                           non_json=non_json.value, fluentbit_time=fluentbit_time, max_record=max_record,
                           workers=(parallel.default_workers() if workers is None else workers) if line_field is None
                           else 0, stage=stage.value,
                           index=index)
    stream_filter.line_field = line_field
    stream_filter.repeated_keys = any(inputs_module.is_evtx(path) for path in files)

    bus, bus_errors = None, ()  # the bus (asyncio, threads) is imported only when asked for: 45 ms
    if nats is not None:
        from .io import fleet
        from .io.bus import BusError

        bus, bus_errors = open_fleet_bus(nats, nats_prefix, stage), BusError
        bus.report = diagnostics.note  # a server that stays unreachable is said, not waited for in silence
        if stage is Stage.match:
            stream_filter.publisher = fleet.Publisher(bus, nats_prefix, partitions, engine.correlation.partition_key,
                                                      diagnostics.report)
        else:
            stream_filter.alert_sink = fleet.AlertPublisher(bus, nats_prefix, diagnostics.report)
    if stage is Stage.match and heartbeat:
        stream_filter.send_heartbeats(agent or socket.gethostname(), heartbeat, seconds_ns(max_skew))
        if bus is not None:
            _check_heartbeat_size(stream_filter, bus)
    if stats_interval:
        stream_filter.keep_stats(stats_interval, lambda: stats_record(stream_filter, engine, diagnostics))
    if state is not None:
        resume_state(stream_filter, state, state_interval, state_reset)
        files, notes = _rotated_first(files, stream_filter.saved_place, stream_filter.saved_inputs)
        stream_filter.said_of_places(notes)
        if bus is not None and stage is Stage.correlate:
            _check_state_subject(stream_filter, state, fleet.record_subject(nats_prefix, partition))

    streaming()
    tell_ready()  # in ``run``'s chain, the collector starts now: a failure above lost what it read meanwhile
    try:
        # From here SIGTERM and Ctrl-C end the input: what was read is processed and flushed,
        # and the exit status is 0, as at end of input.
        with StopRequest() as stop, _rule_stats_at_exit(rule_stats, engine):
            if bus is not None:
                bus.stopping = lambda: stop.requested
            try:
                if bus is not None and stage is Stage.correlate:
                    start = None if stream_filter.bus_seq is None else stream_filter.bus_seq + 1
                    fleet.consume(stream_filter, bus, nats_prefix, partition, stop, start, state)
                elif not files:
                    stdin = sys.stdin.fileno()
                    stream_filter.run(stdin, live=inputs_module.is_live(os.fstat(stdin)), max_line=max_line,
                                      stop=stop)
                elif len(files) == 1 and not inputs_module.is_evtx(files[0]):
                    with inputs_module.open_input(files[0], stop) as handle:  # a FIFO, /dev/stdin: live
                        stream_filter.run(handle.fileno(), live=inputs_module.is_live(os.fstat(handle.fileno())),
                                          max_line=max_line, stop=stop, path=files[0])
                else:
                    lines = _file_lines(files, stream_filter, diagnostics, max_line, walked, stop)
                    # several merged: the merge heeds the stop itself, handing on what it read from pipes
                    stream_filter.process_labelled(lines, max_line, stop if len(files) == 1 else None)
            except inputs_module.InputError as error:
                stream_filter.finish()
                raise UsageProblem(str(error)) from None
            except StoppedOpening:  # a stop while an input waited to be opened: nothing was read
                pass
            except bus_errors as error:
                raise BusProblem(str(error)) from None
            try:
                stream_filter.finish(keep_open=stop.requested and on_stop is OnStop.keep)
            except bus_errors as error:
                raise BusProblem(str(error)) from None
            finally:
                if bus is not None:
                    if getattr(bus, "partition_lease", None) is not None:
                        bus.partition_lease.release()  # after the last alerts: a standby goes on from here
                    bus.close()
    except OutputClosed as closed:
        _output_closed(closed, None if quiet else lambda: _summary(stream_filter, engine, diagnostics, CLOSED_EARLY))
        return
    if not quiet:
        _summary(stream_filter, engine, diagnostics)


MAX_BYTES_OPTION = 1 << 30  # --max-line-bytes, --max-record-bytes: a line is held whole up to it
MAX_WORKERS_OPTION = 256  # --workers: processes forked at once


def _no_options_before(ctx: typer.Context) -> None:
    """The filter's options written before a subcommand would be ignored (``run`` would filter with
    the defaults, ``explain`` show another rule): a usage error that says where they go."""
    given = [param.opts[0] for param in ctx.command.params if _given(ctx, param.name)]
    if given:
        where = "after '--'" if ctx.invoked_subcommand == "run" else "after the subcommand"
        raise UsageProblem(f"{', '.join(given)} before '{ctx.invoked_subcommand}' would be ignored: "
                           f"give the options {where}")


def _no_option_without_effect(ctx: typer.Context, stage: Stage, nats: Optional[str], state: Optional[str],
                              heartbeat: float, wrapped: bool, rule_stats: Optional[str] = None) -> None:
    """An option given where it does nothing is a usage error, not ignored in silence: a correlator
    given ``--partition 1`` without ``--nats`` correlated every record it read, ``--state-interval``
    without ``--state`` saved nothing, ``--agents`` on a match stage waited for no one, and
    ``--early-alerts`` there hastened no correlation.  A correlate stage reads Detection records,
    not events: ``--profile``, ``--time-field``, ``--logsource-unknown``, the prefilter and the workers
    had nothing to act on there, and ``--emit`` nothing to pass on.  Left at its default, an option is
    never refused (``wrapped``: the output has records cut to a size)."""
    events = ("--stage all or --stage match (a correlate stage reads Detection records, not events)",
              stage is not Stage.correlate)
    cut = "--non-json wrap" + (" (a correlate stage's alerts are never cut with --fluentbit-time alone)"
                               if stage is Stage.correlate else ", or --fluentbit-time with --emit matches or all "
                               "(alerts are never cut with --fluentbit-time alone)")
    needs = {  # parameter -> what it needs, and whether this run has it
        "partitions": ("--stage match --nats", nats is not None and stage is Stage.match),
        "partition": ("--stage correlate --nats", nats is not None and stage is Stage.correlate),
        "nats_prefix": ("--nats", nats is not None),
        "state_interval": ("--state", state is not None),
        "state_reset": ("--state", state is not None),
        "on_stop": ("--state", state is not None),
        "heartbeat": ("--stage match", stage is Stage.match),
        "agent": ("--stage match and a --heartbeat other than 0", stage is Stage.match and heartbeat > 0),
        "agent_idle": ("--stage correlate", stage is Stage.correlate),
        "agents": ("--stage correlate", stage is Stage.correlate),
        "early_alerts": ("--stage all or --stage correlate", stage is not Stage.match),
        "suppress": ("--stage all or --stage correlate (alerts are made where correlation runs)",
                     stage is not Stage.match),
        "max_record": (cut, wrapped),
        "emit": ("--stage all or --stage match (a correlate stage writes alerts only)", events[1]),
        "profile": events, "field_map": events, "time_field": events, "logsource_unknown": events, "logsource": events,
        "no_prefilter": events, "prefilter_engine": events, "workers": events,
        "field_coverage": ("--rule-stats and --stage all or --stage match (a correlate stage reads no events)",
                           rule_stats is not None and events[1]),
        "rule_cost": ("--rule-stats and --stage all or --stage match (a correlate stage tries no rule on events)",
                      rule_stats is not None and events[1]),
    }
    for param in ctx.command.params:
        if param.name in needs and not needs[param.name][1] and _given(ctx, param.name):
            raise UsageProblem(f"{param.opts[0]} needs {needs[param.name][0]}: here it would do nothing")


def _no_strict_without_a_directory(ctx: typer.Context, rules: Optional[List[str]], plans) -> None:
    """``--strict`` acts on the rules of a ``--rule`` directory (a file named on its own must load
    anyway) and on the references of global filters (``plans``, the rule set loaded)."""
    if _given(ctx, "strict") and not any(os.path.isdir(path) for path in rules or ()) \
            and not getattr(plans, "filters", ()):
        raise UsageProblem("--strict needs a --rule directory or a global filter (a rule file named on its own "
                           "must load anyway): here it would do nothing")


def _reads_live(files: List[str], nats: Optional[str], stage: Stage) -> bool:
    """The run reads live input, as the reading in ``run`` decides it: the bus, or standard input or
    one NDJSON ``--input`` that is no regular file (a pipe, a terminal) nor ``/dev/null``
    (``inputs.is_live``).  Several files (merged) and an .evtx are read as files, whatever they are.
    A path that cannot be looked at counts as live: its reading says what is wrong.  Only there does
    ``--idle`` act; ``--idle 0`` (never) is what a file gets anyway, so it is taken everywhere: one
    command line (a benchmark's) serves both."""
    if nats is not None and stage is Stage.correlate:
        return True
    if len(files) > 1 or files and inputs_module.is_evtx(files[0]):
        return False
    try:
        status = os.stat(files[0]) if files else os.fstat(sys.stdin.fileno())
    except OSError:
        return True
    return inputs_module.is_live(status)


def _given(ctx: typer.Context, name: str) -> bool:
    """The option ``name`` was given by the user, not left at its default."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"


def _clash(rule, other: str) -> str:
    """Two rules known by one text: a rule with neither id nor name is known by its title, and "its id
    <title>" sent its writer looking for an id it never wrote."""
    return (f"rule {rule.path}: its id (its title, where it has no id or name) {rule.id!r} already names "
            f"{other}: give each its own id")


def check_state_path(path: Optional[str]) -> None:
    """``--state``: a file that can be saved, checked at start, before the bus or any input.  In a
    directory that did not exist or could not be written, the run went on without a state: each
    snapshot failed (one line on stderr), and a restart lost every window, exit status 0."""
    check_output_path("--state", path)


def check_output_path(option: str, path: Optional[str]) -> None:
    """A file ``write_atomic`` can replace (``--state``, ``--rule-stats``), checked at start, before any
    input: a run of hours should not learn at its end that its file cannot be written."""
    if path is None:
        return
    if path == "":
        raise UsageProblem(f"{option} needs a file name")
    if os.path.basename(path) in ("", ".", ".."):  # ``state.json/`` was written to state.json, never read back
        raise UsageProblem(f"{option} {path}: not a file name (it ends as a directory's does)")
    if path == "-":  # standard output, to every Unix tool: here a file named "-" in the working directory
        raise UsageProblem(f"{option} -: not a file name (standard output carries the stream; name a file)")
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/zero, a pipe: never read, replaced or removed
        raise UsageProblem(f"{option} {path}: not a regular file")
    folder = os.path.dirname(os.path.realpath(path))  # where the file is written (``write_atomic``)
    try:
        directory = stat.S_ISDIR(os.stat(folder).st_mode)
    except OSError as error:  # missing, or a directory on the way not searchable
        raise UsageProblem(f"{option} {path}: {folder}: {error.strerror}") from None
    if not directory:
        raise UsageProblem(f"{option} {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageProblem(f"{option} {path}: cannot write in the directory {folder}")
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    if len(os.fsencode(os.path.basename(os.path.realpath(path)))) + TEMP_NAME_EXTRA > longest:
        raise UsageProblem(f"{option} {path}: file name too long (written first beside it, under a name "
                           f"{TEMP_NAME_EXTRA} bytes longer: {longest - TEMP_NAME_EXTRA} bytes at most here)")


def rule_paths_read(paths: Optional[List[str]]) -> List[str]:
    """The files the ``--rule`` options name (a directory's rule files; one that cannot be listed, none:
    loading the rules said so already)."""
    found = []
    for path in paths or ():
        try:
            found += rule_files(path)
        except RuleError:
            pass
    return found


def check_not_read(outputs: tuple, read: list, stdin: bool = False, walked: list = ()) -> None:
    """``--rule-stats`` and ``--state`` replace their file: one this run also reads (an input, or the file
    standard input is, a rule, a field map; ``read``: (option, path) pairs) was destroyed at the end (the
    table) or at the first snapshot, and one file for both options lost the state.  Each a usage error.
    So is one not there yet that an ``--input`` or ``--rule`` directory would list (``walked``: (option,
    directory, the file name endings it reads)): the first run wrote it, and each restart was refused."""
    def identity(path: str) -> Optional[tuple]:
        try:
            status = os.stat(path)
        except (OSError, ValueError):
            return None
        return (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None

    given = [(option, path) for option, path in outputs if path]
    for option, path in given:
        for reader, top, endings in walked:
            if _listed_under(path, top, endings):
                raise UsageProblem(f"{option} {path} is in the directory {reader} {top} reads: a next run "
                                   f"would read it as {reader} (name it otherwise, or keep it elsewhere)")
    if len(given) == 2 and os.path.realpath(given[0][1]) == os.path.realpath(given[1][1]):
        raise UsageProblem(f"{given[0][0]} and {given[1][0]} name one file, {given[0][1]}: each would replace "
                           "the other's")
    targets = {}
    for option, path in given:
        found = identity(path)
        if found is not None:
            targets.setdefault(found, (option, path))
    if not targets:
        return
    if stdin and sys.stdin is not None:
        status = os.fstat(sys.stdin.fileno())
        found = targets.get((status.st_dev, status.st_ino)) if stat.S_ISREG(status.st_mode) else None
        if found is not None:
            raise UsageProblem(f"{found[0]} {found[1]} is the file standard input reads: it would be replaced")
    for option, path in read:
        found = targets.get(identity(path))
        if found is not None:
            raise UsageProblem(f"{found[0]} {found[1]} is also read, as {option} {path}: it would be replaced")


def _listed_under(path: str, top: str, endings: tuple) -> bool:
    """Whether the walk of the directory ``top`` would list the file ``path``, or the link to it that
    ``path`` is: under it, by a name it reads (``endings``), there yet or not."""
    return any(os.path.basename(name).lower().endswith(endings)
               and name.startswith(os.path.join(folder, ""))
               for name in (os.path.abspath(path), os.path.realpath(path))
               for folder in (os.path.abspath(top), os.path.realpath(top)))


def check_not_output(files: List[str], stdin: bool) -> None:
    """An input (or standard input) that is the regular file standard output writes to (``>> FILE``) is a
    usage error: the filter read back what it wrote, for ever, until the disk was full."""
    try:
        status = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return
    if not stat.S_ISREG(status.st_mode):
        return
    output = status.st_dev, status.st_ino
    named = [("standard input", 0)] if stdin else []
    for what, path in named + [(f"input {path}" if path != inputs_module.STDIN else "standard input", path)
                               for path in files]:
        try:
            found = os.fstat(path) if isinstance(path, int) else os.stat(path)
        except (OSError, ValueError):  # closed, or gone: its reading says so
            continue
        if stat.S_ISREG(found.st_mode) and (found.st_dev, found.st_ino) == output:
            raise UsageProblem(f"{what} is the file standard output writes to: the filter would read back what "
                               "it writes, for ever")


def check_seconds(*options: tuple) -> None:
    """Each ``(option name, value)``: a number of seconds from 0 to ``MAX_SECONDS`` (NaN is none)."""
    for name, value in options:
        if not 0 <= value <= MAX_SECONDS:
            raise UsageProblem(f"{name} must be between 0 and {MAX_SECONDS} seconds")


def check_agent_idle(seconds: float) -> None:
    """``--agent-idle``: seconds as ``check_seconds`` takes them, but not 0, with which every agent was
    silent between any two of its records, and the fleet's time went on without each of them."""
    check_seconds(("--agent-idle", seconds))
    if seconds == 0:
        raise UsageProblem("--agent-idle must be more than 0 seconds (how long an agent may send nothing)")


def read_duration(name: str, text: Optional[str]) -> int:
    """A duration option in nanoseconds (0 when absent): seconds, or Sigma's ``30s``, ``10m``, ``1h``,
    ``2d`` as a rule's ``timeframe`` writes it: 0, or from 1 ns to ``MAX_SECONDS``."""
    if text is None:
        return 0
    ns = parse_duration(text)
    if ns is None:
        try:
            # float() reads Python's "1_0" as 10: no duration the README gives
            seconds = float(text) if text.strip().isascii() and "_" not in text else float("nan")
        except ValueError:
            seconds = float("nan")
        ns = seconds_ns(seconds) if 0 <= seconds <= MAX_SECONDS else None
        if ns == 0 and seconds > 0:  # under a nanosecond: not 0, which turns it off unsaid
            ns = None
    if ns is None or ns > MAX_SECONDS * NS:
        raise UsageProblem(f"{name} {text[:40]!r}: a duration in seconds, or as 30s, 10m, 1h, 2d: 0 (off), or "
                           f"from 1 ns to {MAX_SECONDS} seconds")
    return ns


def read_range(first: Optional[str], end: Optional[str]) -> Optional[tuple]:
    """``--from`` and ``--to`` as ``(first, end)`` in ns (None for one not given); None without either."""
    if first is None and end is None:
        return None
    bounds = []
    for name, text in (("--from", first), ("--to", end)):
        ns = None if text is None else parse_instant(text)
        if text is not None and ns is None:
            raise UsageProblem(f"{name} {text[:40]!r}: a time as RFC 3339 (2026-11-02T08:00:00Z), a date "
                               "(2026-11-02, its midnight UTC) or epoch seconds")
        bounds.append(ns)
    if None not in bounds and bounds[0] >= bounds[1]:
        raise UsageProblem(f"--from {first[:40]!r} is not before --to {end[:40]!r}: no event could be detected")
    return tuple(bounds)


def check_agents(agents: int) -> None:
    """``--agents``, for the correlate stage and for ``explain --events --stage correlate``."""
    if not 0 <= agents <= 100_000:
        raise UsageProblem("--agents must be between 0 and 100000")


def check_line_options(max_line: int, line_field: Optional[str]) -> None:
    """``--max-line-bytes`` and ``--line-field``, for the filter and for ``explain --events``."""
    if not 1024 <= max_line <= MAX_BYTES_OPTION:
        raise UsageProblem(f"--max-line-bytes must be between 1024 and {MAX_BYTES_OPTION} (1 GiB)")
    if line_field == "":  # an unset variable in a unit's command line, not the key "" of any collector
        raise UsageProblem("--line-field must not be empty")
    if line_field is not None and any(c in '\\"' or c < " " for c in line_field):
        # the key is matched by a JSON decoder that takes no such name: a traceback, exit 1
        raise UsageProblem("--line-field must not hold a backslash, a double quote or a control character")


def check_stdin() -> None:
    """Standard input, when the filter reads it, is one it can read: said at start, in one line.  Open
    for writing only (``0>FILE``), the first read failed with 'Bad file descriptor' and exit status 1.
    (A directory never gets here: the interpreter refuses it before any of this code runs.)"""
    if sys.stdin is None:  # started with stdin closed (``<&-``)
        raise UsageProblem("standard input is closed")
    if fcntl.fcntl(sys.stdin.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        raise UsageProblem("standard input is open for writing only")
    fd = sys.stdin.fileno()
    if stat.S_ISREG(os.fstat(fd).st_mode):  # ``< archive.ndjson.gz``; a pipe's first bytes cannot be looked at
        packed = inputs_module.compression(os.pread(fd, inputs_module.HEAD, os.lseek(fd, 0, os.SEEK_CUR)))
        if packed is not None:
            raise UsageProblem(f"standard input is {packed}-compressed; decompress it into the filter "
                               f"({inputs_module.DECOMPRESS[packed]} FILE | pipeshell-filter ...)")


def check_stdout() -> None:
    """Standard output is one the filter can write: said at start, in one line.  Open for reading only
    (``1<FILE``), the run read its input up to the first record it wrote, then failed, exit status 1."""
    if sys.stdout is None:  # started with stdout closed (``>&-``)
        raise UsageProblem("standard output is closed")
    if fcntl.fcntl(sys.stdout.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise UsageProblem("standard output is open for reading only")


def check_fleet_bus(url: str, prefix: str, stage: Stage, state: Optional[str], files: bool) -> None:
    """``--nats``: the checks, before the rules are read (their warnings made a usage error two lines)."""
    if stage is Stage.all:
        raise UsageProblem("--nats needs --stage match or --stage correlate")
    if stage is Stage.correlate and state is None:
        raise UsageProblem("--stage correlate --nats needs --state FILE: a message is acknowledged once the "
                           "saved state includes it")
    if stage is Stage.correlate and files:
        raise UsageProblem("--stage correlate reads either --nats or --input, not both")
    from .io import fleet
    from .io.bus import check_servers

    problem = fleet.prefix_problem(prefix)  # the server refused the stream: exit 1, which a supervisor retries
    if problem is not None:
        shown = prefix if len(prefix) <= 64 else f"{prefix[:64]}... ({len(prefix)} characters)"
        raise UsageProblem(f"--nats-prefix {shown!r} {problem}")

    try:
        check_servers(url)
    except ValueError as error:
        raise UsageProblem(f"--nats: {error}") from None


def open_fleet_bus(url: str, prefix: str, stage: Stage):
    """``--nats``: the connection with both streams in place (``check_fleet_bus`` passed)."""
    from .io import fleet
    from .io.bus import BusError

    try:
        return fleet.open_bus(url, prefix, f"pipeshell-filter {stage.value}")
    except BusError as error:
        raise BusProblem(str(error)) from None
    except Terminated:  # before the stream's stop handling: said, then out at once as at any start-up
        _say("pipeshell-filter: stopped while connecting to the NATS bus and setting up its streams\n")
        raise


def _check_heartbeat_size(stream_filter: Filter, bus) -> None:
    """An agent whose heartbeats the server cannot take (a long --agent, a small max_payload) is told at
    start, as a usage error: its first heartbeat was refused, and it stopped (exit 1) with none of its
    events passed on, again at every restart by its supervisor."""
    from .detect import Heartbeat

    name = stream_filter.progress.agent
    beat = Heartbeat(name, -(1 << 63), idle=True)  # the longest: the widest time, idle
    size = stream_filter.publisher.heartbeat_over(beat, stream_filter.own_form(beat.to_wire())[1])
    if size is not None:
        raise UsageProblem(f"--agent: this agent's heartbeats (its name is {len(name.encode('utf-8', 'replace'))} "
                           f"bytes) are messages of up to {size} bytes, over "
                           f"{stream_filter.publisher.limit_text()}; give it a shorter name")


def _check_state_subject(stream_filter: Filter, path: str, subject: str) -> None:
    """A correlator's state is of one partition of one fleet: the state of another (partition 0's given
    to partition 1's, or to another prefix's) had its position in the stream the partitions share taken
    for this one's, skipping this partition's records before it in silence, and its windows restored."""
    saved = stream_filter.bus_subject
    if saved is not None and saved != subject:
        stream_filter.state.release()
        raise UsageProblem(f"--state {path}: saved by the correlator of {saved!r}, and this one reads {subject!r} "
                           "(another --partition or --nats-prefix): give each its own state file, or --state-reset")


def resume_state(stream_filter: Filter, path: str, interval: float, reset: bool) -> None:
    """``--state``: snapshots to ``path``; the state saved there taken back (unless ``reset``).
    A file this build cannot use is a usage error; a correlation whose rule is gone or changed
    loses its saved state, in one line on stderr (the path is checked first: ``check_state_path``)."""
    state_file = StateFile(path, interval)
    say = stream_filter.diagnostics.note
    state_file.take(say)
    state_file.remove_leftovers()  # the one process of this file: a temp file found is a dead run's
    stream_filter.keep_state(state_file)
    if reset:
        try:
            state_file.discard()
        except StateError as error:
            state_file.release()
            raise UsageProblem(str(error)) from None
        return
    try:
        saved = state_file.load()  # the collector rests until the stream starts (``startup``)
        messages = stream_filter.resume(saved) if saved is not None else []
    except StateError as error:
        state_file.release()
        text = str(error) if str(error).startswith("state file") else f"state file {path}: {error}"
        advice = "name another file" if isinstance(error, NotAStateFile) else "--state-reset discards it"
        raise UsageProblem(f"{text}; {advice}") from None
    for message in messages:
        say(f"state file {path}: {message}")


def build_prefilter(plans: List[Plan], engine: str, unknown_logsource: str = "match", also=()) -> tuple:
    """The block prefilter and, with several rules, the index from literals to rules; ``also``:
    texts that make a line a candidate too (a match stage checks lines naming its own records).

    Each rule's requirement is its literal formula (``sigma.literals``); failing that,
    under ``--logsource-unknown skip``, its channels' names (``rule_needles``).  A rule
    with neither turns the block prefilter off, since any line may match it, but not
    the index: the other rules are still tried only on lines that satisfy their
    formula, and those without on every line their log source routes to them."""
    usable = _indexed_needle if len(plans) > 1 else needle
    formulas, unrouted = {}, set()
    for position, plan in enumerate(plans):
        formula = literals.of_plan(plan, usable)
        if formula is None:
            found = rule_needles(plan, unknown_logsource)
            formula = literals.either(found) if found else None
        if formula is None:
            unrouted.add(position)
        else:
            formulas[position] = formula
    try:
        needles = sorted(set().union(*(literals.cover(f) for f in formulas.values())))
        needles = sorted(set(needles) | {needle(text) for text in also}) if needles else needles
        prefilter = None if unrouted or not needles else Prefilter(needles, engine)
        index = RuleIndex(formulas, engine, unrouted) if len(plans) > 1 and formulas else None
    except ValueError as error:
        raise UsageProblem(f"--prefilter-engine {engine}: {error}") from None
    return prefilter, index


def _indexed_needle(literal: str):
    """A rule set's index looks for needles of three bytes or more, or with a character beyond
    ASCII (``—``, two UTF-8 bytes for ``®``): shorter ASCII ones are in nearly every line, and
    each costs the scanner a report at nearly every byte."""
    found = needle(literal)
    return found if found is not None and (len(found) >= 3 or not found.isascii()) else None


def _file_lines(files: List[str], stream_filter: Filter, diagnostics: Diagnostics, max_line: int = DEFAULT_MAX_LINE,
                walked: frozenset = frozenset(), stop=None):
    """``(label, line, verdict)`` from the files, merged by event time when several; ``walked``: those
    only a directory named; ``stop``: the run's StopRequest (an EVTX file's reading heeds it)."""
    report = inputs_module.evtx_problems(diagnostics)
    if len(files) > 1:
        inputs_module.allow_open(len(files))
    placed = stream_filter.state is not None or stream_filter.saved_inputs is not None \
        or stream_filter.saved_place is not None  # explain: a saved state taken back, none to write
    opened = _open_placed(files, stream_filter, stop) \
        if placed and (len(files) > 1 or files and inputs_module.is_evtx(files[0])) else {}
    budget = max(1 << 12, min(1 << 20, (16 << 20) // len(files)))  # the batches of all files open at once
    streams = []
    for path in files:  # a pipe among them: its lines go on as soon as it would wait, the output written first
        watch = inputs_module.PipeWatch(stream_filter.before_block)
        streams.append(inputs_module.judged(inputs_module.labelled_lines(path, report, max_line, path not in walked,
                                                                         stop, opened.get(path), watch),
                                            stream_filter.prefilter, budget, watch.ready))
    if len(streams) == 1:
        return streams[0]

    # Every line is parsed for its merge key, whatever the verdict: keying only candidates would
    # make the order of an out-of-order file, and so the alerts, depend on --emit and the prefilter.
    def event_time(line):  # of the line the filter will read: unwrapped (--line-field), no byte order mark
        if isinstance(line, inputs_module.LongLine):
            return None
        if stream_filter.line_field is not None:
            line = unwrap_line(line, stream_filter.line_field)
        if line.startswith(BOM):
            line = line[len(BOM):]
        try:
            framed = load_framed(line)  # a Fluent Bit frame: its record
            line, event = framed if framed is not None else (line, ujson.loads(line))
        except (ValueError, OverflowError):
            return stream_filter.text_time(line)  # a line of Sysmon for Linux's syslog file: its XML's time
        if not isinstance(event, dict):
            return None
        if stream_filter.stage == "correlate":  # Detection records from several agents: their own time
            found = event.get("time")
            return found if type(found) is int else None
        return stream_filter.line_time(line, event)  # a line carrying an event's XML: that event's time

    live = [not os.path.isfile(path) for path in files]  # a pipe (a FIFO, ``-``): its lines read ahead go on at a stop
    return inputs_module.merged(streams, event_time, live, stop)


def _rotated_first(files: List[str], place, places) -> tuple:
    """With ``--state``: (``files`` after the files a rotation moved the saved run's unread lines to, one
    line said of each): the saved ``place`` of one file, or ``places`` of files merged (``position``)."""
    saved = ([place] if place is not None else []) + (places if isinstance(places, list) else [])
    rotated = rotated_away(saved, [path for path in files if not inputs_module.is_evtx(path)]) if saved else []
    return [path for path, _ in rotated] + files, [note for _, note in rotated]


def _open_placed(files: List[str], stream_filter: Filter, stop=None) -> dict:
    """With ``--state``, the NDJSON files merged opened where the saved state left them, and the EVTX
    files (merged, or one alone) placed after the records it read (``position``): path -> (handle or
    None, place, lines before it); the places are saved with each snapshot."""
    saved = stream_filter.saved_inputs
    if saved is None and stream_filter.saved_place is not None:  # the last run read one file alone (a directory
        # of one): its lines, the file's (an EVTX file's mark counts its own)
        saved = [dict({"lines": stream_filter.lines}, **stream_filter.saved_place)]
    places = stream_filter.file_places = FilePlaces(saved)
    places.alone = len(files) == 1
    added = {}  # each handle kept by ``places`` as soon as opened: ``finish`` closes them, after an error too
    for path in files:  # a pipe named among them (a FIFO, ``-``) has no place to keep: it is read as it comes
        if inputs_module.is_evtx(path):
            if os.path.isfile(path):
                try:
                    added[path] = None, places.add_records(path)
                except OSError:  # gone since it was listed: its reading says so
                    pass
        elif os.path.isfile(path):
            handle = inputs_module.open_input(path, stop)
            added[path] = handle, places.add(path, handle)
            added[path][1].on_again = stream_filter.read_again
    places.place_all()
    opened = {path: (handle, place, place.lines) for path, (handle, place) in added.items()}
    stream_filter.read_again(places.again)
    stream_filter.said_of_places(places.notes())
    return opened


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def stats_record(stream_filter: Filter, engine: Engine, diagnostics: Diagnostics) -> dict:
    """The ``--stats-interval`` record: what the summary line says at exit, while running, for a
    pipeline to route (``event.kind: metric``); sources with a wrong clock by name."""
    stats = engine.stats + engine.correlation_stats()
    skewed = engine.skewed_sources()
    return {"@timestamp": format_time(time.time_ns()),
            "event": {"kind": "metric", "module": "pipeshell-filter", "dataset": STATS_DATASET},
            "pipeshell": {"stage": stream_filter.stage, "lines": stream_filter.lines - stream_filter.lines_start,
                          "matched": stats["matched"], "alerts": stats["alerts"],
                          "late": stats["late"], "late_dropped": stats["late_dropped"], "shed": stats["shed"],
                          "duplicates": engine.duplicates(), "held": engine.held(),
                          "suppressed": stats["suppressed"], "outside_range": engine.detector.outside,
                          "diagnostics": dict(sorted(diagnostics.counts.items())),
                          "skewed_sources": [{"source": str(source)[:256], "clock": how}
                                             for source, how in sorted(skewed.items(), key=str)[:100]],
                          "skewed_sources_total": len(skewed), **rules_shown(engine)}}


def rules_shown(engine: Engine) -> dict:
    """The stats record's rules: the ``MAX_RULES_SHOWN`` that alerted most (then matched most), and how
    many rules or correlations matched, fired or alerted in all (``--rule-stats`` writes each of them)."""
    counts = engine.rule_counts()
    return {"rules": [rule_count(*row) for row in counts[:MAX_RULES_SHOWN]], "rules_total": len(counts)}


@contextlib.contextmanager
def _rule_stats_at_exit(path: Optional[str], engine: Engine):
    """``--rule-stats``: the table is written however the run ends once it started (end of input, a stop
    signal, a closed output, the bus lost), after the last alerts, which it counts."""
    try:
        yield
    finally:
        if path is not None:
            write_rule_stats(path, engine)


def rule_stats_records(engine: Engine) -> list:
    """The ``--rule-stats`` lines: each rule or correlation that matched, fired or alerted (the most alerts
    first), then (a detecting stage) each rule only tried on events, the most time first, each with ``tried``
    and ``eval_ms``; then each rule routed events that never matched (the most events first), a rule routed
    events with ``routed`` and ``fields_never_seen`` (``Engine.rule_coverage``)."""
    coverage = engine.rule_coverage()
    timed = engine.detector.timing is not None
    records = [rule_count(*row, whole=True) for row in engine.rule_counts(timed)]
    listed = {record["id"] for record in records}
    blind = sorted((rule for rule in coverage if rule not in listed), key=lambda rule: (-coverage[rule][0], rule))
    records += [rule_count(engine.meta[rule], 0, 0, 0, 0, *((0, 0) if timed else (None, None)), whole=True)
                for rule in blind]
    for record in records:
        found = coverage.get(record["id"])
        if found is not None:
            record["routed"], record["fields_never_seen"] = found
    return records


def write_rule_stats(path: str, engine: Engine) -> None:
    """One JSON line per rule or correlation that matched, fired or alerted, replaced at once (``write_atomic``):
    a reader never finds half a table.  A failure is one line on stderr; the run's status stays."""
    data = "".join(ujson.dumps(record, escape_forward_slashes=False) + "\n"
                   for record in rule_stats_records(engine))  # ASCII: a title's lone surrogate is escaped
    try:
        write_atomic(path, data.encode("ascii"))
    except OSError as error:
        try:
            why = error.strerror or error
            sys.stderr.write(one_line(f"pipeshell-filter: --rule-stats {path}: cannot write it: {why}") + "\n")
        except (OSError, ValueError):
            pass


# Diagnostics that are notices, not skipped lines: kind -> how the summary says them, or None for those said
# once when they happened (a new notice joins here, or the summary counts it as skipped lines).
NOTICES = {"impersonation": "line(s) of the filter's own record types wrapped (impersonation)",
           "unportable": "record(s) Fluent Bit cannot take written as pipeline_error (unportable)",
           "xml_unread": "line(s) whose event XML was not read (xml_unread)",
           "no_event_data_map": "event(s) with their data by position only (no_event_data_map)",
           "state": "state file problem(s)",
           "bom": "byte order mark(s) ignored",
           "evtx_recovered": "EVTX file(s) read past a damaged file header",
           "skewed_source": "source(s) with a wrong clock",
           "bus_discarded": "bus message(s) discarded by the stream's limits unread",
           "bus_shrunk": "Detection(s) over the NATS server's max_payload (or the stream's max_msg_size) published "
                         "with their values cut short",
           "detection_shortened": "Detection(s) over --max-record-bytes written with their values cut short",
           "record_cut": "record(s) over --max-record-bytes written cut as pipeline_error (record_cut)",
           "bus_too_big": "record(s) over the NATS server's max_payload (or the stream's max_msg_size) not published",
           "late_resent": None, "state_cap": None, "agent_silent": None, "partitions": None,
           "stop_untaken": None,
           # matched, enriched and alerting on its own: only correlation leaves it out (said apart, by stage)
           "no_time": "without an event time left out of correlation"}
SKIPPED = {"invalid_json": "invalid JSON", "invalid_utf8": "invalid UTF-8", "not_object": "not an object",
           "empty": "empty", "too_deep": "nested too deeply", "too_long": "too long",
           "bad_evtx": "EVTX problems", "not_detection": "not a Detection record",
           "unknown_rule": "of a rule not loaded", "too_complex": "too many values to parse"}


# The summary line's last part when the output's reader went away before the end (a shipper stopped first):
# the run ended quietly, as grep under head does, and what it had still to write was lost without a word.
CLOSED_EARLY = "output closed by its reader before the end: what was still to be written is lost"


def counted(count: int, noun: str) -> str:
    """``1 line``, ``2 lines``: the summary line's counts in the singular where one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _summary(stream_filter: Filter, engine: Engine, diagnostics: Diagnostics, ended: Optional[str] = None) -> None:
    stats = engine.stats + engine.correlation_stats()
    lines = stream_filter.lines - stream_filter.lines_start
    rules = len(engine.meta)  # the rules loaded, correlation documents too (not those a directory skipped)
    parts = [f"{rules} rule{'' if rules == 1 else 's'}"]
    if engine.selection:
        quiet = len(engine.deselected)
        unmatched = len(engine.unmatched)
        parts[0] += (f" ({len(engine.left_out)} left out by {engine.selection.options()}"
                     + (f", {quiet} loaded only to feed correlations" if quiet else "")
                     + (f", {unmatched} excluded id{'' if unmatched == 1 else 's'} matching no rule" if unmatched
                        else "") + ")")
    if stream_filter.stage == "correlate":  # its lines are records: no event is matched here
        passed = stream_filter.stats_passed
        parts.append(f"{counted(lines, 'line')} ({counted(stats['detections'], 'detection')}, "
                     f"{counted(stats['heartbeats'], 'heartbeat')}"
                     + (f", {counted(passed, 'stats record')} passed on" if passed else "") + ")")
    else:
        parts += [counted(lines, "line"), f"{stats['matched']} matched"]
    parts.append(f"{stats['alerts']} alert{'' if stats['alerts'] == 1 else 's'}")
    if engine.suppressor is not None:
        parts.append(f"{stats['suppressed']} alert{'' if stats['suppressed'] == 1 else 's'} suppressed")
        if engine.suppressor.forgotten:
            parts.append(f"{engine.suppressor.forgotten} suppression period(s) forgotten at the cap of "
                         f"{engine.suppressor.cap} keys")
    if engine.detector.between is not None:
        parts.append(f"{left_out_of_range(engine.detector.outside, stream_filter.stage)} outside --from/--to")
    counts = sorted(diagnostics.counts.items())
    bad = [f"{count} {SKIPPED.get(kind, kind)}" for kind, count in counts if kind not in NOTICES]
    if bad:
        parts.append("skipped: " + ", ".join(bad))
    if stats["late"]:
        parts.append(f"{stats['late']} late ({stats['late_dropped']} outside any open window)")
    if engine.duplicates():
        parts.append(f"{engine.duplicates()} sent again (taken once)")
    if stats["shed"]:
        parts.append(f"{stats['shed']} dropped from correlation at the state cap")
    noticed = dict(counts)
    if noticed.get("skewed_source"):  # reported once per correlation it is late to or ahead in: one source
        noticed["skewed_source"] = len(engine.skewed_sources()) or noticed["skewed_source"]
    untimed = noticed.pop("no_time", 0)
    parts += [f"{count} {NOTICES[kind]}" for kind, count in noticed.items() if count and NOTICES.get(kind)]
    if untimed:
        parts.append(f"{untimed} {'Detection' if stream_filter.stage == 'correlate' else 'matched event'}(s) "
                     + NOTICES["no_time"])
    if ended:
        parts.append(ended)
    try:
        sys.stderr.write("pipeshell-filter: " + "; ".join(parts) + "\n")
    except (OSError, ValueError):
        pass


# The selection options of ``explain`` and ``test``, which act as for filtering (typer reads an option's
# declaration, never changes it: one serves both commands).
_STATUS_AS_FILTERING = typer.Option(None, "--status", metavar="LIST", help="As for filtering: " + _STATUS_HELP)
_TAG_AS_FILTERING = typer.Option(None, "--tag", metavar="TAG", help="As for filtering: " + _TAG_HELP)
_EXCLUDE_TAG_AS_FILTERING = typer.Option(None, "--exclude-tag", metavar="TAG",
                                         help="As for filtering: " + _EXCLUDE_TAG_HELP)
_EXCLUDE_RULE_AS_FILTERING = typer.Option(None, "--exclude-rule", metavar="ID",
                                          help="As for filtering: " + _EXCLUDE_RULE_HELP)
_EXCLUDE_RULES_AS_FILTERING = typer.Option(None, "--exclude-rules", metavar="FILE",
                                           help="As for filtering: " + _EXCLUDE_RULES_HELP)


@app.command()
def explain(
    ctx: typer.Context,
    rule: Optional[List[str]] = typer.Option(None, "--rule", metavar="PATH", help=_RULE_HELP),
    join: Optional[Join] = typer.Option(None, "--join", help=_JOIN_HELP),
    event: Optional[str] = typer.Option(None, "--event", metavar="FILE", help="Show how this one event (a JSON "
                                        "file, the first line of an NDJSON file, or the first record of an .evtx) "
                                        "is read and judged."),
    profile: str = typer.Option("auto", "--profile", metavar="auto|NAME", help="Event shape: auto or a profile name."),
    field_map: Optional[List[str]] = typer.Option(None, "--field-map", metavar="FILE",
                                                  help="Your own field-resolution table, tried first."),
    time_field: Optional[str] = typer.Option(None, "--time-field", metavar="PATH", help="Event time path."),
    placeholders: Optional[str] = typer.Option(None, "--placeholders", metavar="FILE", help=_PLACEHOLDERS_HELP),
    logsource_unknown: UnknownLogsource = typer.Option(UnknownLogsource.match, "--logsource-unknown",
                                                       help="As for filtering: match or skip."),
    logsource: Optional[str] = typer.Option(None, "--logsource", metavar="KEY=VALUE,...",
                                            help="As for filtering: " + _LOGSOURCE_HELP),
    events: Optional[List[str]] = typer.Option(None, "--events", metavar="PATH", help="Run this NDJSON (or .evtx) "
                                               "file or directory through the filter's engine and show, per "
                                               "correlation, the events that fed it, the windows that fired, and "
                                               "why the other groups did not. Repeatable: several are merged by "
                                               "event time, as --input merges them."),
    stage: ExplainStage = typer.Option(ExplainStage.all, "--stage", help="With --events: all: the file holds "
                                       "events, read as the filter reads them; correlate: it holds a match stage's "
                                       "Detection and heartbeat records (what --stage match writes, or a "
                                       "correlator reads from NATS), read as --stage correlate reads them."),
    lateness: float = typer.Option(60.0, "--lateness", **SECONDS, help="With --events: as for filtering."),
    max_skew: float = typer.Option(300.0, "--max-skew", **SECONDS, help="With --events: as for filtering."),
    early_alerts: bool = typer.Option(False, "--early-alerts", help="With --events: as for filtering."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="TIME", help="With --events: as for filtering."),
    to: Optional[str] = typer.Option(None, "--to", metavar="TIME", help="With --events: as for filtering."),
    agent_idle: float = typer.Option(60.0, "--agent-idle", **SECONDS,
                                     help="With --events --stage correlate: as for filtering."),
    agents: int = typer.Option(0, "--agents", metavar="N", help="With --events --stage correlate: as for filtering."),
    max_line: int = typer.Option(DEFAULT_MAX_LINE, "--max-line-bytes", metavar="BYTES",
                                 help="With --events: as for filtering (longer lines are not read)."),
    line_field: Optional[str] = typer.Option(None, "--line-field", metavar="FIELD",
                                             help="With --event or --events: as for filtering."),
    state: Optional[str] = typer.Option(None, "--state", metavar="FILE", help="With --events: the correlations "
                                        "start from this state file (saved by a filter run with --state), as the "
                                        "filter's next run on these events would; it is only read."),
    strict: bool = typer.Option(False, "--strict", help="As for filtering: a rule in a --rule directory that "
                                "fails to load is an error (by default it is reported and skipped)."),
    min_level: Optional[str] = typer.Option(None, "--min-level", metavar="LEVEL", help="As for filtering: "
                                            + _MIN_LEVEL_HELP + " The rules left out are listed at the end."),
    status: Optional[str] = _STATUS_AS_FILTERING,
    tag: Optional[List[str]] = _TAG_AS_FILTERING,
    exclude_tag: Optional[List[str]] = _EXCLUDE_TAG_AS_FILTERING,
    exclude_rule: Optional[List[str]] = _EXCLUDE_RULE_AS_FILTERING,
    exclude_rules: Optional[List[str]] = _EXCLUDE_RULES_AS_FILTERING,
) -> None:
    """Print the compiled plan: selections, condition, join terms, aggregation, window, prefilter.
    With --event, show one event's profile, resolved fields and each selection's verdict; with
    --events, why each correlation's windows did or did not fire on a file of events (with --stage
    correlate, on a file of Detection records)."""
    if event is not None and events is not None:
        raise UsageProblem("give --event (one event's verdicts) or --events (a stream's correlations), not both")
    # every option is checked, whether or not this run uses it: a wrong one is said, not ignored
    check_seconds(("--lateness", lateness), ("--max-skew", max_skew))
    check_agent_idle(agent_idle)
    check_agents(agents)
    check_line_options(max_line, line_field)
    _no_trace_option_without_events(ctx, event, events, stage)
    between = read_range(from_, to)
    event = inputs_module.STDIN if event == "-" else event  # as for --input
    if event == inputs_module.STDIN or inputs_module.STDIN in (events or ()) or "-" in (events or ()):
        check_stdin()
    resolver = make_resolver(profile, field_map, time_field, logsource)  # before the rule load's warnings
    selection = read_selection(min_level, status, tag, exclude_tag, exclude_rule, exclude_rules)
    plans = load_plans(rule, join, strict, placeholders=read_placeholders(placeholders), selection=selection)
    _no_strict_without_a_directory(ctx, rule, plans)
    if event is None and events is None:
        _print(describe_rule_set(plans, logsource_unknown.value))
        return
    if events is not None:
        saved = _saved_state(state)
        engine = Engine(plans, resolver, seconds_ns(lateness), unknown_logsource=logsource_unknown.value,
                        max_skew_ns=seconds_ns(max_skew), agent_idle=agent_idle, agents=agents, early=early_alerts,
                        between=between)
        _print(_trace_events(engine, events, max_line, line_field, stage.value, saved))
        return
    raw, parsed = _read_one_event(event)
    if line_field is not None:
        raw, parsed = _unwrapped_event(raw, parsed, line_field, event)
    gate = build_prefilter(plans, PrefilterEngine.python.value,
                           "match" if declares(resolver) else logsource_unknown.value)  # as the filter's
    _print(describe_event(plans, resolver, raw, parsed, event, logsource_unknown.value, gate))


def _no_trace_option_without_events(ctx: typer.Context, event: Optional[str], events: Optional[List[str]],
                                    stage: ExplainStage) -> None:
    """``explain``'s options that act only in some of its modes: without ``--events`` the plan or one
    event's verdicts were printed as if ``--lateness`` or ``--early-alerts`` had been heeded, exit 0;
    ``--profile``, ``--field-map`` and ``--time-field`` read events, which the plan alone does not, nor
    a correlate stage's Detection records (made by the match stage, as ``--logsource-unknown`` judged)."""
    streamed = ("--events", events is not None)
    correlating = ("--events --stage correlate", events is not None and stage is ExplainStage.correlate)
    reading = ("--event, or --events of events (not --stage correlate)",
               event is not None or events is not None and stage is ExplainStage.all)
    judging = ("rules to describe or events to judge (not --events --stage correlate, whose Detection records "
               "the match stage judged)", not correlating[1])
    unwrapping = ("--event or --events", event is not None or events is not None)
    needs = {"lateness": streamed, "max_skew": streamed, "early_alerts": streamed, "max_line": streamed,
             "line_field": unwrapping, "stage": streamed, "state": streamed, "agent_idle": correlating,
             "agents": correlating, "from_": streamed, "to": streamed, "profile": reading, "field_map": reading,
             "time_field": reading, "logsource_unknown": judging, "logsource": reading}
    for param in ctx.command.params:
        if param.name in needs and not needs[param.name][1] and _given(ctx, param.name):
            raise UsageProblem(f"{param.opts[0]} needs {needs[param.name][0]}: here it would do nothing")


def _print(text: str) -> None:
    """``explain``'s report on stdout.  It quotes the event's own text, which may hold a lone
    surrogate (a ``\\ud800`` escape, or its bytes, which the filter reads and passes on): written
    as its escape, as stderr writes one, instead of failing the whole report in a traceback."""
    check_stdout()  # refused as the filter refuses it
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")
    sys.stdout.buffer.flush()


@app.command("test")
def regression_test(
    ctx: typer.Context,
    rule: Optional[List[str]] = typer.Option(None, "--rule", metavar="PATH", help="As for filtering (repeatable); "
                                             "required. Every rule loaded whose regression_tests_path names an "
                                             "info.yml has its cases run, with the whole rule set loaded."),
    join: Optional[Join] = typer.Option(None, "--join", help="As for filtering: " + _JOIN_HELP),
    strict: bool = typer.Option(False, "--strict", help="As for filtering: a rule in a --rule directory that "
                                "fails to load is an error (by default it is reported and skipped)."),
    placeholders: Optional[str] = typer.Option(None, "--placeholders", metavar="FILE", help=_PLACEHOLDERS_HELP),
    field_map: Optional[List[str]] = typer.Option(None, "--field-map", metavar="FILE",
                                                  help="As for filtering: your own field-resolution table."),
    logsource_unknown: UnknownLogsource = typer.Option(UnknownLogsource.match, "--logsource-unknown",
                                                       help="As for filtering: match or skip."),
    min_level: Optional[str] = typer.Option(None, "--min-level", metavar="LEVEL", help="As for filtering: "
                                            + _MIN_LEVEL_HELP + " The cases of rules left out are not run."),
    status: Optional[str] = _STATUS_AS_FILTERING,
    tag: Optional[List[str]] = _TAG_AS_FILTERING,
    exclude_tag: Optional[List[str]] = _EXCLUDE_TAG_AS_FILTERING,
    exclude_rule: Optional[List[str]] = _EXCLUDE_RULE_AS_FILTERING,
    exclude_rules: Optional[List[str]] = _EXCLUDE_RULES_AS_FILTERING,
    as_json: bool = typer.Option(False, "--json", help="One JSON record per case on stdout (verdict, rule, case, "
                                 "evtx, match_count, matched, reason); the summary line goes to stderr."),
) -> None:
    """Run the rules' regression cases (SigmaHQ's layout: a rule's regression_tests_path names an info.yml
    listing .evtx files and match_count) through the filter, and judge them as SigmaHQ's runner does:
    PASS when the rule matches at least match_count records (any, without one), WARN when more, FAIL when
    fewer or when a file is missing or the rule was skipped at load. Exit 0 when none fails, 1 otherwise."""
    from . import regress

    if not rule:
        raise UsageProblem("test needs --rule: the rules whose regression cases to run")
    selection = read_selection(min_level, status, tag, exclude_tag, exclude_rule, exclude_rules)
    messages = []

    def loading(message: str) -> None:  # said as the filter says it, and kept: a case names its rule's skip
        messages.append(message)
        _skipped(message)

    plans = load_plans(rule, join, strict, report=loading, placeholders=read_placeholders(placeholders),
                       selection=selection)
    _no_strict_without_a_directory(ctx, rule, plans)
    resolver = make_resolver("auto", field_map, None)
    cases = regress.find_cases(rule)
    if not cases:
        _say(f"pipeshell-filter: no rule of {', '.join(rule)} has a {regress.KEY}\n")
        sys.exit(1)
    prefilter, index = build_prefilter(plans, PrefilterEngine.auto.value,
                                       "match" if declares(resolver) else logsource_unknown.value)
    regress.run(cases, plans, resolver, messages, prefilter, index, logsource_unknown.value)
    lines = [ujson.dumps(case.record(), ensure_ascii=False, escape_forward_slashes=False) if as_json
             else case.line() for case in cases]
    if not as_json:
        lines.append(regress.summary(cases))
    _print("\n".join(lines))
    if as_json:
        _say(f"pipeshell-filter: {regress.summary(cases)}\n")
    sys.exit(1 if regress.failed(cases) else 0)


@app.command("run")
def run_unit(
    ctx: typer.Context,
    collect: Optional[str] = typer.Option(None, "--collect", metavar="CMD", help="The collector: a command line "
                                          "(split into words as a shell would; no shell runs it) whose stdout "
                                          "feeds the filter. Without it, this command's stdin does."),
    ship: Optional[str] = typer.Option(None, "--ship", metavar="CMD", help="The shipper: a command line that "
                                       "reads the filter's output on its stdin. Without it, the filter writes to "
                                       "this command's stdout."),
    grace: float = typer.Option(30.0, "--grace", **SECONDS, help="Once the chain is stopping (a signal, "
                                "or a member that ended), how long the members have to drain and exit; then the "
                                "first one still running is killed, and each later one 5 s after the one before."),
    options: Optional[List[str]] = typer.Argument(None, metavar="-- [FILTER OPTIONS]...",
                                                  help="The filter's options, after --."),
) -> None:
    """Run collector | filter | shipper as one unit that lives and dies as one. A member that ends
    on its own stops the others (exit 1, one line naming it); SIGTERM, SIGINT or SIGHUP stop the
    collector first, so that what it read drains through the filter and the shipper in order
    (exit 0); what is left after --grace seconds is killed, from the front."""
    from . import supervise

    if not 0 < grace <= MAX_SECONDS:
        raise UsageProblem(f"--grace must be more than 0 and at most {MAX_SECONDS} seconds")
    if options and options[0] in ctx.parent.command.commands:  # a nested run never tells it is ready
        raise UsageProblem(f"'{options[0]}' after '--' is a subcommand: the filter's options go there")
    try:
        collector = [supervise.Member(supervise.parse_command("--collect", collect), role="collector")] \
            if collect is not None else []
        shipper = [supervise.Member(supervise.parse_command("--ship", ship), role="shipper")] \
            if ship is not None else []
        for option, members in (("--collect", collector), ("--ship", shipper)):
            for member in members:
                supervise.check_configuration(option, member.argv)
    except supervise.CommandError as error:
        raise UsageProblem(str(error)) from None
    member = supervise.filter_member(options or [])
    streaming()
    sys.exit(supervise.supervise(collector + [member] + shipper, grace, usage_member=member))


def _trace_events(engine: Engine, paths: List[str], max_line: int = DEFAULT_MAX_LINE,
                  line_field: Optional[str] = None, stage: str = "all", saved: Optional[tuple] = None) -> str:
    """``explain --events``: the files' events (or, ``stage`` correlate, a match stage's records)
    through the filter with ``engine``, as the filter runs its ``--input`` (``explain.CorrelationTrace``):
    one file alone, several (or directories) merged by event time; ``saved``: ``_saved_state``."""
    try:
        files, walked = inputs_module.expand(paths, "--events", _skipped)
        notes = []
        if saved is not None:  # what the filter's next run would read, read
            files, notes = _rotated_first(files, saved[1].get("input"), saved[1].get("inputs"))
        path = files[0] if len(files) == 1 else files
        unit = "record" if stage == "all" and len(files) == 1 and inputs_module.is_evtx(path) else "line"
        trace = CorrelationTrace(engine, unit, stage)

        def merged(stream_filter):
            stream_filter.said_of_places(notes)
            return _file_lines(files, stream_filter, stream_filter.diagnostics, max_line, walked)
        placed = saved is not None and unit == "record"  # one EVTX file read on after the records the state read
        trace.read(path, max_line, line_field, saved, merged if len(files) > 1 or placed else None)
    except OSError as error:
        raise UsageProblem(f"cannot read --events {error.filename or paths[0]}: {inputs_module.why(error)}") from None
    except inputs_module.InputError as error:
        raise UsageProblem(str(error)) from None
    except StateError as error:  # taken back as the filter takes it (``Filter.resume``), refused as it refuses it
        text = str(error)
        raise UsageProblem(text if text.startswith("state file") else f"state file {saved[0]}: {text}") from None
    return trace.report()


def _saved_state(path: Optional[str]) -> Optional[tuple]:
    """``explain --events --state FILE``: (the file, its document), read only (no lock: the filter
    replaces the file whole, never writes it in place); the file must be there.  An empty one holds
    no state, as for the filter."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise UsageProblem(f"--state {path}: no such file" if not os.path.exists(path) else
                           f"--state {path}: not a regular file")
    try:
        document = StateFile(path).load()
    except StateError as error:
        raise UsageProblem(str(error)) from None
    return (path, document) if document is not None else None


def _read_one_event(path: str) -> tuple:
    """(raw JSON bytes, object) of the event in ``path``: a whole-file JSON object,
    else the first non-empty line, or an .evtx file's first record."""
    named = "-" if path == inputs_module.STDIN else path  # as the user wrote it
    try:
        if inputs_module.is_evtx(path):
            line = next(inputs_module.evtx_lines(path, lambda where, message: None), None)
            if line is None:
                raise UsageProblem(f"--event {named}: no readable EVTX record")
            return line, every_value(line, ujson.loads(line))  # a key given twice: all its values
        with open(path, "rb") as handle:
            data = handle.read(64 << 20)
    except OSError as error:
        raise UsageProblem(f"cannot read --event {named}: {inputs_module.why(error)}") from None
    except inputs_module.InputError as error:
        raise UsageProblem(str(error)) from None
    if data.startswith(BOM):  # as the filter reads a line: the byte order mark is no part of it
        data = data[len(BOM):]
    candidates = [data] + [line for line in data.split(b"\n") if line.strip()][:1]
    why = ""
    for raw in candidates:
        try:
            framed = load_framed(raw.strip())  # a line in a Fluent Bit frame: its record, as the filter reads it
            if framed is not None:
                return framed
            parsed = load_event(raw)
        except (ValueError, OverflowError) as error:
            kind, message = decode_problem(raw, error)
            why = why or ("" if kind == "invalid_json" else f" ({message})")  # deep, dense, not UTF-8: said
            continue
        if isinstance(parsed, dict):
            line = raw.strip()
            if b"\n" not in line and b"\r" not in line:  # one line: its own bytes, as the filter scans them
                return line, parsed
            return ujson.dumps(parsed, ensure_ascii=False).encode("utf-8", "surrogatepass"), parsed
    carried = _text_event(candidates[-1])
    if carried is not None:
        return candidates[-1], carried
    raise UsageProblem(f"--event {named}: neither the file nor its first line is a JSON object{why}, "
                       "nor a line holding an event's XML (Sysmon for Linux's syslog file)")


def _text_event(line: bytes) -> Optional[dict]:
    """The event a line that is not JSON holds as XML (Sysmon for Linux's syslog file), as the filter
    reads it (``Filter._read_text_xml``); None when it holds none.  Refused XML is a usage error here."""
    try:
        return event_in_line(line)
    except XmlEventProblem as problem:
        raise UsageProblem(f"--event: {problem}") from None


def _unwrapped_event(raw: bytes, parsed: dict, field: str, path: str) -> tuple:
    """``--line-field`` for ``explain --event``: the event's own line, the text in ``field``, as the
    filter reads it (a JSON object, or a line of text holding an event's XML); an event without that
    text is read as it is, as the filter reads it."""
    line = unwrap_line(raw, field)
    if line is raw:
        return raw, parsed
    if line.startswith(BOM):  # as the filter reads a line: the byte order mark is no part of it
        line = line[len(BOM):]
    try:
        framed = load_framed(line)  # a line in a Fluent Bit frame: its record, as the filter reads it
        if framed is not None:
            return framed
        inner = load_event(line)
    except (ValueError, OverflowError):
        inner = None
    if isinstance(inner, dict):
        return line, inner
    carried = _text_event(line)  # a line of text holding an event's XML, as the filter reads one
    if carried is None:
        raise UsageProblem(f"--event {path}: the text in {field} is not a JSON object, nor a line holding an "
                           "event's XML (Sysmon for Linux's syslog file)")
    return line, carried


def main(argv: Optional[List[str]] = None) -> None:
    stop_at_start()  # the console script's launch set it before the imports
    try:
        app(args=argv, prog_name="pipeshell-filter", standalone_mode=False)
    except Terminated:
        pass
    except UsageProblem as problem:
        _fail(str(problem))
    except BusProblem as problem:
        _say(f"pipeshell-filter: error: {one_line(str(problem))}\n")
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except OutputClosed as closed:
        _output_closed(closed)
    except OSError as error:  # explain's or --help's text to a closed or full output
        if error.errno == errno.EPIPE:
            _output_closed(OutputClosed(None))
            sys.exit(0)
        _silence_stdout()
        where = f" ({error.filename})" if error.filename else ""
        _say(one_line(f"pipeshell-filter: error: {error.strerror or error}{where}") + "\n")
        sys.exit(1)
    except Exception as error:
        # Click's usage errors (bad option or value) carry exit_code 2 and a message;
        # typer may vendor click, so recognise them by shape rather than by class.
        if getattr(error, "exit_code", None) == 2 and hasattr(error, "format_message"):
            _fail(f"{error.format_message()} (see --help)")
        raise
    sys.exit(0)


def _output_closed(closed: OutputClosed, summary=None) -> None:
    """The output's reader went away: stop, as ``grep`` under ``head`` does, status 0, but with the
    summary line (``summary``, unless ``--quiet``) saying so; writing failed (a full disk): one line,
    exit status 1."""
    _silence_stdout()
    if closed.reason:
        _say(f"pipeshell-filter: error: cannot write the output: {closed.reason}\n")
        sys.exit(1)
    if summary is not None:
        summary()
    if os.environ.get(SUPERVISED) == "1":  # in ``run``'s chain: end as a broken pipe ends a program,
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # so that the member after it is named the cause
        os.kill(os.getpid(), signal.SIGPIPE)


def _say(line: str) -> None:
    """A line on stderr that may not get there (``2>/dev/full``): the exit status still says what happened,
    where the failed write raised and made every error status 1."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _fail(message: str) -> None:
    _say(f"pipeshell-filter: error: {one_line(message)}\n")  # a path given may hold a line break
    sys.exit(2)
