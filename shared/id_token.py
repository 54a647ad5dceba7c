"""Validation of the id_token Entra posts back after an OpenID Connect sign-in: which tenant signed in.

The consent callback cannot trust the `tenant` parameter of the admin-consent redirect (anyone can forge
a redirect); a signed id_token's `tid` proves the tenant instead. `verify_id_token` checks what
Microsoft says an app must check
(https://learn.microsoft.com/en-us/entra/identity-platform/id-tokens,
https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#validate-the-issuer):
an RS256 signature by one of Entra's published keys, `aud` our client id, the lifetime, `ver` 2.0, and,
as a multi-tenant app, the issuer `{authority}/{tid}/v2.0` built from the token's own `tid`. The caller
compares the returned nonce with the one it sent. Crypto and claim parsing are PyJWT's.

`SigningKeys` fetches the keys from `{authority}/common/discovery/v2.0/keys` and keeps them for a day;
a token naming a key it does not hold makes it refetch, at most once a minute, because Entra rolls its
keys over without notice
(https://learn.microsoft.com/en-us/entra/identity-platform/signing-key-rollover).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from shared.validators import is_guid

logger = logging.getLogger(__name__)

# An id_token is a few kilobytes; this bound leaves room for large group claims and stops parsing junk.
MAX_TOKEN_CHARS = 32 * 1024
# Clock skew tolerated between Entra and us.
LEEWAY_SECONDS = 300
KEYS_TTL_SECONDS = 24 * 3600
KEYS_REFETCH_INTERVAL_SECONDS = 60
_ALGORITHMS = ["RS256"]
_MAX_KEYS_BYTES = 1024 * 1024


class IdTokenInvalid(Exception):
    """The id_token is not one Entra issued to this app, now; the message says why, without the token."""


class SigningKeysUnavailable(Exception):
    """Entra's signing keys could not be fetched and none are held: nothing can be verified right now."""


@dataclass(frozen=True)
class IdTokenClaims:
    tenant_id: str  # lower-case GUID: the tenant the user signed in to
    nonce: str  # for the caller to compare with the one it sent
    object_id: str  # the user's object id in that tenant
    username: str | None  # preferred_username, for display only (it is not unique nor verified)
    # `wids`: the tenant-wide directory roles (role template ids) of the user, emitted when the app
    # registration's groupMembershipClaims includes DirectoryRole
    # (https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference, "wids").
    directory_roles: frozenset[str] = frozenset()
    # The user is a guest of the tenant signed in to: `idp` names another tenant or provider, where a member
    # has none or the tenant's own ("idp" in
    # https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference).
    guest: bool = False


