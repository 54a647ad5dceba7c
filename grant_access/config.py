"""Typed settings of the onboarding flow: frozen config objects built in grant_access.wiring from the settings
registry (shared.settings.SETTINGS holds every name, default and parser)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings, load_config, setting


@dataclass(frozen=True)
class OnboardingConfig:
    """What the onboarding triggers need: the webhook's secret and limits, time-outs, the portal host."""

    authority_host: str = setting("ENTRA_AUTHORITY_HOST")
    http_timeout_seconds: int = setting("HTTP_TIMEOUT_SECONDS")
    webhook_secret: str = setting("ONBOARDING_WEBHOOK_SECRET")
    allow_loopback: bool = setting("OUTBOUND_ALLOW_LOOPBACK")
    invitation_ttl_seconds: int = setting("INVITATION_TTL")
    verification_timeout_seconds: int = setting("VERIFICATION_TIMEOUT")
    portal_host: str = setting("PORTAL_HOST")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> OnboardingConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class ConsentAppConfig:
    """The multi-tenant app customers consent to, and where Entra sends them back (the consent link)."""

    client_id: str = setting("MSSP_APP_CLIENT_ID", required=True)
    public_base_url: str = setting("PUBLIC_BASE_URL")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ConsentAppConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class PublicUrlConfig:
    """The app's public base URL as configured (empty: https://<WEBSITE_HOSTNAME>), for links in answers."""

    public_base_url: str = setting("PUBLIC_BASE_URL")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PublicUrlConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class PortalAccessConfig:
    """What the portal-access page names: the MSSP's public identifiers and the names it chose for the groups,
    roles, access packages and catalog customers create (grant_access/portal_access.py)."""

    mssp_tenant_id: str = setting("MSSP_TENANT_ID")
    mssp_tenant_domain: str = setting("MSSP_TENANT_DOMAIN")
    tier1_group: str = setting("MSSP_TIER1_GROUP")
    tier2_group: str = setting("MSSP_TIER2_GROUP")
    approvers_group: str = setting("MSSP_APPROVERS_GROUP")
    catalog: str = setting("MSSP_ACCESS_CATALOG")
    portal_host: str = setting("PORTAL_HOST")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PortalAccessConfig:
        return load_config(cls, settings)
