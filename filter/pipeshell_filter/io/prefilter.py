"""Raw-byte prefilter: which lines of a block can possibly match, decided before JSON parsing.

Almost no event in a fleet's stream is PowerShell named-pipe activity, so the
cost that matters is the cost of rejecting a line.  The compiled plan names, for
every selection, literals one of which each match must contain (after case
folding, see ``values.fold``).  A line that holds none of them, in any case,
cannot match any selection and never reaches the JSON parser.

Why this is sound.  A matching event has a string whose case-folded form holds a
literal L.  ``needle(L)`` is a run of L made of printable ASCII other than ``/``
and of *caseless* non-ASCII characters (no other character folds to anything
holding them: ``—``, ``ˣ``, emoji; ``é`` is not one, ``É`` folds to it), in the
one spelling JSON has for each of its characters besides a ``\\u`` escape:
itself (UTF-8 beyond ASCII), or ``\\\\`` for a backslash and ``\\"`` for a quote
(``/`` may be written ``\\/`` too, so runs stop there).  So the raw line holds the
needle.  Each character of the needle comes from a character of the decoded
string that is either the same character (an ASCII letter in some case, found
by a caseless byte scan), or a non-ASCII character that case-folds to ASCII
(``ſ`` -> ``s``, ``K`` Kelvin -> ``k``, ``ﬁ`` -> ``fi``), or a JSON ``\\uXXXX``
escape of either (of its first surrogate beyond the BMP).  The last two are
*triggers*: a line holding one goes to the full path.  Literals made only of
digits and number punctuation are unusable (``800`` may be written ``8e2``),
unless no number's text can hold them (``127.0.0.1``: two dots); so is any part
of ``-inf``, the text of a number too large for a float (``1e400``).

A JSON escape is ``\\u`` (lower case: JSON has no ``\\U``) and four hex digits
in either case; only escapes of a needle character or of a look-alike count.

A line that carries an event's XML in a text (``events.xml_event``: Sysmon for Linux, Render_Event_As_XML) is read as
that XML's event, whose values XML decoding may have changed: a line that also holds an ``&`` (an
entity reference) or whitespace an attribute value loses, in any JSON spelling
(``xml_event.hides_text``), goes to the full path too; and since a value there ends at ``</Data>``, not at
a JSON string's quote, a needle anchored by one (``cmd.exe"``) is looked for in such a line without it.

Two scanners give the same candidate lines: Hyperscan (caseless multi-literal
matching, when the wheel is installed) and a pure-Python one built on ``bytes.find``
over the lower-cased block (and a regex over the block itself for escapes).
"""

from __future__ import annotations

import functools
import re
import threading
from bisect import bisect_right
from itertools import accumulate
from typing import Callable, Iterable, Iterator, List, Optional

from ..events.xml_event import MARKS, carries_xml, hides_text
from . import database_cache
from .frames import framed_shape


try:  # the fast scanner is optional: the pure-Python one gives the same answers
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform's wheels
    hyperscan = None

# A line's verdict (``Prefilter.judge``): passed on untouched, parsed as a possible
# match, or parsed to be diagnosed (not shaped like a JSON object).
SKIP, CANDIDATE, SUSPECT = 0, 1, 2

_NUMBER_CHARS = frozenset("0123456789.+-e")


def needle(literal: str) -> Optional[bytes]:
    """What to look for in raw bytes for one folded literal; None when unusable.
    ``C:\\Windows\\cmd.exe`` is looked for as ``c:\\\\windows\\\\cmd.exe``: the whole
    path, not one of its parts, since most lines hold a ``windows``.  A literal that ends (starts)
    the text it matches in (``sigma.literals.Anchored``) is looked for with the JSON string's
    closing (opening) quote when its last (first) run reaches its end (start): ``cmd.exe"``."""
    if not literal or (set(literal) <= _NUMBER_CHARS and literal.count(".") < 2) or literal in "-inf":
        return None
    runs = _runs(literal)
    start = getattr(literal, "start", False) and _string_only(literal, str.startswith)
    end = getattr(literal, "end", False) and _string_only(literal, str.endswith)
    found = []
    for begin, run in runs:
        spelled = _json_spelling(run).encode("utf-8")
        found.append((b'"' if start and begin == 0 else b"") + spelled +
                     (b'"' if end and begin + len(run) == len(literal) else b""))
    return max(found, key=len, default=None)


