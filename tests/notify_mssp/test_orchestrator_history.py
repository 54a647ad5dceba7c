"""The notification run's orchestrators replayed from Durable histories, with no host (tests/durable_history.py):
the send batch's retries after exponential backoff timers and what it carries over, the retried mark of
e-mails sent but unmarked, the run's and the group's batching into sub-orchestrations, obligations carried
over to the next run, and determinism (the same history replayed gives the same actions, after every
activity). The end-to-end behaviour through the local host is in test_orchestrator*.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from azure.durable_functions.models.actions.ActionType import ActionType
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType

from notify_mssp import orchestrator
from notify_mssp.delivery import digest_id
from notify_mssp.payloads import AlertMessage, DigestItem, SendAnswer
from shared.names import (
    COMPLETE_TENANT_ACTIVITY,
    LIST_PENDING_TENANTS_ACTIVITY,
    MARK_SENT_ACTIVITY,
    NOTIFY_ORCHESTRATOR,
    NOTIFY_RUN_CONFIG_ACTIVITY,
    PLAN_TENANT_ACTIVITY,
    SEND_BATCH_ORCHESTRATOR,
    SEND_EMAILS_ACTIVITY,
    TENANT_GROUP_ORCHESTRATOR,
)
from tests.durable_history import (
    ActivityFailed,
    Call,
    History,
    flat_actions,
    parse_time,
    replay,
)
from tests.durable_history import drive as drive_history

CONFIG = {"batchSize": 20, "maxAttempts": 3, "backoffSeconds": 10, "digestMaxItems": 50}
ORCHESTRATORS = {NOTIFY_ORCHESTRATOR: orchestrator.notify_run, TENANT_GROUP_ORCHESTRATOR: orchestrator.tenant_group,
                 SEND_BATCH_ORCHESTRATOR: orchestrator.send_batch}


def message(tenant: str, alert: str, to: str = "soc@mssp.example") -> AlertMessage:
    return AlertMessage(kind="alert", tenant=tenant, alertId=alert, reason="new",
                        obligationKey=f"obligation|{alert}|new", rule="r1", recipient=to, previousSeverity="",
                        riseSeenAt="")


def digest_item(tenant: str, alert: str, to: str = "soc@mssp.example", rank: int = 1) -> DigestItem:
    return DigestItem(rule="r2", recipient=to, tenant=tenant, alertId=alert, obligationKey=f"obligation|{alert}|new",
                      severityRank=rank, createdAt="2026-11-27T08:00:00Z", reason="new", previousSeverity="",
                      riseSeenAt="")


def answer(outcome: str, retry_after: float = 0, **extra: Any) -> SendAnswer:
    result: SendAnswer = {"outcome": outcome, "duplicate": False, "detail": outcome}
    if outcome == "transient":
        result["retryAfterSeconds"] = retry_after
    result.update(extra)  # type: ignore[typeddict-item]
    return result


def batch(messages: list[Any], config: dict[str, Any] | None = None) -> History:
    return History(SEND_BATCH_ORCHESTRATOR, {"runId": "notify-1", "config": config or CONFIG, "messages": messages},
                   instance_id="batch-1")


def drive(name: str, history: History, respond: Any) -> Any:
    return drive_history(ORCHESTRATORS[name], history, respond)


def timer_delays(history: History) -> list[float]:
    """Each durable timer's delay, from the start of the episode that created it to when it fires."""
    delays, episode_start = [], None
    for event in history.events:
        if event["EventType"] == HistoryEventType.ORCHESTRATOR_STARTED:
            episode_start = parse_time(event["Timestamp"])
        elif event["EventType"] == HistoryEventType.TIMER_CREATED and episode_start is not None:
            # The orchestrator ran in the episode before the one its TimerCreated is written in.
            delays.append((parse_time(event["FireAt"]) - previous_start(history, event)).total_seconds())
    return delays


def previous_start(history: History, timer_created: dict[str, Any]) -> Any:
    starts = [parse_time(e["Timestamp"]) for e in history.events[:history.events.index(timer_created)]
              if e["EventType"] == HistoryEventType.ORCHESTRATOR_STARTED]
    return starts[-1]


