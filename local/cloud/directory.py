"""Directory of the local cloud: tenants, app registrations and consents (service principals with app roles).

Tenants are found by GUID or verified domain, as Entra resolves the tenant segment of a URL. A consent is
the app's service principal in a tenant with the app roles an admin granted; tokens carry those roles.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

logger = logging.getLogger(__name__)

GRAPH = "https://graph.microsoft.com"
DEFENDER = "https://api.securitycenter.microsoft.com"
# Every App ID URI Entra accepts for a resource, mapped to the one this cloud puts in `aud`.
RESOURCE_ALIASES: dict[str, str] = {
    GRAPH: GRAPH,
    DEFENDER: DEFENDER,
    "https://api.security.microsoft.com": DEFENDER,
    "https://securitycenter.onmicrosoft.com/windowsatpservice": DEFENDER,
}
RESOURCE_NAMES = {GRAPH: "Microsoft Graph", DEFENDER: "WindowsDefenderATP"}
MULTI_TENANT_ALIASES = frozenset({"organizations", "common"})


def canonical_resource(uri: str) -> str | None:
    """The resource an App ID URI names, or None when this cloud does not host it."""
    return RESOURCE_ALIASES.get(uri.rstrip("/").lower())


@dataclass
class ClientSecret:
    value: str
    expires: dt.datetime | None = None


@dataclass
class ClientCertificate:
    public_key: Any
    sha1_thumbprint: bytes  # the digest the `x5t` header carries
    sha256_thumbprint: bytes  # the digest the `x5t#S256` header carries


@dataclass
class App:
    client_id: str
    display_name: str
    home_tenant: str | None
    multi_tenant: bool
    secrets: list[ClientSecret]
    certificates: list[ClientCertificate]
    redirect_uris: list[str]
    # Application permissions (app roles) the registration declares, per canonical resource.
    required_roles: dict[str, list[str]]

    def summary(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id, "displayName": self.display_name, "homeTenant": self.home_tenant,
            "multiTenant": self.multi_tenant, "redirectUris": self.redirect_uris,
            "requiredResourceAccess": self.required_roles,
            "secretCount": len(self.secrets), "certificateCount": len(self.certificates),
        }


@dataclass
class Consent:
    """The app's service principal in a tenant, with the app roles an admin granted it."""

    object_id: str
    roles: dict[str, set[str]]
    granted_at: dt.datetime  # cloud time

    def summary(self, client_id: str) -> dict[str, Any]:
        return {
            "clientId": client_id, "servicePrincipalId": self.object_id,
            "roles": {resource: sorted(names) for resource, names in self.roles.items()},
            "grantedAt": self.granted_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass
class Tenant:
    id: str
    display_name: str
    domains: list[str]
    defender_licensed: bool = True
    consent_propagation_seconds: float = 0.0
    rate_limits: bool = False
    consents: dict[str, Consent] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "displayName": self.display_name, "domains": self.domains,
            "defenderLicensed": self.defender_licensed,
            "consentPropagationSeconds": self.consent_propagation_seconds,
            "rateLimits": self.rate_limits,
            "consents": [c.summary(cid) for cid, c in self.consents.items()],
        }


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def load_certificate(pem: str) -> ClientCertificate:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return ClientCertificate(
        public_key=cert.public_key(),
        sha1_thumbprint=cert.fingerprint(hashes.SHA1()),  # noqa: S303 - x5t is SHA-1 by spec
        sha256_thumbprint=cert.fingerprint(hashes.SHA256()),
    )


