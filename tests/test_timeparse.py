"""Event time parsing (to UTC nanoseconds), RFC 3339 formatting, Sigma timeframe durations."""

import calendar
import datetime
import time

import pytest
from hypothesis import given, strategies as st

from pipeshell_filter.events.timeparse import NS, format_time, parse_instant, parse_time, zoneless
from pipeshell_filter.sigma.rule import parse_duration

UTC = datetime.timezone.utc
# 2021-06-03T13:06:00Z
BASE = calendar.timegm((2021, 6, 3, 13, 6, 0, 0, 0, 0))


def ns_of(dt):
    """Reference: a timezone-aware datetime to integer ns, exactly (no float)."""
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


# ---------------------------------------------------------------- ISO / RFC 3339 strings


def test_nine_fraction_digits_exact_nanoseconds():
    assert parse_time("2021-06-03T13:06:00.114281400Z") == BASE * NS + 114_281_400
    assert parse_time("2021-06-03T13:06:00.000000001Z") == BASE * NS + 1
    assert parse_time("2021-06-03T13:06:00.999999999Z") == BASE * NS + 999_999_999


@pytest.mark.parametrize(
    "fraction, nanos",
    [("1", 100_000_000), ("12", 120_000_000), ("114", 114_000_000), ("114281", 114_281_000), ("1142814", 114_281_400)],
)
def test_short_fractions(fraction, nanos):
    assert parse_time(f"2021-06-03T13:06:00.{fraction}Z") == BASE * NS + nanos


def test_more_than_nine_fraction_digits_truncate():
    assert parse_time("2021-06-03T13:06:00.1234567899999Z") == BASE * NS + 123_456_789


def test_comma_fraction_separator():
    assert parse_time("2021-06-03T13:06:00,5Z") == BASE * NS + 500_000_000


def test_offset_with_colon():
    assert parse_time("2021-06-03T15:06:00+02:00") == BASE * NS
    assert parse_time("2021-06-03T15:06:00.114281400+02:00") == BASE * NS + 114_281_400
    assert parse_time("2021-06-03T08:36:00-04:30") == BASE * NS


def test_offset_without_colon():
    assert parse_time("2021-06-03T15:06:00+0200") == BASE * NS
    assert parse_time("2021-06-03T11:06:00-0200") == BASE * NS


def test_fluent_bit_space_separated_with_offset():
    assert parse_time("2021-06-03 15:06:00 +0200") == BASE * NS


def test_nxlog_local_style_offset():
    assert parse_time("2021-06-03T15:00:12.481305+02:00") == calendar.timegm((2021, 6, 3, 13, 0, 12)) * NS + 481_305_000


def test_collector_formats():
    # Fluent Bit winevtlog TimeCreated: local time, offset after a space, whole seconds
    assert parse_time("2021-06-03 09:06:00 -0400") == BASE * NS
    assert parse_time("2021-06-03 13:06:00 +0000") == BASE * NS
    # Vector / Winlogbeat: RFC 3339 UTC with 0, 3, 6 or 9 digits
    assert parse_time("2021-06-03T13:06:00.275641300Z") == BASE * NS + 275_641_300
    assert parse_time("2021-06-03T13:06:00.275Z") == BASE * NS + 275_000_000
    # NXLog: ISO 8601 with the agent's offset, or the zone-less legacy form (taken as UTC)
    assert parse_time("2021-06-03T18:51:00.000001+05:45") == BASE * NS + 1_000
    assert parse_time("2021-06-03 13:06:00") == BASE * NS


def test_zoneless_is_utc():
    assert parse_time("2021-06-03T13:06:00") == BASE * NS
    assert parse_time("2021-06-03 13:06:00") == BASE * NS
    assert parse_time("2021-06-03 13:06:00.5") == BASE * NS + 500_000_000


