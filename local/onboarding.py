"""The demo's onboarding step for `make run` (#3, "In `make run`"): the three simulated customers of
local.demo onboard the way real ones do, through the onboarding webhook and the admin-consent page (answered
here by a script posting the page's form), with Northwind declining first and accepting on a fresh link.
Then it waits, firing the verification timer and moving the local cloud's clock past the consent
propagation delay, until every customer's tenant is active.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from local.demo import CUSTOMERS, DemoCustomer
from local.stack import LocalStack
from shared.signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)


class OnboardingError(RuntimeError):
    """The demo tenants did not all become active."""


def _api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert stack.host is not None
    headers = {"x-functions-key": stack.host.function_key, **kwargs.pop("headers", {})}
    return requests.request(method, f"{stack.host.url}/api/{path}", headers=headers, timeout=60, **kwargs)


def _invite(stack: LocalStack, customer: DemoCustomer) -> dict[str, Any]:
    """What the MSSP's onboarding system sends; the tenant is named by its domain, as a customer knows it."""
    body = json.dumps({"customerName": customer.name, "tenantId": customer.domain, "alertSource": customer.alert_source,
                       "externalId": f"demo-{customer.domain}", "contactEmail": f"it@{customer.domain}"}).encode()
    headers = {"Content-Type": "application/json"}
    secret = stack.settings.get("ONBOARDING_WEBHOOK_SECRET", "")
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    response = _api(stack, "POST", "tenants", data=body, headers=headers)
    if response.status_code == 409:  # already active (a second run against the same storage)
        return {}
    response.raise_for_status()
    invitation = response.json()
    if "consentUrl" not in invitation:  # a replayed externalId: the link is shown once, ask for a fresh one
        invitation = _fresh_link(stack, customer)
    return invitation


def _fresh_link(stack: LocalStack, customer: DemoCustomer) -> dict[str, Any]:
    response = _api(stack, "POST", f"tenants/{customer.tenant_id}/consent")
    response.raise_for_status()
    return response.json()


def _answer(stack: LocalStack, consent_url: str, decision: str) -> str:
    """Submit the local cloud's consent page as the customer's admin; the callback page's heading."""
    parts = urlsplit(consent_url)
    query = dict(parse_qsl(parts.query))
    form = {name: query[name] for name in ("client_id", "redirect_uri", "state", "scope")}
    response = requests.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data={**form, "decision": decision},
                             allow_redirects=False, verify=str(stack.cloud.ca_path), timeout=60)
    if response.status_code != 302:
        raise OnboardingError(f"the consent page answered {response.status_code}: {response.text[:200]}")
    page = requests.get(response.headers["Location"], timeout=60)
    heading = page.text.split("<h1>", 1)[-1].split("</h1>", 1)[0]
    logger.info("%s: %s", decision, heading)
    return heading


def _statuses(stack: LocalStack) -> dict[str, str]:
    response = _api(stack, "GET", "tenants")
    response.raise_for_status()
    return {t["tenantId"]: str(t["status"]) for t in response.json()["value"]}


def onboard_demo_tenants(stack: LocalStack, timeout: float = 90.0) -> None:
    """Onboard every demo customer; raises OnboardingError when one is not active within `timeout`."""
    assert stack.host is not None
    for customer in CUSTOMERS:
        invitation = _invite(stack, customer)
        if not invitation:
            continue
        if customer.declines_first:
            _answer(stack, invitation["consentUrl"], "cancel")
            invitation = _fresh_link(stack, customer)
        _answer(stack, invitation["consentUrl"], "accept")

    wanted = {c.tenant_id for c in CUSTOMERS}
    # Consent takes a while to propagate in the demo tenants; move the cloud's clock instead of waiting.
    stack.cloud.control("POST", "clock", json={"advance_seconds": 60})
    deadline = time.monotonic() + timeout
    while True:
        statuses = _statuses(stack)
        pending = {t: statuses.get(t, "missing") for t in wanted if statuses.get(t) != "active"}
        if not pending:
            logger.info("demo tenants onboarded: %d active", len(wanted))
            return
        if time.monotonic() > deadline:
            raise OnboardingError(f"demo tenants not active after {timeout:.0f}s: {pending}")
        response = stack.host.admin("POST", "functions/verify_tenants", json={"input": ""})
        if response.status_code != 202:
            raise OnboardingError(f"verification timer run answered {response.status_code}")
        time.sleep(1.0)
