"""What the SIEM pull API answers: each alert as the SIEM receives it, and the page as JSON or NDJSON with
the continuation token (MACed, fetch_alerts/siem_token.py), `Link`/`nextLink` and the cost headers
(`X-Rows-Read`, `X-Storage-Requests`)."""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import azure.functions as func

from fetch_alerts.feed_reader import Page
from fetch_alerts.pull_request import NDJSON, PullRequest
from fetch_alerts.siem_token import encode_token

logger = logging.getLogger(__name__)


def _iso(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def alert_json(row: dict[str, Any], customer_name: str | None, include_payload: bool,
               decode_payload: Callable[[dict[str, Any]], dict[str, Any]] | None) -> dict[str, Any]:
    """What the SIEM receives for one alert: the normalised fields, tenant, customer and portal link."""
    try:
        techniques = json.loads(row.get("mitreTechniques") or "[]")
    except ValueError:
        techniques = []
    body: dict[str, Any] = {
        "tenantId": row["PartitionKey"],
        "customerName": customer_name,
        "alertId": row.get("alertId"),
        "source": row.get("source"),
        "title": row.get("title"),
        "category": row.get("category"),
        "severity": row.get("severity"),
        "status": row.get("status"),
        "classification": row.get("classification") or None,
        "determination": row.get("determination") or None,
        "createdDateTime": row.get("createdDateTime"),
        "lastUpdateDateTime": row.get("lastUpdateDateTime"),
        "deviceName": row.get("deviceName") or None,
        "userName": row.get("userName") or None,
        "deviceGroup": row.get("deviceGroup") or None,
        "mitreTechniques": techniques,
        "incidentId": row.get("incidentId") or None,
        "detectionSource": row.get("detectionSource") or None,
        "serviceSource": row.get("serviceSource") or None,
        "portalLink": row.get("portalLink"),
        "payloadHash": row.get("payloadHash"),
        "payloadTrimmed": bool(row.get("payloadTrimmed")),
        "storedAt": _iso(row.get("storedAt")),
    }
    if include_payload and decode_payload is not None:
        try:
            body["payload"] = decode_payload(row)
        except (ValueError, TypeError, zlib.error):  # a damaged row must not fail the SIEM's whole page
            logger.error("tenant %s: stored payload of %s cannot be decoded", row["PartitionKey"], row["RowKey"])
            body["payload"] = None
    return body


def render(request: PullRequest, page: Page, names: dict[str, str | None],
           decode_payload: Callable[[dict[str, Any]], dict[str, Any]] | None, key: bytes) -> func.HttpResponse:
    token = encode_token(request.filters, page.position, key)
    items = [alert_json(row, names.get(row["PartitionKey"]), request.include_payload, decode_payload)
             for row in page.alerts]
    headers = {"X-Continuation-Token": token, "X-Has-More": "true" if page.has_more else "false",
               "X-Rows-Read": str(page.counter.rows), "X-Storage-Requests": str(page.counter.requests),
               "Cache-Control": "no-store"}
    next_link = f"/api/alerts?continuation={token}&pageSize={request.page_size}"
    if request.include_payload:
        next_link += "&includePayload=true"
    if page.has_more:
        headers["Link"] = f'<{next_link}>; rel="next"'
    if request.ndjson:
        body = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return func.HttpResponse(body.encode(), status_code=200, mimetype=NDJSON, headers=headers)
    document = {"value": items, "continuation": token, "hasMore": page.has_more}
    if page.has_more:
        document["nextLink"] = next_link
    return func.HttpResponse(json.dumps(document, ensure_ascii=False).encode(), status_code=200,
                             mimetype="application/json", headers=headers)
