"""Chaos on ingestion spread over several host instances (docs/ARCHITECTURE.md, "Ingestion on a queue"): one
instance SIGKILLed mid-tick, and the queue service unreachable mid-tick. Either way the tick completes on what is
left, every alert version is stored once, every `new` obligation exists once, and no tenant is ingested by two
invocations at once (read from the instances' own logs).

The stack runs three instances against one Azurite, each with the product's host.json (16 tenants at once per
instance), and a few hundred tenants whose Graph calls are slowed so that a tick lasts long enough to break in the
middle. The instances reach the queue service through a TCP proxy (tests/tcp_outage.py) that the second test cuts;
tables and blobs are reached directly.

Two lengths are shortened for the crash, and must keep the relation the product relies on. A killed instance's
messages stay invisible for what is left of their in-flight visibility (LOCAL_HOST_QUEUE_VISIBILITY_SECONDS; in
Azure the Storage Queues extension's QueueListener receives with 10 minutes and renews at half of it, as
local/host/queues.py records), so a redelivery comes at least half of it after the kill; the dead holder's lease
(FETCH_LEASE_SECONDS, renewed every third of it: fetch_alerts/lease.py) expires at most its length after the kill.
A redelivery that found the lease still held would be completed as a duplicate without a pass, and the tenant
would wait for the next tick; so half the visibility must exceed the lease (in Azure 300 s against 60 s; here 10 s
against 5 s).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from local.run.stack import LocalStack
from tests.fetch_alerts.harness import (
    BehindOutage,
    IngestionLog,
    Pass,
    add_tenants,
    assert_one_pass_at_a_time,
    cloud_now,
    fire,
    ingestion_log,
    iso,
    retire_tenants,
    run_tick,
    stack_behind_outage,
    table,
    wait_finished,
    wait_for,
)
from tests.fetch_alerts.truth import (
    assert_rows_match_truth,
    assert_versions_listed_once,
    ground_truth,
    stored_rows_by_tenant,
)

pytestmark = pytest.mark.slow

INSTANCES = 3
TENANTS = 200
ALERTS = 2  # per tenant, all created after its activation: each owes one `new` obligation
LATENCY_MS = 1500  # every Graph call of every tenant
VISIBILITY_SECONDS = 20
LEASE_SECONDS = 5
OUTAGE_SECONDS = 6
TICK_TIMEOUT = 170.0  # generous: a tick takes well under a minute on an idle machine
SETTINGS = {
    "LOCAL_HOST_QUEUE_VISIBILITY_SECONDS": str(VISIBILITY_SECONDS),
    "FETCH_LEASE_SECONDS": str(LEASE_SECONDS),
    # The drain wait outlasts the test's own deadline: the tick ends because its queue is empty, not because the
    # timer gave up.
    "FETCH_DRAIN_WAIT_SECONDS": str(int(TICK_TIMEOUT) + 30),
}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BehindOutage]:
    with stack_behind_outage(tmp_path_factory.mktemp("chaos"), "queue", INSTANCES, **SETTINGS) as behind:
        yield behind


@pytest.fixture
def tenants(chaos: BehindOutage) -> Iterator[list[str]]:
    """This test's tenants, on every instance running (one killed by an earlier test comes back); retired after, so
    that the next test's tick has only its own."""
    stack = chaos.stack
    stack.start_hosts(INSTANCES)
    chaos.outage.restore()
    now = cloud_now(stack)
    created = add_tenants(stack, TENANTS, latency_ms=LATENCY_MS, activated_at=now - timedelta(hours=2),
                          alerts={"count": ALERTS, "start": iso(now - timedelta(hours=1)), "lagSeconds": 0,
                                  "updatesPerAlert": 0})
    yield created
    retire_tenants(stack, created)


@dataclass
class Tick:
    fired_at: datetime
    before: int  # the timer's ended invocations before it, on instance 0
    succeeded: int  # the timer's successful invocations before it


def start_tick(stack: LocalStack) -> Tick:
    """Fire the ingestion timer on instance 0 (the admin API), which holds the timers' locks."""
    assert stack.host is not None
    succeeded = stack.host.invocations("fetch_alerts")["succeeded"]
    fired_at = datetime.now(UTC)
    return Tick(fired_at, fire(stack), succeeded)


