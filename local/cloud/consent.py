"""Admin-consent pages of the local cloud: v2.0 `/{tenant}/v2.0/adminconsent` and v1 `/{tenant}/adminconsent`.

GET renders a small self-contained HTML page (app name, permissions, Accept/Cancel); the page POSTs a
form to the same path, which answers 302 to `redirect_uri` with the documented parameters
(docs/MICROSOFT.md, "Admin consent"). Scripts answer the page without a browser by POSTing the same form:

    client_id, redirect_uri, state (optional), scope (v2.0 only), decision=accept|cancel,
    tenant (only when the path is `organizations`/`common`: the GUID or domain the admin signs in to)

Redirects (parameters are form-encoded, `+` for spaces):
- v2.0 accept: `admin_consent=True&tenant=<guid>&scope=<as requested>&state=<state>`
- v2.0 cancel: `admin_consent=True&error=consent_required&error_description=AADSTS65004: The resource
  owner or authorization server denied the request.…&state=<state>` — the shape of the v2.0 admin-consent
  doc's own failure example (ED v2-admin-consent.md), chosen over `access_denied` because that is the
  documented one for this endpoint.
- v1 accept: `tenant=<guid>&state=<state>&admin_consent=True`; v1 cancel:
  `error=permission_denied&error_description=The admin canceled the request` (no state, as documented).
- A tenant without Defender accepting a consent that includes the Defender API:
  `error=invalid_client&error_description=AADSTS650052: …&state=<state>`.
`state` is left out when the request had none. Errors that make the redirect URI untrustworthy
(unknown app: AADSTS700016, unregistered redirect URI: AADSTS50011, unknown tenant: AADSTS90002) are
HTML error pages, never redirects.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from local.cloud.directory import (
    DEFENDER,
    MULTI_TENANT_ALIASES,
    RESOURCE_NAMES,
    App,
    Directory,
    Tenant,
    canonical_resource,
)
from local.cloud.entra import EntraError, app_not_found, tenant_not_found
from local.cloud.state import CloudState

logger = logging.getLogger(__name__)

_OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# Unknown tenant, unknown app, unregistered redirect URI: the redirect URI cannot be trusted.
PAGE_ONLY_CODES = frozenset({90002, 700016, 50011})


@dataclass
class ConsentRequest:
    version: str  # "v2.0" or "v1"
    path_tenant: str
    client_id: str
    redirect_uri: str
    state: str | None
    scope: str | None


def error_description(code: int, message: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return (f"AADSTS{code}: {message}\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: {uuid.uuid4()}\r\n"
            f"Timestamp: {stamp}")


def _to_client(req: ConsentRequest, params: list[tuple[str, str]]) -> web.Response:
    """302 to the registered redirect URI with exactly `params`, in that order."""
    separator = "&" if "?" in req.redirect_uri else "?"
    return web.Response(status=302, headers={"Location": req.redirect_uri + separator + urlencode(params)})


def _redirect(req: ConsentRequest, params: list[tuple[str, str]]) -> web.Response:
    """Redirect with `params` then `state`, when the request had one."""
    return _to_client(req, params + ([("state", req.state)] if req.state is not None else []))


def error_page(error: EntraError, status: int = 400) -> web.Response:
    text = html.escape(str(error))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account</title></head>
<body><h1>Sorry, but we're having trouble signing you in.</h1>
<p id="error-code">AADSTS{error.code}</p><p id="error-message">{text}</p></body></html>"""
    return web.Response(text=page, status=status, content_type="text/html")


def _requested_resources(req: ConsentRequest, app: App) -> set[str] | None:
    """Resources a v2.0 scope names; None means every permission the registration declares."""
    if req.version == "v1":
        return None
    resources: set[str] = set()
    for scope in (req.scope or "").split():
        if scope.lower() in _OIDC_SCOPES:
            continue
        resource_uri, _, permission = scope.rpartition("/")
        if permission == ".default":
            return None
        resource = canonical_resource(resource_uri)
        if resource is None or resource not in app.required_roles:
            raise EntraError(400, "invalid_client", 650057,
                             "Invalid resource. The client has requested access to a resource which isn't "
                             "listed in the requested permissions in the client's application registration. "
                             f"Client app ID: {app.client_id}({app.display_name}). Resource value from "
                             f"request: {resource_uri}.")
        resources.add(resource)
    return resources


