"""The feed reader of the SIEM pull API (`GET /api/alerts`): one page of alerts of every customer, in the
order they were stored.

A SIEM pages through the feed rows that ingestion writes (fetch_alerts/STORAGE.md): one tenant's feed rows
(`feed|<stored_ns>|<writer>` in its Alerts partition) when `tenantId` is given, otherwise the global
`AlertFeed` table (minute partitions, RowKey `<published_ns>|<tenant>|<tenant feed RowKey>`). Each feed
row lists the alert versions one storage transaction wrote; the API serves each named alert's current row.
Following the continuation token from the start therefore yields every stored alert version at least once
(its own version or a newer one), including alerts that became visible at the source long after their
last-update time: the order is storing order, never the alerts' own timestamps.

Only feed rows older than `SIEM_FEED_SETTLE_SECONDS` are served, so a writer whose transaction commits a moment
after its timestamp cannot slip a row in behind a page a SIEM already read.

Cost: a page never scans. Every storage read is a key-range query or a point read, and a page examines at
most `EXAMINE_FACTOR * pageSize` alert versions (filters are applied to the alert rows read, so a filtered
page may hold fewer alerts than `pageSize`, or none, and still say `hasMore`). The response header
`X-Rows-Read` is the number of entities storage returned to build the page (global and tenant feed rows,
alert rows, tenant rows); `max_rows_read(pageSize)` bounds it whatever the number of alerts or tenants
stored: per examined version at most one alert row, one tenant feed row and one global feed row, plus
one tenant row per alert served and the unused rest of the last page of each feed query (<= 100 rows).

Requests are parsed by fetch_alerts/pull_request.py and pages rendered by fetch_alerts/pull_render.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from fetch_alerts.feed import minute_bucket
from fetch_alerts.pull_request import PullRequest
from fetch_alerts.siem_token import GLOBAL_KEY, Position
from shared.alerts import ALERT_PREFIX, FEED_PREFIX
from shared.tenants import TENANT_PARTITION

logger = logging.getLogger(__name__)

EXAMINE_FACTOR = 4  # a filtered page examines up to 4x pageSize versions before answering
POINT_READ_THREADS = 8
FIRST_TAKE = 4  # rows of a feed query's first page; each following page doubles, up to MAX_TAKE
MAX_TAKE = 100
EMPTY_PAGES_FOLLOWED = 5


# --- cost ---------------------------------------------------------------------------------------------------


def max_rows_read(page_size: int) -> int:
    """The most entities one page can read (see the module docstring)."""
    return 3 * EXAMINE_FACTOR * page_size + page_size + 2 * 100 + 1


# --- reading storage --------------------------------------------------------------------------------------


@dataclass
class ReadCounter:
    """Entities storage returned and requests made for one page (the `X-Rows-Read` header)."""

    rows: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.requests += 1


@dataclass(frozen=True)
class FeedEntry:
    """One alert version named by a feed row, and the position just after it."""

    tenant_id: str
    escaped_id: str
    after: Position


def _ns_key(ns: int) -> str:
    return f"{ns:020d}"


def _entries_of(feed_row: dict[str, Any]) -> list[str]:
    """The escaped alert ids a tenant feed row lists (a malformed row lists nothing, and is logged)."""
    try:
        pairs = json.loads(feed_row.get("alerts") or "[]")
        return [str(pair[0]) for pair in pairs]
    except (ValueError, TypeError, IndexError, KeyError):
        logger.error("tenant %s: feed row %s is malformed; skipped", feed_row.get("PartitionKey"),
                     feed_row.get("RowKey"))
        return []


class FeedReader:
    """Reads feed entries after a position, lazily, with key-range queries and point reads only."""

    def __init__(self, alerts: TableClient, feed: TableClient, counter: ReadCounter, settle_ns: int) -> None:
        self._alerts = alerts
        self._feed = feed
        self._counter = counter
        self._settle_ns = settle_ns  # only rows stamped before this are served

    def _one_page(self, table: TableClient, query: str, parameters: dict[str, Any], take: int) -> list[dict[str, Any]]:
        """The first page (at most `take` rows) of a key-range query. Azure may answer a page empty with a
        continuation token (a partition boundary); a few of those are followed."""
        pages = table.query_entities(query, parameters=parameters, results_per_page=take).by_page()
        for _ in range(EMPTY_PAGES_FOLLOWED):
            page = next(pages, None)
            if page is None:
                return []
            rows = [dict(row) for row in page]
            self._counter.add(len(rows))
            # by_page() is typed as a plain Iterator; what it returns is an azure.core PageIterator, which has
            # the continuation_token attribute.
            if rows or not pages.continuation_token:  # type: ignore[attr-defined]
                return rows
        return []

    def _point_read(self, table: TableClient, partition: str, key: str) -> dict[str, Any] | None:
        try:
            row = dict(table.get_entity(partition, key))
        except ResourceNotFoundError:
            self._counter.add(0)
            return None
        self._counter.add(1)
        return row

    def _parallel_reads(self, table: TableClient, keys: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        with ThreadPoolExecutor(max_workers=min(POINT_READ_THREADS, len(keys))) as pool:
            return list(pool.map(lambda key: self._point_read(table, *key), keys))

    def tenant_entries(self, tenant_id: str, position: Position) -> Iterator[FeedEntry]:
        if position.key and position.index is not None:  # resume inside a partly served feed row
            row = self._point_read(self._alerts, tenant_id, position.key)
            if row is not None:
                yield from self._row_entries(tenant_id, row, "", position.key, position.index)
        # Pages grow (4, 8, ... 100 rows): a feed row of a backlog lists up to 99 versions, a quiet tenant's
        # only one or two, and a page should read neither far more rows nor far more requests than needed.
        after, take = position.key or FEED_PREFIX, FIRST_TAKE
        while True:
            rows = self._one_page(self._alerts, "PartitionKey eq @pk and RowKey gt @after and RowKey lt @upper",
                                  {"pk": tenant_id, "after": after, "upper": FEED_PREFIX + _ns_key(self._settle_ns)},
                                  take)
            for row in rows:
                yield from self._row_entries(tenant_id, row, "", row["RowKey"], 0)
            if len(rows) < take:
                return
            after, take = rows[-1]["RowKey"], min(take * 2, MAX_TAKE)

    def global_entries(self, position: Position) -> Iterator[FeedEntry]:
        if position.key and position.index is not None:
            match = GLOBAL_KEY.fullmatch(position.key)
            assert match is not None  # validated with the token
            row = self._point_read(self._alerts, match.group(2), match.group(3))
            if row is not None:
                yield from self._row_entries(match.group(2), row, position.partition, position.key, position.index)
        upper = {"upper": _ns_key(self._settle_ns), "upperPk": minute_bucket(self._settle_ns)}
        partition, after, take = position.partition, position.key, FIRST_TAKE
        while True:
            if partition:  # the rest of the current minute partition
                rows = self._one_page(self._feed, "PartitionKey eq @pk and RowKey gt @after and RowKey lt @upper",
                                      {"pk": partition, "after": after, "upper": upper["upper"]}, take)
                yield from self._global_page_entries(rows)
                if len(rows) == take:
                    after, take = rows[-1]["RowKey"], min(take * 2, MAX_TAKE)
                    continue
            # Later minute partitions in one key-range query: empty minutes cost nothing.
            rows = self._one_page(self._feed, "PartitionKey gt @pk and PartitionKey le @upperPk and RowKey lt @upper",
                                  {"pk": partition, **upper}, take)
            yield from self._global_page_entries(rows)
            if not rows:
                return
            partition, after, take = rows[-1]["PartitionKey"], rows[-1]["RowKey"], min(take * 2, MAX_TAKE)

    def _global_page_entries(self, global_rows: list[dict[str, Any]]) -> Iterator[FeedEntry]:
        """The entries of a page of global feed rows, reading their tenant feed rows in parallel."""
        named: list[tuple[dict[str, Any], tuple[str, str]]] = []
        for global_row in global_rows:
            match = GLOBAL_KEY.fullmatch(str(global_row.get("RowKey", "")))
            if match is None:
                logger.error("AlertFeed row %s/%s has an unexpected key; skipped",
                             global_row.get("PartitionKey"), global_row.get("RowKey"))
                continue
            named.append((global_row, (match.group(2), match.group(3))))
        feed_rows = self._parallel_reads(self._alerts, [key for _, key in named])
        for (global_row, (tenant_id, _)), row in zip(named, feed_rows, strict=True):
            if row is None:  # the tenant's alerts were purged since
                continue
            yield from self._row_entries(tenant_id, row, global_row["PartitionKey"], global_row["RowKey"], 0)

    @staticmethod
    def _row_entries(tenant_id: str, row: dict[str, Any], partition: str, key: str,
                     start: int) -> Iterator[FeedEntry]:
        ids = _entries_of(row)
        for index in range(start, len(ids)):
            last = index + 1 >= len(ids)
            yield FeedEntry(tenant_id, ids[index], Position(partition, key, None if last else index + 1))

    def alert_rows(self, entries: list[FeedEntry]) -> list[dict[str, Any] | None]:
        """The current alert row of each entry (None when it is gone), read in parallel point reads."""
        return self._parallel_reads(self._alerts, [(e.tenant_id, ALERT_PREFIX + e.escaped_id) for e in entries])


# --- a page --------------------------------------------------------------------------------------------


@dataclass
class Page:
    alerts: list[dict[str, Any]]
    position: Position
    has_more: bool
    counter: ReadCounter


def read_page(request: PullRequest, *, alerts: TableClient, feed: TableClient, settle_seconds: int,
              now_ns: int | None = None) -> Page:
    """One page: up to pageSize matching alerts after the request's position, examining a bounded number."""
    counter = ReadCounter()
    settle_ns = (now_ns if now_ns is not None else time.time_ns()) - settle_seconds * 1_000_000_000
    reader = FeedReader(alerts, feed, counter, settle_ns)
    budget = EXAMINE_FACTOR * request.page_size
    filters = request.filters
    entries = (reader.tenant_entries(filters.tenant_id, request.position) if filters.tenant_id
               else reader.global_entries(request.position))
    position, examined = request.position, 0
    served: list[dict[str, Any]] = []
    seen: set[tuple[str, str, Any]] = set()
    exhausted = False
    while len(served) < request.page_size and examined < budget:
        # Never read more alert rows than could still be served, so the page stops exactly at pageSize.
        chunk_size = min(request.page_size - len(served), budget - examined)
        chunk = [entry for _, entry in zip(range(chunk_size), entries, strict=False)]
        if len(chunk) < chunk_size:
            exhausted = True
        for entry, row in zip(chunk, reader.alert_rows(chunk), strict=True):
            examined += 1
            position = entry.after
            if row is None or not filters.matches(row):
                continue
            identity = (row["PartitionKey"], row["RowKey"], row.get("lastUpdateTicks"))
            if identity not in seen:  # the same version named twice in one page is served once
                seen.add(identity)
                served.append(row)
        if exhausted:
            break
    return Page(alerts=served, position=position, has_more=not exhausted, counter=counter)


def customer_names(page: Page, tenants: TableClient) -> dict[str, str | None]:
    """Display names of the page's tenants (the Tenants table), one point read per tenant on the page."""
    names: dict[str, str | None] = {}
    for tenant_id in dict.fromkeys(row["PartitionKey"] for row in page.alerts):
        try:
            row = tenants.get_entity(TENANT_PARTITION, tenant_id)
        except ResourceNotFoundError:
            page.counter.add(0)
            names[tenant_id] = None
            continue
        page.counter.add(1)
        names[tenant_id] = str(row.get("displayName")) if row.get("displayName") else None
    return names
