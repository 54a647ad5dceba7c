"""Ingestion on a queue (docs/ARCHITECTURE.md, "Ingestion on a queue"): the timer schedules, the queue trigger
ingests one tenant per message.

`schedule_tick` is the timer's part: it lists the active tenants, least recently attempted first (a tick
whose messages expire before every tenant was reached does not always starve the same tenants), and enqueues
one message per tenant (fetch_alerts.tenant_queue). `run_message` is the `ingest_tenant` trigger's part, run
on a worker thread: it parses the message, takes the tenant's lease (fetch_alerts.lease), runs the tenant's
regular pass (fetch_alerts.ingest) and then, when that pass completed, its due re-reads (fetch_alerts.reread)
within the message's time budget, and releases the lease. Late-visible alerts are caught without delaying any
other tenant's regular pass: each tenant is a message of its own.

What completes a message without work (logged, never retried): a message that is not ours or names a tenant
that is no longer active, a tenant whose lease another invocation holds (a duplicate delivery), and a tenant
skipped while this process's MSSP credential is broken (`MsspCircuit`); the next tick enqueues the tenant
again. What fails it, so that the host retries it and after maxDequeueCount moves it to the poison queue
(`ingest_poison` records the operational notice): storage unreachable for the lease or the tenant row, storage
failing under the tenant's pass or re-reads (a dropped connection, a 5xx: fetch_alerts.ingest.storage_unavailable,
which is not the tenant's failure and records nothing on it), or a failure that ingest_tenant could not even
record on the tenant.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from fetch_alerts import lease as leases
from fetch_alerts.cursor import TenantRow
from fetch_alerts.ingest import (
    RunContext,
    StorageUnavailable,
    TenantOutcome,
    close_mssp_incident,
    ingest_tenant,
    storage_unavailable,
)
from fetch_alerts.reread import RereadOutcome, first_clocks, reread_tenant
from fetch_alerts.tenant_queue import Enqueued, MalformedMessage, TenantMessage, enqueue_tenants
from shared.incidents import record_poisoned_ingestion
from shared.tenants import TENANT_PARTITION, Tenant, TenantRegistry, TenantStatus

logger = logging.getLogger(__name__)

MSSP_PAUSE_SECONDS = 60.0  # after the MSSP credential failed, this process skips tenants this long
CLOSE_EVERY_SECONDS = 60.0  # a success closes the MSSP credential incident at most this often per process


# --- the timer: schedule the tick ----------------------------------------------------------------------------


@dataclass
class TickSummary:
    run_id: str
    tenants: int = 0
    enqueued: Enqueued = field(default_factory=Enqueued)
    drained: bool | None = None  # None: not waited for
    wait_seconds: float = 0.0


def active_tenants(table: TableClient) -> list[str]:
    """Every active tenant's id, least recently attempted first."""
    found = TenantRegistry(table).active_with_etags()
    found.sort(key=lambda item: str(item[0].get("lastAttempt") or ""))
    return [str(row["RowKey"]).lower() for row, _ in found]


def schedule_tick(tenants: TableClient, queue: QueueClient, run_id: str, *, ttl_seconds: int) -> TickSummary:
    """One message per active tenant on the ingestion queue."""
    ids = active_tenants(tenants)
    summary = TickSummary(run_id, tenants=len(ids))
    summary.enqueued = enqueue_tenants(queue, ids, run_id, ttl_seconds=ttl_seconds)
    if summary.enqueued.failed:
        logger.error("fetch_alerts %s: %d of %d tenants were not enqueued (storage); they are enqueued again next "
                     "tick", run_id, summary.enqueued.failed, len(ids))
    logger.info("fetch_alerts %s: %d tenants enqueued in %.1fs", run_id, summary.enqueued.sent,
                summary.enqueued.seconds)
    return summary


# --- the queue trigger: one tenant ---------------------------------------------------------------------------


