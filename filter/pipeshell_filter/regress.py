"""``pipeshell-filter test``: a rule set's regression cases, judged as SigmaHQ's runner judges them.

A rule names its cases with ``regression_tests_path`` (an ``info.yml``); each case there is an .evtx
and a ``match_count``.  A case passes when the rule matches at least ``match_count`` records of its
.evtx (any record at all when ``match_count`` is absent); matching more is a warning, not a failure.
Relative paths are found as SigmaHQ's runner finds them: from the rule file's directory, walking up
until the path exists.  The records go through the filter itself (``Filter`` over a real ``Engine``,
the prefilter and rule index of the whole rule set, as ``--input X.evtx`` reads them), so a verdict
is what a user's run would have done; each .evtx is read once for every case that names it.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Callable, Dict, Iterator, List, Optional

import attrs

from .dirwalk import file_identity
from .engine import Engine
from .events.fields import FieldResolver
from .io import inputs
from .io.prefilter import Prefilter
from .io.rule_index import RuleIndex
from .io.stream import Diagnostics, Filter, Output
from .sigma.rule import MAX_RULE_BYTES, RuleError, read_text, rule_files, shown
from .values import one_line
from .yamlfile import YamlProblem, load_yaml, written

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
KEY = "regression_tests_path"
_KEY_LINE = re.compile(r"^\s*regression_tests_path\s*:", re.MULTILINE)


@attrs.define
class Case:
    """One regression case of one rule, and (once ``run``) its verdict."""

    rule_id: str
    rule_path: str
    name: str
    evtx: Optional[str] = None  # the resolved .evtx path, None when the case cannot be run
    match_count: Optional[int] = None
    title: Optional[str] = None
    matched: Optional[int] = None  # records the rule matched
    verdict: Optional[str] = None
    reason: Optional[str] = None
    # how loading names the rule's document in what it reports: FILE, or ``FILE (document N)`` in a file of several
    source: Optional[str] = None

    def judge(self, matched: int) -> None:
        """SigmaHQ's rule: fewer than ``match_count`` fails, more warns; no ``match_count``: at least one."""
        self.matched = matched
        need = 1 if self.match_count is None else self.match_count
        if matched < need:
            self.verdict = FAIL
            self.reason = f"matched {matched} record(s), match_count {need}" if self.match_count is not None \
                else "matched no record (info.yml gives no match_count: at least one)"
        elif self.match_count is not None and matched > self.match_count:
            self.verdict = WARN
            self.reason = f"matched {matched} record(s), more than match_count {self.match_count}: update info.yml"
        else:
            self.verdict = PASS
            self.reason = f"matched {matched} record(s)" + \
                (f", match_count {self.match_count}" if self.match_count is not None else "")

    def fail(self, reason: str, verdict: str = FAIL) -> "Case":
        """Judged without being run (``reason``: why it could not be, or was not)."""
        self.verdict, self.reason = verdict, reason
        return self

    def record(self) -> dict:
        """The ``--json`` line of this case."""
        return {"verdict": self.verdict, "rule": {"id": self.rule_id, "title": self.title, "path": self.rule_path},
                "case": self.name, "evtx": self.evtx, "match_count": self.match_count, "matched": self.matched,
                "reason": self.reason}

    def line(self) -> str:
        """The text line of this case: one line, whatever line breaks the rule's id, its path or a reason quoting
        them hold (written as escapes, as every one-line message is)."""
        return one_line(f"{self.verdict.upper()} {self.rule_id} {self.name!r} ({self.rule_path}): {self.reason}")


def found_path(rule_path: str, relative: str) -> Optional[str]:
    """``relative`` (an info.yml or .evtx path as written) from the rule file's directory or the first
    directory above it where it exists, as SigmaHQ's runner looks (the repository root, for its layout);
    an absolute path as it is; None when it exists nowhere."""
    relative = relative.replace("\\", "/")
    if os.path.isabs(relative):
        return relative if os.path.exists(relative) else None
    directory = os.path.dirname(os.path.abspath(rule_path))
    while True:
        candidate = os.path.join(directory, relative)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _documents_with_cases(path: str) -> Iterator:
    """``(source, document)`` of each YAML document of a rule file that names ``regression_tests_path``, its
    source as loading names it (``Case.source``); a file that cannot be read as YAML but names it, as one
    document with no id (its load-time skip says why)."""
    try:
        text = read_text(path)
    except RuleError:
        return
    if not _KEY_LINE.search(text):  # most rules have no cases: no second YAML parse for them
        return
    try:
        documents = load_yaml(text, every=True)
    except YamlProblem:
        yield path, {}
        return
    for number, document in enumerate(documents, 1):
        if isinstance(document, dict) and KEY in document:
            yield (path if len(documents) == 1 else f"{path} (document {number})"), document


