"""The admin-consent callback: `GET /api/consent/callback` (Entra's admin-consent redirect) and
`POST /api/consent/callback` (the OpenID Connect sign-in's form_post), both browser requests.

Handles the admin-consent redirect's v2.0 shapes (`admin_consent=True&tenant&scope&state`;
`error&error_description&state`, with `admin_consent` too) and the v1 ones (`permission_denied` without
`state`); docs/MICROSOFT.md lists them with their sources.

Which tenant a consent completes for is proven, never taken from the redirect (docs/SECURITY.md): Microsoft
says the `tenant` an admin-consent redirect returns can be forged. It is the tenant the invitation named
(the onboarding system said so, authenticated), or, for an invitation that named none, the `tid` of an
id_token Entra signed for our app with our nonce: after the consent redirect the admin's browser is sent
through a sign-in to the claimed tenant, and only the signed token completes the invitation.

A callback never changes a tenant row another invitation owns, nor an offboarded or disabled one (only an
MSSP's explicit re-consent invitation may), and an error redirect changes the invitation only. Every
refusal changes nothing; the identical request repeated shows the recorded outcome; the same `state` with
any other parameters is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests

from grant_access import pages, portal_access
from grant_access.consent_state import well_formed
from grant_access.invitations import ACCEPTED, DECLINED, EXPIRED, PENDING, VOIDED, Invitation, InvitationStore
from grant_access.verification import REPORTED_STATUSES, AccessChecker, apply_check, run_check
from shared.id_token import IdTokenInvalid, SigningKeys, SigningKeysUnavailable, verify_id_token
from shared.rules import RuleStore
from shared.tenants import TenantRegistry, TenantStatus
from shared.validators import is_guid

logger = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 8192
MAX_FORM_BYTES = 32 * 1024  # a form_post with an id_token of the openid scope only is a few KiB
MAX_PARAMETERS = 20
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# The sign-in follows the consent redirect at once (the admin's browser is sent on); an older claim is stale.
SIGN_IN_WINDOW = timedelta(minutes=15)
# Role template ids of the Entra built-in roles that may grant tenant-wide admin consent to application
# permissions of Microsoft Graph: Global Administrator, Privileged Role Administrator
# (https://learn.microsoft.com/en-us/entra/identity/enterprise-apps/grant-admin-consent, prerequisites;
# ids: https://learn.microsoft.com/en-us/entra/identity/role-based-access-control/permissions-reference).
CONSENTING_ROLES = frozenset({"62e90394-69f5-4237-9190-012177145e10", "e8611ab8-c189-46e8-94e1-60213ab1f814"})
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
    page: pages.Page | None
    notifications: list[Notification] = field(default_factory=list)
    redirect: str | None = None  # where the browser goes next (the sign-in), instead of a page


@dataclass(frozen=True)
class SignIn:
    """The OpenID Connect sign-in that proves an admin's tenant: our app, its redirect URI, Entra's keys."""

    authority_host: str
    client_id: str
    redirect_uri: str
    keys: SigningKeys


class NotBindable(RuntimeError):
    """The tenant row belongs to another invitation, or is offboarded or disabled."""


@dataclass
class CallbackDeps:
    invitations: InvitationStore
    tenants: TenantRegistry
    rules: RuleStore
    checker: AccessChecker
    now: Callable[[], datetime]
    verification_timeout_seconds: int
    sign_in: SignIn


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
    error = error if _ERROR_CODE.fullmatch(error) else "unrecognised_error"
    return f"{error} {code.group(0)}" if code else error


def handle_callback(query: str, deps: CallbackDeps) -> CallbackResult:
    """`GET /api/consent/callback`: Entra's admin-consent redirect."""
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
    completion = hashlib.sha256(query.encode("utf-8", "replace")).hexdigest()
    return _with_invitation(state, completion, deps,
                            lambda invitation: _complete(invitation, params, state, completion, deps))


def handle_sign_in(body: bytes, content_type: str | None, deps: CallbackDeps) -> CallbackResult:
    """`POST /api/consent/callback`: the sign-in's form_post (`id_token` and `state`, or `error`)."""
    if len(body) > MAX_FORM_BYTES or (content_type or "").split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        return CallbackResult(pages.link_invalid())
    try:
        params = parse_query(body.decode("ascii"))
    except UnicodeDecodeError:
        params = None
    state = (params or {}).get("state")
    if params is None or not state:
        return CallbackResult(pages.link_invalid())
    completion = hashlib.sha256(body).hexdigest()
    return _with_invitation(state, completion, deps,
                            lambda invitation: _signed_in(invitation, params, completion, deps))


