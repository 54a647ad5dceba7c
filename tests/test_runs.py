"""Run ids follow the tick's scheduled time, not the clock, for the timer's own start; every other start
gets an id of its own."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.runs import MANUAL, RERUN, distinct_run_id, is_timer_start, run_id_for, tick_time

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


STATUS = {"Last": "2026-11-27T05:00:00+00:00", "Next": "2026-11-27T05:05:00+00:00"}


def test_a_manual_start_before_the_next_occurrence_is_not_the_timer_start():
    assert is_timer_start(STATUS, datetime(2026, 11, 27, 5, 3, 10, tzinfo=UTC)) is False


@pytest.mark.parametrize("now", [datetime(2026, 11, 27, 5, 5, 0, 300000, tzinfo=UTC),
                                 datetime(2026, 11, 27, 5, 4, 58, tzinfo=UTC),  # woke a moment early
                                 datetime(2026, 11, 27, 5, 9, 0, tzinfo=UTC)])  # past due
def test_the_timer_firing_for_its_occurrence_is_the_timer_start(now):
    assert is_timer_start(STATUS, now) is True


def test_without_a_status_the_start_is_taken_for_the_timer_start():
    assert is_timer_start(None, NOW) is True


def test_manual_and_rerun_ids_never_equal_the_tick_id_nor_each_other():
    tick = run_id_for(tick_time(STATUS, NOW))
    ids = {distinct_run_id(tick, MANUAL, NOW), distinct_run_id(tick, MANUAL, NOW), distinct_run_id(tick, RERUN, NOW)}
    assert len(ids) == 3 and tick not in ids
    assert all(i.startswith(tick + "-") for i in ids)
    assert distinct_run_id(tick, MANUAL, NOW, nonce="ab12cd") == "notify-20261127T0505-manual-20261127T050742000-ab12cd"
