"""Vouching for a block of lines in the Fluent Bit modes without parsing each line.

With ``--non-json wrap`` or ``--fluentbit-time``, a line the prefilter rules out
still has to be known for a JSON object (Fluent Bit's stdin drops a whole read
around one that is not) and, framed, needs its own time.  Parsing every line
with ujson for that costs ten times what passing the block on does.  Here one
``msgspec`` call decodes a whole block against a schema made of the profiles'
detect and time paths: every other value is validated and skipped, never built.

A block is vouched for, and each of its lines is then what parsing it with
ujson would have found (a JSON object, with the same time), only when:

1. every line starts with ``{`` and ends with ``}``, nothing around;
2. the block is valid UTF-8 (msgspec does not check the bytes of a string it
   skips; ujson does);
3. msgspec reads exactly one value per line.  Values can span lines in its
   ``decode_lines``, but not here: a string cannot hold a raw newline, so a
   line's last ``}`` closes an object, and inside an unclosed value the next
   line's first ``{`` would be a syntax error.  Each line holds at least one
   value, so as many values as lines means one each, the whole line;
4. everything msgspec accepts, ujson accepts (``tests/test_skim.py`` checks it
   against ujson): msgspec is strict RFC 8259; no line nests 1024 deep,
   ujson's limit (msgspec's is Python's recursion limit up to 3.11, 1000 by
   default; else every line's opening brackets are counted); and the block
   holds no run of ``DIGIT_RUN`` digits: ujson refuses an integer of more
   digits than Python converts (``sys.get_int_max_str_digits``: 4300 by
   default, never under 640), which msgspec skips unread.

The time is then read from the decoded paths alone, as ``FieldResolver.time``
reads it from the parsed event: the first profile whose detect paths are all
there, then its first time path whose value parses (a test compares the two on
every collector shape).  The full parse also reads a nested time path from a
top-level key of its joined name, and an event its profiles' nested paths do not
place (the catch-all's) from keys holding dots (flattened ECS: ``winlog.event_id``,
``fields.lookup_flattened``): a block is not vouched for when a line has such a
time key (the schema names them), nor when a line reaches a catch-all profile and
the block holds a key with a dot (``DOTTED_KEY``, scanned for those blocks only).
A line that may carry an event's XML, whose time is its XML event's, never
reaches the skimmer when times are wanted: the prefilter makes it a suspect,
parsed alone (``prefilter.Prefilter.xml_alone``).  A block that is not vouched
for is left to the caller, line by line.  ``LineField`` uses the same checks for
``--line-field``: the text each forwarded record holds, for a whole block at once.
"""

from __future__ import annotations

import sys
from itertools import repeat
from operator import attrgetter
from typing import Any, Optional

import msgspec

from ..events.fields import FieldResolver, lookup
from ..events.timeparse import parse_time
from ..values import MISSING
from .frames import start_of, starts_of
from .prefilter import any_of

_RAW = msgspec.Raw
_UNSET = msgspec.UNSET


class _Node:
    """One key of the paths' trie: whether a time path ends here (its value is needed; where only a
    detect path ends, only its presence is), the keys below; ``name``: its field in the schema,
    ``raw``: the schema ends here (the value decoded for a time path, else kept raw, unread)."""

    def __init__(self):
        self.time = False
        self.children = {}
        self.name = None
        self.raw = False


def _flattened_keys(root: _Node, time_paths) -> dict:
    """Top-level nodes (presence only) for the joined names of the time paths of several keys, which
    ``fields.lookup_flattened`` reads where the nested path is missing: ``{"TimeCreated.SystemTime": ...}``.
    Added to ``root`` before its schema is made; a name that is a key of the paths already is left alone
    (no path's key holds a dot: ``parse_path`` splits there)."""
    found = {}
    for path in time_paths:
        name = ".".join(path)
        if len(path) > 1 and name not in root.children:
            found[name] = root.children[name] = _Node()
    return found


def _trie(time_paths, detect_paths) -> Optional[_Node]:
    root = _Node()
    for paths, time in ((detect_paths, False), (time_paths, True)):
        for path in paths:
            if not path or any(type(step) is not str for step in path):
                return None  # a list index: not a shape a schema of objects can follow
            node = root
            for step in path:
                node = node.children.setdefault(step, _Node())
            node.time = node.time or time
    return root


