"""The tenant management API (auth level FUNCTION): list, show with history, change, offboard, and a fresh
consent link. Shapes the JSON the MSSP sees; storage is the registry's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from grant_access import portal_access
from grant_access.invitations import InvitationRequest, InvitationStore
from grant_access.verification import AccessChecker, apply_check, run_check
from grant_access.webhook import ConsentLinkSettings, WebhookResult, invitation_json
from shared.alert_sources import ApiHosts
from shared.api_models import TenantChanges
from shared.contract import validate
from shared.problems import Problem
from shared.tenants import TenantRegistry, TenantStatus
from shared.validators import is_guid

logger = logging.getLogger(__name__)

# The health columns ingestion writes on the tenant row (fetch_alerts/STORAGE.md).
_HEALTH = ("lastAttempt", "lastSuccess", "lastErrorClass", "lastError", "consecutiveFailures")
ENTERPRISE_APP_NOTE = ("Ask the customer's administrator to remove the MSSP's enterprise application in the "
                       "Microsoft Entra admin center (Enterprise applications > the app > Properties > Delete); "
                       "offboarding stops fetching but does not revoke the consent.")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def tenant_id_from_route(value: str) -> str:
    if not is_guid(value):
        raise Problem(400, "must be a tenant GUID", field="tenantId")
    return value.lower()


def _visibility_lag(row: dict[str, Any]) -> dict[str, Any] | None:
    """Ingestion's summary of how late the tenant's alerts became visible (fetch_alerts/visibility.py):
    the last 24 hours' p50/p95/max lag in seconds and the late arrivals beyond the overlap."""
    try:
        summary = json.loads(str(row.get("lagSummary") or "null"))
    except ValueError:
        return None
    if not isinstance(summary, dict):
        return None
    keys = ("windowHours", "count", "p50Seconds", "p95Seconds", "maxSeconds", "overlapSeconds", "beyondOverlap",
            "foundByReread", "at")
    return {key: summary.get(key) for key in keys}


def tenant_json(row: dict[str, Any], portal_host: str) -> dict[str, Any]:
    tenant_id = row["RowKey"]
    return {
        "tenantId": tenant_id,
        "displayName": row.get("displayName"),
        "status": row.get("status"),
        "statusReason": row.get("statusReason"),
        "statusChangedAt": _iso(row.get("statusChangedAt")),
        "alertSource": row.get("alertSource"),
        "apiHost": row.get("apiHost") or None,
        "health": {**{name: _iso(row.get(name)) for name in _HEALTH}, "visibilityLag": _visibility_lag(row)},
        "portalUrl": f"{portal_host}/?tid={tenant_id}",
        # The customer's guide to giving the MSSP's analysts that portal access (grant_access/portal_access.py).
        "portalAccessHref": portal_access.path(str(row["invitationId"])) if row.get("invitationId") else None,
        "href": f"/api/tenants/{tenant_id}",
    }


def list_tenants(registry: TenantRegistry, portal_host: str) -> dict[str, Any]:
    return {"value": [tenant_json(row, portal_host) for row in registry.all()]}


def get_tenant(registry: TenantRegistry, tenant_id: str, portal_host: str) -> dict[str, Any]:
    row = registry.get(tenant_id)
    if row is None:
        raise Problem(404, "no such tenant", field="tenantId")
    body = tenant_json(row, portal_host)
    body.update(invitationId=row.get("invitationId") or None, consentedAt=_iso(row.get("consentedAt")),
                lastVerification=_iso(row.get("lastVerification")),
                lastVerificationMessage=row.get("lastVerificationMessage"),
                history=[change.to_json() for change in registry.history(tenant_id)])
    return body


