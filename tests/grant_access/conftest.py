"""The onboarding stack shared by the grant_access tests: Azurite, the local cloud with the MSSP's
multi-tenant app, and the local host running the real app, plus a client that speaks to all three as the
onboarding system, the customer's admin (answering the consent page by form POST) and the MSSP would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.data.tables import TableServiceClient

from local.run.onboarding import sign_in
from local.run.services import free_port
from local.run.stack import LocalStack
from shared.signing import signature_headers

GRAPH = "https://graph.microsoft.com"
DEFENDER = "https://api.securitycenter.microsoft.com"
MSSP_TENANT = "9e8d7c6b-5a49-4838-a271-605f4e3d2c1b"
NEVER = "0 0 0 1 1 *"  # the verification timer only runs when a test fires it


@dataclass
class Onboarding:
    """A running stack and what tests need to talk to it."""

    stack: LocalStack
    client_id: str
    webhook_secret: str
    _signed_at: dict[str, int] = field(default_factory=dict)  # body hash -> the last second it was signed at

    @property
    def host_url(self) -> str:
        assert self.stack.host is not None
        return self.stack.host.url

    @property
    def key(self) -> str:
        assert self.stack.host is not None
        return self.stack.host.function_key

    @property
    def verify(self) -> str:
        return str(self.stack.cloud.ca_path)

    # --- the local cloud ---------------------------------------------------------------------------------

    def new_tenant(self, *, licensed: bool = True, propagation_seconds: int = 0, name: str = "Customer") -> str:
        tenant_id = str(uuid.uuid4())
        response = self.stack.cloud.control("POST", "tenants", json={
            "id": tenant_id, "domains": [f"c{tenant_id[:8]}.example"], "displayName": name,
            "defenderLicensed": licensed, "consentPropagationSeconds": propagation_seconds,
            "alerts": {"seed": tenant_id, "alertsPerHour": 1}})
        assert response.status_code == 201, response.text
        return tenant_id

    def advance_cloud_clock(self, seconds: float) -> None:
        assert self.stack.cloud.control("POST", "clock", json={"advance_seconds": seconds}).status_code == 200

    # --- the onboarding system ---------------------------------------------------------------------------

    def post_webhook(self, body: Any, *, signed: bool = True, headers: dict[str, str] | None = None,
                     raw: bytes | None = None, key: str | None = "default",
                     signed_at: float | None = None) -> requests.Response:
        """POST to the webhook, signed now (or at `signed_at`, Unix seconds) unless `signed` is False."""
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if signed:
            if signed_at is None:
                # A real sender's requests differ in time; two identical bodies signed in one second would be
                # one request sent twice (a replay, refused), so this client never reuses a second.
                digest = hashlib.sha256(data).hexdigest()
                signed_at = max(int(time.time()), self._signed_at.get(digest, 0) + 1)
                self._signed_at[digest] = signed_at
            sent.update(signature_headers(self.webhook_secret, data, signed_at))
        if key:
            sent["x-functions-key"] = self.key if key == "default" else key
        sent.update(headers or {})
        return requests.post(f"{self.host_url}/api/tenants", data=data, headers=sent, timeout=30)

    def invite(self, **fields: Any) -> dict[str, Any]:
        body = {"customerName": "Contoso Ltd", **fields}
        response = self.post_webhook(body)
        assert response.status_code == 201, response.text
        return response.json()

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"x-functions-key": self.key, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.host_url}/api/{path}", headers=headers, timeout=30, **kwargs)

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        response = self.api("GET", f"tenants/{tenant_id}")
        assert response.status_code == 200, response.text
        return response.json()

    # --- the customer's admin ----------------------------------------------------------------------------

    def answer_consent(self, consent_url: str, decision: str = "accept", *, tenant: str | None = None,
                       v1: bool = False) -> str:
        """Submit the local cloud's consent page as the admin would; the redirect URL Entra sends back."""
        parts = urlsplit(consent_url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        form = {"client_id": query["client_id"], "redirect_uri": query["redirect_uri"], "decision": decision}
        if query.get("state"):
            form["state"] = query["state"]
        if v1:
            path = path.replace("/v2.0/adminconsent", "/adminconsent")
        else:
            form["scope"] = query["scope"]
        if tenant:
            form["tenant"] = tenant
        response = requests.post(f"{parts.scheme}://{parts.netloc}{path}", data=form, allow_redirects=False,
                                 verify=self.verify, timeout=30)
        assert response.status_code == 302, response.text[:500]
        return response.headers["Location"]

    def open(self, url: str) -> requests.Response:
        return requests.get(url, timeout=60, allow_redirects=False)

    def callback(self, query: str) -> requests.Response:
        return requests.get(f"{self.host_url}/api/consent/callback?{query}", timeout=60, allow_redirects=False)

    def sign_in_fields(self, sign_in_url: str, *, as_tenant: str, decision: str = "accept") -> dict[str, str]:
        """Sign in on the local cloud's page as an admin of `as_tenant`; what its form_post would POST."""
        return dict(sign_in(sign_in_url, tenant=as_tenant, decision=decision, verify=self.verify).fields)

    def post_sign_in(self, fields: dict[str, str] | None = None, *, raw: bytes | None = None) -> requests.Response:
        """POST a sign-in's form fields (or a raw body) to the callback, as the form_post page does."""
        return requests.post(f"{self.host_url}/api/consent/callback", data=raw if raw is not None else fields,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=60,
                             allow_redirects=False)

    def sign_in(self, sign_in_url: str, *, as_tenant: str) -> requests.Response:
        """The whole sign-in step: the page the callback answers once the id_token is posted."""
        return self.post_sign_in(self.sign_in_fields(sign_in_url, as_tenant=as_tenant))

    @contextlib.contextmanager
    def id_token_fault(self, kind: str) -> Iterator[None]:
        """The next id_token the local cloud issues is damaged (`foreign_key`, `wrong_audience`, ...)."""
        state = {"armed": []}

        def arm(tenant: str) -> None:
            response = self.stack.cloud.control("POST", f"tenants/{tenant}/faults",
                                                json={"kind": f"id_token_{kind}", "count": 1})
            assert response.status_code == 201, response.text
            state["armed"].append(tenant)

        original = self.sign_in_fields

        def faulty(sign_in_url: str, *, as_tenant: str, decision: str = "accept") -> dict[str, str]:
            arm(as_tenant)
            return original(sign_in_url, as_tenant=as_tenant, decision=decision)

        self.sign_in_fields = faulty  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.sign_in_fields

    # --- the host ------------------------------------------------------------------------------------------

    def run_verification(self) -> None:
        assert self.stack.host is not None
        response = self.stack.host.admin("POST", "functions/verify_tenants", json={"input": ""})
        assert response.status_code == 202, response.text

    def tables(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.stack.azurite.connection_string)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, with its ETag: equal snapshots mean nothing was written."""
        service = self.tables()
        result = {}
        for table in sorted(t.name for t in service.list_tables()):
            rows = service.get_table_client(table).list_entities()
            result[table] = sorted(({**dict(r), "__etag": r.metadata["etag"]} for r in rows),
                                   key=lambda r: (r["PartitionKey"], r["RowKey"]))
        return result


def start_onboarding(workdir: Path, *, with_maildev: bool = False, **settings: str) -> Onboarding:
    stack = LocalStack.start(workdir, host_port=free_port(), with_maildev=with_maildev, start_app=False)
    try:
        client_id = str(uuid.uuid4())
        app_secret = secrets.token_urlsafe(24)
        webhook_secret = secrets.token_urlsafe(24)
        base = f"http://127.0.0.1:{stack.host_port}"
        stack.cloud.control("POST", "tenants", json={"id": MSSP_TENANT, "domains": ["mssp-tests.example"],
                                                     "defenderLicensed": True})
        created = stack.cloud.control("POST", "apps", json={
            "clientId": client_id, "displayName": "MSSP <b>alerts</b>", "homeTenant": MSSP_TENANT,
            "multiTenant": True, "secrets": [{"value": app_secret}],
            "redirectUris": [f"{base}/api/consent/callback"],
            "requiredResourceAccess": {GRAPH: ["SecurityAlert.Read.All"], DEFENDER: ["Alert.Read.All"]}})
        assert created.status_code == 201, created.text
        stack.settings.update({
            "MSSP_APP_CLIENT_ID": client_id, "MSSP_APP_CREDENTIAL": "secret", "MSSP_APP_CLIENT_SECRET": app_secret,
            "PUBLIC_BASE_URL": base, "ONBOARDING_WEBHOOK_SECRET": webhook_secret,
            "VERIFICATION_SCHEDULE": NEVER, "FETCH_ALERTS_SCHEDULE": NEVER, "RETENTION_SCHEDULE": NEVER,
            "OPS_NOTICES_SCHEDULE": NEVER, **settings})
        stack.start_host()
    except BaseException:
        stack.stop()
        raise
    return Onboarding(stack, client_id, webhook_secret)


@pytest.fixture(scope="package")
def onboarding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onboarding]:
    env = start_onboarding(Path(tmp_path_factory.mktemp("onboarding")))
    yield env
    env.stack.stop()