def find_cases(rule_paths: List[str]) -> List[Case]:
    """The regression cases of the rules under ``rule_paths``, unjudged, except those that cannot be run
    (no info.yml, no .evtx, a case that is no .evtx), which fail here with the reason."""
    cases, seen = [], set()
    for top in rule_paths:
        try:
            files = rule_files(top)
        except RuleError:
            continue  # loading the rules said it already
        for path in files:
            if not os.path.isfile(path):  # a named pipe would wait for ever: loading said what it is (or read it)
                continue
            if file_identity(path) in seen:  # named and in a directory named too: loaded once, run once
                continue
            seen.add(file_identity(path))
            for source, document in _documents_with_cases(path):
                for case in _cases_of(path, document):
                    case.source = source
                    cases.append(case)
    return cases


def _cases_of(rule_path: str, document: dict) -> List[Case]:
    """The cases one rule document names; a single failed (or warned) one when its info.yml gives none."""
    rule_id = _text(document.get("id", "")) or "(no id)"
    title = document.get("title") if isinstance(document.get("title"), str) else None

    def refused(reason: str, verdict: str = FAIL) -> List[Case]:
        return [Case(rule_id, rule_path, "-", title=title).fail(reason, verdict)]

    where = document.get(KEY)
    if not document:
        return refused("the rule file is not valid YAML")
    if not isinstance(where, str) or not where:
        return refused(f"{KEY} is not a path")
    info_path = found_path(rule_path, where)
    unusable = _not_a_file("info.yml", where, info_path)
    if unusable is not None:
        return refused(unusable)
    try:
        text = read_text(info_path, "info.yml")
        if len(text) > MAX_RULE_BYTES:
            return refused(f"info.yml {info_path} is larger than {MAX_RULE_BYTES >> 20} MiB")
        info = load_yaml(text)
    except RuleError as problem:
        return refused(str(problem))
    except YamlProblem as problem:
        return refused(f"info.yml {info_path} cannot be read{problem}")
    info = {} if info is None else info  # an empty file
    if not isinstance(info, dict):
        return refused(f"info.yml {info_path} is {_kind(info)}, not a mapping")
    tests = info.get("regression_tests_info")
    if tests is None or tests == []:  # SigmaHQ's runner warns and runs nothing
        return refused(f"info.yml {info_path} lists no regression_tests_info: no case run", WARN)
    if not isinstance(tests, list):
        return refused(f"info.yml {info_path}: regression_tests_info is {_kind(tests)}, not a list of cases")
    cases = []
    for number, test in enumerate(tests, 1):
        if not isinstance(test, dict):
            continue  # as SigmaHQ's runner: not a case
        name = test.get("name")
        case = Case(rule_id, rule_path, _text(name) if name and not isinstance(name, (dict, list))
                    else f"case {number}", title=title)
        count = test.get("match_count")
        if count is not None and (type(count) is not int or count < 0):
            cases.append(case.fail(f"match_count {_text(count, 40)!r} is not a whole number"))
            continue
        case.match_count = count
        if test.get("type") != "evtx":
            cases.append(case.fail(f"type {_text(test.get('type'), 40)!r}: only evtx cases can be run"))
            continue
        evtx = test.get("path")
        if evtx is None or evtx == "":
            cases.append(case.fail("the case gives no evtx path"))
            continue
        if not isinstance(evtx, str):
            cases.append(case.fail(f"the case's evtx path {_text(evtx, 40)} is {_kind(evtx)}, not a path"))
            continue
        found = found_path(rule_path, evtx)
        unusable = _not_a_file("evtx", evtx, found)
        if unusable is not None:
            cases.append(case.fail(unusable))
            continue
        case.evtx = found
        cases.append(case)
    if not cases:  # every entry passed over: the rule still names its cases, as an empty list does
        return refused(f"info.yml {info_path}: regression_tests_info holds no mapping: no case run", WARN)
    return cases


def _not_a_file(what: str, written_path, found: Optional[str]) -> Optional[str]:
    """Why a case's ``info.yml`` or .evtx (``written_path`` as its YAML gives it, ``found`` where ``found_path``
    found it) is no file to read, None when it is one: a directory or a device is said as what it is, not
    "not found" (and never read: ``/dev/zero`` has no end)."""
    if found is None:
        return f"{what} {_text(written_path)} not found (looked from the rule's directory up)"
    try:
        mode = os.stat(found).st_mode
    except OSError as error:
        return f"{what} {found} cannot be read: {error.strerror}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "no regular file")
    return f"{what} {found} is {kind}, not a file"


def _text(value, limit: int = 200) -> str:
    """A value of a YAML file as a line quotes it: a scalar as written, cut at ``limit``; a list or a mapping
    shortened (``shown``): printed whole, a small file's aliases can make it a billion values."""
    return shown(value) if isinstance(value, (dict, list)) else written(value)[:limit]


