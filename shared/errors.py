"""Typed failures of the Microsoft calls (Entra tokens, Graph and Defender alert APIs).

Serves onboarding verification and alert ingestion: each failure is classified once, next to
the HTTP call that met it, into a type with a meaning; callers decide what to do where they decide
(mark a tenant `consent_revoked`, wait `Retry-After`, retry later). `kind` is the stable name stored as a
tenant's last error class. Every error carries the tenant id and a short message that is safe to log and
store: built here from codes and statuses, never from a raw exception text (which can quote a token).
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any, ClassVar

import requests

from shared import fastjson

# Microsoft's error text is free-form and may change; keep only a bounded, single-line excerpt of it.
_EXCERPT_CHARS = 200


class MicrosoftError(Exception):
    """A Microsoft call failed; `kind` names the class of failure, `code` the AADSTS or API code."""

    kind: ClassVar[str] = "error"

    def __init__(self, tenant_id: str | None, message: str, *, code: str | None = None) -> None:
        super().__init__(f"tenant {tenant_id}: {message}" if tenant_id else message)
        self.tenant_id = tenant_id
        self.message = message
        self.code = code


class ConsentRevoked(MicrosoftError):
    """The tenant has no (or no longer a) consent for our app: the enterprise app is missing or disabled."""

    kind = "consent_revoked"


class AppNotFound(ConsentRevoked):
    """AADSTS700016: Entra does not find our app in the tenant. Either the consent is gone (the enterprise
    app was deleted) or it has not reached every Entra replica yet: right after consent, and for a new
    instance without a cached token, the same code means "not yet". Callers make it `consent_revoked` only
    once it persists (shared.access_check.app_not_found_is_final)."""

    kind = "app_not_found"


class PermissionMissing(MicrosoftError):
    """The app is present in the tenant but lacks the alert read role (token without it, or API 403)."""

    kind = "permission_missing"


class NotLicensed(MicrosoftError):
    """The tenant lacks the service the alert API needs (no Defender for Endpoint, feature disabled)."""

    kind = "not_licensed"


class TenantNotFound(MicrosoftError):
    """Entra does not know the tenant (wrong id, wrong cloud, or the tenant was deleted)."""

    kind = "tenant_not_found"


class Throttled(MicrosoftError):
    """HTTP 429: wait `retry_after` seconds (None when Microsoft did not say) before the next call."""

    kind = "throttled"

    def __init__(self, tenant_id: str | None, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(tenant_id, message, code=code)
        self.retry_after = retry_after


class ServiceError(MicrosoftError):
    """A transient failure on Microsoft's side or on the way: 5xx, timeout, dropped connection."""

    kind = "service_error"


class BadResponse(MicrosoftError):
    """A response that is not what the API documents: malformed or truncated JSON, or the wrong shape."""

    kind = "bad_response"


class UnpageableAlerts(MicrosoftError):
    """More alerts than one Defender page share one creation instant and one last-update instant: no
    documented query separates them, and `$skip` is only safe in a stable order, which is not documented
    (docs/MICROSOFT.md). The tenant fails loudly rather than lose alerts; a larger page size resolves it."""

    kind = "unpageable_alerts"


class MsspCredentialError(MicrosoftError):
    """The MSSP's own app credential or app registration is broken (wrong or expired secret, unknown or
    invalid certificate, no matching federated credential, no managed identity): every tenant is affected
    and none of them is at fault. It never changes a tenant's status or uses up a customer's verification
    time; it opens the one MSSP credential incident (shared.incidents)."""

    kind = "mssp_credential"


# --- Entra (AADSTS) codes ---------------------------------------------------------------------------
# Meanings from https://learn.microsoft.com/entra/identity-platform/reference-error-codes. Who is at
# fault decides the type: codes about the app's own credential or registration are the MSSP's
# (MsspCredentialError, every tenant fails alike), codes about the app's presence or consent in one
# tenant are that customer's. AADSTS7000112 (UnauthorizedClientApplicationDisabled) is returned for the
# service principal that is disabled in the tenant the token is requested for, i.e. the customer switched
# our enterprise app off; classifying it as the MSSP's would let one customer stop every tenant's run.

