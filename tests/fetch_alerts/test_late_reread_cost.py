"""The API cost of the re-reads per tenant, measured with the local cloud's request counters.

A tenant with a steady stream (4 alerts an hour, 9 days of history) and pages of 40 stands for a busy one
at the default page size of 1,000 (100 alerts an hour): what a re-read costs is pages, and pages are
alerts over page size. Each tick's re-read work stays within FETCH_REREAD_PAGES_PER_TICK; a day of re-reads
costs 24 hourly ones plus one daily one. Run with `-s` to see the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest

from fetch_alerts.keys import from_datetime, parse_ticks
from fetch_alerts.reread import DAY_EXTRA, HOUR_WINDOW
from local.run.stack import LocalStack
from tests.fetch_alerts.harness import (
    add_tenant,
    cloud_now,
    hours_ago,
    make_reread_due,
    run_tick,
    start_stack,
    tenant_row,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, ground_truth

PAGE = 40
PAGES_PER_TICK = 4  # FETCH_REREAD_PAGES_PER_TICK, at its default in these tests
LOOKBACK_DAYS = 7


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("reread-cost"), FETCH_GRAPH_PAGE_SIZE=str(PAGE),
                          FETCH_DEFENDER_PAGE_SIZE=str(PAGE))
    yield service
    service.stop()


def _calls(stack: LocalStack, tenant: str, source: str) -> int:
    return int(stack.cloud.control("GET", "stats").json()["apiRequests"].get(tenant, {}).get(source, 0))


def _updated_within(stack: LocalStack, tenant: str, window: timedelta) -> int:
    since = from_datetime(cloud_now(stack) - window)
    return sum(1 for a in ground_truth(stack, tenant) if parse_ticks(a["lastUpdateDateTime"]) >= since)


def _reread(stack: LocalStack, tenant: str, source: str, kind: str) -> tuple[int, int]:
    """Run ticks until the due re-read finished: (its calls as the cloud counted them, ticks it took)."""
    column = {"hour": "rereadHour", "day": "rereadDay"}[kind]
    make_reread_due(stack, tenant, kind)
    total = ticks = 0
    while True:
        before = _calls(stack, tenant, source)
        run_tick(stack)
        ticks += 1
        # The regular pass of a caught-up tenant costs one call (fewer alerts than a page changed).
        spent = _calls(stack, tenant, source) - before - 1
        assert 0 < spent <= PAGES_PER_TICK, f"a tick spent {spent} re-read calls"
        total += spent
        if not tenant_row(stack, tenant).get(f"{column}State"):
            break
        assert ticks < 20, "the re-read does not finish"
    assert tenant_row(stack, tenant)[f"{column}Calls"] == total  # the product's own count agrees
    return total, ticks


@pytest.mark.slow
@pytest.mark.parametrize("source", ["graph", "defender"])
def test_the_rereads_cost_per_tenant_and_day_is_bounded(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"alertsPerHour": 4, "start": hours_ago(stack, 9 * 24),
                                                      "lagSeconds": 0, "updatesPerAlert": 0.5})
    run_tick(stack)  # the look-back, several ticks' worth of pages at most 100 per tick
    while not tenant_row(stack, tenant).get("passComplete"):
        run_tick(stack)
    run_tick(stack)  # caught up: from here a regular pass is one call
    hour_alerts = _updated_within(stack, tenant, HOUR_WINDOW)
    day_alerts = _updated_within(stack, tenant, timedelta(days=LOOKBACK_DAYS) + DAY_EXTRA)
    hour_calls, _ = _reread(stack, tenant, source, "hour")
    day_calls, day_ticks = _reread(stack, tenant, source, "day")
    per_day = 24 * hour_calls + day_calls
    print(f"\n{source}: hourly re-read {hour_calls} calls for {hour_alerts} alerts, daily re-read {day_calls} calls "
          f"for {day_alerts} alerts over {day_ticks} ticks; {per_day} calls per tenant per day at page size {PAGE}")
    # Graph pages by nextLink: one call per page. Defender's creation-time windows cost up to about twice that.
    factor = 1 if source == "graph" else 2
    assert hour_calls <= factor * (math.ceil(hour_alerts / PAGE) + 1)
    assert day_calls <= factor * (math.ceil(day_alerts / PAGE) + 1)
    assert day_ticks == math.ceil(day_calls / PAGES_PER_TICK)
    assert_table_matches_ground_truth(stack, tenant, source)
