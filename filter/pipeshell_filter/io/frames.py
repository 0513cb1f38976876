"""Fluent Bit's ``[time, record]`` line form (``--fluentbit-time``): the time's text and the frames.

Fluent Bit's stdin input takes ``[<epoch seconds>.<nanoseconds>, {record}]`` as a record with that
time.  A line's frame start ``[<time>,`` is made from the time value the event holds
(``start_of``), or from a whole block's column of them at once (``starts_of``), so the common
form needs no number: the text of a value's second, which ``parse_time`` caches by its first 20
characters, is cached the same way here, and the fraction's digits are its nanoseconds.
"""

from __future__ import annotations

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
