"""HTTP sessions for the clients that the threads of a worker share (Table Storage, Entra, the alert APIs).

Each session keeps `pool_size` connections per host (requests' HTTPAdapter `pool_maxsize`; its default, 10, is
what azure-core's own session uses). A pool smaller than the threads using it at once closes the connections
it cannot keep ("Connection pool is full, discarding connection") and the next requests open new ones, so
every pool here is sized from FETCH_CONCURRENCY, the tenants an instance ingests at once (`pool_size`).

The environment's proxy and CA bundle settings (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE) still apply, as with any requests session, but are read once per origin instead of at every
request: requests walks the whole environment twice per request to find them, and app settings are
environment variables that stay as they are for the life of the worker (changing an app setting restarts the
app: https://learn.microsoft.com/azure/azure-functions/functions-app-settings).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Threads of a worker's other functions that can share a client with ingestion: the Durable activities
# (host.json durableTask.maxConcurrentActivityFunctions) and the HTTP and timer functions.
OTHER_FUNCTIONS = 16
_ORIGINS = 256  # environment settings remembered per session (origins it talked to); more starts afresh


def pool_size(concurrency: int, per_tenant: int = 1) -> int:
    """Connections to keep per host: `per_tenant` requests at once for each of the `concurrency` tenants
    being ingested, plus the other functions' threads."""
    return max(1, concurrency) * max(1, per_tenant) + OTHER_FUNCTIONS


# urllib3 retries nothing itself, follows no redirect and answers every status, as azure-core's
# RequestsTransport configures the session it builds for itself (its _init_session).
AZURE_CORE_RETRIES = Retry(total=False, redirect=False, raise_on_status=False)


class PooledSession(requests.Session):
    """A requests session with `pool_size` connections per host and no retries of its own (the callers retry
    with their own policy: azure-core's retry policy, the alert API client's backoff). `retries` is the
    adapter's `max_retries`: 0 (the default) makes every transport failure a requests exception; a session
    given to an azure-core transport takes AZURE_CORE_RETRIES, as azure-core's own session does."""

    def __init__(self, pool_size: int, *, retries: int | Retry = 0) -> None:
        super().__init__()
        self.pool_size = pool_size
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=retries)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._environment: dict[tuple[Any, ...], Any] = {}
        self._environment_lock = threading.Lock()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        """requests' own merge, remembered per origin and arguments (see the module's docstring)."""
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url.decode() if isinstance(url, bytes) else str(url or ""))
        key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), proxies is None, stream,
               verify, tuple(cert) if isinstance(cert, list) else cert)
        merged = self._environment.get(key)
        if merged is None:
            # requests adds the environment's proxies into the mapping it is given: give it a copy.
            merged = super().merge_environment_settings(url, dict(proxies) if proxies is not None else None,
                                                        stream, verify, cert)
            with self._environment_lock:
                if len(self._environment) >= _ORIGINS:
                    self._environment.clear()
                self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}
