"""Triggers of the onboarding blueprint: the onboarding webhook, the admin-consent callback, the
tenant management API, the verification timer, and the Durable functions that report results to the
onboarding system and purge an offboarded tenant's alerts. Each trigger parses, calls the plain functions
of this package with their dependencies (grant_access.wiring), and shapes the response.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError

from grant_access import management, notify_callback, pages, portal_access, purge, wiring
from grant_access.callback import (
    CallbackResult,
    Notification,
    complete_interrupted,
    handle_callback,
    handle_sign_in,
)
from grant_access.verification import verify_pending_tenants
from grant_access.webhook import (
    create_invitation,
    forget_signature,
    prune_signatures,
    refuse_replay,
    validate_request,
)
from shared import openapi
from shared.names import (
    ONBOARDING_RESULT_ORCHESTRATOR,
    POST_ONBOARDING_RESULT_ACTIVITY,
    PURGE_ALERTS_BATCH_ACTIVITY,
    PURGE_TENANT_ORCHESTRATOR,
)
from shared.problems import Problem, error_response, json_response, run_api
from shared.request_body import check_transport, parse_body
from shared.settings import SettingsError
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from shared.tenant_lookup import resolve_tenant_id

logger = logging.getLogger(__name__)

bp = df.Blueprint()

_INVITATION_ID = re.compile(r"^[0-9a-f]{32}$")


def _raw_query(req: func.HttpRequest) -> str:
    return urlsplit(req.url).query


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness plus a cheap storage check; says which dependency fails, never why in detail."""
    try:
        table = wiring.tenants_table()
        next(iter(table.query_entities("PartitionKey eq @pk", parameters={"pk": "health"},
                                       results_per_page=1)), None)
    except (AzureError, SettingsError, OSError) as exc:
        logger.error("health: table storage unavailable: %s", type(exc).__name__)
        return json_response({"status": "unhealthy", "storage": "unavailable"}, 503)
    return json_response({"status": "healthy", "storage": "ok"})


