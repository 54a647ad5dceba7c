"""Triggers of the ingestion blueprint.

`fetch_alerts` runs on FETCH_ALERTS_SCHEDULE: it ingests every active tenant (fetch_alerts.runner) and
then starts the notification run for this tick, passing nothing but the run id (design.md).
`retention_cleanup` runs daily on RETENTION_SCHEDULE (fetch_alerts.retention).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func

from fetch_alerts.retention import run_retention
from fetch_alerts.runner import run_tick
from shared.names import NOTIFY_ORCHESTRATOR
from shared.runs import run_id_for, tick_time
from shared.settings import get_settings
from shared.tables import Table, get_table_store

logger = logging.getLogger(__name__)

bp = df.Blueprint()


@bp.function_name("fetch_alerts")
@bp.timer_trigger(arg_name="timer", schedule="%FETCH_ALERTS_SCHEDULE%", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def fetch_alerts(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    scheduled = tick_time(timer.schedule_status, datetime.now(UTC))
    run_id = run_id_for(scheduled)
    if timer.past_due:
        logger.warning("fetch_alerts tick %s is past due", run_id)
    # Blocking I/O on a worker thread: the event loop stays free for other invocations.
    try:
        await asyncio.to_thread(run_tick, run_id)
    finally:
        # Even after a failed tick: pending markers left by earlier ticks still need their run.
        await start_notification_run(client, run_id)


@bp.function_name("retention_cleanup")
@bp.timer_trigger(arg_name="timer", schedule="%RETENTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def retention_cleanup(timer: func.TimerRequest) -> None:
    settings = get_settings()
    store = get_table_store()
    run_retention(store.table(Table.ALERTS), store.table(Table.ALERT_FEED), store.table(Table.TENANTS),
                  settings.get("RETENTION_DAYS"), budget_seconds=settings.get("FETCH_TIME_BUDGET_SECONDS"))


async def start_notification_run(client: df.DurableOrchestrationClient, run_id: str) -> bool:
    """Start this tick's notification run; False when an instance with that id is already in progress."""
    status = await client.get_status(run_id)
    if status and status.runtime_status in (df.OrchestrationRuntimeStatus.Pending,
                                            df.OrchestrationRuntimeStatus.Running):
        logger.info("notification run %s is already in progress; not starting it again", run_id)
        return False
    try:
        await client.start_new(NOTIFY_ORCHESTRATOR, instance_id=run_id, client_input=run_id)
    except Exception as exc:  # the extension refuses a duplicate id racing with us; nothing is lost
        logger.warning("notification run %s was not started: %s", run_id, str(exc)[:200])
        return False
    logger.info("started notification run %s", run_id)
    return True


# --- the SIEM pull API (fetch_alerts/pull_api.py) ----------------------------------------------------------


@bp.function_name("list_alerts")
@bp.route(route="alerts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_alerts(req: func.HttpRequest) -> func.HttpResponse:
    """Alerts of every customer in the order they were stored, a bounded page at a time, for SIEM tools."""
    from fetch_alerts import pull_api  # imported at first call: a storage client is never built at import

    return pull_api.handle(req)
