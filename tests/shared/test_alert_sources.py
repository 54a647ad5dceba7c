"""Where alerts are listed: a tenant's own Defender `apiHost` is checked again at use, so a stored value that
is not a Microsoft Defender API host (written before the check existed, or straight into the table) never
receives a bearer token."""

from __future__ import annotations

from shared.alert_sources import AlertSource, ApiHosts, alerts_url
from shared.settings import Settings

SETTINGS = ApiHosts.from_settings(Settings({"DEFENDER_API_HOST": "https://api.security.microsoft.com",
                                            "GRAPH_API_HOST": "https://graph.microsoft.com"}))


def test_an_allowed_tenant_api_host_is_used_for_defender():
    assert alerts_url(AlertSource.DEFENDER, SETTINGS, "https://EU.api.security.microsoft.com/") == \
        "https://eu.api.security.microsoft.com/api/alerts"
    assert alerts_url(AlertSource.DEFENDER, SETTINGS, "https://api-gov.securitycenter.microsoft.us") == \
        "https://api-gov.securitycenter.microsoft.us/api/alerts"


def test_a_stored_api_host_that_is_not_allowed_falls_back_to_the_configured_host():
    for stored in ("https://evil.example", "https://api.security.microsoft.com.evil.example",
                   "http://api.security.microsoft.com", "https://api.security.microsoft.com:444"):
        assert alerts_url(AlertSource.DEFENDER, SETTINGS, stored) == "https://api.security.microsoft.com/api/alerts"


def test_graph_ignores_a_defender_api_host_and_no_host_means_the_configured_one():
    assert alerts_url(AlertSource.GRAPH, SETTINGS, "https://eu.api.security.microsoft.com") == \
        "https://graph.microsoft.com/v1.0/security/alerts_v2"
    assert alerts_url(AlertSource.DEFENDER, SETTINGS) == "https://api.security.microsoft.com/api/alerts"
