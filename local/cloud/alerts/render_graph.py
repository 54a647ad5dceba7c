"""Microsoft Graph `microsoft.graph.security.alert` rendering (GET /v1.0/security/alerts_v2).

Evidence is always included and starts with the device; evolvable enum members collapse to
`unknownFutureValue` unless the caller opted in with `Prefer: include-unknown-enum-members`.
"""

from __future__ import annotations

from typing import Any

from .content import AlertContent, Evidence, comments
from .enums import graph_visible
from .model import AlertRecord, AlertVersion, TenantContext
from .timefmt import format_ticks

PORTAL = "https://security.microsoft.com"


def render(record: AlertRecord, index: int, version: AlertVersion, content: AlertContent, ctx: TenantContext,
           include_unknown: bool) -> dict[str, Any]:
    tid = ctx.tenant_id
    incident_id = record.value(version, "incident_id")
    investigation_state = "running" if version.status != "resolved" else "successfullyRemediated"
    return {
        "@odata.type": "#microsoft.graph.security.alert",
        "id": record.id,
        "providerAlertId": record.id,
        "incidentId": str(incident_id),
        "status": graph_visible("status", version.status, include_unknown),
        "severity": graph_visible("severity", version.severity, include_unknown),
        "classification": graph_visible("classification", version.classification, include_unknown),
        "determination": graph_visible("determination", version.determination, include_unknown),
        "serviceSource": graph_visible("serviceSource", record.value(version, "service_source"), include_unknown),
        "detectionSource": graph_visible("detectionSource", record.value(version, "detection_source"),
                                         include_unknown),
        "productName": _product(record.value(version, "service_source")),
        "detectorId": content.detector_id,
        "tenantId": tid,
        "title": content.title,
        "description": content.description,
        "recommendedActions": content.recommended_actions,
        "category": record.value(version, "category"),
        "assignedTo": version.assigned_to,
        "alertWebUrl": f"{PORTAL}/alerts/{record.id}?tid={tid}",
        "incidentWebUrl": f"{PORTAL}/incidents/{incident_id}?tid={tid}",
        "actorDisplayName": content.actor,
        "threatDisplayName": content.threat_name,
        "threatFamilyName": content.threat_family,
        "mitreTechniques": content.mitre,
        "createdDateTime": format_ticks(record.created),
        "lastUpdateDateTime": format_ticks(version.updated),
        "resolvedDateTime": format_ticks(version.resolved) if version.resolved is not None else None,
        "firstActivityDateTime": format_ticks(record.value(version, "first_event")),
        "lastActivityDateTime": format_ticks(record.value(version, "last_event")),
        "alertPolicyId": None,
        "investigationState": graph_visible("investigationState", investigation_state, include_unknown),
        "additionalData": {},
        "customDetails": {},
        "systemTags": content.system_tags,
        "comments": [
            {"@odata.type": "#microsoft.graph.security.alertComment", "comment": text,
             "createdByDisplayName": by, "createdDateTime": format_ticks(at)}
            for text, by, at in comments(record, index)
        ],
        "evidence": [_device(record, content)] + _evidence_list(content.evidence),
    }


def _product(service_source: str) -> str:
    return {
        "microsoftDefenderForEndpoint": "Microsoft Defender for Endpoint",
        "microsoftDefenderForCloud": "Microsoft Defender for Cloud",
        "microsoftSentinel": "Microsoft Sentinel",
    }.get(service_source, "Microsoft Defender XDR")


def _base(odata_type: str, created: str, verdict: str, remediation: str, roles: tuple[str, ...]) -> dict[str, Any]:
    return {
        "@odata.type": f"#microsoft.graph.security.{odata_type}",
        "createdDateTime": created,
        "verdict": verdict,
        "remediationStatus": remediation,
        "remediationStatusDetails": None,
        "roles": list(roles),
        "detailedRoles": [],
        "tags": [],
    }


