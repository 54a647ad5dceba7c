"""The SIEM pull API, `GET /api/alerts`: alerts of every customer, in the order they were stored.

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

The continuation token is opaque to the SIEM: the position and the filters it was issued for, MACed with
SIEM_TOKEN_KEY (fetch_alerts/siem_token.py). It grants nothing the caller's function key does not already
read, but only tokens this deployment issued reach the feed reader: a forged, damaged or foreign token is
a 400, never a 5xx or a position outside the feed. Without the key the API answers 503 rather than hand
out tokens it could not verify.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from fetch_alerts.feed import minute_bucket
from fetch_alerts.siem_token import (
    GLOBAL_KEY,
    SEVERITIES,
    STATUSES,
    Filters,
    Position,
    TokenInvalid,
    bad_token,
    decode_token,
    encode_token,
)
from shared.alerts import ALERT_PREFIX, FEED_PREFIX
from shared.problems import Problem, run_api
from shared.settings import SettingsError, get_settings
from shared.tenants import TENANT_PARTITION
from shared.validators import is_guid

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_SIZE_WITH_PAYLOAD = 100
EXAMINE_FACTOR = 4  # a filtered page examines up to 4x pageSize versions before answering
POINT_READ_THREADS = 8
FIRST_TAKE = 4  # rows of a feed query's first page; each following page doubles, up to MAX_TAKE
MAX_TAKE = 100
EMPTY_PAGES_FOLLOWED = 5
NDJSON = "application/x-ndjson"
ALLOWED_PARAMETERS = {"tenantId", "severity", "status", "pageSize", "continuation", "includePayload", "code"}
# A parameter name is named back in a problem only when it looks like one: never arbitrary caller text.
_PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_QUALITY = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 qvalue


# --- the request ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullRequest:
    filters: Filters
    position: Position
    page_size: int
    include_payload: bool
    ndjson: bool


def _choices(raw: str, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    known = {value.lower() for value in allowed}
    chosen: list[str] = []
    for part in raw.split(","):
        value = part.strip().lower()
        if value not in known:
            raise Problem(400, f"must be a comma-separated list of {', '.join(allowed)}", field=name)
        if value not in chosen:
            chosen.append(value)
    return tuple(sorted(chosen))


def _page_size(raw: str | None, include_payload: bool) -> int:
    limit = MAX_PAGE_SIZE_WITH_PAYLOAD if include_payload else MAX_PAGE_SIZE
    if raw is None:
        return min(DEFAULT_PAGE_SIZE, limit)
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= limit:
        raise Problem(400, f"must be an integer from 1 to {limit}", field="pageSize")
    return int(raw)


def _wants_ndjson(accept: str | None) -> bool:
    """NDJSON when the Accept header names it (with a non-zero q); JSON otherwise."""
    for media_range in (accept or "").split(","):
        media, *params = (p.strip() for p in media_range.split(";"))
        if media.lower() == NDJSON:
            quality = next((p[2:].strip() for p in params if p.lower().startswith("q=")), "1")
            # A malformed weight still names NDJSON: the caller asked for it, so it is served.
            return not _QUALITY.fullmatch(quality) or float(quality) > 0
    return False


def parse_request(params: dict[str, str], accept: str | None, key: bytes) -> PullRequest:
    """Validate the query string; a bad value is a 400 naming the parameter. `key` verifies a token."""
    unknown = sorted(set(params) - ALLOWED_PARAMETERS)
    if unknown:
        name = unknown[0]
        raise Problem(400, f"unknown parameter; use {', '.join(sorted(ALLOWED_PARAMETERS - {'code'}))}",
                      field=name if _PARAMETER_NAME.fullmatch(name) else None)
    include_raw = params.get("includePayload", "false").strip().lower()
    if include_raw not in ("true", "false"):
        raise Problem(400, "must be true or false", field="includePayload")
    include_payload = include_raw == "true"
    tenant_id = params.get("tenantId")
    if tenant_id is not None:
        tenant_id = tenant_id.strip().lower()
        if not is_guid(tenant_id):
            raise Problem(400, "must be a tenant GUID", field="tenantId")
    filters = Filters(
        tenant_id=tenant_id,
        severities=_choices(params["severity"], SEVERITIES, "severity") if "severity" in params else (),
        statuses=_choices(params["status"], STATUSES, "status") if "status" in params else (),
    )
    position = Position()
    if "continuation" in params:
        token_filters, position = _read_token(params["continuation"], key)
        # The token carries its query (like a nextLink); filters given beside it must be the same.
        if tenant_id is None and "severity" not in params and "status" not in params:
            filters = token_filters
        elif filters != token_filters:
            raise Problem(400, "the continuation token was issued for other filters (tenantId, severity, "
                               "status); repeat the same filters or leave them out", field="continuation")
    return PullRequest(filters=filters, position=position, page_size=_page_size(params.get("pageSize"),
                       include_payload), include_payload=include_payload, ndjson=_wants_ndjson(accept))


def _read_token(token: str, key: bytes) -> tuple[Filters, Position]:
    try:
        return decode_token(token, key)
    except TokenInvalid as exc:
        if exc.authentic:  # only our encoder, or someone holding the key, makes a token that verifies
            logger.error("SIEM pull: a continuation token with a valid MAC is malformed (%s): the encoder is "
                         "broken or SIEM_TOKEN_KEY has leaked", exc)
        else:
            logger.info("SIEM pull: continuation token refused: %s", exc)
        raise bad_token() from None


def token_key() -> bytes:
    """SIEM_TOKEN_KEY as bytes; without a valid key the API refuses (503) instead of handing out tokens it
    could not verify."""
    try:
        key = get_settings().get("SIEM_TOKEN_KEY")
    except SettingsError as exc:  # the message names the setting, never its value
        logger.error("SIEM pull refused: %s", exc)
        raise Problem(503, "not configured: SIEM_TOKEN_KEY") from None
    if not key:
        logger.error("SIEM pull refused: SIEM_TOKEN_KEY is not set, so continuation tokens cannot be MACed")
        raise Problem(503, "not configured: SIEM_TOKEN_KEY")
    return str(key).encode("utf-8", "surrogateescape")


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
            if rows or not pages.continuation_token:
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


def _iso(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def alert_json(row: dict[str, Any], customer_name: str | None, include_payload: bool,
               decode_payload: Callable[[dict[str, Any]], dict[str, Any]] | None) -> dict[str, Any]:
    """What the SIEM receives for one alert: the normalised fields, tenant, customer and portal link."""
    try:
        techniques = json.loads(row.get("mitreTechniques") or "[]")
    except ValueError:
        techniques = []
    body: dict[str, Any] = {
        "tenantId": row["PartitionKey"],
        "customerName": customer_name,
        "alertId": row.get("alertId"),
        "source": row.get("source"),
        "title": row.get("title"),
        "category": row.get("category"),
        "severity": row.get("severity"),
        "status": row.get("status"),
        "classification": row.get("classification") or None,
        "determination": row.get("determination") or None,
        "createdDateTime": row.get("createdDateTime"),
        "lastUpdateDateTime": row.get("lastUpdateDateTime"),
        "deviceName": row.get("deviceName") or None,
        "userName": row.get("userName") or None,
        "deviceGroup": row.get("deviceGroup") or None,
        "mitreTechniques": techniques,
        "incidentId": row.get("incidentId") or None,
        "detectionSource": row.get("detectionSource") or None,
        "serviceSource": row.get("serviceSource") or None,
        "portalLink": row.get("portalLink"),
        "payloadHash": row.get("payloadHash"),
        "payloadTrimmed": bool(row.get("payloadTrimmed")),
        "storedAt": _iso(row.get("storedAt")),
    }
    if include_payload and decode_payload is not None:
        try:
            body["payload"] = decode_payload(row)
        except (ValueError, TypeError, zlib.error):  # a damaged row must not fail the SIEM's whole page
            logger.error("tenant %s: stored payload of %s cannot be decoded", row["PartitionKey"], row["RowKey"])
            body["payload"] = None
    return body


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
    position, examined, served = request.position, 0, []
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


# --- the HTTP answer ------------------------------------------------------------------------------------


def render(request: PullRequest, page: Page, names: dict[str, str | None],
           decode_payload: Callable[[dict[str, Any]], dict[str, Any]] | None, key: bytes) -> func.HttpResponse:
    token = encode_token(request.filters, page.position, key)
    items = [alert_json(row, names.get(row["PartitionKey"]), request.include_payload, decode_payload)
             for row in page.alerts]
    headers = {"X-Continuation-Token": token, "X-Has-More": "true" if page.has_more else "false",
               "X-Rows-Read": str(page.counter.rows), "X-Storage-Requests": str(page.counter.requests),
               "Cache-Control": "no-store"}
    next_link = f"/api/alerts?continuation={token}&pageSize={request.page_size}"
    if request.include_payload:
        next_link += "&includePayload=true"
    if page.has_more:
        headers["Link"] = f'<{next_link}>; rel="next"'
    if request.ndjson:
        body = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return func.HttpResponse(body.encode(), status_code=200, mimetype=NDJSON, headers=headers)
    document = {"value": items, "continuation": token, "hasMore": page.has_more}
    if page.has_more:
        document["nextLink"] = next_link
    return func.HttpResponse(json.dumps(document, ensure_ascii=False).encode(), status_code=200,
                             mimetype="application/json", headers=headers)


def handle(req: func.HttpRequest) -> func.HttpResponse:
    """The trigger's body: errors are problem+json without internals (shared.problems.run_api)."""
    return run_api(lambda: _answer(req), logger)


def _answer(req: func.HttpRequest) -> func.HttpResponse:
    """Parse, read one page, answer."""
    from shared.tables import Table, get_table_store

    key = token_key()
    request = parse_request(dict(req.params), req.headers.get("accept"), key)
    store = get_table_store()
    alerts, feed, tenants = store.table(Table.ALERTS), store.table(Table.ALERT_FEED), store.table(Table.TENANTS)
    decode_payload = _payload_decoder() if request.include_payload else None
    settle = int(get_settings().get("SIEM_FEED_SETTLE_SECONDS"))
    page = read_page(request, alerts=alerts, feed=feed, settle_seconds=settle)
    names = customer_names(page, tenants)
    logger.info("SIEM pull: %d alerts, %d rows read, more=%s, tenant=%s", len(page.alerts),
                page.counter.rows, page.has_more, request.filters.tenant_id or "all")
    return render(request, page, names, decode_payload, key)


def _payload_decoder() -> Callable[[dict[str, Any]], dict[str, Any]]:
    from shared.payload import decode_payload

    return decode_payload
