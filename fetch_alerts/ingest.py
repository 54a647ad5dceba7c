"""One tenant's ingestion run: page, store, publish, move the cursor, record health.

Every failure is caught here and classified, so one tenant never stops another. Refusals that mean the
tenant's access is gone change its status (with the audit trail); the MSSP's own broken credential is
recorded once, globally, and leaves tenant statuses alone (shared/errors.py has the classification).
Storage that failed in transit or asked to be retried later (`storage_unavailable`) is not the tenant's
failure either: it is raised, and fails the queue message (fetch_alerts/runner.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.data.tables import TableClient

from fetch_alerts import feed, visibility
from fetch_alerts.config import IngestionConfig
from fetch_alerts.cursor import TenantRow, activated_ticks, completed_cursor, cursor_ticks, start_state
from fetch_alerts.http import ApiClient
from fetch_alerts.normalise import InvalidAlert, normalise
from fetch_alerts.ratelimit import BudgetExhausted
from fetch_alerts.sources import Page, Pager, Prefetcher
from fetch_alerts.store import AlertWriter, Prepared
from shared.access_check import APP_NOT_FOUND_SINCE, app_not_found_is_the_mssps, app_not_found_streak
from shared.alert_sources import AlertSource, ApiHosts
from shared.errors import (
    AppNotFound,
    ConsentRevoked,
    MicrosoftError,
    MsspCredentialError,
    NotLicensed,
    PermissionMissing,
)
from shared.incidents import (  # noqa: F401 - close_mssp_incident is the runner's, from here
    close_mssp_incident,
    record_mssp_credential_failure,
)
from shared.payload import encode
from shared.tenants import Tenant, TenantRegistry, TenantStatus

logger = logging.getLogger(__name__)

# Columns to write with the merge that completes a regular pass, from the tenant's row and the time (ingest_tenant).
CompletionColumns = Callable[[dict[str, Any], datetime], dict[str, Any]]

_STATUS_FOR: dict[type[MicrosoftError], TenantStatus] = {
    ConsentRevoked: TenantStatus.CONSENT_REVOKED,
    PermissionMissing: TenantStatus.PERMISSION_MISSING,
    NotLicensed: TenantStatus.NOT_LICENSED,
}


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a failure of ingestion is Table Storage failing in transit or asking to be retried later, rather than
    anything about the tenant: a request that never got an answer (azure-core's ServiceRequestError: no connection;
    ServiceResponseError: the connection dropped or timed out after the request went out, as when a load balancer,
    NAT or the storage front end reset a pooled connection), or a 5xx answer, which azure-core's retry policy
    already retried for the methods it may (a 503 ServerBusy or a 500 OperationTimedOut is storage's documented
    "back off and retry": https://learn.microsoft.com/azure/storage/tables/scalability-targets,
    https://learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes).

    Only storage raises azure-core's errors out of a pass: the alert APIs' client (fetch_alerts/http.py) and the
    token requests (shared/identity.py) turn their own transport failures into shared.errors' MicrosoftError.
    azure-core does not retry a POST, PATCH or MERGE whose connection failed (its retry policy's methods are HEAD,
    GET, PUT, DELETE, OPTIONS and TRACE; azure/core/pipeline/policies/_retry.py), and urllib3 cannot tell a request
    that never left a dead pooled connection from one whose answer was lost, so such a write fails at its first
    attempt."""
    if isinstance(exc, (StorageUnavailable, ServiceRequestError, ServiceResponseError)):
        return True
    return isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500


class StorageUnavailable(Exception):  # noqa: N818 - a condition of storage, named as the runner's result
    """Storage failed under a tenant's regular pass or re-read (`storage_unavailable`, the cause): raised so that the
    queue message fails. `outcome` is what the pass or re-read did until then (a TenantOutcome or a
    fetch_alerts.reread.RereadOutcome), for the runner's log line."""

    def __init__(self, tenant_id: str, cause: BaseException, outcome: object) -> None:
        super().__init__(f"tenant {tenant_id}: storage failed ({type(cause).__name__}: {cause})")
        self.outcome = outcome


class Halted(Exception):  # noqa: N818 - a stop, not an error
    """The pass stops before its next write: the tenant's ingestion lease was lost (fetch_alerts/lease.py), so
    another instance may be ingesting the tenant now. Progress so far is kept."""