def _with_invitation(state: str, completion: str, deps: CallbackDeps,
                     complete: Callable[[Invitation], CallbackResult | None]) -> CallbackResult:
    """Find the invitation of `state` and complete it once; a completed one answers as a repeat."""
    if not well_formed(state):
        return CallbackResult(pages.link_invalid())
    invitation = deps.invitations.by_state(state)
    if invitation is None:
        return CallbackResult(pages.link_invalid())
    for _ in range(3):
        if invitation.outcome != PENDING:
            return _replay(invitation, completion, deps)
        if invitation.effective_outcome(deps.now()) == EXPIRED:
            return CallbackResult(pages.link_expired())
        result = complete(invitation)
        if result is not None:
            return result
        # Another request changed the invitation first (single use): look again.
        invitation = deps.invitations.get(invitation.id) or invitation
    return CallbackResult(pages.link_used())


def _replay(invitation: Invitation, completion: str, deps: CallbackDeps) -> CallbackResult:
    if invitation.row.get("completionHash") != completion:
        logger.warning("invitation %s: used state presented with other parameters; refused", invitation.id)
        return CallbackResult(pages.link_used())
    customer = invitation.customer_name
    if invitation.outcome == DECLINED:
        reason = str(invitation.row.get("outcomeReason") or "")
        return CallbackResult(pages.not_licensed(customer) if NOT_LICENSED_CODE in reason else pages.declined(customer))
    if invitation.outcome == VOIDED:
        return CallbackResult(pages.link_used())
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
        if (tenant or {}).get("invitationId") == invitation.id:
            deps.rules.store_for_tenant(invitation.rules, tenant_id, invitation.id, now)
    if (tenant or {}).get("invitationId") != invitation.id:
        return CallbackResult(pages.already_onboarded(customer))
    return CallbackResult(_status_page(customer, str((tenant or {}).get("status") or TenantStatus.VERIFYING),
                                       invitation.id))


def complete_interrupted(deps: CallbackDeps, since: datetime) -> int:
    """Finish what the request that accepted an invitation may not have: a crash after the invitation was
    marked accepted and before the tenant row, the rules or the voiding of the other invitations were written
    would otherwise leave a consent nobody acts on (the identical request, which would finish it, is rarely
    sent again: a form_post is not reloaded). Every step is idempotent; a tenant another invitation owns is
    left alone. Run by the verification timer over the invitations accepted since `since`; how many it
    finished."""
    finished = 0
    for invitation in deps.invitations.accepted_since(since):
        tenant_id = str(invitation.row.get("tenantId") or "")
        if not is_guid(tenant_id):
            continue
        now = deps.now()
        existed = deps.tenants.get(tenant_id) is not None
        row = deps.tenants.change(tenant_id, _only_if_new(_consented(invitation, now)), now, create=True)
        if (row or {}).get("invitationId") != invitation.id:
            continue
        deps.rules.store_for_tenant(invitation.rules, tenant_id, invitation.id, now)
        _void_others(invitation, tenant_id, deps, now)
        if not existed:
            finished += 1
            logger.warning("invitation %s: accepted without a tenant row; tenant %s recorded by the timer",
                           invitation.id, tenant_id)
    return finished


def _status_page(customer: str, status: str, invitation_id: str) -> pages.Page:
    # Consent granted: the pages link the customer's next step, portal access for the MSSP's analysts.
    if status == TenantStatus.ACTIVE:
        return pages.access_granted(customer, portal_access.path(invitation_id))
    if status == TenantStatus.VERIFYING:
        return pages.consent_received(customer, portal_access.path(invitation_id))
    if status == TenantStatus.NOT_LICENSED:
        return pages.not_licensed(customer)
    return pages.not_verified(customer, status)


