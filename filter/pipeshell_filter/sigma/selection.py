"""Which rules of a loaded rule set alert: ``--min-level``, ``--status``, ``--tag``, ``--exclude-tag``,
``--exclude-rule`` and ``--exclude-rules``.

Loading all of SigmaHQ alerts on many benign events through its low and informational rules, and
through parts of its tree a user does not want (threat hunting, emerging threats, rules known to be
noisy somewhere); a user chooses what alerts, as Hayabusa's ``--min-level``, ``--include-tag``,
``--exclude-tag`` and ``exclude_rules.txt``, and Chainsaw's ``--status``, do.

The selection decides what **alerts**, never what a kept correlation sees:

* a rule or correlation the selection keeps is loaded as ever (it may still be quiet: a
  correlation refers to it without ``generate``);
* one it leaves out, but that a kept correlation reads (directly, or through a correlation of
  correlations), is loaded **quiet**: its matches feed that correlation, and it does not alert;
* one it leaves out that nothing kept reads is not loaded at all, so it costs no matching.

A rule without a level, or with one that is none of Sigma's five, is kept by ``--min-level``
(it cannot be placed below anything); one without a status is kept by ``--status``.  Levels,
statuses, tags and ids are compared without regard to letter case; a tag given with a trailing
``*`` stands for every tag it starts.  ``--tag`` keeps what has at least one of its tags (a rule
without tags has none); ``--exclude-tag`` leaves out what has any of its tags; ``--exclude-rule``
leaves out a rule or correlation by its id, or by its ``name`` (the id a v1 collection's rules share: each of
them; ``<id>#3``: that one).  An excluded id, or a tag, that no
rule has is no error (a list is shared across rule versions): ``select`` names it, since a misspelt
one would otherwise keep or exclude nothing in silence.  The selection never makes a
rule alert that would not alert without it: a rule kept that feeds a correlation left out without
``generate`` stays quiet.
"""

from __future__ import annotations

import functools
import re
from typing import Optional, Sequence

import attrs

from ..dirwalk import FileProblem, read_bounded
from .collection import RuleSet

LEVELS = ("informational", "low", "medium", "high", "critical")  # lowest first
STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")


class SelectionError(ValueError):
    """A bad selection option (or ``--exclude-rules`` file); the message is one line."""


@attrs.frozen
class Exclusion:
    """One rule id (or name) to leave out, and where the user gave it (to say so)."""

    id: str  # as written
    where: str  # ``--exclude-rule``, ``--exclude-rules FILE line N``


