"""The real function app on the local host, over HTTP, against Azurite and the local cloud."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.data.tables import TableServiceClient

from local.run.cycle import fire_timer, wait_for_orchestration
from local.run.stack import NEVER, LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The timer never fires by itself: a tick of its own would start the run the manual test waits for.
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("stack")), with_maildev=False, schedule=NEVER)
    yield stack
    stack.stop()


def test_health_is_anonymous_and_checks_storage(stack):
    response = requests.get(f"{stack.host.url}/api/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "storage": "ok"}


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_tenant_list_refuses_a_missing_or_wrong_key(stack, key):
    headers = {"x-functions-key": key} if key else {}
    assert requests.get(f"{stack.host.url}/api/tenants", headers=headers, timeout=10).status_code == 401


def test_tenant_list_answers_with_the_function_key_in_header_or_query(stack):
    by_header = requests.get(f"{stack.host.url}/api/tenants",
                             headers={"x-functions-key": stack.host.function_key}, timeout=10)
    by_query = requests.get(f"{stack.host.url}/api/tenants", params={"code": stack.host.function_key}, timeout=10)
    assert by_header.status_code == by_query.status_code == 200
    assert "value" in by_header.json()


def test_the_timer_starts_this_ticks_notification_run_which_finds_the_pending_tenants(stack):
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    tenants = service.create_table_if_not_exists("Tenants")
    pending = sorted(str(uuid.uuid4()) for _ in range(3))
    for tenant_id in pending:
        tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                               "pendingNotifications": True})
    tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": str(uuid.uuid4()), "status": "active",
                           "pendingNotifications": False})
    started = datetime.now(UTC) - timedelta(seconds=1)

    fire_timer(stack, "fetch_alerts")
    run = wait_for_orchestration(stack, "notify_mssp", started, timeout=60)

    assert run["runtimeStatus"] == "Completed"
    # Fired through the admin API, as an operator's manual run: the tick's id plus its own suffix, so the
    # timer's own start of that tick can never find this run's id taken (docs/NOTIFICATIONS.md).
    assert re.fullmatch(r"notify-\d{8}T\d{4}-manual-\S+", run["instanceId"]), run["instanceId"]
    assert run["output"]["tenantsPending"] == len(pending)
