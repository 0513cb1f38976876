"""Sigma rule files -> a validated :class:`Rule` (metadata, detection, condition).

Accepts legacy v1 rules as written in the wild: upper-case ``AND``, a list as
``logsource.category``, a pipe aggregation, ``timeframe`` inside ``detection``.
Every problem is a :class:`RuleError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
import re
import reprlib
from typing import Optional

import attrs
import yaml

from ..yamlfile import UniqueKeyLoader
from .condition import Condition, ConditionError, parse_condition

def parse_duration(text) -> Optional[int]:
    """Sigma ``timeframe`` (``30s``, ``5m``, ``1h``, ``2d``) in nanoseconds, or None."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
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
class Rule:
    path: str
    id: str
    title: str
    level: Optional[str]
    status: Optional[str]
    description: Optional[str]
    author: Optional[str]
    tags: tuple
    references: tuple
    logsource: dict
    detection: dict  # selection name -> raw YAML value (no condition/timeframe)
    condition: Condition
    timeframe_ns: Optional[int]
    builtin: bool = False

    @property
    def attack_techniques(self) -> list:
        return sorted({t.split(".", 1)[1].upper() for t in self.tags if _is_technique(t)})

    @property
    def attack_tactics(self) -> list:
        return sorted({t.split(".", 1)[1] for t in self.tags if t.startswith("attack.") and not _is_technique(t)})


def _is_technique(tag: str) -> bool:
    return tag.lower().startswith("attack.t") and tag[8:9].isdigit()


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
    """A value as quoted in a one-line error message: short however large the value is."""
    text = _SHOWN.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


class _Budget:
    """What is left of a file's allowance of nodes and characters (aliases expanded)."""

    def __init__(self):
        self.nodes, self.chars = MAX_FILE_NODES, MAX_FILE_CHARS


