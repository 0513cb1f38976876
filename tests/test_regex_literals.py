"""``required_runs`` is sound for RE2: every match RE2 finds holds every run it names.

The runs come from Python's regex parser, the matching from RE2, so the property builds
patterns from the syntax the two may read differently (POSIX classes, nested brackets,
escapes, repeats, alternatives, scoped case-insensitivity) together with a text each
must match, and checks the runs against the match RE2 itself reports.
"""

from __future__ import annotations

import re

import re2
from hypothesis import example, given, strategies as st

from pipeshell_filter.sigma.regex_literals import required_runs

_CHARS = "ab:]-[x1 "

# (pattern, a character it matches) for single-character parts, POSIX classes among them
_CLASSES = [
    ("[ab]", "a"), ("[^x]", "b"), (r"\d", "1"), (".", ":"), ("[[:digit:]]", "1"), ("[[:alpha:]x]", "x"),
    ("[[:^space:]]", "a"), ("[x[:digit:]]", "1"), ("[:digit:]", "d"), ("[]a]", "]"), ("[[a]", "["),
    ("[[:punct:]]", "-"), (r"[\]b]", "]"),
]


@st.composite
def _literal(draw):
    text = draw(st.text(alphabet=_CHARS, min_size=1, max_size=4))
    return re.escape(text), text


@st.composite
def _class(draw):
    return draw(st.sampled_from(_CLASSES))


def _parts(inner):
    @st.composite
    def alternative(draw):
        left, right = draw(inner), draw(inner)
        chosen = draw(st.sampled_from([left, right]))
        return f"(?:{left[0]}|{right[0]})", chosen[1]

    @st.composite
    def optional(draw):
        pattern, text = draw(inner)
        return f"(?:{pattern})?", text if draw(st.booleans()) else ""

    @st.composite
    def repeated(draw):
        pattern, text = draw(inner)
        low = draw(st.integers(0, 2))
        times = draw(st.integers(low, low + 2))
        return draw(st.sampled_from([f"(?:{pattern}){{{low},{low + 2}}}", f"(?:{pattern})+" if low else
                                     f"(?:{pattern})*"])), text * max(times, 1 if low else 0)

    @st.composite
    def sequence(draw):
        parts = draw(st.lists(inner, min_size=2, max_size=4))
        return "".join(p for p, _ in parts), "".join(t for _, t in parts)

    @st.composite
    def grouped(draw):
        pattern, text = draw(inner)
        return f"({pattern})", text

    return alternative() | optional() | repeated() | sequence() | grouped()


_PATTERNS = st.recursive(_literal() | _class(), _parts, max_leaves=8)


@st.composite
def _case(draw):
    """A pattern, a text it matches, and whether it was made case-insensitive."""
    pattern, text = draw(_PATTERNS)
    caseless = draw(st.booleans())
    if caseless:
        pattern = "(?i)" + pattern
        text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    return pattern, text, caseless


@given(_case())
@example(("foo[[:digit:]]bar", "foo1bar", False))  # a POSIX class: Python read a literal "]bar"
@example(("x[[:^space:]]y", "xay", False))
def test_every_match_holds_every_run(case):
    pattern, text, caseless = case
    compiled = re2.compile(pattern)
    found = compiled.search(text)
    assert found is not None, (pattern, text)  # the text was built to match
    matched = found.group(0)
    for run in required_runs(pattern):
        assert (run.casefold() in matched.casefold()) if caseless else (run in matched), (pattern, matched, run)


def test_plain_runs_are_found():
    """Not vacuous: runs outside any optional part, alternative or class are given."""
    assert "Invoke-Obfuscation" in required_runs(r"Invoke-Obfuscation.*-Join")
    assert required_runs(r"ab[[:digit:]]cd") == []  # read differently by Python: nothing, soundly
    assert set(required_runs(r"abc(?:x|y)def")) == {"abc", "def"}