class MsspCircuit:
    """This process's view of the MSSP's own credential, so that one instance does not ask Entra for a token
    (and fail) for every tenant's message while the credential is broken: after a failure, messages are
    completed without work for MSSP_PAUSE_SECONDS (their tenants are enqueued again next tick). It also
    spaces out closing the credential incident: a success closes it at most every CLOSE_EVERY_SECONDS, so a
    healthy app does not read the incident row once per tenant. Both are only this process's pacing; the
    incident itself is the shared record (shared/incidents.py)."""

    def __init__(self, pause_seconds: float = MSSP_PAUSE_SECONDS, close_every: float = CLOSE_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pause, self._close_every, self._clock = pause_seconds, close_every, clock
        self._broken_until = float("-inf")
        self._closed_at = float("-inf")
        self._lock = threading.Lock()

    def broken(self) -> bool:
        return self._clock() < self._broken_until

    def trip(self) -> None:
        with self._lock:
            self._broken_until = self._clock() + self._pause

    def close_due(self) -> bool:
        """True at most once per CLOSE_EVERY_SECONDS, and never while broken: then the caller closes."""
        with self._lock:
            now = self._clock()
            if now < self._broken_until or now - self._closed_at < self._close_every:
                return False
            self._closed_at = now
            return True


CIRCUIT = MsspCircuit()


@dataclass(frozen=True)
class Delivery:
    """One delivery of a message, as the trigger got it."""

    body: bytes | str
    message_id: str
    dequeue_count: int
    invocation_id: str


@dataclass
class MessageOutcome:
    tenant_id: str = ""
    result: str = ""  # what the message ended as: see run_message
    regular: TenantOutcome | None = None
    reread: RereadOutcome | None = None


@dataclass
class MessageDeps:
    """What run_message needs: the context of the tenant's run (built when the lease is held; its time budget
    starts at the trigger's start), the lease table and its length."""

    context: Callable[[str], RunContext]
    leases: TableClient
    lease_seconds: float
    circuit: MsspCircuit = CIRCUIT


def run_message(delivery: Delivery, deps: MessageDeps) -> MessageOutcome:
    """Ingest the tenant a message names. `result` is `malformed`, `mssp_paused`, `duplicate`, `not_active`,
    `complete`, `continues` (a backlog left for the next tick), `failed <kind>` (recorded on the tenant) or
    `lease_lost`; every one of them completes the message. An exception (storage) fails it; the log line of the
    delivery's end names it `storage_unavailable` when storage failed in transit or answered 5xx."""
    try:
        message = TenantMessage.parse(delivery.body)
    except MalformedMessage as exc:
        logger.warning("ingestion message %s dropped: %s", delivery.message_id, exc)
        return MessageOutcome(result="malformed")
    tenant_id = message.tenant_id
    outcome = MessageOutcome(tenant_id)
    if deps.circuit.broken():
        logger.info("tenant %s: skipped (message %s): the MSSP credential failed on this instance moments ago; "
                    "the tenant is enqueued again next tick", tenant_id, delivery.message_id)
        outcome.result = "mssp_paused"
        return outcome
    lease = leases.acquire(deps.leases, tenant_id, delivery.invocation_id, deps.lease_seconds,
                           messageId=delivery.message_id, runId=message.run_id)
    if lease is None:
        held = leases.current(deps.leases, tenant_id)
        logger.info("tenant %s: duplicate message %s (run %s, dequeue %d) completed without work: another "
                    "invocation (%s) holds the tenant's ingestion lease", tenant_id, delivery.message_id,
                    message.run_id, delivery.dequeue_count, held[0] if held else "just released")
        outcome.result = "duplicate"
        return outcome
    started = time.monotonic()
    logger.info("tenant %s: ingestion started (message %s, dequeue %d, invocation %s, run %s)", tenant_id,
                delivery.message_id, delivery.dequeue_count, delivery.invocation_id, message.run_id)
    try:
        _ingest(deps, lease, message, outcome, redelivered=delivery.dequeue_count > 1 or lease.took_over)
    except Exception as exc:
        if isinstance(exc, StorageUnavailable):  # what the pass or re-read did before, for the line below
            if isinstance(exc.outcome, TenantOutcome):
                outcome.regular = exc.outcome
            elif isinstance(exc.outcome, RereadOutcome):
                outcome.reread = exc.outcome
        if storage_unavailable(exc):
            outcome.result = "storage_unavailable"
        raise
    finally:
        leases.release(lease)
        regular, reread = outcome.regular, outcome.reread
        logger.info("tenant %s: ingestion ended (message %s, invocation %s): %s, %d calls, %d alert versions "
                    "stored, %d obligations, re-reads %d calls, %d versions stored, %.1fs", tenant_id,
                    delivery.message_id, delivery.invocation_id, outcome.result or "failed (exception)",
                    regular.calls if regular else 0, regular.stored if regular else 0,
                    (regular.obligations if regular else 0) + (reread.obligations if reread else 0),
                    reread.calls if reread else 0, reread.stored if reread else 0, time.monotonic() - started)
    return outcome


def _ingest(deps: MessageDeps, lease: leases.Lease, message: TenantMessage, outcome: MessageOutcome, *,
            redelivered: bool = False) -> None:
    ctx = deps.context(message.run_id)
    tenant_id = message.tenant_id
    found = _active_row(ctx.tenants, tenant_id)  # storage down raises: the host retries the message
    if found is None:
        logger.info("tenant %s: not active any more; message completed without work", tenant_id)
        outcome.result = "not_active"
        return
    row, etag = found
    tenant = TenantRow(ctx.tenants, tenant_id, etag, row)
    if redelivered:
        # The delivery before this one died or failed mid-pass, possibly between storing a page's obligations and
        # the marker write after them, with a notification run clearing the marker meanwhile. Stored pages are
        # found stored again and set no marker, so set it now: a marker set for nothing costs one sweep. The
        # same holds when this delivery took over a lease that ran out unreleased, whatever its dequeue count:
        # in Azure a killed instance's message stays invisible for 10 minutes and may expire (its TTL is one
        # tick) before it comes back, so the tenant's next message is a first delivery.
        tenant.set_marker()
    with leases.Heartbeat(lease, ctx.lease_lost):
        regular = outcome.regular = ingest_tenant(ctx, tenant, on_complete=first_clocks)
        if regular.error == "mssp_credential":
            deps.circuit.trip()
        if regular.complete and not regular.error and not ctx.mssp_broken.is_set() \
                and time.monotonic() < ctx.deadline and not ctx.lease_lost.is_set():
            outcome.reread = reread_tenant(ctx, tenant)  # reads the row again only when a re-read is due
    if regular.error:
        outcome.result = regular.error if regular.error == "lease_lost" else f"failed {regular.error}"
    elif outcome.reread is not None and outcome.reread.error == "lease_lost":
        outcome.result = "lease_lost"
    else:
        outcome.result = "complete" if regular.complete else "continues"
    if not regular.error and deps.circuit.close_due():
        close_mssp_incident(ctx.incidents)


def _active_row(table: TableClient, tenant_id: str) -> tuple[dict[str, Any], str | None] | None:
    try:
        entity = table.get_entity(TENANT_PARTITION, tenant_id)
    except ResourceNotFoundError:
        return None
    row = dict(entity)
    if Tenant(row).status != TenantStatus.ACTIVE:
        return None
    return row, entity.metadata.get("etag")


# --- the poison queue -----------------------------------------------------------------------------------------


def record_poisoned(incidents: TableClient, body: bytes | str, message_id: str) -> str | None:
    """Record a message the host gave up on (maxDequeueCount failed deliveries) for the operational notices,
    once per tenant (shared.incidents.record_poisoned_ingestion); the tenant id, None for a message that is
    not ours. The tenant itself is enqueued again by the next tick: a poisoned message blocks nobody."""
    try:
        message = TenantMessage.parse(body)
    except MalformedMessage as exc:
        logger.warning("poisoned ingestion message %s is not ours (%s); dropped", message_id, exc)
        return None
    logger.error("tenant %s: ingestion message %s of run %s failed every delivery and was moved to the poison "
                 "queue; the MSSP gets an operational notice, and the next tick enqueues the tenant again",
                 message.tenant_id, message_id, message.run_id)
    record_poisoned_ingestion(incidents, message.tenant_id, run_id=message.run_id, message_id=message_id,
                              now=datetime.now(UTC))
    return message.tenant_id
