"""A pySigma processing pipeline (the YAML sigma-cli's ``-p FILE`` takes) read as a field map.

Detection teams already write down where Sigma's field names live in their logs, as pySigma pipelines.
``--field-map FILE`` takes such a file (it has a ``transformations`` key) and turns it into the table
``fields.profile_from_table`` reads.  Only what renames fields can be honoured: a pipeline also narrows and
rewrites rules for a backend's query, and our rules are matched on events, not converted, so each such
transformation is left out and said so, one line per type (``Conversion.notes``).

A pipeline renames fields per rule (``rule_conditions``: the rules of a logsource); a profile resolves per
event.  So the pipeline is run, as pySigma would run it, once for each distinct set of rule conditions its
field-renaming items carry (a *context*: an item applies in a context when its logsource conditions are a
subset of the context's), and each field's names in every context are merged, in the file's order: the
first path present in the event wins.  The fields that so get several paths are named at load.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import re2

# The top-level keys pySigma accepts (it refuses any other).
PIPELINE_KEYS = frozenset({"name", "priority", "transformations", "postprocessing", "finalizers", "vars",
                           "allowed_backends"})

RENAMING = ("field_name_mapping", "field_name_prefix", "field_name_prefix_mapping")

# What a transformation would have changed in the rules, where that changes what matches; left out here.
_CHANGES = {
    "add_condition": "adds conditions on {} to the rules of its conditions (the filter routes by its own "
                     "logsource table: see Log sources)",
    "change_logsource": "sets the logsource of rules to {}",
    "drop_detection_item": "drops detection items from rules (rules keep them here{})",
    "replace_string": "rewrites values the rules compare ({})",
    "map_string": "rewrites values the rules compare ({})",
    "set_value": "sets the values the rules compare ({})",
    "hashes_fields": "splits Hashes values into fields per algorithm{}",
    "set_field": "gives keyword values the field {}",
    "extract_fields": "splits values into fields {}",
    "field_name_suffix": "adds the suffix {} to field names (an index's sub-field such as .keyword is "
                         "no path in the event)",
    "field_name_transform": "renames fields by a Python function{}",
    "nest": "applies the transformations nested in it{}",
    "wildcard_placeholders": "fills %placeholders% with wildcards{} (give --placeholders for |expand)",
    "value_placeholders": "fills %placeholders% with values{} (give --placeholders for |expand)",
    "query_expression_placeholders": "fills %placeholders% with query expressions{}",
    "file_placeholders": "fills %placeholders% from files{} (give --placeholders for |expand)",
    "http_placeholders": "fills %placeholders% from URLs{} (give --placeholders for |expand)",
    "command_placeholders": "fills %placeholders% from commands{} (give --placeholders for |expand)",
    "rule_failure": "refuses rules of its conditions (they load here){}",
    "detection_item_failure": "refuses rules of its conditions (they load here){}",
    "strict_field_mapping_failure": "refuses rules with a field it did not map (they load here){}",
}
# Transformations that only shape a backend's query or its output: nothing to match events by.
QUERY_ONLY = frozenset({"set_state", "set_custom_attribute", "add_field", "remove_field", "convert_type", "case",
                        "regex"})
KNOWN = frozenset(RENAMING) | frozenset(_CHANGES) | QUERY_ONLY

# Where a pipeline's events keep their time: it says nothing of it (Sigma has no time field).
DEFAULT_TIME = ("@timestamp", "_time", "timestamp", "TimeCreated.SystemTime", "TimeCreated", "EventTime", "UtcTime")


# The keys pySigma reads of a processing item itself; the rest are its transformation's parameters.
_ITEM_KEYS = frozenset({"id", "type", "rule_conditions", "rule_cond_expr", "rule_cond_op", "rule_cond_not",
                        "detection_item_conditions", "detection_item_cond_expr", "detection_item_cond_op",
                        "detection_item_cond_not", "field_name_conditions", "field_name_cond_expr",
                        "field_name_cond_op", "field_name_cond_not", "allow_template_vars", "vars_allowed_paths",
                        "allow_external_sources", "restrict_template_path", "policy"})
# The parameters of the renaming transformations (pySigma refuses any other: a misspelt key is no condition).
_PARAMETERS = {"field_name_mapping": {"mapping"}, "field_name_prefix": {"prefix"},
               "field_name_prefix_mapping": {"mapping"}}


class PipelineError(ValueError):
    """A pipeline file this filter cannot read; the message is one line."""


def is_pipeline(table) -> bool:
    """A pipeline has transformations; one of a backend's output steps only is one too (to be refused)."""
    return isinstance(table, dict) and ("transformations" in table or set(table) <= PIPELINE_KEYS
                                        and bool({"postprocessing", "finalizers"} & set(table)))


