"""The overall send rate cap: at most SEND_RATE_PER_MINUTE e-mails in ANY 60 seconds and
SEND_RATE_PER_DAY in any 24 hours, across every activity invocation and instance, so the mailbox's limits
are never hit. Exchange Online counts its limit (30 messages a minute per mailbox) per rolling minute,
not per clock minute: https://learn.microsoft.com/en-us/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#sending-limits
Sends over the cap are not made; the notification run carries them over to its next run.

A sliding-window log, not fixed windows: a count per clock minute, even with the previous minute weighted
in, lets more than the cap through in 60 s that straddle a minute boundary. The log holds, per window, how
many sends were granted in each short bucket of time (100 ms for the minute, 1 minute for the day). A grant
at bucket b counts every send recorded in buckets b - K .. b (K buckets make the window), so every send
of the last full window is counted, plus at most one bucket more: the cap holds in every window and frees
a slot at most one bucket late (the minute log also counts a second of margin, see SendRateCap).
Proof sketch: for any window [a, a + W], take the send s in it granted last; every other send in it lies
at or after s - W, hence in a bucket >= bucket(s) - K, and was counted when s was granted; so the window
holds at most the cap.

State: one Table Storage row (PartitionKey `rate`, RowKey `sliding`), both windows in it, replaced under
its ETag, so concurrent instances never grant the same slot twice and a grant is never counted in one
window but not the other. Instances use their own clocks (NTP-synced in Azure); a grant is never recorded
earlier than the latest one in the log, so the log itself never shows more than the cap in a window even
when clocks disagree, and a fast clock elsewhere only makes the others wait.

Slots given back: a send that never reached the server (refused connection, 421 before the message was
handed over, a refused recipient) does not count against the mailbox's limit, so its slot is returned.
`try_acquire` notes its grant for the calling thread; the transport settles each send against that note
(`settle_send`) and gives the slot back when the message was not submitted. The note is replaced by the
next `try_acquire`, and all slots of one grant share the same buckets, so a slot given back is always one
that no submitted send used.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient

from shared.settings import Settings, get_settings
from shared.tables import Missing, Outcome, update_row

logger = logging.getLogger(__name__)

PARTITION = "rate"
ROW = "sliding"
_MAX_CONFLICTS = 20
# A clock this far behind the log's latest grant is reported: its instance waits until it catches up.
_SKEW_WARNING_MS = 5_000

Buckets = dict[int, int]  # bucket index -> sends granted in it


@dataclass(frozen=True)
class Window:
    name: str  # the row's column holding this window's buckets
    seconds: int
    limit: int  # 0: no cap
    resolution_ms: int
    margin_ms: int = 0

    @property
    def span(self) -> int:
        """Buckets before the current one that a grant still counts."""
        return (self.seconds * 1000 + self.margin_ms) // self.resolution_ms


def encode(buckets: Buckets) -> str:
    """`index:count` pairs, each index but the first as the distance from the previous one (short rows)."""
    parts, previous = [], 0
    for index in sorted(buckets):
        parts.append(f"{index - previous}:{buckets[index]}")
        previous = index
    return ",".join(parts)


def decode(text: object) -> Buckets:
    buckets: Buckets = {}
    index = 0
    for part in str(text or "").split(","):
        if part:
            delta, count = part.split(":")
            index += int(delta)
            buckets[index] = int(count)
    return buckets


@dataclass(frozen=True)
class Grant:
    """Where `count` granted slots were recorded: the bucket per window name."""

    buckets: dict[str, int]
    count: int


class SendRateCap:
    """Grants send slots under every configured window."""

    def __init__(self, table: TableClient, *, per_minute: int, per_day: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = table
        # The mailbox counts its minute on its own clock, as messages arrive: one granted just as a slot frees
        # can arrive less than 60 s after the one that held the slot if that one was slow in transit. The
        # minute log counts a second more than a minute so that such jitter cannot show the mailbox more.
        windows = (Window("minute", 60, per_minute, 100, margin_ms=1000), Window("day", 86400, per_day, 60_000))
        self._windows = [w for w in windows if w.limit]
        self._clock = clock

    @classmethod
    def from_settings(cls, table: TableClient, settings: Settings | None = None) -> SendRateCap:
        from notify_mssp.config import SendCapConfig

        config = SendCapConfig.from_settings(settings or get_settings())
        return cls(table, per_minute=config.per_minute, per_day=config.per_day)

    def try_acquire(self, n: int) -> int:
        """How many of `n` sends may go now (0..n); the granted ones are counted at once."""
        _held.grant = None
        if not self._windows:
            return max(0, n)
        grant = self._update(lambda logs, now_ms: self._take(logs, now_ms, max(0, n)))
        granted = grant.count if grant else 0
        if grant and granted:
            _held.grant = _Held(self, grant, granted)
        if granted < n:
            logger.info("send rate cap: %d of %d sends granted now; the rest carries over", granted, n)
        return granted

    def give_back(self, grant: Grant, count: int = 1) -> None:
        """Return `count` slots of `grant` (sends that never reached the server)."""
        if not self._windows or count <= 0:
            return
        self._update(lambda logs, now_ms: self._return(logs, grant, count))

    def available(self) -> int | None:
        """Sends the cap would grant now without granting them; None when no cap is configured."""
        if not self._windows:
            return None
        logs, _ = self._read()
        now_ms = self._now_ms()
        return min(self._free(w, logs[w.name], self._bucket(w, logs[w.name], now_ms))[0] for w in self._windows)

    def recorded(self) -> dict[str, Buckets]:
        """The stored log per window (for operators and tests)."""
        return self._read()[0]

    # --- the log -------------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @staticmethod
    def _bucket(window: Window, buckets: Buckets, now_ms: int) -> int:
        here = now_ms // window.resolution_ms
        latest = max(buckets, default=here)
        if latest > here and (latest - here) * window.resolution_ms > _SKEW_WARNING_MS:
            logger.warning("send rate cap: this instance's clock is %.1f s behind the latest grant in the %s "
                           "log; it waits until it catches up", (latest - here) * window.resolution_ms / 1000,
                           window.name)
        return max(here, latest)

    @staticmethod
    def _free(window: Window, buckets: Buckets, bucket: int) -> tuple[int, Buckets]:
        """(slots free at `bucket`, the buckets still counted there)."""
        kept = {i: c for i, c in buckets.items() if i >= bucket - window.span and c > 0}
        return max(0, window.limit - sum(kept.values())), kept

    def _take(self, logs: dict[str, Buckets], now_ms: int, n: int) -> tuple[dict[str, Buckets], Grant] | None:
        at = {w.name: self._bucket(w, logs[w.name], now_ms) for w in self._windows}
        free = {w.name: self._free(w, logs[w.name], at[w.name]) for w in self._windows}
        count = min([n] + [room for room, _ in free.values()])
        if count == 0:
            return None
        updated = {}
        for name, (_, kept) in free.items():
            kept[at[name]] = kept.get(at[name], 0) + count
            updated[name] = kept
        return updated, Grant(at, count)

    def _return(self, logs: dict[str, Buckets], grant: Grant, count: int) -> tuple[dict[str, Buckets], Grant] | None:
        updated, returned = {}, 0
        for w in self._windows:
            buckets = dict(logs[w.name])
            index = grant.buckets.get(w.name)
            if index is not None and buckets.get(index, 0) > 0:  # not aged out of the log yet
                taken = min(count, buckets[index])
                returned = max(returned, taken)
                buckets[index] -= taken
                if not buckets[index]:
                    del buckets[index]
            updated[w.name] = buckets
        return (updated, Grant(grant.buckets, returned)) if returned else None

    def _read(self) -> tuple[dict[str, Buckets], str | None]:
        """Each window's buckets and the row's ETag (None when the row does not exist yet)."""
        try:
            entity = self._table.get_entity(PARTITION, ROW)
        except ResourceNotFoundError:
            return self._from_fixed_windows(), None
        return {w.name: decode(entity.get(w.name)) for w in self._windows}, entity.metadata["etag"]

    def _from_fixed_windows(self) -> dict[str, Buckets]:
        """The log seeded from the rows of the earlier fixed-window cap (RowKey = window name; columns
        `current` window index, `used`, `previousUsed`), each count put at the latest moment it can have
        happened, so an upgrade never frees slots that were spent."""
        logs: dict[str, Buckets] = {w.name: {} for w in self._windows}
        now_ms = self._now_ms()
        for w in self._windows:
            try:
                row = self._table.get_entity(PARTITION, w.name)
            except ResourceNotFoundError:
                continue
            width = w.seconds * 1000
            index, current = now_ms // width, int(row.get("current", -1))
            used, previous = int(row.get("used") or 0), int(row.get("previousUsed") or 0)
            if current == index:
                logs[w.name][now_ms // w.resolution_ms] = used
                logs[w.name][(current * width - 1) // w.resolution_ms] = previous
            elif current == index - 1:
                logs[w.name][(index * width - 1) // w.resolution_ms] = used
            logs[w.name] = {i: c for i, c in logs[w.name].items() if c > 0}
        return logs

    def _logs(self, row: dict[str, Any]) -> dict[str, Buckets]:
        """Each window's buckets in the row; a row without any (not created yet) starts from the rows of
        the earlier fixed-window cap."""
        if not any(w.name in row for w in self._windows):
            return self._from_fixed_windows()
        return {w.name: decode(row.get(w.name)) for w in self._windows}

    def _update(self, change: Callable[[dict[str, Buckets], int], tuple[dict[str, Buckets], Grant] | None]
                ) -> Grant | None:
        """Apply `change` to the row under its ETag, again on a conflict (up to _MAX_CONFLICTS: every send of
        every instance takes this one row); what it returned, None if it changed nothing (or the row stayed
        contended)."""
        granted: list[Grant] = []  # of the last attempt

        def apply(row: dict[str, Any]) -> dict[str, Any] | None:
            granted.clear()
            result = change(self._logs(row), self._now_ms())
            if result is None:
                return None
            updated, grant = result
            granted.append(grant)
            return {"PartitionKey": PARTITION, "RowKey": ROW, **{name: encode(b) for name, b in updated.items()}}

        def pause(attempt: int) -> None:
            # Another instance changed the log meanwhile: read it again. The jitter spreads out instances
            # that collided so they do not collide again in lockstep.
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311 - not for security

        update = update_row(self._table, PARTITION, ROW, apply, missing=Missing.CREATE, attempts=_MAX_CONFLICTS,
                            between_attempts=pause)
        if update.outcome is Outcome.CONTENDED:
            logger.warning("send rate cap: the log stayed contended; granting nothing now")
            return None
        return granted[0] if granted else None


# --- slots of sends that never reached the server ---------------------------------------------------------------


@dataclass
class _Held:
    cap: SendRateCap
    grant: Grant
    unsettled: int


_held = threading.local()


def settle_send(*, submitted: bool) -> None:
    """Called by the transport after each send: the send uses one slot of the calling thread's last grant;
    when the message was not submitted to the server, that slot is given back. Without a grant (the cap
    off, or no cap used by the caller) nothing happens."""
    held: _Held | None = getattr(_held, "grant", None)
    if held is None or held.unsettled <= 0:
        return
    held.unsettled -= 1
    if submitted:
        return
    try:
        held.cap.give_back(held.grant)
    except AzureError as exc:  # the slot stays spent: the cap errs on the side of the mailbox's limit
        logger.warning("send rate cap: giving back the slot of an unsent e-mail failed (%s)", type(exc).__name__)
