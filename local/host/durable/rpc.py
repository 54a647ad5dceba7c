"""HTTP endpoints of the Durable engine: the extension's management API and the local admin knobs.

- `/durabletask/...` is the RPC base URL (`rpcBaseUrl`) the SDK's real `DurableOrchestrationClient` calls:
  start (`POST orchestrators/{name}[/{instanceId}]`), status (`GET instances/{id}`), list
  (`GET instances/`), terminate, raise event and purge. In Azure it is the extension's loopback-only
  listener and needs no key; the local host listens on loopback only too.
- `/runtime/webhooks/durabletask/...` serves the same operations at the URLs `create_check_status_response`
  builds, with the key check of the real webhooks (`code` or `x-functions-key`): only the extension's
  system key (the one those URLs carry) or the master key; a function key is refused, as in Azure.
- `/admin/local/...` (master key): the crash-test fault plan (faults.py) and benchmark diagnostics.

Status codes and bodies follow the extension's `HttpApiHandler`: 202 + management URLs for a start,
409 `{"Message": ...}` for a start while an instance with that id is pending or running, 200/202/404 for
status, 202/404/410 for terminate. A body that is not UTF-8 or not JSON is a 400 saying so.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from local.host.durable.engine import DurableError
from local.host.durable.faults import FaultPlanError
from local.host.durable.instances import RuntimeStatus

if TYPE_CHECKING:
    from local.host.durable.engine import DurableEngine

logger = logging.getLogger(__name__)

RPC_PREFIX = "/durabletask"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"


def build_routes(engine: DurableEngine) -> list[web.RouteDef]:
    api = _ManagementApi(engine)
    routes: list[web.RouteDef] = []
    for prefix, guard in ((RPC_PREFIX, None), (WEBHOOK_PREFIX, api.require_key)):
        def wrap(handler: Any, guard: Any = guard) -> Any:
            if guard is None:
                return handler

            async def guarded(request: web.Request) -> web.StreamResponse:
                guard(request)
                return await handler(request)

            return guarded

        routes += [
            web.post(f"{prefix}/orchestrators/{{name}}", wrap(api.start)),
            web.post(f"{prefix}/orchestrators/{{name}}/{{instance_id}}", wrap(api.start)),
            web.get(f"{prefix}/instances/", wrap(api.list_instances)),
            web.get(f"{prefix}/instances", wrap(api.list_instances)),
            web.delete(f"{prefix}/instances/", wrap(api.purge_many)),
            web.get(f"{prefix}/instances/{{instance_id}}", wrap(api.status)),
            web.delete(f"{prefix}/instances/{{instance_id}}", wrap(api.purge)),
            web.post(f"{prefix}/instances/{{instance_id}}/terminate", wrap(api.terminate)),
            web.post(f"{prefix}/instances/{{instance_id}}/raiseEvent/{{event_name}}", wrap(api.raise_event)),
        ]
    routes += [
        web.get("/admin/local/faults", api.get_faults),
        web.post("/admin/local/faults", api.set_faults),
        web.post("/admin/local/durable/direct", api.direct_activities),
        web.get("/admin/local/durable/instances/{instance_id}", api.diagnostics),
    ]
    return routes


class _ManagementApi:
    def __init__(self, engine: DurableEngine) -> None:
        self.engine = engine

    # --- keys ------------------------------------------------------------------------------------------

    def require_key(self, request: web.Request) -> None:
        """The webhooks' check: the extension's system key or the master key in `code` or
        `x-functions-key` (Azure's webhooks take no function key)."""
        keys = [k for k in (self.engine.system_key, self.engine.master_key) if k]
        self._check(request, keys)

    def require_master(self, request: web.Request) -> None:
        self._check(request, [self.engine.master_key] if self.engine.master_key else [])

    @staticmethod
    def _check(request: web.Request, keys: list[str]) -> None:
        if not keys:
            return
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
            raise web.HTTPUnauthorized()

    # --- management API -----------------------------------------------------------------------------------

    async def start(self, request: web.Request) -> web.Response:
        try:
            input_json = _input_json(await request.read())
        except _BadBody as exc:
            return _error(400, str(exc))
        name = request.match_info["name"]
        try:
            instance = self.engine.start_instance(name, request.match_info.get("instance_id"), input_json)
        except DurableError as exc:
            return _error(exc.status, str(exc))
        payload = self._management_payload(request, instance.instance_id)
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"],
                                                               "Retry-After": "10"})

    async def status(self, request: web.Request) -> web.Response:
        instance = self.engine.store.get(request.match_info["instance_id"])
        if instance is None:
            return web.Response(status=404)
        body = instance.status_json(
            show_input=_flag(request, "showInput", default=True),
            show_history=_flag(request, "showHistory", default=False),
            show_history_output=_flag(request, "showHistoryOutput", default=False),
        )
        if instance.status in (RuntimeStatus.PENDING, RuntimeStatus.RUNNING):
            return web.json_response(body, status=202, headers={"Location": str(request.url),
                                                                "Retry-After": "5"})
        failed_as_500 = _flag(request, "returnInternalServerErrorOnFailure", default=False)
        status = 500 if instance.status is RuntimeStatus.FAILED and failed_as_500 else 200
        return web.json_response(body, status=status)

    async def list_instances(self, request: web.Request) -> web.Response:
        statuses = _statuses(request)
        try:
            created_from = _query_time(request, "createdTimeFrom")
            created_to = _query_time(request, "createdTimeTo")
        except ValueError:
            return _error(400, "createdTimeFrom and createdTimeTo must be ISO 8601 date-times")
        found = self.engine.store.query(created_from=created_from, created_to=created_to,
                                        statuses=statuses or None,
                                        prefix=request.query.get("instanceIdPrefix") or None)
        show_input = _flag(request, "showInput", default=False)
        return web.json_response([i.status_json(show_input=show_input) for i in found],
                                 headers={"x-ms-continuation-token": ""})

    async def terminate(self, request: web.Request) -> web.Response:
        try:
            self.engine.terminate(request.match_info["instance_id"], request.query.get("reason"))
        except DurableError as exc:
            return web.Response(status=exc.status)
        return web.Response(status=202)

    async def raise_event(self, request: web.Request) -> web.Response:
        try:
            data_json = _input_json(await request.read())
            self.engine.raise_event(request.match_info["instance_id"], request.match_info["event_name"],
                                    data_json)
        except _BadBody as exc:
            return _error(400, str(exc))
        except DurableError as exc:
            return web.Response(status=exc.status)
        return web.Response(status=202)

    async def purge(self, request: web.Request) -> web.Response:
        try:
            deleted = self.engine.purge(request.match_info["instance_id"])
        except DurableError as exc:
            if exc.status == 404:
                return web.Response(status=404)
            return _error(exc.status, str(exc))
        return web.json_response({"instancesDeleted": deleted})

    async def purge_many(self, request: web.Request) -> web.Response:
        """Purge terminal instances created in a window (`createdTimeFrom` required), as the extension does."""
        try:
            created_from = _query_time(request, "createdTimeFrom")
            created_to = _query_time(request, "createdTimeTo")
        except ValueError:
            return _error(400, "createdTimeFrom and createdTimeTo must be ISO 8601 date-times")
        if created_from is None:
            return web.json_response("Please provide value for 'createdTimeFrom' parameter.", status=400)
        statuses = _statuses(request)
        found = self.engine.store.query(created_from=created_from, created_to=created_to,
                                        statuses=statuses or None)
        deleted = sum(self.engine.store.delete(i.instance_id) for i in found if i.status.is_terminal)
        if not deleted:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})

    def _management_payload(self, request: web.Request, instance_id: str) -> dict[str, str]:
        urls = json.loads(self.engine.client_binding_json())["managementUrls"]
        return {key: value.replace("INSTANCEID", instance_id) for key, value in urls.items()}

    # --- local admin ---------------------------------------------------------------------------------------

    async def get_faults(self, request: web.Request) -> web.Response:
        self.require_master(request)
        return web.json_response(self.engine.faults.describe())

    async def set_faults(self, request: web.Request) -> web.Response:
        self.require_master(request)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise FaultPlanError("the fault plan must be a JSON object")
            self.engine.faults.configure(body)
        except (ValueError, FaultPlanError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.engine.faults.describe())

    async def direct_activities(self, request: web.Request) -> web.Response:
        """Benchmark bound: run an activity N times on the engine's pool, without orchestration."""
        self.require_master(request)
        try:
            body = _parse_json(await request.read())
            if not isinstance(body, dict) or not isinstance(body.get("count", 1), int):
                raise _BadBody("the body must be a JSON object with a whole-number count")
        except _BadBody as exc:
            return web.json_response({"error": str(exc)}, status=400)
        count = int(body.get("count", 1))
        input_json = json.dumps(body.get("input"))
        try:
            seconds = await self.engine.run_activity_directly(str(body.get("function")), count, input_json)
        except DurableError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response({"function": body.get("function"), "count": count, "wall_s": seconds})

    async def diagnostics(self, request: web.Request) -> web.Response:
        self.require_master(request)
        try:
            return web.json_response(self.engine.diagnostics(
                request.match_info["instance_id"], with_history=_flag(request, "history", default=False)))
        except DurableError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)


