"""OpenID Connect sign-in of the local cloud: `/{tenant}/oauth2/v2.0/authorize` with an id_token by form_post.

The implicit id_token flow as Microsoft documents it
(https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc): GET with client_id,
response_type=id_token, redirect_uri, response_mode=form_post, scope (with `openid`), state, nonce and
optional prompt, login_hint, domain_hint renders a small sign-in page; the page POSTs a form to the same
path, which answers with Entra's form_post page: an auto-submitting `<form method="post">` to
redirect_uri with hidden `id_token` and `state` (or `error`, `error_description`, `state`). Scripts
answer the page without a browser by POSTing the same form:

    the request's parameters (hidden fields), decision=accept|cancel, username (optional; default
    login_hint or admin@<the tenant's first domain>), tenant (only when the path is
    `organizations`/`common`: the GUID or domain the user signs in to)

Refusals: an unknown tenant (AADSTS90002), app (AADSTS700016) or unregistered redirect URI (AADSTS50011)
is an HTML error page, never a post to the redirect URI; so is a response_mode other than form_post, the
only one this local cloud implements. Once client and redirect URI are known good, errors are posted
back: missing nonce or `openid` scope `invalid_request` (AADSTS900144), a response_type other than
id_token `unsupported_response_type`, prompt=none `login_required` (this cloud keeps no sign-in
session), Cancel `access_denied` (AADSTS65004).

The id_token is RS256-signed by the cloud's signing key (kid in the header, published in the JWKS),
`iss` = `<base>/<tid>/v2.0`, `aud` = client_id, one hour long. Its timestamps use real time, as the
access tokens' do (local.cloud.clock): the app checks them against its own clock. `oid`, `name` and
`preferred_username` come only with the `profile` scope, per the ID token claims reference
(https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference). The directory
holds no users: any username signs in, with an `oid` derived from tenant and username (stable across
sign-ins) and a pairwise `sub` per app, as Entra's is. Faults of the `id_token_*` kinds
(local.cloud.faults) damage the issued token.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from local.cloud.consent import PAGE_ONLY_CODES, check_client, error_description, error_page, signing_in_tenant
from local.cloud.directory import MULTI_TENANT_ALIASES, App, Tenant
from local.cloud.entra import EntraError, TokenSigner
from local.cloud.faults import FaultPlan
from local.cloud.state import CloudState

logger = logging.getLogger(__name__)

ID_TOKEN_LIFETIME_SECONDS = 3600
_PARAMS = ("client_id", "response_type", "redirect_uri", "response_mode", "scope", "state", "nonce", "prompt",
           "login_hint", "domain_hint")


@dataclass
class SignInRequest:
    path_tenant: str
    params: dict[str, str]  # the request's parameters that were present, in _PARAMS order
    base_url: str  # this cloud as the client reached it: the issuer's host

    def get(self, name: str) -> str:
        return self.params.get(name, "")


class _NotImplementedHere(Exception):
    """A valid Entra request this local cloud does not implement (shown as a page)."""


class _PostBack(Exception):
    """An error Entra sends to the (trusted) redirect URI rather than showing."""

    def __init__(self, error: str, code: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.code = code
        self.message = message


def _local_limit_page(message: str) -> web.Response:
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title></head>
<body><h1>Sorry, but we're having trouble signing you in.</h1>
<p id="error-message">{html.escape(message)}</p></body></html>"""
    return web.Response(text=page, status=400, content_type="text/html")


