"""The e-mails of the notification run: one per alert, or one digest per recipient and run, shaped
like Defender's alert notifications (docs/MICROSOFT.md, "E-mail notifications"): severity, title,
organisation, device, time,
category, MITRE techniques, a description excerpt and the link to the alert in the customer's tenant.

An e-mail owed for a severity rise (a `severity-<Level>` obligation, fetch_alerts/STORAGE.md) says so in
its subject and text, from which level to which and when (`SeverityRise`); digests mark such alerts.

Every value comes from a customer tenant and is untrusted: it is HTML-escaped, stripped of control and
invisible format characters (bidi overrides, zero-width characters: they can disguise text), bounded in
length, and never put into a header unfolded. The HTML uses inline CSS and tables only (what common mail
clients render) and loads nothing: no images, no tracking, no link rewriting. A plain-text part carries
the same content. The Message-ID derives from the caller's stable id, so a resent e-mail is recognisable
as the same one.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from notify_mssp.rules import Rule, alert_device_groups
from shared.alerts import portal_alert_url, risen_level, severity_level
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_TITLE_CHARS = 300
_DESCRIPTION_CHARS = 600
_SUBJECT_CHARS = 250
_HEADER_CHARS = 200
_MESSAGE_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_COLOURS = {"High": "#a4262c", "Medium": "#ca5010", "Low": "#8a6d00", "Informational": "#005a9e"}
_RANKS = {"Informational": 1, "Low": 2, "Medium": 3, "High": 4}
_FONT = "font-family:Segoe UI,Helvetica,Arial,sans-serif"


@dataclass
class EmailMessage:
    """One e-mail ready for a transport; plain data (JSON via to_json/from_json) for the Durable boundary."""

    sender: str
    to: list[str]
    subject: str
    html: str
    text: str
    message_id: str  # "<token@domain>"
    headers: dict[str, str] = field(default_factory=dict)
    sender_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> EmailMessage:
        return cls(**value)


# --- cleaning untrusted values ------------------------------------------------------------------------------


def clean(value: object, limit: int, *, multiline: bool = False) -> str:
    """A displayable string: format characters dropped, control characters made spaces, whitespace
    collapsed (line breaks kept when `multiline`), cut to `limit` characters with an ellipsis.

    Format characters (general category Cf) are invisible and change what a reader sees without showing:
    bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069) reorder text ("exe.txt" shown for
    "txt.exe"), zero-width spaces and joiners (U+200B-200D), the BOM (U+FEFF) and the soft hyphen (U+00AD)
    split or hide words a reader or a filter compares; Unicode's own guidance is to not display them in
    identifiers (https://www.unicode.org/reports/tr31/, https://www.unicode.org/reports/tr36/). They are
    dropped, not made spaces, so "pay<ZWSP>pal" reads as what a filter would match. Emoji sequences joined
    by U+200D show as their separate emoji, which loses nothing an alert says."""
    text = "" if value is None else str(value)
    kept = []
    for char in text:
        if char == "\n" and multiline:
            kept.append(char)
            continue
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        kept.append(" " if category in ("Cc", "Cs") else char)
    text = "".join(kept)
    if multiline:
        lines = [" ".join(line.split()) for line in text.splitlines()]
        text = "\n".join(line for line in lines if line)
    else:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def message_id_for(token: str, sender: str) -> str:
    """`<token@sender's domain>`; a token with other characters than letters, digits, `.`, `_`, `-` (or
    longer than 64) is replaced by its SHA-256, so any stable key gives a stable, valid Message-ID."""
    if not _MESSAGE_TOKEN.fullmatch(token):
        token = hashlib.sha256(token.encode("utf-8")).hexdigest()[:40]
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<{token}@{domain}>"


def _header_value(value: object) -> str:
    return clean(value, _HEADER_CHARS).encode("ascii", "replace").decode("ascii")


# --- what an e-mail says about one alert --------------------------------------------------------------------


@dataclass(frozen=True)
class AlertFacts:
    """The cleaned values of one alert as a given rule shows them (empty strings when not shown)."""

    alert_id: str
    severity: str
    title: str
    organisation: str
    device: str
    device_group: str
    created: str
    category: str
    techniques: str
    description: str
    link: str


def _payload(alert_row: dict[str, Any]) -> dict[str, Any]:
    """The stored alert object, `{}` when the row has none or it is unreadable."""
    if not alert_row.get("payloadParts"):
        return {}
    from shared.payload import decode_payload

    try:
        return decode_payload(alert_row)
    except Exception as exc:  # noqa: BLE001 - a broken payload (zlib, JSON) never stops an e-mail
        logger.warning("alert %s: stored payload unreadable: %s", alert_row.get("alertId"), type(exc).__name__)
        return {}


def _techniques(value: object) -> str:
    try:
        items = json.loads(value) if isinstance(value, str) and value else (value or [])
    except ValueError:
        items = []
    if not isinstance(items, list):
        return ""
    return clean(", ".join(str(i) for i in items), 200)


def _created(value: object) -> str:
    """`2026-11-27T08:01:02.1234567Z` (the stored form) -> `2026-11-27 08:01 UTC`."""
    text = str(value or "")
    try:
        moment = datetime.strptime(text[:16], "%Y-%m-%dT%H:%M")
    except ValueError:
        return clean(text, 40)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def alert_link(alert_row: dict[str, Any], tenant_id: str, portal_host: str, *, with_tenant: bool) -> str:
    """The alert's page in the Defender portal (`/alerts/{id}?tid={tenant}`), https only."""
    stored = str(alert_row.get("portalLink") or "")
    parts = urlsplit(stored)
    if parts.scheme != "https" or not parts.netloc:
        alert_id = str(alert_row.get("alertId") or "")
        parts = urlsplit(portal_alert_url(portal_host, alert_id))
    query = f"tid={quote(tenant_id, safe='')}" if with_tenant and tenant_id else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def alert_facts(alert_row: dict[str, Any], tenant_row: dict[str, Any], rule: Rule, portal_host: str) -> AlertFacts:
    tenant_id = str(tenant_row.get("RowKey") or alert_row.get("PartitionKey") or "")
    raw_severity = str(alert_row.get("severity") or "")
    severity = severity_level(raw_severity) or clean(raw_severity[:1].upper() + raw_severity[1:], 30) or "Unknown"
    needs_payload = "description" not in alert_row or rule.include_device_information
    payload = _payload(alert_row) if needs_payload else {}
    description = alert_row["description"] if "description" in alert_row else payload.get("description")
    # Every group of the alert's devices, not the first device's only: a rule for one of them matched it.
    groups = ", ".join(alert_device_groups(alert_row, payload)) if rule.include_device_information else ""
    return AlertFacts(
        alert_id=clean(alert_row.get("alertId"), 200),
        severity=severity,
        title=clean(alert_row.get("title"), _TITLE_CHARS) or "(untitled alert)",
        organisation=clean(tenant_row.get("displayName") or tenant_id, 200) if rule.include_organization_name else "",
        device=clean(alert_row.get("deviceName"), 200) if rule.include_device_information else "",
        device_group=clean(groups, 200),
        created=_created(alert_row.get("createdDateTime")),
        category=clean(alert_row.get("category"), 100),
        techniques=_techniques(alert_row.get("mitreTechniques")),
        description=clean(description or "", _DESCRIPTION_CHARS, multiline=True),
        link=alert_link(alert_row, tenant_id, portal_host, with_tenant=rule.include_tenant_link),
    )


# --- a severity rise ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeverityRise:
    """What a `severity-<Level>` obligation owes an e-mail about: the level the alert rose to, the level
    it rose from (the highest it had before, which is what ingestion compares a new version against; ""
    when not known) and when the service stored the rising version (ISO 8601; "" when not known)."""

    level: str
    previous: str = ""
    seen: str = ""

    def change(self) -> str:
        """`from Low to High`, or `to High` when the earlier level is unknown."""
        return f"from {self.previous} to {self.level}" if self.previous else f"to {self.level}"


def severity_rise(about: Mapping[str, Any] | None) -> SeverityRise | None:
    """The rise a planned e-mail or digest item tells of (its `reason`, and `previousSeverity` and
    `riseSeenAt` when the planner knew them, notify_mssp.planner); None for a new alert or a reason naming
    no known level."""
    reason = str((about or {}).get("reason") or "")
    risen = risen_level(reason)
    if risen is None:
        return None
    level = severity_level(risen)
    if level is None:
        return None
    previous = severity_level(str((about or {}).get("previousSeverity") or "")) or ""
    if previous and _RANKS[previous] >= _RANKS[level]:
        previous = ""  # not a rise from that level: say only what is known
    return SeverityRise(level, previous, str((about or {}).get("riseSeenAt") or ""))


def _rise_pairs(rise: SeverityRise, alert_row: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [("Severity change", f"rose {rise.change()}")]
    if rise.seen:
        pairs.append(("Rise seen", _created(rise.seen)))
    if alert_row.get("lastUpdateDateTime"):
        pairs.append(("Last updated", _created(alert_row.get("lastUpdateDateTime"))))
    return pairs


def _rise_when(rise: SeverityRise, alert_row: dict[str, Any]) -> str:
    if rise.seen:
        return f" (seen {_created(rise.seen)})"
    if alert_row.get("lastUpdateDateTime"):
        return f" (alert last updated {_created(alert_row.get('lastUpdateDateTime'))})"
    return ""


# --- rendering -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    """Who the e-mails come from (MAIL_SENDER, MAIL_SENDER_NAME) and the portal their links open."""

    address: str
    name: str
    portal_host: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Sender:
        from notify_mssp.config import SenderConfig

        config = SenderConfig.from_settings(settings or get_settings())
        return cls(config.address, config.name, config.portal_host)


def _badge(severity: str) -> str:
    colour = _COLOURS.get(severity, "#605e5c")
    return (f'<span style="display:inline-block;padding:2px 8px;border-radius:3px;background:{colour};'
            f'color:#ffffff;font-size:12px;font-weight:600;{_FONT}">{_e(severity)}</span>')


def _page(heading: str, inner: str, footer: str) -> str:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body style="margin:0;padding:0;background:#f3f2f1;{_FONT}">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f3f2f1">'
        '<tr><td align="center" style="padding:16px">'
        '<table role="presentation" width="600" cellpadding="0" cellspacing="0" '
        'style="max-width:600px;width:100%;background:#ffffff;border:1px solid #e1dfdd">'
        f'<tr><td style="padding:16px 20px;background:#0078d4;color:#ffffff;font-size:18px;font-weight:600;{_FONT}">'
        f'{heading}</td></tr>'
        f'<tr><td style="padding:20px;color:#323130;font-size:14px;line-height:20px;{_FONT}">{inner}</td></tr>'
        f'<tr><td style="padding:12px 20px;border-top:1px solid #e1dfdd;color:#605e5c;font-size:12px;{_FONT}">'
        f'{footer}</td></tr></table></td></tr></table></body></html>'
    )


def _row(label: str, value: str) -> str:
    return (f'<tr><td style="padding:4px 12px 4px 0;color:#605e5c;vertical-align:top;white-space:nowrap;{_FONT}">'
            f'{_e(label)}</td><td style="padding:4px 0;color:#323130;{_FONT}">{value}</td></tr>')


def _button(link: str, label: str) -> str:
    return (f'<a href="{_e(link)}" style="display:inline-block;padding:8px 16px;background:#0078d4;'
            f'color:#ffffff;text-decoration:none;border-radius:2px;font-weight:600;{_FONT}">{_e(label)}</a>')


def _detail_pairs(facts: AlertFacts, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    pairs = [("Severity", facts.severity), *extra, ("Alert", facts.title)]
    if facts.organisation:
        pairs.append(("Organization", facts.organisation))
    if facts.device:
        pairs.append(("Device", facts.device))
    if facts.device_group:
        pairs.append(("Device group", facts.device_group))
    pairs += [("Detected", facts.created), ("Category", facts.category or "-"),
              ("MITRE techniques", facts.techniques or "-"), ("Alert id", facts.alert_id)]
    return pairs


FOOTER = ("You receive this e-mail because of the notification rule \u201c{rule}\u201d of your MSSP's "
          "Defender alert service.")


def _headers(rule: Rule, tenant_id: str = "", alert_id: str = "") -> dict[str, str]:
    headers = {
        # RFC 3834, and Exchange's own header: no out-of-office or other automatic replies to a robot.
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
        "X-MSSP-Rule-Id": _header_value(rule.id),
    }
    if tenant_id:
        headers["X-MSSP-Tenant-Id"] = _header_value(tenant_id)
    if alert_id:
        headers["X-MSSP-Alert-Id"] = _header_value(alert_id)
    return headers


def render_alert_email(alert_row: dict[str, Any], tenant_row: dict[str, Any], rule: Rule, recipient: str, *,
                       message_id: str, sender: Sender | None = None, test: bool = False,
                       rise: SeverityRise | None = None) -> EmailMessage:
    """The per-alert e-mail of `rule` to `recipient`; `test` marks Defender's "Send test email" (its
    link opens the tenant's alert list: the sample alert does not exist); `rise` makes it the e-mail
    about a severity rise (`severity_rise(spec)`) instead of a new alert."""
    sender = sender or Sender.from_settings()
    facts = alert_facts(alert_row, tenant_row, rule, sender.portal_host)
    prefix = "[Test] " if test else ""
    where = f"{facts.organisation}: " if facts.organisation else ""
    if rise is not None:
        subject = clean(f"{prefix}{where}Severity rose {rise.change()}: {facts.title}", _SUBJECT_CHARS)
        intro = (f"Microsoft Defender raised the severity of an alert in a customer tenant {rise.change()}"
                 f"{_rise_when(rise, alert_row)}.")
        heading = _e(f"{prefix}Severity rose to {rise.level}")
        pairs = _detail_pairs(facts, _rise_pairs(rise, alert_row))
    else:
        subject = clean(f"{prefix}{where}{facts.severity}-severity alert: {facts.title}", _SUBJECT_CHARS)
        intro = "Microsoft Defender raised a new alert in a customer tenant."
        heading = _e(f"{prefix}{facts.severity}-severity alert")
        pairs = _detail_pairs(facts)
    if test:
        intro = "This is a test of the notification rule; the alert below is a made-up sample, not a real alert."
    button = "Open the alert list in Microsoft Defender" if test else "View the alert in Microsoft Defender"
    footer = FOOTER.format(rule=clean(rule.name, 200))
    rows = "".join(_row(label, _badge(value) if label == "Severity" else _e(value)) for label, value in pairs)
    description = ""
    if facts.description:
        description = ('<p style="margin:16px 0 4px 0;color:#605e5c">Description</p>'
                       f'<p style="margin:0">{"<br>".join(_e(line) for line in facts.description.splitlines())}</p>')
    inner = (f'<p style="margin:0 0 12px 0">{_e(intro)}</p>'
             f'<table role="presentation" cellpadding="0" cellspacing="0">{rows}</table>{description}'
             f'<p style="margin:20px 0 0 0">{_button(facts.link, button)}</p>'
             f'<p style="margin:8px 0 0 0;font-size:12px;color:#605e5c">{_e(facts.link)}</p>')
    text_lines = [intro, ""] + [f"{label}: {value}" for label, value in pairs]
    if facts.description:
        text_lines += ["", "Description:", facts.description]
    text_lines += ["", f"{button}: {facts.link}", "", "--", footer]
    tenant_id = str(tenant_row.get("RowKey") or alert_row.get("PartitionKey") or "")
    return EmailMessage(
        sender=sender.address, sender_name=sender.name, to=[recipient], subject=subject,
        html=_page(heading, inner, _e(footer)), text="\n".join(text_lines) + "\n",
        message_id=message_id_for(message_id, sender.address),
        headers=_headers(rule, tenant_id, facts.alert_id))


DigestEntry = tuple[dict[str, Any], dict[str, Any]] | tuple[dict[str, Any], dict[str, Any], SeverityRise | None]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _digest_summary(total: int, rises: int, listed_all: bool) -> str:
    """`3 new alerts`; with severity rises among them `2 new alerts and 1 alert raised in severity`, or
    `7 new or raised alerts` when some are not listed (their kind is not known here)."""
    if not rises:
        return f"{_count(total, 'new alert')}"
    if not listed_all:
        return f"{total} new or raised alert{'s' if total != 1 else ''}"
    raised = f"{_count(rises, 'alert')} raised in severity"
    return raised if rises == total else f"{_count(total - rises, 'new alert')} and {raised}"


def render_digest_email(items: Sequence[DigestEntry], rule: Rule, recipient: str, *,
                        total: int, message_id: str, sender: Sender | None = None) -> EmailMessage:
    """One digest of `rule` to `recipient` listing `items` (tenant row, alert row and, for an alert listed
    for a severity rise, its `SeverityRise`); `total` counts every matching alert, so the rest beyond the
    list is stated. Raised alerts are marked `rose from Low` next to their severity."""
    sender = sender or Sender.from_settings()
    facts, rises, tenants = [], [], set()
    for tenant, alert, *rest in items:
        facts.append(alert_facts(alert, tenant, rule, sender.portal_host))
        rises.append(rest[0] if rest else None)
        tenants.add(str(tenant.get("RowKey") or alert.get("PartitionKey")))
    total = max(total, len(facts))
    across = f" in {len(tenants)} customer tenants" if len(tenants) > 1 else ""
    summary = _digest_summary(total, sum(r is not None for r in rises), total == len(facts))
    subject = clean(f"Alert digest: {summary}{across}", _SUBJECT_CHARS)
    head = ["Severity", "Alert"] + (["Organization"] if rule.include_organization_name else []) \
        + (["Device"] if rule.include_device_information else []) + ["Detected"]
    cell = f"padding:6px 8px;border-bottom:1px solid #edebe9;vertical-align:top;{_FONT}"
    header_row = "".join(f'<th align="left" style="{cell};color:#605e5c;font-weight:600">{_e(h)}</th>' for h in head)
    body_rows, text_lines = [], [f"{summary[:1].upper()}{summary[1:]} matched the rule "
                                 f"\u201c{clean(rule.name, 200)}\u201d.", ""]
    for item, rise in zip(facts, rises, strict=True):
        marked = ""
        if rise is not None:
            marked = (f'<div style="margin-top:4px;color:#a4262c;font-size:12px;font-weight:600;white-space:nowrap">'
                      f'{_e("rose " + rise.change())}</div>')
        cells = [_badge(item.severity) + marked,
                 f'<a href="{_e(item.link)}" style="color:#0078d4">{_e(item.title)}</a>']
        if rule.include_organization_name:
            cells.append(_e(item.organisation))
        if rule.include_device_information:
            cells.append(_e(item.device or "-"))
        cells.append(_e(item.created))
        body_rows.append("<tr>" + "".join(f'<td style="{cell}">{c}</td>' for c in cells) + "</tr>")
        where = f" | {item.organisation}" if item.organisation else ""
        device = f" | {item.device}" if item.device else ""
        label = f"{item.severity}, rose {rise.change()}" if rise is not None else item.severity
        text_lines += [f"[{label}] {item.title}{where}{device} | {item.created}", f"  {item.link}"]
    unlisted = total - len(facts)
    more = ""
    if unlisted > 0:
        rest_line = f"and {unlisted} more matching alert{'s' if unlisted != 1 else ''} not listed here."
        more = f'<p style="margin:12px 0 0 0">{_e(rest_line)}</p>'
        text_lines += ["", rest_line]
    inner = (f'<p style="margin:0 0 12px 0">{_e(text_lines[0])}</p>'
             f'<table role="presentation" width="100%" cellpadding="0" cellspacing="0">'
             f'<tr>{header_row}</tr>{"".join(body_rows)}</table>{more}')
    footer = FOOTER.format(rule=clean(rule.name, 200))
    text_lines += ["", "--", footer]
    return EmailMessage(
        sender=sender.address, sender_name=sender.name, to=[recipient], subject=subject,
        html=_page(_e(f"Alert digest: {summary}"), inner, _e(footer)),
        text="\n".join(text_lines) + "\n", message_id=message_id_for(message_id, sender.address),
        headers=_headers(rule))


def render_notice_email(subject: str, lines: list[str], recipients: list[str], *, message_id: str,
                        sender: Sender | None = None) -> EmailMessage:
    """An operational notice to the MSSP's ops address: a subject and a few lines of plain facts."""
    sender = sender or Sender.from_settings()
    subject = clean(subject, _SUBJECT_CHARS)
    cleaned = [clean(line, 1000) for line in lines]
    inner = "".join(f'<p style="margin:0 0 8px 0">{_e(line)}</p>' for line in cleaned)
    footer = "An operational notice of your MSSP's Defender alert service. It is sent once per incident."
    return EmailMessage(
        sender=sender.address, sender_name=sender.name, to=list(recipients), subject=subject,
        html=_page(_e(subject), inner, _e(footer)), text="\n".join(cleaned + ["", "--", footer]) + "\n",
        message_id=message_id_for(message_id, sender.address),
        headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"})