def validate_patch(body: dict[str, Any], hosts: ApiHosts) -> dict[str, Any]:
    """The changes (shared.api_models.TenantChanges), then what a schema cannot say: whether an apiHost is one
    of the Defender API hosts."""
    given = validate(TenantChanges, body)
    if not given.model_fields_set:
        raise Problem(400, "nothing to change", field="body")
    changes: dict[str, Any] = given.model_dump(include=given.model_fields_set - {"apiHost"})
    if "apiHost" in given.model_fields_set:
        host = given.apiHost
        if not host:
            changes["apiHost"] = ""
        else:
            # The host receives the tenant's bearer tokens: only Microsoft's documented Defender API hosts
            # (shared.alert_sources.DEFENDER_API_HOSTS) or the configured DEFENDER_API_HOST.
            from shared.alert_sources import allowed_defender_host

            origin = allowed_defender_host(host, hosts)
            if origin is None:
                raise Problem(400, "must be a Microsoft Defender API host such as "
                              "https://eu.api.security.microsoft.com (see the Defender API documentation)",
                              field="apiHost")
            changes["apiHost"] = origin
    return changes


def patch_tenant(registry: TenantRegistry, tenant_id: str, changes: dict[str, Any], checker: AccessChecker,
                 clock: Callable[[], datetime], timeout_seconds: int, portal_host: str) -> dict[str, Any]:
    row = registry.get(tenant_id)
    if row is None:
        raise Problem(404, "no such tenant", field="tenantId")
    if row.get("status") == TenantStatus.OFFBOARDED:
        raise Problem(409, "the tenant is offboarded; send it a fresh consent link to onboard it again",
                      field="tenantId")
    disabled = changes.pop("disabled", None)
    now = clock()

    def mutate(current: dict[str, Any]) -> tuple[str, str] | None:
        current.update(changes)
        if disabled is True and current.get("status") != TenantStatus.DISABLED:
            return TenantStatus.DISABLED.value, "disabled by the MSSP"
        if disabled is False and current.get("status") == TenantStatus.DISABLED:
            current["verifyingSince"] = now
            return TenantStatus.VERIFYING.value, "enabled by the MSSP; access is checked again"
        return None

    updated = registry.change(tenant_id, mutate, now)
    if updated is not None and updated.get("status") == TenantStatus.VERIFYING and disabled is False:
        result = run_check(checker, tenant_id, str(updated.get("alertSource") or "graph"))
        apply_check(registry, tenant_id, result, clock(), timeout_seconds)
    return get_tenant(registry, tenant_id, portal_host)


def offboard_tenant(registry: TenantRegistry, tenant_id: str, now: datetime) -> dict[str, Any]:
    def mutate(row: dict[str, Any]) -> tuple[str, str]:
        row["offboardedAt"] = now
        return TenantStatus.OFFBOARDED.value, "offboarded by the MSSP"

    if registry.change(tenant_id, mutate, now) is None:
        raise Problem(404, "no such tenant", field="tenantId")
    return {"tenantId": tenant_id, "status": TenantStatus.OFFBOARDED.value, "note": ENTERPRISE_APP_NOTE}


def fresh_consent(registry: TenantRegistry, invitations: InvitationStore, tenant_id: str,
                  link: ConsentLinkSettings, now: datetime, ttl_seconds: int) -> WebhookResult:
    """A new invitation for a known tenant (after revocation, a decline, offboarding)."""
    row = registry.get(tenant_id)
    previous = invitations.latest_for_tenant(tenant_id)
    if row is None and previous is None:
        raise Problem(404, "no tenant or invitation is known for this tenant id", field="tenantId")
    if row is not None and row.get("status") == TenantStatus.ACTIVE:
        raise Problem(409, "this tenant is active; its consent works", field="tenantId",
                      tenant=f"/api/tenants/{tenant_id}")
    last = previous.row if previous is not None else {}
    request = InvitationRequest(
        customer_name=str((row or {}).get("displayName") or last.get("customerName") or tenant_id),
        alert_source=str((row or {}).get("alertSource") or last.get("alertSource") or "graph"),
        tenant=tenant_id, tenant_id=tenant_id,
        contact_email=str(last.get("contactEmail") or "") or None,
        callback_url=str(last.get("callbackUrl") or "") or None,
        reconsent=True,
    )
    invitation, state = invitations.create(request, now, ttl_seconds)
    logger.info("tenant %s: fresh consent invitation %s", tenant_id, invitation.id)
    return WebhookResult(201, invitation_json(invitation, state, link, now))
