"""Timer triggers, run as the Functions host's TimerListener runs them (azure-webjobs-sdk-extensions).

Per timer function:
- The schedule (`%SETTING%` resolved from app settings) is an NCRONTAB expression or a TimeSpan, in UTC.
- Invocations of one timer never overlap: the listener holds a lock around each invocation and only
  schedules the next occurrence when it has finished (an occurrence missed meanwhile fires at once,
  not once per missed occurrence). Invocations through the admin API bypass the listener, as in Azure,
  but get a TimerInfo from it (`Timers.admin_timer_info`): the current schedule status of a monitored
  timer (what TimerTriggerBinding reads from the schedule monitor), none otherwise, never past due.
- Schedule monitoring (`use_monitor`; by default on for schedules that fire at most once a minute)
  records the ScheduleStatus {Last, Next, LastUpdated} after each invocation. On start, a recorded
  `Next` already in the past means an occurrence was missed while the host was down: the timer fires at
  once with `past_due=True` (run_on_startup is then not used). Only this startup check sets `past_due`,
  as in the real listener.
- The function receives the status recorded *before* its invocation (so `Next` is the scheduled time
  of the occurrence being run), or no status when monitoring is off; `schedule` carries `AdjustForDST`.
- `run_on_startup` fires once when the host starts.

Azure keeps the status in the storage account (blob `timers/...`). Here it lives in memory, so a
restart forgets it, unless the host is given a state directory (`--state-dir`), where each timer's
status is a JSON file, so past-due detection across restarts works locally too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from azure.functions import meta

from local.host.hostconfig import resolve_setting_expressions
from local.host.invoker import FunctionInfo, Invoker
from local.host.ncrontab import Schedule, parse_schedule

logger = logging.getLogger(__name__)

_NEVER = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def timer_info(adjust_for_dst: bool, status: ScheduleStatus | None, *, past_due: bool) -> meta.Datum:
    """The TimerInfo the worker decodes into a `func.TimerRequest`."""
    payload = {
        "Schedule": {"AdjustForDST": adjust_for_dst},
        "ScheduleStatus": status.to_json() if status is not None else None,
        "IsPastDue": past_due,
    }
    return meta.Datum(json.dumps(payload), "json")


@dataclass(frozen=True)
class ScheduleStatus:
    last: dt.datetime
    next: dt.datetime
    last_updated: dt.datetime

    def to_json(self) -> dict[str, str]:
        return {"Last": _iso(self.last), "Next": _iso(self.next), "LastUpdated": _iso(self.last_updated)}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ScheduleStatus:
        def parse(value: str) -> dt.datetime:
            moment = dt.datetime.fromisoformat(value)
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)

        return cls(parse(data["Last"]), parse(data["Next"]), parse(data["LastUpdated"]))


class ScheduleMonitor:
    """Keeps each timer's ScheduleStatus: in memory, or in `state_dir/timers/<name>.json`."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self._memory: dict[str, ScheduleStatus] = {}
        self._dir = state_dir / "timers" if state_dir else None
        if self._dir:
            self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path | None:
        return self._dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json" if self._dir else None

    def get(self, name: str) -> ScheduleStatus | None:
        path = self._path(name)
        if path is None:
            return self._memory.get(name)
        try:
            return ScheduleStatus.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as exc:
            logger.warning("Ignoring unreadable schedule status %s: %s", path, exc)
            return None

    def update(self, name: str, status: ScheduleStatus) -> None:
        path = self._path(name)
        if path is None:
            self._memory[name] = status
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status.to_json()))
        temporary.replace(path)

    def past_due(self, name: str, now: dt.datetime, schedule: Schedule, status: ScheduleStatus) -> bool:
        """True if the recorded next occurrence has passed (after re-deriving it if the schedule changed
        since it was recorded, as the host's monitor does)."""
        expected = status.next
        if status.last != _NEVER:
            recomputed = schedule.next_after(status.last)
            if recomputed != status.next:
                logger.info("The schedule of '%s' changed since its status was recorded", name)
                expected = schedule.next_after(status.last_updated)
                self.update(name, ScheduleStatus(status.last, expected, now))
        return now > expected


