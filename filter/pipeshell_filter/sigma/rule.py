"""Sigma rule files -> a validated :class:`Rule` (metadata, detection, condition).

Accepts legacy v1 rules as written in the wild: upper-case ``AND``, a list as
``logsource.category``, a pipe aggregation, ``timeframe`` inside ``detection``.
Every problem is a :class:`RuleError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import attrs
import yaml

from ..yamlfile import UniqueKeyLoader
from .condition import Condition, ConditionError, parse_condition

def parse_duration(text) -> Optional[int]:
    """Sigma ``timeframe`` (``30s``, ``5m``, ``1h``, ``2d``) in nanoseconds, or None."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
    if not match:
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit * 1_000_000_000


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
        raise RuleError(f"rule {source} is not valid YAML{where}: {problem}") from None


def parse_rule(text: str, source: str, builtin: bool = False) -> Rule:
    documents = _documents(text, source)
    if len(documents) != 1:
        raise RuleError(f"rule {source}: expected exactly one YAML document, found {len(documents)}")
    return rule_from_document(documents[0], source, builtin)


def parse_rules(text: str, source: str) -> list:
    """A file of one or more rules, one per YAML document: each a ``Rule`` or its ``RuleError``."""
    documents = _documents(text, source)
    if not documents:
        raise RuleError(f"rule {source} holds no YAML document")
    rules = []
    for number, document in enumerate(documents, 1):
        where = source if len(documents) == 1 else f"{source} (document {number})"
        try:
            if isinstance(document, dict) and "action" in document:
                raise RuleError(f"rule {where}: 'action: {document['action']}' documents are not supported yet")
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
        if timeframe_ns is None:
            raise RuleError(f"rule {source}: cannot parse timeframe {timeframe!r} (use e.g. 30s, 5m, 1h, 2d)")
        if timeframe_ns == 0:
            raise RuleError(f"rule {source}: timeframe {timeframe!r} is empty: a window needs a length (e.g. 30s)")
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
