"""End to end in a real headless browser (Debian's chromium driven by Playwright): the customer's admin
opens the consent link, accepts on the local cloud's consent page, and lands on our page."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make installs it)")
def test_an_admin_accepts_in_a_browser_and_reads_access_granted(onboarding):
    from playwright.sync_api import sync_playwright

    tenant = onboarding.new_tenant(name="Browser Co")
    invitation = onboarding.invite(tenantId=tenant, customerName="Browser Co")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # The local cloud's certificate comes from its own CA, which this browser profile does not know.
            page = browser.new_context(ignore_https_errors=True).new_page()
            blocked: list[str] = []
            page.on("console", lambda message: blocked.append(message.text)
                    if "Content Security Policy" in message.text else None)
            page.goto(invitation["consentUrl"])
            page.click("#accept")
            page.wait_for_url(f"{onboarding.host_url}/api/consent/callback?*")
            heading = page.text_content("h1")
            styled_width = page.evaluate("getComputedStyle(document.body).maxWidth")
        finally:
            browser.close()

    assert heading is not None and "access granted" in heading.lower()
    assert not blocked and styled_width != "none"  # the page's own style passes its Content-Security-Policy
    assert onboarding.tenant(tenant)["status"] == "active"


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (make installs it)")
def test_an_admin_of_an_unnamed_tenant_consents_signs_in_and_reads_access_granted(onboarding):
    """The invitation named no tenant: after the consent the browser is sent through the sign-in, and
    Entra's form_post page submits the id_token to our callback, which then shows the outcome."""
    from playwright.sync_api import sync_playwright

    tenant = onboarding.new_tenant(name="Unnamed Co")
    invitation = onboarding.invite(customerName="Unnamed Co")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(invitation["consentUrl"])
            page.fill("#tenant", tenant)
            page.click("#accept")
            # Our callback sent the browser on to the sign-in of the tenant the consent named.
            page.wait_for_url(lambda url: f"/{tenant}/oauth2/v2.0/authorize?" in url)
            page.click("#accept")
            page.wait_for_selector("h1")
            heading = page.text_content("h1")
            landed = page.url
        finally:
            browser.close()

    assert landed == f"{onboarding.host_url}/api/consent/callback"  # the form_post arrived as a POST
    assert heading is not None and "access granted" in heading.lower()
    assert onboarding.tenant(tenant)["status"] == "active"
