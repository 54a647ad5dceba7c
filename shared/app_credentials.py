"""The azure-identity credential of the MSSP's multi-tenant app in one customer tenant, chosen by settings.

Serves shared/identity.py (tokens for onboarding verification and ingestion). Three forms
(MSSP_APP_CREDENTIAL): `federated`, the preferred one with no secret at all, where the function app's
managed identity is a federated credential of the app (ClientAssertionCredential fed with a managed
identity token for api://AzureADTokenExchange); `certificate`; and `secret`. The authority is a setting
(sovereign clouds, the local cloud), and so is `disable_instance_discovery` for a non-Microsoft authority.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport
from azure.identity import CertificateCredential, ClientAssertionCredential, ClientSecretCredential

from shared.settings import Settings, SettingsError

ResponseHook = Callable[[Any], None]


def build_credential(
    tenant_id: str,
    settings: Settings,
    *,
    transport: HttpTransport,
    response_hook: ResponseHook,
    assertion: Callable[[], str],
) -> TokenCredential:
    """A new credential for the app in `tenant_id`; SettingsError when the credential settings are unusable.

    `assertion` supplies the federated form's client assertion; `response_hook` sees every Entra response
    (status and Retry-After, which azure-identity does not surface in its errors).
    """
    client_id = str(settings.require("MSSP_APP_CLIENT_ID"))
    mode = settings.get("MSSP_APP_CREDENTIAL")
    common: dict[str, Any] = {
        "authority": settings.get("ENTRA_AUTHORITY_HOST"),
        "transport": transport,
        "raw_response_hook": response_hook,
        # No retries inside azure-identity: its default would sleep through Retry-After and back off for
        # a minute within one call. Callers retry with their own budget (ingestion backoff, the
        # verification timer), using the classified error.
        "retry_total": 0,
    }
    if mode == "federated":
        # ClientAssertionCredential posts straight to the tenant's token endpoint: no instance discovery.
        return ClientAssertionCredential(tenant_id, client_id, assertion, **common)
    discovery = {"disable_instance_discovery": settings.get("ENTRA_DISABLE_INSTANCE_DISCOVERY")}
    if mode == "secret":
        secret = str(settings.require("MSSP_APP_CLIENT_SECRET"))
        return ClientSecretCredential(tenant_id, client_id, secret, **discovery, **common)
    try:
        return CertificateCredential(tenant_id, client_id, **certificate_source(settings), **discovery, **common)
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        # azure-identity's text says what is wrong with the content without quoting it.
        raise SettingsError(f"MSSP_APP_CERTIFICATE: the certificate could not be loaded ({exc})") from None


def certificate_source(settings: Settings) -> dict[str, Any]:
    """CertificateCredential arguments for MSSP_APP_CERTIFICATE: PEM text, a PEM/PFX file, or base64 PKCS#12."""
    raw = str(settings.require("MSSP_APP_CERTIFICATE")).strip()
    if "-----BEGIN" in raw:
        if "\n" not in raw and "\\n" in raw:
            # A PEM pasted into a one-line app setting usually arrives with escaped newlines.
            raw = raw.replace("\\n", "\n")
        return {"certificate_data": raw.encode()}
    try:
        if Path(raw).is_file():
            return {"certificate_path": raw}
    except OSError:  # e.g. a base64 value too long to be a file name
        pass
    try:
        # A Key Vault reference to a certificate yields its PFX, base64-encoded.
        return {"certificate_data": base64.b64decode(raw, validate=True)}
    except (binascii.Error, ValueError):
        raise SettingsError("MSSP_APP_CERTIFICATE: neither PEM text, nor an existing file, nor base64 "
                            "PKCS#12") from None
