"""Seeded, deterministic per-tenant alert streams: arrivals, update schedules and tenant pools.

Every random draw comes from a `random.Random` seeded with a string derived from the tenant seed and
the alert's position in the stream, so the same options and seed give the same alerts whenever and
however often the stream is extended (string seeds hash with SHA-512, independent of PYTHONHASHSEED).
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from . import catalog, timefmt
from .model import AlertRecord, AlertVersion, Device, TenantContext, User

logger = logging.getLogger(__name__)

TICKS = timefmt.TICKS_PER_SECOND
_SEVERITY_ORDER = ("informational", "low", "medium", "high")


@dataclass(slots=True)
class StreamOptions:
    seed: str
    alerts_per_hour: float
    updates_per_alert: float
    lag_ticks: int
    start: int
    count: int
    large_fraction: float
    unusual_fraction: float
    future_enum_fraction: float
    device_groups: tuple[str, ...]
    device_count: int
    defender_order: str = "oldestFirst"

    @classmethod
    def parse(cls, tenant_id: str, options: dict[str, Any], now: int) -> StreamOptions:
        """Validate the documented options; unknown keys are refused so typos do not pass silently."""
        known = {"seed", "alertsPerHour", "updatesPerAlert", "lagSeconds", "start", "count", "largeFraction",
                 "unusualFraction", "futureEnumFraction", "deviceGroups", "deviceCount", "defenderOrder"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown alert stream options: {', '.join(unknown)}")
        groups = options.get("deviceGroups") or catalog.DEFAULT_GROUPS
        if isinstance(groups, str) or not all(isinstance(g, str) and g for g in groups):
            raise ValueError("deviceGroups must be a list of non-empty names")
        start_value = options.get("start")
        start = timefmt.parse_iso(start_value) if start_value else now
        result = cls(
            seed=str(options.get("seed", tenant_id)),
            alerts_per_hour=_number(options, "alertsPerHour", 0.0),
            updates_per_alert=_number(options, "updatesPerAlert", 1.5),
            lag_ticks=int(_number(options, "lagSeconds", 180.0) * TICKS),
            start=start,
            count=int(_number(options, "count", 0)),
            large_fraction=_fraction(options, "largeFraction", 0.005),
            unusual_fraction=_fraction(options, "unusualFraction", 0.1),
            future_enum_fraction=_fraction(options, "futureEnumFraction", 0.05),
            device_groups=tuple(groups),
            device_count=max(1, int(_number(options, "deviceCount", 40))),
            defender_order=defender_order(options.get("defenderOrder", DEFAULT_DEFENDER_ORDER)),
        )
        if result.count and start > now:
            raise ValueError("start must not be after now when count is given")
        return result


# Defender documents no order for GET /api/alerts (https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts),
# so the local cloud serves any of these; the default is not the newest-first order a pager might assume.
DEFENDER_ORDERS = ("oldestFirst", "newestFirst", "shuffled")
DEFAULT_DEFENDER_ORDER = "oldestFirst"


def defender_order(value: Any) -> str:
    if value not in DEFENDER_ORDERS:
        raise ValueError(f"defenderOrder must be one of {', '.join(DEFENDER_ORDERS)}, got {value!r}")
    return str(value)


def _number(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _fraction(options: dict[str, Any], name: str, default: float) -> float:
    value = _number(options, name, default)
    if value > 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


def build_context(tenant_id: str, opts: StreamOptions) -> TenantContext:
    """Devices, users and analysts of a tenant, drawn from its seed."""
    rng = random.Random(f"{opts.seed}/pools")
    org = rng.choice(catalog.ORG_NAMES)
    domain = f"{org}.local"
    devices = []
    for index in range(opts.device_count):
        platform, build, version = rng.choice(catalog.OS_PLATFORMS)
        group_index = rng.randrange(len(opts.device_groups))
        devices.append(Device(
            dns_name=f"{rng.choice(catalog.DEVICE_PREFIXES)}-{index:03d}.{domain}",
            machine_id=f"{rng.getrandbits(160):040x}",
            aad_device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            group=opts.device_groups[group_index],
            group_id=1000 + group_index,
            os_platform=platform, os_build=build, version=version,
            ip_address=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            risk_score=rng.choice(("none", "low", "medium", "high")),
        ))
    users = []
    for _ in range(24):
        if rng.random() < 0.15:
            account, display = rng.choice(catalog.UNICODE_USERS)
        else:
            first, last = rng.choice(catalog.FIRST_NAMES), rng.choice(catalog.LAST_NAMES)
            account, display = f"{first}.{last}", f"{first.title()} {last.title()}"
        users.append(User(
            account_name=account, domain_name=org.upper(),
            user_sid=f"S-1-5-21-{rng.randrange(10**9, 4 * 10**9)}-{rng.randrange(10**9, 4 * 10**9)}-"
                     f"{rng.randrange(10**9, 4 * 10**9)}-{rng.randrange(1000, 99999)}",
            aad_user_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            upn=f"{account}@{org}.com", display_name=display,
        ))
    return TenantContext(tenant_id=tenant_id, seed=opts.seed, domain=domain, devices=devices, users=users,
                         analysts=list(catalog.ANALYSTS))


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def alert_id(created: int, rng: random.Random) -> str:
    """Defender's id shape: `da` + .NET ticks of creation + `_` + a signed 32-bit number."""
    return f"da{timefmt.dotnet_ticks(created)}_{rng.randint(-(2**31), 2**31 - 1)}"


