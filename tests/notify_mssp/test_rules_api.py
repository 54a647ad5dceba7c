"""The notification rules API on the local host running the real app: CRUD with clear problem+json errors
(400/404/409/412/413/415, 401 without a key, never a 5xx on bad input), and the test e-mail landing in
MailDev like Defender's "Send test email"."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import requests

from local.run.stack import LocalStack

ROUTE = "api/notification-rules"


class Api:
    def __init__(self, stack: LocalStack) -> None:
        assert stack.host is not None
        self.url = f"{stack.host.url}/{ROUTE}"
        self.key = stack.host.function_key

    def call(self, method: str, path: str = "", *, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None, key: bool = True) -> requests.Response:
        sent = {"Content-Type": "application/json"}
        if key:
            sent["x-functions-key"] = self.key
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return requests.request(method, self.url + path, data=data, headers=sent, timeout=30)

    def create(self, **fields: Any) -> dict[str, Any]:
        body = {"name": f"rule {uuid.uuid4().hex[:8]}", "recipients": [recipient()], **fields}
        response = self.call("POST", body=body)
        assert response.status_code == 201, response.text
        return response.json()


def recipient() -> str:
    return f"soc-{uuid.uuid4().hex[:12]}@mssp.example"


@pytest.fixture
def api(notify_stack: LocalStack) -> Api:
    return Api(notify_stack)


def assert_problem(response: requests.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


# --- CRUD ---------------------------------------------------------------------------------------------------


def test_a_created_rule_gets_an_id_defaults_an_etag_and_a_location(api):
    response = api.call("POST", body={"name": "SOC", "recipients": ["soc@mssp.example"]})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert response.headers["Location"] == f"/{ROUTE}/{body['id']}" and response.headers["ETag"]
    assert body["scope"] == {"tenants": "all", "excludeTenants": []}
    assert body["severities"] == ["Informational", "Low", "Medium", "High"]
    assert (body["deviceGroups"], body["mode"], body["enabled"], body["notifyOnSeverityRise"]) == \
        ("all", "per-alert", True, False)


def test_a_rule_reads_back_as_it_was_created(api):
    tenant = str(uuid.uuid4())
    created = api.create(scope={"tenants": [tenant]}, severities=["High"], deviceGroups=["Servers"], mode="digest",
                         includeDeviceInformation=False, notifyOnSeverityRise=True)
    response = api.call("GET", f"/{created['id']}")
    assert response.status_code == 200 and response.json() == created


def test_the_list_holds_created_rules_and_filters_by_tenant(api):
    tenant = str(uuid.uuid4())
    mine = api.create(scope={"tenants": [tenant]})
    wide_but_excluded = api.create(scope={"tenants": "all", "excludeTenants": [tenant]})
    listed = {r["id"] for r in api.call("GET").json()["value"]}
    assert {mine["id"], wide_but_excluded["id"]} <= listed
    for_tenant = {r["id"] for r in api.call("GET", f"?tenantId={tenant}").json()["value"]}
    assert mine["id"] in for_tenant and wide_but_excluded["id"] not in for_tenant


def test_put_replaces_the_rule(api):
    created = api.create(severities=["High"])
    replaced = {**created, "severities": ["Low"], "recipients": ["other@mssp.example"]}
    response = api.call("PUT", f"/{created['id']}", body=replaced)
    assert response.status_code == 200
    assert api.call("GET", f"/{created['id']}").json()["severities"] == ["Low"]


def test_patch_changes_only_the_given_fields(api):
    created = api.create(severities=["High"])
    response = api.call("PATCH", f"/{created['id']}", body={"enabled": False})
    assert response.status_code == 200
    assert response.json() == {**created, "enabled": False}


def test_a_change_with_a_stale_etag_is_refused_with_412(api):
    created = api.call("POST", body={"name": "etag", "recipients": [recipient()]})
    etag = created.headers["ETag"]
    rule_id = created.json()["id"]
    assert api.call("PATCH", f"/{rule_id}", body={"enabled": False}, headers={"If-Match": etag}).status_code == 200
    assert_problem(api.call("PATCH", f"/{rule_id}", body={"enabled": True}, headers={"If-Match": etag}), 412,
                   "If-Match")


def test_a_deleted_rule_is_gone(api):
    created = api.create()
    assert api.call("DELETE", f"/{created['id']}").status_code == 204
    assert_problem(api.call("GET", f"/{created['id']}"), 404, "ruleId")
    assert_problem(api.call("DELETE", f"/{created['id']}"), 404, "ruleId")


# --- errors -------------------------------------------------------------------------------------------------


def test_every_operation_needs_the_function_key(api):
    assert api.call("GET", key=False).status_code == 401
    assert api.call("POST", body={"name": "x", "recipients": [recipient()]}, key=False).status_code == 401


@pytest.mark.parametrize(("body", "field"), [
    ({"recipients": ["soc@mssp.example"]}, "name"),
    ({"name": "x"}, "recipients"),
    ({"name": "x", "recipients": ["not-an-address"]}, "recipients"),
    ({"name": "x", "recipients": ["a@mssp.example"], "severities": ["Severe"]}, "severities"),
    ({"name": "x", "recipients": ["a@mssp.example"], "deviceGroups": "some"}, "deviceGroups"),
    ({"name": "x", "recipients": ["a@mssp.example"], "scope": {"tenants": ["contoso"]}}, "scope.tenants"),
    ({"name": "x", "recipients": ["a@mssp.example"], "scope": {"tenant": "all"}}, "scope"),
    ({"name": "x", "recipients": ["a@mssp.example"], "mode": "hourly"}, "mode"),
    ({"name": "x", "recipients": ["a@mssp.example"], "enabled": "true"}, "enabled"),
    ({"name": "x", "recipients": ["a@mssp.example"], "id": "0" * 32}, "id"),
    ({"name": "x", "recipients": ["a@mssp.example"], "owner": "me"}, "owner"),
    ({"name": "bad\u202ename", "recipients": ["a@mssp.example"]}, "name"),
])
def test_an_invalid_rule_is_refused_with_400_naming_the_field(api, body, field):
    assert_problem(api.call("POST", body=body), 400, field)


def test_a_body_that_is_not_json_is_400(api):
    assert_problem(api.call("POST", raw=b"{not json"), 400, "body")
    assert_problem(api.call("POST", raw=b"[1, 2]"), 400, "body")


def test_a_body_that_is_not_declared_json_is_415(api):
    assert_problem(api.call("POST", body={"name": "x"}, headers={"Content-Type": "text/plain"}), 415,
                   "Content-Type")


def test_a_body_too_large_is_413(api):
    assert_problem(api.call("POST", raw=b" " * (65 * 1024)), 413)


def test_an_unknown_or_malformed_rule_id_is_404(api):
    assert_problem(api.call("GET", "/" + "a" * 32), 404, "ruleId")
    assert_problem(api.call("GET", "/..%2F..%2Fetc"), 404)
    assert_problem(api.call("POST", "/" + "b" * 32 + "/test"), 404, "ruleId")


def test_a_second_rule_with_the_same_name_and_scope_is_409(api):
    tenant = str(uuid.uuid4())
    first = api.create(name="Duplicate me", scope={"tenants": [tenant]})
    assert_problem(api.call("POST", body={"name": "duplicate ME", "recipients": [recipient()],
                                          "scope": {"tenants": [tenant]}}), 409, "name")
    other_scope = api.call("POST", body={"name": "Duplicate me", "recipients": [recipient()]})
    assert other_scope.status_code == 201 and other_scope.json()["id"] != first["id"]


@pytest.mark.parametrize("raw", [b"null", b"{}", b'{"name": null}', b'{"name": "x", "recipients": {"a": 1}}',
                                 b'{"name": "x", "name": "y"}', b'{"name": NaN}', b'{"name": "\\ud800"}',
                                 b"\xff\xfe", b'{"scope": [], "name": "x", "recipients": ["a@b.example"]}',
                                 b'{"name": "x", "recipients": ["a@b.example"], "severities": [[]]}'])
def test_hostile_bodies_never_cause_a_server_error(api, raw):
    created = api.create()
    for method, path in (("POST", ""), ("PUT", f"/{created['id']}"), ("PATCH", f"/{created['id']}")):
        response = api.call(method, path, raw=raw)
        assert 400 <= response.status_code < 500, (method, raw, response.text)


# --- the test e-mail --------------------------------------------------------------------------------------------


def test_the_test_email_lands_in_maildev_with_subject_tenant_link_and_text_part(api, world):
    tenant = world.tenant("Fabrikam, Inc.")
    address = recipient()
    created = api.create(scope={"tenants": [tenant]}, severities=["Medium", "High"], recipients=[address],
                         enabled=False)
    response = api.call("POST", f"/{created['id']}/test")
    assert response.status_code == 200, response.text
    assert response.json()["results"][0] == {"recipient": address, "status": "sent",
                                             "detail": response.json()["results"][0]["detail"], "retry_after": None}
    (mail,) = world.emails_to(address)
    assert mail["subject"].startswith("[Test] Fabrikam, Inc.: High-severity alert: TEST ALERT (not real)")
    assert "Severity: High" in mail["text"] and "<script" not in mail["html"]
    assert mail["headers"]["auto-submitted"] == "auto-generated"


def test_the_test_email_is_about_an_obviously_made_up_alert_and_links_to_the_tenants_alert_list(api, world):
    tenant = world.tenant("Fabrikam, Inc.")
    address = recipient()
    created = api.create(scope={"tenants": [tenant]}, recipients=[address])
    assert api.call("POST", f"/{created['id']}/test").status_code == 200
    (mail,) = world.emails_to(address)
    assert "not real" in mail["subject"] and "not a real alert" in mail["text"]
    assert "Alert id: test-alert-00000000-sample-not-real" in mail["text"]
    assert mail["headers"]["x-mssp-alert-id"] == "test-alert-00000000-sample-not-real"
    # The sample alert has no page: the link opens the tenant's alert list, and no link names an alert.
    alert_list = f"https://security.microsoft.com/alerts?tid={tenant}"
    assert f'href="{alert_list}"' in mail["html"] and f"Open the alert list in Microsoft Defender: {alert_list}" \
        in mail["text"]
    assert "/alerts/" not in mail["html"] + mail["text"]


def test_the_test_email_of_a_rule_without_tenant_links_to_the_alert_list_without_a_tenant(api, world):
    address = recipient()
    # Excludes every tenant the stack knows, so no tenant is in scope.
    known = [row["RowKey"] for row in world.table("Tenants").query_entities("PartitionKey eq 'tenant'")]
    created = api.create(scope={"tenants": "all", "excludeTenants": known}, recipients=[address])
    assert api.call("POST", f"/{created['id']}/test").status_code == 200
    (mail,) = world.emails_to(address)
    assert "Open the alert list in Microsoft Defender: https://security.microsoft.com/alerts\n" in mail["text"]
    assert "tid=" not in mail["html"] + mail["text"] and "00000000-0000" not in mail["text"]


def test_a_mailbox_listed_twice_in_other_case_is_kept_once_with_its_first_spelling(api, world):
    local = f"soc-{uuid.uuid4().hex[:12]}"
    first, again, other = f"{local.upper()}@Mssp.example", f"{local}@mssp.example", recipient()
    created = api.create(recipients=[first, other, again])
    assert created["recipients"] == [first, other]
    assert api.call("GET", f"/{created['id']}").json()["recipients"] == [first, other]
    patched = api.call("PATCH", f"/{created['id']}", body={"recipients": [again, first]})
    assert patched.status_code == 200 and patched.json()["recipients"] == [again]
    assert api.call("POST", f"/{created['id']}/test").status_code == 200
    assert len(world.emails_to(first)) == 1


def test_the_test_email_goes_to_every_recipient(api, world):
    addresses = [recipient(), recipient()]
    created = api.create(recipients=addresses)
    assert api.call("POST", f"/{created['id']}/test").status_code == 200
    assert all(len(world.emails_to(a)) == 1 for a in addresses)


def test_the_demo_rules_install_through_the_api_once(notify_stack, api):
    from local.run.demo_rules import DEMO_RULES, install_demo_rules

    ids = install_demo_rules(notify_stack)
    assert len(ids) == len(DEMO_RULES) == 3
    rules = {r["id"]: r for r in api.call("GET").json()["value"]}
    assert {rules[i]["mode"] for i in ids} == {"per-alert", "digest"}
    assert any(rules[i]["deviceGroups"] != "all" for i in ids)
    assert install_demo_rules(notify_stack) == []
