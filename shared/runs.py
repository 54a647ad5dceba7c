"""Run ids: one notification run per timer tick, named after the tick's scheduled time (design.md, "Runs").

Deriving the id from the schedule rather than the clock makes a tick that fires twice (a lost timer lease,
a restart) start the same orchestration instance, which the Durable extension refuses while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

RUN_ID_PREFIX = "notify-"


def run_id_for(scheduled: datetime) -> str:
    """`notify-<UTC time to the minute>`, e.g. notify-20261127T0505."""
    if scheduled.tzinfo is None:
        raise ValueError("scheduled time must be timezone-aware")
    return RUN_ID_PREFIX + scheduled.astimezone(UTC).strftime("%Y%m%dT%H%M")


def tick_time(schedule_status: Mapping[str, object] | None, now: datetime) -> datetime:
    """The scheduled time of the current timer tick.

    The timer listener hands the function the schedule status recorded before this invocation, whose
    `Next` is the occurrence now firing. A manual run through the admin API gets the same stored status,
    so it shares the id of the upcoming tick: that tick then finds the run in progress, or starts it again
    once finished, which is harmless because every run sweeps the pending markers. Without a status
    (monitoring off, or the very first run before anything was recorded) the tick is the current minute.
    """
    raw = (schedule_status or {}).get("Next")
    if isinstance(raw, str) and raw:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            logger.warning("timer schedule status has an unreadable Next value; using the current minute")
        else:
            # The host serialises UTC without an offset in some versions; a naive value is UTC.
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return now.astimezone(UTC).replace(second=0, microsecond=0)
