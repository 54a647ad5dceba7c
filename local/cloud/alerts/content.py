"""Alert content (texts, device, user, evidence) re-derived on demand from a record's content key.

Both renderers start from the same `AlertContent`, so an alert says the same thing in Graph and in
Defender. Derivation is deterministic: the same record always yields the same content.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import catalog, timefmt
from .model import AlertRecord, AlertVersion, Device, TenantContext, User

TICKS = timefmt.TICKS_PER_SECOND
# Roughly what one filler file evidence weighs in JSON; used to reach a record's evidence size target.
FILLER_EVIDENCE_BYTES = 760
_FUTURE_TITLES = {(service, detection, category): title
                  for service, detection, title, category in catalog.FUTURE_SOURCES}


@dataclass(slots=True)
class Evidence:
    kind: str  # process, file, user, ip, url, registryKey, registryValue
    created: int
    verdict: str = "suspicious"
    remediation: str = "none"
    roles: tuple[str, ...] = ()
    detection_status: str | None = None
    file_name: str | None = None
    file_path: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    md5: str | None = None
    file_size: int | None = None
    publisher: str | None = None
    signer: str | None = None
    issuer: str | None = None
    process_id: int | None = None
    parent_process_id: int | None = None
    command_line: str | None = None
    process_created: int | None = None
    parent_created: int | None = None
    parent_file_name: str | None = None
    parent_file_path: str | None = None
    user: User | None = None
    ip_address: str | None = None
    country: str | None = None
    url: str | None = None
    registry_key: str | None = None
    registry_hive: str | None = None
    registry_value_name: str | None = None
    registry_value_type: str | None = None
    registry_value: str | None = None


@dataclass(slots=True)
class AlertContent:
    title: str
    description: str
    recommended_actions: str
    mitre: list[str]
    threat_family: str | None
    threat_name: str | None
    actor: str | None
    detector_id: str
    device: Device
    rbac_group: str
    user: User | None
    evidence: list[Evidence]
    system_tags: list[str] = field(default_factory=list)


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def build_content(record: AlertRecord, version: AlertVersion, ctx: TenantContext,
                  with_evidence: bool = True) -> AlertContent:
    """The content of `record` as of `version` (explicit overrides applied).

    Evidence is drawn last so that leaving it out (Defender without `$expand`) changes nothing else.
    """
    rng = random.Random(record.content_key)
    template = catalog.DETECTIONS[record.template_index]
    overrides: dict[str, Any] = dict(record.overrides)
    if version.overrides:
        overrides.update(version.overrides)
    device = ctx.devices[record.device_index % len(ctx.devices)]
    user = rng.choice(ctx.users)
    proc_name, proc_dir = rng.choice(catalog.PROCESSES)
    proc_dir = proc_dir.replace("{user}", user.account_name)
    ip = f"{rng.choice((203, 198, 192))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    url = rng.choice(catalog.URLS)
    verb = rng.choice(("prevented", "blocked", "detected but not remediated", "quarantined"))
    cmd = f"{proc_name} -nop -w hidden -enc {_hex(rng, 96)}"
    title = template.title
    description = template.description.format(
        device=device.dns_name, process=proc_name, user=f"{user.domain_name}\\{user.account_name}",
        cmd=cmd, ip=ip, url=url, verb=verb,
    )
    mitre = list(template.mitre)
    future_title = _FUTURE_TITLES.get((record.service_source, record.detection_source, record.category))
    if future_title:
        title = future_title
        description = f"{title} on {device.dns_name}.\nRaised by {record.service_source}."
    if record.unusual:
        title = f"{rng.choice(catalog.UNUSUAL_TITLES)} - {title}"
        description = f"{description}\n{rng.choice(catalog.UNUSUAL_LINES)}"
    detector_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    evidence = (_evidence(record, rng, template.evidence, device, user, proc_name, proc_dir, cmd, ip, url)
                if with_evidence else [])
    return AlertContent(
        title=overrides.get("title", title),
        description=overrides.get("description", description),
        recommended_actions=overrides.get("recommendedActions", template.recommended),
        mitre=list(overrides.get("mitreTechniques", mitre)),
        threat_family=overrides.get("threatFamilyName", template.threat_family),
        threat_name=overrides.get("threatDisplayName",
                                  f"{template.threat_family}!ml" if template.threat_family else None),
        actor=overrides.get("actorDisplayName", None),
        detector_id=detector_id,
        device=device,
        rbac_group=overrides.get("deviceGroup", device.group),
        user=user if any(kind in ("user", "process") for kind in template.evidence) else None,
        evidence=evidence,
        system_tags=["Defender Experts"] if template.detection_source == "microsoftThreatExperts" else [],
    )


def _evidence(record: AlertRecord, rng: random.Random, kinds: tuple[str, ...], device: Device, user: User,
              proc_name: str, proc_dir: str, cmd: str, ip: str, url: str) -> list[Evidence]:
    base = record.created + rng.randrange(5 * TICKS)
    items: list[Evidence] = []
    for kind in kinds:
        if kind == "process":
            items.append(Evidence(
                kind="process", created=base, roles=("suspicious",), detection_status="detected",
                file_name=proc_name, file_path=proc_dir, sha1=_hex(rng, 160), sha256=_hex(rng, 256),
                md5=_hex(rng, 128), file_size=rng.randrange(10_000, 5_000_000), publisher="Unknown",
                process_id=rng.randrange(100, 65_000), parent_process_id=rng.randrange(100, 65_000),
                command_line=cmd, process_created=record.first_event,
                parent_created=record.first_event - rng.randrange(1, 600) * TICKS,
                parent_file_name="cmd.exe", parent_file_path="C:\\Windows\\System32", user=user,
            ))
        elif kind == "file":
            name = rng.choice(catalog.FILES)
            items.append(Evidence(
                kind="file", created=base, verdict="malicious", roles=("created",),
                remediation=rng.choice(("remediated", "prevented", "blocked", "none")),
                detection_status=rng.choice(("detected", "blocked", "prevented")), file_name=name,
                file_path=f"C:\\Users\\{user.account_name}\\Downloads", sha1=_hex(rng, 160),
                sha256=_hex(rng, 256), md5=_hex(rng, 128), file_size=rng.randrange(1_000, 20_000_000),
                publisher=None, signer=None, issuer=None,
            ))
        elif kind == "user":
            items.append(Evidence(kind="user", created=base, roles=("compromised",), user=user))
        elif kind == "ip":
            items.append(Evidence(kind="ip", created=base, roles=("destination",), ip_address=ip,
                                  country=rng.choice(("NL", "US", "RU", "BR", None))))
        elif kind == "url":
            items.append(Evidence(kind="url", created=base, roles=("source",), url=url))
        elif kind == "registryKey":
            items.append(Evidence(kind="registryKey", created=base, roles=("edited",),
                                  registry_key=rng.choice(catalog.REGISTRY_KEYS), registry_hive="HKEY_LOCAL_MACHINE"))
        elif kind == "registryValue":
            items.append(Evidence(
                kind="registryValue", created=base, roles=("edited",),
                registry_key=rng.choice(catalog.REGISTRY_KEYS), registry_hive="HKEY_LOCAL_MACHINE",
                registry_value_name=rng.choice(("Updater", "DisableRealtimeMonitoring")),
                registry_value_type="String", registry_value=f"{proc_dir}\\{proc_name}",
            ))
    items.extend(_fillers(record, base))
    return items


def _fillers(record: AlertRecord, base: int) -> list[Evidence]:
    """Many file evidences (as a mass-encryption alert carries) to reach the record's size target."""
    count = record.evidence_bytes // FILLER_EVIDENCE_BYTES
    out = []
    for index in range(count):
        digest = hashlib.sha256(f"{record.id}/{index}".encode()).hexdigest()
        out.append(Evidence(
            kind="file", created=base, verdict="malicious", roles=("edited",), remediation="none",
            detection_status="detected", file_name=f"document_{index:05d}.docx.locked",
            file_path=f"C:\\Users\\Public\\Documents\\Share{index % 97:02d}\\Projects\\Archive",
            sha1=digest[:40], sha256=digest, md5=digest[:32], file_size=10_000 + index,
        ))
    return out


def comments(record: AlertRecord, upto: int) -> list[tuple[str, str, int]]:
    """(comment, createdBy, createdTime) of versions 0..upto."""
    out = []
    for version in record.versions[: upto + 1]:
        if version.comment:
            out.append((version.comment, version.assigned_to or "Automation", version.updated))
    return out