@attrs.frozen
class Selection:
    """``--min-level`` (one of ``LEVELS``, None: any), ``--status`` (a subset of ``STATUSES``, None: any),
    ``--tag`` (None: any) and ``--exclude-tag`` (tags as given, a trailing ``*`` a prefix),
    ``--exclude-rule`` and ``--exclude-rules`` (the ``Exclusion`` read from both, and the files' paths)."""

    min_level: Optional[str] = None
    statuses: Optional[frozenset] = None
    tags: Optional[tuple] = None
    exclude_tags: tuple = ()
    exclusions: tuple = ()
    exclusion_files: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.option_names())

    def option_names(self) -> list:
        """The selection's options given, in a fixed order (``["--min-level", "--tag"]``)."""
        given = [("--min-level", self.min_level is not None), ("--status", self.statuses is not None),
                 ("--tag", self.tags is not None), ("--exclude-tag", bool(self.exclude_tags)),
                 ("--exclude-rule", any(e.where == "--exclude-rule" for e in self.exclusions)),
                 ("--exclude-rules", bool(self.exclusion_files))]
        return [name for name, present in given if present]

    def option_names_text(self) -> str:
        """The options given, named in a sentence (``--min-level, --tag and --exclude-rules``)."""
        names = self.option_names()
        return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)

    def options(self) -> str:
        """The options as a user writes them (``--min-level high --status stable,test --exclude-tag x``)."""
        given = [f"--min-level {self.min_level}"] if self.min_level is not None else []
        if self.statuses is not None:
            given.append("--status " + ",".join(s for s in STATUSES if s in self.statuses))
        given += [f"--tag {tag}" for tag in self.tags or ()] + [f"--exclude-tag {tag}" for tag in self.exclude_tags]
        given += [f"--exclude-rule {e.id}" for e in self.exclusions if e.where == "--exclude-rule"]
        return " ".join(given + [f"--exclude-rules {path}" for path in self.exclusion_files])

    @functools.cached_property
    def _excluded(self) -> dict:
        """Excluded id or name in lower case -> its ``Exclusion`` (the first given)."""
        found = {}
        for exclusion in self.exclusions:
            found.setdefault(exclusion.id.lower(), exclusion)
        return found

    def exclusion_of(self, rule) -> Optional[Exclusion]:
        """The ``Exclusion`` naming the rule or correlation (its metadata) by id, by name, or by the id its v1
        collection's rules share (``<id>#3`` names one of them); None: none does."""
        for key in _names_of(rule):
            if key.strip().lower() in self._excluded:
                return self._excluded[key.strip().lower()]
        return None

    def why_left_out(self, rule) -> Optional[str]:
        """Why the rule or correlation (its metadata) does not alert under this selection; None: it may."""
        exclusion = self.exclusion_of(rule)
        if exclusion is not None:
            written = exclusion.id.lower()
            what = "id" if rule.id.strip().lower() == written else \
                "name" if (getattr(rule, "name", None) or "").strip().lower() == written else "collection's id"
            return f"its {what} {exclusion.id} is excluded by {exclusion.where}"
        for tag in rule.tags:
            pattern = next((p for p in self.exclude_tags if _tag_matches(tag, p)), None)
            if pattern is not None:
                return f"its tag {tag} matches --exclude-tag {pattern}"
        if self.tags is not None and not any(_tag_matches(tag, p) for tag in rule.tags for p in self.tags):
            return ("none of its tags" if rule.tags else "it has no tag that") + " matches --tag " + \
                ", ".join(self.tags)
        level = (rule.level or "").strip().lower()
        if self.min_level is not None and level in LEVELS and LEVELS.index(level) < LEVELS.index(self.min_level):
            return f"level {level} is below --min-level {self.min_level}"
        status = (rule.status or "").strip().lower()
        if self.statuses is not None and status and status not in self.statuses:
            return f"status {status} is not in --status {','.join(s for s in STATUSES if s in self.statuses)}"
        return None


def _names_of(rule) -> tuple:
    """What an exclusion may name a rule or correlation (its metadata) by: its id, its name, its collection's id."""
    return tuple(key for key in (rule.id, getattr(rule, "name", None), getattr(rule, "collection", None)) if key)


def _tag_matches(tag: str, pattern: str) -> bool:
    """A rule's tag against a ``--tag``/``--exclude-tag`` as given: equal, or (``x*``) starting with it."""
    tag, pattern = tag.strip().lower(), pattern.lower()
    return tag.startswith(pattern[:-1]) if pattern.endswith("*") else tag == pattern


def parse_selection(min_level: Optional[str], statuses: Optional[str], tags: Optional[Sequence[str]] = None,
                    exclude_tags: Sequence[str] = (), exclude_rules: Sequence[str] = (),
                    exclusion_files: Sequence[str] = ()) -> Selection:
    """The options as given on the command line (the ``--exclude-rules`` files read); SelectionError
    names a bad value."""
    level = None
    if min_level is not None:
        level = min_level.strip().lower()
        if level not in LEVELS:
            raise SelectionError(f"--min-level {min_level!r} is not a Sigma level (one of {', '.join(LEVELS)})")
    kept = None
    if statuses is not None:
        names = [name.strip().lower() for name in statuses.split(",")]
        unknown = [name for name in names if name not in STATUSES]
        if not statuses.strip() or unknown:
            what = repr(unknown[0]) if unknown and unknown[0] else "an empty name"
            raise SelectionError(f"--status {statuses!r}: {what} is not a Sigma status (a comma-separated list of "
                                 f"{', '.join(STATUSES)})")
        kept = frozenset(names)
    exclusions = []
    for rule_id in exclude_rules:
        if not rule_id.strip():
            raise SelectionError(f"--exclude-rule {rule_id!r}: an empty rule id")
        exclusions.append(Exclusion(rule_id.strip(), "--exclude-rule"))
    for path in exclusion_files:
        exclusions += read_exclusions(path)
    return Selection(level, kept, None if tags is None else _tags("--tag", tags), _tags("--exclude-tag", exclude_tags),
                     tuple(exclusions), tuple(exclusion_files))


