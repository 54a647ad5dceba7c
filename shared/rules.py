"""Notification rules given at onboarding: validated against the rule schema (docs/ARCHITECTURE.md,
"Notifications") and stored, once the
tenant GUID is known (on acceptance), with `scope.tenants` set to that tenant.

`RuleInput` (a pydantic model, shared.contract) is the rule schema and `validate_rule` its one validation:
onboarding uses it without a scope (the service sets it), the notification rules API
(notify_mssp.rules_service) with one (`with_scope=True`). `Rule` is the validated model, `load_rules`
what the notification run reads, `RuleRepository` what the rules API reads and changes (under the rows'
ETags).

Row layout (table `NotificationRules`, read by notify_mssp): PartitionKey `rule`, RowKey = rule id
(32 hex, assigned here), columns `rule` (the full rule as JSON, the schema below), `name`, `enabled`,
`origin` (`onboarding`), `invitationId`, `tenantId`, `createdAt`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from pydantic import AfterValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.alerts import SEVERITY_LEVELS
from shared.contract import Email, Guid, ShortText, StrictModel, validate
from shared.problems import Problem
from shared.tables import delete_if_unchanged, write_if_unchanged

logger = logging.getLogger(__name__)

RULE_PARTITION = "rule"
SEVERITIES = ("Informational", "Low", "Medium", "High")
MODES = ("per-alert", "digest")
MAX_RULES = 20
MAX_RECIPIENTS = 50
MAX_SCOPE_TENANTS = 1000
Mode = Literal["per-alert", "digest"]
_BOOLS = {"enabled": True, "includeOrganizationName": True, "includeTenantLink": True,
          "includeDeviceInformation": True, "notifyOnSeverityRise": False}


def _distinct_tenants(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise PydanticCustomError("value_error", "must not name a tenant twice")
    return value


def _distinct(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise PydanticCustomError("value_error", "must not name a value twice")
    return value


def _unique_recipients(value: list[str]) -> list[str]:
    # One mailbox listed twice ("SOC@x" and "soc@x") would get every alert of the rule twice. Domains are
    # case-insensitive (RFC 5321 section 2.4) and so are Exchange Online's addresses; a local part MAY be
    # case-sensitive by the RFC, but "exploiting the case sensitivity of mailbox local-parts impedes
    # interoperability and is discouraged" (same section), and the delivery log already keys recipients
    # in lower case. The first spelling given is kept.
    seen: set[str] = set()
    unique = []
    for address in value:
        if address.casefold() not in seen:
            seen.add(address.casefold())
            unique.append(address)
    return unique


def _all_severities() -> list[Literal["Informational", "Low", "Medium", "High"]]:
    return ["Informational", "Low", "Medium", "High"]


TenantList = Annotated[list[Guid], Field(max_length=MAX_SCOPE_TENANTS), AfterValidator(_distinct_tenants)]
DeviceGroup = Annotated[str, Field(min_length=1, max_length=256)]


class ScopeInput(StrictModel):
    """Which tenants a rule covers: `"all"` or named tenants, less the excluded ones."""

    messages: ClassVar[dict[str, str]] = {
        "tenants": f'must be "all" or a list of 1 to {MAX_SCOPE_TENANTS} tenant GUIDs',
        "excludeTenants": f"must be a list of 0 to {MAX_SCOPE_TENANTS} tenant GUIDs"}

    tenants: Literal["all"] | Annotated[TenantList, Field(min_length=1)] = "all"
    excludeTenants: TenantList = Field(default_factory=list)

    @field_validator("excludeTenants")
    @classmethod
    def _not_named(cls, value: list[str], info: ValidationInfo) -> list[str]:
        tenants = info.data.get("tenants", "all")
        if tenants != "all" and set(tenants) & set(value):
            raise PydanticCustomError("value_error", "must not exclude a tenant the rule names")
        return value


class RuleInput(StrictModel):
    """One notification rule as the rules API and the onboarding webhook take it (docs/ARCHITECTURE.md,
    "Notifications"); defaults filled in. The service sets `id` (and, at onboarding, `scope`)."""

    messages: ClassVar[dict[str, str]] = {
        **{name: "must be true or false" for name in _BOOLS},
        "severities": f"must be a non-empty list of distinct values from {', '.join(SEVERITIES)}",
        "deviceGroups": 'must be "all" or a list of device group names',
        "recipients": f"must be a list of 1 to {MAX_RECIPIENTS} e-mail addresses",
        "mode": 'must be "per-alert" or "digest"',
        "scope": "must be an object with tenants and excludeTenants only"}
    closed: ClassVar[tuple[str, ...]] = ("scope",)

    name: ShortText
    enabled: bool = True
    scope: ScopeInput = Field(default_factory=ScopeInput)
    severities: Annotated[list[Literal["Informational", "Low", "Medium", "High"]],
                          Field(min_length=1, max_length=len(SEVERITIES)), AfterValidator(_distinct)] = \
        Field(default_factory=_all_severities)
    deviceGroups: Literal["all"] | Annotated[list[DeviceGroup], Field(min_length=1, max_length=100)] = "all"
    includeOrganizationName: bool = True
    includeTenantLink: bool = True
    includeDeviceInformation: bool = True
    recipients: Annotated[list[Email], Field(min_length=1, max_length=MAX_RECIPIENTS),
                          AfterValidator(_unique_recipients)]
    mode: Mode = "per-alert"
    notifyOnSeverityRise: bool = False


def validate_rule(rule: object, where: str = "", *, with_scope: bool = False) -> dict[str, Any]:
    """One rule with defaults filled in (RuleInput); Problem(400) naming the first bad field (prefixed with
    `where`).

    Without `with_scope` the scope is left out of the result (onboarding scopes its rules to the consenting
    tenant); with it, it is returned.
    """
    checked = validate(RuleInput, rule, prefix=where)
    return rule_dict(checked, with_scope=with_scope)


def rule_dict(checked: RuleInput, *, with_scope: bool = False) -> dict[str, Any]:
    """A validated rule as the dict the stores and `Rule.from_json` read."""
    out = checked.model_dump(mode="json")
    if not with_scope:
        del out["scope"]
    return out


class RuleStore:
    """Writes onboarding rules into the NotificationRules table."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def store_for_tenant(self, rules: list[dict[str, Any]], tenant_id: str, invitation_id: str,
                         now: datetime) -> list[str]:
        """Store `rules` scoped to `tenant_id`; ids derive from the invitation, so a repeat writes nothing."""
        ids = []
        for index, rule in enumerate(rules):
            rule_id = uuid.uuid5(uuid.NAMESPACE_URL, f"onboarding:{invitation_id}:{index}").hex
            stored = {"id": rule_id, **rule, "scope": {"tenants": [tenant_id], "excludeTenants": []}}
            try:
                self._table.create_entity({
                    "PartitionKey": RULE_PARTITION, "RowKey": rule_id, "rule": json.dumps(stored),
                    "name": rule["name"], "enabled": rule["enabled"], "origin": "onboarding",
                    "invitationId": invitation_id, "tenantId": tenant_id, "createdAt": now,
                })
            except ResourceExistsError:
                pass
            ids.append(rule_id)
        if ids:
            logger.info("tenant %s: stored %d onboarding notification rules", tenant_id, len(ids))
        return ids


