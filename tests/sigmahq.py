"""SigmaHQ reference data for tests: thor.yml's logsource mapping and the regression cases.

Reads the shared SigmaHQ checkout (``$SIGMAHQ_DIR``, default ``../shared/sigma/sigmahq`` beside the repository)
without using pipeshell_filter, so that tests can hold the package's logsource layer
against an independent reading of SigmaHQ's own files.  Callers skip when
:func:`available` is false.  :func:`run_rule_set` runs the filter once (the CLI, in a
subprocess) over every regression .evtx with the whole rule set; ``conftest.py`` shares
that run between the test files as the session fixture ``sigmahq_run``.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
from typing import Iterator, Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGMAHQ = os.environ.get("SIGMAHQ_DIR", os.path.join(os.path.dirname(REPO), "shared", "sigma", "sigmahq"))
RULE_DIRS = sorted(glob.glob(os.path.join(SIGMAHQ, "rules*")))
THOR = os.path.join(SIGMAHQ, "tests", "thor.yml")
EVENT_LOG_PREFIX = "WinEventLog:"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml reads the 3,800 rules 8x faster


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


@functools.lru_cache(maxsize=1)
def regression_cases() -> tuple:
    """(rule_path, rule_id, evtx_path, match_count) for every evtx regression test present
    (read once: the tests ask several times).

    The rule is the file under ``rules*/`` whose ``regression_tests_path`` names the case's
    info.yml; paths in rules and info.yml are relative to the SigmaHQ checkout.  Cases whose
    info.yml or evtx file is missing are left out.  ``match_count`` is None when info.yml
    gives none: SigmaHQ's runner then wants at least one match.
    """
    return tuple(_regression_cases())


def _regression_cases() -> Iterator[tuple]:
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
        rule_id = str(yaml.load(text, Loader=SAFE_LOADER)["id"])
        with open(info_path, encoding="utf-8") as handle:
            info = yaml.load(handle, Loader=SAFE_LOADER) or {}
        for test in info.get("regression_tests_info") or ():
            if not isinstance(test, dict) or test.get("type") != "evtx" or not test.get("path"):
                continue
            evtx_path = os.path.join(SIGMAHQ, test["path"])
            if os.path.isfile(evtx_path):
                yield rule_path, rule_id, evtx_path, test.get("match_count")


# ------------------------------------------------------------------ one CLI pass over every regression event


SKIPPED_PREFIX = "pipeshell-filter: skipped: rule "


def evtx_records(path: str) -> list:
    """The records of an .evtx file as the ``evtx`` package renders them (``evtx_dump -o jsonl``)."""
    from evtx import PyEvtxParser

    return [json.loads(record["data"]) for record in PyEvtxParser(path).records_json()]


def record_key(record: dict) -> str:
    """One record's identity across the filter's output and the .evtx it came from."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def rule_files() -> list:
    """Every rule file users load: ``*.yml``/``*.yaml`` under each ``rules*`` directory."""
    return sorted(path for directory in RULE_DIRS for pattern in ("*.yml", "*.yaml")
                  for path in glob.glob(os.path.join(directory, "**", pattern), recursive=True))


class RuleSetRun:
    """The filter's output for every regression .evtx at once, with every rule loaded.

    ``matched``: (rule id, EventID, channel) per rule an event matched; ``keys``: rule id ->
    the records it matched (``record_key``); ``skipped``: rule file -> the reasons it was
    skipped with at load (from ``pipeshell-filter: skipped: rule FILE: reason`` lines).
    """

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes, seconds: float):
        self.returncode, self.stdout, self.stderr, self.seconds = returncode, stdout, stderr, seconds
        self.matched, self.keys, self.skipped = [], {}, {}
        for line in stdout.splitlines():
            record = json.loads(line)
            if record.get("event", {}).get("kind") == "alert":
                continue
            sigma = record.pop("sigma")
            system = record["Event"]["System"]
            event_id = system["EventID"]
            event_id = event_id["#text"] if isinstance(event_id, dict) else event_id
            key = record_key(record)
            for match in sigma.get("matches", [sigma]):
                self.matched.append((match["rule"]["id"], str(event_id), system.get("Channel", "")))
                self.keys.setdefault(match["rule"]["id"], set()).add(key)
        for line in stderr.decode("utf-8", "replace").splitlines():
            if line.startswith(SKIPPED_PREFIX):
                path, reason = _split_skipped(line[len(SKIPPED_PREFIX):])
                self.skipped.setdefault(path, []).append(reason)

    def count(self, rule_id: str, evtx_path: str) -> int:
        """How many records of one .evtx the rule matched."""
        keys = self.keys.get(rule_id, set())
        return sum(key in keys for key in _evtx_keys(evtx_path))


@functools.lru_cache(maxsize=None)
def _evtx_keys(path: str) -> tuple:
    return tuple(record_key(record) for record in evtx_records(path))


def _split_skipped(text: str) -> tuple:
    """``FILE: reason`` -> (FILE, reason): FILE is the first prefix before ``": "`` that is a rule file."""
    at = -1
    while True:
        at = text.find(": ", at + 1)
        if at < 0:
            return text, ""
        if text[:at].endswith((".yml", ".yaml")) and os.path.isfile(text[:at]):
            return text[:at], text[at + 2:]


def run_rule_set(timeout: int = 900) -> RuleSetRun:
    """One CLI run, as users load rules: every ``rules*`` directory, ``--input`` per .evtx."""
    import time

    from clitools import run_cli

    evtx = sorted({case[2] for case in regression_cases()})
    args = [arg for directory in RULE_DIRS for arg in ("--rule", directory)]
    for path in evtx:
        args += ["--input", path]
    started = time.monotonic()
    result = run_cli(args + ["--emit", "matches", "--quiet"], timeout=timeout)
    return RuleSetRun(result.returncode, result.stdout, result.stderr, time.monotonic() - started)
