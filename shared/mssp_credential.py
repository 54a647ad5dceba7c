"""The one record of the MSSP's own credential failing: raised by ingestion and by onboarding
verification, announced once by the ops notices (notify_mssp.ops_notices).

A failure of the MSSP's app credential or app registration (shared.errors.MsspCredentialError) is never a
customer's: it is recorded here, once for every tenant and every caller, and no tenant status changes.
Incidents table, PartitionKey `mssp`, RowKey `credential` (fetch_alerts/STORAGE.md): `kind`, `code`,
`message`, `firstSeen`, `lastSeen`, `count`, `open`; the first caller that gets a token again closes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from azure.data.tables import TableClient, UpdateMode

from shared.errors import MicrosoftError

logger = logging.getLogger(__name__)

INCIDENT_PARTITION = "mssp"
INCIDENT_ROW = "credential"


def record_mssp_credential_failure(incidents: TableClient, error: MicrosoftError) -> None:
    """One global incident row for the MSSP's credential (upserted, counted), never per tenant."""
    now = datetime.now(UTC)
    try:
        existing = dict(incidents.get_entity(INCIDENT_PARTITION, INCIDENT_ROW))
    except Exception:  # noqa: BLE001 - absent or unreadable: start a new record
        existing = {}
    first = existing.get("firstSeen") if existing.get("open") else now
    incidents.upsert_entity({
        "PartitionKey": INCIDENT_PARTITION, "RowKey": INCIDENT_ROW, "kind": error.kind, "code": error.code or "",
        "message": error.message[:500], "firstSeen": first or now, "lastSeen": now,
        "count": int(existing.get("count") or 0) + 1 if existing.get("open") else 1, "open": True,
    }, mode=UpdateMode.REPLACE)
    logger.error("MSSP app credential is broken (seen for tenant %s): %s [%s]", error.tenant_id, error.message,
                 error.code)


def close_mssp_incident(incidents: TableClient) -> None:
    """Close the record when it is open (a token was issued again); nothing when there is none."""
    try:
        existing = dict(incidents.get_entity(INCIDENT_PARTITION, INCIDENT_ROW))
    except Exception:  # noqa: BLE001 - nothing recorded (or unreadable: the next success closes it)
        return
    if existing.get("open"):
        incidents.upsert_entity({"PartitionKey": INCIDENT_PARTITION, "RowKey": INCIDENT_ROW, "open": False,
                                 "closedAt": datetime.now(UTC)}, mode=UpdateMode.MERGE)
        logger.info("MSSP app credential works again; its incident is closed")
