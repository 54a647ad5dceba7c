"""Graph and Defender routes of the local cloud: bearer-token checks, faults, rate limits, then the handler.

`GET /v1.0/security/alerts_v2` and `GET /api/alerts` answer from the alert streams (local.cloud.alerts);
`POST /v1.0/users/{id}/sendMail` records mail (local.cloud.mail). Each request is checked the way the
real service does: a token this cloud signed, unexpired, for the right audience, with one of the roles
the operation requires; the tenant is the token's `tid`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from local.cloud import wirejson
from local.cloud.directory import DEFENDER, GRAPH
from local.cloud.mail import MailError
from local.cloud.responses import (
    api_error,
    before_handler,
    damage_body,
    missing_roles,
    throttled,
)
from local.cloud.state import CloudState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiRule:
    api: str
    audience: str
    roles: tuple[str, ...]


GRAPH_ALERTS = ApiRule("graph", GRAPH, ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"))
DEFENDER_ALERTS = ApiRule("defender", DEFENDER, ("Alert.Read.All", "Alert.ReadWrite.All"))
GRAPH_SEND_MAIL = ApiRule("mail", GRAPH, ("Mail.Send",))

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.Response]]


def _unauthorized(rule: ApiRule, message: str, request: web.Request) -> web.Response:
    if rule.api == "defender":
        return api_error("defender", 401, "Unauthorized", message, request)
    return api_error(rule.api, 401, "InvalidAuthenticationToken", message, request)


def _authenticate(state: CloudState, rule: ApiRule, request: web.Request) -> dict[str, Any] | web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized(rule, "Access token is empty.", request)
    try:
        claims = state.signer.verify(token.strip())
    except jwt.ExpiredSignatureError:
        return _unauthorized(rule, "Lifetime validation failed, the token is expired.", request)
    except jwt.InvalidTokenError:
        return _unauthorized(rule, "Access token validation failure. Invalid signature or malformed token.",
                             request)
    if claims.get("aud") != rule.audience:
        if rule.api == "defender":
            # A token for another resource is refused with 403 by Defender
            # (docs/MICROSOFT.md, "API tokens, limits and errors").
            return api_error("defender", 403, "Forbidden",
                             f"The access token audience is not valid. Expected: {DEFENDER}.", request)
        return _unauthorized(rule, "Access token validation failure. Invalid audience.", request)
    if state.directory.tenants.get(claims["tid"]) is None:
        return _unauthorized(rule, "Access token validation failure. Unknown tenant.", request)
    return claims


def guarded(state: CloudState, rule: ApiRule, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap an API handler with authentication, faults, rate limits and the role check."""

    async def run(request: web.Request) -> web.Response:
        claims = _authenticate(state, rule, request)
        if isinstance(claims, web.Response):
            return claims
        tenant = state.directory.tenants[claims["tid"]]
        state.stats.api_request(tenant.id, rule.api)
        if tenant.rate_limits:
            retry_after = state.limiter.admit(tenant.id, rule.api)
            if retry_after is not None:
                state.stats.throttle(tenant.id, rule.api)
                logger.info("Rate limit hit for tenant %s on %s, retry after %ss", tenant.id, rule.api, retry_after)
                return throttled(rule.api, retry_after, request)
        plan = state.faults.plan(tenant.id, rule.api)
        state.stats.served(tenant.id, rule.api, plan)
        replaced = await before_handler(plan, rule.api, request)
        if replaced is not None:
            return replaced
        held = list(claims.get("roles", []))
        if plan.permission_removed or not set(held) & set(rule.roles):
            return missing_roles(rule.api, rule.roles, [] if plan.permission_removed else held, request)
        return damage_body(plan, await handler(request, claims))

    return run


async def _alerts_response(query: Callable[[], tuple[int, dict[str, Any]]]) -> web.Response:
    """Run an alert query and encode its answer off the event loop: pages may carry megabytes of evidence."""

    def work() -> tuple[int, bytes]:
        status, body = query()
        return status, wirejson.dumps(body)

    status, payload = await asyncio.to_thread(work)
    return web.Response(body=payload, status=status, content_type="application/json", charset="utf-8")


def add_routes(app: web.Application, state: CloudState) -> None:
    async def graph_alerts(request: web.Request, claims: dict[str, Any]) -> web.Response:
        base_url = f"https://{request.host}"
        query, prefer, now = dict(request.query), request.headers.get("Prefer"), state.clock.now()
        return await _alerts_response(
            lambda: state.alerts.query_graph(claims["tid"], query, prefer, now, base_url))

    async def defender_alerts(request: web.Request, claims: dict[str, Any]) -> web.Response:
        query, now = dict(request.query), state.clock.now()
        return await _alerts_response(lambda: state.alerts.query_defender(claims["tid"], query, now))

    async def send_mail(request: web.Request, claims: dict[str, Any]) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            return api_error("mail", 400, "BadRequest", "Unable to read JSON request payload.", request)
        try:
            state.mailbox.send(claims["tid"], claims.get("appid", ""), request.match_info["user"], body,
                               state.clock.now())
        except MailError as exc:
            return api_error("mail", exc.status, exc.code, exc.message, request)
        return web.Response(status=202)

    graph_alerts_route = guarded(state, GRAPH_ALERTS, graph_alerts)
    defender_alerts_route = guarded(state, DEFENDER_ALERTS, defender_alerts)
    for version in ("v1.0", "beta"):
        app.router.add_get(f"/{version}/security/alerts_v2", graph_alerts_route)
        app.router.add_post(f"/{version}/users/{{user}}/sendMail", guarded(state, GRAPH_SEND_MAIL, send_mail))
    app.router.add_get("/api/alerts", defender_alerts_route)
    app.router.add_get("/api/v1.0/alerts", defender_alerts_route)
