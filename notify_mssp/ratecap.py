"""The overall send rate cap (#5): at most SEND_RATE_PER_MINUTE e-mails a minute and SEND_RATE_PER_DAY a
day, across every activity invocation and instance, so the mailbox's limits (Exchange Online: about 30
messages a minute, 10,000 recipients a day) are never hit. Sends over the cap are not made; the notification
run carries them over to its next run.

State lives in the SendRate table (PartitionKey `rate`, RowKey `minute` and `day`), one row per window
with the counts of the current and previous window, updated under its ETag so concurrent callers never
grant the same slot twice. The rolling window is approximated the usual way: the previous window's count
weighs by how much of it still overlaps the last window length.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

PARTITION = "rate"
_MAX_CONFLICTS = 20


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int
    limit: int  # 0: no cap


class SendRateCap:
    """Grants send slots under every configured window."""

    def __init__(self, table: TableClient, *, per_minute: int, per_day: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._windows = [w for w in (Window("minute", 60, per_minute), Window("day", 86400, per_day)) if w.limit]
        self._clock = clock

    @classmethod
    def from_settings(cls, table: TableClient, settings: Settings | None = None) -> SendRateCap:
        current = settings or get_settings()
        return cls(table, per_minute=int(current.get("SEND_RATE_PER_MINUTE")),
                   per_day=int(current.get("SEND_RATE_PER_DAY")))

    def try_acquire(self, n: int) -> int:
        """How many of `n` sends may go now (0..n); the granted ones are counted at once."""
        granted = max(0, n)
        for window in self._windows:  # the minute first: it only over-counts when the day cap binds
            if granted == 0:
                break
            granted = self._acquire(window, granted)
        if granted < n:
            logger.info("send rate cap: %d of %d sends granted now; the rest carries over", granted, n)
        return granted

    def available(self) -> int | None:
        """Sends the cap would grant now without granting them; None when no cap is configured."""
        if not self._windows:
            return None
        return min(self._room(w, self._read(w)[0])[0] for w in self._windows)

    def _read(self, window: Window) -> tuple[dict[str, object], str | None]:
        """The window's row and its ETag (None when the row does not exist yet)."""
        try:
            entity = self._table.get_entity(PARTITION, window.name)
        except ResourceNotFoundError:
            return {"PartitionKey": PARTITION, "RowKey": window.name, "current": -1, "used": 0,
                    "previousUsed": 0}, None
        return dict(entity), entity.metadata["etag"]

    def _room(self, window: Window, row: dict[str, object]) -> tuple[int, dict[str, object]]:
        """(slots free now, the row rolled to the current window)."""
        now = self._clock()
        index = int(now // window.seconds)
        current = int(row.get("current", -1))  # type: ignore[call-overload]
        used = int(row.get("used") or 0)  # type: ignore[call-overload]
        previous = int(row.get("previousUsed") or 0)  # type: ignore[call-overload]
        if index != current:
            previous = used if index == current + 1 else 0
            used = 0
        overlap = 1.0 - (now % window.seconds) / window.seconds
        free = window.limit - used - math.ceil(previous * overlap)
        rolled = {**row, "current": index, "used": used, "previousUsed": previous}
        return max(0, free), rolled

    def _acquire(self, window: Window, n: int) -> int:
        for _ in range(_MAX_CONFLICTS):
            row, etag = self._read(window)
            free, rolled = self._room(window, row)
            grant = min(n, free)
            if grant == 0:
                return 0
            rolled["used"] = int(rolled["used"]) + grant  # type: ignore[call-overload]
            try:
                if etag is None:
                    self._table.create_entity(rolled)
                else:
                    self._table.update_entity(rolled, mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
                return grant
            except (ResourceModifiedError, ResourceExistsError):
                continue  # another sender took slots meanwhile: count again
        logger.warning("send rate cap: the %s window stayed contended; granting nothing now", window.name)
        return 0
