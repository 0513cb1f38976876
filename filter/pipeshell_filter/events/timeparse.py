"""Event time: parse the timestamp formats Windows collectors write, to integer nanoseconds (UTC).

Accepted strings: ISO 8601 / RFC 3339 with up to 9 fractional digits (more are
truncated), ``T`` or a space between date and time, ``Z`` or an offset
(``+02:00``, ``+0200``, or space-separated as Fluent Bit writes it:
``2021-06-03 15:06:00 +0200``).  A time with no zone (NXLog's
``2021-06-03 13:06:00``) is taken as UTC: the writer's zone is unknown.

Numbers are Unix epoch seconds, milli-, micro- or nanoseconds, told by their size:
each unit reads 2001-09-09 to year 5138 (seconds from 1970), and a number between
two units' ranges, or past the last, is no time.  A float is read as the decimal it prints as, so
``1622725213.093305`` is exactly ...093305000 ns, not its binary approximation.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import re
from decimal import Decimal
from typing import Optional

# Matched against the stripped text: a ``\s*`` on either side of the optional zone made a run of
# spaces not followed by the end cost quadratic time (60,000 of them in a time field: 15 s).
# ASCII: RFC 3339's digits are 0-9 (``\d`` alone takes any script's, and int() reads them: ``١``, ``３``).
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?"
    r"\s*(?:([Zz])|([+-])(\d\d):?(\d\d))?", re.ASCII
)

NS = 1_000_000_000
# Times a record can carry: years 1 to 9999, as RFC 3339 writes them.  A time that leaves this range
# once its zone is applied (0001-01-01T00:00:00+01:00) is no time.
EARLIEST = -62135596800 * NS  # 0001-01-01T00:00:00Z
LATEST = 253402300800 * NS - 1  # 9999-12-31T23:59:59.999999999Z


# "YYYY-MM-DDThh:mm:ss." -> its epoch seconds, for times of the form every Windows collector writes
# (``2026-11-02T08:00:00.2715820Z``): filled by the full parse, read by the short cut in
# ``parse_time``.  An event stream moves through few distinct seconds at a time: the last few
# are enough (96 % of the bench corpus's times).  Never a leap second's: its fraction is not added.
# Few on purpose: each entry is two small objects that live on, and made during a flood, each pins
# the 1 MB arena it sits in after the flood's memory is given back (65,536 of them kept 156 MB resident
# after a 90,000-host flood, 56 MB now).
_SECONDS: dict = {}
_SECONDS_KEPT = 8


def parse_time(value) -> Optional[int]:
    """Nanoseconds since the Unix epoch, or None when ``value`` is not a time."""
    if type(value) is str and value[-1:] == "Z" and value[19:20] == ".":
        # The short cut, for date, time, a fraction and Z: nothing can come before the date (the
        # 20th character would not be the "."), so the first 20 characters decide the seconds, and
        # a time the full parse found in range stays in range whatever its fraction.
        fraction = value[20:-1]
        if fraction.isdigit() and fraction.isascii():
            seconds = _SECONDS.get(value[:20])
            if seconds is not None:
                return seconds * NS + int(fraction[:9].ljust(9, "0"))
            ns = _parse(value)
            if ns is not None and value[17:19] != "60":  # a leap second's reading is not its seconds + fraction
                if len(_SECONDS) >= _SECONDS_KEPT:
                    _SECONDS.clear()
                _SECONDS[value[:20]] = ns // NS
            return ns
    return _parse(value)


def _parse(value) -> Optional[int]:
    if type(value) is not str:  # strings first: they are nearly every call
        if isinstance(value, dict) and "#text" in value:
            value = value["#text"]  # one level: an event's nesting never becomes recursion here
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, (int, float)):
            return _from_number(value)
        if not isinstance(value, str):
            return None
    match = _ISO.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, zone_hours, zone_minutes = match.groups()
    minute_start = _minute_start(year, month, day, hour, minute)
    second = int(second)
    if minute_start is None or second > 60:
        return None
    seconds = minute_start + second
    if sign:
        hours, minutes = int(zone_hours), int(zone_minutes)
        if hours > 23 or minutes > 59:
            return None
        seconds -= (hours * 3600 + minutes * 60) * (1 if sign == "+" else -1)
    if second == 60:
        # UTC nanoseconds have no 61st second: the leap second's every instant is the last nanosecond
        # before the midnight it ends at.  Read as that midnight plus its fraction, 23:59:60.8 came
        # after the next day's 00:00:00.3; so it stays after all of 23:59:59 and before midnight.
        ns = seconds * NS - 1
        if not EARLIEST <= ns <= LATEST or not _after_leap_second(seconds):
            return None
        return ns
    ns = seconds * NS + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
    return ns if EARLIEST <= ns <= LATEST else None


_DATE = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)
_EPOCH = re.compile(r"\d{1,20}(?:\.\d{1,9})?", re.ASCII)


def parse_instant(text: str) -> Optional[int]:
    """A time a person gives on the command line (``--from``, ``--to``), in ns: what ``parse_time`` reads
    in an event (RFC 3339, a zoneless time taken as UTC), a date alone (its midnight, UTC), or epoch
    seconds (or milli-, micro-, nanoseconds, as in an event); None when it is none of these."""
    text = text.strip()
    if _DATE.fullmatch(text):
        text += "T00:00:00Z"
    elif _EPOCH.fullmatch(text):
        return _from_number(Decimal(text))
    return _parse(text) if text.isascii() else None


def zoneless(value) -> bool:
    """Whether ``value`` is a time text without a zone (NXLog's ``2021-06-03 13:00:12``): ``parse_time``
    takes it as UTC, which it is only when its writer's clock runs on UTC (for ``explain`` to say so)."""
    if isinstance(value, dict) and "#text" in value:
        value = value["#text"]
    match = _ISO.fullmatch(value.strip()) if isinstance(value, str) else None
    return match is not None and match.group(8) is None and match.group(9) is None


def _after_leap_second(seconds: int) -> bool:
    """Whether ``seconds`` (UTC epoch seconds of the instant a ``:60`` second ends) can follow a leap
    second: a leap second is inserted as 23:59:60 UTC on the last day of a month (ITU-R TF.460), so it
    ends at midnight starting a month.  ``12:34:60`` is no time.  The day it is on is looked at, not the
    next: 9999-12-31T23:59:60Z ends in year 10000, which ``datetime`` cannot hold."""
    days, rest = divmod(seconds, 86400)
    if rest:
        return False
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=days - 1)
    return day.day == calendar.monthrange(day.year, day.month)[1]


