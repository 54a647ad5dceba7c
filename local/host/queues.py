"""Azure Storage queue triggers, run as the Functions host's Storage Queues extension runs them
(Microsoft.Azure.WebJobs.Extensions.Storage.Queues v5), against Azurite or any storage account.

Sources (azure-sdk-for-net, sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Common/src/Shared/ unless
named otherwise), and what each gives this module:
- `Queues/QueuesOptions.cs`, host.json `extensions.queues` (local.host.hostconfig.QueuesOptions): batchSize 16
  (at most 32), newBatchThreshold batchSize/2 x the processor count, maxPollingInterval 1 min,
  visibilityTimeout 0, maxDequeueCount 5, messageEncoding base64.
- `Queues/QueueListener.cs`: one listener per function polls its queue. Before the first poll, and after any
  storage error, it checks that the queue exists; a missing queue (or a 5xx, or a queue being deleted) is
  not an error: the listener backs off and polls again. Messages are received `batchSize` at a time with a
  visibility timeout of 10 minutes; a poll that found messages is followed at once by the next one as soon
  as the number of messages in flight is at or below newBatchThreshold (so at most batchSize +
  newBatchThreshold run at once); a poll that found none waits per `Timers/RandomizedExponentialBackoff
  Strategy.cs` (from `Queues/QueuePollingIntervals.cs`' 100 ms minimum, doubling with +-20 % jitter, up to
  maxPollingInterval; back to the minimum after a poll that found messages). While a function runs, its
  message's visibility is renewed at half the timeout (`UpdateQueueMessageVisibilityCommand.cs`, with
  `Timers/LinearSpeedupStrategy.cs` halving the interval after a server error, down to one minute); a lost
  pop receipt or a deleted message ends the renewal. StopAsync stops polling and waits for the messages in
  flight.
- `Queues/QueueProcessor.cs`: a message whose DequeueCount already exceeds maxDequeueCount goes to the
  poison queue without running. After the invocation: success deletes the message; failure with
  DequeueCount >= maxDequeueCount copies its body to `<queue>-poison` (created when missing; warning
  "Message has reached MaxDequeueCount of N. Moving message to queue '...'.") and deletes it; any other
  failure makes it visible again after visibilityTimeout. Pop-receipt mismatches and vanished messages or
  queues are ignored. `Queues/src/Listeners/QueueListenerFactory.cs`: a queue whose name ends in "-poison"
  (or whose poison queue name would be too long) has no poison queue, and a failed message is then left
  invisible (it comes back when its visibility timeout passes). Moving a message to a poison queue wakes
  this host's listener of that queue at once (SharedQueueWatcher).
- `Queues/src/QueueServiceClientProvider.cs`: with base64 encoding, a message whose body does not decode is
  logged ("Message decoding has failed! Check MessageEncoding settings. MessageId=...") and moved to the
  poison queue as it is, without running the function.
- The worker's side, azure-functions (azure-functions-python-library `azure/functions/queue.py`,
  QueueMessageInConverter.decode): the trigger value is a `string` or `bytes` Datum, and the message's
  fields come from the trigger metadata Id, DequeueCount, ExpirationTime, InsertionTime, NextVisibleTime and
  PopReceipt. The host sends the body as a string (the extension's StorageQueueMessageToStringConverter:
  UTF-8), the strings as strings, DequeueCount as an integer and the times as JSON strings.
- The connection (`Queues/src/...` through WebJobsConfigurationExtensions.GetWebJobsConnectionStringSection):
  the binding's `connection` (default AzureWebJobsStorage) names an app setting; `AzureWebJobs<name>` is tried
  before `<name>`. A connection string is required here: identity-based connections (`<name>__queueServiceUri`,
  `<name>__serviceUri`, `<name>__accountName`) are refused with a message, as the local host has no
  managed identity.
- Invocations are logged by the invoker with Reason='New queue message detected on '<queue>'.' and count in
  `/admin/local/stats` like every trigger; functionTimeout applies. `POST /admin/functions/<name>` runs the
  function with a message whose body is the input (no id, DequeueCount 0), as the extension's
  StringToStorageQueueMessageConverter builds it; nothing is read from or deleted in the queue then.

The listeners (`Listeners`, `QueueListener`) run in a process of their own, as the extension runs in the .NET host
apart from the Python worker (local/host/listener_process.py); `Queues` is the host's side: it resolves the
bindings, starts that process and runs the invocations it hands over.

Local difference, for crash tests only: `LOCAL_HOST_QUEUE_VISIBILITY_SECONDS` (whole seconds, default 600)
shortens the visibility timeout messages are received with; renewal stays at half of it. A host killed
with SIGKILL leaves its messages invisible until that timeout passes, as a crashed instance does in Azure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions import meta
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from local.host.hostconfig import MIN_QUEUE_POLLING_INTERVAL, QueuesOptions, resolve_setting_expressions
from local.host.invoker import FunctionInfo, Invoker, TriggerData
from local.host.listener_process import ListenerPlan, ListenerProcess

logger = logging.getLogger(__name__)
#: The host's own storage requests log here, at WARNING and above only (the SDK logs each request at INFO); the
#: app's clients keep the SDK's own logger, which the app configures.
STORAGE_LOGGER = logging.getLogger("local.host.storage")
STORAGE_LOGGER.setLevel(logging.WARNING)

#: The listener receives messages with this visibility timeout and renews it while the function runs
#: (QueueListener: TimeSpan.FromMinutes(10)).
IN_FLIGHT_VISIBILITY_SECONDS = 600
VISIBILITY_ENV = "LOCAL_HOST_QUEUE_VISIBILITY_SECONDS"
#: The renewal interval never drops below this after server errors (QueueListener.MinimumVisibilityRenewalInterval).
MINIMUM_RENEWAL_INTERVAL = 60.0
POISON_SUFFIX = "-poison"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
#: RandomizedExponentialBackoffStrategy.RandomizationFactor.
_JITTER = 0.2
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_IDENTITY_KEYS = ("queueServiceUri", "serviceUri", "accountName")


class QueueConnectionError(ValueError):
    """The binding's connection names no usable connection string."""


