"""Sigma rule files -> a validated :class:`Rule` (metadata, detection, condition),
:class:`CorrelationRule` (a Sigma v2 correlation document, references unresolved) or
:class:`FilterRule` (a Sigma v2.1 global filter, references unresolved: ``filters``).

Accepts legacy v1 rules as written in the wild: upper-case ``AND``, a list as
``logsource.category``, a pipe aggregation, ``| near``, ``timeframe`` inside
``detection``, and the v1 rule collections: ``action: global`` / ``reset`` /
``repeat`` documents.  Every problem is a :class:`RuleError` with a one-line
message naming the file.
"""

from __future__ import annotations

import functools
import os
import re
import reprlib
from typing import Optional

import attrs

from ..dirwalk import files_under
from ..yamlfile import YamlProblem, expanded, load_yaml, written as written_text
from .condition import (MOST_THRESHOLD, And, Condition, ConditionError, Not, Or, expand, holds_on_none, parse_condition,
                        top_level_terms)
from .correlation import DOCUMENT_KINDS, FIELD_KINDS, OPERATORS

def parse_duration(text) -> Optional[int]:
    """Sigma ``timeframe`` (``30s``, ``5m``, ``1h``, ``2d``) in nanoseconds, or None."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text), re.ASCII)  # 0-9 only: int() reads any script's
    if not match or len(match.group(1)) > _MAX_DURATION_DIGITS:
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit * 1_000_000_000


# More digits than any timeframe needs, fewer than Python's int() refuses (4,300).
_MAX_DURATION_DIGITS = 100
# A window longer than this is refused: its start would leave the calendar (year 1) at the first alert.
MAX_TIMEFRAME_DAYS = 3650

BUILTIN_RULE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "rules", "pipeshell_named_pipes.yml")

class RuleError(ValueError):
    """A rule that cannot be loaded; the message is one line and names the file."""


@attrs.frozen
class RuleMetadata:
    """What an alert says about the rule behind it: shared by detection rules and correlations."""

    path: str
    id: str
    title: str
    level: Optional[str]
    status: Optional[str]
    author: Optional[str]
    tags: tuple
    references: tuple
    # What an analyst reads to triage an alert: the rule's ``description`` and its ``falsepositives``
    description: Optional[str] = attrs.field(default=None, kw_only=True)
    falsepositives: tuple = attrs.field(default=(), kw_only=True)

    # Worked out once per rule (every alert of a rule set carries them): tuples, so that no
    # record can change what the next one gets.
    @functools.cached_property
    def attack_techniques(self) -> tuple:
        return tuple(_attack(self.tags, "technique"))

    @functools.cached_property
    def attack_tactics(self) -> tuple:
        return tuple(_attack(self.tags, "tactic"))

    @functools.cached_property
    def attack_groups(self) -> tuple:
        return tuple(_attack(self.tags, "group"))

    @functools.cached_property
    def attack_software(self) -> tuple:
        return tuple(_attack(self.tags, "software"))


@attrs.frozen
class Rule(RuleMetadata):
    logsource: dict
    detection: dict  # selection name -> raw YAML value (no condition/timeframe)
    condition: Condition
    timeframe_ns: Optional[int]
    builtin: bool = False
    name: Optional[str] = None  # the ``name`` a correlation document may refer to it by
    # legacy ``search | near a and not b``: the condition is the AND of its terms (the search
    # expression first), and this says, per term, whether it is negated (must not occur)
    near: Optional[tuple] = None
    # the global filters applied to it (``filters.AppliedFilter``), in load order: already part
    # of ``detection`` and ``condition``, kept to say so (explain)
    filters: tuple = ()
    # Sigma's ``fields``: the event fields an analyst wants shown with an alert (``detect.Detector``)
    fields: tuple = ()
    # the id a v1 collection's rules share (its first rule's), on each of them when the later ones were
    # numbered ``<id>#N``: a reference or an exclusion naming it means every rule of the collection
    collection: Optional[str] = None


@attrs.frozen
class FilterRule(RuleMetadata):
    """A Sigma v2.1 global filter ("meta filter") as written; ``filters`` applies it to the rules
    it names once every file is read."""

    name: Optional[str]
    logsource: dict
    rules: Optional[tuple]  # the rules it applies to as written (ids or names); None: ``any``
    detection: dict  # its search identifiers (``selection``, and any other name)
    condition: Condition  # expanded against ``detection``: names only its own identifiers


@attrs.frozen
class CorrelationRule(RuleMetadata):
    """A Sigma v2 correlation document as written; ``collection`` resolves its references
    against the rule set into a ``CorrelationSpec``."""

    name: Optional[str]
    kind: str  # the document's ``type``
    rules: tuple  # the referenced rules as written: ids or names
    group_by: tuple
    timespan_ns: int
    condition: tuple  # ((operator, number), ...); empty: all referenced rules (temporal kinds only)
    field: Optional[str]
    aliases: tuple  # ((alias, ((reference as written, field), ...)), ...)
    generate: bool


# ATT&CK in Sigma's tags (the specification's tags appendix): a tactic by its name (attack.execution),
# a technique (attack.t1059.001), a group (attack.g0069) or a software (attack.s0002) by its id.
# ASCII only: ATT&CK ids are written in 0-9 (``\d`` would take any script's digits, against the schema).
_ATTACK = {kind: re.compile(pattern, re.IGNORECASE | re.ASCII) for kind, pattern in (
    ("tactic", r"attack\.([a-z]+(?:-[a-z]+)*)"), ("technique", r"attack\.(t\d{4}(?:\.\d{3})?)"),
    ("group", r"attack\.(g\d{4})"), ("software", r"attack\.(s\d{4})"))}


def _attack(tags: tuple, kind: str) -> list:
    """The ATT&CK names or ids of one kind among the tags (ids upper-cased, as ATT&CK writes them);
    a tag of another form (attack.t1059.1) is none of them."""
    found = {m.group(1) for m in map(_ATTACK[kind].fullmatch, tags) if m}
    return sorted(found if kind == "tactic" else {f.upper() for f in found})


def _string_list(value, what: str, source: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RuleError(f"rule {source}: '{what}' must be a string or a list of strings")


RULE_SUFFIXES = (".yml", ".yaml")
# A rule file larger than this is refused (``--rule /dev/zero`` must not eat the memory).
MAX_RULE_BYTES = 16 << 20
# YAML aliases share one object among all the places that name it, so a small file can stand
# for a huge tree ("billion laughs").  Its size as the rule uses it -- every alias expanded -- is
# capped: values and keys per rule and per file, their text per file, and the nesting.
MAX_RULE_NODES = 100_000
MAX_FILE_NODES = 1_000_000
MAX_FILE_CHARS = MAX_RULE_BYTES
MAX_NESTING = 32

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 2, 60, 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4


def shown(value) -> str:
    """A value as quoted in a one-line error message: short however large the value is; a number
    YAML rewrote as its author wrote it (``0755``, not 493: ``yamlfile.WrittenInt``)."""
    text = getattr(value, "written", None) or _SHOWN.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


class _Budget:
    """What is left of a file's allowance of nodes and characters (aliases expanded)."""

    def __init__(self):
        self.nodes, self.chars = MAX_FILE_NODES, MAX_FILE_CHARS


