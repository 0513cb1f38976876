"""Event time parsing (to UTC nanoseconds), RFC 3339 formatting, Sigma timeframe durations."""

import calendar
import datetime
import time

import pytest
from hypothesis import given, strategies as st

from pipeshell_filter.events.timeparse import NS, format_time, parse_time
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


@given(st.integers(10**11, 4_102_444_800_000))
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
    assert parse_time(100_000_000_000) == 100_000_000_000 * 1_000_000  # milliseconds


@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf"), float("-inf"), 10**21, 1e21])
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
