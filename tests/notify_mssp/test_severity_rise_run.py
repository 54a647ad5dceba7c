"""A severity rise through a whole notification run: the e-mail that reaches the inbox, per alert and in a
digest, says the severity rose and from what to what (the rise's obligation as ingestion writes it)."""

from __future__ import annotations

from datetime import UTC, datetime


def _rise(world, tenant_id: str, alert_id: str, *, previous: str, level: str) -> None:
    """What ingestion writes for a new version whose severity ranks higher: the row and a rise obligation."""
    from shared.alerts import alert_key, obligation_key

    alerts = world.table("Alerts")
    row = dict(alerts.get_entity(tenant_id, alert_key(alert_id)))
    row.update(severity=level.lower(), maxSeverity=level.lower())
    alerts.update_entity(row)
    world.table("Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "pendingNotifications": True})
    alerts.upsert_entity({"PartitionKey": tenant_id, "RowKey": obligation_key(alert_id, f"severity-{level}"),
                          "alertId": alert_id, "reason": f"severity-{level}", "severity": level.lower(),
                          "previousSeverity": previous, "createdAt": datetime.now(UTC), "state": "pending",
                          "attempts": 0})


def test_a_rise_e_mail_through_a_run_says_the_severity_rose_from_what_to_what(world):
    tenant = world.tenant("Contoso")
    recipient = world.recipient()
    world.rule([tenant], [recipient], severities=["Low", "High"], notifyOnSeverityRise=True)
    alert_id = world.alert(tenant, title="Credential dumping", severity="low")
    world.run()
    [first] = world.emails_to(recipient)
    assert "rose" not in first["subject"].lower()

    _rise(world, tenant, alert_id, previous="low", level="High")
    world.run()

    rise = next(m for m in world.emails_to(recipient) if m["subject"] != first["subject"])
    assert "Severity rose from Low to High" in rise["subject"] and "Credential dumping" in rise["subject"]
    assert "rose from Low to High" in rise["text"] and "raised a new alert" not in rise["text"]


def test_a_digest_through_a_run_marks_the_raised_alert(world):
    tenant = world.tenant("Fabrikam")
    recipient = world.recipient()
    world.rule([tenant], [recipient], mode="digest", name="Digest", severities=["Low", "Medium", "High"],
               notifyOnSeverityRise=True)
    raised = world.alert(tenant, title="Lateral movement", severity="low")
    world.run()
    _rise(world, tenant, raised, previous="low", level="Medium")
    world.alert(tenant, title="Fresh ransomware alert", severity="high")

    world.run()

    latest = [m for m in world.emails_to(recipient) if "Fresh ransomware alert" in m["text"]]
    assert len(latest) == 1
    text = latest[0]["text"]
    assert "rose from Low to Medium" in text and "Lateral movement" in text
