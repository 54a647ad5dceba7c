"""shared.id_token against id_tokens from the local cloud's real sign-in endpoint, sound and damaged."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from local.run.onboarding import sign_in
from local.run.services import LocalCloud
from shared.id_token import (
    MAX_TOKEN_CHARS,
    IdTokenClaims,
    IdTokenInvalid,
    SigningKeys,
    SigningKeysUnavailable,
    verify_id_token,
)
from tests.cloud import REDIRECT_URI, new_app, new_tenant

NONCE = "nonce-7362CAEA"


class Customer:
    """An MSSP app and a customer tenant whose admin signs in through the local cloud."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.tenant = new_tenant(cloud)
        self.client_id = new_app(cloud)["clientId"]

    def id_token(self, fault: str | None = None) -> str:
        if fault:
            self.cloud.control("POST", f"tenants/{self.tenant['id']}/faults", json={"kind": fault, "count": 1})
        query = urlencode({"client_id": self.client_id, "response_type": "id_token", "redirect_uri": REDIRECT_URI,
                           "response_mode": "form_post", "scope": "openid profile", "state": "s", "nonce": NONCE})
        post = sign_in(f"{self.cloud.url}/organizations/oauth2/v2.0/authorize?{query}",
                       tenant=self.tenant["domains"][0], username="ana@customer.example")
        return post.fields["id_token"]

    def verify(self, token: str, keys: SigningKeys, now: dt.datetime | None = None) -> IdTokenClaims:
        return verify_id_token(token, keys=keys, authority_host=self.cloud.url, client_id=self.client_id,
                               now=now or dt.datetime.now(dt.UTC))


@pytest.fixture
def customer(cloud: LocalCloud) -> Customer:
    return Customer(cloud)


@pytest.fixture
def keys(cloud: LocalCloud) -> SigningKeys:
    return SigningKeys(cloud.url, timeout=10)


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def test_valid_token_gives_the_tenant_user_and_nonce(customer: Customer, keys: SigningKeys) -> None:
    token = customer.id_token()
    claims = customer.verify(token, keys)
    assert claims == IdTokenClaims(tenant_id=customer.tenant["id"], nonce=NONCE,
                                   object_id=_claims(token)["oid"], username="ana@customer.example",
                                   directory_roles=frozenset(_claims(token)["wids"]), guest=False)
    assert "62e90394-69f5-4237-9190-012177145e10" in claims.directory_roles  # a Global Administrator
    # Both keys are cached: a second token needs no fetch.
    customer.verify(customer.id_token(), keys)
    assert keys.fetches == 1


@pytest.mark.parametrize(("fault", "reason"), [
    ("id_token_foreign_key", "signature does not verify"),
    ("id_token_wrong_audience", "another application"),
    ("id_token_expired", "expired"),
    ("id_token_wrong_issuer", "not issued by Microsoft Entra for its tenant"),
])
def test_damaged_tokens_from_the_cloud_are_refused(customer: Customer, keys: SigningKeys, fault: str,
                                                   reason: str) -> None:
    token = customer.id_token(fault)
    with pytest.raises(IdTokenInvalid, match=reason) as caught:
        customer.verify(token, keys)
    assert token not in str(caught.value) and token.split(".")[1] not in str(caught.value)


def test_wrong_nonce_is_returned_for_the_caller_to_refuse(customer: Customer, keys: SigningKeys) -> None:
    assert customer.verify(customer.id_token("id_token_wrong_nonce"), keys).nonce != NONCE


def test_lifetime_is_checked_against_the_given_time_with_five_minutes_leeway(customer: Customer,
                                                                               keys: SigningKeys) -> None:
    token = customer.id_token()
    issued = dt.datetime.fromtimestamp(_claims(token)["nbf"], dt.UTC)
    with pytest.raises(IdTokenInvalid, match="not valid yet"):
        customer.verify(token, keys, now=issued - dt.timedelta(minutes=6))
    customer.verify(token, keys, now=issued - dt.timedelta(minutes=4))
    expires = dt.datetime.fromtimestamp(_claims(token)["exp"], dt.UTC)
    customer.verify(token, keys, now=expires + dt.timedelta(minutes=4))
    with pytest.raises(IdTokenInvalid, match="expired"):
        customer.verify(token, keys, now=expires + dt.timedelta(minutes=5))


