"""Prove that the MSSP's app can read a tenant's alerts: the check behind a tenant becoming `active`.

Serves the consent callback and the verification timer of grant_access. The check gets an app-only
token for the tenant, confirms Entra issued it for that tenant (`tid`) with the source's alert role in
`roles`, and lists one alert. Its outcome says what the caller should do with the tenant. Entra takes
minutes to propagate a new consent, so right after consent (`consent_fresh`) a missing role means "try
again later", not "revoked". AADSTS700016 (app not found) is its own outcome, `app_not_found`, whatever the
freshness: verification and ingestion both make it `consent_revoked` only once it has persisted through
the propagation window (`app_not_found_streak`). `mssp_credential` is the MSSP's failure, never the tenant's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter

from shared.alert_sources import (
    AlertSource,
    ApiHosts,
    alert_request_headers,
    alerts_url,
    has_alert_role,
    required_role,
)
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
    from_api_response,
    from_transport,
    json_object,
)
from shared.identity import TenantTokens, get_tenant_tokens, token_claims
from shared.settings import Settings, get_settings, load_config, setting
from shared.tenants import TenantRegistry, TenantStatus

logger = logging.getLogger(__name__)

Outcome = Literal["active", "retry", "app_not_found", "not_licensed", "consent_revoked", "permission_missing",
                  "tenant_not_found", "mssp_credential", "error"]

# How long AADSTS700016 must persist before it means the consent is gone. Entra answers it while a new
# consent (the customer's service principal of our app) has not reached every replica, and Microsoft
# documents no bound for that (https://learn.microsoft.com/entra/identity-platform/reference-error-codes,
# UnauthorizedClient_DoesNotMatchRequest: "the application has not been installed by the administrator of
# the tenant"). 15 minutes is three ingestion ticks at the default schedule and about seven verification
# checks; a real revocation costs nothing meanwhile (no alerts can be read either way).
APP_NOT_FOUND_WINDOW = timedelta(minutes=15)
APP_NOT_FOUND_SINCE = "appNotFoundSince"  # tenant row column: start of the current AADSTS700016 streak

_FINAL_OUTCOMES: dict[type[MicrosoftError], Outcome] = {
    AppNotFound: "app_not_found",
    ConsentRevoked: "consent_revoked",
    PermissionMissing: "permission_missing",
    NotLicensed: "not_licensed",
    TenantNotFound: "tenant_not_found",
    MsspCredentialError: "mssp_credential",
    Throttled: "retry",
    ServiceError: "retry",
}


@dataclass(frozen=True)
class AccessCheck:
    """What verification found; `message` is plain text, safe to show the MSSP and store."""

    outcome: Outcome
    message: str
    code: str = ""  # the AADSTS or API code behind a failure, "" for success


def app_not_found_is_the_mssps(registry: TenantRegistry, tenant_id: str) -> bool:
    """Whether an AADSTS700016 that outlasted the propagation window is the MSSP's fault, not this tenant's.

    Entra answers 700016 both for a tenant that removed our app and for an application id no tenant knows
    (a wrong MSSP_APP_CLIENT_ID, a deleted app registration). One customer removing the app is one tenant;
    the MSSP's mistake is every tenant. So when at least two other tenants meet it too and they are at least
    half of the active and verifying ones, no tenant is revoked: it is raised as the MSSP's incident."""
    others = [r for status in (TenantStatus.ACTIVE, TenantStatus.VERIFYING) for r in registry.with_status(status)
              if str(r.get("RowKey")) != tenant_id]
    meeting = sum(1 for r in others if r.get("lastErrorClass") == "app_not_found"
                  or isinstance(r.get(APP_NOT_FOUND_SINCE), datetime))
    return meeting >= 2 and 2 * meeting >= len(others)


