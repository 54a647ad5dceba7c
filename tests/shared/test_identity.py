"""Tokens for customer tenants: each credential form, one token request per tenant, typed failures."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import threading
import time
import uuid

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from local.run.services import LocalCloud
from shared.alert_sources import AlertSource
from shared.errors import BadResponse, ConsentRevoked, MsspCredentialError, TenantNotFound
from shared.identity import TenantTokens, get_tenant_tokens, token_claims
from tests.cloud import SECRET, consent, new_app, new_tenant, self_signed_certificate
from tests.shared import add_fault, cloud_settings, token_requests


def certificate_app(cloud: LocalCloud) -> tuple[dict, str, str]:
    """(app, certificate PEM, private key PEM) of an app whose only credential is a certificate."""
    cert_pem, key_pem = self_signed_certificate()
    return new_app(cloud, secrets=[], certificates=[cert_pem]), cert_pem, key_pem


def consented_tenant(cloud: LocalCloud, client_id: str) -> str:
    tenant_id = new_tenant(cloud)["id"]
    consent(cloud, tenant_id, client_id)
    return tenant_id


# --- the three credential forms --------------------------------------------------------------------

@pytest.mark.parametrize("source", list(AlertSource))
def test_a_secret_credential_gets_a_token_for_the_tenant_with_the_alert_role(cloud, app, tenant, source):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    claims = token_claims(tokens.token(tenant, source))
    assert claims["tid"] == tenant
    assert claims["appid"] == app["clientId"]
    expected = {AlertSource.GRAPH: "SecurityAlert.Read.All", AlertSource.DEFENDER: "Alert.Read.All"}[source]
    assert expected in claims["roles"]


def test_a_certificate_given_as_pem_text_gets_a_token(cloud):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="certificate",
                              MSSP_APP_CERTIFICATE=key_pem + cert_pem)
    claims = TenantTokens.from_settings(settings).claims(tenant_id, AlertSource.DEFENDER)
    assert claims["tid"] == tenant_id
    assert claims["appidacr"] == "2"  # authenticated with a client assertion, not a secret


def test_a_certificate_given_as_pem_with_escaped_newlines_gets_a_token(cloud):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    one_line = (key_pem + cert_pem).replace("\n", "\\n")
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="certificate", MSSP_APP_CERTIFICATE=one_line)
    assert TenantTokens.from_settings(settings).claims(tenant_id, AlertSource.GRAPH)["tid"] == tenant_id


def test_a_certificate_given_as_a_file_path_gets_a_token(cloud, tmp_path):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    path = tmp_path / "mssp-app.pem"
    path.write_text(key_pem + cert_pem)
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="certificate", MSSP_APP_CERTIFICATE=str(path))
    assert TenantTokens.from_settings(settings).claims(tenant_id, AlertSource.GRAPH)["tid"] == tenant_id


def test_a_certificate_given_as_base64_pkcs12_like_a_key_vault_reference_gets_a_token(cloud):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    pfx = pkcs12.serialize_key_and_certificates(
        b"mssp-app", serialization.load_pem_private_key(key_pem.encode(), None),
        x509.load_pem_x509_certificate(cert_pem.encode()), None, serialization.NoEncryption())
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="certificate",
                              MSSP_APP_CERTIFICATE=base64.b64encode(pfx).decode())
    assert TenantTokens.from_settings(settings).claims(tenant_id, AlertSource.DEFENDER)["tid"] == tenant_id


class StandInManagedIdentity:
    """Stands in for the function app's managed identity, an Azure boundary that cannot run here.

    The local cloud accepts only secrets and certificate assertions, so the "managed identity token" it
    hands out is an assertion signed with the app's certificate for the tenant's token endpoint: if the
    token request succeeds, our credential sent exactly this string as the client assertion.
    """

    def __init__(self, cloud: LocalCloud, tenant_id: str, client_id: str, cert_pem: str, key_pem: str) -> None:
        self.requested_scopes: list[tuple[str, ...]] = []
        self.assertions: list[str] = []
        self._audience = f"{cloud.url}/{tenant_id}/oauth2/v2.0/token"
        self._client_id = client_id
        self._key = serialization.load_pem_private_key(key_pem.encode(), None)
        der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
        self._thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.requested_scopes.append(scopes)
        now = int(time.time())
        assertion = jwt.encode(
            {"aud": self._audience, "iss": self._client_id, "sub": self._client_id, "jti": str(uuid.uuid4()),
             "nbf": now, "iat": now, "exp": now + 600},
            self._key, algorithm="PS256", headers={"x5t#S256": self._thumbprint})
        self.assertions.append(assertion)
        return AccessToken(assertion, now + 3600)


def test_the_federated_form_presents_the_managed_identity_token_for_the_token_exchange_audience(cloud):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    identity = StandInManagedIdentity(cloud, tenant_id, app["clientId"], cert_pem, key_pem)
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="federated", MSSP_APP_CLIENT_SECRET="")
    tokens = TenantTokens.from_settings(settings, managed_identity=identity)

    claims = tokens.claims(tenant_id, AlertSource.DEFENDER)

    assert identity.requested_scopes == [("api://AzureADTokenExchange/.default",)]
    assert claims["tid"] == tenant_id and claims["appidacr"] == "2"
    assert token_requests(cloud, tenant_id) == 1


def test_the_federated_audience_is_a_setting_for_sovereign_clouds(cloud):
    app, cert_pem, key_pem = certificate_app(cloud)
    tenant_id = consented_tenant(cloud, app["clientId"])
    identity = StandInManagedIdentity(cloud, tenant_id, app["clientId"], cert_pem, key_pem)
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="federated",
                              MSSP_APP_FEDERATION_AUDIENCE="api://AzureADTokenExchangeUSGov")
    TenantTokens.from_settings(settings, managed_identity=identity).token(tenant_id, AlertSource.GRAPH)
    assert identity.requested_scopes == [("api://AzureADTokenExchangeUSGov/.default",)]


class FailingManagedIdentity:
    """A managed identity endpoint that refuses (no identity assigned to the app)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        raise ClientAuthenticationError(message="ManagedIdentityCredential authentication unavailable")