def _device(record: AlertRecord, content: AlertContent) -> dict[str, Any]:
    device = content.device
    out = _base("deviceEvidence", format_ticks(record.created), "suspicious", "none", ("compromised",))
    out.update({
        "firstSeenDateTime": format_ticks(record.created - 90 * 86_400 * 10_000_000),
        "mdeDeviceId": device.machine_id,
        "azureAdDeviceId": device.aad_device_id,
        "deviceDnsName": device.dns_name,
        "hostName": device.dns_name.split(".")[0],
        "ntDomain": None,
        "dnsDomain": device.dns_name.split(".", 1)[1] if "." in device.dns_name else None,
        "osPlatform": device.os_platform,
        "osBuild": device.os_build,
        "version": device.version,
        "healthStatus": "active",
        "riskScore": device.risk_score,
        "rbacGroupId": device.group_id,
        "rbacGroupName": content.rbac_group,
        "onboardingStatus": "onboarded",
        "defenderAvStatus": "updated",
        "ipInterfaces": [device.ip_address],
        "loggedOnUsers": (
            [{"accountName": content.user.account_name, "domainName": content.user.domain_name}]
            if content.user else []
        ),
        "vmMetadata": None,
    })
    return out


def _file_details(item: Evidence) -> dict[str, Any]:
    return {
        "sha1": item.sha1, "sha256": item.sha256, "md5": item.md5, "fileName": item.file_name,
        "filePath": item.file_path, "fileSize": item.file_size, "filePublisher": item.publisher,
        "signer": item.signer, "issuer": item.issuer,
    }


def _user_account(item: Evidence) -> dict[str, Any] | None:
    if item.user is None:
        return None
    user = item.user
    return {
        "accountName": user.account_name, "domainName": user.domain_name, "userSid": user.user_sid,
        "azureAdUserId": user.aad_user_id, "userPrincipalName": user.upn, "displayName": user.display_name,
    }


def _evidence_list(items: list[Evidence]) -> list[dict[str, Any]]:
    """The evidence of one alert. Items share a few creation times (a large alert carries thousands of
    filler files created at one instant), so each time is formatted once per alert."""
    stamps: dict[int, str] = {}
    out = []
    for item in items:
        stamp = stamps.get(item.created)
        if stamp is None:
            stamp = stamps[item.created] = format_ticks(item.created)
        out.append(_evidence(item, stamp))
    return out


def _evidence(item: Evidence, created: str) -> dict[str, Any]:
    if item.kind == "process":
        out = _base("processEvidence", created, item.verdict, item.remediation, item.roles)
        out.update({
            "processId": item.process_id, "parentProcessId": item.parent_process_id,
            "processCommandLine": item.command_line,
            "processCreationDateTime": format_ticks(item.process_created or item.created),
            "parentProcessCreationDateTime": format_ticks(item.parent_created or item.created),
            "detectionStatus": item.detection_status, "mdeDeviceId": None,
            "imageFile": _file_details(item),
            "parentProcessImageFile": {"fileName": item.parent_file_name, "filePath": item.parent_file_path,
                                       "sha1": None, "sha256": None, "md5": None, "fileSize": None,
                                       "filePublisher": None, "signer": None, "issuer": None},
            "userAccount": _user_account(item),
        })
    elif item.kind == "file":
        out = _base("fileEvidence", created, item.verdict, item.remediation, item.roles)
        out.update({"detectionStatus": item.detection_status, "mdeDeviceId": None,
                    "fileDetails": _file_details(item)})
    elif item.kind == "user":
        out = _base("userEvidence", created, item.verdict, item.remediation, item.roles)
        out["userAccount"] = _user_account(item)
    elif item.kind == "ip":
        out = _base("ipEvidence", created, item.verdict, item.remediation, item.roles)
        out.update({"ipAddress": item.ip_address, "countryLetterCode": item.country})
    elif item.kind == "url":
        out = _base("urlEvidence", created, item.verdict, item.remediation, item.roles)
        out["url"] = item.url
    elif item.kind == "registryKey":
        out = _base("registryKeyEvidence", created, item.verdict, item.remediation, item.roles)
        out.update({"registryKey": item.registry_key, "registryHive": item.registry_hive})
    else:
        out = _base("registryValueEvidence", created, item.verdict, item.remediation, item.roles)
        out.update({"registryKey": item.registry_key, "registryHive": item.registry_hive,
                    "registryValueName": item.registry_value_name, "registryValueType": item.registry_value_type,
                    "registryValue": item.registry_value, "mdeDeviceId": None})
    return out
