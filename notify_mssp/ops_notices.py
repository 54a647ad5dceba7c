"""Operational notices to the MSSP's ops address (OPS_EMAIL): a tenant's consent revoked, permission
removed or not licensed; a tenant failing OPS_FAILING_RUNS runs in a row or silent for OPS_SILENT_HOURS; a
tenant whose ingestion message went to the poison queue (recorded by ingestion in shared.incidents);
the onboarding backfill count; alerts that became visible later than the ingestion overlap (once per
tenant per UTC day); the MSSP credential failing or about to expire.

Each incident gets one notice when it opens and one when it clears (the backfill count is a one-off and
never clears), however many evaluators run: notify_mssp.incident_records keeps the incidents' records (the
Incidents table's notice rows, whose columns it describes) and notify_mssp.notice_mail renders and sends the
notices. This module evaluates each tenant's conditions from stored state; notify_mssp.mssp_checks the MSSP's
own (its credential failing or about to expire).

`check_operations` evaluates every condition once; the ops timer (notify_mssp.ops_timer) runs it with what
notify_mssp.wiring builds (`notice_context`, `ops_checks`). Other code may call
notify_mssp.incident_records.raise_incident / clear_incident directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError
from azure.data.tables import TableClient

from notify_mssp.config import CredentialExpiryConfig, Thresholds
from notify_mssp.incident_records import Incident, NoticeContext, clear_incident, is_recorded, raise_incident
from notify_mssp.mssp_checks import CertificateSource, aware, check_mssp
from shared.alerts import ALERT_PREFIX, ALERT_RANGE_END
from shared.incidents import poisoned_ingestions
from shared.tenants import TENANT_PARTITION, Tenant, TenantStatus

logger = logging.getLogger(__name__)

ACCESS_KINDS = {
    TenantStatus.CONSENT_REVOKED.value:
        "consent to the MSSP's app was revoked (the enterprise app is missing or disabled)",
    TenantStatus.PERMISSION_MISSING.value: "the MSSP's app lost its alert read permission",
    TenantStatus.NOT_LICENSED.value:
        "the tenant is not licensed for the alert API (Defender for Endpoint missing or disabled)",
}
# The MSSP did this itself: incidents close without a notice.
_QUIET_STATUSES = {TenantStatus.DISABLED, TenantStatus.OFFBOARDED}


@dataclass(frozen=True)
class OpsChecks:
    """What the evaluation reads besides stored state (notify_mssp.wiring.ops_checks builds it)."""

    limits: Thresholds
    credential: CredentialExpiryConfig
    certificate: CertificateSource  # the multi-tenant app's certificate, read only when it is one


def _name(row: dict[str, Any]) -> str:
    return f"{row.get('displayName') or 'tenant'} ({row['RowKey']})"


def last_alert_stored(row: dict[str, Any]) -> datetime | None:
    """When the tenant last stored an alert: the time in its last published feed key (`feed|<ns>|...`)."""
    parts = (Tenant(row).feed_published or "").split("|")
    if len(parts) >= 2 and parts[1].isdigit():
        return datetime.fromtimestamp(int(parts[1]) / 1e9, UTC)
    return None


def backfill_count(alerts: TableClient, tenant_id: str, activated: datetime) -> int:
    """Alerts stored for the tenant that were created before it became active (stored without a `new`
    obligation, fetch_alerts/STORAGE.md)."""
    boundary = activated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    rows = alerts.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi and createdDateTime lt @boundary",
        parameters={"pk": tenant_id, "lo": ALERT_PREFIX, "hi": ALERT_RANGE_END, "boundary": boundary},
        select=["RowKey"])
    return sum(1 for _ in rows)


def _check_late_arrivals(ctx: NoticeContext, row: dict[str, Any], name: str) -> None:
    """One notice per tenant and UTC day on which alerts became visible later than the ingestion overlap
    (ingestion's `lagSummary`, fetch_alerts/visibility.py): those the regular pass could no longer read were
    stored by the hourly or daily re-read, their e-mails late. A one-off per day: subject
    `<tenant>|<YYYY-MM-DD>`, never cleared."""
    try:
        lag = json.loads(Tenant(row).lag_summary or "{}")
    except ValueError:
        return
    late, day = int(lag.get("dayBeyondOverlap") or 0), str(lag.get("day") or "")
    if late <= 0 or not day:
        return
    tenant_id = row["RowKey"]
    overlap = int(lag.get("overlapSeconds") or 0) // 60
    raise_incident(ctx, Incident("late_arrivals", f"{tenant_id}|{day}",
                                 f"{name}: alerts became visible later than the {overlap}-minute overlap", (
        f"Customer: {name}",
        f"On {day} (UTC) so far: {late} alert versions became visible in the Microsoft API more than {overlap} "
        "minutes after their last update. Those the regular fetch could no longer read were stored by the "
        f"hourly or daily re-read ({lag.get('foundByReread')} in the last 24 hours), so their notifications "
        "went out late.",
        f"Last 24 hours: {lag.get('count')} versions measured, lag p50 {lag.get('p50Seconds')} s, p95 "
        f"{lag.get('p95Seconds')} s, max {lag.get('maxSeconds')} s; {lag.get('beyondOverlap')} beyond the overlap.",
        "If this repeats, raise FETCH_OVERLAP_MINUTES above the p95 (GET /api/tenants shows it per tenant)."),
        clears=False))


def _check_poisoned(ctx: NoticeContext, row: dict[str, Any], record: dict[str, Any] | None) -> None:
    """One notice while the tenant's last poisoned ingestion message (the host gave up on it after every
    delivery failed, fetch_alerts.runner.record_poisoned) is newer than its last successful ingestion; cleared
    by the next success. Tenants without such a record cost nothing here."""
    if record is None:
        return
    tenant = Tenant(row)
    tenant_id, name, active = tenant.id, _name(row), tenant.status == TenantStatus.ACTIVE
    last_seen, last_success = aware(record.get("lastSeen")), aware(tenant.last_success)
    if active and last_seen is not None and (last_success is None or last_success < last_seen):
        raise_incident(ctx, Incident("ingestion_poisoned", tenant_id, f"{name}: alert ingestion keeps failing", (
            f"Customer: {name}",
            f"On {last_seen:%Y-%m-%d %H:%M} UTC the tenant's ingestion message (run {record.get('lastRunId')}) failed "
            "every delivery and was moved to the poison queue ingest-tenants-poison "
            f"({record.get('count')} such messages so far).",
            "Such failures are storage or internal errors that could not be recorded on the tenant; the app "
            f"logs name them ('tenant {tenant_id}: ...').",
            "Each tick enqueues the tenant again; this notice clears at its next successful ingestion.")))
    else:
        clear_incident(ctx, "ingestion_poisoned", tenant_id, notify=active,
                       summary=f"{name}: alert ingestion works again")


def _check_tenant(ctx: NoticeContext, row: dict[str, Any], alerts: TableClient, limits: Thresholds,
                  now: datetime) -> None:
    tenant = Tenant(row)
    tenant_id, status, name = tenant.id, tenant.status, _name(row)
    quiet = status in _QUIET_STATUSES
    for kind, meaning in ACCESS_KINDS.items():
        if status == kind:
            reason = tenant.status_reason
            since = aware(tenant.status_changed_at) or now
            raise_incident(ctx, Incident(kind, tenant_id, f"{name}: {meaning}", (
                f"Customer: {name}", f"Status: {status} since {since:%Y-%m-%d %H:%M} UTC",
                f"Reason: {reason or meaning}",
                "No alerts are fetched from this tenant until it is fixed; a fresh consent link is at "
                f"POST /api/tenants/{tenant_id}/consent.")))
        else:
            clear_incident(ctx, kind, tenant_id, notify=not quiet,
                           summary=f"{name}: resolved, status is now {status or 'unknown'}")
    active = status == TenantStatus.ACTIVE
    if active:
        _check_late_arrivals(ctx, row, name)
    failures = tenant.consecutive_failures
    if active and failures >= limits.failing_runs:
        summary = f"{name}: alert fetching failed {failures} runs in a row"
        raise_incident(ctx, Incident("tenant_failing", tenant_id, summary, (
            f"Customer: {name}", f"Consecutive failed runs: {failures}",
            f"Last error: {tenant.last_error_class or '-'}: {tenant.last_error or '-'}")))
    elif failures == 0 or not active:
        clear_incident(ctx, "tenant_failing", tenant_id, notify=active,
                       summary=f"{name}: alert fetching works again")
    activated = aware(tenant.activated_at)
    last = last_alert_stored(row) or activated
    if active and last is not None and now - last > timedelta(hours=limits.silent_hours):
        summary = f"{name}: no alert stored for {limits.silent_hours} hours"
        raise_incident(ctx, Incident("tenant_silent", tenant_id, summary, (
            f"Customer: {name}", f"Last alert stored: {last:%Y-%m-%d %H:%M} UTC",
            f"Last successful fetch: {aware(tenant.last_success) or 'never'}")))
    else:
        clear_incident(ctx, "tenant_silent", tenant_id, notify=active, summary=f"{name}: alerts arrive again")
    if active and activated is not None and tenant.pass_complete \
            and not is_recorded(ctx, "backfill", tenant_id):
        count = backfill_count(alerts, tenant_id, activated)
        # Nothing backfilled, nothing to tell: only recorded, so the count is taken once.
        raise_incident(ctx, Incident("backfill", tenant_id, f"{name}: onboarding backfill of {count} alerts", (
            f"Customer: {name}",
            f"{count} alerts created before the tenant became active ({activated:%Y-%m-%d %H:%M} UTC) were stored.",
            "Like Defender, no notification is sent for them; they are available from GET /api/alerts."),
            clears=False, notify=count > 0))


def check_operations(ctx: NoticeContext, tenants: TableClient, alerts: TableClient, checks: OpsChecks) -> None:
    """Evaluate every operational condition once; one tenant's trouble never stops the others' checks."""
    now = ctx.clock()
    try:
        poisoned = poisoned_ingestions(ctx.incidents)
    except AzureError as exc:  # the other checks still run; the next evaluation reads the records again
        logger.error("poisoned ingestion records unreadable: %s", type(exc).__name__)
        poisoned = {}
    for entity in tenants.query_entities("PartitionKey eq @pk", parameters={"pk": TENANT_PARTITION}):
        row = dict(entity)
        try:
            _check_tenant(ctx, row, alerts, checks.limits, now)
            _check_poisoned(ctx, row, poisoned.get(str(row["RowKey"])))
        except Exception as exc:  # noqa: BLE001 - the next tenant's notices must still go out
            logger.error("tenant %s: operational checks failed: %s", row.get("RowKey"), type(exc).__name__)
    check_mssp(ctx, checks.credential, checks.certificate, checks.limits, now)
