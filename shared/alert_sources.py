"""The two Microsoft alert APIs a tenant can be read from, and what each needs.

Serves onboarding (#3: the consent scope, the role a token must carry, the verification call) and
ingestion (#4: where alerts are listed). Hosts and token resources come from settings so sovereign clouds
and the local cloud differ only in configuration (design.md, "Microsoft endpoints").
"""

from __future__ import annotations

from enum import StrEnum

from shared.settings import Settings


class AlertSource(StrEnum):
    """Where a tenant's alerts are read: Microsoft Graph `alerts_v2` or the Defender for Endpoint API."""

    GRAPH = "graph"
    DEFENDER = "defender"


# Least-privileged application role first: it is the one we ask customers for (design.md invariant 8).
# A token with the ReadWrite variant also reads alerts, so a tenant that granted more is still usable.
ALERT_ROLES: dict[AlertSource, tuple[str, ...]] = {
    AlertSource.GRAPH: ("SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"),
    AlertSource.DEFENDER: ("Alert.Read.All", "Alert.ReadWrite.All"),
}

_ALERTS_PATHS: dict[AlertSource, str] = {
    AlertSource.GRAPH: "/v1.0/security/alerts_v2",
    AlertSource.DEFENDER: "/api/alerts",
}


def required_role(source: AlertSource) -> str:
    """The application role customers consent to for this source."""
    return ALERT_ROLES[source][0]


def has_alert_role(source: AlertSource, roles: object) -> bool:
    """Whether a token's `roles` claim lets it read this source's alerts."""
    return isinstance(roles, list) and any(role in roles for role in ALERT_ROLES[source])


def token_resource(source: AlertSource, settings: Settings) -> str:
    """The App ID URI the token is requested for (its `aud`)."""
    name = "GRAPH_API_RESOURCE" if source is AlertSource.GRAPH else "DEFENDER_API_RESOURCE"
    return str(settings.get(name))


def token_scope(source: AlertSource, settings: Settings) -> str:
    """The client-credentials scope: `<resource>/.default` (one resource per token request)."""
    return f"{token_resource(source, settings)}/.default"


def api_host(source: AlertSource, settings: Settings) -> str:
    return str(settings.get("GRAPH_API_HOST" if source is AlertSource.GRAPH else "DEFENDER_API_HOST"))


def alerts_url(source: AlertSource, settings: Settings) -> str:
    """The list-alerts endpoint of the source."""
    return api_host(source, settings) + _ALERTS_PATHS[source]


def alert_request_headers(source: AlertSource) -> dict[str, str]:
    """Headers every alert listing sends besides the bearer token."""
    headers = {"Accept": "application/json"}
    if source is AlertSource.GRAPH:
        # Without it Graph maps members added after v1.0 shipped to `unknownFutureValue` (§4.1).
        headers["Prefer"] = "include-unknown-enum-members"
    return headers
