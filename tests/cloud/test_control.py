"""Control API of the local cloud: setup, clock, settings, consents, alerts ground truth and statistics."""

from __future__ import annotations

import datetime as dt
import uuid

from local.run.services import LocalCloud
from tests.cloud import DEFENDER, GRAPH, call, consented_pair, new_app, new_tenant, request_token


def _now(cloud: LocalCloud) -> dt.datetime:
    return dt.datetime.fromisoformat(cloud.control("GET", "clock").json()["now"].replace("Z", "+00:00"))


def test_health_answers_ok(cloud: LocalCloud) -> None:
    assert call(cloud, "GET", "/control/health").json() == {"status": "ok"}


def test_advancing_the_clock_moves_cloud_time_forward(cloud: LocalCloud) -> None:
    before = _now(cloud)
    body = cloud.control("POST", "clock", json={"advance_seconds": 7200}).json()
    assert body["offsetSeconds"] >= 7200
    assert _now(cloud) - before >= dt.timedelta(hours=2)


def test_clock_never_goes_back(cloud: LocalCloud) -> None:
    assert call(cloud, "POST", "/control/clock", json={"advance_seconds": -5}).status_code == 400


def test_tenant_gets_a_generated_guid_and_resolves_by_domain(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    assert str(uuid.UUID(tenant["id"])) == tenant["id"]
    assert cloud.control("GET", f"tenants/{tenant['domains'][0].upper()}").json()["id"] == tenant["id"]


def test_tenant_keeps_a_given_id(cloud: LocalCloud) -> None:
    tenant_id = str(uuid.uuid4())
    assert new_tenant(cloud, id=tenant_id)["id"] == tenant_id


def test_a_domain_belongs_to_one_tenant(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    response = call(cloud, "POST", "/control/tenants", json={"domains": tenant["domains"]})
    assert response.status_code == 400


def test_unknown_tenant_is_404(cloud: LocalCloud) -> None:
    assert call(cloud, "GET", f"/control/tenants/{uuid.uuid4()}").status_code == 404


def test_tenant_settings_can_be_changed(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    body = cloud.control("PATCH", f"tenants/{tenant['id']}",
                         json={"defenderLicensed": False, "consentPropagationSeconds": 30, "rateLimits": True}).json()
    assert (body["defenderLicensed"], body["consentPropagationSeconds"], body["rateLimits"]) == (False, 30, True)


def test_app_summary_never_shows_secrets(cloud: LocalCloud) -> None:
    app = new_app(cloud)
    body = cloud.control("GET", f"apps/{app['clientId']}").text
    assert "local-test-secret" not in body


def test_direct_consent_can_be_limited_to_one_resource(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    consent = cloud.control("POST", f"tenants/{tenant['id']}/consents",
                            json={"clientId": app["clientId"], "resources": [DEFENDER]}).json()
    assert consent["roles"] == {DEFENDER: ["Alert.Read.All"]}
    assert request_token(cloud, tenant["id"], app["clientId"]).status_code == 200


def test_revoked_consent_fails_token_requests_with_aadsts700016(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    assert cloud.control("DELETE", f"tenants/{tenant_id}/consents/{client_id}").status_code == 204
    assert request_token(cloud, tenant_id, client_id).json()["error_codes"] == [700016]


def test_home_tenant_holds_the_apps_own_consent(cloud: LocalCloud) -> None:
    home = new_tenant(cloud)
    app = new_app(cloud, homeTenant=home["id"])
    consents = cloud.control("GET", f"tenants/{home['id']}/consents").json()["consents"]
    assert consents[0]["clientId"] == app["clientId"]
    assert consents[0]["roles"][GRAPH] == ["Mail.Send", "SecurityAlert.Read.All"]


def test_token_requests_are_counted_per_tenant_and_client(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    request_token(cloud, tenant_id, client_id)
    request_token(cloud, tenant_id, client_id, secret="wrong")
    stats = cloud.control("GET", "stats").json()
    assert stats["tokenRequests"]["byTenantAndClient"][tenant_id] == {client_id: 2}
    assert stats["tokensIssued"][tenant_id] == {client_id: 1}


def test_added_alert_appears_in_ground_truth_after_the_ingestion_lag(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud, alerts={"lagSeconds": 60})
    added = cloud.control("POST", f"tenants/{tenant['id']}/alerts", json={}).json()
    assert cloud.control("GET", f"tenants/{tenant['id']}/alerts").json()["alerts"] == []
    cloud.control("POST", "clock", json={"advance_seconds": 61})
    truth = cloud.control("GET", f"tenants/{tenant['id']}/alerts").json()["alerts"]
    assert [a["id"] for a in truth] == [added["id"]]


def test_updating_an_unknown_alert_is_404(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    response = call(cloud, "PATCH", f"/control/tenants/{tenant['id']}/alerts/nope", json={"status": "resolved"})
    assert response.status_code == 404


def test_refused_tenant_leaves_nothing_behind(cloud: LocalCloud) -> None:
    tenant_id = str(uuid.uuid4())
    response = call(cloud, "POST", "/control/tenants", json={"id": tenant_id, "alerts": {"alertsPerHour": -1}})
    assert response.status_code == 400
    assert call(cloud, "GET", f"/control/tenants/{tenant_id}").status_code == 404
