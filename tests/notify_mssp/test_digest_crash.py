# ruff: noqa: F811 - pytest fixtures imported from test_crash are parameters here
"""Digests across runs: a run restarted under an id that completed, and a host killed while a digest is
being sent. Every obligation ends `done` only once an e-mail covering it went out, and every e-mail that
may repeat an earlier one is counted in the delivery log.

Runs on test_crash's stack (the app sends through a relay that can hold an SMTP reply while the host is
killed)."""

from __future__ import annotations

import time
import uuid

from tests.notify_mssp.conftest import World
from tests.notify_mssp.test_crash import (  # noqa: F401 - fixtures of the shared crash stack
    CLAIM_TIMEOUT_S,
    HoldingRelay,
    _restart,
    kill_mid_send,
    live,
    notify_stack,
    relay,
    wait_for,
)


def _titled_alert(world: World, tenant: str) -> str:
    title = f"Digest alert {uuid.uuid4().hex[:10]}"
    world.alert(tenant, title=title)
    return title


def _emails_listing(world: World, recipient: str, title: str) -> int:
    return sum(1 for email in world.emails_to(recipient) if title in str(email.get("text") or ""))


def _delivered_and_done(world: World, tenant: str, recipient: str, titles: list[str]) -> bool:
    return (all(_emails_listing(world, recipient, t) for t in titles)
            and {o["state"] for o in world.obligations(tenant)} == {"done"})


def _done_without_email(world: World, tenant: str, recipient: str, titles: list[str]) -> list[str]:
    """Obligations `done` whose alert no e-mail to the recipient lists."""
    listed = {alert for t in titles if _emails_listing(world, recipient, t) for alert in _alert_ids(world, tenant, t)}
    return [o["RowKey"] for o in world.obligations(tenant) if o["state"] == "done" and o["alertId"] not in listed]


def _alert_ids(world: World, tenant: str, title: str) -> set[str]:
    rows = world.table("Alerts").query_entities("PartitionKey eq @t and title eq @title",
                                                parameters={"t": tenant, "title": title})
    return {str(r["alertId"]) for r in rows}


def test_a_run_restarted_under_a_completed_id_sends_the_digest_of_the_new_alerts(live: World):
    tenant, recipient = live.tenant(), live.recipient()
    rule = live.rule([tenant], [recipient], mode="digest")
    first = _titled_alert(live, tenant)
    run_id = live.start_run()
    live.wait_run(run_id)
    second = _titled_alert(live, tenant)

    # Durable allows starting an instance id again once it completed: the same run id, new obligations.
    live.wait_run(live.start_run(run_id))

    wait_for(lambda: _delivered_and_done(live, tenant, recipient, [first, second]))
    assert _done_without_email(live, tenant, recipient, [first, second]) == []
    assert (_emails_listing(live, recipient, first), _emails_listing(live, recipient, second)) == (1, 1)
    rows = live.deliveries(f"digest|{rule}|{recipient}")
    assert sorted((r["state"], r["coveredCount"], r["digestId"]) for r in rows) == \
        [("sent", 1, f"{run_id}|{rule}|{recipient}")] * 2


def test_a_host_killed_mid_digest_leaves_nothing_done_unsent_and_counts_the_repeat(live: World,
                                                                                 relay: HoldingRelay):
    tenant, recipient = live.tenant(), live.recipient()
    rule = live.rule([tenant], [recipient], mode="digest")
    before = [_titled_alert(live, tenant) for _ in range(3)]
    kill_mid_send(live, relay, recipient=recipient)  # the digest reached MailDev; its claim has no `sent`
    assert all(_emails_listing(live, recipient, t) == 1 for t in before)
    after = _titled_alert(live, tenant)  # ingested while the host was down

    _restart(live.stack, "resend")
    time.sleep(CLAIM_TIMEOUT_S + 0.5)  # the dead run's claims become abandoned
    live.run()

    titles = [*before, after]
    wait_for(lambda: _delivered_and_done(live, tenant, recipient, titles))
    assert _done_without_email(live, tenant, recipient, titles) == []
    rows = live.deliveries(f"digest|{rule}|{recipient}")
    # The killed digest is resolved and counted once; the recovery digest covers all four obligations.
    assert sorted((r["state"], r["duplicates"], r["coveredCount"]) for r in rows) == \
        [("sent", 0, 4), ("skipped", 1, 3)]
    assert len(live.emails_to(recipient)) == 2


def test_a_digest_a_dead_run_still_claims_is_not_sent_again_until_its_claim_is_abandoned(live: World,
                                                                                       relay: HoldingRelay):
    # The obligations are claimed at planning, the digest a moment later: a second run can find the
    # obligations' claims abandoned while the dead run's digest claim is still fresh. That digest may have
    # gone out; sending again then would be a repeat nobody counts.
    from datetime import UTC, datetime

    tenant, recipient = live.tenant(), live.recipient()
    rule = live.rule([tenant], [recipient], mode="digest")
    titles = [_titled_alert(live, tenant) for _ in range(2)]
    kill_mid_send(live, relay, recipient=recipient)
    _restart(live.stack, "resend")
    time.sleep(CLAIM_TIMEOUT_S + 0.5)  # the obligations' claims are abandoned now...
    log = live.table("DeliveryLog")
    for row in live.deliveries(f"digest|{rule}|{recipient}"):  # ...the dead digest's claim still fresh
        log.update_entity({**row, "claimedAt": datetime.now(UTC)})

    live.run()

    assert all(_emails_listing(live, recipient, t) == 1 for t in titles)  # not sent again
    assert _done_without_email(live, tenant, recipient, titles) == []
    time.sleep(CLAIM_TIMEOUT_S + 0.5)  # now the dead digest's claim is abandoned too
    live.run()
    wait_for(lambda: _delivered_and_done(live, tenant, recipient, titles))
    rows = live.deliveries(f"digest|{rule}|{recipient}")
    assert sum(r["duplicates"] for r in rows) == 1  # the possible repeat is counted, once
