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

Where the status lives: Azure keeps it in the storage account (StorageScheduleMonitor in
azure-webjobs-sdk-extensions: blob `timers/<hostId>/<timer name>/status` in container
`azure-webjobs-hosts`, the timer name being the function's full name `Host.Functions.<name>`). So does this
host when AzureWebJobsStorage holds a connection string, so every instance of the app sees one status and
past-due detection works across restarts and instances. A state directory (`--state-dir`) takes precedence
(each timer's status a JSON file `<name>.json` in it), and without either the status lives in memory.

One instance runs the timers (the timer listener is a singleton listener, azure-webjobs-sdk
`Singleton/SingletonListener.cs`, `SingletonManager.cs`, `BlobLeaseDistributedLockManager.cs`): with
AzureWebJobsStorage set, each timer's listener first takes a blob lease on
`azure-webjobs-hosts/locks/<hostId>/Host.Functions.<name>.Listener` (the blob created empty when missing)
for host.json's `singleton.listenerLockPeriod` (default 60 s), renewed at half the period. An instance
that does not get the lease does not run that timer and tries again every
`singleton.listenerLockRecoveryPollingInterval` (default 1 minute), so when the holder dies (its lease
expires) another instance takes over. A graceful stop releases the lease. Invocations through the admin
API run on whichever instance receives them, lease or not, as in Azure. The host id is the app setting
`AzureFunctionsWebHost__hostid` or, as the Functions host derives it when it runs locally
(ScriptHostIdProvider), the machine name with a stable hash of the app's path: one value for all instances
of an app on a machine. Without AzureWebJobsStorage no lock is taken (the real host needs the setting for
timers; this host then assumes it is the only instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions import meta
from azure.storage.blob.aio import BlobLeaseClient, BlobServiceClient, ContainerClient

from local.host.hostconfig import SingletonOptions, resolve_setting_expressions
from local.host.invoker import FunctionInfo, Invoker
from local.host.ncrontab import Schedule, parse_schedule
from local.host.queues import STORAGE_LOGGER

logger = logging.getLogger(__name__)

_NEVER = dt.datetime(1, 1, 1, tzinfo=dt.UTC)

#: The container of the host's own blobs (HostContainerNames.Hosts).
HOSTS_CONTAINER = "azure-webjobs-hosts"
HOST_ID_SETTINGS = ("AzureFunctionsWebHost__hostid", "AzureFunctionsWebHost:hostid")
#: ScriptConstants.MaximumHostIdLength.
MAX_HOST_ID_LENGTH = 32
#: The shortest renewal interval after failed renewals (SingletonManager.MinimumLeaseRenewalInterval).
_MINIMUM_LEASE_RENEWAL = 1.0


def function_full_name(name: str) -> str:
    """The full name the Functions host gives a function (its lock and status blobs are named after it)."""
    return f"Host.Functions.{name}"


def host_id(app_root: Path, environ: Mapping[str, str] | None = None) -> str:
    """The app's host id: the setting, or derived from the machine name and the app's path as the Functions host
    does when it runs outside App Service; lower case, at most 32 characters, no trailing '-'."""
    env = os.environ if environ is None else environ
    configured = next((env[k] for k in HOST_ID_SETTINGS if env.get(k)), None)
    if configured:
        value = configured
    else:
        machine = "".join(c for c in socket.gethostname() if c.isalnum())
        digest = int.from_bytes(hashlib.sha256(str(app_root.resolve()).encode()).digest()[:4], "big")
        value = f"{machine}-{digest}"
    return value[:MAX_HOST_ID_LENGTH].lower().rstrip("-")


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
    """Keeps each timer's ScheduleStatus: in `state_dir/timers/<name>.json`, in the storage account's status blob
    (`hosts` is the azure-webjobs-hosts container), or in memory."""

    def __init__(self, state_dir: Path | None = None, *, hosts: ContainerClient | None = None,
                 host_id: str = "") -> None:
        self._memory: dict[str, ScheduleStatus] = {}
        self._dir = state_dir / "timers" if state_dir else None
        self._hosts = hosts if self._dir is None else None
        self._host_id = host_id
        if self._dir:
            self._dir.mkdir(parents=True, exist_ok=True)

    @property
    def where(self) -> str:
        if self._dir is not None:
            return str(self._dir)
        if self._hosts is not None:
            return f"{HOSTS_CONTAINER}/timers/{self._host_id}/"
        return "memory"

    def _path(self, name: str) -> Path | None:
        return self._dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json" if self._dir else None

    def _blob_name(self, name: str) -> str:
        return f"timers/{self._host_id}/{function_full_name(name)}/status"

    async def get(self, name: str) -> ScheduleStatus | None:
        path = self._path(name)
        try:
            if path is not None:
                text = path.read_text()
            elif self._hosts is not None:
                download = await self._hosts.get_blob_client(self._blob_name(name)).download_blob(encoding="utf-8")
                text = await download.readall()
            else:
                return self._memory.get(name)
            return ScheduleStatus.from_json(json.loads(text))
        except (FileNotFoundError, ResourceNotFoundError):
            return None  # no status recorded yet
        except (ValueError, KeyError) as exc:
            logger.warning("Ignoring unreadable schedule status of '%s' in %s: %s", name, self.where, exc)
            return None

    async def update(self, name: str, status: ScheduleStatus) -> None:
        path = self._path(name)
        if path is not None:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(status.to_json()))
            temporary.replace(path)
        elif self._hosts is not None:
            try:  # best effort, as StorageScheduleMonitor.UpdateStatusAsync
                await _upload_creating(self._hosts, self._blob_name(name), json.dumps(status.to_json()),
                                       overwrite=True)
            except AzureError:
                logger.exception("Function '%s' failed to update the timer trigger status.", name)
        else:
            self._memory[name] = status

    async def past_due(self, name: str, now: dt.datetime, schedule: Schedule, status: ScheduleStatus) -> bool:
        """True if the recorded next occurrence has passed (after re-deriving it if the schedule changed
        since it was recorded, as the host's monitor does)."""
        expected = status.next
        if status.last != _NEVER:
            recomputed = schedule.next_after(status.last)
            if recomputed != status.next:
                logger.info("The schedule of '%s' changed since its status was recorded", name)
                expected = schedule.next_after(status.last_updated)
                await self.update(name, ScheduleStatus(status.last, expected, now))
        return now > expected


async def _upload_creating(hosts: ContainerClient, blob: str, text: str, *, overwrite: bool) -> None:
    """Upload a blob, creating the container when it is missing."""
    client = hosts.get_blob_client(blob)
    try:
        await client.upload_blob(text, overwrite=overwrite)
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            await hosts.create_container()
        await client.upload_blob(text, overwrite=overwrite)


class BlobLeaseLock:
    """One singleton lock: a lease on `locks/<lock id>` in azure-webjobs-hosts (BlobLeaseDistributedLockManager)."""

    def __init__(self, hosts: ContainerClient, lock_id: str, period: float) -> None:
        self.hosts = hosts
        self.lock_id = lock_id
        self.period = period
        self.blob = f"locks/{lock_id}"
        self.lease: BlobLeaseClient | None = None

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (the blob and container are created when missing)."""
        client = self.hosts.get_blob_client(self.blob)
        try:
            self.lease = await client.acquire_lease(lease_duration=int(self.period))
            return True
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            if exc.status_code == 409:
                return False
            raise
        with contextlib.suppress(ResourceExistsError, HttpResponseError):  # created meanwhile, or leased: 409/412
            await _upload_creating(self.hosts, self.blob, "", overwrite=False)
        try:
            self.lease = await client.acquire_lease(lease_duration=int(self.period))
            return True
        except HttpResponseError as exc:
            if exc.status_code == 409:
                return False
            raise

    async def renew(self) -> None:
        assert self.lease is not None
        await self.lease.renew()

    async def release(self) -> None:
        """Release the lease; one that expired or passed to another holder is not an error (404, 409)."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            await lease.release()
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409):
                raise


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
        self._stopping = False
        self.status = None  # read again from the monitor: another instance may have run the timer meanwhile
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
            self.status = await self.monitor.get(self.fn.name)
            if self.status is not None:
                past_due = await self.monitor.past_due(self.fn.name, now, self.schedule, self.status)
                self.status = await self.monitor.get(self.fn.name) or self.status
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
                await self.monitor.update(self.fn.name, self.status)


class SingletonListener:
    """Runs a timer listener only while this instance holds its listener lock (SingletonListener)."""

    def __init__(self, inner: TimerListener, lock: BlobLeaseLock, options: SingletonOptions) -> None:
        self.inner = inner
        self.lock = lock
        self.options = options
        self.listening = False
        self._recovery: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One attempt now; without the lock, retry every recovery interval in the background."""
        if not await self._try_lock():
            logger.info("Singleton lock %s is held by another instance; 'Functions.%s' will not run here until "
                        "it is free", self.lock.blob, self.inner.fn.name)
            self._recovery = asyncio.create_task(self._recover(), name=f"lock recovery {self.inner.fn.name}")

    async def _try_lock(self) -> bool:
        try:
            acquired = await self.lock.try_acquire()
        except AzureError as exc:
            logger.warning("Singleton lock %s could not be acquired: %s", self.lock.blob, type(exc).__name__)
            return False
        if acquired:
            logger.info("Singleton lock acquired (%s)", self.lock.lock_id)
            self._renewal = asyncio.create_task(self._renew(), name=f"lock renewal {self.inner.fn.name}")
            self.inner.start()
            self.listening = True
        return acquired

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self.options.listener_lock_recovery_polling_interval)
            if await self._try_lock():
                return

    async def _renew(self) -> None:
        """Renew at half the lease period, sooner after a server error; a lease lost to another holder stops
        the timer here and goes back to waiting for the lock."""
        normal = self.options.listener_lock_period / 2
        delay = normal
        while True:
            await asyncio.sleep(delay)
            try:
                await self.lock.renew()
                delay = normal
            except HttpResponseError as exc:
                if (exc.status_code or 0) >= 500:
                    logger.warning("Singleton lock renewal failed for blob '%s' with error code %s.", self.lock.lock_id,
                                   exc.status_code)
                    delay = max(delay / 2, _MINIMUM_LEASE_RENEWAL)
                    continue
                logger.error("Singleton lock renewal failed for blob '%s' with error code %s: %s. The lease was "
                             "lost; 'Functions.%s' stops here.", self.lock.lock_id, exc.status_code,
                             getattr(exc, "error_code", ""), self.inner.fn.name)
                self.lock.lease = None
                self.listening = False
                await self.inner.stop()
                self._recovery = asyncio.create_task(self._recover(), name=f"lock recovery {self.inner.fn.name}")
                return
            except AzureError as exc:
                logger.warning("Singleton lock renewal failed for blob '%s': %s", self.lock.lock_id,
                               type(exc).__name__)
                delay = max(delay / 2, _MINIMUM_LEASE_RENEWAL)

    async def stop(self, grace: float = 5.0) -> None:
        """As SingletonListener.StopAsync: stop retrying, release the lock, stop the timer."""
        for task in (self._recovery, self._renewal):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.lock.release()
            logger.info("Singleton lock released (%s)", self.lock.lock_id)
        except AzureError as exc:
            logger.warning("Singleton lock %s was not released: %s", self.lock.blob, type(exc).__name__)
        if self.listening:
            await self.inner.stop(grace)
            self.listening = False


class Timers:
    """Every timer-triggered function of the app. A timer whose schedule is invalid or names an unset
    setting is reported as an error for that function (as the host marks such a function "in error")
    and the others still run.

    `storage` is the AzureWebJobsStorage connection string (None: no singleton lock, status not in storage),
    `host_id` the app's host id (`host_id()`)."""

    def __init__(self, functions: dict[str, FunctionInfo], invoker: Invoker, *,
                 state_dir: Path | None = None, storage: str | None = None, host_id: str = "",
                 singleton: SingletonOptions | None = None) -> None:
        self.host_id = host_id
        self.singleton = singleton or SingletonOptions()
        self._blobs = BlobServiceClient.from_connection_string(storage, logger=STORAGE_LOGGER) if storage else None
        self._hosts = self._blobs.get_container_client(HOSTS_CONTAINER) if self._blobs is not None else None
        self.monitor = ScheduleMonitor(state_dir, hosts=self._hosts, host_id=host_id)
        self.listeners: dict[str, TimerListener] = {}
        self.singletons: dict[str, SingletonListener] = {}
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
        if self._hosts is not None:
            for name, listener in self.listeners.items():
                lock = BlobLeaseLock(self._hosts, f"{host_id}/{function_full_name(name)}.Listener",
                                     self.singleton.listener_lock_period)
                self.singletons[name] = SingletonListener(listener, lock, self.singleton)
        invoker.set_trigger_binder("timerTrigger", self.admin_timer_info)

    async def admin_timer_info(self, fn: FunctionInfo, text: str) -> meta.Datum:
        """The TimerInfo of an invocation through the admin API, whose input text is ignored: like
        TimerTriggerBinding.BindAsync, a fresh TimerInfo (not past due) carrying the schedule monitor's
        status when the timer is monitored."""
        listener = self.listeners.get(fn.name)
        if listener is None:
            return timer_info(True, None, past_due=False)
        status = None
        if listener.monitor is not None:
            # The running listener knows its status; otherwise (before its first run, or while another
            # instance holds the lock) read what the monitor has stored. With nothing stored yet, the status a
            # listener starts from (Next: the upcoming occurrence), as this host has always handed admin calls;
            # the real binding would hand none until the timer first fired.
            status = ((listener.status if self.running(fn.name) else None) or await listener.monitor.get(fn.name)
                      or ScheduleStatus(_NEVER, listener.schedule.next_after(utcnow()), _NEVER))
        return timer_info(listener.schedule.adjust_for_dst, status, past_due=False)

    def running(self, name: str) -> bool:
        """Whether this instance runs the timer now (it holds the lock, or no lock is used)."""
        singleton = self.singletons.get(name)
        return singleton.listening if singleton is not None else name in self.listeners

    async def start(self) -> None:
        """Start every timer; with a lock, after one attempt to take it (so the first instance to start runs them)."""
        if self.singletons:
            logger.info("Timer listeners are singletons: host id '%s', schedule status in %s", self.host_id,
                        self.monitor.where)
            await asyncio.gather(*(singleton.start() for singleton in self.singletons.values()))
            return
        for listener in self.listeners.values():
            listener.start()

    def stats(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "status_in": self.monitor.where,
                "running": sorted(name for name in self.listeners if self.running(name))}

    async def stop(self) -> None:
        if self.singletons:
            await asyncio.gather(*(singleton.stop() for singleton in self.singletons.values()))
        else:
            await asyncio.gather(*(listener.stop() for listener in self.listeners.values()))
        if self._blobs is not None:
            with contextlib.suppress(Exception):
                await self._blobs.close()