def _kind(value) -> str:
    """What a YAML value is, for a message saying it is not what was wanted."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "a mapping", list: "a list", str: "a text"}.get(type(value), f"a {type(value).__name__}")


def _skip_reason(source: str, messages: List[str]) -> Optional[str]:
    """The load-time message that names this rule's document (``rule FILE: ...``, ``rule FILE (document 2): ...``;
    ``source``: ``Case.source``)."""
    for message in messages:
        at = message.find(f"rule {source}")
        end = at + len("rule ") + len(source)
        if at >= 0 and message[end:end + 1] in (":", " ", ""):
            return message
    return None


def run(cases: List[Case], plans, resolver: FieldResolver, messages: List[str],
        prefilter: Optional[Prefilter] = None, index: Optional[RuleIndex] = None,
        unknown_logsource: str = "match", diagnostics: Optional[Diagnostics] = None,
        make_engine: Optional[Callable[[], Engine]] = None) -> List[Case]:
    """Judge the runnable ``cases`` with the loaded rule set ``plans`` (``messages``: what loading it
    reported, to say why a rule was skipped).  Each .evtx is read once, through a fresh engine, for every
    case that names it: a case's count is the Detections its rule made of that file's records (for a
    correlation document, its hits)."""
    make_engine = make_engine or (lambda: Engine(plans, resolver, unknown_logsource=unknown_logsource))
    loaded = {**{plan.rule.id: plan.rule.path for plan in plans},
              **{document.spec.id: document.rule.path for document in getattr(plans, "correlations", ())}}
    # the rules the selection leaves out (id -> path): those loaded only to feed a correlation, and the others
    left_out = {rule_id: loaded.get(rule_id) for rule_id in getattr(plans, "deselected", {})}
    left_out.update((rule_id, why.path) for rule_id, why in getattr(plans, "left_out", {}).items())
    # the id each document loaded under, by the document's path: a rule without an id is known by its name or
    # title, and one document's id may repeat another's (then it was skipped, and must not be judged by it)
    id_of = {path: rule_id for rule_id, path in {**loaded, **left_out}.items() if path is not None}
    options = plans.selection.options() if getattr(plans, "selection", None) else "the selection"
    by_evtx: Dict[str, List[Case]] = {}
    for case in cases:
        source = case.source or case.rule_path
        case.rule_id = id_of.get(source, case.rule_id)
        skipped = None if source in id_of else _skip_reason(source, messages)
        if case.rule_id in left_out and _same_file(left_out[case.rule_id], case.rule_path):
            case.fail(f"not run: the rule is left out by {options}", SKIP)
        elif case.verdict is not None:
            continue
        elif skipped is not None:  # even when another document of its file has its id
            case.fail(f"the rule was skipped at load: {skipped}")
        elif not _same_file(loaded.get(case.rule_id), case.rule_path):  # skipped, or another file's id
            case.fail("the rule was not loaded")
        else:
            by_evtx.setdefault(case.evtx, []).append(case)
    diagnostics = diagnostics or Diagnostics()
    for path, waiting in by_evtx.items():
        engine = make_engine()
        try:
            _read(engine, path, prefilter, index, diagnostics)
        except inputs.InputError as error:
            for case in waiting:
                case.fail(str(error))
            continue
        for case in waiting:
            counts = engine.rule_detections if case.rule_id in engine.plans else engine.rule_fires
            case.judge(counts[case.rule_id])
    return cases


def _same_file(loaded_path: Optional[str], rule_path: str) -> bool:
    """Whether a loaded rule's path (``FILE``, or ``FILE (document N)`` in a file of several) is of this file."""
    return loaded_path is not None and (loaded_path == rule_path or loaded_path.startswith(rule_path + " ("))


def _read(engine: Engine, path: str, prefilter, index, diagnostics: Diagnostics) -> None:
    """One .evtx through the filter as ``--input path`` reads it, the output thrown away."""
    if not inputs.is_evtx(path):
        raise inputs.InputError(f"{path} is not an EVTX file")
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        stream_filter = Filter(engine, Output(devnull), diagnostics, "alerts", None, prefilter=prefilter,
                               workers=0, index=index)
        stream_filter.repeated_keys = True

        stream_filter.process_labelled(inputs.judged(inputs.labelled_lines(path, inputs.evtx_problems(diagnostics)),
                                                     prefilter))
        stream_filter.finish()
    finally:
        os.close(devnull)


def summary(cases: List[Case]) -> str:
    """The last line: how many cases passed, warned (more matches than match_count), failed, were not run."""
    counts = {verdict: sum(case.verdict == verdict for case in cases) for verdict in (PASS, WARN, FAIL, SKIP)}
    text = (f"{len(cases)} regression case(s): {counts[PASS]} passed, {counts[WARN]} warned (not failures), "
            f"{counts[FAIL]} failed")
    return text + (f", {counts[SKIP]} not run (rules left out)" if counts[SKIP] else "")


def failed(cases: List[Case]) -> bool:
    """Whether a case failed: the exit status 1 (a warned or skipped case is no failure)."""
    return any(case.verdict == FAIL for case in cases)
