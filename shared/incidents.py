"""The Incidents table and its keys: the one record of the MSSP's own credential failing, and the rows of the
operational notices (docs/ARCHITECTURE.md, "Tables").

Row layout (table `Incidents`):
- the MSSP credential incident: PartitionKey `mssp`, RowKey `credential` (CREDENTIAL_KEY), columns `kind`,
  `code`, `message`, `firstSeen`, `lastSeen`, `count`, `open`, `closedAt`. Raised by ingestion and by
  onboarding verification, announced once by the ops notices (notify_mssp.ops_notices), never per tenant.
- notice rows: PartitionKey `notice`, RowKey `<kind>|<subject>` (notice_key; subject: a tenant GUID,
  `mssp`, or for one-off daily notices `<tenant>|<YYYY-MM-DD>`), written only by the ops notices; their
  columns are described in notify_mssp/incident_records.py.
- poisoned ingestion: PartitionKey `poisoned`, RowKey the tenant GUID, one row per tenant whose ingestion
  message failed every delivery and went to the poison queue (fetch_alerts.runner.record_poisoned): columns
  `count` (poisoned messages), `firstSeen`, `lastSeen`, `lastRunId`, `lastMessageId`. Written by ingestion,
  read by the ops notices, which announce it once while it is newer than the tenant's `lastSuccess`.

A failure of the MSSP's app credential or app registration (shared.errors.MsspCredentialError) is never a
customer's: it is recorded here, once for every tenant and every caller, and no tenant status changes; the
first caller that gets a token again closes it. Every write is conditional (shared.tables).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.errors import MicrosoftError
from shared.tables import Missing, Outcome, update_row, write_if_unchanged

logger = logging.getLogger(__name__)

CREDENTIAL_PARTITION = "mssp"
CREDENTIAL_ROW = "credential"
CREDENTIAL_KEY = (CREDENTIAL_PARTITION, CREDENTIAL_ROW)

NOTICE_PARTITION = "notice"
POISONED_PARTITION = "poisoned"
MSSP_SUBJECT = "mssp"  # the subject of notices about the MSSP itself rather than one tenant


def notice_key(kind: str, subject: str) -> str:
    return f"{kind}|{subject}"


# --- the MSSP credential incident -------------------------------------------------------------------------------


def record_mssp_credential_failure(incidents: TableClient, error: MicrosoftError) -> None:
    """One global incident row for the MSSP's credential (counted under its ETag), never per tenant."""
    now = datetime.now(UTC)

    def record(row: dict[str, Any]) -> dict[str, Any]:
        still_open = bool(row.get("open"))
        return {"PartitionKey": CREDENTIAL_PARTITION, "RowKey": CREDENTIAL_ROW, "kind": error.kind,
                "code": error.code or "", "message": error.message[:500],
                "firstSeen": (row.get("firstSeen") if still_open else None) or now, "lastSeen": now,
                "count": int(row.get("count") or 0) + 1 if still_open else 1, "open": True}

    update = update_row(incidents, *CREDENTIAL_KEY, record, missing=Missing.CREATE)
    if update.outcome is Outcome.CONTENDED:  # others recorded it meanwhile: the incident is open either way
        logger.warning("MSSP credential incident kept changing; this failure is not counted")
    logger.error("MSSP app credential is broken (seen for tenant %s): %s [%s]", error.tenant_id, error.message,
                 error.code)


def close_mssp_incident(incidents: TableClient) -> None:
    """Close the record when it is open (a token was issued again); nothing when there is none."""

    def close(row: dict[str, Any]) -> dict[str, Any] | None:
        if not row.get("open"):
            return None
        return {"PartitionKey": CREDENTIAL_PARTITION, "RowKey": CREDENTIAL_ROW, "open": False,
                "closedAt": datetime.now(UTC)}

    try:
        update = update_row(incidents, *CREDENTIAL_KEY, close, mode=UpdateMode.MERGE)
    except AzureError:  # unreadable: the next success closes it
        return
    if update.written:
        logger.info("MSSP app credential works again; its incident is closed")


def mssp_credential_incident(incidents: TableClient) -> dict[str, Any]:
    """The MSSP credential incident row, or {} when none was ever recorded."""
    try:
        return dict(incidents.get_entity(*CREDENTIAL_KEY))
    except ResourceNotFoundError:
        return {}


# --- notice rows ---------------------------------------------------------------------------------------------


def read_notice(incidents: TableClient, kind: str, subject: str) -> tuple[dict[str, Any] | None, str | None]:
    """The notice row of (kind, subject) and its ETag; (None, None) when there is none."""
    try:
        entity = incidents.get_entity(NOTICE_PARTITION, notice_key(kind, subject))
    except ResourceNotFoundError:
        return None, None
    return dict(entity), entity.metadata["etag"]


def new_notice(kind: str, subject: str, **columns: Any) -> dict[str, Any]:
    """A notice row's keys and columns (written with write_notice)."""
    return {"PartitionKey": NOTICE_PARTITION, "RowKey": notice_key(kind, subject), "kind": kind, "subject": subject,
            **columns}


def write_notice(incidents: TableClient, row: dict[str, Any], etag: str | None) -> str | None:
    """Create (no etag) or replace the notice row under its ETag: the new ETag, or None when another evaluator
    wrote it first (it then sends the notice)."""
    return write_if_unchanged(incidents, row, etag)


# --- poisoned ingestion --------------------------------------------------------------------------------------


def record_poisoned_ingestion(incidents: TableClient, tenant_id: str, *, run_id: str, message_id: str,
                              now: datetime) -> bool:
    """Count one poisoned ingestion message on the tenant's row (created at the first), once per message: a
    second delivery of the same poison message changes nothing. True when this call wrote the row."""

    def record(row: dict[str, Any]) -> dict[str, Any] | None:
        if row.get("lastMessageId") == message_id:
            return None
        return {"PartitionKey": POISONED_PARTITION, "RowKey": tenant_id, "count": int(row.get("count") or 0) + 1,
                "firstSeen": row.get("firstSeen") or now, "lastSeen": now, "lastRunId": run_id[:200],
                "lastMessageId": message_id[:200]}

    return update_row(incidents, POISONED_PARTITION, tenant_id, record, missing=Missing.CREATE).written


def poisoned_ingestions(incidents: TableClient) -> dict[str, dict[str, Any]]:
    """Every tenant's poisoned-ingestion row, by tenant id (one query, however many tenants)."""
    rows = incidents.query_entities("PartitionKey eq @pk", parameters={"pk": POISONED_PARTITION})
    return {str(row["RowKey"]): dict(row) for row in rows}