# --- the send batch: retries, backoff, carry-over -------------------------------------------------------


def test_transient_failures_are_retried_after_exponential_backoff_and_a_longer_retry_after_wins():
    answers = {1: [answer("sent"), answer("transient")], 2: [answer("transient", retry_after=45)], 3: [answer("sent")]}

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1"), message("t1", "a2")]),
                   lambda call: answers[int(call.input["token"].rsplit("#", 1)[1])])

    sends = driven.named(SEND_EMAILS_ACTIVITY)
    assert [call.input["token"] for call in sends] == ["batch-1#1", "batch-1#2", "batch-1#3"]  # a new token per attempt
    assert [[m["alertId"] for m in call.input["messages"]] for call in sends] == [["a1", "a2"], ["a2"], ["a2"]]
    # 10 s, then 20 s doubled, but the server asked for 45 s.
    assert timer_delays(driven.history) == [10.0, 45.0]
    assert driven.output == {"outcomes": ["sent", "sent"], "duplicates": 0}


def test_what_still_fails_after_the_last_attempt_is_carried_over_without_another_timer():
    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1")]), lambda call: [answer("transient")])

    assert len(driven.named(SEND_EMAILS_ACTIVITY)) == CONFIG["maxAttempts"]
    assert timer_delays(driven.history) == [10.0, 20.0]
    assert driven.output == {"outcomes": ["carry"], "duplicates": 0}


def test_the_backoff_is_capped():
    config = {**CONFIG, "maxAttempts": 6, "backoffSeconds": 60}

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1")], config), lambda call: [answer("transient")])

    assert timer_delays(driven.history) == [60.0, 120.0, 240.0, 300.0, 300.0]


def test_a_send_activity_the_host_fails_is_retried_like_a_transient_answer():
    def respond(call: Call) -> Any:
        if call.input["token"].endswith("#1"):
            raise ActivityFailed("activity timed out")
        return [answer("sent")]

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1")]), respond)

    assert len(driven.named(SEND_EMAILS_ACTIVITY)) == 2 and timer_delays(driven.history) == [10.0]
    assert driven.output["outcomes"] == ["sent"]


def test_final_outcomes_and_possible_duplicates_are_counted_per_email():
    outcomes = [answer("sent", duplicate=True), answer("already_sent"), answer("skipped", duplicate=True),
                answer("permanent"), answer("carry")]

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", f"a{i}") for i in range(5)]), lambda call: outcomes)

    assert driven.output == {"outcomes": ["sent", "already_sent", "skipped", "permanent", "carry"], "duplicates": 2}
    assert timer_delays(driven.history) == []  # only `transient` is retried within the run


def test_a_batch_sends_in_chunks_of_parallel_activities():
    messages = [message("t1", f"a{i:02d}") for i in range(45)]

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch(messages),
                   lambda call: [answer("sent") for _ in call.input["messages"]])

    [first_yield] = driven.state["actions"][:1]
    assert [len(action_messages(a)) for a in first_yield] == [20, 20, 5]  # one yield: task_all of three chunks
    assert driven.output["outcomes"] == ["sent"] * 45


def action_messages(action: dict[str, Any]) -> list[Any]:
    return json.loads(action["input"])["messages"]


@pytest.mark.parametrize(("mark_failures", "marked"), [(1, True), (3, False)])
def test_emails_sent_but_unmarked_are_marked_by_an_activity_retried_by_durable(mark_failures, marked):
    mark = {"partition": "alert|t1", "row": "a1|new|r1|soc", "etag": "W/1"}

    def respond(call: Call) -> Any:
        if call.name == MARK_SENT_ACTIVITY:
            if call.attempt <= mark_failures:
                raise ActivityFailed("storage unavailable")
            return 1
        return [answer("sent", mark=mark)]

    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1")]), respond)

    [mark_action] = [a for a in flat_actions(driven.state) if a["functionName"] == MARK_SENT_ACTIVITY]
    assert mark_action["actionType"] == ActionType.CALL_ACTIVITY_WITH_RETRY
    assert mark_action["retryOptions"] == {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 3}
    attempts = driven.named(MARK_SENT_ACTIVITY)
    assert [call.attempt for call in attempts] == list(range(1, min(mark_failures + 1, 3) + 1))
    assert attempts[0].input == {"runId": "notify-1", "token": "batch-1#1", "sent": [mark]}
    # Marked or not, the e-mail went out: the batch completes with it sent (a later run counts an unmarked claim).
    assert driven.state["isDone"] and driven.output["outcomes"] == ["sent"]
    fired = [e for e in driven.history.events if e["EventType"] == HistoryEventType.TIMER_FIRED]
    assert len(fired) == mark_failures  # Durable's retry timers, one per failed attempt (and one after the last)
    completed = [e for e in driven.history.events if e["EventType"] == HistoryEventType.TASK_COMPLETED
                 and e["Result"] == "1"]
    assert bool(completed) == marked


