"""Triggers of the ingestion blueprint.

`fetch_alerts` runs on FETCH_ALERTS_SCHEDULE. Ingestion itself arrives with #4; the tick already ends the
way design.md fixes: it starts the notification run for this tick, passing nothing but the run id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func

from shared.names import NOTIFY_ORCHESTRATOR
from shared.runs import run_id_for, tick_time

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
    await start_notification_run(client, run_id)


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
