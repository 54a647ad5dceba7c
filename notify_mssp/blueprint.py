"""Durable functions of the notification run: the run orchestrator, its send-batch sub-orchestrator and
their activities (thin triggers over notify_mssp.orchestrator, .planner, .sender and .obligations).

The run is started once per timer tick with the run id as its only input and finds its work through the
tenants' `pendingNotifications` markers (docs/ARCHITECTURE.md, "Tables"). Every activity answers with a status
instead of raising for one tenant or one e-mail: `task_all` fails as soon as any task fails.
Clients and settings are read at first use, never at import (a failing import hides every function): the
triggers take what they need from notify_mssp.wiring. The rules API (notify_mssp.rules_http) and the ops
notices timer (notify_mssp.ops_timer) are registered on this blueprint below, by name.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from notify_mssp import ops_timer, orchestrator, rules_http, wiring
from notify_mssp.payloads import SendAnswer
from shared.names import (
    COMPLETE_TENANT_ACTIVITY,
    LIST_PENDING_TENANTS_ACTIVITY,
    MARK_SENT_ACTIVITY,
    NOTIFY_ORCHESTRATOR,
    NOTIFY_RUN_CONFIG_ACTIVITY,
    PLAN_TENANT_ACTIVITY,
    SEND_BATCH_ORCHESTRATOR,
    SEND_EMAILS_ACTIVITY,
    TENANT_GROUP_ORCHESTRATOR,
)
from shared.tables import Table

logger = logging.getLogger(__name__)

bp = df.Blueprint()


@bp.function_name(NOTIFY_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def notify_mssp(context: df.DurableOrchestrationContext):
    return (yield from orchestrator.notify_run(context))


@bp.function_name(TENANT_GROUP_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def notify_tenant_group(context: df.DurableOrchestrationContext):
    return (yield from orchestrator.tenant_group(context))


@bp.function_name(SEND_BATCH_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def send_notification_batch(context: df.DurableOrchestrationContext):
    return (yield from orchestrator.send_batch(context))


@bp.function_name(LIST_PENDING_TENANTS_ACTIVITY)
@bp.activity_trigger(input_name="runId")
def list_pending_tenants(runId: str) -> list[str]:  # noqa: N803 - binding name is the Durable input name
    """Tenant ids whose pendingNotifications marker is set."""
    tenants = wiring.tenants().ids_with_pending_notifications()
    logger.info("notification run %s: %d tenants with pending notifications", runId, len(tenants))
    return tenants


@bp.function_name(NOTIFY_RUN_CONFIG_ACTIVITY)
@bp.activity_trigger(input_name="runId")
def notification_run_config(runId: str) -> dict[str, Any]:  # noqa: N803 - binding name is the Durable input name
    """The settings the orchestrators need, read here because orchestrator code must not read them."""
    config = wiring.run_config()
    return {"batchSize": config.batch_size, "maxAttempts": config.max_attempts,
            "backoffSeconds": config.backoff_seconds, "digestMaxItems": config.digest_max_items}


@bp.function_name(PLAN_TENANT_ACTIVITY)
@bp.activity_trigger(input_name="job")
def plan_tenant_notifications(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A few tenants' obligations claimed and turned into e-mail specs, one plan per tenant; a tenant whose
    planning failed has `error` set and waits for the next run, the others go on."""
    from notify_mssp.planner import plan_tenant
    from notify_mssp.rules import load_rules

    run_id = str(job["runId"])
    plans: list[dict[str, Any]] = []
    # Read once for all of this activity's tenants, at the first that has something to plan; a failure to
    # read is not cached, so it stays that tenant's.
    rules = functools.cache(lambda: load_rules(wiring.table(Table.NOTIFICATION_RULES)))
    for tenant_id in job["tenantIds"]:
        try:
            plans.append(dict(plan_tenant(wiring.table(Table.ALERTS), wiring.table(Table.TENANTS), rules,
                                          run_id=run_id, tenant_id=str(tenant_id), now=wiring.utcnow(),
                                          stale_after=wiring.claim_timeout())))
        except Exception as exc:
            logger.exception("run %s: planning tenant %s failed", run_id, tenant_id)
            plans.append({"tenant": tenant_id, "obligations": [], "messages": [], "digest": [],
                          "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return plans


@bp.function_name(SEND_EMAILS_ACTIVITY)
@bp.activity_trigger(input_name="job")
def send_notification_emails(job: dict[str, Any]) -> list[SendAnswer]:
    """Claim, send and record a chunk of e-mails; one answer per e-mail."""
    from notify_mssp.payloads import send_answer
    from notify_mssp.sender import send_chunk

    messages = list(job["messages"])
    try:
        context = wiring.send_context()
    except Exception as exc:  # no transport or storage now: every e-mail of the chunk retries later
        logger.exception("run %s: the send activity cannot start", job["runId"])
        return [send_answer("transient", f"send unavailable ({type(exc).__name__})") for _ in messages]
    return send_chunk(context, run_id=str(job["runId"]), token=str(job["token"]), messages=messages,
                      now=datetime.now(UTC))


@bp.function_name(MARK_SENT_ACTIVITY)
@bp.activity_trigger(input_name="job")
def mark_notifications_sent(job: dict[str, Any]) -> int:
    """Mark e-mails the send activity could not mark itself as `sent` (raises on storage failure: retried)."""
    from notify_mssp.sender import mark_sent

    return mark_sent(wiring.delivery_log(), token=str(job["token"]), sent=list(job["sent"]),
                     now=datetime.now(UTC))


@bp.function_name(COMPLETE_TENANT_ACTIVITY)
@bp.activity_trigger(input_name="job")
def complete_tenant_notifications(job: dict[str, Any]) -> list[dict[str, Any]]:
    """For a few tenants: obligations done or given back, then the pending marker cleared if nothing is
    left undone. One result per tenant; a failed one keeps its marker and claims for a later run."""
    run_id = str(job["runId"])
    results: list[dict[str, Any]] = []
    for tenant in job["tenants"]:
        tenant_id = str(tenant["tenantId"])
        try:
            results.append(wiring.obligations().complete(tenant_id, run_id, tenant["done"], tenant["released"],
                                                         datetime.now(UTC)))
        except Exception as exc:
            logger.exception("run %s: completing tenant %s failed", run_id, tenant_id)
            results.append({"done": 0, "released": 0, "markerCleared": False, "error": type(exc).__name__})
    return results


rules_http.register(bp)
ops_timer.register(bp)
