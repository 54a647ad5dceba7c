"""Rendering and sending one operational notice (notify_mssp.incident_records decides when): a slot of the
shared send cap, the notice e-mail (notify_mssp.email.render_notice_email) to the ops addresses, and what the
transport's outcome means for the notice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from notify_mssp.email import Sender, render_notice_email
from notify_mssp.ratecap import SendRateCap
from notify_mssp.transports import Transport

logger = logging.getLogger(__name__)


def send_notice(subject: str, lines: Sequence[str], token: str, *, recipients: Sequence[str],
                transport: Callable[[], Transport], rate_cap: SendRateCap | None = None,
                sender: Sender | None = None) -> bool:
    """Send one notice; False when it must be tried again later (rate cap, transport failure). `token` names
    the notice (its Message-ID), the same for every attempt."""
    if rate_cap is not None and rate_cap.try_acquire(1) < 1:
        logger.info("operational notice %r waits for the send rate cap", subject)
        return False
    message = render_notice_email(subject, list(lines), list(recipients), message_id=token, sender=sender)
    outcome = transport().send(message)
    if outcome.status == "sent":
        logger.info("operational notice sent: %s", subject)
        return True
    if outcome.status == "permanent":
        # The ops address itself is refused: retrying cannot help, and the incident stays recorded.
        logger.error("operational notice %r refused for good: %s (check OPS_EMAIL)", subject, outcome.detail)
        return True
    logger.warning("operational notice %r not sent yet: %s", subject, outcome.detail)
    return False