def thumbprint_bytes(value: Any) -> bytes | None:
    """Digest of an `x5t` header value: base64url per RFC 7515, though MSAL sends standard base64."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class Directory:
    """Every tenant and app registration of the local cloud, in memory."""

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self._by_domain: dict[str, str] = {}

    def resolve(self, ref: str) -> Tenant | None:
        """A tenant by GUID or verified domain (case-insensitive), as Entra resolves the path segment."""
        ref = ref.lower()
        return self.tenants.get(ref) or self.tenants.get(self._by_domain.get(ref, ""))

    def create_tenant(self, body: Mapping[str, Any]) -> Tenant:
        tenant_id = str(body.get("id") or uuid.uuid4()).lower()
        try:
            uuid.UUID(tenant_id)
        except ValueError as exc:
            raise ValueError(f"tenant id {tenant_id!r} is not a GUID") from exc
        if tenant_id in self.tenants:
            raise ValueError(f"tenant {tenant_id} exists")
        domains = [str(d).lower() for d in body.get("domains") or []]
        for domain in domains:
            if domain in self._by_domain:
                raise ValueError(f"domain {domain} is already verified by tenant {self._by_domain[domain]}")
        tenant = Tenant(
            id=tenant_id,
            display_name=str(body.get("displayName") or (domains[0] if domains else tenant_id)),
            domains=domains,
        )
        self.update_tenant(tenant, body)
        self.tenants[tenant_id] = tenant
        for domain in domains:
            self._by_domain[domain] = tenant_id
        return tenant

    def remove_tenant(self, tenant_id: str) -> None:
        tenant = self.tenants.pop(tenant_id)
        for domain in tenant.domains:
            self._by_domain.pop(domain, None)

    @staticmethod
    def update_tenant(tenant: Tenant, body: Mapping[str, Any]) -> None:
        if "defenderLicensed" in body:
            tenant.defender_licensed = bool(body["defenderLicensed"])
        if "consentPropagationSeconds" in body:
            tenant.consent_propagation_seconds = float(body["consentPropagationSeconds"])
        if "rateLimits" in body:
            tenant.rate_limits = bool(body["rateLimits"])
        if "displayName" in body:
            tenant.display_name = str(body["displayName"])

    def create_app(self, body: Mapping[str, Any], now: dt.datetime) -> App:
        client_id = str(body.get("clientId") or uuid.uuid4()).lower()
        if client_id in self.apps:
            raise ValueError(f"app {client_id} exists")
        required: dict[str, list[str]] = {}
        for resource, roles in (body.get("requiredResourceAccess") or {}).items():
            canonical = canonical_resource(resource)
            if canonical is None:
                raise ValueError(f"unknown resource {resource!r}")
            required.setdefault(canonical, []).extend(str(r) for r in roles)
        app = App(
            client_id=client_id,
            display_name=str(body.get("displayName") or client_id),
            home_tenant=(self.resolve(body["homeTenant"]).id if body.get("homeTenant")
                         and self.resolve(body["homeTenant"]) else None),
            multi_tenant=bool(body.get("multiTenant", True)),
            secrets=[ClientSecret(str(s["value"]), _parse_time(s.get("expires")))
                     for s in body.get("secrets") or []],
            certificates=[load_certificate(pem) for pem in body.get("certificates") or []],
            redirect_uris=[str(u) for u in body.get("redirectUris") or []],
            required_roles=required,
        )
        if body.get("homeTenant") and app.home_tenant is None:
            raise ValueError(f"home tenant {body['homeTenant']!r} does not exist")
        self.apps[client_id] = app
        if app.home_tenant:
            # The owner's admin grants the app's permissions in its own tenant when registering it.
            self.grant(self.tenants[app.home_tenant], app, None, now - dt.timedelta(days=1))
        return app

    def roles_for(self, tenant: Tenant, app: App, resources: Iterable[str] | None) -> dict[str, set[str]]:
        """The app roles a consent grants: those declared for the named resources, or all of them."""
        wanted = set(app.required_roles) if resources is None else set(resources)
        return {r: set(app.required_roles.get(r, [])) for r in wanted
                if r != DEFENDER or tenant.defender_licensed}

    def grant(self, tenant: Tenant, app: App, resources: Iterable[str] | None, now: dt.datetime) -> Consent:
        roles = self.roles_for(tenant, app, resources)
        existing = tenant.consents.get(app.client_id)
        if existing:
            for resource, names in roles.items():
                existing.roles.setdefault(resource, set()).update(names)
            existing.granted_at = now
            return existing
        consent = Consent(object_id=str(uuid.uuid4()), roles=roles, granted_at=now)
        tenant.consents[app.client_id] = consent
        logger.info("Consent recorded for app %s in tenant %s", app.client_id, tenant.id)
        return consent

    def revoke(self, tenant: Tenant, client_id: str) -> bool:
        return tenant.consents.pop(client_id.lower(), None) is not None
