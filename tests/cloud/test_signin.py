"""OpenID Connect sign-in of the local cloud: the page, Entra's form_post answer, the id_token, refusals, faults."""

from __future__ import annotations

import time
import uuid
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import requests

from local.run.onboarding import FormPost, OnboardingError, sign_in
from local.run.services import LocalCloud
from tests.cloud import REDIRECT_URI, call, new_app, new_tenant

NONCE = "n-0S6_WzA2Mj"


def _url(cloud: LocalCloud, tenant: str, client_id: str, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "client_id": client_id, "response_type": "id_token", "redirect_uri": REDIRECT_URI,
        "response_mode": "form_post", "scope": "openid profile", "state": "st 1", "nonce": NONCE, **overrides}
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{cloud.url}/{tenant}/oauth2/v2.0/authorize?{query}"


def _sign_in(cloud: LocalCloud, url: str, **kwargs: Any) -> FormPost:
    return sign_in(url, verify=str(cloud.ca_path), **kwargs)


def _get(cloud: LocalCloud, url: str) -> requests.Response:
    return requests.get(url, verify=str(cloud.ca_path), timeout=30, allow_redirects=False)


def _verified(cloud: LocalCloud, token: str, client_id: str) -> dict[str, Any]:
    """The token's claims, checked against the JWKS published at /common (what an app fetches)."""
    keys = call(cloud, "GET", "/common/discovery/v2.0/keys").json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=client_id)


@pytest.fixture
def tenant(cloud: LocalCloud) -> dict[str, Any]:
    return new_tenant(cloud, displayName="Contoso <Ltd> & Co")


@pytest.fixture
def app(cloud: LocalCloud) -> dict[str, Any]:
    return new_app(cloud, displayName="MSSP <alerts>")


def test_page_names_app_and_tenant_escaped_and_carries_the_request(cloud: LocalCloud, tenant: dict,
                                                                   app: dict) -> None:
    page = _get(cloud, _url(cloud, tenant["id"], app["clientId"], login_hint="jo@contoso.example"))
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "MSSP &lt;alerts&gt;" in page.text and "Contoso &lt;Ltd&gt; &amp; Co" in page.text
    assert "<alerts>" not in page.text
    assert f'name="nonce" value="{NONCE}"' in page.text
    assert 'name="state" value="st 1"' in page.text
    assert 'id="username" name="username" value="jo@contoso.example"' in page.text
    assert 'name="tenant"' not in page.text  # the path names the tenant


