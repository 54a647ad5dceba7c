"""Ingestion benchmark scenarios: `backlog_50k` and `tenants_1000` (ingestion), plus the SIEM pull API's
first-page time on what they stored.

The measured path is production's: the local host runs the real app, the bench fires the `fetch_alerts`
timer through the host's admin API (as the portal's "Run" does) and reports the invocation's duration as
the host logs it.
Peak RSS is the host process's (`GET /admin/local/stats`), the process that runs the app, read right after
the tick. The SIEM pull API's first page (pageSize 100) is timed after the notification run the tick
started has finished, so the figure is the API's, not the load of 5,000 e-mails on the same host.

The bounds cannot use the host process's own client objects (they live in another process), so they are
measured in the bench process with clients the app's own factories build from the same app settings
(`shared.tables.TableStore`, `fetch_alerts.http.ApiClient`): same classes, same configuration, same
concurrency (`"bound_driver": "in-process"` in the figures). Each bound replays exactly what the measured
run did, read back from storage and from the local cloud's statistics:
- backlog_50k: the alert rows the run stored (same payload columns), written in transactions of the same
  sizes (the run's tenant feed rows give each transaction's alert count), one after another as ingestion
  writes one tenant's pages.
- tenants_1000: per tenant, on FETCH_CONCURRENCY threads, the same API calls and storage operations in one
  pass: the timer's enqueue, then the message received and deleted, the lease taken and released, the
  tenant row read, the unpublished-feed query, a token and the same alerts_v2 list call through the app's
  ApiClient, the marker upsert, the alert transaction with the same rows, the global feed row's upsert
  (fetch_alerts/feed.py publishes a lone row without a transaction), the two tenant-row merges, the re-read's
  row read. One pass, because one Python process pays for both with the same core: the app's process is
  CPU-bound here, so its API calls cannot hide behind its storage operations, and a bound taking the larger
  of the two done apart would ask for work done in no time. The figures also give each part done apart
  (`api_calls_direct_s`, `storage_operations_direct_s`) and the ratio to the storage part alone. The app's
  host instances are stopped first, so nothing they still do (the notification run's end, queue polling)
  takes CPU from the bound.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from azure.core import MatchConditions
from azure.data.tables import TableClient, UpdateMode

from local.run.cycle import NOTIFY_ORCHESTRATOR, finished_invocations, fire_timer, wait_for_orchestration
from local.run.stack import LocalStack, cloud_now, stack_table, start_with_mssp_app, trust_bundle

logger = logging.getLogger(__name__)

SECRET = "bench-secret"
TIMER = "fetch_alerts"
RSS_LIMIT_MB = 300.0
BACKLOG = 50_000
TENANTS = 1000
ALERTS_PER_TENANT = 5
LATENCY_MS = 50
METADATA = ("etag", "timestamp")


# --- the stack ---------------------------------------------------------------------------------------------


def _now_ticks() -> int:
    """Now, in 100 ns units since the Unix epoch (the ticks of the alert keys)."""
    return time.time_ns() // 100


def _start(workdir: Path) -> LocalStack:
    """The local platform with the real app and a fresh MSSP app registered in the local cloud; its
    timers fire only when the bench fires them."""
    return start_with_mssp_app(workdir, SECRET, SIEM_FEED_SETTLE_SECONDS="1")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _add_tenants(stack: LocalStack, count: int, alerts: dict[str, Any], activated: datetime,
                 latency_ms: int = 0, threads: int = 8) -> list[str]:
    """Consented tenants of the local cloud with active Tenants rows."""
    client_id = stack.settings["MSSP_APP_CLIENT_ID"]

    def one(_: int) -> str:
        tenant = stack.cloud.control("POST", "tenants", json={
            "domains": [f"b{uuid.uuid4().hex[:12]}.example"], "displayName": "Bench", "alerts": alerts}).json()
        tenant_id = str(tenant["id"])
        stack.cloud.control("POST", f"tenants/{tenant_id}/consents", json={"clientId": client_id, "propagated": True})
        if latency_ms:
            stack.cloud.control("POST", f"tenants/{tenant_id}/faults",
                                json={"kind": "latency", "api": "graph", "latencyMs": latency_ms})
        return tenant_id

    with ThreadPoolExecutor(threads) as pool:
        tenant_ids = list(pool.map(one, range(count)))
    rows = [{"PartitionKey": "tenant", "RowKey": t, "status": "active", "displayName": f"Customer {i}",
             "alertSource": "graph", "apiHost": "", "activatedAt": activated, "statusChangedAt": activated}
            for i, t in enumerate(tenant_ids)]
    tenants = stack_table(stack, "Tenants")
    for start in range(0, len(rows), 100):
        tenants.submit_transaction([("upsert", row) for row in rows[start:start + 100]])
    return tenant_ids


def _host_stats(stack: LocalStack) -> dict[str, Any]:
    assert stack.host is not None
    return dict(stack.host.admin("GET", "local/stats").json())


_EXECUTED = re.compile(rf"Executed 'Functions\.{TIMER}' \((?:Succeeded|Failed)[^)]*Duration=(\d+)ms\)")


def _run_timer(stack: LocalStack, timeout: float = 900.0) -> tuple[float, datetime]:
    """Fire the real timer through the host's admin API; the seconds its invocation took, and when it was
    fired. The seconds are the host's own `Duration` of the invocation (its log line, as Azure's host writes
    it); the bench asks the host whether it has ended only twice a second, since every question is work for
    the host being measured."""
    before = finished_invocations(stack, TIMER)
    assert stack.host is not None
    log_offset = stack.host.log_path.stat().st_size
    fired = datetime.now(UTC) - timedelta(seconds=1)
    started = time.monotonic()
    fire_timer(stack, TIMER)
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        if finished_invocations(stack, TIMER) > before:
            polled = time.monotonic() - started
            with stack.host.log_path.open("rb") as log:
                log.seek(log_offset)
                found = _EXECUTED.search(log.read().decode(errors="replace"))
            return (int(found.group(1)) / 1000 if found else polled), fired
    raise TimeoutError(f"{TIMER} did not finish within {timeout:.0f}s")


def _api_calls(stack: LocalStack, tenant_ids: set[str]) -> tuple[int, int]:
    """(alert API calls, token requests) the local cloud served for these tenants since its stats reset."""
    stats = stack.cloud.control("GET", "stats").json()
    calls = sum(n for t, apis in stats["apiRequests"].items() if t in tenant_ids for n in apis.values())
    tokens = sum(n for t, n in stats["tokenRequests"]["byTenant"].items() if t in tenant_ids)
    return calls, tokens


def _feed_rows(alerts: TableClient, tenant_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in alerts.query_entities("PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                                                   parameters={"pk": tenant_id, "lo": "feed|", "hi": "feed}"})]


def _first_page_seconds(stack: LocalStack, tick_started: datetime, **params: str) -> tuple[float, int]:
    """Time and rows read of the SIEM pull API's first page (pageSize 100), once the notification run the
    tick started has finished (it shares the host's workers; the API's own time is what is reported)."""
    assert stack.host is not None
    try:
        wait_for_orchestration(stack, NOTIFY_ORCHESTRATOR, tick_started, timeout=300)
    except TimeoutError:
        logger.warning("the notification run did not finish; the SIEM page time includes its load")
    time.sleep(1.5)  # the settle delay of the bench settings
    started = time.monotonic()
    response = requests.get(f"{stack.host.url}/api/alerts", params={"pageSize": "100", **params}, timeout=60,
                            headers={"x-functions-key": stack.host.function_key})
    elapsed = time.monotonic() - started
    response.raise_for_status()
    return elapsed, int(response.headers.get("X-Rows-Read", "-1"))


@contextmanager
def _app_environment(stack: LocalStack) -> Iterator[Any]:
    """The app's settings in this process, so the app's own factories build the bound's clients."""
    from shared.settings import get_settings
    from shared.tables import get_table_store

    bundle = trust_bundle(stack.cloud, stack.workdir)
    values = {**stack.settings, "REQUESTS_CA_BUNDLE": str(bundle), "SSL_CERT_FILE": str(bundle)}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    get_table_store.cache_clear()
    try:
        yield get_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        get_table_store.cache_clear()


