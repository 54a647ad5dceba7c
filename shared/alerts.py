"""The Alerts table's rows as every flow sees them: ingestion writes them, the SIEM pull API and the
notification run read them (layouts: fetch_alerts/STORAGE.md).

Owns the row keys and their encoding, the obligation reasons and states, and the severity vocabulary, so
no flow spells a key prefix, a reason or a state by hand.

Alert ids come from Microsoft and may hold characters Table Storage forbids in keys (`/ \\ # ?`, control
characters) or our own `|` separator, so they are escaped (shared.tables.escape_key_part); and Microsoft
documents no length for them, while a key holds at most 1 KiB, so a long one is shortened with a hash
(`escape_id`).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from urllib.parse import quote

from shared.tables import KEY_ESCAPE, escape_key_part, prefix_end

ALERT_PREFIX = "alert|"
OBLIGATION_PREFIX = "obligation|"
FEED_PREFIX = "feed|"
# A tenant feed RowKey: `feed|<stored_ns, 20 digits>|<8 hex writer id>`.
FEED_KEY_PATTERN = re.escape(FEED_PREFIX) + r"[0-9]{20}\|[0-9a-f]{8}"

# Graph's severities that rank, lowest first, in the capitalised spelling rules and reasons use
# (`severity-High`); the stored `severity` column holds Graph's lower-case-first spelling (`high`).
SEVERITY_LEVELS = ("Informational", "Low", "Medium", "High")


class ObligationState(StrEnum):
    """An obligation row's `state`: ingestion writes `pending`, the notification run moves it."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"


class ObligationReason(StrEnum):
    """Why an obligation exists: a new alert, or (with a level appended) a severity rise."""

    NEW = "new"
    SEVERITY = "severity-"  # a prefix: `severity-<Level>`, see severity_reason


def severity_reason(level: str) -> str:
    """`High` -> `severity-High`."""
    return f"{ObligationReason.SEVERITY.value}{level}"


def risen_level(reason: str) -> str | None:
    """The level a `severity-<Level>` reason names (as written, unchecked); None for any other reason."""
    prefix = ObligationReason.SEVERITY.value
    return reason[len(prefix):] if reason.startswith(prefix) else None


def severity_level(graph_severity: str | None) -> str | None:
    """`high` (Graph spelling, as stored) -> `High`; None for severities without a rank."""
    if not graph_severity:
        return None
    level = graph_severity[:1].upper() + graph_severity[1:].lower()
    return level if level in SEVERITY_LEVELS else None


def severity_rank(graph_severity: str | None) -> int:
    """1 (informational) .. 4 (high); 0 for a severity without a rank (`unknown`, a future value)."""
    level = severity_level(graph_severity)
    return SEVERITY_LEVELS.index(level) + 1 if level is not None else 0


# Table Storage keys hold at most 1 KiB (docs/MICROSOFT.md, "Table Storage limits"), and a tenant feed row lists
# up to 100 escaped ids in one 64 KiB string property, so an escaped id is at most this long.
MAX_ESCAPED_ID = 256
_LONG_MARK = KEY_ESCAPE + "-"  # never in an escaped value, where `!` is always followed by two hex digits
_KEPT = MAX_ESCAPED_ID - len(_LONG_MARK) - 64


def escape_id(alert_id: str) -> str:
    """The id as it appears in keys: escaped, and when that is longer than MAX_ESCAPED_ID, its first
    characters, `!-` and the SHA-256 of the whole id (so no short id's form and no other long id's form equals
    it). Every flow reaches keys through this function, never by decoding one: the `alertId` column holds the
    id itself."""
    escaped = escape_key_part(alert_id)
    if len(escaped) <= MAX_ESCAPED_ID:
        return escaped
    return escaped[:_KEPT] + _LONG_MARK + hashlib.sha256(alert_id.encode("utf-8", "surrogatepass")).hexdigest()


def portal_alert_url(portal_host: str, alert_id: str) -> str:
    """The alert's page in the Defender portal, without a query: `{portal_host}/alerts/{id}` (surrogatepass: JSON
    may escape a lone surrogate, which the parser passes on, shared/fastjson.py)."""
    return f"{portal_host}/alerts/{quote(alert_id.encode('utf-8', 'surrogatepass'), safe='')}"


def alert_key(alert_id: str) -> str:
    return ALERT_PREFIX + escape_id(alert_id)


def alert_id_of_key(row_key: str) -> str:
    """The escaped alert id an alert RowKey holds (the form feed rows list)."""
    return row_key[len(ALERT_PREFIX):]


def obligation_key(alert_id: str, reason: str) -> str:
    return f"{obligation_key_prefix(alert_id)}{reason}"


def obligation_key_prefix(alert_id: str) -> str:
    """The common RowKey prefix of one alert's obligations (a range query reads them all)."""
    return f"{OBLIGATION_PREFIX}{escape_id(alert_id)}|"


def feed_key(ns: int, writer: str) -> str:
    return f"{FEED_PREFIX}{ns:020d}|{writer}"


ALERT_RANGE_END = prefix_end(ALERT_PREFIX)
OBLIGATION_RANGE_END = prefix_end(OBLIGATION_PREFIX)
FEED_RANGE_END = prefix_end(FEED_PREFIX)
