"""Triggers of the ingestion blueprint.

`fetch_alerts` runs on FETCH_ALERTS_SCHEDULE and only schedules: it enqueues one message per active tenant on
the `ingest-tenants` queue (fetch_alerts.runner.schedule_tick), waits until the queue is empty or
FETCH_DRAIN_WAIT_SECONDS after its start have passed, and then starts the notification run for this tick,
passing nothing but the run id (docs/NOTIFICATIONS.md, "Run ids"). `ingest_tenant` (queue trigger) ingests the
tenant a message names on a worker thread (fetch_alerts.runner.run_message); `ingest_poison` records a message
the host gave up on for the operational notices. docs/ARCHITECTURE.md, "Ingestion on a queue", says why.
`retention_cleanup` runs daily on RETENTION_SCHEDULE (fetch_alerts.retention). `list_alerts` is the SIEM pull
API (fetch_alerts.pull_request, .feed_reader, .pull_render). Each trigger parses, calls the plain functions
with their dependencies (fetch_alerts.wiring), and shapes the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func

from fetch_alerts import wiring
from fetch_alerts.feed_reader import customer_names, read_page
from fetch_alerts.pull_render import render
from fetch_alerts.pull_request import parse_request
from fetch_alerts.retention import run_retention
from fetch_alerts.runner import Delivery, record_poisoned, run_message, schedule_tick
from fetch_alerts.tenant_queue import CONNECTION, INGEST_QUEUE, POISON_QUEUE, queue_length, wait_until_drained
from shared.names import NOTIFY_ORCHESTRATOR
from shared.problems import run_api
from shared.runs import MANUAL, RERUN, distinct_run_id, is_timer_start, run_id_for, tick_time
from shared.tables import Table

logger = logging.getLogger(__name__)

bp = df.Blueprint()


@bp.function_name("fetch_alerts")
@bp.timer_trigger(arg_name="timer", schedule="%FETCH_ALERTS_SCHEDULE%", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def fetch_alerts(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    started = time.monotonic()
    now = datetime.now(UTC)
    # The worker passes azure.functions.timer.TimerRequest, which has schedule_status; the abstract
    # func.TimerRequest it is annotated with (the type the decorators expect) declares past_due only.
    schedule_status = timer.schedule_status  # type: ignore[attr-defined]
    scheduled = tick_time(schedule_status, now)
    run_id = run_id_for(scheduled)
    if not is_timer_start(schedule_status, now):
        # A manual run gets an id of its own: it must never take the id of the tick it runs ahead of.
        run_id = distinct_run_id(run_id, MANUAL, now)
    if timer.past_due:
        logger.warning("fetch_alerts tick %s is past due", run_id)
    try:
        await schedule_and_wait(run_id, started)
    finally:
        # Even after a failed tick: pending markers left by earlier ticks still need their run.
        await start_notification_run(client, run_id)


async def schedule_and_wait(run_id: str, started: float) -> None:
    """Enqueue the tick's tenants (blocking I/O on a worker thread: the event loop stays free), then wait, polling
    the queue's length, until the instances have processed them or the drain wait is over: the notification run
    started next then sees every alert this tick stored (docs/NOTIFICATIONS.md, "Alert to e-mail")."""
    config, queue = wiring.queue_config(), wiring.ingest_queue()
    tick = await asyncio.to_thread(schedule_tick, wiring.table(Table.TENANTS), queue, run_id,
                                   ttl_seconds=config.message_ttl_seconds)
    if not tick.enqueued.sent:
        return
    tick.drained = await wait_until_drained(lambda: queue_length(queue), started + config.drain_wait_seconds)
    tick.wait_seconds = time.monotonic() - started
    if tick.drained:
        logger.info("fetch_alerts %s: the ingestion queue is empty after %.1fs", run_id, tick.wait_seconds)
    else:
        logger.warning("fetch_alerts %s: the ingestion queue is not empty after %.0fs; the next tick's notification "
                       "run e-mails what the remaining messages store", run_id, tick.wait_seconds)


@bp.function_name("ingest_tenant")
@bp.queue_trigger(arg_name="message", queue_name=INGEST_QUEUE, connection=CONNECTION)
async def ingest_tenant(message: func.QueueMessage, context: func.Context) -> None:
    """One tenant's ingestion on a thread of the instance's ingestion pool, so the event loop stays free for the
    other messages and triggers. Returning completes the message; an exception fails it, and the host retries
    it after host.json's visibilityTimeout, up to maxDequeueCount deliveries, then moves it to the poison queue
    (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages)."""
    started = time.monotonic()
    delivery = Delivery(message.get_body(), str(message.id or ""), int(message.dequeue_count or 0),
                        context.invocation_id)
    deps = wiring.message_deps(started)
    await asyncio.get_running_loop().run_in_executor(wiring.ingest_pool(), run_message, delivery, deps)


@bp.function_name("ingest_poison")
@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=CONNECTION)
def ingest_poison(message: func.QueueMessage) -> None:
    """A tenant's message that failed every delivery: recorded once per tenant for the operational notices."""
    record_poisoned(wiring.table(Table.INCIDENTS), message.get_body(), str(message.id or ""))


