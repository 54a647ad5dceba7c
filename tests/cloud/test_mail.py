"""Graph sendMail of the local cloud: validation like Graph, recording, and its faults."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from local.run.services import LocalCloud
from tests.cloud import GRAPH, GRAPH_SCOPE, access_token, call, consent, new_app, new_tenant


@pytest.fixture
def mssp(cloud: LocalCloud) -> tuple[str, str]:
    """(tenant id, Graph token) of an MSSP tenant whose own app holds Mail.Send."""
    tenant = new_tenant(cloud)
    app = new_app(cloud, homeTenant=tenant["id"], multiTenant=False)
    return tenant["id"], access_token(cloud, tenant["id"], app["clientId"], GRAPH_SCOPE)


def _message(to: str = "soc@mssp.example", **extra: Any) -> dict[str, Any]:
    return {"message": {"subject": "New alert", "body": {"contentType": "HTML", "content": "<p>hi</p>"},
                        "toRecipients": [{"emailAddress": {"address": to}}], **extra}, "saveToSentItems": False}


def _send(cloud: LocalCloud, token: str, body: Any, user: str = "alerts@mssp.example"):
    return call(cloud, "POST", f"/v1.0/users/{user}/sendMail", token, json=body)


def _recorded(cloud: LocalCloud, tenant_id: str) -> list[dict]:
    return cloud.control("GET", "mail", params={"tenant": tenant_id}).json()["messages"]


def test_sent_mail_is_accepted_and_recorded(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    tenant_id, token = mssp
    headers = [{"name": "X-Alert-Id", "value": "da123"}]
    response = _send(cloud, token, _message(internetMessageHeaders=headers, internetMessageId="<a@mssp>"))
    assert response.status_code == 202
    assert response.content == b""
    [message] = _recorded(cloud, tenant_id)
    assert message["sender"] == "alerts@mssp.example"
    assert message["toRecipients"] == ["soc@mssp.example"]
    assert message["subject"] == "New alert"
    assert message["body"] == {"contentType": "HTML", "content": "<p>hi</p>"}
    assert message["internetMessageHeaders"] == headers
    assert message["internetMessageId"] == "<a@mssp>"


def test_send_mail_without_token_is_401(cloud: LocalCloud) -> None:
    response = _send(cloud, None, _message())  # type: ignore[arg-type]
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "innerError"}


def test_send_mail_without_mail_send_role_is_403(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud, requiredResourceAccess={GRAPH: ["SecurityAlert.Read.All"]})
    consent(cloud, tenant["id"], app["clientId"])
    response = _send(cloud, access_token(cloud, tenant["id"], app["clientId"], GRAPH_SCOPE), _message())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ErrorAccessDenied"


def test_malformed_recipient_is_400_invalid_recipients(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    tenant_id, token = mssp
    response = _send(cloud, token, _message(to="not an address"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorInvalidRecipients"
    assert _recorded(cloud, tenant_id) == []


def test_message_without_recipients_is_400(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    _, token = mssp
    body = _message()
    body["message"]["toRecipients"] = []
    assert _send(cloud, token, body).status_code == 400


@pytest.mark.parametrize(
    "shape",
    [
        {"body": "plain text instead of an itemBody"},
        {"toRecipients": [{"emailAddress": "soc@mssp.example"}]},
        {"toRecipients": ["soc@mssp.example"]},
    ],
)
def test_message_with_wrongly_typed_parts_is_400_not_500(cloud: LocalCloud, mssp: tuple[str, str], shape) -> None:
    tenant_id, token = mssp
    body = _message()
    body["message"].update(shape)
    response = _send(cloud, token, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"RequestBodyRead", "ErrorInvalidRecipients"}
    assert _recorded(cloud, tenant_id) == []


def test_body_without_message_is_400(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    _, token = mssp
    assert _send(cloud, token, {"subject": "x"}).status_code == 400


def test_rejected_recipient_gets_a_permanent_400(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    tenant_id, token = mssp
    rejected = f"gone-{uuid.uuid4().hex[:8]}@customer.example"
    cloud.control("PUT", "mail/rejected", json={"addresses": [rejected]})
    try:
        first = _send(cloud, token, _message(to=rejected))
        second = _send(cloud, token, _message(to=rejected))
    finally:
        cloud.control("PUT", "mail/rejected", json={"addresses": []})
    assert first.status_code == second.status_code == 400
    assert rejected in first.json()["error"]["message"]
    assert _recorded(cloud, tenant_id) == []


def test_throttle_fault_on_mail_gives_429_for_count_requests(cloud: LocalCloud, mssp: tuple[str, str]) -> None:
    tenant_id, token = mssp
    cloud.control("POST", f"tenants/{tenant_id}/faults", json={"kind": "429", "api": "mail", "count": 2,
                                                              "retryAfter": 7})
    statuses = [_send(cloud, token, _message()) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 202]
    assert statuses[0].headers["Retry-After"] == "7"
    assert statuses[0].json()["error"]["code"] == "TooManyRequests"
    assert len(_recorded(cloud, tenant_id)) == 1