class _BadBody(ValueError):
    """A request body the API cannot read; the message says why (answered with 400)."""


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadBody(f"The request body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _parse_json(raw: bytes) -> Any:
    text = _text(raw)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _BadBody(f"Invalid JSON content: {exc}") from exc


def _input_json(raw: bytes) -> str | None:
    """The orchestration input (or event data) as JSON text.

    The SDK posts `df_dumps(input)` as a JSON string (so the body is a JSON string literal holding JSON);
    the extension hands the orchestrator that inner text. A body that is any other JSON value is taken as
    the input itself.
    """
    if not raw.strip():
        return None
    value = _parse_json(raw)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _error(status: int, message: str) -> web.Response:
    # ASP.NET's HttpError shape; the SDK reads `ExceptionMessage` on a 400 start.
    body: dict[str, Any] = {"Message": message}
    if status == 400:
        body["ExceptionMessage"] = message
    return web.json_response(body, status=status)


def _flag(request: web.Request, name: str, *, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() == "true"


def _statuses(request: web.Request) -> set[RuntimeStatus]:
    # Unknown names are ignored, as the extension's Enum.TryParse loop does.
    known = {str(status) for status in RuntimeStatus}
    return {RuntimeStatus(s) for s in request.query.get("runtimeStatus", "").split(",") if s in known}


def _query_time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
