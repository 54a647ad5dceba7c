"""Client-side rate limits of the alert APIs: per tenant and API, plus one limit across all tenants.

Microsoft documents Defender at 100 calls/min and 1,500/h and Graph security at 150 calls/min; the limits
come from settings. Windows are sliding (as the services count) and a little longer than the service's,
since a request is counted here when sent and there when it arrives.

A tenant's windows are dropped once every call in them has aged out (an empty window and a new one are the
same), in a sweep every SWEEP_EVERY calls: a process that ingests tenants from a shared queue sees, over its
life, every tenant of the deployment, and would otherwise keep windows for all of them (docs/CAPACITY.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fetch_alerts.config import RateLimits
from shared.alert_sources import AlertSource

# Requests arrive a little after we count them; a slightly longer window keeps us under the service's.
_MARGIN_SECONDS = 1.0
SWEEP_EVERY = 1024  # calls between sweeps of the windows of tenants with no call left in them


class BudgetExhausted(Exception):
    """Waiting for a free slot (or a Retry-After) would run past the tick's time budget."""


@dataclass
class _Window:
    limit: int
    seconds: float
    sent: deque[float]

    def expire(self, now: float) -> bool:
        """Forget the calls that left the window; True when none is left."""
        while self.sent and self.sent[0] <= now - self.seconds:
            self.sent.popleft()
        return not self.sent

    def wait(self, now: float) -> float:
        self.expire(now)
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[0] + self.seconds - now


class RateLimiter:
    """Blocks callers until a call fits every window that applies to it."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {
            AlertSource.GRAPH: ((limits.graph_per_minute, 60.0),),
            AlertSource.DEFENDER: ((limits.defender_per_minute, 60.0), (limits.defender_per_hour, 3600.0)),
        }
        self._global = _Window(limits.global_per_minute, 60.0 + _MARGIN_SECONDS, deque())
        self._windows: dict[tuple[str, AlertSource], tuple[_Window, ...]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._since_sweep = 0

    def acquire(self, tenant_id: str, source: AlertSource, deadline: float) -> None:
        """Take a slot for one call, sleeping as needed; BudgetExhausted if that would pass `deadline`
        (a value of the limiter's clock, time.monotonic() unless given)."""
        while True:
            with self._lock:
                windows = self._tenant_windows(tenant_id, source)
                now = self._clock()
                wait = max([self._global.wait(now)] + [w.wait(now) for w in windows])
                if wait <= 0:
                    for window in (self._global, *windows):
                        window.sent.append(now)
                    self._since_sweep += 1
                    if self._since_sweep >= SWEEP_EVERY:
                        self._sweep(now)
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

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        idle = [key for key, windows in self._windows.items() if all([w.expire(now) for w in windows])]
        for key in idle:
            del self._windows[key]

    def tracked(self) -> int:
        """How many (tenant, API) pairs this limiter keeps windows for."""
        with self._lock:
            return len(self._windows)
