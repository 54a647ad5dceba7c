"""Classification of Microsoft failures into typed errors, on real answers of the local cloud."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests

from local.run.services import LocalCloud, free_port
from shared.errors import (
    AppNotFound,
    BadResponse,
    ConsentRevoked,
    MicrosoftError,
    MsspCredentialError,
    NotLicensed,
    PermissionMissing,
    ServiceError,
    TenantNotFound,
    Throttled,
    aadsts_codes,
    from_aadsts,
    from_api_response,
    from_transport,
    json_object,
    retry_after_seconds,
)
from tests.cloud import GRAPH_SCOPE, access_token, call, request_token
from tests.shared import add_fault

ALERTS = "/v1.0/security/alerts_v2"


def graph_alerts(cloud: LocalCloud, tenant_id: str, client_id: str) -> requests.Response:
    token = access_token(cloud, tenant_id, client_id, GRAPH_SCOPE)
    return call(cloud, "GET", ALERTS, token, params={"$top": "1"})


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (700016, AppNotFound), (7000112, ConsentRevoked), (65001, ConsentRevoked),
        (650052, NotLicensed), (500011, NotLicensed),
        (90002, TenantNotFound),
        (7000215, MsspCredentialError), (7000222, MsspCredentialError), (700027, MsspCredentialError),
        (7000218, MsspCredentialError), (70021, MsspCredentialError), (700024, MsspCredentialError),
        (700212, MsspCredentialError), (70025, MsspCredentialError), (700030, MsspCredentialError),
        (50012, MsspCredentialError),
        (90033, ServiceError), (50196, Throttled),
    ],
)
def test_an_aadsts_code_maps_to_its_meaning(code, error_type):
    error = from_aadsts("t1", code)
    assert type(error) is error_type
    assert error.code == f"AADSTS{code}" and error.tenant_id == "t1"


def test_app_not_found_is_a_consent_problem_with_its_own_kind():
    # Callers that only know ConsentRevoked still treat it as one; the kind keeps "not yet" apart.
    error = from_aadsts("t1", 700016)
    assert isinstance(error, ConsentRevoked) and error.kind == "app_not_found"


def test_the_mssp_own_credential_codes_are_never_a_customer_kind():
    for code in (7000215, 7000222, 700027, 700024, 70021, 700212, 700213, 70025, 700030, 50012):
        error = from_aadsts("t1", code)
        assert error.kind == "mssp_credential" and not isinstance(error, ConsentRevoked), code


def test_an_aadsts_code_without_a_special_meaning_is_a_plain_microsoft_error():
    error = from_aadsts("t1", 53003)
    assert type(error) is MicrosoftError and error.kind == "error"


def test_the_aadsts_code_is_read_from_a_real_entra_error_description(cloud, app, tenant):
    body = request_token(cloud, tenant, app["clientId"], secret="wrong").json()
    assert aadsts_codes(body["error_description"]) == [7000215]


def test_every_error_kind_has_a_distinct_stable_name():
    kinds = [t.kind for t in (MicrosoftError, ConsentRevoked, PermissionMissing, NotLicensed, TenantNotFound,
                              Throttled, ServiceError, BadResponse, MsspCredentialError)]
    assert kinds == ["error", "consent_revoked", "permission_missing", "not_licensed", "tenant_not_found",
                     "throttled", "service_error", "bad_response", "mssp_credential"]


def test_an_error_names_its_tenant_in_its_text():
    assert str(ConsentRevoked("0f1e", "gone")) == "tenant 0f1e: gone"


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0", 0.0), (None, None), ("", None), ("soon", None)])
def test_retry_after_is_read_in_seconds(header, seconds):
    assert retry_after_seconds(header) == seconds


def test_retry_after_as_an_http_date_is_the_time_left():
    header = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(header) <= 31


def test_a_429_is_throttled_with_its_retry_after(cloud, app, tenant):
    add_fault(cloud, tenant, "throttle", api="graph", count=1, retryAfter=42)
    error = from_api_response(tenant, "graph", graph_alerts(cloud, tenant, app["clientId"]))
    assert isinstance(error, Throttled) and error.retry_after == 42.0


@pytest.mark.parametrize("kind", ["server_error", "unavailable"])
def test_a_5xx_is_a_service_error(cloud, app, tenant, kind):
    add_fault(cloud, tenant, kind, api="graph", count=1)
    error = from_api_response(tenant, "graph", graph_alerts(cloud, tenant, app["clientId"]))
    assert isinstance(error, ServiceError)


def test_a_403_disabled_feature_is_not_licensed(cloud, app, tenant):
    add_fault(cloud, tenant, "feature_disabled", api="graph", count=1)
    error = from_api_response(tenant, "graph", graph_alerts(cloud, tenant, app["clientId"]))
    assert isinstance(error, NotLicensed) and error.code == "DisabledFeature"


def test_a_403_missing_application_roles_is_permission_missing(cloud, app, tenant):
    add_fault(cloud, tenant, "permission_removed", api="graph", count=1)
    error = from_api_response(tenant, "graph", graph_alerts(cloud, tenant, app["clientId"]))
    assert isinstance(error, PermissionMissing)


def test_a_401_for_a_bad_token_is_a_plain_microsoft_error(cloud, tenant):
    response = call(cloud, "GET", ALERTS, "not-a-token")
    error = from_api_response(tenant, "graph", response)
    assert type(error) is MicrosoftError and error.code == "InvalidAuthenticationToken"


@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
def test_a_damaged_success_body_is_a_bad_response(cloud, app, tenant, kind):
    add_fault(cloud, tenant, kind, api="graph", count=1)
    response = graph_alerts(cloud, tenant, app["clientId"])
    with pytest.raises(BadResponse):
        json_object(tenant, "graph", response)


def test_a_refused_connection_is_a_service_error():
    try:
        requests.get(f"https://127.0.0.1:{free_port()}/", timeout=5)
    except requests.RequestException as exc:
        error = from_transport("t1", "graph", exc)
    assert isinstance(error, ServiceError) and "connection" in error.message


def test_a_timeout_is_a_service_error(cloud, app, tenant):
    add_fault(cloud, tenant, "latency", api="graph", latencyMs=1500, count=1)
    token = access_token(cloud, tenant, app["clientId"], GRAPH_SCOPE)
    with pytest.raises(requests.Timeout) as raised:
        requests.get(f"{cloud.url}{ALERTS}", headers={"Authorization": f"Bearer {token}"}, timeout=0.3)
    error = from_transport(tenant, "graph", raised.value)
    assert isinstance(error, ServiceError) and "timed out" in error.message