def _complete(invitation: Invitation, params: dict[str, str], state: str, completion: str,
              deps: CallbackDeps) -> CallbackResult | None:
    """Act on an admin-consent redirect; None when the invitation changed concurrently."""
    customer = invitation.customer_name
    if params.get("error"):
        # An error redirect can be forged by anyone holding the link: it ends this invitation and nothing
        # else. A tenant's status is only ever changed by what Microsoft's APIs answer us.
        reason = _error_reason(params)
        if not deps.invitations.complete(invitation, DECLINED, reason, completion, deps.now()):
            return None
        if NOT_LICENSED_CODE in reason:
            return CallbackResult(pages.not_licensed(customer), [Notification(invitation.id, "not_licensed")])
        return CallbackResult(pages.declined(customer), [Notification(invitation.id, "declined")])
    if params.get("admin_consent", "").lower() != "true":
        return CallbackResult(pages.link_invalid())
    claimed = params.get("tenant", "")
    if not is_guid(claimed):
        return CallbackResult(pages.link_invalid())
    claimed = claimed.lower()
    expected = invitation.expected_tenant_id
    if expected:
        if expected != claimed:
            logger.warning("invitation %s: consent came back from tenant %s, invited %s; refused",
                           invitation.id, claimed, expected)
            return CallbackResult(pages.wrong_organization())
        return _accept(invitation, expected, completion, deps)
    # The invitation named no tenant, and the redirect's `tenant` proves nothing: have the admin sign in
    # to the tenant it claims. Only an id_token Entra signed for that tenant, our app and this nonce
    # completes the invitation (handle_sign_in).
    nonce = secrets.token_urlsafe(32)
    if not deps.invitations.record_claim(invitation, claimed, _digest(nonce), deps.now()):
        return None
    logger.info("invitation %s: consent redirect names tenant %s; asking for a sign-in to prove it",
                invitation.id, claimed)
    return CallbackResult(None, redirect=sign_in_url(deps.sign_in, claimed, state, nonce))


def sign_in_url(sign_in: SignIn, tenant_id: str, state: str, nonce: str) -> str:
    """The OpenID Connect implicit sign-in for an id_token only, posted back to the callback (form_post)."""
    query = urlencode({"client_id": sign_in.client_id, "response_type": "id_token",
                       "redirect_uri": sign_in.redirect_uri, "response_mode": "form_post",
                       # profile: the token then carries `oid`, which the audit trail records.
                       "scope": "openid profile",
                       "state": state, "nonce": nonce})
    return f"{sign_in.authority_host}/{tenant_id}/oauth2/v2.0/authorize?{query}"


def _signed_in(invitation: Invitation, params: dict[str, str], completion: str,
               deps: CallbackDeps) -> CallbackResult | None:
    claimed = str(invitation.row.get("claimedTenantId") or "")
    nonce_hash = str(invitation.row.get("nonceHash") or "")
    if invitation.expected_tenant_id or not claimed or not nonce_hash:
        # No consent redirect asked for this sign-in.
        return CallbackResult(pages.link_invalid())
    if params.get("error"):
        logger.info("invitation %s: the sign-in did not complete (%s)", invitation.id, _error_reason(params))
        return CallbackResult(pages.sign_in_incomplete(invitation.customer_name))
    token = params.get("id_token", "")
    try:
        claims = verify_id_token(token, keys=deps.sign_in.keys, authority_host=deps.sign_in.authority_host,
                                 client_id=deps.sign_in.client_id, now=deps.now())
    except IdTokenInvalid as exc:
        logger.warning("invitation %s: sign-in refused: %s", invitation.id, exc)
        return CallbackResult(pages.sign_in_invalid())
    except (SigningKeysUnavailable, requests.RequestException) as exc:
        logger.error("invitation %s: Entra's signing keys could not be read: %s", invitation.id, type(exc).__name__)
        return CallbackResult(pages.unavailable())
    if not secrets.compare_digest(_digest(claims.nonce), nonce_hash):
        logger.warning("invitation %s: sign-in refused: the id_token's nonce is not this invitation's", invitation.id)
        return CallbackResult(pages.sign_in_invalid())
    claimed_at = invitation.row.get("claimedAt")
    if not isinstance(claimed_at, datetime) or deps.now() - claimed_at > SIGN_IN_WINDOW:
        logger.warning("invitation %s: sign-in refused: it came more than %s after the consent", invitation.id,
                       SIGN_IN_WINDOW)
        return CallbackResult(pages.sign_in_invalid())
    # Only someone who could have granted this consent proves it: a member (not a guest) of the tenant with
    # a role that may grant tenant-wide consent to application permissions. Any user's sign-in would let a
    # holder of another link bind a tenant whose admin consented but never finished the sign-in.
    if claims.guest or not claims.directory_roles & CONSENTING_ROLES:
        logger.warning("invitation %s: sign-in refused: the user is %s of tenant %s", invitation.id,
                       "a guest" if claims.guest else "not an administrator", claims.tenant_id)
        return CallbackResult(pages.sign_in_not_admin(invitation.customer_name))
    if claims.tenant_id != claimed:
        logger.warning("invitation %s: signed in to tenant %s, the consent redirect named %s; refused",
                       invitation.id, claims.tenant_id, claimed)
        return CallbackResult(pages.wrong_organization())
    return _accept(invitation, claims.tenant_id, completion, deps)