def _strip(row: dict[str, Any], partition: str) -> dict[str, Any]:
    copy = {k: v for k, v in row.items() if k not in METADATA}
    copy["PartitionKey"] = partition
    return copy


# --- backlog_50k ---------------------------------------------------------------------------------------------


def run_backlog_50k(workdir: Path, backlog: int = BACKLOG) -> dict[str, Any]:
    """One tenant with a backlog (all created before activation: no obligations), ingested by one tick."""
    stack = _start(workdir)
    try:
        now = cloud_now(stack)
        [tenant_id] = _add_tenants(stack, 1, {"count": backlog, "start": _iso(now - timedelta(days=6)),
                                              "lagSeconds": 0}, activated=now)
        stack.cloud.control("DELETE", "stats")
        wall, fired = _run_timer(stack)
        peak_rss = float(_host_stats(stack)["peak_rss_mb"])
        calls, tokens = _api_calls(stack, {tenant_id})
        alerts = stack_table(stack, "Alerts")
        feed_rows = _feed_rows(alerts, tenant_id)
        stored = sum(int(r["count"]) for r in feed_rows)
        tenant = dict(stack_table(stack, "Tenants").get_entity("tenant", tenant_id))
        page_s, page_rows = _first_page_seconds(stack, fired, tenantId=tenant_id)
        with _app_environment(stack) as settings:
            bound_wall = _raw_backlog_writes(alerts_table(), tenant_id, [int(r["count"]) for r in feed_rows])
            api_wall = _direct_backlog_api_calls(settings, tenant_id)
    finally:
        stack.stop()
    rate = stored / wall if wall else 0.0
    bound_rate = stored / bound_wall if bound_wall else 0.0
    complete = stored >= backlog and bool(tenant.get("passComplete"))
    return {
        "driver": "host timer (admin API)", "bound_driver": "in-process (bench process, the app's TableStore)",
        "alerts": backlog, "alerts_stored": stored, "pass_complete": complete,
        "wall_s": round(wall, 2), "alerts_per_s": round(rate, 1),
        "api_calls": calls, "token_requests": tokens,
        "storage_transactions": {"alert_transactions": len(feed_rows),
                                 "note": "one entity-group transaction per tenant feed row; plus one global "
                                         "feed transaction and one tenant-row merge per page"},
        "peak_rss_mb": peak_rss,
        "siem_first_page_s": round(page_s, 3), "siem_first_page_rows_read": page_rows,
        "bound": {"wall_s": round(bound_wall, 2), "alerts_per_s": round(bound_rate, 1),
                  "what": "the same alert rows written straight to Azurite in transactions of the same sizes"},
        "diagnostic": {"api_calls_direct_s": round(api_wall, 2),
                       "what": "the same list calls (following nextLinks) through the app's ApiClient alone; "
                               "not part of the bound"},
        "target": "alerts_per_s >= 80% of bound alerts_per_s; peak_rss_mb < 300",
        "ratio": round(rate / bound_rate, 3) if bound_rate else None,
        "met": complete and rate >= 0.8 * bound_rate and peak_rss < RSS_LIMIT_MB,
    }