@functools.lru_cache(maxsize=4096)
def _minute_start(year: str, month: str, day: str, hour: str, minute: str) -> Optional[int]:
    """Epoch seconds of a calendar minute, None when it does not exist.  Cached:
    a stream's events fall into few distinct minutes, and this is the costly part."""
    fields = int(year), int(month), int(day), int(hour), int(minute)
    try:
        datetime.datetime(*fields)
    except ValueError:
        return None
    return calendar.timegm((*fields, 0, 0, 0, 0))


# The unit an epoch number is in, told by its size: each unit reads the times 2001-09-09 (1e9 s) to 5138 (1e11 s),
# seconds from 1970.  Between two units' ranges a number is no time: with ranges that touched, a number just past
# one unit's (the end of year 9999 in seconds, 253402300800) was an early time in the next (1978-01-12).
_EPOCH_UNITS = ((0, 100_000_000_000, NS),
                (1e12, 1e14, NS // 1_000), (1e15, 1e17, NS // 1_000_000), (1e18, 1e20, 1))


def _from_number(number) -> Optional[int]:
    if number != number or number in (float("inf"), float("-inf")):
        return None
    for lowest, beyond, ns_per_unit in _EPOCH_UNITS:
        if number < lowest:  # a negative number too: no time (a log's -1 is no date, and no 1969 either)
            return None
        if number < beyond:
            if isinstance(number, float):
                number = Decimal(repr(number))  # the shortest decimal that is this float
            return round(number * ns_per_unit)
    return None


def seconds_ns(seconds: float) -> int:
    """Nanoseconds in a number of seconds an option gives, exact to the decimal it was written as (less than
    a nanosecond cut off): ``int(1.001 * NS)`` is 1000999999, which ended a ``--suppress 1.001`` period a
    nanosecond early and made an event exactly ``--lateness 1.001`` behind late."""
    return int(Decimal(repr(float(seconds))) * NS)


_last_second = (None, "")  # (seconds, their text) of the last time formatted


def format_time(ns: int) -> str:
    """RFC 3339 UTC, with as many fractional digits (0, 3, 6 or 9) as the value needs.

    Total: a time outside years 1-9999 (a window start a long timeframe before an
    early event) is written as the nearest one inside."""
    global _last_second
    seconds, nanos = divmod(min(max(ns, EARLIEST), LATEST), NS)
    last, stamp = _last_second
    if seconds != last:  # neighbouring events, and an event's detections, share their second
        t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
        stamp = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        _last_second = seconds, stamp
    if nanos == 0:
        return stamp + "Z"
    if nanos % 1_000_000 == 0:
        return f"{stamp}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{stamp}.{nanos // 1_000:06d}Z"
    return f"{stamp}.{nanos:09d}Z"