def _schema(node: _Node):
    """The Struct type of an object at ``node``: its keys as optional fields, the rest skipped."""
    fields = []
    for index, (key, child) in enumerate(node.children.items()):
        child.name = f"f{index}"
        child.raw = child.time or not child.children
        kind = Any if child.time else _RAW if child.raw else _schema(child)
        fields.append((child.name, kind, _UNSET))
    rename = {child.name: key for key, child in node.children.items()}
    # gc=False: these hold no cycles, and leaving them out of the collector's sight is 20 % of a decode
    return msgspec.defstruct("Skim", fields, rename=rename, gc=False)


def _step(root: _Node, path: tuple) -> tuple:
    """How to follow ``path`` in a decoded item: the fields down to where the schema stops (one
    ``attrgetter``; UNSET has no fields, so a path cut short raises AttributeError), and the rest
    of the path below a time path's end, in the value decoded there."""
    names, node = [], root
    for depth, step in enumerate(path):
        node = node.children[step]
        names.append(node.name)
        if node.raw:
            break
    return attrgetter(".".join(names)), tuple(path[depth + 1:])


def _plans(resolver: FieldResolver) -> list:
    """``resolver.time``'s way, as paths: ``(detect paths, time paths, catch-all)`` for each profile in the
    order tried (the last one's detect paths left out: it applies when none before it does); a catch-all
    (a profile detecting nothing, in ``--profile auto``) is where ``profile_for`` looks at dotted keys."""
    if resolver.time_path is not None:
        return [((), (resolver.time_path,), False)]
    profiles = resolver.profiles[:1] if resolver.fixed else resolver.profiles
    plans = [(() if resolver.fixed else tuple(profile.detect), tuple(profile.time),
              not resolver.fixed and not profile.detect) for profile in profiles]
    plans[-1] = ((), plans[-1][1], plans[-1][2])
    return plans


def _time_finder(plans: list, root: _Node, convert=parse_time):
    """``resolver.time`` over a decoded item: the first profile whose detect paths are all there
    (or the last; or the one ``--profile`` fixes), then its first time path whose value
    parses.  ``--time-field``: that path alone.  What it returns is ``convert`` of that value
    (``parse_time``: its nanoseconds; ``frames.start_of``: its frame start), which is None
    where the value is no time.  An item that reaches a catch-all plan puts a None in ``reached``."""
    plans = [(tuple(_step(root, path) for path in detect), tuple(_step(root, path) for path in times), catch_all)
             for detect, times, catch_all in plans]

    def time(item, reached: list) -> Optional[int]:  # each step written out here: this runs for every line
        for detect, times, catch_all in plans:
            for chain, rest in detect:
                try:
                    value = chain(item)
                except AttributeError:
                    break
                if value is _UNSET or rest and lookup(value, rest) is MISSING:
                    break
            else:
                if catch_all:
                    reached.append(None)
                for chain, rest in times:
                    try:
                        value = chain(item)
                    except AttributeError:
                        continue
                    if value is _UNSET or rest and (value := lookup(value, rest)) is MISSING:
                        continue
                    parsed = convert(value)
                    if parsed is not None:
                        return parsed
                return None
        return None  # pragma: no cover - the last plan always applies

    return time


def _column_finder(plans: list, root: _Node):
    """The values at the first time path of the profile every item of a block has, for the whole
    block in a few C-level steps (``map`` over the items): the common case, a collector's block of
    one shape.  ``values(items)`` is None when that is not so (shapes mixed, a path cut short, no
    value): the caller then goes item by item.  A profile applies to no item when the first key
    of one of its detect paths is missing in every item, and to every item when each of its detect
    paths has a value in every item (an attribute missing on the way raises AttributeError).  A
    catch-all plan's column puts a None in ``reached``, as ``_time_finder`` does."""
    steps = []
    for detect, times, catch_all in plans:
        chains = [_step(root, path) for path in detect]
        first = _step(root, times[0]) if times else None
        if first is None or first[1] or any(rest for _, rest in chains):
            steps.append(None)  # a path below a value decoded whole: item by item
        else:
            marker = attrgetter(root.children[detect[0][0]].name) if detect else None
            steps.append((marker, [chain for chain, _ in chains], first[0], catch_all))

    def values(items: list, reached: list) -> Optional[list]:
        for step in steps:
            if step is None:
                return None
            marker, detect, time, catch_all = step
            try:
                if marker is not None and list(map(marker, items)).count(_UNSET) == len(items):
                    continue  # this profile applies to none of them
                if any(_UNSET in list(map(chain, items)) for chain in detect):
                    return None  # to some of them
                found = list(map(time, items))
            except AttributeError:
                return None
            if _UNSET in found:
                return None
            if catch_all:
                reached.append(None)
            return found
        return None  # pragma: no cover - the last plan always applies

    return values