def form_post_page(action: str, fields: list[tuple[str, str]]) -> web.Response:
    """Entra's response_mode=form_post page: hidden fields posted to `action` by script, or by a button."""
    e = html.escape
    inputs = "".join(f'<input type="hidden" name="{e(name)}" value="{e(value)}" />' for name, value in fields)
    page = (f'<html><head><title>Working...</title></head><body><form method="POST" name="hiddenform" '
            f'action="{e(action)}">{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>'
            '<input type="submit" value="Submit" /></noscript></form>'
            '<script language="javascript">document.forms[0].submit();</script></body></html>')
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SignInFlow:
    """Validates sign-in requests and issues the id_token on the user's decision."""

    def __init__(self, state: CloudState) -> None:
        self.state = state
        self._foreign_signer: TokenSigner | None = None

    def _check(self, req: SignInRequest) -> App:
        """The app; raises EntraError (shown as a page) or _PostBack (posted to the redirect URI)."""
        app = check_client(self.state.directory, req.path_tenant, req.get("client_id"), req.get("redirect_uri"))
        if req.get("response_mode") != "form_post":
            raise _NotImplementedHere("This local cloud answers sign-in requests with response_mode=form_post "
                                      "only.")
        if req.get("response_type") != "id_token":
            raise _PostBack("unsupported_response_type", 70005,
                            f"response_type '{req.get('response_type')}' is not enabled for the application: "
                            "this local cloud issues id_token only.")
        if "openid" not in req.get("scope").split():
            raise _PostBack("invalid_request", 900144,
                            "The request body must contain the following parameter: 'scope' with 'openid'.")
        if not req.get("nonce"):
            raise _PostBack("invalid_request", 900144,
                            "The request body must contain the following parameter: 'nonce'.")
        if req.get("prompt") == "none":
            raise _PostBack("login_required", 50058,
                            "A silent sign-in request was sent but no user is signed in.")
        return app

    def _refuse(self, req: SignInRequest, exc: Exception) -> web.Response:
        if isinstance(exc, _PostBack):
            return self._post_error(req, exc.error, exc.code, exc.message)
        if isinstance(exc, _NotImplementedHere):
            return _local_limit_page(str(exc))
        assert isinstance(exc, EntraError) and exc.code in PAGE_ONLY_CODES
        return error_page(exc)

    def _post_error(self, req: SignInRequest, error: str, code: int, message: str) -> web.Response:
        fields = [("error", error), ("error_description", error_description(code, message))]
        if req.get("state"):
            fields.append(("state", req.get("state")))
        return form_post_page(req.get("redirect_uri"), fields)

    def render(self, req: SignInRequest) -> web.Response:
        try:
            app = self._check(req)
        except (EntraError, _PostBack, _NotImplementedHere) as exc:
            return self._refuse(req, exc)
        return web.Response(text=self._page(req, app), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    def _page(self, req: SignInRequest, app: App) -> str:
        e = html.escape
        fields = "\n".join(f'<input type="hidden" name="{name}" value="{e(value)}">'
                           for name, value in req.params.items())
        tenant = self.state.directory.resolve(req.path_tenant)
        username = req.get("login_hint") or (self._default_username(tenant) if tenant else "")
        if req.path_tenant.lower() in MULTI_TENANT_ALIASES:
            hint = req.get("domain_hint") or req.get("login_hint").rpartition("@")[2]
            where = ('<p><label for="tenant">Organization you sign in to (domain or tenant ID)</label> '
                     f'<input id="tenant" name="tenant" value="{e(hint)}" required></p>')
        else:
            assert tenant is not None
            where = f'<p id="organization">Organization: {e(tenant.display_name)}</p>'
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:2em auto;color:#222}}
button{{padding:.4em 1.4em;margin-right:.6em}}#accept{{background:#0067b8;color:#fff;border:0}}</style></head>
<body>
<h1>Sign in</h1>
<p>to continue to <span id="app-name">{e(app.display_name)}</span></p>
<form method="post" action="{e(f"/{req.path_tenant}/oauth2/v2.0/authorize")}">
{fields}
{where}
<p><label for="username">Account</label> <input id="username" name="username" value="{e(username)}"></p>
<button type="submit" id="accept" name="decision" value="accept">Sign in</button>
<button type="submit" id="cancel" name="decision" value="cancel" formnovalidate>Cancel</button>
</form>
</body></html>"""

    @staticmethod
    def _default_username(tenant: Tenant) -> str:
        domain = tenant.domains[0] if tenant.domains else f"{tenant.id}.onmicrosoft.com"
        return f"admin@{domain}"

    def decide(self, req: SignInRequest, form: Mapping[str, str]) -> web.Response:
        try:
            app = self._check(req)
        except (EntraError, _PostBack, _NotImplementedHere) as exc:
            return self._refuse(req, exc)
        if form.get("decision") != "accept":
            return self._post_error(req, "access_denied", 65004, "User declined to consent to access the app.")
        tenant = signing_in_tenant(self.state.directory, req.path_tenant, form, app)
        if isinstance(tenant, web.Response):
            return tenant
        username = form.get("username", "").strip() or req.get("login_hint") or self._default_username(tenant)
        plan = self.state.faults.plan(tenant.id, "signin")
        self.state.stats.served(tenant.id, "signin", plan)
        id_token = self._id_token(req, app, tenant, username, plan)
        logger.info("Sign-in of %s for app %s in tenant %s", username, app.client_id, tenant.id)
        fields = [("id_token", id_token)]
        if req.get("state"):
            fields.append(("state", req.get("state")))
        return form_post_page(req.get("redirect_uri"), fields)

    def _id_token(self, req: SignInRequest, app: App, tenant: Tenant, username: str, plan: FaultPlan) -> str:
        issued_at = int(time.time())
        if "id_token_expired" in plan.id_token:
            issued_at -= 2 * ID_TOKEN_LIFETIME_SECONDS
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}/{username.lower()}"))
        issuer_tenant = str(uuid.uuid4()) if "id_token_wrong_issuer" in plan.id_token else tenant.id
        claims: dict[str, Any] = {
            "ver": "2.0",
            "iss": f"{req.base_url}/{issuer_tenant}/v2.0",
            "aud": str(uuid.uuid4()) if "id_token_wrong_audience" in plan.id_token else app.client_id,
            "tid": tenant.id,
            # Pairwise: the same user has a different `sub` in each app.
            "sub": _b64url(hashlib.sha256(f"{app.client_id}/{object_id}".encode()).digest()),
            "nonce": uuid.uuid4().hex if "id_token_wrong_nonce" in plan.id_token else req.get("nonce"),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ID_TOKEN_LIFETIME_SECONDS,
        }
        # Directory roles (`wids`, role template ids) as Entra emits them for an app whose registration asks
        # for DirectoryRole claims: the signing admin is a Global Administrator unless a fault says otherwise.
        claims["wids"] = [DEFAULT_USER_ROLE] if "id_token_not_admin" in plan.id_token else [
            GLOBAL_ADMINISTRATOR, DEFAULT_USER_ROLE]
        if "id_token_guest" in plan.id_token:  # authenticated by another tenant: a guest here
            claims["idp"] = f"https://sts.windows.net/{uuid.uuid4()}/"
        if "profile" in req.get("scope").split():
            claims.update({"oid": object_id, "preferred_username": username,
                           "name": username.partition("@")[0].replace(".", " ").title()})
        signer = self.state.signer
        if "id_token_foreign_key" in plan.id_token:
            # A forgery: another key, under the kid of the published one, so only the signature gives it away.
            if self._foreign_signer is None:
                self._foreign_signer = TokenSigner()
            self._foreign_signer.kid = signer.kid
            signer = self._foreign_signer
        return signer.sign(claims)


GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"  # Entra built-in role template ids
DEFAULT_USER_ROLE = "b79fbf4d-3ef9-4689-8143-76b194e85509"


def _sign_in_request(request: web.Request, values: Mapping[str, str]) -> SignInRequest:
    params = {name: str(values[name]) for name in _PARAMS if name in values}
    return SignInRequest(path_tenant=request.match_info["tenant"], params=params, base_url=f"https://{request.host}")


def add_routes(app: web.Application, state: CloudState) -> None:
    flow = SignInFlow(state)

    async def show(request: web.Request) -> web.Response:
        return flow.render(_sign_in_request(request, request.query))

    async def answer(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        return flow.decide(_sign_in_request(request, form), form)

    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", show)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize", answer)
