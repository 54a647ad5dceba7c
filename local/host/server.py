"""Wire the local host together: the app's functions, the invoker, HTTP triggers, timers, Storage queue
triggers, the admin API and the Durable engine (`local.host.durable`, optional: if it cannot be imported or
started the host still serves the other triggers, and says so in its log), served by aiohttp on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from local.host.admin import AdminApi
from local.host.hostconfig import HostConfig
from local.host.http_trigger import MAX_BODY_BYTES, HttpRoute, HttpTriggers
from local.host.invoker import FunctionInfo, Invoker
from local.host.keys import HostKeys
from local.host.queues import Queues
from local.host.timers import Timers, host_id

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
# Kestrel, which serves the Functions host, refuses a request line (method, target, version) over 8,192 bytes
# (KestrelServerLimits.MaxRequestLineSize) with 414 before any routing or key check. aiohttp's own parser stops
# at 8,190 with a 400 that echoes the line back, so it is given room and the host answers as Kestrel does.
MAX_REQUEST_LINE_BYTES = 8192
PARSER_LINE_BYTES = 64 * 1024


@web.middleware
async def _request_line_limit(request: web.Request, handler: Any) -> web.StreamResponse:
    line = len(request.method) + len(request.raw_path.encode()) + len(" HTTP/1.1") + 1
    if line > MAX_REQUEST_LINE_BYTES:
        return web.Response(status=414)
    response: web.StreamResponse = await handler(request)
    return response


@dataclass
class HostOptions:
    port: int
    app_root: Path
    config: HostConfig
    keys: HostKeys
    state_dir: Path | None = None
    bind: str = "127.0.0.1"


def _create_engine(functions: dict[str, FunctionInfo], invoker: Invoker, options: HostOptions) -> Any | None:
    try:
        from local.host.durable import DurableEngine
    except Exception:
        logger.exception("Durable Functions are unavailable: local.host.durable failed to import")
        return None
    durable = options.config.durable
    try:
        return DurableEngine(
            functions,
            invoker,
            hub_name=durable.hub_name,
            max_concurrent_activities=durable.max_concurrent_activities,
            max_concurrent_orchestrations=durable.max_concurrent_orchestrations,
            base_url=f"http://{options.bind}:{options.port}",
            master_key=options.keys.master,
            function_key=options.keys.function,
        )
    except Exception:
        logger.exception("Durable Functions are unavailable: the engine could not be created")
        return None


class LocalHost:
    """One running host: `await start()`, then `await stop()`."""

    def __init__(self, functions: dict[str, FunctionInfo], options: HostOptions) -> None:
        self.functions = functions
        self.options = options
        self.base_url = f"http://{options.bind}:{options.port}"
        self.stopped = asyncio.Event()
        self.invoker = Invoker(
            function_timeout=options.config.function_timeout, function_directory=str(options.app_root)
        )
        self.engine = _create_engine(functions, self.invoker, options)
        self.host_id = host_id(options.app_root)
        self.instance_id = uuid.uuid4().hex
        # The host's own storage (AzureWebJobsStorage): timer locks and schedule status. Without it the timers run
        # unlocked, as if this were the only instance.
        storage = os.environ.get("AzureWebJobsStorage", "").strip() or None
        self.timers = Timers(functions, self.invoker, state_dir=options.state_dir, storage=storage,
                             host_id=self.host_id, singleton=options.config.singleton)
        self.queues = Queues(functions, self.invoker, options.config.queues)
        if self.engine is not None:
            self.invoker.set_input_provider("durableClient", self.engine.client_binding_json)
        self.http = HttpTriggers(functions, self.invoker, options.keys, route_prefix=options.config.route_prefix)
        self.admin = AdminApi(
            functions=functions,
            invoker=self.invoker,
            keys=options.keys,
            host_id=self.host_id,
            instance_id=self.instance_id,
            base_url=self.base_url,
            function_errors={**self.timers.errors, **self.queues.errors},
            http_url_of=self._http_url,
            extra_stats=self._engine_stats,
            refresh_stats=self.queues.refresh_stats,
            on_shutdown=self.stopped.set,
        )
        self._runner: web.AppRunner | None = None
        self._engine_started = False

    def _http_url(self, fn: FunctionInfo) -> str | None:
        if fn.trigger_type != "httpTrigger":
            return None
        return self.base_url + self.http.url_path(HttpRoute.of(fn))

    def _engine_stats(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"queues": self.queues.stats(), "timers": self.timers.stats()}
        stats = getattr(self.engine, "stats", None)
        if not callable(stats):
            return extra
        try:
            return {**extra, "durable": stats()}
        except Exception:  # noqa: BLE001 - stats are informative only
            logger.exception("Durable engine stats failed")
            return extra

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_request_line_limit])
        app.add_routes(self.admin.routes())
        if self.engine is not None:
            app.add_routes(self.engine.routes())
        # Last: with an empty route prefix the HTTP triggers' catch-all must not shadow the others.
        app.add_routes(self.http.aiohttp_routes())
        return app

    async def start(self) -> None:
        if self.engine is not None:
            try:
                await self.engine.start()
                self._engine_started = True
            except Exception:
                logger.exception("Durable Functions are unavailable: the engine failed to start")
                self.engine = None
        # Requests still running at stop get a few seconds, well inside the launcher's 10 s grace.
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_GRACE_SECONDS, max_line_size=PARSER_LINE_BYTES)
        await self._runner.setup()
        # Listeners start before the host answers, so an instance that is ready has tried for its timer locks.
        await self.timers.start()
        await self.queues.start()
        await web.TCPSite(self._runner, self.options.bind, self.options.port, reuse_address=True).start()
        self._log_functions()
        logger.info("Host started on %s (Durable %s)", self.base_url,
                    "running" if self.engine is not None else "unavailable")

    def _log_functions(self) -> None:
        for fn in self.functions.values():
            url = self._http_url(fn)
            if url:
                methods = fn.trigger.get("methods") or ["*"]
                logger.info("Function %s: [%s] %s", fn.name, ",".join(str(m).upper() for m in methods), url)
            else:
                logger.info("Function %s: %s", fn.name, fn.trigger_type)

    async def stop(self) -> None:
        logger.info("Host stopping")
        # Listeners stop taking work and let what runs finish, within the same grace (the queues' includes the
        # release of what outlives it).
        await asyncio.gather(self.timers.stop(), self.queues.stop(SHUTDOWN_GRACE_SECONDS - 2))
        if self.engine is not None and self._engine_started:
            with contextlib.suppress(Exception):
                await self.engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        self.invoker.close()
        logger.info("Host stopped")

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        await self.start()
        try:
            await self.stopped.wait()
        finally:
            await self.stop()
