"""The notification run's orchestrators: the run (`notify_mssp`), a group of tenants
(`notify_tenant_group`) and one batch of sends (`send_notification_batch`).

Orchestrator code is replayed from history, so everything here is deterministic: no I/O, no clock but
`context.current_utc_datetime`, no randomness, and settings come from an activity. What the run does:

1. finds the tenants whose pending marker is set, and the run's settings (activities, in parallel);
2. hands tenants in groups of ten to sub-orchestrations, each of which plans its tenants in one activity
   (claims obligations, applies rules; a tenant whose planning fails is left for the next run and never
   fails the others) and sends their per-alert e-mails at once, so sending overlaps planning;
3. merges the digest items of all tenants into one digest per (rule, recipient), ordered by severity,
   time, tenant and alert id, with the digest id `<run id>|<rule id>|<recipient>`, each naming the
   obligations it covers (docs/NOTIFICATIONS.md), and sends them;
4. sends always in sub-orchestrations of NOTIFY_BATCH_SIZE e-mails, so no history grows with the number
   of e-mails; a batch sends in chunks (activities) that mark each e-mail as it goes, and retries transient failures
   after a durable timer with exponential backoff (Python's RetryOptions has none), up to
   NOTIFY_SEND_MAX_ATTEMPTS; what still fails, and what the rate cap deferred, carries over;
5. completes each tenant: obligations whose e-mails are all resolved become `done`, the others go back to
   `pending` for the next run, and the marker is cleared only when nothing is left undone.

Message specs name things by id only (notify_mssp.planner) and never pass through the run's own history:
the groups return obligations, the unresolved ones and digest items. Every payload that passes through
history is a named type of notify_mssp.payloads, read with its `read_*` functions where history may
still hold a payload the previous release wrote (docs/NOTIFICATIONS.md).

Activities catch their own errors and answer with a status, because `task_all` fails as soon as one task
fails and would take the whole run with it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from notify_mssp.delivery import MAX_DIGEST_COVERED, digest_id, obligation_fingerprint
from notify_mssp.payloads import (
    BatchJob,
    BatchResult,
    DigestItem,
    DigestListing,
    DigestMessage,
    GroupPlan,
    GroupResult,
    Message,
    RunConfig,
    SendAnswer,
    UnmarkedSend,
    read_digest_item,
    read_message,
    read_send_answer,
)
from shared.names import (
    COMPLETE_TENANT_ACTIVITY,
    LIST_PENDING_TENANTS_ACTIVITY,
    MARK_SENT_ACTIVITY,
    NOTIFY_RUN_CONFIG_ACTIVITY,
    PLAN_TENANT_ACTIVITY,
    SEND_BATCH_ORCHESTRATOR,
    SEND_EMAILS_ACTIVITY,
    TENANT_GROUP_ORCHESTRATOR,
)

logger = logging.getLogger(__name__)

SEND_CHUNK = 20  # e-mails per send activity: small enough to isolate, large enough to keep history short
TENANTS_PER_ACTIVITY = 10  # tenants planned (in one group) or completed by one activity invocation
MAX_BACKOFF_S = 300.0

# Final outcomes of one e-mail in a run. Everything but CARRY resolves its obligations.
SENT, ALREADY_SENT, SKIPPED, PERMANENT, CARRY = "sent", "already_sent", "skipped", "permanent", "carry"
RESOLVED = frozenset({SENT, ALREADY_SENT, SKIPPED, PERMANENT})

Orchestration = Generator[Any, Any, dict[str, Any]]


def merge_digests(run_id: str, plans: Iterable[GroupPlan], max_items: int
                  ) -> tuple[list[tuple[DigestMessage, list[tuple[str, str]]]], set[tuple[str, str]]]:
    """One digest message per (rule, recipient) across all tenants, with the obligations it covers; and
    the obligations left for the next run because a digest covers at most MAX_DIGEST_COVERED.

    Deterministic for the same plans: groups are taken in (rule id, recipient) order and items in
    (severity rank, created time, tenant, alert id) order; an alert listed twice for one recipient (a new
    and a severity obligation in the same run) is one entry covering both obligations. The message names
    each entry's obligations by fingerprint, so the delivery log records what the digest covered; the
    send activity lists the first `maxItems` entries and counts them all.
    """
    groups: dict[tuple[str, str], list[DigestItem]] = {}
    for plan in plans:
        for item in map(read_digest_item, plan.get("digest") or []):
            groups.setdefault((item["rule"], item["recipient"].lower()), []).append(item)
    digests = []
    left_over: set[tuple[str, str]] = set()
    for (rule_id, recipient), items in sorted(groups.items()):
        ordered = sorted(items, key=lambda i: (i["severityRank"], i["createdAt"], i["tenant"], i["alertId"],
                                               i["obligationKey"]))
        entries: dict[tuple[str, str], DigestListing] = {}
        covered: set[tuple[str, str]] = set()
        for item in ordered:
            obligation = (item["tenant"], item["obligationKey"])
            if obligation in covered:
                continue
            if len(covered) >= MAX_DIGEST_COVERED:
                left_over.add(obligation)
                continue
            covered.add(obligation)
            # Items come `new` before `severity-...` (obligation keys sort so): an alert new in this run is
            # listed as new, one only raised in severity as a rise.
            entry = entries.setdefault((item["tenant"], item["alertId"]), DigestListing(
                tenant=item["tenant"], alertId=item["alertId"], obligations=[], reason=item.get("reason", "new"),
                previousSeverity=item.get("previousSeverity", ""), riseSeenAt=item.get("riseSeenAt", "")))
            entry["obligations"].append(obligation_fingerprint(item["tenant"], item["obligationKey"]))
        message = DigestMessage(kind="digest", id=digest_id(run_id, rule_id, recipient), rule=rule_id,
                                recipient=ordered[0]["recipient"], entries=list(entries.values()),
                                maxItems=int(max_items))
        digests.append((message, sorted(covered)))
    return digests, left_over - {o for _, covered in digests for o in covered}


def backoff_seconds(attempt: int, base: float, retry_after: float) -> float:
    """Wait before attempt `attempt + 1`: base doubling per attempt, a longer Retry-After wins, capped."""
    return min(MAX_BACKOFF_S, max(base * (2 ** (attempt - 1)), retry_after))


_OUTCOME_COUNTERS = {SENT: "sent", ALREADY_SENT: "alreadySent", SKIPPED: "skipped",
                     PERMANENT: "permanentFailures", CARRY: "carriedOver"}


def _empty_counts() -> dict[str, int]:
    return {"emails": 0, "duplicates": 0, **{counter: 0 for counter in _OUTCOME_COUNTERS.values()}}


def _send_all(context: df.DurableOrchestrationContext, run_id: str, config: RunConfig,
              messages: list[Message], counts: dict[str, int]) -> Generator[Any, Any, list[str]]:
    """Send `messages` in sub-orchestrations of NOTIFY_BATCH_SIZE; the final outcome of each, counted."""
    outcomes: list[str] = [CARRY] * len(messages)
    if messages:
        size = int(config["batchSize"])
        starts = list(range(0, len(messages), size))
        try:
            results: list[BatchResult] = yield context.task_all([
                context.call_sub_orchestrator(SEND_BATCH_ORCHESTRATOR, BatchJob(
                    runId=run_id, config=config, messages=messages[start:start + size]))
                for start in starts
            ])
        except Exception as exc:  # a failed batch: its obligations go back to pending, nothing is lost
            if not context.is_replaying:
                logger.error("run %s: a send batch failed (%s); its e-mails carry over", run_id, exc)
            results = []
        for start, result in zip(starts, results, strict=False):
            outcomes[start:start + len(result["outcomes"])] = result["outcomes"]
            counts["duplicates"] += int(result["duplicates"])
    counts["emails"] += len(messages)
    for outcome in outcomes:
        counts[_OUTCOME_COUNTERS[outcome]] += 1
    return outcomes


def notify_run(context: df.DurableOrchestrationContext) -> Orchestration:
    """The notification run of one timer tick; its input is the run id only."""
    run_id = context.get_input(expected_type=str)
    tenants, config = yield context.task_all([
        context.call_activity(LIST_PENDING_TENANTS_ACTIVITY, run_id),
        context.call_activity(NOTIFY_RUN_CONFIG_ACTIVITY, run_id),
    ])
    summary: dict[str, Any] = {"runId": run_id, "tenantsPending": len(tenants), "tenantsPlanned": 0,
                               "planErrors": [], "obligations": 0, **_empty_counts(),
                               "obligationsDone": 0, "obligationsReleased": 0, "markersCleared": 0}
    if not tenants:
        return summary

    # Each group of tenants plans and sends its per-alert e-mails on its own, so sending starts while
    # other groups still plan; what comes back is small: obligations, the unresolved ones, digest items.
    groups = [tenants[i:i + TENANTS_PER_ACTIVITY] for i in range(0, len(tenants), TENANTS_PER_ACTIVITY)]
    try:
        group_results: list[GroupResult] = yield context.task_all([
            context.call_sub_orchestrator(TENANT_GROUP_ORCHESTRATOR, {"runId": run_id, "config": config,
                                                                      "tenantIds": group})
            for group in groups
        ])
    except Exception as exc:  # never expected (the group code catches); the claims expire for a later run
        if not context.is_replaying:
            logger.error("run %s: a tenant group failed (%s); its tenants wait for a later run", run_id, exc)
        group_results = []
    plans = [plan for result in group_results for plan in result["plans"]]
    for result in group_results:
        for counter, value in result["counts"].items():
            summary[counter] += value
    planned = [plan for plan in plans if not plan.get("error")]
    summary["planErrors"] = [plan["tenant"] for plan in plans if plan.get("error")]
    summary["tenantsPlanned"] = len(planned)
    summary["obligations"] = sum(len(plan["obligations"]) for plan in planned)

    # Digests merge every tenant's items, so they go out once all groups are planned.
    unresolved = {(plan["tenant"], obl) for plan in planned for obl in plan["unresolved"]}
    digests, left_over = merge_digests(run_id, planned, int(config["digestMaxItems"]))
    unresolved |= left_over  # over a digest's coverage limit: pending for the next run, never done unsent
    outcomes = yield from _send_all(context, run_id, config, [message for message, _ in digests], summary)
    for outcome, (_, obligations) in zip(outcomes, digests, strict=True):
        if outcome not in RESOLVED:
            unresolved.update(obligations)

    # An obligation is done when every e-mail it owes is resolved; one carried e-mail keeps it pending.
    jobs = []
    for plan in planned:
        tenant = plan["tenant"]
        jobs.append({"tenantId": tenant,
                     "done": [obl for obl in plan["obligations"] if (tenant, obl) not in unresolved],
                     "released": [obl for obl in plan["obligations"] if (tenant, obl) in unresolved]})
    if jobs:
        completed = yield context.task_all([
            context.call_activity(COMPLETE_TENANT_ACTIVITY, {"runId": run_id,
                                                             "tenants": jobs[i:i + TENANTS_PER_ACTIVITY]})
            for i in range(0, len(jobs), TENANTS_PER_ACTIVITY)
        ])
        for result in (result for group in completed for result in group):
            summary["obligationsDone"] += int(result.get("done", 0))
            summary["obligationsReleased"] += int(result.get("released", 0))
            summary["markersCleared"] += 1 if result.get("markerCleared") else 0
    if not context.is_replaying:
        logger.info("notification run %s finished: %s", run_id, summary)
    return summary


def tenant_group(context: df.DurableOrchestrationContext) -> Orchestration:
    """Plan a few tenants (one activity) and send their per-alert e-mails; digest items go back to the run."""
    job = context.get_input(expected_type=dict)
    run_id, config = job["runId"], job["config"]
    try:
        plans = yield context.call_activity(PLAN_TENANT_ACTIVITY, {"runId": run_id, "tenantIds": job["tenantIds"]})
    except Exception as exc:  # the activity answers per tenant; this is the host failing it (a timeout)
        if not context.is_replaying:
            logger.error("run %s: planning %s failed: %s", run_id, job["tenantIds"], exc)
        plans = [{"tenant": tenant, "error": "planning failed", "obligations": [], "messages": [], "digest": []}
                 for tenant in job["tenantIds"]]
    messages = [read_message(message) for plan in plans if not plan.get("error") for message in plan["messages"]]
    counts = _empty_counts()
    outcomes = yield from _send_all(context, run_id, config, messages, counts)
    unresolved = {(m["tenant"], m["obligationKey"]) for m, outcome in zip(messages, outcomes, strict=True)
                  if m["kind"] == "alert" and outcome not in RESOLVED}
    return {
        "plans": [{"tenant": plan["tenant"], "error": plan.get("error", ""), "obligations": plan["obligations"],
                   "unresolved": sorted(obl for obl in plan["obligations"] if (plan["tenant"], obl) in unresolved),
                   "digest": plan["digest"]} for plan in plans],
        "counts": counts,
    }


def send_batch(context: df.DurableOrchestrationContext) -> Generator[Any, Any, BatchResult]:
    """Send one batch of e-mails: chunks in parallel, mark what was sent, retry transient failures later."""
    job = context.get_input(expected_type=dict)
    run_id, config, messages = job["runId"], job["config"], job["messages"]
    outcomes: list[str] = [CARRY] * len(messages)
    duplicates = 0
    pending = list(range(len(messages)))
    max_attempts = int(config["maxAttempts"])
    attempt = 0
    while pending:
        attempt += 1
        # The token names this attempt: a redelivered activity carries the same one, a retry a new one.
        token = f"{context.instance_id}#{attempt}"
        chunks = [pending[i:i + SEND_CHUNK] for i in range(0, len(pending), SEND_CHUNK)]
        try:
            results = yield context.task_all([
                context.call_activity(SEND_EMAILS_ACTIVITY, {
                    "runId": run_id, "token": token, "messages": [messages[i] for i in chunk]})
                for chunk in chunks
            ])
        except Exception as exc:  # the activities answer per e-mail; this is the host failing them
            if not context.is_replaying:
                logger.warning("batch %s attempt %d: a send activity failed: %s", context.instance_id, attempt, exc)
            results = [None] * len(chunks)
        retry: list[int] = []
        unmarked: list[UnmarkedSend] = []  # sent, but the send activity could not mark them
        retry_after = 0.0
        for chunk, result in zip(chunks, results, strict=True):
            for position, index in enumerate(chunk):
                answer: SendAnswer = (read_send_answer(result[position]) if result else
                                      {"outcome": "transient", "detail": "send activity failed"})
                duplicates += 1 if answer.get("duplicate") else 0
                if answer["outcome"] == "transient":
                    retry.append(index)
                    retry_after = max(retry_after, float(answer.get("retryAfterSeconds") or 0))
                    continue
                outcomes[index] = answer["outcome"]
                if answer["outcome"] == SENT and answer.get("mark"):
                    unmarked.append(answer["mark"])
        if unmarked:
            # The send activity marks each e-mail as it goes; these its mark failed on (storage), retried here.
            try:
                yield context.call_activity_with_retry(MARK_SENT_ACTIVITY, df.RetryOptions(1000, 3), {
                    "runId": run_id, "token": token, "sent": unmarked})
            except Exception as exc:  # the claims stay unmarked: a later run counts them, never silently
                if not context.is_replaying:
                    logger.error("batch %s: marking %d e-mails sent failed: %s", context.instance_id,
                                 len(unmarked), exc)
        if retry and attempt < max_attempts:
            delay = backoff_seconds(attempt, float(config["backoffSeconds"]), retry_after)
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
            pending = retry
        else:
            pending = []  # still failing after the last attempt: carried over (outcome stays CARRY)
    return BatchResult(outcomes=outcomes, duplicates=duplicates)