def test_a_managed_identity_that_cannot_get_a_token_is_an_mssp_credential_error(cloud, app, tenant):
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="federated")
    tokens = TenantTokens.from_settings(settings, managed_identity=FailingManagedIdentity())
    with pytest.raises(MsspCredentialError) as error:
        tokens.token(tenant, AlertSource.GRAPH)
    assert error.value.tenant_id == tenant
    assert token_requests(cloud, tenant) == 0


# --- one token per tenant, reused ------------------------------------------------------------------

def test_the_process_wide_tokens_object_is_built_once():
    assert get_tenant_tokens() is get_tenant_tokens()


def test_a_token_is_requested_once_and_reused_across_many_calls(cloud, app, tenant):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    issued = {tokens.token(tenant, AlertSource.GRAPH) for _ in range(25)}
    assert len(issued) == 1
    assert token_requests(cloud, tenant) == 1


def test_the_least_recently_used_tenants_credential_is_dropped_past_the_cap_and_asked_for_again(cloud, app):
    tenants = [consented_tenant(cloud, app["clientId"]) for _ in range(4)]
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]), max_tenants=3)
    for tenant_id in tenants[:3]:
        tokens.token(tenant_id, AlertSource.GRAPH)
    tokens.token(tenants[0], AlertSource.GRAPH)  # the first is used again: the second is now least recent
    tokens.token(tenants[3], AlertSource.GRAPH)  # a fourth tenant: the second's credential is dropped
    assert tokens.cached_tenants() == 3
    tokens.token(tenants[0], AlertSource.GRAPH)  # still cached: no new token request
    tokens.token(tenants[2], AlertSource.GRAPH)
    tokens.token(tenants[1], AlertSource.GRAPH)  # dropped: Entra is asked again
    assert [token_requests(cloud, t) for t in tenants] == [1, 2, 1, 1]
    assert tokens.cached_tenants() == 3


def test_twenty_concurrent_callers_share_one_token_request(cloud, app, tenant):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    add_fault(cloud, tenant, "latency", api="token", latencyMs=300, count=1)  # keep them all waiting at once
    barrier = threading.Barrier(20)
    issued: list[str] = []

    def caller() -> None:
        barrier.wait()
        issued.append(tokens.token(tenant, AlertSource.DEFENDER))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(issued) == 20 and len(set(issued)) == 1
    assert token_requests(cloud, tenant) == 1


def test_each_tenant_gets_its_own_token_once_when_called_concurrently(cloud, app):
    tenants = [consented_tenant(cloud, app["clientId"]) for _ in range(4)]
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    claims: list[dict] = []
    threads = [threading.Thread(target=lambda t=t: claims.append(tokens.claims(t, AlertSource.GRAPH)))
               for t in tenants for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted({c["tid"] for c in claims}) == sorted(tenants)
    assert [token_requests(cloud, t) for t in tenants] == [1, 1, 1, 1]


def test_graph_and_defender_tokens_are_separate_and_each_reused(cloud, app, tenant):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    for _ in range(5):
        graph = tokens.claims(tenant, AlertSource.GRAPH)
        defender = tokens.claims(tenant, AlertSource.DEFENDER)
    assert graph["aud"] == "https://graph.microsoft.com"
    assert defender["aud"] == "https://api.securitycenter.microsoft.com"
    assert token_requests(cloud, tenant) == 2


def test_an_expired_token_is_replaced_by_a_new_one(cloud, app, tenant):
    cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 2})
    try:
        tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
        first = tokens.token(tenant, AlertSource.GRAPH)
        time.sleep(2.5)
        second = tokens.token(tenant, AlertSource.GRAPH)
    finally:
        cloud.control("PATCH", "settings", json={"tokenLifetimeSeconds": 3599})
    assert first != second
    assert token_claims(second)["exp"] > time.time()


