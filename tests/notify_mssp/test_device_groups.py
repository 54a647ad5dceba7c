"""A Graph alert touching several devices matches a device-group rule on any of its devices' groups, not the
first device's only: each deviceEvidence item carries its own `rbacGroupName`
(https://learn.microsoft.com/en-us/graph/api/resources/security-deviceevidence). Alert rows are built by
ingestion's own normaliser and payload encoder, as fetch_alerts stores them, and planned from Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from fetch_alerts.normalise import normalise
from notify_mssp.email import Sender, render_alert_email
from notify_mssp.planner import plan_tenant
from notify_mssp.rules import Rule, alert_device_groups, matching_rules
from shared.alert_sources import AlertSource
from shared.alerts import alert_key, obligation_key
from shared.payload import encode

TENANT = "0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c"
PORTAL = "https://security.microsoft.com"


def device(name: str, group: str) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": name,
            "rbacGroupName": group, "roles": [], "verdict": "suspicious"}


def graph_alert(*evidence: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"da{uuid.uuid4().hex}", "title": "Lateral movement", "severity": "high", "status": "new",
            "category": "LateralMovement", "createdDateTime": "2026-11-27T08:01:02.123Z",
            "lastUpdateDateTime": "2026-11-27T08:05:00Z", "mitreTechniques": ["T1021"], "evidence": list(evidence)}


def stored_row(raw: dict[str, Any], source: AlertSource = AlertSource.GRAPH, tenant_id: str = TENANT) -> dict[str, Any]:
    """The alert row as fetch_alerts writes it: normalised columns plus the encoded payload."""
    norm = normalise(raw, source, tenant_id, PORTAL)
    return {"PartitionKey": tenant_id, "RowKey": alert_key(norm.alert_id), **norm.columns,
            "maxSeverity": norm.columns["severity"], **encode(raw).columns}


def rule(**fields: Any) -> Rule:
    return Rule.from_json({"id": uuid.uuid4().hex, "name": "Finance", "recipients": ["soc@mssp.example"], **fields})


def tenant(tenant_id: str = TENANT) -> dict[str, Any]:
    return {"PartitionKey": "tenant", "RowKey": tenant_id, "displayName": "Contoso"}


TWO_DEVICES = (device("srv-01.contoso.example", "Servers"), device("fin-07.contoso.example", "Finance workstations"))


def test_an_alert_whose_second_device_is_in_the_rules_group_matches_it():
    row = stored_row(graph_alert(*TWO_DEVICES))
    assert row["deviceGroup"] == "Servers"  # the row's column names the first device's group only
    finance, servers, other = (rule(deviceGroups=["finance WORKSTATIONS"]), rule(deviceGroups=["Servers"]),
                               rule(deviceGroups=["Engineering"]))
    assert matching_rules([finance, servers, other], tenant(), row, "new") == [finance, servers]


def test_every_device_group_is_listed_once_in_order():
    row = stored_row(graph_alert(*TWO_DEVICES, device("srv-02.contoso.example", "servers"),
                                 {"@odata.type": "#microsoft.graph.security.userEvidence", "rbacGroupName": "Users"}))
    assert alert_device_groups(row) == ("Servers", "Finance workstations")


def test_a_defender_alert_has_its_one_group():
    raw = {"id": f"da{uuid.uuid4().hex}", "title": "x", "severity": "High", "status": "New",
           "alertCreationTime": "2026-11-27T08:01:02Z", "lastUpdateTime": "2026-11-27T08:05:00Z",
           "computerDnsName": "fin-07", "rbacGroupName": "Finance workstations"}
    row = stored_row(raw, AlertSource.DEFENDER)
    assert alert_device_groups(row) == ("Finance workstations",)
    assert matching_rules([rule(deviceGroups=["Finance workstations"])], tenant(), row, "new")


def test_an_unreadable_payload_leaves_the_first_group_and_never_fails_matching():
    row = {**stored_row(graph_alert(*TWO_DEVICES)), "payload0": b"not zlib"}
    servers, finance = rule(deviceGroups=["Servers"]), rule(deviceGroups=["Finance workstations"])
    assert matching_rules([servers, finance], tenant(), row, "new") == [servers]


def test_an_alert_without_devices_still_matches_only_rules_for_all_devices():
    row = stored_row(graph_alert())
    every, finance = rule(), rule(deviceGroups=["Finance workstations"])
    assert matching_rules([every, finance], tenant(), row, "new") == [every]


@pytest.fixture(scope="module")
def tables(azurite):
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:10]
    return service.create_table(f"GroupAlerts{suffix}"), service.create_table(f"GroupTenants{suffix}")


def test_the_planner_plans_the_email_of_a_rule_for_the_second_devices_group(tables):
    alerts, tenants = tables
    tenant_id = str(uuid.uuid4())
    tenants.upsert_entity({**tenant(tenant_id), "status": "active", "pendingNotifications": True})
    raw = graph_alert(*TWO_DEVICES)
    alerts.upsert_entity(stored_row(raw, tenant_id=tenant_id))
    alerts.upsert_entity({"PartitionKey": tenant_id, "RowKey": obligation_key(raw["id"], "new"), "alertId": raw["id"],
                          "reason": "new", "severity": "high", "createdAt": datetime.now(UTC), "state": "pending",
                          "attempts": 0})
    finance = rule(deviceGroups=["Finance workstations"], scope={"tenants": [tenant_id]})
    engineering = rule(deviceGroups=["Engineering"], scope={"tenants": [tenant_id]})
    planned = plan_tenant(alerts, tenants, lambda: [finance, engineering], run_id="run-groups", tenant_id=tenant_id,
                          now=datetime.now(UTC), stale_after=timedelta(minutes=10))
    assert [(m["rule"], m["alertId"]) for m in planned["messages"]] == [(finance.id, raw["id"])]


def test_the_email_names_every_device_group():
    row = stored_row(graph_alert(*TWO_DEVICES))
    message = render_alert_email(row, tenant(), rule(deviceGroups=["Finance workstations"]), "soc@mssp.example",
                                 message_id="groups", sender=Sender("alerts@mssp.example", "", PORTAL))
    assert "Device group: Servers, Finance workstations" in message.text
    assert "Servers, Finance workstations" in message.html
