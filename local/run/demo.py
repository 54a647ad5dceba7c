"""The demo world `make run` shows: the MSSP's own tenant with its multi-tenant app, and three simulated
customer tenants with live alert streams in the local cloud.

Onboarding takes the customers through the webhook and the consent page; ingestion and
notification then act on their alerts. Everything here goes through the local cloud's control API,
as a test would; the app only ever sees the Microsoft-shaped endpoints.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from local.run.stack import LocalStack

MSSP_TENANT_ID = "5c3a0f4e-2d61-4b8e-9a7c-1f0e2d3c4b5a"
MSSP_DOMAIN = "mssp.example"
MSSP_APP_CLIENT_ID = "7d2e9c14-6b3a-4f58-8e1d-0a9b8c7d6e5f"
MAIL_APP_CLIENT_ID = "3a9f1c2e-8d4b-4e6a-b7c5-2f1e0d9c8b7a"
GRAPH = "https://graph.microsoft.com"
DEFENDER = "https://api.securitycenter.microsoft.com"
OPS_EMAIL = "soc-ops@mssp.example"
DEMO_LAG_SECONDS = 30  # ingestion lag of the demo streams (Graph's is minutes; shortened for the demo)

# What `make run` changes so the product shows itself within minutes: ingestion every minute instead of
# every 5 (each tick starts its notification run, as in Azure) and the ops check every minute, half a minute
# after the tick. A minute is the shortest: a tick's run id names its minute (shared/runs.py), and only a
# schedule of a minute or more is monitored, so a manual start gets an id of its own (local/host/timers.py).
# Only these local settings change; the product's defaults (shared/settings.py) stay.
LIVE_SCHEDULES = {
    "FETCH_ALERTS_SCHEDULE": "0 * * * * *",
    "OPS_NOTICES_SCHEDULE": "30 * * * * *",
}


@dataclass(frozen=True)
class DemoCustomer:
    """A simulated customer: its tenant in the local cloud and how it behaves in the demo."""

    tenant_id: str
    domain: str
    name: str
    alert_source: str  # "graph" or "defender"
    declines_first: bool = False


CUSTOMERS: tuple[DemoCustomer, ...] = (
    DemoCustomer("0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c", "contoso.example", "Contoso Ltd", "graph"),
    DemoCustomer("1c7a3b2d-4e5f-4a6b-9c0d-1e2f3a4b5c6d", "fabrikam.example", "Fabrikam, Inc.", "defender"),
    DemoCustomer("2d8b4c3e-5f6a-4b7c-8d1e-2f3a4b5c6d7e", "northwind.example", "Northwind Traders", "graph",
                 declines_first=True),
)


def setup_demo(stack: LocalStack) -> dict[str, str]:
    """Create the demo world in the local cloud; returns the app settings it implies (credentials of the
    MSSP's app registrations, generated afresh for this run and never written outside the run folder)."""
    cloud = stack.cloud
    app_secret = secrets.token_urlsafe(32)
    mail_secret = secrets.token_urlsafe(32)
    webhook_secret = secrets.token_urlsafe(32)
    callback = f"http://127.0.0.1:{stack.host_port}/api/consent/callback" if stack.host_port else None
    cloud.control("POST", "tenants", json={"id": MSSP_TENANT_ID, "domains": [MSSP_DOMAIN],
                                           "displayName": "The MSSP", "defenderLicensed": True})
    cloud.control("POST", "apps", json={
        "clientId": MSSP_APP_CLIENT_ID, "displayName": "MSSP Defender alerts", "homeTenant": MSSP_TENANT_ID,
        "multiTenant": True, "secrets": [{"value": app_secret}],
        "redirectUris": [callback] if callback else [],
        "requiredResourceAccess": {GRAPH: ["SecurityAlert.Read.All"], DEFENDER: ["Alert.Read.All"]},
    })
    # Mail.Send lives only in the MSSP's own tenant, on a single-tenant app (docs/ARCHITECTURE.md, invariant 8).
    cloud.control("POST", "apps", json={
        "clientId": MAIL_APP_CLIENT_ID, "displayName": "MSSP alert mailer", "homeTenant": MSSP_TENANT_ID,
        "multiTenant": False, "secrets": [{"value": mail_secret}],
        "requiredResourceAccess": {GRAPH: ["Mail.Send"]},
    })
    start = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for index, customer in enumerate(CUSTOMERS):
        cloud.control("POST", "tenants", json={
            "id": customer.tenant_id, "domains": [customer.domain], "displayName": customer.name,
            "defenderLicensed": True, "consentPropagationSeconds": 5,
            "alerts": {"seed": f"demo-{index}", "start": start, "alertsPerHour": 2, "lagSeconds": DEMO_LAG_SECONDS},
        })
    base = {"PUBLIC_BASE_URL": f"http://127.0.0.1:{stack.host_port}"} if stack.host_port else {}
    return {
        **base,
        # A %NAME% schedule must be an app setting: the host, not our code, resolves it.
        "VERIFICATION_SCHEDULE": "0 */2 * * * *",
        "MSSP_APP_CLIENT_ID": MSSP_APP_CLIENT_ID,
        "MSSP_APP_CREDENTIAL": "secret",
        "MSSP_APP_CLIENT_SECRET": app_secret,
        "MAIL_APP_TENANT_ID": MSSP_TENANT_ID,
        "MAIL_APP_CLIENT_ID": MAIL_APP_CLIENT_ID,
        "MAIL_APP_CLIENT_SECRET": mail_secret,
        "MAIL_SENDER": "defender-alerts@mssp.example",
        "OPS_EMAIL": OPS_EMAIL,
        # The onboarding webhook is signed, as it should be in Azure (`python -m local.run.try onboard` signs).
        "ONBOARDING_WEBHOOK_SECRET": webhook_secret,
    }
