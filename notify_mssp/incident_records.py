"""The operational incidents' records and their notices: opening an incident once and announcing it once,
clearing it once and announcing that once (notify_mssp.ops_notices evaluates when; notify_mssp.notice_mail
sends).

Incident state is stored in the Incidents table, so a restarted host or a second instance never repeats a
notice: PartitionKey `notice`, RowKey `<kind>|<subject>` (shared.incidents owns the keys; subject: a tenant
GUID, `mssp`, or for one-off daily notices `<tenant>|<YYYY-MM-DD>`), columns `kind`, `subject`, `open`,
`summary`, `openedAt`, `occurrences`, `clears`, `notice` and `clearNotice` (`pending` until the e-mail went out,
then `sent`; `none` when no ops address is set, the incident is only recorded, or the clear is silent),
`noticeSentAt`, `clearedAt`, `clearNoticeSentAt`. Opening and closing are conditional (ETag) writes, so of two
evaluators only one opens an incident; a notice that could not be sent stays `pending` and goes out at the
next evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableClient

from notify_mssp.email import Sender
from notify_mssp.notice_mail import send_notice
from notify_mssp.ratecap import SendRateCap
from notify_mssp.transports import Transport
from shared.incidents import new_notice, read_notice, write_notice

logger = logging.getLogger(__name__)


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
    """What raising and clearing need: the Incidents table, where notices go and how (built by
    notify_mssp.wiring.notice_context)."""

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
    return send_notice(subject, lines, token, recipients=ctx.recipients, transport=ctx.transport,
                       rate_cap=ctx.rate_cap, sender=ctx.sender)


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
