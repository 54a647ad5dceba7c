"""The host's admin API (master key only, as in Azure) plus two local-only endpoints.

- `GET /admin/host/status` -> `{"id", "state": "Running", "version", ...}`
- `GET /admin/functions`, `GET /admin/functions/{name}` -> function metadata (name, config = the
  function.json bindings, invoke_url_template for HTTP triggers); `GET /admin/functions/{name}/status`
  -> `{"errors": [...]}`. Errors are those of functions indexed in error (an unsupported binding) and
  those the host's parts report (`function_errors`, e.g. a timer's unresolvable schedule).
- `POST /admin/functions/{name}` with `{"input": "..."}` -> 202, and the function runs in the background,
  like the host's FunctionsController.Invoke: no body gives 400, an unknown name 404 (names match
  case-insensitively). The input goes to the trigger binding: a timer gets the TimerRequest its
  listener builds (`Invoker.bind_trigger`: with the current schedule status when monitored), a queue
  trigger a message whose body is the input, an activity gets the input as its (JSON or string)
  payload, other triggers the raw string. Azure also
  accepts HTTP-, orchestration- and entity-triggered functions here and then fails the invocation in
  the background; this host refuses them up front with 400 and a reason instead, as it refuses a
  function in error.
- Local only: `GET /admin/local/stats` -> `{"pid", "peak_rss_mb", "invocations": {...}, "queues": {...},
  "timers": {...}, "durable": {...}}` (peak RSS of this process, which runs the app, and the benchmarks
  read it; what each queue listener did; the host id and the timers this instance runs) and
  `POST /admin/local/shutdown` (graceful stop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from azure.functions import meta

from local.host.invoker import REASON_HOST_API, FunctionInfo, Invoker
from local.host.keys import HostKeys

logger = logging.getLogger(__name__)

HOST_VERSION = "4.0.0.0"
_REFUSED_TRIGGERS = {
    "httpTrigger": "HTTP-triggered functions are called through their own route",
    "orchestrationTrigger": "orchestrator functions are started through the durable client",
    "entityTrigger": "entity functions are signalled through the durable client",
}


class AdminApi:
    def __init__(
        self,
        *,
        functions: dict[str, FunctionInfo],
        invoker: Invoker,
        keys: HostKeys,
        host_id: str,
        base_url: str,
        instance_id: str = "",
        function_errors: dict[str, str],
        http_url_of: Callable[[FunctionInfo], str | None],
        extra_stats: Callable[[], dict[str, Any]] | None = None,
        refresh_stats: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.functions = functions
        self.invoker = invoker
        self.keys = keys
        self.host_id = host_id
        self.instance_id = instance_id or host_id
        self.base_url = base_url
        self.function_errors = function_errors
        self.http_url_of = http_url_of
        self.extra_stats = extra_stats
        self.refresh_stats = refresh_stats
        self.on_shutdown = on_shutdown
        self.started = time.monotonic()
        self._background: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/host/status", self._guard(self.host_status)),
            web.get("/admin/functions", self._guard(self.list_functions)),
            web.get("/admin/functions/{name}", self._guard(self.get_function)),
            web.get("/admin/functions/{name}/status", self._guard(self.function_status)),
            web.post("/admin/functions/{name}", self._guard(self.invoke_function)),
            web.get("/admin/local/stats", self._guard(self.local_stats)),
            web.post("/admin/local/shutdown", self._guard(self.local_shutdown)),
        ]

    def _guard(
        self, handler: Callable[[web.Request], Any]
    ) -> Callable[[web.Request], Any]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.keys.allows(request, "admin"):
                return web.Response(status=401)
            return await handler(request)

        return guarded

    def _find(self, name: str) -> FunctionInfo | None:
        lowered = name.lower()
        return next((fn for fn in self.functions.values() if fn.name.lower() == lowered), None)

    def _errors(self) -> dict[str, str]:
        errors = {fn.name: fn.error for fn in self.functions.values() if fn.error}
        return {**errors, **self.function_errors}

    async def host_status(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "id": self.host_id,
            "state": "Running",
            "version": HOST_VERSION,
            "versionDetails": f"local.host on Python {platform.python_version()}",
            "platformVersion": "",
            "instanceId": self.instance_id,
            "computerName": socket.gethostname(),
            "processUptime": int((time.monotonic() - self.started) * 1000),
            "functionAppContentEditingState": "NotAllowed",
        }
        errors = self._errors()
        if errors:
            body["errors"] = [f"{name}: {error}" for name, error in sorted(errors.items())]
        return web.json_response(body)

    def _metadata(self, fn: FunctionInfo) -> dict[str, Any]:
        href = f"{self.base_url}/admin/functions/{fn.name}"
        return {
            "name": fn.name,
            "href": href,
            "invoke_url_template": self.http_url_of(fn),
            "language": "python",
            "config": {"scriptFile": "function_app.py", "bindings": fn.bindings},
            "isDisabled": False,
            "isDirect": True,
            "isProxy": False,
        }

    async def list_functions(self, request: web.Request) -> web.Response:
        return web.json_response([self._metadata(fn) for fn in self.functions.values()])

    async def get_function(self, request: web.Request) -> web.Response:
        fn = self._find(request.match_info["name"])
        if fn is None:
            return web.Response(status=404)
        return web.json_response(self._metadata(fn))

    async def function_status(self, request: web.Request) -> web.Response:
        fn = self._find(request.match_info["name"])
        if fn is None:
            return web.Response(status=404)
        error = self._errors().get(fn.name)
        return web.json_response({"errors": [error] if error else None})

    async def invoke_function(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return web.Response(status=400)
        fn = self._find(request.match_info["name"])
        if fn is None:
            return web.Response(status=404)
        refused = _REFUSED_TRIGGERS.get(fn.trigger_type)
        if refused:
            return web.json_response({"error": f"{fn.name} cannot be invoked here: {refused}"}, status=400)
        error = self._errors().get(fn.name)
        if error:
            return web.json_response({"error": error}, status=400)
        raw = body.get("input")
        text = "" if raw is None else raw if isinstance(raw, str) else json.dumps(raw)
        inputs: dict[str, object] = {fn.trigger_name: await self._trigger_value(fn, text)}
        task = asyncio.create_task(self._invoke(fn, inputs))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return web.Response(status=202)

    async def _trigger_value(self, fn: FunctionInfo, text: str) -> object:
        bound = await self.invoker.bind_trigger(fn, text)
        return bound if bound is not None else meta.Datum(text, "string")

    async def _invoke(self, fn: FunctionInfo, inputs: dict[str, object]) -> None:
        try:
            await self.invoker.invoke(fn, inputs, reason=REASON_HOST_API)
        except Exception:  # noqa: BLE001,S110 - the invoker logged it; nobody waits for the result
            pass

    async def local_stats(self, request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is KiB on Linux, bytes on macOS.
        peak_mb = usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024
        body: dict[str, Any] = {
            "pid": os.getpid(),
            "peak_rss_mb": round(peak_mb, 1),
            "invocations": self.invoker.stats(),
        }
        if self.refresh_stats is not None:
            await self.refresh_stats()
        if self.extra_stats is not None:
            body.update(self.extra_stats())
        return web.json_response(body)

    async def local_shutdown(self, request: web.Request) -> web.Response:
        if self.on_shutdown is not None:
            asyncio.get_running_loop().call_soon(self.on_shutdown)
        return web.Response(status=202)
