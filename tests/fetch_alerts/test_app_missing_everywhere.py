"""AADSTS700016 for most tenants at once is the MSSP's mistake (a wrong MSSP_APP_CLIENT_ID, a deleted app
registration), not every customer revoking consent: no tenant is revoked, the MSSP's incident is raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.run.stack import LocalStack
from shared.access_check import APP_NOT_FOUND_SINCE, APP_NOT_FOUND_WINDOW
from shared.incidents import CREDENTIAL_KEY
from tests.fetch_alerts.harness import add_tenant, hours_ago, run_tick, start_stack, table, tenant_row


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("app-missing"))
    yield service
    service.stop()


def test_app_not_found_for_every_tenant_revokes_none_and_raises_the_mssps_incident(stack: LocalStack) -> None:
    tenants = [add_tenant(stack, alerts={"count": 3, "start": hours_ago(stack, 2), "lagSeconds": 0})
               for _ in range(3)]
    app = stack.settings["MSSP_APP_CLIENT_ID"]
    for tenant in tenants:  # what Entra answers every tenant when the app id is unknown everywhere
        stack.cloud.control("DELETE", f"tenants/{tenant}/consents/{app}")
    run_tick(stack)
    assert {tenant_row(stack, t)["lastErrorClass"] for t in tenants} == {"app_not_found"}
    rows = table(stack, "Tenants")
    for tenant in tenants:  # as if the propagation window had passed with every tick meeting it
        row = rows.get_entity("tenant", tenant)
        row[APP_NOT_FOUND_SINCE] = row[APP_NOT_FOUND_SINCE] - APP_NOT_FOUND_WINDOW
        rows.update_entity(row)

    run_tick(stack)

    assert {tenant_row(stack, t)["status"] for t in tenants} == {"active"}
    incident = table(stack, "Incidents").get_entity(*CREDENTIAL_KEY)
    assert incident["open"] is True and "AADSTS700016" in str(incident.get("lastError") or incident)
