"""The MSSP's own operational conditions, evaluated from stored state and configuration: the multi-tenant
app's credential failing (the one record shared.incidents keeps, written by ingestion and by onboarding
verification alike, read, never written, here: one notice however many tenants and callers met the failure)
and the credential about to expire."""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from notify_mssp.config import CredentialExpiryConfig, Thresholds
from notify_mssp.incident_records import Incident, NoticeContext, clear_incident, raise_incident
from shared.incidents import MSSP_SUBJECT, mssp_credential_incident
from shared.settings import SettingsError

logger = logging.getLogger(__name__)

MSSP = MSSP_SUBJECT

# The multi-tenant app's certificate as CertificateCredential takes it (shared.app_credentials.certificate_source),
# read only when the credential is a certificate.
CertificateSource = Callable[[], dict[str, Any]]


def aware(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (Azurite and older rows give naive ones); None when not a time."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def credential_expiry(config: CredentialExpiryConfig, certificate: CertificateSource) -> datetime | None:
    """When the multi-tenant app's credential expires: the certificate's notAfter, or the date given for a
    secret (MSSP_CREDENTIAL_EXPIRES_AT); None when unknown (the federated form has no expiry)."""
    if config.kind == "certificate":
        return _certificate_expiry(certificate)
    if config.kind == "secret":
        return config.secret_expires_at
    return None


def _certificate_expiry(certificate: CertificateSource) -> datetime | None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    loaded: x509.Certificate | None
    try:
        source = certificate()
        data = source.get("certificate_data") or Path(source["certificate_path"]).read_bytes()
        if b"-----BEGIN" in data:
            loaded = x509.load_pem_x509_certificates(data)[0]
        else:
            loaded = pkcs12.load_key_and_certificates(data, None)[1]
    except (SettingsError, ValueError, OSError, IndexError, KeyError, binascii.Error) as exc:
        logger.error("MSSP_APP_CERTIFICATE: its expiry could not be read (%s)", type(exc).__name__)
        return None
    return loaded.not_valid_after_utc if loaded is not None else None


def check_mssp(ctx: NoticeContext, config: CredentialExpiryConfig, certificate: CertificateSource,
               limits: Thresholds, now: datetime) -> None:
    record = mssp_credential_incident(ctx.incidents)
    if record.get("open"):
        since = aware(record.get("firstSeen")) or now
        raise_incident(ctx, Incident("mssp_credential", MSSP, "The MSSP app's credential is failing", (
            f"Since {since:%Y-%m-%d %H:%M} UTC, {record.get('count') or 1} failures.",
            f"Error: {record.get('code') or '-'}: {record.get('message') or '-'}",
            "Every tenant is affected: no alerts are fetched until the credential is fixed.",
            "Onboarding waits too: customers who consented stay verifying, their verification time does not "
            "run, and no onboarding failure is reported for them.")))
    else:
        clear_incident(ctx, "mssp_credential", MSSP, summary="The MSSP app's credential works again")
    expires = credential_expiry(config, certificate)
    if expires is not None and expires - now < timedelta(days=limits.expiry_warning_days):
        when = "expired" if expires <= now else "expires"
        summary = f"The MSSP app's credential {when} on {expires:%Y-%m-%d}"
        raise_incident(ctx, Incident("mssp_credential_expiring", MSSP, summary, (
            f"The {config.kind} of the multi-tenant app {when} on {expires:%Y-%m-%d %H:%M} UTC.",
            "Renew it, update the app setting (Key Vault), and set MSSP_CREDENTIAL_EXPIRES_AT for a secret.")))
    else:
        clear_incident(ctx, "mssp_credential_expiring", MSSP, summary="The MSSP app's credential was renewed")
