"""Builds what the ingestion triggers pass to the plain functions: the timer's tables and queue, a queue
message's dependencies (the tenant run's context: tables, the alert API client, the typed config; the lease
table), the retention tables and config, the SIEM pull API's tables, config and token key. Everything is built
at first use, never at import time (docs/ARCHITECTURE.md, invariant 6), so a missing setting fails one
invocation with a clear message. Kept between invocations of a worker: the alert API client (its rate
limiter's windows must hold across ticks and messages), the queue client, and the thread pool the queue
trigger runs tenants on (FETCH_CONCURRENCY threads: one per message the host runs at once)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from fetch_alerts.config import (
    ApiCallConfig,
    IngestionConfig,
    PullConfig,
    QueueConfig,
    RateLimits,
    RetentionConfig,
    SiemTokenKey,
)
from fetch_alerts.http import ApiClient
from fetch_alerts.ingest import RunContext
from fetch_alerts.pull_request import token_key
from fetch_alerts.ratelimit import RateLimiter
from fetch_alerts.runner import MessageDeps
from fetch_alerts.tenant_queue import INGEST_QUEUE, connection
from shared.alert_sources import ApiHosts
from shared.identity import get_tenant_tokens
from shared.settings import Settings, get_settings
from shared.tables import Table, get_table_store

_api: ApiClient | None = None
_queue: QueueClient | None = None
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def settings() -> Settings:
    return get_settings()


def ingestion_config() -> IngestionConfig:
    return IngestionConfig.from_settings(settings())


def api_client(config: IngestionConfig) -> ApiClient:
    """One API client (session, limiter) per worker process, built at the first tick: limits hold across
    ticks."""
    global _api
    with _lock:
        if _api is None:
            current = settings()
            _api = ApiClient(ApiCallConfig.from_settings(current), get_tenant_tokens(),
                             RateLimiter(RateLimits.from_settings(current)), pool_size=config.concurrency * 2 + 4)
        return _api


def run_context(run_id: str, started: float) -> RunContext:
    """What one tenant's run works with; its time budget counts from `started` (time.monotonic(), the
    trigger's start: functionTimeout counts from there too)."""
    config = ingestion_config()
    api = api_client(config)
    store = get_table_store()
    return RunContext(hosts=ApiHosts.from_settings(settings()), config=config, api=api,
                      alerts=store.table(Table.ALERTS),
                      feed=store.table(Table.ALERT_FEED), tenants=store.table(Table.TENANTS),
                      incidents=store.table(Table.INCIDENTS),
                      deadline=started + config.time_budget_seconds, run_id=run_id)


def queue_config() -> QueueConfig:
    return QueueConfig.from_settings(settings())


def ingest_queue() -> QueueClient:
    """The ingestion queue's client, on the host's own storage (fetch_alerts.tenant_queue.QueueConnection)."""
    global _queue
    with _lock:
        if _queue is None:
            _queue = connection().client(INGEST_QUEUE)
        return _queue


def ingest_pool() -> ThreadPoolExecutor:
    """The threads the queue trigger runs tenants on, one per message the host runs at once on this instance
    (host.json queues: batchSize + newBatchThreshold = FETCH_CONCURRENCY), so the event loop stays free."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=ingestion_config().concurrency, thread_name_prefix="ingest")
        return _pool


def message_deps(started: float) -> MessageDeps:
    """A queue message's dependencies; the tenant's time budget counts from `started`."""
    return MessageDeps(context=lambda run_id: run_context(run_id, started),
                       leases=get_table_store().table(Table.INGEST_LEASES),
                       lease_seconds=queue_config().lease_seconds)


def table(which: Table) -> TableClient:
    return get_table_store().table(which)


def retention_config() -> RetentionConfig:
    return RetentionConfig.from_settings(settings())


@dataclass(frozen=True)
class Tables:
    alerts: TableClient
    feed: TableClient
    tenants: TableClient


def tables() -> Tables:
    store = get_table_store()
    return Tables(alerts=store.table(Table.ALERTS), feed=store.table(Table.ALERT_FEED),
                  tenants=store.table(Table.TENANTS))


def siem_token_key() -> bytes:
    """SIEM_TOKEN_KEY as bytes; a 503 problem when it is missing or malformed."""
    return token_key(lambda: SiemTokenKey.from_settings(settings()).key)


def pull_config() -> PullConfig:
    return PullConfig.from_settings(settings())


def payload_decoder() -> Callable[[dict[str, Any]], dict[str, Any]]:
    from shared.payload import decode_payload

    return decode_payload
