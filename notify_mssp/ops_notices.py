"""Operational notices to the MSSP's ops address (OPS_EMAIL): a tenant's consent revoked, permission
removed or not licensed; a tenant failing OPS_FAILING_RUNS runs in a row or silent for OPS_SILENT_HOURS;
the onboarding backfill count; alerts that became visible later than the ingestion overlap (once per
tenant per UTC day); the MSSP credential failing or about to expire.

Each incident gets one notice when it opens and one when it clears (the backfill count is a one-off and
never clears). Incident state is stored in the Incidents table, so a restarted host or a second instance
never repeats a notice: PartitionKey `notice`, RowKey `<kind>|<subject>` (shared.incidents.notice_key;
subject: a tenant GUID, or `mssp`), columns `kind`, `subject`, `open`, `summary`, `openedAt`, `occurrences`,
`notice` and `clearNotice` (`pending` until the e-mail went out, then `sent`; `none` when no ops address is set or the
clear is silent), `noticeSentAt`, `clearedAt`, `clearNoticeSentAt`. Opening and closing are conditional
(ETag) writes, so of two evaluators only one opens an incident; a notice that could not be sent stays
`pending` and goes out at the next evaluation. The record of the MSSP credential failing (shared.incidents,
which owns the table's keys), written by ingestion and by onboarding verification alike, is read, never
written, here: one notice however many tenants and callers met the failure.

`check_operations` evaluates every condition from stored state; the ops timer (notify_mssp.ops_timer)
runs it. Other code may call `raise_incident` / `clear_incident` directly.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableClient

from notify_mssp.email import Sender, render_notice_email
from notify_mssp.ratecap import SendRateCap
from notify_mssp.transports import Transport, get_transport
from shared.alerts import ALERT_PREFIX, ALERT_RANGE_END
from shared.incidents import MSSP_SUBJECT, mssp_credential_incident, new_notice, read_notice, write_notice
from shared.settings import Settings, SettingsError, get_settings
from shared.tables import Table, get_table_store
from shared.tenants import TENANT_PARTITION, Tenant, TenantStatus

logger = logging.getLogger(__name__)

MSSP = MSSP_SUBJECT
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
class Incident:
    kind: str
    subject: str  # tenant GUID or "mssp"
    summary: str  # the notice's subject line
    lines: tuple[str, ...] = ()
    clears: bool = True  # False: a one-off notice (the backfill count)
    notify: bool = True  # False: recorded without a notice (a backfill of nothing)


@dataclass
class NoticeContext:
    """What raising and clearing need: the Incidents table, where notices go and how."""

    incidents: TableClient
    recipients: tuple[str, ...]
    transport: Callable[[], Transport]
    rate_cap: SendRateCap | None = None
    sender: Sender | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def _read(ctx: NoticeContext, kind: str, subject: str) -> tuple[dict[str, Any] | None, str | None]:
    return read_notice(ctx.incidents, kind, subject)


def _write(ctx: NoticeContext, row: dict[str, Any], etag: str | None) -> str | None:
    """Create (no etag) or replace under the etag; the new etag, or None when someone else won."""
    return write_notice(ctx.incidents, row, etag)


def _deliver(ctx: NoticeContext, subject: str, lines: list[str], token: str) -> bool:
    """Send one notice; False when it must be tried again later (rate cap, transport failure)."""
    if ctx.rate_cap is not None and ctx.rate_cap.try_acquire(1) < 1:
        logger.info("operational notice %r waits for the send rate cap", subject)
        return False
    message = render_notice_email(subject, lines, list(ctx.recipients), message_id=token, sender=ctx.sender)
    outcome = ctx.transport().send(message)
    if outcome.status == "sent":
        logger.info("operational notice sent: %s", subject)
        return True
    if outcome.status == "permanent":
        # The ops address itself is refused: retrying cannot help, and the incident stays recorded.
        logger.error("operational notice %r refused for good: %s (check OPS_EMAIL)", subject, outcome.detail)
        return True
    logger.warning("operational notice %r not sent yet: %s", subject, outcome.detail)
    return False


def _mark(ctx: NoticeContext, row: dict[str, Any], etag: str | None, column: str) -> None:
    row[column] = "sent"
    row[f"{column}SentAt"] = ctx.clock()
    if _write(ctx, row, etag) is None:
        logger.warning("incident %s changed while its notice was sent; the notice stays marked pending",
                       row["RowKey"])


def raise_incident(ctx: NoticeContext, incident: Incident) -> bool:
    """Open the incident if it is not open and send its notice once; True when a notice went out now."""
    row, etag = _read(ctx, incident.kind, incident.subject)
    if row is not None and row.get("open"):
        if row.get("notice") != "pending":
            return False  # open and already announced: nothing to repeat
    else:
        row = new_notice(
            incident.kind, incident.subject, open=True, summary=incident.summary[:500],
            openedAt=ctx.clock(), occurrences=int((row or {}).get("occurrences") or 0) + 1,
            notice="pending" if ctx.recipients and incident.notify else "none", clearNotice="", clears=incident.clears)
        etag = _write(ctx, row, etag)
        if etag is None:
            return False  # another evaluator opened it at the same moment and announces it
        logger.warning("incident opened: %s (%s)", incident.summary, row["RowKey"])
        if not ctx.recipients or not incident.notify:
            if not ctx.recipients:
                logger.warning("OPS_EMAIL is not set: the incident is only recorded")
            return False
    token = f"notice-{row['RowKey']}-{row['occurrences']}-open"
    if not _deliver(ctx, incident.summary, list(incident.lines), token):
        return False
    _mark(ctx, row, etag, "notice")
    return True


def clear_incident(ctx: NoticeContext, kind: str, subject: str, *, summary: str = "",
                   lines: tuple[str, ...] = (), notify: bool = True) -> bool:
    """Close an open incident and send its clearing notice once (unless `notify` is False); True when a
    notice went out now. A one-off incident (`clears` false) is never closed."""
    row, etag = _read(ctx, kind, subject)
    if row is None or row.get("clears") is False:
        return False
    if row.get("open"):
        row.update(open=False, clearedAt=ctx.clock(),
                   clearNotice="pending" if notify and ctx.recipients and row.get("notice") == "sent" else "none")
        etag = _write(ctx, row, etag)
        if etag is None:
            return False
        logger.info("incident cleared: %s", row["RowKey"])
    if row.get("clearNotice") != "pending":
        return False
    text = summary or f"Resolved: {row.get('summary', row['RowKey'])}"
    token = f"notice-{row['RowKey']}-{row.get('occurrences', 0)}-clear"
    if not _deliver(ctx, text, list(lines) or [f"Resolved at {ctx.clock():%Y-%m-%d %H:%M} UTC."], token):
        return False
    _mark(ctx, row, etag, "clearNotice")
    return True


def is_recorded(ctx: NoticeContext, kind: str, subject: str) -> bool:
    return _read(ctx, kind, subject)[0] is not None


# --- evaluating every condition from stored state -------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    failing_runs: int
    silent_hours: int
    expiry_warning_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(int(settings.get("OPS_FAILING_RUNS")), int(settings.get("OPS_SILENT_HOURS")),
                   int(settings.get("OPS_CREDENTIAL_WARNING_DAYS")))


def _name(row: dict[str, Any]) -> str:
    return f"{row.get('displayName') or 'tenant'} ({row['RowKey']})"


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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


def _check_tenant(ctx: NoticeContext, row: dict[str, Any], alerts: TableClient, limits: Thresholds,
                  now: datetime) -> None:
    tenant = Tenant(row)
    tenant_id, status, name = tenant.id, tenant.status, _name(row)
    quiet = status in _QUIET_STATUSES
    for kind, meaning in ACCESS_KINDS.items():
        if status == kind:
            reason = tenant.status_reason
            since = _aware(tenant.status_changed_at) or now
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
    activated = _aware(tenant.activated_at)
    last = last_alert_stored(row) or activated
    if active and last is not None and now - last > timedelta(hours=limits.silent_hours):
        summary = f"{name}: no alert stored for {limits.silent_hours} hours"
        raise_incident(ctx, Incident("tenant_silent", tenant_id, summary, (
            f"Customer: {name}", f"Last alert stored: {last:%Y-%m-%d %H:%M} UTC",
            f"Last successful fetch: {_aware(tenant.last_success) or 'never'}")))
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


def credential_expiry(settings: Settings) -> datetime | None:
    """When the multi-tenant app's credential expires: the certificate's notAfter, or the date given for a
    secret (MSSP_CREDENTIAL_EXPIRES_AT); None when unknown (the federated form has no expiry)."""
    mode = settings.get("MSSP_APP_CREDENTIAL")
    if mode == "certificate":
        return _certificate_expiry(settings)
    if mode == "secret":
        return settings.get("MSSP_CREDENTIAL_EXPIRES_AT")  # type: ignore[no-any-return]
    return None


def _certificate_expiry(settings: Settings) -> datetime | None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    from shared.app_credentials import certificate_source

    try:
        source = certificate_source(settings)
        data = source.get("certificate_data") or Path(source["certificate_path"]).read_bytes()
        if b"-----BEGIN" in data:
            certificate = x509.load_pem_x509_certificates(data)[0]
        else:
            certificate = pkcs12.load_key_and_certificates(data, None)[1]
    except (SettingsError, ValueError, OSError, IndexError, KeyError, binascii.Error) as exc:
        logger.error("MSSP_APP_CERTIFICATE: its expiry could not be read (%s)", type(exc).__name__)
        return None
    return certificate.not_valid_after_utc if certificate is not None else None


def _check_mssp(ctx: NoticeContext, settings: Settings, limits: Thresholds, now: datetime) -> None:
    record = mssp_credential_incident(ctx.incidents)
    if record.get("open"):
        since = _aware(record.get("firstSeen")) or now
        raise_incident(ctx, Incident("mssp_credential", MSSP, "The MSSP app's credential is failing", (
            f"Since {since:%Y-%m-%d %H:%M} UTC, {record.get('count') or 1} failures.",
            f"Error: {record.get('code') or '-'}: {record.get('message') or '-'}",
            "Every tenant is affected: no alerts are fetched until the credential is fixed.",
            "Onboarding waits too: customers who consented stay verifying, their verification time does not "
            "run, and no onboarding failure is reported for them.")))
    else:
        clear_incident(ctx, "mssp_credential", MSSP, summary="The MSSP app's credential works again")
    expires = credential_expiry(settings)
    if expires is not None and expires - now < timedelta(days=limits.expiry_warning_days):
        when = "expired" if expires <= now else "expires"
        kind = settings.get("MSSP_APP_CREDENTIAL")
        summary = f"The MSSP app's credential {when} on {expires:%Y-%m-%d}"
        raise_incident(ctx, Incident("mssp_credential_expiring", MSSP, summary, (
            f"The {kind} of the multi-tenant app {when} on {expires:%Y-%m-%d %H:%M} UTC.",
            "Renew it, update the app setting (Key Vault), and set MSSP_CREDENTIAL_EXPIRES_AT for a secret.")))
    else:
        clear_incident(ctx, "mssp_credential_expiring", MSSP, summary="The MSSP app's credential was renewed")


def check_operations(ctx: NoticeContext, tenants: TableClient, alerts: TableClient, settings: Settings) -> None:
    """Evaluate every operational condition once; one tenant's trouble never stops the others' checks."""
    now = ctx.clock()
    limits = Thresholds.from_settings(settings)
    for entity in tenants.query_entities("PartitionKey eq @pk", parameters={"pk": TENANT_PARTITION}):
        row = dict(entity)
        try:
            _check_tenant(ctx, row, alerts, limits, now)
        except Exception as exc:  # noqa: BLE001 - the next tenant's notices must still go out
            logger.error("tenant %s: operational checks failed: %s", row.get("RowKey"), type(exc).__name__)
    _check_mssp(ctx, settings, limits, now)


def notice_context(settings: Settings | None = None) -> NoticeContext:
    """The context the app uses: the app's tables, OPS_EMAIL, the configured transport and rate cap."""
    current = settings or get_settings()
    store = get_table_store()
    return NoticeContext(incidents=store.table(Table.INCIDENTS), recipients=tuple(current.get("OPS_EMAIL")),
                         transport=get_transport,
                         rate_cap=SendRateCap.from_settings(store.table(Table.SEND_RATE), current))
