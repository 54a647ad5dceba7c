"""Purging an offboarded tenant's stored alerts in the background (`DELETE /api/tenants/{id}?purge=true`).

The orchestrator `purge_tenant_alerts` calls the activity `purge_tenant_alerts_batch` until a batch finds
nothing left; each batch deletes up to BATCH_ROWS rows of the tenant's partition in the Alerts table in
entity-group transactions of 100. Progress is the orchestration's custom status, which
`GET /api/tenants/{id}/purge` (the DELETE response's `Location`) shows.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from azure.data.tables import TableClient

from shared.names import PURGE_ALERTS_BATCH_ACTIVITY

logger = logging.getLogger(__name__)

BATCH_ROWS = 1000
TRANSACTION_ROWS = 100  # Table Storage's limit per entity-group transaction


def instance_id(tenant_id: str) -> str:
    return f"purge-{tenant_id}"


def status_json(tenant_id: str, status: Any) -> dict[str, Any]:
    """What the purge status route shows of a `DurableOrchestrationStatus`: progress, never management URLs."""
    def iso(value: Any) -> Any:
        return value.isoformat() if hasattr(value, "isoformat") else value

    runtime = status.runtime_status
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    output = status.output if isinstance(status.output, dict) else {}
    return {
        "tenantId": tenant_id, "instanceId": instance_id(tenant_id),
        "runtimeStatus": getattr(runtime, "value", runtime),
        "deleted": output.get("deleted", custom.get("deleted", 0)),
        "createdTime": iso(status.created_time), "lastUpdatedTime": iso(status.last_updated_time),
        "href": f"/api/tenants/{tenant_id}/purge",
    }


def purge_batch(alerts: TableClient, tenant_id: str) -> int:
    """Delete up to BATCH_ROWS rows of the tenant's alert partition; the number deleted."""
    rows = alerts.query_entities("PartitionKey eq @pk", parameters={"pk": tenant_id},
                                 select=["PartitionKey", "RowKey"], results_per_page=TRANSACTION_ROWS)
    keys: list[str] = []
    for row in rows:
        keys.append(row["RowKey"])
        if len(keys) >= BATCH_ROWS:
            break
    for start in range(0, len(keys), TRANSACTION_ROWS):
        alerts.submit_transaction([("delete", {"PartitionKey": tenant_id, "RowKey": key})
                                   for key in keys[start:start + TRANSACTION_ROWS]])
    logger.info("tenant %s: purged %d stored alert rows", tenant_id, len(keys))
    return len(keys)


def orchestrate(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    tenant_id: str = context.get_input()
    deleted = 0
    while True:
        count = yield context.call_activity(PURGE_ALERTS_BATCH_ACTIVITY, tenant_id)
        deleted += count
        context.set_custom_status({"tenantId": tenant_id, "deleted": deleted})
        if count == 0:
            return {"tenantId": tenant_id, "deleted": deleted}
