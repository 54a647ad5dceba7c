"""The cursor and bounded catch-up: pages per tenant per tick, the time budget, and the cursor's rules."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fetch_alerts.cursor import TenantRow, completed_cursor, cursor_ticks, start_state
from fetch_alerts.keys import format_ticks, from_datetime, minutes, parse_ticks
from fetch_alerts.normalise import normalise
from fetch_alerts.sources import PassState
from fetch_alerts.store import AlertWriter, Prepared
from local.run.stack import LocalStack
from shared import payload
from shared.alert_sources import AlertSource
from shared.alerts import alert_key
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    hours_ago,
    run_tick,
    start_stack,
    table,
    tenant_row,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, stored_rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("cursor"), FETCH_GRAPH_PAGE_SIZE="6", FETCH_DEFENDER_PAGE_SIZE="6",
                          FETCH_MAX_PAGES_PER_TENANT="2")
    yield service
    service.stop()


def _alerts(stack: LocalStack, tenant: str) -> int:
    return sum(1 for r in stored_rows(stack, tenant) if r["RowKey"].startswith("alert|"))


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_a_backlog_larger_than_the_page_bound_continues_over_ticks(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"count": 30, "start": hours_ago(stack, 20), "lagSeconds": 0,
                                                      "updatesPerAlert": 0})
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is False and row["passState"] and not row.get("cursor")
    assert _alerts(stack, tenant) < 30
    for _ in range(10):
        run_tick(stack)
        if tenant_row(stack, tenant)["passComplete"]:
            break
    row = tenant_row(stack, tenant)
    assert row["passComplete"] is True and row["passState"] == "" and row["cursor"]
    assert_table_matches_ground_truth(stack, tenant, source)


def test_the_cursor_comes_from_the_data_not_the_clock(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"lagSeconds": 0})
    for hours in (5, 6):
        add_alert(stack, tenant, createdDateTime=hours_ago(stack, hours), lastUpdateDateTime=hours_ago(stack, hours))
    run_tick(stack)
    newest = max(parse_ticks(r["lastUpdateDateTime"]) for r in stored_rows(stack, tenant)
                 if r["RowKey"].startswith("alert|"))
    assert cursor_ticks(tenant_row(stack, tenant)) == newest
    assert newest < parse_ticks(cloud_now(stack).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) - minutes(60)


def test_a_completed_pass_never_moves_the_cursor_backwards_or_past_its_start() -> None:
    state = PassState(lo=0, cap=1_000, max_seen=5_000)
    assert completed_cursor(state, None) == 1_000
    assert completed_cursor(PassState(lo=0, cap=9_000, max_seen=5_000), 7_000) == 7_000
    assert completed_cursor(PassState(lo=0, cap=9_000, max_seen=None), 3_000) == 3_000
    assert completed_cursor(PassState(lo=0, cap=9_000, max_seen=None), None) is None


def test_a_new_pass_starts_an_overlap_before_the_cursor(stack: LocalStack) -> None:
    now = cloud_now(stack)
    cursor = parse_ticks("2026-11-01T10:00:00Z")
    state = start_state({"cursor": format_ticks(cursor)}, 15, 7, now)
    assert state.lo == cursor - minutes(15)
    fresh = start_state({"activatedAt": now}, 15, 7, now)
    assert fresh.cap - fresh.lo == minutes(7 * 24 * 60)


def _restart(stack: LocalStack, **settings: str | None) -> dict[str, str | None]:
    """Restart the host with changed settings (None: unset); returns the previous values."""
    before = {name: stack.settings.get(name) for name in settings}
    for name, value in settings.items():
        if value is None:
            stack.settings.pop(name, None)
        else:
            stack.settings[name] = value
    assert stack.host is not None
    stack.host.stop()
    stack.start_host()
    return before


def test_the_time_budget_stops_a_tick_cleanly_and_keeps_its_progress(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 30, "start": hours_ago(stack, 20), "lagSeconds": 0,
                                       "updatesPerAlert": 0})
    stack.cloud.control("POST", f"tenants/{tenant}/faults", json={"kind": "latency", "api": "graph",
                                                                   "latencyMs": 800})
    before = _restart(stack, FETCH_TIME_BUDGET_SECONDS="2", FETCH_MAX_PAGES_PER_TENANT="100")
    try:
        run_tick(stack)
        # 0.8 s a page against a 2 s budget: the tick stopped after the pages that fit (plus the one in
        # flight or prefetched), not after the 5 the tenant's backlog needs.
        calls = stack.cloud.control("GET", "stats").json()["apiRequests"][tenant]["graph"]
        assert 1 <= calls <= 4, calls
        row = tenant_row(stack, tenant)
        assert row["passComplete"] is False and row["passState"] and row["consecutiveFailures"] == 0
        assert 0 < _alerts(stack, tenant) < 30
        stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
        run_tick(stack)
        assert tenant_row(stack, tenant)["passComplete"] is True
        assert_table_matches_ground_truth(stack, tenant, "graph")
    finally:
        stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
        _restart(stack, **before)


def test_the_daily_retention_timer_deletes_alerts_not_updated_for_the_set_days(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"lagSeconds": 0})
    alerts = table(stack, "Alerts")
    old = datetime.now(UTC) - timedelta(days=200)
    raw = {"id": "ancient", "createdDateTime": format_ticks(from_datetime(old)),
           "lastUpdateDateTime": format_ticks(from_datetime(old)), "severity": "low", "status": "resolved"}
    AlertWriter(alerts, tenant, 0, lambda: None).write(
        [Prepared(normalise(raw, AlertSource.GRAPH, tenant, "https://p"), payload.encode(raw))])
    assert alert_key("ancient") in {r["RowKey"] for r in stored_rows(stack, tenant)}
    assert stack.host is not None
    finished = stack.host.admin("GET", "local/stats").json()["invocations"]["functions"].get(
        "retention_cleanup", {}).get("succeeded", 0)
    assert stack.host.admin("POST", "functions/retention_cleanup", json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 60
    while stack.host.admin("GET", "local/stats").json()["invocations"]["functions"].get(
            "retention_cleanup", {}).get("succeeded", 0) <= finished:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [r for r in stored_rows(stack, tenant) if not r["RowKey"].startswith("feed|")] == []


def test_the_tenant_row_a_run_holds_is_the_stored_row_after_its_merges_and_after_a_conflict(stack: LocalStack) -> None:
    # Whether a re-read is due is decided on the row as the regular pass left it (fetch_alerts/reread.py), without
    # reading it: what TenantRow holds must be what is stored, also when another writer changed the row in between.
    tenants = table(stack, "Tenants")
    tenant_id = str(uuid.uuid4())
    stored = tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                                    "alertsStored": 1})
    read = tenants.get_entity("tenant", tenant_id)
    assert read.metadata["etag"] == stored["etag"]
    tenant = TenantRow(tenants, tenant_id, read.metadata["etag"], dict(read))
    cursor = from_datetime(datetime(2026, 12, 1, tzinfo=UTC))

    def columns(row: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in row.items() if k not in ("PartitionKey", "RowKey")}

    tenant.merge({"alertsStored": 2, "passState": "x"}, cursor=cursor)
    assert columns(tenant.row) == columns(tenant_row(stack, tenant_id))
    tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "offboarded",
                           "cursor": format_ticks(cursor + 10)})  # another writer: the next merge conflicts
    tenant.merge({"alertsStored": 3, "passState": "y"}, cursor=cursor + 5)
    row = tenant_row(stack, tenant_id)
    assert columns(tenant.row) == columns(row)
    assert (row["status"], row["alertsStored"], row["passState"]) == ("offboarded", 3, "x")  # theirs was ahead
    assert cursor_ticks(row) == cursor + 10
    tenant.set_marker()
    tenant.merge({"alertsStored": 4})  # under the marker's ETag: no conflict
    assert columns(tenant.row) == columns(tenant_row(stack, tenant_id))
    assert tenant.row["pendingNotifications"] is True
