"""The small shared pieces onboarding relies on: outbound URL checks, body signatures, duration settings,
tenant lookup by domain (against the local cloud's OpenID metadata)."""

from __future__ import annotations

import uuid

import pytest
import requests

from shared.outbound_url import UnsafeUrl, check_url, resolve_public
from shared.settings import Settings, SettingsError
from shared.signing import SignatureError, sign, verify
from shared.tenant_lookup import TenantNotFound, is_domain, resolve_tenant_id
from shared.validators import is_guid


@pytest.mark.parametrize(("url", "host"), [("https://hooks.example.com/x", "hooks.example.com"),
                                         ("https://8.8.8.8/x", "8.8.8.8"),
                                         ("https://[2001:4860::8888]/", "2001:4860::8888")])
def test_public_https_urls_pass_the_static_check(url, host):
    assert check_url(url) == host  # accepted, naming the host a connection would go to


@pytest.mark.parametrize("url", ["http://hooks.example.com/", "ftp://x.example/", "https://user:pw@x.example/",
                                 "https://100.64.0.1/", "https://224.0.0.1/", "https://240.0.0.1/",
                                 "https://x.internal/", "https://" + "a" * 3000 + ".example/", "https:///nohost",
                                 "https://[::1", "https://x.example:0/"])
def test_unsafe_urls_fail_the_static_check(url):
    with pytest.raises(UnsafeUrl):
        check_url(url)


def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed():
    with pytest.raises(UnsafeUrl):
        resolve_public("https://localhost/hook")
    resolve_public("https://localhost/hook", allow_loopback=True)
    with pytest.raises(UnsafeUrl):
        resolve_public("https://10.0.0.1/hook", allow_loopback=True)


def test_a_signature_verifies_only_its_own_body_secret_and_timestamp():
    header = sign("s3cret", b"body", 1_700_000_000)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("s3cret", b"body", "1700000000", header, now=1_700_000_000) == 1_700_000_000
    assert verify("s3cret", b"body", "1700000000", header.upper().replace("SHA256=", "sha256="), now=1_700_000_299)
    for body, secret, timestamp, given in [(b"body2", "s3cret", "1700000000", header),
                                           (b"body", "other", "1700000000", header),
                                           (b"body", "s3cret", "1700000001", header),
                                           (b"body", "s3cret", "1700000000", None),
                                           (b"body", "s3cret", "1700000000", "sha256=zz\u00e9")]:
        with pytest.raises(SignatureError):
            verify(secret, body, timestamp, given, now=1_700_000_000)


@pytest.mark.parametrize("raw, seconds", [("7d", 604800), ("24h", 86400), ("15m", 900), ("30s", 30)])
def test_durations_are_read_in_seconds(raw, seconds):
    assert Settings({"INVITATION_TTL": raw}).get("INVITATION_TTL") == seconds


@pytest.mark.parametrize("raw", ["0d", "7", "d", "-1h", "1.5h", "7 days"])
def test_a_bad_duration_names_the_setting(raw):
    with pytest.raises(SettingsError, match="VERIFICATION_TIMEOUT"):
        Settings({"VERIFICATION_TIMEOUT": raw}).get("VERIFICATION_TIMEOUT")


@pytest.mark.parametrize("raw", ["http://app.example.com", "https://app.example.com/?x=1", "ftp://127.0.0.1"])
def test_the_public_base_url_must_be_https_except_on_loopback(raw):
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        Settings({"PUBLIC_BASE_URL": raw}).get("PUBLIC_BASE_URL")
    assert Settings({"PUBLIC_BASE_URL": "http://127.0.0.1:7071/"}).get("PUBLIC_BASE_URL") == "http://127.0.0.1:7071"


def test_guid_and_domain_shapes():
    assert is_guid("0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c") and is_guid("0B6F2A1C-3D4E-4F5A-8B9C-0D1E2F3A4B5C")
    assert not is_guid("{0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c}") and not is_guid("0b6f2a1c3d4e4f5a8b9c0d1e2f3a4b5c")
    assert is_domain("contoso.onmicrosoft.com") and not is_domain("contoso") and not is_domain("a..b.com")


def test_a_domain_resolves_to_its_tenant_through_openid_metadata(cloud):
    tenant = str(uuid.uuid4())
    cloud.control("POST", "tenants", json={"id": tenant, "domains": [f"x{tenant[:8]}.example"]})
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides session.verify
    session.verify = str(cloud.ca_path)
    assert resolve_tenant_id(cloud.url, f"X{tenant[:8]}.example", session=session) == tenant
    with pytest.raises(TenantNotFound):
        resolve_tenant_id(cloud.url, "nobody.example", session=session)