def test_accept_answers_entras_form_post_page(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    page = _get(cloud, _url(cloud, tenant["domains"][0], app["clientId"]))
    response = requests.post(f"{cloud.url}/{tenant['domains'][0]}/oauth2/v2.0/authorize",
                             data={**dict(_hidden(page.text)), "decision": "accept"},
                             verify=str(cloud.ca_path), timeout=30, allow_redirects=False)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    text = response.text
    assert f'<form method="POST" name="hiddenform" action="{REDIRECT_URI}">' in text
    assert '<input type="hidden" name="id_token" value="' in text
    assert text.index('name="id_token"') < text.index('name="state" value="st 1"')
    assert "document.forms[0].submit();" in text
    assert text.count('type="hidden"') == 2


def _hidden(text: str) -> list[tuple[str, str]]:
    """The hidden inputs of a page, in order: what its form submits besides what the user types."""
    fields: list[tuple[str, str]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "input" and a.get("type") == "hidden":
                fields.append((a["name"], a.get("value", "")))

    Parser().feed(text)
    return fields


def test_id_token_claims_and_signature(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    before = int(time.time())
    post = _sign_in(cloud, _url(cloud, tenant["domains"][0], app["clientId"]), username="jo.smith@contoso.example")
    assert post.action == REDIRECT_URI
    assert set(post.fields) == {"id_token", "state"} and post.fields["state"] == "st 1"
    token = post.fields["id_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    tenant_keys = call(cloud, "GET", f"/{tenant['id']}/discovery/v2.0/keys").json()["keys"]
    assert header["kid"] in {k["kid"] for k in tenant_keys}
    claims = _verified(cloud, token, app["clientId"])
    assert claims["ver"] == "2.0"
    assert claims["iss"] == f"{cloud.url}/{tenant['id']}/v2.0"
    assert claims["aud"] == app["clientId"]
    assert claims["tid"] == tenant["id"]
    assert claims["nonce"] == NONCE
    assert claims["preferred_username"] == "jo.smith@contoso.example"
    assert claims["name"] == "Jo Smith"
    assert str(uuid.UUID(claims["oid"])) == claims["oid"]
    assert before - 5 <= claims["iat"] == claims["nbf"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == 3600
    # The same user has the same oid at each sign-in, and a different (pairwise) sub in another app.
    again = _verified(cloud, _sign_in(cloud, _url(cloud, tenant["id"], app["clientId"]),
                                      username="jo.smith@contoso.example").fields["id_token"], app["clientId"])
    assert (again["oid"], again["sub"]) == (claims["oid"], claims["sub"])
    other_app = new_app(cloud)
    other = _verified(cloud, _sign_in(cloud, _url(cloud, tenant["id"], other_app["clientId"]),
                                      username="jo.smith@contoso.example").fields["id_token"], other_app["clientId"])
    assert other["oid"] == claims["oid"] and other["sub"] != claims["sub"]


def test_without_profile_scope_no_profile_claims_and_no_state_without_state(cloud: LocalCloud, tenant: dict,
                                                                            app: dict) -> None:
    post = _sign_in(cloud, _url(cloud, tenant["id"], app["clientId"], scope="openid", state=None))
    assert set(post.fields) == {"id_token"}
    claims = _verified(cloud, post.fields["id_token"], app["clientId"])
    assert not {"oid", "name", "preferred_username"} & set(claims)


@pytest.mark.parametrize("alias", ["organizations", "common"])
def test_multi_tenant_path_signs_in_to_the_tenant_typed(cloud: LocalCloud, tenant: dict, app: dict,
                                                         alias: str) -> None:
    url = _url(cloud, alias, app["clientId"], domain_hint=tenant["domains"][0])
    page = _get(cloud, url)
    assert f'id="tenant" name="tenant" value="{tenant["domains"][0]}" required' in page.text
    claims = _verified(cloud, _sign_in(cloud, url, tenant=tenant["domains"][0]).fields["id_token"], app["clientId"])
    assert claims["tid"] == tenant["id"]
    metadata = call(cloud, "GET", f"/{alias}/v2.0/.well-known/openid-configuration").json()
    assert metadata["authorization_endpoint"] == f"{cloud.url}/{alias}/oauth2/v2.0/authorize"
    assert metadata["issuer"].replace("{tenantid}", claims["tid"]) == claims["iss"]
    assert call(cloud, "GET", metadata["jwks_uri"].removeprefix(cloud.url)).json()["keys"]


def test_tenant_metadata_names_authorize_endpoint_and_issuer(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    metadata = call(cloud, "GET", f"/{tenant['id']}/v2.0/.well-known/openid-configuration").json()
    assert metadata["authorization_endpoint"] == f"{cloud.url}/{tenant['id']}/oauth2/v2.0/authorize"
    assert "form_post" in metadata["response_modes_supported"] and "id_token" in metadata["response_types_supported"]
    claims = jwt.decode(_sign_in(cloud, _url(cloud, tenant["id"], app["clientId"])).fields["id_token"],
                        options={"verify_signature": False})
    assert claims["iss"] == metadata["issuer"]


@pytest.mark.parametrize(("path_tenant", "client_id", "redirect_uri", "code"), [
    ("{tenant}", "{unknown}", REDIRECT_URI, "AADSTS700016"),
    ("{tenant}", "{app}", "https://evil.example/callback", "AADSTS50011"),
    ("{unknown}", "{app}", REDIRECT_URI, "AADSTS90002"),
    ("nowhere.example", "{app}", REDIRECT_URI, "AADSTS90002"),
])
def test_untrusted_requests_get_an_error_page_never_a_post(cloud: LocalCloud, tenant: dict, app: dict,
                                                           path_tenant: str, client_id: str, redirect_uri: str,
                                                           code: str) -> None:
    fill = {"{tenant}": tenant["id"], "{app}": app["clientId"], "{unknown}": str(uuid.uuid4())}
    url = _url(cloud, fill.get(path_tenant, path_tenant), fill[client_id], redirect_uri=redirect_uri)
    page = _get(cloud, url)
    assert page.status_code == 400
    assert f'<p id="error-code">{code}</p>' in page.text
    assert "<form" not in page.text
    with pytest.raises(OnboardingError, match=code):
        _sign_in(cloud, url)


def test_unknown_tenant_typed_on_organizations_page_is_an_error_page(cloud: LocalCloud, app: dict) -> None:
    with pytest.raises(OnboardingError, match="AADSTS90002"):
        _sign_in(cloud, _url(cloud, "organizations", app["clientId"]), tenant="nowhere.example")


def test_single_tenant_app_cannot_sign_in_another_tenant(cloud: LocalCloud, tenant: dict) -> None:
    home = new_tenant(cloud)
    single = new_app(cloud, multiTenant=False, homeTenant=home["id"])
    with pytest.raises(OnboardingError, match="AADSTS700016"):
        _sign_in(cloud, _url(cloud, "organizations", single["clientId"]), tenant=tenant["id"])
    assert "id_token" in _sign_in(cloud, _url(cloud, home["id"], single["clientId"])).fields


def test_response_mode_other_than_form_post_is_a_page(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    page = _get(cloud, _url(cloud, tenant["id"], app["clientId"], response_mode="fragment"))
    assert page.status_code == 400 and "form_post only" in page.text and "<form" not in page.text


@pytest.mark.parametrize(("overrides", "error", "code"), [
    ({"nonce": None}, "invalid_request", "AADSTS900144"),
    ({"scope": "profile"}, "invalid_request", "AADSTS900144"),
    ({"response_type": "code"}, "unsupported_response_type", "AADSTS70005"),
    ({"prompt": "none"}, "login_required", "AADSTS50058"),
])
def test_bad_requests_post_the_error_back(cloud: LocalCloud, tenant: dict, app: dict, overrides: dict,
                                          error: str, code: str) -> None:
    page = _get(cloud, _url(cloud, tenant["id"], app["clientId"], **overrides))
    assert page.status_code == 200
    assert [name for name, _ in _hidden(page.text)] == ["error", "error_description", "state"]
    post = _sign_in(cloud, _url(cloud, tenant["id"], app["clientId"], **overrides))
    assert post.action == REDIRECT_URI
    assert post.fields["error"] == error
    assert post.fields["error_description"].startswith(f"{code}: ")
    assert post.fields["state"] == "st 1"


def test_cancel_posts_access_denied_with_state(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    post = _sign_in(cloud, _url(cloud, tenant["id"], app["clientId"]), decision="cancel")
    assert list(post.fields) == ["error", "error_description", "state"]
    assert post.fields["error"] == "access_denied"
    assert post.fields["error_description"].startswith("AADSTS65004: ")
    assert post.fields["state"] == "st 1"


def _fault(cloud: LocalCloud, tenant_id: str, kind: str) -> None:
    response = cloud.control("POST", f"tenants/{tenant_id}/faults", json={"kind": kind, "count": 1})
    assert response.status_code == 201


def test_id_token_faults_damage_one_token_each(cloud: LocalCloud, tenant: dict, app: dict) -> None:
    url = _url(cloud, tenant["id"], app["clientId"])

    def token() -> str:
        return _sign_in(cloud, url).fields["id_token"]

    _fault(cloud, tenant["id"], "id_token_foreign_key")
    forged = token()
    published = {k["kid"] for k in call(cloud, "GET", "/common/discovery/v2.0/keys").json()["keys"]}
    assert jwt.get_unverified_header(forged)["kid"] in published
    with pytest.raises(jwt.InvalidSignatureError):
        _verified(cloud, forged, app["clientId"])

    _fault(cloud, tenant["id"], "id_token_wrong_audience")
    with pytest.raises(jwt.InvalidAudienceError):
        _verified(cloud, token(), app["clientId"])

    _fault(cloud, tenant["id"], "id_token_expired")
    with pytest.raises(jwt.ExpiredSignatureError):
        _verified(cloud, token(), app["clientId"])

    _fault(cloud, tenant["id"], "id_token_wrong_nonce")
    assert _verified(cloud, token(), app["clientId"])["nonce"] != NONCE

    _fault(cloud, tenant["id"], "id_token_wrong_issuer")
    claims = _verified(cloud, token(), app["clientId"])
    assert claims["tid"] == tenant["id"] and claims["iss"] != f"{cloud.url}/{tenant['id']}/v2.0"
    assert claims["iss"].startswith(cloud.url + "/") and claims["iss"].endswith("/v2.0")

    # Each fault was for one sign-in only; the next token is sound.
    assert _verified(cloud, token(), app["clientId"])["nonce"] == NONCE
    served = cloud.control("GET", "stats").json()["faultsServed"][tenant["id"]]
    assert served == {"id_token_foreign_key": 1, "id_token_wrong_audience": 1, "id_token_expired": 1,
                      "id_token_wrong_nonce": 1, "id_token_wrong_issuer": 1}


def test_id_token_faults_apply_to_sign_in_only(cloud: LocalCloud, tenant: dict) -> None:
    response = requests.post(f"{cloud.url}/control/tenants/{tenant['id']}/faults",
                             json={"kind": "id_token_expired", "api": "token"}, verify=str(cloud.ca_path),
                             timeout=30)
    assert response.status_code == 400
    assert "signin" in response.json()["error"]
