"""The onboarding-result report orchestrator (grant_access.notify_callback.orchestrate) replayed from Durable
histories, with no host (tests/durable_history.py): retries with backoff timers of 5 s, 15 s, 45 s...,
stopping at delivery, at a refusal, or after the last attempt."""

from __future__ import annotations

import json
from datetime import timedelta

from azure.durable_functions.models.actions.ActionType import ActionType

from grant_access import notify_callback
from shared.names import POST_ONBOARDING_RESULT_ACTIVITY
from tests.durable_history import Call, History, drive, flat_actions, parse_time, replay

NAME = "notify_onboarding_result"
RESULT = {"invitationId": "inv-1", "status": "active", "occurredAt": "2026-11-27T08:00:00+00:00"}


def history() -> History:
    return History(NAME, RESULT, instance_id=notify_callback.instance_id("inv-1", "active"))


def failed(retry: bool = True, detail: str = "HTTP 503") -> dict:
    return {"delivered": False, "retry": retry, "detail": detail}


DELIVERED = {"delivered": True, "retry": False, "detail": "HTTP 204"}


def timer_delays(state: dict, start: History) -> list[float]:
    """The timers' fire times, relative to the start of the episode in which the orchestrator asked for them."""
    starts = [parse_time(e["Timestamp"]) for e in start.events if e["EventType"] == 12]
    timers = [parse_time(a["fireAt"]) for a in flat_actions(state) if a["actionType"] == ActionType.CREATE_TIMER]
    # Episode k (k >= 1) answers the k-th yield: the timer of attempt n is created in episode 2n - 1.
    return [(fire - starts[2 * n + 1]).total_seconds() for n, fire in enumerate(timers)]


def test_a_hand_built_history_retries_after_the_first_backoff_timer():
    """Built event by event, as the Durable SDK's own orchestrator tests build theirs."""
    built = history()
    post = built.task_scheduled(POST_ONBOARDING_RESULT_ACTIVITY, json.dumps(RESULT))
    built.orchestrator_completed()
    built.orchestrator_started()
    built.task_completed(post, failed())
    started = parse_time(built.events[-2]["Timestamp"])
    fire_at = (started + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    timer = built.timer_created(fire_at)
    built.orchestrator_completed()
    built.orchestrator_started(seconds_later=5)
    built.timer_fired(timer, fire_at)

    state = replay(notify_callback.orchestrate, built)

    actions = flat_actions(state)
    assert [a["actionType"] for a in actions] == [ActionType.CALL_ACTIVITY, ActionType.CREATE_TIMER,
                                                  ActionType.CALL_ACTIVITY]
    assert parse_time(actions[1]["fireAt"]) == started + timedelta(seconds=5)
    assert json.loads(actions[2]["input"]) == RESULT and not state["isDone"]
    assert replay(notify_callback.orchestrate, built) == state  # the same history, the same actions


def test_retryable_failures_are_retried_with_growing_backoff_until_delivered():
    answers = iter([failed(), failed(detail="ConnectionError"), DELIVERED])

    driven = drive(notify_callback.orchestrate, history(), lambda call: next(answers))

    assert len(driven.named(POST_ONBOARDING_RESULT_ACTIVITY)) == 3
    assert timer_delays(driven.state, driven.history) == [5.0, 15.0]
    assert driven.output == {"invitationId": "inv-1", "status": "active", "attempts": 3, "delivered": True,
                             "detail": "HTTP 204"}


def test_the_attempts_run_out_after_about_ten_minutes_without_a_timer_after_the_last():
    driven = drive(notify_callback.orchestrate, history(), lambda call: failed())

    assert len(driven.named(POST_ONBOARDING_RESULT_ACTIVITY)) == notify_callback.MAX_ATTEMPTS
    delays = timer_delays(driven.state, driven.history)
    assert delays == [5.0, 15.0, 45.0, 135.0, 405.0] and sum(delays) / 60 < 11
    assert driven.output["attempts"] == notify_callback.MAX_ATTEMPTS and driven.output["delivered"] is False


def test_a_refusal_is_not_retried():
    driven = drive(notify_callback.orchestrate, history(), lambda call: failed(retry=False, detail="HTTP 404"))

    assert [a["actionType"] for a in flat_actions(driven.state)] == [ActionType.CALL_ACTIVITY]
    assert driven.output == {"invitationId": "inv-1", "status": "active", "attempts": 1, "delivered": False,
                             "detail": "HTTP 404"}


def test_every_attempt_posts_the_same_small_input():
    inputs: list[Call] = []

    def respond(call: Call) -> dict:
        inputs.append(call)
        return DELIVERED if len(inputs) == 2 else failed()

    drive(notify_callback.orchestrate, history(), respond)

    assert [call.input for call in inputs] == [RESULT, RESULT]