def alerts_table() -> TableClient:
    from shared.tables import Table, get_table_store

    return get_table_store().table(Table.ALERTS)


def _raw_backlog_writes(alerts: TableClient, tenant_id: str, sizes: list[int]) -> float:
    """Seconds spent writing the tenant's stored alert rows again, to a fresh partition, in transactions of
    the run's sizes (each with a feed row, as ingestion's); reading them back is not counted."""
    target = f"bench-{uuid.uuid4()}"
    rows = alerts.query_entities("PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                                 parameters={"pk": tenant_id, "lo": "alert|", "hi": "alert}"}, results_per_page=1000)
    pending: list[dict[str, Any]] = []
    spent = 0.0
    size_iter = iter(sizes)
    want = next(size_iter, 0)
    for row in rows:
        pending.append(_strip(dict(row), target))
        if len(pending) == want:
            spent += _timed_transaction(alerts, pending, target)
            pending, want = [], next(size_iter, 100)
    if pending:
        spent += _timed_transaction(alerts, pending, target)
    return spent


def _direct_backlog_api_calls(settings: Any, tenant_id: str) -> float:
    """Seconds for the backlog's list calls alone (Graph, following nextLinks), through the app's ApiClient."""
    from fetch_alerts.config import ApiCallConfig, RateLimits
    from fetch_alerts.http import ApiClient
    from fetch_alerts.keys import odata_literal
    from fetch_alerts.ratelimit import RateLimiter
    from shared.alert_sources import AlertSource, ApiHosts, alerts_url
    from shared.identity import TenantTokens

    api = ApiClient(ApiCallConfig.from_settings(settings), TenantTokens.from_settings(settings),
                    RateLimiter(RateLimits.from_settings(settings)))
    since = odata_literal(_now_ticks() - int(settings.get("FETCH_LOOKBACK_DAYS")) * 86_400 * 10_000_000)
    url: str | None = alerts_url(AlertSource.GRAPH, ApiHosts.from_settings(settings))
    params: dict[str, str] | None = {"$filter": f"lastUpdateDateTime ge {since}",
                                     "$top": str(settings.get("FETCH_GRAPH_PAGE_SIZE"))}
    started = time.monotonic()
    try:
        while url:
            body = api.get(tenant_id, AlertSource.GRAPH, url, params, started + 600)
            url, params = body.get("@odata.nextLink"), None
        return time.monotonic() - started
    finally:
        api.close()


