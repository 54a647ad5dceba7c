"""Per-tenant ingestion leases: never two instances on one tenant at once (docs/ARCHITECTURE.md, "Ingestion on
a queue").

A tenant's message can be delivered twice while its first delivery still runs: queue delivery is at least
once, a message becomes visible again when its visibility timeout passes without the host renewing it (a
stalled instance), and two ticks that overlap enqueue the tenant twice
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages,
"Concurrency"). Two passes of one tenant at once would not lose anything (every write is conditional), but
they would double its API calls against Microsoft's per-tenant limits and race on its cursor and pass state.

The lease is one row per tenant in the IngestLeases table, PartitionKey `lease`, RowKey the tenant id, with
`owner` (the invocation that holds it), `expiresAt`, `acquiredAt`, `renewedAt` and, for the logs' sake,
`messageId` and `runId`. Only fetch_alerts uses the table, so the module lives here (docs/ARCHITECTURE.md,
"Who owns a table's keys").

- acquire: create the row (an insert, which fails when the row exists: a lease released deletes its row, so the
  common case is one write); when it exists, read it, and when it has expired, replace it under its ETag (which
  fails when another took it first). A lease held by someone else until a later time is not taken: the message
  is a duplicate.
- renew: replace the row under the ETag this holder last wrote, with a later expiry; a failed condition means
  the lease was lost (it expired and another took it), and the pass stops before its next write.
- release: delete the row under that ETag (a lease another took meanwhile is left alone).

Expiry times are the writing instance's clock (UTC); instances' clocks agree far better than the lease's
third that a renewal leaves as slack. `Heartbeat` renews every third of FETCH_LEASE_SECONDS on its own
thread and sets the pass's `lost` event when a renewal finds the lease taken, or when renewals kept failing
(storage unreachable) for two thirds of the lease by this instance's monotonic clock: the holder gives up a
third of a lease before anyone else may take it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.tables import CONFLICT_ATTEMPTS, Missing, Outcome, delete_if_unchanged, update_row, write_if_unchanged

logger = logging.getLogger(__name__)

LEASE_PARTITION = "lease"


@dataclass
class Lease:
    """A lease this holder wrote: the ETag of its last write, and until when (time.monotonic()) it is ours
    for sure without another renewal."""

    table: TableClient
    tenant_id: str
    owner: str
    seconds: float
    etag: str
    valid_until: float
    # Taken over from a holder whose lease ran out without being released: that invocation died or lost storage
    # mid-pass, as for a message delivered again (fetch_alerts/runner.py sets the marker for both).
    took_over: bool = False

    def held(self, clock: Any = time.monotonic) -> bool:
        return clock() < self.valid_until


def _valid_until(written_from: float, seconds: float) -> float:
    """Until when a lease written from `written_from` (time.monotonic()) is ours for sure: two thirds of its
    length, so a holder whose renewals fail stops a third of the lease before another may take it over."""
    return written_from + seconds * 2 / 3


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def holder(row: dict[str, Any] | None, now: datetime) -> tuple[str, datetime] | None:
    """(owner, expiry) of the lease a row records when it is still running at `now`; None when it is free."""
    if not row:
        return None
    expires = _aware(row.get("expiresAt"))
    owner = str(row.get("owner") or "")
    if not owner or expires is None or expires <= now:
        return None
    return owner, expires


class LeaseUnavailable(RuntimeError):
    """The lease could be neither taken nor found held (its row kept changing without a holder, or the table is
    gone): a storage fault, which fails the message so that the host retries it."""


def acquire(table: TableClient, tenant_id: str, owner: str, seconds: float, **details: Any) -> Lease | None:
    """The tenant's lease for `owner`, or None when another holds it (or took it as we tried)."""
    started = time.monotonic()
    now = datetime.now(UTC)

    taken_from: list[str] = [""]  # the expired holder the last attempt replaced, if any

    def take(row: dict[str, Any]) -> dict[str, Any] | None:
        held = holder(row, now)
        if held is not None and held[0] != owner:
            return None
        taken_from[0] = str(row.get("owner") or "") if held is None else ""
        return {"PartitionKey": LEASE_PARTITION, "RowKey": tenant_id, "owner": owner,
                "expiresAt": now + timedelta(seconds=seconds), "acquiredAt": now, "renewedAt": now, **details}

    # Insert first: a released lease leaves no row, so one write takes it; only a conflict costs a read.
    keys = {"PartitionKey": LEASE_PARTITION, "RowKey": tenant_id}
    update = update_row(table, LEASE_PARTITION, tenant_id, take, missing=Missing.CREATE, known=(keys, None),
                        attempts=CONFLICT_ATTEMPTS + 1)
    if update.outcome is Outcome.UNCHANGED:
        return None  # take() saw another's running lease
    if update.outcome is Outcome.CONTENDED or update.etag is None:
        if current(table, tenant_id) is not None:
            return None  # others kept taking it: one of them holds it now
        raise LeaseUnavailable(f"tenant {tenant_id}: the ingestion lease could not be written")
    took_over = bool(taken_from[0]) and taken_from[0] != owner
    if took_over:
        logger.warning("tenant %s: ingestion lease of %s ran out without being released; taken over", tenant_id,
                       taken_from[0])
    return Lease(table, tenant_id, owner, seconds, update.etag, _valid_until(started, seconds), took_over)


def current(table: TableClient, tenant_id: str) -> tuple[str, datetime] | None:
    """Who holds the tenant's lease and until when; None when nobody does."""
    try:
        row = dict(table.get_entity(LEASE_PARTITION, tenant_id))
    except ResourceNotFoundError:
        return None
    return holder(row, datetime.now(UTC))


def renew(lease: Lease) -> bool:
    """Extend the lease; False when it was lost (another holds it now, or it is gone)."""
    started = time.monotonic()
    now = datetime.now(UTC)
    row = {"PartitionKey": LEASE_PARTITION, "RowKey": lease.tenant_id, "owner": lease.owner,
           "expiresAt": now + timedelta(seconds=lease.seconds), "renewedAt": now}
    etag = write_if_unchanged(lease.table, row, lease.etag, mode=UpdateMode.MERGE)
    if etag is None:
        return False
    lease.etag, lease.valid_until = etag, _valid_until(started, lease.seconds)
    return True


def release(lease: Lease) -> None:
    """Give the lease up; a lease another took meanwhile, or a storage failure, is left to expire."""
    try:
        delete_if_unchanged(lease.table, LEASE_PARTITION, lease.tenant_id, lease.etag)
    except ResourceNotFoundError:
        pass
    except AzureError as exc:
        logger.warning("tenant %s: lease not released (%s); it expires by itself", lease.tenant_id,
                       type(exc).__name__)


class Heartbeat:
    """Renews `lease` every third of its length on a thread of its own until stopped; sets `lost` when a
    renewal finds the lease taken, or when the lease ran out before any renewal got through."""

    def __init__(self, lease: Lease, lost: threading.Event) -> None:
        self.lease = lease
        self.lost = lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{lease.tenant_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.lease.seconds / 3
        while not self._stop.wait(interval):
            try:
                if not renew(self.lease):
                    logger.warning("tenant %s: ingestion lease lost to another holder", self.lease.tenant_id)
                    self.lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - storage, or anything else: the lease may be running out
                if not self.lease.held():
                    logger.warning("tenant %s: ingestion lease ran out; renewals failed (%s)", self.lease.tenant_id,
                                   type(exc).__name__)
                    self.lost.set()
                    return
                logger.info("tenant %s: ingestion lease renewal failed (%s); retried", self.lease.tenant_id,
                            type(exc).__name__)
