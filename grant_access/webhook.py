"""The onboarding webhook: `POST /api/tenants` from the MSSP's customer-onboarding system.

Checks in the order that reveals least to an unauthenticated caller: size (413), signature when a secret
is configured (401), content type (415), then JSON and fields (400, naming the field), then the named
tenant (409 when it is already active). Nothing is written before every check has passed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient

from grant_access.invitations import Invitation, InvitationRequest, InvitationStore
from shared.api_models import InvitationInput
from shared.contract import validate
from shared.outbound_url import UnsafeUrl, check_url
from shared.problems import Problem
from shared.request_body import Signed
from shared.rules import rule_dict
from shared.signing import SIGNATURE_HEADER, TOLERANCE_SECONDS
from shared.tenant_lookup import LookupUnavailable, TenantNotFound
from shared.tenants import TenantRegistry
from shared.validators import is_guid

logger = logging.getLogger(__name__)

ALERT_SOURCES = ("graph", "defender")
SIGNATURE_PARTITION = "signature"  # accepted webhook signatures, in the Invitations table (refuse_replay)


@dataclass(frozen=True)
class ConsentLinkSettings:
    authority_host: str
    client_id: str
    redirect_uri: str
    scopes: dict[str, str]  # alert source -> "<resource>/.default"


def consent_url(link: ConsentLinkSettings, tenant: str | None, alert_source: str, state: str) -> str:
    """The v2.0 admin-consent link (docs/MICROSOFT.md, "Admin consent"): the invited tenant, or `organizations`."""
    query = urlencode({"client_id": link.client_id, "scope": link.scopes[alert_source],
                       "redirect_uri": link.redirect_uri, "state": state})
    return f"{link.authority_host}/{tenant or 'organizations'}/v2.0/adminconsent?{query}"


def refuse_replay(table: TableClient, signed: Signed, *, idempotent: bool) -> None:
    """Record an accepted signature; a 401 when it was accepted before, unless the request is `idempotent`.

    The row (PartitionKey `signature`, RowKey = SHA-256 of the signature) is inserted, never upserted, so
    of two requests carrying one signature exactly one records it, even when they race. It only has to
    outlive the signature's validity (`expiresAt`): after that the timestamp check refuses a replay."""
    row = {"PartitionKey": SIGNATURE_PARTITION, "RowKey": hashlib.sha256(signed.signature.encode()).hexdigest(),
           "expiresAt": datetime.fromtimestamp(signed.signed_at + TOLERANCE_SECONDS, UTC)}
    try:
        table.create_entity(row)
    except ResourceExistsError:
        if not idempotent:
            raise Problem(401, "this signed request was already received; sign each request anew",
                          field=SIGNATURE_HEADER) from None


def forget_signature(table: TableClient, signed: Signed) -> None:
    """Drop the record of a signature whose request failed on our side (storage, an unavailable lookup): the
    sender's identical retry is then accepted rather than refused as a replay. Best effort."""
    try:
        table.delete_entity(SIGNATURE_PARTITION, hashlib.sha256(signed.signature.encode()).hexdigest())
    except Exception:  # noqa: BLE001 - the retry then needs a fresh signature, as documented
        logger.warning("a failed webhook request's signature could not be forgotten")


def prune_signatures(table: TableClient, now: datetime) -> int:
    """Delete recorded signatures whose timestamps the tolerance already refuses; how many went."""
    rows = table.query_entities("PartitionKey eq @pk and expiresAt lt @now",
                                parameters={"pk": SIGNATURE_PARTITION, "now": now}, select=["RowKey"])
    deleted = 0
    for row in rows:
        table.delete_entity(SIGNATURE_PARTITION, row["RowKey"])
        deleted += 1
    return deleted


def validate_request(body: dict[str, Any], *, allow_loopback: bool) -> InvitationRequest:
    """The webhook's body (shared.api_models.InvitationInput), then what a schema cannot say: whether the
    callbackUrl points at a public https address."""
    given = validate(InvitationInput, body)
    request = InvitationRequest(customer_name=given.customerName, alert_source=given.alertSource or "graph",
                                external_id=given.externalId)
    if given.tenantId is not None:
        request.tenant = given.tenantId
        request.tenant_id = given.tenantId if is_guid(given.tenantId) else None
    request.contact_email = given.contactEmail
    if given.callbackUrl is not None:
        try:
            check_url(given.callbackUrl, allow_loopback=allow_loopback)
        except UnsafeUrl as exc:
            raise Problem(400, f"callbackUrl {exc}", field="callbackUrl") from None
        request.callback_url = given.callbackUrl
    if given.rules is not None:
        request.rules = [rule_dict(rule) for rule in given.rules]
    return request


@dataclass(frozen=True)
class WebhookResult:
    status: int
    body: dict[str, Any]


def create_invitation(request: InvitationRequest, *, invitations: InvitationStore, tenants: TenantRegistry,
                      resolve_domain: Callable[[str], str], link: ConsentLinkSettings, now: datetime,
                      ttl_seconds: int) -> WebhookResult:
    """Resolve the named tenant, refuse an active one, create (or find) the invitation."""
    if request.external_id:
        existing = invitations.by_external_id(request.external_id)
        if existing is not None:
            return WebhookResult(200, invitation_json(existing, None, link, now))
    if request.tenant and not request.tenant_id:
        try:
            request.tenant_id = resolve_domain(request.tenant)
        except TenantNotFound:
            raise Problem(400, "no tenant is known by this domain", field="tenantId") from None
        except LookupUnavailable:
            logger.warning("tenant lookup for a domain failed; the authority is unavailable")
            raise Problem(503, "the tenant's domain cannot be resolved right now; try again later",
                          field="tenantId") from None
    if request.tenant_id:
        row = tenants.get(request.tenant_id)
        if row is not None:
            # A consent through a new invitation could never take this tenant over (it belongs to its own
            # invitation); onboarding a known tenant again is the MSSP's explicit re-consent.
            raise Problem(409, f"this tenant is already known (status {row.get('status')}); send it a fresh "
                          f"consent link with POST /api/tenants/{request.tenant_id}/consent", field="tenantId",
                          tenant=f"/api/tenants/{request.tenant_id}")
    invitation, state = invitations.create(request, now, ttl_seconds)
    return WebhookResult(201 if state else 200, invitation_json(invitation, state, link, now))


def invitation_json(invitation: Invitation, state: str | None, link: ConsentLinkSettings,
                    now: datetime) -> dict[str, Any]:
    """The invitation; the consent link only when it is created (the state is never stored in clear)."""
    body = invitation.to_json(now)
    body["href"] = f"/api/invitations/{invitation.id}"
    if state is not None:
        tenant = str(invitation.row.get("expectedTenantId") or "") or None
        body["consentUrl"] = consent_url(link, tenant, str(invitation.row["alertSource"]), state)
    return body
