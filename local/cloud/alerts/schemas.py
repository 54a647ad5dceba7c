"""What each API lets `$filter` touch, and how literals map onto stored values.

Graph (alerts_v2): assignedTo, classification, determination, createdDateTime, lastUpdateDateTime,
severity, serviceSource, status. Property names and enum members are case-sensitive lowerCamel, as in
Graph's schema (`status eq 'inProgress'`; `'InProgress'` is a 400).

Defender (/api/alerts): alertCreationTime, lastUpdateTime, incidentId, investigationId, id, assignedTo,
detectionSource, lastEventTime, status, severity, category. Property names are matched
case-insensitively (its docs spell `InvestigationId` both ways); severity and status members are
matched case-insensitively (`'High'`, `'high'`); detectionSource and category are open strings
compared exactly (`'WindowsDefenderAtp'`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import enums
from .model import AlertRecord, AlertVersion
from .odata import PropertySpec, Schema

MemberLookup = Callable[[str], str | None]
Reader = Callable[[AlertRecord, AlertVersion], Any]


def _graph_member(kind: str) -> MemberLookup:
    members = set(enums.GRAPH_ENUMS[kind])
    return lambda text: text if text in members else None


def _ordinal(kind: str) -> dict[str, int]:
    return {member: index for index, member in enumerate(enums.GRAPH_ENUMS[kind])}


def _defender_member(mapping: dict[str, str] | dict[str, str | None]) -> MemberLookup:
    lookup = {value.lower(): key for key, value in mapping.items() if value}
    return lambda text: lookup.get(text.lower())


def _graph_enum(name: str, read: Reader) -> PropertySpec:
    return PropertySpec(name, "enum", read, _graph_member(name), _ordinal(name))


GRAPH_PROPERTIES = (
    "id", "providerAlertId", "incidentId", "status", "severity", "classification", "determination",
    "serviceSource", "detectionSource", "productName", "detectorId", "tenantId", "title", "description",
    "recommendedActions", "category", "assignedTo", "alertWebUrl", "incidentWebUrl", "actorDisplayName",
    "threatDisplayName", "threatFamilyName", "mitreTechniques", "createdDateTime", "lastUpdateDateTime",
    "resolvedDateTime", "firstActivityDateTime", "lastActivityDateTime", "comments", "evidence", "systemTags",
    "alertPolicyId", "additionalData", "customDetails", "investigationState",
)

GRAPH = Schema(
    entity="microsoft.graph.security.alert",
    properties={
        "assignedTo": PropertySpec("assignedTo", "string", lambda r, v: v.assigned_to),
        "classification": _graph_enum("classification", lambda r, v: v.classification),
        "determination": _graph_enum("determination", lambda r, v: v.determination),
        "createdDateTime": PropertySpec("createdDateTime", "datetime", lambda r, v: r.created),
        "lastUpdateDateTime": PropertySpec("lastUpdateDateTime", "datetime", lambda r, v: v.updated),
        "severity": _graph_enum("severity", lambda r, v: v.severity),
        "serviceSource": _graph_enum("serviceSource", lambda r, v: r.value(v, "service_source")),
        "status": _graph_enum("status", lambda r, v: v.status),
    },
    known=frozenset(GRAPH_PROPERTIES),
    case_insensitive_names=False,
)


def _defender_detection_source(record: AlertRecord, version: AlertVersion) -> str:
    return enums.defender_detection_source(record.value(version, "detection_source"))


DEFENDER_PROPERTIES = (
    "id", "incidentId", "investigationId", "assignedTo", "severity", "status", "classification", "determination",
    "investigationState", "detectionSource", "detectorId", "category", "threatFamilyName", "threatName", "title",
    "description", "alertCreationTime", "firstEventTime", "lastEventTime", "lastUpdateTime", "resolvedTime",
    "machineId", "computerDnsName", "rbacGroupName", "aadTenantId", "mitreTechniques", "relatedUser",
    "comments", "evidence",
)

DEFENDER = Schema(
    entity="Alert",
    properties={
        "alertCreationTime": PropertySpec("alertCreationTime", "datetime", lambda r, v: r.created),
        "lastUpdateTime": PropertySpec("lastUpdateTime", "datetime", lambda r, v: v.updated),
        "incidentId": PropertySpec("incidentId", "long", lambda r, v: r.value(v, "incident_id")),
        "investigationId": PropertySpec("investigationId", "long", lambda r, v: r.value(v, "investigation_id")),
        "id": PropertySpec("id", "string", lambda r, v: r.id),
        "assignedTo": PropertySpec("assignedTo", "string", lambda r, v: v.assigned_to),
        "detectionSource": PropertySpec("detectionSource", "string", _defender_detection_source),
        "lastEventTime": PropertySpec("lastEventTime", "datetime", lambda r, v: r.value(v, "last_event")),
        "status": PropertySpec("status", "enum", lambda r, v: v.status,
                               _defender_member(enums.DEFENDER_STATUS), _ordinal("status")),
        "severity": PropertySpec("severity", "enum", lambda r, v: v.severity,
                                 _defender_member(enums.DEFENDER_SEVERITY), _ordinal("severity")),
        "category": PropertySpec("category", "string", lambda r, v: r.value(v, "category")),
    },
    known=frozenset(DEFENDER_PROPERTIES),
    case_insensitive_names=True,
)