def check_size(document, source: str, budget: Optional[_Budget] = None) -> None:
    """Refuse a document too large or too deep once its aliases are expanded (``yamlfile.expanded``: it
    stops at the first limit passed, so the walk itself costs at most the allowance)."""
    budget = budget or _Budget()
    for nodes, (value, depth) in enumerate(expanded(document), 1):
        budget.nodes -= 1
        if nodes > MAX_RULE_NODES or budget.nodes < 0:
            limit = (f"{MAX_RULE_NODES:,} per rule" if nodes > MAX_RULE_NODES else f"{MAX_FILE_NODES:,} per file")
            raise RuleError(f"rule {source} has more than {limit} values and keys (YAML aliases count each time "
                            "they are used)")
        if isinstance(value, str):
            budget.chars -= len(value)
            if budget.chars < 0:
                raise RuleError(f"rule {source} holds more than {MAX_FILE_CHARS >> 20} MiB of text "
                                "(YAML aliases count each time they are used)")
        elif depth >= MAX_NESTING and isinstance(value, (dict, list, tuple, set)):
            raise RuleError(f"rule {source} nests deeper than {MAX_NESTING} levels")


def read_text(path: str, what: str = "rule") -> str:
    """A rule file's text, a byte more than ``MAX_RULE_BYTES`` at most; RuleError naming the file as ``what``
    when it cannot be read (``regress`` reads an info.yml so)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(MAX_RULE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise RuleError(f"cannot read {what} {path}: {reason}") from None


def load_rule(path: str, builtin: bool = False) -> Rule:
    """The one rule in a file (``load_rules`` for files holding several)."""
    return parse_rule(read_text(path), path, builtin)


def load_rules(path: str) -> list:
    """Every rule in one file, one per YAML document: a ``Rule``, a ``CorrelationRule``, or the
    ``RuleError`` that document gave (a file that cannot be read or parsed is one RuleError)."""
    try:
        return parse_rules(read_text(path), path)
    except RuleError as error:
        return [error]


def rule_files(path: str) -> list:
    """A directory's rule files (``*.yml``, ``*.yaml``, recursively through links, sorted); a file
    is itself.  A directory of the tree that cannot be read is a RuleError (its rules were left out
    in silence)."""
    if not os.path.isdir(path):
        return [path]
    try:
        return files_under(path, RULE_SUFFIXES)
    except OSError as error:
        raise RuleError(f"cannot read rule directory {error.filename}: {error.strerror}") from None


def _documents(text: str, source: str) -> list:
    if len(text) > MAX_RULE_BYTES:
        raise RuleError(f"rule {source} is larger than {MAX_RULE_BYTES >> 20} MiB")
    try:
        return load_yaml(text, every=True, written_numbers=True)  # detection values compare as written
    except YamlProblem as problem:
        raise RuleError(f"rule {source} is not valid YAML{problem}") from None


def parse_rule(text: str, source: str, builtin: bool = False) -> Rule:
    documents = _documents(text, source)
    if len(documents) != 1:
        raise RuleError(f"rule {source}: expected exactly one YAML document, found {len(documents)}")
    check_size(documents[0], source)
    return rule_from_document(documents[0], source, builtin)


def parse_rules(text: str, source: str) -> list:
    """A file of one or more rules, one per YAML document: each a ``Rule``, a
    ``CorrelationRule`` or its ``RuleError``.

    Sigma v1 rule collections: a document with ``action: global`` is no rule; its content is
    merged into every rule document after it (several accumulate), ``action: reset`` forgets
    it, and ``action: repeat`` is the previous rule document with this one's content merged
    in.  Merging is recursive for mappings; otherwise the global content wins over the
    document's, and the repeat document's over the previous rule's (as sigmac did).  A v2
    correlation document, or a v2.1 filter, takes the global content but a rule's ``detection`` and
    ``logsource``, as defaults: its own keys win (``_with_global``).
    """
    documents = _documents(text, source)
    if not documents:
        raise RuleError(f"rule {source} holds no YAML document")
    rules, budget = [], _Budget()
    shared, previous = {}, None  # the accumulated global content; the last rule document
    used = {}  # the stable ids of this file's rules so far -> the id they were numbered from
    numbered = {}  # position in ``rules`` -> the id a document's own was numbered from
    for number, document in enumerate(documents, 1):
        where = source if len(documents) == 1 else f"{source} (document {number})"
        if budget.nodes <= 0 or budget.chars < 0:  # the rest of the file in one error: in a directory, a line
            rest = f"document {number}" if number == len(documents) else f"documents {number}-{len(documents)}"
            rules.append(RuleError(f"rule {source} ({rest}): skipped, the file is over its size limit (see the "
                                   "error above)"))
            break
        try:
            check_size(document, where, budget)
            own = document  # what the document itself says, before any merge
            if isinstance(document, dict) and "action" in document:
                action = document["action"]
                content = own = {key: value for key, value in document.items() if key != "action"}
                if action == "global":
                    shared = merged(shared, content)
                    continue
                if action == "reset":
                    shared = {}
                    continue
                if action != "repeat":
                    raise RuleError(f"rule {where}: unknown 'action: {shown(action)}' (Sigma v1 collections know "
                                    "global, reset and repeat)")
                if previous is None:
                    raise RuleError(f"rule {where}: 'action: repeat' needs a rule document before it")
                document = merged(previous, content)
                check_size(document, where, budget)
            elif shared and isinstance(document, dict):
                document = _with_global(shared, document)
                check_size(document, where, budget)
            document, base = _own_id(document, own, used, number)
            previous = document if isinstance(document, dict) else None
            rules.append(rule_or_correlation(document, where))
            if base is not None:
                numbered[len(rules) - 1] = base
        except RuleError as error:
            rules.append(error)
    if not rules:
        raise RuleError(f"rule {source} holds only 'action' documents, no rule")
    return _collections(rules, numbered)


def _collections(rules: list, numbered: dict) -> list:
    """``rules`` with ``collection`` set on each detection rule of an id that later ones share numbered
    (``<id>``, ``<id>#3``, ...): a correlation document or a filter numbered so is no rule of it."""
    shared = {base for position, base in numbered.items() if isinstance(rules[position], Rule)}
    for position, rule in enumerate(rules):
        base = numbered.get(position, rule.id if isinstance(rule, Rule) else None)
        if isinstance(rule, Rule) and base in shared:
            rules[position] = attrs.evolve(rule, collection=base)
    return rules


# What a v1 global document holds for its rules alone: a correlation document or a global filter
# after it in the file does not take them (its 'detection' made it "a rule and a correlation", or a
# filter, refused; a filter's logsource is its own).
_RULE_SECTIONS = ("detection", "logsource")


def _with_global(shared: dict, document: dict) -> dict:
    """A document with the global content merged in.  A rule takes all of it, and the global wins a
    clash, as sigmac and pySigma merged.  A correlation document or a filter (v2 documents, which no
    v1 tool merged) takes all but the rule sections, as defaults: its own keys win, so that its own
    id, name and title, by which alerts and other documents know it, stay its own."""
    if "correlation" not in document and "filter" not in document:
        return merged(document, shared)
    return merged({key: value for key, value in shared.items() if key not in _RULE_SECTIONS}, document)


def _own_id(document, own, used: dict, number: int):
    """A collection's rule documents share the global document's title and often its id: one whose
    id would repeat an earlier rule's, not by writing it itself, gets ``<id>#<document number>``
    (else every rule after the first was refused as a duplicate, or skipped in a directory).  The
    document, and the id it was numbered from (None: not numbered)."""
    if not isinstance(document, dict):
        return document, None
    stable = next((written_text(v).strip() for v in (document.get("id"), document.get("name"), document.get("title"))
                   if v is not None and str(v).strip()), None)
    base = stable
    written = next((written_text(v).strip() for v in (own.get("id"), own.get("name")) if v is not None), None) \
        if isinstance(own, dict) else None
    if stable in used and written != stable:  # not the document's own doing: a copy of the global's
        base = used[stable]  # a repeat of a rule given a number: the number is not inherited
        stable = f"{base}#{number}"
        document = dict(document, id=stable)
    used[stable] = base
    return document, (base if stable != base else None)


def merged(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, recursively for mappings (``update`` wins
    otherwise); neither is changed."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def rule_or_correlation(data, source: str):
    """A rule document, a correlation document (one with a ``correlation`` section) or a global
    filter (one with a ``filter`` section)."""
    kinds = [key for key in ("detection", "correlation", "filter") if isinstance(data, dict) and key in data]
    if "filter" in kinds and len(kinds) > 1:
        raise RuleError(f"rule {source}: a document is a rule ('detection'), a correlation ('correlation') or a "
                        "filter ('filter'), not several")
    if "filter" in kinds:
        return filter_from_document(data, source)
    if isinstance(data, dict) and "correlation" in data:
        if "detection" in data:
            raise RuleError(f"rule {source}: a document is a rule ('detection') or a correlation "
                            "('correlation'), not both")
        return correlation_from_document(data, source)
    return rule_from_document(data, source)


def rule_from_document(data, source: str, builtin: bool = False) -> Rule:
    if not isinstance(data, dict):
        raise RuleError(f"rule {source}: the rule must be a YAML mapping")
    meta = _metadata(data, source)
    detection = data.get("detection")
    if not isinstance(detection, dict):
        raise RuleError(f"rule {source}: missing 'detection' mapping")
    detection = dict(detection)
    condition_text = detection.pop("condition", None)
    timeframe = detection.pop("timeframe", data.get("timeframe"))
    if condition_text is None:
        raise RuleError(f"rule {source}: detection has no 'condition'")
    for name in detection:  # YAML reads `1:`, `yes:`, `~:` as a number, a boolean, null
        if not isinstance(name, str):
            raise RuleError(f"rule {source}: selection name {name!r} is not text; quote it")
    if isinstance(condition_text, list):
        if not condition_text or not all(isinstance(c, str) for c in condition_text):
            raise RuleError(f"rule {source}: 'condition' list must hold strings")
        if len(condition_text) > 1 and any("|" in c for c in condition_text):
            raise RuleError(f"rule {source}: a list of conditions cannot use '|' aggregations")
        condition_text = condition_text if len(condition_text) > 1 else condition_text[0]
    if not isinstance(condition_text, (str, list)):
        raise RuleError(f"rule {source}: 'condition' must be a string")
    try:
        if isinstance(condition_text, list):
            condition, near = condition_list(condition_text), None
        else:
            condition, near = near_condition(condition_text)
        if condition is None:
            condition = parse_condition(condition_text)
    except ConditionError as error:
        raise RuleError(f"rule {source}: {error}") from None
    timeframe_ns = None if timeframe is None else _duration(timeframe, "timeframe", source)
    if near is not None and timeframe_ns is None:
        raise RuleError(f"rule {source}: '| near' needs a 'timeframe' (the window its terms must occur in)")
    if condition.aggregation is not None and timeframe_ns is None:  # it counted one instant only
        raise RuleError(f"rule {source}: an aggregation ('| {condition.aggregation.function}(...)') needs a "
                        "'timeframe': a stream has no search range to count over")
    logsource = data.get("logsource") or {}
    if not isinstance(logsource, dict):
        raise RuleError(f"rule {source}: 'logsource' must be a mapping")
    return Rule(
        path=source,
        logsource=logsource,
        detection=detection,
        condition=condition,
        timeframe_ns=timeframe_ns,
        builtin=builtin,
        near=near,
        fields=tuple(dict.fromkeys(_string_list(data.get("fields"), "fields", source))),
        **meta,
    )


def _metadata(data: dict, source: str) -> dict:
    """What rule and correlation documents share: title, stable id, name, level, tags, ..."""
    title = data.get("title")
    if title is not None and not isinstance(title, str):
        raise RuleError(f"rule {source}: 'title' must be text, not {type(title).__name__}")
    if title is None or not title.strip():
        raise RuleError(f"rule {source}: missing 'title'")
    written_id = data.get("id")
    if isinstance(written_id, (bool, dict, list, bytes, set)):  # its Python text (True, b'...') is no id written
        raise RuleError(f"rule {source}: 'id' must be text, not {type(written_id).__name__} (quote it)")
    rule_id = next((written_text(v).strip() for v in (written_id, data.get("name"))
                    if v is not None and str(v).strip()),
                   title.strip())
    name = data.get("name")
    if name is not None and (not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip()):
        raise RuleError(f"rule {source}: 'name' must be a non-empty string")
    level = data.get("level")
    return {
        "id": str(rule_id),
        "title": title.strip(),
        "name": written_text(name).strip() if name is not None else None,
        # a list or mapping (or yes/no) is no level: left out, not shown as Python prints it (['high'])
        "level": written_text(level) if isinstance(level, (str, int, float)) and not isinstance(level, bool) else None,
        "status": data.get("status") if isinstance(data.get("status"), str) else None,
        "author": data.get("author") if isinstance(data.get("author"), str) else None,
        "tags": _string_list(data.get("tags"), "tags", source),
        "references": _string_list(data.get("references"), "references", source),
        "description": _text(data.get("description")),
        "falsepositives": _texts(data.get("falsepositives")),
    }


def _text(value) -> Optional[str]:
    """A text an alert shows, None when it is none or blank (an alert then leaves it out)."""
    return value if isinstance(value, str) and value.strip() else None


def _texts(value) -> tuple:
    """A list of texts as a rule writes them (one text alone is a list of one); anything else, and the entries
    that are no text, left out: metadata an alert shows, never a reason to refuse the rule."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(item for item in items if _text(item) is not None)


def _duration(value, what: str, source: str) -> int:
    """A ``timeframe`` / ``timespan`` in nanoseconds; a RuleError when it is not one we can use."""
    ns = parse_duration(value)
    if ns is None and isinstance(value, str) and re.fullmatch(r"\s*\d+\s*[smhd]\s*", value, re.ASCII):
        ns = MAX_TIMEFRAME_DAYS * 86400 * 1_000_000_000 + 1  # too many digits: too long
    if ns is None and isinstance(value, str) and re.fullmatch(r"\s*\d+\s*M\s*", value, re.ASCII):
        # Sigma v1 wrote a month as 'M' (3M); 'm' is minutes, and a month has no one length
        raise RuleError(f"rule {source}: {what} {shown(value)} is in months, which have no fixed length: write "
                        "it in days (e.g. 30d)")
    if ns is None:
        raise RuleError(f"rule {source}: cannot parse {what} {shown(value)} (use e.g. 30s, 5m, 1h, 2d)")
    if ns == 0:
        raise RuleError(f"rule {source}: {what} {shown(value)} is empty: a window needs a length (e.g. 30s)")
    if ns > MAX_TIMEFRAME_DAYS * 86400 * 1_000_000_000:
        raise RuleError(f"rule {source}: {what} {shown(value)} is longer than {MAX_TIMEFRAME_DAYS} days")
    return ns


def condition_list(texts: list) -> Condition:
    """A list of conditions: each parsed on its own, then OR-ed (a condition's parentheses cannot
    pair with the next one's, as they did when the texts were joined: ``['a and (b', 'c)']``)."""
    parts = []
    for number, text in enumerate(texts, 1):
        try:
            parts.append(parse_condition(text).expression)
        except ConditionError as error:
            raise ConditionError(f"condition {number} of the list: {error}") from None
    return Condition(text=" or ".join(f"({t})" for t in texts), expression=Or(tuple(parts)), aggregation=None)


_NEAR = re.compile(r"\s*near\s", re.IGNORECASE)


def near_condition(text: str) -> tuple:
    """``search | near a [and b | and not c] ...`` (Sigma v1): (Condition, negated flags), or
    (None, None) when the condition has no ``| near``.

    The Condition's expression is the AND of the terms: the search expression first, then
    each ``near`` term (a negated one without its ``not``); the flags say which are negated.
    """
    search, bar, rest = text.partition("|")
    if not bar or not _NEAR.match(rest + " "):
        return None, None
    if "|" in rest:
        raise ConditionError("only one '|' expression is supported")
    primary = parse_condition(search).expression
    if holds_on_none(primary):  # ``not a``, ``not a and not b``: nearly every event would be the primary
        raise ConditionError("the search expression before '| near' cannot hold on an event that meets "
                             "none of its selections (a negation)")
    terms_text = _NEAR.sub("", rest + " ", count=1)
    if not terms_text.strip():
        raise ConditionError("'| near' needs at least one term: near a [and b] [and not c]")
    operands = top_level_terms(parse_condition(terms_text).expression)
    terms, negated = [primary], [False]
    for operand in operands:
        is_not = isinstance(operand, Not)
        term = operand.operand if is_not else operand
        if isinstance(term, Not):
            raise ConditionError(f"'| near' term {str(operand)!r} is a double negation")
        terms.append(term)
        negated.append(is_not)
    return Condition(text=text, expression=And(tuple(terms)), aggregation=None), tuple(negated)


def filter_from_document(data: dict, source: str) -> FilterRule:
    """A Sigma v2.1 global filter, checked as far as it can be alone: its references are resolved,
    and its selections compiled, by ``filters``."""
    meta = _metadata(data, source)
    logsource = data.get("logsource")
    if not isinstance(logsource, dict) or not any(logsource.get(key) for key in _LOGSOURCE_KEYS):
        raise RuleError(f"rule {source}: a filter needs a 'logsource' mapping with a category, product or service "
                        "(the rules it applies to must be within it)")
    for key in _LOGSOURCE_KEYS:  # a list was within no rule's: the filter applied to nothing, in silence
        if logsource.get(key) is not None and not isinstance(logsource[key], str):
            raise RuleError(f"rule {source}: the filter's logsource '{key}' must be text, not "
                            f"{type(logsource[key]).__name__} (a rule is within it when its {key} is that text)")
    section = data["filter"]
    if not isinstance(section, dict):
        raise RuleError(f"rule {source}: 'filter' must be a mapping (rules, selection, condition)")
    if "rules" not in section:
        raise RuleError(f"rule {source}: the filter has no 'rules' (the ids or names of the rules it applies to, "
                        "or 'any')")
    rules = section["rules"]
    if isinstance(rules, str) and rules.strip().lower() == "any":
        rules = None
    else:
        rules = _names(rules, "rules", source, "filter")
        if not rules:
            raise RuleError(f"rule {source}: filter 'rules' must name at least one rule (by id or name), or be 'any'")
    if "condition" not in section:
        raise RuleError(f"rule {source}: the filter has no 'condition'")
    text = section["condition"]
    if not isinstance(text, str):
        raise RuleError(f"rule {source}: the filter's 'condition' must be a string")
    if "|" in text:
        raise RuleError(f"rule {source}: a filter's condition takes no '|' (aggregations and near belong to rules)")
    detection = {name: value for name, value in section.items() if name not in ("rules", "condition")}
    for name in detection:
        if not isinstance(name, str):
            raise RuleError(f"rule {source}: filter selection name {name!r} is not text; quote it")
    if not detection:
        raise RuleError(f"rule {source}: the filter has no selection")
    try:
        parsed = parse_condition(text)
        condition = Condition(text, expand(parsed.expression, list(detection)), None)
    except ConditionError as error:
        raise RuleError(f"rule {source}: filter {error}") from None
    return FilterRule(path=source, logsource=logsource, rules=rules, detection=detection, condition=condition,
                      **meta)


_LOGSOURCE_KEYS = ("category", "product", "service")
# Fields one correlation groups by.  Each is a key of every Detection of its rules, held with each event of
# its windows: 20,000 of them took 19 ms and 175 KB an event (38 s and 358 MB for 2,000 events).
MAX_GROUP_BY = 32
_CORRELATION_KEYS = ("type", "rules", "group-by", "timespan", "condition", "aliases", "generate")


def correlation_from_document(data: dict, source: str) -> CorrelationRule:
    """A Sigma v2 correlation document, checked as far as it can be alone (its references are
    resolved against the rule set by ``collection``)."""
    meta = _metadata(data, source)
    section = data["correlation"]
    if not isinstance(section, dict):
        raise RuleError(f"rule {source}: 'correlation' must be a mapping")
    unknown = [key for key in section if key not in _CORRELATION_KEYS]
    if unknown:
        raise RuleError(f"rule {source}: unknown key {shown(unknown[0])} in 'correlation' (known: "
                        f"{', '.join(_CORRELATION_KEYS)})")
    kind = section.get("type")
    if kind not in DOCUMENT_KINDS:
        raise RuleError(f"rule {source}: correlation 'type' {shown(kind)} is not one of {', '.join(DOCUMENT_KINDS)}")
    rules = _names(section.get("rules"), "rules", source)
    if not rules:
        raise RuleError(f"rule {source}: correlation 'rules' must name at least one rule (by id or name)")
    group_by = _names(section.get("group-by"), "group-by", source)
    if len(group_by) > MAX_GROUP_BY:
        raise RuleError(f"rule {source}: correlation 'group-by' names {len(group_by):,} fields; at most "
                        f"{MAX_GROUP_BY} (each is read, kept and sent with every detection of its rules)")
    if "timespan" not in section:
        raise RuleError(f"rule {source}: correlation has no 'timespan' (e.g. 5m)")
    timespan_ns = _duration(section["timespan"], "timespan", source)
    bounds, field = _correlation_condition(section.get("condition"), kind, source)
    generate = _generate(data, section, source)
    aliases = _aliases(section.get("aliases"), source)
    return CorrelationRule(path=source, kind=kind, rules=rules, group_by=group_by, timespan_ns=timespan_ns,
                           condition=bounds, field=field, aliases=aliases, generate=generate, **meta)


def _names(value, what: str, source: str, section: str = "correlation") -> tuple:
    """A list of names (a single string is a list of one); no name twice."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                              and str(v).strip() for v in items):
        raise RuleError(f"rule {source}: {section} '{what}' must be a list of names")
    names, seen = tuple(written_text(v).strip() for v in items), set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)  # a set: 30,000 names took 17 s
    if twice is not None:
        raise RuleError(f"rule {source}: {section} '{what}' names {shown(twice)} twice")
    return names


def _correlation_condition(condition, kind: str, source: str) -> tuple:
    """((operator, number), ...) and the field, from ``condition: {gte: 10, lte: 20, field: x}``."""
    temporal = kind in ("temporal", "temporal_ordered")
    if condition is None:
        if not temporal:
            raise RuleError(f"rule {source}: a {kind} correlation needs a 'condition' (e.g. gte: 10)")
        return (), None
    if not isinstance(condition, dict):
        raise RuleError(f"rule {source}: correlation 'condition' must be a mapping (e.g. gte: 10)")
    bounds, field = [], condition.get("field")
    for key, number in condition.items():
        if key == "field":
            continue
        if key not in OPERATORS:
            raise RuleError(f"rule {source}: unknown operator {shown(key)} in correlation condition (use "
                            f"{', '.join(OPERATORS)}, or field)")
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number \
                or number in (float("inf"), float("-inf")):
            raise RuleError(f"rule {source}: correlation condition {key}: {shown(number)} is not a number")
        if abs(number) > MOST_THRESHOLD:  # past a double, comparisons and alerts lose the number
            raise RuleError(f"rule {source}: correlation condition {key}: {shown(number)[:40]} is beyond 1e300")
        bounds.append((key, int(number) if isinstance(number, int) else float(number)))  # not WrittenInt
    if not bounds and not temporal:
        raise RuleError(f"rule {source}: correlation condition has no operator (use {', '.join(OPERATORS)})")
    if isinstance(field, list) and len(field) == 1:
        field = field[0]
    if kind in FIELD_KINDS:
        if isinstance(field, list):
            raise RuleError(f"rule {source}: a {kind} over several fields is not supported (one 'field')")
        if not isinstance(field, str) or not field.strip():
            raise RuleError(f"rule {source}: a {kind} correlation needs 'field' in its condition")
        field = field.strip()
    elif field is not None:
        raise RuleError(f"rule {source}: a {kind} correlation takes no 'field' in its condition")
    return tuple(bounds), field


def _generate(data: dict, section: dict, source: str) -> bool:
    """``generate`` (the correlation section's, or the document's as the JSON schema has it)."""
    values = {place: where["generate"] for place, where in (("section", section), ("document", data))
              if "generate" in where}
    for value in values.values():
        if not isinstance(value, bool):
            raise RuleError(f"rule {source}: 'generate' must be true or false")
    if len(set(values.values())) > 1:
        raise RuleError(f"rule {source}: 'generate' is given twice, differently")
    return next(iter(values.values()), False)


def _aliases(value, source: str) -> tuple:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(m, dict) and m for m in value.values()):
        raise RuleError(f"rule {source}: correlation 'aliases' must map each alias to a mapping of "
                        "rule name -> field")
    aliases = []
    for alias, mapping in value.items():
        pairs = []
        for rule, field in mapping.items():
            if not isinstance(field, str) or not field.strip() or isinstance(rule, bool):
                raise RuleError(f"rule {source}: alias {shown(alias)}: the field for {shown(rule)} must be a "
                                "field name")
            pairs.append((str(rule).strip(), field.strip()))
        aliases.append((str(alias), tuple(pairs)))
    return tuple(aliases)
