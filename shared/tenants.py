"""The Tenants table as the onboarding flow and the management API see it: one row per customer tenant
with its status, and an audit trail of every status change (docs/ARCHITECTURE.md, "Tables").

Row layout (table `Tenants`):
- tenant rows: PartitionKey `tenant`, RowKey = tenant GUID (lower case). One partition keeps the list of
  tenants a single-partition query; an MSSP has hundreds of tenants, not millions. Columns: `status`,
  `statusReason`, `statusChangedAt`, `displayName`, `alertSource`, `apiHost`, `invitationId`,
  `consentedAt`, `verifyingSince`, `verifyAttempts`, `lastVerification`, `lastVerificationMessage`,
  `activatedAt` (first time active: ingestion's backfill boundary), `offboardedAt`, and
  the health columns ingestion maintains (`lastAttempt`, `lastSuccess`, `lastErrorClass`,
  `consecutiveFailures`) plus its `cursor` and `pendingNotifications` (fetch_alerts/STORAGE.md). Writes
  here read the whole row and replace it under its ETag, so columns others merge in are never lost.
- audit rows: PartitionKey `history|<tenant GUID>`, RowKey `<UTC ISO time>|<random>` (chronological),
  columns `fromStatus`, `toStatus`, `reason`, `at`. They carry no `status` or `pendingNotifications`
  column, so scans for those never see them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.tables import CONFLICT_ATTEMPTS, Missing, Outcome, update_row

logger = logging.getLogger(__name__)

TENANT_PARTITION = "tenant"
HISTORY_PREFIX = "history|"


class TenantStatus(StrEnum):
    """The canonical tenant statuses."""

    VERIFYING = "verifying"
    ACTIVE = "active"
    VERIFICATION_FAILED = "verification_failed"
    CONSENT_REVOKED = "consent_revoked"
    PERMISSION_MISSING = "permission_missing"
    NOT_LICENSED = "not_licensed"
    DISABLED = "disabled"
    OFFBOARDED = "offboarded"


@dataclass(frozen=True)
class StatusChange:
    at: datetime
    from_status: str | None
    to_status: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "from": self.from_status, "to": self.to_status, "reason": self.reason}


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Tenant:
    """A tenant row as ingestion and notification read it: one named accessor per column they use, so a
    reader follows a tenant from onboarding through ingestion to its notifications by name (the columns:
    the module docstring and fetch_alerts/STORAGE.md). Absent or mistyped values read as None (texts and
    times), 0 or False. Writers still merge columns by their stored names."""

    row: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.row["RowKey"])

    @property
    def status(self) -> str:
        return str(self.row.get("status") or "")

    @property
    def status_reason(self) -> str:
        return str(self.row.get("statusReason") or "")

    @property
    def status_changed_at(self) -> datetime | None:
        return _when(self.row.get("statusChangedAt"))

    @property
    def display_name(self) -> str:
        return str(self.row.get("displayName") or "")

    @property
    def consented_at(self) -> datetime | None:
        return _when(self.row.get("consentedAt"))

    @property
    def activated_at(self) -> datetime | None:
        """When the tenant became active: ingestion's backfill boundary."""
        return _when(self.row.get("activatedAt"))

    # ingestion's progress
    @property
    def cursor(self) -> str | None:
        """The last-update watermark of the last completed pass (normalised ISO text)."""
        return _text(self.row.get("cursor"))

    @property
    def pass_state(self) -> str | None:
        """JSON of an unfinished pass, resumed next tick."""
        return _text(self.row.get("passState"))

    @property
    def pass_complete(self) -> bool:
        return self.row.get("passComplete") is True

    @property
    def feed_published(self) -> str | None:
        """The last tenant feed RowKey published to AlertFeed."""
        return _text(self.row.get("feedPublished"))

    @property
    def pending_notifications(self) -> bool:
        return bool(self.row.get("pendingNotifications"))

    # health
    @property
    def last_attempt(self) -> datetime | None:
        return _when(self.row.get("lastAttempt"))

    @property
    def last_success(self) -> datetime | None:
        return _when(self.row.get("lastSuccess"))

    @property
    def last_error_class(self) -> str:
        return str(self.row.get("lastErrorClass") or "")

    @property
    def last_error(self) -> str:
        return str(self.row.get("lastError") or "")

    @property
    def consecutive_failures(self) -> int:
        return int(self.row.get("consecutiveFailures") or 0)

    @property
    def lag_stats(self) -> str | None:
        return _text(self.row.get("lagStats"))

    @property
    def lag_summary(self) -> str | None:
        return _text(self.row.get("lagSummary"))


class Conflict(RuntimeError):
    """The row changed under us too often to apply a change."""


