"""One ingestion tick: every active tenant, in parallel on a bounded pool, within the time budget.

The trigger calls `run_tick` with the tick's context, which fetch_alerts.wiring builds (clients lazily, at
the first tick, never at import). Tenants are taken in the order of their last attempt, oldest first, so a
tick that runs out of budget does not always starve the same tenants. Once every tenant's regular pass
is done, the tenants whose pass completed continue their due re-reads (fetch_alerts/reread.py) in what is
left of the budget: late-visible alerts are caught without ever delaying a regular pass.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fetch_alerts.ingest import RunContext, TenantOutcome, close_mssp_incident, ingest_tenant
from fetch_alerts.reread import RereadOutcome, reread_tenant
from shared.tenants import TenantRegistry

logger = logging.getLogger(__name__)


@dataclass
class TickSummary:
    run_id: str
    tenants: int = 0
    succeeded: int = 0
    failed: int = 0
    alerts_stored: int = 0
    obligations: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    reread_calls: int = 0
    reread_stored: int = 0


def active_tenants(table: Any) -> list[tuple[dict[str, Any], str | None]]:
    """(row, etag) of every active tenant, least recently attempted first."""
    found = TenantRegistry(table).active_with_etags()
    found.sort(key=lambda item: str(item[0].get("lastAttempt") or ""))
    return found


def run_tick(ctx: RunContext) -> TickSummary:
    run_id, concurrency = ctx.run_id, ctx.config.concurrency
    tenants = active_tenants(ctx.tenants)
    summary = TickSummary(run_id, tenants=len(tenants))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ingest") as pool:
        outcomes: list[TenantOutcome] = list(pool.map(lambda item: _one(ctx, *item), tenants))
    for outcome in outcomes:
        if outcome.error:
            summary.failed += 1
            summary.errors[outcome.error] = summary.errors.get(outcome.error, 0) + 1
        else:
            summary.succeeded += 1
        summary.alerts_stored += outcome.stored
        summary.obligations += outcome.obligations
    due = [o.tenant_id for o in outcomes if o.complete and not o.error]
    if due and not ctx.mssp_broken.is_set() and time.monotonic() < ctx.deadline:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reread") as pool:
            rereads: list[RereadOutcome] = list(pool.map(lambda tenant_id: _reread(ctx, tenant_id), due))
        for reread in rereads:
            summary.reread_calls += reread.calls
            summary.reread_stored += reread.stored
            summary.obligations += reread.obligations
    if summary.succeeded and not ctx.mssp_broken.is_set():
        close_mssp_incident(ctx.incidents)
    logger.info("fetch_alerts %s: %d tenants (%d ok, %d failed %s), %d alert versions stored, %d obligations, "
                "re-reads %d calls, %d versions stored, %.1fs", run_id, summary.tenants, summary.succeeded,
                summary.failed, summary.errors, summary.alerts_stored, summary.obligations, summary.reread_calls,
                summary.reread_stored, time.monotonic() - started)
    return summary


def _reread(ctx: RunContext, tenant_id: str) -> RereadOutcome:
    try:
        return reread_tenant(ctx, tenant_id)
    except Exception:  # reread_tenant logs its own failures; this guards the pool against anything else
        logger.exception("tenant %s: unexpected re-read failure", tenant_id)
        return RereadOutcome(tenant_id, error="error")


def _one(ctx: RunContext, row: dict[str, Any], etag: str | None) -> TenantOutcome:
    if ctx.mssp_broken.is_set():  # every tenant would fail the same way; the incident is recorded
        return TenantOutcome(str(row["RowKey"]), error="mssp_credential")
    try:
        return ingest_tenant(ctx, row, etag)
    except Exception:  # ingest_tenant records failures itself; this guards the pool against anything else
        logger.exception("tenant %s: unexpected failure", row.get("RowKey"))
        return TenantOutcome(str(row["RowKey"]), error="error")
