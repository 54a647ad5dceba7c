"""History events of the Durable Functions out-of-process protocol, as the Durable extension sends them.

The SDK's orchestrator handle replays an orchestration from a list of these events (PascalCase keys,
`EventType` as the integer of `HistoryEventType`). Each builder returns a plain dict; `serialize` turns
one event into JSON once, so an episode's history is a join of cached strings rather than a re-dump of
every event (a 1,000-task fan-out keeps a few thousand events).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

Event = dict[str, Any]


class EventType(IntEnum):
    """`DurableTask.Core.History.EventType`, mirrored by the SDK's `HistoryEventType`."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """The extension's timestamp form: ISO 8601 in UTC with a `Z` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(kind: EventType, event_id: int, moment: datetime, **fields: Any) -> Event:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": iso(moment), **fields}


def execution_started(name: str, input_json: str | None, moment: datetime, *, version: str = "",
                      parent_instance_id: str | None = None) -> Event:
    # `Version` is required by SDK 1.7 (it reads it from this event); "" is what an unversioned start gets.
    fields: dict[str, Any] = {"Name": name, "Version": version, "Input": input_json}
    if parent_instance_id is not None:
        fields["ParentInstance"] = {"OrchestrationInstance": {"InstanceId": parent_instance_id}}
    return _event(EventType.EXECUTION_STARTED, -1, moment, **fields)


def orchestrator_started(moment: datetime) -> Event:
    return _event(EventType.ORCHESTRATOR_STARTED, -1, moment)


def orchestrator_completed(moment: datetime) -> Event:
    return _event(EventType.ORCHESTRATOR_COMPLETED, -1, moment)


def task_scheduled(seq: int, name: str, input_json: str | None, moment: datetime) -> Event:
    return _event(EventType.TASK_SCHEDULED, seq, moment, Name=name, Version="", Input=input_json)


def task_completed(seq: int, result_json: str | None, moment: datetime) -> Event:
    return _event(EventType.TASK_COMPLETED, -1, moment, TaskScheduledId=seq, Result=result_json)


def task_failed(seq: int, reason: str, details: str, moment: datetime) -> Event:
    return _event(EventType.TASK_FAILED, -1, moment, TaskScheduledId=seq, Reason=reason, Details=details)


def timer_created(seq: int, fire_at: datetime, moment: datetime) -> Event:
    return _event(EventType.TIMER_CREATED, seq, moment, FireAt=iso(fire_at))


def timer_fired(seq: int, fire_at: datetime, moment: datetime) -> Event:
    return _event(EventType.TIMER_FIRED, -1, moment, TimerId=seq, FireAt=iso(fire_at))


def sub_orchestration_created(seq: int, name: str, instance_id: str, input_json: str | None,
                              moment: datetime) -> Event:
    return _event(EventType.SUB_ORCHESTRATION_INSTANCE_CREATED, seq, moment, Name=name, Version="",
                  InstanceId=instance_id, Input=input_json)


def sub_orchestration_completed(seq: int, result_json: str | None, moment: datetime) -> Event:
    return _event(EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, -1, moment, TaskScheduledId=seq,
                  Result=result_json)


def sub_orchestration_failed(seq: int, reason: str, details: str, moment: datetime) -> Event:
    return _event(EventType.SUB_ORCHESTRATION_INSTANCE_FAILED, -1, moment, TaskScheduledId=seq,
                  Reason=reason, Details=details)


def event_raised(name: str, input_json: str | None, moment: datetime) -> Event:
    return _event(EventType.EVENT_RAISED, -1, moment, Name=name, Input=input_json)


def execution_completed(status: str, result_json: str | None, moment: datetime) -> Event:
    return _event(EventType.EXECUTION_COMPLETED, -1, moment, OrchestrationStatus=status, Result=result_json)


def execution_terminated(reason: str | None, moment: datetime) -> Event:
    return _event(EventType.EXECUTION_TERMINATED, -1, moment, Input=reason)


def serialize(event: Event, *, played: bool) -> str:
    """One event as JSON, with `IsPlayed` set as the extension does for past (True) or new (False) events."""
    event["IsPlayed"] = played
    return json.dumps(event, separators=(",", ":"))


def for_status(event: Event, *, show_output: bool) -> dict[str, Any]:
    """An event as the management API's `historyEvents` shows it (`EventType` by name, results optional)."""
    shown = {key: value for key, value in event.items() if key not in ("IsPlayed", "EventId")}
    shown["EventType"] = _STATUS_NAMES.get(event["EventType"], str(event["EventType"]))
    if not show_output:
        shown.pop("Result", None)
    return shown


_STATUS_NAMES = {
    EventType.EXECUTION_STARTED: "ExecutionStarted",
    EventType.EXECUTION_COMPLETED: "ExecutionCompleted",
    EventType.EXECUTION_TERMINATED: "ExecutionTerminated",
    EventType.TASK_SCHEDULED: "TaskScheduled",
    EventType.TASK_COMPLETED: "TaskCompleted",
    EventType.TASK_FAILED: "TaskFailed",
    EventType.SUB_ORCHESTRATION_INSTANCE_CREATED: "SubOrchestrationInstanceCreated",
    EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED: "SubOrchestrationInstanceCompleted",
    EventType.SUB_ORCHESTRATION_INSTANCE_FAILED: "SubOrchestrationInstanceFailed",
    EventType.TIMER_CREATED: "TimerCreated",
    EventType.TIMER_FIRED: "TimerFired",
    EventType.ORCHESTRATOR_STARTED: "OrchestratorStarted",
    EventType.ORCHESTRATOR_COMPLETED: "OrchestratorCompleted",
    EventType.EVENT_RAISED: "EventRaised",
    EventType.CONTINUE_AS_NEW: "ContinueAsNew",
}
