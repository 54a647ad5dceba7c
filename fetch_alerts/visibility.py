"""Per-tenant visibility lag: how long after its last update an alert version first reached us.

Microsoft documents no bound on when an alert or a new version of one shows up in the list APIs, so the
overlap (FETCH_OVERLAP_MINUTES) and the re-reads (fetch_alerts/reread.py) are tuned from this data. The
lag of a version is when we stored it (its first sighting: an older version is never stored) minus its
last update; it includes our polling interval, so it is an upper bound of the service's lag.

Only lags that mean something are counted: versions updated after the tenant became active, seen by a
regular pass of a tenant polled steadily (its previous run succeeded within the overlap, no backlog; after
an outage the lag would be ours) or found by a re-read (whatever a re-read finds was invisible to every
regular pass that covered its last update, so it is a real late arrival).

State on the Tenants row (`lagStats`, JSON, a few hundred bytes): per UTC hour of storing, for the last
25 hours, `[count, beyondOverlap, foundByReread, maxSeconds, {bucket: count}]` with geometric buckets
(ratio 1.25: percentiles are good to about 25%). The summary the tenant API shows (`lagSummary`, JSON) is
recomputed from it at every run: the last 24 hours' count, p50/p95/max, the late arrivals beyond the
overlap, and the current UTC day's late count for the once-a-day ops notice.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)

RATIO = 1.25
WINDOW_HOURS = 24
_KEEP_HOURS = 25


def _bucket(seconds: int) -> int:
    return 0 if seconds <= 1 else math.ceil(math.log(seconds) / math.log(RATIO))


def _upper(bucket: int) -> int:
    return round(RATIO ** bucket)


def _hour(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H")


def parse(text: Any) -> dict[str, list[Any]]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        data = json.loads(text)
        return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 5}
    except (ValueError, AttributeError):
        logger.warning("unreadable lag statistics ignored")
        return {}


def record(stats: dict[str, list[Any]], lags: list[int], now: datetime, overlap_seconds: int,
           *, reread: bool) -> None:
    """Add the lags (seconds) of versions stored now; `reread`: a re-read found them."""
    if not lags:
        return
    slot = stats.setdefault(_hour(now), [0, 0, 0, 0, {}])
    for lag in lags:
        slot[0] += 1
        slot[1] += lag > overlap_seconds
        slot[2] += reread
        slot[3] = max(slot[3], lag)
        key = str(_bucket(lag))
        slot[4][key] = slot[4].get(key, 0) + 1


def _prune(stats: dict[str, list[Any]], now: datetime) -> dict[str, list[Any]]:
    oldest = _hour(now - timedelta(hours=_KEEP_HOURS - 1))
    return {k: v for k, v in sorted(stats.items()) if k >= oldest}


def _percentile(buckets: dict[int, int], count: int, q: float, largest: int) -> int:
    rank = max(1, math.ceil(q * count))
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= rank:
            return min(_upper(bucket), largest)
    return largest


def summary(stats: dict[str, list[Any]], now: datetime, overlap_seconds: int) -> dict[str, Any]:
    first = _hour(now - timedelta(hours=WINDOW_HOURS - 1))
    today = now.astimezone(UTC).strftime("%Y%m%d")
    count = late = found = largest = day_late = 0
    buckets: dict[int, int] = {}
    for hour, (n, beyond, reread, biggest, hist) in stats.items():
        if hour.startswith(today):
            day_late += beyond
        if hour < first:
            continue
        count, late, found, largest = count + n, late + beyond, found + reread, max(largest, biggest)
        for key, value in hist.items():
            buckets[int(key)] = buckets.get(int(key), 0) + value
    return {"windowHours": WINDOW_HOURS, "count": count,
            "p50Seconds": _percentile(buckets, count, 0.5, largest) if count else None,
            "p95Seconds": _percentile(buckets, count, 0.95, largest) if count else None,
            "maxSeconds": largest if count else None, "overlapSeconds": overlap_seconds,
            "beyondOverlap": late, "foundByReread": found,
            "day": now.astimezone(UTC).strftime("%Y-%m-%d"), "dayBeyondOverlap": day_late,
            "at": now.astimezone(UTC).isoformat()}


def columns(previous: Any, lags: list[int], now: datetime, overlap_seconds: int, *,
            reread: bool = False) -> dict[str, Any]:
    """The Tenants columns `lagStats` and `lagSummary` after adding `lags`; {} when there is nothing to
    record or show (no write for tenants without data)."""
    stats = parse(previous)
    if not stats and not lags:
        return {}
    record(stats, lags, now, overlap_seconds, reread=reread)
    stats = _prune(stats, now)
    return {"lagStats": json.dumps(stats, separators=(",", ":")),
            "lagSummary": json.dumps(summary(stats, now, overlap_seconds), separators=(",", ":"))}
