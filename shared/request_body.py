"""Checking a JSON request body the same way on every API that takes one (the onboarding webhook, the
tenant management API, the notification rules API): size (413), signature when a secret is configured (401),
content type (415), then strict JSON (400), so each refuses bad input with the same problem+json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.problems import Problem
from shared.signing import SignatureError, sign, verify

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Signed:
    """A verified request signature (canonical form) and the time it was signed at (Unix seconds)."""

    signature: str
    signed_at: int


def check_transport(body: bytes, content_type: str | None, content_length: str | None, signature: str | None,
                    secret: str, *, timestamp: str | None = None, now: float = 0.0) -> Signed | None:
    """Size, signature (with its timestamp) and content type; Problem on failure. The verified signature
    when a secret is configured, for refuse_replay."""
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if len(body) > MAX_BODY_BYTES or declared > MAX_BODY_BYTES:
        raise Problem(413, f"the body must be at most {MAX_BODY_BYTES} bytes")
    signed = None
    if secret:
        try:
            signed_at = verify(secret, body, timestamp, signature, now)
        except SignatureError as exc:
            raise Problem(401, str(exc), field=exc.header) from None
        signed = Signed(sign(secret, body, signed_at), signed_at)
    if (content_type or "").split(";", 1)[0].strip().lower() != "application/json":
        raise Problem(415, "the body must be application/json", field="Content-Type")
    return signed


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem(400, "the body is not valid JSON (UTF-8, no duplicate keys)", field="body") from None
    if not isinstance(value, dict):
        raise Problem(400, "the body must be a JSON object", field="body")
    try:
        # JSON escapes can carry lone surrogates, which no table or page can store or show.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(400, "the body contains an invalid Unicode escape", field="body") from None
    return value
