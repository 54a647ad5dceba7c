"""The notification run through the local host's real Durable replay: planning per tenant, digests merged
across tenants, sends fanned out in sub-orchestrations, obligations completed and markers cleared."""

from __future__ import annotations

import json


def test_each_matching_alert_reaches_each_recipient_once_and_obligations_end_done(world):
    tenant = world.tenant("Contoso")
    first, second = world.recipient(), world.recipient()
    world.rule([tenant], [first, second])
    alerts = [world.alert(tenant), world.alert(tenant, severity="medium")]

    summary = world.run()

    assert summary["sent"] == 4 and summary["carriedOver"] == 0 and summary["duplicates"] == 0
    for address in (first, second):
        subjects = sorted(m["subject"] for m in world.emails_to(address))
        assert len(subjects) == 2
    assert {row["alertId"] for row in world.obligations(tenant)} == set(alerts)
    assert {row["state"] for row in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_every_delivery_is_recorded_sent_with_its_alert_rule_and_recipient(world):
    tenant = world.tenant()
    recipient = world.recipient()
    rule_id = world.rule([tenant], [recipient])
    alert_id = world.alert(tenant)

    world.run()

    [row] = world.deliveries(tenant)
    assert (row["state"], row["alertId"], row["ruleId"], row["recipient"]) == ("sent", alert_id, rule_id, recipient)
    assert row["duplicates"] == 0


def test_a_digest_rule_sends_one_email_per_recipient_listing_alerts_of_all_its_tenants(world):
    tenants = [world.tenant("Contoso"), world.tenant("Fabrikam")]
    recipient = world.recipient()
    rule_id = world.rule(tenants, [recipient], mode="digest", name="Digest")
    alerts = [world.alert(tenant, title=f"Digest alert of {tenant}") for tenant in tenants]

    run_id = world.start_run()
    summary = world.wait_run(run_id)

    [email] = world.emails_to(recipient)
    assert summary["sent"] == 1
    assert all(f"Digest alert of {tenant}" in email["text"] for tenant in tenants)
    [row] = world.deliveries(f"digest|{rule_id}|{recipient}")
    assert row["digestId"] == f"{run_id}|{rule_id}|{recipient}" and row["RowKey"].startswith(f"{run_id}|")
    # What the digest covered is recorded with it: each tenant's `new` obligation, both alerts listed.
    assert (row["state"], row["coveredCount"], row["total"]) == ("sent", 2, 2)
    assert sorted(alert for _, alert in json.loads(row["listed"])) == sorted(alerts)
    assert all(world.marker(tenant) is False for tenant in tenants)


def test_a_tenant_without_matching_rules_has_its_obligations_done_and_marker_cleared(world):
    tenant = world.tenant()
    world.alert(tenant, severity="low")
    world.rule([tenant], [world.recipient()], severities=["High"])

    summary = world.run()

    assert summary["emails"] == 0
    assert {row["state"] for row in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_thousands_of_recipients_fan_out_in_batches_with_few_replays(world):
    tenant = world.tenant()
    recipients = [world.recipient() for _ in range(50)]
    world.rule([tenant], recipients)
    for _ in range(5):
        world.alert(tenant)

    run_id = world.start_run()
    summary = world.wait_run(run_id)

    assert summary["sent"] == 250
    assert world.replays(run_id) <= 10