def test_zoneless_tells_the_times_taken_as_utc():
    for text in ("2021-06-03T13:06:00", "2021-06-03 13:06:00", " 2021-06-03 13:06:00.5 ",
                 {"#text": "2021-06-03 13:06:00"}):
        assert zoneless(text), text
    for value in ("2021-06-03T13:06:00Z", "2021-06-03 15:06:00 +0200", "2021-06-03T15:06:00.5+02:00", 1622725560,
                  "13:06", None, {"#text": "2021-06-03T13:06:00z"}):
        assert not zoneless(value), value


def test_z_and_zero_offsets_agree():
    expected = BASE * NS
    for text in ["2021-06-03T13:06:00Z", "2021-06-03T13:06:00z", "2021-06-03t13:06:00Z",
                 "2021-06-03T13:06:00+00:00", "2021-06-03T13:06:00-0000", "  2021-06-03T13:06:00Z  "]:
        assert parse_time(text) == expected, text


def test_offset_crossing_midnight_and_year():
    assert parse_time("2021-01-01T01:00:00+02:00") == calendar.timegm((2020, 12, 31, 23, 0, 0)) * NS


def test_leap_day():
    assert parse_time("2020-02-29T00:00:00Z") == calendar.timegm((2020, 2, 29, 0, 0, 0)) * NS
    assert parse_time("2021-02-29T00:00:00Z") is None


def test_epoch_and_pre_epoch():
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert parse_time("1969-12-31T23:59:59.999999999Z") == -1


def test_xml_text_element():
    assert parse_time({"#text": "2021-06-03T13:06:00Z"}) == BASE * NS


@pytest.mark.parametrize(
    "text",
    [
        "2021-13-03T13:06:00Z",  # month 13
        "2021-00-03T13:06:00Z",  # month 0
        "2021-06-31T13:06:00Z",  # June 31st
        "2021-06-00T13:06:00Z",
        "2021-06-03T25:06:00Z",
        "2021-06-03T24:00:00Z",
        "2021-06-03T13:60:00Z",
        "2021-06-03T13:06:61Z",
        "2021-06-03T13:06:00+24:00",
        "2021-06-03T13:06:00+02:60",
        "2021-06-03T13:06:00+2",
        "2021-06-03T13:06Z",
        "2021-06-03",
        "21-06-03T13:06:00Z",
        "2021/06/03 13:06:00",
        "2021-06-03T13:06:00ZZ",
        "2021-06-03T13:06:00 UTC",
        "2021-06-03T13:06:00.Z",
        "x2021-06-03T13:06:00Z",
        "garbage",
        "",
        "   ",
        "1622725560",  # a numeric string is not a number
    ],
)
def test_invalid_strings_are_none(text):
    assert parse_time(text) is None


@pytest.mark.parametrize("text", [
    "2021-06-03T13:06:00" + " " * 100_000 + "x",
    "2021-06-03T13:06:00.5" + " " * 100_000 + "+02:0x",
    " " * 100_000 + "2021-06-03T13:06:00" + " " * 100_000 + "x",
])
def test_long_whitespace_is_linear(text):
    """A time field padded with a long run of spaces that does not end the text took quadratic time
    (100,000 spaces: about 30 s, with --fluentbit-time on every line); now a few milliseconds."""
    start = time.monotonic()
    assert parse_time(text) is None
    assert time.monotonic() - start < 2


_SPACES = st.text(" \t\n\r\u3000\x85", max_size=3)


@given(st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),
       _SPACES, _SPACES, st.text(" \t", max_size=3))
def test_surrounding_and_inner_whitespace(dt, before, after, inner):
    """Whitespace around a time, and between it and its zone, is ignored, whatever Unicode calls space."""
    text = f"{before}{dt.isoformat()}{inner}+01:00{after}"
    assert parse_time(text) == ns_of(dt.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=1))))


@pytest.mark.parametrize("value", [None, True, False, [], {}, {"#attributes": {"SystemTime": "x"}}, object()])
def test_non_time_values_are_none(value):
    assert parse_time(value) is None


