"""In-memory orchestration instances: history, runtime status and the bookkeeping the engine needs.

Differs from Azure on purpose: the Durable extension keeps this state in the task hub (Azure Storage
tables, queues and blobs), so it survives a worker dying. Here it lives in the host process and is lost
when the process ends, which is what the crash tests rely on: a restarted host starts with no instances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from local.host.durable import history
from local.host.durable.history import Event


class RuntimeStatus(StrEnum):
    """`OrchestrationRuntimeStatus` as the management API spells it."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TERMINATED = "Terminated"

    @property
    def is_terminal(self) -> bool:
        return self in (RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED)


@dataclass
class RetryGroup:
    """A `call_*_with_retry` task: the DTFx retry interceptor's state (attempts, the pending timer)."""

    kind: str  # "activity" | "suborchestration"
    name: str
    input_json: str | None
    first_interval_ms: int
    max_attempts: int
    backoff: float
    max_interval_ms: int | None
    timeout_ms: int | None
    started: datetime
    sub_instance_id: str | None = None
    attempts: int = 1
    current_seq: int = -1
    timer_seq: int | None = None
    last_failure: tuple[str, str] | None = None


@dataclass
class Instance:
    """One orchestration instance (one execution; `continue_as_new` resets the execution fields)."""

    instance_id: str
    name: str
    input_json: str | None
    created: datetime
    parent_id: str | None = None
    parent_seq: int | None = None
    #: The parent's execution that scheduled this sub-orchestration (its completion goes only there).
    parent_execution: int = 0
    #: Bumped by `continue_as_new`, so completions of the previous execution are dropped.
    execution: int = 0
    status: RuntimeStatus = RuntimeStatus.PENDING
    last_updated: datetime | None = None
    output: Any = None
    custom_status: Any = None
    # Committed history: events and their JSON with IsPlayed=true, serialised once.
    events: list[Event] = field(default_factory=list)
    events_json: list[str] = field(default_factory=list)
    # Completions that arrived since the last episode, appended together before the next one.
    inbox: list[Event] = field(default_factory=list)
    next_seq: int = 0
    scheduled_actions: int = 0
    #: Activities of this execution running now (their completions are worth waiting a moment for).
    in_flight: int = 0
    #: (kind, name) of every action scheduled so far, to detect a non-deterministic orchestrator.
    action_keys: list[tuple[str, str]] = field(default_factory=list)
    retry_by_seq: dict[int, RetryGroup] = field(default_factory=dict)
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    episode_task: asyncio.Task[None] | None = None
    replays: int = 0

    def __post_init__(self) -> None:
        self.last_updated = self.created

    def commit(self, events: Iterable[Event]) -> None:
        for event in events:
            self.events.append(event)
            self.events_json.append(history.serialize(event, played=True))

    def reset_execution(self, input_json: str | None) -> None:
        """Start over with a fresh history, as `continue_as_new` does (same instance id)."""
        self.input_json = input_json
        self.execution += 1
        self.in_flight = 0
        self.events = []
        self.events_json = []
        self.next_seq = 0
        self.scheduled_actions = 0
        self.action_keys = []
        self.retry_by_seq = {}
        self.cancel_timers()

    def cancel_timers(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers = {}

    def status_json(self, *, show_input: bool = True, show_history: bool = False,
                    show_history_output: bool = False) -> dict[str, Any]:
        """The management API's status payload (`StatusResponsePayload` of the extension)."""
        payload: dict[str, Any] = {
            "name": self.name,
            "instanceId": self.instance_id,
            "runtimeStatus": str(self.status),
            # The stored input is the JSON text the client sent; the extension returns it as that string.
            "input": self.input_json if show_input else None,
            "customStatus": self.custom_status,
            "output": self.output,
            "createdTime": _status_time(self.created),
            "lastUpdatedTime": _status_time(self.last_updated or self.created),
        }
        if show_history:
            payload["historyEvents"] = [
                history.for_status(event, show_output=show_history_output)
                for event in self.events
                if event["EventType"] not in (history.EventType.ORCHESTRATOR_STARTED,
                                              history.EventType.ORCHESTRATOR_COMPLETED)
            ]
        return payload


def _status_time(moment: datetime) -> str:
    # The extension formats these with the "s" pattern plus "Z": whole seconds, UTC.
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class InstanceStore:
    """Instances by id, with the list query the management API offers."""

    def __init__(self) -> None:
        self._instances: dict[str, Instance] = {}

    def get(self, instance_id: str) -> Instance | None:
        return self._instances.get(instance_id)

    def put(self, instance: Instance) -> None:
        self._instances[instance.instance_id] = instance

    def delete(self, instance_id: str) -> bool:
        return self._instances.pop(instance_id, None) is not None

    def query(self, *, created_from: datetime | None = None, created_to: datetime | None = None,
              statuses: set[RuntimeStatus] | None = None, prefix: str | None = None) -> list[Instance]:
        found = []
        for instance in self._instances.values():
            if created_from is not None and instance.created < created_from:
                continue
            if created_to is not None and instance.created > created_to:
                continue
            if statuses and instance.status not in statuses:
                continue
            if prefix and not instance.instance_id.startswith(prefix):
                continue
            found.append(instance)
        return found