class SigningKeys:
    """Entra's published token-signing keys, fetched on demand and cached in this process."""

    def __init__(self, authority_host: str, *, timeout: float = 10.0, ttl_seconds: float = KEYS_TTL_SECONDS,
                 refetch_interval_seconds: float = KEYS_REFETCH_INTERVAL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = f"{authority_host.rstrip('/')}/common/discovery/v2.0/keys"
        self._timeout = timeout
        self._ttl = ttl_seconds
        self._interval = refetch_interval_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self.fetches = 0  # fetch attempts, for observability

    def key(self, kid: str) -> Any:
        """The public key with this kid; IdTokenInvalid when Entra publishes none (after one refetch)."""
        with self._lock:
            now = self._monotonic()
            stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
            unknown = kid not in self._keys
            may_fetch = self._attempted_at is None or now - self._attempted_at >= self._interval
            if (stale or unknown) and may_fetch:
                self._fetch(now)
            found = self._keys.get(kid)
            if found is None:
                if not self._keys:
                    raise SigningKeysUnavailable("Entra's signing keys could not be fetched")
                raise IdTokenInvalid("the sign-in token is signed with a key Microsoft Entra does not publish")
            return found.key

    def _fetch(self, now: float) -> None:
        self._attempted_at = now
        self.fetches += 1
        try:
            response = requests.get(self.url, timeout=self._timeout)
            response.raise_for_status()
            if len(response.content) > _MAX_KEYS_BYTES:
                raise ValueError("key set too large")
            entries = response.json().get("keys")
            if not isinstance(entries, list):
                raise ValueError("no key list")
        except (requests.RequestException, ValueError, AttributeError) as exc:
            # Keep what we hold: keys roll over in weeks, so an outage of the key endpoint must not stop sign-in.
            logger.warning("Entra signing keys not fetched from %s: %s", self.url, type(exc).__name__)
            return
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
                continue
            if not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
            except (jwt.PyJWTError, ValueError, TypeError):  # one malformed key must not hide the others
                continue
        if not keys:
            logger.warning("Entra published no usable RSA signing key at %s", self.url)
            return
        self._keys = keys
        self._fetched_at = now
        logger.info("Entra signing keys fetched: %d", len(keys))


_shared: dict[str, SigningKeys] = {}
_shared_lock = threading.Lock()


def signing_keys(authority_host: str, *, timeout: float = 10.0) -> SigningKeys:
    """The process-wide SigningKeys of an authority, so that every request shares one cache (the first
    call's timeout applies)."""
    with _shared_lock:
        keys = _shared.get(authority_host)
        if keys is None:
            keys = _shared[authority_host] = SigningKeys(authority_host, timeout=timeout)
        return keys


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenInvalid(f"the sign-in token has no valid '{name}' time")
    return float(value)


def verify_id_token(token: str, *, keys: SigningKeys, authority_host: str, client_id: str,
                    now: dt.datetime) -> IdTokenClaims:
    """The claims of an id_token Entra issued to `client_id`; IdTokenInvalid for anything else.

    `authority_host` is the Entra host the app signs users in with (https://login.microsoftonline.com);
    `now` is the current time (timezone-aware). SigningKeysUnavailable when no key could be fetched.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(token, str) or not token:
        raise IdTokenInvalid("no sign-in token was received")
    if len(token) > MAX_TOKEN_CHARS:
        raise IdTokenInvalid("the sign-in token is too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise IdTokenInvalid("the sign-in token is not a JSON Web Token") from None
    # Only RS256: never `none`, never an HMAC keyed with a public key.
    if header.get("alg") != "RS256":
        raise IdTokenInvalid("the sign-in token is not signed with RS256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise IdTokenInvalid("the sign-in token names no signing key")
    key = keys.key(kid)
    try:
        # Times are checked below against the caller's `now`; PyJWT only reads the clock itself.
        claims = jwt.decode(token, key, algorithms=_ALGORITHMS, audience=client_id,
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                     "require": ["aud", "iss", "exp", "nbf", "iat", "tid", "nonce"]})
    except jwt.InvalidSignatureError:
        raise IdTokenInvalid("the sign-in token's signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise IdTokenInvalid("the sign-in token was issued to another application") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdTokenInvalid(f"the sign-in token has no '{exc.claim}' claim") from None
    except jwt.InvalidTokenError:
        raise IdTokenInvalid("the sign-in token could not be read") from None
    if claims.get("aud") != client_id:  # PyJWT also accepts a list that contains us; Entra sends one string
        raise IdTokenInvalid("the sign-in token was issued to another application")
    moment = now.timestamp()
    if _number(claims, "exp") + LEEWAY_SECONDS <= moment:
        raise IdTokenInvalid("the sign-in token has expired")
    if _number(claims, "nbf") - LEEWAY_SECONDS > moment:
        raise IdTokenInvalid("the sign-in token is not valid yet")
    if _number(claims, "iat") - LEEWAY_SECONDS > moment:
        raise IdTokenInvalid("the sign-in token was issued in the future")
    if claims.get("ver") != "2.0":
        raise IdTokenInvalid("the sign-in token is not a v2.0 token")
    tid = claims.get("tid")
    if not isinstance(tid, str) or not is_guid(tid):
        raise IdTokenInvalid("the sign-in token names no tenant")
    # Multi-tenant issuer validation: the issuer must be the authority's, for the token's own tenant.
    if claims.get("iss") != f"{authority_host.rstrip('/')}/{tid}/v2.0":
        raise IdTokenInvalid("the sign-in token was not issued by Microsoft Entra for its tenant")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise IdTokenInvalid("the sign-in token carries no nonce")
    oid = claims.get("oid")
    if not isinstance(oid, str) or not is_guid(oid):
        raise IdTokenInvalid("the sign-in token names no user (request the 'profile' scope)")
    username = claims.get("preferred_username")
    wids = claims.get("wids")
    roles = frozenset(str(r).lower() for r in wids if isinstance(r, str)) if isinstance(wids, list) else frozenset()
    idp = claims.get("idp")
    guest = isinstance(idp, str) and tid.lower() not in idp.lower()
    return IdTokenClaims(tenant_id=tid.lower(), nonce=nonce, object_id=oid.lower(),
                         username=username if isinstance(username, str) and username else None,
                         directory_roles=roles, guest=guest)
