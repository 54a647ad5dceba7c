"""The per-tenant ingestion lease (fetch_alerts/lease.py) against a real Azurite: competitors on threads and in
processes, expiry and takeover, renewal by the heartbeat, and loss (taken by another, or storage unreachable)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableClient, TableServiceClient

from fetch_alerts import lease as leases
from local.run.services import AZURITE_ACCOUNT, AZURITE_KEY, REPO_ROOT, Azurite, free_port


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = f"Leases{uuid.uuid4().hex[:12]}"
    service.create_table(name)
    yield service.get_table_client(name)
    service.delete_table(name)


def _tenant() -> str:
    return str(uuid.uuid4())


def _wait_for(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_of_many_threads_competing_for_a_tenant_exactly_one_holds_it(table: TableClient) -> None:
    def compete(start: threading.Barrier, tenant: str, owner: str, won: list[leases.Lease]) -> None:
        start.wait()
        got = leases.acquire(table, tenant, owner, 30)
        if got is not None:
            won.append(got)

    for _ in range(5):
        tenant, start, won = _tenant(), threading.Barrier(8), []
        threads = [threading.Thread(target=compete, args=(start, tenant, f"owner-{i}", won)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        holder = leases.current(table, tenant)
        assert holder is not None and holder[0] == won[0].owner


_COMPETITOR = """
import sys
from azure.data.tables import TableServiceClient
from fetch_alerts import lease
table = TableServiceClient.from_connection_string(sys.argv[1]).get_table_client(sys.argv[2])
print("won" if lease.acquire(table, sys.argv[3], sys.argv[4], 30) is not None else "lost")
"""


def test_of_processes_competing_for_a_tenant_exactly_one_holds_it(azurite: Azurite, table: TableClient) -> None:
    tenant = _tenant()
    procs = [subprocess.Popen([sys.executable, "-c", _COMPETITOR, azurite.connection_string, table.table_name, tenant,
                               f"process-{i}"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) for i in range(4)]
    results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(results) == ["lost", "lost", "lost", "won"]
    holder = leases.current(table, tenant)
    assert holder is not None and holder[0] == f"process-{results.index('won')}"


def test_a_held_lease_is_refused_and_an_expired_one_is_taken_over(table: TableClient) -> None:
    tenant = _tenant()
    first = leases.acquire(table, tenant, "first", 1)
    assert first is not None
    assert leases.acquire(table, tenant, "second", 30) is None
    second = None
    deadline = time.monotonic() + 10
    while second is None and time.monotonic() < deadline:  # taken once its second has passed
        second = leases.acquire(table, tenant, "second", 30)
        time.sleep(0.05)
    assert second is not None
    assert (first.took_over, second.took_over) == (False, True)  # the second replaced a lease left unreleased
    assert not leases.renew(first)  # the old holder learns it lost the lease
    leases.release(first)  # and its release leaves the new holder's lease alone
    holder = leases.current(table, tenant)
    assert holder is not None and holder[0] == "second"


def test_a_released_lease_is_free_at_once(table: TableClient) -> None:
    tenant = _tenant()
    first = leases.acquire(table, tenant, "first", 60)
    assert first is not None
    leases.release(first)
    assert leases.current(table, tenant) is None
    second = leases.acquire(table, tenant, "second", 60)
    assert second is not None and not second.took_over  # a released lease is no sign of a holder that died


def test_the_heartbeat_keeps_a_short_lease_for_longer_than_its_length(table: TableClient) -> None:
    tenant = _tenant()
    lease = leases.acquire(table, tenant, "holder", 1.5)
    assert lease is not None
    lost = threading.Event()
    with leases.Heartbeat(lease, lost):
        refused = 0
        end = time.monotonic() + 4.5  # three lease lengths
        while time.monotonic() < end:
            assert leases.acquire(table, tenant, "intruder", 30) is None
            refused += 1
            time.sleep(0.1)
    assert not lost.is_set() and refused > 10
    holder = leases.current(table, tenant)
    assert holder is not None and holder[0] == "holder"


def test_the_heartbeat_reports_a_lease_another_took(table: TableClient) -> None:
    tenant = _tenant()
    lease = leases.acquire(table, tenant, "holder", 1.5)
    assert lease is not None
    lost = threading.Event()
    with leases.Heartbeat(lease, lost):
        # Another holder took the row as if the lease had expired (a paused instance, say).
        table.upsert_entity({"PartitionKey": leases.LEASE_PARTITION, "RowKey": tenant, "owner": "other",
                             "expiresAt": datetime.now(UTC) + timedelta(seconds=60)})
        assert _wait_for(lost.is_set)
    holder = leases.current(table, tenant)
    assert holder is not None and holder[0] == "other"


def test_the_heartbeat_gives_the_lease_up_when_storage_is_unreachable(table: TableClient) -> None:
    tenant = _tenant()
    lease = leases.acquire(table, tenant, "holder", 1.5)
    assert lease is not None
    # The same lease, renewed through an endpoint where nothing listens: every renewal fails.
    dead = f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};" \
           f"TableEndpoint=http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT};"
    lease.table = TableServiceClient.from_connection_string(dead, retry_total=0).get_table_client(table.table_name)
    lost = threading.Event()
    with leases.Heartbeat(lease, lost):
        assert _wait_for(lost.is_set)
        assert not lease.held()



def test_a_lease_that_cannot_be_written_is_a_storage_fault_never_a_duplicate(azurite: Azurite) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    gone = service.get_table_client(f"Gone{uuid.uuid4().hex[:12]}")  # a table that does not exist
    with pytest.raises(leases.LeaseUnavailable):
        leases.acquire(gone, _tenant(), "holder", 30)
