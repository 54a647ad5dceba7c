"""The delivery log keeps each (alert or digest, rule, recipient) to one e-mail when Durable delivers an
activity twice or two runs overlap, and `delivery_summary` counts what `make run` reports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.run.cycle import delivery_summary
from shared.names import PLAN_TENANT_ACTIVITY, SEND_EMAILS_ACTIVITY
from tests.notify_mssp.conftest import World


@pytest.fixture
def clean_faults(world: World) -> Iterator[World]:
    yield world
    world.faults({})


@pytest.mark.parametrize("activity", [SEND_EMAILS_ACTIVITY, PLAN_TENANT_ACTIVITY])
def test_an_activity_delivered_twice_sends_each_email_once(clean_faults: World, activity: str):
    world = clean_faults
    tenant = world.tenant()
    recipients = [world.recipient(), world.recipient()]
    world.rule([tenant], recipients)
    world.alert(tenant)
    world.faults({"duplicate_delivery": {"function": activity, "count": 1}})

    summary = world.run()

    assert [len(world.emails_to(r)) for r in recipients] == [1, 1]
    assert summary["duplicates"] == 0
    assert {row["state"] for row in world.deliveries(tenant)} == {"sent"}
    assert {o["state"] for o in world.obligations(tenant)} == {"done"}


def test_two_overlapping_runs_send_each_email_once(world: World):
    tenants = [world.tenant(), world.tenant()]
    recipients = [world.recipient(), world.recipient()]
    world.rule(tenants, recipients)
    alerts = [world.alert(tenant) for tenant in tenants for _ in range(5)]

    first, second = world.start_run(), world.start_run()
    summaries = [world.wait_run(first), world.wait_run(second)]

    for recipient in recipients:
        assert len(world.emails_to(recipient)) == len(alerts)
    assert sum(s["sent"] for s in summaries) == len(alerts) * len(recipients)
    assert sum(s["duplicates"] for s in summaries) == 0
    for tenant in tenants:
        assert {o["state"] for o in world.obligations(tenant)} == {"done"}
        assert world.marker(tenant) is False


def test_a_later_run_does_not_send_what_was_already_sent(world: World):
    tenant = world.tenant()
    recipient = world.recipient()
    world.rule([tenant], [recipient])
    alert = world.alert(tenant)
    world.run()
    # The obligation pending again, as when a run died after sending and marking but before completing.
    world.table("Alerts").update_entity({"PartitionKey": tenant, "RowKey": f"obligation|{alert}|new",
                                         "state": "pending"})
    world.table("Tenants").update_entity({"PartitionKey": "tenant", "RowKey": tenant, "pendingNotifications": True})

    summary = world.run()

    assert (summary["alreadySent"], summary["sent"]) == (1, 0)
    assert len(world.emails_to(recipient)) == 1
    assert world.marker(tenant) is False


def test_delivery_summary_counts_possible_duplicates_and_permanent_failures(world: World):
    table = world.table("DeliveryLogSummaryTest")
    rows = [("sent", 0), ("sent", 1), ("skipped", 1), ("failed", 0), ("failed", 0), ("retry", 0)]
    for index, (state, duplicates) in enumerate(rows):
        table.upsert_entity({"PartitionKey": "t", "RowKey": str(index), "state": state, "duplicates": duplicates})

    assert delivery_summary(table) == {"duplicates": 2, "failures": 2}
