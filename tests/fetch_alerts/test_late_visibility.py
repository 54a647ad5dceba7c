"""Alerts that become visible late, against the local cloud's clock and ground truth, Graph and Defender.

Microsoft documents no bound on how long after its last update an alert (or a new version of one) appears
in the list APIs (https://learn.microsoft.com/en-us/graph/api/security-list-alerts_v2,
https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts). What the product guarantees, by the
lag L between an alert's last update and when the API first shows it:
- L within FETCH_OVERLAP_MINUTES: stored by the next tick (the regular pass re-reads the overlap);
- L beyond the overlap, up to 24 hours: stored by the first hourly re-read after it became visible;
- L beyond 24 hours, up to FETCH_LOOKBACK_DAYS: stored by the first daily re-read after it became visible;
- L beyond the look-back: not guaranteed (stored only if a later update makes it visible again in time).

Each late alert is made visible only when the test advances the cloud's clock (the cloud's `visibleAt`),
with a last update placed relative to our clock, where the tenant's cursor is. The host runs on real time,
so "an hour passed" for the re-read schedule is `make_reread_due`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from local.run.cycle import finished_invocations, fire_timer
from local.run.stack import LocalStack
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    iso,
    make_reread_due,
    run_tick,
    start_stack,
    table,
    tenant_row,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, ground_truth, stored_rows

SOURCES = ["graph", "defender"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("late"), FETCH_GRAPH_PAGE_SIZE="7", FETCH_DEFENDER_PAGE_SIZE="9")
    yield service
    service.stop()


def _tenant(stack: LocalStack, source: str) -> str:
    """A tenant active for nine days (so every late alert below is news, with a `new` obligation), whose
    cursor sits at our clock after its first tick (a prompt alert of now)."""
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0},
                        activated_at=cloud_now(stack) - timedelta(days=9))
    add_alert(stack, tenant)
    run_tick(stack)
    return tenant


def _late_alert(stack: LocalStack, tenant: str, age: timedelta) -> dict[str, Any]:
    """An alert last updated `age` before our clock that the cloud shows only from 30 s of cloud time on."""
    updated = iso(datetime.now(UTC) - age)
    return add_alert(stack, tenant, createdDateTime=updated, lastUpdateDateTime=updated,
                     visibleAt=iso(cloud_now(stack) + timedelta(seconds=30)))


def _becomes_visible(stack: LocalStack, tenant: str, alert: dict[str, Any]) -> None:
    assert alert["id"] not in {a["id"] for a in ground_truth(stack, tenant)}
    stack.cloud.control("POST", "clock", json={"advance_seconds": 60})
    assert alert["id"] in {a["id"] for a in ground_truth(stack, tenant)}


def _stored(stack: LocalStack, tenant: str) -> set[str]:
    return {r["alertId"] for r in stored_rows(stack, tenant) if r["RowKey"].startswith("alert|")}


def _summary(stack: LocalStack, tenant: str) -> dict[str, Any]:
    return json.loads(tenant_row(stack, tenant).get("lagSummary") or "{}")


def _health(stack: LocalStack, tenant: str) -> dict[str, Any]:
    """The tenant's health as the management API shows it."""
    assert stack.host is not None
    response = requests.get(f"{stack.host.url}/api/tenants/{tenant}", timeout=30,
                            headers={"x-functions-key": stack.host.function_key})
    assert response.status_code == 200, response.text
    return response.json()["health"]


@pytest.mark.parametrize("source", SOURCES)
def test_an_alert_visible_later_than_the_overlap_is_stored_by_the_hourly_reread(stack: LocalStack,
                                                                                source: str) -> None:
    tenant = _tenant(stack, source)
    late = _late_alert(stack, tenant, timedelta(hours=2))
    _becomes_visible(stack, tenant, late)
    run_tick(stack)
    # The regular pass reads from the cursor minus the overlap only: this is what was lost for good.
    assert late["id"] not in _stored(stack, tenant)
    make_reread_due(stack, tenant, "hour")
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, source)
    assert report.alerts == 2 and report.new_obligations == 2
    lag = _health(stack, tenant)["visibilityLag"]
    assert lag["beyondOverlap"] == 1 and lag["foundByReread"] == 1 and lag["count"] >= 1
    assert 2 * 3600 <= lag["maxSeconds"] < 3 * 3600 and lag["overlapSeconds"] == 900


