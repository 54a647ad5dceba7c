"""A local stack for ingestion tests: the MSSP's app registered in the local cloud, tenants made active
without onboarding, and a way to run one ingestion tick through the real host and wait for it.

Shared with the SIEM pull API tests (H9) and the benches.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from local.run.cycle import finished_invocations, fire_timer
from local.run.stack import (
    NEVER,
    LocalStack,
    cloud_now,
    stack_table,
    start_with_mssp_app,
)

SECRET = "ingestion-test-secret"
TIMER = "fetch_alerts"
table = stack_table


def start_stack(workdir: Path, **settings: str) -> LocalStack:
    """A LocalStack whose app settings name a fresh MSSP app (created in the local cloud)."""
    return start_with_mssp_app(workdir, SECRET, **{"FETCH_BACKOFF_MS": "50", "RETENTION_SCHEDULE": NEVER,
                                                   **settings})


def client_id(stack: LocalStack) -> str:
    return stack.settings["MSSP_APP_CLIENT_ID"]


def add_tenant(stack: LocalStack, *, source: str = "graph", alerts: dict[str, Any] | None = None,
               activated_at: datetime | None = None, rate_limits: bool = False, consent: bool = True,
               **row: Any) -> str:
    """A consented tenant of the local cloud with an active Tenants row (no onboarding)."""
    body: dict[str, Any] = {"domains": [f"t{uuid.uuid4().hex[:12]}.example"], "displayName": "Contoso",
                            "rateLimits": rate_limits, "alerts": alerts or {}}
    tenant = stack.cloud.control("POST", "tenants", json=body).json()
    tenant_id = tenant["id"]
    if consent:
        stack.cloud.control("POST", f"tenants/{tenant_id}/consents",
                            json={"clientId": client_id(stack), "propagated": True})
    activated = activated_at or cloud_now(stack)
    table(stack, "Tenants").upsert_entity({
        "PartitionKey": "tenant", "RowKey": tenant_id, "status": "active", "displayName": "Contoso",
        "alertSource": source, "apiHost": "", "activatedAt": activated, "statusChangedAt": activated, **row})
    return tenant_id


def tenant_row(stack: LocalStack, tenant_id: str) -> dict[str, Any]:
    return dict(table(stack, "Tenants").get_entity("tenant", tenant_id))


def _finished(stack: LocalStack) -> int:
    return finished_invocations(stack, TIMER)


def fire(stack: LocalStack) -> int:
    """Start one tick; returns the finished count to wait beyond."""
    before = _finished(stack)
    fire_timer(stack, TIMER)
    return before


def wait_finished(stack: LocalStack, before: int, count: int = 1, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _finished(stack) >= before + count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{TIMER} did not finish within {timeout:.0f}s")


def run_tick(stack: LocalStack, timeout: float = 120.0) -> None:
    """Run one ingestion tick through the host and wait until it finished."""
    wait_finished(stack, fire(stack), timeout=timeout)


def wait_lease_free(stack: LocalStack, tenant_id: str, timeout: float = 60.0) -> None:
    """Wait until no invocation holds the tenant's ingestion lease (fetch_alerts/lease.py), e.g. the lease of a
    host that was killed mid-pass, which only expiry frees."""
    from fetch_alerts.lease import current

    leases = table(stack, "IngestLeases")
    deadline = time.monotonic() + timeout
    while current(leases, tenant_id) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"tenant {tenant_id}: its ingestion lease was not freed within {timeout:.0f}s")
        time.sleep(0.2)


def add_alert(stack: LocalStack, tenant_id: str, **fields: Any) -> dict[str, Any]:
    return stack.cloud.control("POST", f"tenants/{tenant_id}/alerts", json=fields).json()


def update_alert(stack: LocalStack, tenant_id: str, alert_id: str, **changes: Any) -> dict[str, Any]:
    return stack.cloud.control("PATCH", f"tenants/{tenant_id}/alerts/{alert_id}", json=changes).json()


def make_reread_due(stack: LocalStack, tenant_id: str, kind: str) -> None:
    """Make the tenant's `hour` or `day` re-read due at the next tick, as if that long had passed.

    The host runs on real time (only the cloud's clock can be advanced), so instead of waiting an hour or a
    day the test moves ingestion's record of when that re-read last started back by one period."""
    column = {"hour": "rereadHourAt", "day": "rereadDayAt"}[kind]
    period = timedelta(hours=1) if kind == "hour" else timedelta(days=1)
    table(stack, "Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id,
                                           column: datetime.now(UTC) - period - timedelta(minutes=1)})


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hours_ago(stack: LocalStack, hours: float) -> str:
    return iso(cloud_now(stack) - timedelta(hours=hours))
