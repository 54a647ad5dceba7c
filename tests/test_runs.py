"""Run ids follow the tick's scheduled time, not the clock."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.runs import run_id_for, tick_time

NOW = datetime(2026, 11, 27, 5, 7, 42, tzinfo=UTC)


def test_run_id_is_the_utc_minute_of_the_tick():
    assert run_id_for(datetime(2026, 11, 27, 5, 5, 0, tzinfo=UTC)) == "notify-20261127T0505"
    assert run_id_for(datetime(2026, 11, 27, 6, 5, 59, tzinfo=timezone(timedelta(hours=1)))) == \
        "notify-20261127T0505"


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        run_id_for(datetime(2026, 11, 27, 5, 5))


def test_tick_time_comes_from_the_schedule_status_next_occurrence():
    status = {"Last": "2026-11-27T05:00:00+00:00", "Next": "2026-11-27T05:05:00+00:00"}
    assert tick_time(status, NOW) == datetime(2026, 11, 27, 5, 5, tzinfo=UTC)


def test_a_naive_next_occurrence_is_read_as_utc():
    assert tick_time({"Next": "2026-11-27T05:05:00"}, NOW) == datetime(2026, 11, 27, 5, 5, tzinfo=UTC)


@pytest.mark.parametrize("status", [None, {}, {"Next": ""}, {"Next": "not a time"}])
def test_without_a_usable_status_the_tick_is_the_current_minute(status):
    assert tick_time(status, NOW) == datetime(2026, 11, 27, 5, 7, tzinfo=UTC)
