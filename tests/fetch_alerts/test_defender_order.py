"""Defender's GET /api/alerts documents no list order
(https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts): ingestion must store every alert,
in its latest version, whichever order the service returns, in one tick or across many.

The local cloud serves the tenant's Defender list oldest first, newest first or shuffled per call; each
tenant holds several pages of alerts (page size 40), with a burst of alerts sharing one creation instant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest

from local.stack import LocalStack
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    hours_ago,
    iso,
    run_tick,
    start_stack,
    tenant_row,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth

PAGE = 40
ORDERS = ["oldestFirst", "newestFirst", "shuffled"]
STREAM = 260
BURST = 100  # created at one instant, last updated at five instants (20 each: fewer than a page)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("order"), FETCH_DEFENDER_PAGE_SIZE=str(PAGE))
    yield service
    service.stop()


def defender_tenant(stack: LocalStack, order: str, *, stream: int = STREAM, burst: int = BURST) -> str:
    tenant = add_tenant(stack, source="defender", alerts={
        "count": stream, "start": hours_ago(stack, 30), "lagSeconds": 0, "defenderOrder": order})
    instant = hours_ago(stack, 12)
    for i in range(burst):
        add_alert(stack, tenant, createdDateTime=instant, lastUpdateDateTime=hours_ago(stack, 11 - i % 5))
    return tenant


def defender_calls(stack: LocalStack, tenant: str) -> int:
    return int(stack.cloud.control("GET", "stats").json()["apiRequests"].get(tenant, {}).get("defender", 0))


@pytest.mark.parametrize("order", ORDERS)
def test_a_backlog_of_many_pages_is_stored_whole_in_any_list_order(stack: LocalStack, order: str) -> None:
    tenant = defender_tenant(stack, order)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is True and row["cursor"] and not row.get("lastErrorClass")
    report = assert_table_matches_ground_truth(stack, tenant, "defender")
    assert report.alerts == STREAM + BURST
    calls = defender_calls(stack, tenant)
    # The lower bound: one call per page of alerts. Windows that come back full are split and re-read.
    pages = math.ceil(report.alerts / PAGE)
    print(f"\n{order}: {report.alerts} alerts, page {PAGE}: {calls} Defender calls (>= {pages})")
    assert calls <= 4 * pages
    # A later pass with nothing new is one call, whatever the order.
    add_alert(stack, tenant)
    run_tick(stack)
    assert defender_calls(stack, tenant) == calls + 1
    assert assert_table_matches_ground_truth(stack, tenant, "defender").alerts == STREAM + BURST + 1
