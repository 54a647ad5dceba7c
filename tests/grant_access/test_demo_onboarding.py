"""`make run`'s onboarding step: the demo customers onboard through the webhook and the consent page."""

from __future__ import annotations

from pathlib import Path

import requests

from local.run.demo import CUSTOMERS
from local.run.main import start_demo_stack
from local.run.onboarding import onboard_demo_tenants
from local.run.services import free_port


def test_the_demo_customers_end_up_active_and_northwind_declined_first(tmp_path: Path):
    stack = start_demo_stack(tmp_path / "demo", free_port())
    try:
        onboard_demo_tenants(stack)
        assert stack.host is not None
        headers = {"x-functions-key": stack.host.function_key}
        listed = requests.get(f"{stack.host.url}/api/tenants", headers=headers, timeout=30).json()["value"]
        assert {t["tenantId"]: t["status"] for t in listed} == {c.tenant_id: "active" for c in CUSTOMERS}
        northwind = next(c for c in CUSTOMERS if c.declines_first)
        tables = stack.azurite.connection_string
        from azure.data.tables import TableClient

        invitations = TableClient.from_connection_string(tables, "Invitations").query_entities(
            "PartitionKey eq 'invitation' and expectedTenantId eq @t", parameters={"t": northwind.tenant_id})
        assert sorted(row["outcome"] for row in invitations) == ["accepted", "declined"]
    finally:
        stack.stop()