@bp.function_name("retention_cleanup")
@bp.timer_trigger(arg_name="timer", schedule="%RETENTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def retention_cleanup(timer: func.TimerRequest) -> None:
    config, tables = wiring.retention_config(), wiring.tables()
    run_retention(tables.alerts, tables.feed, tables.tenants, config.retention_days,
                  budget_seconds=config.budget_seconds)


_ENDED = frozenset({df.OrchestrationRuntimeStatus.Completed, df.OrchestrationRuntimeStatus.Failed,
                    df.OrchestrationRuntimeStatus.Terminated, df.OrchestrationRuntimeStatus.Canceled})


async def start_notification_run(client: df.DurableOrchestrationClient, run_id: str) -> str | None:
    """Start this tick's notification run; the id it started under, None when an instance with that id is
    already in progress (a duplicate start of the tick, refused). An id whose run already ended is never
    started again: its digests are in the delivery log under that id (docs/NOTIFICATIONS.md, "Run ids"),
    so the run starts under a distinct id instead."""
    status = await client.get_status(run_id)
    runtime_status = getattr(status, "runtime_status", None) if status else None
    if runtime_status is not None and runtime_status not in _ENDED:
        logger.info("notification run %s is already in progress; not starting it again", run_id)
        return None
    if runtime_status is not None:
        previous, run_id = run_id, distinct_run_id(run_id, RERUN, datetime.now(UTC))
        logger.info("notification run %s already ended (%s); starting %s", previous, runtime_status, run_id)
    try:
        await client.start_new(NOTIFY_ORCHESTRATOR, instance_id=run_id, client_input=run_id)
    except Exception as exc:  # the extension refuses a duplicate id racing with us; nothing is lost
        logger.warning("notification run %s was not started: %s", run_id, str(exc)[:200])
        return None
    logger.info("started notification run %s", run_id)
    return run_id


# --- the SIEM pull API ---------------------------------------------------------------------------------------


@bp.function_name("list_alerts")
@bp.route(route="alerts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_alerts(req: func.HttpRequest) -> func.HttpResponse:
    """Alerts of every customer in the order they were stored, a bounded page at a time, for SIEM tools.
    Errors are problem+json without internals (shared.problems.run_api)."""

    def handle() -> func.HttpResponse:
        key = wiring.siem_token_key()
        request = parse_request(dict(req.params), req.headers.get("accept"), key)
        tables = wiring.tables()
        decode_payload = wiring.payload_decoder() if request.include_payload else None
        page = read_page(request, alerts=tables.alerts, feed=tables.feed,
                         settle_seconds=wiring.pull_config().settle_seconds)
        names = customer_names(page, tables.tenants)
        logger.info("SIEM pull: %d alerts, %d rows read, more=%s, tenant=%s", len(page.alerts),
                    page.counter.rows, page.has_more, request.filters.tenant_id or "all")
        return render(request, page, names, decode_payload, key)

    return run_api(handle, logger)
