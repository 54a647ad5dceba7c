"""Fixtures of the Microsoft-access tests: trust the local cloud's CA, and one consented app per test."""

from __future__ import annotations

import pytest

from local.run.services import LocalCloud
from tests.cloud import consent, new_app, new_tenant


@pytest.fixture(autouse=True)
def trust_local_cloud(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE override a session's `verify`; the app trusts the local cloud the
    # way a local deployment does, through the environment.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca_path))


@pytest.fixture
def app(cloud: LocalCloud) -> dict:
    """A new multi-tenant app of the MSSP (secret credential, Graph and Defender alert roles)."""
    return new_app(cloud)


@pytest.fixture
def tenant(cloud: LocalCloud, app: dict) -> str:
    """A new customer tenant that consented to `app` (propagated at once)."""
    tenant_id = new_tenant(cloud)["id"]
    consent(cloud, tenant_id, app["clientId"])
    return tenant_id
