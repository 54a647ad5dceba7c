"""Orchestrator unit tests from Durable histories, without a host: the way the Durable Python SDK tests its
own replay (its tests/test_utils/ContextBuilder.py and orchestrator_test_utils.py).

A `History` is the JSON the Durable extension hands an orchestrator function: OrchestratorStarted,
ExecutionStarted with the input, then per episode the events the orchestrator's actions led to
(TaskScheduled/TaskCompleted/TaskFailed, TimerCreated/TimerFired, SubOrchestrationInstanceCreated/
Completed/Failed) and OrchestratorCompleted. `replay` runs an orchestrator function over it through the
SDK's own entry point (`DurableOrchestrationContext.from_json` and `Orchestrator.handle`) and returns the
orchestrator state: the actions it asks for, whether it is done, its output or error.

Task ids follow the SDK: every task an orchestrator yields (activity, timer, sub-orchestration, and the
timers and re-scheduled attempts of a retried activity) takes the next sequence number, and a completion
event names the task it completes by that number (`TaskScheduledId`, `TimerId`).

`drive` plays the part of the Durable extension for one orchestration: it replays the history, records
the new actions as scheduled, answers each (from `respond`, or a timer by firing it) in a new episode, and
replays again until the orchestrator is done. After every episode it checks determinism: replaying the
same history twice gives the same state, and a longer history repeats every action of the shorter one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.durable_functions.models import DurableOrchestrationContext
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.orchestrator import Orchestrator

START = datetime(2026, 11, 27, 8, 5, tzinfo=UTC)
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

OrchestratorFn = Callable[[DurableOrchestrationContext], Generator[Any, Any, Any]]


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_FORMAT)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class History:
    """The history of one orchestration instance, as JSON events."""

    def __init__(self, name: str, input_: Any, *, instance_id: str = "instance-1", start: datetime = START):
        self.name, self.input, self.instance_id = name, input_, instance_id
        self.now = start
        self.events: list[dict[str, Any]] = []
        self.next_id = 0  # the SDK's sequence number of the next task
        self.orchestrator_started()
        self._add(HistoryEventType.EXECUTION_STARTED, is_played=True, Name=name, Version="",
                  Input=json.dumps(input_), OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": "1"})

    def _add(self, event_type: HistoryEventType, *, event_id: int = -1, is_played: bool = False,
             **fields: Any) -> dict[str, Any]:
        event = {"EventType": int(event_type), "EventId": event_id, "IsPlayed": is_played,
                 "Timestamp": _timestamp(self.now), **fields}
        self.events.append(event)
        return event

    def _take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # Episodes: the orchestrator runs between an OrchestratorStarted and its OrchestratorCompleted.
    def orchestrator_started(self, seconds_later: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds_later)
        self._add(HistoryEventType.ORCHESTRATOR_STARTED)

    def orchestrator_completed(self) -> None:
        self._add(HistoryEventType.ORCHESTRATOR_COMPLETED)

    # What the orchestrator's actions lead to; each returns the task id the completion must name.
    def task_scheduled(self, name: str, input_: Any = None) -> int:
        task_id = self._take_id()
        self._add(HistoryEventType.TASK_SCHEDULED, event_id=task_id, Name=name, Version="", Input=input_)
        return task_id

    def task_completed(self, task_id: int, result: Any) -> None:
        self._add(HistoryEventType.TASK_COMPLETED, TaskScheduledId=task_id, Result=json.dumps(result))

    def task_failed(self, task_id: int, reason: str, details: str = "") -> None:
        self._add(HistoryEventType.TASK_FAILED, TaskScheduledId=task_id, Reason=reason, Details=details)

    def timer_created(self, fire_at: str) -> int:
        task_id = self._take_id()
        self._add(HistoryEventType.TIMER_CREATED, event_id=task_id, FireAt=fire_at)
        return task_id

    def timer_fired(self, timer_id: int, fire_at: str) -> None:
        self.now = max(self.now, parse_time(fire_at))
        self._add(HistoryEventType.TIMER_FIRED, is_played=True, TimerId=timer_id, FireAt=fire_at)

    def sub_orchestration_created(self, name: str, instance_id: str, input_: Any = None) -> int:
        task_id = self._take_id()
        self._add(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_CREATED, event_id=task_id, Name=name,
                  InstanceId=instance_id, Input=input_)
        return task_id

    def sub_orchestration_completed(self, task_id: int, result: Any) -> None:
        self._add(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, TaskScheduledId=task_id,
                  Result=json.dumps(result))

    def sub_orchestration_failed(self, task_id: int, reason: str, details: str = "") -> None:
        self._add(HistoryEventType.SUB_ORCHESTRATION_INSTANCE_FAILED, TaskScheduledId=task_id, Reason=reason,
                  Details=details)

    def to_json(self) -> str:
        """The orchestration trigger's payload, as the Durable extension sends it (replay schema V1)."""
        return json.dumps({"history": self.events, "input": json.dumps(self.input), "instanceId": self.instance_id,
                           "isReplaying": False, "parentInstanceId": None, "upperSchemaVersion": 0})