def test_answers_recorded_by_the_previous_release_replay_to_the_same_actions():
    """An orchestration in flight at deploy time replays its recorded short-key answers on the new code."""
    named = {1: [answer("sent"), answer("transient", retry_after=30)], 2: [answer("sent")]}
    legacy = {1: [{"o": "sent", "dup": True, "d": ""}, {"o": "transient", "d": "", "ra": 30.0}],
              2: [{"o": "sent", "dup": False, "d": ""}]}
    messages = [message("t1", "a1"), message("t1", "a2")]

    def attempt(call: Call) -> int:
        return int(call.input["token"].rsplit("#", 1)[1])

    now = drive(SEND_BATCH_ORCHESTRATOR, batch(messages), lambda call: named[attempt(call)])
    before = drive(SEND_BATCH_ORCHESTRATOR, batch(messages), lambda call: legacy[attempt(call)])

    assert flat_actions(before.state) == flat_actions(now.state)
    assert before.output == {"outcomes": ["sent", "sent"], "duplicates": 1}


# --- the run and its groups: batching into sub-orchestrations -------------------------------------------


def group_result(tenants: list[str], digest: list[DigestItem] | None = None) -> dict[str, Any]:
    return {"plans": [{"tenant": t, "error": "", "obligations": [f"obligation|{t}-a|new"], "unresolved": [],
                       "digest": [i for i in digest or [] if i["tenant"] == t]} for t in tenants],
            "counts": {"emails": len(tenants), "duplicates": 0, "sent": len(tenants), "alreadySent": 0, "skipped": 0,
                       "permanentFailures": 0, "carriedOver": 0}}


def test_the_run_plans_tenants_in_groups_of_ten_and_sends_digests_in_batches():
    tenants = [f"t{i:02d}" for i in range(25)]
    digest = [digest_item("t00", "t00-a", to=f"soc{i}@mssp.example") for i in range(3)]
    config = {**CONFIG, "batchSize": 2}

    def respond(call: Call) -> Any:
        if call.name == LIST_PENDING_TENANTS_ACTIVITY:
            return tenants
        if call.name == NOTIFY_RUN_CONFIG_ACTIVITY:
            return config
        if call.name == TENANT_GROUP_ORCHESTRATOR:
            return group_result(call.input["tenantIds"], digest)
        if call.name == SEND_BATCH_ORCHESTRATOR:
            return {"outcomes": ["sent"] * len(call.input["messages"]), "duplicates": 0}
        if call.name == COMPLETE_TENANT_ACTIVITY:
            return [{"done": len(t["done"]), "released": len(t["released"]), "markerCleared": True}
                    for t in call.input["tenants"]]
        raise AssertionError(call)

    driven = drive(NOTIFY_ORCHESTRATOR, History(NOTIFY_ORCHESTRATOR, "notify-1", instance_id="notify-1"), respond)

    groups = driven.named(TENANT_GROUP_ORCHESTRATOR)
    assert [call.input["tenantIds"] for call in groups] == [tenants[:10], tenants[10:20], tenants[20:]]
    assert all(call.input["config"] == config and call.input["runId"] == "notify-1" for call in groups)
    batches = driven.named(SEND_BATCH_ORCHESTRATOR)
    assert [[m["id"] for m in call.input["messages"]] for call in batches] == [
        [digest_id("notify-1", "r2", "soc0@mssp.example"), digest_id("notify-1", "r2", "soc1@mssp.example")],
        [digest_id("notify-1", "r2", "soc2@mssp.example")]]
    assert all(m["recipient"] and m["entries"][0]["alertId"] == "t00-a" for c in batches for m in c.input["messages"])
    completes = driven.named(COMPLETE_TENANT_ACTIVITY)
    assert [len(call.input["tenants"]) for call in completes] == [10, 10, 5]
    summary = driven.output
    assert (summary["tenantsPending"], summary["tenantsPlanned"], summary["obligations"]) == (25, 25, 25)
    assert (summary["sent"], summary["emails"]) == (28, 28)  # 25 per-alert e-mails in the groups, 3 digests
    assert (summary["obligationsDone"], summary["markersCleared"]) == (25, 25)


