"""Defender's GET /api/alerts documents no list order
(https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts): ingestion must store every alert,
in its latest version, whichever order the service returns, in one tick or across many.

The local cloud serves the tenant's Defender list oldest first, newest first or shuffled per call; each
tenant holds several pages of alerts (page size 40), with a burst of alerts sharing one creation instant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import pytest

from fetch_alerts.keys import from_datetime, parse_ticks
from local.run.stack import LocalStack
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    hours_ago,
    run_tick,
    start_stack,
    table,
    tenant_row,
    update_alert,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, ground_truth, stored_rows

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
    # No generated updates: one falling due between a tick's read and the ground-truth check would be stale by
    # design (a later tick or re-read catches it); the tests that change alerts do it themselves (update_alert).
    tenant = add_tenant(stack, source="defender", alerts={
        "count": stream, "start": hours_ago(stack, 30), "lagSeconds": 0, "updatesPerAlert": 0,
        "defenderOrder": order})
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


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Three calls per tenant per tick: every backlog pass spans many ticks."""
    service = start_stack(tmp_path_factory.mktemp("order-resume"), FETCH_DEFENDER_PAGE_SIZE=str(PAGE),
                          FETCH_GRAPH_PAGE_SIZE=str(PAGE), FETCH_MAX_PAGES_PER_TENANT="3")
    yield service
    service.stop()


def run_until_complete(stack: LocalStack, tenant: str, during: Callable[[int], None] | None = None,
                       most: int = 40) -> int:
    """Ticks until the tenant's pass completes (`during(tick)` runs after each unfinished one)."""
    for tick in range(1, most + 1):
        run_tick(stack)
        row = tenant_row(stack, tenant)
        assert not row.get("lastErrorClass"), row.get("lastError")
        if row["passComplete"] is True:
            return tick
        assert row["passState"], "an unfinished pass keeps its state"
        if during is not None:
            during(tick)
    raise AssertionError(f"the pass did not complete in {most} ticks")


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_a_pass_resumed_across_ticks_loses_nothing_in_any_list_order(budget_stack: LocalStack, order: str) -> None:
    stack = budget_stack
    tenant = defender_tenant(stack, order)
    truth_before = {a["id"] for a in ground_truth(stack, tenant)}

    def meanwhile(tick: int) -> None:  # the list changes between ticks: new alerts, and old ones updated
        if tick <= 3:
            add_alert(stack, tenant)
            update_alert(stack, tenant, sorted(truth_before)[tick], severity="high", status="inProgress")

    ticks = run_until_complete(stack, tenant, meanwhile)
    assert ticks > 3
    run_tick(stack)  # the next pass reads what changed while the first one ran
    report = assert_table_matches_ground_truth(stack, tenant, "defender")
    assert report.alerts == STREAM + BURST + 3


@pytest.mark.parametrize("order", ORDERS)
def test_more_than_a_page_at_one_creation_and_update_instant_fails_the_tenant_loudly(stack: LocalStack,
                                                                                      order: str) -> None:
    tenant = defender_tenant(stack, order, stream=30, burst=0)
    instant = hours_ago(stack, 5)
    for _ in range(PAGE + 1):
        add_alert(stack, tenant, createdDateTime=instant, lastUpdateDateTime=instant)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["lastErrorClass"] == "unpageable_alerts" and row["consecutiveFailures"] == 1
    assert "FETCH_DEFENDER_PAGE_SIZE" in row["lastError"]
    assert not row.get("cursor") and row.get("passComplete") is not True  # the pass is not marked done


def test_a_pass_saved_by_the_earlier_keyset_pager_resumes_where_it_stopped(stack: LocalStack) -> None:
    # That pager read newest first and saved `created_le`: alerts created at or before it were still to read.
    tenant = defender_tenant(stack, "oldestFirst", stream=120, burst=0)
    truth = ground_truth(stack, tenant)
    created = sorted(parse_ticks(a["createdDateTime"]) for a in truth)
    middle = created[len(created) // 2]
    now = from_datetime(cloud_now(stack))
    old = json.dumps({"lo": now - 8 * 24 * 36_000_000_000, "cap": now, "max_seen": None, "created_le": middle})
    table(stack, "Tenants").update_entity({"PartitionKey": "tenant", "RowKey": tenant, "passState": old})
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is True and row["passState"] == ""
    stored = {r["alertId"] for r in stored_rows(stack, tenant) if r["RowKey"].startswith("alert|")}
    assert stored == {a["id"] for a in truth if parse_ticks(a["createdDateTime"]) <= middle}


def test_a_graph_pass_resumed_across_ticks_matches_ground_truth(budget_stack: LocalStack) -> None:
    stack = budget_stack
    tenant = add_tenant(stack, alerts={"count": 400, "start": hours_ago(stack, 30), "lagSeconds": 0,
                                       "updatesPerAlert": 0})  # as defender_tenant: the test updates alerts itself
    ids = [a["id"] for a in ground_truth(stack, tenant)]

    def meanwhile(tick: int) -> None:
        if tick <= 2:
            add_alert(stack, tenant)
            update_alert(stack, tenant, ids[-tick], severity="high")  # among the oldest: not read yet

    assert run_until_complete(stack, tenant, meanwhile) > 2
    run_tick(stack)
    assert assert_table_matches_ground_truth(stack, tenant, "graph").alerts == 402
