"""The two Microsoft alert APIs a tenant can be read from, and what each needs.

Serves onboarding (the consent scope, the role a token must carry, the verification call) and
ingestion (where alerts are listed). Hosts and token resources come from settings so sovereign clouds
and the local cloud differ only in configuration (docs/ARCHITECTURE.md, invariant 7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from shared.settings import Settings, load_config, setting

logger = logging.getLogger(__name__)


class AlertSource(StrEnum):
    """Where a tenant's alerts are read: Microsoft Graph `alerts_v2` or the Defender for Endpoint API."""

    GRAPH = "graph"
    DEFENDER = "defender"


# Least-privileged application role first: it is the one we ask customers for (docs/ARCHITECTURE.md, invariant 8).
# A token with the ReadWrite variant also reads alerts, so a tenant that granted more is still usable.
ALERT_ROLES: dict[AlertSource, tuple[str, ...]] = {
    AlertSource.GRAPH: ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"),
    AlertSource.DEFENDER: ("Alert.Read.All", "Alert.ReadWrite.All"),
}

_ALERTS_PATHS: dict[AlertSource, str] = {
    AlertSource.GRAPH: "/v1.0/security/alerts_v2",
    AlertSource.DEFENDER: "/api/alerts",
}


@dataclass(frozen=True)
class ApiHosts:
    """The alert APIs' hosts and token resources (sovereign clouds and the local cloud set other ones)."""

    graph_host: str = setting("GRAPH_API_HOST")
    graph_resource: str = setting("GRAPH_API_RESOURCE")
    defender_host: str = setting("DEFENDER_API_HOST")
    defender_resource: str = setting("DEFENDER_API_RESOURCE")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ApiHosts:
        return load_config(cls, settings)


def required_role(source: AlertSource) -> str:
    """The application role customers consent to for this source."""
    return ALERT_ROLES[source][0]


def has_alert_role(source: AlertSource, roles: object) -> bool:
    """Whether a token's `roles` claim lets it read this source's alerts."""
    return isinstance(roles, list) and any(role in roles for role in ALERT_ROLES[source])


def token_resource(source: AlertSource, hosts: ApiHosts) -> str:
    """The App ID URI the token is requested for (its `aud`)."""
    return hosts.graph_resource if source is AlertSource.GRAPH else hosts.defender_resource


def token_scope(source: AlertSource, hosts: ApiHosts) -> str:
    """The client-credentials scope: `<resource>/.default` (one resource per token request)."""
    return f"{token_resource(source, hosts)}/.default"


# The Defender for Endpoint API hosts Microsoft documents; a tenant's `apiHost` receives our bearer
# tokens, so it may only name one of them (or the configured DEFENDER_API_HOST itself). Current host and
# its geo hosts: https://learn.microsoft.com/en-us/defender-endpoint/api/exposed-apis-list ("improve
# request performance"); legacy securitycenter hosts and their geo hosts: same page and its earlier
# versions; US Government (GCC, GCC High/DoD): https://learn.microsoft.com/en-us/defender-endpoint/gov
DEFENDER_API_HOSTS = frozenset({
    "api.security.microsoft.com",
    "us.api.security.microsoft.com", "eu.api.security.microsoft.com", "uk.api.security.microsoft.com",
    "au.api.security.microsoft.com", "swa.api.security.microsoft.com",
    "api.securitycenter.microsoft.com",
    "api-us.securitycenter.microsoft.com", "api-eu.securitycenter.microsoft.com",
    "api-uk.securitycenter.microsoft.com", "api-au.securitycenter.microsoft.com",
    "api-gcc.securitycenter.microsoft.us", "api-gov.securitycenter.microsoft.us",
})


def _origin(url: str) -> str | None:
    """`https://host[:port]` lowercased, or None when `url` is not a bare https origin (no user info,
    path, query or fragment)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = parts.hostname.lower().rstrip(".")
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


def allowed_defender_host(url: object, hosts: ApiHosts) -> str | None:
    """The origin of `url` when it is a documented Defender API host (default port) or the configured
    DEFENDER_API_HOST; None otherwise. Checked where a tenant's apiHost is accepted and again where it is
    used, so a value written any other way never receives a token."""
    if not isinstance(url, str):
        return None
    origin = _origin(url)
    if origin is None:
        return None
    if origin == _origin(hosts.defender_host):
        return origin
    host = origin.removeprefix("https://")
    return origin if host in DEFENDER_API_HOSTS else None


def api_host(source: AlertSource, hosts: ApiHosts, tenant_host: str = "") -> str:
    """The API host to call: the configured one, or for Defender the tenant's own `apiHost` when it is
    (still) an allowed Defender host; a stored host that is not allowed is ignored with a warning."""
    if source is AlertSource.GRAPH:
        return hosts.graph_host
    if tenant_host:
        allowed = allowed_defender_host(tenant_host, hosts)
        if allowed is not None:
            return allowed
        logger.warning("a tenant apiHost that is not a Microsoft Defender API host was ignored; the "
                       "configured DEFENDER_API_HOST is used")
    return hosts.defender_host


def alerts_url(source: AlertSource, hosts: ApiHosts, tenant_host: str = "") -> str:
    """The list-alerts endpoint of the source (for Defender at the tenant's allowed `apiHost`, if any)."""
    return api_host(source, hosts, tenant_host) + _ALERTS_PATHS[source]


def alert_request_headers(source: AlertSource) -> dict[str, str]:
    """Headers every alert listing sends besides the bearer token."""
    headers = {"Accept": "application/json"}
    if source is AlertSource.GRAPH:
        # Without it Graph maps members added after v1.0 shipped to `unknownFutureValue` (§4.1).
        headers["Prefer"] = "include-unknown-enum-members"
    return headers
