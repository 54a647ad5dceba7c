"""The onboarding webhook `POST /api/tenants` and `GET /api/invitations/{id}`, over HTTP on the local host."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

PROBLEM = "application/problem+json"


def _problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field
    return body


def test_an_invitation_carries_the_v2_admin_consent_link_for_the_named_tenant(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant, alertSource="defender", contactEmail="it@contoso.example")

    link = urlsplit(invitation["consentUrl"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert link.path == f"/{tenant}/v2.0/adminconsent"
    assert query["client_id"] == onboarding.client_id
    assert query["scope"] == "https://api.securitycenter.microsoft.com/.default"
    assert query["redirect_uri"] == f"{onboarding.host_url}/api/consent/callback"
    assert len(query["state"]) == 43
    assert invitation["outcome"] == "pending" and invitation["alertSource"] == "defender"


def test_an_invitation_without_a_tenant_uses_organizations_and_the_graph_scope(onboarding):
    invitation = onboarding.invite()
    link = urlsplit(invitation["consentUrl"])
    assert link.path == "/organizations/v2.0/adminconsent"
    assert parse_qs(link.query)["scope"] == ["https://graph.microsoft.com/.default"]


def test_a_domain_is_resolved_to_its_tenant_guid_in_the_link(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=f"c{tenant[:8]}.example")
    assert urlsplit(invitation["consentUrl"]).path == f"/{tenant}/v2.0/adminconsent"


def test_an_unknown_domain_is_a_400_naming_tenantId(onboarding):
    response = onboarding.post_webhook({"customerName": "X", "tenantId": "nobody-here.example"})
    _problem(response, 400, "tenantId")


def test_the_same_externalId_returns_the_same_invitation(onboarding):
    external = f"crm-{uuid.uuid4()}"
    first = onboarding.invite(externalId=external)
    again = onboarding.post_webhook({"customerName": "Contoso Ltd", "externalId": external})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert "consentUrl" not in again.json()  # the state exists only as a hash


def test_the_invitation_can_be_read_back_with_its_outcome(onboarding):
    invitation = onboarding.invite(customerName="Fabrikam")
    response = onboarding.api("GET", f"invitations/{invitation['id']}")
    assert response.status_code == 200
    assert response.json()["customerName"] == "Fabrikam"
    assert response.json()["outcome"] == "pending"
    assert "consentUrl" not in response.json()


def test_an_unknown_invitation_is_404(onboarding):
    _problem(onboarding.api("GET", f"invitations/{uuid.uuid4().hex}"), 404)
    _problem(onboarding.api("GET", "invitations/not-an-id"), 404)


def test_an_active_tenant_is_a_409_pointing_at_it(onboarding):
    tenant = onboarding.new_tenant()
    onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"]))
    assert onboarding.tenant(tenant)["status"] == "active"

    body = _problem(onboarding.post_webhook({"customerName": "Again", "tenantId": tenant}), 409, "tenantId")
    assert body["tenant"] == f"/api/tenants/{tenant}"


@pytest.mark.parametrize("body, field", [
    ({}, "customerName"),
    ({"customerName": ""}, "customerName"),
    ({"customerName": 5}, "customerName"),
    ({"customerName": "a\nb"}, "customerName"),
    ({"customerName": "x" * 201}, "customerName"),
    ({"customerName": "evil\u202egnp.exe"}, "customerName"),
    ({"customerName": "X", "tenantId": "not a tenant"}, "tenantId"),
    ({"customerName": "X", "tenantId": 12}, "tenantId"),
    ({"customerName": "X", "alertSource": "sentinel"}, "alertSource"),
    ({"customerName": "X", "alertSource": ""}, "alertSource"),
    ({"customerName": "X", "alertSource": []}, "alertSource"),
    ({"customerName": "X", "contactEmail": "nobody"}, "contactEmail"),
    ({"customerName": "X", "externalId": ["a"]}, "externalId"),
    ({"customerName": "X", "callbackUrl": "http://hooks.example.com/x"}, "callbackUrl"),
    ({"customerName": "X", "surprise": 1}, "surprise"),
    ({"customerName": "X", "rules": {}}, "rules"),
    ({"customerName": "X", "rules": [{"name": "r"}]}, "rules[0].recipients"),
    ({"customerName": "X", "rules": [{"name": "r", "recipients": ["a@b.example"], "severities": ["Bad"]}]},
     "rules[0].severities"),
    ({"customerName": "X", "rules": [{"name": "r", "recipients": ["a@b.example"], "mode": "weekly"}]},
     "rules[0].mode"),
    ({"customerName": "X", "rules": [{"id": "r1", "name": "r", "recipients": ["a@b.example"]}]}, "rules[0].id"),
])
def test_a_bad_field_is_a_400_naming_it(onboarding, body, field):
    before = onboarding.snapshot()
    _problem(onboarding.post_webhook(body), 400, field)
    assert onboarding.snapshot() == before


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook", "https://localhost/hook", "https://localhost./hook", "https://x.localhost/hook",
    "https://[::1]/hook", "https://10.0.0.8/hook", "https://192.168.1.1/hook", "https://172.16.0.1/hook",
    "https://169.254.169.254/latest/meta-data", "https://[fe80::1]/hook", "https://[::ffff:10.0.0.1]/hook",
    "https://0.0.0.0/hook", "https://intranet/hook",
    "https://[fec0::1]/cb",  # site-local
    "https://[2002:a9fe:a9fe::1]/cb",  # 6to4 around 169.254.169.254
    "https://[2002:7f00:1::1]/cb",  # 6to4 around 127.0.0.1
    "https://[::ffff:169.254.169.254]/cb", "https://[::ffff:127.0.0.1]/cb",  # IPv4-mapped
    "https://[::10.0.0.1]/cb",  # IPv4-compatible
    "https://[64:ff9b::a9fe:a9fe]/cb", "https://[64:ff9b::c0a8:101]/cb",  # NAT64 around private addresses
    "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/cb",  # Teredo around 10.0.0.1
    "https://[fc00::1]/cb", "https://[fd12:3456::1]/cb",  # unique local
    "https://[ff02::1]/cb", "https://[ff0e::1]/cb", "https://224.0.0.1/cb",  # multicast
    "https://[::]/cb", "https://100.64.0.1/cb",  # unspecified, shared address space (CGNAT)
])
def test_a_callbackUrl_to_a_non_public_address_is_a_400_naming_it(onboarding, url):
    before = onboarding.snapshot()
    body = _problem(onboarding.post_webhook({"customerName": "X", "callbackUrl": url}), 400, "callbackUrl")
    assert body["detail"].startswith("callbackUrl must point at a public")
    assert onboarding.snapshot() == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"null", b"\xff\xfe", b'{"customerName": NaN}',
                                 b'{"customerName": "a", "customerName": "b"}', b"[" * 5000,
                                 b'{"customerName": "\\ud800"}',
                                 b'{"customerName": "X", "rules": [{"name": "r", "recipients": ["a@b.example"], '
                                 b'"deviceGroups": ["\\udfff"]}]}'])
def test_malformed_json_is_a_400(onboarding, raw):
    _problem(onboarding.post_webhook(None, raw=raw), 400, "body")


def test_an_oversize_body_is_a_413(onboarding):
    body = json.dumps({"customerName": "X", "externalId": "y" * 70_000}).encode()
    _problem(onboarding.post_webhook(None, raw=body), 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_wrong_content_type_is_a_415(onboarding, content_type):
    _problem(onboarding.post_webhook({"customerName": "X"}, headers={"Content-Type": content_type}), 415)


def test_json_with_a_charset_is_accepted(onboarding):
    response = onboarding.post_webhook({"customerName": "X"},
                                        headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_function_key_is_a_401(onboarding, key):
    before = onboarding.snapshot()
    assert onboarding.post_webhook({"customerName": "X"}, key=key).status_code == 401
    assert onboarding.snapshot() == before


def test_a_missing_signature_is_a_401(onboarding):
    _problem(onboarding.post_webhook({"customerName": "X"}, signed=False), 401, "X-Signature-Timestamp")
    response = onboarding.post_webhook({"customerName": "X"}, signed=False,
                                       headers={"X-Signature-Timestamp": str(int(time.time()))})
    _problem(response, 401, "X-Signature-SHA256")


def test_a_wrong_signature_is_a_401(onboarding):
    response = onboarding.post_webhook({"customerName": "X"},
                                       headers={"X-Signature-SHA256": "sha256=" + "0" * 64})
    _problem(response, 401, "X-Signature-SHA256")


def test_a_signature_of_another_body_is_a_401(onboarding):
    from shared.signing import sign

    now = int(time.time())
    other = sign(onboarding.webhook_secret, b'{"customerName": "Y"}', now)
    response = onboarding.post_webhook({"customerName": "X"},
                                       headers={"X-Signature-SHA256": other, "X-Signature-Timestamp": str(now)})
    _problem(response, 401, "X-Signature-SHA256")


def test_rules_are_validated_and_accepted(onboarding):
    invitation = onboarding.invite(rules=[{"name": "High only", "severities": ["High"],
                                           "recipients": ["soc@mssp.example"], "mode": "digest"}])
    assert invitation["rules"] == 1


def test_concurrent_requests_with_one_externalId_create_one_invitation(onboarding):
    from concurrent.futures import ThreadPoolExecutor

    external = f"crm-{uuid.uuid4()}"
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: onboarding.post_webhook({"customerName": "Race", "externalId": external}),
                                  range(8)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    rows = onboarding.tables().get_table_client("Invitations").query_entities(
        "PartitionKey eq 'invitation' and externalId eq @e", parameters={"e": external})
    assert len(list(rows)) == 1