class TimerListener:
    """Runs one timer-triggered function on its schedule."""

    def __init__(self, fn: FunctionInfo, invoker: Invoker, monitor: ScheduleMonitor) -> None:
        self.fn = fn
        self.invoker = invoker
        expression = resolve_setting_expressions(
            str(fn.trigger.get("schedule", "")), where=f"the schedule of Functions.{fn.name}"
        )
        self.schedule = parse_schedule(expression)
        self.run_on_startup = bool(fn.trigger.get("runOnStartup", False))
        use_monitor = fn.trigger.get("useMonitor")
        if use_monitor is None:
            use_monitor = self.schedule.min_interval(utcnow()) >= dt.timedelta(minutes=1)
        self.monitor = monitor if use_monitor else None
        self.status: ScheduleStatus | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"timer {self.fn.name}")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop scheduling; like the listener's StopAsync, let a running invocation finish (up to grace)."""
        self._stopping = True
        if self._lock.locked():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    async with self._lock:
                        pass
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        now = utcnow()
        past_due = False
        if self.monitor is not None:
            self.status = self.monitor.get(self.fn.name)
            if self.status is not None:
                past_due = self.monitor.past_due(self.fn.name, now, self.schedule, self.status)
                self.status = self.monitor.get(self.fn.name) or self.status
        if self.status is None:
            self.status = ScheduleStatus(_NEVER, self.schedule.next_after(now), _NEVER)
        logger.info(
            "The next 5 occurrences of the '%s' schedule (%s) will be: %s",
            self.fn.name, self.schedule.expression,
            ", ".join(_iso(t) for t in self.schedule.next_occurrences(now, 5)),
        )
        if past_due:
            logger.info("Function '%s' is past due on startup. Executing now.", self.fn.name)
            await self._invoke(utcnow(), past_due=True)
        elif self.run_on_startup:
            logger.info("Function '%s' is configured to run on startup. Executing now.", self.fn.name)
            await self._invoke(utcnow(), run_on_startup=True)
        while not self._stopping:
            delay = (self.status.next - utcnow()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._invoke(utcnow())

    async def _invoke(self, invocation_time: dt.datetime, *, past_due: bool = False,
                      run_on_startup: bool = False) -> None:
        async with self._lock:
            if self._stopping:
                return
            status = self.status
            info = timer_info(self.schedule.adjust_for_dst, status if self.monitor is not None else None,
                              past_due=past_due)
            reason = f"Timer fired at {_iso(invocation_time)}"
            try:
                await self.invoker.invoke(self.fn, {self.fn.trigger_name: info}, reason=reason)
            except Exception:  # noqa: BLE001,S110 - logged by the invoker; failures must not stop the schedule
                pass
            # A timer that woke a moment before its occurrence counts from the occurrence, so Next moves on.
            adjusted = invocation_time
            if not past_due and not run_on_startup and status is not None and status.next > invocation_time:
                adjusted = status.next
            self.status = ScheduleStatus(adjusted, self.schedule.next_after(adjusted), adjusted)
            if self.monitor is not None:
                self.monitor.update(self.fn.name, self.status)


class Timers:
    """Every timer-triggered function of the app. A timer whose schedule is invalid or names an unset
    setting is reported as an error for that function (as the host marks such a function "in error")
    and the others still run."""

    def __init__(self, functions: dict[str, FunctionInfo], invoker: Invoker, *,
                 state_dir: Path | None = None) -> None:
        self.monitor = ScheduleMonitor(state_dir)
        self.listeners: dict[str, TimerListener] = {}
        self.errors: dict[str, str] = {}
        for fn in functions.values():
            # A function in error (unsupported binding) is not listened for, as the host does not.
            if fn.trigger_type != "timerTrigger" or fn.error:
                continue
            try:
                self.listeners[fn.name] = TimerListener(fn, invoker, self.monitor)
            except ValueError as exc:
                self.errors[fn.name] = str(exc)
                logger.error("The 'Functions.%s' function is in error: %s", fn.name, exc)
        invoker.set_trigger_binder("timerTrigger", self.admin_timer_info)

    def admin_timer_info(self, fn: FunctionInfo, text: str) -> meta.Datum:
        """The TimerInfo of an invocation through the admin API, whose input text is ignored: like
        TimerTriggerBinding.BindAsync, a fresh TimerInfo (not past due) carrying the schedule monitor's
        status when the timer is monitored."""
        listener = self.listeners.get(fn.name)
        if listener is None:
            return timer_info(True, None, past_due=False)
        status = None
        if listener.monitor is not None:
            # Before the listener's first run, read what the monitor has stored.
            status = listener.status or listener.monitor.get(fn.name)
        return timer_info(listener.schedule.adjust_for_dst, status, past_due=False)

    def start(self) -> None:
        for listener in self.listeners.values():
            listener.start()

    async def stop(self) -> None:
        await asyncio.gather(*(listener.stop() for listener in self.listeners.values()))