def generate_record(opts: StreamOptions, ctx: TenantContext, key: str, created: int) -> AlertRecord:
    """One stream alert created at `created`, with its whole future update schedule."""
    rng = random.Random(f"{opts.seed}/alert/{key}")
    ident = alert_id(created, rng)
    template_index = rng.randrange(len(catalog.DETECTIONS))
    template = catalog.DETECTIONS[template_index]
    category, service, detection = template.category, "microsoftDefenderForEndpoint", template.detection_source
    if rng.random() < opts.future_enum_fraction:
        service, detection, _, category = rng.choice(catalog.FUTURE_SOURCES)
    evidence_bytes = 0
    if rng.random() < opts.large_fraction:
        # Most large alerts sit around 1-2 MB, the rest between 100 KB and 1 MB.
        evidence_bytes = int(rng.uniform(1_000_000, 2_000_000) if rng.random() < 0.6
                             else rng.uniform(100_000, 1_000_000))
    first_event = created - rng.randint(60, 3600) * TICKS - rng.randrange(TICKS)
    last_event = first_event + rng.randrange(max(1, created - first_event))
    record = AlertRecord(
        id=ident, content_key=f"{opts.seed}/content/{key}", created=created,
        first_event=first_event, last_event=last_event, category=category, service_source=service,
        detection_source=detection, incident_id=rng.randint(1000, 999_999),
        investigation_id=rng.randint(10_000, 9_999_999) if rng.random() < 0.6 else None,
        device_index=rng.randrange(len(ctx.devices)), evidence_bytes=evidence_bytes,
        template_index=template_index, unusual=rng.random() < opts.unusual_fraction,
    )
    first = AlertVersion(updated=created + rng.randint(1, 120) * TICKS + rng.randrange(TICKS),
                         status="new", severity=template.severity)
    record.versions.append(first)
    _schedule_updates(record, rng, opts.updates_per_alert, ctx)
    return record


def _schedule_updates(record: AlertRecord, rng: random.Random, mean: float, ctx: TenantContext) -> None:
    """Triage in the usual order: assign, maybe raise severity, resolve, then occasional comments."""
    current = record.versions[-1]
    for step in range(_poisson(rng, mean)):
        when = current.updated + int(rng.expovariate(1 / 2700) * TICKS) + 30 * TICKS + rng.randrange(TICKS)
        if step == 0:
            nxt = current.evolve(when, status="inProgress", assigned_to=rng.choice(ctx.analysts),
                                 comment=rng.choice(catalog.COMMENTS))
        elif step == 1 and current.severity in _SEVERITY_ORDER[:-1] and rng.random() < 0.4:
            raised = _SEVERITY_ORDER[_SEVERITY_ORDER.index(current.severity) + 1]
            nxt = current.evolve(when, severity=raised, comment="Severity raised after triage.")
        elif current.status != "resolved":
            classification, determination = rng.choice((
                ("truePositive", "malware"), ("truePositive", "multiStagedAttack"),
                ("truePositive", "compromisedAccount"), ("falsePositive", "notMalicious"),
                ("informationalExpectedActivity", "securityTesting"),
                ("informationalExpectedActivity", "lineOfBusinessApplication"), ("falsePositive", "other"),
            ))
            nxt = current.evolve(when, status="resolved", classification=classification,
                                 determination=determination, resolved=when,
                                 comment=rng.choice(catalog.COMMENTS))
        else:
            nxt = current.evolve(when, comment=rng.choice(catalog.COMMENTS))
        record.versions.append(nxt)
        current = nxt


class TenantStream:
    """The alerts a tenant's options produce; extends itself lazily as cloud time moves on."""

    def __init__(self, tenant_id: str, opts: StreamOptions, now: int) -> None:
        self.opts = opts
        self.ctx = build_context(tenant_id, opts)
        self._arrivals = random.Random(f"{opts.seed}/arrivals")
        self._next_index = 0
        self._backlog: list[int] = []
        stream_from = opts.start
        if opts.count:
            # A fixed backlog spread between start and the configuration time; the rate (if any)
            # continues from there.
            backlog_rng = random.Random(f"{opts.seed}/backlog")
            # Creation leaves room for the first version (<= 120 s later), so the whole backlog has
            # happened by `now`; only the lag can still hide its newest part.
            span = max(1, now - opts.start - 121 * TICKS)
            self._backlog = sorted(opts.start + backlog_rng.randrange(span) for _ in range(opts.count))
            stream_from = now
        self._next_arrival = self._draw_after(stream_from)

    def _draw_after(self, ticks: int) -> int | None:
        if self.opts.alerts_per_hour <= 0:
            return None
        gap = self._arrivals.expovariate(self.opts.alerts_per_hour / 3600.0)
        return ticks + max(1, int(gap * TICKS))

    def materialize(self, now: int) -> list[AlertRecord]:
        """Records created up to `now` that were not materialized yet, in creation order."""
        created: list[AlertRecord] = []
        if self._backlog:
            for ticks in self._backlog:
                created.append(generate_record(self.opts, self.ctx, f"b{self._next_index}", ticks))
                self._next_index += 1
            self._backlog = []
            logger.info("tenant %s: generated a backlog of %d alerts", self.ctx.tenant_id, len(created))
        while self._next_arrival is not None and self._next_arrival <= now:
            created.append(generate_record(self.opts, self.ctx, f"s{self._next_index}", self._next_arrival))
            self._next_index += 1
            self._next_arrival = self._draw_after(self._next_arrival)
        return created