@dataclass
class Outcome:
    log: IngestionLog  # every pass of the test's tenants, the catch-up tick's included
    run_id: str  # the tick's
    waited: float  # how long the tick's timer waited for its queue to drain
    caught_up: list[str]  # tenants whose pass failed in the tick, ingested by the next one


def finish_tick(stack: LocalStack, tick: Tick, tenant_ids: list[str],
                died_at: dict[int, datetime] | None = None) -> Outcome:
    """Wait for the tick's timer invocation to end and check what it promised: it waited until its queue was empty,
    and every tenant ended with its alerts stored once, one `new` obligation each, its lease given back, and never
    two passes at once.

    A pass can fail for a reason no chaos of the test's caused; the product records the failure on the tenant,
    completes the message, and the next tick ingests the tenant (docs/ARCHITECTURE.md, "Ingestion on a queue").
    That next tick is run here for those tenants only, and they are reported. A write reset as Azurite closes its
    connection idle for 5 s is not such a failure: storage, not the tenant, so that message fails and is delivered
    again within the tick (tests/fetch_alerts/test_storage_drops.py)."""
    wait_finished(stack, tick.before, timeout=TICK_TIMEOUT)
    assert stack.host is not None
    assert stack.host.invocations("fetch_alerts")["succeeded"] == tick.succeeded + 1, "the timer failed"
    log = ingestion_log(stack, tenant_ids)
    runs = {found.run_id for found in log.passes}
    assert len(runs) == 1, f"passes of several runs: {sorted(runs)}"
    run_id = runs.pop()
    drained = re.search(rf"fetch_alerts {re.escape(run_id)}: the ingestion queue is empty after ([0-9.]+)s",
                        stack.host.log_path.read_text(errors="replace"))
    assert drained, "the timer stopped waiting before its queue was empty"
    failed = [t for t in tenant_ids if not any(found.result == "complete" for found in log.of(t))]
    if failed:
        rows = {row["RowKey"]: dict(row) for row in table(stack, "Tenants").query_entities("PartitionKey eq 'tenant'")}
        for tenant_id in failed:  # recorded on the tenant, as the product records a failed pass
            assert rows[tenant_id]["consecutiveFailures"] == 1 and rows[tenant_id]["lastErrorClass"], rows[tenant_id]
        retire_tenants(stack, set(tenant_ids) - set(failed))
        run_tick(stack, timeout=TICK_TIMEOUT)
        log = ingestion_log(stack, tenant_ids)
    rows = {row["RowKey"]: dict(row) for row in table(stack, "Tenants").query_entities("PartitionKey eq 'tenant'")}
    leases = {row["RowKey"] for row in table(stack, "IngestLeases").list_entities()}
    stored = stored_rows_by_tenant(stack)
    with ThreadPoolExecutor(max_workers=8) as pool:
        truths = dict(zip(tenant_ids, pool.map(lambda tenant_id: ground_truth(stack, tenant_id), tenant_ids),
                          strict=True))
    for tenant_id in tenant_ids:
        row = rows[tenant_id]
        assert row.get("lastSuccess") and row["lastSuccess"] >= tick.fired_at, f"tenant {tenant_id}: no pass succeeded"
        assert row["passComplete"] is True and not row.get("consecutiveFailures"), f"tenant {tenant_id}: {row}"
        assert any(found.result == "complete" for found in log.of(tenant_id)), f"tenant {tenant_id}: no complete pass"
        assert tenant_id not in leases, f"tenant {tenant_id}: its lease was left behind"
        truth, alerts = truths[tenant_id], stored.get(tenant_id, [])
        try:
            report = assert_rows_match_truth(truth, alerts, "graph", row["activatedAt"])
            assert (report.alerts, report.new_obligations) == (ALERTS, ALERTS), report
            assert assert_versions_listed_once(truth, alerts) == ALERTS
        except AssertionError as exc:
            raise AssertionError(f"tenant {tenant_id}: {exc}") from None
    assert_one_pass_at_a_time(log, died_at)
    return Outcome(log, run_id, float(drained.group(1)), failed)


def _open(log: IngestionLog, instance: int) -> list[Pass]:
    return [found for found in log.passes if found.instance == instance and found.ended is None]


