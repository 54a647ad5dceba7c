"""The admin-consent callback: `GET /api/consent/callback`, a browser redirect from Entra (#3).

Handles the v2.0 shapes (`admin_consent=True&tenant&scope&state`; `error&error_description&state`, with
`admin_consent` too) and the v1 ones (`permission_denied` without `state`), per microsoft-apis.md §2. The
returned `tenant` is never trusted by itself: the `state` must be one of ours, unused and unexpired, the
tenant a GUID and the invited tenant when one was named. Every refusal changes nothing; the identical URL
requested again shows the recorded outcome; the same `state` with any other query string is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl

from grant_access import pages
from grant_access.consent_state import well_formed
from grant_access.invitations import ACCEPTED, DECLINED, EXPIRED, PENDING, Invitation, InvitationStore
from grant_access.rules import RuleStore
from grant_access.tenants import TenantRegistry, TenantStatus
from grant_access.verification import REPORTED_STATUSES, AccessChecker, apply_check, run_check
from shared.tenant_lookup import is_guid

logger = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 8192
MAX_PARAMETERS = 20
NOT_LICENSED_CODE = "AADSTS650052"
_AADSTS = re.compile(r"AADSTS\d{4,8}")
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")  # OAuth error codes; anything else is not kept


@dataclass(frozen=True)
class Notification:
    """A result to POST to the onboarding system's callbackUrl."""

    invitation_id: str
    status: str


@dataclass
class CallbackResult:
    page: pages.Page
    notifications: list[Notification] = field(default_factory=list)


@dataclass
class CallbackDeps:
    invitations: InvitationStore
    tenants: TenantRegistry
    rules: RuleStore
    checker: AccessChecker
    now: Callable[[], datetime]
    verification_timeout_seconds: int


def parse_query(query: str) -> dict[str, str] | None:
    """The parameters, or None when the query is oversized, repeats a name or cannot be parsed."""
    if len(query) > MAX_QUERY_LENGTH:
        return None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
    except ValueError:
        return None
    params = dict(pairs)
    return params if len(params) == len(pairs) else None


def _error_reason(params: dict[str, str]) -> str:
    """What we keep of an error redirect: the error code and AADSTS code, never the free text."""
    code = _AADSTS.search(params.get("error_description", ""))
    error = params.get("error", "")
    error = error if _ERROR_CODE.match(error) else "unrecognised_error"
    return f"{error} {code.group(0)}" if code else error


def handle_callback(query: str, deps: CallbackDeps) -> CallbackResult:
    params = parse_query(query)
    if params is None:
        return CallbackResult(pages.link_invalid())
    state = params.get("state")
    if not state:
        if params.get("error"):
            # The v1 failure shape carries no state: show what happened, but there is nothing to record.
            licensed = NOT_LICENSED_CODE not in params.get("error_description", "")
            return CallbackResult(pages.declined(None) if licensed else pages.not_licensed(None))
        return CallbackResult(pages.link_invalid())
    if not well_formed(state):
        return CallbackResult(pages.link_invalid())
    invitation = deps.invitations.by_state(state)
    if invitation is None:
        return CallbackResult(pages.link_invalid())
    completion = hashlib.sha256(query.encode("utf-8", "replace")).hexdigest()
    for _ in range(3):
        if invitation.outcome != PENDING:
            return _replay(invitation, completion, deps)
        if invitation.effective_outcome(deps.now()) == EXPIRED:
            return CallbackResult(pages.link_expired())
        result = _complete(invitation, params, completion, deps)
        if result is not None:
            return result
        # Another request completed the invitation first (single use): answer as a repeat.
        invitation = deps.invitations.get(invitation.id) or invitation
    return CallbackResult(pages.link_used())


def _replay(invitation: Invitation, completion: str, deps: CallbackDeps) -> CallbackResult:
    if invitation.row.get("completionHash") != completion:
        logger.warning("invitation %s: used state presented with other parameters; refused", invitation.id)
        return CallbackResult(pages.link_used())
    customer = str(invitation.row.get("customerName"))
    if invitation.outcome == DECLINED:
        reason = str(invitation.row.get("outcomeReason") or "")
        return CallbackResult(pages.not_licensed(customer) if NOT_LICENSED_CODE in reason else pages.declined(customer))
    tenant_id = str(invitation.row.get("tenantId"))
    tenant = deps.tenants.get(tenant_id)
    if tenant is None:
        # Accepted, but no tenant row: either the first request failed in between, or it is still running
        # (two requests of one URL at once). Create the row only if it is still missing, so this repeat
        # can never undo what the first request recorded (say, `active` after its access check); the
        # verification timer takes the tenant up either way.
        logger.warning("invitation %s: accepted without a tenant row; recording tenant %s", invitation.id,
                       tenant_id)
        now = deps.now()
        tenant = deps.tenants.change(tenant_id, _only_if_new(_consented(invitation, now)), now, create=True)
        deps.rules.store_for_tenant(invitation.rules, tenant_id, invitation.id, now)
    return CallbackResult(_status_page(customer, str((tenant or {}).get("status") or TenantStatus.VERIFYING)))


