"""Proving access after consent, and the timer that keeps trying while consent propagates (#3).

Entra can take minutes to make a new consent effective, so a tenant whose first check fails stays
`verifying`; `verify_pending_tenants` (the `verify_tenants` timer, VERIFICATION_SCHEDULE) checks each again
until it is `active`, or `verification_failed` once VERIFICATION_TIMEOUT has passed since consent. The
check itself (token, role, one alert API call) is shared.access_check's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from grant_access.tenants import TenantRegistry, TenantStatus

logger = logging.getLogger(__name__)


class CheckResult(Protocol):
    outcome: str
    message: str


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
RETRY_OUTCOMES = frozenset({"retry", "mssp_credential", "error"})
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

    def mutate(row: dict[str, Any]) -> tuple[str, str] | None:
        if row.get("status") != TenantStatus.VERIFYING:
            return None
        row["verifyAttempts"] = int(row.get("verifyAttempts") or 0) + 1
        row["lastVerification"] = now
        row["lastVerificationMessage"] = (result.message or result.outcome)[:500]
        status = _STATUS_BY_OUTCOME.get(result.outcome)
        if status is TenantStatus.ACTIVE and not row.get("activatedAt"):
            row["activatedAt"] = now  # ingestion's backfill boundary (fetch_alerts/STORAGE.md)
        if status is not None:
            return status.value, f"access check: {result.outcome}: {result.message}"
        since = row.get("verifyingSince") or row.get("consentedAt") or now
        if now - since >= timedelta(seconds=timeout_seconds):
            return (TenantStatus.VERIFICATION_FAILED.value,
                    f"access not confirmed within {timeout_seconds}s of consent; last check: {result.message}")
        return None

    row = registry.change(tenant_id, mutate, now)
    logger.info("tenant %s: access check %s -> status %s", tenant_id, result.outcome, (row or {}).get("status"))
    return row


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
