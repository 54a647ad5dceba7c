"""Invoke one function of the app the way the Azure Functions Python worker does.

Every trigger of the local host (HTTP, timers, the admin API, the Durable engine in
`local.host.durable`) ends here, so logging, timeouts and concurrency are the same for all of them:

- Inputs are keyword arguments named after the function's bindings. A value given as an
  `azure.functions.meta.Datum` (or a `TriggerData`: a Datum with the trigger metadata the host sends
  along, as the queue trigger's Id, DequeueCount, ...) is decoded with the converter `azure.functions`
  registers for that binding type (the worker's own path); any other value is passed as it is. A parameter named
  `context` that is not a binding receives an `azure.functions.Context`, as the worker does. Input
  bindings the trigger does not supply (the durable client) come from providers (`set_input_provider`),
  as the host's extensions supply them.
- Only the binding types the host implements are accepted (`unsupported_binding`): the triggers
  HTTP, timer, Storage queue, orchestration and activity, the `durableClient` input and the HTTP response as
  `$return`. A function with any other binding is indexed "in error" (`FunctionInfo.error`), as the
  Functions host marks a function whose binding extension is missing, and is never invoked, rather
  than run with a binding silently left empty.
- Synchronous functions run in a bounded thread pool whose size comes from
  `PYTHON_THREADPOOL_THREAD_COUNT` (default as the worker on Python 3.11: the `ThreadPoolExecutor`
  default, min(32, CPUs + 4)); coroutine functions run on the host's event loop.
- Each invocation is logged like the Functions host logs it: `Executing 'Functions.<name>'
  (Reason='...', Id=...)` then `Executed 'Functions.<name>' (Succeeded|Failed, Id=..., Duration=NNms)`,
  with the exception on failure.
- `functionTimeout` (host.json) is enforced. The real host reports the invocation failed with
  "Timeout value of hh:mm:ss was exceeded by function: Functions.<name>" and then restarts the language
  worker, which kills the running code. A Python thread cannot be killed, so here a timed-out
  *synchronous* invocation is abandoned instead: its caller gets `FunctionTimeoutError` at once, the
  thread keeps running to its end in the pool (its slot stays busy, its result is discarded and its end
  is logged), and it is counted in `stats()["abandoned"]`. A timed-out *coroutine* invocation is
  cancelled, which is as close to the worker restart as one process gets. When the host stops while
  abandoned threads still run, the process exits without waiting for them (`local.host.__main__`),
  as the worker's process would be killed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import meta

logger = logging.getLogger(__name__)

#: Reason the real host gives for invocations started through its admin API or an HTTP request.
REASON_HOST_API = "This function was programmatically called via the host APIs."

#: Triggers some part of the host fires (HTTP routes, timers, Storage queues, the Durable engine).
SUPPORTED_TRIGGERS = frozenset({"httpTrigger", "timerTrigger", "queueTrigger", "orchestrationTrigger",
                                "activityTrigger"})
#: Input bindings the host supplies (through `set_input_provider`).
SUPPORTED_INPUTS = frozenset({"durableClient"})


def unsupported_binding(bindings: list[dict[str, Any]]) -> str | None:
    """Why the host cannot run a function with these bindings, or None when it can. The only output
    delivered is an HTTP trigger's response, returned as `$return`."""
    for binding in bindings:
        binding_type = str(binding.get("type", ""))
        name = str(binding.get("name", ""))
        if binding_type.endswith("Trigger"):
            supported = binding_type in SUPPORTED_TRIGGERS
        elif binding.get("direction") == "out":
            supported = binding_type == "http" and name == "$return"
        else:
            supported = binding_type in SUPPORTED_INPUTS
        if not supported:
            return f"binding type {binding_type} is not implemented by the local host (binding '{name}')"
    return None


class FunctionInErrorError(RuntimeError):
    """The function was indexed in error (see `FunctionInfo.error`) and cannot run."""


