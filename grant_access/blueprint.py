"""HTTP triggers of the onboarding blueprint.

The onboarding webhook and the consent callback arrive with #3. Already here: the health probe (for the
platform's health check and the local host's readiness) and the tenant list of the management API.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.settings import SettingsError
from shared.tables import Table, get_table_store

logger = logging.getLogger(__name__)

bp = func.Blueprint()

_JSON = "application/json"


def problem(status: int, title: str, detail: str) -> func.HttpResponse:
    """An RFC 9457 problem response; detail never carries internals."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/problem+json")


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness plus a cheap storage check; says which dependency fails, never why in detail."""
    try:
        table = get_table_store().table(Table.TENANTS)
        next(iter(table.query_entities("PartitionKey eq @pk", parameters={"pk": "health"},
                                       results_per_page=1)), None)
    except (AzureError, SettingsError, OSError) as exc:
        logger.error("health: table storage unavailable: %s", type(exc).__name__)
        return func.HttpResponse(json.dumps({"status": "unhealthy", "storage": "unavailable"}),
                                 status_code=503, mimetype=_JSON)
    return func.HttpResponse(json.dumps({"status": "healthy", "storage": "ok"}), mimetype=_JSON)


@bp.function_name("list_tenants")
@bp.route(route="tenants", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_tenants(req: func.HttpRequest) -> func.HttpResponse:
    """Every known customer tenant with its status."""
    table = get_table_store().table(Table.TENANTS)
    tenants = [
        {"tenantId": row["RowKey"], "status": row.get("status"), "displayName": row.get("displayName")}
        for row in table.list_entities(select=["RowKey", "status", "displayName"])
    ]
    return func.HttpResponse(json.dumps({"value": tenants}), mimetype=_JSON)