# ---------------------------------------------------------------- epoch numbers


def test_epoch_seconds_int():
    assert parse_time(BASE) == BASE * NS
    assert parse_time(0) == 0


def test_epoch_seconds_float():
    assert parse_time(BASE + 0.5) == BASE * NS + 500_000_000
    assert parse_time(float(BASE)) == BASE * NS


def test_epoch_seconds_float_microseconds_close():
    # Fluent Bit's "date": float seconds with microseconds
    assert abs(parse_time(1622725213.093305) - 1622725213_093305000) < 1000


def test_epoch_seconds_float_microseconds_exact():
    # Fluent Bit's "date" (json_date_format double): the float is read as the decimal it prints as
    assert parse_time(1622725213.093305) == 1622725213_093305000
    assert format_time(parse_time(1622725213.093305)) == "2021-06-03T13:00:13.093305Z"


@given(st.integers(0, 4_102_444_800), st.integers(0, 999))
def test_epoch_float_seconds_with_milliseconds_exact(seconds, millis):
    # at most 13 significant digits: the float prints back as written
    value = float(f"{seconds}.{millis:03d}")
    assert parse_time(value) == seconds * NS + millis * 1_000_000


@given(st.integers(1, 4_102_444_800), st.integers(0, 999_999))
def test_epoch_float_seconds_is_the_decimal_it_prints_as(seconds, micros):
    value = float(f"{seconds}.{micros:06d}")
    text = repr(value)
    whole, _, fraction = text.partition(".")
    assert parse_time(value) == int(whole) * NS + int(fraction.ljust(9, "0")[:9])
    assert abs(parse_time(value) - (seconds * NS + micros * 1000)) < 1000


@given(st.integers(10**12, 4_102_444_800_000))
def test_epoch_integral_float_milliseconds_exact_property(millis):
    assert parse_time(float(millis)) == millis * 1_000_000


def test_epoch_milliseconds():
    assert parse_time(BASE * 1000 + 114) == BASE * NS + 114_000_000
    assert parse_time(BASE * 1000) == BASE * NS


def test_epoch_milliseconds_float_close():
    assert abs(parse_time(1622725560114.0) - (BASE * NS + 114_000_000)) < 1000


def test_epoch_milliseconds_integral_float_exact():
    assert parse_time(1622725560114.0) == BASE * NS + 114_000_000


def test_epoch_microseconds_and_nanoseconds():
    assert parse_time(BASE * 10**6 + 114281) == BASE * NS + 114_281_000
    assert parse_time(BASE * NS + 114_281_400) == BASE * NS + 114_281_400


def test_epoch_scale_boundaries():
    assert parse_time(99_999_999_999) == 99_999_999_999 * NS  # still seconds (year 5138)
    assert parse_time(1_000_000_000_000) == 1_000_000_000_000 * 1_000_000  # milliseconds (2001-09-09)
    assert parse_time(99_999_999_999_999) == 99_999_999_999_999 * 1_000_000
    assert parse_time(10**15) == 10**15 * 1_000 and parse_time(10**18) == 10**18  # micro-, nanoseconds
    assert parse_time(10**20 - 1) == 10**20 - 1


@pytest.mark.parametrize("value", [
    253_402_300_800,  # the end of year 9999 in seconds: it was read as milliseconds, 1978-01-12
    253_402_300_799_999,  # the same in milliseconds, read as microseconds (1978)
    253_402_300_799_999_999,  # in microseconds, read as nanoseconds (1978)
    253_402_300_800_000_000_000,  # in nanoseconds
    100_000_000_000, 999_999_999_999, 10**14, 10**15 - 1, 10**17, 10**18 - 1, 10**20, 2e11, 5e14,
])
def test_a_number_past_one_unit_is_not_taken_as_an_early_time_of_the_next(value):
    """Each unit reads 2001-09-09 to 5138 (seconds from 1970): a number between two units' ranges (the last second
    of year 9999 as seconds, a millisecond time of 1978 or year 6000) is no time, not a wrong date."""
    assert parse_time(value) is None
    assert parse_instant(str(value)) is None


