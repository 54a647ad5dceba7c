"""Ingestion end to end: the real host's timer against the local cloud and Azurite, both sources, each
test ending with the table compared to the cloud's ground truth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from local.run.stack import LocalStack
from shared.alerts import alert_key
from shared.payload import decode_payload
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    fire,
    hours_ago,
    run_tick,
    start_stack,
    table,
    tenant_row,
    update_alert,
    wait_finished,
    wait_lease_free,
)
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, ground_truth, stored_rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A killed host's message comes back after 10 s rather than 10 minutes, and its tenant's lease expires after
    # 6 s rather than a minute, so that a test can run the next tick without waiting that long.
    service = start_stack(tmp_path_factory.mktemp("ingest"), FETCH_GRAPH_PAGE_SIZE="7",
                          FETCH_DEFENDER_PAGE_SIZE="9", FETCH_LEASE_SECONDS="6",
                          LOCAL_HOST_QUEUE_VISIBILITY_SECONDS="10")
    yield service
    service.stop()


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_backfill_is_stored_without_obligations_and_new_alerts_get_one(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"count": 30, "start": hours_ago(stack, 30), "lagSeconds": 0})
    run_tick(stack)
    first = assert_table_matches_ground_truth(stack, tenant, source)
    assert first.alerts == 30 and first.new_obligations == 0
    for _ in range(3):
        add_alert(stack, tenant)
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, source)
    assert report.alerts == 33 and report.new_obligations == 3
    row = tenant_row(stack, tenant)
    assert row["consecutiveFailures"] == 0 and row["cursor"] and row["passComplete"] is True


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_a_severity_rise_adds_one_severity_obligation(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    alert = add_alert(stack, tenant, severity="low")
    run_tick(stack)
    update_alert(stack, tenant, alert["id"], severity="high")
    run_tick(stack)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    reasons = sorted(r["RowKey"].rsplit("|", 1)[1] for r in stored_rows(stack, tenant)
                     if r["RowKey"].startswith("obligation|"))
    assert reasons == ["new", "severity-High"]


def test_an_update_older_than_the_stored_version_never_overwrites_it(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"lagSeconds": 0})
    alert = add_alert(stack, tenant)
    run_tick(stack)
    later = cloud_now(stack) + timedelta(seconds=5)
    update_alert(stack, tenant, alert["id"], status="inProgress",
                 lastUpdateDateTime=later.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, "graph")


def _alert_rows(stack: LocalStack, tenant: str) -> int:
    return sum(1 for r in stored_rows(stack, tenant) if r["RowKey"].startswith("alert|"))


def _wait_rows(stack: LocalStack, tenant: str, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _alert_rows(stack, tenant) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} alerts stored in time"
        time.sleep(0.05)


def _slow(stack: LocalStack, tenant: str, api: str = "graph", ms: int = 600) -> None:
    stack.cloud.control("POST", f"tenants/{tenant}/faults", json={"kind": "latency", "api": api, "latencyMs": ms})


def _clear(stack: LocalStack, tenant: str) -> None:
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")


def test_alerts_added_and_updated_while_paging_shift_pages_without_losing_any(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 30, "start": hours_ago(stack, 5), "lagSeconds": 0,
                                       "updatesPerAlert": 0})
    _slow(stack, tenant)
    before = fire(stack)
    _wait_rows(stack, tenant, 7)
    first_page = [r["alertId"] for r in stored_rows(stack, tenant) if r["RowKey"].startswith("alert|")]
    for _ in range(3):  # newest first: they enter ahead of the nextLink offset and push the rest down
        add_alert(stack, tenant)
    update_alert(stack, tenant, first_page[0], severity="high", status="inProgress")
    wait_finished(stack, before)
    _clear(stack, tenant)
    assert tenant_row(stack, tenant)["alertsRepeated"] >= 1  # an alert crossed a page boundary
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, "graph")
    assert report.alerts == 33


@pytest.mark.slow
def test_defender_alerts_updated_while_paging_are_not_lost(stack: LocalStack) -> None:
    tenant = add_tenant(stack, source="defender", alerts={"count": 30, "start": hours_ago(stack, 40),
                                                          "lagSeconds": 0, "updatesPerAlert": 0})
    _slow(stack, tenant, "defender", 500)
    before = fire(stack)
    _wait_rows(stack, tenant, 1)
    truth = ground_truth(stack, tenant)
    for alert in truth[:10]:  # the newest: in windows not read yet, they move to later windows
        update_alert(stack, tenant, alert["id"], status="resolved", classification="falsePositive")
    wait_finished(stack, before)
    _clear(stack, tenant)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, "defender")


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_alerts_visible_only_after_the_ingestion_lag_are_caught(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"count": 5, "start": hours_ago(stack, 2), "lagSeconds": 120,
                                                      "updatesPerAlert": 0})
    run_tick(stack)
    late = add_alert(stack, tenant)
    run_tick(stack)
    assert late["id"] not in {r.get("alertId") for r in stored_rows(stack, tenant)}
    stack.cloud.control("POST", "clock", json={"advance_seconds": 150})
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, source)
    assert report.alerts == 6 and report.new_obligations == 1


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_equal_last_update_times_across_page_boundaries_are_all_stored(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    same = hours_ago(stack, 1)
    for minute in range(20):
        add_alert(stack, tenant, createdDateTime=hours_ago(stack, 2 + minute / 60), lastUpdateDateTime=same)
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, source)
    assert report.alerts == 20


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_a_2_mb_alert_is_stored_within_the_table_limits(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    alert = add_alert(stack, tenant, evidenceSizeBytes=2_000_000)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    row = dict(table(stack, "Alerts").get_entity(tenant, alert_key(alert["id"])))
    chunks = [row[f"payload{i}"] for i in range(row["payloadParts"])]
    assert all(len(c) <= 64 * 1024 for c in chunks) and sum(map(len, chunks)) < 1024 * 1024
    stored = decode_payload(row)
    assert stored["id"] == alert["id"] and (row["payloadTrimmed"] or row["payloadBytes"] > 1_500_000)


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_text_fields_longer_than_a_table_property_are_cut_and_the_alert_stored(stack: LocalStack,
                                                                               source: str) -> None:
    # Table Storage refuses a string property over 64 KiB (32K UTF-16 characters); a column copied whole would
    # fail the page's transaction on every tick, and the tenant's ingestion with it.
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    long = {name: name[0] * 40_000 for name in ("title", "category", "deviceGroup")}
    alert = add_alert(stack, tenant, **long)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    row = dict(table(stack, "Alerts").get_entity(tenant, alert_key(alert["id"])))
    texts = {name: value for name, value in row.items() if isinstance(value, str)}
    assert max(len(v) for v in texts.values()) <= 32 * 1024, {n: len(v) for n, v in texts.items()}
    assert row["title"] == "t" * 4000 and row["category"] == "c" * 1024
    assert decode_payload(row)["id"] == alert["id"]


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_unknown_enum_values_are_stored_as_received(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"count": 10, "start": hours_ago(stack, 3), "lagSeconds": 0,
                                                      "futureEnumFraction": 1.0})
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    rows = [r for r in table(stack, "Alerts").query_entities("PartitionKey eq @pk", parameters={"pk": tenant},
                                                             select=["RowKey", "detectionSource"])
            if r["RowKey"].startswith("alert|")]
    assert all(r["detectionSource"] for r in rows)


@pytest.mark.slow
def test_the_host_killed_between_pages_resumes_without_loss_or_duplicate_obligations(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 40, "start": hours_ago(stack, 6), "lagSeconds": 0},
                        activated_at=cloud_now(stack) - timedelta(hours=3))
    _slow(stack, tenant, ms=700)
    fire(stack)
    _wait_rows(stack, tenant, 14)
    assert stack.host is not None
    stack.host.kill()
    stack.start_host()
    _clear(stack, tenant)
    assert tenant_row(stack, tenant).get("passState")  # progress was kept
    wait_lease_free(stack, tenant)  # the killed invocation's lease expires; nobody releases it
    run_tick(stack)  # finishes the killed pass
    # An alert updated while the killed pass ran, after that pass had read it, is read by the next pass
    # (the cursor never moves past a pass's start: fetch_alerts/sources.py); on a slow machine there is one.
    run_tick(stack)
    report = assert_table_matches_ground_truth(stack, tenant, "graph")
    assert report.alerts == 40 and 0 < report.new_obligations < 40


def test_the_timer_fired_twice_at_once_stores_each_alert_and_obligation_once(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 25, "start": hours_ago(stack, 4), "lagSeconds": 0},
                        activated_at=cloud_now(stack) - timedelta(hours=5))
    _slow(stack, tenant, ms=100)
    before = fire(stack)
    fire(stack)
    wait_finished(stack, before, count=2)
    _clear(stack, tenant)
    report = assert_table_matches_ground_truth(stack, tenant, "graph")
    assert report.alerts == report.new_obligations == 25


def test_a_broken_mssp_credential_is_recorded_once_and_leaves_tenants_alone(stack: LocalStack) -> None:
    tenant = add_tenant(stack, alerts={"count": 3, "start": hours_ago(stack, 1), "lagSeconds": 0})
    good = stack.settings["MSSP_APP_CLIENT_SECRET"]
    assert stack.host is not None
    try:
        stack.settings["MSSP_APP_CLIENT_SECRET"] = "wrong"
        stack.host.stop()
        stack.start_host()
        run_tick(stack)
        incident = dict(table(stack, "Incidents").get_entity("mssp", "credential"))
        assert incident["open"] is True and incident["kind"] == "mssp_credential"
        row = tenant_row(stack, tenant)
        assert row["status"] == "active" and not row.get("consecutiveFailures")
    finally:
        stack.settings["MSSP_APP_CLIENT_SECRET"] = good
        stack.host.stop()
        stack.start_host()
    run_tick(stack)
    assert dict(table(stack, "Incidents").get_entity("mssp", "credential"))["open"] is False
    assert_table_matches_ground_truth(stack, tenant, "graph")