_PRINTABLE_RUN = re.compile(r"[ -.0-~]+")  # printable ASCII but the slash, which JSON may escape (``\/``)


def _runs(literal: str) -> list:
    """``(start, text)`` of each longest run of characters JSON spells one way (``_one_way``); a
    regular expression for ASCII text (a loop over the characters took 0.3 s of the start-up with
    SigmaHQ's Windows rules)."""
    if literal.isascii():
        return [(found.start(), found.group()) for found in _PRINTABLE_RUN.finditer(literal)]
    runs, run, begin = [], [], 0
    for at, ch in enumerate(literal):
        if _one_way(ch):
            if not run:
                begin = at
            run.append(ch)
        elif run:
            runs.append((begin, "".join(run)))
            run = []
    if run:
        runs.append((begin, "".join(run)))
    return runs


# The texts of JSON values that are not strings, as a rule compares them (no quotes around them
# in the line): true, false, and numbers (digits and number punctuation, nan, inf).
_UNQUOTED = ("true", "false", "nan", "inf", "-inf")


def _string_only(literal: str, holds) -> bool:
    """Whether only a JSON string's text can start (end) with ``literal`` (``holds``):
    the text of a boolean or a number cannot."""
    return not set(literal) <= _NUMBER_CHARS and not any(holds(text, literal) for text in _UNQUOTED)


def _one_way(ch: str) -> bool:
    """Whether JSON spells the character one way besides a ``\\u`` escape, and only it folds to it."""
    if ch < "\x80":
        return "\x20" <= ch <= "\x7e" and ch != "/"
    return caseless(ch)


def caseless(ch: str) -> bool:
    """A non-ASCII character that has no case and that no other character folds into: a folded
    text holds it only where the text itself did.  (Not a surrogate: JSON has none raw.)"""
    return ch.casefold() == ch == ch.upper() == ch.lower() and ch not in FOLD_PARTS_WITHOUT_CASE \
        and not "\ud800" <= ch <= "\udfff"


# Characters with no case of their own that are part of another character's case folding
# (``ŉ`` folds to ``ʼn``; ``ǰ`` to ``j`` and a combining caron).  A test checks this list
# against every code point of the running Python.
FOLD_PARTS_WITHOUT_CASE = "\u02bc\u02be\u0300\u0301\u0307\u0308\u030a\u030c\u0313\u0331\u0342"


def _json_spelling(run: str) -> str:
    return run.replace("\\", "\\\\").replace('"', '\\"')


# The non-ASCII characters whose full case folding contains ASCII (Unicode 14-15:
# sharp s, dotted I, long s, the Kelvin sign, the f/s ligatures, ...).  A test
# checks this list against every code point of the running Python.
FOLDS_TO_ASCII = ("\u00df\u0130\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
                  "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06")


def triggers(needles: Iterable[bytes]) -> List[bytes]:
    """Byte strings (lower case) that send a line to the full path for these needles."""
    chars = {ch for n in needles for ch in n.decode("utf-8")}
    found = set()
    for ch in chars:  # a needle character written as a JSON escape, in either case
        for variant in {ch.lower(), ch.upper()}:
            found.add(_escape(variant))
    for ch in FOLDS_TO_ASCII:
        if set(ch.casefold()) & chars:  # a character that folds into a needle character
            found.add(b"\\u%04x" % ord(ch))
            found.add(ch.encode("utf-8"))
    return sorted(found)


