"""Client-side rate limits of the alert APIs: per tenant and API, plus one limit across all tenants.

Microsoft documents Defender at 100 calls/min and 1,500/h and Graph security at 150 calls/min; the limits
come from settings. Windows are sliding (as the services count) and a little longer than the service's,
since a request is counted here when sent and there when it arrives.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from fetch_alerts.config import RateLimits
from shared.alert_sources import AlertSource

# Requests arrive a little after we count them; a slightly longer window keeps us under the service's.
_MARGIN_SECONDS = 1.0


class BudgetExhausted(Exception):
    """Waiting for a free slot (or a Retry-After) would run past the tick's time budget."""


@dataclass
class _Window:
    limit: int
    seconds: float
    sent: deque[float]

    def wait(self, now: float) -> float:
        while self.sent and self.sent[0] <= now - self.seconds:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[0] + self.seconds - now


class RateLimiter:
    """Blocks callers until a call fits every window that applies to it."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = {
            AlertSource.GRAPH: ((limits.graph_per_minute, 60.0),),
            AlertSource.DEFENDER: ((limits.defender_per_minute, 60.0), (limits.defender_per_hour, 3600.0)),
        }
        self._global = _Window(limits.global_per_minute, 60.0 + _MARGIN_SECONDS, deque())
        self._windows: dict[tuple[str, AlertSource], tuple[_Window, ...]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant_id: str, source: AlertSource, deadline: float) -> None:
        """Take a slot for one call, sleeping as needed; BudgetExhausted if that would pass `deadline`
        (a `time.monotonic()` value)."""
        while True:
            with self._lock:
                windows = self._tenant_windows(tenant_id, source)
                now = time.monotonic()
                wait = max([self._global.wait(now)] + [w.wait(now) for w in windows])
                if wait <= 0:
                    for window in (self._global, *windows):
                        window.sent.append(now)
                    return
            if now + wait > deadline:
                raise BudgetExhausted(f"rate limit wait of {wait:.1f}s passes the time budget")
            time.sleep(min(wait, 5.0))

    def _tenant_windows(self, tenant_id: str, source: AlertSource) -> tuple[_Window, ...]:
        key = (tenant_id, source)
        windows = self._windows.get(key)
        if windows is None:
            windows = tuple(_Window(limit, seconds + _MARGIN_SECONDS, deque())
                            for limit, seconds in self._limits[source])
            self._windows[key] = windows
        return windows
