"""Helpers shared by the local cloud's tests: uniquely named tenants and apps, tokens, certificates."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from local.run.services import LocalCloud

GRAPH = "https://graph.microsoft.com"
DEFENDER = "https://api.securitycenter.microsoft.com"
GRAPH_SCOPE = f"{GRAPH}/.default"
DEFENDER_SCOPE = f"{DEFENDER}/.default"
SECRET = "local-test-secret"
REDIRECT_URI = "https://mssp.example/api/consent"


def new_tenant(cloud: LocalCloud, **fields: Any) -> dict[str, Any]:
    """A new tenant with one unique verified domain."""
    body = {"domains": [f"t{uuid.uuid4().hex[:12]}.example"], **fields}
    response = cloud.control("POST", "tenants", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def new_app(cloud: LocalCloud, **fields: Any) -> dict[str, Any]:
    """A multi-tenant app with a secret, a redirect URI and the product's application permissions."""
    body = {
        "displayName": "MSSP alerts",
        "secrets": [{"value": SECRET}],
        "redirectUris": [REDIRECT_URI],
        "requiredResourceAccess": {GRAPH: ["SecurityAlert.Read.All", "Mail.Send"], DEFENDER: ["Alert.Read.All"]},
        **fields,
    }
    response = cloud.control("POST", "apps", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def consent(cloud: LocalCloud, tenant_id: str, client_id: str, **fields: Any) -> None:
    response = cloud.control("POST", f"tenants/{tenant_id}/consents", json={"clientId": client_id, **fields})
    assert response.status_code == 201, response.text


def consented_pair(cloud: LocalCloud, **tenant_fields: Any) -> tuple[str, str]:
    """(tenant id, client id) of a new app consented in a new tenant."""
    tenant = new_tenant(cloud, **tenant_fields)
    app = new_app(cloud)
    consent(cloud, tenant["id"], app["clientId"])
    return tenant["id"], app["clientId"]


def request_token(cloud: LocalCloud, tenant: str, client_id: str, scope: str = DEFENDER_SCOPE,
                  secret: str | None = SECRET, **form: str) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope, **form}
    if secret is not None:
        data["client_secret"] = secret
    return requests.post(f"{cloud.url}/{tenant}/oauth2/v2.0/token", data=data, verify=str(cloud.ca_path),
                         timeout=30)


def access_token(cloud: LocalCloud, tenant: str, client_id: str, scope: str = DEFENDER_SCOPE) -> str:
    response = request_token(cloud, tenant, client_id, scope)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def call(cloud: LocalCloud, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{cloud.url}{path}", headers=headers, verify=str(cloud.ca_path),
                            timeout=30, **kwargs)


def self_signed_certificate() -> tuple[str, str]:
    """(certificate PEM, private key PEM) for an app's certificate credential."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mssp-app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem
