"""Which rules of a rule set a line can matter to, from one Hyperscan scan of its raw bytes.

The block prefilter (``prefilter.Prefilter``) rules lines out for one rule or a few.  A rule
set of thousands of rules holds rules that no scan can rule out (a ``|fieldref``, a filter
alone), so every line is parsed; what a scan still decides is which rules to try on it:
``RuleIndex.rules_for`` names them from the literals the line holds and each rule's literal
formula (``sigma.literals``), with the soundness argument of ``prefilter`` (needles, triggers).
A frequent route (the rules an event's log source and EventID leave it) gets a plan of its own,
and the worker processes of one run share those plans through a directory.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from typing import Optional

from ..events.xml_event import carries_xml, hides_text
from ..sigma import literals
from . import database_cache
from .database_cache import blake2b
from .prefilter import anchored, hex_literal, hyperscan, trigger_patterns, triggers, unanchored


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
    literal; so does a line whose event is XML that may spell text otherwise
    (``events.xml_event.hides_text``).  In any other line carrying XML a value ends
    at ``</Data>`` or an attribute's quote, not at a JSON string's: its literals are
    looked for without the quotes that anchor some of them (``cmd.exe"`` as
    ``cmd.exe``), a scan of its own (``_xml_scan``).  Rules ``always`` tried (no
    requirement) are in every answer.

    A route (the rules an event's log source and EventID leave it, ``among``) seen
    often gets a plan of its own (``_Route``), made from what its first lines held:
    its rules' formulas with the literals every one of those lines held taken as
    present (in a Sysmon process creation, ``sysmon``, ``commandline`` and thirty
    more, most of them key names), each rule indexed under the part of its formula
    those lines held least often, the literals that only narrow (no rule is indexed
    under them) and that those lines held at all often taken as present as well, and
    a scan database of the literals that are left (under the same pattern ids) and of
    their triggers.  Both the scan and its reports cost by the literal.  It is as
    sound: a literal taken as present only ever brings in more rules, and the other
    literals, and their triggers, only ever bring in rules the route leaves out.
    """

    ROUTE_AFTER = 256  # lines of one route scanned with the shared database before it gets its own plan
    NARROWING_SHARE = 0.01  # of a route's first lines: a literal only narrowing, held that often, is not scanned
    MAX_ROUTES = 64  # routes sampled (hostile input may invent more: those keep the shared database)

    def __init__(self, formulas: dict, engine: str = "auto", always=()):
        formulas = {rule: literals.either(f) if isinstance(f, list) else f for rule, f in formulas.items()}
        self.always = frozenset(always) | frozenset(rule for rule, f in formulas.items() if f is None)
        kept = {rule: f for rule, f in formulas.items() if f is not None}
        self.needles = sorted({found.lower() for f in kept.values() for found in literals.leaves(f)})
        if not self.needles:
            raise ValueError("a rule index needs needles")
        self.xml_anchored = anchored(self.needles)  # a line carrying XML is scanned apart (``_xml_scan``)
        ids = {found: i for i, found in enumerate(self.needles)}
        self._numbered = {rule: _numbered(f, ids) for rule, f in kept.items()}  # literals as their ids
        self._formulas = {rule: _renamed(f) for rule, f in self._numbered.items()}
        longest = lambda cover: (-min(len(self.needles[at]) for at in cover), len(cover))  # as literals.cover
        indexed = _indexed(self._numbered, lambda f: _cheapest_cover(f, longest))
        self._by_literal = [indexed.get(at, _NONE) for at in range(len(self.needles))]
        self.engine = "hyperscan" if engine != "python" and hyperscan is not None else "python"
        _, self._escapes, self._non_ascii = trigger_patterns(self.needles)
        self._spelled = {}  # a spelling of the needles (``_spelled_scan``) -> (its needles, its database)
        if self.engine == "hyperscan":
            self._routes = {}  # among -> its _Sample so far, its _Route, or _SHARED
            self._database = self._compile(range(len(self.needles)))
            self._local = threading.local()
        else:
            self._escape_re = re.compile(self._escapes)

    def rules_for(self, line: bytes, among: Optional[frozenset] = None) -> Optional[frozenset]:
        """The rules this line may matter to (of ``among``, when given: the rules its log
        source routes it to); None: every rule (a trigger was found)."""
        xml = carries_xml(line)  # its event is read from XML: that may hold text its bytes do not
        if xml and hides_text(line):
            return among
        if xml and self.xml_anchored:
            present = self._xml_scan(line)
        elif self.engine == "python":
            present = self._python(line, self.needles)
        else:
            route = self._routes.get(among) if among.__class__ is frozenset else None
            if route.__class__ is _Route:
                return route.rules_for(self._scan(line, route.database) if route.database else set(), among)
            present = self._scan(line, self._database)
            if route is not _SHARED and among.__class__ is frozenset:
                self._sampled(among, route, present)
        return self._rules_holding(present, among)

    def rules_for_text(self, line: bytes, among: Optional[frozenset] = None) -> Optional[frozenset]:
        """``rules_for`` a line that is not JSON but an event's XML (Sysmon for Linux's syslog file):
        its text is the XML's as it is, but for an entity reference and the whitespace an attribute's
        value loses (such a line goes to every rule), so each literal is looked for as its own text
        (``text_spelling``: no JSON escape, no anchoring quote), and a trigger (a look-alike of a needle
        character; text that looks like a JSON escape, too, though none is read here) sends the line to
        every rule, as in JSON."""
        if b"&" in line or b"\t" in line or b"\r" in line:
            return among
        return self._rules_holding(self._spelled_scan(line, text_spelling), among)

    def _rules_holding(self, present: Optional[set], among: Optional[frozenset]) -> Optional[frozenset]:
        """The rules (of ``among``) whose literal formula the literals ``present`` satisfy; None: a trigger."""
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

    def _python(self, line: bytes, needles: list) -> Optional[set]:
        lower = line.lower()
        if (b"\\u" in lower and self._escape_re.search(line)) or \
                (not lower.isascii() and any(t in lower for t in self._non_ascii)):
            return None
        return {at for at, found in enumerate(needles) if found in lower}

    def _xml_scan(self, line: bytes) -> Optional[set]:
        """The literals a line carrying XML holds, each looked for without the JSON quote that anchors
        it (``prefilter.unanchored``): as sound, a literal found so being one found anchored or more, and
        no longer every rule for every such line with SigmaHQ's rules (whose ``endswith`` values are
        anchored), a thousand tried on each Render_Event_As_XML record."""
        return self._spelled_scan(line, unanchored)

    def _spelled_scan(self, line: bytes, spelling) -> Optional[set]:
        """The literals the line holds, each looked for as ``spelling`` writes its needle (ids as the
        needles'), with the triggers of the needles (None at one).  Each spelling's needles and database
        are made at the first line that needs them: a stream without such lines never pays for them."""
        made = self._spelled.get(spelling)
        if made is None:
            needles = [spelling(found) for found in self.needles]
            database = self._compile(range(len(needles)), needles=needles) if self.engine == "hyperscan" else None
            made = self._spelled[spelling] = (needles, database)
        needles, database = made
        return self._python(line, needles) if database is None else self._scan(line, database)

    def _compile(self, literal_ids, route: bool = False, needles: Optional[list] = None):
        """A database of these literals (their ids as pattern ids) and their triggers (ids from
        ``len(self.needles)`` on).  The shared database spells the escapes as one pattern; a
        route's spells each as a caseless literal (``\\u00e9`` in any case, a few more lines
        sent to every rule), which Hyperscan compiles ten times faster beside few literals, and
        with nothing but literals, its literal compiler takes it (a quarter faster again)."""
        needles = self.needles if needles is None else needles
        count = len(needles)
        literal_ids = list(literal_ids)
        caseless, exact = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH, hyperscan.HS_FLAG_SINGLEMATCH
        if route:
            found = triggers([needles[i] for i in literal_ids])
            marks = [(t, caseless if t.isascii() else exact) for t in found]
            expressions = [needles[i] for i in literal_ids] + [m for m, _ in marks]
        else:
            marks = [(self._escapes, exact)] + [(hex_literal(t), exact) for t in self._non_ascii]
            expressions = [hex_literal(needles[i]) for i in literal_ids] + [m for m, _ in marks]
        return database_cache.compiled(expressions, literal_ids + list(range(count, count + len(marks))),
                                       [caseless] * len(literal_ids) + [flag for _, flag in marks], literal=route)

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

    @contextlib.contextmanager
    def plans_shared(self):
        """``share_plans`` through a private directory for as long as the block runs (a run whose
        worker processes are forked inside it), removed after; the directories of runs killed
        before they could remove theirs go first.  Without a temporary directory, each process
        plans its own."""
        try:
            _remove_stale_plans()
            directory = tempfile.mkdtemp(prefix=f"{PLANS_PREFIX}{os.getpid()}-")
        except OSError:
            yield
            return
        self.share_plans(directory)
        try:
            yield
        finally:
            self.share_plans(None)
            shutil.rmtree(directory, ignore_errors=True)

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
        by_literal = _indexed(numbered, lambda f: _cheapest_cover(f, cost))
        # A literal no rule is indexed under only narrows a rule found by another; one that many
        # lines hold narrows little and costs a report on each of them: taken as present too.
        narrowing = set().union(*map(literals.leaves, numbered.values())) - set(by_literal)
        common = {at for at in narrowing if share.get(at, 0.0) >= self.NARROWING_SHARE}
        numbered = {rule: _assuming(formula, common) for rule, formula in numbered.items()}
        scanned = sorted(set().union(*map(literals.leaves, numbered.values())))
        try:
            database = self._compile(scanned, route=True) if scanned else None
        except hyperscan.error:  # the shared database, which holds these literals, is never wrong
            return _SHARED
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