def _timed_transaction(alerts: TableClient, rows: list[dict[str, Any]], partition: str) -> float:
    feed = {"PartitionKey": partition, "RowKey": f"feed|{time.time_ns():020d}|bench000",
            "alerts": "[]", "count": len(rows), "storedAt": datetime.now(UTC)}
    started = time.monotonic()
    alerts.submit_transaction([("create", row) for row in rows] + [("create", feed)])
    return time.monotonic() - started


# --- tenants_1000 -----------------------------------------------------------------------------------------


def run_tenants_1000(workdir: Path, tenants: int = TENANTS) -> dict[str, Any]:
    """1,000 tenants with 5 new alerts each and 50 ms added Graph latency, ingested by one tick."""
    stack = _start(workdir)
    try:
        now = cloud_now(stack)
        tenant_ids = _add_tenants(stack, tenants, {"count": ALERTS_PER_TENANT, "lagSeconds": 0,
                                                   "start": _iso(now - timedelta(minutes=30))},
                                  activated=now - timedelta(hours=1), latency_ms=LATENCY_MS)
        stack.cloud.control("DELETE", "stats")
        wall, fired = _run_timer(stack)
        peak_rss = float(_host_stats(stack)["peak_rss_mb"])
        calls, tokens = _api_calls(stack, set(tenant_ids))
        alerts = stack_table(stack, "Alerts")
        stored = sum(int(r["count"]) for t in tenant_ids for r in _feed_rows(alerts, t))
        page_s, page_rows = _first_page_seconds(stack, fired)
        for host in stack.hosts:
            host.stop()
        with _app_environment(stack) as settings:
            concurrency = int(settings.get("FETCH_CONCURRENCY"))
            calls_per_tenant = calls // max(1, len(tenant_ids))
            # The bound first, closest in time to the run; then its two parts apart, for the figures.
            with _tenant_api_calls(settings, concurrency, calls_per_tenant) as api_calls:
                bound = _direct_storage_operations(tenant_ids, concurrency, api_calls)
            with _tenant_api_calls(settings, concurrency, calls_per_tenant) as api_calls:
                api_wall = _on_pool(concurrency, api_calls, tenant_ids)
            storage_wall = _direct_storage_operations(tenant_ids, concurrency)
    finally:
        stack.stop()
    complete = stored >= tenants * ALERTS_PER_TENANT
    return {
        "driver": "host timer (admin API)",
        "bound_driver": "in-process (bench process, the app's ApiClient and TableStore)",
        "tenants": tenants, "alerts_per_tenant": ALERTS_PER_TENANT, "added_api_latency_ms": LATENCY_MS,
        "alerts_stored": stored, "api_calls": calls, "token_requests": tokens, "concurrency": concurrency,
        "wall_s": round(wall, 2), "peak_rss_mb": peak_rss,
        "siem_first_page_all_tenants_s": round(page_s, 3), "siem_first_page_rows_read": page_rows,
        "bound": {"wall_s": round(bound, 2), "api_calls_direct_s": round(api_wall, 2),
                  "storage_operations_direct_s": round(storage_wall, 2)},
        "target": "wall_s <= 1.5 x bound wall_s; peak_rss_mb < 300",
        "ratio": round(wall / bound, 3) if bound else None,
        "ratio_to_storage_operations_alone": round(wall / storage_wall, 3) if storage_wall else None,
        "met": complete and wall <= 1.5 * bound and peak_rss < RSS_LIMIT_MB,
    }


def _on_pool(concurrency: int, work: Callable[[str], None], items: list[str]) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, items))
    return time.monotonic() - started


@contextmanager
def _tenant_api_calls(settings: Any, concurrency: int, calls_per_tenant: int) -> Iterator[Callable[[str], None]]:
    """One tenant's API calls of the run, again through the app's ApiClient (a fresh token cache: a token per
    tenant too)."""
    from fetch_alerts.config import ApiCallConfig, RateLimits
    from fetch_alerts.http import ApiClient
    from fetch_alerts.keys import odata_literal
    from fetch_alerts.ratelimit import RateLimiter
    from shared.alert_sources import AlertSource, ApiHosts, alerts_url
    from shared.identity import TenantTokens

    # A fresh token provider: the process-wide one would keep an earlier scenario's (stopped) cloud.
    api = ApiClient(ApiCallConfig.from_settings(settings), TenantTokens.from_settings(settings),
                    RateLimiter(RateLimits.from_settings(settings)), pool_size=concurrency * 2 + 4)
    url = alerts_url(AlertSource.GRAPH, ApiHosts.from_settings(settings))
    since = odata_literal(_now_ticks() - 7 * 86_400 * 10_000_000)
    params = {"$filter": f"lastUpdateDateTime ge {since}", "$top": str(settings.get("FETCH_GRAPH_PAGE_SIZE"))}
    deadline = time.monotonic() + 600

    def calls(tenant_id: str) -> None:
        for _ in range(max(1, calls_per_tenant)):
            api.get(tenant_id, AlertSource.GRAPH, url, params, deadline)

    try:
        yield calls
    finally:
        api.close()


