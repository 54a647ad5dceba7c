"""Timer triggers fire as the Functions host's TimerListener fires them: NCRONTAB schedules from
`%SETTING%`, run_on_startup, no overlap, schedule status and past_due (tests/host/apps/http_app)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.run.services import LocalHost, start_host

APP_ROOT = Path(__file__).resolve().parent / "apps" / "http_app"
NEVER = "0 0 0 1 1 *"
EVERY_SECOND = "*/1 * * * * *"
EVERY_FIVE_MINUTES = "0 */5 * * * *"


def schedules(**overrides: str) -> dict[str, str]:
    base = {name: NEVER for name in
            ("TICK_SCHEDULE", "STARTUP_SCHEDULE", "SLOW_TICK_SCHEDULE", "MONITORED_SCHEDULE")}
    return {**base, **overrides}


def records(host: LocalHost, kind: str) -> list[dict[str, Any]]:
    body = requests.get(f"{host.url}/api/records", timeout=30).json()
    return [r for r in body if r["kind"] == kind]


def wait_until(check: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(message)


@pytest.fixture(scope="module")
def ticking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    """A host whose `tick` fires every second, `slow_tick` every second for 1.5 s, `startup` on start."""
    log_dir = tmp_path_factory.mktemp("timer-host")
    settings = schedules(TICK_SCHEDULE=EVERY_SECOND, SLOW_TICK_SCHEDULE=EVERY_SECOND)
    service = start_host(APP_ROOT, settings, log_path=log_dir / "host.log")
    yield service
    service.stop()


def test_timer_fires_on_its_ncrontab_schedule_from_a_setting(ticking: LocalHost) -> None:
    ticks = wait_until(lambda: len(records(ticking, "tick")) >= 3 and records(ticking, "tick"), 10,
                       "tick did not fire three times")
    times = [r["at"] for r in ticks]
    # Bounds loose enough for a loaded machine: a once-a-second schedule never leaves a 2 s gap.
    for earlier, later in zip(times, times[1:], strict=False):
        assert later - earlier <= 2.0


def test_timer_request_has_schedule_and_no_status_below_one_minute(ticking: LocalHost) -> None:
    tick = wait_until(lambda: records(ticking, "tick"), 5, "tick never fired")[0]
    # Schedule monitoring is off by default for schedules that fire more than once a minute.
    assert tick["status"] == {}
    assert tick["schedule"] == {"AdjustForDST": True}
    assert tick["past_due"] is False


def test_run_on_startup_fires_once_when_the_host_starts(ticking: LocalHost) -> None:
    wait_until(lambda: records(ticking, "tick"), 5, "tick never fired")
    startup = records(ticking, "startup")
    assert len(startup) == 1
    assert startup[0]["past_due"] is False


def test_invocations_of_one_timer_never_overlap(ticking: LocalHost) -> None:
    slow = wait_until(lambda: len(records(ticking, "slow_tick")) >= 3 and records(ticking, "slow_tick"), 8,
                      "slow_tick did not fire three times")
    for earlier, later in zip(slow, slow[1:], strict=False):
        assert later["start"] >= earlier["end"]
        # The occurrence missed while it ran is not past due (only a missed occurrence at startup is).
        assert later["past_due"] is False


def test_invocations_are_logged_with_the_timer_reason(ticking: LocalHost) -> None:
    wait_until(lambda: records(ticking, "tick"), 5, "tick never fired")
    log = ticking.log_path.read_text()
    assert "Executing 'Functions.tick' (Reason='Timer fired at " in log
    assert "Executed 'Functions.tick' (Succeeded, Id=" in log


def _seed_status(state_dir: Path, name: str, status: dict[str, str]) -> Path:
    path = state_dir / "timers" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status))
    return path


def _five_minute_marks() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    mark = now - dt.timedelta(minutes=now.minute % 5)
    return mark - dt.timedelta(minutes=10), mark - dt.timedelta(minutes=5)


def test_missed_occurrence_fires_past_due_at_startup_with_the_recorded_status(tmp_path: Path) -> None:
    last, missed = _five_minute_marks()
    recorded = {"Last": last.isoformat(), "Next": missed.isoformat(), "LastUpdated": last.isoformat()}
    status_file = _seed_status(tmp_path / "state", "monitored", recorded)
    host = start_host(APP_ROOT, schedules(MONITORED_SCHEDULE=EVERY_FIVE_MINUTES), log_path=tmp_path / "host.log",
                      env={"LOCAL_HOST_STATE_DIR": str(tmp_path / "state")})
    try:
        fired = wait_until(lambda: records(host, "monitored"), 5, "the past-due timer did not fire")
        assert len(fired) == 1
        assert fired[0]["past_due"] is True
        # The function sees the status recorded before this invocation.
        assert fired[0]["status"] == recorded
        updated = wait_until(lambda: json.loads(status_file.read_text())["Last"] != recorded["Last"]
                             and json.loads(status_file.read_text()), 5, "status was not updated")
        assert dt.datetime.fromisoformat(updated["Next"]) > dt.datetime.now(dt.UTC)
        assert "Function 'monitored' is past due on startup. Executing now." in host.log_path.read_text()
    finally:
        host.stop()


def test_timer_is_not_past_due_when_the_recorded_next_is_ahead(tmp_path: Path) -> None:
    # A yearly schedule, recorded at its last occurrence: the next one is months ahead.
    year = dt.datetime.now(dt.UTC).year
    last, ahead = dt.datetime(year, 1, 1, tzinfo=dt.UTC), dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    recorded = {"Last": last.isoformat(), "Next": ahead.isoformat(), "LastUpdated": last.isoformat()}
    _seed_status(tmp_path / "state", "monitored", recorded)
    host = start_host(APP_ROOT, schedules(MONITORED_SCHEDULE=NEVER), log_path=tmp_path / "host.log",
                      env={"LOCAL_HOST_STATE_DIR": str(tmp_path / "state")})
    try:
        # The listener logs the schedule once it has decided about past due; a past-due run would be logged
        # and started right after, in the same step.
        wait_until(lambda: "The next 5 occurrences of the 'monitored' schedule" in host.log_path.read_text(), 10,
                   "the monitored timer's listener never started")
        assert "Function 'monitored' is past due" not in host.log_path.read_text()
        assert "monitored" not in host.admin("GET", "local/stats").json()["invocations"]["functions"]
        assert records(host, "monitored") == []
    finally:
        host.stop()


def test_unset_schedule_setting_is_reported_by_name_and_other_timers_still_run(tmp_path: Path) -> None:
    settings = schedules(TICK_SCHEDULE=EVERY_SECOND)
    del settings["MONITORED_SCHEDULE"]
    host = start_host(APP_ROOT, settings, log_path=tmp_path / "host.log")
    try:
        errors = host.admin("GET", "host/status").json()["errors"]
        assert any("MONITORED_SCHEDULE" in e and e.startswith("monitored:") for e in errors)
        assert "app setting 'MONITORED_SCHEDULE' used in the schedule of Functions.monitored is not set" \
            in host.log_path.read_text()
        wait_until(lambda: records(host, "tick"), 5, "tick did not fire")
    finally:
        host.stop()
