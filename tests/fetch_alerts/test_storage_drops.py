"""A storage connection dropped under a tenant's pass (docs/ARCHITECTURE.md, "Ingestion on a queue"): not the tenant's
failure. The message fails, the host delivers it again after host.json's visibilityTimeout, and that delivery finishes
the pass from the stored progress; nothing is recorded on the tenant, and every alert is stored once.

The app reaches its tables through a TCP proxy (tests/tcp_outage.py); the host's own storage (the ingestion queue,
the timers' locks) is Azurite itself. The proxy drops the connection that carries the pass's write of its progress
after the second page, and with it every connection open at that moment, and then forwards again at once: what a
client meets when a load balancer or NAT dropped its idle pooled connection (Azure's outbound idle timeout,
https://learn.microsoft.com/azure/load-balancer/load-balancer-tcp-reset), when the storage front end resets one, or
when Azurite closes one idle for 5 s as the next request goes out on it (tests/fetch_alerts/test_chaos.py met that).
The write is a merge (PATCH), which azure-core's retry policy does not retry after a connection failure (its
retryable methods are HEAD, GET, PUT, DELETE, OPTIONS and TRACE: azure/core/pipeline/policies/_retry.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from fetch_alerts.lease import current
from tests.fetch_alerts.harness import (
    BehindOutage,
    add_latency,
    add_tenant,
    cloud_now,
    fire,
    ingestion_log,
    iso,
    stack_behind_outage,
    table,
    tenant_row,
    wait_finished,
    wait_for,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, assert_versions_stored_once, stored_rows

pytestmark = pytest.mark.slow

ALERTS = 20  # all created after the tenant's activation: each owes one `new` obligation
PAGE_SIZE = 5  # four pages
LATENCY_MS = 2000  # every Graph call: the pass spends seconds between its pages' writes
# The delay before a failed delivery's retry: host.json's extensions.queues.visibilityTimeout (30 s), set shorter here
# through the app setting that overrides it (AzureFunctionsJobHost__<path>, as Azure documents) so the test waits less.
VISIBILITY_TIMEOUT = 5


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BehindOutage]:
    with stack_behind_outage(tmp_path_factory.mktemp("storage-drops"), "table", 1,
                             FETCH_GRAPH_PAGE_SIZE=str(PAGE_SIZE),
                             AzureFunctionsJobHost__extensions__queues__visibilityTimeout=f"00:00:{VISIBILITY_TIMEOUT:02d}",
                             ) as behind:
        yield behind


def _tenant_row_write(tenant_id: str) -> re.Pattern[bytes]:
    """A merge of the tenant's Tenants row, as azure-data-tables sends it (PATCH /<table>(PartitionKey='tenant',
    RowKey='<id>'), the quotes possibly percent-encoded)."""
    quote = rb"(?:'|%27)"
    return re.compile(rb"PATCH /[^ ]*Tenants\(PartitionKey=" + quote + rb"tenant" + quote + rb",RowKey=" + quote
                      + re.escape(tenant_id.encode()) + quote + rb"\)")


def test_a_connection_dropped_under_a_tenants_write_retries_the_message_and_records_no_failure(
        drops: BehindOutage) -> None:
    stack, outage = drops.stack, drops.outage
    now = cloud_now(stack)
    tenant = add_tenant(stack, activated_at=now - timedelta(hours=2),
                        alerts={"count": ALERTS, "start": iso(now - timedelta(hours=1)), "lagSeconds": 0,
                                "updatesPerAlert": 0})
    add_latency(stack, tenant, LATENCY_MS)
    before = fire(stack)
    # The first page stored (its progress is on the row): drop the connection of the pass's next write to the row.
    wait_for(lambda: tenant_row(stack, tenant).get("passState"), 60, "the pass's first page stored")
    reset_before = outage.reset
    dropped = outage.cut_at_request(_tenant_row_write(tenant))
    wait_for(dropped.is_set, 60, "the pass writing its row again")
    reset = outage.reset - reset_before

    # The delivery the drop cut short ends without recording anything on the tenant.
    first = wait_for(lambda: [found for found in ingestion_log(stack, [tenant]).passes if found.ended], 60,
                     "the first delivery's end")[0]
    row = tenant_row(stack, tenant)
    assert not row.get("consecutiveFailures") and not row.get("lastErrorClass") and not row.get("lastError"), \
        f"a dropped storage connection was recorded as the tenant's failure: {first.result!r}, " \
        f"consecutiveFailures {row.get('consecutiveFailures')}, lastError {row.get('lastError')!r}"
    assert row.get("passState"), "the cut-short pass's progress is kept"

    # The host delivers the message again after the visibility timeout; that delivery finishes the pass.
    wait_finished(stack, before, timeout=VISIBILITY_TIMEOUT + 90)
    log = ingestion_log(stack, [tenant])
    assert [(found.dequeue, found.result) for found in log.passes] == [(1, "storage_unavailable"), (2, "complete")], \
        log.passes
    assert len({found.message_id for found in log.passes}) == 1, "the retry is a delivery of the same message"
    retry = log.passes[1]
    assert first.ended is not None and (retry.started - first.ended).total_seconds() >= VISIBILITY_TIMEOUT - 1
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is True and row.get("lastSuccess") and row.get("cursor"), row
    assert (row["consecutiveFailures"], row["lastErrorClass"], row["lastError"]) == (0, "", ""), row
    assert current(table(stack, "IngestLeases"), tenant) is None, "the tenant's lease was left behind"
    # Ground truth: every alert once, at its latest version, with one `new` obligation, each version in one feed row.
    report = assert_table_matches_ground_truth(stack, tenant, "graph")
    assert (report.alerts, report.new_obligations) == (ALERTS, ALERTS), report
    assert assert_versions_stored_once(stack, tenant) == ALERTS
    calls = stack.cloud.control("GET", "stats").json()["apiRequests"][tenant]["graph"]
    published = [found for found in table(stack, "AlertFeed").list_entities() if found["tenantId"] == tenant]
    feed_rows = {found["feedKey"] for found in published}
    tenant_feed = {found["RowKey"] for found in stored_rows(stack, tenant) if found["RowKey"].startswith("feed|")}
    assert tenant_feed <= feed_rows, "a tenant feed row never reached the global feed"
    print(f"\nconnection dropped {(first.ended - first.started).total_seconds():.1f}s into the pass "
          f"({reset} connections reset); delivery 1 ended {first.result!r}, delivery 2 started "
          f"{(retry.started - first.ended).total_seconds():.1f}s later and ended {retry.result!r}; {calls} Graph calls "
          f"for {ALERTS // PAGE_SIZE} pages; {ALERTS} alerts and {report.new_obligations} `new` obligations stored "
          f"once; {len(published)} AlertFeed rows for the tenant's {len(tenant_feed)} feed rows (at least once)")
