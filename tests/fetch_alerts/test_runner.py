"""The queue trigger's plain function (fetch_alerts/runner.py) on the paths that complete a message without a
pass, against a real Azurite: a message that is not ours, a duplicate whose tenant's lease another invocation
holds, a tenant no longer active, this process pausing for a broken MSSP credential; and the poison record,
once per message. The passes themselves run through the local host (tests/fetch_alerts/test_ingest_queue.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient

from fetch_alerts import lease as leases
from fetch_alerts.config import IngestionConfig
from fetch_alerts.ingest import RunContext
from fetch_alerts.runner import Delivery, MessageDeps, MsspCircuit, record_poisoned, run_message
from local.run.services import Azurite
from shared.alert_sources import ApiHosts
from shared.incidents import POISONED_PARTITION, poisoned_ingestions
from shared.settings import Settings
from shared.tenants import TENANT_PARTITION, TenantStatus


class Tables:
    def __init__(self, azurite: Azurite) -> None:
        self.service = TableServiceClient.from_connection_string(azurite.connection_string)
        suffix = uuid.uuid4().hex[:10]
        self.names = [f"{base}{suffix}" for base in ("Tenants", "Leases", "Incidents", "Alerts", "Feed")]
        for name in self.names:
            self.service.create_table(name)
        self.tenants, self.leases, self.incidents, self.alerts, self.feed = (
            self.service.get_table_client(name) for name in self.names)

    def drop(self) -> None:
        for name in self.names:
            self.service.delete_table(name)


@pytest.fixture
def tables(azurite: Azurite) -> Iterator[Tables]:
    created = Tables(azurite)
    yield created
    created.drop()


def _deps(tables: Tables, circuit: MsspCircuit | None = None) -> MessageDeps:
    defaults = Settings({})

    def context(run_id: str) -> RunContext:
        return RunContext(hosts=ApiHosts.from_settings(defaults), config=IngestionConfig.from_settings(defaults),
                          api=None,  # type: ignore[arg-type] - these paths never call an alert API
                          alerts=tables.alerts, feed=tables.feed, tenants=tables.tenants, incidents=tables.incidents,
                          deadline=time.monotonic() + 60, run_id=run_id)

    return MessageDeps(context=context, leases=tables.leases, lease_seconds=30, circuit=circuit or MsspCircuit())


def _delivery(tenant_id: str, *, body: Any = None, dequeue_count: int = 1) -> Delivery:
    text = body if body is not None else json.dumps({"tenantId": tenant_id, "runId": "notify-202611271205",
                                                     "enqueuedAt": "2026-11-27T12:05:00Z"})
    return Delivery(text.encode() if isinstance(text, str) else text, str(uuid.uuid4()), dequeue_count,
                    str(uuid.uuid4()))


def _lease_rows(table: TableClient) -> list[dict[str, Any]]:
    return [dict(row) for row in table.list_entities()]


def test_a_message_that_is_not_ours_completes_without_work(tables: Tables) -> None:
    outcome = run_message(_delivery("", body=b"{\"hello\": 1}"), _deps(tables))
    assert outcome.result == "malformed"
    assert _lease_rows(tables.leases) == []


def test_a_duplicate_message_completes_without_a_pass_while_another_holds_the_lease(tables: Tables) -> None:
    tenant = str(uuid.uuid4())
    tables.tenants.create_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant,
                                  "status": TenantStatus.ACTIVE.value})
    held = leases.acquire(tables.leases, tenant, "the-first-invocation", 30)
    assert held is not None
    outcome = run_message(_delivery(tenant), _deps(tables))
    assert outcome.result == "duplicate" and outcome.regular is None
    row = dict(tables.tenants.get_entity(TENANT_PARTITION, tenant))
    assert "lastAttempt" not in row  # no pass touched the tenant
    assert leases.current(tables.leases, tenant)[0] == "the-first-invocation"  # type: ignore[index]


@pytest.mark.parametrize("status", [TenantStatus.DISABLED, TenantStatus.CONSENT_REVOKED, None])
def test_a_tenant_no_longer_active_completes_and_frees_its_lease(tables: Tables, status: TenantStatus | None) -> None:
    tenant = str(uuid.uuid4())
    if status is not None:
        tables.tenants.create_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant, "status": status.value})
    outcome = run_message(_delivery(tenant), _deps(tables))
    assert outcome.result == "not_active"
    assert leases.current(tables.leases, tenant) is None


def test_while_the_mssp_credential_is_broken_here_messages_complete_untouched(tables: Tables) -> None:
    circuit = MsspCircuit()
    circuit.trip()
    tenant = str(uuid.uuid4())
    tables.tenants.create_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant,
                                  "status": TenantStatus.ACTIVE.value})
    outcome = run_message(_delivery(tenant), _deps(tables, circuit))
    assert outcome.result == "mssp_paused"
    assert _lease_rows(tables.leases) == []


def test_the_circuit_pauses_for_a_while_and_closes_the_incident_at_most_once_a_minute() -> None:
    now = [1000.0]
    circuit = MsspCircuit(pause_seconds=60, close_every=60, clock=lambda: now[0])
    assert not circuit.broken()
    assert circuit.close_due() and not circuit.close_due()  # the first success closes, the next ones wait
    now[0] += 61
    assert circuit.close_due()
    circuit.trip()
    assert circuit.broken() and not circuit.close_due()
    now[0] += 59
    assert circuit.broken()
    now[0] += 2
    assert not circuit.broken()
    assert circuit.close_due()


def test_a_poisoned_message_is_recorded_once_per_message_on_one_row_per_tenant(tables: Tables) -> None:
    tenant = str(uuid.uuid4())
    body = json.dumps({"tenantId": tenant, "runId": "notify-202611271205", "enqueuedAt": ""}).encode()
    assert record_poisoned(tables.incidents, body, "message-1") == tenant
    assert record_poisoned(tables.incidents, body, "message-1") == tenant  # a second delivery of the same one
    row = dict(tables.incidents.get_entity(POISONED_PARTITION, tenant))
    assert (row["count"], row["lastRunId"], row["lastMessageId"]) == (1, "notify-202611271205", "message-1")
    record_poisoned(tables.incidents, body, "message-2")
    assert poisoned_ingestions(tables.incidents)[tenant]["count"] == 2
    assert record_poisoned(tables.incidents, b"garbage", "message-3") is None
    assert list(poisoned_ingestions(tables.incidents)) == [tenant]


@pytest.mark.parametrize(("dequeue_count", "marked"), [(1, False), (2, True)])
def test_a_redelivered_message_sets_the_tenants_marker_before_its_pass(tables: Tables, dequeue_count: int,
                                                                         marked: bool) -> None:
    # The delivery before died between storing a page's obligations and the marker after them, and a notification
    # run cleared the marker meanwhile: the retry finds those pages stored and would set no marker itself.
    tenant = str(uuid.uuid4())
    tables.tenants.create_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant,
                                  "status": TenantStatus.ACTIVE.value, "pendingNotifications": False})
    outcome = run_message(_delivery(tenant, dequeue_count=dequeue_count), _deps(tables))
    assert outcome.regular is not None  # the pass ran (it fails here: these tests give it no alert API)
    row = dict(tables.tenants.get_entity(TENANT_PARTITION, tenant))
    assert row["pendingNotifications"] is marked
    assert leases.current(tables.leases, tenant) is None


def test_a_first_delivery_that_takes_over_a_lease_left_unreleased_sets_the_marker(tables: Tables) -> None:
    # An invocation died holding the lease, and its message expired before the host delivered it again (Azure's
    # in-flight visibility outlasts the message's TTL): the tenant's next tick is a first delivery.
    tenant = str(uuid.uuid4())
    tables.tenants.create_entity({"PartitionKey": TENANT_PARTITION, "RowKey": tenant,
                                  "status": TenantStatus.ACTIVE.value, "pendingNotifications": False})
    dead = leases.acquire(tables.leases, tenant, "invocation-that-died", 0.5)
    assert dead is not None and not dead.took_over
    deadline = time.monotonic() + 10
    while leases.current(tables.leases, tenant) is not None:
        assert time.monotonic() < deadline, "the dead invocation's lease never ran out"
        time.sleep(0.1)
    outcome = run_message(_delivery(tenant, dequeue_count=1), _deps(tables))
    assert outcome.regular is not None
    assert dict(tables.tenants.get_entity(TENANT_PARTITION, tenant))["pendingNotifications"] is True
    assert leases.current(tables.leases, tenant) is None
