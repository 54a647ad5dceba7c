"""Notification obligations and the tenant's pending marker, as the notification run moves them.

Ingestion (fetch_alerts/STORAGE.md) writes `pending` obligations and sets the tenant's
`pendingNotifications` marker first. A run claims obligations with ETag-conditional updates (`pending` →
`claimed` with its run id and claim time), takes over claims older than NOTIFY_CLAIM_TIMEOUT (a run that
died), marks them `done` once every e-mail they owe is resolved or gives them back (`pending`, attempts
+1) when some are carried over, and clears the marker only when nothing is left undone, with the tenant
row's ETag as the condition: ingestion merges the marker before writing an obligation, so a marker set
in between makes the clear fail and stay set (docs/ARCHITECTURE.md, "Tables").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.alerts import OBLIGATION_PREFIX, OBLIGATION_RANGE_END, ObligationState
from shared.tables import MAX_TRANSACTION_OPERATIONS, update_if_unchanged, write_if_unchanged
from shared.tenants import TENANT_PARTITION, Tenant

logger = logging.getLogger(__name__)

PENDING, CLAIMED, DONE = ObligationState.PENDING.value, ObligationState.CLAIMED.value, ObligationState.DONE.value


def _undone_filter() -> tuple[str, dict[str, Any]]:
    return ("PartitionKey eq @tenant and RowKey ge @lo and RowKey lt @hi and state ne @done",
            {"lo": OBLIGATION_PREFIX, "hi": OBLIGATION_RANGE_END, "done": DONE})


class ObligationStore:
    """Obligation rows of the Alerts table and the marker column of the Tenants table."""

    def __init__(self, alerts: TableClient, tenants: TableClient) -> None:
        self._alerts = alerts
        self._tenants = tenants

    def _undone(self, tenant_id: str) -> list[Any]:
        query, parameters = _undone_filter()
        return list(self._alerts.query_entities(query, parameters={"tenant": tenant_id, **parameters}))

    def claim(self, tenant_id: str, run_id: str, now: datetime, stale_after: timedelta) -> list[dict[str, Any]]:
        """The tenant's obligations this run now holds: pending ones, abandoned claims, and its own claims
        (a planning activity delivered twice plans the same obligations again)."""
        claimed: list[dict[str, Any]] = []
        to_claim: list[Any] = []
        for row in self._undone(tenant_id):
            state = row.get("state")
            if state == CLAIMED and row.get("runId") == run_id:
                claimed.append(dict(row))
                continue
            if state == CLAIMED:
                claimed_at = row.get("claimedAt")
                if isinstance(claimed_at, datetime) and now - claimed_at < stale_after:
                    continue  # another run is working on it
                logger.warning("tenant %s: obligation %s claimed by %s at %s was abandoned; run %s takes it over",
                               tenant_id, row["RowKey"], row.get("runId"), claimed_at, run_id)
            elif state != PENDING:
                logger.warning("tenant %s: obligation %s has unknown state %r; claiming it", tenant_id,
                               row["RowKey"], state)
            to_claim.append(row)
        changes = {"state": CLAIMED, "runId": run_id, "claimedAt": now}
        for row in self._update_many(to_claim, lambda _: changes):
            claimed.append({**dict(row), **changes})
        return claimed

    def complete(self, tenant_id: str, run_id: str, done: Iterable[str], released: Iterable[str],
                 now: datetime) -> dict[str, Any]:
        """Mark this run's obligations `done` or give them back as `pending` for the next run, then clear
        the tenant's marker if nothing is left undone. Counts, and `markerCleared`."""
        done_keys, released_keys = set(done), set(released)
        try:
            # Read the tenant row first: a marker set after this read changes its ETag and the clear fails.
            tenant = self._tenants.get_entity(TENANT_PARTITION, tenant_id)
        except ResourceNotFoundError:
            tenant = None
        undone = self._undone(tenant_id)
        ours = [row for row in undone if row.get("state") == CLAIMED and row.get("runId") == run_id
                and row["RowKey"] in done_keys | released_keys]
        # Not ours any more (a later run took over after NOTIFY_CLAIM_TIMEOUT): that run completes them.
        lost = len(done_keys | released_keys) - len(ours)

        def changes(row: Any) -> dict[str, Any]:
            if row["RowKey"] in done_keys:
                return {"state": DONE, "doneAt": now}
            return {"state": PENDING, "releasedAt": now, "attempts": int(row.get("attempts") or 0) + 1}

        updated = {row["RowKey"] for row in self._update_many(ours, changes)}
        counts: dict[str, Any] = {"done": len(updated & done_keys), "released": len(updated & released_keys),
                                  "lost": lost + len(ours) - len(updated)}
        left = [row for row in undone if not (row["RowKey"] in updated and row["RowKey"] in done_keys)]
        counts["markerCleared"] = self._clear_marker(tenant) if tenant is not None and not left else False
        return counts

    def _clear_marker(self, tenant: Any) -> bool:
        if not Tenant(tenant).pending_notifications:
            return True
        if self._update_table(self._tenants, tenant, {"pendingNotifications": False}):
            # Ingestion that set the marker before our read but wrote its obligation after our query would
            # be stranded by the clear; look once more and set the marker back if one appeared.
            if self._undone(tenant["RowKey"]):
                self._tenants.update_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant["RowKey"],
                                             "pendingNotifications": True}, mode=UpdateMode.MERGE)
                logger.info("tenant %s: an obligation arrived while clearing; marker set again", tenant["RowKey"])
                return False
            logger.info("tenant %s: every obligation is done; pending marker cleared", tenant["RowKey"])
            return True
        logger.info("tenant %s: marker changed while clearing; left set for the next run", tenant["RowKey"])
        return False

    def _update_many(self, rows: list[Any], changes: Callable[[Any], dict[str, Any]]) -> list[Any]:
        """ETag-conditional merges of one partition's rows, 100 per transaction; when a transaction fails
        (one row changed meanwhile) its rows are updated one by one. The rows that were updated."""
        updated: list[Any] = []
        for start in range(0, len(rows), MAX_TRANSACTION_OPERATIONS):
            part = rows[start:start + MAX_TRANSACTION_OPERATIONS]
            operations = [update_if_unchanged({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                               **changes(row)}, row.metadata["etag"]) for row in part]
            if len(part) > 1:
                try:
                    self._alerts.submit_transaction(operations)
                except TableTransactionError:
                    pass
                else:
                    updated += part
                    continue
            updated += [row for row in part if self._update_table(self._alerts, row, changes(row))]
        return updated

    @staticmethod
    def _update_table(table: TableClient, row: Any, changes: dict[str, Any]) -> bool:
        return write_if_unchanged(table, {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], **changes},
                                  row.metadata["etag"], mode=UpdateMode.MERGE) is not None
