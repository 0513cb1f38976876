"""Fluent Bit's frames around a record: written (``--fluentbit-time``) and read (its archives).

**Written.** Fluent Bit's stdin input takes ``[<epoch seconds>.<nanoseconds>, {record}]`` as a record
with that time.  A line's frame start ``[<time>,`` is made from the time value the event holds
(``start_of``), or from a whole block's column of them at once (``starts_of``), so the common
form needs no number: the text of a value's second, which ``parse_time`` caches by its first 20
characters, is cached the same way here, and the fraction's digits are its nanoseconds.

**Read.** Fluent Bit writes a record with its time around it: ``[TIME, {record}]`` (its stdin input's
form, and ``--fluentbit-time``'s output), ``[[TIME, {metadata}], {record}]`` (its event format since 2.1,
which its stdin takes too), and, from its ``file`` output in the default format, ``TAG: [TIME, {record}]``.
An archive of such lines replayed through the filter is read record by record: the record is the event,
the frame's bytes around it are kept (``Frame.head``, ``Frame.tail``) so that a line goes on in its own
framing, and TIME (seconds, maybe with a fraction) is the event's time only where its profile finds none
of its own (``events.fields.FramedEvent``: ``FieldResolver.time`` falls back to it), the event an XML in the
record holds included.  A line is *framed* when it opens like a frame (``opening``); it is then a frame or a
bad one, which the filter diagnoses as it does any line it cannot read.
"""

from __future__ import annotations

import re
from decimal import Decimal
from itertools import repeat
from operator import add, itemgetter
from typing import Optional

from ..events.timeparse import NS, parse_time

# "YYYY-MM-DDThh:mm:ss." -> b"[<its epoch seconds>.", for times of the form every Windows collector
# writes (``2026-11-02T08:00:00.2715820Z``) on or after 1970 (before, the fraction's text is not the
# nanoseconds' text); filled when such a time is first parsed.  The last few only, as for
# ``timeparse._SECONDS``: entries made during a flood pin its memory's arenas after it is gone.
_SECONDS_TEXT: dict = {}
_SECONDS_KEPT = 8


# Fluent Bit 5.1.1's stdin reads a frame's time as a double of unsigned 32-bit seconds: a time before
# 1970, or from 2106-02-07T06:28:14Z on, made it drop the record, or every record left in that read
# (measured on the real binary).  Such an event is framed with the clock, as one without a time.
END_NS = 4_294_967_293 * NS
OUT_OF_RANGE = b""  # ``start_of`` of a time Fluent Bit cannot take: not None, so no later path is tried


def in_range(ns: int) -> bool:
    """A time Fluent Bit takes in a frame."""
    return 0 <= ns < END_NS


def start_or_clock(ns: Optional[int], clock) -> bytes:
    """The frame start of a record at ``ns``, or at ``clock()`` when it has no time Fluent Bit takes."""
    return start_at(ns if ns is not None and in_range(ns) else clock())


def fluentbit_time(ns: int) -> bytes:
    """Epoch seconds with nanoseconds, as Fluent Bit's ``[time, record]`` form wants."""
    if ns < 0:
        return b"-" + fluentbit_time(-ns)
    return b"%d.%09d" % divmod(ns, NS)


def start_at(ns: int) -> bytes:
    """The frame start ``[<time>,`` of a record at ``ns``."""
    return b"[" + fluentbit_time(ns) + b","


