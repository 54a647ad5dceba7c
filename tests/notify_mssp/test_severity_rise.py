"""A severity rise is e-mailed as one: the planner finds the level the alert rose from in the rows ingestion
wrote (fetch_alerts/STORAGE.md) and when the rise was seen, and the e-mail, as MailDev receives it over
SMTP, says in its subject, text and HTML that the severity rose, from what to what and when. Digests mark
raised alerts. Tables are Azurite's, e-mails are rendered by the real functions and parsed from MailDev."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient

from notify_mssp.email import EmailMessage, Sender, render_alert_email, render_digest_email, severity_rise
from notify_mssp.planner import plan_tenant
from notify_mssp.rules import Rule
from notify_mssp.transports import SmtpTransport
from shared.alerts import alert_key, obligation_key

SENDER = Sender("alerts@mssp.example", "MSSP alerts", "https://security.microsoft.com")
SEEN = datetime(2026, 11, 27, 9, 15, 30, tzinfo=UTC)
UPDATED = "2026-11-27T09:14:05.0000000Z"


@pytest.fixture(scope="module")
def tables(azurite) -> tuple[TableClient, TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:10]
    return service.create_table(f"RiseAlerts{suffix}"), service.create_table(f"RiseTenants{suffix}")


@pytest.fixture
def smtp(maildev) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", maildev.smtp_port, starttls=False, username="", password="", timeout=10)


def deliver(smtp: SmtpTransport, maildev, message: EmailMessage) -> dict[str, Any]:
    assert smtp.send(message).status == "sent"
    (received,) = [m for m in maildev.messages() if m["to"][0]["address"] == message.to[0]]
    return received


def recipient() -> str:
    return f"soc-{uuid.uuid4().hex[:12]}@mssp.example"


def seed(tables: tuple[TableClient, TableClient], *, severity: str,
         obligations: list[dict[str, Any]]) -> tuple[str, str]:
    """A tenant, an alert now at `severity` and its obligation rows (`reason`, `severity`, `state` and any
    other columns), as ingestion writes them."""
    alerts, tenants = tables
    tenant_id, alert_id = str(uuid.uuid4()), f"da{uuid.uuid4().hex}"
    tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                           "displayName": "Contoso Ltd", "pendingNotifications": True})
    alerts.upsert_entity({
        "PartitionKey": tenant_id, "RowKey": alert_key(alert_id), "alertId": alert_id, "source": "graph",
        "title": "Suspicious PowerShell command line", "category": "Execution", "severity": severity,
        "maxSeverity": severity, "status": "inProgress", "createdDateTime": "2026-11-27T08:01:02.0000000Z",
        "lastUpdateDateTime": UPDATED, "deviceName": "srv-01", "deviceGroup": "Servers", "userName": "",
        "mitreTechniques": json.dumps(["T1059.001"]), "description": "PowerShell ran an encoded command.",
        "portalLink": f"https://security.microsoft.com/alerts/{alert_id}?tid={tenant_id}"})
    for row in obligations:
        alerts.upsert_entity({"PartitionKey": tenant_id, "RowKey": obligation_key(alert_id, row["reason"]),
                              "alertId": alert_id, "createdAt": SEEN, "attempts": 0, **row})
    return tenant_id, alert_id


def rule(tenant_id: str, address: str, **fields: Any) -> Rule:
    return Rule.from_json({"id": uuid.uuid4().hex, "name": "SOC rises", "recipients": [address],
                           "scope": {"tenants": [tenant_id]}, "notifyOnSeverityRise": True, **fields})


def plan(tables: tuple[TableClient, TableClient], tenant_id: str, rules: list[Rule]) -> dict[str, Any]:
    alerts, tenants = tables
    return dict(plan_tenant(alerts, tenants, lambda: rules, run_id=f"run-{uuid.uuid4().hex[:8]}",
                            tenant_id=tenant_id, now=datetime.now(UTC), stale_after=timedelta(minutes=10)))


def alert_row(tables: tuple[TableClient, TableClient], tenant_id: str, alert_id: str) -> dict[str, Any]:
    return dict(tables[0].get_entity(tenant_id, alert_key(alert_id)))


def tenant_row(tables: tuple[TableClient, TableClient], tenant_id: str) -> dict[str, Any]:
    return dict(tables[1].get_entity("tenant", tenant_id))


def test_a_rise_from_low_to_high_says_so_in_subject_text_and_html(tables, smtp, maildev):
    tenant_id, alert_id = seed(tables, severity="high", obligations=[
        {"reason": "new", "severity": "low", "state": "done"},
        {"reason": "severity-High", "severity": "high", "state": "pending"}])
    address = recipient()
    r = rule(tenant_id, address)
    (spec,) = plan(tables, tenant_id, [r])["messages"]
    assert (spec["reason"], spec["previousSeverity"]) == ("severity-High", "Low")

    message = render_alert_email(alert_row(tables, tenant_id, alert_id), tenant_row(tables, tenant_id), r, address,
                                 message_id="rise-1", sender=SENDER, rise=severity_rise(spec))
    mail = deliver(smtp, maildev, message)
    assert mail["subject"] == "Contoso Ltd: Severity rose from Low to High: Suspicious PowerShell command line"
    assert "raised a new alert" not in mail["text"] + mail["html"]
    assert ("Microsoft Defender raised the severity of an alert in a customer tenant from Low to High "
            "(seen 2026-11-27 09:15 UTC).") in mail["text"]
    for fact in ("Severity: High", "Severity change: rose from Low to High", "Rise seen: 2026-11-27 09:15 UTC",
                 "Last updated: 2026-11-27 09:14 UTC", "Detected: 2026-11-27 08:01 UTC"):
        assert fact in mail["text"]
    assert "Severity rose to High</td>" in mail["html"]
    assert "rose from Low to High" in mail["html"] and "2026-11-27 09:15 UTC" in mail["html"]


def test_the_level_risen_from_is_the_highest_before_the_rise(tables):
    # Low when first stored, then Medium, now High: the High rise is from Medium, the Medium one from Low.
    tenant_id, _ = seed(tables, severity="high", obligations=[
        {"reason": "new", "severity": "low", "state": "done"},
        {"reason": "severity-Medium", "severity": "medium", "state": "pending"},
        {"reason": "severity-High", "severity": "high", "state": "pending"}])
    specs = plan(tables, tenant_id, [rule(tenant_id, recipient())])["messages"]
    assert {s["reason"]: s["previousSeverity"] for s in specs} == {"severity-Medium": "Low", "severity-High": "Medium"}


def test_a_backfilled_alert_without_earlier_obligations_rises_to_high_without_a_made_up_level(tables, smtp,
                                                                                                maildev):
    # Alerts created before the tenant's activation get no `new` obligation: the first level is unknown.
    tenant_id, alert_id = seed(tables, severity="high", obligations=[
        {"reason": "severity-High", "severity": "high", "state": "pending"}])
    address = recipient()
    r = rule(tenant_id, address)
    (spec,) = plan(tables, tenant_id, [r])["messages"]
    assert spec["previousSeverity"] == ""
    mail = deliver(smtp, maildev, render_alert_email(alert_row(tables, tenant_id, alert_id),
                                                     tenant_row(tables, tenant_id), r, address, message_id="rise-2",
                                                     sender=SENDER, rise=severity_rise(spec)))
    assert mail["subject"] == "Contoso Ltd: Severity rose to High: Suspicious PowerShell command line"
    assert "Severity change: rose to High" in mail["text"] and " from " not in mail["subject"]


def test_a_previous_level_recorded_on_the_obligation_is_used(tables):
    tenant_id, _ = seed(tables, severity="high", obligations=[
        {"reason": "severity-High", "severity": "high", "state": "pending", "previousSeverity": "medium"}])
    (spec,) = plan(tables, tenant_id, [rule(tenant_id, recipient())])["messages"]
    assert spec["previousSeverity"] == "Medium"


def test_a_new_alert_email_is_unchanged_and_not_called_a_rise(tables, smtp, maildev):
    tenant_id, alert_id = seed(tables, severity="medium", obligations=[
        {"reason": "new", "severity": "medium", "state": "pending"}])
    address = recipient()
    r = rule(tenant_id, address)
    (spec,) = plan(tables, tenant_id, [r])["messages"]
    assert severity_rise(spec) is None
    mail = deliver(smtp, maildev, render_alert_email(alert_row(tables, tenant_id, alert_id),
                                                     tenant_row(tables, tenant_id), r, address, message_id="new-1",
                                                     sender=SENDER, rise=severity_rise(spec)))
    assert mail["subject"] == "Contoso Ltd: Medium-severity alert: Suspicious PowerShell command line"
    assert "Microsoft Defender raised a new alert in a customer tenant." in mail["text"]
    assert "rose" not in mail["text"]


def test_a_digest_marks_the_raised_alerts(tables, smtp, maildev):
    tenant_id, raised_id = seed(tables, severity="high", obligations=[
        {"reason": "new", "severity": "low", "state": "done"},
        {"reason": "severity-High", "severity": "high", "state": "pending"}])
    address = recipient()
    r = rule(tenant_id, address, mode="digest")
    _, new_id = seed(tables, severity="medium", obligations=[
        {"reason": "new", "severity": "medium", "state": "pending"}])
    (item,) = plan(tables, tenant_id, [r])["digest"]
    assert (item["reason"], item["previousSeverity"]) == ("severity-High", "Low")

    tenant = tenant_row(tables, tenant_id)
    raised = alert_row(tables, tenant_id, raised_id)
    new = {**raised, "alertId": new_id, "title": "New alert", "severity": "medium"}
    items = [(tenant, raised, severity_rise(item)), (tenant, new, None)]
    mail = deliver(smtp, maildev, render_digest_email(items, r, address, total=2, message_id="digest-rise",
                                                      sender=SENDER))
    assert mail["subject"] == "Alert digest: 1 new alert and 1 alert raised in severity"
    assert "[High, rose from Low to High] Suspicious PowerShell command line" in mail["text"]
    assert "[Medium] New alert" in mail["text"]
    assert "rose from Low to High</div>" in mail["html"]


def test_a_digest_with_unlisted_alerts_does_not_claim_they_are_all_new():
    tenant = {"PartitionKey": "tenant", "RowKey": str(uuid.uuid4()), "displayName": "Contoso Ltd"}
    alert = {"PartitionKey": tenant["RowKey"], "alertId": "da1", "title": "Raised", "severity": "high",
             "createdDateTime": "2026-11-27T08:01:02.0000000Z"}
    r = rule(tenant["RowKey"], recipient(), mode="digest")
    rise = severity_rise({"reason": "severity-High", "previousSeverity": "medium"})
    message = render_digest_email([(tenant, alert, rise)], r, "soc@mssp.example", total=5, message_id="d",
                                  sender=SENDER)
    assert message.subject == "Alert digest: 5 new or raised alerts"
    assert "[High, rose from Medium to High] Raised" in message.text


@pytest.mark.parametrize(("about", "expected"), [
    ({"reason": "new"}, None),
    ({"reason": "severity-Critical"}, None),
    ({"reason": "severity-High", "previousSeverity": "high"}, "to High"),  # not a rise from that level: not said
    ({"reason": "severity-Medium", "previousSeverity": "<b>Low</b>"}, "to Medium"),
    ({"reason": "severity-High", "previousSeverity": "Informational"}, "from Informational to High"),
])
def test_only_a_known_lower_level_is_named_as_the_one_risen_from(about, expected):
    rise = severity_rise(about)
    assert (rise.change() if rise else None) == expected
