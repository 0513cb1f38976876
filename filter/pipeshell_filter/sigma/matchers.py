"""Matchers: how one key of a selection tests an event.

``FieldMatcher`` is ``field|modifiers: values`` (values OR'ed, AND'ed with ``|all``), with
the values tested together (``AnyOf``); ``FieldRefMatcher`` compares two fields of one
event (``|fieldref``); ``KeywordMatcher`` searches every string of the event.  Each
matcher builds its test once, as a plain function: a rule set runs hundreds of thousands
of them, so the per-call cost is the cost of a rule set.
"""

from __future__ import annotations

from typing import Optional

import attrs
import re2

from ..values import MISSING
from .modifiers import PatternError, _RegexTest, compile_re2, encode, escape, pcre_dollar


def _found(search):
    """``search`` (from ``compile_re2``) as a test of whether it finds anything in encoded text,
    calling RE2's own ``Match`` where the binding has it: the wrapper's generator and match
    object cost more than the search of a short text."""
    regexp = getattr(getattr(search, "__self__", None), "_regexp", None)
    match, anchor = getattr(regexp, "Match", None), getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if match is None or anchor is None:
        return lambda data: search(data) is not None
    return lambda data: match(anchor, data, 0, len(data))[0][0] >= 0


def _needs_non_ascii(test) -> bool:
    """Whether every folded text this (caseless) test holds on has a non-ASCII character:
    its needle, or one of the chunks a wildcard value must contain, has one."""
    chunks = getattr(test, "chunks", None)
    if chunks is not None:
        return any(not chunk.isascii() for chunk in chunks)
    return not test.needle.isascii()


def _regex_groups(tests: list) -> tuple:
    """``|re`` values of one matcher as few RE2 searches: ``(?flags:p1)|(?flags:p2)`` holds where
    one of them does (each pattern is a whole regex on its own, so its group closes it; flags
    stay inside it).  A group RE2 refuses is searched one by one, and so is a pattern with a
    ``\\Q``: its quote may run on past its group, to a ``\\E`` of a later pattern, and the whole still
    be a regex (of other text)."""
    by_flags = {}
    found = []
    for test in tests:
        if "\\Q" in test.needle:
            found.append(_found(test.search))
        else:
            by_flags.setdefault(test.flags, []).append(test)
    for flags, group in by_flags.items():
        if len(group) > 1:
            try:
                found.append(_found(compile_re2("|".join(f"(?{flags}:{pcre_dollar(t.needle, t.flags)})"
                                                        for t in group))))
                continue
            except PatternError:
                pass
        found += [_found(t.search) for t in group]
    return tuple(found)


