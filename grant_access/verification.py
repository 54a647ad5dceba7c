"""Proving access after consent, and the timer that keeps trying while consent propagates.

Entra can take minutes to make a new consent effective, so a tenant whose first check fails stays
`verifying`; `verify_pending_tenants` (the `verify_tenants` timer, VERIFICATION_SCHEDULE) checks each again
until it is `active`, or `verification_failed` once VERIFICATION_TIMEOUT has passed since consent. The
check itself (token, role, one alert API call) is shared.access_check's.

Failures that are the MSSP's own (its credential or app registration, `mssp_credential`) are never the
customer's: the tenant stays `verifying`, the attempt is not counted, the MSSP credential incident is
recorded (shared.incidents, the one ingestion raises, announced once by the ops notices), and the
customer's clock stops: the time from the first such check to the next check that meets anything else is
added to `verifyPausedSeconds`, and the timeout counts only the rest. AADSTS700016 (`app_not_found`) is
retried until it has persisted through shared.access_check's propagation window, then `consent_revoked`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.access_check import APP_NOT_FOUND_SINCE, app_not_found_is_the_mssps, app_not_found_streak
from shared.tenants import TenantRegistry, TenantStatus

logger = logging.getLogger(__name__)


class CheckResult(Protocol):
    """Read-only, so frozen dataclasses (shared.access_check.AccessCheck, _Failed) satisfy it."""

    @property
    def outcome(self) -> str: ...

    @property
    def message(self) -> str: ...


AccessChecker = Callable[[str, str], CheckResult]
"""(tenant GUID, alert source) → the result of proving access right after consent."""

_STATUS_BY_OUTCOME = {
    "active": TenantStatus.ACTIVE,
    "not_licensed": TenantStatus.NOT_LICENSED,
    "permission_missing": TenantStatus.PERMISSION_MISSING,
    "consent_revoked": TenantStatus.CONSENT_REVOKED,
    "tenant_not_found": TenantStatus.VERIFICATION_FAILED,
}
# Outcomes that say nothing final about the tenant: propagation delay, our own credential, transient errors.
RETRY_OUTCOMES = frozenset({"retry", "app_not_found", "mssp_credential", "error"})
MSSP_FAILING_SINCE = "msspFailingSince"  # first check of the current run of MSSP credential failures
PAUSED_SECONDS = "verifyPausedSeconds"  # customer time not counted: MSSP credential failures so far
# Statuses an onboarding system hears about through its callbackUrl.
REPORTED_STATUSES = frozenset({TenantStatus.ACTIVE, TenantStatus.VERIFICATION_FAILED, TenantStatus.NOT_LICENSED,
                               TenantStatus.PERMISSION_MISSING, TenantStatus.CONSENT_REVOKED})


@dataclass(frozen=True)
class _Failed:
    outcome: str
    message: str


def run_check(checker: AccessChecker, tenant_id: str, alert_source: str) -> CheckResult:
    """The check's result; an unexpected failure of the check is a retry, never a crash of the caller."""
    try:
        return checker(tenant_id, alert_source)
    except Exception as exc:  # the callback page and the timer must survive any failure of the check
        logger.exception("tenant %s: access check failed unexpectedly", tenant_id)
        return _Failed("error", f"access check failed: {type(exc).__name__}")