# A key holding a dot, written out or escaped (the escape anywhere, to be simple): ``profile_for`` takes an
# event no profile's nested paths place for a flattened shape by such keys.  From a dot in a string, escape
# pairs and other bytes lead to that string's closing quote, a key's when a colon follows.  A scan of its own
# (about 1 ms a MiB of Windows events, dense in dots), for the blocks with a line at a catch-all only.
DOTTED_KEY = (rb'\.(?:[^"\\\n]|\\.)*"[ \t\r]*:', rb"\\u002[eE]")
_NOT_OPENING = bytes(byte for byte in range(256) if byte not in b"[{\n")
# A run of digits this long keeps a block out: under Python's least integer digit limit (640), and
# long enough to be rare in logs and cheap to look for beside the line-shape patterns.
DIGIT_RUN = 512
UJSON_DEPTH = 1024  # ujson refuses a value nested this deep


def nesting_bounded() -> bool:
    """Whether msgspec stops short of ujson's depth limit by itself: up to Python 3.11 its limit
    is the recursion limit (later ones have a C recursion limit of their own, 1500 and more)."""
    return sys.version_info < (3, 12) and sys.getrecursionlimit() <= UJSON_DEPTH


def shallow(block: bytes) -> bool:
    """Whether each line has fewer opening brackets than ujson's depth limit, so nests less deep."""
    kept = block.translate(None, _NOT_OPENING)
    return len(kept) < UJSON_DEPTH or max(map(len, kept.split(b"\n"))) < UJSON_DEPTH


