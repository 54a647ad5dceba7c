"""Partial failures and retries through the local host's real replay: the app sends through an SMTP relay
in front of MailDev that the tests take down or make reject a recipient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.run.stack import LocalStack
from tests.notify_mssp.conftest import BASE_SETTINGS, SmtpRelay, World


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpRelay]:
    relay = SmtpRelay()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, relay: SmtpRelay) -> Iterator[LocalStack]:
    settings = {**BASE_SETTINGS, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port),
                "NOTIFY_SEND_MAX_ATTEMPTS": "6"}
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify-failures")), with_maildev=True,
                             extra_settings=settings)
    assert stack.maildev is not None
    relay.upstream_port = stack.maildev.smtp_port
    yield stack
    stack.stop()


@pytest.fixture
def healthy_relay(relay: SmtpRelay) -> Iterator[SmtpRelay]:
    relay.down, relay.rejected = False, set()
    yield relay
    relay.down, relay.rejected = False, set()


def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_smtp_down_is_retried_after_a_durable_timer_and_delivered_once_it_recovers(world: World, healthy_relay):
    tenant = world.tenant()
    recipient = world.recipient()
    world.rule([tenant], [recipient])
    world.alert(tenant)
    healthy_relay.down = True

    run_id = world.start_run()
    _wait_for(lambda: any(row["state"] == "retry" for row in world.deliveries(tenant)))
    healthy_relay.down = False
    summary = world.wait_run(run_id)

    assert summary["sent"] == 1 and summary["carriedOver"] == 0
    assert len(world.emails_to(recipient)) == 1
    [row] = world.deliveries(tenant)
    assert row["state"] == "sent" and row["attempts"] >= 2 and row["duplicates"] == 0
    assert {o["state"] for o in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_a_rejected_recipient_is_recorded_permanent_while_the_others_are_delivered(world: World, healthy_relay):
    tenant = world.tenant()
    good, bad = world.recipient(), world.recipient()
    world.rule([tenant], [good, bad])
    world.alert(tenant)
    healthy_relay.rejected = {bad}

    summary = world.run()

    assert summary["sent"] == 1 and summary["permanentFailures"] == 1
    assert len(world.emails_to(good)) == 1
    states = {row["recipient"]: row["state"] for row in world.deliveries(tenant)}
    assert states == {good: "sent", bad: "failed"}
    assert {o["state"] for o in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_a_permanent_failure_is_not_retried_by_later_runs(world: World, healthy_relay):
    tenant = world.tenant()
    bad = world.recipient()
    world.rule([tenant], [bad])
    alert = world.alert(tenant)
    healthy_relay.rejected = {bad}
    world.run()
    healthy_relay.rejected = set()

    # A new obligation for the same alert (as after a lost completion) must not resend to the failed address.
    world.table("Alerts").update_entity({"PartitionKey": tenant, "RowKey": f"obligation|{alert}|new",
                                         "state": "pending"})
    world.table("Tenants").update_entity({"PartitionKey": "tenant", "RowKey": tenant,
                                          "pendingNotifications": True})
    summary = world.run()

    assert summary["permanentFailures"] == 1 and summary["sent"] == 0
    assert world.emails_to(bad) == []
    assert world.marker(tenant) is False


def test_a_failing_recipient_of_one_tenant_never_stops_another_tenant(world: World, healthy_relay):
    failing, healthy = world.tenant("Failing"), world.tenant("Healthy")
    bad, good = world.recipient(), world.recipient()
    world.rule([failing], [bad])
    world.rule([healthy], [good])
    world.alert(failing)
    world.alert(healthy)
    healthy_relay.rejected = {bad}

    summary = world.run()

    assert summary["sent"] == 1 and summary["permanentFailures"] == 1
    assert len(world.emails_to(good)) == 1
    assert world.marker(failing) is False and world.marker(healthy) is False
