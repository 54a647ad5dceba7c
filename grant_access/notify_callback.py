"""Telling the onboarding system how onboarding ended: the result (active, declined, verification failed,
...) POSTed to the invitation's callbackUrl, signed like the webhook, retried with backoff by a Durable
orchestration (never a thread outliving the request).

The orchestrator `notify_onboarding_result` gets a small input (invitation id, status, time) and calls the
activity `post_onboarding_result` until it delivers, the receiver refuses for good, or the attempts run
out; the waits between attempts are durable timers, so nothing is lost across restarts. Before every
attempt the activity resolves the URL's host once, vets every address, and connects to a vetted one
(shared.outbound_http; docs/ARCHITECTURE.md, invariant 4). The result is signed with a timestamp like the webhook.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from datetime import timedelta
from typing import Any, TypedDict

import requests

from grant_access import portal_access
from grant_access.invitations import Invitation, InvitationStore
from shared import outbound_http
from shared.names import POST_ONBOARDING_RESULT_ACTIVITY
from shared.outbound_url import HostDoesNotResolve, Resolver, UnsafeUrl, system_resolver
from shared.signing import signature_headers

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
FIRST_DELAY_SECONDS = 5
BACKOFF = 3  # 5 s, 15 s, 45 s, 2¼ min, 6¾ min: about 10 minutes in all


class ResultInput(TypedDict):
    invitationId: str
    status: str
    occurredAt: str


class Delivery(TypedDict):
    delivered: bool
    retry: bool
    detail: str


def instance_id(invitation_id: str, status: str) -> str:
    """One orchestration per invitation and result: a second start for the same result is refused."""
    return f"onboarding-result-{invitation_id}-{status}"


def orchestrate(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    """The orchestrator body (deterministic: only activities and durable timers)."""
    payload: ResultInput = context.get_input()

    outcome: Delivery = {"delivered": False, "retry": False, "detail": "not attempted"}
    attempts = 0
    for attempt in range(MAX_ATTEMPTS):
        attempts = attempt + 1
        outcome = yield context.call_activity(POST_ONBOARDING_RESULT_ACTIVITY, payload)
        if outcome["delivered"] or not outcome["retry"] or attempts == MAX_ATTEMPTS:
            break
        delay = timedelta(seconds=FIRST_DELAY_SECONDS * BACKOFF ** attempt)
        yield context.create_timer(context.current_utc_datetime + delay)
    return {"invitationId": payload["invitationId"], "status": payload["status"], "attempts": attempts,
            "delivered": outcome["delivered"], "detail": outcome["detail"]}


def result_body(invitation_row: dict[str, Any], payload: ResultInput, public_base_url: str = "") -> dict[str, Any]:
    """The POSTed result; `portalAccessUrl` is the customer's next step (grant_access/portal_access.py), set once
    the invitation's consent was granted and the app's public base URL is known, else null."""
    invitation = Invitation(payload["invitationId"], invitation_row)
    granted = bool(public_base_url) and portal_access.consented_tenant(invitation) is not None
    return {
        "type": "tenant.onboarding.result",
        "invitationId": payload["invitationId"],
        "externalId": invitation_row.get("externalId") or None,
        "customerName": invitation_row.get("customerName"),
        "tenantId": invitation_row.get("tenantId") or invitation_row.get("expectedTenantId") or None,
        "status": payload["status"],
        "occurredAt": payload["occurredAt"],
        "portalAccessUrl": portal_access.url(public_base_url, invitation.id) if granted else None,
    }


def post_result(payload: ResultInput, *, invitations: InvitationStore, secret: str, allow_loopback: bool,
                timeout: float, resolver: Resolver = system_resolver, verify: bool | str = True,
                public_base_url: str = "") -> Delivery:
    """One delivery attempt, to an address of the callbackUrl's host vetted right before it (the
    connection goes to that address: shared.outbound_http). `resolver` and `verify` are for tests."""
    invitation = invitations.get(payload["invitationId"])
    url = str((invitation.row if invitation else {}).get("callbackUrl") or "")
    if invitation is None or not url:
        return {"delivered": False, "retry": False, "detail": "no callbackUrl"}
    body = json.dumps(result_body(invitation.row, payload, public_base_url)).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers.update(signature_headers(secret, body))
    try:
        response = outbound_http.post(url, data=body, headers=headers, timeout=timeout,
                                      allow_loopback=allow_loopback, resolver=resolver, verify=verify)
    except HostDoesNotResolve:
        logger.warning("invitation %s: callbackUrl host does not resolve", invitation.id)
        return {"delivered": False, "retry": True, "detail": "host does not resolve"}
    except UnsafeUrl as exc:
        logger.warning("invitation %s: callbackUrl refused: %s", invitation.id, exc)
        return {"delivered": False, "retry": False, "detail": f"callbackUrl refused: {exc}"}
    except requests.RequestException as exc:
        logger.warning("invitation %s: callback POST failed: %s", invitation.id, type(exc).__name__)
        return {"delivered": False, "retry": True, "detail": type(exc).__name__}
    status = response.status_code
    logger.info("invitation %s: callback POST answered %d", invitation.id, status)
    if 200 <= status < 300:
        return {"delivered": True, "retry": False, "detail": f"HTTP {status}"}
    # A 3xx is not followed (the redirect target was never vetted) and counts as a refusal.
    return {"delivered": False, "retry": status >= 500 or status in (408, 429), "detail": f"HTTP {status}"}