def apply_check(registry: TenantRegistry, tenant_id: str, result: CheckResult, now: datetime,
                timeout_seconds: int) -> dict[str, Any] | None:
    """Record a check on a `verifying` tenant and move its status; a tenant in any other status (disabled
    meanwhile, say) is left alone. Returns the row."""

    mssps: list[bool] = []

    def widespread() -> bool:
        """AADSTS700016 for most tenants is the MSSP's app registration, not this customer (read once)."""
        if not mssps:
            mssps.append(app_not_found_is_the_mssps(registry, tenant_id))
        return mssps[0]

    def mutate(row: dict[str, Any]) -> tuple[str, str] | None:
        if row.get("status") != TenantStatus.VERIFYING:
            return None
        row["lastVerification"] = now
        row["lastVerificationMessage"] = (result.message or result.outcome)[:500]
        if result.outcome == "mssp_credential":
            # Not the customer's attempt and not the customer's time: no count, no timeout, no status.
            row["lastVerificationMessage"] = (f"the MSSP's app credential failed, not the customer's consent: "
                                              f"{result.message}")[:500]
            if not isinstance(row.get(MSSP_FAILING_SINCE), datetime):
                row[MSSP_FAILING_SINCE] = now
            return None
        failing_since = row.pop(MSSP_FAILING_SINCE, None)
        if isinstance(failing_since, datetime):
            # The whole stretch up to this check is given back: the fix came somewhere in it.
            paused = float(row.get(PAUSED_SECONDS) or 0) + max(0.0, (now - failing_since).total_seconds())
            row[PAUSED_SECONDS] = paused
        row["verifyAttempts"] = int(row.get("verifyAttempts") or 0) + 1
        previous_streak = row.pop(APP_NOT_FOUND_SINCE, None)
        status = _STATUS_BY_OUTCOME.get(result.outcome)
        if result.outcome == "app_not_found":
            since, final = app_not_found_streak(previous_streak, row.get("consentedAt"), now)
            if final and not widespread():
                status = TenantStatus.CONSENT_REVOKED
            else:
                row[APP_NOT_FOUND_SINCE] = since
        if status is TenantStatus.ACTIVE and not row.get("activatedAt"):
            row["activatedAt"] = now  # ingestion's backfill boundary (fetch_alerts/STORAGE.md)
        if status is not None:
            return status.value, f"access check: {result.outcome}: {result.message}"
        since = row.get("verifyingSince") or row.get("consentedAt") or now
        customer_time = now - since - timedelta(seconds=float(row.get(PAUSED_SECONDS) or 0))
        if customer_time >= timedelta(seconds=timeout_seconds):
            return (TenantStatus.VERIFICATION_FAILED.value,
                    f"access not confirmed within {timeout_seconds}s of consent; last check: {result.message}")
        return None

    row = registry.change(tenant_id, mutate, now)
    logger.info("tenant %s: access check %s -> status %s", tenant_id, result.outcome, (row or {}).get("status"))
    if row is not None:
        _note_mssp_credential(tenant_id, result, app_missing_everywhere=bool(mssps and mssps[0]))
    return row


def _note_mssp_credential(tenant_id: str, result: CheckResult, *, app_missing_everywhere: bool = False) -> None:
    """Raise the MSSP credential incident on its failure, close it once a check reads alerts again. The
    tenant's own record is already written: a storage failure here only loses the incident's update."""
    if result.outcome not in ("mssp_credential", "active") and not app_missing_everywhere:
        return
    from shared.errors import MsspCredentialError
    from shared.incidents import close_mssp_incident, record_mssp_credential_failure
    from shared.tables import Table, get_table_store

    try:
        incidents = get_table_store().table(Table.INCIDENTS)
        if result.outcome == "active":
            close_mssp_incident(incidents)
        else:
            code = str(getattr(result, "code", "") or "") or None
            record_mssp_credential_failure(incidents, MsspCredentialError(tenant_id, result.message, code=code))
    except Exception:  # noqa: BLE001 - the verification itself succeeded; ops learn of it at the next check
        logger.exception("tenant %s: the MSSP credential incident could not be updated", tenant_id)


@dataclass(frozen=True)
class Verified:
    tenant_id: str
    status: str
    invitation_id: str


def verify_pending_tenants(registry: TenantRegistry, checker: AccessChecker, now: Callable[[], datetime],
                           timeout_seconds: int) -> list[Verified]:
    """Check every `verifying` tenant once; returns those that left `verifying`."""
    finished = []
    pending = registry.with_status(TenantStatus.VERIFYING)
    for row in pending:
        tenant_id = row["RowKey"]
        result = run_check(checker, tenant_id, str(row.get("alertSource") or "graph"))
        updated = apply_check(registry, tenant_id, result, now(), timeout_seconds)
        if updated is not None and updated.get("status") != TenantStatus.VERIFYING:
            finished.append(Verified(tenant_id, str(updated["status"]), str(updated.get("invitationId") or "")))
    logger.info("verification: %d tenants checked, %d finished", len(pending), len(finished))
    return finished