def check_size(document, source: str, budget: Optional[_Budget] = None) -> None:
    """Refuse a document too large or too deep once its aliases are expanded.

    Walks the tree as every later step would, iteratively and stopping at the first
    limit passed, so the walk itself costs at most the allowance."""
    budget = budget or _Budget()
    nodes, stack = 0, [(document, 0)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
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
        elif isinstance(value, (dict, list, tuple, set)):
            if depth >= MAX_NESTING:
                raise RuleError(f"rule {source} nests deeper than {MAX_NESTING} levels")
            items = value.items() if isinstance(value, dict) else ((item,) for item in value)
            for pair in items:
                stack.extend((item, depth + 1) for item in pair)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(MAX_RULE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise RuleError(f"cannot read rule {path}: {reason}") from None


def load_rule(path: str, builtin: bool = False) -> Rule:
    """The one rule in a file (``load_rules`` for files holding several)."""
    return parse_rule(read_text(path), path, builtin)


def load_rules(path: str) -> list:
    """Every rule in one file, one per YAML document: a ``Rule``, or the ``RuleError``
    that document gave (a file that cannot be read or parsed is one RuleError)."""
    try:
        return parse_rules(read_text(path), path)
    except RuleError as error:
        return [error]


def rule_files(path: str) -> list:
    """A directory's rule files (``*.yml``, ``*.yaml``, recursively, sorted); a file is itself."""
    if not os.path.isdir(path):
        return [path]
    return sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                  for name in names if name.lower().endswith(RULE_SUFFIXES))


def _documents(text: str, source: str) -> list:
    if len(text) > MAX_RULE_BYTES:
        raise RuleError(f"rule {source} is larger than {MAX_RULE_BYTES >> 20} MiB")
    try:
        return [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RuleError(f"rule {source} is not valid YAML{where}: {' '.join(str(problem).split())}") from None
    except (ValueError, OverflowError, RecursionError) as error:
        # a scalar YAML resolves but Python cannot build: an integer of 5,000 digits, 2001-13-45
        reason = " ".join(str(error).split()) or type(error).__name__
        raise RuleError(f"rule {source} is not valid YAML: {reason[:200]}") from None


def parse_rule(text: str, source: str, builtin: bool = False) -> Rule:
    documents = _documents(text, source)
    if len(documents) != 1:
        raise RuleError(f"rule {source}: expected exactly one YAML document, found {len(documents)}")
    check_size(documents[0], source)
    return rule_from_document(documents[0], source, builtin)


def parse_rules(text: str, source: str) -> list:
    """A file of one or more rules, one per YAML document: each a ``Rule`` or its ``RuleError``."""
    documents = _documents(text, source)
    if not documents:
        raise RuleError(f"rule {source} holds no YAML document")
    rules, budget = [], _Budget()
    for number, document in enumerate(documents, 1):
        where = source if len(documents) == 1 else f"{source} (document {number})"
        try:
            if budget.nodes <= 0 or budget.chars < 0:
                raise RuleError(f"rule {where}: skipped, the file is over its size limit (see the errors above)")
            check_size(document, where, budget)
            if isinstance(document, dict) and "action" in document:
                raise RuleError(f"rule {where}: 'action: {shown(document['action'])}' documents are not supported yet")
            if isinstance(document, dict) and "correlation" in document:
                raise RuleError(f"rule {where}: correlation documents are not supported yet")
            rules.append(rule_from_document(document, where))
        except RuleError as error:
            rules.append(error)
    return rules


def rule_from_document(data, source: str, builtin: bool = False) -> Rule:
    if not isinstance(data, dict):
        raise RuleError(f"rule {source}: the rule must be a YAML mapping")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise RuleError(f"rule {source}: missing 'title'")
    detection = data.get("detection")
    if not isinstance(detection, dict):
        raise RuleError(f"rule {source}: missing 'detection' mapping")
    detection = dict(detection)
    condition_text = detection.pop("condition", None)
    timeframe = detection.pop("timeframe", data.get("timeframe"))
    if condition_text is None:
        raise RuleError(f"rule {source}: detection has no 'condition'")
    if isinstance(condition_text, list):
        if not condition_text or not all(isinstance(c, str) for c in condition_text):
            raise RuleError(f"rule {source}: 'condition' list must hold strings")
        if len(condition_text) > 1 and any("|" in c for c in condition_text):
            raise RuleError(f"rule {source}: a list of conditions cannot use '|' aggregations")
        condition_text = " or ".join(f"({c})" for c in condition_text) if len(condition_text) > 1 else condition_text[0]
    if not isinstance(condition_text, str):
        raise RuleError(f"rule {source}: 'condition' must be a string")
    try:
        condition = parse_condition(condition_text)
    except ConditionError as error:
        raise RuleError(f"rule {source}: {error}") from None
    timeframe_ns = None
    if timeframe is not None:
        timeframe_ns = parse_duration(timeframe)
        if timeframe_ns is None and isinstance(timeframe, str) and re.fullmatch(r"\s*\d+\s*[smhd]\s*", timeframe):
            timeframe_ns = MAX_TIMEFRAME_DAYS * 86400 * 1_000_000_000 + 1  # too many digits: too long
        if timeframe_ns is None:
            raise RuleError(f"rule {source}: cannot parse timeframe {shown(timeframe)} (use e.g. 30s, 5m, 1h, 2d)")
        if timeframe_ns == 0:
            raise RuleError(f"rule {source}: timeframe {shown(timeframe)} is empty: a window needs a length (e.g. 30s)")
        if timeframe_ns > MAX_TIMEFRAME_DAYS * 86400 * 1_000_000_000:
            raise RuleError(f"rule {source}: timeframe {shown(timeframe)} is longer than {MAX_TIMEFRAME_DAYS} days")
    rule_id = next((str(v).strip() for v in (data.get("id"), data.get("name")) if v is not None and str(v).strip()),
                   title.strip())
    logsource = data.get("logsource") or {}
    if not isinstance(logsource, dict):
        raise RuleError(f"rule {source}: 'logsource' must be a mapping")
    level = data.get("level")
    return Rule(
        path=source,
        id=str(rule_id),
        title=title.strip(),
        level=str(level) if level is not None else None,
        status=data.get("status") if isinstance(data.get("status"), str) else None,
        description=data.get("description") if isinstance(data.get("description"), str) else None,
        author=data.get("author") if isinstance(data.get("author"), str) else None,
        tags=_string_list(data.get("tags"), "tags", source),
        references=_string_list(data.get("references"), "references", source),
        logsource=logsource,
        detection=detection,
        condition=condition,
        timeframe_ns=timeframe_ns,
        builtin=builtin,
    )