def test_an_instance_killed_mid_tick_leaves_its_tenants_to_the_survivors(chaos: BehindOutage,
                                                                        tenants: list[str]) -> None:
    stack = chaos.stack
    victim = INSTANCES - 1  # not instance 0, which runs the timer
    tick = start_tick(stack)

    def victim_mid_tick() -> bool:
        passes = [found for found in ingestion_log(stack, tenants).passes if found.instance == victim]
        running = sum(found.ended is None for found in passes)
        return running >= 3 and len(passes) > running

    wait_for(victim_mid_tick, TICK_TIMEOUT, "the victim ingesting several tenants at once", poll=0.25)
    stack.hosts[victim].kill()
    died_at = datetime.now(UTC)

    outcome = finish_tick(stack, tick, tenants, died_at={victim: died_at})
    log = outcome.log
    cut_short = _open(log, victim)
    assert cut_short, "the victim died with no pass running"
    # Every message the victim held when it died comes back once its visibility passes, to a survivor, with its
    # DequeueCount one higher; the passes the kill cut short are done again from those messages.
    held = log.received[victim]
    redelivered = [found for found in log.passes if found.message_id in held and found.instance != victim]
    assert redelivered, "no message of the victim's was delivered again"
    first: dict[str, Pass] = {}
    for found in redelivered:  # passes are in start order
        first.setdefault(found.message_id, found)
    assert all(found.dequeue == held[message] + 1 == 2 for message, found in first.items()), \
        [(found.tenant_id, held[message], found.dequeue) for message, found in first.items()]
    assert all(found.started > died_at for found in redelivered)
    redone = {found.message_id for found in redelivered if found.result == "complete"}
    assert {found.message_id for found in cut_short} <= redone, "a pass the kill cut short was not done again"
    # Each redelivery found the dead holder's lease expired (the module's docstring): none was a duplicate.
    assert log.duplicates == []
    # Survivors' own messages may come back too (a failed delivery, or a delete refused for a pop receipt that a
    # renewal changed): at least once, one pass after another, counted here.
    again = [found for found in log.passes if found.dequeue > 1 and found.message_id not in held]
    print(f"\nkilled instance {victim} {(died_at - tick.fired_at).total_seconds():.1f}s into the tick with "
          f"{len(cut_short)} passes running and {len(held)} messages received; {len(first)} of them redelivered "
          f"(dequeue 2) to the survivors; {len(again)} other redeliveries; the timer waited {outcome.waited:.1f}s "
          f"for its queue to drain; {len(outcome.caught_up)} failed passes caught up by the next tick")


def test_the_queue_service_unreachable_mid_tick_is_ridden_out(chaos: BehindOutage, tenants: list[str]) -> None:
    stack, outage = chaos.stack, chaos.outage
    tick = start_tick(stack)
    wait_for(lambda: sum(found.ended is not None for found in ingestion_log(stack, tenants).passes) >= TENANTS // 4,
             TICK_TIMEOUT, "a quarter of the tick's tenants ingested", poll=0.25)
    refused_before = outage.refused
    reset = outage.cut()
    cut_at = datetime.now(UTC)
    # The outage lasts OUTAGE_SECONDS, and at least until the instances came back to it.
    wait_for(lambda: outage.refused > refused_before
             and datetime.now(UTC) - cut_at >= timedelta(seconds=OUTAGE_SECONDS), OUTAGE_SECONDS + 60,
             "the instances meeting the outage")
    outage.restore()
    restored_at = datetime.now(UTC)

    outcome = finish_tick(stack, tick, tenants)
    log = outcome.log
    assert reset > 0, "no connection was open to cut"
    assert any(found.started > restored_at for found in log.passes if found.run_id == outcome.run_id), \
        "the tick was over before the outage ended"
    redelivered = [found for found in log.passes if found.dequeue > 1]
    print(f"\nqueue service unreachable {(cut_at - tick.fired_at).total_seconds():.1f}s into the tick for "
          f"{(restored_at - cut_at).total_seconds():.1f}s: {reset} connections reset, "
          f"{outage.refused - refused_before} refused; {len(redelivered)} passes of redelivered messages, "
          f"{len(log.duplicates)} duplicate deliveries completed without work; the timer waited "
          f"{outcome.waited:.1f}s for its queue to drain; {len(outcome.caught_up)} failed passes caught up by the "
          "next tick")
