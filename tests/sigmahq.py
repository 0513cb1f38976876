"""SigmaHQ reference data for tests: thor.yml's logsource mapping and the regression cases.

Reads the shared SigmaHQ checkout (``$SIGMAHQ_DIR``, default ``../shared/sigma/sigmahq`` beside the repository)
without using pipeshell_filter, so that tests can hold the package's logsource layer
against an independent reading of SigmaHQ's own files.  Callers skip when
:func:`available` is false.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from typing import Iterator, Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGMAHQ = os.environ.get("SIGMAHQ_DIR", os.path.join(os.path.dirname(REPO), "shared", "sigma", "sigmahq"))
RULE_DIRS = sorted(glob.glob(os.path.join(SIGMAHQ, "rules*")))
THOR = os.path.join(SIGMAHQ, "tests", "thor.yml")
EVENT_LOG_PREFIX = "WinEventLog:"


class NotMapped(LookupError):
    """thor.yml has no entry for a rule's logsource (its verdict would be a guess)."""


def available() -> bool:
    return os.path.isfile(THOR)


@functools.lru_cache(maxsize=1)
def load_thor() -> dict:
    """thor.yml's ``logsources``: entry name -> {category/product/service, conditions, rewrite, sources}."""
    with open(THOR, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["logsources"]


def _values(value) -> set:
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    return {str(item).lower() for item in items}


def _selects(entry: dict, rule: dict) -> bool:
    """Legacy sigmac matching: each of category/product/service an entry names, the rule must name too."""
    named = False
    for key in ("category", "product", "service"):
        if key not in entry:
            continue
        named = True
        if str(entry[key]).lower() not in rule.get(key, set()):
            return False
    return named


def _event_log_channels(entries) -> set:
    return {source[len(EVENT_LOG_PREFIX):].lower()
            for entry in entries for source in entry.get("sources", ())
            if source.startswith(EVENT_LOG_PREFIX)}


def thor_event_ids(entry: dict) -> set:
    """The EventIDs of a category entry's conditions, as text."""
    ids = entry.get("conditions", {}).get("EventID")
    return {str(i) for i in (ids if isinstance(ids, list) else [ids])} if ids is not None else set()


def applies(rule_logsource: dict, event_id: str, channel: str) -> bool:
    """Whether thor.yml puts a Windows event (EventID, channel) in a rule's logsource.

    Category entries hold when the EventID meets their ``conditions`` and the channel is a
    source of the service they ``rewrite`` to; service entries hold when the channel is one
    of their ``WinEventLog:`` sources.  Conditions other than EventID (registry_add's
    EventType) are not part of the question.  A rule for another product never covers a
    Windows event.  Raises :class:`NotMapped` when no thor.yml entry selects the rule.
    """
    rule = {key: _values(rule_logsource.get(key)) for key in ("category", "product", "service")}
    rule = {key: values for key, values in rule.items() if values}
    if "product" in rule and "windows" not in rule["product"]:
        return False
    thor = load_thor().values()
    selected = [entry for entry in thor if _selects(entry, rule)]
    if not selected:
        raise NotMapped(f"thor.yml maps no logsource {rule_logsource!r}")
    event_id = str(event_id)
    channel = channel.lower()
    categories = [entry for entry in selected if "conditions" in entry]
    sources = [entry for entry in selected if "sources" in entry]
    result = True
    if categories:
        result = False
        for entry in categories:
            target = {key: _values(value) for key, value in entry.get("rewrite", {}).items()}
            channels = _event_log_channels(e for e in thor if "sources" in e and _selects(e, target))
            if event_id in thor_event_ids(entry) and channel in channels:
                result = True
    if sources:
        result = result and channel in _event_log_channels(sources)
    return result


def _regression_path(text: str) -> Optional[str]:
    match = re.search(r"^regression_tests_path:\s*['\"]?([^'\"\s]+)['\"]?\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def regression_cases() -> Iterator[tuple]:
    """(rule_path, rule_id, evtx_path, match_count) for every evtx regression test present.

    The rule is the file under ``rules*/`` whose ``regression_tests_path`` names the case's
    info.yml; paths in rules and info.yml are relative to the SigmaHQ checkout.  Cases whose
    info.yml or evtx file is missing are left out.  ``match_count`` is None when info.yml
    gives none: SigmaHQ's runner then wants at least one match.
    """
    rule_files = sorted(glob.glob(os.path.join(SIGMAHQ, "rules*", "**", "*.yml"), recursive=True))
    for rule_path in rule_files:
        with open(rule_path, encoding="utf-8") as handle:
            text = handle.read()
        info_path = _regression_path(text)
        if info_path is None:
            continue
        info_path = os.path.join(SIGMAHQ, info_path)
        if not os.path.isfile(info_path):
            continue
        rule_id = str(yaml.safe_load(text)["id"])
        with open(info_path, encoding="utf-8") as handle:
            info = yaml.safe_load(handle) or {}
        for test in info.get("regression_tests_info") or ():
            if not isinstance(test, dict) or test.get("type") != "evtx" or not test.get("path"):
                continue
            evtx_path = os.path.join(SIGMAHQ, test["path"])
            if os.path.isfile(evtx_path):
                yield rule_path, rule_id, evtx_path, test.get("match_count")
