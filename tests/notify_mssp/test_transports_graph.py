"""The app on the local host with MAIL_TRANSPORT=graph: mail leaves through Graph sendMail with a token of
the MSSP's own single-tenant mail app (never the multi-tenant app, docs/ARCHITECTURE.md, invariant 8), a throttled
send recovers, and a recipient Graph rejects is reported as a permanent failure."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest
import requests

from local.run.stack import LocalStack

MAIL_TENANT = str(uuid.uuid4())
MAIL_APP = str(uuid.uuid4())
MAIL_SECRET = secrets.token_urlsafe(24)
GRAPH = "https://graph.microsoft.com"


@pytest.fixture(scope="module")
def notify_settings() -> dict[str, str]:
    return {"MAIL_TRANSPORT": "graph", "MAIL_CREDENTIAL": "secret", "MAIL_APP_TENANT_ID": MAIL_TENANT,
            "MAIL_APP_CLIENT_ID": MAIL_APP, "MAIL_APP_CLIENT_SECRET": MAIL_SECRET, "MAIL_SENDER": "alerts@mssp.example",
            "MAIL_RETRY_BUDGET_SECONDS": "10"}


@pytest.fixture(scope="module")
def mail_world(notify_stack: LocalStack) -> LocalStack:
    """The MSSP's own tenant and its mail app in the local cloud (read by the app at its first send)."""
    cloud = notify_stack.cloud
    cloud.control("POST", "tenants", json={"id": MAIL_TENANT, "domains": ["mssp-own.example"],
                                           "displayName": "The MSSP"})
    cloud.control("POST", "apps", json={"clientId": MAIL_APP, "displayName": "MSSP mailer", "homeTenant": MAIL_TENANT,
                                        "multiTenant": False, "secrets": [{"value": MAIL_SECRET}],
                                        "requiredResourceAccess": {GRAPH: ["Mail.Send"]}})
    return notify_stack


def send_test_email(stack: LocalStack, recipients: list[str]) -> requests.Response:
    assert stack.host is not None
    url, key = f"{stack.host.url}/api/notification-rules", {"x-functions-key": stack.host.function_key}
    created = requests.post(url, json={"name": f"graph {uuid.uuid4().hex[:8]}", "recipients": recipients},
                            headers=key, timeout=30)
    assert created.status_code == 201, created.text
    return requests.post(f"{url}/{created.json()['id']}/test", headers=key, timeout=60)


def graph_mail(stack: LocalStack, address: str) -> list[dict[str, Any]]:
    messages = stack.cloud.control("GET", "mail").json()["messages"]
    return [m for m in messages if address in m["toRecipients"]]


def recipient(domain: str = "mssp.example") -> str:
    return f"soc-{uuid.uuid4().hex[:12]}@{domain}"


def test_mail_goes_through_graph_with_the_mssp_own_mail_app(mail_world):
    address = recipient()
    response = send_test_email(mail_world, [address])
    assert response.status_code == 200, response.text
    (record,) = graph_mail(mail_world, address)
    assert (record["tenantId"], record["clientId"], record["sender"]) == (MAIL_TENANT, MAIL_APP, "alerts@mssp.example")
    assert record["subject"].startswith("[Test] ")
    assert mail_world.maildev is not None
    assert not [m for m in mail_world.maildev.messages() if m["to"][0]["address"] == address]


def test_a_throttled_graph_send_recovers_after_retry_after(mail_world):
    address = recipient()
    mail_world.cloud.control("POST", f"tenants/{MAIL_TENANT}/faults",
                             json={"kind": "throttle", "api": "mail", "count": 1, "retryAfter": 1})
    assert send_test_email(mail_world, [address]).status_code == 200
    assert len(graph_mail(mail_world, address)) == 1


def test_a_recipient_graph_rejects_is_a_permanent_failure(mail_world):
    refused, fine = recipient("customer.example"), recipient()
    mail_world.cloud.control("PUT", "mail/rejected", json={"addresses": [refused]})
    try:
        response = send_test_email(mail_world, [refused, fine])
    finally:
        mail_world.cloud.control("PUT", "mail/rejected", json={"addresses": []})
    assert response.status_code == 422 and response.json()["field"] == "recipients"
    outcomes = {r["recipient"]: r["status"] for r in response.json()["results"]}
    assert outcomes == {refused: "permanent", fine: "sent"}
    assert len(graph_mail(mail_world, fine)) == 1 and graph_mail(mail_world, refused) == []
