"""The Durable Functions engine of the local host: schedules orchestrations, activities, timers and
sub-orchestrations, and replays orchestrations through the SDK's own orchestrator handle.

How it mirrors the Durable extension (out-of-process protocol, Azure Storage backend):
- Each episode calls the orchestrator function (the `Orchestrator.create(fn)` handle the app registered)
  with the context JSON the extension sends: `history`, `instanceId`, `isReplaying`, `parentInstanceId`,
  `input`, `upperSchemaVersion` 1 with `upperSchemaVersionNew` 2 (the extension's V2/V3 pair; SDK 1.7
  picks V3) and the Azure Storage timer limits. Under V2+ the SDK returns one flat action list holding
  every action since the execution began, `task_all`/`task_any` as compound WhenAll (12)/WhenAny (11)
  actions; the engine flattens it depth-first and schedules only the actions past the ones already
  scheduled, giving each the next sequence number (the `EventId` of TaskScheduled/TimerCreated/
  SubOrchestrationInstanceCreated, the `TaskScheduledId`/`TimerId` of its completion).
- Completions that arrive while an orchestration is queued or running are appended together before its
  next episode: one replay per batch. History per episode: OrchestratorStarted, the batch, the events of
  what the episode scheduled, OrchestratorCompleted.
- `call_*_with_retry` is the DTFx retry interceptor: after a failed attempt a durable timer (first
  interval; Python's RetryOptions has no backoff) and, when it fires, a new attempt with a new sequence
  number, until max attempts; after the last failed attempt one more timer fires before the failure
  surfaces, which is what the SDK's replay expects. Retry follow-ups take their sequence numbers before
  the episode's new actions, as they do in the SDK's replay (see `_ordered_batch`).
- Activities run on a bounded pool (`maxConcurrentActivityFunctions`), episodes are limited by
  `maxConcurrentOrchestratorFunctions`, and one instance never runs two episodes at once.

Differences from Azure: state is in memory (`instances.py`); entities, durable HTTP and versioning are
not implemented (an orchestration that uses them fails with a message saying so); a sub-orchestration
without an explicit instance id gets `<parent id>:<sequence number>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.functions import meta

from local.host.durable import history
from local.host.durable.faults import FaultPlan
from local.host.durable.history import Event, EventType
from local.host.durable.instances import Instance, InstanceStore, RetryGroup, RuntimeStatus

logger = logging.getLogger(__name__)

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"

# Azure Storage backend defaults the extension passes for long timers (6 days max, 3-day intervals).
MAXIMUM_SHORT_TIMER_DURATION = "6.00:00:00"
LONG_RUNNING_TIMER_INTERVAL = "3.00:00:00"
OUT_OF_PROC_MARKER = "$OutOfProcData$:"
BATCH_WINDOW_S = 0.01

_CALL_ACTIVITY, _CALL_ACTIVITY_RETRY, _CALL_SUB, _CALL_SUB_RETRY = 0, 1, 2, 3
_CONTINUE_AS_NEW, _CREATE_TIMER, _WAIT_FOR_EVENT = 4, 5, 6
_WHEN_ANY, _WHEN_ALL = 11, 12
_UNSUPPORTED = {7: "entities (call_entity)", 8: "durable HTTP (call_http)", 9: "entities (signal_entity)"}


class DurableError(Exception):
    """A management request the engine refuses; `status` is the HTTP status the extension returns."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DurableEngine:
    """Runs the app's orchestrators and activities; the host constructs it and mounts `routes()`.

    `master_key` and `function_key` are the host's keys. The webhook URLs of the client binding carry the
    engine's own system key as `code`, as the real ones carry the `durabletask_extension` system key (so
    a check-status URL handed to an HTTP caller never reveals the master key); the webhooks accept that
    key and the master key only, as Azure's do (`function_key` is kept for the host's wiring). The
    `/admin/local/...` routes need the master key (unchecked when the host gives none).
    """

    def __init__(self, functions: Mapping[str, Any], invoker: Any, *, hub_name: str,
                 max_concurrent_activities: int, max_concurrent_orchestrations: int, base_url: str,
                 master_key: str | None = None, function_key: str | None = None) -> None:
        self.hub_name = hub_name
        self.base_url = base_url.rstrip("/")
        self.master_key = master_key
        self.function_key = function_key
        self.system_key = secrets.token_urlsafe(32)
        self._client_binding_json = self._binding_json()
        self.invoker = invoker
        self.orchestrators = {n: f for n, f in functions.items() if f.trigger_type == ORCHESTRATION_TRIGGER}
        self.activities = {n: f for n, f in functions.items() if f.trigger_type == ACTIVITY_TRIGGER}
        self.max_concurrent_activities = max(1, max_concurrent_activities)
        self.max_concurrent_orchestrations = max(1, max_concurrent_orchestrations)
        self.store = InstanceStore()
        self.faults = FaultPlan()
        self._activity_slots: asyncio.Semaphore | None = None
        self._episode_slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Child instance id -> (that child, the parent Instance that scheduled it). The parent's execution
        # counter alone cannot tell a parent from a new instance started later with the same id (it
        # restarts at 0), so a child's completion goes only to the very Instance that scheduled it.
        self._sub_parents: dict[str, tuple[Instance, Instance]] = {}
        self._running = False

    # --- lifecycle and host wiring ----------------------------------------------------------------------

    async def start(self) -> None:
        self._activity_slots = asyncio.Semaphore(self.max_concurrent_activities)
        self._episode_slots = asyncio.Semaphore(self.max_concurrent_orchestrations)
        self._running = True
        logger.info("Durable engine started: hub %s, %d orchestrators, %d activities, activity slots %d, "
                    "orchestrator slots %d", self.hub_name, len(self.orchestrators), len(self.activities),
                    self.max_concurrent_activities, self.max_concurrent_orchestrations)

    async def stop(self) -> None:
        self._running = False
        for instance in self.store.query():
            instance.cancel_timers()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("Durable engine stopped")

    def routes(self) -> list[Any]:
        from local.host.durable.rpc import build_routes

        return build_routes(self)

    def client_binding_json(self) -> str:
        """What the extension passes a `durableClient` binding (`DurableOrchestrationBindings`)."""
        return self._client_binding_json

    def _binding_json(self) -> str:
        webhook = f"{self.base_url}/runtime/webhooks/durabletask"
        code = f"code={self.system_key}"
        suffix = f"taskHub={self.hub_name}&connection=Storage&{code}"
        instance = f"{webhook}/instances/INSTANCEID"
        return json.dumps({
            "taskHubName": self.hub_name,
            "creationUrls": {
                "createNewInstancePostUri": f"{webhook}/orchestrators/{{functionName}}[/{{instanceId}}]?{code}",
                "createAndWaitOnNewInstancePostUri":
                    f"{webhook}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{code}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{suffix}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{suffix}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{suffix}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{suffix}",
                "purgeHistoryDeleteUri": f"{instance}?{suffix}",
                "restartPostUri": f"{instance}/restart?{suffix}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{suffix}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{suffix}",
            },
            "baseUrl": webhook,
            "requiredQueryStringParameters": code,
            "rpcBaseUrl": f"{self.base_url}/durabletask/",
            "httpBaseUrl": "",
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        })

    # --- management operations (rpc.py) -------------------------------------------------------------------

    def start_instance(self, name: str, instance_id: str | None, input_json: str | None) -> Instance:
        if name not in self.orchestrators:
            raise DurableError(400, f"The function '{name}' doesn't exist, is disabled, or is not an "
                                    "orchestrator function.")
        instance_id = instance_id or uuid.uuid4().hex
        existing = self.store.get(instance_id)
        if existing is not None and not existing.status.is_terminal:
            # DTFx's OrchestrationAlreadyExistsException, which the extension's HTTP API turns into 409.
            raise DurableError(409, f"An Orchestration instance with the status {existing.status} "
                                    "already exists.")
        if existing is not None:
            existing.cancel_timers()
        instance = self._new_instance(name, instance_id, input_json, parent=None)
        logger.info("Orchestration '%s' scheduled: instance %s", name, instance_id)
        return instance

    def terminate(self, instance_id: str, reason: str | None) -> None:
        instance = self._require(instance_id)
        if instance.status.is_terminal:
            raise DurableError(410, f"The instance {instance_id} is already {instance.status}.")
        now = history.utc_now()
        instance.commit([history.execution_terminated(reason, now)])
        self._finish(instance, RuntimeStatus.TERMINATED, reason, now)
        logger.warning("Orchestration '%s' terminated: instance %s", instance.name, instance_id)

    def raise_event(self, instance_id: str, event_name: str, data_json: str | None) -> None:
        instance = self._require(instance_id)
        if instance.status.is_terminal:
            raise DurableError(410, f"The instance {instance_id} is already {instance.status}.")
        self._deliver(instance, instance.execution, history.event_raised(event_name, data_json,
                                                                         history.utc_now()))

    def purge(self, instance_id: str) -> int:
        instance = self._require(instance_id)
        if not instance.status.is_terminal:
            raise DurableError(412, "Only orchestrations in a terminal state can be purged, but the "
                                    f"orchestration with instance ID {instance_id} has status {instance.status}")
        self.store.delete(instance_id)
        return 1

    def _require(self, instance_id: str) -> Instance:
        instance = self.store.get(instance_id)
        if instance is None:
            raise DurableError(404, f"No instance with ID '{instance_id}' found.")
        return instance

    async def run_activity_directly(self, name: str, count: int, input_json: str | None) -> float:
        """Run an activity `count` times on the same pool and invoker, without orchestration; seconds.

        The benchmark's bound: what the pool alone costs for the same calls.
        """
        fn = self.activities.get(name)
        if fn is None:
            raise DurableError(404, f"No activity function named '{name}'.")
        started = time.perf_counter()

        async def one() -> None:
            assert self._activity_slots is not None  # noqa: S101 - set by start()
            async with self._activity_slots:
                await self.invoker.invoke(fn, {fn.trigger_name: meta.Datum(input_json or "null", "json")},
                                          reason="Durable benchmark bound (direct call)")

        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started

    # --- instances and delivery ---------------------------------------------------------------------------

    def _new_instance(self, name: str, instance_id: str, input_json: str | None,
                      parent: tuple[str, int] | None, parent_execution: int = 0) -> Instance:
        now = history.utc_now()
        instance = Instance(instance_id=instance_id, name=name, input_json=input_json, created=now,
                            parent_id=parent[0] if parent else None, parent_seq=parent[1] if parent else None,
                            parent_execution=parent_execution)
        self.store.put(instance)
        instance.inbox.append(history.execution_started(
            name, input_json, now, parent_instance_id=instance.parent_id))
        self._schedule_episode(instance)
        return instance

    def _live(self, instance: Instance, execution: int) -> bool:
        return (self.store.get(instance.instance_id) is instance and instance.execution == execution
                and not instance.status.is_terminal)

    def _deliver(self, instance: Instance, execution: int, event: Event) -> None:
        """Queue a completion for the instance's next episode (dropped if that execution is over)."""
        if not self._live(instance, execution):
            logger.debug("Dropping event %s for finished instance %s", event["EventType"], instance.instance_id)
            return
        instance.inbox.append(event)
        self._schedule_episode(instance)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_episode(self, instance: Instance) -> None:
        if instance.episode_task is None and self._running:
            instance.episode_task = asyncio.get_running_loop().create_task(self._run_episodes(instance))
            self._tasks.add(instance.episode_task)
            instance.episode_task.add_done_callback(self._tasks.discard)

    async def _run_episodes(self, instance: Instance) -> None:
        try:
            assert self._episode_slots is not None  # noqa: S101 - set by start()
            while instance.inbox and self._live(instance, instance.execution):
                if instance.in_flight:
                    # Like the extension's batched queue reads: let completions of running activities join
                    # this batch instead of paying one replay each.
                    await asyncio.sleep(BATCH_WINDOW_S)
                async with self._episode_slots:
                    if instance.inbox and self._live(instance, instance.execution):
                        await self._episode(instance)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Durable engine error in instance %s", instance.instance_id)
            now = history.utc_now()
            self._finish(instance, RuntimeStatus.FAILED, "Local host Durable engine error", now)
        finally:
            instance.episode_task = None
        if instance.inbox and self._live(instance, instance.execution):
            self._schedule_episode(instance)

    # --- one episode ---------------------------------------------------------------------------------------

    async def _episode(self, instance: Instance) -> None:
        batch = self._ordered_batch(instance, instance.inbox)
        instance.inbox = []
        now = history.utc_now()
        episode_events = [history.orchestrator_started(now), *batch]
        if instance.status is RuntimeStatus.PENDING:
            instance.status = RuntimeStatus.RUNNING
            logger.info("Orchestration '%s' started: instance %s", instance.name, instance.instance_id)
        execution = instance.execution
        instance.replays += 1
        state, error = await self._call_orchestrator(instance, episode_events)
        self.faults.checkpoint("after_episode", instance.name, instance.instance_id)
        if not self._live(instance, execution):
            return  # terminated while the episode ran; its decisions are discarded
        instance.commit(episode_events)
        instance.last_updated = now
        if state is not None and "customStatus" in state:
            instance.custom_status = state["customStatus"]
        if error is not None:
            self._fail(instance, error, now)
            return
        assert state is not None  # noqa: S101 - either state or error is set
        actions = list(_flatten(state.get("actions") or []))
        continue_as_new = next((a for a in actions if a.get("actionType") == _CONTINUE_AS_NEW), None)
        if state.get("isDone") and continue_as_new is None:
            instance.commit([history.orchestrator_completed(now),
                             history.execution_completed("Completed", _dumps(state.get("output")), now)])
            self._finish(instance, RuntimeStatus.COMPLETED, state.get("output"), now)
            return
        if continue_as_new is not None:
            self._continue_as_new(instance, continue_as_new.get("input"), now)
            return
        scheduled: list[Event] = []
        starts: list[tuple[str, Any]] = []
        self._retry_followups(instance, batch, now, scheduled, starts)
        drift = _replay_drift(instance.action_keys, actions)
        if drift is not None:
            self._fail(instance, drift, now)
            return
        new_actions = actions[instance.scheduled_actions:]
        instance.scheduled_actions = len(actions)
        instance.action_keys.extend(_action_key(action) for action in new_actions)
        unsupported = self._schedule_actions(instance, new_actions, now, scheduled, starts)
        if unsupported:
            self._fail(instance, f"The local host does not implement Durable {unsupported}.", now)
            return
        instance.commit([*scheduled, history.orchestrator_completed(now)])
        for kind, work in starts:
            self._start_work(instance, execution, kind, work)

    def _ordered_batch(self, instance: Instance, inbox: list[Event]) -> list[Event]:
        """The batch with the events that make a retry follow-up take a sequence number first.

        The SDK numbers a retry's timer when it replays the failed attempt, and the new attempt when it
        replays that timer firing; new tasks of the orchestrator get numbers when its code resumes. Putting
        the follow-up events first keeps both numberings in the same order.
        """
        first, rest = [], []
        for event in inbox:
            (first if self._allocates_sequence(instance, event) else rest).append(event)
        return first + rest

    @staticmethod
    def _allocates_sequence(instance: Instance, event: Event) -> bool:
        kind = event["EventType"]
        if kind in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED):
            group = instance.retry_by_seq.get(event["TaskScheduledId"])
            return group is not None and group.current_seq == event["TaskScheduledId"]
        if kind == EventType.TIMER_FIRED:
            group = instance.retry_by_seq.get(event["TimerId"])
            return group is not None and group.timer_seq == event["TimerId"] and group.attempts < group.max_attempts
        return False

    async def _call_orchestrator(self, instance: Instance, episode_events: list[Event]
                                 ) -> tuple[dict[str, Any] | None, str | None]:
        fn = self.orchestrators[instance.name]
        past = instance.events_json
        new = [history.serialize(event, played=False) for event in episode_events]
        context = {
            "instanceId": instance.instance_id,
            "isReplaying": bool(past),
            "parentInstanceId": instance.parent_id,
            "input": instance.input_json,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
            "maximumShortTimerDuration": MAXIMUM_SHORT_TIMER_DURATION,
            "longRunningTimerIntervalDuration": LONG_RUNNING_TIMER_INTERVAL,
        }
        # The history is joined from cached JSON: no event is serialised twice across episodes.
        body = '{"history":[' + ",".join([*past, *new]) + "]," + json.dumps(context)[1:]
        try:
            returned = await self.invoker.invoke(fn, {fn.trigger_name: meta.Datum(body, "json")},
                                                 reason="(null)")
        except Exception as exc:  # the SDK reports unhandled orchestrator errors by raising
            return _parse_failure(exc)
        if isinstance(returned, meta.Datum):
            returned = returned.value
        try:
            state = json.loads(returned) if isinstance(returned, (str, bytes)) else returned
        except ValueError:
            return None, "The orchestrator returned a state that is not JSON."
        if not isinstance(state, dict):
            return None, "The orchestrator returned no state."
        return state, None

    def _retry_followups(self, instance: Instance, batch: list[Event], now: datetime,
                         scheduled: list[Event], starts: list[tuple[str, Any]]) -> None:
        for event in batch:
            kind = event["EventType"]
            if kind in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED):
                seq = event["TaskScheduledId"]
                group = instance.retry_by_seq.get(seq)
                if group is None or group.current_seq != seq:
                    continue
                group.last_failure = (event.get("Reason", ""), event.get("Details", ""))
                timer_seq = self._next_seq(instance)
                group.timer_seq = timer_seq
                instance.retry_by_seq[timer_seq] = group
                fire_at = now + timedelta(milliseconds=_retry_delay_ms(group))
                scheduled.append(history.timer_created(timer_seq, fire_at, now))
                starts.append(("timer", (timer_seq, fire_at)))
            elif kind == EventType.TIMER_FIRED:
                group = instance.retry_by_seq.get(event["TimerId"])
                if group is None or group.timer_seq != event["TimerId"] or group.attempts >= group.max_attempts:
                    continue
                seq = self._next_seq(instance)
                group.attempts += 1
                group.current_seq = seq
                instance.retry_by_seq[seq] = group
                if group.kind == "activity":
                    scheduled.append(history.task_scheduled(seq, group.name, group.input_json, now))
                    starts.append(("activity", (seq, group.name, group.input_json)))
                else:
                    child_id = group.sub_instance_id or f"{instance.instance_id}:{seq}"
                    scheduled.append(history.sub_orchestration_created(seq, group.name, child_id,
                                                                       group.input_json, now))
                    starts.append(("sub", (seq, group.name, child_id, group.input_json)))

    def _schedule_actions(self, instance: Instance, actions: list[dict[str, Any]], now: datetime,
                          scheduled: list[Event], starts: list[tuple[str, Any]]) -> str | None:
        for action in actions:
            kind = action.get("actionType")
            if kind in _UNSUPPORTED:
                return _UNSUPPORTED[kind]
            if kind == _WAIT_FOR_EVENT:
                continue  # waits by event name; takes no sequence number
            if kind in (_CALL_ACTIVITY, _CALL_ACTIVITY_RETRY):
                seq = self._next_seq(instance)
                name, input_json = action.get("functionName", ""), action.get("input")
                scheduled.append(history.task_scheduled(seq, name, input_json, now))
                starts.append(("activity", (seq, name, input_json)))
                if kind == _CALL_ACTIVITY_RETRY:
                    self._add_retry(instance, "activity", seq, name, input_json, action, None, now)
            elif kind in (_CALL_SUB, _CALL_SUB_RETRY):
                seq = self._next_seq(instance)
                name, input_json = action.get("functionName", ""), action.get("input")
                explicit_id = action.get("instanceId") or None
                child_id = explicit_id or f"{instance.instance_id}:{seq}"
                scheduled.append(history.sub_orchestration_created(seq, name, child_id, input_json, now))
                starts.append(("sub", (seq, name, child_id, input_json)))
                if kind == _CALL_SUB_RETRY:
                    self._add_retry(instance, "suborchestration", seq, name, input_json, action, explicit_id, now)
            elif kind == _CREATE_TIMER:
                seq = self._next_seq(instance)
                fire_at = _parse_time(action["fireAt"])
                scheduled.append(history.timer_created(seq, fire_at, now))
                if not action.get("isCanceled"):
                    starts.append(("timer", (seq, fire_at)))
        return None

    @staticmethod
    def _next_seq(instance: Instance) -> int:
        seq = instance.next_seq
        instance.next_seq += 1
        return seq

    @staticmethod
    def _add_retry(instance: Instance, kind: str, seq: int, name: str, input_json: str | None,
                   action: dict[str, Any], sub_instance_id: str | None, now: datetime) -> None:
        options = action.get("retryOptions") or {}
        group = RetryGroup(
            kind=kind, name=name, input_json=input_json,
            first_interval_ms=int(options.get("firstRetryIntervalInMilliseconds", 1000)),
            max_attempts=int(options.get("maxNumberOfAttempts", 1)),
            backoff=float(options.get("backoffCoefficient", 1.0)),
            max_interval_ms=options.get("maxRetryIntervalInMilliseconds"),
            timeout_ms=options.get("retryTimeoutInMilliseconds"),
            started=now, sub_instance_id=sub_instance_id, current_seq=seq,
        )
        instance.retry_by_seq[seq] = group

    # --- work: activities, timers, sub-orchestrations ---------------------------------------------------

    def _start_work(self, instance: Instance, execution: int, kind: str, work: Any) -> None:
        if kind == "activity":
            seq, name, input_json = work
            instance.in_flight += 1
            self._spawn(self._run_activity(instance, execution, seq, name, input_json))
        elif kind == "timer":
            seq, fire_at = work
            delay = max(0.0, (fire_at - history.utc_now()).total_seconds())
            handle = asyncio.get_running_loop().call_later(
                delay, self._fire_timer, instance, execution, seq, fire_at)
            instance.timers[seq] = handle
        elif kind == "sub":
            seq, name, child_id, input_json = work
            self._start_sub_orchestration(instance, execution, seq, name, child_id, input_json)

    def _fire_timer(self, instance: Instance, execution: int, seq: int, fire_at: datetime) -> None:
        early = (fire_at - history.utc_now()).total_seconds()
        if early > 0:  # the loop's clock may run a callback a hair early; a durable timer never fires early
            self._start_work(instance, execution, "timer", (seq, fire_at))
            return
        instance.timers.pop(seq, None)
        self._deliver(instance, execution, history.timer_fired(seq, fire_at, history.utc_now()))

    async def _run_activity(self, instance: Instance, execution: int, seq: int, name: str,
                            input_json: str | None) -> None:
        try:
            outcome = await self._activity_outcome(instance, name, input_json)
        finally:
            if instance.execution == execution and instance.in_flight > 0:
                instance.in_flight -= 1
        self._deliver(instance, execution, _completion_event(seq, outcome))
        extra = self.faults.extra_deliveries(name)
        fn = self.activities.get(name)
        for delivery in range(extra if fn is not None else 0):
            assert self._activity_slots is not None  # noqa: S101 - set by start()
            async with self._activity_slots:
                await self._invoke_activity(fn, input_json)
            logger.warning("Fault plan: duplicate delivery %d of activity '%s' (instance %s, task %d); "
                           "its result is discarded", delivery + 1, name, instance.instance_id, seq)

    async def _activity_outcome(self, instance: Instance, name: str, input_json: str | None
                                ) -> tuple[bool, str, str]:
        fn = self.activities.get(name)
        if fn is None:
            return (False, f"The function '{name}' doesn't exist, is disabled, or is not an activity function.",
                    "")
        assert self._activity_slots is not None  # noqa: S101 - set by start()
        async with self._activity_slots:
            self.faults.checkpoint("before_activity", name, instance.instance_id)
            outcome = await self._invoke_activity(fn, input_json)
            self.faults.checkpoint("after_activity", name, instance.instance_id)
        return outcome

    async def _invoke_activity(self, fn: Any, input_json: str | None) -> tuple[bool, str, str]:
        """(succeeded, result JSON or failure reason, failure details)."""
        datum = meta.Datum(input_json if input_json is not None else "null", "json")
        try:
            result = await self.invoker.invoke(fn, {fn.trigger_name: datum}, reason="(null)")
        except Exception as exc:
            message = f"Result: Failure\nException: {type(exc).__name__}: {exc}\nStack: {_user_stack(exc)}"
            details = json.dumps({"Message": message,
                                  "ClassName": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException"})
            return False, f"Activity function '{fn.name}' failed: {type(exc).__name__}: {exc}", details
        if isinstance(result, meta.Datum):
            return True, result.value, ""
        try:
            encoded = meta.get_binding_registry().get(ACTIVITY_TRIGGER).encode(result, expected_type=None)
        except ValueError as exc:
            return False, f"Activity function '{fn.name}' failed: {exc}", ""
        return True, encoded.value, ""

    def _start_sub_orchestration(self, parent: Instance, execution: int, seq: int, name: str,
                                 child_id: str, input_json: str | None) -> None:
        now = history.utc_now()
        if name not in self.orchestrators:
            self._deliver(parent, execution, history.sub_orchestration_failed(
                seq, f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function.",
                "", now))
            return
        existing = self.store.get(child_id)
        if existing is not None and not existing.status.is_terminal:
            self._deliver(parent, execution, history.sub_orchestration_failed(
                seq, f"An Orchestration instance with the status {existing.status} already exists.", "", now))
            return
        child = self._new_instance(name, child_id, input_json, parent=(parent.instance_id, seq),
                                   parent_execution=execution)
        self._sub_parents[child_id] = (child, parent)
        logger.info("Sub-orchestration '%s' scheduled: instance %s (parent %s)", name, child_id,
                    parent.instance_id)

    # --- endings --------------------------------------------------------------------------------------------

    def _fail(self, instance: Instance, error: str, now: datetime) -> None:
        message = f"Orchestrator function '{instance.name}' failed: {error}"
        instance.commit([history.orchestrator_completed(now),
                         history.execution_completed("Failed", json.dumps(message), now)])
        self._finish(instance, RuntimeStatus.FAILED, message, now)

    def _continue_as_new(self, instance: Instance, input_json: str | None, now: datetime) -> None:
        logger.info("Orchestration '%s' continued as new: instance %s", instance.name, instance.instance_id)
        instance.reset_execution(input_json)
        instance.custom_status = None
        instance.last_updated = now
        instance.inbox = [history.execution_started(instance.name, input_json, now,
                                                    parent_instance_id=instance.parent_id)]

    def _finish(self, instance: Instance, status: RuntimeStatus, output: Any, now: datetime) -> None:
        instance.status = status
        instance.output = output
        instance.last_updated = now
        instance.inbox = []
        instance.cancel_timers()
        if status is RuntimeStatus.COMPLETED:
            logger.info("Orchestration '%s' completed: instance %s (%d replays)", instance.name,
                        instance.instance_id, instance.replays)
        elif status is RuntimeStatus.FAILED:
            logger.error("Orchestration '%s' failed: instance %s", instance.name, instance.instance_id)
        self._notify_parent(instance, status, output, now)

    def _notify_parent(self, child: Instance, status: RuntimeStatus, output: Any, now: datetime) -> None:
        if child.parent_id is None or child.parent_seq is None:
            return
        scheduled_by = self._sub_parents.get(child.instance_id)
        if scheduled_by is None or scheduled_by[0] is not child:
            return
        del self._sub_parents[child.instance_id]
        # `_deliver` drops the event unless this parent is still the one stored under its id.
        parent = scheduled_by[1]
        execution = child.parent_execution
        if status is RuntimeStatus.COMPLETED:
            event = history.sub_orchestration_completed(child.parent_seq, _dumps(output), now)
        else:
            details = json.dumps({"Message": str(output)})
            event = history.sub_orchestration_failed(child.parent_seq, str(output), details, now)
        self._deliver(parent, execution, event)

    # --- diagnostics ------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Instance counts by status and replays, for the host's status endpoint."""
        by_status: dict[str, int] = {}
        replays = 0
        for instance in self.store.query():
            by_status[str(instance.status)] = by_status.get(str(instance.status), 0) + 1
            replays += instance.replays
        return {"hub": self.hub_name, "instances": by_status, "replays": replays,
                "max_concurrent_activities": self.max_concurrent_activities,
                "max_concurrent_orchestrations": self.max_concurrent_orchestrations}

    def diagnostics(self, instance_id: str, *, with_history: bool = False) -> dict[str, Any]:
        """Replay count and history size of an instance; with_history adds the raw protocol history (the
        PascalCase events exactly as the orchestrator handle receives them)."""
        instance = self._require(instance_id)
        found: dict[str, Any] = {"instanceId": instance_id, "replays": instance.replays,
                                 "historyEvents": len(instance.events), "runtimeStatus": str(instance.status)}
        if with_history:
            found["history"] = [json.loads(event) for event in instance.events_json]
        return found


def _completion_event(seq: int, outcome: tuple[bool, str, str]) -> Event:
    succeeded, value, details = outcome
    now = history.utc_now()
    if succeeded:
        return history.task_completed(seq, value, now)
    return history.task_failed(seq, value, details, now)


def _user_stack(exc: BaseException) -> str:
    """The traceback frames of the app's code only, as the worker reports them (not the host's frames)."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not any(part in frame.filename for part in _HOST_FRAME_PATHS)]
    return "".join(traceback.format_list(frames))


_HOST_FRAME_PATHS = ("/local/host/", "/concurrent/futures/", "/asyncio/")


def _retry_delay_ms(group: RetryGroup) -> float:
    # DTFx RetryInterceptor.ComputeNextDelay: first interval * backoff^(attempt-1), capped at the maximum.
    delay = group.first_interval_ms * (group.backoff ** (group.attempts - 1))
    if group.max_interval_ms is not None:
        delay = min(delay, float(group.max_interval_ms))
    return delay


def _action_key(action: dict[str, Any]) -> tuple[str, str]:
    kind = action.get("actionType")
    if kind in (_CALL_ACTIVITY, _CALL_ACTIVITY_RETRY):
        return "activity", str(action.get("functionName"))
    if kind in (_CALL_SUB, _CALL_SUB_RETRY):
        return "sub-orchestration", str(action.get("functionName"))
    if kind == _WAIT_FOR_EVENT:
        return "external event", str(action.get("externalEventName"))
    return f"action type {kind}", ""


def _replay_drift(recorded: list[tuple[str, str]], actions: list[dict[str, Any]]) -> str | None:
    """DTFx's non-determinism check: replayed code must schedule what its history says it scheduled."""
    if len(actions) < len(recorded):
        return (f"Non-Deterministic workflow detected: the history has {len(recorded)} scheduled actions but "
                f"the orchestrator replayed only {len(actions)}.")
    for position, (expected, action) in enumerate(zip(recorded, actions, strict=False)):
        replayed = _action_key(action)
        if replayed != expected:
            return (f"Non-Deterministic workflow detected: action {position} was {expected[0]} "
                    f"'{expected[1]}' in the history but {replayed[0]} '{replayed[1]}' on replay.")
    return None


def _flatten(actions: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every action in scheduling order: V1 lists of lists and V2+ compound actions, depth-first."""
    for item in actions:
        if isinstance(item, list):
            yield from _flatten(item)
        elif isinstance(item, dict):
            if item.get("actionType") in (_WHEN_ALL, _WHEN_ANY):
                yield from _flatten(item.get("compoundActions") or [])
            else:
                yield item


def _parse_failure(exc: Exception) -> tuple[dict[str, Any] | None, str]:
    """Read the state the SDK appends to an unhandled orchestrator error (`$OutOfProcData$:`)."""
    text = str(exc)
    if OUT_OF_PROC_MARKER in text:
        try:
            state = json.loads(text.split(OUT_OF_PROC_MARKER, 1)[1])
        except ValueError:
            state = None
        if isinstance(state, dict):
            return state, str(state.get("error") or text.split("\n\n" + OUT_OF_PROC_MARKER, 1)[0])
    return None, f"{type(exc).__name__}: {exc}"


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
