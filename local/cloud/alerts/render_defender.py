"""Defender for Endpoint alert rendering (GET /api/alerts), PascalCase enums.

Evidence is `[]` unless the request has `$expand=evidence`; every evidence entity carries every key,
null where it does not apply, as the real API does. Machine facts are top-level fields, so the device
is not repeated as evidence.
"""

from __future__ import annotations

from typing import Any

from . import enums
from .content import AlertContent, Evidence, comments
from .model import AlertRecord, AlertVersion, TenantContext
from .timefmt import format_ticks

_ENTITY_TYPE = {
    "process": "Process", "file": "File", "user": "User", "ip": "Ip", "url": "Url",
    "registryKey": "Registry", "registryValue": "Registry",
}


def render(record: AlertRecord, index: int, version: AlertVersion, content: AlertContent, ctx: TenantContext,
           expand_evidence: bool) -> dict[str, Any]:
    user = content.user
    investigation_id = record.value(version, "investigation_id")
    if investigation_id is None:
        investigation_state = "Unknown"
    else:
        investigation_state = "Running" if version.status != "resolved" else "SuccessfullyRemediated"
    return {
        "id": record.id,
        "incidentId": record.value(version, "incident_id"),
        "investigationId": investigation_id,
        "assignedTo": version.assigned_to,
        "severity": enums.DEFENDER_SEVERITY[version.severity],
        "status": enums.DEFENDER_STATUS[version.status],
        "classification": enums.DEFENDER_CLASSIFICATION[version.classification],
        "determination": enums.DEFENDER_DETERMINATION[version.determination],
        "investigationState": investigation_state,
        "detectionSource": enums.defender_detection_source(record.value(version, "detection_source")),
        "detectorId": content.detector_id,
        "category": record.value(version, "category"),
        "threatFamilyName": content.threat_family,
        "threatName": content.threat_name,
        "title": content.title,
        "description": content.description,
        "alertCreationTime": format_ticks(record.created),
        "firstEventTime": format_ticks(record.value(version, "first_event")),
        "lastEventTime": format_ticks(record.value(version, "last_event")),
        "lastUpdateTime": format_ticks(version.updated),
        "resolvedTime": format_ticks(version.resolved) if version.resolved is not None else None,
        "machineId": content.device.machine_id,
        "computerDnsName": content.device.dns_name,
        "rbacGroupName": content.rbac_group,
        "aadTenantId": ctx.tenant_id,
        "mitreTechniques": content.mitre,
        "relatedUser": {"userName": user.account_name, "domainName": user.domain_name} if user else None,
        "comments": [
            {"comment": text, "createdBy": by, "createdTime": format_ticks(at)}
            for text, by, at in comments(record, index)
        ],
        "evidence": [_evidence(item) for item in content.evidence] if expand_evidence else [],
    }


def _evidence(item: Evidence) -> dict[str, Any]:
    has_file = item.kind in ("process", "file")
    is_process = item.kind == "process"
    user = item.user if item.kind == "user" else None
    registry = item.kind in ("registryKey", "registryValue")
    return {
        "entityType": _ENTITY_TYPE[item.kind],
        "evidenceCreationTime": format_ticks(item.created),
        "sha1": item.sha1 if has_file else None,
        "sha256": item.sha256 if has_file else None,
        "fileName": item.file_name if has_file else None,
        "filePath": item.file_path if has_file else None,
        "processId": item.process_id if is_process else None,
        "processCommandLine": item.command_line if is_process else None,
        "processCreationTime": format_ticks(item.process_created) if is_process and item.process_created else None,
        "parentProcessId": item.parent_process_id if is_process else None,
        "parentProcessCreationTime": (
            format_ticks(item.parent_created) if is_process and item.parent_created else None
        ),
        "parentProcessFileName": item.parent_file_name if is_process else None,
        "parentProcessFilePath": item.parent_file_path if is_process else None,
        "ipAddress": item.ip_address,
        "url": item.url,
        "registryKey": item.registry_key if registry else None,
        "registryHive": item.registry_hive if registry else None,
        "registryValueType": item.registry_value_type if registry else None,
        "registryValue": item.registry_value if registry else None,
        "accountName": user.account_name if user else None,
        "domainName": user.domain_name if user else None,
        "userSid": user.user_sid if user else None,
        "aadUserId": user.aad_user_id if user else None,
        "userPrincipalName": user.upn if user else None,
        "detectionStatus": enums.pascal(item.detection_status) if item.detection_status else None,
    }
