"""The tenant management API: list, show with history, change, offboard (with purge) and a fresh consent
link, over HTTP on the local host."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
from azure.data.tables import UpdateMode


def _active_tenant(onboarding, **invite) -> str:
    tenant = onboarding.new_tenant()
    onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant, **invite)["consentUrl"]))
    assert onboarding.tenant(tenant)["status"] == "active"
    return tenant


def test_the_list_shows_status_health_and_the_portal_link(onboarding):
    tenant = _active_tenant(onboarding, customerName="Listed Co")
    response = onboarding.api("GET", "tenants")
    assert response.status_code == 200
    entry = next(t for t in response.json()["value"] if t["tenantId"] == tenant)
    assert entry["status"] == "active" and entry["displayName"] == "Listed Co"
    assert entry["portalUrl"] == f"https://security.microsoft.com/?tid={tenant}"
    # Not fetched yet: every health value is null (no zeros or empty strings that look like a result).
    assert entry["health"] == {"lastAttempt": None, "lastSuccess": None, "lastErrorClass": None, "lastError": None,
                               "consecutiveFailures": None, "visibilityLag": None}


def test_the_health_shows_what_ingestion_wrote_on_the_tenant_row(onboarding):
    tenant = _active_tenant(onboarding)
    attempt, success = datetime(2026, 11, 27, 8, 0, 5, tzinfo=UTC), datetime(2026, 11, 27, 8, 0, 9, tzinfo=UTC)
    service = onboarding.tables()
    table = service.get_table_client(next(t.name for t in service.list_tables() if t.name.endswith("Tenants")))
    table.update_entity({"PartitionKey": "tenant", "RowKey": tenant, "lastAttempt": attempt, "lastSuccess": success,
                         "lastErrorClass": "throttled", "lastError": "429 from Graph", "consecutiveFailures": 2},
                        mode=UpdateMode.MERGE)
    entry = next(t for t in onboarding.api("GET", "tenants").json()["value"] if t["tenantId"] == tenant)
    assert entry["health"] == {"lastAttempt": attempt.isoformat(), "lastSuccess": success.isoformat(),
                               "lastErrorClass": "throttled", "lastError": "429 from Graph",
                               "consecutiveFailures": 2, "visibilityLag": None}


def test_the_list_holds_only_tenants_not_their_audit_rows(onboarding):
    _active_tenant(onboarding)
    ids = [t["tenantId"] for t in onboarding.api("GET", "tenants").json()["value"]]
    assert all(len(i) == 36 for i in ids) and len(ids) == len(set(ids))


def test_one_tenant_comes_with_its_status_history(onboarding):
    tenant = _active_tenant(onboarding)
    history = onboarding.tenant(tenant)["history"]
    assert [(h["from"], h["to"]) for h in history] == [(None, "verifying"), ("verifying", "active")]
    assert all(h["at"] and h["reason"] for h in history)


@pytest.mark.parametrize("tenant", [str(uuid.uuid4()), "not-a-guid"], ids=["unknown-guid", "not-a-guid"])
def test_an_unknown_or_malformed_tenant_is_a_problem(onboarding, tenant):
    response = onboarding.api("GET", f"tenants/{tenant}")
    assert response.status_code in (400, 404)
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_patch_changes_name_source_and_api_host(onboarding):
    tenant = _active_tenant(onboarding)
    response = onboarding.api("PATCH", f"tenants/{tenant}", json={
        "displayName": "Renamed", "alertSource": "defender", "apiHost": "https://eu.api.security.microsoft.com"})
    assert response.status_code == 200, response.text
    row = onboarding.tenant(tenant)
    assert (row["displayName"], row["alertSource"], row["apiHost"]) == (
        "Renamed", "defender", "https://eu.api.security.microsoft.com")
    assert row["status"] == "active"


def test_disabling_and_enabling_a_tenant_is_recorded(onboarding):
    tenant = _active_tenant(onboarding)
    assert onboarding.api("PATCH", f"tenants/{tenant}", json={"disabled": True}).json()["status"] == "disabled"
    assert onboarding.api("PATCH", f"tenants/{tenant}", json={"disabled": False}).json()["status"] == "active"
    assert [h["to"] for h in onboarding.tenant(tenant)["history"]] == [
        "verifying", "active", "disabled", "verifying", "active"]


@pytest.mark.parametrize("body, field", [
    ({"status": "active"}, "status"), ({"displayName": ""}, "displayName"), ({"alertSource": "x"}, "alertSource"),
    ({"apiHost": "http://api.example.com"}, "apiHost"), ({"apiHost": "https://10.1.1.1"}, "apiHost"),
    ({"apiHost": "https://api.example.com/path"}, "apiHost"), ({"disabled": "yes"}, "disabled"), ({}, "body"),
])
def test_a_bad_patch_is_a_400_naming_the_field_and_changes_nothing(onboarding, body, field):
    tenant = _active_tenant(onboarding)
    before = onboarding.snapshot()
    response = onboarding.api("PATCH", f"tenants/{tenant}", json=body)
    assert response.status_code == 400 and response.json()["field"] == field
    assert onboarding.snapshot() == before


# Microsoft's documented Defender API hosts: https://learn.microsoft.com/en-us/defender-endpoint/api/exposed-apis-list
# and, for US Government, https://learn.microsoft.com/en-us/defender-endpoint/gov
DOCUMENTED_HOSTS = [
    "api.security.microsoft.com", "us.api.security.microsoft.com", "eu.api.security.microsoft.com",
    "uk.api.security.microsoft.com", "au.api.security.microsoft.com", "swa.api.security.microsoft.com",
    "api.securitycenter.microsoft.com", "api-us.securitycenter.microsoft.com", "api-eu.securitycenter.microsoft.com",
    "api-uk.securitycenter.microsoft.com", "api-au.securitycenter.microsoft.com",
    "api-gcc.securitycenter.microsoft.us", "api-gov.securitycenter.microsoft.us",
]


@pytest.mark.parametrize("host", DOCUMENTED_HOSTS)
def test_every_documented_defender_api_host_is_accepted_as_api_host(onboarding, host):
    tenant = _active_tenant(onboarding)
    response = onboarding.api("PATCH", f"tenants/{tenant}", json={"apiHost": f"https://{host.upper()}/"})
    assert response.status_code == 200, response.text
    assert onboarding.tenant(tenant)["apiHost"] == f"https://{host}"


def test_the_configured_defender_api_host_is_accepted_as_api_host(onboarding):
    # How the local cloud's host (loopback, its own port) is allowed: it is the deployment's own setting.
    configured = onboarding.stack.settings["DEFENDER_API_HOST"]
    tenant = _active_tenant(onboarding)
    response = onboarding.api("PATCH", f"tenants/{tenant}", json={"apiHost": configured})
    assert response.status_code == 200, response.text
    assert onboarding.tenant(tenant)["apiHost"] == configured.rstrip("/").lower()


@pytest.mark.parametrize("host", [
    "https://api-eu.security.microsoft.com", "https://evil.example", "https://api.security.microsoft.com.evil.example",
    "https://evilapi.security.microsoft.com", "https://user@api.security.microsoft.com",
    "https://api.security.microsoft.com:8443", "http://api.security.microsoft.com",
    "https://api.security.microsoft.com/api", "https://api.security.microsoft.com?x=1", "api.security.microsoft.com",
    "https://graph.microsoft.com", "https://127.0.0.1:1", 42, ["https://api.security.microsoft.com"],
])
def test_an_api_host_that_is_not_a_defender_api_host_is_a_400_problem_naming_api_host(onboarding, host):
    tenant = _active_tenant(onboarding)
    before = onboarding.snapshot()
    response = onboarding.api("PATCH", f"tenants/{tenant}", json={"apiHost": host})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["field"] == "apiHost"
    assert onboarding.snapshot() == before


def test_a_patch_that_is_not_json_is_a_415(onboarding):
    tenant = _active_tenant(onboarding)
    response = onboarding.api("PATCH", f"tenants/{tenant}", data="displayName=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_offboarding_stops_the_tenant_and_says_to_remove_the_enterprise_app(onboarding):
    tenant = _active_tenant(onboarding)
    response = onboarding.api("DELETE", f"tenants/{tenant}")
    assert response.status_code == 200
    assert "enterprise application" in response.json()["note"]
    assert onboarding.tenant(tenant)["status"] == "offboarded"


def test_offboarding_with_purge_deletes_the_stored_alerts_in_the_background(onboarding):
    tenant, other = _active_tenant(onboarding), str(uuid.uuid4())
    alerts = onboarding.tables().create_table_if_not_exists("Alerts")
    for partition in (tenant, other):
        for index in range(250):
            alerts.upsert_entity({"PartitionKey": partition, "RowKey": f"alert|{index:04d}", "title": "x"})

    response = onboarding.api("DELETE", f"tenants/{tenant}", params={"purge": "true"})

    assert response.status_code == 202
    watch = response.json()["purge"]["href"]
    assert watch == response.headers["Location"] == f"/api/tenants/{tenant}/purge"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = onboarding.api("GET", watch.removeprefix("/api/")).json()
        if status["runtimeStatus"] == "Completed":
            break
        time.sleep(0.2)
    assert status["runtimeStatus"] == "Completed" and status["deleted"] == 250
    remaining = {r["PartitionKey"] for r in alerts.list_entities(select=["PartitionKey"])}
    assert tenant not in remaining and other in remaining


def test_the_purge_answer_carries_no_platform_key_and_its_status_route_needs_the_function_key(onboarding):
    # Durable's management URLs carry the extension's system key, which opens every instance's management
    # API (purge, terminate, raise events) to whoever holds it; a function key must not lead to it.
    tenant = _active_tenant(onboarding)
    response = onboarding.api("DELETE", f"tenants/{tenant}", params={"purge": "true"})
    assert response.status_code == 202
    exposed = response.text + json.dumps(dict(response.headers))
    assert "code=" not in exposed and "runtime/webhooks" not in exposed and "statusQueryGetUri" not in exposed
    assert onboarding.stack.host.master_key not in exposed
    anonymous = requests.get(f"{onboarding.host_url}/api/tenants/{tenant}/purge", timeout=30)
    assert anonymous.status_code == 401
    assert onboarding.api("GET", f"tenants/{uuid.uuid4()}/purge").status_code == 404
    assert onboarding.api("GET", "tenants/not-a-guid/purge").status_code == 400


def test_a_purge_flag_that_is_not_a_boolean_is_a_400(onboarding):
    tenant = _active_tenant(onboarding)
    assert onboarding.api("DELETE", f"tenants/{tenant}", params={"purge": "maybe"}).status_code == 400
    assert onboarding.tenant(tenant)["status"] == "active"


def test_an_offboarded_tenant_comes_back_through_a_fresh_consent_link(onboarding):
    tenant = _active_tenant(onboarding, customerName="Returning Co")
    onboarding.api("DELETE", f"tenants/{tenant}")

    fresh = onboarding.api("POST", f"tenants/{tenant}/consent")
    assert fresh.status_code == 201 and fresh.json()["customerName"] == "Returning Co"
    page = onboarding.open(onboarding.answer_consent(fresh.json()["consentUrl"]))

    assert "Access granted for Returning Co" in page.text
    assert [h["to"] for h in onboarding.tenant(tenant)["history"]][-3:] == ["offboarded", "verifying", "active"]


def test_a_fresh_link_for_an_active_tenant_is_a_409(onboarding):
    tenant = _active_tenant(onboarding)
    assert onboarding.api("POST", f"tenants/{tenant}/consent").status_code == 409


def test_a_fresh_link_for_an_unknown_tenant_is_a_404(onboarding):
    assert onboarding.api("POST", f"tenants/{uuid.uuid4()}/consent").status_code == 404
