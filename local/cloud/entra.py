"""Entra ID of the local cloud: the client-credentials token flow, its errors, and token signing.

Serves the OpenID metadata, the JWKS and the v2.0 token endpoint (client secret or certificate
assertion), with the real error bodies and AADSTS codes (docs/MICROSOFT.md, "API tokens, limits and errors").
Access tokens are
RS256 JWTs signed by a key generated at start; the Graph and Defender APIs of this server verify them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from local.cloud.directory import DEFENDER, App, Directory, Tenant, canonical_resource, thumbprint_bytes

logger = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LEEWAY_SECONDS = 300


def _utc_stamp(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M:%SZ")


class EntraError(Exception):
    """An Entra failure, rendered with the token endpoint's JSON error shape or an HTML error page."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = _utc_stamp(now)
        return {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.code}: {self.message}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


def tenant_not_found(ref: str) -> EntraError:
    return EntraError(
        400, "invalid_tenant", 90002,
        f"Tenant '{ref}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud. Check with your subscription administrator, this may happen if there "
        "are no active subscriptions for the tenant.",
    )


def app_not_found(client_id: str, directory_name: str) -> EntraError:
    return EntraError(
        400, "unauthorized_client", 700016,
        f"Application with identifier '{client_id}' was not found in the directory '{directory_name}'. "
        "This can happen if the application has not been installed by the administrator of the tenant "
        "or consented to by any user in the tenant. You may have sent your authentication request to "
        "the wrong tenant.",
    )


# --- signing ---------------------------------------------------------------------------------------

class TokenSigner:
    """The RS256 key that signs access tokens, published through the JWKS endpoint."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_urlsafe(16)

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a token this cloud signed; raises jwt.InvalidTokenError (expiry checked on real time)."""
        return jwt.decode(token, self._key.public_key(), algorithms=["RS256"],
                          options={"verify_aud": False, "require": ["exp", "tid", "aud"]})

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        def b64int(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "alg": "RS256",
                          "n": b64int(numbers.n), "e": b64int(numbers.e)}]}


# --- token endpoint --------------------------------------------------------------------------------

@dataclass
class TokenRequest:
    """A parsed token request; `tenant` is resolved before the request reaches the token flow."""

    tenant: Tenant
    form: Mapping[str, str]
    authorization: str | None
    # Every URL this request may legitimately name as the assertion audience.
    endpoint_urls: frozenset[str]


@dataclass
class IssuedToken:
    client_id: str
    resource: str
    roles: list[str]
    body: dict[str, Any]


def openid_configuration(base_url: str, tenant_id: str) -> dict[str, Any]:
    root = f"{base_url}/{tenant_id}"
    return {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base_url}/{tenant_id}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{root}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base_url}/oidc/userinfo",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "roles", "appid", "azp", "oid",
                             "nonce", "preferred_username", "name", "ver"],
        "kerberos_endpoint": f"{root}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def _client_credentials(request: TokenRequest) -> tuple[str, str | None]:
    """client_id and client_secret from the form or from HTTP Basic (RFC 6749 §2.3.1)."""
    client_id = request.form.get("client_id", "")
    secret = request.form.get("client_secret")
    header = request.authorization or ""
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise EntraError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.") from exc
        basic_id, _, basic_secret = decoded.partition(":")
        client_id = client_id or unquote(basic_id)
        secret = secret if secret is not None else unquote(basic_secret)
    return client_id.lower(), secret


