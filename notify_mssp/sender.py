"""Sending a chunk of a notification run's e-mails (the send activity's work) and marking them sent.

Each e-mail is claimed in the delivery log before anything else (notify_mssp.delivery), rendered from
the rows its spec names (notify_mssp.email), counted against the send rate cap (notify_mssp.ratecap) and
handed to the transport (notify_mssp.transports). Every e-mail gets its own answer, so one that fails
never fails the others; nothing here raises for a single e-mail.

Each e-mail is marked `sent` right after the transport took it, so a host killed mid-send leaves at most
the e-mails in flight claimed without `sent`. A digest spec lists its alerts as entries with the
fingerprints of the obligations each covers; before claiming, the digest leaves out obligations an earlier
sent digest to the same (rule, recipient) covered, and counts the overlap with an abandoned one
(docs/NOTIFICATIONS.md, "Digests and the delivery log").

The specs are notify_mssp.payloads' AlertMessage and DigestMessage (read with `read_message`, which
also takes the previous release's short keys); the answers, for the batch orchestrator, are its
SendAnswer: `outcome` `sent` (this attempt sent it; marked here, or by the run when `mark` is set),
`already_sent`, `skipped` (the skip policy, or skipped before), `permanent` (recorded, never retried),
`transient` (claim given back; retried after a durable timer) or `carry` (deferred by the rate cap, or
busy in another attempt: the next run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from notify_mssp.delivery import (
    Claim,
    ClaimResult,
    DeliveryKey,
    DeliveryLog,
    DeliveryState,
    EarlierDigest,
    alert_delivery_key,
    digest_about,
    digest_delivery_key,
    digest_partition,
)
from notify_mssp.email import (
    DigestEntry,
    EmailMessage,
    render_alert_email,
    render_digest_email,
    severity_rise,
)
from notify_mssp.payloads import SendAnswer, read_message, send_answer
from notify_mssp.planner import read_alerts
from notify_mssp.ratecap import settle_send
from notify_mssp.rules import Rule, load_rules
from notify_mssp.transports import SendOutcome, Transport
from shared.alerts import alert_key
from shared.tenants import TENANT_PARTITION

logger = logging.getLogger(__name__)

_CLAIM_ANSWERS = {
    ClaimResult.ALREADY_SENT: "already_sent",
    ClaimResult.ALREADY_FAILED: "permanent",
    ClaimResult.GAVE_UP: "permanent",
    ClaimResult.ALREADY_SKIPPED: "skipped",
    ClaimResult.SKIPPED_DUPLICATE: "skipped",
    ClaimResult.BUSY: "carry",
}


class RenderError(Exception):
    """What an e-mail is about no longer exists (a deleted rule or tenant): it can never be sent."""


def delivery_key(spec: dict[str, Any], run_id: str) -> DeliveryKey:
    """The row of a per-alert spec, or of a prepared digest spec (`prepare_digest`)."""
    if spec["kind"] == "digest":
        return digest_delivery_key(run_id, spec["rule"], spec["recipient"], spec["covered"])
    return alert_delivery_key(spec["tenant"], spec["alertId"], spec["reason"], spec["rule"], spec["recipient"])


@dataclass
class PreparedDigest:
    """A digest after what earlier digests covered is left out: the spec to claim and render (`items`,
    `total`, `covered`), the abandoned earlier claims it overlaps, or the answer when nothing is left."""

    spec: dict[str, Any] | None
    abandoned: list[EarlierDigest]
    answer: SendAnswer | None = None


def prepare_digest(ctx: SendContext, spec: dict[str, Any], now: datetime) -> PreparedDigest:
    """Leave out obligations that a `sent` (or policy-`skipped`) earlier digest to the same (rule,
    recipient) covered; with the skip policy also those an abandoned claim covered. What is left is listed
    (up to `maxItems` alerts) and counted (`total`), and every obligation of it is covered."""
    earlier = ctx.log.earlier_digests(digest_partition(spec["rule"], spec["recipient"]), now)
    resolved: set[str] = set()
    for digest in earlier:
        if digest.state in (DeliveryState.SENT, DeliveryState.SKIPPED):
            resolved |= digest.covered
    mine = {fp for entry in spec["entries"] for fp in entry["obligations"]}
    # Another run's digest that still holds a recent claim on some of these obligations may have gone out
    # already (its sender died between send and mark): sending now could repeat it uncounted. Wait until the
    # claim is abandoned, when the duplicate policy decides and the possible duplicate is counted.
    busy = [d for d in earlier if d.state == DeliveryState.CLAIMED and not ctx.log.is_abandoned(d, now)
            and d.covered & (mine - resolved)]
    if busy:
        return PreparedDigest(None, [], send_answer("carry", "another run's digest still claims some of these"))
    abandoned = [d for d in earlier if ctx.log.is_abandoned(d, now) and d.covered & (mine - resolved)]
    skipped = set()
    if abandoned and ctx.log.policy == "skip":
        skipped = set().union(*(d.covered for d in abandoned)) - resolved
    entries = []
    for entry in spec["entries"]:
        left = sorted(set(entry["obligations"]) - resolved - skipped)
        if left:
            entries.append({**entry, "obligations": left})
    if not entries:
        if skipped:  # everything left was an abandoned claim's: resolved by the skip policy, counted
            return PreparedDigest(None, abandoned, send_answer("skipped", "abandoned claim skipped", duplicate=True))
        return PreparedDigest(None, [], send_answer("already_sent", "covered by sent digests"))
    covered = [fp for entry in entries for fp in entry["obligations"]]
    listed = entries[:int(spec["maxItems"])]
    prepared = {"kind": "digest", "id": spec["id"], "rule": spec["rule"], "recipient": spec["recipient"],
                "covered": covered, "items": [[e["tenant"], e["alertId"]] for e in listed], "total": len(entries),
                # Beside `items`, in the same order: what each listed alert is about (new, or a rise from what).
                "rises": [{"reason": e.get("reason", "new"), "previousSeverity": e.get("previousSeverity", ""),
                           "riseSeenAt": e.get("riseSeenAt", "")} for e in listed]}
    return PreparedDigest(prepared, abandoned)


def _about(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "digest":
        return digest_about(spec["id"], spec["rule"], spec["recipient"], spec["covered"], spec["items"],
                            spec["total"])
    return {"kind": "alert", "tenantId": spec["tenant"], "alertId": spec["alertId"], "reason": spec["reason"],
            "ruleId": spec["rule"], "recipient": spec["recipient"]}


@dataclass
class SendContext:
    """What one send activity reads, shared across its e-mails."""

    alerts: TableClient
    tenants: TableClient
    rules_table: TableClient
    log: DeliveryLog
    transport: Transport
    acquire: Callable[[int], int]  # the rate cap: sends wanted -> sends granted now
    _rules: dict[str, Rule] | None = None
    _tenant_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _alert_rows: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)

    def rule(self, rule_id: str) -> Rule:
        if self._rules is None:
            self._rules = {rule.id: rule for rule in load_rules(self.rules_table)}
        rule = self._rules.get(rule_id)
        if rule is None:
            raise RenderError(f"rule {rule_id} no longer exists")
        return rule

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        if tenant_id not in self._tenant_rows:
            try:
                self._tenant_rows[tenant_id] = dict(self.tenants.get_entity(TENANT_PARTITION, tenant_id))
            except ResourceNotFoundError:
                raise RenderError(f"tenant {tenant_id} no longer exists") from None
        return self._tenant_rows[tenant_id]

    def prefetch(self, specs: list[dict[str, Any]]) -> None:
        """Read the alert rows the e-mails about to be sent need, a few per query instead of one each."""
        wanted: dict[str, set[str]] = {}
        for spec in specs:
            pairs = spec["items"] if spec["kind"] == "digest" else [[spec["tenant"], spec["alertId"]]]
            for tenant_id, alert_id in pairs:
                if (tenant_id, alert_id) not in self._alert_rows:
                    wanted.setdefault(tenant_id, set()).add(alert_id)
        for tenant_id, alert_ids in wanted.items():
            try:
                found = read_alerts(self.alerts, tenant_id, sorted(alert_ids))
            except Exception as exc:  # read one by one when rendering instead
                logger.warning("reading alerts of tenant %s failed (%s); reading them one by one", tenant_id, exc)
                continue
            for alert_id in alert_ids:
                self._alert_rows[(tenant_id, alert_id)] = found.get(alert_id)

    def alert(self, tenant_id: str, alert_id: str) -> dict[str, Any] | None:
        if (tenant_id, alert_id) not in self._alert_rows:
            try:
                self._alert_rows[(tenant_id, alert_id)] = dict(self.alerts.get_entity(tenant_id, alert_key(alert_id)))
            except ResourceNotFoundError:
                self._alert_rows[(tenant_id, alert_id)] = None
        return self._alert_rows[(tenant_id, alert_id)]

    def render(self, spec: dict[str, Any], key: DeliveryKey) -> EmailMessage:
        rule = self.rule(spec["rule"])
        if spec["kind"] == "digest":
            items: list[DigestEntry] = []
            rises = spec.get("rises") or []
            for index, (tenant_id, alert_id) in enumerate(spec["items"]):
                alert = self.alert(tenant_id, alert_id)
                if alert is not None:  # aged out since planning: the digest lists the others
                    rise = severity_rise(rises[index] if index < len(rises) else None)
                    items.append((self.tenant(tenant_id), alert, rise))
            if not items:
                raise RenderError("every alert of the digest is gone")
            return render_digest_email(items, rule, spec["recipient"], total=int(spec["total"]),
                                       message_id=key.message_token)
        alert = self.alert(spec["tenant"], spec["alertId"])
        if alert is None:
            raise RenderError(f"alert {spec['alertId']} no longer exists")
        return render_alert_email(alert, self.tenant(spec["tenant"]), rule, spec["recipient"],
                                  message_id=key.message_token,
                                  rise=severity_rise(spec))


def send_chunk(ctx: SendContext, *, run_id: str, token: str, messages: list[dict[str, Any]],
               now: datetime) -> list[SendAnswer]:
    """Claim, render, send and mark each e-mail of the chunk; one answer per e-mail, in order."""
    messages = [dict(read_message(spec)) for spec in messages]
    answers: list[SendAnswer | None] = [None] * len(messages)
    owned: list[tuple[int, DeliveryKey, Claim, bool]] = []  # and whether it may repeat an earlier e-mail
    specs: dict[int, dict[str, Any]] = {}
    abandoned: dict[int, list[EarlierDigest]] = {}
    try:
        for index, spec in enumerate(messages):
            if spec["kind"] != "digest":
                specs[index] = spec
                continue
            prepared = prepare_digest(ctx, spec, now)
            if prepared.answer is not None:
                answers[index] = prepared.answer
                for digest in prepared.abandoned:
                    _quietly(ctx.log.supersede, digest, f"the digest of run {run_id}")
            else:
                assert prepared.spec is not None
                specs[index], abandoned[index] = prepared.spec, prepared.abandoned
        keys = {index: delivery_key(spec, run_id) for index, spec in specs.items()}
        claims = ctx.log.claim_many([(keys[index], _about(specs[index])) for index in specs], token, run_id, now)
    except Exception as exc:  # storage trouble: nothing was sent, try again later
        logger.warning("run %s: claiming e-mails failed: %s", run_id, exc)
        return [send_answer("transient", f"delivery log unavailable ({type(exc).__name__})") for _ in messages]
    for index, claim in zip(specs, claims, strict=True):
        key = keys[index]
        if claim.may_send:
            # An abandoned earlier digest may have gone out before its sender died: this one may repeat it.
            superseded = [d for d in abandoned.get(index, []) if _quietly(ctx.log.supersede, d, specs[index]["id"])]
            owned.append((index, key, claim, claim.possible_duplicate or bool(superseded)))
        else:
            answers[index] = send_answer(_CLAIM_ANSWERS[claim.result], claim.detail,
                                         duplicate=claim.possible_duplicate)
    granted = _acquire(ctx, len(owned))
    ctx.prefetch([specs[index] for index, _, _, _ in owned[:granted]])
    for position, (index, key, claim, duplicate) in enumerate(owned):
        spec = specs[index]
        if position >= granted:
            _quietly(ctx.log.release, key, token, DeliveryState.DEFERRED, "over the send rate cap; next run")
            answers[index] = send_answer("carry", "over the send rate cap", duplicate=duplicate)
            continue
        outcome = _send_one(ctx, spec, key)
        if outcome.status == "transient" and outcome.submitted:
            # The message may have reached the server (the connection dropped after it went out, a timeout, a
            # 5xx): not known to be unsent, so it is not released for a retry. Its claim stays; once abandoned,
            # the duplicate policy decides and a resend is counted as a possible duplicate.
            logger.warning("run %s: e-mail %s/%s may have been delivered (%s); left to the duplicate policy",
                           run_id, key.partition, key.row, outcome.detail[:200])
            answers[index] = send_answer("carry", f"outcome unknown: {outcome.detail}"[:300], duplicate=duplicate)
            continue
        answer = answers[index] = send_answer(outcome.status, outcome.detail[:300], duplicate=duplicate)
        if outcome.status == "sent":
            # Marked at once; if the mark fails (storage), the run marks it (conditional on the claim).
            # The claim's ETag saves a read; a transaction's ETag may not match a single update's, so
            # the token-checked mark follows.
            if not (_quietly(ctx.log.mark_sent_claimed, key, claim.etag, now)
                    or _quietly(ctx.log.mark_sent, key, token, now)):
                answer["mark"] = {"partition": key.partition, "row": key.row, "etag": claim.etag}
        elif outcome.status == "transient":
            answer["retryAfterSeconds"] = float(outcome.retry_after or 0)
            _quietly(ctx.log.release, key, token, DeliveryState.RETRY, outcome.detail)
        else:
            logger.error("run %s: e-mail %s/%s failed permanently: %s", run_id, key.partition, key.row,
                         outcome.detail[:300])
            _quietly(ctx.log.record_permanent, key, token, outcome.detail)
    return [answer or send_answer("transient", "not attempted") for answer in answers]


def _acquire(ctx: SendContext, wanted: int) -> int:
    if wanted == 0:
        return 0
    try:
        return max(0, min(wanted, int(ctx.acquire(wanted))))
    except Exception as exc:  # the cap's table is unreachable: send nothing now rather than overrun it
        logger.warning("send rate cap unavailable (%s); deferring %d e-mails", exc, wanted)
        return 0


def _send_one(ctx: SendContext, spec: dict[str, Any], key: DeliveryKey) -> SendOutcome:
    try:
        message = ctx.render(spec, key)
    except RenderError as exc:
        settle_send(submitted=False)  # nothing reached the server: its rate-cap slot goes back
        return SendOutcome("permanent", f"not sendable: {exc}", None)
    except Exception as exc:  # a rendering bug must not stop the other e-mails; retried, then carried
        logger.exception("rendering e-mail %s/%s failed", key.partition, key.row)
        settle_send(submitted=False)
        return SendOutcome("transient", f"rendering failed ({type(exc).__name__})", None, submitted=False)
    try:
        return ctx.transport.send(message)
    except Exception as exc:  # transports classify their errors; anything else is taken as transient
        logger.exception("transport failed on e-mail %s/%s", key.partition, key.row)
        return SendOutcome("transient", f"transport error ({type(exc).__name__})", None)


def _quietly(action: Any, *args: Any) -> Any:
    """Record an outcome; if storage fails, the claim stays and a later run resolves it (and counts it)."""
    try:
        return action(*args)
    except Exception as exc:
        logger.warning("delivery log update failed (%s); a later run will resolve the claim", exc)
        return None


def mark_sent(log: DeliveryLog, *, token: str, sent: list[dict[str, Any]], now: datetime) -> int:
    """Mark e-mails the send activity could not mark itself (`{"partition", "row", "etag"}` of each claim)
    as `sent`; the number marked."""
    return log.mark_sent_many([(DeliveryKey(str(item["partition"]), str(item["row"])), str(item.get("etag") or ""))
                               for item in sent], token, now)
