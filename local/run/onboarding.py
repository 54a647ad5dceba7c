"""The demo's onboarding step for `make run`: the three simulated customers of
local.demo onboard the way real ones do, through the onboarding webhook and the admin-consent page (answered
here by a script posting the page's form), with Northwind declining first and accepting on a fresh link.
Then it waits, firing the verification timer and moving the local cloud's clock past the consent
propagation delay, until every customer's tenant is active.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

from local.run.demo import CUSTOMERS, DemoCustomer
from local.run.stack import LocalStack
from shared.signing import signature_headers

logger = logging.getLogger(__name__)


class OnboardingError(RuntimeError):
    """The demo tenants did not all become active."""


def _api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert stack.host is not None
    headers = {"x-functions-key": stack.host.function_key, **kwargs.pop("headers", {})}
    return requests.request(method, f"{stack.host.url}/api/{path}", headers=headers, timeout=60, **kwargs)


def post_invitation(host_url: str, function_key: str, secret: str, payload: dict[str, Any]) -> requests.Response:
    """POST /api/tenants as the MSSP's onboarding system does: the function key and, when the webhook has a
    secret, both signature headers computed for this body now (each signature is accepted once)."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "x-functions-key": function_key}
    if secret:
        headers.update(signature_headers(secret, body))
    return requests.post(f"{host_url}/api/tenants", data=body, headers=headers, timeout=60)


def _invite(stack: LocalStack, customer: DemoCustomer) -> dict[str, Any]:
    """What the MSSP's onboarding system sends; the tenant is named by its domain, as a customer knows it."""
    assert stack.host is not None
    response = post_invitation(stack.host.url, stack.host.function_key,
                               stack.settings.get("ONBOARDING_WEBHOOK_SECRET", ""), {
        "customerName": customer.name, "tenantId": customer.domain, "alertSource": customer.alert_source,
        "externalId": f"demo-{customer.domain}", "contactEmail": f"it@{customer.domain}"})
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
    return answer_consent(consent_url, decision, stack.cloud.ca_path)


def answer_consent(consent_url: str, decision: str, ca_path: Path) -> str:
    """Submit the local cloud's consent page (`accept` or `cancel`) as the customer's admin would, follow the
    redirect to the app's callback; the callback page's heading."""
    parts = urlsplit(consent_url)
    query = dict(parse_qsl(parts.query))
    form = {name: query[name] for name in ("client_id", "redirect_uri", "state", "scope")}
    response = requests.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data={**form, "decision": decision},
                             allow_redirects=False, verify=str(ca_path), timeout=60)
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


# --- OpenID Connect sign-in, answered by a script ---------------------------------------------------------


@dataclass(frozen=True)
class FormPost:
    """What Entra's response_mode=form_post page makes the browser do: POST `fields` to `action`."""

    action: str
    fields: dict[str, str]

    def submit(self, **kwargs: Any) -> requests.Response:
        """POST the fields to `action` as the browser would (no redirects followed)."""
        return requests.post(self.action, data=self.fields, allow_redirects=False, timeout=60, **kwargs)


class _Form(HTMLParser):
    """The first form of a page: its action, its inputs with their values, and its buttons by id."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.inputs: dict[str, str] = {}
        self.buttons: dict[str, tuple[str, str]] = {}
        self.submitting = False  # the form_post page submits itself by script
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = attributes.get("action", "")
            self.submitting = attributes.get("name") == "hiddenform"
        elif tag == "input" and not self._done and attributes.get("name"):
            self.inputs[attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and not self._done and attributes.get("id"):
            self.buttons[attributes["id"]] = (attributes.get("name", ""), attributes.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._done = True


def _form_of(response: requests.Response) -> _Form:
    form = _Form()
    form.feed(response.text)
    if form.action is None:
        code = response.text.split('id="error-code">', 1)[-1].split("<", 1)[0] if "error-code" in response.text else ""
        raise OnboardingError(f"the sign-in page answered {response.status_code} without a form {code}".rstrip())
    return form


def sign_in(sign_in_url: str, *, tenant: str | None = None, username: str | None = None, decision: str = "accept",
            verify: str | bool = True) -> FormPost:
    """Answer the local cloud's sign-in page (local.cloud.signin) the way an admin's browser would.

    GETs `sign_in_url` (redirects followed, so it may be an app URL that sends the browser to the
    cloud's `/{tenant}/oauth2/v2.0/authorize`), submits the page's form as `username` (default: the page's)
    of `tenant` (needed when the URL's tenant is `organizations`/`common`; otherwise the page's tenant) with
    Sign in (`decision="accept"`) or Cancel (anything else), and returns the form_post the cloud answers:
    `fields` is `{"id_token", "state"}` or `{"error", "error_description", "state"}` (no `state` when the
    request had none). Raises OnboardingError when the cloud shows an error page instead (unknown tenant or
    app, unregistered redirect URI).
    """
    page = requests.get(sign_in_url, verify=verify, timeout=60)
    form = _form_of(page)
    if not form.submitting:  # the sign-in page; an error posted back at once is already a form_post
        typed = {"username": username} if username else {}
        if tenant is not None:
            typed["tenant"] = tenant
        name, value = form.buttons["accept" if decision == "accept" else "cancel"]
        response = requests.post(urljoin(page.url, form.action or ""), data={**form.inputs, **typed, name: value},
                                 allow_redirects=False, verify=verify, timeout=60)
        form = _form_of(response)
        if not form.submitting:
            raise OnboardingError(f"the sign-in page answered {response.status_code} without a form_post")
    return FormPost(action=form.action or "", fields=dict(form.inputs))
