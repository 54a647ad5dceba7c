"""The consent `state`: 256 bits from the OS's cryptographic random source, handed out once in the consent
link and stored only as its SHA-256 hash, so a leaked table row cannot be replayed as a link
(docs/SECURITY.md, "What a consent proves").
"""

from __future__ import annotations

import hashlib
import re
import secrets

_STATE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32): 32 bytes, base64url, no padding


def new_state() -> str:
    return secrets.token_urlsafe(32)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def well_formed(state: str) -> bool:
    """Whether `state` could be one of ours; anything else is rejected before any lookup."""
    return bool(_STATE.fullmatch(state))
