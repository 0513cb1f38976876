"""Raw-byte prefilter: which lines of a block can possibly match, decided before JSON parsing.

Almost no event in a fleet's stream is PowerShell named-pipe activity, so the
cost that matters is the cost of rejecting a line.  The compiled plan names, for
every selection, literals one of which each match must contain (after case
folding, see ``matching.fold``).  A line that holds none of them, in any case,
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

Two scanners give the same candidate lines: Hyperscan (caseless multi-literal
matching, when the wheel is installed) and a pure-Python one built on ``bytes.find``
over the lower-cased block (and a regex over the block itself for escapes).
"""

from __future__ import annotations

import marshal
import os
import re
import threading
from bisect import bisect_right
from collections import Counter
from itertools import accumulate
from typing import Callable, Iterable, Iterator, List, Optional

from ..sigma import literals

try:  # CPython's own BLAKE2, without loading OpenSSL (as ``records``)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

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
    start = getattr(literal, "start", False) and _string_only(literal, str.startswith)
    end = getattr(literal, "end", False) and _string_only(literal, str.endswith)
    found = []
    for begin, run in runs:
        spelled = _json_spelling(run).encode("utf-8")
        found.append((b'"' if start and begin == 0 else b"") + spelled +
                     (b'"' if end and begin + len(run) == len(literal) else b""))
    return max(found, key=len, default=None)


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


def _hex(literal: bytes) -> bytes:
    """A literal as a Hyperscan pattern: every byte escaped."""
    return b"".join(b"\\x%02x" % b for b in literal)


class Prefilter:
    """Finds, in a range of whole lines, the candidates and the suspects.

    ``scan(block, start, end)`` returns two sorted lists of ``(start, end)`` line
    spans (``end`` at the line's newline): *candidates* may match and go to the
    full path; *suspects* cannot match but are not shaped like a JSON object
    (they do not start with ``{`` or end with ``}``), so they are parsed to be
    diagnosed.  Every other line is passed on untouched: its content (JSON
    syntax, UTF-8) is checked only when a line is parsed, as ``--no-prefilter``
    does for every line.  Checking UTF-8 here would cost a third of the scan,
    on every line, for lines whose bytes are passed on as they came.
    """

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
            hits, odd = self._scan_hyperscan(block, start, end)
        else:
            hits, odd = self._scan_python(block, start, end)
        if block[start] != 0x7B:  # '{': the first line's start has no newline before it
            odd.append(start)
        candidates = _lines_at(block, start, end, hits)
        taken = {span[0] for span in candidates}
        suspects = [span for span in _lines_at(block, start, end, odd) if span[0] not in taken]
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
        self._literal = [_hex(p) for p in self.needles + self._non_ascii]
        self._n_literal = len(self._literal)  # pattern ids: literals, then the escape, then the shape
        self._escape_pattern = escapes
        self._quick = self._database(rb"\\u")
        self._exact = None  # compiled when a thread first needs it: most inputs never do
        self._compiling = threading.Lock()
        self._local = threading.local()  # per thread: Hyperscan scratch spaces, the database in use

    def _database(self, escape: bytes):
        shape = [rb"\n[^{]", rb"[^}]\n"]  # a line that does not start with '{' / end with '}'
        expressions = self._literal + [escape] + shape
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(expressions=expressions, ids=list(range(len(expressions))),
                         flags=[hyperscan.HS_FLAG_CASELESS] * self._n_literal + [0] * (1 + len(shape)))
        return database

    def _exact_database(self):
        with self._compiling:
            if self._exact is None:
                self._exact = self._database(self._escape_pattern)
        return self._exact

    def _scan_hyperscan(self, block: bytes, start: int, end: int) -> tuple:
        hits, odd, escapes = [], [], []
        n_literal = self._n_literal

        def on_match(pattern, _from, to, _flags, _context):
            if pattern < n_literal:
                hits.append(start + to - 1)
            elif pattern == n_literal:
                escapes.append(start + to)
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
            if len(escapes) * self.DENSE > max(end - start, self.SAMPLE):
                local.exact_left = self.EXACT_RUN
        return hits, odd

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
        return hits, odd


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


