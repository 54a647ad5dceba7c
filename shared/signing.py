"""HMAC-SHA256 signatures with a timestamp, on the onboarding webhook (checked) and on the results POSTed to
an onboarding system's callbackUrl (produced).

A signed request carries `X-Signature-Timestamp: <Unix seconds>` and
`X-Signature-SHA256: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. Signing the timestamp with the body
bounds how long a captured request stays valid (TOLERANCE_SECONDS either way of the receiver's clock);
within that window the webhook also refuses a signature it has already accepted (grant_access.webhook).
Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Signature-SHA256"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
TOLERANCE_SECONDS = 300
_PREFIX = "sha256="
_MAX_TIMESTAMP_DIGITS = 12  # Unix seconds stay 10 digits until the year 2286


class SignatureError(ValueError):
    """A signature that does not verify; `header` names the header at fault."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Signature-SHA256 value for `body` sent at `timestamp` (Unix seconds)."""
    message = str(timestamp).encode() + b"." + body
    return _PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Both headers for `body` sent now."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, body, timestamp)}


def verify(secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> int:
    """The signed timestamp when `signature` signs `body` at `timestamp` within `tolerance` seconds of
    `now`; SignatureError naming the header at fault otherwise."""
    value = (timestamp or "").strip()
    # Digits only, no sign or leading zero: one timestamp has one spelling, so one signature.
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS
            and value == str(int(value))):
        raise SignatureError(TIMESTAMP_HEADER, f"missing or malformed {TIMESTAMP_HEADER} header (Unix seconds)")
    signed_at = int(value)
    if abs(now - signed_at) > tolerance:
        raise SignatureError(TIMESTAMP_HEADER, f"{TIMESTAMP_HEADER} is more than {tolerance} seconds away "
                                               "from the current time")
    given = (signature or "").strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(sign(secret, body, signed_at).encode(), given):
        raise SignatureError(SIGNATURE_HEADER, f"missing or wrong {SIGNATURE_HEADER} header")
    return signed_at
