"""Ingestion under the local cloud's faults: transient ones are retried away, refusals change the
tenant's status, one tenant's failure never stops another; every test ends against ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from local.run.stack import LocalStack
from shared.access_check import APP_NOT_FOUND_SINCE, APP_NOT_FOUND_WINDOW
from tests.fetch_alerts.harness import add_tenant, hours_ago, run_tick, start_stack, table, tenant_row
from tests.fetch_alerts.truth import assert_table_matches_ground_truth


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("faults"), FETCH_GRAPH_PAGE_SIZE="5", FETCH_DEFENDER_PAGE_SIZE="6",
                          FETCH_MAX_ATTEMPTS="4")
    yield service
    service.stop()


def fault(stack: LocalStack, tenant: str, kind: str, api: str, count: int | None = 2, **extra: Any) -> None:
    body: dict[str, Any] = {"kind": kind, "api": api, "retryAfter": 1, **extra}
    if count is not None:
        body["count"] = count
    stack.cloud.control("POST", f"tenants/{tenant}/faults", json=body)


def backlog(stack: LocalStack, source: str = "graph", **row: Any) -> str:
    return add_tenant(stack, source=source, alerts={"count": 12, "start": hours_ago(stack, 5), "lagSeconds": 0},
                      **row)


TRANSIENT = ["throttle", "server_error", "unavailable", "drop_connection", "truncated_json", "malformed_json"]


@pytest.mark.parametrize("source", ["graph", "defender"])
@pytest.mark.parametrize("kind", TRANSIENT)
def test_a_transient_api_fault_is_retried_and_nothing_is_lost(stack: LocalStack, kind: str, source: str) -> None:
    tenant = backlog(stack, source)
    fault(stack, tenant, kind, source)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    row = tenant_row(stack, tenant)
    assert row["consecutiveFailures"] == 0 and row["lastErrorClass"] == ""
    served = stack.cloud.control("GET", "stats").json()["faultsServed"][tenant]
    assert sum(served.values()) == 2


def test_latency_slows_the_run_but_loses_nothing(stack: LocalStack) -> None:
    tenant = backlog(stack)
    fault(stack, tenant, "latency", "graph", count=None, latencyMs=300)
    run_tick(stack)
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
    assert_table_matches_ground_truth(stack, tenant, "graph")


def test_a_throttled_token_request_is_retried(stack: LocalStack) -> None:
    tenant = backlog(stack)
    fault(stack, tenant, "throttle", "token", count=1)
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, "graph")


def test_a_failing_token_endpoint_is_recorded_as_a_service_error_without_a_status_change(stack: LocalStack) -> None:
    # MSAL replays a 5xx token answer to identical requests for a while, so the tick cannot recover it
    # by retrying; the tenant keeps its status and the next ticks retry.
    tenant = backlog(stack)
    fault(stack, tenant, "server_error", "token", count=1)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert (row["status"], row["lastErrorClass"], row["consecutiveFailures"]) == ("active", "service_error", 1)


def test_a_lasting_outage_is_recorded_and_does_not_stop_other_tenants(stack: LocalStack) -> None:
    broken = backlog(stack)
    healthy = backlog(stack)
    fault(stack, broken, "server_error", "graph", count=None)
    run_tick(stack)
    row = tenant_row(stack, broken)
    assert row["lastErrorClass"] == "service_error" and row["consecutiveFailures"] == 1
    assert row["status"] == "active"
    assert_table_matches_ground_truth(stack, healthy, "graph")
    stack.cloud.control("DELETE", f"tenants/{broken}/faults")
    run_tick(stack)
    assert tenant_row(stack, broken)["consecutiveFailures"] == 0
    assert_table_matches_ground_truth(stack, broken, "graph")


def _history(stack: LocalStack, tenant: str) -> list[str]:
    rows = table(stack, "Tenants").query_entities("PartitionKey eq @pk", parameters={"pk": f"history|{tenant}"})
    return [r["toStatus"] for r in rows]


def _age_app_not_found_streak(stack: LocalStack, tenant: str) -> None:
    """Move the tenant's AADSTS700016 streak start back past the propagation window, as if the ticks in
    between had met it too (the window is real time; the host's clock cannot be moved)."""
    tenants = table(stack, "Tenants")
    row = tenants.get_entity("tenant", tenant)
    row[APP_NOT_FOUND_SINCE] = row[APP_NOT_FOUND_SINCE] - APP_NOT_FOUND_WINDOW - timedelta(seconds=1)
    tenants.update_entity(row)


def test_revoked_consent_is_retried_then_marks_the_tenant_once_it_persists_and_polling_stops(
        stack: LocalStack) -> None:
    # A token already issued stays valid until it expires, as in Entra; the refusal comes with the next
    # token request, which a tenant not polled before makes at once.
    tenant = backlog(stack)
    stack.cloud.control("DELETE", f"tenants/{tenant}/consents/{stack.settings['MSSP_APP_CLIENT_ID']}")
    run_tick(stack)
    row = tenant_row(stack, tenant)
    # AADSTS700016 is also Entra's answer while a consent replicates: the first one is not a revocation.
    assert (row["status"], row["lastErrorClass"], row["consecutiveFailures"]) == ("active", "app_not_found", 1)
    assert _history(stack, tenant) == []
    first_seen = row[APP_NOT_FOUND_SINCE]
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert (row["status"], row[APP_NOT_FOUND_SINCE]) == ("active", first_seen)  # the streak keeps its start

    _age_app_not_found_streak(stack, tenant)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["status"] == "consent_revoked" and row["lastErrorClass"] == "app_not_found"
    assert _history(stack, tenant) == ["consent_revoked"]
    before = stack.cloud.control("GET", "stats").json()["tokenRequests"]["byTenant"].get(tenant, 0)
    run_tick(stack)
    assert stack.cloud.control("GET", "stats").json()["tokenRequests"]["byTenant"].get(tenant, 0) == before


def test_app_not_found_that_clears_within_the_window_leaves_the_tenant_active(stack: LocalStack) -> None:
    # A new instance can meet an Entra replica the consent has not reached yet; the next tick works.
    tenant = backlog(stack)
    fault(stack, tenant, "consent_revoked", "token", count=None)
    run_tick(stack)
    assert tenant_row(stack, tenant)["lastErrorClass"] == "app_not_found"
    stack.cloud.control("DELETE", f"tenants/{tenant}/faults")
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert (row["status"], row["lastErrorClass"], row["consecutiveFailures"]) == ("active", "", 0)
    assert _history(stack, tenant) == []
    assert_table_matches_ground_truth(stack, tenant, "graph")


def test_a_removed_permission_marks_the_tenant_permission_missing(stack: LocalStack) -> None:
    tenant = backlog(stack)
    fault(stack, tenant, "permission_removed", "graph", count=None)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["status"] == "permission_missing" and row["lastErrorClass"] == "permission_missing"
    assert _history(stack, tenant) == ["permission_missing"]


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_a_disabled_feature_marks_the_tenant_not_licensed(stack: LocalStack, source: str) -> None:
    tenant = backlog(stack, source)
    fault(stack, tenant, "feature_disabled", source, count=None)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["status"] == "not_licensed" and row["lastErrorClass"] == "not_licensed"


def test_tokens_are_requested_once_per_tenant_per_lifetime(stack: LocalStack) -> None:
    tenants = [backlog(stack), backlog(stack, "defender")]
    for _ in range(3):
        run_tick(stack)
    by_tenant = stack.cloud.control("GET", "stats").json()["tokenRequests"]["byTenant"]
    assert [by_tenant.get(t) for t in tenants] == [1, 1]
    for tenant, source in zip(tenants, ["graph", "defender"], strict=True):
        assert_table_matches_ground_truth(stack, tenant, source)


def test_the_consent_revoked_token_fault_marks_the_tenant_consent_revoked_once_it_persists(
        stack: LocalStack) -> None:
    tenant = backlog(stack)
    fault(stack, tenant, "consent_revoked", "token", count=None)
    run_tick(stack)
    assert tenant_row(stack, tenant)["status"] == "active"
    _age_app_not_found_streak(stack, tenant)
    run_tick(stack)
    row = tenant_row(stack, tenant)
    assert row["status"] == "consent_revoked" and _history(stack, tenant) == ["consent_revoked"]


def test_tokens_issued_without_roles_mark_the_tenant_permission_missing(stack: LocalStack) -> None:
    tenant = backlog(stack, "defender")
    fault(stack, tenant, "permission_removed", "token", count=None)
    run_tick(stack)
    assert tenant_row(stack, tenant)["status"] == "permission_missing"