def in_flight_visibility(environ: Mapping[str, str] | None = None) -> int:
    """The visibility timeout of received messages: the extension's 10 minutes, or the local-only override."""
    env = os.environ if environ is None else environ
    raw = env.get(VISIBILITY_ENV, "").strip()
    if not raw:
        return IN_FLIGHT_VISIBILITY_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        logger.error("%s=%r is not a whole number of seconds above 0; using %d", VISIBILITY_ENV, raw,
                     IN_FLIGHT_VISIBILITY_SECONDS)
        return IN_FLIGHT_VISIBILITY_SECONDS
    return seconds


def connection_string(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The connection string a binding's `connection` names, looked up as the WebJobs extensions do."""
    env = os.environ if environ is None else environ
    name = name or DEFAULT_CONNECTION
    for candidate in (f"AzureWebJobs{name}", name):
        value = env.get(candidate, "").strip()
        if value:
            return value
    for candidate in (f"AzureWebJobs{name}", name):
        if any(env.get(f"{candidate}__{key}") for key in _IDENTITY_KEYS):
            raise QueueConnectionError(
                f"connection '{name}' is identity-based ({candidate}__...); the local host supports only a "
                "connection string in the app setting")
    raise QueueConnectionError(
        f"Storage account connection string '{name}' does not exist. Make sure that it is a defined App Setting.")


def poison_queue_name(queue_name: str) -> str | None:
    """`<queue>-poison`, or None for a poison queue itself or when the name would be invalid."""
    if queue_name.endswith(POISON_SUFFIX):
        return None
    candidate = queue_name + POISON_SUFFIX
    return candidate if _QUEUE_NAME.match(candidate) else None


class ExponentialBackoff:
    """RandomizedExponentialBackoffStrategy: the delay before the next poll of an empty queue."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.current = 0.0
        self._exponent = 0
        self._random = rng or random.Random()  # noqa: S311 - jitter, not security

    def next_delay(self, succeeded: bool) -> float:
        if succeeded:
            self.current, self._exponent = self.minimum, 1
        elif self.current != self.maximum:
            interval = self.minimum
            if self._exponent > 0:
                factor = self._random.uniform(1.0 - _JITTER, 1.0 + _JITTER)
                interval += factor * 2.0 ** (self._exponent - 1) * self.minimum
            if interval < self.maximum:
                self.current = interval
                self._exponent += 1
            else:
                self.current = self.maximum
        return self.current


def _error_code(exc: BaseException) -> str:
    """The storage error code (x-ms-error-code). azure-storage-queue sets `error_code` to a StorageErrorCode, a str
    enum whose str() is "StorageErrorCode.POP_RECEIPT_MISMATCH", not the code: its value is."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _is(exc: BaseException, status: int, *codes: str) -> bool:
    if not isinstance(exc, HttpResponseError) or exc.status_code != status:
        return False
    return not codes or _error_code(exc) in codes


def _gone(exc: BaseException) -> bool:
    """A pop receipt that no longer matches, a message or queue that no longer exists, a queue being deleted:
    ownership of the message is lost, and nothing is left to do with it."""
    return (_is(exc, 400, "PopReceiptMismatch") or _is(exc, 404) or
            _is(exc, 409, "QueueBeingDeleted", "QueueDisabled"))


def _server_error(exc: BaseException) -> bool:
    return isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat() if moment is not None else None


@dataclass(frozen=True)
class MessageFacts:
    """What the host sends the worker about a queue message besides its body (the trigger metadata); times are
    ISO 8601 strings in UTC. An invocation through the admin API has none of them (DequeueCount 0)."""

    message_id: str | None = None
    dequeue_count: int = 0
    pop_receipt: str | None = None
    inserted_on: str | None = None
    expires_on: str | None = None
    next_visible_on: str | None = None


def trigger_data(body: bytes, facts: MessageFacts | None = None, *, binary: bool = False) -> TriggerData:
    """The queue trigger's value and metadata, as the host sends them to the Python worker: the body as a string
    (UTF-8, as the extension's StorageQueueMessageToStringConverter reads it), or as bytes when the binding's
    dataType is binary."""
    facts = facts or MessageFacts()
    text = body.decode("utf-8", errors="replace")
    metadata: dict[str, meta.Datum] = {"DequeueCount": meta.Datum(facts.dequeue_count, "int"),
                                       "QueueTrigger": meta.Datum(text, "string")}
    for key, value in (("Id", facts.message_id), ("PopReceipt", facts.pop_receipt)):
        if value is not None:
            metadata[key] = meta.Datum(value, "string")
    for key, moment in (("InsertionTime", facts.inserted_on), ("ExpirationTime", facts.expires_on),
                        ("NextVisibleTime", facts.next_visible_on)):
        if moment is not None:
            metadata[key] = meta.Datum(json.dumps(moment), "json")
    return TriggerData(meta.Datum(body, "bytes") if binary else meta.Datum(text, "string"), metadata)


def decode_body(raw: str, encoding: str) -> bytes:
    """The message body the function receives. Base64 (the default) is decoded as .NET's Convert.FromBase64String
    does (white space ignored, padding required); raises ValueError when it does not decode."""
    if encoding == "none":
        return raw.encode("utf-8")
    compact = "".join(raw.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc


@dataclass
class ListenerStats:
    """What a listener did, for /admin/local/stats (the tests count polls with it)."""

    polls: int = 0
    existence_checks: int = 0
    received: int = 0
    max_in_flight: int = 0
    renewals: int = 0
    released: int = 0
    deleted: int = 0
    poisoned: int = 0
    decode_failures: int = 0
    backoff_seconds: float = 0.0


@dataclass
class _InFlight:
    message: QueueMessage
    pop_receipt: str
    next_visible_on: dt.datetime | None = None
    lost: bool = False
    #: Set when the invocation ended: the renewal sends no further update, and one in flight is waited for, so the
    #: pop receipt it brings back is the one the message is completed with.
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class QueueListener:
    """Polls one queue for one function, as the extension's QueueListener and QueueProcessor do."""

    function: str
    queue_name: str
    queue: QueueClient
    poison: QueueClient | None
    options: QueuesOptions
    #: Runs the function with one message (in the host process: local/host/listener_process.py); raises when the
    #: invocation failed.
    dispatch: Callable[[str, bytes, MessageFacts], Awaitable[None]]
    visibility: int
    on_poisoned: Callable[[str], None] = lambda name: None
    stats: ListenerStats = field(default_factory=ListenerStats)

    def __post_init__(self) -> None:
        self._backoff = ExponentialBackoff(MIN_QUEUE_POLLING_INTERVAL, self.options.max_polling_interval)
        self._found_since_last_delay = False
        self._queue_exists: bool | None = None
        self._processing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._logged_missing = False

    # --- polling ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"queue listener {self.function}")
        logger.info("Storage queue listener started for 'Functions.%s' (queue name='%s')", self.function,
                    self.queue_name)

    @property
    def in_flight(self) -> int:
        """Messages whose processing has not ended."""
        return len(self._processing)

    def notify(self) -> None:
        """A message was just added to this queue by this host: poll now (SharedQueueWatcher.Notify)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                wait = await self._execute()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Storage queue listener of 'Functions.%s' failed a poll of '%s'", self.function,
                                 self.queue_name)
                wait = self._backoff_wait()
            await wait

    async def _execute(self) -> Awaitable[Any]:
        try:
            if not self._queue_exists:
                self.stats.existence_checks += 1
                self._queue_exists = await self._exists()
            if not self._queue_exists:
                if not self._logged_missing:
                    logger.info("Queue '%s' of 'Functions.%s' does not exist yet; polling for it",
                                self.queue_name, self.function)
                    self._logged_missing = True
                return self._backoff_wait()
            self.stats.polls += 1
            batch = await self._receive(self.options.batch_size)
        except HttpResponseError as exc:
            # Any error resets the existence check; missing or busy queues and server errors are backed off.
            self._queue_exists = None
            if _is(exc, 404) or _is(exc, 409, "QueueBeingDeleted", "QueueDisabled") or _server_error(exc):
                logger.info("Polling queue '%s' of 'Functions.%s' failed (%s %s); backing off", self.queue_name,
                            self.function, exc.status_code, _error_code(exc))
                return self._backoff_wait()
            raise
        except AzureError as exc:  # storage unreachable: the real host's exception handler would restart it
            self._queue_exists = None
            logger.warning("Polling queue '%s' of 'Functions.%s' failed: %s; backing off", self.queue_name,
                           self.function, type(exc).__name__)
            return self._backoff_wait()
        self._logged_missing = False
        decoded: list[tuple[QueueMessage, bytes]] = []
        for message in batch:
            try:
                decoded.append((message, decode_body(str(message.content or ""), self.options.message_encoding)))
            except ValueError:
                await self._decoding_failed(message)
        if not batch:
            return self._backoff_wait()
        self.stats.received += len(batch)
        for message, body in decoded:
            task = asyncio.create_task(self._process(message, body), name=f"queue message {message.id}")
            self._processing.add(task)
            task.add_done_callback(self._processing.discard)
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._processing))
        self._found_since_last_delay = True
        return self._wait_for_new_batch_threshold()

    async def _exists(self) -> bool:
        try:
            await self.queue.get_queue_properties()
            return True
        except ResourceNotFoundError:
            return False

    async def _receive(self, count: int) -> list[QueueMessage]:
        """One Get Messages call (the SDK's pager would call again until the queue is empty)."""
        pages = self.queue.receive_messages(messages_per_page=count, visibility_timeout=self.visibility).by_page()
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return []
        return [message async for message in page]

    def _backoff_wait(self) -> Awaitable[Any]:
        delay = self._backoff.next_delay(succeeded=self._found_since_last_delay)
        self._found_since_last_delay = False
        self.stats.backoff_seconds = delay
        logger.debug("Backoff delay of %.0f ms for queue '%s' of 'Functions.%s'", delay * 1000, self.queue_name,
                     self.function)
        return self._sleep_or_wake(delay)

    async def _sleep_or_wake(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _wait_for_new_batch_threshold(self) -> None:
        while len(self._processing) > self.options.effective_new_batch_threshold:
            await asyncio.wait(set(self._processing), return_when=asyncio.FIRST_COMPLETED)

    # --- one message --------------------------------------------------------------------------------

    async def _process(self, message: QueueMessage, body: bytes) -> None:
        dequeue_count = int(message.dequeue_count or 0)
        state = _InFlight(message, str(message.pop_receipt), message.next_visible_on)
        try:
            if dequeue_count > self.options.max_dequeue_count:
                await self._move_to_poison(state)
                return
            logger.info("Trigger Details: MessageId: %s, DequeueCount: %d, InsertedOn: %s", message.id,
                        dequeue_count, _iso(message.inserted_on))
            renewal = asyncio.create_task(self._renew(state), name=f"renew {message.id}")
            succeeded = False
            try:
                await self.dispatch(self.function, body, MessageFacts(
                    message_id=str(message.id), dequeue_count=dequeue_count, pop_receipt=state.pop_receipt,
                    inserted_on=_iso(message.inserted_on), expires_on=_iso(message.expires_on),
                    next_visible_on=_iso(state.next_visible_on)))
                succeeded = True
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001,S110 - the invoker logged it; the message is released below
                pass
            finally:
                state.done.set()
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    renewal.cancel()  # the host is stopping: no waiting for storage
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            await self._complete(state, succeeded, dequeue_count)
        except asyncio.CancelledError:
            # The host is stopping and the invocation outlived the grace: it completes as failed, so the message is
            # released (visible again after visibilityTimeout) rather than left invisible for the in-flight timeout.
            if self._stopping and not state.lost:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._release(state), 1.0)
            raise
        except Exception:
            logger.exception("Completing queue message %s of 'Functions.%s' failed", message.id, self.function)

    async def _renew(self, state: _InFlight) -> None:
        """Keep the message invisible while the function runs (UpdateQueueMessageVisibilityCommand)."""
        normal = self.visibility / 2
        minimum = min(MINIMUM_RENEWAL_INTERVAL, normal)
        delay = normal
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await state.done.wait()
            if state.done.is_set():
                return
            try:
                updated = await self.queue.update_message(state.message.id, pop_receipt=state.pop_receipt,
                                                          visibility_timeout=self.visibility)
            except HttpResponseError as exc:
                if _server_error(exc):
                    delay = max(delay / 2, minimum)
                    continue
                if _gone(exc):
                    state.lost = True
                    logger.warning("Lost queue message %s of 'Functions.%s' while it ran (%s)", state.message.id,
                                   self.function, _error_code(exc) or exc.status_code)
                    return
                raise
            except AzureError:
                delay = max(delay / 2, minimum)
                continue
            state.pop_receipt = str(updated.pop_receipt)
            state.next_visible_on = updated.next_visible_on
            self.stats.renewals += 1
            delay = normal

    async def _complete(self, state: _InFlight, succeeded: bool, dequeue_count: int) -> None:
        if succeeded:
            await self._delete(state)
        elif self.poison is None:
            pass  # no poison queue: left invisible, so a failing message cannot loop fast
        elif dequeue_count >= self.options.max_dequeue_count:
            await self._move_to_poison(state)
        else:
            await self._release(state)

    async def _delete(self, state: _InFlight) -> None:
        try:
            await self.queue.delete_message(state.message.id, state.pop_receipt)
            self.stats.deleted += 1
        except HttpResponseError as exc:
            if not _gone(exc):
                raise
            logger.debug("Queue message %s was not deleted: %s", state.message.id, _error_code(exc))

    async def _release(self, state: _InFlight) -> None:
        try:
            await self.queue.update_message(state.message.id, pop_receipt=state.pop_receipt,
                                            visibility_timeout=int(self.options.visibility_timeout))
            self.stats.released += 1
        except HttpResponseError as exc:
            if not _gone(exc):
                raise

    async def _move_to_poison(self, state: _InFlight) -> None:
        """Copy the message's body as it is to the poison queue (created when missing), then delete it."""
        if self.poison is None:
            return
        logger.warning("Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
                       self.options.max_dequeue_count, self.poison.queue_name)
        await self._send_creating(self.poison, str(state.message.content or ""))
        self.stats.poisoned += 1
        self.on_poisoned(self.poison.queue_name)
        await self._delete(state)

    async def _decoding_failed(self, message: QueueMessage) -> None:
        self.stats.decode_failures += 1
        logger.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s.", message.id)
        state = _InFlight(message, str(message.pop_receipt), message.next_visible_on)
        try:
            await self._move_to_poison(state)
        except Exception:
            logger.exception("Moving undecodable message %s to the poison queue failed", message.id)

    @staticmethod
    async def _send_creating(queue: QueueClient, content: str) -> None:
        try:
            await queue.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                await queue.create_queue()
            await queue.send_message(content)

    # --- stopping -----------------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop polling and let the messages in flight finish (StopAsync), up to `grace` seconds; what still runs
        then is cancelled and fails, and its message is released. (A killed host releases nothing: its messages
        stay invisible until their visibility timeout passes.)"""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._processing:
            _, pending = await asyncio.wait(set(self._processing), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        logger.info("Storage queue listener stopped for 'Functions.%s' (queue name='%s')", self.function,
                    self.queue_name)


class Queues:
    """Every queue-triggered function of the app. A function whose queue name or connection cannot be resolved
    is reported in error (`errors`), as the host reports a listener that could not start, and the others run. The
    listeners poll in a process of their own (local/host/listener_process.py); this host process runs the
    invocations they hand over."""

    def __init__(self, functions: dict[str, FunctionInfo], invoker: Invoker, options: QueuesOptions, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.visibility = in_flight_visibility(environ)
        self.errors: dict[str, str] = {}
        self._functions: dict[str, tuple[FunctionInfo, str]] = {}
        plans: list[ListenerPlan] = []
        for fn in functions.values():
            if fn.trigger_type != "queueTrigger" or fn.error:
                continue
            try:
                name = resolve_setting_expressions(str(fn.trigger.get("queueName", "")),
                                                   where=f"the queue name of Functions.{fn.name}",
                                                   environ=environ).lower()  # as the extension normalises it
                if not _QUEUE_NAME.match(name):
                    raise ValueError(f"'{name}' is not a valid queue name (3-63 lower-case letters, digits and "
                                     "single hyphens)")
                connection = connection_string(str(fn.trigger.get("connection") or ""), environ)
            except ValueError as exc:
                self.errors[fn.name] = str(exc)
                logger.error("The listener for function 'Functions.%s' was unable to start: %s", fn.name, exc)
                continue
            self._functions[fn.name] = (fn, name)
            plans.append(ListenerPlan(fn.name, name, connection))
        invoker.set_trigger_binder("queueTrigger", self.admin_message)
        self._invoker = invoker
        self._process = ListenerProcess(plans, options, self.visibility, self._invoke)

    @staticmethod
    def admin_message(fn: FunctionInfo, text: str) -> TriggerData:
        """The message of an invocation through the admin API: its body is the input text."""
        return trigger_data(text.encode("utf-8"), binary=_binary(fn))

    async def start(self) -> None:
        await self._process.start()

    async def _invoke(self, function: str, body: bytes, facts: dict[str, Any]) -> bool:
        """Run one message the listener process handed over; whether the invocation succeeded."""
        fn, queue_name = self._functions[function]
        value = trigger_data(body, MessageFacts(**facts), binary=_binary(fn))
        try:
            await self._invoker.invoke(fn, {fn.trigger_name: value},
                                       reason=f"New queue message detected on '{queue_name}'.")
        except Exception:  # noqa: BLE001 - the invoker logged it; the listener releases the message
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return self._process.stats()

    async def refresh_stats(self) -> None:
        await self._process.refresh_stats()

    async def stop(self, grace: float) -> None:
        await self._process.stop(grace)


def _binary(fn: FunctionInfo) -> bool:
    return str(fn.trigger.get("dataType", "")).lower() == "binary"


class Listeners:
    """The listeners of the listener process: one per queue-triggered function, each handing its messages to
    `dispatch`."""

    def __init__(self, plans: list[ListenerPlan], options: QueuesOptions, visibility: int,
                 dispatch: Callable[[str, bytes, MessageFacts], Awaitable[None]]) -> None:
        self.options = options
        self.visibility = visibility
        self.listeners: dict[str, QueueListener] = {}
        self._plans = plans
        self._dispatch = dispatch
        self._services: dict[str, QueueServiceClient] = {}

    def _service(self, connection: str) -> QueueServiceClient:
        if connection not in self._services:
            self._services[connection] = QueueServiceClient.from_connection_string(connection, logger=STORAGE_LOGGER)
        return self._services[connection]

    def start(self) -> None:
        for plan in self._plans:
            service = self._service(plan.connection)
            poison_name = poison_queue_name(plan.queue)
            listener = QueueListener(
                function=plan.function, queue_name=plan.queue, queue=service.get_queue_client(plan.queue),
                poison=service.get_queue_client(poison_name) if poison_name else None,
                options=self.options, dispatch=self._dispatch, visibility=self.visibility,
                on_poisoned=self.notify)
            self.listeners[plan.function] = listener
            listener.start()

    def notify(self, queue_name: str) -> None:
        for listener in self.listeners.values():
            if listener.queue_name == queue_name:
                listener.notify()

    def stats(self) -> dict[str, Any]:
        return {name: {"queue": listener.queue_name, **vars(listener.stats), "in_flight": listener.in_flight}
                for name, listener in sorted(self.listeners.items())}

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(listener.stop(grace) for listener in self.listeners.values()))
        for listener in self.listeners.values():
            for client in (listener.queue, listener.poison):
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
        for service in self._services.values():
            with contextlib.suppress(Exception):
                await service.close()