Mutation = Callable[[dict[str, Any]], tuple[str, str] | None]
"""Edits a tenant row in place; returns (new status, reason) when the status changes, else None."""


class TenantRegistry:
    """Tenant rows and their audit trail."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, tenant_id: str) -> dict[str, Any] | None:
        try:
            return dict(self._table.get_entity(TENANT_PARTITION, tenant_id.lower()))
        except ResourceNotFoundError:
            return None

    def all(self) -> list[dict[str, Any]]:
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": TENANT_PARTITION})
        return sorted((dict(r) for r in rows), key=lambda r: r["RowKey"])

    def with_status(self, status: TenantStatus) -> list[dict[str, Any]]:
        rows = self._table.query_entities("PartitionKey eq @pk and status eq @status",
                                          parameters={"pk": TENANT_PARTITION, "status": status.value})
        return [dict(r) for r in rows]

    def active_with_etags(self) -> list[tuple[dict[str, Any], str | None]]:
        """(row, ETag) of every active tenant (ingestion moves its columns under these ETags)."""
        rows = self._table.query_entities("PartitionKey eq @pk and status eq @status",
                                          parameters={"pk": TENANT_PARTITION, "status": TenantStatus.ACTIVE.value})
        return [(dict(r), r.metadata.get("etag")) for r in rows]

    def ids(self) -> list[str]:
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": TENANT_PARTITION},
                                          select=["RowKey"])
        return sorted(row["RowKey"] for row in rows)

    def ids_with_pending_notifications(self) -> list[str]:
        """Tenants whose `pendingNotifications` marker ingestion set (fetch_alerts/STORAGE.md)."""
        rows = self._table.query_entities("PartitionKey eq @pk and pendingNotifications eq @pending",
                                          parameters={"pk": TENANT_PARTITION, "pending": True}, select=["RowKey"])
        return sorted(row["RowKey"] for row in rows)

    def history(self, tenant_id: str) -> list[StatusChange]:
        rows = self._table.query_entities("PartitionKey eq @pk",
                                          parameters={"pk": HISTORY_PREFIX + tenant_id.lower()})
        changes = [StatusChange(datetime.fromisoformat(r["at"]), r.get("fromStatus") or None, r["toStatus"],
                                r.get("reason", "")) for r in rows]
        return sorted(changes, key=lambda c: c.at)

    def change(self, tenant_id: str, mutate: Mutation, now: datetime, *, create: bool = False,
               attempts: int = CONFLICT_ATTEMPTS) -> dict[str, Any] | None:
        """Apply `mutate` to the tenant row under its ETag (shared.tables.update_row); records a status change
        in the audit trail. Returns the new row, or None when there is no row (and `create` is false); raises
        Conflict when the row changed under every attempt."""
        tenant_id = tenant_id.lower()
        status_change: list[tuple[str | None, str, str]] = []  # of the last attempt

        def apply(row: dict[str, Any]) -> dict[str, Any]:
            status_change.clear()
            before = row.get("status")
            changed = mutate(row)
            if changed is not None and changed[0] != before:
                row.update(status=changed[0], statusReason=changed[1][:1000], statusChangedAt=now)
                status_change.append((before, changed[0], changed[1]))
            return row

        update = update_row(self._table, TENANT_PARTITION, tenant_id, apply, attempts=attempts,
                            missing=Missing.CREATE if create else Missing.SKIP)
        if update.outcome is Outcome.MISSING:
            return None
        if update.outcome is Outcome.CONTENDED:
            raise Conflict(f"tenant {tenant_id} changed concurrently {attempts} times")
        if update.written and status_change:
            self._record(tenant_id, *status_change[0], now)
        return update.row

    def set_status(self, tenant_id: str, status: TenantStatus, reason: str, now: datetime,
                   **fields: Any) -> dict[str, Any] | None:
        def mutate(row: dict[str, Any]) -> tuple[str, str]:
            row.update(fields)
            return status.value, reason

        return self.change(tenant_id, mutate, now)

    def _record(self, tenant_id: str, before: str | None, after: str, reason: str, now: datetime) -> None:
        logger.info("tenant %s: %s -> %s (%s)", tenant_id, before or "new", after, reason)
        self._table.create_entity({
            "PartitionKey": HISTORY_PREFIX + tenant_id, "RowKey": f"{now.isoformat()}|{secrets.token_hex(4)}",
            "fromStatus": before or "", "toStatus": after, "reason": reason[:1000], "at": now.isoformat(),
        })

    def delete_history(self, tenant_id: str) -> None:
        rows = self._table.query_entities("PartitionKey eq @pk", parameters={"pk": HISTORY_PREFIX + tenant_id})
        for row in rows:
            self._table.delete_entity(row["PartitionKey"], row["RowKey"])
