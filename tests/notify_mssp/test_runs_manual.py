# ruff: noqa: F811 - pytest fixtures imported from test_crash are parameters here
"""Manual starts of the ingestion timer (the admin API, the portal's Run button) never share a run id with
another start, so a second start's digests are never taken for the first's (docs/NOTIFICATIONS.md).

The timer's schedule is yearly here, so every start in a test is manual and names the same upcoming tick.
Tenants are `paused`: ingestion skips them, the notification run sweeps their markers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from local.run.cycle import delivery_summary, duplicate_emails, fire_timer, orchestration_instances
from local.run.stack import LocalStack
from tests.notify_mssp.conftest import BASE_SETTINGS, World
from tests.notify_mssp.test_crash import CLAIM_TIMEOUT_S, HoldingRelay, relay, wait_for  # noqa: F401


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, relay: HoldingRelay) -> Iterator[LocalStack]:
    settings = {**BASE_SETTINGS, "NOTIFY_CLAIM_TIMEOUT": f"{CLAIM_TIMEOUT_S}s", "DUPLICATE_POLICY": "resend",
                "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port), "FETCH_ALERTS_SCHEDULE": "0 0 0 1 1 *"}
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify-manual")), with_maildev=True,
                             extra_settings=settings)
    assert stack.maildev is not None
    relay.upstream_port = stack.maildev.smtp_port
    yield stack
    stack.stop()


def paused_tenant(world: World) -> str:
    tenant = world.tenant()
    world.table("Tenants").update_entity({"PartitionKey": "tenant", "RowKey": tenant, "status": "paused"})
    return tenant


def titled_alert(world: World, tenant: str) -> tuple[str, str]:
    title = f"Alert {uuid.uuid4().hex[:10]}"
    return world.alert(tenant, title=title), title


def manual_tick(world: World) -> datetime:
    since = datetime.now(UTC) - timedelta(milliseconds=500)
    fire_timer(world.stack, "fetch_alerts")
    return since


def finished_runs(world: World, since: datetime) -> list[dict]:
    return [i for i in orchestration_instances(world.stack, "notify_mssp", since)
            if i.get("runtimeStatus") in ("Completed", "Failed", "Terminated")]


def listing(world: World, recipient: str, title: str) -> int:
    return sum(1 for e in world.emails_to(recipient) if title in str(e.get("text") or ""))


def test_two_manual_ticks_in_one_minute_run_under_their_own_ids_and_send_every_digest(world: World):
    tenant, recipient = paused_tenant(world), world.recipient()
    world.rule([tenant], [recipient], mode="digest")
    _, first = titled_alert(world, tenant)
    since = manual_tick(world)
    wait_for(lambda: len(finished_runs(world, since)) >= 1)
    _, second = titled_alert(world, tenant)
    since_second = manual_tick(world)
    wait_for(lambda: len(finished_runs(world, since_second)) >= 1)

    wait_for(lambda: listing(world, recipient, first) and listing(world, recipient, second)
             and {o["state"] for o in world.obligations(tenant)} == {"done"})
    # The e-mails and obligations are done before a run's last activities: wait for both runs to end.
    wait_for(lambda: len(finished_runs(world, since)) >= 2)
    ids = [i["instanceId"] for i in finished_runs(world, since)]
    assert len(ids) == len(set(ids)) == 2 and all("-manual-" in i for i in ids)
    assert (listing(world, recipient, first), listing(world, recipient, second)) == (1, 1)


def test_double_tick_and_a_kill_mid_send_complete_nothing_unsent_and_count_every_repeat(world: World,
                                                                                       relay: HoldingRelay):
    """The closing-note numbers: a manual tick killed mid-send, then two ticks of the same minute."""
    tenant, digest_to, alert_to = paused_tenant(world), world.recipient(), world.recipient()
    world.rule([tenant], [digest_to], mode="digest")
    world.rule([tenant], [alert_to])
    alerts = [titled_alert(world, tenant) for _ in range(6)]
    counted_before = delivery_summary(world.table("DeliveryLog"))["duplicates"]

    relay.release.clear()
    relay.forwarded, relay.hold_after = 0, 3
    manual_tick(world)
    wait_for(lambda: relay.forwarded > 3)
    world.host.kill()
    assert world.host.wait_exit(30) is not None
    relay.hold_after = None
    relay.release.set()
    world.stack.start_host()
    alerts += [titled_alert(world, tenant) for _ in range(3)]
    time.sleep(CLAIM_TIMEOUT_S + 0.5)  # the dead run's claims become abandoned
    since = manual_tick(world)
    manual_tick(world)  # the double tick: both name the same upcoming occurrence
    wait_for(lambda: len(finished_runs(world, since)) >= 2 and
             {o["state"] for o in world.obligations(tenant)} == {"done"}, timeout=90)

    by_title = {title: alert for alert, title in alerts}
    done_without_email = [o["RowKey"] for o in world.obligations(tenant) if o["state"] == "done" and not (
        any(listing(world, digest_to, t) for t, a in by_title.items() if a == o["alertId"])
        and any(listing(world, alert_to, t) for t, a in by_title.items() if a == o["alertId"]))]
    missing = [(t, r) for t in by_title for r in (digest_to, alert_to) if not listing(world, r, t)]
    # Repeats in the inbox: extra copies of a per-alert e-mail, and digests listing an alert an earlier
    # digest already listed.
    repeats = duplicate_emails(world.emails_to(alert_to))
    seen: set[str] = set()
    for email in sorted(world.emails_to(digest_to), key=lambda e: str(e.get("date") or "")):
        listed = {t for t in by_title if t in str(email.get("text") or "")}
        repeats += 1 if listed & seen else 0
        seen |= listed
    counted = delivery_summary(world.table("DeliveryLog"))["duplicates"] - counted_before
    print(f"\nclosing note: obligations done without an e-mail={len(done_without_email)} "
          f"e-mails missing={len(missing)} duplicates in the inbox={repeats} counted={counted}")
    assert done_without_email == [] and missing == []
    assert repeats <= counted
