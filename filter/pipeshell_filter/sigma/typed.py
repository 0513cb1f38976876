"""Value tests that read the event text as a number, a date or an IP address.

Sigma's lt/lte/gt/gte, the date parts (minute ... year) and cidr compare values, not
characters.  A text that does not read as the type never matches (an unknown is not an
answer), and none of them has a literal every match must hold: their ``literals()`` is None.
Parsing uses plain string operations, RE2 and the standard library, all linear in the text.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import operator
from decimal import Decimal, InvalidOperation
from typing import Optional

import attrs
import re2

COMPARISONS = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
_SHOWN_OP = {"eq": "==", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
DATE_PARTS = ("minute", "hour", "day", "week", "month", "year")
# What a part can be (the specification's ranges; ``week`` is the ISO week, up to 53): a value outside,
# or not whole, compared for equality can never match, so the rule says so at load.
PART_RANGES = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "week": (1, 53), "month": (1, 12)}

# A number as events write one: decimal digits, a sign, a point, an exponent.  Decimal reads the
# rest exactly (no float rounding of long integers) but would also take "NaN", "Infinity" and
# "1_000": the characters are checked first.
_NUMBER_CHARS = frozenset("0123456789+-.eE")


def parse_number(text: str) -> Optional[Decimal]:
    """The number ``text`` writes (surrounding blanks allowed), or None."""
    text = text.strip()
    if not text or not _NUMBER_CHARS.issuperset(text):
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def rule_number(value) -> Optional[Decimal]:
    """A rule value as a number: an int, a finite float (as written, not its binary value) or a
    string that writes a number; None for anything else (bool included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return parse_number(value)
    return None


@attrs.frozen
class NumberTest:
    """``|lt`` / ``|lte`` / ``|gt`` / ``|gte``: the text read as a decimal number, compared."""

    kind: str  # lt lte gt gte
    bound: Decimal
    cased = True  # not a text comparison: runs on the original text, not a folded copy

    @property
    def needle(self) -> str:
        return f"{_SHOWN_OP[self.kind]} {self.bound}"

    def __call__(self, text: str) -> bool:
        number = parse_number(text)
        return number is not None and COMPARISONS[self.kind](number, self.bound)

    def literals(self) -> Optional[tuple]:
        return None


# ISO 8601 as logs write it: a date, then optionally a time (T or blank) with seconds, a fraction and
# a zone.  The zone is read past, not applied: Sigma's date parts take the date as written.
_DATE_TIME = re2.compile(
    rb"\s*(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
    rb"(?:[Zz]|[+-](\d{2})(?::?(\d{2}))?)?\s*")


def date_part(text: str, part: str) -> Optional[int]:
    """``part`` (one of DATE_PARTS) of the ISO 8601 date written in ``text``, or None.  ``week`` is
    the ISO week (1 to 53); ``minute`` and ``hour`` need a time in the text."""
    match = _DATE_TIME.fullmatch(text.encode("utf-8", "surrogatepass"))
    if match is None:
        return None
    year, month, day, hour, minute, second, zone_hours, zone_minutes = match.groups()
    try:
        date = datetime.date(int(year), int(month), int(day))
    except ValueError:
        return None
    if hour is not None and (int(hour) > 23 or int(minute) > 59 or int(second or 0) > 60):
        return None  # not a time: the text is not a date either (60: a leap second, wherever the zone puts it)
    if zone_hours is not None and (int(zone_hours) > 23 or int(zone_minutes or 0) > 59):
        return None  # nor is a zone that is none
    if part in ("hour", "minute"):
        return None if hour is None else int(hour) if part == "hour" else int(minute)
    if part == "week":
        return date.isocalendar()[1]
    return {"day": date.day, "month": date.month, "year": date.year}[part]


@attrs.frozen
class DatePartTest:
    """``|hour: 3``, ``|month|gte: 10``: one part of the date the text writes, compared as a number."""

    kind: str  # the part: minute hour day week month year
    op: str  # eq lt lte gt gte
    bound: Decimal
    cased = True  # not a text comparison

    @property
    def needle(self) -> str:
        return f"{_SHOWN_OP[self.op]} {self.bound}"

    def __call__(self, text: str) -> bool:
        value = date_part(text, self.kind)
        if value is None:
            return False
        return value == self.bound if self.op == "eq" else COMPARISONS[self.op](value, self.bound)

    def literals(self) -> Optional[tuple]:
        return None


# The longest address text: an IPv6 address with an IPv4 tail and a zone of reasonable length.
_MAX_ADDRESS = 100


def parse_address(text: str):
    """The IP address ``text`` writes (surrounding blanks allowed), or None."""
    return None if len(text) > _MAX_ADDRESS else _address(text)


@functools.lru_cache(maxsize=4096)  # a rule set often tests one address against many networks
def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def rule_network(value):
    """A ``|cidr`` rule value as a network; ValueError (one line) when it is not one."""
    if not isinstance(value, str):
        raise ValueError(f"|cidr needs a network written as text, e.g. '10.0.0.0/8', not {type(value).__name__}")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as error:
        raise ValueError(f"|cidr value is not an IP network: {error}") from None


@attrs.frozen
class NetworkTest:
    """``|cidr``: the text read as an IP address (v4 or v6), inside the rule's network."""

    needle: str  # the network as written
    network: object = attrs.field(eq=False, repr=False)
    kind = "cidr"
    cased = True  # not a text comparison

    def __call__(self, text: str) -> bool:
        address = parse_address(text)
        if address is None:
            return False
        if address.version != self.network.version:
            # An IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, as Windows logs the v4 peer of a
            # dual-stack socket) is also its IPv4 address.
            address = getattr(address, "ipv4_mapped", None)
            if address is None or address.version != self.network.version:
                return False
        return address in self.network

    def literals(self) -> Optional[tuple]:
        return None