class FunctionTimeoutError(TimeoutError):
    """An invocation ran past `functionTimeout`; the message is the Functions host's."""


@dataclass(frozen=True)
class FunctionInfo:
    """One function of the app as the host indexed it from `app.get_functions()`.

    `trigger` and `bindings` are the function.json binding dicts (JSON values, so enum members are
    plain strings: `"direction": "in"`, `"authLevel": "function"`).
    """

    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    func: Callable[..., Any]
    is_async: bool
    #: Parameters of `func` the worker fills: binding names plus `context` when it is not a binding.
    parameters: frozenset[str] = field(default_factory=frozenset)
    wants_context: bool = False
    #: Why the function is "in error" (never invoked), or None; set at indexing.
    error: str | None = None

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type", ""))

    @property
    def trigger_name(self) -> str:
        return str(self.trigger.get("name", ""))

    def bindings_of_type(self, binding_type: str) -> list[dict[str, Any]]:
        return [b for b in self.bindings if b.get("type") == binding_type]

    @property
    def output_bindings(self) -> list[dict[str, Any]]:
        return [b for b in self.bindings if b.get("direction") == "out"]

    @classmethod
    def from_callable(
        cls, name: str, bindings: list[dict[str, Any]], function: Callable[..., Any]
    ) -> FunctionInfo:
        """Describe `function` given its binding dicts (the trigger is the binding whose type ends in
        "Trigger")."""
        trigger = next(b for b in bindings if str(b.get("type", "")).endswith("Trigger"))
        try:
            params = frozenset(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            params = frozenset()
        binding_names = {str(b.get("name")) for b in bindings}
        return cls(
            name=name,
            trigger=trigger,
            bindings=bindings,
            func=function,
            is_async=inspect.iscoroutinefunction(function),
            parameters=params,
            wants_context="context" in params and "context" not in binding_names,
            error=unsupported_binding(bindings),
        )


class _Context(func.Context):
    """The `context` argument, with the fields the worker fills in."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


def format_timespan(seconds: float) -> str:
    """hh:mm:ss as the host prints functionTimeout."""
    total = int(round(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True)
class TriggerData:
    """A trigger's value with its trigger metadata, as the host sends both to the worker
    (InvocationRequest.input_data and trigger_metadata)."""

    datum: meta.Datum
    metadata: Mapping[str, meta.Datum]


def decode_input(binding: Mapping[str, Any], value: object) -> object:
    """Decode a `Datum` (or `TriggerData`) with the converter `azure.functions` registers for the binding's
    type, handing it the trigger metadata as the worker does."""
    metadata: Mapping[str, meta.Datum] = {}
    if isinstance(value, TriggerData):
        metadata = value.metadata
        value = value.datum
    if not isinstance(value, meta.Datum):
        return value
    converter = meta.get_binding_registry().get(str(binding.get("type")))
    if converter is None:
        return value.value
    return converter.decode(value, trigger_metadata=dict(metadata))


def encode_output(fn: FunctionInfo, value: object) -> meta.Datum | None:
    """Encode a return value as the worker sends it to the host: with the `$return` binding's
    converter, or the trigger's when the trigger has an implicit output (activities, orchestrators)."""
    registry = meta.get_binding_registry()
    for binding in fn.output_bindings:
        if binding.get("name") == "$return":
            converter = registry.get(str(binding.get("type")))
            return converter.encode(value, expected_type=None) if converter else None
    converter = registry.get(fn.trigger_type)
    if converter is not None and converter.has_implicit_output():
        return converter.encode(value, expected_type=None)
    return None


def _default_pool_size() -> int:
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            logger.warning("PYTHON_THREADPOOL_THREAD_COUNT=%r is not a number; using the default", configured)
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass
class _Counts:
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0


class Invoker:
    """Runs invocations with the worker's conventions; shared by every trigger of the host.

    `function_timeout` is host.json's `functionTimeout` in seconds (None: unbounded);
    `function_directory` is what `context.function_directory` reports (the app root).
    """

    def __init__(
        self,
        *,
        function_timeout: float | None = None,
        max_workers: int | None = None,
        function_directory: str = "",
    ) -> None:
        self.function_timeout = function_timeout
        self.max_workers = max_workers or _default_pool_size()
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="function")
        self._function_directory = function_directory
        self._counts: dict[str, _Counts] = {}
        self._input_providers: dict[str, Callable[[], object]] = {}
        self._trigger_binders: dict[str, Callable[[FunctionInfo, str], object]] = {}
        self._abandoned = 0
        self._running = 0

    def set_input_provider(self, binding_type: str, provider: Callable[[], object]) -> None:
        """Supply input bindings of `binding_type` that a trigger does not pass itself, as the host's
        extensions do (the Durable engine provides `durableClient`)."""
        self._input_providers[binding_type] = provider

    def set_trigger_binder(self, trigger_type: str, binder: Callable[[FunctionInfo, str], object]) -> None:
        """Let the part of the host that owns `trigger_type` build the trigger value for an invocation
        through the admin API from its input string, as the extension's trigger binding does
        (`ITriggerBinding.BindAsync`): the timers give a TimerInfo with the stored schedule status."""
        self._trigger_binders[trigger_type] = binder

    async def bind_trigger(self, fn: FunctionInfo, text: str) -> object | None:
        """The trigger value a registered binder builds for `fn` from `text` (a binder may be a coroutine
        function, e.g. when it reads storage), or None without a binder."""
        binder = self._trigger_binders.get(fn.trigger_type)
        if binder is None:
            return None
        value = binder(fn, text)
        return await value if inspect.isawaitable(value) else value

    async def invoke(
        self,
        fn: FunctionInfo,
        inputs: Mapping[str, object],
        *,
        reason: str,
        timeout: float | None = None,
        invocation_id: str | None = None,
        convert_result: Callable[[object], object] | None = None,
    ) -> object:
        """Run `fn` with `inputs` (binding name -> value) and return what it returned, or raise what
        it raised (`FunctionTimeoutError` past the timeout). `timeout=None` applies functionTimeout.

        `convert_result` turns the return value into what the trigger sends on (an HTTP response); as
        in the worker, a value it cannot convert fails the invocation."""
        if fn.error:
            logger.error("'Functions.%s' is in error and was not run: %s", fn.name, fn.error)
            raise FunctionInErrorError(f"Functions.{fn.name} is in error: {fn.error}")
        invocation_id = invocation_id or str(uuid.uuid4())
        limit = timeout if timeout is not None else self.function_timeout
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, invocation_id)
        started = time.perf_counter()
        counts = self._counts.setdefault(fn.name, _Counts())
        self._running += 1
        try:
            kwargs = self._arguments(fn, inputs, invocation_id)
            result = await self._run(fn, kwargs, limit, invocation_id)
            if convert_result is not None:
                result = convert_result(result)
        except FunctionTimeoutError as exc:
            counts.failed += 1
            counts.timed_out += 1
            self._log_failed(fn, invocation_id, started, exc)
            raise
        except BaseException as exc:
            counts.failed += 1
            self._log_failed(fn, invocation_id, started, exc)
            raise
        finally:
            self._running -= 1
        counts.succeeded += 1
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            fn.name, invocation_id, _elapsed_ms(started),
        )
        return result

    def _arguments(self, fn: FunctionInfo, inputs: Mapping[str, object], invocation_id: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for binding in fn.bindings:
            name = str(binding.get("name"))
            if binding.get("direction") == "out":
                continue  # `$return`, the only output indexing lets through
            binding_type = str(binding.get("type"))
            if name in inputs:
                kwargs[name] = decode_input(binding, inputs[name])
            elif binding_type in self._input_providers:
                kwargs[name] = self._input_providers[binding_type]()
            elif binding_type == "durableClient":
                raise ValueError(
                    f"no value for durableClient binding {name!r} of Functions.{fn.name}: "
                    "the Durable engine is not running"
                )
            else:
                raise FunctionInErrorError(f"no value for {binding_type} binding {name!r} of Functions.{fn.name}")
        if fn.wants_context:
            kwargs["context"] = _Context(invocation_id, fn.name, self._function_directory)
        return kwargs

    async def _run(
        self, fn: FunctionInfo, kwargs: dict[str, Any], limit: float | None, invocation_id: str
    ) -> object:
        if fn.is_async:
            try:
                return await asyncio.wait_for(fn.func(**kwargs), limit)
            except TimeoutError as exc:
                raise _timeout_error(fn, limit) from exc
        loop = asyncio.get_running_loop()
        # copy_context keeps contextvars (e.g. logging correlation) visible inside the pool thread.
        call = functools.partial(contextvars.copy_context().run, functools.partial(fn.func, **kwargs))
        future = loop.run_in_executor(self._pool, call)
        try:
            # shield: when the wait ends early only the wait ends; the thread cannot be stopped and runs on.
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError as exc:
            self._abandon(future, fn.name, invocation_id)
            raise _timeout_error(fn, limit) from exc
        except asyncio.CancelledError:
            # The host is stopping (or the caller gave up): the thread runs on, abandoned.
            if not future.done():
                self._abandon(future, fn.name, invocation_id)
            raise

    def _abandon(self, future: asyncio.Future[Any], name: str, invocation_id: str) -> None:
        self._abandoned += 1
        future.add_done_callback(functools.partial(self._abandoned_done, name, invocation_id))

    def _abandoned_done(self, name: str, invocation_id: str, future: asyncio.Future[Any]) -> None:
        self._abandoned -= 1
        error = None if future.cancelled() else future.exception()
        logger.warning(
            "Abandoned invocation of 'Functions.%s' (Id=%s) ended after it was abandoned%s; its result is discarded",
            name, invocation_id, f" with {type(error).__name__}: {error}" if error else "",
        )

    def _log_failed(self, fn: FunctionInfo, invocation_id: str, started: float, exc: BaseException) -> None:
        logger.error(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", fn.name, invocation_id, _elapsed_ms(started)
        )
        if isinstance(exc, FunctionTimeoutError):
            logger.error("%s", exc)
        elif isinstance(exc, asyncio.CancelledError):
            logger.error("Invocation of 'Functions.%s' (Id=%s) was cancelled", fn.name, invocation_id)
        else:
            # The traceback without the message, then a bounded message: the Durable SDK appends the whole
            # orchestration state (activity inputs included) to an orchestrator's exception text.
            logger.error(
                "Exception while executing function: Functions.%s. Result: Failure Exception: %s: %s\n%s",
                fn.name, type(exc).__name__, _loggable_message(exc),
                "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
            )

    def stats(self) -> dict[str, Any]:
        """Counts per function, plus invocations running now and abandoned threads still running."""
        return {
            "functions": {name: vars(c).copy() for name, c in sorted(self._counts.items())},
            "running": self._running,
            "abandoned": self._abandoned,
            "thread_pool_size": self.max_workers,
        }

    def close(self) -> None:
        """Stop accepting work; abandoned threads are not waited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _timeout_error(fn: FunctionInfo, limit: float | None) -> FunctionTimeoutError:
    return FunctionTimeoutError(
        f"Timeout value of {format_timespan(limit or 0)} was exceeded by function: Functions.{fn.name}"
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


_MAX_LOGGED_MESSAGE = 500


def _loggable_message(exc: BaseException) -> str:
    """An exception's message without the Durable SDK's state suffix, cut to a bounded length."""
    message = str(exc).split("$OutOfProcData$", 1)[0].strip()
    return message if len(message) <= _MAX_LOGGED_MESSAGE else message[:_MAX_LOGGED_MESSAGE] + "..."