@dataclass
class RunContext:
    """What one tenant's ingestion (one queue message: its regular pass, then its re-reads) works with."""

    hosts: ApiHosts  # the alert sources' hosts (shared.alert_sources)
    config: IngestionConfig
    api: ApiClient
    alerts: TableClient
    feed: TableClient
    tenants: TableClient
    incidents: TableClient
    deadline: float  # time.monotonic()
    run_id: str
    mssp_broken: threading.Event = field(default_factory=threading.Event)
    lease_lost: threading.Event = field(default_factory=threading.Event)  # set by the lease's heartbeat

    def check_lease(self) -> None:
        """Raise Halted when the tenant's lease was lost; called before each page's writes."""
        if self.lease_lost.is_set():
            raise Halted


@dataclass
class TenantOutcome:
    tenant_id: str
    fetched: int = 0
    stored: int = 0
    obligations: int = 0
    pages: int = 0
    complete: bool = False
    repeated: int = 0
    calls: int = 0
    write_seconds: float = 0.0
    health_written: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    extra: dict[str, Any] = field(default_factory=dict)  # tenant columns to write with the health
    error: str = ""
    # Visibility lags of the versions stored (fetch_alerts/visibility.py), counted only when `measure`.
    measure: bool = False
    lags: list[int] = field(default_factory=list)
    lag_stats: Any = None  # the row's `lagStats` when the run began
    overlap_seconds: int = 0


def ingest_tenant(ctx: RunContext, tenant: TenantRow, *, on_complete: CompletionColumns | None = None) -> TenantOutcome:
    """The tenant's regular pass, from its row as `tenant` holds it; `tenant` then holds the row as the pass left it.
    `on_complete(row, now)` names columns to write with the merge that completes the pass (the re-reads' clocks,
    fetch_alerts/reread.py), so that they cost no write of their own."""
    row = dict(tenant.row)
    tenant_id = str(row["RowKey"]).lower()
    outcome = TenantOutcome(tenant_id)
    now = datetime.now(UTC)
    health: dict[str, Any] = {"lastAttempt": now}
    overlap = ctx.config.overlap_minutes * 60
    outcome.overlap_seconds, outcome.lag_stats = overlap, Tenant(row).lag_stats
    outcome.measure = _steady(row, now, overlap)
    if Tenant(row).activated_at is None:
        # Frozen at the first run: the backfill boundary must not move with later status changes.
        outcome.extra["activatedAt"] = datetime.fromtimestamp(activated_ticks(row, now) / 1e7, UTC)
        health.update(outcome.extra)
    try:
        _run(ctx, row, tenant, outcome, on_complete)
        ctx.check_lease()  # the health below is a write too
    except Halted:
        logger.warning("tenant %s: ingestion lease lost; the pass stops here, progress kept", tenant_id)
        outcome.error = "lease_lost"
        return outcome
    except BudgetExhausted as exc:
        logger.info("tenant %s: stopped for the time budget (%s); progress kept", tenant_id, exc)
    except MsspCredentialError as exc:
        ctx.mssp_broken.set()
        record_mssp_credential_failure(ctx.incidents, exc)
        outcome.error = exc.kind  # not the tenant's failure: its health and status are left as they were
        return outcome
    except MicrosoftError as exc:
        outcome.error = exc.kind
        _record_failure(ctx, row, tenant, exc, health)
        return outcome
    except Exception as exc:  # storage or a bug: recorded on the tenant, never stops the others
        if storage_unavailable(exc):
            # Not the tenant's failure: nothing is recorded on it, and the queue message fails, so that the host
            # delivers it again after host.json's visibilityTimeout, and after maxDequeueCount moves it to the poison
            # queue, which the ops notices announce (docs/ARCHITECTURE.md, "Ingestion on a queue"). The retry loses
            # and duplicates nothing (fetch_alerts/STORAGE.md): a page's alert rows, obligations and tenant feed row
            # commit in one transaction, created or replaced under ETags, so a page stored again is found stored
            # (no second `new` obligation, no second feed row); the retry resumes from the last `passState` written
            # and the cursor moves only with a completed pass (fetch_alerts/cursor.py); a tenant feed row whose
            # publishing was not recorded (`feedPublished`) is published again first, and AlertFeed is read at
            # least once by its contract.
            logger.warning("tenant %s: storage failed under the pass (%s: %s); nothing is recorded on the tenant, "
                           "and the message fails so that the host delivers it again", tenant_id, type(exc).__name__,
                           exc)
            outcome.error = "storage_unavailable"
            raise StorageUnavailable(tenant_id, exc, outcome) from exc
        logger.exception("tenant %s: ingestion failed", tenant_id)
        outcome.error = "error"
        _record_failure(ctx, row, tenant, MicrosoftError(tenant_id, f"{type(exc).__name__}", code="Internal"),
                        health)
        return outcome
    logger.info("tenant %s: %d calls, %d pages, %d alerts read, %d versions stored, %d obligations, pass %s, "
                "%.1fs (%.1fs storing)", tenant_id, outcome.calls, outcome.pages, outcome.fetched, outcome.stored,
                outcome.obligations, "complete" if outcome.complete else "continues",
                (datetime.now(UTC) - now).total_seconds(), outcome.write_seconds)
    if outcome.health_written:
        return outcome
    health.update(_success(outcome, complete=outcome.complete))
    tenant.merge(health)
    return outcome