@pytest.mark.parametrize("value", [-1, -0.5, -1622725560, float("nan"), float("inf"), float("-inf"), 10**21, 1e21])
def test_invalid_numbers_are_none(value):
    assert parse_time(value) is None


# ---------------------------------------------------------------- against datetime (property)

_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: datetime.timezone(datetime.timedelta(minutes=m))
)
_datetimes = st.datetimes(
    min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2200, 12, 31), timezones=_offsets
)


def _offset_text(dt, colon):
    minutes = int(dt.utcoffset().total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    return f"{sign}{hh:02d}{':' if colon else ''}{mm:02d}"


@given(_datetimes)
def test_parse_isoformat_agrees_with_datetime(dt):
    assert parse_time(dt.isoformat()) == ns_of(dt)


@given(_datetimes, st.sampled_from(["T", " ", "t"]), st.booleans(), st.sampled_from(["", " "]),
       st.integers(0, 999_999_999))
def test_parse_variants_agree_with_datetime(dt, sep, colon, space, nanos):
    dt = dt.replace(microsecond=0)
    text = dt.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + f".{nanos:09d}" + space + _offset_text(dt, colon)
    assert parse_time(text) == ns_of(dt) + nanos


@given(st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2200, 12, 31)))
def test_zoneless_agrees_with_datetime_as_utc(dt):
    assert parse_time(dt.isoformat()) == ns_of(dt.replace(tzinfo=UTC))


