"""Instants as integer ticks (100 ns since the Unix epoch), the precision of Microsoft's timestamps.

Graph and Defender print DateTimeOffset values with up to seven fractional digits; keeping ticks as
integers lets `$filter` compare them at full precision and lets the store sort cheaply.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time

TICKS_PER_SECOND = 10_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# .NET ticks (since 0001-01-01) at the Unix epoch; Defender alert ids embed creation time in them.
DOTNET_EPOCH_TICKS = 621_355_968_000_000_000

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,12}))?)?(Z|z|[+-]\d{2}:\d{2})$"
)


def from_datetime(value: dt.datetime) -> int:
    """Ticks of an aware datetime (naive ones are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def parse_iso(text: str) -> int:
    """Ticks of an ISO 8601 timestamp with `Z` or an offset; fractions beyond 7 digits are truncated."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO 8601 date-time with time zone: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    base = dt.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=dt.UTC
    )
    ticks = from_datetime(base) + int(((fraction or "") + "0000000")[:7])
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset_minutes = int(zone[1:3]) * 60 + int(zone[4:6])
        ticks -= sign * offset_minutes * 60 * TICKS_PER_SECOND
    return ticks


def format_ticks(ticks: int) -> str:
    """`2025-06-02T08:15:04.1234567Z`: UTC with seven fractional digits, as Graph prints them."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    return f"{_second(seconds)}.{fraction:07d}Z"


@functools.lru_cache(maxsize=1 << 16)
def _second(seconds: int) -> str:
    # Rendering prints many timestamps per alert; formatting each whole second once keeps pages fast.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_ticks_seconds(ticks: int) -> str:
    """`2025-06-02T08:15:04Z`: whole seconds, for error `date` fields."""
    stamp = _EPOCH + dt.timedelta(seconds=ticks // TICKS_PER_SECOND)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}Z"


def dotnet_ticks(ticks: int) -> int:
    return ticks + DOTNET_EPOCH_TICKS
