"""The global SIEM feed (table AlertFeed): one row per tenant feed row, published after the tenant's
transaction commits and before its cursor moves (layout: fetch_alerts/STORAGE.md).

Tenant feed rows are the outbox: the tenant row's `feedPublished` names the last one published, and a
run first publishes whatever a crashed run left behind, so every stored version reaches the global feed
at least once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.alerts import FEED_PREFIX, FEED_RANGE_END
from shared.tables import MAX_TRANSACTION_OPERATIONS

logger = logging.getLogger(__name__)


def minute_bucket(ns: int) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(ns // 1_000_000_000))


def publish(feed: TableClient, tenant_id: str, feed_keys: list[str]) -> None:
    """Global rows for the tenant feed rows named, in as few requests as their minutes allow: a minute's
    lone row as a plain upsert (a tenant's page usually publishes one row; an entity-group transaction costs
    the multipart request and response on top of the same write), several in transactions of at most 100."""
    if not feed_keys:
        return
    by_minute: dict[str, list[dict[str, Any]]] = defaultdict(list)
    now = datetime.now(UTC)
    for index, key in enumerate(feed_keys):
        ns = time.time_ns() + index  # distinct, ordered keys even within one clock tick
        bucket = minute_bucket(ns)
        by_minute[bucket].append({"PartitionKey": bucket, "RowKey": f"{ns:020d}|{tenant_id}|{key}",
                                  "tenantId": tenant_id, "feedKey": key, "publishedAt": now})
    for rows in by_minute.values():
        if len(rows) == 1:
            feed.upsert_entity(rows[0], mode=UpdateMode.REPLACE)
            continue
        for start in range(0, len(rows), MAX_TRANSACTION_OPERATIONS):
            feed.submit_transaction([("upsert", row, {"mode": UpdateMode.REPLACE})
                                     for row in rows[start:start + MAX_TRANSACTION_OPERATIONS]])


def unpublished(alerts: TableClient, tenant_id: str, published: str | None) -> list[str]:
    """Tenant feed RowKeys after `published` (left by a run that stopped before publishing them)."""
    low = published if published and published.startswith(FEED_PREFIX) else FEED_PREFIX
    rows = alerts.query_entities("PartitionKey eq @pk and RowKey gt @low and RowKey lt @high", select=["RowKey"],
                                 parameters={"pk": tenant_id, "low": low, "high": FEED_RANGE_END})
    return sorted(row["RowKey"] for row in rows)