# --- failures are typed ------------------------------------------------------------------------------

def test_a_tenant_id_that_is_not_a_guid_is_refused_before_any_request(cloud, app):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    with pytest.raises(ValueError, match="GUID"):
        tokens.token("contoso.example/../x", AlertSource.GRAPH)


def test_an_unknown_tenant_is_tenant_not_found(cloud, app):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    unknown = str(uuid.uuid4())
    with pytest.raises(TenantNotFound) as error:
        tokens.token(unknown, AlertSource.GRAPH)
    assert error.value.tenant_id == unknown and error.value.code == "AADSTS90002"


def test_a_deleted_enterprise_app_is_consent_revoked(cloud, app, tenant):
    cloud.control("DELETE", f"tenants/{tenant}/consents/{app['clientId']}")
    with pytest.raises(ConsentRevoked) as error:
        TenantTokens.from_settings(cloud_settings(cloud, app["clientId"])).token(tenant, AlertSource.DEFENDER)
    assert error.value.code == "AADSTS700016"


def test_a_wrong_secret_is_an_mssp_credential_error(cloud, app, tenant):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"], MSSP_APP_CLIENT_SECRET="not-the-secret"))
    with pytest.raises(MsspCredentialError) as error:
        tokens.token(tenant, AlertSource.GRAPH)
    assert error.value.code == "AADSTS7000215"


def test_an_expired_secret_is_an_mssp_credential_error(cloud):
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    app = new_app(cloud, secrets=[{"value": SECRET, "expires": yesterday}])
    tenant_id = consented_tenant(cloud, app["clientId"])
    with pytest.raises(MsspCredentialError) as error:
        TenantTokens.from_settings(cloud_settings(cloud, app["clientId"])).token(tenant_id, AlertSource.GRAPH)
    assert error.value.code == "AADSTS7000222"


def test_a_certificate_the_app_does_not_know_is_an_mssp_credential_error(cloud, app, tenant):
    cert_pem, key_pem = self_signed_certificate()
    settings = cloud_settings(cloud, app["clientId"], MSSP_APP_CREDENTIAL="certificate",
                              MSSP_APP_CERTIFICATE=key_pem + cert_pem)
    with pytest.raises(MsspCredentialError) as error:
        TenantTokens.from_settings(settings).token(tenant, AlertSource.GRAPH)
    assert error.value.code == "AADSTS700027"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"MSSP_APP_CLIENT_SECRET": ""}, "MSSP_APP_CLIENT_SECRET is not set"),
        ({"MSSP_APP_CREDENTIAL": "certificate", "MSSP_APP_CERTIFICATE": ""}, "MSSP_APP_CERTIFICATE is not set"),
        ({"MSSP_APP_CREDENTIAL": "certificate", "MSSP_APP_CERTIFICATE": "%%%not a certificate"},
         "MSSP_APP_CERTIFICATE: neither PEM"),
        ({"MSSP_APP_CREDENTIAL": "certificate", "MSSP_APP_CERTIFICATE": base64.b64encode(b"junk").decode()},
         "MSSP_APP_CERTIFICATE: the certificate could not be loaded"),
        ({"MSSP_APP_CLIENT_ID": ""}, "MSSP_APP_CLIENT_ID is not set"),
    ],
)
def test_unusable_credential_settings_are_an_mssp_credential_error_naming_the_setting(cloud, app, tenant, values,
                                                                                       fragment):
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"], **values))
    with pytest.raises(MsspCredentialError, match=fragment):
        tokens.token(tenant, AlertSource.GRAPH)
    assert token_requests(cloud, tenant) == 0


@pytest.mark.parametrize(("name", "raw"), [("MSSP_APP_CLIENT_ID", "not-a-guid"), ("MSSP_APP_CREDENTIAL", "password")])
def test_malformed_credential_settings_are_rejected_naming_the_setting(cloud, app, tenant, name, raw):
    with pytest.raises(MsspCredentialError, match=name):
        tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"], **{name: raw}))
        tokens.token(tenant, AlertSource.GRAPH)


def test_no_token_or_secret_reaches_the_logs_when_the_token_response_is_malformed(cloud, app, tenant, caplog):
    caplog.set_level(logging.INFO)
    tokens = TenantTokens.from_settings(cloud_settings(cloud, app["clientId"]))
    add_fault(cloud, tenant, "malformed_json", api="token", count=1)
    with pytest.raises(BadResponse) as error:
        tokens.token(tenant, AlertSource.GRAPH)
    good = tokens.token(tenant, AlertSource.GRAPH)
    assert error.value.__suppress_context__  # the chained library error quoting the body is not shown
    assert "eyJ" not in caplog.text and "eyJ" not in str(error.value)
    assert SECRET not in caplog.text and good not in caplog.text
    assert tenant in caplog.text