@bp.function_name("get_openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of every HTTP route, made from the models that validate the requests
    (shared.openapi; docs/openapi.json is the same document)."""
    return func.HttpResponse(openapi.document_text(), status_code=200, mimetype="application/json",
                             headers={"Cache-Control": "no-cache"})


# --- the onboarding webhook and invitations ------------------------------------------------------------


@bp.function_name("create_invitation")
@bp.route(route="tenants", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def create_invitation_http(req: func.HttpRequest) -> func.HttpResponse:
    """The onboarding webhook: an invitation and its admin-consent link."""

    def handle() -> func.HttpResponse:
        config = wiring.config()
        body = req.get_body()
        now = wiring.utcnow()
        signed = check_transport(body, req.headers.get("Content-Type"), req.headers.get("Content-Length"),
                                 req.headers.get(SIGNATURE_HEADER), config.webhook_secret,
                                 timestamp=req.headers.get(TIMESTAMP_HEADER), now=now.timestamp())
        request = validate_request(parse_body(body), allow_loopback=config.allow_loopback)
        if signed is not None:
            # A repeat carrying an externalId is answered by create_invitation's idempotency lookup (the
            # same invitation, 200, no new consent link), so only a request without one is refused.
            refuse_replay(wiring.invitations_table(), signed, idempotent=bool(request.external_id))
        authority, timeout = config.authority_host, config.http_timeout_seconds
        try:
            result = create_invitation(
                request, invitations=wiring.invitations(), tenants=wiring.tenants(),
                resolve_domain=lambda domain: resolve_tenant_id(authority, domain, timeout=timeout),
                link=wiring.consent_link(), now=now, ttl_seconds=config.invitation_ttl_seconds)
        except (Problem, AzureError, SettingsError) as exc:
            if signed is not None and (not isinstance(exc, Problem) or exc.status >= 500):
                # Our failure, not the request's: its identical retry must not be refused as a replay.
                forget_signature(wiring.invitations_table(), signed)
            raise
        return json_response(result.body, result.status, {"Location": result.body["href"]})

    return run_api(handle, logger)


@bp.function_name("get_invitation")
@bp.route(route="invitations/{invitationId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_invitation(req: func.HttpRequest) -> func.HttpResponse:
    """An invitation and its outcome."""

    def handle() -> func.HttpResponse:
        invitation_id = req.route_params.get("invitationId", "")
        invitation = wiring.invitations().get(invitation_id) if _INVITATION_ID.fullmatch(invitation_id) else None
        if invitation is None:
            raise Problem(404, "no such invitation", field="invitationId")
        body = invitation.to_json(wiring.utcnow())
        body["href"] = f"/api/invitations/{invitation.id}"
        base = wiring.known_base_url()
        if portal_access.consented_tenant(invitation) is not None and base:
            body["portalAccessUrl"] = portal_access.url(base, invitation.id)
        return json_response(body)

    return run_api(handle, logger)


@bp.function_name("portal_access")
@bp.route(route="invitations/{invitationId}/portal-access", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def portal_access_page(req: func.HttpRequest) -> func.HttpResponse:
    """The customer's next step after consent, for their admin (no function key): portal access for the MSSP's
    analysts. Answers only for an invitation whose consent was granted (docs/SECURITY.md)."""
    try:
        invitation_id = req.route_params.get("invitationId", "")
        return portal_access.page_for(wiring.invitations(), invitation_id, wiring.portal_access_config()).response()
    except (AzureError, SettingsError) as exc:
        logger.error("portal-access page could not be shown: %s", type(exc).__name__)
        return pages.unavailable().response()
    except Exception:  # a defect: the browser still gets a page, never a stack trace; the log has it
        logger.exception("portal-access page failed")
        return pages.unavailable().response()


# --- the consent callback ---------------------------------------------------------------------------------


@bp.function_name("consent_callback")
@bp.route(route=wiring.CALLBACK_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def consent_callback(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Where Entra sends the customer's admin after the consent page; answers with a page for that admin."""
    query = _raw_query(req)
    return await _answer_browser(client, lambda: handle_callback(query, wiring.callback_deps()))


@bp.function_name("consent_sign_in")
@bp.route(route=wiring.CALLBACK_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def consent_sign_in(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Where Entra posts the id_token of the sign-in that proves which tenant consented (form_post)."""
    body, content_type = req.get_body(), req.headers.get("Content-Type")
    return await _answer_browser(client, lambda: handle_sign_in(body, content_type, wiring.callback_deps()))


async def _answer_browser(client: df.DurableOrchestrationClient,
                          handle: Callable[[], CallbackResult]) -> func.HttpResponse:
    try:
        result = await asyncio.to_thread(handle)
    except (AzureError, SettingsError) as exc:
        logger.error("consent callback could not be processed: %s", type(exc).__name__)
        return pages.unavailable().response()
    except Exception:  # a defect: the browser still gets a page, never a stack trace or a 500; the log has it
        logger.exception("consent callback failed")
        return pages.unavailable().response()
    await _report_results(client, result.notifications)
    if result.redirect is not None:
        return pages.redirect(result.redirect)
    return (result.page or pages.link_invalid()).response()


async def _report_results(client: df.DurableOrchestrationClient, notifications: list[Notification]) -> None:
    """Start one result orchestration per notification whose invitation has a callbackUrl."""
    for note in notifications:
        try:
            invitation = await asyncio.to_thread(wiring.invitations().get, note.invitation_id)
            if invitation is None or not invitation.row.get("callbackUrl"):
                continue
            instance = notify_callback.instance_id(note.invitation_id, note.status)
            existing = await client.get_status(instance)
            if existing is not None and existing.runtime_status is not None:
                continue  # already reported (or reporting): one report per invitation and result
            await client.start_new(ONBOARDING_RESULT_ORCHESTRATOR, instance_id=instance, client_input={
                "invitationId": note.invitation_id, "status": note.status,
                "occurredAt": wiring.utcnow().isoformat()})
            logger.info("invitation %s: reporting %s to the onboarding system (%s)",
                        note.invitation_id, note.status, instance)
        except Exception as exc:  # the customer's page must not fail because a report could not start
            logger.error("invitation %s: result report not started: %s", note.invitation_id, type(exc).__name__)


# --- the tenant management API -----------------------------------------------------------------------------


@bp.function_name("list_tenants")
@bp.route(route="tenants", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_tenants(req: func.HttpRequest) -> func.HttpResponse:
    """Every known customer tenant with its status, health and portal link."""
    return run_api(lambda: json_response(
        management.list_tenants(wiring.tenants(), wiring.config().portal_host)), logger)


@bp.function_name("get_tenant")
@bp.route(route="tenants/{tenantId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_tenant(req: func.HttpRequest) -> func.HttpResponse:
    """One tenant with its status history."""

    def handle() -> func.HttpResponse:
        tenant_id = management.tenant_id_from_route(req.route_params.get("tenantId", ""))
        return json_response(
            management.get_tenant(wiring.tenants(), tenant_id, wiring.config().portal_host))

    return run_api(handle, logger)


@bp.function_name("patch_tenant")
@bp.route(route="tenants/{tenantId}", methods=["PATCH"], auth_level=func.AuthLevel.FUNCTION)
def patch_tenant(req: func.HttpRequest) -> func.HttpResponse:
    """Change display name, alert source, API host, or disable/enable fetching."""

    def handle() -> func.HttpResponse:
        tenant_id = management.tenant_id_from_route(req.route_params.get("tenantId", ""))
        body = req.get_body()
        check_transport(body, req.headers.get("Content-Type"), req.headers.get("Content-Length"), None, "")
        changes = management.validate_patch(parse_body(body), wiring.api_hosts())
        config = wiring.config()
        return json_response(management.patch_tenant(
            wiring.tenants(), tenant_id, changes, wiring.access_checker(), wiring.utcnow,
            config.verification_timeout_seconds, config.portal_host))

    return run_api(handle, logger)


@bp.function_name("offboard_tenant")
@bp.route(route="tenants/{tenantId}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def offboard_tenant(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Offboard: fetching stops; `?purge=true` also deletes the stored alerts in the background (202)."""
    try:
        tenant_id = management.tenant_id_from_route(req.route_params.get("tenantId", ""))
        purge_flag = req.params.get("purge", "false").lower()
        if purge_flag not in ("true", "false"):
            raise Problem(400, "must be true or false", field="purge")
        body = await asyncio.to_thread(
            lambda: management.offboard_tenant(wiring.tenants(), tenant_id, wiring.utcnow()))
    except (Problem, SettingsError, AzureError) as exc:
        return error_response(exc, logger)
    if purge_flag != "true":
        return json_response(body)
    instance = purge.instance_id(tenant_id)
    existing = await client.get_status(instance)
    if existing is None or existing.runtime_status not in (df.OrchestrationRuntimeStatus.Pending,
                                                            df.OrchestrationRuntimeStatus.Running):
        await client.start_new(PURGE_TENANT_ORCHESTRATOR, instance_id=instance, client_input=tenant_id)
    # The app's own status route, keyed like the rest of the API. Durable's management URLs carry the
    # extension's system key, which opens every instance's management API: they never leave the app.
    href = f"/api/tenants/{tenant_id}/purge"
    body["purge"] = {"instanceId": instance, "href": href}
    logger.info("tenant %s: purge of stored alerts started (%s)", tenant_id, instance)
    return json_response(body, 202, {"Location": href})


@bp.function_name("get_tenant_purge")
@bp.route(route="tenants/{tenantId}/purge", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_tenant_purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Progress of the purge of an offboarded tenant's stored alerts."""
    try:
        tenant_id = management.tenant_id_from_route(req.route_params.get("tenantId", ""))
    except Problem as exc:
        return exc.response()
    status = await client.get_status(purge.instance_id(tenant_id))
    if status is None or status.runtime_status is None:
        return Problem(404, "no purge was started for this tenant", field="tenantId").response()
    return json_response(purge.status_json(tenant_id, status))


@bp.function_name("fresh_consent")
@bp.route(route="tenants/{tenantId}/consent", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def fresh_consent(req: func.HttpRequest) -> func.HttpResponse:
    """A fresh invitation and consent link for a known tenant (after revocation, a decline, offboarding)."""

    def handle() -> func.HttpResponse:
        tenant_id = management.tenant_id_from_route(req.route_params.get("tenantId", ""))
        result = management.fresh_consent(wiring.tenants(), wiring.invitations(), tenant_id, wiring.consent_link(),
                                          wiring.utcnow(), wiring.config().invitation_ttl_seconds)
        return json_response(result.body, result.status, {"Location": result.body["href"]})

    return run_api(handle, logger)


# --- verification timer -------------------------------------------------------------------------------------


@bp.function_name("verify_tenants")
@bp.timer_trigger(arg_name="timer", schedule="%VERIFICATION_SCHEDULE%", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def verify_tenants(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Retry access verification of tenants whose consent has not propagated yet."""
    timeout = wiring.config().verification_timeout_seconds
    # First what an interrupted consent request left undone, so its tenant is verified in this same run.
    await asyncio.to_thread(lambda: complete_interrupted(
        wiring.callback_deps(), wiring.utcnow() - timedelta(seconds=timeout)))
    finished = await asyncio.to_thread(
        lambda: verify_pending_tenants(wiring.tenants(), wiring.access_checker(), wiring.utcnow, timeout))
    # Recorded webhook signatures are only needed while their timestamps are accepted.
    pruned = await asyncio.to_thread(
        lambda: prune_signatures(wiring.invitations_table(), wiring.utcnow()))
    if pruned:
        logger.info("verification: %d expired webhook signatures pruned", pruned)
    await _report_results(client, [Notification(v.invitation_id, v.status) for v in finished if v.invitation_id])


# --- Durable: result reports and purges ------------------------------------------------------------------------


@bp.function_name(ONBOARDING_RESULT_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def notify_onboarding_result(context: df.DurableOrchestrationContext):
    return (yield from notify_callback.orchestrate(context))


@bp.function_name(POST_ONBOARDING_RESULT_ACTIVITY)
@bp.activity_trigger(input_name="result")
def post_onboarding_result(result: notify_callback.ResultInput) -> dict:
    config = wiring.config()
    return dict(notify_callback.post_result(
        result, invitations=wiring.invitations(), secret=config.webhook_secret,
        allow_loopback=config.allow_loopback, timeout=config.http_timeout_seconds,
        public_base_url=wiring.known_base_url()))


@bp.function_name(PURGE_TENANT_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def purge_tenant_alerts(context: df.DurableOrchestrationContext):
    return (yield from purge.orchestrate(context))


@bp.function_name(PURGE_ALERTS_BATCH_ACTIVITY)
@bp.activity_trigger(input_name="tenantId")
def purge_tenant_alerts_batch(tenantId: str) -> int:  # noqa: N803 - binding name is the Durable input name
    return purge.purge_batch(wiring.alerts_table(), tenantId)