def _escape(ch: str) -> bytes:
    """A character's JSON escape, lower-case hex; beyond the BMP, that of its first surrogate
    (every escape of it starts so)."""
    code = ord(ch)
    return b"\\u%04x" % (code if code < 0x10000 else 0xD800 + ((code - 0x10000) >> 10))


def trigger_patterns(needles: Iterable[bytes]) -> tuple:
    """``(escape tails, escape pattern, non-ASCII triggers)`` of these needles: the four hex
    digits of each ``\\u`` trigger, all of them as one pattern with a literal prefix (as
    separate literals they cost 3x in Hyperscan), and the look-alikes as raw bytes."""
    found = triggers(needles)
    tails = sorted({t[2:] for t in found if t.startswith(b"\\u")})
    return tails, rb"\\u(?i:" + b"|".join(tails) + b")", [t for t in found if not t.isascii()]


_ASCII = bytes(range(0x80))


def hex_literal(literal: bytes) -> bytes:
    """A literal as a Hyperscan pattern: every byte escaped."""
    return b"".join(b"\\x%02x" % b for b in literal)


class Prefilter:
    """Finds, in a range of whole lines, the candidates and the suspects.

    ``scan(block, start, end)`` returns two sorted lists of ``(start, end)`` line
    spans (``end`` at the line's newline): *candidates* may match and go to the
    full path; *suspects* cannot match but are not shaped like a JSON object
    (they do not start with ``{`` or end with ``}``) nor like a Fluent Bit frame
    around one (``frames.framed_shape``), so they are parsed to be diagnosed.
    Every other line is passed on untouched: its content (JSON syntax, UTF-8)
    is checked only when a line is parsed, as ``--no-prefilter`` does for every line.  Checking UTF-8
    here would cost a third of the scan, on every line, for lines whose bytes are passed on as they came.
    """

    # Set when a line's time is wanted (``--fluentbit-time``, a match stage's heartbeats): a line that may
    # carry an event's XML is a suspect too, parsed alone, its time its XML's, and the blocks of the lines
    # ruled out, which a skimmer reads at their records' times, hold none.
    xml_alone = False

    def __init__(self, needles: List[bytes], engine: str = "auto"):
        if not needles or any(not n for n in needles):
            raise ValueError("a prefilter needs non-empty needles")
        if engine not in ("auto", "hyperscan", "python"):
            raise ValueError(f"unknown prefilter engine {engine!r}")
        if engine == "hyperscan" and hyperscan is None:
            raise ValueError("the hyperscan package is not installed")
        self.needles = sorted({n.lower() for n in needles})
        self.engine = "hyperscan" if engine != "python" and hyperscan is not None else "python"
        tails, escapes, self._non_ascii = trigger_patterns(self.needles)
        self._escape_tails = frozenset(tails)
        # with anchored needles, a line carrying XML is looked at for them unanchored (``_xml_candidates``)
        self._xml_needles = [unanchored(n) for n in self.needles] if anchored(self.needles) else None
        if self._xml_needles is not None and len(self._xml_needles) > XML_NEEDLES_JUDGED:
            self._xml_needles = ()  # each such line a candidate
        if self.engine == "hyperscan":
            self._compile_hyperscan(escapes)
        else:
            self._escapes = re.compile(escapes)

    def spans(self, block: bytes) -> List[tuple]:
        """The candidate lines of a block of whole lines."""
        return self.scan(block, 0, len(block))[0]

    def judge(self, lines: List[bytes]) -> List[int]:
        """A verdict for each of these lines (without their newlines), from one scan of
        them all: lines that come one by one (files, EVTX records) are scanned in batches,
        since a scan call costs more than a short line's scanning."""
        if not lines:
            return []
        block = b"\n".join(lines) + b"\n"
        starts = list(accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
        verdicts = [SKIP] * len(lines)
        candidates, suspects = self.scan(block, 0, len(block))
        for spans, verdict in ((suspects, SUSPECT), (candidates, CANDIDATE)):
            for span_start, _ in spans:  # a line holding a newline of its own gets the verdict of any part
                verdicts[bisect_right(starts, span_start) - 1] = verdict
        return verdicts

    def scan(self, block: bytes, start: int, end: int) -> tuple:
        if start >= end:
            return [], []
        if self.engine == "hyperscan":
            hits, odd, alone = self._scan_hyperscan(block, start, end)
        else:
            hits, odd, alone = self._scan_python(block, start, end)
        if block[start] != 0x7B:  # '{': the first line's start has no newline before it
            odd.append(start)
        candidates = _lines_at(block, start, end, hits)
        taken = {span[0] for span in candidates}
        # a line in a Fluent Bit frame (``frames``) is shaped as one around a record: ruled out as an object is
        suspects = [span for span in _lines_at(block, start, end, odd)
                    if span[0] not in taken and not framed_shape(block, *span)]
        if alone:
            suspects = sorted(set(suspects).union(span for span in _lines_at(block, start, end, alone)
                                                  if span[0] not in taken))
        return candidates, suspects

    # ------------------------------------------------------------ scanners

    # Two Hyperscan databases find the same lines and differ in how they find escapes.
    # The quick one reports every "\\u" and leaves its four hex digits to Python:
    # nearly free while "\\u" is rare, but each report is a callback (about 1 us).  The
    # exact one spells the escapes out, which costs about a third of the whole scan
    # whatever the input.  A thread scans with the quick one, and after a block dense
    # in "\\u" (Windows paths like ...\\user32.dll) with the exact one for a while.
    DENSE = 4096  # bytes per "\\u" below which the exact database is the cheaper
    EXACT_RUN = 16  # blocks scanned with the exact database before the quick one is tried again
    SAMPLE = 1 << 16  # a small item (one line) does not decide alone

    def _compile_hyperscan(self, escapes: bytes) -> None:
        self._literal = [hex_literal(p) for p in self.needles + self._non_ascii]
        self._n_literal = len(self._literal)  # pattern ids: literals, the escape, the XML mark, the shape
        self._escape_pattern = b"(?:" + escapes + rb")|\\u003[cC]Event"  # its lines go to the full path
        self._quick = self._database(rb"\\u")
        self._exact = None  # compiled when a thread first needs it: most inputs never do
        self._compiling = threading.Lock()
        self._local = threading.local()  # per thread: Hyperscan scratch spaces, the database in use

    def _database(self, escape: bytes):
        shape = [rb"\n[^{]", rb"[^}]\n"]  # a line that does not start with '{' / end with '}'
        # ``<E`` (the lines that may carry XML, judged in Python): a longer literal, ``<Event`` or the
        # escaped spellings, made the whole scan 12-70 % slower; the escaped ones come with ``\\u``.
        expressions = self._literal + [escape, b"<E"] + shape
        return database_cache.compiled(expressions, list(range(len(expressions))),
                                       [hyperscan.HS_FLAG_CASELESS] * self._n_literal + [0] * (2 + len(shape)))

    def _exact_database(self):
        with self._compiling:
            if self._exact is None:
                self._exact = self._database(self._escape_pattern)
        return self._exact

    def _scan_hyperscan(self, block: bytes, start: int, end: int) -> tuple:
        hits, odd, escapes, marks = [], [], [], []
        n_literal = self._n_literal

        def on_match(pattern, _from, to, _flags, _context):
            if pattern < n_literal:
                hits.append(start + to - 1)
            elif pattern == n_literal:
                escapes.append(start + to)
            elif pattern == n_literal + 1:  # a line that may carry XML: judged below
                marks.append(start + to - 1)
            else:
                odd.append(start + to - 1)

        local = self._local
        if not hasattr(local, "exact_left"):
            local.quick, local.exact, local.exact_left = hyperscan.Scratch(self._quick), None, 0
        exact = local.exact_left > 0
        if exact and local.exact is None:
            local.exact = hyperscan.Scratch(self._exact_database())
        database, scratch = (self._exact, local.exact) if exact else (self._quick, local.quick)
        # Hyperscan releases the GIL while it scans
        database.scan(memoryview(block)[start:end], match_event_handler=on_match, scratch=scratch)
        if exact:
            local.exact_left -= 1
            hits.extend(at - 1 for at in escapes)
        else:  # the four bytes after "\\u" are inside the line: a line ends with a newline
            tails = self._escape_tails
            hits.extend(at - 1 for at in escapes if block[at:at + 4].lower() in tails)
            marks.extend(at for at in escapes if block[at:at + 9] in _ESCAPED_MARKS)
            if len(escapes) * self.DENSE > max(end - start, self.SAMPLE):
                local.exact_left = self.EXACT_RUN
        if marks:
            found, carrying = _xml_candidates(block, start, end, marks, self._xml_needles)
            hits.extend(found)
            if self.xml_alone:
                return hits, odd, carrying
        return hits, odd, ()

    def _scan_python(self, block: bytes, start: int, end: int) -> tuple:
        lower = block[start:end].lower()
        hits = []
        for pattern in self.needles:
            at = lower.find(pattern)
            while at >= 0:
                hits.append(start + at)
                nl = lower.find(b"\n", at)  # the line is a candidate anyway: go on at the next line
                at = lower.find(pattern, nl) if nl >= 0 else -1
        if b"\\u" in lower:
            hits.extend(m.start() for m in self._escapes.finditer(block, start, end))
        marks = [at for mark in MARKS for at in _all_at(block, mark, start, end)]
        carrying = []
        if marks:
            found, carrying = _xml_candidates(block, start, end, marks, self._xml_needles)
            hits.extend(found)
        if self._non_ascii and not lower.isascii():
            rest = lower.translate(None, _ASCII)  # the non-ASCII bytes only: a cheap first look
            for pattern in self._non_ascii:
                if pattern in rest:
                    at = lower.find(pattern)
                    while at >= 0:
                        hits.append(start + at)
                        at = lower.find(pattern, at + 1)
        odd = []
        lines = lower.count(b"\n")
        if lower.count(b"}\n{") != lines - 1 or not lower.endswith(b"}\n"):
            odd = [start + at for at in _odd_lines(lower)]
        return hits, odd, carrying if self.xml_alone else ()


def anchored(needles) -> bool:
    """Whether a needle is looked for with a JSON string's quote (``needle``): XML's values end otherwise."""
    return any(n.startswith(b'"') or n.endswith(b'"') for n in needles)


def unanchored(found: bytes) -> bytes:
    """A needle without the quotes ``needle`` puts around a literal that starts or ends its text: a piece
    of it, so found wherever it is, in XML too (a needle of a literal's own ``\\"`` loses a byte more)."""
    return found[found.startswith(b'"'):len(found) - found.endswith(b'"')] or found


# Up to this many needles, a line carrying XML is judged by looking for each without its anchoring
# quotes (``unanchored``); with more, every such line is a candidate (a rule set's index then judges it).
XML_NEEDLES_JUDGED = 64


_ESCAPED_MARKS = {mark[2:] for mark in MARKS if mark.startswith(b"\\u")}  # after the scan's ``\\u``


def _all_at(block: bytes, text: bytes, start: int, end: int) -> Iterator[int]:
    at = block.find(text, start, end)
    while at >= 0:
        yield at
        at = block.find(text, at + 1, end)


def _xml_candidates(block: bytes, start: int, end: int, marks: List[int], unanchored_needles) -> tuple:
    """Of the lines of ``block[start:end]`` holding an XML mark (at the offsets ``marks``), an offset in
    each that goes to the full path: those that ``hides_text``, and with anchored needles (None: there are
    none) those holding one without its quotes, as a value in XML ends at ``</Data>``, not at a JSON quote
    (``()``: too many to look for each, every such line); and an offset in each that carries XML at all
    (``Prefilter.xml_alone``).  Each line is looked for once, at its first mark: a search back from every
    mark (a line of ``<E`` repeated) took time quadratic in the line's length, 21 s for a line of 2 MiB."""
    found, carrying, judged_to = [], [], start  # the lines before ``judged_to`` are judged
    for at in sorted(marks):
        if at < judged_to:
            continue
        line_start = block.rfind(b"\n", start, at) + 1 or start
        line_end = block.find(b"\n", at, end)
        line_end = end if line_end < 0 else line_end
        line = block[line_start:line_end]
        if carries_xml(line):
            carrying.append(at)
            if unanchored_needles == () or hides_text(line) or unanchored_needles is not None \
                    and _holds_any(line.lower(), unanchored_needles):
                found.append(at)
        judged_to = line_end + 1
    return found, carrying


def _holds_any(lower: bytes, needles) -> bool:
    return any(found in lower for found in needles)


def _odd_lines(lines: bytes) -> Iterator[int]:
    """Start offsets of the lines that do not start with '{' and end with '}'."""
    position = 0
    while position < len(lines):
        nl = lines.find(b"\n", position)
        if not (lines.startswith(b"{", position) and nl > position and lines[nl - 1] == 0x7D):
            yield position
        position = nl + 1


def _lines_at(block: bytes, start: int, end: int, offsets: List[int]) -> List[tuple]:
    """The distinct lines holding these offsets, as sorted ``(start, end)`` spans."""
    spans = []
    line_end = -1
    for at in sorted(offsets):
        if at <= line_end:
            continue
        line_start = max(block.rfind(b"\n", start, at) + 1, start)
        line_end = block.find(b"\n", at, end)
        if line_end < 0:
            line_end = end
        spans.append((line_start, line_end))
    return spans


def any_of(patterns: List[bytes], engine: str = "auto") -> Callable[[bytes], bool]:
    """A test of whether any of these patterns occurs in a byte string: one Hyperscan scan that
    stops at the first match, else (``engine="python"``, or no wheel) one ``re`` search over
    their alternation.  Made once per process for the same patterns: a Fluent Bit mode's skimmer
    compiles six such databases (90 ms), and a match stage with heartbeats makes its skimmer twice."""
    return _any_of(tuple(patterns), engine)


@functools.lru_cache(maxsize=32)
def _any_of(patterns: tuple, engine: str) -> Callable[[bytes], bool]:
    if hyperscan is None or engine == "python":
        return lambda data, search=re.compile(b"|".join(patterns)).search: search(data) is not None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=list(patterns), ids=list(range(len(patterns))),
                     flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(patterns))
    local = threading.local()

    def stop(*_):
        return True

    def found(data) -> bool:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hyperscan.Scratch(database)
        try:
            database.scan(data, match_event_handler=stop, scratch=scratch)
        except hyperscan.ScanTerminated:
            return True
        return False
    return found


def ends_of(patterns: List[bytes], engine: str = "auto") -> Callable[[bytes], List[int]]:
    """Where any of these patterns ends in a byte string (offsets just past each match, sorted,
    maybe repeated): one Hyperscan scan reporting every match, else (``engine="python"``, or no
    wheel) ``re`` over their alternation, which finds at least the match ends of each place Hyperscan
    does (enough to mark the lines that hold one)."""
    if hyperscan is None or engine == "python":
        search = re.compile(b"|".join(patterns))
        return lambda data: [match.end() for match in search.finditer(data)]
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=patterns, ids=list(range(len(patterns))), flags=[0] * len(patterns))
    local = threading.local()

    def ends(data) -> List[int]:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hyperscan.Scratch(database)
        found = []
        database.scan(data, match_event_handler=lambda _id, _start, end, _flags, _context: found.append(end),
                      scratch=scratch)
        found.sort()
        return found
    return ends


def available_engines() -> List[str]:
    return (["hyperscan"] if hyperscan is not None else []) + ["python"]