def signing_in_tenant(directory: Directory, path_tenant: str, form: Mapping[str, str],
                      app: App) -> Tenant | web.Response:
    """The tenant an admin signs in to (the path's, or the form's for `organizations`/`common`), or the
    error page Entra shows when it is unknown or the app is single-tenant elsewhere."""
    tenant_ref = path_tenant
    if tenant_ref.lower() in MULTI_TENANT_ALIASES:
        tenant_ref = form.get("tenant", "").strip()
    tenant = directory.resolve(tenant_ref) if tenant_ref else None
    if tenant is None:
        return error_page(tenant_not_found(tenant_ref))
    if not app.multi_tenant and tenant.id != app.home_tenant:
        return error_page(app_not_found(app.client_id, tenant.display_name))
    return tenant


def check_client(directory: Directory, path_tenant: str, client_id: str, redirect_uri: str) -> App:
    """The app, once tenant, app and redirect URI are known good; else the EntraError shown as a page.

    Shared by the consent and sign-in pages: until these pass, the redirect URI cannot be trusted.
    """
    if path_tenant.lower() not in MULTI_TENANT_ALIASES and directory.resolve(path_tenant) is None:
        raise tenant_not_found(path_tenant)
    app = directory.apps.get(client_id.lower())
    if app is None:
        raise app_not_found(client_id, path_tenant)
    if redirect_uri not in app.redirect_uris:
        raise EntraError(
            400, "invalid_request", 50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect "
            f"URIs configured for the application '{app.client_id}'. Make sure the redirect URI sent in "
            "the request matches one added to your application in the Azure portal. Navigate to "
            "https://aka.ms/redirectUriMismatchError to learn more about how to fix this.")
    return app