def _accept(invitation: Invitation, tenant_id: str, completion: str, deps: CallbackDeps) -> CallbackResult | None:
    """Consent granted for a proven tenant: bind it, verify access, void the tenant's other invitations."""
    customer = invitation.customer_name
    if not _may_bind(invitation, deps.tenants.get(tenant_id)):
        logger.warning("invitation %s: tenant %s belongs to another invitation or is offboarded or disabled; "
                       "refused (re-onboarding is POST /api/tenants/{id}/consent)", invitation.id, tenant_id)
        return CallbackResult(pages.already_onboarded(customer))
    now = deps.now()
    if not deps.invitations.complete(invitation, ACCEPTED, "admin consent granted", completion, now, tenant_id):
        return None
    try:
        deps.tenants.change(tenant_id, _bound(invitation, _consented(invitation, now)), now, create=True)
    except NotBindable:
        # Taken by another invitation between the check above and now: this one is used up, the tenant kept.
        logger.warning("invitation %s: tenant %s was bound to another invitation meanwhile; left as it is",
                       invitation.id, tenant_id)
        return CallbackResult(pages.already_onboarded(customer))
    deps.rules.store_for_tenant(invitation.rules, tenant_id, invitation.id, now)
    _void_others(invitation, tenant_id, deps, now)
    source = str(invitation.row.get("alertSource") or "graph")
    check = run_check(deps.checker, tenant_id, source)
    row = apply_check(deps.tenants, tenant_id, check, deps.now(), deps.verification_timeout_seconds) or {}
    status = str(row.get("status") or TenantStatus.VERIFYING)
    notifications = [Notification(invitation.id, status)] if status in REPORTED_STATUSES else []
    return CallbackResult(_status_page(customer, status, invitation.id), notifications)


def _may_bind(invitation: Invitation, row: dict[str, Any] | None) -> bool:
    """Whether a consent through `invitation` may (re)write this tenant row."""
    if row is None or not row.get("status"):
        return True
    if invitation.reconsent_of and invitation.reconsent_of == row.get("RowKey"):
        return True  # the MSSP asked for this re-consent explicitly
    if row.get("status") in (TenantStatus.OFFBOARDED, TenantStatus.DISABLED):
        return False
    return bool(row.get("invitationId") == invitation.id)


def _void_others(invitation: Invitation, tenant_id: str, deps: CallbackDeps, now: datetime) -> None:
    for other in deps.invitations.pending_for_tenant(tenant_id):
        if other.id != invitation.id and deps.invitations.complete(
                other, VOIDED, f"tenant onboarded through invitation {invitation.id}", "", now, tenant_id):
            logger.info("tenant %s: invitation %s voided (onboarded through invitation %s)", tenant_id, other.id,
                        invitation.id)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _consented(invitation: Invitation, now: datetime) -> Callable[[dict], tuple[str, str]]:
    def mutate(row: dict) -> tuple[str, str]:
        row.setdefault("displayName", invitation.row.get("customerName"))
        row.update(alertSource=invitation.row.get("alertSource") or "graph", invitationId=invitation.id,
                   consentedAt=now, verifyingSince=now, verifyAttempts=0)
        row.setdefault("apiHost", "")
        return TenantStatus.VERIFYING.value, f"admin consent granted (invitation {invitation.id})"
    return mutate


def _bound(invitation: Invitation, mutate: Callable[[dict], tuple[str, str]]) -> Callable[[dict], tuple[str, str]]:
    """`mutate`, checked against the row as it is read inside the conditional update."""
    def guarded(row: dict) -> tuple[str, str]:
        if not _may_bind(invitation, row if row.get("status") else None):
            raise NotBindable(row.get("RowKey"))
        return mutate(row)
    return guarded


def _only_if_new(mutate: Callable[[dict], tuple[str, str]]) -> Callable[[dict], tuple[str, str] | None]:
    """`mutate` for a row being created; a row someone else wrote meanwhile is left as it is."""
    def guarded(row: dict) -> tuple[str, str] | None:
        return None if row.get("status") else mutate(row)
    return guarded
