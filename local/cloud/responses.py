"""Error bodies of each Microsoft API, and the carrying-out of a request's fault plan.

Entra answers with its flat OAuth error JSON, Graph with `{"error": {code, message, innerError}}` and
Defender with `{"error": {code, message, target}}` (docs/MICROSOFT.md, "API tokens, limits and errors"); an injected
fault answers in the shape of the API it hits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

from aiohttp import web

from local.cloud.entra import EntraError
from local.cloud.faults import Fault, FaultPlan


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json",
                        charset="utf-8", headers=headers)


def graph_error(status: int, code: str, message: str, request: web.Request,
                headers: dict[str, str] | None = None) -> web.Response:
    request_id = str(uuid.uuid4())
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": request.headers.get("client-request-id", request_id),
    }}}
    return json_response(body, status, {"request-id": request_id, **(headers or {})})


def defender_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message, "target": str(uuid.uuid4())}},
                         status, headers)


def entra_error(error: EntraError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(error.body(), error.status, headers)


def api_error(api: str, status: int, code: str, message: str, request: web.Request,
              headers: dict[str, str] | None = None) -> web.Response:
    """An error in the shape of `api`: Defender's, or Graph's for Graph and sendMail."""
    if api == "defender":
        return defender_error(status, code, message, headers)
    return graph_error(status, code, message, request, headers)


def throttled(api: str, retry_after: int, request: web.Request) -> web.Response:
    headers = {"Retry-After": str(retry_after)}
    if api == "token":
        return entra_error(EntraError(429, "temporarily_unavailable", 90033,
                                      "A transient error has occurred. Please try again."), headers)
    if api == "defender":
        return defender_error(429, "TooManyRequests",
                              f"API calls quota exceeded. Try again in {retry_after} seconds.", headers)
    return graph_error(429, "TooManyRequests", "Too many requests. Please retry after the time in the "
                       "Retry-After header.", request, headers)


def missing_roles(api: str, required: tuple[str, ...], held: list[str], request: web.Request) -> web.Response:
    message = (f"Missing application roles. API required roles: {','.join(required)}, "
               f"application roles: {','.join(held)}.")
    if api == "mail":
        # Exchange-backed Graph endpoints answer a missing Mail.Send with their own code.
        return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.", request)
    return api_error(api, 403, "Forbidden", message, request)


def _fault_response(fault: Fault, api: str, request: web.Request) -> web.Response:
    if fault.kind == "throttle":
        return throttled(api, fault.retry_after, request)
    if fault.kind == "feature_disabled":
        return api_error(api, 403, "DisabledFeature", "The feature is disabled for this tenant.", request)
    status, code, text = {
        "server_error": (500, "InternalServerError", "An internal server error occurred."),
        "unavailable": (503, "ServiceUnavailable", "The service is temporarily unavailable."),
    }[fault.kind]
    if api == "token":
        error = "server_error" if status == 500 else "temporarily_unavailable"
        return entra_error(EntraError(status, error, 90033, f"{text} Please try again."))
    headers = {"Retry-After": str(fault.retry_after)} if status == 503 else None
    return api_error(api, status, code, text, request, headers)


async def before_handler(plan: FaultPlan, api: str, request: web.Request) -> web.Response | None:
    """Wait the injected latency, then return the response that replaces the real one, if any.

    A dropped connection never returns: the socket is aborted and the handler cancelled, so the client
    sees the connection close without any response.
    """
    if plan.latency_ms:
        await asyncio.sleep(plan.latency_ms / 1000)
    if plan.response is None:
        return None
    if plan.response.kind == "drop_connection":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    return _fault_response(plan.response, api, request)


def damage_body(plan: FaultPlan, response: web.Response) -> web.Response:
    """Apply a truncated/malformed-JSON fault to the response the handler produced."""
    body = response.body
    if plan.body is None or not isinstance(body, bytes) or not body:
        return response
    if plan.body.kind == "truncated_json":
        # A complete HTTP response whose JSON stops halfway, as when a proxy cuts the payload.
        damaged = body[: max(1, len(body) // 2)]
    else:
        damaged = b"{" + body.replace(b'"', b"'", 1)
    return web.Response(body=damaged, status=response.status, content_type="application/json",
                        charset="utf-8", headers={k: v for k, v in response.headers.items()
                                                  if k.lower() not in {"content-length", "content-type"}})