class ConsentFlow:
    """Validates admin-consent requests and carries out the admin's decision."""

    def __init__(self, state: CloudState) -> None:
        self.state = state

    def _validate(self, req: ConsentRequest) -> App:
        return check_client(self.state.directory, req.path_tenant, req.client_id, req.redirect_uri)

    def _check_request(self, req: ConsentRequest) -> tuple[App, set[str] | None]:
        """The app and the resources asked for; EntraError for a request Entra would refuse."""
        app = self._validate(req)
        if req.version == "v2.0" and not (req.scope or "").strip():
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        return app, _requested_resources(req, app)

    def _refuse(self, req: ConsentRequest, error: EntraError) -> web.Response:
        # Only once client and redirect URI are known good may an error travel back by redirect.
        if error.code in PAGE_ONLY_CODES:
            return error_page(error)
        return _redirect(req, [("error", error.error), ("error_description", error_description(error.code,
                                                                                        error.message))])

    def render(self, req: ConsentRequest) -> web.Response:
        try:
            app, resources = self._check_request(req)
        except EntraError as exc:
            return self._refuse(req, exc)
        return web.Response(text=self._page(req, app, resources), content_type="text/html")

    def _page(self, req: ConsentRequest, app: App, resources: set[str] | None) -> str:
        e = html.escape
        wanted = app.required_roles if resources is None else {r: app.required_roles[r] for r in resources}
        items = "\n".join(
            f"<li>{e(RESOURCE_NAMES.get(res, res))}: {e(role)} (application permission)</li>"
            for res, roles in sorted(wanted.items()) for role in roles) or "<li>No permissions</li>"
        hidden = [("client_id", req.client_id), ("redirect_uri", req.redirect_uri)]
        if req.state is not None:
            hidden.append(("state", req.state))
        if req.scope is not None:
            hidden.append(("scope", req.scope))
        fields = "\n".join(f'<input type="hidden" name="{name}" value="{e(value)}">' for name, value in hidden)
        tenant = self.state.directory.resolve(req.path_tenant)
        tenant_field = f'<p id="organization">Organization: {e(tenant.display_name)}</p>' if tenant else ""
        if req.path_tenant.lower() in MULTI_TENANT_ALIASES:
            tenant_field = ('<p><label for="tenant">Organization you sign in to (domain or tenant ID)</label> '
                            '<input id="tenant" name="tenant" required></p>')
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Permissions requested</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:2em auto;color:#222}}
button{{padding:.4em 1.4em;margin-right:.6em}}#accept{{background:#0067b8;color:#fff;border:0}}</style></head>
<body>
<h1>Permissions requested</h1>
<p id="app-name">{e(app.display_name)}</p>
<p>This app would like to:</p>
<ul id="permissions">
{items}
</ul>
<p>Accepting grants these permissions to the app for your whole organization.</p>
<form method="post" action="{e(_path(req))}">
{fields}
{tenant_field}
<button type="submit" id="accept" name="decision" value="accept">Accept</button>
<button type="submit" id="cancel" name="decision" value="cancel" formnovalidate>Cancel</button>
</form>
</body></html>"""

    def decide(self, req: ConsentRequest, form: Mapping[str, str]) -> web.Response:
        try:
            app, resources = self._check_request(req)
        except EntraError as exc:
            return self._refuse(req, exc)
        if form.get("decision") != "accept":
            return self._cancelled(req)
        tenant = signing_in_tenant(self.state.directory, req.path_tenant, form, app)
        if isinstance(tenant, web.Response):
            return tenant
        wanted = set(app.required_roles) if resources is None else resources
        if DEFENDER in wanted and not tenant.defender_licensed:
            logger.info("Consent for app %s refused in tenant %s: no Defender", app.client_id, tenant.id)
            return _redirect(req, [("error", "invalid_client"), ("error_description", error_description(
                650052, f'The app needs access to a service ("{DEFENDER}") that your organization '
                        f'"{tenant.id}" has not subscribed to or enabled. Contact your IT Admin to review the '
                        "configuration of your service subscriptions."))])
        self.state.directory.grant(tenant, app, resources, self.state.clock.now())
        if req.version == "v1":
            state = [("state", req.state)] if req.state is not None else []
            return _to_client(req, [("tenant", tenant.id), *state, ("admin_consent", "True")])
        return _redirect(req, [("admin_consent", "True"), ("tenant", tenant.id), ("scope", req.scope or "")])

    @staticmethod
    def _cancelled(req: ConsentRequest) -> web.Response:
        if req.version == "v1":
            return _to_client(req, [("error", "permission_denied"),
                                    ("error_description", "The admin canceled the request")])
        return _redirect(req, [
            ("admin_consent", "True"), ("error", "consent_required"),
            ("error_description", error_description(65004, "The resource owner or authorization server denied "
                                                      "the request."))])


def _path(req: ConsentRequest) -> str:
    if req.version == "v1":
        return f"/{req.path_tenant}/adminconsent"
    return f"/{req.path_tenant}/v2.0/adminconsent"


def _consent_request(version: str, request: web.Request, values: Mapping[str, str]) -> ConsentRequest:
    state = values.get("state")
    return ConsentRequest(
        version=version,
        path_tenant=request.match_info["tenant"],
        client_id=values.get("client_id", ""),
        redirect_uri=values.get("redirect_uri", ""),
        state=state if state else None,
        scope=values.get("scope") if version == "v2.0" else None,
    )


def add_routes(app: web.Application, state: CloudState) -> None:
    flow = ConsentFlow(state)

    def handlers(version: str) -> tuple:
        async def show(request: web.Request) -> web.Response:
            return flow.render(_consent_request(version, request, request.query))

        async def answer(request: web.Request) -> web.Response:
            form = {k: str(v) for k, v in (await request.post()).items()}
            return flow.decide(_consent_request(version, request, form), form)

        return show, answer

    for version, path in (("v2.0", "/{tenant}/v2.0/adminconsent"), ("v1", "/{tenant}/adminconsent")):
        show, answer = handlers(version)
        app.router.add_get(path, show)
        app.router.add_post(path, answer)

