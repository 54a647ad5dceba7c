"""Timestamps of the rows ingestion writes (the layouts are in fetch_alerts/STORAGE.md; the keys are
shared/alerts.py's). Timestamps are kept as integer ticks
(100 ns since the Unix epoch, Microsoft's precision) so comparisons never depend on how a service
happened to print the fraction.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,12}))?)?(Z|z|[+-]\d{2}:\d{2})$")

def stored_ns() -> int:
    return time.time_ns()


def parse_ticks(text: str) -> int:
    """Ticks of an ISO 8601 date-time with `Z` or an offset; ValueError when it is not one."""
    match = _ISO.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 date-time with a time zone: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=UTC)
    ticks = from_datetime(base) + int(((fraction or "") + "0000000")[:7])
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        ticks -= sign * (int(zone[1:3]) * 60 + int(zone[4:6])) * 60 * TICKS_PER_SECOND
    return ticks


def from_datetime(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def to_datetime(ticks: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ticks // 10)


def format_ticks(ticks: int) -> str:
    """`2026-11-27T08:01:02.1234567Z`: sortable, seven fraction digits."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:07d}Z"


def odata_literal(ticks: int) -> str:
    """A DateTimeOffset literal for `$filter` (unquoted, seven fraction digits, UTC)."""
    return format_ticks(ticks)


def minutes(n: int) -> int:
    return n * 60 * TICKS_PER_SECOND


def int_value(value: object) -> int | None:
    """An integer column as read back (azure-data-tables returns Int64 as an EntityProperty)."""
    inner = getattr(value, "value", value)
    if isinstance(inner, bool) or inner is None:
        return None
    try:
        return int(inner)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
