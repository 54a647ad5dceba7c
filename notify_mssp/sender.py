"""Sending a chunk of a notification run's e-mails (the send activity's work) and marking them sent.

Each e-mail is claimed in the delivery log before anything else (notify_mssp.delivery), rendered from
the rows its spec names (notify_mssp.email), counted against the send rate cap (notify_mssp.ratecap) and
handed to the transport (notify_mssp.transports). Every e-mail gets its own answer, so one that fails
never fails the others; nothing here raises for a single e-mail.

Answers, for the batch orchestrator: `{"o": outcome, "dup": possible duplicate, "d": detail, "ra": retry
after seconds, "e": ETag of the claim}` with outcome `sent` (this attempt sent it; the run marks it),
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

from fetch_alerts.keys import alert_key
from notify_mssp.delivery import (
    Claim,
    ClaimResult,
    DeliveryKey,
    DeliveryLog,
    DeliveryState,
    alert_delivery_key,
    digest_delivery_key,
)
from notify_mssp.email import EmailMessage, render_alert_email, render_digest_email
from notify_mssp.obligations import TENANT_PARTITION
from notify_mssp.planner import read_alerts
from notify_mssp.rules import Rule, load_rules
from notify_mssp.transports import SendOutcome, Transport

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
    if spec["kind"] == "digest":
        return digest_delivery_key(run_id, spec["rule"], spec["to"])
    return alert_delivery_key(spec["tenant"], spec["alert"], spec["reason"], spec["rule"], spec["to"])


def _about(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "digest":
        return {"kind": "digest", "digestId": spec["id"], "ruleId": spec["rule"], "recipient": spec["to"],
                "items": int(spec["total"])}
    return {"kind": "alert", "tenantId": spec["tenant"], "alertId": spec["alert"], "reason": spec["reason"],
            "ruleId": spec["rule"], "recipient": spec["to"]}


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
            pairs = spec["items"] if spec["kind"] == "digest" else [[spec["tenant"], spec["alert"]]]
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
            items = []
            for tenant_id, alert_id in spec["items"]:
                alert = self.alert(tenant_id, alert_id)
                if alert is not None:  # aged out since planning: the digest lists the others
                    items.append((self.tenant(tenant_id), alert))
            if not items:
                raise RenderError("every alert of the digest is gone")
            return render_digest_email(items, rule, spec["to"], total=int(spec["total"]),
                                       message_id=key.message_token)
        alert = self.alert(spec["tenant"], spec["alert"])
        if alert is None:
            raise RenderError(f"alert {spec['alert']} no longer exists")
        return render_alert_email(alert, self.tenant(spec["tenant"]), rule, spec["to"], message_id=key.message_token)


def send_chunk(ctx: SendContext, *, run_id: str, token: str, messages: list[dict[str, Any]],
               now: datetime) -> list[dict[str, Any]]:
    """Claim, render and send each e-mail of the chunk; one answer per e-mail, in order."""
    answers: list[dict[str, Any] | None] = [None] * len(messages)
    owned: list[tuple[int, DeliveryKey, Claim]] = []
    try:
        keys = [delivery_key(spec, run_id) for spec in messages]
        claims = ctx.log.claim_many([(key, _about(spec)) for key, spec in zip(keys, messages, strict=True)],
                                    token, run_id, now)
    except Exception as exc:  # storage trouble: nothing was sent, try again later
        logger.warning("run %s: claiming e-mails failed: %s", run_id, exc)
        return [{"o": "transient", "d": f"delivery log unavailable ({type(exc).__name__})"} for _ in messages]
    for index, (key, claim) in enumerate(zip(keys, claims, strict=True)):
        if claim.may_send:
            owned.append((index, key, claim))
        else:
            answers[index] = {"o": _CLAIM_ANSWERS[claim.result], "dup": claim.possible_duplicate, "d": claim.detail}
    granted = _acquire(ctx, len(owned))
    ctx.prefetch([messages[index] for index, _, _ in owned[:granted]])
    for position, (index, key, claim) in enumerate(owned):
        spec, duplicate = messages[index], claim.possible_duplicate
        if position >= granted:
            _quietly(ctx.log.release, key, token, DeliveryState.DEFERRED, "over the send rate cap; next run")
            answers[index] = {"o": "carry", "dup": duplicate, "d": "over the send rate cap"}
            continue
        outcome = _send_one(ctx, spec, key)
        answers[index] = {"o": outcome.status, "dup": duplicate, "d": outcome.detail[:300]}
        if outcome.status == "sent":
            answers[index]["e"] = claim.etag  # the mark is conditional on the claim being unchanged
        elif outcome.status == "transient":
            answers[index]["ra"] = float(outcome.retry_after or 0)
            _quietly(ctx.log.release, key, token, DeliveryState.RETRY, outcome.detail)
        else:
            logger.error("run %s: e-mail %s/%s failed permanently: %s", run_id, key.partition, key.row,
                         outcome.detail[:300])
            _quietly(ctx.log.record_permanent, key, token, outcome.detail)
    return [answer or {"o": "transient", "d": "not attempted"} for answer in answers]


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
        return SendOutcome("permanent", f"not sendable: {exc}", None)
    except Exception as exc:  # a rendering bug must not stop the other e-mails; retried, then carried
        logger.exception("rendering e-mail %s/%s failed", key.partition, key.row)
        return SendOutcome("transient", f"rendering failed ({type(exc).__name__})", None)
    try:
        return ctx.transport.send(message)
    except Exception as exc:  # transports classify their errors; anything else is taken as transient
        logger.exception("transport failed on e-mail %s/%s", key.partition, key.row)
        return SendOutcome("transient", f"transport error ({type(exc).__name__})", None)


def _quietly(action: Any, *args: Any) -> None:
    """Record an outcome; if storage fails, the claim stays and a later run resolves it (and counts it)."""
    try:
        action(*args)
    except Exception as exc:
        logger.warning("delivery log update failed (%s); a later run will resolve the claim", exc)


def mark_sent(log: DeliveryLog, *, run_id: str, token: str, sent: list[list[Any]], now: datetime) -> int:
    """Mark the e-mails an attempt sent (`[spec, ETag of its claim]` pairs) as `sent`; the number marked."""
    return log.mark_sent_many([(delivery_key(spec, run_id), str(etag or "")) for spec, etag in sent], token, now)