def text_spelling(found: bytes) -> bytes:
    """A needle as text that is not JSON holds it: its JSON escapes (``\\\\``, ``\\"``) read, the quotes
    that anchor it to a JSON string dropped (an unescaped quote is only ever one)."""
    out, at = bytearray(), 0
    while at < len(found):
        byte = found[at]
        if byte == 0x5C and at + 1 < len(found):  # a backslash: the escaped byte
            out.append(found[at + 1])
            at += 2
            continue
        if byte != 0x22:
            out.append(byte)
        at += 1
    return bytes(out)


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
        if not present:  # four lines in ten: nothing found, nothing to gather
            return self.always
        by_literal, formulas = self.by_literal, self.formulas
        indexed = set().union(*[by_literal[at] for at in present])
        return self.always.union([rule for rule in indexed
                                  if formulas[rule] is None or _holds(formulas[rule], present)])


PLANS_PREFIX = "pipeshell-filter-plans-"  # then the run's process id (``RuleIndex.plans_shared``)


def _remove_stale_plans() -> None:
    """The shared-plans directories of runs that were killed before they could remove theirs
    (a few megabytes each): those whose process is gone."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        if not name.startswith(PLANS_PREFIX):
            continue
        pid = name[len(PLANS_PREFIX):].split("-", 1)[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except (ValueError, OSError):  # not ours to judge, or alive under another user
            pass


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
