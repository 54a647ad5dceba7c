"""Durable functions of the notification run.

The orchestrator is started once per timer tick with the run id as its only input and finds its work
through the tenants' `pendingNotifications` markers (design.md, "Storage"). Planning, sending and
completing obligations arrive with #5; the orchestrator must stay deterministic: no I/O, clock or
randomness here, only activities.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df

from shared.names import LIST_PENDING_TENANTS_ACTIVITY, NOTIFY_ORCHESTRATOR
from shared.tables import Table, get_table_store

logger = logging.getLogger(__name__)

bp = df.Blueprint()


@bp.function_name(NOTIFY_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def notify_mssp(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    run_id = context.get_input(expected_type=str)
    tenants = yield context.call_activity(LIST_PENDING_TENANTS_ACTIVITY, run_id)
    return {"runId": run_id, "tenantsPending": len(tenants)}


@bp.function_name(LIST_PENDING_TENANTS_ACTIVITY)
@bp.activity_trigger(input_name="runId")
def list_pending_tenants(runId: str) -> list[str]:  # noqa: N803 - binding name is the Durable input name
    """Tenant ids whose pendingNotifications marker is set."""
    table = get_table_store().table(Table.TENANTS)
    rows = table.query_entities("pendingNotifications eq @pending", parameters={"pending": True},
                                select=["RowKey"])
    tenants = sorted(row["RowKey"] for row in rows)
    logger.info("notification run %s: %d tenants with pending notifications", runId, len(tenants))
    return tenants
