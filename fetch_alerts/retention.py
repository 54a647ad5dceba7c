"""The daily clean-up: alerts not updated for RETENTION_DAYS are deleted, partition by partition.

Each tenant's partition is cleaned on its own (alert rows past the cut-off, their obligations, feed rows
older than the cut-off), in transactions of up to 100 deletes; the global feed's minute partitions
older than the cut-off go the same way. Storage cost stays bounded however long the app runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient

from fetch_alerts.feed import minute_bucket
from fetch_alerts.keys import from_datetime
from shared.alerts import FEED_PREFIX, escape_id

logger = logging.getLogger(__name__)


def _delete(table: TableClient, partition: str, row_keys: Iterable[str]) -> int:
    batch: list[Any] = []
    deleted = 0
    for key in row_keys:
        batch.append(("delete", {"PartitionKey": partition, "RowKey": key}))
        if len(batch) == 100:
            table.submit_transaction(batch)
            deleted += len(batch)
            batch = []
    if batch:
        table.submit_transaction(batch)
        deleted += len(batch)
    return deleted


def clean_partition(alerts: TableClient, tenant_id: str, cutoff: datetime) -> int:
    """Delete the tenant's alerts (with their obligations) last updated before `cutoff`, and its older feed
    rows; returns how many rows went."""
    cutoff_ticks = from_datetime(cutoff)
    old = alerts.query_entities(
        "PartitionKey eq @pk and RowKey ge 'alert|' and RowKey lt 'alert}' and lastUpdateTicks lt @cut",
        select=["RowKey", "alertId"], parameters={"pk": tenant_id, "cut": cutoff_ticks})
    keys: list[str] = []
    escaped: set[str] = set()
    for row in old:
        keys.append(row["RowKey"])
        escaped.add(escape_id(str(row["alertId"])))
    if escaped:
        obligations = alerts.query_entities(
            "PartitionKey eq @pk and RowKey ge 'obligation|' and RowKey lt 'obligation}'",
            select=["RowKey"], parameters={"pk": tenant_id})
        keys += [r["RowKey"] for r in obligations if r["RowKey"].split("|")[1] in escaped]
    feed_high = f"{FEED_PREFIX}{int(cutoff.timestamp() * 1e9):020d}"
    feed_rows = alerts.query_entities("PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                                      select=["RowKey"], parameters={"pk": tenant_id, "low": FEED_PREFIX,
                                                                     "high": feed_high})
    keys += [r["RowKey"] for r in feed_rows]
    return _delete(alerts, tenant_id, keys)


def clean_global_feed(feed: TableClient, cutoff: datetime) -> int:
    bucket = minute_bucket(int(cutoff.timestamp() * 1e9))
    rows = feed.query_entities("PartitionKey lt @bucket", select=["PartitionKey", "RowKey"],
                               parameters={"bucket": bucket})
    by_partition: dict[str, list[str]] = {}
    for row in rows:
        by_partition.setdefault(row["PartitionKey"], []).append(row["RowKey"])
    return sum(_delete(feed, partition, keys) for partition, keys in by_partition.items())


def run_retention(alerts: TableClient, feed: TableClient, tenants: TableClient, days: int,
                  now: datetime | None = None, budget_seconds: float = 480.0) -> dict[str, int]:
    """Clean every tenant's partition, then the global feed; stops starting partitions after the budget
    (the next day's run goes on: partitions already clean cost one query)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    started = time.monotonic()
    tenant_ids = [r["RowKey"] for r in tenants.query_entities("PartitionKey eq 'tenant'", select=["RowKey"])]
    deleted = failed = 0
    for tenant_id in tenant_ids:
        if time.monotonic() - started > budget_seconds:
            logger.warning("retention: time budget spent; the remaining partitions wait for the next run")
            break
        try:
            deleted += clean_partition(alerts, tenant_id, cutoff)
        except HttpResponseError as exc:  # one partition's failure never stops the others
            failed += 1
            logger.warning("retention: tenant %s failed: %s", tenant_id, type(exc).__name__)
    deleted += clean_global_feed(feed, cutoff)
    logger.info("retention: %d rows older than %s deleted across %d tenants (%d failed), %.1fs", deleted,
                cutoff.isoformat(), len(tenant_ids), failed, time.monotonic() - started)
    return {"tenants": len(tenant_ids), "deleted": deleted, "failed": failed}
