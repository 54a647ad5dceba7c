"""Re-reads: slower passes that catch alerts which became visible later than the overlap.

The regular pass reads `lastUpdate >= cursor - FETCH_OVERLAP_MINUTES`. Microsoft documents no bound on
how long after its last update an alert, or a new version of one, appears in the list APIs
(https://learn.microsoft.com/en-us/graph/api/security-list-alerts_v2,
https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts), and one that appears with a last
update before that bound is never read by a regular pass. Two re-read kinds read further back:

- `hour`: every hour, `lastUpdate >= start - 26 h`: a version visible up to 24 h late is stored by the first
  hourly re-read that starts after it became visible (26 h = 24 h + the period + slack);
- `day`: every day, `lastUpdate >= start - (FETCH_LOOKBACK_DAYS + 2) days`: up to the look-back, by the first
  daily re-read after it became visible. Beyond the look-back nothing is promised.

A re-read is a pass like the regular one (the same Pager, so Graph nextLinks and Defender creation-time
windows page it without skips, and the same AlertWriter, so it stores only versions newer than the stored
ones, with their `new` / `severity-` obligations and feed rows) but it never moves the cursor. Each kind
keeps its own state on the Tenants row: `reread<Kind>At` (when the current or last one started),
`reread<Kind>State` (JSON `{"pass": <PassState>, "calls": n}` while one is unfinished, `""` otherwise) and
`reread<Kind>Calls` (API calls the last finished one cost).

Cost and fairness: a tenant's queue message (fetch_alerts.runner) runs its re-reads right after its own
regular pass, only when that pass completed, within the message's time budget and under the same lease;
each tenant reads at most FETCH_REREAD_PAGES_PER_TICK (4) pages of re-reads per tick (the hourly first), and
every call goes through the same API client and per-tenant rate limits as the regular pass. Re-reads never
delay another tenant's regular pass: each tenant is a message of its own, and the instances take the queue's
messages as they come. A quiet tenant pays one call per re-read: 25 calls
a day; a busy one about (alerts updated in 26 h / page size) per hour plus (alerts updated in the look-back
+ 2 days / page size) per day (Defender's windows cost 1.3-2 times as many calls per page).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from fetch_alerts import feed, visibility
from fetch_alerts.cursor import TenantRow, activated_ticks
from fetch_alerts.ingest import Halted, RunContext, StorageUnavailable, _prepared, storage_unavailable
from fetch_alerts.keys import from_datetime
from fetch_alerts.ratelimit import BudgetExhausted
from fetch_alerts.sources import Pager, PassState
from fetch_alerts.store import AlertWriter
from shared.alert_sources import AlertSource
from shared.errors import MicrosoftError
from shared.tenants import TENANT_PARTITION, TenantStatus

logger = logging.getLogger(__name__)

# Pages (API calls) of re-reads per tenant per tick at most. With the 5-minute schedule that is at most
# 48 calls an hour, against Defender's 1,500 per hour and 100 per minute per tenant.
HOUR_WINDOW = timedelta(hours=26)
DAY_EXTRA = timedelta(days=2)


@dataclass(frozen=True)
class Kind:
    name: str
    period: timedelta
    prefix: str

    @property
    def at_column(self) -> str:
        return f"{self.prefix}At"

    @property
    def state_column(self) -> str:
        return f"{self.prefix}State"

    @property
    def calls_column(self) -> str:
        return f"{self.prefix}Calls"

    def window(self, lookback_days: int) -> timedelta:
        return HOUR_WINDOW if self.name == "hour" else timedelta(days=lookback_days) + DAY_EXTRA


HOUR = Kind("hour", timedelta(hours=1), "rereadHour")
DAY = Kind("day", timedelta(days=1), "rereadDay")
KINDS = (HOUR, DAY)  # the hourly first: it catches the likelier, fresher late arrivals


@dataclass
class RereadOutcome:
    tenant_id: str
    calls: int = 0
    stored: int = 0
    obligations: int = 0
    finished: tuple[str, ...] = ()
    error: str = ""


def _saved(text: Any) -> tuple[PassState, int] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        data = json.loads(text)
        state = PassState.from_json(str(data["pass"]))
        return (state, int(data.get("calls") or 0)) if state is not None else None
    except (ValueError, TypeError, KeyError):
        logger.warning("unreadable re-read state ignored")
        return None


def _state_json(state: PassState, calls: int) -> str:
    return json.dumps({"pass": state.to_json(), "calls": calls}, separators=(",", ":"))


def first_clocks(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The re-read clocks a tenant's row does not have yet, started at `now`: written with the merge that completes
    the tenant's first regular pass (fetch_alerts.ingest.ingest_tenant's `on_complete`), which has just read all of
    the look-back, so that no re-read is due before a period has passed."""
    return {k.at_column: now for k in KINDS if not isinstance(row.get(k.at_column), datetime)}


def _due(row: dict[str, Any], kind: Kind, now: datetime) -> bool:
    """Whether the row has an unfinished re-read of `kind`, or one a period old or never started."""
    if _saved(row.get(kind.state_column)) is not None:
        return True
    started = row.get(kind.at_column)
    return not (isinstance(started, datetime) and now - started < kind.period)


