"""GET calls to the alert APIs with the tenant's token, rate limits, retries and typed failures.

One session serves every tenant of the process (connections are reused; shared/http_pool.py). A 429 waits for its
Retry-After; 5xx answers, timeouts, dropped connections and unreadable bodies are retried with exponential
backoff and full jitter, a bounded number of times; everything else is raised at once as the typed error
of shared.errors (the caller decides what a refusal means for the tenant).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import requests

from fetch_alerts.config import ApiCallConfig
from fetch_alerts.ratelimit import BudgetExhausted, RateLimiter
from shared.alert_sources import AlertSource, alert_request_headers
from shared.errors import (
    BadResponse,
    MicrosoftError,
    ServiceError,
    Throttled,
    from_api_response,
    from_transport,
    json_object,
)
from shared.http_pool import PooledSession
from shared.identity import TenantTokens

logger = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 30.0
_DEFAULT_RETRY_AFTER = 10.0


class ApiClient:
    """Alert API calls on behalf of tenants."""

    def __init__(self, config: ApiCallConfig, tokens: TenantTokens, limiter: RateLimiter,
                 pool_size: int = 32) -> None:
        self._tokens = tokens
        self._limiter = limiter
        self._timeout = config.timeout_seconds
        self._attempts = config.max_attempts
        self._backoff = config.backoff_ms / 1000.0
        self._session = PooledSession(pool_size)
        self.calls = 0

    def get(self, tenant_id: str, source: AlertSource, url: str, params: dict[str, str] | None,
            deadline: float) -> dict[str, Any]:
        """The JSON object of a successful GET; raises MicrosoftError subtypes or BudgetExhausted."""
        api = source.value
        last: MicrosoftError | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._pause(last, attempt, deadline)
            try:
                token = self._tokens.token(tenant_id, source)
            except (Throttled, ServiceError) as exc:
                last = exc
                continue
            self._limiter.acquire(tenant_id, source, deadline)
            headers = {**alert_request_headers(source), "Authorization": f"Bearer {token}"}
            self.calls += 1
            try:
                response = self._session.get(url, params=params, headers=headers, timeout=self._timeout)
            except requests.RequestException as exc:
                last = from_transport(tenant_id, api, exc)
                logger.info("tenant %s: %s (attempt %d)", tenant_id, last.message, attempt + 1)
                continue
            if response.status_code == 200:
                try:
                    return json_object(tenant_id, api, response)
                except BadResponse as exc:  # a truncated body is usually the connection, not the service
                    last = exc
                    logger.info("tenant %s: %s (attempt %d)", tenant_id, exc.message, attempt + 1)
                    continue
            error = from_api_response(tenant_id, api, response)
            if not isinstance(error, (Throttled, ServiceError)):
                raise error
            last = error
            logger.info("tenant %s: %s (attempt %d)", tenant_id, error.message, attempt + 1)
        assert last is not None
        raise last

    def _pause(self, last: MicrosoftError | None, attempt: int, deadline: float) -> None:
        if isinstance(last, Throttled):
            wait = last.retry_after if last.retry_after is not None else _DEFAULT_RETRY_AFTER
        else:
            wait = random.uniform(0, min(_MAX_BACKOFF_SECONDS, self._backoff * 2 ** (attempt - 1)))
        if time.monotonic() + wait > deadline:
            raise BudgetExhausted(f"a retry wait of {wait:.1f}s passes the time budget")
        time.sleep(wait)

    def close(self) -> None:
        self._session.close()