def _short(values, limit: int = 6) -> str:
    values = list(dict.fromkeys(str(v) for v in values))
    shown = ", ".join(v[:60] for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


class _Item:
    """One transformation of the pipeline, its conditions read."""

    def __init__(self, position: int, raw: dict, source: str):
        where = f"{source}: transformation {position + 1}"
        kind = raw.get("type")
        if not isinstance(kind, str) or not kind:
            raise PipelineError(f"{where}: no 'type'")
        if kind not in KNOWN:
            raise PipelineError(f"{where}: unknown transformation type {kind[:60]!r}")
        unknown = [str(key) for key in raw if key not in _ITEM_KEYS and key not in _PARAMETERS.get(kind, (key,))]
        if unknown:  # pySigma refuses them; read here, ``rule_condition:`` (misspelt) renamed for every rule
            raise PipelineError(f"{where}: {kind} takes no key {_short(map(repr, unknown))}")
        ident = raw.get("id")
        self.position, self.kind, self.raw, self.where = position, kind, raw, where
        self.id = ident if isinstance(ident, str) else None
        self.context = None  # set by _read_context
        self.field_test: Optional[Callable] = None  # set by _read_field_test (renaming items)
        self.condition_names: tuple = ()  # the names its plain include/exclude_fields list (_read_field_test)
        self.guessed = False  # it prefixed the fields the pipeline does not name, though its patterns may not hold
        self.unread = None  # why the item cannot be honoured, if it cannot
        self.mapping: dict = {}  # a renaming item's, read once
        self.prefix = ""


def _conditions(item: _Item, key: str) -> list:
    found = item.raw.get(key) or []
    if isinstance(found, dict):  # named conditions, for a *_cond_expr
        found = list(found.values())
    if not isinstance(found, list) or not all(isinstance(c, dict) and isinstance(c.get("type"), str) for c in found):
        raise PipelineError(f"{item.where}: '{key}' must be a list of conditions, each with a 'type'")
    return found


def _item_id(item: _Item, condition: dict) -> str:
    ident = condition.get("processing_item_id")
    if not isinstance(ident, str):
        raise PipelineError(f"{item.where}: processing_item_applied needs 'processing_item_id', an item's id")
    return ident


class _AnyOf(tuple):
    """The context of an item whose rule conditions are logsources linked with ``or``: each one (a frozenset
    of (key, value)) is a logsource the item applies to."""


def _logsource(item: _Item, condition: dict, into: dict) -> bool:
    """Adds a logsource condition's (key, value) pairs to ``into``; False when one contradicts it (two
    products at once: no rule has them)."""
    unknown = [str(key) for key in condition if key not in ("type", "product", "category", "service")]
    if unknown:  # pySigma refuses them; read here, a misspelt category held for every rule
        raise PipelineError(f"{item.where}: a logsource condition takes no key {_short(map(repr, unknown))}")
    consistent = True
    for key in ("product", "category", "service"):
        value = condition.get(key)
        if value is None:
            continue
        if not isinstance(value, str):  # a list was a logsource no rule has, as pySigma refuses it
            raise PipelineError(f"{item.where}: a logsource condition's {key} must be text, not "
                                f"{type(value).__name__}")
        if into.get(key, value) != value:
            consistent = False
        into[key] = value
    return consistent


def _holds_in(item_context, context: frozenset) -> bool:
    """Whether an item of ``item_context`` applies to every rule of the logsource ``context``."""
    if isinstance(item_context, _AnyOf):
        return any(alternative <= context for alternative in item_context)
    return isinstance(item_context, frozenset) and item_context <= context


def _read_context(item: _Item, contexts_by_id: dict):
    """The item's context: the frozenset of logsource (key, value) its rule conditions require, an ``_AnyOf``
    such frozensets when they are logsources linked with ``or``, or ("rule", position) when they ask more of
    a rule than its logsource (a tag, a level, a value)."""
    opaque = ("rule", item.position)
    conditions = _conditions(item, "rule_conditions")
    if item.raw.get("detection_item_conditions"):
        _conditions(item, "detection_item_conditions")
        return opaque
    if not conditions:
        return frozenset()
    if item.raw.get("rule_cond_expr") or item.raw.get("rule_cond_not"):
        return opaque
    if item.raw.get("rule_cond_op") == "or" and len(conditions) > 1:
        # several logsources, any of them (pySigma's community pipelines name a few categories so): each is
        # a context of its own, where the items of its logsource apply too
        if any(condition["type"] != "logsource" for condition in conditions):
            return opaque
        alternatives = []
        for condition in conditions:
            logsource = {}
            if _logsource(item, condition, logsource):
                alternatives.append(frozenset(logsource.items()))
        if frozenset() in alternatives:
            return frozenset()
        return _AnyOf(dict.fromkeys(alternatives)) if alternatives else opaque
    logsource, after = {}, []
    for condition in conditions:
        if condition["type"] == "logsource":
            if not _logsource(item, condition, logsource):
                return opaque  # two logsources at once: the item applies to no rule
        elif condition["type"] == "processing_item_applied":
            after.append(_item_id(item, condition))
        else:
            return opaque
    context = frozenset(logsource.items())
    for ident in after:  # an item applied to every rule of this context says nothing more
        if not _holds_in(contexts_by_id.get(ident), context):
            return opaque
    return context


def _read_field_test(item: _Item) -> Optional[Callable]:
    """``test(name, applied_ids) -> bool or None``: whether the item renames a field now called ``name`` that the
    items ``applied_ids`` renamed; None when its field conditions are of a kind not read here.  ``name`` None is
    a field the pipeline does not name (a prefix's): no name a plain list gives (those are named, ``_merge``), and
    a pattern's verdict on it unknown (the test then gives None)."""
    conditions = _conditions(item, "field_name_conditions")
    if item.raw.get("field_name_cond_expr"):
        return None
    tests, listed = [], []
    for condition in conditions:
        kind = condition["type"]
        if kind in ("include_fields", "exclude_fields"):
            names, mode = condition.get("fields"), condition.get("mode", "plain")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or \
                    mode not in ("plain", "re"):
                raise PipelineError(f"{item.where}: {kind} needs 'fields', a list of names (mode plain or re)")
            if mode == "re":  # matched from the name's start, as pySigma does; on RE2, in linear time
                patterns = [_field_pattern(n, f"{item.where}: {kind}") for n in names]
                test = (lambda name, _, patterns=patterns:
                        None if name is None else any(p.match(name) for p in patterns))
            else:
                listed += names
                test = (lambda name, _, names=frozenset(names): name in names)
            if kind == "exclude_fields":
                test = (lambda name, applied, inner=test: _not(inner(name, applied)))
            tests.append(test)
        elif kind == "processing_item_applied":
            tests.append(lambda _, applied, ident=_item_id(item, condition): ident in applied)
        else:
            return None
    item.condition_names = tuple(dict.fromkeys(listed))
    # pySigma links with any for 'or', with all for 'and' and for anything else (its default)
    link = _any if item.raw.get("field_name_cond_op") == "or" else _all
    negate = bool(item.raw.get("field_name_cond_not"))
    if not tests:
        return lambda name, applied: True
    if negate:
        return lambda name, applied: _not(link([t(name, applied) for t in tests]))
    return lambda name, applied: link([t(name, applied) for t in tests])


# Three-valued logic for the tests: None is "depends on the name", for a field the pipeline does not name.
def _not(value: Optional[bool]) -> Optional[bool]:
    return None if value is None else not value


def _all(values: list) -> Optional[bool]:
    return False if False in values else None if None in values else True


def _any(values: list) -> Optional[bool]:
    return True if True in values else None if None in values else False


def _regex_options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False  # RE2 would print each refused pattern on stderr
    options.never_capture = True
    return options


_REGEX_OPTIONS = _regex_options()


def _field_pattern(pattern: str, where: str):
    """An ``include_fields``/``exclude_fields`` pattern on RE2: a file's pattern must not hang the load as
    Python's backtracking can (``(a+)+b`` on a long name); one RE2 cannot read is refused."""
    try:
        return re2.compile(pattern, _REGEX_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "rejected"
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PipelineError(f"{where}: bad regular expression ({' '.join(reason.split())[:100]})") from None


def _targets(value, where: str) -> list:
    targets = value if isinstance(value, list) else [value]
    if not targets or not all(isinstance(t, str) and t and "\n" not in t for t in targets):
        raise PipelineError(f"{where}: a mapping's target must be a field name or a list of them")
    return targets


def _mapping(item: _Item) -> dict:
    mapping = item.raw.get("mapping")
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and k for k in mapping):
        raise PipelineError(f"{item.where}: {item.kind} needs 'mapping', field names to names")
    return {key: _targets(value, f"{item.where}: {key[:60]!r}") for key, value in mapping.items()}


def _prefix(item: _Item) -> str:
    prefix = item.raw.get("prefix")
    if not isinstance(prefix, str) or not prefix:
        raise PipelineError(f"{item.where}: field_name_prefix needs 'prefix', a text")
    return prefix


# Each field is renamed by each item in each context: a hostile file of a few MiB must not take hours.
_MOST_STEPS = 20_000_000
# Logsources the items' rule conditions combine into (each product with each category, ...).
_MOST_CONTEXTS = 10_000
# A field's names after each item: one-to-many renames repeated item after item multiply them (each name is
# tried on every event the field is read from, so a field with more is no map a run can use).
MOST_NAMES = 256

def _rename(item: _Item, names: list, renamed_by: set, unnamed: bool) -> list:
    """The names a field called ``names`` has after ``item`` (pySigma's order: each name on its own)."""
    result = []
    for name in names:
        holds = item.field_test(None if unnamed else name, renamed_by)
        if holds is None:  # a pattern on a name not known here: the prefix is taken, after the name as written
            item.guessed = True
        elif not holds:
            result.append(name)
            continue
        if item.kind == "field_name_prefix":
            renamed = [item.prefix + name]
        elif item.kind == "field_name_mapping":
            renamed = None if unnamed else item.mapping.get(name)
        else:  # field_name_prefix_mapping: the first prefix the name starts with
            renamed = None
            for source, targets in ([] if unnamed else item.mapping.items()):
                if name.startswith(source):
                    renamed = [t + name[len(source):] for t in targets]
                    break
        if renamed is None:
            result.append(name)
        else:
            result.extend(renamed)
            if item.id:
                renamed_by.add(item.id)
    return result


def _applies(item_context, context) -> bool:
    if isinstance(context, frozenset):
        return _holds_in(item_context, context)
    return item_context == context or item_context == frozenset()


class Conversion:
    """A pipeline turned into a field-map table (``table``), and what it left out (``notes``, one line each)."""

    def __init__(self, pipeline: dict, source: str):
        unknown = set(pipeline) - PIPELINE_KEYS
        if unknown:
            raise PipelineError(f"{source}: not a pySigma pipeline: unknown key(s) {_short(map(repr, unknown))}")
        raw_items = pipeline.get("transformations") or []
        if not isinstance(raw_items, list) or not all(isinstance(i, dict) for i in raw_items):
            raise PipelineError(f"{source}: 'transformations' must be a list of mappings")
        self.source, self.notes, self.steps = source, [], {}
        for key in ("postprocessing", "finalizers"):  # after the query is made: nothing to read here
            found = pipeline.get(key) or []
            if not isinstance(found, list) or not all(isinstance(s, dict) for s in found):
                raise PipelineError(f"{source}: '{key}' must be a list of mappings")
            self.steps[key] = [str(s.get("type"))[:40] for s in found]
        items, contexts_by_id = [], {}
        for position, raw in enumerate(raw_items):
            item = _Item(position, raw, source)
            item.context = _read_context(item, contexts_by_id)
            if item.id:
                contexts_by_id.setdefault(item.id, item.context)
            if item.kind in RENAMING:
                if item.kind == "field_name_prefix":
                    item.prefix = _prefix(item)
                else:
                    item.mapping = _mapping(item)
                item.field_test = _read_field_test(item)
                if item.field_test is None:
                    item.unread = "its field name conditions are of a kind not read here"
            items.append(item)
            for key in ("rule_cond_op", "detection_item_cond_op", "field_name_cond_op"):
                linking = raw.get(key)
                if linking not in (None, "and", "or"):
                    self.notes.append(f"transformation {item.id or position + 1}: {key} {str(linking)[:20]!r} is not "
                                      "'and' or 'or', so pySigma links its conditions with 'and', and so does this "
                                      "reading (write 'or' if that is meant)")
        self.items = items
        renaming = [i for i in items if i.kind in RENAMING and i.unread is None]
        if not renaming:  # as a field map it would read every event as it is, the built-in shapes' too
            kinds = [i.kind for i in items] + [k for k, steps in self.steps.items() if steps]
            raise PipelineError(f"{source}: this pySigma pipeline renames no field (it has "
                                f"{_short(kinds) or 'no transformation'}): nothing to read as a field map")
        self._left_out(items)
        self.fields, self.roots, self.differing = self._merge(renaming)
        self.table = self._table(pipeline)

    def _left_out(self, items: list) -> None:
        by_kind = {}
        for item in items:
            if item.kind in RENAMING and item.unread is None:
                continue
            by_kind.setdefault(item.kind, []).append(item)
        query_only = [k for k in by_kind if k in QUERY_ONLY]
        for key, steps in self.steps.items():
            if steps:
                query_only.append(f"{key} ({_short(steps)})")
        if query_only:
            self.notes.append(f"ignored, as they only shape a backend's query or output: {_short(query_only, 12)}")
        for kind, group in by_kind.items():
            if kind in QUERY_ONLY:
                continue
            if kind in RENAMING:
                named = _short(i.id or i.position + 1 for i in group)
                self.notes.append(f"ignored {len(group)} {kind} item(s) ({named}): {group[0].unread}")
                continue
            self.notes.append(f"ignored {len(group)} {kind} item(s), which change what matches: it "
                              + _CHANGES[kind].format(self._detail(kind, group)))

    @staticmethod
    def _detail(kind: str, group: list) -> str:
        def values(key):
            return [v for i in group for v in ([i.raw.get(key)] if not isinstance(i.raw.get(key), list)
                                               else i.raw.get(key)) if v is not None]
        if kind == "add_condition":
            return _short(k for i in group if isinstance(i.raw.get("conditions"), dict) for k in i.raw["conditions"])
        if kind == "change_logsource":
            return _short(f"{k}={i.raw[k]}" for i in group for k in ("product", "category", "service") if k in i.raw)
        if kind in ("replace_string", "map_string"):
            key = "regex" if kind == "replace_string" else "mapping"
            return _short(k for i in group for k in (i.raw.get(key) or {} if key == "mapping" else [i.raw.get(key)]))
        if kind == "set_value":
            return _short(values("value"))
        if kind == "set_field":
            return _short(values("field"))
        if kind == "extract_fields":
            return _short(f"{p}.<group>" for p in values("field_prefix"))
        if kind == "field_name_suffix":
            return _short(values("suffix"))
        return ""

    def _with_unions(self, contexts: list) -> list:
        """``contexts`` and every union of logsource contexts that one rule can be in at once: a rule of
        ``{product: windows, category: process_creation}`` gets the items of ``{product: windows}`` and of
        ``{category: process_creation}`` one after the other (a name the first gives, the second renames)."""
        logsources = [c for c in contexts if isinstance(c, frozenset) and c]
        result, frontier = list(contexts), logsources
        seen = set(result)
        while frontier:
            grown = []
            for context in frontier:
                for other in logsources:
                    union = context | other
                    if union in seen or len({key for key, _ in union}) < len(union):  # one key, two values
                        continue
                    seen.add(union)
                    grown.append(union)
            if len(seen) > _MOST_CONTEXTS:
                raise PipelineError(f"{self.source}: too large to read: its rule conditions combine into more than "
                                    f"{_MOST_CONTEXTS:,} logsources")
            result += grown
            frontier = grown
        return result

    def _merge(self, renaming: list):
        """Run the renaming items in each context; per field, its names in every context, in the file's order."""
        contexts = self._with_unions(list(dict.fromkeys(
            c for i in renaming for c in (i.context if isinstance(i.context, _AnyOf) else (i.context,)))))
        unconditioned = frozenset() not in contexts  # a rule no item's conditions hold for: its fields as named
        if unconditioned:
            contexts.append(frozenset())
        # the fields the items name: a mapping's, and those a prefix's plain field conditions list (the prefix
        # holds for them alone, or for all but them), each run as its own field, as pySigma runs it
        named = list(dict.fromkeys([k for i in renaming if i.kind != "field_name_prefix" for k in i.mapping]
                                   + [n for i in renaming if i.kind == "field_name_prefix" for n in i.condition_names]))
        if len(contexts) * len(named) * len(renaming) > _MOST_STEPS:
            raise PipelineError(f"{self.source}: too large to read: {len(renaming)} renaming items over "
                                f"{len(contexts)} sets of rule conditions and {len(named)} fields")
        per_field = {field: [] for field in named}  # field -> [(names in a context)]
        prefixes, steps = [], 0
        for context in contexts:
            applying = [i for i in renaming if _applies(i.context, context)]
            for field in named:
                names, renamed_by = [field], set()
                for item in applying:
                    names = list(dict.fromkeys(_rename(item, names, renamed_by, False)))  # a name once, in order
                    if len(names) > MOST_NAMES:
                        raise PipelineError(f"{self.source}: too large to read: its renames give the field "
                                            f"{field[:60]!r} more than {MOST_NAMES} names")
                    steps += len(names)
                    if steps > _MOST_STEPS:  # the check above counted one name a field
                        raise PipelineError(f"{self.source}: too large to read: over {_MOST_STEPS:,} renames")
                per_field[field].append(tuple(names))
            unnamed, renamed_by = [""], set()  # a field the pipeline does not name: a prefix at most
            for item in applying:
                if item.kind == "field_name_prefix":
                    unnamed = _rename(item, unnamed, renamed_by, True)
            prefixes.append(unnamed[0])
        roots = []
        for prefix in dict.fromkeys(prefixes):
            if prefix and prefix.endswith(".") and ".." not in prefix and not prefix.startswith("."):
                roots.append(prefix[:-1])
            elif prefix:
                self.notes.append(f"the prefix {prefix!r} is not a path (a dotted path ending in '.', as "
                                  f"'winlog.event_data.'): fields the pipeline "
                                  "does not name are read as named, without it")
        if unconditioned:  # the fields as named: a fallback, after every mapped path, said nowhere
            as_named = {field: seen.pop() for field, seen in per_field.items()}
        fields = {field: list(dict.fromkeys(n for names in seen for n in names)) for field, seen in per_field.items()}
        self.mapped_event_id = list(fields.get("EventID", []))
        differing = [field for field, seen in per_field.items() if len(set(seen)) > 1]
        if unconditioned:
            fields = {field: list(dict.fromkeys(names + list(as_named[field]))) for field, names in fields.items()}
        if differing:
            self.notes.append(f"mapped differently under different rule conditions, so read from each of their paths "
                              f"in the file's order, the first present: {_short(differing, 12)}")
        unnamed_prefix = [i for i in renaming if i.kind == "field_name_prefix_mapping"]
        guessed = [i for i in renaming if i.guessed]
        if guessed:
            self.notes.append(f"field_name_prefix {_short(i.id or i.position + 1 for i in guessed)} holds for field "
                              "names matching its patterns: a field the pipeline does not name is read as named, "
                              "then under the prefix, whatever its name")
        if unnamed_prefix:
            self.notes.append("field_name_prefix_mapping renames only the fields the pipeline names here; any other "
                              f"field starting with {_short(k for i in unnamed_prefix for k in i.mapping)} "
                              "is read as named")
        return fields, roots, differing

    def _table(self, pipeline: dict) -> dict:
        name = os.path.splitext(os.path.basename(self.source))[0] or "pipeline"
        event_id = self.mapped_event_id  # not its name as written, which only rules no item applies to read
        table = {"name": name, "detect": event_id[:1] if len(event_id) == 1 else [], "time": list(DEFAULT_TIME),
                 "roots": self.roots, "fields": self.fields}
        title = pipeline.get("name")
        table["description"] = f"pySigma pipeline {title}" if isinstance(title, str) else "pySigma pipeline"
        return table


def convert(pipeline: dict, source: str) -> Conversion:
    """The field map a parsed pipeline file makes (PipelineError: one line, when it is not one)."""
    return Conversion(pipeline, source)
