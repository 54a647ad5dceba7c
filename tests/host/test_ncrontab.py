"""NCRONTAB and TimeSpan schedules compute occurrences as the Functions timer trigger does (unit tests)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.host.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse_schedule

T0 = dt.datetime(2024, 1, 1, 0, 0, 0, tzinfo=dt.UTC)  # a Monday


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_every_five_minutes_fires_on_the_five_minute_marks() -> None:
    assert parse_schedule("0 */5 * * * *").next_occurrences(at(2024, 1, 1, 10, 2, 30), 3) == [
        at(2024, 1, 1, 10, 5), at(2024, 1, 1, 10, 10), at(2024, 1, 1, 10, 15)
    ]


def test_next_occurrence_is_strictly_after_the_given_time() -> None:
    assert parse_schedule("0 */5 * * * *").next_after(at(2024, 1, 1, 10, 5)) == at(2024, 1, 1, 10, 10)


def test_seconds_field_is_honoured() -> None:
    assert parse_schedule("*/15 * * * * *").next_occurrences(T0, 3) == [
        at(2024, 1, 1, 0, 0, 15), at(2024, 1, 1, 0, 0, 30), at(2024, 1, 1, 0, 0, 45)
    ]


def test_lists_and_ranges_combine() -> None:
    schedule = parse_schedule("0 0 9-10,17 * * *")
    assert schedule.next_occurrences(T0, 4) == [
        at(2024, 1, 1, 9), at(2024, 1, 1, 10), at(2024, 1, 1, 17), at(2024, 1, 2, 9)
    ]


def test_range_with_step() -> None:
    assert parse_schedule("0 10-30/10 * * * *").next_occurrences(T0, 4) == [
        at(2024, 1, 1, 0, 10), at(2024, 1, 1, 0, 20), at(2024, 1, 1, 0, 30), at(2024, 1, 1, 1, 10)
    ]


def test_value_with_step_runs_to_the_end_of_the_field() -> None:
    assert parse_schedule("0 50/5 * * * *").next_occurrences(T0, 3) == [
        at(2024, 1, 1, 0, 50), at(2024, 1, 1, 0, 55), at(2024, 1, 1, 1, 50)
    ]


def test_day_of_week_names_and_numbers_mean_the_same_days() -> None:
    by_name = parse_schedule("0 30 9 * * MON-FRI")
    by_number = parse_schedule("0 30 9 * * 1-5")
    assert by_name.next_occurrences(T0, 10) == by_number.next_occurrences(T0, 10)
    assert at(2024, 1, 6, 9, 30) not in by_name.next_occurrences(T0, 10)  # a Saturday


def test_sunday_is_day_zero() -> None:
    assert parse_schedule("0 0 12 * * 0").next_after(T0) == at(2024, 1, 7, 12)
    assert parse_schedule("0 0 12 * * sun").next_after(T0) == at(2024, 1, 7, 12)


def test_month_names_are_accepted_in_any_case() -> None:
    assert parse_schedule("0 0 0 1 jan,Jul *").next_occurrences(T0, 2) == [at(2024, 7, 1), at(2025, 1, 1)]


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # Friday the 13th: NCrontab requires both fields, unlike Vixie cron.
    assert parse_schedule("0 0 0 13 * FRI").next_after(T0) == at(2024, 9, 13)


def test_february_29th_waits_for_a_leap_year() -> None:
    assert parse_schedule("0 0 0 29 2 *").next_after(at(2024, 3, 1)) == at(2028, 2, 29)


def test_timespan_schedule_is_a_constant_interval() -> None:
    schedule = parse_schedule("00:00:30")
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(at(2024, 1, 1, 0, 0, 10)) == at(2024, 1, 1, 0, 0, 40)
    assert parse_schedule("1.00:00:00").next_after(T0) == at(2024, 1, 2)


def test_cron_schedule_adjusts_for_dst_and_timespan_does_not() -> None:
    assert parse_schedule("0 * * * * *").adjust_for_dst is True
    assert parse_schedule("00:01:00").adjust_for_dst is False


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 */5 * * *", "six"),
        ("0 0 0 0 0 0 0", "six"),
        ("60 * * * * *", "second 60 is outside 0-59"),
        ("0 0 24 * * *", "hour 24"),
        ("0 0 0 32 * *", "day 32"),
        ("0 0 0 * 13 *", "month 13"),
        ("0 0 0 * * 7", "day of week 7"),
        ("0 0 0 * FOO *", "'FOO' is not a valid month"),
        ("*/0 * * * * *", "bad step"),
        ("0 30-10 * * * *", "runs backwards"),
        ("0 0 0 31 2 *", "never occurs"),
        ("hourly", "not recognized"),
    ],
)
def test_invalid_schedule_is_rejected_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expression)


def _brute_force_next(schedule: CronSchedule, after: dt.datetime) -> dt.datetime:
    moment = after.replace(microsecond=0) + dt.timedelta(seconds=1)
    while True:
        if (moment.second in schedule.seconds and moment.minute in schedule.minutes
                and moment.hour in schedule.hours and moment.day in schedule.days
                and moment.month in schedule.months and (moment.weekday() + 1) % 7 in schedule.weekdays):
            return moment
        moment += dt.timedelta(seconds=1)


_FIELD = st.sampled_from(["*", "*/7", "5", "1-20/3", "0,13,37", "10-12"])


@settings(max_examples=60, deadline=None)
@given(
    second=_FIELD, minute=_FIELD,
    hour=st.sampled_from(["*", "*/5", "3", "0-2"]),
    offset=st.integers(min_value=0, max_value=7 * 86400),
)
def test_next_occurrence_is_the_first_matching_second(second: str, minute: str, hour: str, offset: int) -> None:
    schedule = CronSchedule(f"{second} {minute} {hour} * * *")
    start = T0 + dt.timedelta(seconds=offset, microseconds=250)
    assert schedule.next_after(start) == _brute_force_next(schedule, start)