def _steady(row: dict[str, Any], now: datetime, overlap_seconds: int) -> bool:
    """Whether this run's lags measure the service rather than us: the tenant was polled steadily (a
    cursor, no backlog being resumed, the previous run succeeded within the overlap). After an outage
    the regular pass reads everything since the cursor and the lags would be the outage's length."""
    tenant = Tenant(row)
    last = tenant.last_success
    return (cursor_ticks(row) is not None and not tenant.pass_state and not tenant.consecutive_failures
            and last is not None and (now - last).total_seconds() <= overlap_seconds)


def _success(outcome: TenantOutcome, *, complete: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"lastAttempt": outcome.started, "lastSuccess": now, "lastErrorClass": "",
            "lastError": "", "consecutiveFailures": 0, "alertsFetched": outcome.fetched,
            "alertsStored": outcome.stored, "alertsRepeated": outcome.repeated, "passComplete": complete,
            **visibility.columns(outcome.lag_stats, outcome.lags, now, outcome.overlap_seconds),
            **outcome.extra}


def _run(ctx: RunContext, row: dict[str, Any], tenant: TenantRow, outcome: TenantOutcome,
         on_complete: CompletionColumns | None) -> None:
    config = ctx.config
    tenant_id = tenant.tenant_id
    source = AlertSource(str(row.get("alertSource") or "graph"))
    now = datetime.now(UTC)
    ctx.check_lease()
    state = start_state(row, config.overlap_minutes, config.lookback_days, now)
    previous_cursor = cursor_ticks(row)
    writer = AlertWriter(ctx.alerts, tenant_id, activated_ticks(row, now), tenant.set_marker,
                         optimistic=previous_cursor is None)
    portal = config.portal_host
    pager = Pager(ctx.hosts, config, ctx.api, tenant_id, source, state, config.max_pages_per_tenant,
                  ctx.deadline, api_host=str(row.get("apiHost") or ""))

    def prepare(page: Page) -> tuple[Page, list[Prepared]]:
        prepared = _prepared(page, source, tenant_id, portal)
        # The parsed page is the bulk of the memory; only its count is needed once prepared.
        page.read, page.alerts = len(page.alerts), []
        return page, prepared

    # The first page is fetched (token, API call) on the prefetcher's thread while the feed rows a previous run
    # left unpublished are looked for and published here: reading from Microsoft waits for none of our writes,
    # and those rows are published before any of this pass's.
    prefetcher = Prefetcher(pager.pages(), prepare)
    try:
        leftover = feed.unpublished(ctx.alerts, tenant_id, Tenant(row).feed_published)
        if leftover:
            logger.info("tenant %s: publishing %d feed rows a previous run left", tenant_id, len(leftover))
            feed.publish(ctx.feed, tenant_id, leftover)
            tenant.merge({"feedPublished": leftover[-1]})
        for page, prepared in prefetcher:
            if ctx.mssp_broken.is_set():
                return
            ctx.check_lease()
            began = time.monotonic()
            outcome.repeated, outcome.calls = pager.repeated, pager.calls
            _store_page(ctx, tenant, writer, page, prepared, outcome, previous_cursor, on_complete)
            outcome.write_seconds += time.monotonic() - began
            if page.complete:
                outcome.complete = True
    finally:
        prefetcher.close()
        outcome.repeated = pager.repeated
        outcome.calls = pager.calls


