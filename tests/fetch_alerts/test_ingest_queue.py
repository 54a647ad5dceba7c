"""Ingestion on a queue, end to end on the local host (docs/ARCHITECTURE.md, "Ingestion on a queue"): the tick's
notification run e-mails what the tick's messages stored; a duplicate message for a tenant whose lease is held
is completed without a second pass; a tenant whose processing keeps failing ends in the poison queue with one
operational notice and holds up no other tenant.

The app reaches its tables through a storage fault proxy (tests/storage_faults.py); the host's own storage
(the queues, Durable) is Azurite itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fetch_alerts import lease as leases
from fetch_alerts.tenant_queue import INGEST_QUEUE, QueueConnection, TenantMessage
from local.run.cycle import finished_invocations, fire_timer, orchestration_instances, wait_for_orchestration
from local.run.stack import NEVER, LocalStack, register_mssp_app
from shared.incidents import poisoned_ingestions
from shared.tenants import TENANT_PARTITION
from tests.fetch_alerts.harness import (
    SECRET,
    add_alert,
    add_latency,
    add_tenant,
    cloud_now,
    fire,
    hours_ago,
    make_reread_due,
    run_tick,
    table,
    tenant_row,
    wait_finished,
    wait_for,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth
from tests.notify_mssp.conftest import World
from tests.storage_faults import StorageFaultProxy, start_table_proxy

OPS = "ops@mssp.example"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StorageFaultProxy]]:
    client_id = str(uuid.uuid4())
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("ingest-queue")), with_maildev=True, schedule=NEVER,
                             start_app=False, extra_settings={
                                 "MSSP_APP_CLIENT_ID": client_id, "MSSP_APP_CREDENTIAL": "secret",
                                 "MSSP_APP_CLIENT_SECRET": SECRET, "FETCH_BACKOFF_MS": "50",
                                 "FETCH_GRAPH_PAGE_SIZE": "5", "RETENTION_SCHEDULE": NEVER,
                                 "VERIFICATION_SCHEDULE": NEVER, "OPS_NOTICES_SCHEDULE": NEVER, "OPS_EMAIL": OPS,
                                 "SEND_RATE_PER_MINUTE": "0", "SEND_RATE_PER_DAY": "0",
                                 # A failed delivery is retried after 2 s instead of host.json's 30 s, through
                                 # the host's documented app-setting override of host.json values.
                                 "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:02"})
    proxy = start_table_proxy(stack.azurite)
    try:
        stack.settings["TABLES_CONNECTION_STRING"] = proxy.table_connection_string()
        register_mssp_app(stack.cloud, client_id, SECRET)
        stack.start_host()
        yield stack, proxy
    finally:
        stack.stop()
        proxy.stop()


@pytest.fixture
def stack(proxied: tuple[LocalStack, StorageFaultProxy]) -> LocalStack:
    return proxied[0]


def _api_calls(stack: LocalStack, tenant: str) -> int:
    return int(stack.cloud.control("GET", "stats").json()["apiRequests"].get(tenant, {}).get("graph", 0))


def _host_log(stack: LocalStack) -> str:
    return (stack.workdir / "host" / "host.log").read_text(errors="replace")


def _ingestion_lines(stack: LocalStack, tenant: str, what: str) -> list[str]:
    return [line for line in _host_log(stack).splitlines() if f"tenant {tenant}: {what}" in line]


def _queue(stack: LocalStack) -> Any:
    return QueueConnection(connection_string=stack.settings["AzureWebJobsStorage"]).client(INGEST_QUEUE)


def test_a_ticks_alerts_are_emailed_by_that_ticks_notification_run(stack: LocalStack) -> None:
    world = World(stack)
    tenant = add_tenant(stack, alerts={"lagSeconds": 0}, activated_at=cloud_now(stack) - timedelta(hours=1))
    recipient = world.recipient()
    world.rule([tenant], [recipient])
    titles = [f"Queue tick alert {uuid.uuid4().hex[:8]}" for _ in range(3)]
    for title in titles:
        add_alert(stack, tenant, title=title, severity="high")
    add_latency(stack, tenant, 1500)  # the pass takes seconds: a run started at once would find nothing pending
    started = datetime.now(UTC) - timedelta(seconds=1)
    run_tick(stack)
    run = wait_for_orchestration(stack, "notify_mssp", started)
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
    assert run["runtimeStatus"] == "Completed"
    assert len(orchestration_instances(stack, "notify_mssp", started)) == 1  # the tick's own run, nothing later
    assert (run["output"]["obligations"], run["output"]["sent"]) == (3, 3)
    for title in titles:
        assert sum(1 for e in world.emails_to(recipient) if title in str(e.get("text") or "")) == 1


def test_a_tenant_offboarded_during_its_pass_gets_no_reread_in_that_message(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 3, "start": hours_ago(stack, 2), "lagSeconds": 0,
                                       "updatesPerAlert": 0})
    run_tick(stack)
    make_reread_due(stack, tenant, "hour")
    due_since = tenant_row(stack, tenant)["rereadHourAt"]
    calls = _api_calls(stack, tenant)
    add_latency(stack, tenant, 5000)  # the regular pass holds the lease for five seconds before its re-read
    before = fire(stack)
    wait_for(lambda: leases.current(table(stack, "IngestLeases"), tenant), 60, "the tick's pass holds the lease")
    table(stack, "Tenants").upsert_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant,
                                           "status": "offboarded"})
    wait_finished(stack, before)
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
    assert _api_calls(stack, tenant) == calls + 1  # the regular pass under way, no re-read after it
    row = tenant_row(stack, tenant)
    assert row["status"] == "offboarded" and row["rereadHourAt"] == due_since and not row.get("rereadHourState")
    assert len(_ingestion_lines(stack, tenant, "ingestion started")) == 2


def test_a_tenants_message_reads_its_row_once_and_writes_it_once_unless_a_reread_is_due(
        proxied: tuple[LocalStack, StorageFaultProxy]) -> None:
    # The Tenants partition is the first limit of a deployment's size (docs/CAPACITY.md, "What caps first"): a
    # message reads the tenant's row once, when it starts, and whether a re-read is due is decided on the row as the
    # pass left it. Alerts from before the activation owe no obligation, so nothing sets the marker here.
    stack, proxy = proxied
    tenant = add_tenant(stack, alerts={"count": 3, "start": hours_ago(stack, 2), "lagSeconds": 0,
                                       "updatesPerAlert": 0})

    def tick() -> list[str]:
        before = len(proxy.row_requests("Tenants", TENANT_PARTITION, tenant))
        run_tick(stack)
        return proxy.row_requests("Tenants", TENANT_PARTITION, tenant)[before:]

    first = tick()  # the look-back: it completes, and its merge starts the re-reads' clocks
    assert first == ["GET", "PATCH"], first
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is True and row["alertsStored"] == 3
    assert row["lastSuccess"] <= row["rereadHourAt"] == row["rereadDayAt"]  # started by the completing merge
    assert tick() == ["GET", "PATCH"]  # a quiet tick: no re-read due
    calls = _api_calls(stack, tenant)
    make_reread_due(stack, tenant, "hour")
    due = tick()
    # The row as the pass left it says the hourly re-read is due: the re-read reads the row again (a tenant
    # disabled or offboarded meanwhile is not read further), starts (a merge), reads one page and finishes (a merge).
    assert due == ["GET", "PATCH", "GET", "PATCH", "PATCH"], due
    assert _api_calls(stack, tenant) == calls + 2  # the regular pass and one re-read page
    after = tenant_row(stack, tenant)
    assert after["rereadHourAt"] > row["rereadHourAt"] and after["rereadHourState"] == ""
    assert after["rereadHourCalls"] == 1 and after["rereadDayAt"] == row["rereadDayAt"]
    assert_table_matches_ground_truth(stack, tenant, "graph")


def test_a_duplicate_message_while_the_tenant_is_ingested_completes_without_a_second_pass(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 12, "start": hours_ago(stack, 2), "lagSeconds": 0})
    add_latency(stack, tenant, 3000)  # three pages of five: the pass holds the lease for about ten seconds
    lease_table = table(stack, "IngestLeases")
    before = fire(stack)
    wait_for(lambda: leases.current(lease_table, tenant), 60, "the tick's pass holds the tenant's lease")
    duplicate = _queue(stack).send_message(TenantMessage(tenant, "a-duplicate-delivery", "").to_text())
    wait_finished(stack, before)  # the timer waits until the queue is empty: the duplicate was completed too
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
    duplicates = _ingestion_lines(stack, tenant, f"duplicate message {duplicate.id}")
    assert len(duplicates) == 1, "the duplicate was handled while the first pass held the lease"
    assert len(_ingestion_lines(stack, tenant, "ingestion started")) == 1
    assert _api_calls(stack, tenant) == 3  # 12 alerts, 5 a page: one pass; a second one would call again
    report = assert_table_matches_ground_truth(stack, tenant, "graph")
    assert report.alerts == 12


def test_a_message_for_a_tenant_another_instance_holds_is_completed_untouched(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 3, "start": hours_ago(stack, 1), "lagSeconds": 0})
    lease_table = table(stack, "IngestLeases")
    held = leases.acquire(lease_table, tenant, "another-instance", 120)
    assert held is not None
    run_tick(stack)
    assert _api_calls(stack, tenant) == 0
    assert "lastAttempt" not in tenant_row(stack, tenant)
    assert len(_ingestion_lines(stack, tenant, "duplicate message")) == 1
    leases.release(held)
    run_tick(stack)  # the lease given back: the next tick ingests the tenant
    assert assert_table_matches_ground_truth(stack, tenant, "graph").alerts == 3


def _ops_notices(stack: LocalStack) -> None:
    before = finished_invocations(stack, "ops_notices")
    fire_timer(stack, "ops_notices")
    wait_for(lambda: finished_invocations(stack, "ops_notices") > before, 60, "the ops notices check ended")


def _ops_mail(stack: LocalStack, tenant: str, words: str) -> list[dict[str, Any]]:
    assert stack.maildev is not None
    return [m for m in stack.maildev.messages() if tenant in str(m.get("subject") or "") and words in
            str(m.get("subject") or "") and any(t.get("address") == OPS for t in m.get("to") or [])]


@pytest.mark.slow
def test_a_tenant_whose_row_storage_refuses_is_poisoned_noticed_once_and_holds_up_nobody(
        proxied: tuple[LocalStack, StorageFaultProxy]) -> None:
    stack, proxy = proxied
    # No later updates: the ground truth is checked minutes after the tick read it, so none may appear meanwhile.
    alerts = {"count": 4, "start": hours_ago(stack, 1), "lagSeconds": 0, "updatesPerAlert": 0}
    healthy = [add_tenant(stack, alerts=alerts) for _ in range(2)]
    broken = add_tenant(stack, alerts=alerts)
    incidents = table(stack, "Incidents")
    with proxy.refuse_row_writes("Tenants", TENANT_PARTITION, broken):
        before = fire(stack)
        # Every delivery fails (the failure cannot even be recorded on the tenant): after maxDequeueCount (5)
        # deliveries, visibilityTimeout (2 s here) apart, the host moves the message to ingest-tenants-poison.
        record = wait_for(lambda: poisoned_ingestions(incidents).get(broken), 400, "the poisoned message's record")
        assert record["count"] == 1
        for tenant in healthy:  # ingested by the same tick, before the broken tenant's message gave up
            assert assert_table_matches_ground_truth(stack, tenant, "graph").alerts == 4
            assert tenant_row(stack, tenant)["lastSuccess"] < record["lastSeen"]
        assert len(_ingestion_lines(stack, broken, "ingestion started")) == 5
        _ops_notices(stack)
        notice = wait_for(lambda: _ops_mail(stack, broken, "alert ingestion keeps failing"), 60, "the notice")
        _ops_notices(stack)  # a second evaluation repeats nothing
        assert len(_ops_mail(stack, broken, "alert ingestion keeps failing")) == len(notice) == 1
        wait_finished(stack, before, timeout=300)  # the tick's queue drained once the message left it
    run_tick(stack)  # storage takes the row again: ingested, and the notice clears
    assert tenant_row(stack, broken).get("lastSuccess") is not None
    assert assert_table_matches_ground_truth(stack, broken, "graph").alerts == 4
    _ops_notices(stack)
    wait_for(lambda: _ops_mail(stack, broken, "alert ingestion works again"), 60, "the clearing notice")
    assert poisoned_ingestions(incidents)[broken]["count"] == 1