_AADSTS: dict[int, tuple[type[MicrosoftError], str]] = {
    700016: (AppNotFound, "our app is not in this tenant (consent not propagated yet, never consented, or the "
                          "enterprise app was deleted)"),
    7000112: (ConsentRevoked, "the tenant disabled our enterprise app"),
    65001: (ConsentRevoked, "no consent for our app in this tenant"),
    90094: (ConsentRevoked, "admin consent is required"),
    650052: (NotLicensed, "the tenant has not subscribed to or enabled the service the app needs"),
    500011: (NotLicensed, "the API's service principal is not in the tenant (service not provisioned)"),
    90002: (TenantNotFound, "tenant not found (wrong id, wrong cloud, or deleted)"),
    90033: (ServiceError, "a transient error at Entra"),
    50196: (Throttled, "Entra detected a request loop (too many identical token requests)"),
    7000215: (MsspCredentialError, "the app's client secret is wrong"),
    7000222: (MsspCredentialError, "the app's client secret has expired"),
    7000218: (MsspCredentialError, "no client secret or assertion was sent"),
    700027: (MsspCredentialError, "the client assertion failed signature validation (certificate not registered)"),
    700024: (MsspCredentialError, "the client assertion is outside its valid time range"),
    700021: (MsspCredentialError, "the client assertion names another application"),
    70021: (MsspCredentialError, "no federated credential of the app matches the managed identity's token"),
    700211: (MsspCredentialError, "no federated credential of the app matches the assertion's issuer"),
    700212: (MsspCredentialError, "no federated credential of the app matches the assertion's audience"),
    700213: (MsspCredentialError, "no federated credential of the app matches the assertion's subject"),
    70025: (MsspCredentialError, "the app has no federated identity credential configured"),
    700025: (MsspCredentialError, "the app registration is a public client and cannot use a credential"),
    700030: (MsspCredentialError, "the certificate's subject name is not authorized for the app"),
    50012: (MsspCredentialError, "the client authentication failed (certificate or assertion not valid)"),
    70002: (MsspCredentialError, "the app's credentials could not be validated"),
}
_AADSTS_PATTERN = re.compile(r"AADSTS(\d{4,9})")


def aadsts_codes(text: str) -> list[int]:
    """Every AADSTS code named in a text, in order."""
    return [int(code) for code in _AADSTS_PATTERN.findall(text)]


def from_aadsts(tenant_id: str | None, code: int) -> MicrosoftError:
    """The typed error of an Entra refusal; codes without a special meaning are a plain MicrosoftError."""
    error_type, meaning = _AADSTS.get(code, (MicrosoftError, "Entra refused the token request"))
    return error_type(tenant_id, f"AADSTS{code}: {meaning}", code=f"AADSTS{code}")


# --- Graph and Defender API answers (docs/MICROSOFT.md, "API tokens, limits and errors") ------------------------------

def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(text: str) -> str:
    return " ".join(text.split())[:_EXCERPT_CHARS]


def _api_error_fields(response: requests.Response) -> tuple[str, str]:
    """(code, message) of a Graph/Defender error body `{"error": {"code", "message"}}`, or empty strings."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else ""), (message if isinstance(message, str) else "")


def from_api_response(tenant_id: str | None, api: str, response: requests.Response) -> MicrosoftError:
    """The typed error of a Graph or Defender answer that is not a success."""
    status = response.status_code
    code, message = _api_error_fields(response)
    where = f"{api} answered {status}{' ' + code if code else ''}"
    detail = f"{where}: {_excerpt(message)}" if message else where
    if status == 429:
        return Throttled(tenant_id, detail, code=code or "TooManyRequests",
                         retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    if status >= 500:
        return ServiceError(tenant_id, detail, code=code or f"HTTP{status}")
    if status == 403 and code == "DisabledFeature":
        return NotLicensed(tenant_id, detail, code=code)
    if status in (401, 403) and "missing application roles" in message.lower():
        return PermissionMissing(tenant_id, detail, code=code or "Forbidden")
    if status == 403 and code in ("Forbidden", "Authorization_RequestDenied", ""):
        # Defender documents a plain 403 Forbidden as "the token is valid but lacks permission".
        return PermissionMissing(tenant_id, detail, code=code or "Forbidden")
    return MicrosoftError(tenant_id, detail, code=code or f"HTTP{status}")


def from_transport(tenant_id: str | None, api: str, exc: requests.RequestException) -> ServiceError:
    """A request that got no usable answer: timeout, refused or dropped connection, broken stream."""
    what = "timed out" if isinstance(exc, requests.Timeout) else "connection failed or was dropped"
    return ServiceError(tenant_id, f"{api}: {what} ({type(exc).__name__})", code=type(exc).__name__)


def json_object(tenant_id: str | None, api: str, response: requests.Response) -> dict[str, Any]:
    """The JSON object of a success answer; BadResponse when the body is not one (malformed, truncated)."""
    try:
        body = fastjson.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise BadResponse(tenant_id, f"{api} answered {response.status_code} with a body that is not valid "
                          f"JSON ({len(response.content)} bytes)", code="InvalidJson") from None
    if not isinstance(body, dict):
        raise BadResponse(tenant_id, f"{api} answered with JSON that is not an object", code="InvalidShape")
    return body
