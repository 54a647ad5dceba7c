"""The compact internal alert model shared by both API renderings.

A record keeps only what ordering and `$filter` need plus a content key; titles, descriptions and
evidence are re-derived from that key at render time, so a tenant with 50,000 alerts holds 50,000 small
records, never 50,000 payloads. Each update is a version (a full snapshot of the mutable fields); a
version becomes visible `lag` after its lastUpdate time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Record-level fields an explicit update may change; versions carry them in `overrides`.
RECORD_FIELDS = {
    "category": "category",
    "serviceSource": "service_source",
    "detectionSource": "detection_source",
    "incidentId": "incident_id",
    "investigationId": "investigation_id",
    "lastActivityDateTime": "last_event",
    "firstActivityDateTime": "first_event",
}


@dataclass(slots=True)
class AlertVersion:
    """One state of an alert; `updated` is its lastUpdateDateTime in ticks."""

    updated: int
    status: str
    severity: str
    classification: str = "unknown"
    determination: str = "unknown"
    assigned_to: str | None = None
    resolved: int | None = None
    comment: str | None = None
    # Explicit render-level changes (title, description, ...), cumulative from earlier versions.
    overrides: dict[str, Any] | None = None
    # When this version becomes visible (ticks), overriding the tenant's lag: one late alert among prompt
    # ones (Microsoft documents no bound on how late an alert can become visible).
    visible_at: int | None = None

    def evolve(self, updated: int, **changes: Any) -> AlertVersion:
        values = {
            "updated": updated, "status": self.status, "severity": self.severity,
            "classification": self.classification, "determination": self.determination,
            "assigned_to": self.assigned_to, "resolved": self.resolved, "comment": None,
            "overrides": self.overrides,
        }
        values.update(changes)
        return AlertVersion(**values)


@dataclass(slots=True)
class AlertRecord:
    """Immutable facts of one alert plus its versions in the order they happened."""

    id: str
    content_key: str
    created: int
    first_event: int
    last_event: int
    category: str
    service_source: str
    detection_source: str
    incident_id: int
    investigation_id: int | None
    device_index: int
    evidence_bytes: int
    template_index: int
    unusual: bool
    versions: list[AlertVersion] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    # Index of the first version whose lastUpdate is not yet reached on the stream schedule;
    # an explicit update drops the pending ones (it takes the alert over from the stream).
    explicit: bool = False

    def visible_version(self, now: int, lag: int) -> tuple[int, AlertVersion] | None:
        """The latest version visible at `now`, with its index; None while the alert is not visible."""
        found: tuple[int, AlertVersion] | None = None
        for index, version in enumerate(self.versions):
            visible = version.visible_at if version.visible_at is not None else version.updated + lag
            if visible <= now:
                found = (index, version)
        return found

    def value(self, version: AlertVersion, attr: str) -> Any:
        """A record-level attribute as of `version` (explicit updates may have changed it)."""
        if version.overrides:
            for name, record_attr in RECORD_FIELDS.items():
                if record_attr == attr and name in version.overrides:
                    return version.overrides[name]
        return getattr(self, attr)


@dataclass(slots=True)
class Device:
    dns_name: str
    machine_id: str
    aad_device_id: str
    group: str
    group_id: int
    os_platform: str
    os_build: int
    version: str
    ip_address: str
    risk_score: str


@dataclass(slots=True)
class User:
    account_name: str
    domain_name: str
    user_sid: str
    aad_user_id: str
    upn: str
    display_name: str


@dataclass(slots=True)
class TenantContext:
    """Per-tenant pools that alert content draws from (derived from the seed)."""

    tenant_id: str
    seed: str
    domain: str
    devices: list[Device]
    users: list[User]
    analysts: list[str]
