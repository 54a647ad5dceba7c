"""The customer's next step after consent: the portal-access page for the MSSP's analysts
(grant_access/portal_access.py). Its content (prefilled ids, names from settings, links into the customer's
own admin centers, hostile setting values escaped), its refusal for unknown or not-yet-accepted invitations,
and the links to it in the consent page, the invitation, the tenant API and the callbackUrl result."""

from __future__ import annotations

import html
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from grant_access import pages, portal_access
from grant_access.config import PortalAccessConfig
from grant_access.invitations import ACCEPTED, PENDING, Invitation
from grant_access.notify_callback import result_body
from shared.settings import Settings, SettingsError

CUSTOMER_TENANT = "3f2b1a0c-1111-4222-8333-944455556666"
MSSP_TENANT = "9e8d7c6b-5a49-4838-a271-605f4e3d2c1b"
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def config(**values: str) -> PortalAccessConfig:
    return PortalAccessConfig.from_settings(Settings(values))


def hrefs(markup: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a href="([^"]*)"', markup)]


# --- the page itself ---------------------------------------------------------------------------------------


def test_the_page_is_prefilled_with_both_tenants_and_the_names_from_the_settings():
    markup = portal_access.guide("Contoso Ltd", CUSTOMER_TENANT, config(
        MSSP_TENANT_ID=MSSP_TENANT.upper(), MSSP_TENANT_DOMAIN="SOC.mssp.example", MSSP_TIER1_GROUP="SOC L1",
        MSSP_TIER2_GROUP="SOC L2", MSSP_APPROVERS_GROUP="SOC approvers", MSSP_ACCESS_CATALOG="SOC catalog")).render()

    assert f"<code>{CUSTOMER_TENANT}</code>" in markup
    assert f"<code>{MSSP_TENANT}</code>" in markup and "<code>soc.mssp.example</code>" in markup
    for name in ("SOC L1", "SOC L2", "SOC approvers", "SOC catalog"):
        assert f"<code>{name}</code>" in markup
    assert "MSSP Tier 1 Analysts" not in markup
    assert "Portal access for your security provider at Contoso Ltd" in markup


def test_the_defaults_are_microsofts_example_names():
    markup = portal_access.guide("Contoso", CUSTOMER_TENANT, config()).render()
    for name in ("MSSP Tier 1 Analysts", "MSSP Tier 2 Analysts", "MSSP Analyst Approvers", "MSSP Accesses"):
        assert f"<code>{name}</code>" in markup
    # No MSSP tenant configured: the page says so rather than showing an empty value.
    assert "the tenant your security provider names" in markup


def test_every_link_goes_to_the_customers_own_tenant_or_microsofts_guide():
    links = hrefs(portal_access.guide("Contoso", CUSTOMER_TENANT, config(), customer_domain="contoso.com").render())

    defender = f"https://security.microsoft.com/?tid={CUSTOMER_TENANT}"
    assert defender in links
    entra = [link for link in links if link.startswith("https://entra.microsoft.com/")]
    assert len(entra) == 2
    for link in entra:
        parts = urlsplit(link)
        assert parse_qs(parts.query) == {"tenant": [CUSTOMER_TENANT]} and parts.fragment.startswith("view/")
    assert "https://learn.microsoft.com/en-us/defender-endpoint/grant-mssp-access" in links
    assert "https://myaccess.microsoft.com/@contoso.com" in links
    assert all(link.startswith("https://") for link in links)
    assert set(links) <= {defender, *entra, portal_access.GUIDE_URL, "https://myaccess.microsoft.com/@contoso.com"}


def test_hostile_setting_values_and_customer_names_are_escaped():
    markup = portal_access.guide(HOSTILE, CUSTOMER_TENANT, config(
        MSSP_TIER1_GROUP=HOSTILE, MSSP_TIER2_GROUP='"><a href="javascript:alert(1)">x</a>',
        MSSP_APPROVERS_GROUP="A & B", MSSP_ACCESS_CATALOG="</code><script>1</script>")).render()

    for raw in ("<script", "<img", 'href="javascript', "</code><script"):
        assert raw not in markup
    assert html.escape(HOSTILE) in markup
    assert "<code>A &amp; B</code>" in markup
    assert all(link.startswith("https://") for link in hrefs(markup))


@pytest.mark.parametrize(("name", "value"), [
    ("MSSP_TENANT_ID", "not-a-guid"), ("MSSP_TENANT_ID", f"{MSSP_TENANT}0"),
    ("MSSP_TENANT_DOMAIN", "mssp"), ("MSSP_TENANT_DOMAIN", "https://mssp.example"),
    ("MSSP_TENANT_DOMAIN", "mssp.example/x"), ("MSSP_TIER1_GROUP", "   "), ("MSSP_TIER2_GROUP", "a\nb"),
    ("MSSP_APPROVERS_GROUP", "x" * 121), ("MSSP_ACCESS_CATALOG", "MSSP\u202eAccesses"),
])
def test_malformed_settings_are_refused_naming_the_setting(name, value):
    with pytest.raises(SettingsError, match=name):
        config(**{name: value})