class AnyOf:
    """A list of values tested at once on case-folded text: one set lookup for the
    equalities, one ``startswith``/``endswith`` call with a tuple, one RE2 search
    (linear in the text) for every ``contains`` and wildcard value.  A rule set's
    matcher often lists dozens of values; testing them one by one, each folding the
    text again, was most of the cost of a rule set.  Cased values are tested one by
    one on the original text, and so are the values of a group RE2 cannot take at
    once (too large: it is compiled in pieces first); ``|re`` values with the same
    flags are one search.  Values that all need a non-ASCII character (emoji,
    look-alike letters) are not looked for in ASCII text."""

    __slots__ = ("equals", "starts", "ends", "needles", "searches", "rest", "uses_texts", "only_equals", "_found",
                 "_regexes", "_non_ascii")

    # A few contains needles are quicker with ``in`` than with a pattern.
    FEW = 2
    # Values per RE2 pattern: RE2 refuses a program larger than its memory budget (8 MiB).
    CHUNK_CHARS = 1 << 16

    def __init__(self, tests: tuple):
        equals, starts, ends, needles, patterns, rest = set(), [], [], [], [], []
        starts_tests, ends_tests = [], []
        for test in tests:
            kind = getattr(test, "kind", None)
            if getattr(test, "cased", True) or isinstance(test, _RegexTest) or kind is None:
                rest.append(test)
            elif kind == "equals":
                equals.add(test.needle)
            elif kind == "startswith":
                starts.append(test.needle)
                starts_tests.append(test)
            elif kind == "endswith":
                ends.append(test.needle)
                ends_tests.append(test)
            elif kind == "contains":
                needles.append(test)
            else:  # a wildcard value: its own anchored pattern, on folded text
                patterns.append(test)
        tested = starts_tests + ends_tests + needles + patterns
        self._non_ascii = bool(tested) and all(_needs_non_ascii(t) for t in tested)
        if len(needles) <= self.FEW and not patterns:
            self.needles = tuple(t.needle for t in needles) or None
            searches = []
        else:
            self.needles = None
            searches = self._searches(needles + patterns, rest)
        self.equals = frozenset(equals)
        self.starts = tuple(starts) or None
        self.ends = tuple(ends) or None
        self.searches = tuple(searches) or None
        self._found = tuple(_found(search) for search in searches) or None
        self._regexes = _regex_groups([t for t in rest if isinstance(t, _RegexTest)]) or None
        self.rest = tuple(t for t in rest if not isinstance(t, _RegexTest))
        self.uses_texts = bool(self.rest or self._regexes)  # else ``holds`` reads the folded leaves only
        self.only_equals = not (self.uses_texts or self.starts or self.ends or self.needles or self._found)

    @classmethod
    def _searches(cls, tests: list, rest: list) -> list:
        """One RE2 search per group of values; a group RE2 refuses is tried in halves, then one by one."""
        searches, group, size = [], [], 0
        sources = [escape(t.needle) if t.kind == "contains" else t.needle for t in tests]
        groups = []
        for test, source in zip(tests, sources):
            if group and size + len(source) > cls.CHUNK_CHARS:
                groups.append(group)
                group, size = [], 0
            group.append((test, source))
            size += len(source) + 1
        if group:
            groups.append(group)
        while groups:
            group = groups.pop()
            try:
                searches.append(compile_re2("|".join(source for _, source in group)))
            except PatternError:
                if len(group) == 1:
                    rest.append(group[0][0])  # its own test (``in`` for contains)
                else:
                    groups += [group[:len(group) // 2], group[len(group) // 2:]]
        return searches

    def holds(self, folded: frozenset, texts: tuple) -> bool:
        if self.equals and not self.equals.isdisjoint(folded):
            return True
        starts, ends, needles, found = self.starts, self.ends, self.needles, self._found
        if starts or ends or needles or found:
            non_ascii = self._non_ascii
            for text in folded:
                if non_ascii and text.isascii():
                    continue
                if starts and text.startswith(starts):
                    return True
                if ends and text.endswith(ends):
                    return True
                if needles:
                    for needle in needles:
                        if needle in text:
                            return True
                if found:
                    data = encode(text)
                    for search in found:
                        if search(data):
                            return True
        regexes = self._regexes
        if regexes:
            for text in texts:
                data = encode(text)
                for search in regexes:
                    if search(data):
                        return True
        for test in self.rest:
            for text in texts:
                if test(text):
                    return True
        return False


@attrs.frozen
class FieldMatcher:
    """``field|modifiers: values`` -- values OR'ed (AND'ed with ``|all``)."""

    field: str
    modifiers: tuple
    tests: tuple  # StringTest-like callables; empty when only null is accepted
    require_all: bool
    accepts_null: bool  # a null rule value: field absent or JSON null
    exists: Optional[bool] = None  # the |exists modifier
    any_of: AnyOf = attrs.field(default=None, eq=False, repr=False)
    # |neq: ``tests`` are the values negated, to hold on every leaf: each of them (require_all: no value
    # matches), or one of them (|neq|all, the negation of |all: some value matches no leaf)
    neq: bool = attrs.field(default=False, kw_only=True)

    # Neither |exists, |all, |neq nor a null value: an absent or null field has no leaves, on
    # which AnyOf never holds, so the field's folded leaves are all there is to look up.
    plain: bool = attrs.field(init=False, default=False, eq=False, repr=False)
    test: object = attrs.field(init=False, default=None, eq=False, repr=False)  # ``matches``, specialised

    def __attrs_post_init__(self):
        if self.any_of is None and not self.require_all and not self.neq:
            object.__setattr__(self, "any_of", AnyOf(self.tests))
        object.__setattr__(self, "plain", self.exists is None and not self.require_all and not self.accepts_null
                           and not self.neq)
        object.__setattr__(self, "test", self._test())

    def _test(self):
        """``matches`` as one function: a plain list of caseless equalities (``EventID: 1``,
        ``OriginalFileName: [...]``) is one set test on the field's folded leaves."""
        if not self.plain:
            return self.matches
        field, any_of = self.field, self.any_of
        if any_of.only_equals:
            equals = any_of.equals
            return lambda view: not equals.isdisjoint(view.folded(field))
        single = _one_kind(field, any_of)
        if single is not None:
            return single
        holds = any_of.holds
        if any_of.uses_texts:
            return lambda view: holds(view.folded(field), view.leaves(field))
        return lambda view: holds(view.folded(field), ())

    def matches(self, view) -> bool:
        field = self.field
        if self.plain:
            any_of = self.any_of
            return any_of.holds(view.folded(field), view.leaves(field) if any_of.uses_texts else ())
        value = view.get(field)
        if self.exists is not None:
            return (value is not MISSING) == self.exists
        if value is MISSING or value is None:
            return self.accepts_null and not (self.require_all and self.tests)
        if self.neq:
            texts = view.leaves(field)
            if self.require_all:
                return all(test(t) for test in self.tests for t in texts)
            return any(all(test(t) for t in texts) for test in self.tests)
        if self.require_all:  # a null among the values (absent or null) cannot hold on a field that has a value
            texts = view.leaves(field)
            return all(any(test(t) for t in texts) for test in self.tests) and bool(self.tests) \
                and not self.accepts_null
        return self.any_of.holds(view.folded(field), view.leaves(field))

    def describe(self) -> str:
        mods = "".join(f"|{m}" for m in self.modifiers)
        return f"{self.field}{mods}"


def _one_kind(field: str, any_of: AnyOf):
    """``AnyOf.holds`` on one field, for values all of one kind (most matchers of a rule set:
    ``Image|endswith``, ``CommandLine|re``), without the tests of the kinds it has not got;
    None for the other matchers."""
    kinds = [name for name in ("equals", "starts", "ends", "needles", "_found", "_regexes", "rest")
             if getattr(any_of, name)]
    if len(kinds) != 1 or any_of._non_ascii:
        return None
    kind, values = kinds[0], getattr(any_of, kinds[0])
    if kind == "_regexes":  # on the original text: the folded leaves are not needed
        def regex(view) -> bool:
            for text in view.leaves(field):
                data = encode(text)
                for search in values:
                    if search(data):
                        return True
            return False
        return regex
    if kind == "starts":
        def starts(view) -> bool:
            for text in view.folded(field):
                if text.startswith(values):
                    return True
            return False
        return starts
    if kind == "ends":
        def ends(view) -> bool:
            for text in view.folded(field):
                if text.endswith(values):
                    return True
            return False
        return ends
    if kind == "needles":
        def contains(view) -> bool:
            for text in view.folded(field):
                for needle in values:
                    if needle in text:
                        return True
            return False
        return contains
    if kind == "_found":
        def search(view) -> bool:
            for text in view.folded(field):
                data = encode(text)
                for found in values:
                    if found(data):
                        return True
            return False
        return search
    return None


@attrs.frozen
class FieldRef:
    """One ``|fieldref`` value: the name of the other field, and how the two values compare."""

    mode: str  # equals, contains, startswith, endswith: how this field's value holds the other's
    needle: str  # the other field
    cased: bool

    @property
    def kind(self) -> str:
        return "fieldref" if self.mode == "equals" else f"fieldref {self.mode}"

    def holds(self, view, texts: tuple, folded: frozenset) -> Optional[bool]:
        """Whether a value of the field and one of the other compare; None when the other is absent."""
        other = view.get(self.needle)
        if other is MISSING or other is None:
            return None
        mine, theirs = (texts, view.leaves(self.needle)) if self.cased else (folded, view.folded(self.needle))
        if self.mode == "equals":
            return not set(mine).isdisjoint(theirs)
        if self.mode == "contains":
            return any(b in a for a in mine for b in theirs)
        if self.mode == "startswith":
            return any(a.startswith(b) for a in mine for b in theirs)
        return any(a.endswith(b) for a in mine for b in theirs)

    def literals(self) -> Optional[tuple]:
        return None  # the other field's value is only known per event


@attrs.frozen
class FieldRefMatcher:
    """``field|fieldref: other`` -- compares two fields of the same event (Sigma v2 ``fieldref``);
    OR-ed over the values (AND-ed with ``|all``).  With ``|neq`` the field must differ from every
    other field named.  An absent or null field on either side compares with nothing: no match."""

    field: str
    modifiers: tuple
    tests: tuple  # of FieldRef
    require_all: bool
    negate: bool

    def matches(self, view) -> bool:
        value = view.get(self.field)
        if value is MISSING or value is None:
            return False
        texts, folded = view.leaves(self.field), view.folded(self.field)
        for ref in self.tests:
            held = ref.holds(view, texts, folded)
            verdict = held is not None and held != self.negate
            if verdict and not self.require_all:
                return True
            if not verdict and self.require_all:
                return False
        return self.require_all

    def describe(self) -> str:
        mods = "".join(f"|{m}" for m in self.modifiers)
        return f"{self.field}{mods}"


@attrs.frozen
class KeywordMatcher:
    """A bare list of strings: any of them anywhere in the event."""

    tests: tuple
    any_of: AnyOf = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self):
        if self.any_of is None:
            object.__setattr__(self, "any_of", AnyOf(self.tests))

    def matches(self, view) -> bool:
        return self.any_of.holds(view.everything_folded(), view.everything())

    def describe(self) -> str:
        return "<keywords>"


@attrs.frozen
class KeywordKeyMatcher(KeywordMatcher):
    """Keywords written as a key without a field (``'|all': [...]``) inside a mapping, AND-ed with
    its other keys.  ``field`` is empty: the code that looks at a mapping's fields skips it."""

    field = ""
