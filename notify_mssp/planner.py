"""Planning one tenant's share of a notification run (the planning activity's work).

Claims the tenant's pending obligations (notify_mssp.obligations), applies the notification rules to each
(notify_mssp.rules) and returns what must be sent as small specs that name things by id: the send activity
reads the alert, tenant and rule again when it renders, so no alert content passes through orchestration
history. Per-alert e-mails come back as message specs; digest rules come back as items the orchestrator
merges across tenants into one digest per (rule, recipient).

A severity-rise obligation's spec and items also carry what the e-mail needs to say about the rise
(notify_mssp.email.severity_rise): `previousSeverity`, the level the alert rose from, and `riseSeenAt`,
when the service stored the rising version (the obligation's `createdAt`). The level it rose from is the
highest severity the alert had before, which is what ingestion compares a new version against: the obligation row's
`previousSeverity` when the writer recorded it, else the highest level among the alert's earlier
obligations (its `new` obligation holds the severity it was first stored with, each earlier
`severity-<Level>` one a level it rose to, fetch_alerts/STORAGE.md); "" when neither tells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypedDict

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from notify_mssp.obligations import ObligationStore
from notify_mssp.payloads import AlertMessage, DigestItem
from notify_mssp.rules import Rule, matching_rules
from shared.alerts import (
    SEVERITY_LEVELS,
    ObligationReason,
    alert_key,
    obligation_key_prefix,
    risen_level,
    severity_level,
    severity_rank,
)
from shared.tables import MAX_FILTER_COMPARISONS, prefix_end
from shared.tenants import TENANT_PARTITION

logger = logging.getLogger(__name__)

_KEYS_PER_QUERY = MAX_FILTER_COMPARISONS - 1  # one goes to the PartitionKey


class TenantPlan(TypedDict):
    """The planning activity's answer for one tenant (a Durable payload, notify_mssp.payloads)."""

    tenant: str
    obligations: list[str]
    messages: list[AlertMessage]
    digest: list[DigestItem]
    error: str


def digest_rank(graph_severity: str) -> int:
    """A digest lists the highest severity first: 0 for high .. 3 for informational, 4 for no rank."""
    rank = severity_rank(graph_severity)
    return len(SEVERITY_LEVELS) - rank if rank else len(SEVERITY_LEVELS)


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
                         obligation, lambda row: previous_severity(alerts, tenant_id, row))
    logger.info("run %s: tenant %s: %d obligations claimed, %d e-mails and %d digest items planned", run_id,
                tenant_id, len(plan["obligations"]), len(plan["messages"]), len(plan["digest"]))
    return plan


def previous_severity(alerts: TableClient, tenant_id: str, obligation: dict[str, Any]) -> str:
    """The level a `severity-<Level>` obligation's alert rose from (see the module's docstring): Graph's
    capitalised level (`Low`), or "" when the stored rows do not tell."""
    level = severity_level(risen_level(str(obligation.get("reason") or "")))
    if level is None:
        return ""
    below = SEVERITY_LEVELS[:SEVERITY_LEVELS.index(level)]
    recorded = severity_level(str(obligation.get("previousSeverity") or ""))
    if recorded is not None and recorded in below:
        return recorded
    prefix = obligation_key_prefix(str(obligation.get("alertId") or ""))
    rows = alerts.query_entities("PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                                 parameters={"pk": tenant_id, "lo": prefix, "hi": prefix_end(prefix)},
                                 select=["reason", "severity"])
    earlier = []
    for row in rows:
        reason = str(row.get("reason") or "")
        if reason == ObligationReason.NEW:
            earlier.append(severity_level(str(row.get("severity") or "")))
        elif risen_level(reason) is not None:
            earlier.append(severity_level(risen_level(reason)))
    known = [value for value in earlier if value in below]
    return max(known, key=SEVERITY_LEVELS.index) if known else ""


def _seen(obligation: dict[str, Any]) -> str:
    created = obligation.get("createdAt")
    return created.isoformat() if isinstance(created, datetime) else str(created or "")


def _plan_obligation(plan: TenantPlan, alert_row: dict[str, Any] | None, rules: list[Rule],
                     tenant_row: dict[str, Any], obligation: dict[str, Any],
                     previous: Callable[[dict[str, Any]], str]) -> None:
    tenant_id = plan["tenant"]
    alert_id, reason = str(obligation.get("alertId") or ""), str(obligation.get("reason") or "")
    if alert_row is None:
        # Retention removed the alert: nothing is owed any more, and the obligation completes as done.
        logger.warning("tenant %s: obligation %s names a missing alert; completing it without e-mail",
                       tenant_id, obligation["RowKey"])
        return
    matched = matching_rules(rules, tenant_row, alert_row, reason)
    prev = seen = ""
    if matched and risen_level(reason) is not None:
        prev, seen = previous(obligation), _seen(obligation)  # read only when an e-mail will tell it
    for rule in matched:
        for recipient in rule.recipients:
            if rule.mode == "digest":
                plan["digest"].append(DigestItem(
                    rule=rule.id, recipient=recipient, tenant=tenant_id, alertId=alert_id,
                    obligationKey=str(obligation["RowKey"]),
                    severityRank=digest_rank(str(alert_row.get("severity") or "")),
                    createdAt=str(alert_row.get("createdDateTime") or ""), reason=reason, previousSeverity=prev,
                    riseSeenAt=seen))
            else:
                plan["messages"].append(AlertMessage(
                    kind="alert", tenant=tenant_id, alertId=alert_id, reason=reason,
                    obligationKey=str(obligation["RowKey"]), rule=rule.id, recipient=recipient,
                    previousSeverity=prev, riseSeenAt=seen))