def _direct_storage_operations(tenant_ids: list[str], concurrency: int,
                               api_calls: Callable[[str], None] | None = None) -> float:
    """Per tenant, ingestion's storage operations with the same rows, written to fresh partitions, through the
    product's own functions where it has them: the timer's enqueue (one message per tenant, as many sends in
    flight as the timer uses), then on `concurrency` threads per tenant: a message received (eight per receive, as
    host.json's batchSize) and deleted, the lease taken and released, the tenant row read, the unpublished-feed
    query, `api_calls` for the tenant where ingestion makes them, the marker, the alert transaction, the global
    feed upsert, the cursor and health merges, and the re-read's read of the row."""
    from fetch_alerts import lease as leases
    from fetch_alerts.tenant_queue import connection, enqueue_tenants
    from shared.tables import Table, get_table_store

    store = get_table_store()
    alerts, feed, tenants = store.table(Table.ALERTS), store.table(Table.ALERT_FEED), store.table(Table.TENANTS)
    lease_table = store.table(Table.INGEST_LEASES)
    queue = connection().client(f"bench-bound-{uuid.uuid4().hex[:12]}")
    lock = threading.Lock()
    prepared: dict[str, tuple[str, list[dict[str, Any]]]] = {}

    def prepare(tenant_id: str) -> None:  # not timed: read back what the run wrote
        target = str(uuid.uuid4())
        rows = [_strip(dict(r), target) for r in alerts.query_entities("PartitionKey eq @pk",
                                                                       parameters={"pk": tenant_id})]
        tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": target, "status": "bench"})
        with lock:
            prepared[tenant_id] = (target, rows)

    _on_pool(concurrency, prepare, tenant_ids)
    received: list[Any] = []

    def message() -> Any:
        with lock:  # one receive at a time, as the trigger's listener
            if not received:
                received.extend(queue.receive_messages(messages_per_page=8, max_messages=8, visibility_timeout=600))
            return received.pop() if received else None

    def operations(tenant_id: str) -> None:
        target, rows = prepared[tenant_id]
        delivered = message()
        lease = leases.acquire(lease_table, target, "bench", 60)
        tenants.get_entity("tenant", target)
        list(alerts.query_entities("PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi", select=["RowKey"],
                                   parameters={"pk": target, "lo": "feed|", "hi": "feed}"}))
        if api_calls is not None:
            api_calls(tenant_id)
        etag = tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": target, "pendingNotifications": True},
                                     mode=UpdateMode.MERGE).get("etag")
        alerts.submit_transaction([("create", row) for row in rows])
        ns = time.time_ns()
        minute = time.strftime("%Y%m%d%H%M", time.gmtime(ns // 1_000_000_000))
        feed.upsert_entity({"PartitionKey": f"b{minute}", "RowKey": f"{ns:020d}|{target}|x", "tenantId": target},
                           mode=UpdateMode.REPLACE)
        etag = tenants.update_entity({"PartitionKey": "tenant", "RowKey": target, "cursor": "x", "passState": ""},
                                     mode=UpdateMode.MERGE, etag=etag,
                                     match_condition=MatchConditions.IfNotModified).get("etag")
        tenants.update_entity({"PartitionKey": "tenant", "RowKey": target, "lastSuccess": datetime.now(UTC),
                               "consecutiveFailures": 0}, mode=UpdateMode.MERGE, etag=etag,
                              match_condition=MatchConditions.IfNotModified)
        tenants.get_entity("tenant", target)
        if lease is not None:
            leases.release(lease)
        if delivered is not None:
            queue.delete_message(delivered)

    try:
        started = time.monotonic()
        enqueue_tenants(queue, tenant_ids, "bench", ttl_seconds=3600)
        return time.monotonic() - started + _on_pool(concurrency, operations, tenant_ids)
    finally:
        queue.delete_queue()
