"""Fluent Bit's own framed lines, read as the record they hold.

Fluent Bit writes a record with its time around it: ``[TIME, {record}]`` (its stdin input's form, and
``--fluentbit-time``'s output), ``[[TIME, {metadata}], {record}]`` (its event format since 2.1, which its
stdin takes too), and, from its ``file`` output in the default format, ``TAG: [TIME, {record}]``.  An
archive of such lines replayed through the filter is read record by record: the record is the event,
the frame's bytes around it are kept (``Frame.head``, ``Frame.tail``) so that a line goes on in its own
framing, and TIME (seconds, maybe with a fraction) is the event's time only where its profile finds none
of its own (``FramedEvent``: ``FieldResolver.time`` falls back to it).

A line is *framed* when it opens like a frame (``opening``); it is then a frame or a bad one, which the
filter diagnoses as it does any line it cannot read.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Optional

from .frames import in_range

_BLANK = b" \t\r\n"

# A Fluent Bit tag as its file output writes it before the frame: no blanks, quotes, brackets or colons.
_TAG = rb'[^\s"\[\]{}:]{1,512}: \['
_TAG_OPENING = re.compile(_TAG)
_NUMBER = rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_TIME = re.compile(rb"\[[ \t]*(\[[ \t]*)?(" + _NUMBER + rb")[ \t]*,")
# What the prefilter lets a framed line be ruled out by: it opens as a frame around a record (``[TIME, {``,
# ``[[TIME, {``, with a tag or not) and ends ``}]``.  Such a line holding none of the needles cannot match
# (its record is in it, byte for byte); one that is not a frame after all goes on as a ``{...}`` line with a
# syntax error does, undiagnosed (README, "Bad input").
_SHAPE = re.compile(rb"(?:" + _TAG + rb"|\[)[ \t]*(?:\[[ \t]*" + _NUMBER + rb"[ \t]*,[ \t]*\{|"
                    + _NUMBER + rb"[ \t]*,[ \t]*\{)")


class FramedEvent(dict):
    """An event that came in a frame, with the frame's time (ns): the event's time where it has none of
    its own by its profile (``FieldResolver.time``)."""

    __slots__ = ("frame_time",)

    def __init__(self, event: dict, frame_time: int):
        super().__init__(event)
        self.frame_time = frame_time


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
    """Seconds, as the frame's text writes them, in ns (exactly: a double loses the nanoseconds)."""
    try:
        ns = int(Decimal(number.decode("ascii")).scaleb(9))
    except (InvalidOperation, ValueError, OverflowError):
        return None
    return ns if in_range(ns) else None


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
    """The index after the JSON value at or after ``at`` (blanks first), in a text the JSON parser took."""
    while text[at] in _BLANK:
        at += 1
    first = text[at:at + 1]
    if first == b'"':
        return string_end(text, at)
    if first not in (b"{", b"["):
        while at < len(text) and text[at:at + 1] not in (b",", b"}", b"]") and text[at] not in _BLANK:
            at += 1
        return at
    depth = 0
    while True:
        char = text[at:at + 1]
        if char == b'"':
            at = string_end(text, at)
            continue
        if char in (b"{", b"["):
            depth += 1
        elif char in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