# --- the rule model and the stored rules ---------------------------------------------------------------------


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


@dataclass(frozen=True)
class StoredRule:
    """A stored rule with its row and table ETag."""

    rule: Rule
    etag: str
    row: dict[str, Any]


def _stored(entity: Any) -> StoredRule:
    row = dict(entity)
    return StoredRule(rule_from_row(row), entity.metadata["etag"], row)


class RuleRepository:
    """The NotificationRules table as the rules API reads and changes it: rules with their ETags, and
    writes conditional on them."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, rule_id: str) -> StoredRule | None:
        """The stored rule; None when there is none (Problem(400) when its row no longer validates)."""
        try:
            return _stored(self._table.get_entity(RULE_PARTITION, rule_id))
        except ResourceNotFoundError:
            return None

    def all(self) -> list[StoredRule]:
        """Every rule that validates (one that does not is logged by its id and left out), by name."""
        rules = []
        for entity in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": RULE_PARTITION}):
            try:
                rules.append(_stored(entity))
            except Problem as exc:
                logger.error("notification rule %s is unusable: %s: %s", entity.get("RowKey"), exc.field,
                             exc.detail)
        return sorted(rules, key=lambda s: (s.rule.name.casefold(), s.rule.id))

    def count(self) -> int:
        return sum(1 for _ in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": RULE_PARTITION},
                                                         select=["RowKey"]))

    def create(self, rule: Rule, now: datetime) -> None:
        self._table.create_entity({"PartitionKey": RULE_PARTITION, "RowKey": rule.id,
                                   "rule": json.dumps(rule.to_json()), "name": rule.name, "enabled": rule.enabled,
                                   "origin": "api", "createdAt": now, "updatedAt": now})

    def replace_if_unchanged(self, rule: Rule, etag: str, now: datetime) -> bool:
        """Store the changed rule unless its row changed since `etag`; False when it did."""
        return write_if_unchanged(self._table, {"PartitionKey": RULE_PARTITION, "RowKey": rule.id,
                                                "rule": json.dumps(rule.to_json()), "name": rule.name,
                                                "enabled": rule.enabled, "updatedAt": now},
                                  etag, mode=UpdateMode.MERGE) is not None

    def delete_if_unchanged(self, rule_id: str, etag: str) -> bool:
        return bool(delete_if_unchanged(self._table, RULE_PARTITION, rule_id, etag))
