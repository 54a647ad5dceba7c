"""Writes one page of a tenant's alerts into its Alerts partition (layouts: fetch_alerts/STORAGE.md).

Per alert the writer decides from the stored version: first seen -> create the row (and its `new`
obligation unless it is backfill); newer -> replace the row under an ETag condition (and a
`severity-<Level>` obligation when the severity rises above the highest stored); same or older -> nothing.
Rows go in entity-group transactions (<= 100 operations, a byte budget under 4 MiB) together with one
feed row listing the versions the transaction stores, so a version and its feed entry commit together.

A transaction fails as a whole when another run changed a row first (a create meets an existing row, an
ETag no longer matches); the writer then reads the stored versions again and recomputes, so concurrent
runs can duplicate work but never an obligation, and an older version never replaces a newer one.

Reading stored versions costs queries, so for pages that are mostly new (a backfill) the writer first
tries the transaction as if every alert were new and reads only when that fails.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from fetch_alerts.keys import from_datetime, int_value, stored_ns
from fetch_alerts.normalise import Normalised
from shared import payload
from shared.alerts import (
    FEED_PREFIX,
    ObligationReason,
    ObligationState,
    alert_id_of_key,
    alert_key,
    feed_key,
    obligation_key,
    severity_rank,
    severity_reason,
)
from shared.tables import (
    CONFLICT_ATTEMPTS,
    MAX_FILTER_COMPARISONS,
    MAX_TRANSACTION_OPERATIONS,
    update_if_unchanged,
)

logger = logging.getLogger(__name__)

MAX_OPERATIONS = MAX_TRANSACTION_OPERATIONS
# The 4 MiB request limit counts the batch body, where binary travels as base64 (4/3) and strings as JSON.
MAX_TRANSACTION_BYTES = 3_400_000
_ROW_OVERHEAD_BYTES = 4_000
# Comparisons per $filter are limited to 15; one goes to the PartitionKey.
_IDS_PER_QUERY = MAX_FILTER_COMPARISONS - 1
# Attempts of one transaction on transient storage failures (5xx, dropped connections); a transaction that
# fails on a conflict is recomputed up to shared.tables.CONFLICT_ATTEMPTS times instead.
_TRANSIENT_ATTEMPTS = 4
_SELECT = ["RowKey", "lastUpdateTicks", "payloadHash", "maxSeverity", "firstSeenAt"]


@dataclass(frozen=True)
class Prepared:
    """An alert ready to store: normalised columns and its encoded payload."""

    norm: Normalised
    payload: payload.Payload

    @property
    def alert_id(self) -> str:
        return self.norm.alert_id

    @property
    def size(self) -> int:
        return self.payload.compressed_bytes * 4 // 3 + self.norm.text_bytes + _ROW_OVERHEAD_BYTES


@dataclass(frozen=True)
class Stored:
    ticks: int
    hash: str
    max_severity: str
    first_seen: datetime | None
    etag: str


@dataclass
class WriteResult:
    stored: int = 0
    unchanged: int = 0
    new_obligations: int = 0
    severity_obligations: int = 0
    transactions: int = 0
    feed_keys: list[str] = field(default_factory=list)
    # Visibility lag (seconds from lastUpdate to storing) of each version stored whose last update came
    # after the tenant's activation: the first sighting of that version (an older version is never stored).
    lags: list[int] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        self.lags.extend(other.lags)
        self.stored += other.stored
        self.unchanged += other.unchanged
        self.new_obligations += other.new_obligations
        self.severity_obligations += other.severity_obligations
        self.transactions += other.transactions
        self.feed_keys.extend(other.feed_keys)


class AlertWriter:
    """Stores pages of one tenant's alerts."""

    def __init__(self, table: TableClient, tenant_id: str, activated_ticks: int,
                 before_obligations: Callable[[], None], *, optimistic: bool = True,
                 in_flight: int = 2) -> None:
        """`before_obligations` sets the tenant's pendingNotifications marker; it is called before any
        transaction that carries an obligation. `optimistic`: try pages as all-new first (a backfill)."""
        self._table = table
        self._tenant = tenant_id
        self._activated = activated_ticks
        self._before_obligations = before_obligations
        self._marker_set = False
        self._marker_lock = threading.Lock()
        self._in_flight = max(1, in_flight)
        self._uncertain_feed: list[str] = []
        self._writer = secrets.token_hex(4)
        # Optimistic (no read) while pages turn out all new; off after the first conflict.
        self._optimistic = optimistic

    def write(self, alerts: Sequence[Prepared]) -> WriteResult:
        latest: dict[str, Prepared] = {}
        for alert in alerts:  # a page can repeat an alert only if the service misbehaves; keep the newest
            known = latest.get(alert.alert_id)
            if known is None or alert.norm.updated_ticks > known.norm.updated_ticks:
                latest[alert.alert_id] = alert
        result = WriteResult()
        groups = _groups(list(latest.values()), self._activated)
        if len(groups) == 1 or self._in_flight == 1:
            for group in groups:
                result.add(self._write_group(group))
            return self._with_uncertain_feed(result)
        # Transactions of one page touch disjoint rows: several in flight overlap our serialisation with
        # the storage service's work. Each keeps its own retry on conflicts.
        with ThreadPoolExecutor(max_workers=self._in_flight, thread_name_prefix="alert-tx") as pool:
            for part in pool.map(self._write_group, groups):
                result.add(part)
        return self._with_uncertain_feed(result)

    def _with_uncertain_feed(self, result: WriteResult) -> WriteResult:
        """Feed rows of transactions whose outcome we did not hear: publish those that did commit."""
        while self._uncertain_feed:
            key = self._uncertain_feed.pop()
            if key in result.feed_keys:
                continue
            try:
                self._table.get_entity(self._tenant, key, select=["RowKey"])
            except ResourceNotFoundError:
                continue
            result.feed_keys.append(key)
        result.feed_keys.sort()
        return result

    def _write_group(self, group: list[Prepared]) -> WriteResult:
        """Alerts whose operations fit one transaction (at most 2 each plus the feed row)."""
        stored: dict[str, Stored] | None = {} if self._optimistic else None
        for attempt in range(CONFLICT_ATTEMPTS):
            if stored is None:
                stored = self._stored_versions([a.alert_id for a in group])
            operations, result = self._operations(group, stored)
            if not operations:
                return result
            if len(operations) > MAX_OPERATIONS:  # more obligations than estimated: halve the group
                half = len(group) // 2
                result = self._write_group(group[:half])
                result.add(self._write_group(group[half:]))
                return result
            if result.new_obligations or result.severity_obligations:
                with self._marker_lock:
                    if not self._marker_set:
                        self._before_obligations()
                        self._marker_set = True
            try:
                self._submit(operations)
            except TableTransactionError as exc:
                # The SDK sets error_code on the errors it decodes (documented as an ivar, not declared).
                error_code = str(getattr(exc, "error_code", None))
                if exc.status_code not in (409, 412) and "EntityAlreadyExists" not in error_code \
                        and "UpdateConditionNotSatisfied" not in error_code:
                    raise
                logger.info("tenant %s: rows changed under a transaction (attempt %d); re-reading", self._tenant,
                            attempt + 1)
                self._optimistic = False
                stored = None
                continue
            result.transactions = 1
            return result
        raise RuntimeError(f"tenant {self._tenant}: rows kept changing under {CONFLICT_ATTEMPTS} transactions")

    def _operations(self, group: list[Prepared], stored: dict[str, Stored]) -> tuple[list[Any], WriteResult]:
        now = datetime.now(UTC)
        now_ticks = from_datetime(now)
        ns = stored_ns()
        key = feed_key(ns, self._writer)
        operations: list[Any] = []
        fed: list[list[Any]] = []
        result = WriteResult()
        for alert in group:
            norm = alert.norm
            previous = stored.get(alert.alert_id)
            severity = norm.columns["severity"]
            lag = max(0, (now_ticks - norm.updated_ticks) // 10_000_000)
            row: dict[str, Any] = {"PartitionKey": self._tenant, "RowKey": alert_key(norm.alert_id),
                                   **norm.columns, **alert.payload.columns, "storedAt": now, "feedKey": key,
                                   "lagSeconds": min(lag, 2**31 - 1)}
            if previous is None:
                row.update(firstSeenAt=now, maxSeverity=severity)
                operations.append(("create", row))
                if norm.created_ticks >= self._activated:
                    operations.append(("create", self._obligation(norm, ObligationReason.NEW.value, now)))
                    result.new_obligations += 1
            elif norm.updated_ticks > previous.ticks or (
                    norm.updated_ticks == previous.ticks and alert.payload.hash != previous.hash):
                rises = severity_rank(severity) > severity_rank(previous.max_severity)
                row.update(firstSeenAt=previous.first_seen or now,
                           maxSeverity=severity if rises else previous.max_severity)
                operations.append(update_if_unchanged(row, previous.etag, mode=UpdateMode.REPLACE))
                # Like `new`, no severity-rise e-mail for an alert created before the tenant became active
                # (the onboarding backfill boundary): its rise is part of the history, not news.
                if rises and norm.updated_ticks > previous.ticks and norm.created_ticks >= self._activated:
                    level = severity[0].upper() + severity[1:]
                    obligation = self._obligation(norm, severity_reason(level), now)
                    obligation["previousSeverity"] = previous.max_severity  # the e-mail says from what it rose
                    operations.append(("create", obligation))
                    result.severity_obligations += 1
            else:
                result.unchanged += 1
                continue
            result.stored += 1
            if norm.updated_ticks >= self._activated:
                result.lags.append(min(lag, 2**31 - 1))
            fed.append([alert_id_of_key(alert_key(norm.alert_id)), norm.updated_ticks])
        if fed:
            operations.append(("create", {"PartitionKey": self._tenant, "RowKey": key, "alerts": json.dumps(fed),
                                          "count": len(fed), "storedAt": now}))
            result.feed_keys.append(key)
        return operations, result

    def _submit(self, operations: list[Any]) -> None:
        """One transaction, retried on transient storage failures. A retry of a transaction that did commit
        fails on its own rows (they exist now, or their ETag moved) and the caller re-reads: never twice."""
        for attempt in range(_TRANSIENT_ATTEMPTS):
            try:
                self._table.submit_transaction(operations)
                return
            except TableTransactionError:
                raise
            except (ServiceRequestError, ServiceResponseError) as exc:
                error: Exception = exc
            except HttpResponseError as exc:
                if exc.status_code is None or exc.status_code < 500:
                    raise
                error = exc
            logger.warning("tenant %s: transaction failed (%s), attempt %d", self._tenant, type(error).__name__,
                           attempt + 1)
            # It may have committed without us hearing; its feed row is checked after the page.
            feed_row = operations[-1][1]
            if str(feed_row.get("RowKey", "")).startswith(FEED_PREFIX):
                self._uncertain_feed.append(feed_row["RowKey"])
            if attempt == _TRANSIENT_ATTEMPTS - 1:
                raise error
            time.sleep(0.2 * 2 ** attempt)

    def _obligation(self, norm: Normalised, reason: str, now: datetime) -> dict[str, Any]:
        return {"PartitionKey": self._tenant, "RowKey": obligation_key(norm.alert_id, reason),
                "alertId": norm.alert_id, "reason": reason, "severity": norm.columns["severity"],
                "createdAt": now, "state": ObligationState.PENDING.value, "attempts": 0}

    def _stored_versions(self, alert_ids: list[str]) -> dict[str, Stored]:
        """The stored version of each alert that has a row, with one query per 14 ids."""
        found: dict[str, Stored] = {}
        by_key = {alert_key(a): a for a in alert_ids}
        keys = list(by_key)
        for start in range(0, len(keys), _IDS_PER_QUERY):
            chunk = keys[start:start + _IDS_PER_QUERY]
            names = {f"k{i}": k for i, k in enumerate(chunk)}
            clause = " or ".join(f"RowKey eq @{name}" for name in names)
            # Spaces around the parentheses: the SDK finds @parameters by splitting the filter on spaces.
            rows = self._table.query_entities(f"PartitionKey eq @pk and ( {clause} )", select=_SELECT,
                                              parameters={"pk": self._tenant, **names})
            for row in rows:
                etag = row.metadata["etag"]
                if etag is None:  # the service sends every row's ETag; only entities built locally have none
                    raise ValueError(f"tenant {self._tenant}: an alert row was read without its ETag")
                found[by_key[row["RowKey"]]] = Stored(
                    ticks=int_value(row.get("lastUpdateTicks")) or 0, hash=str(row.get("payloadHash") or ""),
                    max_severity=str(row.get("maxSeverity") or ""), first_seen=row.get("firstSeenAt"),
                    etag=etag)
        return found


def _groups(alerts: list[Prepared], activated_ticks: int) -> list[list[Prepared]]:
    """Consecutive groups that should fit one transaction: one operation per alert, one more for a `new`
    obligation, one slot for the feed row; the writer halves a group whose operations turn out more."""
    groups: list[list[Prepared]] = []
    current: list[Prepared] = []
    operations = size = 0
    for alert in alerts:
        needed = 2 if alert.norm.created_ticks >= activated_ticks else 1
        if current and (operations + needed > MAX_OPERATIONS - 1 or size + alert.size > MAX_TRANSACTION_BYTES):
            groups.append(current)
            current, operations, size = [], 0, 0
        current.append(alert)
        operations += needed
        size += alert.size
    if current:
        groups.append(current)
    return groups