def _tags(option: str, given: Sequence[str]) -> tuple:
    """Tags as given (stripped), checked: none empty, and a ``*`` only at the end (elsewhere it would be a
    literal no Sigma tag holds: the option would keep or exclude nothing, in silence)."""
    for tag in given:
        if not tag.strip():
            raise SelectionError(f"{option} {tag!r}: an empty tag")
        if "*" in tag.strip()[:-1]:
            raise SelectionError(f"{option} {tag[:80]!r}: '*' only ends a tag (attack.t1059*: every tag it starts)")
    return tuple(tag.strip() for tag in given)


_COMMENT = re.compile(r"(?:^|\s)#")


def read_exclusions(path: str) -> list:
    """An ``--exclude-rules`` file: one rule id (or name) a line, the whole line: a rule with neither id nor
    name is known by its title, which may hold blanks; ``#`` starts a comment (at the start of the line or after
    a blank), blank lines are skipped."""
    try:
        data = read_bounded(path, "--exclude-rules file")
    except FileProblem as problem:
        raise SelectionError(str(problem)) from None
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a byte order mark (Windows editors)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SelectionError(f"--exclude-rules file {path} line {line} is not UTF-8 text") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        # a comment starts at a '#' that begins the line or follows a blank: a collection rule's id is <id>#<n>
        written = _COMMENT.split(line, 1)[0].strip()
        if written:
            found.append(Exclusion(written, f"--exclude-rules {path} line {number}"))
    return found


@attrs.frozen
class LeftOut:
    """A rule or correlation the selection left out and nothing kept reads: not loaded."""

    id: str
    title: str
    path: str
    why: str


def select(rule_set: RuleSet, selection: Selection) -> RuleSet:
    """The rule set that alerts as ``selection`` says (see the module's docstring).  The result
    carries ``selection``, ``deselected`` (id -> why, of the rules and correlations loaded quiet only
    to feed a kept correlation), ``left_out`` (id -> ``LeftOut``, those not loaded), ``unmatched``
    (the ``Exclusion`` that name no rule or correlation of the set) and ``unmatched_tags`` ((option,
    tag) of each ``--tag`` and ``--exclude-tag`` that no rule or correlation of the set has)."""
    if not selection:
        return rule_set
    documents = {c.spec.id: c for c in rule_set.correlations}
    metadata = {**{plan.rule.id: plan.rule for plan in rule_set}, **{i: c.rule for i, c in documents.items()}}
    why = {rule_id: selection.why_left_out(rule) for rule_id, rule in metadata.items()}
    kept = {rule_id for rule_id, reason in why.items() if reason is None}
    loaded, pending = set(kept), [rule_id for rule_id in kept if rule_id in documents]
    while pending:  # what kept correlations read, through correlations of correlations
        for target_id in (i for target in documents[pending.pop()].targets for i in target.ids):
            if target_id not in loaded:
                loaded.add(target_id)
                if target_id in documents:
                    pending.append(target_id)
    deselected = {rule_id: why[rule_id] for rule_id in loaded - kept}
    selected = RuleSet([plan for plan in rule_set if plan.rule.id in loaded],
                       [c for c in rule_set.correlations if c.spec.id in loaded],
                       set(rule_set.quiet & loaded) | set(deselected), rule_set.filters)
    selected.selection, selected.deselected = selection, deselected
    selected.left_out = {rule_id: LeftOut(rule_id, rule.title, rule.path, why[rule_id])
                         for rule_id, rule in metadata.items() if rule_id not in loaded}
    known = {key.strip().lower() for rule in metadata.values() for key in _names_of(rule)}
    selected.unmatched = tuple(e for e in selection.exclusions if e.id.lower() not in known)
    held = {tag for rule in metadata.values() for tag in rule.tags}
    given = [("--tag", tag) for tag in selection.tags or ()]
    given += [("--exclude-tag", tag) for tag in selection.exclude_tags]
    selected.unmatched_tags = tuple((option, pattern) for option, pattern in given
                                    if not any(_tag_matches(tag, pattern) for tag in held))
    return selected
