"""Run ids: every notification run has its own id (docs/NOTIFICATIONS.md, "Run ids").

The timer's own start of a tick is named after the tick's scheduled time, `notify-<UTC minute>`: a tick
that fires twice while its run is in progress (a lost timer lease, a restart) starts the same
orchestration instance, which the Durable extension refuses. Any other start gets a distinct id, so no run
ever reuses the id of one that completed: a run id names the digests it sends in the delivery log, and a
reused id would make a later run's digests look already sent.

- a manual start (the admin API, the portal's Run button) runs before the occurrence its schedule status
  names: `notify-<tick>-manual-<start time>-<nonce>`;
- a start of a tick whose run already finished (the timer firing again after the run completed):
  `notify-<tick>-rerun-<start time>-<nonce>`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

logger = logging.getLogger(__name__)

RUN_ID_PREFIX = "notify-"
MANUAL, RERUN = "manual", "rerun"
# A timer may wake a moment before its occurrence (the listener then counts from the occurrence); a
# manual run a few seconds before a tick is taken for the tick, which only delays its work: an id that
# completed is never reused either way (see distinct_run_id).
EARLY_FIRE_TOLERANCE = timedelta(seconds=5)


def run_id_for(scheduled: datetime) -> str:
    """`notify-<UTC time to the minute>`, e.g. notify-20261127T0505."""
    if scheduled.tzinfo is None:
        raise ValueError("scheduled time must be timezone-aware")
    return RUN_ID_PREFIX + scheduled.astimezone(UTC).strftime("%Y%m%dT%H%M")


def distinct_run_id(tick_run_id: str, kind: str, now: datetime, nonce: str | None = None) -> str:
    """An id of its own for a start that is not the timer's first start of the tick: the tick's id, why
    (`manual` or `rerun`), the start time to the millisecond and a random nonce (two starts in one
    millisecond still differ)."""
    if kind not in (MANUAL, RERUN):
        raise ValueError(f"unknown run kind {kind!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    moment = now.astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}"
    return f"{tick_run_id}-{kind}-{stamp}-{nonce or secrets.token_hex(3)}"


def _next_occurrence(schedule_status: Mapping[str, object] | None) -> datetime | None:
    raw = (schedule_status or {}).get("Next")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        logger.warning("timer schedule status has an unreadable Next value; using the current minute")
        return None
    # The host serialises UTC without an offset in some versions; a naive value is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def tick_time(schedule_status: Mapping[str, object] | None, now: datetime) -> datetime:
    """The scheduled time of the current timer tick.

    The timer listener hands the function the schedule status recorded before this invocation, whose
    `Next` is the occurrence now firing. A manual run through the admin API gets the same stored status,
    so its tick is the upcoming one (`is_timer_start` tells the two apart). Without a status (monitoring
    off, or the very first run before anything was recorded) the tick is the current minute.
    """
    parsed = _next_occurrence(schedule_status)
    if parsed is not None:
        return parsed
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def is_timer_start(schedule_status: Mapping[str, object] | None, now: datetime) -> bool:
    """Whether this invocation is the timer firing for its occurrence rather than a manual run.

    The TimerInfo of both carries the same status and `IsPastDue` false, so the difference is the time:
    the listener fires at (or a moment before) the recorded `Next`, or later when past due, while a
    manual run comes before it (the status only moves after the timer's own invocation). Without a
    status nothing tells them apart; the start is taken for the timer's, and `distinct_run_id` still
    keeps a second start of a completed id from reusing it.
    """
    upcoming = _next_occurrence(schedule_status)
    return upcoming is None or now >= upcoming - EARLY_FIRE_TOLERANCE
