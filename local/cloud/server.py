"""The local Microsoft cloud's HTTPS server: Entra, Graph, Defender and the control API on one aiohttp app.

Entra routes live here (OpenID metadata, JWKS, the v2.0 token endpoint); consent pages, the OpenID
Connect sign-in (local.cloud.signin), the APIs and the control API add their own routes. The server's
base URL is taken from each request's Host header, so metadata, assertion audiences and id_token
issuers match whatever address the client used.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from local.cloud import apis, consent, control, signin
from local.cloud.directory import MULTI_TENANT_ALIASES
from local.cloud.entra import (
    EntraError,
    TokenRequest,
    assertion_audiences,
    issue_token,
    openid_configuration,
    tenant_not_found,
    v1_token_body,
)
from local.cloud.responses import before_handler, damage_body, entra_error, json_response
from local.cloud.state import CloudState
from local.cloud.tls import server_ssl_context

logger = logging.getLogger(__name__)


def _base_url(request: web.Request) -> str:
    return f"https://{request.host}"


def _add_entra_routes(app: web.Application, state: CloudState) -> None:
    directory = state.directory

    async def metadata(request: web.Request) -> web.Response:
        ref = request.match_info["tenant"]
        if ref.lower() in MULTI_TENANT_ALIASES:
            # As Entra does: endpoints under the alias, the issuer templated with {tenantid}.
            body = openid_configuration(_base_url(request), ref.lower())
            body["issuer"] = f"{_base_url(request)}/{{tenantid}}/v2.0"
            return json_response(body)
        tenant = directory.resolve(ref)
        if tenant is None:
            return entra_error(tenant_not_found(ref))
        return json_response(openid_configuration(_base_url(request), tenant.id))

    async def keys(request: web.Request) -> web.Response:
        return json_response(state.signer.jwks())

    async def token(request: web.Request) -> web.Response:
        return await _token(request, v1=False)

    async def token_v1(request: web.Request) -> web.Response:
        return await _token(request, v1=True)

    async def _token(request: web.Request, *, v1: bool) -> web.Response:
        ref = request.match_info["tenant"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        if v1:
            # The v1 endpoint names one resource where v2.0 names `{resource}/.default`
            # (docs/MICROSOFT.md, "API tokens, limits and errors").
            form["scope"] = f"{form.pop('resource', '').rstrip('/')}/.default" if form.get("resource") else ""
        tenant = directory.resolve(ref)
        if tenant is None:
            return entra_error(tenant_not_found(ref))
        state.stats.token_request(tenant.id, form.get("client_id", "").lower())
        plan = state.faults.plan(tenant.id, "token")
        state.stats.served(tenant.id, "token", plan)
        replaced = await before_handler(plan, "token", request)
        if replaced is not None:
            return replaced
        token_request = TokenRequest(
            tenant=tenant, form=form, authorization=request.headers.get("Authorization"),
            endpoint_urls=assertion_audiences(_base_url(request), tenant, ref))
        try:
            issued = issue_token(
                directory, state.signer, token_request, now=state.clock.now(),
                lifetime_seconds=state.token_lifetime_seconds,
                consent_revoked=plan.consent_revoked, roles_removed=plan.permission_removed)
        except EntraError as exc:
            logger.info("Token refused for tenant %s: AADSTS%s", tenant.id, exc.code)
            return entra_error(exc)
        state.stats.token_issued(tenant.id, issued.client_id)
        body = v1_token_body(issued) if v1 else issued.body
        return damage_body(plan, json_response(body, headers={"Cache-Control": "no-store"}))

    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", metadata)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", keys)
    app.router.add_get("/{tenant}/discovery/keys", keys)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_post("/{tenant}/oauth2/token", token_v1)


def make_app(state: CloudState | None = None) -> web.Application:
    state = state or CloudState()
    app = web.Application()
    control.add_routes(app, state)
    apis.add_routes(app, state)
    consent.add_routes(app, state)
    signin.add_routes(app, state)
    _add_entra_routes(app, state)
    return app


async def serve(host: str, port: int, state_dir: Path) -> None:
    """Serve until SIGTERM or SIGINT."""
    ssl_context = server_ssl_context(state_dir)
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
    await site.start()
    logger.info("Local Microsoft cloud on https://%s:%s (CA %s)", host, port, state_dir / "ca.pem")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
