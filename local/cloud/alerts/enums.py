"""Alert enumerations in both API casings, and how Graph hides its newer ("evolvable") members.

The store keeps every enum in Graph's lowerCamel spelling; Defender renders PascalCase through the
maps below. Members listed after `unknownFutureValue` in Graph's schema are evolvable: Graph shows them
as `unknownFutureValue` unless the caller sends `Prefer: include-unknown-enum-members`.
"""

from __future__ import annotations

UNKNOWN_FUTURE = "unknownFutureValue"

# Graph members in schema order (ordinal order matters for gt/lt on enums).
SEVERITY = ("unknown", "informational", "low", "medium", "high", UNKNOWN_FUTURE)
STATUS = ("unknown", "new", "inProgress", "resolved", UNKNOWN_FUTURE)
CLASSIFICATION = ("unknown", "falsePositive", "truePositive", "informationalExpectedActivity", UNKNOWN_FUTURE)
DETERMINATION = (
    "unknown", "apt", "malware", "securityPersonnel", "securityTesting", "unwantedSoftware", "other",
    "multiStagedAttack", "compromisedAccount", "phishing", "maliciousUserActivity", "notMalicious",
    "notEnoughDataToValidate", "confirmedActivity", "lineOfBusinessApplication", UNKNOWN_FUTURE,
)
SERVICE_SOURCE = (
    "unknown", "microsoftDefenderForEndpoint", "microsoftDefenderForIdentity", "microsoftDefenderForCloudApps",
    "microsoftDefenderForOffice365", "microsoft365Defender", "azureAdIdentityProtection", "microsoftAppGovernance",
    "dataLossPrevention", UNKNOWN_FUTURE, "microsoftDefenderForCloud", "microsoftSentinel",
    "microsoftThreatIntelligence",
)
DETECTION_SOURCE = (
    "unknown", "microsoftDefenderForEndpoint", "antivirus", "smartScreen", "customTi",
    "microsoftDefenderForOffice365", "automatedInvestigation", "microsoftThreatExperts", "customDetection",
    "microsoftDefenderForIdentity", "cloudAppSecurity", "microsoft365Defender", "azureAdIdentityProtection",
    "manual", "microsoftDataLossPrevention", "appGovernancePolicy", "appGovernanceDetection", UNKNOWN_FUTURE,
    "microsoftDefenderForCloud", "microsoftDefenderForIoT", "microsoftDefenderForServers",
    "microsoftDefenderForStorage", "microsoftDefenderForDNS", "microsoftDefenderForDatabases",
    "microsoftDefenderForContainers", "microsoftDefenderForNetwork", "microsoftDefenderForAppService",
    "microsoftDefenderForKeyVault", "microsoftDefenderForResourceManager", "microsoftDefenderForApiManagement",
)
INVESTIGATION_STATE = (
    "unknown", "terminated", "successfullyRemediated", "benign", "failed", "partiallyRemediated", "running",
    "pendingApproval", "pendingResource", "queued", "innerFailure", "preexistingAlert", "unsupportedOs",
    "unsupportedAlertType", "suppressedAlert", "partiallyInvestigated", "terminatedByUser", "terminatedBySystem",
    UNKNOWN_FUTURE,
)

GRAPH_ENUMS: dict[str, tuple[str, ...]] = {
    "severity": SEVERITY,
    "status": STATUS,
    "classification": CLASSIFICATION,
    "determination": DETERMINATION,
    "serviceSource": SERVICE_SOURCE,
    "detectionSource": DETECTION_SOURCE,
    "investigationState": INVESTIGATION_STATE,
}

# Defender spellings. Unset classification/determination are null in Defender, `unknown` in Graph.
DEFENDER_SEVERITY = {
    "unknown": "UnSpecified", "informational": "Informational", "low": "Low", "medium": "Medium", "high": "High",
}
DEFENDER_STATUS = {"unknown": "Unknown", "new": "New", "inProgress": "InProgress", "resolved": "Resolved"}
DEFENDER_CLASSIFICATION = {
    "unknown": None, "falsePositive": "FalsePositive", "truePositive": "TruePositive",
    "informationalExpectedActivity": "InformationalExpectedActivity",
}
DEFENDER_DETERMINATION = {
    "unknown": None, "apt": "Apt", "malware": "Malware", "securityPersonnel": "SecurityPersonnel",
    "securityTesting": "SecurityTesting", "unwantedSoftware": "UnwantedSoftware", "other": "Other",
    "multiStagedAttack": "MultiStagedAttack", "compromisedAccount": "CompromisedUser", "phishing": "Phishing",
    "maliciousUserActivity": "MaliciousUserActivity", "notMalicious": "Clean",
    "notEnoughDataToValidate": "InsufficientData", "confirmedActivity": "ConfirmedUserActivity",
    "lineOfBusinessApplication": "LineOfBusinessApplication",
}
# Defender's detectionSource is an open string with its own vocabulary (alerts-queue.md); members the
# MDE docs do not name get their Graph name in PascalCase.
DEFENDER_DETECTION_SOURCE = {
    "microsoftDefenderForEndpoint": "WindowsDefenderAtp", "antivirus": "WindowsDefenderAv",
    "smartScreen": "WindowsDefenderSmartScreen", "customTi": "CustomerTI",
    "automatedInvestigation": "AutomatedInvestigation", "customDetection": "CustomDetection",
    "microsoftThreatExperts": "ThreatExperts", "microsoft365Defender": "MTP",
    "microsoftDefenderForOffice365": "OfficeATP", "unknown": "Unknown",
}


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def defender_detection_source(graph_value: str) -> str:
    return DEFENDER_DETECTION_SOURCE.get(graph_value, pascal(graph_value))


def defender_investigation_state(graph_value: str) -> str:
    return pascal(graph_value)


def graph_visible(kind: str, value: str, include_unknown: bool) -> str:
    """The member Graph prints: evolvable members collapse to `unknownFutureValue` without the Prefer opt-in."""
    if include_unknown:
        return value
    members = GRAPH_ENUMS[kind]
    if members.index(value) > members.index(UNKNOWN_FUTURE):
        return UNKNOWN_FUTURE
    return value


def normalize(kind: str, value: str) -> str:
    """Accept a member in Graph or Defender spelling (any case) and return the Graph member."""
    members = GRAPH_ENUMS[kind]
    lowered = value.lower()
    for member in members:
        if member.lower() == lowered:
            return member
    reverse: dict[str, str] = {}
    if kind == "severity":
        reverse = {v.lower(): k for k, v in DEFENDER_SEVERITY.items()}
    elif kind == "determination":
        reverse = {v.lower(): k for k, v in DEFENDER_DETERMINATION.items() if v}
    elif kind == "detectionSource":
        reverse = {v.lower(): k for k, v in DEFENDER_DETECTION_SOURCE.items()}
    if lowered in reverse:
        return reverse[lowered]
    raise ValueError(f"{value!r} is not a member of {kind} ({', '.join(members)})")
