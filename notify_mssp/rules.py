"""Notification rules as the notification run applies them: which rules an obligation (a new alert, or a
severity rise) matches. The rule model (`Rule`) and reading the NotificationRules table (`load_rules`) are
shared.rules'; they are importable from here too.

The schema and its validation are grant_access.rules' (one validation for onboarding and the rules API);
rows are the ones grant_access.rules documents: PartitionKey `rule`, RowKey = rule id, column `rule` =
the full rule as JSON. Rules given at onboarding have `scope.tenants` set to their tenant; rules created
through the API may be MSSP-wide (`"all"`, minus `excludeTenants`) or name tenants.

Matching mirrors Defender's notification rules (docs/MICROSOFT.md, "E-mail notifications"): enabled,
severities, device groups
(`"all"` or names, compared case-insensitively like Defender's group names; an alert matches when any of
its devices is in a named group, see `alert_device_groups`; an alert without a device group only matches
`"all"`), plus the MSSP scope. A `severity-<Level>` obligation matches only rules with
`notifyOnSeverityRise` that select the new level. An alert whose severity has no rank (`unknown`, a future
value) matches only rules that select every severity.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.alerts import ObligationReason, risen_level, severity_level
from shared.payload import decode_payload

# The model and the reading of stored rules live in shared.rules; importable from here as before.
from shared.rules import Mode as Mode
from shared.rules import Rule
from shared.rules import load_rules as load_rules
from shared.rules import rule_from_row as rule_from_row

logger = logging.getLogger(__name__)


def _payload_device_groups(payload: dict[str, Any]) -> list[str]:
    """The device groups an alert object names: for a Graph alerts_v2 alert, the `rbacGroupName` of each
    `deviceEvidence` item (an alert can involve several devices, each with its own group:
    https://learn.microsoft.com/en-us/graph/api/resources/security-deviceevidence); for a Defender alert,
    its one `rbacGroupName` (https://learn.microsoft.com/en-us/defender-endpoint/api/alerts)."""
    groups = []
    if isinstance(payload.get("rbacGroupName"), str):
        groups.append(payload["rbacGroupName"])
    evidence = payload.get("evidence")
    for item in evidence if isinstance(evidence, list) else ():
        if (isinstance(item, dict) and str(item.get("@odata.type", "")).endswith("deviceEvidence")
                and isinstance(item.get("rbacGroupName"), str)):
            groups.append(item["rbacGroupName"])
    return groups


def alert_device_groups(alert_row: dict[str, Any], payload: dict[str, Any] | None = None) -> tuple[str, ...]:
    """Every device group of an alert, first the row's `deviceGroup` column, then the others its stored
    payload names, distinct (case-insensitively) and in order.

    The row's column holds the FIRST device's group only (fetch_alerts/STORAGE.md), and Defender's rules
    notify on an alert when a device of it is in a selected group, so the others come from the payload.
    A trimmed payload (`payloadTrimmed`) keeps only part of its evidence: groups of the devices it lost
    are unknown, and only the kept ones count. An unreadable payload leaves the column's group alone.
    `payload`, when given, is the row's payload decoded already."""
    groups = [str(alert_row.get("deviceGroup") or "")]
    if payload is not None:
        groups += _payload_device_groups(payload)
    elif alert_row.get("payloadParts"):
        try:
            groups += _payload_device_groups(decode_payload(alert_row))
        except Exception as exc:  # noqa: BLE001 - a broken payload (zlib, JSON) never stops matching
            logger.warning("alert %s: stored payload unreadable for its device groups: %s",
                           alert_row.get("alertId"), type(exc).__name__)
    distinct: dict[str, str] = {}
    for group in groups:
        name = " ".join(group.split())
        if name and name.casefold() not in distinct:
            distinct[name.casefold()] = name
    return tuple(distinct.values())


def matching_rules(rules: list[Rule], tenant_row: dict[str, Any], alert_row: dict[str, Any],
                   reason: str, device_groups: tuple[str, ...] | None = None) -> list[Rule]:
    """The rules an obligation of `reason` (`new` or `severity-<Level>`) for this alert triggers;
    `device_groups` are the alert's groups (derived with `alert_device_groups` when not given, and only
    when a rule names groups: decoding the payload is the costly part)."""
    tenant_id = str(tenant_row.get("RowKey") or alert_row.get("PartitionKey") or "")
    risen = risen_level(reason)
    if reason == ObligationReason.NEW:
        severity, rise = severity_level(str(alert_row.get("severity") or "")), False
    elif risen is not None:
        severity, rise = severity_level(risen), True
        if severity is None:
            logger.warning("tenant %s: obligation reason %r names no severity; no rule matches", tenant_id, reason)
            return []
    else:
        logger.warning("tenant %s: unknown obligation reason %r; no rule matches", tenant_id, reason)
        return []
    candidates = [
        rule for rule in rules
        if rule.enabled
        and (rule.notify_on_severity_rise or not rise)
        and rule.covers_tenant(tenant_id)
        and rule.covers_severity(severity)
    ]
    if device_groups is None and any(rule.device_groups != "all" for rule in candidates):
        device_groups = alert_device_groups(alert_row)
    return [rule for rule in candidates if rule.covers_any_device_group(device_groups or ())]

