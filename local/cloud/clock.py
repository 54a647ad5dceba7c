"""Cloud time for the local Microsoft cloud: real time plus an offset that tests can advance.

Alert streams, ingestion lag and consent propagation run on cloud time so that a test covers hours of
traffic in seconds. Access tokens use real time, because azure-identity checks their expiry against
the real clock of the client machine.
"""

from __future__ import annotations

import datetime as dt


class CloudClock:
    """Real UTC time shifted by an offset that only ever grows."""

    def __init__(self) -> None:
        self._offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._offset

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    def advance(self, seconds: float) -> dt.datetime:
        """Move cloud time forward; time never goes back, as alert ordering relies on it."""
        if seconds < 0:
            raise ValueError("advance_seconds must not be negative")
        self._offset += dt.timedelta(seconds=seconds)
        return self.now()
