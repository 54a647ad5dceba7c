"""App-only access tokens for customer tenants: one credential per tenant, shared by every caller.

Serves onboarding verification and alert ingestion. `TenantTokens.token(tenant, source)` gives a
bearer token for the source's API in that tenant. One azure-identity credential per tenant, created under
the tenant's lock and kept, so its token cache holds: concurrent callers queue on the lock and share a
single token request, and later calls reuse the token until azure-identity refreshes it before expiry.
The credentials of at most MAX_CACHED_TENANTS tenants are kept, the least recently used dropped first: with
many instances taking tenants from one queue, every process would otherwise come to hold a credential (tens
of KB) for every tenant of the deployment (docs/CAPACITY.md). A dropped tenant's next call requests a token
again, which a process that sees the tenant less than hourly would have done anyway (tokens live about an
hour).
Failures come out as the typed errors of shared.errors, never as azure-identity's exceptions (their
text can quote a token response).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, DecodeError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport

from shared.alert_sources import AlertSource, ApiHosts, token_scope
from shared.app_credentials import AppCredentialConfig, build_credential
from shared.errors import (
    BadResponse,
    MicrosoftError,
    MsspCredentialError,
    ServiceError,
    Throttled,
    aadsts_codes,
    from_aadsts,
    retry_after_seconds,
)
from shared.http_pool import PooledSession, pool_size
from shared.settings import Settings, SettingsError, get_settings, load_config, setting
from shared.tables import managed_identity_credential
from shared.validators import is_guid

logger = logging.getLogger(__name__)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of an access token we just received, read without checking its signature.

    That is sound here because the token came to us from Entra over TLS, in answer to our own request;
    we only read what Entra granted (`roles`, `tid`). Never use this on a token someone presented to us.
    Raises ValueError when the token is not a JWT with a JSON object payload.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims


@dataclass(frozen=True)
class IdentityConfig:
    """How tokens are asked for in customer tenants, besides the app's credential (AppCredentialConfig, read
    when a tenant's credential is built, so a bad one is that tenant's MsspCredentialError): the timeout of a
    token request, the managed identity and audience of the federated form, and the tenants an instance
    ingests at once (FETCH_CONCURRENCY), which sizes the connection pool to Entra."""

    timeout_seconds: int = setting("HTTP_TIMEOUT_SECONDS")
    federation_audience: str = setting("MSSP_APP_FEDERATION_AUDIENCE")
    managed_identity_client_id: str = setting("AZURE_CLIENT_ID")
    concurrency: int = setting("FETCH_CONCURRENCY")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> IdentityConfig:
        return load_config(cls, settings)


MAX_CACHED_TENANTS = 4096  # about 200 MB of credentials at most; docs/CAPACITY.md, "Memory"


@dataclass
class _TenantSlot:
    lock: threading.Lock
    credential: TokenCredential | None = None


class _LastEntraResponse(threading.local):
    """Status and Retry-After of the last Entra response seen on this thread (absent from azure-identity's
    errors, needed to tell throttling and outages from refusals)."""

    status: int | None = None
    retry_after: str | None = None


class TenantTokens:
    """Tokens of the MSSP's multi-tenant app in each customer tenant."""

    def __init__(self, config: IdentityConfig, hosts: ApiHosts, credential: Callable[[], AppCredentialConfig], *,
                 managed_identity: TokenCredential | None = None, max_tenants: int = MAX_CACHED_TENANTS) -> None:
        """`credential` reads the app's credential settings when a tenant's credential is built (a bad one is
        then that tenant's MsspCredentialError). `managed_identity` is the credential whose token the federated
        form presents; by default the function app's managed identity (AZURE_CLIENT_ID, or system-assigned),
        built at first use."""
        self._config = config
        self._hosts = hosts
        self._credential_config = credential
        self._managed_identity = managed_identity
        self._slots: OrderedDict[str, _TenantSlot] = OrderedDict()  # least recently used first
        self._max_tenants = max_tenants
        self._lock = threading.Lock()
        self._last = _LastEntraResponse()
        self._transport: RequestsTransport | None = None
        # azure-identity logs a failed get_token at WARNING with the raw error text, which can quote the
        # token response; the classified failure is logged below instead.
        identity_logger = logging.getLogger("azure.identity")
        if identity_logger.level == logging.NOTSET:
            identity_logger.setLevel(logging.ERROR)

    @classmethod
    def from_settings(cls, settings: Settings, *, managed_identity: TokenCredential | None = None,
                      max_tenants: int = MAX_CACHED_TENANTS) -> TenantTokens:
        return cls(IdentityConfig.from_settings(settings), ApiHosts.from_settings(settings),
                   lambda: AppCredentialConfig.from_settings(settings), managed_identity=managed_identity,
                   max_tenants=max_tenants)

    def token(self, tenant_id: str, source: AlertSource) -> str:
        """An access token for `source` in the tenant; raises a shared.errors.MicrosoftError subtype."""
        tenant_id = _tenant_guid(tenant_id)
        scope = token_scope(source, self._hosts)
        slot = self._slot(tenant_id)
        with slot.lock:
            try:
                if slot.credential is None:
                    slot.credential = self._new_credential(tenant_id)
                self._last.status = self._last.retry_after = None
                return slot.credential.get_token(scope).token
            except MicrosoftError as exc:  # raised by our federated assertion or credential settings
                error = exc
            except AzureError as exc:
                error = self._classify(tenant_id, exc)
            if not isinstance(error, (Throttled, ServiceError)):
                # MSAL replays an HTTP 400 token answer for 60 s to identical requests; a fresh credential
                # makes the next attempt (consent propagated, secret fixed) really ask Entra again. A
                # failed credential holds no token worth keeping.
                slot.credential = None
        logger.warning("Token for tenant %s (%s) failed: %s [%s]", tenant_id, source, error.message, error.kind)
        raise error from None  # the chained azure-identity error can quote the token response

    def claims(self, tenant_id: str, source: AlertSource) -> dict[str, Any]:
        """The claims of the current token for `source` in the tenant."""
        try:
            return token_claims(self.token(tenant_id, source))
        except ValueError:
            raise BadResponse(tenant_id, "Entra returned an access token that is not a readable JWT",
                              code="InvalidToken") from None

    def _slot(self, tenant_id: str) -> _TenantSlot:
        with self._lock:  # two first callers must get the same slot
            slot = self._slots.get(tenant_id)
            if slot is None:
                slot = self._slots[tenant_id] = _TenantSlot(threading.Lock())
                while len(self._slots) > self._max_tenants:
                    # A caller still using the dropped slot keeps it; the tenant's next caller starts a new one.
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(tenant_id)
        return slot

    def cached_tenants(self) -> int:
        """How many tenants' credentials this object keeps."""
        return len(self._slots)

    def _new_credential(self, tenant_id: str) -> TokenCredential:
        try:
            config = self._credential_config()
            credential = build_credential(
                tenant_id, config, transport=self._shared_transport(),
                response_hook=self._observe, assertion=lambda: self._federation_assertion(tenant_id))
        except SettingsError as exc:
            raise MsspCredentialError(tenant_id, str(exc), code="Settings") from None
        logger.info("Credential (%s) created for tenant %s", config.app.kind, tenant_id)
        return credential

    def _shared_transport(self) -> RequestsTransport:
        """One HTTP session to Entra for every tenant's credential: connections are reused across tenants, one
        kept per tenant being ingested at once (a tenant's token requests run one at a time, under its lock)."""
        with self._lock:
            if self._transport is None:
                session = PooledSession(pool_size(self._config.concurrency))
                timeout = self._config.timeout_seconds
                self._transport = RequestsTransport(session=session, session_owner=False,
                                                    connection_timeout=timeout, read_timeout=timeout)
            return self._transport

    def _observe(self, pipeline_response: Any) -> None:
        response = pipeline_response.http_response
        self._last.status = response.status_code
        self._last.retry_after = response.headers.get("Retry-After")

    def _federation_assertion(self, tenant_id: str) -> str:
        """The managed identity's token for the token-exchange audience: the federated client assertion."""
        audience = self._config.federation_audience
        try:
            return self._managed_identity_credential().get_token(f"{audience}/.default").token
        except (AzureError, ValueError) as exc:
            raise MsspCredentialError(
                tenant_id, f"the managed identity could not get a token for {audience} ({type(exc).__name__})",
                code="ManagedIdentity") from None

    def _managed_identity_credential(self) -> TokenCredential:
        with self._lock:
            if self._managed_identity is None:
                self._managed_identity = managed_identity_credential(self._config.managed_identity_client_id)
            return self._managed_identity

    def _classify(self, tenant_id: str, exc: AzureError) -> MicrosoftError:
        """The typed error of a failed token request: by HTTP status, then AADSTS code, then cause."""
        status, retry_after = self._last.status, self._last.retry_after
        if status == 429:
            return Throttled(tenant_id, "Entra throttled the token request (429)", code="HTTP429",
                             retry_after=retry_after_seconds(retry_after))
        if status is not None and status >= 500:
            return ServiceError(tenant_id, f"Entra answered {status} to the token request", code=f"HTTP{status}")
        chain = _exception_chain(exc)
        for error in chain:
            codes = aadsts_codes(str(error))
            if codes:
                return from_aadsts(tenant_id, codes[0])
        kinds = tuple(type(error) for error in chain)
        if any(issubclass(kind, (ServiceRequestError, ServiceResponseError)) for kind in kinds):
            return ServiceError(tenant_id, "the token request got no answer from Entra (connection failed or "
                                "dropped, or timed out)", code="Connection")
        if any(issubclass(kind, (DecodeError, json.JSONDecodeError)) for kind in kinds):
            return BadResponse(tenant_id, "Entra answered the token request with invalid JSON", code="InvalidJson")
        if any("HTTP Error: 5" in str(error) for error in chain):  # MSAL's text for a 5xx it replays
            return ServiceError(tenant_id, "Entra failed the token request (5xx)", code="HTTP5xx")
        return MicrosoftError(tenant_id, f"the token request failed ({type(exc).__name__})", code=type(exc).__name__)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _tenant_guid(tenant_id: str) -> str:
    value = tenant_id.strip().lower()
    if not is_guid(value):
        # Tenant ids reach a URL path; domains must be resolved to their GUID before this point.
        raise ValueError("tenant id must be a GUID")
    return value


_shared: TenantTokens | None = None
_shared_lock = threading.Lock()


def get_tenant_tokens() -> TenantTokens:
    """The process-wide TenantTokens, built at first use from the app settings."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TenantTokens.from_settings(get_settings())
        return _shared