@pytest.mark.parametrize("source", SOURCES)
def test_an_alert_visible_within_the_overlap_is_stored_by_the_next_tick(stack: LocalStack, source: str) -> None:
    tenant = _tenant(stack, source)
    late = _late_alert(stack, tenant, timedelta(minutes=5))
    _becomes_visible(stack, tenant, late)
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, source)
    assert report.alerts == 2 and report.new_obligations == 2
    lag = _health(stack, tenant)["visibilityLag"]
    assert lag["count"] >= 1 and lag["beyondOverlap"] == 0 and lag["foundByReread"] == 0
    assert 5 * 60 <= lag["maxSeconds"] < 900


@pytest.mark.parametrize("source", SOURCES)
def test_an_alert_visible_days_late_is_stored_by_the_daily_reread(stack: LocalStack, source: str) -> None:
    tenant = _tenant(stack, source)
    late = _late_alert(stack, tenant, timedelta(days=3))
    too_late = _late_alert(stack, tenant, timedelta(days=12))  # beyond the look-back (7 days): no promise
    _becomes_visible(stack, tenant, late)
    run_tick(stack)
    make_reread_due(stack, tenant, "hour")
    run_tick(stack)
    # The hourly re-read covers the last day only.
    assert late["id"] not in _stored(stack, tenant)
    make_reread_due(stack, tenant, "day")
    run_tick(stack)
    stored = _stored(stack, tenant)
    assert late["id"] in stored and too_late["id"] not in stored
    truth = [a for a in ground_truth(stack, tenant) if a["id"] != too_late["id"]]
    assert {a["id"] for a in truth} == stored


def _incident_keys(stack: LocalStack, tenant: str) -> list[str]:
    rows = table(stack, "Incidents").query_entities("PartitionKey eq 'notice'", select=["RowKey", "occurrences"])
    return [r["RowKey"] for r in rows if r["RowKey"].startswith(f"late_arrivals|{tenant}|")]


def _run_ops_check(stack: LocalStack) -> None:
    before = finished_invocations(stack, "ops_notices")
    fire_timer(stack, "ops_notices")
    deadline = time.monotonic() + 60
    while finished_invocations(stack, "ops_notices") <= before:
        assert time.monotonic() < deadline, "the ops check did not finish"
        time.sleep(0.1)


def test_late_arrivals_are_surfaced_to_ops_once_per_tenant_and_day(stack: LocalStack) -> None:
    tenant = _tenant(stack, "graph")
    late = _late_alert(stack, tenant, timedelta(hours=1))
    _becomes_visible(stack, tenant, late)
    make_reread_due(stack, tenant, "hour")
    run_tick(stack)
    assert late["id"] in _stored(stack, tenant)
    _run_ops_check(stack)
    day = _summary(stack, tenant)["day"]
    deadline = time.monotonic() + 30
    while _incident_keys(stack, tenant) != [f"late_arrivals|{tenant}|{day}"]:
        assert time.monotonic() < deadline, f"no late-arrival incident: {_incident_keys(stack, tenant)}"
        time.sleep(0.1)
    second = _late_alert(stack, tenant, timedelta(hours=1))
    _becomes_visible(stack, tenant, second)
    make_reread_due(stack, tenant, "hour")
    run_tick(stack)
    _run_ops_check(stack)
    assert _incident_keys(stack, tenant) == [f"late_arrivals|{tenant}|{day}"]
    row = dict(table(stack, "Incidents").get_entity("notice", f"late_arrivals|{tenant}|{day}"))
    assert row["occurrences"] == 1