def test_a_run_without_pending_tenants_schedules_nothing_else():
    driven = drive(NOTIFY_ORCHESTRATOR, History(NOTIFY_ORCHESTRATOR, "notify-1"),
                   lambda call: [] if call.name == LIST_PENDING_TENANTS_ACTIVITY else CONFIG)

    assert [a["functionName"] for a in flat_actions(driven.state)] == [LIST_PENDING_TENANTS_ACTIVITY,
                                                                       NOTIFY_RUN_CONFIG_ACTIVITY]
    assert driven.output["tenantsPending"] == 0 and driven.output["emails"] == 0


def test_a_group_sends_its_per_alert_emails_in_batches_and_returns_what_stays_unresolved():
    plans = [{"tenant": "t1", "error": "", "obligations": [f"obligation|a{i:02d}|new" for i in range(45)],
              "messages": [message("t1", f"a{i:02d}") for i in range(45)], "digest": [digest_item("t1", "a00")]},
             {"tenant": "t2", "error": "planning failed", "obligations": [], "messages": [], "digest": []}]

    def respond(call: Call) -> Any:
        if call.name == PLAN_TENANT_ACTIVITY:
            return plans
        outcomes = ["sent"] * len(call.input["messages"])
        if call.input["messages"][0]["alertId"] == "a40":
            outcomes[-1] = "carry"  # a44: the rate cap deferred it
        return {"outcomes": outcomes, "duplicates": 0}

    job = {"runId": "notify-1", "config": CONFIG, "tenantIds": ["t1", "t2"]}
    driven = drive(TENANT_GROUP_ORCHESTRATOR, History(TENANT_GROUP_ORCHESTRATOR, job), respond)

    assert [len(call.input["messages"]) for call in driven.named(SEND_BATCH_ORCHESTRATOR)] == [20, 20, 5]
    [t1, t2] = driven.output["plans"]
    assert t1["unresolved"] == ["obligation|a44|new"] and t1["digest"] == [digest_item("t1", "a00")]
    assert t2["error"] == "planning failed"
    assert driven.output["counts"]["sent"] == 44 and driven.output["counts"]["carriedOver"] == 1


def test_a_failed_batch_sub_orchestration_carries_its_emails_over():
    plans = [{"tenant": "t1", "error": "", "obligations": ["obligation|a1|new"], "messages": [message("t1", "a1")],
              "digest": []}]

    def respond(call: Call) -> Any:
        if call.name == PLAN_TENANT_ACTIVITY:
            return plans
        raise ActivityFailed("sub-orchestration failed")

    job = {"runId": "notify-1", "config": CONFIG, "tenantIds": ["t1"]}
    driven = drive(TENANT_GROUP_ORCHESTRATOR, History(TENANT_GROUP_ORCHESTRATOR, job), respond)

    assert driven.output["plans"][0]["unresolved"] == ["obligation|a1|new"]
    assert driven.output["counts"]["carriedOver"] == 1


# --- a whole run from histories: carry-over to the next run ---------------------------------------------