def test_a_page_never_carries_a_link_that_is_not_https_or_the_apps_own():
    for href in ("javascript:alert(1)", "http://example.com", "//evil.example/x", "data:text/html,x"):
        with pytest.raises(ValueError):
            pages.Page(200, "t", (("x", pages.Link("y", href)),)).render()


def _invitation(outcome: str, tenant: str = CUSTOMER_TENANT) -> Invitation:
    return Invitation(uuid.uuid4().hex, {"outcome": outcome, "tenantId": tenant if outcome == ACCEPTED else "",
                                         "customerName": "Contoso", "externalId": "crm-7"})


def test_the_result_carries_the_page_url_only_once_consent_was_granted():
    accepted = _invitation(ACCEPTED)
    payload = {"invitationId": accepted.id, "status": "active", "occurredAt": "2026-01-01T00:00:00+00:00"}
    body = result_body(accepted.row, payload, "https://app.example")
    assert body["portalAccessUrl"] == f"https://app.example/api/invitations/{accepted.id}/portal-access"
    assert result_body(accepted.row, payload)["portalAccessUrl"] is None  # no public URL known
    declined = _invitation("declined")
    assert result_body(declined.row, {**payload, "invitationId": declined.id, "status": "declined"},
                       "https://app.example")["portalAccessUrl"] is None
    assert portal_access.consented_tenant(_invitation(PENDING)) is None


# --- on the local platform ---------------------------------------------------------------------------------


def _accepted(onboarding, name: str = "Portal Co") -> tuple[str, dict, requests.Response]:
    tenant = onboarding.new_tenant(name=name)
    invitation = onboarding.invite(tenantId=tenant, customerName=name)
    page = onboarding.open(onboarding.answer_consent(invitation["consentUrl"]))
    assert page.status_code == 200, page.text
    return tenant, invitation, page


def _get_page(onboarding, invitation_id: str) -> requests.Response:
    # The customer's admin has no function key.
    return requests.get(f"{onboarding.host_url}/api/invitations/{invitation_id}/portal-access", timeout=30,
                        allow_redirects=False)


def test_after_consent_the_admin_follows_the_link_to_the_page_without_a_key(onboarding):
    tenant, invitation, granted = _accepted(onboarding)
    path = f"/api/invitations/{invitation['id']}/portal-access"
    assert path in hrefs(granted.text) and "access granted" in granted.text.lower()

    page = _get_page(onboarding, invitation["id"])

    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == pages.CONTENT_SECURITY_POLICY
    for header in ("X-Content-Type-Options", "Referrer-Policy", "Cache-Control", "X-Frame-Options"):
        assert page.headers[header] == pages._HEADERS[header]
    assert f"<code>{tenant}</code>" in page.text
    assert f"https://security.microsoft.com/?tid={tenant}" in hrefs(page.text)
    assert any(link.startswith(f"https://entra.microsoft.com/?tenant={tenant}#view/") for link in hrefs(page.text))
    assert "<code>MSSP Tier 1 Analysts</code>" in page.text


def test_the_invitation_and_the_tenant_api_link_the_page_once_accepted(onboarding):
    tenant, invitation, _ = _accepted(onboarding, "Linked Co")
    path = f"/api/invitations/{invitation['id']}/portal-access"

    shown = onboarding.api("GET", f"invitations/{invitation['id']}").json()
    assert shown["outcome"] == "accepted" and shown["portalAccessUrl"] == onboarding.host_url + path
    row = onboarding.tenant(tenant)
    assert row["portalUrl"] == f"https://security.microsoft.com/?tid={tenant}"
    assert row["portalAccessHref"] == path
    listed = {t["tenantId"]: t for t in onboarding.api("GET", "tenants").json()["value"]}
    assert listed[tenant]["portalAccessHref"] == path


def test_unknown_pending_and_declined_invitations_get_the_same_404_page(onboarding):
    pending = onboarding.invite(customerName="Pending Co")
    declined = onboarding.invite(customerName="Declined Co")
    onboarding.open(onboarding.answer_consent(declined["consentUrl"], "cancel"))
    assert "portalAccessUrl" not in onboarding.api("GET", f"invitations/{pending['id']}").json()
    assert "portalAccessUrl" not in onboarding.api("GET", f"invitations/{declined['id']}").json()

    answers = [_get_page(onboarding, invitation_id) for invitation_id in (
        pending["id"], declined["id"], uuid.uuid4().hex, "not-an-id", pending["id"].upper(), "0" * 32)]

    assert [a.status_code for a in answers] == [404] * len(answers)
    assert len({a.text for a in answers}) == 1  # nothing tells an unknown id from a pending one
    assert all(a.headers["Content-Security-Policy"] == pages.CONTENT_SECURITY_POLICY for a in answers)
    assert pending["id"] not in answers[0].text
