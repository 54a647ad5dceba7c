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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport
from azure.identity import CertificateCredential, ClientAssertionCredential, ClientSecretCredential

from shared.settings import Settings, SettingsError, get_settings, load_config, setting

ResponseHook = Callable[[Any], None]


@dataclass(frozen=True)
class AppSecretConfig:
    """MSSP_APP_CREDENTIAL=secret: the multi-tenant app's client secret."""

    secret: str = setting("MSSP_APP_CLIENT_SECRET", required=True)


@dataclass(frozen=True)
class AppCertificateConfig:
    """MSSP_APP_CREDENTIAL=certificate: the certificate with its private key (see certificate_source)."""

    certificate: str = setting("MSSP_APP_CERTIFICATE", required=True)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AppCertificateConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class AppRegistrationConfig:
    """The multi-tenant app, the form of its credential (MSSP_APP_CREDENTIAL) and the authority it asks."""

    client_id: str = setting("MSSP_APP_CLIENT_ID", required=True)
    kind: str = setting("MSSP_APP_CREDENTIAL")
    authority_host: str = setting("ENTRA_AUTHORITY_HOST")
    disable_instance_discovery: bool = setting("ENTRA_DISABLE_INSTANCE_DISCOVERY")


@dataclass(frozen=True)
class AppCredentialConfig:
    """Everything build_credential needs; the secret or the certificate is read only for the form that uses
    it, so the other may be unset."""

    app: AppRegistrationConfig
    secret: AppSecretConfig | None = None
    certificate: AppCertificateConfig | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AppCredentialConfig:
        current = settings or get_settings()
        app = load_config(AppRegistrationConfig, current)
        return cls(app, secret=load_config(AppSecretConfig, current) if app.kind == "secret" else None,
                   certificate=AppCertificateConfig.from_settings(current) if app.kind == "certificate" else None)


def build_credential(
    tenant_id: str,
    config: AppCredentialConfig,
    *,
    transport: HttpTransport,
    response_hook: ResponseHook,
    assertion: Callable[[], str],
) -> TokenCredential:
    """A new credential for the app in `tenant_id`; SettingsError when the credential settings are unusable.

    `assertion` supplies the federated form's client assertion; `response_hook` sees every Entra response
    (status and Retry-After, which azure-identity does not surface in its errors).
    """
    client_id, mode = config.app.client_id, config.app.kind
    common: dict[str, Any] = {
        "authority": config.app.authority_host,
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
    discovery: dict[str, Any] = {"disable_instance_discovery": config.app.disable_instance_discovery}
    if config.secret is not None:
        return ClientSecretCredential(tenant_id, client_id, config.secret.secret, **discovery, **common)
    if config.certificate is None:
        raise SettingsError(f"MSSP_APP_CREDENTIAL: {mode!r} has no credential settings")
    try:
        return CertificateCredential(tenant_id, client_id, **certificate_source(config.certificate.certificate),
                                     **discovery, **common)
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        # azure-identity's text says what is wrong with the content without quoting it.
        raise SettingsError(f"MSSP_APP_CERTIFICATE: the certificate could not be loaded ({exc})") from None


def certificate_source(certificate: str) -> dict[str, Any]:
    """CertificateCredential arguments for MSSP_APP_CERTIFICATE: PEM text, a PEM/PFX file, or base64 PKCS#12."""
    raw = certificate.strip()
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