def _check_secret(app: App, secret: str, now: dt.datetime) -> None:
    matching = [s for s in app.secrets if secrets.compare_digest(s.value.encode(), secret.encode())]
    if not matching:
        raise EntraError(
            401, "invalid_client", 7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client "
            f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'.")
    if all(s.expires is not None and s.expires <= now for s in matching):
        raise EntraError(
            401, "invalid_client", 7000222,
            f"The provided client secret keys for app '{app.client_id}' are expired. Visit the Azure "
            "portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
            "certificate credentials for added security: https://aka.ms/certCreds.")


def _bad_assertion(reason: str) -> EntraError:
    return EntraError(401, "invalid_client", 700027,
                      f"Client assertion failed signature validation. [Reason - {reason}]")


def _check_assertion(app: App, request: TokenRequest) -> None:
    assertion = request.form.get("client_assertion", "")
    if request.form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise EntraError(400, "invalid_request", 50027,
                         "Invalid JWT token. Token format not valid. "
                         f"client_assertion_type must be '{CLIENT_ASSERTION_TYPE}'.")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as exc:
        raise EntraError(400, "invalid_request", 50027, "Invalid JWT token. Token format not valid.") from exc
    sha1, sha256 = thumbprint_bytes(header.get("x5t")), thumbprint_bytes(header.get("x5t#S256"))
    candidates = [c for c in app.certificates
                  if (sha1 and c.sha1_thumbprint == sha1) or (sha256 and c.sha256_thumbprint == sha256)]
    if not candidates:
        raise _bad_assertion("The key was not found., Thumbprint of key used by client: "
                             f"'{header.get('x5t#S256') or header.get('x5t') or ''}'")
    for cert in candidates:
        try:
            claims = jwt.decode(
                assertion, cert.public_key, algorithms=["RS256", "PS256"],
                audience=list(request.endpoint_urls), leeway=_ASSERTION_LEEWAY_SECONDS,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.InvalidSignatureError:
            continue
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            raise EntraError(401, "invalid_client", 700024,
                             "Client assertion is not within its valid time range.") from exc
        except jwt.InvalidAudienceError as exc:
            raise _bad_assertion("The audience of the assertion is not this token endpoint.") from exc
        except jwt.InvalidTokenError as exc:
            raise _bad_assertion(f"The assertion is invalid: {exc}.") from exc
        if claims.get("iss", "").lower() != app.client_id or claims.get("sub", "").lower() != app.client_id:
            raise EntraError(401, "invalid_client", 700021,
                             "Client assertion application identifier doesn't match 'client_id' parameter.")
        return
    raise _bad_assertion("The signature does not verify with the registered certificate.")


def _resource_of_scope(tenant: Tenant, scope: str) -> str:
    parts = scope.split()
    if not parts:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
    resources = set()
    for part in parts:
        if not part.endswith("/.default"):
            raise EntraError(
                400, "invalid_scope", 70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is "
                "not valid. Client credential flows must have a scope value with /.default suffixed to "
                "the resource identifier (application ID URI).")
        resources.add(part[: -len("/.default")].rstrip("/").lower())
    if len(resources) > 1:
        raise EntraError(
            400, "invalid_scope", 700022,
            "The provided value for the input parameter scope is not valid because it contains more than "
            f"one resource. Scope {scope} is not valid.")
    name = resources.pop()
    resource = canonical_resource(name)
    if resource is None or (resource == DEFENDER and not tenant.defender_licensed):
        raise EntraError(
            400, "invalid_resource", 500011,
            f"The resource principal named {name} was not found in the tenant named {tenant.display_name}. "
            "This can happen if the application has not been installed by the administrator of the tenant "
            "or consented to by any user in the tenant. You might have sent your authentication request "
            "to the wrong tenant.")
    return resource


def issue_token(
    directory: Directory,
    signer: TokenSigner,
    request: TokenRequest,
    *,
    now: dt.datetime,
    lifetime_seconds: int,
    consent_revoked: bool = False,
    roles_removed: bool = False,
) -> IssuedToken:
    """Run the client-credentials grant; raises EntraError with the real code on every failure.

    `now` is cloud time (secret expiry, consent propagation); token timestamps use real time.
    """
    tenant = request.tenant
    grant_type = request.form.get("grant_type")
    if not grant_type:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'grant_type'.")
    if grant_type != "client_credentials":
        raise EntraError(400, "unsupported_grant_type", 70003,
                         "The app requested an unsupported grant type.")
    client_id, secret = _client_credentials(request)
    if not client_id:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    app = directory.apps.get(client_id)
    consent = tenant.consents.get(client_id)
    propagating = consent is not None and (
        now - consent.granted_at).total_seconds() < tenant.consent_propagation_seconds
    if app is None or consent is None or propagating or consent_revoked:
        raise app_not_found(client_id, tenant.display_name)
    if request.form.get("client_assertion") is not None:
        _check_assertion(app, request)
    elif secret is not None:
        _check_secret(app, secret, now)
    else:
        raise EntraError(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.")
    resource = _resource_of_scope(tenant, request.form.get("scope", ""))
    roles = [] if roles_removed else sorted(consent.roles.get(resource, set()))
    issued_at = int(time.time())
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant.id}/",
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + lifetime_seconds,
        "app_displayname": app.display_name,
        "appid": app.client_id,
        "appidacr": "2" if request.form.get("client_assertion") is not None else "1",
        "azp": app.client_id,
        "idp": f"https://sts.windows.net/{tenant.id}/",
        "idtyp": "app",
        "oid": consent.object_id,
        "sub": consent.object_id,
        "tid": tenant.id,
        "uti": secrets.token_urlsafe(16),
        "ver": "1.0",
    }
    if roles:  # Entra omits the claim when the app holds no role on the resource.
        claims["roles"] = roles
    body = {
        "token_type": "Bearer",
        "expires_in": lifetime_seconds,
        "ext_expires_in": lifetime_seconds,
        "access_token": signer.sign(claims),
    }
    logger.info("Token issued for app %s in tenant %s (resource %s, roles %s)",
                app.client_id, tenant.id, resource, ",".join(roles) or "none")
    return IssuedToken(client_id=app.client_id, resource=resource, roles=roles, body=body)


def v1_token_body(issued: IssuedToken) -> dict[str, Any]:
    """The v1 endpoint's success body: numbers as strings, plus expires_on, not_before and resource."""
    claims = jwt.decode(issued.body["access_token"], options={"verify_signature": False})
    lifetime = str(issued.body["expires_in"])
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "expires_on": str(claims["exp"]), "not_before": str(claims["nbf"]), "resource": issued.resource,
            "access_token": issued.body["access_token"]}


def assertion_audiences(base_url: str, tenant: Tenant, path_ref: str) -> frozenset[str]:
    """Token endpoint URLs an assertion may name: by the path's tenant reference, GUID or any domain."""
    refs = {path_ref, tenant.id, *tenant.domains}
    urls = set()
    for ref in refs:
        urls.add(f"{base_url}/{ref}/oauth2/v2.0/token")
        urls.add(f"{base_url}/{ref}/oauth2/token")
    return frozenset(urls)

