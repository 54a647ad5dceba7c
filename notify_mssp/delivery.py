"""The delivery log: each (alert or digest, rule, recipient) is e-mailed once, or the exception is counted.

Durable activities run at least once (a redelivered task, an overlapping run, a host that died between the
send and the mark), so the send activity claims every e-mail with a conditional insert before sending it,
and the run marks it `sent` afterwards. A later attempt that finds the claim acts on its state:

- `sent`: delivered; `failed`: recorded as a permanent failure; `skipped`: an earlier claim without
  `sent` that the skip policy resolved. Nothing is sent again.
- `retry` (a transient failure) or `deferred` (over the rate cap): known not to be sent; taken over.
- `claimed`, recent: another attempt is sending it right now (a redelivered task, an overlapping run);
  left alone (`busy`), a later run looks again.
- `claimed`, older than NOTIFY_CLAIM_TIMEOUT: its sender died after claiming, sent or not is unknown.
  DUPLICATE_POLICY decides: `resend` takes it over and sends, `skip` records `skipped`; both count a
  possible duplicate on the row (`duplicates`) and log a warning.

Row layout (table `DeliveryLog`):
- per-alert e-mails: PartitionKey = tenant GUID, RowKey `<escaped alert id>|<obligation reason>|<rule id>|
  <escaped recipient>` (the reason is part of the identity: a severity rise re-notifies on purpose);
- digests: PartitionKey `digest|<rule id>|<escaped recipient>`, RowKey `<run id>|<coverage hash>`, the
  hash naming the set of obligations the digest covers: "already sent" on a digest row means that exact
  set was e-mailed, never a different one under a reused run id. A digest row also records what it covered
  (`coveredObligations`: 8-byte fingerprints, `coveredCount`, `total`, `listed`; docs/NOTIFICATIONS.md,
  "Digests and the delivery log"), so a later digest to the same (rule, recipient) leaves out what a sent
  one covered and counts the overlap with a claim whose sender died.
Columns: `state`, `claimToken`, `runId`, `claimedAt`, `sentAt`, `attempts` (sends tried), `transientRuns`
(runs that took the e-mail over after a transient failure), `duplicates` (claims found without `sent`),
`lastError`, `lastTransportError` (the last transient send failure, kept when the rate cap defers the
e-mail afterwards), `messageToken` (of the Message-ID), and what the e-mail was about (`kind`, `tenantId`,
`alertId`, `reason`, `ruleId`, `recipient`, `digestId`). Keys over the Table Storage limit become a SHA-256.
A per-alert key names exactly one obligation (ingestion writes one obligation per alert and reason, with
create semantics), so its "already sent" always resolves the obligation that e-mail was about.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.tables import (
    MAX_KEY_CHARS,
    MAX_TRANSACTION_OPERATIONS,
    escape_key_part,
    update_if_unchanged,
    write_if_unchanged,
)

logger = logging.getLogger(__name__)

DIGEST_PARTITION_PREFIX = "digest|"
FINGERPRINT_BYTES = 8  # per covered obligation; collisions are negligible at a digest's size
# Obligations one digest covers at most: their fingerprints fill one binary property (64 KiB limit) and
# keep the digest spec in orchestration history small. The rest wait for the next run.
MAX_DIGEST_COVERED = 8000
# How far back a digest looks for earlier digests to the same (rule, recipient) covering its obligations:
# a dead run's obligations are taken over within NOTIFY_CLAIM_TIMEOUT plus a tick or two.
DIGEST_LOOKBACK = timedelta(days=2)
_LISTED_MAX_CHARS = 30_000  # the `listed` column: a string property holds 32K UTF-16 characters


class DeliveryState(StrEnum):
    CLAIMED = "claimed"
    SENT = "sent"
    RETRY = "retry"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"


class ClaimResult(StrEnum):
    """What a claim attempt found; only the two `OWNED*` results may send."""

    OWNED = "owned"
    OWNED_AFTER_STALE = "owned_after_stale"  # resend policy took over a claim without `sent`: counted
    ALREADY_SENT = "already_sent"
    ALREADY_FAILED = "already_failed"
    ALREADY_SKIPPED = "already_skipped"
    SKIPPED_DUPLICATE = "skipped_duplicate"  # skip policy resolved a claim without `sent`: counted
    GAVE_UP = "gave_up"  # transient failures in too many runs: now recorded as a permanent failure
    BUSY = "busy"  # someone else holds a recent claim


@dataclass(frozen=True)
class DeliveryKey:
    partition: str
    row: str

    @property
    def message_token(self) -> str:
        """The left part of a stable Message-ID (notify_mssp.email.message_id_for): a resend carries the
        same one, so mail clients can fold the copies."""
        return hashlib.sha256(f"{self.partition}/{self.row}".encode()).hexdigest()[:40]


def _escape(value: str) -> str:
    # Recipients may hold `/`, `#` or `?` (valid in a local part), which Table Storage keys forbid.
    return escape_key_part(value, safe="@+")


def _bounded(key: str) -> str:
    # Escaping can triple a long address or alert id.
    return key if len(key) <= MAX_KEY_CHARS else "sha256|" + hashlib.sha256(key.encode()).hexdigest()


def alert_delivery_key(tenant_id: str, alert_id: str, reason: str, rule_id: str, recipient: str) -> DeliveryKey:
    row = f"{_escape(alert_id)}|{reason}|{rule_id}|{_escape(recipient.lower())}"
    return DeliveryKey(tenant_id, _bounded(row))


def digest_id(run_id: str, rule_id: str, recipient: str) -> str:
    """The digest id (docs/ARCHITECTURE.md, "Notifications")."""
    return f"{run_id}|{rule_id}|{recipient.lower()}"


def obligation_fingerprint(tenant_id: str, obligation_key: str) -> str:
    """16 hex characters naming one obligation in a digest's coverage (deterministic: used in orchestrator
    code)."""
    return hashlib.sha256(f"{tenant_id}|{obligation_key}".encode()).hexdigest()[:FINGERPRINT_BYTES * 2]


def digest_partition(rule_id: str, recipient: str) -> str:
    return _bounded(f"{DIGEST_PARTITION_PREFIX}{rule_id}|{_escape(recipient.lower())}")


def digest_delivery_key(run_id: str, rule_id: str, recipient: str, covered: list[str]) -> DeliveryKey:
    """The row of the digest of `run_id` to (rule, recipient) covering exactly the `covered` fingerprints."""
    coverage = hashlib.sha256("".join(sorted(covered)).encode()).hexdigest()[:16]
    return DeliveryKey(digest_partition(rule_id, recipient), _bounded(f"{run_id}|{coverage}"))


def pack_fingerprints(fingerprints: list[str]) -> bytes:
    return b"".join(bytes.fromhex(f) for f in sorted(fingerprints))


def unpack_fingerprints(packed: Any) -> set[str]:
    raw = bytes(getattr(packed, "value", packed) or b"")
    return {raw[i:i + FINGERPRINT_BYTES].hex() for i in range(0, len(raw), FINGERPRINT_BYTES)}


def digest_about(digest_id_value: str, rule_id: str, recipient: str, covered: list[str],
                 listed: list[list[str]], total: int) -> dict[str, Any]:
    """The columns recording what a digest covered: every obligation of every alert it counted, listed or
    in its "and N more" (docs/NOTIFICATIONS.md)."""
    listed_text = json.dumps(listed, separators=(",", ":"))
    if len(listed_text) > _LISTED_MAX_CHARS:  # a very large NOTIFY_DIGEST_MAX_ITEMS: keep what fits
        listed_text = listed_text[:_LISTED_MAX_CHARS]
    return {"kind": "digest", "digestId": digest_id_value, "ruleId": rule_id, "recipient": recipient,
            "items": int(total), "total": int(total), "listedCount": len(listed), "listed": listed_text,
            "coveredCount": len(covered), "coveredObligations": pack_fingerprints(covered)}


@dataclass(frozen=True)
class EarlierDigest:
    """An earlier digest row to the same (rule, recipient) and what it covered."""

    row: Any
    covered: set[str]

    @property
    def state(self) -> str:
        return str(self.row.get("state", ""))


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    detail: str = ""
    etag: str = ""  # of the row as this claim left it: marking `sent` is conditional on it

    @property
    def may_send(self) -> bool:
        return self.result in (ClaimResult.OWNED, ClaimResult.OWNED_AFTER_STALE)

    @property
    def possible_duplicate(self) -> bool:
        return self.result in (ClaimResult.OWNED_AFTER_STALE, ClaimResult.SKIPPED_DUPLICATE)


class DeliveryLog:
    """Claims, marks and records e-mails in the DeliveryLog table."""

    def __init__(self, table: TableClient, *, policy: str, stale_after: timedelta, give_up_after_runs: int) -> None:
        if policy not in ("resend", "skip"):
            raise ValueError(f"unknown duplicate policy {policy!r}")
        self._table = table
        self._policy = policy
        self._stale_after = stale_after
        self._give_up_after_runs = give_up_after_runs

    def claim(self, key: DeliveryKey, token: str, run_id: str, now: datetime,
              about: dict[str, Any] | None = None) -> Claim:
        """Claim one e-mail for the attempt identified by `token` (conditional insert, then ETag updates)."""
        try:
            created = self._table.create_entity(self._new_row(key, token, run_id, now, about))
            return Claim(ClaimResult.OWNED, etag=str(created.get("etag", "")))
        except ResourceExistsError:
            pass
        try:
            row = self._table.get_entity(key.partition, key.row)
        except ResourceNotFoundError:  # deleted in between (retention): nobody holds it any more
            return self.claim(key, token, run_id, now, about)
        return self._resolve_existing(key, row, token, run_id, now)

    def claim_many(self, items: list[tuple[DeliveryKey, dict[str, Any]]], token: str, run_id: str,
                   now: datetime) -> list[Claim]:
        """`claim` for several e-mails: one transaction of inserts per partition when none exists yet (the
        common case), else one claim at a time. Results in the order of `items`."""
        claims: list[Claim | None] = [None] * len(items)
        by_partition: dict[str, list[int]] = {}
        for index, (key, _) in enumerate(items):
            by_partition.setdefault(key.partition, []).append(index)
        for indexes in by_partition.values():
            for start in range(0, len(indexes), MAX_TRANSACTION_OPERATIONS):
                group = indexes[start:start + MAX_TRANSACTION_OPERATIONS]
                if len(group) > 1 and len({items[i][0].row for i in group}) == len(group):
                    operations = [("create", self._new_row(items[i][0], token, run_id, now, items[i][1]))
                                  for i in group]
                    try:
                        results = self._table.submit_transaction(operations)
                    except TableTransactionError:
                        pass  # one of them exists: resolve each on its own
                    else:
                        for i, result in zip(group, results, strict=True):
                            claims[i] = Claim(ClaimResult.OWNED, etag=str(result.get("etag", "")))
                        continue
                for i in group:
                    claims[i] = self.claim(items[i][0], token, run_id, now, items[i][1])
        return [claim for claim in claims if claim is not None]

    @staticmethod
    def _new_row(key: DeliveryKey, token: str, run_id: str, now: datetime,
                 about: dict[str, Any] | None) -> dict[str, Any]:
        return {"PartitionKey": key.partition, "RowKey": key.row, "state": DeliveryState.CLAIMED.value,
                "claimToken": token, "runId": run_id, "claimedAt": now, "attempts": 1, "transientRuns": 0,
                "duplicates": 0, "lastError": "", "messageToken": key.message_token, **(about or {})}

    def _resolve_existing(self, key: DeliveryKey, row: Any, token: str, run_id: str, now: datetime) -> Claim:
        state = row.get("state")
        if state == DeliveryState.SENT:
            return Claim(ClaimResult.ALREADY_SENT)
        if state == DeliveryState.FAILED:
            return Claim(ClaimResult.ALREADY_FAILED, str(row.get("lastError", "")))
        if state == DeliveryState.SKIPPED:
            return Claim(ClaimResult.ALREADY_SKIPPED)
        changes: dict[str, Any] = {"state": DeliveryState.CLAIMED.value, "claimToken": token, "runId": run_id,
                                   "claimedAt": now, "attempts": int(row.get("attempts", 0)) + 1}
        if state in (DeliveryState.RETRY, DeliveryState.DEFERRED):
            # Known not to be sent: take it over. A new run picking up a transient failure counts a run.
            transient_runs = int(row.get("transientRuns", 0))
            if state == DeliveryState.RETRY and row.get("runId") != run_id:
                transient_runs += 1
                if transient_runs >= self._give_up_after_runs:
                    detail = f"gave up after transient failures in {transient_runs} runs: {row.get('lastError', '')}"
                    if self._update(row, {"state": DeliveryState.FAILED.value, "lastError": detail[:1000],
                                          "transientRuns": transient_runs}):
                        logger.error("delivery %s/%s: %s", key.partition, key.row, detail[:300])
                        return Claim(ClaimResult.GAVE_UP, detail)
                    return Claim(ClaimResult.BUSY)
            changes["transientRuns"] = transient_runs
            etag = self._update(row, changes)
            return Claim(ClaimResult.OWNED, etag=etag) if etag else Claim(ClaimResult.BUSY)
        # A claim without `sent`. Recent: someone is sending it now (a redelivered task, an overlapping run).
        claimed_at = row.get("claimedAt")
        if isinstance(claimed_at, datetime) and now - claimed_at < self._stale_after:
            return Claim(ClaimResult.BUSY)
        duplicates = int(row.get("duplicates", 0)) + 1
        if self._policy == "skip":
            skipped = {"state": DeliveryState.SKIPPED.value, "duplicates": duplicates, "runId": run_id,
                       "lastError": "claimed without 'sent' by an attempt that did not finish; skipped by policy"}
            if not self._update(row, skipped):
                return Claim(ClaimResult.BUSY)
            logger.warning("delivery %s/%s: claim by %s has no 'sent' mark; skipped by DUPLICATE_POLICY=skip "
                           "(counted as a possible duplicate)", key.partition, key.row, row.get("runId"))
            return Claim(ClaimResult.SKIPPED_DUPLICATE)
        changes["duplicates"] = duplicates
        etag = self._update(row, changes)
        if not etag:
            return Claim(ClaimResult.BUSY)
        logger.warning("delivery %s/%s: claim by %s has no 'sent' mark; sending again by DUPLICATE_POLICY=resend "
                       "(counted as a possible duplicate)", key.partition, key.row, row.get("runId"))
        return Claim(ClaimResult.OWNED_AFTER_STALE, etag=etag)

    def _update(self, row: Any, changes: dict[str, Any]) -> str:
        """Merge `changes` into the row if nobody changed it since it was read; the new ETag, "" if not."""
        return write_if_unchanged(self._table, {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                                **changes}, row.metadata["etag"], mode=UpdateMode.MERGE) or ""

    def _update_own(self, key: DeliveryKey, token: str, changes: dict[str, Any]) -> bool:
        """Apply `changes` only while the claim is still ours (same token, still `claimed`)."""
        try:
            row = self._table.get_entity(key.partition, key.row)
        except ResourceNotFoundError:
            return False
        if row.get("claimToken") != token or row.get("state") != DeliveryState.CLAIMED:
            return False
        return bool(self._update(row, changes))

    def mark_sent(self, key: DeliveryKey, token: str, now: datetime) -> bool:
        marked = self._update_own(key, token, {"state": DeliveryState.SENT.value, "sentAt": now, "lastError": ""})
        if not marked:
            logger.info("delivery %s/%s: not marked sent by %s (the claim moved on)", key.partition, key.row, token)
        return marked

    def mark_sent_many(self, items: list[tuple[DeliveryKey, str]], token: str, now: datetime) -> int:
        """`mark_sent` for (key, ETag of the claim) pairs: one conditional transaction per partition; when
        a row changed since the claim, each is checked on its own. The number marked."""
        marked = 0
        by_partition: dict[str, list[tuple[DeliveryKey, str]]] = {}
        for key, etag in items:
            by_partition.setdefault(key.partition, []).append((key, etag))
        for group in by_partition.values():
            for start in range(0, len(group), MAX_TRANSACTION_OPERATIONS):
                part = group[start:start + MAX_TRANSACTION_OPERATIONS]
                if all(etag for _, etag in part) and len({k.row for k, _ in part}) == len(part):
                    operations = [update_if_unchanged({"PartitionKey": k.partition, "RowKey": k.row,
                                                       "state": DeliveryState.SENT.value, "sentAt": now,
                                                       "lastError": ""}, etag) for k, etag in part]
                    try:
                        self._table.submit_transaction(operations)
                    except TableTransactionError:
                        pass  # one changed since the claim: check each on its own
                    else:
                        marked += len(part)
                        continue
                marked += sum(1 for k, _ in part if self.mark_sent(k, token, now))
        return marked

    def mark_sent_claimed(self, key: DeliveryKey, etag: str, now: datetime) -> bool:
        """Mark one e-mail `sent` right after it went out, conditional on the claim's ETag (no read): the
        sender marks each e-mail itself, so a crash leaves at most the one in flight unmarked."""
        if not etag:
            return False
        return write_if_unchanged(self._table, {"PartitionKey": key.partition, "RowKey": key.row,
                                                "state": DeliveryState.SENT.value, "sentAt": now, "lastError": ""},
                                  etag, mode=UpdateMode.MERGE) is not None

    def earlier_digests(self, partition: str, now: datetime) -> list[EarlierDigest]:
        """The digest rows to one (rule, recipient) claimed within DIGEST_LOOKBACK, with their coverage."""
        rows = self._table.query_entities("PartitionKey eq @p and claimedAt ge @since",
                                          parameters={"p": partition, "since": now - DIGEST_LOOKBACK})
        return [EarlierDigest(row, unpack_fingerprints(row.get("coveredObligations"))) for row in rows]

    def is_abandoned(self, earlier: EarlierDigest, now: datetime) -> bool:
        """A claim without `sent` whose sender died: older than NOTIFY_CLAIM_TIMEOUT."""
        claimed_at = earlier.row.get("claimedAt")
        return (earlier.state == DeliveryState.CLAIMED and isinstance(claimed_at, datetime)
                and now - claimed_at >= self._stale_after)

    @property
    def policy(self) -> str:
        return self._policy

    def supersede(self, earlier: EarlierDigest, by: str) -> bool:
        """Resolve an abandoned digest claim that a later digest covers again, counting one possible
        duplicate on it (its e-mail may have gone out before its sender died): with the resend policy its
        obligations go out again in `by`, with the skip policy they are left out of it. ETag-conditional,
        so two runs never count it twice."""
        action = f"went out again in {by}" if self._policy == "resend" else f"were left out of {by} by policy"
        detail = (f"claimed without 'sent' by a sender that did not finish; its obligations {action} "
                  "(counted as a possible duplicate)")
        updated = self._update(earlier.row, {"state": DeliveryState.SKIPPED.value, "lastError": detail[:1000],
                                             "duplicates": int(earlier.row.get("duplicates", 0)) + 1})
        if updated:
            logger.warning("delivery %s/%s: %s", earlier.row["PartitionKey"], earlier.row["RowKey"], detail)
        return bool(updated)

    def release(self, key: DeliveryKey, token: str, state: DeliveryState, detail: str) -> bool:
        """Give the claim back after a transient failure (`retry`) or the rate cap (`deferred`)."""
        changes = {"state": state.value, "lastError": detail[:1000]}
        if state == DeliveryState.RETRY:  # kept apart: a later `deferred` by the cap overwrites lastError only
            changes["lastTransportError"] = detail[:1000]
        return self._update_own(key, token, changes)

    def record_permanent(self, key: DeliveryKey, token: str, detail: str) -> bool:
        return self._update_own(key, token, {"state": DeliveryState.FAILED.value, "lastError": detail[:1000]})

