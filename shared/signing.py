"""HMAC-SHA256 body signatures: `X-Signature-SHA256: sha256=<hex>` on the onboarding webhook (checked) and on
the results POSTed to an onboarding system's callbackUrl (produced). Comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Signature-SHA256"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value for `body`."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` (a missing or malformed header is not)."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().lower().encode("utf-8", "replace"))
