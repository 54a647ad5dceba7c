"""Control API of the local cloud (JSON, no auth, loopback only): set up the world, inject faults, read truth.

`{t}` is a tenant GUID or one of its verified domains. Errors are `{"error": "<text>"}` with 400/404.

Health and time
- `GET  /control/health` → 200 `{"status": "ok"}`
- `GET  /control/clock` → `{"now": ISO-8601 cloud time, "offsetSeconds": n}`
- `POST /control/clock` `{"advance_seconds": n}` → same shape; cloud time = real time + offset (alerts,
  ingestion lag, consent propagation, secret expiry). Tokens always use real time.
- `GET  /control/settings`, `PATCH /control/settings` `{"tokenLifetimeSeconds": n}` → settings
  (`expires_in` and `exp - iat` of every token issued after; default 3599).

Apps and tenants
- `POST /control/apps` `{"clientId"?, "displayName", "homeTenant"?, "multiTenant": true,
  "secrets": [{"value", "expires"?}], "certificates": [PEM], "redirectUris": [...],
  "requiredResourceAccess": {"https://graph.microsoft.com": ["SecurityAlert.Read.All", "Mail.Send"],
  "https://api.securitycenter.microsoft.com": ["Alert.Read.All"]}}` → 201 app (secrets never echoed).
  The app's service principal is created in `homeTenant` with all its roles (the owner's own consent).
- `GET  /control/apps/{clientId}` → app.
- `POST /control/tenants` `{"id"?, "domains": [...], "displayName"?, "defenderLicensed": true,
  "consentPropagationSeconds": 0, "rateLimits": false, "alerts": {...}}` → 201 tenant; `alerts` is passed
  to the alert streams (local.cloud.alerts) unchanged.
- `GET  /control/tenants` → list; `GET /control/tenants/{t}` → tenant with its consents;
  `PATCH /control/tenants/{t}` `{"defenderLicensed"?, "consentPropagationSeconds"?, "rateLimits"?,
  "displayName"?, "defenderOrder"?}` → tenant. `rateLimits` switches the real limits on (Defender 100/min
  and 1,500/h, Graph alerts 150/min, sliding windows, 429 with Retry-After until a slot frees).
  `defenderOrder` ("oldestFirst" (default) | "newestFirst" | "shuffled", also an `alerts` option at
  creation) is the order Defender's /api/alerts serves the tenant's list in: Microsoft documents none.

Consents
- `POST /control/tenants/{t}/consents` `{"clientId", "resources"?: [resource URIs] (default: all the
  app declares), "propagated"?: false}` → 201 consent; as if an admin accepted the consent page, so the
  tenant's propagation delay applies unless `propagated` is true.
- `GET  /control/tenants/{t}/consents` → list; `DELETE /control/tenants/{t}/consents/{clientId}` → 204
  (the enterprise app is deleted: token requests fail with AADSTS700016).

Faults (local.cloud.faults)
- `POST /control/tenants/{t}/faults` `{"kind", "api"?: "token"|"graph"|"defender"|"mail"|"signin",
  "count"?: N (default: until cleared), "retryAfter"?: seconds (default 10), "latencyMs"?: ms}` → 201
  fault with its `id`. Kinds: `throttle` (or "429"), `server_error` ("500"), `unavailable` ("503"),
  `latency`, `drop_connection`, `truncated_json`, `malformed_json`, `consent_revoked` (token only),
  `permission_removed` (tokens issued without roles; APIs answer 403 "Missing application roles"),
  `feature_disabled` (graph/defender: 403 DisabledFeature); for the id_token the sign-in endpoint posts
  back when `{t}` signs in (api `signin`): `id_token_foreign_key` (signed by a key not in the JWKS, under
  the published kid), `id_token_wrong_audience`, `id_token_expired` (exp two hours ago), `id_token_wrong_nonce`,
  `id_token_wrong_issuer` (`iss` names another tenant than `tid`).
- `GET /control/tenants/{t}/faults` → active faults; `DELETE /control/tenants/{t}/faults[/{id}]` → 204.

Alerts (local.cloud.alerts)
- `POST  /control/tenants/{t}/alerts` (fields) → 201 alert; `PATCH /control/tenants/{t}/alerts/{id}`
  (changes) → alert; `GET /control/tenants/{t}/alerts` → every alert, latest version (ground truth).

Mail and statistics
- `GET  /control/mail[?tenant=&sender=]` → `{"messages": [...]}` every accepted sendMail, in order.
- `DELETE /control/mail` → 204 (forget recorded messages).
- `GET  /control/mail/rejected`, `PUT /control/mail/rejected` `{"addresses": [...]}` → recipients that
  get a permanent 400 ErrorInvalidRecipients.
- `GET  /control/stats` → `{"tokenRequests": {"total", "byTenant", "byClient", "byTenantAndClient"},
  "tokensIssued", "apiRequests": {tenant: {api: n}}, "throttled": {tenant: {api: n}},
  "faultsServed": {tenant: {kind: n}}}`; `DELETE /control/stats` → 204 (reset).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from local.cloud.directory import Tenant, canonical_resource
from local.cloud.faults import Fault
from local.cloud.responses import json_response
from local.cloud.state import CloudState

logger = logging.getLogger(__name__)

Route = Callable[[web.Request], Awaitable[web.Response]]


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    return body


def _safe(route: Route) -> Route:
    """Turn bad input into a 400/404 JSON answer instead of a 500."""

    async def run(request: web.Request) -> web.Response:
        try:
            return await route(request)
        except ControlError as exc:
            return json_response({"error": str(exc)}, exc.status)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return run


def add_routes(app: web.Application, state: CloudState) -> None:
    directory = state.directory

    def tenant_of(request: web.Request) -> Tenant:
        tenant = directory.resolve(request.match_info["tenant"])
        if tenant is None:
            raise ControlError(404, f"tenant {request.match_info['tenant']!r} not found")
        return tenant

    def clock_json() -> dict[str, Any]:
        return {"now": _iso(state.clock.now()), "offsetSeconds": state.clock.offset_seconds}

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def get_clock(request: web.Request) -> web.Response:
        return json_response(clock_json())

    async def advance_clock(request: web.Request) -> web.Response:
        body = await _json(request)
        state.clock.advance(float(body.get("advance_seconds", body.get("advanceSeconds", 0))))
        return json_response(clock_json())

    def settings_json() -> dict[str, Any]:
        return {"tokenLifetimeSeconds": state.token_lifetime_seconds}

    async def get_settings(request: web.Request) -> web.Response:
        return json_response(settings_json())

    async def patch_settings(request: web.Request) -> web.Response:
        body = await _json(request)
        if "tokenLifetimeSeconds" in body:
            lifetime = int(body["tokenLifetimeSeconds"])
            if lifetime < 1:
                raise ControlError(400, "tokenLifetimeSeconds must be at least 1")
            state.token_lifetime_seconds = lifetime
        return json_response(settings_json())

    async def create_app(request: web.Request) -> web.Response:
        registered = directory.create_app(await _json(request), state.clock.now())
        return json_response(registered.summary(), 201)

    async def get_app(request: web.Request) -> web.Response:
        registered = directory.apps.get(request.match_info["client_id"].lower())
        if registered is None:
            raise ControlError(404, "app not found")
        return json_response(registered.summary())

    async def create_tenant(request: web.Request) -> web.Response:
        body = await _json(request)
        tenant = directory.create_tenant(body)
        try:
            state.alerts.configure_tenant(tenant.id, body.get("alerts") or {}, state.clock.now())
        except (ValueError, TypeError):
            directory.remove_tenant(tenant.id)  # a refused request leaves nothing behind
            raise
        logger.info("Tenant %s created (%s)", tenant.id, tenant.display_name)
        return json_response(tenant.summary(), 201)

    async def list_tenants(request: web.Request) -> web.Response:
        return json_response({"tenants": [t.summary() for t in directory.tenants.values()]})

    async def get_tenant(request: web.Request) -> web.Response:
        return json_response(tenant_of(request).summary())

    async def patch_tenant(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        body = await _json(request)
        order = None
        if "defenderOrder" in body:  # checked before anything changes: a refused request changes nothing
            order = state.alerts.set_defender_order(tenant.id, body["defenderOrder"], state.clock.now())
        directory.update_tenant(tenant, body)
        summary = tenant.summary()
        if order is not None:
            summary["defenderOrder"] = order
        return json_response(summary)

    async def grant_consent(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        body = await _json(request)
        registered = directory.apps.get(str(body.get("clientId", "")).lower())
        if registered is None:
            raise ControlError(404, "app not found")
        resources = None
        if body.get("resources") is not None:
            resources = [canonical_resource(r) for r in body["resources"]]
            if None in resources:
                raise ControlError(400, f"unknown resource in {body['resources']}")
        now = state.clock.now()
        if body.get("propagated"):
            now -= dt.timedelta(seconds=tenant.consent_propagation_seconds + 1)
        consent = directory.grant(tenant, registered, resources, now)  # type: ignore[arg-type]
        return json_response(consent.summary(registered.client_id), 201)

    async def list_consents(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        return json_response({"consents": [c.summary(cid) for cid, c in tenant.consents.items()]})

    async def revoke_consent(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        if not directory.revoke(tenant, request.match_info["client_id"]):
            raise ControlError(404, "no consent for that app in this tenant")
        return web.Response(status=204)

    async def add_fault(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        fault = state.faults.add(tenant.id, Fault.from_json(await _json(request)))
        logger.info("Fault %s set for tenant %s (api %s)", fault.kind, tenant.id, fault.api or "any")
        return json_response(fault.to_json(), 201)

    async def list_faults(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        return json_response({"faults": [f.to_json() for f in state.faults.active(tenant.id)]})

    async def clear_faults(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        fault_id = request.match_info.get("fault_id")
        removed = state.faults.clear(tenant.id, int(fault_id) if fault_id else None)
        if fault_id and not removed:
            raise ControlError(404, "fault not found")
        return web.Response(status=204)

    async def add_alert(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        return json_response(state.alerts.add_alert(tenant.id, await _json(request), state.clock.now()), 201)

    async def update_alert(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        changes = await _json(request)
        try:
            alert = state.alerts.update_alert(tenant.id, request.match_info["alert_id"], changes,
                                              state.clock.now())
        except KeyError as exc:
            raise ControlError(404, f"alert not found: {exc}") from exc
        return json_response(alert)

    async def ground_truth(request: web.Request) -> web.Response:
        tenant = tenant_of(request)
        return json_response({"alerts": state.alerts.ground_truth(tenant.id, state.clock.now())})

    async def list_mail(request: web.Request) -> web.Response:
        messages = state.mailbox.messages
        if "tenant" in request.query:
            wanted = directory.resolve(request.query["tenant"])
            messages = [m for m in messages if wanted is not None and m["tenantId"] == wanted.id]
        if "sender" in request.query:
            messages = [m for m in messages if m["sender"].lower() == request.query["sender"].lower()]
        return json_response({"messages": messages})

    async def clear_mail(request: web.Request) -> web.Response:
        state.mailbox.messages.clear()
        return web.Response(status=204)

    async def get_rejected(request: web.Request) -> web.Response:
        return json_response({"addresses": sorted(state.mailbox.rejected)})

    async def put_rejected(request: web.Request) -> web.Response:
        body = await _json(request)
        state.mailbox.set_rejected([str(a) for a in body.get("addresses", [])])
        return json_response({"addresses": sorted(state.mailbox.rejected)})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(state.stats.to_json())

    async def reset_stats(request: web.Request) -> web.Response:
        state.stats.reset()
        return web.Response(status=204)

    routes: list[tuple[str, str, Route]] = [
        ("GET", "/control/health", health),
        ("GET", "/control/clock", get_clock),
        ("POST", "/control/clock", advance_clock),
        ("GET", "/control/settings", get_settings),
        ("PATCH", "/control/settings", patch_settings),
        ("POST", "/control/apps", create_app),
        ("GET", "/control/apps/{client_id}", get_app),
        ("POST", "/control/tenants", create_tenant),
        ("GET", "/control/tenants", list_tenants),
        ("GET", "/control/tenants/{tenant}", get_tenant),
        ("PATCH", "/control/tenants/{tenant}", patch_tenant),
        ("POST", "/control/tenants/{tenant}/consents", grant_consent),
        ("GET", "/control/tenants/{tenant}/consents", list_consents),
        ("DELETE", "/control/tenants/{tenant}/consents/{client_id}", revoke_consent),
        ("POST", "/control/tenants/{tenant}/faults", add_fault),
        ("GET", "/control/tenants/{tenant}/faults", list_faults),
        ("DELETE", "/control/tenants/{tenant}/faults", clear_faults),
        ("DELETE", "/control/tenants/{tenant}/faults/{fault_id}", clear_faults),
        ("POST", "/control/tenants/{tenant}/alerts", add_alert),
        ("PATCH", "/control/tenants/{tenant}/alerts/{alert_id}", update_alert),
        ("GET", "/control/tenants/{tenant}/alerts", ground_truth),
        ("GET", "/control/mail", list_mail),
        ("DELETE", "/control/mail", clear_mail),
        ("GET", "/control/mail/rejected", get_rejected),
        ("PUT", "/control/mail/rejected", put_rejected),
        ("GET", "/control/stats", get_stats),
        ("DELETE", "/control/stats", reset_stats),
    ]
    for method, path, route in routes:
        app.router.add_route(method, path, _safe(route))