def _status_page(customer: str, status: str) -> pages.Page:
    if status == TenantStatus.ACTIVE:
        return pages.access_granted(customer)
    if status == TenantStatus.VERIFYING:
        return pages.consent_received(customer)
    if status == TenantStatus.NOT_LICENSED:
        return pages.not_licensed(customer)
    return pages.not_verified(customer, status)


def _complete(invitation: Invitation, params: dict[str, str], completion: str,
              deps: CallbackDeps) -> CallbackResult | None:
    """Record the outcome; None when the invitation was completed concurrently."""
    customer = str(invitation.row.get("customerName"))
    expected = str(invitation.row.get("expectedTenantId") or "")
    now = deps.now()
    if params.get("error"):
        reason = _error_reason(params)
        if not deps.invitations.complete(invitation, DECLINED, reason, completion, now):
            return None
        if NOT_LICENSED_CODE in reason:
            if expected:
                deps.tenants.change(expected, _not_licensed(invitation), now, create=True)
            return CallbackResult(pages.not_licensed(customer), [Notification(invitation.id, "not_licensed")])
        return CallbackResult(pages.declined(customer), [Notification(invitation.id, "declined")])
    if params.get("admin_consent", "").lower() != "true":
        return CallbackResult(pages.link_invalid())
    tenant_id = params.get("tenant", "")
    if not is_guid(tenant_id):
        return CallbackResult(pages.link_invalid())
    tenant_id = tenant_id.lower()
    if expected and expected != tenant_id:
        logger.warning("invitation %s: consent came back from tenant %s, invited %s; refused",
                       invitation.id, tenant_id, expected)
        return CallbackResult(pages.wrong_organization())
    if not deps.invitations.complete(invitation, ACCEPTED, "admin consent granted", completion, now, tenant_id):
        return None
    deps.tenants.change(tenant_id, _consented(invitation, now), now, create=True)
    deps.rules.store_for_tenant(invitation.rules, tenant_id, invitation.id, now)
    source = str(invitation.row.get("alertSource") or "graph")
    check = run_check(deps.checker, tenant_id, source)
    row = apply_check(deps.tenants, tenant_id, check, deps.now(), deps.verification_timeout_seconds) or {}
    status = str(row.get("status") or TenantStatus.VERIFYING)
    notifications = [Notification(invitation.id, status)] if status in REPORTED_STATUSES else []
    return CallbackResult(_status_page(customer, status), notifications)


def _consented(invitation: Invitation, now: datetime) -> Callable[[dict], tuple[str, str]]:
    def mutate(row: dict) -> tuple[str, str]:
        row.setdefault("displayName", invitation.row.get("customerName"))
        row.update(alertSource=invitation.row.get("alertSource") or "graph", invitationId=invitation.id,
                   consentedAt=now, verifyingSince=now, verifyAttempts=0)
        row.setdefault("apiHost", "")
        return TenantStatus.VERIFYING.value, f"admin consent granted (invitation {invitation.id})"
    return mutate


def _only_if_new(mutate: Callable[[dict], tuple[str, str]]) -> Callable[[dict], tuple[str, str] | None]:
    """`mutate` for a row being created; a row someone else wrote meanwhile is left as it is."""
    def guarded(row: dict) -> tuple[str, str] | None:
        return None if row.get("status") else mutate(row)
    return guarded


def _not_licensed(invitation: Invitation) -> Callable[[dict], tuple[str, str]]:
    def mutate(row: dict) -> tuple[str, str]:
        row.setdefault("displayName", invitation.row.get("customerName"))
        row.update(alertSource=invitation.row.get("alertSource") or "graph", invitationId=invitation.id)
        return (TenantStatus.NOT_LICENSED.value,
                f"consent refused by Entra: Microsoft Defender is not enabled ({NOT_LICENSED_CODE}, "
                f"invitation {invitation.id})")
    return mutate
