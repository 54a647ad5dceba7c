"""The tenant's cursor and pass state on its Tenants row, moved only by conditional (ETag) updates.

The cursor is the largest last-update time written by a completed pass, capped at the pass's start on
our clock: alerts that become visible while a pass pages (new ones, or late ones) carry a last update
at or after that start minus the ingestion lag, so the next pass, which re-reads from the cursor minus
the overlap, reads them as long as the lag stays within the overlap. The cursor never comes from the
clock alone (a quiet tenant keeps its cursor) and never moves backwards: when another run changed the
row, the update is recomputed on the fresh row and the larger cursor wins (each is valid on its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from fetch_alerts.keys import format_ticks, from_datetime, minutes, parse_ticks
from fetch_alerts.sources import PassState
from shared.tables import Outcome, update_row
from shared.tenants import TENANT_PARTITION, Tenant

logger = logging.getLogger(__name__)

_ATTEMPTS = 8  # more than shared.tables.CONFLICT_ATTEMPTS: see TenantRow.merge


def cursor_ticks(row: dict[str, Any]) -> int | None:
    text = Tenant(row).cursor
    try:
        return parse_ticks(text) if text else None
    except ValueError:
        return None


def activated_ticks(row: dict[str, Any], now: datetime) -> int:
    """When the tenant became active: the backfill boundary."""
    tenant = Tenant(row)
    return from_datetime(tenant.activated_at or tenant.status_changed_at or tenant.consented_at or now)


def start_state(row: dict[str, Any], overlap_minutes: int, lookback_days: int, now: datetime) -> PassState:
    """The unfinished pass of the row, or a new one from the cursor (or the look-back)."""
    saved = Tenant(row).pass_state
    if saved:
        state = PassState.from_json(saved)
        if state is not None:
            return state
    cursor = cursor_ticks(row)
    lo = cursor - minutes(overlap_minutes) if cursor is not None \
        else activated_ticks(row, now) - minutes(lookback_days * 24 * 60)
    return PassState(lo=lo, cap=from_datetime(now))


def completed_cursor(state: PassState, previous: int | None) -> int | None:
    """The cursor after a completed pass: the data's largest last update, never past the pass's start,
    never below the previous cursor."""
    candidate = min(state.max_seen, state.cap) if state.max_seen is not None else None
    values = [v for v in (candidate, previous) if v is not None]
    return max(values) if values else None


@dataclass
class TenantRow:
    """The tenant's row as this run last wrote or read it: its ETag (for the conditions) and `row`, its columns as
    this run knows them: the row read when the run began with every merge of the run applied, or after a conflict
    the row then read with the merge applied. Ingestion is the only writer of its own columns
    (fetch_alerts/STORAGE.md) and holds the tenant's lease while it writes, so `row` holds them as stored; a column
    another writer changed since (the status, the notification run's marker) shows as the next merge's conflict,
    which reads the row again."""

    table: TableClient
    tenant_id: str
    etag: str | None
    row: dict[str, Any] = field(default_factory=dict)

    def merge(self, fields: dict[str, Any], *, cursor: int | None = None) -> None:
        """Merge `fields` under the row's ETag; on a conflict re-read and keep the larger cursor.

        `cursor` (ticks) is written as `cursor` unless the stored one is larger (then `passState` is left
        alone too: the run that moved the cursor further owns it). Attempts: _ATTEMPTS, as ingestion's own
        writes to its row (markers, other runs' merges) may interleave; a row that keeps changing drops the
        update with a warning, as the next tick recomputes it."""
        keys = {"PartitionKey": TENANT_PARTITION, "RowKey": self.tenant_id}
        known = (keys, self.etag) if self.etag else None
        seen: list[dict[str, Any]] = []  # each attempt's row: the first is only the keys when the ETag is `known`

        def apply(stored: dict[str, Any]) -> dict[str, Any]:
            seen.append(stored)
            theirs = cursor_ticks(stored)
            if cursor is not None and theirs is not None and theirs >= cursor:
                return {**keys, **{k: v for k, v in fields.items() if k != "passState"}}  # theirs is ahead
            return {**keys, **fields, **({"cursor": format_ticks(cursor)} if cursor is not None else {})}

        update = update_row(self.table, TENANT_PARTITION, self.tenant_id, apply, mode=UpdateMode.MERGE,
                            attempts=_ATTEMPTS, known=known)
        if update.outcome is Outcome.MISSING:
            logger.warning("tenant %s: row deleted during ingestion; nothing recorded", self.tenant_id)
        elif update.outcome is Outcome.CONTENDED:
            logger.warning("tenant %s: row kept changing; update dropped", self.tenant_id)
        elif update.row is not None:
            reads = seen[1:] if known else seen
            self.row = {**(reads[-1] if reads else self.row), **update.row}
            self.etag = update.etag or self.etag

    def set_marker(self) -> None:
        """pendingNotifications = true, unconditionally (a marker set for nothing is harmless)."""
        metadata = self.table.upsert_entity({"PartitionKey": TENANT_PARTITION, "RowKey": self.tenant_id,
                                             "pendingNotifications": True}, mode=UpdateMode.MERGE)
        self.etag = metadata.get("etag", self.etag)
        self.row["pendingNotifications"] = True
