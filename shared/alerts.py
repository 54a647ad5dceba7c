"""The Alerts table's rows as every flow sees them: ingestion writes them, the SIEM pull API and the
notification run read them (layouts: fetch_alerts/STORAGE.md).

Owns the row keys and their encoding, the obligation reasons and states, and the severity vocabulary, so
no flow spells a key prefix, a reason or a state by hand.

Alert ids come from Microsoft and may hold characters Table Storage forbids in keys (`/ \\ # ?`, control
characters) or our own `|` separator, so they are percent-encoded.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import quote

from shared.tables import prefix_end

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


def escape_id(alert_id: str) -> str:
    return quote(alert_id, safe="-_.~")


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
