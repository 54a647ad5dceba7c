"""Helpers for the Microsoft-access tests: app settings pointing at the local cloud, faults, token counts."""

from __future__ import annotations

from typing import Any

from local.run.services import LocalCloud
from shared.settings import Settings
from tests.cloud import SECRET


def cloud_settings(cloud: LocalCloud, client_id: str, **values: str) -> Settings:
    """The app settings of a deployment whose Microsoft endpoints are the local cloud (secret credential)."""
    environ = {
        "MSSP_APP_CLIENT_ID": client_id,
        "MSSP_APP_CREDENTIAL": "secret",
        "MSSP_APP_CLIENT_SECRET": SECRET,
        "ENTRA_AUTHORITY_HOST": cloud.url,
        "ENTRA_DISABLE_INSTANCE_DISCOVERY": "true",
        "GRAPH_API_HOST": cloud.url,
        "DEFENDER_API_HOST": cloud.url,
        "HTTP_TIMEOUT_SECONDS": "10",
        **values,
    }
    return Settings(environ)


def add_fault(cloud: LocalCloud, tenant_id: str, kind: str, **fields: Any) -> None:
    cloud.control("POST", f"tenants/{tenant_id}/faults", json={"kind": kind, **fields})


def token_requests(cloud: LocalCloud, tenant_id: str) -> int:
    """Token requests the local cloud received for the tenant (every client)."""
    return int(cloud.control("GET", "stats").json()["tokenRequests"]["byTenant"].get(tenant_id, 0))
