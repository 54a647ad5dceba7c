"""Planning one tenant's share of a notification run (the planning activity's work).

Claims the tenant's pending obligations (notify_mssp.obligations), applies the notification rules to each
(notify_mssp.rules) and returns what must be sent as small specs that name things by id: the send activity
reads the alert, tenant and rule again when it renders, so no alert content passes through orchestration
history. Per-alert e-mails come back as message specs; digest rules come back as items the orchestrator
merges across tenants into one digest per (rule, recipient).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypedDict

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from fetch_alerts.keys import alert_key
from notify_mssp.obligations import TENANT_PARTITION, ObligationStore
from notify_mssp.rules import Rule, matching_rules

logger = logging.getLogger(__name__)

_KEYS_PER_QUERY = 14  # plus the PartitionKey comparison: Table Storage's limit of 15
SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "informational": 3}


class AlertMessage(TypedDict):
    """One per-alert e-mail: (alert, obligation reason, rule, recipient)."""

    kind: str  # "alert"
    tenant: str
    alert: str
    reason: str
    obl: str  # the obligation's RowKey
    rule: str
    to: str


class DigestItem(TypedDict):
    """One alert a digest rule selected for one recipient; `rank` and `at` order the digest."""

    rule: str
    to: str
    tenant: str
    alert: str
    obl: str
    rank: int
    at: str


class TenantPlan(TypedDict):
    tenant: str
    obligations: list[str]
    messages: list[AlertMessage]
    digest: list[DigestItem]
    error: str


def read_alerts(alerts: TableClient, tenant_id: str, alert_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The tenant's alert rows by alert id, read a few at a time (a `$filter` allows 15 comparisons)."""
    wanted = sorted(set(alert_ids))
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _KEYS_PER_QUERY):
        group = wanted[start:start + _KEYS_PER_QUERY]
        parameters: dict[str, Any] = {"pk": tenant_id}
        parameters.update({f"k{i}": alert_key(alert_id) for i, alert_id in enumerate(group)})
        keys = " or ".join(f"RowKey eq @k{i}" for i in range(len(group)))
        # A space before ")": the SDK reads a parameter name up to the next space.
        for row in alerts.query_entities(f"PartitionKey eq @pk and ( {keys} )", parameters=parameters):
            rows[str(row.get("alertId"))] = dict(row)
    return rows


def plan_tenant(alerts: TableClient, tenants: TableClient, rules: Callable[[], list[Rule]], *, run_id: str,
                tenant_id: str, now: datetime, stale_after: timedelta) -> TenantPlan:
    """Claim the tenant's obligations for `run_id` and turn each into the e-mails its rules ask for.

    `rules` gives the notification rules; it is called only when there is something to plan, so callers
    planning several tenants can read and validate the rules table once (functools.cache)."""
    plan = TenantPlan(tenant=tenant_id, obligations=[], messages=[], digest=[], error="")
    try:
        tenant_row: dict[str, Any] = dict(tenants.get_entity(TENANT_PARTITION, tenant_id))
    except ResourceNotFoundError:
        logger.warning("run %s: tenant %s has a pending marker but no row; nothing to plan", run_id, tenant_id)
        return plan
    claimed = ObligationStore(alerts, tenants).claim(tenant_id, run_id, now, stale_after)
    if not claimed:
        return plan
    active_rules = rules()
    alert_rows = read_alerts(alerts, tenant_id, [str(row.get("alertId") or "") for row in claimed])
    for obligation in sorted(claimed, key=lambda row: str(row["RowKey"])):
        plan["obligations"].append(str(obligation["RowKey"]))
        _plan_obligation(plan, alert_rows.get(str(obligation.get("alertId") or "")), active_rules, tenant_row,
                         obligation)
    logger.info("run %s: tenant %s: %d obligations claimed, %d e-mails and %d digest items planned", run_id,
                tenant_id, len(plan["obligations"]), len(plan["messages"]), len(plan["digest"]))
    return plan


def _plan_obligation(plan: TenantPlan, alert_row: dict[str, Any] | None, rules: list[Rule],
                     tenant_row: dict[str, Any], obligation: dict[str, Any]) -> None:
    tenant_id = plan["tenant"]
    alert_id, reason = str(obligation.get("alertId") or ""), str(obligation.get("reason") or "")
    if alert_row is None:
        # Retention removed the alert: nothing is owed any more, and the obligation completes as done.
        logger.warning("tenant %s: obligation %s names a missing alert; completing it without e-mail",
                       tenant_id, obligation["RowKey"])
        return
    for rule in matching_rules(rules, tenant_row, alert_row, reason):
        for recipient in rule.recipients:
            if rule.mode == "digest":
                plan["digest"].append(DigestItem(
                    rule=rule.id, to=recipient, tenant=tenant_id, alert=alert_id, obl=str(obligation["RowKey"]),
                    rank=SEVERITY_RANK.get(str(alert_row.get("severity") or "").lower(), len(SEVERITY_RANK)),
                    at=str(alert_row.get("createdDateTime") or "")))
            else:
                plan["messages"].append(AlertMessage(
                    kind="alert", tenant=tenant_id, alert=alert_id, reason=reason, obl=str(obligation["RowKey"]),
                    rule=rule.id, to=recipient))
