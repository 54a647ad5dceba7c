"""Builds what the onboarding triggers pass to the plain functions: stores over the app's tables, the
access checker, the consent-link settings, the typed config (grant_access.config). Everything is built at
first use, never at import time (docs/ARCHITECTURE.md, invariant 6), so a missing setting fails one
invocation with a clear message."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from azure.data.tables import TableClient

from grant_access.callback import CallbackDeps, SignIn
from grant_access.config import ConsentAppConfig, OnboardingConfig, PortalAccessConfig, PublicUrlConfig
from grant_access.invitations import InvitationStore
from grant_access.verification import AccessChecker, CheckResult
from grant_access.webhook import ALERT_SOURCES, ConsentLinkSettings
from shared.alert_sources import ApiHosts
from shared.id_token import signing_keys
from shared.rules import RuleStore
from shared.settings import Settings, SettingsError, get_settings
from shared.tables import Table, get_table_store
from shared.tenants import TenantRegistry

CALLBACK_ROUTE = "consent/callback"


def utcnow() -> datetime:
    return datetime.now(UTC)


def settings() -> Settings:
    return get_settings()


def config() -> OnboardingConfig:
    return OnboardingConfig.from_settings(settings())


def tenants_table() -> TableClient:
    return get_table_store().table(Table.TENANTS)


def invitations_table() -> TableClient:
    return get_table_store().table(Table.INVITATIONS)


def alerts_table() -> TableClient:
    return get_table_store().table(Table.ALERTS)


def tenants() -> TenantRegistry:
    return TenantRegistry(tenants_table())


def invitations() -> InvitationStore:
    return InvitationStore(invitations_table())


def rules() -> RuleStore:
    return RuleStore(get_table_store().table(Table.NOTIFICATION_RULES))


def public_base_url(configured: str) -> str:
    if configured:
        return configured
    # App Service sets WEBSITE_HOSTNAME to the app's default host name.
    hostname = os.environ.get("WEBSITE_HOSTNAME", "")
    if not hostname:
        raise SettingsError("PUBLIC_BASE_URL is not set and WEBSITE_HOSTNAME is unknown: the consent "
                            "redirect URI cannot be built")
    return f"https://{hostname}"


def known_base_url() -> str:
    """The app's public base URL, or empty when it cannot be built (links that need it are then null)."""
    try:
        return public_base_url(PublicUrlConfig.from_settings(settings()).public_base_url)
    except SettingsError:
        return ""


def portal_access_config() -> PortalAccessConfig:
    return PortalAccessConfig.from_settings(settings())


def api_hosts() -> ApiHosts:
    return ApiHosts.from_settings(settings())


def consent_link() -> ConsentLinkSettings:
    from shared.alert_sources import AlertSource, token_scope

    current = settings()
    app = ConsentAppConfig.from_settings(current)
    return ConsentLinkSettings(
        authority_host=config().authority_host,
        client_id=app.client_id,
        redirect_uri=f"{public_base_url(app.public_base_url)}/api/{CALLBACK_ROUTE}",
        scopes={source: token_scope(AlertSource(source), api_hosts()) for source in ALERT_SOURCES},
    )


def access_checker() -> AccessChecker:
    """The check right after consent: a missing app or role means "not propagated yet"."""
    from shared.access_check import check_access
    from shared.alert_sources import AlertSource

    def check(tenant_id: str, alert_source: str) -> CheckResult:
        return check_access(tenant_id, AlertSource(alert_source), consent_fresh=True)

    return check


def sign_in() -> SignIn:
    link = consent_link()
    timeout = config().http_timeout_seconds
    return SignIn(authority_host=link.authority_host, client_id=link.client_id, redirect_uri=link.redirect_uri,
                  keys=signing_keys(link.authority_host, timeout=timeout))


def callback_deps() -> CallbackDeps:
    return CallbackDeps(invitations=invitations(), tenants=tenants(), rules=rules(), checker=access_checker(),
                        now=utcnow, verification_timeout_seconds=config().verification_timeout_seconds,
                        sign_in=sign_in())