@given(_datetimes)
def test_epoch_int_seconds_agree_with_datetime(dt):
    dt = dt.replace(microsecond=0)
    assert parse_time(ns_of(dt) // NS) == ns_of(dt)


# ---------------------------------------------------------------- format_time


def test_format_time_precision_steps():
    assert format_time(BASE * NS) == "2021-06-03T13:06:00Z"
    assert format_time(BASE * NS + 114_000_000) == "2021-06-03T13:06:00.114Z"
    assert format_time(BASE * NS + 114_281_000) == "2021-06-03T13:06:00.114281Z"
    assert format_time(BASE * NS + 114_281_400) == "2021-06-03T13:06:00.114281400Z"
    assert format_time(BASE * NS + 1) == "2021-06-03T13:06:00.000000001Z"


def test_format_time_epoch_and_negative():
    assert format_time(0) == "1970-01-01T00:00:00Z"
    assert format_time(-1) == "1969-12-31T23:59:59.999999999Z"


# 1000-01-01 .. 9999-12-31T23:59:59.999999999 (strftime writes years < 1000 with fewer digits)
_SANE_NS = st.integers(min_value=-30_610_224_000 * NS, max_value=253_402_300_800 * NS - 1)


@given(_SANE_NS)
def test_format_parse_round_trip(ns):
    assert parse_time(format_time(ns)) == ns


@given(st.integers(min_value=0, max_value=4_102_444_800 * NS))
def test_format_matches_datetime_isoformat(ns):
    text = format_time(ns)
    assert text.endswith("Z")
    dt = datetime.datetime.fromtimestamp(ns // NS, UTC)
    assert text.startswith(dt.strftime("%Y-%m-%dT%H:%M:%S"))
    fraction = text[len("YYYY-mm-ddTHH:MM:SS"):-1]
    assert fraction == "" or (fraction[0] == "." and len(fraction) - 1 in (3, 6, 9))


@given(_SANE_NS, st.lists(st.integers(-2 * NS, 2 * NS), max_size=8))
def test_format_time_of_neighbouring_times_in_any_order(base, offsets):
    """Times in the same second reuse its text: each is still its own (round trip, and its
    fraction's digits)."""
    for ns in [base + offset for offset in offsets]:
        if _SANE_NS_RANGE[0] <= ns <= _SANE_NS_RANGE[1]:
            assert parse_time(format_time(ns)) == ns


_SANE_NS_RANGE = (-30_610_224_000 * NS, 253_402_300_800 * NS - 1)


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), ("0s", 0), (" 5m ", 300), ("5 m", 300), ("90m", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds * NS


@pytest.mark.parametrize(
    "text", ["", "5", "m", "5M", "5H", "1w", "1y", "-5m", "1.5h", "5mins", "5 minutes", "m5", "5m5s", None, 300, True]
)
def test_parse_duration_invalid(text):
    assert parse_duration(text) is None


@given(st.integers(0, 10**6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]))
def test_parse_duration_property(n, unit):
    suffix, factor = unit
    assert parse_duration(f"{n}{suffix}") == n * factor * NS


# ---------------------------------------------------------------- digits and leap seconds, against a reference

# Decimal digits of other scripts: Python's \d and int() take them, RFC 3339 and Sigma do not.
_OTHER_DIGITS = ("\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",  # Arabic-Indic
                 "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",  # full-width
                 "\u0966\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u096f",  # Devanagari
                 "".join(chr(0x1D7CE + i) for i in range(10)))  # mathematical bold


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _day_number(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a valid date, counted by hand (no datetime, no calendar)."""
    before = year - 1
    days = 365 * before + before // 4 - before // 100 + before // 400
    days += sum(_month_days(year, m) for m in range(1, month)) + day - 1
    return days - 719162  # the count for 1970-01-01


def _next_day(year: int, month: int, day: int) -> tuple:
    if day < _month_days(year, month):
        return year, month, day + 1
    return (year + 1, 1, 1) if month == 12 else (year, month + 1, 1)


def _previous_day(year: int, month: int, day: int) -> tuple:
    if day > 1:
        return year, month, day - 1
    year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return year, month, _month_days(year, month)


def reference_time(year, month, day, hour, minute, second, fraction, offset_minutes):
    """Nanoseconds of a time written as these numbers (offset: east of UTC, in minutes; None: no zone),
    or None when RFC 3339 says it is no time: a field out of range, or a second 60 anywhere but the
    leap second at 23:59:60 UTC on the last day of a month."""
    if not (1 <= month <= 12 and 1 <= day <= _month_days(year, month) and hour <= 23 and minute <= 59
            and second <= 60):
        return None
    offset = offset_minutes or 0
    if second == 60:
        utc_minute = hour * 60 + minute - offset  # of the local day; may spill into a neighbour
        date = (year, month, day)
        if utc_minute < 0:
            date, utc_minute = _previous_day(*date), utc_minute + 1440
        elif utc_minute >= 1440:
            date, utc_minute = _next_day(*date), utc_minute - 1440
        if utc_minute != 1439 or date[2] != _month_days(date[0], date[1]):
            return None
    seconds = _day_number(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset * 60
    # a leap second, whatever its fraction: the last nanosecond before the midnight it ends at
    ns = seconds * NS - 1 if second == 60 else seconds * NS + int((fraction + "0" * 9)[:9])
    first, last = _day_number(1, 1, 1) * 86400 * NS, _day_number(9999, 12, 31) * 86400 * NS + 86400 * NS - 1
    return ns if first <= ns <= last else None


_ZONES = st.one_of(st.none(), st.sampled_from(["Z", "z"]),
                   st.tuples(st.sampled_from("+-"), st.one_of(st.integers(0, 25), st.just(0)),
                             st.sampled_from([0, 30, 45, 59, 60]), st.booleans()))


@given(year=st.one_of(st.integers(1, 9999), st.sampled_from([1, 1970, 2016, 9999])),
       month=st.one_of(st.integers(0, 13), st.just(12)),
       day=st.one_of(st.integers(0, 32), st.sampled_from([28, 30, 31])),
       hour=st.one_of(st.integers(0, 25), st.sampled_from([0, 23])),
       minute=st.one_of(st.integers(0, 61), st.sampled_from([0, 59])),
       second=st.one_of(st.integers(0, 61), st.just(60)),
       fraction=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=12)),
       separators=st.tuples(st.sampled_from("Tt "), st.sampled_from(".,"), st.sampled_from(["", " "])),
       zone=_ZONES,
       swap=st.one_of(st.none(), st.tuples(st.sampled_from(_OTHER_DIGITS), st.integers(0, 40))))
def test_parse_time_agrees_with_reference(year, month, day, hour, minute, second, fraction, separators, zone, swap):
    """Any time text built from numbers (in range or not, a second 60 anywhere, any zone) parses to what
    ``reference_time`` computes; with one digit of another script in it, to None."""
    sep, point, space = separators
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
    text += "" if fraction is None else point + fraction
    offset = None
    if isinstance(zone, str):
        text += space + zone
    elif zone is not None:
        sign, hours, minutes, colon = zone
        text += f"{space}{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"
        offset = None if hours > 23 or minutes > 59 else (hours * 60 + minutes) * (1 if sign == "+" else -1)
        if offset is None:
            assert parse_time(text) is None
            return
    if swap is not None:
        digits, which = swap
        at = [i for i, ch in enumerate(text) if "0" <= ch <= "9"]
        at = at[which % len(at)]
        text = text[:at] + digits[int(text[at])] + text[at + 1:]
        assert parse_time(text) is None, text
        return
    assert parse_time(text) == reference_time(year, month, day, hour, minute, second, fraction or "", offset), text


@pytest.mark.parametrize("text, utc", [
    ("2016-12-31T23:59:60Z", (2017, 1, 1, 0, 0, 0)),  # the last leap second inserted
    ("2015-06-30T23:59:60.5Z", (2015, 7, 1, 0, 0, 0)),
    ("2015-06-30T23:59:60.999999999999Z", (2015, 7, 1, 0, 0, 0)),
    ("2017-01-01T01:59:60+02:00", (2017, 1, 1, 0, 0, 0)),  # the same one, in a zone east
    ("2016-12-31T18:59:60-0500", (2017, 1, 1, 0, 0, 0)),
    ("2024-02-29T23:59:60Z", (2024, 3, 1, 0, 0, 0)),  # any month's end: ITU-R TF.460 allows it
    ("9999-12-31T23:59:60Z", (10000, 1, 1, 0, 0, 0)),  # the latest time a record can carry
])
def test_leap_second_at_the_end_of_a_utc_month(text, utc):
    """A leap second, whatever its fraction, reads as the last nanosecond before the midnight it ends at (UTC
    ns have no 61st second): after every time of the second before it, before the midnight."""
    midnight = calendar.timegm((*utc, 0, 0, 0)) if utc[0] < 10000 else 253402300800
    assert parse_time(text) == midnight * NS - 1


@pytest.mark.parametrize("first", [True, False])
def test_a_leap_second_with_a_fraction_comes_before_the_next_day(first):
    """``23:59:60.8`` read as 00:00:00.8 of the next day, after a real ``00:00:00.3`` event; and the short
    cut's cache of seconds must not carry a leap second's reading to another fraction of it."""
    leap = ["2016-12-31T23:59:60.8Z", "2016-12-31T23:59:60.3Z", "2016-12-31T23:59:60.8Z"]
    before, after = parse_time("2016-12-31T23:59:59.9Z"), parse_time("2017-01-01T00:00:00.3Z")
    times = [parse_time(text) for text in (leap if first else leap[::-1])]
    midnight = parse_time("2017-01-01T00:00:00Z")
    assert before < midnight - 1 == times[0] == times[1] == times[2] < midnight < after
    assert parse_time("2016-12-31T23:59:60.3Z") == midnight - 1  # after the cache saw the second


@pytest.mark.parametrize("text", [
    "2024-01-01T12:34:60Z",  # was 12:35:00: a 60th second at any minute
    "2024-01-01T12:34:60.5Z",  # the short cut for fraction-and-Z times too
    "2016-12-31T23:59:60+02:00",  # 21:59:60 UTC
    "2016-12-30T23:59:60Z",  # not a month's last day
    "2016-12-31T23:58:60Z",
    "0001-01-01T00:00:60Z", "0001-01-01T00:00:60+00:01",  # raised OverflowError (the day before year 1)
    "2024-01-01T12:00:0\u0663Z",  # Arabic-Indic 3
    "\uff12\uff10\uff12\uff14-01-01T12:00:03Z",  # full-width year
    "2024-01-01T12:00:03.\u0661Z",  # in the fraction
    "2024-01-01T12:00:03+0\u0662:00",  # in the zone
])
def test_no_time_for_a_misplaced_leap_second_or_other_digits(text):
    assert parse_time(text) is None


@pytest.mark.parametrize("text", ["\u0665m", "\uff15m", "1\u0660s", "\u0968h"])
def test_parse_duration_takes_ascii_digits_only(text):
    assert parse_duration(text) is None


# ---------------------------------------------------------------- every collector's rendering, any year


def _civil(days: int) -> tuple:
    """(year, month, day) of a day number from 1970-01-01 (H. Hinnant's civil_from_days: no datetime)."""
    days += 719468
    era, day_of_era = divmod(days, 146097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    month = shifted + 3 if shifted < 10 else shifted - 9
    return year_of_era + era * 400 + (month <= 2), month, day_of_year - (153 * shifted + 2) // 5 + 1


def _wall(ns: int, offset_minutes: int, digits: int) -> tuple:
    """The date-and-time text of instant ``ns`` on a clock ``offset_minutes`` east of UTC, with ``digits``
    fraction digits (truncated), and the instant that text stands for."""
    seconds, nanos = divmod(ns, NS)
    days, rest = divmod(seconds + offset_minutes * 60, 86400)
    year, month, day = _civil(days)
    fraction = f"{nanos:09d}"[:digits] if digits <= 9 else f"{nanos:09d}" + "7" * (digits - 9)
    text = f"{year:04d}-{month:02d}-{day:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    kept = int((fraction[:9] + "0" * 9)[:9]) if digits else 0
    return year, text + ("." + fraction if digits else ""), seconds * NS + kept


def _zone(offset_minutes: int, colon: bool) -> str:
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{'-' if offset_minutes < 0 else '+'}{hours:02d}{':' if colon else ''}{minutes:02d}"


@given(st.integers(-62135596800 * NS, 253402300800 * NS - 1), st.integers(-12 * 60, 14 * 60), st.integers(0, 12))
def test_every_collectors_rendering_of_an_instant_reads_back_as_it(ns, offset, digits):
    """evtx's SystemTime (7 digits, Z), Winlogbeat's @timestamp (3), Vector's timestamp (9), Fluent Bit
    winevtlog's local time with ``+HHMM`` after a space, NXLog's zoneless EventTime (an agent on UTC) and
    its ISO 8601 form with an offset, each of any instant of years 1 to 9999 and any fraction of 0 to 12
    digits: each reads as the instant its text stands for, by calendar arithmetic written here."""
    for zone, digits_of, separator, end in (
            (0, 7, "T", "Z"), (0, 3, "T", "Z"), (0, 9, "T", "Z"), (0, digits, "t", "z"),
            (offset, 0, " ", " " + _zone(offset, False)), (0, 0, " ", ""), (offset, 6, "T", _zone(offset, True)),
            (offset, digits, "T", _zone(offset, digits % 2 == 0))):
        year, text, expected = _wall(ns, zone, digits_of)
        if 1 <= year <= 9999:  # the local date of year 1's first hours east of UTC is in year 0
            text = text[:10] + separator + text[11:] + end
            assert parse_time(text) == expected, text
