"""The plain runs of text every match of a regular expression contains.

A rule set's literal index (``sigma.literals``) can rule a rule out only by what
its values must hold; an ``|re`` value used to give nothing, so every regex rule
was tried on every event its log source let through (a third of the rules tried
per process-creation event).  ``Invoke-Obfuscation.*-Join`` holds
``Invoke-Obfuscation`` in every match: that is enough.

The pattern is read with the standard library's own regex parser: only what it
reads as a sequence of literal characters, outside any alternative, optional
part or character class, counts (a group repeated at least once gives its own
runs).  What it cannot read (RE2-only syntax such as ``\\z`` or ``\\x{...}``)
gives no run, which only means the rule is tried more often.  Where the two read
the same text differently the pattern gives no run either: RE2's POSIX classes
(``[[:digit:]]``), which Python reads as a class ending at the first ``]`` and
a literal ``]`` after it, a run no match holds.
"""

from __future__ import annotations

import re
import warnings

try:  # Python 3.11+: the parser moved inside the re package
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.9 and 3.10
    import sre_parse as _sre_parse

_LITERAL = _sre_parse.LITERAL
_SUBPATTERN = _sre_parse.SUBPATTERN
_REPEATS = (_sre_parse.MAX_REPEAT, _sre_parse.MIN_REPEAT)
_AT = _sre_parse.AT  # ^, $, \b: take no character, so a run goes on across them
# RE2's POSIX classes, written anywhere (an escaped bracket only makes this say so when not needed)
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")


def required_runs(pattern: str) -> list:
    """Runs of literal text (as written, not folded) that every match of ``pattern`` holds."""
    if _POSIX_CLASS.search(pattern):
        return []
    try:
        with warnings.catch_warnings():  # "possible nested set" and the like: not the user's concern
            warnings.simplefilter("ignore")
            parsed = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - any pattern the stdlib cannot read simply gives nothing
        return []
    runs, current = [], []

    def flush():
        if current:
            runs.append("".join(current))
            current.clear()

    def walk(items):
        for op, arg in items:
            if op is _LITERAL:
                current.append(chr(arg))
            elif op is _AT:
                continue
            elif op is _SUBPATTERN:
                walk(arg[-1])
            elif op in _REPEATS and arg[0] >= 1:
                flush()  # the repeated part occurs, but not next to what stands around it
                walk(arg[2])
                flush()
            else:  # a class, any character, an alternative, an optional part, a lookaround...
                flush()

    walk(parsed)
    flush()
    return runs
