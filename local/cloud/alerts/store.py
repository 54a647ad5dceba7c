"""Per-tenant alert state of the local cloud and the two list APIs on top of it.

See the package docstring for the semantics the server and tests rely on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from local.cloud.gcpause import gc_paused

from . import content as content_mod
from . import enums, paging, render_defender, render_graph, schemas, timefmt
from .catalog import DETECTIONS
from .generator import StreamOptions, TenantStream, defender_order, generate_record
from .model import RECORD_FIELDS, AlertRecord, AlertVersion, TenantContext
from .odata import FilterError, Predicate, compile_filter

logger = logging.getLogger(__name__)

GRAPH_CONTEXT = "/v1.0/$metadata#security/alerts_v2"
DEFENDER_CONTEXT = "https://api.securitycenter.microsoft.com/api/$metadata#Alerts"

_ENUM_FIELDS = {"severity": "severity", "status": "status", "classification": "classification",
                "determination": "determination"}
_RENDER_FIELDS = {"title", "description", "recommendedActions", "mitreTechniques", "deviceGroup",
                  "threatFamilyName", "threatDisplayName", "actorDisplayName"}
_ADD_ONLY = {"id", "createdDateTime", "evidenceSizeBytes"}
_VERSION_FIELDS = {"severity", "status", "classification", "determination", "assignedTo",
                   "lastUpdateDateTime", "comment", "visibleAt"}
_ALLOWED_FIELDS = _RENDER_FIELDS | _ADD_ONLY | _VERSION_FIELDS | set(RECORD_FIELDS)


def canonical_hash(rendered: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a rendered alert (how ground truth hashes are computed)."""
    text = json.dumps(rendered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class _Tenant:
    """Records of one tenant, kept in list order: createdDateTime descending, then id ascending."""

    def __init__(self, tenant_id: str, opts: StreamOptions, now: int) -> None:
        self.opts = opts
        self.stream = TenantStream(tenant_id, opts, now)
        self.ctx: TenantContext = self.stream.ctx
        self.records: list[AlertRecord] = []
        self.by_id: dict[str, AlertRecord] = {}
        self.sorted = True
        self.explicit_count = 0
        self.hashes: dict[str, tuple[int, str, str]] = {}
        self.defender_order = opts.defender_order
        self.defender_calls = 0  # shuffled order: each call draws its own permutation from this count

    def add(self, record: AlertRecord) -> None:
        if record.id in self.by_id:
            raise ValueError(f"an alert with id {record.id!r} already exists")
        self.records.append(record)
        self.by_id[record.id] = record
        self.sorted = False

    def catch_up(self, now: int) -> None:
        for record in self.stream.materialize(now):
            if record.id in self.by_id:  # two arrivals in the same tick with the same draw: keep the first
                continue
            self.add(record)
        if not self.sorted:
            self.records.sort(key=lambda r: (-r.created, r.id))
            self.sorted = True

    def visible(self, now: int, predicate: Predicate | None,
                limit: int | None = None) -> list[tuple[AlertRecord, int, AlertVersion]]:
        """The matching visible alerts in list order; with `limit`, only the first `limit` of them (a page
        needs its slice and whether one more follows; scanning a 50,000-alert list to its end for each of
        its 50 pages costs seconds of CPU)."""
        self.catch_up(now)
        lag = self.opts.lag_ticks
        out = []
        for record in self.records:
            if limit is not None and len(out) >= limit:
                break
            found = record.visible_version(now, lag)
            if found is None:
                continue
            index, version = found
            if predicate is None or predicate(record, version):
                out.append((record, index, version))
        return out

    def defender_rows(self, now: int, predicate: Predicate | None, skip: int,
                      top: int) -> list[tuple[AlertRecord, int, AlertVersion]]:
        """The Defender list slice `[skip, skip + top)` in this tenant's Defender order (see the package
        docstring): newest first reads only what the slice needs, the other orders need every match."""
        if self.defender_order == "newestFirst":
            return self.visible(now, predicate, skip + top)[skip:]
        rows = self.visible(now, predicate)
        if self.defender_order == "oldestFirst":
            rows.reverse()
        else:
            self.defender_calls += 1
            random.Random(f"{self.opts.seed}/order/{self.defender_calls}").shuffle(rows)
        return rows[skip: skip + top]


class AlertStore:
    """Alert streams of every tenant of the local cloud, queried as Graph and as Defender."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.RLock()

    # -- state ---------------------------------------------------------------------------------------
    def configure_tenant(self, tenant_id: str, options: dict, now: dt.datetime) -> None:
        """(Re)start a tenant's stream from `options`; explicitly added alerts are kept."""
        ticks = timefmt.from_datetime(now)
        opts = StreamOptions.parse(tenant_id, dict(options or {}), ticks)
        with self._lock:
            old = self._tenants.get(tenant_id)
            tenant = _Tenant(tenant_id, opts, ticks)
            if old is not None and "defenderOrder" not in (options or {}):
                tenant.defender_order = old.defender_order
            if old is not None:
                tenant.explicit_count = old.explicit_count
                for record in old.records:
                    if record.explicit:
                        tenant.add(record)
            # The alerts that exist already are made now, not by the first API call: in Graph they exist
            # before anyone asks, and a 50,000-alert backlog takes seconds to generate.
            tenant.catch_up(ticks)
            self._tenants[tenant_id] = tenant
        logger.info("tenant %s: alert stream configured (seed=%s, alertsPerHour=%s, count=%s, lagSeconds=%s)",
                    tenant_id, opts.seed, opts.alerts_per_hour, opts.count, opts.lag_ticks / timefmt.TICKS_PER_SECOND)

    def set_defender_order(self, tenant_id: str, order: str, now: dt.datetime) -> str:
        """Change the order the tenant's Defender list is served in (ValueError for an unknown one)."""
        checked = defender_order(order)
        with self._lock:
            self._tenant(tenant_id, timefmt.from_datetime(now)).defender_order = checked
        logger.info("tenant %s: Defender list order %s", tenant_id, checked)
        return checked

    def defender_order(self, tenant_id: str) -> str | None:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            return tenant.defender_order if tenant else None

    def _tenant(self, tenant_id: str, now: int) -> _Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = _Tenant(tenant_id, StreamOptions.parse(tenant_id, {}, now), now)
            self._tenants[tenant_id] = tenant
        return tenant

    def add_alert(self, tenant_id: str, fields: dict, now: dt.datetime) -> dict:
        """Add an alert at `now` (fields may set times, enums, texts, id, evidenceSizeBytes ...)."""
        ticks = timefmt.from_datetime(now)
        _check_fields(fields, _ALLOWED_FIELDS)
        with self._lock:
            tenant = self._tenant(tenant_id, ticks)
            tenant.catch_up(ticks)
            created = _time(fields, "createdDateTime", ticks)
            key = f"x{tenant.explicit_count}"
            record = generate_record(tenant.opts, tenant.ctx, key, created)
            tenant.explicit_count += 1
            record.explicit = True
            record.versions = []
            if "id" in fields:
                if not isinstance(fields["id"], str) or not fields["id"]:
                    raise ValueError("id must be a non-empty string")
                record.id = fields["id"]
            if "evidenceSizeBytes" in fields:
                record.evidence_bytes = _non_negative_int(fields, "evidenceSizeBytes")
            for name, attr in RECORD_FIELDS.items():
                if name in fields:
                    setattr(record, attr, _record_value(name, fields[name]))
            record.overrides = {name: fields[name] for name in _RENDER_FIELDS if name in fields}
            first = AlertVersion(updated=_time(fields, "lastUpdateDateTime", ticks), status="new",
                                 severity=catalog_severity(record))
            record.versions.append(_apply_version_fields(first, fields, first.updated))
            tenant.add(record)
            tenant.catch_up(ticks)
            logger.info("tenant %s: alert %s added", tenant_id, record.id)
            return self._graph_view(tenant, record, len(record.versions) - 1)

    def update_alert(self, tenant_id: str, alert_id: str, changes: dict, now: dt.datetime) -> dict:
        """Append a version at `now` (or the given lastUpdateDateTime). Raises KeyError for an unknown id.

        The stream's not-yet-happened updates of that alert are dropped: the explicit update takes it over.
        """
        ticks = timefmt.from_datetime(now)
        _check_fields(changes, _ALLOWED_FIELDS - _ADD_ONLY)
        with self._lock:
            tenant = self._tenant(tenant_id, ticks)
            tenant.catch_up(ticks)
            record = tenant.by_id.get(alert_id)
            if record is None:
                raise KeyError(alert_id)
            happened = [v for v in record.versions if v.updated <= ticks] or record.versions[:1]
            base = happened[-1]
            updated = _time(changes, "lastUpdateDateTime", ticks)
            overrides = dict(base.overrides or {})
            for name in _RENDER_FIELDS | set(RECORD_FIELDS):
                if name in changes:
                    overrides[name] = _record_value(name, changes[name]) if name in RECORD_FIELDS else changes[name]
            version = _apply_version_fields(base.evolve(updated, overrides=overrides or None), changes, updated)
            # Only now, with the changes validated, does the alert leave the stream's schedule.
            record.versions = [*happened, version]
            record.explicit = True
            tenant.hashes.pop(record.id, None)
            logger.info("tenant %s: alert %s updated", tenant_id, alert_id)
            return self._graph_view(tenant, record, len(record.versions) - 1)

    def ground_truth(self, tenant_id: str, now: dt.datetime, *, with_hashes: bool = True) -> list[dict]:
        """Every alert visible at `now`, latest visible version, with hashes of both renderings.

        Hashing renders every alert (about 0.2 ms each, 30-60 ms for a 1-2 MB one; cached per version);
        `with_hashes=False` skips it for bulk checks that only need ids and times.
        """
        ticks = timefmt.from_datetime(now)
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            if tenant is None:
                return []
            out = []
            for record, index, version in tenant.visible(ticks, None):
                row = {
                    "id": record.id,
                    "createdDateTime": timefmt.format_ticks(record.created),
                    "lastUpdateDateTime": timefmt.format_ticks(version.updated),
                    "severity": version.severity,
                    "status": version.status,
                }
                out.append(row)
                if not with_hashes:
                    continue
                cached = tenant.hashes.get(record.id)
                if cached is None or cached[0] != index:
                    content = content_mod.build_content(record, version, tenant.ctx)
                    graph = render_graph.render(record, index, version, content, tenant.ctx, True)
                    defender = render_defender.render(record, index, version, content, tenant.ctx, True)
                    cached = (index, canonical_hash(graph), canonical_hash(defender))
                    tenant.hashes[record.id] = cached
                row["graphHash"], row["defenderHash"] = cached[1], cached[2]
            return out

    # -- APIs ----------------------------------------------------------------------------------------
    def query_graph(self, tenant_id: str, query: Mapping[str, str], prefer: str | None, now: dt.datetime,
                    base_url: str) -> tuple[int, dict]:
        ticks = timefmt.from_datetime(now)
        include_unknown = _prefers_unknown_members(prefer)
        try:
            parsed = paging.parse_graph(query)
            predicate = compile_filter(parsed.filter, schemas.GRAPH) if parsed.filter is not None else None
        except (paging.QueryError, FilterError) as exc:
            return 400, paging.graph_error(str(exc), ticks)
        offset = parsed.offset if parsed.offset is not None else parsed.skip
        size = parsed.top or paging.GRAPH_MAX_TOP
        # Without $count only the page and the one alert that proves a next page are needed.
        limit = None if parsed.count else offset + size + 1
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            rows = tenant.visible(ticks, predicate, limit) if tenant else []
            with gc_paused():
                values = [self._graph_render(tenant, record, index, version, include_unknown)
                          for record, index, version in rows[offset: offset + size]] if tenant else []
        body: dict[str, Any] = {"@odata.context": f"{base_url.rstrip('/')}{GRAPH_CONTEXT}"}
        if parsed.count:
            body["@odata.count"] = len(rows)
        if offset + size < len(rows):
            body["@odata.nextLink"] = paging.graph_next_link(base_url, parsed, offset + size)
        body["value"] = values
        return 200, body

    def query_defender(self, tenant_id: str, query: Mapping[str, str], now: dt.datetime) -> tuple[int, dict]:
        ticks = timefmt.from_datetime(now)
        try:
            parsed = paging.parse_defender(query)
            predicate = compile_filter(parsed.filter, schemas.DEFENDER) if parsed.filter is not None else None
        except paging.QueryError as exc:
            return 400, paging.defender_error(str(exc), exc.code)
        except FilterError as exc:
            return 400, paging.defender_error(str(exc), "ODataError")
        with self._lock:
            tenant = self._tenants.get(tenant_id)
            values = []
            if tenant is not None:
                rows = tenant.defender_rows(ticks, predicate, parsed.skip, parsed.top)
                with gc_paused():
                    for record, index, version in rows:
                        content = content_mod.build_content(record, version, tenant.ctx, parsed.expand_evidence)
                        values.append(render_defender.render(record, index, version, content, tenant.ctx,
                                                             parsed.expand_evidence))
        return 200, {"@odata.context": DEFENDER_CONTEXT, "value": values}

    # -- helpers -------------------------------------------------------------------------------------
    def _graph_render(self, tenant: _Tenant, record: AlertRecord, index: int, version: AlertVersion,
                      include_unknown: bool) -> dict:
        content = content_mod.build_content(record, version, tenant.ctx)
        return render_graph.render(record, index, version, content, tenant.ctx, include_unknown)

    def _graph_view(self, tenant: _Tenant, record: AlertRecord, index: int) -> dict:
        return self._graph_render(tenant, record, index, record.versions[index], True)


def catalog_severity(record: AlertRecord) -> str:
    return DETECTIONS[record.template_index].severity


def _prefers_unknown_members(prefer: str | None) -> bool:
    if not prefer:
        return False
    return any(part.strip().lower() == "include-unknown-enum-members" for part in prefer.split(","))


def _check_fields(fields: dict, allowed: set[str]) -> None:
    if not isinstance(fields, dict):
        raise ValueError("alert fields must be a JSON object")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"unknown alert fields: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _time(fields: dict, name: str, default: int) -> int:
    value = fields.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 string")
    return timefmt.parse_iso(value)


def _non_negative_int(fields: dict, name: str) -> int:
    value = fields[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


_RECORD_PARSERS: dict[str, Callable[[Any], Any]] = {
    "category": str,
    "serviceSource": lambda v: enums.normalize("serviceSource", v),
    "detectionSource": lambda v: enums.normalize("detectionSource", v),
    "incidentId": int,
    "investigationId": lambda v: None if v is None else int(v),
    "lastActivityDateTime": timefmt.parse_iso,
    "firstActivityDateTime": timefmt.parse_iso,
}


def _record_value(name: str, value: Any) -> Any:
    try:
        return _RECORD_PARSERS[name](value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid {name}: {exc}") from None


def _apply_version_fields(version: AlertVersion, fields: dict, updated: int) -> AlertVersion:
    for name, attr in _ENUM_FIELDS.items():
        if name in fields:
            setattr(version, attr, enums.normalize(name, str(fields[name])))
    if "assignedTo" in fields:
        value = fields["assignedTo"]
        if value is not None and not isinstance(value, str):
            raise ValueError("assignedTo must be a string or null")
        version.assigned_to = value
    if "comment" in fields:
        version.comment = str(fields["comment"]) if fields["comment"] is not None else None
    if "visibleAt" in fields:
        version.visible_at = _time(fields, "visibleAt", updated)
    if version.status != "resolved":
        version.resolved = None
    elif version.resolved is None:
        version.resolved = updated
    return version
