"""Notification rules as the notification run applies them: the rule model, reading the
NotificationRules table, and which rules an obligation (a new alert, or a severity rise) matches.

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

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from azure.data.tables import TableClient

from shared.alerts import SEVERITY_LEVELS, ObligationReason, risen_level, severity_level
from shared.payload import decode_payload
from shared.problems import Problem
from shared.rules import RULE_PARTITION, validate_rule

logger = logging.getLogger(__name__)

Mode = Literal["per-alert", "digest"]


@dataclass(frozen=True)
class Rule:
    """One notification rule (the schema in docs/ARCHITECTURE.md, "Notifications"), JSON-serialisable for
    the Durable boundary."""

    id: str
    name: str
    enabled: bool
    tenants: Literal["all"] | tuple[str, ...]
    exclude_tenants: tuple[str, ...]
    severities: tuple[str, ...]
    device_groups: Literal["all"] | tuple[str, ...]
    include_organization_name: bool
    include_tenant_link: bool
    include_device_information: bool
    recipients: tuple[str, ...]
    mode: Mode
    notify_on_severity_rise: bool

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Rule:
        """A rule from its schema JSON (with `id`); raises Problem(400) when it does not validate."""
        rule_id = value.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise Problem(400, "must be a rule id", field="id")
        checked = validate_rule({k: v for k, v in value.items() if k != "id"}, with_scope=True)
        scope = checked["scope"]
        groups = checked["deviceGroups"]
        return cls(
            id=rule_id,
            name=checked["name"],
            enabled=checked["enabled"],
            tenants="all" if scope["tenants"] == "all" else tuple(scope["tenants"]),
            exclude_tenants=tuple(scope["excludeTenants"]),
            severities=tuple(checked["severities"]),
            device_groups="all" if groups == "all" else tuple(groups),
            include_organization_name=checked["includeOrganizationName"],
            include_tenant_link=checked["includeTenantLink"],
            include_device_information=checked["includeDeviceInformation"],
            recipients=tuple(checked["recipients"]),
            mode=checked["mode"],
            notify_on_severity_rise=checked["notifyOnSeverityRise"],
        )

    def to_json(self) -> dict[str, Any]:
        """The schema JSON (docs/ARCHITECTURE.md, "Notifications"), as the API shows it and the table stores it."""
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "scope": {"tenants": self.tenants if self.tenants == "all" else list(self.tenants),
                      "excludeTenants": list(self.exclude_tenants)},
            "severities": list(self.severities),
            "deviceGroups": self.device_groups if self.device_groups == "all" else list(self.device_groups),
            "includeOrganizationName": self.include_organization_name,
            "includeTenantLink": self.include_tenant_link,
            "includeDeviceInformation": self.include_device_information,
            "recipients": list(self.recipients),
            "mode": self.mode,
            "notifyOnSeverityRise": self.notify_on_severity_rise,
        }

    def covers_tenant(self, tenant_id: str) -> bool:
        tenant_id = tenant_id.lower()
        if tenant_id in self.exclude_tenants:
            return False
        return self.tenants == "all" or tenant_id in self.tenants

    def covers_device_group(self, group: str) -> bool:
        return self.covers_any_device_group((group,))

    def covers_any_device_group(self, groups: tuple[str, ...] | list[str]) -> bool:
        """Whether any of an alert's device groups is one of the rule's (always, for `"all"`)."""
        if self.device_groups == "all":
            return True
        wanted = {g.strip().casefold() for g in groups} - {""}
        return any(g.strip().casefold() in wanted for g in self.device_groups)

    def covers_severity(self, severity: str | None) -> bool:
        if severity is None:  # no rank: only a rule that wants every severity
            return set(self.severities) == set(SEVERITY_LEVELS)
        return severity in self.severities


def rule_from_row(row: dict[str, Any]) -> Rule:
    """The rule a NotificationRules row holds; Problem(400) when its JSON does not validate."""
    try:
        value = json.loads(str(row.get("rule") or ""))
    except ValueError:
        raise Problem(400, "the stored rule is not JSON", field="rule") from None
    if not isinstance(value, dict):
        raise Problem(400, "the stored rule is not an object", field="rule")
    value["id"] = row["RowKey"]
    return Rule.from_json(value)


def load_rules(table: TableClient) -> list[Rule]:
    """Every stored rule, in id order; a row that no longer validates is skipped and logged, never fatal."""
    rules = []
    for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": RULE_PARTITION}):
        try:
            rules.append(rule_from_row(dict(row)))
        except Problem as exc:
            logger.error("notification rule %s is unusable and skipped: %s: %s", row.get("RowKey"),
                         exc.field, exc.detail)
    return sorted(rules, key=lambda r: r.id)


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

