"""Builds what the ingestion triggers pass to the plain functions: the tick's context (tables, the alert API
client, the typed config), the retention tables and config, the SIEM pull API's tables, config and token key.
Everything is built at first use, never at import time (docs/ARCHITECTURE.md, invariant 6), so a missing
setting fails one invocation with a clear message. The alert API client is the one object kept between
invocations of a worker: its rate limiter's windows must hold across ticks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.data.tables import TableClient

from fetch_alerts.config import ApiCallConfig, IngestionConfig, PullConfig, RateLimits, RetentionConfig, SiemTokenKey
from fetch_alerts.http import ApiClient
from fetch_alerts.ingest import RunContext
from fetch_alerts.pull_request import token_key
from fetch_alerts.ratelimit import RateLimiter
from shared.alert_sources import ApiHosts
from shared.identity import get_tenant_tokens
from shared.settings import Settings, get_settings
from shared.tables import Table, get_table_store

_api: ApiClient | None = None
_api_lock = threading.Lock()


def settings() -> Settings:
    return get_settings()


def ingestion_config() -> IngestionConfig:
    return IngestionConfig.from_settings(settings())


def api_client(config: IngestionConfig) -> ApiClient:
    """One API client (session, limiter) per worker process, built at the first tick: limits hold across
    ticks."""
    global _api
    with _api_lock:
        if _api is None:
            current = settings()
            _api = ApiClient(ApiCallConfig.from_settings(current), get_tenant_tokens(),
                             RateLimiter(RateLimits.from_settings(current)), pool_size=config.concurrency * 2 + 4)
        return _api


def run_context(run_id: str) -> RunContext:
    """What every tenant run of one ingestion tick shares; the tick's time budget starts now."""
    config = ingestion_config()
    api = api_client(config)
    store = get_table_store()
    return RunContext(hosts=ApiHosts.from_settings(settings()), config=config, api=api,
                      alerts=store.table(Table.ALERTS),
                      feed=store.table(Table.ALERT_FEED), tenants=store.table(Table.TENANTS),
                      incidents=store.table(Table.INCIDENTS),
                      deadline=time.monotonic() + config.time_budget_seconds, run_id=run_id)


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
