"""Invitations: what the onboarding webhook creates and the consent callback completes (docs/ARCHITECTURE.md,
"Onboarding and consent").

Row layout (table `Invitations`):
- invitation rows: PartitionKey `invitation`, RowKey = invitation id (32 hex). Columns: `customerName`,
  `externalId`, `expectedTenant` (as given: GUID or domain), `expectedTenantId` (its GUID), `contactEmail`,
  `alertSource`, `callbackUrl`, `rules` (JSON, stored as notification rules on acceptance), `stateHash`,
  `createdAt`, `expiresAt`, `outcome` (`pending`, `accepted`, `declined`, `voided`; `expired` is derived
  from `expiresAt`), `outcomeAt`, `outcomeReason`, `tenantId`, `completionHash` (SHA-256 of the request
  that completed it, so the identical callback shows the recorded outcome again), `reconsentOf` (the
  tenant an MSSP's explicit re-consent is for: only such an invitation may take over an existing tenant),
  and, while an invitation that named no tenant waits for the admin's sign-in, `claimedTenantId` (what the
  consent redirect said, not yet proven) and `nonceHash` (SHA-256 of the sign-in request's nonce).
- lookup rows: PartitionKey `state`, RowKey = state hash → `invitationId`; PartitionKey `external`,
  RowKey = SHA-256 of the externalId → `invitationId`. Creating the externalId row (insert, never
  upsert) decides which invitation an externalId maps to, even when two requests race.
- signature rows: PartitionKey `signature`, RowKey = SHA-256 of an accepted webhook signature, `expiresAt`
  (grant_access/webhook.py refuses a replay with them; the verification timer prunes expired ones).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient

from grant_access.consent_state import new_state, state_hash
from shared.tables import write_if_unchanged

logger = logging.getLogger(__name__)

INVITATION_PARTITION = "invitation"
STATE_PARTITION = "state"
EXTERNAL_PARTITION = "external"

PENDING, ACCEPTED, DECLINED, EXPIRED = "pending", "accepted", "declined", "expired"
# Another invitation onboarded the same tenant first: this one can no longer complete.
VOIDED = "voided"


@dataclass
class InvitationRequest:
    """A validated onboarding request."""

    customer_name: str
    alert_source: str
    tenant: str | None = None  # as given: GUID or domain
    tenant_id: str | None = None  # its GUID, once resolved
    external_id: str | None = None
    contact_email: str | None = None
    callback_url: str | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)
    reconsent: bool = False  # an MSSP's explicit re-consent of a known tenant (POST /api/tenants/{id}/consent)


@dataclass
class Invitation:
    id: str
    row: dict[str, Any]
    etag: str | None = None

    @property
    def outcome(self) -> str:
        return str(self.row.get("outcome", PENDING))

    def effective_outcome(self, now: datetime) -> str:
        if self.outcome == PENDING and now >= self.row["expiresAt"]:
            return EXPIRED
        return self.outcome

    @property
    def expected_tenant_id(self) -> str:
        """The tenant GUID the onboarding system named (a domain resolved), or empty."""
        return str(self.row.get("expectedTenantId") or "")

    @property
    def reconsent_of(self) -> str:
        return str(self.row.get("reconsentOf") or "")

    @property
    def customer_name(self) -> str:
        return str(self.row.get("customerName") or "")

    @property
    def rules(self) -> list[dict[str, Any]]:
        return json.loads(self.row.get("rules") or "[]")

    def to_json(self, now: datetime) -> dict[str, Any]:
        row = self.row
        body: dict[str, Any] = {
            "id": self.id, "customerName": row.get("customerName"), "externalId": row.get("externalId") or None,
            "tenantId": row.get("expectedTenant") or None, "contactEmail": row.get("contactEmail") or None,
            "alertSource": row.get("alertSource"), "callbackUrl": row.get("callbackUrl") or None,
            "rules": len(self.rules), "createdAt": _iso(row.get("createdAt")), "expiresAt": _iso(row.get("expiresAt")),
            "outcome": self.effective_outcome(now),
        }
        if self.outcome != PENDING:
            body.update(outcomeAt=_iso(row.get("outcomeAt")), outcomeReason=row.get("outcomeReason") or None,
                        consentedTenantId=row.get("tenantId") or None)
        return body


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _external_key(external_id: str) -> str:
    # Table keys forbid / \ # ? and control characters; a hash is always a valid key.
    return hashlib.sha256(external_id.encode("utf-8")).hexdigest()


class InvitationStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def create(self, request: InvitationRequest, now: datetime, ttl_seconds: int) -> tuple[Invitation, str | None]:
        """A new invitation and its state; for a known externalId the existing invitation and None.

        The invitation and state rows are written first and the externalId lookup row last: when two
        requests with one externalId race, the loser removes its own rows and answers with the winner's,
        and a crash in between leaves only an unreferenced invitation, never a lookup row to nothing."""
        invitation_id = uuid.uuid4().hex
        state = new_state()
        digest = state_hash(state)
        row: dict[str, Any] = {
            "PartitionKey": INVITATION_PARTITION, "RowKey": invitation_id,
            "customerName": request.customer_name, "externalId": request.external_id or "",
            "expectedTenant": request.tenant or "", "expectedTenantId": request.tenant_id or "",
            "contactEmail": request.contact_email or "", "alertSource": request.alert_source,
            "callbackUrl": request.callback_url or "", "rules": json.dumps(request.rules),
            "stateHash": digest, "createdAt": now, "expiresAt": now + timedelta(seconds=ttl_seconds),
            "outcome": PENDING, "reconsentOf": (request.tenant_id or "") if request.reconsent else "",
        }
        self._table.create_entity(row)
        self._table.create_entity({"PartitionKey": STATE_PARTITION, "RowKey": digest, "invitationId": invitation_id})
        if request.external_id:
            try:
                self._table.create_entity({"PartitionKey": EXTERNAL_PARTITION,
                                           "RowKey": _external_key(request.external_id),
                                           "invitationId": invitation_id})
            except ResourceExistsError:
                self._table.delete_entity(STATE_PARTITION, digest)
                self._table.delete_entity(INVITATION_PARTITION, invitation_id)
                existing = self.by_external_id(request.external_id)
                if existing is None:
                    raise
                return existing, None
        logger.info("invitation %s created (tenant %s)", invitation_id, request.tenant_id or "not yet known")
        return Invitation(invitation_id, row), state

    def get(self, invitation_id: str) -> Invitation | None:
        try:
            entity = self._table.get_entity(INVITATION_PARTITION, invitation_id)
        except ResourceNotFoundError:
            return None
        return Invitation(invitation_id, dict(entity), entity.metadata["etag"])

    def by_state(self, state: str) -> Invitation | None:
        try:
            lookup = self._table.get_entity(STATE_PARTITION, state_hash(state))
        except ResourceNotFoundError:
            return None
        return self.get(lookup["invitationId"])

    def by_external_id(self, external_id: str) -> Invitation | None:
        try:
            lookup = self._table.get_entity(EXTERNAL_PARTITION, _external_key(external_id))
        except ResourceNotFoundError:
            return None
        return self.get(lookup["invitationId"])

    def accepted_since(self, since: datetime) -> list[Invitation]:
        """Invitations accepted at or after `since`."""
        rows = self._table.query_entities(
            "PartitionKey eq @pk and outcome eq @accepted and outcomeAt ge @since",
            parameters={"pk": INVITATION_PARTITION, "accepted": ACCEPTED, "since": since})
        return [Invitation(r["RowKey"], dict(r), r.metadata["etag"]) for r in rows]

    def latest_for_tenant(self, tenant_id: str) -> Invitation | None:
        rows = self._table.query_entities("PartitionKey eq @pk and expectedTenantId eq @t",
                                          parameters={"pk": INVITATION_PARTITION, "t": tenant_id})
        rows_by_time = sorted((dict(r) for r in rows), key=lambda r: r["createdAt"])
        return Invitation(rows_by_time[-1]["RowKey"], rows_by_time[-1]) if rows_by_time else None

    def pending_for_tenant(self, tenant_id: str) -> list[Invitation]:
        """Pending invitations that named this tenant, or whose consent redirect claimed it (expired ones
        included: they are still `pending`)."""
        # The SDK substitutes @names between spaces only, hence the spaced parentheses.
        rows = self._table.query_entities(
            "PartitionKey eq @pk and outcome eq @pending and ( expectedTenantId eq @t or claimedTenantId eq @t )",
            parameters={"pk": INVITATION_PARTITION, "t": tenant_id, "pending": PENDING})
        return [Invitation(r["RowKey"], dict(r), r.metadata["etag"]) for r in rows]

    def record_claim(self, invitation: Invitation, tenant_id: str, nonce_hash: str, now: datetime) -> bool:
        """Remember which tenant a consent redirect claimed, until a sign-in proves it; False when the
        invitation changed meanwhile. A newer consent redirect replaces an older claim."""
        row = dict(invitation.row)
        row.update(claimedTenantId=tenant_id, nonceHash=nonce_hash, claimedAt=now)
        if write_if_unchanged(self._table, row, invitation.etag) is None:
            return False
        invitation.row = row
        return True

    def complete(self, invitation: Invitation, outcome: str, reason: str, completion_hash: str, now: datetime,
                 tenant_id: str | None = None) -> bool:
        """Record the outcome once; False when another request completed it first (single use)."""
        row = dict(invitation.row)
        row.update(outcome=outcome, outcomeReason=reason[:500], outcomeAt=now, completionHash=completion_hash,
                   tenantId=tenant_id or "")
        if write_if_unchanged(self._table, row, invitation.etag) is None:
            return False
        invitation.row = row
        logger.info("invitation %s %s (tenant %s)", invitation.id, outcome, tenant_id or "unknown")
        return True
