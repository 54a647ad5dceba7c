"""The operator's path on the local platform, in a real headless browser (Debian's chromium driven by
Playwright): onboard a customer through the API, consent (and sign in, as the invitation names no tenant),
follow the page's link to the portal-access guide, see the tenant active, raise an alert in the customer's
tenant through the local cloud's control API, run ingestion and the notification run it starts (the host's
admin API), and find the e-mail in MailDev's web inbox, its link carrying the customer's `?tid=`."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from local.run.cycle import NOTIFY_ORCHESTRATOR, fire_timer, wait_for_orchestration
from tests.grant_access.conftest import Onboarding, start_onboarding
from tests.grant_access.test_browser import ARGS, CHROMIUM

MSSP_ANALYSTS_TENANT = "5b0e7d3c-2a19-4f68-9c47-1d2e3f405162"
SETTINGS = {"MSSP_TENANT_ID": MSSP_ANALYSTS_TENANT, "MSSP_TENANT_DOMAIN": "soc.mssp.example",
            "MSSP_TIER1_GROUP": "Fabrikam SOC Tier 1", "MSSP_ACCESS_CATALOG": "Fabrikam SOC access",
            "SEND_RATE_PER_MINUTE": "0", "SEND_RATE_PER_DAY": "0", "MAIL_SENDER": "alerts@mssp.example"}


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onboarding]:
    env = start_onboarding(Path(tmp_path_factory.mktemp("operator")), with_maildev=True, **SETTINGS)
    yield env
    env.stack.stop()


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make installs it)")
def test_the_operators_path_from_onboarding_to_the_alert_email(operator):
    from playwright.sync_api import sync_playwright

    env = operator
    assert env.stack.maildev is not None
    # A customer tenant with no alert stream: the one alert below is the only one.
    tenant = str(uuid.uuid4())
    created = env.stack.cloud.control("POST", "tenants", json={
        "id": tenant, "domains": [f"c{tenant[:8]}.example"], "displayName": "Operator Co", "defenderLicensed": True,
        "alerts": {"seed": tenant, "alertsPerHour": 0, "lagSeconds": 5}})
    assert created.status_code == 201, created.text
    recipient = f"soc-{uuid.uuid4().hex[:8]}@mssp.example"
    rule = env.api("POST", "notification-rules", json={"name": "SOC: every alert", "recipients": [recipient],
                                                       "mode": "per-alert"})
    assert rule.status_code == 201, rule.text
    invitation = env.invite(customerName="Operator Co")  # names no tenant: the admin signs in after consent

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            blocked: list[str] = []
            page.on("console", lambda message: blocked.append(message.text)
                    if "Content Security Policy" in message.text else None)
            # The customer's admin: consent, sign in, read the outcome, follow the link to the next step.
            page.goto(invitation["consentUrl"])
            page.fill("#tenant", tenant)
            page.click("#accept")
            page.wait_for_url(lambda url: f"/{tenant}/oauth2/v2.0/authorize?" in url)
            page.click("#accept")
            page.wait_for_selector("h1")
            granted = page.text_content("h1") or ""
            page.click("text=give your security provider's analysts access to the Microsoft Defender portal")
            page.wait_for_url(f"{env.host_url}/api/invitations/{invitation['id']}/portal-access")
            guide_title = page.text_content("h1") or ""
            guide_codes = page.locator("code").all_text_contents()
            guide_links = page.eval_on_selector_all("a", "links => links.map(a => a.href)")

            # The operator: the tenant is active; an alert is raised, ingested and notified.
            assert env.tenant(tenant)["status"] == "active"
            raised = env.stack.cloud.control("POST", f"tenants/{tenant}/alerts", json={
                "severity": "high", "title": "Operator path: suspicious PowerShell"})
            assert raised.status_code == 201, raised.text
            env.advance_cloud_clock(10)  # past the stream's visibility lag
            started = datetime.now(UTC) - timedelta(seconds=1)
            fire_timer(env.stack, "fetch_alerts")
            run = wait_for_orchestration(env.stack, NOTIFY_ORCHESTRATOR, started)
            assert run.get("runtimeStatus") == "Completed", run

            # MailDev's web inbox: find the message, open it, read its link.
            page.goto(env.stack.maildev.web_url)
            page.get_by_text("Operator path: suspicious PowerShell").first.click()
            frame = page.frame_locator("iframe").first
            mail_links = _links_in_message(frame)
        finally:
            browser.close()

    assert "access granted" in granted.lower()
    assert "portal access" in guide_title.lower() and "Operator Co" in guide_title
    assert tenant in guide_codes and MSSP_ANALYSTS_TENANT in guide_codes and "soc.mssp.example" in guide_codes
    assert "Fabrikam SOC Tier 1" in guide_codes and "Fabrikam SOC access" in guide_codes
    assert f"https://security.microsoft.com/?tid={tenant}" in guide_links
    assert any(link.startswith(f"https://entra.microsoft.com/?tenant={tenant}#view/") for link in guide_links)
    assert not blocked  # the pages' own style passes their Content-Security-Policy
    assert mail_links and all(f"tid={tenant}" in link for link in mail_links)
    # The same message, through MailDev's REST API: to the rule's recipient.
    messages = requests.get(f"{env.stack.maildev.web_url}/api/email", timeout=10).json()
    mine = [m for m in messages if m["to"][0]["address"] == recipient]
    assert len(mine) == 1 and "Operator path: suspicious PowerShell" in mine[0]["subject"]


def _links_in_message(frame) -> list[str]:
    """The message's `?tid=` links. MailDev's inbox re-renders the message frame when it refreshes (a new
    message arriving, say), which destroys a script's context mid-call: read again until it holds still."""
    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + 30
    while True:
        try:
            frame.locator("a[href*='?tid=']").first.wait_for(timeout=15_000)
            return frame.locator("a[href*='?tid=']").evaluate_all("links => links.map(a => a.href)")
        except PlaywrightError as exc:
            if "context was destroyed" not in str(exc) or time.monotonic() > deadline:
                raise
