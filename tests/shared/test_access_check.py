"""Access verification against the local cloud: every outcome, for Graph and for Defender."""

from __future__ import annotations

import uuid

import pytest

from local.run.services import LocalCloud
from shared.access_check import AccessCheck, check_access
from shared.alert_sources import AlertSource
from shared.identity import TenantTokens
from tests.cloud import GRAPH, consent, new_tenant
from tests.shared import add_fault, cloud_settings

SOURCES = list(AlertSource)


def check(cloud: LocalCloud, app: dict, tenant_id: str, source: AlertSource, *, fresh: bool = False,
          tokens: TenantTokens | None = None, **values: str) -> AccessCheck:
    settings = cloud_settings(cloud, app["clientId"], **values)
    return check_access(tenant_id, source, consent_fresh=fresh, tokens=tokens or TenantTokens.from_settings(settings),
                        settings=settings)


def api_calls(cloud: LocalCloud, tenant_id: str, source: AlertSource) -> int:
    return int(cloud.control("GET", "stats").json()["apiRequests"].get(tenant_id, {}).get(str(source), 0))


@pytest.mark.parametrize("source", SOURCES)
def test_a_consented_tenant_is_active_after_one_alert_api_call(cloud, app, tenant, source):
    result = check(cloud, app, tenant, source)
    assert result.outcome == "active", result.message
    assert api_calls(cloud, tenant, source) == 1


@pytest.mark.parametrize("source", SOURCES)
def test_a_consent_still_propagating_is_retry_and_active_once_propagated(cloud, app, source):
    tenant_id = new_tenant(cloud, consentPropagationSeconds=600)["id"]
    consent(cloud, tenant_id, app["clientId"])
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))

    first = check(cloud, app, tenant_id, source, fresh=True, tokens=tokens)
    cloud.control("POST", "clock", json={"advance_seconds": 601})
    second = check(cloud, app, tenant_id, source, fresh=True, tokens=tokens)

    assert first.outcome == "app_not_found" and "AADSTS700016" in first.message
    assert second.outcome == "active", second.message


@pytest.mark.parametrize("source", SOURCES)
def test_a_deleted_enterprise_app_is_app_not_found_for_the_caller_to_judge(cloud, app, tenant, source):
    # AADSTS700016 also answers a consent that has not replicated yet: the caller decides when it is final.
    cloud.control("DELETE", f"tenants/{tenant}/consents/{app['clientId']}")
    result = check(cloud, app, tenant, source)
    assert (result.outcome, result.code) == ("app_not_found", "AADSTS700016")


@pytest.mark.parametrize("source", SOURCES)
def test_a_missing_app_right_after_consent_is_app_not_found_not_revoked(cloud, app, source):
    tenant_id = new_tenant(cloud)["id"]  # the consent has not reached Entra's token service at all yet
    assert check(cloud, app, tenant_id, source, fresh=True).outcome == "app_not_found"


@pytest.mark.parametrize("source", SOURCES)
def test_a_token_without_the_alert_role_is_permission_missing(cloud, app, tenant, source):
    add_fault(cloud, tenant, "permission_removed", api="token")
    result = check(cloud, app, tenant, source)
    assert result.outcome == "permission_missing"
    assert api_calls(cloud, tenant, source) == 0  # decided from the token's roles, before any API call


@pytest.mark.parametrize("source", SOURCES)
def test_a_role_missing_right_after_consent_is_retry(cloud, app, tenant, source):
    add_fault(cloud, tenant, "permission_removed", api="token")
    assert check(cloud, app, tenant, source, fresh=True).outcome == "retry"


@pytest.mark.parametrize("source", SOURCES)
def test_an_api_answering_missing_application_roles_is_permission_missing(cloud, app, tenant, source):
    add_fault(cloud, tenant, "permission_removed", api=str(source))
    result = check(cloud, app, tenant, source)
    assert result.outcome == "permission_missing"
    assert "Missing application roles" in result.message


def test_consent_to_graph_only_leaves_defender_permission_missing(cloud, app):
    tenant_id = new_tenant(cloud)["id"]
    consent(cloud, tenant_id, app["clientId"], resources=[GRAPH])
    assert check(cloud, app, tenant_id, AlertSource.GRAPH).outcome == "active"
    result = check(cloud, app, tenant_id, AlertSource.DEFENDER)
    assert result.outcome == "permission_missing" and "Alert.Read.All" in result.message


@pytest.mark.parametrize("source", SOURCES)
def test_a_disabled_feature_is_not_licensed(cloud, app, tenant, source):
    add_fault(cloud, tenant, "feature_disabled", api=str(source))
    result = check(cloud, app, tenant, source)
    assert result.outcome == "not_licensed" and "DisabledFeature" in result.message


def test_a_tenant_without_defender_is_not_licensed_for_the_defender_api(cloud, app):
    tenant_id = new_tenant(cloud, defenderLicensed=False)["id"]
    consent(cloud, tenant_id, app["clientId"], resources=[GRAPH])
    result = check(cloud, app, tenant_id, AlertSource.DEFENDER, fresh=True)
    assert result.outcome == "not_licensed" and "AADSTS500011" in result.message


@pytest.mark.parametrize("source", SOURCES)
def test_an_unknown_tenant_is_tenant_not_found(cloud, app, source):
    assert check(cloud, app, str(uuid.uuid4()), source, fresh=True).outcome == "tenant_not_found"


@pytest.mark.parametrize("source", SOURCES)
def test_a_wrong_mssp_secret_is_an_mssp_credential_problem(cloud, app, tenant, source):
    result = check(cloud, app, tenant, source, fresh=True, MSSP_APP_CLIENT_SECRET="wrong")
    assert result.outcome == "mssp_credential" and "AADSTS7000215" in result.message
    assert result.code == "AADSTS7000215"


# (fault kind, where: "token" or the source's API, expected outcome)
FAULTS = [
    ("throttle", "token", "retry"),
    ("throttle", "api", "retry"),
    ("server_error", "token", "retry"),
    ("server_error", "api", "retry"),
    ("unavailable", "token", "retry"),
    ("unavailable", "api", "retry"),
    ("drop_connection", "token", "retry"),
    ("drop_connection", "api", "retry"),
    ("malformed_json", "token", "error"),
    ("malformed_json", "api", "error"),
    ("truncated_json", "token", "error"),
    ("truncated_json", "api", "error"),
    ("consent_revoked", "token", "app_not_found"),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("kind", "where", "outcome"), FAULTS, ids=[f"{k}-{w}" for k, w, _ in FAULTS])
def test_a_fault_gives_its_outcome(cloud, app, tenant, source, kind, where, outcome):
    add_fault(cloud, tenant, kind, api="token" if where == "token" else str(source), count=1, retryAfter=1)
    result = check(cloud, app, tenant, source)
    assert result.outcome == outcome, result.message
    assert "eyJ" not in result.message  # never a token, even when the damaged body quoted one


@pytest.mark.parametrize("source", SOURCES)
def test_a_check_after_a_transient_fault_is_active(cloud, app, tenant, source):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    add_fault(cloud, tenant, "server_error", api=str(source), count=1)
    assert check(cloud, app, tenant, source, tokens=tokens).outcome == "retry"
    assert check(cloud, app, tenant, source, tokens=tokens).outcome == "active"
