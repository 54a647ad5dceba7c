"""Admin consent of the local cloud: the pages, the redirects' exact parameters, and the consent they record."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import jwt
import requests

from local.run.services import LocalCloud
from tests.cloud import DEFENDER_SCOPE, GRAPH, GRAPH_SCOPE, REDIRECT_URI, new_app, new_tenant, request_token


class _Form(HTMLParser):
    """What a browser submits: the form's action, its inputs, and the button clicked."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, tuple[str, str]] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = attributes.get("action", "")
        elif tag == "input":
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "button":
            self.buttons[attributes["id"]] = (attributes["name"], attributes["value"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(cloud: LocalCloud, path: str, **params: str) -> requests.Response:
    return requests.get(f"{cloud.url}{path}", params=params, verify=str(cloud.ca_path), timeout=30,
                        allow_redirects=False)


def _click(cloud: LocalCloud, page: requests.Response, button: str, **typed: str) -> requests.Response:
    form = _Form()
    form.feed(page.text)
    name, value = form.buttons[button]
    data = {**form.fields, **typed, name: value}
    return requests.post(f"{cloud.url}{form.action}", data=data, verify=str(cloud.ca_path), timeout=30,
                         allow_redirects=False)


def _redirect_params(response: requests.Response) -> list[tuple[str, str]]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return parse_qsl(urlsplit(location).query, keep_blank_values=True)


def test_v2_page_names_the_app_and_its_permissions_escaped(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud, displayName="<script>alert(1)</script> & Co")
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI, state="s1")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page.text
    assert "<script>" not in page.text
    assert "Alert.Read.All" in page.text
    assert "http://" not in page.text and "src=" not in page.text


def test_v2_accept_redirects_with_exactly_the_documented_parameters(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['domains'][0]}/v2.0/adminconsent", client_id=app["clientId"],
                 scope=DEFENDER_SCOPE, redirect_uri=REDIRECT_URI, state="xyz 1")
    response = _click(cloud, page, "accept")
    assert _redirect_params(response) == [("admin_consent", "True"), ("tenant", tenant["id"]),
                                          ("scope", DEFENDER_SCOPE), ("state", "xyz 1")]
    assert "scope=https%3A%2F%2Fapi.securitycenter.microsoft.com%2F.default" in response.headers["Location"]


def test_v2_accept_without_state_leaves_state_out(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=GRAPH_SCOPE,
                 redirect_uri=REDIRECT_URI)
    assert [k for k, _ in _redirect_params(_click(cloud, page, "accept"))] == ["admin_consent", "tenant", "scope"]


def test_v2_cancel_redirects_with_aadsts65004(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI, state="s2")
    params = _redirect_params(_click(cloud, page, "cancel"))
    assert [k for k, _ in params] == ["admin_consent", "error", "error_description", "state"]
    values = dict(params)
    assert values["error"] == "consent_required"
    assert values["error_description"].startswith(
        "AADSTS65004: The resource owner or authorization server denied the request.\r\nTrace ID: ")
    assert values["state"] == "s2"


def test_v2_cancel_records_no_consent(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI)
    _click(cloud, page, "cancel")
    assert request_token(cloud, tenant["id"], app["clientId"]).json()["error_codes"] == [700016]


def test_v1_accept_redirects_with_tenant_state_and_admin_consent(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, "/common/adminconsent", client_id=app["clientId"], redirect_uri=REDIRECT_URI, state="v1")
    response = _click(cloud, page, "accept", tenant=tenant["domains"][0])
    assert _redirect_params(response) == [("tenant", tenant["id"]), ("state", "v1"), ("admin_consent", "True")]


def test_v1_cancel_redirects_with_permission_denied_and_no_state(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/adminconsent", client_id=app["clientId"], redirect_uri=REDIRECT_URI,
                 state="v1")
    assert _redirect_params(_click(cloud, page, "cancel")) == [
        ("error", "permission_denied"), ("error_description", "The admin canceled the request")]


def test_organizations_page_asks_which_tenant_and_grants_there(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, "/organizations/v2.0/adminconsent", client_id=app["clientId"], scope=GRAPH_SCOPE,
                 redirect_uri=REDIRECT_URI, state="o")
    assert 'name="tenant"' in page.text
    params = dict(_redirect_params(_click(cloud, page, "accept", tenant=tenant["domains"][0])))
    assert params["tenant"] == tenant["id"]


def test_accepted_consent_lets_the_app_get_tokens_with_its_roles(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI)
    _click(cloud, page, "accept")
    response = request_token(cloud, tenant["id"], app["clientId"])
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["Alert.Read.All"]


def test_script_can_answer_the_page_by_posting_the_form(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    response = requests.post(
        f"{cloud.url}/{tenant['id']}/v2.0/adminconsent", verify=str(cloud.ca_path), timeout=30,
        allow_redirects=False,
        data={"client_id": app["clientId"], "redirect_uri": REDIRECT_URI, "scope": GRAPH_SCOPE, "state": "s",
              "decision": "accept"})
    assert dict(_redirect_params(response))["admin_consent"] == "True"
    consents = cloud.control("GET", f"tenants/{tenant['id']}/consents").json()["consents"]
    assert consents[0]["roles"][GRAPH] == ["Mail.Send", "SecurityAlert.Read.All"]


def test_unknown_client_is_an_error_page_not_a_redirect(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=str(uuid.uuid4()), scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI)
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "AADSTS700016" in page.text


def test_unregistered_redirect_uri_is_an_error_page(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri="https://evil.example/steal")
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "AADSTS50011" in page.text


def test_tenant_without_defender_gets_aadsts650052(cloud: LocalCloud) -> None:
    tenant = new_tenant(cloud, defenderLicensed=False)
    app = new_app(cloud)
    page = _page(cloud, f"/{tenant['id']}/v2.0/adminconsent", client_id=app["clientId"], scope=DEFENDER_SCOPE,
                 redirect_uri=REDIRECT_URI, state="d")
    params = dict(_redirect_params(_click(cloud, page, "accept")))
    assert params["error"] == "invalid_client"
    assert params["error_description"].startswith("AADSTS650052: ")
    assert params["state"] == "d"
    assert request_token(cloud, tenant["id"], app["clientId"]).status_code == 400