def reread_tenant(ctx: RunContext, tenant: TenantRow) -> RereadOutcome:
    """Continue or start the tenant's due re-reads, at most FETCH_REREAD_PAGES_PER_TICK pages; progress is
    kept. `tenant` is the row as the regular pass before it left it (its columns and ETag): when no re-read is due
    by it, as on most ticks, nothing is read or written. When one is, the row is read again first, and a tenant
    disabled, offboarded or deleted since the message began is not read further."""
    tenant_id = tenant.tenant_id
    outcome = RereadOutcome(tenant_id)
    now = datetime.now(UTC)
    first = first_clocks(tenant.row, now)
    if first:  # a pass that completed without recording them (its merge was dropped): start the clocks now
        tenant.merge(first)
    if not any(_due(tenant.row, kind, now) for kind in KINDS):
        return outcome
    try:
        entity = ctx.tenants.get_entity(TENANT_PARTITION, tenant_id)
    except ResourceNotFoundError:
        return outcome
    row = dict(entity)
    if row.get("status") != TenantStatus.ACTIVE:
        return outcome
    tenant.row, tenant.etag = dict(row), entity.metadata.get("etag")
    lags: list[int] = []
    dropped: Exception | None = None
    try:
        for kind in KINDS:
            ctx.check_lease()
            pages = ctx.config.reread_pages_per_tick - outcome.calls
            if pages <= 0:
                break
            _run_kind(ctx, row, tenant, kind, pages, now, outcome, lags)
    except Halted:
        outcome.error = "lease_lost"
        logger.warning("tenant %s: ingestion lease lost; the re-read stops here, progress kept", tenant_id)
        return outcome
    except BudgetExhausted as exc:
        logger.info("tenant %s: re-read stopped for the time budget (%s); progress kept", tenant_id, exc)
    except MicrosoftError as exc:  # the regular pass of the next tick records the tenant's failures
        outcome.error = exc.kind
        logger.warning("tenant %s: re-read failed: %s [%s]; progress kept", tenant_id, exc.message, exc.kind)
    except Exception as exc:  # storage or a bug: logged, never stops the other tenants
        if storage_unavailable(exc):
            # As in the regular pass (fetch_alerts.ingest.ingest_tenant): storage, not the tenant. The message
            # fails, and its next delivery continues the re-read from the state last written (`reread<Kind>State`;
            # its regular pass before that reads from the cursor it moved, minus the overlap, and finds those
            # versions stored). The lags seen so far are recorded first, if storage takes them.
            dropped = exc
            outcome.error = "storage_unavailable"
            logger.warning("tenant %s: storage failed under the re-read (%s: %s); the message fails so that the "
                           "host delivers it again", tenant_id, type(exc).__name__, exc)
        else:
            outcome.error = "error"
            logger.exception("tenant %s: re-read failed", tenant_id)
    if lags:
        overlap = ctx.config.overlap_minutes * 60
        tenant.merge(visibility.columns(row.get("lagStats"), lags, datetime.now(UTC), overlap, reread=True))
        logger.warning("tenant %s: re-read stored %d alert versions that became visible later than the "
                       "overlap (largest lag %d s)", tenant_id, len(lags), max(lags))
    if dropped is not None:
        raise StorageUnavailable(tenant_id, dropped, outcome) from dropped
    return outcome


def _run_kind(ctx: RunContext, row: dict[str, Any], tenant: TenantRow, kind: Kind, pages: int, now: datetime,
              outcome: RereadOutcome, lags: list[int]) -> None:
    config = ctx.config
    tenant_id = tenant.tenant_id
    if not _due(row, kind, now):
        return
    saved = _saved(row.get(kind.state_column))
    if saved is None:
        window = kind.window(config.lookback_days)
        saved = (PassState(lo=from_datetime(now - window), cap=from_datetime(now)), 0)
        tenant.merge({kind.at_column: now, kind.state_column: _state_json(*saved)})
        logger.info("tenant %s: %s re-read starts (last updates since %s)", tenant_id, kind.name,
                    (now - window).isoformat())
    state, calls_before = saved
    source = AlertSource(str(row.get("alertSource") or "graph"))
    writer = AlertWriter(ctx.alerts, tenant_id, activated_ticks(row, now), tenant.set_marker, optimistic=False)
    pager = Pager(ctx.hosts, config, ctx.api, tenant_id, source, state, pages, ctx.deadline,
                  api_host=str(row.get("apiHost") or ""))
    portal = config.portal_host
    try:
        for page in pager.pages():
            ctx.check_lease()
            result = writer.write(_prepared(page, source, tenant_id, portal))
            outcome.stored += result.stored
            outcome.obligations += result.new_obligations + result.severity_obligations
            lags.extend(result.lags)
            feed.publish(ctx.feed, tenant_id, result.feed_keys)
            calls = calls_before + pager.calls
            fields: dict[str, Any] = {}
            if result.feed_keys:
                fields["feedPublished"] = result.feed_keys[-1]
            if result.new_obligations or result.severity_obligations:
                fields["pendingNotifications"] = True  # again after the obligations (see ingest._store_page)
            if page.complete:
                fields.update({kind.state_column: "", kind.calls_column: calls})
                outcome.finished += (kind.name,)
                logger.info("tenant %s: %s re-read finished: %d calls", tenant_id, kind.name, calls)
            else:
                fields[kind.state_column] = _state_json(page.state, calls)
            tenant.merge(fields)
    finally:
        outcome.calls += pager.calls
