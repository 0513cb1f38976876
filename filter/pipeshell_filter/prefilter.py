"""Raw-byte prefilter: which lines of a block can possibly match, decided before JSON parsing.

Almost no event in a fleet's stream is PowerShell named-pipe activity, so the
cost that matters is the cost of rejecting a line.  The compiled plan names, for
every selection, literals one of which each match must contain (after case
folding, see ``matching.fold``).  A line that holds none of them, in any case,
cannot match any selection and never reaches the JSON parser.

Why this is sound.  A matching event has a string whose case-folded form holds a
literal L.  ``needle(L)`` is a run of L made of printable ASCII that JSON writes
verbatim (no ``"``, ``\\`` or ``/``), so the folded string holds the needle too.
Each character of the needle comes from a character of the decoded string that
is either the same ASCII letter in some case (found by a caseless byte scan), or
a non-ASCII character that case-folds to ASCII (``ſ`` -> ``s``, ``K`` Kelvin ->
``k``, ``ﬁ`` -> ``fi``), or a JSON ``\\uXXXX`` escape of either.  The last two
are *triggers*: a line holding one goes to the full path.  Literals made only of
digits and number punctuation are unusable (``800`` may be written ``8e2``).

Two scanners give the same candidate lines: Hyperscan (caseless multi-literal
matching, when the wheel is installed) and a pure-Python one built on
``bytes.find`` over the lower-cased block.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional

try:  # the fast scanner is optional: the pure-Python one gives the same answers
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform's wheels
    hyperscan = None

# Characters JSON writers emit verbatim; a needle is a run of them.
_VERBATIM = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\", "/"}
_NUMBER_CHARS = frozenset("0123456789.+-e")


def needle(literal: str) -> Optional[bytes]:
    """What to look for in raw bytes for one folded literal; None when unusable."""
    if not literal or set(literal) <= _NUMBER_CHARS:
        return None
    runs = re.split("[^" + re.escape("".join(sorted(_VERBATIM))) + "]+", literal)
    best = max(runs, key=len)
    return best.encode("ascii") if best else None


def _folds_to_ascii_table() -> dict:
    """Non-ASCII code point -> the ASCII characters its case folding produces.

    Only the Basic Multilingual Plane has such characters (tests check this
    against every code point)."""
    table = {}
    for code in range(0x80, 0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        folded = chr(code).casefold()
        ascii_part = {ch for ch in folded if ch < "\x80"}
        if ascii_part:
            table[code] = frozenset(ascii_part)
    return table


_FOLDS_TO_ASCII = _folds_to_ascii_table()


def triggers(needles: Iterable[bytes]) -> List[bytes]:
    """Byte strings (lower case) that send a line to the full path for these needles."""
    chars = {chr(b) for n in needles for b in n}
    found = set()
    for ch in chars:  # a needle character written as a JSON escape, in either case
        for variant in {ch.lower(), ch.upper()}:
            found.add(b"\\u%04x" % ord(variant))
    for code, produced in _FOLDS_TO_ASCII.items():
        if produced & chars:  # a character that folds into a needle character
            found.add(b"\\u%04x" % code)
            found.add(chr(code).encode("utf-8"))
    return sorted(found)


class Prefilter:
    """Finds the candidate lines of a block of complete lines.

    ``spans(block)`` returns sorted, disjoint ``(start, end)`` pairs, each one line
    (``end`` at its newline or the block's end); every other line cannot match.
    """

    def __init__(self, needles: List[bytes], engine: str = "auto"):
        if not needles or any(not n for n in needles):
            raise ValueError("a prefilter needs non-empty needles")
        if engine not in ("auto", "hyperscan", "python"):
            raise ValueError(f"unknown prefilter engine {engine!r}")
        if engine == "hyperscan" and hyperscan is None:
            raise ValueError("the hyperscan package is not installed")
        self.needles = sorted({n.lower() for n in needles})
        self.triggers = triggers(self.needles)
        self.engine = "hyperscan" if engine != "python" and hyperscan is not None else "python"
        if self.engine == "hyperscan":
            self._compile_hyperscan()
        else:
            self._escapes = re.compile(b"|".join(re.escape(t) for t in self.triggers if t.startswith(b"\\u")))
            self._non_ascii = [t for t in self.triggers if not t.isascii()]

    def describe(self) -> str:
        shown = ", ".join(n.decode("ascii") for n in self.needles)
        return f"{self.engine}; lines holding none of [{shown}] (any case, no JSON escape or " \
               f"non-ASCII look-alike of their letters) skip JSON parsing"

    # ------------------------------------------------------------ scanners

    def _compile_hyperscan(self) -> None:
        patterns = self.needles + self.triggers
        expressions = [b"".join(b"\\x%02x" % b for b in p) for p in patterns]
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(expressions=expressions, ids=list(range(len(expressions))),
                         flags=[hyperscan.HS_FLAG_CASELESS] * len(expressions))
        self._scratch = hyperscan.Scratch(self._db)

    def _hits(self, block: bytes) -> List[int]:
        """Offsets (any order) at which a needle or trigger ends or starts."""
        hits = []
        if self.engine == "hyperscan":
            def on_match(_id, _start, end, _flags, _context):
                hits.append(end - 1)

            self._db.scan(block, match_event_handler=on_match, scratch=self._scratch)
            return hits
        lower = block.lower()
        for pattern in self.needles:
            at = lower.find(pattern)
            while at >= 0:
                hits.append(at)
                # the rest of this line is a candidate anyway: jump to the next line
                nl = lower.find(b"\n", at)
                if nl < 0:
                    break
                at = lower.find(pattern, nl)
        if b"\\u" in lower:
            hits.extend(m.start() for m in self._escapes.finditer(lower))
        if self._non_ascii and not lower.isascii():
            for pattern in self._non_ascii:
                at = lower.find(pattern)
                while at >= 0:
                    hits.append(at)
                    at = lower.find(pattern, at + 1)
        return hits

    def spans(self, block: bytes) -> List[tuple]:
        hits = self._hits(block)
        if not hits:
            return []
        hits.sort()
        spans = []
        end = -1
        for at in hits:
            if at < end:
                continue
            start = block.rfind(b"\n", 0, at) + 1
            end = block.find(b"\n", at)
            if end < 0:
                end = len(block)
            spans.append((start, end))
        return spans


def available_engines() -> List[str]:
    return (["hyperscan"] if hyperscan is not None else []) + ["python"]

