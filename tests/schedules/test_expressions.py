"""When ticks fall: cron lines, rates and one-time expressions, in time zones, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cadenza.errors import ConfigurationError
from cadenza.schedules.expressions import parse_expression

NEW_YORK = ZoneInfo("America/New_York")
LISBON = ZoneInfo("Europe/Lisbon")
UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ticks(text: str, after: datetime, n: int, tz: ZoneInfo = UTC_ZONE) -> list[datetime]:
    expression = parse_expression(text)
    found: list[datetime] = []
    for _ in range(n):
        tick = expression.next_after(after, tz=tz, anchor=T0)
        assert tick is not None
        found.append(tick)
        after = tick
    return found


def local(values: list[datetime], tz: ZoneInfo) -> list[str]:
    return [v.astimezone(tz).strftime("%Y-%m-%d %a %H:%M %Z") for v in values]


def test_weekday_mornings_in_a_time_zone() -> None:
    friday_noon = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert local(ticks("cron(0 9 * * MON-FRI)", friday_noon, 3, LISBON), LISBON) == [
        "2026-11-30 Mon 09:00 WET",
        "2026-12-01 Tue 09:00 WET",
        "2026-12-02 Wed 09:00 WET",
    ]


def test_a_local_time_follows_the_clocks_across_dst() -> None:
    # 09:00 in Lisbon is 09:00 UTC in winter and 08:00 UTC in summer.
    before = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert ticks("0 9 * * *", before, 2, LISBON) == [
        datetime(2026, 3, 29, 8, tzinfo=UTC),
        datetime(2026, 3, 30, 8, tzinfo=UTC),
    ]


def test_a_local_time_the_clocks_skip_fires_once_after_the_jump() -> None:
    # New York, 2026-03-08: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that day.
    before = datetime(2026, 3, 7, 12, tzinfo=UTC)
    assert local(ticks("30 2 * * *", before, 3, NEW_YORK), NEW_YORK) == [
        "2026-03-08 Sun 03:30 EDT",
        "2026-03-09 Mon 02:30 EDT",
        "2026-03-10 Tue 02:30 EDT",
    ]


def test_ticks_inside_the_skipped_hour_never_repeat_an_instant() -> None:
    before = datetime(2026, 3, 8, 6, 50, tzinfo=UTC)  # 01:50 EST
    found = ticks("*/30 * * * *", before, 4, NEW_YORK)
    assert local(found, NEW_YORK) == [
        "2026-03-08 Sun 03:00 EDT",  # 02:00, which does not exist
        "2026-03-08 Sun 03:30 EDT",
        "2026-03-08 Sun 04:00 EDT",
        "2026-03-08 Sun 04:30 EDT",
    ]
    assert len(set(found)) == len(found)


def test_a_local_time_that_happens_twice_fires_once() -> None:
    # New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00-01:59 happens twice.
    before = datetime(2026, 10, 31, 12, tzinfo=UTC)
    assert local(ticks("30 1 * * *", before, 2, NEW_YORK), NEW_YORK) == [
        "2026-11-01 Sun 01:30 EDT",
        "2026-11-02 Mon 01:30 EST",
    ]
    every_20 = ticks("*/20 1 * * *", before, 4, NEW_YORK)
    assert local(every_20, NEW_YORK) == [
        "2026-11-01 Sun 01:00 EDT",
        "2026-11-01 Sun 01:20 EDT",
        "2026-11-01 Sun 01:40 EDT",
        "2026-11-02 Mon 01:00 EST",
    ]


def test_a_tick_strictly_after_the_given_time() -> None:
    at_nine = datetime(2026, 5, 5, 9, tzinfo=UTC)
    assert ticks("0 9 * * *", at_nine, 1) == [at_nine + timedelta(days=1)]
    assert ticks("0 9 * * *", at_nine - timedelta(seconds=1), 1) == [at_nine]


def test_fields_lists_ranges_steps_and_names() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert [t.strftime("%H:%M") for t in ticks("5/20 8-9 * * *", start, 5)] == [
        "08:05",
        "08:25",
        "08:45",
        "09:05",
        "09:25",
    ]
    assert [t.strftime("%m-%d") for t in ticks("0 0 1 JAN,jul *", start, 3)] == [
        "07-01",
        "01-01",
        "07-01",
    ]
    # Sunday is 0 and 7.
    assert {t.strftime("%a") for t in ticks("0 0 * * 7", start, 3)} == {"Sun"}


def test_day_of_month_and_day_of_week_both_restricted_match_either() -> None:
    start = datetime(2026, 11, 26, tzinfo=UTC)  # a Thursday
    assert [t.strftime("%d %a") for t in ticks("0 0 1,15 * MON", start, 5)] == [
        "30 Mon",
        "01 Tue",
        "07 Mon",
        "14 Mon",
        "15 Tue",
    ]


def test_the_eventbridge_six_field_form_with_a_year() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert ticks("cron(0 12 ? * MON 2027)", start, 1) == [datetime(2027, 1, 4, 12, tzinfo=UTC)]
    expression = parse_expression("cron(0 12 1 1 ? 2027)")
    once = expression.next_after(start, tz=ZoneInfo("UTC"), anchor=start)
    assert once == datetime(2027, 1, 1, 12, tzinfo=UTC)
    assert expression.next_after(once, tz=ZoneInfo("UTC"), anchor=start) is None


def test_leap_days_are_found_years_ahead() -> None:
    assert ticks("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=UTC), 2) == [
        datetime(2028, 2, 29, tzinfo=UTC),
        datetime(2032, 2, 29, tzinfo=UTC),
    ]


def test_a_rate_counts_elapsed_time_from_its_anchor() -> None:
    rate = parse_expression("rate(90 minutes)")
    anchor = datetime(2026, 3, 7, 12, tzinfo=UTC)
    assert rate.next_after(anchor - timedelta(days=1), tz=NEW_YORK, anchor=anchor) == anchor
    assert rate.next_after(anchor, tz=NEW_YORK, anchor=anchor) == anchor + timedelta(minutes=90)
    # A day is 24 hours even across the DST change: the local time moves.
    daily = parse_expression("rate(1 day)")
    after = daily.next_after(anchor, tz=NEW_YORK, anchor=anchor)
    assert after == anchor + timedelta(days=1)
    assert daily.next_after(after, tz=NEW_YORK, anchor=anchor) == anchor + timedelta(days=2)


def test_a_one_time_expression_fires_once_at_its_local_time() -> None:
    at = parse_expression("at(2026-07-01T09:00:00)")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tick = at.next_after(start, tz=LISBON, anchor=start)
    assert tick == datetime(2026, 7, 1, 8, tzinfo=UTC)  # 09:00 WEST
    assert at.next_after(tick, tz=LISBON, anchor=start) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cron(0 0 30 2 *)", "names no date that exists"),
        ("cron(61 * * * *)", "minute field '61'"),
        ("cron(0 9 * * FUNDAY)", "day-of-week field"),
        ("cron(0 9 * *)", "has 4 fields"),
        ("cron(*/0 * * * *)", "a step must be positive"),
        ("cron(0 9 L * *)", "day-of-month field"),
        ("rate(0 minutes)", "N > 0"),
        ("rate(5 weeks)", "rate(N minutes|hours|days)"),
        ("at(2026-13-01T09:00)", "at(2026-12-01T09:00:00)"),
        ("at(2026-12-01T09:00+01:00)", "without an offset"),
        ("every monday", "is not cron(...), rate(...) or at(...)"),
    ],
)
def test_a_wrong_expression_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_expression(text)
    assert says in str(caught.value)