class Tenants:
    """What the activities would read and write: each tenant's pending obligations and its marker."""

    def __init__(self, obligations: dict[str, list[str]]):
        self.pending = {tenant: list(keys) for tenant, keys in obligations.items()}
        self.done: dict[str, list[str]] = {tenant: [] for tenant in obligations}
        self.transient: set[str] = set()  # alert ids the transport refuses for now
        self.sent: list[str] = []

    def respond(self, call: Call) -> Any:
        if call.name in ORCHESTRATORS:  # a sub-orchestration: replayed from its own history
            history = History(call.name, call.input, instance_id=call.instance_id or call.name)
            return drive(call.name, history, self.respond).output
        if call.name == LIST_PENDING_TENANTS_ACTIVITY:
            return sorted(tenant for tenant, keys in self.pending.items() if keys)
        if call.name == NOTIFY_RUN_CONFIG_ACTIVITY:
            return CONFIG
        if call.name == PLAN_TENANT_ACTIVITY:
            return [{"tenant": t, "error": "", "obligations": list(self.pending[t]), "digest": [],
                     "messages": [message(t, key.split("|")[1]) for key in self.pending[t]]}
                    for t in call.input["tenantIds"]]
        if call.name == SEND_EMAILS_ACTIVITY:
            answers = []
            for spec in call.input["messages"]:
                if spec["alertId"] in self.transient:
                    answers.append(answer("transient"))
                else:
                    self.sent.append(spec["alertId"])
                    answers.append(answer("sent"))
            return answers
        if call.name == COMPLETE_TENANT_ACTIVITY:
            results = []
            for job in call.input["tenants"]:
                tenant = job["tenantId"]
                self.done[tenant] += job["done"]
                self.pending[tenant] = list(job["released"])
                results.append({"done": len(job["done"]), "released": len(job["released"]),
                                "markerCleared": not job["released"]})
            return results
        raise AssertionError(call)


def test_an_email_still_failing_after_the_last_attempt_keeps_its_obligation_for_the_next_run():
    world = Tenants({"t1": ["obligation|a1|new", "obligation|a2|new"], "t2": ["obligation|b1|new"]})
    world.transient = {"a2"}

    first = drive(NOTIFY_ORCHESTRATOR, History(NOTIFY_ORCHESTRATOR, "notify-1", instance_id="notify-1"),
                  world.respond)

    assert sorted(world.sent) == ["a1", "b1"]
    assert (first.output["sent"], first.output["carriedOver"]) == (2, 1)
    assert (first.output["obligationsDone"], first.output["obligationsReleased"], first.output["markersCleared"]) == (
        2, 1, 1)
    assert world.pending == {"t1": ["obligation|a2|new"], "t2": []}

    world.transient = set()
    second = drive(NOTIFY_ORCHESTRATOR, History(NOTIFY_ORCHESTRATOR, "notify-2", instance_id="notify-2",
                                                start=first.history.now + timedelta(minutes=5)), world.respond)

    assert second.output["tenantsPending"] == 1 and second.output["sent"] == 1
    assert world.sent[-1] == "a2" and world.pending == {"t1": [], "t2": []}
    assert sorted(world.done["t1"]) == ["obligation|a1|new", "obligation|a2|new"]


# --- determinism ------------------------------------------------------------------------------------------


def test_replaying_the_history_after_each_activity_gives_the_same_actions():
    """Every prefix of the history that ends an episode replays to a prefix of the final actions, twice
    the same; `drive` checks this as it goes, here it is checked on the recorded history itself."""
    answers = {1: [answer("sent"), answer("transient")], 2: [answer("transient", retry_after=15)], 3: [answer("sent")]}
    driven = drive(SEND_BATCH_ORCHESTRATOR, batch([message("t1", "a1"), message("t1", "a2")]),
                   lambda call: answers[int(call.input["token"].rsplit("#", 1)[1])])
    final = flat_actions(driven.state)
    events = driven.history.events
    cuts = [i for i, e in enumerate(events) if e["EventType"] == HistoryEventType.ORCHESTRATOR_COMPLETED]
    assert len(cuts) >= 5  # three sends, two timers

    for cut in cuts:
        prefix = batch([message("t1", "a1"), message("t1", "a2")])
        prefix.events = [dict(e) for e in events[:cut]]
        state = replay(orchestrator.send_batch, prefix)
        assert state == replay(orchestrator.send_batch, prefix)
        assert final[:len(flat_actions(state))] == flat_actions(state)
        assert not state.get("isDone")
    assert replay(orchestrator.send_batch, driven.history)["output"] == driven.output