def app_not_found_streak(previous: Any, consented_at: Any, now: datetime) -> tuple[datetime, bool]:
    """(start of the tenant's unbroken AADSTS700016 streak, whether it has now lasted APP_NOT_FOUND_WINDOW).

    `previous` is the stored start when the last attempt met the same code (else None): the streak starts
    now. A streak never starts before the latest consent, whose own propagation restarts the window."""
    start = previous if isinstance(previous, datetime) else now
    if isinstance(consented_at, datetime) and consented_at > start:
        start = consented_at
    return start, now - start >= APP_NOT_FOUND_WINDOW


@dataclass(frozen=True)
class HttpTimeout:
    """The timeout of one outbound HTTP request (the verification's alert call)."""

    seconds: int = setting("HTTP_TIMEOUT_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> HttpTimeout:
        return load_config(cls, settings)


def check_access(
    tenant_id: str,
    source: AlertSource,
    *,
    consent_fresh: bool,
    tokens: TenantTokens | None = None,
    session: requests.Session | None = None,
    settings: Settings | None = None,
) -> AccessCheck:
    """Verify read access to the tenant's alerts from `source`; never raises for a Microsoft failure."""
    current = settings or get_settings()
    hosts, timeout = ApiHosts.from_settings(current), HttpTimeout.from_settings(current).seconds
    tokens = tokens or get_tenant_tokens()
    session = session or _default_session()
    try:
        _read_one_alert(tenant_id, AlertSource(source), tokens, session, hosts, timeout)
    except MicrosoftError as error:
        result = _outcome_of(error, consent_fresh)
    else:
        result = AccessCheck("active", f"{source} alerts are readable")
    logger.info("Access check for tenant %s (%s, consent fresh: %s): %s - %s",
                tenant_id, source, consent_fresh, result.outcome, result.message)
    return result


def _read_one_alert(tenant_id: str, source: AlertSource, tokens: TenantTokens, session: requests.Session,
                    hosts: ApiHosts, timeout: int) -> None:
    token = tokens.token(tenant_id, source)
    try:
        claims = token_claims(token)
    except ValueError:
        raise BadResponse(tenant_id, "Entra returned an access token that is not a readable JWT",
                          code="InvalidToken") from None
    if str(claims.get("tid", "")).lower() != tenant_id.strip().lower():
        raise MicrosoftError(tenant_id, "Entra issued the token for another tenant", code="TenantMismatch")
    if not has_alert_role(source, claims.get("roles")):
        # Entra issues app-only tokens without `roles` when the app holds no role on the resource.
        raise PermissionMissing(tenant_id, f"the token carries no {required_role(source)} role",
                                code="RoleMissing")
    headers = {**alert_request_headers(source), "Authorization": f"Bearer {token}"}
    try:
        response = session.get(alerts_url(source, hosts), params={"$top": "1"}, headers=headers,
                               timeout=timeout)
    except requests.RequestException as exc:
        raise from_transport(tenant_id, str(source), exc) from None
    if response.status_code != 200:
        raise from_api_response(tenant_id, str(source), response)
    if not isinstance(json_object(tenant_id, str(source), response).get("value"), list):
        raise BadResponse(tenant_id, f"{source} answered without a `value` list of alerts", code="InvalidShape")


def _outcome_of(error: MicrosoftError, consent_fresh: bool) -> AccessCheck:
    code = error.code or ""
    if isinstance(error, AppNotFound):
        return AccessCheck("app_not_found", f"{error.message} (a new consent can take minutes to reach every "
                                            "Microsoft service; checking again later)", code)
    if consent_fresh and isinstance(error, (ConsentRevoked, PermissionMissing)):
        return AccessCheck("retry", f"{error.message} (a new consent can take minutes to reach every "
                                    "Microsoft service; checking again later)", code)
    outcome: Outcome = next((o for kind, o in _FINAL_OUTCOMES.items() if isinstance(error, kind)), "error")
    return AccessCheck(outcome, error.message, code)


_session: requests.Session | None = None
_session_lock = threading.Lock()


def _default_session() -> requests.Session:
    """One process-wide session for the alert APIs, built at first use."""
    global _session
    with _session_lock:
        if _session is None:
            _session = requests.Session()
            _session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0))
        return _session