def _prepared(page: Page, source: AlertSource, tenant_id: str, portal: str) -> list[Prepared]:
    prepared: list[Prepared] = []
    for raw in page.alerts:
        try:
            prepared.append(Prepared(normalise(raw, source, tenant_id, portal), encode(raw)))
        except InvalidAlert as exc:
            logger.warning("tenant %s: alert skipped: %s", tenant_id, exc)
    return prepared


def _store_page(ctx: RunContext, tenant: TenantRow, writer: AlertWriter, page: Page, prepared: list[Prepared],
                outcome: TenantOutcome, previous_cursor: int | None,
                on_complete: CompletionColumns | None) -> None:
    tenant_id = tenant.tenant_id
    result = writer.write(prepared)
    outcome.pages += 1
    outcome.fetched += page.read
    outcome.stored += result.stored
    outcome.obligations += result.new_obligations + result.severity_obligations
    if outcome.measure:
        outcome.lags.extend(result.lags)
    feed.publish(ctx.feed, tenant_id, result.feed_keys)
    fields: dict[str, Any] = {}
    if result.feed_keys:
        fields["feedPublished"] = result.feed_keys[-1]
    if result.new_obligations or result.severity_obligations:
        # Again after the obligations: a notification run that cleared the marker between our first set
        # and the write must not leave them stranded.
        fields["pendingNotifications"] = True
    if page.complete:
        fields["passState"] = ""
        fields.update(_success(outcome, complete=True))  # health in the same write as the cursor
        if on_complete is not None:
            fields.update(on_complete(tenant.row, datetime.now(UTC)))
        tenant.merge(fields, cursor=completed_cursor(page.state, previous_cursor))
        outcome.health_written = True
    else:
        fields["passState"] = page.state.to_json()
        tenant.merge(fields)


def _record_failure(ctx: RunContext, row: dict[str, Any], tenant: TenantRow, error: MicrosoftError,
                    health: dict[str, Any]) -> None:
    failures = Tenant(row).consecutive_failures + 1
    health.update(lastErrorClass=error.kind, lastError=error.message[:500], consecutiveFailures=failures)
    status = next((s for kind, s in _STATUS_FOR.items() if isinstance(error, kind)), None)
    logger.warning("tenant %s: ingestion failed: %s [%s]", tenant.tenant_id, error.message, error.kind)
    if isinstance(error, AppNotFound):
        # AADSTS700016 also means "not replicated yet" (a recent consent, an instance without a cached
        # token): the tenant is consent_revoked only once it persisted through the propagation window.
        # The streak holds while every recorded attempt since its start met the same code; the MSSP's own
        # credential failures record nothing on the tenant, so they neither break nor extend it.
        previous = row.get(APP_NOT_FOUND_SINCE) if Tenant(row).last_error_class == error.kind else None
        since, final = app_not_found_streak(previous, Tenant(row).consented_at, datetime.now(UTC))
        health[APP_NOT_FOUND_SINCE] = since
        if not final:
            logger.info("tenant %s: app not found since %s, within the propagation window; retried next tick",
                        tenant.tenant_id, since.isoformat())
            status = None
        elif app_not_found_is_the_mssps(TenantRegistry(ctx.tenants), tenant.tenant_id):
            logger.error("tenant %s: app not found, as for most tenants: the MSSP's app registration or client "
                         "id is at fault; no tenant is revoked", tenant.tenant_id)
            record_mssp_credential_failure(ctx.incidents, MsspCredentialError(
                tenant.tenant_id, "AADSTS700016 for most tenants: the MSSP's application is unknown to Entra "
                "(check MSSP_APP_CLIENT_ID and the app registration)", code=error.code))
            status = None
    if status is None:
        tenant.merge(health)
        return
    registry = TenantRegistry(ctx.tenants)
    registry.set_status(tenant.tenant_id, status, f"ingestion: {error.message}"[:1000], datetime.now(UTC), **health)