class RuleIndex:
    """Which rules a candidate line can matter to, from one scan of the line.

    Each rule comes with a formula over literals (``sigma.literals``) that every
    event meeting one of its terms satisfies.  One scan finds which literals the
    line holds; the rules indexed under those (by their formula's ``cover``)
    have their whole formula checked against the same finds, so that
    ``selection_img and selection_cli`` needs a literal of each.  (Hyperscan's
    own logical combinations give the same answer, but evaluating thousands of
    them cost a millisecond a line.)  The soundness argument is the block scan's
    (``Prefilter``): a line holding a trigger (a JSON escape of a needle letter,
    a look-alike) goes to every rule, since its decoded text may hold any
    literal.  Rules ``always`` tried (no requirement) are in every answer.

    A route (the rules an event's log source and EventID leave it, ``among``) seen
    often gets a plan of its own (``_Route``), made from what its first lines held:
    its rules' formulas with the literals every one of those lines held taken as
    present (in a Sysmon process creation, ``sysmon``, ``commandline`` and thirty
    more, most of them key names), each rule indexed under the part of its formula
    those lines held least often, and a scan database of the literals that are left
    (under the same pattern ids) and of their triggers.  Both the scan and its
    reports cost by the literal.  It is as sound: a literal taken as present only
    ever brings in more rules, and the other literals, and their triggers, only ever
    bring in rules the route leaves out.
    """

    ROUTE_AFTER = 256  # lines of one route scanned with the shared database before it gets its own plan
    MAX_ROUTES = 64  # routes sampled (hostile input may invent more: those keep the shared database)

    def __init__(self, formulas: dict, engine: str = "auto", always=()):
        formulas = {rule: literals.either(f) if isinstance(f, list) else f for rule, f in formulas.items()}
        self.always = frozenset(always) | frozenset(rule for rule, f in formulas.items() if f is None)
        kept = {rule: f for rule, f in formulas.items() if f is not None}
        self.needles = sorted({found.lower() for f in kept.values() for found in literals.leaves(f)})
        if not self.needles:
            raise ValueError("a rule index needs needles")
        ids = {found: i for i, found in enumerate(self.needles)}
        self._numbered = {rule: _numbered(f, ids) for rule, f in kept.items()}  # literals as their ids
        self._formulas = {rule: _renamed(f) for rule, f in self._numbered.items()}
        longest = lambda cover: (-min(len(self.needles[at]) for at in cover), len(cover))  # as literals.cover
        indexed = _indexed(self._numbered, lambda f: _cheapest_cover(f, longest))
        self._by_literal = [indexed.get(at, _NONE) for at in range(len(self.needles))]
        self.engine = "hyperscan" if engine != "python" and hyperscan is not None else "python"
        _, self._escapes, self._non_ascii = trigger_patterns(self.needles)
        if self.engine == "hyperscan":
            self._routes = {}  # among -> its _Sample so far, its _Route, or _SHARED
            self._database = self._compile(range(len(self.needles)))
            self._local = threading.local()
        else:
            self._escape_re = re.compile(self._escapes)

    def rules_for(self, line: bytes, among: Optional[frozenset] = None) -> Optional[frozenset]:
        """The rules this line may matter to (of ``among``, when given: the rules its log
        source routes it to); None: every rule (a trigger was found)."""
        if self.engine == "python":
            present = self._python(line)
        else:
            route = self._routes.get(among) if among.__class__ is frozenset else None
            if route.__class__ is _Route:
                return route.rules_for(self._scan(line, route.database) if route.database else set(), among)
            present = self._scan(line, self._database)
            if route is not _SHARED and among.__class__ is frozenset:
                self._sampled(among, route, present)
        if present is None:
            return among
        always = self.always if among is None else self.always & among
        by_literal = self._by_literal
        # the rules indexed under the finds, gathered by set operations rather than rule by rule
        indexed = set().union(*[by_literal[at] for at in present])
        if among is not None:
            indexed &= among
        indexed -= always
        formulas = self._formulas
        found = [rule for rule in indexed if formulas[rule] is None or _holds(formulas[rule], present)]
        return always.union(found)

    def _python(self, line: bytes) -> Optional[set]:
        lower = line.lower()
        if (b"\\u" in lower and self._escape_re.search(line)) or \
                (not lower.isascii() and any(t in lower for t in self._non_ascii)):
            return None
        return {at for at, found in enumerate(self.needles) if found in lower}

    def _compile(self, literal_ids, route: bool = False):
        """A database of these literals (their ids as pattern ids) and their triggers (ids from
        ``len(self.needles)`` on).  The shared database spells the escapes as one pattern; a
        route's spells each as a caseless literal (``\\u00e9`` in any case, a few more lines
        sent to every rule), which Hyperscan compiles ten times faster beside few literals, and
        with nothing but literals, its literal compiler takes it (a quarter faster again)."""
        count = len(self.needles)
        literal_ids = list(literal_ids)
        caseless, exact = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH, hyperscan.HS_FLAG_SINGLEMATCH
        if route:
            found = triggers([self.needles[i] for i in literal_ids])
            marks = [(t, caseless if t.isascii() else exact) for t in found]
            expressions = [self.needles[i] for i in literal_ids] + [m for m, _ in marks]
        else:
            marks = [(self._escapes, exact)] + [(_hex(t), exact) for t in self._non_ascii]
            expressions = [_hex(self.needles[i]) for i in literal_ids] + [m for m, _ in marks]
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(expressions=expressions, ids=literal_ids + list(range(count, count + len(marks))),
                         flags=[caseless] * len(literal_ids) + [flag for _, flag in marks], literal=route)
        return database

    def _sampled(self, among: frozenset, sample, present: Optional[set]) -> None:
        """Count one line of a route scanned with the shared database; at ``ROUTE_AFTER`` lines
        the route gets its plan (or, while another process is making it, every ``POLL`` lines
        after, a look for it)."""
        if sample is None:
            if len(self._routes) >= self.MAX_ROUTES:
                return
            sample = self._routes[among] = _Sample()
        sample.lines += 1
        if present is not None:
            sample.clean += 1
            sample.counts.update(present)
        if sample.lines >= self.ROUTE_AFTER and (sample.lines - self.ROUTE_AFTER) % self.POLL == 0:
            self._routes[among] = self._shared_plan(among, sample) if self._plans_dir else \
                self._plan_route(among, sample)

    # Route plans shared by the processes of one run (``share_plans``): a process that finds
    # another making a plan scans with the shared database meanwhile, and makes its own only
    # if none has come after WAIT lines (the other process may have died).
    POLL = 64
    WAIT = 1 << 14

    def share_plans(self, directory: Optional[str]) -> None:
        """Route plans are written to, and read from, this directory (a private one, made for
        one run's worker processes, which sample the same stream): each route is planned and
        compiled once, not in every worker.  None: each process plans its own."""
        self._plans_dir = directory

    _plans_dir = None

    def _shared_plan(self, among: frozenset, sample: "_Sample"):
        """The route's plan from the shared directory, else made here and written there, else
        (another process is making it) the sample, to go on with."""
        if sample.path is None:
            sample.path = plan_path(self._plans_dir, among)
        path = sample.path
        found = _read_plan(path)
        if found is not None:
            return found
        try:
            os.close(os.open(path + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            if sample.lines < self.ROUTE_AFTER + self.WAIT:
                return sample
        except OSError:  # the directory is gone (the run is ending): plan alone
            pass
        plan = self._plan_route(among, sample)
        if plan.__class__ is _Route:
            _write_plan(path, plan)
        return plan

    def _plan_route(self, among: frozenset, sample: "_Sample"):
        """A route's ``_Route`` from its sample (see the class docstring); ``_SHARED`` when
        Hyperscan cannot compile its database."""
        every = {at for at, seen in sample.counts.items() if seen == sample.clean} if sample.clean else set()
        share = {at: seen / sample.clean for at, seen in sample.counts.items()}
        needles = self.needles

        def cost(cover: set) -> tuple:  # lines expected to hold one of them; then the old choice
            return sum(share.get(at, 0.0) for at in cover), -min(len(needles[at]) for at in cover), len(cover)

        always, numbered = set(self.always & among), {}
        for rule in among:
            formula = self._numbered.get(rule)
            if formula is None or rule in always:
                continue
            formula = _assuming(formula, every)
            if formula is None:  # holds on every line of the route as far as literals tell
                always.add(rule)
            else:
                numbered[rule] = formula
        scanned = sorted(set().union(*map(literals.leaves, numbered.values())))
        try:
            database = self._compile(scanned, route=True) if scanned else None
        except hyperscan.error:  # the shared database, which holds these literals, is never wrong
            return _SHARED
        by_literal = _indexed(numbered, lambda f: _cheapest_cover(f, cost))
        return _Route(database, frozenset(always), {at: by_literal.get(at, _NONE) for at in scanned},
                      {rule: _renamed(f) for rule, f in numbered.items()})

    def _scan(self, line: bytes, database) -> Optional[set]:
        """The ids of the literals ``database`` finds in the line; None at a trigger."""
        present = set()
        count = len(self.needles)

        def on_match(pattern, _from, _to, _flags, _context):
            present.add(pattern)
            return pattern >= count  # a trigger: every rule, stop scanning

        scratches = getattr(self._local, "scratches", None)
        if scratches is None:
            scratches = self._local.scratches = {}
        scratch = scratches.get(database)  # keyed by the database itself: it stays alive while its scratch does
        if scratch is None:
            scratch = scratches[database] = hyperscan.Scratch(database)
        try:
            database.scan(line, match_event_handler=on_match, scratch=scratch)
        except hyperscan.ScanTerminated:
            return None
        return present


class _Sample:
    """A route's lines so far: how many, how many without a trigger, and how many of those held
    each literal; and the file its plan is shared in."""

    __slots__ = ("lines", "clean", "counts", "path")

    def __init__(self):
        self.lines = self.clean = 0
        self.counts = Counter()
        self.path = None  # where the route's plan is shared (``RuleIndex.share_plans``)


_SHARED = "shared"  # a route that keeps the shared database (its own would not compile)


class _Route:
    """A frequent route's plan (``RuleIndex``): its scan database (None: nothing left to scan),
    the rules it always tries, its literals' rules, and its rules' formulas as ``_holds`` reads
    them, the literals taken as present gone from all four."""

    __slots__ = ("database", "always", "by_literal", "formulas")

    def __init__(self, database, always: frozenset, by_literal: dict, formulas: dict):
        self.database, self.always, self.by_literal, self.formulas = database, always, by_literal, formulas

    def rules_for(self, present: Optional[set], among: frozenset) -> frozenset:
        if present is None:
            return among
        by_literal, formulas = self.by_literal, self.formulas
        indexed = set().union(*[by_literal[at] for at in present])
        return self.always.union([rule for rule in indexed
                                  if formulas[rule] is None or _holds(formulas[rule], present)])


def plan_path(directory: str, among: frozenset) -> str:
    """The file a route's shared plan is written to: named by the route's rules."""
    return os.path.join(directory, blake2b(marshal.dumps(sorted(among)), digest_size=16).hexdigest())


def _write_plan(path: str, plan: _Route) -> None:
    """A route's plan, its database serialised by Hyperscan, into ``path`` (whole or not at all)."""
    data = marshal.dumps((hyperscan.dumpb(plan.database) if plan.database else None, plan.always,
                          plan.by_literal, plan.formulas))
    try:
        with open(f"{path}.{os.getpid()}", "wb") as out:
            out.write(data)
        os.replace(f"{path}.{os.getpid()}", path)
    except OSError:  # the directory is gone: the others plan their own
        pass


def _read_plan(path: str) -> Optional[_Route]:
    """The plan ``_write_plan`` wrote to ``path``; None while there is none (or it cannot be read)."""
    try:
        with open(path, "rb") as source:
            database, always, by_literal, formulas = marshal.loads(source.read())
        return _Route(hyperscan.loadb(database, hyperscan.HS_MODE_BLOCK) if database else None, always, by_literal,
                      formulas)
    except (OSError, ValueError, EOFError, TypeError, hyperscan.error):  # not there (yet)
        return None


def _numbered(formula, ids: dict):
    """A formula over needles with each literal replaced by its id in the index."""
    if not isinstance(formula, tuple):
        return ids[formula.lower()]
    return formula[0], tuple(_numbered(part, ids) for part in formula[1])


def _assuming(formula, present: set):
    """The formula with these literals taken as present: None when it then always holds."""
    if not isinstance(formula, tuple):
        return None if formula in present else formula
    op, parts = formula
    parts = [_assuming(part, present) for part in parts]
    return literals.both(parts) if op == literals.AND else literals.either(parts)


def _cheapest_cover(formula, cost) -> set:
    """``literals.cover`` with an AND keeping the part of least ``cost``."""
    if not isinstance(formula, tuple):
        return {formula}
    op, parts = formula
    covers = [_cheapest_cover(part, cost) for part in parts]
    return set().union(*covers) if op == literals.OR else min(covers, key=cost)


def _indexed(formulas: dict, cover) -> dict:
    """Literal id -> the rules indexed under it: those whose ``cover`` holds it."""
    by_literal = {}
    for rule, formula in formulas.items():
        for at in cover(formula):
            by_literal.setdefault(at, set()).add(rule)
    return {at: frozenset(rules) for at, rules in by_literal.items()}


_NONE = frozenset()


def _renamed(formula, top: bool = True):
    """A formula (over literal ids) in the form ``_holds`` reads: the literals of each AND / OR
    gathered in one set, so that a rule's check is a set operation or two.  None for a rule
    indexed under all its literals with nothing more to check (a literal, or an OR of
    literals: any find means it holds)."""
    if not isinstance(formula, tuple):
        return None if top else (literals.OR, frozenset((formula,)), ())
    op, parts = formula
    found = frozenset(part for part in parts if not isinstance(part, tuple))
    nested = tuple(_renamed(part, False) for part in parts if isinstance(part, tuple))
    if top and op == literals.OR and not nested:
        return None
    return op, found, nested


def _holds(formula: tuple, present: set) -> bool:
    op, found, nested = formula
    if op == literals.AND:
        if not found <= present:
            return False
        for part in nested:
            if not _holds(part, present):
                return False
        return True
    if not found.isdisjoint(present):
        return True
    for part in nested:
        if _holds(part, present):
            return True
    return False


def any_of(patterns: List[bytes], engine: str = "auto") -> Callable[[bytes], bool]:
    """A test of whether any of these patterns occurs in a byte string: one Hyperscan scan that
    stops at the first match, else (``engine="python"``, or no wheel) one ``re`` search over
    their alternation."""
    if hyperscan is None or engine == "python":
        return lambda data, search=re.compile(b"|".join(patterns)).search: search(data) is not None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=patterns, ids=list(range(len(patterns))),
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

