"""The normalised fields common to Graph alerts_v2 and Defender alerts (fetch_alerts/STORAGE.md).

Both sources describe the same alert with different names and enum spellings; the row keeps Graph's
spelling (camelCase enum members) so readers see one vocabulary. Values Microsoft adds later (unknown
enum members) pass through as received: an alert is never dropped for an enum we do not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from fetch_alerts.keys import format_ticks, parse_ticks
from shared.alert_sources import AlertSource
from shared.alerts import portal_alert_url


class InvalidAlert(ValueError):
    """An alert object without a usable id or timestamps: skipped (logged with the tenant), the rest of its page
    stored."""


@dataclass(frozen=True)
class Normalised:
    alert_id: str
    created_ticks: int
    updated_ticks: int
    columns: dict[str, Any]
    # What the text columns and the obligation's copy of the id take in a transaction's body, where azure-core
    # writes JSON with non-ASCII characters escaped (6 or 12 bytes each): fetch_alerts/store.py's budget.
    text_bytes: int


def camel(value: Any) -> str:
    """`TruePositive` -> `truePositive`; Graph's spelling is already camelCase; None -> ``."""
    if not isinstance(value, str) or not value:
        return ""
    return value[0].lower() + value[1:TEXT_LIMIT]


# Table Storage holds a string property of at most 64 KiB (32K UTF-16 characters) and an entity of at most 1 MiB
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#property-types).
# A column over that would fail the page's transaction on every tick, and the tenant's ingestion with it, so every
# text column is cut: the whole alert is in the payload columns (shared/payload.py) in any case.
TEXT_LIMIT = 1024  # names, ids and enum values: far longer than any Microsoft sends
TITLE_LIMIT = 4000
MITRE_LIMIT = 8000
# The alert id is kept whole (readers look the row up by it; keys hold it escaped and, when long, hashed:
# shared/alerts.py), so an id longer than this cannot be stored and its alert is skipped. Microsoft documents no
# length; its ids are tens of characters. With the columns above, the id and the portal link stay inside what
# shared/payload.py leaves of the 1 MiB entity beside the payload.
ID_LIMIT = 8000
LINK_LIMIT = 8000


def _text(value: Any, limit: int = TEXT_LIMIT) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text[:limit]


def _first_device(raw: dict[str, Any], source: AlertSource) -> tuple[str, str]:
    if source is AlertSource.DEFENDER:
        return _text(raw.get("computerDnsName")), _text(raw.get("rbacGroupName"))
    for item in raw.get("evidence") or ():
        if isinstance(item, dict) and str(item.get("@odata.type", "")).endswith("deviceEvidence"):
            return _text(item.get("deviceDnsName")), _text(item.get("rbacGroupName"))
    return "", ""


def _first_user(raw: dict[str, Any], source: AlertSource) -> str:
    if source is AlertSource.DEFENDER:
        user = raw.get("relatedUser")
        if isinstance(user, dict) and user.get("userName"):
            domain = _text(user.get("domainName"))
            return _text(f"{domain}\\{user['userName']}" if domain else user["userName"])
        return ""
    for item in raw.get("evidence") or ():
        account = item.get("userAccount") if isinstance(item, dict) else None
        if isinstance(account, dict) and account.get("accountName"):
            domain = _text(account.get("domainName"))
            return _text(f"{domain}\\{account['accountName']}" if domain else account["accountName"])
    return ""


def normalise(raw: Any, source: AlertSource, tenant_id: str, portal_host: str) -> Normalised:
    """The row columns of one alert object (without payload, keys or bookkeeping)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise InvalidAlert("an alert without an id")
    if len(raw["id"]) > ID_LIMIT:
        raise InvalidAlert(f"alert {raw['id'][:80]}...: its id of {len(raw['id'])} characters is longer than the "
                           f"{ID_LIMIT} that can be stored")
    graph = source is AlertSource.GRAPH
    created_text = raw.get("createdDateTime" if graph else "alertCreationTime")
    updated_text = raw.get("lastUpdateDateTime" if graph else "lastUpdateTime")
    try:
        created = parse_ticks(str(created_text))
        updated = parse_ticks(str(updated_text)) if updated_text else created
    except ValueError as exc:
        raise InvalidAlert(f"alert {raw['id'][:80]}: {exc}") from None
    alert_id = raw["id"]
    link = f"{portal_alert_url(portal_host, alert_id)}?tid={tenant_id}"
    if len(link) > LINK_LIMIT:
        link = f"{portal_host}/alerts?tid={tenant_id}"  # the tenant's alert queue: a cut link would lead nowhere
    device, group = _first_device(raw, source)
    mitre = raw.get("mitreTechniques")
    columns: dict[str, Any] = {
        "alertId": alert_id,
        "source": source.value,
        "title": _text(raw.get("title"), TITLE_LIMIT),
        "category": _text(raw.get("category")),
        "severity": camel(raw.get("severity")) or "unknown",
        "status": camel(raw.get("status")) or "unknown",
        "classification": camel(raw.get("classification")),
        "determination": camel(raw.get("determination")),
        "createdDateTime": format_ticks(created),
        "lastUpdateDateTime": format_ticks(updated),
        "lastUpdateTicks": EntityProperty(updated, EdmType.INT64),
        "deviceName": device,
        "userName": _first_user(raw, source),
        "deviceGroup": group,
        "mitreTechniques": json.dumps(mitre if isinstance(mitre, list) else [], ensure_ascii=False)[:MITRE_LIMIT],
        "incidentId": _text(raw.get("incidentId")),
        "detectionSource": _text(raw.get("detectionSource")),
        "serviceSource": _text(raw.get("serviceSource")) if graph else "",
        "portalLink": link,
    }
    text_bytes = sum(len(encode_basestring_ascii(value)) for value in columns.values() if isinstance(value, str))
    text_bytes += len(encode_basestring_ascii(alert_id))  # the obligation's copy
    return Normalised(alert_id, created, updated, columns, text_bytes)
