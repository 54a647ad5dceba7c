"""Entra of the local cloud: metadata, the client-credentials token endpoint, its errors, and API auth."""

from __future__ import annotations

import base64
import time
import uuid

import jwt
import pytest
import requests
from azure.identity import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from local.run.services import LocalCloud
from tests.cloud import (
    DEFENDER,
    DEFENDER_SCOPE,
    GRAPH,
    GRAPH_SCOPE,
    SECRET,
    access_token,
    call,
    consent,
    consented_pair,
    new_app,
    new_tenant,
    request_token,
    self_signed_certificate,
)


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _stats(cloud: LocalCloud) -> dict:
    return cloud.control("GET", "stats").json()


def _assertion(cloud: LocalCloud, tenant_id: str, client_id: str, cert_pem: str, key_pem: str,
               algorithm: str = "RS256", audience: str | None = None) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    thumbprint = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()  # noqa: S303
    now = int(time.time())
    claims = {"aud": audience or f"{cloud.url}/{tenant_id}/oauth2/v2.0/token", "iss": client_id,
              "sub": client_id, "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600}
    return jwt.encode(claims, key_pem, algorithm=algorithm, headers={"x5t": thumbprint})


def _assertion_form(assertion: str) -> dict[str, str]:
    return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}


def test_metadata_by_domain_names_the_tenant_guid(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    response = call(cloud, "GET", f"/{tenant['domains'][0]}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == f"{cloud.url}/{tenant['id']}/v2.0"
    assert metadata["token_endpoint"] == f"{cloud.url}/{tenant['id']}/oauth2/v2.0/token"
    assert metadata["authorization_endpoint"] == f"{cloud.url}/{tenant['id']}/oauth2/v2.0/authorize"
    assert call(cloud, "GET", metadata["jwks_uri"].removeprefix(cloud.url)).json()["keys"]


def test_metadata_for_unknown_tenant_is_aadsts90002(cloud: LocalCloud) -> None:
    response = call(cloud, "GET", f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]


def test_error_body_has_the_real_shape(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    body = request_token(cloud, tenant["id"], str(uuid.uuid4())).json()
    assert set(body) == {"error", "error_description", "error_codes", "timestamp", "trace_id",
                         "correlation_id", "error_uri"}
    description = body["error_description"]
    assert description.startswith("AADSTS700016: ")
    assert f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: {body['correlation_id']}\r\n" in description
    assert description.endswith(f"Timestamp: {body['timestamp']}")
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=700016"


def test_client_secret_credential_gets_a_token_with_tid_and_roles(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    credential = ClientSecretCredential(tenant_id, client_id, SECRET, authority=cloud.url,
                                        disable_instance_discovery=True, connection_verify=str(cloud.ca_path))
    token = credential.get_token(DEFENDER_SCOPE)
    claims = _claims(token.token)
    assert claims["tid"] == tenant_id
    assert claims["aud"] == DEFENDER
    assert claims["roles"] == ["Alert.Read.All"]
    assert claims["appid"] == claims["azp"] == client_id
    assert claims["iss"] == f"https://sts.windows.net/{tenant_id}/"
    assert 3500 < token.expires_on - time.time() <= 3600


def test_client_secret_credential_reuses_its_cached_token(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    credential = ClientSecretCredential(tenant_id, client_id, SECRET, authority=cloud.url,
                                        disable_instance_discovery=True, connection_verify=str(cloud.ca_path))
    first = credential.get_token(GRAPH_SCOPE)
    second = credential.get_token(GRAPH_SCOPE)
    assert first.token == second.token
    assert _stats(cloud)["tokenRequests"]["byTenant"][tenant_id] == 1


def test_certificate_credential_gets_a_token(cloud: LocalCloud) -> None:
    cert_pem, key_pem = self_signed_certificate()
    tenant = new_tenant(cloud)
    app = new_app(cloud, secrets=[], certificates=[cert_pem])
    consent(cloud, tenant["id"], app["clientId"])
    credential = CertificateCredential(
        tenant["domains"][0], app["clientId"], certificate_data=(key_pem + cert_pem).encode(),
        authority=cloud.url, disable_instance_discovery=True, connection_verify=str(cloud.ca_path))
    claims = _claims(credential.get_token(GRAPH_SCOPE).token)
    assert claims["tid"] == tenant["id"]
    assert claims["roles"] == ["Mail.Send", "SecurityAlert.Read.All"]
    assert claims["appidacr"] == "2"
    credential.get_token(GRAPH_SCOPE)
    assert _stats(cloud)["tokenRequests"]["byTenant"][tenant["id"]] == 1


@pytest.mark.parametrize("algorithm", ["RS256", "PS256"])
def test_assertion_signed_with_registered_certificate_is_accepted(cloud: LocalCloud, algorithm: str) -> None:
    cert_pem, key_pem = self_signed_certificate()
    tenant = new_tenant(cloud)
    app = new_app(cloud, certificates=[cert_pem])
    consent(cloud, tenant["id"], app["clientId"])
    assertion = _assertion(cloud, tenant["id"], app["clientId"], cert_pem, key_pem, algorithm)
    response = request_token(cloud, tenant["id"], app["clientId"], secret=None, **_assertion_form(assertion))
    assert response.status_code == 200, response.text


def test_assertion_signed_by_another_key_is_aadsts700027(cloud: LocalCloud) -> None:
    cert_pem, _ = self_signed_certificate()
    _, other_key = self_signed_certificate()
    tenant = new_tenant(cloud)
    app = new_app(cloud, certificates=[cert_pem])
    consent(cloud, tenant["id"], app["clientId"])
    assertion = _assertion(cloud, tenant["id"], app["clientId"], cert_pem, other_key)
    response = request_token(cloud, tenant["id"], app["clientId"], secret=None, **_assertion_form(assertion))
    assert response.status_code == 401
    assert response.json()["error_codes"] == [700027]


def test_assertion_for_another_token_endpoint_is_refused(cloud: LocalCloud) -> None:
    cert_pem, key_pem = self_signed_certificate()
    tenant = new_tenant(cloud)
    app = new_app(cloud, certificates=[cert_pem])
    consent(cloud, tenant["id"], app["clientId"])
    assertion = _assertion(cloud, tenant["id"], app["clientId"], cert_pem, key_pem,
                           audience=f"https://login.microsoftonline.com/{tenant['id']}/oauth2/v2.0/token")
    response = request_token(cloud, tenant["id"], app["clientId"], secret=None, **_assertion_form(assertion))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_secret_in_http_basic_is_accepted(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = requests.post(
        f"{cloud.url}/{tenant_id}/oauth2/v2.0/token", auth=(client_id, SECRET),
        data={"grant_type": "client_credentials", "scope": GRAPH_SCOPE}, verify=str(cloud.ca_path), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def test_success_body_has_the_real_shape(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    body = request_token(cloud, tenant_id, client_id).json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["expires_in"] == body["ext_expires_in"] == 3599


def test_access_token_verifies_with_the_published_jwks(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    token = access_token(cloud, tenant_id, client_id, GRAPH_SCOPE)
    keys = call(cloud, "GET", f"/{tenant_id}/discovery/v2.0/keys").json()["keys"]
    key = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=GRAPH)
    assert claims["tid"] == tenant_id


def test_wrong_secret_is_aadsts7000215(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = request_token(cloud, tenant_id, client_id, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_codes"] == [7000215]


def test_expired_secret_is_aadsts7000222(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud, secrets=[{"value": SECRET, "expires": "2020-01-01T00:00:00Z"}])
    consent(cloud, tenant["id"], app["clientId"])
    response = request_token(cloud, tenant["id"], app["clientId"])
    assert response.status_code == 401
    assert response.json()["error_codes"] == [7000222]


def test_unknown_tenant_is_aadsts90002(cloud: LocalCloud) -> None:
    response = request_token(cloud, "nobody.example", str(uuid.uuid4()))
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


def test_app_not_consented_in_tenant_is_aadsts700016(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    response = request_token(cloud, tenant["id"], app["clientId"])
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert response.json()["error_codes"] == [700016]


def test_two_resources_in_scope_is_aadsts700022(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = request_token(cloud, tenant_id, client_id, scope=f"{GRAPH_SCOPE} {DEFENDER_SCOPE}")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [700022]


def test_scope_without_default_is_aadsts70011(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = request_token(cloud, tenant_id, client_id, scope=f"{GRAPH}/SecurityAlert.Read.All")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert response.json()["error_codes"] == [70011]


@pytest.mark.parametrize("alias", ["https://api.security.microsoft.com",
                                   "https://securitycenter.onmicrosoft.com/windowsatpservice"])
def test_defender_resource_aliases_give_a_defender_token(cloud: LocalCloud, alias: str) -> None:
    tenant_id, client_id = consented_pair(cloud)
    token = access_token(cloud, tenant_id, client_id, f"{alias}/.default")
    assert _claims(token)["aud"] == DEFENDER
    assert _claims(token)["roles"] == ["Alert.Read.All"]


def test_token_requests_fail_until_consent_has_propagated(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud, consentPropagationSeconds=600)
    app = new_app(cloud)
    consent(cloud, tenant["id"], app["clientId"])
    assert request_token(cloud, tenant["id"], app["clientId"]).json()["error_codes"] == [700016]
    cloud.control("POST", "clock", json={"advance_seconds": 601})
    assert request_token(cloud, tenant["id"], app["clientId"]).status_code == 200


def test_token_lifetime_follows_the_setting(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 30})
    try:
        body = request_token(cloud, tenant_id, client_id).json()
    finally:
        cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 3599})
    claims = _claims(body["access_token"])
    assert body["expires_in"] == 30
    assert claims["exp"] - claims["iat"] == 30


# --- API authentication ------------------------------------------------------------------------------

def test_defender_alerts_answer_a_defender_token(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = call(cloud, "GET", "/api/alerts", access_token(cloud, tenant_id, client_id))
    assert response.status_code == 200
    assert isinstance(response.json()["value"], list)


def test_graph_alerts_answer_a_graph_token(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = call(cloud, "GET", "/v1.0/security/alerts_v2", access_token(cloud, tenant_id, client_id, GRAPH_SCOPE))
    assert response.status_code == 200
    assert isinstance(response.json()["value"], list)


def test_api_without_token_is_401(cloud: LocalCloud) -> None:
    defender = call(cloud, "GET", "/api/alerts")
    graph = call(cloud, "GET", "/v1.0/security/alerts_v2")
    assert defender.status_code == 401
    assert defender.json()["error"]["code"] == "Unauthorized"
    assert graph.status_code == 401
    assert graph.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_token_signed_by_someone_else_is_401(cloud: LocalCloud) -> None:
    _, key_pem = self_signed_certificate()
    forged = jwt.encode({"aud": DEFENDER, "tid": str(uuid.uuid4()), "roles": ["Alert.Read.All"],
                         "exp": int(time.time()) + 600}, key_pem, algorithm="RS256")
    assert call(cloud, "GET", "/api/alerts", forged).status_code == 401


def test_expired_token_is_401(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 1})
    try:
        token = access_token(cloud, tenant_id, client_id)
    finally:
        cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 3599})
    time.sleep(2.1)
    response = call(cloud, "GET", "/api/alerts", token)
    assert response.status_code == 401


def test_defender_refuses_a_graph_token_with_403(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = call(cloud, "GET", "/api/alerts", access_token(cloud, tenant_id, client_id, GRAPH_SCOPE))
    assert response.status_code == 403
    assert set(response.json()["error"]) == {"code", "message", "target"}


def test_graph_refuses_a_defender_token_as_invalid_audience(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = call(cloud, "GET", "/v1.0/security/alerts_v2", access_token(cloud, tenant_id, client_id))
    assert response.status_code == 401
    assert "Invalid audience" in response.json()["error"]["message"]


def test_token_without_the_role_gets_missing_application_roles(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud, requiredResourceAccess={GRAPH: ["Mail.Send"]})
    consent(cloud, tenant["id"], app["clientId"])
    response = call(cloud, "GET", "/v1.0/security/alerts_v2",
                    access_token(cloud, tenant["id"], app["clientId"], GRAPH_SCOPE))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["message"].startswith(
        "Missing application roles. API required roles: SecurityAlert.Read.All,SecurityAlert.ReadWrite.All")
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


def test_v1_token_endpoint_takes_a_resource(cloud: LocalCloud) -> None:
    tenant_id, client_id = consented_pair(cloud)
    response = requests.post(
        f"{cloud.url}/{tenant_id}/oauth2/token", verify=str(cloud.ca_path), timeout=30,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET,
              "resource": DEFENDER})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resource"] == DEFENDER
    assert body["expires_in"] == "3599"
    assert _claims(body["access_token"])["roles"] == ["Alert.Read.All"]


def test_organizations_metadata_has_a_templated_issuer(cloud: LocalCloud) -> None:
    metadata = call(cloud, "GET", "/organizations/v2.0/.well-known/openid-configuration").json()
    assert metadata["issuer"] == f"{cloud.url}/{{tenantid}}/v2.0"
    assert metadata["token_endpoint"] == f"{cloud.url}/organizations/oauth2/v2.0/token"
