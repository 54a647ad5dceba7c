"""The payloads of the notification run that pass through Durable history, as named types.

Everything an orchestrator hands to an activity or a sub-orchestration, and everything they answer, is
serialised to JSON by the Durable extension and replayed from that JSON. These TypedDicts are plain
dicts at run time, so they round-trip through Durable's JSON unchanged; their keys are the full names
the orchestrators, the planner (notify_mssp.planner) and the send activity (notify_mssp.sender) read.

Reading what history holds (`read_*`): an orchestration started before a deploy replays on the new code
with the payloads the old code wrote, which used short keys (`o`, `dup`, `d`, `ra`; `obl`, `to`, `rank`,
`at`, `alert`, `prev`, `seen`). For one release every reader also accepts those spellings, so an
orchestration in flight at deploy time replays to the same decisions and finishes
(docs/NOTIFICATIONS.md, "Durable payloads across a deploy"). Remove `_LEGACY_*` in the release after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict


class AlertMessage(TypedDict):
    """One per-alert e-mail a run owes: (alert, obligation reason, rule, recipient). Names things by id;
    the send activity reads the alert, tenant and rule again when it renders."""

    kind: Literal["alert"]
    tenant: str
    alertId: str
    reason: str  # the obligation's reason: `new` or `severity-<Level>`
    obligationKey: str  # the obligation's RowKey in the tenant's Alerts partition
    rule: str  # rule id
    recipient: str
    previousSeverity: str  # severity rises: the level risen from ("" when unknown, or for a new alert)
    riseSeenAt: str  # severity rises: when the rising version was stored, ISO 8601 ("" otherwise)


class DigestItem(TypedDict):
    """One alert a digest rule selected for one recipient; the run merges them across tenants into one
    digest per (rule, recipient), ordered by `severityRank` then `createdAt`."""

    rule: str
    recipient: str
    tenant: str
    alertId: str
    obligationKey: str
    severityRank: int  # 0 high, 1 medium, 2 low, 3 informational, 4 unknown
    createdAt: str  # the alert's createdDateTime
    reason: str
    previousSeverity: str
    riseSeenAt: str


class DigestListing(TypedDict):
    """One alert of a digest message, with the fingerprints of the obligations the digest covers for it
    (notify_mssp.delivery.obligation_fingerprint)."""

    tenant: str
    alertId: str
    obligations: list[str]
    reason: str
    previousSeverity: str
    riseSeenAt: str


class DigestMessage(TypedDict):
    """One digest e-mail: the digest id `<run id>|<rule id>|<recipient>` and its alerts; the send
    activity lists the first `maxItems` and counts them all."""

    kind: Literal["digest"]
    id: str
    rule: str
    recipient: str
    entries: list[DigestListing]
    maxItems: int


Message = AlertMessage | DigestMessage


class UnmarkedSend(TypedDict):
    """A claim the send activity sent but could not mark `sent` (storage): the run marks it."""

    partition: str
    row: str
    etag: str


class SendAnswer(TypedDict):
    """The send activity's answer for one e-mail.

    `outcome`: `sent` (this attempt sent it; marked, or by the run when `mark` is set), `already_sent`,
    `skipped` (the skip policy, or skipped before), `permanent` (recorded, never retried), `transient`
    (claim given back; retried after a durable timer) or `carry` (deferred by the rate cap, or busy in
    another attempt: the next run). `duplicate`: this e-mail may repeat one a dead sender sent.
    """

    outcome: str
    duplicate: NotRequired[bool]
    detail: str
    retryAfterSeconds: NotRequired[float]  # transient: the server's Retry-After, 0 when it gave none
    mark: NotRequired[UnmarkedSend]


class RunConfig(TypedDict):
    """The settings the orchestrators need, read by an activity (orchestrator code must not read them)."""

    batchSize: int
    maxAttempts: int
    backoffSeconds: float
    digestMaxItems: int


class BatchJob(TypedDict):
    """The input of one send-batch sub-orchestration."""

    runId: str
    config: RunConfig
    messages: list[Message]


class BatchResult(TypedDict):
    """A send batch's answer: the final outcome of each of its messages, in order, and how many may be
    duplicates."""

    outcomes: list[str]
    duplicates: int


class GroupPlan(TypedDict):
    """What a tenant group returns to the run for one tenant."""

    tenant: str
    error: str  # planning failed: the tenant waits for the next run
    obligations: list[str]
    unresolved: list[str]  # obligations with an e-mail still owed: back to `pending`
    digest: list[DigestItem]


class GroupResult(TypedDict):
    plans: list[GroupPlan]
    counts: dict[str, int]


def send_answer(outcome: str, detail: str, *, duplicate: bool = False) -> SendAnswer:
    return {"outcome": outcome, "duplicate": duplicate, "detail": detail}


# One release: the short keys orchestrations started before the named payloads wrote.
_LEGACY_ANSWER = {"o": "outcome", "dup": "duplicate", "d": "detail", "ra": "retryAfterSeconds"}
_LEGACY_ITEM = {"to": "recipient", "alert": "alertId", "obl": "obligationKey", "rank": "severityRank",
                "at": "createdAt", "prev": "previousSeverity", "seen": "riseSeenAt"}


def _renamed(raw: Mapping[str, Any], legacy: Mapping[str, str]) -> dict[str, Any]:
    """`raw` with its legacy keys under their full names; a full name present wins."""
    named = {legacy[key]: value for key, value in raw.items() if key in legacy}
    named.update((key, value) for key, value in raw.items() if key not in legacy)
    return named


def read_send_answer(raw: Mapping[str, Any]) -> SendAnswer:
    return _renamed(raw, _LEGACY_ANSWER)  # type: ignore[return-value]


def read_digest_item(raw: Mapping[str, Any]) -> DigestItem:
    return _renamed(raw, _LEGACY_ITEM)  # type: ignore[return-value]


def read_message(raw: Mapping[str, Any]) -> Message:
    """A message spec from a batch's input: per-alert or digest (whose entries are read too)."""
    message = _renamed(raw, _LEGACY_ITEM)
    if message.get("kind") == "digest":
        message["entries"] = [_renamed(entry, _LEGACY_ITEM) for entry in message.get("entries") or []]
    return message  # type: ignore[return-value]