def replay(fn: OrchestratorFn, history: History) -> dict[str, Any]:
    """Run `fn` over `history` through the SDK's entry point; the orchestrator state, as JSON."""
    context = DurableOrchestrationContext.from_json(history.to_json())
    return json.loads(Orchestrator(fn).handle(context))


def flat_actions(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every action the orchestrator asked for so far, in order (V1 groups the actions of one yield)."""
    return [action for group in state.get("actions") or [] for action in group]


def action_input(action: dict[str, Any]) -> Any:
    raw = action.get("input")
    return json.loads(raw) if isinstance(raw, str) else raw


class ActivityFailed(Exception):
    """What `respond` raises for an activity (or sub-orchestration) the host fails."""


@dataclass
class Call:
    """One action the orchestrator asked for, as `respond` sees it. `attempt` counts the attempts of an
    activity called with retry (1 for every other action)."""

    kind: ActionType
    name: str
    input: Any
    attempt: int = 1
    instance_id: str | None = None


@dataclass
class Driven:
    """The end of `drive`: the final state, the history that led to it, and every call answered."""

    state: dict[str, Any]
    history: History
    calls: list[Call] = field(default_factory=list)
    episodes: int = 0

    @property
    def output(self) -> Any:
        return self.state.get("output")

    def named(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]


def drive(fn: OrchestratorFn, history: History, respond: Callable[[Call], Any], *,
          max_episodes: int = 200) -> Driven:
    """Play the Durable extension for `fn` until it is done; `respond` answers activities and
    sub-orchestrations (returns the result, or raises ActivityFailed), timers fire when due."""
    driven = Driven(state={}, history=history)
    seen: list[dict[str, Any]] = []
    for _ in range(max_episodes):
        state = replay(fn, history)
        assert replay(fn, history) == state, "the same history replayed gave other actions"
        actions = flat_actions(state)
        assert actions[:len(seen)] == seen, "a replay did not repeat the actions of the shorter history"
        new, seen = actions[len(seen):], actions
        driven.state, driven.episodes = state, driven.episodes + 1
        if state.get("isDone") or state.get("error") or not new:
            return driven
        scheduled = [(action, _schedule(history, action)) for action in new]
        history.orchestrator_completed()
        history.orchestrator_started()
        for action, task_id in scheduled:
            _answer(history, action, task_id, respond, driven)
    raise AssertionError(f"not done after {max_episodes} episodes")


def _schedule(history: History, action: dict[str, Any]) -> int:
    kind = ActionType(action["actionType"])
    if kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
        return history.task_scheduled(action["functionName"], action.get("input"))
    if kind == ActionType.CREATE_TIMER:
        return history.timer_created(action["fireAt"])
    if kind == ActionType.CALL_SUB_ORCHESTRATOR:
        instance = action.get("instanceId") or f"{history.instance_id}:{history.next_id}"
        return history.sub_orchestration_created(action["functionName"], instance, action.get("input"))
    raise AssertionError(f"unexpected action {action}")


def _answer(history: History, action: dict[str, Any], task_id: int, respond: Callable[[Call], Any],
            driven: Driven) -> None:
    kind = ActionType(action["actionType"])
    if kind == ActionType.CREATE_TIMER:
        history.timer_fired(task_id, action["fireAt"])
        return
    call = Call(kind, action["functionName"], action_input(action),
                instance_id=str(history.events[-1].get("InstanceId") or "") or None)
    if kind == ActionType.CALL_ACTIVITY_WITH_RETRY:
        _answer_with_retry(history, action, task_id, call, respond, driven)
        return
    driven.calls.append(call)
    sub = kind == ActionType.CALL_SUB_ORCHESTRATOR
    try:
        result = respond(call)
    except ActivityFailed as exc:
        (history.sub_orchestration_failed if sub else history.task_failed)(task_id, str(exc))
        return
    (history.sub_orchestration_completed if sub else history.task_completed)(task_id, result)


def _answer_with_retry(history: History, action: dict[str, Any], task_id: int, call: Call,
                       respond: Callable[[Call], Any], driven: Driven) -> None:
    """What the extension writes for CallActivityWithRetry: per failed attempt, TaskFailed, a retry timer
    (its own episodes) and the next TaskScheduled; after the last attempt one more timer, then failure."""
    options = action["retryOptions"]
    interval = timedelta(milliseconds=int(options["firstRetryIntervalInMilliseconds"]))
    for attempt in range(1, int(options["maxNumberOfAttempts"]) + 1):
        call = Call(call.kind, call.name, call.input, attempt=attempt)
        driven.calls.append(call)
        try:
            result = respond(call)
        except ActivityFailed as exc:
            history.task_failed(task_id, str(exc))
        else:
            history.task_completed(task_id, result)
            return
        fire_at = _timestamp(history.now + interval)
        timer_id = history.timer_created(fire_at)
        history.orchestrator_completed()
        history.orchestrator_started()
        history.timer_fired(timer_id, fire_at)
        if attempt < int(options["maxNumberOfAttempts"]):
            task_id = history.task_scheduled(call.name, action.get("input"))
        history.orchestrator_completed()
        history.orchestrator_started()