def test_another_authority_or_client_is_refused(customer: Customer, keys: SigningKeys) -> None:
    token = customer.id_token()
    with pytest.raises(IdTokenInvalid, match="not issued by Microsoft Entra"):
        verify_id_token(token, keys=keys, authority_host="https://login.microsoftonline.com",
                        client_id=customer.client_id, now=dt.datetime.now(dt.UTC))
    with pytest.raises(IdTokenInvalid, match="another application"):
        verify_id_token(token, keys=keys, authority_host=customer.cloud.url, client_id=str(uuid.uuid4()),
                        now=dt.datetime.now(dt.UTC))


def test_alg_none_is_refused(customer: Customer, keys: SigningKeys) -> None:
    header = jwt.get_unverified_header(customer.id_token())
    unsigned = f"{_b64({**header, 'alg': 'none'})}.{_b64(_claims(customer.id_token()))}."
    with pytest.raises(IdTokenInvalid, match="not signed with RS256"):
        customer.verify(unsigned, keys)


def test_hs256_keyed_with_the_public_key_is_refused(customer: Customer, keys: SigningKeys) -> None:
    token = customer.id_token()
    kid = jwt.get_unverified_header(token)["kid"]
    public_pem = keys.key(kid).public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # The classic key-confusion forgery, built by hand because PyJWT itself refuses a PEM as HMAC secret.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(token))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(IdTokenInvalid, match="not signed with RS256"):
        customer.verify(f"{signing_input}.{_b64(signature)}", keys)


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "e30.e30.", "....", "\u00e9\u00e9.\u00e9.x"])
def test_garbage_is_refused(customer: Customer, keys: SigningKeys, garbage: str) -> None:
    with pytest.raises(IdTokenInvalid):
        customer.verify(garbage, keys)
    assert keys.fetches == 0


def test_oversized_token_is_refused_before_parsing(customer: Customer, keys: SigningKeys) -> None:
    token = customer.id_token()
    header, payload, signature = token.split(".")
    padded = f"{header}.{payload}{'A' * MAX_TOKEN_CHARS}.{signature}"
    with pytest.raises(IdTokenInvalid, match="too long"):
        customer.verify(padded, keys)
    assert keys.fetches == 0


def _foreign_token(customer: Customer, kid: str) -> str:
    """A token with a sound shape, signed by a key Entra never published."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(customer.id_token()), key, algorithm="RS256", headers={"kid": kid})


def test_unknown_kid_refetches_once_a_minute_at_most(customer: Customer, cloud: LocalCloud) -> None:
    clock = [1000.0]
    keys = SigningKeys(cloud.url, timeout=10, monotonic=lambda: clock[0])
    customer.verify(customer.id_token(), keys)
    assert keys.fetches == 1
    # Key rollover: a kid we do not hold makes us look again, once.
    with pytest.raises(IdTokenInvalid, match="key Microsoft Entra does not publish"):
        customer.verify(_foreign_token(customer, "rolled-over-1"), keys)
    assert keys.fetches == 1  # fetched less than a minute ago: no refetch
    clock[0] += 61
    with pytest.raises(IdTokenInvalid, match="key Microsoft Entra does not publish"):
        customer.verify(_foreign_token(customer, "rolled-over-2"), keys)
    assert keys.fetches == 2
    with pytest.raises(IdTokenInvalid, match="key Microsoft Entra does not publish"):
        customer.verify(_foreign_token(customer, "rolled-over-3"), keys)
    assert keys.fetches == 2
    # A known kid never refetches within the day.
    clock[0] += 3600
    customer.verify(customer.id_token(), keys)
    assert keys.fetches == 2
    clock[0] += 24 * 3600
    customer.verify(customer.id_token(), keys)
    assert keys.fetches == 3


def test_unreachable_key_endpoint_is_not_an_invalid_token(customer: Customer) -> None:
    keys = SigningKeys("https://127.0.0.1:9", timeout=2)
    with pytest.raises(SigningKeysUnavailable):
        verify_id_token(customer.id_token(), keys=keys, authority_host="https://127.0.0.1:9",
                        client_id=customer.client_id, now=dt.datetime.now(dt.UTC))
