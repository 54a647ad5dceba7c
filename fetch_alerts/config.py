"""Typed settings of the ingestion flow: frozen config objects built in fetch_alerts.wiring from the settings
registry (shared.settings.SETTINGS holds every name, default and parser)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings, load_config, setting


@dataclass(frozen=True)
class RateLimits:
    """Alert API calls allowed per tenant and across tenants (fetch_alerts.ratelimit)."""

    graph_per_minute: int = setting("GRAPH_CALLS_PER_MINUTE")
    defender_per_minute: int = setting("DEFENDER_CALLS_PER_MINUTE")
    defender_per_hour: int = setting("DEFENDER_CALLS_PER_HOUR")
    global_per_minute: int = setting("GLOBAL_API_CALLS_PER_MINUTE")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RateLimits:
        return load_config(cls, settings)


@dataclass(frozen=True)
class ApiCallConfig:
    """How one alert API call is made and retried (fetch_alerts.http)."""

    timeout_seconds: int = setting("HTTP_TIMEOUT_SECONDS")
    max_attempts: int = setting("FETCH_MAX_ATTEMPTS")
    backoff_ms: int = setting("FETCH_BACKOFF_MS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ApiCallConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class IngestionConfig:
    """One tenant's ingestion (a queue message): the instance's parallelism, the budget, windows and page sizes
    (fetch_alerts.runner, .ingest, .reread, .sources)."""

    concurrency: int = setting("FETCH_CONCURRENCY")
    time_budget_seconds: int = setting("FETCH_TIME_BUDGET_SECONDS")
    overlap_minutes: int = setting("FETCH_OVERLAP_MINUTES")
    lookback_days: int = setting("FETCH_LOOKBACK_DAYS")
    max_pages_per_tenant: int = setting("FETCH_MAX_PAGES_PER_TENANT")
    reread_pages_per_tick: int = setting("FETCH_REREAD_PAGES_PER_TICK")
    graph_page_size: int = setting("FETCH_GRAPH_PAGE_SIZE")
    defender_page_size: int = setting("FETCH_DEFENDER_PAGE_SIZE")
    portal_host: str = setting("PORTAL_HOST")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> IngestionConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class QueueConfig:
    """Ingestion on a queue (fetch_alerts.tenant_queue, .lease, .runner): the messages' time-to-live, how long
    the timer waits for its tick's messages, the per-tenant lease."""

    message_ttl_seconds: int = setting("FETCH_MESSAGE_TTL_SECONDS")
    drain_wait_seconds: int = setting("FETCH_DRAIN_WAIT_SECONDS")
    lease_seconds: int = setting("FETCH_LEASE_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> QueueConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class RetentionConfig:
    """The daily clean-up (fetch_alerts.retention)."""

    retention_days: int = setting("RETENTION_DAYS")
    budget_seconds: int = setting("FETCH_TIME_BUDGET_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetentionConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class PullConfig:
    """The SIEM pull API's feed reader (fetch_alerts.feed_reader)."""

    settle_seconds: int = setting("SIEM_FEED_SETTLE_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PullConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class SiemTokenKey:
    """The key of the pull API's continuation tokens, read apart from PullConfig: without it the API answers
    503 (fetch_alerts.pull_request.token_key)."""

    key: str = setting("SIEM_TOKEN_KEY")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SiemTokenKey:
        return load_config(cls, settings)
