"""Which notification rules an obligation triggers: every option of Defender's rules (severities, device
groups, enabled) and the MSSP's additions (tenant scope with include/exclude, per-tenant rules, severity
rise), plus rules read back from the table as the notification run reads them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from notify_mssp.rules import Rule, load_rules, matching_rules
from shared.problems import Problem

TENANT_A = "0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c"
TENANT_B = "1c7a3b2d-4e5f-4a6b-9c0d-1e2f3a4b5c6d"


def rule(**fields: Any) -> Rule:
    value = {"id": uuid.uuid4().hex, "name": "SOC", "recipients": ["soc@mssp.example"], **fields}
    return Rule.from_json(value)


def tenant(tenant_id: str = TENANT_A) -> dict[str, Any]:
    return {"PartitionKey": "tenant", "RowKey": tenant_id, "displayName": "Contoso"}


def alert(severity: str = "high", group: str = "Servers", tenant_id: str = TENANT_A) -> dict[str, Any]:
    return {"PartitionKey": tenant_id, "alertId": "da1", "severity": severity, "deviceGroup": group}


def matched(rules: list[Rule], alert_row: dict[str, Any], reason: str = "new",
            tenant_id: str = TENANT_A) -> list[Rule]:
    return matching_rules(rules, tenant(tenant_id), alert_row, reason)


def test_a_rule_with_defaults_matches_any_new_alert():
    r = rule()
    assert matched([r], alert("informational", "")) == [r]


@pytest.mark.parametrize(("severity", "expected"), [("high", True), ("medium", True), ("low", False),
                                                    ("informational", False)])
def test_severities_select_the_alerts_of_those_levels(severity, expected):
    r = rule(severities=["High", "Medium"])
    assert (matched([r], alert(severity)) == [r]) is expected


def test_an_alert_without_a_ranked_severity_matches_only_rules_for_every_severity():
    every, some = rule(), rule(severities=["High", "Medium", "Low"])
    assert matched([every, some], alert("unknownFutureValue")) == [every]


def test_device_groups_select_alerts_of_those_groups_case_insensitively():
    r = rule(deviceGroups=["Servers", "Finance workstations"])
    assert matched([r], alert(group="servers")) == [r]
    assert matched([r], alert(group="Engineering")) == []


def test_an_alert_without_a_device_group_matches_only_rules_for_all_devices():
    all_devices, servers = rule(), rule(deviceGroups=["Servers"])
    assert matched([all_devices, servers], alert(group="")) == [all_devices]


def test_a_disabled_rule_matches_nothing():
    assert matched([rule(enabled=False)], alert()) == []


def test_an_mssp_wide_rule_covers_every_tenant():
    r = rule(scope={"tenants": "all"})
    assert matched([r], alert(tenant_id=TENANT_B), tenant_id=TENANT_B) == [r]


def test_an_mssp_wide_rule_skips_excluded_tenants():
    r = rule(scope={"tenants": "all", "excludeTenants": [TENANT_B]})
    assert matched([r], alert()) == [r]
    assert matched([r], alert(tenant_id=TENANT_B), tenant_id=TENANT_B) == []


def test_a_per_tenant_rule_covers_only_its_tenants():
    r = rule(scope={"tenants": [TENANT_A.upper()]})
    assert matched([r], alert()) == [r]
    assert matched([r], alert(tenant_id=TENANT_B), tenant_id=TENANT_B) == []


def test_a_severity_rise_notifies_only_rules_that_ask_for_it_and_select_the_new_level():
    rise = rule(notifyOnSeverityRise=True, severities=["High"])
    no_rise = rule(severities=["High"])
    rise_other_level = rule(notifyOnSeverityRise=True, severities=["Low"])
    assert matched([rise, no_rise, rise_other_level], alert("high"), "severity-High") == [rise]


def test_an_unknown_obligation_reason_matches_nothing():
    assert matched([rule()], alert(), "resolved") == []
    assert matched([rule(notifyOnSeverityRise=True)], alert(), "severity-Critical") == []


def test_every_matching_rule_is_returned_and_others_are_not():
    hits = [rule(), rule(severities=["High"]), rule(deviceGroups=["Servers"])]
    misses = [rule(severities=["Low"]), rule(deviceGroups=["Engineering"]), rule(scope={"tenants": [TENANT_B]})]
    assert matched(hits + misses, alert()) == hits


@pytest.mark.parametrize(("fields", "field"), [
    ({"scope": {"tenants": ["not-a-guid"]}}, "scope.tenants"),
    ({"scope": {"tenants": []}}, "scope.tenants"),
    ({"scope": {"tenants": [TENANT_A], "excludeTenants": [TENANT_A]}}, "scope.excludeTenants"),
    ({"scope": {"tenants": "all", "excludeTenants": "nope"}}, "scope.excludeTenants"),
    ({"severities": ["Critical"]}, "severities"),
    ({"deviceGroups": []}, "deviceGroups"),
    ({"recipients": ["not an address"]}, "recipients"),
    ({"mode": "weekly"}, "mode"),
    ({"notifyOnSeverityRise": "yes"}, "notifyOnSeverityRise"),
    ({"colour": "red"}, "colour"),
])
def test_an_invalid_rule_is_refused_naming_the_field(fields, field):
    with pytest.raises(Problem) as refused:
        rule(**fields)
    assert refused.value.status == 400 and refused.value.field == field


def test_a_rule_survives_its_json_round_trip():
    r = rule(scope={"tenants": [TENANT_A], "excludeTenants": []}, deviceGroups=["Servers"], mode="digest")
    assert Rule.from_json(json.loads(json.dumps(r.to_json()))) == r


def test_load_rules_reads_the_table_and_skips_a_broken_row(azurite):
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table(f"Rules{uuid.uuid4().hex[:12]}")
    good = rule(scope={"tenants": [TENANT_A]})
    table.create_entity({"PartitionKey": "rule", "RowKey": good.id, "rule": json.dumps(good.to_json())})
    table.create_entity({"PartitionKey": "rule", "RowKey": "broken", "rule": json.dumps({"name": "no recipients"})})
    loaded = load_rules(table)
    assert loaded == [good]
    assert matched(loaded, alert()) == [good]


def test_recipients_differing_only_in_case_are_one_mailbox_keeping_the_first_spelling():
    r = rule(recipients=["SOC@Mssp.example", "other@mssp.example", "soc@mssp.example", "SOC@MSSP.EXAMPLE"])
    assert r.recipients == ("SOC@Mssp.example", "other@mssp.example")
    assert r.to_json()["recipients"] == ["SOC@Mssp.example", "other@mssp.example"]


def test_a_stored_rule_with_a_mailbox_listed_twice_plans_one_email_to_it(azurite):
    from datetime import UTC, datetime, timedelta

    from notify_mssp.planner import plan_tenant
    from shared.alerts import alert_key, obligation_key

    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:10]
    rules_table, alerts, tenants = (service.create_table(f"{name}{suffix}") for name in ("Rules", "Alerts", "Tenants"))
    tenant_id = str(uuid.uuid4())
    # A row written before recipients were deduplicated: it still holds both spellings.
    stored = {**rule(scope={"tenants": [tenant_id]}).to_json(),
              "recipients": ["SOC@Mssp.example", "soc@mssp.example"]}
    rules_table.create_entity({"PartitionKey": "rule", "RowKey": stored["id"], "rule": json.dumps(stored)})
    tenants.create_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "displayName": "Contoso",
                           "pendingNotifications": True})
    alerts.create_entity({"PartitionKey": tenant_id, "RowKey": alert_key("da1"), "alertId": "da1",
                          "severity": "high", "deviceGroup": "Servers"})
    alerts.create_entity({"PartitionKey": tenant_id, "RowKey": obligation_key("da1", "new"), "alertId": "da1",
                          "reason": "new", "severity": "high", "state": "pending", "attempts": 0})
    planned = plan_tenant(alerts, tenants, lambda: load_rules(rules_table), run_id="run-dup", tenant_id=tenant_id,
                          now=datetime.now(UTC), stale_after=timedelta(minutes=10))
    assert [m["recipient"] for m in planned["messages"]] == ["SOC@Mssp.example"]