class ObjectLines:
    """``decode(block, lines)``: a block of whole lines decoded against ``schema`` (a Struct type),
    one item per line, when every line is a JSON object ujson reads (the module docstring's
    argument); else None.  ``refuse``: groups of byte patterns that keep a block out too (what the
    caller must see line by line), each group one scan (Hyperscan can be quicker on patterns apart);
    ``longest``: so does a line this long or longer."""

    def __init__(self, schema, refuse=(), longest: Optional[int] = None):
        self._decode = msgspec.json.Decoder(schema).decode_lines
        # a line that does not start with "{" or does not end with "}", or a long run of digits; then each group
        self._refused = [any_of([rb"\n[^{]", rb"[^}]\n", rb"[0-9]{%d}" % DIGIT_RUN])] + \
            [any_of(list(group)) for group in refuse]
        self._longest = longest
        self._window = None if longest is None else max(1, longest // 2)

    def decode(self, block: bytes, lines: int) -> Optional[list]:
        if not lines or block[:1] != b"{" or any(refused(block) for refused in self._refused):
            return None
        if self._window is not None and not self._short_lines(block):
            return None
        if not nesting_bounded() and not shallow(block):
            return None
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return None
        try:
            decoded = self._decode(block)
        except (msgspec.DecodeError, RecursionError):
            return None
        return decoded if len(decoded) == lines else None

    def _short_lines(self, block: bytes) -> bool:
        """Whether every line is shorter than ``longest``.  Quick when each is shorter than half of it:
        a line of ``2 * window - 1`` bytes or more holds a whole window-aligned stretch, so a newline
        in each such stretch means none is that long; else each line is measured."""
        window = self._window
        if all(block.find(b"\n", at, at + window) >= 0 for at in range(0, len(block) - window + 1, window)):
            return True
        return max(map(len, block.split(b"\n"))) < self._longest


class Skimmer:
    """``vouch(block, lines)``: the times of a block's lines, or None when it is not vouched for.

    ``need_time``: False when only the lines' being JSON objects matters (times come back None).
    ``refuse``, ``longest``: as ``ObjectLines`` takes them (numbers Fluent Bit cannot take, the
    record size limit)."""

    def __init__(self, resolver: FieldResolver, need_time: bool, refuse=(), longest: Optional[int] = None):
        time_paths = [resolver.time_path] if resolver.time_path else \
            [path for profile in resolver.profiles for path in profile.time]
        detect_paths = [] if resolver.time_path or resolver.fixed else \
            [path for profile in resolver.profiles for path in profile.detect]
        trie = _trie(time_paths, detect_paths) if need_time else _Node()
        self.available = trie is not None
        if trie is None:
            trie = _Node()
        flat = _flattened_keys(trie, time_paths) if need_time and self.available else {}
        self._objects = ObjectLines(_schema(trie), refuse, longest)
        self._time = self._start = self._column = None
        self._flat_keys = [attrgetter(node.name) for node in flat.values()]
        self._dotted = None
        if need_time and self.available:
            plans = _plans(resolver)
            self._time = _time_finder(plans, trie)
            self._start = _time_finder(plans, trie, start_of)
            self._column = _column_finder(plans, trie)
            if any(catch_all for _, _, catch_all in plans):
                self._dotted = any_of(list(DOTTED_KEY))

    def vouch(self, block: bytes, lines: int) -> Optional[list]:
        """``block``: ``lines`` whole lines, each ending in a newline.  Their event times in ns (None
        where a line has none) when every line is vouched for (see the module docstring), else None."""
        return self._each(block, lines, self._time)

    def starts(self, block: bytes, lines: int) -> Optional[list]:
        """As ``vouch``, but each line's frame start ``[<time>,`` (``frames.start_of``) instead of
        its time: what ``--fluentbit-time`` writes, without the number in between.  A block of one
        shape and one form of time has them made a column at a time (``frames.starts_of``)."""
        return self._each(block, lines, self._start, self._column)

    def _each(self, block: bytes, lines: int, find, column=None) -> Optional[list]:
        decoded = self._objects.decode(block, lines) if self.available else None
        if decoded is None:
            return None
        if find is None:
            return [None] * lines
        for flat_key in self._flat_keys:  # a time path's joined name as a key: read by the full parse alone
            if list(map(flat_key, decoded)).count(_UNSET) != lines:
                return None
        reached = []
        found = None
        if column is not None:
            values = column(decoded, reached)
            found = None if values is None else starts_of(values)
        if found is None:
            reached.clear()
            found = list(map(find, decoded, repeat(reached, lines)))
        if reached and self._dotted(block):  # a line at a catch-all, and a dotted key: maybe a flattened shape
            return None
        return found


def held_line(text) -> Optional[bytes]:
    """The line a record holds as text (``--line-field``), without the newline that ends it in Docker's
    json-file ``log`` (Fluent Bit's tail with its docker parser keeps it); None when it is no text, or
    holds another newline (no line can)."""
    if type(text) is not str:
        return None
    if text.endswith("\n"):
        text = text[:-1]
    return None if "\n" in text else text.encode("utf-8", "surrogatepass")


class LineField:
    """``--line-field``: ``unwrap(block, lines)`` is each line's text held in ``field``, as
    ``stream.unwrap_line`` gives it, for a whole block at once; None when the block is not all
    JSON objects ujson reads (then each line is unwrapped alone).  ``longest``: a block with a line
    this long or longer is left to ``unwrap_line`` too, which may refuse it (``stream.load_event``)."""

    def __init__(self, field: str, longest: Optional[int] = None):
        self._objects = ObjectLines(msgspec.defstruct("LineField", [("f0", Any, _UNSET)], rename={"f0": field},
                                                      gc=False), longest=longest)

    def unwrap(self, block: bytes, lines: int) -> Optional[bytes]:
        decoded = self._objects.decode(block, lines)
        if decoded is None:
            return None
        out = []
        for item, line in zip(decoded, block[:-1].split(b"\n")):
            held = held_line(item.f0)
            out.append(line if held is None else held)
        out.append(b"")
        return b"\n".join(out)
