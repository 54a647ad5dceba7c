"""Fault plan for crash tests: kill the host at a chosen point, or deliver an activity twice.

Set over HTTP (`POST /admin/local/faults`, master key) with a JSON body such as
`{"crash": {"point": "after_activity", "function": "record_side_effect", "occurrence": 1}}` or
`{"duplicate_delivery": {"function": "record_side_effect", "count": 1}}`; `{}` clears the plan.

Crash points:
- `before_activity`: the activity is about to run; nothing of it has happened.
- `after_activity`: the activity function returned (its side effect is done) and its completion is not
  yet recorded in the orchestration history.
- `after_episode`: the orchestrator function returned from an episode and its decisions are not yet
  applied (nothing of that episode is scheduled).

A crash is `os._exit(137)`: no cleanup, no flushing beyond the log line written just before, like a
worker killed by the platform. Unlike Azure, where the task hub in Azure Storage keeps the orchestration
and another worker resumes it from its history, the local host keeps Durable state in memory: after a
crash it is gone, and a host started again knows no instances (the fault plan is gone too).

Duplicate delivery runs the activity `1 + count` times for one scheduled task, as the at-least-once
queues of the Azure Storage backend can, and records one completion.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

CRASH_POINTS = ("before_activity", "after_activity", "after_episode")
CRASH_EXIT_CODE = 137


class FaultPlanError(ValueError):
    """The fault plan body is not valid."""


@dataclass
class CrashFault:
    point: str
    function: str
    occurrence: int
    seen: int = 0


@dataclass
class DuplicateDelivery:
    function: str
    count: int


class FaultPlan:
    """The active faults; replaced as a whole by each POST."""

    def __init__(self) -> None:
        self.crash: CrashFault | None = None
        self.duplicate: DuplicateDelivery | None = None

    def configure(self, body: dict[str, Any]) -> None:
        crash = body.get("crash")
        duplicate = body.get("duplicate_delivery")
        new_crash = _parse_crash(crash) if crash is not None else None
        new_duplicate = _parse_duplicate(duplicate) if duplicate is not None else None
        self.crash, self.duplicate = new_crash, new_duplicate
        logger.warning("Durable fault plan set: crash=%s duplicate_delivery=%s", new_crash, new_duplicate)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {}
        if self.crash is not None:
            described["crash"] = {"point": self.crash.point, "function": self.crash.function,
                                  "occurrence": self.crash.occurrence, "seen": self.crash.seen}
        if self.duplicate is not None:
            described["duplicate_delivery"] = {"function": self.duplicate.function,
                                               "count": self.duplicate.count}
        return described

    def checkpoint(self, point: str, function: str, instance_id: str) -> None:
        """Die here if the plan says so."""
        crash = self.crash
        if crash is None or crash.point != point or crash.function != function:
            return
        crash.seen += 1
        if crash.seen != crash.occurrence:
            return
        logger.critical("Fault plan: host crashing at %s of '%s' (instance %s)", point, function, instance_id)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)

    def extra_deliveries(self, function: str) -> int:
        duplicate = self.duplicate
        return duplicate.count if duplicate is not None and duplicate.function == function else 0


def _parse_crash(raw: object) -> CrashFault:
    if not isinstance(raw, dict):
        raise FaultPlanError("'crash' must be an object")
    point, function, occurrence = raw.get("point"), raw.get("function"), raw.get("occurrence", 1)
    if point not in CRASH_POINTS:
        raise FaultPlanError(f"'crash.point' must be one of {', '.join(CRASH_POINTS)}")
    if not isinstance(function, str) or not function:
        raise FaultPlanError("'crash.function' must name a function")
    if not isinstance(occurrence, int) or occurrence < 1:
        raise FaultPlanError("'crash.occurrence' must be a positive integer")
    return CrashFault(point=point, function=function, occurrence=occurrence)


def _parse_duplicate(raw: object) -> DuplicateDelivery:
    if not isinstance(raw, dict):
        raise FaultPlanError("'duplicate_delivery' must be an object")
    function, count = raw.get("function"), raw.get("count", 1)
    if not isinstance(function, str) or not function:
        raise FaultPlanError("'duplicate_delivery.function' must name a function")
    if not isinstance(count, int) or count < 1:
        raise FaultPlanError("'duplicate_delivery.count' must be a positive integer")
    return DuplicateDelivery(function=function, count=count)