def start_of(value) -> Optional[bytes]:
    """``start_at(parse_time(value))``, or None when ``value`` is not a time (``OUT_OF_RANGE`` when
    Fluent Bit cannot take it: the clock's, for the caller to make).  For the Windows form
    (date, time, a fraction of digits, ``Z``) the first 20 characters decide the seconds, as in
    ``parse_time``'s short cut; the fraction's first nine digits, padded, are the nanoseconds."""
    if value.__class__ is str and value[-1:] == "Z" and value[19:20] == ".":
        fraction = value[20:-1]
        if fraction.isdigit() and fraction.isascii():
            seconds = _SECONDS_TEXT.get(value[:20])
            if seconds is not None:
                return seconds + fraction[:9].ljust(9, "0").encode() + b","
            ns = parse_time(value)
            if ns is None:
                return None
            if not in_range(ns):
                return OUT_OF_RANGE
            if value[17:19] == "60":  # a leap second: its every fraction reads as one time, not kept
                return start_at(ns)
            if len(_SECONDS_TEXT) >= _SECONDS_KEPT:
                _SECONDS_TEXT.clear()
            _SECONDS_TEXT[value[:20]] = b"[%d." % (ns // NS)
            return start_at(ns)
    ns = parse_time(value)
    if ns is None:
        return None
    return start_at(ns) if in_range(ns) else OUT_OF_RANGE


_FIRST_20 = itemgetter(slice(0, 20))
_FRACTION = itemgetter(slice(20, -1))


def starts_of(values: list) -> Optional[list]:
    """``start_of`` of each value, for a block's column of times (``skim``) of the Windows form
    with one number of fraction digits (up to nine), in C-level steps over the whole column: the
    checks are on the values joined, every (length + 1)-th byte.  None when the column is not of
    that form, or one of its values is not a time Fluent Bit takes (each is then asked alone)."""
    first = values[0]
    if first.__class__ is not str or not 22 <= len(first) <= 30:
        return None
    try:
        joined = "\n".join(values).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    count, length = len(values), len(first)
    step = length + 1
    if len(joined) != count * step - 1 or joined.count(b"\n") != count - 1 or \
            joined[length::step] != b"\n" * (count - 1) or joined[19::step] != b"." * count or \
            joined[length - 1::step] != b"Z" * count:
        return None  # not all of one length, or a newline inside one, or not the form
    fractions = list(map(_FRACTION, joined.split(b"\n")))
    if not b"".join(fractions).isdigit():  # ASCII digits: bytes know no others
        return None
    known = _SECONDS_TEXT.get
    seconds = list(map(known, map(_FIRST_20, values)))
    if None in seconds:  # a second met for the first time: parsed once, as start_of would
        for index, text in enumerate(seconds):
            if text is None:
                second = values[index][:20]
                if second not in _SECONDS_TEXT:
                    start_of(values[index])
                seconds[index] = known(second)
        if None in seconds:
            return None
    return list(map(add, seconds, map(add, fractions, repeat(b"0" * (30 - length) + b","))))


def frame(lines: list, starts: list) -> Optional[bytes]:
    """``lines`` (without their newlines) as ``[time, record]`` records: ``starts`` gives each
    line's ``[<time>,``; all in a few calls, none per line.  None when they do not pair up (a file
    rewritten between a worker's read and the parent's)."""
    if len(starts) != len(lines):
        return None
    parts = [b"]\n"] * (3 * len(lines))
    parts[0::3] = starts
    parts[1::3] = lines
    return b"".join(parts)


# Reading: a framed line's record and time.
_BLANK = b" \t\r\n"

# A Fluent Bit tag as its file output writes it before the frame: no blanks, quotes, brackets or colons.
_TAG = rb'[^\s"\[\]{}:]{1,512}: \['
_TAG_OPENING = re.compile(_TAG)
_NUMBER = rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_TIME = re.compile(rb"\[[ \t]*(\[[ \t]*)?(" + _NUMBER + rb")[ \t]*,")
# What the prefilter lets a framed line be ruled out by: it opens as a frame around a record (``[TIME, {``,
# ``[[TIME, {``, with a tag or not) and ends ``}]``.  Such a line holding none of the needles cannot match
# (its record is in it, byte for byte); one that is not a frame after all goes on as a ``{...}`` line with a
# syntax error does, undiagnosed (README, "Bad input").  Not after a byte order mark, which the filter strips
# from a line and says so: as the start of a tag it would rule the line out undiagnosed.
_SHAPE = re.compile(rb"(?!\xef\xbb\xbf)(?:" + _TAG + rb"|\[)[ \t]*(?:\[[ \t]*" + _NUMBER + rb"[ \t]*,[ \t]*\{|"
                    + _NUMBER + rb"[ \t]*,[ \t]*\{)")


class Frame:
    """Where a framed line's record is: ``text[start:end]``, the frame's bytes ``head`` before it and
    ``tail`` after it; ``time``: the frame's TIME in ns (None when Fluent Bit could not have written it)."""

    __slots__ = ("start", "end", "time")

    def __init__(self, start: int, end: int, time: Optional[int]):
        self.start, self.end, self.time = start, end, time

    def head(self, text: bytes) -> bytes:
        return text[:self.start]

    def tail(self, text: bytes) -> bytes:
        return text[self.end:]


def opening(text: bytes) -> Optional[int]:
    """Where the JSON of a framed line starts (its ``[``: 0, or after ``TAG: ``); None when the line does
    not open like a frame (a JSON object's line, text)."""
    first = text[:1]
    if first == b"[":
        return 0
    if first == b"{" or not first:
        return None
    found = _TAG_OPENING.match(text)
    return None if found is None else found.end() - 1


def frame_of(text: bytes, at: int, value) -> Optional[Frame]:
    """The frame of a line whose JSON from ``at`` (``opening``) is ``value``; None when ``value`` is not a
    frame: ``[TIME, {record}]`` or ``[[TIME, {metadata}], {record}]``, TIME a number."""
    if value.__class__ is not list or len(value) != 2 or value[1].__class__ is not dict:
        return None
    first = value[0]
    if first.__class__ is list:
        if len(first) != 2 or first[1].__class__ is not dict:
            return None
        first = first[0]
    if first.__class__ not in (int, float) or first != first:  # not a bool, not NaN
        return None
    found = _TIME.match(text, at)
    if found is None:  # a number JSON spells otherwise than plainly (no JSON does): not a frame we read
        return None
    # the record is the list's last member: it ends at the last ``}``, and starts at the ``{`` that the
    # JSON before it (the time, or the metadata's list) is followed by
    end = len(text.rstrip(_BLANK)) - 1  # the list's ``]``
    end = len(text[:end].rstrip(_BLANK))
    start = found.end() if found.group(1) is None else text.index(b",", value_end(text, at + 1))
    start = text.index(b"{", start)
    return Frame(start, end, _seconds_ns(found.group(2)))


def _seconds_ns(number: bytes) -> Optional[int]:
    """Seconds, as the frame's text writes them, in ns (exactly: a double loses the nanoseconds).  A number
    of more digits before its point than any time in range is none before it is scaled: ``1e999999`` is
    beyond Decimal's range, and ``1e999990``'s integer took 21 s to make."""
    try:
        seconds = Decimal(number.decode("ascii"))
        if seconds.adjusted() >= _SECONDS_DIGITS:
            return None
        ns = int(seconds.scaleb(9))
    except (ArithmeticError, ValueError):  # decimal's signals are ArithmeticErrors
        return None
    return ns if in_range(ns) else None


_SECONDS_DIGITS = len(str(END_NS // NS))  # the digits before the point of the last time in range


def framed_shape(block: bytes, start: int, end: int) -> bool:
    """Whether the line ``block[start:end]`` is shaped like a frame around a record (``_SHAPE``)."""
    return end - start > 3 and block[end - 2:end] == b"}]" and _SHAPE.match(block, start, end) is not None


def string_end(text: bytes, at: int) -> int:
    """The index after the JSON string starting at ``at``."""
    at += 1
    while True:
        quote = text.index(b'"', at)
        backslashes = quote - at - len(text[at:quote].rstrip(b"\\"))
        if backslashes % 2 == 0:
            return quote + 1
        at = quote + 1


def value_end(text: bytes, at: int) -> int:
    """The index after the JSON value at or after ``at`` (blanks first), in a text the JSON parser took.
    From one bracket, brace or quote to the next by a regular expression: a byte at a time, a frame's
    metadata of 10 MB of blanks took 1.6 s (``frame_of``)."""
    at = _BLANKS.match(text, at).end()
    first = text[at:at + 1]
    if first == b'"':
        return string_end(text, at)
    if first not in (b"{", b"["):
        return _SCALAR_END.search(text, at).start()
    depth = 0
    while True:
        at = _STRUCTURE.search(text, at).start()
        char = text[at]
        if char == 0x22:  # '"'
            at = string_end(text, at)
            continue
        depth += 1 if char in b"{[" else -1
        at += 1
        if depth == 0:
            return at


_BLANKS = re.compile(rb"[ \t\r\n]*")
_SCALAR_END = re.compile(rb"[,}\] \t\r\n]|\Z")
_STRUCTURE = re.compile(rb'["{}\[\]]')
